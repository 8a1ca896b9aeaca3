//! Prometheus metrics, served with the health endpoints by [`crate::serve`].
//!
//! One process-wide registry ([`metrics()`]): the events worth counting happen deep in
//! prepare, the hooks, the backends and the CNI runner, and threading a handle through each
//! of them would buy nothing (there is one daemon per process). Every series is listed in
//! `docs/metrics.md` with what it means.
//!
//! Label values come from closed sets (an event name, a backend, an outcome, a failure
//! reason) or from what the admin configured (a CNI plugin type is on
//! `--cni-allowed-plugins`): nothing a claim writes becomes a label, so a tenant cannot grow
//! the series count.

use std::sync::OnceLock;
use std::time::Duration;

use std::fmt::Write as _;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// How a call ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Outcome {
    /// It succeeded.
    Ok,
    /// It failed (the caller was told why).
    Error,
}

impl Outcome {
    /// `Ok` when `ok`.
    pub fn of(ok: bool) -> Self {
        if ok { Outcome::Ok } else { Outcome::Error }
    }
}

/// A kubelet DRA call.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum DraMethod {
    /// `NodePrepareResources`.
    Prepare,
    /// `NodeUnprepareResources`.
    Unprepare,
}

/// How a device reaches a pod ([`crate::backend::Backend`]).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum BackendKind {
    /// The NIC itself moves into the pod.
    Move,
    /// A CNI network runs on the NIC.
    Cni,
}

/// Why an attach or a give-back ended as it did.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum AttachResult {
    /// Done.
    Ok,
    /// Failed and fully undone.
    RolledBack,
    /// Failed and the undo failed too: the record is retried.
    Stuck,
    /// Failed (a give-back): the record is retried.
    Failed,
}

/// Label values are lower-case words, as Prometheus users expect.
macro_rules! label_values {
    ($ty:ident { $($variant:ident => $text:literal),* $(,)? }) => {
        impl EncodeLabelValue for $ty {
            fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
                encoder.write_str(match self { $($ty::$variant => $text),* })
            }
        }
    };
}

label_values!(Outcome { Ok => "ok", Error => "error" });
label_values!(DraMethod { Prepare => "prepare", Unprepare => "unprepare" });
label_values!(BackendKind { Move => "move", Cni => "cni" });
label_values!(AttachResult { Ok => "ok", RolledBack => "rolled_back", Stuck => "stuck", Failed => "failed" });

/// Labels of the per-claim DRA call counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClaimLabels {
    /// The call.
    pub method: DraMethod,
    /// Per claim: prepared (or unprepared) or refused with an error.
    pub outcome: Outcome,
}

/// Labels of the DRA call latency.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    /// The call.
    pub method: DraMethod,
}

/// Labels of the NRI hook latency.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HookLabels {
    /// `RunPodSandbox`, `StopPodSandbox`, `RemovePodSandbox`, `Synchronize`.
    pub event: String,
    /// What the runtime was told.
    pub outcome: Outcome,
}

/// Labels of the attach and give-back counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AttachLabels {
    /// Moved NIC or CNI network.
    pub backend: BackendKind,
    /// How it ended.
    pub result: AttachResult,
}

/// Labels of the CNI plugin counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CniLabels {
    /// The plugin's `type` (an admin-allowed executable name).
    pub plugin: String,
    /// `ADD`, `DEL`, `CHECK`, `STATUS`, `GC`, `VERSION`.
    pub command: String,
    /// Exit 0, or anything else (error, timeout, spawn failure).
    pub outcome: Outcome,
}

/// Labels of the CNI plugin latency.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CniCommandLabels {
    /// The plugin's `type`.
    pub plugin: String,
    /// The CNI command.
    pub command: String,
}

/// Labels of the status writers' series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriterLabels {
    /// `claim-status` or `network-status`.
    pub writer: String,
}

