//! Many nodes, one service: `RedisRouter`, the [`Router`] of a node started
//! with `--redis`, and `NodeRouter`, the router a server runs with (in
//! memory without `--redis`, exactly as a single server).
//!
//! What lives in Redis (every key under [`PREFIX`]):
//! - `user:{id}` → the node holding that user's session (set on `init`, if
//!   free, so ids stay unique across nodes; moved by a resume on another
//!   node); `users:{node}`, a node's users;
//! - per group, under one hash tag: `{g:id}:m`, the members in join order
//!   (owner first); `{g:id}:n`, member → node; `{g:id}:c`, the capability.
//!   Every change is one Lua script, so join order, the member limit, owner
//!   hand-over and "gone when empty" hold under concurrent joins on
//!   different nodes; the script also publishes `member_joined`/`member_left`
//!   to the members' nodes, so every member on every node sees changes in
//!   the order they took effect (Redis runs scripts one at a time and
//!   delivers a connection's publishes in order); `memberships:{node}`, the
//!   groups of a node's users; `joined:{user}`, a user's groups, all of
//!   which it leaves when its session ends (also one Redis joined it to
//!   after its node had answered the client Busy);
//! - `nodes`, the nodes, and `alive:{node}`, a node's heartbeat, refreshed
//!   every [`HEARTBEAT`] with a TTL of `--heartbeat-ttl` ([`HEARTBEAT_TTL`]
//!   by default; give every node the same). Each node looks at
//!   the others' on every beat; the first to find one gone reaps it (one
//!   script): its users that cannot resume leave their groups, as on a
//!   disconnect; the resumable ones stay for the resume window
//!   (`orphaned`, nodes by deadline), resumable on any node, and leave when
//!   it passes. A node reaped while it still ran (a pause or a cut to Redis
//!   longer than its TTL) learns it on its next beat from the mark the
//!   reaper left, `reaped:{node}`, and fences: it keeps only the sessions
//!   the registry still has as its own (resumable ones within the window:
//!   the cluster kept them as they were), ends those the cluster ended
//!   (1012, relays waiting on them fail) and lets go of those resumed on
//!   another node meanwhile (4001, their groups untouched): see `fence`.
//!
//! - `resumable:{node}`, the node's sessions that may be resumed (their
//!   client called `session`), with their grants.
//!
//! Each node subscribes to its own channel, `node:{node}`. A relay to a
//! member on another node is published there (a notification, or a call with
//! a correlation id and the time left), and the answer comes back on the
//! caller's node channel. One publisher task per node sends everything in
//! the order it was queued (what is queued for one node meanwhile goes as
//! one payload, one PUBLISH), and each node handles its channel in order,
//! where the Redis connection reads it, so a pair's relays keep their order
//! across nodes. No task waits for a call on either node: the caller's
//! relay is answered by whoever reads the answer from the channel (or by
//! the timer of the node's calls, `expire_calls`), the target's by whoever
//! reads its client's answer, as for a relay within one node. Delivery to
//! a session on this node goes straight to its handle, with no publish; routing a relay
//! reads the group from Redis once, then from what the node keeps (see
//! `Routes`) until a join, a leave or a dropped channel makes it forget.
//!
//! Resume on another node: the node the registry names for the user is
//! asked, on its channel, to hand the session over; the hub there gives it
//! up (an open connection closes with 4001) and the frames to replay and
//! the counts come back the same way, queued on the new handle before
//! anything forwarded after them. Then one script moves the user's id, its
//! place in each group and its grants to this node, and tells every node of
//! those groups to forget their routes. For a relay timeout the old node
//! forwards what is still sent to the session there (answers to requests
//! that were running, messages on their way), and answers to its calls to
//! the client come back to it; a session the new node never took ends then,
//! as in v1. A node with no heartbeat cannot answer: the session is taken
//! over without replay.
//!
//! Redis unavailable: the operations that need it answer Busy, the client
//! retries; nothing is half changed (each change is one script). A script
//! Redis runs after its node stopped waiting leaves nothing behind either:
//! see `may_run_late`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::Poll;
use std::time::Duration;

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, PushInfo, PushKind, Script, Value};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};
use webrtc_p2p_interfaces::{Capability, ErrorCode, GroupId, MemberInfo, Members, UserId, method};
use webrtc_p2p_simple::wire::{self, Incoming};
use webrtc_p2p_simple::{
    Answer, AnswerRef, Arrival, CallFailed, Callee, CloseReason, Departure, Entrant, HubStats, Introduction, Joined,
    LocalRouter, PeerHandle, Position, Router, Sessions, Target, Then,
};

/// Every key and channel this service uses starts with it.
pub const PREFIX: &str = "webrtc-p2p:";
/// How often a node refreshes its heartbeat key.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// How long a heartbeat key lives without a refresh, by default
/// (`--heartbeat-ttl`).
pub const HEARTBEAT_TTL: Duration = Duration::from_secs(3);
/// How long the mark REAP leaves for a node it reaped (`reaped:{node}`)
/// waits for that node to come back and read it: the mark of a node that
/// never comes back goes by itself. A node whose heartbeat did not go
/// through for longer fences itself without it (see [`heartbeat`]).
const REAPED_MARK_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// Users a fence asks Redis about per command (see [`fence`]).
const FENCE_BATCH: usize = 512;
/// Messages one publish pipeline carries at most.
const MAX_BATCH: usize = 256;
/// How long one Redis command may take before the call counts as failed
/// (Busy) rather than waiting for a Redis that is gone.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// The router a server runs with.
#[derive(Debug)]
pub enum NodeRouter {
    /// One process, everything in memory (no `--redis`).
    Local(LocalRouter),
    /// One node of a cluster sharing a Redis.
    Redis(RedisRouter),
}

/// How a [`NodeRouter`] reaches a session.
#[derive(Debug, Clone)]
pub enum NodeTarget {
    /// A client connected to this process.
    Local(Arc<PeerHandle>),
    /// A user whose session is on another node.
    Remote(Remote),
    /// Either, for a relay that waited in line for its route (see
    /// `Routes`): the line stays its own until it is sent on (its
    /// notification sent, its call's frame queued or published), so that
    /// no relay behind it, running on another thread, overtakes it.
    InLine(Box<NodeTarget>, Arc<InLine>),
}

/// A relay's turn in the line, given up once the relay is sent on.
#[derive(Debug)]
pub struct InLine(Mutex<Option<Turn>>);

impl InLine {
    fn done(&self) {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
    }
}

impl NodeTarget {
    /// The target itself, and the line to give up once sent on.
    fn in_line(&self) -> (&Self, Option<&InLine>) {
        match self {
            Self::InLine(target, line) => (target, Some(line)),
            target => (target, None),
        }
    }
}

impl Target for NodeTarget {
    fn notify(&self, method: &str, params: &str) -> Result<(), CallFailed> {
        let (target, line) = self.in_line();
        let sent = match target {
            Self::Local(peer) => peer.notify(method, params),
            Self::Remote(remote) => remote.notify(method, params),
            Self::InLine(..) => Err(CallFailed::Gone), // never nested
        };
        line.map(InLine::done);
        sent
    }

    async fn call(
        &self,
        method: &str,
        params: String,
        cancelled: impl Future<Output = ()> + Send,
    ) -> Result<Answer, CallFailed> {
        let (target, line) = self.in_line();
        let call = async move {
            match target {
                Self::Local(peer) => PeerHandle::call_until(peer, method, params, cancelled).await,
                Self::Remote(remote) => remote.call_until(method, params, cancelled).await,
                Self::InLine(..) => Err(CallFailed::Gone), // never nested
            }
        };
        let mut call = std::pin::pin!(call);
        // The first poll sends the call on (before its first await).
        let first = std::future::poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx))).await;
        line.map(InLine::done);
        match first {
            Poll::Ready(answer) => answer,
            Poll::Pending => call.await,
        }
    }

    fn local_peer(&self) -> Option<&Arc<PeerHandle>> {
        match self {
            Self::Local(peer) => Some(peer),
            Self::Remote(_) | Self::InLine(..) => None,
        }
    }

    /// `None` for a relay in line: it takes the general path, which gives
    /// the line up once it is sent on.
    fn callee(&self) -> Option<Arc<dyn Callee>> {
        match self {
            Self::Local(peer) => Some(peer.clone()),
            Self::Remote(remote) => Some(Arc::new(remote.clone())),
            Self::InLine(..) => None,
        }
    }
}

impl Router for NodeRouter {
    type Target = NodeTarget;

    async fn init(&self, peer: Arc<PeerHandle>) -> Result<UserId, ErrorCode> {
        match self {
            Self::Local(r) => r.init(peer).await,
            Self::Redis(r) => r.init(peer).await,
        }
    }

    async fn find(&self, user: UserId) -> Option<NodeTarget> {
        match self {
            Self::Local(r) => r.find(user).await.map(NodeTarget::Local),
            Self::Redis(r) => r.find(user).await,
        }
    }

    async fn remove(&self, user: UserId) {
        match self {
            Self::Local(r) => r.remove(user).await,
            Self::Redis(r) => r.remove(user).await,
        }
    }

    async fn create(&self, owner: UserId, capability: Capability, intro: Introduction) -> Result<GroupId, ErrorCode> {
        match self {
            Self::Local(r) => r.create(owner, capability, intro).await,
            Self::Redis(r) => r.create(owner, capability, intro).await,
        }
    }

    async fn join(&self, group: GroupId, entrant: Entrant, max_members: usize) -> Result<Joined, ErrorCode> {
        match self {
            Self::Local(r) => r.join(group, entrant, max_members).await,
            Self::Redis(r) => r.join(group, entrant, max_members).await,
        }
    }

    async fn leave(&self, group: GroupId, user: UserId) -> Result<usize, ErrorCode> {
        match self {
            Self::Local(r) => r.leave(group, user).await,
            Self::Redis(r) => r.leave(group, user).await,
        }
    }

    async fn get_members(&self, group: GroupId, user: UserId, with_info: bool) -> Result<Members, ErrorCode> {
        match self {
            Self::Local(r) => r.get_members(group, user, with_info).await,
            Self::Redis(r) => r.get_members(group, user, with_info).await,
        }
    }

    async fn route(&self, group: GroupId, from: UserId, to: UserId) -> Result<NodeTarget, ErrorCode> {
        match self {
            Self::Local(r) => r.route(group, from, to).await.map(NodeTarget::Local),
            Self::Redis(r) => r.route(group, from, to).await,
        }
    }

    fn route_now(&self, group: GroupId, from: UserId, to: UserId) -> Option<Result<NodeTarget, ErrorCode>> {
        match self {
            Self::Local(r) => r.route_now(group, from, to).map(|route| route.map(NodeTarget::Local)),
            Self::Redis(r) => r.route_now(group, from, to),
        }
    }

    fn stats(&self) -> HubStats {
        match self {
            Self::Local(r) => r.stats(),
            Self::Redis(r) => r.stats(),
        }
    }

    fn serve_sessions(&self, sessions: Weak<dyn Sessions>) {
        if let Self::Redis(r) = self {
            r.serve_sessions(sessions);
        }
    }

    fn moves_sessions(&self) -> bool {
        matches!(self, Self::Redis(_))
    }

    async fn stop(&self) {
        if let Self::Redis(r) = self {
            r.stop().await;
        }
    }

    async fn resumable(&self, user: UserId, grants: &str) {
        if let Self::Redis(r) = self {
            r.resumable(user, grants).await;
        }
    }

    async fn take_over(
        &self,
        user: UserId,
        epoch: u64,
        received: u64,
        peer: Arc<PeerHandle>,
    ) -> Result<Option<Arrival>, ErrorCode> {
        match self {
            Self::Local(_) => Ok(None),
            Self::Redis(r) => r.take_over(user, epoch, received, peer).await,
        }
    }
}

/// A message on a node's channel. A published payload holds one or more,
/// one after the other (a JSON text stream, see [`publisher`]). Externally
/// tagged, so that serde reads a message in one pass and the params and
/// answers pass through as raw JSON text, neither escaped into a string nor
/// parsed again.
#[derive(Debug, Serialize, Deserialize)]
enum Message {
    /// Send `m(p)` as a notification to each of `to` (users of the node);
    /// for `member_joined`, `j` is the node the member joined on; for
    /// `member_joined` and `member_left`, `v` is the group's version after
    /// the change (see [`Mirror`]).
    #[serde(rename = "n")]
    Notify {
        to: Vec<UserId>,
        m: String,
        p: Box<RawValue>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        j: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        v: Option<u64>,
    },
    /// Call `m(p)` on `to` and answer to node `from` with `id`, within `ms`.
    #[serde(rename = "c")]
    Call { id: u64, from: String, to: UserId, m: String, p: Box<RawValue>, ms: u64 },
    /// The answer to the call `id` this node made.
    #[serde(rename = "a")]
    Answer { id: u64, a: Reply },
    /// Hand the session of `to` (ticket epoch `e`) over to node `from`,
    /// whose client has received `r` frames; answer `id`.
    #[serde(rename = "h")]
    HandOver { id: u64, from: String, to: UserId, e: u64, r: u64 },
    /// The answer to the hand-over `id` this node asked for: the
    /// session's state, or `None` when that node holds no such session.
    #[serde(rename = "s")]
    Handed { id: u64, s: Option<HandedOver> },
    /// A frame for `to`, forwarded by the node that held its session.
    #[serde(rename = "w")]
    Frame { to: UserId, f: String },
    /// `to`'s client's answer to a call this node made before handing the
    /// session over.
    #[serde(rename = "r")]
    Response { to: UserId, f: String },
    /// A member of group `g` moved to another node: forget its route.
    #[serde(rename = "f")]
    Forget { g: GroupId },
    /// Node `from` cancelled its call `id`: end it here too (the client
    /// gets `$/cancelRequest`).
    #[serde(rename = "x")]
    Cancel { id: u64, from: String },
}

