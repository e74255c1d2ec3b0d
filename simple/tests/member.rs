//! `Member` without WebRTC (`MemberBuilder::no_webrtc`; tests/rtc.rs has
//! the direct links) against the real server, started in this process on
//! 127.0.0.1:0, and against plain `Client`s that stand in for browsers: they
//! see exactly the JSON a `Member` relays and send it exactly what the
//! TypeScript client sends (the shapes of tests/payload.rs).

use std::future::Future;
use std::time::Duration;

use jsonrpsee::core::client::Error;
use jsonrpsee::core::{RpcResult, async_trait};
use jsonrpsee::types::{ErrorObject, ErrorObjectOwned};
use serde_json::value::{RawValue, to_raw_value};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::timeout;
use webrtc_p2p_interfaces::{Capability, ErrorCode, GroupId, PeerServer, SignalingClient, UserId};
use webrtc_p2p_simple::auth::Claims;
use webrtc_p2p_simple::client::payload::{Body, MAX_BODY_BYTES, NO_WEBRTC};
use webrtc_p2p_simple::client::transfer::{DEFAULT_MAX_MESSAGE_BYTES, STALL_TIMEOUT};
use webrtc_p2p_simple::client::{Member, MemberHandler, Progress, Receiving, SendOptions, StartError};
use webrtc_p2p_simple::{Client, app_error};

mod common;
use common::{MIB, TestServer, assert_progress_to};

/// How long any expected event may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(10);

