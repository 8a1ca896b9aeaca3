//! The checkpoint: a crash-safe copy of [`DriverState`] at `<dir>/checkpoint.json`.
//!
//! # File format
//! ```json
//! { "version": 1, "checksum": "<sha256 hex>", "data": { "claims": { ... } } }
//! ```
//! The checksum is the SHA-256 of the canonical encoding of `data`: compact JSON with the
//! keys of every object sorted. It is computed over the JSON value, not the Rust type, so a
//! newer netclaim that adds (defaulted) fields to the state still verifies older files.
//!
//! # Guarantees
//! - A save replaces the file atomically: the new content goes to a temp file in the same
//!   directory and is renamed over `checkpoint.json`. A process crash at any point leaves
//!   either the old or the new checkpoint, never a torn one.
//! - A [`Durability::Durable`] save also fsyncs the temp file before the rename and the
//!   directory after it, and keeps a hard link to the synced file as
//!   `checkpoint.json.durable`, so it survives a machine crash as well. A
//!   [`Durability::Volatile`] save skips the fsyncs (about a millisecond each): should a
//!   machine crash tear `checkpoint.json` after one, opening falls back to the last durable
//!   state. Callers make volatile only what a machine crash makes moot anyway (see
//!   [`Durability`]).
//! - The file and its temp files are created with mode 0600; the directory with 0700.
//! - A corrupt checkpoint (unparsable, wrong checksum, unknown version) is never silently
//!   replaced: loading fails unless the caller chose [`Recovery::StartEmpty`], in which case
//!   the bad file is kept aside as `checkpoint.json.corrupt-<timestamp>`.
//!
//! # Assumptions
//! - One process owns the directory. Within the process, [`Checkpoint`] serializes
//!   writers; readers see the last successfully saved state.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::state::DriverState;

/// The file name of the checkpoint inside its directory.
pub const FILE_NAME: &str = "checkpoint.json";
/// The format version this code writes and reads.
pub const VERSION: u32 = 1;

/// The hard link to the last durably saved checkpoint.
pub const DURABLE_FILE_NAME: &str = "checkpoint.json.durable";

/// Prefix of temp files; leftovers from a crash are ignored on load and removed on open.
const TEMP_PREFIX: &str = "checkpoint.json.tmp-";

/// How far a save must get before it returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// On disk, through a power cut: for what must outlive the machine (prepared claims,
    /// and the record written before an attach changes anything).
    Durable,
    /// Visible to the next process (rename, no fsync): for records whose loss in a machine
    /// crash changes nothing, because the crash ends every pod netns they describe.
    Volatile,
}

