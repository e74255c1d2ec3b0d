//! The WebSocket under the stock jsonrpsee client. One writer task owns the
//! socket's sending half and drains one queue, which jsonrpsee's sender and
//! the local handlers' answers both feed. The receiver runs the server's
//! requests and notifications through the handler's method table and hands
//! jsonrpsee only responses: given a request, jsonrpsee would take it for a
//! notification and drop it unanswered.
//!
//! Resume: once the server has given a ticket (the answer to a `session`
//! call, which the transport reads on its way to jsonrpsee), a connection
//! that drops is not the end. The receiver dials again (backoff with
//! jitter), sends `resume` as the new socket's first frame, and hands the
//! new sending half to the writer, which first sends again what the server
//! says it lacks. Both ends count the data frames they received; the writer
//! keeps what it wrote until a pong to its ping (whose payload is how many
//! frames it had written) says they arrived. jsonrpsee never notices: its
//! pending calls, and the generated stubs, carry on over the new socket.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use jsonrpsee::core::client::{ReceivedMessage, TransportReceiverT, TransportSenderT};
use jsonrpsee::core::server::{ConnectionId, Extensions, Methods};
use serde_json::value::RawValue;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tracing::{debug, warn};
use webrtc_p2p_interfaces::{ErrorCode, ResumeResult, SessionFacts, method};

use super::{ConnectionState, Disconnected};
use crate::dispatch::{Dispatch, Endpoint};
use crate::limits::Limits;
use crate::wire::{self, Incoming, Response};

/// The client's WebSocket.
pub(super) type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Frames waiting for the writer, as many as the server lets wait for a
/// client. jsonrpsee's sender waits when it is full; the read side never
/// does, and a full queue there means the server stopped reading, so the
/// connection is given up (as the server does to a client).
const OUTBOX_CAPACITY: usize = Limits::DEFAULT.max_queued_frames;

/// Spelled once for both constants below (`concat!` takes only literals).
macro_rules! close_marker {
    () => {
        "webrtc-p2p-client/close"
    };
}

/// The method of the notification [`Client::close`](super::Client::close)
/// sends through jsonrpsee. It never reaches the wire: the sender recognises
/// it and asks the writer to close. Going through jsonrpsee's own queue is
/// what puts the close frame after every frame handed to jsonrpsee before
/// `close()` was called.
pub(super) const CLOSE_MARKER: &str = close_marker!();

