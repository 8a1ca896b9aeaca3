//! Every manifest in `examples/` parses into the typed Kubernetes objects it claims to be,
//! every CEL selector compiles, and every opaque config for `netclaim.dev` passes the
//! driver's own validator, as does every NetworkAttachmentDefinition's `spec.config`. The
//! GPU pairing example's selectors and `matchAttribute` constraints are evaluated against
//! the devices netclaim publishes for the sysfs fixtures.
//! (Field-level schema strictness is checked by `hack/validate-manifests.sh` with the
//! official OpenAPI schemas, which do not cover the NAD CRD.)
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::api::resource::v1::{
    Device, DeviceClass, DeviceRequest, OpaqueDeviceConfiguration, ResourceClaimTemplate,
};
use netclaim::discovery::{
    DeviceFilter, DiscoveryConfig, LinkRecord, NicRecord, build_report, sysfs,
};
use serde::Deserialize;

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

fn manifest_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![examples_dir()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                files.push(path);
            }
        }
    }
    files.sort();
    assert!(!files.is_empty(), "no manifests found under examples/");
    files
}

/// DeviceClasses of other drivers that examples pair netclaim NICs with (the GPU pairing
/// example); they are not defined in `examples/`.
const OTHER_DRIVERS_CLASSES: &[&str] = &["gpu.example.com"];

/// What the checks found, so the test can assert it saw the object kinds it expects.
#[derive(Default)]
struct Seen {
    kinds: Vec<String>,
    selectors: usize,
    opaque_configs: usize,
    policy_expressions: usize,
    /// DeviceClasses by name: their netclaim configs.
    classes: BTreeMap<String, Vec<netclaim_api::SourcedConfig>>,
    /// Claim templates: (origin, request, class name, claim configs for it).
    requests: Vec<(String, String, String, Vec<netclaim_api::SourcedConfig>)>,
    /// PodNetworks of netclaim with a config, by name.
    networks: BTreeMap<String, netclaim_api::NetworkConfig>,
}

/// The PodNetwork CRD says what netclaim's types read: cluster-scoped, a status
/// subresource, `spec.enabled` defaulting to true, `spec.provider` required and immutable,
/// free-form `spec.parameters`, conditions keyed by type.
fn check_pod_network_crd(doc: &serde_json::Value, origin: &str) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let crd: CustomResourceDefinition = serde_json::from_value(doc.clone()).unwrap();
    assert_eq!(crd.spec.group, netclaim_api::podnetwork::GROUP, "{origin}");
    assert_eq!(
        crd.spec.names.kind,
        netclaim_api::podnetwork::KIND,
        "{origin}"
    );
    assert_eq!(
        crd.spec.names.plural,
        netclaim_api::podnetwork::PLURAL,
        "{origin}"
    );
    assert_eq!(crd.spec.scope, "Cluster", "{origin}");
    let version = crd
        .spec
        .versions
        .iter()
        .find(|v| v.name == netclaim_api::podnetwork::VERSION)
        .unwrap_or_else(|| panic!("{origin}: no v1alpha1"));
    assert!(version.served && version.storage, "{origin}");
    assert!(
        version
            .subresources
            .as_ref()
            .and_then(|s| s.status.as_ref())
            .is_some(),
        "{origin}: no status subresource"
    );
    let schema = serde_json::to_value(&version.schema).unwrap();
    let spec = &schema["openAPIV3Schema"]["properties"]["spec"];
    assert_eq!(spec["properties"]["enabled"]["default"], true, "{origin}");
    assert_eq!(
        spec["required"],
        serde_json::json!(["provider"]),
        "{origin}"
    );
    assert_eq!(
        spec["properties"]["provider"]["x-kubernetes-validations"][0]["rule"], "self == oldSelf",
        "{origin}"
    );
    assert_eq!(
        spec["properties"]["parameters"]["x-kubernetes-preserve-unknown-fields"], true,
        "{origin}"
    );
    let conditions = &schema["openAPIV3Schema"]["properties"]["status"]["properties"]["conditions"];
    assert_eq!(
        conditions["x-kubernetes-list-map-keys"],
        serde_json::json!(["type"]),
        "{origin}"
    );
}

fn documents(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| serde_json::Value::deserialize(doc).unwrap())
        .filter(|doc| !doc.is_null())
        .collect()
}

