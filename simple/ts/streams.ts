/**
 * Sending one transfer (transfer.ts) to one peer, on either path:
 * `ChannelTransfer` feeds a DataChannel as it drains (the link takes turns
 * between transfers), `RelayTransfer` relays chunks through the server with
 * at most `RELAY_WINDOW` of them unanswered.
 */
import { toRpcError, type RpcError } from './errors';
import type { FrameSource } from './link';
import type { Job } from './outbox';
import { chunkFrameBytes, encodeAbort, encodeChunk, encodeStart, toRelayChunk } from './payload';
import { CHANNEL_CHUNK_BYTES, RELAY_CHUNK_BYTES, RELAY_WINDOW, type Announcement, Slicer } from './transfer';

/** A transfer on a DataChannel: a start frame, then chunk frames, made as the channel has room. */
export class ChannelTransfer implements FrameSource {
  private readonly slicer: Slicer;
  /** Every chunk frame is written here: the channel copies what it is sent. */
  private readonly scratch = new Uint8Array(chunkFrameBytes(CHANNEL_CHUNK_BYTES));
  private started = false;
  private ended = false;

  /** @param onInterrupted the link stopped being direct before the transfer was done. */
  constructor(
    private readonly id: number,
    private readonly announcement: Announcement,
    bytes: Uint8Array,
    private readonly job: Job,
    private readonly onInterrupted: () => void,
  ) {
    this.slicer = new Slicer(bytes, (sent) => job.progress(sent));
  }

  next(): Uint8Array<ArrayBuffer> | undefined {
    if (this.ended) return undefined;
    if (this.job.signal?.aborted === true) {
      this.ended = true;
      // The receiver drops what it holds; before the start it holds nothing.
      return this.started ? encodeAbort(this.id) : undefined;
    }
    if (!this.started) {
      this.started = true;
      return encodeStart(this.id, this.announcement);
    }
    const chunk = this.slicer.next(CHANNEL_CHUNK_BYTES);
    if (chunk === undefined) return undefined;
    const frame = encodeChunk(this.scratch, this.id, chunk);
    if (this.slicer.done) {
      this.ended = true;
      this.job.finish();
    }
    return frame;
  }

  interrupted(): void {
    if (this.ended) return;
    this.ended = true;
    this.onInterrupted();
  }
}

/** What a relayed transfer needs of its group: the server's `relay` to its peer. */
export interface RelayRoute {
  /** A `relay` request to the peer; resolves with its answer. */
  call(data: unknown): Promise<unknown>;
  /** A `relay` notification to the peer. */
  notify(data: unknown): void;
}

/**
 * A transfer through the server: each chunk a `relay` request, answered
 * once the peer holds it; at most `RELAY_WINDOW` unanswered, so what waits
 * in the server for this peer stays bounded and the sender's message rate
 * follows the receiver's pace.
 */
export class RelayTransfer {
  private readonly slicer: Slicer;
  private seq = 0;
  private unanswered = 0;
  private ended = false;

  /** @param lastAnswer the peer's answer to the last chunk (a unicast's reply). */
  constructor(
    private readonly id: number,
    private readonly announcement: Announcement,
    bytes: Uint8Array,
    private readonly route: RelayRoute,
    private readonly job: Job,
    private readonly lastAnswer: (answer: unknown) => void,
  ) {
    this.slicer = new Slicer(bytes, (sent) => job.progress(sent));
    job.signal?.addEventListener('abort', () => this.abort(), { once: true });
  }

  /** Sends the first chunks; the rest follow their answers. */
  start(): void {
    this.pump();
  }

  /** Gives the transfer up with `error` (the peer left, say); the peer is told to drop it. */
  stop(error: RpcError): void {
    if (this.ended) return;
    this.ended = true;
    this.job.finish(error);
    this.route.notify({ abort: this.id });
  }

  private abort(): void {
    if (this.ended) return;
    this.ended = true;
    if (this.seq > 0) this.route.notify({ abort: this.id });
  }

  private pump(): void {
    while (!this.ended && this.unanswered < RELAY_WINDOW && !this.slicer.done) {
      const chunk = this.slicer.next(RELAY_CHUNK_BYTES);
      if (chunk === undefined) return;
      const last = this.slicer.done;
      const payload = toRelayChunk(this.id, this.seq++, chunk, this.announcement);
      this.unanswered++;
      this.route.call(payload).then(
        (answer) => {
          this.unanswered--;
          if (this.ended) return;
          if (!last) {
            this.pump();
            return;
          }
          this.ended = true;
          this.job.finish();
          this.lastAnswer(answer);
        },
        (error: unknown) => {
          this.unanswered--;
          if (this.ended) return;
          this.ended = true;
          this.job.finish(toRpcError(error));
        },
      );
    }
  }
}
