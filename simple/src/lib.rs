//! webrtc-p2p's simple full-mesh implementation, Rust half: the group logic
//! and relay routing the server runs (no sockets in them), and the JSON-RPC
//! framing both ends share.
//!
//! # Layout
//! - `hub`: `Hub` (users, groups, the `Signaling` methods) and `Session`
//!   (one connection's signaling state).
//! - `group`: one group's members in join order, ownership, the pair rule.
//! - `peer`: `PeerHandle`, a client as the server sees it: bounded outgoing
//!   queue, calls waiting for answers, jsonrpsee `ClientT` for the stubs.
//! - `wire`: JSON-RPC frames: classify incoming, build outgoing, start a
//!   request in a jsonrpsee method table.
//! - `limits`: `Limits`, every limit and its default; `RateLimiter`.
//! - `observe`: `RelayObserver`, how the hub reports each relay's outcome.
//! - `client`: `Client`, a Rust program as a group member: the generated
//!   `SignalingClient` stubs over jsonrpsee's client, relays answered by a
//!   `PeerServer` handler (`client/transport`: the WebSocket under it).
//!   `client::payload`: the browsers' relay payloads as serde types;
//!   `client::Member` (`client/member`): a member browsers talk to, over the
//!   server's relay in those payloads.

pub mod client;
mod group;
mod hub;
mod limits;
mod observe;
mod peer;
pub mod wire;

pub use client::{Client, ClientBuilder, ConnectError, Disconnected, Member, MemberHandler, app_error};
pub use hub::{Hub, HubStats, Session};
pub use limits::{Limits, RateLimiter};
pub use observe::{RelayObserver, RelayOutcome};
pub use peer::{CallFailed, CloseReason, PeerHandle};
