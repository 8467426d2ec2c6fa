/* store_send.c: the send journal (store_send.h) — rows, ownership, the due list, batched final states. */
#include <errno.h>
#include <limits.h>
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
#include "store_send.h"

#define STORE_SEND_DUE_SLACK	256	/* in-flight rows (due, but held) read past in one look */
#define STORE_SEND_HOST_MAX	256	/* a hostname (HOST_NAME_MAX is 64 on Linux) */

#define SEND_COLUMNS "key, customer_id, request_hash, state, status, reply, email_id," \
	" message, created_at, updated_at, owner_pid, lease_until, attempts, next_attempt_at," \
	" debit_entry, refund_entry, unsure_at, owner_host"

/*
 * The body is dropped where store_send.h says (?3 is the new state, ?4 its
 * status): 10 and up are final, 3 is refunding, 4 voiding.
 */
#define SEND_KEEPS_BODY "NOT (?3 >= 10 OR ?3 = 3 OR (?3 = 4 AND ?4 < 500))"

/* This module's statements, in the slots store_int.h numbers. */
static const char *const store_send_sql[SQL_COUNT] = {
	[SQL_SEND_GET] =
	    "SELECT " SEND_COLUMNS " FROM sends WHERE key = ?1",
	[SQL_SEND_INSERT] =
	    "INSERT INTO sends (key, customer_id, request_hash, message, state, owner_pid,"
	    " owner_token, lease_until, created_at, updated_at, next_attempt_at, owner_host)"
	    " VALUES (?1, ?2, ?3, ?4, 0, ?5, ?6, ?7, ?8, ?8, ?8, ?9) ON CONFLICT (key) DO NOTHING",
	[SQL_SEND_TAKE] =
	    "UPDATE sends SET owner_pid = ?2, owner_token = ?3, lease_until = ?4, updated_at = ?5,"
	    " owner_host = ?6 WHERE key = ?1",
	/* only the owner may write a row; ?11 = 1 lets go of it */
	[SQL_SEND_SAVE] =
	    "UPDATE sends SET state = ?3, status = ?4, reply = ?5, email_id = ?6,"
	    " debit_entry = ?7, refund_entry = ?8, attempts = ?9, next_attempt_at = ?10,"
	    " unsure_at = ?14,"
	    " owner_pid = CASE WHEN ?11 THEN NULL ELSE owner_pid END,"
	    " owner_token = CASE WHEN ?11 THEN NULL ELSE owner_token END,"
	    " lease_until = CASE WHEN ?11 THEN NULL ELSE ?12 END,"
	    " updated_at = ?13,"
	    " message = CASE WHEN " SEND_KEEPS_BODY " THEN message"
	    "  ELSE json_remove(message, '$.html', '$.text') END"
	    " WHERE key = ?1 AND owner_token = ?2",
	[SQL_SEND_DUE] =
	    "SELECT key, owner_pid, lease_until, owner_host FROM sends"
	    " WHERE state < 10 AND next_attempt_at <= ?1 ORDER BY next_attempt_at LIMIT ?2",
	[SQL_SEND_LIST] =
	    "SELECT " SEND_COLUMNS " FROM sends WHERE created_at >= ?1 ORDER BY created_at",
	[SQL_SEND_PRUNE] =
	    "DELETE FROM sends WHERE state >= 10 AND updated_at < ?1",
	/* an email id is the key's first 32 hex digits: a range of the primary key */
	[SQL_SEND_FIND] =
	    "SELECT " SEND_COLUMNS ", rowid FROM sends"
	    " WHERE key >= ?1 AND key < ?1 || 'g' AND customer_id = ?2 ORDER BY key LIMIT 1",
	[SQL_SEND_PAGE] =
	    "SELECT " SEND_COLUMNS " FROM sends WHERE customer_id = ?1 AND rowid < ?2"
	    " ORDER BY rowid DESC LIMIT ?3",
};

static const char *const store_send_states[] = {
	[SEND_NEW] = "new", [SEND_DEBITED] = "debited", [SEND_SENDING] = "sending",
	[SEND_REFUNDING] = "refunding", [SEND_VOIDING] = "voiding", [SEND_SENT] = "sent",
	[SEND_REFUNDED] = "refunded", [SEND_REJECTED] = "rejected", [SEND_VOIDED] = "voided",
	[SEND_UNCONFIRMED] = "unconfirmed",
};

