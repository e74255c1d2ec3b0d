//! `PeerHandle`: the server's handle on one connected client, with no socket
//! in it. It owns the connection's bounded outgoing queue and the calls the
//! server made to the client that still wait for an answer; the router's
//! [`Target`](crate::Target) for a client of this process.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::task::{Poll, Waker};
use std::time::Duration;

use serde_json::value::RawValue;
use tokio::sync::{Notify, oneshot};

use crate::wire;

/// Why a connection was closed, as its WebSocket close frame says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseReason {
    /// The RFC 6455 close code.
    pub code: u16,
    /// The close frame's reason text.
    pub reason: &'static str,
}

impl CloseReason {
    /// The client closed, or the connection dropped.
    pub const NORMAL: Self = Self { code: 1000, reason: "" };
    /// The server is shutting down.
    pub const SHUTDOWN: Self = Self { code: 1001, reason: "server shutting down" };
    /// A WebSocket protocol violation.
    pub const PROTOCOL_ERROR: Self = Self { code: 1002, reason: "protocol error" };
    /// A text frame that is not UTF-8.
    pub const INVALID_UTF8: Self = Self { code: 1007, reason: "invalid UTF-8 in a text frame" };
    /// No `init` within the init timeout.
    pub const INIT_TIMEOUT: Self = Self { code: 1008, reason: "init timeout" };
    /// No frame (pongs included) within the idle timeout.
    pub const IDLE_TIMEOUT: Self = Self { code: 1008, reason: "idle timeout" };
    /// The client stopped reading and its outgoing queue filled up.
    pub const SLOW_CONSUMER: Self = Self { code: 1008, reason: "slow consumer: outgoing queue full" };
    /// A frame or message over the size limit.
    pub const MESSAGE_TOO_BIG: Self = Self { code: 1009, reason: "message too big" };
}

/// Why a call to a peer failed without an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CallFailed {
    /// The peer did not answer within the call timeout.
    #[error("the peer did not answer in time")]
    Timeout,
    /// The peer's connection closed (or its queue overflowed) first.
    #[error("the peer disconnected")]
    Gone,
}

/// A peer's answer to a call: its result or its error object, both raw.
pub type Answer = Result<Box<RawValue>, Box<RawValue>>;

/// Frames waiting to be written to the client, and the connection task to
/// wake when one arrives. A `VecDeque` behind a lock rather than tokio's mpsc
/// channel, which costs ~1.3 KiB per connection even when empty: this costs
/// nothing until frames wait.
#[derive(Debug, Default)]
struct Outbox {
    frames: VecDeque<String>,
    waker: Option<Waker>,
    /// Set once the connection is done writing: later frames are refused.
    sealed: bool,
}

/// The server's handle on one connected client.
#[derive(Debug)]
pub struct PeerHandle {
    /// Frames for the connection to write. Bounded, and never waited on: a
    /// client that stops reading fills only its own queue, and is then
    /// disconnected instead of stalling whoever sends to it.
    outbox: Mutex<Outbox>,
    /// How many frames may wait in `outbox`.
    max_queued_frames: usize,
    /// Calls to this client waiting for its answer, by our request id. `None`
    /// once the connection closed, which fails every waiter at once.
    pending: Mutex<Option<HashMap<u64, oneshot::Sender<Answer>>>>,
    /// The next id for a call to this client. Our ids go out as strings
    /// (`"s1"`), apart from anything a client might use.
    next_id: AtomicU64,
    /// How long a call waits for the answer.
    call_timeout: Duration,
    /// Set once, when the connection is to close; the transport waits on
    /// `closing` for it. (A `watch` channel did the same with a 360-byte
    /// allocation on every connection.)
    closed: OnceLock<CloseReason>,
    /// Wakes whoever waits in [`closed`](Self::closed).
    closing: Notify,
}

impl PeerHandle {
    /// A handle queueing at most `max_queued_frames` frames for the client
    /// (the connection takes them with [`poll_next_frame`](Self::poll_next_frame)),
    /// whose calls wait at most `call_timeout`.
    pub fn new(max_queued_frames: usize, call_timeout: Duration) -> Self {
        Self {
            outbox: Mutex::default(),
            max_queued_frames: max_queued_frames.max(1),
            pending: Mutex::new(Some(HashMap::new())),
            next_id: AtomicU64::new(1),
            call_timeout,
            closed: OnceLock::new(),
            closing: Notify::new(),
        }
    }

