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

    const OWNER_BITS: u8 = Self::BROADCAST_OWNER.0 | Self::UNICAST_OWNER.0;
    const EVERYONE_BITS: u8 = Self::BROADCAST_EVERYONE.0 | Self::UNICAST_EVERYONE.0;

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

    /// The pair rule: two members may signal each other when the capability
    /// has an *Everyone* bit, or when one of them is the owner and it has an
    /// *Owner* bit. Owner-only groups therefore form a star, the rest a mesh.
    pub const fn allows_pair(self, one_is_owner: bool) -> bool {
        self.0 & Self::EVERYONE_BITS != 0 || (one_is_owner && self.0 & Self::OWNER_BITS != 0)
    }
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
    fn default_is_broadcast_and_unicast_everyone() {
        assert_eq!(Capability::default(), Capability::BROADCAST_EVERYONE | Capability::UNICAST_EVERYONE);
        assert_eq!(format!("{:?}", Capability::DEFAULT), "Capability(BroadcastEveryone|UnicastEveryone)");
    }
}
