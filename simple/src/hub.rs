//! `Hub`: every user and group of one server, and the `Signaling` methods
//! over them. A cheap-to-clone handle with no I/O of its own: it reaches
//! clients only through their [`PeerHandle`]s' queues, so it runs the same
//! under a WebSocket transport and in unit tests.
//!
//! Locking: a group's state is changed, and its members notified, under that
//! group's map entry lock, so every member sees joins and leaves in the order
//! they took effect. A session's own group list is only ever locked after a
//! group entry, never before, and never across an await.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use jsonrpsee::core::RpcResult;
use jsonrpsee::core::server::Extensions;
use jsonrpsee::core::to_json_raw_value;
use jsonrpsee::types::ErrorObjectOwned;
use serde_json::value::RawValue;
use tracing::debug;
use webrtc_p2p_interfaces::{Capability, ErrorCode, GroupId, JoinResult, SignalingServer, UserId, method};

use crate::group::{Added, Group, Member};
use crate::limits::Limits;
use crate::observe::{Observer, RelayOutcome, Unobserved};
use crate::peer::{CallFailed, CloseReason, PeerHandle};
use crate::wire::{self, IsNotification};

/// One connection's signaling state; the transport puts an `Arc` of it in
/// the connection's [`Extensions`], where the `Signaling` methods find it.
#[derive(Debug)]
pub struct Session {
    /// How to reach this client.
    peer: Arc<PeerHandle>,
    /// Set by `init`, once.
    user: OnceLock<UserId>,
    /// The groups this user is in, for the per-user limit and for leaving
    /// them all on disconnect.
    groups: Mutex<Vec<GroupId>>,
    /// Relays this user made that wait for an answer.
    relays_in_flight: AtomicUsize,
}