async fn within<F: Future>(what: &str, future: F) -> F::Output {
    timeout(PATIENCE, future).await.unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// What a `Member`'s handler was called with.
#[derive(Debug, Clone, PartialEq)]
enum Heard {
    Broadcast(GroupId, UserId, Body),
    Unicast(GroupId, UserId, Body),
    Joined(GroupId, UserId),
    Left(GroupId, UserId),
}

/// Reports every call; replies to unicasts as the browser tests' pages do:
/// text prefixed with `re:`, bytes reversed, `"throw"` an `InternalError`.
struct Recorder(mpsc::UnboundedSender<Heard>);

impl MemberHandler for Recorder {
    fn on_broadcast(&self, group_id: GroupId, from: UserId, body: Body) {
        let _ = self.0.send(Heard::Broadcast(group_id, from, body));
    }

    async fn on_unicast(&self, group_id: GroupId, from: UserId, body: Body) -> Result<Body, ErrorObjectOwned> {
        let _ = self.0.send(Heard::Unicast(group_id, from, body.clone()));
        match body {
            Body::Text(text) if text == "throw" => Err(ErrorObject::owned(-32603, "failed on purpose", None::<()>)),
            Body::Text(text) => Ok(Body::Text(format!("re:{text}"))),
            Body::Bytes(mut bytes) => {
                bytes.reverse();
                Ok(Body::Bytes(bytes))
            }
        }
    }

    fn on_member_joined(&self, group_id: GroupId, member: UserId) {
        let _ = self.0.send(Heard::Joined(group_id, member));
    }

    fn on_member_left(&self, group_id: GroupId, member: UserId) {
        let _ = self.0.send(Heard::Left(group_id, member));
    }
}

/// A handler with every default: it hears nothing and answers no unicast.
struct Deaf;

impl MemberHandler for Deaf {}

/// A `Member` and what its handler heard.
struct Rust {
    member: Member,
    heard: mpsc::UnboundedReceiver<Heard>,
}

impl Rust {
    async fn connect(server: &TestServer) -> Self {
        let (tx, heard) = mpsc::unbounded_channel();
        let member = Member::builder().no_webrtc().connect(&server.url, Recorder(tx));
        let member = within("connect", member).await.expect("connect");
        Self { member, heard }
    }

    fn id(&self) -> UserId {
        self.member.id()
    }

    async fn next(&mut self) -> Heard {
        within("the member's handler", self.heard.recv()).await.expect("handler gone")
    }

    /// The next broadcast, skipping joins and leaves.
    async fn next_broadcast(&mut self) -> Heard {
        loop {
            match self.next().await {
                Heard::Joined(..) | Heard::Left(..) => {}
                heard => return heard,
            }
        }
    }
}

/// What a stand-in browser's handler was sent: `relay` data with its sender.
type Relayed = (GroupId, UserId, Value);

/// Stands in for a browser on the wire: records relays; answers a unicast
/// with `{"text": "browser"}`, anything else with `null` (what the
/// TypeScript client answers an offer it takes).
struct BrowserWire(mpsc::UnboundedSender<Relayed>);

#[async_trait]
impl PeerServer for BrowserWire {
    async fn on_relay(&self, group_id: GroupId, from: UserId, data: Box<RawValue>) -> RpcResult<Box<RawValue>> {
        let data: Value = serde_json::from_str(data.get()).expect("JSON");
        let unicast = data.get("unicast").is_some();
        let _ = self.0.send((group_id, from, data));
        Ok(to_raw_value(&if unicast { json!({"text": "browser"}) } else { Value::Null }).expect("JSON"))
    }

    async fn member_joined(
        &self,
        _group_id: GroupId,
        _user_id: UserId,
        _info: Option<serde_json::Value>,
    ) -> RpcResult<()> {
        Ok(())
    }

    async fn member_left(&self, _group_id: GroupId, _user_id: UserId) -> RpcResult<()> {
        Ok(())
    }
}

/// A stand-in browser: a plain client and the relays it got.
struct Browser {
    client: Client,
    id: UserId,
    relayed: mpsc::UnboundedReceiver<Relayed>,
}

impl Browser {
    async fn connect(server: &TestServer) -> Self {
        let (tx, relayed) = mpsc::unbounded_channel();
        let client = within("connect", Client::connect(&server.url, BrowserWire(tx))).await.expect("connect");
        let id = within("init", client.init(None)).await.expect("init");
        Self { client, id, relayed }
    }

    async fn next(&mut self) -> Relayed {
        within("a relay to the browser", self.relayed.recv()).await.expect("handler gone")
    }

    /// Relays as the TypeScript client does: a request, data written by hand.
    async fn call(&self, group: GroupId, to: UserId, data: Value) -> Result<Value, Error> {
        let answer = self.client.relay(group, to, to_raw_value(&data).expect("JSON")).await?;
        Ok(serde_json::from_str(answer.get()).expect("JSON"))
    }

    async fn notify(&self, group: GroupId, to: UserId, data: Value) {
        within("a relay notification", self.client.relay_notification(group, to, data)).await.expect("queued");
    }
}

fn code_of<T: std::fmt::Debug>(result: Result<T, Error>) -> Option<i32> {
    match result.expect_err("the call should fail") {
        Error::Call(object) => Some(object.code()),
        other => panic!("not an error object: {other}"),
    }
}

const DECLARATION: &str = r#"{"signal":{"webrtc":false}}"#;

fn declaration() -> Value {
    serde_json::from_str(DECLARATION).expect("JSON")
}

#[tokio::test]
async fn a_member_refuses_offers_with_no_webrtc_and_tells_every_member_it_has_none() {
    let server = TestServer::start(&[]).await;
    let mut early = Browser::connect(&server).await;
    let group = within("create", early.client.create(None)).await.expect("create");
    let mut rust = Rust::connect(&server).await;
    within("join", rust.member.join(group)).await.expect("join");

    // On joining it tells the members already there…
    assert_eq!(early.next().await, (group, rust.id(), declaration()));
    // …and answers an offer (a relay request) with NoWebRtc.
    let offer = json!({"signal": {"description": {"type": "offer", "sdp": "v=0\r\n"}}});
    assert_eq!(code_of(early.call(group, rust.id(), offer).await), Some(NO_WEBRTC));
    // Signals sent as notifications (candidates) are taken without a word.
    let candidate = json!({"signal": {"candidate": {"candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host"}}});
    early.notify(group, rust.id(), candidate).await;

    // A newcomer is told as soon as it joins.
    let mut late = Browser::connect(&server).await;
    within("join", late.client.join(group)).await.expect("join");
    assert_eq!(late.next().await, (group, rust.id(), declaration()));
    // And the member list follows, owner first.
    assert_eq!(rust.next().await, Heard::Joined(group, late.id));
    assert_eq!(rust.member.members(group).await, vec![early.id, rust.id(), late.id]);
}

#[tokio::test]
async fn browser_payloads_reach_the_handler_and_unicasts_get_its_reply() {
    let server = TestServer::start(&[]).await;
    let mut rust = Rust::connect(&server).await;
    let group = within("create", rust.member.create(None)).await.expect("create");
    let mut browser = Browser::connect(&server).await;
    within("join", browser.client.join(group)).await.expect("join");
    assert_eq!(rust.next().await, Heard::Joined(group, browser.id));
    assert_eq!(browser.next().await, (group, rust.id(), declaration()));

    // Exactly what the TypeScript client sends (tests/payload.rs).
    browser.notify(group, rust.id(), json!({"broadcast": {"text": "héllo \"quoted\" ☃"}})).await;
    browser.notify(group, rust.id(), json!({"broadcast": {"base64": "AAEC/f7/"}})).await;
    assert_eq!(rust.next().await, Heard::Broadcast(group, browser.id, Body::from("héllo \"quoted\" ☃")));
    assert_eq!(rust.next().await, Heard::Broadcast(group, browser.id, Body::from(vec![0, 1, 2, 253, 254, 255])));

    let reply = browser.call(group, rust.id(), json!({"unicast": {"base64": "AAEC/f7/"}})).await.expect("reply");
    assert_eq!(reply, json!({"base64": "//79AgEA"}));
    let reply = browser.call(group, rust.id(), json!({"unicast": {"text": "ping"}})).await.expect("reply");
    assert_eq!(reply, json!({"text": "re:ping"}));
    let failed = browser.call(group, rust.id(), json!({"unicast": {"text": "throw"}})).await;
    assert_eq!(code_of(failed), Some(-32603));
    // What is not a payload of ours is invalid params, as in the browser.
    let nonsense = browser.call(group, rust.id(), json!({"shout": "hey"})).await;
    assert_eq!(code_of(nonsense), Some(-32602));
}

#[tokio::test]
async fn members_broadcast_and_unicast_in_the_browser_format() {
    let server = TestServer::start(&[]).await;
    let mut a = Rust::connect(&server).await;
    let group = within("create", a.member.create(None)).await.expect("create");
    let mut b = Rust::connect(&server).await;
    within("join", b.member.join(group)).await.expect("join");
    assert_eq!(a.next().await, Heard::Joined(group, b.id()));
    let mut browser = Browser::connect(&server).await;
    within("join", browser.client.join(group)).await.expect("join");
    // Each member tells the newcomer, in either order.
    let mut told = vec![browser.next().await, browser.next().await];
    told.sort_by_key(|(_, from, _)| *from != a.id());
    assert_eq!(told, vec![(group, a.id(), declaration()), (group, b.id(), declaration())]);
    assert_eq!(a.next().await, Heard::Joined(group, browser.id));
    assert_eq!(b.next().await, Heard::Joined(group, browser.id));

    within("broadcast", a.member.broadcast(group, "to all")).await.expect("broadcast");
    within("broadcast", a.member.broadcast(group, vec![0u8, 255])).await.expect("broadcast");
    assert_eq!(b.next().await, Heard::Broadcast(group, a.id(), Body::from("to all")));
    assert_eq!(b.next().await, Heard::Broadcast(group, a.id(), Body::from(vec![0, 255])));
    assert_eq!(browser.next().await, (group, a.id(), json!({"broadcast": {"text": "to all"}})));
    assert_eq!(browser.next().await, (group, a.id(), json!({"broadcast": {"base64": "AP8="}})));

    let reply = within("unicast", b.member.unicast(group, a.id(), vec![1u8, 2, 3])).await.expect("reply");
    assert_eq!(reply, Body::from(vec![3, 2, 1]));
    assert_eq!(a.next().await, Heard::Unicast(group, b.id(), Body::from(vec![1, 2, 3])));
    let reply = within("unicast", a.member.unicast(group, browser.id, "hi")).await.expect("reply");
    assert_eq!(reply, Body::from("browser"));
    assert_eq!(browser.next().await, (group, a.id(), json!({"unicast": {"text": "hi"}})));

    // The owner leaves: everyone forgets it, and the next member owns the group.
    within("leave", a.member.leave(group)).await.expect("leave");
    assert!(a.member.members(group).await.is_empty());
    assert_eq!(app_error(&a.member.broadcast(group, "gone").await.unwrap_err()), Some(ErrorCode::NotAMember));
    assert_eq!(b.next().await, Heard::Left(group, a.id()));
    assert_eq!(b.member.members(group).await, vec![b.id(), browser.id]);
}

#[tokio::test]
async fn the_capability_decides_who_hears_a_broadcast_and_who_may_unicast() {
    let server = TestServer::start(&[]).await;
    // BroadcastOwner | UnicastEveryone: broadcasts go to and from the owner
    // only, unicasts between anyone; every pair may signal.
    let capability = Capability::BROADCAST_OWNER | Capability::UNICAST_EVERYONE;
    let mut owner = Browser::connect(&server).await;
    let group = within("create", owner.client.create(Some(capability))).await.expect("create");
    let mut rust = Rust::connect(&server).await;
    within("join", rust.member.join(group)).await.expect("join");
    assert_eq!(owner.next().await, (group, rust.id(), declaration()));
    let mut other = Browser::connect(&server).await;
    within("join", other.client.join(group)).await.expect("join");
    assert_eq!(rust.next().await, Heard::Joined(group, other.id));
    assert_eq!(other.next().await, (group, rust.id(), declaration()));

    // Its broadcast reaches the owner only.
    within("broadcast", rust.member.broadcast(group, "up")).await.expect("broadcast");
    assert_eq!(owner.next().await, (group, rust.id(), json!({"broadcast": {"text": "up"}})));
    // A broadcast the capability forbids is dropped; the unicast after it arrives.
    other.notify(group, rust.id(), json!({"broadcast": {"text": "sideways"}})).await;
    let reply = other.call(group, rust.id(), json!({"unicast": {"text": "sideways"}})).await.expect("reply");
    assert_eq!(reply, json!({"text": "re:sideways"}));
    assert_eq!(rust.next().await, Heard::Unicast(group, other.id, Body::from("sideways")));
    owner.notify(group, rust.id(), json!({"broadcast": {"text": "down"}})).await;
    assert_eq!(rust.next().await, Heard::Broadcast(group, owner.id, Body::from("down")));
    // The other browser got nothing but the declaration.
    assert!(other.relayed.try_recv().is_err());

    // UnicastOwner alone: a member may broadcast to no one.
    let only_unicast = Capability::UNICAST_OWNER;
    let star = within("create", owner.client.create(Some(only_unicast))).await.expect("create");
    within("join", rust.member.join(star)).await.expect("join");
    let denied = rust.member.broadcast(star, "anyone?").await;
    assert_eq!(app_error(&denied.expect_err("denied")), Some(ErrorCode::PermissionDenied));
}

#[tokio::test]
async fn errors_the_member_finds_itself_carry_the_browser_codes() {
    let server = TestServer::start(&[]).await;
    let rust = Rust::connect(&server).await;
    let outsider = Browser::connect(&server).await;
    let nowhere = GroupId::random();
    assert_eq!(app_error(&rust.member.broadcast(nowhere, "x").await.unwrap_err()), Some(ErrorCode::NotAMember));
    assert_eq!(app_error(&rust.member.join(nowhere).await.unwrap_err()), Some(ErrorCode::GroupNotFound));
    assert!(rust.member.members(nowhere).await.is_empty());

    let group = within("create", rust.member.create(None)).await.expect("create");
    // Alone, a broadcast reaches no one and is no error.
    within("broadcast", rust.member.broadcast(group, "anyone?")).await.expect("broadcast");
    let to_self = rust.member.unicast(group, rust.id(), "me").await;
    assert_eq!(app_error(&to_self.unwrap_err()), Some(ErrorCode::UserNotFound));
    let to_outsider = rust.member.unicast(group, outsider.id, "you").await;
    assert_eq!(app_error(&to_outsider.unwrap_err()), Some(ErrorCode::UserNotFound));
    let too_big = rust.member.broadcast(group, vec![0u8; DEFAULT_MAX_MESSAGE_BYTES + 1]).await;
    assert_eq!(app_error(&too_big.unwrap_err()), Some(ErrorCode::LimitExceeded));

    // A member whose handler keeps the defaults answers MethodNotFound.
    let deaf = within("connect", Member::builder().no_webrtc().connect(&server.url, Deaf)).await.expect("connect");
    within("join", deaf.join(group)).await.expect("join");
    let unanswered = within("unicast", rust.member.unicast(group, deaf.id(), "hello?")).await;
    assert_eq!(code_of(unanswered), Some(-32601));
    // The largest body goes through, both ways.
    let reply = within("unicast", deaf.unicast(group, rust.id(), vec![7u8; MAX_BODY_BYTES])).await.expect("reply");
    assert_eq!(reply.len(), MAX_BODY_BYTES);
}

#[tokio::test]
async fn messages_larger_than_one_relay_travel_in_chunks_both_ways() {
    let server = TestServer::start(&[]).await;
    let mut a = Rust::connect(&server).await;
    let mut b = Rust::connect(&server).await;
    let group = within("create", a.member.create(None)).await.expect("create");
    within("join", b.member.join(group)).await.expect("join");
    assert_eq!(a.next().await, Heard::Joined(group, b.id()));

    // Not a multiple of the chunk size, every byte value, and text with multi-byte characters.
    let bytes: Vec<u8> = (0..3 * 1024 * 1024 + 17).map(|i: u32| (i % 251) as u8).collect();
    within("broadcast", a.member.broadcast(group, bytes.clone())).await.expect("broadcast");
    assert_eq!(b.next().await, Heard::Broadcast(group, a.id(), Body::Bytes(bytes.clone())));

    let text = "größer ✓ ".repeat(200_000);
    let reply = within("unicast", b.member.unicast(group, a.id(), text.clone())).await.expect("unicast");
    assert_eq!(a.next().await, Heard::Unicast(group, b.id(), Body::Text(text.clone())));
    assert_eq!(reply, Body::Text(format!("re:{text}")), "a reply larger than one relay comes back whole");

    // A small request may get a large reply.
    let mut reversed = bytes.clone();
    reversed.reverse();
    let small_request = vec![1u8; 10];
    let reply = within("unicast", a.member.unicast(group, b.id(), small_request.clone())).await.expect("unicast");
    assert_eq!(b.next().await, Heard::Unicast(group, a.id(), Body::Bytes(small_request)));
    assert_eq!(reply, Body::Bytes(vec![1u8; 10]));
    let reply = within("unicast", a.member.unicast(group, b.id(), bytes)).await.expect("unicast");
    assert!(matches!(b.next().await, Heard::Unicast(..)));
    assert_eq!(reply, Body::Bytes(reversed));
}

/// Within this a receiver has let go of a cancelled transfer, or the test
/// fails: a third of the stall timeout that would free it anyway.
const FREED_WITHIN: Duration = Duration::from_secs(STALL_TIMEOUT.as_secs() / 3);

#[tokio::test]
async fn relayed_sends_report_their_progress_up_to_the_total() {
    let server = TestServer::start(&[]).await;
    let mut a = Rust::connect(&server).await;
    let group = within("create", a.member.create(None)).await.expect("create");
    let mut reports = Vec::new();
    let alone = a.member.broadcast_with(group, "no one hears", SendOptions::new().on_progress(|p| reports.push(p)));
    within("broadcast", alone).await.expect("broadcast");
    assert_eq!(reports, [Progress { sent: 0, total: 0 }], "no one to send to: done at once");

    let (mut b, mut c) = (Rust::connect(&server).await, Rust::connect(&server).await);
    for member in [&b, &c] {
        within("join", member.member.join(group)).await.expect("join");
        assert_eq!(a.next().await, Heard::Joined(group, member.id()));
    }
    // A broadcast's total counts every target; its chunks report as they go.
    let bytes: Vec<u8> = (0..MIB + 17).map(|i| (i % 251) as u8).collect();
    reports.clear();
    let sent = a.member.broadcast_with(group, bytes.clone(), SendOptions::new().on_progress(|p| reports.push(p)));
    within("broadcast", sent).await.expect("broadcast");
    assert_progress_to(&reports, 2 * bytes.len() as u64);
    assert!(reports.len() >= 2 * (MIB / (128 * 1024)), "one report a chunk: {}", reports.len());
    for member in [&mut b, &mut c] {
        assert!(member.next_broadcast().await == Heard::Broadcast(group, a.id(), Body::Bytes(bytes.clone())));
    }

    // A unicast counts its request, large or small.
    reports.clear();
    let sent = a.member.unicast_with(group, b.id(), bytes, SendOptions::new().on_progress(|p| reports.push(p)));
    within("unicast", sent).await.expect("unicast");
    assert_progress_to(&reports, MIB as u64 + 17);
    reports.clear();
    let sent = a.member.unicast_with(group, c.id(), "small", SendOptions::new().on_progress(|p| reports.push(p)));
    assert_eq!(within("unicast", sent).await.expect("unicast"), Body::from("re:small"));
    assert_eq!(reports, [Progress { sent: 5, total: 5 }]);
}

#[tokio::test]
async fn dropping_a_relayed_send_stops_it_and_frees_the_receiver_at_once() {
    let server = TestServer::start(&[]).await;
    let mut a = Rust::connect(&server).await;
    let mut b = Rust::connect(&server).await;
    let group = within("create", a.member.create(None)).await.expect("create");
    within("join", b.member.join(group)).await.expect("join");
    assert_eq!(a.next().await, Heard::Joined(group, b.id()));
    let mut receiving = b.member.receiving();
    assert_eq!(*receiving.borrow(), Receiving::default());

    let mut last = Progress::default();
    let send = a.member.broadcast_with(group, vec![7u8; 16 * MIB], SendOptions::new().on_progress(|p| last = p));
    tokio::select! {
        sent = send => panic!("the send ended before it was cancelled: {sent:?}"),
        held = within("b to hold some of it", receiving.wait_for(|r| r.bytes >= MIB as u64 / 4)) => {
            assert_eq!(held.expect("b's meter").messages, 1);
        }
    }
    // The send is dropped: the sender stopped, and b lets go long before its stall timeout.
    assert!(last.sent < last.total, "the whole message went: {last:?}");
    let freed = timeout(FREED_WITHIN, receiving.wait_for(|r| *r == Receiving::default())).await.is_ok();
    assert!(freed, "b still holds the aborted transfer: {:?}", *receiving.borrow());

    // What follows arrives; the aborted message never does (relays arrive in order).
    within("broadcast", a.member.broadcast(group, "after")).await.expect("broadcast");
    assert_eq!(b.next_broadcast().await, Heard::Broadcast(group, a.id(), Body::from("after")));
}

#[tokio::test]
async fn a_cancelled_relayed_transfer_ends_with_the_abort_notification_browsers_take() {
    let server = TestServer::start(&[]).await;
    let mut browser = Browser::connect(&server).await;
    let group = within("create", browser.client.create(None)).await.expect("create");
    let rust = Rust::connect(&server).await;
    within("join", rust.member.join(group)).await.expect("join");
    assert_eq!(browser.next().await, (group, rust.id(), declaration()));

    let send = rust.member.broadcast(group, vec![1u8; 4 * MIB]);
    let first = tokio::select! {
        sent = send => panic!("the send ended before it was cancelled: {sent:?}"),
        first = browser.next() => first.2,
    };
    let id = first["chunk"]["id"].clone();
    assert_eq!(first["chunk"]["seq"], 0, "{first}");
    // What the window let out before the drop, in order, then the abort.
    let mut seq = 0;
    loop {
        let (_, from, data) = browser.next().await;
        assert_eq!(from, rust.id());
        if data.get("abort").is_some() {
            assert_eq!(data, json!({"abort": id}));
            break;
        }
        seq += 1;
        assert_eq!((&data["chunk"]["id"], data["chunk"]["seq"].as_u64()), (&id, Some(seq)), "{data}");
    }
    assert!(seq < 31, "all 32 chunks went before the abort");
}

#[tokio::test]
async fn a_receiver_that_leaves_mid_transfer_fails_the_broadcast_with_peer_gone_and_the_others_get_it() {
    let server = TestServer::start(&[]).await;
    let mut a = Rust::connect(&server).await;
    let (b, mut c) = (Rust::connect(&server).await, Rust::connect(&server).await);
    let group = within("create", a.member.create(None)).await.expect("create");
    for member in [&b, &c] {
        within("join", member.member.join(group)).await.expect("join");
        assert_eq!(a.next().await, Heard::Joined(group, member.id()));
    }
    let mut receiving = b.member.receiving();
    // b, the first target, leaves once it holds some of it.
    let bytes: Vec<u8> = (0..2 * MIB).map(|i| (i % 251) as u8).collect();
    let b_leaves = async {
        within("b to hold some of it", receiving.wait_for(|r| r.bytes >= MIB as u64 / 4)).await.expect("b's meter");
        within("leave", b.member.leave(group)).await.expect("leave");
    };
    let (sent, ()) = tokio::join!(within("broadcast", a.member.broadcast(group, bytes.clone())), b_leaves);
    assert_eq!(app_error(&sent.expect_err("b left mid-transfer")), Some(ErrorCode::PeerGone));
    assert_eq!(*receiving.borrow(), Receiving::default(), "b let go of what it held");
    assert!(c.next_broadcast().await == Heard::Broadcast(group, a.id(), Body::Bytes(bytes)), "c got another message");
}

#[tokio::test]
async fn dropping_a_member_closes_its_connection() {
    let server = TestServer::start(&[]).await;
    let mut observer = Rust::connect(&server).await;
    let group = within("create", observer.member.create(None)).await.expect("create");
    let dropped = Rust::connect(&server).await;
    within("join", dropped.member.join(group)).await.expect("join");
    let id = dropped.id();
    assert_eq!(observer.next().await, Heard::Joined(group, id));
    drop(dropped);
    // The server saw the connection go: the others are told it left.
    assert_eq!(observer.next().await, Heard::Left(group, id));
    assert_eq!(observer.member.members(group).await, vec![observer.id()]);
}

#[tokio::test]
async fn a_member_brings_its_join_token_and_reads_the_session_facts() {
    let secret = "the member test's auth secret";
    let turn = ["--turn-url", "turn:turn.example:3478", "--turn-secret", "a turn secret"];
    let server = TestServer::start(&[&["--auth-secret", secret][..], &turn[..]].concat()).await;

    let refused = within("init without a token", Member::connect(&server.url, Deaf)).await.err();
    let Some(StartError::Init(error)) = refused else { panic!("init should fail: {refused:?}") };
    assert_eq!(app_error(&error), Some(ErrorCode::Unauthorized));

    let token = Claims { create: true, ..Claims::expiring_in(Duration::from_secs(60)) }.sign(secret.as_bytes());
    let member = within("init with a token", Member::connect_with(Client::builder().token(token), &server.url, Deaf))
        .await
        .expect("a valid token");
    within("create", member.create(None)).await.expect("create: true");
    let facts = within("session", member.session()).await.expect("session facts");
    assert_eq!(facts.user_id, member.id());
    assert_eq!(facts.ice_servers.len(), 1);
    assert_eq!(facts.ice_servers[0].urls, ["turn:turn.example:3478"]);
    let username = facts.ice_servers[0].username.clone().expect("a TURN username");
    assert!(username.ends_with(&format!(":{}", member.id())), "{username}");
}
