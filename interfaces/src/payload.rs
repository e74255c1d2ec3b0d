//! What clients say to each other through the server's `relay`, exactly as
//! the TypeScript client writes it (`RelayPayload` and `RelayBody` at the end
//! of `interfaces/api.d.ts`, generated into `typings/`), so that a Rust
//! program and a browser understand each other. The server passes `data` through untouched; these
//! types are a convention between clients, not part of the wire protocol.
//!
//! ```
//! use webrtc_p2p_interfaces::payload::{Body, RelayPayload};
//!
//! let json = r#"{"broadcast":{"base64":"AP8="}}"#;
//! let payload: RelayPayload = serde_json::from_str(json)?;
//! assert_eq!(payload, RelayPayload::Broadcast(Body::Bytes(vec![0, 255])));
//! assert_eq!(serde_json::to_string(&payload)?, json);
//! # Ok::<(), serde_json::Error>(())
//! ```

use jsonrpsee::types::{ErrorObject, ErrorObjectOwned};
use serde::{Deserialize, Serialize};

/// The error code a member without WebRTC answers an offer with
/// (`ErrorCode.NoWebRtc` in `api.d.ts`): the offerer relays at once instead
/// of waiting for its connect timeout. Not a server code: it travels only
/// from one client to another.
pub const NO_WEBRTC: i32 = -32011;

/// The largest body that travels in one relay, in bytes (`MAX_BODY_BYTES`
/// in `api.d.ts`): its base64 form stays under the server's 1 MiB message
/// limit, past which the server would close the sender's connection.
/// Larger messages travel as transfers ([`Chunk`]).
pub const MAX_BODY_BYTES: usize = 256 * 1024 - 6;

/// The error object answering an offer from a member without WebRTC.
pub fn no_webrtc() -> ErrorObjectOwned {
    ErrorObject::owned(NO_WEBRTC, "this member has no WebRTC: relay through the server", None::<()>)
}

/// The `data` of one `relay` between clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(rename_all = "lowercase")]
pub enum RelayPayload {
    /// WebRTC negotiation: `{"signal": …}`. Offers travel as relay requests,
    /// everything else as notifications.
    Signal(Signal),
    /// `{"broadcast": body}`, sent as a relay notification.
    Broadcast(Body),
    /// `{"unicast": body}`, sent as a relay request; answered with a
    /// [`UnicastAnswer`] or an error object.
    Unicast(Body),
    /// `{"chunk": …}`: one chunk of a message larger than
    /// [`MAX_BODY_BYTES`], sent as a relay request (the Rust client's
    /// `client::transfer` sends and takes them).
    Chunk(Chunk),
    /// `{"abort": id}`: the sender gave transfer `id` up; a notification.
    Abort(u32),
}

/// One chunk of a relayed transfer (`RelayChunk` in `api.d.ts`): chunks go
/// out with `seq` 0, 1, 2, …; the first also says what the whole message is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(rename = "RelayChunk"))]
pub struct Chunk {
    /// The transfer, chosen by its sender.
    pub id: u32,
    /// The chunk's place in the transfer, from 0.
    #[cfg_attr(test, ts(type = "number"))]
    pub seq: u64,
    /// The chunk's bytes.
    #[serde(with = "base64_bytes")]
    #[cfg_attr(test, ts(type = "string"))]
    pub base64: Vec<u8>,
    /// With `seq` 0: what the message is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    pub kind: Option<ChunkKind>,
    /// With `seq` 0: whether the message is UTF-8 text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    pub text: Option<bool>,
    /// With `seq` 0: the message's size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional, type = "number"))]
    pub size: Option<u64>,
}

/// What a transfer carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(rename_all = "lowercase")]
pub enum ChunkKind {
    /// A broadcast; its last chunk is answered `null`.
    Broadcast,
    /// A unicast; its last chunk is answered with a [`UnicastAnswer`].
    Unicast,
    /// A unicast's reply, announced by [`UnicastAnswer::Chunked`].
    Reply,
}

/// The answer to a relayed unicast (or to a chunked unicast's last chunk).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(untagged)]
pub enum UnicastAnswer {
    /// The reply itself.
    Body(Body),
    /// `{"chunked": id}`: the reply is larger than [`MAX_BODY_BYTES`] and
    /// comes as transfer `id` of kind [`ChunkKind::Reply`] from the target.
    Chunked {
        /// The reply's transfer id.
        chunked: u32,
    },
}

