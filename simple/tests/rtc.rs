//! Rust members with direct links (WebRTC DataChannels over loopback)
//! against the real server, started in this process on 127.0.0.1:0; and the
//! `peer` example driven through its stdin.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use jsonrpsee::types::{ErrorObject, ErrorObjectOwned};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::mpsc;
use tokio::time::timeout;
use webrtc_p2p_interfaces::{ErrorCode, GroupId, UserId};
use webrtc_p2p_simple::app_error;
use webrtc_p2p_simple::client::payload::{Body, MAX_BODY_BYTES};
use webrtc_p2p_simple::client::rtc::{LinkState, RtcConfig};
use webrtc_p2p_simple::client::transfer::STALL_TIMEOUT;
use webrtc_p2p_simple::client::{Member, MemberBuilder, MemberHandler, Progress, Receiving, SendOptions};

mod common;
use common::{MIB, TestServer, assert_progress_to};

/// How long any expected event may take before the test fails: DTLS
/// handshakes on a loaded 2-core machine take a while, and a 10 MiB
/// unicast and its reply through the unoptimised SCTP stack took over 30 s
/// once beside the other tests of this file (together they take ~1 min).
const PATIENCE: Duration = Duration::from_secs(60);

async fn within<F: Future>(what: &str, future: F) -> F::Output {
    timeout(PATIENCE, future).await.unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

#[derive(Debug, Clone, PartialEq)]
enum Heard {
    Broadcast(UserId, Body),
    Unicast(UserId, Body),
    Link(UserId, LinkState),
    Left(UserId),
}

/// Reports every call; answers unicasts with text prefixed `re:`, bytes reversed.
struct Recorder(mpsc::UnboundedSender<Heard>);

impl MemberHandler for Recorder {
    fn on_broadcast(&self, _group_id: GroupId, from: UserId, body: Body) {
        let _ = self.0.send(Heard::Broadcast(from, body));
    }

    async fn on_unicast(&self, _group_id: GroupId, from: UserId, body: Body) -> Result<Body, ErrorObjectOwned> {
        let _ = self.0.send(Heard::Unicast(from, body.clone()));
        match body {
            Body::Text(text) if text == "throw" => Err(ErrorObject::owned(-32603, "failed on purpose", None::<()>)),
            Body::Text(text) => Ok(Body::Text(format!("re:{text}"))),
            Body::Bytes(mut bytes) => {
                bytes.reverse();
                Ok(Body::Bytes(bytes))
            }
        }
    }

    fn on_member_left(&self, _group_id: GroupId, member: UserId) {
        let _ = self.0.send(Heard::Left(member));
    }

    fn on_link_state(&self, _group_id: GroupId, member: UserId, state: LinkState) {
        let _ = self.0.send(Heard::Link(member, state));
    }
}

/// Loopback only, as every test here.
fn loopback() -> RtcConfig {
    RtcConfig { host_addresses: Some(vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]), ..RtcConfig::default() }
}

struct Rust {
    member: Member,
    heard: mpsc::UnboundedReceiver<Heard>,
}

impl Rust {
    async fn connect(server: &TestServer, builder: MemberBuilder) -> Self {
        let (tx, heard) = mpsc::unbounded_channel();
        let member = within("connect", builder.connect(&server.url, Recorder(tx))).await.expect("connect");
        Self { member, heard }
    }

    fn id(&self) -> UserId {
        self.member.id()
    }

    /// The next call of the handler that `pick` takes, skipping the others.
    async fn next<T>(&mut self, what: &str, mut pick: impl FnMut(Heard) -> Option<T>) -> T {
        within(what, async {
            loop {
                if let Some(found) = pick(self.heard.recv().await.expect("handler gone")) {
                    return found;
                }
            }
        })
        .await
    }

    async fn link(&mut self, peer: UserId, state: LinkState) {
        self.next(&format!("link to {peer} {state}"), |heard| (heard == Heard::Link(peer, state)).then_some(())).await;
    }

    /// `peer` left and its link closed, in either order.
    async fn left_and_closed(&mut self, peer: UserId) {
        let (mut left, mut closed) = (false, false);
        self.next(&format!("{peer} to leave"), |heard| {
            left |= heard == Heard::Left(peer);
            closed |= heard == Heard::Link(peer, LinkState::Closed);
            (left && closed).then_some(())
        })
        .await;
    }

    async fn broadcast_from(&mut self, from: UserId) -> Body {
        self.next("a broadcast", |heard| match heard {
            Heard::Broadcast(sender, body) if sender == from => Some(body),
            _ => None,
        })
        .await
    }
}

