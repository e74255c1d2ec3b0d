//! One WebSocket connection: a read loop that classifies each frame and
//! starts requests without ever waiting on one, a writer task that drains the
//! connection's queue (coalescing frames into one flush) and pings, and a
//! cleanup that runs on every exit path.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use jsonrpsee::core::server::{ConnectionId, Extensions};
use tokio::sync::{mpsc, oneshot};
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
    ext: &'a Extensions,
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
/// Not an `async fn`: the socket is split here, so the 368-byte WebSocket
/// lives only inside the split halves' shared lock and not also in an
/// argument slot of each future layer of every connection.
pub(crate) fn serve(socket: WebSocket, app: App, slot: ConnectionSlot) -> impl Future<Output = ()> + Send {
    let conn = app.next_connection_id();
    let span = debug_span!("conn", id = conn.0);
    let (sink, stream) = socket.split();
    async move {
        run(sink, stream, app, conn).await;
        drop(slot);
    }
    .instrument(span)
}

async fn run(sink: SplitSink<WebSocket, Message>, mut stream: SplitStream<WebSocket>, app: App, conn: ConnectionId) {
    let limits = app.hub.limits();
    let (outbox, queue) = mpsc::channel(limits.max_queued_frames);
    let peer = Arc::new(PeerHandle::new(outbox, limits.relay_timeout));
    let session = Arc::new(Session::new(peer.clone()));
    let mut ext = Extensions::new();
    ext.insert(session.clone());

    let (close_tx, close_rx) = oneshot::channel();
    let mut writer = tokio::spawn(write_loop(sink, queue, close_rx, limits.ping_interval));

    let running = Running::default();
    let rate = limits.rate_limiter();
    let cx = Context { app: &app, peer: &peer, ext: &ext, conn, running: &running, rate: rate.as_ref() };
    let reason = read_loop(&mut stream, &cx, &session).await;
    debug!(code = reason.code, reason = reason.reason, "closing");
    app.metrics.closed(reason);

    // Leave every group, release the id, fail calls waiting on this client.
    app.hub.disconnect(&session, reason);
    if reason == CloseReason::SHUTDOWN {
        // The client is still there: let its running requests (relays to
        // members who are closing too, so they fail fast) write their
        // answers before the close frame, instead of vanishing.
        let _ = timeout(CLOSE_LINGER, running.all_finished()).await;
    }
    let _ = close_tx.send(reason);
    // Let the writer flush what is queued and the close frame, and read the
    // client's close reply, each for a bounded time.
    let drain = async { while let Some(Ok(_)) = stream.next().await {} };
    let _ = timeout(CLOSE_LINGER, drain).await;
    if timeout(CLOSE_LINGER, &mut writer).await.is_err() {
        writer.abort();
    }
}

async fn read_loop(stream: &mut SplitStream<WebSocket>, cx: &Context<'_>, session: &Session) -> CloseReason {
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
            message = stream.next() => {
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
    wire::start(&cx.app.methods, request, cx.conn, cx.ext.clone())
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

async fn write_loop(
    mut sink: SplitSink<WebSocket, Message>,
    mut queue: mpsc::Receiver<String>,
    mut close: oneshot::Receiver<CloseReason>,
    ping_interval: Duration,
) {
    let mut ping = tokio::time::interval_at(Instant::now() + ping_interval, ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let result: Result<(), axum::Error> = async {
        loop {
            tokio::select! {
                biased;
                reason = &mut close => {
                    // Frames queued before the close still go out.
                    while let Ok(frame) = queue.try_recv() {
                        sink.feed(Message::Text(frame.into())).await?;
                    }
                    let reason = reason.unwrap_or(CloseReason::NORMAL);
                    let frame = CloseFrame { code: reason.code, reason: Utf8Bytes::from_static(reason.reason) };
                    return sink.send(Message::Close(Some(frame))).await;
                }
                frame = queue.recv() => {
                    let Some(frame) = frame else { return Ok(()) };
                    sink.feed(Message::Text(frame.into())).await?;
                    // Whatever else is queued goes out in the same flush;
                    // taken one by one, so no batch buffer lives on every
                    // idle connection.
                    for _ in 1..WRITE_BATCH {
                        let Ok(frame) = queue.try_recv() else { break };
                        sink.feed(Message::Text(frame.into())).await?;
                    }
                    sink.flush().await?;
                }
                _ = ping.tick() => sink.send(Message::Ping(Default::default())).await?,
            }
        }
    }
    .await;
    if let Err(e) = result {
        debug!(error = %e, "write failed");
    }
}
