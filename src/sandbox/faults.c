/* faults.c: injected upstream failures and the sandbox's admin JSON API (tests drive both). */
#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "db.h"
#include "log.h"
#include "sandbox.h"
#include "url.h"

#define FAULT_STALL_DEFAULT_MS	15000	/* longer than MailKit's per-attempt timeout in tests */
#define FAULT_STALL_MAX_MS	60000	/* a stalled request thread is lost this long */
#define FAULT_LATE_AFTER_STALL_MS 2000	/* default late_ms: this long after the request ended */
#define FAULT_LATE_MAX_MS	60000	/* a late effect is queued in memory this long at most */
#define FAULT_MODE_MAX		16	/* "accept500" and a NUL, with room */
#define FAULT_COUNT_MAX		1000
#define ADMIN_LIST_MAX		200	/* rows returned by the admin list routes */
#define ADMIN_QUERY_MAX		320	/* one decoded ?to=, ?subject= or ?type= value */
#define FAULT_RETRY_AFTER	"1"	/* seconds, sent with injected 429s */

static const char *const fault_targets[] = {
	"checkout", "customer", "balance_read", "ledger_debit", "ledger_credit",
	"email_send", "webhook", "catalog", "openai", "events_ingest", "events_read",
};
static const char *const fault_modes[] = {
	"500", "429", "422", "stall", "drop", "late", "accept500",
};
/* late and accept500 need a handler that applies an effect (fault_check with a plan) */
static const char *const fault_effect_targets[] = { "ledger_debit", "ledger_credit", "email_send",
	"events_ingest" };
static const char *const fault_effect_modes[] = { "late", "accept500" };
#define FAULT_NELEMS(a)	(sizeof(a) / sizeof((a)[0]))
#define FAULT_NTARGETS	FAULT_NELEMS(fault_targets)

/* A pending fault as stored in table faults. */
struct fault_row {
	char	mode[FAULT_MODE_MAX];
	int	remaining;
	long	stall_ms;
	long	late_ms;	/* mode "late" only */
};

/*
 * Calls per target since the last reset (GET /admin/stats "calls"), in
 * fault_targets order.  Counting them in table calls took a write
 * transaction on every API call, which serialised the request threads.
 * Process memory is exact because the sandbox is one process: mailkit-stack
 * spawns it with spawn-fcgi -F 1 (the tests and bench.sh start it through
 * mailkit-stack), and its request threads and delivery thread share these.
 * A second process on the same SANDBOX_DB would count its calls apart.
 * Table calls only carries the counts over a restart: read at start,
 * written at a clean stop (a crash loses the counts since the start).
 */
static _Atomic int64_t	fault_calls[FAULT_NTARGETS];
static atomic_int	fault_calls_changed;	/* since fault_calls_load() */

static int
fault_known(const char *s, const char *const *list, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(s, list[i]) == 0)
			return 1;
	return 0;
}

void
fault_sleep_ms(long ms)
{
	struct timespec	ts;

	if (ms <= 0)
		return;
	if (ms > FAULT_STALL_MAX_MS)
		ms = FAULT_STALL_MAX_MS;
	ts.tv_sec = ms / 1000;
	ts.tv_nsec = (ms % 1000) * 1000000L;
	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		;
}

/* Count one call of target (one of fault_targets; others are not counted). */
static void
fault_count(const char *target)
{
	size_t	i;

	for (i = 0; i < FAULT_NTARGETS; i++) {
		if (strcmp(target, fault_targets[i]) == 0) {
			atomic_fetch_add(&fault_calls[i], 1);
			if (!atomic_load(&fault_calls_changed))
				atomic_store(&fault_calls_changed, 1);
			return;
		}
	}
}

int
fault_calls_load(sqlite3 *db)
{
	sqlite3_stmt	*st;
	size_t		 i;
	int		 rc;

	if ((st = state_prepare(db, "SELECT target, n FROM calls")) == NULL)
		return -1;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW)
		for (i = 0; i < FAULT_NTARGETS; i++)
			if (strcmp(state_text(st, 0), fault_targets[i]) == 0)
				atomic_store(&fault_calls[i], sqlite3_column_int64(st, 1));
	state_done(st);
	atomic_store(&fault_calls_changed, 0);
	return rc == SQLITE_DONE ? 0 : -1;
}

