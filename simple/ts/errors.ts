import { JSONRPCErrorException } from 'json-rpc-2.0';
import type * as api from '../../interfaces/api';
import { NO_WEBRTC } from '../../typings/constants';
import { ErrorCode as ProtocolCode } from '../../typings/ErrorCode';

/**
 * Every code an `RpcError` carries; see `ErrorCode` in interfaces/api.d.ts:
 * JSON-RPC's own codes, the protocol's application codes (typings/,
 * generated from the Rust `ErrorCode`) and the codes only clients raise.
 */
export const ErrorCode = {
  ParseError: -32700,
  InvalidRequest: -32600,
  MethodNotFound: -32601,
  InvalidParams: -32602,
  InternalError: -32603,
  /** Never on the wire: the WebSocket is gone. */
  ConnectionClosed: -32000,
  ...ProtocolCode,
  /** From one client to another: the answer of a member without WebRTC to an offer. */
  NoWebRtc: NO_WEBRTC,
} as const;

export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/** The one error type the API rejects with: a JSON-RPC error, local or remote. */
export class RpcError extends Error implements api.IRpcError {
  override readonly name = 'RpcError';
  readonly code: number;
  readonly data?: unknown;

  constructor(code: number, message: string, data?: unknown) {
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
