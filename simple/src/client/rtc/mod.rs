//! WebRTC DataChannels for a [`Member`](super::Member): one link per peer
//! and group, negotiated over the server's `relay` exactly as the browsers'
//! client does (`interfaces/api.d.ts`, "Peer-to-peer payloads"), so a Rust
//! member and a browser, or two Rust members, talk directly.
//!
//! The WebRTC stack is [str0m]: sans-IO, so each link is one tokio task
//! that owns its `Rtc`, its UDP sockets (one host candidate per address of
//! the machine) and the route of every message to its peer. Host
//! candidates only: peers behind different NATs fall back to the relay.
//!
//! [str0m]: https://docs.rs/str0m

mod frame;
mod link;

use std::fmt;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::pin::Pin;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use dashmap::DashMap;
use jsonrpsee::types::ErrorObjectOwned;
use serde::{Deserialize, Serialize};
use webrtc_p2p_interfaces::{GroupId, UserId};

pub(crate) use link::{Job, Outgoing, local};

use super::Client;
use super::payload::{Body, Signal};
use super::transfer::Meter;
use link::{Context, Link};

/// How long a link may stay `connecting` by default before it is relayed
/// (the browsers' `DEFAULT_CONNECT_TIMEOUT_MS`).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a unicast sent on a DataChannel waits for its reply by default
/// (the browsers' `DEFAULT_UNICAST_TIMEOUT_MS`).
pub const DEFAULT_UNICAST_TIMEOUT: Duration = Duration::from_secs(10);

/// The state of the link to one peer, as the browsers name it (`LinkState`
/// in `api.d.ts`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkState {
    /// Negotiating: messages wait until the link is direct or relayed.
    Connecting,
    /// On a DataChannel.
    Direct,
    /// Through the server's relay, for good: P2P failed, timed out, died, or
    /// the peer (or this member) has no WebRTC.
    Relayed,
    /// No link: not a member, or one the capability does not allow.
    Closed,
}

impl fmt::Display for LinkState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Connecting => "connecting",
            Self::Direct => "direct",
            Self::Relayed => "relayed",
            Self::Closed => "closed",
        })
    }
}

/// How a [`Member`](super::Member) makes direct links; see
/// [`MemberBuilder::rtc`](super::MemberBuilder::rtc).
#[derive(Debug, Clone)]
pub struct RtcConfig {
    /// How long a link may stay `connecting` before it is relayed.
    pub connect_timeout: Duration,
    /// How long a unicast sent on a DataChannel waits for its reply.
    pub unicast_timeout: Duration,
    /// The addresses to offer as host candidates; `None`: every address of
    /// the machine's interfaces but loopback and link-local ones, or
    /// loopback when there is no other.
    pub host_addresses: Option<Vec<IpAddr>>,
    /// Test hook: exchange no ICE candidates, so P2P cannot connect and
    /// every link ends up relayed after `connect_timeout`.
    pub block_candidates: bool,
}

impl Default for RtcConfig {
    fn default() -> Self {
        Self {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            unicast_timeout: DEFAULT_UNICAST_TIMEOUT,
            host_addresses: None,
            block_candidates: false,
        }
    }
}

impl RtcConfig {
    /// The addresses to bind, one host candidate each.
    fn host_addresses(&self) -> Vec<IpAddr> {
        if let Some(addresses) = &self.host_addresses {
            return addresses.clone();
        }
        let interfaces = if_addrs::get_if_addrs().unwrap_or_default();
        let usable: Vec<IpAddr> = interfaces
            .iter()
            .map(|interface| interface.ip())
            .filter(|ip| {
                !ip.is_loopback()
                    && !ip.is_unspecified()
                    && match ip {
                        IpAddr::V4(v4) => !v4.is_link_local(),
                        // Link-local IPv6 needs a scope id a candidate cannot carry.
                        IpAddr::V6(v6) => !v6.is_unicast_link_local(),
                    }
            })
            .collect();
        if usable.is_empty() { vec![IpAddr::V4(Ipv4Addr::LOCALHOST)] } else { usable }
    }
}

