//! Strict parsing of the opaque parameters a DeviceClass or ResourceClaim hands netclaim.

use std::sync::OnceLock;

use serde_json::Value;
use serde_path_to_error::{Path, Segment};

use crate::attributes::MAX_OPAQUE_PARAMETERS_BYTES;
use crate::config::NetworkConfig;
use crate::error::ConfigError;

/// Parses and validates one opaque `parameters` object (JSON, as the API server stores it).
///
/// Guarantees: a returned config passed [`NetworkConfig::validate`]. Unknown fields,
/// duplicate fields, wrong types, trailing data and documents over the API's 10 KiB
/// opaque-parameters limit are refused.
///
/// # Errors
/// A [`ConfigError`] whose paths name the field: `interface.addresses[1]: invalid IP
/// address syntax`. A document that does not deserialize yields one error (serde stops at
/// the first); one that deserializes but fails validation yields all of its problems.
///
/// # Example
/// ```
/// let config = netclaim_api::parse_config(
///     br#"{"apiVersion": "netclaim.dev/v1alpha1", "kind": "NetworkConfig",
///          "interface": {"name": "net1", "addresses": ["192.0.2.10/24"]}}"#,
/// )
/// .unwrap();
/// assert_eq!(config.interface.name.as_deref(), Some("net1"));
///
/// let error = netclaim_api::parse_config(
///     br#"{"apiVersion": "netclaim.dev/v1alpha1", "kind": "NetworkConfig",
///          "interface": {"mtu": "big"}}"#,
/// )
/// .unwrap_err();
/// assert_eq!(error.errors[0].path, "interface.mtu");
/// ```
pub fn parse_config(raw: &[u8]) -> Result<NetworkConfig, ConfigError> {
    if raw.len() > MAX_OPAQUE_PARAMETERS_BYTES {
        return Err(ConfigError::single(
            "",
            format!(
                "the config is {} bytes; opaque parameters may have at most {MAX_OPAQUE_PARAMETERS_BYTES}",
                raw.len()
            ),
        ));
    }
    let config = deserialize_strictly(raw)?;
    check_objects_are_objects(raw)?;
    config.validate()?;
    Ok(config)
}

/// Deserializes, tracking the path of the field serde fails on.
fn deserialize_strictly(raw: &[u8]) -> Result<NetworkConfig, ConfigError> {
    let mut deserializer = serde_json::Deserializer::from_slice(raw);
    let config: NetworkConfig =
        serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
            let path = render_path(error.path());
            field_error_from_serde(path, error.inner())
        })?;
    // Without this, `{...} garbage` would parse: serde stops after the first value.
    deserializer
        .end()
        .map_err(|error| field_error_from_serde(String::new(), &error))?;
    Ok(config)
}

/// Refuses structs written as JSON arrays.
///
/// serde's derived structs also accept a sequence of field values (`["netclaim.dev/v1alpha1",
/// "NetworkConfig", {}]`), a form no user means and the schema forbids. The walk follows
/// the generated JSON Schema, so it stays right as fields are added.
fn check_objects_are_objects(raw: &[u8]) -> Result<(), ConfigError> {
    let value: Value = serde_json::from_slice(raw)
        .map_err(|error| field_error_from_serde(String::new(), &error))?;
    let schema = config_schema();
    let mut problems = crate::error::Problems::default();
    walk_objects(&value, schema, schema, String::new(), &mut problems);
    problems.into_result()
}

fn config_schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(crate::schema::network_config_schema)
}

/// Follows `$ref` (into the root's `$defs`) and `anyOf` (an `Option<Struct>` is
/// `anyOf: [{$ref}, {type: null}]`) to the schema that describes an object, if any.
fn object_schema<'a>(root: &'a Value, schema: &'a Value) -> &'a Value {
    if let Some(name) = schema
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("#/$defs/"))
    {
        return object_schema(root, &root["$defs"][name]);
    }
    if let Some(alternatives) = schema.get("anyOf").and_then(Value::as_array) {
        for alternative in alternatives {
            let resolved = object_schema(root, alternative);
            if resolved.get("properties").is_some() || resolved.get("items").is_some() {
                return resolved;
            }
        }
    }
    schema
}

fn walk_objects(
    value: &Value,
    schema: &Value,
    root: &Value,
    path: String,
    problems: &mut crate::error::Problems,
) {
    let schema = object_schema(root, schema);
    if let Some(properties) = schema.get("properties") {
        match value {
            Value::Object(fields) => {
                for (key, field) in fields {
                    if let Some(field_schema) = properties.get(key) {
                        let child = if path.is_empty() {
                            key.clone()
                        } else {
                            format!("{path}.{key}")
                        };
                        walk_objects(field, field_schema, root, child, problems);
                    }
                }
            }
            Value::Array(_) => {
                problems.push(path, "expected an object with named fields, not a list")
            }
            _ => {}
        }
    } else if let (Some(items), Value::Array(elements)) = (schema.get("items"), value) {
        for (index, element) in elements.iter().enumerate() {
            walk_objects(element, items, root, format!("{path}[{index}]"), problems);
        }
    }
}

