// Sessions that survive a dropped WebSocket, in real Chromium: through a
// loopback proxy the test cuts, a page resumes by itself (same id, same
// group, nobody told), messages around the cuts arrive exactly once and in
// order, DataChannels carry on untouched, and a page whose window passes
// ends for good.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import {
  Peer,
  WAIT_MS,
  startCluster,
  startProxy,
  startServer,
  launchBrowser,
  waitForConnection,
  waitForMesh,
  watchConnection,
} from './harness.mjs';

let env;
let server;
before(async () => {
  server = await startServer(['--resume-window', '30s', '--rate-limit', '0']);
  env = await launchBrowser();
});
after(async () => {
  await env?.browser.close();
  await server?.stop();
});

/**
 * Broadcasts numbered strings from the page, 10 every 20 ms (at most 500/s,
 * which a page on a loaded machine reads without falling behind by more
 * than the server keeps for a resume): at least `count`, and on until
 * `stopSending`; `sent` resolves with how many.
 */
function startSending(peer, count, prefix = '') {
  return peer.page.evaluate(
    ({ count, prefix }) => {
      window.peer.stop = false;
      window.peer.sent = 0;
      window.peer.sending = (async () => {
        let i = 0;
        for (; i < count || !window.peer.stop; i++) {
          await window.peer.group.broadcast(`${prefix}${i}`);
          window.peer.sent = i + 1;
          if (i % 10 === 9) await new Promise((resolve) => setTimeout(resolve, 20));
        }
        return i;
      })();
    },
    { count, prefix },
  );
}

/** Waits until the page has broadcast `count` messages. */
function sentAtLeast(peer, count) {
  return peer.page.waitForFunction((count) => window.peer.sent >= count, count, { polling: 5, timeout: WAIT_MS });
}