/// How jsonrpsee writes a notification of [`CLOSE_MARKER`]; requests carry an
/// `id` before `method`, so none of them can start like this.
const CLOSE_MARKER_FRAME: &str = concat!(r#"{"jsonrpc":"2.0","method":""#, close_marker!(), '"');

/// How long one attempt to dial the server again may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);

/// Pauses before each attempt to resume, after LiveKit's client: at once,
/// then 0.3, 1.2, 2.7 and 4.8 s, then every 7 s (until the resume window is
/// over); each but the first gets up to half of itself (at most 1 s) of
/// random jitter, so that clients cut at once do not all return at once.
const BACKOFF_MS: [u64; 6] = [0, 300, 1_200, 2_700, 4_800, 7_000];

/// The id of the transport's own `resume` request, and the prefix of its
/// own `session` requests (ticket refreshes): strings, which jsonrpsee's
/// numeric ids never are.
const RESUME_ID: &str = "\"resume\"";
const REFRESH_ID_PREFIX: &str = "\"refresh";

/// What the connection is doing; watched by the writer, the receiver and
/// [`Client::closed`](super::Client::closed).
#[derive(Debug, Default)]
struct State {
    /// A clean close was asked for: the writer sends what is queued, then the
    /// close frame, and whatever ends the connection after that is `Local`.
    close_requested: bool,
    /// Why the connection ended; the first reason recorded wins.
    ended: Option<Disconnected>,
}

/// What the client, its transport halves, the writer and the running
/// handlers share about one connection.
#[derive(Debug)]
pub(super) struct Conn {
    /// Frames for the writer task, in the order they are to be written.
    outbox: mpsc::Sender<String>,
    /// The connection's state; every party waits on it to stop.
    state: watch::Sender<State>,
    /// What the application sees: connected, reconnecting, closed.
    connection: watch::Sender<ConnectionState>,
    /// How many resumes came back without replay: a counter rather than
    /// `connection`'s latest state, so that a `Member` refreshes after each
    /// one even when the next drop follows before it looks.
    unreplayed: watch::Sender<u64>,
    /// What resume needs; see the module doc.
    session: Mutex<Resumable>,
    /// Where to dial again, and how.
    url: String,
    config: WebSocketConfig,
    /// New sending halves for the writer, after a resume.
    links: mpsc::UnboundedSender<Link>,
}

/// The session as resume sees it.
#[derive(Debug, Default)]
struct Resumable {
    /// The latest ticket, once a `session` call was answered, and the
    /// server's resume window (a zero window: the server does not resume).
    ticket: Option<(String, Duration)>,
    /// Ids of the application's `session` calls waiting for their answer,
    /// whose answers carry tickets.
    session_calls: Vec<String>,
    /// Data frames written on the session (`resume` requests not counted).
    sent: u64,
    /// Data frames received on the session (`resume` answers not counted).
    received: u64,
    /// The last `unacked.len()` frames of `sent`, kept (once there is a
    /// ticket) until a pong says the server has them.
    unacked: VecDeque<String>,
    /// A ping asking for that is out and its pong has not come back.
    ack_pending: bool,
    /// The number of the next ticket refresh.
    refreshes: u64,
}

/// A new connection's sending half, and how many of our frames the server
/// had received when it resumed.
struct Link {
    sink: SplitSink<Socket, Message>,
    server_received: u64,
}

impl Conn {
    /// Records why the connection ended (unless a reason is recorded already)
    /// and returns the reason that counts.
    pub(super) fn end(&self, reason: Disconnected) -> Disconnected {
        self.state.send_if_modified(|state| {
            if state.ended.is_some() {
                return false;
            }
            state.ended = Some(reason);
            true
        });
        self.connection.send_replace(ConnectionState::Closed);
        self.reason()
    }

    /// The reason recorded, or the one to give when none is yet and the
    /// caller found the connection unusable: after a close request the
    /// writer stops by design; otherwise jsonrpsee stopped on its own error,
    /// which its pending calls carry.
    fn reason(&self) -> Disconnected {
        let state = self.state.borrow();
        match &state.ended {
            Some(reason) => reason.clone(),
            None if state.close_requested => Disconnected::Local,
            None => Disconnected::Failed("the JSON-RPC client stopped".into()),
        }
    }

    /// Asks the writer to send what is queued and then the close frame.
    pub(super) fn request_close(&self) {
        self.state.send_if_modified(|state| {
            let first = !state.close_requested && state.ended.is_none();
            state.close_requested = true;
            first
        });
    }

    /// The reason for a connection the server ended: after we asked to close,
    /// its close reply (or its hanging up) is our own clean close.
    fn end_by_server(&self, reason: Disconnected) -> Disconnected {
        let ours = self.state.borrow().close_requested;
        self.end(if ours { Disconnected::Local } else { reason })
    }

    /// Resolves with the reason once the connection has ended.
    pub(super) fn ended(&self) -> impl Future<Output = Disconnected> + Send + 'static {
        let mut state = self.state.subscribe();
        async move {
            match state.wait_for(|s| s.ended.is_some()).await {
                Ok(state) => state.ended.clone().unwrap_or(Disconnected::Local),
                // Not reached: the receiver's drop records a reason before
                // the last holder of the connection goes. Gone unrecorded
                // could only mean the client was dropped.
                Err(_) => Disconnected::Local,
            }
        }
    }

    /// Whether the connection has ended.
    pub(super) fn is_ended(&self) -> bool {
        self.state.borrow().ended.is_some()
    }

    fn lock_session(&self) -> std::sync::MutexGuard<'_, Resumable> {
        // Each critical section is a few counter updates: poisoning is moot.
        self.session.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The ticket and window, when a dropped connection is to be resumed.
    fn resume_ticket(&self) -> Option<(String, Duration)> {
        self.lock_session().ticket.clone().filter(|(_, window)| !window.is_zero())
    }

    /// Counts a frame about to be written, and keeps it for replay once the
    /// session is resumable.
    fn record_sent(&self, frame: &str) {
        let mut session = self.lock_session();
        session.sent += 1;
        if session.ticket.is_some() {
            session.unacked.push_back(frame.to_owned());
        }
    }

    /// The payload of a ping that asks the server to confirm what was
    /// written, when one is wanted now.
    fn ack_ping(&self) -> Option<Vec<u8>> {
        let mut session = self.lock_session();
        if session.ack_pending || session.unacked.is_empty() {
            return None;
        }
        session.ack_pending = true;
        Some(session.sent.to_be_bytes().to_vec())
    }

    /// A pong: every frame written before its ping arrived.
    fn ack(&self, payload: &[u8]) {
        let Ok(word) = <[u8; 8]>::try_from(payload) else { return };
        let mut session = self.lock_session();
        session.ack_pending = false;
        session.forget_through(u64::from_be_bytes(word));
    }

    /// Notes the application's `session` calls, whose answers carry tickets.
    fn watch_sent(&self, frame: &str) {
        if !frame.contains("\"method\":\"session\"") {
            return;
        }
        if let Incoming::Request(request) = wire::classify(frame)
            && request.method == method::SESSION
            && let Some(id) = request.id
        {
            self.lock_session().session_calls.push(id.get().to_owned());
        }
    }

    /// Takes the ticket from an answer to a `session` call, ours or the
    /// application's; `true` when the answer was ours (not for jsonrpsee).
    fn watch_answer(self: &Arc<Self>, response: &wire::Response<'_>) -> bool {
        let id = response.id.get();
        let ours = id.starts_with(REFRESH_ID_PREFIX);
        {
            let mut session = self.lock_session();
            let Some(at) = session.session_calls.iter().position(|c| c == id) else {
                return ours;
            };
            session.session_calls.swap_remove(at);
            let Ok(Ok(facts)) = response.outcome.map(|r| serde_json::from_str::<SessionFacts>(r.get())) else {
                return ours;
            };
            let window = Duration::from_millis(facts.resume_window_ms);
            let first = session.ticket.is_none();
            session.ticket = Some((facts.resume_ticket, window));
            if first && !window.is_zero() {
                // Frames written from now on are kept for replay; a ticket
                // lives 10 windows, so a refresh every 5 keeps one valid.
                tokio::spawn(refresh_tickets(Arc::downgrade(self), window * 5));
            }
        }
        ours
    }

    /// The connection state the application sees.
    pub(super) fn connection_state(&self) -> watch::Receiver<ConnectionState> {
        self.connection.subscribe()
    }

    /// The count of resumes without replay so far; it changes with each.
    pub(super) fn resumes_without_replay(&self) -> watch::Receiver<u64> {
        self.unreplayed.subscribe()
    }

    /// Queues a frame without waiting (see [`OUTBOX_CAPACITY`]).
    fn push(&self, frame: String) {
        match self.outbox.try_send(frame) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.end(Disconnected::Failed("outgoing queue full: the server stopped reading".into()));
            }
            // The writer is gone, so the connection has ended already.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

impl Resumable {
    /// Forgets the kept frames up to frame `through` of `sent`.
    fn forget_through(&mut self, through: u64) {
        let first = self.sent - self.unacked.len() as u64;
        for _ in first..through.min(self.sent) {
            self.unacked.pop_front();
        }
    }

    /// A resume said the server had received `server_received` of our
    /// frames: the kept frames after those are what to send again.
    ///
    /// A count below every kept frame means the node that held the session
    /// is gone and its successor does not know what arrived (it counts from
    /// 0): every kept frame is sent again (those the old node had handled
    /// arrive twice, rather than the others not at all), and our count
    /// moves to the server's, so that the next resume is exact again.
    fn resend_after(&mut self, server_received: u64) {
        self.forget_through(server_received);
        let first = self.sent - self.unacked.len() as u64;
        if server_received < first {
            self.sent = server_received + self.unacked.len() as u64;
        }
    }
}

/// Asks the server for a fresh ticket every `every`, for as long as the
/// connection lives.
async fn refresh_tickets(conn: std::sync::Weak<Conn>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(conn) = conn.upgrade() else { return };
        if conn.is_ended() {
            return;
        }
        let id = {
            let mut session = conn.lock_session();
            session.refreshes += 1;
            let id = format!("{REFRESH_ID_PREFIX}{}\"", session.refreshes);
            session.session_calls.push(id.clone());
            id
        };
        conn.push(format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"session","params":[]}}"#));
    }
}

