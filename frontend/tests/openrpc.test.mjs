// The OpenRPC document of the protocol (interfaces/openrpc.json): valid
// against the OpenRPC meta-schema (vendored in interfaces/openrpc/, checked
// offline with Python's jsonschema from the examples' virtualenv), and what
// the server serves at GET /openrpc.json. That it lists exactly the methods
// of the #[rpc] traits, with their parameter names, is checked by the Rust
// tests (interfaces/src/rpc.rs, server/tests/protocol.rs).
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { startServer } from './harness.mjs';

const run = promisify(execFile);
const DOCUMENT = fileURLToPath(new URL('../../interfaces/openrpc.json', import.meta.url));
const VALIDATE = fileURLToPath(new URL('../../interfaces/openrpc/validate.py', import.meta.url));
const PYTHON =
  process.env.WEBRTC_P2P_PYTHON ?? fileURLToPath(new URL('../../target/examples-venv/bin/python', import.meta.url));

let server;
before(async () => {
  server = await startServer();
});
after(() => server?.stop());

test('interfaces/openrpc.json is a valid OpenRPC document, and a broken one is refused', async () => {
  const { stdout } = await run(PYTHON, [VALIDATE, DOCUMENT]);
  assert.match(stdout, /a valid OpenRPC 1\.3\.\d+ document/);
  const broken = JSON.parse(await readFile(DOCUMENT, 'utf8'));
  broken.methods[0].params = 'none';
  const file = join(tmpdir(), `openrpc-broken-${process.pid}.json`);
  await writeFile(file, JSON.stringify(broken));
  try {
    await assert.rejects(run(PYTHON, [VALIDATE, file]), (error) => /ValidationError/.test(error.stderr));
  } finally {
    await rm(file);
  }
});

test('GET /openrpc.json serves the document to any origin', async () => {
  const response = await fetch(`${server.httpUrl}/openrpc.json`);
  assert.equal(response.status, 200);
  assert.equal(response.headers.get('content-type'), 'application/json');
  assert.equal(response.headers.get('access-control-allow-origin'), '*');
  assert.deepEqual(await response.json(), JSON.parse(await readFile(DOCUMENT, 'utf8')));
});