/// How a call made through another node ended: the target's result or
/// error object as it sent it, or a failure.
#[derive(Debug, Serialize, Deserialize)]
enum Reply {
    #[serde(rename = "ok")]
    Result(Box<RawValue>),
    #[serde(rename = "err")]
    Error(Box<RawValue>),
    #[serde(rename = "gone")]
    Gone,
    #[serde(rename = "timeout")]
    Timeout,
    #[serde(rename = "large")]
    TooLarge,
    #[serde(rename = "memory")]
    MemoryBudget,
    #[serde(rename = "busy")]
    Unavailable,
}

/// Messages queued for the publisher and those it is done with (published,
/// or lost with a batch Redis refused), counted since the node started.
#[derive(Debug, Default)]
struct Published {
    queued: AtomicU64,
    done: AtomicU64,
    /// Hand-overs under way: their state is about to be queued. (The
    /// session's connection task, which holds a stopping server open, ends
    /// as soon as the session is given up, a moment before that.)
    handing_over: AtomicUsize,
    /// Woken after each batch and each hand-over.
    batch_done: tokio::sync::Notify,
}

/// Counts a hand-over under way for as long as it lives.
struct HandingOver<'a>(&'a Published);

impl<'a> HandingOver<'a> {
    fn new(published: &'a Published) -> Self {
        published.handing_over.fetch_add(1, Ordering::AcqRel);
        Self(published)
    }
}

impl Drop for HandingOver<'_> {
    fn drop(&mut self) {
        self.0.handing_over.fetch_sub(1, Ordering::AcqRel);
        self.0.batch_done.notify_waiters();
    }
}

/// A message waiting for the publisher, and the call to fail if it cannot go.
#[derive(Debug)]
struct Outgoing {
    /// The node whose channel it goes to.
    node: Arc<str>,
    payload: String,
    call: Option<u64>,
}

/// A user whose session is on another node.
#[derive(Debug, Clone)]
pub struct Remote {
    node: Arc<str>,
    user: UserId,
    shared: Arc<Shared>,
}

impl Remote {
    fn notify(&self, method: &str, params: &str) -> Result<(), CallFailed> {
        self.shared.publish_payload(&self.node, notify_payload(self.user, method, params), None)
    }

    /// Calls `method` on the user's node and waits for the answer; when
    /// `cancelled` completes first, that node is told to cancel the call
    /// (its client gets `$/cancelRequest`, as a local target would).
    async fn call_until(
        &self,
        method: &str,
        params: String,
        cancelled: impl Future<Output = ()> + Send,
    ) -> Result<Answer, CallFailed> {
        let shared = &self.shared;
        let id = shared.next_call.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        shared.wait(id, &self.node, Waits::Task(tx));
        let forget = Forget { shared, id };
        let ms = u64::try_from(shared.call_timeout.as_millis()).unwrap_or(u64::MAX);
        let call = call_payload(id, &shared.node, self.user, method, &[&params], ms);
        shared.publish_payload(&self.node, call, Some(id))?;
        let answer = tokio::select! {
            answer = tokio::time::timeout(shared.call_timeout, rx) => answer,
            () = cancelled => {
                drop(forget);
                // After the call on the same channel: it finds it there.
                let cancel = Message::Cancel { id, from: shared.node.to_string() };
                let _ = shared.publish(&self.node, &cancel, None);
                return Err(CallFailed::Cancelled);
            }
        };
        drop(forget);
        match answer {
            Ok(Ok(Reply::Result(result))) => Ok(Ok(result)),
            Ok(Ok(Reply::Error(error))) => Ok(Err(error)),
            Ok(Ok(Reply::Timeout)) | Err(_) => Err(CallFailed::Timeout),
            Ok(Ok(Reply::TooLarge)) => Err(CallFailed::TooLarge),
            Ok(Ok(Reply::MemoryBudget)) => Err(CallFailed::MemoryBudget),
            Ok(Ok(Reply::Unavailable)) => Err(CallFailed::Unavailable),
            Ok(Ok(Reply::Gone) | Err(_)) => Err(CallFailed::Gone),
        }
    }
}

/// Takes a call's waiter out of the table however the call ends.
struct Forget<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.shared.lock_calls().remove(&self.id);
    }
}

/// Calls made to other nodes, by correlation id. Ids are given in the order
/// calls are made, each with the same timeout: the first waits the longest.
type Waiting = BTreeMap<u64, Waiter>;

/// A call made to another node.
#[derive(Debug)]
struct Waiter {
    /// The node it went to.
    node: Arc<str>,
    /// When it times out, if its answer has not come.
    deadline: tokio::time::Instant,
    /// Where its answer goes.
    answer: Waits,
}

/// Who waits for the answer of a call made to another node.
enum Waits {
    /// A task ([`Remote::call_until`]).
    Task(oneshot::Sender<Reply>),
    /// Nobody ([`Callee::call_then`]): run with the answer.
    Then(Then),
}

impl std::fmt::Debug for Waits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Task(_) => "Task",
            Self::Then(_) => "Then",
        })
    }
}

impl Waits {
    fn give(self, reply: Reply) {
        match self {
            Self::Task(tx) => {
                let _ = tx.send(reply);
            }
            Self::Then(then) => then(reply.outcome()),
        }
    }
}

impl Reply {
    /// The answer as a [`Then`] takes it.
    fn outcome(&self) -> Result<AnswerRef<'_>, CallFailed> {
        match self {
            Self::Result(result) => Ok(Ok(result)),
            Self::Error(error) => Ok(Err(error)),
            Self::Gone => Err(CallFailed::Gone),
            Self::Timeout => Err(CallFailed::Timeout),
            Self::TooLarge => Err(CallFailed::TooLarge),
            Self::MemoryBudget => Err(CallFailed::MemoryBudget),
            Self::Unavailable => Err(CallFailed::Unavailable),
        }
    }
}

/// A relay to a user on another node needs no task: the call is published
/// at once, and its answer, read from this node's channel, goes to `then`;
/// the router's timer ends it if the answer does not come in time
/// (`expire_calls`).
impl Callee for Remote {
    fn call_then(&self, method: &str, params: &[&str], then: Then) -> u64 {
        let shared = &self.shared;
        let id = shared.next_call.fetch_add(1, Ordering::Relaxed);
        shared.wait(id, &self.node, Waits::Then(then));
        let ms = u64::try_from(shared.call_timeout.as_millis()).unwrap_or(u64::MAX);
        let call = call_payload(id, &shared.node, self.user, method, params, ms);
        if shared.publish_payload(&self.node, call, Some(id)).is_err() {
            shared.answer(id, Reply::Gone);
        }
        id
    }

    fn cancel_call(&self, id: u64) -> bool {
        let shared = &self.shared;
        let Some(waiter) = shared.lock_calls().remove(&id) else { return false };
        // After the call on the same channel: it finds it there.
        let _ = shared.publish(&self.node, &Message::Cancel { id, from: shared.node.to_string() }, None);
        if let Waits::Then(then) = waiter.answer {
            then(Err(CallFailed::Cancelled));
        }
        true
    }
}

/// Calls other nodes made to this node's sessions, by caller node and
/// correlation id: the session and its call id there, once the call is
/// made (`None` for the moment before).
type Running = HashMap<(Arc<str>, u64), Option<(Arc<PeerHandle>, u64)>>;

/// What the router's handles share with its tasks.
#[derive(Debug)]
struct Shared {
    /// This node's id.
    node: Arc<str>,
    /// Sessions on this node.
    users: DashMap<UserId, Arc<PeerHandle>>,
    /// Calls this node made to other nodes, waiting for the answer, and
    /// the node each went to.
    calls: Mutex<Waiting>,
    /// Woken when a call is made while none waited: see [`expire_calls`].
    calls_made: tokio::sync::Notify,
    next_call: AtomicU64,
    /// How long a relay waits for its answer.
    call_timeout: Duration,
    /// How long a stopped node's resumable sessions wait for a resume.
    resume_window: Duration,
    /// How long this node's heartbeat key lives without a refresh.
    heartbeat_ttl: Duration,
    /// Everything to publish, in order, for the publisher task.
    outgoing: mpsc::UnboundedSender<Outgoing>,
    /// How far the publisher got: what a stopping node waits for.
    published: Published,
    /// What relays need of groups with a member on this node, so that a
    /// relay costs no Redis round trip: see [`Routes`].
    routes: Routes,
    /// Clean-ups of sessions that ended while Redis was unreachable, in
    /// order, done again on every heartbeat until Redis takes them: without
    /// them their users would stay members (ghosts) once Redis is back.
    unfinished: Mutex<Vec<Unfinished>>,
    /// Groups with members on this node, and which: the node's stats. A
    /// set, not a count, so that recording a membership twice (a join
    /// tried again after Busy, which Redis had run after all) counts once.
    local_groups: DashMap<GroupId, HashSet<UserId>>,
    /// What the members on this node were told of each of those groups.
    mirrors: DashMap<GroupId, Mirror>,
    /// Woken when a mirror needs its group read (see [`resyncer`]).
    resync: tokio::sync::Notify,
    /// The hub's sessions, to hand one over when another node resumes it.
    sessions: OnceLock<Weak<dyn Sessions>>,
    /// Sessions handed over to another node, by user, for a relay timeout:
    /// what is still queued to them (answers to the client's requests that
    /// were running here, messages on their way) goes there, and the
    /// client's answers to calls made here come back to them.
    forwarding: DashMap<UserId, Arc<PeerHandle>>,
    /// Sessions this node is taking over, by correlation id, waiting for
    /// the node that held them.
    arriving: Mutex<HashMap<u64, Arriving>>,
    /// Calls other nodes made to sessions here, still waiting for the
    /// client's answer, by caller node and correlation id: what cancels them.
    running: Mutex<Running>,
    /// Take-overs under way on this node, by user: the session is here
    /// before Redis says it is this node's, and a fence leaves it alone.
    taking_over: DashMap<UserId, usize>,
}

/// Counts a take-over of a user under way for as long as it lives.
struct TakingOver<'a>(&'a Shared, UserId);

impl<'a> TakingOver<'a> {
    fn new(shared: &'a Shared, user: UserId) -> Self {
        *shared.taking_over.entry(user).or_default() += 1;
        Self(shared, user)
    }
}

impl Drop for TakingOver<'_> {
    fn drop(&mut self) {
        if let Entry::Occupied(mut entry) = self.0.taking_over.entry(self.1) {
            *entry.get_mut() -= 1;
            if *entry.get() == 0 {
                entry.remove();
            }
        }
    }
}

/// A session this node asked another to hand over.
#[derive(Debug)]
struct Arriving {
    /// Its handle here, which the frames to replay go to.
    peer: Arc<PeerHandle>,
    /// The user.
    user: UserId,
    /// Frames its client had received.
    sent: u64,
    /// The node that holds it.
    node: Arc<str>,
    /// Where the answer goes once the frames are queued.
    done: oneshot::Sender<Option<HandedOver>>,
}

/// A session's state as its node hands it over (a [`Departure`] on the
/// wire).
#[derive(Debug, Serialize, Deserialize)]
struct HandedOver {
    /// The frames to send the client from its count on.
    frames: Vec<String>,
    received: u64,
    replayed: bool,
    next_call: u64,
    groups: Vec<GroupId>,
    grants: Option<String>,
}

/// A clean-up Redis did not take.
#[derive(Debug, Clone, Copy)]
enum Unfinished {
    Leave(GroupId, UserId),
    Remove(UserId),
    /// A session handed over to another node that never took it: unless
    /// it is that node's by now, its user leaves its groups and its id
    /// goes, as in v1.
    Abandoned(UserId),
}

/// What this node's members of a group were told of its members: the
/// members in join order as of `version`, the group's count of changes in
/// Redis (1 when made, one more for each join and leave, each told with
/// its version). A change told with a version past the next one means
/// changes were lost on the way (Redis drops what a subscriber cannot take
/// fast enough; the node's channel may drop), and so may be any change
/// while the channel is down: then the group is read again and the
/// difference told as `member_left`s and `member_joined`s (see
/// [`resyncer`]), so that every member's view comes back to the group's.
#[derive(Debug)]
struct Mirror {
    version: u64,
    members: Vec<UserId>,
    /// While the group is read again: the changes told meanwhile, in order.
    held: Option<Vec<Change>>,
    /// Read for the first time (a member here after none): what it reads
    /// is taken as told (each member here learnt the group as it joined),
    /// and changes are told at once meanwhile.
    fresh: bool,
}

/// A `member_joined` or `member_left` as told on this node's channel.
#[derive(Debug)]
struct Change {
    version: u64,
    user: UserId,
    to: Vec<UserId>,
    method: String,
    params: Box<RawValue>,
    /// Told to `to` already (while the group was first read).
    told: bool,
}

/// Tells users of this node a notification: `(to, method, params)`.
type Tell<'a> = &'a dyn Fn(&[UserId], &str, &str);

impl Change {
    fn joined(&self) -> bool {
        self.method == method::MEMBER_JOINED
    }

    fn tell(&self, tell: Tell<'_>) {
        tell(&self.to, &self.method, self.params.get());
    }
}