/// A boxed future, for the object-safe [`Inbound`].
pub(crate) type Answer = Pin<Box<dyn Future<Output = Result<Body, ErrorObjectOwned>> + Send>>;

/// A broadcast on its way to the handler: links await each one, so they
/// arrive in the order sent.
pub(crate) type Delivered = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Where links deliver what their peers send: the member's handler, behind
/// the group's capability.
pub(crate) trait Inbound: Send + Sync + 'static {
    fn broadcast(&self, group_id: GroupId, from: UserId, body: Body) -> Delivered;
    fn unicast(&self, group_id: GroupId, from: UserId, body: Body) -> Answer;
    fn link_state(&self, group_id: GroupId, peer: UserId, state: LinkState);
}

/// What links need from the member, known once it is connected.
struct Started {
    me: UserId,
    client: Weak<Client>,
    inbound: Arc<dyn Inbound>,
}

/// A member's links, one per group and peer.
pub(crate) struct Mesh {
    config: Arc<RtcConfig>,
    /// The largest message a link takes (the member's `max_message_bytes`).
    max_message_bytes: usize,
    /// Where the links' incoming transfers count themselves.
    meter: Meter,
    started: OnceLock<Started>,
    links: DashMap<(GroupId, UserId), Link>,
}

impl fmt::Debug for Mesh {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mesh").field("config", &self.config).field("links", &self.links.len()).finish()
    }
}

impl Mesh {
    pub(crate) fn new(config: RtcConfig, max_message_bytes: usize, meter: Meter) -> Self {
        Self { config: Arc::new(config), max_message_bytes, meter, started: OnceLock::new(), links: DashMap::new() }
    }

    /// Called once, when `init` has answered.
    pub(crate) fn start(&self, me: UserId, client: Weak<Client>, inbound: Arc<dyn Inbound>) {
        let _ = self.started.set(Started { me, client, inbound });
    }

    /// Opens a link to each of `peers` that has none, and closes this
    /// group's links to anyone else.
    pub(crate) fn reconcile(&self, group_id: GroupId, peers: &[UserId]) {
        let Some(started) = self.started.get() else { return };
        self.links.retain(|&(group, peer), _| group != group_id || peers.contains(&peer));
        for &peer in peers.iter().filter(|&&peer| peer != started.me) {
            self.links.entry((group_id, peer)).or_insert_with(|| {
                Link::open(Context {
                    group_id,
                    me: started.me,
                    peer,
                    config: self.config.clone(),
                    client: started.client.clone(),
                    inbound: started.inbound.clone(),
                    max_message_bytes: self.max_message_bytes,
                    meter: self.meter.clone(),
                })
            });
        }
    }

    /// Closes every link of `group_id`, or of every group.
    pub(crate) fn close(&self, group_id: Option<GroupId>) {
        self.links.retain(|&(group, _), _| group_id.is_some_and(|g| g != group));
    }

    /// Hands a signal from `from` to its link, if there is one.
    pub(crate) fn signal(&self, group_id: GroupId, from: UserId, signal: Signal) {
        if let Some(link) = self.links.get(&(group_id, from)) {
            link.signal(signal);
        }
    }

    /// Sends a message on the link to `peer`; gives it back when there is no link.
    pub(crate) fn send(&self, group_id: GroupId, peer: UserId, message: Outgoing) -> Result<(), Outgoing> {
        match self.links.get(&(group_id, peer)) {
            Some(link) => {
                link.send(message);
                Ok(())
            }
            None => Err(message),
        }
    }

    pub(crate) fn state(&self, group_id: GroupId, peer: UserId) -> LinkState {
        self.links.get(&(group_id, peer)).map_or(LinkState::Closed, |link| link.state())
    }
}
