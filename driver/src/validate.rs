//! `netclaim validate FILE...`: checks DeviceClasses, ResourceClaims,
//! ResourceClaimTemplates and NetworkAttachmentDefinitions offline, the way the driver
//! will meet them at prepare, before any pod fails.
//!
//! - Objects parse as their Kubernetes types (the first field that does not fit is named).
//! - Every CEL selector (class and request) compiles in the DRA environment
//!   ([`crate::selectors`]).
//! - Every `netclaim.dev` opaque config parses strictly, with field paths
//!   ([`netclaim_api::parse_config`]).
//! - Every request's class-plus-claim configs merge as prepare merges them, the class's
//!   grants hold, and in CNI mode the network that would run passes prepare's checks
//!   ([`crate::claim_plan`]); a class with a network of its own is also checked alone.
//! - A NetworkAttachmentDefinition's `spec.config` parses like prepare parses it and runs
//!   only allowed plugins.
//! - A DaemonSet's `NETCLAIM_FILTER` and `NETCLAIM_SHARED_FILTER` values compile and its
//!   `NETCLAIM_CNI_ALLOWED_PLUGINS` names plugin files, as `netclaim run` checks them.
//!
//! Classes and NADs are looked up among all the files given; a request whose class (or a
//! network whose NAD) is not among them is a note, not an error. Objects of other kinds
//! are skipped. Each problem is one line: `FILE: KIND NAMESPACE/NAME: FIELD.PATH: message`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use k8s_openapi::api::resource::v1::{
    DeviceClaim, DeviceClass, ResourceClaim, ResourceClaimTemplate,
};
use netclaim_api::{ConfigSource, PluginAllowlist, SourcedConfig};
use serde_json::Value;

use crate::claim_plan::{
    Finding, RequestSpec, Site, claim_config_entries, class_config_entries, parse_configs,
    plan_request, requests_of,
};
use crate::manifests::{Manifest, Problem};
use crate::selectors::Selector;

/// Flags of `netclaim validate`.
#[derive(Clone, Debug, Args)]
pub struct ValidateArgs {
    /// Manifest files (multi-document YAML or JSON).
    #[arg(required = true, num_args = 1..)]
    pub files: Vec<PathBuf>,

    /// The CNI plugin types the node allows (as `netclaim run --cni-allowed-plugins`).
    #[arg(
        long = "cni-allowed-plugins",
        env = "NETCLAIM_CNI_ALLOWED_PLUGINS",
        value_delimiter = ',',
        default_values = netclaim_api::policy::DEFAULT_ALLOWED_PLUGINS,
    )]
    pub cni_allowed_plugins: Vec<String>,

    /// The namespace of objects that have none (what `kubectl apply` would use).
    #[arg(long, short = 'n', default_value = "default")]
    pub namespace: String,

    /// The DRA driver name whose opaque configs are netclaim's.
    #[arg(long, env = "NETCLAIM_DRIVER_NAME", default_value = netclaim_api::DRIVER_NAME)]
    pub driver_name: String,
}

/// What validation found.
#[derive(Debug, Default)]
pub struct Report {
    /// The problems, one per line, in file order.
    pub problems: Vec<Problem>,
    /// What could not be checked and why.
    pub notes: Vec<String>,
    /// How many objects were checked.
    pub checked: usize,
    /// How many objects of other kinds were skipped.
    pub skipped: usize,
}

/// `netclaim validate`: prints the problems and notes; `Ok(false)` when there were
/// problems.
///
/// # Errors
/// An invalid `--cni-allowed-plugins`, or writing the output.
pub fn run(args: &ValidateArgs, out: &mut impl Write) -> Result<bool> {
    let allowed = PluginAllowlist::new(&args.cni_allowed_plugins)
        .map_err(|why| anyhow::anyhow!("--cni-allowed-plugins: {why}"))?;
    let (manifests, mut problems) = crate::manifests::load(&args.files);
    let mut report = validate(&manifests, &args.namespace, &args.driver_name, &allowed);
    problems.append(&mut report.problems);
    for problem in &problems {
        writeln!(out, "{problem}")?;
    }
    for note in &report.notes {
        writeln!(out, "note: {note}")?;
    }
    let skipped = if report.skipped > 0 {
        format!(" ({} objects of other kinds skipped)", report.skipped)
    } else {
        String::new()
    };
    if problems.is_empty() {
        writeln!(
            out,
            "ok: {} objects in {} files{skipped}",
            report.checked,
            args.files.len()
        )?;
    } else {
        writeln!(
            out,
            "{} problems in {} objects checked{skipped}",
            problems.len(),
            report.checked
        )?;
    }
    out.flush()?;
    Ok(problems.is_empty())
}

