/* db.h: SQLite state shared by every worker process on one host. */
#ifndef MAILKIT_DB_H
#define MAILKIT_DB_H

#include <stddef.h>
#include <pthread.h>
#include <sqlite3.h>

#define DB_BUSY_TIMEOUT_MS	5000	/* writers queue this long before SQLITE_BUSY,
					 * unless db_wait_start() set a bound */
#define DB_CACHE_KIB		"256"	/* page cache per handle, KiB (PRAGMA cache_size) */

/*
 * Schema migrations: migration i (0-based) brings the schema from version
 * i to i+1 (PRAGMA user_version).  Each runs once, in one transaction, in
 * the first process that opens the database at an older version.
 */
struct db_migration {
	const char	*sql;	/* one or more statements */
};

/*
 * Open (creating if needed) the database at path in WAL mode with a busy
 * timeout and foreign keys on, then apply pending migrations.  The handle
 * is opened without SQLite's own mutex: one thread at a time may use it
 * (the caller serialises; store.c holds a lock).  Returns the handle or
 * NULL with a reason in err.
 */
sqlite3	*db_open(const char *path, const struct db_migration *migrations, size_t n,
	    char *err, size_t errlen);

/*
 * A statement prepared once per handle and reused: *slot caches it across
 * calls (reset and bindings cleared on each fetch).  Returns NULL with the
 * reason logged if sql does not compile.
 */
sqlite3_stmt *db_stmt(sqlite3 *db, sqlite3_stmt **slot, const char *sql);

/*
 * Bound this thread's waits for the write lock, from now: SQLite's busy
 * handler on every handle db_open() made, and db_wait_lock(), give up
 * ms milliseconds from now (SQLITE_BUSY; -1).  So when another process
 * holds the lock, every waiting request fails by then, side by side,
 * instead of queueing for it one after another.  A thread that never
 * calls this waits DB_BUSY_TIMEOUT_MS per statement.
 */
void	db_wait_start(long ms);

/* Lock m (which may be recursive) within this thread's bound.  0 / -1. */
int	db_wait_lock(pthread_mutex_t *m);

/*
 * BEGIN IMMEDIATE / COMMIT / ROLLBACK.  0 / -1.  The threads of a process
 * take turns at write transactions (a mutex, held from db_begin until
 * db_commit or db_rollback; db_commit rolls back what it could not commit).
 */
int	db_begin(sqlite3 *db);
int	db_commit(sqlite3 *db);
void	db_rollback(sqlite3 *db);

#endif
