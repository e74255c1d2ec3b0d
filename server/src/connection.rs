//! One WebSocket connection, served by one task: a read loop that
//! classifies each frame and starts requests without ever waiting on one,
//! while the same task writes whatever is queued for the client (coalescing
//! frames into one flush) and pings; and a cleanup that runs on every exit
//! path.

use std::future::poll_fn;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::{SinkExt, StreamExt};
use jsonrpsee::core::server::{ConnectionId, Extensions};
use tokio::time::{Instant, sleep, sleep_until, timeout};
use tokio_tungstenite::tungstenite;
use tracing::{Instrument, debug, debug_span};
use webrtc_p2p_interfaces::ErrorCode;
use webrtc_p2p_simple::wire::{self, Incoming, Started};
use webrtc_p2p_simple::{CloseReason, PeerHandle, RateLimiter, Session};

use crate::App;
use crate::metrics::{ConnectionSlot, Metrics, Refused};

/// Frames written per flush at most: enough to coalesce a burst into one
/// syscall, few enough to keep pings and close frames timely.
const WRITE_BATCH: usize = 64;

/// How long a closing connection waits for the client's close reply and for
/// its last frames to be written before the socket is dropped.
const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// How long a connection keeps reading after shutdown starts, so that
/// answers already on their way (to relays waiting on this client, and to
/// this client's own relays) still complete; it closes sooner once nothing
/// waits either way.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(1);

/// How often a draining connection looks whether anything still waits
/// (calls to the client have no "none left" event to await).
const DRAIN_CHECK: Duration = Duration::from_millis(10);

/// Everything a request needs to start.
struct Context<'a> {
    app: &'a App,
    peer: &'a Arc<PeerHandle>,
    /// Put in each request's `Extensions`, where the methods find it.
    session: &'a Arc<Session>,
    conn: ConnectionId,
    running: &'a Running,
    /// This connection's message budget (`None`: unlimited).
    rate: Option<&'a RateLimiter>,
}

/// Counts this connection's spawned requests until their answers are
/// queued, so that a shutdown can let them finish before the close frame.
#[derive(Debug, Default, Clone)]
struct Running(Arc<RunningInner>);

#[derive(Debug, Default)]
struct RunningInner {
    count: std::sync::atomic::AtomicUsize,
    finished: tokio::sync::Notify,
}

/// Held by a spawned request until its answer is queued.
struct RunningGuard(Running);

impl Running {
    fn track(&self) -> RunningGuard {
        self.0.count.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        RunningGuard(self.clone())
    }

    fn is_idle(&self) -> bool {
        self.0.count.load(std::sync::atomic::Ordering::Acquire) == 0
    }

    /// Resolves once no request is running.
    async fn all_finished(&self) {
        loop {
            let finished = self.0.finished.notified();
            tokio::pin!(finished);
            finished.as_mut().enable();
            if self.0.count.load(std::sync::atomic::Ordering::Acquire) == 0 {
                return;
            }
            finished.await;
        }
    }
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        if self.0.0.count.fetch_sub(1, std::sync::atomic::Ordering::AcqRel) == 1 {
            self.0.0.finished.notify_waiters();
        }
    }
}

/// Serves one upgraded WebSocket until it closes, for whatever reason;
/// `slot` (the connection's place under the connection cap) is given back
/// after that.
///
/// Not an `async fn`: the socket moves into its [`Socket`] here, so the
/// 368-byte WebSocket does not also sit in an argument slot of each future
/// layer of every connection.
pub(crate) fn serve(socket: WebSocket, app: App, slot: ConnectionSlot) -> impl Future<Output = ()> + Send {
    let conn = app.next_connection_id();
    let span = debug_span!("conn", id = conn.0);
    let socket = Box::new(Socket::new(socket, app.hub.limits().ping_interval));
    async move {
        run(socket, app, conn).await;
        drop(slot);
    }
    .instrument(span)
}

