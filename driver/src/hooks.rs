//! The pod lifecycle hooks: where `RunPodSandbox`, `StopPodSandbox`, `RemovePodSandbox` and
//! `Synchronize` land after [`crate::nri::plugin`] decoded them.
//!
//! Read top-down: the four event handlers, then what they do to a pod, then what they do
//! to one device, then the helpers.
//!
//! # Guarantees
//! - A hook for a pod without netclaim claims returns at once: one lock-free read of the
//!   checkpoint index, no lock, no I/O.
//! - No node-wide lock: a hook locks the devices of its own pod ([`crate::locks`]) and
//!   reads their records under those locks, so two hooks for one device run one after the
//!   other and the second sees what the first did. Different pods never wait on each
//!   other.
//! - Every hook works against its [`HookDeadline`]: it never waits for a lock past it, a CNI
//!   plugin only gets the part of it that leaves time to undo, and a RUN that could not
//!   [`HookDeadline::commit`] before the transport answered "too late" undoes its work
//!   before it releases its locks. A hook that answered never acts afterwards.
//! - Every step is recorded before it is taken (the `Attaching` record durably), and every
//!   failure leaves a record: a failed give-back stays `DetachFailed` and is retried at
//!   every Synchronize, unprepare and RUN of the device until the device is back; a failed
//!   attach is kept as the device's `failure` (the claim's status says it) until an attach
//!   succeeds.
//! - At every Synchronize (the runtime sends one each time the plugin connects) the
//!   devices are brought in line with the live sandboxes, in the background (the runtime
//!   waits for nothing): attachments of live sandboxes are kept or completed, all others
//!   given back, and a prepared device whose pod sandbox runs without it (its RUN never
//!   reached netclaim: the plugin was not connected) is attached late, the claim's status
//!   and an Event saying so (`AttachedLate`), or its failure reported (`NotAttached`).
//!   Attaching late rather than failing: the runtime does not let an NRI plugin stop a
//!   running sandbox, and the pod was promised the NIC; attaching it as soon as possible
//!   and telling the user is the closest netclaim can get to that promise.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use netclaim_api::cni::CniNetworkList;

use crate::backend::{AttachFailure, Backend, Backends, PodSandboxRef};
use crate::checkpoint::{Checkpoint, Durability, NicUpdateError};
use crate::claim_files::ClaimFiles;
use crate::cni::CniRunner;
use crate::deadline::HookDeadline;
use crate::faults::Faults;
use crate::locks::{NetworkLocks, NicLocks};
use crate::netlink::NetHandle;
use crate::nri::plugin::{PodSandboxHandler, network_namespace_path};
use crate::nri::proto::{Event, PodSandbox};
use crate::prepare::Detacher;
use crate::state::{
    AttachPhase, AttachedNetwork, Attachment, FailureReason, NicFailure, NicKey, PodRef,
    PreparedClaim, PreparedNic, now_rfc3339,
};

/// How long background work on one device (reconcile, unprepare's detach) may take.
const BACKGROUND_LIMIT: Duration = Duration::from_secs(120);

/// Keeps a device published while it is inside a pod (its host interface is gone from the
/// host's view). Discovery's inventory implements it.
pub trait DeviceHolds: Send + Sync + 'static {
    /// The device is leaving the host: keep publishing it, as it is published now or else
    /// as `published` (the `Device` recorded at prepare) says.
    fn hold(&self, device: &str, published: Option<&serde_json::Value>);
    /// The device is back on the host (or gone for good).
    fn release(&self, device: &str);
}

/// A [`DeviceHolds`] that does nothing, for tests and tools without discovery.
#[derive(Debug, Default)]
pub struct NoHolds;

impl DeviceHolds for NoHolds {
    fn hold(&self, _device: &str, _published: Option<&serde_json::Value>) {}
    fn release(&self, _device: &str) {}
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
    /// A give-back (STOP, REMOVE, unprepare, reconcile) recorded `Detaching`; nothing was
    /// given back yet.
    DetachRecorded,
}

/// netclaim's NRI handler: attaches prepared NICs to pods and gives them back. Cheap to
/// clone (the state is shared).
#[derive(Clone)]
pub struct PodNetworkHooks {
    inner: Arc<Hooks>,
}

