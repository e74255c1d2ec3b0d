//! `PeerHandle`: the server's handle on one connected client, with no socket
//! in it. It owns the connection's bounded outgoing queue and the calls the
//! server made to the client that still wait for an answer; the router's
//! [`Target`](crate::Target) for a client of this process.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Poll, Waker};
use std::time::Duration;

use serde_json::value::RawValue;
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use webrtc_p2p_interfaces::method::CANCEL_REQUEST;

use crate::memory::MemoryBudget;
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
    /// A large message arrived while the server's memory budget was spent
    /// (RFC 6455's "Try Again Later").
    pub const MEMORY: Self = Self { code: 1013, reason: "server memory budget spent: try again later" };
    /// The connection ended without a close frame (reset, EOF): never sent,
    /// as nobody is there to read it; such an end may suspend the session.
    pub const LOST: Self = Self { code: 1006, reason: "connection lost" };
    /// The session was resumed on another connection.
    pub const RESUMED_ELSEWHERE: Self = Self { code: 4001, reason: "resumed elsewhere" };
    /// The node is stopping and its resumable session moves to another
    /// node with the client's resume (RFC 6455's "Service Restart").
    pub const MOVE_ELSEWHERE: Self = Self { code: 1012, reason: "node stopping: resume on another node" };
    /// The node was cut off from the cluster long enough to be taken for
    /// stopped, and the cluster ended this session meanwhile: the client
    /// starts again (a resume is refused), on any node (RFC 6455's "Service
    /// Restart", as for a node that stops).
    pub const CUT_OFF: Self = Self { code: 1012, reason: "node was cut off: session ended, start again" };
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
    /// The frame would exceed the message size the peer was promised.
    #[error("the frame is larger than the peer accepts")]
    TooLarge,
    /// The frame is larger than [`MemoryBudget::SMALL`] and the server's
    /// memory budget cannot take it now.
    #[error("the server's memory budget is spent")]
    MemoryBudget,
    /// The caller gave up first (the peer was told with `$/cancelRequest`).
    #[error("the call was cancelled")]
    Cancelled,
    /// What carries calls to the peer is unreachable for now: a cluster's
    /// Redis, which the call could not go through or its answer could not
    /// come back through.
    #[error("the service cannot reach the peer now")]
    Unavailable,
}

/// A peer's answer to a call: its result or its error object, both raw.
pub type Answer = Result<Box<RawValue>, Box<RawValue>>;

/// A peer's answer as it sits in the frame that brought it: its result or
/// its error object, borrowed.
pub type AnswerRef<'a> = Result<&'a RawValue, &'a RawValue>;

/// Where the answer to a [`PeerHandle::call_then`] goes: run once, with the
/// answer (borrowed from the frame that brought it) or why there is none,
/// on whichever task learns it: the one reading the peer's answer, the one
/// serving the peer's connection when the call times out, the one closing
/// the handle or cancelling the call. Spares each call a waiting task, its
/// oneshot channel, its timer and a copy of the answer.
pub type Then = Box<dyn for<'a> FnOnce(Result<AnswerRef<'a>, CallFailed>) + Send>;

/// The calls to a client that wait for its answer, by our request id.
#[derive(Default)]
struct Calls {
    /// Calls a task awaits ([`PeerHandle::call_until`]); each times itself out.
    tasks: HashMap<u64, oneshot::Sender<Answer>>,
    /// Calls made with [`PeerHandle::call_then`], with their deadlines. Ids
    /// grow and every call waits as long, so the first is the next to time
    /// out; whoever serves the connection expires them
    /// ([`PeerHandle::expire_calls`]).
    thens: BTreeMap<u64, (Then, Instant)>,
}

impl Calls {
    fn len(&self) -> usize {
        self.tasks.len() + self.thens.len()
    }
}

impl std::fmt::Debug for Calls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Calls").field("tasks", &self.tasks.len()).field("thens", &self.thens.len()).finish()
    }
}

/// Frames waiting to be written to the client, and the connection task to
/// wake when one arrives. A `VecDeque` behind a lock rather than tokio's mpsc
/// channel, which costs ~1.3 KiB per connection even when empty: this costs
/// nothing until frames wait.
#[derive(Debug, Default)]
struct Outbox {
    frames: VecDeque<String>,
    /// The bytes of `frames`, for the byte budget (`--max-queued-bytes`).
    bytes: usize,
    waker: Option<Waker>,
    /// Set once the connection is done writing: later frames are refused.
    sealed: bool,
    /// Frames handed to connections since the handle was made (written, or
    /// dropped from a full resume buffer).
    taken: u64,
    /// How many of `taken` and `frames` came before the `init` answer: the
    /// session's own count (the client's `received`) starts after them.
    origin: u64,
    /// Data frames received from the client on this session (its `init`
    /// request on, `resume` requests not counted): `resume`'s `received`.
    received: u64,
    /// Which connection serves the session: bumped by each `resume`, so
    /// that an older connection still open takes nothing more.
    generation: u64,
    /// Set once the client called `session`: what resume needs. Boxed, so
    /// that sessions without it pay one pointer.
    replay: Option<Box<Replay>>,
    /// What the server's memory budget counts for this outbox now.
    charged: usize,
}

