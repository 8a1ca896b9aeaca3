//! Device health from link state: what the kubelet hears on the health stream, and the
//! taint a published device carries while its link is lost.
//!
//! Discovery reports the link behind every published device on each pass
//! ([`LinkStates`]); [`HealthMonitor`] turns that into
//! - a [`DeviceHealth`] per device for the kubelet's `DRAResourceHealth` stream, sent on
//!   every change and re-sent every [`HealthConfig::refresh`] (the kubelet turns a device
//!   whose report is older than its `health_check_timeout_seconds` into `Unknown`, so a
//!   daemon that stops watching decays to `Unknown` by itself);
//! - the device list to publish: discovery's devices with the [`UNHEALTHY_TAINT_KEY`] taint
//!   on the unhealthy ones (when [`HealthConfig::taint_effect`] is set), and devices that
//!   left the host kept published, tainted, for [`GONE_DEVICE_GRACE`], so that pods
//!   holding a claim on a vanished NIC see a `NoExecute` taint and a NIC that comes back
//!   does not make two slice writes.
//!
//! | link (host view) | health | taint value |
//! |---|---|---|
//! | administratively up, carrier, `up` or `unknown` | Healthy | — |
//! | administratively up, no carrier | Unhealthy | `carrier-lost` |
//! | administratively up, `down`, `lowerlayerdown` or `notpresent` | Unhealthy | `down` |
//! | administratively up, `dormant` or `testing` | Unknown | — |
//! | administratively down | Unknown (the kernel reports no link state) | — |
//! | moved into a pod by netclaim | Unknown (its link is in the pod's netns) | — |
//! | gone from the host | Unhealthy | `gone` |
//!
//! An administratively down NIC is not unhealthy: free NICs often sit down until netclaim
//! moves one into a pod and brings it up there. Tainting them would hide every free NIC.
//!
//! # Rate limit
//! Each slice write re-runs the scheduling of every pending pod that uses DRA, so a
//! flapping link must not write the slice on every flap. A device's taint changes (appears,
//! changes its value, or goes) at most once per [`HealthConfig::min_taint_interval`]
//! (default 10 s): the first change after a quiet period is immediate, a later one waits
//! until the interval since the previous change has passed, and then applies whatever the
//! link says at that moment. A link that flaps faster than the interval therefore keeps
//! its taint and costs one write per interval at most; the health stream still reports
//! every change at once. The attributes carry no link state (see
//! `discovery::attributes`), so a flap changes nothing else in the slice.
//!
//! A NIC that was just brought up (administratively, back from a pod, or plugged in again)
//! is not tainted for a missing link during [`LINK_SETTLE`]: the kernel updates the
//! operational state up to a second after the carrier, and physical links negotiate for
//! a few seconds; without this, every NIC brought up would be tainted for the whole
//! interval. A link still missing when the settle time ends is tainted then.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::resource::v1::{Device, DeviceTaint};
use kubeletplugin::{DeviceHealth, HealthReporter, HealthStatus};
use netclaim_api::attributes::UNHEALTHY_TAINT_KEY;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::discovery::{DeviceLink, LinkState, LinkStates, same_devices};

/// How long a device that left the host stays published (tainted `gone`) and reported
/// `Unhealthy` before it is dropped.
pub const GONE_DEVICE_GRACE: Duration = Duration::from_secs(300);
/// How long after a NIC is brought up (administratively, or back from a pod, or plugged in
/// again) a missing link does not taint it yet: the kernel reports the operational state
/// up to a second after the carrier (linkwatch), and a physical link negotiates for a few
/// seconds. Its health is reported as it is meanwhile.
pub const LINK_SETTLE: Duration = Duration::from_secs(5);
/// Default of [`HealthConfig::min_taint_interval`].
pub const DEFAULT_MIN_TAINT_INTERVAL: Duration = Duration::from_secs(10);
/// Default of [`HealthConfig::refresh`].
pub const DEFAULT_HEALTH_REFRESH: Duration = Duration::from_secs(30);

/// The effect of the [`UNHEALTHY_TAINT_KEY`] taint (`--unhealthy-taint-effect`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TaintEffect {
    /// No taint at all: health reaches only the kubelet.
    #[value(name = "off")]
    Off,
    /// `None`: the taint is shown but affects nothing (Kubernetes 1.35+; a 1.34 API server
    /// with `DRADeviceTaints` on refuses it).
    #[value(name = "None")]
    None,
    /// `NoSchedule`: the scheduler allocates the device only to claims that tolerate it.
    #[value(name = "NoSchedule")]
    NoSchedule,
    /// `NoExecute`: like `NoSchedule`, and pods whose claims hold the device are evicted.
    #[value(name = "NoExecute")]
    NoExecute,
}

