// Large messages in real Chromium: 10 and 64 MiB, bytes and text, over a
// direct link and a forced relayed one (through the real server under its
// default limits). Each transfer is checked by SHA-256 at both ends, its
// progress must grow to the total, both pages' memory (JS heap + ArrayBuffer
// backing stores) and the server's RSS must stay bounded, and small
// broadcasts sent meanwhile must arrive within 100 ms, each (but for the
// few a starved machine holds up, below). `LARGE_REPORT=1` prints
// throughput, peak memory and every small broadcast's latency.
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { after, before, test } from 'node:test';
import { Peer, setUp } from './harness.mjs';

const MIB = 1024 * 1024;
/** A relayed pair gives up on P2P this fast: the pages' candidates are blocked anyway. */
const CONNECT_TIMEOUT_MS = 300;
/**
 * Each small broadcast sent while a transfer runs (one every 50 ms)
 * arrives within this. On a DataChannel a small message goes on the
 * link's control channel and the transfer keeps about 40 ms of what the
 * receiver takes in flight; through the server it waits behind at most
 * two chunk relays. Most take 5-50 ms.
 */
const SMALL_WITHIN_MS = 100;
/**
 * But on a 2-core machine shared with builds and other suites a page or
 * the server is now and then not scheduled for a few hundred ms, and every
 * small message of that moment arrives late together (latencies such as
 * 299 249 199 149 99): at a load average of 8-12, 0-9 of ~170 per 64 MiB
 * direct transfer (37 of 415 once in a 26 s relayed one), none later than
 * 650 ms. So up to this share may be late, none by more than
 * `SMALL_WORST_MS`. Before the control channel and the chunk window, 29-44
 * per 64 MiB direct transfer were late, by up to 0.4-2 s.
 */
const SMALL_LATE_SHARE = 0.15;
const SMALL_WORST_MS = 1000;
const report = process.env.LARGE_REPORT === '1';
/** Characters of `make`'s alphabet (1.21 UTF-8 bytes each on average) that make a text just under 64 MiB. */
const TEXT_CHARS_64_MIB = 52 * MIB;

let env;
before(async () => {
  env = await setUp();
});
after(() => env?.tearDown());

