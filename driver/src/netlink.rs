//! Netlink at the level of intents: one [`NetHandle`] per network namespace, with methods
//! such as "move this link there under that name" or "give it these addresses".
//!
//! Every method returns a [`NetError`] that says what was being done, to which interface
//! and in which network namespace, with the kernel's errno kept for callers that branch on
//! it (`EEXIST`, `ENODEV`, ...).
//!
//! Kernel behaviour this module relies on (and that callers must keep in mind):
//! - A netlink socket belongs to the network namespace it was created in, for its whole
//!   life. [`NetHandle::in_netns`] therefore creates its socket on a dedicated thread that
//!   enters the target namespace and goes back home afterwards; no thread of the async
//!   runtime ever changes namespace.
//! - Moving a link to another namespace closes it (it arrives down) and the kernel flushes
//!   its addresses, routes, neighbours and per-interface sysctls. Everything has to be
//!   applied again on the other side.
//! - `RTM_NEWLINK` handles its attributes in a fixed order: namespace change first, then
//!   MAC, MTU, name, alias and last the up/down flags. One request can therefore move a
//!   link and configure it in the target namespace; it is not atomic, though, so a failure
//!   may leave the earlier attributes applied.
//! - A running link cannot be renamed (`EBUSY`): rename it while it is down.
//! - When a namespace is destroyed, virtual devices (veth, macvlan, ...) die with it and
//!   physical ones fall back into the initial namespace, possibly under another name.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::File;
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError, mpsc};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use ipnet::IpNet;
use netclaim_api::{NeighborConfig, RouteConfig, RouteScope, RuleConfig, Sysctls};
use nix::sched::{CloneFlags, setns};
use rtnetlink::packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST, NetlinkMessage,
    NetlinkPayload,
};
use rtnetlink::packet_route::address::{AddressAttribute, AddressHeaderFlags, AddressMessage};
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::route::RouteScope as KernelScope;
use rtnetlink::packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::{MulticastGroup, RouteMessageBuilder};
use tokio::task::JoinHandle;

use crate::state::LinkSnapshot;

/// An error from one netlink (or sysctl) operation, with its context.
#[derive(Debug, thiserror::Error)]
#[error("{action} (netns {netns}): {source}")]
pub struct NetError {
    action: String,
    netns: String,
    #[source]
    source: io::Error,
}

impl NetError {
    fn new(action: impl Into<String>, netns: &str, source: io::Error) -> Self {
        Self {
            action: action.into(),
            netns: netns.to_owned(),
            source,
        }
    }

    /// An error for something that is not there (`ENODEV`), found while doing `action`.
    pub fn not_found(action: impl Into<String>, netns: &str) -> Self {
        Self::new(
            action,
            netns,
            io::Error::from_raw_os_error(nix::libc::ENODEV),
        )
    }

    /// An error for a name that is taken (`EEXIST`), found while doing `action`.
    pub fn exists(action: impl Into<String>, netns: &str) -> Self {
        Self::new(
            action,
            netns,
            io::Error::from_raw_os_error(nix::libc::EEXIST),
        )
    }

    /// An error for a value the kernel would refuse (`EINVAL`), found while doing `action`.
    pub fn invalid(action: impl Into<String>, netns: &str) -> Self {
        Self::new(
            action,
            netns,
            io::Error::from_raw_os_error(nix::libc::EINVAL),
        )
    }

    /// The kernel's errno, when the kernel refused the request.
    pub fn errno(&self) -> Option<i32> {
        self.source.raw_os_error()
    }

    /// Whether the kernel said "exists" (`EEXIST`), e.g. a name already taken.
    pub fn is_exists(&self) -> bool {
        self.errno() == Some(nix::libc::EEXIST)
    }

    /// Whether the kernel said "no such device" (`ENODEV`) or the thing was not found.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self.errno(),
            Some(nix::libc::ENODEV) | Some(nix::libc::ENOENT)
        )
    }

    /// Whether the operation is not supported (by netclaim, the kernel or the device).
    pub fn is_unsupported(&self) -> bool {
        matches!(self.errno(), Some(nix::libc::EOPNOTSUPP))
    }

    /// What was being done, without the namespace and the cause.
    pub fn action(&self) -> &str {
        &self.action
    }
}

fn to_io(err: rtnetlink::Error) -> io::Error {
    match err {
        rtnetlink::Error::NetlinkError(msg) => msg.to_io(),
        other => io::Error::other(other.to_string()),
    }
}

/// A link as the kernel reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    /// ifindex in the link's current namespace.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// Current MTU.
    pub mtu: u32,
    /// Smallest MTU the device accepts (IFLA_MIN_MTU), when reported.
    pub min_mtu: Option<u32>,
    /// Largest MTU the device accepts (IFLA_MAX_MTU), when reported.
    pub max_mtu: Option<u32>,
    /// MAC address (`aa:bb:cc:dd:ee:ff`), if the device has one.
    pub mac: Option<String>,
    /// Administratively up.
    pub up: bool,
    /// IFLA_IFALIAS, if set and not empty.
    pub alias: Option<String>,
    /// Link kind (`veth`, `macvlan`, ...), empty for a physical NIC.
    pub kind: String,
}

impl Link {
    fn from_message(msg: &LinkMessage) -> Self {
        let mut link = Link {
            index: msg.header.index,
            name: String::new(),
            mtu: 0,
            min_mtu: None,
            max_mtu: None,
            mac: None,
            up: msg.header.flags.contains(LinkFlags::Up),
            alias: None,
            kind: String::new(),
        };
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(name) => link.name = name.clone(),
                LinkAttribute::Mtu(mtu) => link.mtu = *mtu,
                LinkAttribute::MinMtu(mtu) => link.min_mtu = Some(*mtu),
                LinkAttribute::MaxMtu(mtu) => link.max_mtu = Some(*mtu),
                LinkAttribute::Address(mac) if mac.len() == 6 => link.mac = Some(format_mac(mac)),
                LinkAttribute::IfAlias(alias) if !alias.is_empty() => {
                    link.alias = Some(alias.clone())
                }
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        if let LinkInfo::Kind(kind) = info {
                            link.kind = kind.to_string();
                        }
                    }
                }
                _ => {}
            }
        }
        link
    }
}

