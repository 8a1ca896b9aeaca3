//! How a prepared NIC reaches a pod: the one place where "a moved NIC or a CNI network" is
//! decided ([`Backend::of`]). The hooks drive every device through the same steps (record,
//! attach, record; give back, record) and only call into the backend for the step itself.
//!
//! - [`Backend::Move`]: the NIC itself moves into the pod's netns and is configured there
//!   ([`crate::attach`]); giving it back moves it out and restores its host snapshot.
//! - [`Backend::Cni`]: the NIC stays on the host as the parent of what a CNI network list
//!   creates in the pod ([`crate::cni`]); giving it back runs DEL.
//!
//! # Guarantees
//! - [`Backend::attach`] either succeeds, or undoes what it did before returning
//!   ([`AttachFailure::RolledBack`]), or says that the undo failed too
//!   ([`AttachFailure::Stuck`]): then something may still be in the pod and the caller must
//!   keep a record and retry [`Backend::give_back`].
//! - Long steps respect the hook's deadline: a CNI ADD is only given
//!   [`HookDeadline::work_budget`] and is killed (then undone) when that runs out.

use std::path::{Path, PathBuf};

use netclaim_api::cni::CniNetworkList;
use tokio::time::Instant;

use crate::attach;
use crate::checkpoint::Durability;
use crate::cni::{self, CniError, CniRunner};
use crate::deadline::HookDeadline;
use crate::faults::{Fault, Faults};
use crate::locks::NetworkLocks;
use crate::metrics::{AttachResult, BackendKind, metrics};
use crate::netlink::NetHandle;
use crate::rdma;
use crate::state::{Attachment, LinkSnapshot, NetworkData, PodRef, PreparedClaim, PreparedNic};

/// What the backends need from the daemon.
pub struct Backends<'a> {
    /// The host namespace.
    pub host: &'a NetHandle,
    /// Runs CNI networks (`None`: CNI mode is off and such devices fail).
    pub cni: Option<&'a CniRunner>,
    /// Keeps CNI GC away from ADD and DEL of the same network.
    pub networks: &'a NetworkLocks,
    /// Test-only fault injection.
    pub faults: &'a Faults,
}

/// How one device reaches its pod (see the [module docs](self)).
#[derive(Clone, Debug)]
pub enum Backend {
    /// The NIC moves into the pod, tagged with `tag` (its alias) on the way.
    Move {
        /// `netclaim/<claim uid>/<device>`: finds the NIC wherever it is.
        tag: String,
        /// The NIC's RDMA device, when it must move with the NIC (the node's RDMA subsystem
        /// is in exclusive netns mode): it goes in before the NIC and comes back before it
        /// ([`crate::rdma`]).
        rdma: Option<String>,
    },
    /// A CNI network with the NIC as parent.
    Cni {
        /// The list to run (device already substituted at prepare).
        list: Box<CniNetworkList>,
    },
}

/// Where a sandbox's network namespace is and whose pod it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodSandboxRef {
    /// The sandbox id.
    pub id: String,
    /// The path of its network namespace (from RUN or Synchronize).
    pub netns: String,
    /// The pod.
    pub pod: PodRef,
}

/// What an attach gave the pod.
#[derive(Clone, Debug, PartialEq)]
pub struct Attached {
    /// The host state to give back (for a moved NIC, with what the attach read on the way).
    pub host: LinkSnapshot,
    /// The interface in the pod.
    pub data: NetworkData,
    /// CNI mode: the ADD result as the plugins printed it.
    pub cni_result: Option<serde_json::Value>,
}

/// Why an attach failed.
#[derive(Debug)]
pub enum AttachFailure {
    /// Nothing is left of it: the device is as it was before.
    RolledBack(String),
    /// The undo failed too: the device may still be (partly) in the pod.
    Stuck {
        /// Why the attach failed.
        message: String,
        /// Why the undo failed.
        undo: String,
    },
}

impl AttachFailure {
    /// What users see.
    pub fn message(&self) -> String {
        match self {
            AttachFailure::RolledBack(message) => message.clone(),
            AttachFailure::Stuck { message, undo } => {
                format!("{message}; undoing it failed too ({undo}): netclaim keeps retrying")
            }
        }
    }
}

/// The alias that tags a claimed interface wherever it is (host, pod, or back in the
/// initial namespace after its pod's namespace died).
pub fn interface_tag(claim_uid: &str, device: &str) -> String {
    format!("netclaim/{claim_uid}/{device}")
}