/** Runs in the page: makes messages, sends and receives them, and keeps what the test checks. */
function installLarge() {
  const now = () => performance.timeOrigin + performance.now();
  const sha256 = async (data) => {
    const bytes = typeof data === 'string' ? new TextEncoder().encode(data) : data;
    const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
    return Array.from(digest, (b) => b.toString(16).padStart(2, '0')).join('');
  };
  const state = {
    outgoing: null,
    /** Large messages received, whole: `{ from, data, at }`. */
    received: [],
    /** Small broadcasts received: their latency in ms. */
    latencies: [],
    replies: [],
    /** Makes the next large message: random bytes, or text with 1-, 2- and 3-byte characters. */
    async make(size, text) {
      const bytes = new Uint8Array(size);
      for (let i = 0; i < size; i += 65536) crypto.getRandomValues(bytes.subarray(i, i + 65536));
      if (!text) {
        state.outgoing = bytes;
      } else {
        // Random characters of 1, 2 and 3 UTF-8 bytes, made as UTF-16 code units.
        const alphabet = Array.from('abcdefghijklmnopqrstuvwxyz0123456789 éüß✓€→', (c) => c.charCodeAt(0));
        const units = new Uint16Array(size);
        for (let i = 0; i < size; i++) units[i] = alphabet[bytes[i] % alphabet.length];
        state.outgoing = new TextDecoder('utf-16le').decode(units);
      }
      const bytesSent = text ? new TextEncoder().encode(state.outgoing).byteLength : size;
      return { hash: await sha256(state.outgoing), bytes: bytesSent };
    },
    /** Main-thread tasks over 50 ms (the browser's long tasks): `[start, duration]` in ms. */
    longTasks: [],
    listen() {
      new PerformanceObserver((list) => {
        for (const entry of list.getEntries()) state.longTasks.push([performance.timeOrigin + entry.startTime, entry.duration]);
      }).observe({ type: 'longtask' });
      const group = window.peer.group;
      group.onmessage = async (from, data) => {
        const at = now();
        // Length first: `startsWith` on a large text received in chunks
        // would flatten it, and stop the page for as long.
        if (typeof data === 'string' && data.length < 64 && data.startsWith('small:')) {
          state.latencies.push(at - Number(data.slice(6)));
          return;
        }
        // Hashed later (`take`): the page must stay free for the small ones.
        state.received.push({ from, data, at });
      };
      group.onunicast = (from, data) => {
        state.received.push({ from, data, at: now() });
        // A reply as large: the text itself, or the bytes reversed.
        return typeof data === 'string' ? data : data.slice().reverse();
      };
    },
    /**
     * Sends the message made last (broadcast, or unicast to `target`), with
     * a small broadcast every `smallEveryMs` meanwhile; `abortAfter` bytes
     * aborts it. Resolves with timings, progress and the outcome.
     */
    async send({ target, smallEveryMs, abortAfter }) {
      const group = window.peer.group;
      const controller = new AbortController();
      const progress = [];
      let monotonic = true;
      const options = {
        signal: controller.signal,
        onprogress: (sent, total) => {
          if (progress.length > 0 && sent <= progress[progress.length - 1][0]) monotonic = false;
          progress.push([sent, total]);
          if (abortAfter !== undefined && sent >= abortAfter) controller.abort(new Error('aborted by the test'));
        },
      };
      let small = 0;
      const ticker =
        smallEveryMs === undefined
          ? undefined
          : setInterval(() => {
              small++;
              group.broadcast(`small:${now()}`).catch(() => undefined);
            }, smallEveryMs);
      const started = now();
      let outcome;
      try {
        const reply = target === undefined ? await group.broadcast(state.outgoing, options) : await group.unicast(target, state.outgoing, options);
        const sent = state.outgoing;
        const replyOk =
          reply === undefined ||
          (typeof sent === 'string' ? reply === sent : reply.byteLength === sent.byteLength && reply.every((b, i) => b === sent[sent.length - 1 - i]));
        outcome = { ok: true, replyOk };
      } catch (error) {
        outcome = { ok: false, code: error.code, message: error.message };
      } finally {
        clearInterval(ticker);
      }
      const last = progress[progress.length - 1];
      return { ...outcome, started, ended: now(), small, monotonic, progressCount: progress.length, last };
    },
    /** The large messages received so far, hashed, and forgotten here. */
    async take() {
      const taken = state.received.splice(0);
      return Promise.all(
        taken.map(async ({ from, data, at }) => ({ from, at, text: typeof data === 'string', hash: await sha256(data) })),
      );
    },
    /** What the client still holds of transfers (its private maps: 0 when all is freed). */
    holding() {
      const group = window.peer.group;
      return group.channelIn.size + group.relayIn.size + group.replies.size;
    },
  };
  window.large = state;
}

/** Samples a page's JS heap + ArrayBuffer backing stores (CDP) every 50 ms, garbage included; `stop()` gives the peak in bytes. */
async function sampleMemory(page) {
  const cdp = await page.context().newCDPSession(page);
  // What making the message left behind is not the transfer's.
  await cdp.send('HeapProfiler.collectGarbage');
  let peak = 0;
  let running = true;
  const loop = (async () => {
    while (running) {
      const { usedSize, backingStorageSize } = await cdp.send('Runtime.getHeapUsage');
      peak = Math.max(peak, usedSize + (backingStorageSize ?? 0));
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      await cdp.detach();
      return peak;
    },
  };
}

/** Samples the server's resident set size (VmRSS) every 50 ms; `stop()` gives the peak in bytes. */
function sampleServerRss(pid) {
  let peak = 0;
  const read = async () => {
    const status = await readFile(`/proc/${pid}/status`, 'utf8');
    const kib = Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? 0);
    peak = Math.max(peak, kib * 1024);
  };
  const timer = setInterval(() => void read().catch(() => undefined), 50);
  return {
    async stop() {
      clearInterval(timer);
      await read();
      return peak;
    },
  };
}

