//! The tenant boundary (`netclaim_api::policy`, and what `merge` enforces of it): each rule
//! refuses, naming the field and saying why.
// Test helpers outside #[test] fns may unwrap too: a panic is a failed test.
#![allow(clippy::unwrap_used)]

use netclaim_api::policy::{
    MAX_PLUGINS, PluginAllowlist, apply_plugin_overrides, check_claim_network, check_plugins,
};
use netclaim_api::{
    CniNetworkList, ConfigError, ConfigSource, SourcedConfig, merge_configs, parse_config,
};

fn doc(body: &str) -> String {
    format!(r#"{{"apiVersion": "netclaim.dev/v1alpha1", "kind": "NetworkConfig", {body}}}"#)
}

fn sourced(source: ConfigSource, body: &str) -> SourcedConfig {
    SourcedConfig::parse(source, vec![], 0, doc(body).as_bytes()).unwrap()
}

fn paths(error: &ConfigError) -> Vec<&str> {
    error.errors.iter().map(|e| e.path.as_str()).collect()
}

fn list(json: &str) -> CniNetworkList {
    CniNetworkList::parse(json.as_bytes()).unwrap()
}

/// The admin's class: a macvlan with static IPAM, the claim may pick the interface name
/// and its addresses.
const CLASS: &str = r#""cni": {"cniVersion": "1.0.0", "name": "macnet",
    "plugins": [{"type": "macvlan", "mode": "bridge", "ipam": {"type": "static"}}],
    "claimMayOverride": ["interfaceName", "plugins[0].ipam.addresses"]}"#;

#[test]
fn a_claim_conflist_under_a_class_that_does_not_allow_it_is_refused() {
    let class = sourced(ConfigSource::Class, CLASS);
    let claim = sourced(
        ConfigSource::Claim,
        r#""cni": {"cniVersion": "1.0.0", "name": "mine",
                   "plugins": [{"type": "host-device", "device": "eth0"}]}"#,
    );
    let error = merge_configs(&[class, claim]).unwrap_err();
    assert_eq!(paths(&error), ["claim config[0]: cni.plugins"]);
    assert_eq!(
        error.errors[0].message,
        "the DeviceClass defines the CNI network; claims may not bring their own network this \
         way under this DeviceClass (it lets claims bring: none); an admin allows it with \
         cni.claimMayBring.inline in the class config"
    );
    // The shipped static class (no cni at all) refuses a NAD reference the same way.
    let static_class = sourced(
        ConfigSource::Class,
        r#""interface": {"sysctls": {"arpIgnore": 1}}"#,
    );
    let claim = sourced(
        ConfigSource::Claim,
        r#""cni": {"networkAttachmentDefinition": {"name": "uplink"}}"#,
    );
    let error = merge_configs(&[static_class, claim]).unwrap_err();
    assert_eq!(
        paths(&error)[0],
        "claim config[0]: cni.networkAttachmentDefinition"
    );
    assert!(
        error.errors[0]
            .message
            .contains("cni.claimMayBring.networkAttachmentDefinition"),
        "{error}"
    );
    // Allowing inline networks does not allow references, and the other way round.
    let inline_only = sourced(
        ConfigSource::Class,
        r#""cni": {"claimMayBring": {"inline": true}}"#,
    );
    let claim = sourced(
        ConfigSource::Claim,
        r#""cni": {"networkAttachmentDefinition": {"name": "uplink"}}"#,
    );
    let error = merge_configs(&[inline_only, claim]).unwrap_err();
    assert!(
        error.errors[0]
            .message
            .contains("it lets claims bring: inline)"),
        "{error}"
    );
}

#[test]
fn a_plugin_override_of_a_field_the_class_does_not_list_is_refused() {
    let class = sourced(ConfigSource::Class, CLASS);
    let claim = sourced(
        ConfigSource::Claim,
        r#""interface": {"name": "net1"}, "cni": {"pluginOverrides": {
            "plugins[0].ipam.addresses": [{"address": "192.0.2.7/24"}],
            "plugins[0].mode": "passthru"}}"#,
    );
    let error = merge_configs(&[class.clone(), claim]).unwrap_err();
    assert_eq!(
        paths(&error),
        [r#"claim config[0]: cni.pluginOverrides["plugins[0].mode"]"#]
    );
    assert_eq!(
        error.errors[0].message,
        "the DeviceClass lets claims override only [interfaceName, plugins[0].ipam.addresses]"
    );
    // What it lists, and what lies under it, is the claim's to set.
    let claim = sourced(
        ConfigSource::Claim,
        r#""cni": {"pluginOverrides": {"plugins[0].ipam.addresses": [{"address": "192.0.2.7/24"}]}}"#,
    );
    let merged = merge_configs(&[class, claim]).unwrap();
    let cni = merged.cni.unwrap();
    let out =
        apply_plugin_overrides(&cni.inline_network().unwrap(), &cni.plugin_overrides).unwrap();
    assert_eq!(
        out.plugins[0].0["ipam"]["addresses"][0]["address"],
        "192.0.2.7/24"
    );
    // A class config cannot carry overrides: it writes its network directly.
    let class = sourced(
        ConfigSource::Class,
        r#""cni": {"claimMayBring": {"inline": true}, "pluginOverrides": {"plugins[0].mtu": 1400}}"#,
    );
    let error = merge_configs(&[class]).unwrap_err();
    assert_eq!(paths(&error), ["class config[0]: cni.pluginOverrides"]);
}

