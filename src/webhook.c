/* webhook.c: webhook.fcgi — POST /webhooks/dodo, Dodo's signed events (Standard Webhooks). */
#define _GNU_SOURCE		/* timegm */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>

#include "customer_plan.h"
#include "mailkit.h"
#include "store.h"
#include "usage.h"

#define WH_FIELD_MAX		256	/* bytes kept of any text field we log or use */
#define WH_NOTICE_MAX		(16 * 1024)	/* the low-balance email body */
#define WH_LOWBAL_KEY_PREFIX	"mailkit-lowbal-"	/* + webhook-id: one notice per delivery */
#define WH_LOWBAL_SUBJECT	"Your MailKit email credits are running low"
#define WH_LOWBAL_SUBJECT_AI	"Your NeuralAPI tokens are running low"

static struct settings			 settings;
static struct whsig_key			 webhook_key;	/* decoded once at start */
static const struct mail_provider	*mailer;

/* What one event's handler concluded. */
enum wh_outcome {
	WH_DONE,	/* handled (or deliberately ignored): acknowledge */
	WH_RETRY,	/* transient failure: release the claim, answer 5xx, Dodo retries */
};

/* One delivery, as the handlers see it. */
struct wh_event {
	const char	*id;		/* webhook-id */
	char		 type[WH_FIELD_MAX];
	time_t		 at;		/* the envelope's "timestamp"; 0 if absent */
	json_object	*data;		/* the envelope's "data" object (may be NULL) */
};

/*
 * Copy member `key` of obj as text into dst ("" when absent or null):
 * strings as they are, numbers and booleans as json-c prints them.
 * Control bytes become '?', so the value is safe in a log line.
 */
static void
wh_text(json_object *obj, const char *key, char *dst, size_t dstlen)
{
	json_object	*v;
	const char	*s;
	size_t		 i;

	dst[0] = '\0';
	if (obj == NULL || !json_object_object_get_ex(obj, key, &v) || v == NULL ||
	    json_object_is_type(v, json_type_object) || json_object_is_type(v, json_type_array))
		return;
	if ((s = json_object_get_string(v)) == NULL)
		return;
	snprintf(dst, dstlen, "%s", s);
	for (i = 0; dst[i] != '\0'; i++)
		if ((unsigned char)dst[i] < 0x20 || dst[i] == 0x7f)
			dst[i] = '?';
}

/* Member `key` of obj if it is an object, else NULL. */
static json_object *
wh_object(json_object *obj, const char *key)
{
	json_object *v;

	if (obj == NULL || !json_object_object_get_ex(obj, key, &v) ||
	    !json_object_is_type(v, json_type_object))
		return NULL;
	return v;
}

/* "2025-08-04T06:00:00.000000Z" -> Unix seconds; 0 if it does not parse. */
static time_t
wh_iso_time(const char *s)
{
	struct tm	 tm;
	const char	*end;

	memset(&tm, 0, sizeof tm);
	if ((end = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm)) == NULL)
		return 0;
	/* fractions and 'Z' follow; Dodo sends UTC, an offset is not expected */
	return timegm(&tm);
}

/* A decimal amount as a double, for comparisons only.  0 / -1. */
static int
wh_decimal(const char *s, double *out)
{
	char	*end;

	if (*s == '\0')
		return -1;
	*out = strtod(s, &end);
	return *end == '\0' ? 0 : -1;
}

/* Does this ledger event concern another entitlement than ours?  (A business
 * may run several; only MailKit's emails credits are ours to act on.) */
static int
wh_other_entitlement(json_object *data)
{
	char cent[WH_FIELD_MAX];

	if (settings.credit_entitlement_id == NULL || *settings.credit_entitlement_id == '\0')
		return 0;
	wh_text(data, "credit_entitlement_id", cent, sizeof cent);
	return cent[0] != '\0' && strcmp(cent, settings.credit_entitlement_id) != 0;
}

/* What the notice calls a credit: MailKit sells emails, NeuralAPI tokens. */
static const char *
wh_unit(const char *available)
{
	if (settings_is_neuralapi(&settings))
		return strcmp(available, "1") == 0 ? "token" : "tokens";
	return strcmp(available, "1") == 0 ? "email" : "emails";
}

