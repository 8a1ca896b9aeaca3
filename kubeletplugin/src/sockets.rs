//! Where the plugin's sockets live, and how they are created and removed.
//!
//! The kubelet's plugin watcher reacts to every new socket in its registration directory, so
//! a socket must never appear there before it is ready: each socket is bound under a hidden
//! temporary name (the watcher skips dot files), given its final mode, and then renamed into
//! place in one step.

use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::UnixListener;

use crate::error::Error;

/// Mode of the directories the plugin creates: the group (the kubelet's) may enter, others
/// may not.
pub(crate) const DIR_MODE: u32 = 0o750;
/// Mode of the sockets: connecting needs write permission, which others must not have.
pub(crate) const SOCKET_MODE: u32 = 0o660;
/// `sun_path` holds 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH_BYTES: usize = 107;

/// The paths of one plugin instance's sockets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SocketLayout {
    /// The kubelet's plugin registration directory.
    pub registrar_dir: PathBuf,
    /// The driver's own directory (DRA socket, driver state).
    pub plugin_data_dir: PathBuf,
    /// `<registrar dir>/<driver>-reg.sock` (or `<driver>-<pod uid>-reg.sock`).
    pub registration_socket: PathBuf,
    /// `<plugin data dir>/dra.sock` (or `dra-<pod uid>.sock`).
    pub dra_socket: PathBuf,
}

impl SocketLayout {
    /// The layout for `driver_name`; with a pod UID (rolling updates), the socket names carry
    /// it so that the old and the new pod of a DaemonSet can serve side by side.
    pub fn new(
        driver_name: &str,
        registrar_dir: PathBuf,
        plugin_data_dir: PathBuf,
        rolling_update_uid: Option<&str>,
    ) -> Result<Self, Error> {
        let (registration_name, dra_name) = match rolling_update_uid {
            None => (format!("{driver_name}-reg.sock"), "dra.sock".to_string()),
            Some(uid) => (
                format!("{driver_name}-{uid}-reg.sock"),
                format!("dra-{uid}.sock"),
            ),
        };
        let layout = Self {
            registration_socket: registrar_dir.join(registration_name),
            dra_socket: plugin_data_dir.join(dra_name),
            registrar_dir,
            plugin_data_dir,
        };
        check_socket_path_length(&layout.registration_socket)?;
        check_socket_path_length(&layout.dra_socket)?;
        Ok(layout)
    }

    /// Creates both directories (0750 where created) and removes stale sockets left by a
    /// previous instance with the same names.
    pub fn prepare(&self) -> Result<(), Error> {
        create_dir(&self.registrar_dir)?;
        create_dir(&self.plugin_data_dir)?;
        remove_stale_socket(&self.registration_socket)?;
        remove_stale_socket(&self.dra_socket)?;
        Ok(())
    }

    /// Removes both sockets, the registration socket first so that the kubelet stops
    /// routing calls here before the service socket disappears.
    pub fn remove(&self) -> Result<(), Error> {
        let registration = remove_stale_socket(&self.registration_socket);
        let dra = remove_stale_socket(&self.dra_socket);
        registration.and(dra)
    }
}

fn check_socket_path_length(path: &Path) -> Result<(), Error> {
    let len = path.as_os_str().len();
    if len > MAX_SOCKET_PATH_BYTES {
        return Err(Error::InvalidConfig(format!(
            "socket path {} is {len} bytes long; unix socket paths hold at most \
             {MAX_SOCKET_PATH_BYTES}",
            path.display()
        )));
    }
    Ok(())
}

/// Creates `dir` and its missing parents with mode 0750. An existing directory keeps its
/// mode: the registration directory belongs to the kubelet.
fn create_dir(dir: &Path) -> Result<(), Error> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(|e| Error::io("creating directory", dir, e))
}

/// Removes a socket file if there is one. Anything else at that path is left alone and
/// reported: deleting a user's regular file because it has a socket's name would be worse
/// than failing to start.
pub(crate) fn remove_stale_socket(path: &Path) -> Result<(), Error> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("inspecting socket", path, e)),
        Ok(meta) if meta.file_type().is_socket() => match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::io("removing socket", path, e))
            }
            _ => Ok(()),
        },
        Ok(_) => Err(Error::io(
            "refusing to replace non-socket",
            path,
            std::io::Error::from(std::io::ErrorKind::AlreadyExists),
        )),
    }
}

/// Binds a listener that appears at `path` only once it has its final mode (0660).
pub(crate) fn bind(path: &Path) -> Result<UnixListener, Error> {
    let temporary = temporary_name(path)?;
    remove_stale_socket(&temporary)?;
    let listener =
        UnixListener::bind(&temporary).map_err(|e| Error::io("binding socket", &temporary, e))?;
    let placed = std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(SOCKET_MODE))
        .map_err(|e| Error::io("setting mode of socket", &temporary, e))
        .and_then(|()| {
            std::fs::rename(&temporary, path)
                .map_err(|e| Error::io("moving socket into place at", path, e))
        });
    if let Err(e) = placed {
        // Best effort: the listener is dropped with the error, its file must not linger.
        let _ = std::fs::remove_file(&temporary);
        return Err(e);
    }
    Ok(listener)
}

/// A hidden name next to `path`, short enough to stay within `sun_path`.
fn temporary_name(path: &Path) -> Result<PathBuf, Error> {
    let dir = path.parent().ok_or_else(|| {
        Error::InvalidConfig(format!("socket path {} has no directory", path.display()))
    })?;
    let temporary = dir.join(format!(".{:08x}.tmp", rand::random::<u32>()));
    check_socket_path_length(&temporary)?;
    Ok(temporary)
}