impl Backend {
    /// The backend of `nic` of `claim`.
    ///
    /// # Errors
    /// The stored CNI network no longer parses (a corrupt record).
    pub fn of(claim: &PreparedClaim, nic: &PreparedNic) -> Result<Self, String> {
        match &nic.cni {
            Some(network) => {
                let raw = serde_json::to_vec(network)
                    .map_err(|e| format!("the stored CNI network: {e}"))?;
                let list = CniNetworkList::parse(&raw)
                    .map_err(|e| format!("the stored CNI network is invalid: {e}"))?;
                Ok(Backend::Cni {
                    list: Box::new(list),
                })
            }
            None => Ok(Backend::Move {
                tag: interface_tag(&claim.uid, &nic.device),
                rdma: nic
                    .rdma
                    .as_ref()
                    .filter(|rdma| rdma.netns_exclusive)
                    .map(|rdma| rdma.device.clone()),
            }),
        }
    }

    /// The CNI network's name, for CNI mode.
    pub fn network_name(&self) -> Option<&str> {
        match self {
            Backend::Cni { list } => Some(&list.name),
            Backend::Move { .. } => None,
        }
    }

    /// How durable the `Attaching` record written before this backend changes anything
    /// must be.
    ///
    /// A moved NIC lives only in kernel state (its netns, name, addresses, routes): a
    /// machine crash ends the pod netns and brings the NIC back under its boot-time name,
    /// so a record of the attach that the crash loses describes nothing left to undo, and
    /// one that survives is given back as a no-op. A rename (no fsync) covers what can
    /// outlive a record: a crash of netclaim itself, whose writes stay in the page cache.
    /// CNI plugins keep state on disk that outlives a machine crash (IPAM leases, their
    /// own caches): the record that lets netclaim run DEL for it after a reboot must be
    /// on disk before ADD runs.
    pub fn attaching_durability(&self) -> Durability {
        match self {
            Backend::Move { .. } => Durability::Volatile,
            Backend::Cni { .. } => Durability::Durable,
        }
    }

    /// Whether the device leaves the host (and discovery must keep publishing it).
    pub fn moves_the_nic(&self) -> bool {
        matches!(self, Backend::Move { .. })
    }

    /// The host state to record before anything changes: the NIC's snapshot when it moves;
    /// for CNI mode only the parent's name (nothing on the host is changed by netclaim).
    ///
    /// # Errors
    /// The NIC is no longer on the host.
    pub async fn snapshot(
        &self,
        ctx: &Backends<'_>,
        nic: &PreparedNic,
    ) -> Result<LinkSnapshot, String> {
        match self {
            Backend::Move { .. } => ctx
                .host
                .snapshot(&nic.host_if_name)
                .await
                .map_err(|e| format!("the device is no longer on the host: {e}")),
            Backend::Cni { .. } => Ok(LinkSnapshot {
                if_name: nic.host_if_name.clone(),
                ..LinkSnapshot::default()
            }),
        }
    }

    /// Attaches `nic` to `sandbox` (see the [module docs](self)); `snapshot` is the recorded
    /// host state.
    ///
    /// # Errors
    /// [`AttachFailure`].
    pub async fn attach(
        &self,
        ctx: &Backends<'_>,
        nic: &PreparedNic,
        snapshot: &LinkSnapshot,
        sandbox: &PodSandboxRef,
        deadline: &HookDeadline,
    ) -> Result<Attached, AttachFailure> {
        let attached = self
            .attach_unmetered(ctx, nic, snapshot, sandbox, deadline)
            .await;
        metrics().attach(
            self.kind(),
            match &attached {
                Ok(_) => AttachResult::Ok,
                Err(AttachFailure::RolledBack(_)) => AttachResult::RolledBack,
                Err(AttachFailure::Stuck { .. }) => AttachResult::Stuck,
            },
        );
        attached
    }

    /// What the metrics call this backend.
    fn kind(&self) -> BackendKind {
        match self {
            Backend::Move { .. } => BackendKind::Move,
            Backend::Cni { .. } => BackendKind::Cni,
        }
    }

