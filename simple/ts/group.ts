/**
 * One group as this member sees it: the member list and its owner, one link
 * per peer the capability allows (topology), and the routing of broadcasts
 * and unicasts over those links or, for a relayed link, through the server.
 * Links come from the host's `openLink`, so all of this runs without a
 * browser in the unit tests.
 */
import type { Data, GroupId, IGroup, LinkState, Received, RelayBody, UserId } from '../../interfaces/api';
import { mayBroadcast, mayLink, mayUnicast, type Rules } from './capability';
import { ErrorCode, RpcError, toRpcError } from './errors';
import { PendingCalls, type Call } from './calls';
import type { Link, LinkFactory, Signal } from './link';
import { Outboxes, type Outgoing } from './outbox';
import {
  type Body,
  type Frame,
  FrameKind,
  decodeFrame,
  encodeFrame,
  errorBody,
  errorFromBody,
  fromRelayBody,
  offerTaken,
  parseRelayed,
  toBody,
  toRelayBody,
} from './payload';

/** What a group needs from its service: this member, the server, links, and the knobs. */
export interface GroupHost {
  readonly self: UserId;
  readonly rtcConfig: RTCConfiguration;
  readonly connectTimeoutMs: number;
  readonly unicastTimeoutMs: number;
  readonly forceRelay: (peer: UserId) => boolean;
  /** Opens a link to one peer (an RTCPeerConnection in the browser). */
  readonly openLink: LinkFactory;
  call(method: string, params: unknown[]): Promise<unknown>;
  notify(method: string, params: unknown[]): void;
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
  private readonly links = new Map<UserId, Link>();
  /** Per peer, what waits for its link to leave 'connecting'. */
  private readonly outboxes = new Outboxes();
  /** Unicasts sent on a DataChannel, waiting for their reply frame. */
  private readonly calls: PendingCalls;
  /** Members that left: a late relay from one of them must not bring it back. */
  private readonly departed = new Set<UserId>();
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

  linkState(member: UserId): LinkState {
    return this.links.get(member)?.state ?? 'closed';
  }

  async broadcast(data: Data): Promise<void> {
    this.assertMember();
    const self = this.host.self;
    const others = this.memberList.filter((member) => member !== self);
    const targets = others.filter((member) => mayBroadcast(this.rules, self, member));
    if (targets.length === 0 && others.length > 0) {
      throw new RpcError(ErrorCode.PermissionDenied, 'this capability lets this member broadcast to no one');
    }
    const body = toBody(data);
    // Relayed and queued sends copy nothing: the body must not change under them.
    const stable = typeof body === 'string' ? body : body.slice();
    for (const member of targets) this.dispatch(member, { kind: 'broadcast', body: stable });
  }

