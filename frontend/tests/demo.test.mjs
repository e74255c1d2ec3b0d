// The demo page, driven as a person would: create a group, open its link in
// another page, chat, ping, lose the connection for a while. Also saves a
// screenshot to look at.
import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { WAIT_MS, setUp, startProxy } from './harness.mjs';

const SCREENSHOT = fileURLToPath(new URL('../test-results/demo-4-members.png', import.meta.url));
const VIEWPORT = { width: 1280, height: 800 };

let env;
before(async () => {
  env = await setUp();
});
after(() => env?.tearDown());

async function openDemo(url = `${env.server.httpUrl}/`) {
  const page = await env.context.newPage();
  await page.setViewportSize(VIEWPORT);
  page.on('pageerror', (error) => console.error(`[demo page error] ${error.message}`));
  await page.goto(url);
  await page.locator('#status[data-status="online"]').waitFor({ timeout: WAIT_MS });
  return page;
}

/** Creates a group on a fresh demo page; resolves with the page and the share link. */
async function createGroup() {
  const page = await openDemo();
  await page.locator('#create').click();
  await page.locator('#room').waitFor({ timeout: WAIT_MS });
  const link = await page.locator('#share-link').inputValue();
  assert.match(link, /^http:\/\/127\.0\.0\.1:\d+\/#[0-9a-f]{32}$/);
  return { page, link };
}

/** Waits until the page lists `count` members, every other one linked directly. */
async function waitForDirectMembers(page, count) {
  await page.waitForFunction(
    (count) =>
      document.querySelectorAll('#members li[data-member]').length === count &&
      document.querySelectorAll('#members .state[data-state="direct"]').length === count - 1,
    count,
    { polling: 5, timeout: WAIT_MS },
  );
}

/**
 * Headless Chromium throttles the pages not in front (a click there waits
 * ~1 s for animation frames, a ping reads ~50 ms): act on the front page, as
 * a person would.
 */
async function say(page, text) {
  await page.bringToFront();
  await page.locator('#message-input').fill(text);
  await page.locator('#send').click();
}

function messageIn(page, text) {
  return page.locator('#messages .message .text', { hasText: text }).waitFor({ timeout: WAIT_MS });
}

test('demo: create a group, join it by its link, chat and ping', async () => {
  const { page: a, link } = await createGroup();
  const b = await openDemo(link);
  try {
    await Promise.all([waitForDirectMembers(a, 2), waitForDirectMembers(b, 2)]);
    const [idA, idB] = await Promise.all([a, b].map((page) => page.locator('#self-id').getAttribute('title')));
    assert.equal(await b.locator('#share-link').inputValue(), link);
    assert.equal(await b.locator(`#members li[data-member="${idA}"] .tag-owner`).count(), 1);

    await say(a, 'Hello from A');
    await Promise.all([messageIn(a, 'Hello from A'), messageIn(b, 'Hello from A')]);
    await say(b, 'Hi A, B here');
    await Promise.all([messageIn(a, 'Hi A, B here'), messageIn(b, 'Hi A, B here')]);
    assert.equal(await b.locator('#messages .message .text', { hasText: 'Hello from A' }).count(), 1);

    await a.bringToFront();
    await a.locator(`#members li[data-member="${idB}"] .ping`).click();
    await a
      .locator(`#members li[data-member="${idB}"] .rtt`, { hasText: /^\d+\.\d ms$/ })
      .waitFor({ timeout: WAIT_MS });

    await b.locator('#leave').click();
    await b.locator('#lobby').waitFor({ timeout: WAIT_MS });
    await a.waitForFunction(() => document.querySelectorAll('#members li[data-member]').length === 1, null, {
      polling: 5,
      timeout: WAIT_MS,
    });
    await a.locator('#messages .system', { hasText: 'left' }).waitFor({ timeout: WAIT_MS });
  } finally {
    await Promise.all([a.close(), b.close()]);
  }
});

test('demo: four members, screenshot saved to test-results/demo-4-members.png', async () => {
  const { page: owner, link } = await createGroup();
  const pages = [owner];
  try {
    for (let i = 0; i < 3; i++) pages.push(await openDemo(link));
    await Promise.all(pages.map((page) => waitForDirectMembers(page, 4)));
    const lines = ['Welcome, everyone!', 'Hi! All four of us are linked directly.', 'Pinging you all now.', 'Looks fast.'];
    for (const [i, page] of pages.entries()) {
      await say(page, lines[i]);
      await Promise.all(pages.map((p) => messageIn(p, lines[i])));
    }
    const ids = await Promise.all(pages.map((page) => page.locator('#self-id').getAttribute('title')));
    await owner.bringToFront();
    for (const id of ids.slice(1)) {
      await owner.locator(`#members li[data-member="${id}"] .ping`).click();
      await owner.locator(`#members li[data-member="${id}"] .rtt`, { hasText: / ms$/ }).waitFor({ timeout: WAIT_MS });
    }
    await mkdir(fileURLToPath(new URL('../test-results/', import.meta.url)), { recursive: true });
    await owner.screenshot({ path: SCREENSHOT });
  } finally {
    await Promise.all(pages.map((page) => page.close()));
  }
});

test('demo: a dropped connection shows reconnecting… and recovers without the user', async () => {
  // The page loads from, and connects through, a proxy the test cuts.
  const proxy = await startProxy(env.server);
  const a = await openDemo(`http://${new URL(proxy.server.wsUrl).host}/`);
  let b;
  try {
    await a.locator('#create').click();
    await a.locator('#room').waitFor({ timeout: WAIT_MS });
    const { hash } = new URL(await a.locator('#share-link').inputValue());
    b = await openDemo(`${env.server.httpUrl}/${hash}`);
    await Promise.all([waitForDirectMembers(a, 2), waitForDirectMembers(b, 2)]);

    proxy.setDown(true);
    proxy.cut();
    await a.locator('#status[data-status="reconnecting…"]').waitFor({ timeout: WAIT_MS });
    // The DataChannel does not need the server: the chat goes on meanwhile.
    await say(b, 'Still there?');
    await messageIn(a, 'Still there?');
    proxy.setDown(false);
    await a.locator('#status[data-status="online"]').waitFor({ timeout: WAIT_MS });
    await say(a, 'Back, and never gone');
    await messageIn(b, 'Back, and never gone');
    await waitForDirectMembers(b, 2);
    assert.equal(await b.locator('#messages .system', { hasText: 'left' }).count(), 0);
    assert.equal(await a.locator('#banner:not([hidden])').count(), 0);
  } finally {
    proxy.close();
    await Promise.all([a.close(), b?.close()]);
  }
});
