//! netclaim's API: the opaque configuration a DeviceClass or ResourceClaim passes to the
//! `netclaim.dev` driver, the attribute names netclaim publishes, and their validation.
//! Pure data: no I/O.

pub mod config;

pub use config::{InterfaceConfig, NetworkConfig, NeighborConfig, RouteConfig, RouteScope, RuleConfig, Sysctls};

/// The DRA driver name netclaim registers and publishes under.
pub const DRIVER_NAME: &str = "netclaim.dev";