/// Two members of one new group, their link direct both ways.
async fn direct_pair(server: &TestServer) -> (Rust, Rust, GroupId) {
    let mut a = Rust::connect(server, Member::builder().rtc(loopback())).await;
    let mut b = Rust::connect(server, Member::builder().rtc(loopback())).await;
    let group = within("create", a.member.create(None)).await.expect("create");
    within("join", b.member.join(group)).await.expect("join");
    let (a_id, b_id) = (a.id(), b.id());
    a.link(b_id, LinkState::Direct).await;
    b.link(a_id, LinkState::Direct).await;
    assert_eq!(a.member.link_state(group, b_id).await, LinkState::Direct);
    assert_eq!(b.member.link_state(group, a_id).await, LinkState::Direct);
    (a, b, group)
}

#[tokio::test]
async fn two_rust_members_talk_on_a_data_channel_not_through_the_server() {
    let server = TestServer::start(&[]).await;
    let (mut a, mut b, group) = direct_pair(&server).await;
    let (a_id, b_id) = (a.id(), b.id());

    // The server counts every relay request: unicasts on the channel are none.
    let relays_before = server.relays().await;

    within("broadcast", a.member.broadcast(group, "hello b")).await.expect("broadcast");
    assert_eq!(b.broadcast_from(a_id).await, Body::Text("hello b".into()));
    let all_bytes: Vec<u8> = (0..=255).collect();
    within("broadcast", b.member.broadcast(group, all_bytes.clone())).await.expect("broadcast");
    assert_eq!(a.broadcast_from(b_id).await, Body::Bytes(all_bytes));

    let reply = within("unicast", a.member.unicast(group, b_id, "ping")).await.expect("reply");
    assert_eq!(reply, Body::Text("re:ping".into()));
    let reply = within("unicast", b.member.unicast(group, a_id, "pong")).await.expect("reply");
    assert_eq!(reply, Body::Text("re:pong".into()));
    let error = within("unicast", b.member.unicast(group, a_id, "throw")).await.expect_err("an error reply");
    assert_eq!(app_error(&error), None);
    assert!(error.to_string().contains("failed on purpose"), "{error}");

    // The largest body, every byte value, both ways, broadcast and unicast.
    let largest: Vec<u8> = (0..MAX_BODY_BYTES).map(|i| (i % 251) as u8).collect();
    let mut reversed = largest.clone();
    reversed.reverse();
    within("broadcast", a.member.broadcast(group, largest.clone())).await.expect("broadcast");
    assert_eq!(b.broadcast_from(a_id).await, Body::Bytes(largest.clone()));
    let reply = within("unicast", b.member.unicast(group, a_id, largest.clone())).await.expect("reply");
    assert_eq!(reply, Body::Bytes(reversed.clone()));
    let reply = within("unicast", a.member.unicast(group, b_id, largest.clone())).await.expect("reply");
    assert_eq!(reply, Body::Bytes(reversed));
    let text = "é".repeat(MAX_BODY_BYTES / 2);
    within("broadcast", b.member.broadcast(group, text.as_str())).await.expect("broadcast");
    assert_eq!(a.broadcast_from(b_id).await, Body::Text(text));
    assert_eq!(server.relays().await, relays_before, "a unicast went through the server");
}

/// Messages larger than one frame go on the channel as transfers (a start
/// frame, then chunks), both ways, and never through the server; a small
/// message sent behind a large one does not wait for all of it; past the
/// receiver's `max_message_bytes`, LimitExceeded.
#[tokio::test]
async fn large_messages_go_on_the_data_channel_in_chunks() {
    let server = TestServer::start(&[]).await;
    let (mut a, mut b, group) = direct_pair(&server).await;
    let (a_id, b_id) = (a.id(), b.id());
    let relays_before = server.relays().await;

    // Not a multiple of the chunk size, every byte value.
    let bytes: Vec<u8> = (0..10 * 1024 * 1024 + 17).map(|i: u32| (i % 251) as u8).collect();
    // The large one resolves once all of it is written: the small one goes meanwhile.
    let large = a.member.broadcast(group, bytes.clone());
    let small = async {
        within("broadcast", a.member.broadcast(group, "small, sent after")).await.expect("broadcast");
        assert_eq!(b.broadcast_from(a_id).await, Body::Text("small, sent after".into()), "not behind 10 MiB");
    };
    let (large, ()) = tokio::join!(within("broadcast", large), small);
    large.expect("broadcast");
    assert!(b.broadcast_from(a_id).await == Body::Bytes(bytes.clone()), "another broadcast arrived");

    let mut reversed = bytes.clone();
    reversed.reverse();
    let reply = within("unicast", b.member.unicast(group, a_id, bytes)).await.expect("reply");
    assert_eq!(reply, Body::Bytes(reversed), "a large reply comes back in chunks too");
    let text = "größer ✓ ".repeat(400_000);
    let reply = within("unicast", a.member.unicast(group, b_id, text.clone())).await.expect("reply");
    assert_eq!(reply, Body::Text(format!("re:{text}")));
    assert_eq!(server.relays().await, relays_before, "a large message went through the server");

    let small = Rust::connect(&server, Member::builder().rtc(loopback()).max_message_bytes(1024 * 1024)).await;
    within("join", small.member.join(group)).await.expect("join");
    a.link(small.id(), LinkState::Direct).await;
    let too_large = within("unicast", a.member.unicast(group, small.id(), vec![0u8; 2 * 1024 * 1024])).await;
    assert_eq!(app_error(&too_large.expect_err("over its limit")), Some(ErrorCode::LimitExceeded));
}

