// The "write your own client" examples of interfaces/README.md, run against
// the real server: a Python member (jsonrpcclient, jsonrpcserver, websockets)
// creates a group, a Node.js member (json-rpc-2.0) joins it, and a browser
// running the real client bundle joins too. Neither example speaks WebRTC,
// so the browser's links to them are relayed, and its unicasts come back
// through the server answered by each example.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';
import { Peer, setUp } from './harness.mjs';

const EXAMPLES = fileURLToPath(new URL('../../interfaces/examples/', import.meta.url));
/** The interpreter with the examples' requirements installed (.ci/test makes this virtualenv). */
const PYTHON =
  process.env.WEBRTC_P2P_PYTHON ?? fileURLToPath(new URL('../../target/examples-venv/bin/python', import.meta.url));
/** Node 22 has a global WebSocket; Node 20 has it behind a flag. */
const NODE_FLAGS = Number(process.versions.node.split('.')[0]) < 22 ? ['--experimental-websocket'] : [];

let env;
const children = [];
before(async () => {
  env = await setUp();
});
after(async () => {
  for (const child of children) child.kill('SIGKILL');
  await env?.tearDown();
});

/** Starts an example; resolves with it and its lines once it says `member U of group G`. */
async function startExample(command, args) {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk) => {
    stderr += chunk;
  });
  const lines = [];
  const lineWaiters = [];
  createInterface({ input: child.stdout }).on('line', (line) => {
    lines.push(line);
    for (const waiter of lineWaiters.splice(0)) waiter();
  });
  const exited = Promise.race([
    once(child, 'exit').then(([code]) => {
      throw new Error(`${args.join(' ')} exited (${code}):\n${stderr}`);
    }),
    once(child, 'error').then(([error]) => {
      throw new Error(`cannot run ${command} (bash .ci/test makes the examples' virtualenv): ${error.message}`);
    }),
  ]);
  /** Resolves with the first line matching `pattern`. */
  const line = async (pattern) => {
    for (;;) {
      const found = lines.find((l) => pattern.test(l));
      if (found !== undefined) return found;
      await Promise.race([new Promise((resolve) => lineWaiters.push(resolve)), exited]);
    }
  };
  const [, user, group] = /^member (\w+) of group (\w+)$/.exec(await line(/^member /));
  return { user, group, line };
}

test('a Python and a Node.js client written with stock JSON-RPC libraries share a group with a browser', async () => {
  const python = await startExample(PYTHON, [`${EXAMPLES}python/client.py`, env.server.wsUrl]);
  const node = await startExample(process.execPath, [
    ...NODE_FLAGS,
    `${EXAMPLES}node/client.mjs`,
    env.server.wsUrl,
    python.group,
  ]);
  assert.equal(node.group, python.group);

  const browser = await Peer.open(env.context, env.server);
  await browser.join(python.group);
  // Each example answers the browser's offer with NoWebRtc and sends
  // {"webrtc": false}: both links are relayed without waiting for a timeout.
  await browser.waitForLinks([python.user, node.user, browser.id], 'relayed');
  assert.deepEqual(await browser.unicast(python.user, 'from a browser'), { reply: 'FROM A BROWSER', isBytes: false });
  assert.deepEqual(await browser.unicast(node.user, 'to node'), { reply: 'TO NODE', isBytes: false });

  await browser.broadcast('hello all');
  const said = `${browser.id}: {"text":"hello all"}`;
  assert.equal(await node.line(/: \{"text"/), said);
  assert.equal(await python.line(/: \{"text"/), said);
});