fn compile_selector(expression: &str, origin: &str, seen: &mut Seen) {
    if let Err(err) = cel::Program::compile(expression) {
        panic!("{origin}: CEL selector does not compile: {expression}\n{err}");
    }
    seen.selectors += 1;
}

fn check_opaque(opaque: &OpaqueDeviceConfiguration, origin: &str, seen: &mut Seen) {
    if opaque.driver != netclaim_api::DRIVER_NAME {
        return;
    }
    if let Err(err) = opaque_config_problem(opaque) {
        panic!("{origin}: opaque config rejected by netclaim's validator: {err}");
    }
    seen.opaque_configs += 1;
}

/// What netclaim's validator says about a `netclaim.dev` opaque config.
fn opaque_config_problem(
    opaque: &OpaqueDeviceConfiguration,
) -> Result<(), netclaim_api::ConfigError> {
    let raw = serde_json::to_vec(&opaque.parameters.0).unwrap();
    netclaim_api::parse_config(&raw).map(drop)
}

/// A `netclaim.dev` opaque config as the driver sees it in an allocation.
fn sourced(
    opaque: &OpaqueDeviceConfiguration,
    source: netclaim_api::ConfigSource,
    requests: Vec<String>,
    index: usize,
) -> Option<netclaim_api::SourcedConfig> {
    (opaque.driver == netclaim_api::DRIVER_NAME).then(|| {
        let raw = serde_json::to_vec(&opaque.parameters.0).unwrap();
        netclaim_api::SourcedConfig::parse(source, requests, index, &raw).unwrap()
    })
}

/// Every claim template's request, with its class's configs, merges the way prepare
/// merges it (the class's grants hold), and an inline network it ends up with runs only
/// plugins of the default allowlist.
fn check_requests_against_their_classes(seen: &Seen) -> usize {
    let mut checked = 0;
    for (origin, request, class, claim_configs) in &seen.requests {
        if OTHER_DRIVERS_CLASSES.contains(&class.as_str()) {
            // Another driver's device: no netclaim config may apply to it.
            assert!(
                claim_configs
                    .iter()
                    .all(|c| !c.requests.is_empty() && !c.requests.contains(request)),
                "{origin}: request {request} of another driver's class {class} gets netclaim config"
            );
            continue;
        }
        let Some(class_configs) = seen.classes.get(class) else {
            panic!(
                "{origin}: request {request} names DeviceClass {class}, which examples/ do not define"
            );
        };
        let all: Vec<_> = class_configs.iter().chain(claim_configs).cloned().collect();
        let merged = netclaim_api::merge_for_request(&all, request)
            .unwrap_or_else(|e| panic!("{origin}: request {request} under class {class}: {e}"));
        if let Some(list) = merged.cni.as_ref().and_then(|cni| cni.inline_network()) {
            let list = netclaim_api::policy::apply_plugin_overrides(
                &list,
                &merged.cni.as_ref().unwrap().plugin_overrides,
            )
            .unwrap_or_else(|e| panic!("{origin}: {e}"));
            netclaim_api::policy::check_plugins(&list, &netclaim_api::PluginAllowlist::default())
                .unwrap_or_else(|e| panic!("{origin}: {e}"));
        }
        checked += 1;
    }
    checked
}

/// A Multus NetworkAttachmentDefinition (a CRD the official schemas do not know): its
/// `spec.config` must be a network netclaim accepts.
fn check_nad(doc: &serde_json::Value, origin: &str) {
    assert_eq!(doc["apiVersion"], "k8s.cni.cncf.io/v1", "{origin}");
    assert!(
        doc["metadata"]["name"].is_string(),
        "{origin}: NAD without a name"
    );
    if let Err(err) = netclaim_api::CniNetworkList::from_network_attachment_definition(doc) {
        panic!("{origin}: NetworkAttachmentDefinition rejected by netclaim's validator: {err}");
    }
}

fn check_request(request: &DeviceRequest, origin: &str, seen: &mut Seen) {
    let exact = request.exactly.iter();
    let alternatives = request.first_available.iter().flatten();
    for selector in exact
        .flat_map(|e| e.selectors.iter().flatten())
        .chain(alternatives.flat_map(|a| a.selectors.iter().flatten()))
    {
        if let Some(cel) = &selector.cel {
            compile_selector(&cel.expression, origin, seen);
        }
    }
}

