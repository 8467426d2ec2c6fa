/* store.c: the state store's one SQLite handle per process, its schema and shared helpers (store_int.h). */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
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

#define STORE_ERR_MAX	256	/* bytes of a db_open() failure reason */

/*
 * The schema, one step per migration (db.h): append new tables (the send
 * journal, ...) as new entries; never edit an entry that has shipped.
 */
static const struct db_migration store_migrations[] = {
	/* 1: webhook deliveries seen.  claimed_at is the live claim (NULL when
	 * released), done_at when handling finished. */
	{ "CREATE TABLE webhook_events ("
	  " id TEXT PRIMARY KEY,"
	  " type TEXT NOT NULL,"
	  " received_at INTEGER NOT NULL,"
	  " claimed_at INTEGER,"
	  " done_at INTEGER);"
	  "CREATE INDEX webhook_events_received_at ON webhook_events(received_at);" },
	/* 2: the last low-balance notice per customer. */
	{ "CREATE TABLE low_balance ("
	  " customer_id TEXT PRIMARY KEY,"
	  " available TEXT NOT NULL,"
	  " threshold TEXT NOT NULL,"
	  " notified_at INTEGER NOT NULL,"
	  " cleared_at INTEGER);" },
	/* 3: the send journal (store.h).  owner_pid/owner_token/lease_until are
	 * the live claim, NULL when no worker holds the row. */
	{ "CREATE TABLE sends ("
	  " key TEXT PRIMARY KEY,"
	  " customer_id TEXT NOT NULL,"
	  " request_hash TEXT NOT NULL,"
	  " message TEXT NOT NULL,"
	  " state INTEGER NOT NULL,"
	  " status INTEGER NOT NULL DEFAULT 0,"
	  " reply TEXT NOT NULL DEFAULT '',"
	  " email_id TEXT NOT NULL DEFAULT '',"
	  " owner_pid INTEGER,"
	  " owner_token INTEGER,"
	  " lease_until INTEGER,"
	  " created_at INTEGER NOT NULL,"
	  " updated_at INTEGER NOT NULL);"
	  "CREATE INDEX sends_pending ON sends(state, updated_at);"
	  "CREATE INDEX sends_created ON sends(created_at);" },
	/* 4: which credit.balance_low event opened the current low period: only
	 * that event's handler emails the customer (one notice per crossing). */
	{ "ALTER TABLE low_balance ADD COLUMN notice_event TEXT;" },
	/* 5: customer API keys (only their SHA-256; one active key per customer),
	 * and the page's one-time claims on a new key.  (Rate limits live in
	 * counters.h: a write transaction per request is too dear.) */
	{ "CREATE TABLE api_keys ("
	  " id INTEGER PRIMARY KEY,"
	  " customer_id TEXT NOT NULL,"
	  " key_hash TEXT NOT NULL UNIQUE,"
	  " shown TEXT NOT NULL,"
	  " source TEXT NOT NULL,"
	  " created_at INTEGER NOT NULL,"
	  " revoked_at INTEGER);"
	  "CREATE UNIQUE INDEX api_keys_one_active ON api_keys(customer_id)"
	  " WHERE revoked_at IS NULL;"
	  "CREATE TABLE key_claims ("
	  " token_hash TEXT PRIMARY KEY,"
	  " session_id TEXT NOT NULL,"
	  " email TEXT NOT NULL,"
	  " created_at INTEGER NOT NULL,"
	  " expires_at INTEGER NOT NULL,"
	  " redeemed_at INTEGER);"
	  "CREATE INDEX key_claims_email ON key_claims(email, expires_at);" },
	/* 6: webhook ids keyed by the id itself (WITHOUT ROWID): each delivery
	 * writes two b-tree pages, not three (a rowid table plus the id index). */
	{ "CREATE TABLE webhook_events_by_id ("
	  " id TEXT PRIMARY KEY,"
	  " type TEXT NOT NULL,"
	  " received_at INTEGER NOT NULL,"
	  " claimed_at INTEGER,"
	  " done_at INTEGER) WITHOUT ROWID;"
	  "INSERT INTO webhook_events_by_id SELECT id, type, received_at, claimed_at, done_at"
	  " FROM webhook_events;"
	  "DROP TABLE webhook_events;"
	  "ALTER TABLE webhook_events_by_id RENAME TO webhook_events;"
	  "CREATE INDEX webhook_events_received_at ON webhook_events(received_at);" },
	/* 7: only rows still in progress are indexed for the resolver: a
	 * finished send leaves the index instead of moving to another part of
	 * it, and the index stays as small as the work in flight. */
	{ "DROP INDEX sends_pending;"
	  "CREATE INDEX sends_open ON sends(updated_at) WHERE state < 4;" },
	/* 8: truthful sends (billing.h).  Final states move to 10 and up, so new
	 * in-progress states fit below them; the background's due list; the
	 * ledger entries a send caused; when a provider call last ended unknown;
	 * the owner's host (leases across hosts); a customer's sends for GET
	 * /emails; and finished rows keep no body. */
	{ "UPDATE sends SET state = state + 6 WHERE state >= 4;"
	  "ALTER TABLE sends ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;"
	  "ALTER TABLE sends ADD COLUMN next_attempt_at INTEGER NOT NULL DEFAULT 0;"
	  "ALTER TABLE sends ADD COLUMN debit_entry TEXT;"
	  "ALTER TABLE sends ADD COLUMN refund_entry TEXT;"
	  "ALTER TABLE sends ADD COLUMN unsure_at INTEGER NOT NULL DEFAULT 0;"
	  "ALTER TABLE sends ADD COLUMN owner_host TEXT;"
	  "UPDATE sends SET debit_entry = '' WHERE state IN (10, 11);"
	  "UPDATE sends SET refund_entry = '' WHERE state = 11;"
	  "UPDATE sends SET next_attempt_at = updated_at WHERE state < 10;"
	  "UPDATE sends SET message = json_remove(message, '$.html', '$.text') WHERE state >= 10;"
	  "DROP INDEX sends_open;"
	  "CREATE INDEX sends_due ON sends(next_attempt_at) WHERE state < 10;"
	  "CREATE INDEX sends_customer ON sends(customer_id);" },
	/* 9: the holds journal and usage outbox of /api/generate
	 * (store_usage.h), and the meter deductions applied to it, numbered
	 * (seq) so an admission can count the ones after its balance read. */
	{ "CREATE TABLE usage ("
	  " key TEXT PRIMARY KEY,"
	  " customer_id TEXT NOT NULL,"
	  " request_hash TEXT NOT NULL,"
	  " state INTEGER NOT NULL,"
	  " hold INTEGER NOT NULL,"
	  " max_tokens INTEGER NOT NULL,"
	  " tokens INTEGER NOT NULL DEFAULT 0,"
	  " prompt_tokens INTEGER NOT NULL DEFAULT 0,"
	  " completion_tokens INTEGER NOT NULL DEFAULT 0,"
	  " cleared INTEGER NOT NULL DEFAULT 0,"
	  " model TEXT NOT NULL DEFAULT '',"
	  " answer TEXT,"
	  " billed_by TEXT NOT NULL DEFAULT '',"
	  " created_ms INTEGER NOT NULL,"
	  " settled_ms INTEGER NOT NULL DEFAULT 0,"
	  " ingested_at INTEGER NOT NULL DEFAULT 0,"
	  " attempts INTEGER NOT NULL DEFAULT 0,"
	  " next_attempt_at INTEGER NOT NULL DEFAULT 0,"
	  " owner_token INTEGER,"
	  " owner_pid INTEGER,"
	  " owner_host TEXT,"
	  " lease_until INTEGER,"
	  " updated_at INTEGER NOT NULL);"
	  "CREATE INDEX usage_customer ON usage(customer_id, state);"
	  "CREATE INDEX usage_outbox ON usage(next_attempt_at) WHERE state = 1;"
	  "CREATE TABLE usage_clears ("
	  " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
	  " entry_id TEXT NOT NULL UNIQUE,"
	  " customer_id TEXT NOT NULL,"
	  " amount INTEGER NOT NULL,"
	  " at INTEGER NOT NULL);"
	  "CREATE INDEX usage_clears_customer ON usage_clears(customer_id, seq);" },
};

