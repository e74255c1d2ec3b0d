//! [`Member`]: a Rust program as a group member that browsers talk to. It
//! speaks the TypeScript client's payloads ([`payload`](super::payload)):
//! by default it makes a WebRTC DataChannel to each member it may talk to,
//! as the browsers do ([`rtc`](super::rtc)), and falls back to the server's
//! `relay` on the same conditions. Built with
//! [`MemberBuilder::no_webrtc`], it speaks no WebRTC: it refuses every offer
//! with [`NO_WEBRTC`](super::payload::NO_WEBRTC) and tells each member it
//! may talk to `{"webrtc": false}`, so browsers relay to it at once instead
//! of waiting for their connect timeout.
//! Messages larger than one relay go and come through the server as chunked
//! transfers ([`transfer`](super::transfer)), replies too, also to members
//! it has a DataChannel with (a reply to a unicast that came over a
//! DataChannel stays within one relay's worth).
//!
//! It keeps each group's capability and member list (the owner first, as the
//! server lists them) and applies the capability as the browsers do: its
//! broadcasts go only to the members it may broadcast to, and what the
//! capability forbids is dropped (broadcasts) or refused (unicasts).

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Instant;

use dashmap::DashMap;
use futures_util::StreamExt as _;
use futures_util::future::join_all;
use futures_util::stream::FuturesOrdered;
use jsonrpsee::core::client::Error;
use jsonrpsee::core::{RpcResult, async_trait};
use jsonrpsee::types::{ErrorObject, ErrorObjectOwned};
use serde_json::value::{RawValue, to_raw_value};
use tokio::sync::{RwLock, oneshot, watch};
use tracing::debug;
use webrtc_p2p_interfaces::{
    Capability, ErrorCode, Exchange, GroupId, JoinResult, PeerServer, SessionFacts, SignalingClient, UserId,
};

use super::payload::{Body, ChunkKind, MAX_BODY_BYTES, RelayPayload, Signal, UnicastAnswer, no_webrtc};
use super::rtc::{Answer, Delivered, Inbound, Job, LinkState, Mesh, Outgoing, RtcConfig, local};
use super::transfer::{
    self, Assemblies, DEFAULT_MAX_MESSAGE_BYTES, Meter, Progress, Receiving, Replies, STALL_TIMEOUT, SendOptions,
    TransferKey,
};
use super::{Client, ClientBuilder, ConnectError, Disconnected};
use crate::wire::code::{INTERNAL_ERROR, INVALID_PARAMS, METHOD_NOT_FOUND};

/// What a [`Member`] does with what other members send it. Every method has
/// a default: ignore, or for unicasts answer `MethodNotFound` (what a browser
/// without an `onunicast` handler answers).
///
/// The notification methods are called in the order the server sent the
/// events, from the task that reads the socket: return quickly (send the
/// event to a channel, say). `on_unicast` runs concurrently with the rest.
pub trait MemberHandler: Send + Sync + 'static {
    /// A broadcast from `from` arrived in `group_id`.
    fn on_broadcast(&self, _group_id: GroupId, _from: UserId, _body: Body) {}

    /// A unicast from `from` arrived: the result is the reply the sender's
    /// `unicast` resolves with; an error reaches it unchanged.
    fn on_unicast(
        &self,
        _group_id: GroupId,
        _from: UserId,
        _body: Body,
    ) -> impl Future<Output = Result<Body, ErrorObjectOwned>> + Send {
        async { Err(ErrorObject::owned(METHOD_NOT_FOUND, "this member answers no unicasts", None::<()>)) }
    }

    /// `member` joined `group_id`; [`Member::members`] includes it already.
    fn on_member_joined(&self, _group_id: GroupId, _member: UserId) {}

    /// `member` left `group_id` or disconnected; it is no longer listed.
    fn on_member_left(&self, _group_id: GroupId, _member: UserId) {}

    /// The link to `member` in `group_id` changed state.
    fn on_link_state(&self, _group_id: GroupId, _member: UserId, _state: LinkState) {}
}

/// One group as this member sees it.
#[derive(Debug, Clone)]
struct View {
    /// What the group allows; fixed at its creation.
    capability: Capability,
    /// In join order, this member included: the owner is always first.
    members: Vec<UserId>,
}

impl View {
    /// The pair rule for one kind of message between two members.
    fn allows(&self, kind: Exchange, a: UserId, b: UserId) -> bool {
        let owner = self.members.first();
        a != b && self.capability.allows(kind, owner == Some(&a) || owner == Some(&b))
    }

    fn may_broadcast(&self, a: UserId, b: UserId) -> bool {
        self.allows(Exchange::Broadcast, a, b)
    }

    fn may_unicast(&self, a: UserId, b: UserId) -> bool {
        self.allows(Exchange::Unicast, a, b)
    }

    /// The pairs a browser opens a link for, and so may offer to.
    fn may_link(&self, a: UserId, b: UserId) -> bool {
        self.may_broadcast(a, b) || self.may_unicast(a, b)
    }

    /// The members `me` may exchange something with: those a browser links to.
    fn linked(&self, me: UserId) -> Vec<UserId> {
        self.members.iter().copied().filter(|&m| self.may_link(me, m)).collect()
    }
}

/// A group's view, `None` once this member is out of it. Locked for writing
/// while `join` waits for the member list, so that a relay or member event
/// for the group that arrives meanwhile waits for the list it applies to.
type Slot = Arc<RwLock<Option<View>>>;

/// What the [`Member`] and its `PeerServer` handler share.
#[derive(Debug)]
struct Shared {
    /// This member's id: set once `init` has answered, before any group exists.
    me: OnceLock<UserId>,
    /// The connection, for the handler's own relays (`{"webrtc": false}` to
    /// newcomers). Weak: the handler lives as long as the connection, which
    /// must close when the `Member` is dropped.
    client: OnceLock<Weak<Client>>,
    /// The groups this member is in (or joining).
    groups: DashMap<GroupId, Slot>,
    /// The links to the other members; `None` without WebRTC.
    mesh: Option<Mesh>,
    /// Large messages coming in, and chunked replies to our unicasts.
    incoming: Mutex<Assemblies>,
    replies: Mutex<Replies>,
    /// The id of this member's next transfer.
    transfer_ids: AtomicU32,
    /// Where partly received messages count themselves, on every path.
    meter: Meter,
    /// Changes each time a member leaves one of this member's groups, or
    /// this member leaves one: relayed transfers to it stop with PeerGone.
    departures: watch::Sender<()>,
    /// The largest message sent or taken ([`MemberBuilder::max_message_bytes`]).
    max_message_bytes: usize,
}