struct Hooks {
    checkpoint: Arc<Checkpoint>,
    host: NetHandle,
    holds: Box<dyn DeviceHolds>,
    cni: Option<CniRunner>,
    nics: NicLocks,
    networks: NetworkLocks,
    /// The live sandboxes of pods with netclaim claims (from RUN and Synchronize, dropped
    /// at REMOVE): where their netns is (STOP carries none) and whether a device recorded
    /// for a sandbox may still be in use.
    sandboxes: Mutex<HashMap<String, PodSandboxRef>>,
    /// An open file on the network namespace of every sandbox holding an attached NIC (or
    /// one whose give-back failed).
    /// The kernel keeps a namespace alive while a file refers to it, so when the runtime
    /// drops a pod's namespace without telling the plugin (containerd 1.7 sends no STOP or
    /// REMOVE for pods that ran before it restarted), the NIC is neither destroyed with it
    /// (veth, macvlan) nor thrown into the initial namespace (physical NICs): the give-back
    /// that follows (unprepare, Synchronize) still finds it in the pod's namespace.
    held_netns: Mutex<HashMap<String, File>>,
    crash_at: Option<CrashPoint>,
    faults: Faults,
    /// The claims' device metadata files, rewritten after each attach and give-back.
    files: Option<ClaimFiles>,
    /// The reconcile started by the last Synchronize.
    reconcile: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// A device attached by the RUN being handled, for its rollback.
struct AttachedHere {
    claim: Arc<PreparedClaim>,
    nic: PreparedNic,
}

impl PodNetworkHooks {
    /// Hooks acting in the host namespace `host` on the claims prepared in `checkpoint`.
    pub fn new(checkpoint: Arc<Checkpoint>, host: NetHandle, holds: Box<dyn DeviceHolds>) -> Self {
        Self {
            inner: Arc::new(Hooks {
                checkpoint,
                host,
                holds,
                cni: None,
                nics: NicLocks::default(),
                networks: NetworkLocks::default(),
                sandboxes: Mutex::default(),
                held_netns: Mutex::default(),
                crash_at: None,
                faults: Faults::default(),
                files: None,
                reconcile: Mutex::default(),
            }),
        }
    }

    fn configure(mut self, change: impl FnOnce(&mut Hooks)) -> Self {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => change(inner),
            None => tracing::error!("hooks configured after being shared; ignoring"),
        }
        self
    }

    /// Runs the CNI networks of CNI-mode claims with `runner`.
    pub fn with_cni(self, runner: CniRunner) -> Self {
        self.configure(|hooks| hooks.cni = Some(runner))
    }

    /// Aborts the process at `point` (crash-recovery tests only).
    pub fn with_crash_point(self, point: Option<CrashPoint>) -> Self {
        self.configure(|hooks| hooks.crash_at = point)
    }

    /// Rewrites the device metadata files of `files` after every attach and give-back, so
    /// containers read the network data ([`crate::device_metadata`]).
    pub fn with_claim_files(self, files: ClaimFiles) -> Self {
        self.configure(|hooks| hooks.files = Some(files))
    }

    /// Injects `faults` (fault-injection tests only).
    pub fn with_faults(self, faults: Faults) -> Self {
        self.configure(|hooks| hooks.faults = faults)
    }

    /// Keeps publishing every device the checkpoint says is in a pod (after a restart,
    /// discovery no longer sees those NICs on the host).
    pub fn hold_attached_devices(&self) {
        for claim in self.inner.checkpoint.index().claims() {
            for nic in &claim.nics {
                if nic.attachment.is_some() && !nic.is_cni() {
                    self.inner.holds.hold(&nic.device, nic.published.as_ref());
                }
            }
        }
    }

