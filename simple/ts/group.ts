/**
 * One group as this member sees it: the member list and its owner, one link
 * per peer the capability allows (topology), and the routing of broadcasts
 * and unicasts over those links or, for a relayed link, through the server.
 * Links come from the host's `openLink`, so all of this runs without a
 * browser in the unit tests.
 */
import type { Data, GroupId, IGroup, LinkState, Received, SendOptions, UserId } from '../../interfaces/api';
import { PendingCalls, type Call } from './calls';
import { mayBroadcast, mayLink, mayUnicast, type Rules } from './capability';
import { ErrorCode, RpcError, toRpcError } from './errors';
import type { Link, LinkFactory, Signal } from './link';
import { Outboxes, type Job, type Outgoing, finished, jobOf, progressOver, silentJob } from './outbox';
import {
  type Body,
  type Frame,
  FrameKind,
  type Message,
  type ParsedChunk,
  decodeChannelMessage,
  encodeFrame,
  errorBody,
  errorFromBody,
  offerTaken,
  parseRelayed,
  parseUnicastAnswer,
  toMessage,
  toRelayBody,
} from './payload';
import { ChannelTransfer, RelayTransfer } from './streams';
import { ChunkedReplies, Transfers, type Whole } from './incoming';
import { type Announcement, MessageKind, TransferIds } from './transfer';

/** What a group needs from its service: this member, the server, links, and the knobs. */
export interface GroupHost {
  readonly self: UserId;
  readonly rtcConfig: RTCConfiguration;
  readonly connectTimeoutMs: number;
  readonly unicastTimeoutMs: number;
  /** The largest message sent or taken, in bytes. */
  readonly maxMessageBytes: number;
  readonly forceRelay: (peer: UserId) => boolean;
  /** Opens a link to one peer (an RTCPeerConnection in the browser). */
  readonly openLink: LinkFactory;
  call(method: string, params: unknown[] | Record<string, unknown>): Promise<unknown>;
  notify(method: string, params: unknown[]): void;
  /** Why a relayed message of `bytes` cannot be taken now (reconnecting, too much waits), if it cannot. */
  roomFor(bytes: number): RpcError | undefined;
  /** The group is over for this member (left, or the session closed). */
  forget(group: Group): void;
}

export class Group implements IGroup {
  onmessage: ((from: UserId, data: Received) => void) | null = null;
  onunicast: ((from: UserId, data: Received) => Data | Promise<Data>) | null = null;
  onmemberjoin: ((member: UserId) => void) | null = null;
  onmemberleave: ((member: UserId) => void) | null = null;
  onlinkstatechange: ((member: UserId, state: LinkState) => void) | null = null;

  private rules: Rules;
  /** Join order, as the server's `get_members`: the owner first. */
  private memberList: UserId[];
  /** The members' join-token `info`, for those that have one. */
  private readonly info = new Map<UserId, unknown>();
  private readonly links = new Map<UserId, Link>();
  /** Per peer, what waits for its link to leave 'connecting'. */
  private readonly outboxes = new Outboxes();
  /** Unicasts sent on a DataChannel, waiting for their reply frame. */
  private readonly calls: PendingCalls;
  /** Transfers coming in on a DataChannel and through the server. */
  private readonly channelIn: Transfers;
  private readonly relayIn: Transfers;
  /** Relayed transfers on their way out, per peer, to stop when it leaves. */
  private readonly relayOut = new Map<UserId, Set<RelayTransfer>>();
  /** Chunked replies to relayed unicasts. */
  private readonly replies: ChunkedReplies;
  private readonly channelIds = new TransferIds();
  private readonly relayIds = new TransferIds();
  /** Members that left: a late relay from one of them must not bring it back. */
  private readonly departed = new Set<UserId>();
  /**
   * Joins and leaves heard since the `get_members` in flight was sent, to
   * replay over its answer (`undefined`: none in flight). On one server they
   * are already in the answer; across nodes, one that happened after the
   * answer was read can arrive before it, and must not be undone by it.
   */
  private sinceAsked: { member: UserId; joined: boolean }[] | undefined;
  /** Set once this member's view of the group is over: what its calls reject with from then on. */
  private ended: RpcError | undefined;
  /** Releases `handedOver`. */
  private release: () => void = () => undefined;
  /**
   * Resolves one task after the caller of `createGroup`/`joinGroup` got this
   * group (or it ended): relays wait for it, so that handlers set right
   * after that `await` see a broadcast or unicast that came during the join
   * (a member without WebRTC greets a newcomer at once).
   */
  private readonly handedOver = new Promise<void>((resolve) => {
    this.release = resolve;
  });