const char *
store_send_state_name(enum store_send_state state)
{
	if ((unsigned)state >= sizeof store_send_states / sizeof store_send_states[0] ||
	    store_send_states[state] == NULL)
		return "unknown";
	return store_send_states[state];
}

void
store_send_free(struct store_send *row)
{
	free(row->message);
	row->message = NULL;
}

/* The kernel's hostname, read once (store_send_claim_live says why). */
static char		store_send_hostname[STORE_SEND_HOST_MAX];
static pthread_once_t	store_send_host_once = PTHREAD_ONCE_INIT;

static void
store_send_host_init(void)
{
	if (gethostname(store_send_hostname, sizeof store_send_hostname - 1) == -1)
		snprintf(store_send_hostname, sizeof store_send_hostname, "localhost");
}

const char *
store_send_host(void)
{
	pthread_once(&store_send_host_once, store_send_host_init);
	return store_send_hostname;
}

/* Fill row from a SEND_COLUMNS result; *owner_pid and *lease get the claim,
 * owner_host (STORE_SEND_HOST_MAX bytes) its host. */
static int
store_send_read(sqlite3_stmt *st, struct store_send *row, long long *owner_pid,
    long long *lease, char *owner_host)
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
	row->attempts = sqlite3_column_int(st, 12);
	row->next_attempt_at = (time_t)sqlite3_column_int64(st, 13);
	row->debited = sqlite3_column_type(st, 14) != SQLITE_NULL;
	store_column_text(st, 14, row->debit_entry, sizeof row->debit_entry);
	row->refunded = sqlite3_column_type(st, 15) != SQLITE_NULL;
	store_column_text(st, 15, row->refund_entry, sizeof row->refund_entry);
	row->unsure_at = (time_t)sqlite3_column_int64(st, 16);
	if (owner_host != NULL)
		store_column_text(st, 17, owner_host, STORE_SEND_HOST_MAX);
	return 0;
}

/*
 * A claim is live while its lease runs and, on this host, its process
 * exists (a worker killed here frees its rows at once).  A claim made on
 * another host lives until its lease ends: its pid means nothing here.
 */
int
store_send_claim_live(long long owner_pid, long long lease, const char *owner_host, time_t now)
{
	if (owner_pid <= 0 || lease <= (long long)now)
		return 0;
	if (owner_host[0] != '\0' && strcmp(owner_host, store_send_host()) != 0)
		return 1;
	return kill((pid_t)owner_pid, 0) == 0 || errno == EPERM;
}

long long
store_send_token(void)
{
	static _Atomic unsigned long long counter;
	unsigned long long c = ++counter;

	/* unique per begin within a host: pid in the high bits, a counter below */
	return (long long)(((unsigned long long)getpid() << 32 | (c & 0xffffffffULL)) &
	    0x7fffffffffffffffULL);
}

/*
 * Bind a claim by this process at parameters first .. first + 4, in the
 * order both statements that make one use: pid, token, lease end, the time
 * (updated_at), host.
 */
static void
store_send_bind_claim(sqlite3_stmt *st, int first, long long token, time_t now)
{
	sqlite3_bind_int64(st, first, (sqlite3_int64)getpid());
	sqlite3_bind_int64(st, first + 1, token);
	sqlite3_bind_int64(st, first + 2, (sqlite3_int64)now + STORE_SEND_LEASE_SEC);
	sqlite3_bind_int64(st, first + 3, (sqlite3_int64)now);
	store_bind_text(st, first + 4, store_send_host());
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

	if ((st = store_stmt(t, SQL_SEND_INSERT, store_send_sql, err)) == NULL)
		return -1;
	out->owner_token = store_send_token();
	store_bind_text(st, 1, key);
	store_bind_text(st, 2, customer_id);
	store_bind_text(st, 3, request_hash);
	store_bind_text(st, 4, message);
	store_send_bind_claim(st, 5, out->owner_token, now);
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
	out->created_at = out->updated_at = out->next_attempt_at = now;
	out->inserted = 1;
	return 1;
}