fn check_document(mut doc: serde_json::Value, origin: &str, seen: &mut Seen) {
    let kind = doc["kind"].as_str().unwrap_or_default().to_string();
    // The multi-network proof of concept's samples are resource.k8s.io/v1beta2: v1 was
    // promoted from v1beta2 with the same DeviceClass and ResourceClaim fields (the
    // schema check runs on the v1beta2 schema itself), so they are read as v1 here.
    if doc["apiVersion"] == "resource.k8s.io/v1beta2" {
        doc["apiVersion"] = "resource.k8s.io/v1".into();
    }
    match kind.as_str() {
        "DeviceClass" => {
            let class: DeviceClass = serde_json::from_value(doc).unwrap();
            let spec = class.spec.unwrap_or_default();
            for selector in spec.selectors.iter().flatten() {
                if let Some(cel) = &selector.cel {
                    compile_selector(&cel.expression, origin, seen);
                }
            }
            let mut configs = Vec::new();
            for (index, config) in spec.config.iter().flatten().enumerate() {
                if let Some(opaque) = &config.opaque {
                    check_opaque(opaque, origin, seen);
                    if let Some(sourced) =
                        sourced(opaque, netclaim_api::ConfigSource::Class, vec![], index)
                    {
                        configs.push(sourced);
                    }
                }
            }
            seen.classes
                .insert(class.metadata.name.clone().unwrap(), configs);
        }
        "ResourceClaimTemplate" => {
            let template: ResourceClaimTemplate = serde_json::from_value(doc).unwrap();
            let devices = template
                .spec
                .unwrap()
                .spec
                .unwrap()
                .devices
                .unwrap_or_default();
            for request in devices.requests.iter().flatten() {
                check_request(request, origin, seen);
            }
            let mut configs = Vec::new();
            for (index, config) in devices.config.iter().flatten().enumerate() {
                if let Some(opaque) = &config.opaque {
                    check_opaque(opaque, origin, seen);
                    let requests = config.requests.clone().unwrap_or_default();
                    if let Some(sourced) =
                        sourced(opaque, netclaim_api::ConfigSource::Claim, requests, index)
                    {
                        configs.push(sourced);
                    }
                }
            }
            for request in devices.requests.iter().flatten() {
                if let Some(exact) = &request.exactly {
                    seen.requests.push((
                        origin.to_owned(),
                        request.name.clone(),
                        exact.device_class_name.clone(),
                        configs.clone(),
                    ));
                }
            }
        }
        "ValidatingAdmissionPolicy" => {
            let policy: ValidatingAdmissionPolicy = serde_json::from_value(doc).unwrap();
            let spec = policy.spec.unwrap();
            let expressions = spec
                .match_conditions
                .iter()
                .flatten()
                .map(|c| c.expression.clone())
                .chain(
                    spec.variables
                        .iter()
                        .flatten()
                        .map(|v| v.expression.clone()),
                )
                .chain(spec.validations.iter().flatten().flat_map(|v| {
                    std::iter::once(v.expression.clone()).chain(v.message_expression.clone())
                }));
            for expression in expressions {
                if let Err(err) = cel::Program::compile(&expression) {
                    panic!("{origin}: CEL does not compile: {expression}\n{err}");
                }
                seen.policy_expressions += 1;
            }
        }
        "ValidatingAdmissionPolicyBinding" => {
            drop(serde_json::from_value::<ValidatingAdmissionPolicyBinding>(doc).unwrap())
        }
        "Pod" => {
            let pod: Pod = serde_json::from_value(doc).unwrap();
            let spec = pod.spec.unwrap();
            assert!(
                spec.resource_claims.is_some_and(|c| !c.is_empty()),
                "{origin}: example pod without resourceClaims"
            );
        }
        "DaemonSet" => {
            let ds: DaemonSet = serde_json::from_value(doc).unwrap();
            let pod_spec = ds.spec.template.spec.unwrap();
            let container = &pod_spec.containers[0];
            for env in container.env.iter().flatten() {
                if env.name == "NETCLAIM_FILTER" {
                    compile_selector(env.value.as_deref().unwrap(), origin, seen);
                }
            }
            check_daemonset_gives_what_the_binary_needs(container, origin);
        }
        "NetworkAttachmentDefinition" => check_nad(&doc, origin),
        "CustomResourceDefinition" => check_pod_network_crd(&doc, origin),
        "PodNetwork" => {
            let network: netclaim::podnetwork::PodNetwork = serde_json::from_value(doc).unwrap();
            if network.spec.provider == netclaim_api::DRIVER_NAME {
                let parsed = netclaim::podnetwork::parse(&network.spec, netclaim_api::DRIVER_NAME)
                    .unwrap_or_else(|e| panic!("{origin}: PodNetwork parameters rejected: {e}"));
                if let Some(config) = parsed.config {
                    seen.networks.insert(network.name().to_owned(), config);
                }
                seen.selectors += 1;
            }
        }
        "ResourceClaim" => {
            let claim: k8s_openapi::api::resource::v1::ResourceClaim =
                serde_json::from_value(doc).unwrap();
            for request in claim
                .spec
                .unwrap_or_default()
                .devices
                .unwrap_or_default()
                .requests
                .iter()
                .flatten()
            {
                check_request(request, origin, seen);
            }
        }
        "Deployment" => {
            let deployment: k8s_openapi::api::apps::v1::Deployment =
                serde_json::from_value(doc).unwrap();
            let spec = deployment.spec;
            assert_eq!(
                spec.replicas,
                Some(1),
                "{origin}: the condition writer runs once"
            );
            let container = &spec.template.spec.unwrap().containers[0];
            assert_eq!(
                container.args.as_deref(),
                Some(&["controller".to_owned()][..]),
                "{origin}"
            );
        }
        "ServiceAccount" => drop(serde_json::from_value::<ServiceAccount>(doc).unwrap()),
        "ClusterRole" => drop(serde_json::from_value::<ClusterRole>(doc).unwrap()),
        "ClusterRoleBinding" => drop(serde_json::from_value::<ClusterRoleBinding>(doc).unwrap()),
        // The kustomize base's own file (examples/install/kustomization.yaml); what it
        // renders is checked by test/tests/install.rs.
        "Kustomization" => assert_eq!(
            doc["apiVersion"], "kustomize.config.k8s.io/v1beta1",
            "{origin}"
        ),
        other => panic!("{origin}: unexpected kind {other:?} in examples/"),
    }
    seen.kinds.push(kind);
}

