/*
 * account.js: what MailKit's page (index.html) and NeuralAPI's
 * (neuralapi.html) share: every API call (relative URLs, the API key as
 * Bearer, errors fit to show a person), the account this browser remembers
 * (customer id, email, API key), and small helpers for showing results.
 *
 * MailKitAccount(opts) returns the functions below, bound to the page's
 * state object ({customerId, email, apiKey, keyOk, balance, ...}).  opts:
 *   product      the name errors give ("MailKit", "NeuralAPI")
 *   storePrefix  what this browser's stored keys start with ("mailkit")
 *   state        the page's state
 *   renderBalance(d), clearBalance(), refreshAll()   the page's balance view
 *   describe(entry, isCredit) -> {what, reason}   a ledger entry in words
 *   amount(n)    credits in the product's unit ("3 emails", "1,024 tokens")
 *   messages     {subscribed(), toppedUp()}: the welcome and top-up notices
 * They use the page's elements #notice, #customerId, #apiKey, #accountWho,
 * #forgetAccountBtn, #subscribe, #subscribedNote, #topOut, #sandbox,
 * #sandboxBadge, #balError, #history, #historyEmpty, #historyError, and
 * the account controls wireAccount() wires (#apiKey, #useKeyBtn,
 * #showKeyBtn, #customerId, #useAccountBtn, #tutorialMode, #subEmail,
 * #topupBtn, #lowBalanceTopupBtn, #refreshBtn).  Text is always shown as text, never as markup.
 */