/// Notifies each of `to` (users of this node).
fn notify_each(shared: &Shared, to: &[UserId], method: &str, params: &str) {
    for user in to {
        if let Some(peer) = shared.users.get(user) {
            // A full queue disconnects that client; its cleanup takes it
            // out of its groups.
            let _ = peer.notify(method, params);
        }
    }
}

/// A group as read from Redis for its [`Mirror`].
#[derive(Debug)]
struct Read {
    group: GroupId,
    version: u64,
    members: Vec<UserId>,
    /// Members' `info` as JSON text, by id (those introduced with one).
    intros: HashMap<String, String>,
}

impl Mirror {
    fn new(version: u64, members: Vec<UserId>) -> Self {
        Self { version, members, held: None, fresh: false }
    }

    /// For a group with a first member here that was not made here: read
    /// before anything is kept.
    fn unread() -> Self {
        Self { version: 0, members: Vec::new(), held: Some(Vec::new()), fresh: true }
    }

    /// Takes a change told on the channel: tells it if it is the next one
    /// (or the group is read for the first time), holds it while the group
    /// is read, drops one told before. True when one is missing: read the
    /// group again.
    fn take(&mut self, mut change: Change, tell: Tell<'_>) -> bool {
        if let Some(held) = &mut self.held {
            if self.fresh {
                change.tell(tell);
                change.told = true;
            }
            held.push(change);
            return false;
        }
        if change.version <= self.version {
            return false;
        }
        if change.version > self.version + 1 {
            self.held = Some(vec![change]);
            return true;
        }
        self.apply(&change);
        change.tell(tell);
        false
    }

    /// Takes the group as read: tells the members here (`here`) what
    /// changed since what they were told (unless the mirror is fresh),
    /// then the changes held meanwhile that came after. False when one is
    /// still missing: read again.
    fn adopt(&mut self, read: Read, here: &[UserId], tell: Tell<'_>) -> bool {
        let Read { group, version, members, intros } = read;
        if !self.fresh {
            let tell = |method: &str, user: UserId, params: String| {
                let to: Vec<UserId> = here.iter().copied().filter(|member| *member != user).collect();
                tell(&to, method, &params);
            };
            for user in self.members.iter().filter(|member| !members.contains(member)) {
                tell(method::MEMBER_LEFT, *user, format!("[\"{group}\",\"{user}\"]"));
            }
            for user in members.iter().filter(|member| !self.members.contains(member)) {
                let params = match intros.get(&user.to_string()) {
                    Some(info) => format!("[\"{group}\",\"{user}\",{info}]"),
                    None => format!("[\"{group}\",\"{user}\"]"),
                };
                tell(method::MEMBER_JOINED, *user, params);
            }
        }
        self.version = version;
        self.members = members;
        self.fresh = false;
        let mut held = self.held.take().unwrap_or_default().into_iter();
        while let Some(change) = held.next() {
            if change.version <= self.version {
                continue;
            }
            if change.version > self.version + 1 {
                self.held = Some(std::iter::once(change).chain(held).collect());
                return false;
            }
            self.apply(&change);
            if !change.told {
                change.tell(tell);
            }
        }
        true
    }

    fn apply(&mut self, change: &Change) {
        self.version = change.version;
        if change.joined() {
            if !self.members.contains(&change.user) {
                self.members.push(change.user);
            }
        } else {
            self.members.retain(|member| *member != change.user);
        }
    }
}

/// What routing a relay needs of one group, read from Redis.
#[derive(Debug, Clone)]
struct Route {
    capability: Capability,
    owner: Option<UserId>,
    /// Each member's node.
    nodes: HashMap<UserId, Arc<str>>,
}

/// Slots the lines and the change counts of [`Routes`] are spread over.
const ROUTE_SLOTS: usize = 64;

/// Routes of groups one of this node's users relayed in, kept only while
/// every change to the group reaches this node: a member on this node is
/// told (through this node's channel) of every join and leave of another,
/// and its own joins and leaves happen here. A join or leave elsewhere
/// updates the kept route in place (the message says on which node the
/// member joined), as does a join here; a leave here, an owner's leave
/// (the next member becomes the owner), a member moving to another node,
/// and losing the channel (what was published meanwhile is lost) forget
/// it. A route read from Redis is kept only if its group did not change
/// while it was read (counted per slot of groups).
///
/// Relays reach the routing in the order their callers sent them, and a
/// relay goes on to its target in the same poll that routes it; one that
/// must read Redis waits, so every later relay of the same caller waits in
/// line (first come first served) until none is left waiting: else a later
/// relay finding the route just kept would overtake it (a candidate its
/// offer). A caller's relays keep their order; other callers' have none to
/// keep, so the lines are per slot of callers and one caller's Redis read
/// holds up few others. A relay keeps its place at the head of its line
/// until it has gone on to its target ([`NodeTarget::InLine`]): given up
/// as soon as its route was found, the next relay, on another thread,
/// could go on first (seen as two messages swapped after a resume, under
/// load).
#[derive(Debug)]
struct Routes {
    by_group: DashMap<GroupId, Arc<Route>>,
    /// Per slot of groups: bumped by every change, before the route
    /// changes or goes.
    changes: Box<[AtomicU64]>,
    /// Per slot of callers.
    lines: Box<[Line]>,
    slots: std::hash::RandomState,
}

/// Routing that may read Redis, for the callers of one slot.
#[derive(Debug, Default)]
struct Line {
    /// Relays waiting in `turn` or holding it.
    queued: Arc<AtomicUsize>,
    /// One at a time in arrival order (tokio's mutex is fair), each
    /// holding it until its relay is sent on ([`NodeTarget::InLine`]).
    turn: Arc<tokio::sync::Mutex<()>>,
}

/// A relay's turn in its line of `Routes`, held until dropped.
#[derive(Debug)]
pub struct Turn {
    _held: tokio::sync::OwnedMutexGuard<()>,
    _queued: Queued,
}

/// Counts a relay in [`Line::queued`] while it waits or holds its turn
/// (and when its wait is given up).
#[derive(Debug)]
struct Queued(Arc<AtomicUsize>);

impl Drop for Queued {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Default for Routes {
    fn default() -> Self {
        Self {
            by_group: DashMap::new(),
            changes: (0..ROUTE_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            lines: (0..ROUTE_SLOTS).map(|_| Line::default()).collect(),
            slots: std::hash::RandomState::new(),
        }
    }
}

impl Routes {
    fn slot(&self, id: impl std::hash::Hash) -> usize {
        // Ids are random: any bits of their hash spread them evenly.
        (std::hash::BuildHasher::hash_one(&self.slots, id) % ROUTE_SLOTS as u64) as usize
    }

    fn line(&self, caller: UserId) -> &Line {
        &self.lines[self.slot(caller)]
    }

    /// Whether a relay of `caller` may take a kept route at once: none of
    /// its relays waits in line (it would be overtaken).
    fn clear(&self, caller: UserId) -> bool {
        self.line(caller).queued.load(Ordering::Acquire) == 0
    }

    /// Waits behind every relay already in `caller`'s line.
    async fn wait_turn(&self, caller: UserId) -> Turn {
        let line = self.line(caller);
        line.queued.fetch_add(1, Ordering::AcqRel);
        let queued = Queued(line.queued.clone());
        Turn { _held: line.turn.clone().lock_owned().await, _queued: queued }
    }

    fn get(&self, group: GroupId) -> Option<Arc<Route>> {
        self.by_group.get(&group).map(|route| route.clone())
    }

    /// A mark to pass to [`keep`](Self::keep), taken before reading Redis.
    fn mark(&self, group: GroupId) -> u64 {
        self.changes[self.slot(group)].load(Ordering::Acquire)
    }

    fn keep(&self, group: GroupId, route: Arc<Route>, mark: u64) {
        // Checked under the entry's lock: a change that bumps the count
        // after this check finds the route kept and changes it.
        let entry = self.by_group.entry(group);
        if self.mark(group) == mark {
            entry.insert(route);
        }
    }

    /// Changes the kept route of `group`, if any, under its entry's lock.
    fn change(&self, group: GroupId, change: impl FnOnce(&mut Route) -> bool) {
        self.changes[self.slot(group)].fetch_add(1, Ordering::AcqRel);
        if let Entry::Occupied(mut entry) = self.by_group.entry(group)
            && !change(Arc::make_mut(entry.get_mut()))
        {
            entry.remove();
        }
    }

    /// `user` joined `group` on `node`.
    fn joined(&self, group: GroupId, user: UserId, node: Arc<str>) {
        self.change(group, |route| {
            route.nodes.insert(user, node);
            true
        });
    }

    /// `user` left `group`, another member on this node told: the route
    /// goes if the owner left (the next member in order owns the group).
    fn left(&self, group: GroupId, user: UserId) {
        self.change(group, |route| {
            route.nodes.remove(&user);
            route.owner != Some(user)
        });
    }

    fn forget(&self, group: GroupId) {
        self.change(group, |_| false);
    }

    fn forget_all(&self) {
        for changes in &self.changes {
            changes.fetch_add(1, Ordering::AcqRel);
        }
        self.by_group.clear();
    }
}

impl Shared {
    /// The session of `user` on this node, or handed over from it a moment
    /// ago (then what is sent to it is forwarded).
    fn local(&self, user: UserId) -> Option<Arc<PeerHandle>> {
        let peer = self.users.get(&user).map(|peer| peer.clone());
        peer.or_else(|| self.forwarding.get(&user).map(|peer| peer.clone()))
    }

    fn local_group_added(&self, group: GroupId, user: UserId) {
        let first = {
            let mut here = self.local_groups.entry(group).or_default();
            here.insert(user) && here.len() == 1
        };
        // (Not under the lock of `local_groups`: see `resyncer`.)
        if first && let Entry::Vacant(entry) = self.mirrors.entry(group) {
            entry.insert(Mirror::unread());
            self.resync.notify_one();
        }
    }

    fn local_group_removed(&self, group: GroupId, user: UserId) {
        let last = match self.local_groups.entry(group) {
            Entry::Occupied(mut entry) => {
                entry.get_mut().remove(&user);
                let last = entry.get().is_empty();
                if last {
                    entry.remove();
                }
                last
            }
            Entry::Vacant(_) => false,
        };
        if last {
            self.mirrors.remove(&group);
        }
    }