/// A WebRTC signal: a session description, an ICE candidate, or the news
/// that the sender speaks no WebRTC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(rename_all = "lowercase")]
pub enum Signal {
    /// `{"description": RTCSessionDescriptionInit}`.
    Description(SessionDescription),
    /// `{"candidate": RTCIceCandidateInit}`.
    Candidate(IceCandidate),
    /// `{"webrtc": false}`: the sender will never negotiate, so the link to
    /// it is relayed at once. Needed besides the [`NO_WEBRTC`] answer because
    /// the side of a pair that does not open the DataChannel never offers.
    #[serde(rename = "webrtc", with = "no_webrtc_flag")]
    #[cfg_attr(test, ts(untagged, type = "{ \"webrtc\": false }"))]
    NoWebRtc,
}

/// `RTCSessionDescriptionInit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct SessionDescription {
    /// `"offer"`, `"answer"`, …
    #[serde(rename = "type")]
    pub kind: SdpType,
    /// The SDP text; a rollback has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    pub sdp: Option<String>,
}

/// `RTCSdpType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(rename_all = "lowercase")]
pub enum SdpType {
    /// Starts a negotiation.
    Offer,
    /// A provisional answer.
    Pranswer,
    /// Completes a negotiation.
    Answer,
    /// Undoes a local offer (never sent by the TypeScript client).
    Rollback,
}

/// `RTCIceCandidateInit`, as `RTCIceCandidate.toJSON()` writes it. Absent
/// and `null` members read the same, and are written as absent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct IceCandidate {
    /// The `candidate:…` line.
    #[serde(default)]
    pub candidate: String,
    /// The media stream id the candidate belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    pub sdp_mid: Option<String>,
    /// The index of that media description in the SDP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    pub sdp_m_line_index: Option<u16>,
    /// The ICE username fragment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    pub username_fragment: Option<String>,
}

/// A message body: `{"text": string}` or `{"base64": string}` (standard
/// alphabet, padded; decoding also takes it unpadded, as the browser's
/// `atob` does). Text stays text and bytes stay bytes end to end: a browser
/// receives a `string` or a `Uint8Array` accordingly.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(rename = "RelayBody"))]
pub enum Body {
    /// UTF-8 text: `{"text": …}`.
    #[serde(rename = "text")]
    Text(String),
    /// Binary data: `{"base64": …}`.
    #[serde(rename = "base64", with = "base64_bytes")]
    #[cfg_attr(test, ts(type = "string"))]
    Bytes(Vec<u8>),
}

impl Body {
    /// The body's size as the limit counts it: UTF-8 bytes for text.
    pub fn len(&self) -> usize {
        self.as_bytes().len()
    }

    /// Whether the body holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The body's bytes (UTF-8 for text).
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Text(text) => text.as_bytes(),
            Self::Bytes(bytes) => bytes,
        }
    }

    /// The text, when the body is text.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Self::Text(text) => Some(text),
            Self::Bytes(_) => None,
        }
    }
}

impl From<String> for Body {
    fn from(text: String) -> Self {
        Self::Text(text)
    }
}

impl From<&str> for Body {
    fn from(text: &str) -> Self {
        Self::Text(text.to_owned())
    }
}

impl From<Vec<u8>> for Body {
    fn from(bytes: Vec<u8>) -> Self {
        Self::Bytes(bytes)
    }
}

impl From<&[u8]> for Body {
    fn from(bytes: &[u8]) -> Self {
        Self::Bytes(bytes.to_vec())
    }
}

/// `Signal::NoWebRtc` is `{"webrtc": false}` on the wire: it reads only
/// `false`, as the TypeScript client does.
mod no_webrtc_flag {
    use serde::de::{Deserializer, Error as _, Unexpected};
    use serde::{Deserialize, Serializer};

    pub(super) fn serialize<S: Serializer>(serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bool(false)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<(), D::Error> {
        match bool::deserialize(deserializer)? {
            false => Ok(()),
            true => Err(D::Error::invalid_value(Unexpected::Bool(true), &"false")),
        }
    }
}

/// `Body::Bytes` as a base64 string.
mod base64_bytes {
    use base64::Engine as _;
    use base64::alphabet::STANDARD;
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    use serde::de::{Deserializer, Error as _};
    use serde::{Deserialize, Serializer};

    /// The browser's `btoa` pads; its `atob` also reads unpadded text.
    const ENGINE: GeneralPurpose = GeneralPurpose::new(
        &STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&ENGINE.encode(bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        ENGINE.decode(text).map_err(D::Error::custom)
    }
}
