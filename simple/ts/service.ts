/**
 * `SimpleService`: one WebSocket session with the signaling server, spoken
 * as a JSON-RPC 2.0 peer (json-rpc-2.0's server-and-client): it calls
 * `init`, `session`, `create`, `join`, `leave`, `get_members` and `relay`, and answers
 * the server's `relay` requests and member notifications by handing them to
 * the right `Group`.
 *
 * The session survives a dropped WebSocket: the `session` answer brings a
 * resume ticket; the service counts the messages it sends and receives, and
 * keeps what it sent until an answer from the server proves it arrived (an
 * answer proves its request and everything before it did; browsers cannot
 * ping). When the socket drops without a close of ours, it dials again
 * with backoff, sends `resume`, sends again what the server says it lacks,
 * and carries on; DataChannels are not touched meanwhile.
 */
import {
  JSONRPCClient,
  JSONRPCErrorException,
  JSONRPCServer,
  JSONRPCServerAndClient,
} from 'json-rpc-2.0';
import type * as api from '../../interfaces/api';
import type { ConnectionState, GroupId, IService, IServiceInfo, ServiceOptions, UserId } from '../../interfaces/api';
import { DEFAULT_CAPABILITY } from './capability';
import { ErrorCode, RpcError, toRpcError } from './errors';
import { generateCertificate, withCertificate } from './certificate';
import { Group, type GroupHost } from './group';
import { RtcLink } from './link';
import { DEFAULT_MAX_MESSAGE_BYTES } from './transfer';
import {
  type GroupEvent,
  parseGroupEvent,
  parseId,
  parseJoinResult,
  parseMembers,
  parseRelayRequest,
  parseResumeResult,
  parseSessionFacts,
  type Resumed,
  type SessionFacts,
} from './wire';

/** How long a link may stay 'connecting' before its messages go through the server. */
export const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
/** How long a DataChannel unicast waits for its reply (the server's relay timeout is the same). */
export const DEFAULT_UNICAST_TIMEOUT_MS = 10_000;
/**
 * The most bytes of messages waiting for the server while reconnecting
 * (`ServiceOptions.maxReconnectBufferBytes`): the server's own resume buffer
 * by default holds as much for this member the other way.
 */
export const DEFAULT_MAX_RECONNECT_BUFFER_BYTES = 4 * 1024 * 1024;

/**
 * How long before the server's TURN credentials expire the service fetches
 * fresh ones (at most half their lifetime before).
 */
const SESSION_REFRESH_MARGIN_MS = 60_000;
/** The longest delay `setTimeout` takes. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** When the earliest TURN credential expires: usernames are `"<unix expiry>:<user_id>"`. */
function credentialsExpireAt(servers: readonly RTCIceServer[]): number | undefined {
  const expiries = servers.flatMap(({ username }) => {
    const seconds = /^(\d+):/.exec(username ?? '')?.[1];
    return seconds === undefined ? [] : [Number(seconds) * 1000];
  });
  return expiries.length === 0 ? undefined : Math.min(...expiries);
}

/**
 * Pauses before each resume attempt, after LiveKit's client: at once, then
 * 0.3, 1.2, 2.7 and 4.8 s, then every 7 s until the resume window is over;
 * each but the first gets up to half of itself (at most 1 s) of random
 * jitter, so that pages cut at once do not all come back at once.
 */
const RESUME_BACKOFF_MS = [0, 300, 1_200, 2_700, 4_800, 7_000];
/** How long one resume attempt may take to open and be answered. */
const DIAL_TIMEOUT_MS = 5_000;
/**
 * Messages kept for replay at which the service asks for an answer (fresh
 * session facts), so that a run of notifications alone does not pile up.
 */
const ACK_EVERY = 64;

/** A message sent and not yet known to have arrived. */
interface Sent {
  /** Its number among the messages sent on the session, from 1. */
  readonly seq: number;
  readonly text: string;
}

/** A call of ours waiting for its answer. */
interface Waiting {
  readonly method: string;
  /** Ends the call when its answer can no longer come (a resume without replay). */
  readonly lose: (error: RpcError) => void;
  timer?: ReturnType<typeof setTimeout>;
}

