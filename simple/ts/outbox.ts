/**
 * Per peer, the messages that wait while its link is 'connecting': they go
 * out in send order once the link is 'direct' or 'relayed'.
 */
import type { UserId } from '../../interfaces/api';
import type { Call } from './calls';
import type { Body } from './payload';

/** One message for one peer. */
export type Outgoing = { readonly kind: 'broadcast'; readonly body: Body } | { readonly kind: 'unicast'; readonly call: Call };

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
