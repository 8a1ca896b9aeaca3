//! [`CniRunner`]: runs the plugins of a CNI network list, as a container runtime does.
//!
//! # Guarantees
//! - Plugins run only from [`CniRunner::bin_dirs`]: `type` is a bare file name (no `/`,
//!   no `..`), resolved by name in those directories, never through `PATH`, and every
//!   plugin of a list is resolved before the first one runs.
//! - Before any plugin of a list runs, for every verb, the whole list is checked against
//!   [`CniRunner::allowed`] (every plugin type and IPAM type on the admin's allowlist,
//!   device-taking types only first: [`check_plugins`]); nothing runs when one fails.
//! - A plugin runs by absolute path, in its own process group, with exactly the `CNI_*`
//!   variables and a fixed `PATH` (the plugin directories, then the system's sbin and bin
//!   directories, for helpers such as iptables): nothing of netclaim's own environment.
//! - Every plugin run has [`CniRunner::timeout`], or less when the caller's deadline is
//!   nearer; on expiry the plugin's whole process group is killed (a shell plugin's
//!   children too) and reaped ([`crate::exec`]). Its stdout is read up to
//!   [`MAX_PLUGIN_OUTPUT`] bytes and its stderr up to [`MAX_PLUGIN_STDERR`]; the rest is
//!   drained and dropped.
//! - A failed ADD (a plugin error, a timeout, an unusable result, a cache write failure)
//!   runs DEL for the whole list in reverse before it returns, as a runtime's teardown
//!   after a failed setup does, and writes no cache entry.
//! - A successful ADD leaves a cache entry ([`super::cache`]) holding the exact list and
//!   the result, so DEL and CHECK after a restart use what ADD used. A successful DEL
//!   removes it; a failed one keeps it, so DEL can be retried.
//!
//! # Assumptions
//! The caller serializes operations on one attachment (network, container id, ifname).
//! `runtimeConfig`/capabilities are not passed (no capability netclaim knows a value for).

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use netclaim_api::cni::{CniNetworkList, CniPlugin, check_plugin_type};
use netclaim_api::policy::{PluginAllowlist, check_plugins};
use serde_json::{Map, Value, json};
use tokio::time::Instant;

pub use crate::exec::{RunFailure, run_with_timeout};

use super::cache::{CACHE_KIND, CacheEntry, ResultCache};
use super::result::{CniResult, typed_result};
use super::{Attachment, CniError, PluginFailure};

/// At most this much of a plugin's stdout is read (a CNI result is a few KiB).
pub const MAX_PLUGIN_OUTPUT: usize = crate::exec::MAX_OUTPUT;
/// At most this much of a plugin's stderr is read.
pub const MAX_PLUGIN_STDERR: usize = crate::exec::MAX_STDERR;
/// At most this much of a plugin's stderr goes into an error.
const MAX_STDERR_IN_ERROR: usize = 2048;
/// Where plugins find their helpers (iptables, ip), after the plugin directories.
const SYSTEM_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What STATUS or GC did per plugin.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerbReport {
    /// Plugins that were asked (their `type`).
    pub ran: Vec<String>,
    /// Plugins skipped: the list's version predates the verb (< 1.1.0), or the plugin's
    /// `VERSION` answer does not list the list's version.
    pub skipped: Vec<String>,
}

/// A successful ADD.
#[derive(Clone, Debug, PartialEq)]
pub struct Added {
    /// The result, typed.
    pub result: CniResult,
    /// The result as the last plugin printed it (what `status.devices[].data` reports).
    pub raw: Value,
}

