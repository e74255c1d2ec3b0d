//! `Io`: the upgraded connection as tungstenite reads and writes it. It
//! follows the client's frames as their bytes pass (where each frame ends,
//! whether a fragmented message is under way), so that the connection knows
//! when tungstenite holds nothing but its buffers and may rebuild it with
//! small ones after a large message; and it charges what the connection's
//! socket holds (messages being read, frames not yet written) to the
//! server's memory budget, refusing a large message past it.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use webrtc_p2p_simple::MemoryBudget;

/// The longest frame header a client sends: 2 bytes, an 8-byte length, a
/// 4-byte mask.
const MAX_HEADER: usize = 14;

/// The connection under one WebSocket.
#[derive(Debug)]
pub(crate) struct Io {
    /// The upgraded connection; `None` once [`take`](Self::take) moved it
    /// under a rebuilt WebSocket.
    inner: Option<TokioIo<hyper::upgrade::Upgraded>>,
    /// Where the bytes read so far stand, frame by frame.
    frames: Frames,
    /// Messages tungstenite returned (each of `frames.complete`, in order).
    delivered: u64,
    /// Bytes handed to tungstenite to write since its last completed flush.
    unflushed: usize,
    /// The server's memory budget.
    memory: Arc<MemoryBudget>,
    /// What the budget counts for this connection's socket now.
    charged: usize,
    /// Cleared once the connection is closing (or a large message was
    /// refused for memory): what it still reads is discarded, not followed.
    following: bool,
}

/// What a read refused for memory returns: the connection closes with 1013.
#[derive(Debug)]
pub(crate) struct MemorySpent;

impl std::fmt::Display for MemorySpent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a large message arrived while the server's memory budget was spent")
    }
}

impl std::error::Error for MemorySpent {}

impl Io {
    pub(crate) fn new(inner: TokioIo<hyper::upgrade::Upgraded>, memory: Arc<MemoryBudget>) -> Self {
        Self {
            inner: Some(inner),
            frames: Frames::default(),
            delivered: 0,
            unflushed: 0,
            memory,
            charged: 0,
            following: true,
        }
    }

    /// Moves the connection, and what is known of it, into a new `Io` for a
    /// rebuilt WebSocket; this one is left closed.
    pub(crate) fn take(&mut self) -> Self {
        Self {
            inner: self.inner.take(),
            frames: std::mem::take(&mut self.frames),
            delivered: self.delivered,
            unflushed: self.unflushed,
            memory: self.memory.clone(),
            charged: std::mem::take(&mut self.charged),
            following: self.following,
        }
    }

    /// tungstenite returned a message.
    pub(crate) fn delivered(&mut self) {
        self.delivered += 1;
    }

    /// Whether tungstenite holds no byte it has read beyond the messages it
    /// returned, and no part of a message: its buffers are only capacity.
    pub(crate) fn between_messages(&self) -> bool {
        self.frames.at_boundary() && self.frames.complete == self.delivered
    }

    /// Whether a fragmented data message is under way.
    pub(crate) fn fragmented(&self) -> bool {
        self.frames.fragmented
    }

    /// `len` bytes were handed to tungstenite to write.
    pub(crate) fn feeding(&mut self, len: usize) {
        self.unflushed = self.unflushed.saturating_add(len);
        self.recharge();
    }

    /// Bytes handed to tungstenite since its last completed flush.
    pub(crate) fn unflushed(&self) -> usize {
        self.unflushed
    }

    /// tungstenite wrote and flushed everything it was handed.
    pub(crate) fn flushed(&mut self) {
        self.unflushed = 0;
        self.recharge();
    }

    /// The connection is closing: what it still reads is discarded, and
    /// nothing more is charged for reading.
    pub(crate) fn stop_following(&mut self) {
        self.following = false;
        self.frames = Frames::default();
        self.recharge();
    }

    fn recharge(&mut self) {
        let held = self.unflushed.saturating_add(self.frames.held());
        self.memory.recharge(&mut self.charged, held);
    }

    fn inner(&mut self) -> io::Result<Pin<&mut TokioIo<hyper::upgrade::Upgraded>>> {
        match self.inner.as_mut() {
            Some(inner) => Ok(Pin::new(inner)),
            None => Err(io::ErrorKind::NotConnected.into()),
        }
    }
}

impl Drop for Io {
    fn drop(&mut self) {
        self.memory.recharge(&mut self.charged, 0);
    }
}

