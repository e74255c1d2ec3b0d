//! `Router`: what the hub needs from the rest of the service — claim and
//! find a user's session, deliver a frame or a call to it, keep the groups'
//! state and tell their members — behind one trait, so that the hub's
//! methods run the same over the in-memory [`LocalRouter`] (one process, the
//! default) and over a router shared by many nodes.
//!
//! Shaped for the latter: every operation is asynchronous and fallible;
//! group state changes only through single operations of the router (create,
//! join with its limits, leave with the owner hand-over, members, route), so
//! a shared router can make each one atomic (a script or a transaction) and
//! keep "members in join order, owner first, gone when empty" under
//! concurrent joins on different nodes; a session is addressed by user id,
//! through its [`Target`], which may be a handle on this node, a way to
//! another node, or a buffer while the session has no connection.
//!
//! `join` and `leave` tell the group's other members (`member_joined`,
//! `member_left`) as part of the change, so that every member sees changes
//! in the order they took effect.

use std::fmt::Write as _;
use std::future::Future;
use std::sync::{Arc, Weak};

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use webrtc_p2p_interfaces::{Capability, ErrorCode, GroupId, MemberInfo, Members, UserId, method};

use crate::group::{Added, Group, Seat};
use crate::hub::HubStats;
use crate::peer::{Answer, CallFailed, PeerHandle, Position, Then};
use crate::wire;

/// How to reach one user's session.
pub trait Target: Clone + Send + Sync + std::fmt::Debug + 'static {
    /// Sends a notification (params as JSON text, an array or object, that
    /// the caller vouches for). Never waits.
    fn notify(&self, method: &str, params: &str) -> Result<(), CallFailed>;

    /// Calls `method` and waits for the answer, or until `cancelled`
    /// completes: then the target is told (`$/cancelRequest`) and the call
    /// fails with [`CallFailed::Cancelled`]. Everything before the first
    /// await (queueing the frame included) happens on the caller's stack, so
    /// calls keep the order in which they were made.
    /// `params` is taken by value so that a waiting call need not hold it.
    fn call(
        &self,
        method: &str,
        params: String,
        cancelled: impl Future<Output = ()> + Send,
    ) -> impl Future<Output = Result<Answer, CallFailed>> + Send;

    /// The handle, when the target is a client of this process.
    fn local_peer(&self) -> Option<&Arc<PeerHandle>> {
        None
    }

    /// What makes calls to the target without a task, if it can: then a
    /// relay to it needs none either (see [`Callee`]).
    fn callee(&self) -> Option<Arc<dyn Callee>> {
        None
    }
}

/// A target that takes calls without a task waiting for each: the answer
/// goes to a [`Then`] run by whichever task learns it. A client of this
/// process ([`PeerHandle::call_then`]), or a way to another node.
pub trait Callee: Send + Sync + std::fmt::Debug {
    /// Calls `method` with the params written as `params`, one piece after
    /// the other (JSON text the caller vouches for). The call is made (its
    /// frame queued, in the order calls are made) before this returns;
    /// `then` runs once, with the answer or why there is none (at once when
    /// the call cannot be made), a timeout included. Returns the call's id
    /// for [`cancel_call`](Self::cancel_call).
    fn call_then(&self, method: &str, params: &[&str], then: Then) -> u64;

    /// Gives up on call `id`: the target is told (`$/cancelRequest`) and
    /// its `then` gets `Cancelled`. `false` (nothing done) when the call
    /// ended already.
    fn cancel_call(&self, id: u64) -> bool;
}

impl Callee for PeerHandle {
    fn call_then(&self, method: &str, params: &[&str], then: Then) -> u64 {
        self.call_then_with(|call| wire::call_frame_parts(call, method, params), then)
    }

    fn cancel_call(&self, id: u64) -> bool {
        PeerHandle::cancel_call(self, id)
    }
}

/// A client connected to this process.
impl Target for Arc<PeerHandle> {
    fn local_peer(&self) -> Option<&Arc<PeerHandle>> {
        Some(self)
    }

    fn callee(&self) -> Option<Arc<dyn Callee>> {
        Some(self.clone())
    }

    fn notify(&self, method: &str, params: &str) -> Result<(), CallFailed> {
        PeerHandle::notify(self, method, params)
    }

    fn call(
        &self,
        method: &str,
        params: String,
        cancelled: impl Future<Output = ()> + Send,
    ) -> impl Future<Output = Result<Answer, CallFailed>> + Send {
        PeerHandle::call_until(self, method, params, cancelled)
    }
}

