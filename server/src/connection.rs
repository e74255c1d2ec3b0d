//! One WebSocket connection, served by one task: a read loop that hands
//! each frame to the connection's `Dispatch` (which starts requests without
//! ever waiting on one), while the same task writes whatever is queued for
//! the client (coalescing frames into one flush) and pings; and a cleanup
//! that runs on every exit path.

use std::future::poll_fn;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::{SinkExt, StreamExt};
use jsonrpsee::core::server::ConnectionId;
use tokio::time::{Instant, sleep, sleep_until, timeout};
use tokio_tungstenite::tungstenite;
use tracing::{Instrument, debug, debug_span};
use webrtc_p2p_simple::{CloseReason, Dispatch, Limits, PeerHandle, Session};

use crate::App;
use crate::metrics::ConnectionSlot;

/// How often a draining connection looks whether anything still waits
/// (calls to the client have no "none left" event to await).
const DRAIN_CHECK: Duration = Duration::from_millis(10);

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
    let dispatch = Dispatch::for_session(&app.hub, app.methods.clone(), conn, session.clone());
    let reason = read_loop(&mut socket, &app, &dispatch, &session).await;
    debug!(code = reason.code, reason = reason.reason, "closing");
    app.metrics.closed(reason);

    // Leave every group, release the id, fail calls waiting on this client.
    app.hub.disconnect(&session, reason).await;
    if reason == CloseReason::SHUTDOWN {
        // The client is still there: let its running requests (relays to
        // members who are closing too, so they fail fast) write their
        // answers before the close frame, instead of vanishing.
        let lingering = async {
            tokio::select! {
                () = dispatch.running().all_finished() => {}
                _ = socket.write_until_error(&peer) => {}
            }
        };
        let _ = timeout(Limits::CLOSE_LINGER, lingering).await;
    }
    // Write what is queued and the close frame, then read the client's close
    // reply, each for a bounded time.
    if let Ok(Err(e)) = timeout(Limits::CLOSE_LINGER, socket.close(&peer, reason)).await {
        debug!(error = %e, "write failed");
    }
    peer.seal();
    let drain = async { while let Some(Ok(_)) = socket.ws.next().await {} };
    let _ = timeout(Limits::CLOSE_LINGER, drain).await;
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
    /// `Limits::WRITE_BATCH` frames per flush), and flushes. `Ok` when nothing more
    /// can go out now; the socket, the queue or the ping timer wakes the
    /// task when that changes.
    fn poll_write(&mut self, cx: &mut Context<'_>, peer: &PeerHandle) -> Result<(), axum::Error> {
        loop {
            let mut fed = 0;
            while fed < Limits::WRITE_BATCH {
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
            if fed < Limits::WRITE_BATCH {
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

async fn read_loop(
    socket: &mut Socket,
    app: &App,
    dispatch: &Dispatch<Arc<Session>>,
    session: &Session,
) -> CloseReason {
    let limits = app.hub.limits();
    let peer = session.peer();
    let init_deadline = Instant::now() + limits.init_timeout;
    let idle = sleep(limits.idle_timeout);
    tokio::pin!(idle);
    let closed = peer.closed();
    tokio::pin!(closed);
    let mut shutdown = app.shutdown.clone();
    // Set when shutdown starts: until then, answers still count.
    let mut drain_until: Option<Instant> = None;

    loop {
        if drain_until.is_some() && peer.pending_calls() == 0 && dispatch.running().is_idle() {
            return CloseReason::SHUTDOWN;
        }
        tokio::select! {
            message = socket.next(peer) => {
                idle.as_mut().reset(Instant::now() + limits.idle_timeout);
                match message {
                    Some(Ok(Message::Text(text))) => dispatch.text(text.as_str()),
                    Some(Ok(Message::Binary(bytes))) => dispatch.binary(&bytes),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    Some(Ok(Message::Close(_))) | None => return CloseReason::NORMAL,
                    Some(Err(e)) => return close_reason(e),
                }
            }
            reason = &mut closed => return reason,
            _ = shutdown.wait_for(|stop| *stop), if drain_until.is_none() => {
                drain_until = Some(Instant::now() + Limits::SHUTDOWN_DRAIN);
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
