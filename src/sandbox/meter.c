/* meter.c: Dodo's meter worker (usage events into ledger deductions), the test clock and subscription cycle renewals. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "db.h"
#include "log.h"
#include "sandbox.h"

#define METER_DESC_MAX		160	/* an entry's description */
#define METER_RENEW_MAX		10000	/* cycles renewed in one pass at most */
#define METER_ADVANCE_MAX_DAYS	3650	/* POST /admin/clock moves ten years at most */

/*
 * One pass at a time (the worker's, POST /admin/meter/run's and the
 * clock's renewals): a customer's events are read and marked metered in
 * the same write transaction, so a pass never bills an event twice; the
 * lock keeps the answers of concurrent admin runs honest.
 */
static pthread_mutex_t	meter_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t	meter_wait_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t	meter_cond = PTHREAD_COND_INITIALIZER;	/* CLOCK_REALTIME */
static pthread_t	meter_tid;
static int		meter_running;
static int		meter_stopping;

/* The metered quantity of one event: metadata.tokens as a whole number
 * (a number, or a string of digits); anything else counts 0. */
static int64_t
meter_quantity(const char *metadata)
{
	json_object	*o = json_tokener_parse(metadata), *v;
	const char	*s;
	char		*end;
	int64_t		 n = 0;

	if (o != NULL && json_object_is_type(o, json_type_object) &&
	    json_object_object_get_ex(o, "tokens", &v)) {
		if (json_object_is_type(v, json_type_int))
			n = json_object_get_int64(v);
		else if (json_object_is_type(v, json_type_double))
			n = (int64_t)json_object_get_double(v);
		else if (json_object_is_type(v, json_type_string)) {
			s = json_object_get_string(v);
			n = strtoll(s, &end, 10);
			if (end == s || *end != '\0')
				n = 0;
		}
	}
	json_object_put(o);
	return n > 0 && n < SANDBOX_AMOUNT_LIMIT ? n : 0;
}

/* Bill customer's unmetered events in one write transaction.  0 / -1. */
static int
meter_customer(sqlite3 *db, const char *customer_id, struct meter_result *out)
{
	struct ledger_metered	 m = { 0, 0, 0 };
	sqlite3_stmt		*st;
	json_object		*meta;
	char			 first[SANDBOX_ID_MAX * 4] = "", last[SANDBOX_ID_MAX * 4] = "";
	char			 desc[METER_DESC_MAX], seq_text[SANDBOX_AMOUNT_MAX];
	int64_t			 total = 0, events = 0, max_seq = 0;
	int			 known, rc;

	if (db_begin(db) == -1)
		return -1;
	st = state_query(db, "SELECT seq, event_id, metadata FROM events WHERE processed = 0"
	    " AND event_name = ?1 AND customer_id = ?2 ORDER BY seq", 2, sandbox.usage_event_name,
	    customer_id);
	if (st == NULL)
		goto fail;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		max_seq = sqlite3_column_int64(st, 0);
		if (events++ == 0)
			snprintf(first, sizeof(first), "%s", state_text(st, 1));
		snprintf(last, sizeof(last), "%s", state_text(st, 1));
		total += meter_quantity(state_text(st, 2));
		if (total >= SANDBOX_AMOUNT_LIMIT)
			total = SANDBOX_AMOUNT_LIMIT - 1;
	}
	state_done(st);
	if (rc != SQLITE_DONE)
		goto fail;
	snprintf(seq_text, sizeof(seq_text), "%lld", (long long)max_seq);
	if (state_exec(db, "UPDATE events SET processed = 1 WHERE processed = 0 AND"
	    " event_name = ?1 AND customer_id = ?2 AND seq <= CAST(?3 AS INTEGER)", 3,
	    sandbox.usage_event_name, customer_id, seq_text) == -1)
		goto fail;
	st = state_query(db, "SELECT 1 FROM customers WHERE id = ?1", 1, customer_id);
	known = st != NULL && sqlite3_step(st) == SQLITE_ROW;
	state_done(st);
	if (!known)
		m.unbilled = total;
	else if (total > 0) {
		snprintf(desc, sizeof(desc), "Meter %s: %lld %.40s event%s", CATALOG_METER_BUILTIN,
		    (long long)events, sandbox.usage_event_name, events == 1 ? "" : "s");
		meta = json_object_new_object();
		json_object_object_add(meta, "meter_id",
		    json_object_new_string(CATALOG_METER_BUILTIN));
		json_object_object_add(meta, "event_name",
		    json_object_new_string(sandbox.usage_event_name));
		json_object_object_add(meta, "events", json_object_new_int64(events));
		json_object_object_add(meta, "first_event_id", json_object_new_string(first));
		json_object_object_add(meta, "last_event_id", json_object_new_string(last));
		rc = ledger_meter(db, customer_id, total, desc, json_object_to_json_string_ext(meta,
		    JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE), &m);
		json_object_put(meta);
		if (rc == -1)
			goto fail;
	}
	if (db_commit(db) == -1)
		return -1;
	deliver_wake();
	if (m.unbilled > 0)
		log_info("sandbox meter: %lld %s of %s %s not billed (%s)", (long long)m.unbilled,
		    sandbox.unit, known ? "customer" : "unknown customer", customer_id, known ?
		    "past zero, no overage room" : "no such customer");
	out->customers++;
	out->events += events;
	out->deducted += m.deducted;
	out->overage += m.overage;
	out->unbilled += m.unbilled;
	return 0;