/// Formats a MAC address as lowercase `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses `aa:bb:cc:dd:ee:ff` (either case) into six bytes.
pub fn parse_mac(text: &str) -> Option<Vec<u8>> {
    let bytes: Vec<u8> = text
        .split(':')
        .map(|part| {
            if part.len() == 2 {
                u8::from_str_radix(part, 16).ok()
            } else {
                None
            }
        })
        .collect::<Option<_>>()?;
    (bytes.len() == 6).then_some(bytes)
}

/// The changes one `RTM_NEWLINK` request applies to a link; `None` leaves a field alone.
///
/// The kernel applies them in this order: namespace, MAC, MTU, name, alias, up/down.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinkChange {
    /// New name.
    pub name: Option<String>,
    /// New MTU.
    pub mtu: Option<u32>,
    /// New MAC address (`aa:bb:cc:dd:ee:ff`).
    pub mac: Option<String>,
    /// New alias; `Some("")` clears it.
    pub alias: Option<String>,
    /// Bring up (`true`) or down (`false`).
    pub up: Option<bool>,
}

impl LinkChange {
    /// Whether the request would change nothing.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// A human summary for error messages ("name=eth1 mtu=9000").
    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(name) = &self.name {
            parts.push(format!("name={name}"));
        }
        if let Some(mtu) = self.mtu {
            parts.push(format!("mtu={mtu}"));
        }
        if let Some(mac) = &self.mac {
            parts.push(format!("mac={mac}"));
        }
        if let Some(alias) = &self.alias {
            parts.push(format!("alias={alias:?}"));
        }
        if let Some(up) = self.up {
            parts.push(if up { "up".into() } else { "down".into() });
        }
        parts.join(" ")
    }
}

/// A netlink connection bound to one network namespace, with intent-level methods.
///
/// One handle serves many requests (they are pipelined on one socket); create one per
/// namespace per operation and drop it afterwards.
pub struct NetHandle {
    handle: rtnetlink::Handle,
    /// The namespace file, kept open: it pins the namespace's identity and is the fd a
    /// link is moved with (`IFLA_NET_NS_FD`).
    ns_file: File,
    label: String,
    connection: JoinHandle<()>,
}

impl fmt::Debug for NetHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NetHandle")
            .field("netns", &self.label)
            .finish()
    }
}

impl Drop for NetHandle {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

type Connection = rtnetlink::proto::Connection<RouteNetlinkMessage>;

impl NetHandle {
    /// A handle on the namespace the process runs in.
    ///
    /// Call it from within a tokio runtime (its socket registers with the runtime's reactor
    /// and its connection runs as a task); outside one it panics, as `tokio::spawn` does.
    ///
    /// # Errors
    /// When the socket cannot be created (no runtime, fd exhaustion).
    pub fn current() -> Result<Self, NetError> {
        let label = "current".to_owned();
        let ns_file = File::open("/proc/thread-self/ns/net")
            .map_err(|e| NetError::new("opening /proc/thread-self/ns/net", &label, e))?;
        let (conn, handle, _) = rtnetlink::new_connection()
            .map_err(|e| NetError::new("opening a netlink socket", &label, e))?;
        Ok(Self::start(conn, handle, ns_file, label))
    }

    /// A handle on the namespace pinned at `path` (e.g. `/run/netns/<name>` or
    /// `/proc/<pid>/ns/net`).
    ///
    /// # Errors
    /// When the namespace does not exist (any more) — check with
    /// [`NetError::is_not_found`] — or the socket cannot be created there.
    pub async fn in_netns(path: impl AsRef<Path>) -> Result<Self, NetError> {
        let path: PathBuf = path.as_ref().to_owned();
        let label = path.display().to_string();
        let ns_file =
            File::open(&path).map_err(|e| NetError::new("opening the netns file", &label, e))?;
        let thread_ns = ns_file
            .try_clone()
            .map_err(|e| NetError::new("duplicating the netns fd", &label, e))?;
        let runtime = tokio::runtime::Handle::current();
        let (conn, handle) = in_netns_thread(thread_ns, move || {
            // The socket is created here, inside the namespace; registering it with the
            // runtime's reactor needs the runtime entered on this thread.
            let _guard = runtime.enter();
            let (conn, handle, _) = rtnetlink::new_connection()?;
            Ok((conn, handle))
        })
        .await
        .map_err(|e| NetError::new("opening a netlink socket in the netns", &label, e))?;
        Ok(Self::start(conn, handle, ns_file, label))
    }

    fn start(conn: Connection, handle: rtnetlink::Handle, ns_file: File, label: String) -> Self {
        let connection = tokio::spawn(conn);
        Self {
            handle,
            ns_file,
            label,
            connection,
        }
    }

    /// The namespace this handle works in, for messages.
    pub fn netns(&self) -> &str {
        &self.label
    }

    /// A new file on the namespace this handle works in (for moving other kinds of devices
    /// there, such as RDMA devices: [`crate::rdma`]).
    ///
    /// # Errors
    /// The fd cannot be duplicated.
    pub fn netns_file(&self) -> io::Result<File> {
        self.ns_file.try_clone()
    }

    fn err(
        &self,
        action: impl Into<String> + 'static,
    ) -> impl FnOnce(rtnetlink::Error) -> NetError + '_ {
        move |e| NetError::new(action, &self.label, to_io(e))
    }