/// What a resumable session keeps so that a new connection can carry on
/// exactly where the old one stopped.
#[derive(Debug)]
struct Replay {
    /// Frames written but not yet known to have arrived, oldest first: the
    /// last `unacked.len()` of `taken`. Trimmed by [`PeerHandle::ack`].
    unacked: VecDeque<String>,
    /// Bytes in `unacked` and the outbox's `frames`.
    bytes: usize,
    /// At most this many bytes are kept (`--resume-buffer`).
    budget: usize,
    /// Frames up to this count of `taken` were dropped before they were known
    /// to have arrived: a resume from below it cannot be replayed.
    lost_through: u64,
    /// No connection serves the session: frames wait, bounded by `budget`
    /// rather than by the queue's frame count.
    suspended: bool,
    /// Frames a resume queued again: they do not count against the queue's
    /// frame limit (the byte budget bounded them).
    backlog: usize,
    /// The bytes of `backlog`: they do not count against the byte budget
    /// either.
    backlog_bytes: usize,
}

/// What [`PeerHandle::attach`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attached {
    /// The new connection's generation, for [`PeerHandle::poll_next_frame`] and friends.
    pub generation: u64,
    /// Data frames the server had received from the client on this session.
    pub received: u64,
    /// Whether everything after the client's count will be sent again.
    pub replayed: bool,
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
    /// How many bytes of frames may wait in `outbox` (one frame always may).
    max_queued_bytes: usize,
    /// The largest frame the client was promised (its message size limit);
    /// a larger one is refused with [`CallFailed::TooLarge`] rather than sent.
    max_frame_size: usize,
    /// Calls to this client waiting for its answer. `None` once the
    /// connection closed, which fails every waiter at once.
    pending: Mutex<Option<Calls>>,
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
    /// The server's memory budget, charged with what waits here; `None`
    /// (no budget) for handles outside a server.
    memory: Option<Arc<MemoryBudget>>,
    /// Set on a session taken over from another node: answers to the calls
    /// that node made to the client (ids below the first of ours) go back
    /// to it, where their callers wait.
    inherited: OnceLock<Inherited>,
    /// Held while a connection counts and handles a frame from the client,
    /// and by [`attach`](Self::attach): see [`handle_received`](Self::handle_received).
    reading: Mutex<()>,
}

/// Calls a session's previous node made, whose answers go back there.
struct Inherited {
    /// Our ids start here; every id below it was the previous node's.
    below: u64,
    /// Sends an answer frame to the previous node.
    answer: Box<dyn Fn(String) + Send + Sync>,
}

impl std::fmt::Debug for Inherited {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inherited").field("below", &self.below).finish_non_exhaustive()
    }
}

/// Where a session stands when it moves to another node: what that node
/// needs to carry on exactly where this one stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// Data frames the server had received from the client.
    pub received: u64,
    /// Whether every frame after the client's count is among those handed over.
    pub replayed: bool,
    /// The id of the next call to the client: the new node's calls start
    /// there, so that answers to the old calls are told apart.
    pub next_call: u64,
}

impl PeerHandle {
    /// A handle queueing at most `max_queued_frames` frames for the client
    /// (the connection takes them with [`poll_next_frame`](Self::poll_next_frame)),
    /// whose calls wait at most `call_timeout`.
    pub fn new(max_queued_frames: usize, call_timeout: Duration) -> Self {
        Self {
            outbox: Mutex::default(),
            max_queued_frames: max_queued_frames.max(1),
            max_queued_bytes: usize::MAX,
            max_frame_size: usize::MAX,
            pending: Mutex::new(Some(Calls::default())),
            next_id: AtomicU64::new(1),
            call_timeout,
            closed: OnceLock::new(),
            closing: Notify::new(),
            memory: None,
            inherited: OnceLock::new(),
            reading: Mutex::new(()),
        }
    }

    /// A fresh handle with this one's limits and memory budget: the handle
    /// of a session that moves here from another node.
    pub fn sibling(&self) -> Self {
        let sibling = Self::new(self.max_queued_frames, self.call_timeout)
            .with_byte_limits(self.max_queued_bytes, self.max_frame_size);
        match &self.memory {
            Some(memory) => sibling.with_memory(memory.clone()),
            None => sibling,
        }
    }

