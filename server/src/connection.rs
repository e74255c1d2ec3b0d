//! One WebSocket connection, served by one task: a read loop that hands
//! each frame to the connection's `Dispatch` (which starts requests without
//! ever waiting on one), while the same task writes whatever is queued for
//! the client (coalescing frames into one flush) and pings; and a cleanup
//! that runs on every exit path.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use jsonrpsee::core::server::ConnectionId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{Instant, Sleep, sleep, sleep_until, timeout};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};
use tracing::{Instrument, debug, debug_span};
use webrtc_p2p_simple::{CloseReason, Dispatch, Limits, PeerHandle, Session};

use crate::App;
use crate::http::websocket_config;
use crate::metrics::ConnectionSlot;
use crate::stream::{Io, MemorySpent};

/// How often a draining connection looks whether anything still waits
/// (calls to the client have no "none left" event to await).
const DRAIN_CHECK: Duration = Duration::from_millis(10);

/// A message read or written larger than this (or a burst of frames written
/// between two flushes), and the WebSocket is rebuilt with fresh buffers once
/// it is between messages: tungstenite keeps the largest read and write
/// buffers a connection ever needed, ~1 MiB each after one message of the
/// size limit, for as long as the connection lives.
const SHRINK_ABOVE: usize = 16 * 1024;

/// What a closing connection reads and discards at a time.
const LINGER_READ: usize = 4096;

/// Serves one WebSocket, once the upgrade completes, until it closes, for
/// whatever reason; `slot` (the connection's place under the connection
/// cap) is given back after that.
///
/// This is each connection's task, as large as its largest state and all of
/// it resident on idle connections too: it holds only what the read loop
/// needs (the socket, its timer and buffers are on the heap), and every
/// cold path (building the socket, closing, waiting out a resume window)
/// runs boxed, allocated only when it runs.
pub(crate) async fn serve(upgrade: hyper::upgrade::OnUpgrade, app: App, slot: ConnectionSlot) {
    let io = match upgrade.await {
        Ok(upgraded) => TokioIo::new(upgraded),
        Err(e) => return debug!(error = %e, "upgrade failed"),
    };
    let conn = app.next_connection_id();
    let span = debug_span!("conn", id = conn.0);
    async {
        let socket = Box::pin(Socket::open(io, &app)).await;
        let suspended = run(socket, &app, conn).await;
        drop(slot);
        if let Some((session, generation)) = suspended {
            Box::pin(await_resume(&app, &session, generation)).await;
        }
    }
    .instrument(span)
    .await;
}

/// How a connection's reading ended.
enum Ended {
    /// The connection is to close.
    Closed(CloseReason),
    /// Its first request, `resume`, took this session over (at this
    /// generation): the connection serves it from now on.
    Resumed(Arc<Session>, u64),
}

/// Waits out a suspended session's resume window; unless a new connection
/// took it over by then (or the server is stopping), it ends as in v1.
///
/// A stopping node of a cluster waits instead (as long as the server's
/// shutdown grace lets it) for the client to resume on another node, which
/// asks this one for the session, and then for the answers to the calls it
/// made to the client (the client sends them there, and they come back
/// here, where their callers' relays wait). A node that stops with a
/// session still here is like one that died: the other nodes keep it for
/// the window.
async fn await_resume(app: &App, session: &Session, generation: u64) {
    let mut shutdown = app.shutdown.clone();
    let hands_over = app.hub.hands_over_on_shutdown();
    let peer = session.peer();
    // Relays to the client still time out meanwhile (nobody else looks).
    let expiring = async {
        loop {
            match peer.next_call_deadline() {
                Some(deadline) => {
                    sleep_until(deadline).await;
                    peer.expire_calls(Instant::now());
                }
                None => std::future::pending().await,
            }
        }
    };
    let taken_over = tokio::select! {
        () = sleep(app.hub.limits().resume_window) => false,
        _ = shutdown.wait_for(|stop| *stop), if !hands_over => false,
        _ = peer.ended(generation) => true,
        () = expiring => false,
    };
    // Calls to the client have no "none left" event to await.
    while taken_over && hands_over && *shutdown.borrow() && peer.pending_calls() > 0 {
        peer.expire_calls(Instant::now());
        sleep(DRAIN_CHECK).await;
    }
    // Boxed, like every cold path's large future: see `run`.
    Box::pin(app.hub.expire(session, generation)).await;
}

