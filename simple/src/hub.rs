//! `Hub`: the `Signaling` methods, over a [`Router`] that holds the users
//! and groups. A cheap-to-clone handle with no I/O of its own: it reaches
//! clients only through the router's targets, so it runs the same under a
//! WebSocket transport and in unit tests.
//!
//! A session's own group list (the per-user limit, and what to leave on
//! disconnect) is kept here; it is never locked across an await.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::SystemTime;

use dashmap::DashMap;
use jsonrpsee::core::RpcResult;
use jsonrpsee::core::server::Extensions;
use jsonrpsee::types::ErrorObjectOwned;
use serde_json::value::RawValue;
use tokio::sync::oneshot;
use tracing::debug;
use webrtc_p2p_interfaces::{
    Capability, ErrorCode, GroupId, JoinResult, Members, ResumeResult, SessionFacts, SignalingServer, UserId, method,
};

use crate::auth::{Grants, GroupGrant, TokenVerifier};
use crate::dispatch::{Endpoint, RunningGuard};
use crate::ice::IceConfig;
use crate::limits::{Limits, RateLimiter};
use crate::memory;
use crate::observe::{Observer, RelayOutcome, ResumeFailure, SessionEvent, Unobserved};
use crate::peer::{AnswerRef, Attached, CallFailed, CloseReason, PeerHandle};
use crate::router::{Arrival, Callee, Departure, Entrant, Introduction, LocalRouter, Router, Sessions, Target};
use crate::ticket::{ResumeKey, Ticket, TicketError, unix_ms};
use crate::wire::{self, InBatch, IsNotification, Passthrough, RawAnswer, RequestId, Started};

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
    /// Those relays by the id the client gave them, for `$/cancelRequest`:
    /// a registration's number (so that a relay whose id was reused removes
    /// only its own entry) and what cancels it.
    cancels: Mutex<Cancels>,
    next_registration: AtomicU64,
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
            cancels: Mutex::default(),
            next_registration: AtomicU64::new(0),
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

    fn lock_cancels(&self) -> std::sync::MutexGuard<'_, Cancels> {
        // One insert or remove per critical section: poisoning is moot.
        self.cancels.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Makes the relay whose request id is written `key` cancellable while
    /// the guard lives; the future completes when `$/cancelRequest` names
    /// it. A later relay with the same id takes the name over.
    fn cancellable(&self, key: Box<str>) -> (Cancellable<'_>, impl Future<Output = ()> + use<>) {
        let registration = self.next_registration.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.lock_cancels().insert(key.clone(), (registration, Canceller::Task(tx)));
        // A sender dropped without a cancel (its name taken over) never cancels.
        let cancelled = async move {
            if rx.await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        (Cancellable { session: self, key, registration }, cancelled)
    }

    /// Cancels the pending relay with request id `id`; whether there was one.
    fn cancel(&self, id: &RawValue) -> bool {
        let removed = self.lock_cancels().remove(id.get());
        // Outside the lock: a cancelled call ends its relay at once, which
        // takes its name off this map.
        match removed {
            Some((_, Canceller::Task(tx))) => tx.send(()).is_ok(),
            Some((_, Canceller::Call(Some((callee, call))))) => callee.cancel_call(call),
            Some((_, Canceller::Call(None))) | None => false,
        }
    }

    /// Names a relay started without a task ([`Hub::relay_direct`]) by its
    /// request id, written `key`, before its call is made; returns the
    /// registration, for [`call_made`](Self::call_made) and
    /// [`forget_cancel`](Self::forget_cancel). A later relay with the same
    /// id takes the name over.
    fn name_call(&self, key: &str) -> u64 {
        let registration = self.next_registration.fetch_add(1, Ordering::Relaxed);
        self.lock_cancels().insert(key.into(), (registration, Canceller::Call(None)));
        registration
    }

    /// The call of the relay named `key` (registration `registration`) is
    /// `call` to `callee`: what `$/cancelRequest` cancels. Nothing when the
    /// relay ended already.
    fn call_made(&self, key: &str, registration: u64, callee: Arc<dyn Callee>, call: u64) {
        let mut cancels = self.lock_cancels();
        if let Some((named, canceller)) = cancels.get_mut(key)
            && *named == registration
        {
            *canceller = Canceller::Call(Some((callee, call)));
        }
    }

    /// Takes the name `key` off, unless a later relay took it over.
    fn forget_cancel(&self, key: &str, registration: u64) {
        let mut cancels = self.lock_cancels();
        if cancels.get(key).is_some_and(|(named, _)| *named == registration) {
            cancels.remove(key);
        }
    }

    /// Counts a relay in flight for as long as the guard lives; `None` when
    /// `limit` are in flight already.
    fn begin_relay(&self, limit: usize) -> Option<InFlight<'_>> {
        self.try_begin_relay(limit).then(|| InFlight(&self.relays_in_flight))
    }

    /// Counts a relay in flight unless `limit` are; whoever gets `true`
    /// takes the count off again.
    fn try_begin_relay(&self, limit: usize) -> bool {
        self.relays_in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < limit).then_some(n + 1))
            .is_ok()
    }
}

struct InFlight<'a>(&'a AtomicUsize);

/// A session's cancellable relays: by request id, the registration's number
/// and what cancels it.
type Cancels = HashMap<Box<str>, (u64, Canceller)>;

