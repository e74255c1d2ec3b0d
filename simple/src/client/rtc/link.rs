//! One link to one peer in one group: a str0m `Rtc` with two DataChannels
//! (the main one for transfers, a control one for whole frames), negotiated
//! as the browsers' `Link` (`simple/ts/link.ts`) does, driven by
//! one tokio task that owns it, its UDP sockets and the route of every
//! message to the peer: on the channel while 'direct', through the server's
//! `relay` once 'relayed', held while 'connecting'.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Instant;

use jsonrpsee::core::client::Error;
use jsonrpsee::types::{ErrorObject, ErrorObjectOwned};
use serde_json::value::{RawValue, to_raw_value};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::channel::{Channel, ChannelConfig, ChannelId};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcConfig as Str0mConfig};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::sleep_until;
use tracing::debug;
use webrtc_p2p_interfaces::{ErrorCode, GroupId, SignalingClient, UserId};

use super::frame::{
    Announcement, Frame, HELLO_FRAME, Kind, MOVED_FRAME, Message, abort_frame, ack_frame, chunk_frame, error_of,
};
use super::{Inbound, LinkState, RtcConfig};
use crate::client::Client;
use crate::client::payload::{Body, IceCandidate, MAX_BODY_BYTES, RelayPayload, SdpType, SessionDescription, Signal};
use crate::client::transfer::{Hold, Meter, STALL_TIMEOUT};

/// The label of a link's main DataChannel, as the browsers name it.
const CHANNEL_LABEL: &str = "webrtc-p2p";
/// The control channel, for whole frames: negotiated out of band (both
/// sides make it with this stream id, no round trip), so that a small
/// message does not wait behind the transfer chunks queued on the main
/// channel (the browsers' SCTP takes streams in turn). Stream 2: the main
/// channel is 0 or 1, by DTLS role.
const CONTROL_LABEL: &str = "webrtc-p2p-control";
const CONTROL_STREAM_ID: u16 = 2;
/// Past this many bytes queued in the channel, frames wait in the link until
/// it drains below the low-water mark (as in the browser's `Link`).
const CHANNEL_HIGH_WATER_BYTES: usize = 4 * 1024 * 1024;
const CHANNEL_LOW_WATER_BYTES: usize = 64 * 1024;
/// A transfer's chunks go on the channel only while less than this is
/// queued there, so that a small message sent meanwhile waits behind little
/// (the browser's 256 KiB).
const TRANSFER_HIGH_WATER_BYTES: usize = 256 * 1024;
/// The bytes of one chunk frame's payload (the browser's 64 KiB).
const CHANNEL_CHUNK_BYTES: usize = 64 * 1024;
/// What str0m may hold unsent across the association: above the high-water
/// mark plus one largest frame, so a frame the link lets through always fits.
const SCTP_BUFFER_BYTES: usize = CHANNEL_HIGH_WATER_BYTES + 2 * (MAX_BODY_BYTES + 6);
/// Datagrams waiting for the link task, per link.
const PACKET_QUEUE: usize = 256;
/// Larger than any datagram ICE, DTLS or SCTP sends.
const DATAGRAM_BYTES: usize = 2048;
/// Frame ids are 32-bit; after this one they start over at 1.
const MAX_FRAME_ID: u32 = u32::MAX;

/// Where a unicast's reply goes.
pub(crate) type ReplyTo = oneshot::Sender<Result<Body, Error>>;

/// How far a transfer of ours went, for whoever sent the message: the
/// bytes of it written to the channel so far. The sender drops its
/// receiver to give the message up: the link stops sending it and tells
/// the peer to drop what it holds. The link drops the job when it stops
/// short of the end: the link left 'direct' or closed (the sender may
/// then try the server).
pub(crate) type Job = watch::Sender<u64>;

/// A message for the peer; a job to report to when it is larger than one
/// frame and its sender wants to know.
#[derive(Debug)]
pub(crate) enum Outgoing {
    Broadcast(Body, Option<Job>),
    Unicast(Body, ReplyTo, Option<Job>),
}

/// What the rest of the member tells a link.
#[derive(Debug)]
enum Command {
    Send(Outgoing),
    /// A signal from the peer, through the server.
    Signal(Signal),
    /// The peer will not negotiate (it said so, or refused our offer).
    GiveUp,
    /// This member's answer to the peer's request `id`.
    Reply(u32, Result<Body, ErrorObjectOwned>),
}

/// What a link needs from its member.
pub(crate) struct Context {
    pub(crate) group_id: GroupId,
    pub(crate) me: UserId,
    pub(crate) peer: UserId,
    pub(crate) config: Arc<RtcConfig>,
    pub(crate) client: Weak<Client>,
    pub(crate) inbound: Arc<dyn Inbound>,
    /// The largest message taken (the member's `max_message_bytes`).
    pub(crate) max_message_bytes: usize,
    /// Where the messages coming in as transfers count themselves.
    pub(crate) meter: Meter,
}

/// The member's handle on a link. Dropping it closes the link.
#[derive(Debug)]
pub(crate) struct Link {
    commands: mpsc::UnboundedSender<Command>,
    state: watch::Receiver<LinkState>,
}

