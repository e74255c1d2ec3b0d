/**
 * Outgoing messages: per peer, the ones that wait while its link is
 * 'connecting' (they go out in send order once it is 'direct' or
 * 'relayed'), and the `Job` each one reports its progress and end to.
 */
import type { UserId } from '../../interfaces/api';
import type { Call } from './calls';
import type { RpcError } from './errors';
import type { Message } from './payload';

/** How sending one message to one peer goes, told to whoever sent it. */
export interface Job {
  /** Aborts the send: no more of it leaves, and the receiver drops what it has. */
  readonly signal: AbortSignal | undefined;
  /** Bytes of the message handed to the path so far (a restart counts from 0 again). */
  progress(sent: number): void;
  /** All of it is handed over (no error), or it failed. Only the first call counts. */
  finish(error?: RpcError): void;
}

/** One message for one peer. */
export type Outgoing =
  | { readonly kind: 'broadcast'; readonly message: Message; readonly job: Job }
  | { readonly kind: 'unicast'; readonly message: Message; readonly job: Job; readonly call: Call };

export class Outboxes {
  private readonly boxes = new Map<UserId, Outgoing[]>();

  /** A link to `peer` opened: its messages may wait here. */
  open(peer: UserId): void {
    this.boxes.set(peer, []);
  }

  /** Keeps `message` until `release(peer)`; dropped when `peer` has no outbox. */
  hold(peer: UserId, message: Outgoing): void {
    this.boxes.get(peer)?.push(message);
  }

  /** What waits for `peer`, in send order; the outbox stays open, empty. */
  release(peer: UserId): Outgoing[] {
    const waiting = this.boxes.get(peer) ?? [];
    if (this.boxes.has(peer)) this.boxes.set(peer, []);
    return waiting;
  }

  /** The link to `peer` closed: what waited is returned, the outbox is gone. */
  close(peer: UserId): Outgoing[] {
    const waiting = this.boxes.get(peer) ?? [];
    this.boxes.delete(peer);
    return waiting;
  }
}

/** A message that fits one frame is handed over at once: all its bytes, done. */
export function finished(outgoing: Outgoing): void {
  outgoing.job.progress(outgoing.message.size);
  outgoing.job.finish();
}

/** A job whose outcome no one waits for (a unicast's reply). */
export function silentJob(): Job {
  return { signal: undefined, progress: () => undefined, finish: () => undefined };
}

/** A job that reports once: its first `finish` wins. */
export function jobOf(
  signal: AbortSignal | undefined,
  progress: (sent: number) => void,
  done: (error?: RpcError) => void,
): Job {
  let over = false;
  return {
    signal,
    progress,
    finish(error) {
      if (over) return;
      over = true;
      done(error);
    },
  };
}

/**
 * One message's progress over its targets: bytes so far summed over them,
 * each target counted at its furthest (a transfer that starts over through
 * the server does not count twice), reported only when it grows.
 */
export function progressOver(
  size: number,
  targets: number,
  onprogress: ((sent: number, total: number) => void) | undefined,
): (peer: UserId, sent: number) => void {
  const furthest = new Map<UserId, number>();
  let sum = 0;
  return (peer, sent) => {
    const before = furthest.get(peer) ?? 0;
    if (sent <= before) return;
    furthest.set(peer, sent);
    sum += sent - before;
    onprogress?.(sum, size * targets);
  };
}