/// What cancels a relay.
#[derive(Debug)]
enum Canceller {
    /// A relay a task awaits: told through this channel.
    Task(oneshot::Sender<()>),
    /// A relay without a task: its call to the target (`None` for the
    /// moment while it is being made).
    Call(Option<(Arc<dyn Callee>, u64)>),
}

/// A relay's entry among its session's cancellable relays, removed on drop.
struct Cancellable<'a> {
    session: &'a Session,
    key: Box<str>,
    registration: u64,
}

impl Drop for Cancellable<'_> {
    fn drop(&mut self) {
        self.session.forget_cancel(&self.key, self.registration);
    }
}

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
        let shared = Arc::new(shared);
        let sessions: Weak<Shared<R>> = Arc::downgrade(&shared);
        shared.router.serve_sessions(sessions);
        Self { shared }
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

    /// Whether a stopping server hands its resumable sessions to the other
    /// nodes (closing their connections with 1012 and keeping the sessions
    /// for the clients' resumes elsewhere) rather than ending them.
    pub fn hands_over_on_shutdown(&self) -> bool {
        !self.shared.limits.resume_window.is_zero() && self.shared.router.moves_sessions()
    }

    /// The server is stopping and its connections have closed: resolves once
    /// the router has sent what it still had for other nodes (see
    /// [`Router::stop`]). The caller bounds the wait.
    pub async fn stop(&self) {
        self.shared.router.stop().await;
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
    async fn session_facts(&self, session: &Arc<Session>) -> Result<SessionFacts, ErrorCode> {
        let user = session.initialized()?;
        let window = self.shared.limits.resume_window;
        let resume_window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        let mut resume_ticket = String::new();
        if resume_window_ms > 0 {
            let mut first = false;
            let epoch = *session.epoch.get_or_init(|| {
                first = true;
                random_u64()
            });
            if first {
                // Said before the first ticket goes out, so that the session
                // outlives its node (a cluster keeps it with the user).
                let grants = session.grants().map(Grants::to_json).unwrap_or_default();
                self.shared.router.resumable(user, &grants).await;
            }
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
    async fn resume_session(
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
        let (session, attached) = match session {
            Some(session) => {
                if session.epoch.get() != Some(&ticket.epoch) {
                    return Err(failed(ResumeFailure::Gone));
                }
                let Some(attached) = session.peer.attach(received) else {
                    return Err(failed(ResumeFailure::Gone));
                };
                (session, attached)
            }
            None => match self.take_over(fresh, ticket, received).await? {
                Some(arrived) => arrived,
                None => return Err(failed(ResumeFailure::Gone)),
            },
        };
        let groups = session.lock_groups().clone();
        *fresh.resumed.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some((session, attached.generation));
        self.shared.observer.session_event(SessionEvent::Resumed { replayed: attached.replayed });
        debug!(user = %ticket.user, replayed = attached.replayed, "resumed");
        Ok(ResumeResult { user_id: ticket.user, groups, received: attached.received, replayed: attached.replayed })
    }

    /// The session `ticket` names, held by another node, moves here (to a
    /// handle like `fresh`'s); `None` when no node holds it.
    async fn take_over(
        &self,
        fresh: &Session,
        ticket: Ticket,
        received: u64,
    ) -> Result<Option<(Arc<Session>, Attached)>, ErrorCode> {
        let peer = Arc::new(fresh.peer.sibling());
        peer.keep_for_replay(self.shared.limits.resume_buffer);
        let Some(arrival) = self.shared.router.take_over(ticket.user, ticket.epoch, received, peer.clone()).await?
        else {
            return Ok(None);
        };
        let Arrival { groups, position, grants } = arrival;
        let grants = match grants.as_deref().and_then(Grants::from_json) {
            Some(grants) => Arc::new(grants),
            // Its node is gone and never said: a server without join tokens
            // grants everything; one with them, nothing new.
            None if self.with_tokens() => Arc::new(Grants { create: false, groups: GroupGrant::None, info: None }),
            None => self.shared.everything.clone(),
        };
        let session = Session::new(peer);
        let _ = session.grants.set(grants);
        let _ = session.user.set(ticket.user);
        let _ = session.epoch.set(ticket.epoch);
        *session.lock_groups() = groups;
        let session = Arc::new(session);
        self.shared.resumable.insert(ticket.user, session.clone());
        let attached = Attached { generation: 0, received: position.received, replayed: position.replayed };
        Ok(Some((session, attached)))
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

impl<R: Router> Sessions for Shared<R> {
    fn depart(&self, user: UserId, epoch: u64, received: u64) -> Option<Departure> {
        let session = self.resumable.get(&user).map(|s| s.clone()).filter(|s| s.epoch.get() == Some(&epoch))?;
        let (frames, position) = session.peer.hand_over(received)?;
        self.resumable.remove_if(&user, |_, s| Arc::ptr_eq(s, &session));
        // Taken, so that nothing left here can make the user leave them.
        let groups = std::mem::take(&mut *session.lock_groups());
        let grants = session.grants().map(Grants::to_json);
        debug!(%user, replayed = position.replayed, "handed over");
        Some(Departure { frames, position, groups, grants, peer: session.peer.clone() })
    }

    fn disown(&self, user: UserId, peer: &Arc<PeerHandle>) -> Vec<GroupId> {
        let session = self.resumable.remove_if(&user, |_, s| Arc::ptr_eq(&s.peer, peer)).map(|(_, s)| s);
        // Taken, so that nothing left here can make the user leave them.
        let groups = session.map(|session| std::mem::take(&mut *session.lock_groups())).unwrap_or_default();
        // Sealed: a suspended session's window passing then ends nothing
        // (that would leave the groups and release the id).
        peer.seal();
        peer.close(CloseReason::RESUMED_ELSEWHERE);
        debug!(%user, "disowned: the session lives on another node");
        groups
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
        // In already yet not recorded happens on a cluster: a join that Redis
        // ran after the node had answered Busy, tried again.
        let mut groups = session.lock_groups();
        if !groups.contains(&group_id) {
            groups.push(group_id);
        }
        drop(groups);
        session.charge(joined.told);
        Ok(JoinResult { owner: joined.owner, capability: joined.capability })
    }

    async fn leave(&self, ext: &Extensions, group_id: GroupId) -> RpcResult<()> {
        let session = session(ext)?;
        let user = session.initialized()?;
        let left = self.shared.router.leave(group_id, user).await;
        // Not in it (any more) also ends the record: on a cluster, a leave
        // tried again after Busy finds that Redis ran the first one.
        if let Ok(_) | Err(ErrorCode::NotAMember | ErrorCode::GroupNotFound) = left {
            session.lock_groups().retain(|g| *g != group_id);
        }
        session.charge(left?);
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
        let (outcome, answer) = match session(ext) {
            Ok(session) => {
                let notification = ext.get::<IsNotification>().is_some();
                let id = ext.get::<RequestId>().map(|RequestId(id)| &**id);
                let relay = self.relay_observed(session.clone(), notification, id, group_id, user_id, &data);
                // A waiting relay holds its data once (in jsonrpsee's params),
                // not in this copy, nor in the target's params once queued.
                drop(data);
                relay.await
            }
            Err(e) => (RelayOutcome::Refused, Err(e)),
        };
        self.shared.observer.relay_done(outcome, started.elapsed());
        // The target's answer, result or error object, passes through to the
        // caller exactly as it came (a malformed one arrives as InvalidAnswer).
        let passthrough = ext.get::<Passthrough>();
        match answer {
            Ok(Ok(result)) => match passthrough {
                Some(passthrough) => {
                    passthrough.set(Ok(result));
                    Ok(RawValue::NULL.to_owned())
                }
                None => Ok(result),
            },
            Ok(Err(error)) => {
                let parsed = serde_json::from_str::<ErrorObjectOwned>(error.get())
                    .unwrap_or_else(|_| ErrorObjectOwned::owned(0, "", None::<()>));
                if let Some(passthrough) = passthrough {
                    passthrough.set(Err(error));
                }
                Err(parsed)
            }
            Err(ours) => Err(ours),
        }
    }

    async fn session(&self, ext: &Extensions) -> RpcResult<SessionFacts> {
        Ok(self.session_facts(session(ext)?).await?)
    }

    async fn resume(&self, ext: &Extensions, ticket: String, received: u64) -> RpcResult<ResumeResult> {
        self.resume_session(session(ext)?, ext.get::<InBatch>().is_some(), &ticket, received).await
    }

    async fn cancel_request(&self, ext: &Extensions, id: Box<RawValue>) -> RpcResult<()> {
        session(ext)?.cancel(&id);
        Ok(())
    }

    async fn discover(&self) -> RpcResult<Box<RawValue>> {
        RawValue::from_string(webrtc_p2p_interfaces::OPENRPC.to_owned())
            .map_err(|_| ErrorObjectOwned::owned(wire::code::INTERNAL_ERROR, "openrpc.json is not JSON", None::<()>))
    }
}

/// `relay`'s params when they are the plain array `[group_id, user_id, data]`.
#[derive(serde::Deserialize)]
struct RelayArgs<'a>(GroupId, UserId, #[serde(borrow)] &'a RawValue);

/// [`RelayArgs`] with the ids as the text sent (strings without escapes).
#[derive(serde::Deserialize)]
struct RelayText<'a>(&'a str, &'a str, #[serde(borrow)] &'a RawValue);

/// An id's wire form, 32 lowercase hex digits, without a `String`.
fn hex_id(bits: u128) -> [u8; 32] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 32];
    for (at, digit) in out.iter_mut().enumerate() {
        *digit = DIGITS[((bits >> (124 - 4 * at)) & 0xf) as usize];
    }
    out
}