/*
 * The process's handle: one connection shared by its request threads, used
 * under `lock`.  One connection rather than one per thread, because SQLite
 * drops a connection's page cache whenever another connection has written:
 * with a handle per thread every transaction re-read its pages and the
 * writers polled for each other's locks (sleeping in the busy handler),
 * which cost more CPU than the statements.  Transactions are short and never
 * span an upstream call, so holding the lock for a whole store_* call costs
 * the other threads little.  Recursive, so a module's function may call
 * another's while it holds the handle.
 */
static struct store_handle	store_handle;
static pthread_once_t		store_once = PTHREAD_ONCE_INIT;
static int			store_lock_ok;

static void
store_handle_close(struct store_handle *h)
{
	size_t	i;

	for (i = 0; i < SQL_COUNT; i++) {
		sqlite3_finalize(h->stmt[i]);
		h->stmt[i] = NULL;
	}
	sqlite3_close_v2(h->db);
	h->db = NULL;
	free(h->path);
	h->path = NULL;
}

static void
store_close_at_exit(void)
{
	store_finish_stop();
	store_close();
}

static void
store_init_once(void)
{
	pthread_mutexattr_t	attr;

	if (pthread_mutexattr_init(&attr) != 0)
		return;
	if (pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_RECURSIVE) == 0 &&
	    pthread_mutex_init(&store_handle.lock, &attr) == 0)
		store_lock_ok = 1;
	pthread_mutexattr_destroy(&attr);
	/* the handle outlives the request threads: close it at exit, so
	 * nothing is left open for valgrind or LeakSanitizer */
	if (store_lock_ok)
		atexit(store_close_at_exit);
}

