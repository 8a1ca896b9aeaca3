//! CNI mode: runs CNI plugins for a claimed device, as a container runtime does.
//!
//! [`CniRunner`] is a small exec layer over the CNI protocol (spec 0.4.0 to 1.1.0): it
//! runs each plugin of a network configuration list with the `CNI_*` environment and the
//! plugin's config on stdin, chaining `prevResult` through ADD, running DEL in reverse with
//! the cached ADD result, and CHECK, STATUS and GC where the spec version has them. Around
//! it: [`substitute_device`] (the allocated device becomes the plugin's master / host
//! device), [`CniResult`] and [`network_data`] (a claim's `status.devices[].networkData`),
//! and [`update_network_status`] (the pod's `k8s.v1.cni.cncf.io/network-status` entries).
//!
//! Why not a crate: the Rust CNI crates on crates.io either implement plugins
//! (`cni-plugin`) or set the process-wide environment to run them, without timeouts,
//! STATUS or GC (`rust-cni`). The protocol is environment variables, stdin and stdout,
//! so the runner is written here on `tokio::process`.
//!
//! # Guarantees
//! - Plugins run only from [`CniRunner::bin_dirs`]: `type` is a bare file name (no `/`,
//!   no `..`), resolved by name in those directories, never through `PATH`, and every
//!   plugin of a list is resolved before the first one runs.
//! - Every plugin run has [`CniRunner::timeout`]; on expiry the plugin's whole process
//!   group is killed (a shell plugin's children too) and reaped.
//! - A failed ADD runs DEL (in reverse) for the plugins whose ADD succeeded before it
//!   returns, and writes no cache entry (see [`CniRunner::add`] for why not every plugin).
//! - A successful ADD leaves a cache entry `<cache_dir>/<network>-<container id>-<ifname>.json`
//!   (written by atomic replace, without fsync: see `write_atomically`) holding the exact list and the result, so DEL and CHECK
//!   after a restart use what ADD used. A successful DEL removes it.
//!
//! # Assumptions
//! The caller serializes operations on one attachment (network, container id, ifname).
//! `runtimeConfig`/capabilities are not passed (no capability netclaim knows a value for).

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use ipnet::IpNet;
use netclaim_api::cni::{CniNetworkList, CniPlugin, check_plugin_type, default_device_field};
use netclaim_api::validate::check_interface_name;

use crate::status::NetworkData;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// The pod annotation the Network Plumbing WG multi-network spec defines for attachments.
pub const NETWORK_STATUS_ANNOTATION: &str = "k8s.v1.cni.cncf.io/network-status";

/// The STATUS error code meaning "the plugin is not available: ADD will fail" (spec 1.1).
pub const CODE_UNAVAILABLE: u32 = 50;
/// The STATUS error code meaning "not available, and existing containers may have limited
/// connectivity" (spec 1.1).
pub const CODE_LIMITED_CONNECTIVITY: u32 = 51;

/// At most this much of a plugin's stderr goes into an error.
const MAX_STDERR_IN_ERROR: usize = 2048;
/// The claim status API takes at most 16 IPs per device.
const MAX_NETWORK_DATA_IPS: usize = 16;
/// Tags cache files so foreign files in the cache dir are never taken for entries.
const CACHE_KIND: &str = "netclaim.dev/cni-cache/v1";

/// What can go wrong running CNI plugins.
#[derive(Debug, thiserror::Error)]
pub enum CniError {
    /// The network list or the attachment is not valid; nothing ran.
    #[error("invalid CNI config: {0}")]
    Config(#[from] netclaim_api::ConfigError),
    /// No executable of that name in any plugin directory; nothing ran.
    #[error("CNI plugin {plugin:?} not found in {dirs:?}")]
    PluginNotFound {
        /// The plugin `type`.
        plugin: String,
        /// Where it was looked for.
        dirs: Vec<PathBuf>,
    },
    /// The plugin could not be started.
    #[error("starting CNI plugin {plugin} for {command}: {source}")]
    Spawn {
        /// The plugin `type`.
        plugin: String,
        /// The CNI command.
        command: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// The plugin ran and failed (non-zero exit), with its JSON error when it gave one.
    #[error("{0}")]
    Plugin(Box<PluginFailure>),
    /// The plugin did not finish in time and was killed.
    #[error("CNI plugin {plugin} {command} did not finish within {timeout:?}; killed it")]
    Timeout {
        /// The plugin `type`.
        plugin: String,
        /// The CNI command.
        command: &'static str,
        /// The limit.
        timeout: Duration,
    },
    /// The plugin exited 0 but its output is not a result.
    #[error("CNI plugin {plugin} {command} returned an unusable result: {message}")]
    BadResult {
        /// The plugin `type`.
        plugin: String,
        /// The CNI command.
        command: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// A DEL, CHECK needs the ADD result and there is none cached.
    #[error(
        "no cached ADD result for network {network}, container {container_id}, interface {ifname}"
    )]
    NotCached {
        /// The network name.
        network: String,
        /// The container id.
        container_id: String,
        /// The interface name.
        ifname: String,
    },
    /// Reading or writing the result cache failed.
    #[error("CNI result cache {}: {message}", path.display())]
    Cache {
        /// The cache file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// ADD failed and the DEL that should have undone it failed too: something may be
    /// left behind.
    #[error("{add}; and the cleanup DEL failed: {del}")]
    CleanupFailed {
        /// Why ADD failed.
        add: Box<CniError>,
        /// Why the cleanup failed.
        del: Box<CniError>,
    },
    /// An annotation value is not what the multi-network spec defines.
    #[error("annotation {NETWORK_STATUS_ANNOTATION}: {0}")]
    Annotation(String),
}

impl CniError {
    /// The CNI error code, when a plugin gave one.
    pub fn code(&self) -> Option<u32> {
        match self {
            CniError::Plugin(failure) => failure.code,
            _ => None,
        }
    }
}

/// A plugin that ran and failed: how it exited, its JSON error, its stderr.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "CNI plugin {plugin} {command} failed ({exit}){}: {msg}{}{}",
    code.map(|c| format!(" code {c}")).unwrap_or_default(),
    details.as_ref().map(|d| format!(" ({d})")).unwrap_or_default(),
    if stderr.is_empty() { String::new() } else { format!("; stderr: {stderr}") }
)]
pub struct PluginFailure {
    /// The plugin `type`.
    pub plugin: String,
    /// The CNI command.
    pub command: &'static str,
    /// How it exited (`exit status 1`, `signal 9`).
    pub exit: String,
    /// The error's `code` (spec: 1-99 well-known, 100+ plugin-specific).
    pub code: Option<u32>,
    /// The error's `msg`, or the raw stdout when it was not a CNI error.
    pub msg: String,
    /// The error's `details`.
    pub details: Option<String>,
    /// The plugin's stderr (trimmed, at most 2 KiB).
    pub stderr: String,
}

