//! The kernel's own link notifications in a namespace: an independent witness of when a
//! link change became visible to anyone listening.
//!
//! A carrier change is not published when `ip link set` returns: the kernel's linkwatch
//! work sends it later, under the RTNL lock that every namespace on the machine shares. On a
//! loaded CI machine (other tests creating and deleting namespaces) that alone can take
//! longer than a second. A test that bounds how fast netclaim reacts starts its clock here,
//! at the notification netclaim reacts to, so it measures netclaim and not the kernel.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use netclaim::discovery::{EventStream, RouteSocket};
use rtnetlink::packet_core::NetlinkPayload;
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};

/// One link notification, reduced to what health depends on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkEvent {
    /// RTM_NEWLINK: the link exists with these flags.
    Changed {
        /// Interface name.
        name: String,
        /// IFF_UP: administratively up.
        up: bool,
        /// IFF_LOWER_UP: the kernel sees a carrier.
        carrier: bool,
    },
    /// RTM_DELLINK: the link is gone.
    Deleted {
        /// Interface name.
        name: String,
    },
}

impl LinkEvent {
    /// The interface the event is about.
    pub fn name(&self) -> &str {
        match self {
            Self::Changed { name, .. } | Self::Deleted { name } => name,
        }
    }
}

/// A netlink socket in one namespace, subscribed to link notifications.
pub struct KernelLinkEvents {
    // Kept so the connection task and its socket live as long as the stream.
    _socket: RouteSocket,
    events: EventStream,
}

impl KernelLinkEvents {
    /// Subscribes in the namespace at `netns_path` (a `/run/netns/<name>` file). The
    /// subscription is in place when this returns: a change made afterwards is seen.
    pub fn subscribe(netns_path: &Path) -> Result<Self> {
        let (socket, events) = RouteSocket::open_watching_in(netns_path)
            .with_context(|| format!("subscribing to link events in {}", netns_path.display()))?;
        Ok(Self {
            _socket: socket,
            events,
        })
    }

    /// Forgets the notifications received so far, so that the next wait sees only what a
    /// change made after this call causes.
    pub fn drain(&mut self) {
        while self.events.try_recv().is_ok() {}
    }

    /// Waits, at most `within`, for a notification about `ifname` that `wanted` accepts;
    /// returns when it arrived.
    pub async fn wait_for(
        &mut self,
        ifname: &str,
        within: Duration,
        mut wanted: impl FnMut(&LinkEvent) -> bool,
    ) -> Result<Instant> {
        let mut last = None;
        let found = tokio::time::timeout(within, async {
            while let Some((message, _)) = self.events.next().await {
                let event = match message.payload {
                    NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => {
                        changed(&link)
                    }
                    NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(link)) => {
                        LinkEvent::Deleted {
                            name: name_of(&link),
                        }
                    }
                    _ => continue,
                };
                if event.name() != ifname {
                    continue;
                }
                if wanted(&event) {
                    return Ok(Instant::now());
                }
                last = Some(event);
            }
            bail!("the netlink event stream ended")
        })
        .await;
        match found {
            Ok(result) => result,
            Err(_) => bail!(
                "the kernel sent no matching notification for {ifname} within {within:?}; \
                 last for it: {last:?}"
            ),
        }
    }
}

fn name_of(link: &LinkMessage) -> String {
    link.attributes
        .iter()
        .find_map(|attr| match attr {
            LinkAttribute::IfName(name) => Some(name.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

fn changed(link: &LinkMessage) -> LinkEvent {
    LinkEvent::Changed {
        name: name_of(link),
        up: link.header.flags.contains(LinkFlags::Up),
        carrier: link.header.flags.contains(LinkFlags::LowerUp),
    }
}