function backoffMs(attempt: number): number {
  const base = RESUME_BACKOFF_MS[Math.min(attempt, RESUME_BACKOFF_MS.length - 1)] ?? 0;
  return base + Math.random() * Math.min(base / 2, 1_000);
}

/**
 * When to fetch the session facts again: before the TURN credentials
 * expire, and before the resume ticket does (it lives ten windows: every
 * five keeps one valid).
 */
function refreshDelayMs(facts: SessionFacts): number | undefined {
  const delays: number[] = [];
  const expires = credentialsExpireAt(facts.iceServers);
  if (expires !== undefined) {
    const left = expires - Date.now();
    delays.push(Math.max(1_000, left - Math.min(SESSION_REFRESH_MARGIN_MS, left / 2)));
  }
  if (facts.resumeWindowMs > 0) delays.push(facts.resumeWindowMs * 5);
  return delays.length === 0 ? undefined : Math.min(MAX_TIMER_MS, ...delays);
}

export class SimpleService implements IService {
  onclose: (() => void) | null = null;
  onconnectionstatechange: ((state: ConnectionState) => void) | null = null;

  /** The JSON-RPC peer, from `join()` on; it outlives sockets. */
  private rpc: JSONRPCServerAndClient | undefined;
  /** The socket in use: replaced by each resume. */
  private socket: WebSocket | undefined;
  private state: ConnectionState = 'connected';
  /** The latest resume ticket and window (`session`); none from a v1 server. */
  private ticket: { readonly ticket: string; readonly windowMs: number } | undefined;
  /** Messages sent and received on the session (resume's counting rule). */
  private sent = 0;
  private received = 0;
  /**
   * How far our count of messages sent is ahead of the server's: 0 until a
   * resume finds the server counting from less than we know it had (the
   * node that held the session was gone), then the difference, for good.
   */
  private sentOffset = 0;
  /** What the server may not have received yet, oldest first, and its size in UTF-16 units. */
  private unacked: Sent[] = [];
  private unackedSize = 0;
  /** Our requests waiting for an answer: the count of messages sent up to each. */
  private readonly requestSeq = new Map<unknown, number>();
  /** Our calls waiting for an answer, by their request's number among the messages sent. */
  private readonly waiting = new Map<number, Waiting>();
  private joined: Promise<IServiceInfo> | undefined;
  private host: GroupHost | undefined;
  private self: UserId | undefined;
  private closed = false;
  /** Started with the session, shared by every link of every group (see certificate.ts). */
  private certificate: Promise<RTCCertificate | undefined> | undefined;
  /** The server's ICE servers (`session`), added to every RTCPeerConnection's. */
  private iceServers: RTCIceServer[] = [];
  /** Fetches fresh `session` facts before the TURN credentials or the resume ticket expire. */
  private refreshTimer: ReturnType<typeof setTimeout> | undefined;
  private readonly groups = new Map<GroupId, Group>();
  /**
   * Groups whose `join` is on its way: a relay for one of them waits for it,
   * as a peer's offer can arrive before our own `join` answer is handled.
   */
  private readonly joining = new Map<GroupId, Promise<Group>>();

  constructor(
    private readonly url: string,
    private readonly options: ServiceOptions = {},
  ) {}

  join(): Promise<IServiceInfo> {
    this.joined ??= this.connect();
    return this.joined;
  }

  close(): void {
    if (this.closed) return;
    this.socket?.close(1000, 'closed by the client');
    this.shutDown('the service was closed');
  }

  get connectionState(): ConnectionState {
    return this.state;
  }

  info(): IServiceInfo {
    const self = this.self;
    if (self === undefined) throw new RpcError(ErrorCode.NotInitialized, 'join() has not resolved yet');
    return { id: () => self };
  }

  async createGroup(capability: api.GroupCapability | number = DEFAULT_CAPABILITY): Promise<Group> {
    const host = await this.groupHost();
    const id = parseId(await host.call('create', [capability]));
    const group = new Group(id, host.self, capability, [host.self], host);
    this.groups.set(id, group);
    // Our own `info` (on a server with join tokens) comes from the server
    // too; nothing waits for it.
    host
      .call('get_members', { group_id: id, info: true })
      .then((members) => group.learnInfo(parseMembers(members).info))
      .catch(() => undefined);
    group.handOver();
    return group;
  }

