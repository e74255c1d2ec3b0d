/**
 * Large messages: a body too big for one DataChannel frame or one relay
 * travels as a transfer, a start and numbered chunks that the receiver
 * puts back together (format: `RelayPayload` in interfaces/api.d.ts).
 *
 * - `Slicer`: one message to one peer, cut into chunks on demand (the
 *   body is held once; no chunk exists before the path has room for it).
 * - `Assembly`: one message from one peer being put back together, in a
 *   buffer of exactly the announced size (text: decoded chunk by chunk),
 *   dropped when the sender stalls.
 */
import { ErrorCode, RpcError } from './errors';
import type { Body } from './payload';

/** What a transfer carries: the frame kinds of a whole message. */
export enum MessageKind {
  Broadcast = 0,
  Request = 1,
  Reply = 2,
  Error = 3,
}

/** On a DataChannel: one chunk's bytes (Chromium takes 256 KiB messages; smaller ones interleave better). */
export const CHANNEL_CHUNK_BYTES = 64 * 1024;
/**
 * Through the server: one chunk's bytes. Base64 (4/3) and the JSON-RPC
 * envelope keep the relay at about 86 KiB, well under the server's 1 MiB
 * message limit; small, so that a small message relayed meanwhile waits
 * behind little (2 chunks, `RELAY_WINDOW`: ~170 KiB, some 30 ms at the
 * relay's pace on a loaded machine).
 */
export const RELAY_CHUNK_BYTES = 64 * 1024;
/**
 * Chunk relays a transfer has unanswered at once: each is a relay request
 * that the receiver answers once it holds the chunk, so that what waits in
 * the server for one receiver stays near this many chunks (about 170 KiB),
 * and a small message sent meanwhile waits behind no more than that.
 */
export const RELAY_WINDOW = 2;
/** The default `maxMessageBytes`: the largest message sent or taken. */
export const DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024;
/** An incoming transfer that gets no chunk for this long is dropped. */
export const TRANSFER_STALL_MS = 30_000;

/** The facts a transfer's start announces. */
export interface Announcement {
  readonly kind: MessageKind;
  /** The unicast request id (DataChannel) this message is, or answers; 0 otherwise. */
  readonly requestId: number;
  readonly text: boolean;
  readonly size: number;
}

/** What a sender wants to hear about one message: bytes handed to the path so far. */
export type Progress = (sentBytes: number) => void;

/** One message to one peer, cut into chunks as the path takes them. */
export class Slicer {
  private offset = 0;

  constructor(
    private readonly bytes: Uint8Array,
    private readonly progress: Progress,
  ) {}

  /** The next chunk, at most `limit` bytes; undefined once all are out. */
  next(limit: number): Uint8Array | undefined {
    if (this.done) return undefined;
    const chunk = this.bytes.subarray(this.offset, this.offset + limit);
    this.offset += chunk.byteLength;
    this.progress(this.offset);
    return chunk;
  }

  /** Whether every chunk has been taken. */
  get done(): boolean {
    return this.offset >= this.bytes.byteLength;
  }
}

/**
 * A message from one peer being put back together. Text is decoded as its
 * chunks come, into a string built by concatenation (cheap in the engine):
 * decoding tens of MiB at the end would stop the page for a second, and
 * every message behind it with it.
 */
export class Assembly {
  /** The bytes so far; undefined for text. */
  private readonly buffer: Uint8Array<ArrayBuffer> | undefined;
  private readonly decoder: TextDecoder | undefined;
  private text = '';
  private received = 0;
  private timer: ReturnType<typeof setTimeout>;

  /** @param stalled called when no chunk came for `TRANSFER_STALL_MS`. */
  constructor(
    readonly announcement: Announcement,
    private readonly stalled: () => void,
  ) {
    if (announcement.text) this.decoder = new TextDecoder('utf-8', { fatal: true });
    else this.buffer = new Uint8Array(announcement.size);
    this.timer = setTimeout(stalled, TRANSFER_STALL_MS);
  }

  /**
   * Adds the next chunk; returns the whole body once the last one came.
   * Throws `InvalidParams` when the chunks add up to more than announced,
   * or when text is not UTF-8.
   */
  add(chunk: Uint8Array): Body | undefined {
    if (this.received + chunk.byteLength > this.announcement.size) {
      this.drop();
      throw new RpcError(ErrorCode.InvalidParams, 'the chunks exceed the announced size');
    }
    this.take(chunk);
    this.received += chunk.byteLength;
    clearTimeout(this.timer);
    if (this.received < this.announcement.size) {
      this.timer = setTimeout(this.stalled, TRANSFER_STALL_MS);
      return undefined;
    }
    if (this.buffer !== undefined) return this.buffer;
    this.take(undefined);
    return this.text;
  }

  /** Keeps `chunk`'s bytes, or ends the text (undefined). */
  private take(chunk: Uint8Array | undefined): void {
    if (this.buffer !== undefined) {
      if (chunk !== undefined) this.buffer.set(chunk, this.received);
      return;
    }
    try {
      this.text += this.decoder?.decode(chunk, { stream: chunk !== undefined }) ?? '';
    } catch {
      this.drop();
      throw new RpcError(ErrorCode.InvalidParams, 'a text message is not UTF-8');
    }
  }

  /** Stops the stall timer: the buffer goes with the last reference to this. */
  drop(): void {
    clearTimeout(this.timer);
  }
}

/** Transfer ids: 32-bit, per sender and direction; after the last they start over at 1. */
export class TransferIds {
  private last = 0;

  next(): number {
    this.last = this.last === 0xffff_ffff ? 1 : this.last + 1;
    return this.last;
  }
}