impl Link {
    /// Starts the link's task: it offers at once when this side is the
    /// impolite one (the larger user id), which opens the channel.
    pub(crate) fn open(context: Context) -> Self {
        let (commands, receiver) = mpsc::unbounded_channel();
        let (state_tx, state) = watch::channel(LinkState::Connecting);
        let task = Task::new(context, receiver, commands.downgrade(), state_tx);
        tokio::spawn(task.run());
        Self { commands, state }
    }

    pub(crate) fn state(&self) -> LinkState {
        *self.state.borrow()
    }

    /// Hands a message to the link; `false` when its task has ended (the
    /// member is closing), with the message dropped.
    pub(crate) fn send(&self, message: Outgoing) -> bool {
        self.commands.send(Command::Send(message)).is_ok()
    }

    pub(crate) fn signal(&self, signal: Signal) {
        let _ = self.commands.send(match signal {
            Signal::NoWebRtc => Command::GiveUp,
            signal => Command::Signal(signal),
        });
    }
}

/// A datagram one of the link's sockets received.
struct Packet {
    source: SocketAddr,
    destination: SocketAddr,
    data: Vec<u8>,
}

/// The peer-to-peer half of a link: gone once it is relayed or closed.
struct P2p {
    rtc: Rtc,
    sockets: Vec<Arc<UdpSocket>>,
    packets: mpsc::Receiver<Packet>,
    readers: Vec<JoinHandle<()>>,
    channel: Option<ChannelId>,
    /// The control channel, once open.
    control: Option<ChannelId>,
    /// The peer said hello on the control channel: it takes whole frames there.
    peer_has_control: bool,
    /// Our whole frames go on the control channel (a moved frame on the
    /// main one said so).
    moved: bool,
    /// What the peer sent on the control channel before its moved frame
    /// came on the main one: whole frames it sent there before go first.
    /// `None` once it came.
    held_control: Option<Vec<Message>>,
    /// Our offer, until its answer comes.
    pending_offer: Option<SdpPendingOffer>,
    /// Whether the peer's description is applied (candidates wait for it).
    described: bool,
    /// Set after the impolite side dropped a colliding offer: its candidates are dropped too.
    ignore_offer: bool,
    /// Remote candidates that came before the description they belong to.
    early_candidates: Vec<Candidate>,
    /// Frames waiting for the main channel to drain, in send order.
    backlog: VecDeque<Vec<u8>>,
    /// Frames waiting for the control channel to drain, in send order.
    control_backlog: VecDeque<Vec<u8>>,
    /// Messages larger than one frame, waiting to go out as chunks, one
    /// transfer after the other; whole frames go first.
    transfers: VecDeque<Transfer>,
    /// Requests whose transfer made progress since the task last looked:
    /// their reply timeout starts again.
    progressed: Vec<u32>,
}

/// A message going out as a transfer: its start frame, then its chunks.
struct Transfer {
    id: u32,
    /// The start frame, until it is written.
    start: Option<Vec<u8>>,
    body: Body,
    /// Bytes of `body` written as chunks.
    sent: usize,
    /// The request id, when the message is a unicast request.
    request: Option<u32>,
    /// Whoever sent the message, when it wants to know how far it went.
    job: Option<Job>,
}

impl Transfer {
    /// The next frame to write.
    fn next_frame(&self) -> Vec<u8> {
        match &self.start {
            Some(start) => start.clone(),
            None => {
                let bytes = self.body.as_bytes();
                let end = bytes.len().min(self.sent + CHANNEL_CHUNK_BYTES);
                chunk_frame(self.id, &bytes[self.sent..end])
            }
        }
    }

    /// The frame from [`Self::next_frame`] was written; `true` when it was the last.
    fn advance(&mut self) -> bool {
        if self.start.take().is_none() {
            self.sent = self.body.len().min(self.sent + CHANNEL_CHUNK_BYTES);
            if let Some(job) = &self.job {
                job.send_replace(self.sent as u64);
            }
        }
        self.sent >= self.body.len()
    }

    /// Its sender gave it up.
    fn abandoned(&self) -> bool {
        self.job.as_ref().is_some_and(Job::is_closed)
    }
}

/// A message coming in as a transfer.
struct Incoming {
    announcement: Announcement,
    /// The announced size.
    size: usize,
    /// Never longer than `size`.
    bytes: Vec<u8>,
    last_chunk: Instant,
    /// Counts it as being received.
    hold: Hold,
}

impl Drop for P2p {
    fn drop(&mut self) {
        for reader in &self.readers {
            reader.abort();
        }
    }
}

/// A unicast sent on the channel, waiting for its reply.
struct InFlight {
    deadline: Instant,
    reply: ReplyTo,
}

struct Task {
    context: Context,
    commands: mpsc::UnboundedReceiver<Command>,
    /// For the link's own later commands (a refused offer, a reply).
    myself: mpsc::WeakUnboundedSender<Command>,
    state: LinkState,
    state_tx: watch::Sender<LinkState>,
    p2p: Option<P2p>,
    connect_deadline: Instant,
    /// What waits for the link to leave 'connecting', in send order.
    outbox: Vec<Outgoing>,
    in_flight: HashMap<u32, InFlight>,
    last_frame_id: u32,
    /// Messages coming in as transfers on the channel, by transfer id.
    transfers_in: HashMap<u32, Incoming>,
    last_transfer_id: u32,
}

