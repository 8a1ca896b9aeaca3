//! Compiles netclaim's subset of the NRI protocol with protox (pure Rust, no
//! `protoc` needed). Only messages are generated: the ttrpc transport is
//! written by hand in `src/nri/` (see docs/design.md for why).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/nri.proto");
    let descriptors = protox::compile(["proto/nri.proto"], ["proto"])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