/* The answer a row gives without being driven: final states, and a 4xx void. */
static int
store_send_answered(const struct store_send *row)
{
	return row->state >= SEND_SENT || (row->state == SEND_VOIDING && row->status < 500);
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
	char			 owner_host[STORE_SEND_HOST_MAX] = "";
	int			 rc, result = -1;

	memset(out, 0, sizeof *out);
	if ((t = store_lock(s, err)) == NULL)
		return -1;
	if (t->claims++ % STORE_PRUNE_EVERY == 0 &&
	    (st = store_stmt(t, SQL_SEND_PRUNE, store_send_sql, err)) != NULL) {
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
	if ((st = store_stmt(t, SQL_SEND_GET, store_send_sql, err)) == NULL)
		goto out;
	store_bind_text(st, 1, key);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW && store_send_read(st, out, &owner_pid, &lease, owner_host) == -1) {
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
	} else if ((customer_id != NULL && strcmp(out->customer_id, customer_id) != 0) ||
	    (request_hash != NULL && strcmp(out->request_hash, request_hash) != 0))
		result = STORE_SEND_MISMATCH;
	else if (customer_id != NULL ? store_send_answered(out) : out->state >= SEND_SENT)
		result = STORE_SEND_FINAL;	/* the background still fences an answered void */
	else if (store_send_claim_live(owner_pid, lease, owner_host, now))
		result = STORE_SEND_BUSY;
	else {
		if ((st = store_stmt(t, SQL_SEND_TAKE, store_send_sql, err)) == NULL)
			goto out;
		store_bind_text(st, 1, key);
		store_send_bind_claim(st, 2, out->owner_token, now);
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

/* Bind an optional entry id: NULL when the entry does not stand. */
static void
store_send_bind_entry(sqlite3_stmt *st, int i, int stands, const char *entry_id)
{
	if (stands)
		store_bind_text(st, i, entry_id);
	else
		sqlite3_bind_null(st, i);
}

/*
 * Run SQL_SEND_SAVE for row (its key and owner_token), letting go of it when
 * release is set or the state is final.  Returns 1 when written, 0 when the
 * row is no longer that owner's, -1 with err on failure.
 */
static int
store_send_write(struct store_handle *t, const struct store_send *row, int release,
    time_t now, struct mk_err *err)
{
	sqlite3_stmt	*st;

	if ((st = store_stmt(t, SQL_SEND_SAVE, store_send_sql, err)) == NULL)
		return -1;
	store_bind_text(st, 1, row->key);
	sqlite3_bind_int64(st, 2, row->owner_token);
	sqlite3_bind_int(st, 3, (int)row->state);
	sqlite3_bind_int(st, 4, row->status);
	store_bind_text(st, 5, row->reply);
	store_bind_text(st, 6, row->email_id);
	store_send_bind_entry(st, 7, row->debited, row->debit_entry);
	store_send_bind_entry(st, 8, row->refunded, row->refund_entry);
	sqlite3_bind_int(st, 9, row->attempts);
	sqlite3_bind_int64(st, 10, (sqlite3_int64)row->next_attempt_at);
	sqlite3_bind_int(st, 11, release || row->state >= SEND_SENT);
	sqlite3_bind_int64(st, 12, (sqlite3_int64)now + STORE_SEND_LEASE_SEC);
	sqlite3_bind_int64(st, 13, (sqlite3_int64)now);
	sqlite3_bind_int64(st, 14, (sqlite3_int64)row->unsure_at);
	if (store_step_done(t, st, "writing a send", err) == -1)
		return -1;
	if (sqlite3_changes(t->db) == 0) {
		log_error("send %.12s…: lost ownership before reaching state %s", row->key,
		    store_send_state_name(row->state));
		return 0;
	}
	return 1;
}

/* Write row now (release: and let go of it); 0 / -1 as store_send_save(). */
static int
store_send_write_now(const struct settings *s, struct store_send *row, int release,
    struct mk_err *err)
{
	struct store_handle	*t STORE_HELD = NULL;
	time_t			 now = time(NULL);
	int			 rc;

	if ((t = store_lock(s, err)) == NULL)
		return -1;
	if ((rc = store_send_write(t, row, release, now, err)) != 1)
		return rc == 0 ? mk_fail(err, 503, "send taken over by another worker") : -1;
	row->updated_at = now;
	if (release || row->state >= SEND_SENT)
		row->owner_token = 0;
	return 0;
}

int
store_send_save(const struct settings *s, struct store_send *row, struct mk_err *err)
{
	return store_send_write_now(s, row, 0, err);
}

int
store_send_release(const struct settings *s, struct store_send *row, long delay_sec,
    struct mk_err *err)
{
	row->next_attempt_at = time(NULL) + (delay_sec > 0 ? delay_sec : 0);
	return store_send_write_now(s, row, 1, err);
}

int
store_send_due(const struct settings *s, time_t due_by, char (*keys)[STORE_SEND_KEY_MAX],
    int max, struct mk_err *err)
{
	struct store_handle	*t STORE_HELD = NULL;
	sqlite3_stmt		*st;
	time_t			 now = time(NULL);
	int			 rc, n = 0;

	if ((t = store_lock(s, err)) == NULL || (st = store_stmt(t, SQL_SEND_DUE, store_send_sql, err)) == NULL)
		return -1;
	sqlite3_bind_int64(st, 1, (sqlite3_int64)due_by);
	/* rows in flight are due too (due at insert) but held: read a little more */
	sqlite3_bind_int(st, 2, max + STORE_SEND_DUE_SLACK);
	while (n < max && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		long long	owner_pid = sqlite3_column_type(st, 1) == SQLITE_NULL ? 0 :
		    sqlite3_column_int64(st, 1);
		char		owner_host[STORE_SEND_HOST_MAX];

		store_column_text(st, 3, owner_host, sizeof owner_host);
		if (store_send_claim_live(owner_pid, sqlite3_column_int64(st, 2), owner_host, now))
			continue;
		store_column_text(st, 0, keys[n], STORE_SEND_KEY_MAX);
		n++;
	}
	if (n < max && rc != SQLITE_DONE) {
		log_error("store: listing due sends: %s", sqlite3_errmsg(t->db));
		sqlite3_reset(st);
		return mk_fail(err, 503, "state store unavailable");
	}
	sqlite3_reset(st);
	return n;
}

/* Step st (SEND_COLUMNS rows), calling cb per row; returns rows visited or -1. */
static int
store_send_each(struct store_handle *t, sqlite3_stmt *st,
    int (*cb)(const struct store_send *, void *), void *arg, struct mk_err *err)
{
	struct store_send	row;
	int			rc, n = 0;

	memset(&row, 0, sizeof row);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (store_send_read(st, &row, NULL, NULL, NULL) == -1) {
			rc = SQLITE_NOMEM;
			break;
		}
		n++;
		if (cb(&row, arg) != 0) {
			rc = SQLITE_DONE;
			break;
		}
	}
	sqlite3_reset(st);
	store_send_free(&row);
	if (rc != SQLITE_DONE) {
		log_error("store: listing sends: %s", sqlite3_errmsg(t->db));
		return mk_fail(err, 503, "state store unavailable");
	}
	return n;
}

int
store_send_get(const struct settings *s, const char *customer_id, const char *prefix,
    struct store_send *out, struct mk_err *err)
{
	struct store_handle	*t STORE_HELD = NULL;
	sqlite3_stmt		*st;
	int			 rc;

	memset(out, 0, sizeof *out);
	if ((t = store_lock(s, err)) == NULL || (st = store_stmt(t, SQL_SEND_FIND, store_send_sql, err)) == NULL)
		return -1;
	store_bind_text(st, 1, prefix);
	store_bind_text(st, 2, customer_id);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW && store_send_read(st, out, NULL, NULL, NULL) == -1)
		rc = SQLITE_NOMEM;
	sqlite3_reset(st);
	if (rc == SQLITE_ROW)
		return 1;
	if (rc == SQLITE_DONE)
		return 0;
	store_send_free(out);
	log_error("store: reading a send: %s", sqlite3_errmsg(t->db));
	return mk_fail(err, 503, "state store unavailable");
}