/// Renders a serde path the way users read it: `interface.routes[0].gateway`.
fn render_path(path: &Path) -> String {
    let mut rendered = String::new();
    for segment in path {
        match segment {
            Segment::Seq { index } => rendered.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !rendered.is_empty() {
                    rendered.push('.');
                }
                rendered.push_str(key);
            }
            Segment::Unknown => rendered.push_str(if rendered.is_empty() { "?" } else { ".?" }),
        }
    }
    rendered
}

/// Turns a serde_json error at `path` into a [`ConfigError`].
///
/// serde reports a missing or duplicate field at the enclosing struct; the path is
/// extended with the field's name so the error names it. The JSON line and column are dropped: they
/// point into the API server's re-encoding, not into anything the user wrote.
fn field_error_from_serde(mut path: String, error: &serde_json::Error) -> ConfigError {
    let mut message = error.to_string();
    let location = format!(" at line {} column {}", error.line(), error.column());
    if let Some(stripped) = message.strip_suffix(&location) {
        message = stripped.to_owned();
    }
    if let Some(field) = missing_field_name(&message) {
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(field);
    }
    ConfigError::single(path, message)
}

/// The field name in serde's "missing field `name`" and "duplicate field `name`" messages:
/// serde reports both at the enclosing struct.
fn missing_field_name(message: &str) -> Option<&str> {
    ["missing field `", "duplicate field `"]
        .iter()
        .find_map(|prefix| message.strip_prefix(prefix))
        .and_then(|rest| rest.strip_suffix('`'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_error(json: &str) -> ConfigError {
        parse_config(json.as_bytes()).unwrap_err()
    }

    fn with_interface(interface: &str) -> String {
        format!(
            r#"{{"apiVersion": "netclaim.dev/v1alpha1", "kind": "NetworkConfig", "interface": {interface}}}"#
        )
    }

    #[test]
    fn unknown_field_is_named() {
        let error = parse_error(&with_interface(r#"{"nmae": "net1"}"#));
        assert_eq!(error.errors[0].path, "interface.nmae");
        assert!(error.errors[0].message.contains("unknown field"), "{error}");
    }

    #[test]
    fn bad_list_item_is_named_with_index() {
        let error = parse_error(&with_interface(
            r#"{"addresses": ["192.0.2.10/24", "192.0.2.300/24"]}"#,
        ));
        assert_eq!(error.errors[0].path, "interface.addresses[1]");
        assert!(!error.to_string().contains("line 1"), "{error}");
    }

    #[test]
    fn missing_field_names_the_field() {
        let error = parse_error(&with_interface(r#"{"routes": [{"gateway": "192.0.2.1"}]}"#));
        assert_eq!(error.errors[0].path, "interface.routes[0].destination");
        let error = parse_error(r#"{"kind": "NetworkConfig"}"#);
        assert_eq!(error.errors[0].path, "apiVersion");
    }

    #[test]
    fn trailing_data_is_refused() {
        let error = parse_error(&format!("{} x", with_interface("{}")));
        assert!(error.errors[0].message.contains("trailing"), "{error}");
    }

    #[test]
    fn size_limit_is_exact() {
        let base = with_interface("{}");
        let at_limit = format!("{base:<width$}", width = MAX_OPAQUE_PARAMETERS_BYTES);
        assert!(parse_config(at_limit.as_bytes()).is_ok());
        let over = format!("{at_limit} ");
        assert!(parse_error(&over).errors[0].message.contains("10240"));
    }

    #[test]
    fn a_document_that_is_not_an_object_has_an_empty_path() {
        let error = parse_error("5");
        assert_eq!(error.errors[0].path, "");
        assert!(error.errors[0].message.contains("invalid type"), "{error}");
    }

    #[test]
    fn structs_written_as_lists_are_refused() {
        let error = parse_error(r#"["netclaim.dev/v1alpha1", "NetworkConfig", {}]"#);
        assert_eq!(error.errors[0].path, "");
        let error = parse_error(&with_interface(
            r#"{"routes": [{"destination": "192.0.2.0/24"}, ["198.51.100.0/24"]], "sysctls": [1]}"#,
        ));
        let paths: Vec<_> = error.errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            ["interface.routes[1]", "interface.sysctls"],
            "{error}"
        );
        let error = parse_error(r#"["netclaim.dev/v1alpha1", "NetworkConfig"]"#);
        assert_eq!(error.errors[0].path, "");
    }
}
