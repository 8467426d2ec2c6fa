/* test_usage.c: usage.h's arithmetic and keys, and the holds journal (store_usage.h):
 * admission, settlement, release, FIFO clears with their cap and snapshot, the outbox. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "billing.h"
#include "settings.h"
#include "store.h"
#include "usage.h"

#include "tempdb.h"

static char dir[] = "/tmp/mailkit-test-usage-XXXXXX";
static char path[sizeof(dir) + 32];
static struct settings s;

static void
setup(void)
{
	tempdb_make(dir, path, sizeof path);
	memset(&s, 0, sizeof s);
	s.db_path = path;
}

static void
teardown(void)
{
	tempdb_remove(dir, path);
}

TestSuite(usage, .init = setup, .fini = teardown);

Test(usage, hold_bounds_prompt_and_completion)
{
	/* bytes + an overhead per message and one for the reply + max_tokens */
	cr_assert_eq(usage_hold(0, 1, 0), 2 * USAGE_MESSAGE_OVERHEAD);
	cr_assert_eq(usage_hold(100, 1, 50), 100 + 2 * USAGE_MESSAGE_OVERHEAD + 50);
	cr_assert_eq(usage_hold(100, 3, 50), 100 + 4 * USAGE_MESSAGE_OVERHEAD + 50);
}

Test(usage, messages_are_checked_and_copied_clean)
{
	struct mk_err	 err;
	size_t		 bytes;
	json_object	*in, *out;

	in = json_tokener_parse("[{\"role\":\"system\",\"content\":\"be brief\",\"name\":\"x\"},"
	    "{\"role\":\"user\",\"content\":\"hi\"}]");
	cr_assert_not_null(out = usage_messages(in, &bytes, &err), "%s", err.msg);
	cr_assert_eq(bytes, 10);
	cr_assert_str_eq(json_object_to_json_string_ext(out, JSON_C_TO_STRING_PLAIN),
	    "[{\"role\":\"system\",\"content\":\"be brief\"},{\"role\":\"user\",\"content\":\"hi\"}]");
	json_object_put(out);
	json_object_put(in);
	for (const char *bad = NULL, *const *b = (const char *const[]){ "[]", "{}",
	    "[{\"role\":\"tool\",\"content\":\"x\"}]", "[{\"role\":\"user\"}]",
	    "[{\"role\":\"user\",\"content\":[]}]", NULL }; (bad = *b) != NULL; b++) {
		in = json_tokener_parse(bad);
		cr_assert_null(usage_messages(in, &bytes, &err), "%s", bad);
		cr_assert_eq(err.status, 400);
		json_object_put(in);
	}
}

Test(usage, overage_room)
{
	struct settings_plan starter = { .name = "starter", .credits = 10, .overage_limit = 0 };
	struct settings_plan pro = { .name = "pro", .credits = 40, .overage_limit = 1000 };

	cr_assert_eq(usage_overage_room(NULL, "0"), 0);
	cr_assert_eq(usage_overage_room(&starter, "0"), 0);
	cr_assert_eq(usage_overage_room(&pro, "0"), 1000);
	cr_assert_eq(usage_overage_room(&pro, "250"), 750);
	cr_assert_eq(usage_overage_room(&pro, "250.5"), 750);
	cr_assert_eq(usage_overage_room(&pro, "1000"), 0);
	cr_assert_eq(usage_overage_room(&pro, "1500"), 0, "never below zero");
}

Test(usage, keys_derive_from_the_journal_key)
{
	char a[STORE_USAGE_KEY_MAX], b[STORE_USAGE_KEY_MAX], c[STORE_USAGE_KEY_MAX];
	char ev[USAGE_KEY_MAX], debit[USAGE_KEY_MAX], prefix[64];

	cr_assert_eq(billing_key_base("cus_1", "k1", a, sizeof a), 0);
	cr_assert_eq(billing_key_base("cus_1", "k1", b, sizeof b), 0);
	cr_assert_str_eq(a, b, "the same customer and key give the same journal key");
	cr_assert_eq(billing_key_base("cus_2", "k1", c, sizeof c), 0);
	cr_assert_str_neq(a, c, "another customer's key is another request");
	usage_event_id(a, ev);
	usage_debit_key(a, debit);
	cr_assert_eq(strncmp(ev, "mk-gen-", 7), 0);
	cr_assert_str_eq(ev + 7, a);
	cr_assert_eq(strlen(debit), strlen(ev) + strlen("-debit"));
	cr_assert_eq(strncmp(debit, ev, strlen(ev)), 0);
	cr_assert_eq(usage_id_prefix("gen_0123456789abcdef0123456789ABCDEF", prefix,
	    sizeof prefix), 0);
	cr_assert_str_eq(prefix, "0123456789abcdef0123456789abcdef");
	cr_assert_eq(usage_id_prefix("gen_0123", prefix, sizeof prefix), -1);
	cr_assert_eq(usage_id_prefix("xyz_0123456789abcdef0123456789abcdef", prefix,
	    sizeof prefix), -1);
	cr_assert_eq(usage_id_prefix("gen_0123456789abcdef0123456789abcdeg", prefix,
	    sizeof prefix), -1);
}

