//! The Rust client against the real server, started in this process on
//! 127.0.0.1:0: every `SignalingClient` stub and error code, relays between
//! Rust clients, the connection's lifecycle, and a raw WebSocket client
//! speaking hand-written frames in the same group.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use jsonrpsee::core::client::{ClientT, Error};
use jsonrpsee::core::{RpcResult, async_trait};
use jsonrpsee::rpc_params;
use jsonrpsee::types::ErrorObject;
use serde_json::value::{RawValue, to_raw_value};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{Barrier, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout, timeout_at};
use tokio_tungstenite::tungstenite::Message;
use webrtc_p2p_interfaces::{Capability, ErrorCode, GroupId, JoinResult, PeerServer, SignalingClient, UserId};
use webrtc_p2p_simple::{Client, ClientBuilder, Disconnected, app_error};

mod common;
use common::TestServer;

/// How long any expected event may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(10);

/// How fast pending calls must fail once the server is gone.
const PROMPTLY: Duration = Duration::from_secs(1);

/// How long the server keeps serving after its shutdown starts, so that
/// answers on their way still complete (`SHUTDOWN_DRAIN` in
/// server/src/connection.rs).
const SERVER_DRAIN: Duration = Duration::from_secs(1);

/// Relays in flight at once in the concurrency test.
const IN_FLIGHT: usize = 64;

async fn within<F: Future>(what: &str, future: F) -> F::Output {
    timeout(PATIENCE, future).await.unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

fn raw(value: Value) -> Box<RawValue> {
    to_raw_value(&value).expect("serializable")
}

fn value(raw: &RawValue) -> Value {
    serde_json::from_str(raw.get()).expect("JSON")
}

/// What a test peer's handler was sent.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Relay { group_id: GroupId, from: UserId, data: Value },
    Joined(GroupId, UserId),
    Left(GroupId, UserId),
}

/// A `PeerServer` whose answer to a relay depends on the data:
/// `"hold"` waits for the test's release, `"never"` never answers,
/// `{"barrier": _}` waits until `IN_FLIGHT` such relays run at once,
/// `{"fail": error object}` answers with that error, anything else is echoed.
struct TestPeer {
    seen: mpsc::UnboundedSender<Seen>,
    released: watch::Receiver<bool>,
    barrier: Arc<Barrier>,
}

#[async_trait]
impl PeerServer for TestPeer {
    async fn on_relay(&self, group_id: GroupId, from: UserId, data: Box<RawValue>) -> RpcResult<Box<RawValue>> {
        let sent = value(&data);
        let _ = self.seen.send(Seen::Relay { group_id, from, data: sent.clone() });
        if sent == "hold" {
            let _ = self.released.clone().wait_for(|released| *released).await;
        } else if sent == "never" {
            std::future::pending::<()>().await;
        } else if sent.get("barrier").is_some() {
            self.barrier.wait().await;
        } else if let Some(fail) = sent.get("fail") {
            return Err(serde_json::from_value(fail.clone()).expect("an error object"));
        }
        Ok(data)
    }

    async fn member_joined(
        &self,
        group_id: GroupId,
        user_id: UserId,
        _info: Option<serde_json::Value>,
    ) -> RpcResult<()> {
        let _ = self.seen.send(Seen::Joined(group_id, user_id));
        Ok(())
    }

    async fn member_left(&self, group_id: GroupId, user_id: UserId) -> RpcResult<()> {
        let _ = self.seen.send(Seen::Left(group_id, user_id));
        Ok(())
    }
}

/// A connected Rust client and the test's side of its handler.
struct Member {
    client: Arc<Client>,
    seen: mpsc::UnboundedReceiver<Seen>,
    release: watch::Sender<bool>,
}

impl Member {
    async fn connect(server: &TestServer) -> Self {
        Self::connect_with(server, Client::builder()).await
    }

    async fn connect_with(server: &TestServer, builder: ClientBuilder) -> Self {
        let (seen_tx, seen) = mpsc::unbounded_channel();
        let (release, released) = watch::channel(false);
        let handler = TestPeer { seen: seen_tx, released, barrier: Arc::new(Barrier::new(IN_FLIGHT)) };
        let client = within("connect", builder.connect(&server.url, handler)).await.expect("connect");
        Self { client: Arc::new(client), seen, release }
    }