/// What the other members learn about a member besides its id.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Introduction {
    /// Nothing: a server without join tokens (`member_joined` has two params).
    #[default]
    Id,
    /// Its join token's `info` (`member_joined`'s third param, `null` for
    /// `None`; `get_members` with `info: true`).
    Info(Option<Arc<serde_json::Value>>),
}

impl Introduction {
    fn info(&self) -> Option<serde_json::Value> {
        match self {
            Self::Id | Self::Info(None) => None,
            Self::Info(Some(info)) => Some((**info).clone()),
        }
    }
}

/// What [`Router::join`] found or did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Joined {
    /// The group's owner after the join.
    pub owner: UserId,
    /// The group's capability.
    pub capability: Capability,
    /// Whether the user is a new member (`false`: it was one already).
    pub added: bool,
    /// How many members were told (`member_joined`): the fan-out the joiner
    /// is charged for.
    pub told: usize,
}

/// Who wants to join a group, and what the hub decided about it.
#[derive(Debug, Clone)]
pub struct Entrant {
    /// The user.
    pub user: UserId,
    /// Its join token lets it join this group.
    pub granted: bool,
    /// It may be in one more group.
    pub room: bool,
    /// What the other members are told about it.
    pub intro: Introduction,
}

/// A resumable session leaving this node for another, where its client
/// resumed: what the hub gives up, for the router to send there.
#[derive(Debug)]
pub struct Departure {
    /// The frames to send the client from its count on, in order.
    pub frames: Vec<String>,
    /// The session's counts and next call id.
    pub position: Position,
    /// The groups it is in, as this node knows them.
    pub groups: Vec<GroupId>,
    /// Its grants, as [`Grants::to_json`](crate::auth::Grants::to_json) writes them.
    pub grants: Option<String>,
    /// Its handle here: frames queued to it from now on (answers to the
    /// client's requests still running here, messages on their way) are
    /// for the router to forward, and the answers to its calls to the
    /// client come back to it.
    pub peer: Arc<PeerHandle>,
}

/// A session that came from another node, as the router took it over.
#[derive(Debug)]
pub struct Arrival {
    /// The groups it is in.
    pub groups: Vec<GroupId>,
    /// Its counts (the frames to replay are queued on the new handle).
    pub position: Position,
    /// Its grants, as [`Grants::to_json`](crate::auth::Grants::to_json)
    /// wrote them; `None` when its node is gone and never said.
    pub grants: Option<String>,
}

/// The hub's sessions, as a router that hands them over to other nodes
/// reaches them.
pub trait Sessions: Send + Sync + 'static {
    /// The resumable session of `user` with ticket epoch `epoch` leaves
    /// this node, its client having received `received` frames; `None`
    /// when this node holds no such session.
    fn depart(&self, user: UserId, epoch: u64, received: u64) -> Option<Departure>;

    /// The session of `user` that `peer` serves here lives on another node
    /// now (its client resumed there while this node was cut off from the
    /// others): it ends here without leaving its groups, which are that
    /// node's now, and an open connection closes with 4001. Returns the
    /// groups it was in here.
    fn disown(&self, user: UserId, peer: &Arc<PeerHandle>) -> Vec<GroupId>;
}

