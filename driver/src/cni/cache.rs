//! The CNI result cache: `<cache dir>/<network>-<container id>-<ifname>.json`, written by a
//! successful ADD with the exact list it ran and its result, read by DEL and CHECK (also
//! after a restart), removed by a successful DEL.
//!
//! Every function here does file I/O and is async only by running it on a blocking thread:
//! the NRI hooks call them, and the async runtime's threads never wait on a disk.
//!
//! No fsync, on purpose (libcni does not sync its cache either): the cache must survive a
//! restart of netclaim, which the page cache covers, and the rename means a reader never
//! sees a half-written entry. After a machine crash the pod netns the entries describe are
//! gone too; an entry lost or emptied then is read as "not cached" and DEL runs from the
//! stored list. An fsync of the file and the directory cost ~11 ms at p50 on this node's
//! disk under load, ten times the overhead budget of a whole ADD+DEL.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use netclaim_api::cni::CniNetworkList;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Attachment, CniError};

/// Tags cache files so foreign files in the cache dir are never taken for entries.
pub const CACHE_KIND: &str = "netclaim.dev/cni-cache/v1";

/// What the cache holds for one attachment.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheEntry {
    /// Always [`CACHE_KIND`].
    pub kind: String,
    /// The attachment the ADD was for.
    pub attachment: Attachment,
    /// The exact list ADD ran (after device substitution).
    pub config: CniNetworkList,
    /// The ADD result: `prevResult` for DEL and CHECK.
    pub result: Value,
}

/// The cache directory.
#[derive(Clone, Debug)]
pub struct ResultCache {
    dir: PathBuf,
}

impl ResultCache {
    /// The cache in `dir` (created on the first write, mode 0700).
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file of an attachment's entry.
    pub fn path(&self, network: &str, attachment: &Attachment) -> PathBuf {
        self.dir.join(format!(
            "{network}-{}-{}.json",
            attachment.container_id, attachment.ifname
        ))
    }

    /// The entry of an attachment, if any (one written for another attachment whose name
    /// happens to collide is not returned).
    ///
    /// An entry that does not parse is reported as absent (with a warning), so that DEL
    /// can still run from the stored list.
    ///
    /// # Errors
    /// [`CniError::Cache`] when the file exists but cannot be read.
    pub async fn read(
        &self,
        network: &str,
        attachment: &Attachment,
    ) -> Result<Option<CacheEntry>, CniError> {
        let path = self.path(network, attachment);
        let (network, attachment) = (network.to_owned(), attachment.clone());
        blocking(move || read_entry(&path, &network, &attachment)).await
    }

    /// [`ResultCache::read`] on the calling thread, for work already on a blocking thread.
    ///
    /// # Errors
    /// [`CniError::Cache`] when the file exists but cannot be read.
    pub(crate) fn read_blocking(
        &self,
        network: &str,
        attachment: &Attachment,
    ) -> Result<Option<CacheEntry>, CniError> {
        read_entry(&self.path(network, attachment), network, attachment)
    }

    /// Writes an entry by atomic replace.
    ///
    /// # Errors
    /// [`CniError::Cache`].
    pub async fn write(&self, entry: CacheEntry) -> Result<(), CniError> {
        let path = self.path(&entry.config.name, &entry.attachment);
        let dir = self.dir.clone();
        blocking(move || {
            let bytes = serde_json::to_vec(&entry).map_err(|error| cache_error(&path, error))?;
            write_atomically(&dir, &path, &bytes).map_err(|error| cache_error(&path, error))
        })
        .await
    }

    /// Removes an attachment's entry; a missing one is fine.
    ///
    /// # Errors
    /// [`CniError::Cache`].
    pub async fn remove(&self, network: &str, attachment: &Attachment) -> Result<(), CniError> {
        let path = self.path(network, attachment);
        blocking(move || match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(cache_error(&path, error)),
        })
        .await
    }

    /// Every entry of `network` (unreadable or foreign files are skipped).
    ///
    /// # Errors
    /// [`CniError::Cache`] when the directory exists but cannot be listed.
    pub async fn entries(&self, network: &str) -> Result<Vec<CacheEntry>, CniError> {
        let dir = self.dir.clone();
        let network = network.to_owned();
        blocking(move || list_entries(&dir, &network)).await
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, CniError> + Send + 'static,
) -> Result<T, CniError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| CniError::Cache {
            path: PathBuf::new(),
            message: format!("the cache task failed: {error}"),
        })?
}

fn read_entry(
    path: &Path,
    network: &str,
    attachment: &Attachment,
) -> Result<Option<CacheEntry>, CniError> {
    let raw = match std::fs::read(path) {
        Ok(raw) => raw,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(cache_error(path, error)),
    };
    let entry: CacheEntry = match serde_json::from_slice(&raw) {
        Ok(entry) => entry,
        Err(error) => {
            // A torn or emptied entry (machine crash) must not block DEL forever: it runs
            // from the stored list instead.
            tracing::warn!(path = %path.display(), %error, "unreadable CNI cache entry; ignoring it");
            return Ok(None);
        }
    };
    let same = entry.kind == CACHE_KIND
        && entry.config.name == network
        && entry.attachment.container_id == attachment.container_id
        && entry.attachment.ifname == attachment.ifname;
    Ok(same.then_some(entry))
}

fn list_entries(dir: &Path, network: &str) -> Result<Vec<CacheEntry>, CniError> {
    let listing = match std::fs::read_dir(dir) {
        Ok(listing) => listing,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(cache_error(dir, error)),
    };
    let prefix = format!("{network}-");
    let mut entries = Vec::new();
    for file in listing.flatten() {
        let name = file.file_name();
        let Some(name) = name.to_str() else { continue };
        if !(name.starts_with(&prefix) && name.ends_with(".json")) {
            continue;
        }
        let Ok(raw) = std::fs::read(file.path()) else {
            continue;
        };
        if let Ok(entry) = serde_json::from_slice::<CacheEntry>(&raw)
            && entry.kind == CACHE_KIND
            && entry.config.name == network
        {
            entries.push(entry);
        }
    }
    Ok(entries)
}

fn cache_error(path: &Path, error: impl std::fmt::Display) -> CniError {
    CniError::Cache {
        path: path.to_owned(),
        message: error.to_string(),
    }
}

/// Writes `bytes` to `path` by atomic replace: a temp file in `dir`, then rename. Creates
/// `dir` (mode 0700) when missing. No fsync (see the [module docs](self)).
fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("entry");
    let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    let written = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}
