//! CNI mode in the config: parsing with field paths, the static-settings rule, and the
//! class/claim override rules.
// Test helpers outside #[test] fns may unwrap too: a panic is a failed test.
#![allow(clippy::unwrap_used)]

use netclaim_api::{
    CniOverride, ConfigError, ConfigSource, SourcedConfig, merge_configs, parse_config,
};

fn doc(body: &str) -> String {
    format!(r#"{{"apiVersion": "netclaim.dev/v1alpha1", "kind": "NetworkConfig", {body}}}"#)
}

fn paths(error: &ConfigError) -> Vec<&str> {
    error.errors.iter().map(|e| e.path.as_str()).collect()
}

const MACVLAN: &str = r#""cni": {"cniVersion": "1.0.0", "name": "macnet", "plugins": [
    {"type": "macvlan", "mode": "bridge", "ipam": {"type": "static", "addresses": [{"address": "192.0.2.10/24"}]}},
    {"type": "tuning", "mtu": 1400}]}"#;

#[test]
fn inline_network_parses_and_keeps_plugin_fields() {
    let config =
        parse_config(doc(&format!(r#""interface": {{"name": "net1"}}, {MACVLAN}"#)).as_bytes())
            .unwrap();
    let cni = config.cni.unwrap();
    let list = cni.inline_network().unwrap();
    assert_eq!(list.plugins[0].0["mode"], "bridge");
    assert_eq!(list.plugins[1].0["mtu"], 1400);
    assert_eq!(cni.effective_device_field().as_deref(), Some("master"));
}

#[test]
fn bad_cni_fields_are_named() {
    let error = parse_config(
        doc(r#""cni": {"cniVersion": "0.3.1", "name": "-bad", "plugins": [
            {"type": "macvlan"}, {"type": "../../bin/sh"}, {"type": "/bin/true", "ipam": {"type": "a/b"}},
            {"mode": "x"}, {"type": "tuning", "name": "other"}]}"#)
        .as_bytes(),
    )
    .unwrap_err();
    assert_eq!(
        paths(&error),
        [
            "cni.cniVersion",
            "cni.name",
            "cni.plugins[1].type",
            "cni.plugins[2].type",
            "cni.plugins[2].ipam.type",
            "cni.plugins[3].type",
            "cni.plugins[4].name"
        ],
        "{error}"
    );
}

#[test]
fn unknown_cni_field_and_wrong_shapes_are_named() {
    let error = parse_config(doc(r#""cni": {"plugin": []}"#).as_bytes()).unwrap_err();
    assert_eq!(paths(&error), ["cni.plugin"]);
    let error = parse_config(
        doc(r#""cni": {"cniVersion": "1.0.0", "name": "n", "plugins": [["macvlan"]]}"#).as_bytes(),
    )
    .unwrap_err();
    assert_eq!(paths(&error), ["cni.plugins[0]"], "{error}");
    let error =
        parse_config(doc(r#""cni": {"claimMayOverride": ["mtu"]}"#).as_bytes()).unwrap_err();
    assert_eq!(paths(&error), ["cni.claimMayOverride[0]"], "{error}");
}

#[test]
fn inline_and_reference_are_exclusive_and_incomplete_inline_is_refused() {
    let error = parse_config(
        doc(
            r#""cni": {"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "bridge"}],
                       "networkAttachmentDefinition": {"name": "macnet"}}"#,
        )
        .as_bytes(),
    )
    .unwrap_err();
    assert_eq!(paths(&error), ["cni.networkAttachmentDefinition"]);
    let error =
        parse_config(doc(r#""cni": {"plugins": [{"type": "bridge"}]}"#).as_bytes()).unwrap_err();
    assert_eq!(paths(&error), ["cni.cniVersion", "cni.name"]);
    let error = parse_config(
        doc(r#""cni": {"networkAttachmentDefinition": {"namespace": "Bad_NS", "name": "a..b"}}"#)
            .as_bytes(),
    )
    .unwrap_err();
    assert_eq!(
        paths(&error),
        [
            "cni.networkAttachmentDefinition.name",
            "cni.networkAttachmentDefinition.namespace"
        ]
    );
}

#[test]
fn static_settings_next_to_cni_are_refused_except_the_name() {
    let error = parse_config(
        doc(&format!(
            r#""interface": {{"name": "net1", "mtu": 9000, "addresses": ["192.0.2.1/24"]}}, {MACVLAN}"#
        ))
        .as_bytes(),
    )
    .unwrap_err();
    assert_eq!(
        paths(&error),
        ["interface.addresses", "interface.mtu"],
        "{error}"
    );
}

fn sourced(source: ConfigSource, index: usize, body: &str) -> SourcedConfig {
    SourcedConfig::parse(source, vec![], index, doc(body).as_bytes()).unwrap()
}

fn class_with(grants: &str) -> SourcedConfig {
    let body = MACVLAN.replacen(
        r#""cni": {"#,
        &format!(r#""cni": {{"claimMayOverride": [{grants}], "#),
        1,
    );
    sourced(ConfigSource::Class, 0, &body)
}

#[test]
fn a_class_network_with_a_granted_interface_name() {
    let class = class_with(r#""interfaceName""#);
    let claim = sourced(ConfigSource::Claim, 0, r#""interface": {"name": "fast0"}"#);
    let merged = merge_configs(&[claim, class]).unwrap();
    assert_eq!(merged.interface.name.as_deref(), Some("fast0"));
    assert_eq!(merged.cni.as_ref().unwrap().name.as_deref(), Some("macnet"));
    assert_eq!(
        merged.cni.unwrap().claim_may_override,
        [CniOverride::InterfaceName]
    );
}

#[test]
fn a_claim_overriding_what_the_class_does_not_grant_is_an_error_naming_the_field() {
    let class = class_with(r#""interfaceName""#);
    let claim = sourced(
        ConfigSource::Claim,
        1,
        r#""cni": {"cniVersion": "1.0.0", "name": "mine", "plugins": [{"type": "bridge"}], "deviceField": "dev"}"#,
    );
    let error = merge_configs(&[class.clone(), claim]).unwrap_err();
    assert_eq!(
        paths(&error),
        [
            "claim config[1]: cni.cniVersion",
            "claim config[1]: cni.name",
            "claim config[1]: cni.plugins",
            "claim config[1]: cni.deviceField"
        ],
        "{error}"
    );
    assert!(
        error.to_string().contains("only [interfaceName]"),
        "{error}"
    );
    let claim = sourced(ConfigSource::Claim, 0, r#""interface": {"mtu": 1500}"#);
    let error = merge_configs(&[class, claim]).unwrap_err();
    assert_eq!(paths(&error), ["claim config[0]: interface.mtu"]);
}

#[test]
fn a_granted_network_override_replaces_the_class_network_whole() {
    let class = class_with(r#""network""#);
    let claim = sourced(
        ConfigSource::Claim,
        0,
        r#""cni": {"networkAttachmentDefinition": {"namespace": "team-a", "name": "fast"}}"#,
    );
    let merged = merge_configs(&[class, claim]).unwrap();
    let cni = merged.cni.unwrap();
    assert!(cni.plugins.is_empty() && cni.cni_version.is_none());
    assert_eq!(cni.network_attachment_definition.unwrap().name, "fast");
}

#[test]
fn claims_cannot_grant_themselves_overrides() {
    let claim = sourced(
        ConfigSource::Claim,
        0,
        r#""cni": {"claimMayOverride": ["network"]}"#,
    );
    let error = merge_configs(&[claim]).unwrap_err();
    assert_eq!(paths(&error), ["claim config[0]: cni.claimMayOverride"]);
}

#[test]
fn without_a_class_network_a_claim_brings_its_own_and_a_merged_cni_needs_a_network() {
    let claim = sourced(ConfigSource::Claim, 0, MACVLAN);
    let merged = merge_configs(&[claim]).unwrap();
    let list = merged.cni.unwrap().inline_network().unwrap();
    assert_eq!(list.name, "macnet");
    let types: Vec<_> = list.plugins.iter().map(|p| p.0["type"].clone()).collect();
    assert_eq!(types, ["macvlan", "tuning"]);
    let class = sourced(
        ConfigSource::Class,
        0,
        r#""cni": {"deviceField": "master"}"#,
    );
    let error = merge_configs(&[class]).unwrap_err();
    assert_eq!(paths(&error), ["merged config: cni"]);
    // A class's static settings and a claim's CNI network conflict in the merged config.
    let class = sourced(ConfigSource::Class, 0, r#""interface": {"mtu": 9000}"#);
    let claim = sourced(ConfigSource::Claim, 0, MACVLAN);
    let error = merge_configs(&[class, claim]).unwrap_err();
    assert_eq!(paths(&error), ["merged config: interface.mtu"]);
}