    /// Waits for the reconcile of the last Synchronize to finish (for shutdown and tests).
    pub async fn reconciled(&self) {
        let task = self
            .inner
            .reconcile
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

impl PodSandboxHandler for PodNetworkHooks {
    async fn synchronize(&self, pods: Vec<PodSandbox>, _deadline: HookDeadline) {
        let index = self.inner.checkpoint.index();
        let live: HashMap<String, PodSandboxRef> = pods
            .iter()
            .filter(|pod| !index.claims_for_pod(&pod.uid).is_empty())
            .filter_map(|pod| {
                let netns = network_namespace_path(pod)?;
                Some((pod.id.clone(), sandbox_ref(pod, netns)))
            })
            .collect();
        tracing::info!(
            pods = pods.len(),
            with_claims = live.len(),
            "reconciling devices with the runtime's sandboxes"
        );
        *self.inner.sandboxes_lock() = live;
        // The runtime holds every pod event until Synchronize is answered: do the work in
        // the background, under the same per-device locks as the events that follow.
        let hooks = self.inner.clone();
        let task = tokio::spawn(async move {
            hooks.reconcile().await;
            hooks.collect_cni_garbage().await;
        });
        let previous = self
            .inner
            .reconcile
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .replace(task);
        if let Some(previous) = previous {
            // A reconnect before the last reconcile finished: it goes on; the new one
            // takes the device locks after it.
            drop(previous);
        }
    }

    /// A pod has work here when the checkpoint has claims for it, or (STOP, REMOVE) when a
    /// RUN recorded its sandbox (its claims may have been unprepared since; the entry must
    /// still go). Both are lock-free or a try-lock: a busy map counts as "may have work".
    fn concerns(&self, event: Event, pod: &PodSandbox) -> bool {
        if !self
            .inner
            .checkpoint
            .index()
            .claims_for_pod(&pod.uid)
            .is_empty()
        {
            return true;
        }
        match event {
            Event::RunPodSandbox => false,
            _ => self
                .inner
                .sandboxes
                .try_lock()
                .map_or(true, |sandboxes| sandboxes.contains_key(&pod.id)),
        }
    }

    async fn run_pod_sandbox(&self, pod: PodSandbox, deadline: HookDeadline) -> Result<(), String> {
        let index = self.inner.checkpoint.index();
        if index.claims_for_pod(&pod.uid).is_empty() {
            return Ok(());
        }
        let Some(netns) = network_namespace_path(&pod) else {
            return Err(refuse_host_network(&pod, index.claims_for_pod(&pod.uid)));
        };
        let sandbox = sandbox_ref(&pod, netns);
        self.inner
            .sandboxes_lock()
            .insert(sandbox.id.clone(), sandbox.clone());
        self.inner.attach_pod(&sandbox, &deadline).await
    }

    async fn stop_pod_sandbox(
        &self,
        pod: PodSandbox,
        deadline: HookDeadline,
    ) -> Result<(), String> {
        self.inner.give_back_sandbox(&pod, &deadline).await
    }

    async fn remove_pod_sandbox(
        &self,
        pod: PodSandbox,
        deadline: HookDeadline,
    ) -> Result<(), String> {
        self.inner.give_back_sandbox(&pod, &deadline).await
    }
}

impl Detacher for PodNetworkHooks {
    async fn detach(&self, claim_uid: &str, nic: &PreparedNic) -> Result<(), String> {
        let hooks = &self.inner;
        let _lock = hooks
            .nics
            .lock(
                [nic.lock_key(claim_uid)],
                Some(tokio::time::Instant::now() + BACKGROUND_LIMIT),
            )
            .await
            .map_err(|busy| busy.to_string())?;
        let Some((claim, nic)) = hooks.current(claim_uid, &nic.device, nic.share_id.as_deref())
        else {
            return Ok(());
        };
        match nic.attachment.clone() {
            Some(attachment) => hooks.give_back_nic(&claim, &nic, &attachment).await,
            None => Ok(()),
        }
    }
}

/// Where a device stands at a Synchronize, derived from its record and the live sandboxes.
enum SyncStep {
    /// Nothing to do.
    Nothing,
    /// Attached to a live sandbox: keep its netns open.
    Keep(PodSandboxRef),
    /// An attach into a live sandbox was interrupted (a crash mid-RUN, after which the
    /// runtime went on without netclaim): finish it.
    Resume(PodSandboxRef),
    /// Its pod runs without it: the RUN never reached netclaim.
    AttachLate(PodSandboxRef),
    /// Recorded for a sandbox that is gone, or a give-back is pending: give it back.
    GiveBack(Box<Attachment>),
}

impl SyncStep {
    fn of(claim: &PreparedClaim, nic: &PreparedNic, live: &HashMap<String, PodSandboxRef>) -> Self {
        match &nic.attachment {
            Some(a) if a.is_giving_back() => SyncStep::GiveBack(Box::new(a.clone())),
            Some(a) => match (live.get(&a.sandbox_id), a.phase) {
                (Some(sandbox), AttachPhase::Attached) => SyncStep::Keep(sandbox.clone()),
                (Some(sandbox), _) => SyncStep::Resume(sandbox.clone()),
                (None, _) => SyncStep::GiveBack(Box::new(a.clone())),
            },
            None => {
                let mut sandboxes = live.values().filter(|s| claim.is_for_pod(&s.pod.uid));
                match (sandboxes.next(), sandboxes.next()) {
                    (Some(only), None) => SyncStep::AttachLate(only.clone()),
                    _ => SyncStep::Nothing,
                }
            }
        }
    }
}

/// Where a device stands for a RUN of `sandbox`, derived from its record.
enum RunStep {
    /// Not attached anywhere.
    Attach,
    /// An attach into this sandbox was interrupted: finish it with the recorded snapshot.
    Resume(Attachment),
    /// Already attached to this sandbox.
    Done,
    /// A give-back is pending, or it is recorded for a sandbox that is gone: give it back
    /// first.
    GiveBackFirst(Attachment),
    /// Attached to another live sandbox.
    HeldBy(Attachment),
}

impl RunStep {
    fn of(
        nic: &PreparedNic,
        sandbox: &PodSandboxRef,
        live: &HashMap<String, PodSandboxRef>,
    ) -> Self {
        match &nic.attachment {
            None => RunStep::Attach,
            Some(a) if a.is_giving_back() => RunStep::GiveBackFirst(a.clone()),
            Some(a) if a.sandbox_id == sandbox.id => match a.phase {
                AttachPhase::Attached => RunStep::Done,
                _ => RunStep::Resume(a.clone()),
            },
            Some(a) if live.contains_key(&a.sandbox_id) => RunStep::HeldBy(a.clone()),
            Some(a) => RunStep::GiveBackFirst(a.clone()),
        }
    }
}

impl Hooks {
    fn sandboxes_lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, PodSandboxRef>> {
        self.sandboxes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn backends(&self) -> Backends<'_> {
        Backends {
            host: &self.host,
            cni: self.cni.as_ref(),
            networks: &self.networks,
            faults: &self.faults,
        }
    }

    /// The current record of a device, read after its lock was taken.
    fn current(
        &self,
        claim_uid: &str,
        device: &str,
        share_id: Option<&str>,
    ) -> Option<(Arc<PreparedClaim>, PreparedNic)> {
        let claim = self.checkpoint.claim(claim_uid)?;
        let nic = claim.nic(device, share_id)?.clone();
        Some((claim, nic))
    }

    // ---- what a hook does to a pod ------------------------------------------------------

    /// Attaches every device prepared for the pod of `sandbox`; on any failure gives back
    /// those this RUN attached, and fails with the first error.
    async fn attach_pod(
        &self,
        sandbox: &PodSandboxRef,
        deadline: &HookDeadline,
    ) -> Result<(), String> {
        let keys = self.keys_of_pod(&sandbox.pod.uid, |_| true);
        let _locks = self
            .nics
            .lock(keys.keys().cloned(), Some(deadline.at()))
            .await
            .map_err(|busy| {
                format!(
                    "netclaim: {busy}; {}",
                    deadline.expiry_message("waiting for it")
                )
            })?;
        // Read under the locks: a hook that held them before recorded what it did.
        let index = self.checkpoint.index();
        let live = self.sandboxes_lock().clone();
        let mut attached: Vec<AttachedHere> = Vec::new();
        for claim in index.claims_for_pod(&sandbox.pod.uid) {
            for nic in claim
                .nics
                .iter()
                .filter(|n| keys.contains_key(&n.lock_key(&claim.uid)))
            {
                if let Err(message) = self
                    .attach_for_run(claim, nic, sandbox, &live, deadline)
                    .await
                {
                    let message = format!("netclaim: {}: {message}", describe(claim, nic));
                    self.roll_back(&attached).await;
                    return Err(message);
                }
                if let Some((claim, nic)) =
                    self.current(&claim.uid, &nic.device, nic.share_id.as_deref())
                {
                    attached.push(AttachedHere { claim, nic });
                }
            }
        }
        if !deadline.commit() {
            // The runtime was already told this RUN failed: nothing it did may stay.
            self.roll_back(&attached).await;
            return Err(deadline.expiry_message("attaching the pod's devices"));
        }
        if !attached.is_empty() {
            self.hold_netns(&sandbox.id, &sandbox.netns);
        }
        Ok(())
    }

    /// One device for a RUN.
    async fn attach_for_run(
        &self,
        claim: &PreparedClaim,
        nic: &PreparedNic,
        sandbox: &PodSandboxRef,
        live: &HashMap<String, PodSandboxRef>,
        deadline: &HookDeadline,
    ) -> Result<(), String> {
        match RunStep::of(nic, sandbox, live) {
            RunStep::Done => Ok(()),
            RunStep::HeldBy(other) => Err(format!(
                "the device is attached to another pod sandbox ({}{})",
                other.sandbox_id,
                other
                    .pod
                    .as_ref()
                    .map(|p| format!(", pod {}/{}", p.namespace, p.name))
                    .unwrap_or_default()
            )),
            RunStep::GiveBackFirst(stale) => {
                self.give_back_nic(claim, nic, &stale).await?;
                let (claim, nic) = self
                    .current(&claim.uid, &nic.device, nic.share_id.as_deref())
                    .ok_or("the claim was unprepared")?;
                self.attach_nic(&claim, &nic, sandbox, deadline, None, false)
                    .await
            }
            RunStep::Resume(recorded) => {
                self.attach_nic(claim, nic, sandbox, deadline, Some(recorded), false)
                    .await
            }
            RunStep::Attach => {
                self.attach_nic(claim, nic, sandbox, deadline, None, false)
                    .await
            }
        }
    }

    /// Gives back every device attached to the sandbox of `pod` (STOP, REMOVE). Idempotent.
    ///
    /// The sandbox stops being live first, so a reconcile running meanwhile does not
    /// attach late into it; and every device of the pod's claims is locked (not only those
    /// recorded for the sandbox now), so an attach already under way finishes before it is
    /// looked at and given back.
    async fn give_back_sandbox(
        &self,
        pod: &PodSandbox,
        deadline: &HookDeadline,
    ) -> Result<(), String> {
        self.sandboxes_lock().remove(&pod.id);
        let keys = self.keys_of_pod(&pod.uid, |_| true);
        if keys.is_empty() {
            return Ok(());
        }
        let _locks = self
            .nics
            .lock(keys.keys().cloned(), Some(deadline.at()))
            .await
            .map_err(|busy| format!("netclaim: {busy}"))?;
        let mut errors = Vec::new();
        for (key, (claim_uid, device, share_id)) in &keys {
            let Some((claim, nic)) = self.current(claim_uid, device, share_id.as_deref()) else {
                continue;
            };
            let Some(attachment) = nic.attachment.clone().filter(|a| a.sandbox_id == pod.id) else {
                continue;
            };
            if let Err(error) = self.give_back_nic(&claim, &nic, &attachment).await {
                tracing::error!(?key, "{error}");
                errors.push(format!("{}: {error}", describe(&claim, &nic)));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(format!("netclaim: {}", errors.join("; ")))
        }
    }

    /// Gives back what a RUN attached before it failed, newest first.
    async fn roll_back(&self, attached: &[AttachedHere]) {
        for AttachedHere { claim, nic } in attached.iter().rev() {
            let Some(attachment) = &nic.attachment else {
                continue;
            };
            if let Err(error) = self.give_back_nic(claim, nic, attachment).await {
                // Recorded as DetachFailed: retried at the next Synchronize, unprepare or RUN.
                tracing::error!(device = %describe(claim, nic), "rollback failed: {error}");
            }
        }
    }

    /// Brings every device in line with the live sandboxes (see the module docs).
    async fn reconcile(&self) {
        let index = self.checkpoint.index();
        for claim in index.claims() {
            for nic in &claim.nics {
                let live = self.sandboxes_lock().clone();
                if matches!(SyncStep::of(claim, nic, &live), SyncStep::Nothing) {
                    continue;
                }
                let deadline = HookDeadline::background("reconcile", BACKGROUND_LIMIT);
                let Ok(_lock) = self
                    .nics
                    .lock([nic.lock_key(&claim.uid)], Some(deadline.at()))
                    .await
                else {
                    tracing::warn!(device = %describe(claim, nic), "reconcile: the device stayed busy; the next Synchronize retries");
                    continue;
                };
                // Decide again on the record and the sandboxes as they are now.
                let Some((claim, nic)) =
                    self.current(&claim.uid, &nic.device, nic.share_id.as_deref())
                else {
                    continue;
                };
                let live = self.sandboxes_lock().clone();
                if let Err(error) = self.reconcile_nic(&claim, &nic, &live, &deadline).await {
                    tracing::error!(device = %describe(&claim, &nic), "reconcile: {error}");
                }
            }
        }
    }

    async fn reconcile_nic(
        &self,
        claim: &PreparedClaim,
        nic: &PreparedNic,
        live: &HashMap<String, PodSandboxRef>,
        deadline: &HookDeadline,
    ) -> Result<(), String> {
        match SyncStep::of(claim, nic, live) {
            SyncStep::Nothing => Ok(()),
            SyncStep::Keep(sandbox) => {
                self.hold_netns(&sandbox.id, &sandbox.netns);
                Ok(())
            }
            SyncStep::GiveBack(attachment) => self.give_back_nic(claim, nic, &attachment).await,
            SyncStep::Resume(sandbox) => {
                let recorded = nic.attachment.clone();
                tracing::warn!(device = %describe(claim, nic), sandbox = %sandbox.id, "finishing an attach interrupted by a crash; the pod has been running without the device");
                self.attach_late(claim, nic, &sandbox, deadline, recorded)
                    .await
            }
            SyncStep::AttachLate(sandbox) => {
                tracing::warn!(device = %describe(claim, nic), sandbox = %sandbox.id, "pod sandbox runs without its device (its RunPodSandbox never reached netclaim); attaching it late");
                self.attach_late(claim, nic, &sandbox, deadline, None).await
            }
        }
    }

    async fn attach_late(
        &self,
        claim: &PreparedClaim,
        nic: &PreparedNic,
        sandbox: &PodSandboxRef,
        deadline: &HookDeadline,
        recorded: Option<Attachment>,
    ) -> Result<(), String> {
        match self
            .attach_nic(claim, nic, sandbox, deadline, recorded, true)
            .await
        {
            Ok(()) => {
                self.hold_netns(&sandbox.id, &sandbox.netns);
                crate::metrics::metrics().late_attaches.inc();
                Ok(())
            }
            Err(message) => {
                let message = format!(
                    "the pod runs without this device: netclaim's RunPodSandbox hook did not \
                     attach it (the NRI plugin was not connected, or the daemon stopped \
                     mid-hook), and attaching it late failed: {message}"
                );
                self.record_failure(claim, nic, FailureReason::NotAttached, &message)
                    .await;
                Err(message)
            }
        }
    }

    // ---- what a hook does to one device --------------------------------------------------

    /// Attaches one device: record `Attaching` (before anything changes; durably when the
    /// backend leaves state a machine crash does not end, see
    /// [`Backend::attaching_durability`]), attach,
    /// record `Attached` with what the pod got. On failure the record says what is left:
    /// nothing (and the failure), or `DetachFailed` when the undo failed too.
    async fn attach_nic(
        &self,
        claim: &PreparedClaim,
        nic: &PreparedNic,
        sandbox: &PodSandboxRef,
        deadline: &HookDeadline,
        recorded: Option<Attachment>,
        late: bool,
    ) -> Result<(), String> {
        let backend = Backend::of(claim, nic)?;
        let ctx = self.backends();
        let snapshot = match &recorded {
            Some(recorded) => recorded.host.clone(),
            None => match backend.snapshot(&ctx, nic).await {
                Ok(snapshot) => snapshot,
                Err(message) => {
                    // Nothing changed yet; the claim's status says why the pod has no
                    // device, not only the sandbox error.
                    let failure = failure(FailureReason::AttachFailed, &message);
                    let saved = self
                        .update(claim, nic, Durability::Volatile, move |n| {
                            n.failure = Some(failure);
                        })
                        .await;
                    if let Err(error) = saved {
                        tracing::error!(device = %describe(claim, nic), "recording a failed attach: {error}");
                    }
                    return Err(message);
                }
            },
        };
        let attaching = Attachment {
            sandbox_id: sandbox.id.clone(),
            netns_path: sandbox.netns.clone(),
            host: snapshot.clone(),
            pod_if_name: nic.pod_if_name().to_owned(),
            phase: AttachPhase::Attaching,
            pod: Some(sandbox.pod.clone()),
            network: None,
            error: None,
        };
        if recorded.is_none() {
            let record = attaching.clone();
            self.update(claim, nic, backend.attaching_durability(), move |n| {
                n.attachment = Some(record)
            })
            .await
            .map_err(|e| format!("recording the attachment: {e}"))?;
        }
        self.crash_point(CrashPoint::AttachRecorded);
        if backend.moves_the_nic() {
            self.holds.hold(&nic.device, nic.published.as_ref());
        }
        let attached = match &recorded {
            Some(recorded) => backend.resume(&ctx, nic, recorded, sandbox, deadline).await,
            None => {
                backend
                    .attach(&ctx, nic, &snapshot, sandbox, deadline)
                    .await
            }
        };
        match attached {
            Ok(attached) => {
                self.crash_point(CrashPoint::AttachMoved);
                let record = Attachment {
                    phase: AttachPhase::Attached,
                    host: attached.host,
                    network: Some(AttachedNetwork {
                        data: attached.data,
                        cni_result: attached.cni_result,
                        since: now_rfc3339(),
                        late,
                    }),
                    ..attaching
                };
                let saved = self
                    .update(claim, nic, Durability::Volatile, move |n| {
                        n.attachment = Some(record);
                        n.failure = None;
                    })
                    .await;
                if let Err(error) = saved {
                    // Attached but not recorded: undo, so nothing runs that the record
                    // does not know of.
                    let message = format!("recording the attachment: {error}");
                    if let Some((claim, nic)) =
                        self.current(&claim.uid, &nic.device, nic.share_id.as_deref())
                        && let Some(attachment) = nic.attachment.clone()
                    {
                        let _ = self.give_back_nic(&claim, &nic, &attachment).await;
                    }
                    return Err(message);
                }
                self.refresh_metadata(&claim.uid).await;
                Ok(())
            }
            Err(AttachFailure::RolledBack(message)) => {
                if backend.moves_the_nic() {
                    self.holds.release(&nic.device);
                }
                let failure = failure(FailureReason::AttachFailed, &message);
                let saved = self
                    .update(claim, nic, Durability::Volatile, move |n| {
                        n.attachment = None;
                        n.failure = Some(failure);
                    })
                    .await;
                if let Err(error) = saved {
                    tracing::error!(device = %describe(claim, nic), "recording a failed attach: {error}");
                }
                Err(message)
            }
            Err(AttachFailure::Stuck { message, undo }) => {
                let message = AttachFailure::Stuck {
                    message,
                    undo: undo.clone(),
                }
                .message();
                let record = Attachment {
                    phase: AttachPhase::DetachFailed,
                    error: Some(undo),
                    ..attaching
                };
                let failure = failure(FailureReason::AttachFailed, &message);
                let saved = self
                    .update(claim, nic, Durability::Volatile, move |n| {
                        n.attachment = Some(record);
                        n.failure = Some(failure);
                    })
                    .await;
                if let Err(error) = saved {
                    tracing::error!(device = %describe(claim, nic), "recording a failed rollback: {error}");
                }
                self.hold_netns(&sandbox.id, &sandbox.netns);
                Err(message)
            }
        }
    }

    /// Gives one device back to the host: record `Detaching`, give back, drop the
    /// attachment; a failure is recorded as `DetachFailed` (retried later).
    async fn give_back_nic(
        &self,
        claim: &PreparedClaim,
        nic: &PreparedNic,
        attachment: &Attachment,
    ) -> Result<(), String> {
        let backend = Backend::of(claim, nic)?;
        if !attachment.is_giving_back() {
            let record = Attachment {
                phase: AttachPhase::Detaching,
                ..attachment.clone()
            };
            self.update(claim, nic, Durability::Volatile, move |n| {
                n.attachment = Some(record)
            })
            .await
            .map_err(|e| format!("recording the give-back: {e}"))?;
            self.crash_point(CrashPoint::DetachRecorded);
        }
        let (netns, _held) = self.netns_for_give_back(attachment);
        match backend
            .give_back(&self.backends(), attachment, &netns)
            .await
        {
            Ok(note) => {
                if let Some(note) = note {
                    tracing::info!(device = %describe(claim, nic), "{note}");
                }
                if backend.moves_the_nic() {
                    self.holds.release(&nic.device);
                }
                self.update(claim, nic, Durability::Volatile, |n| n.attachment = None)
                    .await
                    .map_err(|e| format!("recording the give-back: {e}"))?;
                self.refresh_metadata(&claim.uid).await;
                self.release_netns_if_unused(&attachment.sandbox_id);
                Ok(())
            }
            Err(error) => {
                // The device may still be in the pod's netns: keep that alive for the
                // retry, or the runtime removing it (after a failed RUN, or at STOP)
                // destroys a virtual NIC with it.
                self.hold_netns(&attachment.sandbox_id, &netns.to_string_lossy());
                let record = Attachment {
                    phase: AttachPhase::DetachFailed,
                    error: Some(error.clone()),
                    ..attachment.clone()
                };
                if let Err(e) = self
                    .update(claim, nic, Durability::Volatile, move |n| {
                        n.attachment = Some(record)
                    })
                    .await
                {
                    tracing::error!(device = %describe(claim, nic), "recording a failed give-back: {e}");
                }
                Err(error)
            }
        }
    }

    /// Rewrites the claim's device metadata from its record (before RUN answers, so the
    /// pod's first container reads it). A failure is logged, not the hook's: the NIC is in
    /// place, and the file keeps its previous content.
    async fn refresh_metadata(&self, claim_uid: &str) {
        let (Some(files), Some(claim)) = (&self.files, self.checkpoint.claim(claim_uid)) else {
            return;
        };
        if let Err(error) = files.refresh_metadata(&claim).await {
            tracing::warn!(claim = %claim.qualified_name(), "updating the device metadata: {error}");
        }
    }

    async fn record_failure(
        &self,
        claim: &PreparedClaim,
        nic: &PreparedNic,
        reason: FailureReason,
        message: &str,
    ) {
        let failure = failure(reason, message);
        if let Err(error) = self
            .update(claim, nic, Durability::Volatile, move |n| {
                n.failure = Some(failure)
            })
            .await
        {
            tracing::error!(device = %describe(claim, nic), "recording a failure: {error}");
        }
    }

    async fn update(
        &self,
        claim: &PreparedClaim,
        nic: &PreparedNic,
        durability: Durability,
        change: impl FnOnce(&mut PreparedNic) + Send + 'static,
    ) -> Result<(), NicUpdateError> {
        self.checkpoint
            .update_nic(
                &claim.uid,
                &nic.device,
                nic.share_id.as_deref(),
                durability,
                change,
            )
            .await
    }

    /// CNI GC (spec 1.1) after a Synchronize's reconcile: each CNI network in the
    /// checkpoint is told which of its attachments are valid, so its plugins release what
    /// an attachment netclaim lost track of left behind (IPAM leases, host-side state), and
    /// its stale cache entries go. Each network is locked against ADD and DEL while its
    /// valid attachments are listed and its GC runs.
    async fn collect_cni_garbage(&self) {
        let Some(runner) = &self.cni else { return };
        let mut networks: BTreeMap<String, CniNetworkList> = BTreeMap::new();
        for claim in self.checkpoint.index().claims() {
            for nic in &claim.nics {
                if let Ok(Backend::Cni { list }) = Backend::of(claim, nic) {
                    networks.entry(list.name.clone()).or_insert(*list);
                }
            }
        }
        for (name, list) in networks {
            let _exclusive = self.networks.collect(&name).await;
            let mut valid: Vec<(String, String)> = Vec::new();
            for claim in self.checkpoint.index().claims() {
                for nic in &claim.nics {
                    let Some(attachment) = &nic.attachment else {
                        continue;
                    };
                    let same = Backend::of(claim, nic)
                        .ok()
                        .is_some_and(|b| b.network_name() == Some(name.as_str()));
                    if same {
                        valid.push((
                            attachment.sandbox_id.clone(),
                            attachment.pod_if_name.clone(),
                        ));
                    }
                }
            }
            match runner.gc(&list, &valid).await {
                Ok(report) => tracing::debug!(network = %name, ran = ?report.ran, "CNI GC"),
                Err(e) => tracing::warn!(network = %name, "CNI GC: {e}"),
            }
        }
    }

    // ---- helpers --------------------------------------------------------------------------

    /// The lock keys of the devices of the claims of pod `pod_uid` that `select` picks, with
    /// what identifies each device.
    fn keys_of_pod(
        &self,
        pod_uid: &str,
        select: impl Fn(&PreparedNic) -> bool,
    ) -> BTreeMap<NicKey, (String, String, Option<String>)> {
        let index = self.checkpoint.index();
        index
            .claims_for_pod(pod_uid)
            .iter()
            .flat_map(|claim| {
                claim.nics.iter().filter(|nic| select(nic)).map(|nic| {
                    (
                        nic.lock_key(&claim.uid),
                        (claim.uid.clone(), nic.device.clone(), nic.share_id.clone()),
                    )
                })
            })
            .collect()
    }

    fn crash_point(&self, point: CrashPoint) {
        if self.crash_at == Some(point) {
            tracing::error!(?point, "crash point reached: aborting");
            std::process::abort();
        }
    }

    fn held_netns_lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, File>> {
        self.held_netns
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Keeps the namespace at `netns` alive while `sandbox_id` holds attached devices.
    fn hold_netns(&self, sandbox_id: &str, netns: &str) {
        let mut held = self.held_netns_lock();
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

    /// Lets the namespace of `sandbox_id` go once none of its devices is attached any more.
    fn release_netns_if_unused(&self, sandbox_id: &str) {
        let in_use = self.checkpoint.index().claims().any(|claim| {
            claim.nics.iter().any(|nic| {
                nic.attachment
                    .as_ref()
                    .is_some_and(|a| a.sandbox_id == sandbox_id)
            })
        });
        if !in_use {
            self.held_netns_lock().remove(sandbox_id);
        }
    }

    /// Where to find the pod's namespace to give a device back: the held namespace (valid
    /// even after the runtime removed the path), else the path from RUN or Synchronize,
    /// else the recorded one. The returned file, if any, must outlive the use of the path.
    fn netns_for_give_back(&self, attachment: &Attachment) -> (PathBuf, Option<File>) {
        let held = self
            .held_netns_lock()
            .get(&attachment.sandbox_id)
            .and_then(|f| f.try_clone().ok());
        if let Some(file) = held {
            return (
                PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd())),
                Some(file),
            );
        }
        let path = self
            .sandboxes_lock()
            .get(&attachment.sandbox_id)
            .map(|s| s.netns.clone())
            .unwrap_or_else(|| attachment.netns_path.clone());
        (PathBuf::from(path), None)
    }
}

fn sandbox_ref(pod: &PodSandbox, netns: &str) -> PodSandboxRef {
    PodSandboxRef {
        id: pod.id.clone(),
        netns: netns.to_owned(),
        pod: PodRef {
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            uid: pod.uid.clone(),
        },
    }
}

fn failure(reason: FailureReason, message: &str) -> NicFailure {
    NicFailure {
        reason,
        message: message.to_owned(),
        since: now_rfc3339(),
    }
}

fn describe(claim: &PreparedClaim, nic: &PreparedNic) -> String {
    format!(
        "claim {}/{} device {} ({})",
        claim.namespace, claim.name, nic.device, nic.host_if_name
    )
}

/// A pod without its own network namespace shares the host's: a NIC cannot be moved
/// "into" it, so a claim for it is an error the user must see.
fn refuse_host_network(pod: &PodSandbox, claims: &[Arc<PreparedClaim>]) -> String {
    let names: Vec<String> = claims.iter().map(|c| c.qualified_name()).collect();
    format!(
        "netclaim: pod {}/{} uses the host network, so the NICs of its claims ({}) cannot \
         be attached; remove hostNetwork or the claims",
        pod.namespace,
        pod.name,
        names.join(", ")
    )
}

/// Discovery keeps a device published while it is in a pod.
impl DeviceHolds for crate::discovery::Inventory {
    fn hold(&self, device: &str, published: Option<&serde_json::Value>) {
        let recorded = published.and_then(|value| serde_json::from_value(value.clone()).ok());
        crate::discovery::Inventory::hold(self, device, recorded);
    }
    fn release(&self, device: &str) {
        crate::discovery::Inventory::release(self, device);
    }
}
