//! Test harness: a real server on 127.0.0.1:0 in this process, and raw
//! WebSocket clients that speak hand-written JSON-RPC frames.
#![allow(dead_code, unreachable_pub)] // each test binary uses its own part of the harness

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use webrtc_p2p_server::cluster::{self, NodeRouter};
use webrtc_p2p_server::{Config, Server};
use webrtc_p2p_simple::{Hub, HubStats};

/// How long any single expected event may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Nodes in each test server of the `on_nodes*` test binaries, which run
/// single-node suites again (their files included as modules) against a
/// cluster.
const CLUSTER_NODES: usize = 3;

/// Whether this test binary runs every test server as a cluster: decided by
/// the binary's name, so that the suites' own files stay unchanged.
fn cluster_binary() -> bool {
    env!("CARGO_CRATE_NAME").starts_with("on_nodes")
}

/// A server under test: one in-process node, or (in the `on_nodes*` binaries,
/// or through [`TestServer::cluster`]) several sharing a redis-server of
/// their own, with clients spread over them in turn.
pub struct TestServer {
    /// The first node's address (HTTP checks go there).
    pub addr: SocketAddr,
    /// The first node's hub.
    pub hub: Hub<NodeRouter>,
    nodes: Vec<Node>,
    /// The cluster's Redis; killed when the server is dropped.
    redis: Option<Redis>,
    /// The node the next client connects to.
    next_node: AtomicUsize,
}

/// One server running in this process.
struct Node {
    addr: SocketAddr,
    hub: Hub<NodeRouter>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Node {
    async fn start(flags: &[&str]) -> Self {
        let mut args = vec!["--listen", "127.0.0.1:0"];
        args.extend_from_slice(flags);
        let config = Config::from_flags(args).expect("flags");
        let server = Server::bind(config).await.expect("bind");
        let addr = server.local_addr().expect("addr");
        let hub = server.hub();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(async move {
            let _ = stopped.await;
        }));
        Self { addr, hub, stop: Some(stop), task }
    }

    /// Starts a graceful shutdown and waits for the node to finish it.
    async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(PATIENCE, &mut self.task).await.expect("shutdown in time").expect("join").expect("serve");
    }
}

impl TestServer {
    pub async fn start() -> Self {
        Self::with_flags(&[]).await
    }

    /// One node with these flags, or a cluster of nodes each with them in
    /// the `on_nodes*` binaries.
    pub async fn with_flags(flags: &[&str]) -> Self {
        if cluster_binary() { Self::cluster(CLUSTER_NODES, flags).await } else { Self::single(flags).await }
    }

    /// One node, whatever the binary.
    pub async fn single(flags: &[&str]) -> Self {
        Self::of(vec![Node::start(flags).await], None)
    }

    /// `n` nodes with these flags, sharing a redis-server started for them.
    pub async fn cluster(n: usize, flags: &[&str]) -> Self {
        let redis = Redis::start().await;
        let mut args = vec!["--redis", redis.url.as_str()];
        args.extend_from_slice(flags);
        let mut nodes = Vec::with_capacity(n);
        for _ in 0..n {
            nodes.push(Node::start(&args).await);
        }
        Self::of(nodes, Some(redis))
    }

    fn of(nodes: Vec<Node>, redis: Option<Redis>) -> Self {
        let first = &nodes[0];
        Self { addr: first.addr, hub: first.hub.clone(), nodes, redis, next_node: AtomicUsize::new(0) }
    }

    /// The URL of the node the next client should use: each in turn.
    pub fn url(&self) -> String {
        let node = self.next_node.fetch_add(1, Ordering::Relaxed) % self.nodes.len();
        self.node_url(node)
    }

    /// The URL of node `node` (0-based), for a client that must be there.
    pub fn node_url(&self, node: usize) -> String {
        format!("ws://{}/ws", self.nodes[node].addr)
    }

