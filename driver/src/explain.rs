//! `netclaim explain`: for each request of a claim, which of this node's devices its
//! selectors match and, for the others, why not (the operand of the selector that was
//! false or failed, with the attribute values it read); the config prepare would merge;
//! and what attach would do on each matching device (move NIC X into the pod as Y with
//! these addresses, or run CNI list Z with X as its master).
//!
//! Inputs:
//! - The claim: every ResourceClaim and ResourceClaimTemplate in the files given, or the
//!   one named by `--claim`; one that is not in the files is read from the API (with
//!   `--kubeconfig`, `KUBECONFIG` or the in-cluster account), and then so are the
//!   DeviceClasses and NetworkAttachmentDefinitions the files lack.
//! - The devices: a discovery pass on this node with the `devices` command's flags
//!   (`--filter`, `--shared-filter`, `--include-virtual`, ...), or the ResourceSlices of
//!   `--devices-file` (what `netclaim devices -o yaml` or `kubectl get resourceslices -o
//!   yaml` prints), so it works offline.
//!
//! The answer is `Ok(false)` (exit status 1) when a request has fewer matching devices than
//! it asks for, or prepare would refuse its config.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use k8s_openapi::api::resource::v1::{
    Device, DeviceClaim, DeviceClass, ResourceClaim, ResourceClaimTemplate, ResourceSlice,
};
use netclaim_api::{ConfigSource, NetworkConfig, PluginAllowlist, SourcedConfig};
use serde_json::Value;

use crate::claim_plan::{
    NetworkOrigin, NetworkPlan, RequestPlan, RequestSpec, Site, claim_config_entries,
    class_config_entries, parse_configs, plan_request, requests_of,
};
use crate::cli::DiscoveryArgs;
use crate::discovery::names;
use crate::manifests::Manifest;
use crate::selectors::Selector;

/// Flags of `netclaim explain`.
#[derive(Clone, Debug, Args)]
pub struct ExplainArgs {
    /// Manifest files: the claims and claim templates to explain, and the DeviceClasses
    /// and NetworkAttachmentDefinitions they use.
    pub files: Vec<PathBuf>,

    /// Explain only this claim (`NAME` or `NAMESPACE/NAME`); read from the API when it is
    /// not in the files.
    #[arg(long)]
    pub claim: Option<String>,

    /// Kubeconfig for reading the claim, its classes and NADs from the API (default:
    /// `KUBECONFIG`, then the in-cluster service account). Only used when `--claim` is not
    /// in the files.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,

    /// Take the devices from these ResourceSlices (YAML or JSON, as `netclaim devices -o
    /// yaml` prints them) instead of discovering this node's.
    #[arg(long)]
    pub devices_file: Option<PathBuf>,

    /// PodNetworks to place the discovered devices in (as `netclaim devices
    /// --pod-networks`), so selectors on `podNetwork` match as they will on the node.
    #[arg(long)]
    pub pod_networks: Option<PathBuf>,

    /// The namespace of claims that have none.
    #[arg(long, short = 'n', default_value = "default")]
    pub namespace: String,

    /// The CNI plugin types the node allows (as `netclaim run --cni-allowed-plugins`).
    #[arg(
        long = "cni-allowed-plugins",
        env = "NETCLAIM_CNI_ALLOWED_PLUGINS",
        value_delimiter = ',',
        default_values = netclaim_api::policy::DEFAULT_ALLOWED_PLUGINS,
    )]
    pub cni_allowed_plugins: Vec<String>,

    /// Discovery flags (as for `netclaim devices`).
    #[command(flatten)]
    pub discovery: DiscoveryArgs,
}

/// One device a request may get: its driver and the device as published.
#[derive(Clone, Debug)]
pub struct NodeDevice {
    /// The driver that publishes it.
    pub driver: String,
    /// The device.
    pub device: Device,
}

/// A claim to explain.
struct Subject {
    label: String,
    origin: String,
    namespace: String,
    devices: DeviceClaim,
    prefix: &'static str,
    allocated: Vec<String>,
}

