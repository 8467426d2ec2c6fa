/* test_store.c: db.c (WAL, migrations once, cached statements) and the store's tables, each
 * state of the send journal (store_send.h) included. */
#include <sys/wait.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "db.h"
#include "settings.h"
#include "store.h"

#include "tempdb.h"

#define TEST_FORKS	4	/* processes racing to migrate one fresh file */
#define TEST_ROUNDS	20	/* fresh files raced on */

static char dir[] = "/tmp/mailkit-test-store-XXXXXX";
static char path[sizeof(dir) + 32];

static void
setup(void)
{
	tempdb_make(dir, path, sizeof path);
}

static void
teardown(void)
{
	tempdb_remove(dir, path);
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

#define MSG	"{\"from\":\"a@b.io\",\"to\":[\"x@y.io\"],\"subject\":\"s\",\"html\":\"<p>body</p>\"}"

/* Begin a new row k for cus_1 and move it to `state` with `status`, released or kept. */
static void
row_at(struct settings *s, const char *k, enum store_send_state state, int status,
    int release, struct store_send *row)
{
	struct mk_err err;

	cr_assert_eq(store_send_begin(s, k, "cus_1", "h", MSG, row, &err), STORE_SEND_OWNED);
	row->state = state;
	row->status = status;
	if (release)
		cr_assert_eq(store_send_release(s, row, 0, &err), 0, "%s", err.msg);
	else
		cr_assert_eq(store_send_save(s, row, &err), 0, "%s", err.msg);
}

/* Whether k's stored message still holds its body. */
static int
has_body(struct settings *s, const char *k)
{
	struct store_send	r;
	struct mk_err		err;
	int			body;

	cr_assert_eq(store_send_get(s, "cus_1", k, &r, &err), 1);
	body = strstr(r.message, "<p>body</p>") != NULL;
	cr_expect(strstr(r.message, "x@y.io") != NULL, "recipients are kept: %s", r.message);
	store_send_free(&r);
	return body;
}

/* new -> owned; a live owner makes duplicates busy; other request or customer: mismatch. */
Test(store, send_new_busy_mismatch)
{
	struct settings		s = settings_for(path);
	struct mk_err		err;
	struct store_send	a, b;

	cr_assert_eq(store_send_begin(&s, "k1", "cus_1", "h1", MSG, &a, &err), STORE_SEND_OWNED);
	cr_expect_eq(a.state, SEND_NEW);
	cr_expect(a.inserted);
	cr_expect_eq(store_send_begin(&s, "k1", "cus_1", "h1", MSG, &b, &err), STORE_SEND_BUSY);
	store_send_free(&b);
	cr_expect_eq(store_send_begin(&s, "k1", "cus_1", "h2", MSG, &b, &err),
	    STORE_SEND_MISMATCH);
	store_send_free(&b);
	cr_expect_eq(store_send_begin(&s, "k1", "cus_2", "h1", MSG, &b, &err),
	    STORE_SEND_MISMATCH);
	store_send_free(&b);
	/* resuming an unknown key is an error, not an insert */
	cr_expect_eq(store_send_begin(&s, "nope", "cus_1", NULL, NULL, &b, &err), -1);
	cr_expect_eq(err.status, 404);
	store_send_free(&a);
}

/* sending (queued, 202) -> released, due after its delay, taken up with its fields. */
Test(store, send_queued_is_due_and_taken_up)
{
	struct settings		s = settings_for(path);
	struct mk_err		err;
	struct store_send	a, b;
	char			keys[4][STORE_SEND_KEY_MAX];

	cr_assert_eq(store_send_begin(&s, "k1", "cus_1", "h", MSG, &a, &err), STORE_SEND_OWNED);
	/* owned and in flight: due (since its insert) but not listed */
	cr_expect_eq(store_send_due(&s, time(NULL) + 1, keys, 4, &err), 0);
	a.state = SEND_SENDING;
	a.status = 202;
	a.debited = 1;
	snprintf(a.debit_entry, sizeof a.debit_entry, "cle_1");
	a.attempts = 1;
	cr_assert_eq(store_send_release(&s, &a, 60, &err), 0);
	cr_expect_eq(store_send_due(&s, time(NULL), keys, 4, &err), 0, "not before its time");
	cr_assert_eq(store_send_due(&s, time(NULL) + 61, keys, 4, &err), 1);
	cr_expect_str_eq(keys[0], "k1");
	/* a client's retry may take it up at any time */
	cr_assert_eq(store_send_begin(&s, "k1", "cus_1", "h", MSG, &b, &err), STORE_SEND_OWNED);
	cr_expect_eq(b.state, SEND_SENDING);
	cr_expect(b.debited);
	cr_expect_str_eq(b.debit_entry, "cle_1");
	cr_expect_eq(b.attempts, 1);
	cr_expect(strstr(b.message, "<p>body</p>") != NULL, "a queued send keeps its body");
	/* the old owner lost the row */
	cr_expect_eq(store_send_save(&s, &a, &err), -1);
	store_send_free(&a);
	store_send_free(&b);
}

/* sent: final, replayed, released, no longer due, body dropped. */
Test(store, send_sent_is_final)
{
	struct settings		s = settings_for(path);
	struct mk_err		err;
	struct store_send	a;
	char			keys[4][STORE_SEND_KEY_MAX];
	int			n = 0;

	row_at(&s, "k1", SEND_SENT, 200, 0, &a);
	cr_expect_eq(a.owner_token, 0, "a final state lets go of the row");
	store_send_free(&a);
	cr_assert_eq(store_send_begin(&s, "k1", "cus_1", "h", MSG, &a, &err), STORE_SEND_FINAL);
	cr_expect_eq(a.status, 200);
	store_send_free(&a);
	cr_expect_eq(store_send_due(&s, time(NULL) + 1000, keys, 4, &err), 0);
	cr_expect_not(has_body(&s, "k1"));
	cr_expect_eq(store_send_list(&s, 0, count_rows, &n, &err), 1);
	cr_expect_eq(n, 1);
}

/* rejected (402 before any debit): final, no body. */
Test(store, send_rejected_keeps_no_body)
{
	struct settings		s = settings_for(path);
	struct store_send	a;

	row_at(&s, "k1", SEND_REJECTED, 402, 0, &a);
	store_send_free(&a);
	cr_expect_not(has_body(&s, "k1"));
}

/* refunding: not final (the background owes the refund), but nothing to send: no body. */
Test(store, send_refunding_is_due_without_body)
{
	struct settings		s = settings_for(path);
	struct mk_err		err;
	struct store_send	a;
	char			keys[4][STORE_SEND_KEY_MAX];

	row_at(&s, "k1", SEND_REFUNDING, 400, 1, &a);
	store_send_free(&a);
	cr_expect_not(has_body(&s, "k1"));
	cr_expect_eq(store_send_due(&s, time(NULL), keys, 4, &err), 1);
}

/* voiding with a 402 answer: replayed as final, fenced by the background, no body. */
Test(store, send_voiding_402_replays)
{
	struct settings		s = settings_for(path);
	struct mk_err		err;
	struct store_send	a;
	char			keys[4][STORE_SEND_KEY_MAX];

	row_at(&s, "k1", SEND_VOIDING, 402, 1, &a);
	store_send_free(&a);
	cr_assert_eq(store_send_begin(&s, "k1", "cus_1", "h", MSG, &a, &err), STORE_SEND_FINAL);
	cr_expect_eq(a.status, 402);
	store_send_free(&a);
	cr_expect_not(has_body(&s, "k1"));
	cr_expect_eq(store_send_due(&s, time(NULL), keys, 4, &err), 1, "the fence is due");
	/* the background takes it up (no customer or hash to compare) to fence it */
	cr_assert_eq(store_send_begin(&s, "k1", NULL, NULL, NULL, &a, &err), STORE_SEND_OWNED);
	cr_expect_eq(a.state, SEND_VOIDING);
	store_send_free(&a);
}

/* voiding with a 5xx answer: the client's retry takes it up again, body intact. */
Test(store, send_voiding_5xx_is_taken_up)
{
	struct settings		s = settings_for(path);
	struct mk_err		err;
	struct store_send	a;

	row_at(&s, "k1", SEND_VOIDING, 504, 1, &a);
	store_send_free(&a);
	cr_expect(has_body(&s, "k1"));
	cr_assert_eq(store_send_begin(&s, "k1", "cus_1", "h", MSG, &a, &err), STORE_SEND_OWNED);
	cr_expect_eq(a.state, SEND_VOIDING);
	cr_expect_eq(a.status, 504);
	/* voided: final; the refund entry shows in the row */
	a.state = SEND_VOIDED;
	a.debited = a.refunded = 1;
	snprintf(a.refund_entry, sizeof a.refund_entry, "cle_r");
	cr_assert_eq(store_send_save(&s, &a, &err), 0);
	store_send_free(&a);
	cr_assert_eq(store_send_get(&s, "cus_1", "k1", &a, &err), 1);
	cr_expect_eq(a.state, SEND_VOIDED);
	cr_expect(a.debited && a.refunded);
	cr_expect_str_eq(a.debit_entry, "");
	cr_expect_str_eq(a.refund_entry, "cle_r");
	store_send_free(&a);
	cr_expect_not(has_body(&s, "k1"));
}

/* A final state queued by store_send_finish() is written by the writer thread. */
Test(store, send_finish_is_written_soon)
{
	struct settings		s = settings_for(path);
	struct mk_err		err;
	struct store_send	a, b;
	int			r = -1;

	cr_assert_eq(store_send_begin(&s, "k1", "cus_1", "h", MSG, &a, &err), STORE_SEND_OWNED);
	a.state = SEND_SENT;
	a.status = 200;
	cr_assert_eq(store_send_finish(&s, &a, &err), 0);
	for (int i = 0; i < 200; i++) {		/* up to 2 s; written within ~10 ms */
		r = store_send_begin(&s, "k1", "cus_1", "h", MSG, &b, &err);
		store_send_free(&b);
		if (r == STORE_SEND_FINAL)
			break;
		usleep(10000);
	}
	cr_expect_eq(r, STORE_SEND_FINAL);
	store_send_free(&a);
}

/* Lookups by email id (a key prefix) and the customer's pages, newest first. */
Test(store, send_get_and_page)
{
	struct settings		s = settings_for(path);
	struct mk_err		err;
	struct store_send	a;
	const char		*k[3] = { "aaaa1", "bbbb2", "cccc3" };
	int			n;

	for (int i = 0; i < 3; i++) {
		row_at(&s, k[i], SEND_SENT, 200, 0, &a);
		store_send_free(&a);
	}
	cr_expect_eq(store_send_get(&s, "cus_1", "bbbb", &a, &err), 1);
	cr_expect_str_eq(a.key, "bbbb2");
	store_send_free(&a);
	cr_expect_eq(store_send_get(&s, "cus_2", "bbbb", &a, &err), 0, "another customer's");
	n = 0;
	cr_expect_eq(store_send_page(&s, "cus_1", NULL, 2, count_rows, &n, &err), 2);
	n = 0;
	cr_expect_eq(store_send_page(&s, "cus_1", "bbbb", 10, count_rows, &n, &err), 1);
	cr_expect_eq(store_send_page(&s, "cus_1", "ffff", 10, count_rows, &n, &err), -1);
	cr_expect_eq(err.status, 400);
	cr_expect_eq(store_send_page(&s, "cus_2", NULL, 10, count_rows, &n, &err), 0);
}

/* A claim held by a dead process is taken over at once, not after the lease. */
Test(store, send_journal_dead_owner)
{
	struct settings		s = settings_for(path);
	struct mk_err		err;
	struct store_send	a;
	char			keys[4][STORE_SEND_KEY_MAX];
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
	/* the background finds it at once ... */
	cr_expect_eq(store_send_due(&s, time(NULL), keys, 4, &err), 1);
	/* ... and so does the client's retry */
	cr_expect_eq(store_send_begin(&s, "k2", "cus_1", "h", "{}", &a, &err), STORE_SEND_OWNED);
	store_send_free(&a);
}

/* A claim made on another host is not judged by a pid there: its lease decides. */
Test(store, send_claim_on_another_host_waits_for_its_lease)
{
	struct settings		s = settings_for(path);
	struct mk_err		err;
	struct store_send	a;
	char			keys[4][STORE_SEND_KEY_MAX];
	sqlite3			*db;

	cr_assert_eq(store_send_begin(&s, "k1", "cus_1", "h", MSG, &a, &err), STORE_SEND_OWNED);
	store_send_free(&a);
	cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK);
	/* another host's worker, with a pid that means nothing (or no one) here */
	cr_assert_eq(sqlite3_exec(db, "UPDATE sends SET owner_host = 'elsewhere',"
	    " owner_pid = 2147483646", NULL, NULL, NULL), SQLITE_OK);
	cr_expect_eq(store_send_begin(&s, "k1", "cus_1", "h", MSG, &a, &err), STORE_SEND_BUSY);
	store_send_free(&a);
	cr_expect_eq(store_send_due(&s, time(NULL) + 1, keys, 4, &err), 0);
	/* its lease ends: the row is anyone's */
	cr_assert_eq(sqlite3_exec(db, "UPDATE sends SET lease_until = 1", NULL, NULL, NULL),
	    SQLITE_OK);
	sqlite3_close(db);
	cr_expect_eq(store_send_due(&s, time(NULL) + 1, keys, 4, &err), 1);
	cr_expect_eq(store_send_begin(&s, "k1", "cus_1", "h", MSG, &a, &err), STORE_SEND_OWNED);
	store_send_free(&a);
}

