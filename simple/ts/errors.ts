import { JSONRPCErrorException } from 'json-rpc-2.0';
import type * as api from '../../interfaces/api';

/** Every code an `RpcError` carries; see `ErrorCode` in interfaces/api.d.ts. */
export enum ErrorCode {
  ParseError = -32700,
  InvalidRequest = -32600,
  MethodNotFound = -32601,
  InvalidParams = -32602,
  InternalError = -32603,
  ConnectionClosed = -32000,
  NotInitialized = -32001,
  AlreadyInitialized = -32002,
  GroupNotFound = -32003,
  NotAMember = -32004,
  UserNotFound = -32005,
  PermissionDenied = -32006,
  RelayTimeout = -32007,
  PeerGone = -32008,
  Busy = -32009,
  LimitExceeded = -32010,
  NoWebRtc = -32011,
}

/** The one error type the API rejects with: a JSON-RPC error, local or remote. */
export class RpcError extends Error implements api.IRpcError {
  override readonly name = 'RpcError';
  readonly code: ErrorCode | number;
  readonly data?: unknown;

  constructor(code: ErrorCode | number, message: string, data?: unknown) {
    super(message);
    this.code = code;
    if (data !== undefined) this.data = data;
  }

  /** The shape json-rpc-2.0 answers a request with when a method throws it. */
  toException(): JSONRPCErrorException {
    return new JSONRPCErrorException(this.message, this.code, this.data);
  }
}

/**
 * json-rpc-2.0 reports transport failures (a send that threw, pending calls
 * rejected on close) with its default code 0, and server errors as
 * `JSONRPCErrorException`; both become an `RpcError`.
 */
export function toRpcError(error: unknown): RpcError {
  if (error instanceof RpcError) return error;
  if (error instanceof JSONRPCErrorException) {
    return error.code === 0
      ? new RpcError(ErrorCode.ConnectionClosed, error.message)
      : new RpcError(error.code, error.message, error.data);
  }
  return new RpcError(ErrorCode.InternalError, error instanceof Error ? error.message : String(error));
}
