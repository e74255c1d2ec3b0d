//! Large messages through the relay, as the browser client sends them
//! (`RelayChunk` in `interfaces/api.d.ts`): a body larger than
//! [`MAX_BODY_BYTES`](super::payload::MAX_BODY_BYTES) travels as numbered
//! [`Chunk`]s, each a relay request the receiver answers once it holds it.
//! No socket here: [`chunks`] cuts a body, [`Assemblies`] puts bodies back
//! together, [`Replies`] matches chunked replies to the unicasts waiting for
//! them; [`Member`](super::Member) does the relaying.
//!
//! Also what a user of [`Member`](super::Member) sees of large messages on
//! either path: [`SendOptions`] and the [`Progress`] of a send, and the
//! [`Receiving`] meter of what is coming in.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonrpsee::types::{ErrorObject, ErrorObjectOwned};
use tokio::sync::{oneshot, watch};
use webrtc_p2p_interfaces::{ErrorCode, GroupId, UserId};

use super::payload::{Body, Chunk, ChunkKind};
use crate::wire::code::INVALID_PARAMS;

/// The bytes of one chunk: base64 and the JSON-RPC envelope keep a relay
/// near 171 KiB, well under the server's 1 MiB message limit (and a small
/// message relayed meanwhile waits behind little).
pub const CHUNK_BYTES: usize = 128 * 1024;
/// Chunks of one transfer unanswered at once: what waits in the server for
/// one receiver stays near this many chunks, and the sender's message rate
/// follows the receiver's pace.
pub const WINDOW: usize = 2;
/// The largest message a [`Member`](super::Member) sends or takes unless
/// [`MemberBuilder::max_message_bytes`](super::MemberBuilder::max_message_bytes)
/// says otherwise: the browser's `DEFAULT_MAX_MESSAGE_BYTES`.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// An incoming transfer that gets no chunk for this long is dropped; a
/// chunked reply that does not come in this long fails its unicast.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// `body` as the chunks of transfer `id`, made one at a time as they are
/// taken (only the one being sent is copied).
pub fn chunks(id: u32, kind: ChunkKind, body: &Body) -> impl Iterator<Item = Chunk> + '_ {
    let text = matches!(body, Body::Text(_));
    let size = body.len() as u64;
    body.as_bytes().chunks(CHUNK_BYTES).zip(0u64..).map(move |(part, seq)| {
        let first = seq == 0;
        Chunk {
            id,
            seq,
            base64: part.to_vec(),
            kind: first.then_some(kind),
            text: first.then_some(text),
            size: first.then_some(size),
        }
    })
}

/// How far one send went: bytes handed to the paths so far and in all,
/// both counted over every target (a broadcast of 1 MiB to 3 members has a
/// `total` of 3 MiB), as the browser's `onprogress(sent, total)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    /// Bytes handed over so far: written to a DataChannel, or sent to the
    /// server as a relay chunk. Each target counts at its furthest (a
    /// transfer that starts over through the server does not count twice).
    pub sent: u64,
    /// The message's bytes times its targets.
    pub total: u64,
}

impl Progress {
    /// Whether all of it is handed over.
    pub fn is_done(&self) -> bool {
        self.sent == self.total
    }
}

/// The callback of [`SendOptions::on_progress`].
type OnProgress<'a> = Box<dyn FnMut(Progress) + Send + 'a>;

/// Options of one [`Member::broadcast_with`](super::Member::broadcast_with)
/// or [`Member::unicast_with`](super::Member::unicast_with): the browser's
/// `SendOptions` (`{ onprogress, signal }`), in Rust's terms.
///
/// Progress is a callback rather than a handle with a channel because it
/// runs where the send runs: on the caller's task, between polls of the
/// send's future, never on a link's or the connection's task. So it may
/// borrow (a progress bar on the caller's stack), needs no `'static`, and a
/// slow one slows only its own send. The links report as they write, the
/// send's future reads the latest value when polled: progress is
/// monotonic, may skip values, and its last call has `sent == total` (also
/// `0 == 0` with no one to send to) unless the send fails. Send it on to a
/// `tokio::sync::watch` from the callback if another task wants it.
///
/// There is no cancel token: dropping the send's future cancels it, as
/// everywhere in async Rust (`tokio::select!` against your own signal,
/// `tokio::time::timeout`, `JoinHandle::abort` on a spawned send). No more
/// of the message leaves, and each receiver is told to drop what it holds
/// of it (an abort frame on a DataChannel, an `{"abort": id}` relay
/// notification through the server, as the browser's `AbortSignal` does);
/// parts already whole at some receiver stay delivered.
#[derive(Default)]
pub struct SendOptions<'a> {
    pub(crate) on_progress: Option<OnProgress<'a>>,
}

