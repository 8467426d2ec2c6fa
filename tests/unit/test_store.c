/* test_store.c: db.c (WAL, migrations once, cached statements) and store.c's tables. */
#include <sys/wait.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "db.h"
#include "settings.h"
#include "store.h"

#define TEST_FORKS	4	/* processes racing to migrate one fresh file */
#define TEST_ROUNDS	20	/* fresh files raced on */

static char dir[] = "/tmp/mailkit-test-store-XXXXXX";
static char path[sizeof(dir) + 32];

static void
setup(void)
{
	cr_assert_not_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/state.db", dir);
}

static void
teardown(void)
{
	char f[sizeof(path) + 8];

	store_close();
	unlink(path);
	snprintf(f, sizeof(f), "%s-wal", path);
	unlink(f);
	snprintf(f, sizeof(f), "%s-shm", path);
	unlink(f);
	rmdir(dir);
}

TestSuite(db, .init = setup, .fini = teardown);
TestSuite(store, .init = setup, .fini = teardown);

static const struct db_migration counting[] = {
	{ "CREATE TABLE runs (n INTEGER); INSERT INTO runs VALUES (1);" },
	{ "INSERT INTO runs VALUES (2); CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT);" },
};

static long
query_long(sqlite3 *db, const char *sql)
{
	sqlite3_stmt	*st;
	long		 v = -1;

	cr_assert_eq(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
	if (sqlite3_step(st) == SQLITE_ROW)
		v = (long)sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return v;
}

Test(db, missing_directory_is_named)
{
	char err[256] = "";

	cr_assert_null(db_open("/nonexistent-mailkit-dir/x.db", counting, 2, err, sizeof(err)));
	cr_assert_not_null(strstr(err, "/nonexistent-mailkit-dir"), "%s", err);
}

Test(db, empty_path_refused)
{
	char err[256] = "";

	cr_assert_null(db_open("", counting, 2, err, sizeof(err)));
	cr_assert_neq(err[0], '\0');
}

Test(db, wal_and_migrations_once)
{
	char	 err[256] = "";
	sqlite3	*db;
	const unsigned char *mode;
	sqlite3_stmt *st;

	db = db_open(path, counting, 1, err, sizeof(err));
	cr_assert_not_null(db, "%s", err);
	cr_assert_eq(query_long(db, "PRAGMA user_version"), 1);
	cr_assert_eq(query_long(db, "PRAGMA foreign_keys"), 1);
	cr_assert_eq(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL), SQLITE_OK);
	cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
	mode = sqlite3_column_text(st, 0);
	cr_assert_str_eq((const char *)mode, "wal");
	sqlite3_finalize(st);
	sqlite3_close(db);

	/* reopening with one more migration applies only that one */
	db = db_open(path, counting, 2, err, sizeof(err));
	cr_assert_not_null(db, "%s", err);
	cr_assert_eq(query_long(db, "PRAGMA user_version"), 2);
	cr_assert_eq(query_long(db, "SELECT count(*) FROM runs"), 2);
	sqlite3_close(db);

	db = db_open(path, counting, 2, err, sizeof(err));
	cr_assert_not_null(db, "%s", err);
	cr_assert_eq(query_long(db, "SELECT count(*) FROM runs"), 2);
	sqlite3_close(db);
}