/// Starts `relay` requests without jsonrpsee's method table; what a
/// connection's [`Dispatch`](crate::Dispatch) holds of its hub, whatever
/// the router.
pub(crate) trait StartRelay: Send + Sync + std::fmt::Debug {
    /// See [`Hub::start_relay`].
    fn start_relay(&self, session: &Arc<Session>, id: Option<&RawValue>, params: &RawValue) -> Option<Started>;

    /// See [`Hub::relay_direct`].
    fn relay_direct(
        &self,
        session: &Arc<Session>,
        id: Option<&RawValue>,
        params: &RawValue,
        running: RunningGuard,
    ) -> Result<(), RunningGuard>;
}

impl<R: Router> StartRelay for Hub<R> {
    fn start_relay(&self, session: &Arc<Session>, id: Option<&RawValue>, params: &RawValue) -> Option<Started> {
        Hub::start_relay(self, session, id, params)
    }

    fn relay_direct(
        &self,
        session: &Arc<Session>,
        id: Option<&RawValue>,
        params: &RawValue,
        running: RunningGuard,
    ) -> Result<(), RunningGuard> {
        Hub::relay_direct(self, session, id, params, running)
    }
}

impl<R: Router> Hub<R> {
    /// Starts a `relay` request or notification from `session`'s client
    /// without jsonrpsee's method table: no params copy, no `Extensions`, and
    /// the target's answer goes into the reply as the raw JSON it sent. The
    /// same checks in the same order, the same outcome to the observer and
    /// the same frames as [`SignalingServer::relay`] through the table (a
    /// test compares the two). `None` unless `params` is that plain array: the
    /// table's own parser then answers, with its own error for bad params.
    pub fn start_relay(&self, session: &Arc<Session>, id: Option<&RawValue>, params: &RawValue) -> Option<Started> {
        let RelayArgs(group_id, user_id, data) = serde_json::from_str(params.get()).ok()?;
        let relay = self.relay_observed(session.clone(), id.is_none(), id, group_id, user_id, data);
        let observer = self.shared.observer.clone();
        let answer = async move {
            let started = tokio::time::Instant::now();
            let (outcome, answer) = relay.await;
            observer.relay_done(outcome, started.elapsed());
            answer
        };
        Some(wire::start_future(id.map(RawValue::to_owned), answer))
    }
}

