//! The checkpoint: a crash-safe record of every prepared claim, one file per claim, with a
//! lock-free in-memory index the NRI hooks read.
//!
//! # Layout
//! ```text
//! <state dir>/claims/<claim uid>.json           durable records: two fixed-size slots
//! <state dir>/claims/<claim uid>.volatile.json  volatile records: two slots, never flushed
//! ```
//! A record is `{"version": 2, "seq": N, "checksum": "<sha256 hex of data>", "data": {...}}`
//! with `data` a [`PreparedClaim`]; the checksum is over the exact bytes of `data` as
//! written. Each file holds two slots of equal size (a multiple of 4 KiB), each a record
//! padded with spaces or only spaces; a file of netclaim before 0.3 holds a single record
//! and is read as such. Of a claim's valid records (four slots), the one with the highest
//! `seq` is the claim's record.
//!
//! # Guarantees
//! - A write costs what changed: only the claim's own file is encoded, hashed and written.
//!   Writers of different claims never wait on each other; the hooks' readers never wait
//!   at all ([`Checkpoint::index`] is an atomic pointer load).
//! - A process crash leaves the old or the new record, never a torn one: a write goes into
//!   the slot of its file that does not hold the file's newest record (one `pwrite` into
//!   the page cache, which outlives the process), or into a new file by rename. Should a
//!   kill land inside a `pwrite` and tear the slot, the other slot and the other file
//!   still hold the record before it.
//! - [`Durability::Durable`] writes survive a machine crash. The first one of a claim (its
//!   prepare) creates the slotted file: temp file, fsync, rename, directory fsync. Later
//!   ones overwrite the older slot in place and `fdatasync`: the file's size and blocks do
//!   not change, so that is one data flush and no journal commit (0.30x the rename
//!   scheme's cost on an idle ext4 disk, 0.50x on a busy one: docs/benchmarks.md, CNI
//!   mode), which is what the
//!   `Attaching` record written in a CNI-mode RUN hook pays. A crash in the middle of an
//!   overwrite tears only the slot being written, which was not yet acknowledged; the other
//!   slot still holds the previous durable record, so a torn slot (not a record, or a
//!   checksum mismatch) is ignored when the other one is valid. A record that outgrows its
//!   slot is written as a new slotted file, by rename. [`Durability::Volatile`] writes go
//!   into the slots of the claim's `.volatile.json` the same way, but are never flushed, and
//!   its first one creates the file by rename without fsync: after a machine crash either
//!   slot may hold anything from its old to its new bytes, so a damaged volatile slot is
//!   always ignored, and loading falls back to the newest valid record, the durable one
//!   at worst (a volatile write never touches the durable file). Callers make volatile
//!   only what a machine crash makes moot anyway (see [`Durability`]). A volatile
//!   overwrite costs a `pwrite` (~0.01 ms); the new file and rename it replaced cost ~0.2 ms
//!   on disk in inode and journal work (docs/benchmarks.md, CNI mode).
//! - Memory follows disk: once a rename or a slot overwrite happened, the index holds the
//!   new record even when a later step (an fsync) fails and the write returns an error.
//! - Files are 0600 in a 0700 directory.
//! - A corrupt record (a checksum mismatch, an unknown version, a durable record that does
//!   not parse) is never silently replaced or skipped: opening fails unless the caller chose
//!   [`Recovery::StartEmpty`], which sets the claim's files aside as
//!   `<file>.corrupt-<timestamp>` and goes on without that claim. Only what a machine crash
//!   leaves is ignored: a torn durable slot next to a valid one, a damaged volatile slot,
//!   and a single-record volatile file of an older netclaim that is not even JSON. A slot
//!   of an unknown version is never ignored (a newer netclaim wrote it).
//! - A checkpoint of netclaim 0.1 (`<state dir>/checkpoint.json`, one file for all claims)
//!   is migrated on open: every claim is written durably in the new layout, then the old
//!   file is renamed `checkpoint.json.migrated`.
//!
//! # Assumptions
//! - One process owns the directory (`netclaim check` only reads, with [`read_only`]).
//! - A write into the middle of a file that does not change its size tears at worst the
//!   range written (no filesystem this runs on rewrites neighbouring blocks in place).
//! - Downgrading to a netclaim before 0.3 works while no claim's second slot was written;
//!   after that the older netclaim refuses a durable file as corrupt (it loses nothing),
//!   and reads a volatile one as torn, falling back to the durable record.
//! - Claim UIDs are Kubernetes UIDs; anything that is not a safe file name is refused.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::state::{PodRef, PreparedClaim, PreparedNic};

/// The directory of claim records inside the state directory.
pub const CLAIMS_DIR: &str = "claims";
/// The record format this code writes and reads.
pub const VERSION: u32 = 2;
/// The single-file checkpoint of netclaim 0.1, migrated on open.
pub const LEGACY_FILE_NAME: &str = "checkpoint.json";

const DURABLE_SUFFIX: &str = ".json";
const VOLATILE_SUFFIX: &str = ".volatile.json";
const TEMP_PREFIX: &str = ".tmp-";
/// Slots are whole pages, so an overwrite never shares a page with the other slot.
const SLOT_ALIGN: usize = 4096;

/// How far a write must get before it returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// On disk, through a power cut: for what must outlive the machine (prepared claims,
    /// and the record written before an attach changes anything).
    Durable,
    /// Visible to the next process (in the page cache, never flushed): for records whose
    /// loss in a machine crash changes nothing, because the crash ends every pod netns
    /// they describe.
    Volatile,
}

/// What to do when a record on disk is corrupt.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Recovery {
    /// Fail to open; leave the files where they are for an operator to inspect.
    #[default]
    Fail,
    /// Set the claim's files aside as `<file>.corrupt-<timestamp>` and go on without it.
    StartEmpty,
}

/// Why the checkpoint could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// A filesystem operation failed.
    #[error("checkpoint: {action} {path}: {source}")]
    Io {
        /// What was being done, e.g. "renaming".
        action: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A file exists but cannot be trusted.
    #[error(
        "checkpoint record {path} is corrupt: {reason}; refusing to forget a prepared claim \
         (move it aside, or start with --discard-corrupt-checkpoint to go on without it)"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A claim UID that cannot name a file.
    #[error("checkpoint: claim uid {0:?} is not a safe file name")]
    BadUid(String),
    /// The record could not be encoded (should not happen for [`PreparedClaim`]).
    #[error("checkpoint: encoding a record: {0}")]
    Encode(#[from] serde_json::Error),
    /// The blocking task doing the write died.
    #[error("checkpoint: the write task failed: {0}")]
    Task(String),
}

/// Every prepared claim, indexed for the hooks. Immutable: a write publishes a new one.
#[derive(Clone, Debug, Default)]
pub struct ClaimIndex {
    claims: BTreeMap<String, Arc<PreparedClaim>>,
    by_pod: HashMap<String, Vec<Arc<PreparedClaim>>>,
}

impl ClaimIndex {
    fn build(claims: BTreeMap<String, Arc<PreparedClaim>>) -> Self {
        let mut by_pod: HashMap<String, Vec<Arc<PreparedClaim>>> = HashMap::new();
        for claim in claims.values() {
            for pod in &claim.pods {
                by_pod
                    .entry(pod.uid.clone())
                    .or_default()
                    .push(claim.clone());
            }
        }
        Self { claims, by_pod }
    }

    /// The claims reserved for the pod with UID `pod_uid`, ordered by claim UID.
    pub fn claims_for_pod(&self, pod_uid: &str) -> &[Arc<PreparedClaim>] {
        self.by_pod.get(pod_uid).map_or(&[], Vec::as_slice)
    }

    /// The claim with UID `uid`.
    pub fn claim(&self, uid: &str) -> Option<&Arc<PreparedClaim>> {
        self.claims.get(uid)
    }

    /// Every claim, ordered by UID.
    pub fn claims(&self) -> impl Iterator<Item = &Arc<PreparedClaim>> {
        self.claims.values()
    }

    /// How many claims there are.
    pub fn len(&self) -> usize {
        self.claims.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.claims.is_empty()
    }

    /// Every pod some claim is reserved for.
    pub fn pods(&self) -> impl Iterator<Item = &PodRef> {
        self.claims.values().flat_map(|claim| claim.pods.iter())
    }
}

/// The on-disk envelope, as written.
#[derive(Serialize)]
struct EnvelopeOut<'a> {
    version: u32,
    seq: u64,
    checksum: String,
    data: &'a RawValue,
}

/// The on-disk envelope, as read.
#[derive(Deserialize)]
struct EnvelopeIn {
    version: u32,
    seq: u64,
    checksum: String,
    data: Box<RawValue>,
}