  joinGroup(id: GroupId): Promise<Group> {
    const known = this.groups.get(id) ?? this.joining.get(id);
    if (known !== undefined) return Promise.resolve(known);
    const joining = this.enter(id).finally(() => this.joining.delete(id));
    this.joining.set(id, joining);
    return joining;
  }

  private async enter(id: GroupId): Promise<Group> {
    const host = await this.groupHost();
    const { owner, capability } = parseJoinResult(await host.call('join', [id]));
    // Asked first, so that the question is on its way while the group opens
    // its first link; the answer is handled after this task, group in place.
    const members = host.call('get_members', { group_id: id, info: true });
    // Registered before `get_members` answers so that peers' offers find it;
    // the member list is completed by the answer.
    const group = new Group(id, owner, capability, owner === host.self ? [owner] : [owner, host.self], host);
    group.askingMembers();
    this.groups.set(id, group);
    try {
      const { ids, info } = parseMembers(await members);
      group.setMembers(ids, info);
    } catch (error) {
      const failure = toRpcError(error);
      group.end(failure);
      throw failure;
    }
    group.handOver();
    return group;
  }

  private async connect(): Promise<IServiceInfo> {
    if (this.closed) throw new RpcError(ErrorCode.ConnectionClosed, 'the service was closed');
    // Generated while the socket opens: ready before the first link needs it.
    this.certificate = this.options.rtcConfig?.certificates === undefined ? generateCertificate() : Promise.resolve(undefined);
    const socket = new WebSocket(this.url);
    socket.binaryType = 'arraybuffer';
    const rpc = new JSONRPCServerAndClient(
      new JSONRPCServer(),
      new JSONRPCClient((message) => this.transmit(message)),
    );
    rpc.addMethod('relay', (params: unknown) => this.onRelay(params));
    rpc.addMethod('member_joined', (params: unknown) =>
      this.onMemberEvent(params, (group, event) => group.memberJoined(event.userId, event.info)),
    );
    rpc.addMethod('member_left', (params: unknown) => this.onMemberEvent(params, (group, event) => group.memberLeft(event.userId)));
    this.rpc = rpc;
    this.serve(socket);
    await new Promise<void>((resolve, reject) => {
      socket.onopen = () => resolve();
      socket.onerror = () => reject(new RpcError(ErrorCode.ConnectionClosed, `cannot connect to ${this.url}`));
    });
    const token = this.options.token;
    const self = parseId(await this.call('init', token === undefined ? [] : [token]));
    this.self = self;
    // Before any RTCPeerConnection exists, so that every one gets them.
    await this.fetchSessionFacts();
    return this.info();
  }

  /**
   * Takes the server's ICE servers and resume ticket, and schedules the next
   * fetch before either expires. Its answer also proves that what we sent
   * before it arrived.
   */
  private async fetchSessionFacts(): Promise<void> {
    let facts;
    try {
      facts = parseSessionFacts(await this.call('session', []));
    } catch (error) {
      // A v1 server has no `session`: no ICE servers, no resume.
      if (toRpcError(error).code === ErrorCode.MethodNotFound) return;
      throw error;
    }
    this.iceServers = facts.iceServers;
    this.ticket = { ticket: facts.resumeTicket, windowMs: facts.resumeWindowMs };
    const delay = refreshDelayMs(facts);
    if (delay === undefined || this.closed) return;
    clearTimeout(this.refreshTimer);
    // A failed refresh means the connection is going: shutDown() or a resume follows.
    this.refreshTimer = setTimeout(() => this.fetchSessionFacts().catch(() => undefined), delay);
  }

