/**
 * The shapes of the server's answers and requests (interfaces/README.md),
 * checked at the edge so that the rest of the client works on typed values.
 * A value that does not fit is the server breaking the contract: `InternalError`.
 */
import type { GroupId, UserId } from '../../interfaces/api';
import type { JoinResult } from '../../typings/JoinResult';
import { ErrorCode, RpcError } from './errors';

/** A server `relay` request: `[group_id, from_user_id, data]`. */
export interface RelayRequest {
  readonly groupId: GroupId;
  readonly from: UserId;
  readonly data: unknown;
}

/**
 * A `member_joined` / `member_left` notification: `[group_id, user_id]`;
 * `member_joined` on a server with join tokens adds the joiner's `info`.
 */
export interface GroupEvent {
  readonly groupId: GroupId;
  readonly userId: UserId;
  /** `undefined` when the server sent none, or `null`. */
  readonly info: unknown;
}

/** `get_members`: the ids, and the `info` of those that have one. */
export interface MemberList {
  readonly ids: UserId[];
  readonly info: ReadonlyMap<UserId, unknown>;
}

/** What the client uses of a `session` answer. */
export interface SessionFacts {
  readonly iceServers: RTCIceServer[];
  /** For `resume`; empty when the server does not resume. */
  readonly resumeTicket: string;
  /** The server's resume window; 0: it does not resume sessions. */
  readonly resumeWindowMs: number;
}

/** User and group ids: 32 lowercase hex digits. */
const ID_PATTERN = /^[0-9a-f]{32}$/;

function isId(value: unknown): value is string {
  return typeof value === 'string' && ID_PATTERN.test(value);
}

function contractBroken(what: string): RpcError {
  return new RpcError(ErrorCode.InternalError, `the server sent ${what}`);
}

export function parseId(value: unknown): UserId & GroupId {
  if (!isId(value)) throw contractBroken('an invalid id');
  return value;
}

/** `[user_id, …]`, or `[{"user_id", "info"}, …]` when asked with `"info": true` (servers with join tokens). */
export function parseMembers(value: unknown): MemberList {
  if (Array.isArray(value) && value.every(isId)) return { ids: value, info: new Map() };
  if (!Array.isArray(value)) throw contractBroken('an invalid member list');
  const ids: UserId[] = [];
  const info = new Map<UserId, unknown>();
  for (const member of value) {
    const { user_id: id, info: memberInfo } = (typeof member === 'object' && member !== null ? member : {}) as Record<string, unknown>;
    if (!isId(id)) throw contractBroken('an invalid member list');
    ids.push(id);
    if (memberInfo !== undefined && memberInfo !== null) info.set(id, memberInfo);
  }
  return { ids, info };
}

function isIceServer(value: unknown): value is RTCIceServer {
  if (typeof value !== 'object' || value === null) return false;
  const { urls, username, credential } = value as Record<string, unknown>;
  const urlsOk = typeof urls === 'string' || (Array.isArray(urls) && urls.every((u) => typeof u === 'string'));
  return urlsOk && ['string', 'undefined'].includes(typeof username) && ['string', 'undefined'].includes(typeof credential);
}

/** A `session` answer. A server that does not resume may leave the resume fields out. */
export function parseSessionFacts(value: unknown): SessionFacts {
  if (typeof value === 'object' && value !== null) {
    const { ice_servers: iceServers, resume_ticket: ticket, resume_window_ms: windowMs } = value as Record<string, unknown>;
    const resumeOk = (ticket === undefined && windowMs === undefined) || (typeof ticket === 'string' && typeof windowMs === 'number');
    if (Array.isArray(iceServers) && iceServers.every(isIceServer) && resumeOk) {
      return {
        iceServers,
        resumeTicket: typeof ticket === 'string' ? ticket : '',
        resumeWindowMs: typeof windowMs === 'number' ? windowMs : 0,
      };
    }
  }
  throw contractBroken('invalid session facts');
}

export function parseJoinResult(value: unknown): JoinResult {
  if (typeof value === 'object' && value !== null) {
    const { owner, capability } = value as Record<string, unknown>;
    if (isId(owner) && typeof capability === 'number') return { owner, capability };
  }
  throw contractBroken('an invalid join result');
}

/** Params by position, as the server sends them, or by name, as JSON-RPC allows. */
function positional(params: unknown, names: readonly string[]): unknown[] {
  if (Array.isArray(params)) return params;
  if (typeof params === 'object' && params !== null) {
    const byName = params as Record<string, unknown>;
    return names.map((name) => byName[name]);
  }
  return [];
}

export function parseRelayRequest(params: unknown): RelayRequest {
  const [groupId, from, data] = positional(params, ['group_id', 'user_id', 'data']);
  if (!isId(groupId) || !isId(from) || data === undefined) {
    throw new RpcError(ErrorCode.InvalidParams, 'expected [group_id, user_id, data]');
  }
  return { groupId, from, data };
}

export function parseGroupEvent(params: unknown): GroupEvent | undefined {
  const [groupId, userId, info] = positional(params, ['group_id', 'user_id', 'info']);
  return isId(groupId) && isId(userId) ? { groupId, userId, info } : undefined;
}

/** `resume`'s answer, as far as the client needs it. */
export interface Resumed {
  /** How many of our messages the server received. */
  readonly received: number;
  readonly replayed: boolean;
}

export function parseResumeResult(value: unknown): Resumed {
  if (typeof value === 'object' && value !== null) {
    const { received, replayed } = value as Record<string, unknown>;
    if (typeof received === 'number' && typeof replayed === 'boolean') return { received, replayed };
  }
  throw contractBroken('an invalid resume result');
}