/// What `netclaim run` needs from its container and cannot check itself until a claim
/// fails on a node: sysctls under `/proc/sys` (read-only unless privileged), the pod netns
/// files as the runtime mounts them later, the CDI spec directory the runtime reads, and in
/// CNI mode the node's plugins in the directories it searches plus their state.
fn check_daemonset_gives_what_the_binary_needs(
    container: &k8s_openapi::api::core::v1::Container,
    origin: &str,
) {
    let privileged = container
        .security_context
        .as_ref()
        .and_then(|s| s.privileged)
        .unwrap_or(false);
    assert!(
        privileged,
        "{origin}: netclaim must run privileged (/proc/sys)"
    );
    let mounts: Vec<_> = container.volume_mounts.iter().flatten().collect();
    let mount = |path: &str| mounts.iter().find(|m| m.mount_path == path).copied();
    for path in [
        "/var/lib/kubelet/plugins_registry",
        "/var/lib/kubelet/plugins",
        "/var/run/nri",
        "/var/run/netns",
        "/sys",
        "/var/run/cdi",
        "/opt/cni/bin",
        "/var/lib/cni",
    ] {
        assert!(mount(path).is_some(), "{origin}: nothing mounted at {path}");
    }
    assert_eq!(
        mount("/var/run/netns").and_then(|m| m.mount_propagation.as_deref()),
        Some("HostToContainer"),
        "{origin}: pod netns files appear after netclaim starts"
    );
    let bin_dirs = container
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "NETCLAIM_CNI_BIN_DIRS")
        .and_then(|e| e.value.clone())
        .unwrap_or_default();
    assert!(
        bin_dirs.split(',').any(|dir| dir == "/opt/cni/bin"),
        "{origin}: the node's CNI plugins (/opt/cni/bin) are not searched: {bin_dirs:?}"
    );
}