    /// Charges what waits here to the server's memory budget, and refuses
    /// frames it cannot take ([`CallFailed::MemoryBudget`]).
    #[must_use]
    pub fn with_memory(mut self, memory: Arc<MemoryBudget>) -> Self {
        self.memory = Some(memory);
        self
    }

    /// Whether the server's memory budget takes a frame of `len` bytes now.
    pub fn admits(&self, len: usize) -> bool {
        self.memory.as_ref().is_none_or(|memory| memory.admits(len))
    }

    /// Bounds the queue in bytes as well as in frames, and the frames it
    /// takes to `max_frame_size` bytes each: the message size the client was
    /// promised.
    #[must_use]
    pub fn with_byte_limits(mut self, max_queued_bytes: usize, max_frame_size: usize) -> Self {
        self.max_queued_bytes = max_queued_bytes;
        self.max_frame_size = max_frame_size;
        self
    }

    /// The largest frame the client takes.
    pub fn max_frame_size(&self) -> usize {
        self.max_frame_size
    }

    /// Queues a frame for the client. Never waits: when the queue is full
    /// (in frames or in bytes) the client is a slow consumer and is
    /// disconnected. A frame over the client's message size limit is
    /// refused (`TooLarge`) and changes nothing. A suspended session's
    /// frames, and those a resume queued again, are bounded by its resume
    /// buffer instead; past it a suspended session's frames are dropped,
    /// and the next resume is not a replay.
    pub fn send_frame(&self, frame: String) -> Result<(), CallFailed> {
        if frame.len() > self.max_frame_size {
            return Err(CallFailed::TooLarge);
        }
        if !self.admits(frame.len()) {
            return Err(CallFailed::MemoryBudget);
        }
        let mut outbox = self.lock_outbox();
        if outbox.sealed {
            return Err(CallFailed::Gone);
        }
        let (suspended, backlog, backlog_bytes) =
            outbox.replay.as_ref().map_or((false, 0, 0), |r| (r.suspended, r.backlog, r.backlog_bytes));
        // The byte budget, like the frame limit, bounds what was queued
        // after a resume's backlog; one frame may always wait beyond it.
        let bytes = outbox.bytes - backlog_bytes;
        let over_bytes = outbox.frames.len() > backlog && bytes.saturating_add(frame.len()) > self.max_queued_bytes;
        if !suspended && (outbox.frames.len() >= self.max_queued_frames + backlog || over_bytes) {
            drop(outbox);
            self.close(CloseReason::SLOW_CONSUMER);
            return Err(CallFailed::Gone);
        }
        let outbox = &mut *outbox;
        if let Some(replay) = outbox.replay.as_mut() {
            replay.bytes += frame.len();
            if replay.bytes > replay.budget {
                if replay.suspended {
                    // Over the budget with nobody to write to: drop all of it,
                    // as if written; the resume will say `replayed: false`.
                    outbox.taken += outbox.frames.len() as u64 + 1;
                    outbox.frames = VecDeque::new();
                    outbox.bytes = 0;
                    replay.backlog = 0;
                    replay.backlog_bytes = 0;
                    replay.unacked = VecDeque::new();
                    replay.bytes = 0;
                    replay.lost_through = outbox.taken;
                    return Ok(());
                }
                replay.forget_oldest(outbox.taken);
            }
        }
        outbox.bytes += frame.len();
        outbox.frames.push_back(frame);
        let waker = outbox.waker.take();
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    /// The next frame for connection `generation` to write, or `Pending` (and `cx`
    /// is woken when one is queued). An older connection's generation gets
    /// nothing more.
    pub fn poll_next_frame(&self, cx: &mut std::task::Context<'_>, generation: u64) -> Poll<String> {
        let mut outbox = self.lock_outbox();
        if outbox.generation != generation {
            // Not woken for frames any more (its end wakes it): the one
            // waker slot is the newer connection's, or a forwarder's.
            return Poll::Pending;
        }
        if let Some(frame) = outbox.take() {
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
        self.lock_outbox().take()
    }

    /// Waits for the next frame to write.
    pub async fn next_frame(&self) -> String {
        let generation = self.lock_outbox().generation;
        std::future::poll_fn(|cx| self.poll_next_frame(cx, generation)).await
    }

    /// The session starts here: the next frame queued (the `init` answer) is
    /// the first the client counts, and the `init` request the first the
    /// server counted. Counted here rather than when the request arrived:
    /// a router that awaits (a cluster's) makes the user a moment later.
    pub fn start_counting(&self) {
        let mut outbox = self.lock_outbox();
        outbox.origin = outbox.taken + outbox.frames.len() as u64;
        outbox.received = 1;
    }

    /// Counts a data frame connection `generation` received from the client
    /// and handles it (`handle` runs up to the request's first await);
    /// `false` (neither counted nor handled) when a newer connection serves
    /// the session, and the frame must be dropped: the client sends it
    /// again there.
    ///
    /// Both happen under the session's read gate, which [`attach`](Self::attach)
    /// takes too. An older connection may still be reading what arrived
    /// before its TCP connection broke when the client's resume arrives on
    /// a new one; without the gate, a frame it had counted but not yet
    /// handled could take effect after the first frame the new connection
    /// replays (seen: a relay to another member overtaken by the next one).
    pub fn handle_received(&self, generation: u64, handle: impl FnOnce()) -> bool {
        let _reading = self.lock_reading();
        {
            let mut outbox = self.lock_outbox();
            if outbox.generation != generation {
                return false;
            }
            outbox.received += 1;
        }
        handle();
        true
    }

    /// From now on, written frames are kept until known to have arrived
    /// (at most `budget` bytes), so that the session can be resumed.
    pub fn keep_for_replay(&self, budget: usize) {
        let mut outbox = self.lock_outbox();
        if outbox.replay.is_none() {
            let bytes = outbox.bytes;
            let lost_through = outbox.taken;
            outbox.replay = Some(Box::new(Replay {
                unacked: VecDeque::new(),
                bytes,
                budget,
                lost_through,
                suspended: false,
                backlog: 0,
                backlog_bytes: 0,
            }));
        }
    }

    /// The payload for a ping: how many frames were written before it
    /// (8 bytes, big-endian), so that its pong says they all arrived. Empty
    /// when nothing is kept for replay.
    pub fn ping_payload(&self) -> Vec<u8> {
        let outbox = self.lock_outbox();
        match outbox.replay {
            Some(_) => outbox.taken.to_be_bytes().to_vec(),
            None => Vec::new(),
        }
    }

    /// Whether the session keeps what a resume needs (its client called `session`).
    pub fn is_resumable(&self) -> bool {
        self.lock_outbox().replay.is_some()
    }

    /// Whether written frames wait for a pong to be known delivered.
    pub fn awaits_ack(&self) -> bool {
        self.lock_outbox().replay.as_ref().is_some_and(|r| !r.unacked.is_empty())
    }

    /// A pong with `payload` arrived: every frame written before its ping
    /// arrived too, and is forgotten.
    pub fn ack(&self, payload: &[u8]) {
        let Ok(word) = <[u8; 8]>::try_from(payload) else { return };
        let acked = u64::from_be_bytes(word);
        let mut outbox = self.lock_outbox();
        let taken = outbox.taken;
        if let Some(replay) = outbox.replay.as_mut() {
            let first = taken - replay.unacked.len() as u64;
            for _ in first..acked.min(taken) {
                if let Some(frame) = replay.unacked.pop_front() {
                    replay.bytes -= frame.len();
                }
            }
            if replay.unacked.is_empty() {
                replay.unacked = VecDeque::new();
            }
        }
    }

    /// Connection `generation` ended without the client closing it: the session
    /// waits for a resume. `false` when it cannot (never asked for a ticket,
    /// closed already, or a newer connection serves it).
    pub fn suspend(&self, generation: u64) -> bool {
        let mut outbox = self.lock_outbox();
        if outbox.sealed || outbox.generation != generation || self.is_closed() {
            return false;
        }
        let Some(replay) = outbox.replay.as_mut() else { return false };
        replay.suspended = true;
        true
    }

    /// A new connection takes the session over, the client having received
    /// `received` frames: what follows them is queued again (a replay) when
    /// all of it is still here; otherwise nothing in between is, and the
    /// count carries on from the client's. An older connection still open
    /// is told to close. `None` when the session is over.
    pub fn attach(&self, received: u64) -> Option<Attached> {
        // Whatever an older connection is handling counts, and takes effect, first.
        let _reading = self.lock_reading();
        let mut outbox = self.lock_outbox();
        if outbox.sealed || self.is_closed() {
            return None;
        }
        let outbox = &mut *outbox;
        outbox.generation += 1;
        let wanted = outbox.origin.saturating_add(received);
        let mut replayed = false;
        if let Some(replay) = outbox.replay.as_mut() {
            replay.suspended = false;
            let first = outbox.taken - replay.unacked.len() as u64;
            replayed = wanted >= first && wanted >= replay.lost_through && wanted <= outbox.taken;
            if replayed {
                for _ in first..wanted {
                    if let Some(frame) = replay.unacked.pop_front() {
                        replay.bytes -= frame.len();
                    }
                }
                // Written again, in order, before what waits.
                while let Some(frame) = replay.unacked.pop_back() {
                    outbox.bytes += frame.len();
                    outbox.frames.push_front(frame);
                }
                replay.backlog = outbox.frames.len();
                replay.backlog_bytes = outbox.bytes;
            } else {
                outbox.frames = VecDeque::new();
                outbox.bytes = 0;
                replay.backlog = 0;
                replay.backlog_bytes = 0;
                replay.unacked = VecDeque::new();
                replay.bytes = 0;
                replay.lost_through = wanted;
            }
            outbox.taken = wanted;
        }
        let attached = Attached { generation: outbox.generation, received: outbox.received, replayed };
        if let Some(waker) = outbox.waker.take() {
            waker.wake();
        }
        self.closing.notify_waiters();
        Some(attached)
    }

    /// The session moves to another node, its client having received
    /// `received` frames: as [`attach`](Self::attach) (an open connection is
    /// told to close with 4001), then every frame to send from the client's
    /// count on, taken out, and where the session stands. Frames queued
    /// later wait for [`next_frame`](Self::next_frame), to be forwarded.
    /// `None` when the session is over.
    pub fn hand_over(&self, received: u64) -> Option<(Vec<String>, Position)> {
        let attached = self.attach(received)?;
        let mut frames = Vec::new();
        while let Some(frame) = self.try_next_frame() {
            frames.push(frame);
        }
        let next_call = self.next_id.load(Ordering::Relaxed);
        Some((frames, Position { received: attached.received, replayed: attached.replayed, next_call }))
    }

    /// Carries on a session that another node held, whose client had
    /// received `sent` frames: `frames` are the next ones, queued as a
    /// resume's replay (bounded by the resume buffer they came from, not by
    /// the queue's limits); calls to the client start at
    /// `position.next_call`, and answers to earlier ids go to `answer`.
    /// Call [`keep_for_replay`](Self::keep_for_replay) first.
    pub fn continue_from(
        &self,
        sent: u64,
        frames: Vec<String>,
        position: Position,
        answer: impl Fn(String) + Send + Sync + 'static,
    ) {
        self.next_id.fetch_max(position.next_call, Ordering::Relaxed);
        let _ = self.inherited.set(Inherited { below: position.next_call, answer: Box::new(answer) });
        let mut outbox = self.lock_outbox();
        let outbox = &mut *outbox;
        outbox.taken = sent;
        outbox.origin = 0;
        outbox.received = position.received;
        for frame in frames.into_iter().rev() {
            outbox.bytes += frame.len();
            if let Some(replay) = outbox.replay.as_mut() {
                replay.bytes += frame.len();
            }
            outbox.frames.push_front(frame);
        }
        if let Some(replay) = outbox.replay.as_mut() {
            replay.backlog = outbox.frames.len();
            replay.backlog_bytes = outbox.bytes;
            replay.lost_through = sent;
        }
        if let Some(waker) = outbox.waker.take() {
            waker.wake();
        }
    }

    /// Whether connection `generation` still serves the session (no newer
    /// one took it over).
    pub fn serves(&self, generation: u64) -> bool {
        self.lock_outbox().generation == generation
    }

    /// Ends a suspension that lasted the whole resume window: `true` when
    /// the session was still suspended since connection `generation`, and
    /// is now sealed (no resume can take it any more).
    pub fn expire(&self, generation: u64) -> bool {
        let mut outbox = self.lock_outbox();
        if outbox.generation != generation || !outbox.replay.as_ref().is_some_and(|r| r.suspended) {
            return false;
        }
        outbox.sealed = true;
        outbox.frames = VecDeque::new();
        outbox.bytes = 0;
        outbox.waker = None;
        outbox.replay = None;
        true
    }

    /// Resolves once connection `generation` must end: the handle closed (its
    /// reason), or a newer connection took the session over
    /// ([`CloseReason::RESUMED_ELSEWHERE`]).
    pub async fn ended(&self, generation: u64) -> CloseReason {
        self.closing_when(|| {
            let taken_over = self.lock_outbox().generation != generation;
            self.closed.get().copied().or(taken_over.then_some(CloseReason::RESUMED_ELSEWHERE))
        })
        .await
    }

    /// Resolves with what `check` returns once it returns a reason, checked
    /// now and again on every close or takeover.
    async fn closing_when(&self, check: impl Fn() -> Option<CloseReason>) -> CloseReason {
        loop {
            let notified = self.closing.notified();
            tokio::pin!(notified);
            // Registered before the check, so a change in between still wakes it.
            notified.as_mut().enable();
            if let Some(reason) = check() {
                return reason;
            }
            notified.await;
        }
    }

    /// The connection is done writing: frames queued from now on are
    /// refused (`Gone`), and those still waiting are dropped.
    pub fn seal(&self) {
        let mut outbox = self.lock_outbox();
        outbox.sealed = true;
        outbox.frames = VecDeque::new();
        outbox.bytes = 0;
        outbox.waker = None;
        outbox.replay = None;
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
    /// Params given by value are dropped once the frame is queued, so a
    /// waiting call holds no copy of them.
    pub async fn call(&self, method: &str, params: impl AsRef<str>) -> Result<Answer, CallFailed> {
        self.call_until(method, params, std::future::pending()).await
    }

    /// [`call`](Self::call) that gives up when `cancelled` completes first:
    /// the peer gets `$/cancelRequest` with the call's id, and a late answer
    /// is dropped like any answer nobody waits for.
    pub async fn call_until(
        &self,
        method: &str,
        params: impl AsRef<str>,
        cancelled: impl Future<Output = ()>,
    ) -> Result<Answer, CallFailed> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        match self.lock_pending().as_mut() {
            Some(pending) => pending.tasks.insert(id, tx),
            None => return Err(CallFailed::Gone),
        };
        let waiting = Waiting { peer: self, id };
        let frame = wire::call_frame(id, method, params.as_ref());
        drop(params);
        self.send_frame(frame)?;
        let answer = tokio::select! {
            answer = tokio::time::timeout(self.call_timeout, rx) => match answer {
                Ok(Ok(answer)) => Ok(answer),
                Ok(Err(_)) => Err(CallFailed::Gone),
                Err(_) => Err(CallFailed::Timeout),
            },
            () = cancelled => {
                // The peer may be gone already; then there is nobody to tell.
                let _ = self.notify(CANCEL_REQUEST, &format!(r#"{{"id":"s{id}"}}"#));
                Err(CallFailed::Cancelled)
            }
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
        let waiter = self.lock_pending().as_mut().and_then(|calls| match calls.thens.remove(&id) {
            Some((then, _)) => Some(Ok(then)),
            None => calls.tasks.remove(&id).map(Err),
        });
        match waiter {
            Some(Ok(then)) => {
                then(Ok(response.outcome));
                true
            }
            Some(Err(tx)) => {
                let answer = match response.outcome {
                    Ok(result) => Ok(result.to_owned()),
                    Err(error) => Err(error.to_owned()),
                };
                // The waiter may have timed out a moment ago; then nobody wants it.
                tx.send(answer).is_ok()
            }
            None => {
                if let Some(inherited) = self.inherited.get().filter(|i| id < i.below) {
                    (inherited.answer)(wire::response_frame(response));
                    return true;
                }
                false
            }
        }
    }

    /// [`call`](Self::call) with nobody waiting: `then` gets the answer, or
    /// why there is none: `Timeout` once the call timeout passed (whoever
    /// serves the connection calls [`expire_calls`](Self::expire_calls)),
    /// `Gone` when the handle closes first, `Gone`, `TooLarge` or
    /// `MemoryBudget` at once when the frame cannot be queued. The frame is
    /// queued before this returns, so calls keep the order in which they
    /// were made. Returns the call's id, by which
    /// [`cancel_call`](Self::cancel_call) finds it.
    pub fn call_then(&self, method: &str, params: &str, then: Then) -> u64 {
        self.call_then_with(|id| wire::call_frame(id, method, params), then)
    }

    /// [`call_then`](Self::call_then) with the frame written by `frame`,
    /// given the call's id (see [`wire::call_frame_parts`]).
    pub fn call_then_with(&self, frame: impl FnOnce(u64) -> String, then: Then) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let deadline = Instant::now() + self.call_timeout;
        let refused = match self.lock_pending().as_mut() {
            Some(calls) => {
                calls.thens.insert(id, (then, deadline));
                None
            }
            None => Some(then),
        };
        if let Some(then) = refused {
            then(Err(CallFailed::Gone));
            return id;
        }
        if let Err(e) = self.send_frame(frame(id)) {
            // Unless closing the handle (a full queue) told it already.
            if let Some(then) = self.take_then(id) {
                then(Err(e));
            }
        }
        id
    }

    /// Gives up on the [`call_then`](Self::call_then) call `id`: the peer
    /// gets `$/cancelRequest` with its id, and its `then` `Cancelled`.
    /// `false` (and nothing done) when the call ended already.
    pub fn cancel_call(&self, id: u64) -> bool {
        let Some(then) = self.take_then(id) else { return false };
        // The peer may be gone already; then there is nobody to tell.
        let _ = self.notify(CANCEL_REQUEST, &format!(r#"{{"id":"s{id}"}}"#));
        then(Err(CallFailed::Cancelled));
        true
    }

    /// When the next [`call_then`](Self::call_then) call times out, if one waits.
    pub fn next_call_deadline(&self) -> Option<Instant> {
        let calls = self.lock_pending();
        calls.as_ref()?.thens.first_key_value().map(|(_, (_, deadline))| *deadline)
    }

    /// Fails the [`call_then`](Self::call_then) calls whose deadline is
    /// `now` or earlier with `Timeout`.
    pub fn expire_calls(&self, now: Instant) {
        loop {
            let expired = {
                let mut calls = self.lock_pending();
                let Some(thens) = calls.as_mut().map(|calls| &mut calls.thens) else { return };
                match thens.first_entry() {
                    Some(first) if first.get().1 <= now => first.remove().0,
                    _ => return,
                }
            };
            // Outside the lock: `then` may make calls of its own.
            expired(Err(CallFailed::Timeout));
        }
    }

    fn take_then(&self, id: u64) -> Option<Then> {
        self.lock_pending().as_mut().and_then(|calls| calls.thens.remove(&id)).map(|(then, _)| then)
    }

    /// Closes the handle: every waiting call fails with `Gone`, new calls fail
    /// at once, and the transport is told to close with `reason`. Only the
    /// first reason counts. Returns whether this call closed it.
    pub fn close(&self, reason: CloseReason) -> bool {
        let dropped = self.lock_pending().take();
        let first = self.closed.set(reason).is_ok();
        if first {
            self.closing.notify_waiters();
        }
        if let Some(calls) = dropped {
            // Tasks learn it from their dropped channel; the others are told
            // once the reason is set, so that nothing they do can set another.
            for (then, _) in calls.thens.into_values() {
                then(Err(CallFailed::Gone));
            }
        }
        first
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.closed.get().is_some()
    }

    /// Resolves with the reason once the handle is closed.
    pub async fn closed(&self) -> CloseReason {
        self.closing_when(|| self.closed.get().copied()).await
    }

    /// Calls waiting for this client's answer.
    pub fn pending_calls(&self) -> usize {
        self.lock_pending().as_ref().map_or(0, Calls::len)
    }

    /// The outbox, locked; the memory budget is charged with what it holds
    /// once the lock is released.
    fn lock_outbox(&self) -> OutboxGuard<'_> {
        // Each critical section is one push, pop or reset: poisoning is moot.
        let outbox = self.outbox.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        OutboxGuard { outbox, memory: self.memory.as_deref() }
    }

    fn lock_reading(&self) -> std::sync::MutexGuard<'_, ()> {
        // Guards no data: poisoning is moot.
        self.reading.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, Option<Calls>> {
        // A panic while holding this lock cannot leave the map inconsistent
        // (each operation is a single insert/remove/take), so poisoning is moot.
        self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for PeerHandle {
    fn drop(&mut self) {
        // Never closed (closing tells them): every `then` still runs once.
        let pending = self.pending.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        for (then, _) in pending.into_iter().flat_map(|calls| calls.thens.into_values()) {
            then(Err(CallFailed::Gone));
        }
        if let Some(memory) = &self.memory {
            let outbox = self.outbox.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner);
            memory.recharge(&mut outbox.charged, 0);
        }
    }
}

/// The locked outbox; on release, the memory budget learns what it holds.
struct OutboxGuard<'a> {
    outbox: MutexGuard<'a, Outbox>,
    memory: Option<&'a MemoryBudget>,
}

impl Deref for OutboxGuard<'_> {
    type Target = Outbox;
    fn deref(&self) -> &Outbox {
        &self.outbox
    }
}

impl DerefMut for OutboxGuard<'_> {
    fn deref_mut(&mut self) -> &mut Outbox {
        &mut self.outbox
    }
}

impl Drop for OutboxGuard<'_> {
    fn drop(&mut self) {
        if let Some(memory) = self.memory {
            let held = self.outbox.held();
            memory.recharge(&mut self.outbox.charged, held);
        }
    }
}

impl Outbox {
    /// Bytes of frames held: waiting to be written, and kept for replay.
    fn held(&self) -> usize {
        self.replay.as_ref().map_or(self.bytes, |replay| replay.bytes.max(self.bytes))
    }

    /// The next frame to write; kept for replay when the session is resumable.
    fn take(&mut self) -> Option<String> {
        let frame = self.frames.pop_front()?;
        self.taken += 1;
        self.bytes -= frame.len();
        // An emptied outbox frees its buffer, so idle connections hold none
        // (measured: ~0.1 KiB each; the allocator makes the next one cheap).
        if self.frames.is_empty() {
            self.frames = VecDeque::new();
        }
        if let Some(replay) = self.replay.as_mut() {
            if replay.backlog > 0 {
                replay.backlog -= 1;
                replay.backlog_bytes -= frame.len();
            }
            replay.unacked.push_back(frame.clone());
        }
        Some(frame)
    }
}

impl Replay {
    /// Makes room within the budget by forgetting the oldest written frames
    /// (`taken` frames were written so far); frames not yet written stay,
    /// bounded by the queue's frame and byte limits.
    fn forget_oldest(&mut self, taken: u64) {
        while self.bytes > self.budget {
            let first = taken - self.unacked.len() as u64;
            let Some(frame) = self.unacked.pop_front() else { return };
            self.bytes -= frame.len();
            self.lost_through = first + 1;
        }
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
            pending.tasks.remove(&self.id);
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
    async fn the_queue_is_bounded_in_bytes_but_always_takes_one_frame() {
        let peer = handle(64, 60_000).with_byte_limits(10, 20);
        assert_eq!(peer.send_frame("x".repeat(21)), Err(CallFailed::TooLarge), "over the frame limit");
        assert!(!peer.is_closed(), "a frame too large for the client is the sender's problem");
        peer.send_frame("x".repeat(15)).unwrap();
        assert_eq!(peer.try_next_frame().map(|f| f.len()), Some(15));
        peer.send_frame("x".repeat(6)).unwrap();
        peer.send_frame("x".repeat(4)).unwrap();
        assert_eq!(peer.send_frame("x".into()), Err(CallFailed::Gone));
        assert_eq!(peer.closed().await, CloseReason::SLOW_CONSUMER);
    }

    #[tokio::test]
    async fn a_suspended_session_and_its_replay_are_bounded_by_the_resume_buffer_not_the_byte_budget() {
        let peer = handle(64, 60_000).with_byte_limits(10, 20);
        peer.keep_for_replay(100);
        peer.send_frame("a".repeat(8)).unwrap();
        assert_eq!(peer.try_next_frame().map(|f| f.len()), Some(8), "written, not yet acknowledged");
        assert!(peer.suspend(0));
        for _ in 0..3 {
            peer.send_frame("b".repeat(8)).unwrap();
        }
        assert!(!peer.is_closed(), "24 bytes wait past a 10-byte budget while suspended");
        let attached = peer.attach(0).unwrap();
        assert!(attached.replayed);
        // The replay (32 bytes) waits beyond the budget; what comes after it
        // is held to the budget again, one frame always fitting.
        peer.send_frame("c".repeat(8)).unwrap();
        assert!(!peer.is_closed());
        assert_eq!(peer.send_frame("d".repeat(8)), Err(CallFailed::Gone));
        assert_eq!(peer.closed().await, CloseReason::SLOW_CONSUMER);
    }

    #[test]
    fn a_resume_waits_for_the_frame_an_older_connection_is_handling() {
        let peer = Arc::new(handle(64, 60_000));
        peer.keep_for_replay(1_000);
        peer.start_counting();
        let order = Arc::new(Mutex::new(Vec::new()));
        let (inside, handling) = std::sync::mpsc::channel();
        let (release, go) = std::sync::mpsc::channel::<()>();
        let reader = std::thread::spawn({
            let (peer, order) = (peer.clone(), order.clone());
            move || {
                peer.handle_received(0, || {
                    inside.send(()).unwrap();
                    go.recv().unwrap();
                    order.lock().unwrap().push("frame handled");
                })
            }
        });
        handling.recv().unwrap();
        let resume = std::thread::spawn({
            let (peer, order) = (peer.clone(), order.clone());
            move || {
                let attached = peer.attach(2);
                order.lock().unwrap().push("attached");
                attached
            }
        });
        // What must not happen has no event to await: give the resume time
        // to overtake the frame, as it did before the gate.
        std::thread::sleep(Duration::from_millis(100));
        release.send(()).unwrap();
        assert!(reader.join().unwrap(), "counted and handled on the connection that still served");
        let attached = resume.join().unwrap().unwrap();
        assert_eq!(*order.lock().unwrap(), ["frame handled", "attached"]);
        assert_eq!(attached.received, 2, "the init request and the frame");
        assert!(!peer.handle_received(0, || panic!("an older connection's frame is dropped")));
        assert!(peer.handle_received(attached.generation, || {}));
    }

    #[tokio::test]
    async fn a_suspended_session_past_its_resume_buffer_drops_what_waits() {
        let peer = handle(64, 60_000).with_byte_limits(10, 20);
        peer.keep_for_replay(20);
        assert!(peer.suspend(0));
        for _ in 0..3 {
            peer.send_frame("b".repeat(8)).unwrap();
        }
        let attached = peer.attach(0).unwrap();
        assert!(!attached.replayed, "24 bytes did not fit in 20");
        assert_eq!(peer.try_next_frame(), None);
        peer.send_frame("c".repeat(8)).unwrap();
        assert_eq!(peer.send_frame("d".repeat(8)), Err(CallFailed::Gone), "the byte budget holds again");
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