fail:
	log_error("sandbox meter: customer %s: %s", customer_id, sqlite3_errmsg(db));
	db_rollback(db);
	return -1;
}

/*
 * Renew every active subscription whose cycle ended by the billing clock
 * (several cycles each, if the clock moved that far), in the caller's
 * transaction.  The number of cycles renewed, or -1.
 */
static int64_t
meter_renew_due(sqlite3 *db)
{
	const struct sandbox_plan	*plan;
	sqlite3_stmt			*st;
	char				 sub[SANDBOX_ID_MAX], cus[SANDBOX_ID_MAX];
	char				 next[SANDBOX_AMOUNT_MAX];
	int64_t				 at, credits, n;

	for (n = 0; n < METER_RENEW_MAX; n++) {
		st = state_prepare(db, "SELECT id, customer_id, product_id, quantity,"
		    " next_billing_at FROM subscriptions WHERE status = 'active' AND"
		    " next_billing_at <= ?1 ORDER BY next_billing_at, rowid LIMIT 1");
		if (st == NULL)
			return -1;
		sqlite3_bind_int64(st, 1, state_clock_ms());
		if (sqlite3_step(st) != SQLITE_ROW) {
			state_done(st);
			return n;
		}
		snprintf(sub, sizeof(sub), "%s", state_text(st, 0));
		snprintf(cus, sizeof(cus), "%s", state_text(st, 1));
		plan = state_plan_of(state_text(st, 2));
		credits = (plan != NULL ? plan->credits : 0) * sqlite3_column_int64(st, 3);
		at = sqlite3_column_int64(st, 4);
		state_done(st);
		if (credits > 0 && ledger_renew(db, cus, sub, credits, at) == -1)
			return -1;
		snprintf(next, sizeof(next), "%lld", (long long)(at + SANDBOX_CYCLE_MS));
		if (state_exec(db, "UPDATE subscriptions SET next_billing_at = CAST(?2 AS INTEGER)"
		    " WHERE id = ?1", 2, sub, next) == -1)
			return -1;
		log_info("sandbox: subscription %s of %s renewed", sub, cus);
	}
	return n;
}

/* Renewals due, in their own transaction (meter_lock held).  0 / -1. */
static int
meter_renew(sqlite3 *db, struct meter_result *out)
{
	int64_t	n;

	if (db_begin(db) == -1)
		return -1;
	if ((n = meter_renew_due(db)) == -1) {
		db_rollback(db);
		return -1;
	}
	if (db_commit(db) == -1)
		return -1;
	out->renewed += n;
	if (n > 0)
		deliver_wake();
	return 0;
}

int
meter_run(struct meter_result *out)
{
	sqlite3		*db = state_db();
	sqlite3_stmt	*st;
	char		 cus[SANDBOX_ID_MAX * 4] = "";
	int		 rc = 0;

	memset(out, 0, sizeof(*out));
	if (db == NULL)
		return -1;
	pthread_mutex_lock(&meter_lock);
	if (meter_renew(db, out) == -1)
		rc = -1;
	/* one customer at a time, oldest usage first, until none is left
	 * (a customer that fails is left for the next pass) */
	for (;;) {
		st = state_query(db, "SELECT customer_id FROM events WHERE processed = 0 AND"
		    " event_name = ?1 AND customer_id > ?2 GROUP BY customer_id"
		    " ORDER BY customer_id LIMIT 1", 2, sandbox.usage_event_name, cus);
		if (st == NULL || sqlite3_step(st) != SQLITE_ROW) {
			state_done(st);
			break;
		}
		snprintf(cus, sizeof(cus), "%s", state_text(st, 0));
		state_done(st);
		if (meter_customer(db, cus, out) == -1)
			rc = -1;
	}
	pthread_mutex_unlock(&meter_lock);
	return rc;
}

static void *
meter_main(void *arg)
{
	struct meter_result	 r;
	struct timespec		 until;
	int64_t			 at;

	(void)arg;
	pthread_mutex_lock(&meter_wait_lock);
	while (!meter_stopping) {
		at = state_now_ms() + sandbox.meter_interval_ms;
		until.tv_sec = (time_t)(at / 1000);
		until.tv_nsec = (long)(at % 1000) * 1000000L;
		while (!meter_stopping && state_now_ms() < at)
			pthread_cond_timedwait(&meter_cond, &meter_wait_lock, &until);
		if (meter_stopping)
			break;
		pthread_mutex_unlock(&meter_wait_lock);
		if (meter_run(&r) == -1)
			log_warn("sandbox meter: the pass failed in part (logged above)");
		else if (r.events > 0 || r.renewed > 0)
			log_info("sandbox meter: %lld events of %lld customers: %lld deducted, %lld"
			    " overage, %lld unbilled; %lld cycles renewed", (long long)r.events,
			    (long long)r.customers, (long long)r.deducted, (long long)r.overage,
			    (long long)r.unbilled, (long long)r.renewed);
		pthread_mutex_lock(&meter_wait_lock);
	}
	pthread_mutex_unlock(&meter_wait_lock);
	state_close();
	return NULL;
}