#[test]
fn every_example_manifest_is_typed_compiles_and_validates() {
    let mut seen = Seen::default();
    for path in manifest_files() {
        for (index, doc) in documents(&path).into_iter().enumerate() {
            let origin = format!("{}#{index}", path.display());
            check_document(doc, &origin, &mut seen);
        }
    }
    for kind in [
        "DeviceClass",
        "ResourceClaimTemplate",
        "Pod",
        "DaemonSet",
        "ClusterRole",
        "NetworkAttachmentDefinition",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
        "CustomResourceDefinition",
        "PodNetwork",
        "Deployment",
    ] {
        assert!(
            seen.kinds.iter().any(|k| k == kind),
            "no {kind} in examples/"
        );
    }
    assert!(
        seen.selectors >= 5,
        "only {} CEL selectors checked",
        seen.selectors
    );
    assert!(
        seen.opaque_configs >= 4,
        "only {} opaque configs checked",
        seen.opaque_configs
    );
    assert!(
        seen.policy_expressions >= 10,
        "only {} admission policy expressions compiled",
        seen.policy_expressions
    );
    let requests = check_requests_against_their_classes(&seen);
    assert!(
        requests >= 8,
        "only {requests} claim requests checked against their classes"
    );
}

#[test]
fn a_claim_network_under_the_shipped_class_is_caught_by_the_same_check() {
    // Guards the cross-check above: a template that brings its own conflist under
    // netclaim-nic (which grants no network) must fail it.
    let mut seen = Seen::default();
    for path in manifest_files() {
        for (index, doc) in documents(&path).into_iter().enumerate() {
            if doc["kind"] == "DeviceClass" {
                check_document(doc, &format!("{}#{index}", path.display()), &mut seen);
            }
        }
    }
    let template = serde_json::json!({
        "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaimTemplate",
        "metadata": {"name": "sneaky", "namespace": "default"},
        "spec": {"spec": {"devices": {
            "requests": [{"name": "nic", "exactly": {"deviceClassName": "netclaim-nic"}}],
            "config": [{"requests": ["nic"], "opaque": {"driver": "netclaim.dev", "parameters": {
                "apiVersion": "netclaim.dev/v1alpha1", "kind": "NetworkConfig",
                "cni": {"cniVersion": "1.0.0", "name": "up",
                        "plugins": [{"type": "host-device", "device": "eth0"}]}}}}]
        }}}
    });
    check_document(template, "sneaky", &mut seen);
    let outcome = std::panic::catch_unwind(|| check_requests_against_their_classes(&seen));
    let message = *outcome.unwrap_err().downcast::<String>().unwrap();
    assert!(
        message.contains("claim config[0] (requests [nic]): cni.plugins"),
        "{message}"
    );
}

#[test]
fn a_bad_opaque_config_is_caught_by_the_same_check() {
    // Guards the test above against passing vacuously: the validator it calls must reject
    // this, naming the field.
    let opaque: OpaqueDeviceConfiguration = serde_json::from_value(serde_json::json!({
        "driver": "netclaim.dev",
        "parameters": {
            "apiVersion": "netclaim.dev/v1alpha1",
            "kind": "NetworkConfig",
            "interface": {"mtu": 70000, "adresses": []}
        }
    }))
    .unwrap();
    let error = opaque_config_problem(&opaque).unwrap_err();
    let paths: Vec<&str> = error.errors.iter().map(|e| e.path.as_str()).collect();
    // The unknown field stops decoding, so the MTU is not looked at.
    assert_eq!(paths, ["interface.adresses"], "{error}");
    assert!(error.errors[0].message.contains("unknown field"), "{error}");
}

#[test]
fn a_bad_network_attachment_definition_is_caught_by_the_same_check() {
    let nad = serde_json::json!({
        "apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": "bad"},
        "spec": {"config": r#"{"cniVersion": "1.0.0", "name": "bad", "type": "../../bin/sh"}"#}
    });
    let error = netclaim_api::CniNetworkList::from_network_attachment_definition(&nad).unwrap_err();
    let paths: Vec<&str> = error.errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["spec.config: plugins[0].type"], "{error}");
    assert!(
        error.errors[0].message.contains("path separator"),
        "{error}"
    );
}