    /// Connected and initialised.
    async fn user(server: &TestServer) -> (Self, UserId) {
        let member = Self::connect(server).await;
        let id = within("init", member.client.init(None)).await.expect("init");
        (member, id)
    }

    async fn next_seen(&mut self) -> Seen {
        within("the handler to be called", self.seen.recv()).await.expect("handler gone")
    }

    /// Relays from `self` in the background, so that the test can act while
    /// it is pending.
    fn relay_in_background(&self, group: GroupId, to: UserId, data: Value) -> JoinHandle<Result<Box<RawValue>, Error>> {
        let client = self.client.clone();
        tokio::spawn(async move { client.relay(group, to, raw(data)).await })
    }
}

/// Two initialised members, `a` and `b`, in a group `a` created.
async fn pair(server: &TestServer) -> (Member, UserId, Member, UserId, GroupId) {
    let (mut a, a_id) = Member::user(server).await;
    let (b, b_id) = Member::user(server).await;
    let group = within("create", a.client.create(None)).await.expect("create");
    within("join", b.client.join(group)).await.expect("join");
    assert_eq!(a.next_seen().await, Seen::Joined(group, b_id));
    (a, a_id, b, b_id, group)
}

fn code_of(result: Result<impl std::fmt::Debug, Error>) -> Option<ErrorCode> {
    app_error(&result.expect_err("the call should fail"))
}

#[tokio::test]
async fn every_signaling_method_works_through_the_generated_stubs() {
    let server = TestServer::start(&[]).await;
    let (mut a, a_id) = Member::user(&server).await;
    let (mut b, b_id) = Member::user(&server).await;
    assert_ne!(a_id, b_id);

    let group = a.client.create(None).await.unwrap();
    let star = a.client.create(Some(Capability::UNICAST_OWNER)).await.unwrap();
    assert_ne!(group, star);

    let joined = b.client.join(group).await.unwrap();
    assert_eq!(joined, JoinResult { owner: a_id, capability: Capability::DEFAULT });
    assert_eq!(a.next_seen().await, Seen::Joined(group, b_id));
    let joined = b.client.join(star).await.unwrap();
    assert_eq!(joined, JoinResult { owner: a_id, capability: Capability::UNICAST_OWNER });
    assert_eq!(a.next_seen().await, Seen::Joined(star, b_id));

    assert_eq!(a.client.get_members(group, None).await.unwrap().ids(), vec![a_id, b_id]);
    assert_eq!(b.client.get_members(group, None).await.unwrap().ids(), vec![a_id, b_id]);

    let answer = a.client.relay(group, b_id, raw(json!({"sdp": "offer"}))).await.unwrap();
    assert_eq!(value(&answer), json!({"sdp": "offer"}));
    assert_eq!(b.next_seen().await, Seen::Relay { group_id: group, from: a_id, data: json!({"sdp": "offer"}) });

    b.client.leave(group).await.unwrap();
    assert_eq!(a.next_seen().await, Seen::Left(group, b_id));
    assert_eq!(a.client.get_members(group, None).await.unwrap().ids(), vec![a_id]);
}

