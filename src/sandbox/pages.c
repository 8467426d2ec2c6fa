/* pages.c: the sandbox's HTML: dashboard with balance adjustments, hosted checkout, outbox. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "db.h"
#include "log.h"
#include "sandbox.h"
#include "url.h"
#include "valid.h"

#define PAGES_CUSTOMERS_MAX	200	/* rows on the dashboard */
#define PAGES_WEBHOOKS_MAX	30	/* recent deliveries on the dashboard */
#define PAGES_OUTBOX_MAX	100	/* emails on the outbox page */
#define PAGES_NOTICE_MAX	256	/* ?notice= text shown after an adjustment */
#define PAGES_FORM_VALUE_MAX	32	/* entry_type / amount form fields */

/*
 * Fits a 375 px phone: wide tables scroll inside their own box (the page
 * itself never scrolls sideways), long ids and addresses wrap.
 */
static const char pages_style[] =
	"*{box-sizing:border-box}"
	"body{font:15px/1.45 system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}"
	"header{background:#1d2330;color:#fff;padding:10px 16px;display:flex;flex-wrap:wrap;"
	"gap:8px 20px;align-items:center}header a{color:#cfd6e4;text-decoration:none}"
	"header b{margin-right:auto}main{max-width:1100px;margin:16px auto;padding:0 12px}"
	"table{border-collapse:collapse;width:100%;background:#fff;margin:8px 0 24px;"
	"display:block;overflow-x:auto;max-width:100%}"
	"p,td,code{overflow-wrap:anywhere}pre{white-space:pre-wrap;overflow-wrap:anywhere}"
	"th,td{border-bottom:1px solid #e3e6eb;padding:6px 8px;text-align:left;"
	"vertical-align:top}th{background:#eef0f4;font-weight:600}"
	".card{background:#fff;border:1px solid #e3e6eb;border-radius:8px;padding:20px;"
	"max-width:460px;margin:24px auto}.price{font-size:28px;font-weight:700}"
	"label{display:block;margin:10px 0 2px;color:#555}input,select{font:inherit;"
	"padding:6px;border:1px solid #c8cdd6;border-radius:4px}.card input{width:100%;"
	"box-sizing:border-box}button{font:inherit;padding:8px 16px;border:0;"
	"border-radius:4px;background:#2456e8;color:#fff;cursor:pointer}"
	".card button{width:100%;margin-top:18px;padding:12px}"
	".notice{background:#fff6d6;border:1px solid #eed98b;padding:8px 12px;"
	"border-radius:4px}.muted{color:#6b7385;font-size:13px}code{font-size:13px}"
	"iframe{width:100%;height:220px;border:1px solid #e3e6eb;background:#fff}"
	".s-succeeded,.s-delivered{color:#137a2f}.s-failed,.s-bounced,.s-complained"
	"{color:#b3261e}.s-recorded{color:#6b7385}";

static void
pages_begin(struct buf *b, const char *title)
{
	buf_puts(b, "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
	    "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
	    /* no icon: a browser would ask for /favicon.ico and log a 404 */
	    "<link rel=\"icon\" href=\"data:,\"><title>");
	buf_html(b, title);
	buf_puts(b, "</title><style>");
	buf_puts(b, pages_style);
	buf_puts(b, "</style></head><body><header><b>Sandbox: Dodo Payments + ");
	buf_puts(b, sandbox.neuralapi ? "OpenAI" : "Resend");
	buf_puts(b, "</b><a href=\"" SANDBOX_MOUNT "/\">Dashboard</a>"
	    "<a href=\"" SANDBOX_MOUNT "/outbox\">Outbox</a><a href=\"/\">");
	buf_html(b, sandbox.product_name);
	buf_puts(b, "</a></header><main>\n");
}

static void
pages_end(struct buf *b, struct response *resp, int status)
{
	if (buf_puts(b, "</main></body></html>\n") == -1 || b->data == NULL) {
		buf_free(b);
		response_error(resp, 500, "page too large");
		return;
	}
	response_body(resp, status, "text/html; charset=utf-8", b->data, b->len);
	buf_free(b);
}

/* A whole page with one message (errors of the hosted checkout, mostly). */
static void
pages_message(struct response *resp, int status, const char *title, const char *code,
    const char *text)
{
	struct buf	b;

	buf_init(&b, RESPONSE_MAX);
	pages_begin(&b, title);
	buf_puts(&b, "<div class=\"card\"><h2>");
	buf_html(&b, title);
	buf_puts(&b, "</h2><p>");
	buf_html(&b, text);
	buf_puts(&b, "</p>");
	if (code != NULL) {
		buf_puts(&b, "<p class=\"muted\">code <code id=\"error-code\">");
		buf_html(&b, code);
		buf_puts(&b, "</code></p>");
	}
	buf_puts(&b, "</div>");
	pages_end(&b, resp, status);
}

