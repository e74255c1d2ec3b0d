// Pages behind two "homes" that cannot reach each other connect peer to peer
// through a real TURN server (Debian's coturn) with the credentials the
// signaling server hands out in `session`; without TURN, or with the wrong
// TURN secret, their link falls back to relaying through the server.
//
// The test builds its own network in three network namespaces it creates
// and deletes: "hub" (signaling server and coturn, on 10.201.0.1) and two
// homes, each a headless Chromium joined to the hub by a veth pair
// (10.201.1.0/30, 10.201.2.0/30). Each home has a route to the hub's address
// only, and the hub does not forward: the homes cannot reach each other.
// These private addresses exist only inside those namespaces, and no traffic
// leaves them (the namespace the test runs in is not touched).
// Needs root (CI is); skips, loudly, only when it cannot create namespaces.
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { chromium } from 'playwright-core';
import { CHROMIUM, CHROMIUM_ARGS, Peer, WAIT_MS, startServer, waitForMesh } from './harness.mjs';

const HUB_ADDRESS = '10.201.0.1';
const TURN_PORT = 3478;
const TURN_SECRET = 'the coturn static-auth-secret of this test';
/** P2P that cannot work gives up this soon (the default is 10 s). */
const CONNECT_TIMEOUT_MS = 3_000;

/** Unique per run, so that parallel runs on one machine do not collide. */
const PREFIX = `wp2p${process.pid}`;
const NAMESPACES = { hub: `${PREFIX}hub`, a: `${PREFIX}a`, b: `${PREFIX}b` };

function ip(...args) {
  execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

function inHub(...command) {
  execFileSync('ip', ['netns', 'exec', NAMESPACES.hub, ...command], { stdio: ['ignore', 'ignore', 'pipe'] });
}

/** The namespaces and links; throws when namespaces cannot be created. */
function buildNetwork() {
  for (const name of Object.values(NAMESPACES)) ip('netns', 'add', name);
  const hub = NAMESPACES.hub;
  ip('-n', hub, 'link', 'set', 'lo', 'up');
  ip('-n', hub, 'addr', 'add', `${HUB_ADDRESS}/32`, 'dev', 'lo');
  inHub('sysctl', '-qw', 'net.ipv4.ip_forward=0');
  for (const [home, subnet] of [
    ['a', 1],
    ['b', 2],
  ]) {
    const ns = NAMESPACES[home];
    ip('-n', hub, 'link', 'add', `to${home}`, 'type', 'veth', 'peer', 'name', 'up0', 'netns', ns);
    ip('-n', hub, 'addr', 'add', `10.201.${subnet}.1/30`, 'dev', `to${home}`);
    ip('-n', hub, 'link', 'set', `to${home}`, 'up');
    ip('-n', ns, 'link', 'set', 'lo', 'up');
    ip('-n', ns, 'addr', 'add', `10.201.${subnet}.2/30`, 'dev', 'up0');
    ip('-n', ns, 'link', 'set', 'up0', 'up');
    ip('-n', ns, 'route', 'add', `${HUB_ADDRESS}/32`, 'via', `10.201.${subnet}.1`);
  }
}

function tearDownNetwork() {
  for (const name of Object.values(NAMESPACES)) {
    try {
      ip('netns', 'del', name);
    } catch {
      // Not created, or gone already.
    }
  }
}

/** Starts coturn in the hub with the TURN REST API secret; resolves once it listens. */
async function startCoturn(dir) {
  const config = join(dir, 'turnserver.conf');
  writeFileSync(
    config,
    [
      `listening-ip=${HUB_ADDRESS}`,
      `relay-ip=${HUB_ADDRESS}`,
      `listening-port=${TURN_PORT}`,
      'min-port=49152',
      'max-port=49999',
      'use-auth-secret',
      `static-auth-secret=${TURN_SECRET}`,
      'realm=webrtc-p2p.test',
      'fingerprint',
      'no-tls',
      'no-dtls',
      'no-cli',
      'no-tcp-relay',
      `userdb=${join(dir, 'turndb')}`,
      `pidfile=${join(dir, 'turnserver.pid')}`,
      'log-file=stdout',
      'simple-log',
      'verbose',
      '',
    ].join('\n'),
  );
  const child = spawn('ip', ['netns', 'exec', NAMESPACES.hub, 'turnserver', '-c', config], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const killOnExit = () => child.kill('SIGKILL');
  process.once('exit', killOnExit);
  let log = '';
  const ready = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`coturn did not start:\n${log}`)), WAIT_MS);
    const onData = (chunk) => {
      log = (log + chunk).slice(-20_000);
      // coturn says so once its UDP listener is bound.
      if (/IPv4\. UDP listener opened on/.test(log)) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout.setEncoding('utf8').on('data', onData);
    child.stderr.setEncoding('utf8').on('data', onData);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`coturn exited (${code}):\n${log}`));
    });
  });
  await ready;
  return {
    log: () => log,
    async stop() {
      process.off('exit', killOnExit);
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      await once(child, 'exit');
    },
  };
}

