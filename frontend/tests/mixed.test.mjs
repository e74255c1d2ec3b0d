// Pages and members without WebRTC in one group: the link to such a member
// is 'relayed' at once (not after the 10 s connect timeout), and messages
// flow both ways in the payload format of interfaces/api.d.ts. The Rust
// member is the echo_peer example (simple/examples/echo_peer.rs); the signal
// itself is also checked against hand-written JSON-RPC members.
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';
import { ALL_BYTES, Peer, WAIT_MS, setUp, waitForMesh } from './harness.mjs';
import { startProcess } from './rust-peer.mjs';

/** Built by `cargo build -p webrtc-p2p-simple --examples` (and by `cargo test --workspace`), or `$WEBRTC_P2P_ECHO_PEER_BIN`. */
const ECHO_PEER_BIN =
  process.env.WEBRTC_P2P_ECHO_PEER_BIN ??
  fileURLToPath(new URL('../../target/debug/examples/echo_peer', import.meta.url));

/**
 * The pages keep the default 10 s connect timeout: a link relayed within
 * this is relayed because the member said it has no WebRTC, not because
 * P2P timed out.
 */
const RELAYED_WITHIN_MS = 3_000;
const GREETING = 'hello from Rust';
/** What a member without WebRTC answers an offer with (`ErrorCode.NoWebRtc`). */
const NO_WEBRTC = -32011;

let env;
before(async () => {
  env = await setUp();
});
after(() => env?.tearDown());

/** Runs echo_peer in `groupId`; Ctrl-C (`stop('SIGINT')`) makes it leave its group and close cleanly. */
function startEchoPeer(wsUrl, groupId) {
  return startProcess(ECHO_PEER_BIN, ['--url', wsUrl, '--group', groupId, '--greeting', GREETING], { name: 'echo_peer' });
}

/** The page's link to `member`: the states it went through, and the ms from 'connecting' to 'relayed'. */
async function linkHistory(peer, member) {
  const events = (await peer.events()).filter((e) => e.type === 'link' && e.member === member);
  const at = (state) => events.find((e) => e.state === state)?.at;
  return { states: events.map((e) => e.state), toRelayedMs: at('relayed') - at('connecting') };
}

test('a Rust member (echo_peer) among pages: relayed at once, broadcasts and unicasts both ways', async (t) => {
  const pages = [];
  let rust;
  try {
    for (let i = 0; i < 2; i++) pages.push(await Peer.open(env.context, env.server));
    const [a, b] = pages;
    const groupId = await a.create();
    await b.join(groupId);
    await waitForMesh(pages);

    rust = startEchoPeer(env.server.wsUrl, groupId);
    const [, joined, rustId] = await rust.waitForLine(/^joined ([0-9a-f]{32}) as ([0-9a-f]{32})$/);
    assert.equal(joined, groupId);
    const [, link] = await rust.waitForLine(/^demo page: (\S+)$/);
    assert.equal(link, `${env.server.httpUrl}/#${groupId}`);
    for (const page of pages) {
      await page.waitForView((view, rustId) => view.links[rustId] === 'relayed', rustId);
      const { states, toRelayedMs } = await linkHistory(page, rustId);
      // Whichever side of the pair the page is on (only one side offers).
      t.diagnostic(`${page === a ? 'a' : 'b'}: connecting → relayed in ${toRelayedMs.toFixed(1)} ms`);
      assert.deepEqual(states, ['connecting', 'relayed']);
      assert.ok(toRelayedMs < RELAYED_WITHIN_MS, `${toRelayedMs} ms`);
      // The pages' own link is untouched.
      await page.waitForView((view, other) => view.links[other] === 'direct', (page === a ? b : a).id);
    }

    // Rust → pages: the greeting it broadcasts on joining.
    await Promise.all(pages.map((page) => page.waitForMessage(rustId, GREETING)));
    // Pages → Rust: broadcasts, text and bytes.
    await a.broadcast('hello rust ☃');
    await b.broadcast(ALL_BYTES);
    await rust.waitForLine(new RegExp(`^broadcast from ${a.id}: hello rust ☃$`));
    await rust.waitForLine(new RegExp(`^broadcast from ${b.id}: 256 bytes$`));
    // Unicasts come back echoed, bytes as bytes.
    assert.deepEqual(await a.unicast(rustId, 'ping'), { reply: 'ping', isBytes: false });
    assert.deepEqual(await b.unicast(rustId, ALL_BYTES), { reply: [...ALL_BYTES], isBytes: true });
    await rust.waitForLine(new RegExp(`^unicast from ${a.id}: ping$`));
    // Larger than one relay: chunked both ways (the request, and its echo).
    const large = await a.page.evaluate(async (rustId) => {
      const bytes = Uint8Array.from({ length: 2 * 1024 * 1024 + 3 }, (_, i) => (i * 7) % 256);
      const reply = await window.peer.group.unicast(rustId, bytes);
      await window.peer.group.broadcast(bytes);
      return reply instanceof Uint8Array && reply.length === bytes.length && reply.every((b, i) => b === bytes[i]);
    }, rustId);
    assert.ok(large, 'a 2 MiB unicast comes back whole from the Rust member');
    await rust.waitForLine(new RegExp(`^unicast from ${a.id}: 2097155 bytes$`));
    await rust.waitForLine(new RegExp(`^broadcast from ${a.id}: 2097155 bytes$`));

    // A late page: relayed at once too, and welcomed.
    const late = await Peer.open(env.context, env.server);
    pages.push(late);
    // Its link opens (and here is relayed) inside `joinGroup`, before the
    // test listens to events: timed from the call to when the view shows it,
    // an upper bound.
    const calledAt = await late.join(groupId);
    await late.waitForView((view, rustId) => view.links[rustId] === 'relayed', rustId);
    const toRelayedMs = (await late.page.evaluate(() => performance.timeOrigin + performance.now())) - calledAt;
    t.diagnostic(`late page: joinGroup() → relayed in at most ${toRelayedMs.toFixed(1)} ms`);
    assert.ok(toRelayedMs < RELAYED_WITHIN_MS, `${toRelayedMs} ms`);
    await rust.waitForLine(new RegExp(`^member joined: ${late.id}$`));
    await late.waitForMessage(rustId, `${GREETING} (welcome, ${late.id})`);

    // Ctrl-C: it leaves, and the pages drop it.
    await rust.stop('SIGINT');
    await Promise.all(pages.map((page) => page.waitForView((view, rustId) => !view.members.includes(rustId), rustId)));
  } finally {
    await rust?.stop('SIGINT');
    await Promise.all(pages.map((page) => page.close()));
  }
});

