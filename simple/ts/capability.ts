import type { UserId } from '../../interfaces/api';

/** The capability bits; see `GroupCapability` in interfaces/api.d.ts. */
export enum GroupCapability {
  BroadcastOwner = 1,
  BroadcastEveryone = 2,
  UnicastOwner = 4,
  UnicastEveryone = 8,
}

/** What a group is created with when `createGroup` gets no capability (as the server). */
export const DEFAULT_CAPABILITY = GroupCapability.BroadcastEveryone | GroupCapability.UnicastEveryone;

/** The facts the pair rule needs: who owns the group and what it allows. */
export interface Rules {
  readonly capability: number;
  readonly owner: UserId;
}

/** The server's pair rule, for one kind of message (its Owner and Everyone bits). */
function allows(rules: Rules, ownerBit: number, everyoneBit: number, a: UserId, b: UserId): boolean {
  if (a === b) return false;
  if ((rules.capability & everyoneBit) !== 0) return true;
  return (rules.capability & ownerBit) !== 0 && (a === rules.owner || b === rules.owner);
}

export function mayBroadcast(rules: Rules, a: UserId, b: UserId): boolean {
  return allows(rules, GroupCapability.BroadcastOwner, GroupCapability.BroadcastEveryone, a, b);
}

export function mayUnicast(rules: Rules, a: UserId, b: UserId): boolean {
  return allows(rules, GroupCapability.UnicastOwner, GroupCapability.UnicastEveryone, a, b);
}

/** A pair gets a link when it may exchange anything: exactly the pairs the server lets signal. */
export function mayLink(rules: Rules, a: UserId, b: UserId): boolean {
  return mayBroadcast(rules, a, b) || mayUnicast(rules, a, b);
}
