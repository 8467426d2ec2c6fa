/* usage_outbox.c: the usage outbox (usage.h) — ingest with stable ids, the too-old fallback, meter clears, its threads. */
#define _GNU_SOURCE		/* timegm */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <json-c/json.h>

#include "clock.h"
#include "dodo.h"
#include "log.h"
#include "settings.h"
#include "store.h"
#include "usage.h"
#include "workers.h"

#define USAGE_LEDGER_PAGE	100	/* ledger entries read per poll (newest first) */
#define USAGE_CLOCK_SLACK_MS	5000	/* a meter entry may carry a clock a little behind ours */

/* "2025-08-04T06:00:00.123Z" -> milliseconds; 0 if it does not parse. */
static long long
usage_parse_iso(const char *s)
{
	struct tm	 tm;
	const char	*end;
	long long	 ms = 0;

	memset(&tm, 0, sizeof tm);
	if (s == NULL || (end = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm)) == NULL)
		return 0;
	if (*end == '.') {
		int digits = 0;

		for (end++; *end >= '0' && *end <= '9'; end++, digits++)
			if (digits < 3)
				ms = ms * 10 + (*end - '0');
		for (; digits < 3; digits++)
			ms *= 10;
	}
	return (long long)timegm(&tm) * 1000 + ms;
}

/* Retry after 1 s, 2 s, 4 s ... capped. */
static long
usage_backoff(int attempts)
{
	return attempts >= 6 ? USAGE_BACKOFF_MAX_SEC :
	    ((1L << attempts) < USAGE_BACKOFF_MAX_SEC ? 1L << attempts : USAGE_BACKOFF_MAX_SEC);
}

/* The usage event of a row: stable id, original timestamp, tokens. */
static json_object *
usage_event(const struct settings *s, const struct store_usage *r)
{
	json_object	*ev = json_object_new_object(), *meta = json_object_new_object();
	char		 id[USAGE_KEY_MAX], when[40];

	usage_event_id(r->key, id);
	usage_iso_ms(r->settled_ms, when, sizeof when);
	json_object_object_add(ev, "event_id", json_object_new_string(id));
	json_object_object_add(ev, "customer_id", json_object_new_string(r->customer_id));
	json_object_object_add(ev, "event_name", json_object_new_string(s->usage_event_name));
	json_object_object_add(ev, "timestamp", json_object_new_string(when));
	json_object_object_add(meta, "tokens", json_object_new_int64(r->tokens));
	json_object_object_add(ev, "metadata", meta);
	return ev;
}

/* Record a row's outcome, logging a store failure (the lease then lapses and
 * the row is taken up again: every step is safe to repeat). */
static void
usage_note(const struct settings *s, const struct store_usage *r, int rc,
    const struct mk_err *err)
{
	(void)s;
	if (rc == -1)
		log_warn("usage %.12s…: outbox state not recorded (%s): retried", r->key,
		    err->msg);
}

/*
 * Ingest rows[0..n) in one request.  On a refusal (400) of a batch, each
 * row is tried alone, so one bad event does not hold back the others; a
 * row refused alone waits for the fallback (USAGE_INGEST_CLOSED_SEC).
 */
static void
usage_ingest(const struct settings *s, struct store_usage *rows, int n)
{
	json_object	*events = json_object_new_array();
	struct mk_err	 err, serr;
	long		 ingested;
	int		 rc;

	for (int i = 0; i < n; i++)
		json_object_array_add(events, usage_event(s, &rows[i]));
	rc = dodo_ingest_events(s, events, &ingested, &err);
	json_object_put(events);
	if (rc == 0) {
		for (int i = 0; i < n; i++)
			usage_note(s, &rows[i], store_usage_ingested(s, &rows[i], &serr), &serr);
		log_info("usage: %d events ingested (%ld new)", n, ingested);
		return;
	}
	if (err.status == 400 && n > 1) {
		log_warn("usage: a batch of %d events was refused: each alone", n);
		for (int i = 0; i < n; i++)
			usage_ingest(s, &rows[i], 1);
		return;
	}
	for (int i = 0; i < n; i++) {
		long delay = usage_backoff(rows[i].attempts);

		if (err.status == 400) {
			/* refused alone: only the fallback can bill it, once no
			 * earlier attempt can still land */
			delay = (long)((rows[i].settled_ms / 1000 + USAGE_INGEST_CLOSED_SEC) -
			    time(NULL));
			log_warn("usage %.12s…: event refused (%s): the ledger fallback bills it "
			    "in %ld s", rows[i].key, err.msg, delay);
			if (delay < 1)
				delay = 1;
		}
		usage_note(s, &rows[i], store_usage_postpone(s, &rows[i], delay, &serr), &serr);
	}
	if (err.status != 400)
		log_warn("usage: ingest of %d events failed (%s): retried with the same ids", n,
		    err.msg);
}

/*
 * An event too old to ingest: once no ingest can land any more, ask Dodo
 * whether it did; if not, debit the ledger under the row's own key.
 */