/// Connects the halves of `socket` (opened at `url` with `config`): returns
/// jsonrpsee's sender and receiver, and the shared connection; the writer
/// task is running.
pub(super) fn split(
    socket: Socket,
    url: &str,
    config: WebSocketConfig,
    methods: Methods,
    max_handlers: usize,
) -> (Sender, Receiver, Arc<Conn>) {
    let (sink, stream) = socket.split();
    let (outbox, queue) = mpsc::channel(OUTBOX_CAPACITY);
    let (links, new_links) = mpsc::unbounded_channel();
    let conn = Arc::new(Conn {
        outbox,
        state: watch::Sender::new(State::default()),
        connection: watch::Sender::new(ConnectionState::Connected),
        unreplayed: watch::Sender::new(0),
        session: Mutex::default(),
        url: url.to_owned(),
        config,
        links,
    });
    tokio::spawn(write_loop(sink, queue, new_links, conn.clone()));
    let sender = Sender { conn: conn.clone() };
    let receiver = Receiver {
        stream,
        state: conn.state.subscribe(),
        dispatch: Dispatch::new(methods, ConnectionId(0), conn.clone()).max_running(max_handlers),
        conn: conn.clone(),
    };
    (sender, receiver, conn)
}

/// The handlers' answers go on the writer's queue. Responses never reach
/// the dispatch: `Receiver` hands them to jsonrpsee.
impl Endpoint for Arc<Conn> {
    fn send(&self, frame: String) {
        self.push(frame);
    }