impl Shared {
    /// Drops incoming transfers and unclaimed replies that stalled.
    fn sweep(&self) {
        let now = Instant::now();
        self.incoming.lock().unwrap_or_else(|e| e.into_inner()).sweep(now);
        self.replies.lock().unwrap_or_else(|e| e.into_inner()).sweep(now);
    }

    /// A copy of the group's view, once any `join` of it has finished.
    async fn view(&self, group_id: GroupId) -> Option<View> {
        let slot = self.groups.get(&group_id).map(|slot| slot.clone())?;
        slot.read().await.clone()
    }

    /// Opens the links the group's rules call for and closes the others;
    /// without WebRTC, tells each of `newcomers` (the members it may talk
    /// to) that it has none.
    async fn reconcile(&self, group_id: GroupId, newcomers: &[UserId]) -> Result<(), Error> {
        match &self.mesh {
            Some(mesh) => {
                self.relink(mesh, group_id).await;
                Ok(())
            }
            None => self.declare(group_id, newcomers).await,
        }
    }

    /// Opens the links the group's rules call for and closes the others.
    async fn relink(&self, mesh: &Mesh, group_id: GroupId) {
        match (self.view(group_id).await, self.me.get()) {
            (Some(view), Some(&me)) => mesh.reconcile(group_id, &view.linked(me)),
            _ => mesh.close(Some(group_id)),
        }
    }

    /// After a resume without replay, member events in between may be lost:
    /// each group's members are asked for again (the view locked meanwhile,
    /// so that member events arriving meanwhile apply after the list, as in
    /// `join`), the handler is told who left and who joined, and the links
    /// follow. A group this member is no longer in is forgotten.
    async fn refresh(&self, client: &Client, handler: &impl MemberHandler) {
        let Some(&me) = self.me.get() else { return };
        let groups: Vec<(GroupId, Slot)> =
            self.groups.iter().map(|entry| (*entry.key(), entry.value().clone())).collect();
        for (group_id, slot) in groups {
            let mut view = slot.write().await;
            let Some(known) = view.as_mut() else { continue };
            let members = match client.get_members(group_id, None).await.map(|members| members.ids()) {
                Ok(members) => members,
                Err(e) if matches!(super::app_error(&e), Some(ErrorCode::NotAMember | ErrorCode::GroupNotFound)) => {
                    *view = None;
                    drop(view);
                    self.groups.remove_if(&group_id, |_, s| Arc::ptr_eq(s, &slot));
                    self.incoming.lock().unwrap_or_else(|e| e.into_inner()).forget_group(group_id);
                    self.departures.send_replace(());
                    if let Some(mesh) = &self.mesh {
                        mesh.close(Some(group_id));
                    }
                    continue;
                }
                Err(e) => {
                    debug!(%group_id, error = %e, "could not ask for the members again after a resume");
                    continue;
                }
            };
            let left: Vec<UserId> = known.members.iter().copied().filter(|m| !members.contains(m)).collect();
            let joined: Vec<UserId> = members.iter().copied().filter(|m| !known.members.contains(m)).collect();
            known.members = members;
            let newcomers: Vec<UserId> = joined.iter().copied().filter(|&m| known.may_link(me, m)).collect();
            drop(view);
            for &member in &left {
                self.incoming.lock().unwrap_or_else(|e| e.into_inner()).forget(group_id, member);
            }
            if !left.is_empty() {
                self.departures.send_replace(());
            }
            if let Err(e) = self.reconcile(group_id, &newcomers).await {
                debug!(%group_id, error = %e, "could not tell the newcomers this member has no WebRTC");
            }
            for member in left {
                handler.on_member_left(group_id, member);
            }
            for member in joined {
                handler.on_member_joined(group_id, member);
            }
        }
    }

    /// Tells each of `members` that this member has no WebRTC.
    async fn declare(&self, group_id: GroupId, members: &[UserId]) -> Result<(), Error> {
        let Some(client) = self.client.get().and_then(Weak::upgrade) else { return Ok(()) };
        let declaration = to_raw_value(&RelayPayload::Signal(Signal::NoWebRtc))?;
        for &member in members {
            client.relay_notification(group_id, member, &declaration).await?;
        }
        Ok(())
    }
}

/// Serves the server's calls for a [`Member`]: payloads in, the user's
/// [`MemberHandler`] called.
struct Adapter<H> {
    /// State shared with the `Member`.
    shared: Arc<Shared>,
    /// The user's callbacks, shared with the links.
    handler: Arc<H>,
}

/// Hands what arrives on DataChannels to the user's [`MemberHandler`],
/// behind the group's capability, as relayed payloads are.
struct Delivery<H> {
    shared: Weak<Shared>,
    handler: Arc<H>,
}

impl<H: MemberHandler> Inbound for Delivery<H> {
    fn broadcast(&self, group_id: GroupId, from: UserId, body: Body) -> Delivered {
        let (shared, handler) = (self.shared.clone(), self.handler.clone());
        Box::pin(async move {
            let Some(shared) = shared.upgrade() else { return };
            match (shared.view(group_id).await, shared.me.get()) {
                (Some(view), Some(&me)) if view.may_broadcast(from, me) => handler.on_broadcast(group_id, from, body),
                _ => debug!(%group_id, %from, "dropped a broadcast the group does not allow"),
            }
        })
    }

