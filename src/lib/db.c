/* db.c: SQLite handles in WAL mode with a busy timeout, schema migrations and cached statements. */
#include <sys/stat.h>

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "db.h"
#include "log.h"

#define DB_PATH_MAX	4096	/* bytes of a database path we accept */
#define DB_WAL_RETRY_MS	10	/* pause between tries to switch a new file to WAL */
#define DB_BUSY_SLEEP_MAX_MS	20	/* longest nap of the busy handler between tries */

/* This thread's bound on lock waits (db_wait_start), CLOCK_MONOTONIC ms; 0: none. */
static __thread long long	db_wait_until;
/* Without a bound: when the current busy wait started. */
static __thread long long	db_busy_since;

static void	db_err(char *, size_t, const char *, ...)
		    __attribute__((format(printf, 3, 4)));

/* Fill err (which may be NULL) with a formatted reason. */
static void
db_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list	ap;

	if (err == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

void
db_wait_start(long ms)
{
	db_wait_until = clock_ms() + (ms > 0 ? ms : 0);
}

int
db_wait_lock(pthread_mutex_t *m)
{
	struct timespec	until;
	long long	left;

	if (pthread_mutex_trylock(m) == 0)
		return 0;
	if (db_wait_until == 0)
		return pthread_mutex_lock(m) == 0 ? 0 : -1;
	if ((left = db_wait_until - clock_ms()) <= 0)
		return -1;
	clock_gettime(CLOCK_REALTIME, &until);	/* what pthread_mutex_timedlock counts in */
	until.tv_sec += left / 1000;
	until.tv_nsec += (left % 1000) * 1000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	return pthread_mutex_timedlock(m, &until) == 0 ? 0 : -1;
}

/*
 * SQLite's busy handler: try again after short naps (1, 2, 4 ... ms, at
 * most DB_BUSY_SLEEP_MAX_MS) until this thread's bound, or for
 * DB_BUSY_TIMEOUT_MS when it has none.  0 gives up (SQLITE_BUSY).
 */
static int
db_busy(void *arg, int tries)
{
	long long	now = clock_ms(), until;
	long		nap = tries < 5 ? 1L << tries : DB_BUSY_SLEEP_MAX_MS;
	struct timespec	ts;

	(void)arg;
	if (tries == 0)
		db_busy_since = now;
	until = db_wait_until != 0 ? db_wait_until : db_busy_since + DB_BUSY_TIMEOUT_MS;
	if (now >= until)
		return 0;
	if (nap > DB_BUSY_SLEEP_MAX_MS)
		nap = DB_BUSY_SLEEP_MAX_MS;
	if (nap > until - now)
		nap = (long)(until - now);
	ts.tv_sec = 0;
	ts.tv_nsec = nap * 1000000L;
	nanosleep(&ts, NULL);
	return 1;
}

/*
 * SQLite's own message for a missing directory is "unable to open database
 * file"; say which directory instead.  The directory is not created: where
 * the state lives is the operator's (or the stack's) decision.
 */
static int
db_check_parent(const char *path, char *err, size_t errlen)
{
	char		 dir[DB_PATH_MAX];
	const char	*slash;
	size_t		 n;
	struct stat	 st;

	if (strcmp(path, ":memory:") == 0)
		return 0;
	if (strlen(path) >= sizeof(dir)) {
		db_err(err, errlen, "database path too long");
		return -1;
	}
	if ((slash = strrchr(path, '/')) == NULL)
		return 0;			/* relative to the cwd, which exists */
	n = (size_t)(slash - path);
	if (n == 0)
		return 0;			/* "/file.db" */
	memcpy(dir, path, n);
	dir[n] = '\0';
	if (stat(dir, &st) == -1) {
		db_err(err, errlen, "database directory %s: %s", dir, strerror(errno));
		return -1;
	}
	if (!S_ISDIR(st.st_mode)) {
		db_err(err, errlen, "database directory %s: %s", dir, "not a directory");
		return -1;
	}
	return 0;
}

/*
 * Run one PRAGMA (or other statement) whose single text result, if any,
 * goes to out.  Returns SQLITE_OK or SQLite's (primary) error code.
 */
static int
db_exec_rc(sqlite3 *db, const char *sql, char *out, size_t outlen)
{
	sqlite3_stmt	*st = NULL;
	const unsigned char *txt;
	int		 rc;

	if (out != NULL && outlen > 0)
		out[0] = '\0';
	if ((rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL)) != SQLITE_OK)
		return rc & 0xff;
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW && out != NULL && outlen > 0 &&
	    (txt = sqlite3_column_text(st, 0)) != NULL)
		snprintf(out, outlen, "%s", (const char *)txt);
	sqlite3_finalize(st);
	return rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : rc & 0xff;
}

