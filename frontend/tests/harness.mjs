// What the browser tests share: the real server binary on 127.0.0.1:0, one
// headless Chromium with the flags of frontend/README.md, and `Peer`,
// a page driving the real client bundle (`/webrtc-p2p.js`) from node.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

/** The server binary: built by `cargo build -p webrtc-p2p-server`, or `$WEBRTC_P2P_SERVER_BIN`. */
export const SERVER_BIN =
  process.env.WEBRTC_P2P_SERVER_BIN ?? fileURLToPath(new URL('../../target/debug/webrtc-p2p-server', import.meta.url));

export const CHROMIUM = process.env.CHROMIUM_BIN ?? '/usr/bin/chromium';

/** frontend/README.md: without the loopback flag no candidate pairs on 127.0.0.1. */
export const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--allow-loopback-in-peer-connection',
];

/** Events are awaited, never slept for; these bound the waits (timings vary 2–5× between runs). */
export const WAIT_MS = 30_000;
const SERVER_START_TIMEOUT_MS = 30_000;
/** Poll page state often: a mesh forms in ~100–500 ms. */
const POLL_MS = 5;

/**
 * Starts the server binary on an ephemeral port (of `host`, loopback by
 * default) and waits for its one stdout line, `listening on HOST:PORT`.
 * `wrap` prefixes the command (e.g. `ip netns exec NAME`).
 */
export async function startServer(extraArgs = [], { host = '127.0.0.1', wrap = [] } = {}) {
  const [command, ...args] = [...wrap, SERVER_BIN, '--listen', `${host}:0`, ...extraArgs];
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  // A test process that dies must not leave its server behind.
  const killOnExit = () => child.kill('SIGKILL');
  process.once('exit', killOnExit);
  child.once('exit', () => process.off('exit', killOnExit));
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk) => {
    stderr = (stderr + chunk).slice(-10_000);
  });
  const exited = once(child, 'exit').then(([code, signal]) => {
    throw new Error(`the server exited (${code ?? signal}) before listening:\n${stderr}`);
  });
  const spawnFailed = once(child, 'error').then(([error]) => {
    throw new Error(`cannot start ${SERVER_BIN} (build it: cargo build -p webrtc-p2p-server): ${error.message}`);
  });
  const listening = (async () => {
    for await (const line of createInterface({ input: child.stdout })) {
      const match = /^listening on (\S+:\d+)$/.exec(line);
      if (match) return match[1];
    }
    throw new Error('the server closed stdout without listening');
  })();
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error('the server did not listen in time')), SERVER_START_TIMEOUT_MS);
  });
  try {
    const address = await Promise.race([listening, exited, spawnFailed, timeout]);
    exited.catch(() => undefined);
    return {
      /** The server's process id, to read its memory from /proc. */
      pid: child.pid,
      httpUrl: `http://${address}`,
      wsUrl: `ws://${address}/ws`,
      stderr: () => stderr,
      async stop() {
        if (child.exitCode !== null || child.signalCode !== null) return;
        child.kill('SIGTERM');
        await once(child, 'exit');
      },
      /** `kill -9`: the node dies without a word to anyone. */
      async kill() {
        if (child.exitCode !== null || child.signalCode !== null) return;
        child.kill('SIGKILL');
        await once(child, 'exit');
      },
    };
  } catch (error) {
    child.kill('SIGKILL');
    throw error;
  } finally {
    clearTimeout(timer);
  }
}

/**
 * One browser, one context, N pages (the cheapest set-up). The media
 * permission is granted before any page exists: without it Chromium offers
 * no ICE candidates at all.
 */
export async function launchBrowser() {
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  const context = await browser.newContext();
  await context.grantPermissions(['camera', 'microphone']);
  return { browser, context };
}

/** redis-server for the cluster runs: `$REDIS_SERVER_BIN`, or on the PATH (Debian's `redis-server`). */
export const REDIS_SERVER = process.env.REDIS_SERVER_BIN ?? 'redis-server';

/**
 * Nodes `setUp` starts: 1, a single server; more, that many servers sharing
 * one redis-server of the test's own. Set by a file that runs another
 * file's tests against a cluster, before importing it.
 */
let nodesPerSetUp = 1;
export function useNodes(count) {
  nodesPerSetUp = count;
}

