//! The WebSocket under the stock jsonrpsee client. One writer task owns the
//! socket's sending half and drains one queue, which jsonrpsee's sender and
//! the local handlers' answers both feed. The receiver runs the server's
//! requests and notifications through the handler's method table and hands
//! jsonrpsee only responses: given a request, jsonrpsee would take it for a
//! notification and drop it unanswered.

use std::future::Future;
use std::sync::Arc;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use jsonrpsee::core::client::{ReceivedMessage, TransportReceiverT, TransportSenderT};
use jsonrpsee::core::server::{ConnectionId, Extensions, Methods};
use serde_json::value::RawValue;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tracing::{debug, warn};

use super::Disconnected;
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

/// Connects the halves of `socket`: returns jsonrpsee's sender and receiver,
/// and the shared connection; the writer task is running.
pub(super) fn split(socket: Socket, methods: Methods, max_handlers: usize) -> (Sender, Receiver, Arc<Conn>) {
    let (sink, stream) = socket.split();
    let (outbox, queue) = mpsc::channel(OUTBOX_CAPACITY);
    let conn = Arc::new(Conn { outbox, state: watch::Sender::new(State::default()) });
    tokio::spawn(write_loop(sink, queue, conn.clone()));
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
/// the dispatch: [`Receiver`] hands them to jsonrpsee.
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
                // jsonrpsee's own pings stay off and no pong is for it.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => None,
                Some(Ok(Message::Close(frame))) => {
                    let reason = match frame {
                        Some(CloseFrame { code, reason }) => {
                            Disconnected::Server { code: code.into(), reason: reason.as_str().to_owned() }
                        }
                        None => Disconnected::Server { code: CloseCode::Status.into(), reason: String::new() },
                    };
                    return Err(self.conn.end_by_server(reason));
                }
                None => {
                    let reason = Disconnected::Failed("the server hung up without a close frame".into());
                    return Err(self.conn.end_by_server(reason));
                }
                Some(Err(e)) => {
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
    /// Handles one frame; returns it when it is for jsonrpsee.
    fn dispatch(&self, text: &str) -> Option<String> {
        match wire::classify(text) {
            Incoming::Request(request) => {
                self.dispatch.request(request);
                None
            }
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

/// jsonrpsee numbers its requests (`IdKind::Number`, set in `connect`).
fn is_jsonrpsee_id(id: &RawValue) -> bool {
    id.get().bytes().next().is_some_and(|b| b.is_ascii_digit())
}

/// Writes queued frames until the connection is to close, then sends the
/// close frame (or flushes tungstenite's reply to the server's).
async fn write_loop(mut sink: SplitSink<Socket, Message>, mut queue: mpsc::Receiver<String>, conn: Arc<Conn>) {
    let mut state = conn.state.subscribe();
    let stop = |s: &State| s.close_requested || s.ended.is_some();
    let mut batch = Vec::with_capacity(Limits::WRITE_BATCH);
    loop {
        let received = tokio::select! {
            biased;
            _ = state.wait_for(stop) => break,
            received = queue.recv_many(&mut batch, Limits::WRITE_BATCH) => received,
        };
        if received == 0 {
            break;
        }
        let write = async {
            for frame in batch.drain(..) {
                sink.feed(Message::text(frame)).await?;
            }
            sink.flush().await
        };
        // A server that stopped reading must not keep the close waiting.
        let written = tokio::select! {
            written = write => written,
            _ = state.wait_for(stop) => break,
        };
        if let Err(e) = written {
            conn.end(Disconnected::Failed(format!("write failed: {e}")));
            break;
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