static void
pages_time(struct buf *b, sqlite3_stmt *st, int col)
{
	char	t[SANDBOX_TIME_MAX];

	state_iso(sqlite3_column_int64(st, col), t, sizeof(t));
	t[19] = '\0';	/* seconds are enough on a page */
	buf_html(b, t);
}

static void
pages_money(struct buf *b, int64_t cents)
{
	buf_printf(b, "$%lld.%02lld", (long long)(cents / 100), (long long)(cents % 100));
}

/* A count with thousands separators: 10,000,000. */
static void
pages_count(struct buf *b, int64_t n)
{
	char	digits[SANDBOX_AMOUNT_MAX];
	size_t	len, i;

	if (n < 0) {
		buf_puts(b, "-");
		n = -n;
	}
	snprintf(digits, sizeof(digits), "%lld", (long long)n);
	len = strlen(digits);
	for (i = 0; i < len; i++) {
		if (i > 0 && (len - i) % 3 == 0)
			buf_puts(b, ",");
		buf_printf(b, "%c", digits[i]);
	}
}

/* The hidden form field with the token of the page that fmt names (guard.c). */
static void
pages_token_input(struct buf *b, const char *fmt, const char *id)
	__attribute__((format(printf, 2, 0)));

static void
pages_token_input(struct buf *b, const char *fmt, const char *id)
{
	char	page[SANDBOX_URL_MAX], token[GUARD_TOKEN_MAX];

	snprintf(page, sizeof(page), fmt, id);
	guard_token(page, token);
	buf_puts(b, "<input type=\"hidden\" name=\"" GUARD_TOKEN_FIELD "\" value=\"");
	buf_html(b, token);
	buf_puts(b, "\">");
}

/* guard_change() for the page that fmt names with id.  0 / -1 with resp filled. */
static int
pages_guard(const struct request *req, struct response *resp, const char *fmt, const char *id)
	__attribute__((format(printf, 3, 0)));

static int
pages_guard(const struct request *req, struct response *resp, const char *fmt, const char *id)
{
	char	page[SANDBOX_URL_MAX];

	snprintf(page, sizeof(page), fmt, id);
	return guard_change(req, page, resp);
}

/* A field of a form body, or a string member of a JSON one.  0 / -1. */
static int
pages_form_value(const struct request *req, const char *name, char *out, size_t len)
{
	struct mk_err	 err;
	json_object	*root, *v;
	int		 rc = -1;

	if (strncmp(req->content_type, "application/json", 16) != 0)
		return url_query_get(req->body, name, out, len);
	if ((root = request_json(req, &err)) == NULL)
		return -1;
	if (json_object_object_get_ex(root, name, &v) &&
	    json_object_is_type(v, json_type_string) &&
	    (size_t)json_object_get_string_len(v) < len) {
		memcpy(out, json_object_get_string(v), (size_t)json_object_get_string_len(v) + 1);
		rc = 0;
	}
	json_object_put(root);
	return rc;
}

/* An email body as HTML text, with the API keys in it masked (guard.c). */
static void
pages_masked(struct buf *b, const char *text)
{
	char	*copy = strdup(text);

	if (copy == NULL) {
		buf_puts(b, "(out of memory)");
		return;
	}
	guard_mask_keys(copy);
	buf_html(b, copy);
	free(copy);
}

/* ------------------------------------------------------------ dashboard */

/* What the sandbox sells: each plan and the top-up, with its unit. */
static void
pages_catalogue(struct buf *b)
{
	char	title[SANDBOX_TITLE_MAX];
	size_t	i;

	buf_puts(b, "<h1>Catalogue</h1><p class=\"muted\">Credit entitlement <code>");
	buf_html(b, sandbox.entitlement_id);
	buf_puts(b, "</code> (");
	buf_html(b, sandbox.entitlement_name);
	buf_printf(b, ", one credit per %s); low-balance alert below %ld%% of the plan's "
	    "credits; test clock ", sandbox.neuralapi ? "token" : "email", sandbox.low_percent);
	if (state_clock_offset_ms() == 0)
		buf_puts(b, "at the wall clock");
	else
		buf_printf(b, "%lld days ahead", (long long)(state_clock_offset_ms() / DAY_MS));
	buf_puts(b, ".</p><table id=\"catalogue\"><tr><th>Product</th><th>Id</th><th>Price</th>"
	    "<th>Credits</th><th>Overage</th></tr>\n");
	for (i = 0; i <= sandbox.nplans; i++) {
		const struct sandbox_plan *p = i < sandbox.nplans ? &sandbox.plans[i] : NULL;

		state_product_title(p, title, sizeof(title));
		buf_puts(b, "<tr class=\"product\"><td>");
		buf_html(b, title);
		buf_puts(b, "</td><td><code>");
		buf_html(b, p != NULL ? p->product_id : sandbox.topup_product_id);
		buf_puts(b, "</code></td><td>");
		pages_money(b, p != NULL ? p->price : sandbox.topup_price);
		buf_puts(b, p != NULL ? " / month</td><td class=\"credits\">" :
		    " one time</td><td class=\"credits\">");
		pages_count(b, p != NULL ? p->credits : sandbox.topup_credits);
		buf_printf(b, " %s", sandbox.unit);
		if (p != NULL)
			buf_puts(b, " every month");
		else if (sandbox.topup_expiry_days > 0)
			buf_printf(b, ", valid %ld days", sandbox.topup_expiry_days);
		buf_puts(b, "</td><td>");
		if (p == NULL)
			buf_puts(b, "&mdash;");
		else if (p->overage_limit == 0)
			buf_puts(b, "blocked at zero");
		else {
			buf_puts(b, "up to ");
			pages_count(b, p->overage_limit);
			buf_printf(b, " %s", sandbox.unit);
		}
		buf_puts(b, "</td></tr>\n");
	}
	buf_puts(b, "</table>");
}

