/* store.c: MailKit's own tables over db.h, one SQLite handle per thread. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "counters.h"
#include "db.h"
#include "log.h"
#include "settings.h"
#include "store.h"

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
};

/* Every statement, prepared once per handle (db_stmt) and kept in a slot. */
enum store_sql {
	SQL_CLAIM,
	SQL_CLAIM_STATE,
	SQL_PRUNE,
	SQL_DONE,
	SQL_RELEASE,
	SQL_LOW_SET,
	SQL_LOW_GET,
	SQL_LOW_OWNER,
	SQL_LOW_CLEAR,
	SQL_SEND_GET,
	SQL_SEND_INSERT,
	SQL_SEND_TAKE,
	SQL_SEND_ADVANCE,
	SQL_SEND_RELEASE,
	SQL_SEND_PENDING,
	SQL_SEND_LIST,
	SQL_SEND_PRUNE,
	SQL_KEY_REVOKE,
	SQL_KEY_INSERT,
	SQL_KEY_FIND,
	SQL_KEY_FORGET,
	SQL_KEY_ACTIVE,
	SQL_KEY_ANY,
	SQL_KEY_LIST,
	SQL_CLAIM_ADD,
	SQL_CLAIM_TAKE,
	SQL_CLAIM_GIVE_BACK,
	SQL_CLAIM_PENDING,
	SQL_CLAIM_PRUNE,
	SQL_COUNT
};

