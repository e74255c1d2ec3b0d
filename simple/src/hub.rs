//! `Hub`: the `Signaling` methods, over a [`Router`] that holds the users
//! and groups. A cheap-to-clone handle with no I/O of its own: it reaches
//! clients only through the router's targets, so it runs the same under a
//! WebSocket transport and in unit tests.
//!
//! A session's own group list (the per-user limit, and what to leave on
//! disconnect) is kept here; it is never locked across an await.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use dashmap::DashMap;
use jsonrpsee::core::RpcResult;
use jsonrpsee::core::server::Extensions;
use jsonrpsee::types::ErrorObjectOwned;
use serde_json::value::RawValue;
use tracing::debug;
use webrtc_p2p_interfaces::{
    Capability, ErrorCode, GroupId, JoinResult, Members, ResumeResult, SessionFacts, SignalingServer, UserId, method,
};

use crate::auth::{Grants, TokenVerifier};
use crate::ice::IceConfig;
use crate::limits::{Limits, RateLimiter};
use crate::memory;
use crate::observe::{Observer, RelayOutcome, ResumeFailure, SessionEvent, Unobserved};
use crate::peer::{CallFailed, CloseReason, PeerHandle};
use crate::router::{Entrant, Introduction, LocalRouter, Router, Target};
use crate::ticket::{ResumeKey, Ticket, TicketError, unix_ms};
use crate::wire::{self, InBatch, IsNotification, Passthrough};

/// One connection's signaling state; the transport puts an `Arc` of it in
/// the connection's [`Extensions`], where the `Signaling` methods find it.
#[derive(Debug)]
pub struct Session {
    /// How to reach this client.
    peer: Arc<PeerHandle>,
    /// Set by `init`, once.
    user: OnceLock<UserId>,
    /// What the user may do (its join token's claims), set by `init` just
    /// before `user`. Belongs to the session: a resumed one keeps it.
    grants: OnceLock<Arc<Grants>>,
    /// The groups this user is in, for the per-user limit and for leaving
    /// them all on disconnect.
    groups: Mutex<Vec<GroupId>>,
    /// Relays this user made that wait for an answer.
    relays_in_flight: AtomicUsize,
    /// Drawn when the client first calls `session`; its tickets name it, so
    /// that they resume this session and no other.
    epoch: OnceLock<u64>,
    /// Where a `resume` on this (fresh) connection leaves the session it took
    /// over and the connection generation to serve it with, for the
    /// transport to pick up.
    resumed: Mutex<Option<(Arc<Session>, u64)>>,
    /// The session's message budget, shared with its dispatch: the
    /// notifications a join or leave makes the server send to the other
    /// members are charged to it (fan-out costs the one who causes it).
    rate: OnceLock<Arc<RateLimiter>>,
}

impl Session {
    /// A session for the client behind `peer`.
    pub fn new(peer: Arc<PeerHandle>) -> Self {
        Self {
            peer,
            user: OnceLock::new(),
            grants: OnceLock::new(),
            groups: Mutex::default(),
            relays_in_flight: AtomicUsize::new(0),
            epoch: OnceLock::new(),
            resumed: Mutex::default(),
            rate: OnceLock::new(),
        }
    }

    /// The session a `resume` on this connection took over, once.
    pub fn take_resumed(&self) -> Option<(Arc<Session>, u64)> {
        self.resumed.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take()
    }

    /// The session's message budget, made by `fresh` for its first
    /// connection; a resumed session's next connection keeps it, so that
    /// reconnecting does not refill it.
    pub(crate) fn rate(&self, fresh: impl FnOnce() -> Arc<RateLimiter>) -> Arc<RateLimiter> {
        self.rate.get_or_init(fresh).clone()
    }

    /// Spends `messages` of the connection's budget, into debt if need be:
    /// its own next messages then wait until it is paid back.
    fn charge(&self, messages: usize) {
        if let Some(rate) = self.rate.get() {
            rate.charge(messages, tokio::time::Instant::now());
        }
    }

