//! The fuzz entry point, shared by the cargo-fuzz target (`fuzz_targets/`)
//! and the stable regression test (`server/tests/fuzz_regressions.rs`,
//! which includes this file): bytes a client could send go through
//! WebSocket frame decoding (tungstenite, server role, the server's size
//! limits) and the server's own JSON-RPC dispatch (`Dispatch::for_session`,
//! `Dispatch::text`/`binary`, what `server/src/connection.rs` calls) into a
//! real `Hub`, and these must hold:
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

use std::collections::HashMap;
use std::io::{Cursor, Read, Write};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use jsonrpsee::core::server::{ConnectionId, Methods};
use serde_json::Value;
use serde_json::value::RawValue;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, WebSocket};
use webrtc_p2p_interfaces::SignalingServer;
use webrtc_p2p_simple::wire::{self, Incoming, Reply, Started};
use webrtc_p2p_simple::{CloseReason, Dispatch, Endpoint, Hub, Limits, PeerHandle, Session};

/// Small limits, so that inputs can reach them.
const LIMITS: Limits = Limits {
    max_message_size: 64 * 1024,
    relay_timeout: RELAY_TIMEOUT,
    max_relays_in_flight: 4,
    max_groups_per_user: 4,
    max_members_per_group: 4,
    max_queued_frames: 4096,
    max_queued_bytes: usize::MAX,
    max_batch_len: 16,
    rate_limit: 256,
    ..Limits::DEFAULT
};

/// Under the fuzzer the clock is paused (see `runtime`), so a relay times out
/// as soon as nothing else can run, whatever this says. The regression test
/// runs on the real clock (the main workspace builds tokio without its
/// `test-util`), and nearly every input ends with the setup relay timing
/// out: 1 ms keeps its 3,000 mutations to seconds. An input is read whole
/// before any timer can fire (the runtime has one thread), and the
/// invariants hold for any timing, so the earlier timeouts only vary the
/// interleavings.
#[cfg(fuzzing)]
const RELAY_TIMEOUT: Duration = Duration::from_secs(1);
#[cfg(not(fuzzing))]
const RELAY_TIMEOUT: Duration = Duration::from_millis(1);

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

/// One runtime for all inputs. Under the fuzzer its clock is paused, so
/// timeouts fire as soon as nothing else can run instead of after real time.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        let mut builder = tokio::runtime::Builder::new_current_thread();
        builder.enable_time();
        #[cfg(fuzzing)]
        builder.start_paused(true);
        builder.build().expect("runtime")
    })
}

/// One side of the hub: a session, with the frames queued for it.
fn session() -> Arc<Session> {
    Arc::new(Session::new(Arc::new(PeerHandle::new(LIMITS.max_queued_frames, LIMITS.relay_timeout))))
}

/// Checks that a frame the server queued is JSON-RPC 2.0, read the way
/// clients read it (`wire::classify`: ids stay raw, so `1e999` is an id
/// too); returns the id of a single response, as written.
fn checked(frame: &str) -> Option<String> {
    let one = |incoming: Incoming<'_>| match incoming {
        Incoming::Response(response) => Some(response.id.get().to_owned()),
        Incoming::Request(_) => None,
        other => panic!("the server sent {other:?}: {frame}"),
    };
    match wire::classify(frame) {
        Incoming::Batch(items) => {
            assert!(!items.is_empty(), "an empty batch answer");
            for item in items {
                one(wire::classify_item(item)).expect("a response");
            }
            None
        }
        incoming => one(incoming),
    }
}