/* GET / */
void
pages_dashboard(const struct request *req, struct response *resp)
{
	sqlite3		*db = state_db();
	sqlite3_stmt	*st;
	struct buf	 b;
	const struct sandbox_plan *plan;
	char		 notice[PAGES_NOTICE_MAX], id[SANDBOX_ID_MAX], title[SANDBOX_TITLE_MAX];
	int		 rows = 0;
	int64_t		 now;

	if (db == NULL) {
		pages_message(resp, 500, "Sandbox unavailable", NULL, "The database cannot be opened.");
		return;
	}
	buf_init(&b, RESPONSE_MAX);
	pages_begin(&b, "Sandbox dashboard");
	if (url_query_get(req->query, "notice", notice, sizeof(notice)) == 0) {
		buf_puts(&b, "<p class=\"notice\" id=\"notice\">");
		buf_html(&b, notice);
		buf_puts(&b, "</p>");
	}
	pages_catalogue(&b);
	buf_puts(&b, "<h1>Customers</h1><table id=\"customers\"><tr><th>Customer</th>"
	    "<th>Email</th><th>Name</th><th>");
	buf_html(&b, sandbox.entitlement_name);
	buf_puts(&b, "</th><th>Overage</th><th>Plan</th><th>Adjust balance</th></tr>\n");
	st = state_prepare(db, "SELECT c.id, c.email, c.name, (SELECT status FROM subscriptions s"
	    " WHERE s.customer_id = c.id ORDER BY created_at DESC LIMIT 1)"
	    " FROM customers c ORDER BY c.created_at DESC LIMIT ?1");
	now = state_clock_ms();
	if (st != NULL) {
		sqlite3_bind_int(st, 1, PAGES_CUSTOMERS_MAX);
		while (sqlite3_step(st) == SQLITE_ROW) {
			snprintf(id, sizeof(id), "%s", state_text(st, 0));
			rows++;
			buf_puts(&b, "<tr data-customer=\"");
			buf_html(&b, id);
			buf_puts(&b, "\"><td><code>");
			buf_html(&b, id);
			buf_puts(&b, "</code></td><td>");
			buf_html(&b, state_text(st, 1));
			buf_puts(&b, "</td><td>");
			buf_html(&b, state_text(st, 2));
			buf_puts(&b, "</td><td class=\"balance\">");
			pages_count(&b, ledger_balance(db, id, now));
			buf_printf(&b, " %s</td><td class=\"overage\">", sandbox.unit);
			pages_count(&b, ledger_overage(db, id));
			plan = ledger_customer_plan(db, id);
			if (plan != NULL && plan->overage_limit > 0) {
				buf_puts(&b, " of ");
				pages_count(&b, plan->overage_limit);
			}
			buf_puts(&b, "</td><td class=\"plan\">");
			state_product_title(plan, title, sizeof(title));
			buf_html(&b, plan != NULL ? title : sqlite3_column_type(st, 3) ==
			    SQLITE_NULL ? "none" : state_text(st, 3));
			buf_puts(&b, "</td><td><form method=\"post\" action=\"" SANDBOX_MOUNT
			    "/customers/");
			buf_html(&b, id);
			buf_puts(&b, "/adjust\">");
			pages_token_input(&b, "/customers/%s/adjust", id);
			buf_puts(&b, "<select name=\"entry_type\" aria-label=\"Entry type\">"
			    "<option value=\"debit\">Debit</option>"
			    "<option value=\"credit\">Credit</option></select> "
			    "<input name=\"amount\" type=\"number\" min=\"1\" step=\"1\" "
			    "required aria-label=\"Amount\" style=\"width:7em\"> "
			    "<button type=\"submit\">Adjust balance</button></form></td></tr>\n");
		}
		state_done(st);
	}
	if (rows == 0) {
		buf_puts(&b, "<tr><td colspan=\"7\" class=\"muted\">No customers yet: complete a "
		    "checkout from ");
		buf_html(&b, sandbox.product_name);
		buf_puts(&b, " first.</td></tr>");
	}
	buf_puts(&b, "</table>");

	buf_puts(&b, "<h2>Recent webhooks</h2><p class=\"muted\">Delivered to <code>");
	buf_html(&b, sandbox.webhook_url[0] != '\0' ? sandbox.webhook_url :
	    "(SANDBOX_WEBHOOK_URL not set: recorded only)");
	buf_puts(&b, "</code></p><table id=\"webhooks\"><tr><th>Time</th><th>Event</th>"
	    "<th>Id</th><th>Status</th><th>Attempts</th><th>Last answer</th></tr>\n");
	st = state_prepare(db, "SELECT created_at, type, id, status, attempts, last_status,"
	    " last_error FROM deliveries ORDER BY seq DESC LIMIT ?1");
	if (st != NULL) {
		sqlite3_bind_int(st, 1, PAGES_WEBHOOKS_MAX);
		while (sqlite3_step(st) == SQLITE_ROW) {
			buf_puts(&b, "<tr><td>");
			pages_time(&b, st, 0);
			buf_puts(&b, "</td><td>");
			buf_html(&b, state_text(st, 1));
			buf_puts(&b, "</td><td><code>");
			buf_html(&b, state_text(st, 2));
			buf_puts(&b, "</code></td><td class=\"s-");
			buf_html(&b, state_text(st, 3));
			buf_puts(&b, "\">");
			buf_html(&b, state_text(st, 3));
			buf_printf(&b, "</td><td>%d</td><td>", sqlite3_column_int(st, 4));
			if (sqlite3_column_type(st, 5) != SQLITE_NULL)
				buf_printf(&b, "HTTP %d ", sqlite3_column_int(st, 5));
			buf_html(&b, state_text(st, 6));
			buf_puts(&b, "</td></tr>\n");
		}
		state_done(st);
	}
	buf_puts(&b, "</table>");
	pages_end(&b, resp, 200);
}