/// Users, their sessions and the groups, for one hub.
///
/// The errors are the protocol's; a router that can be unavailable answers
/// with a code of its own for that, and leaves nothing half done.
pub trait Router: Send + Sync + std::fmt::Debug + 'static {
    /// How this router reaches a session.
    type Target: Target;

    /// Gives the session of `peer`, a client connected to this process, a
    /// fresh user id (`init`).
    fn init(&self, peer: Arc<PeerHandle>) -> impl Future<Output = Result<UserId, ErrorCode>> + Send;

    /// The session of `user`, if it has one.
    fn find(&self, user: UserId) -> impl Future<Output = Option<Self::Target>> + Send;

    /// Releases `user`'s id; call after it left its groups.
    fn remove(&self, user: UserId) -> impl Future<Output = ()> + Send;

    /// Makes a group with `owner` as owner and first member (`create`),
    /// introduced to later members by `intro`.
    fn create(
        &self,
        owner: UserId,
        capability: Capability,
        intro: Introduction,
    ) -> impl Future<Output = Result<GroupId, ErrorCode>> + Send;

    /// Adds `entrant` to the group and tells the other members (`join`),
    /// with its introduction. Checked in this order: the group exists
    /// (GroupNotFound); the user is in already (nothing changes); its join
    /// token grants this group (PermissionDenied); it may be in one more
    /// group, and the group has fewer than `max_members` (LimitExceeded).
    fn join(
        &self,
        group: GroupId,
        entrant: Entrant,
        max_members: usize,
    ) -> impl Future<Output = Result<Joined, ErrorCode>> + Send;

    /// Takes `user` out of the group (`leave`): the earliest-joined
    /// remaining member becomes owner if the owner left, the others are
    /// told, and the group is gone once empty. Returns how many members
    /// were told (`member_left`): the fan-out the leaver is charged for.
    fn leave(&self, group: GroupId, user: UserId) -> impl Future<Output = Result<usize, ErrorCode>> + Send;

    /// The group's members in join order, owner first, for a member of it
    /// (`get_members`); each with its `info` when `with_info`.
    fn get_members(
        &self,
        group: GroupId,
        user: UserId,
        with_info: bool,
    ) -> impl Future<Output = Result<Members, ErrorCode>> + Send;

    /// Where a relay from `from` to `to` in the group goes, checked in the
    /// protocol's order: GroupNotFound, NotAMember (caller), UserNotFound
    /// (target), PermissionDenied (the pair rule).
    fn route(
        &self,
        group: GroupId,
        from: UserId,
        to: UserId,
    ) -> impl Future<Output = Result<Self::Target, ErrorCode>> + Send;

    /// [`route`](Self::route), when the answer is known without waiting
    /// (a router in this process's memory); `None`: ask `route`.
    fn route_now(&self, group: GroupId, from: UserId, to: UserId) -> Option<Result<Self::Target, ErrorCode>> {
        let _ = (group, from, to);
        None
    }

    /// The users and groups this router holds for this process.
    fn stats(&self) -> HubStats;

    /// Lets the router reach the hub's sessions (to hand one over to
    /// another node); the hub calls it once, when it is made.
    fn serve_sessions(&self, sessions: Weak<dyn Sessions>) {
        let _ = sessions;
    }

    /// Whether a session this process holds can move to another process
    /// (a router shared by many nodes): then a node that stops hands its
    /// resumable sessions over rather than ending them.
    fn moves_sessions(&self) -> bool {
        false
    }

    /// The server is stopping and its connections have closed: resolves once
    /// whatever this router still had to send to other processes (a
    /// hand-over's state, answers on their way) is out. The caller bounds
    /// the wait.
    fn stop(&self) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// `user`'s session may be suspended and resumed (its client called
    /// `session`), with these grants (JSON text): a router shared by many
    /// nodes keeps that, so that the session outlives its node.
    fn resumable(&self, user: UserId, grants: &str) -> impl Future<Output = ()> + Send {
        let _ = (user, grants);
        async {}
    }

    /// Moves `user`'s session, held by another node, to `peer` on this
    /// one, its client having received `received` frames: the frames to
    /// replay are queued on `peer`, and the session is this node's from
    /// then on (groups untouched). `Ok(None)` when no other node holds
    /// such a session (always, for a router of one process).
    fn take_over(
        &self,
        user: UserId,
        epoch: u64,
        received: u64,
        peer: Arc<PeerHandle>,
    ) -> impl Future<Output = Result<Option<Arrival>, ErrorCode>> + Send {
        let _ = (user, epoch, received, peer);
        async { Ok(None) }
    }
}

/// Everything in this process's memory: the router of a single server.
///
/// Locking: a group's state is changed, and its members told, under that
/// group's map entry lock, so every member sees joins and leaves in the
/// order they took effect. Nothing is locked across an await (and nothing
/// here awaits: every future is ready when first polled).
#[derive(Debug, Default)]
pub struct LocalRouter {
    /// Live users; an id is only handed out when it is not in here.
    users: DashMap<UserId, Arc<PeerHandle>>,
    /// Live groups; a group is removed when its last member leaves.
    groups: DashMap<GroupId, Group>,
}

impl Router for LocalRouter {
    type Target = Arc<PeerHandle>;

    async fn init(&self, peer: Arc<PeerHandle>) -> Result<UserId, ErrorCode> {
        loop {
            let id = UserId::random();
            if let Entry::Vacant(slot) = self.users.entry(id) {
                slot.insert(peer);
                return Ok(id);
            }
        }
    }

    async fn find(&self, user: UserId) -> Option<Arc<PeerHandle>> {
        self.users.get(&user).map(|target| target.clone())
    }

    async fn remove(&self, user: UserId) {
        self.users.remove(&user);
    }

    async fn create(&self, owner: UserId, capability: Capability, intro: Introduction) -> Result<GroupId, ErrorCode> {
        let target = self.users.get(&owner).map(|target| target.clone()).ok_or(ErrorCode::NotInitialized)?;
        loop {
            let id = GroupId::random();
            if let Entry::Vacant(slot) = self.groups.entry(id) {
                slot.insert(Group::new(capability, Seat { user: owner, target, intro }));
                return Ok(id);
            }
        }
    }