async fn run(mut socket: Box<Socket>, app: App, conn: ConnectionId) {
    let limits = app.hub.limits();
    let peer = Arc::new(PeerHandle::new(limits.max_queued_frames, limits.relay_timeout));
    let session = Arc::new(Session::new(peer.clone()));

    let running = Running::default();
    let rate = limits.rate_limiter();
    let cx = Context { app: &app, peer: &peer, session: &session, conn, running: &running, rate: rate.as_ref() };
    let reason = read_loop(&mut socket, &cx, &session).await;
    debug!(code = reason.code, reason = reason.reason, "closing");
    app.metrics.closed(reason);

    // Leave every group, release the id, fail calls waiting on this client.
    app.hub.disconnect(&session, reason);
    if reason == CloseReason::SHUTDOWN {
        // The client is still there: let its running requests (relays to
        // members who are closing too, so they fail fast) write their
        // answers before the close frame, instead of vanishing.
        let lingering = async {
            tokio::select! {
                () = running.all_finished() => {}
                _ = socket.write_until_error(&peer) => {}
            }
        };
        let _ = timeout(CLOSE_LINGER, lingering).await;
    }
    // Write what is queued and the close frame, then read the client's close
    // reply, each for a bounded time.
    if let Ok(Err(e)) = timeout(CLOSE_LINGER, socket.close(&peer, reason)).await {
        debug!(error = %e, "write failed");
    }
    peer.seal();
    let drain = async { while let Some(Ok(_)) = socket.ws.next().await {} };
    let _ = timeout(CLOSE_LINGER, drain).await;
}

/// The client's WebSocket, read and written by the connection's one task:
/// queued frames go out whenever the socket takes them, and reading never
/// waits for writing (a client that stops reading fills only its own queue).
/// One task instead of a reader and a writer saves each connection a task,
/// the split halves' shared lock and a close channel (~1 KiB, bench).
struct Socket {
    ws: WebSocket,
    /// Frames written since the last flush.
    unflushed: bool,
    /// The server's pings, so that a silent client is noticed.
    ping: tokio::time::Interval,
}

impl Socket {
    fn new(ws: WebSocket, ping_interval: Duration) -> Self {
        let mut ping = tokio::time::interval_at(Instant::now() + ping_interval, ping_interval);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self { ws, unflushed: false, ping }
    }

    /// Writes, without waiting, a due ping and what is queued (up to
    /// `WRITE_BATCH` frames per flush), and flushes. `Ok` when nothing more
    /// can go out now; the socket, the queue or the ping timer wakes the
    /// task when that changes.
    fn poll_write(&mut self, cx: &mut TaskContext<'_>, peer: &PeerHandle) -> Result<(), axum::Error> {
        loop {
            let mut fed = 0;
            while fed < WRITE_BATCH {
                match self.ws.poll_ready_unpin(cx) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(e)) => return Err(e),
                    Poll::Pending => return Ok(()),
                }
                let message = if self.ping.poll_tick(cx).is_ready() {
                    Message::Ping(Default::default())
                } else {
                    match peer.poll_next_frame(cx) {
                        Poll::Ready(frame) => Message::Text(frame.into()),
                        Poll::Pending => break,
                    }
                };
                self.ws.start_send_unpin(message)?;
                self.unflushed = true;
                fed += 1;
            }
            if !self.unflushed {
                return Ok(());
            }
            match self.ws.poll_flush_unpin(cx) {
                Poll::Ready(Ok(())) => self.unflushed = false,
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => return Ok(()),
            }
            if fed < WRITE_BATCH {
                return Ok(());
            }
        }
    }

    /// The client's next message, writing whatever is queued meanwhile.
    fn next<'a>(&'a mut self, peer: &'a PeerHandle) -> impl Future<Output = Option<Result<Message, axum::Error>>> + 'a {
        poll_fn(move |cx| {
            if let Err(e) = self.poll_write(cx, peer) {
                return Poll::Ready(Some(Err(e)));
            }
            self.ws.poll_next_unpin(cx)
        })
    }

    /// Writes what gets queued until writing fails.
    fn write_until_error<'a>(&'a mut self, peer: &'a PeerHandle) -> impl Future<Output = axum::Error> + 'a {
        poll_fn(move |cx| match self.poll_write(cx, peer) {
            Err(e) => Poll::Ready(e),
            Ok(()) => Poll::Pending,
        })
    }

    /// Writes the frames queued before the close, then the close frame.
    async fn close(&mut self, peer: &PeerHandle, reason: CloseReason) -> Result<(), axum::Error> {
        while let Some(frame) = peer.try_next_frame() {
            self.ws.feed(Message::Text(frame.into())).await?;
        }
        let frame = CloseFrame { code: reason.code, reason: Utf8Bytes::from_static(reason.reason) };
        self.ws.send(Message::Close(Some(frame))).await
    }
}

