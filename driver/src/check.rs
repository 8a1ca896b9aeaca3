//! `netclaim check`: CNI CHECK on request, for the CNI-mode attachments on this node.
//!
//! An operator runs it in the DaemonSet pod (`kubectl exec ds/netclaim -- netclaim check`)
//! when a pod's secondary network looks wrong. It reads the running daemon's checkpoint and
//! CNI result cache, never writes either, and runs each attachment's plugins with CHECK
//! and the cached ADD result as `prevResult`, as the CNI spec has runtimes do.
//!
//! # Guarantees
//! - Read-only towards the daemon's state: it can run next to `netclaim run`.
//! - Exit status: success only when every checked attachment passed; attachments still
//!   being set up or torn down are listed as skipped, not failed.
//!
//! # Errors
//! A checkpoint that cannot be read stops the command; a failing CHECK is reported per
//! attachment with the plugin's message.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::checkpoint;
use crate::cni::CniRunner;
use crate::state::{AttachPhase, PreparedClaim, PreparedNic};

/// What CHECK said about one CNI attachment.
#[derive(Debug)]
pub struct CheckOutcome {
    /// `<claim namespace>/<claim name>`.
    pub claim: String,
    /// The published device the network was attached for.
    pub device: String,
    /// The CNI network name.
    pub network: String,
    /// The pod sandbox id (the CNI container id).
    pub sandbox_id: String,
    /// The interface name in the pod.
    pub ifname: String,
    /// What CHECK said.
    pub verdict: Verdict,
}

/// The result of checking one attachment.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every plugin's CHECK passed.
    Passed,
    /// A plugin's CHECK failed (its message), or CHECK could not run.
    Failed(String),
    /// Not checked: the attachment is being set up or torn down.
    Skipped(String),
}

/// Runs CHECK for every attached CNI-mode device of `claims` (only claim `only`, given as
/// `<namespace>/<name>` or a claim UID, when set).
pub async fn check_attachments(
    claims: &[PreparedClaim],
    runner: &CniRunner,
    only: Option<&str>,
) -> Vec<CheckOutcome> {
    let mut outcomes = Vec::new();
    for claim in claims {
        if only.is_some_and(|wanted| !names_claim(claim, wanted)) {
            continue;
        }
        for nic in &claim.nics {
            if let Some(outcome) = check_nic(claim, nic, runner).await {
                outcomes.push(outcome);
            }
        }
    }
    outcomes
}

fn names_claim(claim: &PreparedClaim, wanted: &str) -> bool {
    claim.uid == wanted || format!("{}/{}", claim.namespace, claim.name) == wanted
}

/// CHECK for one device; `None` when it is not a CNI-mode device attached to a pod.
async fn check_nic(
    claim: &PreparedClaim,
    nic: &PreparedNic,
    runner: &CniRunner,
) -> Option<CheckOutcome> {
    let network = nic.cni.as_ref()?;
    let attachment = nic.attachment.as_ref()?;
    let network_name = network["name"].as_str().unwrap_or_default().to_owned();
    let mut outcome = CheckOutcome {
        claim: format!("{}/{}", claim.namespace, claim.name),
        device: nic.device.clone(),
        network: network_name.clone(),
        sandbox_id: attachment.sandbox_id.clone(),
        ifname: attachment.pod_if_name.clone(),
        verdict: Verdict::Passed,
    };
    if attachment.phase != AttachPhase::Attached {
        outcome.verdict = Verdict::Skipped(format!(
            "the attachment is {:?} (the daemon is working on it)",
            attachment.phase
        ));
        return Some(outcome);
    }
    let cni_attachment = runner
        .attachment_as_added(
            &network_name,
            &attachment.sandbox_id,
            PathBuf::from(&attachment.netns_path),
            &attachment.pod_if_name,
        )
        .await;
    if let Err(error) = runner.check(&network_name, &cni_attachment).await {
        outcome.verdict = Verdict::Failed(error.to_string());
    }
    Some(outcome)
}

/// `netclaim check`: loads the checkpoint in `state_dir`, checks, prints one line per
/// attachment to `out`, and returns whether all passed.
///
/// # Errors
/// The checkpoint cannot be read, or `out` cannot be written.
pub async fn run(
    state_dir: PathBuf,
    runner: &CniRunner,
    only: Option<&str>,
    out: &mut impl Write,
) -> Result<bool> {
    let dir = state_dir.clone();
    let claims = tokio::task::spawn_blocking(move || checkpoint::read_only(&dir))
        .await
        .context("reading the checkpoint")?
        .with_context(|| format!("reading the checkpoint in {}", state_dir.display()))?;
    let outcomes = check_attachments(&claims, runner, only).await;
    if outcomes.is_empty() {
        writeln!(out, "no CNI-mode attachments to check")?;
    }
    let mut all_passed = true;
    for outcome in &outcomes {
        let verdict = match &outcome.verdict {
            Verdict::Passed => "OK".to_owned(),
            Verdict::Skipped(reason) => format!("SKIPPED: {reason}"),
            Verdict::Failed(reason) => {
                all_passed = false;
                format!("FAILED: {reason}")
            }
        };
        writeln!(
            out,
            "claim {} device {} network {} sandbox {} interface {}: {verdict}",
            outcome.claim, outcome.device, outcome.network, outcome.sandbox_id, outcome.ifname
        )?;
    }
    Ok(all_passed)
}
