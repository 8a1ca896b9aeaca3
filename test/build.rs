//! Compiles the test harness's subset of the CRI (`runtime.v1`) with protox, a pure-Rust
//! protobuf compiler, so building needs no `protoc` on the machine. Clients only: the
//! harness talks to a real containerd.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/cri_runtime_v1.proto"];
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