/* POST /customers/{id}/adjust (form: entry_type=debit|credit, amount=N) -> 303 back. */
void
pages_adjust(const struct request *req, struct response *resp)
{
	struct ledger_request	 in;
	struct buf		 loc;
	char			 type[PAGES_FORM_VALUE_MAX], amount[PAGES_FORM_VALUE_MAX];
	char			 entry[SANDBOX_ID_MAX], notice[PAGES_NOTICE_MAX], *end;
	long long		 n = 0;

	memset(&in, 0, sizeof(in));
	if (pages_guard(req, resp, "/customers/%s/adjust", req->params[0]) == -1)
		return;
	if (pages_form_value(req, "entry_type", type, sizeof(type)) == -1 ||
	    (strcmp(type, "debit") != 0 && strcmp(type, "credit") != 0)) {
		pages_message(resp, 400, "Bad adjustment", NULL,
		    "entry_type must be debit or credit.");
		return;
	}
	if (pages_form_value(req, "amount", amount, sizeof(amount)) == -1 ||
	    amount[0] < '0' || amount[0] > '9' || (n = strtoll(amount, &end, 10)) <= 0 ||
	    *end != '\0' || n >= SANDBOX_AMOUNT_LIMIT) {
		pages_message(resp, 400, "Bad adjustment", NULL,
		    "amount must be a positive whole number of credits.");
		return;
	}
	in.customer_id = req->params[0];
	in.is_credit = strcmp(type, "credit") == 0;
	in.amount = n;
	in.reason = "Manual adjustment from the sandbox dashboard";
	in.description = in.reason;
	in.source_type = "api";
	switch (ledger_post(&in, entry, sizeof(entry))) {
	case LEDGER_APPLIED:
		snprintf(notice, sizeof(notice), "%s of %lld credits applied to %s.",
		    in.is_credit ? "Credit" : "Debit", n, in.customer_id);
		break;
	case LEDGER_INSUFFICIENT:
		snprintf(notice, sizeof(notice), "Debit of %lld refused: %s has fewer credits.",
		    n, in.customer_id);
		break;
	case LEDGER_OVERAGE_EXCEEDED:
		snprintf(notice, sizeof(notice), "Debit of %lld refused: it would take %s past "
		    "the plan's overage limit.", n, in.customer_id);
		break;
	case LEDGER_NO_CUSTOMER:
		pages_message(resp, 404, "Unknown customer", "NOT_FOUND", "No such customer.");
		return;
	default:
		pages_message(resp, 500, "Adjustment failed", "INTERNAL_SERVER_ERROR",
		    "The ledger could not be written.");
		return;
	}
	buf_init(&loc, SANDBOX_URL_MAX);
	if (buf_puts(&loc, SANDBOX_MOUNT "/?notice=") == -1 ||
	    url_encode_component(&loc, notice) == -1)
		response_redirect(resp, SANDBOX_MOUNT "/");
	else
		response_redirect(resp, loc.data);
	buf_free(&loc);
}

