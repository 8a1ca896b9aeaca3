//! A config using every field parses, and survives serialization unchanged.
// Test helpers outside #[test] fns may unwrap too: a panic is a failed test.
#![allow(clippy::unwrap_used)]

use netclaim_api::{NetworkConfig, RouteScope, parse_config};

const FULL_JSON: &str = include_str!("fixtures/full.json");
const FULL_YAML: &str = include_str!("fixtures/full.yaml");

fn full() -> NetworkConfig {
    parse_config(FULL_JSON.as_bytes()).unwrap()
}

#[test]
fn full_config_parses_every_field() {
    let config = full();
    let interface = &config.interface;
    assert_eq!(interface.name.as_deref(), Some("net1"));
    assert_eq!(interface.addresses.len(), 2);
    assert_eq!(interface.mtu, Some(9000));
    assert_eq!(
        interface.hardware_address.as_deref(),
        Some("02:00:5e:00:53:01")
    );
    assert_eq!(interface.routes.len(), 4);
    assert_eq!(interface.routes[1].scope, Some(RouteScope::Link));
    assert_eq!(interface.routes[1].table, Some(100));
    assert_eq!(interface.rules[0].priority, Some(1000));
    assert_eq!(interface.neighbors.len(), 2);
    let sysctls = interface.sysctls.as_ref().unwrap();
    assert_eq!(
        (sysctls.arp_ignore, sysctls.arp_announce, sysctls.forwarding),
        (Some(1), Some(2), Some(false))
    );
    assert_eq!(interface.ethtool_features.get("rx-checksum"), Some(&true));
}

#[test]
fn full_config_round_trips_through_json() {
    let config = full();
    let json = serde_json::to_vec(&config).unwrap();
    assert_eq!(parse_config(&json).unwrap(), config);
}

#[test]
fn yaml_as_users_write_it_means_the_same() {
    // kubectl turns the YAML into JSON before the API server stores it; do the same.
    let value: serde_json::Value = serde_yaml::from_str(FULL_YAML).unwrap();
    let json = serde_json::to_vec(&value).unwrap();
    assert_eq!(parse_config(&json).unwrap(), full());
}

#[test]
fn minimal_config_is_valid() {
    let config =
        parse_config(br#"{"apiVersion": "netclaim.dev/v1alpha1", "kind": "NetworkConfig"}"#)
            .unwrap();
    assert_eq!(config.interface, Default::default());
}
