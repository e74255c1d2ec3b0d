//! `Capability`: who in a group may signal whom, and what clients may send.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A group's capability: a set of the four flags, an integer from 1 to 15.
///
/// The server uses it to decide which pairs may `relay` to each other
/// ([`Capability::allows_pair`]); clients use it to decide what they may send
/// over their DataChannels.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(test, derive(ts_rs::TS), ts(type = "number"))]
pub struct Capability(u8);

impl Capability {
    /// Only the owner may broadcast.
    pub const BROADCAST_OWNER: Self = Self(1);
    /// Every member may broadcast.
    pub const BROADCAST_EVERYONE: Self = Self(2);
    /// Members may unicast to the owner, and the owner to them.
    pub const UNICAST_OWNER: Self = Self(4);
    /// Every member may unicast to every other member.
    pub const UNICAST_EVERYONE: Self = Self(8);
    /// What `create` without a capability makes: `BroadcastEveryone | UnicastEveryone`.
    pub const DEFAULT: Self = Self(10);

    /// The capability with these bits, if they are a valid one (1 to 15).
    pub const fn from_bits(bits: u8) -> Option<Self> {
        if bits >= 1 && bits <= 15 { Some(Self(bits)) } else { None }
    }

    /// The capability's bits, 1 to 15.
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// Whether every flag of `other` is set here.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// The pair rule for one kind of message: two members may exchange it
    /// when the capability has its *Everyone* bit, or when one of them is the
    /// owner and it has its *Owner* bit. Clients apply it to what they send
    /// each other; the TypeScript copy is checked against
    /// `typings/pairRule.json`, generated from this function.
    pub const fn allows(self, kind: Exchange, one_is_owner: bool) -> bool {
        let (owner, everyone) = match kind {
            Exchange::Broadcast => (Self::BROADCAST_OWNER, Self::BROADCAST_EVERYONE),
            Exchange::Unicast => (Self::UNICAST_OWNER, Self::UNICAST_EVERYONE),
        };
        self.contains(everyone) || (one_is_owner && self.contains(owner))
    }

    /// The pair rule for any message: whether two members may exchange
    /// something, which is when the server lets them `relay` to each other
    /// and when browsers link them. Owner-only groups therefore form a star,
    /// the rest a mesh.
    pub const fn allows_pair(self, one_is_owner: bool) -> bool {
        self.allows(Exchange::Broadcast, one_is_owner) || self.allows(Exchange::Unicast, one_is_owner)
    }
}

/// What two members exchange over their link, for [`Capability::allows`]:
/// each kind has an *Owner* and an *Everyone* flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Exchange {
    /// A message to every member the sender may reach.
    Broadcast,
    /// A message to one member, answered with a reply.
    Unicast,
}

impl Exchange {
    /// Both kinds.
    pub const ALL: [Self; 2] = [Self::Broadcast, Self::Unicast];
}

impl Default for Capability {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl std::ops::BitOr for Capability {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

impl fmt::Debug for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [&str; 4] = ["BroadcastOwner", "BroadcastEveryone", "UnicastOwner", "UnicastEveryone"];
        let mut names = NAMES.iter().enumerate().filter(|(bit, _)| self.0 & (1 << bit) != 0).map(|(_, n)| *n);
        write!(f, "Capability(")?;
        if let Some(first) = names.next() {
            write!(f, "{first}")?;
        }
        for name in names {
            write!(f, "|{name}")?;
        }
        write!(f, ")")
    }
}

impl Serialize for Capability {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u8(self.0)
    }
}

impl<'de> Deserialize<'de> for Capability {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Read as i64 so that 0, 16, 300 and -1 all get the same clear message
        // instead of serde's "invalid value: integer `300`, expected u8".
        let n = i64::deserialize(deserializer)?;
        u8::try_from(n)
            .ok()
            .and_then(Self::from_bits)
            .ok_or_else(|| serde::de::Error::custom(format!("capability must be an integer from 1 to 15, got {n}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_accepts_1_to_15_only() {
        for n in 1..=15 {
            assert_eq!(serde_json::from_str::<Capability>(&n.to_string()).unwrap().bits(), n);
        }
        for bad in ["0", "16", "-1", "1.5", "\"10\"", "null", "300"] {
            assert!(serde_json::from_str::<Capability>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pair_rule_makes_a_star_for_owner_only_groups_and_a_mesh_otherwise() {
        for bits in 1..=15u8 {
            let cap = Capability::from_bits(bits).unwrap();
            let has_everyone = bits & 0b1010 != 0;
            assert_eq!(cap.allows_pair(false), has_everyone, "{cap:?} member-member");
            assert!(cap.allows_pair(true), "{cap:?} owner-member: every capability has some bit");
        }
        assert!(!Capability::from_bits(5).unwrap().allows_pair(false));
    }

    #[test]
    fn each_kind_follows_its_own_owner_and_everyone_bits() {
        let cap = |bits| Capability::from_bits(bits).unwrap();
        // BroadcastOwner | UnicastEveryone.
        assert!(!cap(9).allows(Exchange::Broadcast, false));
        assert!(cap(9).allows(Exchange::Broadcast, true));
        assert!(cap(9).allows(Exchange::Unicast, false));
        // BroadcastEveryone only: no unicast at all, even with the owner.
        assert!(cap(2).allows(Exchange::Broadcast, false));
        assert!(!cap(2).allows(Exchange::Unicast, true));
    }

    #[test]
    fn default_is_broadcast_and_unicast_everyone() {
        assert_eq!(Capability::default(), Capability::BROADCAST_EVERYONE | Capability::UNICAST_EVERYONE);
        assert_eq!(format!("{:?}", Capability::DEFAULT), "Capability(BroadcastEveryone|UnicastEveryone)");
    }
}