/* ------------------------------------------------------------ hosted checkout */

struct pages_session {
	char	 id[SANDBOX_ID_MAX];
	char	 product_id[SANDBOX_ID_MAX * 2];
	int64_t	 quantity;
	char	 customer_id[SANDBOX_ID_MAX * 2];
	char	 email[EMAIL_MAX + 1];
	char	 name[SANDBOX_NAME_MAX + 1];
	char	 return_url[SANDBOX_URL_MAX + 1];
	char	*metadata;	/* owned */
	int64_t	 created_at;
	int	 completed;
};

/* Load a session (customer details resolved).  1 found, 0 not, -1 error. */
static int
pages_session_load(sqlite3 *db, const char *id, struct pages_session *s)
{
	sqlite3_stmt	*st;
	int		 found;

	memset(s, 0, sizeof(*s));
	st = state_prepare(db, "SELECT s.id, s.product_id, s.quantity, s.customer_id,"
	    " COALESCE(c.email, s.email), COALESCE(c.name, s.name), s.return_url, s.metadata,"
	    " s.created_at, s.completed_at IS NOT NULL FROM sessions s"
	    " LEFT JOIN customers c ON c.id = s.customer_id WHERE s.id = ?1");
	if (st == NULL)
		return -1;
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	if ((found = sqlite3_step(st) == SQLITE_ROW)) {
		snprintf(s->id, sizeof(s->id), "%s", state_text(st, 0));
		snprintf(s->product_id, sizeof(s->product_id), "%s", state_text(st, 1));
		s->quantity = sqlite3_column_int64(st, 2);
		snprintf(s->customer_id, sizeof(s->customer_id), "%s", state_text(st, 3));
		snprintf(s->email, sizeof(s->email), "%s", state_text(st, 4));
		snprintf(s->name, sizeof(s->name), "%s", state_text(st, 5));
		snprintf(s->return_url, sizeof(s->return_url), "%s", state_text(st, 6));
		s->metadata = strdup(sqlite3_column_type(st, 7) == SQLITE_NULL ? "{}" :
		    state_text(st, 7));
		s->created_at = sqlite3_column_int64(st, 8);
		s->completed = sqlite3_column_int(st, 9);
	}
	state_done(st);
	if (found && s->metadata == NULL)
		return -1;
	return found;
}

static void
pages_session_free(struct pages_session *s)
{
	free(s->metadata);
	s->metadata = NULL;
}

/* An unusable session as a page: 1 if one was written. */
static int
pages_session_refused(struct response *resp, int found, const struct pages_session *s)
{
	if (found == -1) {
		pages_message(resp, 500, "Checkout unavailable", "INTERNAL_SERVER_ERROR",
		    "The sandbox database failed.");
		return 1;
	}
	if (found == 0) {
		pages_message(resp, 404, "Checkout not found", "NOT_FOUND",
		    "This checkout session does not exist.");
		return 1;
	}
	if (s->completed) {
		pages_message(resp, 410, "Checkout already completed", "CHECKOUT_SESSION_CONSUMED",
		    "This checkout session has already been paid. Start a new checkout.");
		return 1;
	}
	if (state_now_ms() - s->created_at > SANDBOX_SESSION_TTL_MS) {
		pages_message(resp, 410, "Checkout expired", "CHECKOUT_SESSION_EXPIRED",
		    "Checkout sessions are valid for 24 hours. Start a new checkout.");
		return 1;
	}
	return 0;
}