    /// The user id, once `init` answered.
    pub fn user(&self) -> Option<UserId> {
        self.user.get().copied()
    }

    /// The handle on this session's client.
    pub fn peer(&self) -> &Arc<PeerHandle> {
        &self.peer
    }

    fn initialized(&self) -> Result<UserId, ErrorCode> {
        self.user().ok_or(ErrorCode::NotInitialized)
    }

    /// The user's grants; none at all if they were somehow never set.
    fn grants(&self) -> Option<&Grants> {
        self.grants.get().map(|g| &**g)
    }

    fn lock_groups(&self) -> std::sync::MutexGuard<'_, Vec<GroupId>> {
        // Every critical section is one push/retain/take: poisoning is moot.
        self.groups.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts a relay in flight for as long as the guard lives; `None` when
    /// `limit` are in flight already.
    fn begin_relay(&self, limit: usize) -> Option<InFlight<'_>> {
        self.relays_in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < limit).then_some(n + 1))
            .ok()
            .map(|_| InFlight(&self.relays_in_flight))
    }
}

struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Counts of what the hub holds, for tests, metrics and leak checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HubStats {
    /// Initialised connections.
    pub users: usize,
    /// Live groups.
    pub groups: usize,
}

/// Who may connect and what they are given: the join tokens' verifier and
/// the ICE servers `session` hands out. The default is a v1 server: no
/// tokens, anyone may do anything, no ICE servers.
#[derive(Debug, Default)]
pub struct Access {
    /// Set with an auth secret: `init` requires a valid token, and members
    /// carry their token's `info` on the wire.
    pub tokens: Option<TokenVerifier>,
    /// The STUN and TURN servers.
    pub ice: IceConfig,
}

/// Every user and group of one server, over the router `R`.
#[derive(Debug)]
pub struct Hub<R = LocalRouter> {
    shared: Arc<Shared<R>>,
}

impl<R> Clone for Hub<R> {
    fn clone(&self) -> Self {
        Self { shared: self.shared.clone() }
    }
}

#[derive(Debug)]
struct Shared<R> {
    /// The limits enforced here (per user, per group, relays in flight).
    limits: Limits,
    /// Users, sessions and groups.
    router: R,
    /// Relays waiting for an answer, all callers together: what a leak check
    /// after a soak or a shutdown wants to see back at 0.
    relays_in_flight: AtomicUsize,
    /// Told how each relay ended, and (through each connection's dispatch)
    /// of error answers and refused messages: metrics.
    observer: Arc<dyn Observer>,
    /// Sessions whose client called `session`, by user: what `resume` finds.
    resumable: DashMap<UserId, Arc<Session>>,
    /// Signs and checks resume tickets.
    resume_key: ResumeKey,
    /// Join tokens and ICE servers.
    access: Access,
    /// The grants of every session on a server without an auth secret.
    everything: Arc<Grants>,
}

impl Hub {
    /// An empty hub in this process's memory, enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        Self::with_observer(limits, Arc::new(Unobserved))
    }

    /// An empty hub in this process's memory, enforcing `limits` and telling
    /// `observer` how each relay ended.
    pub fn with_observer(limits: Limits, observer: Arc<dyn Observer>) -> Self {
        Self::with_router(LocalRouter::default(), limits, Access::default(), observer, ResumeKey::random())
    }
}

impl<R: Router> Hub<R> {
    /// A hub over `router`, enforcing `limits` and `access`, telling
    /// `observer` how each relay ended and why join tokens were refused, and
    /// signing resume tickets with `resume_key`.
    pub fn with_router(
        router: R,
        limits: Limits,
        access: Access,
        observer: Arc<dyn Observer>,
        resume_key: ResumeKey,
    ) -> Self {
        let shared = Shared {
            limits,
            router,
            relays_in_flight: AtomicUsize::new(0),
            observer,
            resumable: DashMap::new(),
            resume_key,
            access,
            everything: Arc::new(Grants::everything()),
        };
        Self { shared: Arc::new(shared) }
    }