/* Admit key for cus_1 with hold against balance/room and the clear snapshot seq. */
static int
admit(const char *key, long hold, long balance, long room, long long seq,
    struct store_usage *row, struct store_usage_room *fig)
{
	struct mk_err err;
	int r = store_usage_admit(&s, key, "cus_1", "", hold, hold, balance, room, seq, 60, row,
	    fig, &err);

	cr_assert_neq(r, -1, "%s", err.msg);
	return r;
}

static void
settle(struct store_usage *row, long tokens)
{
	struct mk_err err;

	row->tokens = tokens;
	row->prompt_tokens = tokens / 2;
	row->completion_tokens = tokens - tokens / 2;
	free(row->answer);
	row->answer = strdup("an answer");
	cr_assert_eq(store_usage_settle(&s, row, &err), 0, "%s", err.msg);
	store_usage_free(row);
}

Test(usage, admission_counts_holds_and_unsettled_usage)
{
	struct store_usage	a, b, c, d;
	struct store_usage_room	fig;
	struct mk_err		err;

	/* balance 100: holds of 40 and 40 fit, a third does not */
	cr_assert_eq(admit("a", 40, 100, 0, 0, &a, &fig), STORE_USAGE_OWNED);
	cr_assert_eq(admit("b", 40, 100, 0, 0, &b, &fig), STORE_USAGE_OWNED);
	cr_assert_eq(fig.held, 40);
	cr_assert_eq(admit("c", 40, 100, 0, 0, &c, &fig), STORE_USAGE_REFUSED);
	cr_assert_eq(fig.available, 20);
	/* a settles to 10 tokens: 100 - 10 unsettled - 40 held = 50 */
	settle(&a, 10);
	cr_assert_eq(admit("c", 40, 100, 0, 0, &c, &fig), STORE_USAGE_OWNED);
	cr_assert_eq(fig.unsettled, 10);
	/* b fails: its hold goes, nothing billed */
	cr_assert_eq(store_usage_release(&s, &b, &err), 0, "%s", err.msg);
	store_usage_free(&b);
	store_usage_free(&c);
	cr_assert_eq(admit("d", 50, 100, 0, 0, &d, &fig), STORE_USAGE_OWNED);
	cr_assert_eq(fig.available, 100 - 10 - 40);
	store_usage_free(&d);
	/* at zero balance: only overage room admits (Pro), none for Starter */
	cr_assert_eq(admit("e", 1, 0, 0, 0, &d, &fig), STORE_USAGE_REFUSED);
	/* 0 + 200 - 10 unsettled - 90 held (c, d) = 100 */
	cr_assert_eq(admit("e", 101, 0, 200, 0, &d, &fig), STORE_USAGE_REFUSED,
	    "overage room is consumed by unsettled usage and holds too");
	cr_assert_eq(fig.available, 100);
	cr_assert_eq(admit("e", 100, 0, 200, 0, &d, &fig), STORE_USAGE_OWNED);
	store_usage_free(&d);
}

Test(usage, the_same_key_is_busy_final_or_a_mismatch)
{
	struct store_usage	a, again;
	struct store_usage_room	fig;
	struct mk_err		err;

	cr_assert_eq(admit("k", 10, 100, 0, 0, &a, &fig), STORE_USAGE_OWNED);
	cr_assert_eq(admit("k", 10, 100, 0, 0, &again, &fig), STORE_USAGE_BUSY);
	cr_assert_eq(store_usage_admit(&s, "k", "cus_2", "", 10, 10, 100, 0, 0, 60, &again,
	    &fig, &err), STORE_USAGE_MISMATCH);
	cr_assert_eq(store_usage_admit(&s, "k", "cus_1", "otherhash", 10, 10, 100, 0, 0, 60,
	    &again, &fig, &err), STORE_USAGE_MISMATCH);
	settle(&a, 7);
	cr_assert_eq(admit("k", 10, 100, 0, 0, &again, &fig), STORE_USAGE_FINAL);
	cr_assert_eq(again.tokens, 7);
	cr_assert_str_eq(again.answer, "an answer");
	store_usage_free(&again);
}