/// Serves the connection; returns the session when it is suspended rather
/// than ended.
async fn run(mut socket: Box<Socket>, app: &App, conn: ConnectionId) -> Option<(Arc<Session>, u64)> {
    let limits = app.hub.limits();
    let peer = PeerHandle::new(limits.max_queued_frames, limits.relay_timeout)
        .with_byte_limits(limits.max_queued_bytes, limits.max_message_size)
        .with_memory(app.memory.clone());
    let mut session = Arc::new(Session::new(Arc::new(peer)));
    let mut generation = 0;
    let (dispatch, reason) = loop {
        let dispatch = Dispatch::for_session(&app.hub, app.methods.clone(), conn, session.clone());
        match read_loop(&mut socket, app, &dispatch, &session, generation).await {
            Ended::Closed(reason) => break (dispatch, reason),
            Ended::Resumed(resumed, resumed_generation) => {
                // What this connection got before (errors, the `resume`
                // answer last) goes out before the session's replay.
                let fresh = session.peer();
                let written = Box::pin(socket.write_all(fresh)).await;
                fresh.seal();
                (session, generation) = (resumed, resumed_generation);
                socket.generation = generation;
                if let Err(e) = written {
                    debug!(error = %e, "write failed");
                    let dispatch = Dispatch::for_session(&app.hub, app.methods.clone(), conn, session.clone());
                    break (dispatch, CloseReason::LOST);
                }
            }
        }
    };
    // Boxed: see `serve`.
    Box::pin(finish(socket, app, session, generation, dispatch, reason)).await
}

/// Ends the connection for `reason`: closes the socket and ends the session,
/// or suspends it (returned) for a resume.
async fn finish(
    mut socket: Box<Socket>,
    app: &App,
    session: Arc<Session>,
    generation: u64,
    dispatch: Dispatch<Arc<Session>>,
    reason: CloseReason,
) -> Option<(Arc<Session>, u64)> {
    let limits = app.hub.limits();
    let peer = session.peer();
    // A newer connection may have taken the session over while this one
    // was failing for its own reasons.
    let reason = if peer.serves(generation) { reason } else { CloseReason::RESUMED_ELSEWHERE };
    debug!(code = reason.code, reason = reason.reason, "closing");
    app.metrics.closed(reason);
    let linger_bytes = limits.max_message_size.saturating_mul(Limits::LINGER_MESSAGES);
    if reason == CloseReason::RESUMED_ELSEWHERE {
        // The session lives on elsewhere; only this socket ends.
        socket.close_lingering(reason, linger_bytes).await;
        return None;
    }
    let suspends = matches!(reason, CloseReason::LOST | CloseReason::IDLE_TIMEOUT | CloseReason::MOVE_ELSEWHERE);
    if suspends && app.hub.suspend(&session, generation) {
        // Suspended before the socket closes, so nothing in the close can
        // end the session. What is queued stays queued for the resume; a
        // silent client may still read a close frame, and a client whose
        // node stops learns to resume on another.
        if reason != CloseReason::LOST {
            socket.close_lingering(reason, linger_bytes).await;
        }
        return Some((session, generation));
    }
    if !peer.serves(generation) {
        // Taken over a moment ago: the session lives on there.
        return None;
    }

    // Leave every group, release the id, fail calls waiting on this client.
    // Boxed: the router's futures (Redis calls, with --redis) would
    // otherwise sit in every connection's task from its start, as large as
    // its largest state, resident on idle connections too.
    Box::pin(app.hub.disconnect(&session, reason)).await;
    let peer = &**peer;
    if reason == CloseReason::SHUTDOWN {
        // The client is still there: let its running requests (relays to
        // members who are closing too, so they fail fast) write their
        // answers before the close frame, instead of vanishing.
        let lingering = async {
            tokio::select! {
                () = dispatch.running().all_finished() => {}
                _ = socket.write_until_error(peer) => {}
            }
        };
        let _ = timeout(Limits::CLOSE_LINGER, lingering).await;
    }
    // Write what is queued and the close frame, then shut the write side
    // down and drain what the client still sends, each for a bounded time.
    if let Ok(Err(e)) = timeout(Limits::CLOSE_LINGER, socket.close(peer, reason)).await {
        debug!(error = %e, "write failed");
    }
    peer.seal();
    let _ = timeout(Limits::CLOSE_LINGER, socket.linger(linger_bytes)).await;
    None
}