    fn unicast(&self, group_id: GroupId, from: UserId, body: Body) -> Answer {
        let (shared, handler) = (self.shared.clone(), self.handler.clone());
        Box::pin(async move {
            let shared = shared.upgrade().ok_or(ErrorCode::NotAMember)?;
            let (Some(view), Some(&me)) = (shared.view(group_id).await, shared.me.get()) else {
                return Err(ErrorCode::NotAMember.into());
            };
            if !view.may_unicast(from, me) {
                return Err(ErrorCode::PermissionDenied.into());
            }
            let reply = handler.on_unicast(group_id, from, body).await?;
            check_size(&reply, shared.max_message_bytes)?;
            Ok(reply)
        })
    }

    fn link_state(&self, group_id: GroupId, peer: UserId, state: LinkState) {
        self.handler.on_link_state(group_id, peer, state);
    }
}

#[async_trait]
impl<H: MemberHandler> PeerServer for Adapter<H> {
    async fn on_relay(&self, group_id: GroupId, from: UserId, data: Box<RawValue>) -> RpcResult<Box<RawValue>> {
        let payload: RelayPayload = serde_json::from_str(data.get())
            .map_err(|e| ErrorObject::owned(INVALID_PARAMS, format!("not a webrtc-p2p payload: {e}"), None::<()>))?;
        let me = self.shared.me.get().copied();
        match payload {
            RelayPayload::Signal(signal) if let Some(mesh) = &self.shared.mesh => {
                // The server only relays between members: a sender we have
                // not heard of joined a moment ago (its offer can overtake
                // our `get_members`).
                if self.shared.view(group_id).await.is_some_and(|view| !view.members.contains(&from)) {
                    self.member_joined(group_id, from, None).await?;
                }
                // `join` opens its links once it has the member list: an
                // offer may come in between, and finds its link opened here.
                self.shared.relink(mesh, group_id).await;
                mesh.signal(group_id, from, signal);
                // An offer is taken (its answer follows as a signal of ours).
                Ok(RawValue::NULL.to_owned())
            }
            RelayPayload::Signal(Signal::NoWebRtc) => Ok(RawValue::NULL.to_owned()),
            // Of the signals only offers come as requests (answers and
            // candidates would follow an offer of ours); the answer refuses.
            RelayPayload::Signal(_) => Err(no_webrtc()),
            RelayPayload::Broadcast(body) => {
                self.broadcast_in(group_id, from, me, body).await;
                Ok(RawValue::NULL.to_owned())
            }
            RelayPayload::Unicast(body) => self.unicast_in(group_id, from, me, body).await,
            RelayPayload::Chunk(chunk) => {
                let key = (group_id, from, chunk.id);
                let whole = self.shared.incoming.lock().unwrap_or_else(|e| e.into_inner()).accept(
                    key,
                    chunk,
                    self.shared.max_message_bytes,
                    Instant::now(),
                )?;
                match whole {
                    None => Ok(RawValue::NULL.to_owned()),
                    Some((ChunkKind::Broadcast, body)) => {
                        self.broadcast_in(group_id, from, me, body).await;
                        Ok(RawValue::NULL.to_owned())
                    }
                    Some((ChunkKind::Unicast, body)) => self.unicast_in(group_id, from, me, body).await,
                    Some((ChunkKind::Reply, body)) => {
                        self.shared.replies.lock().unwrap_or_else(|e| e.into_inner()).arrived(
                            key,
                            body,
                            Instant::now(),
                        );
                        Ok(RawValue::NULL.to_owned())
                    }
                }
            }
            RelayPayload::Abort(id) => {
                self.shared.incoming.lock().unwrap_or_else(|e| e.into_inner()).abort((group_id, from, id));
                Ok(RawValue::NULL.to_owned())
            }
        }
    }

    async fn member_joined(
        &self,
        group_id: GroupId,
        user_id: UserId,
        _info: Option<serde_json::Value>,
    ) -> RpcResult<()> {
        let (Some(slot), Some(&me)) = (self.shared.groups.get(&group_id).map(|s| s.clone()), self.shared.me.get())
        else {
            return Ok(());
        };
        let linked = {
            let mut view = slot.write().await;
            // Already listed: `join`'s member list had it, and `join` told it.
            let Some(view) = view.as_mut().filter(|view| !view.members.contains(&user_id)) else { return Ok(()) };
            view.members.push(user_id);
            view.may_link(me, user_id)
        };
        let newcomers = if linked { vec![user_id] } else { Vec::new() };
        if let Err(e) = self.shared.reconcile(group_id, &newcomers).await {
            debug!(%group_id, %user_id, error = %e, "could not tell a newcomer this member has no WebRTC");
        }
        self.handler.on_member_joined(group_id, user_id);
        Ok(())
    }

    async fn member_left(&self, group_id: GroupId, user_id: UserId) -> RpcResult<()> {
        self.shared.incoming.lock().unwrap_or_else(|e| e.into_inner()).forget(group_id, user_id);
        let Some(slot) = self.shared.groups.get(&group_id).map(|s| s.clone()) else { return Ok(()) };
        {
            let mut view = slot.write().await;
            let Some(view) = view.as_mut().filter(|view| view.members.contains(&user_id)) else { return Ok(()) };
            // The earliest-joined remaining member, now first, is the owner.
            view.members.retain(|&m| m != user_id);
        }
        self.shared.departures.send_replace(());
        // Links close (the owner's rules may also open or close others).
        let _ = self.shared.reconcile(group_id, &[]).await;
        self.handler.on_member_left(group_id, user_id);
        Ok(())
    }
}

impl<H: MemberHandler> Adapter<H> {
    /// A whole broadcast from `from`: to the handler, if the group allows it.
    async fn broadcast_in(&self, group_id: GroupId, from: UserId, me: Option<UserId>, body: Body) {
        match (self.shared.view(group_id).await, me) {
            (Some(view), Some(me)) if view.may_broadcast(from, me) => self.handler.on_broadcast(group_id, from, body),
            _ => debug!(%group_id, %from, "dropped a broadcast the group does not allow"),
        }
    }