/// A handle on the checkpoint directory (see the [module docs](self)).
#[derive(Debug)]
pub struct Checkpoint {
    records: PathBuf,
    index: ArcSwap<ClaimIndex>,
    /// The last `seq` written per claim (a write uses the next one).
    seqs: Mutex<HashMap<String, u64>>,
    /// Per claim, of its slotted files: the slot size and which slot to overwrite.
    slots: Mutex<HashMap<String, FileSlots>>,
    /// Serializes writers of one claim (read-modify-write), never of two claims.
    writers: Mutex<HashMap<String, Weak<Mutex<()>>>>,
    changed: watch::Sender<u64>,
    saves: AtomicU64,
    temp_counter: AtomicU64,
}

impl Checkpoint {
    /// Opens (creating the directory if needed) and loads the checkpoint in `state_dir`,
    /// migrating a netclaim 0.1 checkpoint. Blocking: call it at start-up, or from a
    /// blocking task.
    ///
    /// # Errors
    /// [`CheckpointError::Io`] when the directory or a file cannot be read or written;
    /// [`CheckpointError::Corrupt`] for a corrupt record when `recovery` is
    /// [`Recovery::Fail`].
    pub fn open(
        state_dir: impl Into<PathBuf>,
        recovery: Recovery,
    ) -> Result<Self, CheckpointError> {
        let state_dir = state_dir.into();
        let records = state_dir.join(CLAIMS_DIR);
        for dir in [&state_dir, &records] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|source| io("creating directory", dir, source))?;
        }
        remove_temp_files(&records);
        let Loaded {
            claims,
            seqs,
            slots,
        } = load_records(&records, recovery)?;
        let checkpoint = Self {
            records,
            index: ArcSwap::from_pointee(ClaimIndex::build(claims)),
            seqs: Mutex::new(seqs),
            slots: Mutex::new(slots),
            writers: Mutex::default(),
            changed: watch::channel(0).0,
            saves: AtomicU64::new(0),
            temp_counter: AtomicU64::new(0),
        };
        checkpoint.migrate_legacy(&state_dir)?;
        Ok(checkpoint)
    }

    /// The directory holding the claim records.
    pub fn records_dir(&self) -> &Path {
        &self.records
    }

    /// The current index: a pointer load, never a wait.
    pub fn index(&self) -> Arc<ClaimIndex> {
        self.index.load_full()
    }

    /// The prepared claim with UID `uid`.
    pub fn claim(&self, uid: &str) -> Option<Arc<PreparedClaim>> {
        self.index.load().claim(uid).cloned()
    }

    /// Every record as the files on disk say now (memory is not touched): what a restarted
    /// daemon would load.
    ///
    /// # Errors
    /// As [`Checkpoint::open`] with [`Recovery::Fail`].
    pub fn on_disk(&self) -> Result<BTreeMap<String, PreparedClaim>, CheckpointError> {
        let loaded = load_records(&self.records, Recovery::Fail)?;
        Ok(loaded
            .claims
            .into_iter()
            .map(|(uid, claim)| (uid, Arc::unwrap_or_clone(claim)))
            .collect())
    }

    /// Resolves each time the index changes (the value counts changes).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// How many records this handle wrote or removed (for tests of "no rewrite").
    pub fn save_count(&self) -> u64 {
        self.saves.load(Ordering::Relaxed)
    }

    /// Replaces the record of claim `uid` with what `change` makes of the current one
    /// (`None`: no record) and returns `change`'s result. A `None` from `change` removes
    /// the record (always durably); an unchanged record writes nothing. Blocking.
    ///
    /// # Errors
    /// `change`'s own error (nothing is written then), or a [`CheckpointError`] converted
    /// into `E` when the write failed (see the module's guarantee on memory following disk).
    pub fn update<R, E>(
        &self,
        uid: &str,
        durability: Durability,
        change: impl FnOnce(Option<&PreparedClaim>) -> Result<(Option<PreparedClaim>, R), E>,
    ) -> Result<R, E>
    where
        E: From<CheckpointError>,
    {
        check_uid(uid)?;
        let writer = self.writer(uid);
        let _serialized = writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let current = self.claim(uid);
        let (next, result) = change(current.as_deref())?;
        match (current.as_deref(), next) {
            (None, None) => {}
            (Some(old), Some(new)) if *old == new => {}
            (_, Some(new)) => self.write(uid, new, durability)?,
            (Some(_), None) => self.remove(uid)?,
        }
        Ok(result)
    }

    /// [`Checkpoint::update`] on a blocking thread, for async callers (the NRI hooks and
    /// the kubelet calls never do disk work on the async runtime's threads).
    ///
    /// # Errors
    /// As [`Checkpoint::update`].
    pub async fn update_async<R, E, F>(
        self: &Arc<Self>,
        uid: &str,
        durability: Durability,
        change: F,
    ) -> Result<R, E>
    where
        F: FnOnce(Option<&PreparedClaim>) -> Result<(Option<PreparedClaim>, R), E> + Send + 'static,
        R: Send + 'static,
        E: From<CheckpointError> + Send + 'static,
    {
        let this = self.clone();
        let uid = uid.to_owned();
        tokio::task::spawn_blocking(move || this.update(&uid, durability, change))
            .await
            .map_err(|e| E::from(CheckpointError::Task(e.to_string())))?
    }

    /// Changes one device entry `(device, share_id)` of claim `uid` with `change`, on a
    /// blocking thread.
    ///
    /// # Errors
    /// [`NicUpdateError::UnknownClaim`] / [`NicUpdateError::UnknownDevice`], or the write's.
    pub async fn update_nic(
        self: &Arc<Self>,
        uid: &str,
        device: &str,
        share_id: Option<&str>,
        durability: Durability,
        change: impl FnOnce(&mut PreparedNic) + Send + 'static,
    ) -> Result<(), NicUpdateError> {
        let (claim_uid, device, share_id) = (
            uid.to_owned(),
            device.to_owned(),
            share_id.map(str::to_owned),
        );
        self.update_async(uid, durability, move |current| {
            let mut claim = current
                .cloned()
                .ok_or_else(|| NicUpdateError::UnknownClaim(claim_uid.clone()))?;
            let nic = claim
                .nics
                .iter_mut()
                .find(|nic| nic.is(&device, share_id.as_deref()))
                .ok_or_else(|| NicUpdateError::UnknownDevice {
                    claim_uid: claim_uid.clone(),
                    device: device.clone(),
                })?;
            change(nic);
            Ok((Some(claim), ()))
        })
        .await
    }

    fn writer(&self, uid: &str) -> Arc<Mutex<()>> {
        let mut writers = self
            .writers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(existing) = writers.get(uid).and_then(Weak::upgrade) {
            return existing;
        }
        writers.retain(|_, weak| weak.strong_count() > 0);
        let writer = Arc::new(Mutex::new(()));
        writers.insert(uid.to_owned(), Arc::downgrade(&writer));
        writer
    }

    fn next_seq(&self, uid: &str) -> u64 {
        let mut seqs = self
            .seqs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let seq = seqs.entry(uid.to_owned()).or_insert(0);
        *seq += 1;
        *seq
    }

    fn write(
        &self,
        uid: &str,
        claim: PreparedClaim,
        durability: Durability,
    ) -> Result<(), CheckpointError> {
        let bytes = encode(&claim, self.next_seq(uid))?;
        // Once the bytes are where the next process reads them, memory follows disk
        // whatever fails next (`written` carries that later failure). A volatile file
        // left behind by a durable write holds lower seqs: it is kept, to be overwritten
        // in place by the next volatile write (an unlink now and a new file then would
        // cost more than the disk space saved).
        let written = self.write_slotted(uid, durability, &bytes)?;
        self.saves.fetch_add(1, Ordering::Relaxed);
        self.publish(uid, Some(Arc::new(claim)));
        written
    }

    /// Writes a record into the claim's file for `durability`: into the slot not holding
    /// the file's newest record when it fits (one `pwrite`, and one `fdatasync` when
    /// durable), else as a new slotted file (rename; fsyncs of the file and the directory
    /// when durable). The outer error: nothing was written; the inner one: written, but
    /// maybe not yet durable.
    fn write_slotted(
        &self,
        uid: &str,
        durability: Durability,
        bytes: &[u8],
    ) -> Result<Result<(), CheckpointError>, CheckpointError> {
        let path = self.path(uid, durability);
        let synced = durability == Durability::Durable;
        let current = self.slots_lock().get(uid).and_then(|f| f.get(durability));
        if let Some(slots) = current.filter(|slots| bytes.len() <= slots.size) {
            let written = overwrite_slot(&path, slots, bytes, synced)?;
            self.set_slots(uid, durability, slots.flipped());
            return Ok(written);
        }
        let slots = Slots::fitting(bytes.len());
        let mut file = pad_slot(bytes, slots.size);
        file.resize(2 * slots.size, b' ');
        self.replace_file(&path, &file, synced)?;
        self.set_slots(uid, durability, slots);
        Ok(if synced {
            sync_dir(&self.records)
        } else {
            Ok(())
        })
    }

    fn set_slots(&self, uid: &str, durability: Durability, slots: Slots) {
        self.slots_lock()
            .entry(uid.to_owned())
            .or_default()
            .set(durability, slots);
    }

    /// Replaces `target` with a file of `bytes` (temp file, rename; fsynced before the
    /// rename when `synced`).
    fn replace_file(
        &self,
        target: &Path,
        bytes: &[u8],
        synced: bool,
    ) -> Result<(), CheckpointError> {
        let temp = self.records.join(format!(
            "{TEMP_PREFIX}{}-{}",
            target
                .file_name()
                .map(|name| name.to_string_lossy())
                .unwrap_or_default(),
            self.temp_counter.fetch_add(1, Ordering::Relaxed)
        ));
        if let Err(error) = write_file(&temp, bytes, synced) {
            let _ = fs::remove_file(&temp);
            return Err(error);
        }
        if let Err(source) = fs::rename(&temp, target) {
            let _ = fs::remove_file(&temp);
            return Err(io("renaming into place", target, source));
        }
        Ok(())
    }

    fn slots_lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, FileSlots>> {
        self.slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn remove(&self, uid: &str) -> Result<(), CheckpointError> {
        let mut first_error = None;
        for path in [Durability::Volatile, Durability::Durable].map(|d| self.path(uid, d)) {
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    first_error.get_or_insert(io("removing", &path, source));
                }
            }
        }
        if let Some(error) = first_error {
            return Err(error);
        }
        self.slots_lock().remove(uid);
        self.saves.fetch_add(1, Ordering::Relaxed);
        self.publish(uid, None);
        sync_dir(&self.records)
    }

    fn publish(&self, uid: &str, claim: Option<Arc<PreparedClaim>>) {
        self.index.rcu(|current| {
            let mut claims = current.claims.clone();
            match &claim {
                Some(claim) => claims.insert(uid.to_owned(), claim.clone()),
                None => claims.remove(uid),
            };
            ClaimIndex::build(claims)
        });
        self.changed.send_modify(|count| *count += 1);
    }

    /// The claim's file for records of `durability`.
    fn path(&self, uid: &str, durability: Durability) -> PathBuf {
        record_path(&self.records, uid, durability)
    }

    /// Moves the claims of a netclaim 0.1 `checkpoint.json` into per-claim records.
    fn migrate_legacy(&self, state_dir: &Path) -> Result<(), CheckpointError> {
        let legacy = state_dir.join(LEGACY_FILE_NAME);
        let Some(claims) = legacy::load(&legacy)? else {
            return Ok(());
        };
        tracing::info!(checkpoint = %legacy.display(), claims = claims.len(), "migrating the checkpoint of netclaim 0.1");
        for claim in claims {
            let uid = claim.uid.clone();
            check_uid(&uid)?;
            if self.claim(&uid).is_none() {
                self.write(&uid, claim, Durability::Durable)?;
            }
        }
        let done = legacy.with_file_name(format!("{LEGACY_FILE_NAME}.migrated"));
        fs::rename(&legacy, &done).map_err(|source| io("renaming", &legacy, source))?;
        let _ = fs::remove_file(legacy.with_file_name(format!("{LEGACY_FILE_NAME}.durable")));
        sync_dir(state_dir)
    }
}