static const char *const store_sql_text[SQL_COUNT] = {
	/* New id, or a claim left behind by a dead worker (lease expired). */
	[SQL_CLAIM] =
	    "INSERT INTO webhook_events (id, type, received_at, claimed_at)"
	    " VALUES (?1, ?2, ?3, ?3)"
	    " ON CONFLICT (id) DO UPDATE SET claimed_at = excluded.claimed_at"
	    " WHERE webhook_events.done_at IS NULL AND"
	    " (webhook_events.claimed_at IS NULL OR webhook_events.claimed_at <= ?4)",
	[SQL_CLAIM_STATE] =
	    "SELECT done_at IS NOT NULL FROM webhook_events WHERE id = ?1",
	[SQL_PRUNE] =
	    "DELETE FROM webhook_events WHERE received_at < ?1",
	[SQL_DONE] =
	    "UPDATE webhook_events SET done_at = ?2, claimed_at = NULL WHERE id = ?1",
	[SQL_RELEASE] =
	    "UPDATE webhook_events SET claimed_at = NULL"
	    " WHERE id = ?1 AND done_at IS NULL",
	/* Newer than the last notice and than the last clear (a clear wins ties). */
	[SQL_LOW_SET] =
	    "INSERT INTO low_balance (customer_id, available, threshold, notified_at,"
	    " notice_event) VALUES (?1, ?2, ?3, ?4, ?5)"
	    " ON CONFLICT (customer_id) DO UPDATE SET available = excluded.available,"
	    " threshold = excluded.threshold, notified_at = excluded.notified_at,"
	    " notice_event = CASE WHEN low_balance.cleared_at IS NULL"
	    "  THEN coalesce(low_balance.notice_event, excluded.notice_event)"
	    "  ELSE excluded.notice_event END,"
	    " cleared_at = NULL"
	    " WHERE excluded.notified_at >= low_balance.notified_at AND"
	    " (low_balance.cleared_at IS NULL OR excluded.notified_at > low_balance.cleared_at)",
	[SQL_LOW_OWNER] =
	    "SELECT notice_event = ?2 FROM low_balance"
	    " WHERE customer_id = ?1 AND cleared_at IS NULL",
	[SQL_LOW_GET] =
	    "SELECT available, threshold, notified_at FROM low_balance"
	    " WHERE customer_id = ?1 AND cleared_at IS NULL",
	[SQL_LOW_CLEAR] =
	    "UPDATE low_balance SET cleared_at = ?2"
	    " WHERE customer_id = ?1 AND cleared_at IS NULL AND notified_at <= ?2",
#define SEND_COLUMNS "key, customer_id, request_hash, state, status, reply, email_id," \
	" message, created_at, updated_at, owner_pid, lease_until"
	[SQL_SEND_GET] =
	    "SELECT " SEND_COLUMNS " FROM sends WHERE key = ?1",
	[SQL_SEND_INSERT] =
	    "INSERT INTO sends (key, customer_id, request_hash, message, state, owner_pid,"
	    " owner_token, lease_until, created_at, updated_at)"
	    " VALUES (?1, ?2, ?3, ?4, 0, ?5, ?6, ?7, ?8, ?8) ON CONFLICT (key) DO NOTHING",
	[SQL_SEND_TAKE] =
	    "UPDATE sends SET owner_pid = ?2, owner_token = ?3, lease_until = ?4, updated_at = ?5"
	    " WHERE key = ?1",
	/* only the owner may move a row; a final state releases it */
	[SQL_SEND_ADVANCE] =
	    "UPDATE sends SET state = ?3,"
	    " status = CASE WHEN ?4 = 0 THEN status ELSE ?4 END,"
	    " reply = coalesce(?5, reply), email_id = coalesce(?6, email_id),"
	    " lease_until = CASE WHEN ?3 >= 4 THEN NULL ELSE ?7 END,"
	    " owner_pid = CASE WHEN ?3 >= 4 THEN NULL ELSE owner_pid END,"
	    " owner_token = CASE WHEN ?3 >= 4 THEN NULL ELSE owner_token END,"
	    " updated_at = ?8"
	    " WHERE key = ?1 AND owner_token = ?2",
	[SQL_SEND_RELEASE] =
	    "UPDATE sends SET status = ?3, reply = ?4, owner_pid = NULL, owner_token = NULL,"
	    " lease_until = NULL, updated_at = ?5 WHERE key = ?1 AND owner_token = ?2",
	[SQL_SEND_PENDING] =
	    "SELECT " SEND_COLUMNS " FROM sends WHERE state < 4 AND updated_at < ?1"
	    " ORDER BY updated_at",
	[SQL_SEND_LIST] =
	    "SELECT " SEND_COLUMNS " FROM sends WHERE created_at >= ?1 ORDER BY created_at",
	[SQL_SEND_PRUNE] =
	    "DELETE FROM sends WHERE state >= 4 AND updated_at < ?1",
	[SQL_KEY_REVOKE] =
	    "UPDATE api_keys SET revoked_at = ?2 WHERE customer_id = ?1 AND revoked_at IS NULL",
	/* OR IGNORE: a second active key for the customer is refused by the
	 * partial unique index, and reported as no change */
	[SQL_KEY_INSERT] =
	    "INSERT OR IGNORE INTO api_keys (customer_id, key_hash, shown, source, created_at)"
	    " VALUES (?1, ?2, ?3, ?4, ?5)",
#define KEY_COLUMNS "id, customer_id, key_hash, shown, source, created_at, revoked_at"
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

/*
 * The process's handle: one connection shared by its request threads, used
 * under `lock`.  One connection rather than one per thread, because SQLite
 * drops a connection's page cache whenever another connection has written:
 * with a handle per thread every transaction re-read its pages and the
 * writers polled for each other's locks (sleeping in the busy handler),
 * which cost more CPU than the statements.  Transactions are short and never
 * span an upstream call, so holding the lock for a whole store_* call costs
 * the other threads little.  Recursive: the admin tool's listing callbacks
 * call store functions while a listing holds it.
 */
struct store_handle {
	pthread_mutex_t	 lock;
	sqlite3		*db;
	char		*path;
	unsigned	 claims;	/* for STORE_PRUNE_EVERY */
	sqlite3_stmt	*stmt[SQL_COUNT];
};

static struct store_handle	store_handle;
static pthread_once_t		store_once = PTHREAD_ONCE_INIT;
static int			store_lock_ok;

static void	store_finish_stop(void);

/* Declares a handle pointer that store_unlock_at_exit() releases on every
 * return path of the function that holds it. */
#define STORE_HELD	__attribute__((cleanup(store_unlock_at_exit)))

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
static struct store_handle *
store_lock(const struct settings *s, struct mk_err *err)
{
	struct store_handle	*h = &store_handle;
	char			 why[STORE_ERR_MAX];

	pthread_once(&store_once, store_init_once);
	if (!store_lock_ok) {
		mk_fail(err, 500, "state store unavailable");
		return NULL;
	}
	pthread_mutex_lock(&h->lock);
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

static void
store_unlock(struct store_handle *h)
{
	if (h != NULL)
		pthread_mutex_unlock(&h->lock);
}

static void
store_unlock_at_exit(struct store_handle **hp)
{
	store_unlock(*hp);
}

/* The cached statement for `which`, reset and unbound. */
static sqlite3_stmt *
store_stmt(struct store_handle *t, enum store_sql which, struct mk_err *err)
{
	sqlite3_stmt	*st;

	if ((st = db_stmt(t->db, &t->stmt[which], store_sql_text[which])) == NULL)
		mk_fail(err, 503, "state store unavailable");
	return st;
}

/* Step a statement that returns no rows; -1 with err on failure. */
static int
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

static int
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

/* Drop ids past STORE_WEBHOOK_KEEP_SEC; failure only logs (it is housekeeping). */
static void
store_webhook_prune(struct store_handle *t, time_t now)
{
	sqlite3_stmt	*st;
	struct mk_err	 ignored;

	if ((st = store_stmt(t, SQL_PRUNE, &ignored)) == NULL)
		return;
	sqlite3_bind_int64(st, 1, (sqlite3_int64)now - STORE_WEBHOOK_KEEP_SEC);
	(void)store_step_done(t, st, "pruning webhook ids", &ignored);
}

int
store_webhook_claim(const struct settings *s, const char *id, const char *type,
    struct mk_err *err)
{
	struct store_handle	*t STORE_HELD = NULL;
	sqlite3_stmt		*st;
	time_t			 now = time(NULL);
	int			 rc;

	if (id == NULL || *id == '\0' || strlen(id) >= STORE_ID_MAX)
		return mk_fail(err, 400, "invalid webhook id");
	if ((t = store_lock(s, err)) == NULL)
		return -1;
	if (t->claims++ % STORE_PRUNE_EVERY == 0)
		store_webhook_prune(t, now);

	if ((st = store_stmt(t, SQL_CLAIM, err)) == NULL)
		return -1;
	store_bind_text(st, 1, id);
	store_bind_text(st, 2, type);
	sqlite3_bind_int64(st, 3, (sqlite3_int64)now);
	sqlite3_bind_int64(st, 4, (sqlite3_int64)now - STORE_WEBHOOK_LEASE_SEC);
	if (store_step_done(t, st, "claiming a webhook id", err) == -1)
		return -1;
	if (sqlite3_changes(t->db) > 0)
		return STORE_CLAIM_NEW;

	/* Someone has it: finished, or still working on it? */
	if ((st = store_stmt(t, SQL_CLAIM_STATE, err)) == NULL)
		return -1;
	store_bind_text(st, 1, id);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		rc = sqlite3_column_int(st, 0) ? STORE_CLAIM_SEEN : STORE_CLAIM_BUSY;
	else if (rc == SQLITE_DONE)
		rc = STORE_CLAIM_BUSY;	/* pruned in between: let the sender retry */
	else {
		log_error("store: reading a webhook claim: %s", sqlite3_errmsg(t->db));
		rc = mk_fail(err, 503, "state store unavailable");
	}
	sqlite3_reset(st);
	return rc;
}

/* SQL_DONE / SQL_RELEASE on id. */
static int
store_webhook_update(const struct settings *s, enum store_sql which, const char *id,
    const char *what, struct mk_err *err)
{
	struct store_handle	*t STORE_HELD = NULL;
	sqlite3_stmt		*st;

	if ((t = store_lock(s, err)) == NULL ||
	    (st = store_stmt(t, which, err)) == NULL)
		return -1;
	store_bind_text(st, 1, id);
	if (which == SQL_DONE)
		sqlite3_bind_int64(st, 2, (sqlite3_int64)time(NULL));
	return store_step_done(t, st, what, err);
}

int
store_webhook_done(const struct settings *s, const char *id, struct mk_err *err)
{
	return store_webhook_update(s, SQL_DONE, id, "finishing a webhook claim", err);
}

int
store_webhook_release(const struct settings *s, const char *id, struct mk_err *err)
{
	return store_webhook_update(s, SQL_RELEASE, id, "releasing a webhook claim", err);
}

int
store_low_balance_set(const struct settings *s, const char *customer_id,
    const char *available, const char *threshold, time_t at, const char *event_id,
    struct mk_err *err)
{
	struct store_handle	*t STORE_HELD = NULL;
	sqlite3_stmt		*st;

	if ((t = store_lock(s, err)) == NULL ||
	    (st = store_stmt(t, SQL_LOW_SET, err)) == NULL)
		return -1;
	store_bind_text(st, 1, customer_id);
	store_bind_text(st, 2, available);
	store_bind_text(st, 3, threshold);
	sqlite3_bind_int64(st, 4, (sqlite3_int64)(at != 0 ? at : time(NULL)));
	store_bind_text(st, 5, event_id);
	return store_step_done(t, st, "recording a low balance", err);
}

int
store_low_balance_owner(const struct settings *s, const char *customer_id,
    const char *event_id, struct mk_err *err)
{
	struct store_handle	*t STORE_HELD = NULL;
	sqlite3_stmt		*st;
	int			 rc;

	if ((t = store_lock(s, err)) == NULL ||
	    (st = store_stmt(t, SQL_LOW_OWNER, err)) == NULL)
		return -1;
	store_bind_text(st, 1, customer_id);
	store_bind_text(st, 2, event_id);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		rc = sqlite3_column_int(st, 0) == 1;
	else if (rc == SQLITE_DONE)
		rc = 0;
	else {
		log_error("store: reading a low-balance owner: %s", sqlite3_errmsg(t->db));
		rc = mk_fail(err, 503, "state store unavailable");
	}
	sqlite3_reset(st);
	return rc;
}

/* Copy a text column into dst[dstlen]; "" for NULL. */
static void
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

int
store_low_balance_get(const struct settings *s, const char *customer_id,
    struct store_low_balance *out, struct mk_err *err)
{
	struct store_handle	*t STORE_HELD = NULL;
	sqlite3_stmt		*st;
	int			 rc;

	memset(out, 0, sizeof(*out));
	if ((t = store_lock(s, err)) == NULL ||
	    (st = store_stmt(t, SQL_LOW_GET, err)) == NULL)
		return -1;
	store_bind_text(st, 1, customer_id);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		store_column_text(st, 0, out->available, sizeof(out->available));
		store_column_text(st, 1, out->threshold, sizeof(out->threshold));
		out->notified_at = (time_t)sqlite3_column_int64(st, 2);
		rc = 1;
	} else if (rc == SQLITE_DONE)
		rc = 0;
	else {
		log_error("store: reading a low balance: %s", sqlite3_errmsg(t->db));
		rc = mk_fail(err, 503, "state store unavailable");
	}
	sqlite3_reset(st);
	return rc;
}

int
store_low_balance_clear(const struct settings *s, const char *customer_id, time_t at,
    struct mk_err *err)
{
	struct store_handle	*t STORE_HELD = NULL;
	sqlite3_stmt		*st;

	if ((t = store_lock(s, err)) == NULL ||
	    (st = store_stmt(t, SQL_LOW_CLEAR, err)) == NULL)
		return -1;
	store_bind_text(st, 1, customer_id);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)(at != 0 ? at : time(NULL)));
	return store_step_done(t, st, "clearing a low balance", err);
}