    /// A whole unicast from `from`: the handler's reply, as the answer; a
    /// reply larger than one relay goes as a transfer the answer names.
    async fn unicast_in(
        &self,
        group_id: GroupId,
        from: UserId,
        me: Option<UserId>,
        body: Body,
    ) -> RpcResult<Box<RawValue>> {
        let (Some(view), Some(me)) = (self.shared.view(group_id).await, me) else {
            return Err(ErrorCode::NotAMember.into());
        };
        if !view.may_unicast(from, me) {
            return Err(ErrorCode::PermissionDenied.into());
        }
        let reply = self.handler.on_unicast(group_id, from, body).await?;
        check_size(&reply, self.shared.max_message_bytes).map_err(ErrorObjectOwned::from)?;
        let answer = if reply.len() <= MAX_BODY_BYTES {
            UnicastAnswer::Body(reply)
        } else {
            let client = self.shared.client.get().and_then(Weak::upgrade);
            let Some(client) = client else { return Err(ErrorCode::PeerGone.into()) };
            let id = self.shared.transfer_ids.fetch_add(1, Ordering::Relaxed);
            // Sent after this answer is on its way; the requester takes the
            // chunks in either order.
            tokio::spawn(async move {
                if let Err(e) = send_transfer(&client, group_id, from, id, ChunkKind::Reply, &reply, |_| {}).await {
                    debug!(%group_id, %from, error = %e, "a chunked reply did not get through");
                }
            });
            UnicastAnswer::Chunked { chunked: id }
        };
        to_raw_value(&answer).map_err(|e| ErrorObject::owned(INTERNAL_ERROR, e.to_string(), None::<()>))
    }
}

/// Past `max_message_bytes` a body is `LimitExceeded`, as in the browser.
fn check_size(body: &Body, max_message_bytes: usize) -> Result<(), ErrorCode> {
    if body.len() > max_message_bytes { Err(ErrorCode::LimitExceeded) } else { Ok(()) }
}

/// Relays `body` to `target` as transfer `id`, at most
/// [`transfer::WINDOW`] chunks unanswered, calling `report` with the bytes
/// handed to the server so far; resolves with the answer to the last chunk.
/// On an error, or when the future is dropped before the end, the peer is
/// told to drop what it holds.
async fn send_transfer(
    client: &Arc<Client>,
    group_id: GroupId,
    target: UserId,
    id: u32,
    kind: ChunkKind,
    body: &Body,
    mut report: impl FnMut(u64),
) -> Result<Box<RawValue>, Error> {
    let mut abort = AbortOnDrop { client: Arc::downgrade(client), group_id, target, id, armed: true };
    let mut unanswered = FuturesOrdered::new();
    let mut last = RawValue::NULL.to_owned();
    let mut sent = 0u64;
    for chunk in transfer::chunks(id, kind, body) {
        if unanswered.len() == transfer::WINDOW
            && let Some(answer) = unanswered.next().await
        {
            last = answer?;
        }
        sent += chunk.base64.len() as u64;
        let payload = to_raw_value(&RelayPayload::Chunk(chunk))?;
        unanswered.push_back(client.relay(group_id, target, payload));
        report(sent);
    }
    while let Some(answer) = unanswered.next().await {
        last = answer?;
    }
    abort.armed = false;
    Ok(last)
}

/// Tells the receiver of a relayed transfer to drop it (`{"abort": id}`)
/// unless disarmed: the transfer failed, or the future sending it was
/// dropped (the caller cancelled). Drop cannot await, so the notification
/// is spawned; it follows the chunks already queued on the connection.
struct AbortOnDrop {
    client: Weak<Client>,
    group_id: GroupId,
    target: UserId,
    id: u32,
    armed: bool,
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (Some(client), Ok(runtime)) = (self.client.upgrade(), tokio::runtime::Handle::try_current()) else {
            // No connection or no runtime: the receiver's stall timeout frees it.
            return;
        };
        let (group_id, target, abort) = (self.group_id, self.target, RelayPayload::Abort(self.id));
        runtime.spawn(async move {
            if let Err(e) = client.relay_notification(group_id, target, &abort).await {
                debug!(%group_id, %target, error = %e, "could not tell a transfer's receiver it was aborted");
            }
        });
    }
}

/// One send's progress over its targets (`targets` of them, index by
/// index): each counted at its furthest, so that a transfer that starts
/// over through the server does not count twice, and reported to the
/// caller's callback only when the sum grows. Links report to their own
/// job; the send's future brings that here, so the callback runs on the
/// caller's task.
struct Tally<'a> {
    size: u64,
    total: u64,
    state: Mutex<TallyState<'a>>,
}

struct TallyState<'a> {
    furthest: Vec<u64>,
    sent: u64,
    report: Option<Box<dyn FnMut(Progress) + Send + 'a>>,
}

impl<'a> Tally<'a> {
    fn new(size: usize, targets: usize, options: SendOptions<'a>) -> Self {
        let size = size as u64;
        let state = TallyState { furthest: vec![0; targets], sent: 0, report: options.on_progress };
        Self { size, total: size * targets as u64, state: Mutex::new(state) }
    }

    /// `target` has `sent` bytes of the message handed over.
    fn report(&self, target: usize, sent: u64) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let TallyState { furthest, sent: sum, report } = &mut *state;
        let Some(before) = furthest.get_mut(target).filter(|before| sent > **before) else { return };
        *sum += sent - *before;
        *before = sent;
        let progress = Progress { sent: *sum, total: self.total };
        if let Some(report) = report {
            report(progress);
        }
    }

    /// All of the message is handed over for `target`.
    fn handed_over(&self, target: usize) {
        self.report(target, self.size);
    }

    /// No one to send to: done at once, `0 == 0`.
    fn nobody(&self) {
        if let Some(report) = &mut self.state.lock().unwrap_or_else(|e| e.into_inner()).report {
            report(Progress { sent: 0, total: 0 });
        }
    }
}

/// Follows a transfer on a link, calling `report` with what it wrote:
/// `true` once all `size` bytes are written, `false` when the link stopped
/// short (it left 'direct', or closed).
async fn follow(mut written: watch::Receiver<u64>, size: usize, report: impl Fn(u64)) -> bool {
    while written.changed().await.is_ok() {
        let sent = *written.borrow_and_update();
        report(sent);
        if sent >= size as u64 {
            return true;
        }
    }
    false
}

