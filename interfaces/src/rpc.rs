//! The two `#[rpc]` traits: what clients call on the server ([`Signaling`]) and
//! what the server calls on clients ([`Peer`]). jsonrpsee generates from each a
//! server trait (`SignalingServer`, `PeerServer`) and client stubs
//! (`SignalingClient`, `PeerClient`) that work on anything implementing
//! jsonrpsee's `ClientT`.

use jsonrpsee::core::RpcResult;
use jsonrpsee::proc_macros::rpc;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::{Capability, GroupId, UserId};

/// Method names on the wire, one constant each so that logs, metrics and
/// hand-built frames never spell them differently from the traits.
pub mod method {
    /// Client → server: get a user id.
    pub const INIT: &str = "init";
    /// Client → server: make a group.
    pub const CREATE: &str = "create";
    /// Client → server: enter a group.
    pub const JOIN: &str = "join";
    /// Client → server: leave a group.
    pub const LEAVE: &str = "leave";
    /// Client → server: list a group's members.
    pub const GET_MEMBERS: &str = "get_members";
    /// Both directions: pass `data` to another member and bring back its answer.
    pub const RELAY: &str = "relay";
    /// Server → client notification: someone joined one of your groups.
    pub const MEMBER_JOINED: &str = "member_joined";
    /// Server → client notification: someone left one of your groups.
    pub const MEMBER_LEFT: &str = "member_left";
    /// Client → server: the session's facts (resume ticket, ICE servers).
    pub const SESSION: &str = "session";
    /// Client → server, first call of a new connection: take a suspended
    /// session over.
    pub const RESUME: &str = "resume";
    /// Both directions, a notification `{"id": …}`: the sender no longer
    /// wants the answer to its request with that id (LSP's name). From a
    /// client it ends a pending `relay`; from the server it tells the target
    /// of that relay, naming the server's request id.
    pub const CANCEL_REQUEST: &str = "$/cancelRequest";
    /// Client → server: the OpenRPC document of the protocol.
    pub const DISCOVER: &str = "rpc.discover";
}

/// The answer to `join`: who owns the group and what it allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct JoinResult {
    /// The group's owner (always first in `get_members`).
    pub owner: UserId,
    /// The group's capability.
    pub capability: Capability,
}

/// The answer to `session`: what a client needs to resume this session on
/// a new connection and to reach its peers through NATs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct SessionFacts {
    /// The caller's user id, the same as `init` answered.
    pub user_id: UserId,
    /// Opaque; `resume` takes it. Valid for 10 × `resume_window_ms` from
    /// now (older tickets stay valid until they expire), so clients call
    /// `session` again before half of that has passed.
    pub resume_ticket: String,
    /// How long a dropped connection's session waits to be resumed, in
    /// milliseconds; 0 when the server does not resume sessions.
    #[cfg_attr(test, ts(type = "number"))]
    pub resume_window_ms: u64,
    /// `RTCIceServer` objects for `RTCPeerConnection`; empty when the server
    /// knows none.
    pub ice_servers: Vec<IceServer>,
}

/// One `RTCIceServer`: STUN or TURN urls, with TURN credentials when needed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct IceServer {
    /// `stun:`/`turn:`/`turns:` urls; other servers may send a single
    /// string, which reads as a list of one.
    #[serde(deserialize_with = "one_or_many")]
    pub urls: Vec<String>,
    /// The TURN username.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    pub username: Option<String>,
    /// The TURN credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    pub credential: Option<String>,
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Urls {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Urls::deserialize(d)? {
        Urls::One(url) => vec![url],
        Urls::Many(urls) => urls,
    })
}

/// A member and what the app said about it: an element of `get_members`
/// with `"info": true` on a server with an auth secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct MemberInfo {
    /// The member.
    pub user_id: UserId,
    /// The `info` claim of the member's join token; `null` when it had none.
    #[cfg_attr(test, ts(type = "unknown"))]
    pub info: Option<serde_json::Value>,
}

/// What `get_members` answers: the ids alone, or (asked `"info": true` on a
/// server with an auth secret) each member with its `info`. Either way in
/// join order, the owner first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub enum Members {
    /// `[user_id, …]`: what every server answers without `"info": true`.
    Ids(Vec<UserId>),
    /// `[{"user_id", "info"}, …]`.
    WithInfo(Vec<MemberInfo>),
}