/* ------------------------------------------------------------ send journal */

_Static_assert(SEND_SENT == 4 && SEND_REFUNDED == 5 && SEND_REJECTED == 6,
    "the SQL above treats states >= 4 as final");

static const char *const store_send_states[] = {
	[SEND_NEW] = "new", [SEND_DEBITED] = "debited", [SEND_SENDING] = "sending",
	[SEND_REFUNDING] = "refunding", [SEND_SENT] = "sent", [SEND_REFUNDED] = "refunded",
	[SEND_REJECTED] = "rejected",
};

const char *
store_send_state_name(enum store_send_state state)
{
	if ((unsigned)state >= sizeof store_send_states / sizeof store_send_states[0])
		return "unknown";
	return store_send_states[state];
}

void
store_send_free(struct store_send *row)
{
	free(row->message);
	row->message = NULL;
}

/* Fill row from a SEND_COLUMNS result; *owner_pid and *lease get the claim. */
static int
store_send_read(sqlite3_stmt *st, struct store_send *row, long long *owner_pid,
    long long *lease)
{
	const unsigned char *msg;

	store_column_text(st, 0, row->key, sizeof row->key);
	store_column_text(st, 1, row->customer_id, sizeof row->customer_id);
	store_column_text(st, 2, row->request_hash, sizeof row->request_hash);
	row->state = (enum store_send_state)sqlite3_column_int(st, 3);
	row->status = sqlite3_column_int(st, 4);
	store_column_text(st, 5, row->reply, sizeof row->reply);
	store_column_text(st, 6, row->email_id, sizeof row->email_id);
	free(row->message);
	msg = sqlite3_column_text(st, 7);
	if ((row->message = strdup(msg != NULL ? (const char *)msg : "")) == NULL)
		return -1;
	row->created_at = (time_t)sqlite3_column_int64(st, 8);
	row->updated_at = (time_t)sqlite3_column_int64(st, 9);
	if (owner_pid != NULL)
		*owner_pid = sqlite3_column_type(st, 10) == SQLITE_NULL ? 0 :
		    sqlite3_column_int64(st, 10);
	if (lease != NULL)
		*lease = sqlite3_column_int64(st, 11);
	return 0;
}