/* Rows of the schema before migration 8 keep their meaning: states renumbered, bodies of
 * finished rows dropped, unfinished rows due. */
Test(store, send_migration_8)
{
	struct settings	s = settings_for(path);
	struct mk_err	err;
	struct store_send a;
	char		keys[4][STORE_SEND_KEY_MAX];
	sqlite3		*db;

	cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK);
	cr_assert_eq(sqlite3_exec(db,
	    "CREATE TABLE sends (key TEXT PRIMARY KEY, customer_id TEXT NOT NULL,"
	    " request_hash TEXT NOT NULL, message TEXT NOT NULL, state INTEGER NOT NULL,"
	    " status INTEGER NOT NULL DEFAULT 0, reply TEXT NOT NULL DEFAULT '',"
	    " email_id TEXT NOT NULL DEFAULT '', owner_pid INTEGER, owner_token INTEGER,"
	    " lease_until INTEGER, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);"
	    "CREATE INDEX sends_open ON sends(updated_at) WHERE state < 4;"
	    "INSERT INTO sends (key, customer_id, request_hash, message, state, status,"
	    " created_at, updated_at) VALUES"
	    " ('old-sent', 'cus_1', 'h', '" MSG "', 4, 200, 1, 1),"
	    " ('old-debited', 'cus_1', 'h', '" MSG "', 1, 504, 1, 1);"
	    "PRAGMA user_version = 7;", NULL, NULL, NULL), SQLITE_OK, "%s", sqlite3_errmsg(db));
	sqlite3_close(db);

	cr_assert_eq(store_send_get(&s, "cus_1", "old-sent", &a, &err), 1, "%s", err.msg);
	cr_expect_eq(a.state, SEND_SENT);
	cr_expect(a.debited, "a sent row's debit stands");
	store_send_free(&a);
	cr_expect_not(has_body(&s, "old-sent"));
	cr_expect(has_body(&s, "old-debited"));
	cr_expect_eq(store_send_due(&s, time(NULL), keys, 4, &err), 1);
	cr_expect_str_eq(keys[0], "old-debited");
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