// ---- The GPU pairing example against devices built from the sysfs fixtures ------------

/// The value of the fully qualified attribute `name` of `device` (of driver `driver`), as
/// the scheduler's `matchAttribute` reads it: a short name belongs to the driver's domain.
fn qualified_attribute(
    driver: &str,
    device: &Device,
    name: &str,
) -> Option<k8s_openapi::api::resource::v1::DeviceAttribute> {
    let attributes = device.attributes.as_ref()?;
    if let Some(value) = attributes.get(name) {
        return Some(value.clone());
    }
    let (domain, id) = name.split_once('/')?;
    (domain == driver).then(|| attributes.get(id).cloned())?
}

/// Devices netclaim publishes for the fixture NICs: `ens1f0` (ConnectX PF with RDMA, root
/// pci0000:00, NUMA 0), its VF `ens1f0v0`, `ens2` (Intel E810, root pci0000:40, NUMA 1).
fn fixture_nics() -> Vec<Device> {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/sysfs");
    let nics = ["ens1f0", "ens1f0v0", "ens2"]
        .iter()
        .enumerate()
        .map(|(i, name)| NicRecord {
            link: LinkRecord {
                index: u32::try_from(i).unwrap() + 2,
                name: (*name).to_owned(),
                mtu: 1500,
                up: true,
                oper_state: "up".into(),
                carrier: Some(true),
                ..LinkRecord::default()
            },
            sysfs: sysfs::read_nic(&fixtures, name),
        })
        .collect();
    let config = DiscoveryConfig {
        sysfs_root: fixtures,
        ..DiscoveryConfig::default()
    };
    build_report(&config, nics, Vec::new())
        .devices
        .into_iter()
        .map(std::sync::Arc::unwrap_or_clone)
        .collect()
}

/// A GPU of another driver, published with the standard topology attributes.
fn gpu(name: &str, pcie_root: &str, numa_node: i64) -> Device {
    serde_json::from_value(serde_json::json!({
        "name": name,
        "attributes": {
            "resource.kubernetes.io/pcieRoot": { "string": pcie_root },
            "resource.kubernetes.io/numaNode": { "int": numa_node },
        }
    }))
    .unwrap()
}

/// The (GPU, NIC) pairs a scheduler may allocate to `template`'s `gpu` and `nic` requests:
/// the NIC passes the `netclaim-nic` class and the request's selectors (evaluated like the
/// scheduler's CEL, on the devices netclaim publishes), and every `matchAttribute`
/// constraint finds the attribute on both with one value.
fn allowed_pairs(template: &ResourceClaimTemplate, gpus: &[Device]) -> Vec<(String, String)> {
    const GPU_DRIVER: &str = "gpu.example.com";
    let class_path = examples_dir().join("install/deviceclass.yaml");
    let class: DeviceClass = documents(&class_path)
        .into_iter()
        .find(|d| d["kind"] == "DeviceClass" && d["metadata"]["name"] == "netclaim-nic")
        .map(|d| serde_json::from_value(d).unwrap())
        .unwrap();
    let devices = template
        .spec
        .clone()
        .unwrap()
        .spec
        .unwrap()
        .devices
        .unwrap();
    let request = |name: &str| -> DeviceRequest {
        devices
            .requests
            .iter()
            .flatten()
            .find(|r| r.name == name)
            .cloned()
            .unwrap()
    };
    let nic_request = request("nic").exactly.unwrap();
    assert_eq!(nic_request.device_class_name, "netclaim-nic");
    assert_eq!(
        request("gpu").exactly.unwrap().device_class_name,
        GPU_DRIVER
    );
    let expressions: Vec<String> = class
        .spec
        .unwrap()
        .selectors
        .into_iter()
        .flatten()
        .chain(nic_request.selectors.into_iter().flatten())
        .map(|s| s.cel.unwrap().expression)
        .collect();
    let filters: Vec<DeviceFilter> = expressions
        .iter()
        .map(|e| DeviceFilter::new(e).unwrap())
        .collect();
    let constraints = devices.constraints.unwrap();
    let mut pairs = Vec::new();
    for nic in fixture_nics() {
        if !filters
            .iter()
            .all(|f| f.check(netclaim_api::DRIVER_NAME, &nic).is_ok())
        {
            continue;
        }
        for gpu in gpus {
            let matched = constraints.iter().all(|constraint| {
                let requests = constraint.requests.clone().unwrap();
                assert_eq!(requests, ["gpu", "nic"]);
                let name = constraint.match_attribute.as_deref().unwrap();
                let nic_value = qualified_attribute(netclaim_api::DRIVER_NAME, &nic, name);
                let gpu_value = qualified_attribute(GPU_DRIVER, gpu, name);
                nic_value.is_some() && nic_value == gpu_value
            });
            if matched {
                pairs.push((gpu.name.clone(), nic.name.clone()));
            }
        }
    }
    pairs
}