    /// Sends one request and waits for its acknowledgement.
    async fn ack(&self, msg: RouteNetlinkMessage, flags: u16) -> Result<(), rtnetlink::Error> {
        let mut req = NetlinkMessage::from(msg);
        req.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        let mut replies = self.handle.clone().request(req)?;
        while let Some(reply) = replies.next().await {
            if let NetlinkPayload::Error(err) = reply.payload {
                return Err(rtnetlink::Error::NetlinkError(err));
            }
        }
        Ok(())
    }

    // ----- links -------------------------------------------------------------------------

    /// The link called `name`, or `None`.
    ///
    /// # Errors
    /// On netlink failures other than "no such device".
    pub async fn link_by_name(&self, name: &str) -> Result<Option<Link>, NetError> {
        let mut replies = self
            .handle
            .link()
            .get()
            .match_name(name.to_owned())
            .execute();
        match replies.try_next().await {
            Ok(msg) => Ok(msg.map(|m| Link::from_message(&m))),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -nix::libc::ENODEV => {
                Ok(None)
            }
            Err(e) => Err(self.err(format!("looking up link {name}"))(e)),
        }
    }

    /// The link with ifindex `index`, or `None`.
    ///
    /// # Errors
    /// On netlink failures other than "no such device".
    pub async fn link_by_index(&self, index: u32) -> Result<Option<Link>, NetError> {
        let mut replies = self.handle.link().get().match_index(index).execute();
        match replies.try_next().await {
            Ok(msg) => Ok(msg.map(|m| Link::from_message(&m))),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -nix::libc::ENODEV => {
                Ok(None)
            }
            Err(e) => Err(self.err(format!("looking up link #{index}"))(e)),
        }
    }

    /// All links of the namespace (one dump).
    ///
    /// # Errors
    /// On netlink failures.
    pub async fn links(&self) -> Result<Vec<Link>, NetError> {
        self.handle
            .link()
            .get()
            .execute()
            .map_ok(|m| Link::from_message(&m))
            .try_collect()
            .await
            .map_err(self.err("listing links"))
    }

    /// The link whose alias (IFLA_IFALIAS) is `alias`, or `None`. The kernel cannot filter
    /// on the alias, so this is one dump of the namespace's links.
    ///
    /// # Errors
    /// On netlink failures.
    pub async fn link_by_alias(&self, alias: &str) -> Result<Option<Link>, NetError> {
        let links = self.links().await?;
        Ok(links
            .into_iter()
            .find(|l| l.alias.as_deref() == Some(alias)))
    }

    /// The permanent addresses of link `index`, without the kernel's IPv6 link-local ones
    /// and without dynamic (SLAAC, DHCP-with-lifetime) ones.
    ///
    /// # Errors
    /// On netlink failures.
    pub async fn addresses(&self, index: u32) -> Result<Vec<IpNet>, NetError> {
        let msgs: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(self.err(format!("listing addresses of link #{index}")))?;
        Ok(msgs
            .iter()
            .filter(|m| m.header.index == index)
            .filter_map(permanent_address)
            .collect())
    }

    /// Everything [`LinkSnapshot`] records about `name`: one link request and one address
    /// dump.
    ///
    /// # Errors
    /// When there is no such link, or on netlink failures.
    pub async fn snapshot(&self, name: &str) -> Result<LinkSnapshot, NetError> {
        let link = self.require_link(name).await?;
        Ok(snapshot_of(&link, self.addresses(link.index).await?))
    }

    async fn require_link(&self, name: &str) -> Result<Link, NetError> {
        self.link_by_name(name).await?.ok_or_else(|| {
            NetError::new(
                format!("looking up link {name}"),
                &self.label,
                io::Error::from_raw_os_error(nix::libc::ENODEV),
            )
        })
    }

    /// Applies `change` to link `index` in one `RTM_NEWLINK` request.
    ///
    /// # Errors
    /// What the kernel refuses: `EEXIST` for a taken name, `EINVAL` for an MTU outside the
    /// device's bounds, `EBUSY` for renaming a running link.
    pub async fn change_link(&self, index: u32, change: &LinkChange) -> Result<(), NetError> {
        if change.is_empty() {
            return Ok(());
        }
        let msg = self.link_message(index, change)?;
        self.ack(RouteNetlinkMessage::NewLink(msg), 0)
            .await
            .map_err(self.err(format!("setting {} on link #{index}", change.describe())))
    }

    fn link_message(&self, index: u32, change: &LinkChange) -> Result<LinkMessage, NetError> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        if let Some(mac) = &change.mac {
            let bytes = parse_mac(mac).ok_or_else(|| {
                NetError::new(
                    format!("parsing MAC address {mac:?}"),
                    &self.label,
                    io::Error::from_raw_os_error(nix::libc::EINVAL),
                )
            })?;
            msg.attributes.push(LinkAttribute::Address(bytes));
        }
        if let Some(mtu) = change.mtu {
            msg.attributes.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(name) = &change.name {
            msg.attributes.push(LinkAttribute::IfName(name.clone()));
        }
        if let Some(alias) = &change.alias {
            // An empty alias (just the NUL) makes the kernel drop it.
            msg.attributes.push(LinkAttribute::IfAlias(alias.clone()));
        }
        if let Some(up) = change.up {
            msg.header.change_mask = LinkFlags::Up;
            msg.header.flags = if up {
                LinkFlags::Up
            } else {
                LinkFlags::empty()
            };
        }
        Ok(msg)
    }

