// Perfect negotiation, up close: two `RtcLink`s in one page whose offers cross
// (glare). The polite one rolls its offer back, the impolite one ignores the
// other's, and both end up connected. (In a group only the impolite side
// opens the channel, so offers rarely cross; this makes them.)
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';
import * as esbuild from 'esbuild';
import { setUp } from './harness.mjs';

const LINK_SOURCE = fileURLToPath(new URL('../../simple/ts/link.ts', import.meta.url));
/** Where link.ts's imports (through payload.ts, the JSON-RPC library) resolve, as in build.mjs. */
const NODE_MODULES = fileURLToPath(new URL('../node_modules', import.meta.url));

let env;
before(async () => {
  env = await setUp();
});
after(() => env?.tearDown());

/** link.ts alone, as a script defining `window.LinkModule`. */
async function linkScript() {
  const result = await esbuild.build({
    entryPoints: [LINK_SOURCE],
    bundle: true,
    nodePaths: [NODE_MODULES],
    format: 'iife',
    globalName: 'LinkModule',
    target: 'es2022',
    write: false,
    logLevel: 'warning',
  });
  return result.outputFiles[0].text;
}

test('crossing offers (glare) resolve: rollback on the polite side, both links direct on one channel, whole frames on the control channel', async () => {
  const page = await env.context.newPage();
  try {
    await page.goto(`${env.server.httpUrl}/webrtc-p2p.js`);
    await page.addScriptTag({ content: await linkScript() });
    // Chromium 156: when a page's very first ICE gathering is cut short by a
    // rollback, that page never gathers again (reproduced with bare
    // RTCPeerConnections). Groups never roll back (only the impolite side
    // opens a channel, so only it offers); here one gathering runs first.
    await page.evaluate(async () => {
      const pc = new RTCPeerConnection({ iceServers: [] });
      pc.createDataChannel('warm-up');
      const gathered = new Promise((resolve) => {
        pc.onicegatheringstatechange = () => pc.iceGatheringState === 'complete' && resolve();
      });
      await pc.setLocalDescription();
      await gathered;
      pc.close();
    });
    const outcome = await page.evaluate(async () => {
      const { RtcLink } = window.LinkModule;
      const log = [];
      const links = {};
      const options = (polite) => ({ polite, rtcConfig: { iceServers: [] }, connectTimeoutMs: 20_000, blockCandidates: false });
      const events = (self, other) => ({
        // Signals travel asynchronously, as through the server, so both offers are out before either lands.
        signal: (signal) => {
          if (signal.description) log.push(`${self}:${signal.description.type}`);
          else log.push(`${self}:cand:${signal.candidate.usernameFragment}`);
          setTimeout(() => links[other].receive(JSON.parse(JSON.stringify(signal))), 0);
        },
        statechange: (state) => log.push(`${self}:${state}`),
        message: (data) => log.push(`${self} got ${new TextDecoder().decode(data)}`),
      });
      // The impolite link opens the channel and so negotiates; in the same
      // task the polite one is made to negotiate too, with a channel of its own.
      links.polite = new RtcLink(options(true), events('polite', 'impolite'));
      links.impolite = new RtcLink(options(false), events('impolite', 'polite'));
      links.polite.pc.createDataChannel('glare');
      const deadline = Date.now() + 20_000;
      while (!(links.polite.state === 'direct' && links.impolite.state === 'direct') && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
      // Each side's hello on the control channel, which the other may see
      // before its own end of the channel is open.
      while (!(links.polite.peerHasControl && links.impolite.peerHasControl) && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
      links.impolite.send(new Uint8Array([104, 105]));
      while (!log.includes('polite got hi') && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 5));
      return {
        log,
        control: [links.polite.peerHasControl, links.impolite.peerHasControl, links.impolite.moved],
        states: [links.polite.state, links.impolite.state],
        signaling: [links.polite.pc.signalingState, links.impolite.pc.signalingState],
      };
    });
    // Both made an offer: the offers crossed.
    assert.ok(outcome.log.includes('polite:offer'), outcome.log.join());
    assert.ok(outcome.log.includes('impolite:offer'), outcome.log.join());
    assert.deepEqual(outcome.states, ['direct', 'direct'], outcome.log.join());
    assert.deepEqual(outcome.signaling, ['stable', 'stable']);
    // Both said hello, and the whole frame went on the control channel.
    assert.deepEqual(outcome.control, [true, true, true], outcome.log.join());
    assert.ok(outcome.log.includes('polite got hi'), outcome.log.join());
  } finally {
    await page.close();
  }
});
