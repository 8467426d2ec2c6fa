/* store_keys.c: API keys (only their hashes) and the page's one-time claims on a new key. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "counters.h"
#include "db.h"
#include "log.h"
#include "settings.h"
#include "store.h"
#include "store_int.h"

#define KEY_COLUMNS "id, customer_id, key_hash, shown, source, created_at, revoked_at"
/* This module's statements, in the slots store_int.h numbers. */
static const char *const store_keys_sql[SQL_COUNT] = {
	[SQL_KEY_REVOKE] =
	    "UPDATE api_keys SET revoked_at = ?2 WHERE customer_id = ?1 AND revoked_at IS NULL",
	/* OR IGNORE: a second active key for the customer is refused by the
	 * partial unique index, and reported as no change */
	[SQL_KEY_INSERT] =
	    "INSERT OR IGNORE INTO api_keys (customer_id, key_hash, shown, source, created_at)"
	    " VALUES (?1, ?2, ?3, ?4, ?5)",
	[SQL_KEY_FIND] =
	    "SELECT " KEY_COLUMNS " FROM api_keys WHERE key_hash = ?1",
	[SQL_KEY_FORGET] =
	    "DELETE FROM api_keys WHERE id = ?1",
	[SQL_KEY_ACTIVE] =
	    "SELECT count(*) FROM api_keys WHERE customer_id = ?1 AND revoked_at IS NULL",
	[SQL_KEY_ANY] =
	    "SELECT count(*) FROM api_keys WHERE customer_id = ?1",
	[SQL_KEY_LIST] =
	    "SELECT " KEY_COLUMNS " FROM api_keys WHERE ?1 = '' OR customer_id = ?1"
	    " ORDER BY id",
	[SQL_CLAIM_ADD] =
	    "INSERT INTO key_claims (token_hash, session_id, email, created_at, expires_at)"
	    " VALUES (?1, ?2, lower(?3), ?4, ?5)",
	[SQL_CLAIM_TAKE] =
	    "UPDATE key_claims SET redeemed_at = ?3 WHERE token_hash = ?1"
	    " AND email = lower(?2) AND redeemed_at IS NULL AND expires_at > ?3",
	[SQL_CLAIM_GIVE_BACK] =
	    "UPDATE key_claims SET redeemed_at = NULL WHERE token_hash = ?1",
	/* a claim taken moments ago still counts: its key is being issued */
	[SQL_CLAIM_PENDING] =
	    "SELECT count(*) FROM key_claims WHERE email = lower(?1) AND"
	    " ((redeemed_at IS NULL AND expires_at > ?2) OR redeemed_at > ?3)",
	[SQL_CLAIM_PRUNE] =
	    "DELETE FROM key_claims WHERE expires_at < ?1",
};

/* ------------------------------------------------------------ API keys */


static void
store_key_read(sqlite3_stmt *st, struct store_key *out)
{
	memset(out, 0, sizeof *out);
	out->id = sqlite3_column_int64(st, 0);
	store_column_text(st, 1, out->customer_id, sizeof out->customer_id);
	store_column_text(st, 2, out->key_hash, sizeof out->key_hash);
	store_column_text(st, 3, out->shown, sizeof out->shown);
	store_column_text(st, 4, out->source, sizeof out->source);
	out->created_at = (time_t)sqlite3_column_int64(st, 5);
	out->revoked_at = (time_t)sqlite3_column_int64(st, 6);
}