/// Why a device entry could not be changed.
#[derive(Debug, thiserror::Error)]
pub enum NicUpdateError {
    /// No prepared claim has that UID.
    #[error("claim {0} is not prepared")]
    UnknownClaim(String),
    /// The claim has no such device.
    #[error("claim {claim_uid} has no device {device}")]
    UnknownDevice {
        /// The claim.
        claim_uid: String,
        /// The device asked for.
        device: String,
    },
    /// The write failed.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
}

/// Reads every record in `state_dir` without writing anything (no directory created, no
/// temp file removed, no migration), so it is safe next to a running daemon
/// (`netclaim check`). A netclaim 0.1 checkpoint not yet migrated is read as well.
///
/// # Errors
/// As [`Checkpoint::open`] with [`Recovery::Fail`].
pub fn read_only(state_dir: &Path) -> Result<Vec<PreparedClaim>, CheckpointError> {
    let records = state_dir.join(CLAIMS_DIR);
    let mut claims: BTreeMap<String, PreparedClaim> = BTreeMap::new();
    if let Some(legacy) = legacy::load(&state_dir.join(LEGACY_FILE_NAME))? {
        claims.extend(legacy.into_iter().map(|c| (c.uid.clone(), c)));
    }
    if records.is_dir() {
        let loaded = load_records(&records, Recovery::Fail)?;
        claims.extend(
            loaded
                .claims
                .into_iter()
                .map(|(uid, claim)| (uid, Arc::unwrap_or_clone(claim))),
        );
    }
    Ok(claims.into_values().collect())
}

fn check_uid(uid: &str) -> Result<(), CheckpointError> {
    let safe = !uid.is_empty()
        && uid.len() <= 128
        && !uid.starts_with('.')
        && uid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if safe {
        Ok(())
    } else {
        Err(CheckpointError::BadUid(uid.to_owned()))
    }
}

/// What loading the records directory found.
struct Loaded {
    claims: BTreeMap<String, Arc<PreparedClaim>>,
    seqs: HashMap<String, u64>,
    slots: HashMap<String, FileSlots>,
}

/// Loads every claim record in `records`.
fn load_records(records: &Path, recovery: Recovery) -> Result<Loaded, CheckpointError> {
    let entries = fs::read_dir(records).map_err(|source| io("listing", records, source))?;
    let mut uids = std::collections::BTreeSet::new();
    for entry in entries {
        let entry = entry.map_err(|source| io("listing", records, source))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with('.') || name.contains(".corrupt-") {
            continue;
        }
        if let Some(uid) = name
            .strip_suffix(VOLATILE_SUFFIX)
            .or_else(|| name.strip_suffix(DURABLE_SUFFIX))
        {
            uids.insert(uid.to_owned());
        }
    }
    let mut loaded = Loaded {
        claims: BTreeMap::new(),
        seqs: HashMap::new(),
        slots: HashMap::new(),
    };
    for uid in uids {
        match load_claim(records, &uid) {
            Ok((record, slots)) => {
                loaded.slots.insert(uid.clone(), slots);
                if let Some((seq, claim)) = record {
                    loaded.seqs.insert(uid.clone(), seq);
                    loaded.claims.insert(uid, Arc::new(claim));
                }
            }
            Err(CheckpointError::Corrupt { path, reason }) if recovery == Recovery::StartEmpty => {
                let aside = set_aside(records, &uid)?;
                tracing::error!(
                    record = %path.display(), kept_as = ?aside, %reason,
                    "checkpoint record is corrupt; going on without this claim as told"
                );
            }
            Err(error) => return Err(error),
        }
    }
    Ok(loaded)
}

/// One claim's record: the valid record with the highest `seq` of its durable file and its
/// volatile one (see [`decode_volatile`] for what of a volatile file is ignored), and the
/// files' slots.
fn load_claim(records: &Path, uid: &str) -> Result<(Option<SeqClaim>, FileSlots), CheckpointError> {
    let mut slots = FileSlots::default();
    let durable_path = record_path(records, uid, Durability::Durable);
    let durable = match read_file(&durable_path)? {
        None => None,
        Some(bytes) => {
            let record = decode_durable(&bytes).map_err(|reason| CheckpointError::Corrupt {
                path: durable_path.clone(),
                reason,
            })?;
            if let Some(reason) = &record.torn_slot {
                tracing::warn!(record = %durable_path.display(), %reason, "a durable checkpoint slot is torn (a machine crash during its write); using the other slot");
            }
            slots.durable = record.slots;
            Some((record.seq, record.claim))
        }
    };
    let volatile_path = record_path(records, uid, Durability::Volatile);
    let volatile = match read_file(&volatile_path)? {
        None => None,
        Some(bytes) => {
            let record = decode_volatile(&bytes).map_err(|reason| CheckpointError::Corrupt {
                path: volatile_path.clone(),
                reason,
            })?;
            match record {
                None => {
                    // The next volatile write replaces the file.
                    tracing::warn!(record = %volatile_path.display(), "no volatile checkpoint record survived (a machine crash); using the durable one");
                    None
                }
                Some(record) => {
                    if let Some(reason) = &record.torn_slot {
                        tracing::warn!(record = %volatile_path.display(), %reason, "a volatile checkpoint slot is damaged (a machine crash); using the other records");
                    }
                    slots.volatile = record.slots;
                    Some((record.seq, record.claim))
                }
            }
        }
    };
    let best = match (durable, volatile) {
        (Some(d), Some(v)) => Some(if v.0 > d.0 { v } else { d }),
        (d, v) => d.or(v),
    };
    match best {
        Some((_, claim)) if claim.uid != uid => Err(CheckpointError::Corrupt {
            path: durable_path,
            reason: format!("the record is for claim {:?}", claim.uid),
        }),
        other => Ok((other, slots)),
    }
}

