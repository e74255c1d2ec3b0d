//! The webrtc-p2p wire contract, expressed once for Rust. The protocol page,
//! `interfaces/README.md`, says the same in words; `interfaces/api.d.ts` is
//! the TypeScript client API.
//!
//! # Layout
//! - `rpc`: the `Signaling` (client → server) and `Peer` (server → client)
//!   `#[rpc]` traits, method names, and their results (`JoinResult`,
//!   `SessionFacts`, `IceServer`, `ResumeResult`).
//! - `ids`: `UserId` and `GroupId`, 128 random bits as 32 lowercase hex digits.
//! - `capability`: `Capability` flags and the pair rule
//!   (`Capability::allows`, per `Exchange` kind).
//! - `error`: `ErrorCode`, one variant per application error code.
//! - `payload`: what clients relay to each other (`RelayPayload`, `Body`),
//!   `NO_WEBRTC` and `MAX_BODY_BYTES`: a convention between clients, not
//!   read by the server.
//! - `OPENRPC`: the protocol as an OpenRPC document (`openrpc.json`), which
//!   the tests hold to the traits.

mod capability;
mod error;
mod ids;
pub mod payload;
mod rpc;
#[cfg(test)]
mod typings;

pub use capability::{Capability, Exchange};
pub use error::ErrorCode;
pub use ids::{GroupId, InvalidId, UserId};
pub use rpc::{
    IceServer, JoinResult, MemberInfo, Members, PeerClient, PeerServer, ResumeResult, SessionFacts, SignalingClient,
    SignalingServer, method,
};

/// The protocol as an OpenRPC 1.3 document: `methods` are what clients call
/// on the server, `x-client-methods` what the server calls on clients. The
/// server serves it at `GET /openrpc.json` and answers `rpc.discover` with it;
/// a test fails when it and the `#[rpc]` traits disagree on a method or a
/// parameter name.
pub const OPENRPC: &str = include_str!("../openrpc.json");

/// The default listen address of the server.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:3001";

/// The path of the WebSocket endpoint.
pub const WS_PATH: &str = "/ws";