/* A top-up's size for the notice: "5,000" (thousands separated). */
static void
wh_topup_size(char *out, size_t outlen)
{
	char	digits[32];
	size_t	n, o = 0;

	snprintf(digits, sizeof digits, "%ld", settings.topup_credits);
	n = strlen(digits);
	for (size_t i = 0; i < n && o + 2 < outlen; i++) {
		if (i > 0 && (n - i) % 3 == 0)
			out[o++] = ',';
		out[o++] = digits[i];
	}
	out[o] = '\0';
}

/* The notice, every interpolated value HTML-escaped.  0 / -1. */
static int
wh_notice_html(struct buf *b, const char *name, const char *available, const char *percent)
{
	char	size[32];
	int	rc = 0;

	wh_topup_size(size, sizeof size);
	rc |= buf_puts(b, "<!doctype html><html><head><meta charset=\"utf-8\"></head><body>"
	    "<p>Hello");
	if (*name != '\0') {
		rc |= buf_puts(b, " ");
		rc |= buf_html(b, name);
	}
	rc |= buf_puts(b, ",</p><p>Your MailKit balance is running low: you have <strong>");
	rc |= buf_html(b, available);
	rc |= buf_puts(b, " ");
	rc |= buf_puts(b, wh_unit(available));
	rc |= buf_puts(b, "</strong> left");
	if (*percent != '\0') {
		rc |= buf_puts(b, ", under ");
		rc |= buf_html(b, percent);
		rc |= buf_puts(b, "% of your plan");
	}
	rc |= buf_printf(b, ".</p><p>When they run out, %s stops until you top up. "
	    "Buy a top-up pack (%s more %s) at <a href=\"", settings_is_neuralapi(&settings) ?
	    "the API" : "sending", size, wh_unit("0"));
	rc |= buf_html(b, settings.base_url);
	rc |= buf_puts(b, "\">");
	rc |= buf_html(b, settings.base_url);
	rc |= buf_puts(b, "</a>.</p><p>— MailKit</p></body></html>");
	return rc == 0 ? 0 : -1;
}

/* The same notice as plain text (no escaping: it is not markup).  0 / -1. */
static int
wh_notice_text(struct buf *b, const char *name, const char *available, const char *percent)
{
	char	size[32];
	int	rc = 0;

	wh_topup_size(size, sizeof size);
	rc |= buf_printf(b, "Hello%s%s,\n\nYour MailKit balance is running low: you have "
	    "%s %s left", *name != '\0' ? " " : "", name, available, wh_unit(available));
	if (*percent != '\0')
		rc |= buf_printf(b, ", under %s%% of your plan", percent);
	rc |= buf_printf(b, ".\n\nWhen they run out, %s stops until you top up. "
	    "Buy a top-up pack (%s more %s) at %s\n\n-- MailKit\n",
	    settings_is_neuralapi(&settings) ? "the API" : "sending", size, wh_unit("0"),
	    settings.base_url);
	return rc == 0 ? 0 : -1;
}

/*
 * credit.balance_low: remember it (credits.fcgi shows it) and email the
 * customer once per delivery.  Permanent problems (unknown customer, no
 * usable address, the provider refusing the message) are logged and
 * acknowledged: retrying cannot fix them.
 */