int
store_key_issue(const struct settings *s, const char *customer_id, const char *key_hash,
    const char *shown, const char *source, int rotate, long long *id, struct mk_err *err)
{
	struct store_handle	*t STORE_HELD = NULL;
	sqlite3_stmt		*st;
	time_t			 now = time(NULL);
	int			 result = -1;

	if ((t = store_lock(s, err)) == NULL)
		return -1;
	if (db_begin(t->db) == -1)
		return mk_fail(err, 503, "state store unavailable");
	if (rotate) {
		if ((st = store_stmt(t, SQL_KEY_REVOKE, store_keys_sql, err)) == NULL)
			goto out;
		store_bind_text(st, 1, customer_id);
		sqlite3_bind_int64(st, 2, (sqlite3_int64)now);
		if (store_step_done(t, st, "revoking keys", err) == -1)
			goto out;
	}
	if ((st = store_stmt(t, SQL_KEY_INSERT, store_keys_sql, err)) == NULL)
		goto out;
	store_bind_text(st, 1, customer_id);
	store_bind_text(st, 2, key_hash);
	store_bind_text(st, 3, shown);
	store_bind_text(st, 4, source);
	sqlite3_bind_int64(st, 5, (sqlite3_int64)now);
	if (store_step_done(t, st, "recording a key", err) == -1)
		goto out;
	if (sqlite3_changes(t->db) == 0)
		result = STORE_KEY_EXISTS;
	else {
		if (id != NULL)
			*id = (long long)sqlite3_last_insert_rowid(t->db);
		result = STORE_KEY_ISSUED;
	}
out:
	if (result == -1) {
		db_rollback(t->db);
		return -1;
	}
	if (db_commit(t->db) == -1) {
		db_rollback(t->db);
		return mk_fail(err, 503, "state store unavailable");
	}
	if (rotate)
		counters_keys_changed(s);	/* workers drop cached lookups */
	return result;
}

int
store_key_find(const struct settings *s, const char *key_hash, struct store_key *out,
    struct mk_err *err)
{
	struct store_handle	*t STORE_HELD = NULL;
	sqlite3_stmt		*st;
	int			 rc;

	memset(out, 0, sizeof *out);
	if ((t = store_lock(s, err)) == NULL || (st = store_stmt(t, SQL_KEY_FIND, store_keys_sql, err)) == NULL)
		return -1;
	store_bind_text(st, 1, key_hash);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		store_key_read(st, out);
		rc = 1;
	} else if (rc == SQLITE_DONE)
		rc = 0;
	else {
		log_error("store: reading a key: %s", sqlite3_errmsg(t->db));
		rc = mk_fail(err, 503, "state store unavailable");
	}
	sqlite3_reset(st);
	return rc;
}

int
store_key_revoke(const struct settings *s, const char *customer_id, struct mk_err *err)
{
	struct store_handle	*t STORE_HELD = NULL;
	sqlite3_stmt		*st;

	if ((t = store_lock(s, err)) == NULL ||
	    (st = store_stmt(t, SQL_KEY_REVOKE, store_keys_sql, err)) == NULL)
		return -1;
	store_bind_text(st, 1, customer_id);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)time(NULL));
	if (store_step_done(t, st, "revoking keys", err) == -1)
		return -1;
	counters_keys_changed(s);	/* workers drop cached lookups */
	return sqlite3_changes(t->db);
}

int
store_key_forget(const struct settings *s, long long id, struct mk_err *err)
{
	struct store_handle	*t STORE_HELD = NULL;
	sqlite3_stmt		*st;

	if ((t = store_lock(s, err)) == NULL ||
	    (st = store_stmt(t, SQL_KEY_FORGET, store_keys_sql, err)) == NULL)
		return -1;
	sqlite3_bind_int64(st, 1, (sqlite3_int64)id);
	if (store_step_done(t, st, "forgetting a key", err) == -1)
		return -1;
	counters_keys_changed(s);	/* workers drop cached lookups */
	return 0;
}

int
store_key_active(const struct settings *s, const char *customer_id, int any,
    struct mk_err *err)
{
	struct store_handle	*t STORE_HELD = NULL;
	sqlite3_stmt		*st;
	long long		 n;

	if ((t = store_lock(s, err)) == NULL ||
	    (st = store_stmt(t, any ? SQL_KEY_ANY : SQL_KEY_ACTIVE, store_keys_sql, err)) == NULL)
		return -1;
	store_bind_text(st, 1, customer_id);
	if ((n = store_count(t, st, "reading keys", err)) == -1)
		return -1;
	return n > 0;
}

