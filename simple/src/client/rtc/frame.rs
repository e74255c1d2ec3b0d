//! One DataChannel message: a 6-byte header, then the payload (the format
//! of `interfaces/api.d.ts`, "Peer-to-peer payloads", and of
//! `simple/ts/payload.ts`); a message larger than `MAX_BODY_BYTES` goes as
//! a transfer: a start frame, then chunk frames.

use jsonrpsee::types::{ErrorObject, ErrorObjectOwned};
use serde::{Deserialize, Serialize};

use crate::client::payload::Body;
use crate::wire::code::INTERNAL_ERROR;

/// kind (1 byte) + body type (1 byte) + request id (4 bytes, big-endian).
const HEADER_BYTES: usize = 6;

/// Byte 0 of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Broadcast = 0,
    Request = 1,
    Reply = 2,
    /// The payload is UTF-8 JSON `{"code", "message"}`.
    Error = 3,
}

/// Byte 0 of a transfer's frames.
const START: u8 = 4;
const CHUNK: u8 = 5;
const ABORT: u8 = 6;
/// Byte 0 of a link's own frames (header only): `HELLO` on the control
/// channel says this side takes whole frames there; `MOVED` on the main
/// channel says this side's whole frames come on the control channel from
/// here on.
const HELLO: u8 = 7;
const MOVED: u8 = 8;
/// Byte 0 of an ack (on the control channel): bytes 2..6 say how many
/// bytes of chunk frames the sender of the ack took in.
const ACK: u8 = 9;

/// The hello frame, sent on the control channel.
pub(super) const HELLO_FRAME: [u8; HEADER_BYTES] = [HELLO, 0, 0, 0, 0, 0];
/// The moved frame, sent on the main channel.
pub(super) const MOVED_FRAME: [u8; HEADER_BYTES] = [MOVED, 0, 0, 0, 0, 0];

/// A start frame: the header, then the message's kind (1 byte), request id
/// and size (4 bytes each, big-endian).
const START_BYTES: usize = 15;

/// Byte 1 of a frame.
const TEXT: u8 = 0;
const BYTES: u8 = 1;

/// What a transfer carries, as its start frame announces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Announcement {
    /// The whole message's kind: a broadcast, a request or a reply.
    pub(super) kind: Kind,
    /// The request id of a request or a reply; 0 for a broadcast.
    pub(super) request_id: u32,
    /// Whether the message's bytes are UTF-8 text.
    pub(super) text: bool,
    /// The message's bytes.
    pub(super) size: u32,
}

impl Announcement {
    /// The start frame of transfer `id`.
    pub(super) fn encode(&self, id: u32) -> Vec<u8> {
        let mut out = Vec::with_capacity(START_BYTES);
        out.push(START);
        out.push(if self.text { TEXT } else { BYTES });
        out.extend_from_slice(&id.to_be_bytes());
        out.push(self.kind as u8);
        out.extend_from_slice(&self.request_id.to_be_bytes());
        out.extend_from_slice(&self.size.to_be_bytes());
        out
    }
}

/// A chunk frame of transfer `id`.
pub(super) fn chunk_frame(id: u32, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_BYTES + bytes.len());
    out.extend_from_slice(&[CHUNK, 0]);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(bytes);
    out
}

/// The abort frame of transfer `id`: the receiver drops what it holds of it.
pub(super) fn abort_frame(id: u32) -> [u8; HEADER_BYTES] {
    let [a, b, c, d] = id.to_be_bytes();
    [ABORT, 0, a, b, c, d]
}

/// The ack of a chunk frame of `len` bytes.
pub(super) fn ack_frame(len: usize) -> [u8; HEADER_BYTES] {
    let [a, b, c, d] = u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes();
    [ACK, 0, a, b, c, d]
}

