//! A level-triggered background writer: it holds, per key, the latest *desired* state of
//! one API object (a claim's status, a pod's network-status annotation) and keeps writing
//! it until the API has it, however long that takes.
//!
//! Callers only say what should be ([`LevelWriter::set`]); they never queue operations. So
//! an API outage of any length ends with the objects as the node is, not as it was when the
//! outage began, and nothing is given up on.
//!
//! # Guarantees
//! - [`LevelWriter::set`] never blocks on I/O (NRI hooks and the checkpoint's change feed
//!   call it).
//! - A key whose desired state equals what was last applied is not written again.
//! - A failing key is retried with capped exponential backoff ([`Backoff`]) forever (until
//!   it succeeds, its object is gone, or it is [`LevelWriter::forget`]ten); other keys are
//!   written meanwhile (one failing object never holds up the rest).
//! - [`LevelWriter::flush`] waits until every key is applied, for graceful shutdown.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::time::Instant;

/// The longest one write may take before it counts as failed and is retried.
const APPLY_LIMIT: Duration = Duration::from_secs(15);

/// Retry policy of a writer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// Wait after the first failure.
    pub initial: Duration,
    /// Longest wait between attempts.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The wait before attempt `failures + 1`.
    pub fn delay(&self, failures: u32) -> Duration {
        let factor = 1u32 << failures.saturating_sub(1).min(16);
        (self.initial * factor).min(self.max)
    }
}

/// How one write ended.
#[derive(Debug)]
pub enum Applied {
    /// The object now has the desired state.
    Done,
    /// The object is gone (404): nothing to write, forget the key.
    Gone,
    /// Try again later (conflict, throttling, a server or transport error).
    Retry(String),
}

/// Writes one key's desired state to the API.
pub trait Apply<K, D>: Send + Sync + 'static {
    /// Makes the object of `key` look like `desired`.
    fn apply(&self, key: &K, desired: &D) -> impl Future<Output = Applied> + Send;

    /// The writer's name in metrics (`writer` label).
    fn name(&self) -> &'static str {
        "writer"
    }
}

struct State<K, D> {
    desired: BTreeMap<K, D>,
    applied: BTreeMap<K, D>,
    /// Keys whose desired state is not applied yet, with when to try next.
    dirty: BTreeMap<K, (Instant, u32)>,
    in_flight: BTreeSet<K>,
}

/// See the [module docs](self).
pub struct LevelWriter<K, D> {
    state: Mutex<State<K, D>>,
    wake: Arc<Notify>,
    backlog: watch::Sender<usize>,
    backoff: Backoff,
    /// [`Apply::name`], for metrics.
    name: &'static str,
}