  /** Reads `socket` from now on; its end is a drop to resume from, or the end. */
  private serve(socket: WebSocket): void {
    this.socket = socket;
    socket.onmessage = ({ data }) => this.onFrame(data);
    socket.onclose = ({ code, reason }) => {
      if (socket !== this.socket || this.closed) return;
      // No close frame (1006), the server's idle timeout, or a stopping node
      // of a cluster (1012, resume on another node): the server keeps the
      // session for its resume window. Any other close ends it.
      const dropped = code === 1006 || (code === 1008 && reason === 'idle timeout') || code === 1012;
      if (dropped && (this.ticket?.windowMs ?? 0) > 0) void this.resume();
      else this.shutDown(`the connection to the server closed (${code}${reason ? ` ${reason}` : ''})`);
    };
  }

  /** Every message to the server goes out here: counted, kept, written when it can be. */
  private transmit(message: unknown): void {
    const text = JSON.stringify(message);
    this.sent += 1;
    const { id, method } = message as { id?: unknown; method?: unknown };
    if (typeof method === 'string' && id !== undefined && id !== null) this.requestSeq.set(id, this.sent);
    const resumable = (this.ticket?.windowMs ?? 0) > 0;
    if (resumable) {
      this.unacked.push({ seq: this.sent, text });
      this.unackedSize += text.length;
    }
    const socket = this.socket;
    if (this.state === 'connected' && socket?.readyState === WebSocket.OPEN) socket.send(text);
    else if (!resumable) throw new Error('the WebSocket is not open');
    // Otherwise it waits in `unacked`, and the resume sends it.

    // After this message is written, never from within: the `session`
    // request is numbered after it, so it must go out after it (written
    // first, a resume would take it for this message and drop this one).
    if (resumable && this.unacked.length % ACK_EVERY === 0) {
      queueMicrotask(() => this.fetchSessionFacts().catch(() => undefined));
    }
  }

  private onFrame(data: unknown): void {
    this.received += 1;
    let message: unknown;
    try {
      message = JSON.parse(typeof data === 'string' ? data : new TextDecoder().decode(data as ArrayBuffer));
    } catch {
      return; // Not JSON: nothing to answer (the server never sends such a frame).
    }
    if (typeof message === 'object' && message !== null && !('method' in message) && 'id' in message) {
      // An answer proves its request, and everything sent before it, arrived.
      const seq = this.requestSeq.get(message.id);
      if (seq !== undefined) {
        this.requestSeq.delete(message.id);
        this.forgetThrough(seq);
      }
    }
    // json-rpc-2.0 reports (and drops) what is not JSON-RPC; nothing to do here.
    this.rpc?.receiveAndSend(message).catch(() => undefined);
  }

  private forgetThrough(seq: number): void {
    const keep = this.unacked.findIndex((sent) => sent.seq > seq);
    this.unacked = keep < 0 ? [] : this.unacked.slice(keep);
    this.unackedSize = this.unacked.reduce((size, sent) => size + sent.text.length, 0);
  }

  private setState(state: ConnectionState): void {
    if (this.state === state) return;
    this.state = state;
    this.onconnectionstatechange?.(state);
  }

  /** The socket dropped: dial again until resumed, refused, or the window is over. */
  private async resume(): Promise<void> {
    this.setState('reconnecting');
    const giveUp = Date.now() + (this.ticket?.windowMs ?? 0);
    for (let attempt = 0; !this.closed; attempt += 1) {
      const pause = backoffMs(attempt);
      if (Date.now() + pause >= giveUp) break;
      await new Promise((resolve) => setTimeout(resolve, pause));
      const ticket = this.ticket;
      if (this.closed || ticket === undefined) return;
      const outcome = await this.dial(ticket.ticket);
      if (outcome === 'refused') break;
      if (outcome !== undefined && this.closed) {
        // `close()` came during the attempt: a clean close ends the session
        // on the server at once, rather than at the end of the window.
        outcome.socket.close(1000, 'closed by the client');
        return;
      }
      if (outcome !== undefined) {
        this.adopt(outcome.socket, outcome.resumed);
        return;
      }
    }
    this.shutDown('the session could not be resumed');
  }