#[tokio::test]
async fn each_error_code_reaches_the_caller_as_a_typed_error() {
    let server = TestServer::start(&["--max-groups-per-user", "2"]).await;
    let (a, a_id, b, b_id, group) = pair(&server).await;
    let (c, c_id) = Member::user(&server).await;

    let fresh = Member::connect(&server).await;
    assert_eq!(code_of(fresh.client.create(None).await), Some(ErrorCode::NotInitialized));
    assert_eq!(code_of(a.client.init(None).await), Some(ErrorCode::AlreadyInitialized));
    assert_eq!(code_of(a.client.join(GroupId::random()).await), Some(ErrorCode::GroupNotFound));
    assert_eq!(code_of(c.client.get_members(group, None).await), Some(ErrorCode::NotAMember));
    let to_stranger = a.client.relay(group, UserId::random(), raw(json!(1))).await;
    assert_eq!(code_of(to_stranger), Some(ErrorCode::UserNotFound));

    // Owner-only unicast: the two members who are not the owner may not signal.
    let star = a.client.create(Some(Capability::UNICAST_OWNER)).await.unwrap();
    b.client.join(star).await.unwrap();
    c.client.join(star).await.unwrap();
    assert_eq!(code_of(b.client.relay(star, c_id, raw(json!(1))).await), Some(ErrorCode::PermissionDenied));
    assert!(b.client.relay(star, a_id, raw(json!(1))).await.is_ok(), "a member may signal the owner");

    assert_eq!(code_of(a.client.create(None).await), Some(ErrorCode::LimitExceeded));
    assert!(b.client.relay(group, a_id, raw(json!(1))).await.is_ok());
    assert!(a.client.relay(group, b_id, raw(json!(1))).await.is_ok());

    // The standard codes are call errors too, but no application error.
    let bad_id = a.client.request::<Value, _>("join", rpc_params!["not-an-id"]).await.unwrap_err();
    assert!(matches!(&bad_id, Error::Call(e) if e.code() == -32602), "{bad_id}");
    assert_eq!(app_error(&bad_id), None);
    let unknown = a.client.request::<Value, _>("nope", rpc_params![]).await.unwrap_err();
    assert!(matches!(&unknown, Error::Call(e) if e.code() == -32601), "{unknown}");
}

#[tokio::test]
async fn relay_timeout_and_busy_reach_the_caller_as_typed_errors() {
    let server = TestServer::start(&["--relay-timeout", "300ms", "--max-relays-in-flight", "1"]).await;
    let (a, _, _b, b_id, group) = pair(&server).await;
    // Sent in this order on one connection, so the first is in flight on the
    // server when the second arrives.
    let (first, second) =
        tokio::join!(a.client.relay(group, b_id, raw(json!("never"))), a.client.relay(group, b_id, raw(json!(2))));
    assert_eq!(code_of(second), Some(ErrorCode::Busy));
    assert_eq!(code_of(first), Some(ErrorCode::RelayTimeout));
}

#[tokio::test]
async fn peer_gone_reaches_the_caller_when_the_target_disconnects() {
    let server = TestServer::start(&[]).await;
    let (a, _, mut b, b_id, group) = pair(&server).await;
    let pending = a.relay_in_background(group, b_id, json!("never"));
    assert!(matches!(b.next_seen().await, Seen::Relay { .. }));
    assert_eq!(within("close", b.client.close()).await, Disconnected::Local);
    assert_eq!(code_of(within("the relay", pending).await.unwrap()), Some(ErrorCode::PeerGone));
}

#[tokio::test]
async fn relay_works_between_two_rust_clients_both_ways() {
    let server = TestServer::start(&[]).await;
    let (mut a, a_id, mut b, b_id, group) = pair(&server).await;

    let answer = a.client.relay(group, b_id, raw(json!({"type": "offer"}))).await.unwrap();
    assert_eq!(value(&answer), json!({"type": "offer"}));
    assert_eq!(b.next_seen().await, Seen::Relay { group_id: group, from: a_id, data: json!({"type": "offer"}) });

    let answer = b.client.relay(group, a_id, raw(json!({"type": "answer"}))).await.unwrap();
    assert_eq!(value(&answer), json!({"type": "answer"}));
    assert_eq!(a.next_seen().await, Seen::Relay { group_id: group, from: b_id, data: json!({"type": "answer"}) });

    // Notifications arrive in the order sent, stamped with the sender.
    for n in 0..4 {
        a.client.relay_notification(group, b_id, json!({"candidate": n})).await.unwrap();
    }
    for n in 0..4 {
        assert_eq!(b.next_seen().await, Seen::Relay { group_id: group, from: a_id, data: json!({"candidate": n}) });
    }
}

#[tokio::test]
async fn a_handler_error_reaches_the_caller_unchanged() {
    let server = TestServer::start(&[]).await;
    let (a, _, _b, b_id, group) = pair(&server).await;

    let own = json!({"code": 4242, "message": "no thanks", "data": {"why": ["busy", 1]}});
    let error = a.client.relay(group, b_id, raw(json!({"fail": own}))).await.unwrap_err();
    let Error::Call(object) = &error else { panic!("not a call error: {error}") };
    assert_eq!(serde_json::to_value(object).unwrap(), own);
    assert_eq!(app_error(&error), None);

    let typed = serde_json::to_value(ErrorObject::from(ErrorCode::PermissionDenied)).unwrap();
    let error = a.client.relay(group, b_id, raw(json!({"fail": typed}))).await.unwrap_err();
    assert_eq!(app_error(&error), Some(ErrorCode::PermissionDenied));
}

