// browser-lib.mjs: what the browser tests share: the prerequisites
// (playwright-core, Chromium; without them the test file is skipped, or
// fails under MAILKIT_REQUIRE_ALL_TESTS=1), Chromium's flags on this
// machine, expectations polled the way a person waits, and the sandbox
// dashboard's "Adjust balance" form.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { after, before, test } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const SRCDIR = process.env.MAILKIT_SRCDIR || path.resolve(HERE, '..', '..');
export const BUILDDIR = process.env.MAILKIT_BUILDDIR || SRCDIR;
export const CHROMIUM = process.env.MAILKIT_CHROMIUM || '/usr/bin/chromium';
export const EXTERNAL_URL = process.env.MAILKIT_BROWSER_URL || '';

export const EXPECT_MS = 15000;        // one expectation: what a person waits for, at most
const POLL_MS = 200;                   // how often an expectation is re-checked

/* ---------------------------------------------------------------- prerequisites */
function findPlaywright() {
  const roots = [path.join(SRCDIR, 'tests'), path.join(BUILDDIR, 'tests'), path.resolve(HERE, '..')];
  for (const root of roots) {
    try {
      return createRequire(path.join(root, 'package.json')).resolve('playwright-core');
    } catch { /* try the next */ }
  }
  return null;
}

const missing = [];
const playwrightPath = findPlaywright();
if (!playwrightPath) missing.push('playwright-core not installed (npm ci --prefix tests)');
if (!fs.existsSync(CHROMIUM)) missing.push(`${CHROMIUM} not found (apt-get install chromium)`);
if (!EXTERNAL_URL && !fs.existsSync(path.join(HERE, 'harness.mjs')))
  missing.push('tests/integration/harness.mjs not found');
if (missing.length) {
  const why = missing.join('; ');
  if (process.env.MAILKIT_REQUIRE_ALL_TESTS === '1') {
    console.log(`1..1\nnot ok 1 - browser prerequisites missing: ${why}`);
    process.exit(1);
  }
  console.log(`1..0 # SKIP ${why}`);
  process.exit(0);
}

// playwright-core is CommonJS: its exports arrive as the default export.
const playwright = await import(pathToFileURL(playwrightPath).href);
export const { chromium } = playwright.default ?? playwright;
export const harness = EXTERNAL_URL ? null : await import(pathToFileURL(path.join(HERE, 'harness.mjs')).href);

// The flags the machine needs (machines/c.md): no sandbox as root, no GPU,
// and none of Chromium's own background traffic on this offline machine.
export const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

/* ---------------------------------------------------------------- helpers */
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Polls until check() returns a truthy value or EXPECT_MS passes; the
// error says what was expected and what was last seen.
export async function eventually(what, check, seen) {
  const deadline = Date.now() + EXPECT_MS;
  let last = '';
  for (;;) {
    try {
      const v = await check();
      if (v) return v;
    } catch (e) { last = `(${e.message.split('\n')[0]})`; }
    if (Date.now() > deadline) {
      if (seen) { try { last = await seen(); } catch (e) { /* keep previous */ } }
      throw new Error(`expected ${what} within ${EXPECT_MS / 1000}s; saw: ${JSON.stringify(last)}`);
    }
    await sleep(POLL_MS);
  }
}

export async function visibleText(page, selector) {
  const loc = page.locator(selector);
  if ((await loc.count()) === 0 || !(await loc.first().isVisible())) return null;
  return (await loc.first().innerText()).trim();
}

// What the page says right now in these elements (the visible ones), or the
// start of its text: for failure messages.
async function pageSummary(page, selectors) {
  try {
    const parts = [];
    for (const sel of selectors) {
      const t = await visibleText(page, sel);
      if (t) parts.push(`${sel}: ${t.replace(/\s+/g, ' ')}`);
    }
    if (!parts.length) parts.push((await page.locator('body').innerText()).slice(0, 400));
    return `${page.url()} | ${parts.join(' | ')}`;
  } catch (e) {
    return `(page unreadable: ${e.message})`;
  }
}

