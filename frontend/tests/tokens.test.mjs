// Join tokens in the browser client, against a server with an auth secret:
// `new SimpleService(url, { token })`, `Unauthorized` without one,
// `PermissionDenied` for what a token does not grant, each member's `info`
// in `memberInfo`, and the demo page's `?token=`. Tokens are minted by the
// server binary's own `token` subcommand.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { after, before, test } from 'node:test';
import { Peer, SERVER_BIN, WAIT_MS, setUp, waitForMesh } from './harness.mjs';

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

test("the demo page takes its token from ?token= and does not share it", async () => {
  const page = await env.context.newPage();
  page.on('pageerror', (error) => console.error(`[demo page error] ${error.message}`));
  await page.goto(`${env.server.httpUrl}/?token=${mint({ create: true })}`);
  await page.locator('#status[data-status="online"]').waitFor({ timeout: WAIT_MS });
  await page.locator('#create').click();
  await page.locator('#room').waitFor({ timeout: WAIT_MS });
  const link = await page.locator('#share-link').inputValue();
  assert.match(link, /^http:\/\/127\.0\.0\.1:\d+\/#[0-9a-f]{32}$/);
  await page.close();
});