/// A record's `seq` and claim.
type SeqClaim = (u64, PreparedClaim);

/// A file's bytes; `None` when it does not exist.
fn read_file(path: &Path) -> Result<Option<Vec<u8>>, CheckpointError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(io("reading", path, source)),
    }
}

/// The path of claim `uid`'s file for records of `durability` in `records`.
fn record_path(records: &Path, uid: &str, durability: Durability) -> PathBuf {
    let suffix = match durability {
        Durability::Durable => DURABLE_SUFFIX,
        Durability::Volatile => VOLATILE_SUFFIX,
    };
    records.join(format!("{uid}{suffix}"))
}

/// The slots of a claim's two files, for those that are slotted.
#[derive(Clone, Copy, Debug, Default)]
struct FileSlots {
    durable: Option<Slots>,
    volatile: Option<Slots>,
}

impl FileSlots {
    fn get(&self, durability: Durability) -> Option<Slots> {
        match durability {
            Durability::Durable => self.durable,
            Durability::Volatile => self.volatile,
        }
    }

    fn set(&mut self, durability: Durability, slots: Slots) {
        match durability {
            Durability::Durable => self.durable = Some(slots),
            Durability::Volatile => self.volatile = Some(slots),
        }
    }
}

/// The size of a slotted file's slots and which one the next write overwrites (the one
/// not holding the file's newest record).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slots {
    /// Bytes per slot, a multiple of 4 KiB.
    pub size: usize,
    /// The slot the next overwrite goes to: 0 or 1.
    pub next: usize,
}

impl Slots {
    /// Slots for a first record of `len` bytes, with room for it to double (an attach
    /// adds the host snapshot and the pod to a prepared claim's record).
    fn fitting(len: usize) -> Self {
        Slots {
            size: (2 * len).max(1).div_ceil(SLOT_ALIGN) * SLOT_ALIGN,
            next: 1,
        }
    }

    fn flipped(self) -> Self {
        Slots {
            next: 1 - self.next,
            ..self
        }
    }
}

/// A decoded record file (durable or volatile).
#[derive(Debug)]
pub struct DurableRecord {
    /// The newest valid record's `seq`.
    pub seq: u64,
    /// The newest valid record's claim.
    pub claim: PreparedClaim,
    /// The file's slots; `None` for a single-record file of an older netclaim (the next
    /// write makes it slotted).
    pub slots: Option<Slots>,
    /// Why the other slot was ignored, when it was torn (or, in a volatile file, damaged).
    pub torn_slot: Option<String>,
}

/// What one slot holds.
enum Slot {
    Empty,
    Valid(u64, PreparedClaim),
    Torn(String),
}

/// Decodes a durable file: two slots (see the [module docs](self)), or a single record.
///
/// Errors: why the file is corrupt: neither slot holds a valid record while one is not
/// empty, a slot of an unknown version, or a single record that is corrupt.
pub fn decode_durable(bytes: &[u8]) -> Result<DurableRecord, String> {
    if is_slotted(bytes) {
        let scan = scan_slots(bytes)?;
        if let Some(record) = scan.newest {
            return Ok(record);
        }
        // Neither slot holds a record: a single record of a length that happens to be a
        // multiple of 8 KiB, or corrupt (said with the slots' reasons).
        return decode_envelope(bytes).map(single_record).map_err(|_| {
            if scan.torn.is_empty() {
                "both slots are empty".to_owned()
            } else {
                scan.torn.join("; ")
            }
        });
    }
    decode_envelope(bytes)
        .map(single_record)
        .map_err(RecordError::into_reason)
}

/// Decodes a volatile file: its newest valid record, `None` when nothing in it survived.
///
/// A volatile file is never flushed, so after a machine crash each of its slots may hold
/// any mix of its old and new bytes, including one that is valid JSON with a checksum
/// mismatch: a damaged slot is ignored, whatever the other one holds. A single-record file
/// of an older netclaim (renamed into place, never partly written) is ignored only when it
/// is not JSON at all.
///
/// Errors: a slot (or single record) of an unknown version, or a single record that is
/// JSON but corrupt.
pub fn decode_volatile(bytes: &[u8]) -> Result<Option<DurableRecord>, String> {
    if is_slotted(bytes) {
        let scan = scan_slots(bytes)?;
        if scan.newest.is_some() {
            return Ok(scan.newest);
        }
        // Neither slot holds a record: damaged or empty slots, or a single record of a
        // length that happens to be a multiple of 8 KiB.
        return match decode_envelope(bytes) {
            Ok(record) => Ok(Some(single_record(record))),
            Err(RecordError::Version(reason)) => Err(reason),
            Err(RecordError::Damaged(_)) => Ok(None),
        };
    }
    decode_record(bytes, true).map(|record| record.map(single_record))
}

fn single_record((seq, claim): SeqClaim) -> DurableRecord {
    DurableRecord {
        seq,
        claim,
        slots: None,
        torn_slot: None,
    }
}

/// Whether `bytes` have the shape of a slotted file: two halves of whole pages.
fn is_slotted(bytes: &[u8]) -> bool {
    !bytes.is_empty() && bytes.len().is_multiple_of(2 * SLOT_ALIGN)
}

/// What the two slots of a slotted file hold.
struct SlotScan {
    /// The newest valid record, with the file's slots (and a torn slot's reason).
    newest: Option<DurableRecord>,
    /// Why each torn slot is not a record.
    torn: Vec<String>,
}

/// Reads both slots of a slotted file. Errors: a slot of an unknown version.
fn scan_slots(bytes: &[u8]) -> Result<SlotScan, String> {
    let half = bytes.len() / 2;
    let (first, second) = bytes.split_at(half);
    let mut newest: Option<(usize, SeqClaim)> = None;
    let mut torn = Vec::new();
    for (index, slot) in [decode_slot(first)?, decode_slot(second)?]
        .into_iter()
        .enumerate()
    {
        match slot {
            Slot::Valid(seq, claim) if newest.as_ref().is_none_or(|(_, (s, _))| seq > *s) => {
                newest = Some((index, (seq, claim)));
            }
            Slot::Valid(..) | Slot::Empty => {}
            Slot::Torn(reason) => torn.push(format!("slot {index}: {reason}")),
        }
    }
    let newest = newest.map(|(index, (seq, claim))| DurableRecord {
        seq,
        claim,
        slots: Some(Slots {
            size: half,
            next: 1 - index,
        }),
        torn_slot: torn.last().cloned(),
    });
    Ok(SlotScan { newest, torn })
}

/// One slot: empty (only spaces), a valid record, or torn. A record of an unknown version
/// is an error, never torn: a newer netclaim wrote it.
fn decode_slot(bytes: &[u8]) -> Result<Slot, String> {
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |last| last + 1);
    if end == 0 {
        return Ok(Slot::Empty);
    }
    match decode_envelope(&bytes[..end]) {
        Ok((seq, claim)) => Ok(Slot::Valid(seq, claim)),
        Err(RecordError::Version(reason)) => Err(reason),
        Err(RecordError::Damaged(reason)) => Ok(Slot::Torn(reason)),
    }
}

/// Why a record does not load.
enum RecordError {
    /// Written by a netclaim with another record format.
    Version(String),
    /// Not a record, a checksum mismatch, or data that is not a claim.
    Damaged(String),
}

impl RecordError {
    fn into_reason(self) -> String {
        match self {
            RecordError::Version(reason) | RecordError::Damaged(reason) => reason,
        }
    }
}

/// `bytes` padded with spaces to `size`.
fn pad_slot(bytes: &[u8], size: usize) -> Vec<u8> {
    let mut slot = Vec::with_capacity(size);
    slot.extend_from_slice(bytes);
    slot.resize(size, b' ');
    slot
}

