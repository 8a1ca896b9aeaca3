//! The checkpoint: a crash-safe record of every prepared claim, one file per claim, with a
//! lock-free in-memory index the NRI hooks read.
//!
//! # Layout
//! ```text
//! <state dir>/claims/<claim uid>.json           durable record (fsynced)
//! <state dir>/claims/<claim uid>.volatile.json  later, volatile record (renamed, not fsynced)
//! ```
//! Each file is `{"version": 2, "seq": N, "checksum": "<sha256 hex of data>", "data": {...}}`
//! with `data` a [`PreparedClaim`]; the checksum is over the exact bytes of `data` as
//! written. Of a claim's two files, the valid one with the higher `seq` is the record.
//!
//! # Guarantees
//! - A write costs what changed: only the claim's own file is encoded, hashed and written.
//!   Writers of different claims never wait on each other; the hooks' readers never wait
//!   at all ([`Checkpoint::index`] is an atomic pointer load).
//! - Every write replaces its file atomically (temp file, rename): a process crash leaves
//!   the old or the new record, never a torn one.
//! - [`Durability::Durable`] writes also fsync the file before and the directory after the
//!   rename, so they survive a machine crash. [`Durability::Volatile`] writes go to the
//!   claim's `.volatile.json` without fsync (about a millisecond less each): a machine crash
//!   can tear that file, and loading then falls back to the durable record, which a torn
//!   volatile file cannot touch. Callers make volatile only what a machine crash makes
//!   moot anyway (see [`Durability`]).
//! - Memory follows disk: once a rename happened, the index holds the new record even when
//!   a later step (the directory fsync) fails and the write returns an error.
//! - Files are 0600 in a 0700 directory.
//! - A corrupt record (a checksum mismatch, an unknown version, a durable record that does
//!   not parse) is never silently replaced or skipped: opening fails unless the caller chose
//!   [`Recovery::StartEmpty`], which sets the claim's files aside as
//!   `<file>.corrupt-<timestamp>` and goes on without that claim. Only a volatile file that
//!   is not even JSON (what a machine crash leaves) is ignored in favour of the durable one.
//! - A checkpoint of netclaim 0.1 (`<state dir>/checkpoint.json`, one file for all claims)
//!   is migrated on open: every claim is written durably in the new layout, then the old
//!   file is renamed `checkpoint.json.migrated`.
//!
//! # Assumptions
//! - One process owns the directory (`netclaim check` only reads, with [`read_only`]).
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

