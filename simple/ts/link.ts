/**
 * A link to one peer: what a group routes by (`Link`), and the browser's
 * link, `RtcLink`: one RTCPeerConnection, negotiated with the "perfect
 * negotiation" pattern, with two DataChannels: the main one for transfers
 * (and everything, with a peer that has no other), and a control one for
 * whole frames, so that small messages do not queue behind a transfer's
 * chunks.
 */
import type { LinkState, UserId } from '../../interfaces/api';
import { FrameKind, decodeAck, encodeAck, encodeLinkFrame, isChunkFrame, isLinkFrame } from './payload';

/** A signaling message for the peer, sent through the server's `relay`. */
export type Signal = { readonly description: RTCSessionDescriptionInit } | { readonly candidate: RTCIceCandidateInit };

export interface LinkOptions {
  /**
   * On an offer collision the polite peer rolls its own offer back and the
   * impolite one ignores the incoming offer. One of every pair is polite.
   */
  readonly polite: boolean;
  readonly rtcConfig: RTCConfiguration;
  /** How long the link may stay 'connecting' before it is relayed. */
  readonly connectTimeoutMs: number;
  /** Test hook: exchange no ICE candidates, so P2P cannot connect. */
  readonly blockCandidates: boolean;
}

/** What a link tells its group. */
export interface LinkEvents {
  signal(signal: Signal): void;
  statechange(state: LinkState): void;
  message(data: unknown): void;
}

/** What a group needs of a link to one peer. */
export interface Link {
  /** 'connecting' until P2P works ('direct') or gives up ('relayed'); 'closed' once closed. */
  readonly state: LinkState;
  /**
   * Sends (or queues, while the channel drains) one message on the channel.
   * False when the link is not direct, when the message is larger than the
   * channel takes (the caller relays that one message), or when the channel
   * turns out to be dead (the link then falls back to relay).
   */
  send(message: Uint8Array<ArrayBuffer>): boolean;
  /**
   * Sends the frames of `source` as the channel has room for them, taking
   * turns with the other sources and after any `send` waiting (so a large
   * transfer never holds back small messages for long). False when the link
   * is not direct. When the link stops being direct before the source is
   * done, the source is dropped and told (`interrupted`).
   */
  stream(source: FrameSource): boolean;
  /** Applies a signal from the peer, after every signal that came before it. */
  receive(signal: Signal): void;
  /**
   * The peer said it will not negotiate (it has no WebRTC): relay from now
   * on rather than wait for the connect timeout.
   */
  giveUp(): void;
  /** Ends the link for good: the peer left, or we did. */
  close(): void;
}

/** Frames made on demand: the chunks of a transfer exist only once the channel has room. */
export interface FrameSource {
  /**
   * The next frame, to be sent at once (it may be overwritten by the next
   * call: `RTCDataChannel.send` copies); undefined once the source is done
   * (it is then dropped).
   */
  next(): Uint8Array<ArrayBuffer> | undefined;
  /** The link stopped being direct before the source was done. */
  interrupted(): void;
}

/** Opens a link; `RtcLink` in the browser, a stand-in in the unit tests. */
export type LinkFactory = (peer: UserId, options: LinkOptions, events: LinkEvents) => Link;

/** The label of a link's main DataChannel, opened in band by the impolite side. */
const CHANNEL_LABEL = 'webrtc-p2p';
/**
 * The control channel: negotiated out of band (both sides create it with
 * this stream id, so it costs no round trip), for whole frames. An ordered
 * channel makes a small message wait behind every chunk queued before it;
 * SCTP takes streams in turn, so on its own stream it waits behind one
 * chunk at most. Stream 2: the main channel is 0 or 1 (by DTLS role).
 */
const CONTROL_LABEL = 'webrtc-p2p-control';
const CONTROL_STREAM_ID = 2;
/**
 * Past this many bytes queued in the channel, messages wait in the link
 * (Chromium's `send()` throws, and closes the channel, once 16 MiB are
 * queued) until the channel drains below the low-water mark. Small, so that
 * a small message queued behind a transfer's chunks waits ~10 ms, not ~100.
 */
const CHANNEL_HIGH_WATER_BYTES = 256 * 1024;
const CHANNEL_LOW_WATER_BYTES = 64 * 1024;

/**
 * Chunk bytes a link keeps unacknowledged by a peer that acks (one with a
 * control channel): bounds every queue between this page and the peer's
 * (the channel, SCTP's congestion window, the sockets, the peer page's
 * event queue), so that a small message sent meanwhile waits behind at
 * most this much, and no burst overflows a buffer on the way (a lost
 * packet stalls the association for a retransmission timeout, ~1 s). Sized
 * to what the peer took in the last `WINDOW_PERIOD_MS` times
 * `WINDOW_DELAY_MS`: about that long of queue, whatever the pace of the
 * machine.
 */