/// One DataChannel message: a whole frame, or a part of a transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Message {
    Frame(Frame),
    Start(u32, Announcement),
    Chunk(u32, Vec<u8>),
    Abort(u32),
    /// The peer takes whole frames on the control channel.
    Hello,
    /// The peer's whole frames come on the control channel from here on.
    Moved,
    /// The peer took in this many bytes of our chunk frames.
    Ack(u32),
}

impl Message {
    /// The message in `bytes`, or `None` when it is not one of ours (the
    /// peer's client drops those too).
    pub(super) fn decode(mut bytes: Vec<u8>) -> Option<Self> {
        let header: [u8; HEADER_BYTES] = bytes.get(..HEADER_BYTES)?.try_into().ok()?;
        let id = u32::from_be_bytes([header[2], header[3], header[4], header[5]]);
        match header[0] {
            START => {
                let start: [u8; START_BYTES] = bytes.get(..START_BYTES)?.try_into().ok()?;
                let kind = match start[6] {
                    0 => Kind::Broadcast,
                    1 => Kind::Request,
                    2 => Kind::Reply,
                    _ => return None,
                };
                let request_id = u32::from_be_bytes([start[7], start[8], start[9], start[10]]);
                let size = u32::from_be_bytes([start[11], start[12], start[13], start[14]]);
                Some(Self::Start(id, Announcement { kind, request_id, text: start[1] == TEXT, size }))
            }
            CHUNK => {
                bytes.drain(..HEADER_BYTES);
                Some(Self::Chunk(id, bytes))
            }
            ABORT => Some(Self::Abort(id)),
            HELLO => Some(Self::Hello),
            MOVED => Some(Self::Moved),
            ACK => Some(Self::Ack(id)),
            _ => Frame::decode(bytes).map(Self::Frame),
        }
    }
}

/// A decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Frame {
    pub(super) kind: Kind,
    /// The unicast request id, echoed by its reply; 0 for broadcasts.
    pub(super) id: u32,
    pub(super) body: Body,
}

impl Frame {
    pub(super) fn encode(&self) -> Vec<u8> {
        let (kind, bytes) = match &self.body {
            Body::Text(text) => (TEXT, text.as_bytes()),
            Body::Bytes(bytes) => (BYTES, bytes.as_slice()),
        };
        let mut out = Vec::with_capacity(HEADER_BYTES + bytes.len());
        out.push(self.kind as u8);
        out.push(kind);
        out.extend_from_slice(&self.id.to_be_bytes());
        out.extend_from_slice(bytes);
        out
    }

    /// The frame in `message`, or `None` when it is not one of ours (the
    /// peer's client drops those too).
    pub(super) fn decode(mut message: Vec<u8>) -> Option<Self> {
        let header: [u8; HEADER_BYTES] = message.get(..HEADER_BYTES)?.try_into().ok()?;
        let kind = match header[0] {
            0 => Kind::Broadcast,
            1 => Kind::Request,
            2 => Kind::Reply,
            3 => Kind::Error,
            _ => return None,
        };
        let id = u32::from_be_bytes([header[2], header[3], header[4], header[5]]);
        message.drain(..HEADER_BYTES);
        let body = match header[1] {
            TEXT => Body::Text(String::from_utf8(message).ok()?),
            BYTES => Body::Bytes(message),
            _ => return None,
        };
        Some(Self { kind, id, body })
    }

    /// The Error frame answering request `id` with `error`.
    pub(super) fn error(id: u32, error: &ErrorObjectOwned) -> Self {
        let json = serde_json::to_string(&ErrorJson { code: error.code(), message: error.message().to_owned() })
            .unwrap_or_default();
        Self { kind: Kind::Error, id, body: Body::Text(json) }
    }
}

/// What an Error frame carries.
#[derive(Serialize, Deserialize)]
struct ErrorJson {
    code: i32,
    message: String,
}

