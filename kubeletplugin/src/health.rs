//! Device health, streamed to the kubelet over `DRAResourceHealth`, served in two versions
//! on the DRA socket: `v1.DRAResourceHealth` and `v1alpha1.DRAResourceHealth` (the same
//! messages). Both are advertised in the registration's `supported_versions`
//! ([`crate::HEALTH_SERVICES`]); a kubelet that knows v1 picks it, an older one picks
//! v1alpha1 (kubelet `pkg/kubelet/cm/dra/plugin`, `pickHealthService`), and the oldest
//! (1.34) opens v1alpha1 without looking at the list.
//!
//! The driver keeps a [`HealthReporter`] and reports a full snapshot whenever anything
//! changes; every kubelet stream receives the current snapshot when it connects and then
//! each new one, in its version's messages.
//!
//! The kubelet treats a device whose health was not reported again within its
//! `health_check_timeout` (when unset, the kubelet's default of 30 s) as `Unknown`: a
//! driver re-reports (with a fresh [`DeviceHealth::last_updated`]) well within it, and a
//! driver whose monitoring stops decays to `Unknown` by itself.

use std::pin::Pin;
use std::time::{Duration, SystemTime};

use futures::{Stream, StreamExt};
use tokio::sync::watch;
use tokio_stream::wrappers::WatchStream;
use tokio_util::sync::CancellationToken;

use crate::proto::{health_v1, health_v1alpha1};

/// The health of one device as the driver sees it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum HealthStatus {
    /// The driver cannot tell.
    #[default]
    Unknown,
    /// The device works.
    Healthy,
    /// The device is broken; pods using it may be affected.
    Unhealthy,
}

/// One device's health report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceHealth {
    /// The pool the device is published in.
    pub pool_name: String,
    /// The device's name within its pool.
    pub device_name: String,
    /// Its health.
    pub status: HealthStatus,
    /// When the driver last checked it.
    pub last_updated: SystemTime,
    /// How long the kubelet should trust this report before treating the device's health
    /// as unknown; `None` leaves the kubelet's default.
    pub health_check_timeout: Option<Duration>,
    /// A human-readable explanation, e.g. why the device is unhealthy. At most
    /// [`MAX_HEALTH_MESSAGE_LEN`] characters go on the wire (the kubelet's limit): a longer
    /// one is cut and ends in `...`.
    pub message: String,
}

/// The longest health message the kubelet keeps, in characters.
pub const MAX_HEALTH_MESSAGE_LEN: usize = 1024;

impl DeviceHealth {
    /// A report for `pool_name`/`device_name`, checked now.
    pub fn new(
        pool_name: impl Into<String>,
        device_name: impl Into<String>,
        status: HealthStatus,
    ) -> Self {
        Self {
            pool_name: pool_name.into(),
            device_name: device_name.into(),
            status,
            last_updated: SystemTime::now(),
            health_check_timeout: None,
            message: String::new(),
        }
    }

    /// The wire fields shared by both versions.
    fn wire(&self) -> WireHealth {
        WireHealth {
            pool_name: self.pool_name.clone(),
            device_name: self.device_name.clone(),
            health: match self.status {
                HealthStatus::Unknown => 0,
                HealthStatus::Healthy => 1,
                HealthStatus::Unhealthy => 2,
            },
            last_updated_time: unix_seconds(self.last_updated),
            health_check_timeout_seconds: self
                .health_check_timeout
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
            message: wire_message(&self.message),
        }
    }
}

/// One device's health in the fields both wire versions share (the enum as its number,
/// which is the same in both: UNKNOWN 0, HEALTHY 1, UNHEALTHY 2).
struct WireHealth {
    pool_name: String,
    device_name: String,
    health: i32,
    last_updated_time: i64,
    health_check_timeout_seconds: i64,
    message: String,
}

/// `message` cut to [`MAX_HEALTH_MESSAGE_LEN`] characters as the kubelet cuts it: the first
/// 1021 characters and `...`.
fn wire_message(message: &str) -> String {
    if message.chars().count() <= MAX_HEALTH_MESSAGE_LEN {
        return message.to_owned();
    }
    let mut cut: String = message.chars().take(MAX_HEALTH_MESSAGE_LEN - 3).collect();
    cut.push_str("...");
    cut
}

/// Builds one version's response message from the shared fields.
macro_rules! response {
    ($pb:ident, $devices:expr) => {
        $pb::NodeWatchResourcesResponse {
            devices: $devices
                .iter()
                .map(DeviceHealth::wire)
                .map(|w| $pb::DeviceHealth {
                    device: Some($pb::DeviceIdentifier {
                        pool_name: w.pool_name,
                        device_name: w.device_name,
                    }),
                    health: w.health,
                    last_updated_time: w.last_updated_time,
                    health_check_timeout_seconds: w.health_check_timeout_seconds,
                    message: w.message,
                })
                .collect(),
        }
    };
}

fn unix_seconds(time: SystemTime) -> i64 {
    match time.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(since) => i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        // A clock before 1970 is a broken clock; report the epoch rather than fail.
        Err(_) => 0,
    }
}

/// The driver's handle for reporting device health. Cheap to clone; give one to
/// [`crate::PluginBuilder::health`] to serve the health stream.
#[derive(Clone, Debug)]
pub struct HealthReporter {
    snapshot: watch::Sender<Vec<DeviceHealth>>,
}

impl Default for HealthReporter {
    fn default() -> Self {
        Self::new()
    }
}

impl HealthReporter {
    /// A reporter with an empty snapshot.
    pub fn new() -> Self {
        Self {
            snapshot: watch::Sender::new(Vec::new()),
        }
    }

