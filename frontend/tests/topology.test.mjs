// Who links with whom: a star for owner-only groups, and the relay fallback
// for a pair that cannot connect peer to peer.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { ALL_BYTES, Peer, setUp, waitForMesh } from './harness.mjs';

/** Short, so that a relayed unicast that gets no answer fails quickly. */
const RELAY_TIMEOUT = '2s';

let env;
before(async () => {
  env = await setUp(['--relay-timeout', RELAY_TIMEOUT]);
});
after(() => env?.tearDown());

/** BroadcastOwner | UnicastOwner: members talk to the owner only. */
const OWNER_ONLY = 5;
/** Short, so that the forced failure is noticed quickly; loopback links connect in well under 1 s. */
const FALLBACK_CONNECT_TIMEOUT_MS = 3_000;

test('an owner-only group (capability 5) forms a star around the owner, and re-forms it when the owner leaves', async () => {
  const peers = [];
  try {
    for (let i = 0; i < 4; i++) peers.push(await Peer.open(env.context, env.server));
    const [owner, ...members] = peers;
    const groupId = await owner.create(OWNER_ONLY);
    // One after the other, so that the join order (and the next owner) is known.
    for (const member of members) await member.join(groupId);
    const ids = peers.map((peer) => peer.id);

    await owner.waitForLinks(ids, 'direct');
    for (const member of members) {
      await member.waitForView(
        (view, { owner, all }) =>
          view.members.length === all.length &&
          view.links[owner] === 'direct' &&
          Object.entries(view.links).every(([m, state]) => m === owner || state === 'closed'),
        { owner: owner.id, all: ids },
      );
    }

    // A member's broadcast reaches the owner only; the owner's reaches everyone.
    await members[0].broadcast('to the owner');
    await owner.broadcast('to everyone');
    await owner.waitForMessage(members[0].id, 'to the owner');
    await Promise.all(members.map((member) => member.waitForMessage(owner.id, 'to everyone')));
    for (const member of members.slice(1)) {
      assert.deepEqual((await member.received()).map((m) => m.from), [owner.id]);
    }
    // Unicasts: to and from the owner only; between members the client refuses.
    assert.deepEqual(await members[0].unicast(owner.id, 'hi owner'), { reply: 're:hi owner', isBytes: false });
    assert.deepEqual(await owner.unicast(members[1].id, 'hi member'), { reply: 're:hi member', isBytes: false });
    assert.equal((await members[0].unicast(members[1].id, 'psst')).error.code, -32006);

    // The earliest-joined remaining member becomes owner; the star moves to it.
    await owner.leave();
    const [next, ...rest] = members;
    const remaining = ids.slice(1);
    await next.waitForLinks(remaining, 'direct');
    for (const member of rest) {
      await member.waitForView(
        (view, { next, all }) =>
          view.owner === next &&
          view.members.length === all.length &&
          view.links[next] === 'direct' &&
          Object.entries(view.links).every(([m, state]) => m === next || state === 'closed'),
        { next: next.id, all: remaining },
      );
    }
    await rest[0].broadcast('to the new owner');
    await next.waitForMessage(rest[0].id, 'to the new owner');
  } finally {
    await Promise.all(peers.map((peer) => peer.close()));
  }
});

