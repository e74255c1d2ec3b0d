//! `Dispatch`: what one end of a connection does with the frames it reads,
//! with no socket in it. Each frame is classified; a request spends the
//! connection's rate budget, takes a place among the requests running, is
//! run up to its first await on the reader's stack (so requests take effect
//! in arrival order) and spawned if still running; a batch's answers go out
//! as one array in the batch's order; responses go to the calls waiting for
//! them; every error answer's code goes to the [`Observer`].
//!
//! The server's connections, the Rust client's transport and the fuzz target
//! all dispatch through here; they keep the socket, the timers and the writes.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use jsonrpsee::core::server::{ConnectionId, Extensions, Methods};
use serde_json::value::RawValue;
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::warn;
use webrtc_p2p_interfaces::{ErrorCode, method};

use crate::hub::{Hub, Session, StartRelay};
use crate::limits::{Limit, RateLimiter};
use crate::memory;
use crate::observe::{Observer, Unobserved};
use crate::router::Router;
use crate::wire::{self, Incoming, Reply, Request, Response, Started, code};

/// Where a [`Dispatch`] sends its answers, and what it knows of the
/// connection's own calls.
pub trait Endpoint: Clone + Send + Sync + 'static {
    /// Queues a frame for the other end, without waiting.
    fn send(&self, frame: String);

    /// A response to one of this end's own calls arrived.
    fn complete(&self, response: &Response<'_>);

    /// What a request's method finds in its `Extensions`.
    fn extensions(&self) -> Extensions;

    /// The largest frame the other end takes: a batch's answer is kept
    /// within it.
    fn max_frame_size(&self) -> usize {
        usize::MAX
    }

    /// The hub session behind this end, if it is a server's connection: its
    /// `relay` requests then skip the method table (see [`Hub::start_relay`]).
    fn session(&self) -> Option<&Arc<Session>> {
        None
    }
}

/// The server's end of a connection: answers go to the client's queue, and
/// each request's methods find the session in their `Extensions`.
impl Endpoint for Arc<Session> {
    fn send(&self, frame: String) {
        let peer = self.peer();
        // An answer larger than the client takes (a relay target's answer
        // under a longer id) becomes an error it can read, with its id.
        let frame = if frame.len() > peer.max_frame_size() {
            too_large(wire::response_id(&frame), peer.max_frame_size()).frame
        } else if !peer.admits(frame.len()) {
            // Too large for what the server's memory budget has left: Busy
            // in its place, which is small and always fits.
            Reply::error(wire::response_id(&frame), memory::REFUSAL_CODE, memory::REFUSAL).frame
        } else {
            frame
        };
        // A full queue closes the connection; its read loop sees that next.
        let _ = peer.send_frame(frame);
    }

    fn max_frame_size(&self) -> usize {
        self.peer().max_frame_size()
    }

    fn complete(&self, response: &Response<'_>) {
        // Unknown or late ids are dropped: answering would break the client.
        self.peer().complete(response);
    }

    fn session(&self) -> Option<&Arc<Session>> {
        Some(self)
    }

    fn extensions(&self) -> Extensions {
        // Built per request rather than cloned from one kept per connection:
        // the same two allocations per request, and none held by idle
        // connections.
        let mut ext = Extensions::new();
        ext.insert(self.clone());
        ext
    }
}

/// One connection's incoming side.
#[derive(Debug)]
pub struct Dispatch<E> {
    /// The methods requests are run through.
    methods: Methods,
    /// jsonrpsee's id of the connection, for the methods.
    conn: ConnectionId,
    /// Where answers go.
    endpoint: E,
    /// Told of error answers and refused messages.
    observer: Arc<dyn Observer>,
    /// The connection's message budget (`None`: unlimited), shared with
    /// whatever charges the connection for work done on its behalf.
    rate: Option<Arc<RateLimiter>>,
    /// Requests in one batch at most.
    max_batch_len: usize,
    /// Requests started and not yet answered.
    running: Running,
    /// The hub behind `methods`, when they are its `Signaling` methods.
    hub: Option<Arc<dyn StartRelay>>,
}

impl<E: Endpoint> Dispatch<E> {
    /// Dispatches to `methods`, answering through `endpoint`; no limits, no
    /// observer.
    pub fn new(methods: Methods, conn: ConnectionId, endpoint: E) -> Self {
        Self {
            methods,
            conn,
            endpoint,
            observer: Arc::new(Unobserved),
            rate: None,
            max_batch_len: usize::MAX,
            running: Running::new(usize::MAX),
            hub: None,
        }
    }

    /// At most `max` requests running at once; past it a request is answered
    /// Busy and a notification is dropped, since waiting for a place would
    /// stop the reading of the answers those requests may be waiting for.
    pub fn max_running(mut self, max: usize) -> Self {
        self.running = Running::new(max);
        self
    }

