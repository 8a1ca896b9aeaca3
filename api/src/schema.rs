//! The JSON Schema of [`NetworkConfig`], generated from the Rust types.
//!
//! The committed copy is `api/schema/networkconfig.schema.json`; a test fails when it is
//! stale, and `NETCLAIM_UPDATE_SCHEMA=1 cargo test -p netclaim-api --test schema` rewrites
//! it (that run still fails: review and commit the file, then rerun). The
//! schema describes the shape only (fields, types, no unknown fields); the semantic rules
//! are in [`NetworkConfig::validate`].

use crate::config::NetworkConfig;

/// The schema of [`NetworkConfig`] as a JSON value.
///
/// # Example
/// ```
/// let schema = netclaim_api::schema::network_config_schema();
/// assert_eq!(schema["additionalProperties"], false);
/// ```
pub fn network_config_schema() -> serde_json::Value {
    schemars::schema_for!(NetworkConfig).to_value()
}

/// The schema as the committed file holds it: pretty JSON ending in a newline.
pub fn network_config_schema_text() -> String {
    // Serializing a `serde_json::Value` cannot fail: its map keys are strings.
    let pretty = serde_json::to_string_pretty(&network_config_schema()).unwrap_or_default();
    format!("{pretty}\n")
}