    fn complete(&self, _: &Response<'_>) {}

    fn extensions(&self) -> Extensions {
        Extensions::new()
    }
}

/// jsonrpsee's way out: its frames go on the writer's queue.
#[derive(Debug)]
pub(super) struct Sender {
    /// The writer's queue, and why the connection ended when it is gone.
    conn: Arc<Conn>,
}

impl TransportSenderT for Sender {
    type Error = Disconnected;

    async fn send(&mut self, frame: String) -> Result<(), Disconnected> {
        if frame.starts_with(CLOSE_MARKER_FRAME) {
            self.conn.request_close();
            return Ok(());
        }
        self.conn.watch_sent(&frame);
        self.conn.outbox.send(frame).await.map_err(|_| self.conn.reason())
    }

    /// jsonrpsee calls this when its client is dropped or has failed.
    async fn close(&mut self) -> Result<(), Disconnected> {
        self.conn.request_close();
        Ok(())
    }
}

/// jsonrpsee's way in: it gets responses only; requests and notifications
/// from the server go to the handler.
#[derive(Debug)]
pub(super) struct Receiver {
    /// The socket's receiving half.
    stream: SplitStream<Socket>,
    /// Where the handlers' answers go, and where the end is recorded.
    conn: Arc<Conn>,
    /// Wakes the receiver when something else ended the connection.
    state: watch::Receiver<State>,
    /// Runs the server's requests through the handler's `PeerServer`
    /// methods, at most `max_handlers` at once.
    dispatch: Dispatch<Arc<Conn>>,
}

impl TransportReceiverT for Receiver {
    type Error = Disconnected;