    /// Moves link `index` into `target`'s namespace and applies `then` there, all in one
    /// `RTM_NEWLINK` request (`IFLA_NET_NS_FD` plus the other attributes).
    ///
    /// Why one request: the move is the expensive part (the kernel waits for an RCU grace
    /// period); everything else in the same message costs microseconds.
    ///
    /// Kernel behaviour: the link arrives down, without addresses or routes. If its
    /// current name is taken in the target and `then.name` is set, the kernel moves it
    /// under `then.name` instead of failing. The request is not atomic: if a later
    /// attribute fails (e.g. the final name is taken), the link may already be in the
    /// target namespace.
    ///
    /// # Errors
    /// `EEXIST` when the name is taken in the target, `EINVAL` for devices that cannot
    /// change namespace (`NETIF_F_NETNS_LOCAL`), ...
    pub async fn move_to_netns(
        &self,
        index: u32,
        target: &NetHandle,
        then: &LinkChange,
    ) -> Result<(), NetError> {
        let mut msg = self.link_message(index, then)?;
        msg.attributes
            .insert(0, LinkAttribute::NetNsFd(target.ns_file.as_raw_fd()));
        let what = if then.is_empty() {
            String::new()
        } else {
            format!(" with {}", then.describe())
        };
        self.ack(RouteNetlinkMessage::NewLink(msg), 0)
            .await
            .map_err(self.err(format!(
                "moving link #{index} to netns {}{what}",
                target.label
            )))
    }

    /// Like [`NetHandle::move_to_netns`], and returns the link's ifindex in the target
    /// without asking the kernel again: the request pins it (`IFLA_NEW_IFINDEX`) to the
    /// current one. The kernel checks that index before it touches the link; if another
    /// link of the target holds it (`EEXIST`), the move is sent again without the pin and
    /// the new index looked up by name.
    ///
    /// # Errors
    /// As [`NetHandle::move_to_netns`].
    pub async fn move_to_netns_keeping_index(
        &self,
        link: &Link,
        target: &NetHandle,
        then: &LinkChange,
    ) -> Result<u32, NetError> {
        let mut msg = self.link_message(link.index, then)?;
        msg.attributes
            .insert(0, LinkAttribute::NetNsFd(target.ns_file.as_raw_fd()));
        let index = i32::try_from(link.index).unwrap_or(0);
        msg.attributes.push(LinkAttribute::NewIfIndex(index));
        match self.ack(RouteNetlinkMessage::NewLink(msg), 0).await {
            Ok(()) => return Ok(link.index),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -nix::libc::EEXIST => {}
            Err(e) => {
                return Err(self.err(format!(
                    "moving link {} to netns {} with {}",
                    link.name,
                    target.label,
                    then.describe()
                ))(e));
            }
        }
        self.move_to_netns(link.index, target, then).await?;
        let name = then.name.as_deref().unwrap_or(&link.name);
        let moved = target.link_by_name(name).await?;
        moved.map(|l| l.index).ok_or_else(|| {
            NetError::not_found(format!("looking up {name} after moving it"), &target.label)
        })
    }

    /// Renames link `index` (which must be down).
    ///
    /// # Errors
    /// `EEXIST` if the name is taken, `EBUSY` if the link is up.
    pub async fn rename(&self, index: u32, name: &str) -> Result<(), NetError> {
        self.change_link(
            index,
            &LinkChange {
                name: Some(name.into()),
                ..Default::default()
            },
        )
        .await
    }

    /// Sets the MTU of link `index`.
    ///
    /// # Errors
    /// `EINVAL` outside the device's bounds ([`Link::min_mtu`], [`Link::max_mtu`]).
    pub async fn set_mtu(&self, index: u32, mtu: u32) -> Result<(), NetError> {
        self.change_link(
            index,
            &LinkChange {
                mtu: Some(mtu),
                ..Default::default()
            },
        )
        .await
    }

    /// Sets the MAC address of link `index`.
    ///
    /// # Errors
    /// When the address is malformed or the device refuses it.
    pub async fn set_mac(&self, index: u32, mac: &str) -> Result<(), NetError> {
        self.change_link(
            index,
            &LinkChange {
                mac: Some(mac.into()),
                ..Default::default()
            },
        )
        .await
    }

    /// Brings link `index` up.
    ///
    /// # Errors
    /// On netlink failures.
    pub async fn set_up(&self, index: u32) -> Result<(), NetError> {
        self.change_link(
            index,
            &LinkChange {
                up: Some(true),
                ..Default::default()
            },
        )
        .await
    }

    /// Brings link `index` down.
    ///
    /// # Errors
    /// On netlink failures.
    pub async fn set_down(&self, index: u32) -> Result<(), NetError> {
        self.change_link(
            index,
            &LinkChange {
                up: Some(false),
                ..Default::default()
            },
        )
        .await
    }

    /// Sets (or with `None` clears) the alias of link `index`.
    ///
    /// # Errors
    /// On netlink failures (an alias is at most 255 bytes).
    pub async fn set_alias(&self, index: u32, alias: Option<&str>) -> Result<(), NetError> {
        let alias = Some(alias.unwrap_or_default().to_owned());
        self.change_link(
            index,
            &LinkChange {
                alias,
                ..Default::default()
            },
        )
        .await
    }

