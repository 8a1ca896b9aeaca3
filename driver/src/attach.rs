//! Attaching one host interface to one pod, and giving it back: a transaction with
//! rollback.
//!
//! The interface is identified across namespace moves by its alias (IFLA_IFALIAS), set to
//! the caller's `tag` (e.g. `netclaim/<claim-uid>/<device>`) before it leaves the host: names
//! change (the pod wants `eth1`, the kernel may rename a device that falls back to the
//! initial namespace) and ifindexes are per namespace, but the alias travels with the
//! device. The original alias is kept in the [`LinkSnapshot`] and restored on detach.
//!
//! Both directions derive a small state from where the interface is found and act on it
//! with one `match`, so running them again after a crash or a partial failure finishes
//! the job instead of failing.

use std::fmt;
use std::path::Path;

use futures::future::try_join_all;
use netclaim_api::InterfaceConfig;

use crate::netlink::{Link, LinkChange, NetError, NetHandle, snapshot_of};
use crate::state::LinkSnapshot;

/// What a successful [`attach`] produced: what the claim's `status.devices[].networkData`
/// reports, and the host snapshot to keep for [`detach`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttachOutcome {
    /// The interface as it was on the host before the attach.
    pub host: LinkSnapshot,
    /// The interface name inside the pod.
    pub pod_if_name: String,
    /// The addresses configured inside the pod, in CIDR form.
    pub ips: Vec<String>,
    /// The MAC address inside the pod, if the device has one.
    pub mac: Option<String>,
    /// `true` when the interface was already in the pod and its configuration was applied
    /// again (a repeated or resumed attach).
    pub reapplied: bool,
}

/// Why an attach failed, after rolling back.
#[derive(Debug)]
pub struct AttachError {
    /// The config field at fault (`interface.routes[0]`), when one is.
    pub field: Option<String>,
    /// What failed, in words (`gateway unreachable`, `moving the interface into the pod`).
    pub what: String,
    /// The underlying netlink error, with its namespace and request.
    pub source: NetError,
    /// Set when the rollback failed too: the interface may not be back on the host.
    pub rollback: Option<Box<DetachError>>,
}

impl fmt::Display for AttachError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        write!(f, "{}: {}", self.what, self.source)?;
        match &self.rollback {
            Some(err) => write!(f, "; rollback failed too: {err}"),
            None => Ok(()),
        }
    }
}

impl std::error::Error for AttachError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

impl AttachError {
    fn new(field: Option<String>, what: impl Into<String>, source: NetError) -> Self {
        Self {
            field,
            what: what.into(),
            source,
            rollback: None,
        }
    }
}

/// How [`detach`] found and left the interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DetachAction {
    /// It was in the pod and was moved back and restored.
    MovedBack,
    /// It was already on the host; what differed from the snapshot was restored.
    RestoredOnHost,
    /// It was already on the host exactly as the snapshot says.
    AlreadyRestored,
    /// It is nowhere: a virtual device that died with its pod's namespace.
    Gone,
}

/// What a successful [`detach`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DetachOutcome {
    /// What was done.
    pub action: DetachAction,
    /// The host name the interface has now (the snapshot's), or would have had.
    pub host_if_name: String,
    /// Something worth telling an operator (e.g. the device died with the pod).
    pub note: Option<String>,
}

/// Why a detach failed.
#[derive(Debug, thiserror::Error)]
pub enum DetachError {
    /// Another host interface took the original name while the interface was in the pod.
    /// Documented fallback: the interface is back on the host under `left_as`, still
    /// tagged, with its MTU, MAC, addresses and up state restored; detaching again once
    /// the name is free finishes the job.
    #[error(
        "host name {name} is taken by another interface (ifindex {holder}); interface left on \
         the host as {left_as} with alias {tag}, otherwise restored; detach again once {name} \
         is free"
    )]
    HostNameTaken {
        /// The snapshot's name.
        name: String,
        /// ifindex of the interface now holding that name.
        holder: u32,
        /// The name the interface was given instead.
        left_as: String,
        /// The tag (alias) it still carries.
        tag: String,
    },
    /// A netlink step failed.
    #[error("{what}: {source}")]
    Step {
        /// The step.
        what: String,
        /// The netlink error.
        #[source]
        source: NetError,
    },
}

