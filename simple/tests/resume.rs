//! The Rust client resumes its session by itself: through a loopback TCP
//! proxy the test controls, connections are cut mid-traffic, and relays and
//! notifications in both directions still arrive exactly once, in order;
//! the user keeps its id and groups; the others see nobody leave. Also the
//! window passing, a clean close, resume turned off, a resume buffer that
//! overflowed, and a `Member` that resumes by itself and refreshes its view
//! after a resume without replay.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use jsonrpsee::core::{RpcResult, async_trait};
use serde_json::value::{RawValue, to_raw_value};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};
use webrtc_p2p_interfaces::{GroupId, PeerServer, SignalingClient, UserId};
use webrtc_p2p_simple::client::payload::Body;
use webrtc_p2p_simple::client::{self, MemberHandler};
use webrtc_p2p_simple::{Client, ConnectionState, Disconnected};

mod common;
use common::TestServer;

/// How long any expected event may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(20);

async fn within<F: Future>(what: &str, future: F) -> F::Output {
    timeout(PATIENCE, future).await.unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// A loopback TCP forwarder to the server: `cut` ends every connection
/// through it at once (both sides see the TCP connection end, no WebSocket
/// close frame); while `down`, new connections are dropped on arrival.
struct Proxy {
    addr: SocketAddr,
    cuts: watch::Sender<u64>,
    down: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let cuts = watch::Sender::new(0u64);
        let down = Arc::new(AtomicBool::new(false));
        let (cut_rx, refuse) = (cuts.subscribe(), down.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if refuse.load(Ordering::Acquire) {
                    continue;
                }
                let mut cut = cut_rx.clone();
                cut.mark_unchanged();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else { return };
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Self { addr, cuts, down, task }
    }

    fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    fn cut(&self) {
        self.cuts.send_modify(|n| *n += 1);
    }

    fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::Release);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a test peer's handler was sent.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Relay(UserId, Value),
    Joined(UserId),
    Left(UserId),
}

/// Records what it is sent and answers every relay with its data.
struct Recorder(mpsc::UnboundedSender<Seen>);

#[async_trait]
impl PeerServer for Recorder {
    async fn on_relay(&self, _: GroupId, from: UserId, data: Box<RawValue>) -> RpcResult<Box<RawValue>> {
        let _ = self.0.send(Seen::Relay(from, serde_json::from_str(data.get()).expect("JSON")));
        Ok(data)
    }

    async fn member_joined(&self, _: GroupId, user_id: UserId, _info: Option<serde_json::Value>) -> RpcResult<()> {
        let _ = self.0.send(Seen::Joined(user_id));
        Ok(())
    }

    async fn member_left(&self, _: GroupId, user_id: UserId) -> RpcResult<()> {
        let _ = self.0.send(Seen::Left(user_id));
        Ok(())
    }
}

struct Member {
    client: Arc<Client>,
    id: UserId,
    seen: mpsc::UnboundedReceiver<Seen>,
}

impl Member {
    /// Connected to `url`, initialised, and (when `resumable`) holding a ticket.
    async fn join(url: &str, resumable: bool) -> Self {
        let (tx, seen) = mpsc::unbounded_channel();
        let client = within("connect", Client::connect(url, Recorder(tx))).await.expect("connect");
        let id = within("init", client.init(None)).await.expect("init");
        if resumable {
            let facts = within("session", client.session()).await.expect("session");
            assert_eq!(facts.user_id, id);
        }
        Self { client: Arc::new(client), id, seen }
    }

    async fn next_seen(&mut self) -> Seen {
        within("the handler to be called", self.seen.recv()).await.expect("handler gone")
    }

    async fn state_becomes(&self, want: impl Fn(ConnectionState) -> bool) -> ConnectionState {
        let mut state = self.client.connection_state();
        *within("the connection state", state.wait_for(|s| want(*s))).await.expect("state")
    }
}

