// Large messages without a browser: two groups wired to each other
// (unit.mjs), on a stand-in DataChannel and through a stand-in server.
import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import { counting, loadClient, wirePair } from './unit.mjs';

let client;
before(async () => {
  client = await loadClient();
});

/** Resolves with the next broadcast `group` receives. */
function nextMessage(group) {
  return new Promise((resolve) => {
    group.onmessage = (from, data) => resolve({ from, data });
  });
}

for (const relayed of [false, true]) {
  const path = relayed ? 'through the server' : 'on a DataChannel';

  test(`a 3 MiB broadcast ${path} arrives whole, with progress ending at the total`, async () => {
    const { a, b, groups } = wirePair(client, { relayed });
    const data = counting(3 * 1024 * 1024 + 5);
    const progress = [];
    const received = nextMessage(groups[b]);
    await groups[a].broadcast(data, { onprogress: (sent, total) => progress.push([sent, total]) });
    const { from, data: got } = await received;
    assert.equal(from, a);
    assert.ok(got instanceof Uint8Array);
    assert.ok(Buffer.from(got).equals(Buffer.from(data)));
    assert.ok(progress.length > 3);
    for (let i = 1; i < progress.length; i++) assert.ok(progress[i][0] > progress[i - 1][0], 'progress grows');
    assert.deepEqual(progress.at(-1), [data.byteLength, data.byteLength]);
  });

  test(`a large text unicast ${path} gets a large reply`, async () => {
    const { a, b, groups } = wirePair(client, { relayed });
    const text = 'héllo wörld ✓ '.repeat(40_000);
    groups[b].onunicast = (_from, data) => `${data}${data}`;
    const reply = await groups[a].unicast(b, text);
    assert.equal(reply, text + text);
  });

  test(`a message over the receiver's maximum ${path} is refused before it is held`, async () => {
    const { a, b, groups } = wirePair(client, { relayed, receiverMax: 512 * 1024 });
    groups[b].onunicast = () => 'never';
    const progress = [];
    const sent = groups[a].unicast(b, counting(4 * 1024 * 1024), { onprogress: (bytes) => progress.push(bytes) });
    await assert.rejects(sent, (error) => error.code === client.ErrorCode.LimitExceeded);
    assert.ok(progress.length === 0 || progress.at(-1) < 4 * 1024 * 1024, 'the sender stopped early');
    assert.equal(groups[b].channelIn.size + groups[b].relayIn.size, 0);
  });

  test(`aborting a transfer ${path} rejects with the reason and frees the receiver`, async () => {
    const { a, b, groups } = wirePair(client, { relayed });
    const controller = new AbortController();
    let delivered = false;
    groups[b].onmessage = () => {
      delivered = true;
    };
    const sent = groups[a].broadcast(counting(8 * 1024 * 1024), {
      signal: controller.signal,
      onprogress: (bytes) => bytes > 1024 * 1024 && controller.abort(new Error('changed my mind')),
    });
    await assert.rejects(sent, /changed my mind/);
    // The abort travels as the stand-ins' frames and notifications do: a few turns later.
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(delivered, false);
    assert.equal(groups[b].channelIn.size + groups[b].relayIn.size, 0, 'the receiver holds nothing of it');
  });

  test(`a peer that leaves mid-transfer ${path} fails the unicast with PeerGone`, async () => {
    const { a, b, groups } = wirePair(client, { relayed });
    groups[b].onunicast = () => 'ok';
    const sent = groups[a].unicast(b, counting(8 * 1024 * 1024), {
      onprogress: (bytes) => bytes > 1024 * 1024 && groups[a].memberLeft(b),
    });
    await assert.rejects(sent, (error) => error.code === client.ErrorCode.PeerGone);
  });
}

test('a relayed transfer keeps at most 2 chunks unanswered', async () => {
  const { a, groups, unanswered } = wirePair(client, { relayed: true });
  await groups[a].broadcast(counting(4 * 1024 * 1024));
  assert.ok(unanswered() <= 2, `${unanswered()} relays were open at once`);
  assert.ok(unanswered() >= 2, 'chunks are pipelined');
});

test('small broadcasts pass a large transfer on the same DataChannel', async () => {
  const { a, b, groups } = wirePair(client);
  const order = [];
  groups[b].onmessage = (_from, data) => order.push(typeof data === 'string' ? data : 'large');
  const large = groups[a].broadcast(counting(4 * 1024 * 1024));
  await new Promise((resolve) => setImmediate(resolve));
  await groups[a].broadcast('small');
  await large;
  await new Promise((resolve) => setTimeout(resolve, 10));
  assert.deepEqual(order, ['small', 'large']);
});

test('a sender that stops mid-message is dropped after 30 s without a chunk', async (t) => {
  const { a, b, groups } = wirePair(client, { relayed: true });
  t.mock.timers.enable({ apis: ['setTimeout'] });
  const announcement = { id: 9, seq: 0, base64: 'AAAA', kind: 'broadcast', text: false, size: 1024 * 1024 };
  assert.equal(await groups[b].onRelay(a, { chunk: announcement }), null);
  assert.equal(groups[b].relayIn.size, 1);
  t.mock.timers.tick(29_000);
  assert.equal(await groups[b].onRelay(a, { chunk: { id: 9, seq: 1, base64: 'AAAA' } }), null, 'a chunk restarts the clock');
  t.mock.timers.tick(29_000);
  assert.equal(groups[b].relayIn.size, 1);
  t.mock.timers.tick(1_000);
  assert.equal(groups[b].relayIn.size, 0, 'dropped');
  await assert.rejects(groups[b].onRelay(a, { chunk: { id: 9, seq: 2, base64: 'AAAA' } }), (error) => error.code === client.ErrorCode.InvalidParams);
});

test('relayed chunks out of order or past the announced size are refused, and the transfer dropped', async () => {
  const { a, b, groups } = wirePair(client, { relayed: true });
  const start = { id: 3, seq: 0, base64: 'AAAA', kind: 'broadcast', text: false, size: 6 };
  await groups[b].onRelay(a, { chunk: start });
  await assert.rejects(groups[b].onRelay(a, { chunk: { id: 3, seq: 2, base64: 'AAAA' } }), (error) => error.code === client.ErrorCode.InvalidParams);
  assert.equal(groups[b].relayIn.size, 0);
  await groups[b].onRelay(a, { chunk: start });
  await assert.rejects(groups[b].onRelay(a, { chunk: { id: 3, seq: 1, base64: 'AAAAAA==' } }), (error) => error.code === client.ErrorCode.InvalidParams);
  assert.equal(groups[b].relayIn.size, 0);
});