/// Overwrites slot `slots.next` of the slotted file at `path` with `bytes`, and flushes the
/// data when `synced`. The outer error: the slot may be torn (nothing acknowledged, the
/// other slot stands); the inner one: written, not known to be durable.
fn overwrite_slot(
    path: &Path,
    slots: Slots,
    bytes: &[u8],
    synced: bool,
) -> Result<Result<(), CheckpointError>, CheckpointError> {
    use std::os::unix::fs::FileExt;
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|source| io("opening", path, source))?;
    let offset = (slots.next * slots.size) as u64;
    file.write_all_at(&pad_slot(bytes, slots.size), offset)
        .map_err(|source| io("writing a slot of", path, source))?;
    if !synced {
        return Ok(Ok(()));
    }
    // The size and the blocks stay as they are: only the data needs flushing, no journal
    // commit (what makes this cheaper than a new file and a rename).
    Ok(file
        .sync_data()
        .map_err(|source| io("syncing", path, source)))
}

/// Decodes and verifies the bytes of one record: its `seq` and claim. `Ok(None)` when
/// `torn_ok` (a volatile record) and the bytes are not JSON at all.
///
/// Errors: why the record is corrupt (not a record, another version, a checksum mismatch,
/// data that is not a [`PreparedClaim`]).
pub fn decode_record(bytes: &[u8], torn_ok: bool) -> Result<Option<(u64, PreparedClaim)>, String> {
    if torn_ok && serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_err() {
        return Ok(None);
    }
    decode_envelope(bytes)
        .map(Some)
        .map_err(RecordError::into_reason)
}

fn decode_envelope(bytes: &[u8]) -> Result<(u64, PreparedClaim), RecordError> {
    let envelope: EnvelopeIn = serde_json::from_slice(bytes)
        .map_err(|error| RecordError::Damaged(format!("not a record: {error}")))?;
    if envelope.version != VERSION {
        return Err(RecordError::Version(format!(
            "version {} is not supported (this netclaim reads version {VERSION})",
            envelope.version
        )));
    }
    let actual = hex::encode(Sha256::digest(envelope.data.get().as_bytes()));
    if actual != envelope.checksum {
        return Err(RecordError::Damaged(format!(
            "checksum mismatch: the file says {}, the data hashes to {actual}",
            envelope.checksum
        )));
    }
    let claim = serde_json::from_str(envelope.data.get())
        .map_err(|error| RecordError::Damaged(format!("data: {error}")))?;
    Ok((envelope.seq, claim))
}

/// Decodes a netclaim 0.1 single-file checkpoint (what migration reads).
///
/// Errors: why it is not a valid 0.1 checkpoint.
pub fn decode_legacy(bytes: &[u8]) -> Result<Vec<PreparedClaim>, String> {
    legacy::decode(bytes)
}

/// Encodes `claim` as the record file with `seq`: the bytes every write puts on disk.
///
/// Errors: [`CheckpointError::Encode`] (not expected for a [`PreparedClaim`]).
pub fn encode(claim: &PreparedClaim, seq: u64) -> Result<Vec<u8>, CheckpointError> {
    let data = serde_json::value::to_raw_value(claim)?;
    let envelope = EnvelopeOut {
        version: VERSION,
        seq,
        checksum: hex::encode(Sha256::digest(data.get().as_bytes())),
        data: &data,
    };
    let mut bytes = serde_json::to_vec(&envelope)?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// Writes `bytes` to a new file at `path` (mode 0600), fsyncing it when `synced`.
fn write_file(path: &Path, bytes: &[u8], synced: bool) -> Result<(), CheckpointError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| io("creating", path, source))?;
    file.write_all(bytes)
        .map_err(|source| io("writing", path, source))?;
    if synced {
        file.sync_all()
            .map_err(|source| io("syncing", path, source))?;
    }
    Ok(())
}

/// fsyncs a directory so a rename or unlink in it is durable.
fn sync_dir(dir: &Path) -> Result<(), CheckpointError> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(|source| io("syncing directory", dir, source))
}

/// Moves a corrupt claim's files aside; returns where the durable one went.
fn set_aside(records: &Path, uid: &str) -> Result<Option<PathBuf>, CheckpointError> {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.9fZ");
    let mut kept = None;
    for suffix in [DURABLE_SUFFIX, VOLATILE_SUFFIX] {
        let path = records.join(format!("{uid}{suffix}"));
        if !path.exists() {
            continue;
        }
        let aside = records.join(format!("{uid}{suffix}.corrupt-{stamp}"));
        fs::rename(&path, &aside).map_err(|source| io("moving aside", &path, source))?;
        kept.get_or_insert(aside);
    }
    sync_dir(records)?;
    Ok(kept)
}

