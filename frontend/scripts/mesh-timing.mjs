// Measures how long a group takes to become a full mesh in real Chromium:
// from the last `joinGroup()` call to the last DataChannel open, for
// N = 2, 4, 6, 8 members joining at once, and for one late joiner into a
// meshed group of N - 1. Prints medians (and min/max) over REPEATS runs.
//
// Needs the server binary, like the tests; run it in a loopback-only namespace:
//   unshare -n sh -c 'ip link set lo up && exec "$@"' sh npm --prefix frontend run mesh-timing
import { Peer, setUp, waitForMesh } from '../tests/harness.mjs';

const SIZES = [2, 4, 6, 8];
const REPEATS = Number(process.env.REPEATS ?? 5);

/** The page clock (ms) when the last link of `peers` to a member in `members` became direct. */
async function lastDirectAt(peers, members) {
  const times = await Promise.all(
    peers.map(async (peer) =>
      (await peer.events())
        .filter((e) => e.type === 'link' && e.state === 'direct' && members.includes(e.member))
        .map((e) => e.at),
    ),
  );
  return Math.max(...times.flat());
}

/** All but the owner join at once; ms from the last join call to a full mesh. */
async function allAtOnce(env, n) {
  const peers = await Promise.all(Array.from({ length: n }, () => Peer.open(env.context, env.server)));
  try {
    const [owner, ...joiners] = peers;
    const groupId = await owner.create();
    const calledAt = await Promise.all(joiners.map((peer) => peer.join(groupId)));
    await waitForMesh(peers);
    return (await lastDirectAt(peers, peers.map((p) => p.id))) - Math.max(...calledAt);
  } finally {
    await Promise.all(peers.map((peer) => peer.close()));
  }
}

/** One member joins a meshed group of n - 1; ms from its join call to its n - 1 links open (both ends). */
async function lateJoiner(env, n) {
  const peers = await Promise.all(Array.from({ length: n }, () => Peer.open(env.context, env.server)));
  try {
    const [owner, ...rest] = peers;
    const late = rest.pop();
    const groupId = await owner.create();
    await Promise.all(rest.map((peer) => peer.join(groupId)));
    await waitForMesh([owner, ...rest]);
    const calledAt = await late.join(groupId);
    await waitForMesh(peers);
    const others = peers.filter((peer) => peer !== late);
    const linksAtLate = await lastDirectAt([late], others.map((p) => p.id));
    const linksToLate = await lastDirectAt(others, [late.id]);
    return Math.max(linksAtLate, linksToLate) - calledAt;
  } finally {
    await Promise.all(peers.map((peer) => peer.close()));
  }
}

function summary(samples) {
  const sorted = [...samples].sort((a, b) => a - b);
  const median = sorted[Math.floor(sorted.length / 2)];
  const fmt = (ms) => `${Math.round(ms)}`.padStart(5);
  return `median ${fmt(median)} ms   (min ${fmt(sorted[0])}, max ${fmt(sorted.at(-1))})`;
}

const env = await setUp();
try {
  console.log(`time to full mesh, ${REPEATS} runs each (one browser, one context, one page per member)`);
  for (const n of SIZES) {
    const together = [];
    const late = [];
    for (let i = 0; i < REPEATS; i++) together.push(await allAtOnce(env, n));
    for (let i = 0; i < REPEATS; i++) late.push(await lateJoiner(env, n));
    console.log(`N=${n}  all join at once: ${summary(together)}   late joiner: ${summary(late)}`);
  }
} finally {
  await env.tearDown();
}
