// Join tokens in the browser client, against a server with an auth secret:
// `new SimpleService(url, { token })`, `Unauthorized` without one,
// `PermissionDenied` for what a token does not grant, each member's `info`
// in `memberInfo`, and the demo page's `?token=`. Tokens are minted by the
// server binary's own `token` subcommand.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { Peer, SERVER_BIN, WAIT_MS, setUp, startServer, waitForMesh } from './harness.mjs';

const SECRET = 'the auth secret of the token browser tests';

/** `webrtc-p2p-server token …`: a join token with these grants. */
function mint({ create = false, groups = [], info } = {}) {
  const args = ['--auth-secret', SECRET, 'token', '--ttl', '10m'];
  if (create) args.push('--create');
  for (const group of groups) args.push('--group', group);
  if (info !== undefined) args.push('--info', JSON.stringify(info));
  return execFileSync(SERVER_BIN, args, { encoding: 'utf8' }).trim();
}

let env;
before(async () => {
  env = await setUp(['--auth-secret', SECRET]);
});
after(() => env?.tearDown());

/** Runs in a page: what `join()` of a service with `options` rejects with. */
async function joinError({ wsUrl, options }) {
  const { SimpleService } = await import('/webrtc-p2p.js');
  const service = new SimpleService(wsUrl, options);
  try {
    await service.join();
    return null;
  } catch (error) {
    return { name: error.name, code: error.code };
  } finally {
    service.close();
  }
}

test('without a valid token join() rejects with Unauthorized', async () => {
  const page = await env.context.newPage();
  await page.goto(`${env.server.httpUrl}/webrtc-p2p.js`);
  const { wsUrl } = env.server;
  assert.deepEqual(await page.evaluate(joinError, { wsUrl, options: {} }), { name: 'RpcError', code: -32013 });
  const forged = `${mint({ create: true }).slice(0, -2)}xx`;
  assert.deepEqual(await page.evaluate(joinError, { wsUrl, options: { token: forged } }), { name: 'RpcError', code: -32013 });
  assert.equal(await page.evaluate(joinError, { wsUrl, options: { token: mint() } }), null);
  await page.close();
});

test("members see each other's info, and a token grants only what it says", async () => {
  const owner = await Peer.open(env.context, env.server, { options: { token: mint({ create: true, info: { name: 'Ada' } }) } });
  const groupId = await owner.create();
  const guest = await Peer.open(env.context, env.server, {
    options: { token: mint({ groups: [groupId], info: { name: 'Bob', seat: 2 } }) },
  });
  const refused = await guest.page.evaluate(async () => {
    try {
      await window.peer.service.createGroup();
      return null;
    } catch (error) {
      return error.code;
    }
  });
  assert.equal(refused, -32006, 'create: false');
  await guest.join(groupId);
  const plain = await Peer.open(env.context, env.server, { options: { token: mint({ groups: ['*'] }) } });
  await plain.join(groupId);
  await waitForMesh([owner, guest, plain]);

  const infoSeenBy = (peer) =>
    peer.page.evaluate((ids) => ids.map((id) => window.peer.group.memberInfo(id) ?? null), [owner.id, guest.id, plain.id]);
  const want = [{ name: 'Ada' }, { name: 'Bob', seat: 2 }, null];
  // The owner learnt the others' from member_joined, the joiners from get_members.
  for (const peer of [owner, guest, plain]) assert.deepEqual(await infoSeenBy(peer), want);
  await Promise.all([owner, guest, plain].map((peer) => peer.close()));
});