const WINDOW_MIN_BYTES = 128 * 1024;
const WINDOW_MAX_BYTES = 4 * 1024 * 1024;
const WINDOW_DELAY_MS = 40;
const WINDOW_PERIOD_MS = 100;

/** What a sender keeps in flight to a peer that acks its chunks. */
export class ChunkWindow {
  private unacked = 0;
  private size = WINDOW_MIN_BYTES;
  private acked = 0;
  private periodStart: number;

  constructor(private readonly now: () => number) {
    this.periodStart = now();
  }

  /** Whether another chunk may go. */
  get open(): boolean {
    return this.unacked < this.size;
  }

  sent(bytes: number): void {
    this.unacked += bytes;
  }

  /** The peer acknowledged `bytes`; once a period, the window follows the pace they came at. */
  ack(bytes: number): void {
    this.unacked = Math.max(0, this.unacked - bytes);
    this.acked += bytes;
    const elapsed = this.now() - this.periodStart;
    if (elapsed < WINDOW_PERIOD_MS) return;
    const target = (this.acked / elapsed) * WINDOW_DELAY_MS;
    this.size = Math.min(WINDOW_MAX_BYTES, Math.max(WINDOW_MIN_BYTES, (this.size + target) / 2));
    this.acked = 0;
    this.periodStart = this.now();
  }
}

export class RtcLink implements Link {
  /** 'connecting' until the channel opens ('direct') or P2P gives up ('relayed'). */
  state: LinkState = 'connecting';
  private readonly pc: RTCPeerConnection;
  private channel: RTCDataChannel | undefined;
  /** The control channel, made with the main one. */
  private control: RTCDataChannel | undefined;
  /** The peer said hello on the control channel: it takes whole frames there. */
  private peerHasControl = false;
  /** Our whole frames go on the control channel (a Moved frame on the main one said so). */
  private moved = false;
  /**
   * The peer's frames on the control channel, held until its Moved frame
   * comes on the main one: whole frames it sent on the main channel before
   * come first. Undefined once it came.
   */
  private heldControl: unknown[] | undefined = [];
  /** Our chunks in flight, once the peer said hello (and so acks them). */
  private readonly window = new ChunkWindow(() => performance.now());
  /** True while this side creates and sets an offer: an incoming offer then collides. */
  private makingOffer = false;
  /** True after the impolite side dropped a colliding offer: its candidates are dropped too. */
  private ignoreOffer = false;
  /** Remote candidates that came before the remote description they belong to. */
  private readonly pendingCandidates: RTCIceCandidateInit[] = [];
  /** Messages waiting for the main channel to drain, in send order. */
  private readonly backlog: Uint8Array<ArrayBuffer>[] = [];
  /** Messages waiting for the control channel to drain, in send order. */
  private readonly controlBacklog: Uint8Array<ArrayBuffer>[] = [];
  /** Transfers sending on the channel, in turn: the one at the front goes next. */
  private readonly sources: FrameSource[] = [];
  /** Incoming signals are applied one after the other, in arrival order. */
  private signals: Promise<void> = Promise.resolve();
  private readonly connectTimer: ReturnType<typeof setTimeout>;

  constructor(
    private readonly options: LinkOptions,
    private readonly events: LinkEvents,
  ) {
    this.pc = new RTCPeerConnection(options.rtcConfig);
    this.pc.onnegotiationneeded = () => void this.offer();
    this.pc.onicecandidate = ({ candidate }) => {
      if (candidate !== null && !options.blockCandidates) this.events.signal({ candidate: candidate.toJSON() });
    };
    this.pc.onconnectionstatechange = () => {
      if (this.pc.connectionState === 'failed') this.fallBack();
    };
    this.pc.ondatachannel = ({ channel }) => this.adopt(channel);
    // Only the impolite side opens the channel, so a pair gets exactly one
    // and, in the common case, exactly one offer: no collision to resolve.
    if (!options.polite) {
      this.adopt(this.pc.createDataChannel(CHANNEL_LABEL));
      // The offer starts now rather than at 'negotiationneeded', a task
      // later (tens of ms with a busy page). With it in the connection's
      // operations chain that event is not fired: the offer has the channel.
      void this.offer();
    }
    this.connectTimer = setTimeout(() => {
      if (this.state === 'connecting') this.fallBack();
    }, options.connectTimeoutMs);
  }

