// The demo page, driven as a person would: create a group, open its link in
// another page, chat, ping, lose the connection for a while. Also saves a
// screenshot to look at.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { WAIT_MS, setUp, startProxy, startServer } from './harness.mjs';

const RESULTS = new URL('../test-results/', import.meta.url);
const SCREENSHOT = fileURLToPath(new URL('demo-4-members.png', RESULTS));
const VIEWPORT = { width: 1280, height: 800 };

let env;
before(async () => {
  env = await setUp();
});
after(() => env?.tearDown());

async function openDemo(url = `${env.server.httpUrl}/`, viewport = VIEWPORT) {
  const page = await env.context.newPage();
  await page.setViewportSize(viewport);
  page.on('pageerror', (error) => console.error(`[demo page error] ${error.message}`));
  await page.goto(url);
  await page.locator('#status[data-status="online"]').waitFor({ timeout: WAIT_MS });
  return page;
}

/** Creates a group on a fresh demo page; resolves with the page and the share link. */
async function createGroup({ capability = '10', server = env.server } = {}) {
  const page = await openDemo(`${server.httpUrl}/`);
  await page.locator('#capability').selectOption(capability);
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
      .locator(`#members li[data-member="${idB}"] .rtt`, { hasText: /^\d+\.\d ms · direct$/ })
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

/**
 * Runs in the sending page before a file is chosen: records every progress
 * figure the next transfer bubble shows, and with `cancel`, clicks its
 * Cancel button at the first one.
 */
function watchTransfer(cancel) {
  window.progress = [];
  new MutationObserver((records, observer) => {
    for (const record of records) {
      const transfer = record.target;
      if (!(transfer instanceof HTMLElement) || !transfer.classList.contains('transfer')) continue;
      if (record.attributeName === 'data-sent') window.progress.push([Number(transfer.dataset.sent), Number(transfer.dataset.total)]);
      if (cancel && window.progress.length > 0) {
        transfer.querySelector('.cancel')?.click();
        observer.disconnect();
      }
    }
  }).observe(document.getElementById('messages'), { subtree: true, attributes: true, attributeFilter: ['data-sent'] });
}

/** Runs in a receiving page: the SHA-256 of the file a download link holds, in hex. */
async function downloadedHash(name) {
  const link = [...document.querySelectorAll('#messages a.file-name')].find((a) => a.download === name);
  const bytes = await (await fetch(link.href)).arrayBuffer();
  const digest = await crypto.subtle.digest('SHA-256', bytes);
  return [...new Uint8Array(digest)].map((byte) => byte.toString(16).padStart(2, '0')).join('');
}

test('demo: a file goes to the group with its progress shown, arrives whole, and Cancel stops one; screenshots saved to test-results/', async () => {
  const { page: a, link } = await createGroup();
  const b = await openDemo(link);
  const c = await openDemo(link);
  try {
    await Promise.all([a, b, c].map((page) => waitForDirectMembers(page, 3)));
    // Over MAX_BODY_BYTES, so it travels in chunks; a name that is not ASCII.
    const contents = randomBytes(3 * 1024 * 1024 + 17);
    const name = 'photo · été.bin';
    await a.bringToFront();
    await a.evaluate(watchTransfer, false);
    await a.locator('#file-input').setInputFiles({ name, mimeType: 'application/octet-stream', buffer: contents });
    await a.locator('.transfer[data-state="sent"]').waitFor({ timeout: WAIT_MS });
    for (const page of [b, c]) {
      const received = page.locator('#messages .file', { has: page.locator(`a[download="${name}"]`) });
      await received.waitFor({ timeout: WAIT_MS });
      assert.equal(await received.getAttribute('data-bytes'), String(contents.length));
      assert.equal(await page.evaluate(downloadedHash, name), createHash('sha256').update(contents).digest('hex'));
    }
    // Progress over both targets: monotonic, ending at the total.
    const progress = await a.evaluate(() => window.progress);
    assert.ok(progress.length > 1, `progress shown ${progress.length} times`);
    const total = progress.at(-1)[1];
    assert.ok(total >= 2 * contents.length, `total ${total} counts both targets`);
    assert.deepEqual(progress.at(-1), [total, total]);
    for (let i = 1; i < progress.length; i++) assert.ok(progress[i][0] >= progress[i - 1][0], `progress went back at ${i}`);

    // Cancelled at its first progress: the sender says so, nobody gets it,
    // and the chat goes on.
    await a.evaluate(watchTransfer, true);
    await a.locator('#file-input').setInputFiles({ name: 'big.bin', mimeType: 'application/octet-stream', buffer: randomBytes(16 * 1024 * 1024) });
    await a.locator('.transfer[data-state="failed"]', { hasText: 'cancelled' }).waitFor({ timeout: WAIT_MS });
    await say(a, 'after the cancelled file');
    await Promise.all([b, c].map((page) => messageIn(page, 'after the cancelled file')));
    for (const page of [b, c]) assert.equal(await page.locator('a[download="big.bin"]').count(), 0);
    await mkdir(fileURLToPath(RESULTS), { recursive: true });
    await b.bringToFront();
    await b.screenshot({ path: fileURLToPath(new URL('demo-file.png', RESULTS)) });
    await a.bringToFront();
    await a.screenshot({ path: fileURLToPath(new URL('demo-file-sender.png', RESULTS)) });
  } finally {
    await Promise.all([a, b, c].map((page) => page.close()));
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
      await owner.locator(`#members li[data-member="${id}"] .rtt`, { hasText: / ms · direct$/ }).waitFor({ timeout: WAIT_MS });
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

/**
 * What a person would see as broken layout: the page scrolls sideways, or a
 * control of the sidebar sticks out of its card. Returns the problems found.
 */
function layoutProblems(page) {
  return page.evaluate(() => {
    const problems = [];
    const root = document.documentElement;
    if (root.scrollWidth > window.innerWidth) problems.push(`scrolls sideways: ${root.scrollWidth} > ${window.innerWidth}`);
    for (const control of document.querySelectorAll('.side button, .side input, .side .state, .side .rtt')) {
      const card = control.closest('.card').getBoundingClientRect();
      const box = control.getBoundingClientRect();
      if (box.left < card.left - 0.5 || box.right > card.right + 0.5) {
        problems.push(`${control.className || control.id || control.tagName} [${box.left}, ${box.right}] outside its card [${card.left}, ${card.right}]`);
      }
    }
    const side = document.querySelector('.side').getBoundingClientRect();
    const chat = document.querySelector('.chat').getBoundingClientRect();
    const sideBySide = chat.top < side.bottom && chat.left >= side.left;
    if (sideBySide && side.right > chat.left) problems.push(`the sidebar [.., ${side.right}] runs under the chat [${chat.left}, ..]`);
    return problems;
  });
}

test("demo: a non-owner's view and phone widths fit, screenshots saved to test-results/", async () => {
  const { page: owner, link } = await createGroup();
  const member = await openDemo(link);
  const third = await openDemo(link);
  try {
    await Promise.all([owner, member, third].map((page) => waitForDirectMembers(page, 3)));
    const ownerId = await owner.locator('#self-id').getAttribute('title');
    await member.bringToFront();
    await member.locator(`#members li[data-member="${ownerId}"] .ping`).click();
    await member.locator(`#members li[data-member="${ownerId}"] .rtt`, { hasText: / ms · direct$/ }).waitFor({ timeout: WAIT_MS });
    await mkdir(fileURLToPath(RESULTS), { recursive: true });
    for (const [width, height, name] of [
      [1280, 800, 'demo-non-owner.png'],
      [390, 844, 'demo-390.png'],
      [360, 740, 'demo-360.png'],
    ]) {
      await member.setViewportSize({ width, height });
      assert.deepEqual(await layoutProblems(member), [], `at ${width} px`);
      await member.screenshot({ path: fileURLToPath(new URL(name, RESULTS)), fullPage: true });
    }
  } finally {
    await Promise.all([owner, member, third].map((page) => page.close()));
  }
});

test('demo: a star group says where messages go and who owns it, and the legend names every state', async () => {
  const { page: owner } = await createGroup({ capability: '5' });
  const link = await owner.locator('#share-link').inputValue();
  const b = await openDemo(link);
  const c = await openDemo(link);
  try {
    // Members are linked to the owner only: the link between b and c is "no link".
    await b.waitForFunction(
      () =>
        document.querySelectorAll('#members .state[data-state="direct"]').length === 1 &&
        document.querySelectorAll('#members .state[data-state="closed"]').length === 1,
      null,
      { polling: 5, timeout: WAIT_MS },
    );
    assert.match(await b.locator('.legend').innerText(), /direct.*relayed.*connecting.*no link/s);
    assert.equal(await b.locator('#chat-scope').innerText(), 'reaches only the owner (star)');
    assert.equal(await owner.locator('#chat-scope').innerText(), 'reaches every member (star)');
    await b.locator('#messages .system', { hasText: 'your messages reach only the owner' }).waitFor({ timeout: WAIT_MS });

    const idB = await b.locator('#self-id').getAttribute('title');
    await owner.bringToFront();
    await owner.locator('#leave').click();
    await b.locator('#messages .system', { hasText: 'You are now the owner.' }).waitFor({ timeout: WAIT_MS });
    await c.locator('#messages .system', { hasText: `${idB.slice(0, 8)} is now the owner.` }).waitFor({ timeout: WAIT_MS });
    assert.equal(await b.locator('#chat-scope').innerText(), 'reaches every member (star)');
  } finally {
    await Promise.all([owner, b, c].map((page) => page.close()));
  }
});

test('demo: when the server is gone the message box is disabled, not a "sent" bubble that fails', async () => {
  const server = await startServer();
  const { page } = await createGroup({ server });
  try {
    assert.equal(await page.locator('#message-input').isDisabled(), false);
    await server.stop();
    await page.locator('#status[data-status="offline"]').waitFor({ timeout: WAIT_MS });
    assert.equal(await page.locator('#message-input').isDisabled(), true);
    assert.equal(await page.locator('#send').isDisabled(), true);
  } finally {
    await page.close();
    await server.stop();
  }
});