/// Runs CNI plugins (see the [module docs](self)).
#[derive(Clone, Debug)]
pub struct CniRunner {
    /// Directories plugins are looked up in, in order (`CNI_PATH`).
    pub bin_dirs: Vec<PathBuf>,
    /// The limit on each plugin run.
    pub timeout: Duration,
    /// Where ADD results are cached for DEL and CHECK.
    pub cache: ResultCache,
    /// The plugin types that may run (`--cni-allowed-plugins`).
    pub allowed: PluginAllowlist,
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

/// One plugin run: the verb, the list it belongs to and what goes with it.
struct Invocation<'a> {
    verb: Verb,
    list: &'a CniNetworkList,
    attachment: Option<&'a Attachment>,
    prev: Option<&'a Value>,
    extra: Option<(&'static str, Value)>,
    /// The caller's deadline, when nearer than the runner's timeout.
    until: Option<Instant>,
}

impl<'a> Invocation<'a> {
    fn new(verb: Verb, list: &'a CniNetworkList) -> Self {
        Self {
            verb,
            list,
            attachment: None,
            prev: None,
            extra: None,
            until: None,
        }
    }

    fn for_attachment(mut self, attachment: &'a Attachment) -> Self {
        self.attachment = Some(attachment);
        self
    }
}

impl CniRunner {
    /// A runner looking for plugins in `bin_dirs`, with `timeout` per plugin run and its
    /// result cache in `cache_dir` (created on first ADD), running the default plugin
    /// allowlist ([`netclaim_api::policy::DEFAULT_ALLOWED_PLUGINS`]).
    pub fn new(bin_dirs: Vec<PathBuf>, timeout: Duration, cache_dir: PathBuf) -> Self {
        Self {
            bin_dirs,
            timeout,
            cache: ResultCache::new(cache_dir),
            allowed: PluginAllowlist::default(),
        }
    }

    /// The same runner, running only the plugin types of `allowed`.
    pub fn with_allowed_plugins(mut self, allowed: PluginAllowlist) -> Self {
        self.allowed = allowed;
        self
    }

    /// [`CniRunner::add_until`] without a deadline of the caller's, returning the typed
    /// result.
    ///
    /// # Errors
    /// As [`CniRunner::add_until`].
    pub async fn add(
        &self,
        list: &CniNetworkList,
        attachment: &Attachment,
    ) -> Result<CniResult, CniError> {
        self.add_until(list, attachment, None)
            .await
            .map(|added| added.result)
    }

    /// Runs ADD for every plugin of `list` in order, each getting the previous one's result
    /// as `prevResult`, caches the final result, and returns it. No plugin runs past
    /// `until` (nor past [`CniRunner::timeout`]).
    ///
    /// # Errors
    /// Bad config or attachment, a plugin missing, failing or running out of time, an
    /// unusable result, a cache write failure. On failure, DEL has been run for the whole
    /// list (with the runner's own timeout, whatever `until` says: the undo is not cut
    /// short); [`CniError::CleanupFailed`] says when that failed too.
    pub async fn add_until(
        &self,
        list: &CniNetworkList,
        attachment: &Attachment,
        until: Option<Instant>,
    ) -> Result<Added, CniError> {
        let plugins = self.prepare(list, Some(attachment)).await?;
        let mut prev: Option<Value> = None;
        for (plugin, path) in list.plugins.iter().zip(&plugins) {
            let mut run = Invocation::new(Verb::Add, list).for_attachment(attachment);
            run.prev = prev.as_ref();
            run.until = until;
            let outcome = self
                .exec(path, plugin, run)
                .await
                .and_then(|stdout| parse_result_json(plugin, Verb::Add, &stdout));
            match outcome {
                Ok(result) => prev = Some(result),
                Err(error) => {
                    return Err(self.undo_add(list, &plugins, attachment, prev, error).await);
                }
            }
        }
        let Some(raw) = prev else {
            return Err(CniError::Config(netclaim_api::ConfigError::single(
                "plugins",
                "the list has no plugins",
            )));
        };
        let result = match typed_result(&raw) {
            Ok(result) => result,
            Err(message) => {
                let error = CniError::BadResult {
                    plugin: plugin_name(list.plugins.last()),
                    command: "ADD",
                    message,
                };
                return Err(self
                    .undo_add(list, &plugins, attachment, Some(raw), error)
                    .await);
            }
        };
        let entry = CacheEntry {
            kind: CACHE_KIND.to_owned(),
            attachment: attachment.clone(),
            config: list.clone(),
            result: raw.clone(),
        };
        if let Err(error) = self.cache.write(entry).await {
            return Err(self
                .undo_add(list, &plugins, attachment, Some(raw), error)
                .await);
        }
        Ok(Added { result, raw })
    }