/// Removes temp files an interrupted write left behind; they never hold a record.
fn remove_temp_files(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

fn io(action: &'static str, path: &Path, source: std::io::Error) -> CheckpointError {
    CheckpointError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// The netclaim 0.1 checkpoint: `{version: 1, checksum, data: {claims: {uid: claim}}}` with
/// the checksum over canonical (key-sorted, compact) JSON, and `podUids` instead of `pods`.
mod legacy {
    use std::path::Path;

    use serde::Deserialize;
    use serde_json::Value;
    use sha2::{Digest, Sha256};

    use super::{CheckpointError, io};
    use crate::state::{PodRef, PreparedClaim};

    #[derive(Deserialize)]
    struct Envelope {
        version: u32,
        checksum: String,
        data: Value,
    }

    /// The claims of the legacy file at `path` (or of its `.durable` copy when the file
    /// is torn), `None` when there is no legacy file.
    pub(super) fn load(path: &Path) -> Result<Option<Vec<PreparedClaim>>, CheckpointError> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(io("reading", path, source)),
        };
        match decode(&bytes) {
            Ok(claims) => Ok(Some(claims)),
            Err(reason) => {
                let durable = path.with_file_name(format!("{}.durable", super::LEGACY_FILE_NAME));
                match std::fs::read(&durable).ok().map(|b| decode(&b)) {
                    Some(Ok(claims)) => Ok(Some(claims)),
                    _ => Err(CheckpointError::Corrupt {
                        path: path.to_owned(),
                        reason,
                    }),
                }
            }
        }
    }

    pub(super) fn decode(bytes: &[u8]) -> Result<Vec<PreparedClaim>, String> {
        let envelope: Envelope =
            serde_json::from_slice(bytes).map_err(|e| format!("not a checkpoint: {e}"))?;
        if envelope.version != 1 {
            return Err(format!("legacy version {} is not 1", envelope.version));
        }
        let canonical = serde_json::to_vec(&sorted(&envelope.data)).map_err(|e| e.to_string())?;
        if hex::encode(Sha256::digest(&canonical)) != envelope.checksum {
            return Err("checksum mismatch".to_owned());
        }
        let claims = envelope.data["claims"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        claims
            .into_iter()
            .map(|(uid, mut claim)| {
                let namespace = claim["namespace"].as_str().unwrap_or_default().to_owned();
                let pods: Vec<PodRef> = claim["podUids"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(|pod_uid| PodRef {
                        namespace: namespace.clone(),
                        name: String::new(),
                        uid: pod_uid.to_owned(),
                    })
                    .collect();
                if let Some(object) = claim.as_object_mut() {
                    object.remove("podUids");
                    object.insert(
                        "pods".to_owned(),
                        serde_json::to_value(pods).map_err(|e| e.to_string())?,
                    );
                }
                serde_json::from_value(claim).map_err(|e| format!("claim {uid}: {e}"))
            })
            .collect()
    }

    fn sorted(value: &Value) -> Value {
        match value {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                Value::Object(
                    keys.into_iter()
                        .map(|key| (key.clone(), sorted(&map[key])))
                        .collect(),
                )
            }
            Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::state::{AttachPhase, Attachment, LinkSnapshot};

    fn claim(uid: &str) -> PreparedClaim {
        PreparedClaim {
            uid: uid.into(),
            namespace: "default".into(),
            name: format!("nic-{uid}"),
            pods: vec![PodRef {
                namespace: "default".into(),
                name: "pod".into(),
                uid: "pod-1".into(),
            }],
            pod_claim_name: None,
            nics: vec![PreparedNic {
                request: "nic".into(),
                pool: "node-a".into(),
                device: "eth1".into(),
                share_id: None,
                host_if_name: "eth1".into(),
                pci_address: None,
                config: Default::default(),
                cni: None,
                network_attachment_definition: None,
                published: None,
                attachment: None,
                failure: None,
                rdma: None,
                consumed_capacity: Default::default(),
                pod_network: None,
            }],
        }
    }

    fn put(checkpoint: &Checkpoint, claim: PreparedClaim, durability: Durability) {
        let uid = claim.uid.clone();
        checkpoint
            .update(&uid, durability, |_| {
                Ok::<_, CheckpointError>((Some(claim), ()))
            })
            .unwrap();
    }

    fn attaching() -> Attachment {
        Attachment {
            sandbox_id: "sandbox-1".into(),
            netns_path: "/run/netns/pod-1".into(),
            host: LinkSnapshot::default(),
            pod_if_name: "net1".into(),
            phase: AttachPhase::Attaching,
            pod: None,
            network: None,
            error: None,
        }
    }

    #[test]
    fn an_empty_directory_is_an_empty_state() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoint = Checkpoint::open(dir.path().join("sub"), Recovery::Fail).unwrap();
        assert!(checkpoint.index().is_empty());
        assert!(dir.path().join("sub/claims").is_dir());
    }

    #[test]
    fn records_survive_reopen_and_index_by_pod() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoint = Checkpoint::open(dir.path(), Recovery::Fail).unwrap();
        put(&checkpoint, claim("uid-1"), Durability::Durable);
        put(&checkpoint, claim("uid-2"), Durability::Volatile);
        drop(checkpoint);
        let reopened = Checkpoint::open(dir.path(), Recovery::Fail).unwrap();
        let index = reopened.index();
        assert_eq!(index.len(), 2);
        let for_pod: Vec<&str> = index
            .claims_for_pod("pod-1")
            .iter()
            .map(|c| c.uid.as_str())
            .collect();
        assert_eq!(for_pod, ["uid-1", "uid-2"]);
        assert!(index.claims_for_pod("pod-2").is_empty());
        assert_eq!(*index.claim("uid-1").unwrap().as_ref(), claim("uid-1"));
    }

    #[test]
    fn records_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoint = Checkpoint::open(dir.path(), Recovery::Fail).unwrap();
        put(&checkpoint, claim("uid-1"), Durability::Durable);
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&checkpoint.records_dir().join("uid-1.json")), 0o600);
        assert_eq!(mode(checkpoint.records_dir()), 0o700);
    }

    #[test]
    fn a_write_touches_only_its_claim() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoint = Checkpoint::open(dir.path(), Recovery::Fail).unwrap();
        put(&checkpoint, claim("uid-1"), Durability::Durable);
        put(&checkpoint, claim("uid-2"), Durability::Durable);
        let other = checkpoint.records_dir().join("uid-2.json");
        let before = fs::metadata(&other).unwrap().modified().unwrap();
        let mut changed = claim("uid-1");
        changed.nics[0].attachment = Some(attaching());
        put(&checkpoint, changed, Durability::Volatile);
        assert_eq!(fs::metadata(&other).unwrap().modified().unwrap(), before);
        assert_eq!(checkpoint.save_count(), 3);
        // No change, no write.
        put(&checkpoint, claim("uid-2"), Durability::Durable);
        assert_eq!(checkpoint.save_count(), 3);
    }

    #[test]
    fn the_newer_of_durable_and_volatile_wins_and_a_durable_write_supersedes() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoint = Checkpoint::open(dir.path(), Recovery::Fail).unwrap();
        put(&checkpoint, claim("uid-1"), Durability::Durable);
        let mut attached = claim("uid-1");
        attached.nics[0].attachment = Some(Attachment {
            phase: AttachPhase::Attached,
            ..attaching()
        });
        put(&checkpoint, attached.clone(), Durability::Volatile);
        drop(checkpoint);
        let reopened = Checkpoint::open(dir.path(), Recovery::Fail).unwrap();
        assert_eq!(*reopened.claim("uid-1").unwrap(), attached);
        // A durable write gets a higher seq; the volatile file stays, for the next
        // volatile write to overwrite.
        let mut durable = attached.clone();
        durable.nics[0].attachment = Some(attaching());
        put(&reopened, durable.clone(), Durability::Durable);
        assert!(reopened.records_dir().join("uid-1.volatile.json").exists());
        drop(reopened);
        let again = Checkpoint::open(dir.path(), Recovery::Fail).unwrap();
        assert_eq!(*again.claim("uid-1").unwrap(), durable);
    }

    #[test]
    fn a_torn_volatile_record_falls_back_to_the_durable_one() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoint = Checkpoint::open(dir.path(), Recovery::Fail).unwrap();
        put(&checkpoint, claim("uid-1"), Durability::Durable);
        let mut attached = claim("uid-1");
        attached.nics[0].attachment = Some(attaching());
        put(&checkpoint, attached, Durability::Volatile);
        let volatile = checkpoint.records_dir().join("uid-1.volatile.json");
        // A single-record file of an older netclaim, cut short by a machine crash.
        let bytes = encode(&claim("uid-1").tap_name("attached"), 9).unwrap();
        fs::write(&volatile, &bytes[..bytes.len() / 2]).unwrap();
        drop(checkpoint);
        let reopened = Checkpoint::open(dir.path(), Recovery::Fail).unwrap();
        assert_eq!(*reopened.claim("uid-1").unwrap(), claim("uid-1"));
    }

    /// Opens the directory and returns the error's message (the test fails on success).
    fn open_error(dir: &Path) -> String {
        match Checkpoint::open(dir, Recovery::Fail) {
            Ok(_) => panic!("a corrupt record was accepted"),
            Err(error) => {
                assert!(matches!(error, CheckpointError::Corrupt { .. }), "{error}");
                error.to_string()
            }
        }
    }

    #[test]
    fn a_checksum_mismatch_stops_the_open_and_is_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoint = Checkpoint::open(dir.path(), Recovery::Fail).unwrap();
        put(&checkpoint, claim("uid-1"), Durability::Durable);
        let path = checkpoint.records_dir().join("uid-1.json");
        drop(checkpoint);
        let edited = fs::read_to_string(&path)
            .unwrap()
            .replace("nic-uid-1", "nic-uid-X");
        fs::write(&path, &edited).unwrap();
        let message = open_error(dir.path());
        assert!(message.contains("checksum mismatch"), "{message}");
        assert!(message.contains("uid-1.json"), "{message}");
        assert_eq!(fs::read_to_string(&path).unwrap(), edited);
    }

    #[test]
    fn a_single_volatile_record_of_an_older_netclaim_that_is_json_but_corrupt_stops_the_open() {
        // Such a file was renamed into place whole: a machine crash cannot leave it JSON
        // with a checksum mismatch.
        let dir = tempfile::tempdir().unwrap();
        let checkpoint = Checkpoint::open(dir.path(), Recovery::Fail).unwrap();
        put(&checkpoint, claim("uid-1"), Durability::Durable);
        let path = checkpoint.records_dir().join("uid-1.volatile.json");
        drop(checkpoint);
        let single = encode(&claim("uid-1").tap_name("other"), 9).unwrap();
        let edited = String::from_utf8(single).unwrap().replace("other", "thing");
        fs::write(&path, edited).unwrap();
        assert!(open_error(dir.path()).contains("checksum mismatch"));
    }

    #[test]
    fn a_single_volatile_record_of_an_older_netclaim_is_read_then_made_slotted() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoint = Checkpoint::open(dir.path(), Recovery::Fail).unwrap();
        put(&checkpoint, claim("uid-1"), Durability::Durable);
        let path = checkpoint.records_dir().join("uid-1.volatile.json");
        drop(checkpoint);
        fs::write(&path, encode(&attached_to("sandbox-1"), 9).unwrap()).unwrap();
        let reopened = Checkpoint::open(dir.path(), Recovery::Fail).unwrap();
        assert_eq!(*reopened.claim("uid-1").unwrap(), attached_to("sandbox-1"));
        put(&reopened, attached_to("sandbox-2"), Durability::Volatile);
        let record = decode_volatile(&fs::read(&path).unwrap()).unwrap().unwrap();
        assert!(record.slots.is_some(), "rewritten with slots");
        assert_eq!(record.seq, 10);
        assert_eq!(record.claim, attached_to("sandbox-2"));
    }

    #[test]
    fn volatile_writes_overwrite_their_own_slots_and_never_touch_the_durable_file() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoint = Checkpoint::open(dir.path(), Recovery::Fail).unwrap();
        put(&checkpoint, claim("uid-1"), Durability::Durable);
        let durable = checkpoint.records_dir().join("uid-1.json");
        let volatile = checkpoint.records_dir().join("uid-1.volatile.json");
        let durable_bytes = fs::read(&durable).unwrap();
        put(&checkpoint, attached_to("sandbox-1"), Durability::Volatile);
        let (created, len) = (inode(&volatile), fs::metadata(&volatile).unwrap().len());
        assert_eq!(len % (2 * SLOT_ALIGN as u64), 0, "two whole-page slots");
        for sandbox in ["sandbox-2", "sandbox-3"] {
            put(&checkpoint, attached_to(sandbox), Durability::Volatile);
            assert_eq!(inode(&volatile), created, "{sandbox}: no new file");
            assert_eq!(fs::metadata(&volatile).unwrap().len(), len);
            let record = decode_volatile(&fs::read(&volatile).unwrap()).unwrap();
            assert_eq!(record.unwrap().claim, attached_to(sandbox));
        }
        assert_eq!(fs::read(&durable).unwrap(), durable_bytes);
        // A durable write in between: the next volatile write still reuses the file, and
        // what loads is always the newest.
        put(&checkpoint, attached_to("sandbox-4"), Durability::Durable);
        drop(checkpoint);
        let reopened = Checkpoint::open(dir.path(), Recovery::Fail).unwrap();
        assert_eq!(*reopened.claim("uid-1").unwrap(), attached_to("sandbox-4"));
        put(&reopened, attached_to("sandbox-5"), Durability::Volatile);
        assert_eq!(inode(&volatile), created);
        drop(reopened);
        let again = Checkpoint::open(dir.path(), Recovery::Fail).unwrap();
        assert_eq!(*again.claim("uid-1").unwrap(), attached_to("sandbox-5"));
    }

    /// A checkpoint whose claim `uid-1` was written durably (`claim("uid-1")`), then
    /// volatile once per sandbox of `sandboxes`, closed; its directory and the claim's
    /// volatile file.
    fn volatile_records(sandboxes: &[&str]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let checkpoint = Checkpoint::open(dir.path(), Recovery::Fail).unwrap();
        put(&checkpoint, claim("uid-1"), Durability::Durable);
        for sandbox in sandboxes {
            put(&checkpoint, attached_to(sandbox), Durability::Volatile);
        }
        let path = checkpoint.records_dir().join("uid-1.volatile.json");
        (dir, path)
    }

    #[test]
    fn damaged_volatile_slots_fall_back_to_the_newest_valid_record() {
        // After a machine crash, a never-flushed slot may hold a mix of its old and new
        // pages: JSON, with a checksum mismatch. That is ignored, in one slot or both.
        let (dir, path) = volatile_records(&["sandbox-1", "sandbox-2"]);
        let text = String::from_utf8(fs::read(&path).unwrap()).unwrap();
        fs::write(&path, text.replacen("sandbox-2", "sandbox-X", 1)).unwrap();
        let reopened = Checkpoint::open(dir.path(), Recovery::Fail).unwrap();
        assert_eq!(*reopened.claim("uid-1").unwrap(), attached_to("sandbox-1"));
        drop(reopened);
        fs::write(
            &path,
            text.replacen("sandbox-2", "sandbox-X", 1)
                .replacen("sandbox-1", "sandbox-Y", 1),
        )
        .unwrap();
        let reopened = Checkpoint::open(dir.path(), Recovery::Fail).unwrap();
        assert_eq!(*reopened.claim("uid-1").unwrap(), claim("uid-1"));
        // The next volatile write replaces the file; it loads again.
        put(&reopened, attached_to("sandbox-3"), Durability::Volatile);
        drop(reopened);
        let again = Checkpoint::open(dir.path(), Recovery::Fail).unwrap();
        assert_eq!(*again.claim("uid-1").unwrap(), attached_to("sandbox-3"));
    }

    #[test]
    fn a_volatile_slot_of_an_unknown_version_stops_the_open() {
        let (dir, path) = volatile_records(&["sandbox-1"]);
        let text = String::from_utf8(fs::read(&path).unwrap()).unwrap();
        fs::write(&path, text.replacen("\"version\":2", "\"version\":3", 1)).unwrap();
        let message = open_error(dir.path());
        assert!(message.contains("version 3 is not supported"), "{message}");
    }

    #[test]
    fn an_unknown_version_stops_the_open() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoint = Checkpoint::open(dir.path(), Recovery::Fail).unwrap();
        put(&checkpoint, claim("uid-1"), Durability::Durable);
        let path = checkpoint.records_dir().join("uid-1.json");
        drop(checkpoint);
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"version\":2"), "{text}");
        fs::write(&path, text.replace("\"version\":2", "\"version\":3")).unwrap();
        let message = open_error(dir.path());
        assert!(message.contains("version 3 is not supported"), "{message}");
    }

    #[test]
    fn recovery_sets_only_the_bad_claim_aside() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoint = Checkpoint::open(dir.path(), Recovery::Fail).unwrap();
        put(&checkpoint, claim("uid-1"), Durability::Durable);
        put(&checkpoint, claim("uid-2"), Durability::Durable);
        let records = checkpoint.records_dir().to_owned();
        drop(checkpoint);
        fs::write(records.join("uid-1.json"), b"{garbage").unwrap();
        let reopened = Checkpoint::open(dir.path(), Recovery::StartEmpty).unwrap();
        let uids: Vec<String> = reopened.index().claims().map(|c| c.uid.clone()).collect();
        assert_eq!(uids, ["uid-2"]);
        let kept: Vec<String> = fs::read_dir(&records)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("uid-1.json.corrupt-"))
            .collect();
        assert_eq!(kept.len(), 1, "{kept:?}");
        assert_eq!(fs::read(records.join(&kept[0])).unwrap(), b"{garbage");
    }

    #[test]
    fn leftover_temp_files_are_ignored_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoint = Checkpoint::open(dir.path(), Recovery::Fail).unwrap();
        put(&checkpoint, claim("uid-1"), Durability::Durable);
        let temp = checkpoint.records_dir().join(".tmp-uid-1-99");
        fs::write(&temp, b"{half a rec").unwrap();
        drop(checkpoint);
        let reopened = Checkpoint::open(dir.path(), Recovery::Fail).unwrap();
        assert_eq!(*reopened.claim("uid-1").unwrap(), claim("uid-1"));
        assert!(!temp.exists());
    }

    /// A claim record with the attachment of `sandbox` (so successive records differ).
    fn attached_to(sandbox: &str) -> PreparedClaim {
        let mut claim = claim("uid-1");
        claim.nics[0].attachment = Some(Attachment {
            sandbox_id: sandbox.into(),
            ..attaching()
        });
        claim
    }

    fn inode(path: &Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(path).unwrap().ino()
    }

    #[test]
    fn later_durable_writes_overwrite_the_older_slot_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoint = Checkpoint::open(dir.path(), Recovery::Fail).unwrap();
        put(&checkpoint, claim("uid-1"), Durability::Durable);
        let path = checkpoint.records_dir().join("uid-1.json");
        let (created, len) = (inode(&path), fs::metadata(&path).unwrap().len());
        assert_eq!(len % (2 * SLOT_ALIGN as u64), 0, "two whole-page slots");
        for (round, sandbox) in ["sandbox-1", "sandbox-2", "sandbox-3"].iter().enumerate() {
            put(&checkpoint, attached_to(sandbox), Durability::Durable);
            // No new file, no rename: the same inode at the same size.
            assert_eq!(inode(&path), created, "round {round}");
            assert_eq!(fs::metadata(&path).unwrap().len(), len, "round {round}");
            let record = decode_durable(&fs::read(&path).unwrap()).unwrap();
            assert_eq!(record.claim, attached_to(sandbox), "round {round}");
            assert!(record.torn_slot.is_none());
        }
        drop(checkpoint);
        let reopened = Checkpoint::open(dir.path(), Recovery::Fail).unwrap();
        assert_eq!(*reopened.claim("uid-1").unwrap(), attached_to("sandbox-3"));
        // The reopened handle knows which slot is older: it overwrites that one.
        put(&reopened, attached_to("sandbox-4"), Durability::Durable);
        let text = String::from_utf8(fs::read(&path).unwrap()).unwrap();
        assert!(
            text.contains("sandbox-3") && text.contains("sandbox-4"),
            "{text}"
        );
        assert_eq!(inode(&path), created);
    }

    /// A checkpoint whose claim `uid-1` was written durably twice (one record per slot),
    /// closed; its directory and the claim's durable file.
    fn two_durable_records() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let checkpoint = Checkpoint::open(dir.path(), Recovery::Fail).unwrap();
        put(&checkpoint, attached_to("sandbox-1"), Durability::Durable);
        put(&checkpoint, attached_to("sandbox-2"), Durability::Durable);
        let path = checkpoint.records_dir().join("uid-1.json");
        (dir, path)
    }

    #[test]
    fn a_torn_slot_falls_back_to_the_other_slot() {
        let (dir, path) = two_durable_records();
        // A machine crash in the middle of the second slot's write: its first sector new,
        // the rest what was there before (spaces, in a slot never written).
        let bytes = fs::read(&path).unwrap();
        let half = bytes.len() / 2;
        assert!(
            bytes[half..].starts_with(b"{"),
            "the second write went to slot 1"
        );
        let mut torn = bytes.clone();
        torn[half + 512..].fill(b' ');
        fs::write(&path, &torn).unwrap();
        let reopened = Checkpoint::open(dir.path(), Recovery::Fail).unwrap();
        assert_eq!(*reopened.claim("uid-1").unwrap(), attached_to("sandbox-1"));
        // The next durable write goes into the torn slot, not over the good one.
        put(&reopened, attached_to("sandbox-3"), Durability::Durable);
        let again = fs::read(&path).unwrap();
        assert_eq!(again[..half], torn[..half]);
        drop(reopened);
        let last = Checkpoint::open(dir.path(), Recovery::Fail).unwrap();
        assert_eq!(*last.claim("uid-1").unwrap(), attached_to("sandbox-3"));
    }

    #[test]
    fn a_slot_of_an_unknown_version_stops_the_open_even_next_to_a_valid_one() {
        let (dir, path) = two_durable_records();
        let text = String::from_utf8(fs::read(&path).unwrap()).unwrap();
        let half = text.len() / 2;
        let newer = text[half..].replacen("\"version\":2", "\"version\":3", 1);
        fs::write(&path, format!("{}{newer}", &text[..half])).unwrap();
        let message = open_error(dir.path());
        assert!(message.contains("version 3 is not supported"), "{message}");
    }

    #[test]
    fn a_single_record_file_of_an_older_netclaim_is_read_then_made_slotted() {
        let dir = tempfile::tempdir().unwrap();
        let records = dir.path().join(CLAIMS_DIR);
        fs::create_dir_all(&records).unwrap();
        let path = records.join("uid-1.json");
        fs::write(&path, encode(&claim("uid-1"), 5).unwrap()).unwrap();
        let checkpoint = Checkpoint::open(dir.path(), Recovery::Fail).unwrap();
        assert_eq!(*checkpoint.claim("uid-1").unwrap(), claim("uid-1"));
        put(&checkpoint, attached_to("sandbox-1"), Durability::Durable);
        let record = decode_durable(&fs::read(&path).unwrap()).unwrap();
        assert!(record.slots.is_some(), "rewritten with slots");
        assert!(record.seq > 5, "seq keeps growing: {}", record.seq);
        assert_eq!(record.claim, attached_to("sandbox-1"));
    }

    #[test]
    fn a_record_that_outgrows_its_slot_gets_a_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoint = Checkpoint::open(dir.path(), Recovery::Fail).unwrap();
        put(&checkpoint, claim("uid-1"), Durability::Durable);
        let path = checkpoint.records_dir().join("uid-1.json");
        let small = fs::metadata(&path).unwrap().len();
        let mut big = claim("uid-1");
        big.nics = (0..200)
            .map(|i| PreparedNic {
                device: format!("eth{i}"),
                ..claim("uid-1").nics[0].clone()
            })
            .collect();
        put(&checkpoint, big.clone(), Durability::Durable);
        let grown = fs::metadata(&path).unwrap().len();
        assert!(
            grown > small,
            "{small} -> {grown}: {}",
            encode(&big, 1).unwrap().len()
        );
        drop(checkpoint);
        let reopened = Checkpoint::open(dir.path(), Recovery::Fail).unwrap();
        assert_eq!(*reopened.claim("uid-1").unwrap(), big);
    }

    #[test]
    fn removing_a_claim_removes_both_files() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoint = Checkpoint::open(dir.path(), Recovery::Fail).unwrap();
        put(&checkpoint, claim("uid-1"), Durability::Durable);
        put(
            &checkpoint,
            claim("uid-1").tap_name("v"),
            Durability::Volatile,
        );
        checkpoint
            .update("uid-1", Durability::Durable, |_| {
                Ok::<_, CheckpointError>((None, ()))
            })
            .unwrap();
        assert!(checkpoint.index().is_empty());
        let left: Vec<_> = fs::read_dir(checkpoint.records_dir()).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn a_refused_change_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoint = Checkpoint::open(dir.path(), Recovery::Fail).unwrap();
        put(&checkpoint, claim("uid-1"), Durability::Durable);
        let refused: Result<(), CheckpointError> =
            checkpoint.update("uid-1", Durability::Durable, |_| {
                Err(CheckpointError::BadUid("refused".to_owned()))
            });
        assert!(
            matches!(refused, Err(CheckpointError::BadUid(ref r)) if r == "refused"),
            "{refused:?}"
        );
        assert_eq!(checkpoint.save_count(), 1);
    }

    #[test]
    fn unsafe_uids_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoint = Checkpoint::open(dir.path(), Recovery::Fail).unwrap();
        for uid in ["", "../x", ".hidden", "a/b"] {
            let error = checkpoint
                .update(uid, Durability::Durable, |_| {
                    Ok::<_, CheckpointError>((Some(claim("x")), ()))
                })
                .unwrap_err();
            assert!(
                matches!(error, CheckpointError::BadUid(_)),
                "{uid}: {error}"
            );
        }
    }

    #[test]
    fn a_netclaim_0_1_checkpoint_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let mut old = serde_json::to_value(claim("uid-1")).unwrap();
        let object = old.as_object_mut().unwrap();
        object.remove("pods");
        object.insert("podUids".into(), serde_json::json!(["pod-1"]));
        let data = serde_json::json!({"claims": {"uid-1": old}});
        let canonical = serde_json::to_vec(&legacy_sorted(&data)).unwrap();
        let envelope = serde_json::json!({
            "version": 1,
            "checksum": hex::encode(Sha256::digest(&canonical)),
            "data": data,
        });
        fs::write(dir.path().join(LEGACY_FILE_NAME), envelope.to_string()).unwrap();
        let checkpoint = Checkpoint::open(dir.path(), Recovery::Fail).unwrap();
        let migrated = checkpoint.claim("uid-1").unwrap();
        assert_eq!(migrated.pods[0].uid, "pod-1");
        assert_eq!(migrated.pods[0].namespace, "default");
        assert!(!dir.path().join(LEGACY_FILE_NAME).exists());
        assert!(dir.path().join("checkpoint.json.migrated").exists());
        drop(checkpoint);
        let reopened = Checkpoint::open(dir.path(), Recovery::Fail).unwrap();
        assert_eq!(reopened.index().len(), 1);
    }

    fn legacy_sorted(value: &serde_json::Value) -> serde_json::Value {
        match value {
            serde_json::Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                serde_json::Value::Object(
                    keys.into_iter()
                        .map(|k| (k.clone(), legacy_sorted(&map[k])))
                        .collect(),
                )
            }
            serde_json::Value::Array(items) => {
                serde_json::Value::Array(items.iter().map(legacy_sorted).collect())
            }
            other => other.clone(),
        }
    }

    #[tokio::test]
    async fn update_nic_changes_one_device_off_the_async_threads() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoint = Arc::new(Checkpoint::open(dir.path(), Recovery::Fail).unwrap());
        put(&checkpoint, claim("uid-1"), Durability::Durable);
        let changes = checkpoint.subscribe();
        checkpoint
            .update_nic("uid-1", "eth1", None, Durability::Durable, |nic| {
                nic.attachment = Some(attaching());
            })
            .await
            .unwrap();
        assert!(changes.has_changed().unwrap());
        let phase = checkpoint.claim("uid-1").unwrap().nics[0]
            .attachment
            .as_ref()
            .map(|a| a.phase);
        assert_eq!(phase, Some(AttachPhase::Attaching));
        let unknown = checkpoint
            .update_nic("uid-1", "eth9", None, Durability::Durable, |_| {})
            .await
            .unwrap_err();
        assert!(
            matches!(unknown, NicUpdateError::UnknownDevice { .. }),
            "{unknown}"
        );
        let unknown = checkpoint
            .update_nic("uid-9", "eth1", None, Durability::Durable, |_| {})
            .await
            .unwrap_err();
        assert!(
            matches!(unknown, NicUpdateError::UnknownClaim(_)),
            "{unknown}"
        );
    }

    trait TapName {
        fn tap_name(self, name: &str) -> Self;
    }

    impl TapName for PreparedClaim {
        fn tap_name(mut self, name: &str) -> Self {
            self.name = name.to_owned();
            self
        }
    }
}