/// `netclaim explain` (see the [module docs](self)); `Ok(false)` when a request cannot be
/// satisfied on this node or prepare would refuse it.
///
/// # Errors
/// Unreadable files, a claim that is neither in the files nor readable from the API, a
/// failed discovery pass, or writing the output.
pub async fn run(args: &ExplainArgs, out: &mut impl Write) -> Result<bool> {
    let allowed = PluginAllowlist::new(&args.cni_allowed_plugins)
        .map_err(|why| anyhow::anyhow!("--cni-allowed-plugins: {why}"))?;
    let (manifests, problems) = crate::manifests::load(&args.files);
    if let Some(problem) = problems.first() {
        anyhow::bail!("{problem}");
    }
    let driver = args.discovery.driver_name.clone();
    let mut classes: BTreeMap<String, DeviceClass> = BTreeMap::new();
    let mut nads: BTreeMap<(String, String), Value> = BTreeMap::new();
    let mut subjects = Vec::new();
    for manifest in &manifests {
        if manifest.is_resource("DeviceClass") {
            classes.insert(
                manifest.name().to_owned(),
                manifest.typed().map_err(anyhow_of)?,
            );
        } else if manifest.is_network_attachment_definition() {
            let ns = manifest.namespace().unwrap_or(&args.namespace).to_owned();
            nads.insert((ns, manifest.name().to_owned()), manifest.value.clone());
        } else if let Some(subject) = subject_of(manifest, &args.namespace)? {
            subjects.push(subject);
        }
    }
    if let Some(wanted) = &args.claim {
        let (ns, name) = match wanted.split_once('/') {
            Some((ns, name)) => (ns.to_owned(), name.to_owned()),
            None => (args.namespace.clone(), wanted.clone()),
        };
        subjects.retain(|s| s.label.ends_with(&format!(" {ns}/{name}")));
        if subjects.is_empty() {
            let client = api_client(args.kubeconfig.as_deref()).await?;
            subjects.push(claim_from_api(&client, &ns, &name).await?);
            fetch_missing(&client, &subjects, &driver, &mut classes, &mut nads).await?;
        }
    }
    if subjects.is_empty() {
        anyhow::bail!(
            "no ResourceClaim or ResourceClaimTemplate to explain: give a file holding one, or \
             --claim NAMESPACE/NAME"
        );
    }
    let devices = node_devices(args).await?;
    let mut all_ok = true;
    for subject in &subjects {
        all_ok &= explain_claim(subject, &classes, &nads, &devices, &driver, &allowed, out)?;
    }
    out.flush()?;
    Ok(all_ok)
}

fn anyhow_of(problem: crate::manifests::Problem) -> anyhow::Error {
    anyhow::anyhow!("{problem}")
}

fn subject_of(manifest: &Manifest, namespace: &str) -> Result<Option<Subject>> {
    let ns = manifest.namespace().unwrap_or(namespace).to_owned();
    let label = format!("{} {ns}/{}", manifest.kind(), manifest.name());
    let origin = manifest.file_label();
    if manifest.is_resource("ResourceClaim") {
        let claim: ResourceClaim = manifest.typed().map_err(anyhow_of)?;
        Ok(Some(Subject {
            allocated: allocated_devices(&claim),
            devices: claim.spec.and_then(|s| s.devices).unwrap_or_default(),
            label,
            origin,
            namespace: ns,
            prefix: "spec.devices",
        }))
    } else if manifest.is_resource("ResourceClaimTemplate") {
        let template: ResourceClaimTemplate = manifest.typed().map_err(anyhow_of)?;
        Ok(Some(Subject {
            devices: template
                .spec
                .and_then(|s| s.spec)
                .and_then(|s| s.devices)
                .unwrap_or_default(),
            label,
            origin,
            namespace: ns,
            prefix: "spec.spec.devices",
            allocated: Vec::new(),
        }))
    } else {
        Ok(None)
    }
}