fn step(what: impl Into<String>) -> impl FnOnce(NetError) -> DetachError {
    let what = what.into();
    move |source| DetachError::Step { what, source }
}

/// Where an attach finds the interface.
enum AttachState {
    /// On the host (fresh attach, or a previous attach rolled back or crashed before the
    /// move).
    OnHost(Link),
    /// Already in the pod, tagged (a repeated or resumed attach).
    InPod(Link),
}

/// Where a detach finds the interface.
enum DetachState {
    /// In the pod, tagged.
    InPod(Link),
    /// On the host: tagged, or under the snapshot's name and MAC.
    OnHost(Link),
    /// Nowhere to be found.
    Gone,
}

/// Moves `host_if_name` from `host`'s namespace into the pod's and configures it.
///
/// Same as [`attach_with_snapshot`] without a recorded snapshot: the snapshot is taken
/// here when the interface is still on the host. When it is already in the pod (a
/// repeated attach) the host state can no longer be read, so the returned
/// [`AttachOutcome::host`] is rebuilt from the pod side (name `host_if_name`, no
/// addresses): callers that recorded a snapshot should use [`attach_with_snapshot`].
///
/// # Errors
/// As [`attach_with_snapshot`].
pub async fn attach(
    host: &NetHandle,
    host_if_name: &str,
    pod_netns_path: &Path,
    tag: &str,
    config: &InterfaceConfig,
) -> Result<AttachOutcome, AttachError> {
    attach_with_snapshot(host, host_if_name, None, pod_netns_path, tag, config).await
}

/// Moves `host_if_name` into the pod whose namespace is pinned at `pod_netns_path`, and
/// applies `config` there (name, MTU, MAC, up, addresses, sysctls, routes, rules,
/// neighbours).
///
/// # Guarantees
/// - On success the interface is in the pod, up, configured as `config` says, and tagged
///   with the alias `tag`.
/// - On failure the interface is back on the host as `snapshot` describes (name, MTU, MAC,
///   addresses, alias, up/down), rules added in the pod are removed, and the error names
///   the step and the config field. If the rollback itself fails, the error says so.
/// - Idempotent: an interface already in the pod (found by `tag`) gets its configuration
///   applied again instead of failing.
/// - Work done: one alias request and one combined move+configure request on the host,
///   then one request per address, route, rule and neighbour in the pod, pipelined on one
///   socket per namespace.
///
/// # Assumptions
/// - `config` was validated (`netclaim_api` validation): addresses, MACs and families are
///   consistent.
/// - Nobody else renames or moves the interface meanwhile; `tag` is unique per device.
/// - `snapshot`, when given, is the recorded state of this interface on the host.
///
/// # Errors
/// [`AttachError`] with `field` set when a config value was refused: `interface.name`
/// (taken in the pod), `interface.mtu` (outside the device's bounds),
/// `interface.hardwareAddress`, `interface.addresses[i]`, `interface.routes[i]`
/// (`gateway unreachable`, ...), `interface.rules[i]`, `interface.neighbors[i]`,
/// `interface.sysctls`, `interface.ethtoolFeatures` (not supported). Without `field` for
/// environmental failures: the pod netns is gone, the interface is not found.
pub async fn attach_with_snapshot(
    host: &NetHandle,
    host_if_name: &str,
    snapshot: Option<&LinkSnapshot>,
    pod_netns_path: &Path,
    tag: &str,
    config: &InterfaceConfig,
) -> Result<AttachOutcome, AttachError> {
    let pod = NetHandle::in_netns(pod_netns_path)
        .await
        .map_err(|e| AttachError::new(None, "opening the pod's network namespace", e))?;
    let pod_if_name = config
        .name
        .clone()
        .unwrap_or_else(|| host_if_name.to_owned());
    let (snapshot, mac, reapplied, result) =
        match locate_for_attach(host, &pod, host_if_name, &pod_if_name, tag).await? {
            AttachState::OnHost(link) => {
                let snapshot = match snapshot {
                    Some(s) => s.clone(),
                    None => take_snapshot(host, &link).await?,
                };
                check_before_move(&pod, &link, &pod_if_name, config).await?;
                let snapshot = record_ethtool_features(host, &link, snapshot, config).await?;
                let result = move_and_configure(host, &pod, &link, tag, &pod_if_name, config).await;
                (snapshot, link.mac, false, result)
            }
            AttachState::InPod(link) => {
                let snapshot = snapshot.cloned().unwrap_or_else(|| LinkSnapshot {
                    if_name: host_if_name.to_owned(),
                    alias: None,
                    ..snapshot_of(&link, Vec::new())
                });
                let result = configure_in_pod(&pod, &link, &pod_if_name, config, true).await;
                (snapshot, link.mac, true, result)
            }
        };
    if let Err(mut err) = result {
        err.rollback = rollback(host, &pod, tag, &snapshot, config)
            .await
            .err()
            .map(Box::new);
        return Err(err);
    }
    Ok(AttachOutcome {
        host: snapshot,
        pod_if_name,
        ips: config.addresses.iter().map(ToString::to_string).collect(),
        mac: config
            .hardware_address
            .as_deref()
            .map(str::to_lowercase)
            .or(mac),
        reapplied,
    })
}

