// What the unit tests share: the client's TypeScript modules, bundled by
// esbuild (as build.mjs does for the browser) into one ES module that node
// imports. They run without a browser: a group gets stand-in links.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import * as esbuild from 'esbuild';

const here = dirname(fileURLToPath(import.meta.url));
const SOURCES = join(here, '../../simple/ts');

/** The client's internal modules, as one namespace (what index.ts hides included). */
export async function loadClient() {
  const { outputFiles } = await esbuild.build({
    stdin: {
      contents: ['capability', 'calls', 'errors', 'group', 'outbox', 'payload', 'transfer', 'wire']
        .map((module) => `export * from './${module}';`)
        .join('\n'),
      resolveDir: SOURCES,
      loader: 'ts',
    },
    absWorkingDir: join(here, '..'),
    bundle: true,
    format: 'esm',
    platform: 'node',
    target: 'es2022',
    nodePaths: [join(here, '../node_modules')],
    write: false,
    logLevel: 'warning',
  });
  const dir = await mkdtemp(join(tmpdir(), 'webrtc-p2p-unit-'));
  try {
    const file = join(dir, 'client.mjs');
    await writeFile(file, outputFiles[0].contents);
    return await import(pathToFileURL(file).href);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Ids as the server hands them out: 32 lowercase hex digits; `id(1) < id(2)`. */
export function id(n) {
  return n.toString(16).padStart(32, '0');
}

/** A link the test drives: it records what the group sends and changes state on demand. */
export class FakeLink {
  state = 'connecting';
  /** Frames sent on the "channel". */
  sent = [];
  /** Signals applied from the peer. */
  received = [];
  closed = false;

  constructor(peer, options, events) {
    this.peer = peer;
    this.options = options;
    this.events = events;
  }

  send(message) {
    if (this.state !== 'direct') return false;
    this.sent.push(message);
    return true;
  }

  /** Transfers take all their frames at once: this channel never fills. */
  stream(source) {
    if (this.state !== 'direct') return false;
    for (let frame = source.next(); frame !== undefined; frame = source.next()) this.sent.push(frame.slice());
    return true;
  }

  receive(signal) {
    this.received.push(signal);
  }

  giveUp() {
    if (this.state === 'connecting' || this.state === 'direct') this.setState('relayed');
  }

  close() {
    this.closed = true;
    this.setState('closed');
  }

  /** What the real link reports when its channel opens, fails or closes. */
  setState(state) {
    if (this.state === state || this.state === 'closed') return;
    this.state = state;
    this.events.statechange(state);
  }

  /** A frame arrives from the peer. */
  deliver(bytes) {
    this.events.message(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
  }
}

/**
 * A group host for `self`: records the server calls and notifications, and
 * the links the group opens (`links.get(peer)`: the latest one).
 */
export function fakeHost(self, { unicastTimeoutMs = 10_000, maxMessageBytes = 64 * 1024 * 1024, answer = () => null } = {}) {
  const host = {
    self,
    rtcConfig: {},
    connectTimeoutMs: 10_000,
    unicastTimeoutMs,
    maxMessageBytes,
    forceRelay: () => false,
    links: new Map(),
    calls: [],
    notifications: [],
    forgotten: 0,
    openLink(peer, options, events) {
      const link = new FakeLink(peer, options, events);
      host.links.set(peer, link);
      return link;
    },
    async call(method, params) {
      host.calls.push({ method, params });
      return answer(method, params);
    },
    notify(method, params) {
      host.notifications.push({ method, params });
    },
    roomFor() {
      return undefined;
    },
    forget() {
      host.forgotten++;
    },
  };
  return host;
}

/** The peers this member has an open (not closed) link to, sorted. */
export function linkedPeers(host) {
  return [...host.links.values()].filter((link) => !link.closed).map((link) => link.peer).sort();
}

/**
 * Two members' groups wired to each other: each one's link to the other
 * carries frames across (a microtask later, like a channel), and each one's
 * `relay` reaches the other's `onRelay` (answers come back as the server's).
 * `b` takes messages of at most `receiverMax` bytes. `unanswered()` is the most relay requests that were ever open at once.
 */
export function wirePair(client, { groupId = id(0xabc), capability = 10, receiverMax, relayed = false } = {}) {
  const [a, b] = [id(1), id(2)];
  const hosts = { [a]: fakeHost(a), [b]: fakeHost(b, receiverMax === undefined ? {} : { maxMessageBytes: receiverMax }) };
  const groups = {};
  let open = 0;
  let mostOpen = 0;
  for (const [self, other] of [
    [a, b],
    [b, a],
  ]) {
    const host = hosts[self];
    host.call = async (method, params) => {
      host.calls.push({ method, params });
      if (method !== 'relay') return null;
      open++;
      mostOpen = Math.max(mostOpen, open);
      try {
        await null;
        const answer = await groups[other].onRelay(self, params[2]);
        return answer ?? null;
      } finally {
        open--;
      }
    };
    host.notify = (method, params) => {
      host.notifications.push({ method, params });
      if (method === 'relay') queueMicrotask(() => groups[other].onRelay(self, params[2]).catch(() => undefined));
    };
  }
  for (const [self, other] of [
    [a, b],
    [b, a],
  ]) {
    groups[self] = new client.Group(groupId, a, capability, [a, b], hosts[self]);
    groups[self].handOver();
  }
  // Frames cross over once both links exist.
  for (const [self, other] of [
    [a, b],
    [b, a],
  ]) {
    const link = hosts[self].links.get(other);
    const send = (frame) => {
      const copy = frame.slice();
      queueMicrotask(() => hosts[other].links.get(self)?.deliver(copy));
      return true;
    };
    link.send = (frame) => link.state === 'direct' && send(frame);
    link.stream = (source) => {
      if (link.state !== 'direct') return false;
      link.sources = [...(link.sources ?? []), source];
      const pump = () => {
        const next = link.sources?.[0];
        if (next === undefined || link.state !== 'direct') return;
        const frame = next.next();
        if (frame === undefined) link.sources.shift();
        else send(frame);
        setImmediate(pump);
      };
      pump();
      return true;
    };
  }
  for (const [self, other] of [
    [a, b],
    [b, a],
  ]) {
    hosts[self].links.get(other).setState(relayed ? 'relayed' : 'direct');
  }
  return { a, b, hosts, groups, unanswered: () => mostOpen };
}

/** Bytes 0, 1, 2, … 255, 0, … of length `n`. */
export function counting(n) {
  const bytes = new Uint8Array(n);
  for (let i = 0; i < n; i++) bytes[i] = i & 0xff;
  return bytes;
}
