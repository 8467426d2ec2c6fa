// neuralapi-browser.test.mjs: NeuralAPI's page (www/neuralapi.html,
// MAILKIT_PRODUCT=neuralapi) clicked through in headless Chromium, behind
// lighttpd and behind Apache, as a person would:
// the plan picker (Starter / Pro from GET /plans) → subscribe Starter on
// the sandbox checkout → back with the API key and "10,000,000 tokens
// left" of a 10,000,000 allowance → top-up +5,000,000 → a debit on the
// sandbox dashboard brings the low-balance banner → (with generate.fcgi)
// a prompt answered with its cost, then the 402 at zero shown as such →
// Forget → subscribe Pro: 40,000,000 tokens and its overage limit → a
// debit past zero shows the overage used of that limit.
// Screenshots go to $MAILKIT_BUILDDIR/tests/output/neuralapi-browser/<server>/.
//
// MAILKIT_BROWSER_URL=http://127.0.0.1:8080 runs the flow once against an
// already-running NeuralAPI stack (MAILKIT_PRODUCT=neuralapi make run).
import assert from 'node:assert/strict';
import {
  adjustOnDashboard, browserFlowTests, eventually, expectHidden, expectText,
  openBrowser, payOnCheckout, toCheckout,
} from './browser-lib.mjs';

const FLOW_TIMEOUT_MS = 300000; // the whole flow for one server
const NARROW_WIDTH = 375;       // phone width the page must fit without side-scrolling
const STARTER = 10_000_000;
const PRO = 40_000_000;
const PRO_OVERAGE = 10_000_000;
const PACK = 5_000_000;

// What failure messages quote of the page.
const SUMMARY = ['#notice', '#lowBalance', '#balanceText', '#balanceSub', '#balError', '#subOut',
  '#genOut', '#topOut', '#plans'];

function tokensLeft(n) {
  return new RegExp(`^${n.toLocaleString('en-US')} tokens? left$`);
}
const fmt = (n) => n.toLocaleString('en-US');