impl Task {
    fn new(
        context: Context,
        commands: mpsc::UnboundedReceiver<Command>,
        myself: mpsc::WeakUnboundedSender<Command>,
        state_tx: watch::Sender<LinkState>,
    ) -> Self {
        let connect_deadline = Instant::now() + context.config.connect_timeout;
        Self {
            context,
            commands,
            myself,
            state: LinkState::Connecting,
            state_tx,
            p2p: None,
            connect_deadline,
            outbox: Vec::new(),
            in_flight: HashMap::new(),
            last_frame_id: 0,
            transfers_in: HashMap::new(),
            last_transfer_id: 0,
        }
    }

    async fn run(mut self) {
        self.context.inbound.link_state(self.context.group_id, self.context.peer, LinkState::Connecting);
        match P2p::bind(&self.context.config).await {
            Ok(p2p) => self.p2p = Some(p2p),
            Err(e) => {
                debug!(peer = %self.context.peer, error = %e, "no socket for ICE");
                self.fall_back().await;
            }
        }
        // Only the impolite side opens the channel, so a pair gets exactly one
        // and, in the common case, exactly one offer.
        if self.p2p.is_some() && self.context.me > self.context.peer {
            self.offer();
        }
        loop {
            let wake = self.drain().await;
            tokio::select! {
                command = self.commands.recv() => match command {
                    Some(command) => self.command(command).await,
                    None => break,
                },
                Some(packet) = next_packet(&mut self.p2p) => self.receive(packet),
                () = sleep_until_some(wake) => self.tick().await,
            }
        }
        self.close();
    }

    /// Runs str0m until it wants nothing but time, handling what it says;
    /// returns when the task must wake up next.
    async fn drain(&mut self) -> Option<tokio::time::Instant> {
        let mut wake = None;
        while let Some(p2p) = self.p2p.as_mut() {
            match p2p.rtc.poll_output() {
                Ok(Output::Timeout(at)) => {
                    wake = Some(at);
                    break;
                }
                Ok(Output::Transmit(transmit)) => {
                    let socket = p2p.sockets.iter().find(|s| s.local_addr().ok() == Some(transmit.source));
                    // UDP: a datagram the kernel will not take now is lost, and resent by its protocol.
                    if let Some(socket) = socket {
                        let _ = socket.try_send_to(&transmit.contents, transmit.destination);
                    }
                }
                Ok(Output::Event(event)) => self.event(event).await,
                Err(e) => {
                    debug!(peer = %self.context.peer, error = %e, "WebRTC failed");
                    self.fall_back().await;
                }
            }
        }
        let mut wake = wake.map(tokio::time::Instant::from_std);
        let mut earlier = |at: Instant| {
            let at = tokio::time::Instant::from_std(at);
            wake = Some(wake.map_or(at, |w| w.min(at)));
        };
        if self.state == LinkState::Connecting {
            earlier(self.connect_deadline);
        }
        if let Some(deadline) = self.in_flight.values().map(|f| f.deadline).min() {
            earlier(deadline);
        }
        if let Some(last) = self.transfers_in.values().map(|t| t.last_chunk).min() {
            earlier(last + STALL_TIMEOUT);
        }
        wake
    }