/// The pod a CNI attachment is for, passed to plugins in `CNI_ARGS`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodRef {
    /// `K8S_POD_NAMESPACE`.
    pub namespace: String,
    /// `K8S_POD_NAME`.
    pub name: String,
    /// `K8S_POD_UID`.
    pub uid: String,
}

/// One attachment of a network to a container: what the `CNI_*` variables carry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    /// `CNI_CONTAINERID` (the pod sandbox id; also `K8S_POD_INFRA_CONTAINER_ID`).
    pub container_id: String,
    /// `CNI_NETNS`: the path of the pod's network namespace.
    pub netns: PathBuf,
    /// `CNI_IFNAME`: the interface name inside the pod.
    pub ifname: String,
    /// The pod, for `CNI_ARGS`.
    pub pod: PodRef,
}

impl Attachment {
    /// Checks what goes into the environment and the cache file name.
    ///
    /// # Errors
    /// A field-path error: `containerID` must follow the spec's rule (alphanumeric first,
    /// then alphanumerics, `_`, `.`, `-`); `ifname` must be a valid Linux name; pod values
    /// must not contain `;` or `=` (the `CNI_ARGS` separators).
    pub fn validate(&self) -> Result<(), netclaim_api::ConfigError> {
        let mut errors = Vec::new();
        if let Err(message) = netclaim_api::cni::check_network_name(&self.container_id) {
            errors.push(netclaim_api::FieldError::new("containerID", message));
        }
        if let Err(message) = check_interface_name(&self.ifname) {
            errors.push(netclaim_api::FieldError::new("ifname", message));
        }
        for (field, value) in [
            ("pod.namespace", &self.pod.namespace),
            ("pod.name", &self.pod.name),
            ("pod.uid", &self.pod.uid),
        ] {
            if value.contains([';', '=', '\0']) {
                errors.push(netclaim_api::FieldError::new(
                    field,
                    format!("{value:?} contains ';', '=' or NUL, which CNI_ARGS cannot carry"),
                ));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(netclaim_api::ConfigError { errors })
        }
    }

    /// `CNI_ARGS`: `IgnoreUnknown=1` (so plugins accept the Kubernetes keys) and the pod.
    pub fn cni_args(&self) -> String {
        format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
            self.pod.namespace, self.pod.name, self.container_id, self.pod.uid
        )
    }
}

/// The result of ADD, typed (spec 1.x `Result`; 0.4.0 results parse too, their extra
/// `version` fields ignored). The raw JSON is kept: it is the next plugin's `prevResult`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CniResult {
    /// The spec version of the result.
    #[serde(default)]
    pub cni_version: String,
    /// Interfaces the plugins created or touched.
    #[serde(default)]
    pub interfaces: Vec<CniInterface>,
    /// Addresses assigned.
    #[serde(default)]
    pub ips: Vec<CniIp>,
    /// Routes installed.
    #[serde(default)]
    pub routes: Vec<CniRoute>,
    /// DNS information.
    #[serde(default)]
    pub dns: CniDns,
}

/// An interface of a [`CniResult`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CniInterface {
    /// Its name.
    pub name: String,
    /// Its MAC address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// The netns path when the interface is inside the sandbox; absent for host-side ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    /// Its MTU (spec 1.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Its PCI address (spec 1.1 `pciID`).
    #[serde(default, rename = "pciID", skip_serializing_if = "Option::is_none")]
    pub pci_id: Option<String>,
}

/// An address of a [`CniResult`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CniIp {
    /// Address and prefix length.
    pub address: IpNet,
    /// The gateway, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Index into [`CniResult::interfaces`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

/// A route of a [`CniResult`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CniRoute {
    /// Destination.
    pub dst: IpNet,
    /// Next hop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
}

/// DNS information of a [`CniResult`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CniDns {
    /// Name servers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    /// Local domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Search domains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    /// Resolver options.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl CniDns {
    fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.is_none()
            && self.search.is_empty()
            && self.options.is_empty()
    }
}

/// The pod-side interface `ifname` of `result` and its addresses, for a claim's status.
///
/// The interface is the one named `ifname` with a `sandbox` (the pod side; a bridge
/// plugin also lists host-side interfaces). Addresses are those whose `interface` index
/// points at it; when the result lists no interfaces at all (an IPAM-only chain),
/// every address. `None` when the result has no such interface and does list interfaces.
pub fn network_data(result: &CniResult, ifname: &str) -> Option<NetworkData> {
    let index = result
        .interfaces
        .iter()
        .position(|i| i.name == ifname && i.sandbox.is_some())
        .or_else(|| result.interfaces.iter().position(|i| i.name == ifname));
    if index.is_none() && !result.interfaces.is_empty() {
        return None;
    }
    let ips = result
        .ips
        .iter()
        .filter(|ip| index.is_none() || ip.interface == index)
        .map(|ip| ip.address)
        .take(MAX_NETWORK_DATA_IPS)
        .collect();
    Some(NetworkData {
        interface_name: ifname.to_owned(),
        ips,
        hardware_address: index.and_then(|i| result.interfaces[i].mac.clone()),
    })
}

/// The allocated device handed to the first plugin of a list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceRef {
    /// Its host interface name (`enp3s0f0`).
    pub ifname: String,
    /// Its PCI address (`0000:03:00.0`), when it is a PCI function.
    pub pci_address: Option<String>,
}