/// The client's WebSocket, read and written by the connection's one task:
/// queued frames go out whenever the socket takes them, and reading never
/// waits for writing (a client that stops reading fills only its own queue).
/// One task instead of a reader and a writer saves each connection a task,
/// the split halves' shared lock and a close channel (~1 KiB, bench).
struct Socket {
    ws: WebSocketStream<Io>,
    /// Frames written since the last flush.
    unflushed: bool,
    /// The connection's one timer, armed for the earlier of the next ping
    /// and the read loop's deadline: one timer instead of one per purpose,
    /// since each sits in every idle connection's memory.
    timer: Pin<Box<Sleep>>,
    /// How often the server pings, so that a silent client is noticed.
    ping_interval: Duration,
    /// When the next ping is due.
    ping_at: Instant,
    /// A ping is due and not yet written.
    ping_due: bool,
    /// The generation of the session this connection serves.
    generation: u64,
    /// A ping went out to learn that written frames arrived (resumable
    /// sessions only) and its pong has not come back: one at a time.
    ack_pending: bool,
    /// tungstenite's buffers may have grown past [`SHRINK_ABOVE`]: the
    /// WebSocket is rebuilt once it is between messages and flushed.
    shrink: bool,
    /// The first ping asking for a pong went out: the WebSocket was then
    /// rebuilt once (see [`Socket::poll_write`]).
    asked_for_ack: bool,
}

/// What the connection's socket has for the read loop.
enum Event {
    /// The client's next message, or the error or end of stream.
    Message(Option<Result<Message, tungstenite::Error>>),
    /// The WebSocket is between messages, flushed, with large buffers:
    /// time to [`Socket::rebuild`] it.
    Shrink,
    /// The read loop's deadline passed; the time seen.
    Deadline(Instant),
}

impl Socket {
    /// The WebSocket over an upgraded connection, with the server's limits.
    async fn open(io: TokioIo<hyper::upgrade::Upgraded>, app: &App) -> Box<Self> {
        let io = Io::new(io, app.memory.clone());
        let config = websocket_config(app.config.max_message_size);
        let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
        let ping_interval = app.hub.limits().ping_interval;
        let ping_at = Instant::now() + ping_interval;
        Box::new(Self {
            ws,
            unflushed: false,
            timer: Box::pin(sleep_until(ping_at)),
            ping_interval,
            ping_at,
            ping_due: false,
            generation: 0,
            ack_pending: false,
            shrink: false,
            asked_for_ack: false,
        })
    }

    /// Polls the timer: marks a due ping, and says when `wake_at` has passed. The timer
    /// is moved only when it fired or a deadline comes before it, so that
    /// the read loop pushing its idle deadline back on every message costs
    /// nothing here.
    fn poll_timer(&mut self, cx: &mut Context<'_>, wake_at: Instant) -> Option<Event> {
        loop {
            let due = wake_at.min(self.ping_at);
            if self.timer.is_elapsed() || due < self.timer.deadline() {
                self.timer.as_mut().reset(due);
            }
            if self.timer.as_mut().poll(cx).is_pending() {
                return None;
            }
            // Never before the deadline the timer fired for, so that each
            // firing moves something on.
            let now = Instant::now().max(self.timer.deadline());
            if now >= self.ping_at {
                self.ping_due = true;
                self.ping_at = now + self.ping_interval;
            }
            if now >= wake_at {
                return Some(Event::Deadline(now));
            }
        }
    }

    /// A fresh WebSocket over the same connection, with small buffers.
    /// Only between messages, with everything flushed: then tungstenite's
    /// buffers hold nothing but capacity, and its state is that of a new
    /// connection.
    async fn rebuild(&mut self) {
        let io = self.ws.get_mut().take();
        let config = *self.ws.get_config();
        // Boxed: this future is larger than the read loop's other states, and
        // would sit in every connection's task (see `serve`).
        self.ws = Box::pin(WebSocketStream::from_raw_socket(io, Role::Server, Some(config))).await;
        self.shrink = false;
    }