async fn read_loop(socket: &mut Socket, cx: &Context<'_>, session: &Session) -> CloseReason {
    let limits = cx.app.hub.limits();
    let init_deadline = Instant::now() + limits.init_timeout;
    let idle = sleep(limits.idle_timeout);
    tokio::pin!(idle);
    let closed = cx.peer.closed();
    tokio::pin!(closed);
    let mut shutdown = cx.app.shutdown.clone();
    // Set when shutdown starts: until then, answers still count.
    let mut drain_until: Option<Instant> = None;

    loop {
        if drain_until.is_some() && cx.peer.pending_calls() == 0 && cx.running.is_idle() {
            return CloseReason::SHUTDOWN;
        }
        tokio::select! {
            message = socket.next(cx.peer) => {
                idle.as_mut().reset(Instant::now() + limits.idle_timeout);
                match message {
                    Some(Ok(Message::Text(text))) => handle_text(text.as_str(), cx),
                    // A binary frame is read as if it were text.
                    Some(Ok(Message::Binary(bytes))) => match std::str::from_utf8(&bytes) {
                        Ok(text) => handle_text(text, cx),
                        Err(_) => send(cx, wire::error_frame(None, wire::code::PARSE_ERROR, "parse error: binary frame is not UTF-8")),
                    },
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    Some(Ok(Message::Close(_))) | None => return CloseReason::NORMAL,
                    Some(Err(e)) => return close_reason(e),
                }
            }
            reason = &mut closed => return reason,
            _ = shutdown.wait_for(|stop| *stop), if drain_until.is_none() => {
                drain_until = Some(Instant::now() + SHUTDOWN_DRAIN);
            }
            // One timer, built only while draining: the two built on every
            // pass before cost 4.6 KiB of RSS per idle connection (bench,
            // conns N=19,000); the deadline is checked at each tick.
            () = async { sleep(DRAIN_CHECK).await }, if drain_until.is_some() => {
                if drain_until.is_some_and(|until| Instant::now() >= until) {
                    return CloseReason::SHUTDOWN;
                }
            }
            () = &mut idle => return CloseReason::IDLE_TIMEOUT,
            () = sleep_until(init_deadline), if session.user().is_none() => return CloseReason::INIT_TIMEOUT,
        }
    }
}

/// What a WebSocket error means for the close frame.
fn close_reason(e: axum::Error) -> CloseReason {
    match e.into_inner().downcast::<tungstenite::Error>().map(|e| *e) {
        Ok(tungstenite::Error::Capacity(_)) => CloseReason::MESSAGE_TOO_BIG,
        Ok(tungstenite::Error::Utf8(_)) => CloseReason::INVALID_UTF8,
        Ok(tungstenite::Error::Protocol(_)) => CloseReason::PROTOCOL_ERROR,
        _ => CloseReason::NORMAL,
    }
}

/// Queues a response frame, counting it if it is an error.
fn respond(metrics: &Metrics, peer: &PeerHandle, frame: String) {
    metrics.sent(&frame);
    // A full queue closes the connection; the read loop sees that next.
    let _ = peer.send_frame(frame);
}

fn send(cx: &Context<'_>, frame: String) {
    respond(&cx.app.metrics, cx.peer, frame);
}

/// Spends one message of the connection's rate budget; `false` once it is
/// spent, until it comes back.
fn within_rate(cx: &Context<'_>) -> bool {
    if cx.rate.is_none_or(|rate| rate.try_acquire(Instant::now())) {
        return true;
    }
    cx.app.metrics.refused(Refused::Rate);
    false
}

