// Pages and Rust members with WebRTC in one group: the Rust member is the
// `peer` example (simple/examples/peer.rs), driven through its stdin. It
// negotiates DataChannels with the pages and with other Rust members on the
// browsers' payloads, and falls back to the relay as a page does.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { ALL_BYTES, Peer, setUp } from './harness.mjs';
import { ID, rustReceived, startRust } from './rust-peer.mjs';

let env;
before(async () => {
  // A killed Rust peer's session waits out the resume window before the
  // others see it leave (a Member resumes dropped connections): keep it short.
  env = await setUp(['--resume-window', '2s']);
});
after(() => env?.tearDown());

test('3 pages and 2 Rust peers: a full mesh of direct links, broadcasts once everywhere, unicasts both ways, leaves', async (t) => {
  const pages = [];
  const rusts = [];
  try {
    for (let i = 0; i < 3; i++) pages.push(await Peer.open(env.context, env.server));
    const [a, b, c] = pages;
    const groupId = await a.create();
    await b.join(groupId);
    await c.join(groupId);
    for (let i = 0; i < 2; i++) {
      const rust = await startRust(env.server.wsUrl);
      rust.send(`join ${groupId}`);
      await rust.waitForLine(new RegExp(`^joined ${groupId}$`));
      rusts.push(rust);
    }
    const [r, s] = rusts;
    const everyone = [...pages.map((p) => p.id), ...rusts.map((x) => x.id)];

    // 10 links, each direct from both of its ends.
    await Promise.all(pages.map((page) => page.waitForLinks(everyone, 'direct'))).catch(async (error) => {
      const views = await Promise.all(pages.map(async (page) => `${page.id}: ${JSON.stringify(await page.view())}`));
      const printed = rusts.map((rust) => rust.lines.map(({ line }) => line).join('\n'));
      throw new Error(`${error.message}\n${views.join('\n')}\n${printed.join('\n--\n')}`);
    });
    for (const rust of rusts) {
      const joinedAt = await rust.timeOf(new RegExp(`^joined ${groupId}$`));
      for (const other of everyone.filter((id) => id !== rust.id)) {
        const directAt = await rust.timeOf(new RegExp(`^link ${other} direct$`));
        t.diagnostic(`${rust === r ? 'r' : 's'} → ${other.slice(0, 6)}: joined → direct ${(directAt - joinedAt).toFixed(0)} ms`);
      }
      rust.send('links');
      const [, links] = await rust.waitForLine(/^links (.*)$/);
      assert.deepEqual(
        links.split(' ').sort(),
        everyone
          .filter((id) => id !== rust.id)
          .map((id) => `${id}=direct`)
          .sort(),
      );
    }

    // Every member broadcasts once; each other member gets each exactly once.
    for (const page of pages) await page.broadcast(`from ${page.id}`);
    for (const rust of rusts) rust.send(`send from ${rust.id}`);
    for (const page of pages) {
      for (const from of everyone.filter((id) => id !== page.id)) await page.waitForMessage(from, `from ${from}`);
    }
    for (const rust of rusts) {
      for (const from of everyone.filter((id) => id !== rust.id)) {
        await rust.waitForLine(new RegExp(`^broadcast ${from} from ${from}$`));
      }
    }
    // Channels are ordered: a second round's arrival means the first is complete.
    for (const page of pages) await page.broadcast('end');
    for (const rust of rusts) rust.send('send end');
    for (const page of pages) {
      for (const from of everyone.filter((id) => id !== page.id)) await page.waitForMessage(from, 'end');
      const got = (await page.received()).filter(({ data }) => data !== 'end').map(({ from, data }) => `${from}:${data}`);
      assert.deepEqual(got.sort(), everyone.filter((id) => id !== page.id).map((id) => `${id}:from ${id}`).sort());
    }
    for (const rust of rusts) {
      for (const from of everyone.filter((id) => id !== rust.id)) await rust.waitForLine(new RegExp(`^broadcast ${from} end$`));
      const got = rustReceived(rust).filter(({ text }) => text !== 'end').map(({ from, text }) => `${from}:${text}`);
      assert.deepEqual(got.sort(), everyone.filter((id) => id !== rust.id).map((id) => `${id}:from ${id}`).sort());
    }

    // Unicasts: page → Rust (echoed, bytes as bytes), Rust → page, Rust → Rust.
    assert.deepEqual(await a.unicast(r.id, 'ping'), { reply: 'ping', isBytes: false });
    assert.deepEqual(await b.unicast(s.id, ALL_BYTES), { reply: [...ALL_BYTES], isBytes: true });
    await r.waitForLine(new RegExp(`^unicast ${a.id} ping$`));
    r.send(`ask ${c.id} hello page`);
    await r.waitForLine(new RegExp(`^reply ${c.id} re:hello page$`));
    s.send(`ask ${r.id} hello rust`);
    await s.waitForLine(new RegExp(`^reply ${r.id} hello rust$`));
    await r.waitForLine(new RegExp(`^unicast ${s.id} hello rust$`));

    // A Rust peer that leaves, and one killed: both seen as leaves (the
    // killed one once its resume window passed).
    r.send('leave');
    await r.waitForLine(new RegExp(`^left ${groupId}$`));
    await Promise.all(pages.map((page) => page.waitForView((view, gone) => !view.members.includes(gone), r.id)));
    await s.waitForLine(new RegExp(`^member-left ${r.id}$`));
    await s.kill();
    await Promise.all(pages.map((page) => page.waitForView((view, gone) => !view.members.includes(gone), s.id)));
    for (const page of pages) {
      const events = await page.events();
      for (const gone of [r.id, s.id]) assert.ok(events.some((e) => e.type === 'leave' && e.member === gone));
    }
  } finally {
    await Promise.all(rusts.map((rust) => rust.kill()));
    await Promise.all(pages.map((page) => page.close()));
  }
});