/// A large unicast on a direct link: its progress while it is written,
/// then its reply. A reply that comes first (the target refused the
/// message at its start, or the link closed) ends the call, and dropping
/// the progress gives up what is still to be written.
async fn unicast_on_link(
    target: UserId,
    reply: oneshot::Receiver<Result<Body, Error>>,
    written: impl Future<Output = bool>,
) -> Result<Body, Error> {
    let reply = async { reply.await.unwrap_or_else(|_| Err(local(ErrorCode::PeerGone, format!("{target} left")))) };
    tokio::pin!(reply);
    tokio::select! {
        biased;
        early = &mut reply => return early,
        _ = written => {}
    }
    reply.await
}

/// [`Member::connect`] failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The WebSocket could not be opened.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// `init` failed.
    #[error("init failed: {0}")]
    Init(#[from] Error),
}

/// A group member that browsers can talk to: it joins or creates groups,
/// receives their broadcasts and unicasts through a [`MemberHandler`], and
/// sends its own over the server's `relay`, in the browsers' payload format.
///
/// ```no_run
/// use webrtc_p2p_simple::client::payload::Body;
/// use webrtc_p2p_simple::client::{Member, MemberHandler};
/// use webrtc_p2p_interfaces::{GroupId, UserId};
///
/// /// Prints broadcasts and answers unicasts with what they carried.
/// struct Echo;
///
/// impl MemberHandler for Echo {
///     fn on_broadcast(&self, _group: GroupId, from: UserId, body: Body) {
///         println!("{from}: {body:?}");
///     }
///     async fn on_unicast(&self, _group: GroupId, _from: UserId, body: Body) -> Result<Body, jsonrpsee::types::ErrorObjectOwned> {
///         Ok(body)
///     }
/// }
///
/// # async fn run(group: GroupId) -> Result<(), Box<dyn std::error::Error>> {
/// let member = Member::connect("ws://127.0.0.1:3001/ws", Echo).await?;
/// member.join(group).await?;
/// member.broadcast(group, "hello from Rust").await?;
/// for peer in member.members(group).await.into_iter().filter(|&m| m != member.id()) {
///     let reply = member.unicast(group, peer, vec![1, 2, 3]).await?;
///     println!("{peer} answered {reply:?}");
/// }
/// member.close().await;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Member {
    /// This member's user id.
    id: UserId,
    /// The connection; the handler holds a weak reference to it.
    client: Arc<Client>,
    /// Groups and ids, shared with the handler.
    shared: Arc<Shared>,
}

/// Settings of a [`Member`] other than the defaults: the client's, and
/// whether and how it makes direct links.
#[derive(Debug, Clone)]
pub struct MemberBuilder {
    client: ClientBuilder,
    rtc: RtcConfig,
    /// Set by [`Self::no_webrtc`].
    no_webrtc: bool,
    /// Set by [`Self::max_message_bytes`].
    max_message_bytes: usize,
}

impl Default for MemberBuilder {
    fn default() -> Self {
        Self {
            client: ClientBuilder::default(),
            rtc: RtcConfig::default(),
            no_webrtc: false,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
        }
    }
}

impl MemberBuilder {
    /// The connection's settings.
    pub fn client(mut self, client: ClientBuilder) -> Self {
        self.client = client;
        self
    }

    /// How direct links are made (the default: [`RtcConfig::default`]).
    pub fn rtc(mut self, config: RtcConfig) -> Self {
        self.rtc = config;
        self
    }

    /// Speak no WebRTC: every link is relayed through the server, and the
    /// other members are told so at once.
    pub fn no_webrtc(mut self) -> Self {
        self.no_webrtc = true;
        self
    }

    /// The largest message this member sends or takes, in bytes (the
    /// browser's `maxMessageBytes` option); larger ones are LimitExceeded.
    /// Default [`DEFAULT_MAX_MESSAGE_BYTES`] (64 MiB).
    pub fn max_message_bytes(mut self, max: usize) -> Self {
        self.max_message_bytes = max;
        self
    }

    /// Connects to `url` (e.g. `ws://127.0.0.1:3001/ws`) and calls `init`.
    pub async fn connect(self, url: &str, handler: impl MemberHandler) -> Result<Member, StartError> {
        let meter = Meter::default();
        let mesh = (!self.no_webrtc).then(|| Mesh::new(self.rtc, self.max_message_bytes, meter.clone()));
        let shared = Arc::new(Shared {
            me: OnceLock::new(),
            client: OnceLock::new(),
            groups: DashMap::new(),
            mesh,
            incoming: Mutex::new(Assemblies::new(meter.clone())),
            replies: Mutex::default(),
            transfer_ids: AtomicU32::new(0),
            meter,
            departures: watch::Sender::new(()),
            max_message_bytes: self.max_message_bytes,
        });
        let handler = Arc::new(handler);
        let adapter = Adapter { shared: shared.clone(), handler: handler.clone() };
        let token = self.client.token.clone();
        let client = Arc::new(self.client.connect(url, adapter).await?);
        let id = client.init(token).await?;
        // With a ticket the client resumes a dropped connection by itself; a
        // server without `session` (v1) leaves the member v1: a drop ends it.
        if let Err(e) = client.session().await {
            debug!(error = %e, "no session facts: a dropped connection will end this member");
        }
        tokio::spawn(refresh_after_resumes(
            client.conn.resumes_without_replay(),
            Arc::downgrade(&shared),
            Arc::downgrade(&client),
            handler.clone(),
        ));
        // All are fresh: nothing else sets them.
        let _ = shared.me.set(id);
        let _ = shared.client.set(Arc::downgrade(&client));
        if let Some(mesh) = &shared.mesh {
            mesh.start(id, Arc::downgrade(&client), Arc::new(Delivery { shared: Arc::downgrade(&shared), handler }));
        }
        // Stalled transfers are dropped while the member lives.
        let swept = Arc::downgrade(&shared);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(STALL_TIMEOUT / 3).await;
                let Some(shared) = swept.upgrade() else { break };
                shared.sweep();
            }
        });
        Ok(Member { id, client, shared })
    }
}

