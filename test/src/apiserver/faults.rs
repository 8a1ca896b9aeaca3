//! Fault injection and request accounting for tests.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;

/// A cloneable handle that injects faults into the stand-in and counts requests.
///
/// Methods are HTTP methods (`"GET"`, `"POST"`, `"PUT"`, `"PATCH"`, `"DELETE"`) or `"*"`;
/// resources are plural names with an optional subresource (`"resourceslices"`,
/// `"resourceclaims/status"`, `"nodes"`, `"events"`) or `"*"`. Watches count as `GET`.
#[derive(Clone, Default)]
pub struct Faults {
    inner: Arc<Mutex<FaultState>>,
    watches: Arc<watch::Sender<WatchControl>>,
}

/// What tests asked of open watches, by resource (plural name).
#[derive(Clone, Debug, Default)]
pub(crate) struct WatchControl {
    /// Resources whose watches deliver no live events until released.
    held: BTreeSet<String>,
    /// How many times the watches of a resource were expired.
    expiries: BTreeMap<String, u64>,
}

impl WatchControl {
    /// Whether live events of `resource` wait.
    pub(crate) fn is_held(&self, resource: &str) -> bool {
        self.held.contains(resource)
    }

    /// How many times watches of `resource` were expired: a watch opened at count `n` ends
    /// once it is above `n`.
    pub(crate) fn expiries(&self, resource: &str) -> u64 {
        self.expiries.get(resource).copied().unwrap_or(0)
    }
}

#[derive(Default)]
struct FaultState {
    failures: Vec<Failure>,
    latency: Duration,
    counts: BTreeMap<(String, String), usize>,
}

struct Failure {
    method: String,
    resource: String,
    remaining: usize,
    status: u16,
}

/// What the handler should do with a request, decided before it touches the store.
pub(crate) enum Injected {
    /// Serve the request normally.
    None,
    /// Answer with this HTTP status and a `metav1.Status` body.
    Fail(u16),
}

const WRITE_METHODS: [&str; 4] = ["POST", "PUT", "PATCH", "DELETE"];

impl Faults {
    /// The next `count` requests with this HTTP method on this resource fail with `status`
    /// (e.g. 500, 503, 429) and a `metav1.Status` body.
    pub fn fail_next(&self, method: &str, resource: &str, count: usize, status: u16) {
        self.lock().failures.push(Failure {
            method: method.to_ascii_uppercase(),
            resource: resource.to_string(),
            remaining: count,
            status,
        });
    }

    /// The next `count` writes (POST, PUT, PATCH, DELETE) on `resource` answer 409 Conflict.
    pub fn conflict_next(&self, resource: &str, count: usize) {
        let mut state = self.lock();
        // One rule per write method would each allow `count`; a shared rule on "WRITE"
        // keeps the total at `count`.
        state.failures.push(Failure {
            method: "WRITE".to_string(),
            resource: resource.to_string(),
            remaining: count,
            status: 409,
        });
    }

    /// Drops every injected failure not used up yet (ends an outage made with
    /// [`Faults::fail_next`] and a large count).
    pub fn clear_failures(&self) {
        self.lock().failures.clear();
    }

    /// Live events of the watches of `resource` (plural name, open or opened later) wait,
    /// in order, until [`Faults::release_watches`]: a watcher that has fallen behind what
    /// the store holds. What a new watch starts with (the current objects, or the history
    /// after its resourceVersion) is not held.
    pub fn hold_watches(&self, resource: &str) {
        self.watches.send_modify(|c| {
            c.held.insert(resource.to_owned());
        });
    }

    /// Lets the held events of `resource`'s watches go out.
    pub fn release_watches(&self, resource: &str) {
        self.watches.send_modify(|c| {
            c.held.remove(resource);
        });
    }

    /// Ends every open watch of `resource` with a 410 Gone ERROR event, dropping the events
    /// it had not sent, as the real API does when a watch falls out of its history: its
    /// watchers must list again.
    pub fn expire_watches(&self, resource: &str) {
        self.watches.send_modify(|c| {
            *c.expiries.entry(resource.to_owned()).or_default() += 1;
        });
    }

    /// Follows what tests ask of watches.
    pub(crate) fn watch_control(&self) -> watch::Receiver<WatchControl> {
        self.watches.subscribe()
    }

    /// Adds latency to every request.
    pub fn set_latency(&self, latency: Duration) {
        self.lock().latency = latency;
    }

    /// How many requests were received, by (method, resource); `"*"` matches any. Requests
    /// failed by injected faults count too, so tests can assert retries.
    pub fn request_count(&self, method: &str, resource: &str) -> usize {
        let method = method.to_ascii_uppercase();
        self.lock()
            .counts
            .iter()
            .filter(|((m, r), _)| matches(&method, m) && matches(resource, r))
            .map(|(_, count)| count)
            .sum()
    }

    pub(crate) fn latency(&self) -> Duration {
        self.lock().latency
    }

    /// Counts the request and takes the first matching injected failure, if any.
    pub(crate) fn on_request(&self, method: &str, resource: &str) -> Injected {
        let mut state = self.lock();
        *state
            .counts
            .entry((method.to_string(), resource.to_string()))
            .or_default() += 1;
        let is_write = WRITE_METHODS.contains(&method);
        let rule = state.failures.iter_mut().find(|rule| {
            rule.remaining > 0
                && matches(&rule.resource, resource)
                && (matches(&rule.method, method) || (rule.method == "WRITE" && is_write))
        });
        let injected = match rule {
            Some(rule) => {
                rule.remaining -= 1;
                Injected::Fail(rule.status)
            }
            None => Injected::None,
        };
        state.failures.retain(|rule| rule.remaining > 0);
        injected
    }

    fn lock(&self) -> MutexGuard<'_, FaultState> {
        // A panic while holding this lock cannot leave the counters inconsistent.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn matches(pattern: &str, value: &str) -> bool {
    pattern == "*" || pattern == value
}