impl fmt::Debug for SendOptions<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendOptions").field("on_progress", &self.on_progress.is_some()).finish()
    }
}

impl<'a> SendOptions<'a> {
    /// No progress reports: what `broadcast` and `unicast` use.
    pub fn new() -> Self {
        Self::default()
    }

    /// Calls `report` as the message is handed to the paths (see
    /// [`Progress`]), on the task that polls the send.
    pub fn on_progress(mut self, report: impl FnMut(Progress) + Send + 'a) -> Self {
        self.on_progress = Some(Box::new(report));
        self
    }
}

/// Messages this member is receiving, started and not yet whole, on every
/// path: see [`Member::receiving`](super::Member::receiving).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Receiving {
    /// How many.
    pub messages: usize,
    /// Their bytes received so far (each one's buffer is allocated at its
    /// announced size when it starts).
    pub bytes: u64,
}

/// Where every partly received message counts itself: one per member,
/// shared by its relayed transfers and its links.
#[derive(Debug, Clone)]
pub(crate) struct Meter(Arc<watch::Sender<Receiving>>);

impl Default for Meter {
    fn default() -> Self {
        Self(Arc::new(watch::Sender::new(Receiving::default())))
    }
}

impl Meter {
    /// What is being received now, and each change.
    pub(crate) fn subscribe(&self) -> watch::Receiver<Receiving> {
        self.0.subscribe()
    }

    /// One more message being received; it counts until the [`Hold`] is dropped.
    pub(crate) fn hold(&self) -> Hold {
        self.0.send_modify(|receiving| receiving.messages += 1);
        Hold { meter: self.clone(), bytes: 0 }
    }
}

/// One partly received message on its [`Meter`]: dropped with the message's
/// buffer, however that goes (whole, aborted, stalled, its sender gone).
#[derive(Debug)]
pub(crate) struct Hold {
    meter: Meter,
    bytes: u64,
}

impl Hold {
    /// `bytes` more of it came.
    pub(crate) fn add(&mut self, bytes: usize) {
        let bytes = bytes as u64;
        self.bytes += bytes;
        self.meter.0.send_modify(|receiving| receiving.bytes += bytes);
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        let bytes = self.bytes;
        self.meter.0.send_modify(|receiving| {
            receiving.messages -= 1;
            receiving.bytes -= bytes;
        });
    }
}

/// One message being put back together.
#[derive(Debug)]
struct Assembly {
    kind: ChunkKind,
    text: bool,
    size: usize,
    next_seq: u64,
    /// Never longer than `size`.
    bytes: Vec<u8>,
    last_chunk: Instant,
    /// Counts it as being received.
    hold: Hold,
}

/// Whose transfer: the group it came in, its sender, its id.
pub type TransferKey = (GroupId, UserId, u32);

/// Incoming transfers, each in a buffer of at most its announced size.
#[derive(Debug, Default)]
pub struct Assemblies {
    open: HashMap<TransferKey, Assembly>,
    meter: Meter,
}

fn invalid(message: String) -> ErrorObjectOwned {
    ErrorObject::owned(INVALID_PARAMS, message, None::<()>)
}

impl Assemblies {
    /// Counts what it holds on `meter`.
    pub(crate) fn new(meter: Meter) -> Self {
        Self { open: HashMap::new(), meter }
    }

    /// Takes one chunk: `Ok(None)` while the message is incomplete, the
    /// whole message with its last chunk. A size over `max` is
    /// `LimitExceeded` before anything is held; a chunk out of order, past
    /// the announced size, for no open transfer, or text that is not UTF-8
    /// is `InvalidParams`, and the transfer is dropped.
    pub fn accept(
        &mut self,
        key: TransferKey,
        chunk: Chunk,
        max: usize,
        now: Instant,
    ) -> Result<Option<(ChunkKind, Body)>, ErrorObjectOwned> {
        if chunk.seq == 0 {
            self.open.remove(&key);
            let (Some(kind), Some(text), Some(size)) = (chunk.kind, chunk.text, chunk.size) else {
                return Err(invalid("the first chunk must say kind, text and size".into()));
            };
            let size = usize::try_from(size).unwrap_or(usize::MAX);
            if size > max {
                return Err(ErrorObject::owned(
                    ErrorCode::LimitExceeded.code(),
                    format!("this member takes messages of at most {max} bytes, not {size}"),
                    None::<()>,
                ));
            }
            let (bytes, hold) = (Vec::with_capacity(size), self.meter.hold());
            self.open.insert(key, Assembly { kind, text, size, next_seq: 0, bytes, last_chunk: now, hold });
        }
        let Some(assembly) = self.open.get_mut(&key) else {
            return Err(invalid(format!("no transfer {} from {}", key.2, key.1)));
        };
        if chunk.seq != assembly.next_seq || assembly.bytes.len() + chunk.base64.len() > assembly.size {
            self.open.remove(&key);
            return Err(invalid(format!("chunk {} of transfer {} is out of order or too long", chunk.seq, key.2)));
        }
        assembly.next_seq += 1;
        assembly.last_chunk = now;
        assembly.bytes.extend_from_slice(&chunk.base64);
        assembly.hold.add(chunk.base64.len());
        if assembly.bytes.len() < assembly.size {
            return Ok(None);
        }
        let Some(Assembly { kind, text, bytes, .. }) = self.open.remove(&key) else { return Ok(None) };
        let body = if text {
            Body::Text(String::from_utf8(bytes).map_err(|_| invalid("a text message is not UTF-8".into()))?)
        } else {
            Body::Bytes(bytes)
        };
        Ok(Some((kind, body)))
    }