/** A headless Chromium inside a home's namespace (the launcher is wrapped in `ip netns exec`). */
async function launchIn(home, dir) {
  const wrapper = join(dir, `chromium-${home}.sh`);
  writeFileSync(wrapper, `#!/bin/sh\nexec ip netns exec ${NAMESPACES[home]} ${CHROMIUM} "$@"\n`);
  chmodSync(wrapper, 0o755);
  // No loopback candidates: the homes' links are their only way out.
  const args = CHROMIUM_ARGS.filter((arg) => arg !== '--allow-loopback-in-peer-connection');
  const browser = await chromium.launch({ executablePath: wrapper, args });
  const context = await browser.newContext();
  await context.grantPermissions(['camera', 'microphone']);
  return { browser, context };
}

/**
 * Runs in a page before any RTCPeerConnection exists: keeps every one the
 * client makes, so that the test can read its selected candidate pair.
 */
function trackPeerConnections() {
  const Native = window.RTCPeerConnection;
  window.peerConnections = [];
  window.RTCPeerConnection = class extends Native {
    constructor(...args) {
      super(...args);
      window.peerConnections.push(this);
    }
  };
}

/** Runs in a page: the candidate types of each connected RTCPeerConnection's selected pair. */
async function selectedPairs() {
  const pairs = [];
  for (const pc of window.peerConnections) {
    if (pc.connectionState !== 'connected') continue;
    const stats = [...(await pc.getStats()).values()];
    const byId = new Map(stats.map((s) => [s.id, s]));
    const transport = stats.find((s) => s.type === 'transport' && s.selectedCandidatePairId);
    const pair = transport && byId.get(transport.selectedCandidatePairId);
    if (pair === undefined) continue;
    pairs.push({
      local: byId.get(pair.localCandidateId)?.candidateType,
      remote: byId.get(pair.remoteCandidateId)?.candidateType,
    });
  }
  return pairs;
}