#[test]
fn the_gpu_pairing_example_pairs_nics_and_gpus_on_one_root_or_numa_node() {
    let path = examples_dir().join("claims/nic-with-gpu.yaml");
    let templates: BTreeMap<String, ResourceClaimTemplate> = documents(&path)
        .into_iter()
        .filter(|d| d["kind"] == "ResourceClaimTemplate")
        .map(|d| serde_json::from_value::<ResourceClaimTemplate>(d).unwrap())
        .map(|t| (t.metadata.name.clone().unwrap(), t))
        .collect();
    let gpus = [gpu("gpu-0", "pci0000:00", 0), gpu("gpu-1", "pci0000:40", 1)];

    // Same PCIe root, RDMA NICs only: the ConnectX PF with the GPU on its root.
    let by_root = allowed_pairs(&templates["gpu-with-nic-on-same-pcie-root"], &gpus);
    assert_eq!(by_root, [("gpu-0".into(), "pci-0000-03-00-0".into())]);

    // Same NUMA node: each GPU gets the NICs of its node (the VF shares the PF's).
    let by_numa = allowed_pairs(&templates["gpu-with-nic-on-same-numa-node"], &gpus);
    let by_numa: BTreeSet<(String, String)> = by_numa.into_iter().collect();
    let expected: BTreeSet<(String, String)> = [
        ("gpu-0", "pci-0000-03-00-0"),
        ("gpu-0", "pci-0000-03-00-2"),
        ("gpu-1", "pci-0000-41-00-0"),
    ]
    .into_iter()
    .map(|(g, n)| (g.to_owned(), n.to_owned()))
    .collect();
    assert_eq!(by_numa, expected);

    // A GPU on a root no NIC shares pairs with nothing (the constraint is not vacuous).
    let lonely = [gpu("gpu-9", "pci0000:80", 7)];
    assert!(allowed_pairs(&templates["gpu-with-nic-on-same-pcie-root"], &lonely).is_empty());
    assert!(allowed_pairs(&templates["gpu-with-nic-on-same-numa-node"], &lonely).is_empty());
}

/// The blue-net example: the network's config (a CNI network granting `interfaceName`)
/// merged under the claim template's, as prepare merges them, gives the pod the network
/// with the claim's interface name; a static address in the claim would be refused.
#[test]
fn the_pod_network_example_merges_under_the_tenant_rules() {
    let mut seen = Seen::default();
    let path = examples_dir().join("podnetwork/blue-net.yaml");
    for (index, doc) in documents(&path).into_iter().enumerate() {
        check_document(doc, &format!("{}#{index}", path.display()), &mut seen);
    }
    let network = netclaim_api::SourcedConfig {
        source: netclaim_api::ConfigSource::Network,
        requests: vec![],
        index: 0,
        config: seen.networks["blue-net"].clone(),
    };
    let (_, request, class, claim_configs) = seen
        .requests
        .iter()
        .find(|(_, request, _, _)| request == "blue")
        .unwrap();
    assert_eq!(class, "blue-net");
    let mut all = claim_configs.clone();
    all.push(network.clone());
    let merged = netclaim_api::merge_for_request(&all, request).unwrap();
    assert_eq!(merged.interface.name.as_deref(), Some("blue0"));
    assert_eq!(merged.cni.unwrap().name.as_deref(), Some("blue-net"));
    let mut bad = claim_configs.clone();
    bad[0].config.interface.addresses = vec!["192.0.2.10/24".parse().unwrap()];
    bad.push(network);
    let error = netclaim_api::merge_for_request(&bad, request).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("interface.addresses: the DeviceClass defines the CNI network"),
        "{error}"
    );
}