    /// The requests started and not yet answered.
    pub fn running(&self) -> &Running {
        &self.running
    }

    /// Handles one text frame.
    pub fn text(&self, text: &str) {
        match wire::classify(text) {
            Incoming::Request(request) => self.request(request),
            Incoming::Response(response) => self.endpoint.complete(&response),
            Incoming::Batch(items) => {
                if self.within_rate() {
                    self.batch(&items);
                }
            }
            Incoming::Invalid { id, code, message } => {
                if self.within_rate() {
                    self.reply(Reply::error(id, code, &message));
                }
            }
        }
    }

    /// Handles one binary frame: read as if it were text.
    pub fn binary(&self, bytes: &[u8]) {
        match std::str::from_utf8(bytes) {
            Ok(text) => self.text(text),
            Err(_) => self.reply(Reply::error(None, code::PARSE_ERROR, "parse error: binary frame is not UTF-8")),
        }
    }

    /// Handles one request or notification: spends the rate budget, starts
    /// it, and queues its answer once there is one.
    pub fn request(&self, request: Request<'_>) {
        if !self.within_rate() {
            return self.refuse(request.id, "busy: rate limit exceeded");
        }
        let Some(running) = self.running.track() else {
            if request.id.is_none() {
                warn!(method = %request.method, "dropped a notification: too many requests running");
            }
            return self.refuse(request.id, &ErrorCode::Busy.to_string());
        };
        let Err(running) = self.relay_direct(&request, running) else { return };
        match self.start(request) {
            Started::Done(reply) => self.reply_some(reply),
            Started::Running(future) => {
                let this = self.answers();
                tokio::spawn(async move {
                    this.reply_some(future.await);
                    drop(running);
                });
            }
        }
    }

    /// Starts a batch's requests in order (each up to its first await, like
    /// single ones) and answers with one array in the same order, once all
    /// are done.
    fn batch(&self, items: &[&RawValue]) {
        if items.is_empty() {
            return self.reply(Reply::error(None, code::INVALID_REQUEST, "empty batch"));
        }
        if items.len() > self.max_batch_len {
            self.observer.refused(Limit::BatchLen);
            let message = format!("batch longer than {}", self.max_batch_len);
            return self.reply(Reply::error(None, code::INVALID_REQUEST, &message));
        }
        let Some(running) = self.running.track() else {
            return self.reply(Reply::error(None, ErrorCode::Busy.code(), &ErrorCode::Busy.to_string()));
        };
        let mut answers = Vec::with_capacity(items.len());
        // The batch's frame paid for its first element; every other element
        // pays its own, whatever it is (answers to our calls aside). Past the
        // budget a request is answered Busy and anything else dropped.
        for (at, item) in items.iter().enumerate() {
            let incoming = wire::classify_item(item);
            let paid = at == 0 || matches!(incoming, Incoming::Response(_)) || self.within_rate();
            match incoming {
                Incoming::Request(request) if !paid => {
                    let busy = request
                        .id
                        .map(|id| Reply::error(Some(id), ErrorCode::Busy.code(), "busy: rate limit exceeded"));
                    answers.push(Started::Done(busy));
                }
                _ if !paid => {}
                Incoming::Request(request) => {
                    let mut ext = self.endpoint.extensions();
                    ext.insert(wire::InBatch);
                    answers.push(wire::start(&self.methods, request, self.conn, ext));
                }
                Incoming::Response(response) => self.endpoint.complete(&response),
                Incoming::Invalid { id, code, message } => {
                    answers.push(Started::Done(Some(Reply::error(id, code, &message))));
                }
                Incoming::Batch(_) => {
                    answers.push(Started::Done(Some(Reply::error(None, code::INVALID_REQUEST, "a batch cannot nest"))));
                }
            }
        }
        let this = self.answers();
        tokio::spawn(async move {
            let frame = assemble(answers, &this).await;
            // A batch of notifications only gets no answer at all.
            if let Some(frame) = frame {
                this.endpoint.send(frame);
            }
            drop(running);
        });
    }

    /// The hot path, a relay between two clients of this server, without a
    /// task (see [`Hub::relay_direct`]); `running` back when it is not one.
    fn relay_direct(&self, request: &Request<'_>, running: RunningGuard) -> Result<(), RunningGuard> {
        match (&self.hub, self.endpoint.session(), request.params) {
            (Some(hub), Some(session), Some(params)) if request.method == method::RELAY => {
                hub.relay_direct(session, request.id, params, running)
            }
            _ => Err(running),
        }
    }