/* A claim is live while its lease runs and its process exists. */
static int
store_send_claim_live(long long owner_pid, long long lease, time_t now)
{
	if (owner_pid <= 0 || lease <= (long long)now)
		return 0;
	return kill((pid_t)owner_pid, 0) == 0 || errno == EPERM;
}

static long long
store_send_token(void)
{
	static _Atomic unsigned long long counter;
	unsigned long long c = ++counter;

	/* unique per begin within a host: pid in the high bits, a counter below */
	return (long long)(((unsigned long long)getpid() << 32 | (c & 0xffffffffULL)) &
	    0x7fffffffffffffffULL);
}

/*
 * Insert key as a new SEND_NEW row owned by this process.  Returns 1 when
 * inserted (out filled), 0 when the key exists already, -1 on failure.
 */
static int
store_send_insert(struct store_handle *t, const char *key, const char *customer_id,
    const char *request_hash, const char *message, time_t now, struct store_send *out,
    struct mk_err *err)
{
	sqlite3_stmt	*st;

	if ((st = store_stmt(t, SQL_SEND_INSERT, err)) == NULL)
		return -1;
	out->owner_token = store_send_token();
	store_bind_text(st, 1, key);
	store_bind_text(st, 2, customer_id);
	store_bind_text(st, 3, request_hash);
	store_bind_text(st, 4, message);
	sqlite3_bind_int64(st, 5, (sqlite3_int64)getpid());
	sqlite3_bind_int64(st, 6, out->owner_token);
	sqlite3_bind_int64(st, 7, (sqlite3_int64)now + STORE_SEND_LEASE_SEC);
	sqlite3_bind_int64(st, 8, (sqlite3_int64)now);
	if (store_step_done(t, st, "recording a send", err) == -1)
		return -1;
	if (sqlite3_changes(t->db) == 0)
		return 0;
	snprintf(out->key, sizeof out->key, "%s", key);
	snprintf(out->customer_id, sizeof out->customer_id, "%s", customer_id);
	snprintf(out->request_hash, sizeof out->request_hash, "%s", request_hash);
	if ((out->message = strdup(message)) == NULL) {
		mk_fail(err, 503, "out of memory");
		return -1;
	}
	out->state = SEND_NEW;
	out->created_at = out->updated_at = now;
	out->inserted = 1;
	return 1;
}

