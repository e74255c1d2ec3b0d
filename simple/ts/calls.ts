/**
 * Unicast correlation on DataChannels: a request frame carries an id that
 * its reply echoes; these are the unicasts waiting for theirs. (A relayed
 * unicast needs none of this: it is a JSON-RPC request, the server's
 * `relay`, and json-rpc-2.0 correlates it.)
 */
import type { Received, UserId } from '../../interfaces/api';
import { ErrorCode, RpcError } from './errors';

/** A unicast waiting for its reply. */
export interface Call {
  readonly peer: UserId;
  readonly resolve: (reply: Received) => void;
  readonly reject: (error: RpcError) => void;
}

/** Frame ids are 32-bit; after this one they start over at 1. */
const MAX_FRAME_ID = 0xffff_ffff;

export class PendingCalls {
  private readonly waiting = new Map<number, { readonly call: Call; timer: ReturnType<typeof setTimeout> | undefined }>();
  private lastId = 0;

  /** @param timeoutMs how long a call waits for its reply before it rejects with `RelayTimeout`. */
  constructor(private readonly timeoutMs: number) {}

  /** The id for the next request frame. */
  nextId(): number {
    this.lastId = this.lastId === MAX_FRAME_ID ? 1 : this.lastId + 1;
    return this.lastId;
  }

  /**
   * `call` goes out as request `id`: it waits for the reply; its timeout
   * starts with `arm` (a chunked request may take a while to send).
   */
  expect(id: number, call: Call): void {
    this.waiting.set(id, { call, timer: undefined });
  }

  /** Request `id` is all sent: from now on its reply has `timeoutMs` to come. */
  arm(id: number): void {
    const pending = this.waiting.get(id);
    if (pending === undefined) return;
    clearTimeout(pending.timer);
    pending.timer = setTimeout(() => {
      this.waiting.delete(id);
      pending.call.reject(new RpcError(ErrorCode.RelayTimeout, `${pending.call.peer} did not answer in time`));
    }, this.timeoutMs);
  }

  /** The reply to request `id` is arriving in chunks: the transfer's own stall timeout applies. */
  hold(peer: UserId, id: number): void {
    const pending = this.waiting.get(id);
    if (pending?.call.peer === peer) clearTimeout(pending.timer);
  }

  /**
   * The reply (or error) to request `id` came from `peer`; one from another
   * peer, or for an id no one waits for, is ignored.
   */
  settle(peer: UserId, id: number, outcome: { readonly reply: Received } | { readonly error: RpcError }): void {
    const pending = this.waiting.get(id);
    if (pending === undefined || pending.call.peer !== peer) return;
    this.waiting.delete(id);
    clearTimeout(pending.timer);
    if ('reply' in outcome) pending.call.resolve(outcome.reply);
    else pending.call.reject(outcome.error);
  }

  /** The channel to `peer` is gone: no reply can come back on it. */
  failPeer(peer: UserId, error: RpcError): void {
    for (const [id, pending] of this.waiting) {
      if (pending.call.peer !== peer) continue;
      this.waiting.delete(id);
      clearTimeout(pending.timer);
      pending.call.reject(error);
    }
  }
}