/// Within this a receiver has let go of a cancelled transfer, or the test
/// fails: a third of the stall timeout that would free it anyway.
const FREED_WITHIN: Duration = Duration::from_secs(STALL_TIMEOUT.as_secs() / 3);

#[tokio::test]
async fn sends_on_a_data_channel_report_their_progress_up_to_the_total() {
    let server = TestServer::start(&[]).await;
    let (a, mut b, group) = direct_pair(&server).await;
    let relays_before = server.relays().await;

    let bytes: Vec<u8> = (0..MIB + 17).map(|i| (i % 251) as u8).collect();
    let mut reports = Vec::new();
    let sent = a.member.broadcast_with(group, bytes.clone(), SendOptions::new().on_progress(|p| reports.push(p)));
    within("broadcast", sent).await.expect("broadcast");
    assert_progress_to(&reports, bytes.len() as u64);
    assert!(reports.len() >= 2, "no report before the end: {reports:?}");
    assert!(b.broadcast_from(a.id()).await == Body::Bytes(bytes.clone()), "another broadcast arrived");

    reports.clear();
    let sent = b.member.unicast_with(group, a.id(), bytes.clone(), SendOptions::new().on_progress(|p| reports.push(p)));
    let reply = within("unicast", sent).await.expect("unicast");
    assert_progress_to(&reports, bytes.len() as u64);
    assert_eq!(reply.len(), bytes.len());
    reports.clear();
    let sent = b.member.unicast_with(group, a.id(), "small", SendOptions::new().on_progress(|p| reports.push(p)));
    assert_eq!(within("unicast", sent).await.expect("unicast"), Body::from("re:small"));
    assert_eq!(reports, [Progress { sent: 5, total: 5 }]);
    assert_eq!(server.relays().await, relays_before, "a message went through the server");
}

#[tokio::test]
async fn dropping_a_send_on_a_data_channel_stops_it_and_frees_the_receiver_at_once() {
    let server = TestServer::start(&[]).await;
    let (a, mut b, group) = direct_pair(&server).await;
    let mut receiving = b.member.receiving();
    assert_eq!(*receiving.borrow(), Receiving::default());

    let mut last = Progress::default();
    let send = a.member.broadcast_with(group, vec![7u8; 32 * MIB], SendOptions::new().on_progress(|p| last = p));
    tokio::select! {
        sent = send => panic!("the send ended before it was cancelled: {sent:?}"),
        held = within("b to hold a MiB", receiving.wait_for(|r| r.bytes >= MIB as u64)) => {
            assert_eq!(held.expect("b's meter").messages, 1);
        }
    }
    // The send is dropped: the sender stopped, and b lets go long before its stall timeout.
    assert!(last.sent < last.total, "the whole message went: {last:?}");
    let freed = timeout(FREED_WITHIN, receiving.wait_for(|r| *r == Receiving::default())).await.is_ok();
    assert!(freed, "b still holds the aborted transfer: {:?}", *receiving.borrow());

    // The next transfer on the channel arrives, and the aborted one never
    // does (transfers keep their order on the main channel).
    let next: Vec<u8> = (0..MIB).map(|i| (i % 251) as u8).collect();
    within("broadcast", a.member.broadcast(group, next.clone())).await.expect("broadcast");
    assert!(b.broadcast_from(a.id()).await == Body::Bytes(next), "the aborted message arrived");
    assert_eq!(*receiving.borrow(), Receiving::default());

    // A unicast too: dropped while its request is being written.
    let send = a.member.unicast(group, b.id(), vec![7u8; 32 * MIB]);
    tokio::select! {
        sent = send => panic!("the unicast ended before it was cancelled: {sent:?}"),
        held = within("b to hold a MiB", receiving.wait_for(|r| r.bytes >= MIB as u64)) => {
            assert_eq!(held.expect("b's meter").messages, 1);
        }
    }
    let freed = timeout(FREED_WITHIN, receiving.wait_for(|r| *r == Receiving::default())).await.is_ok();
    assert!(freed, "b still holds the aborted request: {:?}", *receiving.borrow());
}