test("a token minted by the README's Node example is accepted", async () => {
  // The example itself, cut from the README, so that it cannot rot.
  const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
  const example = /```js\n(import \{ createHmac \}[\s\S]*?)```/.exec(readme)?.[1];
  assert.ok(example, 'the README has the Node minting example');
  const dir = mkdtempSync(join(tmpdir(), 'webrtc-p2p-readme-'));
  try {
    writeFileSync(join(dir, 'mint.mjs'), example);
    const { joinToken } = await import(join(dir, 'mint.mjs'));
    const token = joinToken(SECRET, { create: true, info: { name: 'Ada' } });
    const peer = await Peer.open(env.context, env.server, { options: { token } });
    await peer.create();
    await peer.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("the demo page takes its token from ?token=, does not share it, and shows each member's info", async () => {
  const openDemo = async (query) => {
    const page = await env.context.newPage();
    page.on('pageerror', (error) => console.error(`[demo page error] ${error.message}`));
    await page.goto(`${env.server.httpUrl}/${query}`);
    await page.locator('#status[data-status="online"]').waitFor({ timeout: WAIT_MS });
    return page;
  };
  const owner = await openDemo(`?token=${mint({ create: true, info: { name: 'Ada' } })}`);
  await owner.locator('#create').click();
  await owner.locator('#room').waitFor({ timeout: WAIT_MS });
  const link = await owner.locator('#share-link').inputValue();
  assert.match(link, /^http:\/\/127\.0\.0\.1:\d+\/#[0-9a-f]{32}$/);
  const groupId = link.split('#')[1];
  // Info without a name shows as its JSON.
  const guest = await openDemo(`?token=${mint({ groups: [groupId], info: { seat: 2 } })}#${groupId}`);
  try {
    const [ownerId, guestId] = await Promise.all([owner, guest].map((page) => page.locator('#self-id').getAttribute('title')));
    for (const page of [owner, guest]) {
      await page.locator(`#members li[data-member="${guestId}"] .info`, { hasText: '{"seat":2}' }).waitFor({ timeout: WAIT_MS });
      assert.equal(await page.locator(`#members li[data-member="${ownerId}"] .info`).innerText(), 'Ada');
    }
  } finally {
    await Promise.all([owner.close(), guest.close()]);
  }
});

test('the TURN credentials from session reach every RTCPeerConnection and are fetched again before they expire', async () => {
  // No TURN server answers here: this is about what the client asks and uses.
  const server = await startServer(['--turn-url', 'turn:127.0.0.1:9?transport=udp', '--turn-secret', 's', '--turn-ttl', '3s']);
  const context = await env.browser.newContext();
  try {
    await context.grantPermissions(['camera', 'microphone']);
    // Every frame the page sends, and every RTCPeerConnection's configuration.
    await context.addInitScript(() => {
      window.sent = [];
      const send = WebSocket.prototype.send;
      WebSocket.prototype.send = function (data) {
        window.sent.push(String(data));
        return send.call(this, data);
      };
      window.configurations = [];
      const Native = window.RTCPeerConnection;
      window.RTCPeerConnection = class extends Native {
        constructor(configuration) {
          super(configuration);
          window.configurations.push(configuration);
        }
      };
    });
    const options = { rtcConfig: { iceServers: [{ urls: 'stun:127.0.0.1:9' }] } };
    const a = await Peer.open(context, server, { options });
    const b = await Peer.open(context, server, { options });
    await b.join(await a.create());
    await a.page.waitForFunction(() => window.configurations.length > 0, null, { timeout: WAIT_MS });
    const [first] = await a.page.evaluate(() => window.configurations);
    assert.equal(first.iceServers[0].urls, 'stun:127.0.0.1:9', "the caller's own come first");
    assert.deepEqual(first.iceServers[1].urls, ['turn:127.0.0.1:9?transport=udp']);
    assert.match(first.iceServers[1].username, new RegExp(`^\\d+:${a.id}$`));
    // A 3 s credential is fetched again halfway through its life.
    await a.page.waitForFunction(
      () => window.sent.filter((frame) => JSON.parse(frame).method === 'session').length >= 2,
      null,
      { polling: 50, timeout: WAIT_MS },
    );
    await Promise.all([a.close(), b.close()]);
  } finally {
    await context.close();
    await server.stop();
  }
});