/// What to do when the checkpoint on disk is corrupt.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Recovery {
    /// Fail to open; leave the file where it is for an operator to inspect.
    #[default]
    Fail,
    /// Move the bad file aside as `checkpoint.json.corrupt-<timestamp>` and start empty.
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
    /// The file exists but cannot be trusted.
    #[error(
        "checkpoint {path} is corrupt: {reason}; refusing to forget prepared claims \
         (move it aside or start with recovery to begin empty)"
    )]
    Corrupt {
        /// The checkpoint file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The state could not be encoded (should not happen for [`DriverState`]).
    #[error("checkpoint: encoding the state: {0}")]
    Encode(#[from] serde_json::Error),
}

/// The on-disk envelope.
#[derive(Serialize, Deserialize)]
struct Envelope {
    version: u32,
    checksum: String,
    data: Value,
}

/// A handle on the checkpoint directory holding the last saved state in memory.
///
/// # Guarantees
/// - [`Checkpoint::update`] and [`Checkpoint::save`] run one at a time; the in-memory state
///   changes only after the file was durably replaced, so memory never runs ahead of disk.
#[derive(Debug)]
pub struct Checkpoint {
    dir: PathBuf,
    state: Mutex<DriverState>,
    saves: AtomicU64,
}

impl Checkpoint {
    /// Opens (creating the directory if needed) and loads the checkpoint in `dir`.
    ///
    /// A missing file is an empty state. Leftover temp files from an interrupted save are
    /// removed.
    ///
    /// # Errors
    /// [`CheckpointError::Io`] when the directory or file cannot be read;
    /// [`CheckpointError::Corrupt`] when the file is bad and `recovery` is [`Recovery::Fail`].
    pub fn open(dir: impl Into<PathBuf>, recovery: Recovery) -> Result<Self, CheckpointError> {
        let dir = dir.into();
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|source| io("creating directory", &dir, source))?;
        remove_temp_files(&dir);
        let state = match load_or_durable_copy(&dir) {
            Ok(state) => state,
            Err(CheckpointError::Corrupt { path, reason }) if recovery == Recovery::StartEmpty => {
                let aside = set_aside(&path)?;
                tracing::error!(
                    checkpoint = %path.display(), kept_as = %aside.display(), %reason,
                    "checkpoint is corrupt; starting empty as told"
                );
                DriverState::default()
            }
            Err(error) => return Err(error),
        };
        Ok(Self {
            dir,
            state: Mutex::new(state),
            saves: AtomicU64::new(0),
        })
    }

    /// The checkpoint file's path.
    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE_NAME)
    }

    /// Re-reads the file from disk (without touching the in-memory state).
    ///
    /// # Errors
    /// As [`Checkpoint::open`] with [`Recovery::Fail`].
    pub fn load(&self) -> Result<DriverState, CheckpointError> {
        load_file(&self.path())
    }

    /// A copy of the last saved state.
    pub fn state(&self) -> DriverState {
        self.lock().clone()
    }

    /// Reads the last saved state without copying it.
    pub fn read<R>(&self, f: impl FnOnce(&DriverState) -> R) -> R {
        f(&self.lock())
    }

    /// How many times this handle wrote the file (for tests of "no rewrite").
    pub fn save_count(&self) -> u64 {
        self.saves.load(Ordering::Relaxed)
    }

    /// Durably replaces the checkpoint with `state`.
    ///
    /// # Errors
    /// [`CheckpointError::Io`] when writing, syncing or renaming fails; the previous
    /// checkpoint then stays in place and in memory.
    pub fn save(&self, state: &DriverState) -> Result<(), CheckpointError> {
        let mut current = self.lock();
        self.write(state, Durability::Durable)?;
        *current = state.clone();
        Ok(())
    }

    /// Runs `change` on a copy of the state and saves it durably if it changed.
    ///
    /// `change` may refuse by returning an error of its own type; nothing is saved then.
    ///
    /// # Errors
    /// `change`'s error, or a [`CheckpointError`] converted into `E` when saving fails.
    pub fn update<R, E>(
        &self,
        change: impl FnOnce(&mut DriverState) -> Result<R, E>,
    ) -> Result<R, E>
    where
        E: From<CheckpointError>,
    {
        self.update_with(Durability::Durable, change)
    }

    /// [`Checkpoint::update`] with the save's [`Durability`] chosen by the caller.
    ///
    /// # Errors
    /// As [`Checkpoint::update`].
    pub fn update_with<R, E>(
        &self,
        durability: Durability,
        change: impl FnOnce(&mut DriverState) -> Result<R, E>,
    ) -> Result<R, E>
    where
        E: From<CheckpointError>,
    {
        let mut current = self.lock();
        let mut next = current.clone();
        let result = change(&mut next)?;
        if next != *current {
            self.write(&next, durability)?;
            *current = next;
        }
        Ok(result)
    }

    fn lock(&self) -> MutexGuard<'_, DriverState> {
        // A panic while holding the lock cannot leave a half-changed state: changes are made
        // on a copy and stored only after a successful save.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self, state: &DriverState, durability: Durability) -> Result<(), CheckpointError> {
        let bytes = encode(state)?;
        let temp = self.temp_path("");
        let synced = durability == Durability::Durable;
        write_file(&temp, &bytes, synced).inspect_err(|_| {
            let _ = fs::remove_file(&temp);
        })?;
        let path = self.path();
        fs::rename(&temp, &path).map_err(|source| {
            let _ = fs::remove_file(&temp);
            io("renaming temp file over", &path, source)
        })?;
        if synced {
            // The durable copy is the same (synced) inode under a second name; later
            // volatile saves rename new inodes over `checkpoint.json` and leave it be.
            let link = self.temp_path("durable-");
            let durable = self.dir.join(DURABLE_FILE_NAME);
            fs::hard_link(&path, &link)
                .and_then(|()| fs::rename(&link, &durable))
                .map_err(|source| {
                    let _ = fs::remove_file(&link);
                    io("linking the durable copy", &durable, source)
                })?;
            sync_dir(&self.dir)?;
        }
        self.saves.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn temp_path(&self, kind: &str) -> PathBuf {
        self.dir.join(format!(
            "{TEMP_PREFIX}{kind}{}-{}",
            std::process::id(),
            self.saves.load(Ordering::Relaxed)
        ))
    }
}

