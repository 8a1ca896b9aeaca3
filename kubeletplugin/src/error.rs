//! The library's error type.

use std::path::PathBuf;

/// Why a [`crate::Plugin`] could not start or stop cleanly.
///
/// Per-claim failures are never reported through this type: they travel to the kubelet in
/// the claim's `error` field (see [`crate::ClaimError`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The builder was given a value the plugin cannot work with.
    #[error("invalid kubelet plugin configuration: {0}")]
    InvalidConfig(String),

    /// A filesystem operation on the plugin's directories or sockets failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What the library was doing, e.g. "creating directory".
        action: &'static str,
        /// The path it was doing it to.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// A gRPC server failed while serving.
    #[error("gRPC server on {path}: {source}")]
    Serve {
        /// The socket the server listened on.
        path: PathBuf,
        /// tonic's error.
        #[source]
        source: tonic::transport::Error,
    },
}

impl Error {
    /// An [`Error::Io`] naming the action and the path.
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Self::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