/**
 * UDP datagrams the kernel dropped so far in this network namespace because
 * a receiver's socket buffer was full (`RcvbufErrors` in /proc/net/snmp):
 * on the direct path each is an SCTP packet a page must wait to have
 * sent again.
 */
async function udpDrops() {
  const snmp = await readFile('/proc/net/snmp', 'utf8');
  const [names, values] = snmp.split('\n').filter((line) => line.startsWith('Udp: '));
  const at = names?.split(' ').indexOf('RcvbufErrors') ?? -1;
  return Number(values?.split(' ')[at] ?? 0);
}

/** Two pages in one group, their link 'direct' or (P2P blocked) 'relayed'. */
async function pair(path) {
  const options = { connectTimeoutMs: path === 'relayed' ? CONNECT_TIMEOUT_MS : 20_000 };
  const a = await Peer.open(env.context, env.server, { options });
  const b = await Peer.open(env.context, env.server, { options });
  if (path === 'relayed') {
    await a.forceRelayWith(b.id);
    await b.forceRelayWith(a.id);
  }
  const groupId = await a.create();
  await b.join(groupId);
  await Promise.all([a.waitForLinks([a.id, b.id], path), b.waitForLinks([a.id, b.id], path)]);
  for (const peer of [a, b]) {
    await peer.page.evaluate(installLarge);
    await peer.page.evaluate(() => window.large.listen());
  }
  return { a, b, close: () => Promise.all([a.close(), b.close()]) };
}

/**
 * `a` sends a message of `size` bytes to `b` (a broadcast, or a unicast with
 * a reply as large); checks everything the file's header lists.
 */
async function transfer(a, b, { size, text = false, unicast = false, path }) {
  const made = await a.page.evaluate(({ size, text }) => window.large.make(size, text), { size, text });
  const memory = await Promise.all([sampleMemory(a.page), sampleMemory(b.page)]);
  const serverRss = sampleServerRss(env.server.pid);
  const dropsBefore = await udpDrops();
  const result = await a.page.evaluate((target) => window.large.send({ target, smallEveryMs: 50 }), unicast ? b.id : undefined);
  const drops = (await udpDrops()) - dropsBefore;
  const [sender, receiver] = await Promise.all(memory.map((m) => m.stop()));
  const serverPeak = await serverRss.stop();
  assert.ok(result.ok, `the send failed: ${result.code} ${result.message}`);
  await b.page.waitForFunction((n) => window.large.received.length >= n, 1);
  const [got] = await b.page.evaluate(() => window.large.take());
  assert.equal(got.hash, made.hash, 'the receiver got exactly what was sent');
  assert.equal(got.text, text);
  assert.ok(result.monotonic, 'progress only grows');
  assert.deepEqual(result.last, [made.bytes, made.bytes], 'progress ends at the total');
  assert.ok(result.replyOk, 'the large reply came back whole');
  const latencies = await b.page.evaluate(() => window.large.latencies.splice(0));
  const longTasks = await Promise.all(
    [a, b].map((peer) => peer.page.evaluate(() => window.large.longTasks.splice(0).map(([, ms]) => Math.round(ms)))),
  );
  const slowest = Math.max(0, ...latencies);
  const late = latencies.filter((ms) => ms >= SMALL_WITHIN_MS).length;
  const seconds = (result.ended - result.started) / 1000;
  const sorted = [...latencies].sort((x, y) => x - y);
  const at = (q) => (sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0).toFixed(0);
  const distribution =
    `${late} of ${latencies.length} small broadcasts took ${SMALL_WITHIN_MS} ms or more; ` +
    `p50 ${at(0.5)}, p90 ${at(0.9)}, p99 ${at(0.99)}, max ${slowest.toFixed(0)} ms`;
  if (report) {
    console.log(`# latencies ${latencies.map((l) => l.toFixed(0)).join(' ')}`);
    console.log(`# ${distribution}`);
    console.log(`# long tasks (ms): sender ${longTasks[0].join(' ') || 'none'}; receiver ${longTasks[1].join(' ') || 'none'}`);
    console.log(
      `# ${path} ${unicast ? 'unicast' : 'broadcast'} ${(size / MIB).toFixed(0)} MiB ${text ? 'text' : 'bytes'}: ` +
        `${(made.bytes / MIB / seconds).toFixed(1)} MiB/s (${seconds.toFixed(2)} s), ` +
        `peak sender ${(sender / MIB).toFixed(0)} MiB, receiver ${(receiver / MIB).toFixed(0)} MiB, ` +
        `server RSS ${(serverPeak / MIB).toFixed(0)} MiB, small broadcasts ${latencies.length}, late ${late}, slowest ${slowest.toFixed(1)} ms, ` +
        `UDP datagrams dropped ${drops}`,
    );
  }
  assert.ok(latencies.length >= Math.min(result.small, 1), `small broadcasts arrived: ${latencies.length} of ${result.small}`);
  // A unicast's handler runs on the receiving page, and its reply is made
  // there (a text's reply encoded whole): the page is busy then whatever
  // the transport does; the latency is checked where the pages do nothing
  // but the transfer.
  if (!unicast) {
    assert.ok(late <= SMALL_LATE_SHARE * latencies.length, `too many late during the transfer: ${distribution}`);
    assert.ok(slowest < SMALL_WORST_MS, `a small broadcast was held up during the transfer: ${distribution}`);
  }
  // Bounded: the message itself a few times over (made, copied at the send,
  // hashed), never the transfer's whole history.
  assert.ok(sender < 3 * made.bytes + 48 * MIB, `sending page peaked at ${(sender / MIB).toFixed(0)} MiB`);
  assert.ok(receiver < 3 * made.bytes + 48 * MIB, `receiving page peaked at ${(receiver / MIB).toFixed(0)} MiB`);
  if (path === 'relayed') assert.ok(serverPeak < 96 * MIB, `the server peaked at ${(serverPeak / MIB).toFixed(0)} MiB RSS`);
  return result;
}

