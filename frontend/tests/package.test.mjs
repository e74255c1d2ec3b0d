// The npm package of the TypeScript client, as a consumer gets it: packed
// with `npm pack`, installed from the tarball into a scratch project (its one
// dependency, json-rpc-2.0, from npm's cache when it is there), type-checked
// through the package's `exports`/`types`, and bundled with esbuild.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import * as esbuild from 'esbuild';
import { packClient } from '../scripts/pack-client.mjs';

const run = promisify(execFile);
const TSC = fileURLToPath(new URL('../node_modules/typescript/bin/tsc', import.meta.url));
const NAME = 'webrtc-p2p-client';

let scratch;
let manifest;
before(async () => {
  scratch = await mkdtemp(join(tmpdir(), 'webrtc-p2p-consumer-'));
  const tarball = await packClient(join(scratch, 'packed'));
  const project = join(scratch, 'app');
  await run('mkdir', ['-p', project]);
  await writeFile(join(project, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'module' }));
  await run('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', tarball], { cwd: project });
  manifest = JSON.parse(await readFile(join(project, 'node_modules', NAME, 'package.json'), 'utf8'));
});
after(() => (scratch ? rm(scratch, { recursive: true, force: true }) : undefined));

const app = () => join(scratch, 'app');

test('the package is an ES module without side effects whose one dependency is json-rpc-2.0', () => {
  assert.equal(manifest.type, 'module');
  assert.equal(manifest.sideEffects, false);
  assert.deepEqual(Object.keys(manifest.dependencies), ['json-rpc-2.0']);
  assert.deepEqual(Object.keys(manifest.exports['.']), ['types', 'default']);
});

test('a TypeScript consumer type-checks against the package (strict), and a misuse does not', async () => {
  const good = `
    import { GroupCapability, SimpleService, ErrorCode, RpcError, type IGroup, type UserId } from '${NAME}';
    const service = new SimpleService('ws://127.0.0.1:3001/ws', { connectTimeoutMs: 1000 });
    export async function start(): Promise<IGroup> {
      const me: UserId = (await service.join()).id();
      const group = await service.createGroup(GroupCapability.BroadcastOwner | GroupCapability.UnicastEveryone);
      group.onmessage = (from: UserId, data) => console.log(me, from, data);
      return group;
    }
    export const cancelled: boolean = new RpcError(ErrorCode.PeerGone, 'gone').code === ErrorCode.PeerGone;
  `;
  const config = {
    compilerOptions: { strict: true, module: 'ESNext', moduleResolution: 'Bundler', target: 'ES2022', lib: ['ES2022', 'DOM'], noEmit: true, types: [] },
    files: ['main.ts'],
  };
  await writeFile(join(app(), 'tsconfig.json'), JSON.stringify(config));
  await writeFile(join(app(), 'main.ts'), good);
  await run(process.execPath, [TSC, '-p', app()]).catch((error) => assert.fail(`${error.stdout}`));
  await writeFile(join(app(), 'main.ts'), `${good}\nexport const wrong: number = new SimpleService('x').info().id();\n`);
  await assert.rejects(run(process.execPath, [TSC, '-p', app()]), (error) => /TS2322/.test(error.stdout));
});

test('esbuild bundles it from the installed package; importing only constants leaves the client out', async () => {
  const bundle = async (source) => {
    const result = await esbuild.build({
      absWorkingDir: app(),
      stdin: { contents: source, resolveDir: app(), loader: 'js' },
      bundle: true,
      format: 'esm',
      platform: 'browser',
      write: false,
      logLevel: 'silent',
    });
    return result.outputFiles[0].text;
  };
  const full = await bundle(`import { SimpleService } from '${NAME}'; console.log(new SimpleService('ws://h/ws'));`);
  assert.match(full, /SimpleService = class/);
  assert.match(full, /RTCPeerConnection/);
  assert.match(full, /JSONRPCServerAndClient/, 'json-rpc-2.0 comes from the consumer node_modules');
  const small = await bundle(`import { GroupCapability } from '${NAME}'; console.log(GroupCapability.UnicastOwner);`);
  // json-rpc-2.0 is CommonJS and declares side effects, so its import stays.
  assert.doesNotMatch(small, /SimpleService|RTCPeerConnection/, 'sideEffects: false lets the client be dropped');
});
