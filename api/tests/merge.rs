//! Class and claim configs: which apply to a request, and which value wins.
// Test helpers outside #[test] fns may unwrap too: a panic is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use netclaim_api::{
    ConfigSource, InterfaceConfig, NetworkConfig, SourcedConfig, Sysctls, configs_for_request,
    merge_configs, merge_for_request, parse_config,
};

fn sourced(
    source: ConfigSource,
    requests: &[&str],
    index: usize,
    interface: &str,
) -> SourcedConfig {
    let json = format!(
        r#"{{"apiVersion": "netclaim.dev/v1alpha1", "kind": "NetworkConfig", "interface": {interface}}}"#
    );
    SourcedConfig {
        source,
        requests: requests.iter().map(|r| r.to_string()).collect(),
        index,
        config: parse_config(json.as_bytes()).unwrap(),
    }
}

use ConfigSource::{Claim, Class};

#[test]
fn later_wins_field_by_field() {
    let class = sourced(
        Class,
        &[],
        0,
        r#"{"name": "net1", "mtu": 9000, "addresses": ["192.0.2.10/24"],
            "sysctls": {"arpIgnore": 1, "arpAnnounce": 2},
            "ethtoolFeatures": {"rx-checksum": true}}"#,
    );
    let claim = sourced(
        Claim,
        &["nic"],
        0,
        r#"{"mtu": 1500, "sysctls": {"arpIgnore": 2}, "addresses": [],
            "routes": [{"destination": "198.51.100.0/24", "gateway": "192.0.2.1"}]}"#,
    );
    let merged = merge_configs(&[class, claim]).unwrap();
    let interface = merged.interface;
    assert_eq!(
        interface.name.as_deref(),
        Some("net1"),
        "unset in the claim: class value stays"
    );
    assert_eq!(interface.mtu, Some(1500), "set in both: the claim wins");
    assert_eq!(
        interface.addresses.len(),
        1,
        "an empty list does not replace"
    );
    assert_eq!(interface.routes.len(), 1);
    assert_eq!(
        interface.sysctls,
        Some(Sysctls {
            arp_ignore: Some(2),
            arp_announce: Some(2),
            forwarding: None
        }),
        "sysctls merge per key"
    );
    assert_eq!(
        interface.ethtool_features,
        BTreeMap::from([("rx-checksum".to_string(), true)])
    );
}

#[test]
fn non_empty_lists_and_maps_replace_whole() {
    let first = sourced(
        Claim,
        &[],
        0,
        r#"{"addresses": ["192.0.2.10/24", "192.0.2.11/24"], "ethtoolFeatures": {"rx-checksum": true}}"#,
    );
    let second = sourced(
        Claim,
        &[],
        1,
        r#"{"addresses": ["198.51.100.7/24"], "ethtoolFeatures": {"rx-gro-hw": false}}"#,
    );
    let merged = merge_configs(&[first, second]).unwrap().interface;
    assert_eq!(merged.addresses, ["198.51.100.7/24".parse().unwrap()]);
    assert_eq!(
        merged.ethtool_features,
        BTreeMap::from([("rx-gro-hw".to_string(), false)])
    );
}

#[test]
fn class_before_claim_then_index_whatever_the_input_order() {
    let configs = [
        sourced(Claim, &[], 1, r#"{"mtu": 3000}"#),
        sourced(Claim, &[], 0, r#"{"mtu": 2000}"#),
        sourced(Class, &[], 1, r#"{"mtu": 1000, "name": "class1"}"#),
        sourced(Class, &[], 0, r#"{"mtu": 500, "name": "class0"}"#),
    ];
    let merged = merge_configs(&configs).unwrap().interface;
    assert_eq!(merged.mtu, Some(3000));
    assert_eq!(merged.name.as_deref(), Some("class1"));
}

#[test]
fn request_scoping_picks_configs_in_precedence_order() {
    let all = [
        sourced(Claim, &["nic"], 0, r#"{"mtu": 1500}"#),
        sourced(Claim, &["other"], 1, r#"{"mtu": 1600}"#),
        sourced(Class, &[], 0, r#"{"mtu": 9000, "name": "net1"}"#),
        sourced(Claim, &["nic/fast"], 2, r#"{"mtu": 4000}"#),
    ];
    let indexes = |request| -> Vec<(ConfigSource, usize)> {
        configs_for_request(&all, request)
            .iter()
            .map(|c| (c.source, c.index))
            .collect()
    };
    assert_eq!(indexes("nic"), [(Class, 0), (Claim, 0)]);
    assert_eq!(indexes("nic/fast"), [(Class, 0), (Claim, 0), (Claim, 2)]);
    assert_eq!(indexes("nic/slow"), [(Class, 0), (Claim, 0)]);
    assert_eq!(indexes("other"), [(Class, 0), (Claim, 1)]);
    assert_eq!(indexes("nic2"), [(Class, 0)]);

    assert_eq!(
        merge_for_request(&all, "nic").unwrap().interface.mtu,
        Some(1500)
    );
    assert_eq!(
        merge_for_request(&all, "nic/fast").unwrap().interface.mtu,
        Some(4000)
    );
    assert_eq!(
        merge_for_request(&all, "nic2").unwrap().interface.mtu,
        Some(9000)
    );
    // The reference form composes with merge_configs directly.
    assert_eq!(
        merge_configs(&configs_for_request(&all, "other"))
            .unwrap()
            .interface
            .mtu,
        Some(1600)
    );
}

#[test]
fn an_invalid_source_is_named() {
    let mut bad = sourced(Claim, &["nic"], 1, "{}");
    bad.config.interface.mtu = Some(70000);
    let error = merge_configs(&[sourced(Class, &[], 0, "{}"), bad]).unwrap_err();
    assert_eq!(error.errors.len(), 1);
    assert!(
        error
            .to_string()
            .starts_with("claim config[1] (requests [nic]): interface.mtu: 70000"),
        "{error}"
    );
}

#[test]
fn conflicts_between_configs_are_caught_after_merging() {
    // Each is valid alone; together the MTU is too small for the IPv6 address.
    let class = sourced(Class, &[], 0, r#"{"mtu": 1000}"#);
    let claim = sourced(Claim, &[], 0, r#"{"addresses": ["2001:db8::10/64"]}"#);
    let error = merge_configs(&[class, claim]).unwrap_err();
    assert_eq!(error.errors[0].path, "merged config: interface.mtu");
}

#[test]
fn parse_labels_its_errors() {
    let error = SourcedConfig::parse(Class, vec![], 3, br#"{"kind": 1}"#).unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("class config[3]: kind: invalid type"),
        "{error}"
    );
    let ok = SourcedConfig::parse(
        Claim,
        vec!["nic".into()],
        0,
        br#"{"apiVersion": "netclaim.dev/v1alpha1", "kind": "NetworkConfig"}"#,
    )
    .unwrap();
    assert_eq!(
        ok.config,
        NetworkConfig::for_interface(InterfaceConfig::default())
    );
}
