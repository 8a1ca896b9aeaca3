//! Generated protobuf and gRPC code for the kubelet's plugin protocols (from
//! `kubeletplugin/proto/`). Most users need only the driver-facing API of this crate; the
//! generated clients are public for tests and tools that play the kubelet's part.

/// `k8s.io.kubelet.pkg.apis.dra.v1`: the `DRAPlugin` service (Kubernetes >= 1.34).
#[allow(missing_docs, clippy::all)]
pub mod dra_v1 {
    tonic::include_proto!("k8s.io.kubelet.pkg.apis.dra.v1");
}

/// `k8s.io.kubelet.pkg.apis.dra.v1beta1`: the `DRAPlugin` service for older kubelets.
#[allow(missing_docs, clippy::all)]
pub mod dra_v1beta1 {
    tonic::include_proto!("k8s.io.kubelet.pkg.apis.dra.v1beta1");
}

/// `pluginregistration`: the kubelet's plugin watcher handshake.
#[allow(missing_docs, clippy::all)]
pub mod registration {
    tonic::include_proto!("pluginregistration");
}

/// `v1`: the optional `DRAResourceHealth` stream (`v1.DRAResourceHealth`), which kubelets
/// that know it prefer.
#[allow(missing_docs, clippy::all)]
pub mod health_v1 {
    tonic::include_proto!("v1");
}

/// `v1alpha1`: the optional `DRAResourceHealth` stream for kubelets that know no newer one
/// (`v1alpha1.DRAResourceHealth`; the same messages as [`health_v1`]).
#[allow(missing_docs, clippy::all)]
pub mod health_v1alpha1 {
    tonic::include_proto!("v1alpha1");
}