    /// Replaces the snapshot with `devices` (all of the driver's devices) and sends it to
    /// every connected kubelet stream. Reporting an unchanged snapshot sends nothing.
    pub fn report(&self, devices: Vec<DeviceHealth>) {
        self.snapshot.send_if_modified(|current| {
            if *current == devices {
                return false;
            }
            *current = devices;
            true
        });
    }

    /// The last reported snapshot.
    pub fn current(&self) -> Vec<DeviceHealth> {
        self.snapshot.borrow().clone()
    }

    fn subscribe(&self) -> watch::Receiver<Vec<DeviceHealth>> {
        self.snapshot.subscribe()
    }
}

/// What both versions of the health service stream: the reporter's snapshots, ended at
/// shutdown.
#[derive(Clone)]
pub(crate) struct HealthService {
    pub reporter: HealthReporter,
    /// Ends every stream when the plugin shuts down, so graceful shutdown does not wait for
    /// streams that would never end by themselves.
    pub shutdown: CancellationToken,
}

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, tonic::Status>> + Send>>;

impl HealthService {
    /// The current snapshot, then every new one, each converted by `convert`.
    fn stream<T: Send + 'static>(&self, convert: fn(&[DeviceHealth]) -> T) -> ResponseStream<T> {
        // WatchStream yields the current value first, then every change.
        let snapshots =
            WatchStream::new(self.reporter.subscribe()).map(move |devices| Ok(convert(&devices)));
        Box::pin(snapshots.take_until(self.shutdown.clone().cancelled_owned()))
    }

    /// `v1.DRAResourceHealth`.
    pub fn v1(&self) -> health_v1::dra_resource_health_server::DraResourceHealthServer<HealthV1> {
        health_v1::dra_resource_health_server::DraResourceHealthServer::new(HealthV1(self.clone()))
    }

    /// `v1alpha1.DRAResourceHealth`.
    pub fn v1alpha1(
        &self,
    ) -> health_v1alpha1::dra_resource_health_server::DraResourceHealthServer<HealthV1alpha1> {
        health_v1alpha1::dra_resource_health_server::DraResourceHealthServer::new(HealthV1alpha1(
            self.clone(),
        ))
    }
}

/// `v1.DRAResourceHealth` over a [`HealthService`].
pub(crate) struct HealthV1(HealthService);

/// `v1alpha1.DRAResourceHealth` over a [`HealthService`].
pub(crate) struct HealthV1alpha1(HealthService);

fn v1_response(devices: &[DeviceHealth]) -> health_v1::NodeWatchResourcesResponse {
    response!(health_v1, devices)
}

fn v1alpha1_response(devices: &[DeviceHealth]) -> health_v1alpha1::NodeWatchResourcesResponse {
    response!(health_v1alpha1, devices)
}

#[tonic::async_trait]
impl health_v1::dra_resource_health_server::DraResourceHealth for HealthV1 {
    type NodeWatchResourcesStream = ResponseStream<health_v1::NodeWatchResourcesResponse>;

    async fn node_watch_resources(
        &self,
        _request: tonic::Request<health_v1::NodeWatchResourcesRequest>,
    ) -> Result<tonic::Response<Self::NodeWatchResourcesStream>, tonic::Status> {
        Ok(tonic::Response::new(self.0.stream(v1_response)))
    }
}

#[tonic::async_trait]
impl health_v1alpha1::dra_resource_health_server::DraResourceHealth for HealthV1alpha1 {
    type NodeWatchResourcesStream = ResponseStream<health_v1alpha1::NodeWatchResourcesResponse>;

    async fn node_watch_resources(
        &self,
        _request: tonic::Request<health_v1alpha1::NodeWatchResourcesRequest>,
    ) -> Result<tonic::Response<Self::NodeWatchResourcesStream>, tonic::Status> {
        Ok(tonic::Response::new(self.0.stream(v1alpha1_response)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_are_cut_as_the_kubelet_cuts_them() {
        assert_eq!(wire_message("carrier lost"), "carrier lost");
        let exact = "é".repeat(MAX_HEALTH_MESSAGE_LEN);
        assert_eq!(wire_message(&exact), exact);
        let cut = wire_message(&"é".repeat(MAX_HEALTH_MESSAGE_LEN + 1));
        assert_eq!(cut.chars().count(), MAX_HEALTH_MESSAGE_LEN);
        assert!(cut.ends_with("é..."), "{cut}");
    }

    #[test]
    fn both_versions_carry_the_same_fields() {
        let mut device = DeviceHealth::new("pool", "dev", HealthStatus::Unhealthy);
        device.health_check_timeout = Some(Duration::from_secs(90));
        device.message = "carrier lost".into();
        device.last_updated = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let v1 = v1_response(std::slice::from_ref(&device));
        let alpha = v1alpha1_response(std::slice::from_ref(&device));
        let (v1, alpha) = (&v1.devices[0], &alpha.devices[0]);
        assert_eq!(v1.health, health_v1::HealthStatus::Unhealthy as i32);
        assert_eq!(
            alpha.health,
            health_v1alpha1::HealthStatus::Unhealthy as i32
        );
        for (pool, name, updated, timeout, message) in [
            (
                &v1.device.as_ref().unwrap().pool_name,
                &v1.device.as_ref().unwrap().device_name,
                v1.last_updated_time,
                v1.health_check_timeout_seconds,
                &v1.message,
            ),
            (
                &alpha.device.as_ref().unwrap().pool_name,
                &alpha.device.as_ref().unwrap().device_name,
                alpha.last_updated_time,
                alpha.health_check_timeout_seconds,
                &alpha.message,
            ),
        ] {
            assert_eq!((pool.as_str(), name.as_str()), ("pool", "dev"));
            assert_eq!((updated, timeout), (1_700_000_000, 90));
            assert_eq!(message, "carrier lost");
        }
    }
}