// Click `button` (a locator), which leads to the sandbox's hosted checkout;
// resolves there, ready to pay.
export async function toCheckout(page, button) {
  await Promise.all([
    page.waitForURL(/\/sandbox\/checkout\//),
    button.click(),
  ]);
  await page.locator('#pay').waitFor({ state: 'visible' });
}

// Pay on the sandbox's hosted checkout; resolves back on the page at origin.
export async function payOnCheckout(page, origin) {
  await Promise.all([
    page.waitForURL((u) => u.origin === origin && u.pathname === '/'),
    page.click('#pay'),
  ]);
}

export async function expectText(page, selector, re) {
  return eventually(`${selector} to show ${re}`, async () => {
    const t = await visibleText(page, selector);
    return t !== null && re.test(t) ? t : null;
  }, async () => (await visibleText(page, selector)) ?? `${selector} hidden`);
}

export async function expectHidden(page, selector) {
  return eventually(`${selector} to be hidden`, async () =>
    (await visibleText(page, selector)) === null,
  async () => visibleText(page, selector));
}

// Fills and submits the sandbox dashboard's "Adjust balance" form for cus.
export async function adjustOnDashboard(page, sandboxBase, cus, entryType, amount) {
  await page.goto(new URL('/sandbox/', sandboxBase).href);
  const form = page.locator(`form[action*="${cus}"][action*="adjust"]`);
  await eventually(`an Adjust balance form for ${cus} on the dashboard`,
    async () => (await form.count()) > 0,
    async () => (await page.locator('body').innerText()).slice(0, 600));
  const f = form.first();
  const type = f.locator('[name="entry_type"]');
  const tag = await type.first().evaluate((el) => `${el.tagName}:${el.type || ''}`);
  if (tag.startsWith('SELECT')) await type.first().selectOption(entryType);
  else if (/radio/.test(tag)) await f.locator(`[name="entry_type"][value="${entryType}"]`).check();
  else await type.first().fill(entryType);
  await f.locator('[name="amount"]').fill(String(amount));
  const submit = f.locator('button[type="submit"], button:not([type]), input[type="submit"]').first();
  // The form answers 303 back to the dashboard.
  await Promise.all([page.waitForNavigation(), submit.click()]);
}

/*
 * Chromium with a persistent profile in contextDir, one page, and what a
 * flow needs around it: jsErrors and foreign (requests leaving the
 * machine) collected, loadClean(url) (asserts no console error while
 * loading), and step(name, fn), which screenshots each step into outDir as
 * NN-name.png (NN-name-FAILED.png on failure, with what the elements of
 * `summary` (selectors) show added to the error).  Close the context when done.
 */
export async function openBrowser({ server, baseUrl, contextDir, outDir, summary }) {
  fs.mkdirSync(outDir, { recursive: true });
  const context = await chromium.launchPersistentContext(contextDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width: 1000, height: 900 },
    locale: 'en-US',
  });
  const page = context.pages()[0] ?? await context.newPage();
  page.setDefaultTimeout(EXPECT_MS);
  page.setDefaultNavigationTimeout(EXPECT_MS);

  const origin = new URL(baseUrl).origin;
  const jsErrors = [];
  const foreign = [];
  // Console errors, as a person with the developer tools open sees them
  // (Chromium logs every failed load there: a 404 favicon, a 405 probe).
  const consoleErrors = [];
  page.on('pageerror', (e) => jsErrors.push(e.message));
  page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(`${page.url()}: ${m.text()}`); });
  // Load url and assert that loading it logged no console error.
  async function loadClean(url) {
    consoleErrors.length = 0;
    await page.goto(url, { waitUntil: 'networkidle' });
    assert.deepEqual(consoleErrors, [], `no console errors loading ${url}`);
  }
  context.on('request', (r) => {
    const u = new URL(r.url());
    if (!['127.0.0.1', 'localhost', '[::1]'].includes(u.hostname) && u.protocol !== 'data:')
      foreign.push(r.url());
  });

  let n = 0;
  async function step(name, fn) {
    n += 1;
    const tag = `${String(n).padStart(2, '0')}-${name}`;
    try {
      await fn();
      await page.screenshot({ path: path.join(outDir, `${tag}.png`), fullPage: true });
    } catch (e) {
      try {
        await page.screenshot({ path: path.join(outDir, `${tag}-FAILED.png`), fullPage: true });
      } catch { /* the page may be gone */ }
      const seen = await pageSummary(page, summary);
      e.message = `[${server}] step ${tag} failed: ${e.message}\n  page: ${seen}`;
      throw e;
    }
  }
  return { context, page, origin, jsErrors, foreign, loadClean, step };
}

/*
 * One test per web server (or one against MAILKIT_BROWSER_URL): a stack of
 * its own (env: its settings), a fresh Chromium profile, screenshots under
 * tests/output/<output>/<server>/, and flow({server, baseUrl, contextDir,
 * outDir}) run against it; a failure carries the stack's log tail.
 */
export function browserFlowTests({ title, output, env = {}, timeoutMs, flow }) {
  const servers = EXTERNAL_URL ? ['external'] : ['lighttpd', 'apache'];
  const tmpDirs = [];

  before(() => fs.mkdirSync(path.join(BUILDDIR, 'tests', 'output', output), { recursive: true }));
  after(() => { for (const d of tmpDirs) fs.rmSync(d, { recursive: true, force: true }); });
  for (const server of servers) {
    test(`${title} behind ${server}`, { timeout: timeoutMs }, async () => {
      const outDir = path.join(BUILDDIR, 'tests', 'output', output, server);
      fs.rmSync(outDir, { recursive: true, force: true });
      const contextDir = fs.mkdtempSync(path.join(os.tmpdir(), `${output}-chromium-${server}-`));
      tmpDirs.push(contextDir);
      let stack = null;
      try {
        const baseUrl = EXTERNAL_URL || (stack = await harness.startStack({ server, env })).baseUrl;
        try {
          await flow({ server, baseUrl, contextDir, outDir });
        } catch (e) {
          if (stack && stack.logs) e.message += `\n  stack logs:\n${await stack.logs()}`;
          throw e;
        }
      } finally {
        if (stack) await stack.stop();
      }
    });
  }
}