/// Gives the interface back exactly as `snapshot` says and removes the rules the attach
/// added in the pod (rules belong to the namespace, not to the interface, so they would
/// outlive it).
async fn rollback(
    host: &NetHandle,
    pod: &NetHandle,
    tag: &str,
    snapshot: &LinkSnapshot,
    config: &InterfaceConfig,
) -> Result<DetachOutcome, DetachError> {
    for rule in &config.rules {
        pod.del_rule(rule)
            .await
            .map_err(step("removing a rule added in the pod"))?;
    }
    detach_to_snapshot(host, Some(pod), tag, snapshot).await
}

async fn locate_for_attach(
    host: &NetHandle,
    pod: &NetHandle,
    host_if_name: &str,
    pod_if_name: &str,
    tag: &str,
) -> Result<AttachState, AttachError> {
    let lookup = |e| AttachError::new(None, "finding the interface", e);
    // Fast path, two lookups by name: the pod's name is either ours already (a repeated
    // attach) or must be free; the host name is the interface of a fresh attach.
    match pod.link_by_name(pod_if_name).await.map_err(lookup)? {
        Some(link) if link.alias.as_deref() == Some(tag) => return Ok(AttachState::InPod(link)),
        Some(other) => {
            return Err(AttachError::new(
                Some("interface.name".into()),
                format!(
                    "{pod_if_name} already exists in the pod (ifindex {})",
                    other.index
                ),
                NetError::exists(format!("moving {host_if_name} into the pod"), pod.netns()),
            ));
        }
        None => {}
    }
    if let Some(link) = host.link_by_name(host_if_name).await.map_err(lookup)? {
        return Ok(AttachState::OnHost(link));
    }
    // Slow path, by tag: a resumed attach that stopped between move and rename, or a
    // device that came back under another name.
    if let Some(link) = pod.link_by_alias(tag).await.map_err(lookup)? {
        return Ok(AttachState::InPod(link));
    }
    if let Some(link) = host.link_by_alias(tag).await.map_err(lookup)? {
        return Ok(AttachState::OnHost(link));
    }
    Err(lookup(NetError::not_found(
        format!("looking for {host_if_name} (alias {tag}) on the host and in the pod"),
        host.netns(),
    )))
}

async fn take_snapshot(host: &NetHandle, link: &Link) -> Result<LinkSnapshot, AttachError> {
    let addresses = host
        .addresses(link.index)
        .await
        .map_err(|e| AttachError::new(None, "recording the host state", e))?;
    Ok(snapshot_of(link, addresses))
}