    async fn receive(&mut self) -> Result<ReceivedMessage, Disconnected> {
        loop {
            let message = tokio::select! {
                message = self.stream.next() => message,
                _ = self.state.wait_for(|s| s.ended.is_some()) => return Err(self.conn.reason()),
            };
            if matches!(message, Some(Ok(Message::Text(_) | Message::Binary(_)))) {
                self.conn.lock_session().received += 1;
            }
            let handed_over = match message {
                Some(Ok(Message::Text(text))) => self.dispatch(text.as_str()),
                // A binary frame is read as if it were text (interfaces/README.md).
                Some(Ok(Message::Binary(bytes))) => match std::str::from_utf8(&bytes) {
                    Ok(text) => self.dispatch(text),
                    Err(_) => {
                        warn!("dropped a binary frame that is not UTF-8");
                        None
                    }
                },
                // tungstenite answers pings itself; the server pings us, so
                // jsonrpsee's own pings stay off. Pongs answer the writer's
                // pings: what they count arrived.
                Some(Ok(Message::Pong(payload))) => {
                    self.conn.ack(&payload);
                    None
                }
                Some(Ok(Message::Ping(_) | Message::Frame(_))) => None,
                Some(Ok(Message::Close(frame))) => {
                    let reason = match frame {
                        Some(CloseFrame { code, reason }) => {
                            Disconnected::Server { code: code.into(), reason: reason.as_str().to_owned() }
                        }
                        None => Disconnected::Server { code: CloseCode::Status.into(), reason: String::new() },
                    };
                    // The server suspends a session it closes for silence,
                    // and a stopping node of a cluster the sessions it hands
                    // over (1012: resume on another node).
                    let suspended = match &reason {
                        Disconnected::Server { code: 1008, reason } => reason == "idle timeout",
                        Disconnected::Server { code, .. } => *code == 1012,
                        _ => false,
                    };
                    if suspended && self.resume().await {
                        continue;
                    }
                    return Err(self.conn.end_by_server(reason));
                }
                None => {
                    if self.resume().await {
                        continue;
                    }
                    let reason = Disconnected::Failed("the server hung up without a close frame".into());
                    return Err(self.conn.end_by_server(reason));
                }
                Some(Err(e)) => {
                    if self.resume().await {
                        continue;
                    }
                    return Err(self.conn.end_by_server(Disconnected::Failed(e.to_string())));
                }
            };
            if let Some(text) = handed_over {
                return Ok(ReceivedMessage::Text(text));
            }
        }
    }
}

impl Drop for Receiver {
    /// jsonrpsee drops the receiver when its client is dropped or has failed;
    /// either way the writer and `closed()` must learn that it is over.
    fn drop(&mut self) {
        self.conn.end(self.conn.reason());
    }
}

impl Receiver {
    /// The connection dropped: resumes the session on a new one, unless the
    /// session cannot be resumed (no ticket, a clean close under way, the
    /// server refused, the window passed). `true` once resumed.
    async fn resume(&mut self) -> bool {
        let Some((ticket, window)) = self.conn.resume_ticket() else { return false };
        if self.conn.state.borrow().close_requested {
            return false;
        }
        self.conn.connection.send_replace(ConnectionState::Reconnecting);
        let give_up = Instant::now() + window;
        for attempt in 0.. {
            let pause = backoff(attempt);
            if Instant::now() + pause >= give_up {
                break;
            }
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                _ = self.state.wait_for(|s| s.ended.is_some() || s.close_requested) => return false,
            }
            // Read now: every frame counted so far arrived.
            let received = self.conn.lock_session().received;
            match tokio::time::timeout(DIAL_TIMEOUT, dial(&self.conn, &ticket, received)).await {
                Ok(Ok((link, stream, result))) => {
                    debug!(attempt, replayed = result.replayed, "resumed");
                    self.stream = stream;
                    // Written again: the server's count says which.
                    let _ = self.conn.links.send(link);
                    if !result.replayed {
                        self.conn.unreplayed.send_modify(|n| *n += 1);
                    }
                    self.conn.connection.send_replace(ConnectionState::Resumed { replayed: result.replayed });
                    return true;
                }
                Ok(Err(Some(refused))) => {
                    debug!(code = refused, "resume refused");
                    break;
                }
                Ok(Err(None)) | Err(_) => debug!(attempt, "resume attempt failed"),
            }
        }
        false
    }

    /// Handles one frame; returns it when it is for jsonrpsee.
    fn dispatch(&self, text: &str) -> Option<String> {
        match wire::classify(text) {
            Incoming::Request(request) => {
                self.dispatch.request(request);
                None
            }
            Incoming::Response(response) if self.conn.watch_answer(&response) => None,
            Incoming::Response(response) if is_jsonrpsee_id(response.id) => Some(text.to_owned()),
            Incoming::Response(response) => {
                // jsonrpsee tears its connection down on an id it did not
                // issue; the server answers a frame it could not read with
                // `id: null`, which would otherwise cost every pending call.
                debug!(id = response.id.get(), "dropped a response to no request of ours");
                None
            }
            // Answers to our own batches: the server sends no batches itself.
            Incoming::Batch(_) => Some(text.to_owned()),
            Incoming::Invalid { code, message, .. } => {
                warn!(code, %message, "dropped a frame from the server that is not JSON-RPC");
                None
            }
        }
    }
}

