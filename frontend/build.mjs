// Builds the bundles the server embeds: the client and the demo page's
// script. (The page's HTML and CSS need no build: the server embeds them
// straight from demo/.) Output is deterministic (pinned esbuild, fixed
// working directory), so a rebuild that differs from server/assets/ means the
// committed bundle is stale.
//
//   node build.mjs [OUTDIR]      default OUTDIR: ../server/assets
import { mkdir } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';

const here = dirname(fileURLToPath(import.meta.url));

/** The bundles this builds, as named in server/assets/. */
export const ASSET_FILES = ['webrtc-p2p.js', 'demo.js'];

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
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  await build(resolve(process.argv[2] ?? join(here, '../server/assets')));
}