/// Writes the allocated device into the first plugin of `list`.
///
/// The rule: the field `device_field` (the config's `cni.deviceField`), else the default
/// for the plugin's type ([`default_device_field`]: `master` for macvlan/ipvlan, `device`
/// for host-device, `deviceID` for sriov) receives the host interface name, or the PCI
/// address when the field is `deviceID`. As Multus does for device-plugin resources, a PCI
/// device's address is also written to `deviceID` when the plugin config has none. A
/// value already in the config is replaced: the allocation decides which device is used.
/// A plugin type with no default and no `device_field` gets nothing (a bridge network).
///
/// # Errors
/// [`CniError::Config`] when the field is `deviceID` and the device has no PCI address.
pub fn substitute_device(
    list: &CniNetworkList,
    device_field: Option<&str>,
    device: &DeviceRef,
) -> Result<CniNetworkList, CniError> {
    let mut list = list.clone();
    let Some(first) = list.plugins.first_mut() else {
        return Ok(list);
    };
    let field = device_field.map(str::to_owned).or_else(|| {
        first
            .plugin_type()
            .and_then(default_device_field)
            .map(str::to_owned)
    });
    if let Some(field) = field {
        let value = if field == "deviceID" {
            device.pci_address.clone().ok_or_else(|| {
                netclaim_api::ConfigError::single(
                    "cni.deviceField",
                    format!(
                        "deviceID takes a PCI address, and device {} has none",
                        device.ifname
                    ),
                )
            })?
        } else {
            device.ifname.clone()
        };
        first.0.insert(field, Value::String(value));
    }
    if let Some(pci) = &device.pci_address {
        first
            .0
            .entry("deviceID")
            .or_insert_with(|| Value::String(pci.clone()));
    }
    Ok(list)
}

/// What the cache holds for one attachment.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheEntry {
    /// Always `netclaim.dev/cni-cache/v1`.
    pub kind: String,
    /// The attachment the ADD was for.
    pub attachment: Attachment,
    /// The exact list ADD ran (after device substitution).
    pub config: CniNetworkList,
    /// The ADD result: `prevResult` for DEL and CHECK.
    pub result: Value,
}

/// What STATUS or GC did per plugin.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerbReport {
    /// Plugins that were asked (their `type`).
    pub ran: Vec<String>,
    /// Plugins skipped: the list's version predates the verb (< 1.1.0), or the plugin's
    /// `VERSION` answer does not list the list's version.
    pub skipped: Vec<String>,
}

/// Runs CNI plugins (see the [module docs](self)).
#[derive(Clone, Debug)]
pub struct CniRunner {
    /// Directories plugins are looked up in, in order (`CNI_PATH`).
    pub bin_dirs: Vec<PathBuf>,
    /// The limit on each plugin run.
    pub timeout: Duration,
    /// Where ADD results are cached for DEL and CHECK.
    pub cache_dir: PathBuf,
}

/// A CNI command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verb {
    Add,
    Del,
    Check,
    Status,
    Gc,
    Version,
}

impl Verb {
    fn as_str(self) -> &'static str {
        match self {
            Verb::Add => "ADD",
            Verb::Del => "DEL",
            Verb::Check => "CHECK",
            Verb::Status => "STATUS",
            Verb::Gc => "GC",
            Verb::Version => "VERSION",
        }
    }

    /// Whether the verb is about one attachment (and so gets the container variables).
    fn per_attachment(self) -> bool {
        matches!(self, Verb::Add | Verb::Del | Verb::Check)
    }
}

impl CniRunner {
    /// A runner looking for plugins in `bin_dirs`, with `timeout` per plugin run and its
    /// result cache in `cache_dir` (created on first ADD).
    pub fn new(bin_dirs: Vec<PathBuf>, timeout: Duration, cache_dir: PathBuf) -> Self {
        Self {
            bin_dirs,
            timeout,
            cache_dir,
        }
    }

    /// Runs ADD for every plugin of `list` in order, each getting the previous one's result
    /// as `prevResult`, caches the final result, and returns it typed.
    ///
    /// # Errors
    /// Bad config or attachment, a plugin missing, failing or timing out, an unusable
    /// result, a cache write failure. On failure, DEL has been run for the plugins whose
    /// ADD succeeded (not for the failing one: plugins clean up their own failed ADD, and
    /// host-device's DEL would move an earlier plugin's interface out of the pod);
    /// [`CniError::CleanupFailed`] says when that failed too.
    pub async fn add(
        &self,
        list: &CniNetworkList,
        attachment: &Attachment,
    ) -> Result<CniResult, CniError> {
        self.add_with_raw(list, attachment)
            .await
            .map(|(typed, _)| typed)
    }

    /// [`CniRunner::add`], also returning the result as the plugins printed it (what
    /// `status.devices[].data` reports).
    ///
    /// # Errors
    /// As [`CniRunner::add`].
    pub async fn add_with_raw(
        &self,
        list: &CniNetworkList,
        attachment: &Attachment,
    ) -> Result<(CniResult, Value), CniError> {
        let plugins = self.prepare(list, Some(attachment))?;
        let mut prev: Option<Value> = None;
        for (added, (plugin, path)) in list.plugins.iter().zip(&plugins).enumerate() {
            let outcome = self
                .exec(
                    Verb::Add,
                    path,
                    plugin,
                    list,
                    Some(attachment),
                    prev.as_ref(),
                    None,
                )
                .await
                .and_then(|stdout| parse_result_json(plugin, Verb::Add, &stdout));
            match outcome {
                Ok(result) => prev = Some(result),
                Err(error) => {
                    return Err(self
                        .undo_add(list, &plugins, added, attachment, prev, error)
                        .await);
                }
            }
        }
        let Some(raw) = prev else {
            return Err(CniError::Config(netclaim_api::ConfigError::single(
                "plugins",
                "the list has no plugins",
            )));
        };
        let typed = match typed_result(&raw) {
            Ok(typed) => typed,
            Err(message) => {
                let error = CniError::BadResult {
                    plugin: plugin_name(list.plugins.last()),
                    command: "ADD",
                    message,
                };
                return Err(self
                    .undo_add(list, &plugins, plugins.len(), attachment, Some(raw), error)
                    .await);
            }
        };
        let entry = CacheEntry {
            kind: CACHE_KIND.to_owned(),
            attachment: attachment.clone(),
            config: list.clone(),
            result: raw.clone(),
        };
        if let Err(error) = self.write_cache(&entry) {
            return Err(self
                .undo_add(list, &plugins, plugins.len(), attachment, Some(raw), error)
                .await);
        }
        Ok((typed, raw))
    }