int
meter_start(void)
{
	if (pthread_create(&meter_tid, NULL, meter_main, NULL) != 0)
		return -1;
	meter_running = 1;
	return 0;
}

void
meter_stop(void)
{
	if (!meter_running)
		return;
	pthread_mutex_lock(&meter_wait_lock);
	meter_stopping = 1;
	pthread_cond_signal(&meter_cond);
	pthread_mutex_unlock(&meter_wait_lock);
	pthread_join(meter_tid, NULL);
	meter_running = 0;
}

/* ------------------------------------------------------------ admin routes */

/* POST /admin/meter/run: one pass now. */
void
meter_admin_run(const struct request *req, struct response *resp)
{
	struct meter_result	 r;
	json_object		*o;

	if (guard_change(req, NULL, resp) == -1)
		return;
	if (meter_run(&r) == -1) {
		response_error(resp, 500, "the meter pass failed (see the sandbox log)");
		return;
	}
	o = json_object_new_object();
	json_object_object_add(o, "customers", json_object_new_int64(r.customers));
	json_object_object_add(o, "events", json_object_new_int64(r.events));
	json_object_object_add(o, "deducted", json_object_new_int64(r.deducted));
	json_object_object_add(o, "overage", json_object_new_int64(r.overage));
	json_object_object_add(o, "unbilled", json_object_new_int64(r.unbilled));
	json_object_object_add(o, "renewed", json_object_new_int64(r.renewed));
	response_json(resp, 200, o);
}

/* {now, offset_ms[, renewed]}: the billing clock. */
static void
meter_clock_reply(struct response *resp, int64_t renewed)
{
	json_object	*o = json_object_new_object();
	char		 t[SANDBOX_TIME_MAX];

	state_iso(state_clock_ms(), t, sizeof(t));
	json_object_object_add(o, "now", json_object_new_string(t));
	json_object_object_add(o, "offset_ms", json_object_new_int64(state_clock_offset_ms()));
	if (renewed >= 0)
		json_object_object_add(o, "renewed", json_object_new_int64(renewed));
	response_json(resp, 200, o);
}

/* GET /admin/clock */
void
meter_admin_clock_get(const struct request *req, struct response *resp)
{
	(void)req;
	meter_clock_reply(resp, -1);
}

/* POST /admin/clock {"advance_days": N} or {"advance_ms": M}: forward only;
 * the cycles that end on the way are renewed before the answer. */
void
meter_admin_clock_post(const struct request *req, struct response *resp)
{
	struct mk_err	 err;
	json_object	*root;
	sqlite3		*db;
	int64_t		 days = 0, ms = 0, renewed;

	if (guard_change(req, NULL, resp) == -1)
		return;
	if ((root = request_json(req, &err)) == NULL) {
		response_error(resp, 400, "%s", err.msg);
		return;
	}
	if (fault_int_member(root, "advance_days", 0, METER_ADVANCE_MAX_DAYS, &days) == -1 ||
	    fault_int_member(root, "advance_ms", 0, METER_ADVANCE_MAX_DAYS * DAY_MS, &ms) == -1 ||
	    (days > 0 && ms > 0)) {
		json_object_put(root);
		response_error(resp, 400, "give advance_days (0..%d) or advance_ms: the clock only"
		    " moves forward", METER_ADVANCE_MAX_DAYS);
		return;
	}
	json_object_put(root);
	if ((db = state_db()) == NULL) {
		response_error(resp, 500, "database unavailable");
		return;
	}
	/* the new time and the renewals it causes commit together: no balance
	 * read sees a cycle's grant expire where it should have rolled over */
	pthread_mutex_lock(&meter_lock);
	if (db_begin(db) == -1)
		renewed = -1;
	else if (state_clock_store(db, state_clock_offset_ms() + days * DAY_MS + ms) == -1 ||
	    (renewed = meter_renew_due(db)) == -1) {
		db_rollback(db);
		state_clock_load(db);
		renewed = -1;
	} else if (db_commit(db) == -1) {
		state_clock_load(db);
		renewed = -1;
	}
	pthread_mutex_unlock(&meter_lock);
	if (renewed == -1) {
		response_error(resp, 500, "the clock could not be moved (see the sandbox log)");
		return;
	}
	if (renewed > 0)
		deliver_wake();
	log_info("sandbox: test clock moved to %lld days ahead, %lld cycles renewed",
	    (long long)(state_clock_offset_ms() / DAY_MS), (long long)renewed);
	meter_clock_reply(resp, renewed);
}