    /// Writes, without waiting, a due ping and what is queued (up to
    /// `Limits::WRITE_BATCH` frames per flush), and flushes. `Ok` when nothing more
    /// can go out now; the socket, the queue or the ping timer wakes the
    /// task when that changes.
    fn poll_write(&mut self, cx: &mut Context<'_>, peer: &PeerHandle) -> Result<(), tungstenite::Error> {
        loop {
            let mut fed = 0;
            while fed < Limits::WRITE_BATCH {
                match self.ws.poll_ready_unpin(cx) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(e)) => return Err(e),
                    Poll::Pending => return Ok(()),
                }
                let message = if std::mem::take(&mut self.ping_due) {
                    Message::Ping(peer.ping_payload().into())
                } else {
                    match peer.poll_next_frame(cx, self.generation) {
                        Poll::Ready(frame) => Message::Text(frame.into()),
                        // A resumable session keeps what it wrote until a
                        // pong says it arrived: ask once the burst is out.
                        Poll::Pending if !self.ack_pending && peer.awaits_ack() => {
                            self.ack_pending = true;
                            // The session just became resumable (`session`
                            // was answered): tungstenite's write buffer keeps
                            // the capacity of its largest write for good,
                            // here that answer's and this ping's, ~0.5 KiB
                            // on every idle resumable connection. Rebuilt
                            // once, between messages, it holds none.
                            self.shrink |= !std::mem::replace(&mut self.asked_for_ack, true);
                            Message::Ping(peer.ping_payload().into())
                        }
                        Poll::Pending => break,
                    }
                };
                let io = self.ws.get_mut();
                io.feeding(message.len());
                self.shrink |= io.unflushed() > SHRINK_ABOVE;
                self.ws.start_send_unpin(message)?;
                self.unflushed = true;
                fed += 1;
            }
            if !self.unflushed {
                return Ok(());
            }
            match self.ws.poll_flush_unpin(cx) {
                Poll::Ready(Ok(())) => {
                    self.unflushed = false;
                    self.ws.get_mut().flushed();
                }
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => return Ok(()),
            }
            if fed < Limits::WRITE_BATCH {
                return Ok(());
            }
        }
    }

    /// The client's next message, writing whatever is queued meanwhile (and
    /// pings); or the moment to shrink the WebSocket's buffers; or
    /// `wake_at`, once it has passed.
    fn next<'a>(&'a mut self, peer: &'a PeerHandle, wake_at: Instant) -> impl Future<Output = Event> + 'a {
        poll_fn(move |cx| {
            // A call to the client may have been made since the last poll
            // (queueing its frame woke this task): its timeout is this
            // connection's to find.
            let wake_at = peer.next_call_deadline().map_or(wake_at, |call| call.min(wake_at));
            if let Some(deadline) = self.poll_timer(cx, wake_at) {
                return Poll::Ready(deadline);
            }
            if let Err(e) = self.poll_write(cx, peer) {
                return Poll::Ready(Event::Message(Some(Err(e))));
            }
            if self.shrink && self.ws.get_ref().between_messages() {
                match self.ws.poll_flush_unpin(cx) {
                    Poll::Ready(Ok(())) => {
                        self.unflushed = false;
                        self.ws.get_mut().flushed();
                        return Poll::Ready(Event::Shrink);
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Event::Message(Some(Err(e)))),
                    Poll::Pending => {}
                }
            }
            let message = std::task::ready!(self.ws.poll_next_unpin(cx));
            if let Some(Ok(message)) = &message {
                self.ws.get_mut().delivered();
                self.shrink |= message.len() > SHRINK_ABOVE;
            }
            Poll::Ready(Event::Message(message))
        })
    }

    /// Writes what gets queued until writing fails.
    fn write_until_error<'a>(&'a mut self, peer: &'a PeerHandle) -> impl Future<Output = tungstenite::Error> + 'a {
        poll_fn(move |cx| match self.poll_write(cx, peer) {
            Err(e) => Poll::Ready(e),
            Ok(()) => Poll::Pending,
        })
    }

    /// Writes every frame queued now, and flushes.
    async fn write_all(&mut self, peer: &PeerHandle) -> Result<(), tungstenite::Error> {
        while let Some(frame) = peer.try_next_frame() {
            self.ws.feed(Message::Text(frame.into())).await?;
        }
        self.ws.flush().await
    }

    /// Writes only the close frame.
    async fn close_frame(&mut self, reason: CloseReason) -> Result<(), tungstenite::Error> {
        self.ws.send(Message::Close(Some(close_frame(reason)))).await
    }

    /// Writes only the close frame, leaving what is queued for a resume,
    /// then lingers; each for a bounded time.
    async fn close_lingering(&mut self, reason: CloseReason, linger_bytes: usize) {
        let _ = timeout(Limits::CLOSE_LINGER, self.close_frame(reason)).await;
        let _ = timeout(Limits::CLOSE_LINGER, self.linger(linger_bytes)).await;
    }

    /// Writes the frames queued before the close, then the close frame (or,
    /// when the client closed first, the reply tungstenite queued for it).
    async fn close(&mut self, peer: &PeerHandle, reason: CloseReason) -> Result<(), tungstenite::Error> {
        let frames = async {
            while let Some(frame) = peer.try_next_frame() {
                self.ws.feed(Message::Text(frame.into())).await?;
            }
            self.ws.send(Message::Close(Some(close_frame(reason)))).await
        };
        let written = frames.await;
        let flushed = self.ws.flush().await;
        written.and(flushed)
    }

    /// The end of a closing handshake: shuts the write side down (the client
    /// reads everything written, then the end of the stream) and reads and
    /// discards up to `max_bytes` until the client closes its side too.
    async fn linger(&mut self, max_bytes: usize) {
        let io = self.ws.get_mut();
        io.stop_following();
        if io.shutdown().await.is_err() {
            return;
        }
        let mut discarded = 0;
        // On the heap, and only now: an array here would sit in every
        // connection's task from its start (the task is as large as its
        // largest state), 4 KiB of resident memory per idle connection.
        let mut buf = vec![0u8; LINGER_READ];
        while discarded < max_bytes {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => discarded += n,
            }
        }
    }
}