/// `a` (through `proxy`, resumable) and `b` (direct) in a group `a` made.
async fn pair(server: &TestServer, proxy: &Proxy) -> (Member, Member, GroupId) {
    let mut a = Member::join(&proxy.url(), true).await;
    let b = Member::join(&server.url.clone(), false).await;
    let group = a.client.create(None).await.expect("create");
    b.client.join(group).await.expect("join");
    assert_eq!(a.next_seen().await, Seen::Joined(b.id));
    (a, b, group)
}

fn raw(value: Value) -> Box<RawValue> {
    to_raw_value(&value).expect("serializable")
}

/// Sends `count` numbered relays from `from` to `to`, paced so that they
/// span the cuts; every 50th is a request whose echo must come back.
fn traffic(from: Arc<Client>, group: GroupId, to: UserId, count: u64) -> JoinHandle<()> {
    tokio::spawn(async move {
        for n in 0..count {
            if n % 50 == 49 {
                let echo = within("a relay's answer", from.relay(group, to, raw(json!(n)))).await.expect("relay");
                assert_eq!(echo.get(), n.to_string());
            } else {
                from.relay_notification(group, to, n).await.expect("notification");
            }
            if n % 10 == 9 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    })
}

/// Reads `count` relays from `from` and checks that they are 0..count, once each, in order.
async fn expect_in_order(member: &mut Member, from: UserId, count: u64) {
    for n in 0..count {
        assert_eq!(member.next_seen().await, Seen::Relay(from, json!(n)), "relay {n} from {from}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_both_ways_arrive_exactly_once_in_order_across_twenty_cuts() {
    const PER_DIRECTION: u64 = 5_000;
    const CUTS: usize = 20;
    let server = TestServer::start(&["--rate-limit", "0", "--resume-window", "10s"]).await;
    let proxy = Proxy::start(server.addr).await;
    let (mut a, mut b, group) = pair(&server, &proxy).await;

    let a_sends = traffic(a.client.clone(), group, b.id, PER_DIRECTION);
    let b_sends = traffic(b.client.clone(), group, a.id, PER_DIRECTION);
    let (a_id, b_id) = (a.id, b.id);
    let mut state = a.client.connection_state();
    let a_reads = tokio::spawn(async move {
        expect_in_order(&mut a, b_id, PER_DIRECTION).await;
        a
    });
    let b_reads = tokio::spawn(async move {
        expect_in_order(&mut b, a_id, PER_DIRECTION).await;
        b
    });

    let mut took = Vec::with_capacity(CUTS);
    for _ in 0..CUTS {
        tokio::time::sleep(Duration::from_millis(40)).await;
        state.mark_unchanged();
        let cut = Instant::now();
        proxy.cut();
        // Every change is seen, however fast it comes: Reconnecting, then Resumed.
        let resumed = within("resumed", async {
            loop {
                state.changed().await.expect("state");
                let now = *state.borrow_and_update();
                if matches!(now, ConnectionState::Resumed { .. } | ConnectionState::Closed) {
                    return now;
                }
            }
        })
        .await;
        assert_eq!(resumed, ConnectionState::Resumed { replayed: true });
        took.push(cut.elapsed());
    }
    within("a's traffic", a_sends).await.expect("a sends");
    within("b's traffic", b_sends).await.expect("b sends");
    let a = within("a's reading", a_reads).await.expect("a reads");
    let mut b = within("b's reading", b_reads).await.expect("b reads");

    // Same user, same group, nobody left.
    assert_eq!(a.client.session().await.expect("session").user_id, a.id);
    assert_eq!(a.client.get_members(group, None).await.expect("members").ids(), [a.id, b.id]);
    assert!(b.seen.try_recv().is_err(), "b saw nothing else (no member_left)");
    took.sort();
    eprintln!(
        "resume figures: {CUTS} cuts, cut to resumed median {:?} (min {:?}, max {:?}); {} messages, 0 lost, 0 duplicated",
        took[CUTS / 2],
        took[0],
        took[CUTS - 1],
        2 * PER_DIRECTION
    );
}

#[tokio::test]
async fn a_relay_to_a_cut_member_is_answered_after_the_resume() {
    let server = TestServer::start(&["--rate-limit", "0", "--resume-window", "10s"]).await;
    let proxy = Proxy::start(server.addr).await;
    let (mut a, b, group) = pair(&server, &proxy).await;
    proxy.set_down(true);
    proxy.cut();
    a.state_becomes(|s| s == ConnectionState::Reconnecting).await;
    let caller = b.client.clone();
    let (a_id, to) = (a.id, a.id);
    let pending = tokio::spawn(async move { caller.relay(group, to, raw(json!("offer"))).await });
    // Let a few attempts fail before the way back opens.
    tokio::time::sleep(Duration::from_millis(400)).await;
    proxy.set_down(false);
    assert_eq!(
        a.state_becomes(|s| matches!(s, ConnectionState::Resumed { .. })).await,
        ConnectionState::Resumed { replayed: true }
    );
    assert_eq!(a.next_seen().await, Seen::Relay(b.id, json!("offer")));
    let answer = within("the answer", pending).await.expect("join").expect("relay");
    assert_eq!(answer.get(), r#""offer""#);
    assert_eq!(a.client.session().await.expect("session").user_id, a_id);
}

#[tokio::test]
async fn the_window_passing_ends_the_session_for_both_sides() {
    let server = TestServer::start(&["--rate-limit", "0", "--resume-window", "500ms"]).await;
    let proxy = Proxy::start(server.addr).await;
    let (a, mut b, _) = pair(&server, &proxy).await;
    proxy.set_down(true);
    proxy.cut();
    let closed = within("the end", a.client.closed()).await;
    assert!(matches!(closed, Disconnected::Failed(_)), "{closed:?}");
    assert_eq!(*a.client.connection_state().borrow(), ConnectionState::Closed);
    assert_eq!(b.next_seen().await, Seen::Left(a.id));
}

#[tokio::test]
async fn a_clean_close_ends_the_session_at_once() {
    let server = TestServer::start(&["--rate-limit", "0", "--resume-window", "60s"]).await;
    let proxy = Proxy::start(server.addr).await;
    let (a, mut b, _) = pair(&server, &proxy).await;
    assert_eq!(a.client.close().await, Disconnected::Local);
    assert_eq!(b.next_seen().await, Seen::Left(a.id));
    assert_eq!(*a.client.connection_state().borrow(), ConnectionState::Closed);
}

#[tokio::test]
async fn with_resume_off_a_cut_ends_the_session_as_in_v1() {
    let server = TestServer::start(&["--rate-limit", "0", "--resume-window", "0"]).await;
    let proxy = Proxy::start(server.addr).await;
    let (a, mut b, _) = pair(&server, &proxy).await;
    proxy.cut();
    assert!(matches!(within("the end", a.client.closed()).await, Disconnected::Failed(_)));
    assert_eq!(b.next_seen().await, Seen::Left(a.id));
}

#[tokio::test]
async fn an_overflowed_resume_buffer_resumes_without_replay() {
    let server = TestServer::start(&["--rate-limit", "0", "--resume-window", "10s", "--resume-buffer", "2000"]).await;
    let proxy = Proxy::start(server.addr).await;
    let (mut a, b, group) = pair(&server, &proxy).await;
    proxy.set_down(true);
    proxy.cut();
    a.state_becomes(|s| s == ConnectionState::Reconnecting).await;
    for n in 0..30 {
        b.client.relay_notification(group, a.id, format!("{n:0>200}")).await.expect("notification");
    }
    // A round trip on b's connection: the server has handled all 30.
    b.client.get_members(group, None).await.expect("members");
    proxy.set_down(false);
    assert_eq!(
        a.state_becomes(|s| matches!(s, ConnectionState::Resumed { .. })).await,
        ConnectionState::Resumed { replayed: false }
    );
    // The application refreshes what it knows, and carries on.
    assert_eq!(a.client.get_members(group, None).await.expect("members").ids(), [a.id, b.id]);
    b.client.relay_notification(group, a.id, "after").await.expect("notification");
    assert_eq!(a.next_seen().await, Seen::Relay(b.id, json!("after")));
}

/// Tells the test what a `client::Member`'s handler hears: member events,
/// and broadcasts (as their text).
struct Heard(mpsc::UnboundedSender<Seen>);

impl MemberHandler for Heard {
    fn on_broadcast(&self, _: GroupId, from: UserId, body: Body) {
        if let Body::Text(text) = body {
            let _ = self.0.send(Seen::Relay(from, json!(text)));
        }
    }

    fn on_member_joined(&self, _: GroupId, member: UserId) {
        let _ = self.0.send(Seen::Joined(member));
    }

    fn on_member_left(&self, _: GroupId, member: UserId) {
        let _ = self.0.send(Seen::Left(member));
    }
}

async fn heard_next(heard: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    within("the member's handler", heard.recv()).await.expect("handler gone")
}

#[tokio::test]
async fn a_member_resumes_by_itself_and_after_a_resume_without_replay_learns_who_left_and_joined() {
    let server = TestServer::start(&["--rate-limit", "0", "--resume-window", "10s", "--resume-buffer", "2000"]).await;
    let proxy = Proxy::start(server.addr).await;
    let (tx, mut heard) = mpsc::unbounded_channel();
    let member = within("connect", client::Member::builder().no_webrtc().connect(&proxy.url(), Heard(tx)))
        .await
        .expect("connect");
    let group = member.create(None).await.expect("create");
    let stays = Member::join(&server.url.clone(), false).await;
    stays.client.join(group).await.expect("join");
    let leaver = Member::join(&server.url.clone(), false).await;
    leaver.client.join(group).await.expect("join");
    assert_eq!(heard_next(&mut heard).await, Seen::Joined(stays.id));
    assert_eq!(heard_next(&mut heard).await, Seen::Joined(leaver.id));
    let mut state = member.client().connection_state();

    // A cut: the member resumes by itself (it called `session`), nobody is told.
    proxy.cut();
    let resumed = within("resumed", state.wait_for(|s| matches!(s, ConnectionState::Resumed { .. }))).await;
    assert_eq!(*resumed.expect("state"), ConnectionState::Resumed { replayed: true });

    // A longer outage in which its resume buffer overflows while one member
    // leaves and another joins: those events are lost with the rest.
    proxy.set_down(true);
    proxy.cut();
    within("reconnecting", state.wait_for(|s| *s == ConnectionState::Reconnecting)).await.expect("state");
    leaver.client.leave(group).await.expect("leave");
    let newcomer = Member::join(&server.url.clone(), false).await;
    newcomer.client.join(group).await.expect("join");
    for n in 0..30 {
        stays.client.relay_notification(group, member.id(), format!("{n:0>200}")).await.expect("notification");
    }
    // A round trip on stays' connection: the server has handled all 30.
    stays.client.get_members(group, None).await.expect("members");
    proxy.set_down(false);
    let resumed = within("resumed", state.wait_for(|s| matches!(s, ConnectionState::Resumed { .. }))).await;
    assert_eq!(*resumed.expect("state"), ConnectionState::Resumed { replayed: false });

    // The member asked for the members again and told its handler.
    assert_eq!(heard_next(&mut heard).await, Seen::Left(leaver.id));
    assert_eq!(heard_next(&mut heard).await, Seen::Joined(newcomer.id));
    assert_eq!(member.members(group).await, [member.id(), stays.id, newcomer.id]);
    // And carries on, with the same id.
    newcomer
        .client
        .relay_notification(group, member.id(), json!({"broadcast": {"text": "after"}}))
        .await
        .expect("notification");
    assert_eq!(heard_next(&mut heard).await, Seen::Relay(newcomer.id, json!("after")));
    assert_eq!(member.client().session().await.expect("session").user_id, member.id());
}