Test(usage, a_dead_hold_stops_counting_when_its_lease_ends)
{
	struct store_usage	a, b;
	struct store_usage_room	fig;
	struct mk_err		err;

	/* lease 0: the hold's process is presumed dead at once */
	cr_assert_eq(store_usage_admit(&s, "dead", "cus_1", "", 60, 60, 100, 0, 0, 0, &a, &fig,
	    &err), STORE_USAGE_OWNED);
	store_usage_free(&a);
	cr_assert_eq(admit("b", 100, 100, 0, 0, &b, &fig), STORE_USAGE_OWNED);
	cr_assert_eq(fig.held, 0);
	store_usage_free(&b);
	cr_assert_geq(store_usage_expire(&s, 0, &err), 1, "%s", err.msg);
}

Test(usage, clears_are_fifo_capped_once_per_entry_and_counted_after_the_snapshot)
{
	struct store_usage	a, b, c;
	struct store_usage_room	fig;
	struct mk_err		err;
	long			applied;
	long long		seq;

	cr_assert_eq(admit("a", 30, 1000, 0, 0, &a, &fig), STORE_USAGE_OWNED);
	settle(&a, 30);
	cr_assert_eq(admit("b", 20, 1000, 0, 0, &b, &fig), STORE_USAGE_OWNED);
	settle(&b, 20);
	cr_assert_eq((seq = store_usage_clear_seq(&s, "cus_1", &err)), 0);
	/* a deduction of 40: all of a, 10 of b */
	cr_assert_eq(store_usage_clear(&s, "cus_1", "le_1", 40, &applied, &err), 1);
	cr_assert_eq(applied, 40);
	cr_assert_eq(store_usage_clear(&s, "cus_1", "le_1", 40, &applied, &err), 0,
	    "the same entry is applied once");
	/* the balance read before the clear: still counted (50), after it: 10 */
	cr_assert_eq(admit("c", 1, 1000, 0, seq, &c, &fig), STORE_USAGE_OWNED);
	cr_assert_eq(fig.unsettled, 50);
	store_usage_free(&c);
	seq = store_usage_clear_seq(&s, "cus_1", &err);
	cr_assert_eq(admit("c2", 1, 1000, 0, seq, &c, &fig), STORE_USAGE_OWNED);
	cr_assert_eq(fig.unsettled, 10);
	store_usage_free(&c);
	/* a deduction larger than the usage clears only what exists */
	cr_assert_eq(store_usage_clear(&s, "cus_1", "le_2", 500, &applied, &err), 1);
	cr_assert_eq(applied, 10);
	seq = store_usage_clear_seq(&s, "cus_1", &err);
	cr_assert_eq(admit("c3", 1, 1000, 0, seq, &c, &fig), STORE_USAGE_OWNED);
	cr_assert_eq(fig.unsettled, 0);
	store_usage_free(&c);
}

Test(usage, the_outbox_claims_settled_rows_once)
{
	struct store_usage	a, rows[8], again[8];
	struct store_usage_room	fig;
	struct mk_err		err;

	cr_assert_eq(admit("o1", 10, 100, 0, 0, &a, &fig), STORE_USAGE_OWNED);
	settle(&a, 9);
	cr_assert_eq(store_usage_outbox_take(&s, rows, 8, &err), 1, "%s", err.msg);
	cr_assert_str_eq(rows[0].key, "o1");
	cr_assert_eq(rows[0].tokens, 9);
	cr_assert_eq(store_usage_outbox_take(&s, again, 8, &err), 0, "leased: not taken twice");
	cr_assert_eq(store_usage_postpone(&s, &rows[0], 0, &err), 0, "%s", err.msg);
	cr_assert_eq(store_usage_outbox_take(&s, again, 8, &err), 1);
	cr_assert_eq(again[0].attempts, 1);
	cr_assert_eq(store_usage_ingested(&s, &rows[0], &err), -1, "an old claim cannot write");
	cr_assert_eq(store_usage_ingested(&s, &again[0], &err), 0, "%s", err.msg);
	cr_assert_eq(store_usage_outbox_take(&s, again, 8, &err), 0);
}