    /// After a failed ADD: DEL for every plugin of the list, in reverse, going on past
    /// failures so that as much as possible is removed. As a runtime's teardown after a
    /// failed setup does: a plugin's half-done ADD (an IPAM lease taken before a later step
    /// failed, or before the plugin was killed) is only released by its DEL.
    async fn undo_add(
        &self,
        list: &CniNetworkList,
        plugins: &[PathBuf],
        attachment: &Attachment,
        prev: Option<Value>,
        add: CniError,
    ) -> CniError {
        match self
            .run_del(list, plugins, attachment, prev.as_ref(), true)
            .await
        {
            Ok(()) => add,
            Err(del) => CniError::CleanupFailed {
                add: Box::new(add),
                del: Box::new(del),
            },
        }
    }

    /// Runs DEL for every plugin in reverse order. With a cache entry for the attachment,
    /// the cached list (the exact config ADD used) and result (`prevResult`) are used and
    /// `list` only names the network; without one, `list` runs without `prevResult` (the
    /// spec allows that for DEL). The cache entry is removed once every plugin succeeded.
    /// Each plugin gets the runner's timeout (a DEL is an undo: it is not cut short by the
    /// caller's deadline).
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
        // The cache read, the check of the list DEL runs and the plugin lookup in one
        // blocking task (each hand-off costs more than the work; see `blocking_lookup`).
        let (cache, allowed, dirs) = (
            self.cache.clone(),
            self.allowed.clone(),
            self.bin_dirs.clone(),
        );
        let (given, attachment_owned) = (list.clone(), attachment.clone());
        let (cached, plugins) = blocking_lookup(list, move || {
            let cached = cache.read_blocking(&given.name, &attachment_owned)?;
            let chosen = cached.as_ref().map_or(&given, |entry| &entry.config);
            let types = check_list(chosen, &allowed)?;
            Ok((cached, lookup_plugins(&dirs, types)?))
        })
        .await?;
        let (list, prev) = match &cached {
            Some(entry) => (&entry.config, Some(&entry.result)),
            None => (list, None),
        };
        self.run_del(list, &plugins, attachment, prev, false)
            .await?;
        self.cache.remove(&list.name, attachment).await
    }

    /// The attachment `(container_id, ifname)` of `network` as ADD ran it: with the pod's
    /// identity (`CNI_ARGS`) from ADD's cache entry, so DEL and CHECK run with the arguments
    /// ADD had; without an entry the pod is left empty.
    pub async fn attachment_as_added(
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
            pod: crate::state::PodRef::default(),
        };
        if let Ok(Some(entry)) = self.cache.read(network, &attachment).await {
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
            .cache
            .read(network, attachment)
            .await?
            .ok_or_else(|| not_cached(network, attachment))?;
        self.del(&entry.config, attachment).await
    }

    /// DEL for every plugin in reverse; `keep_going`: past failures (returning the first),
    /// else stop at the first.
    async fn run_del(
        &self,
        list: &CniNetworkList,
        plugins: &[PathBuf],
        attachment: &Attachment,
        prev: Option<&Value>,
        keep_going: bool,
    ) -> Result<(), CniError> {
        let mut first_failure = None;
        for (plugin, path) in list.plugins.iter().zip(plugins).rev() {
            let mut run = Invocation::new(Verb::Del, list).for_attachment(attachment);
            run.prev = prev;
            if let Err(error) = self.exec(path, plugin, run).await {
                if !keep_going {
                    return Err(error);
                }
                tracing::warn!(%error, "DEL after a failed CNI ADD");
                first_failure.get_or_insert(error);
            }
        }
        first_failure.map_or(Ok(()), Err)
    }