/* ---------------------------------------------------------------- the flow */
async function neuralFlow({ server, baseUrl, contextDir, outDir }) {
  const { context, page, origin, jsErrors, foreign, loadClean, step } =
    await openBrowser({ server, baseUrl, contextDir, outDir, summary: SUMMARY });
  const stamp = Date.now();
  let cus = '';

  // Subscribe to plan (its radio's label) on the sandbox checkout and
  // come back signed in; resolves to the customer id.
  async function subscribeTo(planRe, email) {
    await page.getByRole('radio', { name: planRe }).check();
    await page.getByLabel('Email', { exact: true }).fill(email);
    await page.getByLabel('Name', { exact: true }).fill('Browser Test');
    await toCheckout(page, page.getByRole('button', { name: 'Subscribe' }));
    await payOnCheckout(page, origin);
    await expectText(page, '#notice', /Welcome, subscription active/);
    const id = await eventually('the customer id remembered', async () =>
      page.evaluate(() => localStorage.getItem('neuralapi.customer_id')));
    const key = await eventually('the API key remembered', async () =>
      page.evaluate(() => localStorage.getItem('neuralapi.api_key')));
    assert.match(key, /^mk_[A-Za-z0-9_-]{43}$/);
    assert.equal(await page.inputValue('#apiKey'), key, 'the key is shown in the account box');
    return id;
  }

  try {
    await step('page-and-plans', async () => {
      await loadClean(`${origin}/`);
      await expectText(page, 'h1', /^NeuralAPI$/);
      await expectText(page, '#sandboxBadge', /Offline sandbox/);
      // the plan picker, from GET /plans
      await expectText(page, '#plans', /Starter[\s\S]*10,000,000 tokens per month[\s\S]*stops at zero/);
      await expectText(page, '#plans', /Pro[\s\S]*40,000,000 tokens per month[\s\S]*10,000,000 tokens of overage/);
      assert.equal(await page.locator('#plans input[type="radio"]').count(), 2);
      assert.ok(await page.getByRole('radio', { name: /^Starter/ }).isChecked(), 'Starter first, chosen');
      await expectText(page, '#topupBtn', new RegExp(`^Buy ${fmt(PACK)} tokens`));
      await expectText(page, '#accountWho', /^No account yet/);
    });

    await step('generate-before-subscribing', async () => {
      await page.getByRole('button', { name: 'Generate' }).click();
      await expectText(page, '#genOut', /Subscribe first/);
    });

    await step('subscribe-starter', async () => {
      // the request names the plan picked
      let body = null;
      await page.route('**/checkout/subscribe', async (route) => {
        body = JSON.parse(route.request().postData() || '{}');
        await route.continue();
      });
      cus = await subscribeTo(/^Starter/, `nb-starter-${server}-${stamp}@example.com`);
      await page.unroute('**/checkout/subscribe');
      assert.equal(body?.plan, 'starter', JSON.stringify(body));
      await expectText(page, '#balanceText', tokensLeft(STARTER));
      await expectText(page, '#balanceSub', new RegExp(`Starter plan · of ${fmt(STARTER)} this cycle`));
      assert.ok(await page.locator('#meter').isVisible(), 'the allowance bar is shown');
      assert.equal(await page.getAttribute('#meter', 'aria-valuemax'), String(STARTER));
      assert.equal(await page.getAttribute('#meter', 'aria-valuenow'), String(STARTER));
      await expectHidden(page, '#overageView');
      await expectText(page, '#balFacts', /stops at zero/);
      await expectHidden(page, '#lowBalance');
      await expectHidden(page, '#subscribe');
      await expectText(page, "#history", /\+10,000,000 tokens/);
    });

    await step('narrow-375px', async () => {
      await page.setViewportSize({ width: NARROW_WIDTH, height: 800 });
      await expectText(page, '#balanceText', tokensLeft(STARTER));
      const width = await page.evaluate(() => document.documentElement.scrollWidth);
      assert.ok(width <= NARROW_WIDTH, `page fits ${NARROW_WIDTH}px (scrollWidth ${width})`);
      await page.setViewportSize({ width: 1000, height: 900 });
    });

    await step('topup', async () => {
      await toCheckout(page,
        page.getByRole('button', { name: new RegExp(`^Buy ${fmt(PACK)} tokens`) }));
      await payOnCheckout(page, origin);
      await expectText(page, '#notice', new RegExp(`Top-up complete: ${fmt(PACK)} tokens added`));
      await expectText(page, '#balanceText', tokensLeft(STARTER + PACK));
      await expectText(page, '#balanceSub', /includes top-ups/);
      await expectText(page, '#history', new RegExp(`Top-up pack[\\s\\S]*\\+${fmt(PACK)} tokens`));
      assert.equal(new URL(page.url()).search, '', 'address bar cleaned');
    });

    await step('low-balance-banner', async () => {
      // under the threshold (20% of the plan's 10,000,000): 1,000,000 left
      await adjustOnDashboard(page, origin, cus, 'debit', STARTER + PACK - 1_000_000);
      await loadClean(`${origin}/`);
      await expectText(page, '#balanceText', tokensLeft(1_000_000));
      await expectText(page, '#lowBalance', /Low balance: only 1,000,000 tokens left/);
      await expectText(page, '#lowBalance', /alert threshold is 2,000,000/);
      assert.ok(await page.locator('#lowBalanceTopupBtn').isVisible(), 'a top-up offered in the banner');
    });

    await step('prompt-answered', async () => {
      let key = null, auth = null;
      await page.route('**/api/generate', async (route) => {
        key = route.request().headers()['idempotency-key'] ?? '';
        auth = route.request().headers().authorization ?? '';
        await route.continue();
      });
      await page.fill('#prompt', 'Say hello in five words.');
      await page.getByRole('button', { name: 'Generate' }).click();
      await expectText(page, '#genCost', /^Cost [\d,]+ tokens?/);
      await page.unroute('**/api/generate');
      assert.match(key ?? '', /^\S{8,}$/, 'the prompt carries an Idempotency-Key');
      assert.match(auth ?? '', /^Bearer mk_/, 'the prompt carries the API key');
      assert.ok((await page.locator('#answer').innerText()).trim().length > 0, 'an answer is shown');
    });

    await step('starter-402-at-zero', async () => {
      await adjustOnDashboard(page, origin, cus, 'debit', 1_000_000);
      await page.goto(`${origin}/`);
      await expectText(page, '#balanceText', /^0 tokens left$/);
      await expectText(page, '#lowBalance', /out of tokens/i);
      await page.getByRole('button', { name: 'Generate' }).click();
      await expectText(page, '#genOut', /Out of tokens: your Starter plan stops at zero/);
      assert.ok(await page.locator('#genOut').getByRole('button', { name: 'Buy a top-up pack' }).isVisible(),
        '"Buy a top-up pack" offered next to the 402');
    });

    await step('forget-then-subscribe-pro', async () => {
      await page.getByRole('button', { name: 'Forget' }).click();
      await expectText(page, '#balEmpty', /Subscribe/);
      assert.ok(await page.locator('#subscribe').isVisible(), 'signed out: subscribe offered again');
      const proCus = await subscribeTo(/^Pro/, `nb-pro-${server}-${stamp}@example.com`);
      assert.notEqual(proCus, cus, 'a new customer');
      await expectText(page, '#balanceText', tokensLeft(PRO));
      await expectText(page, '#balanceSub', new RegExp(`Pro plan · of ${fmt(PRO)} this cycle`));
      await expectText(page, '#overageText',
        new RegExp(`^Overage: 0 tokens of ${fmt(PRO_OVERAGE)} tokens allowed past zero`));
      assert.equal(await page.getAttribute('#overageMeter', 'aria-valuemax'), String(PRO_OVERAGE));
      await expectHidden(page, '#lowBalance');
    });

    await step('pro-into-overage', async () => {
      // past zero, Pro runs into overage (up to its limit): 5,000,000 over
      const proCus = await page.evaluate(() => localStorage.getItem('neuralapi.customer_id'));
      await adjustOnDashboard(page, origin, proCus, 'debit', PRO + 5_000_000);
      await loadClean(`${origin}/`);
      await expectText(page, '#balanceText', /^0 tokens left$/);
      await expectText(page, '#overageText',
        new RegExp(`^Overage: ${fmt(5_000_000)} tokens of ${fmt(PRO_OVERAGE)} tokens`));
      assert.equal(await page.getAttribute('#overageMeter', 'aria-valuenow'), String(5_000_000));
      await expectText(page, '#lowBalance', /used up: requests now run into overage, up to 10,000,000 tokens/);
    });

    assert.deepEqual(jsErrors, [], 'no JavaScript errors on the page');
    assert.deepEqual(foreign, [], 'no requests leave the machine');
  } finally {
    await context.close();
  }
}

/* ---------------------------------------------------------------- tests */
browserFlowTests({ title: "NeuralAPI's page in Chromium", output: 'neuralapi-browser',
  env: { MAILKIT_PRODUCT: 'neuralapi' },
  timeoutMs: FLOW_TIMEOUT_MS, flow: neuralFlow });
