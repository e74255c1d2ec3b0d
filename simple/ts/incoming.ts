/**
 * What a group holds of messages coming in pieces: transfers being put back
 * together (`Transfers`, one per path: ids are per path), and the chunked
 * replies to its relayed unicasts (`ChunkedReplies`).
 */
import type { UserId } from '../../interfaces/api';
import type { Call } from './calls';
import { ErrorCode, RpcError } from './errors';
import type { Body } from './payload';
import { type Announcement, Assembly, TRANSFER_STALL_MS } from './transfer';

/** One transfer coming in: its assembly, and the chunk it expects next. */
interface Entry {
  readonly assembly: Assembly;
  seq: number;
}

/** A whole message a transfer carried. */
export interface Whole {
  readonly announcement: Announcement;
  readonly body: Body;
}

/** Transfers coming in on one path, by sender and transfer id. */
export class Transfers {
  private readonly byPeer = new Map<UserId, Map<number, Entry>>();

  /** @param maxBytes the largest message taken. */
  constructor(private readonly maxBytes: number) {}

  /**
   * Transfer `id` from `from` begins (one of the same id is dropped).
   * Throws `LimitExceeded` past `maxBytes`, before anything is held.
   * `stalled` runs when it gets no chunk for `TRANSFER_STALL_MS` (it is
   * dropped by then).
   */
  start(from: UserId, id: number, announcement: Announcement, stalled: () => void): void {
    this.drop(from, id);
    if (announcement.size > this.maxBytes) {
      throw new RpcError(
        ErrorCode.LimitExceeded,
        `this member takes messages of at most ${this.maxBytes} bytes, not ${announcement.size}`,
      );
    }
    const assembly = new Assembly(announcement, () => {
      this.drop(from, id);
      stalled();
    });
    const byId = this.byPeer.get(from) ?? new Map<number, Entry>();
    this.byPeer.set(from, byId.set(id, { assembly, seq: 0 }));
  }

  /**
   * Adds the next chunk of transfer `id`; the whole message with its last
   * one (the transfer is then done). `seq`, when given, must be the one
   * expected. A chunk of no transfer is undefined with `seq` left out (a
   * DataChannel drops it), `InvalidParams` with it; a broken transfer
   * (chunks out of order or past the size, text not UTF-8) is dropped and
   * throws `InvalidParams`.
   */
  add(from: UserId, id: number, bytes: Uint8Array, seq?: number): Whole | undefined {
    const entry = this.byPeer.get(from)?.get(id);
    if (entry === undefined) {
      if (seq === undefined) return undefined;
      throw new RpcError(ErrorCode.InvalidParams, `no transfer ${id} from ${from}`);
    }
    if (seq !== undefined && seq !== entry.seq) {
      this.drop(from, id);
      throw new RpcError(ErrorCode.InvalidParams, `chunk ${seq} of transfer ${id} came out of order`);
    }
    entry.seq++;
    let body: Body | undefined;
    try {
      body = entry.assembly.add(bytes);
    } catch (error) {
      this.drop(from, id);
      throw error;
    }
    if (body === undefined) return undefined;
    this.drop(from, id);
    return { announcement: entry.assembly.announcement, body };
  }

  /** Whether transfer `id` from `from` is coming in. */
  has(from: UserId, id: number): boolean {
    return this.byPeer.get(from)?.has(id) === true;
  }

  drop(from: UserId, id: number): void {
    const byId = this.byPeer.get(from);
    byId?.get(id)?.assembly.drop();
    byId?.delete(id);
    if (byId?.size === 0) this.byPeer.delete(from);
  }

  /** Everything from `from` (it left, or the link it came on is gone). */
  dropPeer(from: UserId): void {
    for (const { assembly } of this.byPeer.get(from)?.values() ?? []) assembly.drop();
    this.byPeer.delete(from);
  }

  clear(): void {
    for (const from of [...this.byPeer.keys()]) this.dropPeer(from);
  }

  /** Senders with a transfer coming in. */
  get size(): number {
    return this.byPeer.size;
  }
}

/** A relayed unicast waiting for its chunked reply, or a reply that came before the answer naming it. */
type Wait =
  | { readonly call: Call; timer: ReturnType<typeof setTimeout> }
  | { readonly body: Body; readonly timer: ReturnType<typeof setTimeout> };

/**
 * Chunked replies to relayed unicasts: the answer `{"chunked": id}` and the
 * reply's transfer meet here in either order (a relay's answer and the
 * target's relays travel separately).
 */
export class ChunkedReplies {
  private readonly waits = new Map<string, Wait>();

  /** @param receiving whether reply transfer `id` from `peer` is still coming in. */
  constructor(private readonly receiving: (peer: UserId, id: number) => boolean) {}

  /** The answer said `call`'s reply is transfer `id` from `peer`. */
  wait(peer: UserId, id: number, call: Call): void {
    const key = `${peer}:${id}`;
    const arrived = this.waits.get(key);
    if (arrived !== undefined && 'body' in arrived) {
      clearTimeout(arrived.timer);
      this.waits.delete(key);
      call.resolve(arrived.body);
      return;
    }
    this.waits.set(key, { call, timer: this.timer(peer, id) });
  }

  /** Reply transfer `id` from `peer` is whole. */
  arrived(peer: UserId, id: number, body: Body): void {
    const key = `${peer}:${id}`;
    const wait = this.waits.get(key);
    if (wait !== undefined && 'call' in wait) {
      clearTimeout(wait.timer);
      this.waits.delete(key);
      wait.call.resolve(body);
      return;
    }
    // Its `{"chunked": id}` answer is still on its way.
    this.waits.set(key, { body, timer: this.timer(peer, id) });
  }

  /** The group is over: waiting unicasts reject with `reason`. */
  clear(reason: RpcError): void {
    for (const wait of this.waits.values()) {
      clearTimeout(wait.timer);
      if ('call' in wait) wait.call.reject(reason);
    }
    this.waits.clear();
  }

  get size(): number {
    return this.waits.size;
  }

  /** A reply that neither arrives nor makes progress, or that no answer claims, is given up. */
  private timer(peer: UserId, id: number): ReturnType<typeof setTimeout> {
    const key = `${peer}:${id}`;
    return setTimeout(() => {
      const wait = this.waits.get(key);
      if (wait === undefined) return;
      if ('call' in wait && this.receiving(peer, id)) {
        wait.timer = this.timer(peer, id);
        return;
      }
      this.waits.delete(key);
      if ('call' in wait) wait.call.reject(new RpcError(ErrorCode.RelayTimeout, `${peer} did not answer in time`));
    }, TRANSFER_STALL_MS);
  }
}