/// The error an Error frame carries; a malformed one is an `InternalError`,
/// as in the browser.
pub(super) fn error_of(body: &Body) -> ErrorObjectOwned {
    match serde_json::from_slice::<ErrorJson>(body.as_bytes()) {
        Ok(ErrorJson { code, message }) => ErrorObject::owned(code, message, None::<()>),
        Err(_) => ErrorObject::owned(INTERNAL_ERROR, "malformed error reply", None::<()>),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_written_as_the_browser_writes_them() {
        let frame = Frame { kind: Kind::Request, id: 0x0102_0304, body: Body::Text("hé".into()) };
        assert_eq!(frame.encode(), [1, 0, 1, 2, 3, 4, b'h', 0xc3, 0xa9]);
        assert_eq!(Frame::decode(frame.encode()), Some(frame));
        let bytes = Frame { kind: Kind::Broadcast, id: 0, body: Body::Bytes(vec![0, 255]) };
        assert_eq!(bytes.encode(), [0, 1, 0, 0, 0, 0, 0, 255]);
        assert_eq!(Frame::decode(bytes.encode()), Some(bytes));
    }

    #[test]
    fn what_is_not_a_frame_is_dropped() {
        assert_eq!(Frame::decode(vec![0, 0, 0, 0, 0]), None, "short header");
        assert_eq!(Frame::decode(vec![4, 0, 0, 0, 0, 0]), None, "unknown kind");
        assert_eq!(Frame::decode(vec![0, 2, 0, 0, 0, 0]), None, "unknown body type");
        assert_eq!(Frame::decode(vec![0, 0, 0, 0, 0, 0, 0xff]), None, "text that is not UTF-8");
    }

    #[test]
    fn transfers_are_framed_as_the_browser_frames_them() {
        let announcement = Announcement { kind: Kind::Request, request_id: 9, text: true, size: 0x0001_0002 };
        let start = announcement.encode(0x0A0B_0C0D);
        assert_eq!(start, [4, 0, 10, 11, 12, 13, 1, 0, 0, 0, 9, 0, 1, 0, 2]);
        assert_eq!(Message::decode(start), Some(Message::Start(0x0A0B_0C0D, announcement)));
        let chunk = chunk_frame(7, &[1, 2, 3]);
        assert_eq!(chunk, [5, 0, 0, 0, 0, 7, 1, 2, 3]);
        assert_eq!(Message::decode(chunk), Some(Message::Chunk(7, vec![1, 2, 3])));
        assert_eq!(abort_frame(0x0102_0307), [6, 0, 1, 2, 3, 7]);
        assert_eq!(Message::decode(abort_frame(7).to_vec()), Some(Message::Abort(7)));
        assert_eq!(
            Message::decode(vec![4, 1, 0, 0, 0, 7, 3, 0, 0, 0, 0, 0, 0, 0, 1]),
            None,
            "an error is never a transfer"
        );
        assert_eq!(Message::decode(vec![4, 1, 0, 0, 0, 7]), None, "short start");
        assert_eq!(Message::decode(HELLO_FRAME.to_vec()), Some(Message::Hello));
        assert_eq!(Message::decode(MOVED_FRAME.to_vec()), Some(Message::Moved));
        assert_eq!(ack_frame(0x0001_0006), [9, 0, 0, 1, 0, 6]);
        assert_eq!(Message::decode(ack_frame(70).to_vec()), Some(Message::Ack(70)));
        assert_eq!(Message::decode(vec![10, 0, 0, 0, 0, 0]), None, "unknown kind");
    }

    #[test]
    fn errors_travel_as_json() {
        let error = ErrorObject::owned(-32004, "gone", None::<()>);
        let frame = Frame::error(7, &error);
        assert_eq!(frame.body, Body::Text(r#"{"code":-32004,"message":"gone"}"#.into()));
        assert_eq!(error_of(&frame.body), error);
        assert_eq!(error_of(&Body::Text("nope".into())).code(), INTERNAL_ERROR);
    }
}