int
store_send_begin(const struct settings *s, const char *key, const char *customer_id,
    const char *request_hash, const char *message, struct store_send *out,
    struct mk_err *err)
{
	struct store_handle	*t STORE_HELD = NULL;
	sqlite3_stmt		*st;
	time_t			 now = time(NULL);
	long long		 owner_pid = 0, lease = 0;
	int			 rc, result = -1;

	memset(out, 0, sizeof *out);
	if ((t = store_lock(s, err)) == NULL)
		return -1;
	if (t->claims++ % STORE_PRUNE_EVERY == 0 &&
	    (st = store_stmt(t, SQL_SEND_PRUNE, err)) != NULL) {
		sqlite3_bind_int64(st, 1, (sqlite3_int64)now - STORE_SEND_KEEP_SEC);
		(void)store_step_done(t, st, "pruning old sends", err);
	}
	/* The common case, a new key, in one statement without a transaction;
	 * the insert does nothing when the key exists, and then the row is
	 * read and judged in one below. */
	if (message != NULL) {
		if ((rc = store_send_insert(t, key, customer_id, request_hash, message, now,
		    out, err)) == -1) {
			store_send_free(out);
			return -1;
		}
		if (rc == 1)
			return STORE_SEND_OWNED;
	}
	if (db_begin(t->db) == -1)
		return mk_fail(err, 503, "state store unavailable");
	if ((st = store_stmt(t, SQL_SEND_GET, err)) == NULL)
		goto out;
	store_bind_text(st, 1, key);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW && store_send_read(st, out, &owner_pid, &lease) == -1) {
		sqlite3_reset(st);
		mk_fail(err, 503, "out of memory");
		goto out;
	}
	sqlite3_reset(st);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
		log_error("store: reading a send: %s", sqlite3_errmsg(t->db));
		mk_fail(err, 503, "state store unavailable");
		goto out;
	}
	out->owner_token = store_send_token();
	if (rc == SQLITE_DONE && message == NULL) {
		mk_fail(err, 404, "no such send");
		goto out;
	}
	if (rc == SQLITE_DONE) {
		/* pruned since the insert above found it */
		if ((rc = store_send_insert(t, key, customer_id, request_hash, message, now,
		    out, err)) != 1) {
			if (rc == 0)	/* cannot be: the write lock is ours */
				mk_fail(err, 503, "state store unavailable");
			goto out;
		}
		result = STORE_SEND_OWNED;
	} else if (strcmp(out->customer_id, customer_id) != 0 ||
	    (request_hash != NULL && strcmp(out->request_hash, request_hash) != 0))
		result = STORE_SEND_MISMATCH;
	else if (out->state >= SEND_SENT)
		result = STORE_SEND_FINAL;
	else if (store_send_claim_live(owner_pid, lease, now))
		result = STORE_SEND_BUSY;
	else {
		if ((st = store_stmt(t, SQL_SEND_TAKE, err)) == NULL)
			goto out;
		store_bind_text(st, 1, key);
		sqlite3_bind_int64(st, 2, (sqlite3_int64)getpid());
		sqlite3_bind_int64(st, 3, out->owner_token);
		sqlite3_bind_int64(st, 4, (sqlite3_int64)now + STORE_SEND_LEASE_SEC);
		sqlite3_bind_int64(st, 5, (sqlite3_int64)now);
		if (store_step_done(t, st, "taking over a send", err) == -1)
			goto out;
		if (owner_pid != 0)
			log_warn("send %.12s…: taking over from process %lld (state %s)", key,
			    owner_pid, store_send_state_name(out->state));
		result = STORE_SEND_OWNED;
	}
