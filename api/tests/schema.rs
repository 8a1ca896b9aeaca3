//! The committed JSON Schema matches the types.
// Test helpers outside #[test] fns may unwrap too: a panic is a failed test.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use netclaim_api::schema::{network_config_schema, network_config_schema_text};
use serde_json::Value;

const SCHEMA_FILE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/schema/networkconfig.schema.json"
);

/// Always compares the committed file with the generated schema. With
/// `NETCLAIM_UPDATE_SCHEMA` set, a stale file is also rewritten, and the test still fails
/// so the run that changed it never passes: review the diff, commit it, and rerun.
#[test]
fn committed_schema_is_current() {
    let generated = network_config_schema_text();
    let committed = std::fs::read_to_string(Path::new(SCHEMA_FILE)).unwrap_or_default();
    if committed == generated {
        return;
    }
    if std::env::var_os("NETCLAIM_UPDATE_SCHEMA").is_some() {
        std::fs::write(SCHEMA_FILE, &generated).unwrap();
        panic!("{SCHEMA_FILE} was stale and has been rewritten: review and commit it, then rerun");
    }
    panic!(
        "{SCHEMA_FILE} is stale; rewrite it with NETCLAIM_UPDATE_SCHEMA=1 cargo test -p netclaim-api \
         --test schema (the run that rewrites it fails), review and commit it"
    );
}

/// Every object schema with properties forbids unknown ones, as `deny_unknown_fields` does.
fn assert_closed_objects(schema: &Value, at: &str, seen: &mut usize) {
    match schema {
        Value::Object(map) => {
            if map.contains_key("properties") {
                *seen += 1;
                assert_eq!(
                    map.get("additionalProperties"),
                    Some(&Value::Bool(false)),
                    "object schema at {at} allows unknown fields"
                );
            }
            for (key, value) in map {
                assert_closed_objects(value, &format!("{at}/{key}"), seen);
            }
        }
        Value::Array(items) => {
            for (i, value) in items.iter().enumerate() {
                assert_closed_objects(value, &format!("{at}/{i}"), seen);
            }
        }
        _ => {}
    }
}

#[test]
fn every_object_forbids_unknown_fields() {
    let mut objects = 0;
    assert_closed_objects(&network_config_schema(), "#", &mut objects);
    // NetworkConfig, InterfaceConfig, RouteConfig, RuleConfig, NeighborConfig, Sysctls,
    // CniConfig, NetworkAttachmentReference, ClaimMayBring, NadGrant. (A CNI plugin object
    // and the `pluginOverrides` map are open on purpose: plugins define their fields;
    // their schemas have no `properties`.)
    assert_eq!(objects, 10);
}

#[test]
fn required_fields_are_required() {
    let schema = network_config_schema();
    let required = schema["required"].as_array().unwrap();
    assert!(required.contains(&Value::from("apiVersion")));
    assert!(required.contains(&Value::from("kind")));
    let route = &schema["$defs"]["RouteConfig"];
    assert_eq!(route["required"], serde_json::json!(["destination"]));
}

const PARAMETERS_SCHEMA_FILE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/schema/podnetwork-parameters.schema.json"
);

/// The committed schema of a PodNetwork's `spec.parameters` matches the types, and is
/// closed like the NetworkConfig schema (same update procedure as above).
#[test]
fn committed_podnetwork_parameters_schema_is_current() {
    let generated = netclaim_api::podnetwork::parameters_schema_text();
    let committed = std::fs::read_to_string(Path::new(PARAMETERS_SCHEMA_FILE)).unwrap_or_default();
    if committed != generated {
        if std::env::var_os("NETCLAIM_UPDATE_SCHEMA").is_some() {
            std::fs::write(PARAMETERS_SCHEMA_FILE, &generated).unwrap();
        }
        panic!(
            "{PARAMETERS_SCHEMA_FILE} is stale; rewrite it with NETCLAIM_UPDATE_SCHEMA=1 (that run fails), review and commit it"
        );
    }
    let mut seen = 0;
    assert_closed_objects(
        &netclaim_api::podnetwork::parameters_schema(),
        "",
        &mut seen,
    );
    assert!(
        seen >= 2,
        "the parameters and the nested NetworkConfig are objects"
    );
}