/// Refuses, before anything is touched, what the kernel would refuse after the move.
async fn check_before_move(
    pod: &NetHandle,
    link: &Link,
    pod_if_name: &str,
    config: &InterfaceConfig,
) -> Result<(), AttachError> {
    if let Some(mtu) = config.mtu {
        let min = link.min_mtu.unwrap_or(0);
        let max = link.max_mtu.unwrap_or(u32::MAX);
        // Max 0 means "no limit reported" for some drivers.
        if mtu < min || (max != 0 && mtu > max) {
            return Err(AttachError::new(
                Some("interface.mtu".into()),
                format!("{mtu} is outside the device's bounds {min}..={max}"),
                NetError::invalid(format!("checking the MTU of {}", link.name), pod.netns()),
            ));
        }
    }
    let _ = pod_if_name;
    Ok(())
}

/// Adds to `snapshot` the current values of the ethtool features `config` changes, read on
/// the host before the move: unknown names fail here, with nothing touched.
async fn record_ethtool_features(
    host: &NetHandle,
    link: &Link,
    mut snapshot: LinkSnapshot,
    config: &InterfaceConfig,
) -> Result<LinkSnapshot, AttachError> {
    if config.ethtool_features.is_empty() {
        return Ok(snapshot);
    }
    let current = host
        .ethtool_features(&link.name, config.ethtool_features.keys())
        .await
        .map_err(|e| AttachError::new(Some("interface.ethtoolFeatures".into()), "reading", e))?;
    // A retried attach keeps the values recorded first: the device may already carry ours.
    for (name, on) in current {
        snapshot.ethtool_features.entry(name).or_insert(on);
    }
    Ok(snapshot)
}

/// Tags the interface, then moves it and sets name, MTU, MAC and up in one request, then
/// configures the rest.
async fn move_and_configure(
    host: &NetHandle,
    pod: &NetHandle,
    link: &Link,
    tag: &str,
    pod_if_name: &str,
    config: &InterfaceConfig,
) -> Result<(), AttachError> {
    // The tag goes on first, in its own request: whatever fails later, the rollback can
    // find the interface by it in either namespace.
    host.set_alias(link.index, Some(tag))
        .await
        .map_err(|e| AttachError::new(None, "tagging the interface", e))?;
    let change = LinkChange {
        name: Some(pod_if_name.to_owned()),
        mtu: config.mtu,
        mac: config.hardware_address.clone(),
        alias: None,
        up: Some(true),
    };
    let index = host
        .move_to_netns_keeping_index(link, pod, &change)
        .await
        .map_err(|e| blame_link_error(e, config, "moving the interface into the pod"))?;
    let moved = Link {
        index,
        name: pod_if_name.to_owned(),
        up: true,
        ..link.clone()
    };
    configure_in_pod(pod, &moved, pod_if_name, config, false).await
}

/// Which config field a failed link request was about, from the kernel's errno.
fn blame_link_error(err: NetError, config: &InterfaceConfig, what: &str) -> AttachError {
    let errno = err.errno();
    let field = match errno {
        Some(nix::libc::EEXIST) | Some(nix::libc::EBUSY) => Some("interface.name"),
        Some(nix::libc::EADDRNOTAVAIL) if config.hardware_address.is_some() => {
            Some("interface.hardwareAddress")
        }
        Some(nix::libc::EINVAL) if config.mtu.is_some() => Some("interface.mtu"),
        Some(nix::libc::EINVAL) if config.hardware_address.is_some() => {
            Some("interface.hardwareAddress")
        }
        _ => None,
    };
    AttachError::new(field.map(str::to_owned), what, err)
}