static void
usage_fallback(const struct settings *s, struct store_usage *r)
{
	struct dodo_ledger_result	 res;
	struct mk_err			 err;
	char				 id[USAGE_KEY_MAX], key[USAGE_KEY_MAX], amount[32];
	long				 wait;
	int				 found, rc;

	wait = (long)(r->settled_ms / 1000 + USAGE_INGEST_CLOSED_SEC - time(NULL));
	if (wait > 0) {
		usage_note(s, r, store_usage_postpone(s, r, wait, &err), &err);
		return;
	}
	usage_event_id(r->key, id);
	if (dodo_get_event(s, id, &found, &err) == -1) {
		usage_note(s, r, store_usage_postpone(s, r, usage_backoff(r->attempts), &err), &err);
		return;
	}
	if (found) {
		log_info("usage %.12s…: the event had landed", r->key);
		usage_note(s, r, store_usage_ingested(s, r, &err), &err);
		return;
	}
	usage_debit_key(r->key, key);
	snprintf(amount, sizeof amount, "%ld", r->tokens);
	rc = dodo_ledger_entry(s, r->customer_id, DODO_DEBIT, amount,
	    "AI usage (event too old to ingest)", key, r->key, &res, &err);
	if (rc == -1) {
		usage_note(s, r, store_usage_postpone(s, r, usage_backoff(r->attempts), &err), &err);
		return;
	}
	if (res.outcome == DODO_LEDGER_INSUFFICIENT) {
		log_error("usage %.12s…: %s: %ld tokens never ingested and the ledger refused "
		    "the debit: NOT BILLED", r->key, r->customer_id, r->tokens);
		usage_note(s, r, store_usage_debited(s, r, "unbilled", key, &err), &err);
		return;
	}
	log_warn("usage %.12s…: %ld tokens billed by a ledger debit (%s)", r->key, r->tokens,
	    res.outcome == DODO_LEDGER_DUPLICATE ? "landed before" : res.entry_id);
	usage_note(s, r, store_usage_debited(s, r, "ledger", key, &err), &err);
}

/* Apply the meter's ledger entries of one customer made since since_ms. */
static void
usage_poll_ledger(const struct settings *s, const char *customer_id, long long since_ms)
{
	json_object	*page, *items;
	struct mk_err	 err;
	size_t		 n;

	if ((page = dodo_list_ledger(s, customer_id, USAGE_LEDGER_PAGE, 0, &err)) == NULL) {
		log_warn("usage: %s: cannot read the ledger (%s)", customer_id, err.msg);
		return;
	}
	json_object_object_get_ex(page, "items", &items);
	n = json_object_array_length(items);
	for (size_t i = 0; i < n; i++) {
		json_object	*e = json_object_array_get_idx(items, i), *v;
		const char	*f[5];
		static const char *const names[5] = { "id", "amount", "transaction_type",
		    "reference_type", "created_at" };

		for (int k = 0; k < 5; k++)
			f[k] = json_object_object_get_ex(e, names[k], &v) &&
			    json_object_is_type(v, json_type_string) ? json_object_get_string(v) :
			    NULL;
		if (f[0] == NULL || f[1] == NULL || f[2] == NULL || f[3] == NULL ||
		    strcmp(f[3], "meter") != 0 || (strcmp(f[2], "credit_deducted") != 0 &&
		    strcmp(f[2], "overage_charged") != 0))
			continue;
		/* only deductions of the usage waiting: older entries are older usage's */
		if (usage_parse_iso(f[4]) + USAGE_CLOCK_SLACK_MS < since_ms)
			continue;
		if (usage_meter_deduction(s, customer_id, f[0], f[1], &err) == -1)
			log_warn("usage: %s: meter entry %s not applied (%s)", customer_id, f[0],
			    err.msg);
	}
	json_object_put(page);
}

int
usage_outbox_pass(const struct settings *s, struct mk_err *err)
{
	struct store_usage	*rows, *fresh;
	char			 ids[USAGE_POLL_CUSTOMERS][128];
	long long		 since[USAGE_POLL_CUSTOMERS], now_ms = clock_wall_ms();
	int			 n, nfresh = 0, np;

	if (store_usage_expire(s, time(NULL) - USAGE_CLEAR_WINDOW_SEC, err) == -1)
		return -1;
	if ((rows = calloc(DODO_INGEST_MAX, sizeof *rows)) == NULL ||
	    (fresh = calloc(DODO_INGEST_MAX, sizeof *fresh)) == NULL) {
		free(rows);
		return mk_fail(err, 503, "out of memory");
	}
	if ((n = store_usage_outbox_take(s, rows, DODO_INGEST_MAX, err)) == -1) {
		free(rows);
		free(fresh);
		return -1;
	}
	for (int i = 0; i < n; i++) {
		if (now_ms - rows[i].settled_ms < (long long)USAGE_INGEST_MAX_AGE_SEC * 1000)
			fresh[nfresh++] = rows[i];
		else
			usage_fallback(s, &rows[i]);
	}
	if (nfresh > 0)
		usage_ingest(s, fresh, nfresh);
	free(rows);
	free(fresh);
	if ((np = store_usage_poll_due(s, USAGE_POLL_SEC, ids, since, USAGE_POLL_CUSTOMERS,
	    err)) == -1)
		return -1;
	for (int i = 0; i < np; i++)
		usage_poll_ledger(s, ids[i], since[i]);
	return n;
}

/*
 * The outbox threads of a process (workers.h).  A request that settles
 * wakes one, so its event goes out at once.
 */
static struct workers		 usage_outbox = WORKERS_INIT;
static const struct settings	*usage_outbox_settings;

void
usage_outbox_wake(void)
{
	workers_wake(&usage_outbox);
}

static void
usage_outbox_run(void *arg)
{
	struct mk_err	err;

	(void)arg;
	if (usage_outbox_pass(usage_outbox_settings, &err) == -1)
		log_warn("usage outbox: %s", err.msg);
}

int
usage_outbox_start(const struct settings *s)
{
	usage_outbox_settings = s;
	return workers_start(&usage_outbox, s->usage_outbox_threads, USAGE_OUTBOX_POLL_MS,
	    usage_outbox_run, NULL);
}

void
usage_outbox_stop(void)
{
	workers_stop(&usage_outbox);
}
