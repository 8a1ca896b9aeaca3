//! Every kind of bad input is refused with an error naming the field.
// Test helpers outside #[test] fns may unwrap too: a panic is a failed test.
#![allow(clippy::unwrap_used)]

use netclaim_api::{ConfigError, parse_config};

fn doc(interface: &str) -> String {
    format!(
        r#"{{"apiVersion": "netclaim.dev/v1alpha1", "kind": "NetworkConfig", "interface": {interface}}}"#
    )
}

fn refuse(json: &str) -> ConfigError {
    match parse_config(json.as_bytes()) {
        Ok(config) => panic!("accepted {json}: {config:?}"),
        Err(error) => error,
    }
}

/// Asserts that `json` is refused with an error at exactly `path` whose message contains
/// `fragment`.
fn assert_refused_at(json: &str, path: &str, fragment: &str) {
    let error = refuse(json);
    assert!(
        error
            .errors
            .iter()
            .any(|e| e.path == path && e.message.contains(fragment)),
        "want an error at {path:?} containing {fragment:?}, got: {error}"
    );
}

#[test]
fn document_shape() {
    let cases = [
        ("not json", "", "expected"),
        ("[]", "", "invalid length"),
        ("5", "", "invalid type"),
        (
            r#"{"kind": "NetworkConfig"}"#,
            "apiVersion",
            "missing field",
        ),
        (
            r#"{"apiVersion": "netclaim.dev/v1alpha1"}"#,
            "kind",
            "missing field",
        ),
        (
            r#"{"apiVersion": "netclaim.dev/v1", "kind": "NetworkConfig"}"#,
            "apiVersion",
            "netclaim.dev/v1alpha1",
        ),
        (
            r#"{"apiVersion": "netclaim.dev/v1alpha1", "kind": "Network"}"#,
            "kind",
            "NetworkConfig",
        ),
        (
            r#"{"apiVersion": "netclaim.dev/v1alpha1", "kind": "NetworkConfig", "extra": 1}"#,
            "extra",
            "unknown field",
        ),
        (
            r#"{"apiVersion": "netclaim.dev/v1alpha1", "kind": "NetworkConfig", "kind": "NetworkConfig"}"#,
            "kind",
            "duplicate field",
        ),
    ];
    for (json, path, fragment) in cases {
        assert_refused_at(json, path, fragment);
    }
}