    /// After a failed ADD: DEL, in reverse, for the plugins whose ADD succeeded, going on
    /// past failures so that as much as possible is removed.
    ///
    /// The spec suggests DEL for every plugin of the list; netclaim does not call DEL on the
    /// plugin whose ADD failed, nor on those after it: the reference plugins clean up
    /// their own failed ADD (releasing IPAM, deleting their link), and a DEL for an ADD
    /// that never happened can do harm: host-device's DEL moves whatever interface has
    /// `CNI_IFNAME` in the pod (here an earlier plugin's) out to the node.
    async fn undo_add(
        &self,
        list: &CniNetworkList,
        plugins: &[PathBuf],
        added: usize,
        attachment: &Attachment,
        prev: Option<Value>,
        add: CniError,
    ) -> CniError {
        let mut first_failure = None;
        for (plugin, path) in list.plugins.iter().zip(plugins).take(added).rev() {
            let outcome = self
                .exec(
                    Verb::Del,
                    path,
                    plugin,
                    list,
                    Some(attachment),
                    prev.as_ref(),
                    None,
                )
                .await;
            if let Err(del) = outcome {
                tracing::warn!(error = %del, "cleanup after a failed CNI ADD");
                first_failure.get_or_insert(del);
            }
        }
        match first_failure {
            None => add,
            Some(del) => CniError::CleanupFailed {
                add: Box::new(add),
                del: Box::new(del),
            },
        }
    }

    /// Runs DEL for every plugin in reverse order. With a cache entry for the attachment,
    /// the cached list (the exact config ADD used) and result (`prevResult`) are used and
    /// `list` only names the network; without one, `list` runs without `prevResult` (the
    /// spec allows that for DEL). The cache entry is removed once every plugin succeeded.
    ///
    /// # Errors
    /// The first plugin failure (the spec says to stop there); the cache entry is kept so
    /// DEL can be retried.
    pub async fn del(
        &self,
        list: &CniNetworkList,
        attachment: &Attachment,
    ) -> Result<(), CniError> {
        attachment.validate()?;
        let cached = self.read_cache(&list.name, attachment)?;
        let (list, prev) = match &cached {
            Some(entry) => (&entry.config, Some(&entry.result)),
            None => (list, None),
        };
        let plugins = self.prepare(list, Some(attachment))?;
        self.run_del(list, &plugins, attachment, prev).await?;
        self.remove_cache(&list.name, attachment)
    }

    /// The attachment `(container_id, ifname)` of `network` as ADD ran it: with the pod's
    /// identity (`CNI_ARGS`) from ADD's cache entry, so DEL and CHECK run with the arguments
    /// ADD had; without an entry the pod is left empty.
    pub fn attachment_as_added(
        &self,
        network: &str,
        container_id: &str,
        netns: PathBuf,
        ifname: &str,
    ) -> Attachment {
        let mut attachment = Attachment {
            container_id: container_id.to_owned(),
            netns,
            ifname: ifname.to_owned(),
            pod: PodRef::default(),
        };
        if let Ok(Some(entry)) = self.read_cache(network, &attachment) {
            attachment.pod = entry.attachment.pod;
        }
        attachment
    }

    /// DEL from the cache alone (after a restart, when only the network name is known).
    ///
    /// # Errors
    /// [`CniError::NotCached`] without an entry; otherwise as [`CniRunner::del`].
    pub async fn del_cached(&self, network: &str, attachment: &Attachment) -> Result<(), CniError> {
        attachment.validate()?;
        let entry = self
            .read_cache(network, attachment)?
            .ok_or_else(|| not_cached(network, attachment))?;
        self.del(&entry.config, attachment).await
    }

    async fn run_del(
        &self,
        list: &CniNetworkList,
        plugins: &[PathBuf],
        attachment: &Attachment,
        prev: Option<&Value>,
    ) -> Result<(), CniError> {
        for (plugin, path) in list.plugins.iter().zip(plugins).rev() {
            self.exec(Verb::Del, path, plugin, list, Some(attachment), prev, None)
                .await?;
        }
        Ok(())
    }

    /// Runs CHECK for every plugin in order with the cached ADD result as `prevResult`.
    ///
    /// # Errors
    /// [`CniError::NotCached`] without a cached ADD; the first plugin failure.
    pub async fn check(&self, network: &str, attachment: &Attachment) -> Result<(), CniError> {
        attachment.validate()?;
        let entry = self
            .read_cache(network, attachment)?
            .ok_or_else(|| not_cached(network, attachment))?;
        let plugins = self.prepare(&entry.config, Some(attachment))?;
        for (plugin, path) in entry.config.plugins.iter().zip(&plugins) {
            self.exec(
                Verb::Check,
                path,
                plugin,
                &entry.config,
                Some(attachment),
                Some(&entry.result),
                None,
            )
            .await?;
        }
        Ok(())
    }

    /// Runs STATUS (spec 1.1.0) for every plugin that supports it.
    ///
    /// A list older than 1.1.0 runs nothing (the verb does not exist there); a plugin whose
    /// `VERSION` answer lacks the list's version is skipped, as libcni does.
    ///
    /// # Errors
    /// The first plugin failure; [`CniError::code`] is [`CODE_UNAVAILABLE`] (50) or
    /// [`CODE_LIMITED_CONNECTIVITY`] (51) when the plugin reports it is not ready.
    pub async fn status(&self, list: &CniNetworkList) -> Result<VerbReport, CniError> {
        let mut report = VerbReport::default();
        if !list.version_at_least((1, 1, 0)) {
            // Before every ADD of an older list: not even a plugin lookup.
            report.skipped = list.plugins.iter().map(|p| plugin_name(Some(p))).collect();
            return Ok(report);
        }
        let plugins = self.prepare(list, None)?;
        for (plugin, path) in list.plugins.iter().zip(&plugins) {
            if !self.supports_list_version(list, plugin, path).await? {
                report.skipped.push(plugin_name(Some(plugin)));
                continue;
            }
            self.exec(Verb::Status, path, plugin, list, None, None, None)
                .await?;
            report.ran.push(plugin_name(Some(plugin)));
        }
        Ok(report)
    }