/// A DeviceClass found among the manifests, with its parsed netclaim configs (`None` when
/// they do not parse: its problems are reported once, on the class).
pub struct KnownClass<'a> {
    /// Where it was found.
    pub manifest: &'a Manifest,
    /// The class.
    pub class: DeviceClass,
    /// Its `netclaim.dev` configs.
    pub configs: Option<Vec<SourcedConfig>>,
}

/// The DeviceClasses and NetworkAttachmentDefinitions among `manifests`, by name and by
/// `(namespace, name)`.
pub struct Catalog<'a> {
    /// DeviceClasses by name.
    pub classes: BTreeMap<String, KnownClass<'a>>,
    /// NADs by (namespace, name).
    pub nads: BTreeMap<(String, String), &'a Manifest>,
}

impl<'a> Catalog<'a> {
    /// Indexes `manifests` (objects without a namespace are in `namespace`).
    pub fn of(manifests: &'a [Manifest], namespace: &str, driver: &str) -> Self {
        let mut classes = BTreeMap::new();
        let mut nads = BTreeMap::new();
        for manifest in manifests {
            if manifest.is_resource("DeviceClass") {
                if let Ok(class) = manifest.typed::<DeviceClass>() {
                    let entries = class_config_entries(&class, driver);
                    let configs = parse_configs(ConfigSource::Class, &entries).ok();
                    classes.insert(
                        manifest.name().to_owned(),
                        KnownClass {
                            manifest,
                            configs,
                            class,
                        },
                    );
                }
            } else if manifest.is_network_attachment_definition() {
                let ns = manifest.namespace().unwrap_or(namespace).to_owned();
                nads.insert((ns, manifest.name().to_owned()), manifest);
            }
        }
        Self { classes, nads }
    }

    /// A NAD's object, when given.
    pub fn nad(&self, namespace: &str, name: &str) -> Option<Value> {
        self.nads
            .get(&(namespace.to_owned(), name.to_owned()))
            .map(|m| m.value.clone())
    }
}

/// Checks `manifests` (see the [module docs](self)).
pub fn validate(
    manifests: &[Manifest],
    namespace: &str,
    driver: &str,
    allowed: &PluginAllowlist,
) -> Report {
    let catalog = Catalog::of(manifests, namespace, driver);
    let mut report = Report::default();
    for manifest in manifests {
        let before = report.problems.len();
        if manifest.is_resource("DeviceClass") {
            check_class(manifest, &catalog, namespace, driver, allowed, &mut report);
        } else if manifest.is_resource("ResourceClaim") {
            match manifest.typed::<ResourceClaim>() {
                Ok(claim) => check_claim(
                    manifest,
                    &claim.spec.and_then(|s| s.devices).unwrap_or_default(),
                    "spec.devices",
                    &catalog,
                    namespace,
                    driver,
                    allowed,
                    &mut report,
                ),
                Err(problem) => report.problems.push(problem),
            }
        } else if manifest.is_resource("ResourceClaimTemplate") {
            match manifest.typed::<ResourceClaimTemplate>() {
                Ok(template) => check_claim(
                    manifest,
                    &template
                        .spec
                        .and_then(|s| s.spec)
                        .and_then(|s| s.devices)
                        .unwrap_or_default(),
                    "spec.spec.devices",
                    &catalog,
                    namespace,
                    driver,
                    allowed,
                    &mut report,
                ),
                Err(problem) => report.problems.push(problem),
            }
        } else if manifest.is_network_attachment_definition() {
            check_nad(manifest, allowed, &mut report);
        } else if manifest.group() == "apps" && manifest.kind() == "DaemonSet" {
            check_daemonset(manifest, &mut report);
        } else {
            report.skipped += 1;
            continue;
        }
        report.checked += 1;
        // One problem can reach an object through several requests.
        let mut seen = std::collections::BTreeSet::new();
        let mut index = 0;
        report.problems.retain(|problem| {
            index += 1;
            index <= before || seen.insert(problem.clone())
        });
    }
    report
}

fn check_selectors(manifest: &Manifest, selectors: &[(String, String)], report: &mut Report) {
    for (path, expression) in selectors {
        if let Err(why) = Selector::compile(expression) {
            report.problems.push(manifest.problem(path, why));
        }
    }
}