test('a forced fallback between a page and a Rust peer gives relayed links with the same API', async () => {
  const page = await Peer.open(env.context, env.server, { options: { connectTimeoutMs: 2_000 } });
  let rust;
  try {
    const groupId = await page.create();
    rust = await startRust(env.server.wsUrl, ['--connect-timeout', '2s']);
    await page.forceRelayWith(rust.id);
    rust.send(`join ${groupId}`);
    await page.waitForView((view, rustId) => view.links[rustId] === 'relayed', rust.id);
    await rust.waitForLine(new RegExp(`^link ${page.id} relayed$`));
    const states = (await page.events()).filter((e) => e.type === 'link' && e.member === rust.id).map((e) => e.state);
    assert.deepEqual(states, ['connecting', 'relayed']);

    await page.broadcast('over the server');
    await rust.waitForLine(new RegExp(`^broadcast ${page.id} over the server$`));
    rust.send('send back over the server');
    await page.waitForMessage(rust.id, 'back over the server');
    assert.deepEqual(await page.unicast(rust.id, ALL_BYTES), { reply: [...ALL_BYTES], isBytes: true });
    rust.send(`ask ${page.id} relayed?`);
    await rust.waitForLine(new RegExp(`^reply ${page.id} re:relayed\\?$`));
  } finally {
    await rust?.kill();
    await page.close();
  }
});

test('large messages between a page and a Rust peer go in chunks on their direct link, both ways', async () => {
  const page = await Peer.open(env.context, env.server);
  const rust = await startRust(env.server.wsUrl);
  try {
    const groupId = await page.create();
    rust.send(`join ${groupId}`);
    await rust.waitForLine(new RegExp(`^joined ${groupId}$`));
    await page.waitForLinks([page.id, rust.id], 'direct');
    await rust.waitForLine(new RegExp(`^link ${page.id} direct$`));

    // Page → Rust, and back: the peer answers a unicast with what it
    // carried, so 10 MiB of bytes and ~3.4 MiB of text come back as the
    // Rust peer's own transfers.
    const echoed = await page.page.evaluate(async (target) => {
      const sha256 = async (data) => {
        const bytes = typeof data === 'string' ? new TextEncoder().encode(data) : data;
        return Array.from(new Uint8Array(await crypto.subtle.digest('SHA-256', bytes)), (b) => b.toString(16).padStart(2, '0')).join('');
      };
      const bytes = new Uint8Array(10 * 1024 * 1024);
      for (let i = 0; i < bytes.length; i += 65536) crypto.getRandomValues(bytes.subarray(i, i + 65536));
      const text = 'aé✓b'.repeat(500_000);
      const group = window.peer.group;
      const bytesBack = await group.unicast(target, bytes);
      const textBack = await group.unicast(target, text);
      return {
        bytes: bytesBack instanceof Uint8Array && (await sha256(bytesBack)) === (await sha256(bytes)),
        text: textBack === text,
      };
    }, rust.id);
    assert.deepEqual(echoed, { bytes: true, text: true });
    await rust.waitForLine(new RegExp(`^unicast ${page.id} <10485760 bytes>$`));

    // Rust → page: a 3 MiB broadcast.
    const big = 'r'.repeat(3 * 1024 * 1024);
    rust.send(`send ${big}`);
    await rust.waitForLine(/^sent$/);
    await page.page.waitForFunction(
      ({ from, size }) => window.peer.received.some((m) => m.from === from && m.data.text?.length === size),
      { from: rust.id, size: big.length },
    );
    // Still direct: nothing fell back to the relay on the way.
    assert.equal((await page.view()).links[rust.id], 'direct');
  } finally {
    await rust.kill();
    await page.close();
  }
});