    /// Garbage-collects: removes this network's cache entries for attachments not in
    /// `valid` (container id, ifname), then, for lists of 1.1.0 and later, runs GC on every
    /// plugin that supports it with `cni.dev/valid-attachments`.
    ///
    /// # Errors
    /// The first failure, after every plugin was asked (GC cleans what it can).
    pub async fn gc(
        &self,
        list: &CniNetworkList,
        valid: &[(String, String)],
    ) -> Result<VerbReport, CniError> {
        let plugins = self.prepare(list, None)?;
        let keep: BTreeSet<(&str, &str)> = valid
            .iter()
            .map(|(c, i)| (c.as_str(), i.as_str()))
            .collect();
        for entry in self.cache_entries(&list.name)? {
            let key = (
                entry.attachment.container_id.as_str(),
                entry.attachment.ifname.as_str(),
            );
            if !keep.contains(&key) {
                self.remove_cache(&list.name, &entry.attachment)?;
            }
        }
        let valid_json: Vec<Value> = valid
            .iter()
            .map(|(container_id, ifname)| json!({"containerID": container_id, "ifname": ifname}))
            .collect();
        let mut report = VerbReport::default();
        let mut first_error = None;
        for (plugin, path) in list.plugins.iter().zip(&plugins) {
            if !self.supports_list_version(list, plugin, path).await? {
                report.skipped.push(plugin_name(Some(plugin)));
                continue;
            }
            let extra = (
                "cni.dev/valid-attachments",
                Value::Array(valid_json.clone()),
            );
            match self
                .exec(Verb::Gc, path, plugin, list, None, None, Some(extra))
                .await
            {
                Ok(_) => report.ran.push(plugin_name(Some(plugin))),
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(report),
        }
    }

    /// Whether the plugin's `VERSION` answer lists the list's version; `false` for lists
    /// older than 1.1.0 (STATUS and GC are 1.1.0 verbs).
    async fn supports_list_version(
        &self,
        list: &CniNetworkList,
        plugin: &CniPlugin,
        path: &Path,
    ) -> Result<bool, CniError> {
        if !list.version_at_least((1, 1, 0)) {
            return Ok(false);
        }
        let stdout = self
            .exec(Verb::Version, path, plugin, list, None, None, None)
            .await?;
        let answer: Value =
            serde_json::from_slice(&stdout).map_err(|error| CniError::BadResult {
                plugin: plugin_name(Some(plugin)),
                command: "VERSION",
                message: error.to_string(),
            })?;
        Ok(answer["supportedVersions"]
            .as_array()
            .is_some_and(|versions| {
                versions
                    .iter()
                    .any(|v| v.as_str() == Some(&list.cni_version))
            }))
    }

    /// Checks the list and the attachment and resolves every plugin, before anything runs.
    fn prepare(
        &self,
        list: &CniNetworkList,
        attachment: Option<&Attachment>,
    ) -> Result<Vec<PathBuf>, CniError> {
        // Re-checked here: a list may be built in code rather than parsed.
        CniNetworkList::parse(list.to_json().to_string().as_bytes())?;
        if let Some(attachment) = attachment {
            attachment.validate()?;
        }
        list.plugins
            .iter()
            .map(|plugin| self.find_plugin(plugin.plugin_type().unwrap_or_default()))
            .collect()
    }

    /// The executable for a plugin `type`: the first regular, executable file of that
    /// name in [`CniRunner::bin_dirs`].
    ///
    /// # Errors
    /// [`CniError::Config`] for a name that could leave the directories;
    /// [`CniError::PluginNotFound`] when no directory has it.
    pub fn find_plugin(&self, plugin_type: &str) -> Result<PathBuf, CniError> {
        check_plugin_type(plugin_type)
            .map_err(|message| netclaim_api::ConfigError::single("plugins[].type", message))?;
        for dir in &self.bin_dirs {
            let candidate = dir.join(plugin_type);
            if let Ok(meta) = std::fs::metadata(&candidate)
                && meta.is_file()
                && meta.permissions().mode() & 0o111 != 0
            {
                return Ok(candidate);
            }
        }
        Err(CniError::PluginNotFound {
            plugin: plugin_type.to_owned(),
            dirs: self.bin_dirs.clone(),
        })
    }

    /// The environment of one plugin run: the `CNI_*` variables, and `PATH` passed on
    /// (plugins such as bridge exec helpers like iptables).
    pub fn plugin_env(
        &self,
        verb_name: &str,
        attachment: Option<&Attachment>,
    ) -> Vec<(String, OsString)> {
        let mut env = vec![
            ("CNI_COMMAND".to_owned(), OsString::from(verb_name)),
            (
                "CNI_PATH".to_owned(),
                std::env::join_paths(&self.bin_dirs).unwrap_or_default(),
            ),
        ];
        if let Some(attachment) = attachment {
            env.extend([
                (
                    "CNI_CONTAINERID".to_owned(),
                    attachment.container_id.clone().into(),
                ),
                (
                    "CNI_NETNS".to_owned(),
                    attachment.netns.clone().into_os_string(),
                ),
                ("CNI_IFNAME".to_owned(), attachment.ifname.clone().into()),
                ("CNI_ARGS".to_owned(), attachment.cni_args().into()),
            ]);
        }
        if let Some(path) = std::env::var_os("PATH") {
            env.push(("PATH".to_owned(), path));
        }
        env
    }

    /// Runs one plugin; returns its stdout when it exits 0.
    #[allow(clippy::too_many_arguments)]
    async fn exec(
        &self,
        verb: Verb,
        path: &Path,
        plugin: &CniPlugin,
        list: &CniNetworkList,
        attachment: Option<&Attachment>,
        prev: Option<&Value>,
        extra: Option<(&str, Value)>,
    ) -> Result<Vec<u8>, CniError> {
        let stdin = if verb == Verb::Version {
            json!({"cniVersion": list.cni_version})
        } else {
            let mut config = plugin_stdin(plugin, list, prev);
            if let Some((key, value)) = extra {
                config.insert(key.to_owned(), value);
            }
            Value::Object(config)
        };
        let env = self.plugin_env(verb.as_str(), attachment.filter(|_| verb.per_attachment()));
        let output = run_with_timeout(path, &env, stdin.to_string().as_bytes(), self.timeout)
            .await
            .map_err(|failure| match failure {
                RunFailure::Spawn(source) => CniError::Spawn {
                    plugin: plugin_name(Some(plugin)),
                    command: verb.as_str(),
                    source,
                },
                RunFailure::Timeout => CniError::Timeout {
                    plugin: plugin_name(Some(plugin)),
                    command: verb.as_str(),
                    timeout: self.timeout,
                },
            })?;
        if output.status.success() {
            return Ok(output.stdout);
        }
        Err(plugin_error(plugin, verb, &output))
    }

    /// The cache file of an attachment: `<cache_dir>/<network>-<container id>-<ifname>.json`.
    pub fn cache_path(&self, network: &str, attachment: &Attachment) -> PathBuf {
        self.cache_dir.join(format!(
            "{network}-{}-{}.json",
            attachment.container_id, attachment.ifname
        ))
    }

    /// The cache entry of an attachment, if any (one written for another attachment whose
    /// name happens to collide is not returned).
    ///
    /// An entry that does not parse is reported as absent (with a warning), so that DEL
    /// can still run from the caller's config.
    ///
    /// # Errors
    /// [`CniError::Cache`] when the file exists but cannot be read.
    pub fn read_cache(
        &self,
        network: &str,
        attachment: &Attachment,
    ) -> Result<Option<CacheEntry>, CniError> {
        let path = self.cache_path(network, attachment);
        let raw = match std::fs::read(&path) {
            Ok(raw) => raw,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(cache_error(&path, error)),
        };
        let entry: CacheEntry = match serde_json::from_slice(&raw) {
            Ok(entry) => entry,
            Err(error) => {
                // A torn or emptied entry (machine crash, see `write_atomically`) must not
                // block DEL forever: it runs from the caller's config instead.
                tracing::warn!(path = %path.display(), %error, "unreadable CNI cache entry; ignoring it");
                return Ok(None);
            }
        };
        let same = entry.kind == CACHE_KIND
            && entry.config.name == network
            && entry.attachment.container_id == attachment.container_id
            && entry.attachment.ifname == attachment.ifname;
        Ok(same.then_some(entry))
    }

    fn write_cache(&self, entry: &CacheEntry) -> Result<(), CniError> {
        let path = self.cache_path(&entry.config.name, &entry.attachment);
        let bytes = serde_json::to_vec_pretty(entry).map_err(|error| cache_error(&path, error))?;
        write_atomically(&self.cache_dir, &path, &bytes).map_err(|error| cache_error(&path, error))
    }

    fn remove_cache(&self, network: &str, attachment: &Attachment) -> Result<(), CniError> {
        let path = self.cache_path(network, attachment);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(cache_error(&path, error)),
        }
    }