out:
	if (result == -1) {
		db_rollback(t->db);
		store_send_free(out);
		return -1;
	}
	if (db_commit(t->db) == -1) {
		db_rollback(t->db);
		store_send_free(out);
		return mk_fail(err, 503, "state store unavailable");
	}
	if (result != STORE_SEND_OWNED)
		out->owner_token = 0;
	return result;
}

/*
 * Run SQL_SEND_ADVANCE for the row (key, owner_token).  Returns 1 when it
 * moved, 0 when the row is no longer that owner's, -1 with err on failure.
 */
static int
store_send_update(struct store_handle *t, const char *key, long long owner_token,
    enum store_send_state state, int status, const char *reply, const char *email_id,
    time_t now, struct mk_err *err)
{
	sqlite3_stmt	*st;

	if ((st = store_stmt(t, SQL_SEND_ADVANCE, err)) == NULL)
		return -1;
	store_bind_text(st, 1, key);
	sqlite3_bind_int64(st, 2, owner_token);
	sqlite3_bind_int(st, 3, (int)state);
	sqlite3_bind_int(st, 4, status);
	if (reply != NULL)
		store_bind_text(st, 5, reply);
	if (email_id != NULL)
		store_bind_text(st, 6, email_id);
	sqlite3_bind_int64(st, 7, (sqlite3_int64)now + STORE_SEND_LEASE_SEC);
	sqlite3_bind_int64(st, 8, (sqlite3_int64)now);
	if (store_step_done(t, st, "advancing a send", err) == -1)
		return -1;
	if (sqlite3_changes(t->db) == 0) {
		log_error("send %.12s…: lost ownership before reaching state %s", key,
		    store_send_state_name(state));
		return 0;
	}
	return 1;
}

/* What store_send_advance() and store_send_finish() do to the caller's copy. */
static void
store_send_moved(struct store_send *row, enum store_send_state state, int status,
    const char *reply, const char *email_id, time_t now)
{
	row->state = state;
	if (status != 0)
		row->status = status;
	if (reply != NULL)
		snprintf(row->reply, sizeof row->reply, "%s", reply);
	if (email_id != NULL)
		snprintf(row->email_id, sizeof row->email_id, "%s", email_id);
	row->updated_at = now;
	if (state >= SEND_SENT)
		row->owner_token = 0;
}

int
store_send_advance(const struct settings *s, struct store_send *row,
    enum store_send_state state, int status, const char *reply, const char *email_id,
    struct mk_err *err)
{
	struct store_handle	*t STORE_HELD = NULL;
	time_t			 now = time(NULL);
	int			 rc;

	if ((t = store_lock(s, err)) == NULL)
		return -1;
	if ((rc = store_send_update(t, row->key, row->owner_token, state, status, reply,
	    email_id, now, err)) != 1)
		return rc == 0 ? mk_fail(err, 503, "send taken over by another worker") : -1;
	store_send_moved(row, state, status, reply, email_id, now);
	return 0;
}

/* ------------------------------------------------- final states, in batches */

/*
 * A request that has sent its email need not wait for the journal to say
 * so: store_send_finish() queues the final state and a writer thread
 * records every queued one in one transaction, at most STORE_FINISH_MS
 * later.  Under load that is one write transaction per send instead of
 * two.  Until it is written the row reads as ours and in progress: a retry
 * of it waits (billing.c), reconciliation passes it by while this process
 * lives, and if the process dies first the row is resumed with the same
 * idempotency keys (the debit and the email are not repeated), as after
 * any crash.  The queue is written out at exit.
 */
#define STORE_FINISH_MS		10	/* longest a queued final state waits */
#define STORE_FINISH_MAX	128	/* queued states; a full queue is written by its filler */

struct store_finish {
	char			 key[STORE_SEND_KEY_MAX];
	long long		 owner_token;
	enum store_send_state	 state;
	int			 status;
	char			 reply[STORE_SEND_REPLY_MAX];
	char			 email_id[sizeof ((struct store_send *)0)->email_id];
	int			 has_reply, has_email_id;
	time_t			 at;
};

static struct {
	pthread_mutex_t		 lock;
	pthread_cond_t		 wake;
	pthread_t		 writer;
	int			 started, stopping;
	const struct settings	*settings;	/* the program's; the same for every call */
	size_t			 n;
	struct store_finish	 q[STORE_FINISH_MAX];
} store_finish_queue = {
	.lock = PTHREAD_MUTEX_INITIALIZER,
	.wake = PTHREAD_COND_INITIALIZER,
};

/* Write n queued states in one transaction.  Failures are logged: the rows
 * stay in progress and are resumed like those of a crashed worker. */
