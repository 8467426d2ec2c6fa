// browser.test.mjs: the tutorial's "Test the Full Flow", clicked through
// www/index.html in headless Chromium, behind lighttpd and behind Apache.
//
// What a person sees is asserted at each step: subscribe → pay on the
// sandbox checkout → back on the page with the customer recognised and its
// API key (fetched once with the claim token, sent as Bearer on every call;
// forgotten and pasted back) →
// "5,000 emails left" → send → 4,999 → debit 4,000 on the sandbox dashboard
// → send → low-balance notice on the page and the low-balance email in the
// sandbox outbox → top-up checkout → +5,000 → a send the provider fails at
// first: "Accepted", queued, then sent without a reload → drain to zero →
// the 402 text.
// A screenshot of each step goes to
// $MAILKIT_BUILDDIR/tests/output/browser/<server>/NN-step.png.
//
// Prerequisites: playwright-core in tests/node_modules (npm ci --prefix tests),
// /usr/bin/chromium, tests/integration/harness.mjs.  Without them the file
// prints "1..0 # SKIP reason" and exits 0, unless MAILKIT_REQUIRE_ALL_TESTS=1.
//
// MAILKIT_BROWSER_URL=http://127.0.0.1:8080 runs the flow once against an
// already-running stack (e.g. `make run`) instead of starting one per server.
import assert from 'node:assert/strict';
import {
  adjustOnDashboard, browserFlowTests, eventually, expectHidden, expectText,
  openBrowser, payOnCheckout, sleep, toCheckout,
} from './browser-lib.mjs';

const FLOW_TIMEOUT_MS = 240000; // the whole flow for one server
const NARROW_WIDTH = 375;       // phone width the page must fit without side-scrolling
const LOW_BALANCE_TEXT = /low balance/i;
const NO_CREDITS =
  'No email credits remaining. Buy a top-up pack to keep sending.';

// What failure messages quote of the page.
const SUMMARY = ['#notice', '#lowBalance', '#balanceText', '#balError', '#subOut', '#sendOut',
  '#topOut', '#historyError'];

function balanceRe(n) {
  return new RegExp(`^${n.toLocaleString('en-US')} emails? left$`);
}

