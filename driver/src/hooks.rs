//! The pod lifecycle hooks: where `RunPodSandbox`, `StopPodSandbox`, `RemovePodSandbox` and
//! `Synchronize` land after [`crate::nri::plugin`] decoded them.
//!
//! Only fast work happens here: everything that can fail slowly (fetching the claim,
//! parsing and validating its config, resolving devices) was done in
//! [`crate::prepare`]. A hook reads the prepared claims of its pod from the checkpoint and
//! moves NICs with [`crate::attach`].
//!
//! CNI mode: a NIC whose prepared claim carries a CNI network ([`PreparedNic::cni`]) is not
//! moved. RUN runs the network's plugins with [`CniRunner::add`] in the pod's namespace
//! (container id = sandbox id, `CNI_IFNAME` = the pod interface name, `CNI_ARGS` with the
//! pod's namespace, name, UID and sandbox id); STOP, REMOVE, unprepare and reconcile run
//! [`CniRunner::del`] (from the runner's cache, so after a restart DEL uses exactly what
//! ADD used). The master NIC stays on the host and is not held, so several pods may use one
//! parent. Such an attachment's [`Attachment::host`] holds only the parent's name (no
//! snapshot is taken: nothing on the host is changed by netclaim itself).
//!
//! Every step is persisted before it is taken ([`AttachPhase`]), so a crash at any point is
//! resolved by the next `Synchronize`: an attachment of a live sandbox is completed, any
//! other attachment is given back to the host. Only the first record (`Attaching`) is
//! fsynced; the later ones need only outlive the process, not the machine (see
//! [`crate::checkpoint::Durability`]).

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use netclaim_api::cni::CniNetworkList;

use crate::attach::{self, AttachOutcome};
use crate::cni::{self, CniRunner, PodRef};
use crate::netlink::NetHandle;
use crate::network_status::{self, NetworkStatusWriter};
use crate::nri::plugin::{PodSandboxHandler, network_namespace_path};
use crate::nri::proto::PodSandbox;
use crate::prepare::{Detacher, PreparedClaims};
use crate::state::{AttachPhase, Attachment, LinkSnapshot, PreparedClaim, PreparedNic};
use crate::status::{
    ClaimReport, ClaimStatusWriter, DeviceReport, DeviceState, FailureReason, NetworkData,
};

/// Keeps a device published while it is inside a pod (its host interface is gone from the
/// host's view). Discovery's inventory implements it.
pub trait DeviceHolds: Send + Sync + 'static {
    /// The device is leaving the host: keep publishing its last attributes.
    fn hold(&self, device: &str);
    /// The device is back on the host (or gone for good).
    fn release(&self, device: &str);
}

/// A [`DeviceHolds`] that does nothing, for tests and tools without discovery.
#[derive(Debug, Default)]
pub struct NoHolds;

impl DeviceHolds for NoHolds {
    fn hold(&self, _device: &str) {}
    fn release(&self, _device: &str) {}
}

/// The alias that tags a claimed interface wherever it is (host, pod, or back in the
/// initial namespace after its pod's namespace died).
pub fn interface_tag(claim_uid: &str, device: &str) -> String {
    format!("netclaim/{claim_uid}/{device}")
}

/// netclaim's NRI handler: attaches prepared NICs to pods and gives them back.
pub struct PodNetworkHooks {
    claims: PreparedClaims,
    host: NetHandle,
    status: Option<ClaimStatusWriter>,
    holds: Box<dyn DeviceHolds>,
    /// Network namespace paths by sandbox id, from RUN and Synchronize (STOP has none).
    netns_by_sandbox: Mutex<HashMap<String, String>>,
    /// An open file on the network namespace of every sandbox holding an attached NIC.
    /// The kernel keeps a namespace alive while a file refers to it, so when the runtime
    /// drops a pod's namespace without telling the plugin (containerd 1.7 sends no STOP or
    /// REMOVE for pods that ran before it restarted), the NIC is neither destroyed with it
    /// (veth, macvlan) nor thrown into the initial namespace (physical NICs): the detach
    /// that follows (unprepare, Synchronize) still finds it in the pod's namespace.
    held_netns: Mutex<HashMap<String, File>>,
    /// Serializes every move of an interface: hooks of different pods and unprepare's
    /// detach never interleave their netlink steps on the same device.
    moves: tokio::sync::Mutex<()>,
    /// A named point where the process aborts, for crash-recovery tests (`--crash-at`).
    crash_at: Option<CrashPoint>,
    /// Runs CNI plugins for CNI-mode NICs; `None`: such NICs fail to attach.
    cni: Option<CniRunner>,
    /// Keeps the pods' `k8s.v1.cni.cncf.io/network-status` annotation up to date.
    network_status: Option<NetworkStatusWriter>,
}