  send(message: Uint8Array<ArrayBuffer>): boolean {
    const channel = this.channel;
    if (this.state !== 'direct' || channel === undefined) return false;
    if (message.byteLength > (this.pc.sctp?.maxMessageSize ?? Infinity)) return false;
    if (channel.readyState !== 'open') {
      this.fallBack();
      return false;
    }
    const control = this.control;
    if (!this.moved && this.peerHasControl && control?.readyState === 'open') {
      // After the whole frames already queued on the main channel.
      this.backlog.push(encodeLinkFrame(FrameKind.Moved));
      this.moved = true;
      this.drain(channel);
    }
    if (this.moved && control !== undefined) {
      this.controlBacklog.push(message);
      this.flush(control, this.controlBacklog);
    } else {
      this.backlog.push(message);
      this.drain(channel);
    }
    return this.state === 'direct';
  }

  stream(source: FrameSource): boolean {
    const channel = this.channel;
    if (this.state !== 'direct' || channel === undefined) return false;
    this.sources.push(source);
    this.drain(channel);
    return true;
  }

  receive(signal: Signal): void {
    this.signals = this.signals.then(() => this.apply(signal)).catch(() => this.fallBack());
  }

  giveUp(): void {
    this.fallBack();
  }

  close(): void {
    this.setState('closed');
    this.shutDown();
  }

  private async offer(): Promise<void> {
    try {
      this.makingOffer = true;
      await this.pc.setLocalDescription();
      this.sendDescription();
    } catch {
      this.fallBack();
    } finally {
      this.makingOffer = false;
    }
  }

  private async apply(signal: Signal): Promise<void> {
    if (this.state === 'closed' || this.state === 'relayed') return;
    if ('candidate' in signal) {
      if (this.options.blockCandidates || this.ignoreOffer) return;
      if (this.pc.remoteDescription === null) this.pendingCandidates.push(signal.candidate);
      else await this.addCandidate(signal.candidate);
      return;
    }
    const description = this.filter(signal.description);
    const collision = description.type === 'offer' && (this.makingOffer || this.pc.signalingState !== 'stable');
    this.ignoreOffer = !this.options.polite && collision;
    if (this.ignoreOffer) return;
    // The polite side drops its own offer and takes the peer's, both queued
    // at once so that no new local offer (negotiationneeded fires again once
    // stable) slips in between.
    if (collision) {
      await Promise.all([this.pc.setLocalDescription({ type: 'rollback' }), this.pc.setRemoteDescription(description)]);
    } else {
      await this.pc.setRemoteDescription(description);
    }
    for (const candidate of this.pendingCandidates.splice(0)) await this.addCandidate(candidate);
    if (description.type === 'offer') {
      await this.pc.setLocalDescription();
      this.sendDescription();
    }
  }

  /**
   * A candidate that does not apply (say, one of an offer we ignored) only
   * fails to help: it is no reason to give the link up, the timeout is.
   */
  private async addCandidate(candidate: RTCIceCandidateInit): Promise<void> {
    await this.pc.addIceCandidate(candidate).catch(() => undefined);
  }

  private sendDescription(): void {
    const description = this.pc.localDescription;
    if (description === null) return;
    this.events.signal({ description: this.filter({ type: description.type, sdp: description.sdp }) });
  }

  /** With the test hook on, descriptions carry no candidates either. */
  private filter(description: RTCSessionDescriptionInit): RTCSessionDescriptionInit {
    if (!this.options.blockCandidates || description.sdp === undefined) return description;
    const sdp = description.sdp
      .split('\r\n')
      .filter((line) => !line.startsWith('a=candidate:'))
      .join('\r\n');
    return { type: description.type, sdp };
  }

  private adopt(channel: RTCDataChannel): void {
    if (this.channel !== undefined) {
      channel.close();
      return;
    }
    this.channel = channel;
    channel.binaryType = 'arraybuffer';
    channel.bufferedAmountLowThreshold = CHANNEL_LOW_WATER_BYTES;
    channel.onbufferedamountlow = () => this.drain(channel);
    channel.onopen = () => this.setState('direct');
    channel.onclose = () => this.fallBack();
    channel.onmessage = ({ data }) => this.onMainMessage(data);
    if (channel.readyState === 'open') this.setState('direct');
    // The polite side makes it only now: before the offer is applied, a
    // first channel would make it offer too.
    this.openControl();
  }

  private openControl(): void {
    if (this.control !== undefined) return;
    const control = this.pc.createDataChannel(CONTROL_LABEL, { negotiated: true, id: CONTROL_STREAM_ID });
    this.control = control;
    control.binaryType = 'arraybuffer';
    control.bufferedAmountLowThreshold = CHANNEL_LOW_WATER_BYTES;
    control.onbufferedamountlow = () => this.flush(control, this.controlBacklog);
    control.onopen = () => this.sendHello(control);
    // A control channel the peer closes while ours go there takes the
    // link down as the main one would; before, it is only not used.
    control.onclose = () => {
      if (this.moved) this.fallBack();
      else this.peerHasControl = false;
    };
    control.onmessage = ({ data }) => this.onControlMessage(control, data);
    if (control.readyState === 'open') this.sendHello(control);
  }