impl<R: Router> Hub<R> {
    /// The common relay, a request from a client of this process to another
    /// one, without a task, a channel or a timer of its own: the frame is
    /// queued to the target at once, and the target's answer, read by the
    /// target's connection, goes straight into the caller's reply (copied
    /// once); a timeout (found by the target's connection), a
    /// `$/cancelRequest` or the target going away end it the same way
    /// ([`PeerHandle::call_then`]). A target on another node whose router
    /// can do the same ([`Target::callee`]) is called the same way. The
    /// same checks in the same order, the same outcome to the observer and
    /// the same frames as [`start_relay`](Self::start_relay) (tests compare
    /// them). `running` is held until the reply is queued.
    ///
    /// Everything else (a notification, params that are not the plain
    /// array, an uninitialised caller, a route that must be awaited or
    /// fails, a target no [`Callee`] reaches, no relay slot left) gets
    /// `running` back, nothing done, for the general path to answer.
    pub(crate) fn relay_direct(
        &self,
        session: &Arc<Session>,
        id: Option<&RawValue>,
        params: &RawValue,
        running: RunningGuard,
    ) -> Result<(), RunningGuard> {
        let (Some(id), Some(from)) = (id, session.user()) else { return Err(running) };
        // The ids borrowed as sent: a valid one is its own canonical form
        // (32 lowercase hex digits), so the group's goes out as it came.
        let Ok(RelayText(group, user_id, data)) = serde_json::from_str(params.get()) else { return Err(running) };
        let (Ok(group_id), Ok(user_id)) = (group.parse::<GroupId>(), user_id.parse::<UserId>()) else {
            return Err(running);
        };
        let Some(Ok(target)) = self.shared.router.route_now(group_id, from, user_id) else { return Err(running) };
        let Some(callee) = target.callee() else { return Err(running) };
        if !session.try_begin_relay(self.shared.limits.max_relays_in_flight) {
            return Err(running);
        }
        self.shared.relays_in_flight.fetch_add(1, Ordering::AcqRel);
        // Named before the call is made, so that a `$/cancelRequest` read
        // right after finds it, and the call's end (which may come at once)
        // takes the name off.
        let registration = session.name_call(id.get());
        let relay = DirectRelay {
            hub: self.clone(),
            session: session.clone(),
            id: id.to_owned(),
            registration,
            started: tokio::time::Instant::now(),
            running,
        };
        let then = Box::new(move |answer: Result<AnswerRef<'_>, CallFailed>| relay.finish(answer));
        let from = hex_id(from.as_u128());
        let from = std::str::from_utf8(&from).unwrap_or_default();
        // `[group_id, from_user_id, data]`, straight into the frame.
        let params = ["[\"", group, "\",\"", from, "\",", data.get(), "]"];
        let call = callee.call_then(method::RELAY, &params, then);
        session.call_made(id.get(), registration, callee, call);
        Ok(())
    }
}

/// A relay made by [`Hub::relay_direct`], until its call ends.
struct DirectRelay<R: Router> {
    hub: Hub<R>,
    /// The caller's session: its relay slot, its cancel name, its reply.
    session: Arc<Session>,
    /// The caller's request id, as sent; also the relay's cancel name.
    id: Box<RawValue>,
    registration: u64,
    started: tokio::time::Instant,
    /// The caller's connection counts the request until its reply is queued.
    running: RunningGuard,
}

impl<R: Router> DirectRelay<R> {
    /// The call ended: frees the relay's slots and name, tells the observer
    /// and queues the reply, as [`Hub::relay_routed`] and the dispatch do.
    fn finish(self, answer: Result<AnswerRef<'_>, CallFailed>) {
        let shared = &self.hub.shared;
        let (outcome, answer) = match answer {
            Ok(Ok(result)) => (RelayOutcome::Answered, Ok(Ok(result))),
            Ok(Err(error)) => (RelayOutcome::TargetError, Ok(Err(error))),
            Err(failed) => call_failed(failed, shared.limits.max_message_size),
        };
        self.session.relays_in_flight.fetch_sub(1, Ordering::AcqRel);
        shared.relays_in_flight.fetch_sub(1, Ordering::AcqRel);
        self.session.forget_cancel(self.id.get(), self.registration);
        shared.observer.relay_done(outcome, self.started.elapsed());
        if let Some(reply) = wire::reply_ref(Some(&self.id), answer) {
            if let Some(code) = reply.error {
                shared.observer.error_sent(code);
            }
            self.session.send(reply.frame);
        }
        drop(self.running);
    }
}

impl<R: Router> Hub<R> {
    /// `relay` from `session`'s client, and how it ended; `id` is the
    /// caller's request id, by which `$/cancelRequest` finds the relay,
    /// whichever way it was started. A future that owns what it needs:
    /// `data` is copied into the target's params and `id` into a cancel key
    /// at once, so that the caller's frame need not outlive the call.
    fn relay_observed(
        &self,
        session: Arc<Session>,
        notification: bool,
        id: Option<&RawValue>,
        group_id: GroupId,
        user_id: UserId,
        data: &RawValue,
    ) -> impl Future<Output = (RelayOutcome, RelayAnswer)> + Send + 'static {
        let params = session.user().map(|from| relay_params(group_id, from, data));
        let cancel_key = id.map(|id| Box::<str>::from(id.get()));
        let hub = self.clone();
        async move {
            let params = params.unwrap_or_default();
            hub.relay_routed(&session, notification, cancel_key, group_id, user_id, params).await
        }
    }