test('a pair forced to fail P2P talks through the server: relayed links, broadcast, unicast, bytes', async () => {
  const options = { connectTimeoutMs: FALLBACK_CONNECT_TIMEOUT_MS, unicastTimeoutMs: 2_000 };
  const peers = [];
  try {
    for (let i = 0; i < 3; i++) peers.push(await Peer.open(env.context, env.server, { options }));
    const [a, b, c] = peers;
    // Only one side has the hook: the other side's link fails on its own.
    await a.forceRelayWith(b.id);
    const groupId = await a.create();
    await b.join(groupId);
    await c.join(groupId);

    await a.waitForView((view, { b, c }) => view.links[b] === 'relayed' && view.links[c] === 'direct', { b: b.id, c: c.id });
    await b.waitForView((view, { a, c }) => view.links[a] === 'relayed' && view.links[c] === 'direct', { a: a.id, c: c.id });
    await c.waitForLinks([a.id, b.id, c.id], 'direct');
    // The relayed pair never was 'direct'.
    for (const [peer, other] of [
      [a, b],
      [b, a],
    ]) {
      const states = (await peer.events()).filter((e) => e.type === 'link' && e.member === other.id).map((e) => e.state);
      assert.ok(!states.includes('direct'), states.join());
    }

    await a.broadcast('a over the server');
    await a.broadcast(ALL_BYTES);
    await b.broadcast('b over the server');
    await b.waitForMessage(a.id, 'a over the server');
    await a.waitForMessage(b.id, 'b over the server');
    await c.waitForMessage(a.id, 'a over the server');
    const bytesAtB = (await b.received()).filter((m) => m.from === a.id).map((m) => m.data);
    assert.deepEqual(bytesAtB, ['a over the server', [...ALL_BYTES]]);

    assert.deepEqual(await a.unicast(b.id, 'via relay'), { reply: 're:via relay', isBytes: false });
    assert.deepEqual(await b.unicast(a.id, ALL_BYTES), { reply: [...ALL_BYTES].reverse(), isBytes: true });
    // The largest message fits the server's limit once base64-encoded.
    const max = await a.page.evaluate(() => import('/webrtc-p2p.js').then((m) => m.MAX_BODY_BYTES));
    const big = Uint8Array.from({ length: max }, (_, i) => i % 251);
    assert.deepEqual(await a.unicast(b.id, big), { reply: [...big].reverse(), isBytes: true });
    const threw = (await b.unicast(a.id, 'throw')).error;
    assert.deepEqual([threw.code, threw.message], [-32603, 'handler failed on purpose']);
    // No answer: the server's relay timeout, or over a DataChannel the client's, both RelayTimeout.
    assert.equal((await a.unicast(b.id, 'hang')).error.code, -32007);
    assert.equal((await a.unicast(c.id, 'hang')).error.code, -32007);
  } finally {
    await Promise.all(peers.map((peer) => peer.close()));
  }
});

test('a direct link whose DataChannel dies falls back to relay on both ends, and messages keep flowing', async () => {
  const peers = [];
  try {
    for (let i = 0; i < 2; i++) peers.push(await Peer.open(env.context, env.server));
    const [a, b] = peers;
    // Keep a handle on every DataChannel the page opens or accepts.
    await a.page.evaluate(() => {
      window.channels = [];
      const create = RTCPeerConnection.prototype.createDataChannel;
      RTCPeerConnection.prototype.createDataChannel = function (...args) {
        const channel = create.apply(this, args);
        window.channels.push(channel);
        return channel;
      };
      const Original = RTCPeerConnection;
      window.RTCPeerConnection = class extends Original {
        constructor(...args) {
          super(...args);
          this.addEventListener('datachannel', ({ channel }) => window.channels.push(channel));
        }
      };
    });
    const groupId = await a.create();
    await b.join(groupId);
    await waitForMesh(peers);
    // The main channel, and the control one for whole frames.
    const labels = await a.page.evaluate(() => window.channels.map((channel) => channel.label).sort());
    assert.deepEqual(labels, ['webrtc-p2p', 'webrtc-p2p-control']);

    await a.page.evaluate(() => window.channels.find((channel) => channel.label === 'webrtc-p2p').close());
    await waitForMesh(peers, 'relayed');
    await a.broadcast('after the channel died');
    await b.waitForMessage(a.id, 'after the channel died');
    assert.deepEqual(await b.unicast(a.id, 'still there?'), { reply: 're:still there?', isBytes: false });
  } finally {
    await Promise.all(peers.map((peer) => peer.close()));
  }
});