static enum wh_outcome
wh_balance_low(const struct wh_event *ev)
{
	char			 customer[WH_FIELD_MAX], available[WH_FIELD_MAX];
	char			 unit[WH_FIELD_MAX], percent[WH_FIELD_MAX], threshold[WH_FIELD_MAX];
	char			 key[IDEMPOTENCY_KEY_MAX + 1];
	struct dodo_customer	 cus;
	struct mail_message	 msg;
	struct mail_result	 sent;
	struct mk_err		 err;
	struct buf		 html, text;
	enum wh_outcome		 outcome = WH_DONE;
	int			 owner;

	buf_init(&html, WH_NOTICE_MAX);
	buf_init(&text, WH_NOTICE_MAX);
	wh_text(ev->data, "customer_id", customer, sizeof customer);
	wh_text(ev->data, "available_balance", available, sizeof available);
	wh_text(ev->data, "credit_entitlement_name", unit, sizeof unit);
	wh_text(ev->data, "threshold_percent", percent, sizeof percent);
	wh_text(ev->data, "threshold_amount", threshold, sizeof threshold);

	if (wh_other_entitlement(ev->data)) {
		log_info("[low-balance] %s: another credit entitlement, ignored", customer);
		goto out;
	}
	if (!valid_customer_id(customer)) {
		log_warn("[low-balance] event %s has no usable customer_id, ignored", ev->id);
		goto out;
	}
	log_info("[low-balance] %s has %s %s left (under %s%%)", customer, available, unit,
	    percent);

	if (store_low_balance_set(&settings, customer, available, threshold, ev->at, ev->id,
	    &err) == -1 || (owner = store_low_balance_owner(&settings, customer, ev->id,
	    &err)) == -1) {
		outcome = WH_RETRY;
		goto out;
	}
	if (!owner) {
		/* one notice per downward crossing: this period's first event sent it */
		log_info("[low-balance] %s: already notified for this low period", customer);
		goto out;
	}

	if (dodo_get_customer(&settings, customer, &cus, &err) == -1) {
		if (err.status >= 500) {
			log_warn("[low-balance] %s: customer lookup failed, will retry: %s",
			    customer, err.msg);
			outcome = WH_RETRY;
		} else
			log_warn("[low-balance] %s: customer lookup failed: %s", customer, err.msg);
		goto out;
	}
	if (!valid_email(cus.email)) {
		log_warn("[low-balance] %s: no valid email address on record, no notice sent",
		    customer);
		goto out;
	}
	if ((size_t)snprintf(key, sizeof key, "%s%s", WH_LOWBAL_KEY_PREFIX, ev->id) >=
	    sizeof key || !valid_idempotency_key(key)) {
		log_warn("[low-balance] %s: webhook id unusable as an idempotency key, "
		    "no notice sent", customer);
		goto out;
	}
	/* in the page's words ("emails"), not the entitlement's name */
	if (wh_notice_html(&html, cus.name, available, percent) == -1 ||
	    wh_notice_text(&text, cus.name, available, percent) == -1) {
		log_error("[low-balance] %s: notice does not fit %d bytes", customer,
		    WH_NOTICE_MAX);
		goto out;
	}

	memset(&msg, 0, sizeof msg);
	msg.from = settings.mail_from;
	msg.to[0] = cus.email;
	msg.nto = 1;
	msg.subject = settings_is_neuralapi(&settings) ? WH_LOWBAL_SUBJECT_AI : WH_LOWBAL_SUBJECT;
	msg.html = html.data;
	msg.text = text.data;
	msg.idempotency_key = key;
	if (mailer->send(&settings, &msg, &sent, &err) == -1) {
		if (err.maybe_done && !mailer->idempotent)
			/* SMTP: maybe delivered; a retry could deliver it twice */
			log_warn("[low-balance] %s: notice maybe sent, not retried: %s", customer,
			    err.msg);
		else if (err.maybe_done || err.status != 400) {
			/* unknown outcome or a refusal that may pass later (rate limit,
			 * our key): the retry reuses the idempotency key */
			log_warn("[low-balance] %s: notice not sent, will retry: %s", customer,
			    err.msg);
			outcome = WH_RETRY;
		} else
			log_warn("[low-balance] %s: notice refused by %s: %s", customer,
			    mailer->name, err.msg);
		goto out;
	}
	log_info("[low-balance] %s: notice sent (%s id %s)", customer, mailer->name, sent.id);
 out:
	buf_free(&html);
	buf_free(&text);
	return outcome;
}

/*
 * credit.added: clear the customer's low-balance notice when this credit
 * brings the balance back to the notice's threshold or above (a top-up or
 * a renewal grant).  A small credit such as a refunded send does not clear
 * it.  If the event carries no usable balance_after, a credit clears it.
 */
static enum wh_outcome
wh_credit_added(const struct wh_event *ev)
{
	char				 customer[WH_FIELD_MAX], amount[WH_FIELD_MAX];
	char				 after[WH_FIELD_MAX];
	struct store_low_balance	 low;
	struct mk_err			 err;
	double				 balance, threshold;
	int				 has_low;

	wh_text(ev->data, "customer_id", customer, sizeof customer);
	wh_text(ev->data, "amount", amount, sizeof amount);
	wh_text(ev->data, "balance_after", after, sizeof after);
	if (wh_other_entitlement(ev->data)) {
		log_info("[credit] %s: credit.added for another credit entitlement, ignored",
		    customer);
		return WH_DONE;
	}
	log_info("[credit] %s: credit.added +%s (balance %s)", customer, amount, after);
	if (!valid_customer_id(customer))
		return WH_DONE;

	if ((has_low = store_low_balance_get(&settings, customer, &low, &err)) == -1)
		return WH_RETRY;
	if (has_low == 0)
		return WH_DONE;
	if (wh_decimal(after, &balance) == 0 && wh_decimal(low.threshold, &threshold) == 0 &&
	    balance < threshold) {
		log_info("[low-balance] %s: still under %s after the credit", customer,
		    low.threshold);
		return WH_DONE;
	}
	if (store_low_balance_clear(&settings, customer, ev->at, &err) == -1)
		return WH_RETRY;
	log_info("[low-balance] %s: cleared by credit.added", customer);
	return WH_DONE;
}