    /// Waits until a link called `name` exists, at most `timeout`, watching link
    /// notifications (no polling).
    ///
    /// # Errors
    /// `ETIMEDOUT` when it did not appear in time; netlink failures.
    pub async fn wait_for_link(&self, name: &str, timeout: Duration) -> Result<Link, NetError> {
        let ns = self
            .ns_file
            .try_clone()
            .map_err(|e| NetError::new("duplicating the netns fd", &self.label, e))?;
        let runtime = tokio::runtime::Handle::current();
        let (conn, _handle, mut events) = in_netns_thread(ns, move || {
            let _guard = runtime.enter();
            rtnetlink::new_multicast_connection(&[MulticastGroup::Link])
        })
        .await
        .map_err(|e| NetError::new("subscribing to link events", &self.label, e))?;
        let listener = tokio::spawn(conn);
        // Subscribed first, then looked: a link created in between is not missed.
        let found = async {
            if let Some(link) = self.link_by_name(name).await? {
                return Ok(link);
            }
            while let Some((msg, _)) = events.next().await {
                if let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(m)) = msg.payload {
                    let link = Link::from_message(&m);
                    if link.name == name {
                        return Ok(link);
                    }
                }
            }
            Err(NetError::new(
                format!("waiting for link {name}"),
                &self.label,
                io::Error::other("link event stream ended"),
            ))
        };
        let result = tokio::time::timeout(timeout, found).await;
        listener.abort();
        result.unwrap_or_else(|_| {
            Err(NetError::new(
                format!("waiting {timeout:?} for link {name}"),
                &self.label,
                io::Error::from_raw_os_error(nix::libc::ETIMEDOUT),
            ))
        })
    }

    // ----- addresses ---------------------------------------------------------------------

    /// Adds (or refreshes) `net` on link `index`.
    ///
    /// IPv6 addresses are added with `IFA_F_NODAD`: these are static addresses an operator
    /// chose, and duplicate address detection would keep them "tentative" (unusable as a
    /// source, and routes through them refused) for a second or more after the link is up.
    ///
    /// # Errors
    /// When the kernel refuses the address.
    pub async fn add_address(&self, index: u32, net: IpNet) -> Result<(), NetError> {
        let mut req = self
            .handle
            .address()
            .add(index, net.addr(), net.prefix_len())
            .replace();
        if net.addr().is_ipv6() {
            req.message_mut().header.flags = AddressHeaderFlags::Nodad;
        }
        req.execute()
            .await
            .map_err(self.err(format!("adding address {net} to link #{index}")))
    }

    /// Removes `net` from link `index`.
    ///
    /// # Errors
    /// When the kernel refuses (e.g. the address is not there: `EADDRNOTAVAIL`).
    pub async fn del_address(&self, index: u32, net: IpNet) -> Result<(), NetError> {
        let mut msg = AddressMessage::default();
        msg.header.family = family_of(net.addr());
        msg.header.prefix_len = net.prefix_len();
        msg.header.index = index;
        msg.attributes.push(AddressAttribute::Local(net.addr()));
        msg.attributes.push(AddressAttribute::Address(net.addr()));
        self.handle
            .address()
            .del(msg)
            .execute()
            .await
            .map_err(self.err(format!("removing address {net} from link #{index}")))
    }

    /// Makes `wanted` the exact set of permanent addresses of link `index` (the kernel's
    /// IPv6 link-local address is left alone). Requests are pipelined on the socket.
    ///
    /// # Errors
    /// The first address the kernel refuses.
    pub async fn replace_addresses(&self, index: u32, wanted: &[IpNet]) -> Result<(), NetError> {
        let current: BTreeSet<IpNet> = self.addresses(index).await?.into_iter().collect();
        let wanted_set: BTreeSet<IpNet> = wanted.iter().copied().collect();
        let removals = current
            .difference(&wanted_set)
            .map(|net| self.del_address(index, *net));
        futures::future::try_join_all(removals).await?;
        let additions = wanted_set
            .difference(&current)
            .map(|net| self.add_address(index, *net));
        futures::future::try_join_all(additions).await?;
        Ok(())
    }

    // ----- routes, rules, neighbours -----------------------------------------------------

    /// Adds (or replaces) a route through link `index`, IPv4 or IPv6 alike.
    ///
    /// Scope defaults to universe with a gateway and link without one, as `ip route` does.
    /// The kernel refuses a gateway that no connected route reaches (`ENETUNREACH`), and any
    /// route through a link that is down (`ENETDOWN`): add routes after the addresses and
    /// after bringing the link up.
    ///
    /// # Errors
    /// What the kernel refuses.
    pub async fn add_route(&self, index: u32, route: &RouteConfig) -> Result<(), NetError> {
        let action = format!("adding route {}", describe_route(route));
        let invalid = |e: String| {
            NetError::new(
                action.clone(),
                &self.label,
                io::Error::new(io::ErrorKind::InvalidInput, e),
            )
        };
        let dest = route.destination;
        let mut builder = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(dest.addr(), dest.prefix_len())
            .map_err(|e| invalid(e.to_string()))?
            .output_interface(index);
        if let Some(gateway) = route.gateway {
            builder = builder
                .gateway(gateway)
                .map_err(|e| invalid(e.to_string()))?;
        }
        if let Some(source) = route.source {
            builder = builder
                .pref_source(source)
                .map_err(|e| invalid(e.to_string()))?;
        }
        if let Some(table) = route.table {
            builder = builder.table_id(table);
        }
        let scope = match route.scope {
            Some(RouteScope::Universe) => KernelScope::Universe,
            Some(RouteScope::Link) => KernelScope::Link,
            Some(RouteScope::Host) => KernelScope::Host,
            None if route.gateway.is_some() => KernelScope::Universe,
            None => KernelScope::Link,
        };
        let msg = builder.scope(scope).build();
        self.ack(
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
        .await
        .map_err(|e| NetError::new(action.clone(), &self.label, to_io(e)))
    }

    /// Adds a policy-routing rule; an identical rule already present counts as success.
    /// A rule without `from` and `to` is added for IPv4 and IPv6.
    ///
    /// # Errors
    /// What the kernel refuses.
    pub async fn add_rule(&self, rule: &RuleConfig) -> Result<(), NetError> {
        for msg in rule_messages(rule) {
            // NLM_F_EXCL: without it the kernel happily adds a duplicate rule.
            match self
                .ack(RouteNetlinkMessage::NewRule(msg), NLM_F_CREATE | NLM_F_EXCL)
                .await
            {
                Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -nix::libc::EEXIST => {}
                other => other.map_err(self.err(format!("adding rule {}", describe_rule(rule))))?,
            }
        }
        Ok(())
    }

    /// Deletes a rule added by [`NetHandle::add_rule`]; an absent rule counts as success.
    ///
    /// # Errors
    /// What the kernel refuses.
    pub async fn del_rule(&self, rule: &RuleConfig) -> Result<(), NetError> {
        for msg in rule_messages(rule) {
            match self.ack(RouteNetlinkMessage::DelRule(msg), 0).await {
                Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -nix::libc::ENOENT => {}
                other => {
                    other.map_err(self.err(format!("deleting rule {}", describe_rule(rule))))?
                }
            }
        }
        Ok(())
    }

    /// Adds (or replaces) a permanent neighbour entry on link `index`.
    ///
    /// # Errors
    /// A malformed MAC address, or what the kernel refuses.
    pub async fn add_neighbor(
        &self,
        index: u32,
        neighbor: &NeighborConfig,
    ) -> Result<(), NetError> {
        let action = format!(
            "adding neighbour {} lladdr {}",
            neighbor.address, neighbor.hardware_address
        );
        let mac = parse_mac(&neighbor.hardware_address).ok_or_else(|| {
            NetError::new(
                action.clone(),
                &self.label,
                io::Error::from_raw_os_error(nix::libc::EINVAL),
            )
        })?;
        let mut msg = NeighbourMessage::default();
        msg.header.family = family_of(neighbor.address);
        msg.header.ifindex = index;
        msg.header.state = NeighbourState::Permanent;
        msg.attributes
            .push(NeighbourAttribute::Destination(match neighbor.address {
                IpAddr::V4(v4) => NeighbourAddress::Inet(v4),
                IpAddr::V6(v6) => NeighbourAddress::Inet6(v6),
            }));
        msg.attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac));
        self.ack(
            RouteNetlinkMessage::NewNeighbour(msg),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
        .await
        .map_err(|e| NetError::new(action, &self.label, to_io(e)))
    }

    // ----- sysctls and ethtool -----------------------------------------------------------

    /// Writes the per-interface sysctls of `if_name` under `/proc/sys/net/ipv{4,6}/conf/`.
    ///
    /// `/proc/sys/net` shows the namespace of the task that opens the file, so the files
    /// are written from netclaim's netns thread, inside this handle's namespace.
    ///
    /// # Errors
    /// The first file that cannot be written, named.
    pub async fn set_sysctls(&self, if_name: &str, sysctls: &Sysctls) -> Result<(), NetError> {
        let mut writes: Vec<(String, String)> = Vec::new();
        let v4 = format!("/proc/sys/net/ipv4/conf/{if_name}");
        if let Some(v) = sysctls.arp_ignore {
            writes.push((format!("{v4}/arp_ignore"), v.to_string()));
        }
        if let Some(v) = sysctls.arp_announce {
            writes.push((format!("{v4}/arp_announce"), v.to_string()));
        }
        if let Some(v) = sysctls.forwarding {
            let v = u8::from(v).to_string();
            writes.push((format!("{v4}/forwarding"), v.clone()));
            writes.push((format!("/proc/sys/net/ipv6/conf/{if_name}/forwarding"), v));
        }
        if writes.is_empty() {
            return Ok(());
        }
        let ns = self
            .ns_file
            .try_clone()
            .map_err(|e| NetError::new("duplicating the netns fd", &self.label, e))?;
        let result = in_netns_thread(ns, move || {
            for (path, value) in &writes {
                std::fs::write(path, value).map_err(|e| {
                    io::Error::new(e.kind(), format!("writing {value} to {path}: {e}"))
                })?;
            }
            Ok(())
        })
        .await;
        result.map_err(|e| NetError::new(format!("setting sysctls of {if_name}"), &self.label, e))
    }

    /// Switches ethtool features of `if_name` (e.g. `tx-checksum-ip-generic: false`).
    ///
    /// Runs the `ethtool` program inside this handle's namespace (`nsenter --net` on this
    /// process's open namespace file): the ethtool netlink crate of the rust-netlink family
    /// (0.3) can read features but not set them, and the legacy `SIOCETHTOOL` ioctl would
    /// need `unsafe`. `ethtool -K` fails for unknown names, and for features the device has
    /// fixed when it changed nothing at all; the features are read back, so one the device
    /// kept as it was fails the call too. Both programs run by absolute path with a clean
    /// environment and a time limit ([`crate::exec`]); see [`ethtool_argv`].
    ///
    /// # Errors
    /// A name that starts with `-` (refused before anything runs), `ethtool` or `nsenter`
    /// missing, ethtool's message when it refuses, or the features the device did not take.
    pub async fn set_ethtool_features(
        &self,
        if_name: &str,
        features: &BTreeMap<String, bool>,
    ) -> Result<(), NetError> {
        if features.is_empty() {
            return Ok(());
        }
        let mut args = vec!["-K".to_owned(), if_name.to_owned()];
        for (name, on) in features {
            args.push(name.clone());
            args.push(if *on { "on" } else { "off" }.to_owned());
        }
        let action = format!("setting ethtool features on {if_name}");
        self.run_ethtool(&args)
            .await
            .map_err(|e| NetError::new(action.clone(), &self.label, e))?;
        // `ethtool -K` exits 0 when it changed at least one feature, even if the device
        // kept others as they were (fixed ones): read them back.
        let now = self.ethtool_features(if_name, features.keys()).await?;
        let refused: Vec<String> = features
            .iter()
            .filter(|(name, on)| now.get(*name) != Some(*on))
            .map(|(name, on)| format!("{name} {}", if *on { "on" } else { "off" }))
            .collect();
        if refused.is_empty() {
            return Ok(());
        }
        Err(NetError::new(
            action,
            &self.label,
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "ethtool: the device refused {} (a feature it has fixed, or one that \
                     depends on another)",
                    refused.join(", ")
                ),
            ),
        ))
    }

    /// The current values of the ethtool features `names` of `if_name`.
    ///
    /// # Errors
    /// `ethtool` missing or failing, or a name the device does not have.
    pub async fn ethtool_features(
        &self,
        if_name: &str,
        names: impl Iterator<Item = &String>,
    ) -> Result<BTreeMap<String, bool>, NetError> {
        let action = format!("reading ethtool features of {if_name}");
        let output = self
            .run_ethtool(&["-k".to_owned(), if_name.to_owned()])
            .await
            .map_err(|e| NetError::new(action.clone(), &self.label, e))?;
        let current = parse_ethtool_features(&output);
        names
            .map(|name| match current.get(name) {
                Some(on) => Ok((name.clone(), *on)),
                None => Err(NetError::new(
                    action.clone(),
                    &self.label,
                    io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("no ethtool feature {name:?}"),
                    ),
                )),
            })
            .collect()
    }

    async fn run_ethtool(&self, args: &[String]) -> io::Result<String> {
        // The namespace file stays open in this process; /proc/<pid>/fd/<n> names it for
        // the child even though the descriptor itself is close-on-exec.
        let netns = PathBuf::from(format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            self.ns_file.as_raw_fd()
        ));
        let tools = crate::exec::host_tools();
        let invalid = |why: String| io::Error::new(io::ErrorKind::InvalidInput, why);
        let nsenter = tools.nsenter.as_ref().map_err(|why| invalid(why.clone()))?;
        let ethtool = tools.ethtool.as_ref().map_err(|why| invalid(why.clone()))?;
        let argv = ethtool_argv(ethtool, &netns, args).map_err(invalid)?;
        let output = crate::exec::run_tool(nsenter, &argv).await?;
        if output.status.success() {
            return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stdout = String::from_utf8_lossy(&output.stdout);
        let message = format!("{} {}", stderr.trim(), stdout.trim())
            .trim()
            .replace('\n', "; ");
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("ethtool: {message}"),
        ))
    }
}