  /**
   * Tells the peer it may send whole frames on the control channel. A peer
   * that made its own a moment later dropped what came before: the first
   * hello it sends back is answered once more.
   */
  private sendHello(control: RTCDataChannel): void {
    this.sendOnControl(encodeLinkFrame(FrameKind.Hello), control);
  }

  /**
   * A link frame of ours, ahead of any whole frame waiting for room. Not
   * before the channel is open: Chromium may hand us the peer's first
   * frames on a negotiated channel before its 'open' event, and `send()`
   * then throws, which took the whole link down. Our hello goes at 'open'.
   */
  private sendOnControl(frame: Uint8Array<ArrayBuffer>, control = this.control): void {
    if (control?.readyState !== 'open') return;
    try {
      control.send(frame);
    } catch {
      this.fallBack();
    }
  }

  private onMainMessage(data: unknown): void {
    if (!isLinkFrame(data, FrameKind.Moved)) {
      this.events.message(data);
      // Acked once handled: the sender's window then covers this page's queue too.
      if (data instanceof ArrayBuffer && isChunkFrame(data) && this.control?.readyState === 'open') {
        this.sendOnControl(encodeAck(data.byteLength));
      }
      return;
    }
    const held = this.heldControl ?? [];
    this.heldControl = undefined;
    for (const message of held) this.events.message(message);
  }

  private onControlMessage(control: RTCDataChannel, data: unknown): void {
    const acked = decodeAck(data);
    if (acked !== undefined) {
      this.window.ack(acked);
      if (this.channel !== undefined) this.drain(this.channel);
      return;
    }
    if (isLinkFrame(data, FrameKind.Hello)) {
      if (this.peerHasControl) return;
      this.peerHasControl = true;
      this.sendHello(control);
      return;
    }
    if (this.heldControl !== undefined) this.heldControl.push(data);
    else this.events.message(data);
  }

  /** Sends what waits in `queue` while `channel` has room; false when it is full. */
  private flush(channel: RTCDataChannel, queue: Uint8Array<ArrayBuffer>[]): boolean {
    try {
      for (let next = queue[0]; next !== undefined; next = queue[0]) {
        // At or below the low-water mark a message always goes: no
        // 'bufferedamountlow' would come to send it later.
        const full = channel.bufferedAmount + next.byteLength > CHANNEL_HIGH_WATER_BYTES;
        if (full && channel.bufferedAmount > CHANNEL_LOW_WATER_BYTES) return false;
        channel.send(next);
        queue.shift();
      }
      return true;
    } catch {
      this.fallBack();
      return false;
    }
  }

  private drain(channel: RTCDataChannel): void {
    if (!this.flush(channel, this.backlog)) return;
    try {
      // A peer without a control channel acks nothing: the channel's own
      // high-water mark bounds what waits.
      while (channel.bufferedAmount < CHANNEL_HIGH_WATER_BYTES && (!this.peerHasControl || this.window.open)) {
        const frame = this.nextChunk();
        if (frame === undefined) return;
        channel.send(frame);
        if (isChunkFrame(frame)) this.window.sent(frame.byteLength);
      }
    } catch {
      this.fallBack();
    }
  }

  /** A frame of the source whose turn it is; that source goes to the back. */
  private nextChunk(): Uint8Array<ArrayBuffer> | undefined {
    for (let source = this.sources.shift(); source !== undefined; source = this.sources.shift()) {
      const frame = source.next();
      if (frame === undefined) continue;
      this.sources.push(source);
      return frame;
    }
    return undefined;
  }

  /**
   * P2P failed, timed out or died: the pair talks through the server from
   * now on. The connection is closed so that both sides agree quickly (the
   * peer's channel closes too) and a relayed link never flips back.
   */
  private fallBack(): void {
    if (this.state === 'closed' || this.state === 'relayed') return;
    this.setState('relayed');
    this.shutDown();
  }

  /** What is still queued is lost, like what was in flight on the channel. */
  private shutDown(): void {
    clearTimeout(this.connectTimer);
    this.backlog.length = 0;
    this.controlBacklog.length = 0;
    this.heldControl = undefined;
    for (const source of this.sources.splice(0)) source.interrupted();
    if (this.channel !== undefined) this.channel.onclose = null;
    if (this.control !== undefined) this.control.onclose = null;
    this.pc.close();
  }

  private setState(state: LinkState): void {
    if (this.state === state || this.state === 'closed') return;
    if (state === 'direct') clearTimeout(this.connectTimer);
    this.state = state;
    this.events.statechange(state);
  }
}
