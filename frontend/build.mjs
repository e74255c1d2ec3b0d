// Builds what the server embeds: the client and the demo page's script as
// bundles, and the page's HTML and CSS copied as they are, so that the
// server crate holds every file it embeds (it packages and builds on its
// own, as crates.io gets it). Output is deterministic (pinned esbuild, fixed
// working directory), so a rebuild that differs from server/assets/ means the
// committed bundle is stale.
//
//   node build.mjs [OUTDIR]      default OUTDIR: ../server/assets
import { copyFile, mkdir, writeFile } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';

const here = dirname(fileURLToPath(import.meta.url));
/** Where the bundles live; their maps name the sources relative to it, wherever a build writes. */
const ASSETS = join(here, '../server/assets');

/** The demo page's files that need no build, copied from demo/. */
const COPIED = ['index.html', 'demo.css'];

/** Every file this writes, as named in server/assets/: the bundles, their source maps, the copied files. */
export const ASSET_FILES = ['webrtc-p2p.js', 'webrtc-p2p.js.map', 'demo.js', 'demo.js.map', ...COPIED];

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
    // Minified for the wire; the maps (served beside the bundles) give
    // devtools the TypeScript sources back.
    minify: true,
    sourcemap: 'linked',
    nodePaths: [join(here, 'node_modules')],
    logLevel: 'warning',
    write: false,
  };
  const results = await Promise.all([
    esbuild.build({
      ...common,
      entryPoints: ['../simple/ts/index.ts'],
      outfile: join(ASSETS, 'webrtc-p2p.js'),
    }),
    esbuild.build({
      ...common,
      entryPoints: ['demo/demo.ts'],
      outfile: join(ASSETS, 'demo.js'),
      // The demo imports the client from the server, as any site would.
      external: ['/webrtc-p2p.js'],
    }),
  ]);
  for (const file of results.flatMap((result) => result.outputFiles)) {
    await writeFile(join(outdir, basename(file.path)), file.contents);
  }
  for (const name of COPIED) {
    await copyFile(join(here, 'demo', name), join(outdir, name));
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  await build(resolve(process.argv[2] ?? ASSETS));
}