/// The arguments of `nsenter` to run `ethtool` with `args` inside the network namespace
/// `netns`: `--net=<netns> -- <ethtool> <args>`. `args` is ethtool's mode option (`-K`,
/// `-k`) and then operands that come from configuration (the interface name, feature
/// names, `on`/`off`): none of those may start with `-` ([`crate::exec::check_operand`]).
/// ethtool has no `--` of its own; its operands are read by position after the mode.
///
/// # Errors
/// Which operand was refused.
///
/// # Example
/// ```
/// use std::path::Path;
/// use netclaim::netlink::ethtool_argv;
/// let argv = ethtool_argv(Path::new("/usr/sbin/ethtool"), Path::new("/proc/1/fd/7"),
///     &["-K".into(), "net1".into(), "rx-gro-hw".into(), "off".into()]).unwrap();
/// assert_eq!(argv, ["--net=/proc/1/fd/7", "--", "/usr/sbin/ethtool", "-K", "net1", "rx-gro-hw", "off"]);
/// assert!(ethtool_argv(Path::new("/usr/sbin/ethtool"), Path::new("/proc/1/fd/7"),
///     &["-K".into(), "-s".into()]).is_err());
/// ```
pub fn ethtool_argv(
    ethtool: &Path,
    netns: &Path,
    args: &[String],
) -> Result<Vec<std::ffi::OsString>, String> {
    let Some((mode, operands)) = args.split_first() else {
        return Err("no ethtool mode given".to_owned());
    };
    if !matches!(mode.as_str(), "-k" | "-K") {
        return Err(format!("ethtool mode {mode:?} is not one netclaim runs"));
    }
    for (index, operand) in operands.iter().enumerate() {
        let what = match (index, mode.as_str()) {
            (0, _) => "interface name",
            (i, "-K") if i % 2 == 1 => "ethtool feature name",
            _ => "ethtool feature value",
        };
        crate::exec::check_operand(what, operand)?;
    }
    let mut net = std::ffi::OsString::from("--net=");
    net.push(netns.as_os_str());
    let mut argv = vec![net, "--".into(), ethtool.as_os_str().to_owned()];
    argv.extend(args.iter().map(std::ffi::OsString::from));
    Ok(argv)
}

