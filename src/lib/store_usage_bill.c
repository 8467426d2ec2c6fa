/* store_usage_bill.c: the billing of settled usage (store_usage.h): the outbox of usage events and ledger debits, and the meter's FIFO clears. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "db.h"
#include "log.h"
#include "settings.h"
#include "store.h"
#include "store_int.h"
#include "store_usage.h"

/* This module's statements, in the slots store_int.h numbers. */
static const char *const store_usage_bill_sql[SQL_COUNT] = {
	[SQL_USAGE_DUE] =
	    "SELECT key, owner_pid, lease_until, owner_host FROM usage"
	    " WHERE state = 1 AND next_attempt_at <= ?1 ORDER BY settled_ms LIMIT ?2",
	[SQL_USAGE_TAKE] =
	    "UPDATE usage SET owner_token = ?2, lease_until = ?3, owner_pid = ?4, owner_host = ?5"
	    " WHERE key = ?1 RETURNING key, customer_id, tokens, settled_ms, attempts",
	[SQL_USAGE_INGESTED] =
	    "UPDATE usage SET state = 2, billed_by = 'event', ingested_at = ?3,"
	    " next_attempt_at = ?4, owner_token = NULL, lease_until = NULL, updated_at = ?3"
	    " WHERE key = ?1 AND owner_token = ?2 AND state = 1",
	[SQL_USAGE_DEBITED] =
	    "UPDATE usage SET state = 3, billed_by = ?3, cleared = tokens, ingested_at = ?4,"
	    " owner_token = NULL, lease_until = NULL, updated_at = ?4"
	    " WHERE key = ?1 AND owner_token = ?2 AND state = 1",
	[SQL_USAGE_POSTPONE] =
	    "UPDATE usage SET attempts = attempts + 1, next_attempt_at = ?3, owner_token = NULL,"
	    " lease_until = NULL, updated_at = ?4 WHERE key = ?1 AND owner_token = ?2",
	[SQL_USAGE_CLEAR_ADD] =
	    "INSERT INTO usage_clears (entry_id, customer_id, amount, at) VALUES (?1, ?2, ?3, ?4)"
	    " ON CONFLICT (entry_id) DO NOTHING",
	[SQL_USAGE_CLEAR_SET] =
	    "UPDATE usage_clears SET amount = ?2 WHERE entry_id = ?1",
	[SQL_USAGE_FIFO] =
	    "SELECT key, tokens - cleared FROM usage WHERE customer_id = ?1 AND state IN (1, 2)"
	    " AND cleared < tokens ORDER BY settled_ms, key",
	[SQL_USAGE_CLEAR_ROW] =
	    "UPDATE usage SET cleared = cleared + ?2, updated_at = ?3 WHERE key = ?1",
	[SQL_USAGE_EXPIRE_HOLDS] =
	    "UPDATE usage SET state = 10, owner_token = NULL, lease_until = NULL, updated_at = ?1"
	    " WHERE state = 0 AND lease_until <= ?1",
	[SQL_USAGE_STALE] =
	    "SELECT key, customer_id, tokens - cleared FROM usage"
	    " WHERE state = 2 AND cleared < tokens AND ingested_at < ?1 LIMIT 256",
	[SQL_USAGE_POLL] =
	    "SELECT customer_id, MIN(settled_ms) FROM usage WHERE state = 2 AND cleared < tokens"
	    " AND next_attempt_at <= ?1 GROUP BY customer_id LIMIT ?2",
	[SQL_USAGE_POLL_NEXT] =
	    "UPDATE usage SET next_attempt_at = ?2"
	    " WHERE customer_id = ?1 AND state = 2 AND cleared < tokens",
};

int
store_usage_outbox_take(const struct settings *s, struct store_usage *rows, int max,
    struct mk_err *err)
{
	struct store_handle	*t STORE_HELD = NULL;
	sqlite3_stmt		*st;
	char			(*keys)[STORE_USAGE_KEY_MAX];
	time_t			 now = time(NULL);
	long long		 token = store_send_token();
	int			 n = 0, nkeys = 0, rc;