fn io(action: &'static str, path: &Path, source: std::io::Error) -> CheckpointError {
    CheckpointError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// The envelope bytes for `state`.
fn encode(state: &DriverState) -> Result<Vec<u8>, CheckpointError> {
    let data = serde_json::to_value(state)?;
    let envelope = Envelope {
        version: VERSION,
        checksum: checksum(&data)?,
        data,
    };
    let mut bytes = serde_json::to_vec_pretty(&envelope)?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// SHA-256 hex of the canonical encoding (sorted keys, compact) of `data`.
fn checksum(data: &Value) -> Result<String, CheckpointError> {
    let canonical = serde_json::to_vec(&sorted(data))?;
    Ok(hex::encode(Sha256::digest(&canonical)))
}

/// `value` with the keys of every object in sorted order, whatever map type serde_json was
/// built with (its `preserve_order` feature keeps insertion order).
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

/// Reads the checkpoint in `dir` without opening it for writing: no directory is created
/// and no temp file removed, so it is safe next to a running daemon (`netclaim check`).
/// A missing file is an empty state.
///
/// # Errors
/// As [`Checkpoint::open`] with [`Recovery::Fail`].
pub fn read_only(dir: &Path) -> Result<DriverState, CheckpointError> {
    load_or_durable_copy(dir)
}

/// Loads `checkpoint.json` in `dir`, or the durable copy when the file is torn and the
/// copy is sound; otherwise the file's error.
fn load_or_durable_copy(dir: &Path) -> Result<DriverState, CheckpointError> {
    match load_file(&dir.join(FILE_NAME)) {
        Err(CheckpointError::Corrupt { path, reason })
            if let Ok(state) = load_existing(&dir.join(DURABLE_FILE_NAME)) =>
        {
            // Only a machine crash after a volatile save tears the file; its durable
            // predecessor has every prepared claim (those are saved durably), and any
            // attachment it is behind on ended with the machine.
            tracing::warn!(
                checkpoint = %path.display(), %reason,
                "checkpoint is torn; using the last durable copy"
            );
            Ok(state)
        }
        other => other,
    }
}

/// Loads and verifies a checkpoint file that must exist.
fn load_existing(path: &Path) -> Result<DriverState, CheckpointError> {
    let bytes = fs::read(path).map_err(|source| io("reading", path, source))?;
    decode(&bytes).map_err(|reason| CheckpointError::Corrupt {
        path: path.to_owned(),
        reason,
    })
}

/// Loads and verifies the checkpoint file; a missing file is an empty state.
fn load_file(path: &Path) -> Result<DriverState, CheckpointError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Ok(DriverState::default());
        }
        Err(source) => return Err(io("reading", path, source)),
    };
    decode(&bytes).map_err(|reason| CheckpointError::Corrupt {
        path: path.to_owned(),
        reason,
    })
}

/// Parses and verifies envelope bytes; the error says what is wrong.
fn decode(bytes: &[u8]) -> Result<DriverState, String> {
    let envelope: Envelope =
        serde_json::from_slice(bytes).map_err(|error| format!("not a checkpoint: {error}"))?;
    if envelope.version != VERSION {
        return Err(format!(
            "version {} is not supported (this netclaim reads version {VERSION})",
            envelope.version
        ));
    }
    let actual = checksum(&envelope.data).map_err(|error| error.to_string())?;
    if actual != envelope.checksum {
        return Err(format!(
            "checksum mismatch: the file says {}, the data hashes to {actual}",
            envelope.checksum
        ));
    }
    serde_json::from_value(envelope.data).map_err(|error| format!("data: {error}"))
}

/// Writes `bytes` to a new file at `path` (mode 0600) and fsyncs it.
fn write_file(path: &Path, bytes: &[u8], synced: bool) -> Result<(), CheckpointError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
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

/// fsyncs a directory so a rename in it is durable.
fn sync_dir(dir: &Path) -> Result<(), CheckpointError> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(|source| io("syncing directory", dir, source))
}