/// Refreshes the member's view after each resume without replay, for as
/// long as the member and its connection live.
async fn refresh_after_resumes(
    mut unreplayed: tokio::sync::watch::Receiver<u64>,
    shared: Weak<Shared>,
    client: Weak<Client>,
    handler: Arc<impl MemberHandler>,
) {
    while unreplayed.changed().await.is_ok() {
        let (Some(shared), Some(client)) = (shared.upgrade(), client.upgrade()) else { return };
        shared.refresh(&client, &*handler).await;
    }
}

impl Member {
    /// Connects to `url` (e.g. `ws://127.0.0.1:3001/ws`) with the default
    /// settings (WebRTC on) and calls `init`.
    pub async fn connect(url: &str, handler: impl MemberHandler) -> Result<Self, StartError> {
        Self::builder().connect(url, handler).await
    }

    /// Connects with the client settings of `builder` and calls `init`.
    pub async fn connect_with(
        builder: ClientBuilder,
        url: &str,
        handler: impl MemberHandler,
    ) -> Result<Self, StartError> {
        Self::builder().client(builder).connect(url, handler).await
    }

    /// Settings other than the defaults: no WebRTC, timeouts, addresses.
    pub fn builder() -> MemberBuilder {
        MemberBuilder::default()
    }

    /// This member's user id.
    pub fn id(&self) -> UserId {
        self.id
    }

    /// This session's facts: the ICE servers (a member without WebRTC has
    /// no use for them, a program that brings its own WebRTC does) and the
    /// resume ticket.
    pub async fn session(&self) -> Result<SessionFacts, Error> {
        self.client.session().await
    }

    /// The connection underneath, for the raw signaling calls.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Creates a group owned by this member; `None` is the default capability.
    pub async fn create(&self, capability: Option<Capability>) -> Result<GroupId, Error> {
        let group_id = self.client.create(capability).await?;
        let view = View { capability: capability.unwrap_or_default(), members: vec![self.id] };
        self.shared.groups.insert(group_id, Arc::new(RwLock::new(Some(view))));
        Ok(group_id)
    }

    /// Joins a group and tells the members it may talk to that it has no
    /// WebRTC, so that their links to it are relayed at once.
    pub async fn join(&self, group_id: GroupId) -> Result<(), Error> {
        let slot = self.shared.groups.entry(group_id).or_default().clone();
        let mut view = slot.write().await;
        let joined = async {
            let JoinResult { capability, .. } = self.client.join(group_id).await?;
            let members = self.client.get_members(group_id, None).await?.ids();
            Ok::<_, Error>(View { capability, members })
        }
        .await;
        match joined {
            Ok(joined) => {
                let linked = joined.linked(self.id);
                *view = Some(joined);
                drop(view);
                self.shared.reconcile(group_id, &linked).await
            }
            Err(e) => {
                if view.is_none() {
                    self.shared.groups.remove_if(&group_id, |_, s| Arc::ptr_eq(s, &slot));
                }
                Err(e)
            }
        }
    }

    /// Leaves a group; it is forgotten here even when the server's answer is
    /// an error (the connection is gone, or the group was).
    pub async fn leave(&self, group_id: GroupId) -> Result<(), Error> {
        let left = self.client.leave(group_id).await;
        if let Some((_, slot)) = self.shared.groups.remove(&group_id) {
            *slot.write().await = None;
        }
        self.shared.incoming.lock().unwrap_or_else(|e| e.into_inner()).forget_group(group_id);
        self.shared.departures.send_replace(());
        if let Some(mesh) = &self.shared.mesh {
            mesh.close(Some(group_id));
        }
        left
    }

    /// The group's members in join order, this member included and the owner
    /// first; empty when this member is not in the group.
    pub async fn members(&self, group_id: GroupId) -> Vec<UserId> {
        self.shared.view(group_id).await.map(|view| view.members).unwrap_or_default()
    }

    /// The state of the link to `member` in `group_id`: `Closed` for a
    /// non-member, this member itself, or a pair the capability does not
    /// link; always `Relayed` otherwise without WebRTC.
    pub async fn link_state(&self, group_id: GroupId, member: UserId) -> LinkState {
        let Some(view) = self.shared.view(group_id).await else { return LinkState::Closed };
        if !view.members.contains(&member) || !view.may_link(self.id, member) {
            return LinkState::Closed;
        }
        self.shared.mesh.as_ref().map_or(LinkState::Relayed, |mesh| mesh.state(group_id, member))
    }

    /// Sends `data` to every member the capability lets this member broadcast
    /// to; resolves once all of it is handed to every link (no delivery
    /// receipt): queued for a message that fits one frame, its last chunk
    /// written for a larger one. Fails with `NotAMember`,
    /// `PermissionDenied` (the capability lets this member broadcast to no
    /// one while there are others), `LimitExceeded` (past
    /// [`MemberBuilder::max_message_bytes`]) or `PeerGone` (a target left
    /// before it had all of a message sent in chunks; the others still get
    /// it). Dropping the future cancels what is still being sent; see
    /// [`SendOptions`]. [`Self::broadcast_with`] reports progress.
    pub async fn broadcast(&self, group_id: GroupId, data: impl Into<Body>) -> Result<(), Error> {
        self.broadcast_with(group_id, data, SendOptions::new()).await
    }

