//! The daemon's HTTP endpoint: `/metrics` (Prometheus text), `/healthz` and `/readyz`.
//!
//! - `/healthz` answers 200 while the process serves HTTP: the liveness probe. A daemon
//!   that cannot answer this is wedged and restarting it is right (the checkpoint keeps
//!   every claim).
//! - `/readyz` answers 200 once the node agent does its job: the kubelet accepted its
//!   registration, the NRI plugin is registered with the runtime, and the ResourceSlices
//!   were written at least once. Otherwise 503 with one line per missing part. The
//!   DaemonSet's readiness probe uses it, so a rolling update waits for the new pod to be
//!   really serving before the old one goes.
//!
//! Default address: `127.0.0.1:9464` (`--metrics-address`): the pod runs in the node's
//! network namespace, so anything else would expose it on the node's interfaces; the
//! probes dial 127.0.0.1 (`httpGet.host`).

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use anyhow::{Context, Result};
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use kubeletplugin::{PublishStatus, RegistrationStatus};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::metrics::metrics;
use crate::nri::plugin::ConnectionState;

/// The default of `--metrics-address`.
pub const DEFAULT_ADDRESS: &str = "127.0.0.1:9464";

/// What `/readyz` looks at. Parts not yet started count as not ready.
#[derive(Clone, Default)]
pub struct Readiness {
    parts: Arc<RwLock<Parts>>,
}

#[derive(Default)]
struct Parts {
    registration: Option<watch::Receiver<Option<RegistrationStatus>>>,
    nri: Option<watch::Receiver<ConnectionState>>,
    slices: Option<watch::Receiver<PublishStatus>>,
}

impl Readiness {
    /// Watches the kubelet's registration report.
    pub fn set_registration(&self, status: watch::Receiver<Option<RegistrationStatus>>) {
        self.write(|parts| parts.registration = Some(status));
    }

    /// Watches the NRI connection.
    pub fn set_nri(&self, state: watch::Receiver<ConnectionState>) {
        self.write(|parts| parts.nri = Some(state));
    }

    /// Watches the ResourceSlice publisher.
    pub fn set_slices(&self, status: watch::Receiver<PublishStatus>) {
        self.write(|parts| parts.slices = Some(status));
    }

    fn write(&self, set: impl FnOnce(&mut Parts)) {
        // A poisoned lock only means a setter panicked; the data is still a set of
        // receivers, so keep going with it.
        let mut parts = self.parts.write().unwrap_or_else(|p| p.into_inner());
        set(&mut parts);
    }

    /// What is not ready yet, one entry per part; empty when ready.
    pub fn not_ready(&self) -> Vec<String> {
        let parts = self.parts.read().unwrap_or_else(|p| p.into_inner());
        let mut missing = Vec::new();
        match parts.registration.as_ref().map(|r| r.borrow().clone()) {
            None => missing.push("kubelet plugin: not started".to_owned()),
            Some(None) => {
                missing.push("kubelet plugin: the kubelet has not registered it yet".to_owned())
            }
            Some(Some(RegistrationStatus {
                registered: false,
                error,
            })) => missing.push(format!(
                "kubelet plugin: the kubelet refused the registration: {}",
                error.unwrap_or_default()
            )),
            Some(Some(_)) => {}
        }
        match parts.nri.as_ref().map(|s| *s.borrow()) {
            None => missing.push("NRI plugin: not started".to_owned()),
            Some(ConnectionState::Disconnected) => {
                missing.push("NRI plugin: not registered with the container runtime".to_owned())
            }
            Some(ConnectionState::Connected { .. }) => {}
        }
        match parts.slices.as_ref().map(|s| s.borrow().clone()) {
            None => missing.push("ResourceSlices: publisher not started".to_owned()),
            Some(status) if status.synced_generation == 0 => missing.push(format!(
                "ResourceSlices: not written yet{}",
                status
                    .last_error
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            )),
            Some(_) => {}
        }
        missing
    }
}

/// Binds `address` and serves until `shutdown` (a signal, or a handover to a newer
/// instance).
///
/// # Errors
/// When the address cannot be bound (in use, or not an address of this node).
pub async fn start(
    address: SocketAddr,
    readiness: Readiness,
    shutdown: CancellationToken,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = bind(address)
        .with_context(|| format!("binding the metrics and health address {address}"))?;
    let bound = listener.local_addr().context("reading the bound address")?;
    let app = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(readiness);
    let task = tokio::spawn(async move {
        let serve = axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned());
        if let Err(error) = serve.await {
            tracing::error!("the metrics and health endpoint stopped: {error}");
        }
    });
    tracing::info!(address = %bound, "serving /metrics, /healthz and /readyz");
    Ok((bound, task))
}

/// Binds with `SO_REUSEPORT`: during a rolling update the old and the new instance run in
/// the same network namespace (the node's) on the same port. The old one closes its
/// listener when it hands over, and from then on every probe and scrape reaches the new one.
fn bind(address: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = match address {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(address)?;
    socket.listen(128)
}

async fn metrics_text() -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics().encode(),
    )
}

async fn readyz(State(readiness): State<Readiness>) -> impl IntoResponse {
    let missing = readiness.not_ready();
    if missing.is_empty() {
        (StatusCode::OK, "ok\n".to_owned())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            missing.iter().map(|m| format!("{m}\n")).collect::<String>(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_names_each_missing_part_until_all_are_there() {
        let readiness = Readiness::default();
        assert_eq!(
            readiness.not_ready(),
            [
                "kubelet plugin: not started",
                "NRI plugin: not started",
                "ResourceSlices: publisher not started"
            ]
        );

        let (registration, registration_rx) = watch::channel(None);
        let (nri, nri_rx) = watch::channel(ConnectionState::Disconnected);
        let (slices, slices_rx) = watch::channel(PublishStatus::default());
        readiness.set_registration(registration_rx);
        readiness.set_nri(nri_rx);
        readiness.set_slices(slices_rx);
        assert_eq!(
            readiness.not_ready(),
            [
                "kubelet plugin: the kubelet has not registered it yet",
                "NRI plugin: not registered with the container runtime",
                "ResourceSlices: not written yet"
            ]
        );

        registration.send_replace(Some(RegistrationStatus {
            registered: false,
            error: Some("version mismatch".into()),
        }));
        slices.send_replace(PublishStatus {
            synced_generation: 0,
            last_error: Some("422 Invalid".into()),
            ..PublishStatus::default()
        });
        assert_eq!(
            readiness.not_ready(),
            [
                "kubelet plugin: the kubelet refused the registration: version mismatch",
                "NRI plugin: not registered with the container runtime",
                "ResourceSlices: not written yet (422 Invalid)"
            ]
        );

        registration.send_replace(Some(RegistrationStatus {
            registered: true,
            error: None,
        }));
        nri.send_replace(ConnectionState::Connected { session: 1 });
        slices.send_replace(PublishStatus {
            synced_generation: 1,
            last_error: None,
            ..PublishStatus::default()
        });
        assert!(readiness.not_ready().is_empty());

        // Readiness follows the parts: the runtime going away makes it not ready again.
        nri.send_replace(ConnectionState::Disconnected);
        assert_eq!(
            readiness.not_ready(),
            ["NRI plugin: not registered with the container runtime"]
        );
    }
}
