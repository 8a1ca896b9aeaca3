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
    assert_eq!(cni.effective_device_fields(), ["master"]);
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
fn a_granted_reference_replaces_the_class_network_whole() {
    let body = MACVLAN.replacen(
        r#""cni": {"#,
        r#""cni": {"claimMayBring": {"networkAttachmentDefinition": {"otherNamespaces": ["team-a"]}}, "#,
        1,
    );
    let class = sourced(ConfigSource::Class, 0, &body);
    let claim = sourced(
        ConfigSource::Claim,
        0,
        r#""cni": {"networkAttachmentDefinition": {"namespace": "team-a", "name": "fast"}}"#,
    );
    let merged = merge_configs(&[class, claim]).unwrap();
    let cni = merged.cni.unwrap();
    assert!(cni.plugins.is_empty() && cni.cni_version.is_none());
    assert_eq!(cni.network_attachment_definition.unwrap().name, "fast");
    // The grant travels with the merged config: the namespace is checked at prepare.
    let grant = cni
        .claim_may_bring
        .unwrap()
        .network_attachment_definition
        .unwrap();
    assert!(grant.permits("team-b", "team-a"));
    assert!(grant.permits("team-b", "team-b"));
    assert!(!grant.permits("team-b", "kube-system"));
}

#[test]
fn claims_cannot_grant_themselves_anything() {
    let claim = sourced(
        ConfigSource::Claim,
        0,
        r#""cni": {"claimMayOverride": ["interfaceName"], "claimMayBring": {"inline": true}}"#,
    );
    let error = merge_configs(&[claim]).unwrap_err();
    assert_eq!(
        paths(&error),
        [
            "claim config[0]: cni.claimMayOverride",
            "claim config[0]: cni.claimMayBring"
        ]
    );
}

#[test]
fn a_claim_brings_its_own_network_only_where_the_class_allows_it() {
    // No class config at all (a class without config): the claim's network is refused.
    let claim = sourced(ConfigSource::Claim, 0, MACVLAN);
    let error = merge_configs(std::slice::from_ref(&claim)).unwrap_err();
    assert_eq!(paths(&error), ["claim config[0]: cni.plugins"], "{error}");
    assert!(
        error.errors[0]
            .message
            .contains("lets claims bring: none); an admin allows it with cni.claimMayBring.inline"),
        "{error}"
    );
    // With the grant it is the network.
    let class = sourced(
        ConfigSource::Class,
        0,
        r#""cni": {"claimMayBring": {"inline": true}}"#,
    );
    let merged = merge_configs(&[class, claim]).unwrap();
    let list = merged.cni.unwrap().inline_network().unwrap();
    assert_eq!(list.name, "macnet");
    let types: Vec<_> = list.plugins.iter().map(|p| p.0["type"].clone()).collect();
    assert_eq!(types, ["macvlan", "tuning"]);
    // A class with a grant but no network, and no claim network: nothing to run.
    let class = sourced(
        ConfigSource::Class,
        0,
        r#""cni": {"claimMayBring": {"inline": true}}"#,
    );
    let error = merge_configs(&[class]).unwrap_err();
    assert_eq!(paths(&error), ["merged config: cni"]);
    // A class's static settings and a claim's CNI network conflict in the merged config.
    let both = doc(r#""interface": {"mtu": 9000}, "cni": {"claimMayBring": {"inline": true}}"#);
    assert!(
        SourcedConfig::parse(ConfigSource::Class, vec![], 0, both.as_bytes()).is_err(),
        "static next to cni in one config"
    );
    let static_class = sourced(ConfigSource::Class, 0, r#""interface": {"mtu": 9000}"#);
    let error =
        merge_configs(&[static_class, sourced(ConfigSource::Claim, 0, MACVLAN)]).unwrap_err();
    assert!(
        paths(&error)
            .iter()
            .all(|p| p.starts_with("claim config[0]: cni.")),
        "{error}"
    );
}
