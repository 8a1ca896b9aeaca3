//! Hot-plug: keeps the published device list current from netlink events.
//!
//! A burst of events (a veth pair, a rename, an address with its routes) is debounced into
//! one rebuild; the list is sent only when it changed. A periodic resync covers events the
//! kernel dropped (a full socket buffer loses multicast messages silently).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, bail};
use futures::StreamExt;
use k8s_openapi::api::resource::v1::Device;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout, timeout_at};
use tokio_util::sync::CancellationToken;

use super::{Discovery, LinkStates, same_devices};

/// A burst longer than this is cut: devices are rebuilt even if events keep coming.
const MAX_BURST: Duration = Duration::from_secs(1);

/// A running watcher.
pub struct WatchHandle {
    /// The published device list; changes only when the list changes. The devices are
    /// the [`super::Inventory`]'s (shared, not copied).
    pub devices: watch::Receiver<Vec<Arc<Device>>>,
    /// The link behind each published device; changes only when a link state changes
    /// (sent after the device list of the same pass, so a reader woken by it sees that
    /// pass's devices too).
    pub links: watch::Receiver<LinkStates>,
    /// The watcher task; ends with an error only if netlink closes the socket.
    pub task: JoinHandle<Result<()>>,
}

impl Discovery {
    /// Builds the device list now, then keeps it current until `shutdown` is cancelled.
    ///
    /// # Errors
    /// The first pass's error is returned (the daemon should not start blind); later pass
    /// errors are logged and retried on the next event or resync.
    pub async fn watch(mut self, shutdown: CancellationToken) -> Result<WatchHandle> {
        let initial = self.report().await?;
        let (links_sender, links) = watch::channel(initial.links);
        let (sender, devices) = watch::channel(initial.devices);
        let task =
            tokio::spawn(async move { self.watch_loop(sender, links_sender, shutdown).await });
        Ok(WatchHandle {
            devices,
            links,
            task,
        })
    }

    async fn watch_loop(
        &mut self,
        sender: watch::Sender<Vec<Arc<Device>>>,
        links_sender: watch::Sender<LinkStates>,
        shutdown: CancellationToken,
    ) -> Result<()> {
        let inventory = self.inventory();
        loop {
            let resync_at = Instant::now() + self.config.resync;
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                event = self.events.next() => {
                    if event.is_none() {
                        bail!("the netlink event socket closed");
                    }
                    self.wait_for_quiet().await?;
                }
                () = inventory.released() => {}
                () = tokio::time::sleep_until(resync_at) => {
                    tracing::debug!("periodic resync");
                    self.forget_sysfs();
                }
            }
            match self.report().await {
                Ok(report) => {
                    let (devices, links) = (report.devices, report.links);
                    let changed = sender.send_if_modified(|current| {
                        if same_devices(current, &devices) {
                            return false;
                        }
                        *current = devices;
                        true
                    });
                    links_sender.send_if_modified(|current| {
                        if *current == links {
                            return false;
                        }
                        *current = links;
                        true
                    });
                    if changed {
                        tracing::info!(devices = sender.borrow().len(), "device set changed");
                    }
                }
                Err(err) => {
                    tracing::warn!("discovery pass failed, retrying on the next event: {err:#}")
                }
            }
        }
    }

    /// Swallows events until none arrived for the debounce window (or [`MAX_BURST`]).
    async fn wait_for_quiet(&mut self) -> Result<()> {
        let burst_end = Instant::now() + MAX_BURST;
        loop {
            let quiet = timeout(self.config.debounce, self.events.next());
            match timeout_at(burst_end, quiet).await {
                Err(_) | Ok(Err(_)) => return Ok(()),
                Ok(Ok(Some(_))) => {}
                Ok(Ok(None)) => bail!("the netlink event socket closed"),
            }
        }
    }
}
