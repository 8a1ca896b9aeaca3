//! Compiles the test harness's protobuf files with protox, a pure-Rust protobuf compiler, so
//! building needs no `protoc` on the machine:
//! - the CRI subset (`runtime.v1`), clients only: the harness talks to a real containerd;
//! - the NRI messages the runtime stand-in speaks (`nri.pkg.api.v1alpha1`), messages only:
//!   the stand-in's ttrpc transport is its own (`src/nri_wire/`);
//! - the kubelet's DRA health stream (`v1` and `v1alpha1` `DRAResourceHealth`), clients
//!   only: the kubelet stand-in's own copy of the official shape.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/cri_runtime_v1.proto",
        "proto/nri_api.proto",
        "proto/kubelet_dra_health_v1.proto",
        "proto/kubelet_dra_health_v1alpha1.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(false)
        .compile_fds(descriptors)?;
    Ok(())
}
