/* store_usage.c: the usage journal's rows (store_usage.h): holds admitted in one transaction, settled or released, looked up. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "db.h"
#include "clock.h"
#include "log.h"
#include "settings.h"
#include "store.h"
#include "store_int.h"
#include "store_usage.h"

#define USAGE_COLUMNS "key, customer_id, request_hash, state, hold, max_tokens, tokens," \
	" prompt_tokens, completion_tokens, cleared, model, answer, billed_by, created_ms," \
	" settled_ms, ingested_at, attempts"

/* This module's statements, in the slots store_int.h numbers. */
static const char *const store_usage_sql[SQL_COUNT] = {
	[SQL_USAGE_GET] =
	    "SELECT " USAGE_COLUMNS ", lease_until, owner_pid, owner_host FROM usage"
	    " WHERE key = ?1",
	[SQL_USAGE_SEQ] =
	    "SELECT COALESCE(MAX(seq), 0) FROM usage_clears WHERE customer_id = ?1",
	/* usage not seen deducted, and deductions seen after the caller's
	 * balance read (they may not be in that balance yet) */
	[SQL_USAGE_UNSETTLED] =
	    "SELECT (SELECT COALESCE(SUM(tokens - cleared), 0) FROM usage"
	    "  WHERE customer_id = ?1 AND state IN (1, 2, 3))"
	    " + (SELECT COALESCE(SUM(amount), 0) FROM usage_clears"
	    "  WHERE customer_id = ?1 AND seq > ?2)",
	[SQL_USAGE_HELD] =
	    "SELECT hold, owner_pid, lease_until, owner_host FROM usage"
	    " WHERE customer_id = ?1 AND state = 0 AND lease_until > ?2",
	[SQL_USAGE_UPSERT] =
	    "INSERT INTO usage (key, customer_id, request_hash, state, hold, max_tokens,"
	    " owner_token, lease_until, created_ms, updated_at, owner_pid, owner_host)"
	    " VALUES (?1, ?2, ?3, 0, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
	    " ON CONFLICT (key) DO UPDATE SET state = 0, hold = excluded.hold,"
	    " max_tokens = excluded.max_tokens, owner_token = excluded.owner_token,"
	    " lease_until = excluded.lease_until, created_ms = excluded.created_ms,"
	    " updated_at = excluded.updated_at, owner_pid = excluded.owner_pid,"
	    " owner_host = excluded.owner_host",
	[SQL_USAGE_SETTLE] =
	    "UPDATE usage SET state = 1, tokens = ?3, prompt_tokens = ?4, completion_tokens = ?5,"
	    " model = ?6, answer = ?7, settled_ms = ?8, next_attempt_at = 0,"
	    " owner_token = NULL, lease_until = NULL, updated_at = ?9"
	    " WHERE key = ?1 AND owner_token = ?2 AND state = 0",
	[SQL_USAGE_RELEASE] =
	    "UPDATE usage SET state = 10, owner_token = NULL, lease_until = NULL, updated_at = ?3"
	    " WHERE key = ?1 AND owner_token = ?2 AND state = 0",
	[SQL_USAGE_FIND] =
	    "SELECT " USAGE_COLUMNS ", lease_until FROM usage"
	    " WHERE key >= ?1 AND key < ?1 || 'g' AND customer_id = ?2 ORDER BY key LIMIT 1",
	[SQL_USAGE_PRUNE] =
	    "DELETE FROM usage WHERE (state = 10 OR (state IN (2, 3) AND cleared >= tokens))"
	    " AND updated_at < ?1",
	[SQL_USAGE_PRUNE_CLEARS] =
	    "DELETE FROM usage_clears WHERE at < ?1",
};

static const char *const store_usage_states[] = {
	[USAGE_HELD] = "held", [USAGE_SETTLED] = "settled", [USAGE_INGESTED] = "ingested",
	[USAGE_DEBITED] = "debited", [USAGE_RELEASED] = "released",
};

const char *
store_usage_state_name(enum store_usage_state state)
{
	if ((unsigned)state >= sizeof store_usage_states / sizeof store_usage_states[0] ||
	    store_usage_states[state] == NULL)
		return "unknown";
	return store_usage_states[state];
}

void
store_usage_free(struct store_usage *row)
{
	free(row->answer);
	row->answer = NULL;
}