#[tokio::test]
async fn a_slow_handler_does_not_delay_other_relays_to_the_same_client() {
    let server = TestServer::start(&[]).await;
    let (a, _, mut b, b_id, group) = pair(&server).await;

    let slow = a.relay_in_background(group, b_id, json!("hold"));
    assert!(matches!(b.next_seen().await, Seen::Relay { data, .. } if data == "hold"));
    for n in 0..3 {
        let answer = within("a quick relay", a.client.relay(group, b_id, raw(json!(n)))).await.unwrap();
        assert_eq!(value(&answer), json!(n));
    }
    assert!(!slow.is_finished(), "the slow relay is still held");

    b.release.send_replace(true);
    assert_eq!(value(&within("the slow relay", slow).await.unwrap().unwrap()), json!("hold"));
}

#[tokio::test]
async fn sixty_four_relays_are_in_flight_at_once() {
    let server = TestServer::start(&[]).await;
    let (a, _, _b, b_id, group) = pair(&server).await;
    // Each handler waits until all 64 run at once, so none answers unless
    // every relay is in flight together.
    let relays: Vec<_> = (0..IN_FLIGHT).map(|n| a.relay_in_background(group, b_id, json!({"barrier": n}))).collect();
    for (n, relay) in relays.into_iter().enumerate() {
        let answer = within("the relays", relay).await.unwrap().unwrap();
        assert_eq!(value(&answer), json!({"barrier": n}));
    }
}

#[tokio::test]
async fn requests_past_the_handler_limit_are_answered_busy() {
    let server = TestServer::start(&[]).await;
    let (mut a, a_id) = Member::user(&server).await;
    let mut b = Member::connect_with(&server, Client::builder().max_concurrent_handlers(1)).await;
    let b_id = b.client.init(None).await.unwrap();
    let group = a.client.create(None).await.unwrap();
    b.client.join(group).await.unwrap();
    assert_eq!(a.next_seen().await, Seen::Joined(group, b_id));

    let held = a.relay_in_background(group, b_id, json!("hold"));
    assert!(matches!(b.next_seen().await, Seen::Relay { .. }));
    assert_eq!(code_of(a.client.relay(group, b_id, raw(json!(1))).await), Some(ErrorCode::Busy));
    b.release.send_replace(true);
    assert!(within("the held relay", held).await.unwrap().is_ok());
    assert!(a.client.relay(group, b_id, raw(json!(1))).await.is_ok(), "the slot is free again");
    assert!(b.client.relay(group, a_id, raw(json!(1))).await.is_ok());
}

#[tokio::test]
async fn a_call_times_out_after_the_configured_request_timeout() {
    let server = TestServer::start(&[]).await;
    let (_a, _, _b, b_id, group) = pair(&server).await;
    let impatient = Member::connect_with(&server, Client::builder().request_timeout(Duration::from_millis(200))).await;
    impatient.client.init(None).await.unwrap();
    impatient.client.join(group).await.unwrap();
    let error = within("the timeout", impatient.client.relay(group, b_id, raw(json!("never")))).await.unwrap_err();
    assert!(matches!(error, Error::RequestTimeout), "{error}");
}