    /// Whether `init` requires a join token (the server has an auth secret).
    fn with_tokens(&self) -> bool {
        self.shared.access.tokens.is_some()
    }

    /// The grants of `token`, or `Unauthorized` (counted by reason).
    fn grants(&self, token: Option<&str>) -> Result<Arc<Grants>, ErrorCode> {
        let Some(tokens) = &self.shared.access.tokens else {
            return Ok(self.shared.everything.clone());
        };
        tokens.verify(token).map(Arc::new).map_err(|reason| {
            debug!(reason = reason.name(), "join token refused");
            self.shared.observer.auth_failed(reason);
            ErrorCode::Unauthorized
        })
    }

    /// How the others will know this session's user.
    fn introduction(&self, grants: &Grants) -> Introduction {
        if self.with_tokens() { Introduction::Info(grants.info.clone()) } else { Introduction::Id }
    }

    /// The limits this hub enforces.
    pub fn limits(&self) -> &Limits {
        &self.shared.limits
    }

    /// Who is told what happens (metrics).
    pub(crate) fn observer(&self) -> &Arc<dyn Observer> {
        &self.shared.observer
    }

    /// How many users and groups are live.
    pub fn stats(&self) -> HubStats {
        self.shared.router.stats()
    }

    /// Relays waiting for their target's answer, all callers together.
    pub fn relays_in_flight(&self) -> usize {
        self.shared.relays_in_flight.load(Ordering::Acquire)
    }

    /// Everything a closed connection leaves behind: its user leaves every
    /// group (the others get `member_left`), its id is released, and calls
    /// waiting on it fail with PeerGone.
    pub async fn disconnect(&self, session: &Session, reason: CloseReason) {
        session.peer.close(reason);
        let Some(user) = session.user() else { return };
        let groups = std::mem::take(&mut *session.lock_groups());
        for group_id in groups {
            // A group can only be gone already if we were not in it anymore.
            let _ = self.shared.router.leave(group_id, user).await;
        }
        self.shared.router.remove(user).await;
        self.shared.resumable.remove_if(&user, |_, s| std::ptr::eq(&**s, session));
        debug!(%user, "disconnected");
    }

    /// `session`: a fresh ticket, and from now on the session survives a
    /// dropped connection for the resume window.
    fn session_facts(&self, session: &Arc<Session>) -> Result<SessionFacts, ErrorCode> {
        let user = session.initialized()?;
        let window = self.shared.limits.resume_window;
        let resume_window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        let mut resume_ticket = String::new();
        if resume_window_ms > 0 {
            let epoch = *session.epoch.get_or_init(random_u64);
            session.peer.keep_for_replay(self.shared.limits.resume_buffer);
            self.shared.resumable.entry(user).or_insert_with(|| session.clone());
            let expires_ms = unix_ms().saturating_add(resume_window_ms.saturating_mul(TICKET_WINDOWS));
            resume_ticket = self.shared.resume_key.issue(Ticket { user, epoch, expires_ms });
        }
        let ice_servers = self.shared.access.ice.servers(user, SystemTime::now());
        Ok(SessionFacts { user_id: user, resume_ticket, resume_window_ms, ice_servers })
    }