#[test]
fn dangerous_fields_are_never_the_claims_even_when_granted() {
    // No class can grant a path through a node path, a device, the runtime or a type.
    let error = parse_config(
        doc(
            r#""cni": {"claimMayBring": {"inline": true}, "claimMayOverride": [
            "plugins[0].ipam.dataDir", "plugins[0].master", "plugins[0].ipam.type",
            "plugins[0].runtimeConfig", "plugins[0].ipam.addresses"]}"#,
        )
        .as_bytes(),
    )
    .unwrap_err();
    assert_eq!(
        paths(&error),
        [
            "cni.claimMayOverride[0]",
            "cni.claimMayOverride[1]",
            "cni.claimMayOverride[2]",
            "cni.claimMayOverride[3]"
        ],
        "{error}"
    );
    assert!(
        error.errors[0].message.starts_with(
            "plugins[0].ipam.dataDir: \"dataDir\" names a file, directory or socket on the node"
        ),
        "{error}"
    );
    assert!(
        error.errors[1].message.contains("picks a host device"),
        "{error}"
    );
    assert!(
        error.errors[2]
            .message
            .contains("chooses a plugin executable"),
        "{error}"
    );
    assert!(
        error.errors[3]
            .message
            .contains("container runtime's to fill"),
        "{error}"
    );

    // A granted prefix does not let a value smuggle one in.
    let class = sourced(
        ConfigSource::Class,
        &CLASS.replace("plugins[0].ipam.addresses", "plugins[0].ipam"),
    );
    let error = parse_config(
        doc(
            r#""cni": {"pluginOverrides": {"plugins[0].ipam": {"type": "static",
            "dataDir": "/etc/cron.d", "routes": [{"dst": "0.0.0.0/0", "gw": "/x"}]}}}"#,
        )
        .as_bytes(),
    )
    .unwrap_err();
    assert_eq!(
        paths(&error),
        [
            r#"cni.pluginOverrides["plugins[0].ipam"].dataDir"#,
            r#"cni.pluginOverrides["plugins[0].ipam"].routes[0].gw"#,
            r#"cni.pluginOverrides["plugins[0].ipam"].type"#,
        ],
        "{error}"
    );
    assert!(
        error.errors[1]
            .message
            .contains("reads as a path on the node"),
        "{error}"
    );
    // The same value without the bad parts is fine.
    let claim = sourced(
        ConfigSource::Claim,
        r#""cni": {"pluginOverrides": {"plugins[0].ipam": {"addresses": [{"address": "192.0.2.8/24"}]}}}"#,
    );
    let merged = merge_configs(&[class, claim]).unwrap();
    let cni = merged.cni.unwrap();
    // Replacing ipam whole would drop its type: the executable may not change.
    let error =
        apply_plugin_overrides(&cni.inline_network().unwrap(), &cni.plugin_overrides).unwrap_err();
    assert_eq!(paths(&error), ["cni.pluginOverrides"]);

    // A claim's deviceField may not have the device name written into a node path.
    let bring = sourced(
        ConfigSource::Class,
        r#""cni": {"claimMayBring": {"inline": true}}"#,
    );
    let claim = sourced(
        ConfigSource::Claim,
        r#""cni": {"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "macvlan"}],
                   "deviceField": "dataDir"}"#,
    );
    let error = merge_configs(&[bring, claim]).unwrap_err();
    assert_eq!(paths(&error), ["claim config[0]: cni.deviceField"]);
}

