//! The pending work of one background API writer ([`crate::status`],
//! [`crate::network_status`]): one item per key (a claim or pod UID), coalesced as new
//! ones arrive, and a count of unfinished items that [`WorkQueue::flush`] waits on.
//!
//! # Guarantees
//! - [`WorkQueue::push`] never blocks on I/O: NRI hooks call it.
//! - Items are handed out one at a time, in key order; an item is unfinished from its push
//!   until the worker calls [`WorkQueue::finished`] for it.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use tokio::sync::{Notify, watch};

struct State<T> {
    pending: BTreeMap<String, T>,
    in_flight: usize,
}

/// A keyed, coalescing queue for a single worker task.
pub(crate) struct WorkQueue<T> {
    state: Mutex<State<T>>,
    wake: Notify,
    outstanding: watch::Sender<usize>,
}

impl<T> WorkQueue<T> {
    pub(crate) fn new() -> Self {
        Self {
            state: Mutex::new(State {
                pending: BTreeMap::new(),
                in_flight: 0,
            }),
            wake: Notify::new(),
            outstanding: watch::channel(0).0,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // Every change below is a single insert/remove/count: a panic cannot leave one
        // half-made.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn publish(&self, state: &State<T>) {
        self.outstanding
            .send_replace(state.pending.len() + state.in_flight);
    }

    /// Queues `item` under `key`; a pending item of that key absorbs it with `merge`.
    pub(crate) fn push(&self, key: String, item: T, merge: impl FnOnce(&mut T, T)) {
        let mut state = self.lock();
        match state.pending.get_mut(&key) {
            Some(pending) => merge(pending, item),
            None => {
                state.pending.insert(key, item);
            }
        }
        self.publish(&state);
        drop(state);
        self.wake.notify_one();
    }

    /// The next item, waiting for one; it counts as unfinished until
    /// [`WorkQueue::finished`].
    pub(crate) async fn next(&self) -> T {
        loop {
            {
                let mut state = self.lock();
                if let Some((_, item)) = state.pending.pop_first() {
                    state.in_flight += 1;
                    self.publish(&state);
                    return item;
                }
            }
            // `notify_one` stores a permit when nobody waits, so a push between the check
            // above and this await is not missed.
            self.wake.notified().await;
        }
    }

    /// The worker is done with the item [`WorkQueue::next`] gave it.
    pub(crate) fn finished(&self) {
        let mut state = self.lock();
        state.in_flight = state.in_flight.saturating_sub(1);
        self.publish(&state);
    }

    /// A newer item pushed for `key` while the worker retries an older one.
    pub(crate) fn take_newer(&self, key: &str) -> Option<T> {
        let mut state = self.lock();
        let newer = state.pending.remove(key);
        self.publish(&state);
        newer
    }

    /// Waits until every item pushed so far is finished.
    pub(crate) async fn flush(&self) {
        let mut outstanding = self.outstanding.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = outstanding.wait_for(|count| *count == 0).await;
    }
}