	if ((keys = calloc((size_t)max, sizeof keys[0])) == NULL)
		return mk_fail(err, 503, "out of memory");
	if ((t = store_lock(s, err)) == NULL) {
		free(keys);
		return -1;
	}
	if (db_begin(t->db) == -1) {
		free(keys);
		return mk_fail(err, 503, "state store unavailable");
	}
	if ((st = store_stmt(t, SQL_USAGE_DUE, store_usage_bill_sql, err)) == NULL)
		goto fail;
	sqlite3_bind_int64(st, 1, (sqlite3_int64)now);
	sqlite3_bind_int(st, 2, max + STORE_USAGE_DUE_SLACK);
	/* due rows nobody live holds: a killed process's are free at once */
	while (nkeys < max && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		char host[STORE_USAGE_HOST_MAX];

		store_column_text(st, 3, host, sizeof host);
		if (store_send_claim_live(sqlite3_column_int64(st, 1), sqlite3_column_int64(st, 2),
		    host, now))
			continue;
		store_column_text(st, 0, keys[nkeys], sizeof keys[nkeys]);
		nkeys++;
	}
	sqlite3_reset(st);
	for (int i = 0; i < nkeys; i++) {
		struct store_usage *r = &rows[n];

		if ((st = store_stmt(t, SQL_USAGE_TAKE, store_usage_bill_sql, err)) == NULL)
			goto fail;
		store_bind_text(st, 1, keys[i]);
		sqlite3_bind_int64(st, 2, token);
		sqlite3_bind_int64(st, 3, (sqlite3_int64)now + STORE_USAGE_LEASE_SEC);
		sqlite3_bind_int64(st, 4, (sqlite3_int64)getpid());
		store_bind_text(st, 5, store_send_host());
		if ((rc = sqlite3_step(st)) == SQLITE_ROW) {
			memset(r, 0, sizeof *r);
			store_column_text(st, 0, r->key, sizeof r->key);
			store_column_text(st, 1, r->customer_id, sizeof r->customer_id);
			r->tokens = (long)sqlite3_column_int64(st, 2);
			r->settled_ms = sqlite3_column_int64(st, 3);
			r->attempts = sqlite3_column_int(st, 4);
			r->state = USAGE_SETTLED;
			r->owner_token = token;
			n++;
			rc = sqlite3_step(st);
		}
		sqlite3_reset(st);
		if (rc != SQLITE_DONE) {
			log_error("store: claiming the usage outbox: %s", sqlite3_errmsg(t->db));
			mk_fail(err, 503, "state store unavailable");
			goto fail;
		}
	}
	free(keys);
	if (db_commit(t->db) == -1)
		return mk_fail(err, 503, "state store unavailable");
	return n;
fail:
	free(keys);
	db_rollback(t->db);
	return -1;
}

int
store_usage_ingested(const struct settings *s, const struct store_usage *row,
    struct mk_err *err)
{
	struct store_handle	*t STORE_HELD = NULL;
	sqlite3_stmt		*st;
	time_t			 now = time(NULL);

	if ((t = store_lock(s, err)) == NULL ||
	    (st = store_stmt(t, SQL_USAGE_INGESTED, store_usage_bill_sql, err)) == NULL)
		return -1;
	store_bind_text(st, 1, row->key);
	sqlite3_bind_int64(st, 2, row->owner_token);
	sqlite3_bind_int64(st, 3, (sqlite3_int64)now);
	sqlite3_bind_int64(st, 4, (sqlite3_int64)now + STORE_USAGE_POLL_SEC);	/* first ledger poll */
	return store_usage_own_step(t, st, "recording an ingest", err);
}

/* Record a clear of amount under entry_id, within the caller's transaction:
 * 1 recorded, 0 seen before, -1 error. */
static int
store_usage_clear_record(struct store_handle *t, const char *customer_id,
    const char *entry_id, long amount, struct mk_err *err)
{
	sqlite3_stmt *st;

	if ((st = store_stmt(t, SQL_USAGE_CLEAR_ADD, store_usage_bill_sql, err)) == NULL)
		return -1;
	store_bind_text(st, 1, entry_id);
	store_bind_text(st, 2, customer_id);
	sqlite3_bind_int64(st, 3, amount);
	sqlite3_bind_int64(st, 4, (sqlite3_int64)time(NULL));
	if (store_step_done(t, st, "recording a clear", err) == -1)
		return -1;
	return sqlite3_changes(t->db) > 0;
}

