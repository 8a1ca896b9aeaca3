//! netclaim's API: the opaque configuration a DeviceClass or ResourceClaim passes to the
//! `netclaim.dev` driver, the attribute names netclaim publishes, and their validation.
//! Pure data: no I/O.
//!
//! - [`parse_config`]: strict JSON parsing with field paths, then [`NetworkConfig::validate`].
//! - [`configs_for_request`], [`merge_configs`]: which configs apply to a request and how
//!   class and claim configs combine (see [`merge`] for the precedence).
//! - [`attributes`]: attribute names and the API's limits on names and values.
//! - [`cni`]: CNI mode, the `cni` section (an inline CNI network or a
//!   NetworkAttachmentDefinition reference).
//! - [`policy`]: the tenant boundary: the CNI plugin allowlist, what a claim may never set
//!   in a network, plugin field overrides.
//! - [`podnetwork`]: the multi-network API's PodNetwork resource and the parameters of
//!   the networks netclaim provides.
//! - [`schema`]: the JSON Schema of [`NetworkConfig`].

pub mod attributes;
pub mod cni;
pub mod config;
pub mod error;
pub mod mac;
pub mod merge;
pub mod parse;
pub mod podnetwork;
pub mod policy;
pub mod schema;
pub mod validate;

pub use cni::{
    ClaimMayBring, CniConfig, CniNetworkList, CniOverride, CniPlugin, NadGrant,
    NetworkAttachmentReference, PluginFieldPath,
};
pub use config::{
    API_VERSION, InterfaceConfig, KIND, NeighborConfig, NetworkConfig, RouteConfig, RouteScope,
    RuleConfig, Sysctls,
};
pub use error::{ConfigError, FieldError};
pub use merge::{
    ConfigSource, SourcedConfig, configs_for_request, merge_configs, merge_for_request,
    network_source,
};
pub use parse::parse_config;
pub use policy::{NetworkAuthor, PluginAllowlist};

/// The DRA driver name netclaim registers and publishes under.
pub const DRIVER_NAME: &str = "netclaim.dev";