/// Applies the configuration to the interface inside the pod. `again` is set for an
/// interface that was already there: link attributes and addresses are then compared and
/// corrected rather than assumed fresh.
async fn configure_in_pod(
    pod: &NetHandle,
    link: &Link,
    pod_if_name: &str,
    config: &InterfaceConfig,
    again: bool,
) -> Result<(), AttachError> {
    let index = link.index;
    if again {
        let change = LinkChange {
            name: (link.name != pod_if_name).then(|| pod_if_name.to_owned()),
            mtu: config.mtu.filter(|m| *m != link.mtu),
            mac: config
                .hardware_address
                .clone()
                .filter(|m| link.mac.as_deref() != Some(m.to_lowercase().as_str())),
            alias: None,
            up: (!link.up).then_some(true),
        };
        // A running link cannot be renamed.
        if change.name.is_some() && link.up {
            pod.set_down(index)
                .await
                .map_err(|e| blame_link_error(e, config, "renaming"))?;
        }
        let change = LinkChange {
            up: Some(true),
            ..change
        };
        pod.change_link(index, &change)
            .await
            .map_err(|e| blame_link_error(e, config, "configuring the interface"))?;
        pod.replace_addresses(index, &config.addresses)
            .await
            .map_err(|e| {
                AttachError::new(Some("interface.addresses".into()), "setting addresses", e)
            })?;
    } else {
        try_join_all(
            config
                .addresses
                .iter()
                .enumerate()
                .map(|(i, net)| async move {
                    pod.add_address(index, *net).await.map_err(|e| {
                        AttachError::new(Some(format!("interface.addresses[{i}]")), "adding", e)
                    })
                }),
        )
        .await?;
    }
    if let Some(sysctls) = &config.sysctls {
        pod.set_sysctls(pod_if_name, sysctls)
            .await
            .map_err(|e| AttachError::new(Some("interface.sysctls".into()), "writing", e))?;
    }
    pod.set_ethtool_features(pod_if_name, &config.ethtool_features)
        .await
        .map_err(|e| AttachError::new(Some("interface.ethtoolFeatures".into()), "setting", e))?;
    try_join_all(
        config
            .routes
            .iter()
            .enumerate()
            .map(|(i, route)| async move {
                pod.add_route(index, route).await.map_err(|e| {
                    let what = match e.errno() {
                        Some(nix::libc::ENETUNREACH) if route.gateway.is_some() => {
                            "gateway unreachable"
                        }
                        _ => "adding the route",
                    };
                    AttachError::new(Some(format!("interface.routes[{i}]")), what, e)
                })
            }),
    )
    .await?;
    for (i, rule) in config.rules.iter().enumerate() {
        pod.add_rule(rule)
            .await
            .map_err(|e| AttachError::new(Some(format!("interface.rules[{i}]")), "adding", e))?;
    }
    try_join_all(
        config
            .neighbors
            .iter()
            .enumerate()
            .map(|(i, neighbor)| async move {
                pod.add_neighbor(index, neighbor).await.map_err(|e| {
                    AttachError::new(Some(format!("interface.neighbors[{i}]")), "adding", e)
                })
            }),
    )
    .await?;
    Ok(())
}

/// Gives the interface tagged `tag` back to the host as `snapshot` describes.
///
/// `pod_netns_path` may be gone already (the pod was torn down first).
///
/// # Guarantees
/// - On success the interface is on the host with the snapshot's name, MTU, MAC, alias,
///   addresses and up/down state, or it no longer exists ([`DetachAction::Gone`], with a
///   note): a virtual device dies with its namespace.
/// - Idempotent: an interface already back on the host (found by `tag`, or by the
///   snapshot's name and MAC) only gets what differs restored.
/// - A physical device that fell back to the initial namespace under another name when
///   the pod's namespace was destroyed is found by its tag and renamed.
///
/// # Assumptions
/// - `host` is the namespace the interface came from; `snapshot` was taken there.
///
/// # Errors
/// [`DetachError::HostNameTaken`] when another interface took the original name (the
/// interface is left on the host, tagged, under a temporary name: see the variant);
/// [`DetachError::Step`] when a netlink step fails.
pub async fn detach(
    host: &NetHandle,
    pod_netns_path: &Path,
    tag: &str,
    snapshot: &LinkSnapshot,
) -> Result<DetachOutcome, DetachError> {
    let pod = match NetHandle::in_netns(pod_netns_path).await {
        Ok(pod) => Some(pod),
        Err(e) if e.is_not_found() => None,
        Err(e) => return Err(step("opening the pod's network namespace")(e)),
    };
    detach_to_snapshot(host, pod.as_ref(), tag, snapshot).await
}