/* ---------------------------------------------------------------- the flow */
async function tutorialFlow({ server, baseUrl, contextDir, outDir }) {
  const { context, page, origin, jsErrors, foreign, loadClean, step } =
    await openBrowser({ server, baseUrl, contextDir, outDir, summary: SUMMARY });

  const email = `browser-${server}-${Date.now()}@example.com`;
  let cus = '';
  let apiKey = '';

  try {
    await step('page', async () => {
      await loadClean(`${origin}/`);
      await expectText(page, 'h1', /^MailKit$/);
      await expectText(page, '#sandboxBadge', /Offline sandbox/);
      await expectText(page, '#sandbox', /outbox[\s\S]*dashboard/i);
      // relative links (MailKit may be mounted under a path), resolved against the page
      const resolved = (sel) => page.$eval(sel, (a) => a.href);
      assert.equal(await resolved('#sandboxOutboxLink'), `${origin}/sandbox/outbox`);
      assert.equal(await resolved('#sandboxDashboardLink'), `${origin}/sandbox/`);
    });

    await step('send-before-subscribing', async () => {
      // the error appears next to Send, and focus stays there (not on a field far above)
      await page.setViewportSize({ width: 1000, height: 500 });
      await page.getByRole('button', { name: 'Send', exact: true }).click();
      await expectText(page, '#sendOut', /Subscribe first/);
      assert.equal(await page.evaluate(() => document.activeElement && document.activeElement.id),
        'sendOut', 'focus on the error');
      const box = await page.evaluate(() => {
        const r = document.getElementById('sendOut').getBoundingClientRect();
        return { top: r.top, bottom: r.bottom, h: window.innerHeight };
      });
      assert.ok(box.top >= 0 && box.bottom <= box.h, `the error is on screen: ${JSON.stringify(box)}`);
      await page.setViewportSize({ width: 1000, height: 900 });
    });

    await step('subscribe-checkout', async () => {
      await page.getByLabel('Email', { exact: true }).fill(email);
      await page.getByLabel('Name', { exact: true }).fill('Browser Test');
      await toCheckout(page, page.getByRole('button', { name: 'Subscribe' }));
    });

    await step('subscribed', async () => {
      await payOnCheckout(page, origin);
      await expectText(page, '#notice', /Welcome, subscription active/);
      // The redirect's query is cleaned from the address bar.
      await eventually('the address bar without ?subscribed…', async () =>
        new URL(page.url()).search === '', async () => page.url());
      cus = await eventually('the customer id remembered', async () =>
        page.evaluate(() => localStorage.getItem('mailkit.customer_id')));
      assert.match(cus, /\S/);
      assert.equal(await page.inputValue('#customerId'), cus);
      apiKey = await eventually('the API key remembered', async () =>
        page.evaluate(() => localStorage.getItem('mailkit.api_key')));
      assert.match(apiKey, /^mk_[A-Za-z0-9_-]{43}$/);
      assert.equal(await page.inputValue('#apiKey'), apiKey, 'the key is shown in the account box');
      assert.equal(await page.getAttribute('#apiKey', 'type'), 'password', 'masked until asked');
      assert.equal(await page.evaluate(() => localStorage.getItem('mailkit.claim_token')), null,
        'the one-time claim token is dropped');
      await expectText(page, '#notice', /API key/);
      await expectText(page, '#accountWho', new RegExp(email.replace(/[.+]/g, '\\$&')));
      await expectText(page, '#balanceText', balanceRe(5000));
      await expectText(page, '#balanceSub', /of 5,000/);
      assert.ok(await page.locator('#meter').isVisible(), 'balance bar shown');
      assert.ok(await page.locator('#meterThreshold').isVisible(), 'threshold marked on the bar');
      await expectHidden(page, '#lowBalance');
    });

    await step('no-second-plan', async () => {
      // subscribed: the subscribe form is gone from the page ...
      await expectHidden(page, '#subscribe');
      await expectText(page, '#subscribedNote', /You are subscribed/);
      // ... and the server refuses a second plan for the same buyer
      const r = await page.evaluate(async (addr) => {
        const res = await fetch('/checkout/subscribe', { method: 'POST',
          headers: { 'Content-Type': 'application/json' },
          body: JSON.stringify({ email: addr, name: 'Again' }) });
        return { status: res.status, type: res.headers.get('content-type'), body: await res.json() };
      }, email);
      assert.equal(r.status, 409, JSON.stringify(r));
      assert.match(r.type, /^application\/json/);
      assert.match(r.body.error, /already has an active MailKit plan/);
    });

    await step('narrow-375px', async () => {
      await page.setViewportSize({ width: NARROW_WIDTH, height: 800 });
      await expectText(page, '#balanceText', balanceRe(5000));
      const width = await page.evaluate(() => document.documentElement.scrollWidth);
      assert.ok(width <= NARROW_WIDTH, `page fits ${NARROW_WIDTH}px (scrollWidth ${width})`);
    });

    await step('reload-remembers', async () => {
      await page.setViewportSize({ width: 1000, height: 900 });
      await page.reload();
      assert.equal(await page.inputValue('#customerId'), cus);
      assert.equal(await page.inputValue('#apiKey'), apiKey);
      await expectText(page, '#balanceText', balanceRe(5000));
    });

    await step('forget-and-paste-key', async () => {
      await page.getByRole('button', { name: 'Forget' }).click();
      await expectText(page, '#balEmpty', /Subscribe/);
      assert.equal(await page.evaluate(() => localStorage.getItem('mailkit.api_key')), null);
      assert.equal(await page.inputValue('#apiKey'), '');
      assert.ok(await page.locator('#subscribe').isVisible(), 'signed out: subscribe offered again');
      // the tutorial's customer-id route on a server that needs keys: it
      // says what is needed and where to get it, not a raw protocol error
      await page.locator('#tutorialMode summary').click();
      await page.fill('#customerId', cus);
      await page.getByRole('button', { name: 'Use this account' }).click();
      await expectText(page, '#notice', /needs your API key, not a customer ID[\s\S]*emailed to you/);
      assert.doesNotMatch(await page.locator('body').innerText(), /Authorization: Bearer/);
      await expectText(page, '#accountWho', /^No account yet/);
      // a key MailKit never issued is refused, says so, and is forgotten:
      // never "Signed in"
      await page.fill('#apiKey', 'mk_' + 'A'.repeat(43));
      await page.getByRole('button', { name: 'Use this key' }).click();
      await expectText(page, '#notice', /API key was not accepted[\s\S]*invalid or revoked API key[\s\S]*forgotten/);
      await expectText(page, '#balError', /invalid or revoked API key/);
      await expectText(page, '#accountWho', /^No account yet/);
      assert.doesNotMatch(await page.locator('#accountWho').innerText(), /Signed in/);
      assert.equal(await page.evaluate(() => localStorage.getItem('mailkit.api_key')), null);
      // the real one (as pasted from the email) brings the account back
      await page.fill('#apiKey', apiKey);
      await page.getByRole('button', { name: 'Use this key' }).click();
      await expectText(page, '#balanceText', balanceRe(5000));
      assert.equal(await page.inputValue('#customerId'), cus, 'the account is recognised from the key');
      await expectText(page, '#accountWho', /API key/);
    });

    await step('send-first', async () => {
      // Hold the request briefly so the loading state can be seen.
      let key = null, auth = null, body = null;
      await page.route('**/send', async (route) => {
        key = route.request().headers()['idempotency-key'] ?? '';
        auth = route.request().headers().authorization ?? '';
        body = JSON.parse(route.request().postData() || '{}');
        await sleep(400);
        await route.continue();
      });
      const send = page.getByRole('button', { name: 'Send', exact: true });
      await send.click();
      await eventually('the Send button disabled and "Working…"', async () =>
        (await page.locator('#sendBtn').isDisabled()) &&
        (await page.locator('#sendBtn').innerText()).includes('Working'),
      async () => page.locator('#sendBtn').innerText());
      await expectText(page, '#sendOut', /^Sent\. Message id \S+/);
      await page.unroute('**/send');
      assert.match(key ?? '', /^\S{8,}$/, 'the send carries an Idempotency-Key');
      assert.equal(auth, `Bearer ${apiKey}`, 'the send carries the API key');
      assert.equal(body.customer_id, undefined, 'the key, not the body, names the customer');
      await expectText(page, '#balanceText', balanceRe(4999));
      await expectText(page, '#history', /Email sent[\s\S]*\u22121 email/);
      await expectText(page, '#emails', /Hello from MailKit[\s\S]*\bsent\b/);
      await expectText(page, '#sendBtn', /^Send$/);
    });

    await step('dashboard-debit-4000', async () => {
      await adjustOnDashboard(page, origin, cus, 'debit', 4000);
    });

    await step('low-balance-on-page', async () => {
      await page.goto(`${origin}/`);
      await expectText(page, '#balanceText', balanceRe(999));
      await page.getByRole('button', { name: 'Send', exact: true }).click();
      await expectText(page, '#sendOut', /^Sent\. Message id \S+/);
      await expectText(page, '#balanceText', balanceRe(998));
      await expectText(page, '#lowBalance', LOW_BALANCE_TEXT);
      await expectText(page, '#lowBalance', /998 emails left/);
      await expectText(page, '#history', /Balance adjustment[\s\S]*\u22124,000 emails/);
    });

    await step('sandbox-pages-on-a-phone', async () => {
      await page.setViewportSize({ width: NARROW_WIDTH, height: 800 });
      for (const p of ['/sandbox/', '/sandbox/outbox']) {
        await loadClean(new URL(p, origin).href);
        const width = await page.evaluate(() => document.documentElement.scrollWidth);
        assert.ok(width <= NARROW_WIDTH, `${p} fits ${NARROW_WIDTH}px (scrollWidth ${width})`);
      }
      await page.setViewportSize({ width: 1000, height: 900 });
    });

    await step('key-email-in-outbox', async () => {
      await page.goto(new URL('/sandbox/outbox', origin).href);
      await eventually(`the API key email to ${email} in /sandbox/outbox`, async () =>
        page.evaluate(([addr, k]) => {
          for (const el of document.querySelectorAll('tr, li, article')) {
            const t = el.innerText || '';
            if (t.includes(addr) && /API key/.test(t)) return true;
          }
          return false;
        }, [email, apiKey]), async () => (await page.locator('body').innerText()).slice(0, 600));
    });

    await step('low-balance-email-in-outbox', async () => {
      // The notification is sent from the webhook, a moment after the debit.
      await eventually(`a low-balance email to ${email} in /sandbox/outbox`, async () => {
        await page.goto(new URL('/sandbox/outbox', origin).href);
        return page.evaluate(([addr]) => {
          // One email (a table row, list item or article) to the address
          // that says "low": not the address and "low" in different emails.
          for (const el of document.querySelectorAll('tr, li, article')) {
            const t = el.innerText || '';
            if (t.includes(addr) && /\blow\b/i.test(t)) return true;
          }
          return false;
        }, [email]);
      }, async () => (await page.locator('body').innerText()).slice(0, 600));
    });

    await step('topup-checkout', async () => {
      await loadClean(`${origin}/`);
      await expectText(page, '#balanceText', balanceRe(998));
      await toCheckout(page, page.getByRole('button', { name: /Buy 5,000 emails/ }));
    });

    await step('topped-up', async () => {
      await payOnCheckout(page, origin);
      await expectText(page, '#notice', /Top-up complete/);
      await expectText(page, '#balanceText', balanceRe(5998));
      await expectHidden(page, '#lowBalance');
      await expectText(page, '#history', /\+5,000 emails/);
      assert.equal(new URL(page.url()).search, '', 'address bar cleaned');
    });

    await step('queued-then-sent', async () => {
      // The provider fails the send and its two retries (UPSTREAM_MAX_RETRIES):
      // MailKit answers 202 and the page shows the email queued, then sent,
      // without a reload.
      const r = await fetch(new URL('/sandbox/admin/faults', origin), { method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ target: 'email_send', mode: '500', count: 3 }) });
      assert.equal(r.status, 200, 'fault armed');
      await page.evaluate(() => { window.mailkitSamePage = true; });
      await page.fill('#sendSubj', 'Queued then sent');
      await page.getByRole('button', { name: 'Send', exact: true }).click();
      await expectText(page, '#sendOut', /^Accepted: .*Message id \S+/);
      await expectText(page, '#emails li:first-child', /Queued then sent[\s\S]*\b(queued|sent)\b/);
      await expectText(page, '#emails li:first-child', /Queued then sent[\s\S]*\bsent\b/);
      assert.equal(await page.evaluate(() => window.mailkitSamePage), true, 'no reload');
      await expectText(page, '#balanceText', balanceRe(5997));
    });

    await step('dashboard-drain', async () => {
      await adjustOnDashboard(page, origin, cus, 'debit', 5997);
    });

    await step('send-refused', async () => {
      await page.goto(`${origin}/`);
      await expectText(page, '#balanceText', balanceRe(0));
      await page.getByRole('button', { name: 'Send', exact: true }).click();
      await expectText(page, '#sendOut', new RegExp(NO_CREDITS.replace(/\./g, '\\.')));
      await expectText(page, '#sendBtn', /^Send$/);
      assert.ok(await page.locator('#sendOut').getByRole('button', { name: 'Buy a top-up pack' }).isVisible(),
        '"Buy a top-up pack" offered next to the 402');
      await expectText(page, '#lowBalance', /out of email credits/i);
    });

    await step('errors-readable', async () => {
      // An HTML error page from the web server is never shown raw.
      await page.route(/\/credits\/[^/]+$/, (route) => route.fulfill({
        status: 502, contentType: 'text/html', body: '<html><body><h1>502 Bad Gateway</h1></body></html>',
      }));
      await page.getByRole('button', { name: 'Refresh balance' }).click();
      const shown = await expectText(page, '#balError', /HTTP 502/);
      assert.ok(!shown.includes('<'), `no markup in the error: ${shown}`);
      await page.unroute(/\/credits\/[^/]+$/);
      // A network failure says so.
      await page.route(/\/credits\/[^/]+$/, (route) => route.abort('connectionrefused'));
      await page.getByRole('button', { name: 'Refresh balance' }).click();
      await expectText(page, '#balError', /Could not reach MailKit/);
      await page.unroute(/\/credits\/[^/]+$/);
    });

    assert.deepEqual(jsErrors, [], 'no JavaScript errors on the page');
    assert.deepEqual(foreign, [], 'no requests leave the machine');
  } finally {
    await context.close();
  }
}

/* ---------------------------------------------------------------- tests */
browserFlowTests({ title: 'tutorial flow in Chromium', output: 'browser',
  timeoutMs: FLOW_TIMEOUT_MS, flow: tutorialFlow });