    async fn attach_unmetered(
        &self,
        ctx: &Backends<'_>,
        nic: &PreparedNic,
        snapshot: &LinkSnapshot,
        sandbox: &PodSandboxRef,
        deadline: &HookDeadline,
    ) -> Result<Attached, AttachFailure> {
        match self {
            Backend::Move { tag, rdma } => {
                if let Some(device) = rdma {
                    rdma::move_into_pod(ctx.host, device, Path::new(&sandbox.netns))
                        .await
                        .map_err(AttachFailure::RolledBack)?;
                }
                let outcome = attach::attach_with_snapshot(
                    ctx.host,
                    &nic.host_if_name,
                    Some(snapshot),
                    Path::new(&sandbox.netns),
                    tag,
                    &nic.config,
                )
                .await
                .map_err(|error| match &error.rollback {
                    None => AttachFailure::RolledBack(error.to_string()),
                    Some(undo) => AttachFailure::Stuck {
                        message: error.to_string(),
                        undo: undo.to_string(),
                    },
                });
                let outcome = match (outcome, rdma) {
                    (Ok(outcome), _) => outcome,
                    (Err(failure), None) => return Err(failure),
                    // The NIC did not make it: its RDMA device goes back too.
                    (Err(failure), Some(device)) => {
                        return Err(
                            match rdma::give_back(ctx.host, device, Path::new(&sandbox.netns)).await
                            {
                                Ok(_) => failure,
                                Err(undo) => AttachFailure::Stuck {
                                    message: failure.message(),
                                    undo,
                                },
                            },
                        );
                    }
                };
                Ok(Attached {
                    host: outcome.host,
                    data: NetworkData {
                        interface_name: outcome.pod_if_name,
                        ips: outcome
                            .ips
                            .iter()
                            .filter_map(|ip| ip.parse().ok())
                            .collect(),
                        hardware_address: outcome.mac,
                    },
                    cni_result: None,
                })
            }
            Backend::Cni { list } => {
                self.attach_cni(ctx, list, nic, snapshot, sandbox, deadline)
                    .await
            }
        }
    }

    /// Finishes an attach that was interrupted (its `Attaching` record survived a crash):
    /// a moved NIC's attach is idempotent and runs again; a CNI network whose ADD completed
    /// (its result is cached) keeps that result, and one whose ADD may have stopped half-way
    /// is DELeted and added again.
    ///
    /// # Errors
    /// As [`Backend::attach`].
    pub async fn resume(
        &self,
        ctx: &Backends<'_>,
        nic: &PreparedNic,
        recorded: &Attachment,
        sandbox: &PodSandboxRef,
        deadline: &HookDeadline,
    ) -> Result<Attached, AttachFailure> {
        let Backend::Cni { list } = self else {
            return self
                .attach(ctx, nic, &recorded.host, sandbox, deadline)
                .await;
        };
        let runner = ctx
            .cni
            .ok_or_else(|| AttachFailure::RolledBack(cni_disabled()))?;
        let attachment = cni_attachment(nic, sandbox);
        if let Ok(Some(entry)) = runner.cache.read(&list.name, &attachment).await
            && let Ok(result) = cni::typed_result(&entry.result)
        {
            let data = cni::network_data(&result, &attachment.ifname).unwrap_or(NetworkData {
                interface_name: attachment.ifname.clone(),
                ..NetworkData::default()
            });
            return Ok(Attached {
                host: recorded.host.clone(),
                data,
                cni_result: Some(entry.result),
            });
        }
        self.give_back(ctx, recorded, Path::new(&sandbox.netns))
            .await
            .map_err(|undo| AttachFailure::Stuck {
                message: format!("CNI network {}: finishing an interrupted ADD", list.name),
                undo,
            })?;
        self.attach(ctx, nic, &recorded.host, sandbox, deadline)
            .await
    }