impl TaintEffect {
    /// The API's name of the effect; `None` for [`TaintEffect::Off`].
    pub fn api_name(self) -> Option<&'static str> {
        match self {
            TaintEffect::Off => None,
            TaintEffect::None => Some("None"),
            TaintEffect::NoSchedule => Some("NoSchedule"),
            TaintEffect::NoExecute => Some("NoExecute"),
        }
    }
}

/// How health is derived and reported.
#[derive(Clone, Debug)]
pub struct HealthConfig {
    /// The pool the devices are published in (the node name).
    pub pool_name: String,
    /// The effect of the taint on unhealthy devices.
    pub taint_effect: TaintEffect,
    /// The least time between two taint changes of one device.
    pub min_taint_interval: Duration,
    /// How often the health of every device is reported again.
    pub refresh: Duration,
}

impl HealthConfig {
    /// The defaults for pool `pool_name`: `NoSchedule`, 10 s, 30 s.
    pub fn new(pool_name: impl Into<String>) -> Self {
        Self {
            pool_name: pool_name.into(),
            taint_effect: TaintEffect::NoSchedule,
            min_taint_interval: DEFAULT_MIN_TAINT_INTERVAL,
            refresh: DEFAULT_HEALTH_REFRESH,
        }
    }

    /// The `health_check_timeout_seconds` sent with every report: three refreshes, so one
    /// late or lost report does not turn a device `Unknown`.
    pub fn health_check_timeout(&self) -> Duration {
        self.refresh.saturating_mul(3)
    }
}

/// Why a device is unhealthy: the taint's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Problem {
    /// Administratively up without carrier.
    CarrierLost,
    /// Administratively up, operationally down.
    Down,
    /// The interface left the host.
    Gone,
}

impl Problem {
    /// The taint value.
    pub fn taint_value(self) -> &'static str {
        match self {
            Problem::CarrierLost => "carrier-lost",
            Problem::Down => "down",
            Problem::Gone => "gone",
        }
    }
}

/// A device's health as derived from its link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// The health.
    pub status: HealthStatus,
    /// Set exactly when unhealthy.
    pub problem: Option<Problem>,
    /// What the kubelet shows.
    pub message: String,
}

/// The health of a device whose link looks like `link`; `None`: it left the host (its last
/// interface name was `last_if_name`).
pub fn verdict(link: Option<&DeviceLink>, last_if_name: &str) -> Verdict {
    let unhealthy = |problem, message: String| Verdict {
        status: HealthStatus::Unhealthy,
        problem: Some(problem),
        message,
    };
    let unknown = |message: String| Verdict {
        status: HealthStatus::Unknown,
        problem: None,
        message,
    };
    match link {
        None => unhealthy(
            Problem::Gone,
            format!("interface {last_if_name} is gone from the node (removed or unplugged)"),
        ),
        Some(DeviceLink::InPod) => unknown(
            "in use by a pod: its link is in the pod's network namespace, which netclaim \
             does not watch"
                .to_owned(),
        ),
        Some(DeviceLink::Host(link)) => host_verdict(link),
    }
}

fn host_verdict(link: &LinkState) -> Verdict {
    let name = &link.if_name;
    if !link.admin_up {
        return Verdict {
            status: HealthStatus::Unknown,
            problem: None,
            message: format!(
                "interface {name} is administratively down: the kernel reports its link state \
                 only while it is up"
            ),
        };
    }
    if link.carrier == Some(false) {
        return Verdict {
            status: HealthStatus::Unhealthy,
            problem: Some(Problem::CarrierLost),
            message: format!("interface {name} has no carrier (link lost)"),
        };
    }
    match link.oper_state.as_str() {
        "up" | "unknown" => Verdict {
            status: HealthStatus::Healthy,
            problem: None,
            message: format!("interface {name} is up"),
        },
        "down" | "lowerlayerdown" | "notpresent" => Verdict {
            status: HealthStatus::Unhealthy,
            problem: Some(Problem::Down),
            message: format!(
                "interface {name} is operationally {} while administratively up",
                link.oper_state
            ),
        },
        other => Verdict {
            status: HealthStatus::Unknown,
            problem: None,
            message: format!("interface {name} is operationally {other}"),
        },
    }
}