int
store_key_list(const struct settings *s, const char *customer_id,
    int (*cb)(const struct store_key *key, void *arg), void *arg, struct mk_err *err)
{
	struct store_handle	*t STORE_HELD = NULL;
	sqlite3_stmt		*st;
	struct store_key	 key;
	int			 rc, n = 0;

	if ((t = store_lock(s, err)) == NULL || (st = store_stmt(t, SQL_KEY_LIST, store_keys_sql, err)) == NULL)
		return -1;
	store_bind_text(st, 1, customer_id);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		store_key_read(st, &key);
		n++;
		if (cb(&key, arg) != 0)
			break;
	}
	sqlite3_reset(st);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
		log_error("store: listing keys: %s", sqlite3_errmsg(t->db));
		return mk_fail(err, 503, "state store unavailable");
	}
	return n;
}

/* ------------------------------------------------------------ key claims */

int
store_claim_add(const struct settings *s, const char *token_hash, const char *session_id,
    const char *email, time_t expires_at, struct mk_err *err)
{
	struct store_handle	*t STORE_HELD = NULL;
	sqlite3_stmt		*st;
	time_t			 now = time(NULL);

	if ((t = store_lock(s, err)) == NULL)
		return -1;
	if (t->claims++ % STORE_PRUNE_EVERY == 0 &&
	    (st = store_stmt(t, SQL_CLAIM_PRUNE, store_keys_sql, err)) != NULL) {
		sqlite3_bind_int64(st, 1, (sqlite3_int64)now - STORE_CLAIM_KEEP_SEC);
		(void)store_step_done(t, st, "pruning old claims", err);
	}
	if ((st = store_stmt(t, SQL_CLAIM_ADD, store_keys_sql, err)) == NULL)
		return -1;
	store_bind_text(st, 1, token_hash);
	store_bind_text(st, 2, session_id);
	store_bind_text(st, 3, email);
	sqlite3_bind_int64(st, 4, (sqlite3_int64)now);
	sqlite3_bind_int64(st, 5, (sqlite3_int64)expires_at);
	return store_step_done(t, st, "recording a claim", err);
}

int
store_claim_take(const struct settings *s, const char *token_hash, const char *email,
    struct mk_err *err)
{
	struct store_handle	*t STORE_HELD = NULL;
	sqlite3_stmt		*st;

	if ((t = store_lock(s, err)) == NULL ||
	    (st = store_stmt(t, SQL_CLAIM_TAKE, store_keys_sql, err)) == NULL)
		return -1;
	store_bind_text(st, 1, token_hash);
	store_bind_text(st, 2, email);
	sqlite3_bind_int64(st, 3, (sqlite3_int64)time(NULL));
	if (store_step_done(t, st, "redeeming a claim", err) == -1)
		return -1;
	return sqlite3_changes(t->db) > 0;
}

int
store_claim_give_back(const struct settings *s, const char *token_hash, struct mk_err *err)
{
	struct store_handle	*t STORE_HELD = NULL;
	sqlite3_stmt		*st;

	if ((t = store_lock(s, err)) == NULL ||
	    (st = store_stmt(t, SQL_CLAIM_GIVE_BACK, store_keys_sql, err)) == NULL)
		return -1;
	store_bind_text(st, 1, token_hash);
	return store_step_done(t, st, "giving back a claim", err);
}

long long
store_claim_count(const struct settings *s, const char *email, struct mk_err *err)
{
	struct store_handle	*t STORE_HELD = NULL;
	sqlite3_stmt		*st;

	if ((t = store_lock(s, err)) == NULL ||
	    (st = store_stmt(t, SQL_CLAIM_PENDING, store_keys_sql, err)) == NULL)
		return -1;
	store_bind_text(st, 1, email);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)time(NULL));
	sqlite3_bind_int64(st, 3, (sqlite3_int64)time(NULL) - STORE_CLAIM_ISSUE_SEC);
	return store_count(t, st, "reading claims", err);
}

int
store_claim_pending(const struct settings *s, const char *email, struct mk_err *err)
{
	long long	n = store_claim_count(s, email, err);

	return n == -1 ? -1 : n > 0;
}