/// How far a write must get before it returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// On disk, through a power cut: for what must outlive the machine (prepared claims,
    /// and the record written before an attach changes anything).
    Durable,
    /// Visible to the next process (rename, no fsync): for records whose loss in a machine
    /// crash changes nothing, because the crash ends every pod netns they describe.
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
        let (claims, seqs) = load_records(&records, recovery)?;
        let checkpoint = Self {
            records,
            index: ArcSwap::from_pointee(ClaimIndex::build(claims)),
            seqs: Mutex::new(seqs),
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
        let (claims, _) = load_records(&self.records, Recovery::Fail)?;
        Ok(claims
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
        let (target, other) = match durability {
            Durability::Durable => (self.durable_path(uid), self.volatile_path(uid)),
            Durability::Volatile => (self.volatile_path(uid), self.durable_path(uid)),
        };
        let temp = self.records.join(format!(
            "{TEMP_PREFIX}{uid}-{}",
            self.temp_counter.fetch_add(1, Ordering::Relaxed)
        ));
        let synced = durability == Durability::Durable;
        if let Err(error) = write_file(&temp, &bytes, synced) {
            let _ = fs::remove_file(&temp);
            return Err(error);
        }
        if let Err(source) = fs::rename(&temp, &target) {
            let _ = fs::remove_file(&temp);
            return Err(io("renaming into place", &target, source));
        }
        self.saves.fetch_add(1, Ordering::Relaxed);
        // The rename happened: from here on, memory follows disk whatever fails next.
        self.publish(uid, Some(Arc::new(claim)));
        if synced {
            // The volatile record is older now (lower seq); removing it only saves space.
            let _ = fs::remove_file(&other);
            sync_dir(&self.records)?;
        }
        Ok(())
    }

    fn remove(&self, uid: &str) -> Result<(), CheckpointError> {
        let mut first_error = None;
        for path in [self.volatile_path(uid), self.durable_path(uid)] {
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

    fn durable_path(&self, uid: &str) -> PathBuf {
        self.records.join(format!("{uid}{DURABLE_SUFFIX}"))
    }

    fn volatile_path(&self, uid: &str) -> PathBuf {
        self.records.join(format!("{uid}{VOLATILE_SUFFIX}"))
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
        let (loaded, _) = load_records(&records, Recovery::Fail)?;
        claims.extend(
            loaded
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

type Loaded = (BTreeMap<String, Arc<PreparedClaim>>, HashMap<String, u64>);

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
    let mut claims = BTreeMap::new();
    let mut seqs = HashMap::new();
    for uid in uids {
        match load_claim(records, &uid) {
            Ok(Some((seq, claim))) => {
                seqs.insert(uid.clone(), seq);
                claims.insert(uid, Arc::new(claim));
            }
            Ok(None) => {}
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
    Ok((claims, seqs))
}

/// One claim's record: the valid file with the higher `seq` of its durable and volatile
/// ones; a volatile file that is not JSON at all (torn by a machine crash) is ignored.
fn load_claim(records: &Path, uid: &str) -> Result<Option<(u64, PreparedClaim)>, CheckpointError> {
    let durable = read_record(&records.join(format!("{uid}{DURABLE_SUFFIX}")), false)?;
    let volatile = read_record(&records.join(format!("{uid}{VOLATILE_SUFFIX}")), true)?;
    let best = match (durable, volatile) {
        (Some(d), Some(v)) => Some(if v.0 > d.0 { v } else { d }),
        (d, v) => d.or(v),
    };
    match best {
        Some((_, claim)) if claim.uid != uid => Err(CheckpointError::Corrupt {
            path: records.join(format!("{uid}{DURABLE_SUFFIX}")),
            reason: format!("the record is for claim {:?}", claim.uid),
        }),
        other => Ok(other),
    }
}

/// Reads and verifies one record file; `None` when it does not exist, or when it is a
/// `torn_ok` file that is not JSON.
fn read_record(
    path: &Path,
    torn_ok: bool,
) -> Result<Option<(u64, PreparedClaim)>, CheckpointError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(io("reading", path, source)),
    };
    match decode_record(&bytes, torn_ok) {
        Ok(None) => {
            tracing::warn!(record = %path.display(), "volatile checkpoint record is torn (a machine crash); using the durable one");
            Ok(None)
        }
        Ok(record) => Ok(record),
        Err(reason) => Err(CheckpointError::Corrupt {
            path: path.to_owned(),
            reason,
        }),
    }
}

/// Decodes and verifies the bytes of one record file: its `seq` and claim. `Ok(None)` when
/// `torn_ok` (a volatile record) and the bytes are not JSON at all.
///
/// Errors: why the record is corrupt (not a record, another version, a checksum mismatch,
/// data that is not a [`PreparedClaim`]).
pub fn decode_record(bytes: &[u8], torn_ok: bool) -> Result<Option<(u64, PreparedClaim)>, String> {
    if torn_ok && serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_err() {
        return Ok(None);
    }
    let envelope: EnvelopeIn =
        serde_json::from_slice(bytes).map_err(|error| format!("not a record: {error}"))?;
    if envelope.version != VERSION {
        return Err(format!(
            "version {} is not supported (this netclaim reads version {VERSION})",
            envelope.version
        ));
    }
    let actual = hex::encode(Sha256::digest(envelope.data.get().as_bytes()));
    if actual != envelope.checksum {
        return Err(format!(
            "checksum mismatch: the file says {}, the data hashes to {actual}",
            envelope.checksum
        ));
    }
    let claim =
        serde_json::from_str(envelope.data.get()).map_err(|error| format!("data: {error}"))?;
    Ok(Some((envelope.seq, claim)))
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
        // A durable write gets a higher seq and removes the volatile file.
        let mut durable = attached.clone();
        durable.nics[0].attachment = Some(attaching());
        put(&reopened, durable.clone(), Durability::Durable);
        assert!(!reopened.records_dir().join("uid-1.volatile.json").exists());
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
        let bytes = fs::read(&volatile).unwrap();
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
    fn a_corrupt_volatile_record_that_is_json_is_not_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoint = Checkpoint::open(dir.path(), Recovery::Fail).unwrap();
        put(&checkpoint, claim("uid-1"), Durability::Durable);
        put(
            &checkpoint,
            claim("uid-1").tap_name("other"),
            Durability::Volatile,
        );
        let path = checkpoint.records_dir().join("uid-1.volatile.json");
        drop(checkpoint);
        let edited = fs::read_to_string(&path).unwrap().replace("other", "thing");
        fs::write(&path, edited).unwrap();
        assert!(open_error(dir.path()).contains("checksum mismatch"));
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