impl Session {
    /// A session for the client behind `peer`.
    pub fn new(peer: Arc<PeerHandle>) -> Self {
        Self { peer, user: OnceLock::new(), groups: Mutex::default(), relays_in_flight: AtomicUsize::new(0) }
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

/// Every user and group of one server.
#[derive(Debug, Clone)]
pub struct Hub {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// The limits enforced here (per user, per group, relays in flight).
    limits: Limits,
    /// Live users; an id is only handed out when it is not in here.
    users: DashMap<UserId, Arc<PeerHandle>>,
    /// Live groups; a group is removed when its last member leaves.
    groups: DashMap<GroupId, Group>,
    /// Relays waiting for an answer, all callers together: what a leak check
    /// after a soak or a shutdown wants to see back at 0.
    relays_in_flight: AtomicUsize,
    /// Told how each relay ended, and (through each connection's dispatch)
    /// of error answers and refused messages: metrics.
    observer: Arc<dyn Observer>,
}

impl Hub {
    /// An empty hub enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        Self::with_observer(limits, Arc::new(Unobserved))
    }

    /// An empty hub enforcing `limits` and telling `observer` how each relay ended.
    pub fn with_observer(limits: Limits, observer: Arc<dyn Observer>) -> Self {
        let shared = Shared {
            limits,
            users: DashMap::new(),
            groups: DashMap::new(),
            relays_in_flight: AtomicUsize::new(0),
            observer,
        };
        Self { shared: Arc::new(shared) }
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
        HubStats { users: self.shared.users.len(), groups: self.shared.groups.len() }
    }

    /// Relays waiting for their target's answer, all callers together.
    pub fn relays_in_flight(&self) -> usize {
        self.shared.relays_in_flight.load(Ordering::Acquire)
    }

    fn register(&self, session: &Session) -> Result<UserId, ErrorCode> {
        if session.user().is_some() {
            return Err(ErrorCode::AlreadyInitialized);
        }
        let id = loop {
            let id = UserId::random();
            if let Entry::Vacant(slot) = self.shared.users.entry(id) {
                slot.insert(session.peer.clone());
                break id;
            }
        };
        // Requests of one connection start one at a time, so nobody else can
        // have set it since the check above.
        session.user.set(id).map_err(|_| ErrorCode::AlreadyInitialized)?;
        Ok(id)
    }

    fn create_group(&self, session: &Session, capability: Capability) -> Result<GroupId, ErrorCode> {
        let user = session.initialized()?;
        if session.lock_groups().len() >= self.shared.limits.max_groups_per_user {
            return Err(ErrorCode::LimitExceeded);
        }
        let creator = Member { id: user, peer: session.peer.clone() };
        let id = loop {
            let id = GroupId::random();
            if let Entry::Vacant(slot) = self.shared.groups.entry(id) {
                slot.insert(Group::new(capability, creator));
                break id;
            }
        };
        session.lock_groups().push(id);
        Ok(id)
    }

    fn join_group(&self, session: &Session, group_id: GroupId) -> Result<JoinResult, ErrorCode> {
        let user = session.initialized()?;
        let mut group = self.shared.groups.get_mut(&group_id).ok_or(ErrorCode::GroupNotFound)?;
        let joined = JoinResult { owner: group.owner().unwrap_or(user), capability: group.capability };
        if group.member(user).is_some() {
            return Ok(joined);
        }
        let mut groups = session.lock_groups();
        if groups.len() >= self.shared.limits.max_groups_per_user {
            return Err(ErrorCode::LimitExceeded);
        }
        let member = Member { id: user, peer: session.peer.clone() };
        if group.add(member, self.shared.limits.max_members_per_group)? == Added::Joined {
            groups.push(group_id);
            notify_members(&group, user, method::MEMBER_JOINED, group_id);
        }
        Ok(joined)
    }

    fn leave_group(&self, session: &Session, group_id: GroupId) -> Result<(), ErrorCode> {
        let user = session.initialized()?;
        self.remove_member(group_id, user)?;
        session.lock_groups().retain(|g| *g != group_id);
        Ok(())
    }

    /// Takes `user` out of the group, tells the rest, and drops the group
    /// when it is empty.
    fn remove_member(&self, group_id: GroupId, user: UserId) -> Result<(), ErrorCode> {
        let Entry::Occupied(mut entry) = self.shared.groups.entry(group_id) else {
            return Err(ErrorCode::GroupNotFound);
        };
        entry.get_mut().remove(user)?;
        if entry.get().members.is_empty() {
            entry.remove();
        } else {
            notify_members(entry.get(), user, method::MEMBER_LEFT, group_id);
        }
        Ok(())
    }

    fn members(&self, session: &Session, group_id: GroupId) -> Result<Vec<UserId>, ErrorCode> {
        let user = session.initialized()?;
        let group = self.shared.groups.get(&group_id).ok_or(ErrorCode::GroupNotFound)?;
        group.member(user).ok_or(ErrorCode::NotAMember)?;
        Ok(group.ids())
    }

    /// Checks a relay in the protocol's error order and returns the sender's
    /// id (stamped by the server, never taken from the client) and the target.
    fn route(&self, session: &Session, group_id: GroupId, to: UserId) -> Result<(UserId, Arc<PeerHandle>), ErrorCode> {
        let from = session.initialized()?;
        let group = self.shared.groups.get(&group_id).ok_or(ErrorCode::GroupNotFound)?;
        let target = group.route(from, to)?;
        Ok((from, target.peer.clone()))
    }

    /// Everything a closed connection leaves behind: its user leaves every
    /// group (the others get `member_left`), its id is released, and calls
    /// waiting on it fail with PeerGone.
    pub fn disconnect(&self, session: &Session, reason: CloseReason) {
        session.peer.close(reason);
        let Some(user) = session.user() else { return };
        let groups = std::mem::take(&mut *session.lock_groups());
        for group_id in groups {
            // A group can only be gone already if we were not in it anymore.
            let _ = self.remove_member(group_id, user);
        }
        self.shared.users.remove(&user);
        debug!(%user, "disconnected");
    }
}

/// Sends `method(group_id, user)` to every member but `user`. Called under
/// the group's lock, so notifications go out in the order changes happened.
fn notify_members(group: &Group, user: UserId, method: &str, group_id: GroupId) {
    let Ok(params) = to_json_raw_value(&(group_id, user)) else {
        return;
    };
    let frame = wire::request_frame(None, method, Some(&params));
    for member in group.members.iter().filter(|m| m.id != user) {
        // A member whose queue is full is being disconnected; its own cleanup
        // takes it out of the group.
        let _ = member.peer.send_frame(frame.clone());
    }
}

fn session(ext: &Extensions) -> Result<&Arc<Session>, ErrorObjectOwned> {
    ext.get::<Arc<Session>>()
        .ok_or_else(|| ErrorObjectOwned::owned(wire::code::INTERNAL_ERROR, "connection has no session", None::<()>))
}

#[jsonrpsee::core::async_trait]
impl SignalingServer for Hub {
    async fn init(&self, ext: &Extensions) -> RpcResult<UserId> {
        Ok(self.register(session(ext)?)?)
    }

    async fn create(&self, ext: &Extensions, capability: Option<Capability>) -> RpcResult<GroupId> {
        Ok(self.create_group(session(ext)?, capability.unwrap_or_default())?)
    }

    async fn join(&self, ext: &Extensions, group_id: GroupId) -> RpcResult<JoinResult> {
        Ok(self.join_group(session(ext)?, group_id)?)
    }

    async fn leave(&self, ext: &Extensions, group_id: GroupId) -> RpcResult<()> {
        Ok(self.leave_group(session(ext)?, group_id)?)
    }