    /// The sender gave the transfer up.
    pub fn abort(&mut self, key: TransferKey) {
        self.open.remove(&key);
    }

    /// `member` left `group_id`: what it was sending is dropped.
    pub fn forget(&mut self, group_id: GroupId, member: UserId) {
        self.open.retain(|&(group, from, _), _| (group, from) != (group_id, member));
    }

    /// This member left `group_id`: what came in it is dropped.
    pub fn forget_group(&mut self, group_id: GroupId) {
        self.open.retain(|&(group, _, _), _| group != group_id);
    }

    /// Drops the transfers that got no chunk for [`STALL_TIMEOUT`].
    pub fn sweep(&mut self, now: Instant) {
        self.open.retain(|_, assembly| now.duration_since(assembly.last_chunk) < STALL_TIMEOUT);
    }

    /// Whether `key` is being put together.
    pub fn contains(&self, key: &TransferKey) -> bool {
        self.open.contains_key(key)
    }

    /// How many transfers are being put together.
    pub fn len(&self) -> usize {
        self.open.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }
}

/// A chunked reply: a unicast waiting for it, or the reply, come before the
/// unicast's answer named it.
#[derive(Debug)]
enum Reply {
    Waiting(oneshot::Sender<Body>),
    Arrived(Body, Instant),
}

/// Chunked replies and the unicasts waiting for them.
#[derive(Debug, Default)]
pub struct Replies {
    by_key: HashMap<TransferKey, Reply>,
}

impl Replies {
    /// The answer said the reply is transfer `key`: resolves with it.
    pub fn wait(&mut self, key: TransferKey) -> oneshot::Receiver<Body> {
        let (sender, receiver) = oneshot::channel();
        match self.by_key.remove(&key) {
            Some(Reply::Arrived(body, _)) => {
                let _ = sender.send(body);
            }
            _ => {
                self.by_key.insert(key, Reply::Waiting(sender));
            }
        }
        receiver
    }

    /// Reply transfer `key` is whole.
    pub fn arrived(&mut self, key: TransferKey, body: Body, now: Instant) {
        match self.by_key.remove(&key) {
            Some(Reply::Waiting(sender)) => {
                let _ = sender.send(body);
            }
            _ => {
                self.by_key.insert(key, Reply::Arrived(body, now));
            }
        }
    }

