// Full-mesh groups in real Chromium: links, broadcast, unicast, bytes,
// joining late, leaving, and disappearing without leaving.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { ALL_BYTES, Peer, formGroup, setUp, waitForMesh } from './harness.mjs';

let env;
before(async () => {
  env = await setUp();
});
after(() => env?.tearDown());

/** Closes a test's pages even when it fails, so the next test starts clean. */
async function closeAll(peers) {
  await Promise.all(peers.map((peer) => peer.close()));
}

for (const n of [2, 4, 6]) {
  test(`${n} pages form a full mesh; every broadcast arrives exactly once; unicasts and bytes round-trip`, async () => {
    const { peers, ids } = await formGroup(env.context, env.server, n);
    try {
      await waitForMesh(peers);
      const views = await Promise.all(peers.map((peer) => peer.view()));
      for (const [i, view] of views.entries()) {
        assert.equal(Object.values(view.links).filter((state) => state === 'direct').length, n - 1, `page ${i}`);
        // Every page sees the server's join order, the owner first.
        assert.deepEqual(view.members, views[0].members);
        assert.equal(view.members[0], ids[0]);
        assert.equal(view.owner, ids[0]);
      }

      // Channels are ordered: once each page's last broadcast arrived
      // everywhere, any duplicate of an earlier one would have arrived too.
      for (const [i, peer] of peers.entries()) {
        await peer.broadcast(`hello from ${i}`);
        await peer.broadcast(Uint8Array.from([i, ...ALL_BYTES]));
        await peer.broadcast(`end from ${i}`);
      }
      await Promise.all(
        peers.flatMap((peer, j) => peers.map((sender, i) => (i === j ? null : peer.waitForMessage(sender.id, `end from ${i}`)))),
      );
      for (const [j, peer] of peers.entries()) {
        const received = await peer.received();
        assert.equal(received.length, 3 * (n - 1), `page ${j} got ${received.length} broadcasts`);
        for (const [i, sender] of peers.entries()) {
          const fromSender = received.filter((m) => m.from === sender.id).map((m) => m.data);
          const expected = i === j ? [] : [`hello from ${i}`, [i, ...ALL_BYTES], `end from ${i}`];
          assert.deepEqual(fromSender, expected, `page ${j} from page ${i}`);
        }
      }

      for (const [i, peer] of peers.entries()) {
        const target = ids[(i + 1) % n];
        assert.deepEqual(await peer.unicast(target, `ping ${i}`), { reply: `re:ping ${i}`, isBytes: false });
        assert.deepEqual(await peer.unicast(target, ALL_BYTES), { reply: [...ALL_BYTES].reverse(), isBytes: true });
      }
    } finally {
      await closeAll(peers);
    }
  });
}

test('bursts of large frames: bytes intact and in order past the channel buffer; over maxMessageBytes is LimitExceeded', async () => {
  const { peers, ids } = await formGroup(env.context, env.server, 2);
  try {
    await waitForMesh(peers);
    const [a, b] = peers;
    const count = 20;
    const size = 240 * 1024;
    // 4.8 MB at once: more than the link lets queue in the channel.
    await a.page.evaluate(
      async ({ count, size }) => {
        const sends = [];
        for (let k = 0; k < count; k++) sends.push(window.peer.group.broadcast(new Uint8Array(size).fill(k)));
        await Promise.all(sends);
      },
      { count, size },
    );
    await b.page.waitForFunction((count) => window.peer.received.length === count, count, { polling: 5, timeout: 30_000 });
    const shapes = await b.page.evaluate(() =>
      window.peer.received.map(({ data }) => [data.bytes.length, data.bytes[0], data.bytes.at(-1)]),
    );
    assert.deepEqual(shapes, Array.from({ length: count }, (_, k) => [size, k, k]));

    const { max, limit } = await a.page.evaluate(() =>
      import('/webrtc-p2p.js').then((m) => ({ max: m.MAX_BODY_BYTES, limit: m.DEFAULT_MAX_MESSAGE_BYTES })),
    );
    const tooBig = await a.page.evaluate(
      (limit) => window.peer.group.broadcast(new Uint8Array(limit + 1)).then(() => null, (error) => error.code),
      limit,
    );
    assert.equal(tooBig, -32010);
    const tooBigUnicast = await a.page.evaluate(
      ({ target, limit }) => window.peer.group.unicast(target, new Uint8Array(limit + 1)).then(() => null, (error) => error.code),
      { target: ids[1], limit },
    );
    assert.equal(tooBigUnicast, -32010);
    // The largest body in one frame, and one byte more (a transfer of two chunks).
    for (const size of [max, max + 1]) {
      const reply = await a.unicast(ids[1], new Uint8Array(size).fill(7));
      assert.equal(reply.reply.length, size);
    }
  } finally {
    await closeAll(peers);
  }
});