/* The other ledger events: one log line each. */
static enum wh_outcome
wh_ledger_logged(const struct wh_event *ev)
{
	char customer[WH_FIELD_MAX], amount[WH_FIELD_MAX], after[WH_FIELD_MAX];

	wh_text(ev->data, "customer_id", customer, sizeof customer);
	wh_text(ev->data, "amount", amount, sizeof amount);
	wh_text(ev->data, "balance_after", after, sizeof after);
	log_info("[credit] %s: %s %s (balance %s) %s%s", customer, ev->type, amount, after,
	    ev->id, wh_other_entitlement(ev->data) ? " [another entitlement]" : "");
	return WH_DONE;
}

/*
 * credit.deducted / credit.overage_charged: logged per delivery; when the
 * meter made it (reference_type "meter"), its amount clears the customer's
 * oldest usage still counted as unsettled (usage.h), once per ledger entry
 * id, whichever of this webhook and the outbox's ledger poll sees it first.
 */
static enum wh_outcome
wh_deducted(const struct wh_event *ev)
{
	char		 customer[WH_FIELD_MAX], amount[WH_FIELD_MAX], ref[WH_FIELD_MAX];
	char		 entry[WH_FIELD_MAX];
	struct mk_err	 err;

	(void)wh_ledger_logged(ev);
	wh_text(ev->data, "customer_id", customer, sizeof customer);
	wh_text(ev->data, "amount", amount, sizeof amount);
	wh_text(ev->data, "reference_type", ref, sizeof ref);
	wh_text(ev->data, "id", entry, sizeof entry);
	if (strcmp(ref, "meter") != 0 || wh_other_entitlement(ev->data) ||
	    !valid_customer_id(customer) || entry[0] == '\0')
		return WH_DONE;
	if (usage_meter_deduction(&settings, customer, entry, amount, &err) == -1)
		return WH_RETRY;
	return WH_DONE;
}

/* subscription.*: the customer's plan may have changed (overage room). */
static enum wh_outcome
wh_subscription(const struct wh_event *ev)
{
	char customer[WH_FIELD_MAX], status[WH_FIELD_MAX];

	wh_text(wh_object(ev->data, "customer"), "customer_id", customer, sizeof customer);
	wh_text(ev->data, "status", status, sizeof status);
	log_info("[subscription] %s: %s (status %s)", customer, ev->type, status);
	if (valid_customer_id(customer))
		customer_plan_forget(customer);
	return WH_DONE;
}

/*
 * subscription.active / payment.succeeded: the customer is paying, so they
 * need an API key: their first one.  A customer who has or had one (a
 * top-up, a renewal, the other event of the same purchase, a key an
 * operator revoked) gets nothing.
 * While the buyer's page holds a pending claim (checkout.c), the key is left
 * for GET /checkout/return to hand over (and mail); otherwise it is issued
 * and mailed now.  If mailing fails the key is withdrawn and the delivery
 * retried (a fresh key then), so no one is left with a key nobody received.
 */
