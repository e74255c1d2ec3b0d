//! Test harness: a real server on 127.0.0.1:0 in this process, and raw
//! WebSocket clients that speak hand-written JSON-RPC frames.
#![allow(dead_code, unreachable_pub)] // each test binary uses its own part of the harness

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use webrtc_p2p_server::{Config, Server};
use webrtc_p2p_simple::{Hub, HubStats};

/// How long any single expected event may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(10);

pub struct TestServer {
    pub addr: SocketAddr,
    pub hub: Hub,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::with_flags(&[]).await
    }

    pub async fn with_flags(flags: &[&str]) -> Self {
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

    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
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

    /// Starts a graceful shutdown and waits for the server to finish it.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(PATIENCE, &mut self.task).await.expect("shutdown in time").expect("join").expect("serve");
    }

    /// Waits until the hub holds exactly `want` (cleanup after a disconnect
    /// runs on the connection's task, a moment after the client sees it).
    pub async fn settles_at(&self, want: HubStats) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while self.hub.stats() != want {
            assert!(tokio::time::Instant::now() < deadline, "hub stuck at {:?}, want {want:?}", self.hub.stats());
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
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
