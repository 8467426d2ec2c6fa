/*
 * account.js: what MailKit's page (index.html) and NeuralAPI's
 * (neuralapi.html) share: every API call (relative URLs, the API key as
 * Bearer, errors fit to show a person), the account this browser remembers
 * (customer id, email, API key), and small helpers for showing results.
 *
 * MailKitAccount({product, state, store: {customer, email, key}, timeoutMs})
 * returns the functions below, bound to the page's state object
 * ({customerId, email, apiKey, keyOk, balance, ...}).  They use the page's
 * elements #notice, #customerId, #apiKey, #accountWho, #forgetAccountBtn,
 * #subscribe and #subscribedNote.  Text is always shown as text, never as
 * markup.
 */
'use strict';
window.MailKitAccount = function (opts) {
  const product = opts.product;
  const state = opts.state;
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
    const timer = setTimeout(() => ctl.abort(), opts.timeoutMs);
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
    save(opts.store.customer, state.customerId);
    save(opts.store.email, state.email);
    $('customerId').value = state.customerId;
    renderAccount();
  }
  function setKey(key) {
    state.apiKey = (key || '').trim();
    state.keyOk = false;
    save(opts.store.key, state.apiKey);
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

  return {
    load, save, relative, api, busy, show, hide, notice, num, when,
    setCustomer, setKey, renderAccount, renderSubscribed, needCustomer, creditsPath,
  };
};