    async fn get_members(&self, ext: &Extensions, group_id: GroupId) -> RpcResult<Vec<UserId>> {
        Ok(self.members(session(ext)?, group_id)?)
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
}

impl Hub {
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
        let (from, target) = match self.route(session, group_id, user_id) {
            Ok(route) => route,
            Err(e) => return refused(e.into()),
        };
        let params = relay_params(group_id, from, &data);
        if ext.get::<IsNotification>().is_some() {
            // Nobody waits for an answer, so a gone target is nobody's error.
            let _ = target.notify_raw(method::RELAY, &params);
            return (RelayOutcome::Forwarded, Ok(RawValue::NULL.to_owned()));
        }
        let Some(_in_flight) = session.begin_relay(self.shared.limits.max_relays_in_flight) else {
            return (RelayOutcome::Busy, Err(ErrorCode::Busy.into()));
        };
        self.shared.relays_in_flight.fetch_add(1, Ordering::AcqRel);
        let _hub_in_flight = InFlight(&self.shared.relays_in_flight);
        // `PeerHandle` is the `ClientT` behind the generated `PeerClient::on_relay`
        // stub; calling it directly skips the stub's param builder and its
        // second copy (and re-parse) of the answer: measured on the bench.
        match target.call_raw(method::RELAY, &params).await {
            Ok(Ok(answer)) => (RelayOutcome::Answered, Ok(answer)),
            // The target's own error passes through unchanged.
            Ok(Err(error)) => match serde_json::from_str::<ErrorObjectOwned>(error.get()) {
                Ok(error) => (RelayOutcome::TargetError, Err(error)),
                Err(_) => (RelayOutcome::PeerGone, Err(ErrorCode::PeerGone.into())),
            },
            Err(CallFailed::Timeout) => (RelayOutcome::Timeout, Err(ErrorCode::RelayTimeout.into())),
            Err(CallFailed::Gone) => (RelayOutcome::PeerGone, Err(ErrorCode::PeerGone.into())),
        }
    }
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

    fn connect() -> (Session, Arc<PeerHandle>) {
        let peer = Arc::new(PeerHandle::new(64, Duration::from_secs(1)));
        (Session::new(peer.clone()), peer)
    }

    fn user(hub: &Hub) -> (Session, Arc<PeerHandle>, UserId) {
        let (session, rx) = connect();
        let id = hub.register(&session).unwrap();
        (session, rx, id)
    }

    fn frames(rx: &PeerHandle) -> Vec<serde_json::Value> {
        std::iter::from_fn(|| rx.try_next_frame()).map(|f| serde_json::from_str(&f).unwrap()).collect()
    }

    #[test]
    fn joins_and_leaves_reach_every_other_member_in_order() {
        let hub = Hub::new(Limits::DEFAULT);
        let (a, ra, ua) = user(&hub);
        let (b, rb, ub) = user(&hub);
        let (c, rc, uc) = user(&hub);
        let g = hub.create_group(&a, Capability::DEFAULT).unwrap();
        hub.join_group(&b, g).unwrap();
        hub.join_group(&c, g).unwrap();
        hub.leave_group(&b, g).unwrap();
        let note = |m: &str, u: UserId| serde_json::json!({"jsonrpc": "2.0", "method": m, "params": [g, u]});
        assert_eq!(frames(&ra), [note("member_joined", ub), note("member_joined", uc), note("member_left", ub)]);
        assert_eq!(frames(&rb), [note("member_joined", uc)]);
        assert_eq!(frames(&rc), [note("member_left", ub)]);
        assert_eq!(hub.members(&c, g).unwrap(), [ua, uc]);
    }

    #[test]
    fn uninitialised_sessions_can_do_nothing_but_register_once() {
        let hub = Hub::new(Limits::DEFAULT);
        let (s, _rx) = connect();
        assert_eq!(hub.create_group(&s, Capability::DEFAULT), Err(ErrorCode::NotInitialized));
        hub.register(&s).unwrap();
        assert_eq!(hub.register(&s), Err(ErrorCode::AlreadyInitialized));
        assert_eq!(hub.stats(), HubStats { users: 1, groups: 0 });
    }

    #[test]
    fn disconnect_leaves_every_group_drops_empty_ones_and_releases_the_user() {
        let hub = Hub::new(Limits::DEFAULT);
        let (a, _ra, _) = user(&hub);
        let (b, rb, ub) = user(&hub);
        let shared = hub.create_group(&a, Capability::DEFAULT).unwrap();
        let _alone = hub.create_group(&a, Capability::DEFAULT).unwrap();
        hub.join_group(&b, shared).unwrap();
        hub.disconnect(&a, CloseReason::NORMAL);
        assert!(a.peer().is_closed());
        assert_eq!(hub.stats(), HubStats { users: 1, groups: 1 });
        assert_eq!(hub.members(&b, shared).unwrap(), [ub], "b is owner now");
        assert_eq!(frames(&rb).len(), 1, "member_left");
        hub.disconnect(&b, CloseReason::NORMAL);
        assert_eq!(hub.stats(), HubStats { users: 0, groups: 0 });
    }

    #[test]
    fn relays_in_flight_are_counted_until_their_guard_drops() {
        let (s, _rx) = connect();
        let first = s.begin_relay(2).unwrap();
        let second = s.begin_relay(2).unwrap();
        assert!(s.begin_relay(2).is_none());
        drop(first);
        assert!(s.begin_relay(2).is_some());
        drop(second);
    }
}