/* Fill row from a USAGE_COLUMNS result (+ lease_until, owner_pid and owner_host,
 * when the caller asks and the statement has them).  0 / -1. */
static int
store_usage_read(sqlite3_stmt *st, struct store_usage *row, long long *lease,
    long long *owner_pid, char *owner_host)
{
	const unsigned char *answer;

	store_column_text(st, 0, row->key, sizeof row->key);
	store_column_text(st, 1, row->customer_id, sizeof row->customer_id);
	store_column_text(st, 2, row->request_hash, sizeof row->request_hash);
	row->state = (enum store_usage_state)sqlite3_column_int(st, 3);
	row->hold = (long)sqlite3_column_int64(st, 4);
	row->max_tokens = (long)sqlite3_column_int64(st, 5);
	row->tokens = (long)sqlite3_column_int64(st, 6);
	row->prompt_tokens = (long)sqlite3_column_int64(st, 7);
	row->completion_tokens = (long)sqlite3_column_int64(st, 8);
	row->cleared = (long)sqlite3_column_int64(st, 9);
	store_column_text(st, 10, row->model, sizeof row->model);
	free(row->answer);
	answer = sqlite3_column_text(st, 11);
	if ((row->answer = strdup(answer != NULL ? (const char *)answer : "")) == NULL)
		return -1;
	store_column_text(st, 12, row->billed_by, sizeof row->billed_by);
	row->created_ms = sqlite3_column_int64(st, 13);
	row->settled_ms = sqlite3_column_int64(st, 14);
	row->ingested_at = (time_t)sqlite3_column_int64(st, 15);
	row->attempts = sqlite3_column_int(st, 16);
	if (lease != NULL)
		*lease = sqlite3_column_int64(st, 17);
	if (owner_pid != NULL)
		*owner_pid = sqlite3_column_int64(st, 18);
	if (owner_host != NULL)
		store_column_text(st, 19, owner_host, STORE_USAGE_HOST_MAX);
	return 0;
}

/* Step a one-row select of a row into out: 1 found, 0 none, -1 error. */
static int
store_usage_fetch(struct store_handle *t, sqlite3_stmt *st, struct store_usage *out,
    long long *lease, long long *owner_pid, char *owner_host, struct mk_err *err)
{
	int rc = sqlite3_step(st);

	if (rc == SQLITE_ROW && store_usage_read(st, out, lease, owner_pid, owner_host) == -1) {
		sqlite3_reset(st);
		return mk_fail(err, 503, "out of memory");
	}
	sqlite3_reset(st);
	if (rc == SQLITE_ROW)
		return 1;
	if (rc == SQLITE_DONE)
		return 0;
	log_error("store: reading usage: %s", sqlite3_errmsg(t->db));
	return mk_fail(err, 503, "state store unavailable");
}

/* One integer of a query bound by the caller; -1 with err. */
static long long
store_usage_number(struct store_handle *t, sqlite3_stmt *st, const char *what,
    struct mk_err *err)
{
	return store_count(t, st, what, err);
}

long long
store_usage_clear_seq(const struct settings *s, const char *customer_id, struct mk_err *err)
{
	struct store_handle	*t STORE_HELD = NULL;
	sqlite3_stmt		*st;

	if ((t = store_lock(s, err)) == NULL ||
	    (st = store_stmt(t, SQL_USAGE_SEQ, store_usage_sql, err)) == NULL)
		return -1;
	store_bind_text(st, 1, customer_id);
	return store_usage_number(t, st, "reading the clear sequence", err);
}