void
fault_calls_save(void)
{
	sqlite3		*db;
	sqlite3_stmt	*st;
	int64_t		 n;
	size_t		 i;

	if (!atomic_load(&fault_calls_changed) || (db = state_db()) == NULL)
		return;
	if (db_begin(db) == -1)
		goto fail;
	if (state_exec(db, "DELETE FROM calls", 0) == -1)
		goto fail;
	for (i = 0; i < FAULT_NTARGETS; i++) {
		if ((n = atomic_load(&fault_calls[i])) == 0)
			continue;
		if ((st = state_prepare(db, "INSERT INTO calls (target, n) VALUES (?1, ?2)")) ==
		    NULL)
			goto fail;
		sqlite3_bind_text(st, 1, fault_targets[i], -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 2, n);
		if (sqlite3_step(st) != SQLITE_DONE) {
			state_done(st);
			goto fail;
		}
		state_done(st);
	}
	if (db_commit(db) == -1)
		goto fail;
	atomic_store(&fault_calls_changed, 0);
	return;
fail:
	log_error("sandbox: cannot save the call counts: %s", sqlite3_errmsg(db));
	db_rollback(db);
}

/* Forget every count (POST /admin/reset, after table calls was emptied). */
static void
fault_calls_clear(void)
{
	size_t	i;

	for (i = 0; i < FAULT_NTARGETS; i++)
		atomic_store(&fault_calls[i], 0);
	atomic_store(&fault_calls_changed, 1);
}

/* The pending fault of target: 1 with f filled, 0 when there is none, -1
 * on database errors. */
static int
fault_find(sqlite3 *db, const char *target, struct fault_row *f)
{
	sqlite3_stmt	*st;
	int		 rc;

	if ((st = state_prepare(db, "SELECT mode, remaining, stall_ms, late_ms FROM faults"
	    " WHERE target = ?1")) == NULL)
		return -1;
	sqlite3_bind_text(st, 1, target, -1, SQLITE_STATIC);
	if ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		snprintf(f->mode, sizeof(f->mode), "%s", state_text(st, 0));
		f->remaining = sqlite3_column_int(st, 1);
		f->stall_ms = (long)sqlite3_column_int64(st, 2);
		f->late_ms = (long)sqlite3_column_int64(st, 3);
	}
	state_done(st);
	return rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : -1;
}

/*
 * Count one call of target and take one pending fault for it.  Nearly every
 * call finds none, and learns it from one read: no write lock.  A pending
 * fault is read again and taken under BEGIN IMMEDIATE, so all threads and
 * processes together take each one exactly once.  (A fault armed while the
 * first read runs is missed, as if this call had come just before it.)
 * Returns 1 with f filled when a fault applies, 0 when not, -1 on database
 * errors.
 */
static int
fault_take(sqlite3 *db, const char *target, struct fault_row *f)
{
	int	found;

	if (db == NULL)
		return -1;
	fault_count(target);
	if ((found = fault_find(db, target, f)) != 1)
		return found;
	if (db_begin(db) == -1)
		return -1;
	if ((found = fault_find(db, target, f)) == -1)
		goto fail;
	if (found && state_exec(db, f->remaining <= 1 ?
	    "DELETE FROM faults WHERE target = ?1" :
	    "UPDATE faults SET remaining = remaining - 1 WHERE target = ?1", 1, target) == -1)
		goto fail;
	if (db_commit(db) == -1)
		goto fail;
	return found;
fail:
	db_rollback(db);
	return -1;
}

/* The API's own 500, as an injected "500" and accept500 answer it. */
static void
fault_error_500(enum sandbox_api api, struct response *resp)
{
	if (api == SANDBOX_API_RESEND)
		resend_api_error(resp, 500, "internal_server_error",
		    "An unexpected error occurred, please try again later.");
	else if (api == SANDBOX_API_SENDGRID)
		sendgrid_api_error(resp, 500, "Internal server error");
	else if (api == SANDBOX_API_POSTMARK)
		postmark_api_error(resp, 500, 0, "Internal server error");
	else if (api == SANDBOX_API_OPENAI)
		openai_api_error(resp, 500, "server_error", NULL, NULL, "The server had an error "
		    "while processing your request. Sorry about that!");
	else
		dodo_api_error(resp, 500, "INTERNAL_SERVER_ERROR", "Internal server error");
}

