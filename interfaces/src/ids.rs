//! `UserId` and `GroupId`: 128 random bits, written as 32 lowercase hex digits.
//!
//! Both ids are capabilities in practice (knowing a group id lets you join it),
//! so they come from the operating system's CSPRNG and the wire form is strict:
//! anything but exactly 32 lowercase hex digits is rejected at parse time, which
//! the server reports as `-32602`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a string is not an id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an id is 32 lowercase hex digits")]
pub struct InvalidId;

/// 32 lowercase hex digits, or [`InvalidId`].
fn parse_hex128(s: &str) -> Result<u128, InvalidId> {
    let well_formed = s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !well_formed {
        return Err(InvalidId);
    }
    u128::from_str_radix(s, 16).map_err(|_| InvalidId)
}

/// Reads an id from the string as the deserializer holds it, never copied
/// (`Cow<str>`'s own `Deserialize` always copies it into a `String`: two
/// allocations on every relay).
struct HexVisitor;

impl serde::de::Visitor<'_> for HexVisitor {
    type Value = u128;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // As `String`'s visitor says it, so that errors read as before.
        f.write_str("a string")
    }

    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<u128, E> {
        parse_hex128(s).map_err(E::custom)
    }
}

/// 128 bits from the operating system's CSPRNG.
fn random_u128() -> u128 {
    let mut bytes = [0u8; 16];
    // The OS RNG failing means the machine cannot hand out unguessable ids at
    // all; continuing with weaker ids would be a silent security hole.
    #[allow(clippy::expect_used)]
    getrandom::fill(&mut bytes).expect("the operating system's random number generator failed");
    u128::from_le_bytes(bytes)
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[cfg_attr(test, derive(ts_rs::TS), ts(type = "string"))]
        pub struct $name(u128);

        impl $name {
            /// A fresh id: 128 bits from the operating system's CSPRNG.
            pub fn random() -> Self {
                Self(random_u128())
            }

            /// The id's 128 bits (for tests and tools; the wire form is hex).
            pub const fn from_u128(bits: u128) -> Self {
                Self(bits)
            }

            /// The id's 128 bits.
            pub const fn as_u128(self) -> u128 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:032x}", self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self)
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;
            fn from_str(s: &str) -> Result<Self, InvalidId> {
                parse_hex128(s).map(Self)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserializer.deserialize_str(HexVisitor).map(Self)
            }
        }
    };
}

id_type!(
    /// A connected user, handed out by `init`; never handed out again.
    UserId
);
id_type!(
    /// A group, handed out by `create`; it lives while it has members.
    GroupId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_is_written_as_32_lowercase_hex_digits() {
        let id = UserId::from_u128(0xABCDEF);
        assert_eq!(id.to_string(), "00000000000000000000000000abcdef");
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"00000000000000000000000000abcdef\"");
    }

    #[test]
    fn id_round_trips_through_json() {
        let id = GroupId::random();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<GroupId>(&json).unwrap(), id);
    }

    #[test]
    fn id_rejects_anything_but_32_lowercase_hex_digits() {
        for bad in [
            "",
            "00000000000000000000000000ABCDEF",
            "0000000000000000000000000000000",
            "000000000000000000000000000000000",
            "00000000-0000-0000-0000-000000000000",
            "0000000000000000000000000000000g",
            "+0000000000000000000000000000000",
        ] {
            assert_eq!(bad.parse::<UserId>(), Err(InvalidId), "{bad:?}");
        }
        assert!(serde_json::from_str::<UserId>("42").is_err());
        assert!(serde_json::from_str::<UserId>("null").is_err());
    }

    /// A hundred thousand draws: a generator with 32 bits of entropy or
    /// fewer repeats one with probability above 2/3 (birthday bound), and a
    /// bit fixed in every draw stays fixed. The server's own test
    /// (`server/tests/isolation.rs`) checks that every `init` takes a fresh
    /// draw, which needs far fewer connections.
    #[test]
    fn a_hundred_thousand_random_ids_differ_in_all_128_bits() {
        const DRAWS: usize = 100_000;
        let mut ids = std::collections::HashSet::with_capacity(DRAWS);
        let (mut ones, mut zeros) = (0u128, 0u128);
        for id in (0..DRAWS).map(|_| UserId::random().as_u128()) {
            assert!(ids.insert(id), "id {id:032x} drawn twice");
            ones |= id;
            zeros |= !id;
        }
        assert_eq!((ones, zeros), (u128::MAX, u128::MAX), "fixed bits: {:032x}", !(ones & zeros));
    }
}