static void
store_finish_write(const struct settings *s, const struct store_finish *q, size_t n)
{
	struct store_handle	*t STORE_HELD = NULL;
	struct mk_err		 err;
	size_t			 i;

	if (n == 0)
		return;
	if ((t = store_lock(s, &err)) == NULL || db_begin(t->db) == -1) {
		log_error("store: %zu finished sends not recorded (%s); they will be resumed",
		    n, t == NULL ? err.msg : "cannot begin");
		return;
	}
	for (i = 0; i < n; i++)
		if (store_send_update(t, q[i].key, q[i].owner_token, q[i].state, q[i].status,
		    q[i].has_reply ? q[i].reply : NULL, q[i].has_email_id ? q[i].email_id : NULL,
		    q[i].at, &err) == -1)
			break;
	if (i < n || db_commit(t->db) == -1) {
		db_rollback(t->db);
		log_error("store: %zu finished sends not recorded; they will be resumed", n);
	}
}

/* Take the whole queue (caller holds its lock) into out; returns the count. */
static size_t
store_finish_take(struct store_finish *out)
{
	size_t n = store_finish_queue.n;

	memcpy(out, store_finish_queue.q, n * sizeof out[0]);
	store_finish_queue.n = 0;
	return n;
}

static void *
store_finish_writer(void *arg)
{
	static struct store_finish	 batch[STORE_FINISH_MAX];	/* this thread's only */
	struct timespec			 until;
	size_t				 n;

	(void)arg;
	pthread_mutex_lock(&store_finish_queue.lock);
	for (;;) {
		while (store_finish_queue.n == 0 && !store_finish_queue.stopping)
			pthread_cond_wait(&store_finish_queue.wake, &store_finish_queue.lock);
		if (store_finish_queue.n == 0)
			break;			/* stopping, nothing left */
		/* let the batch gather for STORE_FINISH_MS after its first state */
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_nsec += STORE_FINISH_MS * 1000000L;
		if (until.tv_nsec >= 1000000000L) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000L;
		}
		while (!store_finish_queue.stopping &&
		    store_finish_queue.n < STORE_FINISH_MAX / 2 &&
		    pthread_cond_timedwait(&store_finish_queue.wake, &store_finish_queue.lock,
		    &until) == 0)
			;
		n = store_finish_take(batch);
		pthread_mutex_unlock(&store_finish_queue.lock);
		store_finish_write(store_finish_queue.settings, batch, n);
		pthread_mutex_lock(&store_finish_queue.lock);
	}
	pthread_mutex_unlock(&store_finish_queue.lock);
	return NULL;
}

/* Stop the writer after it has written everything queued (at exit). */
static void
store_finish_stop(void)
{
	int started;

	pthread_mutex_lock(&store_finish_queue.lock);
	started = store_finish_queue.started;
	store_finish_queue.stopping = 1;
	pthread_cond_signal(&store_finish_queue.wake);
	pthread_mutex_unlock(&store_finish_queue.lock);
	if (started)
		pthread_join(store_finish_queue.writer, NULL);
	store_finish_queue.started = 0;
}

int
store_send_finish(const struct settings *s, struct store_send *row,
    enum store_send_state state, int status, const char *reply, const char *email_id,
    struct mk_err *err)
{
	struct store_finish	*f;
	time_t			 now = time(NULL);

	if (state < SEND_SENT)
		return store_send_advance(s, row, state, status, reply, email_id, err);
	pthread_mutex_lock(&store_finish_queue.lock);
	if (store_finish_queue.stopping || store_finish_queue.n == STORE_FINISH_MAX ||
	    (!store_finish_queue.started && pthread_create(&store_finish_queue.writer, NULL,
	    store_finish_writer, NULL) != 0)) {
		/* exiting, the writer is behind, or no thread to spare: write it now */
		pthread_cond_signal(&store_finish_queue.wake);
		pthread_mutex_unlock(&store_finish_queue.lock);
		return store_send_advance(s, row, state, status, reply, email_id, err);
	}
	store_finish_queue.started = 1;
	store_finish_queue.settings = s;
	f = &store_finish_queue.q[store_finish_queue.n++];
	memset(f, 0, sizeof *f);
	snprintf(f->key, sizeof f->key, "%s", row->key);
	f->owner_token = row->owner_token;
	f->state = state;
	f->status = status;
	if ((f->has_reply = reply != NULL))
		snprintf(f->reply, sizeof f->reply, "%s", reply);
	if ((f->has_email_id = email_id != NULL))
		snprintf(f->email_id, sizeof f->email_id, "%s", email_id);
	f->at = now;
	if (store_finish_queue.n == 1 || store_finish_queue.n == STORE_FINISH_MAX / 2)
		pthread_cond_signal(&store_finish_queue.wake);
	pthread_mutex_unlock(&store_finish_queue.lock);
	store_send_moved(row, state, status, reply, email_id, now);
	return 0;
}