    /// `resume`: the session `ticket` names moves to the connection behind
    /// `fresh` (which must not have a session of its own, and must not be
    /// in a batch, whose answer would go to the wrong session).
    fn resume_session(
        &self,
        fresh: &Session,
        in_batch: bool,
        ticket: &str,
        received: u64,
    ) -> Result<ResumeResult, ErrorObjectOwned> {
        if fresh.user().is_some() {
            return Err(ErrorCode::AlreadyInitialized.into());
        }
        if in_batch {
            let message = "resume must be a connection's first call, sent alone";
            return Err(ErrorObjectOwned::owned(wire::code::INVALID_REQUEST, message, None::<()>));
        }
        let failed = |reason: ResumeFailure| {
            self.shared.observer.session_event(SessionEvent::ResumeFailed(reason));
            debug!(reason = reason.name(), "resume failed");
            ErrorObjectOwned::from(ErrorCode::ResumeFailed)
        };
        let ticket = self.shared.resume_key.verify(ticket, unix_ms()).map_err(|e| {
            failed(match e {
                TicketError::Malformed => ResumeFailure::Malformed,
                TicketError::Forged => ResumeFailure::Forged,
                TicketError::Expired => ResumeFailure::Expired,
            })
        })?;
        let session = self.shared.resumable.get(&ticket.user).map(|s| s.clone());
        let Some(session) = session.filter(|s| s.epoch.get() == Some(&ticket.epoch)) else {
            return Err(failed(ResumeFailure::Gone));
        };
        let Some(attached) = session.peer.attach(received) else {
            return Err(failed(ResumeFailure::Gone));
        };
        let groups = session.lock_groups().clone();
        *fresh.resumed.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some((session, attached.generation));
        self.shared.observer.session_event(SessionEvent::Resumed { replayed: attached.replayed });
        debug!(user = %ticket.user, replayed = attached.replayed, "resumed");
        Ok(ResumeResult { user_id: ticket.user, groups, received: attached.received, replayed: attached.replayed })
    }

    /// Connection `generation` of `session` ended without the client closing
    /// it: `true` when the session is now suspended (it asked for a ticket
    /// and resume is on), and the caller runs [`expire`](Self::expire) once
    /// the window has passed; `false` when it must end as in v1.
    pub fn suspend(&self, session: &Session, generation: u64) -> bool {
        if self.shared.limits.resume_window.is_zero() || !session.peer.suspend(generation) {
            return false;
        }
        self.shared.observer.session_event(SessionEvent::Suspended);
        debug!(user = ?session.user(), "suspended");
        true
    }

    /// The resume window of a suspension since connection `generation` has
    /// passed: unless the session was resumed meanwhile, it ends as in v1.
    pub async fn expire(&self, session: &Session, generation: u64) {
        if session.peer.expire(generation) {
            self.shared.observer.session_event(SessionEvent::Expired);
            self.disconnect(session, CloseReason::LOST).await;
        }
    }
}

/// A ticket is valid for this many resume windows, so that a client that
/// refreshes it every half of that always holds one that outlives a drop by
/// a whole window.
const TICKET_WINDOWS: u64 = 10;

fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the operating system's random number generator failed");
    u64::from_ne_bytes(bytes)
}
fn session(ext: &Extensions) -> Result<&Arc<Session>, ErrorObjectOwned> {
    ext.get::<Arc<Session>>()
        .ok_or_else(|| ErrorObjectOwned::owned(wire::code::INTERNAL_ERROR, "connection has no session", None::<()>))
}

#[jsonrpsee::core::async_trait]
impl<R: Router> SignalingServer for Hub<R> {
    async fn init(&self, ext: &Extensions, token: Option<String>) -> RpcResult<UserId> {
        let session = session(ext)?;
        if session.user().is_some() {
            return Err(ErrorCode::AlreadyInitialized.into());
        }
        // Set before `user`, which is what marks the session initialised.
        let _ = session.grants.set(self.grants(token.as_deref())?);
        let user = self.shared.router.init(session.peer.clone()).await?;
        // Requests of one connection start one at a time, and `init` is
        // ready when first polled, so nobody else can have set it since the
        // check above.
        session.user.set(user).map_err(|_| ErrorCode::AlreadyInitialized)?;
        session.peer.start_counting();
        Ok(user)
    }