fn check_class(
    manifest: &Manifest,
    catalog: &Catalog<'_>,
    namespace: &str,
    driver: &str,
    allowed: &PluginAllowlist,
    report: &mut Report,
) {
    let class = match manifest.typed::<DeviceClass>() {
        Ok(class) => class,
        Err(problem) => return report.problems.push(problem),
    };
    let selectors: Vec<(String, String)> = class
        .spec
        .iter()
        .flat_map(|spec| spec.selectors.iter().flatten())
        .enumerate()
        .filter_map(|(i, s)| {
            s.cel.as_ref().map(|cel| {
                (
                    format!("spec.selectors[{i}].cel.expression"),
                    cel.expression.clone(),
                )
            })
        })
        .collect();
    check_selectors(manifest, &selectors, report);
    let entries = class_config_entries(&class, driver);
    let configs = match parse_configs(ConfigSource::Class, &entries) {
        Ok(configs) => configs,
        Err(findings) => {
            let place = Place::class_only(manifest, catalog);
            report
                .problems
                .extend(findings.iter().map(|f| place.problem(f)));
            return;
        }
    };
    // A class with a network of its own runs it for every claim: check it alone too (a
    // class that only grants claims their networks has nothing to run by itself).
    let owns_network = configs.iter().any(|c| {
        c.config
            .cni
            .as_ref()
            .is_some_and(netclaim_api::CniConfig::has_network)
    });
    if owns_network {
        let nads = |ns: &str, name: &str| catalog.nad(ns, name);
        let class_ns = namespace;
        match plan_request(&configs, &[], "class", class_ns, &nads, allowed) {
            Ok(plan) => report.notes.extend(
                plan.notes
                    .into_iter()
                    .map(|n| format!("{}: {}: {n}", manifest.file_label(), manifest.label())),
            ),
            Err(findings) => {
                let place = Place::class_only(manifest, catalog);
                report
                    .problems
                    .extend(findings.iter().map(|f| place.problem(f)));
            }
        }
    }
}

#[allow(clippy::too_many_arguments)] // one call site per claim kind
fn check_claim(
    manifest: &Manifest,
    devices: &DeviceClaim,
    prefix: &str,
    catalog: &Catalog<'_>,
    default_namespace: &str,
    driver: &str,
    allowed: &PluginAllowlist,
    report: &mut Report,
) {
    let namespace = manifest.namespace().unwrap_or(default_namespace);
    let requests = requests_of(devices, prefix);
    for request in &requests {
        check_selectors(manifest, &request.selectors, report);
    }
    for (index, entry) in devices.config.iter().flatten().enumerate() {
        for (r, named) in entry.requests.iter().flatten().enumerate() {
            let main = named.split('/').next().unwrap_or(named);
            if !requests
                .iter()
                .any(|spec| spec.name == *named || spec.name == main)
            {
                report.problems.push(manifest.problem(
                    format!("{prefix}.config[{index}].requests[{r}]"),
                    format!("names no request of this claim: {named:?}"),
                ));
            }
        }
    }
    let entries = claim_config_entries(devices, driver);
    let claim_configs = match parse_configs(ConfigSource::Claim, &entries) {
        Ok(configs) => configs,
        Err(findings) => {
            let place = Place::claim(manifest, prefix, None, None, catalog);
            report
                .problems
                .extend(findings.iter().map(|f| place.problem(f)));
            return;
        }
    };
    for request in &requests {
        let Some(known) = catalog.classes.get(&request.class) else {
            report.notes.push(format!(
                "{}: {}: {}: DeviceClass {} is not in the files given, so request {}'s \
                 merge with it was not checked",
                manifest.file_label(),
                manifest.label(),
                request.path,
                request.class,
                request.name
            ));
            continue;
        };
        // A class whose configs do not parse is reported on the class.
        let Some(class_configs) = &known.configs else {
            continue;
        };
        let nads = |ns: &str, name: &str| catalog.nad(ns, name);
        match plan_request(
            class_configs,
            &claim_configs,
            &request.name,
            namespace,
            &nads,
            allowed,
        ) {
            Ok(plan) => report.notes.extend(plan.notes.into_iter().map(|n| {
                format!(
                    "{}: {}: request {}: {n}",
                    manifest.file_label(),
                    manifest.label(),
                    request.name
                )
            })),
            Err(findings) => {
                let place = Place::claim(manifest, prefix, Some(request), Some(known), catalog);
                report
                    .problems
                    .extend(findings.iter().map(|f| place.problem(f)));
            }
        }
    }
}