    async fn join(&self, group_id: GroupId, entrant: Entrant, max_members: usize) -> Result<Joined, ErrorCode> {
        let Entrant { user, granted, room, intro } = entrant;
        let mut group = self.groups.get_mut(&group_id).ok_or(ErrorCode::GroupNotFound)?;
        let mut joined =
            Joined { owner: group.owner().unwrap_or(user), capability: group.capability, added: false, told: 0 };
        if group.seat(user).is_some() {
            return Ok(joined);
        }
        if !granted {
            return Err(ErrorCode::PermissionDenied);
        }
        if !room {
            return Err(ErrorCode::LimitExceeded);
        }
        let target = self.users.get(&user).map(|target| target.clone()).ok_or(ErrorCode::NotInitialized)?;
        let params = match &intro {
            Introduction::Id => tell_params(group_id, user),
            Introduction::Info(info) => {
                let info = info.as_deref().map_or_else(|| "null".to_owned(), serde_json::Value::to_string);
                format!("[\"{group_id}\",\"{user}\",{info}]")
            }
        };
        if group.add(Seat { user, target, intro }, max_members)? == Added::Joined {
            joined.added = true;
            joined.told = tell_members(&group, user, method::MEMBER_JOINED, &params);
        }
        Ok(joined)
    }

    async fn leave(&self, group_id: GroupId, user: UserId) -> Result<usize, ErrorCode> {
        let Entry::Occupied(mut entry) = self.groups.entry(group_id) else {
            return Err(ErrorCode::GroupNotFound);
        };
        entry.get_mut().remove(user)?;
        if entry.get().seats.is_empty() {
            entry.remove();
            return Ok(0);
        }
        Ok(tell_members(entry.get(), user, method::MEMBER_LEFT, &tell_params(group_id, user)))
    }

    async fn get_members(&self, group_id: GroupId, user: UserId, with_info: bool) -> Result<Members, ErrorCode> {
        let group = self.groups.get(&group_id).ok_or(ErrorCode::GroupNotFound)?;
        group.seat(user).ok_or(ErrorCode::NotAMember)?;
        if !with_info {
            return Ok(Members::Ids(group.members()));
        }
        let members = group.seats.iter().map(|s| MemberInfo { user_id: s.user, info: s.intro.info() });
        Ok(Members::WithInfo(members.collect()))
    }

    async fn route(&self, group_id: GroupId, from: UserId, to: UserId) -> Result<Arc<PeerHandle>, ErrorCode> {
        self.route_now(group_id, from, to).unwrap_or(Err(ErrorCode::GroupNotFound))
    }

    fn route_now(&self, group_id: GroupId, from: UserId, to: UserId) -> Option<Result<Arc<PeerHandle>, ErrorCode>> {
        let route = || {
            let group = self.groups.get(&group_id).ok_or(ErrorCode::GroupNotFound)?;
            Ok(group.route(from, to)?.target.clone())
        };
        Some(route())
    }

    fn stats(&self) -> HubStats {
        HubStats { users: self.users.len(), groups: self.groups.len() }
    }
}

/// `[group_id, user_id]`.
fn tell_params(group_id: GroupId, user: UserId) -> String {
    let mut params = String::with_capacity(72);
    let _ = write!(params, "[\"{group_id}\",\"{user}\"]");
    params
}

/// Sends `method(params)` to every member but `user`. Called under the
/// group's lock, so notifications go out in the order changes happened.
/// Returns how many were told.
fn tell_members(group: &Group, user: UserId, method: &str, params: &str) -> usize {
    let mut told = 0;
    for seat in group.seats.iter().filter(|s| s.user != user) {
        // A member whose queue is full is being disconnected; its own cleanup
        // takes it out of the group.
        let _ = seat.target.notify(method, params);
        told += 1;
    }
    told
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_user_is_found_by_id_until_removed() {
        let router = LocalRouter::default();
        let peer = Arc::new(PeerHandle::new(8, Duration::from_secs(1)));
        let user = router.init(peer.clone()).await.unwrap();
        let found = router.find(user).await.expect("found");
        assert!(Arc::ptr_eq(&found, &peer));
        assert_eq!(router.stats(), HubStats { users: 1, groups: 0 });
        router.remove(user).await;
        assert!(router.find(user).await.is_none());
        assert_eq!(router.stats(), HubStats { users: 0, groups: 0 });
    }
}
