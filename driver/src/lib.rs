//! netclaim: a Kubernetes DRA network driver.
//!
//! See `docs/design.md` for the architecture. An NRI event lands in [`nri::plugin`], which
//! calls [`hooks`]; a kubelet DRA call lands in [`prepare`].

pub mod attach;
pub mod backend;
pub mod cdi;
pub mod check;
pub mod checkpoint;
pub mod claim_files;
pub mod claim_plan;
pub mod cli;
pub mod cni;
pub mod daemon;
pub mod deadline;
pub mod device_metadata;
pub mod discovery;
pub mod exec;
pub mod explain;
pub mod faults;
pub mod handover;
pub mod health;
pub mod hooks;
pub mod level_writer;
pub mod locks;
pub mod manifests;
pub mod memory;
pub mod metrics;
pub mod netlink;
pub mod network_attachments;
pub mod network_status;
pub mod nri;
pub mod podnetwork;
pub mod prepare;
pub mod rdma;
pub mod reports;
pub mod selectors;
pub mod serve;
pub mod state;
pub mod status;
pub mod validate;