    async fn create(&self, ext: &Extensions, capability: Option<Capability>) -> RpcResult<GroupId> {
        let session = session(ext)?;
        let user = session.initialized()?;
        let grants = session.grants().filter(|g| g.create).ok_or(ErrorCode::PermissionDenied)?;
        if session.lock_groups().len() >= self.shared.limits.max_groups_per_user {
            return Err(ErrorCode::LimitExceeded.into());
        }
        let intro = self.introduction(grants);
        let group_id = self.shared.router.create(user, capability.unwrap_or_default(), intro).await?;
        session.lock_groups().push(group_id);
        Ok(group_id)
    }

    async fn join(&self, ext: &Extensions, group_id: GroupId) -> RpcResult<JoinResult> {
        let session = session(ext)?;
        let user = session.initialized()?;
        let limits = &self.shared.limits;
        let room = session.lock_groups().len() < limits.max_groups_per_user;
        let grants = session.grants().ok_or(ErrorCode::NotInitialized)?;
        let entrant = Entrant { user, granted: grants.may_join(group_id), room, intro: self.introduction(grants) };
        let joined = self.shared.router.join(group_id, entrant, limits.max_members_per_group).await?;
        if joined.added {
            session.lock_groups().push(group_id);
        }
        session.charge(joined.told);
        Ok(JoinResult { owner: joined.owner, capability: joined.capability })
    }

    async fn leave(&self, ext: &Extensions, group_id: GroupId) -> RpcResult<()> {
        let session = session(ext)?;
        let user = session.initialized()?;
        let told = self.shared.router.leave(group_id, user).await?;
        session.lock_groups().retain(|g| *g != group_id);
        session.charge(told);
        Ok(())
    }

    /// With `info` on a server without join tokens, `info` is ignored, as
    /// v1 ignores params it does not know.
    async fn get_members(&self, ext: &Extensions, group_id: GroupId, info: Option<bool>) -> RpcResult<Members> {
        let user = session(ext)?.initialized()?;
        let with_info = info.unwrap_or(false) && self.with_tokens();
        Ok(self.shared.router.get_members(group_id, user, with_info).await?)
    }

    async fn relay(
        &self,
        ext: &Extensions,
        group_id: GroupId,
        user_id: UserId,
        data: Box<RawValue>,
    ) -> RpcResult<Box<RawValue>> {
        let started = tokio::time::Instant::now();
        let (outcome, answer) = self.relay_observed(ext, group_id, user_id, data).await;
        self.shared.observer.relay_done(outcome, started.elapsed());
        answer
    }

    async fn session(&self, ext: &Extensions) -> RpcResult<SessionFacts> {
        Ok(self.session_facts(session(ext)?)?)
    }

    async fn resume(&self, ext: &Extensions, ticket: String, received: u64) -> RpcResult<ResumeResult> {
        self.resume_session(session(ext)?, ext.get::<InBatch>().is_some(), &ticket, received)
    }
}