    /// Every cache entry of `network` (unreadable or foreign files are skipped).
    ///
    /// # Errors
    /// [`CniError::Cache`] when the directory exists but cannot be listed.
    pub fn cache_entries(&self, network: &str) -> Result<Vec<CacheEntry>, CniError> {
        let dir = match std::fs::read_dir(&self.cache_dir) {
            Ok(dir) => dir,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => return Err(cache_error(&self.cache_dir, error)),
        };
        let prefix = format!("{network}-");
        let mut entries = Vec::new();
        for file in dir.flatten() {
            let name = file.file_name();
            let Some(name) = name.to_str() else { continue };
            if !(name.starts_with(&prefix) && name.ends_with(".json")) {
                continue;
            }
            let Ok(raw) = std::fs::read(file.path()) else {
                continue;
            };
            if let Ok(entry) = serde_json::from_slice::<CacheEntry>(&raw)
                && entry.kind == CACHE_KIND
                && entry.config.name == network
            {
                entries.push(entry);
            }
        }
        Ok(entries)
    }
}

fn not_cached(network: &str, attachment: &Attachment) -> CniError {
    CniError::NotCached {
        network: network.to_owned(),
        container_id: attachment.container_id.clone(),
        ifname: attachment.ifname.clone(),
    }
}

fn cache_error(path: &Path, error: impl std::fmt::Display) -> CniError {
    CniError::Cache {
        path: path.to_owned(),
        message: error.to_string(),
    }
}

fn plugin_name(plugin: Option<&CniPlugin>) -> String {
    plugin
        .and_then(CniPlugin::plugin_type)
        .unwrap_or("<no type>")
        .to_owned()
}

/// A plugin's stdin: its config with the list's `name` and `cniVersion` injected (the spec
/// requires the list's values) and `prevResult` when there is one.
pub fn plugin_stdin(
    plugin: &CniPlugin,
    list: &CniNetworkList,
    prev: Option<&Value>,
) -> Map<String, Value> {
    let mut config = plugin.0.clone();
    config.insert("cniVersion".into(), Value::String(list.cni_version.clone()));
    config.insert("name".into(), Value::String(list.name.clone()));
    if let Some(prev) = prev {
        config.insert("prevResult".into(), prev.clone());
    }
    config
}

fn parse_result_json(plugin: &CniPlugin, verb: Verb, stdout: &[u8]) -> Result<Value, CniError> {
    let value: Value = serde_json::from_slice(stdout).map_err(|error| CniError::BadResult {
        plugin: plugin_name(Some(plugin)),
        command: verb.as_str(),
        message: format!("not JSON: {error}"),
    })?;
    if !value.is_object() {
        return Err(CniError::BadResult {
            plugin: plugin_name(Some(plugin)),
            command: verb.as_str(),
            message: "not a JSON object".into(),
        });
    }
    Ok(value)
}

/// Parses a result's JSON into [`CniResult`].
///
/// # Errors
/// Why it is not a CNI result (a bad address, a wrong type).
pub fn typed_result(raw: &Value) -> Result<CniResult, String> {
    let result: CniResult = serde_json::from_value(raw.clone()).map_err(|e| e.to_string())?;
    if let Some(bad) = result
        .ips
        .iter()
        .find(|ip| ip.interface.is_some_and(|i| i >= result.interfaces.len()))
    {
        return Err(format!(
            "ip {} points at interface {:?}, but the result lists {} interfaces",
            bad.address,
            bad.interface,
            result.interfaces.len()
        ));
    }
    Ok(result)
}

