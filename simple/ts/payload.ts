/**
 * The bytes two clients exchange: DataChannel frames and relayed bodies.
 * The format is documented with `RelayPayload` in interfaces/api.d.ts.
 */
import type { Data, RelayBody, RelayChunk } from '../../interfaces/api';
import { MAX_BODY_BYTES } from '../../typings/constants';
import { ErrorCode, RpcError } from './errors';
import { type Announcement, MessageKind } from './transfer';

/** A message body, decoded: text stays text, anything else is bytes. */
export type Body = string | Uint8Array;

export enum FrameKind {
  Broadcast = 0,
  Request = 1,
  Reply = 2,
  Error = 3,
  /** A transfer begins: what it carries and its size. */
  Start = 4,
  /** The next bytes of a transfer. */
  Chunk = 5,
  /** The sender gave a transfer up. */
  Abort = 6,
  /** On the control channel: this side takes whole frames there (link.ts). */
  Hello = 7,
  /** On the main channel: this side's whole frames come on the control channel from here on. */
  Moved = 8,
  /** On the control channel: this many bytes of chunk frames reached this side's page. */
  Ack = 9,
}

enum BodyType {
  Text = 0,
  Bytes = 1,
}

/** kind (1 byte) + body type (1 byte) + request id (4 bytes). */
const HEADER_BYTES = 6;

/**
 * The largest body that travels in one piece, in bytes (UTF-8 for text;
 * typings/constants.ts, from Rust): one frame (header included) fits
 * Chromium's 256 KiB DataChannel message limit, and its base64 form fits
 * the server's 1 MiB message limit. Larger ones travel as transfers
 * (transfer.ts).
 */
export { MAX_BODY_BYTES };
/** A Start frame's header: kind, body type, transfer id, message kind, request id, size. */
const START_BYTES = 15;

export interface Frame {
  readonly kind: FrameKind;
  /** The unicast request id, echoed by its reply; 0 for broadcasts. */
  readonly id: number;
  readonly body: Body;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });

/**
 * A message as sent: its body (strings stay strings, bytes are copied, so
 * that the caller may reuse its buffer at once) and, when it is too large
 * for one frame, its bytes for a transfer (UTF-8 for text).
 */
export interface Message {
  readonly body: Body;
  readonly bytes: Uint8Array | undefined;
  /** The body's size in bytes (UTF-8 for text). */
  readonly size: number;
}

/** `data` as a `Message`. Throws `LimitExceeded` past `maxBytes` (bytes: before copying them). */
export function toMessage(data: Data, maxBytes: number): Message {
  if (typeof data !== 'string' && data.byteLength > maxBytes) {
    throw new RpcError(ErrorCode.LimitExceeded, `a message may carry at most ${maxBytes} bytes, not ${data.byteLength}`);
  }
  const body =
    typeof data === 'string'
      ? data
      : data instanceof ArrayBuffer
        ? new Uint8Array(data.slice(0))
        : new Uint8Array(data.buffer, data.byteOffset, data.byteLength).slice();
  // A UTF-8 string has at most 3 bytes per UTF-16 unit: encode only when it may be too long.
  const bytes = typeof body !== 'string' ? body : encoder.encode(body);
  const size = bytes.byteLength;
  if (size > maxBytes) {
    throw new RpcError(ErrorCode.LimitExceeded, `a message may carry at most ${maxBytes} bytes, not ${size}`);
  }
  return { body, bytes: size > MAX_BODY_BYTES ? bytes : undefined, size };
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

export function encodeStart(id: number, announcement: Announcement): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(START_BYTES);
  const header = new DataView(out.buffer);
  header.setUint8(0, FrameKind.Start);
  header.setUint8(1, announcement.text ? BodyType.Text : BodyType.Bytes);
  header.setUint32(2, id);
  header.setUint8(6, announcement.kind);
  header.setUint32(7, announcement.requestId);
  header.setUint32(11, announcement.size);
  return out;
}

/**
 * A chunk frame, written into `scratch` (which must have room for the header
 * and `bytes`): a view of it, valid until `scratch` is written again. One
 * buffer per transfer, not one per chunk: the garbage of a 64 MiB transfer
 * would otherwise make the collector stop the page now and then.
 */
