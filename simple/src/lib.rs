//! webrtc-p2p's simple full-mesh implementation, Rust half: the group logic
//! and relay routing the server runs (no sockets in them), and the JSON-RPC
//! framing both ends share.
//!
//! # Layout
//! - `hub`: `Hub`, the `Signaling` methods over a router, `Session` (one
//!   session's signaling state) and `Access` (join tokens, ICE servers);
//!   `Hub::start_relay`, the relay hot path that skips the method table and
//!   answers exactly as it would.
//! - `auth`: join tokens: `TokenVerifier` (HS256 JWTs), `Claims`, `Grants`.
//! - `ice`: `IceConfig`, the STUN/TURN servers and TURN REST credentials.
//! - `router`: `Router`, what the hub needs from the rest of the service
//!   (users' sessions, delivery through a `Target`, group state), and
//!   `LocalRouter`, all of it in this process's memory.
//! - `group`: one group's members in join order, ownership, which pairs
//!   may relay (`Capability::allows_pair` from the contract),
//!   as `LocalRouter` keeps it.
//! - `peer`: `PeerHandle`, a client as the server sees it: bounded outgoing
//!   queue, calls waiting for answers; what a resumable session keeps for
//!   replay.
//! - `ticket`: `ResumeKey`, the signed resume tickets.
//! - `wire`: JSON-RPC frames: classify incoming, build outgoing, start a
//!   request in a jsonrpsee method table.
//! - `dispatch`: `Dispatch`, what one end of a connection does with each
//!   frame it reads (rate limit, start (a server's relays through
//!   `Hub::start_relay`), spawn, batches, requests running, error codes),
//!   for the server's connections, the client's transport and
//!   the fuzz target alike; `Endpoint`, where its answers go.
//! - `limits`: `Limits`, every limit and its default; `Limit`, the one that
//!   refused something; `RateLimiter`.
//! - `memory`: `MemoryBudget`, the bytes the whole server holds for its
//!   clients, and what it refuses past `--max-memory`.
//! - `observe`: `Observer`, how the hub and the dispatch report relay
//!   outcomes, error answers and refusals (the server's metrics).
//! - `client`: `Client`, a Rust program as a group member: the generated
//!   `SignalingClient` stubs over jsonrpsee's client, relays answered by a
//!   `PeerServer` handler (`client/transport`: the WebSocket under it).
//!   `client::payload`: the browsers' relay payloads (re-exported from
//!   `webrtc_p2p_interfaces::payload`);
//!   `client::Member` (`client/member`): a member browsers talk to, in those
//!   payloads, on WebRTC DataChannels (`client/rtc`: str0m links, one tokio
//!   task each) or over the server's relay.

pub mod auth;
pub mod client;
mod dispatch;
mod group;
mod hub;
pub mod ice;
mod limits;
mod memory;
mod observe;
mod peer;
mod router;
mod ticket;
pub mod wire;

pub use client::{
    Client, ClientBuilder, ConnectError, ConnectionState, Disconnected, Member, MemberBuilder, MemberHandler, app_error,
};
pub use dispatch::{Dispatch, Endpoint, Running};
pub use hub::{Access, Hub, HubStats, Session};
pub use limits::{Limit, Limits, RateLimiter};
pub use memory::MemoryBudget;
pub use observe::{Observer, RelayOutcome, ResumeFailure, SessionEvent};
pub use peer::{Answer, AnswerRef, Attached, CallFailed, CloseReason, PeerHandle, Position, Then};
pub use router::{Arrival, Callee, Departure, Entrant, Introduction, Joined, LocalRouter, Router, Sessions, Target};
pub use ticket::{ResumeKey, Ticket, TicketError};