/// [`detach`] with the pod's namespace already open (`None` when it is gone). This is also
/// the rollback of a failed [`attach`].
///
/// # Errors
/// As [`detach`].
pub async fn detach_to_snapshot(
    host: &NetHandle,
    pod: Option<&NetHandle>,
    tag: &str,
    snapshot: &LinkSnapshot,
) -> Result<DetachOutcome, DetachError> {
    let (action, final_name) = match (locate_for_detach(host, pod, tag, snapshot).await?, pod) {
        (DetachState::InPod(link), Some(pod)) => move_back(host, pod, &link, tag, snapshot).await?,
        (DetachState::OnHost(link), _) => restore_on_host(host, &link, tag, snapshot).await?,
        (DetachState::Gone, _) | (DetachState::InPod(_), None) => {
            (DetachAction::Gone, snapshot.if_name.clone())
        }
    };
    if action != DetachAction::Gone {
        // Device features travel with the device: set back what the claim changed.
        host.set_ethtool_features(&final_name, &snapshot.ethtool_features)
            .await
            .map_err(step("restoring ethtool features"))?;
    }
    let note = (action == DetachAction::Gone).then(|| gone_note(snapshot));
    let outcome = DetachOutcome {
        action,
        host_if_name: snapshot.if_name.clone(),
        note,
    };
    name_result(host, snapshot, tag, &final_name, outcome).await
}

/// The interface is in the pod: one request moves it home and restores name, MTU, MAC,
/// alias and up state; then its addresses (which the move flushed) are put back.
async fn move_back(
    host: &NetHandle,
    pod: &NetHandle,
    link: &Link,
    tag: &str,
    snapshot: &LinkSnapshot,
) -> Result<(DetachAction, String), DetachError> {
    let final_name = host_name_for(host, link, tag, snapshot, false).await?;
    let change = restore_change(link, snapshot, &final_name, tag, true);
    let index = pod
        .move_to_netns_keeping_index(link, host, &change)
        .await
        .map_err(step("moving the interface back to the host"))?;
    try_join_all(
        snapshot
            .addresses
            .iter()
            .map(|net| host.add_address(index, *net)),
    )
    .await
    .map_err(step("restoring the addresses"))?;
    Ok((DetachAction::MovedBack, final_name))
}

/// The interface is on the host already: restore only what differs from the snapshot.
async fn restore_on_host(
    host: &NetHandle,
    link: &Link,
    tag: &str,
    snapshot: &LinkSnapshot,
) -> Result<(DetachAction, String), DetachError> {
    let final_name = host_name_for(host, link, tag, snapshot, true).await?;
    let change = restore_change(link, snapshot, &final_name, tag, false);
    let addresses = host
        .addresses(link.index)
        .await
        .map_err(step("listing the addresses"))?;
    let same_addresses = same_set(&addresses, &snapshot.addresses);
    if change.is_empty() && same_addresses {
        return Ok((DetachAction::AlreadyRestored, final_name));
    }
    // A running link cannot be renamed, and some drivers refuse a MAC change while up.
    let bounce = link.up && (change.name.is_some() || change.mac.is_some());
    if bounce {
        host.set_down(link.index)
            .await
            .map_err(step("bringing the interface down"))?;
    }
    let change = LinkChange {
        up: Some(snapshot.up),
        ..change
    };
    host.change_link(link.index, &change)
        .await
        .map_err(step("restoring the interface"))?;
    // Taking a link down makes the kernel drop its IPv6 addresses (unless the
    // keep_addr_on_down sysctl says otherwise): compare again after a bounce.
    if bounce || !same_addresses {
        host.replace_addresses(link.index, &snapshot.addresses)
            .await
            .map_err(step("restoring the addresses"))?;
    }
    Ok((DetachAction::RestoredOnHost, final_name))
}

fn gone_note(snapshot: &LinkSnapshot) -> String {
    let (kind, why) = if snapshot.kind.is_empty() {
        (
            "physical",
            "a physical device should have returned to the initial namespace; check it",
        )
    } else {
        (
            snapshot.kind.as_str(),
            "a virtual device dies with its network namespace",
        )
    };
    format!(
        "{} ({kind}) is neither in the pod nor on the host: {why}",
        snapshot.if_name
    )
}

