//! The fuzz entry point, shared by the cargo-fuzz target (`fuzz_targets/`)
//! and the stable regression test (`server/tests/fuzz_regressions.rs`,
//! which includes this file): bytes a client could send go through
//! WebSocket frame decoding (tungstenite, server role, the server's size
//! limits) and JSON-RPC dispatch into a real `Hub`, the way
//! `server/src/connection.rs` does it, and these must hold:
//!
//! - nothing panics (a panic is what libFuzzer reports);
//! - every frame the server queues is a JSON-RPC 2.0 object or array;
//! - every request with an id gets exactly one answer, with that id;
//! - once both connections close, the hub holds nothing and no relay waits.
//!
//! The first input byte picks the mode: even, the rest is a raw client byte
//! stream (frames); odd, the rest is one text message. In messages `$G`,
//! `$U` and `$M` become the shared group, the other member and the fuzzed
//! client's own id, so relays can reach someone. The other member has one
//! relay waiting on the fuzzed client (id `"s1"`), so its answers matter.

use std::io::{Cursor, Read, Write};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use jsonrpsee::core::server::{ConnectionId, Extensions, Methods};
use serde_json::Value;
use serde_json::value::RawValue;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, WebSocket};
use webrtc_p2p_interfaces::SignalingServer;
use webrtc_p2p_simple::wire::{self, Incoming, Started};
use webrtc_p2p_simple::{CloseReason, Hub, Limits, PeerHandle, Session};

/// Small limits, so that inputs can reach them.
const LIMITS: Limits = Limits {
    max_message_size: 64 * 1024,
    relay_timeout: Duration::from_secs(1),
    max_relays_in_flight: 4,
    max_groups_per_user: 4,
    max_members_per_group: 4,
    max_queued_frames: 4096,
    max_batch_len: 16,
    ..Limits::DEFAULT
};

/// Runs one input; panics when an invariant breaks.
pub fn run(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    runtime().block_on(async {
        let mut world = World::new();
        if mode % 2 == 0 {
            world.frames(rest);
        } else {
            world.message(&String::from_utf8_lossy(rest));
        }
        world.finish().await;
    });
}

/// One runtime for all inputs; its clock is paused, so timeouts fire as
/// soon as nothing else can run instead of after real time.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().expect("runtime")
    })
}

/// One side of the hub: a session and the frames queued for it.
struct Client {
    session: Arc<Session>,
    ext: Extensions,
}

impl Client {
    fn new() -> Self {
        let session = Arc::new(Session::new(Arc::new(PeerHandle::new(LIMITS.max_queued_frames, LIMITS.relay_timeout))));
        let mut ext = Extensions::new();
        ext.insert(session.clone());
        Self { session, ext }
    }

    /// Checks everything queued for this client so far.
    fn drain(&mut self) {
        while let Some(frame) = self.session.peer().try_next_frame() {
            checked(&frame);
        }
    }
}

/// Checks that a frame the server queued is JSON-RPC 2.0, read the way
/// clients read it (`wire::classify`: ids stay raw, so `1e999` is an id
/// too); returns the ids of the responses in it, as written.
fn checked(frame: &str) -> Vec<String> {
    let one = |incoming: Incoming<'_>| match incoming {
        Incoming::Response(response) => Some(response.id.get().to_owned()),
        Incoming::Request(_) => None,
        other => panic!("the server sent {other:?}: {frame}"),
    };
    match wire::classify(frame) {
        Incoming::Batch(items) => {
            assert!(!items.is_empty(), "an empty batch answer");
            items.into_iter().map(|item| one(wire::classify_item(item)).expect("a response")).collect()
        }
        incoming => one(incoming).into_iter().collect(),
    }
}

/// The one response id in `frame`.
fn response_id(frame: &str) -> String {
    let ids = checked(frame);
    assert_eq!(ids.len(), 1, "one response: {frame}");
    ids.into_iter().next().unwrap_or_default()
}