async fn read_loop(
    socket: &mut Socket,
    app: &App,
    dispatch: &Dispatch<Arc<Session>>,
    session: &Session,
    generation: u64,
) -> Ended {
    let limits = app.hub.limits();
    let peer = session.peer();
    let init_deadline = Instant::now() + limits.init_timeout;
    let mut idle_deadline = Instant::now() + limits.idle_timeout;
    let closed = peer.ended(generation);
    tokio::pin!(closed);
    let mut shutdown = app.shutdown.clone();
    // Set when shutdown starts: until then, answers still count.
    let mut drain_until: Option<Instant> = None;
    // The socket said it is time to rebuild the WebSocket (done out of the
    // `select!`, whose output may hold the shutdown flag's lock).
    let mut shrink = false;
    // A request of a session not yet made (`init`, `resume`) is running.
    let mut starting = false;

    loop {
        if std::mem::take(&mut shrink) {
            socket.rebuild().await;
        }
        if std::mem::take(&mut starting) {
            // Until `init` or `resume` is answered, requests are served one
            // at a time (a cluster's await Redis, or another node): what the
            // client sends next belongs to the session they make, and is
            // counted there.
            let _ = timeout(limits.init_timeout, dispatch.running().all_finished()).await;
            if let Some((resumed, generation)) = session.take_resumed() {
                return Ended::Resumed(resumed, generation);
            }
        }
        if drain_until.is_some() && peer.pending_calls() == 0 && dispatch.running().is_idle() {
            return Ended::Closed(CloseReason::SHUTDOWN);
        }
        // The loop's one deadline, on the socket's timer (see `Socket::timer`).
        let mut wake_at = idle_deadline;
        if session.user().is_none() {
            wake_at = wake_at.min(init_deadline);
        }
        if drain_until.is_some() {
            // Calls to the client have no "none left" event to await.
            wake_at = wake_at.min(Instant::now() + DRAIN_CHECK);
        }
        tokio::select! {
            event = socket.next(peer, wake_at) => {
                let message = match event {
                    Event::Message(message) => message,
                    Event::Shrink => {
                        shrink = true;
                        continue;
                    }
                    Event::Deadline(now) => {
                        peer.expire_calls(now);
                        if drain_until.is_some_and(|until| now >= until) {
                            return Ended::Closed(CloseReason::SHUTDOWN);
                        }
                        if now >= idle_deadline {
                            return Ended::Closed(CloseReason::IDLE_TIMEOUT);
                        }
                        if now >= init_deadline && session.user().is_none() {
                            return Ended::Closed(CloseReason::INIT_TIMEOUT);
                        }
                        continue;
                    }
                };
                // Pings and pongs between the fragments of a message do not
                // keep it alive: a message must arrive within the idle
                // timeout, so a half-sent one cannot hold its buffers forever.
                let control = matches!(message, Some(Ok(Message::Ping(_) | Message::Pong(_))));
                if !control || !socket.ws.get_ref().fragmented() {
                    idle_deadline = Instant::now() + limits.idle_timeout;
                }
                match message {
                    Some(Ok(Message::Text(text))) => counted(session, generation, || dispatch.text(text.as_str())),
                    Some(Ok(Message::Binary(bytes))) => counted(session, generation, || dispatch.binary(&bytes)),
                    Some(Ok(Message::Pong(payload))) => {
                        socket.ack_pending = false;
                        peer.ack(&payload);
                    }
                    Some(Ok(Message::Ping(_) | Message::Frame(_))) => {}
                    Some(Ok(Message::Close(_))) => return Ended::Closed(CloseReason::NORMAL),
                    None => return Ended::Closed(CloseReason::LOST),
                    Some(Err(e)) => return Ended::Closed(close_reason(e)),
                }
                starting = session.user().is_none() && !dispatch.running().is_idle();
                if let Some((resumed, generation)) = session.take_resumed() {
                    return Ended::Resumed(resumed, generation);
                }
            }
            reason = &mut closed => return Ended::Closed(reason),
            _ = shutdown.wait_for(|stop| *stop), if drain_until.is_none() => {
                if session.user().is_some() && peer.is_resumable() && app.hub.hands_over_on_shutdown() {
                    // The session moves to the node the client resumes on,
                    // with whatever is running for it: nothing to drain.
                    return Ended::Closed(CloseReason::MOVE_ELSEWHERE);
                }
                drain_until = Some(Instant::now() + Limits::SHUTDOWN_DRAIN);
            }
        }
    }
}