/// A DaemonSet's netclaim settings given as literal environment values: the device
/// filters compile (as `netclaim run` would refuse them at start), the plugin allowlist
/// names plugin files.
fn check_daemonset(manifest: &Manifest, report: &mut Report) {
    let containers = manifest.value["spec"]["template"]["spec"]["containers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for (i, container) in containers.iter().enumerate() {
        for (j, env) in container["env"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let (Some(name), Some(value)) = (env["name"].as_str(), env["value"].as_str()) else {
                continue;
            };
            let path = format!("spec.template.spec.containers[{i}].env[{j}].value");
            match name {
                "NETCLAIM_FILTER" | "NETCLAIM_SHARED_FILTER" if !value.trim().is_empty() => {
                    if let Err(why) = Selector::compile(value) {
                        report
                            .problems
                            .push(manifest.problem(path, format!("{name}: {why}")));
                    }
                }
                "NETCLAIM_CNI_ALLOWED_PLUGINS" => {
                    let types: Vec<&str> = value.split(',').map(str::trim).collect();
                    if let Err(why) = PluginAllowlist::new(&types) {
                        report
                            .problems
                            .push(manifest.problem(path, format!("{name}: {why}")));
                    }
                }
                _ => {}
            }
        }
    }
}

fn check_nad(manifest: &Manifest, allowed: &PluginAllowlist, report: &mut Report) {
    let problems =
        match netclaim_api::CniNetworkList::from_network_attachment_definition(&manifest.value) {
            Ok(list) => netclaim_api::policy::check_plugins(&list, allowed)
                .err()
                .map(|error| {
                    error
                        .errors
                        .into_iter()
                        .map(|e| (format!("spec.config: {}", e.path), e.message))
                        .collect()
                })
                .unwrap_or_default(),
            Err(error) => error
                .errors
                .into_iter()
                .map(|e| (e.path, e.message))
                .collect::<Vec<_>>(),
        };
    for (path, message) in problems {
        report.problems.push(manifest.problem(path, message));
    }
}

/// Turns findings into problems on the objects where their fields are.
struct Place<'m> {
    claim: Option<(&'m Manifest, &'m str)>,
    request: Option<&'m RequestSpec>,
    class: Option<&'m Manifest>,
    class_name: Option<String>,
    catalog: &'m Catalog<'m>,
}

impl<'m> Place<'m> {
    fn class_only(class: &'m Manifest, catalog: &'m Catalog<'m>) -> Self {
        Self {
            claim: None,
            request: None,
            class: Some(class),
            class_name: Some(class.name().to_owned()),
            catalog,
        }
    }

    fn claim(
        claim: &'m Manifest,
        prefix: &'m str,
        request: Option<&'m RequestSpec>,
        class: Option<&'m KnownClass<'m>>,
        catalog: &'m Catalog<'m>,
    ) -> Self {
        Self {
            claim: Some((claim, prefix)),
            request,
            class: class.map(|k| k.manifest),
            class_name: class.map(|k| k.manifest.name().to_owned()),
            catalog,
        }
    }

    fn problem(&self, finding: &Finding) -> Problem {
        let join = |base: String, path: &str| {
            if path.is_empty() {
                base
            } else {
                format!("{base}.{path}")
            }
        };
        let context = match (self.request, &self.class_name) {
            (Some(request), Some(class)) => {
                format!(" (request {}, DeviceClass {class})", request.name)
            }
            _ => String::new(),
        };
        match (&finding.site, self.claim, self.class) {
            (Site::ClaimConfig(i), Some((claim, prefix)), _) => claim.problem(
                join(
                    format!("{prefix}.config[{i}].opaque.parameters"),
                    &finding.path,
                ),
                format!("{}{context}", finding.message),
            ),
            (Site::ClassConfig(i), _, Some(class)) => class.problem(
                join(format!("spec.config[{i}].opaque.parameters"), &finding.path),
                finding.message.clone(),
            ),
            (Site::Nad { namespace, name }, _, _)
                if self
                    .catalog
                    .nads
                    .contains_key(&(namespace.clone(), name.clone())) =>
            {
                let nad = self.catalog.nads[&(namespace.clone(), name.clone())];
                nad.problem(
                    finding.path.clone(),
                    format!("{}{context}", finding.message),
                )
            }
            (_, Some((claim, _)), _) => {
                let at = self.request.map_or("", |r| r.path.as_str());
                claim.problem(
                    at,
                    format!(
                        "merged with DeviceClass {}: {}{}",
                        self.class_name.as_deref().unwrap_or("?"),
                        if finding.path.is_empty() {
                            String::new()
                        } else {
                            format!("{}: ", finding.path)
                        },
                        finding.message
                    ),
                )
            }
            (_, None, Some(class)) => class.problem(
                "spec.config",
                if finding.path.is_empty() {
                    finding.message.clone()
                } else {
                    format!("{}: {}", finding.path, finding.message)
                },
            ),
            (_, None, None) => Problem {
                file: String::new(),
                object: String::new(),
                path: finding.path.clone(),
                message: finding.message.clone(),
            },
        }
    }
}