/* The admission's figures for customer_id, within the caller's transaction.  0 / -1. */
static int
store_usage_figures(struct store_handle *t, const char *customer_id, long long clear_seq,
    time_t now, struct store_usage_room *room, struct mk_err *err)
{
	sqlite3_stmt	*st;
	long long	 n;
	int		 rc;

	if ((st = store_stmt(t, SQL_USAGE_UNSETTLED, store_usage_sql, err)) == NULL)
		return -1;
	store_bind_text(st, 1, customer_id);
	sqlite3_bind_int64(st, 2, clear_seq);
	if ((n = store_usage_number(t, st, "summing unsettled usage", err)) < 0)
		return -1;
	room->unsettled = (long)n;
	if ((st = store_stmt(t, SQL_USAGE_HELD, store_usage_sql, err)) == NULL)
		return -1;
	store_bind_text(st, 1, customer_id);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)now);
	room->held = 0;
	/* a hold counts while its request lives: a killed process's, not */
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		char host[STORE_USAGE_HOST_MAX];

		store_column_text(st, 3, host, sizeof host);
		if (store_send_claim_live(sqlite3_column_int64(st, 1), sqlite3_column_int64(st, 2),
		    host, now))
			room->held += (long)sqlite3_column_int64(st, 0);
	}
	sqlite3_reset(st);
	if (rc != SQLITE_DONE) {
		log_error("store: summing holds: %s", sqlite3_errmsg(t->db));
		return mk_fail(err, 503, "state store unavailable");
	}
	room->available = room->balance + room->overage_room - room->unsettled - room->held;
	return 0;
}

int
store_usage_admit(const struct settings *s, const char *key, const char *customer_id,
    const char *request_hash, long hold, long max_tokens, long balance, long overage_room,
    long long clear_seq, long lease_sec, struct store_usage *out,
    struct store_usage_room *room, struct mk_err *err)
{
	struct store_handle	*t STORE_HELD = NULL;
	struct store_usage_room	 fig = { .balance = balance, .overage_room = overage_room };
	sqlite3_stmt		*st;
	time_t			 now = time(NULL);
	long long		 lease = 0, owner_pid = 0;
	char			 owner_host[STORE_USAGE_HOST_MAX] = "";
	int			 found, result = -1;

	memset(out, 0, sizeof *out);
	if ((t = store_lock(s, err)) == NULL)
		return -1;
	if (t->claims++ % STORE_PRUNE_EVERY == 0) {
		if ((st = store_stmt(t, SQL_USAGE_PRUNE, store_usage_sql, err)) != NULL) {
			sqlite3_bind_int64(st, 1, (sqlite3_int64)now - STORE_USAGE_KEEP_SEC);
			(void)store_step_done(t, st, "pruning old usage", err);
		}
		if ((st = store_stmt(t, SQL_USAGE_PRUNE_CLEARS, store_usage_sql, err)) != NULL) {
			sqlite3_bind_int64(st, 1, (sqlite3_int64)now - STORE_USAGE_KEEP_SEC);
			(void)store_step_done(t, st, "pruning old clears", err);
		}
	}
	/* one write transaction: the judgement and the hold it admits are one */
	if (db_begin(t->db) == -1)
		return mk_fail(err, 503, "state store unavailable");
	if ((st = store_stmt(t, SQL_USAGE_GET, store_usage_sql, err)) == NULL)
		goto out;
	store_bind_text(st, 1, key);
	if ((found = store_usage_fetch(t, st, out, &lease, &owner_pid, owner_host, err)) == -1)
		goto out;
	if (found) {
		if (strcmp(out->customer_id, customer_id) != 0 ||
		    strcmp(out->request_hash, request_hash) != 0) {
			result = STORE_USAGE_MISMATCH;
			goto out;
		}
		if (out->state != USAGE_HELD && out->state != USAGE_RELEASED) {
			result = STORE_USAGE_FINAL;
			goto out;
		}
		if (out->state == USAGE_HELD &&
		    store_send_claim_live(owner_pid, lease, owner_host, now)) {
			result = STORE_USAGE_BUSY;
			goto out;
		}
		/* released, or a hold whose process died: judged afresh below */
	}
	if (store_usage_figures(t, customer_id, clear_seq, now, &fig, err) == -1)
		goto out;
	if (fig.available < hold) {
		result = STORE_USAGE_REFUSED;
		goto out;
	}
	if ((st = store_stmt(t, SQL_USAGE_UPSERT, store_usage_sql, err)) == NULL)
		goto out;
	store_usage_free(out);
	memset(out, 0, sizeof *out);
	out->owner_token = store_send_token();
	store_bind_text(st, 1, key);
	store_bind_text(st, 2, customer_id);
	store_bind_text(st, 3, request_hash);
	sqlite3_bind_int64(st, 4, hold);
	sqlite3_bind_int64(st, 5, max_tokens);
	sqlite3_bind_int64(st, 6, out->owner_token);
	sqlite3_bind_int64(st, 7, (sqlite3_int64)now + lease_sec);
	sqlite3_bind_int64(st, 8, clock_wall_ms());
	sqlite3_bind_int64(st, 9, (sqlite3_int64)now);
	sqlite3_bind_int64(st, 10, (sqlite3_int64)getpid());
	store_bind_text(st, 11, store_send_host());
	if (store_step_done(t, st, "recording a hold", err) == -1)
		goto out;
	snprintf(out->key, sizeof out->key, "%s", key);
	snprintf(out->customer_id, sizeof out->customer_id, "%s", customer_id);
	snprintf(out->request_hash, sizeof out->request_hash, "%s", request_hash);
	out->state = USAGE_HELD;
	out->hold = hold;
	out->max_tokens = max_tokens;
	result = STORE_USAGE_OWNED;
out:
	if (room != NULL)
		*room = fig;
	if (result == -1 || db_commit(t->db) == -1) {
		db_rollback(t->db);
		store_usage_free(out);
		return result == -1 ? -1 : mk_fail(err, 503, "state store unavailable");
	}
	if (result != STORE_USAGE_OWNED && result != STORE_USAGE_FINAL)
		store_usage_free(out);	/* only a replay hands an answer over */
	return result;
}