Test(db, concurrent_openers_migrate_once)
{
	pid_t	 pids[TEST_FORKS];
	int	 i, round, status;
	char	 err[256] = "", file[sizeof(path) + 16], f[sizeof(file) + 8];
	sqlite3	*db;

	/* several rounds: the race (two processes creating the file) is timing-dependent */
	for (round = 0; round < TEST_ROUNDS; round++) {
		snprintf(file, sizeof(file), "%s.%d", path, round);
		for (i = 0; i < TEST_FORKS; i++) {
			pids[i] = fork();
			cr_assert_neq(pids[i], -1);
			if (pids[i] == 0) {
				sqlite3 *cdb = db_open(file, counting, 2, err, sizeof(err));

				if (cdb == NULL)
					fprintf(stderr, "%s\n", err);
				_exit(cdb != NULL && sqlite3_close(cdb) == SQLITE_OK ? 0 : 1);
			}
		}
		for (i = 0; i < TEST_FORKS; i++) {
			cr_assert_eq(waitpid(pids[i], &status, 0), pids[i]);
			cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
		}
		db = db_open(file, counting, 2, err, sizeof(err));
		cr_assert_not_null(db, "%s", err);
		cr_assert_eq(query_long(db, "SELECT count(*) FROM runs"), 2);
		sqlite3_close(db);
		unlink(file);
		snprintf(f, sizeof(f), "%s-wal", file);
		unlink(f);
		snprintf(f, sizeof(f), "%s-shm", file);
		unlink(f);
	}
}

Test(db, bad_migration_rolls_back)
{
	static const struct db_migration bad[] = {
		{ "CREATE TABLE a (x);" },
		{ "CREATE TABLE b (x); THIS IS NOT SQL;" },
	};
	char	 err[256] = "";
	sqlite3	*db;

	cr_assert_null(db_open(path, bad, 2, err, sizeof(err)));
	cr_assert_not_null(strstr(err, "migration 2"), "%s", err);
	db = db_open(path, bad, 0, err, sizeof(err));
	cr_assert_not_null(db, "%s", err);
	cr_assert_eq(query_long(db, "PRAGMA user_version"), 0);
	cr_assert_eq(query_long(db, "SELECT count(*) FROM sqlite_master WHERE name IN ('a','b')"), 0);
	sqlite3_close(db);
}

Test(db, cached_statement_reset_and_unbound)
{
	char		 err[256] = "";
	sqlite3		*db;
	sqlite3_stmt	*slot = NULL, *st, *again;

	db = db_open(path, counting, 2, err, sizeof(err));
	cr_assert_not_null(db, "%s", err);
	st = db_stmt(db, &slot, "SELECT ?1");
	cr_assert_not_null(st);
	sqlite3_bind_int(st, 1, 42);
	cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
	cr_assert_eq(sqlite3_column_int(st, 0), 42);
	again = db_stmt(db, &slot, "SELECT ?1");
	cr_assert_eq(again, st);
	cr_assert_eq(sqlite3_step(again), SQLITE_ROW);
	cr_assert_eq(sqlite3_column_type(again, 0), SQLITE_NULL);
	sqlite3_finalize(slot);

	slot = NULL;
	cr_assert_null(db_stmt(db, &slot, "SELEKT nonsense"));
	cr_assert_null(slot);

	cr_assert_eq(db_begin(db), 0);
	cr_assert_eq(sqlite3_exec(db, "INSERT INTO kv VALUES ('a', 'b')", NULL, NULL, NULL),
	    SQLITE_OK);
	db_rollback(db);
	cr_assert_eq(query_long(db, "SELECT count(*) FROM kv"), 0);
	cr_assert_eq(db_begin(db), 0);
	cr_assert_eq(sqlite3_exec(db, "INSERT INTO kv VALUES ('a', 'b')", NULL, NULL, NULL),
	    SQLITE_OK);
	cr_assert_eq(db_commit(db), 0);
	cr_assert_eq(query_long(db, "SELECT count(*) FROM kv"), 1);
	db_rollback(db);	/* no transaction: harmless */
	sqlite3_close(db);
}

/* --- store --- */

static struct settings
settings_for(char *p)
{
	struct settings s;

	memset(&s, 0, sizeof(s));
	s.db_path = p;
	return s;
}

