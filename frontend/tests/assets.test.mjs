// What the server embeds and serves: server/assets/ must be exactly what
// `npm run build` makes from the sources, and the server must serve it with
// the headers a cross-origin `import()` needs.
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { ASSET_FILES, build } from '../build.mjs';
import { startServer } from './harness.mjs';

const ASSETS = fileURLToPath(new URL('../../server/assets/', import.meta.url));
const DEMO = fileURLToPath(new URL('../demo/', import.meta.url));

test('the committed bundle in server/assets/ is what the sources build to', async () => {
  const fresh = await mkdtemp(join(tmpdir(), 'webrtc-p2p-assets-'));
  try {
    await build(fresh);
    for (const name of ASSET_FILES) {
      const [built, committed] = await Promise.all([readFile(join(fresh, name)), readFile(join(ASSETS, name))]);
      assert.ok(built.equals(committed), `server/assets/${name} is stale: run \`npm --prefix frontend run build\` and commit it`);
    }
  } finally {
    await rm(fresh, { recursive: true, force: true });
  }
});

let server;
before(async () => {
  server = await startServer();
});
after(() => server?.stop());

const ROUTES = [
  { path: '/', file: join(DEMO, 'index.html'), type: 'text/html; charset=utf-8' },
  { path: '/demo.js', file: join(ASSETS, 'demo.js'), type: 'text/javascript' },
  { path: '/demo.css', file: join(DEMO, 'demo.css'), type: 'text/css; charset=utf-8' },
  { path: '/webrtc-p2p.js', file: join(ASSETS, 'webrtc-p2p.js'), type: 'text/javascript', cors: true },
  { path: '/demo.js.map', file: join(ASSETS, 'demo.js.map'), type: 'application/json' },
  { path: '/webrtc-p2p.js.map', file: join(ASSETS, 'webrtc-p2p.js.map'), type: 'application/json', cors: true },
];

for (const { path, file, type, cors } of ROUTES) {
  test(`GET ${path} serves ${file.slice(file.lastIndexOf('/', file.lastIndexOf('/') - 1) + 1)} as ${type}`, async () => {
    const response = await fetch(`${server.httpUrl}${path}`);
    assert.equal(response.status, 200);
    assert.equal(response.headers.get('content-type'), type);
    if (cors) assert.equal(response.headers.get('access-control-allow-origin'), '*');
    const body = Buffer.from(await response.arrayBuffer());
    assert.ok(body.equals(await readFile(file)), `the binary embeds an older ${file}: rebuild the server`);
  });
}

test('the client bundle is a minified ES module exporting SimpleService and GroupCapability, with its source map', async () => {
  const source = await readFile(join(ASSETS, 'webrtc-p2p.js'), 'utf8');
  const [, exports, map] = /export\s*\{([^}]*)\}\s*;?\s*\/\/# sourceMappingURL=(\S+)\s*$/.exec(source) ?? [];
  const exported = exports?.split(',').map((item) => item.trim().split(/\s+as\s+/).at(-1));
  assert.ok(exported?.includes('SimpleService') && exported.includes('GroupCapability'), `exports: ${exported}`);
  assert.equal(map, 'webrtc-p2p.js.map');
  assert.ok(source.split('\n').length < 20, 'minified');
  const { sources, sourcesContent } = JSON.parse(await readFile(join(ASSETS, map), 'utf8'));
  assert.ok(sources.includes('../../simple/ts/service.ts'), `sources: ${sources}`);
  assert.equal(sourcesContent.length, sources.length);
});
