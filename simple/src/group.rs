//! One group's membership as the in-memory router keeps it: members in join
//! order, the owner always first, and the capability's pair rule. Plain
//! data; locking and telling the members are the router's business.

use std::sync::Arc;

use webrtc_p2p_interfaces::{Capability, ErrorCode, UserId};

use crate::peer::PeerHandle;
use crate::router::Introduction;

/// A member's place in a group: who, how to reach them, and what the
/// others are told about them.
#[derive(Debug, Clone)]
pub(crate) struct Seat {
    pub(crate) user: UserId,
    pub(crate) target: Arc<PeerHandle>,
    pub(crate) intro: Introduction,
}

/// A group's state.
#[derive(Debug)]
pub(crate) struct Group {
    /// Who may signal whom; fixed at creation.
    pub(crate) capability: Capability,
    /// Members in join order. The owner is `seats[0]`: the creator first,
    /// and after an owner leaves, the earliest-joined remaining member.
    pub(crate) seats: Vec<Seat>,
}

/// What [`Group::add`] did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Added {
    /// The user is a new member.
    Joined,
    /// The user was a member already; nothing changed.
    AlreadyIn,
}

impl Group {
    pub(crate) fn new(capability: Capability, creator: Seat) -> Self {
        Self { capability, seats: vec![creator] }
    }

    /// The owner's id (groups are never empty: the router drops empty ones).
    pub(crate) fn owner(&self) -> Option<UserId> {
        self.seats.first().map(|s| s.user)
    }

    pub(crate) fn seat(&self, user: UserId) -> Option<&Seat> {
        self.seats.iter().find(|s| s.user == user)
    }

    /// The members' ids in join order.
    pub(crate) fn members(&self) -> Vec<UserId> {
        self.seats.iter().map(|s| s.user).collect()
    }

    /// Adds `seat` at the end unless its user is in already or the group is full.
    pub(crate) fn add(&mut self, seat: Seat, max_members: usize) -> Result<Added, ErrorCode> {
        if self.seat(seat.user).is_some() {
            return Ok(Added::AlreadyIn);
        }
        if self.seats.len() >= max_members {
            return Err(ErrorCode::LimitExceeded);
        }
        self.seats.push(seat);
        Ok(Added::Joined)
    }

    /// Removes `user`, keeping the others' join order (so the earliest-joined
    /// remaining member becomes owner when the owner leaves).
    pub(crate) fn remove(&mut self, user: UserId) -> Result<Seat, ErrorCode> {
        let at = self.seats.iter().position(|s| s.user == user).ok_or(ErrorCode::NotAMember)?;
        Ok(self.seats.remove(at))
    }

    /// Checks that `from` may relay to `to`, in the protocol's error order:
    /// NotAMember (caller), UserNotFound (target), PermissionDenied.
    pub(crate) fn route(&self, from: UserId, to: UserId) -> Result<&Seat, ErrorCode> {
        self.seat(from).ok_or(ErrorCode::NotAMember)?;
        let target = self.seat(to).ok_or(ErrorCode::UserNotFound)?;
        let owner = self.owner();
        if !self.capability.allows_pair(owner == Some(from) || owner == Some(to)) {
            return Err(ErrorCode::PermissionDenied);
        }
        Ok(target)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn member(n: u128) -> Seat {
        let target = Arc::new(PeerHandle::new(1, Duration::from_secs(1)));
        Seat { user: UserId::from_u128(n), target, intro: Introduction::Id }
    }

    fn group(cap: u8, n: u128) -> Group {
        let mut g = Group::new(Capability::from_bits(cap).unwrap(), member(1));
        for i in 2..=n {
            g.add(member(i), 256).unwrap();
        }
        g
    }

    #[test]
    fn members_stay_in_join_order_and_owner_is_first() {
        let g = group(10, 4);
        assert_eq!(g.members(), (1..=4).map(UserId::from_u128).collect::<Vec<_>>());
        assert_eq!(g.owner(), Some(UserId::from_u128(1)));
    }

    #[test]
    fn owner_leaving_hands_over_to_the_earliest_joined() {
        let mut g = group(10, 3);
        g.remove(UserId::from_u128(1)).unwrap();
        assert_eq!(g.owner(), Some(UserId::from_u128(2)));
        assert_eq!(g.members(), vec![UserId::from_u128(2), UserId::from_u128(3)]);
        assert_eq!(g.remove(UserId::from_u128(1)).unwrap_err(), ErrorCode::NotAMember);
    }

    #[test]
    fn joining_twice_changes_nothing_and_a_full_group_refuses() {
        let mut g = group(10, 2);
        assert_eq!(g.add(member(2), 256), Ok(Added::AlreadyIn));
        assert_eq!(g.seats.len(), 2);
        assert_eq!(g.add(member(3), 2), Err(ErrorCode::LimitExceeded));
        assert_eq!(g.add(member(2), 2), Ok(Added::AlreadyIn), "already-in wins over full");
    }

    #[test]
    fn owner_only_group_routes_only_to_and_from_the_owner() {
        let g = group(5, 3);
        let [owner, a, b] = [1, 2, 3].map(UserId::from_u128);
        assert!(g.route(a, owner).is_ok());
        assert!(g.route(owner, b).is_ok());
        assert_eq!(g.route(a, b).unwrap_err(), ErrorCode::PermissionDenied);
    }

    #[test]
    fn route_checks_caller_then_target_then_permission() {
        let g = group(5, 3);
        let stranger = UserId::from_u128(99);
        let [_, a, b] = [1, 2, 3].map(UserId::from_u128);
        assert_eq!(g.route(stranger, stranger).unwrap_err(), ErrorCode::NotAMember);
        assert_eq!(g.route(a, stranger).unwrap_err(), ErrorCode::UserNotFound);
        assert_eq!(g.route(a, b).unwrap_err(), ErrorCode::PermissionDenied);
        assert!(group(10, 3).route(a, b).is_ok());
    }
}