fn allocated_devices(claim: &ResourceClaim) -> Vec<String> {
    claim
        .status
        .as_ref()
        .and_then(|s| s.allocation.as_ref())
        .and_then(|a| a.devices.as_ref())
        .map(|d| {
            d.results
                .iter()
                .flatten()
                .map(|r| {
                    format!(
                        "request {}: device {} (driver {}, pool {})",
                        r.request, r.device, r.driver, r.pool
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn api_client(kubeconfig: Option<&std::path::Path>) -> Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                .await
                .with_context(|| format!("kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .context("no kubeconfig (--kubeconfig, KUBECONFIG) and not in a cluster")?,
    };
    kube::Client::try_from(config).context("building the API client")
}

async fn claim_from_api(client: &kube::Client, ns: &str, name: &str) -> Result<Subject> {
    let api: kube::Api<ResourceClaim> = kube::Api::namespaced(client.clone(), ns);
    let claim = api
        .get(name)
        .await
        .with_context(|| format!("reading ResourceClaim {ns}/{name}"))?;
    Ok(Subject {
        label: format!("ResourceClaim {ns}/{name}"),
        origin: "the API".to_owned(),
        namespace: ns.to_owned(),
        allocated: allocated_devices(&claim),
        devices: claim.spec.and_then(|s| s.devices).unwrap_or_default(),
        prefix: "spec.devices",
    })
}

/// Reads the classes, and the NADs their configs and the claims' name, that the files
/// did not give.
async fn fetch_missing(
    client: &kube::Client,
    subjects: &[Subject],
    driver: &str,
    classes: &mut BTreeMap<String, DeviceClass>,
    nads: &mut BTreeMap<(String, String), Value>,
) -> Result<()> {
    let class_api: kube::Api<DeviceClass> = kube::Api::all(client.clone());
    for subject in subjects {
        for request in requests_of(&subject.devices, subject.prefix) {
            if !classes.contains_key(&request.class)
                && let Some(class) = class_api
                    .get_opt(&request.class)
                    .await
                    .with_context(|| format!("reading DeviceClass {}", request.class))?
            {
                classes.insert(request.class.clone(), class);
            }
        }
        let mut references = Vec::new();
        let mut params: Vec<Value> = claim_config_entries(&subject.devices, driver)
            .into_iter()
            .map(|(_, _, v)| v.clone())
            .collect();
        for class in classes.values() {
            params.extend(
                class_config_entries(class, driver)
                    .into_iter()
                    .map(|(_, _, v)| v.clone()),
            );
        }
        for value in &params {
            if let Some(reference) = value
                .get("cni")
                .and_then(|c| c.get("networkAttachmentDefinition"))
                && let Some(name) = reference.get("name").and_then(Value::as_str)
            {
                let ns = reference
                    .get("namespace")
                    .and_then(Value::as_str)
                    .unwrap_or(&subject.namespace);
                references.push((ns.to_owned(), name.to_owned()));
            }
        }
        for (ns, name) in references {
            if nads.contains_key(&(ns.clone(), name.clone())) {
                continue;
            }
            use crate::network_attachments::NetworkAttachments;
            if let Ok(object) = client.get(&ns, &name).await {
                nads.insert((ns, name), object);
            }
        }
    }
    Ok(())
}

/// The devices to match: from `--devices-file`, else one discovery pass here.
async fn node_devices(args: &ExplainArgs) -> Result<Vec<NodeDevice>> {
    let Some(path) = &args.devices_file else {
        let config = crate::cli::discovery_config_with_networks(
            &args.discovery,
            args.pod_networks.as_deref(),
        )?;
        let discovery = crate::discovery::Discovery::open(config)?;
        let report = discovery.report().await?;
        return Ok(report
            .devices
            .into_iter()
            .map(|device| NodeDevice {
                driver: args.discovery.driver_name.clone(),
                device: Arc::unwrap_or_clone(device),
            })
            .collect());
    };
    // Devices from a file get the node's --filter as discovery's would.
    let filter = args.discovery.discovery_config()?.filter;
    let (manifests, problems) = crate::manifests::load(std::slice::from_ref(path));
    if let Some(problem) = problems.first() {
        anyhow::bail!("--devices-file: {problem}");
    }
    let mut devices = Vec::new();
    for manifest in manifests.iter().filter(|m| m.is_resource("ResourceSlice")) {
        let slice: ResourceSlice = manifest.typed().map_err(anyhow_of)?;
        for device in slice.spec.devices.into_iter().flatten() {
            if let Some(filter) = &filter
                && filter.check(&slice.spec.driver, &device).is_err()
            {
                continue;
            }
            devices.push(NodeDevice {
                driver: slice.spec.driver.clone(),
                device,
            });
        }
    }
    Ok(devices)
}

#[allow(clippy::too_many_arguments)]
fn explain_claim(
    subject: &Subject,
    classes: &BTreeMap<String, DeviceClass>,
    nads: &BTreeMap<(String, String), Value>,
    devices: &[NodeDevice],
    driver: &str,
    allowed: &PluginAllowlist,
    out: &mut impl Write,
) -> Result<bool> {
    writeln!(out, "{} ({})", subject.label, subject.origin)?;
    for allocated in &subject.allocated {
        writeln!(out, "  allocated: {allocated}")?;
    }
    let requests = requests_of(&subject.devices, subject.prefix);
    if requests.is_empty() {
        writeln!(out, "  no requests")?;
        return Ok(true);
    }
    let claim_configs = match parse_configs(
        ConfigSource::Claim,
        &claim_config_entries(&subject.devices, driver),
    ) {
        Ok(configs) => configs,
        Err(findings) => {
            for f in findings {
                writeln!(out, "  config problem: {}", finding_text(&f, subject))?;
            }
            return Ok(false);
        }
    };
    for (i, constraint) in subject.devices.constraints.iter().flatten().enumerate() {
        if let Some(attribute) = &constraint.match_attribute {
            writeln!(
                out,
                "  note: {}.constraints[{i}] (matchAttribute {attribute}) is the scheduler's to check across the requests' devices; not evaluated here",
                subject.prefix
            )?;
        }
    }
    let mut ok = true;
    for request in &requests {
        ok &= explain_request(
            subject,
            request,
            classes,
            nads,
            devices,
            driver,
            &claim_configs,
            allowed,
            out,
        )?;
    }
    writeln!(out)?;
    Ok(ok)
}

fn finding_text(finding: &crate::claim_plan::Finding, subject: &Subject) -> String {
    let site = match &finding.site {
        Site::ClaimConfig(i) => format!("{}.config[{i}].opaque.parameters", subject.prefix),
        Site::ClassConfig(i) => format!("DeviceClass spec.config[{i}].opaque.parameters"),
        Site::PodNetworkConfig(i) => format!("PodNetwork config[{i}]"),
        Site::Merged => "merged config".to_owned(),
        Site::Nad { namespace, name } => format!("NetworkAttachmentDefinition {namespace}/{name}"),
    };
    if finding.path.is_empty() {
        format!("{site}: {}", finding.message)
    } else {
        format!("{site}: {}: {}", finding.path, finding.message)
    }
}

#[allow(clippy::too_many_arguments)]
fn explain_request(
    subject: &Subject,
    request: &RequestSpec,
    classes: &BTreeMap<String, DeviceClass>,
    nads: &BTreeMap<(String, String), Value>,
    devices: &[NodeDevice],
    driver: &str,
    claim_configs: &[SourcedConfig],
    allowed: &PluginAllowlist,
    out: &mut impl Write,
) -> Result<bool> {
    writeln!(
        out,
        "  request {} ({}): DeviceClass {}, {} device(s)",
        request.name, request.path, request.class, request.count
    )?;
    let Some(class) = classes.get(&request.class) else {
        writeln!(
            out,
            "    DeviceClass {} not found: give its file (or --claim with API access); \
             without the class no device can be allocated",
            request.class
        )?;
        return Ok(false);
    };
    // Selectors: the class's, then the request's; all must match.
    let mut selectors = Vec::new();
    for (i, s) in class
        .spec
        .iter()
        .flat_map(|spec| spec.selectors.iter().flatten())
        .enumerate()
    {
        if let Some(cel) = &s.cel {
            selectors.push((
                format!("DeviceClass {} selector[{i}]", request.class),
                cel.expression.clone(),
            ));
        }
    }
    for (i, (_, expression)) in request.selectors.iter().enumerate() {
        selectors.push((format!("request selector[{i}]"), expression.clone()));
    }
    let mut compiled = Vec::new();
    for (label, expression) in &selectors {
        match Selector::compile(expression) {
            Ok(selector) => compiled.push((label.clone(), selector)),
            Err(why) => {
                writeln!(out, "    {label}: {why}")?;
                return Ok(false);
            }
        }
    }
    let mut matching = Vec::new();
    let mut reasons = Vec::new();
    for node_device in devices {
        let mut why = Vec::new();
        for (label, selector) in &compiled {
            if let Err(mismatch) = selector.explain(&node_device.driver, &node_device.device) {
                for operand in mismatch.operands {
                    why.push(format!("{label}: {operand}"));
                }
                // The first selector that fails is enough: the scheduler stops there too.
                break;
            }
        }
        if why.is_empty() {
            matching.push(node_device);
        } else {
            reasons.push((node_device, why));
        }
    }
    let names: Vec<String> = matching.iter().map(|d| device_label(&d.device)).collect();
    writeln!(
        out,
        "    matching devices ({}): {}",
        matching.len(),
        if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(", ")
        }
    )?;
    if !reasons.is_empty() {
        writeln!(out, "    not matching:")?;
        for (node_device, why) in &reasons {
            writeln!(out, "      {}:", device_label(&node_device.device))?;
            for line in why {
                writeln!(out, "        {line}")?;
            }
        }
    }
    let wanted = request.count.parse::<usize>().unwrap_or(1);
    let mut ok = matching.len() >= wanted;
    if !ok {
        writeln!(
            out,
            "    => the request asks for {} device(s) and {} match on this node",
            request.count,
            matching.len()
        )?;
    }
    // The configs prepare would merge.
    let class_configs =
        match parse_configs(ConfigSource::Class, &class_config_entries(class, driver)) {
            Ok(configs) => configs,
            Err(findings) => {
                for f in findings {
                    writeln!(
                        out,
                        "    class config problem: {}",
                        finding_text(&f, subject)
                    )?;
                }
                return Ok(false);
            }
        };
    let lookup = |ns: &str, name: &str| nads.get(&(ns.to_owned(), name.to_owned())).cloned();
    let plan = match plan_request(
        &class_configs,
        claim_configs,
        &request.name,
        &subject.namespace,
        &lookup,
        allowed,
    ) {
        Ok(plan) => plan,
        Err(findings) => {
            writeln!(out, "    prepare would refuse the config:")?;
            for f in findings {
                writeln!(out, "      {}", finding_text(&f, subject))?;
            }
            return Ok(false);
        }
    };
    writeln!(out, "    config prepare would use:")?;
    for line in serde_yaml::to_string(&plan.merged)?.lines() {
        writeln!(out, "      {line}")?;
    }
    for note in &plan.notes {
        writeln!(out, "    note: {note}")?;
    }
    for node_device in &matching {
        match attach_text(&plan, &node_device.device) {
            Ok(text) => writeln!(
                out,
                "    attach on {}: {text}",
                device_label(&node_device.device)
            )?,
            Err(why) => {
                ok = false;
                writeln!(
                    out,
                    "    attach on {}: prepare would refuse: {why}",
                    device_label(&node_device.device)
                )?;
            }
        }
    }
    Ok(ok)
}

fn attribute(device: &Device, name: &str) -> Option<String> {
    let a = device.attributes.as_ref()?.get(name)?;
    a.string
        .clone()
        .or_else(|| a.int.map(|i| i.to_string()))
        .or_else(|| a.bool.map(|b| b.to_string()))
        .or_else(|| a.version.clone())
}

/// `name (ifName)`.
fn device_label(device: &Device) -> String {
    match attribute(device, names::IF_NAME) {
        Some(if_name) if if_name != device.name => format!("{} ({if_name})", device.name),
        _ => device.name.clone(),
    }
}

/// What attach would do with `device` under `plan`, or why prepare would refuse it.
fn attach_text(plan: &RequestPlan, device: &Device) -> Result<String, String> {
    let host_if = attribute(device, names::IF_NAME).unwrap_or_else(|| device.name.clone());
    let shared = crate::discovery::shared_children(device);
    let config: &NetworkConfig = &plan.merged;
    let pod_if = config
        .interface
        .name
        .clone()
        .unwrap_or_else(|| host_if.clone());
    let Some(network) = &plan.network else {
        if let Some(children) = shared {
            return Err(format!(
                "host NIC {host_if} is a shared parent (up to {children} CNI children); a \
                 config without `cni` would move it into this pod and cut the others off"
            ));
        }
        let mut text = format!("move host NIC {host_if} into the pod");
        if pod_if == host_if {
            text.push_str(&format!(" keeping the name {pod_if}"));
        } else {
            text.push_str(&format!(" renamed {pod_if}"));
        }
        let i = &config.interface;
        if !i.addresses.is_empty() {
            let addresses: Vec<String> = i.addresses.iter().map(ToString::to_string).collect();
            text.push_str(&format!(", addresses {}", addresses.join(" ")));
        }
        if let Some(mtu) = i.mtu {
            text.push_str(&format!(", mtu {mtu}"));
        }
        if let Some(mac) = &i.hardware_address {
            text.push_str(&format!(", MAC {mac}"));
        }
        for (what, n) in [
            ("routes", i.routes.len()),
            ("rules", i.rules.len()),
            ("neighbors", i.neighbors.len()),
            ("ethtool features", i.ethtool_features.len()),
        ] {
            if n > 0 {
                text.push_str(&format!(", {n} {what}"));
            }
        }
        if i.sysctls.is_some() {
            text.push_str(", sysctls");
        }
        return Ok(text);
    };
    let NetworkPlan { origin, list } = network;
    let from = match origin {
        NetworkOrigin::Inline(Site::ClassConfig(i)) => format!("the DeviceClass's config[{i}]"),
        NetworkOrigin::Inline(Site::ClaimConfig(i)) => format!("the claim's config[{i}]"),
        NetworkOrigin::Inline(_) => "the merged config".to_owned(),
        NetworkOrigin::Nad { namespace, name } => {
            format!("NetworkAttachmentDefinition {namespace}/{name}")
        }
    };
    let Some(list) = list else {
        return Ok(format!(
            "run the CNI network of {from} (not read here) with {host_if} as its device; pod \
             interface {pod_if}"
        ));
    };
    let device_field = plan
        .merged
        .cni
        .as_ref()
        .and_then(|c| c.device_field.clone());
    let substituted = crate::cni::substitute_device(
        list,
        device_field.as_deref(),
        &crate::cni::DeviceRef {
            ifname: host_if.clone(),
            pci_address: attribute(device, names::PCI_ADDRESS),
        },
    )
    .map_err(|error| error.to_string())?;
    let first = substituted
        .plugins
        .first()
        .and_then(netclaim_api::CniPlugin::plugin_type)
        .unwrap_or_default()
        .to_owned();
    if let Some(children) = shared
        && first == "host-device"
    {
        return Err(format!(
            "host NIC {host_if} is a shared parent (up to {children} CNI children), and \
             host-device would move it into this pod"
        ));
    }
    let plugins: Vec<String> = substituted
        .plugins
        .iter()
        .enumerate()
        .map(|(index, plugin)| {
            let mut parts = Vec::new();
            if index == 0 {
                for field in
                    netclaim_api::cni::device_fields(plugin.plugin_type(), device_field.as_deref())
                {
                    if let Some(Value::String(v)) = plugin.0.get(&field) {
                        parts.push(format!("{field}={v}"));
                    }
                }
            }
            if let Some(ipam) = plugin
                .0
                .get("ipam")
                .and_then(|i| i.get("type"))
                .and_then(Value::as_str)
            {
                parts.push(format!("ipam {ipam}"));
            }
            let name = plugin.plugin_type().unwrap_or("?");
            if parts.is_empty() {
                name.to_owned()
            } else {
                format!("{name} ({})", parts.join(", "))
            }
        })
        .collect();
    Ok(format!(
        "run CNI list {} (cniVersion {}) from {from}: {}; pod interface {pod_if}",
        substituted.name,
        substituted.cni_version,
        plugins.join(" -> ")
    ))
}
