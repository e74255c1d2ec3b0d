//! Resume tickets: what `session` hands out and `resume` takes back. A
//! ticket names one session (its user id and a random epoch drawn when the
//! session first asked for a ticket) and an expiry, signed with
//! HMAC-SHA256 under the server's resume key, so it cannot be forged,
//! stretched or moved to another session; a server with another key (a
//! foreign ticket) rejects it as forged.
//!
//! Layout, base64url without padding: user id (16 bytes, big-endian), epoch
//! (8), expiry in Unix milliseconds (8), then the MAC of those 32 bytes (32).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use webrtc_p2p_interfaces::UserId;

/// The signed part's length, and the MAC's.
const BODY: usize = 32;
const MAC: usize = 32;

/// The key tickets are signed with.
#[derive(Clone)]
pub struct ResumeKey(Hmac<Sha256>);

impl std::fmt::Debug for ResumeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResumeKey(..)")
    }
}

/// Why a ticket was refused (a metrics label each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TicketError {
    /// Not a ticket at all.
    Malformed,
    /// The MAC does not match: forged, altered, or signed by another key.
    Forged,
    /// Past its expiry.
    Expired,
}

/// What a valid ticket says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    /// The session's user.
    pub user: UserId,
    /// The session's epoch (see the module doc).
    pub epoch: u64,
    /// When it stops being valid, in Unix milliseconds.
    pub expires_ms: u64,
}

impl ResumeKey {
    /// A key from a secret (any length: HMAC hashes long ones).
    pub fn new(secret: &[u8]) -> Self {
        // HMAC takes keys of any length, so this cannot fail.
        Self(Hmac::new_from_slice(secret).unwrap_or_else(|_| unreachable!("HMAC accepts any key length")))
    }

    /// A random key, for a server given no secret: only this process can
    /// verify its tickets.
    pub fn random() -> Self {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).expect("the operating system's random number generator failed");
        Self::new(&secret)
    }

    /// The ticket text for `ticket`.
    pub fn issue(&self, ticket: Ticket) -> String {
        let mut bytes = [0u8; BODY + MAC];
        bytes[..16].copy_from_slice(&ticket.user.as_u128().to_be_bytes());
        bytes[16..24].copy_from_slice(&ticket.epoch.to_be_bytes());
        bytes[24..32].copy_from_slice(&ticket.expires_ms.to_be_bytes());
        let mut mac = self.0.clone();
        mac.update(&bytes[..BODY]);
        bytes[BODY..].copy_from_slice(&mac.finalize().into_bytes());
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// What `text` says, if this key signed it and it has not expired at `now_ms`.
    pub fn verify(&self, text: &str, now_ms: u64) -> Result<Ticket, TicketError> {
        let mut bytes = [0u8; BODY + MAC];
        match URL_SAFE_NO_PAD.decode_slice(text, &mut bytes) {
            Ok(n) if n == bytes.len() => {}
            _ => return Err(TicketError::Malformed),
        }
        let mut mac = self.0.clone();
        mac.update(&bytes[..BODY]);
        // Constant-time comparison.
        mac.verify_slice(&bytes[BODY..]).map_err(|_| TicketError::Forged)?;
        let u64_at = |at: usize| {
            let mut word = [0u8; 8];
            word.copy_from_slice(&bytes[at..at + 8]);
            u64::from_be_bytes(word)
        };
        let mut user = [0u8; 16];
        user.copy_from_slice(&bytes[..16]);
        let ticket =
            Ticket { user: UserId::from_u128(u128::from_be_bytes(user)), epoch: u64_at(16), expires_ms: u64_at(24) };
        if ticket.expires_ms <= now_ms {
            return Err(TicketError::Expired);
        }
        Ok(ticket)
    }
}

/// Now in Unix milliseconds.
pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticket() -> Ticket {
        Ticket { user: UserId::random(), epoch: 7, expires_ms: 2_000 }
    }

    #[test]
    fn a_ticket_verifies_under_its_key_until_it_expires() {
        let key = ResumeKey::new(b"secret");
        let text = key.issue(ticket());
        assert_eq!(text.len(), 86);
        assert_eq!(key.verify(&text, 1_999).map(|t| t.epoch), Ok(7));
        assert_eq!(key.verify(&text, 2_000), Err(TicketError::Expired));
        assert!(ResumeKey::new(b"secret").verify(&text, 0).is_ok(), "same secret, same key");
    }

    #[test]
    fn forged_foreign_and_garbled_tickets_fail() {
        let key = ResumeKey::new(b"secret");
        let text = key.issue(ticket());
        assert_eq!(ResumeKey::random().verify(&text, 0), Err(TicketError::Forged));
        // Flip one bit of the expiry: the MAC no longer matches.
        let mut bytes = URL_SAFE_NO_PAD.decode(&text).unwrap();
        bytes[31] ^= 1;
        assert_eq!(key.verify(&URL_SAFE_NO_PAD.encode(&bytes), 0), Err(TicketError::Forged));
        assert_eq!(key.verify("", 0), Err(TicketError::Malformed));
        assert_eq!(key.verify(&text[..80], 0), Err(TicketError::Malformed));
        assert_eq!(key.verify(&format!("{text}AA"), 0), Err(TicketError::Malformed));
        assert_eq!(key.verify("not base64!", 0), Err(TicketError::Malformed));
    }
}
