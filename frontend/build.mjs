// Builds what the server embeds: the client bundle, the demo page and its
// script and style. Output is deterministic (pinned esbuild, fixed working
// directory), so a rebuild that differs from server/assets/ means the
// committed bundle is stale.
//
//   node build.mjs [OUTDIR]      default OUTDIR: ../server/assets
import { copyFile, mkdir } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';

const here = dirname(fileURLToPath(import.meta.url));

/** The files the server serves, as named in server/assets/. */
export const ASSET_FILES = ['webrtc-p2p.js', 'demo.js', 'index.html', 'demo.css'];

export async function build(outdir) {
  await mkdir(outdir, { recursive: true });
  const common = {
    absWorkingDir: here,
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    charset: 'utf8',
    legalComments: 'inline',
    nodePaths: [join(here, 'node_modules')],
    logLevel: 'warning',
  };
  await esbuild.build({
    ...common,
    entryPoints: ['../simple/ts/index.ts'],
    outfile: join(outdir, 'webrtc-p2p.js'),
  });
  await esbuild.build({
    ...common,
    entryPoints: ['demo/demo.ts'],
    outfile: join(outdir, 'demo.js'),
    // The demo imports the client from the server, as any site would.
    external: ['/webrtc-p2p.js'],
  });
  await copyFile(join(here, 'demo/index.html'), join(outdir, 'index.html'));
  await copyFile(join(here, 'demo/demo.css'), join(outdir, 'demo.css'));
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  await build(resolve(process.argv[2] ?? join(here, '../server/assets')));
}