#[tokio::test]
async fn a_receiver_that_leaves_mid_transfer_on_a_data_channel_fails_the_unicast_with_peer_gone() {
    let server = TestServer::start(&[]).await;
    let (a, b, group) = direct_pair(&server).await;
    let mut receiving = b.member.receiving();
    let b_leaves = async {
        within("b to hold a MiB", receiving.wait_for(|r| r.bytes >= MIB as u64)).await.expect("b's meter");
        within("leave", b.member.leave(group)).await.expect("leave");
    };
    let sent = within("unicast", a.member.unicast(group, b.id(), vec![7u8; 32 * MIB]));
    let (sent, ()) = tokio::join!(sent, b_leaves);
    assert_eq!(app_error(&sent.expect_err("b left mid-transfer")), Some(ErrorCode::PeerGone));
    let freed = timeout(FREED_WITHIN, receiving.wait_for(|r| *r == Receiving::default())).await.is_ok();
    assert!(freed, "b still holds the transfer: {:?}", *receiving.borrow());
}

#[tokio::test]
async fn broadcasts_on_a_channel_arrive_once_and_in_order() {
    let server = TestServer::start(&[]).await;
    let (a, mut b, group) = direct_pair(&server).await;
    const COUNT: usize = 200;
    for i in 0..COUNT {
        within("broadcast", a.member.broadcast(group, format!("{i}"))).await.expect("broadcast");
    }
    for i in 0..COUNT {
        assert_eq!(b.broadcast_from(a.id()).await, Body::Text(format!("{i}")));
    }
    let after = timeout(Duration::from_millis(200), b.heard.recv()).await;
    assert!(!matches!(after, Ok(Some(Heard::Broadcast(..)))), "a broadcast arrived twice: {after:?}");
}

#[tokio::test]
async fn a_member_without_webrtc_is_relayed_at_once_with_the_same_api() {
    let server = TestServer::start(&[]).await;
    let mut a = Rust::connect(&server, Member::builder().rtc(loopback())).await;
    let mut b = Rust::connect(&server, Member::builder().no_webrtc()).await;
    let group = within("create", a.member.create(None)).await.expect("create");
    within("join", b.member.join(group)).await.expect("join");
    let started = tokio::time::Instant::now();
    a.link(b.id(), LinkState::Relayed).await;
    assert!(started.elapsed() < RtcConfig::default().connect_timeout / 2, "relayed only at the timeout");
    assert_eq!(b.member.link_state(group, a.id()).await, LinkState::Relayed);

    within("broadcast", a.member.broadcast(group, "over the server")).await.expect("broadcast");
    assert_eq!(b.broadcast_from(a.id()).await, Body::Text("over the server".into()));
    let reply = within("unicast", b.member.unicast(group, a.id(), vec![1, 2, 3])).await.expect("reply");
    assert_eq!(reply, Body::Bytes(vec![3, 2, 1]));
}

#[tokio::test]
async fn blocked_candidates_fall_back_to_the_relay_at_the_connect_timeout() {
    let server = TestServer::start(&[]).await;
    let blocked = RtcConfig { block_candidates: true, connect_timeout: Duration::from_secs(2), ..loopback() };
    let mut a = Rust::connect(&server, Member::builder().rtc(blocked)).await;
    let mut b = Rust::connect(&server, Member::builder().rtc(loopback())).await;
    let group = within("create", a.member.create(None)).await.expect("create");
    within("join", b.member.join(group)).await.expect("join");
    // Sent while connecting: held, then relayed.
    let (a_id, b_id) = (a.id(), b.id());
    let (member, heard) = (&a.member, &mut a.heard);
    let relayed = within("the link relayed", async {
        while heard.recv().await.expect("handler gone") != Heard::Link(b_id, LinkState::Relayed) {}
    });
    let (reply, ()) = tokio::join!(member.unicast(group, b_id, "early"), relayed);
    assert_eq!(reply.expect("reply"), Body::Text("re:early".into()));
    // The peer's link falls back too: a's offer carried no candidates and a
    // took none of b's, so b's own timeout (the default) relays it.
    b.link(a_id, LinkState::Relayed).await;
    within("broadcast", b.member.broadcast(group, "relayed")).await.expect("broadcast");
    assert_eq!(a.broadcast_from(b_id).await, Body::Text("relayed".into()));
}