/// Turns a failed run into [`CniError::Plugin`], reading the spec's JSON error from
/// stdout when the plugin printed one.
fn plugin_error(plugin: &CniPlugin, verb: Verb, output: &std::process::Output) -> CniError {
    use std::os::unix::process::ExitStatusExt as _;
    let exit = match (output.status.code(), output.status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("signal {signal}"),
        _ => "unknown exit".to_owned(),
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let parsed: Option<Value> = serde_json::from_str(stdout.trim()).ok();
    let (code, msg, details) = match parsed {
        Some(error) if error.get("msg").is_some() || error.get("code").is_some() => (
            error["code"].as_u64().and_then(|c| u32::try_from(c).ok()),
            error["msg"].as_str().unwrap_or_default().to_owned(),
            error["details"]
                .as_str()
                .filter(|d| !d.is_empty())
                .map(str::to_owned),
        ),
        _ => (None, stdout.trim().to_owned(), None),
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    let mut stderr = stderr.trim().to_owned();
    if stderr.len() > MAX_STDERR_IN_ERROR {
        let mut cut = MAX_STDERR_IN_ERROR;
        while !stderr.is_char_boundary(cut) {
            cut -= 1;
        }
        stderr.truncate(cut);
        stderr.push_str("...");
    }
    CniError::Plugin(Box::new(PluginFailure {
        plugin: plugin_name(Some(plugin)),
        command: verb.as_str(),
        exit,
        code,
        msg,
        details,
        stderr,
    }))
}

/// Why a process run gave no output.
#[derive(Debug)]
pub enum RunFailure {
    /// It could not be started.
    Spawn(std::io::Error),
    /// It ran past the timeout and was killed with its process group.
    Timeout,
}

/// Runs `program` with exactly `env`, `stdin` as its input, in its own process group, and
/// collects its output; past `timeout` the whole group gets SIGKILL and is reaped.
///
/// Public so that benchmarks can run plugins "by hand" with the same mechanics.
///
/// # Errors
/// [`RunFailure`].
pub async fn run_with_timeout(
    program: &Path,
    env: &[(String, OsString)],
    stdin: &[u8],
    timeout: Duration,
) -> Result<std::process::Output, RunFailure> {
    let mut child = tokio::process::Command::new(program)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(RunFailure::Spawn)?;
    let pid = child.id();
    let mut input = child.stdin.take();
    let mut stdout_pipe = child.stdout.take();
    let mut stderr_pipe = child.stderr.take();
    let run = async {
        let feed = async {
            if let Some(mut input) = input.take() {
                // A plugin may exit without reading stdin (VERSION, errors): a broken pipe
                // is its answer, not ours to report.
                let _ = input.write_all(stdin).await;
            }
        };
        let read_out = async {
            let mut buf = Vec::new();
            if let Some(pipe) = stdout_pipe.as_mut() {
                let _ = pipe.read_to_end(&mut buf).await;
            }
            buf
        };
        let read_err = async {
            let mut buf = Vec::new();
            if let Some(pipe) = stderr_pipe.as_mut() {
                let _ = pipe.read_to_end(&mut buf).await;
            }
            buf
        };
        let ((), stdout, stderr, status) = tokio::join!(feed, read_out, read_err, child.wait());
        status.map(|status| std::process::Output {
            status,
            stdout,
            stderr,
        })
    };
    match tokio::time::timeout(timeout, run).await {
        Ok(Ok(output)) => Ok(output),
        Ok(Err(error)) => Err(RunFailure::Spawn(error)),
        Err(_) => {
            if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
                // The group id is the plugin's pid (process_group(0)); killing the group
                // also ends children that would keep its pipes open.
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = child.wait().await;
            Err(RunFailure::Timeout)
        }
    }
}

/// Writes `bytes` to `path` by atomic replace: a temp file in `dir`, then rename. Creates
/// `dir` (mode 0700) when missing.
///
/// No fsync, on purpose (libcni does not sync its cache either): the cache must survive a
/// restart of netclaim, which the page cache covers, and the rename means a reader never
/// sees a half-written entry. After a machine crash the pod netns the entries describe
/// are gone too; an entry lost or emptied then is read as "not cached" and DEL runs from
/// the caller's config. fsync of the file and the directory cost ~11 ms at p50 on this
/// node's disk under load, ten times the overhead budget of a whole ADD+DEL.
fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("entry");
    let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    let written = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// One entry of the `k8s.v1.cni.cncf.io/network-status` annotation (multi-network spec
/// v1.2 format). Unknown fields are not modelled: entries netclaim does not own are kept
/// as raw JSON by [`update_network_status`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NetworkStatusEntry {
    /// The network: `<namespace>/<NetworkAttachmentDefinition name>`, or the CNI network
    /// name for an inline network.
    pub name: String,
    /// The interface name inside the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// Its IP addresses, without prefix length (as the spec shows them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<String>,
    /// Its MAC address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Whether this is the pod's default network (never for netclaim's interfaces).
    #[serde(default)]
    pub default: bool,
    /// DNS information.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<CniDns>,
    /// Device information (`{"type": "pci", "version": "1.1.0", "pci": {"pci-address": ...}}`).
    #[serde(
        default,
        rename = "device-info",
        skip_serializing_if = "Option::is_none"
    )]
    pub device_info: Option<Value>,
}

impl NetworkStatusEntry {
    /// The entry for an interface a CNI network attached (from its ADD result).
    pub fn from_cni_result(
        network: &str,
        ifname: &str,
        result: &CniResult,
        pci_address: Option<&str>,
    ) -> Self {
        let data = network_data(result, ifname);
        Self {
            name: network.to_owned(),
            interface: Some(ifname.to_owned()),
            ips: data
                .as_ref()
                .map(|d| d.ips.iter().map(|ip| ip.addr().to_string()).collect())
                .unwrap_or_default(),
            mac: data.and_then(|d| d.hardware_address),
            default: false,
            dns: (!result.dns.is_empty()).then(|| result.dns.clone()),
            device_info: pci_address.map(pci_device_info),
        }
    }

    /// The entry for an interface netclaim attached itself (static mode).
    pub fn from_static(
        network: &str,
        ifname: &str,
        ips: &[IpNet],
        mac: Option<&str>,
        pci_address: Option<&str>,
    ) -> Self {
        Self {
            name: network.to_owned(),
            interface: Some(ifname.to_owned()),
            ips: ips.iter().map(|ip| ip.addr().to_string()).collect(),
            mac: mac.map(str::to_owned),
            default: false,
            dns: None,
            device_info: pci_address.map(pci_device_info),
        }
    }
}

fn pci_device_info(pci_address: &str) -> Value {
    json!({"type": "pci", "version": "1.1.0", "pci": {"pci-address": pci_address}})
}