#[test]
fn a_claims_network_may_not_name_node_paths_devices_or_runtime_keys() {
    let network = list(
        r#"{"cniVersion": "1.0.0", "name": "n", "plugins": [
            {"type": "macvlan", "master": "ignored-netclaim-writes-it", "mode": "bridge",
             "ipam": {"type": "host-local", "dataDir": "/etc", "resolvConf": "/etc/shadow",
                      "ranges": [[{"subnet": "192.0.2.0/24"}]]}},
            {"type": "static", "master": "eth0", "runtimeConfig": {"portMappings": []},
             "addresses": [{"address": "../../etc/x"}]}]}"#,
    );
    let error = check_claim_network(&network, None).unwrap_err();
    assert_eq!(
        paths(&error),
        [
            "plugins[0].ipam.dataDir",
            "plugins[0].ipam.resolvConf",
            "plugins[1].addresses[0].address",
            "plugins[1].master",
            "plugins[1].runtimeConfig",
        ],
        "{error}"
    );
    // The first plugin's device field (and deviceField) are overwritten by netclaim, so
    // they may stand in a claim's network; a plain network passes.
    let fine = list(
        r#"{"cniVersion": "1.0.0", "name": "n", "plugins": [
            {"type": "ipvlan", "master": "placeholder", "uplink": "x",
             "ipam": {"type": "static", "addresses": [{"address": "198.51.100.7/24"}],
                      "routes": [{"dst": "0.0.0.0/0"}]}}]}"#,
    );
    assert!(check_claim_network(&fine, Some("uplink")).is_ok());
}

#[test]
fn plugins_outside_the_allowlist_are_refused_first_chained_and_as_ipam() {
    let allowed = PluginAllowlist::default();
    let first = list(
        r#"{"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "bridge", "bridge": "cni0"}]}"#,
    );
    let error = check_plugins(&first, &allowed).unwrap_err();
    assert_eq!(paths(&error), ["plugins[0].type"]);
    assert_eq!(
        error.errors[0].message,
        "\"bridge\" is not an allowed CNI plugin on this node (allowed: host-device, \
         host-local, ipvlan, macvlan, static; an admin allows more with netclaim run \
         --cni-allowed-plugins)"
    );
    let chained = list(
        r#"{"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "macvlan"}, {"type": "portmap"}]}"#,
    );
    assert_eq!(
        paths(&check_plugins(&chained, &allowed).unwrap_err()),
        ["plugins[1].type"]
    );
    let ipam = list(
        r#"{"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "macvlan", "ipam": {"type": "dhcp"}}]}"#,
    );
    let error = check_plugins(&ipam, &allowed).unwrap_err();
    assert_eq!(paths(&error), ["plugins[0].ipam.type"]);
    assert!(
        error.errors[0]
            .message
            .starts_with("\"dhcp\" is not an allowed"),
        "{error}"
    );
    // An admin's flag widens it.
    let wider = PluginAllowlist::default_and(["portmap", "dhcp"]).unwrap();
    assert!(check_plugins(&chained, &wider).is_ok());
    assert!(check_plugins(&ipam, &wider).is_ok());
}

#[test]
fn device_taking_plugins_only_first_and_host_device_only_on_the_allocated_device() {
    let allowed = PluginAllowlist::default();
    let chained = list(
        r#"{"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "macvlan"}, {"type": "host-device", "device": "eth0"}]}"#,
    );
    let error = check_plugins(&chained, &allowed).unwrap_err();
    assert_eq!(paths(&error), ["plugins[1].type"]);
    assert!(
        error.errors[0]
            .message
            .contains("only a list's first plugin is given the allocated one"),
        "{error}"
    );
    let selector = list(
        r#"{"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "host-device", "pciBusID": "0000:00:03.0", "hwaddr": "02:00:00:00:00:01"}]}"#,
    );
    let error = check_plugins(&selector, &allowed).unwrap_err();
    assert_eq!(paths(&error), ["plugins[0].hwaddr", "plugins[0].pciBusID"]);
}