    /// [`relay_observed`](Self::relay_observed) once the target's params are
    /// written (empty when the session has no user yet, which fails first).
    async fn relay_routed(
        &self,
        session: &Session,
        notification: bool,
        cancel_key: Option<Box<str>>,
        group_id: GroupId,
        user_id: UserId,
        params: String,
    ) -> (RelayOutcome, RelayAnswer) {
        let refused = |e: ErrorObjectOwned| (RelayOutcome::Refused, Err(e));
        // The sender's id is stamped by the server, never taken from the client.
        let from = match session.initialized() {
            Ok(from) => from,
            Err(e) => return refused(e.into()),
        };
        let target = match self.shared.router.route(group_id, from, user_id).await {
            Ok(target) => target,
            Err(e) => return refused(e.into()),
        };
        if notification {
            // Nobody waits for an answer, so a gone target is nobody's error.
            let _ = target.notify(method::RELAY, &params);
            return (RelayOutcome::Forwarded, Ok(Ok(RawValue::NULL.to_owned())));
        }
        let Some(_in_flight) = session.begin_relay(self.shared.limits.max_relays_in_flight) else {
            return (RelayOutcome::Busy, Err(ErrorCode::Busy.into()));
        };
        self.shared.relays_in_flight.fetch_add(1, Ordering::AcqRel);
        let _hub_in_flight = InFlight(&self.shared.relays_in_flight);
        // Straight to the target rather than through the generated
        // `PeerClient::on_relay` stub: no param builder, and no second copy
        // (and re-parse) of the answer: measured on the bench.
        // Registered before the first await, so a `$/cancelRequest` read
        // right after the relay finds it.
        let (_cancellable, cancelled) = match cancel_key {
            Some(key) => {
                let (guard, cancelled) = session.cancellable(key);
                (Some(guard), futures_util::future::Either::Left(cancelled))
            }
            None => (None, futures_util::future::Either::Right(std::future::pending())),
        };
        match target.call(method::RELAY, params, cancelled).await {
            Ok(Ok(result)) => (RelayOutcome::Answered, Ok(Ok(result))),
            Ok(Err(error)) => (RelayOutcome::TargetError, Ok(Err(error))),
            Err(failed) => call_failed(failed, self.shared.limits.max_message_size),
        }
    }
}

/// How a relay whose call to its target failed ends.
fn call_failed<T>(failed: CallFailed, max_message_size: usize) -> (RelayOutcome, Result<T, ErrorObjectOwned>) {
    match failed {
        CallFailed::Timeout => (RelayOutcome::Timeout, Err(ErrorCode::RelayTimeout.into())),
        CallFailed::Gone => (RelayOutcome::PeerGone, Err(ErrorCode::PeerGone.into())),
        CallFailed::TooLarge => (RelayOutcome::Refused, Err(too_large(max_message_size))),
        CallFailed::MemoryBudget => {
            (RelayOutcome::Busy, Err(ErrorObjectOwned::owned(memory::REFUSAL_CODE, memory::REFUSAL, None::<()>)))
        }
        CallFailed::Cancelled => (RelayOutcome::Cancelled, Err(ErrorCode::RequestCancelled.into())),
        CallFailed::Unavailable => (RelayOutcome::Busy, Err(ErrorCode::Busy.into())),
    }
}