export function encodeChunk(scratch: Uint8Array<ArrayBuffer>, id: number, bytes: Uint8Array): Uint8Array<ArrayBuffer> {
  const header = new DataView(scratch.buffer, scratch.byteOffset);
  header.setUint8(0, FrameKind.Chunk);
  header.setUint8(1, 0);
  header.setUint32(2, id);
  scratch.set(bytes, HEADER_BYTES);
  return scratch.subarray(0, HEADER_BYTES + bytes.byteLength);
}

/** The bytes a chunk frame of `chunkBytes` takes. */
export function chunkFrameBytes(chunkBytes: number): number {
  return HEADER_BYTES + chunkBytes;
}

export function encodeAbort(id: number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(HEADER_BYTES);
  const header = new DataView(out.buffer);
  header.setUint8(0, FrameKind.Abort);
  header.setUint32(2, id);
  return out;
}

/** A header-only frame of `kind`: the links' own Hello and Moved. */
export function encodeLinkFrame(kind: FrameKind.Hello | FrameKind.Moved): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(HEADER_BYTES);
  out[0] = kind;
  return out;
}

/** An Ack frame for `bytes` bytes of chunk frames (at most 2^32 − 1). */
export function encodeAck(bytes: number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(HEADER_BYTES);
  const header = new DataView(out.buffer);
  header.setUint8(0, FrameKind.Ack);
  header.setUint32(2, bytes);
  return out;
}

/** The bytes an Ack frame acknowledges, or undefined when the message is none. */
export function decodeAck(message: unknown): number | undefined {
  if (!(message instanceof ArrayBuffer) || message.byteLength !== HEADER_BYTES) return undefined;
  const header = new DataView(message);
  return header.getUint8(0) === FrameKind.Ack ? header.getUint32(2) : undefined;
}

/** Whether `message` (sent or received) is a transfer's chunk frame. */
export function isChunkFrame(message: ArrayBuffer | Uint8Array): boolean {
  if (message.byteLength < HEADER_BYTES) return false;
  const bytes = message instanceof Uint8Array ? message : new Uint8Array(message, 0, 1);
  return bytes[0] === FrameKind.Chunk;
}

/** Whether a DataChannel message is the header-only frame of `kind`. */
export function isLinkFrame(message: unknown, kind: FrameKind.Hello | FrameKind.Moved): boolean {
  return message instanceof ArrayBuffer && message.byteLength === HEADER_BYTES && new Uint8Array(message)[0] === kind;
}

/** A DataChannel message: a whole frame, or a part of a transfer. */
export type ChannelMessage =
  | { readonly kind: 'frame'; readonly frame: Frame }
  | { readonly kind: 'start'; readonly id: number; readonly announcement: Announcement }
  | { readonly kind: 'chunk'; readonly id: number; readonly bytes: Uint8Array }
  | { readonly kind: 'abort'; readonly id: number };

/** What a DataChannel message holds, or undefined when it is not one of ours. */
export function decodeChannelMessage(message: unknown): ChannelMessage | undefined {
  if (!(message instanceof ArrayBuffer) || message.byteLength < HEADER_BYTES) return undefined;
  const header = new DataView(message);
  const id = header.getUint32(2);
  switch (header.getUint8(0)) {
    case FrameKind.Start: {
      const kind = header.getUint8(6);
      if (message.byteLength < START_BYTES || !(kind in MessageKind) || kind === MessageKind.Error) return undefined;
      const text = header.getUint8(1) === BodyType.Text;
      return { kind: 'start', id, announcement: { kind, requestId: header.getUint32(7), text, size: header.getUint32(11) } };
    }
    case FrameKind.Chunk:
      return { kind: 'chunk', id, bytes: new Uint8Array(message, HEADER_BYTES) };
    case FrameKind.Abort:
      return { kind: 'abort', id };
    default: {
      const frame = decodeFrame(message);
      return frame === undefined ? undefined : { kind: 'frame', frame };
    }
  }
}