/// A hub with two users in one group: `other`, with a relay waiting on
/// `me`, and `me`, the fuzzed client, whose frames go through the server's
/// own dispatch ([`Dispatch::for_session`], then [`Dispatch::text`] and
/// [`Dispatch::binary`], as `server/src/connection.rs` calls them).
struct World {
    hub: Hub,
    me: Arc<Session>,
    other: Arc<Session>,
    dispatch: Dispatch<Arc<Session>>,
    /// The other member's relay to `me`.
    waiting: JoinHandle<Option<Reply>>,
    /// What the placeholders stand for: `$G`, `$U`, `$M`.
    ids: [(&'static str, String); 3],
    /// Ids the fuzzed client's single messages must be answered with, as
    /// written, and how many times.
    asked: HashMap<String, usize>,
    /// Ids they may be answered with: garbage past the rate limit is
    /// dropped without a word.
    maybe: HashMap<String, usize>,
    /// Ids the server answered single messages with.
    answered: HashMap<String, usize>,
}

impl World {
    fn new() -> Self {
        let hub = Hub::new(LIMITS);
        let methods: Methods = hub.clone().into_rpc().into();
        let (me, other) = (session(), session());
        let call = |session: &Arc<Session>, text: &str| match wire::classify(text) {
            Incoming::Request(request) => match wire::start(&methods, request, ConnectionId(1), session.extensions()) {
                Started::Done(Some(reply)) => {
                    let value: Value = serde_json::from_str(&reply.frame).expect("JSON");
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
        // The other member calls the fuzzed client: its call id is "s1".
        let relay = format!(r#"{{"jsonrpc":"2.0","id":"waiting","method":"relay","params":["{group}","{user}",1]}}"#);
        let Incoming::Request(request) = wire::classify(&relay) else { panic!("{relay}") };
        let waiting = match wire::start(&methods, request, ConnectionId(1), other.extensions()) {
            Started::Running(future) => tokio::spawn(future),
            Started::Done(reply) => panic!("the setup relay finished at once: {reply:?}"),
        };
        let dispatch = Dispatch::for_session(&hub, methods, ConnectionId(0), me.clone());
        let mut world = Self {
            hub,
            me,
            other,
            dispatch,
            waiting,
            ids: [("$G", group), ("$U", other_user), ("$M", user)],
            asked: HashMap::new(),
            maybe: HashMap::new(),
            answered: HashMap::new(),
        };
        world.drain();
        world
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
                        count(&mut self.asked, "null");
                        self.dispatch.binary(&bytes);
                        self.drain();
                    }
                },
                Message::Close(_) => break,
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            }
        }
    }

    /// One text message, placeholders replaced, through the dispatch.
    fn message(&mut self, text: &str) {
        let mut text = text.to_owned();
        for (placeholder, id) in &self.ids {
            text = text.replace(placeholder, id);
        }
        match wire::classify(&text) {
            // Past the rate limit too: it is answered Busy.
            Incoming::Request(request) => {
                if let Some(id) = request.id {
                    count(&mut self.asked, id.get());
                }
            }
            Incoming::Response(_) => {}
            Incoming::Batch(items) => {
                if items.is_empty() || items.len() > LIMITS.max_batch_len {
                    count(&mut self.maybe, "null");
                }
            }
            Incoming::Invalid { id, .. } => count(&mut self.maybe, id.unwrap_or(RawValue::NULL).get()),
        }
        self.dispatch.text(&text);
        self.drain();
    }

    /// Takes what is queued for the fuzzed client, as its connection would
    /// write it, and checks it.
    fn drain(&mut self) {
        while let Some(frame) = self.me.peer().try_next_frame() {
            if let Some(id) = checked(&frame) {
                count(&mut self.answered, &id);
            }
        }
    }

    /// Lets everything running end (timeouts included), closes both
    /// connections, and checks what is left.
    async fn finish(mut self) {
        // Relays to a member of this process wait without a task of their
        // own: its connection, here this, finds their timeouts.
        let peers = [self.me.peer().clone(), self.other.peer().clone()];
        let expiring = async move {
            while let Some(deadline) = peers.iter().filter_map(|peer| peer.next_call_deadline()).min() {
                tokio::time::sleep_until(deadline).await;
                for peer in &peers {
                    peer.expire_calls(tokio::time::Instant::now());
                }
            }
            // None waits, and none is made once the input is read.
            std::future::pending::<()>().await;
        };
        tokio::select! {
            () = self.dispatch.running().all_finished() => {}
            () = expiring => {}
        }
        if let Some(reply) = (&mut self.waiting).await.expect("the setup relay panicked") {
            checked(&reply.frame);
        }
        self.drain();
        for (id, &answered) in &self.answered {
            let must = self.asked.get(id).copied().unwrap_or(0);
            let may = self.maybe.get(id).copied().unwrap_or(0);
            assert!(answered <= must + may, "{id} answered {answered} times, asked {must} (+{may} maybe)");
        }
        for (id, &must) in &self.asked {
            let answered = self.answered.get(id).copied().unwrap_or(0);
            assert!(answered >= must, "{id} answered {answered} times, asked {must}");
        }
        while let Some(frame) = self.other.peer().try_next_frame() {
            checked(&frame);
        }
        self.hub.disconnect(&self.me, CloseReason::NORMAL).await;
        self.hub.disconnect(&self.other, CloseReason::NORMAL).await;
        assert_eq!(self.hub.stats().users, 0);
        assert_eq!(self.hub.stats().groups, 0);
        assert_eq!(self.hub.relays_in_flight(), 0);
        assert_eq!(self.me.peer().pending_calls(), 0);
    }
}

fn count(ids: &mut HashMap<String, usize>, id: &str) {
    *ids.entry(id.to_owned()).or_default() += 1;
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
