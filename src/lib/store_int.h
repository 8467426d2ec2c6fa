/* store_int.h: what the store's modules share — the process's handle, its lock and statement slots.  Library-internal. */
#ifndef MAILKIT_STORE_INT_H
#define MAILKIT_STORE_INT_H

#include <pthread.h>
#include <sqlite3.h>
#include <time.h>

#include "err.h"

struct settings;

/*
 * Every statement of every module has a slot here: prepared once per handle
 * (db_stmt) on first use and kept.  Each module keeps its SQL in a table of
 * its own indexed by these names and passes it to store_stmt().
 */
enum store_sql {
	/* store_webhook.c */
	SQL_CLAIM,
	SQL_CLAIM_STATE,
	SQL_PRUNE,
	SQL_DONE,
	SQL_RELEASE,
	/* store_lowbal.c */
	SQL_LOW_SET,
	SQL_LOW_GET,
	SQL_LOW_OWNER,
	SQL_LOW_CLEAR,
	/* store_send.c */
	SQL_SEND_GET,
	SQL_SEND_INSERT,
	SQL_SEND_TAKE,
	SQL_SEND_SAVE,
	SQL_SEND_DUE,
	SQL_SEND_LIST,
	SQL_SEND_PRUNE,
	SQL_SEND_FIND,
	SQL_SEND_PAGE,
	/* store_keys.c */
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
	/* store_usage.c */
	SQL_USAGE_GET,
	SQL_USAGE_SEQ,
	SQL_USAGE_UNSETTLED,
	SQL_USAGE_HELD,
	SQL_USAGE_UPSERT,
	SQL_USAGE_SETTLE,
	SQL_USAGE_RELEASE,
	SQL_USAGE_FIND,
	SQL_USAGE_PRUNE,
	SQL_USAGE_PRUNE_CLEARS,
	/* store_usage_bill.c */
	SQL_USAGE_DUE,
	SQL_USAGE_TAKE,
	SQL_USAGE_INGESTED,
	SQL_USAGE_DEBITED,
	SQL_USAGE_POSTPONE,
	SQL_USAGE_CLEAR_ADD,
	SQL_USAGE_CLEAR_SET,
	SQL_USAGE_FIFO,
	SQL_USAGE_CLEAR_ROW,
	SQL_USAGE_EXPIRE_HOLDS,
	SQL_USAGE_STALE,
	SQL_USAGE_POLL,
	SQL_USAGE_POLL_NEXT,
	SQL_COUNT
};

/* The process's one connection, shared by its threads under `lock` (store.c says why). */
struct store_handle {
	pthread_mutex_t	 lock;
	sqlite3		*db;
	char		*path;
	unsigned	 claims;	/* for STORE_PRUNE_EVERY */
	sqlite3_stmt	*stmt[SQL_COUNT];
};

/*
 * Take the process's handle, opening it (and migrating) on first use or
 * when MAILKIT_DB changed.  Returns it locked, or NULL with err (unlocked).
 * The caller releases it with store_unlock(), or declares its pointer
 * STORE_HELD.
 */
struct store_handle *store_lock(const struct settings *s, struct mk_err *err);
void	store_unlock(struct store_handle *h);
void	store_unlock_at_exit(struct store_handle **hp);

/* Declares a handle pointer that store_unlock_at_exit() releases on every
 * return path of the function that holds it. */
#define STORE_HELD	__attribute__((cleanup(store_unlock_at_exit)))

/* The cached statement for slot `which` (SQL text sql[which]), reset and
 * unbound; NULL with err (503) if it does not compile. */
sqlite3_stmt *store_stmt(struct store_handle *t, enum store_sql which, const char *const *sql,
	    struct mk_err *err);

/* Step a statement that returns no rows; -1 with err (503) on failure. */
int	store_step_done(struct store_handle *t, sqlite3_stmt *st, const char *what,
	    struct mk_err *err);

/* Bind text (NULL binds ""), copied. */
int	store_bind_text(sqlite3_stmt *st, int i, const char *v);

/* Copy a text column into dst[dstlen]; "" for NULL. */
void	store_column_text(sqlite3_stmt *st, int col, char *dst, size_t dstlen);

/* One integer from a one-row statement already bound; -1 with err on failure. */
long long store_count(struct store_handle *t, sqlite3_stmt *st, const char *what,
	    struct mk_err *err);

/*
 * Claims on rows (the send journal's, the usage journal's): this host's
 * name, and whether a claim by owner_pid on owner_host with a lease to
 * `lease` is live at `now` (its lease runs and, on this host, its process
 * exists; a claim from another host lives until its lease ends).
 */
const char	*store_send_host(void);
int	store_send_claim_live(long long owner_pid, long long lease, const char *owner_host,
	    time_t now);

/* A claim's token: unique per claim within a host (the pid in the high
 * bits, a per-process counter below). */
long long	store_send_token(void);

/* Step an update of the caller's own usage row (store_usage.c); -1 with err,
 * 409 when it changed no row (the row is no longer the caller's). */
int	store_usage_own_step(struct store_handle *t, sqlite3_stmt *st, const char *what,
	    struct mk_err *err);

/* Write out the send journal's queued final states and stop its writer (at exit). */
void	store_finish_stop(void);

#endif