    /// [`Self::broadcast`] with options: progress reports as the message is
    /// handed to the links, summed over the targets. The browser's
    /// `broadcast(data, { onprogress, signal })`; dropping the future is the
    /// `signal`.
    ///
    /// ```no_run
    /// # use webrtc_p2p_simple::client::{Member, SendOptions};
    /// # use webrtc_p2p_interfaces::GroupId;
    /// # async fn run(member: &Member, group: GroupId, file: Vec<u8>) -> Result<(), Box<dyn std::error::Error>> {
    /// let (cancel, cancelled) = tokio::sync::oneshot::channel::<()>();
    /// # drop(cancel);
    /// let send = member.broadcast_with(
    ///     group,
    ///     file,
    ///     SendOptions::new().on_progress(|p| println!("{} of {} bytes", p.sent, p.total)),
    /// );
    /// tokio::select! {
    ///     sent = send => sent?,
    ///     // Dropping `send` stops it: the receivers drop what they hold of it.
    ///     _ = cancelled => println!("cancelled"),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn broadcast_with(
        &self,
        group_id: GroupId,
        data: impl Into<Body>,
        options: SendOptions<'_>,
    ) -> Result<(), Error> {
        let view = self.view(group_id).await?;
        let others = view.members.iter().filter(|&&m| m != self.id).count();
        let targets: Vec<UserId> = view.members.iter().copied().filter(|&m| view.may_broadcast(self.id, m)).collect();
        if targets.is_empty() && others > 0 {
            let message = "this capability lets this member broadcast to no one".to_owned();
            return Err(local(ErrorCode::PermissionDenied, message));
        }
        let body = self.body(data)?;
        let tally = Tally::new(body.len(), targets.len(), options);
        if targets.is_empty() {
            tally.nobody();
            return Ok(());
        }
        if body.len() > MAX_BODY_BYTES {
            return self.broadcast_large(group_id, &targets, &body, &tally).await;
        }
        let payload = to_raw_value(&RelayPayload::Broadcast(body.clone()))?;
        for (index, &target) in targets.iter().enumerate() {
            // On the link to the target, which relays it when it must.
            let unlinked = self
                .shared
                .mesh
                .as_ref()
                .is_none_or(|mesh| mesh.send(group_id, target, Outgoing::Broadcast(body.clone(), None)).is_err());
            if unlinked {
                self.client.relay_notification(group_id, target, &payload).await?;
            }
            tally.handed_over(index);
        }
        Ok(())
    }

    /// A broadcast larger than one relay: in chunks on each direct link at
    /// once, and through the server to the others one after the other (so
    /// that what this member has in flight at the server stays a window's
    /// worth). Every target gets it even when one fails; the first failure
    /// is the answer.
    async fn broadcast_large(
        &self,
        group_id: GroupId,
        targets: &[UserId],
        body: &Body,
        tally: &Tally<'_>,
    ) -> Result<(), Error> {
        let (direct, relayed): (Vec<_>, Vec<_>) =
            targets.iter().copied().enumerate().partition(|&(_, target)| self.direct(group_id, target));
        let on_links = join_all(direct.into_iter().map(|(index, target)| async move {
            let report = |sent| tally.report(index, sent);
            self.broadcast_on_link(group_id, target, body, report).await
        }));
        let through_server = async {
            let mut results = Vec::with_capacity(relayed.len());
            for (index, target) in relayed {
                let report = |sent| tally.report(index, sent);
                results.push(self.relay_transfer(group_id, target, ChunkKind::Broadcast, body, report).await);
            }
            results
        };
        let (on_links, through_server) = tokio::join!(on_links, through_server);
        on_links.into_iter().chain(through_server.into_iter().map(|sent| sent.map(drop))).collect()
    }

    /// A large broadcast to `target` on its direct link, in chunks; through
    /// the server, from the start, when the link is relayed before all of
    /// it is written (as the browser does); `PeerGone` when it closed.
    async fn broadcast_on_link(
        &self,
        group_id: GroupId,
        target: UserId,
        body: &Body,
        report: impl Fn(u64),
    ) -> Result<(), Error> {
        if let Some(mesh) = &self.shared.mesh {
            let (job, written): (Job, _) = watch::channel(0);
            let handed = mesh.send(group_id, target, Outgoing::Broadcast(body.clone(), Some(job))).is_ok();
            if handed && follow(written, body.len(), &report).await {
                return Ok(());
            }
        }
        if self.link_state(group_id, target).await != LinkState::Relayed {
            return Err(local(ErrorCode::PeerGone, format!("the link to {target} closed mid-transfer")));
        }
        self.relay_transfer(group_id, target, ChunkKind::Broadcast, body, report).await.map(drop)
    }

    /// Relays `body` to `target` as a transfer; `PeerGone` when the target
    /// leaves before it has all of it (the server's `UserNotFound` for a
    /// chunk means the same).
    async fn relay_transfer(
        &self,
        group_id: GroupId,
        target: UserId,
        kind: ChunkKind,
        body: &Body,
        report: impl FnMut(u64),
    ) -> Result<Box<RawValue>, Error> {
        let id = self.shared.transfer_ids.fetch_add(1, Ordering::Relaxed);
        let gone = || local(ErrorCode::PeerGone, format!("{target} left before it had all of the message"));
        let sent = send_transfer(&self.client, group_id, target, id, kind, body, report);
        tokio::select! {
            sent = sent => sent.map_err(|e| if super::app_error(&e) == Some(ErrorCode::UserNotFound) { gone() } else { e }),
            () = self.departed(group_id, target) => Err(gone()),
        }
    }

    /// Resolves once `target` is no longer in `group_id` as this member
    /// sees it (it left, or this member did).
    async fn departed(&self, group_id: GroupId, target: UserId) {
        let mut departures = self.shared.departures.subscribe();
        loop {
            if !self.shared.view(group_id).await.is_some_and(|view| view.members.contains(&target)) {
                return;
            }
            if departures.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    /// Sends `data` to `target` and resolves with its reply. Fails with
    /// `NotAMember`, `UserNotFound` (not another member), `PermissionDenied`,
    /// `LimitExceeded`, or what the target or the server answered
    /// (`RelayTimeout`, `PeerGone`, `MethodNotFound`, `InternalError`, …).
    /// Dropping the future cancels what is still being sent; see
    /// [`SendOptions`]. [`Self::unicast_with`] reports progress.
    pub async fn unicast(&self, group_id: GroupId, target: UserId, data: impl Into<Body>) -> Result<Body, Error> {
        self.unicast_with(group_id, target, data, SendOptions::new()).await
    }

    /// [`Self::unicast`] with options: progress reports as the request is
    /// handed to the link (the reply is not counted). The browser's
    /// `unicast(target, data, { onprogress, signal })`; dropping the future
    /// is the `signal`.
    pub async fn unicast_with(
        &self,
        group_id: GroupId,
        target: UserId,
        data: impl Into<Body>,
        options: SendOptions<'_>,
    ) -> Result<Body, Error> {
        let view = self.view(group_id).await?;
        if target == self.id || !view.members.contains(&target) {
            return Err(local(ErrorCode::UserNotFound, format!("{target} is not another member of this group")));
        }
        if !view.may_unicast(self.id, target) {
            return Err(local(ErrorCode::PermissionDenied, format!("this capability forbids unicasts to {target}")));
        }
        let mut body = self.body(data)?;
        let tally = Tally::new(body.len(), 1, options);
        let report = |sent| tally.report(0, sent);
        // On the link to the target, which relays a small one when it must;
        // a large one only when the link is direct.
        let large = body.len() > MAX_BODY_BYTES;
        if let Some(mesh) = &self.shared.mesh
            && (!large || self.direct(group_id, target))
        {
            let (reply_to, reply) = oneshot::channel();
            let (job, written): (Job, _) = watch::channel(0);
            let size = body.len();
            match mesh.send(group_id, target, Outgoing::Unicast(body, reply_to, large.then_some(job))) {
                Ok(()) if large => return unicast_on_link(target, reply, follow(written, size, report)).await,
                Ok(()) => {
                    tally.handed_over(0);
                    return reply.await.unwrap_or_else(|_| Err(local(ErrorCode::PeerGone, format!("{target} left"))));
                }
                // No link after all: through the server.
                Err(Outgoing::Unicast(unlinked, ..) | Outgoing::Broadcast(unlinked, _)) => body = unlinked,
            }
        }
        let answer = if large {
            self.relay_transfer(group_id, target, ChunkKind::Unicast, &body, report).await?
        } else {
            let relayed = self.client.relay(group_id, target, to_raw_value(&RelayPayload::Unicast(body))?);
            tally.handed_over(0);
            relayed.await?
        };
        let answer: UnicastAnswer = serde_json::from_str(answer.get()).map_err(|e| {
            Error::Call(ErrorObject::owned(INTERNAL_ERROR, format!("malformed unicast reply: {e}"), None::<()>))
        })?;
        match answer {
            UnicastAnswer::Body(reply) => Ok(reply),
            UnicastAnswer::Chunked { chunked } => self.chunked_reply((group_id, target, chunked)).await,
        }
    }

    /// The messages coming in to this member that started and are not
    /// whole yet, on every path (DataChannel transfers and relayed ones,
    /// chunked replies too), with their bytes so far; `changed()` wakes at
    /// each chunk. A message counts from its first chunk until it is handed
    /// over, or dropped: its sender aborted it (its future was dropped, say)
    /// or left, it stalled for [`STALL_TIMEOUT`], its link left 'direct'.
    /// What a progress bar on the receiving side, or a test that wants the
    /// receiver freed, watches.
    pub fn receiving(&self) -> watch::Receiver<Receiving> {
        self.shared.meter.subscribe()
    }

    /// Waits for the chunked reply `key`; `RelayTimeout` when it stalls.
    async fn chunked_reply(&self, key: TransferKey) -> Result<Body, Error> {
        let mut reply = self.shared.replies.lock().unwrap_or_else(|e| e.into_inner()).wait(key);
        loop {
            match tokio::time::timeout(STALL_TIMEOUT, &mut reply).await {
                Ok(Ok(body)) => return Ok(body),
                Ok(Err(_)) => return Err(local(ErrorCode::PeerGone, format!("{} left before it replied", key.1))),
                // Still coming in: the transfer's own stall timeout applies.
                Err(_) if self.shared.incoming.lock().unwrap_or_else(|e| e.into_inner()).contains(&key) => {}
                Err(_) => return Err(local(ErrorCode::RelayTimeout, format!("{} did not send its reply", key.1))),
            }
        }
    }

    /// Closes the links and the connection; see [`Client::close`].
    pub async fn close(&self) -> Disconnected {
        if let Some(mesh) = &self.shared.mesh {
            mesh.close(None);
        }
        self.client.close().await
    }

    /// Resolves once the connection has ended; see [`Client::closed`].
    pub fn closed(&self) -> impl Future<Output = Disconnected> + Send + 'static {
        self.client.closed()
    }

    /// Whether the link to `peer` is on a DataChannel now.
    fn direct(&self, group_id: GroupId, peer: UserId) -> bool {
        self.shared.mesh.as_ref().is_some_and(|mesh| mesh.state(group_id, peer) == LinkState::Direct)
    }

    async fn view(&self, group_id: GroupId) -> Result<View, Error> {
        let view = self.shared.view(group_id).await;
        view.ok_or_else(|| local(ErrorCode::NotAMember, format!("this member is not in group {group_id}")))
    }

    fn body(&self, data: impl Into<Body>) -> Result<Body, Error> {
        let body = data.into();
        let max = self.shared.max_message_bytes;
        check_size(&body, max)
            .map_err(|code| local(code, format!("a message may carry at most {max} bytes, not {}", body.len())))?;
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_counts_each_target_at_its_furthest_and_only_grows() {
        let mut reports = Vec::new();
        {
            let tally = Tally::new(100, 2, SendOptions::new().on_progress(|p| reports.push(p.sent)));
            tally.report(0, 40);
            tally.report(1, 30);
            // Target 0's transfer starts over through the server: nothing
            // is reported until it passes where it was.
            tally.report(0, 10);
            tally.report(0, 40);
            tally.report(0, 70);
            tally.handed_over(1);
            tally.handed_over(0);
            tally.handed_over(0);
        }
        assert_eq!(reports, [40, 70, 100, 170, 200]);
    }

    #[test]
    fn a_send_to_no_one_reports_zero_of_zero_once() {
        let mut reports = Vec::new();
        Tally::new(100, 0, SendOptions::new().on_progress(|p| reports.push(p))).nobody();
        assert_eq!(reports, [Progress { sent: 0, total: 0 }]);
    }
}
