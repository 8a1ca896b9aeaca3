//! The hooks' locks: one per NIC ([`NicKey`]) and one per CNI network name.
//!
//! Nothing in the hooks takes a node-wide lock: a hook locks the NICs of its own pod (in
//! one sorted order, so two hooks never deadlock), and waits at most until its deadline.
//! The maps behind the locks are touched only for an insert or a lookup; their mutex is
//! never held across an await.
//!
//! CNI networks: ADD and DEL of a network take its lock shared; CNI GC takes it exclusive,
//! and computes the valid attachments only once it holds it, so GC never frees what an ADD
//! running at the same time is setting up (an IPAM lease taken after GC listed the valid
//! attachments).

use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::{
    Mutex as AsyncMutex, OwnedMutexGuard, OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock,
};
use tokio::time::Instant;

use crate::state::NicKey;

/// A map of locks created on first use and dropped when nobody holds them.
#[derive(Debug)]
struct LockMap<K, L> {
    locks: Mutex<HashMap<K, Weak<L>>>,
}

impl<K: Eq + Hash + Clone, L: Default> LockMap<K, L> {
    fn new() -> Self {
        Self {
            locks: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, key: &K) -> Arc<L> {
        let mut locks = self
            .locks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(lock) = locks.get(key).and_then(Weak::upgrade) {
            return lock;
        }
        if locks.len() > 64 {
            locks.retain(|_, weak| weak.strong_count() > 0);
        }
        let lock = Arc::new(L::default());
        locks.insert(key.clone(), Arc::downgrade(&lock));
        lock
    }
}

/// The per-NIC locks.
#[derive(Debug)]
pub struct NicLocks {
    map: LockMap<NicKey, AsyncMutex<()>>,
}

impl Default for NicLocks {
    fn default() -> Self {
        Self {
            map: LockMap::new(),
        }
    }
}

/// The NIC locks a hook holds; released on drop.
#[derive(Debug)]
pub struct NicGuards {
    _guards: Vec<OwnedMutexGuard<()>>,
}

/// A lock was not free before the deadline.
#[derive(Debug, thiserror::Error)]
#[error("device {0:?} is busy with another pod sandbox's hook")]
pub struct Busy(pub NicKey);

impl NicLocks {
    /// Locks every key of `keys` (in sorted order), waiting at most until `until`.
    ///
    /// # Errors
    /// [`Busy`] naming the key that was not free in time.
    pub async fn lock(
        &self,
        keys: impl IntoIterator<Item = NicKey>,
        until: Option<Instant>,
    ) -> Result<NicGuards, Busy> {
        let keys: BTreeSet<NicKey> = keys.into_iter().collect();
        let mut guards = Vec::with_capacity(keys.len());
        for key in keys {
            let lock = self.map.get(&key);
            let guard = match until {
                Some(until) => tokio::time::timeout_at(until, lock.lock_owned())
                    .await
                    .map_err(|_| Busy(key))?,
                None => lock.lock_owned().await,
            };
            guards.push(guard);
        }
        Ok(NicGuards { _guards: guards })
    }
}

/// The per-CNI-network locks (see the [module docs](self)).
#[derive(Debug)]
pub struct NetworkLocks {
    map: LockMap<String, RwLock<()>>,
}

impl Default for NetworkLocks {
    fn default() -> Self {
        Self {
            map: LockMap::new(),
        }
    }
}

impl NetworkLocks {
    /// Shared: an ADD or DEL of `network`.
    ///
    /// # Errors
    /// `network` when GC held it past `until`.
    pub async fn use_network(
        &self,
        network: &str,
        until: Option<Instant>,
    ) -> Result<OwnedRwLockReadGuard<()>, String> {
        let lock = self.map.get(&network.to_owned());
        match until {
            Some(until) => tokio::time::timeout_at(until, lock.read_owned())
                .await
                .map_err(|_| network.to_owned()),
            None => Ok(lock.read_owned().await),
        }
    }

    /// Exclusive: a GC of `network`.
    pub async fn collect(&self, network: &str) -> OwnedRwLockWriteGuard<()> {
        self.map.get(&network.to_owned()).write_owned().await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn key(device: &str) -> NicKey {
        NicKey::Host {
            pool: "node".into(),
            device: device.into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn different_nics_never_wait_on_each_other() {
        let locks = NicLocks::default();
        let _eth1 = locks.lock([key("eth1")], None).await.unwrap();
        let until = Instant::now() + Duration::from_millis(10);
        locks.lock([key("eth2")], Some(until)).await.unwrap();
        let busy = locks
            .lock([key("eth2"), key("eth1")], Some(until))
            .await
            .unwrap_err();
        assert_eq!(busy.0, key("eth1"));
    }

    #[tokio::test(start_paused = true)]
    async fn gc_excludes_add_and_add_waits_for_gc_until_its_deadline() {
        let locks = NetworkLocks::default();
        let adding = locks.use_network("macnet", None).await.unwrap();
        let also_adding = locks.use_network("macnet", None).await.unwrap();
        let gc = tokio::time::timeout(Duration::from_millis(10), locks.collect("macnet")).await;
        assert!(gc.is_err(), "GC waits for the ADDs");
        drop((adding, also_adding));
        let _gc = locks.collect("macnet").await;
        let until = Instant::now() + Duration::from_millis(10);
        assert_eq!(
            locks.use_network("macnet", Some(until)).await.unwrap_err(),
            "macnet"
        );
        locks.use_network("othernet", Some(until)).await.unwrap();
    }
}