  constructor(
    private readonly groupId: GroupId,
    owner: UserId,
    capability: number,
    members: UserId[],
    private readonly host: GroupHost,
  ) {
    this.calls = new PendingCalls(host.unicastTimeoutMs);
    this.channelIn = new Transfers(host.maxMessageBytes);
    this.relayIn = new Transfers(host.maxMessageBytes);
    this.replies = new ChunkedReplies((peer, id) => this.relayIn.has(peer, id));
    this.rules = { owner, capability };
    this.memberList = [...members];
    this.reconcile();
  }

  id(): GroupId {
    return this.groupId;
  }

  capability(): number {
    return this.rules.capability;
  }

  owner(): UserId {
    return this.rules.owner;
  }

  members(): UserId[] {
    return [...this.memberList];
  }

  memberInfo(member: UserId): unknown {
    return this.info.get(member);
  }

  linkState(member: UserId): LinkState {
    return this.links.get(member)?.state ?? 'closed';
  }

  async broadcast(data: Data, options: SendOptions = {}): Promise<void> {
    this.assertMember();
    const self = this.host.self;
    const others = this.memberList.filter((member) => member !== self);
    const targets = others.filter((member) => mayBroadcast(this.rules, self, member));
    if (targets.length === 0 && others.length > 0) {
      throw new RpcError(ErrorCode.PermissionDenied, 'this capability lets this member broadcast to no one');
    }
    const { signal, onprogress } = options;
    signal?.throwIfAborted();
    const message = toMessage(data, this.host.maxMessageBytes);
    const progress = progressOver(message.size, targets.length, onprogress);
    const sent = targets.map(
      (peer) =>
        new Promise<void>((resolve, reject) => {
          const job = jobOf(signal, (bytes) => progress(peer, bytes), (error) => (error ? reject(error) : resolve()));
          this.dispatch(peer, { kind: 'broadcast', message, job });
        }),
    );
    const aborted = abortedPromise(signal);
    try {
      const results = await Promise.race([Promise.allSettled(sent), aborted.promise]);
      const failed = results.find((result) => result.status === 'rejected');
      if (failed !== undefined) throw failed.reason;
      if (targets.length === 0) onprogress?.(0, 0);
    } finally {
      aborted.dispose();
    }
  }