impl<R: Router> Hub<R> {
    /// `relay`, and how it ended.
    async fn relay_observed(
        &self,
        ext: &Extensions,
        group_id: GroupId,
        user_id: UserId,
        data: Box<RawValue>,
    ) -> (RelayOutcome, RpcResult<Box<RawValue>>) {
        let refused = |e: ErrorObjectOwned| (RelayOutcome::Refused, Err(e));
        let session = match session(ext) {
            Ok(session) => session,
            Err(e) => return refused(e),
        };
        // The sender's id is stamped by the server, never taken from the client.
        let from = match session.initialized() {
            Ok(from) => from,
            Err(e) => return refused(e.into()),
        };
        let target = match self.shared.router.route(group_id, from, user_id).await {
            Ok(target) => target,
            Err(e) => return refused(e.into()),
        };
        let params = relay_params(group_id, from, &data);
        // A waiting relay holds its data once (in jsonrpsee's params), not in
        // this copy, nor in `params` once the frame is queued.
        drop(data);
        if ext.get::<IsNotification>().is_some() {
            // Nobody waits for an answer, so a gone target is nobody's error.
            let _ = target.notify(method::RELAY, &params);
            return (RelayOutcome::Forwarded, Ok(RawValue::NULL.to_owned()));
        }
        let Some(_in_flight) = session.begin_relay(self.shared.limits.max_relays_in_flight) else {
            return (RelayOutcome::Busy, Err(ErrorCode::Busy.into()));
        };
        self.shared.relays_in_flight.fetch_add(1, Ordering::AcqRel);
        let _hub_in_flight = InFlight(&self.shared.relays_in_flight);
        // Straight to the target rather than through the generated
        // `PeerClient::on_relay` stub: no param builder, and no second copy
        // (and re-parse) of the answer: measured on the bench.
        // The target's answer, result or error object, passes through to the
        // caller exactly as it came (a malformed one arrives as InvalidAnswer).
        let passthrough = ext.get::<Passthrough>();
        match target.call(method::RELAY, params).await {
            Ok(Ok(answer)) => match passthrough {
                Some(passthrough) => {
                    passthrough.set(Ok(answer));
                    (RelayOutcome::Answered, Ok(RawValue::NULL.to_owned()))
                }
                None => (RelayOutcome::Answered, Ok(answer)),
            },
            Ok(Err(error)) => {
                let parsed = serde_json::from_str::<ErrorObjectOwned>(error.get())
                    .unwrap_or_else(|_| ErrorObjectOwned::owned(0, "", None::<()>));
                if let Some(passthrough) = passthrough {
                    passthrough.set(Err(error));
                }
                (RelayOutcome::TargetError, Err(parsed))
            }
            Err(CallFailed::Timeout) => (RelayOutcome::Timeout, Err(ErrorCode::RelayTimeout.into())),
            Err(CallFailed::Gone) => (RelayOutcome::PeerGone, Err(ErrorCode::PeerGone.into())),
            Err(CallFailed::TooLarge) => (RelayOutcome::Refused, Err(too_large(self.shared.limits.max_message_size))),
            Err(CallFailed::MemoryBudget) => {
                (RelayOutcome::Busy, Err(ErrorObjectOwned::owned(memory::REFUSAL_CODE, memory::REFUSAL, None::<()>)))
            }
        }
    }
}

/// LimitExceeded for a relay whose forwarded frame (the server's own id and
/// the sender's id in place of the caller's) would be larger than the
/// message size the target was promised: refused here, never sent.
fn too_large(max_message_size: usize) -> ErrorObjectOwned {
    let message = format!(
        "limit exceeded: the relayed message would be larger than the target's {max_message_size}-byte message size limit"
    );
    ErrorObjectOwned::owned(ErrorCode::LimitExceeded.code(), message, None::<()>)
}