/// The answer to a request past the rate limit: Busy, like a relay past the
/// in-flight limit (the client backs off the same way). Notifications and
/// garbage past it are dropped without a word.
fn rate_limited(id: Option<&serde_json::value::RawValue>) -> Option<String> {
    id.map(|id| wire::error_frame(Some(id), ErrorCode::Busy.code(), "busy: rate limit exceeded"))
}

fn handle_text(text: &str, cx: &Context<'_>) {
    match wire::classify(text) {
        Incoming::Request(request) if !within_rate(cx) => {
            if let Some(frame) = rate_limited(request.id) {
                send(cx, frame);
            }
        }
        Incoming::Request(request) => match start(request, cx) {
            Started::Done(Some(frame)) => send(cx, frame),
            Started::Done(None) => {}
            Started::Running(future) => {
                let peer = cx.peer.clone();
                let metrics = cx.app.metrics.clone();
                let running = cx.running.track();
                tokio::spawn(async move {
                    if let Some(frame) = future.await {
                        respond(&metrics, &peer, frame);
                    }
                    drop(running);
                });
            }
        },
        Incoming::Response(response) => {
            // Unknown or late ids are dropped: answering would break the client.
            cx.peer.complete(&response);
        }
        Incoming::Batch(items) => {
            if within_rate(cx) {
                handle_batch(&items, cx);
            }
        }
        Incoming::Invalid { id, code, message } => {
            if within_rate(cx) {
                send(cx, wire::error_frame(id, code, &message));
            }
        }
    }
}

fn start(request: wire::Request<'_>, cx: &Context<'_>) -> Started {
    // Built per request rather than cloned from one kept per connection:
    // the same two allocations per request, and none held by idle
    // connections.
    let mut ext = Extensions::new();
    ext.insert(cx.session.clone());
    wire::start(&cx.app.methods, request, cx.conn, ext)
}

/// Starts a batch's requests in order (each up to its first await, like
/// single ones) and answers with one array in the same order, once all are
/// done.
fn handle_batch(items: &[&serde_json::value::RawValue], cx: &Context<'_>) {
    let max = cx.app.hub.limits().max_batch_len;
    if items.is_empty() || items.len() > max {
        let message = if items.is_empty() {
            "empty batch".to_owned()
        } else {
            cx.app.metrics.refused(Refused::BatchLen);
            format!("batch longer than {max}")
        };
        return send(cx, wire::error_frame(None, wire::code::INVALID_REQUEST, &message));
    }
    let mut answers = Vec::with_capacity(items.len());
    // The batch's frame paid for its first element.
    for (at, item) in items.iter().enumerate() {
        match wire::classify_item(item) {
            Incoming::Request(request) if at > 0 && !within_rate(cx) => {
                answers.push(Started::Done(rate_limited(request.id)));
            }
            Incoming::Request(request) => answers.push(start(request, cx)),
            Incoming::Response(response) => {
                cx.peer.complete(&response);
            }
            Incoming::Invalid { id, code, message } => {
                answers.push(Started::Done(Some(wire::error_frame(id, code, &message))));
            }
            Incoming::Batch(_) => {
                let frame = wire::error_frame(None, wire::code::INVALID_REQUEST, "a batch cannot nest");
                answers.push(Started::Done(Some(frame)));
            }
        }
    }
    let peer = cx.peer.clone();
    let metrics = cx.app.metrics.clone();
    let running = cx.running.track();
    let assemble = async move {
        let mut frames = Vec::with_capacity(answers.len());
        for answer in answers {
            let frame = match answer {
                Started::Done(frame) => frame,
                Started::Running(future) => future.await,
            };
            if let Some(frame) = &frame {
                metrics.sent(frame);
            }
            frames.extend(frame);
        }
        // A batch of notifications only gets no answer at all.
        if !frames.is_empty() {
            respond(&metrics, &peer, format!("[{}]", frames.join(",")));
        }
        drop(running);
    };
    tokio::spawn(assemble);
}