impl AsyncRead for Io {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(this.inner()?.poll_read(cx, buf))?;
        if !this.following {
            return Poll::Ready(Ok(()));
        }
        let fits = this.frames.feed(&buf.filled()[before..], &this.memory);
        this.recharge();
        if !fits {
            this.stop_following();
            return Poll::Ready(Err(io::Error::other(MemorySpent)));
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Io {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.get_mut().inner()?.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().inner()?.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().inner()?.poll_shutdown(cx)
    }
}

/// The client's byte stream, frame by frame (RFC 6455 section 5.2), as far
/// as it was read. A protocol violation makes tungstenite close the
/// connection, so what this makes of one does not matter.
#[derive(Debug, Default)]
struct Frames {
    /// The next frame's header bytes seen so far.
    header: [u8; MAX_HEADER],
    /// How many of `header` are filled.
    header_len: u8,
    /// The current frame's first header byte (FIN and opcode).
    first: u8,
    /// Payload bytes of the current frame still to come.
    payload_left: u64,
    /// A data message's first frame came without FIN and its last one has
    /// not come yet.
    fragmented: bool,
    /// Messages whose last byte was read: control frames, and data messages
    /// with their final frame. tungstenite returns each as one message.
    complete: u64,
    /// Payload bytes read of the data message under way.
    in_progress: u64,
}

impl Frames {
    /// Follows `bytes`, read after everything fed before. `false` when a
    /// data frame's header announced a message larger than
    /// [`MemoryBudget::SMALL`] while `memory` is spent. (Short of spent, a
    /// large message is read: what it becomes is refused with Busy when it
    /// does not fit, without closing the connection.)
    fn feed(&mut self, mut bytes: &[u8], memory: &MemoryBudget) -> bool {
        while let Some((&byte, rest)) = bytes.split_first() {
            if self.payload_left > 0 {
                let n = usize::try_from(self.payload_left).map_or(bytes.len(), |left| left.min(bytes.len()));
                self.payload_left -= n as u64;
                if self.is_data() {
                    self.in_progress += n as u64;
                }
                bytes = &bytes[n..];
                if self.payload_left == 0 {
                    self.frame_done();
                }
                continue;
            }
            bytes = rest;
            let Some(slot) = self.header.get_mut(usize::from(self.header_len)) else {
                // Unreachable: a header is complete by 14 bytes.
                self.header_len = 0;
                continue;
            };
            *slot = byte;
            self.header_len += 1;
            let have = usize::from(self.header_len);
            if have < 2 || have < header_size(self.header[1]) {
                continue;
            }
            self.first = self.header[0];
            self.payload_left = payload_len(&self.header[..have]);
            self.header_len = 0;
            let message = self.in_progress.saturating_add(self.payload_left);
            if self.is_data() && message > MemoryBudget::SMALL as u64 && memory.is_spent() {
                return false;
            }
            if self.payload_left == 0 {
                self.frame_done();
            }
        }
        true
    }

    fn is_data(&self) -> bool {
        self.first & 0x08 == 0
    }

    /// The current frame's last byte was read.
    fn frame_done(&mut self) {
        if !self.is_data() {
            self.complete += 1;
        } else if self.first & 0x80 != 0 {
            self.complete += 1;
            self.fragmented = false;
            self.in_progress = 0;
        } else {
            self.fragmented = true;
        }
    }

    /// No frame and no message is partly read.
    fn at_boundary(&self) -> bool {
        self.header_len == 0 && self.payload_left == 0 && !self.fragmented
    }

    /// What tungstenite holds for the message under way: what was read of
    /// it, and the rest of the current frame, for which it reserved room
    /// when the header arrived.
    fn held(&self) -> usize {
        let reserved = if self.is_data() { self.payload_left } else { 0 };
        usize::try_from(self.in_progress.saturating_add(reserved)).unwrap_or(usize::MAX)
    }
}

/// A frame header's length, from its second byte (mask bit, length code).
fn header_size(second: u8) -> usize {
    let length = match second & 0x7F {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if second & 0x80 != 0 { 4 } else { 0 };
    2 + length + mask
}

/// The payload length a complete header announces.
fn payload_len(header: &[u8]) -> u64 {
    match header.get(1).map(|b| b & 0x7F) {
        Some(126) => header.get(2..4).map_or(0, |b| u64::from(u16::from_be_bytes([b[0], b[1]]))),
        Some(127) => header.get(2..10).and_then(|b| <[u8; 8]>::try_from(b).ok()).map_or(0, u64::from_be_bytes),
        Some(n) => u64::from(n),
        None => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![u8::from(fin) << 7 | opcode];
        match payload.len() {
            n @ 0..=125 => out.push(0x80 | n as u8),
            n @ 126..=0xFFFF => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&[1, 2, 3, 4]);
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn frames_are_followed_across_any_split_of_the_bytes() {
        let memory = MemoryBudget::new(usize::MAX);
        let mut stream = frame(false, 1, &[b'a'; 70_000]);
        stream.extend(frame(true, 9, b"ping"));
        stream.extend(frame(true, 0, &[b'b'; 300]));
        stream.extend(frame(true, 2, &[]));
        for split in [1, 2, 3, 13, 500, stream.len()] {
            let mut frames = Frames::default();
            for piece in stream.chunks(split) {
                assert!(frames.feed(piece, &memory));
            }
            assert_eq!(frames.complete, 3, "split {split}: the ping, the text message, the empty binary");
            assert!(frames.at_boundary(), "split {split}");
            assert_eq!(frames.held(), 0);
        }
        let mut frames = Frames::default();
        assert!(frames.feed(&frame(false, 1, &[b'a'; 70_000]), &memory));
        assert!(frames.fragmented && !frames.at_boundary(), "a message under way");
        assert_eq!((frames.complete, frames.held()), (0, 70_000));
    }

    #[test]
    fn a_large_message_is_refused_at_its_header_once_the_budget_is_spent() {
        let memory = MemoryBudget::new(100_000);
        let mut others = 0;
        memory.recharge(&mut others, 99_000);
        let mut frames = Frames::default();
        let header = &frame(true, 1, &[b'a'; 200_000])[..14];
        assert!(frames.feed(header, &memory), "not spent yet: read, and refused later if it does not fit");
        assert_eq!(frames.held(), 200_000, "the frame's room is reserved at its header");
        memory.recharge(&mut others, 100_000);
        let mut frames = Frames::default();
        assert!(frames.feed(&frame(true, 1, &[b'a'; 60_000]), &memory), "small: always");
        assert!(!frames.feed(header, &memory));
        let mut frames = Frames::default();
        let fragment = frame(false, 1, &[b'a'; 40_000]);
        assert!(frames.feed(&fragment, &memory));
        assert_eq!(frames.held(), 40_000);
        let more = &frame(false, 0, &[b'a'; 40_000])[..8];
        assert!(!frames.feed(more, &memory), "the message outgrows the small size");
    }
}