/// Every series netclaim exports.
pub struct Metrics {
    registry: Registry,
    /// Claims per DRA call and outcome.
    pub dra_claims: Family<ClaimLabels, Counter>,
    /// DRA call latency (a whole batch).
    pub dra_duration: Family<MethodLabels, Histogram>,
    /// NRI hook latency: what every pod queued behind netclaim in the runtime pays.
    pub nri_hook_duration: Family<HookLabels, Histogram>,
    /// 1 while the NRI plugin is registered with the runtime (and prepare accepts claims).
    pub nri_connected: Gauge,
    /// Registrations with the runtime (the first one and every reconnect).
    pub nri_registrations: Counter,
    /// Attaches per backend and result.
    pub attaches: Family<AttachLabels, Counter>,
    /// Give-backs (detaches and rollbacks) per backend and result.
    pub give_backs: Family<AttachLabels, Counter>,
    /// Devices attached late at a Synchronize (their RUN never reached netclaim).
    pub late_attaches: Counter,
    /// Devices this node publishes.
    pub published_devices: Gauge,
    /// Publisher passes that brought the slices in line with the device list.
    pub slice_syncs: Counter,
    /// Publisher passes that failed (API rejection or transport error); retried.
    pub slice_errors: Counter,
    /// Objects a status writer still has to write.
    pub writer_pending: Family<WriterLabels, Gauge>,
    /// Status writes that failed and were retried.
    pub writer_retries: Family<WriterLabels, Counter>,
    /// CNI plugin runs.
    pub cni_runs: Family<CniLabels, Counter>,
    /// CNI plugin run latency.
    pub cni_duration: Family<CniCommandLabels, Histogram>,
    /// Devices whose health changed (healthy to unhealthy or back).
    pub health_changes: Counter,
    /// Taints added to or removed from published devices.
    pub taint_changes: Counter,
}