/* GET /checkout/{id}: the hosted page with the test card prefilled. */
void
pages_checkout(const struct request *req, struct response *resp)
{
	const struct sandbox_plan *plan;
	struct pages_session	 s;
	struct buf		 b;
	sqlite3			*db = state_db();
	char			 title[SANDBOX_TITLE_MAX];
	int			 found;
	int64_t			 cents;

	found = db != NULL ? pages_session_load(db, req->params[0], &s) : -1;
	if (pages_session_refused(resp, found, &s)) {
		pages_session_free(&s);
		return;
	}
	plan = state_plan_of(s.product_id);
	cents = (plan != NULL ? plan->price : sandbox.topup_price) * s.quantity;
	state_product_title(plan, title, sizeof(title));
	buf_init(&b, RESPONSE_MAX);
	pages_begin(&b, "Checkout");
	buf_puts(&b, "<div class=\"card\"><p class=\"muted\">Sandbox checkout &middot; test mode"
	    "</p><h2 id=\"product\">");
	buf_html(&b, title);
	if (s.quantity > 1)
		buf_printf(&b, " &times; %lld", (long long)s.quantity);
	buf_puts(&b, "</h2><p class=\"muted\" id=\"credits\">");
	pages_count(&b, (plan != NULL ? plan->credits : sandbox.topup_credits) * s.quantity);
	buf_printf(&b, " %s", sandbox.unit);
	if (plan != NULL)
		buf_puts(&b, " every month");
	else if (sandbox.topup_expiry_days > 0)
		buf_printf(&b, ", one time, valid %ld days", sandbox.topup_expiry_days);
	else
		buf_puts(&b, ", one time");
	if (plan != NULL && plan->overage_limit > 0) {
		buf_puts(&b, "; overage up to ");
		pages_count(&b, plan->overage_limit);
	} else if (plan != NULL)
		buf_puts(&b, "; blocked at zero");
	buf_puts(&b, "</p><p class=\"price\" id=\"price\">");
	pages_money(&b, cents);
	if (plan != NULL)
		buf_puts(&b, " / month");
	buf_puts(&b, "</p><form method=\"post\" action=\"" SANDBOX_MOUNT "/checkout/");
	buf_html(&b, s.id);
	buf_puts(&b, "\">");
	pages_token_input(&b, "/checkout/%s", s.id);
	buf_puts(&b, "<label for=\"email\">Email</label><input id=\"email\" value=\"");
	buf_html(&b, s.email);
	buf_puts(&b, "\" readonly><label for=\"card\">Card number</label>"
	    "<input id=\"card\" name=\"card\" value=\"4242 4242 4242 4242\" "
	    "autocomplete=\"off\"><label for=\"exp\">Expiry</label>"
	    "<input id=\"exp\" name=\"exp\" value=\"12 / 34\"><label for=\"cvc\">CVC</label>"
	    "<input id=\"cvc\" name=\"cvc\" value=\"123\"><label for=\"cardholder\">Name on card"
	    "</label><input id=\"cardholder\" name=\"cardholder\" value=\"");
	buf_html(&b, s.name);
	buf_puts(&b, "\"><button id=\"pay\" type=\"submit\">Pay ");
	pages_money(&b, cents);
	buf_puts(&b, "</button></form><p class=\"muted\">No money moves: this is the offline "
	    "sandbox. Paying issues the credits and sends the webhooks.</p></div>");
	pages_end(&b, resp, 200);
	pages_session_free(&s);
}

/* The customer of a session: the given id, the one with this email, or a new one. */
static int
pages_checkout_customer(sqlite3 *db, struct pages_session *s, int64_t now)
{
	sqlite3_stmt	*st;
	char		 now_text[24];

	if (s->customer_id[0] != '\0')
		return 0;
	st = state_prepare(db, "SELECT id FROM customers WHERE lower(email) = lower(?1)"
	    " ORDER BY created_at LIMIT 1");
	if (st == NULL)
		return -1;
	sqlite3_bind_text(st, 1, s->email, -1, SQLITE_STATIC);
	if (sqlite3_step(st) == SQLITE_ROW)
		snprintf(s->customer_id, sizeof(s->customer_id), "%s", state_text(st, 0));
	state_done(st);
	if (s->customer_id[0] != '\0')
		return 0;
	state_id("cus_", s->customer_id, sizeof(s->customer_id));
	snprintf(now_text, sizeof(now_text), "%lld", (long long)now);
	return state_exec(db, "INSERT INTO customers (id, email, name, created_at)"
	    " VALUES (?1, ?2, ?3, CAST(?4 AS INTEGER))", 4, s->customer_id, s->email, s->name,
	    now_text);
}

/* Add payload_type to a shape and enqueue it.  0 / -1. */
static int
pages_event(sqlite3 *db, const char *type, json_object *data, const char *payload_type)
{
	if (data == NULL)
		return -1;
	json_object_object_add(data, "payload_type", json_object_new_string(payload_type));
	return deliver_enqueue(db, type, data);
}

/*
 * Everything a completed payment causes, in the caller's transaction:
 * customer, payment, subscription (plan), credit grant, the session marked
 * consumed, and the webhooks in the order Dodo sends them.  0 / -1.
 */