static enum wh_outcome
wh_purchase(const struct wh_event *ev)
{
	char		 customer[WH_FIELD_MAX], id[WH_FIELD_MAX], status[WH_FIELD_MAX];
	char		 email[WH_FIELD_MAX], name[WH_FIELD_MAX], key[APIKEY_MAX];
	json_object	*cus = wh_object(ev->data, "customer");
	struct mk_err	 err;
	int		 sub = strcmp(ev->type, "subscription.active") == 0, rc;

	wh_text(cus, "customer_id", customer, sizeof customer);
	wh_text(cus, "email", email, sizeof email);
	wh_text(cus, "name", name, sizeof name);
	wh_text(ev->data, sub ? "subscription_id" : "payment_id", id, sizeof id);
	wh_text(ev->data, "status", status, sizeof status);
	log_info("[purchase] %s: %s %s (status %s)", customer, ev->type, id, status);
	if (sub && valid_customer_id(customer))
		customer_plan_forget(customer);	/* a new plan: its overage room */
	/* the payload is the latest state: a delayed event may be stale */
	if (!valid_customer_id(customer) ||
	    strcmp(status, sub ? "active" : "succeeded") != 0)
		return WH_DONE;
	/* any key, revoked ones too: a key an operator revoked is not re-issued
	 * by the next renewal (mailkit-admin keys issue|rotate does that) */
	if ((rc = store_key_active(&settings, customer, 1, &err)) == -1)
		return WH_RETRY;
	if (rc == 1)
		return WH_DONE;
	if (!valid_email(email)) {
		struct dodo_customer c;

		if (dodo_get_customer(&settings, customer, &c, &err) == -1)
			return err.status >= 500 ? WH_RETRY : WH_DONE;
		snprintf(email, sizeof email, "%s", c.email);
		snprintf(name, sizeof name, "%s", c.name);
	}
	if ((rc = store_claim_pending(&settings, email, &err)) == -1)
		return WH_RETRY;
	if (rc == 1) {
		log_info("[keys] %s: the buyer's page holds a claim: the key is handed over "
		    "at the checkout return", customer);
		return WH_DONE;
	}
	rc = auth_issue_key(&settings, mailer, customer, email, name, "webhook",
	    AUTH_ISSUE_MAIL, key, sizeof key, &err);
	OPENSSL_cleanse(key, sizeof key);
	if (rc == -1)
		return err.maybe_done || err.status != 400 ? WH_RETRY : WH_DONE;
	return WH_DONE;
}

/*
 * log_only: events handled per delivery without a webhook-id claim: those
 * MailKit only logs (a deduction per email sent: a claim would cost more
 * than the event), and those whose handling is idempotent by itself (a
 * meter deduction clears usage once per ledger entry id, whoever sees it
 * first: this webhook, a redelivery, or the outbox's ledger poll).
 * Subscription changes drop the customer's cached plan in this process
 * (other processes' caches lapse within CUSTOMER_PLAN_CACHE_MS).  The other
 * credit.* events are handled once per webhook-id.
 */
static const struct {
	const char	*type;
	enum wh_outcome	(*handle)(const struct wh_event *);
	int		 log_only;
} wh_handlers[] = {
	{ "credit.balance_low",		wh_balance_low,		0 },
	{ "credit.added",		wh_credit_added,	0 },
	{ "credit.deducted",		wh_deducted,		1 },
	{ "credit.overage_charged",	wh_deducted,		1 },
	{ "credit.expired",		wh_ledger_logged,	0 },
	{ "credit.rolled_over",		wh_ledger_logged,	0 },
	{ "credit.rollover_forfeited",	wh_ledger_logged,	0 },
	{ "credit.overage_reset",	wh_ledger_logged,	0 },
	{ "subscription.active",	wh_purchase,		0 },
	{ "subscription.renewed",	wh_subscription,	1 },
	{ "subscription.plan_changed",	wh_subscription,	1 },
	{ "subscription.on_hold",	wh_subscription,	1 },
	{ "subscription.cancelled",	wh_subscription,	1 },
	{ "subscription.expired",	wh_subscription,	1 },
	{ "subscription.failed",	wh_subscription,	1 },
	{ "payment.succeeded",		wh_purchase,		0 },
};