  /**
   * One attempt: a new socket whose first message is `resume`. Resolves with
   * it once answered, `'refused'` when the session is over, `undefined` when
   * this attempt failed otherwise.
   */
  private dial(ticket: string): Promise<{ socket: WebSocket; resumed: Resumed } | 'refused' | undefined> {
    return new Promise((settle) => {
      const socket = new WebSocket(this.url);
      socket.binaryType = 'arraybuffer';
      const fail = (outcome: 'refused' | undefined) => {
        clearTimeout(timer);
        socket.onopen = socket.onmessage = socket.onclose = socket.onerror = null;
        socket.close();
        settle(outcome);
      };
      const timer = setTimeout(() => fail(undefined), DIAL_TIMEOUT_MS);
      socket.onerror = () => fail(undefined);
      socket.onclose = () => fail(undefined);
      socket.onopen = () => {
        socket.send(JSON.stringify({ jsonrpc: '2.0', id: 'resume', method: 'resume', params: [ticket, this.received] }));
      };
      socket.onmessage = ({ data }) => {
        let answer: { result?: unknown; error?: { code?: unknown } };
        try {
          answer = JSON.parse(typeof data === 'string' ? data : new TextDecoder().decode(data as ArrayBuffer));
        } catch {
          return fail(undefined);
        }
        if (answer.error !== undefined) return fail(answer.error.code === ErrorCode.ResumeFailed ? 'refused' : undefined);
        let resumed: Resumed;
        try {
          resumed = parseResumeResult(answer.result);
        } catch {
          return fail(undefined);
        }
        clearTimeout(timer);
        // The replay follows at once: read it from this very task on.
        this.serve(socket);
        settle({ socket, resumed });
      };
    });
  }

  /** Carries on over a resumed socket: first what the server lacks. */
  private adopt(socket: WebSocket, resumed: Resumed): void {
    let serverHas = resumed.received + this.sentOffset;
    this.forgetThrough(serverHas);
    const firstKept = this.unacked[0]?.seq ?? this.sent + 1;
    if (serverHas < firstKept - 1) {
      // The node that held the session is gone and its successor counts
      // from 0: everything kept goes again (what the old node had handled
      // arrives twice, rather than the rest not at all), and the server's
      // count is ours, shifted, from now on, so the next resume is exact.
      this.sentOffset += firstKept - 1 - serverHas;
      serverHas = firstKept - 1;
    }
    for (const sent of this.unacked) socket.send(sent.text);
    this.setState('connected');
    if (!resumed.replayed) {
      this.loseAnswers(serverHas);
      void this.refreshGroups();
    }
  }

  /**
   * A resume without replay: the answers to calls the server had received
   * may have been among what it dropped. Each such call gets the relay
   * timeout (a relay still running is answered within it) and then fails.
   */
  private loseAnswers(serverReceived: number): void {
    const timeoutMs = this.options.unicastTimeoutMs ?? DEFAULT_UNICAST_TIMEOUT_MS;
    for (const [seq, call] of this.waiting) {
      if (seq > serverReceived || call.timer !== undefined) continue;
      const code = call.method === 'relay' ? ErrorCode.RelayTimeout : ErrorCode.ConnectionClosed;
      call.timer = setTimeout(
        () => call.lose(new RpcError(code, `the answer to ${call.method} was lost while the connection was down`)),
        timeoutMs,
      );
    }
  }

  /** After a resume without replay, what happened meanwhile is asked for again. */
  private async refreshGroups(): Promise<void> {
    for (const group of [...this.groups.values()]) {
      try {
        const { ids, info } = parseMembers(await this.call('get_members', { group_id: group.id(), info: true }));
        const known = group.members();
        for (const gone of known.filter((member) => !ids.includes(member))) group.memberLeft(gone);
        for (const come of ids.filter((member) => !known.includes(member))) group.memberJoined(come, info.get(come));
      } catch (error) {
        group.end(toRpcError(error));
      }
    }
  }


  private async onRelay(params: unknown): Promise<unknown> {
    try {
      const { groupId, from, data } = parseRelayRequest(params);
      const group = this.groups.get(groupId) ?? (await this.joining.get(groupId)?.catch(() => undefined));
      if (group === undefined) throw new RpcError(ErrorCode.NotAMember, `not a member of ${groupId}`);
      return await group.onRelay(from, data);
    } catch (error) {
      throw toRpcError(error).toException();
    }
  }