    fn start(&self, request: Request<'_>) -> Started {
        // The hot path, a relay between two clients of this server, goes
        // straight to the hub: same checks, answers and metrics, about half
        // the allocations (bench).
        if request.method == method::RELAY
            && let (Some(hub), Some(session), Some(params)) = (&self.hub, self.endpoint.session(), request.params)
            && let Some(started) = hub.start_relay(session, request.id, params)
        {
            return started;
        }
        wire::start(&self.methods, request, self.conn, self.endpoint.extensions())
    }

    /// Spends one message of the connection's rate budget; `false` once it
    /// is spent, until it comes back.
    fn within_rate(&self) -> bool {
        if self.rate.as_ref().is_none_or(|rate| rate.try_acquire(Instant::now())) {
            return true;
        }
        self.observer.refused(Limit::Rate);
        false
    }

    /// Answers a request past a limit with Busy (the client backs off the
    /// same way as from a relay past the in-flight limit); a notification
    /// past it is dropped without a word.
    fn refuse(&self, id: Option<&RawValue>, message: &str) {
        if let Some(id) = id {
            self.reply(Reply::error(Some(id), ErrorCode::Busy.code(), message));
        }
    }

    fn reply(&self, reply: Reply) {
        self.answers().reply(reply);
    }

    fn reply_some(&self, reply: Option<Reply>) {
        self.answers().reply_some(reply);
    }

    /// What a spawned request needs to answer.
    fn answers(&self) -> Answers<E> {
        Answers { endpoint: self.endpoint.clone(), observer: self.observer.clone() }
    }
}

impl Dispatch<Arc<Session>> {
    /// The server's dispatch for one connection's `session`: `methods` are
    /// the hub's `Signaling` methods; the hub's limits (rate, batch length)
    /// apply and its observer is told.
    pub fn for_session<R: Router>(hub: &Hub<R>, methods: Methods, conn: ConnectionId, session: Arc<Session>) -> Self {
        let limits = hub.limits();
        let rate = limits.rate_limiter().map(|fresh| session.rate(|| Arc::new(fresh)));
        Self {
            observer: hub.observer().clone(),
            rate,
            max_batch_len: limits.max_batch_len,
            hub: Some(Arc::new(hub.clone())),
            ..Self::new(methods, conn, session)
        }
    }
}

/// A batch's answer: one array, in the batch's order, no larger than the
/// other end takes. Answers are taken as they come (so a finished one waits
/// as a frame of its own size, never as more); one that does not fit in
/// what is left of the frame is replaced by a LimitExceeded error with its
/// id, so every request still gets its answer in one array.
async fn assemble<E: Endpoint>(answers: Vec<Started>, this: &Answers<E>) -> Option<String> {
    // Room kept for the errors that replace answers that do not fit.
    let max = this.endpoint.max_frame_size().saturating_sub(answers.len() * TOO_LARGE_ROOM);
    let mut frames: Vec<Option<String>> = vec![None; answers.len()];
    // "[" and "]", and a comma per answer.
    let mut size = 2 + answers.len();
    let mut running = FuturesUnordered::new();
    let mut take = |at: usize, reply: Option<Reply>, size: &mut usize| {
        let Some(mut reply) = reply else { return };
        if size.saturating_add(reply.frame.len()) > max {
            reply = too_large(wire::response_id(&reply.frame), max);
        }
        this.observe(&reply);
        *size += reply.frame.len();
        frames[at] = Some(reply.frame);
    };
    for (at, answer) in answers.into_iter().enumerate() {
        match answer {
            Started::Done(reply) => take(at, reply, &mut size),
            Started::Running(future) => running.push(async move { (at, future.await) }),
        }
    }
    while let Some((at, reply)) = running.next().await {
        take(at, reply, &mut size);
    }
    let frames: Vec<String> = frames.into_iter().flatten().collect();
    (!frames.is_empty()).then(|| format!("[{}]", frames.join(",")))
}

/// The bytes a [`too_large`] error takes with an id of up to ~60 bytes.
const TOO_LARGE_ROOM: usize = 200;

/// The answer in place of one larger than the other end takes.
fn too_large(id: Option<&RawValue>, max: usize) -> Reply {
    let message = format!("limit exceeded: the answer is larger than your {max}-byte message size limit");
    Reply::error(id, ErrorCode::LimitExceeded.code(), &message)
}

/// Where a request's answer goes, for requests that outlive their frame.
struct Answers<E> {
    endpoint: E,
    observer: Arc<dyn Observer>,
}

impl<E: Endpoint> Answers<E> {
    fn observe(&self, reply: &Reply) {
        if let Some(code) = reply.error {
            self.observer.error_sent(code);
        }
    }

    fn reply(&self, reply: Reply) {
        self.observe(&reply);
        self.endpoint.send(reply.frame);
    }

    fn reply_some(&self, reply: Option<Reply>) {
        if let Some(reply) = reply {
            self.reply(reply);
        }
    }
}