    async fn event(&mut self, event: Event) {
        let Some(p2p) = self.p2p.as_mut() else { return };
        let (channel, control, moved) = (p2p.channel, p2p.control, p2p.moved);
        match event {
            Event::ChannelOpen(id, label) if label == CHANNEL_LABEL && channel.is_none() => {
                p2p.channel = Some(id);
                if let Some(mut channel) = p2p.rtc.channel(id) {
                    channel.set_buffered_amount_low_threshold(CHANNEL_LOW_WATER_BYTES);
                }
                self.set_state(LinkState::Direct);
                for message in std::mem::take(&mut self.outbox) {
                    self.route(message).await;
                }
            }
            Event::ChannelOpen(id, label) if label == CONTROL_LABEL && p2p.control.is_none() => {
                p2p.control = Some(id);
                if let Some(mut control) = p2p.rtc.channel(id) {
                    control.set_buffered_amount_low_threshold(CHANNEL_LOW_WATER_BYTES);
                }
                if !p2p.say_hello() {
                    self.fall_back().await;
                }
            }
            Event::ChannelData(data) if Some(data.id) == channel => self.channel_data(false, data.data).await,
            Event::ChannelData(data) if Some(data.id) == control => self.channel_data(true, data.data).await,
            Event::ChannelBufferedAmountLow(id)
                if (Some(id) == channel || Some(id) == control) && !self.flush_channel() =>
            {
                self.fall_back().await;
            }
            Event::ChannelClose(id) if Some(id) == channel => self.fall_back().await,
            // Once our frames go there, its end is the link's; before, it is only not used.
            Event::ChannelClose(id) if Some(id) == control && moved => self.fall_back().await,
            Event::ChannelClose(id) if Some(id) == control => {
                if let Some(p2p) = self.p2p.as_mut() {
                    p2p.control = None;
                    p2p.peer_has_control = false;
                }
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => self.fall_back().await,
            _ => {}
        }
    }

    async fn command(&mut self, command: Command) {
        match command {
            Command::Send(message) => self.route(message).await,
            Command::Signal(signal) => self.apply(signal).await,
            Command::GiveUp => self.fall_back().await,
            // A reply whose link died on the way is lost; the caller's timeout tells it.
            Command::Reply(id, result) if self.state == LinkState::Direct => match result {
                Ok(body) if body.len() > MAX_BODY_BYTES => self.send_transfer(Kind::Reply, id, body, None).await,
                Ok(body) => self.send_frame(Frame { kind: Kind::Reply, id, body }.encode()).await,
                Err(error) => self.send_frame(Frame::error(id, &error).encode()).await,
            },
            Command::Reply(..) => {}
        }
    }

    fn receive(&mut self, packet: Packet) {
        let Some(p2p) = self.p2p.as_mut() else { return };
        let Ok(receive) = Receive::new(Protocol::Udp, packet.source, packet.destination, &packet.data) else {
            return;
        };
        if let Err(e) = p2p.rtc.handle_input(Input::Receive(Instant::now(), receive)) {
            debug!(peer = %self.context.peer, error = %e, "dropped a datagram");
        }
    }

    async fn tick(&mut self) {
        let now = Instant::now();
        if self.state == LinkState::Connecting && now >= self.connect_deadline {
            debug!(peer = %self.context.peer, "P2P timed out");
            self.fall_back().await;
        }
        // A transfer that stopped coming is dropped; a request's sender times out.
        self.transfers_in.retain(|_, t| now < t.last_chunk + STALL_TIMEOUT);
        let expired: Vec<u32> = self.in_flight.iter().filter(|(_, f)| f.deadline <= now).map(|(&id, _)| id).collect();
        for id in expired {
            if let Some(call) = self.in_flight.remove(&id) {
                let message = format!("{} did not answer in time", self.context.peer);
                let _ = call.reply.send(Err(local(ErrorCode::RelayTimeout, message)));
            }
        }
        if let Some(p2p) = self.p2p.as_mut()
            && let Err(e) = p2p.rtc.handle_input(Input::Timeout(now))
        {
            debug!(peer = %self.context.peer, error = %e, "WebRTC failed");
            self.fall_back().await;
        }
    }

    /// Creates the channel and the offer, and sends it as a relay request: a
    /// peer without WebRTC refuses it, and the link is relayed at once.
    fn offer(&mut self) {
        let Some(p2p) = self.p2p.as_mut() else { return };
        let mut change = p2p.rtc.sdp_api();
        change.add_channel(CHANNEL_LABEL.to_owned());
        let Some((offer, pending)) = change.apply() else { return };
        p2p.pending_offer = Some(pending);
        let description = self.outgoing(SdpType::Offer, offer.to_sdp_string());
        let Some(client) = self.context.client.upgrade() else { return };
        let Ok(payload) = to_raw_value(&RelayPayload::Signal(Signal::Description(description))) else { return };
        let (group_id, peer, myself) = (self.context.group_id, self.context.peer, self.myself.clone());
        tokio::spawn(async move {
            let taken = match client.relay(group_id, peer, payload).await {
                Ok(answer) => answer.get() == "null",
                Err(_) => false,
            };
            if !taken && let Some(myself) = myself.upgrade() {
                let _ = myself.send(Command::GiveUp);
            }
        });
    }

    /// Applies a signal from the peer, as the browser's `Link.apply` does.
    async fn apply(&mut self, signal: Signal) {
        if !matches!(self.state, LinkState::Connecting | LinkState::Direct) {
            return;
        }
        let block = self.context.config.block_candidates;
        let Some(p2p) = self.p2p.as_mut() else { return };
        let applied = match signal {
            Signal::Candidate(IceCandidate { candidate, .. }) => {
                if block || p2p.ignore_offer || candidate.is_empty() {
                    return;
                }
                // One we cannot use (an mDNS name, say) only fails to help.
                let Ok(candidate) = Candidate::from_sdp_string(&candidate) else { return };
                if p2p.described {
                    p2p.rtc.add_remote_candidate(candidate);
                } else {
                    p2p.early_candidates.push(candidate);
                }
                Ok(())
            }
            Signal::Description(SessionDescription { kind, sdp }) => {
                let sdp = filter(sdp.unwrap_or_default(), block);
                match kind {
                    SdpType::Offer => {
                        // Only the impolite side offers: an offer crossing ours loses.
                        p2p.ignore_offer = p2p.pending_offer.is_some();
                        if p2p.ignore_offer {
                            return;
                        }
                        match SdpOffer::from_sdp_string(&sdp) {
                            Ok(offer) => match p2p.rtc.sdp_api().accept_offer(offer) {
                                Ok(answer) => {
                                    p2p.described = true;
                                    let answer = answer.to_sdp_string();
                                    let description = self.outgoing(SdpType::Answer, answer);
                                    self.notify(RelayPayload::Signal(Signal::Description(description))).await;
                                    Ok(())
                                }
                                Err(e) => Err(e.to_string()),
                            },
                            Err(e) => Err(e.to_string()),
                        }
                    }
                    SdpType::Answer => {
                        let Some(pending) = p2p.pending_offer.take() else { return };
                        match SdpAnswer::from_sdp_string(&sdp) {
                            Ok(answer) => {
                                p2p.described = true;
                                p2p.rtc.sdp_api().accept_answer(pending, answer).map_err(|e| e.to_string())
                            }
                            Err(e) => Err(e.to_string()),
                        }
                    }
                    SdpType::Pranswer | SdpType::Rollback => return,
                }
            }
            Signal::NoWebRtc => return,
        };
        if let Err(e) = applied {
            debug!(peer = %self.context.peer, error = %e, "the peer's description does not apply");
            self.fall_back().await;
            return;
        }
        // Each candidate is one mutation of the Rtc: drain between them.
        loop {
            let Some(p2p) = self.p2p.as_mut().filter(|p2p| p2p.described) else { return };
            let Some(candidate) = p2p.early_candidates.pop() else { return };
            p2p.rtc.add_remote_candidate(candidate);
            self.drain().await;
        }
    }

    /// Our description as sent: without candidates when they are blocked.
    fn outgoing(&self, kind: SdpType, sdp: String) -> SessionDescription {
        SessionDescription { kind, sdp: Some(filter(sdp, self.context.config.block_candidates)) }
    }

    /// Sends one message by the route the link offers now.
    async fn route(&mut self, message: Outgoing) {
        match self.state {
            LinkState::Connecting => self.outbox.push(message),
            LinkState::Direct => match message {
                Outgoing::Broadcast(body, job) if body.len() > MAX_BODY_BYTES => {
                    self.send_transfer(Kind::Broadcast, 0, body, job).await;
                }
                Outgoing::Broadcast(body, _) => {
                    self.send_frame(Frame { kind: Kind::Broadcast, id: 0, body }.encode()).await
                }
                Outgoing::Unicast(body, reply, job) => {
                    self.last_frame_id = if self.last_frame_id == MAX_FRAME_ID { 1 } else { self.last_frame_id + 1 };
                    let id = self.last_frame_id;
                    // A transfer's reply timeout starts again with each chunk written.
                    let deadline = Instant::now() + self.context.config.unicast_timeout;
                    self.in_flight.retain(|_, call| !call.reply.is_closed());
                    self.in_flight.insert(id, InFlight { deadline, reply });
                    if body.len() > MAX_BODY_BYTES {
                        self.send_transfer(Kind::Request, id, body, job).await;
                    } else {
                        self.send_frame(Frame { kind: Kind::Request, id, body }.encode()).await;
                    }
                }
            },
            LinkState::Relayed => self.relay(message).await,
            LinkState::Closed => {
                if let Outgoing::Unicast(_, reply, _) = message {
                    let _ = reply.send(Err(self.gone()));
                }
            }
        }
    }

    async fn send_frame(&mut self, frame: Vec<u8>) {
        let Some(p2p) = self.p2p.as_mut() else { return };
        p2p.queue_frame(frame);
        if !self.flush_channel() {
            self.fall_back().await;
        }
    }

    /// Sends a message larger than one frame on the channel as a transfer:
    /// a start frame, then chunks, written as the channel drains (and
    /// reported to `job`). One its sender gave up meanwhile is dropped.
    async fn send_transfer(&mut self, kind: Kind, request_id: u32, body: Body, job: Option<Job>) {
        let Some(p2p) = self.p2p.as_mut() else { return };
        if job.as_ref().is_some_and(Job::is_closed) {
            return;
        }
        // Within the member's max_message_bytes, which a 32-bit size bounds
        // on the wire.
        let Ok(size) = u32::try_from(body.len()) else {
            if let Some(call) = self.in_flight.remove(&request_id).filter(|_| kind == Kind::Request) {
                let message = format!("a message on a DataChannel carries at most {} bytes", u32::MAX);
                let _ = call.reply.send(Err(local(ErrorCode::LimitExceeded, message)));
            }
            return;
        };
        self.last_transfer_id = self.last_transfer_id.wrapping_add(1);
        let id = self.last_transfer_id;
        let announcement = Announcement { kind, request_id, text: matches!(body, Body::Text(_)), size };
        let request = (kind == Kind::Request).then_some(request_id);
        p2p.transfers.push_back(Transfer { id, start: Some(announcement.encode(id)), body, sent: 0, request, job });
        if !self.flush_channel() {
            self.fall_back().await;
        }
    }

    /// Writes what waits for the channel; `false` when the channel is dead.
    fn flush_channel(&mut self) -> bool {
        let Some(p2p) = self.p2p.as_mut() else { return true };
        let alive = p2p.flush();
        let deadline = Instant::now() + self.context.config.unicast_timeout;
        for id in p2p.progressed.drain(..) {
            if let Some(call) = self.in_flight.get_mut(&id) {
                call.deadline = call.deadline.max(deadline);
            }
        }
        alive
    }

    /// Sends one message through the server.
    async fn relay(&self, message: Outgoing) {
        match message {
            // Only a direct link is handed a message larger than one relay
            // (the member relays those as transfers itself); one that left
            // 'direct' while it waited cannot send it: its job, dropped,
            // tells the member, which relays it.
            Outgoing::Broadcast(body, _) if body.len() > MAX_BODY_BYTES => {
                debug!(peer = %self.context.peer, bytes = body.len(), "the link left 'direct': a large broadcast goes back");
            }
            Outgoing::Unicast(body, reply, _) if body.len() > MAX_BODY_BYTES => {
                let message = format!("the direct link to {} closed before the message went out", self.context.peer);
                let _ = reply.send(Err(local(ErrorCode::PeerGone, message)));
            }
            Outgoing::Broadcast(body, _) => self.notify(RelayPayload::Broadcast(body)).await,
            Outgoing::Unicast(body, reply, _) => self.relay_unicast(body, reply),
        }
    }

    /// A relay notification to the peer, in order with the others.
    async fn notify(&self, payload: RelayPayload) {
        let Some(client) = self.context.client.upgrade() else { return };
        let sent = match to_raw_value(&payload) {
            Ok(payload) => client.relay_notification(self.context.group_id, self.context.peer, &payload).await,
            Err(e) => Err(e.into()),
        };
        if let Err(e) = sent {
            debug!(peer = %self.context.peer, error = %e, "could not relay");
        }
    }

    fn relay_unicast(&self, body: Body, reply: ReplyTo) {
        let Some(client) = self.context.client.upgrade() else {
            let _ = reply.send(Err(Error::Custom("the connection is closed".to_owned())));
            return;
        };
        let (group_id, peer) = (self.context.group_id, self.context.peer);
        tokio::spawn(async move {
            let result = async {
                let payload: Box<RawValue> = to_raw_value(&RelayPayload::Unicast(body))?;
                let answer = client.relay(group_id, peer, payload).await?;
                serde_json::from_str::<Body>(answer.get()).map_err(|e| {
                    Error::Call(ErrorObject::owned(
                        crate::wire::code::INTERNAL_ERROR,
                        format!("malformed unicast reply: {e}"),
                        None::<()>,
                    ))
                })
            }
            .await;
            let _ = reply.send(result);
        });
    }

    /// A message from one of the peer's channels: the control one's wait
    /// for the peer's moved frame on the main one.
    async fn channel_data(&mut self, on_control: bool, bytes: Vec<u8>) {
        let Some(p2p) = self.p2p.as_mut() else { return };
        let len = bytes.len();
        match Message::decode(bytes) {
            // A browser keeps a window of chunks unacked (its queues stay
            // short): each is acked once taken in.
            Some(Message::Chunk(id, chunk)) if !on_control => {
                if !p2p.ack(len) {
                    self.fall_back().await;
                    return;
                }
                self.message(Message::Chunk(id, chunk)).await;
            }
            // A peer that made its channel after our hello lost it: its
            // first hello is answered.
            Some(Message::Hello) if on_control && !p2p.peer_has_control => {
                p2p.peer_has_control = true;
                if !p2p.say_hello() {
                    self.fall_back().await;
                }
            }
            Some(Message::Hello) if on_control => {}
            Some(Message::Moved) if !on_control => {
                for message in p2p.held_control.take().unwrap_or_default() {
                    self.message(message).await;
                }
            }
            // Acks are not held: this side's transfers keep to the channel's
            // high-water mark instead of a window.
            Some(Message::Ack(_)) => {}
            Some(message) if on_control && let Some(held) = p2p.held_control.as_mut() => held.push(message),
            Some(message) => self.message(message).await,
            None => {}
        }
    }

    /// A message from the peer.
    async fn message(&mut self, message: Message) {
        match message {
            Message::Frame(frame) => self.frame(frame).await,
            Message::Start(id, announcement) => self.start_transfer(id, announcement).await,
            Message::Chunk(id, bytes) => self.chunk(id, bytes).await,
            Message::Abort(id) => {
                self.transfers_in.remove(&id);
            }
            Message::Hello | Message::Moved | Message::Ack(_) => {}
        }
    }

    /// The peer starts a transfer: a buffer of the announced size, or, past
    /// `max_message_bytes`, LimitExceeded for a request (and for our call,
    /// when it is the reply to one).
    async fn start_transfer(&mut self, id: u32, announcement: Announcement) {
        let size = usize::try_from(announcement.size).unwrap_or(usize::MAX);
        let max = self.context.max_message_bytes;
        if size > max {
            let message = format!("this member takes messages of at most {max} bytes, not {size}");
            match announcement.kind {
                Kind::Request => {
                    let error = ErrorObject::owned(ErrorCode::LimitExceeded.code(), message, None::<()>);
                    self.send_frame(Frame::error(announcement.request_id, &error).encode()).await;
                }
                Kind::Reply => {
                    if let Some(call) = self.in_flight.remove(&announcement.request_id) {
                        let _ = call.reply.send(Err(local(ErrorCode::LimitExceeded, message)));
                    }
                }
                Kind::Broadcast | Kind::Error => {}
            }
            return;
        }
        let now = Instant::now();
        self.hold_reply(&announcement, now);
        let (bytes, hold) = (Vec::with_capacity(size), self.context.meter.hold());
        self.transfers_in.insert(id, Incoming { announcement, size, bytes, last_chunk: now, hold });
    }

    /// A reply coming in as a transfer keeps its call waiting while chunks
    /// come (the transfer's stall timeout applies instead).
    fn hold_reply(&mut self, announcement: &Announcement, now: Instant) {
        if announcement.kind == Kind::Reply
            && let Some(call) = self.in_flight.get_mut(&announcement.request_id)
        {
            call.deadline = call.deadline.max(now + STALL_TIMEOUT);
        }
    }

    /// A chunk of transfer `id`; with its last one the message is handled
    /// as one whole frame. A chunk past the announced size drops the
    /// transfer (a request's sender times out).
    async fn chunk(&mut self, id: u32, bytes: Vec<u8>) {
        let now = Instant::now();
        let Some(incoming) = self.transfers_in.get_mut(&id) else { return };
        if incoming.bytes.len() + bytes.len() > incoming.size {
            self.transfers_in.remove(&id);
            return;
        }
        incoming.bytes.extend_from_slice(&bytes);
        incoming.hold.add(bytes.len());
        incoming.last_chunk = now;
        let (announcement, whole) = (incoming.announcement, incoming.bytes.len() == incoming.size);
        self.hold_reply(&announcement, now);
        if !whole {
            return;
        }
        let Some(Incoming { bytes, .. }) = self.transfers_in.remove(&id) else { return };
        let body = if announcement.text {
            match String::from_utf8(bytes) {
                Ok(text) => Body::Text(text),
                Err(_) => return,
            }
        } else {
            Body::Bytes(bytes)
        };
        self.frame(Frame { kind: announcement.kind, id: announcement.request_id, body }).await;
    }

    /// A whole frame from the peer.
    async fn frame(&mut self, frame: Frame) {
        let (group_id, peer) = (self.context.group_id, self.context.peer);
        match frame.kind {
            Kind::Broadcast => self.context.inbound.broadcast(group_id, peer, frame.body).await,
            Kind::Request => {
                let answer = self.context.inbound.unicast(group_id, peer, frame.body);
                let myself = self.myself.clone();
                tokio::spawn(async move {
                    let result = answer.await;
                    if let Some(myself) = myself.upgrade() {
                        let _ = myself.send(Command::Reply(frame.id, result));
                    }
                });
            }
            Kind::Reply | Kind::Error => {
                let Some(call) = self.in_flight.remove(&frame.id) else { return };
                let result = match frame.kind {
                    Kind::Reply => Ok(frame.body),
                    _ => Err(Error::Call(error_of(&frame.body))),
                };
                let _ = call.reply.send(result);
            }
        }
    }

    /// P2P failed, timed out or died: the pair talks through the server from
    /// now on. The connection is closed so that both sides agree quickly (the
    /// peer's channel closes too) and a relayed link never flips back.
    async fn fall_back(&mut self) {
        if !matches!(self.state, LinkState::Connecting | LinkState::Direct) {
            return;
        }
        self.set_state(LinkState::Relayed);
        self.shut_down();
        for message in std::mem::take(&mut self.outbox) {
            self.relay(message).await;
        }
    }

    /// Ends the link for good: the peer left, or we did.
    fn close(&mut self) {
        self.set_state(LinkState::Closed);
        self.shut_down();
        for message in std::mem::take(&mut self.outbox) {
            if let Outgoing::Unicast(_, reply, _) = message {
                let _ = reply.send(Err(self.gone()));
            }
        }
    }

    /// Drops the P2P half; what is queued or in flight on it is lost, and
    /// the unicasts waiting for a reply on it fail.
    fn shut_down(&mut self) {
        if let Some(mut p2p) = self.p2p.take() {
            for id in p2p.channel.into_iter().chain(p2p.control) {
                p2p.rtc.direct_api().close_data_channel(id);
            }
            // Sends what closing the channel produced, so the peer's closes too.
            while let Ok(Output::Transmit(transmit)) = p2p.rtc.poll_output() {
                if let Some(socket) = p2p.sockets.iter().find(|s| s.local_addr().ok() == Some(transmit.source)) {
                    let _ = socket.try_send_to(&transmit.contents, transmit.destination);
                }
            }
            p2p.rtc.disconnect();
        }
        self.transfers_in.clear();
        for (_, call) in std::mem::take(&mut self.in_flight) {
            let message = format!("the link to {} closed before it answered", self.context.peer);
            let _ = call.reply.send(Err(local(ErrorCode::PeerGone, message)));
        }
    }

    fn gone(&self) -> Error {
        local(ErrorCode::PeerGone, format!("{} left", self.context.peer))
    }

    fn set_state(&mut self, state: LinkState) {
        if self.state == state || self.state == LinkState::Closed {
            return;
        }
        self.state = state;
        self.state_tx.send_replace(state);
        self.context.inbound.link_state(self.context.group_id, self.context.peer, state);
    }
}

impl P2p {
    /// One UDP socket per host address, each a host candidate.
    async fn bind(config: &RtcConfig) -> std::io::Result<Self> {
        let mut rtc = Str0mConfig::new().set_sctp_max_buffered_amount(SCTP_BUFFER_BYTES).build(Instant::now());
        // Opens once the association is up, whichever side offers.
        let control = ChannelConfig {
            label: CONTROL_LABEL.to_owned(),
            negotiated: Some(CONTROL_STREAM_ID),
            ..ChannelConfig::default()
        };
        rtc.direct_api().create_data_channel(control);
        let (tx, packets) = mpsc::channel(PACKET_QUEUE);
        let mut sockets = Vec::new();
        let mut readers = Vec::new();
        for ip in config.host_addresses() {
            let socket = Arc::new(UdpSocket::bind((ip, 0)).await?);
            let local = socket.local_addr()?;
            let Ok(candidate) = Candidate::host(local, "udp") else { continue };
            rtc.add_local_candidate(candidate);
            readers.push(tokio::spawn(read(socket.clone(), local, tx.clone())));
            sockets.push(socket);
        }
        if sockets.is_empty() {
            return Err(std::io::Error::new(std::io::ErrorKind::AddrNotAvailable, "no host address"));
        }
        Ok(Self {
            rtc,
            sockets,
            packets,
            readers,
            channel: None,
            control: None,
            peer_has_control: false,
            moved: false,
            held_control: Some(Vec::new()),
            pending_offer: None,
            described: false,
            ignore_offer: false,
            early_candidates: Vec::new(),
            backlog: VecDeque::new(),
            control_backlog: VecDeque::new(),
            transfers: VecDeque::new(),
            progressed: Vec::new(),
        })
    }