/** One of the server's /metrics figures (0 when absent). */
async function metric(server, name) {
  const text = await (await fetch(`${server.httpUrl}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line === undefined ? 0 : Number(line.slice(name.length + 1));
}

/**
 * Waits until a /metrics figure reads `value`: the server counts a resume
 * once its answer is out, so the page may see the resume first.
 */
async function metricSettlesAt(server, name, value, timeout = WAIT_MS) {
  const until = Date.now() + timeout;
  let seen = await metric(server, name);
  while (seen !== value && Date.now() < until) {
    await new Promise((resolve) => setTimeout(resolve, 20));
    seen = await metric(server, name);
  }
  assert.equal(seen, value, name);
}

function stopSending(peer) {
  return peer.page.evaluate(() => {
    window.peer.stop = true;
  });
}

function sent(peer) {
  return peer.page.evaluate(() => window.peer.sending);
}

/** The texts `peer` received from `from`, in arrival order, once `count` arrived. */
async function receivedFrom(peer, from, count) {
  await peer.page.waitForFunction(
    ({ from, count }) => window.peer.received.filter((m) => m.from === from).length >= count,
    { from, count },
    { polling: 10, timeout: WAIT_MS },
  );
  return (await peer.received()).filter((m) => m.from === from).map((m) => m.data);
}

/**
 * Pages `a` (behind a proxy the test cuts, its connection state watched)
 * and `b` in one group, their link forced relayed: every message between
 * them goes through the server, and so through the cuts.
 */
async function relayedPairThroughProxy(aOptions = {}) {
  const proxy = await startProxy(server);
  const options = { connectTimeoutMs: 200 };
  const a = await Peer.open(env.context, proxy.server, { options: { ...options, ...aOptions } });
  const b = await Peer.open(env.context, server, { options });
  await relayedGroupOf(a, b);
  return { proxy, a, b };
}

/** `a` creates a group, `b` joins it, their link forced relayed; `a`'s connection states are watched. */
async function relayedGroupOf(a, b) {
  await a.forceRelayWith(b.id);
  await b.forceRelayWith(a.id);
  const groupId = await a.create();
  await b.join(groupId);
  await a.waitForLinks([a.id, b.id], 'relayed');
  await b.waitForLinks([a.id, b.id], 'relayed');
  await watchConnection(a);
}

const numbered = (count, prefix = '') => Array.from({ length: count }, (_, i) => `${prefix}${i}`);

test('a page cut 20 times resumes each time; relayed messages both ways arrive exactly once, in order', async () => {
  const CUTS = 20;
  // Messages the cut page sends between two cuts: 20 × 250 from each page,
  // over 10,000 in all, every one of them around a cut.
  const BETWEEN = 250;
  const { proxy, a, b } = await relayedPairThroughProxy();
  try {

    const resumedBefore = await metric(server, 'webrtc_p2p_sessions_resumed_total{replayed="true"}');
    await startSending(a, CUTS * BETWEEN);
    await startSending(b, CUTS * BETWEEN);
    const took = [];
    for (let cut = 1; cut <= CUTS; cut++) {
      await sentAtLeast(a, cut * BETWEEN);
      const at = Date.now();
      proxy.cut();
      const resumedAt = await waitForConnection(a, 'connected', cut);
      took.push(resumedAt - at);
    }
    await stopSending(a);
    await stopSending(b);
    const fromA = await sent(a);
    const fromB = await sent(b);
    // Every resume replayed exactly (none lost what it had to send again).
    await metricSettlesAt(server, 'webrtc_p2p_sessions_resumed_total{replayed="true"}', resumedBefore + CUTS);
    assert.equal(await metric(server, 'webrtc_p2p_sessions_resumed_total{replayed="false"}'), 0);
    assert.deepEqual(await receivedFrom(b, a.id, fromA), numbered(fromA));
    assert.deepEqual(await receivedFrom(a, b.id, fromB), numbered(fromB));
    assert.equal(await a.page.evaluate(() => window.peer.service.info().id()), a.id);
    assert.deepEqual((await b.view()).members, [a.id, b.id]);
    assert.deepEqual((await b.events()).filter((e) => e.type === 'leave'), []);
    took.sort((x, y) => x - y);
    console.log(
      `resume figures (browser): ${CUTS} cuts, cut to resumed median ${took[CUTS >> 1].toFixed(1)} ms ` +
        `(min ${took[0].toFixed(1)}, max ${took[CUTS - 1].toFixed(1)}); ${fromA + fromB} messages, 0 lost, 0 duplicated`,
    );
  } finally {
    proxy.close();
    await Promise.all([a.close(), b.close()]);
  }
});

/**
 * Two nodes of a cluster; page `a` on the first (`doomed`), through a proxy
 * whose way back already leads to the second, and `b` on the second, their
 * link forced relayed; `a` sending numbered broadcasts.
 */
async function pageOnANodeThatStops() {
  const flags = ['--resume-window', '30s', '--rate-limit', '0', '--resume-secret', 'one secret for the nodes'];
  const cluster = await startCluster(2, flags);
  const [doomed, survivor] = cluster.nodes;
  const proxy = await startProxy(doomed);
  const options = { connectTimeoutMs: 200 };
  const a = await Peer.open(env.context, proxy.server, { options });
  const b = await Peer.open(env.context, survivor, { options });
  const stopAll = async () => {
    proxy.close();
    await Promise.all([a.close(), b.close()]);
    await cluster.stop();
  };
  try {
    await relayedGroupOf(a, b);
    proxy.retarget(survivor);
    return { doomed, survivor, proxy, a, b, stopAll };
  } catch (error) {
    await stopAll();
    throw error;
  }
}

/** The numbers `b` received from `a` once the last of `count` arrived. */
async function numbersFrom(b, a, count) {
  await b.waitForMessage(a.id, String(count - 1));
  return (await b.received()).filter((m) => m.from === a.id).map((m) => Number(m.data));
}

const range = (from, to) => Array.from({ length: to - from }, (_, i) => from + i);

test('a page whose node is stopped (SIGTERM) moves to another with an exact replay: nothing lost, nothing twice', async () => {
  const { doomed, survivor, a, b, stopAll } = await pageOnANodeThatStops();
  try {
    await startSending(a, 600);
    await sentAtLeast(a, 200);
    // The node closes a's socket with 1012 and hands the session over to
    // the node a resumes on, with what it still had for it.
    await doomed.stop();
    await waitForConnection(a, 'connected');
    await metricSettlesAt(survivor, 'webrtc_p2p_sessions_resumed_total{replayed="true"}', 1);
    await stopSending(a);
    const fromA = await sent(a);
    assert.deepEqual(await numbersFrom(b, a, fromA), range(0, fromA));
    assert.equal(await metric(survivor, 'webrtc_p2p_sessions_resumed_total{replayed="false"}'), 0);
    assert.deepEqual((await b.events()).filter((e) => e.type === 'leave'), []);
  } finally {
    await stopAll();
  }
});

test('a page whose node is killed resumes on another, and from then on what it sends arrives exactly once, in order', async () => {
  const CUTS = 5;
  const BETWEEN = 100;
  const { doomed, survivor, proxy, a, b, stopAll } = await pageOnANodeThatStops();
  try {
    await startSending(a, (CUTS + 2) * BETWEEN);
    await sentAtLeast(a, BETWEEN);

    // The node dies mid-traffic; the other one knows nothing of what the
    // dead one had received (its count is 0).
    await doomed.kill();
    await waitForConnection(a, 'connected');
    // Whatever is sent from now on was never held by the dead node.
    const sentAfterDeath = await a.page.evaluate(() => window.peer.sent);
    await metricSettlesAt(survivor, 'webrtc_p2p_sessions_resumed_total{replayed="false"}', 1);
    for (let cut = 1; cut <= CUTS; cut++) {
      await sentAtLeast(a, sentAfterDeath + cut * BETWEEN);
      proxy.cut();
      await waitForConnection(a, 'connected', cut + 1);
    }
    await stopSending(a);
    const fromA = await sent(a);
    const numbers = await numbersFrom(b, a, fromA);
    // Exactly once and in order for everything the resumes on the living
    // node dealt with: its counts and the page's agree again.
    assert.deepEqual(
      numbers.filter((n) => n >= sentAfterDeath),
      range(sentAfterDeath, fromA),
    );
    await metricSettlesAt(survivor, 'webrtc_p2p_sessions_resumed_total{replayed="true"}', CUTS);
    assert.equal(await a.page.evaluate(() => window.peer.service.info().id()), a.id);
    const before = numbers.filter((n) => n < sentAfterDeath);
    const distinct = new Set(before).size;
    console.log(
      `node death (browser): of ${sentAfterDeath} messages sent before the resume on the living node, ` +
        `${sentAfterDeath - distinct} lost with the dead node and ${before.length - distinct} arrived twice; ` +
        `the ${fromA - sentAfterDeath} after it, through ${CUTS} cuts, exactly once`,
    );
  } finally {
    await stopAll();
  }
});

test('a mesh of 4 keeps its DataChannels through a 5 s outage of one socket, and a page joining meanwhile links up after', async () => {
  const OUTAGE_MS = 5_000;
  const COUNT = 50;
  const proxy = await startProxy(server);
  const peers = [
    await Peer.open(env.context, server),
    await Peer.open(env.context, server),
    await Peer.open(env.context, server),
    await Peer.open(env.context, proxy.server),
  ];
  const cutPage = peers[3];
  let late;
  try {
    const groupId = await peers[0].create();
    for (const peer of peers.slice(1)) await peer.join(groupId);
    await waitForMesh(peers);
    await watchConnection(cutPage);

    proxy.setDown(true);
    const cutAt = Date.now();
    proxy.cut();
    await waitForConnection(cutPage, 'reconnecting');
    // Every page broadcasts over its DataChannels while the socket is down.
    await Promise.all(peers.map((peer, i) => startSending(peer, COUNT, `${i}:`)));
    await Promise.all(peers.map(stopSending));
    const counts = await Promise.all(peers.map(sent));
    for (const [j, peer] of peers.entries()) {
      for (const [i, sender] of peers.entries()) {
        if (i !== j) assert.deepEqual(await receivedFrom(peer, sender.id, counts[i]), numbered(counts[i], `${i}:`));
      }
    }
    // A page joins meanwhile: its links to the others form, the one to the
    // cut page waits for the resume.
    late = await Peer.open(env.context, server);
    await late.join(groupId);
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, cutAt + OUTAGE_MS - Date.now())));
    proxy.setDown(false);
    await waitForConnection(cutPage, 'connected');
    await waitForMesh([...peers, late]);

    // Nothing was renegotiated, and nobody left.
    for (const peer of peers) {
      const events = await peer.events();
      const relinked = events.filter(
        (e) => e.type === 'link' && e.at > cutAt && peers.some((p) => p.id === e.member),
      );
      assert.deepEqual(relinked, [], `no link among the four changed after the cut (${peer.id})`);
      assert.deepEqual(events.filter((e) => e.type === 'leave'), []);
    }
    assert.equal(await cutPage.page.evaluate(() => window.peer.service.connectionState), 'connected');
  } finally {
    proxy.close();
    await Promise.all([...peers, ...(late ? [late] : [])].map((peer) => peer.close()));
  }
});

test('when the resume window passes, the page ends (onclose) and the others see it leave', async () => {
  const short = await startServer(['--resume-window', '1s']);
  const proxy = await startProxy(short);
  const a = await Peer.open(env.context, proxy.server);
  const b = await Peer.open(env.context, short);
  try {
    const groupId = await a.create();
    await b.join(groupId);
    await watchConnection(a);
    proxy.setDown(true);
    proxy.cut();
    await waitForConnection(a, 'reconnecting');
    await waitForConnection(a, 'onclose');
    assert.equal(await a.page.evaluate(() => window.peer.service.connectionState), 'closed');
    await b.waitForView((view, gone) => !view.members.includes(gone), a.id);
    assert.equal((await b.events()).filter((e) => e.type === 'leave' && e.member === a.id).length, 1);
  } finally {
    proxy.close();
    await Promise.all([a.close(), b.close()]);
    await short.stop();
  }
});

test('a relayed unicast to a page whose socket is down is answered after the resume and reaches its caller', async () => {
  const { proxy, a, b } = await relayedPairThroughProxy();
  try {
    proxy.setDown(true);
    proxy.cut();
    await waitForConnection(a, 'reconnecting');
    const reply = b.unicast(a.id, 'while you were away');
    // The relay waits on the server for the page to come back.
    await metricSettlesAt(server, 'webrtc_p2p_relays_in_flight', 1);
    proxy.setDown(false);
    await waitForConnection(a, 'connected');
    assert.deepEqual(await reply, { reply: 're:while you were away', isBytes: false });
    assert.deepEqual((await b.events()).filter((e) => e.type === 'leave'), []);
  } finally {
    proxy.close();
    await Promise.all([a.close(), b.close()]);
  }
});

test('while reconnecting, relayed messages past maxReconnectBufferBytes fail at once; those taken arrive after the resume, in order', async () => {
  const { proxy, a, b } = await relayedPairThroughProxy({ maxReconnectBufferBytes: 20_000 });
  try {
    proxy.setDown(true);
    proxy.cut();
    await waitForConnection(a, 'reconnecting');
    // 1,000-character messages: about 19 fit in 20,000.
    const outcomes = await a.page.evaluate(async () => {
      const outcomes = [];
      for (let i = 0; i < 40; i++) {
        try {
          await window.peer.group.broadcast(`${i}:${'x'.repeat(1_000)}`);
          outcomes.push('sent');
        } catch (error) {
          outcomes.push(`${error.name} ${error.code}`);
        }
      }
      return outcomes;
    });
    const taken = outcomes.filter((outcome) => outcome === 'sent').length;
    assert.ok(taken >= 15 && taken < 20, `taken: ${taken}`);
    assert.deepEqual(outcomes.slice(0, taken), Array(taken).fill('sent'));
    assert.deepEqual(new Set(outcomes.slice(taken)), new Set(['RpcError -32010']));

    proxy.setDown(false);
    await waitForConnection(a, 'connected');
    const got = await receivedFrom(b, a.id, taken);
    assert.deepEqual(
      got.map((text) => text.split(':')[0]),
      numbered(taken),
    );
    // Connected again: no bound but the server's.
    await a.broadcast('after');
    await b.waitForMessage(a.id, 'after');
  } finally {
    proxy.close();
    await Promise.all([a.close(), b.close()]);
  }
});

test('after a resume the server could not replay, the page asks for its members again and links up with a newcomer', async () => {
  // A tiny resume buffer: what the others send during the outage overflows it.
  const small = await startServer(['--resume-window', '30s', '--resume-buffer', '2048', '--rate-limit', '0']);
  const proxy = await startProxy(small);
  const options = { connectTimeoutMs: 2_000 };
  const a = await Peer.open(env.context, proxy.server, { options });
  const b = await Peer.open(env.context, small, { options });
  const leaver = await Peer.open(env.context, small, { options });
  let late;
  try {
    await a.forceRelayWith(b.id);
    await b.forceRelayWith(a.id);
    const groupId = await a.create();
    await b.join(groupId);
    await leaver.join(groupId);
    await a.waitForView((view, ids) => ids.every((id) => view.members.includes(id)), [b.id, leaver.id]);
    // b's broadcasts go to a through the server, and so into its resume buffer.
    await b.waitForView((view, a) => view.links[a] === 'relayed', a.id);
    await watchConnection(a);

    proxy.setDown(true);
    proxy.cut();
    await waitForConnection(a, 'reconnecting');
    for (let i = 0; i < 50; i++) await b.broadcast(`lost ${i} ${'x'.repeat(100)}`);
    await leaver.leave();
    late = await Peer.open(env.context, small, { options });
    await late.join(groupId);
    proxy.setDown(false);
    await waitForConnection(a, 'connected');

    await metricSettlesAt(small, 'webrtc_p2p_sessions_resumed_total{replayed="false"}', 1);
    await a.waitForView((view, ids) => view.members.length === ids.length && ids.every((id) => view.members.includes(id)), [
      a.id,
      b.id,
      late.id,
    ]);
    const events = await a.events();
    assert.equal(events.filter((e) => e.type === 'leave' && e.member === leaver.id).length, 1);
    assert.equal(events.filter((e) => e.type === 'join' && e.member === late.id).length, 1);
    assert.equal(await a.page.evaluate(() => window.peer.service.info().id()), a.id);
    // Messages flow both ways with the newcomer, whatever its link became.
    await late.broadcast('hello from the newcomer');
    await a.waitForMessage(late.id, 'hello from the newcomer');
    await a.broadcast('hello from the resumed page');
    await late.waitForMessage(a.id, 'hello from the resumed page');
  } finally {
    proxy.close();
    await Promise.all([a, b, leaver, ...(late ? [late] : [])].map((peer) => peer.close()));
    await small.stop();
  }
});

test('a clean close ends the session at once: the others see the page leave long before the window', async () => {
  const a = await Peer.open(env.context, server);
  const b = await Peer.open(env.context, server);
  try {
    const groupId = await a.create();
    await b.join(groupId);
    await watchConnection(a);
    await a.page.evaluate(() => window.peer.service.close());
    await waitForConnection(a, 'onclose');
    // The window is 30 s: a leave within 10 s is the close's, not the window's.
    await b.waitForView((view, gone) => !view.members.includes(gone), a.id, 10_000);
  } finally {
    await Promise.all([a.close(), b.close()]);
  }
});

test('with --resume-window 0 a cut ends the session as in v1', async () => {
  const off = await startServer(['--resume-window', '0']);
  const proxy = await startProxy(off);
  const a = await Peer.open(env.context, proxy.server);
  const b = await Peer.open(env.context, off);
  try {
    const groupId = await a.create();
    await b.join(groupId);
    await watchConnection(a);
    proxy.cut();
    await waitForConnection(a, 'onclose');
    assert.deepEqual(
      (await a.page.evaluate(() => window.peer.connection)).map((change) => change.state),
      ['closed', 'onclose'],
      'no reconnecting: the page ends at once',
    );
    await b.waitForView((view, gone) => !view.members.includes(gone), a.id);
  } finally {
    proxy.close();
    await Promise.all([a.close(), b.close()]);
    await off.stop();
  }
});