Test(store, webhook_claim_lifecycle)
{
	struct settings	s = settings_for(path);
	struct mk_err	err;

	cr_assert_eq(store_open(&s, &err), 0, "%s", err.msg);
	cr_assert_eq(store_webhook_claim(&s, "msg_1", "credit.added", &err), STORE_CLAIM_NEW);
	cr_assert_eq(store_webhook_claim(&s, "msg_1", "credit.added", &err), STORE_CLAIM_BUSY);
	cr_assert_eq(store_webhook_release(&s, "msg_1", &err), 0);
	cr_assert_eq(store_webhook_claim(&s, "msg_1", "credit.added", &err), STORE_CLAIM_NEW);
	cr_assert_eq(store_webhook_done(&s, "msg_1", &err), 0);
	cr_assert_eq(store_webhook_claim(&s, "msg_1", "credit.added", &err), STORE_CLAIM_SEEN);
	/* a release after done changes nothing */
	cr_assert_eq(store_webhook_release(&s, "msg_1", &err), 0);
	cr_assert_eq(store_webhook_claim(&s, "msg_1", "credit.added", &err), STORE_CLAIM_SEEN);
	cr_assert_eq(store_webhook_claim(&s, "msg_2", "credit.added", &err), STORE_CLAIM_NEW);
	cr_assert_eq(store_webhook_claim(&s, "", "x", &err), -1);
}