int
store_send_release(const struct settings *s, struct store_send *row, int status,
    const char *reply, struct mk_err *err)
{
	struct store_handle	*t STORE_HELD = NULL;
	sqlite3_stmt		*st;

	if ((t = store_lock(s, err)) == NULL ||
	    (st = store_stmt(t, SQL_SEND_RELEASE, err)) == NULL)
		return -1;
	store_bind_text(st, 1, row->key);
	sqlite3_bind_int64(st, 2, row->owner_token);
	sqlite3_bind_int(st, 3, status);
	store_bind_text(st, 4, reply);
	sqlite3_bind_int64(st, 5, (sqlite3_int64)time(NULL));
	if (store_step_done(t, st, "releasing a send", err) == -1)
		return -1;
	row->owner_token = 0;
	return 0;
}

/* Run a SEND_COLUMNS query bound to `when`, calling cb per row (live claims skipped if asked). */
static int
store_send_each(const struct settings *s, enum store_sql which, time_t when, int skip_live,
    int (*cb)(const struct store_send *, void *), void *arg, struct mk_err *err)
{
	struct store_handle	*t STORE_HELD = NULL;
	sqlite3_stmt		*st;
	struct store_send	 row;
	long long		 owner_pid, lease;
	time_t			 now = time(NULL);
	int			 rc, n = 0;

	if ((t = store_lock(s, err)) == NULL || (st = store_stmt(t, which, err)) == NULL)
		return -1;
	memset(&row, 0, sizeof row);
	sqlite3_bind_int64(st, 1, (sqlite3_int64)when);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (store_send_read(st, &row, &owner_pid, &lease) == -1) {
			rc = SQLITE_NOMEM;
			break;
		}
		if (skip_live && store_send_claim_live(owner_pid, lease, now))
			continue;
		n++;
		if (cb(&row, arg) != 0)
			break;
	}
	sqlite3_reset(st);
	store_send_free(&row);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
		log_error("store: listing sends: %s", sqlite3_errmsg(t->db));
		return mk_fail(err, 503, "state store unavailable");
	}
	return n;
}

int
store_send_pending(const struct settings *s, time_t older_than,
    int (*cb)(const struct store_send *, void *), void *arg, struct mk_err *err)
{
	return store_send_each(s, SQL_SEND_PENDING, older_than, 1, cb, arg, err);
}

int
store_send_list(const struct settings *s, time_t since,
    int (*cb)(const struct store_send *, void *), void *arg, struct mk_err *err)
{
	return store_send_each(s, SQL_SEND_LIST, since, 0, cb, arg, err);
}

/* ------------------------------------------------------------ API keys */

/* One integer from a one-row statement already bound; -1 with err on failure. */
static long long
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
		if ((st = store_stmt(t, SQL_KEY_REVOKE, err)) == NULL)
			goto out;
		store_bind_text(st, 1, customer_id);
		sqlite3_bind_int64(st, 2, (sqlite3_int64)now);
		if (store_step_done(t, st, "revoking keys", err) == -1)
			goto out;
	}
	if ((st = store_stmt(t, SQL_KEY_INSERT, err)) == NULL)
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
	if ((t = store_lock(s, err)) == NULL || (st = store_stmt(t, SQL_KEY_FIND, err)) == NULL)
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
	    (st = store_stmt(t, SQL_KEY_REVOKE, err)) == NULL)
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
	    (st = store_stmt(t, SQL_KEY_FORGET, err)) == NULL)
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
	    (st = store_stmt(t, any ? SQL_KEY_ANY : SQL_KEY_ACTIVE, err)) == NULL)
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

	if ((t = store_lock(s, err)) == NULL || (st = store_stmt(t, SQL_KEY_LIST, err)) == NULL)
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
	    (st = store_stmt(t, SQL_CLAIM_PRUNE, err)) != NULL) {
		sqlite3_bind_int64(st, 1, (sqlite3_int64)now - STORE_CLAIM_KEEP_SEC);
		(void)store_step_done(t, st, "pruning old claims", err);
	}
	if ((st = store_stmt(t, SQL_CLAIM_ADD, err)) == NULL)
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
	    (st = store_stmt(t, SQL_CLAIM_TAKE, err)) == NULL)
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
	    (st = store_stmt(t, SQL_CLAIM_GIVE_BACK, err)) == NULL)
		return -1;
	store_bind_text(st, 1, token_hash);
	return store_step_done(t, st, "giving back a claim", err);
}

int
store_claim_pending(const struct settings *s, const char *email, struct mk_err *err)
{
	struct store_handle	*t STORE_HELD = NULL;
	sqlite3_stmt		*st;
	long long		 n;

	if ((t = store_lock(s, err)) == NULL ||
	    (st = store_stmt(t, SQL_CLAIM_PENDING, err)) == NULL)
		return -1;
	store_bind_text(st, 1, email);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)time(NULL));
	sqlite3_bind_int64(st, 3, (sqlite3_int64)time(NULL) - STORE_CLAIM_ISSUE_SEC);
	if ((n = store_count(t, st, "reading claims", err)) == -1)
		return -1;
	return n > 0;
}
