//! A hook's deadline, shared by the NRI transport that must answer the runtime in time and
//! the hook doing the work.
//!
//! The runtime waits for an NRI hook at most `plugin_request_timeout` (containerd's default
//! is 2 s) and handles one event at a time, so a slow hook delays every pod on the node, and
//! a hook that misses the deadline gets the plugin disconnected (and then pods start without
//! their NICs). So every hook works against one [`HookDeadline`]:
//! - work that can take long (a CNI plugin) only gets [`HookDeadline::work_budget`]: what is
//!   left minus a reserve for undoing it;
//! - a hook that succeeds must [`HookDeadline::commit`] before it answers; the transport
//!   [`HookDeadline::expire`]s the deadline when it answers "too late" instead. Exactly one
//!   of the two wins, so a hook never reports success for work the runtime was told failed:
//!   a hook whose commit loses undoes what it did (before it releases its locks).
//!
//! # Guarantees
//! - [`HookDeadline::commit`] and [`HookDeadline::expire`] are atomic: at most one succeeds.
//! - A deadline without a runtime (unprepare, reconcile in the background) never expires
//!   early and its budget is only limited by its own timeout.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use tokio::time::Instant;

const RUNNING: u8 = 0;
const COMMITTED: u8 = 1;
const EXPIRED: u8 = 2;

/// The part of the remaining time a piece of work may use; the rest is kept for undoing it
/// and answering.
const WORK_SHARE_PERCENT: u32 = 60;

/// When a hook must be done, and whether it already answered (see the [module docs](self)).
#[derive(Clone, Debug)]
pub struct HookDeadline {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// What is being done, for messages (`RunPodSandbox`).
    what: &'static str,
    at: Instant,
    /// The runtime's request timeout the deadline derives from (`None`: no runtime waits).
    runtime_timeout: Option<Duration>,
    state: AtomicU8,
}

impl HookDeadline {
    /// A deadline `budget` from now for `what`, answering a runtime whose request timeout
    /// is `runtime_timeout`.
    pub fn for_runtime(what: &'static str, budget: Duration, runtime_timeout: Duration) -> Self {
        Self::new(what, budget, Some(runtime_timeout))
    }

    /// A deadline `limit` from now for work nobody waits on with a timeout of its own
    /// (unprepare, background reconcile).
    pub fn background(what: &'static str, limit: Duration) -> Self {
        Self::new(what, limit, None)
    }

    fn new(what: &'static str, budget: Duration, runtime_timeout: Option<Duration>) -> Self {
        Self {
            inner: Arc::new(Inner {
                what,
                at: Instant::now() + budget,
                runtime_timeout,
                state: AtomicU8::new(RUNNING),
            }),
        }
    }

    /// The instant the hook must be done by.
    pub fn at(&self) -> Instant {
        self.inner.at
    }

    /// Time left.
    pub fn remaining(&self) -> Duration {
        self.inner.at.saturating_duration_since(Instant::now())
    }

    /// Whether the time is up or the transport already answered.
    pub fn is_expired(&self) -> bool {
        self.inner.state.load(Ordering::Acquire) == EXPIRED || self.remaining().is_zero()
    }

    /// How long a piece of work that may have to be undone may take: a share of what is
    /// left, keeping the rest for the undo and the answer.
    pub fn work_budget(&self) -> Duration {
        self.remaining() * WORK_SHARE_PERCENT / 100
    }

    /// The hook is about to report success: true when it may (the transport did not give
    /// up on it). After a `false`, the hook must undo its work.
    pub fn commit(&self) -> bool {
        self.inner
            .state
            .compare_exchange(RUNNING, COMMITTED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
            || self.inner.state.load(Ordering::Acquire) == COMMITTED
    }

    /// The transport gives up waiting: true when the hook had not committed, so the
    /// runtime is told the hook failed (and the hook will undo its work).
    pub fn expire(&self) -> bool {
        self.inner
            .state
            .compare_exchange(RUNNING, EXPIRED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
            || self.inner.state.load(Ordering::Acquire) == EXPIRED
    }

    /// Why a hook ran out of time, naming the runtime setting that bounds it.
    pub fn expiry_message(&self, doing: &str) -> String {
        match self.inner.runtime_timeout {
            Some(timeout) => format!(
                "netclaim: {} ran out of time while {doing}: the container runtime waits at \
                 most {timeout:?} for an NRI plugin (containerd's plugin_request_timeout in \
                 [plugins.\"io.containerd.nri.v1.nri\"]); raise it, and netclaim's \
                 --nri-request-timeout-seconds with it, for slow CNI plugins",
                self.inner.what
            ),
            None => format!(
                "netclaim: {} ran out of time while {doing}",
                self.inner.what
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn commit_and_expire_exclude_each_other() {
        let deadline = HookDeadline::for_runtime(
            "RunPodSandbox",
            Duration::from_secs(1),
            Duration::from_secs(2),
        );
        assert!(deadline.commit());
        assert!(deadline.commit(), "committing twice is still committed");
        assert!(!deadline.expire());

        let late = HookDeadline::for_runtime(
            "RunPodSandbox",
            Duration::from_secs(1),
            Duration::from_secs(2),
        );
        assert!(late.expire());
        assert!(late.is_expired());
        assert!(!late.commit());
    }

    #[tokio::test(start_paused = true)]
    async fn work_gets_a_share_and_time_runs_out() {
        let deadline = HookDeadline::background("unprepare", Duration::from_secs(10));
        assert_eq!(deadline.work_budget(), Duration::from_secs(6));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(deadline.remaining(), Duration::from_secs(5));
        assert!(!deadline.is_expired());
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(deadline.is_expired());
        assert_eq!(deadline.work_budget(), Duration::ZERO);
    }

    #[test]
    fn the_message_names_containerds_setting() {
        let deadline = HookDeadline::for_runtime(
            "RunPodSandbox",
            Duration::from_millis(1800),
            Duration::from_secs(2),
        );
        let message = deadline.expiry_message("running CNI plugin macvlan ADD");
        assert!(message.contains("plugin_request_timeout"), "{message}");
        assert!(
            message.contains("running CNI plugin macvlan ADD"),
            "{message}"
        );
    }
}