Test(store, webhook_claim_survives_reopen_and_expired_lease_is_taken)
{
	struct settings	s = settings_for(path);
	struct mk_err	err;
	char		e[256];
	sqlite3		*db;

	cr_assert_eq(store_webhook_claim(&s, "msg_x", "t", &err), STORE_CLAIM_NEW);
	store_close();
	cr_assert_eq(store_webhook_claim(&s, "msg_x", "t", &err), STORE_CLAIM_BUSY);
	/* the worker holding it died long ago */
	db = db_open(path, NULL, 0, e, sizeof(e));
	cr_assert_not_null(db, "%s", e);
	cr_assert_eq(sqlite3_exec(db, "UPDATE webhook_events SET claimed_at = claimed_at - 3600",
	    NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
	cr_assert_eq(store_webhook_claim(&s, "msg_x", "t", &err), STORE_CLAIM_NEW);
}

Test(store, low_balance_set_get_clear)
{
	struct settings			s = settings_for(path);
	struct mk_err			err;
	struct store_low_balance	lb;

	cr_assert_eq(store_low_balance_get(&s, "cus_1", &lb, &err), 0);
	cr_assert_eq(store_low_balance_set(&s, "cus_1", "900", "1000", 1000, "msg_1", &err), 0);
	cr_assert_eq(store_low_balance_get(&s, "cus_1", &lb, &err), 1);
	cr_assert_str_eq(lb.available, "900");
	cr_assert_str_eq(lb.threshold, "1000");
	cr_assert_eq(lb.notified_at, 1000);

	/* a newer notice replaces it; an older one does not */
	cr_assert_eq(store_low_balance_set(&s, "cus_1", "500", "1000", 2000, "msg_2", &err), 0);
	cr_assert_eq(store_low_balance_set(&s, "cus_1", "950", "1000", 1500, "msg_3", &err), 0);
	cr_assert_eq(store_low_balance_get(&s, "cus_1", &lb, &err), 1);
	cr_assert_str_eq(lb.available, "500");

	/* a credit from before the notice does not clear it */
	cr_assert_eq(store_low_balance_clear(&s, "cus_1", 1800, &err), 0);
	cr_assert_eq(store_low_balance_get(&s, "cus_1", &lb, &err), 1);
	cr_assert_eq(store_low_balance_clear(&s, "cus_1", 2500, &err), 0);
	cr_assert_eq(store_low_balance_get(&s, "cus_1", &lb, &err), 0);

	/* a delayed notice from before the clear stays cleared; a later one counts */
	cr_assert_eq(store_low_balance_set(&s, "cus_1", "400", "1000", 2400, "msg_4", &err), 0);
	cr_assert_eq(store_low_balance_get(&s, "cus_1", &lb, &err), 0);
	cr_assert_eq(store_low_balance_set(&s, "cus_1", "300", "1000", 3000, "msg_5", &err), 0);
	cr_assert_eq(store_low_balance_get(&s, "cus_1", &lb, &err), 1);
	cr_assert_str_eq(lb.available, "300");

	/* other customers are untouched; clearing nothing is fine */
	cr_assert_eq(store_low_balance_get(&s, "cus_2", &lb, &err), 0);
	cr_assert_eq(store_low_balance_clear(&s, "cus_2", 0, &err), 0);
}

/* One notice per downward crossing: the first event of a low period owns it. */
Test(store, low_balance_one_notice_per_crossing)
{
	struct settings	s = settings_for(path);
	struct mk_err	err;

	cr_assert_eq(store_low_balance_set(&s, "cus_9", "999", "1000", 100, "msg_a", &err), 0);
	cr_expect_eq(store_low_balance_owner(&s, "cus_9", "msg_a", &err), 1);
	/* the same event redelivered still owns it (its retry resends the notice) */
	cr_assert_eq(store_low_balance_set(&s, "cus_9", "999", "1000", 100, "msg_a", &err), 0);
	cr_expect_eq(store_low_balance_owner(&s, "cus_9", "msg_a", &err), 1);
	/* a second event while still low does not */
	cr_assert_eq(store_low_balance_set(&s, "cus_9", "500", "1000", 200, "msg_b", &err), 0);
	cr_expect_eq(store_low_balance_owner(&s, "cus_9", "msg_b", &err), 0);
	cr_expect_eq(store_low_balance_owner(&s, "cus_9", "msg_a", &err), 1);
	/* a top-up re-arms: the next crossing's event owns the new period */
	cr_assert_eq(store_low_balance_clear(&s, "cus_9", 300, &err), 0);
	cr_expect_eq(store_low_balance_owner(&s, "cus_9", "msg_a", &err), 0);
	cr_assert_eq(store_low_balance_set(&s, "cus_9", "900", "1000", 400, "msg_c", &err), 0);
	cr_expect_eq(store_low_balance_owner(&s, "cus_9", "msg_c", &err), 1);
	cr_expect_eq(store_low_balance_owner(&s, "cus_9", "msg_b", &err), 0);
}

static int
count_rows(const struct store_send *row, void *arg)
{
	(void)row;
	(*(int *)arg)++;
	return 0;
}

/* The send journal: insert, replay, mismatch, busy, takeover, pending list. */
Test(store, send_journal_lifecycle)
{
	struct settings		s = settings_for(path);
	struct mk_err		err;
	struct store_send	a, b;
	int			n = 0;

	cr_assert_eq(store_send_begin(&s, "k1", "cus_1", "h1", "{\"to\":[\"a@b.io\"]}", &a,
	    &err), STORE_SEND_OWNED);
	cr_expect_eq(a.state, SEND_NEW);
	/* a concurrent duplicate sees a live owner (this process) */
	cr_expect_eq(store_send_begin(&s, "k1", "cus_1", "h1", "{}", &b, &err), STORE_SEND_BUSY);
	store_send_free(&b);
	/* same key, other request or other customer */
	cr_expect_eq(store_send_begin(&s, "k1", "cus_1", "h2", "{}", &b, &err),
	    STORE_SEND_MISMATCH);
	store_send_free(&b);
	cr_expect_eq(store_send_begin(&s, "k1", "cus_2", "h1", "{}", &b, &err),
	    STORE_SEND_MISMATCH);
	store_send_free(&b);

	cr_assert_eq(store_send_advance(&s, &a, SEND_DEBITED, 0, NULL, NULL, &err), 0);
	/* a released row is resumable, in the state it reached */
	cr_assert_eq(store_send_release(&s, &a, 504, "timed out", &err), 0);
	cr_expect_eq(store_send_pending(&s, time(NULL) + 1, count_rows, &n, &err), 1);
	cr_assert_eq(store_send_begin(&s, "k1", "cus_1", NULL, NULL, &b, &err), STORE_SEND_OWNED);
	cr_expect_eq(b.state, SEND_DEBITED);
	cr_expect_str_eq(b.message, "{\"to\":[\"a@b.io\"]}");
	/* the old owner lost the row: its advance fails */
	cr_expect_eq(store_send_advance(&s, &a, SEND_SENDING, 0, NULL, NULL, &err), -1);
	cr_assert_eq(store_send_advance(&s, &b, SEND_SENT, 200, "id-1", "id-1", &err), 0);
	store_send_free(&a);
	store_send_free(&b);

	/* final: replayed, not pending */
	cr_assert_eq(store_send_begin(&s, "k1", "cus_1", "h1", "{}", &a, &err), STORE_SEND_FINAL);
	cr_expect_eq(a.status, 200);
	cr_expect_str_eq(a.email_id, "id-1");
	store_send_free(&a);
	n = 0;
	cr_expect_eq(store_send_pending(&s, time(NULL) + 1, count_rows, &n, &err), 0);
	n = 0;
	cr_expect_eq(store_send_list(&s, 0, count_rows, &n, &err), 1);
	/* resuming an unknown key is an error, not an insert */
	cr_expect_eq(store_send_begin(&s, "nope", "cus_1", NULL, NULL, &a, &err), -1);
}

/* A claim held by a dead process is taken over at once, not after the lease. */
Test(store, send_journal_dead_owner)
{
	struct settings		s = settings_for(path);
	struct mk_err		err;
	struct store_send	a;
	pid_t			pid;
	int			status;

	if ((pid = fork()) == 0) {
		struct store_send c;

		store_close();
		_exit(store_send_begin(&s, "k2", "cus_1", "h", "{}", &c, &err) ==
		    STORE_SEND_OWNED ? 0 : 1);	/* exits owning the row */
	}
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert_eq(WEXITSTATUS(status), 0);
	cr_expect_eq(store_send_begin(&s, "k2", "cus_1", "h", "{}", &a, &err), STORE_SEND_OWNED);
	store_send_free(&a);
}

Test(store, unusable_path_is_503)
{
	static char	bad[] = "/nonexistent-mailkit-dir/state.db";
	struct settings	s = settings_for(bad);
	struct mk_err	err;

	cr_assert_eq(store_open(&s, &err), -1);
	cr_assert_eq(err.status, 503);
	cr_assert_eq(store_webhook_claim(&s, "msg_1", "t", &err), -1);
}

/* --- API keys, claims --- */

static int
count_keys(const struct store_key *k, void *arg)
{
	int *n = arg;

	(void)k;
	(*n)++;
	return 0;
}

Test(store, keys_one_active_per_customer_rotate_revoke)
{
	struct settings		s = settings_for(path);
	struct mk_err		err;
	struct store_key	k;
	long long		id1 = 0, id2 = 0;
	int			n = 0;

	cr_assert_eq(store_key_active(&s, "cus_1", 0, &err), 0);
	cr_assert_eq(store_key_active(&s, "cus_1", 1, &err), 0);
	cr_assert_eq(store_key_issue(&s, "cus_1", "hash1", "mk_a...", "test", 0, &id1, &err),
	    STORE_KEY_ISSUED, "%s", err.msg);
	cr_expect_gt(id1, 0);
	cr_assert_eq(store_key_active(&s, "cus_1", 0, &err), 1);
	/* a second issue without rotate loses: the first key stays the only one */
	cr_assert_eq(store_key_issue(&s, "cus_1", "hash2", "mk_b...", "test", 0, &id2, &err),
	    STORE_KEY_EXISTS);
	cr_assert_eq(store_key_find(&s, "hash2", &k, &err), 0, "not recorded");
	/* another customer is independent */
	cr_assert_eq(store_key_issue(&s, "cus_2", "hash3", "mk_c...", "test", 0, NULL, &err),
	    STORE_KEY_ISSUED);
	cr_assert_eq(store_key_find(&s, "hash1", &k, &err), 1);
	cr_expect_str_eq(k.customer_id, "cus_1");
	cr_expect_eq(k.revoked_at, 0);
	cr_expect_str_eq(k.shown, "mk_a...");
	/* rotate: the old key is revoked in the same transaction */
	cr_assert_eq(store_key_issue(&s, "cus_1", "hash4", "mk_d...", "rotate", 1, &id2, &err),
	    STORE_KEY_ISSUED);
	cr_assert_eq(store_key_find(&s, "hash1", &k, &err), 1);
	cr_expect_neq(k.revoked_at, 0, "old key revoked");
	cr_assert_eq(store_key_find(&s, "hash4", &k, &err), 1);
	cr_expect_eq(k.revoked_at, 0);
	/* revoke all of cus_1 */
	cr_assert_eq(store_key_revoke(&s, "cus_1", &err), 1);
	cr_assert_eq(store_key_active(&s, "cus_1", 0, &err), 0);
	cr_assert_eq(store_key_active(&s, "cus_1", 1, &err), 1, "revoked keys count with any");
	cr_assert_eq(store_key_find(&s, "hash4", &k, &err), 1);
	cr_expect_neq(k.revoked_at, 0);
	cr_assert_eq(store_key_active(&s, "cus_2", 0, &err), 1);
	/* a withdrawn issue leaves room for a new one */
	cr_assert_eq(store_key_issue(&s, "cus_1", "hash5", "mk_e...", "test", 0, &id1, &err),
	    STORE_KEY_ISSUED);
	cr_assert_eq(store_key_forget(&s, id1, &err), 0);
	cr_assert_eq(store_key_find(&s, "hash5", &k, &err), 0);
	cr_assert_eq(store_key_active(&s, "cus_1", 0, &err), 0);
	cr_assert_eq(store_key_list(&s, "cus_1", count_keys, &n, &err), 2);
	n = 0;
	cr_assert_eq(store_key_list(&s, "", count_keys, &n, &err), 3);
	cr_expect_eq(n, 3);
}

Test(store, claims_are_one_time_per_email_and_expire)
{
	struct settings	s = settings_for(path);
	struct mk_err	err;
	time_t		now = time(NULL);

	cr_assert_eq(store_claim_add(&s, "th1", "cks_1", "Buyer@Example.org", now + 600, &err), 0,
	    "%s", err.msg);
	cr_assert_eq(store_claim_pending(&s, "buyer@example.org", &err), 1, "case-insensitive");
	cr_assert_eq(store_claim_pending(&s, "other@example.org", &err), 0);
	cr_assert_eq(store_claim_take(&s, "th1", "other@example.org", &err), 0, "another buyer");
	cr_assert_eq(store_claim_take(&s, "nope", "buyer@example.org", &err), 0, "unknown token");
	cr_assert_eq(store_claim_take(&s, "th1", "BUYER@example.org", &err), 1);
	cr_assert_eq(store_claim_take(&s, "th1", "buyer@example.org", &err), 0, "once only");
	/* just taken: its key is being issued, so it still holds off the webhook */
	cr_assert_eq(store_claim_pending(&s, "buyer@example.org", &err), 1);
	cr_assert_eq(store_claim_give_back(&s, "th1", &err), 0);
	cr_assert_eq(store_claim_take(&s, "th1", "buyer@example.org", &err), 1, "given back");
	{
		char	e[256];
		sqlite3	*db = db_open(path, NULL, 0, e, sizeof(e));

		cr_assert_not_null(db, "%s", e);
		cr_assert_eq(sqlite3_exec(db, "UPDATE key_claims SET redeemed_at = redeemed_at - 3600",
		    NULL, NULL, NULL), SQLITE_OK);
		sqlite3_close(db);
	}
	cr_assert_eq(store_claim_pending(&s, "buyer@example.org", &err), 0, "taken long ago");
	cr_assert_eq(store_claim_add(&s, "th2", "cks_2", "late@example.org", now - 1, &err), 0);
	cr_assert_eq(store_claim_pending(&s, "late@example.org", &err), 0, "expired");
	cr_assert_eq(store_claim_take(&s, "th2", "late@example.org", &err), 0, "expired");
}
