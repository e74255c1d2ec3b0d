// Measures how long a group takes to become a full mesh in real Chromium:
// from the last `joinGroup()` call to the last DataChannel open, for
// N = 2, 4, 6, 8 members joining at once, and for one late joiner into a
// meshed group of N - 1. Prints medians (and min/max) over REPEATS runs.
//
// Needs the server binary, like the tests; run it in a loopback-only namespace:
//   unshare -n sh -c 'ip link set lo up && exec "$@"' sh npm --prefix frontend run mesh-timing
//
// PHASES=1 also times each RTCPeerConnection's steps (see `instrument`) and
// prints, for the all-at-once runs, the median over connections of when each
// step happened, in ms after the last join call.
import { Peer, setUp, waitForMesh } from '../tests/harness.mjs';

const SIZES = [2, 4, 6, 8];
const REPEATS = Number(process.env.REPEATS ?? 5);
const PHASES = process.env.PHASES === '1';

/**
 * Runs in every page before the client: wraps RTCPeerConnection to note, per
 * connection, the page clock at each step (first time only). The offerer is
 * the side that creates the DataChannel; the answerer applies the offer the
 * moment its relay arrives, so `offer received` is also the end of the offer's
 * trip through the server, and `answer received` that of the answer.
 */
function instrument() {
  const Original = window.RTCPeerConnection;
  if (Original === undefined) return;
  const now = () => performance.timeOrigin + performance.now();
  const log = (window.meshTimingLog = []);
  window.RTCPeerConnection = class extends Original {
    constructor(...args) {
      const created = now();
      super(...args);
      const record = { offerer: false, at: { created } };
      log.push(record);
      this.record = record;
      const mark = (step) => (record.at[step] ??= now());
      this.addEventListener('iceconnectionstatechange', () => {
        if (this.iceConnectionState === 'connected') mark('ICE connected');
      });
      this.addEventListener('connectionstatechange', () => {
        if (this.connectionState === 'connected') mark('DTLS connected');
      });
      this.addEventListener('datachannel', ({ channel }) => channel.addEventListener('open', () => mark('channel open')));
    }
    createDataChannel(...args) {
      const channel = super.createDataChannel(...args);
      this.record.offerer = true;
      channel.addEventListener('open', () => (this.record.at['channel open'] ??= now()));
      return channel;
    }
    async setLocalDescription(...args) {
      const result = await super.setLocalDescription(...args);
      const type = this.localDescription?.type;
      if (type === 'offer' || type === 'answer') this.record.at[`${type} set locally`] ??= now();
      return result;
    }
    async setRemoteDescription(description) {
      if (description?.type === 'offer' || description?.type === 'answer') this.record.at[`${description.type} received`] ??= now();
      return super.setRemoteDescription(description);
    }
  };
}

/** Per N, per '<role>: <step>', the times (ms after the last join call) of the all-at-once runs. */
const phases = new Map();

async function notePhases(n, peers, since) {
  const steps = phases.get(n) ?? new Map();
  phases.set(n, steps);
  for (const peer of peers) {
    for (const record of await peer.page.evaluate(() => window.meshTimingLog ?? [])) {
      const role = record.offerer ? 'offerer' : 'answerer';
      for (const [step, at] of Object.entries(record.at)) {
        const key = `${role}: ${step}`;
        steps.set(key, [...(steps.get(key) ?? []), at - since]);
      }
    }
  }
}

function printPhases() {
  for (const [n, steps] of phases) {
    console.log(`N=${n} all at once, per connection, ms after the last join call (median, max):`);
    const rows = [...steps].map(([step, times]) => [step, median(times), Math.max(...times)]);
    for (const [step, med, max] of rows.sort((a, b) => a[1] - b[1])) {
      console.log(`  ${step.padEnd(28)} ${`${Math.round(med)}`.padStart(5)} ${`${Math.round(max)}`.padStart(6)}`);
    }
  }
}

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
    const lastCall = Math.max(...calledAt);
    if (PHASES) await notePhases(n, peers, lastCall);
    return (await lastDirectAt(peers, peers.map((p) => p.id))) - lastCall;
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

function median(samples) {
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

function summary(samples) {
  const sorted = [...samples].sort((a, b) => a - b);
  const median = sorted[Math.floor(sorted.length / 2)];
  const fmt = (ms) => `${Math.round(ms)}`.padStart(5);
  return `median ${fmt(median)} ms   (min ${fmt(sorted[0])}, max ${fmt(sorted.at(-1))})`;
}

const env = await setUp();
if (PHASES) await env.context.addInitScript(instrument);
try {
  console.log(`time to full mesh, ${REPEATS} runs each (one browser, one context, one page per member)`);
  for (const n of SIZES) {
    const together = [];
    const late = [];
    for (let i = 0; i < REPEATS; i++) together.push(await allAtOnce(env, n));
    for (let i = 0; i < REPEATS; i++) late.push(await lateJoiner(env, n));
    console.log(`N=${n}  all join at once: ${summary(together)}   late joiner: ${summary(late)}`);
  }
  if (PHASES) printPhases();
} finally {
  await env.tearDown();
}