static int
pages_checkout_complete(sqlite3 *db, struct pages_session *s, char *purchase_id, size_t len)
{
	const struct sandbox_plan *p = state_plan_of(s->product_id);
	struct ledger_request	 in;
	sqlite3_stmt		*st;
	char			 pay[SANDBOX_ID_MAX], sub[SANDBOX_ID_MAX] = "", entry[SANDBOX_ID_MAX];
	char			 now_text[24], title[SANDBOX_TITLE_MAX], desc[SANDBOX_TITLE_MAX + 16];
	int64_t			 now = state_clock_ms(), price;
	long			 days;
	int			 plan = p != NULL, rc;

	if (pages_checkout_customer(db, s, now) == -1)
		return -1;
	state_id("pay_", pay, sizeof(pay));
	if (plan) {
		state_id("sub_", sub, sizeof(sub));
		st = state_prepare(db, "INSERT INTO subscriptions (id, customer_id, product_id,"
		    " quantity, status, price, metadata, created_at, next_billing_at)"
		    " VALUES (?1, ?2, ?3, ?4, 'active', ?5, ?6, ?7, ?8)");
		if (st == NULL)
			return -1;
		sqlite3_bind_text(st, 1, sub, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, s->customer_id, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 3, s->product_id, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 4, s->quantity);
		sqlite3_bind_int64(st, 5, p->price * s->quantity);
		sqlite3_bind_text(st, 6, s->metadata, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 7, now);
		sqlite3_bind_int64(st, 8, now + SANDBOX_CYCLE_MS);
		rc = sqlite3_step(st);
		state_done(st);
		if (rc != SQLITE_DONE)
			return -1;
	}
	st = state_prepare(db, "INSERT INTO payments (id, customer_id, session_id, product_id,"
	    " quantity, subscription_id, total_amount, status, metadata, created_at)"
	    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'succeeded', ?8, ?9)");
	if (st == NULL)
		return -1;
	sqlite3_bind_text(st, 1, pay, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, s->customer_id, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, s->id, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 4, s->product_id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 5, s->quantity);
	if (plan)
		sqlite3_bind_text(st, 6, sub, -1, SQLITE_STATIC);
	price = plan ? p->price : sandbox.topup_price;
	sqlite3_bind_int64(st, 7, price * s->quantity);
	sqlite3_bind_text(st, 8, s->metadata, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 9, now);
	rc = sqlite3_step(st);
	state_done(st);
	if (rc != SQLITE_DONE)
		return -1;
	snprintf(now_text, sizeof(now_text), "%lld", (long long)now);
	if (state_exec(db, "UPDATE sessions SET completed_at = CAST(?2 AS INTEGER),"
	    " payment_id = ?3, subscription_id = ?4, customer_id = ?5 WHERE id = ?1", 5, s->id,
	    now_text, pay, plan ? sub : NULL, s->customer_id) == -1)
		return -1;
	if (pages_event(db, "payment.succeeded", dodo_api_payment_json(db, pay), "Payment") == -1)
		return -1;
	if (plan && pages_event(db, "subscription.active", dodo_api_subscription_json(db, sub),
	    "Subscription") == -1)
		return -1;

	memset(&in, 0, sizeof(in));
	in.customer_id = s->customer_id;
	in.is_credit = 1;
	in.amount = (int64_t)(plan ? p->credits : sandbox.topup_credits) * s->quantity;
	in.metadata = s->metadata;
	days = plan ? sandbox.expiry_days : sandbox.topup_expiry_days;
	in.expires_at_ms = days > 0 ? now + days * DAY_MS : 0;
	in.at_ms = now;
	in.source_type = plan ? "subscription" : "one_time";
	in.source_id = plan ? sub : pay;
	in.reference_type = plan ? "subscription" : "payment";
	in.reference_id = in.source_id;
	state_product_title(p, title, sizeof(title));
	snprintf(desc, sizeof(desc), "%s credits", title);
	in.description = desc;
	if (ledger_apply(db, &in, entry, sizeof(entry)) != LEDGER_APPLIED)
		return -1;
	snprintf(purchase_id, len, "%s", plan ? sub : pay);
	return 0;
}