/* The same, 0 / -1. */
static int
db_exec_text(sqlite3 *db, const char *sql, char *out, size_t outlen)
{
	return db_exec_rc(db, sql, out, outlen) == SQLITE_OK ? 0 : -1;
}

/*
 * Switching a file to WAL takes an exclusive lock for which SQLite does not
 * always call the busy handler (two processes creating the file at once get
 * SQLITE_BUSY at once), so retry here, for as long as the busy timeout.
 */
static int
db_set_wal(sqlite3 *db, char *mode, size_t modelen)
{
	struct timespec	pause = { 0, DB_WAL_RETRY_MS * 1000000L };
	int		waited, rc;

	for (waited = 0; ; waited += DB_WAL_RETRY_MS) {
		rc = db_exec_rc(db, "PRAGMA journal_mode=WAL", mode, modelen);
		if (rc != SQLITE_BUSY && rc != SQLITE_LOCKED)
			break;
		if (waited >= DB_BUSY_TIMEOUT_MS)
			break;
		nanosleep(&pause, NULL);
	}
	return rc == SQLITE_OK ? 0 : -1;
}

static int
db_user_version(sqlite3 *db, long *version)
{
	char	 txt[32];
	char	*end;

	if (db_exec_text(db, "PRAGMA user_version", txt, sizeof(txt)) == -1)
		return -1;
	errno = 0;
	*version = strtol(txt, &end, 10);
	if (errno != 0 || end == txt || *end != '\0' || *version < 0)
		return -1;
	return 0;
}

/*
 * Bring the schema to version n.  The version is read again after BEGIN
 * IMMEDIATE has taken the write lock, so when two processes open a fresh
 * database at once the second one finds the work done and applies nothing.
 */
static int
db_migrate(sqlite3 *db, const struct db_migration *migrations, size_t n,
    char *err, size_t errlen)
{
	char	 sql[64];
	char	*msg = NULL;
	long	 version;
	size_t	 i;

	if (db_user_version(db, &version) == -1)
		goto sqlfail;
	if ((size_t)version >= n)
		return 0;			/* the common case: no lock taken */
	if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
		goto sqlfail;
	if (db_user_version(db, &version) == -1)
		goto rollback;
	for (i = (size_t)version; i < n; i++) {
		if (sqlite3_exec(db, migrations[i].sql, NULL, NULL, &msg) != SQLITE_OK) {
			db_err(err, errlen, "migration %zu: %s", i + 1,
			    msg != NULL ? msg : sqlite3_errmsg(db));
			sqlite3_free(msg);
			sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
			return -1;
		}
	}
	if ((size_t)version < n) {
		snprintf(sql, sizeof(sql), "PRAGMA user_version = %zu", n);
		if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK)
			goto rollback;
	}
	if (sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
		goto rollback;
	return 0;

 rollback:
	db_err(err, errlen, "migrating schema: %s", sqlite3_errmsg(db));
	sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
	return -1;
 sqlfail:
	db_err(err, errlen, "migrating schema: %s", sqlite3_errmsg(db));
	return -1;
}

