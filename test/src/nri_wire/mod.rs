//! A second, independent implementation of the NRI wire protocol, for the test harness.
//!
//! The driver speaks NRI with its own code (`netclaim::nri::{mux, ttrpc}`). If the NRI
//! runtime stand-in reused that code, a bug in it would be on both ends of every test and
//! invisible. This module is written separately, from the Go sources containerd runs
//! (containerd/nri `pkg/net/multiplex`, containerd/ttrpc), and it can behave like the Go
//! side where that matters: it frames messages as Go's `bufio.Writer` does and refuses
//! frames a Go reader could not read ([`mux::TrunkOptions::go_runtime`]).
//!
//! - [`mux`]: the socket multiplexer (conn ids, frames, Go's framing and read limit);
//! - [`ttrpc`]: messages, a client with deadlines, a server dispatch table;
//! - [`api`]: the NRI messages, generated from the harness's own
//!   `test/proto/nri_api.proto` (written from containerd/nri's `pkg/api/api.proto`), not
//!   from `driver/proto/nri.proto`, so that a wrong field number on the driver's side shows
//!   up in tests instead of being shared by both ends.
//!
//! `test/tests/nri.rs` checks that this implementation and the driver's interoperate in both
//! directions, with messages spanning many frames and frames as large as Go writes them.

pub mod mux;
pub mod ttrpc;

/// The NRI API messages the stand-in speaks (package `nri.pkg.api.v1alpha1`).
#[allow(missing_docs, clippy::all)]
pub mod api {
    tonic::include_proto!("nri.pkg.api.v1alpha1");
}

/// ttrpc service the runtime calls on the plugin (conn 1).
pub const PLUGIN_SERVICE: &str = "nri.pkg.api.v1alpha1.Plugin";
/// ttrpc service the plugin calls on the runtime (conn 2).
pub const RUNTIME_SERVICE: &str = "nri.pkg.api.v1alpha1.Runtime";
