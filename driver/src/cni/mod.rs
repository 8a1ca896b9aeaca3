//! CNI mode: runs CNI plugins for a claimed device, as a container runtime does.
//!
//! - [`runner`]: [`CniRunner`], a small exec layer over the CNI protocol (spec 0.4.0 to
//!   1.1.0): each plugin of a network configuration list runs with the `CNI_*` environment
//!   and its config on stdin, `prevResult` chained through ADD, DEL in reverse with the
//!   cached ADD result, and CHECK, STATUS and GC where the spec version has them.
//! - [`cache`]: the result cache that lets DEL and CHECK run after a restart with exactly
//!   what ADD used.
//! - [`result`]: the typed ADD result and what a claim's status reports of it.
//! - [`device`]: the allocated device written into the first plugin (master, host device).
//!
//! The pod's `k8s.v1.cni.cncf.io/network-status` format lives in
//! [`crate::network_status`].
//!
//! Why not a crate: the Rust CNI crates on crates.io either implement plugins
//! (`cni-plugin`) or set the process-wide environment to run them, without timeouts,
//! STATUS or GC (`rust-cni`). The protocol is environment variables, stdin and stdout,
//! so the runner is written here on `tokio::process`.

pub mod cache;
pub mod device;
pub mod result;
pub mod runner;

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use cache::CacheEntry;
pub use device::{DeviceRef, substitute_device};
pub use result::{CniDns, CniInterface, CniIp, CniResult, CniRoute, network_data, typed_result};
pub use runner::{CniRunner, RunFailure, VerbReport, plugin_stdin, run_with_timeout};

use netclaim_api::validate::check_interface_name;

use crate::state::PodRef;

/// The STATUS error code meaning "the plugin is not available: ADD will fail" (spec 1.1).
pub const CODE_UNAVAILABLE: u32 = 50;
/// The STATUS error code meaning "not available, and existing containers may have limited
/// connectivity" (spec 1.1).
pub const CODE_LIMITED_CONNECTIVITY: u32 = 51;

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
    /// The caller's deadline (the NRI hook's) came before the plugin finished: it was
    /// killed.
    #[error(
        "CNI plugin {plugin} {command} was still running when the hook's time was up (after {after:?}); killed it"
    )]
    OutOfTime {
        /// The plugin `type`.
        plugin: String,
        /// The CNI command.
        command: &'static str,
        /// How long it had.
        after: Duration,
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
}

impl CniError {
    /// Whether the plugin was stopped by the caller's deadline rather than failing.
    pub fn is_out_of_time(&self) -> bool {
        match self {
            CniError::OutOfTime { .. } => true,
            CniError::CleanupFailed { add, .. } => add.is_out_of_time(),
            _ => false,
        }
    }

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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

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
}
