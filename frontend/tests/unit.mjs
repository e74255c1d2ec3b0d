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
      contents: ['capability', 'calls', 'errors', 'group', 'outbox', 'payload', 'wire']
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
export function fakeHost(self, { unicastTimeoutMs = 10_000, answer = () => null } = {}) {
  const host = {
    self,
    rtcConfig: {},
    connectTimeoutMs: 10_000,
    unicastTimeoutMs,
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