describe('TURN between two homes that cannot reach each other', () => {
  let dir;
  let coturn;
  const homes = {};
  let skip = '';

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'webrtc-p2p-turn-'));
    try {
      buildNetwork();
    } catch (error) {
      tearDownNetwork();
      skip = `cannot create network namespaces (needs root): ${error.stderr?.toString().trim() || error.message}`;
      console.error(`\n!!! SKIPPING the TURN browser tests: ${skip}\n`);
      return;
    }
    for (const signal of ['SIGINT', 'SIGTERM']) process.once(signal, () => tearDownNetwork());
    process.once('exit', tearDownNetwork);
    coturn = await startCoturn(dir);
    homes.a = await launchIn('a', dir);
    homes.b = await launchIn('b', dir);
  });

  after(async () => {
    for (const home of Object.values(homes)) await home.browser.close();
    await coturn?.stop();
    tearDownNetwork();
    rmSync(dir, { recursive: true, force: true });
  });

  /** A server in the hub with `flags`, and how each home reaches it. */
  async function hubServer(flags) {
    return startServer(flags, { host: HUB_ADDRESS, wrap: ['ip', 'netns', 'exec', NAMESPACES.hub] });
  }

  const turnFlags = (secret) => ['--turn-url', `turn:${HUB_ADDRESS}:${TURN_PORT}?transport=udp`, '--turn-secret', secret];

  /**
   * `count` pages spread over the homes (a, b, a, b, …), the first creates
   * a group and the rest join at once. Resolves once every link is in
   * `state`, with the pages and the time from the last join call to the
   * last link reaching that state.
   */
  async function groupAcrossHomes(server, count, state) {
    const options = { connectTimeoutMs: CONNECT_TIMEOUT_MS };
    const peers = [];
    for (let i = 0; i < count; i++) {
      const peer = await Peer.open(homes[i % 2 === 0 ? 'a' : 'b'].context, server, { options });
      await peer.page.evaluate(trackPeerConnections);
      peers.push(peer);
    }
    const [owner, ...others] = peers;
    const groupId = await owner.create();
    const joinedAt = await Promise.all(others.map((peer) => peer.join(groupId)));
    await waitForMesh(peers, state);
    const events = (await Promise.all(peers.map((peer) => peer.events()))).flat();
    const settledAt = Math.max(...events.filter((e) => e.type === 'link' && e.state === state).map((e) => e.at));
    return { peers, ms: Math.round(settledAt - Math.max(...joinedAt)) };
  }

  test('with --turn-*, two pages connect directly over a relay candidate pair', async (t) => {
    if (skip) return t.skip(skip);
    const server = await hubServer(turnFlags(TURN_SECRET));
    try {
      const { peers, ms } = await groupAcrossHomes(server, 2, 'direct');
      for (const peer of peers) {
        const pairs = await peer.page.evaluate(selectedPairs);
        assert.equal(pairs.length, 1, JSON.stringify(pairs));
        assert.ok(pairs[0].local === 'relay' || pairs[0].remote === 'relay', JSON.stringify(pairs));
      }
      console.log(`TURN mesh of 2 pages: ${ms} ms from the last join`);
      await Promise.all(peers.map((peer) => peer.close()));
    } finally {
      await server.stop();
    }
  });

  test('without TURN, the pages fall back to relaying through the server', async (t) => {
    if (skip) return t.skip(skip);
    const server = await hubServer([]);
    try {
      const { peers } = await groupAcrossHomes(server, 2, 'relayed');
      const [a, b] = peers;
      await a.broadcast('through the server');
      await b.waitForMessage(a.id, 'through the server');
      await Promise.all(peers.map((peer) => peer.close()));
    } finally {
      await server.stop();
    }
  });

  test('with the wrong TURN secret, coturn refuses the credentials and the link is relayed', async (t) => {
    if (skip) return t.skip(skip);
    const server = await hubServer(turnFlags('not the secret coturn has'));
    try {
      const { peers } = await groupAcrossHomes(server, 2, 'relayed');
      await Promise.all(peers.map((peer) => peer.close()));
    } finally {
      await server.stop();
    }
  });

  test('a group of four split over the homes forms its mesh through TURN', async (t) => {
    if (skip) return t.skip(skip);
    const server = await hubServer(turnFlags(TURN_SECRET));
    try {
      const { peers, ms } = await groupAcrossHomes(server, 4, 'direct');
      for (const peer of peers) {
        const pairs = await peer.page.evaluate(selectedPairs);
        assert.equal(pairs.length, 3, JSON.stringify(pairs));
      }
      // The pages in one home reach each other on their own link; across
      // homes only a relay candidate can carry the pair.
      const [a1, b1] = peers;
      const across = await a1.page.evaluate(selectedPairs);
      assert.equal(across.filter((p) => p.local === 'relay' || p.remote === 'relay').length >= 2, true, JSON.stringify(across));
      await a1.broadcast('over TURN');
      await b1.waitForMessage(a1.id, 'over TURN');
      console.log(`TURN mesh of 4 pages: ${ms} ms from the last join`);
      await Promise.all(peers.map((peer) => peer.close()));
    } finally {
      await server.stop();
    }
  });
});