int
store_usage_own_step(struct store_handle *t, sqlite3_stmt *st, const char *what,
    struct mk_err *err)
{
	if (store_step_done(t, st, what, err) == -1)
		return -1;
	if (sqlite3_changes(t->db) == 0) {
		log_warn("store: %s: the row is no longer ours", what);
		return mk_fail(err, 409, "the request's hold was taken over");
	}
	return 0;
}

int
store_usage_settle(const struct settings *s, struct store_usage *row, struct mk_err *err)
{
	struct store_handle	*t STORE_HELD = NULL;
	sqlite3_stmt		*st;

	if ((t = store_lock(s, err)) == NULL ||
	    (st = store_stmt(t, SQL_USAGE_SETTLE, store_usage_sql, err)) == NULL)
		return -1;
	row->settled_ms = clock_wall_ms();
	store_bind_text(st, 1, row->key);
	sqlite3_bind_int64(st, 2, row->owner_token);
	sqlite3_bind_int64(st, 3, row->tokens);
	sqlite3_bind_int64(st, 4, row->prompt_tokens);
	sqlite3_bind_int64(st, 5, row->completion_tokens);
	store_bind_text(st, 6, row->model);
	store_bind_text(st, 7, row->answer);
	sqlite3_bind_int64(st, 8, row->settled_ms);
	sqlite3_bind_int64(st, 9, (sqlite3_int64)time(NULL));
	if (store_usage_own_step(t, st, "settling a hold", err) == -1)
		return -1;
	row->state = USAGE_SETTLED;
	row->owner_token = 0;
	return 0;
}

int
store_usage_release(const struct settings *s, const struct store_usage *row,
    struct mk_err *err)
{
	struct store_handle	*t STORE_HELD = NULL;
	sqlite3_stmt		*st;

	if ((t = store_lock(s, err)) == NULL ||
	    (st = store_stmt(t, SQL_USAGE_RELEASE, store_usage_sql, err)) == NULL)
		return -1;
	store_bind_text(st, 1, row->key);
	sqlite3_bind_int64(st, 2, row->owner_token);
	sqlite3_bind_int64(st, 3, (sqlite3_int64)time(NULL));
	return store_usage_own_step(t, st, "releasing a hold", err);
}

int
store_usage_get(const struct settings *s, const char *customer_id, const char *prefix,
    struct store_usage *out, struct mk_err *err)
{
	struct store_handle	*t STORE_HELD = NULL;
	sqlite3_stmt		*st;
	int			 rc;

	memset(out, 0, sizeof *out);
	if ((t = store_lock(s, err)) == NULL ||
	    (st = store_stmt(t, SQL_USAGE_FIND, store_usage_sql, err)) == NULL)
		return -1;
	store_bind_text(st, 1, prefix);
	store_bind_text(st, 2, customer_id);
	if ((rc = store_usage_fetch(t, st, out, NULL, NULL, NULL, err)) != 1)
		store_usage_free(out);
	return rc;
}
