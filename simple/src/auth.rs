//! Join tokens: on a server with an auth secret, `init` takes a JWT (HS256)
//! that an app's backend signed with the same secret, and its claims say
//! what the user may do: `create` groups, `join` the `groups` listed (or
//! `"*"`: any), and what the other members are told about it (`info`).
//!
//! Verification is jsonwebtoken's, pinned to HS256: a token of any other
//! algorithm (`none` included) is refused before its signature is looked at.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use webrtc_p2p_interfaces::GroupId;

/// How far `exp` and `nbf` may be off, for clocks that disagree a little.
pub const LEEWAY: Duration = Duration::from_secs(30);

/// The largest `info` claim, as compact JSON, in bytes: it is sent to every
/// member of every group the user joins.
pub const MAX_INFO_BYTES: usize = 1024;

/// The groups a token lets its user join.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum GroupGrant {
    /// `"*"`: any group.
    Any,
    /// No group: the claim is absent, or an empty list.
    #[default]
    None,
    /// `[group_id, …]`: these groups only.
    Only(Vec<GroupId>),
}

impl GroupGrant {
    fn allows(&self, group: GroupId) -> bool {
        match self {
            Self::Any => true,
            Self::None => false,
            Self::Only(groups) => groups.contains(&group),
        }
    }
}

impl Serialize for GroupGrant {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Any => s.serialize_str("*"),
            Self::None => s.collect_seq(std::iter::empty::<GroupId>()),
            Self::Only(groups) => s.collect_seq(groups),
        }
    }
}

impl<'de> Deserialize<'de> for GroupGrant {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Wire {
            Star(String),
            List(Vec<GroupId>),
        }
        match Wire::deserialize(d)? {
            Wire::Star(star) if star == "*" => Ok(Self::Any),
            Wire::Star(other) => {
                Err(serde::de::Error::custom(format!("groups is \"*\" or a list of ids, not {other:?}")))
            }
            Wire::List(groups) if groups.is_empty() => Ok(Self::None),
            Wire::List(groups) => Ok(Self::Only(groups)),
        }
    }
}

/// A join token's claims, as an app's backend writes them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    /// Expiry, in seconds since the Unix epoch (required).
    pub exp: u64,
    /// Not valid before, in seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Whether the user may create groups.
    #[serde(default)]
    pub create: bool,
    /// The groups the user may join.
    #[serde(default)]
    pub groups: GroupGrant,
    /// What the other members are told about the user (any JSON, at most
    /// [`MAX_INFO_BYTES`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<serde_json::Value>,
}

impl Claims {
    /// Claims that expire `ttl` from now and grant nothing yet.
    pub fn expiring_in(ttl: Duration) -> Self {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        Self { exp: (now + ttl).as_secs(), nbf: None, create: false, groups: GroupGrant::None, info: None }
    }

    /// A token carrying these claims, signed HS256 with `secret`: what an
    /// app's backend hands its users (and the `token` subcommand prints).
    pub fn sign(&self, secret: &[u8]) -> String {
        // Serialising these plain claims and HMAC cannot fail.
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), self, &EncodingKey::from_secret(secret))
            .unwrap_or_default()
    }
}

/// What a session may do, from its join token (or everything, on a server
/// without an auth secret). Kept with the session, not its connection.
#[derive(Debug, Clone, PartialEq)]
pub struct Grants {
    /// May create groups.
    pub create: bool,
    /// May join these groups.
    pub groups: GroupGrant,
    /// Told to the other members (`member_joined`, `get_members`).
    pub info: Option<Arc<serde_json::Value>>,
}

impl Grants {
    /// A server without an auth secret: anyone may do anything (v1).
    pub fn everything() -> Self {
        Self { create: true, groups: GroupGrant::Any, info: None }
    }

    /// Whether these grants let the user join `group`.
    pub fn may_join(&self, group: GroupId) -> bool {
        self.groups.allows(group)
    }

    /// The grants as JSON text, for a session that moves to another node.
    pub fn to_json(&self) -> String {
        let groups = match &self.groups {
            GroupGrant::Any => None,
            GroupGrant::None => Some(Vec::new()),
            GroupGrant::Only(groups) => Some(groups.clone()),
        };
        let record = GrantsRecord { create: self.create, groups, info: self.info.as_deref().cloned() };
        serde_json::to_string(&record).unwrap_or_default()
    }