int
store_send_page(const struct settings *s, const char *customer_id, const char *after_prefix,
    int limit, int (*cb)(const struct store_send *, void *), void *arg, struct mk_err *err)
{
	struct store_handle	*t STORE_HELD = NULL;
	sqlite3_stmt		*st;
	sqlite3_int64		 before = LLONG_MAX;
	int			 rc;

	if ((t = store_lock(s, err)) == NULL)
		return -1;
	if (after_prefix != NULL) {
		/* the cursor: the rowid of the row the client saw last */
		if ((st = store_stmt(t, SQL_SEND_FIND, store_send_sql, err)) == NULL)
			return -1;
		store_bind_text(st, 1, after_prefix);
		store_bind_text(st, 2, customer_id);
		rc = sqlite3_step(st);
		if (rc == SQLITE_ROW)
			before = sqlite3_column_int64(st, 18);	/* after SEND_COLUMNS */
		sqlite3_reset(st);
		if (rc == SQLITE_DONE)
			return mk_fail(err, 400, "after names no email of this customer");
		if (rc != SQLITE_ROW) {
			log_error("store: reading a send: %s", sqlite3_errmsg(t->db));
			return mk_fail(err, 503, "state store unavailable");
		}
	}
	if ((st = store_stmt(t, SQL_SEND_PAGE, store_send_sql, err)) == NULL)
		return -1;
	store_bind_text(st, 1, customer_id);
	sqlite3_bind_int64(st, 2, before);
	sqlite3_bind_int(st, 3, limit);
	return store_send_each(t, st, cb, arg, err);
}