    /// How many nodes this server is.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Node `node`'s hub.
    pub fn node_hub(&self, node: usize) -> &Hub<NodeRouter> {
        &self.nodes[node].hub
    }

    /// The cluster's Redis URL (`None` for a single node).
    pub fn redis_url(&self) -> Option<&str> {
        self.redis.as_ref().map(|redis| redis.url.as_str())
    }

    /// A connected client that has not called `init`.
    pub async fn connect(&self) -> Raw {
        Raw::connect(&self.url()).await
    }

    /// A connected, initialised client and its user id.
    pub async fn user(&self) -> (Raw, String) {
        let mut client = self.connect().await;
        let id = client.ok("init", json!([])).await;
        (client, id.as_str().expect("user id").to_owned())
    }

    /// Starts a graceful shutdown of every node and waits for them.
    pub async fn shutdown(self) {
        for node in self.nodes {
            node.shutdown().await;
        }
    }

    /// Users on all nodes, and groups: those of the hub, or on a cluster
    /// those Redis holds (a group spanning nodes counts once).
    pub async fn stats(&self) -> HubStats {
        let users = self.nodes.iter().map(|node| node.hub.stats().users).sum();
        let groups = match &self.redis {
            None => self.hub.stats().groups,
            Some(redis) => redis.keys(&format!("{}{{g:*}}:c", cluster::PREFIX)).await.len(),
        };
        HubStats { users, groups }
    }

    /// On a cluster, says why a test (or part of one) does not run there,
    /// and returns true: for the known gaps of many nodes, each named in
    /// the README's "Many nodes" section.
    pub fn skips_on_a_cluster(&self, why: &str) -> bool {
        let skip = self.redis.is_some();
        if skip {
            eprintln!("not on a cluster: {why}");
        }
        skip
    }

    /// Relays waiting for their target's answer, on all nodes.
    pub fn relays_in_flight(&self) -> usize {
        self.nodes.iter().map(|node| node.hub.relays_in_flight()).sum()
    }

    /// The keys a cluster's Redis holds besides the nodes' own bookkeeping
    /// (the node list and heartbeats): users, groups, memberships. Empty
    /// for a single node.
    pub async fn redis_state(&self) -> Vec<String> {
        match &self.redis {
            Some(redis) => redis.state().await,
            None => Vec::new(),
        }
    }

    /// Waits until the server holds exactly `want` (cleanup after a
    /// disconnect runs on the connection's task, a moment after the client
    /// sees it).
    pub async fn settles_at(&self, want: HubStats) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let got = self.stats().await;
            if got == want {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "stuck at {got:?}, want {want:?}");
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

/// A redis-server of a test's own on a loopback port, without persistence
/// unless given a directory; killed on drop.
pub struct Redis {
    child: tokio::process::Child,
    pub url: String,
}

impl Redis {
    pub async fn start() -> Self {
        // A free port: bound, then released for redis-server to take.
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        Self::on_port(port, None).await
    }

    /// On `port`; with `dir`, every write is in its append-only file there
    /// before Redis answers, and a restart in `dir` finds it all again.
    pub async fn on_port(port: u16, dir: Option<&std::path::Path>) -> Self {
        use tokio::io::AsyncBufReadExt;
        let port_text = port.to_string();
        let mut args = vec!["--port", &port_text, "--bind", "127.0.0.1", "--save", ""];
        let dir_text = dir.map(|d| d.display().to_string());
        match &dir_text {
            Some(dir) => args.extend(["--appendonly", "yes", "--appendfsync", "always", "--dir", dir]),
            None => args.extend(["--appendonly", "no"]),
        }
        let mut child = tokio::process::Command::new("redis-server")
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server (apt-get install redis-server)");
        let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
        let ready = async {
            while let Some(line) = lines.next_line().await.expect("read redis-server's output") {
                if line.contains("Ready to accept connections") {
                    return;
                }
            }
            panic!("redis-server ended before it was ready");
        };
        tokio::time::timeout(PATIENCE, ready).await.expect("redis-server ready in time");
        // Keep reading its output, so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self { child, url: format!("redis://127.0.0.1:{port}") }
    }

