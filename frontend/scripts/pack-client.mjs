// Packs the TypeScript client (../simple/ts/) as an npm package: an ES
// module with json-rpc-2.0 left as a dependency, declarations that tsc
// writes from the sources (their types are interfaces/api.d.ts's), the
// package.json of simple/ts/. Staged outside the source tree, then packed
// with `npm pack`.
//
//   node scripts/pack-client.mjs [OUTDIR]      default OUTDIR: ../target/npm
import { execFile } from 'node:child_process';
import { copyFile, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import * as esbuild from 'esbuild';

const run = promisify(execFile);
const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '../..');

/** Builds and packs the client into `outdir`; resolves with the tarball's path. */
export async function packClient(outdir) {
  const stage = join(outdir, 'webrtc-p2p-client');
  await rm(stage, { recursive: true, force: true });
  await mkdir(join(stage, 'types/interfaces'), { recursive: true });
  await esbuild.build({
    absWorkingDir: root,
    entryPoints: ['simple/ts/index.ts'],
    outfile: join(stage, 'index.js'),
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    charset: 'utf8',
    sourcemap: 'linked',
    // A dependency, not a copy: the consumer's bundler dedupes and updates it.
    external: ['json-rpc-2.0'],
    nodePaths: [join(here, '../node_modules')],
    logLevel: 'warning',
  });
  const tsconfig = join(stage, 'tsconfig.json');
  await writeFile(
    tsconfig,
    JSON.stringify({
      extends: join(here, '../tsconfig.json'),
      compilerOptions: { noEmit: false, declaration: true, emitDeclarationOnly: true, rootDir: root, outDir: join(stage, 'types') },
      include: [join(root, 'simple/ts')],
    }),
  );
  await run(process.execPath, [join(here, '../node_modules/typescript/bin/tsc'), '-p', tsconfig]);
  await rm(tsconfig);
  // tsc writes no copy of a declaration file it reads.
  await copyFile(join(root, 'interfaces/api.d.ts'), join(stage, 'types/interfaces/api.d.ts'));
  await copyFile(join(root, 'simple/ts/package.json'), join(stage, 'package.json'));
  const { stdout } = await run('npm', ['pack', '--json', '--pack-destination', outdir], { cwd: stage });
  const [{ filename }] = JSON.parse(stdout);
  return join(outdir, filename);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  console.log(await packClient(resolve(process.argv[2] ?? join(root, 'target/npm'))));
}
