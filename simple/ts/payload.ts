/**
 * The bytes two clients exchange: DataChannel frames and relayed bodies.
 * The format is documented with `RelayPayload` in interfaces/api.d.ts.
 */
import type { Data, RelayBody } from '../../interfaces/api';
import { ErrorCode, RpcError } from './errors';

/** A message body, decoded: text stays text, anything else is bytes. */
export type Body = string | Uint8Array;

export enum FrameKind {
  Broadcast = 0,
  Request = 1,
  Reply = 2,
  Error = 3,
}

enum BodyType {
  Text = 0,
  Bytes = 1,
}

/** kind (1 byte) + body type (1 byte) + request id (4 bytes). */
const HEADER_BYTES = 6;

/**
 * The largest body a broadcast or unicast (or a reply) may carry, in bytes
 * (UTF-8 for text): one frame fits Chromium's 256 KiB DataChannel message
 * limit, and its base64 form fits the server's 1 MiB message limit.
 */
export const MAX_BODY_BYTES = 256 * 1024 - HEADER_BYTES;

export interface Frame {
  readonly kind: FrameKind;
  /** The unicast request id, echoed by its reply; 0 for broadcasts. */
  readonly id: number;
  readonly body: Body;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });

/**
 * The body of `data` as sent: strings stay strings, views keep exactly the
 * bytes they view. Throws `LimitExceeded` past `MAX_BODY_BYTES`.
 */
export function toBody(data: Data): Body {
  const body =
    typeof data === 'string'
      ? data
      : data instanceof ArrayBuffer
        ? new Uint8Array(data)
        : new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  // A UTF-8 string has at most 3 bytes per UTF-16 unit: count only when it may be too long.
  const size =
    typeof body !== 'string' ? body.byteLength : body.length * 3 > MAX_BODY_BYTES ? encoder.encode(body).byteLength : 0;
  if (size > MAX_BODY_BYTES) {
    throw new RpcError(ErrorCode.LimitExceeded, `a message may carry at most ${MAX_BODY_BYTES} bytes, not ${size}`);
  }
  return body;
}

export function encodeFrame(frame: Frame): Uint8Array<ArrayBuffer> {
  const bytes = typeof frame.body === 'string' ? encoder.encode(frame.body) : frame.body;
  const out = new Uint8Array(HEADER_BYTES + bytes.byteLength);
  const header = new DataView(out.buffer);
  header.setUint8(0, frame.kind);
  header.setUint8(1, typeof frame.body === 'string' ? BodyType.Text : BodyType.Bytes);
  header.setUint32(2, frame.id);
  out.set(bytes, HEADER_BYTES);
  return out;
}

/** The frame in a DataChannel message, or undefined when it is not one of ours. */
export function decodeFrame(message: unknown): Frame | undefined {
  if (!(message instanceof ArrayBuffer) || message.byteLength < HEADER_BYTES) return undefined;
  const header = new DataView(message);
  const kind = header.getUint8(0);
  const type = header.getUint8(1);
  if (!(kind in FrameKind) || !(type in BodyType)) return undefined;
  // slice() copies, so a received Uint8Array owns exactly its bytes.
  const bytes = new Uint8Array(message.slice(HEADER_BYTES));
  try {
    const body = type === BodyType.Text ? decoder.decode(bytes) : bytes;
    return { kind, id: header.getUint32(2), body };
  } catch {
    return undefined;
  }
}

/** An error travels in an Error frame as UTF-8 JSON `{code, message}`. */
export function errorBody(error: RpcError): string {
  return JSON.stringify({ code: error.code, message: error.message });
}

export function errorFromBody(body: Body): RpcError {
  try {
    const parsed: unknown = JSON.parse(typeof body === 'string' ? body : decoder.decode(body));
    if (isRecord(parsed) && typeof parsed['code'] === 'number' && typeof parsed['message'] === 'string') {
      return new RpcError(parsed['code'], parsed['message']);
    }
  } catch {
    // Falls through to the generic error below.
  }
  return new RpcError(ErrorCode.InternalError, 'malformed error reply');
}

export function toRelayBody(body: Body): RelayBody {
  return typeof body === 'string' ? { text: body } : { base64: toBase64(body) };
}

/** The body in a relayed value, or undefined when the value is not a `RelayBody`. */
export function fromRelayBody(value: unknown): Body | undefined {
  if (!isRecord(value)) return undefined;
  const { text, base64 } = value;
  if (typeof text === 'string') return text;
  if (typeof base64 === 'string') {
    try {
      return fromBase64(base64);
    } catch {
      return undefined;
    }
  }
  return undefined;
}

/** What a relayed `data` holds, checked; undefined when it is none of the `RelayPayload` shapes. */
export type Relayed =
  | { readonly kind: 'description'; readonly description: RTCSessionDescriptionInit }
  | { readonly kind: 'candidate'; readonly candidate: RTCIceCandidateInit }
  /** The peer speaks no WebRTC: `{"signal": {"webrtc": false}}`. */
  | { readonly kind: 'nowebrtc' }
  | { readonly kind: 'broadcast'; readonly body: Body }
  | { readonly kind: 'unicast'; readonly body: Body };

export function parseRelayed(data: unknown): Relayed | undefined {
  if (!isRecord(data)) return undefined;
  const { signal, broadcast, unicast } = data;
  if (isRecord(signal)) {
    const { description, candidate, webrtc } = signal;
    if (isRecord(description) && typeof description['type'] === 'string') {
      return { kind: 'description', description: description as unknown as RTCSessionDescriptionInit };
    }
    if (isRecord(candidate)) return { kind: 'candidate', candidate: candidate as RTCIceCandidateInit };
    if (webrtc === false) return { kind: 'nowebrtc' };
    return undefined;
  }
  const body = fromRelayBody(broadcast ?? unicast);
  if (body === undefined) return undefined;
  return broadcast !== undefined ? { kind: 'broadcast', body } : { kind: 'unicast', body };
}

/**
 * Whether the answer to a relayed offer means the peer took it: `null`, and
 * nothing else. An error (`NoWebRtc` from a member without WebRTC, or any
 * other) or any other result means no answer will come.
 */
export function offerTaken(answer: unknown): boolean {
  return answer === null;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Chunked so that large bodies stay under the engine's argument limit. */
const BASE64_CHUNK_BYTES = 0x8000;

function toBase64(bytes: Uint8Array): string {
  let binary = '';
  for (let i = 0; i < bytes.length; i += BASE64_CHUNK_BYTES) {
    binary += String.fromCharCode(...bytes.subarray(i, i + BASE64_CHUNK_BYTES));
  }
  return btoa(binary);
}

function fromBase64(text: string): Uint8Array {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}