  unicast(target: UserId, data: Data, options: SendOptions = {}): Promise<Received> {
    return new Promise((resolve, reject) => {
      this.assertMember();
      if (!this.memberList.includes(target) || target === this.host.self) {
        throw new RpcError(ErrorCode.UserNotFound, `${target} is not another member of this group`);
      }
      if (!mayUnicast(this.rules, this.host.self, target)) {
        throw new RpcError(ErrorCode.PermissionDenied, `this capability forbids unicasts to ${target}`);
      }
      const { signal, onprogress } = options;
      signal?.throwIfAborted();
      const message = toMessage(data, this.host.maxMessageBytes);
      // Stops the sending when the caller aborts, and when the call is
      // over early (the target refused the message at its start).
      const controller = new AbortController();
      const onAbort = () => {
        controller.abort(signal?.reason);
        reject(signal?.reason);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      const settled = () => {
        signal?.removeEventListener('abort', onAbort);
        controller.abort();
      };
      const call: Call = {
        peer: target,
        resolve: (reply) => {
          settled();
          resolve(reply);
        },
        reject: (error) => {
          settled();
          reject(error);
        },
      };
      const progress = progressOver(message.size, 1, onprogress);
      const job = jobOf(controller.signal, (bytes) => progress(target, bytes), (error) => error && call.reject(error));
      this.dispatch(target, { kind: 'unicast', message, job, call });
    });
  }

  async leave(): Promise<void> {
    this.assertMember();
    try {
      await this.host.call('leave', [this.groupId]);
    } finally {
      this.end(new RpcError(ErrorCode.NotAMember, `this member left group ${this.groupId}`));
    }
  }

  /** The service is about to resolve `createGroup`/`joinGroup` with this group. */
  handOver(): void {
    setTimeout(this.release, 0);
  }

  /** A `get_members` was just sent: `setMembers` will take its answer. */
  askingMembers(): void {
    this.sinceAsked = [];
  }

  /**
   * The member list from `get_members`: it supersedes what came before it was
   * asked; what was heard since is replayed over it, in order (a join already
   * in it, or a leave of someone not in it, changes nothing).
   */
  setMembers(members: UserId[], info: ReadonlyMap<UserId, unknown> = new Map()): void {
    const since = this.sinceAsked ?? [];
    this.sinceAsked = undefined;
    this.memberList = [...members];
    for (const [member, value] of info) this.info.set(member, value);
    for (const member of members) this.departed.delete(member);
    for (const { member, joined } of since) {
      if (joined && !this.memberList.includes(member)) this.memberList.push(member);
      if (!joined) {
        this.memberList = this.memberList.filter((m) => m !== member);
        this.departed.add(member);
      }
    }
    this.reconcile();
  }

  /** Members' `info` learnt after the fact; the member list stays as it is. */
  learnInfo(info: ReadonlyMap<UserId, unknown>): void {
    for (const [member, value] of info) if (this.memberList.includes(member)) this.info.set(member, value);
  }

  memberJoined(member: UserId, info?: unknown): void {
    this.sinceAsked?.push({ member, joined: true });
    this.departed.delete(member);
    if (info !== undefined && info !== null) this.info.set(member, info);
    if (this.ended !== undefined || this.memberList.includes(member)) return;
    this.memberList.push(member);
    this.reconcile();
    this.onmemberjoin?.(member);
  }

  memberLeft(member: UserId): void {
    this.sinceAsked?.push({ member, joined: false });
    this.departed.add(member);
    if (this.ended !== undefined || !this.memberList.includes(member)) return;
    this.memberList = this.memberList.filter((m) => m !== member);
    this.info.delete(member);
    // The earliest-joined remaining member becomes owner, as on the server.
    const [first] = this.memberList;
    if (member === this.rules.owner && first !== undefined) this.rules = { ...this.rules, owner: first };
    this.closeLink(member);
    this.relayIn.dropPeer(member);
    this.reconcile();
    this.onmemberleave?.(member);
  }

  /**
   * A `relay` from `from` arrived: a signal, a relayed broadcast, a relayed
   * unicast to answer, or part of a transfer. Resolves with the answer.
   */
  async onRelay(from: UserId, data: unknown): Promise<unknown> {
    await this.handedOver;
    const message = parseRelayed(data);
    if (message === undefined) throw new RpcError(ErrorCode.InvalidParams, 'not a webrtc-p2p payload');
    // The server only relays between members: a sender we have not heard of
    // joined a moment ago (its offer can overtake our `get_members`).
    if (!this.departed.has(from)) this.memberJoined(from);
    switch (message.kind) {
      case 'description':
        this.links.get(from)?.receive({ description: message.description });
        return undefined;
      case 'candidate':
        this.links.get(from)?.receive({ candidate: message.candidate });
        return undefined;
      case 'nowebrtc':
        this.links.get(from)?.giveUp();
        return undefined;
      case 'broadcast':
        this.deliver(from, message.body);
        return undefined;
      case 'unicast':
        return this.relayedAnswer(from, await this.answer(from, message.body));
      case 'chunk':
        return this.relayedChunk(from, message.chunk);
      case 'abort':
        this.relayIn.drop(from, message.id);
        return undefined;
    }
  }

  /** Ends this member's view of the group without telling the server (left, or session gone). */
  end(reason: RpcError): void {
    if (this.ended !== undefined) return;
    this.ended = reason;
    this.release();
    for (const member of [...this.links.keys()]) this.closeLink(member);
    this.relayIn.clear();
    this.replies.clear(reason);
    this.host.forget(this);
  }

  /** Opens the links the rules now call for and closes the ones they no longer allow. */
  private reconcile(): void {
    if (this.ended !== undefined) return;
    const self = this.host.self;
    for (const member of this.memberList) {
      if (mayLink(this.rules, self, member) && !this.links.has(member)) this.openLink(member);
    }
    for (const member of [...this.links.keys()]) {
      if (!this.memberList.includes(member) || !mayLink(this.rules, self, member)) this.closeLink(member);
    }
  }

  private openLink(peer: UserId): void {
    const options = {
      polite: this.host.self < peer,
      rtcConfig: this.host.rtcConfig,
      connectTimeoutMs: this.host.connectTimeoutMs,
      blockCandidates: this.host.forceRelay(peer),
    };
    const link = this.host.openLink(peer, options, {
      signal: (signal: Signal) => this.sendSignal(peer, link, signal),
      statechange: (state: LinkState) => this.linkChanged(peer, state),
      message: (data: unknown) => this.onFrame(peer, data),
    });
    this.links.set(peer, link);
    this.outboxes.open(peer);
    this.onlinkstatechange?.(peer, link.state);
  }

  /**
   * Offers go as relay requests so that a peer which will not negotiate (no
   * WebRTC) can say so in its answer, and the link is relayed at once rather
   * than at its connect timeout. Answers and candidates stay notifications:
   * nothing needs their reply, and relays keep their order either way.
   */
  private sendSignal(peer: UserId, link: Link, signal: Signal): void {
    const params = [this.groupId, peer, { signal }];
    if (!('description' in signal) || signal.description.type !== 'offer') {
      this.host.notify('relay', params);
      return;
    }
    this.host.call('relay', params).then(
      (answer) => {
        if (!offerTaken(answer)) link.giveUp();
      },
      () => link.giveUp(),
    );
  }

  private closeLink(peer: UserId): void {
    const link = this.links.get(peer);
    if (link === undefined) return;
    this.links.delete(peer);
    link.close();
  }

  private linkChanged(peer: UserId, state: LinkState): void {
    if (state !== 'direct') {
      // The channel a request went out on is gone: its reply cannot come back.
      this.calls.failPeer(peer, new RpcError(ErrorCode.PeerGone, `the link to ${peer} closed before it answered`));
      this.channelIn.dropPeer(peer);
    }
    if (state === 'closed') {
      const gone = new RpcError(ErrorCode.PeerGone, `${peer} left`);
      for (const message of this.outboxes.close(peer)) this.fail(message, gone);
      for (const transfer of this.relayOut.get(peer) ?? []) transfer.stop(gone);
      this.relayOut.delete(peer);
    } else if (state !== 'connecting') {
      for (const message of this.outboxes.release(peer)) this.dispatch(peer, message);
    }
    this.onlinkstatechange?.(peer, state);
  }

  /** Sends one message to one peer by the route its link offers now. */
  private dispatch(peer: UserId, outgoing: Outgoing): void {
    if (outgoing.job.signal?.aborted === true) return;
    const link = this.links.get(peer);
    if (link === undefined) {
      this.fail(outgoing, new RpcError(ErrorCode.PeerGone, `no link to ${peer}`));
      return;
    }
    if (link.state === 'connecting') {
      this.outboxes.hold(peer, outgoing);
      // A message that fits one frame counts as handed over once queued, as before transfers existed.
      if (outgoing.message.bytes === undefined) finished(outgoing);
      return;
    }
    if (link.state === 'direct' && this.sendDirect(peer, link, outgoing)) return;
    this.sendRelayed(peer, outgoing);
  }

  private sendDirect(peer: UserId, link: Link, outgoing: Outgoing): boolean {
    const { message } = outgoing;
    const requestId = outgoing.kind === 'unicast' ? this.calls.nextId() : 0;
    if (message.bytes === undefined) {
      const kind = outgoing.kind === 'unicast' ? FrameKind.Request : FrameKind.Broadcast;
      if (!link.send(encodeFrame({ kind, id: requestId, body: message.body }))) return false;
      if (outgoing.kind === 'unicast') {
        this.calls.expect(requestId, outgoing.call);
        this.calls.arm(requestId);
      }
      finished(outgoing);
      return true;
    }
    const announcement: Announcement = {
      kind: outgoing.kind === 'unicast' ? MessageKind.Request : MessageKind.Broadcast,
      requestId,
      text: typeof message.body === 'string',
      size: message.size,
    };
    const job: Job = {
      signal: outgoing.job.signal,
      progress: (sent) => outgoing.job.progress(sent),
      finish: (error) => {
        outgoing.job.finish(error);
        if (error === undefined && outgoing.kind === 'unicast') this.calls.arm(requestId);
      },
    };
    const transfer = new ChannelTransfer(this.channelIds.next(), announcement, message.bytes, job, () => {
      // A broadcast starts over through the server; a unicast's call has
      // failed with the link already (PeerGone).
      if (this.links.get(peer)?.state === 'relayed' && outgoing.kind === 'broadcast') this.sendRelayed(peer, outgoing);
      else outgoing.job.finish(new RpcError(ErrorCode.PeerGone, `the link to ${peer} closed mid-transfer`));
    });
    if (outgoing.kind === 'unicast') this.calls.expect(requestId, outgoing.call);
    return link.stream(transfer);
  }

  private sendRelayed(peer: UserId, outgoing: Outgoing): void {
    const { message } = outgoing;
    if (message.bytes === undefined) {
      const refused = this.host.roomFor(message.size);
      if (refused !== undefined) {
        outgoing.job.finish(refused);
        return;
      }
      const body = toRelayBody(message.body);
      if (outgoing.kind === 'broadcast') {
        this.host.notify('relay', [this.groupId, peer, { broadcast: body }]);
      } else {
        const { call } = outgoing;
        this.host.call('relay', [this.groupId, peer, { unicast: body }]).then(
          (answer) => this.unicastAnswered(peer, call, answer),
          (error: unknown) => call.reject(toRpcError(error)),
        );
      }
      finished(outgoing);
      return;
    }
    const kind = outgoing.kind === 'unicast' ? MessageKind.Request : MessageKind.Broadcast;
    const announcement: Announcement = { kind, requestId: 0, text: typeof message.body === 'string', size: message.size };
    const lastAnswer = (answer: unknown) => {
      if (outgoing.kind === 'unicast') this.unicastAnswered(peer, outgoing.call, answer);
    };
    this.relayTransfer(peer, announcement, message.bytes, outgoing.job, lastAnswer);
  }

  /** Starts a relayed transfer to `peer`; it is stopped (PeerGone) if the link to it closes. */
  private relayTransfer(
    peer: UserId,
    announcement: Announcement,
    bytes: Uint8Array,
    job: Job,
    lastAnswer: (answer: unknown) => void,
  ): number {
    const id = this.relayIds.next();
    const route = {
      call: (data: unknown) => this.host.call('relay', [this.groupId, peer, data]),
      notify: (data: unknown) => this.host.notify('relay', [this.groupId, peer, data]),
    };
    const active = this.relayOut.get(peer) ?? new Set<RelayTransfer>();
    this.relayOut.set(peer, active);
    const tracked: Job = {
      signal: job.signal,
      progress: (sent) => job.progress(sent),
      finish: (error) => {
        active.delete(transfer);
        job.finish(error);
      },
    };
    const transfer = new RelayTransfer(id, announcement, bytes, route, tracked, lastAnswer);
    active.add(transfer);
    transfer.start();
    return id;
  }

  /** The answer to a relayed unicast: its reply, or the id of the transfer that carries it. */
  private unicastAnswered(peer: UserId, call: Call, answer: unknown): void {
    const parsed = parseUnicastAnswer(answer);
    if (parsed === undefined) {
      call.reject(new RpcError(ErrorCode.InternalError, 'malformed unicast reply'));
    } else if ('body' in parsed) {
      call.resolve(parsed.body);
    } else {
      this.replies.wait(peer, parsed.transfer, call);
    }
  }

  /** What a relayed unicast is answered with: the reply, or the transfer that carries it. */
  private relayedAnswer(to: UserId, reply: Message): unknown {
    if (reply.bytes === undefined) return toRelayBody(reply.body);
    const announcement: Announcement = {
      kind: MessageKind.Reply,
      requestId: 0,
      text: typeof reply.body === 'string',
      size: reply.size,
    };
    const id = this.relayTransfer(to, announcement, reply.bytes, silentJob(), () => undefined);
    return { chunked: id };
  }

  /** One relayed chunk: held, and once the message is whole, handled. Resolves with the chunk's answer. */
  private async relayedChunk(from: UserId, chunk: ParsedChunk): Promise<unknown> {
    if (chunk.announcement !== undefined) this.relayIn.start(from, chunk.id, chunk.announcement, () => undefined);
    const whole = this.relayIn.add(from, chunk.id, chunk.bytes, chunk.seq);
    if (whole === undefined) return null;
    switch (whole.announcement.kind) {
      case MessageKind.Request:
        return this.relayedAnswer(from, await this.answer(from, whole.body));
      case MessageKind.Reply:
        this.replies.arrived(from, chunk.id, whole.body);
        return null;
      default:
        this.deliver(from, whole.body);
        return null;
    }
  }

  private fail(outgoing: Outgoing, error: RpcError): void {
    outgoing.job.finish(error);
    if (outgoing.kind === 'unicast') outgoing.call.reject(error);
  }

  private onFrame(peer: UserId, data: unknown): void {
    const message = decodeChannelMessage(data);
    if (message === undefined) return;
    switch (message.kind) {
      case 'frame':
        this.onWholeFrame(peer, message.frame);
        return;
      case 'start': {
        const { kind, requestId } = message.announcement;
        // A reply that stops coming fails its unicast now, not at its timeout.
        const stalled = () => {
          if (kind !== MessageKind.Reply) return;
          const error = new RpcError(ErrorCode.RelayTimeout, `${peer} stopped sending its reply`);
          this.calls.settle(peer, requestId, { error });
        };
        try {
          this.channelIn.start(peer, message.id, message.announcement, stalled);
          if (kind === MessageKind.Reply) this.calls.hold(peer, requestId);
        } catch (error) {
          if (kind !== MessageKind.Request) return;
          const body = errorBody(toRpcError(error));
          this.links.get(peer)?.send(encodeFrame({ kind: FrameKind.Error, id: requestId, body }));
        }
        return;
      }
      case 'chunk': {
        let whole: Whole | undefined;
        try {
          whole = this.channelIn.add(peer, message.id, message.bytes);
        } catch {
          return; // A broken transfer is dropped; a request's sender times out.
        }
        if (whole === undefined) return;
        const { kind, requestId } = whole.announcement;
        this.onWholeFrame(peer, { kind: kind as number as FrameKind, id: requestId, body: whole.body });
        return;
      }
      case 'abort':
        this.channelIn.drop(peer, message.id);
        return;
    }
  }

  private onWholeFrame(peer: UserId, frame: Frame): void {
    switch (frame.kind) {
      case FrameKind.Broadcast:
        this.deliver(peer, frame.body);
        return;
      case FrameKind.Request:
        void this.answerFrame(peer, frame);
        return;
      case FrameKind.Reply:
        this.calls.settle(peer, frame.id, { reply: frame.body });
        return;
      case FrameKind.Error:
        this.calls.settle(peer, frame.id, { error: errorFromBody(frame.body) });
        return;
      default:
        return;
    }
  }

  private async answerFrame(peer: UserId, request: Frame): Promise<void> {
    let reply: Message;
    try {
      reply = await this.answer(peer, request.body);
    } catch (error) {
      const body = errorBody(toRpcError(error));
      this.links.get(peer)?.send(encodeFrame({ kind: FrameKind.Error, id: request.id, body }));
      return;
    }
    // A reply whose link died on the way is lost; the caller's timeout tells it.
    const link = this.links.get(peer);
    if (reply.bytes === undefined) {
      link?.send(encodeFrame({ kind: FrameKind.Reply, id: request.id, body: reply.body }));
      return;
    }
    const announcement: Announcement = {
      kind: MessageKind.Reply,
      requestId: request.id,
      text: typeof reply.body === 'string',
      size: reply.size,
    };
    link?.stream(new ChannelTransfer(this.channelIds.next(), announcement, reply.bytes, silentJob(), () => undefined));
  }

  private deliver(from: UserId, body: Body): void {
    if (this.ended !== undefined || !mayBroadcast(this.rules, from, this.host.self)) return;
    this.onmessage?.(from, body);
  }

  /** The reply of this member's `onunicast` to a unicast from `from`. */
  private async answer(from: UserId, body: Body): Promise<Message> {
    if (this.ended !== undefined) throw this.ended;
    if (!mayUnicast(this.rules, from, this.host.self)) {
      throw new RpcError(ErrorCode.PermissionDenied, 'this capability forbids unicasts between these members');
    }
    const handler = this.onunicast;
    if (handler === null) throw new RpcError(ErrorCode.MethodNotFound, 'the target has no onunicast handler');
    let reply: Data;
    try {
      reply = await handler(from, body);
    } catch (error) {
      throw new RpcError(ErrorCode.InternalError, error instanceof Error ? error.message : String(error));
    }
    return toMessage(reply, this.host.maxMessageBytes);
  }

  private assertMember(): void {
    if (this.ended !== undefined) throw this.ended;
  }
}

/** A promise that rejects with `signal.reason` when it aborts; `dispose` stops listening. */
function abortedPromise(signal: AbortSignal | undefined): { promise: Promise<never>; dispose(): void } {
  let onAbort = () => undefined as void;
  const promise = new Promise<never>((_, reject) => {
    onAbort = () => reject(signal?.reason);
  });
  signal?.addEventListener('abort', onAbort, { once: true });
  return { promise, dispose: () => signal?.removeEventListener('abort', onAbort) };
}