    /// Grants from [`to_json`](Self::to_json)'s text.
    pub fn from_json(text: &str) -> Option<Self> {
        let record: GrantsRecord = serde_json::from_str(text).ok()?;
        let groups = match record.groups {
            None => GroupGrant::Any,
            Some(groups) if groups.is_empty() => GroupGrant::None,
            Some(groups) => GroupGrant::Only(groups),
        };
        Some(Self { create: record.create, groups, info: record.info.map(Arc::new) })
    }
}

/// [`Grants`] as they travel between nodes.
#[derive(Serialize, Deserialize)]
struct GrantsRecord {
    create: bool,
    /// `None`: any group.
    groups: Option<Vec<GroupId>>,
    info: Option<serde_json::Value>,
}

/// Why a join token was refused; each is `Unauthorized` on the wire, and a
/// label of the server's auth failure metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum AuthFailure {
    /// `init` came without a token.
    #[error("no join token")]
    Missing,
    /// Not a JWT: not three base64url parts, or not JSON.
    #[error("the join token is malformed")]
    Malformed,
    /// Signed with another algorithm than HS256 (or `none`).
    #[error("the join token is not HS256")]
    WrongAlgorithm,
    /// The signature does not match the server's secret.
    #[error("the join token's signature does not match")]
    BadSignature,
    /// Past its `exp` (and the leeway).
    #[error("the join token has expired")]
    Expired,
    /// Before its `nbf` (and the leeway).
    #[error("the join token is not valid yet")]
    NotYetValid,
    /// Signed correctly, but a claim is missing (`exp`) or of the wrong
    /// shape, or `info` is over its size limit.
    #[error("the join token's claims are invalid")]
    BadClaims,
}

impl AuthFailure {
    /// Every reason, for metrics that list them all from the start.
    pub const ALL: [Self; 7] = [
        Self::Missing,
        Self::Malformed,
        Self::WrongAlgorithm,
        Self::BadSignature,
        Self::Expired,
        Self::NotYetValid,
        Self::BadClaims,
    ];

    /// A short lowercase name, for metric labels and logs.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed => "malformed",
            Self::WrongAlgorithm => "wrong_algorithm",
            Self::BadSignature => "bad_signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::BadClaims => "bad_claims",
        }
    }
}

/// Checks join tokens against the server's auth secret.
pub struct TokenVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("TokenVerifier").finish_non_exhaustive()
    }
}

impl TokenVerifier {
    /// A verifier of tokens signed HS256 with `secret`.
    pub fn new(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY.as_secs();
        validation.validate_nbf = true;
        // Tokens are for this server alone: no audience to check.
        validation.validate_aud = false;
        Self { key: DecodingKey::from_secret(secret), validation }
    }

    /// The grants of `token`, or why it is refused.
    pub fn verify(&self, token: Option<&str>) -> Result<Grants, AuthFailure> {
        let token = token.ok_or(AuthFailure::Missing)?;
        // jsonwebtoken cannot even parse a header it has no algorithm for
        // (`none`): read `alg` first, so that such a token counts as what it is.
        match header_alg(token) {
            None => return Err(AuthFailure::Malformed),
            Some(alg) if alg != "HS256" => return Err(AuthFailure::WrongAlgorithm),
            Some(_) => {}
        }
        let claims = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature => AuthFailure::BadSignature,
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => AuthFailure::WrongAlgorithm,
                ErrorKind::ExpiredSignature => AuthFailure::Expired,
                ErrorKind::ImmatureSignature => AuthFailure::NotYetValid,
                // The header and signature were fine: the claims are not.
                ErrorKind::MissingRequiredClaim(_) | ErrorKind::Json(_) => AuthFailure::BadClaims,
                _ => AuthFailure::Malformed,
            })?
            .claims;
        let info = match claims.info {
            Some(info) if serde_json::to_string(&info).map_or(usize::MAX, |s| s.len()) > MAX_INFO_BYTES => {
                return Err(AuthFailure::BadClaims);
            }
            info => info.map(Arc::new),
        };
        Ok(Grants { create: claims.create, groups: claims.groups, info })
    }
}