/// Buckets from 100 µs to ~13 s: a hook is ~1 ms, a CNI ADD tens of ms, a timeout seconds.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("netclaim");
        let m = Metrics {
            dra_claims: Family::default(),
            dra_duration: Family::new_with_constructor(latency_histogram),
            nri_hook_duration: Family::new_with_constructor(latency_histogram),
            nri_connected: Gauge::default(),
            nri_registrations: Counter::default(),
            attaches: Family::default(),
            give_backs: Family::default(),
            late_attaches: Counter::default(),
            published_devices: Gauge::default(),
            slice_syncs: Counter::default(),
            slice_errors: Counter::default(),
            writer_pending: Family::default(),
            writer_retries: Family::default(),
            cni_runs: Family::default(),
            cni_duration: Family::new_with_constructor(latency_histogram),
            health_changes: Counter::default(),
            taint_changes: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "dra_claims",
            "Claims in kubelet DRA calls, by method and per-claim outcome",
            m.dra_claims.clone(),
        );
        registry.register(
            "dra_call_duration_seconds",
            "Latency of kubelet DRA calls (one batch of claims)",
            m.dra_duration.clone(),
        );
        registry.register(
            "nri_hook_duration_seconds",
            "Time netclaim took to answer an NRI event, by event and outcome",
            m.nri_hook_duration.clone(),
        );
        registry.register(
            "nri_connected",
            "1 while the NRI plugin is registered with the container runtime",
            m.nri_connected.clone(),
        );
        registry.register(
            "nri_registrations",
            "Registrations with the container runtime (the first and every reconnect)",
            m.nri_registrations.clone(),
        );
        registry.register(
            "attaches",
            "Device attaches by backend and result",
            m.attaches.clone(),
        );
        registry.register(
            "give_backs",
            "Devices given back to the host (detach or rollback) by backend and result",
            m.give_backs.clone(),
        );
        registry.register(
            "late_attaches",
            "Devices attached at a Synchronize because their RunPodSandbox never reached netclaim",
            m.late_attaches.clone(),
        );
        registry.register(
            "published_devices",
            "Devices this node publishes in its ResourceSlices",
            m.published_devices.clone(),
        );
        registry.register(
            "slice_syncs",
            "ResourceSlice publisher passes that brought the slices in line",
            m.slice_syncs.clone(),
        );
        registry.register(
            "slice_errors",
            "ResourceSlice publisher passes that failed (rejected or unreachable); retried",
            m.slice_errors.clone(),
        );
        registry.register(
            "status_writer_pending",
            "Objects a status writer still has to write to the API",
            m.writer_pending.clone(),
        );
        registry.register(
            "status_writer_retries",
            "Status writes that failed and are retried",
            m.writer_retries.clone(),
        );
        registry.register(
            "cni_plugin_runs",
            "CNI plugin executions by plugin type, command and outcome",
            m.cni_runs.clone(),
        );
        registry.register(
            "cni_plugin_duration_seconds",
            "CNI plugin execution time by plugin type and command",
            m.cni_duration.clone(),
        );
        registry.register(
            "device_health_changes",
            "Devices whose health changed (lost link, vanished, or recovered)",
            m.health_changes.clone(),
        );
        registry.register(
            "device_taint_changes",
            "Taints added to or removed from published devices",
            m.taint_changes.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The registry in the Prometheus text format (OpenMetrics 1.0).
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::error!("encoding metrics: {error}");
        }
        text
    }

    /// Records one NRI hook's answer.
    pub fn observe_hook(&self, event: &str, ok: bool, took: Duration) {
        self.nri_hook_duration
            .get_or_create(&HookLabels {
                event: event.to_owned(),
                outcome: Outcome::of(ok),
            })
            .observe(took.as_secs_f64());
    }

    /// Records one CNI plugin run.
    pub fn observe_cni(&self, plugin: &str, command: &str, ok: bool, took: Duration) {
        self.cni_runs
            .get_or_create(&CniLabels {
                plugin: plugin.to_owned(),
                command: command.to_owned(),
                outcome: Outcome::of(ok),
            })
            .inc();
        self.cni_duration
            .get_or_create(&CniCommandLabels {
                plugin: plugin.to_owned(),
                command: command.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    /// Records an attach.
    pub fn attach(&self, backend: BackendKind, result: AttachResult) {
        self.attaches
            .get_or_create(&AttachLabels { backend, result })
            .inc();
    }

    /// Records a give-back.
    pub fn give_back(&self, backend: BackendKind, result: AttachResult) {
        self.give_backs
            .get_or_create(&AttachLabels { backend, result })
            .inc();
    }

    /// Records a DRA call: its claims' outcomes and its latency.
    pub fn dra_call(&self, method: DraMethod, ok: usize, failed: usize, took: Duration) {
        let ok = u64::try_from(ok).unwrap_or(u64::MAX);
        let failed = u64::try_from(failed).unwrap_or(u64::MAX);
        self.dra_claims
            .get_or_create(&ClaimLabels {
                method,
                outcome: Outcome::Ok,
            })
            .inc_by(ok);
        self.dra_claims
            .get_or_create(&ClaimLabels {
                method,
                outcome: Outcome::Error,
            })
            .inc_by(failed);
        self.dra_duration
            .get_or_create(&MethodLabels { method })
            .observe(took.as_secs_f64());
    }

    /// Sets a status writer's backlog.
    pub fn writer_backlog(&self, writer: &str, pending: usize) {
        self.writer_pending
            .get_or_create(&WriterLabels {
                writer: writer.to_owned(),
            })
            .set(i64::try_from(pending).unwrap_or(i64::MAX));
    }

    /// Counts a status write that will be retried.
    pub fn writer_retry(&self, writer: &str) {
        self.writer_retries
            .get_or_create(&WriterLabels {
                writer: writer.to_owned(),
            })
            .inc();
    }
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_exported_with_its_prefix_and_labels() {
        let m = Metrics::new();
        m.observe_hook("RunPodSandbox", true, Duration::from_millis(3));
        m.observe_cni("macvlan", "ADD", false, Duration::from_millis(20));
        m.attach(BackendKind::Cni, AttachResult::RolledBack);
        m.dra_call(DraMethod::Prepare, 2, 1, Duration::from_millis(1));
        m.writer_backlog("claim-status", 3);
        let text = m.encode();
        for line in [
            "netclaim_nri_hook_duration_seconds_count{event=\"RunPodSandbox\",outcome=\"ok\"} 1",
            "netclaim_cni_plugin_runs_total{plugin=\"macvlan\",command=\"ADD\",outcome=\"error\"} 1",
            "netclaim_attaches_total{backend=\"cni\",result=\"rolled_back\"} 1",
            "netclaim_dra_claims_total{method=\"prepare\",outcome=\"ok\"} 2",
            "netclaim_dra_claims_total{method=\"prepare\",outcome=\"error\"} 1",
            "netclaim_status_writer_pending{writer=\"claim-status\"} 3",
            "netclaim_nri_connected 0",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