int
fault_check(const char *target, enum sandbox_api api, struct response *resp,
    struct fault_plan *plan)
{
	struct fault_row	f;

	if (plan != NULL) {
		plan->kind = FAULT_NONE;
		plan->stall_ms = 0;
		plan->late_at_ms = 0;
	}
	if (fault_take(state_db(), target, &f) != 1)
		return 0;
	log_info("sandbox: injecting fault %s into %s", f.mode, target);
	if (strcmp(f.mode, "stall") == 0) {
		if (plan == NULL) {
			fault_sleep_ms(f.stall_ms);
			return 0;
		}
		plan->kind = FAULT_STALL;
		plan->stall_ms = f.stall_ms;
		return 0;
	}
	if (strcmp(f.mode, "late") == 0 || strcmp(f.mode, "accept500") == 0) {
		if (plan == NULL) {
			/* faults_post() refuses these for targets without a plan */
			log_warn("sandbox: fault %s ignored: %s has no effect to apply late",
			    f.mode, target);
			return 0;
		}
		plan->kind = strcmp(f.mode, "late") == 0 ? FAULT_LATE : FAULT_ACCEPT500;
		plan->stall_ms = f.stall_ms;
		plan->late_at_ms = state_now_ms() + f.late_ms;
		return 0;
	}
	if (strcmp(f.mode, "drop") == 0) {
		resp->drop = RESPONSE_DROP;	/* the loop finishes the request without a reply */
		resp->status = 500;
		return 1;
	}
	if (strcmp(f.mode, "422") == 0) {
		/* a definite refusal: the call was understood and did nothing */
		if (api == SANDBOX_API_RESEND)
			resend_api_error(resp, 422, "validation_error",
			    "Injected refusal: the email was not sent.");
		else if (api == SANDBOX_API_SENDGRID)	/* SendGrid refuses with 400 */
			sendgrid_api_error(resp, 400, "Injected refusal: the email was not sent.");
		else if (api == SANDBOX_API_POSTMARK)	/* 300: invalid email request */
			postmark_api_error(resp, 422, 300, "Injected refusal: the email was not "
			    "sent.");
		else if (api == SANDBOX_API_OPENAI)	/* OpenAI refuses with 400 */
			openai_api_error(resp, 400, "invalid_request_error", NULL, NULL,
			    "Injected refusal: nothing was generated.");
		else
			dodo_api_error(resp, 422, "INVALID_REQUEST_BODY", "Injected refusal");
		return 1;
	}
	if (strcmp(f.mode, "429") == 0) {
		response_header(resp, "Retry-After", FAULT_RETRY_AFTER);
		if (api == SANDBOX_API_RESEND)
			resend_api_error(resp, 429, "rate_limit_exceeded",
			    "Too many requests. You can only make 5 requests per second.");
		else if (api == SANDBOX_API_SENDGRID)
			sendgrid_api_error(resp, 429, "too many requests");
		else if (api == SANDBOX_API_POSTMARK)
			postmark_api_error(resp, 429, 429, "Rate limit exceeded.");
		else if (api == SANDBOX_API_OPENAI)
			openai_api_error(resp, 429, "requests", NULL, "rate_limit_exceeded",
			    "Rate limit reached for requests. Please try again in 1s.");
		else
			dodo_api_error(resp, 429, "TOO_MANY_REQUESTS", "Too many requests");
		return 1;
	}
	fault_error_500(api, resp);
	return 1;
}

void
fault_late(const struct request *req, struct response *resp, const struct fault_plan *plan,
    const char *target, fault_apply_fn *apply)
{
	late_queue(target, req, apply, plan->late_at_ms);	/* a failure is logged */
	fault_sleep_ms(plan->stall_ms);
	resp->drop = RESPONSE_DROP;	/* as "drop": the loop finishes the request without a reply */
	resp->status = 500;
}

void
fault_email_send(const struct request *req, struct response *resp, enum sandbox_api api,
    fault_apply_fn *accept)
{
	struct fault_plan	plan;

	if (fault_check("email_send", api, resp, &plan) != 0)
		return;
	if (plan.kind == FAULT_LATE) {
		fault_late(req, resp, &plan, "email_send", accept);
		return;
	}
	fault_sleep_ms(plan.kind == FAULT_STALL ? plan.stall_ms : 0);
	accept(req, resp);
	fault_after(&plan, api, resp);
}