/// `[group_id, from_user_id, data]`, the params of a relay to its target,
/// written in one piece: `data` goes through as the caller sent it.
fn relay_params(group_id: GroupId, from: UserId, data: &RawValue) -> String {
    let mut params = String::with_capacity(72 + data.get().len());
    let _ = write!(params, "[\"{group_id}\",\"{from}\",{}]", data.get());
    params
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::dispatch::Endpoint;

    fn connect() -> (Arc<Session>, Extensions) {
        let session = Arc::new(Session::new(Arc::new(PeerHandle::new(64, Duration::from_secs(1)))));
        let ext = session.extensions();
        (session, ext)
    }

    async fn user(hub: &Hub) -> (Arc<Session>, Extensions, UserId) {
        let (session, ext) = connect();
        let id = hub.init(&ext, None).await.unwrap();
        (session, ext, id)
    }

    fn frames(session: &Session) -> Vec<serde_json::Value> {
        std::iter::from_fn(|| session.peer().try_next_frame()).map(|f| serde_json::from_str(&f).unwrap()).collect()
    }

    fn code<T: std::fmt::Debug>(result: RpcResult<T>) -> Option<ErrorCode> {
        ErrorCode::of(&result.unwrap_err())
    }

    #[tokio::test]
    async fn joins_and_leaves_reach_every_other_member_in_order() {
        let hub = Hub::new(Limits::DEFAULT);
        let (a, ea, ua) = user(&hub).await;
        let (b, eb, ub) = user(&hub).await;
        let (c, ec, uc) = user(&hub).await;
        let g = hub.create(&ea, None).await.unwrap();
        hub.join(&eb, g).await.unwrap();
        hub.join(&ec, g).await.unwrap();
        hub.leave(&eb, g).await.unwrap();
        let note = |m: &str, u: UserId| serde_json::json!({"jsonrpc": "2.0", "method": m, "params": [g, u]});
        assert_eq!(frames(&a), [note("member_joined", ub), note("member_joined", uc), note("member_left", ub)]);
        assert_eq!(frames(&b), [note("member_joined", uc)]);
        assert_eq!(frames(&c), [note("member_left", ub)]);
        assert_eq!(
            hub.get_members(&ec, g, Some(true)).await.unwrap(),
            Members::Ids(vec![ua, uc]),
            "no tokens: no info"
        );
    }

    #[tokio::test]
    async fn uninitialised_sessions_can_do_nothing_but_init_once() {
        let hub = Hub::new(Limits::DEFAULT);
        let (_s, ext) = connect();
        assert_eq!(code(hub.create(&ext, None).await), Some(ErrorCode::NotInitialized));
        hub.init(&ext, None).await.unwrap();
        assert_eq!(code(hub.init(&ext, None).await), Some(ErrorCode::AlreadyInitialized));
        assert_eq!(hub.stats(), HubStats { users: 1, groups: 0 });
    }

    #[tokio::test]
    async fn disconnect_leaves_every_group_drops_empty_ones_and_releases_the_user() {
        let hub = Hub::new(Limits::DEFAULT);
        let (a, ea, _) = user(&hub).await;
        let (b, eb, ub) = user(&hub).await;
        let shared = hub.create(&ea, None).await.unwrap();
        let _alone = hub.create(&ea, None).await.unwrap();
        hub.join(&eb, shared).await.unwrap();
        hub.disconnect(&a, CloseReason::NORMAL).await;
        assert!(a.peer().is_closed());
        assert_eq!(hub.stats(), HubStats { users: 1, groups: 1 });
        assert_eq!(hub.get_members(&eb, shared, None).await.unwrap(), Members::Ids(vec![ub]), "b is owner now");
        assert_eq!(frames(&b).len(), 1, "member_left");
        hub.disconnect(&b, CloseReason::NORMAL).await;
        assert_eq!(hub.stats(), HubStats { users: 0, groups: 0 });
    }

    #[tokio::test]
    async fn the_group_limits_come_after_group_not_found_and_already_in() {
        let hub = Hub::new(Limits { max_groups_per_user: 1, max_members_per_group: 2, ..Limits::DEFAULT });
        let (_a, ea, _) = user(&hub).await;
        let (_b, eb, _) = user(&hub).await;
        let (_c, ec, _) = user(&hub).await;
        let g = hub.create(&ea, None).await.unwrap();
        assert_eq!(code(hub.create(&ea, None).await), Some(ErrorCode::LimitExceeded));
        assert_eq!(code(hub.join(&ea, GroupId::random()).await), Some(ErrorCode::GroupNotFound));
        hub.join(&ea, g).await.expect("already in: nothing changes, at the limit too");
        hub.join(&eb, g).await.unwrap();
        assert_eq!(code(hub.join(&ec, g).await), Some(ErrorCode::LimitExceeded), "the group is full");
    }

    #[test]
    fn relays_in_flight_are_counted_until_their_guard_drops() {
        let (s, _) = connect();
        let first = s.begin_relay(2).unwrap();
        let second = s.begin_relay(2).unwrap();
        assert!(s.begin_relay(2).is_none());
        drop(first);
        assert!(s.begin_relay(2).is_some());
        drop(second);
    }
}