#[tokio::test]
async fn a_member_that_leaves_or_dies_closes_its_links() {
    let server = TestServer::start(&[]).await;
    let (mut a, b, group) = direct_pair(&server).await;
    let b_id = b.id();
    within("leave", b.member.leave(group)).await.expect("leave");
    a.left_and_closed(b_id).await;
    let error = within("unicast", a.member.unicast(group, b_id, "gone?")).await.expect_err("not a member");
    assert_eq!(app_error(&error), Some(ErrorCode::UserNotFound));

    let mut c = Rust::connect(&server, Member::builder().rtc(loopback())).await;
    within("join", c.member.join(group)).await.expect("join");
    let c_id = c.id();
    a.link(c_id, LinkState::Direct).await;
    c.link(a.id(), LinkState::Direct).await;
    drop(c);
    a.left_and_closed(c_id).await;
}

/// The `peer` example, built next to this test by `cargo test`.
fn peer_bin() -> PathBuf {
    let mut dir = std::env::current_exe().expect("test binary");
    dir.pop();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join("examples").join(format!("peer{}", std::env::consts::EXE_SUFFIX))
}

/// A `peer` process: commands in, event lines out.
struct Cli {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    /// Lines read but not expected yet: events of one command may print
    /// in either order with those of another.
    unread: Vec<String>,
}

impl Cli {
    fn start(url: &str) -> Self {
        let mut child = Command::new(peer_bin())
            .args(["--url", url, "--ice-address", "127.0.0.1"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {} (cargo build --examples): {e}", peer_bin().display()));
        let stdin = child.stdin.take().expect("stdin");
        let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        Self { child, stdin, lines, unread: Vec::new() }
    }

    async fn send(&mut self, command: &str) {
        self.stdin.write_all(format!("{command}\n").as_bytes()).await.expect("write a command");
    }

    /// The first line not expected yet that starts with `prefix`.
    async fn expect(&mut self, prefix: &str) -> String {
        if let Some(at) = self.unread.iter().position(|line| line.starts_with(prefix)) {
            return self.unread.remove(at);
        }
        within(&format!("a line starting {prefix:?}"), async {
            loop {
                let line = self.lines.next_line().await.expect("read").expect("the peer ended");
                if line.starts_with(prefix) {
                    return line;
                }
                self.unread.push(line);
            }
        })
        .await
    }
}

#[tokio::test]
async fn the_command_line_peer_joins_links_directly_sends_asks_and_quits() {
    let server = TestServer::start(&[]).await;
    let mut rust = Rust::connect(&server, Member::builder().rtc(loopback())).await;
    let group = within("create", rust.member.create(None)).await.expect("create");
    let mut cli = Cli::start(&server.url);
    let id_line = cli.expect("id ").await;
    let cli_id: UserId = id_line["id ".len()..].parse().expect("a user id");

    cli.send(&format!("join {group}")).await;
    cli.expect(&format!("joined {group}")).await;
    cli.expect(&format!("link {} direct", rust.id())).await;
    cli.send("links").await;
    assert_eq!(cli.expect("links").await, format!("links {}=direct", rust.id()));
    cli.send("members").await;
    assert_eq!(cli.expect("members").await, format!("members {} {cli_id}", rust.id()));

    cli.send("send hello from the terminal").await;
    cli.expect("sent").await;
    assert_eq!(rust.broadcast_from(cli_id).await, Body::Text("hello from the terminal".into()));
    cli.send(&format!("ask {} what time is it", rust.id())).await;
    assert_eq!(cli.expect("reply").await, format!("reply {} re:what time is it", rust.id()));

    within("broadcast", rust.member.broadcast(group, "hi terminal")).await.expect("broadcast");
    assert_eq!(cli.expect("broadcast").await, format!("broadcast {} hi terminal", rust.id()));
    let reply = within("unicast", rust.member.unicast(group, cli_id, "echo me")).await.expect("reply");
    assert_eq!(reply, Body::Text("echo me".into()));
    cli.expect(&format!("unicast {} echo me", rust.id())).await;

    cli.send("bogus").await;
    cli.expect("error unknown command: bogus").await;
    cli.send("quit").await;
    cli.expect("bye").await;
    let status = within("the peer to exit", cli.child.wait()).await.expect("exit status");
    assert!(status.success(), "{status}");
    rust.next("the leave", |heard| (heard == Heard::Left(cli_id)).then_some(())).await;
}