/**
 * Runs in a page: a member without WebRTC written by hand on a raw
 * WebSocket, whose id is above or below `pageId` (so that the page is the
 * side that offers, or the side that never does). It joins the page's group
 * and answers the page's relay requests as `mode` says: `'refuse'` with the
 * NoWebRtc error, `'echo'` with the data it got (a result that is not
 * `null`), `'declare'` with `null` but it first sends `{"webrtc": false}`.
 */
async function rawMember({ wsUrl, groupId, pageId, below, mode, noWebRtc }) {
  const connect = async () => {
    const socket = new WebSocket(wsUrl);
    await new Promise((resolve, reject) => {
      socket.onopen = resolve;
      socket.onerror = reject;
    });
    const pending = new Map();
    const requests = [];
    let lastId = 0;
    const call = (method, params) =>
      new Promise((resolve, reject) => {
        pending.set(++lastId, { resolve, reject });
        socket.send(JSON.stringify({ jsonrpc: '2.0', id: lastId, method, params }));
      });
    socket.onmessage = ({ data }) => {
      const message = JSON.parse(data);
      if (message.method === undefined) {
        const { resolve, reject } = pending.get(message.id);
        pending.delete(message.id);
        return message.error ? reject(new Error(JSON.stringify(message.error))) : resolve(message.result);
      }
      if (message.method !== 'relay') return;
      requests.push({ request: message.id !== undefined, data: message.params[2] });
      if (message.id === undefined) return;
      const answer =
        mode === 'refuse'
          ? { error: { code: noWebRtc, message: 'this member has no WebRTC' } }
          : { result: mode === 'echo' ? message.params[2] : null };
      socket.send(JSON.stringify({ jsonrpc: '2.0', id: message.id, ...answer }));
    };
    return { socket, call, requests, id: await call('init', []) };
  };
  // Ids are random: half of them fall on the wanted side of the page's.
  let member = await connect();
  while (below ? member.id > pageId : member.id < pageId) {
    member.socket.close();
    member = await connect();
  }
  await member.call('join', [groupId]);
  if (mode === 'declare') {
    const notice = { jsonrpc: '2.0', method: 'relay', params: [groupId, pageId, { signal: { webrtc: false } }] };
    member.socket.send(JSON.stringify(notice));
  }
  window.rawMember = member;
  return member.id;
}

for (const { mode, what, below } of [
  { mode: 'refuse', what: 'an offer answered with the NoWebRtc error', below: true },
  { mode: 'echo', what: 'an offer answered with something else than null', below: true },
  { mode: 'declare', what: 'a {"webrtc": false} signal to the side that never offers', below: false },
]) {
  test(`${what} makes the link relayed at once`, async (t) => {
    const page = await Peer.open(env.context, env.server);
    const host = await env.context.newPage();
    try {
      const groupId = await page.create();
      await host.goto(`${env.server.httpUrl}/webrtc-p2p.js`);
      const memberId = await host.evaluate(rawMember, {
        wsUrl: env.server.wsUrl,
        groupId,
        pageId: page.id,
        below,
        mode,
        noWebRtc: NO_WEBRTC,
      });
      await page.waitForView((view, memberId) => view.links[memberId] === 'relayed', memberId);
      const { states, toRelayedMs } = await linkHistory(page, memberId);
      t.diagnostic(`connecting → relayed in ${toRelayedMs.toFixed(1)} ms`);
      assert.deepEqual(states, ['connecting', 'relayed']);
      assert.ok(toRelayedMs < RELAYED_WITHIN_MS, `${toRelayedMs} ms`);

      const offers = (await host.evaluate(() => window.rawMember.requests)).filter(
        ({ data }) => data.signal?.description?.type === 'offer',
      );
      if (below) {
        // The page (the impolite side) offered, as a relay request.
        assert.equal(offers.length, 1);
        assert.equal(offers[0].request, true);
      } else {
        // The page (the polite side) never offers: the signal alone did it.
        assert.equal(offers.length, 0);
      }
      // Relayed messages reach the hand-written member in the documented shapes.
      await page.broadcast('over the server');
      await host.waitForFunction(
        () => window.rawMember.requests.some(({ data }) => data.broadcast?.text === 'over the server'),
        null,
        { polling: 5, timeout: WAIT_MS },
      );
    } finally {
      await host.close();
      await page.close();
    }
  });
}