#[tokio::test]
async fn pending_calls_fail_within_a_second_of_the_server_closing_on_shutdown() {
    let mut server = TestServer::start(&[]).await;
    let (a, _, mut b, b_id, group) = pair(&server).await;
    let pending: Vec<_> = (0..8).map(|_| a.relay_in_background(group, b_id, json!("never"))).collect();
    for _ in 0..8 {
        assert!(matches!(b.next_seen().await, Seen::Relay { .. }));
    }
    let (a_closed, b_closed) = (a.client.closed(), b.client.closed());

    server.shut_down();
    // The server first drains: it keeps serving while anything waits, for
    // at most SERVER_DRAIN, and these relays wait for good. Then it closes.
    let reason = timeout(SERVER_DRAIN + PROMPTLY, a_closed).await.expect("closed() resolved after the drain");
    assert!(matches!(&reason, Disconnected::Server { code: 1001, .. }), "{reason}");
    let deadline = Instant::now() + PROMPTLY;
    for call in pending {
        let result = timeout_at(deadline, call).await.expect("a pending call resolved within a second").unwrap();
        assert!(result.is_err(), "{result:?}");
    }
    let reason = timeout_at(deadline, b_closed).await.expect("closed() resolved within a second");
    assert!(matches!(&reason, Disconnected::Server { code: 1001, .. }), "{reason}");
    let after = within("a call after the end", a.client.get_members(group, None)).await.unwrap_err();
    assert!(matches!(after, Error::RestartNeeded(_)), "{after}");
    assert!(!a.client.is_connected());
}

#[tokio::test]
async fn pending_calls_fail_at_once_when_the_server_hangs_up() {
    // A server that reads requests, never answers, and drops the TCP
    // connection without a close frame.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/ws", listener.local_addr().unwrap());
    let (hang_up, hung_up) = oneshot::channel::<()>();
    let (read_all, all_read) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        for _ in 0..4 {
            let _ = ws.next().await;
        }
        let _ = read_all.send(());
        let _ = hung_up.await;
    });
    let (seen, _) = mpsc::unbounded_channel();
    let handler = TestPeer { seen, released: watch::channel(false).1, barrier: Arc::new(Barrier::new(1)) };
    let client = Arc::new(within("connect", Client::connect(&url, handler)).await.unwrap());
    let pending: Vec<_> = (0..4)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.init(None).await })
        })
        .collect();
    within("the fake server to read the requests", all_read).await.unwrap();

    let deadline = Instant::now() + PROMPTLY;
    drop(hang_up);
    let reason = timeout_at(deadline, client.closed()).await.expect("closed() resolved within a second");
    assert!(matches!(reason, Disconnected::Failed(_)), "{reason}");
    for call in pending {
        let error = timeout_at(deadline, call).await.expect("a pending call resolved within a second").unwrap();
        let error = error.unwrap_err();
        assert!(error.to_string().contains(&reason.to_string()), "{error} does not say {reason}");
    }
}

#[tokio::test]
async fn close_sends_what_was_queued_first_and_ends_every_call() {
    let server = TestServer::start(&[]).await;
    let (a, a_id, mut b, b_id, group) = pair(&server).await;
    let pending = a.relay_in_background(group, b_id, json!("never"));
    assert!(matches!(b.next_seen().await, Seen::Relay { .. }));
    for n in 0..3 {
        a.client.relay_notification(group, b_id, json!(n)).await.unwrap();
    }
    let closed = a.client.closed();

    assert_eq!(within("close", a.client.close()).await, Disconnected::Local);
    for n in 0..3 {
        assert_eq!(b.next_seen().await, Seen::Relay { group_id: group, from: a_id, data: json!(n) });
    }
    assert_eq!(b.next_seen().await, Seen::Left(group, a_id));
    assert_eq!(within("closed()", closed).await, Disconnected::Local);
    assert!(within("the pending relay", pending).await.unwrap().is_err());
    assert!(!a.client.is_connected());
    let after = within("a call after close", a.client.get_members(group, None)).await.unwrap_err();
    assert!(matches!(after, Error::RestartNeeded(_)), "{after}");
}

#[tokio::test]
async fn dropping_the_client_closes_the_connection() {
    let server = TestServer::start(&[]).await;
    let (a, a_id, mut b, _, group) = pair(&server).await;
    drop(a);
    assert_eq!(b.next_seen().await, Seen::Left(group, a_id));
}

/// A WebSocket client speaking hand-written JSON-RPC frames: the wire format
/// is the contract, not the Rust types.
struct Raw {
    ws: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
}

impl Raw {
    async fn connect(url: &str) -> Self {
        let (ws, _) = within("connect", tokio_tungstenite::connect_async(url)).await.expect("connect");
        Self { ws }
    }

    async fn send(&mut self, frame: &str) {
        within("send", self.ws.send(Message::text(frame))).await.expect("send");
    }