test('unicast errors carry their code: no such member, handler threw, no handler, after leaving', async () => {
  const { peers, ids } = await formGroup(env.context, env.server, 2);
  try {
    await waitForMesh(peers);
    const [a, b] = peers;
    const stranger = 'f'.repeat(32);
    assert.equal((await a.unicast(stranger, 'x')).error.code, -32005);
    const threw = (await a.unicast(ids[1], 'throw')).error;
    assert.deepEqual([threw.name, threw.code, threw.message], ['RpcError', -32603, 'handler failed on purpose']);
    await b.page.evaluate(() => {
      window.peer.group.onunicast = null;
    });
    assert.equal((await a.unicast(ids[1], 'x')).error.code, -32601);
    await a.leave();
    assert.equal((await a.unicast(ids[1], 'x')).error.code, -32004);
  } finally {
    await closeAll(peers);
  }
});

test('session errors: no such group, bad capability; close() ends the session for everyone', async () => {
  const { peers, ids } = await formGroup(env.context, env.server, 2);
  try {
    await waitForMesh(peers);
    const [a, b] = peers;
    const codes = await a.page.evaluate(async () => {
      const codeOf = (promise) => promise.then(() => null, (error) => error.code);
      return {
        noSuchGroup: await codeOf(window.peer.service.joinGroup('0'.repeat(32))),
        badCapability: await codeOf(window.peer.service.createGroup(16)),
      };
    });
    assert.deepEqual(codes, { noSuchGroup: -32003, badCapability: -32602 });

    const afterClose = await b.page.evaluate(async () => {
      const { service, group } = window.peer;
      let closed = 0;
      service.onclose = () => closed++;
      service.close();
      const codeOf = (promise) => promise.then(() => null, (error) => error.code);
      return { closed, broadcast: await codeOf(group.broadcast('x')), create: await codeOf(service.createGroup()) };
    });
    assert.deepEqual(afterClose, { closed: 1, broadcast: -32000, create: -32000 });
    await a.waitForLinks([ids[0]], 'direct');
    assert.ok((await a.events()).some((e) => e.type === 'leave' && e.member === ids[1]));
  } finally {
    await closeAll(peers);
  }
});

test('a late joiner links with every member of a meshed group', async () => {
  const { peers, groupId } = await formGroup(env.context, env.server, 4);
  try {
    await waitForMesh(peers);
    const late = await Peer.open(env.context, env.server);
    peers.push(late);
    await late.join(groupId);
    await waitForMesh(peers);
    for (const peer of peers.slice(0, -1)) {
      assert.ok((await peer.events()).some((e) => e.type === 'join' && e.member === late.id));
    }
    await late.broadcast('hi, I am late');
    await peers[0].broadcast('welcome');
    await Promise.all(peers.slice(0, -1).map((peer) => peer.waitForMessage(late.id, 'hi, I am late')));
    await late.waitForMessage(peers[0].id, 'welcome');
    assert.deepEqual(await late.unicast(peers[1].id, 'late ping'), { reply: 're:late ping', isBytes: false });
  } finally {
    await closeAll(peers);
  }
});

test('a member that leaves: the others drop it from the list and close its link', async () => {
  const { peers, ids } = await formGroup(env.context, env.server, 3);
  try {
    await waitForMesh(peers);
    const [a, b, leaver] = peers;
    await leaver.leave();
    const remaining = ids.slice(0, 2);
    await Promise.all([a, b].map((peer) => peer.waitForLinks(remaining, 'direct')));
    for (const peer of [a, b]) {
      const view = await peer.view();
      assert.equal(view.links[leaver.id], undefined);
      assert.equal(await peer.page.evaluate((id) => window.peer.group.linkState(id), leaver.id), 'closed');
      const events = await peer.events();
      assert.ok(events.some((e) => e.type === 'leave' && e.member === leaver.id));
      assert.ok(events.some((e) => e.type === 'link' && e.member === leaver.id && e.state === 'closed'));
    }
    const leaverView = await leaver.view();
    assert.ok(Object.values(leaverView.links).every((state) => state === 'closed'));
    // The group goes on without it.
    await a.broadcast('still here');
    await b.waitForMessage(a.id, 'still here');
    assert.equal((await leaver.received()).length, 0);
  } finally {
    await closeAll(peers);
  }
});

test('a page closed without leaving: the others notice through member_left', async () => {
  const { peers, ids } = await formGroup(env.context, env.server, 3);
  try {
    await waitForMesh(peers);
    const [owner, b, gone] = peers;
    await gone.close();
    await Promise.all([owner, b].map((peer) => peer.waitForLinks(ids.slice(0, 2), 'direct')));
    for (const peer of [owner, b]) {
      assert.ok((await peer.events()).some((e) => e.type === 'leave' && e.member === gone.id));
      assert.equal(await peer.page.evaluate((id) => window.peer.group.linkState(id), gone.id), 'closed');
    }
    // The owner closes too: ownership passes to the earliest remaining member.
    await owner.close();
    await b.waitForView((view, self) => view.members.length === 1 && view.owner === self, b.id);
  } finally {
    await closeAll(peers.filter((peer) => !peer.page.isClosed()));
  }
});