for (const path of ['direct', 'relayed']) {
  test(`${path}: 64 MiB of bytes and 10 MiB of text arrive whole, in bounded memory, without holding up small messages`, async () => {
    const { a, b, close } = await pair(path);
    try {
      await transfer(a, b, { size: 64 * MIB, path });
      await transfer(a, b, { size: 10 * MIB, text: true, unicast: true, path });
    } finally {
      await close();
    }
  });

  test(`${path}: 10 MiB of bytes (a unicast, its reply as large) and 64 MiB of text arrive whole`, async () => {
    const { a, b, close } = await pair(path);
    try {
      await transfer(a, b, { size: 10 * MIB, unicast: true, path });
      // Characters of 1 to 3 UTF-8 bytes, ~1.2 on average: just under the 64 MiB limit.
      await transfer(a, b, { size: TEXT_CHARS_64_MIB, text: true, path });
    } finally {
      await close();
    }
  });

  test(`${path}: an abort frees both ends; a receiver that leaves fails the unicast with PeerGone`, async () => {
    const { a, b, close } = await pair(path);
    try {
      await a.page.evaluate(() => window.large.make(16 * 1024 * 1024, false));
      const aborted = await a.page.evaluate(() => window.large.send({ abortAfter: 2 * 1024 * 1024 }));
      assert.equal(aborted.ok, false);
      assert.equal(aborted.message, 'aborted by the test');
      assert.ok(aborted.last[0] < 16 * 1024 * 1024, 'the sender stopped before the end');
      await b.page.waitForFunction(() => window.large.holding() === 0);
      assert.equal(await a.page.evaluate(() => window.large.holding()), 0);
      assert.equal(await b.page.evaluate(() => window.large.received.length), 0, 'nothing was delivered');

      const sending = a.page.evaluate((target) => window.large.send({ target }), b.id);
      await b.page.waitForFunction(() => window.peer.group.channelIn.size + window.peer.group.relayIn.size > 0);
      await b.page.evaluate(() => window.peer.service.close());
      const gone = await sending;
      assert.equal(gone.ok, false);
      assert.equal(gone.code, -32008, `PeerGone, not ${gone.code} ${gone.message}`);
    } finally {
      await close();
    }
  });
}