int
store_send_list(const struct settings *s, time_t since,
    int (*cb)(const struct store_send *, void *), void *arg, struct mk_err *err)
{
	struct store_handle	*t STORE_HELD = NULL;
	sqlite3_stmt		*st;

	/* one statement is one read transaction: a snapshot, whatever writes meanwhile */
	if ((t = store_lock(s, err)) == NULL || (st = store_stmt(t, SQL_SEND_LIST, store_send_sql, err)) == NULL)
		return -1;
	sqlite3_bind_int64(st, 1, (sqlite3_int64)since);
	return store_send_each(t, st, cb, arg, err);
}

/* ------------------------------------------------- final states, in batches */

/*
 * A request that has sent its email need not wait for the journal to say
 * so: store_send_finish() queues the final state and a writer thread
 * records every queued one in one transaction, at most STORE_FINISH_MS
 * later.  Under load that is one write transaction per send instead of
 * two.  Until it is written the row reads as ours and in progress: a retry
 * of it waits (billing.c), the background passes it by while this process
 * lives, and if the process dies first the row is resumed with the same
 * idempotency keys (the debit and the email are not repeated), as after
 * any crash.  A batch that cannot be written (the database locked by
 * another process, say) is kept and written again, backing off up to
 * STORE_FINISH_RETRY_MAX_MS, while the rows' leases last: a retry that waits
 * for such a row then gets its final answer, not "still in progress".  The
 * queue is written out at exit.
 */
#define STORE_FINISH_MS		10	/* longest a queued final state waits */
#define STORE_FINISH_MAX	128	/* queued states; a full queue is written by its filler */
#define STORE_FINISH_RETRY_MS	100	/* first wait after a failed batch, doubling ... */
#define STORE_FINISH_RETRY_MAX_MS 2000	/* ... up to this */