    async fn attach_cni(
        &self,
        ctx: &Backends<'_>,
        list: &CniNetworkList,
        nic: &PreparedNic,
        snapshot: &LinkSnapshot,
        sandbox: &PodSandboxRef,
        deadline: &HookDeadline,
    ) -> Result<Attached, AttachFailure> {
        let failed = |message: String| {
            AttachFailure::RolledBack(format!("CNI network {}: {message}", list.name))
        };
        let runner = ctx.cni.ok_or_else(|| failed(cni_disabled()))?;
        let _network = ctx
            .networks
            .use_network(&list.name, Some(deadline.at()))
            .await
            .map_err(|_| failed(deadline.expiry_message("waiting for the network's CNI GC")))?;
        // A plugin that says its network is not ready fails the sandbox with its message,
        // and no ADD runs.
        runner
            .status(list, Some(Instant::now() + deadline.work_budget()))
            .await
            .map_err(|error| failed(describe(&error, deadline, "STATUS")))?;
        let attachment = cni_attachment(nic, sandbox);
        let until = Instant::now() + deadline.work_budget();
        match runner.add_until(list, &attachment, Some(until)).await {
            Ok(added) => {
                let data =
                    cni::network_data(&added.result, &attachment.ifname).unwrap_or(NetworkData {
                        interface_name: attachment.ifname.clone(),
                        ..NetworkData::default()
                    });
                Ok(Attached {
                    host: snapshot.clone(),
                    data,
                    cni_result: Some(added.raw),
                })
            }
            Err(CniError::CleanupFailed { add, del }) => Err(AttachFailure::Stuck {
                message: format!(
                    "CNI network {}: {}",
                    list.name,
                    describe(&add, deadline, "ADD")
                ),
                undo: format!("DEL: {del}"),
            }),
            Err(error) => Err(failed(describe(&error, deadline, "ADD"))),
        }
    }

    /// Gives the device of `attachment` back: moves the NIC out and restores its snapshot,
    /// or runs the CNI network's DEL. `netns` is where the pod's namespace can be opened
    /// (it may be gone). Idempotent. Returns a note worth logging, if any.
    ///
    /// # Errors
    /// Why the device could not be given back; the caller keeps the record and retries.
    pub async fn give_back(
        &self,
        ctx: &Backends<'_>,
        attachment: &Attachment,
        netns: &Path,
    ) -> Result<Option<String>, String> {
        let given = self.give_back_unmetered(ctx, attachment, netns).await;
        metrics().give_back(
            self.kind(),
            if given.is_ok() {
                AttachResult::Ok
            } else {
                AttachResult::Failed
            },
        );
        given
    }

    async fn give_back_unmetered(
        &self,
        ctx: &Backends<'_>,
        attachment: &Attachment,
        netns: &Path,
    ) -> Result<Option<String>, String> {
        if ctx.faults.take(Fault::GiveBackFailsOnce) {
            return Err("injected fault: give-back-fails-once".to_owned());
        }
        match self {
            Backend::Move { tag, rdma } => {
                let rdma_note = match rdma {
                    Some(device) => rdma::give_back(ctx.host, device, netns).await?,
                    None => None,
                };
                attach::detach(ctx.host, netns, tag, &attachment.host)
                    .await
                    .map(|outcome| outcome.note.or(rdma_note))
                    .map_err(|e| format!("giving the interface back: {e}"))
            }
            Backend::Cni { list } => {
                let runner = ctx.cni.ok_or_else(cni_disabled)?;
                let _network = ctx.networks.use_network(&list.name, None).await;
                let cni_attachment = runner
                    .attachment_as_added(
                        &list.name,
                        &attachment.sandbox_id,
                        visible_to_children(netns),
                        &attachment.pod_if_name,
                    )
                    .await;
                runner
                    .del(list, &cni_attachment)
                    .await
                    .map(|()| None)
                    .map_err(|e| format!("CNI network {}: {e}", list.name))
            }
        }
    }
}

/// The CNI attachment of `nic` in `sandbox`.
fn cni_attachment(nic: &PreparedNic, sandbox: &PodSandboxRef) -> cni::Attachment {
    cni::Attachment {
        container_id: sandbox.id.clone(),
        netns: PathBuf::from(&sandbox.netns),
        ifname: nic.pod_if_name().to_owned(),
        pod: sandbox.pod.clone(),
    }
}

fn cni_disabled() -> String {
    "CNI mode is not enabled in this netclaim daemon".to_owned()
}

/// A CNI error as users should read it: a plugin killed by the hook's deadline names the
/// runtime setting that bounds it.
fn describe(error: &CniError, deadline: &HookDeadline, verb: &str) -> String {
    if error.is_out_of_time() {
        format!(
            "{error}; {}",
            deadline.expiry_message(&format!("running CNI {verb}"))
        )
    } else {
        error.to_string()
    }
}

/// A namespace path a plugin process can open: `/proc/self/fd/N` (a namespace this process
/// holds open, its descriptor not inherited) becomes `/proc/<our pid>/fd/N`.
pub fn visible_to_children(netns: &Path) -> PathBuf {
    match netns.strip_prefix("/proc/self") {
        Ok(rest) => Path::new("/proc")
            .join(std::process::id().to_string())
            .join(rest),
        Err(_) => netns.to_path_buf(),
    }
}