/// The `alg` of a JWT's header, if the token has a readable header.
fn header_alg(token: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Head {
        alg: String,
    }
    let (head, _) = token.split_once('.')?;
    let bytes = URL_SAFE_NO_PAD.decode(head).ok()?;
    serde_json::from_slice::<Head>(&bytes).ok().map(|h| h.alg)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const SECRET: &[u8] = b"test secret";

    fn now() -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
    }

    fn verify(token: &str) -> Result<Grants, AuthFailure> {
        TokenVerifier::new(SECRET).verify(Some(token))
    }

    #[test]
    fn a_valid_token_grants_what_its_claims_say() {
        let group = GroupId::random();
        let claims = Claims {
            create: true,
            groups: GroupGrant::Only(vec![group]),
            info: Some(json!({"name": "Ada"})),
            ..Claims::expiring_in(Duration::from_secs(60))
        };
        let grants = verify(&claims.sign(SECRET)).unwrap();
        assert!(grants.create);
        assert!(grants.may_join(group));
        assert!(!grants.may_join(GroupId::random()));
        assert_eq!(grants.info.as_deref(), Some(&json!({"name": "Ada"})));
    }

    #[test]
    fn groups_is_a_star_a_list_or_nothing() {
        let read = |v| serde_json::from_value::<GroupGrant>(v);
        assert_eq!(read(json!("*")).unwrap(), GroupGrant::Any);
        assert_eq!(read(json!([])).unwrap(), GroupGrant::None);
        assert!(read(json!("all")).is_err());
        assert!(read(json!(["not an id"])).is_err());
        let grants = verify(&Claims::expiring_in(Duration::from_secs(60)).sign(SECRET)).unwrap();
        assert!(!grants.create && !grants.may_join(GroupId::random()), "absent claims grant nothing");
    }

    #[test]
    fn every_bad_token_is_refused_with_its_reason() {
        let fresh = Claims::expiring_in(Duration::from_secs(60));
        let hs384 = jsonwebtoken::encode(&Header::new(Algorithm::HS384), &fresh, &EncodingKey::from_secret(SECRET));
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&fresh).unwrap())
        );
        let big_info = Claims { info: Some(json!("x".repeat(MAX_INFO_BYTES))), ..fresh.clone() };
        let cases = [
            (TokenVerifier::new(SECRET).verify(None).err(), AuthFailure::Missing),
            (verify("not a token").err(), AuthFailure::Malformed),
            (verify("a.b.c").err(), AuthFailure::Malformed),
            (verify(&fresh.sign(b"another secret")).err(), AuthFailure::BadSignature),
            (verify(&hs384.unwrap()).err(), AuthFailure::WrongAlgorithm),
            (verify(&none).err(), AuthFailure::WrongAlgorithm),
            (verify(&Claims { exp: now() - 120, ..fresh.clone() }.sign(SECRET)).err(), AuthFailure::Expired),
            (verify(&Claims { nbf: Some(now() + 120), ..fresh.clone() }.sign(SECRET)).err(), AuthFailure::NotYetValid),
            (verify(&big_info.sign(SECRET)).err(), AuthFailure::BadClaims),
        ];
        for (at, (got, want)) in cases.into_iter().enumerate() {
            assert_eq!(got, Some(want), "case {at}");
        }
    }

    #[test]
    fn a_token_without_exp_is_refused() {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(br#"{"create":true}"#);
        let signed = format!("{header}.{payload}");
        let key = EncodingKey::from_secret(SECRET);
        let signature = jsonwebtoken::crypto::sign(signed.as_bytes(), &key, Algorithm::HS256).unwrap();
        assert_eq!(verify(&format!("{signed}.{signature}")).err(), Some(AuthFailure::BadClaims));
    }

    #[test]
    fn clocks_may_disagree_by_the_leeway() {
        let fresh = Claims::expiring_in(Duration::from_secs(60));
        assert!(verify(&Claims { exp: now() - 5, ..fresh.clone() }.sign(SECRET)).is_ok());
        assert!(verify(&Claims { nbf: Some(now() + 5), ..fresh }.sign(SECRET)).is_ok());
    }
}