impl<K, D> LevelWriter<K, D>
where
    K: Ord + Clone + Send + Sync + std::fmt::Debug + 'static,
    D: Clone + PartialEq + Send + Sync + 'static,
{
    /// Starts a writer whose worker applies with `apply`, on the current tokio runtime.
    pub fn start<A: Apply<K, D>>(apply: A, backoff: Backoff) -> Arc<Self> {
        let writer = Arc::new(Self {
            state: Mutex::new(State {
                desired: BTreeMap::new(),
                applied: BTreeMap::new(),
                dirty: BTreeMap::new(),
                in_flight: BTreeSet::new(),
            }),
            wake: Arc::new(Notify::new()),
            backlog: watch::channel(0).0,
            backoff,
            name: apply.name(),
        });
        tokio::spawn(Self::run(Arc::downgrade(&writer), apply));
        writer
    }

    fn lock(&self) -> MutexGuard<'_, State<K, D>> {
        // Every change under the lock is a handful of map operations: a panic cannot leave
        // one half made.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn publish(&self, state: &State<K, D>) {
        self.backlog.send_replace(state.dirty.len());
        crate::metrics::metrics().writer_backlog(self.name, state.dirty.len());
    }

    /// The desired state of `key` becomes `desired`; `merge` combines it with a desired
    /// state not applied yet (`merge(pending, newer)`), e.g. to keep removing what an
    /// earlier state said to remove.
    pub fn set_merging(&self, key: K, desired: D, merge: impl FnOnce(&D, D) -> D) {
        let mut state = self.lock();
        let desired = match (state.dirty.contains_key(&key), state.desired.get(&key)) {
            (true, Some(pending)) => merge(pending, desired),
            _ => desired,
        };
        if state.applied.get(&key) == Some(&desired) && !state.in_flight.contains(&key) {
            state.dirty.remove(&key);
            state.desired.insert(key, desired);
        } else {
            state.desired.insert(key.clone(), desired);
            state.dirty.entry(key).or_insert((Instant::now(), 0));
        }
        self.publish(&state);
        drop(state);
        self.wake.notify_one();
    }

    /// The desired state of `key` becomes `desired`.
    pub fn set(&self, key: K, desired: D) {
        self.set_merging(key, desired, |_, newer| newer);
    }

    /// Records that the API already has `state` for `key` (nothing is written).
    pub fn assume_applied(&self, key: K, applied: D) {
        let mut state = self.lock();
        if !state.dirty.contains_key(&key) {
            state.applied.insert(key.clone(), applied.clone());
            state.desired.insert(key, applied);
        }
    }

    /// Stops tracking `key` (its object is gone for good).
    pub fn forget(&self, key: &K) {
        let mut state = self.lock();
        state.desired.remove(key);
        state.applied.remove(key);
        state.dirty.remove(key);
        self.publish(&state);
    }

    /// The desired state of `key`.
    pub fn desired(&self, key: &K) -> Option<D> {
        self.lock().desired.get(key).cloned()
    }

    /// How many keys wait to be written.
    pub fn backlog(&self) -> usize {
        self.lock().dirty.len()
    }

    /// Waits until every key is applied (or `limit` passes); true when it got there.
    pub async fn flush(&self, limit: Duration) -> bool {
        let mut backlog = self.backlog.subscribe();
        tokio::time::timeout(limit, backlog.wait_for(|n| *n == 0))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// The next key to write and its desired state, or when to look again.
    fn next(&self) -> Result<(K, D), Option<Instant>> {
        let mut state = self.lock();
        let now = Instant::now();
        let ready = state
            .dirty
            .iter()
            .filter(|(key, _)| !state.in_flight.contains(*key))
            .min_by_key(|(_, (at, _))| *at)
            .map(|(key, (at, _))| (key.clone(), *at));
        match ready {
            Some((key, at)) if at <= now => {
                let desired = state.desired.get(&key).cloned();
                match desired {
                    Some(desired) => {
                        state.in_flight.insert(key.clone());
                        Ok((key, desired))
                    }
                    None => {
                        state.dirty.remove(&key);
                        self.publish(&state);
                        Err(Some(now))
                    }
                }
            }
            Some((_, at)) => Err(Some(at)),
            None => Err(None),
        }
    }

    fn finished(&self, key: K, written: D, outcome: Applied) {
        let mut state = self.lock();
        state.in_flight.remove(&key);
        match outcome {
            Applied::Done => {
                let current = state.desired.get(&key) == Some(&written);
                state.applied.insert(key.clone(), written);
                if current {
                    state.dirty.remove(&key);
                } else if let Some(entry) = state.dirty.get_mut(&key) {
                    *entry = (Instant::now(), 0);
                }
            }
            Applied::Gone => {
                state.desired.remove(&key);
                state.applied.remove(&key);
                state.dirty.remove(&key);
            }
            Applied::Retry(error) => {
                let failures = state.dirty.get(&key).map_or(0, |(_, n)| *n) + 1;
                let delay = self.backoff.delay(failures);
                crate::metrics::metrics().writer_retry(self.name);
                tracing::debug!(?key, %error, failures, ?delay, "API write failed; retrying");
                if failures == 5 {
                    tracing::warn!(?key, %error, "API write keeps failing; still retrying");
                }
                state.dirty.insert(key, (Instant::now() + delay, failures));
            }
        }
        self.publish(&state);
    }

    async fn run<A: Apply<K, D>>(writer: std::sync::Weak<Self>, apply: A) {
        loop {
            let Some(this) = writer.upgrade() else { return };
            match this.next() {
                Ok((key, desired)) => {
                    // One write at a time per writer: a request that hangs (a half-open
                    // connection after an outage) must not stall every other key.
                    let outcome = tokio::time::timeout(APPLY_LIMIT, apply.apply(&key, &desired))
                        .await
                        .unwrap_or_else(|_| {
                            Applied::Retry(format!("no answer within {APPLY_LIMIT:?}"))
                        });
                    this.finished(key, desired, outcome);
                }
                Err(wait_until) => {
                    // Drop the strong reference while idle, so a dropped writer ends here.
                    // (`notify_one` leaves a permit when nobody waits: a `set` between
                    // `next` and the wait below is not missed.)
                    let wake = this.wake.clone();
                    drop(this);
                    let notified = wake.notified();
                    let wake = async move {
                        match wait_until {
                            Some(at) => {
                                tokio::select! {
                                    () = notified => {}
                                    () = tokio::time::sleep_until(at) => {}
                                }
                            }
                            None => notified.await,
                        }
                    };
                    // Re-check the writer every second at most, so a dropped one is noticed.
                    let _ = tokio::time::timeout(Duration::from_secs(1), wake).await;
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Fails the first `fail` writes, records every successful one.
    struct Recording {
        fail: AtomicUsize,
        written: Arc<Mutex<Vec<(String, u32)>>>,
    }

    impl Apply<String, u32> for Recording {
        async fn apply(&self, key: &String, desired: &u32) -> Applied {
            if self
                .fail
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return Applied::Retry("injected".into());
            }
            self.written.lock().unwrap().push((key.clone(), *desired));
            Applied::Done
        }
    }

    type Written = Arc<Mutex<Vec<(String, u32)>>>;

    fn writer(fail: usize) -> (Arc<LevelWriter<String, u32>>, Written) {
        let written = Arc::new(Mutex::new(Vec::new()));
        let apply = Recording {
            fail: AtomicUsize::new(fail),
            written: written.clone(),
        };
        let backoff = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(30),
        };
        (LevelWriter::start(apply, backoff), written)
    }

    #[tokio::test(start_paused = true)]
    async fn the_latest_state_wins_and_is_written_once() {
        let (writer, written) = writer(0);
        writer.set("a".into(), 1);
        writer.set("a".into(), 2);
        assert!(writer.flush(Duration::from_secs(5)).await);
        writer.set("a".into(), 2);
        assert!(writer.flush(Duration::from_secs(5)).await);
        assert_eq!(*written.lock().unwrap(), [("a".to_owned(), 2)]);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_are_retried_until_they_succeed_however_many_there_are() {
        let (writer, written) = writer(50);
        writer.set("a".into(), 7);
        assert!(
            !writer.flush(Duration::from_secs(60)).await,
            "still failing after a minute"
        );
        assert_eq!(writer.backlog(), 1);
        // The outage ends some time later; the writer gets there on its own.
        assert!(writer.flush(Duration::from_secs(3600)).await);
        assert_eq!(*written.lock().unwrap(), [("a".to_owned(), 7)]);
    }

    #[tokio::test(start_paused = true)]
    async fn merging_keeps_what_a_pending_state_said() {
        let (writer, _) = writer(1_000_000);
        writer.set("a".into(), 0b01);
        writer.set_merging("a".into(), 0b10, |pending, newer| pending | newer);
        assert_eq!(writer.desired(&"a".to_owned()), Some(0b11));
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let backoff = Backoff {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(30),
        };
        assert_eq!(backoff.delay(1), Duration::from_millis(200));
        assert_eq!(backoff.delay(2), Duration::from_millis(400));
        assert_eq!(backoff.delay(40), Duration::from_secs(30));
    }
}