/// A request still running: the id it must answer with (`None`: a
/// notification, or one the harness does not track), and its task.
type Running = (Option<Box<RawValue>>, JoinHandle<Option<String>>);

/// A hub with two users in one group: `other`, with a relay waiting on
/// `me`, and `me`, the fuzzed client.
struct World {
    hub: Hub,
    methods: Methods,
    me: Client,
    other: Client,
    /// Requests still running (relays).
    running: Vec<Running>,
    /// What the placeholders stand for: `$G`, `$U`, `$M`.
    ids: [(&'static str, String); 3],
    /// Ids the fuzzed client's requests were answered with, as written.
    answered: Vec<String>,
    /// Ids those requests carried, as written.
    asked: Vec<String>,
}

impl World {
    fn new() -> Self {
        let hub = Hub::new(LIMITS);
        let methods: Methods = hub.clone().into_rpc().into();
        let (me, other) = (Client::new(), Client::new());
        let call = |client: &Client, text: &str| match wire::classify(text) {
            Incoming::Request(request) => match wire::start(&methods, request, ConnectionId(0), client.ext.clone()) {
                Started::Done(Some(frame)) => {
                    let value: Value = serde_json::from_str(&frame).expect("JSON");
                    value["result"].clone()
                }
                other => panic!("setup call {text} gave {other:?}"),
            },
            other => panic!("setup frame {text} is {other:?}"),
        };
        let user = call(&me, r#"{"jsonrpc":"2.0","id":0,"method":"init"}"#);
        let other_user = call(&other, r#"{"jsonrpc":"2.0","id":0,"method":"init"}"#);
        let group = call(&other, r#"{"jsonrpc":"2.0","id":0,"method":"create"}"#);
        let join = format!(r#"{{"jsonrpc":"2.0","id":0,"method":"join","params":[{group}]}}"#);
        call(&me, &join);
        let [group, user, other_user] = [group, user, other_user].map(|v| v.as_str().expect("an id").to_owned());
        let mut world = Self {
            hub,
            methods,
            me,
            other,
            running: Vec::new(),
            ids: [("$G", group.clone()), ("$U", other_user), ("$M", user.clone())],
            answered: Vec::new(),
            asked: Vec::new(),
        };
        // The other member calls the fuzzed client: its call id is "s1".
        let relay = format!(r#"{{"jsonrpc":"2.0","id":"waiting","method":"relay","params":["{group}","{user}",1]}}"#);
        world.start_as_other(&relay);
        world.me.drain();
        world
    }

    fn start_as_other(&mut self, text: &str) {
        let Incoming::Request(request) = wire::classify(text) else { panic!("{text}") };
        match wire::start(&self.methods, request, ConnectionId(1), self.other.ext.clone()) {
            Started::Running(future) => self.running.push((None, tokio::spawn(future))),
            Started::Done(frame) => panic!("the setup relay finished at once: {frame:?}"),
        }
    }

    /// A raw byte stream from the client, decoded as the server decodes it.
    fn frames(&mut self, bytes: &[u8]) {
        let config = WebSocketConfig::default()
            .max_message_size(Some(LIMITS.max_message_size))
            .max_frame_size(Some(LIMITS.max_message_size));
        let stream = Wire { input: Cursor::new(bytes.to_vec()) };
        let mut socket = WebSocket::from_raw_socket(stream, Role::Server, Some(config));
        // Every error ends the connection (the server closes with its code).
        while let Ok(message) = socket.read() {
            match message {
                Message::Text(text) => self.message(text.as_str()),
                Message::Binary(bytes) => match std::str::from_utf8(&bytes) {
                    Ok(text) => self.message(text),
                    Err(_) => {
                        self.expect_answer(Some(RawValue::NULL));
                        self.answer(wire::error_frame(None, wire::code::PARSE_ERROR, "not UTF-8"));
                    }
                },
                Message::Close(_) => break,
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            }
        }
    }

    /// One text message, dispatched as `connection::handle_text` does.
    fn message(&mut self, text: &str) {
        let mut text = text.to_owned();
        for (placeholder, id) in &self.ids {
            text = text.replace(placeholder, id);
        }
        match wire::classify(&text) {
            Incoming::Request(request) => {
                let id = request.id.map(RawValue::to_owned);
                self.expect_answer(id.as_deref());
                let started = wire::start(&self.methods, request, ConnectionId(0), self.me.ext.clone());
                self.settle(id, started);
            }
            Incoming::Response(response) => {
                self.me.session.peer().complete(&response);
            }
            Incoming::Batch(items) => self.batch(&items),
            Incoming::Invalid { id, code, message } => {
                self.expect_answer(Some(id.unwrap_or(RawValue::NULL)));
                self.answer(wire::error_frame(id, code, &message));
            }
        }
    }

    /// A batch: each request started in order; whatever runs is awaited in
    /// `finish` (the order of a batch's answers is the server's business,
    /// checked by its own tests).
    fn batch(&mut self, items: &[&RawValue]) {
        if items.is_empty() || items.len() > LIMITS.max_batch_len {
            return;
        }
        for item in items {
            match wire::classify_item(item) {
                Incoming::Request(request) => {
                    let started = wire::start(&self.methods, request, ConnectionId(0), self.me.ext.clone());
                    if let Started::Running(future) = started {
                        self.running.push((None, tokio::spawn(future)));
                    } else if let Started::Done(Some(frame)) = started {
                        checked(&frame);
                    }
                }
                Incoming::Response(response) => {
                    self.me.session.peer().complete(&response);
                }
                Incoming::Invalid { .. } | Incoming::Batch(_) => {}
            }
        }
    }

    fn expect_answer(&mut self, id: Option<&RawValue>) {
        if let Some(id) = id {
            self.asked.push(id.get().to_owned());
        }
    }

    fn settle(&mut self, id: Option<Box<RawValue>>, started: Started) {
        match started {
            Started::Done(frame) => {
                assert_eq!(frame.is_some(), id.is_some(), "an answer exactly when there is an id");
                if let Some(frame) = frame {
                    self.answer(frame);
                }
            }
            Started::Running(future) => self.running.push((id, tokio::spawn(future))),
        }
    }

    fn answer(&mut self, frame: String) {
        self.answered.push(response_id(&frame));
    }

    /// Lets everything running end (timeouts included), closes both
    /// connections, and checks what is left.
    async fn finish(mut self) {
        let running = std::mem::take(&mut self.running);
        for (id, task) in running {
            let frame = task.await.expect("a request panicked");
            match (id, frame) {
                (Some(id), Some(frame)) => {
                    let answered = response_id(&frame);
                    assert_eq!(answered, id.get(), "the id echoed exactly: {frame}");
                    self.answered.push(answered);
                }
                (Some(id), None) => panic!("request {} got no answer", id.get()),
                (None, Some(frame)) => {
                    checked(&frame);
                }
                (None, None) => {}
            }
        }
        let (mut asked, mut answered) = (self.asked.clone(), self.answered.clone());
        asked.sort();
        answered.sort();
        assert_eq!(asked, answered, "every request with an id is answered once, with that id");
        self.me.drain();
        self.other.drain();
        self.hub.disconnect(&self.me.session, CloseReason::NORMAL);
        self.hub.disconnect(&self.other.session, CloseReason::NORMAL);
        assert_eq!(self.hub.stats().users, 0);
        assert_eq!(self.hub.stats().groups, 0);
        assert_eq!(self.hub.relays_in_flight(), 0);
        assert_eq!(self.me.session.peer().pending_calls(), 0);
    }
}

/// The client's bytes to read; what the server writes back is dropped.
struct Wire {
    input: Cursor<Vec<u8>>,
}

impl Read for Wire {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.input.read(buf)
    }
}

impl Write for Wire {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