/// Handles a data frame with `handle`, counting it for `resume`'s
/// `received` once the session exists (`init` counts its own request).
/// A frame that reaches a connection whose session a newer one took over
/// is dropped, not handled: the client sends it again there.
fn counted(session: &Session, generation: u64, handle: impl FnOnce()) {
    if session.user().is_some() {
        session.peer().handle_received(generation, handle);
    } else {
        handle();
    }
}

/// What a WebSocket error means for the close frame.
fn close_reason(e: tungstenite::Error) -> CloseReason {
    match e {
        tungstenite::Error::Capacity(_) => CloseReason::MESSAGE_TOO_BIG,
        tungstenite::Error::Io(e) if e.get_ref().is_some_and(|e| e.is::<MemorySpent>()) => CloseReason::MEMORY,
        tungstenite::Error::Utf8(_) => CloseReason::INVALID_UTF8,
        // EOF without a close frame: the network, not the client, ended it.
        tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => CloseReason::LOST,
        tungstenite::Error::Protocol(_) => CloseReason::PROTOCOL_ERROR,
        // Only if the write buffer holds more than one whole frame past its
        // flush threshold, which the writer never lets happen.
        tungstenite::Error::WriteBufferFull(_) => CloseReason::SLOW_CONSUMER,
        _ => CloseReason::LOST,
    }
}

/// The close frame for `reason`.
fn close_frame(reason: CloseReason) -> CloseFrame {
    CloseFrame { code: CloseCode::from(reason.code), reason: Utf8Bytes::from_static(reason.reason) }
}