/// The taint netclaim puts on a device with `problem`.
pub fn unhealthy_taint(problem: Problem, effect: &str) -> DeviceTaint {
    DeviceTaint {
        key: UNHEALTHY_TAINT_KEY.to_owned(),
        value: Some(problem.taint_value().to_owned()),
        effect: effect.to_owned(),
        time_added: None,
    }
}

/// `devices` with the taint of their current health, without any rate limit (what
/// `netclaim devices` prints: the node as it is now). Untainted devices are shared.
pub fn taint_now(
    devices: &[Arc<Device>],
    links: &LinkStates,
    effect: TaintEffect,
) -> Vec<Arc<Device>> {
    let Some(effect) = effect.api_name() else {
        return devices.to_vec();
    };
    devices
        .iter()
        .map(|device| {
            let if_name = if_name_of(device);
            let problem = links
                .get(&device.name)
                .and_then(|link| verdict(Some(link), &if_name).problem);
            match problem {
                Some(problem) => {
                    Arc::new(with_taint(device, Some(unhealthy_taint(problem, effect))))
                }
                None => device.clone(),
            }
        })
        .collect()
}

fn if_name_of(device: &Device) -> String {
    device
        .attributes
        .as_ref()
        .and_then(|a| a.get(netclaim_api::attributes::IF_NAME))
        .and_then(|a| a.string.clone())
        .unwrap_or_else(|| device.name.clone())
}

/// `device` with netclaim's taint replaced by `taint` (other taints kept).
fn with_taint(device: &Device, taint: Option<DeviceTaint>) -> Device {
    let mut device = device.clone();
    let mut taints: Vec<DeviceTaint> = device
        .taints
        .take()
        .unwrap_or_default()
        .into_iter()
        .filter(|t| t.key != UNHEALTHY_TAINT_KEY)
        .collect();
    taints.extend(taint);
    device.taints = (!taints.is_empty()).then_some(taints);
    device
}

/// What the monitor knows about one device.
#[derive(Clone, Debug)]
struct Tracked {
    /// The device as discovery last published it: discovery's allocation, shared (after
    /// the device left the host, the monitor's is the last reference, for the grace).
    device: Arc<Device>,
    /// The device last published in its place when that is not `device` itself (it
    /// carries the monitor's taint): the monitor's own copy, reused while `device` and
    /// the taint stay the same.
    derived: Option<Derived>,
    /// Its last interface name on the host.
    if_name: String,
    verdict: Verdict,
    /// When it left the host; `None` while discovery publishes it.
    gone_since: Option<Instant>,
    /// The problem its published taint names; `None`: untainted.
    tainted: Option<Problem>,
    /// When its taint last changed.
    taint_changed: Option<Instant>,
    /// Whether its interface was on the host and administratively up at the last
    /// observation that knew its link; `None`: no link state known yet.
    host_up: Option<bool>,
    /// When it was last seen coming up (see [`LINK_SETTLE`]); `None`: it was up when the
    /// monitor first saw it.
    came_up: Option<Instant>,
}

/// A published device that differs from discovery's by the monitor's taint.
#[derive(Clone, Debug)]
struct Derived {
    /// The device it was made from.
    from: Arc<Device>,
    /// The taint it carries.
    taint: Option<Problem>,
    /// The device as published.
    device: Arc<Device>,
}

impl Tracked {
    /// The device to publish: discovery's with netclaim's taint for `self.tainted` (and
    /// no other netclaim taint), shared when that is discovery's device itself, and the
    /// same allocation as last time when neither the device nor the taint changed.
    fn publishable(&mut self, effect: &str) -> Arc<Device> {
        let unchanged = self.tainted.is_none()
            && self.device.taints.as_ref().is_none_or(|taints| {
                !taints.is_empty() && taints.iter().all(|t| t.key != UNHEALTHY_TAINT_KEY)
            });
        if unchanged {
            self.derived = None;
            return self.device.clone();
        }
        if let Some(derived) = &self.derived
            && Arc::ptr_eq(&derived.from, &self.device)
            && derived.taint == self.tainted
        {
            return derived.device.clone();
        }
        let taint = self.tainted.map(|problem| unhealthy_taint(problem, effect));
        let device = Arc::new(with_taint(&self.device, taint));
        self.derived = Some(Derived {
            from: self.device.clone(),
            taint: self.tainted,
            device: device.clone(),
        });
        device
    }
}