    /// Queues a whole frame: on the control channel once the peer has one
    /// (after a moved frame on the main channel, behind the whole frames
    /// queued there), on the main channel before.
    fn queue_frame(&mut self, frame: Vec<u8>) {
        if !self.moved && self.peer_has_control && self.control.is_some() {
            self.backlog.push_back(MOVED_FRAME.to_vec());
            self.moved = true;
        }
        if self.moved { self.control_backlog.push_back(frame) } else { self.backlog.push_back(frame) }
    }

    /// Tells the peer it may send whole frames on the control channel;
    /// `false` when the channel is dead.
    fn say_hello(&mut self) -> bool {
        let Some(id) = self.control else { return true };
        self.rtc.channel(id).is_some_and(|mut control| control.write(true, &HELLO_FRAME).is_ok())
    }

    /// Acks a chunk frame of `len` bytes, when the control channel is open;
    /// `false` when it is dead.
    fn ack(&mut self, len: usize) -> bool {
        let Some(id) = self.control else { return true };
        self.rtc.channel(id).is_some_and(|mut control| control.write(true, &ack_frame(len)).is_ok())
    }

    /// Writes what waits for either channel; `false` when one is dead.
    fn flush(&mut self) -> bool {
        if let Some(id) = self.control {
            let Some(mut control) = self.rtc.channel(id) else { return false };
            if write_queued(&mut control, &mut self.control_backlog).is_none() {
                return false;
            }
        }
        self.flush_main()
    }