    fn lock_arriving(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arriving>> {
        // One insert or remove per critical section: poisoning is moot.
        self.arriving.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock_running(&self) -> std::sync::MutexGuard<'_, Running> {
        // Every critical section is one insert or remove: poisoning is moot.
        self.running.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock_unfinished(&self) -> std::sync::MutexGuard<'_, Vec<Unfinished>> {
        // Every critical section is a push or a take: poisoning is moot.
        self.unfinished.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock_calls(&self) -> std::sync::MutexGuard<'_, Waiting> {
        // Every critical section is one insert or remove: poisoning is moot.
        self.calls.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn publish(&self, node: &Arc<str>, message: &Message, call: Option<u64>) -> Result<(), CallFailed> {
        let payload = serde_json::to_string(message).map_err(|_| CallFailed::Gone)?;
        self.publish_payload(node, payload, call)
    }

    /// Queues a message written already (see [`call_payload`]).
    fn publish_payload(&self, node: &Arc<str>, payload: String, call: Option<u64>) -> Result<(), CallFailed> {
        let outgoing = Outgoing { node: node.clone(), payload, call };
        self.outgoing.send(outgoing).map_err(|_| CallFailed::Gone)?;
        self.published.queued.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// Waits for the answer to call `id`, made to `node`.
    fn wait(&self, id: u64, node: &Arc<str>, answer: Waits) {
        let deadline = tokio::time::Instant::now() + self.call_timeout;
        let first = {
            let mut calls = self.lock_calls();
            calls.insert(id, Waiter { node: node.clone(), deadline, answer });
            calls.len() == 1
        };
        if first {
            self.calls_made.notify_one();
        }
    }

    fn answer(&self, id: u64, reply: Reply) {
        // Outside the lock: a `then` may make calls of its own.
        let waiter = self.lock_calls().remove(&id);
        if let Some(waiter) = waiter {
            waiter.answer.give(reply);
        }
    }

    /// Ends every call waiting on a node `on` picks, each with `reply()`.
    fn end_calls(&self, on: impl Fn(&str) -> bool, reply: fn() -> Reply) {
        let ended: Vec<Waiter> = {
            let mut calls = self.lock_calls();
            let ids: Vec<u64> = calls.iter().filter(|(_, waiter)| on(&waiter.node)).map(|(id, _)| *id).collect();
            ids.iter().filter_map(|id| calls.remove(id)).collect()
        };
        for waiter in ended {
            waiter.answer.give(reply());
        }
    }
}

fn channel(node: &str) -> String {
    format!("{PREFIX}node:{node}")
}

fn user_key(user: UserId) -> String {
    format!("{PREFIX}user:{user}")
}

/// A group's five keys: members in order, member → node, capability,
/// member → its `info` as JSON text (members introduced by their join
/// token's `info` only), and its version (1 when made, one more for each
/// join and leave: see [`Mirror`]).
fn group_keys(group: GroupId) -> [String; 5] {
    ["m", "n", "c", "i", "v"].map(|k| format!("{PREFIX}{{g:{group}}}:{k}"))
}

/// An introduction as scripts keep it: empty for [`Introduction::Id`], else
/// the `info` as JSON text (`null` for none).
fn intro_text(intro: &Introduction) -> String {
    match intro {
        Introduction::Id => String::new(),
        Introduction::Info(info) => info.as_deref().map_or_else(|| "null".to_owned(), serde_json::Value::to_string),
    }
}

/// What every script shares. Keys are made from `prefix` (ARGV[1]): a
/// group's keys as [`group_keys`] does, `memberships:{node}` ("group user"
/// entries of a node's users, for the reaper), `users:{node}` (its users),
/// `joined:{user}` (the groups a user is in, as Redis has them: what its
/// session's end leaves, see `forget`).
const COMMON: &str = r#"
-- Now in milliseconds, on Redis's clock (every node judges deadlines by it).
local function now_ms()
  local now = redis.call('TIME')
  return tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
end

local function group_keys(prefix, group)
  local base = prefix .. '{g:' .. group .. '}:'
  return base .. 'm', base .. 'n', base .. 'c', base .. 'i', base .. 'v'
end

-- Publishes method(params) to the nodes of every member but user, one
-- message per node, with the node user joined on (`on`, for a join) so
-- that their kept routes take it in, and the group's version after the
-- change (each join and leave counts one) so that a node sees when
-- changes were lost on the way. Returns how many members were told.
local function tell(prefix, nodes_key, user, method, params, on, version)
  local by_node = {}
  local told = 0
  local flat = redis.call('HGETALL', nodes_key)
  for i = 1, #flat, 2 do
    if flat[i] ~= user then
      local node = flat[i + 1]
      by_node[node] = by_node[node] or {}
      table.insert(by_node[node], flat[i])
      told = told + 1
    end
  end
  local tail = (on and (',"j":"' .. on .. '"') or '') .. ',"v":' .. version .. '}}'
  for node, users in pairs(by_node) do
    local message = '{"n":{"to":' .. cjson.encode(users) .. ',"m":"' .. method .. '","p":' .. params .. tail
    redis.call('PUBLISH', prefix .. 'node:' .. node, message)
  end
  return told
end

-- How many members were told (0: the group is gone), -1 no such group,
-- -2 not a member.
local function leave(prefix, group, user)
  local m, n, c, i, v = group_keys(prefix, group)
  if redis.call('EXISTS', c) == 0 then return -1 end
  local node = redis.call('HGET', n, user)
  if not node then return -2 end
  redis.call('HDEL', n, user)
  redis.call('HDEL', i, user)
  redis.call('SREM', prefix .. 'memberships:' .. node, group .. ' ' .. user)
  redis.call('SREM', prefix .. 'joined:' .. user, group)
  redis.call('LREM', m, 1, user)
  if redis.call('LLEN', m) == 0 then
    redis.call('DEL', m, n, c, i, v)
    return 0
  end
  local params = '["' .. group .. '","' .. user .. '"]'
  return tell(prefix, n, user, 'member_left', params, nil, redis.call('INCR', v))
end

-- intro: '' (ids only), or the member's info as JSON text.
local function add(prefix, group, user, node, intro)
  local m, n, _, i = group_keys(prefix, group)
  redis.call('RPUSH', m, user)
  redis.call('HSET', n, user, node)
  if intro ~= '' then redis.call('HSET', i, user, intro) end
  redis.call('SADD', prefix .. 'memberships:' .. node, group .. ' ' .. user)
  redis.call('SADD', prefix .. 'joined:' .. user, group)
end

-- Ends user's session if its id is still node's (a session handed over
-- lives on elsewhere): the user leaves every group Redis lists for it (the
-- others told), including any its node never recorded, such as a join
-- Redis ran after the node had stopped waiting and answered Busy; then
-- its id goes. 1 ended, 0 not node's.
local function forget(prefix, user, node)
  if redis.call('GET', prefix .. 'user:' .. user) ~= node then return 0 end
  for _, group in ipairs(redis.call('SMEMBERS', prefix .. 'joined:' .. user)) do
    leave(prefix, group, user)
  end
  redis.call('DEL', prefix .. 'user:' .. user)
  redis.call('SREM', prefix .. 'users:' .. node, user)
  redis.call('HDEL', prefix .. 'resumable:' .. node, user)
  return 1
end
"#;

/// ARGV: prefix, user, node. 1: the id is this node's now; 0: taken.
const INIT: &str = r"
if redis.call('SET', ARGV[1] .. 'user:' .. ARGV[2], ARGV[3], 'NX') then
  redis.call('SADD', ARGV[1] .. 'users:' .. ARGV[3], ARGV[2])
  return 1
end
return 0
";

/// ARGV: prefix, user, node. The user's session ended: it leaves what it
/// is still in and its id goes, only if it is still this node's (see
/// `forget` in [`COMMON`]).
const REMOVE: &str = r"
forget(ARGV[1], ARGV[2], ARGV[3])
redis.call('SREM', ARGV[1] .. 'users:' .. ARGV[3], ARGV[2])
redis.call('HDEL', ARGV[1] .. 'resumable:' .. ARGV[3], ARGV[2])
return 1
";

/// ARGV: prefix, user, node, grants (JSON text). The session may be
/// resumed, on any node: `resumable:{node}` keeps its grants.
const RESUMABLE: &str = r"
if redis.call('GET', ARGV[1] .. 'user:' .. ARGV[2]) == ARGV[3] then
  redis.call('HSET', ARGV[1] .. 'resumable:' .. ARGV[3], ARGV[2], ARGV[4])
end
return 1
";

/// ARGV: prefix, user, from (the node holding the session), to (this
/// node), orphan, then the session's groups. Moves the session to `to` at
/// once: its id, its place in each group (order and ownership untouched),
/// its grants; every node of those groups is told to forget their routes.
/// With orphan '1' only if `from` has no heartbeat, and the groups are read
/// from `from`'s memberships. Returns {1, grants ('' if none), {groups}},
/// or {-1, '', {}} when `from` does not hold the session (or is alive, for
/// an orphan).
const TAKE_OVER: &str = r#"
local prefix, user, from, to = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local user_key = prefix .. 'user:' .. user
if redis.call('GET', user_key) ~= from then return {-1, '', {}} end
local groups = {}
if ARGV[5] == '1' then
  if redis.call('EXISTS', prefix .. 'alive:' .. from) == 1 then return {-1, '', {}} end
  local suffix = ' ' .. user
  for _, entry in ipairs(redis.call('SMEMBERS', prefix .. 'memberships:' .. from)) do
    if string.sub(entry, -#suffix) == suffix then
      table.insert(groups, string.sub(entry, 1, #entry - #suffix))
    end
  end
else
  for i = 6, #ARGV do table.insert(groups, ARGV[i]) end
end
redis.call('SET', user_key, to)
redis.call('SMOVE', prefix .. 'users:' .. from, prefix .. 'users:' .. to, user)
local grants = redis.call('HGET', prefix .. 'resumable:' .. from, user)
if grants then
  redis.call('HDEL', prefix .. 'resumable:' .. from, user)
  redis.call('HSET', prefix .. 'resumable:' .. to, user, grants)
else
  grants = ''
end
local moved = {}
for _, group in ipairs(groups) do
  local _, n = group_keys(prefix, group)
  if redis.call('HGET', n, user) == from then
    local nodes = {[from] = true}
    for _, node in ipairs(redis.call('HVALS', n)) do nodes[node] = true end
    redis.call('HSET', n, user, to)
    redis.call('SREM', prefix .. 'memberships:' .. from, group .. ' ' .. user)
    redis.call('SADD', prefix .. 'memberships:' .. to, group .. ' ' .. user)
    for node in pairs(nodes) do
      redis.call('PUBLISH', prefix .. 'node:' .. node, '{"f":{"g":"' .. group .. '"}}')
    end
    table.insert(moved, group)
  end
end
return {1, grants, moved}
"#;

/// ARGV: prefix, user, node. A session handed over that the other node
/// never took: if it is still this node's, its user leaves its groups (the
/// others told) and its id goes (see `forget` in [`COMMON`]).
const ABANDON: &str = r"
return forget(ARGV[1], ARGV[2], ARGV[3])
";

/// ARGV: prefix, group, owner, node, capability, intro (see `add` in
/// [`COMMON`]). 1 made, 0 the id is taken.
const CREATE: &str = r"
local m, n, c, _, v = group_keys(ARGV[1], ARGV[2])
if redis.call('EXISTS', c) == 1 then return 0 end
redis.call('SET', c, ARGV[5])
redis.call('SET', v, 1)
add(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[6])
return 1
";

/// ARGV: prefix, group, user, node, granted (0/1), room (0/1), max
/// members, intro (see `add` in [`COMMON`]), `member_joined`'s params.
/// Returns {status, owner, capability, told}: status 1 joined, 0 in
/// already, -1 no such group, -2 limit, -3 not granted (then owner and
/// capability are empty: a Lua `false` would end the reply there).
const JOIN: &str = r"
local m, n, c, _, v = group_keys(ARGV[1], ARGV[2])
local cap = redis.call('GET', c)
if not cap then return {-1, '', '', 0} end
local owner = redis.call('LINDEX', m, 0)
if redis.call('HEXISTS', n, ARGV[3]) == 1 then return {0, owner, cap, 0} end
if ARGV[5] == '0' then return {-3, '', '', 0} end
if ARGV[6] == '0' or redis.call('LLEN', m) >= tonumber(ARGV[7]) then return {-2, '', '', 0} end
local told = tell(ARGV[1], n, ARGV[3], 'member_joined', ARGV[9], ARGV[4], redis.call('INCR', v))
add(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[8])
return {1, owner, cap, told}
";

/// ARGV: prefix, group, user. See `leave` in [`COMMON`].
const LEAVE: &str = r"
return leave(ARGV[1], ARGV[2], ARGV[3])
";

/// ARGV: prefix, node, resume window (ms), mark TTL (ms). Once the node's
/// heartbeat is gone, exactly one reaper handles its sessions: those that
/// cannot be resumed end as on a disconnect (their users leave their
/// groups, the others told; their ids are released); the resumable ones
/// are suspended, still members, until the window passes (`orphaned`, by
/// deadline, on Redis's clock), resumable on any node meanwhile. The node
/// may still run (a long pause, a cut to Redis): `reaped:{node}` tells it
/// on its next beat (see [`fence`]). 1 reaped, 0 nothing to do.
const REAP: &str = r"
local prefix, node = ARGV[1], ARGV[2]
if redis.call('EXISTS', prefix .. 'alive:' .. node) == 1 then return 0 end
if redis.call('SREM', prefix .. 'nodes', node) == 0 then return 0 end
local resumable = prefix .. 'resumable:' .. node
for _, entry in ipairs(redis.call('SMEMBERS', prefix .. 'memberships:' .. node)) do
  local group, user = string.match(entry, '(%S+) (%S+)')
  if redis.call('HEXISTS', resumable, user) == 0 then leave(prefix, group, user) end
end
for _, user in ipairs(redis.call('SMEMBERS', prefix .. 'users:' .. node)) do
  if redis.call('HEXISTS', resumable, user) == 0 then
    redis.call('DEL', prefix .. 'user:' .. user)
    redis.call('SREM', prefix .. 'users:' .. node, user)
  end
end
redis.call('ZADD', prefix .. 'orphaned', now_ms() + tonumber(ARGV[3]), node)
redis.call('SET', prefix .. 'reaped:' .. node, '1', 'PX', ARGV[4])
return 1
";

/// ARGV: prefix. Ends the suspended sessions of stopped nodes whose resume
/// window has passed (those not resumed elsewhere meanwhile): their users
/// leave their groups, the others told, and their ids are released.
/// Returns how many nodes' sessions ended.
const EXPIRE: &str = r"
local prefix = ARGV[1]
local due = redis.call('ZRANGEBYSCORE', prefix .. 'orphaned', '-inf', now_ms())
for _, node in ipairs(due) do
  redis.call('ZREM', prefix .. 'orphaned', node)
  -- A node back within the window (a network cut) keeps its sessions.
  if redis.call('EXISTS', prefix .. 'alive:' .. node) == 0 then
    for _, entry in ipairs(redis.call('SMEMBERS', prefix .. 'memberships:' .. node)) do
      local group, user = string.match(entry, '(%S+) (%S+)')
      leave(prefix, group, user)
    end
    for _, user in ipairs(redis.call('SMEMBERS', prefix .. 'users:' .. node)) do
      redis.call('DEL', prefix .. 'user:' .. user)
    end
    redis.call('DEL', prefix .. 'memberships:' .. node, prefix .. 'users:' .. node, prefix .. 'resumable:' .. node)
  end
end
return #due
";

/// The node's scripts, loaded by SHA (EVALSHA, EVAL the first time).
#[derive(Debug)]
struct Scripts {
    init: Script,
    remove: Script,
    create: Script,
    join: Script,
    leave: Script,
    reap: Script,
    expire: Script,
    resumable: Script,
    take_over: Script,
    abandon: Script,
}

impl Scripts {
    fn new() -> Self {
        let with_common = |body: &str| Script::new(&format!("{COMMON}{body}"));
        Self {
            init: Script::new(INIT),
            remove: with_common(REMOVE),
            create: with_common(CREATE),
            join: with_common(JOIN),
            leave: with_common(LEAVE),
            reap: with_common(REAP),
            expire: with_common(EXPIRE),
            resumable: Script::new(RESUMABLE),
            take_over: with_common(TAKE_OVER),
            abandon: with_common(ABANDON),
        }
    }
}

/// The router of one node of a cluster: group state and the user registry in
/// Redis, sessions of this node in memory.
#[derive(Debug)]
pub struct RedisRouter {
    shared: Arc<Shared>,
    redis: ConnectionManager,
    scripts: Arc<Scripts>,
    /// Ends the node's tasks when the router goes.
    _tasks: Tasks,
}

/// The node's background tasks, aborted on drop.
#[derive(Debug)]
struct Tasks(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

impl RedisRouter {
    /// Where a relay from `from` to `to` goes in a group whose route is
    /// `route`, checked in the protocol's order (the caller first).
    fn route_in(&self, route: &Route, from: UserId, to: UserId) -> Result<NodeTarget, ErrorCode> {
        if !route.nodes.contains_key(&from) {
            return Err(ErrorCode::NotAMember);
        }
        let to_node = route.nodes.get(&to).ok_or(ErrorCode::UserNotFound)?;
        let owner = route.owner;
        if !route.capability.allows_pair(owner == Some(from) || owner == Some(to)) {
            return Err(ErrorCode::PermissionDenied);
        }
        // A member whose session is gone from this node is about to leave.
        self.target(to_node, to).ok_or(ErrorCode::UserNotFound)
    }

    /// Connects to the Redis at `url`, subscribes to this node's channel and
    /// starts the heartbeat; relays wait `call_timeout` for their answer,
    /// and the resumable sessions of a node that stopped wait
    /// `resume_window` for a resume on another.
    pub async fn connect(
        url: &str,
        call_timeout: Duration,
        resume_window: Duration,
        heartbeat_ttl: Duration,
    ) -> redis::RedisResult<Self> {
        let info: redis::ConnectionInfo = url.parse()?;
        // Subscriptions on the connection manager (re-made after every
        // reconnect) need RESP3's push messages.
        let settings = info.redis_settings().clone().set_protocol(redis::ProtocolVersion::RESP3);
        // Small writes go at once: with Nagle's algorithm (redis-rs's
        // default) a write waits while an earlier one is unacknowledged.
        let tcp = redis::io::tcp::TcpSettings::default().set_nodelay(true);
        let info = info.set_redis_settings(settings).set_tcp_settings(tcp);
        let client = redis::Client::open(info)?;
        // What Redis pushes (this node's channel) is handled where it is
        // read, in the connection's own task, in order: no channel and no
        // task in between. Nothing comes before `shared` is set but the
        // subscription's confirmation.
        let receiving: Arc<OnceLock<Weak<Shared>>> = Arc::default();
        let to_shared = receiving.clone();
        let receive = move |push: PushInfo| {
            if let Some(shared) = to_shared.get().and_then(Weak::upgrade) {
                receive(push, &shared);
            }
            Ok::<(), std::convert::Infallible>(())
        };
        let config = ConnectionManagerConfig::new()
            .set_push_sender(receive)
            .set_automatic_resubscription()
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_max_delay(Duration::from_secs(1))
            // One quick try, then the call fails (Busy) rather than waiting
            // through six reconnections: the next command, or the next
            // heartbeat, tries again.
            .set_number_of_retries(1);
        let mut redis = client.get_connection_manager_with_config(config).await?;
        let node: Arc<str> =
            format!("{:016x}", getrandom::u64().map_err(|e| std::io::Error::other(e.to_string()))?).into();
        redis.subscribe(channel(&node)).await?;
        let (outgoing, queued) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            node: node.clone(),
            users: DashMap::new(),
            calls: Mutex::default(),
            calls_made: tokio::sync::Notify::new(),
            next_call: AtomicU64::new(1),
            call_timeout,
            resume_window,
            // A key that lives one beat or less would lapse between beats.
            heartbeat_ttl: heartbeat_ttl.max(2 * HEARTBEAT),
            outgoing,
            published: Published::default(),
            routes: Routes::default(),
            unfinished: Mutex::default(),
            local_groups: DashMap::new(),
            mirrors: DashMap::new(),
            resync: tokio::sync::Notify::new(),
            sessions: OnceLock::new(),
            forwarding: DashMap::new(),
            arriving: Mutex::default(),
            running: Mutex::default(),
            taking_over: DashMap::new(),
        });
        let _ = receiving.set(Arc::downgrade(&shared));
        let scripts = Arc::new(Scripts::new());
        let tasks = Tasks(vec![
            tokio::spawn(publisher(redis.clone(), queued, shared.clone())),
            tokio::spawn(expire_calls(shared.clone())),
            tokio::spawn(resyncer(redis.clone(), shared.clone())),
            tokio::spawn(heartbeat(redis.clone(), shared.clone(), scripts.clone())),
        ]);
        debug!(%node, "joined the cluster");
        Ok(Self { shared, redis, scripts, _tasks: tasks })
    }

    /// Resolves once everything queued for the publisher so far is published
    /// (or lost with a batch Redis refused): a stopping node's last words,
    /// such as the state of a session it just handed over, must go out
    /// before the process ends.
    pub async fn stop(&self) {
        let published = &self.shared.published;
        loop {
            let batch_done = published.batch_done.notified();
            tokio::pin!(batch_done);
            batch_done.as_mut().enable();
            if published.handing_over.load(Ordering::Acquire) == 0
                && published.done.load(Ordering::Acquire) >= published.queued.load(Ordering::Acquire)
            {
                return;
            }
            batch_done.await;
        }
    }

    /// The group's capability, owner and members' nodes, read at once.
    async fn read_route(&self, group: GroupId) -> Result<Route, ErrorCode> {
        let [members, nodes, capability, ..] = group_keys(group);
        let (capability, owner, nodes): (Option<u8>, Option<String>, HashMap<String, String>) = redis::pipe()
            .atomic()
            .get(capability)
            .lindex(members, 0)
            .hgetall(nodes)
            .query_async(&mut self.redis())
            .await
            .map_err(unavailable)?;
        let capability = capability.and_then(Capability::from_bits).ok_or(ErrorCode::GroupNotFound)?;
        let owner = owner.and_then(|o| o.parse().ok());
        let nodes = nodes.into_iter().filter_map(|(user, node)| Some((user.parse().ok()?, node.into()))).collect();
        Ok(Route { capability, owner, nodes })
    }

    /// Asks `node` to hand `user`'s session over to `peer` here: the frames
    /// to replay are queued on `peer` when the answer comes (see
    /// [`arrived`]). `None` when that node holds no such session; Busy when
    /// it does not answer in time.
    async fn ask_hand_over(
        &self,
        node: &Arc<str>,
        user: UserId,
        epoch: u64,
        received: u64,
        peer: &Arc<PeerHandle>,
    ) -> Result<Option<HandedOver>, ErrorCode> {
        let shared = &self.shared;
        let id = shared.next_call.fetch_add(1, Ordering::Relaxed);
        let (done, answer) = oneshot::channel();
        // Here before the registry says so: frames forwarded after the
        // state find it.
        shared.users.insert(user, peer.clone());
        let arriving = Arriving { peer: peer.clone(), user, sent: received, node: node.clone(), done };
        shared.lock_arriving().insert(id, arriving);
        let asked = Message::HandOver { id, from: shared.node.to_string(), to: user, e: epoch, r: received };
        let answer = match shared.publish(node, &asked, None) {
            Ok(()) => tokio::time::timeout(COMMAND_TIMEOUT, answer).await,
            Err(_) => Ok(Ok(None)),
        };
        shared.lock_arriving().remove(&id);
        match answer {
            Ok(Ok(Some(state))) => Ok(Some(state)),
            Ok(_) => {
                shared.users.remove_if(&user, |_, held| Arc::ptr_eq(held, peer));
                Ok(None)
            }
            Err(_) => {
                shared.users.remove_if(&user, |_, held| Arc::ptr_eq(held, peer));
                Err(ErrorCode::Busy)
            }
        }
    }

    /// This node's id in the cluster.
    pub fn node(&self) -> &str {
        &self.shared.node
    }

    fn redis(&self) -> ConnectionManager {
        self.redis.clone()
    }

    fn local_group_added(&self, group: GroupId, user: UserId) {
        self.shared.local_group_added(group, user);
    }

    fn local_group_removed(&self, group: GroupId, user: UserId) {
        self.shared.local_group_removed(group, user);
    }

    fn target(&self, node: &str, user: UserId) -> Option<NodeTarget> {
        if *node == *self.shared.node {
            return self.shared.local(user).map(NodeTarget::Local);
        }
        Some(NodeTarget::Remote(Remote { node: node.into(), user, shared: self.shared.clone() }))
    }
}

/// Whether a script that failed may still run in Redis: the node stopped
/// waiting for the answer (a loaded or stalled Redis), but the script had
/// been sent. A refused or dropped connection never ran it. What a late
/// `init` or `create` would leave (an id, a group nobody knows of) is
/// cleaned up afterwards; a late `join` is recorded when the client tries
/// again (the script answers "in already"), or left when its session ends.
fn may_run_late(error: &redis::RedisError) -> bool {
    error.is_timeout()
}

/// Redis failing is the caller's Busy: try again later.
fn unavailable(error: redis::RedisError) -> ErrorCode {
    warn!(%error, "redis unavailable");
    ErrorCode::Busy
}

impl Router for RedisRouter {
    type Target = NodeTarget;

    async fn init(&self, peer: Arc<PeerHandle>) -> Result<UserId, ErrorCode> {
        loop {
            let id = UserId::random();
            let set: i64 = self
                .scripts
                .init
                .arg(PREFIX)
                .arg(id.to_string())
                .arg(&*self.shared.node)
                .invoke_async(&mut self.redis())
                .await
                .map_err(|error| {
                    if may_run_late(&error) {
                        // The client tries again with another id: this one goes.
                        self.shared.lock_unfinished().push(Unfinished::Remove(id));
                    }
                    unavailable(error)
                })?;
            if set == 1 {
                self.shared.users.insert(id, peer);
                return Ok(id);
            }
        }
    }

    async fn find(&self, user: UserId) -> Option<NodeTarget> {
        if let Some(peer) = self.shared.users.get(&user) {
            return Some(NodeTarget::Local(peer.clone()));
        }
        let node: Option<String> = self.redis().get(user_key(user)).await.ok()?;
        self.target(&node?, user)
    }

    async fn remove(&self, user: UserId) {
        self.shared.users.remove(&user);
        let mut redis = self.redis();
        let mut removed = self.scripts.remove.arg(PREFIX);
        removed.arg(user.to_string()).arg(&*self.shared.node);
        if let Err(error) = removed.invoke_async::<()>(&mut redis).await {
            warn!(%error, %user, "could not release the user id: again on the next heartbeat");
            self.shared.lock_unfinished().push(Unfinished::Remove(user));
        }
    }

    async fn create(&self, owner: UserId, capability: Capability, intro: Introduction) -> Result<GroupId, ErrorCode> {
        let intro = intro_text(&intro);
        loop {
            let id = GroupId::random();
            let created: i64 = self
                .scripts
                .create
                .arg(PREFIX)
                .arg(id.to_string())
                .arg(owner.to_string())
                .arg(&*self.shared.node)
                .arg(capability.bits())
                .arg(&intro)
                .invoke_async(&mut self.redis())
                .await
                .map_err(|error| {
                    if may_run_late(&error) {
                        // Nobody knows this id: if Redis made the group,
                        // its only member leaves and it is gone.
                        self.shared.lock_unfinished().push(Unfinished::Leave(id, owner));
                    }
                    unavailable(error)
                })?;
            if created == 1 {
                self.shared.mirrors.insert(id, Mirror::new(1, vec![owner]));
                self.local_group_added(id, owner);
                return Ok(id);
            }
        }
    }

    async fn join(&self, group: GroupId, entrant: Entrant, max_members: usize) -> Result<Joined, ErrorCode> {
        let Entrant { user, granted, room, intro } = entrant;
        let params = match &intro {
            Introduction::Id => format!("[\"{group}\",\"{user}\"]"),
            Introduction::Info(_) => format!("[\"{group}\",\"{user}\",{}]", intro_text(&intro)),
        };
        let (status, owner, capability, told): (i64, String, String, usize) = self
            .scripts
            .join
            .arg(PREFIX)
            .arg(group.to_string())
            .arg(user.to_string())
            .arg(&*self.shared.node)
            .arg(u8::from(granted))
            .arg(u8::from(room))
            .arg(max_members)
            .arg(intro_text(&intro))
            .arg(params)
            .invoke_async(&mut self.redis())
            .await
            .map_err(unavailable)?;
        match status {
            -1 => return Err(ErrorCode::GroupNotFound),
            -2 => return Err(ErrorCode::LimitExceeded),
            -3 => return Err(ErrorCode::PermissionDenied),
            _ => {}
        }
        let owner = owner.parse().map_err(|_| ErrorCode::GroupNotFound)?;
        let capability = capability.parse().ok().and_then(Capability::from_bits).ok_or(ErrorCode::GroupNotFound)?;
        let added = status == 1;
        // In already (0) may be a join of this session's that Redis ran
        // after the node had answered Busy: the hub records it now.
        self.local_group_added(group, user);
        if added {
            self.shared.routes.joined(group, user, self.shared.node.clone());
        }
        Ok(Joined { owner, capability, added, told })
    }

    async fn leave(&self, group: GroupId, user: UserId) -> Result<usize, ErrorCode> {
        let left = self
            .scripts
            .leave
            .arg(PREFIX)
            .arg(group.to_string())
            .arg(user.to_string())
            .invoke_async::<i64>(&mut self.redis())
            .await;
        let status = match left {
            Ok(status) => status,
            Err(error) => {
                // A session that ended (its handle closed first) cannot try
                // again: the heartbeat does, and its group count goes now.
                if self.shared.users.get(&user).is_none_or(|peer| peer.is_closed()) {
                    self.shared.lock_unfinished().push(Unfinished::Leave(group, user));
                    self.local_group_removed(group, user);
                    self.shared.routes.forget(group);
                }
                return Err(unavailable(error));
            }
        };
        // Not a member (any more) here too: a leave tried again after Busy
        // finds the first one done.
        self.local_group_removed(group, user);
        match status {
            -1 => Err(ErrorCode::GroupNotFound),
            -2 => Err(ErrorCode::NotAMember),
            told => {
                self.shared.routes.forget(group);
                Ok(usize::try_from(told).unwrap_or(0))
            }
        }
    }

    async fn get_members(&self, group: GroupId, user: UserId, with_info: bool) -> Result<Members, ErrorCode> {
        let [members, nodes, _, intros, _] = group_keys(group);
        let (list, is_member, intros): (Vec<String>, bool, HashMap<String, String>) = redis::pipe()
            .atomic()
            .lrange(members, 0, -1)
            .hexists(nodes, user.to_string())
            .hgetall(intros)
            .query_async(&mut self.redis())
            .await
            .map_err(unavailable)?;
        if list.is_empty() {
            return Err(ErrorCode::GroupNotFound);
        }
        if !is_member {
            return Err(ErrorCode::NotAMember);
        }
        let ids = list.iter().filter_map(|m| m.parse().ok());
        if !with_info {
            return Ok(Members::Ids(ids.collect()));
        }
        let info = |user: &UserId| {
            let text = intros.get(&user.to_string())?;
            serde_json::from_str::<Option<serde_json::Value>>(text).ok().flatten()
        };
        Ok(Members::WithInfo(ids.map(|user_id| MemberInfo { info: info(&user_id), user_id }).collect()))
    }

    async fn route(&self, group: GroupId, from: UserId, to: UserId) -> Result<NodeTarget, ErrorCode> {
        let routes = &self.shared.routes;
        let kept = if routes.clear(from) { routes.get(group) } else { None };
        let route = match kept {
            Some(route) => route,
            None => {
                // In line behind every relay of this caller still waiting
                // for its route: one that found a kept route would overtake
                // them. The turn goes with the target, given up once the
                // relay is sent on.
                let turn = routes.wait_turn(from).await;
                let route = match routes.get(group) {
                    Some(route) => route,
                    None => {
                        let mark = routes.mark(group);
                        let route = Arc::new(self.read_route(group).await?);
                        // `from` is on this node: while it is a member, this
                        // node hears of every change (see `Routes`).
                        if route.nodes.contains_key(&from) {
                            routes.keep(group, route.clone(), mark);
                        }
                        route
                    }
                };
                let target = self.route_in(&route, from, to)?;
                return Ok(NodeTarget::InLine(Box::new(target), Arc::new(InLine(Mutex::new(Some(turn))))));
            }
        };
        self.route_in(&route, from, to)
    }

    /// [`route`](Router::route) when this node keeps the group's route and
    /// no relay of the caller waits for one (it would be overtaken): no
    /// Redis call, so a relay between two members on this node can take the
    /// hub's path without a task. `None`: ask `route`.
    fn route_now(&self, group: GroupId, from: UserId, to: UserId) -> Option<Result<NodeTarget, ErrorCode>> {
        let routes = &self.shared.routes;
        if !routes.clear(from) {
            return None;
        }
        let route = routes.get(group)?;
        Some(self.route_in(&route, from, to))
    }

    fn stats(&self) -> HubStats {
        HubStats { users: self.shared.users.len(), groups: self.shared.local_groups.len() }
    }

    fn serve_sessions(&self, sessions: Weak<dyn Sessions>) {
        let _ = self.shared.sessions.set(sessions);
    }

    async fn resumable(&self, user: UserId, grants: &str) {
        let mut resumable = self.scripts.resumable.arg(PREFIX);
        resumable.arg(user.to_string()).arg(&*self.shared.node).arg(grants);
        if let Err(error) = resumable.invoke_async::<()>(&mut self.redis()).await {
            // The session still resumes on this node; only outliving it is lost.
            warn!(%error, %user, "could not keep the session resumable on other nodes");
        }
    }

    async fn take_over(
        &self,
        user: UserId,
        epoch: u64,
        received: u64,
        peer: Arc<PeerHandle>,
    ) -> Result<Option<Arrival>, ErrorCode> {
        let _taking_over = TakingOver::new(&self.shared, user);
        let mut redis = self.redis();
        let Some(node) = redis.get::<_, Option<String>>(user_key(user)).await.map_err(unavailable)? else {
            return Ok(None);
        };
        if *node == *self.shared.node {
            // Ours, but not among the hub's sessions: over.
            return Ok(None);
        }
        let alive: bool = redis.exists(format!("{PREFIX}alive:{node}")).await.map_err(unavailable)?;
        let node: Arc<str> = node.into();
        let state = if alive {
            let Some(state) = self.ask_hand_over(&node, user, epoch, received, &peer).await? else {
                return Ok(None);
            };
            Some(state)
        } else {
            None
        };
        let mut take_over = self.scripts.take_over.arg(PREFIX);
        take_over.arg(user.to_string()).arg(&*node).arg(&*self.shared.node).arg(u8::from(state.is_none()));
        for group in state.iter().flat_map(|state| &state.groups) {
            take_over.arg(group.to_string());
        }
        let taken = take_over.invoke_async::<(i64, String, Vec<String>)>(&mut redis).await;
        let (status, grants, groups) = match taken {
            Ok(taken) => taken,
            Err(error) => {
                self.shared.users.remove_if(&user, |_, held| Arc::ptr_eq(held, &peer));
                return Err(unavailable(error));
            }
        };
        if status != 1 {
            self.shared.users.remove_if(&user, |_, held| Arc::ptr_eq(held, &peer));
            return Ok(None);
        }
        let groups: Vec<GroupId> = groups.iter().filter_map(|g| g.parse().ok()).collect();
        for group in &groups {
            self.local_group_added(*group, user);
            self.shared.routes.forget(*group);
        }
        let position = match state {
            Some(state) => Position { received: state.received, replayed: state.replayed, next_call: state.next_call },
            None => {
                // Its node is gone, and with it what the session had sent and
                // received: the count goes on from the client's.
                let position = Position { received: 0, replayed: false, next_call: 1 };
                peer.continue_from(received, Vec::new(), position, drop);
                self.shared.users.insert(user, peer);
                position
            }
        };
        debug!(%user, from = %node, replayed = position.replayed, "took the session over");
        Ok(Some(Arrival { groups, position, grants: (!grants.is_empty()).then_some(grants) }))
    }
}

/// Publishes what is queued, in order, a pipeline per batch, the batch's
/// messages to one node joined into as few payloads as [`MAX_PAYLOAD`]
/// allows: one PUBLISH for Redis to run and one push for that node to read
/// instead of one each. A batch Redis refuses is lost: its calls fail at
/// once with PeerGone, its notifications are dropped (as for a client that
/// went away).
async fn publisher(mut redis: ConnectionManager, mut queued: mpsc::UnboundedReceiver<Outgoing>, shared: Arc<Shared>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queued.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let count = batch.len() as u64;
        let calls: Vec<u64> = batch.iter().filter_map(|message| message.call).collect();
        let mut pipe = redis::pipe();
        for (channel, payload) in joined(batch.drain(..)) {
            pipe.publish(channel, payload).ignore();
        }
        if let Err(error) = pipe.query_async::<()>(&mut redis).await {
            warn!(%error, lost = count, "publish failed");
            for call in calls {
                shared.answer(call, Reply::Unavailable);
            }
        }
        shared.published.done.fetch_add(count, Ordering::AcqRel);
        shared.published.batch_done.notify_waiters();
    }
}

/// A payload published to a node's channel stops growing at this size (a
/// message larger than it goes on its own): big enough to carry many small
/// relays in one, small enough that a subscriber's buffer in Redis never
/// holds much more than the messages themselves.
const MAX_PAYLOAD: usize = 64 * 1024;

/// `messages` as payloads to publish, in order: each message appended to
/// the last payload for its channel while that stays under
/// [`MAX_PAYLOAD`]. A channel's messages keep their order; different
/// channels' have none to keep.
fn joined(messages: impl Iterator<Item = Outgoing>) -> Vec<(String, String)> {
    let mut payloads: Vec<(Arc<str>, String)> = Vec::new();
    for Outgoing { node, payload, .. } in messages {
        match payloads.iter_mut().rev().find(|(to, _)| *to == node) {
            Some((_, open)) if open.len() + payload.len() <= MAX_PAYLOAD => open.push_str(&payload),
            _ => payloads.push((node, payload)),
        }
    }
    payloads.into_iter().map(|(node, payload)| (channel(&node), payload)).collect()
}

/// Reads again the groups whose [`Mirror`] holds changes (woken when one
/// does), all at once in one transaction, and tells the members here what
/// they missed. While Redis cannot be read, tries again every heartbeat.
/// (It reads `local_groups` before it takes a mirror's lock, never under
/// it: `local_group_added` takes them the other way round.)
async fn resyncer(mut redis: ConnectionManager, shared: Arc<Shared>) {
    loop {
        shared.resync.notified().await;
        loop {
            let groups: Vec<GroupId> =
                shared.mirrors.iter().filter(|mirror| mirror.held.is_some()).map(|mirror| *mirror.key()).collect();
            if groups.is_empty() {
                break;
            }
            let read = match read_groups(&mut redis, &groups).await {
                Ok(read) => read,
                Err(error) => {
                    warn!(%error, "could not read groups again: tried again at the next heartbeat");
                    tokio::time::sleep(HEARTBEAT).await;
                    continue;
                }
            };
            for (group, read) in groups.into_iter().zip(read) {
                let here: Vec<UserId> =
                    shared.local_groups.get(&group).map(|here| here.iter().copied().collect()).unwrap_or_default();
                let Entry::Occupied(mut mirror) = shared.mirrors.entry(group) else { continue };
                match read {
                    Some(read) => {
                        mirror.get_mut().adopt(read, &here, &|to, m, p| notify_each(&shared, to, m, p));
                    }
                    // Gone (Redis lost it): nothing left to tell.
                    None => {
                        mirror.remove();
                    }
                }
                shared.routes.forget(group);
            }
        }
    }
}

/// `groups` as Redis has them now, in one transaction: `None` for a group
/// that is gone.
async fn read_groups(redis: &mut ConnectionManager, groups: &[GroupId]) -> redis::RedisResult<Vec<Option<Read>>> {
    let mut pipe = redis::pipe();
    pipe.atomic();
    for group in groups {
        let [members, _, _, intros, version] = group_keys(*group);
        pipe.lrange(members, 0, -1).get(version).hgetall(intros);
    }
    let values: Vec<Value> = pipe.query_async(redis).await?;
    let mut read = Vec::with_capacity(groups.len());
    for (group, values) in groups.iter().zip(values.chunks(3)) {
        let (members, version, intros): (Vec<String>, Option<u64>, HashMap<String, String>) =
            redis::from_redis_value(Value::Array(values.to_vec()))?;
        let members = members.iter().filter_map(|member| member.parse().ok()).collect();
        read.push(version.map(|version| Read { group: *group, version, members, intros }));
    }
    Ok(read)
}

/// Ends the calls to other nodes whose answer did not come within the call
/// timeout (RelayTimeout for their relays): a call made without a task has
/// nobody else to time it out. Sleeps until the first call's deadline (the
/// earliest: see [`Waiting`]), or until a call is made while none waited.
async fn expire_calls(shared: Arc<Shared>) {
    loop {
        let first = shared.lock_calls().first_key_value().map(|(_, waiter)| waiter.deadline);
        match first {
            Some(deadline) => tokio::time::sleep_until(deadline).await,
            None => {
                shared.calls_made.notified().await;
                continue;
            }
        }
        let now = tokio::time::Instant::now();
        loop {
            let expired = {
                let mut calls = shared.lock_calls();
                match calls.first_entry() {
                    Some(first) if first.get().deadline <= now => first.remove(),
                    _ => break,
                }
            };
            // Outside the lock, as every answer.
            expired.answer.give(Reply::Timeout);
        }
    }
}

/// Handles what Redis pushed on this node's channel, one message at a time,
/// in order (a payload holds one message or more, one after the other).
/// Runs in the Redis connection's task: nothing here waits.
fn receive(push: PushInfo, shared: &Arc<Shared>) {
    if matches!(push.kind, PushKind::Disconnection | PushKind::Subscribe) {
        // Whatever was published while the channel was down is lost: the
        // kept routes go, and every group with members here is read again
        // (off the channel, and once more back on it), the changes told
        // from now on held until then.
        shared.routes.forget_all();
        for mut mirror in shared.mirrors.iter_mut() {
            mirror.held.get_or_insert_with(Vec::new);
        }
        shared.resync.notify_one();
    }
    if push.kind == PushKind::Disconnection {
        // So are the answers of calls to other nodes: each ends now (Busy,
        // as a call that cannot go through Redis), not at its timeout.
        shared.end_calls(|_| true, || Reply::Unavailable);
    }
    if push.kind != PushKind::Message {
        return;
    }
    let Some(Value::BulkString(payload)) = push.data.get(1) else { return };
    for message in serde_json::Deserializer::from_slice(payload).into_iter::<Message>() {
        match message {
            Ok(message) => handle(message, shared),
            Err(error) => {
                warn!(%error, "unreadable cluster message");
                break;
            }
        }
    }
}

/// The group and the member of `member_joined`/`member_left` params,
/// `["<group>","<user>"…]`.
fn member_of(params: &str) -> Option<(GroupId, UserId)> {
    let mut ids = params.strip_prefix("[\"")?.splitn(4, '"');
    let group = ids.next()?.parse().ok()?;
    let user = ids.nth(1)?.parse().ok()?;
    Some((group, user))
}

fn handle(message: Message, shared: &Arc<Shared>) {
    match message {
        Message::Notify { to, m, p, j, v } => {
            let change = match m.as_str() {
                method::MEMBER_JOINED | method::MEMBER_LEFT => member_of(p.get()),
                _ => None,
            };
            if let Some((group, user)) = change {
                let joined = m == method::MEMBER_JOINED;
                // The route changes before the members hear of the change:
                // a relay they make on hearing it finds it changed.
                match (joined, j) {
                    (true, Some(node)) => shared.routes.joined(group, user, node.into()),
                    (true, None) => shared.routes.forget(group),
                    (false, _) => shared.routes.left(group, user),
                }
                if let Some(version) = v
                    && let Some(mut mirror) = shared.mirrors.get_mut(&group)
                {
                    let change = Change { version, user, to, method: m, params: p, told: false };
                    if mirror.take(change, &|to, m, p| notify_each(shared, to, m, p)) {
                        shared.routes.forget(group);
                        shared.resync.notify_one();
                    }
                    return;
                }
            }
            notify_each(shared, &to, &m, p.get());
        }
        Message::Call { id, from, to, m, p, ms: _ } => call(shared, id, from, to, &m, &p),
        Message::Answer { id, a } => shared.answer(id, a),
        Message::HandOver { id, from, to, e, r } => hand_over(shared, id, from.into(), to, e, r),
        Message::Handed { id, s } => arrived(shared, id, s),
        Message::Frame { to, f } => {
            if let Some(peer) = shared.users.get(&to) {
                // A full queue disconnects that client, as for any frame.
                let _ = peer.send_frame(f);
            }
        }
        Message::Response { to, f } => {
            if let Some(peer) = shared.forwarding.get(&to)
                && let Incoming::Response(response) = wire::classify(&f)
            {
                peer.complete(&response);
            }
        }
        Message::Forget { g } => shared.routes.forget(g),
        Message::Cancel { id, from } => {
            // Outside the lock: the call ends at once, and its end takes
            // its entry off.
            let running = shared.lock_running().remove(&(from.into(), id)).flatten();
            if let Some((peer, call)) = running {
                peer.cancel_call(call);
            }
        }
    }
}

/// A [`Message::Call`] as published, written by hand: the params (the
/// hub's, valid JSON) go in as they are, neither checked nor copied again.
/// Node ids, user ids and method names need no escaping.
fn call_payload(id: u64, from: &str, to: UserId, method: &str, params: &[&str], ms: u64) -> String {
    let mut payload = String::with_capacity(params.iter().map(|part| part.len()).sum::<usize>() + 128);
    let _ = write!(payload, r#"{{"c":{{"id":{id},"from":"{from}","to":"{to}","m":"{method}","p":"#);
    params.iter().for_each(|part| payload.push_str(part));
    let _ = write!(payload, r#","ms":{ms}}}}}"#);
    debug_assert!(serde_json::from_str::<Message>(&payload).is_ok(), "{payload}");
    payload
}

/// A [`Message::Notify`] to one user, written by hand as [`call_payload`]
/// is (a relay sent as a notification: an ICE candidate, say).
fn notify_payload(to: UserId, method: &str, params: &str) -> String {
    let mut payload = String::with_capacity(params.len() + 80);
    let _ = write!(payload, r#"{{"n":{{"to":["{to}"],"m":"{method}","p":{params}}}}}"#);
    debug_assert!(serde_json::from_str::<Message>(&payload).is_ok(), "{payload}");
    payload
}

/// A [`Message::Answer`] with the client's result or error object, written
/// by hand: copied once, as it came.
fn answer_payload(id: u64, answer: AnswerRef<'_>) -> String {
    let (kind, raw) = match answer {
        Ok(result) => ("ok", result.get()),
        Err(error) => ("err", error.get()),
    };
    let mut payload = String::with_capacity(raw.len() + 48);
    let _ = write!(payload, r#"{{"a":{{"id":{id},"a":{{"{kind}":{raw}}}}}}}"#);
    payload
}

/// Node `from`'s call `id` to `to`, a session here: made without a task
/// ([`PeerHandle::call_then`]: the frame is queued at once, so calls reach
/// the client in the order they came, and the call times out with the
/// session's own call timeout, the one every node is given), its answer
/// published back by whichever task learns it. A call the caller cancelled
/// is not answered: nobody waits.
fn call(shared: &Arc<Shared>, id: u64, from: String, to: UserId, method: &str, params: &RawValue) {
    let from: Arc<str> = from.into();
    let Some(peer) = shared.users.get(&to).map(|peer| peer.clone()) else {
        let _ = shared.publish(&from, &Message::Answer { id, a: Reply::Gone }, None);
        return;
    };
    let key = (from, id);
    // Named before the call is made, so that a cancel read right after
    // finds it, and the call's end (which may come at once) takes it off.
    shared.lock_running().insert(key.clone(), None);
    let answering = Arc::downgrade(shared);
    let then_key = key.clone();
    let then: Then = Box::new(move |answer| {
        let Some(shared) = answering.upgrade() else { return };
        shared.lock_running().remove(&then_key);
        let (from, id) = then_key;
        let reply = match answer {
            Ok(answer) => {
                let _ = shared.publish_payload(&from, answer_payload(id, answer), None);
                return;
            }
            Err(CallFailed::Cancelled) => return,
            Err(CallFailed::Gone) => Reply::Gone,
            Err(CallFailed::Timeout) => Reply::Timeout,
            Err(CallFailed::TooLarge) => Reply::TooLarge,
            Err(CallFailed::MemoryBudget) => Reply::MemoryBudget,
            Err(CallFailed::Unavailable) => Reply::Unavailable,
        };
        let _ = shared.publish(&from, &Message::Answer { id, a: reply }, None);
    });
    let call = peer.call_then(method, params.get(), then);
    if let Some(running @ None) = shared.lock_running().get_mut(&key) {
        *running = Some((peer, call));
    }
}

/// Another node resumes a session of this one: the hub gives it up (an
/// open connection closes with 4001), its state goes there, and for a
/// relay timeout what is still sent to it here follows (see [`forward`]).
fn hand_over(shared: &Arc<Shared>, id: u64, from: Arc<str>, user: UserId, epoch: u64, received: u64) {
    let _handing_over = HandingOver::new(&shared.published);
    let sessions = shared.sessions.get().and_then(Weak::upgrade);
    let Some(departure) = sessions.and_then(|sessions| sessions.depart(user, epoch, received)) else {
        let _ = shared.publish(&from, &Message::Handed { id, s: None }, None);
        return;
    };
    let Departure { frames, position, groups, grants, peer } = departure;
    shared.users.remove_if(&user, |_, held| Arc::ptr_eq(held, &peer));
    shared.forwarding.insert(user, peer.clone());
    for group in &groups {
        shared.local_group_removed(*group, user);
    }
    let Position { received, replayed, next_call } = position;
    let state = HandedOver { frames, received, replayed, next_call, groups: groups.clone(), grants };
    let _ = shared.publish(&from, &Message::Handed { id, s: Some(state) }, None);
    tokio::spawn(forward(shared.clone(), user, from, peer));
}

/// Forwards what is queued to a session handed over to `node`, in order
/// and after its state (one publisher), for a relay timeout: by then every
/// request it had running here is answered and every call to it is over.
/// Then the handle goes; if the other node never took the session over,
/// its user leaves its groups as in v1 rather than stay a ghost.
async fn forward(shared: Arc<Shared>, user: UserId, node: Arc<str>, peer: Arc<PeerHandle>) {
    let until = tokio::time::sleep(shared.call_timeout);
    tokio::pin!(until);
    loop {
        tokio::select! {
            frame = peer.next_frame() => {
                let _ = shared.publish(&node, &Message::Frame { to: user, f: frame }, None);
            }
            () = &mut until => break,
        }
    }
    shared.forwarding.remove_if(&user, |_, held| Arc::ptr_eq(held, &peer));
    // Calls made here without a task of their own time out as they would
    // have (this handle has no connection to find their deadlines).
    peer.expire_calls(tokio::time::Instant::now());
    peer.close(CloseReason::RESUMED_ELSEWHERE);
    shared.lock_unfinished().push(Unfinished::Abandoned(user));
}

/// The answer to a hand-over this node asked for: the frames to replay are
/// queued before anything forwarded after them (the same channel, in
/// order), then the take-over carries on.
fn arrived(shared: &Arc<Shared>, id: u64, state: Option<HandedOver>) {
    let Some(arriving) = shared.lock_arriving().remove(&id) else { return };
    let Arriving { peer, user, sent, node, done } = arriving;
    let state = state.map(|mut state| {
        let position = Position { received: state.received, replayed: state.replayed, next_call: state.next_call };
        let answers = Arc::downgrade(shared);
        peer.continue_from(sent, std::mem::take(&mut state.frames), position, move |frame| {
            if let Some(shared) = answers.upgrade() {
                let _ = shared.publish(&node, &Message::Response { to: user, f: frame }, None);
            }
        });
        state
    });
    let _ = done.send(state);
}

/// Does again, in order, the clean-ups Redis did not take; keeps those it
/// still does not.
async fn finish(redis: &mut ConnectionManager, shared: &Shared, scripts: &Scripts) {
    let unfinished = std::mem::take(&mut *shared.lock_unfinished());
    let mut still = Vec::new();
    for job in unfinished {
        if !still.is_empty() {
            // Redis failed just now: keep the order, try next beat.
            still.push(job);
            continue;
        }
        let done = match job {
            Unfinished::Leave(group, user) => {
                let mut leave = scripts.leave.arg(PREFIX);
                leave.arg(group.to_string()).arg(user.to_string()).invoke_async::<i64>(redis).await.map(drop)
            }
            Unfinished::Remove(user) => {
                let mut remove = scripts.remove.arg(PREFIX);
                remove.arg(user.to_string()).arg(&*shared.node).invoke_async::<()>(redis).await
            }
            Unfinished::Abandoned(user) => {
                let mut abandon = scripts.abandon.arg(PREFIX);
                abandon.arg(user.to_string()).arg(&*shared.node).invoke_async::<i64>(redis).await.map(drop)
            }
        };
        if let Err(error) = done {
            warn!(%error, "clean-up failed again");
            still.push(job);
        }
    }
    if !still.is_empty() {
        let mut unfinished = shared.lock_unfinished();
        still.append(&mut unfinished);
        *unfinished = still;
    }
}

/// Keeps `alive:{node}` set while the node runs, and reaps the nodes whose
/// heartbeat is gone: a node that stopped is noticed within
/// its heartbeat TTL + [`HEARTBEAT`]. A node that finds it was reaped
/// itself (the mark REAP left, read and deleted with the beat; or no beat
/// for longer than a mark lives) fences: see [`fence`]. Not "was missing
/// from `nodes`": so is a node after Redis restarted empty, whose sessions
/// carry on.
async fn heartbeat(mut redis: ConnectionManager, shared: Arc<Shared>, scripts: Arc<Scripts>) {
    let node = shared.node.clone();
    let alive = |node: &str| format!("{PREFIX}alive:{node}");
    let nodes = format!("{PREFIX}nodes");
    let reaped = format!("{PREFIX}reaped:{node}");
    let ttl = u64::try_from(shared.heartbeat_ttl.as_millis()).unwrap_or(u64::MAX);
    let window = u64::try_from(shared.resume_window.as_millis()).unwrap_or(u64::MAX);
    let mark_ttl = u64::try_from(REAPED_MARK_TTL.as_millis()).unwrap_or(u64::MAX);
    let mut every = tokio::time::interval(HEARTBEAT);
    // Since when every heartbeat went through. Others are judged only once
    // that is a heartbeat TTL ago: after Redis was out for a while, every
    // node's key may have expired, and a live node must get the time to
    // beat again before anyone calls it stopped.
    let mut healthy_since: Option<tokio::time::Instant> = None;
    // When a heartbeat last went through, and whether a fence is still to
    // be done (Redis failed half-way: the mark is read already).
    let mut last_beat: Option<tokio::time::Instant> = None;
    let mut fencing = false;
    loop {
        every.tick().await;
        let mut beat = redis::pipe();
        beat.pset_ex(alive(&node), 1, ttl).ignore().sadd(&nodes, &*node).ignore().smembers(&nodes).get_del(&reaped);
        let (members, marked): (Vec<String>, Option<String>) = match beat.query_async(&mut redis).await {
            Ok(answer) => answer,
            Err(error) => {
                warn!(%error, "heartbeat failed");
                healthy_since = None;
                continue;
            }
        };
        // Out of touch for longer than a mark lives: it may have missed one.
        let lapsed = last_beat.is_some_and(|at| at.elapsed() > REAPED_MARK_TTL);
        last_beat = Some(tokio::time::Instant::now());
        if marked.is_some() || lapsed {
            warn!("this node was taken for stopped: it keeps only the sessions the cluster still has as its own");
            fencing = true;
        }
        if fencing {
            fencing = !fence(&mut redis, &shared).await;
        }
        finish(&mut redis, &shared, &scripts).await;
        if healthy_since.get_or_insert_with(tokio::time::Instant::now).elapsed() < shared.heartbeat_ttl {
            continue;
        }
        let mut alive_nodes = vec![&*node];
        for other in members.iter().filter(|other| **other != *node) {
            match redis.exists::<_, bool>(alive(other)).await {
                Ok(true) => alive_nodes.push(other),
                Ok(false) => {
                    let mut reap = scripts.reap.arg(PREFIX);
                    reap.arg(other).arg(window).arg(mark_ttl);
                    match reap.invoke_async::<i64>(&mut redis).await {
                        Ok(1) => {
                            warn!(node = %other, "node stopped: its resumable sessions are suspended, the others ended")
                        }
                        Ok(_) => {}
                        Err(error) => warn!(%error, "reaping failed"),
                    }
                }
                Err(error) => warn!(%error, "heartbeat failed"),
            }
        }
        // Relays waiting on a node that stopped end now, not at their timeout.
        shared.end_calls(|node| !alive_nodes.contains(&node), || Reply::Gone);
        match scripts.expire.arg(PREFIX).invoke_async::<i64>(&mut redis).await {
            Ok(0) => {}
            Ok(_) => warn!("a stopped node's resume window passed: its suspended sessions ended"),
            Err(error) => warn!(%error, "ending suspended sessions failed"),
        }
    }
}

/// This node was reaped while it still ran (its heartbeat lapsed: a long
/// pause, a cut to Redis). The cluster has ended its sessions that could
/// not resume, and suspended the others, which it ends too once the resume
/// window passes, and which their clients may have resumed on another node
/// meanwhile. Each session here is checked against the registry
/// (`user:{id}`), and the node keeps only what the cluster has as its own:
/// - still this node's (resumable, within the window): kept, as the
///   cluster does (a node back within the window keeps them: see EXPIRE);
/// - another node's (its client resumed there): it ends here without
///   leaving its groups, which are that node's now; an open connection
///   closes with 4001;
/// - nobody's: the session is over; its connection closes with 1012
///   ([`CloseReason::CUT_OFF`]), relays waiting on it end with PeerGone,
///   and its end here leaves nothing in Redis (it left its groups there
///   already) but a join made since the node came back.
///
/// A session a take-over is bringing here is left alone (Redis says it is
/// this node's only once the take-over's script ran), as is one that left
/// this node while Redis was asked. Kept routes are forgotten. `false`
/// when Redis failed: again on the next beat.
async fn fence(redis: &mut ConnectionManager, shared: &Shared) -> bool {
    shared.routes.forget_all();
    let held: Vec<(UserId, Arc<PeerHandle>)> = shared
        .users
        .iter()
        .filter(|entry| !shared.taking_over.contains_key(entry.key()))
        .map(|entry| (*entry.key(), entry.value().clone()))
        .collect();
    let sessions = shared.sessions.get().and_then(Weak::upgrade);
    let (mut kept, mut disowned, mut ended) = (0, 0, 0);
    for batch in held.chunks(FENCE_BATCH) {
        let keys: Vec<String> = batch.iter().map(|(user, _)| user_key(*user)).collect();
        let owners: Vec<Option<String>> = match redis::cmd("MGET").arg(&keys).query_async(redis).await {
            Ok(owners) => owners,
            Err(error) => {
                warn!(%error, "fencing failed: again on the next heartbeat");
                return false;
            }
        };
        for ((user, peer), owner) in batch.iter().zip(owners) {
            if !shared.users.get(user).is_some_and(|held| Arc::ptr_eq(&held, peer)) {
                // Ended or handed over meanwhile: what Redis said may be
                // that move's.
                continue;
            }
            match owner {
                Some(owner) if *owner == *shared.node => kept += 1,
                Some(_) => {
                    let groups = match &sessions {
                        Some(sessions) => sessions.disown(*user, peer),
                        None => {
                            peer.close(CloseReason::RESUMED_ELSEWHERE);
                            Vec::new()
                        }
                    };
                    shared.users.remove_if(user, |_, held| Arc::ptr_eq(held, peer));
                    for group in groups {
                        shared.local_group_removed(group, *user);
                    }
                    disowned += 1;
                }
                None => {
                    // Its connection's end runs the clean-up, as for any close.
                    peer.close(CloseReason::CUT_OFF);
                    ended += 1;
                }
            }
        }
    }
    warn!(kept, disowned, ended, "fenced: sessions the cluster no longer has as this node's are gone");
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outgoing(node: &str, payload: &str) -> Outgoing {
        Outgoing { node: node.into(), payload: payload.to_owned(), call: None }
    }

    fn read(payload: &str) -> Vec<Message> {
        serde_json::Deserializer::from_str(payload).into_iter::<Message>().collect::<Result<_, _>>().expect("messages")
    }

    #[test]
    fn a_batch_goes_as_one_payload_per_node_each_in_order() {
        let batch =
            [outgoing("a", "1"), outgoing("b", "2"), outgoing("a", "3"), outgoing("b", "4"), outgoing("a", "5")];
        let payloads = joined(batch.into_iter());
        assert_eq!(payloads, [(channel("a"), "135".to_owned()), (channel("b"), "24".to_owned())]);
    }

    #[test]
    fn a_payload_stops_growing_at_the_limit_and_order_holds() {
        let big = "x".repeat(MAX_PAYLOAD - 1);
        let batch = [outgoing("a", &big), outgoing("b", "1"), outgoing("a", "22"), outgoing("a", "3")];
        let payloads = joined(batch.into_iter());
        let expected = [(channel("a"), big), (channel("b"), "1".to_owned()), (channel("a"), "223".to_owned())];
        assert_eq!(payloads, expected);
    }

    #[test]
    fn messages_joined_in_a_payload_are_read_back_in_order_with_raw_params() {
        let params =
            RawValue::from_string("[\"g\",\"u\",{\"sdp\":\"v=0\\r\\n\",\n \"n\": [1, 2]}]".to_owned()).expect("json");
        let user = UserId::from_u128(7);
        let call = Message::Call { id: 1, from: "n0".to_owned(), to: user, m: "relay".to_owned(), p: params, ms: 5 };
        let answer = Message::Answer {
            id: 1,
            a: Reply::Result(RawValue::from_string("{\"ok\":true}".to_owned()).expect("json")),
        };
        let error = RawValue::from_string("{\"code\":1}".to_owned()).expect("json");
        let payload = [&call, &answer].map(|m| serde_json::to_string(m).expect("encodes")).concat()
            // The hot two, written by hand.
            + &call_payload(2, "n0", user, "relay", &["[\"g\",", "\"u\",", "{\"a\":\"\\\"\"}]"], 5)
            + &answer_payload(2, Err(&error))
            + &notify_payload(user, "relay", "[\"g\",\"u\",1]");
        match read(&payload).as_slice() {
            [
                Message::Call { id: 1, to, m, p, .. },
                Message::Answer { id: 1, a: Reply::Result(result) },
                Message::Call { id: 2, from, to: to_2, m: m_2, p: p_2, ms: 5 },
                Message::Answer { id: 2, a: Reply::Error(error_2) },
                Message::Notify { to: notified, m: m_3, p: p_3, j: None, v: None },
            ] => {
                assert_eq!(
                    (notified.as_slice(), m_3.as_str(), p_3.get()),
                    ([user].as_slice(), "relay", "[\"g\",\"u\",1]")
                );
                assert_eq!((*to, m.as_str()), (user, "relay"));
                // Passed through as sent, whitespace and escapes included.
                assert_eq!(p.get(), "[\"g\",\"u\",{\"sdp\":\"v=0\\r\\n\",\n \"n\": [1, 2]}]");
                assert_eq!(result.get(), "{\"ok\":true}");
                assert_eq!((from.as_str(), *to_2, m_2.as_str()), ("n0", user, "relay"));
                assert_eq!(p_2.get(), "[\"g\",\"u\",{\"a\":\"\\\"\"}]");
                assert_eq!(error_2.get(), "{\"code\":1}");
            }
            other => panic!("read back {other:?}"),
        }
    }

    /// A kept route follows joins and leaves in place; an owner's leave,
    /// or a change while a route was read, leaves nothing kept.
    #[test]
    fn kept_routes_follow_joins_and_leaves_until_the_owner_leaves() {
        let routes = Routes::default();
        let (group, other) = (GroupId::from_u128(1), GroupId::from_u128(2));
        let [owner, b, c] = [1, 2, 3].map(UserId::from_u128);
        let route = |members: &[UserId]| Route {
            capability: Capability::DEFAULT,
            owner: Some(owner),
            nodes: members.iter().map(|user| (*user, Arc::from("a"))).collect(),
        };
        let mark = routes.mark(group);
        routes.joined(group, b, "a".into());
        routes.keep(group, Arc::new(route(&[owner])), mark);
        assert!(routes.get(group).is_none(), "changed while read: not kept");

        routes.keep(group, Arc::new(route(&[owner])), routes.mark(group));
        let held = routes.get(group).unwrap();
        routes.joined(group, b, "b".into());
        routes.joined(group, c, "a".into());
        routes.left(group, c);
        let kept = routes.get(group).unwrap();
        assert_eq!(kept.nodes.len(), 2);
        assert_eq!(kept.nodes.get(&b).map(|node| &**node), Some("b"));
        assert_eq!(held.nodes.len(), 1, "a relay's route is its own");

        routes.keep(other, Arc::new(route(&[owner, b])), routes.mark(other));
        routes.left(group, owner);
        assert!(routes.get(group).is_none(), "the owner left: the next member owns the group");
        assert!(routes.get(other).is_some());
        routes.forget_all();
        assert!(routes.get(other).is_none());
    }

    /// A mirror tells changes in order, drops those told before, holds
    /// them from a missing one until the group is read, then tells the
    /// difference and what came after.
    #[test]
    fn a_mirror_tells_changes_in_order_and_the_difference_after_a_gap() {
        let group = GroupId::from_u128(1);
        let [a, b, c, d] = [1, 2, 3, 4].map(UserId::from_u128);
        let frames = Mutex::new(Vec::new());
        // Who is told (a, or a and c) and what.
        let tell = |to: &[UserId], m: &str, p: &str| {
            let to: Vec<String> = to.iter().map(|user| if *user == a { "a" } else { "c" }.to_owned()).collect();
            frames.lock().unwrap().push(format!("{} {m} {p}", to.join("+")));
        };
        let told = || std::mem::take(&mut *frames.lock().unwrap());
        let change = |version, user: UserId, joined| Change {
            version,
            user,
            to: vec![a],
            method: if joined { method::MEMBER_JOINED } else { method::MEMBER_LEFT }.to_owned(),
            params: RawValue::from_string(format!(r#"["{group}","{user}"]"#)).unwrap(),
            told: false,
        };
        let mut mirror = Mirror::new(1, vec![a]);
        assert!(!mirror.take(change(2, b, true), &tell));
        assert!(!mirror.take(change(2, b, true), &tell), "told before: dropped");
        assert_eq!(told(), [format!(r#"a member_joined ["{group}","{b}"]"#)]);
        // 3 (c joined with an info) and 4 (b left) lost; 5 (d joined) held.
        assert!(mirror.take(change(5, d, true), &tell), "a gap: read the group");
        assert!(!mirror.take(change(6, d, false), &tell));
        assert!(told().is_empty(), "held while the group is read");
        let intros = HashMap::from([(c.to_string(), r#"{"name":"c"}"#.to_owned())]);
        let read = Read { group, version: 4, members: vec![a, c], intros };
        assert!(mirror.adopt(read, &[a, c], &tell));
        assert_eq!(
            told(),
            [
                format!(r#"a+c member_left ["{group}","{b}"]"#),
                format!(r#"a member_joined ["{group}","{c}",{{"name":"c"}}]"#),
                format!(r#"a member_joined ["{group}","{d}"]"#),
                format!(r#"a member_left ["{group}","{d}"]"#),
            ]
        );
        assert_eq!((mirror.version, mirror.members.as_slice()), (6, [a, c].as_slice()));

        // Read for the first time: changes are told at once, and what was
        // read is taken as told.
        let mut fresh = Mirror::unread();
        assert!(!fresh.take(change(7, b, true), &tell));
        assert_eq!(told().len(), 1);
        assert!(fresh.adopt(Read { group, version: 6, members: vec![a, c], intros: HashMap::new() }, &[a], &tell));
        assert!(told().is_empty());
        assert_eq!((fresh.version, fresh.members.as_slice()), (7, [a, c, b].as_slice()));
    }

    /// The scripts write their messages by hand (`tell` and `TAKE_OVER` in
    /// the Lua above): the same shapes serde reads.
    #[test]
    fn the_scripts_messages_are_read() {
        let group = GroupId::from_u128(9);
        let user = UserId::from_u128(7);
        let left = format!(r#"{{"n":{{"to":["{user}"],"m":"member_left","p":["{group}","{user}"],"v":3}}}}"#);
        let joined =
            format!(r#"{{"n":{{"to":["{user}"],"m":"member_joined","p":["{group}","{user}",{{}}],"j":"b","v":4}}}}"#);
        let forget = format!(r#"{{"f":{{"g":"{group}"}}}}"#);
        match read(&format!("{left}{joined}{forget}")).as_slice() {
            [
                Message::Notify { to, m, p, j: None, v: Some(3) },
                Message::Notify { m: joined, p: joined_p, j: Some(on), v: Some(4), .. },
                Message::Forget { g },
            ] => {
                assert_eq!((to.as_slice(), m.as_str(), *g), ([user].as_slice(), "member_left", group));
                assert_eq!(member_of(p.get()), Some((group, user)));
                assert_eq!((joined.as_str(), on.as_str()), ("member_joined", "b"));
                assert_eq!(member_of(joined_p.get()), Some((group, user)));
            }
            other => panic!("read back {other:?}"),
        }
    }
}