int
store_usage_debited(const struct settings *s, const struct store_usage *row,
    const char *billed_by, const char *clear_id, struct mk_err *err)
{
	struct store_handle	*t STORE_HELD = NULL;
	sqlite3_stmt		*st;

	if ((t = store_lock(s, err)) == NULL)
		return -1;
	if (db_begin(t->db) == -1)
		return mk_fail(err, 503, "state store unavailable");
	if ((st = store_stmt(t, SQL_USAGE_DEBITED, store_usage_bill_sql, err)) == NULL)
		goto fail;
	store_bind_text(st, 1, row->key);
	sqlite3_bind_int64(st, 2, row->owner_token);
	store_bind_text(st, 3, billed_by);
	sqlite3_bind_int64(st, 4, (sqlite3_int64)time(NULL));
	if (store_usage_own_step(t, st, "recording a ledger debit", err) == -1 ||
	    store_usage_clear_record(t, row->customer_id, clear_id, row->tokens, err) == -1)
		goto fail;
	if (db_commit(t->db) == -1)
		return mk_fail(err, 503, "state store unavailable");
	return 0;
fail:
	db_rollback(t->db);
	return -1;
}

int
store_usage_postpone(const struct settings *s, const struct store_usage *row, long delay_sec,
    struct mk_err *err)
{
	struct store_handle	*t STORE_HELD = NULL;
	sqlite3_stmt		*st;
	time_t			 now = time(NULL);

	if ((t = store_lock(s, err)) == NULL ||
	    (st = store_stmt(t, SQL_USAGE_POSTPONE, store_usage_bill_sql, err)) == NULL)
		return -1;
	store_bind_text(st, 1, row->key);
	sqlite3_bind_int64(st, 2, row->owner_token);
	sqlite3_bind_int64(st, 3, (sqlite3_int64)now + delay_sec);
	sqlite3_bind_int64(st, 4, (sqlite3_int64)now);
	return store_usage_own_step(t, st, "postponing an ingest", err);
}

/* Spread amount over customer_id's uncleared usage, oldest first, within the
 * caller's transaction.  Returns the tokens cleared (<= amount), or -1. */
static long
store_usage_fifo(struct store_handle *t, const char *customer_id, long amount,
    struct mk_err *err)
{
	enum { FIFO_BATCH = 64 };
	struct { char key[STORE_USAGE_KEY_MAX]; long open; } rows[FIFO_BATCH];
	sqlite3_stmt	*st;
	long		 applied = 0;
	int		 n, rc;

	while (applied < amount) {
		if ((st = store_stmt(t, SQL_USAGE_FIFO, store_usage_bill_sql, err)) == NULL)
			return -1;
		store_bind_text(st, 1, customer_id);
		for (n = 0; n < FIFO_BATCH && (rc = sqlite3_step(st)) == SQLITE_ROW; n++) {
			store_column_text(st, 0, rows[n].key, sizeof rows[n].key);
			rows[n].open = (long)sqlite3_column_int64(st, 1);
		}
		sqlite3_reset(st);
		if (n == 0)
			break;		/* a deduction clears only usage that exists */
		for (int i = 0; i < n && applied < amount; i++) {
			long take = rows[i].open < amount - applied ? rows[i].open : amount - applied;

			if ((st = store_stmt(t, SQL_USAGE_CLEAR_ROW, store_usage_bill_sql, err)) == NULL)
				return -1;
			store_bind_text(st, 1, rows[i].key);
			sqlite3_bind_int64(st, 2, take);
			sqlite3_bind_int64(st, 3, (sqlite3_int64)time(NULL));
			if (store_step_done(t, st, "clearing usage", err) == -1)
				return -1;
			applied += take;
		}
	}
	return applied;
}

int
store_usage_clear(const struct settings *s, const char *customer_id, const char *entry_id,
    long amount, long *applied, struct mk_err *err)
{
	struct store_handle	*t STORE_HELD = NULL;
	sqlite3_stmt		*st;
	long			 done = 0;
	int			 rc;

	if (applied != NULL)
		*applied = 0;
	if ((t = store_lock(s, err)) == NULL)
		return -1;
	if (db_begin(t->db) == -1)
		return mk_fail(err, 503, "state store unavailable");
	if ((rc = store_usage_clear_record(t, customer_id, entry_id, 0, err)) == -1)
		goto fail;
	if (rc == 0) {
		db_rollback(t->db);
		return 0;
	}
	if ((done = store_usage_fifo(t, customer_id, amount, err)) == -1 ||
	    (st = store_stmt(t, SQL_USAGE_CLEAR_SET, store_usage_bill_sql, err)) == NULL)
		goto fail;
	store_bind_text(st, 1, entry_id);
	sqlite3_bind_int64(st, 2, done);
	if (store_step_done(t, st, "recording a clear", err) == -1)
		goto fail;
	if (db_commit(t->db) == -1)
		return mk_fail(err, 503, "state store unavailable");
	if (applied != NULL)
		*applied = done;
	return 1;
fail:
	db_rollback(t->db);
	return -1;
}