/// Parses `ethtool -k` output: `name: on|off [fixed]` lines, after a header line.
pub fn parse_ethtool_features(output: &str) -> BTreeMap<String, bool> {
    output
        .lines()
        .filter_map(|line| {
            let (name, rest) = line.trim().split_once(": ")?;
            let value = rest.split_whitespace().next()?;
            match value {
                "on" => Some((name.to_owned(), true)),
                "off" => Some((name.to_owned(), false)),
                _ => None,
            }
        })
        .collect()
}

/// Builds the snapshot of `link` with `addresses`.
pub fn snapshot_of(link: &Link, addresses: Vec<IpNet>) -> LinkSnapshot {
    LinkSnapshot {
        if_name: link.name.clone(),
        if_index: link.index,
        mtu: link.mtu,
        mac: link.mac.clone(),
        up: link.up,
        alias: link.alias.clone(),
        addresses,
        kind: link.kind.clone(),
        ethtool_features: BTreeMap::new(),
    }
}

fn permanent_address(msg: &AddressMessage) -> Option<IpNet> {
    let mut local = None;
    let mut address = None;
    let mut flags = None;
    for attr in &msg.attributes {
        match attr {
            AddressAttribute::Local(ip) => local = Some(*ip),
            AddressAttribute::Address(ip) => address = Some(*ip),
            AddressAttribute::Flags(f) => flags = Some(f.bits()),
            _ => {}
        }
    }
    // IFA_LOCAL is the interface's own address on point-to-point links; IFA_ADDRESS then
    // is the peer. Without IFA_LOCAL (IPv6), IFA_ADDRESS is the address.
    let ip = local.or(address)?;
    let flags = flags.unwrap_or(u32::from(msg.header.flags.bits()));
    let permanent = flags & 0x80 != 0; // IFA_F_PERMANENT
    let link_local_v6 = matches!(ip, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80);
    if !permanent || link_local_v6 {
        return None;
    }
    IpNet::new(ip, msg.header.prefix_len).ok()
}

fn family_of(ip: IpAddr) -> AddressFamily {
    if ip.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    }
}

