//! One active instance per node, and a handover between two during a rolling update.
//!
//! With `maxSurge: 1` the DaemonSet starts the new pod while the old one still runs. Both
//! would otherwise act on the same checkpoint, the same NICs and the same NRI events. So one
//! instance is *active* at a time: it holds an exclusive `flock` on
//! `<state dir>/active.lock` and listens on `<state dir>/handover.sock`.
//!
//! A starting instance first registers with the kubelet (its prepare calls wait for it to
//! become active, [`kubeletplugin::Deferred`]), then calls [`become_active`]:
//! - the lock is free: it is active at once (the usual start, or after a crash: the kernel
//!   drops a dead process's `flock`);
//! - the lock is held: it connects to `handover.sock` and asks for it. The active instance
//!   steps down (stops its kubelet plugin and NRI plugin, lets running hooks finish, flushes
//!   its status writes), releases the lock and closes the connection; then the new one
//!   takes the lock, reads the checkpoint and connects to the runtime.
//!
//! An instance that stepped down stays idle until SIGTERM: exiting would make the kubelet
//! restart it, and it would ask for the lock back.
//!
//! Guarantees: at most one process acts on the node's claims (the kernel's `flock`); a
//! handover never loses a prepared claim (the checkpoint is on disk before the lock is
//! released). Assumptions: both instances use the same state directory on the host.
//! The gap: between the old instance leaving NRI and the new one connecting (the time to
//! open the checkpoint, typically milliseconds), a RunPodSandbox reaches neither; the new
//! instance's Synchronize finds that pod and attaches its NIC late (`AttachedLate`), as
//! after any NRI outage. Prepare stays closed until the new instance is connected.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

/// What a new instance sends.
const REQUEST: &[u8] = b"handover\n";

/// The exclusive lock of the active instance; dropping it releases the lock.
#[derive(Debug)]
pub struct ActiveLock {
    _lock: Flock<File>,
    socket: PathBuf,
}

/// The active instance's side: someone asked it to step down.
#[derive(Debug)]
pub struct HandoverRequest {
    /// Kept open until the lock is released: closing it tells the new instance.
    connection: UnixStream,
}

impl HandoverRequest {
    /// Releases `lock` and then tells the new instance (by closing the connection).
    pub async fn complete(mut self, lock: ActiveLock) {
        let socket = lock.socket.clone();
        drop(lock);
        if let Err(error) = std::fs::remove_file(&socket) {
            tracing::debug!("removing {}: {error}", socket.display());
        }
        if let Err(error) = self.connection.shutdown().await {
            tracing::debug!("closing the handover connection: {error}");
        }
    }
}

/// Paths of the lock and the handover socket in `state_dir`.
fn paths(state_dir: &Path) -> (PathBuf, PathBuf) {
    (
        state_dir.join("active.lock"),
        state_dir.join("handover.sock"),
    )
}

/// Tries the lock once without waiting.
fn try_lock(path: &Path) -> Result<Option<Flock<File>>> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Some(lock)),
        Err((_, Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, errno)) => Err(errno).with_context(|| format!("locking {}", path.display())),
    }
}

/// Becomes the node's active instance, asking the current one to hand over if there is
/// one, waiting at most `wait` for it.
///
/// # Errors
/// The state directory cannot be used, or the active instance did not hand over in time
/// (it stays active; this instance should exit and be restarted).
pub async fn become_active(state_dir: &Path, wait: Duration) -> Result<ActiveLock> {
    let (lock_path, socket) = paths(state_dir);
    let dir = state_dir.to_owned();
    tokio::task::spawn_blocking(move || std::fs::create_dir_all(&dir))
        .await
        .context("creating the state directory")?
        .with_context(|| format!("creating {}", state_dir.display()))?;
    let attempt = lock_path.clone();
    if let Some(lock) = tokio::task::spawn_blocking(move || try_lock(&attempt))
        .await
        .context("locking")??
    {
        return Ok(ActiveLock {
            _lock: lock,
            socket,
        });
    }
    tracing::info!(
        "another netclaim is active on this node (a rolling update): asking it to hand over"
    );
    let handed_over = async {
        let mut connection = UnixStream::connect(&socket)
            .await
            .with_context(|| format!("connecting to {}", socket.display()))?;
        connection.write_all(REQUEST).await.context("asking")?;
        // The active instance closes the connection once it released the lock.
        let mut rest = Vec::new();
        connection
            .read_to_end(&mut rest)
            .await
            .context("waiting for the handover")?;
        anyhow::Ok(())
    };
    match tokio::time::timeout(wait, handed_over).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => bail!("the active netclaim on this node did not hand over: {error:#}"),
        Err(_) => bail!("the active netclaim on this node did not hand over within {wait:?}"),
    }
    let attempt = lock_path.clone();
    match tokio::task::spawn_blocking(move || try_lock(&attempt))
        .await
        .context("locking")??
    {
        Some(lock) => {
            tracing::info!("took over from the previous netclaim");
            Ok(ActiveLock {
                _lock: lock,
                socket,
            })
        }
        None => bail!(
            "the previous netclaim closed the handover but still holds {}",
            lock_path.display()
        ),
    }
}

/// Listens for a handover request while this instance is active.
///
/// # Errors
/// The socket cannot be bound.
pub fn listen(lock: &ActiveLock) -> Result<UnixListener> {
    // A stale socket from a crashed instance: the lock proves nobody listens on it.
    match std::fs::remove_file(&lock.socket) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => {
            return Err(error).with_context(|| format!("removing {}", lock.socket.display()));
        }
    }
    UnixListener::bind(&lock.socket).with_context(|| format!("binding {}", lock.socket.display()))
}

/// Waits for a new instance to ask for the handover (ignores connections that do not).
pub async fn requested(listener: &UnixListener) -> HandoverRequest {
    loop {
        let Ok((mut connection, _)) = listener.accept().await else {
            continue;
        };
        let mut request = [0u8; REQUEST.len()];
        let asked =
            tokio::time::timeout(Duration::from_secs(5), connection.read_exact(&mut request)).await;
        if matches!(asked, Ok(Ok(_))) && request == REQUEST {
            return HandoverRequest { connection };
        }
        tracing::warn!("ignoring a connection to the handover socket that did not ask for it");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_second_instance_waits_for_the_first_to_hand_over() {
        let dir = tempfile::tempdir().unwrap();
        let first = become_active(dir.path(), Duration::from_secs(5))
            .await
            .unwrap();
        let listener = listen(&first).unwrap();
        let second = tokio::spawn({
            let dir = dir.path().to_owned();
            async move { become_active(&dir, Duration::from_secs(10)).await }
        });
        let request = requested(&listener).await;
        // Until the first completes, the second cannot have the lock.
        assert!(try_lock(&dir.path().join("active.lock")).unwrap().is_none());
        assert!(!second.is_finished());
        request.complete(first).await;
        let second = second.await.unwrap().unwrap();
        assert!(try_lock(&dir.path().join("active.lock")).unwrap().is_none());
        drop(second);
        assert!(try_lock(&dir.path().join("active.lock")).unwrap().is_some());
    }

    #[tokio::test]
    async fn an_instance_that_never_hands_over_fails_the_start_in_time() {
        let dir = tempfile::tempdir().unwrap();
        let _first = become_active(dir.path(), Duration::from_secs(5))
            .await
            .unwrap();
        // No listener: the active instance predates handovers or is wedged.
        let error = become_active(dir.path(), Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(
            format!("{error:#}").contains("did not hand over"),
            "{error:#}"
        );
    }
}