/* POST /checkout/{id}: pay, then 303 to return_url with Dodo's parameters. */
void
pages_checkout_pay(const struct request *req, struct response *resp)
{
	struct pages_session	 s;
	struct buf		 loc;
	sqlite3			*db = state_db();
	char			 purchase[SANDBOX_ID_MAX];
	int			 found, plan;

	if (pages_guard(req, resp, "/checkout/%s", req->params[0]) == -1)
		return;
	if (db == NULL || db_begin(db) == -1) {
		pages_message(resp, 500, "Checkout unavailable", "INTERNAL_SERVER_ERROR",
		    "The sandbox database failed.");
		return;
	}
	/* loaded inside the write transaction: two clicks cannot both pay */
	found = pages_session_load(db, req->params[0], &s);
	if (pages_session_refused(resp, found, &s)) {
		db_rollback(db);
		pages_session_free(&s);
		return;
	}
	plan = state_product_kind(s.product_id) == 1;
	if (pages_checkout_complete(db, &s, purchase, sizeof(purchase)) == -1) {
		db_rollback(db);
		log_error("sandbox: completing checkout %s failed", s.id);
		pages_message(resp, 500, "Payment failed", "INTERNAL_SERVER_ERROR",
		    "The sandbox could not record the payment.");
		pages_session_free(&s);
		return;
	}
	if (db_commit(db) == -1) {
		pages_message(resp, 500, "Payment failed", "INTERNAL_SERVER_ERROR",
		    "The sandbox could not record the payment.");
		pages_session_free(&s);
		return;
	}
	deliver_wake();
	log_info("sandbox: checkout %s paid by %s (%s)", s.id, s.customer_id, purchase);

	if (s.return_url[0] == '\0') {
		pages_message(resp, 200, "Payment complete", NULL,
		    "Thank you. You can close this page.");
		pages_session_free(&s);
		return;
	}
	/* Dodo appends its parameters; an existing query string is kept */
	buf_init(&loc, SANDBOX_URL_MAX * 2);
	buf_puts(&loc, s.return_url);
	buf_puts(&loc, strchr(s.return_url, '?') != NULL ? "&" : "?");
	buf_puts(&loc, plan ? "subscription_id=" : "payment_id=");
	url_encode_component(&loc, purchase);
	buf_puts(&loc, plan ? "&status=active" : "&status=succeeded");
	if (s.email[0] != '\0') {
		buf_puts(&loc, "&email=");
		url_encode_component(&loc, s.email);
	}
	if (loc.data == NULL)
		pages_message(resp, 500, "Redirect failed", NULL, "return_url is too long.");
	else
		response_redirect(resp, loc.data);
	buf_free(&loc);
	pages_session_free(&s);
}

/* ------------------------------------------------------------ outbox */

/* GET /outbox: what the Resend emulation accepted, newest first. */
void
pages_outbox(const struct request *req, struct response *resp)
{
	sqlite3		*db = state_db();
	sqlite3_stmt	*st;
	struct buf	 b;
	json_object	*to;
	size_t		 i, n;
	int		 rows = 0;

	(void)req;
	if (db == NULL) {
		pages_message(resp, 500, "Sandbox unavailable", NULL, "The database cannot be opened.");
		return;
	}
	buf_init(&b, RESPONSE_MAX);
	pages_begin(&b, "Outbox");
	buf_puts(&b, "<h1>Outbox</h1><p class=\"muted\">Emails accepted by the Resend emulation, "
	    "newest first. Nothing leaves this machine. <a href=\"" SANDBOX_MOUNT "/outbox\">"
	    "Refresh</a></p><table id=\"outbox\"><tr><th>Time</th><th>From</th><th>To</th>"
	    "<th>Subject</th><th>Status</th></tr>\n");
	st = state_prepare(db, "SELECT id, created_at, from_addr, to_json, subject, status, html,"
	    " text FROM emails ORDER BY seq DESC LIMIT ?1");
	if (st != NULL) {
		sqlite3_bind_int(st, 1, PAGES_OUTBOX_MAX);
		while (sqlite3_step(st) == SQLITE_ROW) {
			rows++;
			buf_puts(&b, "<tr class=\"email\" data-id=\"");
			buf_html(&b, state_text(st, 0));
			buf_puts(&b, "\"><td>");
			pages_time(&b, st, 1);
			buf_puts(&b, "</td><td>");
			buf_html(&b, state_text(st, 2));
			buf_puts(&b, "</td><td>");
			to = json_tokener_parse(state_text(st, 3));
			n = to != NULL && json_object_is_type(to, json_type_array) ?
			    json_object_array_length(to) : 0;
			for (i = 0; i < n; i++) {
				if (i > 0)
					buf_puts(&b, ", ");
				buf_html(&b, json_object_get_string(json_object_array_get_idx(to, i)));
			}
			json_object_put(to);
			buf_puts(&b, "</td><td class=\"subject\">");
			buf_html(&b, state_text(st, 4));
			buf_puts(&b, "</td><td class=\"status s-");
			buf_html(&b, state_text(st, 5));
			buf_puts(&b, "\">");
			buf_html(&b, state_text(st, 5));
			buf_puts(&b, "</td></tr>\n<tr><td colspan=\"5\">");
			if (sqlite3_column_type(st, 6) != SQLITE_NULL) {
				/* the email's own HTML, inert: no scripts, no same-origin access */
				buf_puts(&b, "<iframe sandbox=\"\" referrerpolicy=\"no-referrer\" "
				    "title=\"Email content\" srcdoc=\"");
				pages_masked(&b, state_text(st, 6));
				buf_puts(&b, "\"></iframe>");
			} else {
				buf_puts(&b, "<pre>");
				pages_masked(&b, state_text(st, 7));
				buf_puts(&b, "</pre>");
			}
			buf_puts(&b, "</td></tr>\n");
		}
		state_done(st);
	}
	if (rows == 0)
		buf_puts(&b, "<tr><td colspan=\"5\" class=\"muted\">No emails yet.</td></tr>");
	buf_puts(&b, "</table>");
	pages_end(&b, resp, 200);
}