struct store_finish {
	struct store_send	row;		/* message always NULL */
	time_t			at;
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

/*
 * Write n queued states in one transaction.  Returns 0 when written (or
 * when rows were found taken over: nothing more to do for them), -1 when the
 * batch must be tried again.
 */
static int
store_finish_write(const struct settings *s, const struct store_finish *q, size_t n)
{
	struct store_handle	*t STORE_HELD = NULL;
	struct mk_err		 err;
	size_t			 i;

	if (n == 0)
		return 0;
	if ((t = store_lock(s, &err)) == NULL || db_begin(t->db) == -1) {
		log_error("store: %zu finished sends not recorded yet (%s); trying again", n,
		    t == NULL ? err.msg : "cannot begin");
		return -1;
	}
	for (i = 0; i < n; i++)
		if (store_send_write(t, &q[i].row, 1, q[i].at, &err) == -1)
			break;
	if (i < n || db_commit(t->db) == -1) {
		db_rollback(t->db);
		log_error("store: %zu finished sends not recorded yet; trying again", n);
		return -1;
	}
	return 0;
}

/* Move queued states (caller holds the queue's lock) into batch after its n
 * entries, as many as fit; returns the new count. */
static size_t
store_finish_take(struct store_finish *batch, size_t n)
{
	size_t take = store_finish_queue.n;

	if (take > STORE_FINISH_MAX - n)
		take = STORE_FINISH_MAX - n;
	memcpy(batch + n, store_finish_queue.q, take * sizeof batch[0]);
	memmove(store_finish_queue.q, store_finish_queue.q + take,
	    (store_finish_queue.n - take) * sizeof batch[0]);
	store_finish_queue.n -= take;
	return n + take;
}

/* Drop rows whose lease has run out: another worker may own them by now. */
static size_t
store_finish_expire(struct store_finish *batch, size_t n, time_t now)
{
	size_t kept = 0;

	for (size_t i = 0; i < n; i++) {
		if (batch[i].at + STORE_SEND_LEASE_SEC > now)
			batch[kept++] = batch[i];
		else
			log_error("send %.12s…: final state %s never recorded; it is resumed with "
			    "the same keys", batch[i].row.key,
			    store_send_state_name(batch[i].row.state));
	}
	return kept;
}

static void
store_finish_deadline(struct timespec *until, long ms)
{
	clock_gettime(CLOCK_REALTIME, until);
	until->tv_sec += ms / 1000;
	until->tv_nsec += (ms % 1000) * 1000000L;
	if (until->tv_nsec >= 1000000000L) {
		until->tv_sec++;
		until->tv_nsec -= 1000000000L;
	}
}

static void *
store_finish_writer(void *arg)
{
	static struct store_finish	 batch[STORE_FINISH_MAX];	/* this thread's only */
	struct timespec			 until;
	size_t				 n = 0;
	long				 retry_ms = 0;

	(void)arg;
	pthread_mutex_lock(&store_finish_queue.lock);
	for (;;) {
		while (n == 0 && store_finish_queue.n == 0 && !store_finish_queue.stopping)
			pthread_cond_wait(&store_finish_queue.wake, &store_finish_queue.lock);
		if (n == 0 && store_finish_queue.n == 0)
			break;			/* stopping, nothing left */
		/* let the batch gather for STORE_FINISH_MS after its first state, or
		 * wait out the backoff after a failed write */
		store_finish_deadline(&until, retry_ms > 0 ? retry_ms : STORE_FINISH_MS);
		while (!store_finish_queue.stopping &&
		    (retry_ms > 0 || store_finish_queue.n < STORE_FINISH_MAX / 2) &&
		    pthread_cond_timedwait(&store_finish_queue.wake, &store_finish_queue.lock,
		    &until) == 0)
			;
		n = store_finish_take(batch, n);
		pthread_mutex_unlock(&store_finish_queue.lock);
		if (store_finish_write(store_finish_queue.settings, batch, n) == 0) {
			n = 0;
			retry_ms = 0;
		} else {
			n = store_finish_expire(batch, n, time(NULL));
			retry_ms = retry_ms == 0 ? STORE_FINISH_RETRY_MS : retry_ms * 2;
			if (retry_ms > STORE_FINISH_RETRY_MAX_MS)
				retry_ms = STORE_FINISH_RETRY_MAX_MS;
		}
		pthread_mutex_lock(&store_finish_queue.lock);
		if (store_finish_queue.stopping && n > 0 && retry_ms > 0 &&
		    store_finish_queue.n == 0) {
			/* exiting: the rows are resumed with the same keys after us */
			log_error("store: %zu finished sends not recorded at exit; they are "
			    "resumed", n);
			n = 0;
		}
	}
	pthread_mutex_unlock(&store_finish_queue.lock);
	return NULL;
}

void
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
store_send_finish(const struct settings *s, struct store_send *row, struct mk_err *err)
{
	struct store_finish	*f;
	time_t			 now = time(NULL);

	if (row->state < SEND_SENT)
		return store_send_save(s, row, err);
	pthread_mutex_lock(&store_finish_queue.lock);
	if (store_finish_queue.stopping || store_finish_queue.n == STORE_FINISH_MAX ||
	    (!store_finish_queue.started && pthread_create(&store_finish_queue.writer, NULL,
	    store_finish_writer, NULL) != 0)) {
		/* exiting, the writer is behind, or no thread to spare: write it now */
		pthread_cond_signal(&store_finish_queue.wake);
		pthread_mutex_unlock(&store_finish_queue.lock);
		return store_send_save(s, row, err);
	}
	store_finish_queue.started = 1;
	store_finish_queue.settings = s;
	f = &store_finish_queue.q[store_finish_queue.n++];
	f->row = *row;
	f->row.message = NULL;
	f->at = now;
	if (store_finish_queue.n == 1 || store_finish_queue.n == STORE_FINISH_MAX / 2)
		pthread_cond_signal(&store_finish_queue.wake);
	pthread_mutex_unlock(&store_finish_queue.lock);
	row->updated_at = now;
	row->owner_token = 0;
	return 0;
}
