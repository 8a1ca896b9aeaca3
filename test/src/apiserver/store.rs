//! The in-memory object store, the global resourceVersion counter and the change history
//! that watches replay and follow.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::merge::Managers;

/// How many changes are kept for watches that resume from a resourceVersion.
const HISTORY_LIMIT: usize = 20_000;

/// `(group, plural, namespace, name)`; the namespace is empty for cluster-scoped objects.
pub(crate) type Key = (&'static str, &'static str, String, String);

/// One stored object and who owns which of its fields (server-side apply).
#[derive(Clone, Debug)]
pub(crate) struct Stored {
    pub object: Value,
    pub managers: Managers,
}

/// What happened to an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ChangeKind {
    Added,
    Modified,
    Deleted,
}

/// One committed change, as watches see it.
#[derive(Debug)]
pub(crate) struct Change {
    pub group: &'static str,
    pub plural: &'static str,
    pub namespace: String,
    pub rv: u64,
    pub kind: ChangeKind,
    /// The object after the change (for deletions: its last state, at the deletion's rv).
    pub object: Value,
    /// The object before a modification, so selector-filtered watches see objects leave.
    pub old: Option<Value>,
}

/// All objects of all types, under one resourceVersion sequence.
pub(crate) struct Store {
    rv: u64,
    objects: BTreeMap<Key, Stored>,
    history: VecDeque<Arc<Change>>,
    changes: broadcast::Sender<Arc<Change>>,
}

/// Receives every change committed after it was made.
pub(crate) type ChangeReceiver = broadcast::Receiver<Arc<Change>>;

/// A watch asked to resume before the oldest retained change.
pub(crate) struct Gone;

impl Store {
    pub fn new() -> Self {
        let (changes, _) = broadcast::channel(4096);
        // Start above 0: "0" means "any version" to clients.
        Store {
            rv: 1,
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            changes,
        }
    }

    /// The latest resourceVersion handed out.
    pub fn current_rv(&self) -> u64 {
        self.rv
    }

    pub fn get(&self, key: &Key) -> Option<&Stored> {
        self.objects.get(key)
    }

    /// Objects of one type, optionally in one namespace, in key order.
    pub fn list<'a>(
        &'a self,
        group: &'static str,
        plural: &'static str,
        namespace: Option<&'a str>,
    ) -> impl Iterator<Item = (&'a Key, &'a Stored)> + 'a {
        self.objects.iter().filter(move |(key, _)| {
            key.0 == group && key.1 == plural && namespace.is_none_or(|ns| key.2 == ns)
        })
    }

    /// Stores `stored` under `key` at a new resourceVersion and tells watchers. Returns the
    /// object as stored.
    pub fn commit(&mut self, key: Key, mut stored: Stored) -> Value {
        self.rv += 1;
        set_rv(&mut stored.object, self.rv);
        let old = self.objects.get(&key).map(|s| s.object.clone());
        let kind = if old.is_some() {
            ChangeKind::Modified
        } else {
            ChangeKind::Added
        };
        let object = stored.object.clone();
        self.objects.insert(key.clone(), stored);
        self.record(&key, kind, object.clone(), old);
        object
    }

    /// Removes the object under `key` at a new resourceVersion and tells watchers. Returns
    /// its last state.
    pub fn remove(&mut self, key: &Key) -> Option<Value> {
        let mut stored = self.objects.remove(key)?;
        self.rv += 1;
        set_rv(&mut stored.object, self.rv);
        self.record(key, ChangeKind::Deleted, stored.object.clone(), None);
        Some(stored.object)
    }

    /// Changes after `rv` still in the history, and a receiver for every later change. Both
    /// are taken under the store's lock, so nothing falls between them.
    pub fn follow_from(&self, rv: u64) -> Result<(Vec<Arc<Change>>, ChangeReceiver), Gone> {
        if let Some(oldest) = self.history.front()
            && rv + 1 < oldest.rv
        {
            return Err(Gone);
        }
        let replay = self.history.iter().filter(|c| c.rv > rv).cloned().collect();
        Ok((replay, self.changes.subscribe()))
    }

    fn record(&mut self, key: &Key, kind: ChangeKind, object: Value, old: Option<Value>) {
        let change = Arc::new(Change {
            group: key.0,
            plural: key.1,
            namespace: key.2.clone(),
            rv: self.rv,
            kind,
            object,
            old,
        });
        if self.history.len() >= HISTORY_LIMIT {
            self.history.pop_front();
        }
        self.history.push_back(change.clone());
        // No receivers is fine: nobody is watching.
        let _ = self.changes.send(change);
    }
}

fn set_rv(object: &mut Value, rv: u64) {
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".to_string(), json!(rv.to_string()));
    }
}