#[test]
fn lists_are_capped_in_plugins_and_network_attachment_definitions_in_size() {
    let plugins: Vec<String> = (0..=MAX_PLUGINS)
        .map(|_| r#"{"type": "static"}"#.to_owned())
        .collect();
    let long = format!(
        r#"{{"cniVersion": "1.0.0", "name": "n", "plugins": [{}]}}"#,
        plugins.join(",")
    );
    let error = CniNetworkList::parse(long.as_bytes()).unwrap_err();
    assert_eq!(paths(&error), ["plugins"]);
    assert!(
        error.errors[0]
            .message
            .starts_with("has 9 plugins; a network has at most 8"),
        "{error}"
    );
    let padding = " ".repeat(10 * 1024);
    let config = format!(r#"{{"cniVersion": "1.0.0", "name": "n", "type": "macvlan"}}{padding}"#);
    let nad = serde_json::json!({"spec": {"config": config}});
    let error = CniNetworkList::from_network_attachment_definition(&nad).unwrap_err();
    assert_eq!(paths(&error), ["spec.config"]);
    assert!(
        error.errors[0].message.contains("at most 10240 bytes"),
        "{error}"
    );
}

#[test]
fn the_old_network_override_says_what_replaced_it() {
    let error =
        parse_config(doc(r#""cni": {"claimMayOverride": ["network"]}"#).as_bytes()).unwrap_err();
    assert_eq!(paths(&error), ["cni.claimMayOverride[0]"]);
    assert!(
        error.errors[0].message.contains("cni.claimMayBring"),
        "{error}"
    );
    let error = parse_config(
        doc(r#""cni": {"claimMayBring": {"networkAttachmentDefinition": {"otherNamespaces": ["Net_Team", "*"]}}}"#)
            .as_bytes(),
    )
    .unwrap_err();
    assert_eq!(
        paths(&error),
        ["cni.claimMayBring.networkAttachmentDefinition.otherNamespaces[0]"]
    );
}

/// CNI plugins are Go programs: `encoding/json` sets a field from any key that matches its
/// name case-insensitively, with Unicode simple folding (`ſ` for `s`, the Kelvin sign for
/// `k`), the last such key winning. Every key rule holds for those spellings too. Found by
/// the `cni_policy` fuzz target (test/fuzz/regressions/cni_policy/).
#[test]
fn key_rules_hold_for_every_spelling_a_go_plugin_reads() {
    let allowed = PluginAllowlist::default();
    // `maſter` sorts after `master`, so a Go macvlan would take it over the allocated
    // device netclaim writes into `master`.
    let long_s = list(
        "{\"cniVersion\": \"1.0.0\", \"name\": \"n\", \"plugins\": [
            {\"type\": \"macvlan\", \"ma\u{17F}ter\": \"eth0\"},
            {\"type\": \"static\", \"MASTER\": \"eth0\", \"Capabilities\": {\"ips\": true},
             \"\u{212A}ernelpath\": \"x\", \"DATADIR\": \"d\"}]}",
    );
    let error = check_claim_network(&long_s, None).unwrap_err();
    assert_eq!(
        paths(&error),
        [
            "plugins[0].ma\u{17F}ter",
            "plugins[1].Capabilities",
            "plugins[1].DATADIR",
            "plugins[1].MASTER",
            "plugins[1].\u{212A}ernelpath",
        ],
        "{error}"
    );
    assert!(
        error.errors[0]
            .message
            .starts_with("is the device field \"master\" as the plugin reads it"),
        "{error}"
    );
    assert!(
        error.errors[1]
            .message
            .starts_with("is the container runtime's to fill"),
        "{error}"
    );
    // `IPAM` is the `ipam` a Go plugin decodes when no exact `ipam` follows it: its type
    // is on the allowlist too.
    let ipam = list(
        r#"{"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "macvlan", "IPAM": {"Type": "dhcp"}}]}"#,
    );
    let error = check_plugins(&ipam, &allowed).unwrap_err();
    assert_eq!(paths(&error), ["plugins[0].IPAM.Type"]);
    assert!(
        error.errors[0]
            .message
            .starts_with("\"dhcp\" is not an allowed"),
        "{error}"
    );
    // host-device's selectors in any case.
    let selector = list(
        r#"{"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "host-device", "PCIBUSID": "0000:03:00.2"}]}"#,
    );
    assert_eq!(
        paths(&check_plugins(&selector, &allowed).unwrap_err()),
        ["plugins[0].PCIBUSID"]
    );
    // Keys the runtime sets, in any spelling, are refused when the network is parsed.
    let error = CniNetworkList::parse(
        "{\"cniVersion\": \"1.0.0\", \"name\": \"n\", \"plugins\": [{\"type\": \"static\", \"prevRe\u{17F}ult\": {}}]}"
            .as_bytes(),
    )
    .unwrap_err();
    assert_eq!(paths(&error), ["plugins[0].prevRe\u{17F}ult"], "{error}");
    // No class can grant an override of the device field in another case.
    let error = SourcedConfig::parse(
        ConfigSource::Class,
        vec![],
        0,
        doc(r#""cni": {"cniVersion": "1.0.0", "name": "macnet",
            "plugins": [{"type": "macvlan", "ipam": {"type": "static"}}],
            "claimMayOverride": ["plugins[0].Master"]}"#)
        .as_bytes(),
    )
    .unwrap_err();
    assert_eq!(
        paths(&error),
        ["class config[0]: cni.claimMayOverride[0]"],
        "{error}"
    );
    assert!(
        error.errors[0]
            .message
            .contains("\"Master\" picks a host device"),
        "{error}"
    );
}

#[test]
fn a_relative_path_is_a_path_too_since_plugins_run_in_the_root_directory() {
    let network = list(
        r#"{"cniVersion": "1.0.0", "name": "n", "plugins": [
            {"type": "static", "addresses": [{"address": "192.0.2.8/24"},
                                             {"address": "etc/cron.d/x"}],
             "routes": [{"dst": "2001:db8::/32"}, {"dst": "var/run/netns/other"}]}]}"#,
    );
    let error = check_claim_network(&network, None).unwrap_err();
    assert_eq!(
        paths(&error),
        [
            "plugins[0].addresses[1].address",
            "plugins[0].routes[1].dst"
        ],
        "{error}"
    );
}