/*
 * Take the process's handle, opening it (and migrating) on first use or
 * when MAILKIT_DB changed.  Returns it locked, or NULL with err (unlocked).
 * The caller releases it with store_unlock(), or declares its pointer
 * STORE_HELD.
 */
struct store_handle *
store_lock(const struct settings *s, struct mk_err *err)
{
	struct store_handle	*h = &store_handle;
	char			 why[STORE_ERR_MAX];

	pthread_once(&store_once, store_init_once);
	if (!store_lock_ok) {
		mk_fail(err, 500, "state store unavailable");
		return NULL;
	}
	/* a bounded wait, here and in SQLite's busy handler: when another
	 * process holds the write lock, waiting requests fail side by side */
	db_wait_start(s->store_busy_ms > 0 ? s->store_busy_ms : DB_BUSY_TIMEOUT_MS);
	if (db_wait_lock(&h->lock) == -1) {
		log_warn("store: the database stayed busy for %ld ms", s->store_busy_ms);
		mk_fail(err, 503, "state store busy");
		return NULL;
	}
	if (h->db != NULL && strcmp(h->path, s->db_path != NULL ? s->db_path : "") == 0)
		return h;

	store_handle_close(h);
	if (s->db_path == NULL || *s->db_path == '\0') {
		log_error("store: MAILKIT_DB is not set");
		mk_fail(err, 503, "state store unavailable");
		goto fail;
	}
	if ((h->path = strdup(s->db_path)) == NULL) {
		mk_fail(err, 503, "out of memory");
		goto fail;
	}
	h->db = db_open(s->db_path, store_migrations,
	    sizeof(store_migrations) / sizeof(store_migrations[0]), why, sizeof(why));
	if (h->db == NULL) {
		log_error("store: %s", why);
		free(h->path);
		h->path = NULL;
		mk_fail(err, 503, "state store unavailable");
		goto fail;
	}
	return h;
 fail:
	pthread_mutex_unlock(&h->lock);
	return NULL;
}

void
store_unlock(struct store_handle *h)
{
	if (h != NULL)
		pthread_mutex_unlock(&h->lock);
}

void
store_unlock_at_exit(struct store_handle **hp)
{
	store_unlock(*hp);
}

sqlite3_stmt *
store_stmt(struct store_handle *t, enum store_sql which, const char *const *sql,
    struct mk_err *err)
{
	sqlite3_stmt	*st;

	if ((st = db_stmt(t->db, &t->stmt[which], sql[which])) == NULL)
		mk_fail(err, 503, "state store unavailable");
	return st;
}

/* Step a statement that returns no rows; -1 with err on failure. */
int
store_step_done(struct store_handle *t, sqlite3_stmt *st, const char *what,
    struct mk_err *err)
{
	int	rc;

	rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc != SQLITE_DONE) {
		log_error("store: %s: %s", what, sqlite3_errmsg(t->db));
		return mk_fail(err, 503, "state store unavailable");
	}
	return 0;
}

int
store_bind_text(sqlite3_stmt *st, int i, const char *v)
{
	return sqlite3_bind_text(st, i, v != NULL ? v : "", -1, SQLITE_TRANSIENT);
}

int
store_open(const struct settings *s, struct mk_err *err)
{
	struct store_handle *h;

	if ((h = store_lock(s, err)) == NULL)
		return -1;
	store_unlock(h);
	return 0;
}

int
store_check(const struct settings *s, char *errbuf, size_t errlen)
{
	struct mk_err err;

	if (store_open(s, &err) == -1) {
		snprintf(errbuf, errlen, "MAILKIT_DB %s cannot be opened: %s (see the log)",
		    s->db_path != NULL ? s->db_path : "", err.msg);
		return -1;
	}
	store_close();
	return 0;
}

void
store_close(void)
{
	pthread_once(&store_once, store_init_once);
	if (!store_lock_ok)
		return;
	pthread_mutex_lock(&store_handle.lock);
	store_handle_close(&store_handle);
	pthread_mutex_unlock(&store_handle.lock);
}

/* Copy a text column into dst[dstlen]; "" for NULL. */
void
store_column_text(sqlite3_stmt *st, int col, char *dst, size_t dstlen)
{
	const unsigned char	*v = sqlite3_column_text(st, col);
	size_t			 n = v != NULL ? strlen((const char *)v) : 0;

	if (n >= dstlen)
		n = dstlen - 1;
	if (n > 0)
		memcpy(dst, v, n);
	dst[n] = '\0';
}

/* One integer from a one-row statement already bound; -1 with err on failure. */
long long
store_count(struct store_handle *t, sqlite3_stmt *st, const char *what, struct mk_err *err)
{
	long long	n;
	int		rc = sqlite3_step(st);

	if (rc == SQLITE_ROW)
		n = sqlite3_column_int64(st, 0);
	else {
		log_error("store: %s: %s", what, sqlite3_errmsg(t->db));
		n = mk_fail(err, 503, "state store unavailable");
	}
	sqlite3_reset(st);
	return n;
}