    /// Runs CHECK for every plugin in order with the cached ADD result as `prevResult`.
    ///
    /// # Errors
    /// [`CniError::NotCached`] without a cached ADD; the first plugin failure.
    pub async fn check(&self, network: &str, attachment: &Attachment) -> Result<(), CniError> {
        attachment.validate()?;
        let entry = self
            .cache
            .read(network, attachment)
            .await?
            .ok_or_else(|| not_cached(network, attachment))?;
        let plugins = self.prepare(&entry.config, Some(attachment)).await?;
        for (plugin, path) in entry.config.plugins.iter().zip(&plugins) {
            let mut run = Invocation::new(Verb::Check, &entry.config).for_attachment(attachment);
            run.prev = Some(&entry.result);
            self.exec(path, plugin, run).await?;
        }
        Ok(())
    }

    /// Runs STATUS (spec 1.1.0) for every plugin that supports it, none past `until`.
    ///
    /// A list older than 1.1.0 runs nothing (the verb does not exist there); a plugin whose
    /// `VERSION` answer lacks the list's version is skipped, as libcni does.
    ///
    /// # Errors
    /// The first plugin failure; [`CniError::code`] is [`super::CODE_UNAVAILABLE`] (50)
    /// or [`super::CODE_LIMITED_CONNECTIVITY`] (51) when the plugin reports it is not ready.
    pub async fn status(
        &self,
        list: &CniNetworkList,
        until: Option<Instant>,
    ) -> Result<VerbReport, CniError> {
        let mut report = VerbReport::default();
        if !list.version_at_least((1, 1, 0)) {
            // Before every ADD of an older list: not even a plugin lookup.
            report.skipped = list.plugins.iter().map(|p| plugin_name(Some(p))).collect();
            return Ok(report);
        }
        let plugins = self.prepare(list, None).await?;
        for (plugin, path) in list.plugins.iter().zip(&plugins) {
            if !self
                .supports_list_version(list, plugin, path, until)
                .await?
            {
                report.skipped.push(plugin_name(Some(plugin)));
                continue;
            }
            let mut run = Invocation::new(Verb::Status, list);
            run.until = until;
            self.exec(path, plugin, run).await?;
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
        let plugins = self.prepare(list, None).await?;
        let keep: BTreeSet<(&str, &str)> = valid
            .iter()
            .map(|(c, i)| (c.as_str(), i.as_str()))
            .collect();
        for entry in self.cache.entries(&list.name).await? {
            let key = (
                entry.attachment.container_id.as_str(),
                entry.attachment.ifname.as_str(),
            );
            if !keep.contains(&key) {
                self.cache.remove(&list.name, &entry.attachment).await?;
            }
        }
        let valid_json: Vec<Value> = valid
            .iter()
            .map(|(container_id, ifname)| json!({"containerID": container_id, "ifname": ifname}))
            .collect();
        let mut report = VerbReport::default();
        let mut first_error = None;
        for (plugin, path) in list.plugins.iter().zip(&plugins) {
            if !self.supports_list_version(list, plugin, path, None).await? {
                report.skipped.push(plugin_name(Some(plugin)));
                continue;
            }
            let mut run = Invocation::new(Verb::Gc, list);
            run.extra = Some((
                "cni.dev/valid-attachments",
                Value::Array(valid_json.clone()),
            ));
            match self.exec(path, plugin, run).await {
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
        until: Option<Instant>,
    ) -> Result<bool, CniError> {
        if !list.version_at_least((1, 1, 0)) {
            return Ok(false);
        }
        let mut run = Invocation::new(Verb::Version, list);
        run.until = until;
        let stdout = self.exec(path, plugin, run).await?;
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

    /// Checks the list (its shape, and its plugins against [`CniRunner::allowed`]) and the
    /// attachment and resolves every plugin, before anything runs.
    async fn prepare(
        &self,
        list: &CniNetworkList,
        attachment: Option<&Attachment>,
    ) -> Result<Vec<PathBuf>, CniError> {
        let types = check_list(list, &self.allowed)?;
        if let Some(attachment) = attachment {
            attachment.validate()?;
        }
        let dirs = self.bin_dirs.clone();
        blocking_lookup(list, move || lookup_plugins(&dirs, types)).await
    }

    /// The executable for a plugin `type`: the first regular, executable file of that
    /// name in [`CniRunner::bin_dirs`].
    ///
    /// # Errors
    /// [`CniError::Config`] for a name that could leave the directories;
    /// [`CniError::PluginNotFound`] when no directory has it.
    pub async fn find_plugin(&self, plugin_type: &str) -> Result<PathBuf, CniError> {
        check_plugin_type(plugin_type)
            .map_err(|message| netclaim_api::ConfigError::single("plugins[].type", message))?;
        let (dirs, types) = (self.bin_dirs.clone(), vec![plugin_type.to_owned()]);
        let mut found = tokio::task::spawn_blocking(move || lookup_plugins(&dirs, types))
            .await
            .map_err(|error| lookup_failed(plugin_type, &error))??;
        Ok(found.pop().unwrap_or_default())
    }

    /// The whole environment of one plugin run: the `CNI_*` variables and a fixed `PATH`
    /// (the plugin directories, then the system's).
    pub fn plugin_env(
        &self,
        verb_name: &str,
        attachment: Option<&Attachment>,
    ) -> Vec<(String, OsString)> {
        let cni_path = std::env::join_paths(&self.bin_dirs).unwrap_or_default();
        let mut path = cni_path.clone();
        if !path.is_empty() {
            path.push(":");
        }
        path.push(SYSTEM_PATH);
        let mut env = vec![
            ("CNI_COMMAND".to_owned(), OsString::from(verb_name)),
            ("CNI_PATH".to_owned(), cni_path),
            ("PATH".to_owned(), path),
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
        env
    }

    /// Runs one plugin; returns its stdout when it exits 0.
    async fn exec(
        &self,
        path: &Path,
        plugin: &CniPlugin,
        run: Invocation<'_>,
    ) -> Result<Vec<u8>, CniError> {
        let stdin = if run.verb == Verb::Version {
            json!({"cniVersion": run.list.cni_version})
        } else {
            let mut config = plugin_stdin(plugin, run.list, run.prev);
            if let Some((key, value)) = run.extra {
                config.insert(key.to_owned(), value);
            }
            Value::Object(config)
        };
        let env = self.plugin_env(
            run.verb.as_str(),
            run.attachment.filter(|_| run.verb.per_attachment()),
        );
        // The caller's deadline, when it is nearer than the runner's own limit.
        let left = run
            .until
            .map(|until| until.saturating_duration_since(Instant::now()));
        let (timeout, cut_by_caller) = match left {
            Some(left) if left < self.timeout => (left, true),
            _ => (self.timeout, false),
        };
        let started = Instant::now();
        let output = run_with_timeout(path, &env, stdin.to_string().as_bytes(), timeout).await;
        crate::metrics::metrics().observe_cni(
            &plugin_name(Some(plugin)),
            run.verb.as_str(),
            matches!(&output, Ok(output) if output.status.success()),
            started.elapsed(),
        );
        let output = output.map_err(|failure| match failure {
            RunFailure::Spawn(source) => CniError::Spawn {
                plugin: plugin_name(Some(plugin)),
                command: run.verb.as_str(),
                source,
            },
            RunFailure::Timeout if cut_by_caller => CniError::OutOfTime {
                plugin: plugin_name(Some(plugin)),
                command: run.verb.as_str(),
                after: timeout,
            },
            RunFailure::Timeout => CniError::Timeout {
                plugin: plugin_name(Some(plugin)),
                command: run.verb.as_str(),
                timeout,
            },
        })?;
        if output.status.success() {
            return Ok(output.stdout);
        }
        Err(plugin_error(plugin, run.verb, &output))
    }
}

/// Checks a list before anything of it runs: its shape (re-checked: a list may be built in
/// code rather than parsed, or come from a cache entry written under another allowlist),
/// its plugins against `allowed`, and every plugin `type` as a file name. Returns the types.
fn check_list(list: &CniNetworkList, allowed: &PluginAllowlist) -> Result<Vec<String>, CniError> {
    CniNetworkList::parse(list.to_json().to_string().as_bytes())?;
    check_plugins(list, allowed)?;
    list.plugins
        .iter()
        .map(|plugin| {
            let plugin_type = plugin.plugin_type().unwrap_or_default();
            check_plugin_type(plugin_type)
                .map_err(|message| netclaim_api::ConfigError::single("plugins[].type", message))?;
            Ok(plugin_type.to_owned())
        })
        .collect()
}

/// Each plugin of `types`: the first regular, executable file of that name in `dirs`.
/// Blocking (a `stat` per candidate).
fn lookup_plugins(dirs: &[PathBuf], types: Vec<String>) -> Result<Vec<PathBuf>, CniError> {
    types
        .into_iter()
        .map(|plugin_type| {
            dirs.iter()
                .map(|dir| dir.join(&plugin_type))
                .find(|candidate| {
                    std::fs::metadata(candidate)
                        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
                })
                .ok_or_else(|| CniError::PluginNotFound {
                    plugin: plugin_type,
                    dirs: dirs.to_vec(),
                })
        })
        .collect()
}

/// Runs `work` (plugin lookups of `list`, and what goes with them) on a blocking thread:
/// one hand-off for all of a list's plugins, since a hand-off and back costs 20-50 us on a
/// 2-vCPU VM, more than the `stat`s.
async fn blocking_lookup<T: Send + 'static>(
    list: &CniNetworkList,
    work: impl FnOnce() -> Result<T, CniError> + Send + 'static,
) -> Result<T, CniError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| lookup_failed(&list.name, &error))?
}

fn lookup_failed(what: &str, error: &tokio::task::JoinError) -> CniError {
    CniError::Spawn {
        plugin: what.to_owned(),
        command: "lookup",
        source: std::io::Error::other(format!("the plugin lookup task failed: {error}")),
    }
}

fn not_cached(network: &str, attachment: &Attachment) -> CniError {
    CniError::NotCached {
        network: network.to_owned(),
        container_id: attachment.container_id.clone(),
        ifname: attachment.ifname.clone(),
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
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
    fn stdin_injects_list_values_and_prev_result() {
        let l = list(json!([{"type": "tuning", "mtu": 1400}]));
        let prev = json!({"cniVersion": "1.0.0"});
        let stdin = plugin_stdin(&l.plugins[0], &l, Some(&prev));
        assert_eq!(stdin["name"], "net");
        assert_eq!(stdin["cniVersion"], "1.0.0");
        assert_eq!(stdin["prevResult"], prev);
        assert_eq!(stdin["mtu"], 1400);
    }

    #[tokio::test]
    async fn plugin_lookup_refuses_paths_and_uses_only_bin_dirs() {
        let runner = CniRunner::new(
            vec!["/nonexistent".into()],
            Duration::from_secs(1),
            "/tmp/x".into(),
        );
        assert!(matches!(
            runner.find_plugin("../../bin/sh").await,
            Err(CniError::Config(_))
        ));
        assert!(matches!(
            runner.find_plugin("/bin/true").await,
            Err(CniError::Config(_))
        ));
        // `sh` is on PATH, but not in the bin dirs.
        assert!(matches!(
            runner.find_plugin("sh").await,
            Err(CniError::PluginNotFound { .. })
        ));
    }

    #[test]
    fn the_environment_is_only_cni_variables_and_a_fixed_path() {
        let runner = CniRunner::new(
            vec!["/opt/cni/bin".into()],
            Duration::from_secs(1),
            "/tmp/x".into(),
        );
        let env = runner.plugin_env("ADD", None);
        let names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["CNI_COMMAND", "CNI_PATH", "PATH"]);
        let path = &env[2].1;
        assert_eq!(
            path.to_str().unwrap(),
            format!("/opt/cni/bin:{SYSTEM_PATH}")
        );
    }
}