/* POST /webhooks/dodo */
static void
webhook_dodo(const struct request *req, struct response *resp)
{
	char		 why[128];
	struct wh_event	 ev;
	struct mk_err	 err;
	json_object	*root = NULL;
	char		 stamp[WH_FIELD_MAX];
	enum wh_outcome	 outcome = WH_DONE;
	size_t		 i;
	int		 claim, known;

	/* The signature covers the body exactly as received: verify before parsing. */
	if (whsig_verify(&webhook_key, req->webhook_id, req->webhook_timestamp,
	    req->webhook_signature, req->body, req->body_len, time(NULL), why,
	    sizeof why) == -1) {
		log_warn("rejected delivery from %s: %s", req->remote_addr, why);
		response_error(resp, 401, "invalid signature");
		return;
	}
	if ((root = request_json(req, &err)) == NULL) {
		log_warn("signed delivery %s: %s", req->webhook_id, err.msg);
		response_fail(resp, &err);
		return;
	}
	memset(&ev, 0, sizeof ev);
	ev.id = req->webhook_id;
	wh_text(root, "type", ev.type, sizeof ev.type);
	wh_text(root, "timestamp", stamp, sizeof stamp);
	ev.at = wh_iso_time(stamp);
	ev.data = wh_object(root, "data");
	if (ev.type[0] == '\0') {
		log_warn("signed delivery %s has no event type", ev.id);
		response_error(resp, 400, "event type missing");
		goto out;
	}

	for (i = 0; i < sizeof wh_handlers / sizeof wh_handlers[0]; i++)
		if (strcmp(wh_handlers[i].type, ev.type) == 0)
			break;
	known = i < sizeof wh_handlers / sizeof wh_handlers[0];

	/*
	 * Events MailKit acts on are handled at most once per webhook-id: Dodo
	 * retries, and may overlap a slow attempt.  Events it only logs (the
	 * ledger's, one for every email sent) are logged per delivery with
	 * their webhook-id: a database write to spare a redelivery's second
	 * log line would cost more than the whole event.
	 */
	if (!known || wh_handlers[i].log_only) {
		if (known && wh_handlers[i].handle(&ev) == WH_RETRY) {
			response_error(resp, 502, "event not handled yet; retry later");
			goto out;
		}
		if (!known)
			log_info("%s %s: not an event MailKit acts on, acknowledged", ev.type,
			    ev.id);
		goto received;
	}
	claim = store_webhook_claim(&settings, ev.id, ev.type, &err);
	if (claim == -1) {
		response_fail(resp, &err);
		goto out;
	}
	if (claim == STORE_CLAIM_SEEN) {
		log_info("%s %s: already handled", ev.type, ev.id);
		goto received;
	}
	if (claim == STORE_CLAIM_BUSY) {
		log_info("%s %s: being handled by another worker", ev.type, ev.id);
		response_error(resp, 409, "event is being processed; retry later");
		goto out;
	}

	outcome = wh_handlers[i].handle(&ev);
	if (outcome == WH_RETRY) {
		if (store_webhook_release(&settings, ev.id, &err) == -1)
			log_error("%s %s: cannot release the claim (%s); the retry waits for "
			    "its lease to expire", ev.type, ev.id, err.msg);
		response_error(resp, 502, "event not handled yet; retry later");
		goto out;
	}
	if (store_webhook_done(&settings, ev.id, &err) == -1)
		log_error("%s %s: handled, but not recorded as done: %s", ev.type, ev.id,
		    err.msg);
 received:
	{
		json_object *ok = json_object_new_object();

		json_object_object_add(ok, "received", json_object_new_boolean(1));
		response_json(resp, 200, ok);
	}
 out:
	json_object_put(root);
}

static const struct route routes[] = {
	{ "POST", "/webhooks/dodo", webhook_dodo },
};

/* Decode the signing key once, find the mail provider, open the store. */
static int
webhook_init(const struct settings *s, char *err, size_t errlen)
{
	if (s->webhook_key == NULL || *s->webhook_key == '\0') {
		snprintf(err, errlen, "DODO_WEBHOOK_KEY is not set: refusing to accept "
		    "unsigned webhooks");
		return -1;
	}
	if (whsig_key_from_secret(s->webhook_key, &webhook_key) == -1) {
		snprintf(err, errlen, "DODO_WEBHOOK_KEY must be a Standard Webhooks secret "
		    "(whsec_ followed by base64)");
		return -1;
	}
	if ((mailer = mail_provider_find(s->mail_provider)) == NULL) {
		snprintf(err, errlen, "MAIL_PROVIDER names no known provider");
		return -1;
	}
	return store_check(s, err, errlen);
}

int
main(void)
{
	struct app app = {
		.name = "webhook.fcgi",
		.routes = routes,
		.nroutes = sizeof routes / sizeof routes[0],
		.json_only = 0,		/* Dodo sends application/json; be lenient */
		.init = webhook_init,
	};

	return server_main(&app, &settings, SETTINGS_NEED_WEBHOOK | SETTINGS_NEED_DODO |
	    SETTINGS_NEED_MAIL);
}