sqlite3 *
db_open(const char *path, const struct db_migration *migrations, size_t n,
    char *err, size_t errlen)
{
	sqlite3	*db = NULL;
	char	 mode[16];
	int	 rc;

	if (path == NULL || *path == '\0') {
		db_err(err, errlen, "no database path configured (MAILKIT_DB)");
		return NULL;
	}
	if (db_check_parent(path, err, errlen) == -1)
		return NULL;
	/* NOMUTEX: one thread at a time uses a handle (db.h). */
	rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
	    SQLITE_OPEN_NOMUTEX, NULL);
	if (rc != SQLITE_OK) {
		db_err(err, errlen, "%s: %s", path,
		    db != NULL ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
		goto fail;
	}
	/* Before any statement that may need a lock, so those queue too. */
	sqlite3_busy_handler(db, db_busy, NULL);
	sqlite3_extended_result_codes(db, 1);

	/* WAL: readers never block the writer; NORMAL is durable across
	 * process crashes in WAL mode (only power loss may drop the last commits). */
	if (db_set_wal(db, mode, sizeof(mode)) == -1) {
		db_err(err, errlen, "%s: journal_mode: %s", path, sqlite3_errmsg(db));
		goto fail;
	}
	if (strcmp(mode, "wal") != 0 && strcmp(mode, "memory") != 0) {
		db_err(err, errlen, "%s: cannot use WAL (journal mode %s)", path, mode);
		goto fail;
	}
	/* a bounded page cache: the OS caches the file anyway, and a worker's
	 * memory must not creep up as tables grow (DB_CACHE_KIB) */
	if (db_exec_text(db, "PRAGMA cache_size=-" DB_CACHE_KIB, NULL, 0) == -1 ||
	    db_exec_text(db, "PRAGMA synchronous=NORMAL", NULL, 0) == -1 ||
	    db_exec_text(db, "PRAGMA foreign_keys=ON", NULL, 0) == -1) {
		db_err(err, errlen, "%s: %s", path, sqlite3_errmsg(db));
		goto fail;
	}
	if (db_migrate(db, migrations, n, err, errlen) == -1)
		goto fail;
	return db;

 fail:
	sqlite3_close_v2(db);			/* harmless on NULL */
	return NULL;
}

sqlite3_stmt *
db_stmt(sqlite3 *db, sqlite3_stmt **slot, const char *sql)
{
	if (*slot != NULL) {
		/* reset() reports the previous step's error; that was handled then. */
		sqlite3_reset(*slot);
		sqlite3_clear_bindings(*slot);
		return *slot;
	}
	if (sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, slot, NULL) !=
	    SQLITE_OK) {
		log_error("db: cannot prepare statement: %s", sqlite3_errmsg(db));
		sqlite3_finalize(*slot);
		*slot = NULL;
		return NULL;
	}
	return *slot;
}

static int
db_simple(sqlite3 *db, const char *sql)
{
	if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK) {
		log_error("db: %s: %s", sql, sqlite3_errmsg(db));
		return -1;
	}
	return 0;
}

/*
 * One write transaction at a time per process: the threads of a process
 * queue on this mutex, woken the moment it is free, instead of in SQLite's
 * busy handler, which polls the lock with sleeps of 1 ms and more (an idle
 * CPU and a slower answer for a wait of a few microseconds).  Other
 * processes still meet the busy timeout.
 */
static pthread_mutex_t	db_writer = PTHREAD_MUTEX_INITIALIZER;
static __thread int	db_writer_held;

static void
db_writer_release(void)
{
	if (db_writer_held) {
		db_writer_held = 0;
		pthread_mutex_unlock(&db_writer);
	}
}

int
db_begin(sqlite3 *db)
{
	if (!db_writer_held) {
		if (db_wait_lock(&db_writer) == -1) {
			log_warn("db: the write lock is busy: giving up");
			return -1;
		}
		db_writer_held = 1;
	}
	if (db_simple(db, "BEGIN IMMEDIATE") == -1) {
		db_writer_release();
		return -1;
	}
	return 0;
}

int
db_commit(sqlite3 *db)
{
	int rc = db_simple(db, "COMMIT");

	/* a failed COMMIT may leave the transaction open: end it here, so no
	 * caller can leave it (and the writer mutex) held */
	if (rc == -1 && sqlite3_get_autocommit(db) == 0)
		(void)db_simple(db, "ROLLBACK");
	db_writer_release();
	return rc;
}

void
db_rollback(sqlite3 *db)
{
	/* Silently a no-op when SQLite already rolled back (e.g. after SQLITE_FULL). */
	if (sqlite3_get_autocommit(db) == 0)
		(void)db_simple(db, "ROLLBACK");
	db_writer_release();
}