int
store_usage_expire(const struct settings *s, time_t before, struct mk_err *err)
{
	struct store_handle	*t STORE_HELD = NULL;
	sqlite3_stmt		*st;
	char			 keys[256][STORE_USAGE_KEY_MAX], customers[256][128];
	long			 open[256];
	int			 n = 0, done, rc;

	if ((t = store_lock(s, err)) == NULL)
		return -1;
	if (db_begin(t->db) == -1)
		return mk_fail(err, 503, "state store unavailable");
	if ((st = store_stmt(t, SQL_USAGE_EXPIRE_HOLDS, store_usage_bill_sql, err)) == NULL)
		goto fail;
	sqlite3_bind_int64(st, 1, (sqlite3_int64)time(NULL));
	if (store_step_done(t, st, "releasing dead holds", err) == -1)
		goto fail;
	done = sqlite3_changes(t->db);
	if ((st = store_stmt(t, SQL_USAGE_STALE, store_usage_bill_sql, err)) == NULL)
		goto fail;
	sqlite3_bind_int64(st, 1, (sqlite3_int64)before);
	while (n < 256 && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		store_column_text(st, 0, keys[n], sizeof keys[n]);
		store_column_text(st, 1, customers[n], sizeof customers[n]);
		open[n] = (long)sqlite3_column_int64(st, 2);
		n++;
	}
	sqlite3_reset(st);
	for (int i = 0; i < n; i++) {
		char id[STORE_USAGE_KEY_MAX + 16];

		log_warn("usage %.12s…: %s: %ld tokens never seen deducted by the meter; "
		    "no longer counted as unsettled", keys[i], customers[i], open[i]);
		snprintf(id, sizeof id, "expired-%.64s", keys[i]);
		if ((st = store_stmt(t, SQL_USAGE_CLEAR_ROW, store_usage_bill_sql, err)) == NULL)
			goto fail;
		store_bind_text(st, 1, keys[i]);
		sqlite3_bind_int64(st, 2, open[i]);
		sqlite3_bind_int64(st, 3, (sqlite3_int64)time(NULL));
		if (store_step_done(t, st, "clearing stale usage", err) == -1 ||
		    store_usage_clear_record(t, customers[i], id, open[i], err) == -1)
			goto fail;
	}
	if (db_commit(t->db) == -1)
		return mk_fail(err, 503, "state store unavailable");
	return done + n;
fail:
	db_rollback(t->db);
	return -1;
}

int
store_usage_poll_due(const struct settings *s, long poll_sec, char (*ids)[128],
    long long *since_ms, int max, struct mk_err *err)
{
	struct store_handle	*t STORE_HELD = NULL;
	sqlite3_stmt		*st;
	time_t			 now = time(NULL);
	int			 n = 0, rc;

	if ((t = store_lock(s, err)) == NULL)
		return -1;
	if (db_begin(t->db) == -1)
		return mk_fail(err, 503, "state store unavailable");
	if ((st = store_stmt(t, SQL_USAGE_POLL, store_usage_bill_sql, err)) == NULL)
		goto fail;
	sqlite3_bind_int64(st, 1, (sqlite3_int64)now);
	sqlite3_bind_int(st, 2, max);
	while (n < max && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		store_column_text(st, 0, ids[n], sizeof ids[n]);
		since_ms[n] = sqlite3_column_int64(st, 1);
		n++;
	}
	sqlite3_reset(st);
	for (int i = 0; i < n; i++) {
		if ((st = store_stmt(t, SQL_USAGE_POLL_NEXT, store_usage_bill_sql, err)) == NULL)
			goto fail;
		store_bind_text(st, 1, ids[i]);
		sqlite3_bind_int64(st, 2, (sqlite3_int64)now + poll_sec);
		if (store_step_done(t, st, "scheduling a ledger poll", err) == -1)
			goto fail;
	}
	if (db_commit(t->db) == -1)
		return mk_fail(err, 503, "state store unavailable");
	return n;
fail:
	db_rollback(t->db);
	return -1;
}