/**
 * A redis-server on a free loopback port, without persistence, killed with
 * the test process. Resolves once it accepts connections.
 */
export async function startRedis() {
  const port = await freePort();
  const child = spawn(REDIS_SERVER, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  const killOnExit = () => child.kill('SIGKILL');
  process.once('exit', killOnExit);
  child.once('exit', () => process.off('exit', killOnExit));
  const spawnFailed = once(child, 'error').then(([error]) => {
    throw new Error(`cannot start ${REDIS_SERVER} (apt-get install redis-server): ${error.message}`);
  });
  const ready = (async () => {
    for await (const line of createInterface({ input: child.stdout })) {
      if (line.includes('Ready to accept connections')) return;
    }
    throw new Error('redis-server ended before it was ready');
  })();
  await Promise.race([ready, spawnFailed]);
  // Keep draining its output, so that it never blocks on a full pipe.
  child.stdout.resume();
  return {
    url: `redis://127.0.0.1:${port}`,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGKILL');
      await once(child, 'exit');
    },
  };
}

/** A port that was free a moment ago (bound, then released for a child to take). */
async function freePort() {
  const { createServer } = await import('node:net');
  const probe = createServer();
  await new Promise((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const { port } = probe.address();
  await new Promise((resolve) => probe.close(resolve));
  return port;
}

/**
 * `count` servers sharing a redis-server started for them: one service.
 * What `Peer.open` takes: each page it opens goes to the next node in turn.
 */
export async function startCluster(count, extraArgs = []) {
  const redis = await startRedis();
  const nodes = [];
  try {
    for (let i = 0; i < count; i++) nodes.push(await startServer(['--redis', redis.url, ...extraArgs]));
  } catch (error) {
    await Promise.all(nodes.map((node) => node.stop()));
    await redis.stop();
    throw error;
  }
  let turn = 0;
  return {
    nodes,
    redis,
    /** The node the next page connects to. */
    next() {
      return nodes[turn++ % nodes.length];
    },
    async stop() {
      await Promise.all(nodes.map((node) => node.stop()));
      await redis.stop();
    },
  };
}

/** Starts what a test file needs (see `useNodes`) and stops it when the file is done. */
export async function setUp(serverArgs = []) {
  const server = nodesPerSetUp === 1 ? await startServer(serverArgs) : await startCluster(nodesPerSetUp, serverArgs);
  const { browser, context } = await launchBrowser();
  return {
    server,
    browser,
    context,
    async tearDown() {
      await browser.close();
      await server.stop();
    },
  };
}

/** Runs in the page: loads the client from the server and keeps what the test inspects. */
async function installPeer({ wsUrl, options }) {
  const { SimpleService, GroupCapability } = await import('/webrtc-p2p.js');
  const blocked = new Set();
  const service = new SimpleService(wsUrl, { ...options, forceRelay: (peer) => blocked.has(peer) });
  const info = await service.join();
  const encode = (data) => (typeof data === 'string' ? { text: data } : { bytes: Array.from(data) });
  const decode = (value) => (value.text !== undefined ? value.text : new Uint8Array(value.bytes));
  const state = {
    SimpleService,
    GroupCapability,
    service,
    id: info.id(),
    /** Peers whose links must fail P2P (the `forceRelay` test hook). */
    blocked,
    group: null,
    /** Every broadcast received, in order: `{ from, data }` with data encoded. */
    received: [],
    /** Member joins and leaves, and link state changes, in order. */
    events: [],
    encode,
    decode,
    attach(group) {
      state.group = group;
      group.onmessage = (from, data) => state.received.push({ from, data: encode(data) });
      // Replies show they went through the handler: text is prefixed, bytes
      // reversed; 'throw' throws and 'hang' never answers.
      group.onunicast = (from, data) => {
        if (typeof data !== 'string') return data.slice().reverse();
        if (data === 'throw') throw new Error('handler failed on purpose');
        if (data === 'hang') return new Promise(() => undefined);
        return `re:${data}`;
      };
      // `at`: a wall-clock time in ms, comparable across the pages of one machine.
      const now = () => performance.timeOrigin + performance.now();
      group.onmemberjoin = (member) => state.events.push({ type: 'join', member, at: now() });
      group.onmemberleave = (member) => state.events.push({ type: 'leave', member, at: now() });
      group.onlinkstatechange = (member, linkState) =>
        state.events.push({ type: 'link', member, state: linkState, at: now() });
      return group.id();
    },
    /** How this page sees its group: members and the state of each link. */
    view() {
      const group = state.group;
      if (group === null) return null;
      const links = {};
      for (const member of group.members()) if (member !== state.id) links[member] = group.linkState(member);
      return { members: group.members(), owner: group.owner(), links };
    },
  };
  window.peer = state;
  return state.id;
}

/** A browser page holding one `SimpleService`, driven from the test. */
export class Peer {
  /** @param {import('playwright-core').Page} page @param {string} id */
  constructor(page, id) {
    this.page = page;
    this.id = id;
  }

  /**
   * Opens a page on the server's origin and connects a service.
   * `service` is a server, or a cluster whose next node is used.
   * `options` go to `new SimpleService`.
   */
  static async open(context, service, { options = {} } = {}) {
    // A cluster (`startCluster`) hands out its nodes in turn.
    const server = service.next?.() ?? service;
    const page = await context.newPage();
    page.on('pageerror', (error) => console.error(`[page error] ${error.message}`));
    // Any page of the server's origin will do: the client is loaded by import().
    await page.goto(`${server.httpUrl}/webrtc-p2p.js`);
    const id = await page.evaluate(installPeer, { wsUrl: server.wsUrl, options });
    return new Peer(page, id);
  }

  /** From now on, links to `peerId` fail P2P (the client's `forceRelay` hook). */
  forceRelayWith(peerId) {
    return this.page.evaluate((peerId) => window.peer.blocked.add(peerId), peerId);
  }

  /** Creates a group; resolves with its id. */
  create(capability) {
    return this.page.evaluate(
      async (capability) => window.peer.attach(await window.peer.service.createGroup(capability ?? undefined)),
      capability ?? null,
    );
  }

  /** Joins a group; resolves with the page's clock (ms) when it called `joinGroup`. */
  join(groupId) {
    return this.page.evaluate(async (groupId) => {
      const calledAt = performance.timeOrigin + performance.now();
      window.peer.attach(await window.peer.service.joinGroup(groupId));
      return calledAt;
    }, groupId);
  }

  leave() {
    return this.page.evaluate(() => window.peer.group.leave());
  }

  view() {
    return this.page.evaluate(() => window.peer.view());
  }

  /** The broadcasts received so far: `{ from, data }`, data a string or a byte array. */
  received() {
    return this.page.evaluate(() =>
      window.peer.received.map(({ from, data }) => ({ from, data: data.text ?? data.bytes })),
    );
  }

  events() {
    return this.page.evaluate(() => window.peer.events);
  }

  /** Broadcasts a string, or bytes given as a `Uint8Array`. */
  broadcast(data) {
    return this.page.evaluate((value) => window.peer.group.broadcast(window.peer.decode(value)), encodeArg(data));
  }

  /**
   * Unicasts a string or bytes; resolves with `{ reply }` (a string or a
   * byte array) or `{ error: { name, code, message } }`.
   */
  unicast(target, data) {
    return this.page.evaluate(
      async ({ target, value }) => {
        try {
          const reply = await window.peer.group.unicast(target, window.peer.decode(value));
          return { reply: typeof reply === 'string' ? reply : Array.from(reply), isBytes: reply instanceof Uint8Array };
        } catch (error) {
          return { error: { name: error.name, code: error.code, message: error.message } };
        }
      },
      { target, value: encodeArg(data) },
    );
  }

  /** Waits until `predicate(view)` holds in the page; `predicate` runs in the page. */
  async waitForView(predicate, arg, timeout = WAIT_MS) {
    await this.page.waitForFunction(
      ({ predicate, arg }) => {
        const view = window.peer.view();
        return view !== null && new Function('view', 'arg', `return (${predicate})(view, arg);`)(view, arg);
      },
      { predicate: predicate.toString(), arg },
      { polling: POLL_MS, timeout },
    );
  }

  /** Waits until every other member in `members` is linked with `state` and the member list is exactly `members`. */
  waitForLinks(members, state, timeout = WAIT_MS) {
    return this.waitForView(
      (view, { members, state, self }) =>
        view.members.length === members.length &&
        members.every((m) => view.members.includes(m)) &&
        members.every((m) => m === self || view.links[m] === state),
      { members, state, self: this.id },
      timeout,
    );
  }

  /** Waits until a broadcast matching `data` (a string) from `from` arrived. */
  waitForMessage(from, data, timeout = WAIT_MS) {
    return this.page.waitForFunction(
      ({ from, data }) => window.peer.received.some((m) => m.from === from && m.data.text === data),
      { from, data },
      { polling: POLL_MS, timeout },
    );
  }

  close() {
    return this.page.close();
  }
}

function encodeArg(data) {
  return typeof data === 'string' ? { text: data } : { bytes: Array.from(data) };
}

/** Opens `count` peers; the first creates a group (with `capability`), the others join it. */
export async function formGroup(context, server, count, { capability, options } = {}) {
  const peers = [];
  for (let i = 0; i < count; i++) peers.push(await Peer.open(context, server, { options }));
  const [owner, ...others] = peers;
  const groupId = await owner.create(capability);
  await Promise.all(others.map((peer) => peer.join(groupId)));
  return { peers, groupId, ids: peers.map((peer) => peer.id) };
}

/** Every page of the group sees every other member over a link in `state`. */
export async function waitForMesh(peers, state = 'direct', timeout = WAIT_MS) {
  const ids = peers.map((peer) => peer.id);
  await Promise.all(peers.map((peer) => peer.waitForLinks(ids, state, timeout)));
}

/** All 256 byte values, so that any re-encoding (UTF-8, base64 slip) shows. */
export const ALL_BYTES = Uint8Array.from({ length: 256 }, (_, i) => i);

/**
 * A loopback TCP forwarder to `server` that the test controls: `cut()` ends
 * every connection through it at once (no WebSocket close frame: a network
 * cut); while `setDown(true)`, new connections are dropped on arrival.
 * `server` is what `Peer.open` takes: pages load the client from the
 * server and connect their service through the proxy.
 */
export async function startProxy(server) {
  const net = await import('node:net');
  const hostAndPort = (server) => new URL(server.httpUrl).host.split(':');
  let [host, port] = hostAndPort(server);
  const open = new Set();
  let down = false;
  const listener = net.createServer((inbound) => {
    if (down) return inbound.destroy();
    const outbound = net.connect(Number(port), host);
    const pair = [inbound, outbound];
    open.add(pair);
    const end = () => {
      open.delete(pair);
      inbound.destroy();
      outbound.destroy();
    };
    for (const socket of pair) {
      socket.setNoDelay(true);
      socket.on('error', end);
      socket.on('close', end);
    }
    inbound.pipe(outbound);
    outbound.pipe(inbound);
  });
  listener.listen(0, '127.0.0.1');
  await once(listener, 'listening');
  const address = `127.0.0.1:${listener.address().port}`;
  return {
    /** What `Peer.open` takes: the page loads from the server, connects through here. */
    server: { httpUrl: server.httpUrl, wsUrl: `ws://${address}/ws` },
    cut() {
      for (const [inbound, outbound] of [...open]) {
        inbound.destroy();
        outbound.destroy();
      }
    },
    setDown(value) {
      down = value;
    },
    /** New connections go to `server` from now on (the open ones stay where they are). */
    retarget(server) {
      [host, port] = hostAndPort(server);
    },
    close() {
      this.cut();
      listener.close();
    },
  };
}

/** Records the service's connection states in the page, with wall-clock times. */
export function watchConnection(peer) {
  return peer.page.evaluate(() => {
    const service = window.peer.service;
    window.peer.connection = [];
    service.onconnectionstatechange = (state) =>
      window.peer.connection.push({ state, at: performance.timeOrigin + performance.now() });
    service.onclose = () => window.peer.connection.push({ state: 'onclose', at: performance.timeOrigin + performance.now() });
  });
}

/** Waits until the page's service reported `state` for the `nth` time (from 1). */
export function waitForConnection(peer, state, nth = 1, timeout = WAIT_MS) {
  return peer.page
    .waitForFunction(
      ({ state, nth }) => {
        const seen = window.peer.connection.filter((change) => change.state === state);
        return seen.length >= nth ? seen[nth - 1].at : false;
      },
      { state, nth },
      { polling: POLL_MS, timeout },
    )
    .then((handle) => handle.jsonValue());
}