  private onMemberEvent(params: unknown, apply: (group: Group, event: GroupEvent) => void): void {
    const event = parseGroupEvent(params);
    if (event === undefined) throw new JSONRPCErrorException('expected [group_id, user_id]', ErrorCode.InvalidParams);
    const group = this.groups.get(event.groupId);
    if (group !== undefined) apply(group, event);
  }

  /** What a group needs of this service, once `join()` resolved. */
  private async groupHost(): Promise<GroupHost> {
    await this.join();
    const certificate = await this.certificate;
    if (this.closed) throw new RpcError(ErrorCode.ConnectionClosed, 'the service was closed');
    this.host ??= this.makeHost(this.info().id(), certificate);
    return this.host;
  }

  private makeHost(self: UserId, certificate: RTCCertificate | undefined): GroupHost {
    const own = this.options.rtcConfig ?? { iceServers: [] };
    const served = (): RTCIceServer[] => this.iceServers;
    return {
      self,
      // The caller's ICE servers and the server's latest ones.
      get rtcConfig(): RTCConfiguration {
        return withCertificate({ ...own, iceServers: [...(own.iceServers ?? []), ...served()] }, certificate);
      },
      connectTimeoutMs: this.options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS,
      unicastTimeoutMs: this.options.unicastTimeoutMs ?? DEFAULT_UNICAST_TIMEOUT_MS,
      maxMessageBytes: this.options.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES,
      forceRelay: this.options.forceRelay ?? (() => false),
      openLink: (_peer, options, events) => new RtcLink(options, events),
      call: (method, params) => this.call(method, params),
      notify: (method, params) => this.notify(method, params),
      roomFor: (bytes) => this.roomFor(bytes),
      forget: (group) => {
        if (this.groups.get(group.id()) === group) this.groups.delete(group.id());
      },
    };
  }

  private async call(method: string, params: unknown[] | Record<string, unknown>): Promise<unknown> {
    const rpc = this.rpc;
    if (rpc === undefined || this.closed) throw new RpcError(ErrorCode.ConnectionClosed, 'not connected');
    let lose: (error: RpcError) => void = () => undefined;
    const lost = new Promise<never>((_, reject) => {
      lose = reject;
    });
    const answer = rpc.request(method, params);
    // json-rpc-2.0 wrote the request before returning: it is the last one sent.
    const seq = this.sent;
    const waiting: Waiting = { method, lose };
    this.waiting.set(seq, waiting);
    try {
      return await Promise.race([answer, lost]);
    } catch (error) {
      throw toRpcError(error);
    } finally {
      clearTimeout(waiting.timer);
      this.waiting.delete(seq);
    }
  }

  /**
   * Refuses a relayed message of `bytes` while reconnecting once what waits
   * for the server would pass `maxReconnectBufferBytes`: the app learns it
   * at once rather than the page holding without bound for a resume window.
   * (Signalling and the chunks of a large message are not refused: a large
   * message keeps only a few chunks unanswered.)
   */
  private roomFor(bytes: number): RpcError | undefined {
    if (this.state !== 'reconnecting') return undefined;
    const max = this.options.maxReconnectBufferBytes ?? DEFAULT_MAX_RECONNECT_BUFFER_BYTES;
    if (this.unackedSize + bytes <= max) return undefined;
    return new RpcError(
      ErrorCode.LimitExceeded,
      `reconnecting to the server: ${this.unackedSize} bytes already wait for it (maxReconnectBufferBytes ${max})`,
    );
  }

  private notify(method: string, params: unknown[]): void {
    if (this.closed) return;
    try {
      this.rpc?.notify(method, params);
    } catch {
      // The socket is closing; shutDown() is on its way.
    }
  }

  /** Every exit path ends here once: pending calls fail, groups end, `onclose` runs. */
  private shutDown(reason: string): void {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.refreshTimer);
    this.requestSeq.clear();
    this.unacked = [];
    this.unackedSize = 0;
    this.setState('closed');
    this.rpc?.rejectAllPendingRequests(reason);
    const gone = new RpcError(ErrorCode.ConnectionClosed, reason);
    for (const group of [...this.groups.values()]) group.end(gone);
    this.onclose?.();
  }
}