    /// The next message that `wanted` accepts; others (member notifications)
    /// are skipped.
    async fn next_where(&mut self, wanted: impl Fn(&Value) -> bool) -> Value {
        loop {
            match within("a frame", self.ws.next()).await {
                Some(Ok(Message::Text(text))) => {
                    let message: Value = serde_json::from_str(text.as_str()).expect("JSON from the server");
                    if wanted(&message) {
                        return message;
                    }
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    /// Sends a request and returns the response with its id.
    async fn call(&mut self, frame: &str, id: Value) -> Value {
        self.send(frame).await;
        self.next_where(|m| m.get("method").is_none() && m["id"] == id).await
    }
}

#[tokio::test]
async fn a_rust_client_and_a_raw_websocket_client_relay_to_each_other() {
    let server = TestServer::start(&[]).await;
    let (mut rust, rust_id) = Member::user(&server).await;
    let group = rust.client.create(None).await.unwrap();

    let mut raw = Raw::connect(&server.url).await;
    let init = raw.call(r#"{"jsonrpc":"2.0","id":1,"method":"init","params":[]}"#, json!(1)).await;
    let raw_id: UserId = init["result"].as_str().unwrap().parse().unwrap();
    let join = format!(r#"{{"jsonrpc":"2.0","id":"j","method":"join","params":{{"group_id":"{group}"}}}}"#);
    let joined = raw.call(&join, json!("j")).await;
    assert_eq!(joined["result"], json!({"owner": rust_id, "capability": 10}));
    assert_eq!(rust.next_seen().await, Seen::Joined(group, raw_id));

    // Rust → raw: the raw client answers the server's request by hand.
    let offer = json!({"type": "offer", "sdp": "v=0"});
    let pending = rust.relay_in_background(group, raw_id, offer.clone());
    let request = raw.next_where(|m| m["method"] == "relay").await;
    assert_eq!(request["params"], json!([group, rust_id, offer]));
    let answer = format!(r#"{{"jsonrpc":"2.0","id":{},"result":{{"type":"answer","sdp":"v=0"}}}}"#, request["id"]);
    raw.send(&answer).await;
    let answered = within("the relay", pending).await.unwrap().unwrap();
    assert_eq!(value(&answered), json!({"type": "answer", "sdp": "v=0"}));

    // An error the raw client answers with reaches Rust unchanged.
    let pending = rust.relay_in_background(group, raw_id, json!("refuse"));
    let request = raw.next_where(|m| m["method"] == "relay").await;
    let refusal =
        format!(r#"{{"jsonrpc":"2.0","id":{},"error":{{"code":-32006,"message":"not you"}}}}"#, request["id"]);
    raw.send(&refusal).await;
    let refused = within("the relay", pending).await.unwrap().unwrap_err();
    assert_eq!(app_error(&refused), Some(ErrorCode::PermissionDenied));
    assert!(matches!(&refused, Error::Call(e) if e.message() == "not you"), "{refused}");

    // raw → Rust: the Rust handler's answer comes back with the raw id.
    let relay =
        format!(r#"{{"jsonrpc":"2.0","id":-7,"method":"relay","params":["{group}","{rust_id}",{{"type":"offer"}}]}}"#);
    let answer = raw.call(&relay, json!(-7)).await;
    assert_eq!(answer, json!({"jsonrpc": "2.0", "id": -7, "result": {"type": "offer"}}));
    assert_eq!(rust.next_seen().await, Seen::Relay { group_id: group, from: raw_id, data: json!({"type": "offer"}) });

    // Notifications both ways.
    let trickle = format!(r#"{{"jsonrpc":"2.0","method":"relay","params":["{group}","{rust_id}",{{"candidate":1}}]}}"#);
    raw.send(&trickle).await;
    assert_eq!(rust.next_seen().await, Seen::Relay { group_id: group, from: raw_id, data: json!({"candidate": 1}) });
    rust.client.relay_notification(group, raw_id, json!({"candidate": 2})).await.unwrap();
    let trickled = raw.next_where(|m| m["method"] == "relay").await;
    assert_eq!(trickled, json!({"jsonrpc": "2.0", "method": "relay", "params": [group, rust_id, {"candidate": 2}]}));
}