/** The frame in a DataChannel message, or undefined when it is not a whole frame of ours. */
export function decodeFrame(message: unknown): Frame | undefined {
  if (!(message instanceof ArrayBuffer) || message.byteLength < HEADER_BYTES) return undefined;
  const header = new DataView(message);
  const kind = header.getUint8(0);
  const type = header.getUint8(1);
  if (!(kind in FrameKind) || kind > FrameKind.Error || !(type in BodyType)) return undefined;
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

/** The relayed kinds of message a transfer carries, by their `RelayChunk.kind`. */
const CHUNK_KINDS: Readonly<Record<string, MessageKind>> = {
  broadcast: MessageKind.Broadcast,
  unicast: MessageKind.Request,
  reply: MessageKind.Reply,
};

/** One chunk relayed: the transfer's first (seq 0) announces it. */
export function toRelayChunk(id: number, seq: number, bytes: Uint8Array, announcement: Announcement): { chunk: RelayChunk } {
  const chunk: RelayChunk = { id, seq, base64: toBase64(bytes) };
  if (seq > 0) return { chunk };
  const kind = announcement.kind === MessageKind.Request ? 'unicast' : announcement.kind === MessageKind.Reply ? 'reply' : 'broadcast';
  return { chunk: { ...chunk, kind, text: announcement.text, size: announcement.size } };
}

/** A relayed chunk, checked. */
export interface ParsedChunk {
  readonly id: number;
  readonly seq: number;
  readonly bytes: Uint8Array;
  /** Present on seq 0. */
  readonly announcement: Announcement | undefined;
}

function parseChunk(chunk: Record<string, unknown>): ParsedChunk | undefined {
  const { id, seq, base64, kind, text, size } = chunk;
  if (!isCount(id) || !isCount(seq) || typeof base64 !== 'string') return undefined;
  let bytes: Uint8Array;
  try {
    bytes = fromBase64(base64);
  } catch {
    return undefined;
  }
  if (seq > 0) return { id, seq, bytes, announcement: undefined };
  const messageKind = typeof kind === 'string' ? CHUNK_KINDS[kind] : undefined;
  if (messageKind === undefined || typeof text !== 'boolean' || !isCount(size)) return undefined;
  return { id, seq, bytes, announcement: { kind: messageKind, requestId: 0, text, size } };
}

function isCount(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

/** What a relayed `data` holds, checked; undefined when it is none of the `RelayPayload` shapes. */
export type Relayed =
  | { readonly kind: 'description'; readonly description: RTCSessionDescriptionInit }
  | { readonly kind: 'candidate'; readonly candidate: RTCIceCandidateInit }
  /** The peer speaks no WebRTC: `{"signal": {"webrtc": false}}`. */
  | { readonly kind: 'nowebrtc' }
  | { readonly kind: 'broadcast'; readonly body: Body }
  | { readonly kind: 'unicast'; readonly body: Body }
  | { readonly kind: 'chunk'; readonly chunk: ParsedChunk }
  | { readonly kind: 'abort'; readonly id: number };

export function parseRelayed(data: unknown): Relayed | undefined {
  if (!isRecord(data)) return undefined;
  const { signal, broadcast, unicast, chunk, abort } = data;
  if (isRecord(chunk)) {
    const parsed = parseChunk(chunk);
    return parsed === undefined ? undefined : { kind: 'chunk', chunk: parsed };
  }
  if (isCount(abort)) return { kind: 'abort', id: abort };
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
 * What a relayed unicast was answered with: the reply's body, or the id of
 * the transfer that carries it (`{"chunked": id}`); undefined when it is
 * neither.
 */
export function parseUnicastAnswer(value: unknown): { readonly body: Body } | { readonly transfer: number } | undefined {
  if (isRecord(value) && isCount(value['chunked'])) return { transfer: value['chunked'] };
  const body = fromRelayBody(value);
  return body === undefined ? undefined : { body };
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

/**
 * The engine's own base64 (`Uint8Array.prototype.toBase64`,
 * `Uint8Array.fromBase64`; Chromium 140+), where it has it: no binary string
 * in between, which matters at a transfer's rate of chunks.
 */
const nativeBase64 = Uint8Array as unknown as {
  readonly fromBase64?: (text: string) => Uint8Array;
  readonly prototype: { readonly toBase64?: (this: Uint8Array) => string };
};

function toBase64(bytes: Uint8Array): string {
  const native = nativeBase64.prototype.toBase64;
  if (native !== undefined) return native.call(bytes);
  let binary = '';
  for (let i = 0; i < bytes.length; i += BASE64_CHUNK_BYTES) {
    binary += String.fromCharCode(...bytes.subarray(i, i + BASE64_CHUNK_BYTES));
  }
  return btoa(binary);
}

function fromBase64(text: string): Uint8Array {
  if (nativeBase64.fromBase64 !== undefined) return nativeBase64.fromBase64(text);
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}
