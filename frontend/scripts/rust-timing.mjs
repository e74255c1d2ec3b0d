// Measures the Rust `peer` example's direct links: the time from its `join`
// command to the `link … direct` line, against a page and against another
// Rust peer (median, min and max over REPEATS runs), and the DataChannel
// throughput between a page and a Rust peer for 1 MiB of unicasts (16 of
// 64 KiB at once, each answered with as many bytes), both directions.
//
// Needs the server binary and the example, like the tests; run it in a
// loopback-only namespace:
//   unshare -n sh -c 'ip link set lo up && exec "$@"' sh npm --prefix frontend run rust-timing
import { Peer, setUp } from '../tests/harness.mjs';
import { startRust } from '../tests/rust-peer.mjs';

const REPEATS = Number(process.env.REPEATS ?? 10);
const UNICASTS = 16;
const UNICAST_BYTES = 64 * 1024;

const now = () => performance.timeOrigin + performance.now();

function summary(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const median = sorted[Math.floor(sorted.length / 2)];
  return `median ${median.toFixed(0)} ms (min ${sorted[0].toFixed(0)}, max ${sorted.at(-1).toFixed(0)}, n=${sorted.length})`;
}

/** ms from the joiner's `join` command to its link to `other` being direct. */
async function joinToDirect(joiner, groupId, other) {
  const sent = now();
  joiner.send(`join ${groupId}`);
  return (await joiner.timeOf(new RegExp(`^link ${other} direct$`))) - sent;
}

const env = await setUp();
try {
  const withPage = [];
  const withRust = [];
  for (let i = 0; i < REPEATS; i++) {
    const page = await Peer.open(env.context, env.server);
    const rust = await startRust(env.server.wsUrl);
    withPage.push(await joinToDirect(rust, await page.create(), page.id));
    await rust.kill();
    await page.close();

    const owner = await startRust(env.server.wsUrl);
    owner.send('create');
    const [, groupId] = await owner.waitForLine(/^created (\S+)$/);
    const joiner = await startRust(env.server.wsUrl);
    withRust.push(await joinToDirect(joiner, groupId, owner.id));
    await Promise.all([owner.kill(), joiner.kill()]);
  }
  console.log(`Rust ↔ page: join → direct ${summary(withPage)}`);
  console.log(`Rust ↔ Rust: join → direct ${summary(withRust)}`);

  const page = await Peer.open(env.context, env.server);
  const rust = await startRust(env.server.wsUrl);
  await joinToDirect(rust, await page.create(), page.id);
  // Page → Rust: bytes, echoed back by the peer.
  const pageToRust = await page.page.evaluate(
    async ({ target, count, size }) => {
      const body = new Uint8Array(size).map((_, i) => i % 251);
      const started = performance.now();
      const replies = await Promise.all(Array.from({ length: count }, () => window.peer.group.unicast(target, body)));
      if (replies.some((reply) => reply.byteLength !== size)) throw new Error('a short reply');
      return performance.now() - started;
    },
    { target: rust.id, count: UNICASTS, size: UNICAST_BYTES },
  );
  // Rust → page: text, answered by the page with the text prefixed.
  const text = 'x'.repeat(UNICAST_BYTES);
  const started = now();
  for (let i = 0; i < UNICASTS; i++) rust.send(`ask ${page.id} ${text}`);
  await rust.waitForLine(new RegExp(`^reply ${page.id} re:x{${UNICAST_BYTES}}$`), UNICASTS);
  const rustToPage = now() - started;
  const mib = (UNICASTS * UNICAST_BYTES) / (1024 * 1024);
  const rate = (ms) => `${ms.toFixed(0)} ms, ${((2 * mib) / (ms / 1000)).toFixed(1)} MiB/s counting both ways`;
  console.log(`page → Rust: ${mib} MiB of unicasts in ${UNICASTS} × ${UNICAST_BYTES / 1024} KiB, echoed: ${rate(pageToRust)}`);
  console.log(`Rust → page: ${mib} MiB of unicasts in ${UNICASTS} × ${UNICAST_BYTES / 1024} KiB, answered: ${rate(rustToPage)}`);
  await rust.kill();
  await page.close();
} finally {
  await env.tearDown();
}