    /// Forgets replies no one claimed in [`STALL_TIMEOUT`], and waits whose
    /// unicast is over.
    pub fn sweep(&mut self, now: Instant) {
        self.by_key.retain(|_, reply| match reply {
            Reply::Waiting(sender) => !sender.is_closed(),
            Reply::Arrived(_, at) => now.duration_since(*at) < STALL_TIMEOUT,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> TransferKey {
        (GroupId::random(), UserId::random(), 7)
    }

    #[test]
    fn chunks_put_back_together_give_the_body_and_only_the_first_announces_it() {
        let body = Body::Text("✓".repeat(CHUNK_BYTES));
        let parts: Vec<Chunk> = chunks(7, ChunkKind::Unicast, &body).collect();
        assert_eq!(parts.len(), 3, "3 bytes a character: 3 chunks");
        assert_eq!(
            (parts[0].kind, parts[0].text, parts[0].size),
            (Some(ChunkKind::Unicast), Some(true), Some(3 * CHUNK_BYTES as u64))
        );
        assert!(parts[1..].iter().all(|c| c.kind.is_none() && c.size.is_none()));
        let (mut assemblies, key, now) = (Assemblies::default(), key(), Instant::now());
        let mut whole = None;
        for chunk in parts {
            assert!(whole.is_none());
            whole = assemblies.accept(key, chunk, DEFAULT_MAX_MESSAGE_BYTES, now).expect("accepted");
        }
        assert_eq!(whole, Some((ChunkKind::Unicast, body)));
        assert!(assemblies.is_empty());
    }

    #[test]
    fn oversized_out_of_order_and_overlong_transfers_are_refused_and_dropped() {
        let body = Body::Bytes(vec![1; 2 * CHUNK_BYTES]);
        let (key, now) = (key(), Instant::now());
        let mut assemblies = Assemblies::default();
        let first = chunks(7, ChunkKind::Broadcast, &body).next().expect("a chunk");
        let refused = assemblies.accept(key, first.clone(), CHUNK_BYTES, now).expect_err("too large");
        assert_eq!(refused.code(), ErrorCode::LimitExceeded.code());
        assert!(assemblies.is_empty(), "nothing is held for a refused transfer");

        assemblies.accept(key, first.clone(), DEFAULT_MAX_MESSAGE_BYTES, now).expect("first");
        let skipped = Chunk { seq: 2, ..first.clone() };
        assert_eq!(
            assemblies.accept(key, skipped, DEFAULT_MAX_MESSAGE_BYTES, now).expect_err("gap").code(),
            INVALID_PARAMS
        );
        assert!(assemblies.is_empty());

        assemblies.accept(key, first.clone(), DEFAULT_MAX_MESSAGE_BYTES, now).expect("first");
        let overlong = Chunk { seq: 1, base64: vec![0; CHUNK_BYTES + 1], kind: None, text: None, size: None, ..first };
        assert_eq!(
            assemblies.accept(key, overlong, DEFAULT_MAX_MESSAGE_BYTES, now).expect_err("too long").code(),
            INVALID_PARAMS
        );
        assert!(assemblies.is_empty());
    }

    #[test]
    fn a_transfer_without_chunks_for_the_stall_timeout_is_swept() {
        let body = Body::Bytes(vec![1; 2 * CHUNK_BYTES]);
        let (key, start) = (key(), Instant::now());
        let mut assemblies = Assemblies::default();
        let first = chunks(7, ChunkKind::Broadcast, &body).next().expect("a chunk");
        assemblies.accept(key, first, DEFAULT_MAX_MESSAGE_BYTES, start).expect("first");
        assemblies.sweep(start + STALL_TIMEOUT - Duration::from_secs(1));
        assert_eq!(assemblies.len(), 1);
        assemblies.sweep(start + STALL_TIMEOUT);
        assert!(assemblies.is_empty());
    }

    #[test]
    fn the_meter_counts_a_message_from_its_first_chunk_until_it_is_whole_or_dropped() {
        let meter = Meter::default();
        let receiving = meter.subscribe();
        let mut assemblies = Assemblies::new(meter);
        let (key, now) = (key(), Instant::now());
        let body = Body::Bytes(vec![1; 2 * CHUNK_BYTES + 1]);
        let mut parts = chunks(7, ChunkKind::Broadcast, &body);
        for held in [CHUNK_BYTES, 2 * CHUNK_BYTES] {
            let part = parts.next().expect("a chunk");
            assert!(assemblies.accept(key, part, DEFAULT_MAX_MESSAGE_BYTES, now).expect("taken").is_none());
            assert_eq!(*receiving.borrow(), Receiving { messages: 1, bytes: held as u64 });
        }
        let last = parts.next().expect("the last chunk");
        assert!(assemblies.accept(key, last, DEFAULT_MAX_MESSAGE_BYTES, now).expect("taken").is_some());
        assert_eq!(*receiving.borrow(), Receiving::default(), "a whole message is no longer counted");

        let first = chunks(8, ChunkKind::Broadcast, &body).next().expect("a chunk");
        assemblies.accept(key, first.clone(), DEFAULT_MAX_MESSAGE_BYTES, now).expect("taken");
        assert_eq!(receiving.borrow().messages, 1);
        assemblies.abort(key);
        assert_eq!(*receiving.borrow(), Receiving::default(), "an aborted one neither");
        assemblies.accept(key, first, DEFAULT_MAX_MESSAGE_BYTES, now).expect("taken");
        assemblies.forget_group(key.0);
        assert_eq!(*receiving.borrow(), Receiving::default(), "nor one from a group this member left");
    }

    #[tokio::test]
    async fn a_chunked_reply_reaches_its_unicast_in_either_order() {
        let mut replies = Replies::default();
        let (early, late) = (key(), key());
        replies.arrived(early, Body::Text("came first".into()), Instant::now());
        assert_eq!(replies.wait(early).await.expect("reply"), Body::Text("came first".into()));
        let waiting = replies.wait(late);
        replies.arrived(late, Body::Text("came second".into()), Instant::now());
        assert_eq!(waiting.await.expect("reply"), Body::Text("came second".into()));
    }
}