    pub fn port(&self) -> u16 {
        self.url.rsplit(':').next().and_then(|p| p.parse().ok()).expect("port")
    }

    /// The keys it holds besides the nodes' own bookkeeping (the node list
    /// and heartbeats): users, groups, memberships, sorted.
    pub async fn state(&self) -> Vec<String> {
        let node_keys = [format!("{}nodes", cluster::PREFIX), format!("{}alive:", cluster::PREFIX)];
        let mut keys = self.keys("*").await;
        keys.retain(|key| !node_keys.iter().any(|node_key| key.starts_with(node_key.as_str())));
        keys.sort();
        keys
    }

    /// Stops the process (SIGSTOP) until [`Redis::wake`]: what the nodes
    /// send meanwhile waits in its sockets, and runs when it wakes, as on
    /// a Redis stalled under load.
    pub fn stall(&self) {
        self.signal("-STOP");
    }

    pub fn wake(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("redis-server running").to_string();
        let status = std::process::Command::new("kill").args([signal, &pid]).status().expect("kill");
        assert!(status.success(), "kill {signal} {pid}");
    }

    pub async fn kill(mut self) {
        self.child.kill().await.expect("kill redis-server");
    }

    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        let client = redis::Client::open(self.url.as_str()).expect("url");
        client.get_multiplexed_async_connection().await.expect("connect to redis")
    }

    /// The keys matching a glob `pattern`.
    pub async fn keys(&self, pattern: &str) -> Vec<String> {
        redis::cmd("KEYS").arg(pattern).query_async(&mut self.connection().await).await.expect("KEYS")
    }
}

/// What a raw client's reader saw.
#[derive(Debug)]
pub enum Event {
    Message(Value),
    /// Text that is not JSON (never expected from the server).
    Garbage(String),
    Closed {
        code: Option<u16>,
        reason: String,
    },
}

type Sink = SplitSink<WebSocketStream<MaybeTlsStream<TcpStream>>, Message>;

/// A WebSocket client speaking hand-written JSON-RPC. A background task
/// reads (and so answers pings) and forwards everything it sees.
pub struct Raw {
    sink: Sink,
    events: mpsc::UnboundedReceiver<Event>,
    /// Messages read while looking for something else, in arrival order.
    stash: VecDeque<Value>,
    next_id: i64,
    /// Owns the read half; aborted on drop so that dropping a `Raw` drops
    /// the TCP connection, as a crashed client would.
    reader: JoinHandle<()>,
}

impl Drop for Raw {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Raw {
    pub async fn connect(url: &str) -> Self {
        let (ws, _) = tokio_tungstenite::connect_async(url).await.expect("connect");
        let (sink, mut stream) = ws.split();
        let (tx, events) = mpsc::unbounded_channel();
        let reader = tokio::spawn(async move {
            while let Some(message) = stream.next().await {
                let event = match message {
                    Ok(Message::Text(text)) => match serde_json::from_str(text.as_str()) {
                        Ok(value) => Event::Message(value),
                        Err(_) => Event::Garbage(text.to_string()),
                    },
                    Ok(Message::Close(frame)) => Event::Closed {
                        code: frame.as_ref().map(|f| u16::from(f.code)),
                        reason: frame.map(|f| f.reason.to_string()).unwrap_or_default(),
                    },
                    Ok(_) => continue,
                    Err(_) => break,
                };
                if tx.send(event).is_err() {
                    return;
                }
            }
            let _ = tx.send(Event::Closed { code: None, reason: String::new() });
        });
        Self { sink, events, stash: VecDeque::new(), next_id: 0, reader }
    }

