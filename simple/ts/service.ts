/**
 * `SimpleService`: one WebSocket session with the signaling server, spoken
 * as a JSON-RPC 2.0 peer (json-rpc-2.0's server-and-client): it calls
 * `init`, `session`, `create`, `join`, `leave`, `get_members` and `relay`, and answers
 * the server's `relay` requests and member notifications by handing them to
 * the right `Group`.
 */
import {
  JSONRPCClient,
  JSONRPCErrorException,
  JSONRPCServer,
  JSONRPCServerAndClient,
} from 'json-rpc-2.0';
import type * as api from '../../interfaces/api';
import type { GroupId, IService, IServiceInfo, ServiceOptions, UserId } from '../../interfaces/api';
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
  parseSessionFacts,
} from './wire';

/** How long a link may stay 'connecting' before its messages go through the server. */
export const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
/** How long a DataChannel unicast waits for its reply (the server's relay timeout is the same). */
export const DEFAULT_UNICAST_TIMEOUT_MS = 10_000;

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

/** The live part of a service: exists from `join()` until the session ends. */
interface Connection {
  readonly socket: WebSocket;
  readonly rpc: JSONRPCServerAndClient;
}

export class SimpleService implements IService {
  onclose: (() => void) | null = null;

  private connection: Connection | undefined;
  private joined: Promise<IServiceInfo> | undefined;
  private host: GroupHost | undefined;
  private self: UserId | undefined;
  private closed = false;
  /** Started with the session, shared by every link of every group (see certificate.ts). */
  private certificate: Promise<RTCCertificate | undefined> | undefined;
  /** The server's ICE servers (`session`), added to every RTCPeerConnection's. */
  private iceServers: RTCIceServer[] = [];
  /** Fetches fresh `session` facts before the TURN credentials expire. */
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
    this.connection?.socket.close(1000, 'closed by the client');
    this.shutDown('the service was closed');
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
      new JSONRPCClient((request) => {
        if (socket.readyState !== WebSocket.OPEN) throw new Error('the WebSocket is not open');
        socket.send(JSON.stringify(request));
      }),
    );
    rpc.addMethod('relay', (params: unknown) => this.onRelay(params));
    rpc.addMethod('member_joined', (params: unknown) =>
      this.onMemberEvent(params, (group, event) => group.memberJoined(event.userId, event.info)),
    );
    rpc.addMethod('member_left', (params: unknown) => this.onMemberEvent(params, (group, event) => group.memberLeft(event.userId)));
    this.connection = { socket, rpc };

    socket.onmessage = ({ data }) => this.onFrame(rpc, data);
    socket.onclose = () => this.shutDown('the connection to the server closed');
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

  /** Takes the server's ICE servers and schedules the next fetch before their credentials expire. */
  private async fetchSessionFacts(): Promise<void> {
    let facts;
    try {
      facts = parseSessionFacts(await this.call('session', []));
    } catch (error) {
      // A v1 server has no `session`: no ICE servers from it.
      if (toRpcError(error).code === ErrorCode.MethodNotFound) return;
      throw error;
    }
    this.iceServers = facts.iceServers;
    const expires = credentialsExpireAt(facts.iceServers);
    if (expires === undefined || this.closed) return;
    const left = expires - Date.now();
    const delay = Math.min(MAX_TIMER_MS, Math.max(1_000, left - Math.min(SESSION_REFRESH_MARGIN_MS, left / 2)));
    clearTimeout(this.refreshTimer);
    // A failed refresh means the connection is going: shutDown() follows.
    this.refreshTimer = setTimeout(() => this.fetchSessionFacts().catch(() => undefined), delay);
  }

  private onFrame(rpc: JSONRPCServerAndClient, data: unknown): void {
    let message: unknown;
    try {
      message = JSON.parse(typeof data === 'string' ? data : new TextDecoder().decode(data as ArrayBuffer));
    } catch {
      return; // Not JSON: nothing to answer (the server never sends such a frame).
    }
    // json-rpc-2.0 reports (and drops) what is not JSON-RPC; nothing to do here.
    rpc.receiveAndSend(message).catch(() => undefined);
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
      forget: (group) => {
        if (this.groups.get(group.id()) === group) this.groups.delete(group.id());
      },
    };
  }

  private async call(method: string, params: unknown[] | Record<string, unknown>): Promise<unknown> {
    const connection = this.connection;
    if (connection === undefined || this.closed) throw new RpcError(ErrorCode.ConnectionClosed, 'not connected');
    try {
      return await connection.rpc.request(method, params);
    } catch (error) {
      throw toRpcError(error);
    }
  }

  private notify(method: string, params: unknown[]): void {
    if (this.closed) return;
    try {
      this.connection?.rpc.notify(method, params);
    } catch {
      // The socket is closing; shutDown() is on its way.
    }
  }

  /** Every exit path ends here once: pending calls fail, groups end, `onclose` runs. */
  private shutDown(reason: string): void {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.refreshTimer);
    this.connection?.rpc.rejectAllPendingRequests(reason);
    const gone = new RpcError(ErrorCode.ConnectionClosed, reason);
    for (const group of [...this.groups.values()]) group.end(gone);
    this.onclose?.();
  }
}