/// What [`HealthMonitor::observe`] decided.
#[derive(Clone, Debug, PartialEq)]
pub struct Observation {
    /// The devices to publish, sorted by name: discovery's (shared) where the monitor
    /// changed nothing.
    pub devices: Vec<Arc<Device>>,
    /// The health of every device, sorted by name.
    pub health: Vec<DeviceHealth>,
    /// When to observe again even if discovery reports nothing new: a held-back taint
    /// change or a gone device's grace ends then. `None`: nothing pending.
    pub wake_at: Option<Instant>,
}

/// Derives health and taints from discovery's passes (see the [module docs](self)).
#[derive(Debug)]
pub struct HealthMonitor {
    config: HealthConfig,
    tracked: BTreeMap<String, Tracked>,
}

impl HealthMonitor {
    /// A monitor that has seen nothing yet.
    pub fn new(config: HealthConfig) -> Self {
        Self {
            config,
            tracked: BTreeMap::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &HealthConfig {
        &self.config
    }

    /// Takes in discovery's latest `devices` and `links` at `now`; returns what to publish
    /// and report. Call it again at [`Observation::wake_at`].
    pub fn observe(
        &mut self,
        devices: &[Arc<Device>],
        links: &LinkStates,
        now: Instant,
    ) -> Observation {
        let ghosts = self.config.taint_effect != TaintEffect::Off;
        let mut seen = BTreeMap::new();
        for device in devices {
            let previous = self.tracked.remove(&device.name);
            let link = links.get(&device.name);
            let if_name = match link {
                Some(DeviceLink::Host(state)) => state.if_name.clone(),
                _ => previous
                    .as_ref()
                    .map_or_else(|| if_name_of(device), |p| p.if_name.clone()),
            };
            // Discovery sends the devices before the links of a pass: a device without a
            // link yet keeps what was known (it is not gone: it is published).
            let verdict = match (link, &previous) {
                (Some(link), _) => verdict(Some(link), &if_name),
                (None, Some(previous)) if previous.gone_since.is_none() => previous.verdict.clone(),
                (None, _) => Verdict {
                    status: HealthStatus::Unknown,
                    problem: None,
                    message: format!("no link state of interface {if_name} yet"),
                },
            };
            if previous
                .as_ref()
                .is_some_and(|p| p.verdict.status != verdict.status)
            {
                crate::metrics::metrics().health_changes.inc();
            }
            let host_up = match link {
                Some(link) => Some(matches!(link, DeviceLink::Host(state) if state.admin_up)),
                None => previous.as_ref().and_then(|p| p.host_up),
            };
            let came_up = match &previous {
                Some(p)
                    if host_up == Some(true)
                        && (p.host_up == Some(false) || p.gone_since.is_some()) =>
                {
                    Some(now)
                }
                Some(p) => p.came_up,
                None => None,
            };
            let (tainted, taint_changed, derived) = previous
                .map(|p| (p.tainted, p.taint_changed, p.derived))
                .unwrap_or_default();
            seen.insert(
                device.name.clone(),
                Tracked {
                    device: device.clone(),
                    derived,
                    if_name,
                    verdict,
                    gone_since: None,
                    tainted,
                    taint_changed,
                    host_up,
                    came_up,
                },
            );
        }
        // Devices discovery no longer publishes: gone from the host.
        for (name, mut tracked) in std::mem::take(&mut self.tracked) {
            let since = *tracked.gone_since.get_or_insert(now);
            if now.duration_since(since) >= GONE_DEVICE_GRACE {
                tracing::info!(device = %name, interface = %tracked.if_name, "gone device no longer reported");
                continue;
            }
            if tracked.verdict.problem != Some(Problem::Gone) {
                tracing::warn!(device = %name, interface = %tracked.if_name, "device left the node");
                if tracked.verdict.status != HealthStatus::Unhealthy {
                    crate::metrics::metrics().health_changes.inc();
                }
            }
            tracked.verdict = verdict(None, &tracked.if_name);
            tracked.host_up = Some(false);
            seen.insert(name, tracked);
        }
        self.tracked = seen;

        let mut wake_at: Option<Instant> = None;
        let mut wake = |at: Instant| wake_at = Some(wake_at.map_or(at, |w| w.min(at)));
        let mut published = Vec::new();
        let mut health = Vec::new();
        let effect = self.config.taint_effect.api_name();
        for (name, tracked) in &mut self.tracked {
            if let Some(since) = tracked.gone_since {
                wake(since + GONE_DEVICE_GRACE);
            }
            if let Some(effect) = effect {
                let mut wanted = tracked.verdict.problem;
                let settling = tracked
                    .came_up
                    .map(|at| at + LINK_SETTLE)
                    .filter(|end| *end > now);
                if let (Some(end), None, Some(Problem::CarrierLost | Problem::Down)) =
                    (settling, tracked.tainted, wanted)
                {
                    // Just brought up: the link may still be on its way.
                    wanted = None;
                    wake(end);
                }
                if wanted != tracked.tainted {
                    let allowed_at = tracked
                        .taint_changed
                        .map_or(now, |changed| changed + self.config.min_taint_interval);
                    if allowed_at <= now {
                        log_taint_change(name, tracked.tainted, wanted);
                        tracked.tainted = wanted;
                        tracked.taint_changed = Some(now);
                    } else {
                        wake(allowed_at);
                    }
                }
                if tracked.gone_since.is_none() || ghosts {
                    published.push(tracked.publishable(effect));
                }
            } else if tracked.gone_since.is_none() {
                published.push(tracked.device.clone());
            }
            let mut report = DeviceHealth::new(
                self.config.pool_name.clone(),
                name.clone(),
                tracked.verdict.status,
            );
            report.last_updated = SystemTime::now();
            report.health_check_timeout = Some(self.config.health_check_timeout());
            report.message = tracked.verdict.message.clone();
            health.push(report);
        }
        Observation {
            devices: published,
            health,
            wake_at,
        }
    }
}

fn log_taint_change(device: &str, from: Option<Problem>, to: Option<Problem>) {
    crate::metrics::metrics().taint_changes.inc();
    match to {
        Some(problem) => tracing::warn!(
            device,
            taint = %format!("{UNHEALTHY_TAINT_KEY}={}", problem.taint_value()),
            "tainting the device"
        ),
        None => tracing::info!(
            device,
            was = from.map_or("", Problem::taint_value),
            "device recovered: removing its taint"
        ),
    }
}

/// Runs `monitor` on discovery's output until `shutdown`: reports health to `reporter`
/// (on every change, and every `refresh`) and sends the devices to publish on the returned
/// channel (only when they change).
pub fn spawn(
    mut monitor: HealthMonitor,
    mut devices: watch::Receiver<Vec<Arc<Device>>>,
    mut links: watch::Receiver<LinkStates>,
    reporter: HealthReporter,
    shutdown: CancellationToken,
) -> watch::Receiver<Vec<Arc<Device>>> {
    let first = monitor.observe(
        &devices.borrow_and_update(),
        &links.borrow_and_update(),
        Instant::now(),
    );
    reporter.report(first.health);
    let (publish, published) = watch::channel(first.devices);
    let mut wake_at = first.wake_at;
    tokio::spawn(async move {
        let refresh = monitor.config().refresh;
        let mut next_refresh = Instant::now() + refresh;
        let mut statuses = status_of(&reporter.current());
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                changed = devices.changed() => if changed.is_err() { return },
                changed = links.changed() => if changed.is_err() { return },
                () = sleep_until_opt(wake_at) => {}
                () = tokio::time::sleep_until(next_refresh) => {}
            }
            let now = Instant::now();
            let seen = monitor.observe(
                &devices.borrow_and_update(),
                &links.borrow_and_update(),
                now,
            );
            wake_at = seen.wake_at;
            // Report what changed at once, and everything every `refresh`.
            let current = status_of(&seen.health);
            if current != statuses || now >= next_refresh {
                reporter.report(seen.health);
                statuses = current;
                next_refresh = now + refresh;
            }
            publish.send_if_modified(|devices| {
                if same_devices(devices, &seen.devices) {
                    return false;
                }
                *devices = seen.devices;
                true
            });
        }
    });
    published
}