    /// Queues a frame for the client. Never waits: when the queue is full the
    /// client is a slow consumer and is disconnected.
    pub fn send_frame(&self, frame: String) -> Result<(), CallFailed> {
        let mut outbox = self.lock_outbox();
        if outbox.sealed {
            return Err(CallFailed::Gone);
        }
        if outbox.frames.len() >= self.max_queued_frames {
            drop(outbox);
            self.close(CloseReason::SLOW_CONSUMER);
            return Err(CallFailed::Gone);
        }
        outbox.frames.push_back(frame);
        let waker = outbox.waker.take();
        drop(outbox);
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    /// The next frame to write, or `Pending` (and `cx` is woken when one is
    /// queued).
    pub fn poll_next_frame(&self, cx: &mut std::task::Context<'_>) -> Poll<String> {
        let mut outbox = self.lock_outbox();
        if let Some(frame) = outbox.pop() {
            return Poll::Ready(frame);
        }
        match &mut outbox.waker {
            Some(waker) => waker.clone_from(cx.waker()),
            None => outbox.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// The next frame to write, if one is queued.
    pub fn try_next_frame(&self) -> Option<String> {
        self.lock_outbox().pop()
    }

    /// Waits for the next frame to write.
    pub async fn next_frame(&self) -> String {
        std::future::poll_fn(|cx| self.poll_next_frame(cx)).await
    }

    /// The connection is done writing: frames queued from now on are
    /// refused (`Gone`), and those still waiting are dropped.
    pub fn seal(&self) {
        let mut outbox = self.lock_outbox();
        outbox.sealed = true;
        outbox.frames = VecDeque::new();
        outbox.waker = None;
    }

    /// Sends a notification (a request without id), with params as JSON
    /// text (an array or object) that the caller vouches for.
    pub fn notify(&self, method: &str, params: &str) -> Result<(), CallFailed> {
        self.send_frame(wire::notification_frame(method, params))
    }

    /// Calls `method` on the client, with params as JSON text (an array or
    /// object) that the caller vouches for, and waits for its answer:
    /// `Ok(Ok(result))`, `Ok(Err(error object))`, or why there was none.
    /// Everything before the first await (queueing the frame included)
    /// happens on the caller's stack, so calls keep the order in which they
    /// were made.
    pub async fn call(&self, method: &str, params: &str) -> Result<Answer, CallFailed> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        match self.lock_pending().as_mut() {
            Some(pending) => pending.insert(id, tx),
            None => return Err(CallFailed::Gone),
        };
        let waiting = Waiting { peer: self, id };
        self.send_frame(wire::call_frame(id, method, params))?;
        let answer = match tokio::time::timeout(self.call_timeout, rx).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err(CallFailed::Gone),
            Err(_) => Err(CallFailed::Timeout),
        };
        drop(waiting);
        answer
    }

    /// Hands a response from the client to the call waiting for it. A
    /// response we did not ask for (unknown or late id) is dropped: answering
    /// it would break the client. Returns whether a call was waiting.
    pub fn complete(&self, response: &wire::Response<'_>) -> bool {
        let Some(id) = parse_our_id(response.id) else {
            return false;
        };
        let Some(tx) = self.lock_pending().as_mut().and_then(|p| p.remove(&id)) else {
            return false;
        };
        let answer = match response.outcome {
            Ok(result) => Ok(result.to_owned()),
            Err(error) => Err(error.to_owned()),
        };
        // The waiter may have timed out a moment ago; then nobody wants it.
        tx.send(answer).is_ok()
    }

    /// Closes the handle: every waiting call fails with `Gone`, new calls fail
    /// at once, and the transport is told to close with `reason`. Only the
    /// first reason counts. Returns whether this call closed it.
    pub fn close(&self, reason: CloseReason) -> bool {
        let dropped = self.lock_pending().take();
        drop(dropped);
        let first = self.closed.set(reason).is_ok();
        if first {
            self.closing.notify_waiters();
        }
        first
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.closed.get().is_some()
    }

    /// Resolves with the reason once the handle is closed.
    pub async fn closed(&self) -> CloseReason {
        loop {
            let notified = self.closing.notified();
            tokio::pin!(notified);
            // Registered before the check, so a close in between still wakes it.
            notified.as_mut().enable();
            if let Some(reason) = self.closed.get() {
                return *reason;
            }
            notified.await;
        }
    }

    /// Calls waiting for this client's answer.
    pub fn pending_calls(&self) -> usize {
        self.lock_pending().as_ref().map_or(0, HashMap::len)
    }

    fn lock_outbox(&self) -> std::sync::MutexGuard<'_, Outbox> {
        // Each critical section is one push, pop or reset: poisoning is moot.
        self.outbox.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, Option<HashMap<u64, oneshot::Sender<Answer>>>> {
        // A panic while holding this lock cannot leave the map inconsistent
        // (each operation is a single insert/remove/take), so poisoning is moot.
        self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Outbox {
    fn pop(&mut self) -> Option<String> {
        let frame = self.frames.pop_front();
        // An emptied outbox frees its buffer, so idle connections hold none
        // (measured: ~0.1 KiB each; the allocator makes the next one cheap).
        if self.frames.is_empty() {
            self.frames = VecDeque::new();
        }
        frame
    }
}

/// Removes a call's pending entry when the call ends without an answer
/// (timeout, or the caller's future dropped).
struct Waiting<'a> {
    peer: &'a PeerHandle,
    id: u64,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Some(pending) = self.peer.lock_pending().as_mut() {
            pending.remove(&self.id);
        }
    }
}

/// Our ids are `"s<n>"`; anything else is not ours.
fn parse_our_id(id: &RawValue) -> Option<u64> {
    id.get().strip_prefix("\"s")?.strip_suffix('"')?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle(queue: usize, timeout_ms: u64) -> PeerHandle {
        PeerHandle::new(queue, Duration::from_millis(timeout_ms))
    }

    fn is_pending<F: std::future::Future + Unpin>(f: &mut F) -> bool {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        std::pin::Pin::new(f).poll(&mut cx).is_pending()
    }

    fn answer(peer: &PeerHandle, frame: &str) -> bool {
        let wire::Incoming::Response(response) = wire::classify(frame) else { panic!("{frame}") };
        peer.complete(&response)
    }

    #[tokio::test]
    async fn call_is_answered_by_the_response_with_its_id() {
        let peer = handle(8, 5_000);
        let call = peer.call("relay", "[]");
        tokio::pin!(call);
        assert!(is_pending(&mut call));
        let frame = peer.next_frame().await;
        assert_eq!(frame, r#"{"jsonrpc":"2.0","id":"s1","method":"relay","params":[]}"#);
        assert!(!answer(&peer, r#"{"jsonrpc":"2.0","id":"s2","result":1}"#), "not our id");
        assert!(!answer(&peer, r#"{"jsonrpc":"2.0","id":1,"result":1}"#), "not our id space");
        assert!(answer(&peer, r#"{"jsonrpc":"2.0","id":"s1","result":{"sdp":"x"}}"#));
        assert_eq!(call.await.unwrap().unwrap().get(), r#"{"sdp":"x"}"#);
        assert_eq!(peer.pending_calls(), 0);
    }

    #[tokio::test]
    async fn call_times_out_and_a_late_answer_is_dropped() {
        let peer = handle(8, 20);
        assert_eq!(peer.call("relay", "[]").await.err(), Some(CallFailed::Timeout));
        assert_eq!(peer.pending_calls(), 0);
        assert!(!answer(&peer, r#"{"jsonrpc":"2.0","id":"s1","result":1}"#));
    }

    #[tokio::test]
    async fn close_fails_waiting_calls_at_once_and_new_calls_too() {
        let peer = handle(8, 60_000);
        let call = peer.call("relay", "[]");
        tokio::pin!(call);
        assert!(is_pending(&mut call));
        assert!(peer.close(CloseReason::SHUTDOWN));
        assert!(!peer.close(CloseReason::NORMAL), "only the first reason counts");
        assert_eq!(call.await.err(), Some(CallFailed::Gone));
        assert_eq!(peer.call("relay", "[]").await.err(), Some(CallFailed::Gone));
        assert_eq!(peer.closed().await, CloseReason::SHUTDOWN);
    }

    #[tokio::test]
    async fn a_full_queue_disconnects_the_slow_consumer() {
        let peer = handle(2, 60_000);
        assert!(peer.notify("member_joined", "[]").is_ok());
        assert!(peer.notify("member_joined", "[]").is_ok());
        assert_eq!(peer.notify("member_joined", "[]"), Err(CallFailed::Gone));
        assert_eq!(peer.closed().await, CloseReason::SLOW_CONSUMER);
    }

    #[tokio::test]
    async fn frames_come_out_in_order_until_the_outbox_is_sealed() {
        let peer = handle(64, 60_000);
        for n in 0..40 {
            peer.send_frame(n.to_string()).unwrap();
        }
        for n in 0..40 {
            assert_eq!(peer.next_frame().await, n.to_string());
        }
        assert_eq!(peer.try_next_frame(), None);
        assert_eq!(peer.lock_outbox().frames.capacity(), 0, "an emptied outbox holds no buffer");
        peer.send_frame("last".into()).unwrap();
        peer.seal();
        assert_eq!(peer.try_next_frame(), None);
        assert_eq!(peer.send_frame("late".into()), Err(CallFailed::Gone));
    }
}