/// How a relay ends for its caller: the target's own answer (its result or
/// its error object, raw, to pass through unchanged), or an error of ours.
type RelayAnswer = Result<RawAnswer, ErrorObjectOwned>;

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

    /// Two users in a group of a hub seen by `outcomes`, their frames so far
    /// read: `params` relays `{}` from `a` to `b`.
    struct Pair {
        outcomes: Arc<Outcomes>,
        hub: Hub,
        a: Arc<Session>,
        ea: Extensions,
        b: Arc<Session>,
        params: Box<RawValue>,
    }

    async fn pair() -> Pair {
        let outcomes = Arc::new(Outcomes::default());
        let hub = Hub::with_observer(Limits::DEFAULT, outcomes.clone());
        let (a, ea, _) = user(&hub).await;
        let (b, eb, ub) = user(&hub).await;
        let g = hub.create(&ea, None).await.unwrap();
        hub.join(&eb, g).await.unwrap();
        let _ = (frames(&a), frames(&b));
        let params = RawValue::from_string(format!(r#"["{g}","{ub}",{{}}]"#)).unwrap();
        Pair { outcomes, hub, a, ea, b, params }
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

    /// Tells which way each relay ended.
    #[derive(Debug, Default)]
    struct Outcomes(Mutex<Vec<RelayOutcome>>);

    impl Observer for Outcomes {
        fn relay_done(&self, outcome: RelayOutcome, _elapsed: Duration) {
            self.0.lock().unwrap().push(outcome);
        }
    }

    /// What one relay did, seen from outside: the reply frame and its error
    /// code, the frame the target got (our id blanked: ours count up), and
    /// the outcome the observer was told.
    type Seen = (Option<(String, Option<i32>)>, Option<String>, Option<RelayOutcome>);

    /// Starts a relay from `from` directly or through the method table, lets
    /// `target` answer with `answer` (a `result` or `error` member), and
    /// says what happened.
    async fn relay_seen(
        hub: &Hub,
        outcomes: &Outcomes,
        (from, target): (&Arc<Session>, &Session),
        (id, params): (Option<&str>, &str),
        answer: &str,
        direct: bool,
    ) -> Seen {
        let id = id.map(|id| RawValue::from_string(id.to_owned()).unwrap());
        let params = RawValue::from_string(params.to_owned()).unwrap();
        let started = if direct {
            hub.start_relay(from, id.as_deref(), &params).expect("a plain array")
        } else {
            let methods = hub.clone().into_rpc().into();
            let request = wire::Request { id: id.as_deref(), method: method::RELAY.into(), params: Some(&params) };
            wire::start(&methods, request, jsonrpsee::core::server::ConnectionId(0), from.extensions())
        };
        let sent = answer_as(target, answer);
        let reply = match started {
            Started::Done(reply) => reply,
            Started::Running(future) => future.await,
        };
        (reply.map(|r| (r.frame, r.error)), sent, outcomes.0.lock().unwrap().pop())
    }

    /// [`relay_seen`] as a server's dispatch starts a relay: without a task
    /// ([`Hub::relay_direct`]), or, when that hands it back, as
    /// [`Hub::start_relay`] does. A reply queued without a task is read
    /// from the caller's queue.
    async fn relay_seen_taskless(
        hub: &Hub,
        outcomes: &Outcomes,
        (from, target): (&Arc<Session>, &Session),
        (id, params): (Option<&str>, &str),
        answer: &str,
    ) -> Seen {
        let id = id.map(|id| RawValue::from_string(id.to_owned()).unwrap());
        let params = RawValue::from_string(params.to_owned()).unwrap();
        let running = crate::dispatch::Running::new(usize::MAX);
        let guard = running.track().unwrap();
        let started = hub
            .relay_direct(from, id.as_deref(), &params, guard)
            .err()
            .map(|_| hub.start_relay(from, id.as_deref(), &params).expect("a plain array"));
        let sent = answer_as(target, answer);
        let reply = match started {
            Some(Started::Done(reply)) => reply.map(|r| (r.frame, r.error)),
            Some(Started::Running(future)) => future.await.map(|r| (r.frame, r.error)),
            None => {
                let frame = from.peer().try_next_frame();
                frame.map(|frame| {
                    let json: serde_json::Value = serde_json::from_str(&frame).unwrap();
                    let code = json["error"]["code"].as_i64().map(|code| i32::try_from(code).unwrap_or(0));
                    let code = code.or(json["error"].is_object().then_some(0));
                    (frame, code)
                })
            }
        };
        assert!(running.is_idle(), "the request counted until its reply was queued");
        (reply, sent, outcomes.0.lock().unwrap().pop())
    }

    /// Takes the frame queued to `target`, if any, and answers it (a relay's
    /// call) with `answer`; returns the frame, our id blanked.
    fn answer_as(target: &Session, answer: &str) -> Option<String> {
        let sent = target.peer().try_next_frame();
        if let Some(frame) = &sent
            && let Some(at) = frame.find(r#""id":"s"#)
        {
            let our_id = &frame[at + 5..at + 5 + frame[at + 6..].find('"').unwrap() + 2];
            let response = format!(r#"{{"jsonrpc":"2.0","id":{our_id},{answer}}}"#);
            let wire::Incoming::Response(response) = wire::classify(&response) else { panic!("{response}") };
            target.peer().complete(&response);
        }
        let blank = |frame: String| match frame.find(r#""id":"s"#) {
            Some(at) => {
                let end = at + 6 + frame[at + 6..].find('"').unwrap();
                format!("{}\"s\"{}", &frame[..at + 5], &frame[end + 1..])
            }
            None => frame,
        };
        sent.map(blank)
    }

    #[tokio::test]
    async fn a_direct_relay_answers_exactly_as_the_method_table_does() {
        let outcomes = Arc::new(Outcomes::default());
        let hub = Hub::with_observer(Limits::DEFAULT, outcomes.clone());
        let (a, ea, _) = user(&hub).await;
        let (b, eb, ub) = user(&hub).await;
        let (stranger, _, us) = user(&hub).await;
        let (nobody, _) = connect();
        // A target promised small messages: a relay that would not fit is
        // refused at the caller, never sent.
        let small = Arc::new(Session::new(Arc::new(
            PeerHandle::new(64, Duration::from_secs(1)).with_byte_limits(usize::MAX, 200),
        )));
        let us_small = hub.init(&small.extensions(), None).await.unwrap();
        let g = hub.create(&ea, None).await.unwrap();
        hub.join(&eb, g).await.unwrap();
        hub.join(&small.extensions(), g).await.unwrap();
        let _ = (frames(&a), frames(&b));
        let to_b = format!(r#"["{g}","{ub}",{{"sdp":"v=0\r\n","type":"offer"}}]"#);
        let spaced = format!(r#"[ "{g}" , "{ub}" , [1, {{"a": null}}] ]"#);
        let to_stranger = format!(r#"["{g}","{us}",{{}}]"#);
        let unknown_group = format!(r#"["{}","{ub}",{{}}]"#, GroupId::random());
        let to_small = format!(r#"["{g}","{us_small}","{}"]"#, "x".repeat(40));
        let too_large_for_small = format!(r#"["{g}","{us_small}","{}"]"#, "x".repeat(200));
        let result = r#""result":{"type":"answer","sdp":"v=0"}"#;
        let odd_error = r#""error":{"code":-32000,"message":"no","data":[1],"extra":{"why":true}}"#;
        let malformed = [r#""error":5"#, r#""result":1,"error":{"code":1}"#, r#""error":[{"code":1}]"#];
        let invalid_answer = Some(ErrorCode::InvalidAnswer.code());
        let limit_exceeded = Some(ErrorCode::LimitExceeded.code());
        // Who relays to whom, how, what the target answers, and the reply's
        // error code (`None`: a result; not checked for a notification).
        type Case<'a> = (&'a Arc<Session>, &'a Session, Option<&'a str>, &'a str, &'a str, Option<i32>);
        let cases: [Case<'_>; 18] = [
            (&a, &b, Some("7"), &to_b, result, None),
            (&a, &b, Some(r#""x\"y""#), &spaced, result, None),
            (&a, &b, Some("-1.5e3"), &to_b, result, None),
            (&a, &b, Some("null"), &to_b, result, None),
            (&a, &b, Some("8"), &to_b, r#""error":{"code":-32000,"message":"no","data":[1]}"#, Some(-32000)),
            (&a, &b, Some("9"), &to_b, odd_error, Some(-32000)),
            (&a, &b, Some("10"), &to_b, r#""error":{"code":"x"}"#, Some(0)),
            (&a, &b, Some("11"), &to_b, malformed[0], invalid_answer),
            (&a, &b, Some(r#""m""#), &to_b, malformed[1], invalid_answer),
            (&a, &b, Some("12"), &to_b, malformed[2], invalid_answer),
            (&a, &b, None, &to_b, result, None),
            (&a, &b, Some("13"), &to_stranger, result, Some(ErrorCode::UserNotFound.code())),
            (&a, &b, Some("14"), &unknown_group, result, Some(ErrorCode::GroupNotFound.code())),
            (&stranger, &b, Some("15"), &to_b, result, Some(ErrorCode::NotAMember.code())),
            (&nobody, &b, Some("16"), &to_b, result, Some(ErrorCode::NotInitialized.code())),
            (&nobody, &b, None, &to_b, result, None),
            (&a, &small, Some("17"), &to_small, result, None),
            (&a, &small, Some("18"), &too_large_for_small, result, limit_exceeded),
        ];
        for (from, target, id, params, answer, code) in cases {
            let direct = relay_seen(&hub, &outcomes, (from, target), (id, params), answer, true).await;
            let table = relay_seen(&hub, &outcomes, (from, target), (id, params), answer, false).await;
            assert_eq!(direct, table, "{id:?} {params} answered with {answer}");
            let taskless = relay_seen_taskless(&hub, &outcomes, (from, target), (id, params), answer).await;
            assert_eq!(taskless, table, "{id:?} {params} answered with {answer}, without a task");
            assert!(direct.2.is_some(), "{id:?} {params}: the observer was told");
            if id.is_some() {
                assert_eq!(
                    direct.0.as_ref().map(|(_, code)| *code),
                    Some(code),
                    "{id:?} {params} answered with {answer}"
                );
            }
        }
        assert_eq!(hub.relays_in_flight(), 0);

        // Any error object reaches the caller exactly as the target sent it.
        let (frame, ..) = relay_seen(&hub, &outcomes, (&a, &b), (Some("1"), &to_b), odd_error, true).await.0.unwrap();
        assert_eq!(frame, format!(r#"{{"jsonrpc":"2.0","id":1,{odd_error}}}"#));
        // A relay too large for its target never reaches it.
        let (_, sent, outcome) =
            relay_seen(&hub, &outcomes, (&a, &small), (Some("1"), &too_large_for_small), result, true).await;
        assert_eq!((sent, outcome), (None, Some(RelayOutcome::Refused)));

        // A target that is gone fails both ways alike.
        b.peer().close(CloseReason::NORMAL);
        let direct = relay_seen(&hub, &outcomes, (&a, &b), (Some("1"), &to_b), result, true).await;
        let table = relay_seen(&hub, &outcomes, (&a, &b), (Some("1"), &to_b), result, false).await;
        assert_eq!(direct, table);
        assert_eq!(direct.2, Some(RelayOutcome::PeerGone));
        let taskless = relay_seen_taskless(&hub, &outcomes, (&a, &b), (Some("1"), &to_b), result).await;
        assert_eq!(taskless, table);

        // Anything but the plain array is left to the method table's parser.
        for params in [format!(r#"{{"group_id":"{g}","user_id":"{ub}","data":1}}"#), format!(r#"["{g}","{ub}"]"#)] {
            assert!(hub.start_relay(&a, None, &RawValue::from_string(params).unwrap()).is_none());
        }
    }

    #[tokio::test]
    async fn a_relay_is_cancelled_by_its_request_id_whichever_way_it_started() {
        let Pair { outcomes, hub, a, ea, b, params } = pair().await;
        let id = RawValue::from_string(r#""offer-1""#.to_owned()).unwrap();
        for direct in [true, false] {
            let started = if direct {
                hub.start_relay(&a, Some(&id), &params).expect("a plain array")
            } else {
                let methods = hub.clone().into_rpc().into();
                let request = wire::Request { id: Some(&id), method: method::RELAY.into(), params: Some(&params) };
                wire::start(&methods, request, jsonrpsee::core::server::ConnectionId(0), a.extensions())
            };
            let Started::Running(reply) = started else { panic!("answered before the target was") };
            let forwarded: serde_json::Value = serde_json::from_str(&b.peer().try_next_frame().unwrap()).unwrap();
            assert_eq!(hub.relays_in_flight(), 1);

            // Another id changes nothing; the caller's own id ends the relay.
            hub.cancel_request(&ea, RawValue::from_string(r#""offer-2""#.to_owned()).unwrap()).await.unwrap();
            hub.cancel_request(&ea, id.clone()).await.unwrap();
            let reply = reply.await.expect("a call is answered");
            assert_eq!(reply.error, Some(ErrorCode::RequestCancelled.code()), "direct: {direct}, {}", reply.frame);
            assert!(reply.frame.contains(r#""id":"offer-1""#), "{}", reply.frame);
            assert_eq!(outcomes.0.lock().unwrap().pop(), Some(RelayOutcome::Cancelled));
            assert_eq!(hub.relays_in_flight(), 0, "the slot is free again");
            let told = serde_json::json!({"jsonrpc": "2.0", "method": method::CANCEL_REQUEST, "params": {"id": forwarded["id"]}});
            assert_eq!(frames(&b), [told], "direct: {direct}");
        }
    }

    #[tokio::test]
    async fn a_relay_without_a_task_times_out_is_cancelled_and_ends_with_its_target() {
        let Pair { outcomes, hub, a, ea, b, params } = pair().await;
        let running = crate::dispatch::Running::new(usize::MAX);
        let relay = |id: &str| {
            let id = RawValue::from_string(id.to_owned()).unwrap();
            assert!(hub.relay_direct(&a, Some(&id), &params, running.track().unwrap()).is_ok(), "taken without a task");
            assert!(b.peer().try_next_frame().is_some(), "queued to the target at once");
        };
        let reply = || {
            let frame = a.peer().try_next_frame().expect("a reply");
            let json: serde_json::Value = serde_json::from_str(&frame).unwrap();
            (json["id"].clone(), json["error"]["code"].as_i64())
        };
        let code = |code: ErrorCode| Some(i64::from(code.code()));

        // Timed out by whoever serves the target's connection, not before.
        relay("1");
        let deadline = b.peer().next_call_deadline().expect("a call waits");
        b.peer().expire_calls(deadline - Duration::from_millis(1));
        assert_eq!(a.peer().try_next_frame(), None);
        b.peer().expire_calls(deadline);
        assert_eq!(reply(), (serde_json::json!(1), code(ErrorCode::RelayTimeout)));
        assert_eq!(outcomes.0.lock().unwrap().pop(), Some(RelayOutcome::Timeout));

        // Cancelled by its id: the target is told, the caller answered.
        relay(r#""c""#);
        hub.cancel_request(&ea, RawValue::from_string(r#""c""#.to_owned()).unwrap()).await.unwrap();
        assert_eq!(reply(), (serde_json::json!("c"), code(ErrorCode::RequestCancelled)));
        assert_eq!(outcomes.0.lock().unwrap().pop(), Some(RelayOutcome::Cancelled));
        let told = frames(&b);
        assert_eq!(told.len(), 1);
        assert_eq!(told[0]["method"], method::CANCEL_REQUEST);

        // Ended by the target's end.
        relay("2");
        b.peer().close(CloseReason::NORMAL);
        assert_eq!(reply(), (serde_json::json!(2), code(ErrorCode::PeerGone)));
        assert_eq!(outcomes.0.lock().unwrap().pop(), Some(RelayOutcome::PeerGone));

        assert_eq!(hub.relays_in_flight(), 0);
        assert_eq!(b.peer().pending_calls(), 0);
        assert!(running.is_idle(), "each request counted until its reply was queued");
        assert!(a.lock_cancels().is_empty(), "no cancel name left behind");
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