/// Moves a corrupt checkpoint aside; returns where it went.
fn set_aside(path: &Path) -> Result<PathBuf, CheckpointError> {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.9fZ");
    let aside = path.with_file_name(format!("{FILE_NAME}.corrupt-{stamp}"));
    fs::rename(path, &aside).map_err(|source| io("moving aside", path, source))?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(aside)
}

/// Removes temp files an interrupted save left behind; they never hold the checkpoint.
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::state::{PreparedClaim, PreparedNic};

    fn sample() -> DriverState {
        let mut state = DriverState::default();
        state.claims.insert(
            "uid-1".into(),
            PreparedClaim {
                uid: "uid-1".into(),
                namespace: "default".into(),
                name: "nic-a".into(),
                pod_uids: vec!["pod-1".into()],
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
                    attachment: None,
                }],
            },
        );
        state
    }

    #[test]
    fn missing_file_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoint = Checkpoint::open(dir.path().join("sub"), Recovery::Fail).unwrap();
        assert_eq!(checkpoint.state(), DriverState::default());
        assert!(!checkpoint.path().exists());
    }

    #[test]
    fn round_trip_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoint = Checkpoint::open(dir.path(), Recovery::Fail).unwrap();
        checkpoint.save(&sample()).unwrap();
        assert_eq!(checkpoint.load().unwrap(), sample());
        drop(checkpoint);
        let reopened = Checkpoint::open(dir.path(), Recovery::Fail).unwrap();
        assert_eq!(reopened.state(), sample());
        let text = fs::read_to_string(reopened.path()).unwrap();
        let envelope: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(envelope["version"], 1);
        assert_eq!(envelope["checksum"].as_str().unwrap().len(), 64);
    }

    #[test]
    fn file_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoint = Checkpoint::open(dir.path(), Recovery::Fail).unwrap();
        checkpoint.save(&sample()).unwrap();
        let mode = fs::metadata(checkpoint.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn torn_file_is_an_error_and_left_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoint = Checkpoint::open(dir.path(), Recovery::Fail).unwrap();
        checkpoint.save(&sample()).unwrap();
        let path = checkpoint.path();
        let bytes = fs::read(&path).unwrap();
        fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let error = Checkpoint::open(dir.path(), Recovery::Fail).unwrap_err();
        assert!(matches!(error, CheckpointError::Corrupt { .. }), "{error}");
        assert_eq!(fs::read(&path).unwrap(), &bytes[..bytes.len() / 2]);
    }

    #[test]
    fn a_torn_file_after_volatile_saves_falls_back_to_the_last_durable_one() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoint = Checkpoint::open(dir.path(), Recovery::Fail).unwrap();
        checkpoint.save(&sample()).unwrap();
        let durable = dir.path().join(DURABLE_FILE_NAME);
        assert_eq!(load_existing(&durable).unwrap(), sample());

        // A volatile change reaches checkpoint.json (and memory), not the durable copy.
        checkpoint
            .update_with(Durability::Volatile, |state| {
                state.claims.get_mut("uid-1").unwrap().pod_uids = vec!["pod-2".into()];
                Ok::<_, CheckpointError>(())
            })
            .unwrap();
        let changed = checkpoint.state();
        assert_eq!(checkpoint.load().unwrap(), changed);
        assert_eq!(load_existing(&durable).unwrap(), sample());
        drop(checkpoint);
        assert_eq!(
            Checkpoint::open(dir.path(), Recovery::Fail)
                .unwrap()
                .state(),
            changed
        );

        // A machine crash tears the file of the volatile save (a new inode, as renames
        // make): opening falls back to the durable copy.
        let torn = dir.path().join("torn");
        fs::write(&torn, b"{\"version\": 1, \"chec").unwrap();
        fs::rename(&torn, dir.path().join(FILE_NAME)).unwrap();
        assert_eq!(read_only(dir.path()).unwrap(), sample());
        let reopened = Checkpoint::open(dir.path(), Recovery::Fail).unwrap();
        assert_eq!(reopened.state(), sample());
    }

    #[test]
    fn a_durable_save_after_volatile_ones_moves_the_durable_copy_forward() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoint = Checkpoint::open(dir.path(), Recovery::Fail).unwrap();
        checkpoint.save(&DriverState::default()).unwrap();
        checkpoint
            .update_with(Durability::Volatile, |state| {
                *state = sample();
                Ok::<_, CheckpointError>(())
            })
            .unwrap();
        checkpoint
            .update(|state| {
                state.claims.get_mut("uid-1").unwrap().name = "nic-b".into();
                Ok::<_, CheckpointError>(())
            })
            .unwrap();
        let durable = load_existing(&dir.path().join(DURABLE_FILE_NAME)).unwrap();
        assert_eq!(durable, checkpoint.state());
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(TEMP_PREFIX))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn checksum_mismatch_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoint = Checkpoint::open(dir.path(), Recovery::Fail).unwrap();
        checkpoint.save(&sample()).unwrap();
        let text = fs::read_to_string(checkpoint.path()).unwrap();
        fs::write(checkpoint.path(), text.replace("nic-a", "nic-b")).unwrap();
        let error = checkpoint.load().unwrap_err();
        assert!(error.to_string().contains("checksum mismatch"), "{error}");
    }

    #[test]
    fn unknown_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoint = Checkpoint::open(dir.path(), Recovery::Fail).unwrap();
        checkpoint.save(&sample()).unwrap();
        let text = fs::read_to_string(checkpoint.path()).unwrap();
        fs::write(
            checkpoint.path(),
            text.replace("\"version\": 1", "\"version\": 2"),
        )
        .unwrap();
        let error = checkpoint.load().unwrap_err();
        assert!(error.to_string().contains("version 2"), "{error}");
    }

    #[test]
    fn recovery_sets_the_bad_file_aside_and_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(FILE_NAME), b"{garbage").unwrap();
        let checkpoint = Checkpoint::open(dir.path(), Recovery::StartEmpty).unwrap();
        assert_eq!(checkpoint.state(), DriverState::default());
        let kept: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with("checkpoint.json.corrupt-"))
            .collect();
        assert_eq!(kept.len(), 1);
        assert_eq!(
            fs::read(dir.path().join(&kept[0])).unwrap(),
            b"{garbage".to_vec()
        );
        assert!(!checkpoint.path().exists());
    }

    #[test]
    fn leftover_temp_file_is_ignored_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoint = Checkpoint::open(dir.path(), Recovery::Fail).unwrap();
        checkpoint.save(&sample()).unwrap();
        let temp = dir.path().join(format!("{TEMP_PREFIX}999-0"));
        fs::write(&temp, b"{half a checkp").unwrap();
        let reopened = Checkpoint::open(dir.path(), Recovery::Fail).unwrap();
        assert_eq!(reopened.state(), sample());
        assert!(!temp.exists());
    }

    #[test]
    fn update_saves_only_on_change() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoint = Checkpoint::open(dir.path(), Recovery::Fail).unwrap();
        checkpoint
            .update(|state| {
                *state = sample();
                Ok::<_, CheckpointError>(())
            })
            .unwrap();
        assert_eq!(checkpoint.save_count(), 1);
        checkpoint.update(|_| Ok::<_, CheckpointError>(())).unwrap();
        assert_eq!(checkpoint.save_count(), 1);
        let refused: Result<(), CheckpointError> = checkpoint.update(|state| {
            state.claims.clear();
            Err(CheckpointError::Corrupt {
                path: PathBuf::new(),
                reason: "refused".into(),
            })
        });
        assert!(refused.is_err());
        assert_eq!(checkpoint.state(), sample());
        assert_eq!(checkpoint.load().unwrap(), sample());
    }

    #[test]
    fn checksum_ignores_key_order() {
        let a: Value = serde_json::from_str(r#"{"b": 1, "a": {"d": 2, "c": 3}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a": {"c": 3, "d": 2}, "b": 1}"#).unwrap();
        assert_eq!(checksum(&a).unwrap(), checksum(&b).unwrap());
    }

    #[test]
    fn a_nic_stored_before_network_attachment_definitions_still_loads() {
        let stored = serde_json::json!({
            "request": "nic", "pool": "node-a", "device": "eth1", "hostIfName": "eth1",
            "config": {}, "cni": {"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "macvlan"}]}
        });
        let nic: PreparedNic = serde_json::from_value(stored).unwrap();
        assert_eq!(nic.network_attachment_definition, None);
        let written = serde_json::to_value(&nic).unwrap();
        assert!(
            written.get("networkAttachmentDefinition").is_none(),
            "{written}"
        );
    }
}