#[test]
fn wrong_types_and_unknown_fields() {
    let cases = [
        (r#"{"name": 5}"#, "interface.name", "invalid type"),
        (r#"{"mtu": "9000"}"#, "interface.mtu", "invalid type"),
        (r#"{"mtu": -1}"#, "interface.mtu", "invalid value"),
        (
            r#"{"addresses": "192.0.2.1/24"}"#,
            "interface.addresses",
            "invalid type",
        ),
        (
            r#"{"addresses": ["192.0.2.1/24", "nope"]}"#,
            "interface.addresses[1]",
            "invalid",
        ),
        (
            r#"{"addresses": ["192.0.2.1/33"]}"#,
            "interface.addresses[0]",
            "invalid",
        ),
        (
            r#"{"routes": [{"destination": "192.0.2.0/24", "via": "x"}]}"#,
            "interface.routes[0].via",
            "unknown field",
        ),
        (
            r#"{"routes": [{"destination": "192.0.2.0/24", "scope": "site"}]}"#,
            "interface.routes[0].scope",
            "unknown variant",
        ),
        (
            r#"{"routes": [{"destination": "192.0.2.0/24", "gateway": "x"}]}"#,
            "interface.routes[0].gateway",
            "invalid",
        ),
        (
            r#"{"rules": [{"from": "192.0.2.0/24"}]}"#,
            "interface.rules[0].table",
            "missing field",
        ),
        (
            r#"{"neighbors": [{"address": "192.0.2.1"}]}"#,
            "interface.neighbors[0].hardwareAddress",
            "missing field",
        ),
        (
            r#"{"sysctls": {"arpIgnore": 300}}"#,
            "interface.sysctls.arpIgnore",
            "invalid value",
        ),
        (
            r#"{"sysctls": {"rpFilter": 1}}"#,
            "interface.sysctls.rpFilter",
            "unknown field",
        ),
        (
            r#"{"ethtoolFeatures": {"rx-checksum": "on"}}"#,
            "interface.ethtoolFeatures.rx-checksum",
            "invalid type",
        ),
    ];
    for (interface, path, fragment) in cases {
        assert_refused_at(&doc(interface), path, fragment);
    }
}

#[test]
fn semantic_errors() {
    let cases = [
        (r#"{"name": ""}"#, "interface.name", "empty"),
        (
            r#"{"name": "sixteen-bytes-xx"}"#,
            "interface.name",
            "at most 15",
        ),
        (r#"{"name": "a/b"}"#, "interface.name", "'/'"),
        (r#"{"name": "a:b"}"#, "interface.name", "':'"),
        (r#"{"name": "a b"}"#, "interface.name", "whitespace"),
        (r#"{"name": "."}"#, "interface.name", "not a valid"),
        (r#"{"name": ".."}"#, "interface.name", "not a valid"),
        (r#"{"name": "-K"}"#, "interface.name", "starts with '-'"),
        (r#"{"mtu": 67}"#, "interface.mtu", "68..=65535"),
        (r#"{"mtu": 65536}"#, "interface.mtu", "68..=65535"),
        (
            r#"{"mtu": 1279, "addresses": ["192.0.2.1/24", "2001:db8::1/64"]}"#,
            "interface.mtu",
            "interface.addresses[1]",
        ),
        (
            r#"{"hardwareAddress": "02:00:00:00:00"}"#,
            "interface.hardwareAddress",
            "not a MAC",
        ),
        (
            r#"{"hardwareAddress": "00:00:00:00:00:00"}"#,
            "interface.hardwareAddress",
            "all zero",
        ),
        (
            r#"{"hardwareAddress": "01:00:5e:00:00:01"}"#,
            "interface.hardwareAddress",
            "multicast",
        ),
        (
            r#"{"addresses": ["0.0.0.0/0"]}"#,
            "interface.addresses[0]",
            "unspecified",
        ),
        (
            r#"{"addresses": ["127.0.0.2/8"]}"#,
            "interface.addresses[0]",
            "loopback",
        ),
        (
            r#"{"addresses": ["ff02::1/64"]}"#,
            "interface.addresses[0]",
            "multicast",
        ),
        (
            r#"{"addresses": ["192.0.2.1/24", "192.0.2.1/25"]}"#,
            "interface.addresses[1]",
            "duplicates interface.addresses[0]",
        ),
        (
            r#"{"routes": [{"destination": "192.0.2.0/24", "gateway": "2001:db8::1"}]}"#,
            "interface.routes[0].gateway",
            "2001:db8::1 is IPv6 but destination 192.0.2.0/24 is IPv4",
        ),
        (
            r#"{"routes": [{"destination": "2001:db8::/64", "source": "192.0.2.1"}]}"#,
            "interface.routes[0].source",
            "192.0.2.1 is IPv4 but destination 2001:db8::/64 is IPv6",
        ),
        (
            r#"{"routes": [{"destination": "192.0.2.0/24", "gateway": "0.0.0.0"}]}"#,
            "interface.routes[0].gateway",
            "not a unicast",
        ),
        (
            r#"{"routes": [{"destination": "192.0.2.5/24"}]}"#,
            "interface.routes[0].destination",
            "192.0.2.0/24",
        ),
        (
            r#"{"routes": [{"destination": "192.0.2.0/24", "table": 0}]}"#,
            "interface.routes[0].table",
            "table 0",
        ),
        (
            r#"{"routes": [{"destination": "192.0.2.0/24", "table": 255}]}"#,
            "interface.routes[0].table",
            "local",
        ),
        (
            r#"{"routes": [{"destination": "192.0.2.0/24", "gateway": "198.51.100.1", "scope": "link"}]}"#,
            "interface.routes[0].scope",
            "gateway",
        ),
        (
            r#"{"routes": [{"destination": "192.0.2.0/24"}, {"destination": "192.0.2.0/24", "table": 254}]}"#,
            "interface.routes[1]",
            "duplicates interface.routes[0]",
        ),
        (
            r#"{"rules": [{"table": 100}]}"#,
            "interface.rules[0]",
            "`from` or `to`",
        ),
        (
            r#"{"rules": [{"from": "192.0.2.0/24", "to": "2001:db8::/32", "table": 100}]}"#,
            "interface.rules[0].to",
            "is IPv6 but from 192.0.2.0/24 is IPv4",
        ),
        (
            r#"{"rules": [{"to": "192.0.2.1/24", "table": 100}]}"#,
            "interface.rules[0].to",
            "host bits",
        ),
        (
            r#"{"rules": [{"to": "192.0.2.0/24", "table": 255}]}"#,
            "interface.rules[0].table",
            "local",
        ),
        (
            r#"{"rules": [{"to": "192.0.2.0/24", "table": 7}, {"to": "192.0.2.0/24", "table": 7}]}"#,
            "interface.rules[1]",
            "duplicates interface.rules[0]",
        ),
        (
            r#"{"neighbors": [{"address": "192.0.2.1", "hardwareAddress": "zz:00:00:00:00:01"}]}"#,
            "interface.neighbors[0].hardwareAddress",
            "not a MAC",
        ),
        (
            r#"{"neighbors": [{"address": "192.0.2.1", "hardwareAddress": "00:00:00:00:00:00"}]}"#,
            "interface.neighbors[0].hardwareAddress",
            "all zero",
        ),
        (
            r#"{"neighbors": [{"address": "224.0.0.1", "hardwareAddress": "02:00:00:00:00:01"}]}"#,
            "interface.neighbors[0].address",
            "multicast",
        ),
        (
            r#"{"neighbors": [{"address": "192.0.2.1", "hardwareAddress": "02:00:00:00:00:01"}, {"address": "192.0.2.1", "hardwareAddress": "02:00:00:00:00:02"}]}"#,
            "interface.neighbors[1]",
            "duplicates interface.neighbors[0]",
        ),
        (
            r#"{"sysctls": {"arpIgnore": 9}}"#,
            "interface.sysctls.arpIgnore",
            "0..=8",
        ),
        (
            r#"{"sysctls": {"arpAnnounce": 3}}"#,
            "interface.sysctls.arpAnnounce",
            "0..=2",
        ),
        (
            r#"{"ethtoolFeatures": {"": true}}"#,
            r#"interface.ethtoolFeatures[""]"#,
            "empty",
        ),
        (
            r#"{"ethtoolFeatures": {"RX_Checksum": true}}"#,
            r#"interface.ethtoolFeatures["RX_Checksum"]"#,
            "a-z, 0-9",
        ),
        (
            r#"{"ethtoolFeatures": {"--offline": true}}"#,
            r#"interface.ethtoolFeatures["--offline"]"#,
            "start with a letter or digit",
        ),
    ];
    for (interface, path, fragment) in cases {
        assert_refused_at(&doc(interface), path, fragment);
    }
}

#[test]
fn values_at_the_limits_are_accepted() {
    for interface in [
        r#"{"name": "fifteen-bytes-x"}"#,
        r#"{"mtu": 68}"#,
        r#"{"mtu": 65535}"#,
        r#"{"mtu": 1280, "addresses": ["2001:db8::1/64"]}"#,
        r#"{"mtu": 1279, "addresses": ["192.0.2.1/24"]}"#,
        r#"{"sysctls": {"arpIgnore": 8, "arpAnnounce": 2}}"#,
        r#"{"routes": [{"destination": "192.0.2.0/24", "table": 1}, {"destination": "192.0.2.0/24", "table": 254}]}"#,
        r#"{"routes": [{"destination": "192.0.2.0/24", "table": 253}]}"#,
        r#"{"neighbors": [{"address": "192.0.2.1", "hardwareAddress": "01:00:5e:00:00:01"}]}"#,
        // A real kernel feature name, with '_'; and one of exactly 31 bytes.
        r#"{"ethtoolFeatures": {"tx-udp_tnl-segmentation": true}}"#,
        r#"{"ethtoolFeatures": {"tx-udp_tnl-csum-segmentation-xy": true}}"#,
    ] {
        let json = doc(interface);
        if let Err(error) = parse_config(json.as_bytes()) {
            panic!("refused {interface}: {error}");
        }
    }
}

#[test]
fn all_problems_are_reported_at_once() {
    let error = refuse(&doc(
        r#"{"name": "a/b", "mtu": 10, "hardwareAddress": "x", "rules": [{"table": 0}]}"#,
    ));
    let paths: Vec<&str> = error.errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "interface.name",
            "interface.mtu",
            "interface.hardwareAddress",
            "interface.rules[0]",
            "interface.rules[0].table",
        ]
    );
}

#[test]
fn oversized_documents_are_refused_before_parsing() {
    let huge = format!("{:<10241}", "not even json");
    let error = refuse(&huge);
    assert_eq!(error.errors.len(), 1);
    assert_eq!(error.errors[0].path, "", "a document-level error: {error}");
    assert!(error.to_string().contains("at most 10240"), "{error}");
}
