// The TypeScript pair rule (simple/ts/capability.ts) against the rule as
// interfaces/api.d.ts states it, for every capability the server accepts
// and every kind of pair.
import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import { id, loadClient } from './unit.mjs';

let client;
before(async () => {
  client = await loadClient();
});

const OWNER = id(1);
const ALICE = id(2);
const BOB = id(3);
/** Every pair shape: owner and member (both orders), two members, one member with itself. */
const PAIRS = [
  { a: OWNER, b: ALICE, oneIsOwner: true, same: false },
  { a: ALICE, b: OWNER, oneIsOwner: true, same: false },
  { a: ALICE, b: BOB, oneIsOwner: false, same: false },
  { a: ALICE, b: ALICE, oneIsOwner: false, same: true },
  { a: OWNER, b: OWNER, oneIsOwner: true, same: true },
];

test('a kind of message passes a pair when its Everyone bit is set, or its Owner bit and one of the two owns the group', () => {
  const { GroupCapability: C, mayBroadcast, mayUnicast, mayLink } = client;
  for (let capability = 1; capability <= 15; capability++) {
    const rules = { owner: OWNER, capability };
    for (const { a, b, oneIsOwner, same } of PAIRS) {
      const kind = (ownerBit, everyoneBit) =>
        !same && ((capability & everyoneBit) !== 0 || (oneIsOwner && (capability & ownerBit) !== 0));
      const broadcast = kind(C.BroadcastOwner, C.BroadcastEveryone);
      const unicast = kind(C.UnicastOwner, C.UnicastEveryone);
      const where = `capability ${capability}, ${a === OWNER ? 'owner' : 'member'} → ${b === OWNER ? 'owner' : 'member'}${same ? ' (itself)' : ''}`;
      assert.equal(mayBroadcast(rules, a, b), broadcast, `broadcast, ${where}`);
      assert.equal(mayUnicast(rules, a, b), unicast, `unicast, ${where}`);
      assert.equal(mayLink(rules, a, b), broadcast || unicast, `link, ${where}`);
    }
  }
});

test('the default capability is BroadcastEveryone | UnicastEveryone, as the server', () => {
  const { DEFAULT_CAPABILITY, GroupCapability: C } = client;
  assert.equal(DEFAULT_CAPABILITY, C.BroadcastEveryone | C.UnicastEveryone);
  assert.equal(DEFAULT_CAPABILITY, 10);
});
