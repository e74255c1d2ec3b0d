// The TypeScript pair rule (simple/ts/capability.ts) against the Rust one
// (`Capability::allows` in interfaces/src/capability.rs), as the table
// typings/pairRule.json generated from it, for every capability the server
// accepts and every kind of pair.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { before, test } from 'node:test';
import { id, loadClient } from './unit.mjs';

/** `{capability, oneIsOwner, broadcast, unicast, link}` rows, one per capability and owner flag. */
const PAIR_RULE = JSON.parse(readFileSync(new URL('../../typings/pairRule.json', import.meta.url), 'utf8'));

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

test('a kind of message passes a pair exactly where the Rust pair rule lets it, and never a member with itself', () => {
  const { mayBroadcast, mayUnicast, mayLink } = client;
  assert.equal(PAIR_RULE.length, 30, 'every capability, with and without the owner in the pair');
  for (let capability = 1; capability <= 15; capability++) {
    const rules = { owner: OWNER, capability };
    for (const { a, b, oneIsOwner, same } of PAIRS) {
      const row = PAIR_RULE.find((r) => r.capability === capability && r.oneIsOwner === oneIsOwner);
      assert.ok(row, `typings/pairRule.json has capability ${capability}, oneIsOwner ${oneIsOwner}`);
      assert.equal(row.link, row.broadcast || row.unicast, `link is either kind, capability ${capability}`);
      const broadcast = !same && row.broadcast;
      const unicast = !same && row.unicast;
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