/// Points in an attach where `--crash-at` makes the daemon abort, as a SIGKILL would: no
/// destructor, no flush. Recovery tests use them to hit the windows a random kill rarely
/// hits. Never set in production.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CrashPoint {
    /// The attachment (with the host snapshot) is in the checkpoint; nothing moved yet.
    AttachRecorded,
    /// The interface is configured in the pod; the checkpoint still says `Attaching`.
    AttachMoved,
}

/// One NIC to attach, with what identifies it.
struct Target<'a> {
    claim: &'a PreparedClaim,
    nic: &'a PreparedNic,
}

/// What one NIC's attach gave the pod.
struct AttachedNic {
    /// What the attach reported.
    outcome: AttachOutcome,
    /// CNI mode: the ADD result as the plugins returned it.
    cni_result: Option<serde_json::Value>,
}

impl Target<'_> {
    fn tag(&self) -> String {
        interface_tag(&self.claim.uid, &self.nic.device)
    }

    fn describe(&self) -> String {
        format!(
            "claim {}/{} device {} ({})",
            self.claim.namespace, self.claim.name, self.nic.device, self.nic.host_if_name
        )
    }
}

impl PodNetworkHooks {
    /// Hooks acting in the host namespace `host`, on the claims prepared in `claims`,
    /// reporting claim status through `status` when given.
    pub fn new(
        claims: PreparedClaims,
        host: NetHandle,
        status: Option<ClaimStatusWriter>,
        holds: Box<dyn DeviceHolds>,
    ) -> Self {
        Self {
            claims,
            host,
            status,
            holds,
            netns_by_sandbox: Mutex::new(HashMap::new()),
            held_netns: Mutex::new(HashMap::new()),
            moves: tokio::sync::Mutex::new(()),
            crash_at: None,
            cni: None,
            network_status: None,
        }
    }

    /// Writes the pods' network-status annotation with `writer`.
    pub fn with_network_status(mut self, writer: NetworkStatusWriter) -> Self {
        self.network_status = Some(writer);
        self
    }

    /// Runs the CNI networks of CNI-mode claims with `runner`.
    pub fn with_cni(mut self, runner: CniRunner) -> Self {
        self.cni = Some(runner);
        self
    }

    /// Aborts the process at `point` (crash-recovery tests only).
    pub fn with_crash_point(mut self, point: Option<CrashPoint>) -> Self {
        self.crash_at = point;
        self
    }

    fn crash_point(&self, point: CrashPoint) {
        if self.crash_at == Some(point) {
            tracing::error!(?point, "crash point reached: aborting");
            std::process::abort();
        }
    }

    fn remember_netns(&self, sandbox_id: &str, netns: &str) {
        if let Ok(mut map) = self.netns_by_sandbox.lock() {
            map.insert(sandbox_id.to_owned(), netns.to_owned());
        }
    }

    fn forget_netns(&self, sandbox_id: &str) {
        if let Ok(mut map) = self.netns_by_sandbox.lock() {
            map.remove(sandbox_id);
        }
    }

    fn remembered_netns(&self, sandbox_id: &str) -> Option<String> {
        self.netns_by_sandbox.lock().ok()?.get(sandbox_id).cloned()
    }

    /// Keeps the namespace at `netns` alive while `sandbox_id` holds attached NICs.
    fn hold_netns(&self, sandbox_id: &str, netns: &str) {
        let Ok(mut held) = self.held_netns.lock() else {
            return;
        };
        if held.contains_key(sandbox_id) {
            return;
        }
        match File::open(netns) {
            Ok(file) => {
                held.insert(sandbox_id.to_owned(), file);
            }
            Err(e) => tracing::warn!(sandbox_id, netns, "cannot hold the pod's netns open: {e}"),
        }
    }