    pub async fn send(&mut self, message: Value) {
        self.send_text(&message.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.sink.send(Message::text(text)).await.expect("send");
    }

    pub async fn send_message(&mut self, message: Message) {
        self.sink.send(message).await.expect("send");
    }

    /// Sends a request with a fresh id and returns that id.
    pub async fn request(&mut self, method: &str, params: Value) -> i64 {
        self.next_id += 1;
        let id = self.next_id;
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})).await;
        id
    }

    pub async fn notify(&mut self, method: &str, params: Value) {
        self.send(json!({"jsonrpc": "2.0", "method": method, "params": params})).await;
    }

    async fn next_event(&mut self) -> Event {
        tokio::time::timeout(PATIENCE, self.events.recv())
            .await
            .expect("an event in time")
            .unwrap_or(Event::Closed { code: None, reason: String::new() })
    }

    /// The next message, stashed ones first.
    pub async fn next(&mut self) -> Value {
        if let Some(message) = self.stash.pop_front() {
            return message;
        }
        match self.next_event().await {
            Event::Message(message) => message,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    /// The first message matching `want`; others are stashed in order.
    pub async fn next_matching(&mut self, want: impl Fn(&Value) -> bool) -> Value {
        if let Some(at) = self.stash.iter().position(&want) {
            return self.stash.remove(at).expect("stashed");
        }
        loop {
            match self.next_event().await {
                Event::Message(message) if want(&message) => return message,
                Event::Message(message) => self.stash.push_back(message),
                other => panic!("expected a message, got {other:?}"),
            }
        }
    }

    /// The response with this id.
    pub async fn response(&mut self, id: i64) -> Value {
        self.next_matching(|m| m.get("method").is_none() && m["id"] == json!(id)).await
    }

    /// Calls and returns the whole response.
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.request(method, params).await;
        self.response(id).await
    }

    /// Calls and returns the result; fails the test on an error.
    pub async fn ok(&mut self, method: &str, params: Value) -> Value {
        let response = self.call(method, params).await;
        assert!(response.get("error").is_none(), "{method} failed: {response}");
        response["result"].clone()
    }

    /// Calls and returns the error code; fails the test on success.
    pub async fn err(&mut self, method: &str, params: Value) -> i64 {
        let response = self.call(method, params).await;
        response["error"]["code"].as_i64().unwrap_or_else(|| panic!("{method} should fail: {response}"))
    }

    /// The next request or notification the server sent with this method.
    pub async fn incoming(&mut self, method: &str) -> Value {
        self.next_matching(|m| m["method"] == json!(method)).await
    }

    /// Answers a request the server sent.
    pub async fn answer(&mut self, request: &Value, result: Value) {
        self.send(json!({"jsonrpc": "2.0", "id": request["id"], "result": result})).await;
    }

    /// Proves nothing else was sent to this client so far: a round trip on
    /// the same connection is answered after anything queued before it.
    /// The messages read while looking for something else, taken.
    pub fn take_stashed(&mut self) -> Vec<Value> {
        self.stash.drain(..).collect()
    }

    pub async fn nothing_pending(&mut self) {
        let id = self.request("no_such_method", json!([])).await; // answered, changes nothing
        let response = self.response(id).await;
        assert_eq!(response["error"]["code"], -32601);
        assert!(self.stash.is_empty(), "unexpected messages: {:?}", self.stash);
    }

    /// Waits for the server's close frame, skipping messages; returns its code
    /// and reason.
    pub async fn closed(&mut self) -> (Option<u16>, String) {
        loop {
            match self.next_event().await {
                Event::Closed { code, reason } => return (code, reason),
                Event::Message(message) => self.stash.push_back(message),
                Event::Garbage(text) => panic!("server sent garbage: {text}"),
            }
        }
    }

    /// The next message, or `Err(close code)` once the connection closed:
    /// for clients that run until the server closes them.
    pub async fn next_or_closed(&mut self) -> Result<Value, Option<u16>> {
        if let Some(message) = self.stash.pop_front() {
            return Ok(message);
        }
        match self.next_event().await {
            Event::Message(message) => Ok(message),
            Event::Closed { code, .. } => Err(code),
            Event::Garbage(text) => panic!("server sent garbage: {text}"),
        }
    }

    /// Sends unless the connection is already closing; whether it was sent.
    pub async fn try_send(&mut self, message: Value) -> bool {
        self.sink.send(Message::text(message.to_string())).await.is_ok()
    }

    /// Every message received before the answer to a fresh round trip
    /// (stashed ones included), in arrival order.
    pub async fn received_so_far(&mut self) -> Vec<Value> {
        let id = self.request("no_such_method", json!([])).await;
        let answer = self.response(id).await;
        // Method not found, or Busy past the rate limit: answered in order either way.
        assert!([-32601, -32009].contains(&answer["error"]["code"].as_i64().unwrap_or(0)), "{answer}");
        self.stash.drain(..).collect()
    }

    /// Sends text unless the connection is already closing; whether it was sent.
    pub async fn try_send_text(&mut self, text: &str) -> bool {
        self.sink.send(Message::text(text)).await.is_ok()
    }

    /// Stops reading (and so answering pings) without closing, like a client
    /// that hangs: the server's writes pile up in the kernel, then its queue.
    pub fn stall(&mut self) {
        self.reader.abort();
    }

    /// Closes cleanly (close frame) and waits for the server's reply.
    pub async fn close(mut self) {
        let _ = self.sink.send(Message::Close(None)).await;
        self.closed().await;
    }
}