impl Members {
    /// The members' ids, in order, whichever form came.
    pub fn ids(&self) -> Vec<UserId> {
        match self {
            Self::Ids(ids) => ids.clone(),
            Self::WithInfo(members) => members.iter().map(|m| m.user_id).collect(),
        }
    }
}

/// The answer to `resume`: the session is back on this connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct ResumeResult {
    /// The session's user id, unchanged.
    pub user_id: UserId,
    /// The groups the user is still in.
    pub groups: Vec<GroupId>,
    /// How many messages the server has received from the client on this
    /// session (the counting rule of `resume`'s `received`): the client sends
    /// again every message after that many.
    #[cfg_attr(test, ts(type = "number"))]
    pub received: u64,
    /// `true`: the server now sends again, in order, every message after the
    /// client's `received`. `false`: it no longer held them all (its resume
    /// buffer overflowed); messages in between may be lost, so the client
    /// refreshes what it knows (`get_members`).
    pub replayed: bool,
}

/// Client → server. Parameters may be sent by position or by name (the
/// names of the Rust parameters below). Every method but `init` requires
/// `init` first.
///
/// The server's implementation reads the caller's connection from `ext`
/// (hence `with_extensions`); the generated `SignalingClient` stubs take only
/// the parameters.
#[rpc(server, client)]
pub trait Signaling {
    /// Registers the connection and returns the caller's user id. Answered
    /// once per connection; a second call is `AlreadyInitialized`.
    ///
    /// On a server with an auth secret, `token` is required: a JWT (HS256)
    /// whose claims say what this user may do; a missing or invalid one is
    /// `Unauthorized`, and the connection may try again until its init
    /// timeout. Without an auth secret it is ignored.
    #[method(name = "init", with_extensions)]
    async fn init(&self, token: Option<String>) -> RpcResult<UserId>;

    /// Makes a group with the caller as owner and first member.
    /// `capability` defaults to [`Capability::DEFAULT`].
    #[method(name = "create", with_extensions)]
    async fn create(&self, capability: Option<Capability>) -> RpcResult<GroupId>;

    /// Enters a group; joining one you are in succeeds and changes nothing.
    /// Every other member gets `member_joined`.
    #[method(name = "join", with_extensions)]
    async fn join(&self, group_id: GroupId) -> RpcResult<JoinResult>;

    /// Leaves a group. Every remaining member gets `member_left`; the
    /// earliest-joined remaining member becomes owner if the owner left.
    #[method(name = "leave", with_extensions)]
    async fn leave(&self, group_id: GroupId) -> RpcResult<()>;

    /// The group's members in join order, the caller included, owner first.
    /// With `info: Some(true)` on a server with an auth secret, each with its
    /// `info` ([`Members::WithInfo`]); otherwise the ids.
    #[method(name = "get_members", with_extensions)]
    async fn get_members(&self, group_id: GroupId, info: Option<bool>) -> RpcResult<Members>;

    /// Sends `data` to `user_id` (a member of `group_id`) through the server,
    /// which calls `relay` on the target with the caller's id stamped as the
    /// sender; the target's answer (result or error) is returned unchanged.
    /// Sent as a notification, it is forwarded as a notification.
    #[method(name = "relay", with_extensions)]
    async fn relay(&self, group_id: GroupId, user_id: UserId, data: Box<RawValue>) -> RpcResult<Box<RawValue>>;

    /// The session's facts, with a fresh resume ticket. Callable any time
    /// after `init` (or `resume`); a session whose client never called it
    /// ends with its connection, as in v1.
    #[method(name = "session", with_extensions)]
    async fn session(&self) -> RpcResult<SessionFacts>;

    /// Takes over the suspended (or still connected) session `ticket` names;
    /// only as a new connection's first call, alone (not in a batch).
    /// `received` counts the messages the client got from the server on
    /// that session. A bad, expired or foreign ticket, or a session that is
    /// over, is `ResumeFailed`.
    #[method(name = "resume", with_extensions)]
    async fn resume(&self, ticket: String, received: u64) -> RpcResult<ResumeResult>;

    /// Cancels the caller's pending `relay` request whose id is `id` (sent
    /// as a notification, as LSP's `$/cancelRequest`): the relay is answered
    /// at once with `RequestCancelled`, its slot among the caller's relays in
    /// flight is free again, and the target gets `$/cancelRequest` naming the
    /// request it was sent. An id with no pending relay changes nothing.
    #[method(name = "$/cancelRequest", with_extensions)]
    async fn cancel_request(&self, id: Box<RawValue>) -> RpcResult<()>;

