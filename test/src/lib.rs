//! Node-level test harness for netclaim: stand-ins for the parts that cannot run on a test
//! machine (kube-apiserver, kubelet, a container runtime's NRI side), each speaking the real
//! wire protocol, and network-namespace fixtures.
#![allow(clippy::unwrap_used)]

pub mod apiserver;
pub mod containerd;
pub mod kubelet;
pub mod link_events;
pub mod netns;
pub mod node;
pub mod nri_wire;
pub mod podnetwork;
pub mod runtime;