/// The pause before resume attempt `attempt` (see [`BACKOFF_MS`]).
fn backoff(attempt: usize) -> Duration {
    let base = BACKOFF_MS[attempt.min(BACKOFF_MS.len() - 1)];
    let mut random = [0u8; 8];
    let _ = getrandom::fill(&mut random);
    let jitter = (base / 2).min(1_000);
    Duration::from_millis(base + u64::from_ne_bytes(random) % (jitter + 1))
}

/// Opens a new connection and resumes the session on it. `Err(Some(code))`
/// when the server refused (the session is over); `Err(None)` when this
/// attempt failed otherwise (worth another).
async fn dial(
    conn: &Conn,
    ticket: &str,
    received: u64,
) -> Result<(Link, SplitStream<Socket>, ResumeResult), Option<i32>> {
    let (socket, _) =
        tokio_tungstenite::connect_async_with_config(&conn.url, Some(conn.config), true).await.map_err(|e| {
            debug!(error = %e, "dial failed");
            None
        })?;
    let (mut sink, mut stream) = socket.split();
    let params = serde_json::to_string(&(ticket, received)).map_err(|_| None)?;
    let request = format!(r#"{{"jsonrpc":"2.0","id":{RESUME_ID},"method":"resume","params":{params}}}"#);
    sink.send(Message::text(request)).await.map_err(|_| None)?;
    // The answer is the first data frame; tungstenite answers pings meanwhile.
    let text = loop {
        match stream.next().await {
            Some(Ok(Message::Text(text))) => break text,
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
            _ => return Err(None),
        }
    };
    let Incoming::Response(response) = wire::classify(text.as_str()) else { return Err(None) };
    match response.outcome {
        Ok(result) => {
            let result: ResumeResult = serde_json::from_str(result.get()).map_err(|_| None)?;
            Ok((Link { sink, server_received: result.received }, stream, result))
        }
        Err(error) => {
            let code = serde_json::from_str::<jsonrpsee::types::ErrorObjectOwned>(error.get()).map_or(0, |e| e.code());
            // Anything but ResumeFailed (say, Busy) may pass: try again.
            Err((code == ErrorCode::ResumeFailed.code()).then_some(code))
        }
    }
}

/// jsonrpsee numbers its requests (`IdKind::Number`, set in `connect`).
fn is_jsonrpsee_id(id: &RawValue) -> bool {
    id.get().bytes().next().is_some_and(|b| b.is_ascii_digit())
}

/// Writes queued frames until the connection is to close, then sends the
/// close frame (or flushes tungstenite's reply to the server's). When a
/// write fails on a resumable session, it waits for the receiver to bring a
/// new sending half, sends again what the server lacks, and carries on.
async fn write_loop(
    sink: SplitSink<Socket, Message>,
    mut queue: mpsc::Receiver<String>,
    mut links: mpsc::UnboundedReceiver<Link>,
    conn: Arc<Conn>,
) {
    let mut state = conn.state.subscribe();
    let stop = |s: &State| s.close_requested || s.ended.is_some();
    let mut sink = Some(sink);
    let mut batch = Vec::with_capacity(Limits::WRITE_BATCH);
    loop {
        let next = tokio::select! {
            biased;
            _ = state.wait_for(stop) => break,
            link = links.recv() => link.map(Next::Link),
            received = queue.recv_many(&mut batch, Limits::WRITE_BATCH), if sink.is_some() => (received > 0).then_some(Next::Frames),
        };
        match next {
            None => break,
            Some(Next::Link(link)) => {
                sink = replay(link, &conn).await;
                continue;
            }
            Some(Next::Frames) => {}
        }
        let Some(out) = sink.as_mut() else { continue };
        // Counted (and kept for replay) before writing: a write that fails
        // half-way loses none of them.
        for frame in &batch {
            conn.record_sent(frame);
        }
        let write = async {
            for frame in batch.drain(..) {
                out.feed(Message::text(frame)).await?;
            }
            if let Some(payload) = conn.ack_ping() {
                out.feed(Message::Ping(payload.into())).await?;
            }
            out.flush().await
        };
        // A server that stopped reading must not keep the close waiting.
        let written = tokio::select! {
            written = write => written,
            _ = state.wait_for(stop) => break,
        };
        if let Err(e) = written {
            batch.clear();
            if conn.resume_ticket().is_some() {
                // What did not go out is kept; the resume sends it again.
                debug!(error = %e, "write failed: waiting for the resume");
                sink = None;
                continue;
            }
            conn.end(Disconnected::Failed(format!("write failed: {e}")));
            break;
        }
    }
    let Some(mut sink) = sink else { return };
    let clean = {
        let state = state.borrow();
        state.close_requested && state.ended.is_none()
    };
    let close = async {
        if clean {
            // Frames queued before the close still go out.
            while let Ok(frame) = queue.try_recv() {
                sink.feed(Message::text(frame)).await?;
            }
        }
        let frame = CloseFrame { code: CloseCode::Normal, reason: "".into() };
        sink.send(Message::Close(Some(frame))).await
    };
    if let Ok(Err(e)) = tokio::time::timeout(Limits::CLOSE_LINGER, close).await {
        debug!(error = %e, "close frame not sent");
    }
}

/// What woke the writer.
enum Next {
    /// A resumed connection's sending half.
    Link(Link),
    /// Frames to write, in the batch.
    Frames,
}

/// Starts writing on a resumed connection: first, again, every kept frame
/// the server did not receive. `None` when that write fails already (the
/// receiver will notice and dial again).
async fn replay(link: Link, conn: &Conn) -> Option<SplitSink<Socket, Message>> {
    let Link { mut sink, server_received } = link;
    let again: Vec<String> = {
        let mut session = conn.lock_session();
        session.ack_pending = false;
        session.resend_after(server_received);
        session.unacked.iter().cloned().collect()
    };
    let write = async {
        for frame in again {
            sink.feed(Message::text(frame)).await?;
        }
        if let Some(payload) = conn.ack_ping() {
            sink.feed(Message::Ping(payload.into())).await?;
        }
        sink.flush().await
    };
    match write.await {
        Ok(()) => Some(sink),
        Err(e) => {
            debug!(error = %e, "replay failed");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(sent: u64, frames: &[&str]) -> Resumable {
        let unacked = frames.iter().map(|f| f.to_string()).collect();
        Resumable { sent, unacked, ..Resumable::default() }
    }

    #[test]
    fn a_resume_sends_again_what_follows_the_servers_count() {
        let mut session = kept(10, &["7", "8", "9", "10"]);
        session.resend_after(8);
        assert_eq!(session.unacked, ["9", "10"]);
        assert_eq!(session.sent, 10, "same numbering as the server's");
    }

    #[test]
    fn a_count_below_everything_kept_sends_it_all_again_and_takes_the_servers_numbering() {
        // The node that held the session died; its successor counts from 0.
        let mut session = kept(10, &["7", "8", "9", "10"]);
        session.resend_after(0);
        assert_eq!(session.unacked, ["7", "8", "9", "10"]);
        assert_eq!(session.sent, 4, "the server will have counted these four");
        // The next resume is exact again: the server had the first two.
        session.resend_after(2);
        assert_eq!(session.unacked, ["9", "10"]);
    }

    #[test]
    fn close_marker_frame_is_how_jsonrpsee_writes_the_marker_notification() {
        assert!(CLOSE_MARKER_FRAME.contains(CLOSE_MARKER));
        for params in [None, Some(std::borrow::Cow::Owned(RawValue::NULL.to_owned()))] {
            let notification = jsonrpsee::core::middleware::Notification::new(CLOSE_MARKER.into(), params);
            let frame = serde_json::to_string(&notification).unwrap();
            assert!(frame.starts_with(CLOSE_MARKER_FRAME), "{frame}");
        }
        let request = jsonrpsee::types::Request::borrowed(CLOSE_MARKER, None, jsonrpsee::types::Id::Number(1));
        let frame = serde_json::to_string(&request).unwrap();
        assert!(!frame.starts_with(CLOSE_MARKER_FRAME), "{frame}");
    }

    #[test]
    fn only_numbers_are_jsonrpsee_ids() {
        let id = |s: &str| RawValue::from_string(s.to_owned()).unwrap();
        assert!(is_jsonrpsee_id(&id("0")));
        assert!(is_jsonrpsee_id(&id("42")));
        for other in ["null", "\"1\"", "-1", "\"s1\""] {
            assert!(!is_jsonrpsee_id(&id(other)), "{other}");
        }
    }
}
