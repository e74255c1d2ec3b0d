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

/** A `member_joined` / `member_left` notification: `[group_id, user_id]`. */
export interface GroupEvent {
  readonly groupId: GroupId;
  readonly userId: UserId;
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

export function parseIds(value: unknown): UserId[] {
  if (!Array.isArray(value) || !value.every(isId)) throw contractBroken('an invalid member list');
  return value;
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
  const [groupId, userId] = positional(params, ['group_id', 'user_id']);
  return isId(groupId) && isId(userId) ? { groupId, userId } : undefined;
}
