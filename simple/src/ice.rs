//! The ICE servers `session` hands out: STUN URLs as given, and TURN URLs
//! with short-lived credentials of the TURN REST API, which coturn checks
//! with `use-auth-secret` and the same `static-auth-secret`: the username is
//! `"<unix expiry>:<user_id>"`, the password base64(HMAC-SHA1(secret,
//! username)). No TURN server needs to know our users.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use webrtc_p2p_interfaces::{IceServer, UserId};

/// How long TURN credentials last by default.
pub const DEFAULT_TURN_TTL: Duration = Duration::from_secs(3600);

/// TURN servers sharing one secret with this server.
#[derive(Clone)]
pub struct Turn {
    /// `turn:`/`turns:` URLs.
    pub urls: Vec<String>,
    /// The TURN servers' `static-auth-secret`.
    secret: Vec<u8>,
    /// How long each credential lasts.
    pub ttl: Duration,
}

impl std::fmt::Debug for Turn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_struct("Turn").field("urls", &self.urls).field("ttl", &self.ttl).finish_non_exhaustive()
    }
}

impl Turn {
    /// TURN at `urls`, credentials signed with `secret`, lasting `ttl`.
    pub fn new(urls: Vec<String>, secret: impl Into<Vec<u8>>, ttl: Duration) -> Self {
        Self { urls, secret: secret.into(), ttl }
    }

    /// The credentials for `user` issued at `now`: username and password.
    pub fn credentials(&self, user: UserId, now: SystemTime) -> (String, String) {
        let expiry = (now + self.ttl).duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let username = format!("{expiry}:{user}");
        let credential = turn_password(&self.secret, &username);
        (username, credential)
    }
}

/// base64(HMAC-SHA1(secret, username)), the TURN REST API's password.
pub fn turn_password(secret: &[u8], username: &str) -> String {
    // HMAC takes keys of any length.
    let mut mac = Hmac::<Sha1>::new_from_slice(secret).unwrap_or_else(|_| unreachable!("HMAC takes any key"));
    mac.update(username.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

/// The ICE servers of a server: none by default.
#[derive(Debug, Clone, Default)]
pub struct IceConfig {
    /// `stun:` URLs, handed out as they are.
    pub stun_urls: Vec<String>,
    /// TURN servers, with credentials made per call.
    pub turn: Option<Turn>,
}

impl IceConfig {
    /// What `session` answers `user` at `now`: the STUN servers, then the
    /// TURN servers with fresh credentials.
    pub fn servers(&self, user: UserId, now: SystemTime) -> Vec<IceServer> {
        let mut servers = Vec::with_capacity(2);
        if !self.stun_urls.is_empty() {
            servers.push(IceServer { urls: self.stun_urls.clone(), username: None, credential: None });
        }
        if let Some(turn) = self.turn.as_ref().filter(|t| !t.urls.is_empty()) {
            let (username, credential) = turn.credentials(user, now);
            servers.push(IceServer { urls: turn.urls.clone(), username: Some(username), credential: Some(credential) });
        }
        servers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turn_password_is_base64_hmac_sha1_of_the_username() {
        // RFC 2202 test case 2.
        assert_eq!(turn_password(b"Jefe", "what do ya want for nothing?"), "7/zfauXrL6LSdBbV8YTfnCWafHk=");
    }

    #[test]
    fn servers_carry_stun_as_given_and_turn_with_expiring_credentials() {
        let user = UserId::from_u128(7);
        let ice = IceConfig {
            stun_urls: vec!["stun:s.example:3478".into()],
            turn: Some(Turn::new(vec!["turn:t.example:3478?transport=udp".into()], "s3cret", Duration::from_secs(600))),
        };
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let servers = ice.servers(user, now);
        assert_eq!(
            servers[0],
            IceServer { urls: vec!["stun:s.example:3478".into()], username: None, credential: None }
        );
        let username = format!("1000600:{user}");
        assert_eq!(servers[1].username.as_deref(), Some(username.as_str()));
        assert_eq!(servers[1].credential, Some(turn_password(b"s3cret", &username)));
        assert!(IceConfig::default().servers(user, now).is_empty());
        assert!(!format!("{ice:?}").contains("s3cret"), "Debug never shows the secret");
    }
}