    /// Writes backlogged frames while the main channel is below its
    /// high-water mark, then transfers' chunks while it is below theirs
    /// (whole frames first: a small message never waits behind a whole
    /// transfer); `false` when the channel is dead.
    fn flush_main(&mut self) -> bool {
        self.drop_abandoned();
        let Some(id) = self.channel else { return true };
        let Some(mut channel) = self.rtc.channel(id) else { return false };
        match write_queued(&mut channel, &mut self.backlog) {
            None => return false,
            Some(false) => return true,
            Some(true) => {}
        }
        while let Some(transfer) = self.transfers.front_mut() {
            if channel.buffered_amount() >= TRANSFER_HIGH_WATER_BYTES {
                return true;
            }
            match channel.write(true, &transfer.next_frame()) {
                Ok(true) => {
                    let done = transfer.advance();
                    if let Some(request) = transfer.request {
                        self.progressed.push(request);
                    }
                    if done {
                        self.transfers.pop_front();
                    }
                }
                Ok(false) => return true,
                Err(_) => return false,
            }
        }
        true
    }

    /// Drops the transfers whose senders gave them up; the peer is told to
    /// drop what it holds of each that started (on the main channel, behind
    /// its chunks). While a transfer is under way the channel keeps
    /// draining, so a flush, and this, comes soon after the sender left.
    fn drop_abandoned(&mut self) {
        let backlog = &mut self.backlog;
        self.transfers.retain(|transfer| {
            if !transfer.abandoned() {
                return true;
            }
            if transfer.start.is_none() {
                backlog.push_back(abort_frame(transfer.id).to_vec());
            }
            false
        });
    }
}

/// Writes `queue`'s frames while `channel` is below its high-water mark:
/// `Some(true)` when all are written, `Some(false)` when some wait, `None`
/// when the channel is dead.
fn write_queued(channel: &mut Channel<'_>, queue: &mut VecDeque<Vec<u8>>) -> Option<bool> {
    while let Some(next) = queue.front() {
        if channel.buffered_amount() + next.len() > CHANNEL_HIGH_WATER_BYTES {
            return Some(false);
        }
        match channel.write(true, next) {
            Ok(true) => {
                queue.pop_front();
            }
            Ok(false) => return Some(false),
            Err(_) => return None,
        }
    }
    Some(true)
}

/// Feeds one socket's datagrams to the link task.
async fn read(socket: Arc<UdpSocket>, local: SocketAddr, packets: mpsc::Sender<Packet>) {
    let mut buf = vec![0; DATAGRAM_BYTES];
    loop {
        let Ok((len, source)) = socket.recv_from(&mut buf).await else { return };
        let packet = Packet { source, destination: local, data: buf[..len].to_vec() };
        if packets.send(packet).await.is_err() {
            return;
        }
    }
}

async fn next_packet(p2p: &mut Option<P2p>) -> Option<Packet> {
    match p2p {
        Some(p2p) => p2p.packets.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// With candidates blocked (the test hook), descriptions carry none either.
fn filter(sdp: String, block: bool) -> String {
    if !block {
        return sdp;
    }
    sdp.split("\r\n").filter(|line| !line.starts_with("a=candidate:")).collect::<Vec<_>>().join("\r\n")
}

/// An error this side detects, with the code a browser would give it.
pub(crate) fn local(code: ErrorCode, message: String) -> Error {
    Error::Call(ErrorObject::owned(code.code(), message, None::<()>))
}