/// Counts one connection's requests from their start until their answers
/// are queued: the client's bound on handlers running at once, and how a
/// server shutting down lets them finish before the close frame.
#[derive(Debug, Clone)]
pub struct Running(Arc<RunningInner>);

#[derive(Debug)]
struct RunningInner {
    count: AtomicUsize,
    max: usize,
    finished: Notify,
}

/// Held by a running request until its answer is queued.
#[derive(Debug)]
pub(crate) struct RunningGuard(Running);

impl Running {
    pub(crate) fn new(max: usize) -> Self {
        Self(Arc::new(RunningInner { count: AtomicUsize::new(0), max, finished: Notify::new() }))
    }

    /// Counts one more request, unless `max` are running.
    pub(crate) fn track(&self) -> Option<RunningGuard> {
        let max = self.0.max;
        self.0.count.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1)).ok()?;
        Some(RunningGuard(self.clone()))
    }

    /// Whether no request is running.
    pub fn is_idle(&self) -> bool {
        self.0.count.load(Ordering::Acquire) == 0
    }

    /// Resolves once no request is running.
    pub async fn all_finished(&self) {
        loop {
            let finished = self.0.finished.notified();
            tokio::pin!(finished);
            finished.as_mut().enable();
            if self.is_idle() {
                return;
            }
            finished.await;
        }
    }
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        if self.0.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.0.finished.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use jsonrpsee::RpcModule;
    use jsonrpsee::types::ErrorObjectOwned;

    use super::*;

    /// What the observer was told.
    #[derive(Debug, Default)]
    struct Seen {
        errors: Mutex<Vec<i32>>,
        refused: Mutex<Vec<Limit>>,
    }

    impl Observer for Seen {
        fn error_sent(&self, code: i32) {
            self.errors.lock().unwrap().push(code);
        }

        fn refused(&self, limit: Limit) {
            self.refused.lock().unwrap().push(limit);
        }
    }

    /// The frames sent, in order.
    #[derive(Debug, Clone, Default)]
    struct Sent(Arc<Mutex<Vec<String>>>);

    impl Endpoint for Sent {
        fn send(&self, frame: String) {
            self.0.lock().unwrap().push(frame);
        }

        fn complete(&self, _: &Response<'_>) {}

        fn extensions(&self) -> Extensions {
            Extensions::new()
        }
    }

    #[tokio::test]
    async fn error_codes_reach_the_observer_typed_and_limits_refuse() {
        let mut module = RpcModule::new(());
        module.register_method::<Result<u8, ErrorObjectOwned>, _>("ok", |_, _, _| Ok(1)).unwrap();
        let seen = Arc::new(Seen::default());
        let sent = Sent::default();
        let dispatch = Dispatch {
            observer: seen.clone(),
            rate: RateLimiter::new(3, Duration::from_secs(60)).map(Arc::new),
            max_batch_len: 2,
            ..Dispatch::new(module.into(), ConnectionId(0), sent.clone())
        };
        dispatch.text(r#"{"jsonrpc":"2.0","id":1,"method":"ok"}"#);
        dispatch.text(r#"{"jsonrpc":"2.0","id":2,"method":"nope"}"#);
        dispatch.text("[1,2,3]");
        dispatch.text(r#"{"jsonrpc":"2.0","id":3,"method":"ok"}"#);
        dispatch.running().all_finished().await;
        let codes = [code::METHOD_NOT_FOUND, code::INVALID_REQUEST, ErrorCode::Busy.code()];
        assert_eq!(*seen.errors.lock().unwrap(), codes);
        assert_eq!(*seen.refused.lock().unwrap(), [Limit::BatchLen, Limit::Rate]);
        let sent = sent.0.lock().unwrap();
        assert_eq!(sent[0], r#"{"jsonrpc":"2.0","id":1,"result":1}"#);
        assert_eq!(sent.len(), 4, "{sent:?}");
    }

    #[test]
    fn past_max_running_a_request_is_busy_and_a_notification_dropped() {
        let mut module = RpcModule::new(());
        module.register_method::<Result<u8, ErrorObjectOwned>, _>("ok", |_, _, _| Ok(1)).unwrap();
        let sent = Sent::default();
        let dispatch = Dispatch::new(module.into(), ConnectionId(0), sent.clone()).max_running(0);
        dispatch.text(r#"{"jsonrpc":"2.0","id":"a","method":"ok"}"#);
        dispatch.text(r#"{"jsonrpc":"2.0","method":"ok"}"#);
        let sent = sent.0.lock().unwrap();
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert!(sent[0].starts_with(r#"{"jsonrpc":"2.0","id":"a","error":{"code":-32009"#), "{}", sent[0]);
    }
}