fn rule_messages(rule: &RuleConfig) -> Vec<RuleMessage> {
    let family = rule.from.or(rule.to).map(|n| family_of(n.addr()));
    let families = match family {
        Some(f) => vec![f],
        None => vec![AddressFamily::Inet, AddressFamily::Inet6],
    };
    families
        .into_iter()
        .map(|family| {
            let mut msg = RuleMessage::default();
            msg.header.family = family;
            msg.header.action = RuleAction::ToTable;
            // Tables above 255 only fit in FRA_TABLE; the header then says "unspec".
            msg.header.table = u8::try_from(rule.table).unwrap_or(0);
            msg.attributes.push(RuleAttribute::Table(rule.table));
            if let Some(priority) = rule.priority {
                msg.attributes.push(RuleAttribute::Priority(priority));
            }
            if let Some(from) = rule.from {
                msg.header.src_len = from.prefix_len();
                msg.attributes.push(RuleAttribute::Source(from.network()));
            }
            if let Some(to) = rule.to {
                msg.header.dst_len = to.prefix_len();
                msg.attributes
                    .push(RuleAttribute::Destination(to.network()));
            }
            msg
        })
        .collect()
}

fn describe_route(route: &RouteConfig) -> String {
    let mut text = route.destination.to_string();
    if let Some(gw) = route.gateway {
        text.push_str(&format!(" via {gw}"));
    }
    if let Some(src) = route.source {
        text.push_str(&format!(" src {src}"));
    }
    if let Some(table) = route.table {
        text.push_str(&format!(" table {table}"));
    }
    text
}

fn describe_rule(rule: &RuleConfig) -> String {
    let mut text = String::new();
    if let Some(p) = rule.priority {
        text.push_str(&format!("priority {p} "));
    }
    if let Some(from) = rule.from {
        text.push_str(&format!("from {from} "));
    }
    if let Some(to) = rule.to {
        text.push_str(&format!("to {to} "));
    }
    text.push_str(&format!("table {}", rule.table));
    text
}

/// Runs `work` on netclaim's netns thread after entering the network namespace `ns`, and
/// returns its result without blocking the async runtime.
///
/// Why a dedicated thread: `setns` changes the namespace of the calling thread only, and a
/// runtime worker (or a pooled blocking thread) that changed namespace would silently run
/// later, unrelated work in the wrong namespace. The netns thread runs nothing but these
/// jobs, one at a time, and goes back to its home namespace after each: a thread parked in
/// a pod's namespace would keep that namespace, and the virtual devices in it, alive
/// after the pod is gone. If it cannot go back, it ends (taking the namespace with it) and
/// the next job starts a fresh one. Reusing one thread instead of spawning one per job
/// saves a thread creation (0.1-0.3 ms, more on a loaded node) per attach.
pub(crate) async fn in_netns_thread<T: Send + 'static>(
    ns: File,
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    submit(Box::new(move || {
        let result = setns(ns.as_fd(), CloneFlags::CLONE_NEWNET)
            .map_err(io::Error::from)
            .and_then(|()| work());
        // The receiver only goes away if the caller was cancelled; nothing to report.
        let _ = tx.send(result);
    }))?;
    rx.await
        .unwrap_or_else(|_| Err(io::Error::other("netns thread ended without a result")))
}

type Job = Box<dyn FnOnce() + Send + 'static>;

static NETNS_THREAD: Mutex<Option<mpsc::Sender<Job>>> = Mutex::new(None);

/// Hands `job` to the netns thread, starting one if there is none (or the last one ended).
fn submit(job: Job) -> io::Result<()> {
    let mut thread = NETNS_THREAD.lock().unwrap_or_else(PoisonError::into_inner);
    let job = match thread.as_ref() {
        Some(jobs) => match jobs.send(job) {
            Ok(()) => return Ok(()),
            Err(mpsc::SendError(job)) => job,
        },
        None => job,
    };
    let (jobs, queue) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("netclaim-netns".into())
        .spawn(move || run_netns_thread(queue))?;
    jobs.send(job)
        .map_err(|_| io::Error::other("the netns thread ended at once"))?;
    *thread = Some(jobs);
    Ok(())
}

fn run_netns_thread(queue: mpsc::Receiver<Job>) {
    // The namespace this thread was born in: the process's, as the thread spawning it is a
    // runtime thread that never changes namespace.
    let Ok(home) = File::open("/proc/thread-self/ns/net") else {
        return;
    };
    while let Ok(job) = queue.recv() {
        job();
        if setns(home.as_fd(), CloneFlags::CLONE_NEWNET).is_err() {
            return;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn argv(args: &[&str]) -> Result<Vec<String>, String> {
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        ethtool_argv(
            Path::new("/usr/sbin/ethtool"),
            Path::new("/proc/9/fd/3"),
            &args,
        )
        .map(|v| {
            v.into_iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect()
        })
    }

    #[test]
    fn ethtool_runs_by_absolute_path_after_nsenters_double_dash() {
        assert_eq!(
            argv(&["-k", "net1"]).unwrap(),
            [
                "--net=/proc/9/fd/3",
                "--",
                "/usr/sbin/ethtool",
                "-k",
                "net1"
            ]
        );
    }

    #[test]
    fn operands_that_would_be_options_are_refused_naming_them() {
        let error = argv(&["-K", "-s", "rx-gro-hw", "off"]).unwrap_err();
        assert_eq!(
            error,
            "the interface name \"-s\" starts with '-', which a tool would read as an option; refused"
        );
        let error = argv(&["-K", "net1", "--offline", "on"]).unwrap_err();
        assert!(
            error.starts_with("the ethtool feature name \"--offline\" starts with '-'"),
            "{error}"
        );
        let error = argv(&["-K", "net1", "rx-gro-hw", "-x"]).unwrap_err();
        assert!(
            error.starts_with("the ethtool feature value \"-x\""),
            "{error}"
        );
        let error = argv(&["--flash", "net1"]).unwrap_err();
        assert!(error.contains("not one netclaim runs"), "{error}");
    }
}