    /// The protocol's OpenRPC document ([`crate::OPENRPC`]); needs no `init`.
    #[method(name = "rpc.discover")]
    async fn discover(&self) -> RpcResult<Box<RawValue>>;
}

/// Server → client. `relay` is a request the client answers; the member
/// notifications are sent as JSON-RPC notifications (no id), so a client
/// implementing `PeerServer` returns `Ok(())` and nothing goes on the wire.
#[rpc(server, client)]
pub trait Peer {
    /// Another member relayed `data` to you; your answer (result or error)
    /// goes back to them unchanged.
    #[method(name = "relay")]
    async fn on_relay(&self, group_id: GroupId, from_user_id: UserId, data: Box<RawValue>) -> RpcResult<Box<RawValue>>;

    /// `user_id` joined `group_id` (sent to every other member). On a server
    /// with an auth secret, `info` is the joiner's `info` claim (`null` when
    /// it had none); other servers send no third param (`None`).
    #[method(name = "member_joined")]
    async fn member_joined(&self, group_id: GroupId, user_id: UserId, info: Option<serde_json::Value>)
    -> RpcResult<()>;

    /// `user_id` left `group_id`, or disconnected (sent to every remaining member).
    #[method(name = "member_left")]
    async fn member_left(&self, group_id: GroupId, user_id: UserId) -> RpcResult<()>;
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    #[test]
    fn members_read_as_ids_or_with_info() {
        let u = UserId::from_u128(1);
        let ids: Members = serde_json::from_value(json!([u])).unwrap();
        assert_eq!(ids, Members::Ids(vec![u]));
        let with: Members = serde_json::from_value(json!([{"user_id": u, "info": {"n": 1}}])).unwrap();
        assert_eq!(with, Members::WithInfo(vec![MemberInfo { user_id: u, info: Some(json!({"n": 1})) }]));
        assert_eq!(with.ids(), ids.ids());
    }

    /// Each `#[method]` of `trait_name` as this file declares it: the wire
    /// name and the parameter names, in order.
    fn declared(trait_name: &str) -> Vec<(String, Vec<String>)> {
        let source = include_str!("rpc.rs");
        let body = source.split(&format!("pub trait {trait_name} {{")).nth(1).expect("the trait");
        let body = body.split("\n}\n").next().expect("its body");
        body.split("#[method(name = \"")
            .skip(1)
            .map(|method| {
                let (name, rest) = method.split_once('"').expect("a quoted name");
                let params = rest.split_once("(&self").expect("a method taking &self").1;
                let params = &params[..params.find("->").expect("a return type")];
                let params = &params[..params.rfind(')').expect("the parameters' end")];
                let names = params.split(',').filter_map(|p| p.split_once(':')).map(|(n, _)| n.trim().to_owned());
                (name.to_owned(), names.collect())
            })
            .collect()
    }

    /// The same of a list of OpenRPC method objects.
    fn documented(methods: &Value) -> Vec<(String, Vec<String>)> {
        let name = |v: &Value| v["name"].as_str().expect("a name").to_owned();
        let methods = methods.as_array().expect("a list of methods");
        methods.iter().map(|m| (name(m), m["params"].as_array().expect("params").iter().map(name).collect())).collect()
    }

    #[test]
    fn the_openrpc_document_lists_every_method_of_the_traits_with_its_parameters() {
        let document: Value = serde_json::from_str(crate::OPENRPC).expect("openrpc.json is JSON");
        let signaling = declared("Signaling");
        assert!(signaling.len() >= 8 && declared("Peer").len() >= 3, "the parser found {signaling:?}");
        assert_eq!(documented(&document["methods"]), signaling, "interfaces/openrpc.json `methods` vs Signaling");
        assert_eq!(documented(&document["x-client-methods"]), declared("Peer"), "`x-client-methods` vs Peer");
        let errors = document["components"]["errors"].as_object().expect("errors");
        for code in crate::ErrorCode::ALL {
            assert_eq!(errors[code.name()]["code"], code.code(), "{code:?} in components/errors");
            assert_eq!(errors[code.name()]["message"], code.to_string(), "{code:?} in components/errors");
        }
        assert_eq!(errors.len(), crate::ErrorCode::ALL.len());
    }
}