    /// Lets the namespace of `sandbox_id` go once none of its NICs is attached any more.
    fn release_netns_if_unused(&self, sandbox_id: &str) {
        let in_use = self.claims.all().iter().any(|claim| {
            claim.nics.iter().any(|nic| {
                nic.attachment
                    .as_ref()
                    .is_some_and(|a| a.sandbox_id == sandbox_id)
            })
        });
        if !in_use && let Ok(mut held) = self.held_netns.lock() {
            held.remove(sandbox_id);
        }
    }

    /// Where to find the pod's namespace for a detach: the held namespace (valid even after
    /// the runtime removed the path), else the path from RUN or Synchronize, else the
    /// checkpoint's. The returned file, if any, must outlive the use of the path.
    fn netns_for_detach(&self, attachment: &Attachment) -> (PathBuf, Option<File>) {
        let held = self.held_netns.lock().ok().and_then(|held| {
            held.get(&attachment.sandbox_id)
                .and_then(|f| f.try_clone().ok())
        });
        if let Some(file) = held {
            return (
                PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd())),
                Some(file),
            );
        }
        let path = self
            .remembered_netns(&attachment.sandbox_id)
            .unwrap_or_else(|| attachment.netns_path.clone());
        (PathBuf::from(path), None)
    }

    fn report(&self, report: ClaimReport) {
        if let Some(status) = &self.status {
            status.report(report);
        }
    }

    /// Attaches every NIC prepared for `pod`; on any failure gives back those it attached.
    async fn attach_pod(&self, pod: &PodSandbox, netns: &str) -> Result<(), String> {
        let claims = self.claims.claims_for_pod(&pod.uid);
        let pod_ref = PodRef {
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            uid: pod.uid.clone(),
        };
        let _moves = self.moves.lock().await;
        let mut attached: Vec<(Target<'_>, AttachedNic)> = Vec::new();
        for claim in &claims {
            for nic in &claim.nics {
                let target = Target { claim, nic };
                match self.attach_one(&target, &pod.id, netns, &pod_ref).await {
                    Ok(outcome) => attached.push((target, outcome)),
                    Err(message) => {
                        let error = format!("netclaim: {}: {message}", target.describe());
                        self.roll_back(&attached, &pod.id, netns).await;
                        self.report_failure(&claims, &target, &error);
                        return Err(error);
                    }
                }
            }
        }
        if !attached.is_empty() {
            self.hold_netns(&pod.id, netns);
        }
        self.report_ready(&claims, &attached);
        self.publish_network_status(&pod_ref, &attached);
        Ok(())
    }

    /// Sets the pod's network-status entries of the NICs in `attached`.
    fn publish_network_status(&self, pod: &PodRef, attached: &[(Target<'_>, AttachedNic)]) {
        let Some(writer) = &self.network_status else {
            return;
        };
        let entries = attached
            .iter()
            .map(|(target, nic)| {
                network_status::entry_for(
                    target.claim,
                    target.nic,
                    &nic.outcome,
                    nic.cni_result.as_ref(),
                )
            })
            .collect();
        writer.publish(pod, entries);
    }

    /// Drops the pod's network-status entry of the interface `attachment` put there.
    fn withdraw_network_status(&self, attachment: &Attachment) {
        if let (Some(writer), Some(pod)) = (&self.network_status, &attachment.pod) {
            writer.withdraw(pod, &[attachment.pod_if_name.as_str()]);
        }
    }

    /// One NIC: record the host snapshot, move and configure, record success (CNI mode:
    /// [`Self::attach_cni`]).
    async fn attach_one(
        &self,
        target: &Target<'_>,
        sandbox_id: &str,
        netns: &str,
        pod: &PodRef,
    ) -> Result<AttachedNic, String> {
        if let Some(network) = &target.nic.cni {
            return self
                .attach_cni(target, sandbox_id, netns, pod, network)
                .await;
        }
        let snapshot = match &target.nic.attachment {
            Some(existing) if existing.sandbox_id != sandbox_id => {
                return Err(format!(
                    "the device is attached to another pod sandbox ({})",
                    existing.sandbox_id
                ));
            }
            // A retried RUN (or one resumed after a crash): the host state was recorded.
            Some(existing) => existing.host.clone(),
            None => self
                .host
                .snapshot(&target.nic.host_if_name)
                .await
                .map_err(|e| format!("the device is no longer on the host: {e}"))?,
        };
        let pod_if_name = target
            .nic
            .config
            .name
            .clone()
            .unwrap_or_else(|| target.nic.host_if_name.clone());
        let mut attachment = Attachment {
            sandbox_id: sandbox_id.to_owned(),
            netns_path: netns.to_owned(),
            host: snapshot.clone(),
            pod_if_name,
            phase: AttachPhase::Attaching,
            pod: Some(pod.clone()),
        };
        self.record(target, Some(attachment.clone()))?;
        self.crash_point(CrashPoint::AttachRecorded);
        self.holds.hold(&target.nic.device);
        let result = attach::attach_with_snapshot(
            &self.host,
            &target.nic.host_if_name,
            Some(&snapshot),
            Path::new(netns),
            &target.tag(),
            &target.nic.config,
        )
        .await;
        match result {
            Ok(outcome) => {
                self.crash_point(CrashPoint::AttachMoved);
                attachment.phase = AttachPhase::Attached;
                // The outcome's snapshot adds what attach read on the way (ethtool state).
                attachment.host = outcome.host.clone();
                self.record(target, Some(attachment))?;
                Ok(AttachedNic {
                    outcome,
                    cni_result: None,
                })
            }
            Err(error) => {
                // attach rolled the interface back to the snapshot before returning.
                self.holds.release(&target.nic.device);
                self.record(target, None)?;
                Err(error.to_string())
            }
        }
    }

    /// CNI mode: record the attachment, run ADD in the pod's namespace, record success.
    /// A retried or resumed RUN first runs DEL (idempotent) so ADD starts clean.
    async fn attach_cni(
        &self,
        target: &Target<'_>,
        sandbox_id: &str,
        netns: &str,
        pod: &PodRef,
        network: &serde_json::Value,
    ) -> Result<AttachedNic, String> {
        if let Some(existing) = &target.nic.attachment
            && existing.sandbox_id != sandbox_id
        {
            return Err(format!(
                "the device is attached to another pod sandbox ({})",
                existing.sandbox_id
            ));
        }
        let runner = self.cni_runner()?;
        let list = cni_list(network)?;
        // CNI 1.1: plugins that say their network is not ready get no ADD. Lists older
        // than 1.1.0, and plugins that do not speak 1.1.0, run nothing here.
        runner
            .status(&list)
            .await
            .map_err(|e| format!("CNI network {} is not ready (STATUS): {e}", list.name))?;
        let pod_if_name = target
            .nic
            .config
            .name
            .clone()
            .unwrap_or_else(|| target.nic.host_if_name.clone());
        let cni_attachment = cni::Attachment {
            container_id: sandbox_id.to_owned(),
            netns: PathBuf::from(netns),
            ifname: pod_if_name.clone(),
            pod: pod.clone(),
        };
        if target.nic.attachment.is_some()
            && let Err(e) = runner.del(&list, &cni_attachment).await
        {
            tracing::warn!(target = %target.describe(), "CNI DEL before a repeated ADD: {e}");
        }
        let mut attachment = Attachment {
            sandbox_id: sandbox_id.to_owned(),
            netns_path: netns.to_owned(),
            host: LinkSnapshot {
                if_name: target.nic.host_if_name.clone(),
                ..LinkSnapshot::default()
            },
            pod_if_name: pod_if_name.clone(),
            phase: AttachPhase::Attaching,
            pod: Some(pod.clone()),
        };
        self.record(target, Some(attachment.clone()))?;
        self.crash_point(CrashPoint::AttachRecorded);
        match runner.add_with_raw(&list, &cni_attachment).await {
            Ok((result, raw_result)) => {
                self.crash_point(CrashPoint::AttachMoved);
                attachment.phase = AttachPhase::Attached;
                self.record(target, Some(attachment.clone()))?;
                let data = cni::network_data(&result, &pod_if_name);
                let outcome = AttachOutcome {
                    host: attachment.host,
                    pod_if_name,
                    ips: data
                        .as_ref()
                        .map(|d| d.ips.iter().map(ToString::to_string).collect())
                        .unwrap_or_default(),
                    mac: data.and_then(|d| d.hardware_address),
                    reapplied: false,
                };
                Ok(AttachedNic {
                    outcome,
                    cni_result: Some(raw_result),
                })
            }
            Err(error) => {
                // ADD undid what it did before returning.
                self.record(target, None)?;
                Err(format!("CNI network {}: {error}", list.name))
            }
        }
    }

    fn cni_runner(&self) -> Result<&CniRunner, String> {
        self.cni
            .as_ref()
            .ok_or_else(|| "CNI mode is not enabled in this netclaim daemon".to_owned())
    }

    /// CNI mode: DEL of the network of `nic` for the attachment `(sandbox_id, ifname)` in
    /// the namespace at `netns` (the pod's details come from the cache entry of the ADD).
    async fn cni_del(
        &self,
        network: &serde_json::Value,
        sandbox_id: &str,
        netns: &Path,
        ifname: &str,
    ) -> Result<(), String> {
        let runner = self.cni_runner()?;
        let list = cni_list(network)?;
        let cni_attachment =
            runner.attachment_as_added(&list.name, sandbox_id, visible_to_children(netns), ifname);
        runner
            .del(&list, &cni_attachment)
            .await
            .map_err(|e| format!("CNI network {}: {e}", list.name))
    }

    fn record(&self, target: &Target<'_>, attachment: Option<Attachment>) -> Result<(), String> {
        self.claims
            .set_nic_attachment(
                &target.claim.uid,
                &target.nic.device,
                target.nic.share_id.as_deref(),
                attachment,
            )
            .map_err(|e| format!("recording the attachment: {e}"))
    }

    /// Gives back NICs this RUN attached before a later one failed.
    async fn roll_back(
        &self,
        attached: &[(Target<'_>, AttachedNic)],
        sandbox_id: &str,
        netns: &str,
    ) {
        for (target, AttachedNic { outcome, .. }) in attached.iter().rev() {
            let result = match &target.nic.cni {
                Some(network) => {
                    self.cni_del(network, sandbox_id, Path::new(netns), &outcome.pod_if_name)
                        .await
                }
                None => attach::detach(&self.host, Path::new(netns), &target.tag(), &outcome.host)
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string()),
            };
            match result {
                Ok(()) => {
                    self.holds.release(&target.nic.device);
                    if let Err(e) = self.record(target, None) {
                        tracing::error!(device = %target.nic.device, "{e}");
                    }
                }
                // The attachment stays recorded: Synchronize or STOP retries the detach.
                Err(e) => tracing::error!(target = %target.describe(), "rollback failed: {e}"),
            }
        }
    }

    /// Gives back every NIC attached to `sandbox_id`. Idempotent.
    async fn detach_sandbox(&self, sandbox_id: &str) -> Result<(), String> {
        let _moves = self.moves.lock().await;
        let mut errors = Vec::new();
        for claim in self.claims.all() {
            for nic in &claim.nics {
                let Some(attachment) = &nic.attachment else {
                    continue;
                };
                if attachment.sandbox_id != sandbox_id {
                    continue;
                }
                if let Err(e) = self.detach_one(&claim, nic, attachment).await {
                    errors.push(e);
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(format!("netclaim: {}", errors.join("; ")))
        }
    }

    async fn detach_one(
        &self,
        claim: &PreparedClaim,
        nic: &PreparedNic,
        attachment: &Attachment,
    ) -> Result<(), String> {
        let target = Target { claim, nic };
        let detaching = Attachment {
            phase: AttachPhase::Detaching,
            ..attachment.clone()
        };
        self.record(&target, Some(detaching))?;
        let (netns, _held) = self.netns_for_detach(attachment);
        if let Some(network) = &nic.cni {
            self.cni_del(
                network,
                &attachment.sandbox_id,
                &netns,
                &attachment.pod_if_name,
            )
            .await
            .map_err(|e| format!("{}: {e}", target.describe()))?;
            let recorded = self.record(&target, None);
            self.release_netns_if_unused(&attachment.sandbox_id);
            self.withdraw_network_status(attachment);
            return recorded;
        }
        match attach::detach(&self.host, &netns, &target.tag(), &attachment.host).await {
            Ok(outcome) => {
                if let Some(note) = outcome.note {
                    tracing::info!(target = %target.describe(), "{note}");
                }
                self.holds.release(&nic.device);
                let recorded = self.record(&target, None);
                self.release_netns_if_unused(&attachment.sandbox_id);
                self.withdraw_network_status(attachment);
                recorded
            }
            Err(e) => Err(format!(
                "{}: giving the interface back: {e}",
                target.describe()
            )),
        }
    }

    /// Brings the checkpoint in line with the live sandboxes: attachments of live sandboxes
    /// are completed, all others given back.
    async fn reconcile(&self, live: &HashMap<String, (String, PodRef)>) {
        for claim in self.claims.all() {
            for nic in &claim.nics {
                let Some(attachment) = &nic.attachment else {
                    continue;
                };
                let outcome = match (live.get(&attachment.sandbox_id), attachment.phase) {
                    (Some((netns, _)), AttachPhase::Attached) => {
                        self.hold_netns(&attachment.sandbox_id, netns);
                        Ok(())
                    }
                    (Some((netns, pod)), AttachPhase::Attaching) => {
                        let _moves = self.moves.lock().await;
                        let target = Target { claim: &claim, nic };
                        self.attach_one(&target, &attachment.sandbox_id, netns, pod)
                            .await
                            .map(|attached| {
                                self.hold_netns(&attachment.sandbox_id, netns);
                                self.publish_network_status(pod, &[(target, attached)]);
                            })
                    }
                    (Some(_), AttachPhase::Detaching) | (None, _) => {
                        let _moves = self.moves.lock().await;
                        self.detach_one(&claim, nic, attachment).await
                    }
                };
                if let Err(e) = outcome {
                    tracing::error!(claim = %claim.uid, device = %nic.device, "reconcile: {e}");
                }
            }
        }
    }

    /// CNI GC (spec 1.1) after Synchronize: each CNI network in the checkpoint is told
    /// which of its attachments are still valid, so its plugins can release what an
    /// attachment the driver lost track of left behind (IPAM leases, host-side state), and
    /// the network's stale cache entries go. Plugins that do not speak 1.1.0 are skipped.
    async fn collect_cni_garbage(&self) {
        let Ok(runner) = self.cni_runner() else {
            return;
        };
        // Keyed by network name: plugins keep their state per network name, so the valid
        // attachments are those of every claim using that name.
        let mut networks: BTreeMap<String, (CniNetworkList, Vec<(String, String)>)> =
            BTreeMap::new();
        for claim in self.claims.all() {
            for nic in &claim.nics {
                let Some(Ok(list)) = nic.cni.as_ref().map(cni_list) else {
                    continue;
                };
                let (_, valid) = networks
                    .entry(list.name.clone())
                    .or_insert_with(|| (list, Vec::new()));
                if let Some(attachment) = &nic.attachment {
                    valid.push((
                        attachment.sandbox_id.clone(),
                        attachment.pod_if_name.clone(),
                    ));
                }
            }
        }
        for (name, (list, valid)) in networks {
            match runner.gc(&list, &valid).await {
                Ok(report) => tracing::debug!(network = %name, ran = ?report.ran, "CNI GC"),
                Err(e) => tracing::warn!(network = %name, "CNI GC: {e}"),
            }
        }
    }

    fn report_ready(&self, claims: &[PreparedClaim], attached: &[(Target<'_>, AttachedNic)]) {
        for claim in claims {
            let devices = attached
                .iter()
                .filter(|(t, _)| t.claim.uid == claim.uid)
                .map(
                    |(
                        t,
                        AttachedNic {
                            outcome,
                            cni_result,
                        },
                    )| DeviceReport {
                        pool: t.nic.pool.clone(),
                        device: t.nic.device.clone(),
                        share_id: t.nic.share_id.clone(),
                        state: DeviceState::Ready(NetworkData {
                            interface_name: outcome.pod_if_name.clone(),
                            ips: outcome
                                .ips
                                .iter()
                                .filter_map(|ip| ip.parse().ok())
                                .collect(),
                            hardware_address: outcome.mac.clone(),
                        }),
                        cni_result: cni_result.clone(),
                    },
                )
                .collect();
            self.report(claim_report(claim, devices));
        }
    }

    fn report_failure(&self, claims: &[PreparedClaim], failed: &Target<'_>, error: &str) {
        for claim in claims {
            let devices = claim
                .nics
                .iter()
                .map(|nic| DeviceReport {
                    pool: nic.pool.clone(),
                    device: nic.device.clone(),
                    share_id: nic.share_id.clone(),
                    state: DeviceState::Failed {
                        reason: FailureReason::AttachFailed,
                        message: if claim.uid == failed.claim.uid
                            && nic.device == failed.nic.device
                            && nic.share_id == failed.nic.share_id
                        {
                            error.to_owned()
                        } else {
                            format!("not attached: another device of the pod failed: {error}")
                        },
                    },
                    cni_result: None,
                })
                .collect();
            self.report(claim_report(claim, devices));
        }
    }
}

/// The CNI network list stored in a prepared NIC.
fn cni_list(network: &serde_json::Value) -> Result<netclaim_api::cni::CniNetworkList, String> {
    let raw = serde_json::to_vec(network).map_err(|e| format!("the stored CNI network: {e}"))?;
    netclaim_api::cni::CniNetworkList::parse(&raw)
        .map_err(|e| format!("the stored CNI network is invalid: {e}"))
}

/// A namespace path a plugin process can open: `/proc/self/fd/N` (a namespace this process
/// holds open, its descriptor not inherited) becomes `/proc/<our pid>/fd/N`.
fn visible_to_children(netns: &Path) -> PathBuf {
    match netns.strip_prefix("/proc/self") {
        Ok(rest) => Path::new("/proc")
            .join(std::process::id().to_string())
            .join(rest),
        Err(_) => netns.to_path_buf(),
    }
}

fn claim_report(claim: &PreparedClaim, devices: Vec<DeviceReport>) -> ClaimReport {
    ClaimReport {
        namespace: claim.namespace.clone(),
        name: claim.name.clone(),
        uid: claim.uid.clone(),
        devices,
    }
}

impl PodSandboxHandler for PodNetworkHooks {
    async fn synchronize(&self, pods: Vec<PodSandbox>) {
        let mut live = HashMap::new();
        for pod in &pods {
            if let Some(netns) = network_namespace_path(pod) {
                self.remember_netns(&pod.id, netns);
                let pod_ref = PodRef {
                    namespace: pod.namespace.clone(),
                    name: pod.name.clone(),
                    uid: pod.uid.clone(),
                };
                live.insert(pod.id.clone(), (netns.to_owned(), pod_ref));
            }
        }
        self.reconcile(&live).await;
        self.collect_cni_garbage().await;
    }

    async fn run_pod_sandbox(&self, pod: PodSandbox) -> Result<(), String> {
        let Some(netns) = network_namespace_path(&pod).map(str::to_owned) else {
            return self.refuse_host_network(&pod);
        };
        self.remember_netns(&pod.id, &netns);
        self.attach_pod(&pod, &netns).await
    }

    async fn stop_pod_sandbox(&self, pod: PodSandbox) -> Result<(), String> {
        self.detach_sandbox(&pod.id).await
    }

    async fn remove_pod_sandbox(&self, pod: PodSandbox) -> Result<(), String> {
        let result = self.detach_sandbox(&pod.id).await;
        if result.is_ok() {
            self.forget_netns(&pod.id);
        }
        result
    }
}

impl PodNetworkHooks {
    /// A pod without its own network namespace shares the host's: a NIC cannot be moved
    /// "into" it, so a claim for it is an error the user must see.
    fn refuse_host_network(&self, pod: &PodSandbox) -> Result<(), String> {
        let claims = self.claims.claims_for_pod(&pod.uid);
        if claims.is_empty() {
            return Ok(());
        }
        let names: Vec<String> = claims
            .iter()
            .map(|c| format!("{}/{}", c.namespace, c.name))
            .collect();
        Err(format!(
            "netclaim: pod {}/{} uses the host network, so the NICs of its claims ({}) cannot \
             be attached; remove hostNetwork or the claims",
            pod.namespace,
            pod.name,
            names.join(", ")
        ))
    }
}

impl Detacher for PodNetworkHooks {
    async fn detach(&self, claim_uid: &str, nic: &PreparedNic) -> Result<(), String> {
        let Some(attachment) = &nic.attachment else {
            return Ok(());
        };
        let claim = self
            .claims
            .claim(claim_uid)
            .ok_or_else(|| format!("claim {claim_uid} is not prepared"))?;
        let _moves = self.moves.lock().await;
        self.detach_one(&claim, nic, attachment).await
    }
}

/// Discovery keeps a device published while it is in a pod.
impl DeviceHolds for crate::discovery::Inventory {
    fn hold(&self, device: &str) {
        crate::discovery::Inventory::hold(self, device);
    }
    fn release(&self, device: &str) {
        crate::discovery::Inventory::release(self, device);
    }
}