/// Updates the `k8s.v1.cni.cncf.io/network-status` annotation value: every entry whose
/// `interface` is one of `ours` or of `remove` is dropped, then `ours` are appended.
/// Entries for other interfaces (the primary network, Multus attachments) are kept as they
/// were, byte for byte in content.
///
/// # Errors
/// [`CniError::Annotation`] when `existing` is not a JSON list of objects: it is left for
/// its owner to fix rather than overwritten.
pub fn update_network_status(
    existing: Option<&str>,
    ours: &[NetworkStatusEntry],
    remove: &[&str],
) -> Result<String, CniError> {
    let mut entries: Vec<Value> = match existing.map(str::trim).filter(|s| !s.is_empty()) {
        None => Vec::new(),
        Some(text) => serde_json::from_str(text)
            .map_err(|error| CniError::Annotation(format!("not a JSON list: {error}")))?,
    };
    if let Some(index) = entries.iter().position(|entry| !entry.is_object()) {
        return Err(CniError::Annotation(format!(
            "entry {index} is not an object"
        )));
    }
    let replaced: BTreeSet<&str> = ours
        .iter()
        .filter_map(|entry| entry.interface.as_deref())
        .chain(remove.iter().copied())
        .collect();
    entries.retain(|entry| {
        entry["interface"]
            .as_str()
            .is_none_or(|interface| !replaced.contains(interface))
    });
    for entry in ours {
        entries.push(serde_json::to_value(entry).map_err(|e| CniError::Annotation(e.to_string()))?);
    }
    serde_json::to_string(&entries).map_err(|e| CniError::Annotation(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(plugins: Value) -> CniNetworkList {
        CniNetworkList::parse(
            json!({"cniVersion": "1.0.0", "name": "net", "plugins": plugins})
                .to_string()
                .as_bytes(),
        )
        .unwrap()
    }

    #[test]
    fn device_substitution_by_type_and_pci() {
        let device = DeviceRef {
            ifname: "enp3s0".into(),
            pci_address: Some("0000:03:00.0".into()),
        };
        let out = substitute_device(
            &list(json!([{"type": "macvlan", "master": "old"}])),
            None,
            &device,
        )
        .unwrap();
        assert_eq!(out.plugins[0].0["master"], "enp3s0");
        assert_eq!(out.plugins[0].0["deviceID"], "0000:03:00.0");
        let out = substitute_device(&list(json!([{"type": "sriov"}])), None, &device).unwrap();
        assert_eq!(out.plugins[0].0["deviceID"], "0000:03:00.0");
        let out = substitute_device(
            &list(json!([{"type": "bridge"}])),
            None,
            &DeviceRef::default(),
        )
        .unwrap();
        assert_eq!(out.plugins[0].0.len(), 1);
        let no_pci = DeviceRef {
            ifname: "veth0".into(),
            pci_address: None,
        };
        assert!(substitute_device(&list(json!([{"type": "sriov"}])), None, &no_pci).is_err());
        let out =
            substitute_device(&list(json!([{"type": "x"}])), Some("uplink"), &no_pci).unwrap();
        assert_eq!(out.plugins[0].0["uplink"], "veth0");
    }

    #[test]
    fn stdin_injects_list_values_and_prev_result() {
        let l = list(json!([{"type": "tuning", "mtu": 1400}]));
        let prev = json!({"cniVersion": "1.0.0"});
        let stdin = plugin_stdin(&l.plugins[0], &l, Some(&prev));
        assert_eq!(stdin["name"], "net");
        assert_eq!(stdin["cniVersion"], "1.0.0");
        assert_eq!(stdin["prevResult"], prev);
        assert_eq!(stdin["mtu"], 1400);
    }

    #[test]
    fn results_parse_and_give_network_data() {
        let raw = json!({
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "br0", "mac": "02:00:00:00:00:01"},
                           {"name": "net1", "mac": "02:00:00:00:00:02", "sandbox": "/run/netns/x"}],
            "ips": [{"address": "192.0.2.5/24", "gateway": "192.0.2.1", "interface": 1},
                    {"address": "192.0.2.6/24", "interface": 0},
                    {"address": "2001:db8::5/64", "interface": 1}],
            "routes": [{"dst": "0.0.0.0/0", "gw": "192.0.2.1"}],
            "dns": {"nameservers": ["192.0.2.53"]}
        });
        let result = typed_result(&raw).unwrap();
        let data = network_data(&result, "net1").unwrap();
        let ips: Vec<String> = data.ips.iter().map(ToString::to_string).collect();
        assert_eq!(ips, ["192.0.2.5/24", "2001:db8::5/64"]);
        assert_eq!(data.hardware_address.as_deref(), Some("02:00:00:00:00:02"));
        assert!(network_data(&result, "eth9").is_none());
        let bad = json!({"interfaces": [], "ips": [{"address": "192.0.2.5/24", "interface": 3}]});
        assert!(typed_result(&bad).is_err());
    }

    #[test]
    fn network_status_keeps_other_entries() {
        let existing = r#"[{"name":"cbr0","interface":"eth0","ips":["10.0.0.5"],"default":true,"x-extra":1},
                           {"name":"old","interface":"net1","ips":["192.0.2.9"]}]"#;
        let ours = NetworkStatusEntry::from_static(
            "netclaim/fast",
            "net1",
            &["192.0.2.10/24".parse().unwrap()],
            Some("02:00:00:00:00:03"),
            Some("0000:03:00.0"),
        );
        let updated = update_network_status(Some(existing), &[ours], &[]).unwrap();
        let parsed: Vec<Value> = serde_json::from_str(&updated).unwrap();
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0]["x-extra"], 1);
        assert_eq!(parsed[1]["ips"], json!(["192.0.2.10"]));
        assert_eq!(
            parsed[1]["device-info"]["pci"]["pci-address"],
            "0000:03:00.0"
        );
        let removed = update_network_status(Some(&updated), &[], &["net1"]).unwrap();
        assert_eq!(
            serde_json::from_str::<Vec<Value>>(&removed).unwrap().len(),
            1
        );
        assert!(update_network_status(Some("{}"), &[], &[]).is_err());
        assert!(update_network_status(Some("[1]"), &[], &[]).is_err());
    }

    #[test]
    fn attachments_are_checked() {
        let mut attachment = Attachment {
            container_id: "abc".into(),
            netns: "/run/netns/x".into(),
            ifname: "net1".into(),
            pod: PodRef {
                namespace: "ns".into(),
                name: "p".into(),
                uid: "u".into(),
            },
        };
        assert!(attachment.validate().is_ok());
        assert!(
            attachment
                .cni_args()
                .starts_with("IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;")
        );
        attachment.container_id = "../x".into();
        attachment.pod.name = "a;b".into();
        let error = attachment.validate().unwrap_err();
        let paths: Vec<_> = error.errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["containerID", "pod.name"]);
    }

    #[test]
    fn plugin_lookup_refuses_paths_and_uses_only_bin_dirs() {
        let runner = CniRunner::new(
            vec!["/nonexistent".into()],
            Duration::from_secs(1),
            "/tmp/x".into(),
        );
        assert!(matches!(
            runner.find_plugin("../../bin/sh"),
            Err(CniError::Config(_))
        ));
        assert!(matches!(
            runner.find_plugin("/bin/true"),
            Err(CniError::Config(_))
        ));
        // `sh` is on PATH, but not in the bin dirs.
        assert!(matches!(
            runner.find_plugin("sh"),
            Err(CniError::PluginNotFound { .. })
        ));
    }
}