void
fault_after(const struct fault_plan *plan, enum sandbox_api api, struct response *resp)
{
	if (plan->kind != FAULT_ACCEPT500 || resp->drop || resp->status < 200 ||
	    resp->status > 299)
		return;	/* a call that failed anyway keeps its own answer */
	log_info("sandbox: accepted, answering 500 instead of %d", resp->status);
	fault_error_500(api, resp);
}

int
fault_webhook_should_fail(sqlite3 *db)
{
	struct fault_row	f;

	if (fault_take(db, "webhook", &f) != 1)
		return 0;
	if (strcmp(f.mode, "stall") == 0) {
		fault_sleep_ms(f.stall_ms);	/* then deliver normally */
		return 0;
	}
	return 1;	/* 500, 429 and drop all count as a failed attempt */
}

/* ------------------------------------------------------------ admin API */

static void
admin_error(struct response *resp, int status, const char *msg)
{
	response_error(resp, status, "%s", msg);
}

int
fault_int_member(json_object *root, const char *name, int64_t min, int64_t max, int64_t *out)
{
	json_object	*v;
	int64_t		 n;

	if (!json_object_object_get_ex(root, name, &v) || v == NULL)
		return 0;
	if (!json_object_is_type(v, json_type_int) ||
	    (n = json_object_get_int64(v)) < min || n > max)
		return -1;
	*out = n;
	return 0;
}

/* POST /admin/faults {"target", "mode", "count", "stall_ms", "late_ms"} */
void
faults_post(const struct request *req, struct response *resp)
{
	struct mk_err	 err;
	json_object	*root, *v, *out;
	const char	*target = NULL, *mode = NULL;
	char		 count_text[24], stall_text[24], late_text[24];
	int64_t		 count = 1, stall = FAULT_STALL_DEFAULT_MS, late = -1;
	int		 is_late;

	if (guard_change(req, NULL, resp) == -1)
		return;
	if ((root = request_json(req, &err)) == NULL) {
		response_fail(resp, &err);
		return;
	}
	if (json_object_object_get_ex(root, "target", &v) && json_object_is_type(v, json_type_string))
		target = json_object_get_string(v);
	if (json_object_object_get_ex(root, "mode", &v)) {
		if (json_object_is_type(v, json_type_string))
			mode = json_object_get_string(v);
		else if (json_object_is_type(v, json_type_int))
			mode = json_object_get_int(v) == 500 ? "500" :
			    json_object_get_int(v) == 429 ? "429" : NULL;
	}
	if (target == NULL || !fault_known(target, fault_targets, FAULT_NELEMS(fault_targets))) {
		admin_error(resp, 400, "target must be one of checkout, customer, balance_read,"
		    " ledger_debit, ledger_credit, email_send, webhook, catalog, openai,"
		    " events_ingest, events_read");
		goto out;
	}
	if (mode == NULL || !fault_known(mode, fault_modes, FAULT_NELEMS(fault_modes))) {
		admin_error(resp, 400, "mode must be one of \"500\", \"429\", \"422\", \"stall\","
		    " \"drop\", \"late\", \"accept500\"");
		goto out;
	}
	if (fault_known(mode, fault_effect_modes, FAULT_NELEMS(fault_effect_modes)) &&
	    !fault_known(target, fault_effect_targets, FAULT_NELEMS(fault_effect_targets))) {
		response_error(resp, 400, "mode \"%s\" applies an effect late or answers 500 after"
		    " it: only for ledger_debit, ledger_credit, email_send and events_ingest", mode);
		goto out;
	}
	if (fault_int_member(root, "count", 1, FAULT_COUNT_MAX, &count) == -1) {
		admin_error(resp, 400, "count must be an integer 1..1000");
		goto out;
	}
	if (fault_int_member(root, "stall_ms", 0, FAULT_STALL_MAX_MS, &stall) == -1) {
		admin_error(resp, 400, "stall_ms must be an integer 0..60000");
		goto out;
	}
	is_late = strcmp(mode, "late") == 0;
	if (fault_int_member(root, "late_ms", 0, FAULT_LATE_MAX_MS, &late) == -1) {
		admin_error(resp, 400, "late_ms must be an integer 0..60000");
		goto out;
	}
	if (late >= 0 && !is_late) {
		admin_error(resp, 400, "late_ms is only for mode \"late\"");
		goto out;
	}
	if (is_late && late < 0)
		late = stall + FAULT_LATE_AFTER_STALL_MS > FAULT_LATE_MAX_MS ? FAULT_LATE_MAX_MS :
		    stall + FAULT_LATE_AFTER_STALL_MS;
	snprintf(count_text, sizeof(count_text), "%lld", (long long)count);
	snprintf(stall_text, sizeof(stall_text), "%lld", (long long)stall);
	snprintf(late_text, sizeof(late_text), "%lld", (long long)late);
	if (state_exec(state_db(), "INSERT INTO faults (target, mode, remaining, stall_ms,"
	    " late_ms) VALUES (?1, ?2, CAST(?3 AS INTEGER), CAST(?4 AS INTEGER),"
	    " CAST(?5 AS INTEGER)) ON CONFLICT (target) DO UPDATE SET mode = excluded.mode,"
	    " remaining = excluded.remaining, stall_ms = excluded.stall_ms,"
	    " late_ms = excluded.late_ms",
	    5, target, mode, count_text, stall_text, is_late ? late_text : NULL) == -1) {
		admin_error(resp, 500, "database error");
		goto out;
	}
	out = json_object_new_object();
	json_object_object_add(out, "target", json_object_new_string(target));
	json_object_object_add(out, "mode", json_object_new_string(mode));
	json_object_object_add(out, "count", json_object_new_int64(count));
	json_object_object_add(out, "stall_ms", json_object_new_int64(stall));
	if (is_late)
		json_object_object_add(out, "late_ms", json_object_new_int64(late));
	response_json(resp, 200, out);
out:
	json_object_put(root);
}

