//! Device health, streamed to the kubelet over `v1alpha1.DRAResourceHealth`.
//!
//! The driver keeps a [`HealthReporter`] and reports a full snapshot whenever anything
//! changes; every kubelet stream receives the current snapshot when it connects and then
//! each new one.

use std::pin::Pin;
use std::time::{Duration, SystemTime};

use futures::{Stream, StreamExt};
use tokio::sync::watch;
use tokio_stream::wrappers::WatchStream;
use tokio_util::sync::CancellationToken;

use crate::proto::health as pb;

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
    /// A human-readable explanation, e.g. why the device is unhealthy.
    pub message: String,
}

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

    fn to_proto(&self) -> pb::DeviceHealth {
        let health = match self.status {
            HealthStatus::Unknown => pb::HealthStatus::Unknown,
            HealthStatus::Healthy => pb::HealthStatus::Healthy,
            HealthStatus::Unhealthy => pb::HealthStatus::Unhealthy,
        };
        pb::DeviceHealth {
            device: Some(pb::DeviceIdentifier {
                pool_name: self.pool_name.clone(),
                device_name: self.device_name.clone(),
            }),
            health: health.into(),
            last_updated_time: unix_seconds(self.last_updated),
            health_check_timeout_seconds: self
                .health_check_timeout
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
            message: self.message.clone(),
        }
    }
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

/// The gRPC service behind `v1alpha1.DRAResourceHealth`.
pub(crate) struct HealthService {
    pub reporter: HealthReporter,
    /// Ends every stream when the plugin shuts down, so graceful shutdown does not wait for
    /// streams that would never end by themselves.
    pub shutdown: CancellationToken,
}

type HealthStream =
    Pin<Box<dyn Stream<Item = Result<pb::NodeWatchResourcesResponse, tonic::Status>> + Send>>;

#[tonic::async_trait]
impl pb::dra_resource_health_server::DraResourceHealth for HealthService {
    type NodeWatchResourcesStream = HealthStream;

    async fn node_watch_resources(
        &self,
        _request: tonic::Request<pb::NodeWatchResourcesRequest>,
    ) -> Result<tonic::Response<Self::NodeWatchResourcesStream>, tonic::Status> {
        // WatchStream yields the current value first, then every change.
        let snapshots = WatchStream::new(self.reporter.subscribe()).map(|devices| {
            Ok(pb::NodeWatchResourcesResponse {
                devices: devices.iter().map(DeviceHealth::to_proto).collect(),
            })
        });
        let stream = snapshots.take_until(self.shutdown.clone().cancelled_owned());
        Ok(tonic::Response::new(Box::pin(stream)))
    }
}