/// Three users A (owner), B and C in one default-capability group.
pub async fn group_of_three(server: &TestServer) -> (String, [(Raw, String); 3]) {
    let (mut a, ua) = server.user().await;
    let (mut b, ub) = server.user().await;
    let (mut c, uc) = server.user().await;
    let group = a.ok("create", json!([])).await.as_str().expect("group id").to_owned();
    b.ok("join", json!([group])).await;
    c.ok("join", json!([group])).await;
    a.incoming("member_joined").await;
    a.incoming("member_joined").await;
    b.incoming("member_joined").await;
    (group, [(a, ua), (b, ub), (c, uc)])
}

impl TestServer {
    /// `GET /metrics`, the body only; on a cluster, each sample summed
    /// over the nodes (every gauge and counter counts what its node saw).
    pub async fn scrape(&self) -> String {
        let mut bodies = Vec::with_capacity(self.nodes.len());
        for node in &self.nodes {
            bodies.push(scrape(node.addr).await);
        }
        if bodies.len() == 1 { bodies.remove(0) } else { sum_samples(&bodies) }
    }

    /// Node `node`'s own `GET /metrics` body.
    pub async fn scrape_node(&self, node: usize) -> String {
        scrape(self.nodes[node].addr).await
    }

    /// Waits until the metric sample `name` (labels included, as the text
    /// format writes them) reads `want`.
    pub async fn metric_settles_at(&self, name: &str, want: f64) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let got = metric(&self.scrape().await, name);
            if got == Some(want) {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "{name} stuck at {got:?}, want {want}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

async fn scrape(addr: SocketAddr) -> String {
    let response = http(addr, "GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default()
}

/// One exposition whose samples are the sums of the same samples in
/// `bodies`, in the first body's order (comments dropped).
fn sum_samples(bodies: &[String]) -> String {
    let mut order: Vec<&str> = Vec::new();
    let mut sums: std::collections::HashMap<&str, f64> = std::collections::HashMap::new();
    for line in bodies.iter().flat_map(|body| body.lines()).filter(|line| !line.starts_with('#')) {
        let Some((name, value)) = line.rsplit_once(' ') else { continue };
        let Ok(value) = value.trim().parse::<f64>() else { continue };
        let sum = sums.entry(name).or_insert_with(|| {
            order.push(name);
            0.0
        });
        *sum += value;
    }
    order.iter().map(|name| format!("{name} {}\n", sums[name])).collect()
}

/// The value of one sample in a text exposition: `name` is everything
/// before the value, labels included (`webrtc_p2p_refused_total{limit="rate"}`).
pub fn metric(exposition: &str, name: &str) -> Option<f64> {
    exposition.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Sends a raw HTTP request and reads the whole response (the request
/// should say `Connection: close`).
pub async fn http(addr: SocketAddr, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut response)).await.expect("response in time").expect("read");
    String::from_utf8_lossy(&response).into_owned()
}

/// Sends a raw HTTP request and reads the response head only (for answers
/// on connections the server may keep open).
pub async fn http_head(addr: SocketAddr, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(PATIENCE, stream.read(&mut byte)).await.expect("head in time").expect("read");
        assert_eq!(n, 1, "connection closed inside the head: {}", String::from_utf8_lossy(&head));
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// An upgrade request for `/ws` with `extra` header lines (each ending in
/// `\r\n`).
pub fn upgrade_request(extra: &str) -> String {
    format!(
        "GET /ws HTTP/1.1\r\nHost: test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
    )
}

/// A WebSocket spoken byte by byte over TCP, for the frames no client
/// library sends: unmasked, reserved bits and opcodes, broken fragments.
pub struct WireClient {
    stream: TcpStream,
    /// Bytes read but not yet parsed into a frame.
    buffer: Vec<u8>,
    /// The server's 101 response head.
    pub head: String,
}

/// A frame the server sent.
#[derive(Debug, PartialEq, Eq)]
pub struct WireFrame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

pub mod opcode {
    pub const CONTINUATION: u8 = 0x0;
    pub const TEXT: u8 = 0x1;
    pub const BINARY: u8 = 0x2;
    pub const CLOSE: u8 = 0x8;
    pub const PING: u8 = 0x9;
    pub const PONG: u8 = 0xA;
}

impl WireClient {
    /// Upgrades a fresh TCP connection with `extra` request headers; fails
    /// the test unless the answer is 101.
    pub async fn connect(addr: SocketAddr, extra: &str) -> Self {
        use tokio::io::AsyncWriteExt;
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        stream.write_all(upgrade_request(extra).as_bytes()).await.expect("write");
        let mut client = Self { stream, buffer: Vec::new(), head: String::new() };
        let end = loop {
            if let Some(at) = client.buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            assert!(client.fill().await, "connection closed during the handshake");
        };
        client.head = String::from_utf8_lossy(&client.buffer[..end]).into_owned();
        client.buffer.drain(..end);
        assert!(client.head.starts_with("HTTP/1.1 101"), "{}", client.head);
        client
    }

    /// Reads more bytes; `false` at end of stream (or a reset).
    async fn fill(&mut self) -> bool {
        use tokio::io::AsyncReadExt;
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout(PATIENCE, self.stream.read(&mut chunk)).await.expect("bytes in time") {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buffer.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// A frame as the RFC lays it out; `rsv` is the three reserved bits
    /// (0 to 7), `mask` the masking key (`None`: unmasked, which a client
    /// must not send).
    pub fn encode(fin: bool, rsv: u8, opcode: u8, mask: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![(u8::from(fin) << 7) | ((rsv & 7) << 4) | (opcode & 0xF)];
        let masked = u8::from(mask.is_some()) << 7;
        match payload.len() {
            n @ 0..=125 => out.push(masked | n as u8),
            n @ 126..=0xFFFF => {
                out.push(masked | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(masked | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        match mask {
            Some(key) => {
                out.extend_from_slice(&key);
                out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
            }
            None => out.extend_from_slice(payload),
        }
        out
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        // The server may have closed already; what it answered is what counts.
        let _ = self.stream.write_all(bytes).await;
    }

    /// Sends one masked frame.
    pub async fn send(&mut self, fin: bool, opcode: u8, payload: &[u8]) {
        self.send_raw(&Self::encode(fin, 0, opcode, Some([0x37, 0xfa, 0x21, 0x3d]), payload)).await;
    }

    /// Sends a close frame with this code and reason.
    pub async fn send_close(&mut self, code: u16, reason: &[u8]) {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(reason);
        self.send(true, opcode::CLOSE, &payload).await;
    }

    /// The next frame, or `None` once the server closed the TCP connection.
    pub async fn frame(&mut self) -> Option<WireFrame> {
        loop {
            if let Some((frame, used)) = parse_server_frame(&self.buffer) {
                self.buffer.drain(..used);
                return Some(frame);
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    /// The next text frame, parsed; fails the test on anything else.
    pub async fn json(&mut self) -> Value {
        loop {
            match self.frame().await {
                Some(WireFrame { opcode: opcode::TEXT, payload, .. }) => {
                    return serde_json::from_slice(&payload).expect("JSON");
                }
                Some(WireFrame { opcode: opcode::PING | opcode::PONG, .. }) => {}
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// Reads up to the server's close frame and returns its code (`None`:
    /// no code); then checks the server also ends the TCP connection.
    pub async fn close_code(&mut self) -> Option<u16> {
        let code = loop {
            match self.frame().await {
                Some(WireFrame { opcode: opcode::CLOSE, payload, .. }) => {
                    break (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                }
                Some(_) => {}
                None => panic!("the TCP connection ended without a close frame"),
            }
        };
        // Answer the close (as a client must), then expect the end of stream.
        self.send(true, opcode::CLOSE, &[]).await;
        while let Some(frame) = self.frame().await {
            assert_ne!(frame.opcode, opcode::TEXT, "data after the close frame");
        }
        code
    }
}

/// One unmasked server frame at the start of `bytes`, and its length.
fn parse_server_frame(bytes: &[u8]) -> Option<(WireFrame, usize)> {
    let (&b0, rest) = bytes.split_first()?;
    let (&b1, rest) = rest.split_first()?;
    assert_eq!(b1 & 0x80, 0, "the server masked a frame");
    let (len, header) = match b1 & 0x7F {
        126 => (usize::from(u16::from_be_bytes(rest.get(..2)?.try_into().ok()?)), 4),
        127 => (usize::try_from(u64::from_be_bytes(rest.get(..8)?.try_into().ok()?)).ok()?, 10),
        n => (usize::from(n), 2),
    };
    let payload = bytes.get(header..header + len)?.to_vec();
    Some((WireFrame { fin: b0 & 0x80 != 0, opcode: b0 & 0x0F, payload }, header + len))
}

/// The server binary on a free loopback port, and its address (read from
/// the line it prints on stdout). Killed when dropped.
pub async fn spawn_binary(flags: &[&str]) -> (tokio::process::Child, SocketAddr) {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_webrtc-p2p-server"))
        .args(["--listen", "127.0.0.1:0"])
        .args(flags)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the server");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    tokio::time::timeout(PATIENCE, tokio::io::BufReader::new(stdout).read_line(&mut line))
        .await
        .expect("address in time")
        .expect("read stdout");
    let addr = line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("unexpected: {line:?}"));
    (child, addr.parse().expect("an address"))
}

/// Sends SIGTERM, as a service manager would.
pub async fn sigterm(child: &tokio::process::Child) {
    let pid = child.id().expect("running").to_string();
    let status = tokio::process::Command::new("kill").args(["-TERM", &pid]).status().await.expect("kill");
    assert!(status.success(), "kill -TERM {pid}: {status}");
}

/// The resident set of a server process (`spawn_binary`) in KiB.
pub fn rss_kib(server: &tokio::process::Child) -> u64 {
    let pid = server.id().expect("running");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}