async fn locate_for_detach(
    host: &NetHandle,
    pod: Option<&NetHandle>,
    tag: &str,
    snapshot: &LinkSnapshot,
) -> Result<DetachState, DetachError> {
    if let Some(pod) = pod
        && let Some(link) = pod
            .link_by_alias(tag)
            .await
            .map_err(step("looking in the pod"))?
    {
        return Ok(DetachState::InPod(link));
    }
    if let Some(link) = host
        .link_by_alias(tag)
        .await
        .map_err(step("looking on the host"))?
    {
        return Ok(DetachState::OnHost(link));
    }
    let by_name = host
        .link_by_name(&snapshot.if_name)
        .await
        .map_err(step("looking on the host"))?;
    Ok(match by_name {
        Some(link) if link.mac == snapshot.mac && link.kind == snapshot.kind => {
            DetachState::OnHost(link)
        }
        _ => DetachState::Gone,
    })
}

/// The name to give the interface on the host: the snapshot's, or a temporary one derived
/// from the snapshot's ifindex when another interface holds it.
async fn host_name_for(
    host: &NetHandle,
    link: &Link,
    tag: &str,
    snapshot: &LinkSnapshot,
    on_host: bool,
) -> Result<String, DetachError> {
    if on_host && link.name == snapshot.if_name {
        return Ok(link.name.clone());
    }
    let holder = host
        .link_by_name(&snapshot.if_name)
        .await
        .map_err(step("checking the host name"))?;
    Ok(match holder {
        Some(other) if other.alias.as_deref() != Some(tag) => {
            let temp = temp_name(snapshot);
            if on_host { link.name.clone() } else { temp }
        }
        _ => snapshot.if_name.clone(),
    })
}

/// A name unlikely to be taken, for an interface whose own name is held by another.
fn temp_name(snapshot: &LinkSnapshot) -> String {
    format!("netclaim{}", snapshot.if_index % 10_000_000)
}

/// The changes that bring `link` to `snapshot`. While the interface cannot have its own
/// name it keeps its tag, so that a later detach finds it.
fn restore_change(
    link: &Link,
    snapshot: &LinkSnapshot,
    name: &str,
    tag: &str,
    moving: bool,
) -> LinkChange {
    let named = name == snapshot.if_name;
    let alias = if named {
        snapshot.alias.clone().unwrap_or_default()
    } else {
        tag.to_owned()
    };
    LinkChange {
        name: (moving || link.name != name).then(|| name.to_owned()),
        mtu: Some(snapshot.mtu).filter(|m| *m != link.mtu && *m != 0),
        mac: snapshot
            .mac
            .clone()
            .filter(|m| link.mac.as_ref() != Some(m)),
        alias: (link.alias.as_deref().unwrap_or_default() != alias).then_some(alias),
        // After a move the link is down: only "up" needs saying.
        up: if moving {
            snapshot.up.then_some(true)
        } else {
            (link.up != snapshot.up).then_some(snapshot.up)
        },
    }
}

/// Success, unless the interface had to be left under another name.
async fn name_result(
    host: &NetHandle,
    snapshot: &LinkSnapshot,
    tag: &str,
    final_name: &str,
    outcome: DetachOutcome,
) -> Result<DetachOutcome, DetachError> {
    if final_name == snapshot.if_name {
        return Ok(outcome);
    }
    let holder = host
        .link_by_name(&snapshot.if_name)
        .await
        .map_err(step("checking the host name"))?
        .map_or(0, |l| l.index);
    Err(DetachError::HostNameTaken {
        name: snapshot.if_name.clone(),
        holder,
        left_as: final_name.to_owned(),
        tag: tag.to_owned(),
    })
}

fn same_set(a: &[ipnet::IpNet], b: &[ipnet::IpNet]) -> bool {
    let a: std::collections::BTreeSet<_> = a.iter().collect();
    let b: std::collections::BTreeSet<_> = b.iter().collect();
    a == b
}