/// The part of a report that is news: which devices, their status and message.
fn status_of(health: &[DeviceHealth]) -> Vec<(String, HealthStatus, String)> {
    health
        .iter()
        .map(|h| (h.device_name.clone(), h.status, h.message.clone()))
        .collect()
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(name: &str) -> Arc<Device> {
        Arc::new(Device {
            name: name.to_owned(),
            ..Device::default()
        })
    }

    fn host(if_name: &str, admin_up: bool, oper_state: &str, carrier: Option<bool>) -> DeviceLink {
        DeviceLink::Host(LinkState {
            if_name: if_name.to_owned(),
            admin_up,
            oper_state: oper_state.to_owned(),
            carrier,
        })
    }

    fn up() -> DeviceLink {
        host("eth1", true, "up", Some(true))
    }

    fn no_carrier() -> DeviceLink {
        host("eth1", true, "down", Some(false))
    }

    fn links(link: Option<DeviceLink>) -> LinkStates {
        link.into_iter().map(|l| ("eth1".to_owned(), l)).collect()
    }

    fn taint_of(observation: &Observation) -> Option<String> {
        let device = observation.devices.iter().find(|d| d.name == "eth1")?;
        let taint = device.taints.as_ref()?.first()?;
        assert_eq!(taint.key, UNHEALTHY_TAINT_KEY);
        Some(format!("{}:{}", taint.value.clone()?, taint.effect))
    }

    fn status_of_eth1(observation: &Observation) -> HealthStatus {
        observation
            .health
            .iter()
            .find(|h| h.device_name == "eth1")
            .map(|h| h.status)
            .unwrap()
    }

    #[test]
    fn verdicts_follow_the_link() {
        let cases = [
            (up(), HealthStatus::Healthy, None),
            (
                host("eth1", true, "unknown", None),
                HealthStatus::Healthy,
                None,
            ),
            (
                no_carrier(),
                HealthStatus::Unhealthy,
                Some(Problem::CarrierLost),
            ),
            (
                host("eth1", true, "lowerlayerdown", None),
                HealthStatus::Unhealthy,
                Some(Problem::Down),
            ),
            (
                host("eth1", false, "down", Some(false)),
                HealthStatus::Unknown,
                None,
            ),
            (
                host("eth1", true, "dormant", Some(true)),
                HealthStatus::Unknown,
                None,
            ),
            (DeviceLink::InPod, HealthStatus::Unknown, None),
        ];
        for (link, status, problem) in cases {
            let v = verdict(Some(&link), "eth1");
            assert_eq!((v.status, v.problem), (status, problem), "{link:?}");
            assert!(!v.message.is_empty());
        }
        let gone = verdict(None, "eth1");
        assert_eq!(gone.problem, Some(Problem::Gone));
        assert!(gone.message.contains("eth1 is gone"), "{}", gone.message);
    }

    #[test]
    fn a_flapping_link_changes_the_taint_at_most_once_per_interval() {
        let mut monitor = HealthMonitor::new(HealthConfig::new("node"));
        let devices = [device("eth1")];
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let first = monitor.observe(&devices, &links(Some(up())), at(0));
        assert_eq!(taint_of(&first), None);
        assert_eq!(first.wake_at, None);

        // Link lost: tainted at once, reported unhealthy at once.
        let lost = monitor.observe(&devices, &links(Some(no_carrier())), at(1));
        assert_eq!(taint_of(&lost).as_deref(), Some("carrier-lost:NoSchedule"));
        assert_eq!(status_of_eth1(&lost), HealthStatus::Unhealthy);

        // Back 1 s later: healthy at once, but the taint stays until 10 s after it came.
        let back = monitor.observe(&devices, &links(Some(up())), at(2));
        assert_eq!(status_of_eth1(&back), HealthStatus::Healthy);
        assert_eq!(taint_of(&back).as_deref(), Some("carrier-lost:NoSchedule"));
        assert_eq!(back.wake_at, Some(at(11)));

        // Flapping meanwhile changes nothing published.
        for s in 3..11 {
            let link = if s % 2 == 0 { up() } else { no_carrier() };
            let flap = monitor.observe(&devices, &links(Some(link)), at(s));
            assert_eq!(taint_of(&flap).as_deref(), Some("carrier-lost:NoSchedule"));
        }
        // At the end of the interval the link is up: the taint goes, once.
        let cleared = monitor.observe(&devices, &links(Some(up())), at(11));
        assert_eq!(taint_of(&cleared), None);
        assert_eq!(cleared.wake_at, None);

        // Lost again right away: the next change waits for the interval again.
        let again = monitor.observe(&devices, &links(Some(no_carrier())), at(12));
        assert_eq!(taint_of(&again), None);
        assert_eq!(status_of_eth1(&again), HealthStatus::Unhealthy);
        assert_eq!(again.wake_at, Some(at(21)));
        let later = monitor.observe(&devices, &links(Some(no_carrier())), at(21));
        assert_eq!(taint_of(&later).as_deref(), Some("carrier-lost:NoSchedule"));
    }

    #[test]
    fn a_link_just_brought_up_is_not_tainted_while_it_settles() {
        let mut monitor = HealthMonitor::new(HealthConfig::new("node"));
        let devices = [device("eth1")];
        let t0 = Instant::now();
        let admin_down = links(Some(host("eth1", false, "down", Some(false))));
        monitor.observe(&devices, &admin_down, t0);
        // Brought up, no carrier yet: reported as it is, not tainted.
        let coming = monitor.observe(&devices, &links(Some(no_carrier())), t0);
        assert_eq!(status_of_eth1(&coming), HealthStatus::Unhealthy);
        assert_eq!(taint_of(&coming), None);
        assert_eq!(coming.wake_at, Some(t0 + LINK_SETTLE));
        // Link up within the settle time: never tainted.
        let up_in_time = monitor.observe(&devices, &links(Some(up())), t0 + Duration::from_secs(1));
        assert_eq!(taint_of(&up_in_time), None);
        assert_eq!(up_in_time.wake_at, None);

        // Down, up again, and the link never comes: tainted when the settle time ends.
        monitor.observe(&devices, &admin_down, t0 + Duration::from_secs(2));
        let t1 = t0 + Duration::from_secs(3);
        let waiting = monitor.observe(&devices, &links(Some(no_carrier())), t1);
        assert_eq!(taint_of(&waiting), None);
        assert_eq!(waiting.wake_at, Some(t1 + LINK_SETTLE));
        let settled = monitor.observe(&devices, &links(Some(no_carrier())), t1 + LINK_SETTLE);
        assert_eq!(
            taint_of(&settled).as_deref(),
            Some("carrier-lost:NoSchedule")
        );
    }

    #[test]
    fn a_gone_device_stays_published_tainted_for_the_grace_period() {
        let mut config = HealthConfig::new("node");
        config.taint_effect = TaintEffect::NoExecute;
        let mut monitor = HealthMonitor::new(config);
        let t0 = Instant::now();
        monitor.observe(&[device("eth1")], &links(Some(up())), t0);

        let gone = monitor.observe(&[], &links(None), t0 + Duration::from_secs(1));
        assert_eq!(taint_of(&gone).as_deref(), Some("gone:NoExecute"));
        assert_eq!(status_of_eth1(&gone), HealthStatus::Unhealthy);
        let end = t0 + Duration::from_secs(1) + GONE_DEVICE_GRACE;
        assert_eq!(gone.wake_at, Some(end));

        let still = monitor.observe(&[], &links(None), end - Duration::from_secs(1));
        assert_eq!(taint_of(&still).as_deref(), Some("gone:NoExecute"));
        let dropped = monitor.observe(&[], &links(None), end);
        assert!(dropped.devices.is_empty());
        assert!(dropped.health.is_empty());
        assert_eq!(dropped.wake_at, None);
    }

    #[test]
    fn a_device_that_comes_back_keeps_its_place_and_loses_the_taint_after_the_interval() {
        let mut monitor = HealthMonitor::new(HealthConfig::new("node"));
        let t0 = Instant::now();
        monitor.observe(&[device("eth1")], &links(Some(up())), t0);
        let gone = monitor.observe(&[], &links(None), t0 + Duration::from_secs(1));
        assert_eq!(taint_of(&gone).as_deref(), Some("gone:NoSchedule"));
        let back = monitor.observe(
            &[device("eth1")],
            &links(Some(up())),
            t0 + Duration::from_secs(2),
        );
        assert_eq!(status_of_eth1(&back), HealthStatus::Healthy);
        assert_eq!(taint_of(&back).as_deref(), Some("gone:NoSchedule"));
        let clear = monitor.observe(
            &[device("eth1")],
            &links(Some(up())),
            t0 + Duration::from_secs(11),
        );
        assert_eq!(taint_of(&clear), None);
    }

    #[test]
    fn without_taints_gone_devices_leave_at_once_but_are_reported() {
        let mut config = HealthConfig::new("node");
        config.taint_effect = TaintEffect::Off;
        let mut monitor = HealthMonitor::new(config);
        let t0 = Instant::now();
        let lost = monitor.observe(&[device("eth1")], &links(Some(no_carrier())), t0);
        assert_eq!(taint_of(&lost), None);
        assert_eq!(status_of_eth1(&lost), HealthStatus::Unhealthy);
        let gone = monitor.observe(&[], &links(None), t0 + Duration::from_secs(1));
        assert!(gone.devices.is_empty());
        assert_eq!(status_of_eth1(&gone), HealthStatus::Unhealthy);
    }

    #[test]
    fn a_device_without_link_state_yet_is_not_taken_for_gone() {
        let mut monitor = HealthMonitor::new(HealthConfig::new("node"));
        let t0 = Instant::now();
        let new = monitor.observe(&[device("eth1")], &links(None), t0);
        assert_eq!(taint_of(&new), None);
        assert_eq!(status_of_eth1(&new), HealthStatus::Unknown);
        monitor.observe(&[device("eth1")], &links(Some(no_carrier())), t0);
        let kept = monitor.observe(&[device("eth1")], &links(None), t0);
        assert_eq!(status_of_eth1(&kept), HealthStatus::Unhealthy);
        assert_eq!(taint_of(&kept).as_deref(), Some("carrier-lost:NoSchedule"));
    }

    #[test]
    fn admin_down_and_in_pod_devices_are_not_tainted() {
        let mut monitor = HealthMonitor::new(HealthConfig::new("node"));
        let t0 = Instant::now();
        let down = monitor.observe(
            &[device("eth1")],
            &links(Some(host("eth1", false, "down", None))),
            t0,
        );
        assert_eq!(taint_of(&down), None);
        assert_eq!(status_of_eth1(&down), HealthStatus::Unknown);
        let in_pod = monitor.observe(&[device("eth1")], &links(Some(DeviceLink::InPod)), t0);
        assert_eq!(taint_of(&in_pod), None);
        assert_eq!(status_of_eth1(&in_pod), HealthStatus::Unknown);
    }

    #[test]
    fn taint_now_taints_unhealthy_devices_without_waiting() {
        let tainted = taint_now(
            &[device("eth1")],
            &links(Some(no_carrier())),
            TaintEffect::NoExecute,
        );
        let taint = &tainted[0].taints.as_ref().unwrap()[0];
        assert_eq!(
            (taint.value.as_deref(), taint.effect.as_str()),
            (Some("carrier-lost"), "NoExecute")
        );
        let untouched = taint_now(
            &[device("eth1")],
            &links(Some(up())),
            TaintEffect::NoExecute,
        );
        assert_eq!(untouched[0].taints, None);
        let off = taint_now(
            &[device("eth1")],
            &links(Some(no_carrier())),
            TaintEffect::Off,
        );
        assert_eq!(off[0].taints, None);
    }

    #[test]
    fn published_devices_are_shared_and_tainted_ones_made_once() {
        let mut monitor = HealthMonitor::new(HealthConfig::new("node"));
        let t0 = Instant::now();
        let devices = [device("eth1")];
        // Untainted: discovery's own allocation is published, no copy.
        let healthy = monitor.observe(&devices, &links(Some(up())), t0);
        assert!(Arc::ptr_eq(&healthy.devices[0], &devices[0]));
        // Tainted: the monitor's copy, the same one while nothing changes.
        let lost = monitor.observe(&devices, &links(Some(no_carrier())), t0);
        assert_eq!(taint_of(&lost).as_deref(), Some("carrier-lost:NoSchedule"));
        assert!(!Arc::ptr_eq(&lost.devices[0], &devices[0]));
        let still = monitor.observe(&devices, &links(Some(no_carrier())), t0);
        assert!(Arc::ptr_eq(&lost.devices[0], &still.devices[0]));
        // Discovery's device changed: a new copy, tainted as before.
        let changed = [Arc::new(Device {
            binds_to_node: Some(true),
            ..Device::clone(&devices[0])
        })];
        let again = monitor.observe(&changed, &links(Some(no_carrier())), t0);
        assert!(!Arc::ptr_eq(&again.devices[0], &still.devices[0]));
        assert_eq!(again.devices[0].binds_to_node, Some(true));
        assert_eq!(taint_of(&again).as_deref(), Some("carrier-lost:NoSchedule"));
        // A held device that carries netclaim's taint from an earlier publication loses it
        // once the link is healthy again.
        let mut monitor = HealthMonitor::new(HealthConfig::new("node"));
        let mut recorded = Device::clone(&devices[0]);
        recorded.taints = Some(vec![unhealthy_taint(Problem::Down, "NoSchedule")]);
        let healthy = monitor.observe(&[Arc::new(recorded)], &links(Some(up())), t0);
        assert_eq!(taint_of(&healthy), None);
    }

    #[test]
    fn health_reports_carry_pool_timeout_and_message() {
        let mut monitor = HealthMonitor::new(HealthConfig::new("node-a"));
        let seen = monitor.observe(
            &[device("eth1")],
            &links(Some(no_carrier())),
            Instant::now(),
        );
        let report = &seen.health[0];
        assert_eq!(report.pool_name, "node-a");
        assert_eq!(report.health_check_timeout, Some(Duration::from_secs(90)));
        assert!(report.message.contains("no carrier"), "{}", report.message);
    }
}