/* DELETE /admin/faults: clear every pending fault. */
void
faults_delete(const struct request *req, struct response *resp)
{
	if (guard_change(req, NULL, resp) == -1)
		return;
	if (state_exec(state_db(), "DELETE FROM faults", 0) == -1) {
		admin_error(resp, 500, "database error");
		return;
	}
	state_reply_member(resp, "cleared", json_object_new_boolean(1));
}

/* One row of an admin list as JSON. */
typedef json_object *admin_row_fn(sqlite3_stmt *st);

/*
 * The admin list routes: run sql with ?1..?n bound to the query parameters
 * named in keys (NULL when absent) and ?n+1 to ADMIN_LIST_MAX, and answer
 * {"items": [row(st), ...]}.  With total_col >= 0 the reply also carries
 * "total", that column of the rows (a count(*) OVER () of every match).
 */
static void
admin_list(const struct request *req, struct response *resp, const char *sql,
    const char *const *keys, int nkeys, admin_row_fn *row, int total_col)
{
	sqlite3_stmt	*st;
	json_object	*items, *out;
	char		 value[ADMIN_QUERY_MAX];
	int64_t		 total = 0;
	int		 i;

	if ((st = state_prepare(state_db(), sql)) == NULL) {
		admin_error(resp, 500, "database error");
		return;
	}
	for (i = 0; i < nkeys; i++)
		if (url_query_get(req->query, keys[i], value, sizeof(value)) == 0)
			sqlite3_bind_text(st, i + 1, value, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int(st, nkeys + 1, ADMIN_LIST_MAX);
	items = json_object_new_array();
	while (sqlite3_step(st) == SQLITE_ROW) {
		json_object_array_add(items, row(st));
		if (total_col >= 0)
			total = sqlite3_column_int64(st, total_col);
	}
	state_done(st);
	out = json_object_new_object();
	json_object_object_add(out, "items", items);
	if (total_col >= 0)
		json_object_object_add(out, "total", json_object_new_int64(total));
	response_json(resp, 200, out);
}

static json_object *
admin_fault_row(sqlite3_stmt *st)
{
	json_object	*o = json_object_new_object();

	json_object_object_add(o, "target", json_object_new_string(state_text(st, 0)));
	json_object_object_add(o, "mode", json_object_new_string(state_text(st, 1)));
	json_object_object_add(o, "count", json_object_new_int(sqlite3_column_int(st, 2)));
	json_object_object_add(o, "stall_ms", json_object_new_int64(sqlite3_column_int64(st, 3)));
	if (sqlite3_column_type(st, 4) != SQLITE_NULL)	/* mode "late" */
		json_object_object_add(o, "late_ms",
		    json_object_new_int64(sqlite3_column_int64(st, 4)));
	return o;
}

/* GET /admin/faults */
void
faults_list(const struct request *req, struct response *resp)
{
	admin_list(req, resp, "SELECT target, mode, remaining, stall_ms, late_ms FROM faults"
	    " ORDER BY target LIMIT ?1", NULL, 0, admin_fault_row, -1);
}

/* A text column as JSON (NULL stays null) with the API keys in it masked. */
static json_object *
admin_masked_text(sqlite3_stmt *st, int col)
{
	json_object	*o;
	char		*copy;

	if (sqlite3_column_type(st, col) == SQLITE_NULL)
		return NULL;
	if ((copy = strdup(state_text(st, col))) == NULL)
		return NULL;
	guard_mask_keys(copy);
	o = json_object_new_string(copy);
	free(copy);
	return o;
}

static json_object *
admin_email_row(sqlite3_stmt *st)
{
	json_object	*o = json_object_new_object(), *to;
	char		 t[SANDBOX_TIME_MAX];

	json_object_object_add(o, "id", json_object_new_string(state_text(st, 0)));
	json_object_object_add(o, "from", json_object_new_string(state_text(st, 1)));
	to = json_tokener_parse(state_text(st, 2));
	json_object_object_add(o, "to", to != NULL ? to : json_object_new_array());
	json_object_object_add(o, "subject", json_object_new_string(state_text(st, 3)));
	json_object_object_add(o, "html", admin_masked_text(st, 4));
	json_object_object_add(o, "text", admin_masked_text(st, 5));
	json_object_object_add(o, "status", json_object_new_string(state_text(st, 6)));
	json_object_object_add(o, "idempotency_key", state_json_text(st, 7));
	state_iso(sqlite3_column_int64(st, 8), t, sizeof(t));
	json_object_object_add(o, "created_at", json_object_new_string(t));
	resend_api_extras(o, sqlite3_column_type(st, 10) == SQLITE_NULL ? NULL :
	    state_text(st, 10));
	return o;
}

/*
 * GET /admin/emails[?to=addr][&subject=prefix]: what the Resend emulation
 * "sent", newest first.  ?to= matches inside the recipients, ?subject= is a
 * prefix; "total" counts every match, "items" holds the newest
 * ADMIN_LIST_MAX of them.
 */
void
admin_emails(const struct request *req, struct response *resp)
{
	static const char *const keys[] = { "to", "subject" };

	admin_list(req, resp, "SELECT id, from_addr, to_json, subject, html, text, status,"
	    " idempotency_key, created_at, count(*) OVER (), extras_json FROM emails"
	    " WHERE (?1 IS NULL OR instr(lower(to_json), lower(?1)) > 0)"
	    " AND (?2 IS NULL OR substr(subject, 1, length(?2)) = ?2)"
	    " ORDER BY seq DESC LIMIT ?3", keys, 2, admin_email_row, 9);
}

static json_object *
admin_webhook_row(sqlite3_stmt *st)
{
	json_object	*o = json_object_new_object();
	char		 t[SANDBOX_TIME_MAX];

	json_object_object_add(o, "id", json_object_new_string(state_text(st, 0)));
	json_object_object_add(o, "type", json_object_new_string(state_text(st, 1)));
	json_object_object_add(o, "status", json_object_new_string(state_text(st, 2)));
	json_object_object_add(o, "attempts", json_object_new_int(sqlite3_column_int(st, 3)));
	json_object_object_add(o, "last_status", sqlite3_column_type(st, 4) == SQLITE_NULL ?
	    NULL : json_object_new_int(sqlite3_column_int(st, 4)));
	json_object_object_add(o, "last_error", state_json_text(st, 5));
	json_object_object_add(o, "payload", json_tokener_parse(state_text(st, 6)));
	/* the exact bytes and headers of the last attempt, for signature checks */
	json_object_object_add(o, "body", json_object_new_string(state_text(st, 6)));
	json_object_object_add(o, "webhook_timestamp", state_json_text(st, 10));
	json_object_object_add(o, "webhook_signature", state_json_text(st, 11));
	/* null: to SANDBOX_WEBHOOK_URL; else the endpoint made through the API */
	json_object_object_add(o, "endpoint_id", state_json_text(st, 12));
	state_iso(sqlite3_column_int64(st, 7), t, sizeof(t));
	json_object_object_add(o, "created_at", json_object_new_string(t));
	state_iso(sqlite3_column_int64(st, 8), t, sizeof(t));
	json_object_object_add(o, "updated_at", json_object_new_string(t));
	if (strcmp(state_text(st, 2), "pending") == 0) {
		state_iso(sqlite3_column_int64(st, 9), t, sizeof(t));
		json_object_object_add(o, "next_attempt_at", json_object_new_string(t));
	} else
		json_object_object_add(o, "next_attempt_at", NULL);
	return o;
}

/* GET /admin/webhooks[?type=credit.added]: deliveries with status and attempts, newest first. */
void
admin_webhooks(const struct request *req, struct response *resp)
{
	static const char *const keys[] = { "type" };

	admin_list(req, resp, "SELECT id, type, status, attempts, last_status, last_error,"
	    " body, created_at, updated_at, next_attempt_at, last_timestamp, last_signature,"
	    " endpoint_id FROM deliveries WHERE ?1 IS NULL OR type = ?1 ORDER BY seq DESC LIMIT ?2",
	    keys, 1, admin_webhook_row, -1);
}

/* One integer from a single-row query, 0 on errors. */
static int64_t
admin_count(sqlite3 *db, const char *sql)
{
	sqlite3_stmt	*st = state_prepare(db, sql);
	int64_t		 n = 0;

	if (st == NULL)
		return 0;
	if (sqlite3_step(st) == SQLITE_ROW)
		n = sqlite3_column_int64(st, 0);
	state_done(st);
	return n;
}

/* GET /admin/stats */
void
admin_stats(const struct request *req, struct response *resp)
{
	sqlite3		*db = state_db();
	json_object	*out, *calls, *hooks;
	size_t		 i;

	(void)req;
	if (db == NULL) {
		admin_error(resp, 500, "database error");
		return;
	}
	out = json_object_new_object();
	json_object_object_add(out, "emails_sent",
	    json_object_new_int64(admin_count(db, "SELECT count(*) FROM emails")));
	json_object_object_add(out, "debits", json_object_new_int64(admin_count(db,
	    "SELECT count(*) FROM ledger WHERE is_credit = 0 AND"
	    " transaction_type != 'credit_expired'")));
	json_object_object_add(out, "credits", json_object_new_int64(admin_count(db,
	    "SELECT count(*) FROM ledger WHERE is_credit = 1")));
	json_object_object_add(out, "customers",
	    json_object_new_int64(admin_count(db, "SELECT count(*) FROM customers")));
	json_object_object_add(out, "checkouts",
	    json_object_new_int64(admin_count(db, "SELECT count(*) FROM sessions")));
	json_object_object_add(out, "payments",
	    json_object_new_int64(admin_count(db, "SELECT count(*) FROM payments")));
	hooks = json_object_new_object();
	json_object_object_add(hooks, "pending", json_object_new_int64(admin_count(db,
	    "SELECT count(*) FROM deliveries WHERE status = 'pending'")));
	json_object_object_add(hooks, "succeeded", json_object_new_int64(admin_count(db,
	    "SELECT count(*) FROM deliveries WHERE status = 'succeeded'")));
	json_object_object_add(hooks, "failed", json_object_new_int64(admin_count(db,
	    "SELECT count(*) FROM deliveries WHERE status = 'failed'")));
	json_object_object_add(hooks, "recorded", json_object_new_int64(admin_count(db,
	    "SELECT count(*) FROM deliveries WHERE status = 'recorded'")));
	json_object_object_add(out, "webhooks", hooks);
	calls = json_object_new_object();
	for (i = 0; i < FAULT_NTARGETS; i++)
		json_object_object_add(calls, fault_targets[i],
		    json_object_new_int64(atomic_load(&fault_calls[i])));
	json_object_object_add(out, "calls", calls);
	json_object_object_add(out, "late_applied", json_object_new_int64(late_applied()));
	response_json(resp, 200, out);
}

/* POST /admin/reset: forget everything (tests start from a clean sandbox). */
void
admin_reset(const struct request *req, struct response *resp)
{
	if (guard_change(req, NULL, resp) == -1)
		return;
	if (state_reset(state_db()) == -1) {
		admin_error(resp, 500, "database error");
		return;
	}
	fault_calls_clear();
	late_clear();
	state_reply_member(resp, "reset", json_object_new_boolean(1));
}