  unicast(target: UserId, data: Data): Promise<Received> {
    return new Promise((resolve, reject) => {
      this.assertMember();
      if (!this.memberList.includes(target) || target === this.host.self) {
        throw new RpcError(ErrorCode.UserNotFound, `${target} is not another member of this group`);
      }
      if (!mayUnicast(this.rules, this.host.self, target)) {
        throw new RpcError(ErrorCode.PermissionDenied, `this capability forbids unicasts to ${target}`);
      }
      const body = toBody(data);
      const call: Call = { peer: target, body: typeof body === 'string' ? body : body.slice(), resolve, reject };
      this.dispatch(target, { kind: 'unicast', call });
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

  /** The member list from `get_members`: it supersedes what came before it. */
  setMembers(members: UserId[]): void {
    this.memberList = [...members];
    for (const member of members) this.departed.delete(member);
    this.reconcile();
  }

  memberJoined(member: UserId): void {
    this.departed.delete(member);
    if (this.ended !== undefined || this.memberList.includes(member)) return;
    this.memberList.push(member);
    this.reconcile();
    this.onmemberjoin?.(member);
  }

  memberLeft(member: UserId): void {
    this.departed.add(member);
    if (this.ended !== undefined || !this.memberList.includes(member)) return;
    this.memberList = this.memberList.filter((m) => m !== member);
    // The earliest-joined remaining member becomes owner, as on the server.
    const [first] = this.memberList;
    if (member === this.rules.owner && first !== undefined) this.rules = { ...this.rules, owner: first };
    this.closeLink(member);
    this.reconcile();
    this.onmemberleave?.(member);
  }

  /** A `relay` from `from` arrived: a signal, a relayed broadcast, or a relayed unicast to answer. */
  async onRelay(from: UserId, data: unknown): Promise<RelayBody | undefined> {
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
        return toRelayBody(await this.answer(from, message.body));
    }
  }

  /** Ends this member's view of the group without telling the server (left, or session gone). */
  end(reason: RpcError): void {
    if (this.ended !== undefined) return;
    this.ended = reason;
    this.release();
    for (const member of [...this.links.keys()]) this.closeLink(member);
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
    // The channel a request went out on is gone: its reply cannot come back.
    if (state !== 'direct') {
      this.calls.failPeer(peer, new RpcError(ErrorCode.PeerGone, `the link to ${peer} closed before it answered`));
    }
    if (state === 'closed') {
      for (const message of this.outboxes.close(peer)) {
        if (message.kind === 'unicast') message.call.reject(new RpcError(ErrorCode.PeerGone, `${peer} left`));
      }
    } else if (state !== 'connecting') {
      for (const message of this.outboxes.release(peer)) this.dispatch(peer, message);
    }
    this.onlinkstatechange?.(peer, state);
  }

  /** Sends one message to one peer by the route its link offers now. */
  private dispatch(peer: UserId, message: Outgoing): void {
    const link = this.links.get(peer);
    if (link === undefined) {
      if (message.kind === 'unicast') message.call.reject(new RpcError(ErrorCode.PeerGone, `no link to ${peer}`));
      return;
    }
    if (link.state === 'connecting') {
      this.outboxes.hold(peer, message);
      return;
    }
    if (link.state === 'direct' && this.sendDirect(link, message)) return;
    this.sendRelayed(peer, message);
  }

  private sendDirect(link: Link, message: Outgoing): boolean {
    if (message.kind === 'broadcast') return link.send(encodeFrame({ kind: FrameKind.Broadcast, id: 0, body: message.body }));
    const id = this.calls.nextId();
    if (!link.send(encodeFrame({ kind: FrameKind.Request, id, body: message.call.body }))) return false;
    this.calls.wait(id, message.call);
    return true;
  }

  private sendRelayed(peer: UserId, message: Outgoing): void {
    if (message.kind === 'broadcast') {
      this.host.notify('relay', [this.groupId, peer, { broadcast: toRelayBody(message.body) }]);
      return;
    }
    const { call } = message;
    this.host.call('relay', [this.groupId, peer, { unicast: toRelayBody(call.body) }]).then(
      (result) => {
        const reply = fromRelayBody(result);
        if (reply === undefined) call.reject(new RpcError(ErrorCode.InternalError, 'malformed unicast reply'));
        else call.resolve(reply);
      },
      (error: unknown) => call.reject(toRpcError(error)),
    );
  }

  private onFrame(peer: UserId, data: unknown): void {
    const frame = decodeFrame(data);
    if (frame === undefined) return;
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
    }
  }

  private async answerFrame(peer: UserId, request: Frame): Promise<void> {
    let reply: Frame;
    try {
      reply = { kind: FrameKind.Reply, id: request.id, body: await this.answer(peer, request.body) };
    } catch (error) {
      reply = { kind: FrameKind.Error, id: request.id, body: errorBody(toRpcError(error)) };
    }
    // A reply whose link died on the way is lost; the caller's timeout tells it.
    this.links.get(peer)?.send(encodeFrame(reply));
  }

  private deliver(from: UserId, body: Body): void {
    if (this.ended !== undefined || !mayBroadcast(this.rules, from, this.host.self)) return;
    this.onmessage?.(from, body);
  }

  /** The reply of this member's `onunicast` to a unicast from `from`. */
  private async answer(from: UserId, body: Body): Promise<Body> {
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
    const replyBody = toBody(reply);
    return typeof replyBody === 'string' ? replyBody : replyBody.slice();
  }

  private assertMember(): void {
    if (this.ended !== undefined) throw this.ended;
  }
}