'use strict';
window.MailKitAccount = function (opts) {
  const KEY_RE = /^mk_[A-Za-z0-9_-]{43}$/;
  const REQUEST_TIMEOUT_MS = 20000;   // one API call; the server's own upstream timeouts are shorter
  const POLL_TRIES = 8;               // balance re-reads after a checkout, waiting for the grant
  const POLL_DELAY_MS = 1000;
  const HISTORY_ITEMS = 10;           // ledger entries listed
  const product = opts.product;
  const state = opts.state;
  // what this browser keeps, per product ("mailkit.api_key", "neuralapi.api_key")
  const store = {
    customer: opts.storePrefix + '.customer_id',
    email: opts.storePrefix + '.email',
    key: opts.storePrefix + '.api_key',          // the account's API key (Forget removes it)
    claim: opts.storePrefix + '.claim_token',    // one-time: fetches the key on the checkout return
    balanceBeforeTopup: opts.storePrefix + '.balance_before_topup',
  };
  const $ = (id) => document.getElementById(id);

  /* ---------------------------------------------------------- storage */
  function load(key) {
    try { return localStorage.getItem(key) || ''; } catch (e) { return ''; }
  }
  function save(key, value) {
    try {
      if (value) localStorage.setItem(key, value); else localStorage.removeItem(key);
    } catch (e) { /* private mode: the page still works for this visit */ }
  }

  /* ---------------------------------------------------------- http */
  // The API's paths are written from the product's root ('/send'); they are
  // fetched relative to the page, so it works mounted under any path
  // prefix (https://host/mailkit/ calls https://host/mailkit/send).
  function relative(path) {
    return path.replace(/^\//, '');
  }

  // Every call goes through here, with the API key (when there is one) as
  // Authorization: Bearer.  Resolves to {ok, status, data};
  // throws an Error whose message is fit to show a person.  Server error
  // text comes from the JSON {"error": ...} body; an HTML error page (a
  // proxy's 502, say) is never shown, only its status.
  async function api(method, path, body, extraHeaders) {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), REQUEST_TIMEOUT_MS);
    const headers = Object.assign({ Accept: 'application/json' },
      body === undefined ? {} : { 'Content-Type': 'application/json' },
      state.apiKey ? { Authorization: 'Bearer ' + state.apiKey } : {}, extraHeaders || {});
    let res;
    try {
      res = await fetch(relative(path), {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: 'no-store',
        credentials: 'same-origin',
        signal: ctl.signal,
      });
    } catch (e) {
      clearTimeout(timer);
      if (e && e.name === 'AbortError')
        throw new Error(product + ' took too long to answer. Please try again.');
      throw new Error('Could not reach ' + product + '. Check your connection and try again.');
    }
    let text = '';
    try { text = await res.text(); } catch (e) { /* treated as empty */ }
    clearTimeout(timer);
    let data = null;
    const type = res.headers.get('Content-Type') || '';
    if (text && /json/i.test(type)) {
      try { data = JSON.parse(text); } catch (e) { data = null; }
    } else if (text && /^\s*[\[{]/.test(text)) {
      try { data = JSON.parse(text); } catch (e) { data = null; }
    }
    if (res.ok) {
      if (data === null || typeof data !== 'object')
        throw new Error(product + ' sent an answer this page could not read (HTTP ' + res.status + ').');
      return { ok: true, status: res.status, data };
    }
    let message = '';
    if (data && typeof data.error === 'string' && data.error) message = data.error;
    else if (data && data.error && typeof data.error.message === 'string') message = data.error.message;
    else message = product + ' answered HTTP ' + res.status +
      (res.statusText ? ' (' + res.statusText + ')' : '') + '. Please try again in a moment.';
    if (res.status === 401 && state.apiKey)
      message += '. Paste a current API key under "Your account" (a new one can be issued for you).';
    else if (res.status === 401 && state.customerId)
      // a customer id alone (the tutorial's mode) is not enough on this server
      message = 'This ' + product + ' server needs your API key, not a customer ID. Paste the key ' +
        'you got when you subscribed (it was also emailed to you) under "Your account"; ' +
        'lost it? Ask the service operator for a new one.';
    const err = new Error(message);
    err.status = res.status;
    throw err;
  }

  /* ---------------------------------------------------------- ui helpers */
  // Runs fn with the button disabled and saying "Working…"; restores it after.
  async function busy(button, fn) {
    if (button.disabled) return;
    const label = button.textContent;
    button.disabled = true;
    button.setAttribute('aria-busy', 'true');
    button.textContent = 'Working…';
    try {
      return await fn();
    } finally {
      button.disabled = false;
      button.removeAttribute('aria-busy');
      button.textContent = label;
    }
  }

  // Shows text (never markup) in an output box. kind: '', 'ok', 'error'.
  function show(el, text, kind) {
    el.replaceChildren();
    el.className = 'out' + (kind ? ' ' + kind : '');
    el.setAttribute('role', kind === 'error' ? 'alert' : 'status');
    el.tabIndex = -1;   // an error can be given focus, where the person is
    if (text !== undefined && text !== null) el.append(document.createTextNode(String(text)));
    el.hidden = false;
    return el;
  }
  function hide(el) { el.hidden = true; el.replaceChildren(); }

  function notice(text, kind) {
    const el = $('notice');
    el.className = 'banner ' + (kind || 'ok');
    el.setAttribute('role', kind === 'error' ? 'alert' : 'status');
    el.textContent = text;
    el.hidden = false;
  }

  function num(v) {
    if (v === null || v === undefined || v === '') return NaN;
    const n = Number(v);
    return Number.isFinite(n) ? n : NaN;
  }
  function when(iso) {
    if (!iso) return '';
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return String(iso);
    return d.toLocaleString(undefined, { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' });
  }

  /* ---------------------------------------------------------- account */
  function setCustomer(id, email) {
    state.customerId = (id || '').trim();
    if (email !== undefined) state.email = email || '';
    save(store.customer, state.customerId);
    save(store.email, state.email);
    $('customerId').value = state.customerId;
    renderAccount();
  }
  function setKey(key) {
    state.apiKey = (key || '').trim();
    state.keyOk = false;
    save(store.key, state.apiKey);
    $('apiKey').value = state.apiKey;
    renderAccount();
  }
  function renderAccount() {
    const who = $('accountWho');
    const acct = state.customerId ? ' (' + state.customerId + ')' : '';
    if (!state.customerId && !state.apiKey) {
      who.textContent = 'No account yet: subscribe below and it is remembered in this browser.';
    } else if (state.apiKey && !state.keyOk) {
      who.textContent = 'Checking your API key…';
    } else if (state.email) {
      who.textContent = 'Signed in as ' + state.email + acct +
        (state.apiKey ? ' with your API key' : '') + '. Remembered in this browser.';
    } else {
      who.textContent = (state.apiKey ? 'Signed in with your API key' + acct : 'Account' + acct) +
        '. Remembered in this browser.';
    }
    $('forgetAccountBtn').hidden = !state.customerId && !state.apiKey;
    renderSubscribed();
  }
  // One plan per customer: once the server knows the account (its balance
  // was read), the subscribe form gives way to a note.
  function renderSubscribed() {
    const known = state.balance !== null && (state.keyOk || (!state.apiKey && state.customerId));
    $('subscribe').hidden = known;
    $('subscribedNote').hidden = !known;
  }
  // True when the page can act for an account (a key, or in the tutorial's
  // mode a customer id); otherwise shows why an action cannot run.
  function needCustomer(outEl) {
    const typed = $('customerId').value.trim();
    if (!state.apiKey && typed && typed !== state.customerId) setCustomer(typed, '');
    if (state.apiKey || state.customerId) return true;
    // the error stays where the person is: focus it, not a field far above
    show(outEl, 'Subscribe first (section 1 above), or paste your API key under ' +
      '"Your account".', 'error').focus();
    return false;
  }
  // The balance and ledger paths: with a key the server knows who "me" is.
  function creditsPath(suffix) {
    return '/credits/' + (state.apiKey ? 'me' : encodeURIComponent(state.customerId)) + (suffix || '');
  }

  /* ---------------------------------------------------------- balance and history */
  const fmt = new Intl.NumberFormat('en-US', { maximumFractionDigits: 3 });

  async function loadBalance() {
    if (!state.customerId && !state.apiKey) { opts.clearBalance(); return null; }
    try {
      const r = await api('GET', creditsPath());
      if (state.apiKey && !state.keyOk) { state.keyOk = true; renderAccount(); }
      if (typeof r.data.customer_id === 'string' && r.data.customer_id !== state.customerId)
        setCustomer(r.data.customer_id, '');   // another account: its email is not known here
      opts.renderBalance(r.data);
      return r.data;
    } catch (e) {
      if (e.status === 401) {
        // an unknown or revoked key (or a customer id this server does not
        // take alone) signs nobody in: say so, and forget it here
        const hadKey = !!state.apiKey;
        setKey('');
        setCustomer('', '');
        opts.clearBalance();
        notice((hadKey ? 'That API key was not accepted: ' : '') + e.message +
          (hadKey ? ' It has been forgotten in this browser.' : ''), 'error');
        renderBalanceError(e.message);
        $('apiKey').focus();
        return null;
      }
      renderBalanceError(e.message);
      return null;
    }
  }

  function renderBalanceError(message) {
    $('balView').hidden = true;
    $('balEmpty').hidden = true;
    $('lowBalance').hidden = true;
    show($('balError'), message, 'error');
  }

  function renderHistory(items) {
    const list = $('history');
    list.replaceChildren();
    hide($('historyError'));
    const shown = Array.isArray(items) ? items.slice(0, HISTORY_ITEMS) : [];
    $('historyEmpty').hidden = shown.length > 0;
    for (const item of shown) {
      if (!item || typeof item !== 'object') continue;
      const amount = Math.abs(num(item.amount));
      const credit = item.is_credit === true || item.is_credit === 'true';
      const { what, reason } = opts.describe(item, credit);
      const li = document.createElement('li');
      const a = document.createElement('span'); a.className = 'what'; a.textContent = what;
      const b = document.createElement('span');
      b.className = 'amount ' + (credit ? 'credit' : 'debit');
      b.textContent = Number.isFinite(amount) ? (credit ? '+' : '\u2212') + opts.amount(amount) : '';
      const c = document.createElement('span'); c.className = 'detail';
      c.textContent = [when(item.created_at), reason].filter(Boolean).join(' · ');
      const d = document.createElement('span'); d.className = 'after';
      const after = num(item.balance_after);
      d.textContent = Number.isFinite(after) ? fmt.format(after) + ' left after' : '';
      li.append(a, b, c, d);
      list.append(li);
    }
  }

  async function loadHistory() {
    if (!state.customerId && !state.apiKey) return;
    try {
      const r = await api('GET', creditsPath('/ledger?limit=' + HISTORY_ITEMS));
      renderHistory(r.data.items);
    } catch (e) {
      $('history').replaceChildren();
      $('historyEmpty').hidden = true;
      show($('historyError'), 'Could not load recent activity: ' + e.message, 'error');
    }
  }

  /* ---------------------------------------------------------- checkout */
  // After a checkout the grant may land a moment after the redirect:
  // re-read until ok(balanceData) or the tries run out.
  async function refreshUntil(ok) {
    let d = null;
    for (let i = 0; i < POLL_TRIES; i++) {
      d = await loadBalance();
      if (d && ok(num(d.balance))) break;
      await new Promise((r) => setTimeout(r, POLL_DELAY_MS));
    }
    await loadHistory();
    return d;
  }

  // Only ever navigate to an http(s) URL the server gave us.
  function goToCheckout(url) {
    let u;
    try { u = new URL(url, location.href); } catch (e) { u = null; }
    if (!u || (u.protocol !== 'https:' && u.protocol !== 'http:'))
      throw new Error(product + ' returned a checkout link this page will not open.');
    location.assign(u.href);
  }

  async function topup(outEl) {
    const out = outEl || $('topOut');
    if (!needCustomer(out)) return;
    try {
      const r = await api('POST', '/checkout/topup', state.apiKey ? {} : { customer_id: state.customerId });
      if (!r.data.checkout_url) throw new Error(product + ' did not return a checkout link.');
      try { sessionStorage.setItem(store.balanceBeforeTopup, String(state.balance ?? '')); } catch (e) { /* ignore */ }
      show(out, 'Opening the secure checkout…');
      goToCheckout(r.data.checkout_url);
    } catch (e) {
      show(out, e.message, 'error');
    }
  }

  // Back from the hosted checkout: confirm with the server (the redirect
  // itself proves nothing), remember the customer, clean the address bar.
  async function handleReturn() {
    const q = new URLSearchParams(location.search);
    const sub = q.get('subscription_id');
    const pay = q.get('payment_id');
    const isSub = q.has('subscribed') || !!sub;
    const isTop = q.has('topped_up') || !!pay;
    if (!isSub && !isTop) return false;
    history.replaceState(null, '', location.pathname + location.hash);
    if (!sub && !pay) {
      notice(q.get('status')
        ? 'Checkout was not completed (status: ' + q.get('status') + ').'
        : 'Checkout was not completed.', 'error');
      return false;
    }
    notice('Confirming your payment…', 'ok');
    // The claim token goes in a header, not the URL (no access logs), once.
    const claim = sub ? load(store.claim) : '';
    let r;
    try {
      r = await api('GET', '/checkout/return?' + (sub ? 'subscription_id=' + encodeURIComponent(sub)
        : 'payment_id=' + encodeURIComponent(pay)), undefined,
        claim ? { Authorization: 'Bearer ' + claim } : undefined);
    } catch (e) {
      notice('We could not confirm your payment: ' + e.message, 'error');
      return false;
    }
    if (claim) save(store.claim, '');
    const d = r.data;
    const status = String(d.status || '');
    if (typeof d.api_key === 'string' && KEY_RE.test(d.api_key)) {
      if (d.customer_id !== state.customerId) state.email = '';
      setKey(d.api_key);
    } else if (state.apiKey && d.customer_id && d.customer_id !== state.customerId) {
      setKey('');   // a stored key of another account would act for that account
    }
    if (d.customer_id) setCustomer(d.customer_id, d.email || state.email || q.get('email') || '');
    const keyNote = typeof d.api_key === 'string'
      ? ' Your API key is under "Your account" (also emailed to you); keep it secret.'
      : (!state.apiKey && (d.api_key_delivery === 'emailed' || d.api_key_delivery === 'existing'))
        ? ' Your API key has been emailed to you: paste it under "Your account".'
        : '';
    if (sub) {
      if (status === 'active') {
        notice('Welcome, subscription active' + (d.email ? ' for ' + d.email : '') + '. ' +
          opts.messages.subscribed() + keyNote, 'ok');
        if (!state.apiKey) { $('apiKey').focus(); return true; }
        await refreshUntil((b) => b > 0);
      } else {
        notice('Your subscription is ' + (status || 'not active yet') + '. Refresh the balance in a moment.', 'error');
        await opts.refreshAll();
      }
    } else {
      if (status === 'succeeded') {
        let before = NaN;
        try { before = num(sessionStorage.getItem(store.balanceBeforeTopup)); sessionStorage.removeItem(store.balanceBeforeTopup); } catch (e) { /* ignore */ }
        notice(opts.messages.toppedUp(), 'ok');
        await refreshUntil((b) => !Number.isFinite(before) || b > before);
      } else {
        notice('The top-up payment is ' + (status || 'not complete') + '.', 'error');
        await opts.refreshAll();
      }
    }
    return true;
  }

  // A fresh Idempotency-Key.  The page keeps one per email or prompt while
  // its outcome is unknown (no answer, timeout, 5xx), so pressing the button
  // again cannot send, run or charge twice; a new one once the server has
  // answered or the input changed.
  function newKey() {
    const b = new Uint8Array(16);
    crypto.getRandomValues(b);
    return 'page-' + Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
  }

  async function probeSandbox() {
    const probe = async (method) => {
      const res = await fetch(relative('/sandbox/'), { method, cache: 'no-store', credentials: 'same-origin' });
      return res;
    };
    try {
      let res = await probe('HEAD');
      if (!res.ok) res = await probe('GET');
      if (res.ok) {
        $('sandboxBadge').hidden = false;
        $('sandbox').hidden = false;
      }
    } catch (e) { /* no sandbox: the real services */ }
  }

  /* ---------------------------------------------------------- wiring */
  // The account as this browser remembers it, and the controls every page
  // has: the API key (use, show), the tutorial's customer id, Forget, the
  // top-up buttons, Refresh.  onForget(): what else the page clears.
  function wireAccount(onForget) {
    state.customerId = load(store.customer);
    state.email = load(store.email);
    state.apiKey = load(store.key);
    if (state.apiKey && !KEY_RE.test(state.apiKey)) state.apiKey = '';
    $('customerId').value = state.customerId;
    $('apiKey').value = state.apiKey;
    if (state.customerId && !state.apiKey) $('tutorialMode').open = true;
    if (state.email && !$('subEmail').value) $('subEmail').value = state.email;
    renderAccount();

    $('topupBtn').addEventListener('click', () => busy($('topupBtn'), () => topup($('topOut'))));
    $('lowBalanceTopupBtn').addEventListener('click',
      () => busy($('lowBalanceTopupBtn'), () => topup($('topOut'))));
    $('refreshBtn').addEventListener('click', () => busy($('refreshBtn'), opts.refreshAll));
    const useTyped = () => busy($('useAccountBtn'), async () => {
      const typed = $('customerId').value.trim();
      if (typed !== state.customerId || state.apiKey) { setKey(''); setCustomer(typed, ''); }
      hide($('notice'));
      await opts.refreshAll();
    });
    $('useAccountBtn').addEventListener('click', useTyped);
    $('customerId').addEventListener('keydown', (e) => { if (e.key === 'Enter') { e.preventDefault(); useTyped(); } });
    const useKey = () => busy($('useKeyBtn'), async () => {
      const typed = $('apiKey').value.trim();
      if (!KEY_RE.test(typed)) {
        notice('That is not a ' + product + ' API key: it starts with mk_ and has 46 characters.', 'error');
        $('apiKey').focus();
        return;
      }
      if (typed !== state.apiKey) { setCustomer('', ''); setKey(typed); }
      hide($('notice'));
      await opts.refreshAll();
    });
    $('useKeyBtn').addEventListener('click', useKey);
    $('apiKey').addEventListener('keydown', (e) => { if (e.key === 'Enter') { e.preventDefault(); useKey(); } });
    $('showKeyBtn').addEventListener('click', () => {
      const shown = $('apiKey').type === 'text';
      $('apiKey').type = shown ? 'password' : 'text';
      $('showKeyBtn').textContent = shown ? 'Show' : 'Hide';
      $('showKeyBtn').setAttribute('aria-pressed', String(!shown));
    });
    $('forgetAccountBtn').addEventListener('click', () => {
      setKey('');
      save(store.claim, '');
      setCustomer('', '');
      opts.clearBalance();
      onForget();
    });
  }

  return {
    store, HISTORY_ITEMS, load, save, relative, api, busy, show, hide, notice, num, when,
    setCustomer, setKey, renderAccount, renderSubscribed, needCustomer, creditsPath,
    loadBalance, renderBalanceError, renderHistory, loadHistory,
    refreshUntil, goToCheckout, topup, handleReturn, newKey, probeSandbox, wireAccount,
  };
};
