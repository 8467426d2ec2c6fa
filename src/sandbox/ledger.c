/* ledger.c: credit grants, FIFO debits, expiry and the low-balance alert, as Dodo's credit ledger. */
#include <stdio.h>
#include <string.h>

#include "db.h"
#include "log.h"
#include "sandbox.h"

/*
 * Conditions on the grants of customer ?1 and this entitlement (?2) at time
 * ?3, for ledger_grants_query().  Live grants are the only ones that count
 * towards the balance; due ones passed expires_at and are not flagged yet.
 * A grant of an active subscription that lasts to its cycle's end is not
 * due: the renewal ends it (ledger_renew: expired, or rolled over), even
 * when a balance is read between the cycle's end and the renewal.
 */
#define LEDGER_LIVE_GRANTS \
	"customer_id = ?1 AND entitlement_id = ?2 AND expired = 0 AND remaining > 0" \
	" AND (expires_at IS NULL OR expires_at > ?3)"
#define LEDGER_DUE_GRANTS \
	"customer_id = ?1 AND entitlement_id = ?2 AND expired = 0" \
	" AND expires_at IS NOT NULL AND expires_at <= ?3 AND NOT EXISTS (SELECT 1" \
	" FROM subscriptions s WHERE s.id = grants.source_id AND s.status = 'active'" \
	" AND grants.source_type IN ('subscription', 'rollover')" \
	" AND s.next_billing_at <= grants.expires_at)"

static void
ledger_amount_text(int64_t v, char *out, size_t len)
{
	snprintf(out, len, "%lld", (long long)v);
}

/* Prepare sql over one customer's grants (see LEDGER_LIVE_GRANTS), with
 * ?1..?3 bound.  NULL (logged) on failure; the caller calls state_done(). */
static sqlite3_stmt *
ledger_grants_query(sqlite3 *db, const char *sql, const char *customer_id, int64_t now)
{
	sqlite3_stmt	*st;

	if ((st = state_query(db, sql, 2, customer_id, sandbox.entitlement_id)) != NULL)
		sqlite3_bind_int64(st, 3, now);
	return st;
}

int64_t
ledger_low_threshold(const struct sandbox_plan *plan)
{
	if (plan == NULL)
		plan = &sandbox.plans[0];
	return (int64_t)plan->credits * sandbox.low_percent / 100;
}

const struct sandbox_plan *
ledger_customer_plan(sqlite3 *db, const char *customer_id)
{
	const struct sandbox_plan	*plan = NULL;
	sqlite3_stmt			*st;

	st = state_query(db, "SELECT product_id FROM subscriptions WHERE customer_id = ?1"
	    " AND status = 'active' ORDER BY created_at DESC, rowid DESC", 1, customer_id);
	if (st == NULL)
		return NULL;
	while (plan == NULL && sqlite3_step(st) == SQLITE_ROW)
		plan = state_plan_of(state_text(st, 0));
	state_done(st);
	return plan;
}

int64_t
ledger_overage(sqlite3 *db, const char *customer_id)
{
	sqlite3_stmt	*st;
	int64_t		 overage = 0;

	st = state_query(db, "SELECT overage FROM balances WHERE customer_id = ?1"
	    " AND entitlement_id = ?2", 2, customer_id, sandbox.entitlement_id);
	if (st == NULL)
		return 0;
	if (sqlite3_step(st) == SQLITE_ROW)
		overage = sqlite3_column_int64(st, 0);
	state_done(st);
	return overage;
}

int64_t
ledger_balance(sqlite3 *db, const char *customer_id, int64_t now_ms)
{
	sqlite3_stmt	*st;
	int64_t		 sum = 0;

	st = ledger_grants_query(db, "SELECT COALESCE(SUM(remaining), 0) FROM grants WHERE "
	    LEDGER_LIVE_GRANTS, customer_id, now_ms);
	if (st == NULL)
		return 0;
	if (sqlite3_step(st) == SQLITE_ROW)
		sum = sqlite3_column_int64(st, 0);
	state_done(st);
	return sum;
}

json_object *
ledger_entry_json(sqlite3 *db, const char *entry_id)
{
	sqlite3_stmt	*st;
	json_object	*o = NULL;
	char		 t[SANDBOX_TIME_MAX], n[SANDBOX_AMOUNT_MAX];
	int		 is_credit;

	st = state_query(db, "SELECT id, customer_id, entitlement_id, amount, is_credit,"
	    " balance_before, balance_after, transaction_type, grant_id, reference_type,"
	    " reference_id, description, reason, metadata, created_at, overage_before,"
	    " overage_after FROM ledger WHERE id = ?1", 1, entry_id);
	if (st == NULL)
		return NULL;
	if (sqlite3_step(st) != SQLITE_ROW)
		goto out;
	o = json_object_new_object();
	is_credit = sqlite3_column_int(st, 4);
	json_object_object_add(o, "id", json_object_new_string(state_text(st, 0)));
	ledger_amount_text(sqlite3_column_int64(st, 3), n, sizeof(n));
	json_object_object_add(o, "amount", json_object_new_string(n));
	ledger_amount_text(sqlite3_column_int64(st, 5), n, sizeof(n));
	json_object_object_add(o, "balance_before", json_object_new_string(n));
	ledger_amount_text(sqlite3_column_int64(st, 6), n, sizeof(n));
	json_object_object_add(o, "balance_after", json_object_new_string(n));
	ledger_amount_text(sqlite3_column_int64(st, 15), n, sizeof(n));
	json_object_object_add(o, "overage_before", json_object_new_string(n));
	ledger_amount_text(sqlite3_column_int64(st, 16), n, sizeof(n));
	json_object_object_add(o, "overage_after", json_object_new_string(n));
	json_object_object_add(o, "brand_id", json_object_new_string(SANDBOX_BUSINESS_ID));
	json_object_object_add(o, "business_id", json_object_new_string(SANDBOX_BUSINESS_ID));
	state_iso(sqlite3_column_int64(st, 14), t, sizeof(t));
	json_object_object_add(o, "created_at", json_object_new_string(t));
	json_object_object_add(o, "credit_entitlement_id",
	    json_object_new_string(state_text(st, 2)));
	json_object_object_add(o, "customer_id", json_object_new_string(state_text(st, 1)));
	json_object_object_add(o, "entry_type",
	    json_object_new_string(is_credit ? "credit" : "debit"));
	json_object_object_add(o, "is_credit", json_object_new_boolean(is_credit));
	json_object_object_add(o, "metadata", state_json_object(st, 13));
	json_object_object_add(o, "transaction_type",
	    json_object_new_string(state_text(st, 7)));
	json_object_object_add(o, "grant_id", state_json_text(st, 8));
	json_object_object_add(o, "reference_type", state_json_text(st, 9));
	json_object_object_add(o, "reference_id", state_json_text(st, 10));
	json_object_object_add(o, "description", state_json_text(st, 11));
	json_object_object_add(o, "reason", state_json_text(st, 12));
out:
	state_done(st);
	return o;
}

/* The numbers of one ledger row. */
struct ledger_row {
	int		 is_credit;
	int64_t		 amount;
	int64_t		 before, after;		/* balance */
	int64_t		 ov_before, ov_after;	/* overage */
	const char	*type;			/* transaction_type */
	const char	*grant_id;		/* may be NULL */
	int64_t		 at;			/* created_at */
};

/* Insert one ledger row with text from in (all may be NULL but the
 * customer).  0 / -1. */
static int
ledger_insert(sqlite3 *db, const char *id, const struct ledger_request *in,
    const struct ledger_row *r)
{
	sqlite3_stmt	*st;
	int		 rc;

	st = state_prepare(db, "INSERT INTO ledger (id, customer_id, entitlement_id, amount,"
	    " is_credit, balance_before, balance_after, transaction_type, grant_id,"
	    " reference_type, reference_id, description, reason, idempotency_key, metadata,"
	    " created_at, overage_before, overage_after) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7,"
	    " ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)");
	if (st == NULL)
		return -1;
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, in->customer_id, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, sandbox.entitlement_id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 4, r->amount);
	sqlite3_bind_int(st, 5, r->is_credit);
	sqlite3_bind_int64(st, 6, r->before);
	sqlite3_bind_int64(st, 7, r->after);
	sqlite3_bind_text(st, 8, r->type, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 9, r->grant_id, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 10, in->reference_type, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 11, in->reference_id, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 12, in->description, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 13, in->reason, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 14, in->idempotency_key, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 15, in->metadata != NULL ? in->metadata : "{}", -1,
	    SQLITE_STATIC);
	sqlite3_bind_int64(st, 16, r->at);
	sqlite3_bind_int64(st, 17, r->ov_before);
	sqlite3_bind_int64(st, 18, r->ov_after);
	rc = sqlite3_step(st);
	if (rc != SQLITE_DONE)
		log_error("sandbox ledger insert: %s", sqlite3_errmsg(db));
	state_done(st);
	return rc == SQLITE_DONE ? 0 : -1;
}

/* Enqueue the ledger event for entry id.  0 / -1. */
static int
ledger_event(sqlite3 *db, const char *type, const char *entry_id)
{
	json_object	*data;

	if ((data = ledger_entry_json(db, entry_id)) == NULL)
		return -1;
	json_object_object_add(data, "payload_type", json_object_new_string("CreditLedgerEntry"));
	return deliver_enqueue(db, type, data);
}

/* A ledger row that changes no grant (expiry, rollover, overage reset),
 * with its event.  0 / -1. */
static int
ledger_note(sqlite3 *db, const struct ledger_request *in, const struct ledger_row *r,
    const char *event)
{
	char	entry[SANDBOX_ID_MAX];

	state_id("cle_", entry, sizeof(entry));
	if (ledger_insert(db, entry, in, r) == -1 || ledger_event(db, event, entry) == -1)
		return -1;
	return 0;
}

/* Flag every grant of customer that has passed expires_at, writing a
 * credit_expired entry and a credit.expired event for each.  In a transaction. */
static int
ledger_expire_locked(sqlite3 *db, const char *customer_id, int64_t now)
{
	sqlite3_stmt		*st;
	struct ledger_request	 in;
	struct ledger_row	 r;
	char			 grant[SANDBOX_ID_MAX];
	int64_t			 remaining, live;
	int			 rc = 0;

	for (;;) {
		st = ledger_grants_query(db, "SELECT id, remaining FROM grants WHERE "
		    LEDGER_DUE_GRANTS " ORDER BY seq LIMIT 1", customer_id, now);
		if (st == NULL)
			return -1;
		if (sqlite3_step(st) != SQLITE_ROW) {
			state_done(st);
			return rc;
		}
		snprintf(grant, sizeof(grant), "%s", state_text(st, 0));
		remaining = sqlite3_column_int64(st, 1);
		state_done(st);

		if (state_exec(db, "UPDATE grants SET expired = 1 WHERE id = ?1", 1, grant) == -1)
			return -1;
		if (remaining <= 0)
			continue;
		memset(&in, 0, sizeof(in));
		in.customer_id = customer_id;
		in.reference_type = "grant";
		in.reference_id = grant;
		in.description = "Credits expired";
		live = ledger_balance(db, customer_id, now);
		memset(&r, 0, sizeof(r));
		r.amount = remaining;
		r.before = live + remaining;
		r.after = live;
		r.ov_before = r.ov_after = ledger_overage(db, customer_id);
		r.type = "credit_expired";
		r.grant_id = grant;
		r.at = now;
		if (ledger_note(db, &in, &r, "credit.expired") == -1)
			return -1;
	}
}

int
ledger_expire_due(sqlite3 *db, const char *customer_id)
{
	sqlite3_stmt	*st;
	int64_t		 now = state_clock_ms();
	int		 due = 0;

	st = ledger_grants_query(db, "SELECT 1 FROM grants WHERE " LEDGER_DUE_GRANTS " LIMIT 1",
	    customer_id, now);
	if (st == NULL)
		return -1;
	due = sqlite3_step(st) == SQLITE_ROW;
	state_done(st);
	if (!due)
		return 0;
	if (db_begin(db) == -1)
		return -1;
	if (ledger_expire_locked(db, customer_id, now) == -1) {
		db_rollback(db);
		return -1;
	}
	if (db_commit(db) == -1)
		return -1;
	deliver_wake();
	return 0;
}

/* Draw amount from the oldest live grants; the first grant touched goes to
 * grant_id.  The caller checked the balance covers it.  0 / -1. */
static int
ledger_draw(sqlite3 *db, const char *customer_id, int64_t amount, int64_t now,
    char *grant_id, size_t idlen)
{
	sqlite3_stmt	*st;
	char		 id[SANDBOX_ID_MAX], take_text[SANDBOX_AMOUNT_MAX];
	char		 now_text[SANDBOX_AMOUNT_MAX];
	int64_t		 remaining, take;

	grant_id[0] = '\0';
	ledger_amount_text(now, now_text, sizeof(now_text));
	while (amount > 0) {
		st = ledger_grants_query(db, "SELECT id, remaining FROM grants WHERE "
		    LEDGER_LIVE_GRANTS " ORDER BY seq LIMIT 1", customer_id, now);
		if (st == NULL)
			return -1;
		if (sqlite3_step(st) != SQLITE_ROW) {
			state_done(st);
			log_error("sandbox ledger: balance vanished during a debit");
			return -1;
		}
		snprintf(id, sizeof(id), "%s", state_text(st, 0));
		remaining = sqlite3_column_int64(st, 1);
		state_done(st);
		take = remaining < amount ? remaining : amount;
		if (grant_id[0] == '\0')
			snprintf(grant_id, idlen, "%s", id);
		ledger_amount_text(take, take_text, sizeof(take_text));
		if (state_exec(db, "UPDATE grants SET remaining = remaining - CAST(?2 AS INTEGER),"
		    " updated_at = CAST(?3 AS INTEGER) WHERE id = ?1", 3, id, take_text, now_text) == -1)
			return -1;
		amount -= take;
	}
	return 0;
}

/* A new grant for a credit entry.  0 / -1. */
static int
ledger_grant(sqlite3 *db, const struct ledger_request *in, int64_t now, char *grant_id,
    size_t idlen)
{
	sqlite3_stmt	*st;
	int		 rc;

	state_id("cgr_", grant_id, idlen);
	st = state_prepare(db, "INSERT INTO grants (id, customer_id, entitlement_id,"
	    " initial_amount, remaining, source_type, source_id, metadata, expires_at,"
	    " created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?4, ?5, ?6, ?7, ?8, ?9, ?9)");
	if (st == NULL)
		return -1;
	sqlite3_bind_text(st, 1, grant_id, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, in->customer_id, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, sandbox.entitlement_id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 4, in->amount);
	sqlite3_bind_text(st, 5, in->source_type != NULL ? in->source_type : "api", -1,
	    SQLITE_STATIC);
	sqlite3_bind_text(st, 6, in->source_id, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 7, in->metadata != NULL ? in->metadata : "{}", -1, SQLITE_STATIC);
	if (in->expires_at_ms > 0)
		sqlite3_bind_int64(st, 8, in->expires_at_ms);
	else
		sqlite3_bind_null(st, 8);
	sqlite3_bind_int64(st, 9, now);
	rc = sqlite3_step(st);
	state_done(st);
	return rc == SQLITE_DONE ? 0 : -1;
}

/* The latest subscription of a customer, for credit.balance_low; "" if none. */
static void
ledger_subscription_of(sqlite3 *db, const char *customer_id, char *out, size_t len)
{
	sqlite3_stmt	*st;

	out[0] = '\0';
	st = state_query(db, "SELECT id FROM subscriptions WHERE customer_id = ?1"
	    " ORDER BY created_at DESC LIMIT 1", 1, customer_id);
	if (st == NULL)
		return;
	if (sqlite3_step(st) == SQLITE_ROW)
		snprintf(out, len, "%s", state_text(st, 0));
	state_done(st);
}

static int
ledger_low_balance_event(sqlite3 *db, const char *customer_id,
    const struct sandbox_plan *plan, int64_t after)
{
	json_object	*d = json_object_new_object();
	char		 sub[SANDBOX_ID_MAX], n[SANDBOX_AMOUNT_MAX];

	ledger_subscription_of(db, customer_id, sub, sizeof(sub));
	json_object_object_add(d, "payload_type", json_object_new_string("CreditBalanceLow"));
	json_object_object_add(d, "customer_id", json_object_new_string(customer_id));
	json_object_object_add(d, "subscription_id",
	    sub[0] != '\0' ? json_object_new_string(sub) : NULL);
	json_object_object_add(d, "credit_entitlement_id",
	    json_object_new_string(sandbox.entitlement_id));
	json_object_object_add(d, "credit_entitlement_name",
	    json_object_new_string(sandbox.entitlement_name));
	json_object_object_add(d, "brand_id", json_object_new_string(SANDBOX_BUSINESS_ID));
	ledger_amount_text(after, n, sizeof(n));
	json_object_object_add(d, "available_balance", json_object_new_string(n));
	ledger_amount_text(plan != NULL ? plan->credits : sandbox.plans[0].credits, n, sizeof(n));
	json_object_object_add(d, "subscription_credits_amount", json_object_new_string(n));
	ledger_amount_text(ledger_low_threshold(plan), n, sizeof(n));
	json_object_object_add(d, "threshold_amount", json_object_new_string(n));
	json_object_object_add(d, "threshold_percent", json_object_new_int((int)sandbox.low_percent));
	return deliver_enqueue(db, "credit.balance_low", d);
}

/* The balance row, Dodo's CustomerCreditBalance: created on first use,
 * with the overage after this entry.  0 / -1. */
static int
ledger_balance_row(sqlite3 *db, const char *customer_id, int64_t overage, int64_t now)
{
	sqlite3_stmt	*st;
	char		 balance_id[SANDBOX_ID_MAX];
	int		 rc;

	state_id("cbal_", balance_id, sizeof(balance_id));
	st = state_query(db, "INSERT INTO balances (id, customer_id, entitlement_id, created_at,"
	    " updated_at, last_transaction_at, overage) VALUES (?1, ?2, ?3, ?4, ?4, ?4, ?5)"
	    " ON CONFLICT (customer_id, entitlement_id) DO UPDATE SET"
	    " updated_at = excluded.updated_at,"
	    " last_transaction_at = excluded.last_transaction_at, overage = excluded.overage", 3,
	    balance_id, customer_id, sandbox.entitlement_id);
	if (st == NULL)
		return -1;
	sqlite3_bind_int64(st, 4, now);
	sqlite3_bind_int64(st, 5, overage);
	rc = sqlite3_step(st);
	state_done(st);
	return rc == SQLITE_DONE ? 0 : -1;
}

enum ledger_outcome
ledger_apply(sqlite3 *db, const struct ledger_request *in, char *entry_id, size_t idlen)
{
	const struct sandbox_plan	*plan;
	struct ledger_row		 r;
	sqlite3_stmt			*st;
	char				 grant_id[SANDBOX_ID_MAX];
	int64_t				 now, draw, threshold;
	int				 found;

	now = in->at_ms > 0 ? in->at_ms : state_clock_ms();
	entry_id[0] = '\0';
	if ((st = state_query(db, "SELECT 1 FROM customers WHERE id = ?1", 1,
	    in->customer_id)) == NULL)
		return LEDGER_FAILED;
	found = sqlite3_step(st) == SQLITE_ROW;
	state_done(st);
	if (!found)
		return LEDGER_NO_CUSTOMER;
	if (ledger_expire_locked(db, in->customer_id, now) == -1)
		return LEDGER_FAILED;

	if (in->idempotency_key != NULL) {
		st = state_query(db, "SELECT 1 FROM ledger WHERE customer_id = ?1 AND"
		    " entitlement_id = ?2 AND idempotency_key = ?3", 3, in->customer_id,
		    sandbox.entitlement_id, in->idempotency_key);
		if (st == NULL)
			return LEDGER_FAILED;
		found = sqlite3_step(st) == SQLITE_ROW;
		state_done(st);
		if (found)
			return LEDGER_DUPLICATE;
	}

	memset(&r, 0, sizeof(r));
	r.is_credit = in->is_credit;
	r.amount = in->amount;
	r.at = now;
	r.before = ledger_balance(db, in->customer_id, now);
	r.ov_before = r.ov_after = ledger_overage(db, in->customer_id);
	plan = ledger_customer_plan(db, in->customer_id);
	draw = in->amount;
	if (!in->is_credit && in->amount > r.before) {
		/* past zero: into the overage the plan allows, or refused */
		if (plan == NULL || plan->overage_limit == 0)
			return LEDGER_INSUFFICIENT;
		if (r.ov_before + (in->amount - r.before) > plan->overage_limit)
			return LEDGER_OVERAGE_EXCEEDED;
		draw = r.before;
		r.ov_after = r.ov_before + (in->amount - r.before);
	}
	r.after = in->is_credit ? r.before + in->amount : r.before - draw;

	if (in->is_credit) {
		if (ledger_grant(db, in, now, grant_id, sizeof(grant_id)) == -1)
			return LEDGER_FAILED;
	} else if (ledger_draw(db, in->customer_id, draw, now, grant_id,
	    sizeof(grant_id)) == -1)
		return LEDGER_FAILED;

	r.type = in->transaction_type != NULL ? in->transaction_type :
	    in->is_credit ? "credit_added" : "credit_deducted";
	r.grant_id = grant_id[0] != '\0' ? grant_id : NULL;
	state_id("cle_", entry_id, idlen);
	if (ledger_insert(db, entry_id, in, &r) == -1 ||
	    ledger_balance_row(db, in->customer_id, r.ov_after, now) == -1)
		return LEDGER_FAILED;

	if (ledger_event(db, in->event != NULL ? in->event : in->is_credit ? "credit.added" :
	    "credit.deducted", entry_id) == -1)
		return LEDGER_FAILED;
	threshold = ledger_low_threshold(plan);
	if (!in->is_credit && r.before >= threshold && r.after < threshold &&
	    ledger_low_balance_event(db, in->customer_id, plan, r.after) == -1)
		return LEDGER_FAILED;
	return LEDGER_APPLIED;
}

enum ledger_outcome
ledger_post(const struct ledger_request *in, char *entry_id, size_t idlen)
{
	sqlite3			*db = state_db();
	enum ledger_outcome	 r;

	if (db == NULL || db_begin(db) == -1)
		return LEDGER_FAILED;
	r = ledger_apply(db, in, entry_id, idlen);
	if (r != LEDGER_APPLIED) {
		db_rollback(db);
		return r;
	}
	if (db_commit(db) == -1)
		return LEDGER_FAILED;
	deliver_wake();
	return LEDGER_APPLIED;
}

/*
 * The remainder of grant (remaining credits, rolled count times before) at
 * a cycle end: expired, or part carried into a new grant of the next
 * cycle and the rest forfeited.  The grant is flagged already.  0 / -1.
 */
static int
ledger_roll(sqlite3 *db, struct ledger_request *in, const char *grant, int64_t remaining,
    int count, int64_t at)
{
	struct ledger_request	 g;
	struct ledger_row	 r;
	char			 next[SANDBOX_ID_MAX], count_text[16];
	int64_t			 rolled = 0;

	if (sandbox.rollover_percent > 0 && count < sandbox.rollover_max)
		rolled = remaining * sandbox.rollover_percent / 100;
	memset(&r, 0, sizeof(r));
	r.at = at;
	r.after = ledger_balance(db, in->customer_id, at);
	r.before = r.after + remaining;
	r.ov_before = r.ov_after = ledger_overage(db, in->customer_id);
	in->reference_type = "grant";
	in->reference_id = grant;
	r.grant_id = grant;
	if (rolled == 0 && (sandbox.rollover_percent == 0 || count >= sandbox.rollover_max)) {
		in->description = "Credits expired at the end of the billing cycle";
		r.amount = remaining;
		r.type = "credit_expired";
		return ledger_note(db, in, &r, "credit.expired");
	}
	if (rolled > 0) {
		memset(&g, 0, sizeof(g));
		g.customer_id = in->customer_id;
		g.amount = rolled;
		g.source_type = "rollover";
		g.source_id = in->source_id;
		g.expires_at_ms = sandbox.expiry_days > 0 ? at + sandbox.expiry_days * DAY_MS : 0;
		snprintf(count_text, sizeof(count_text), "%d", count + 1);
		if (ledger_grant(db, &g, at, next, sizeof(next)) == -1 ||
		    state_exec(db, "UPDATE grants SET rollover_count = CAST(?2 AS INTEGER),"
		    " parent_grant_id = ?3 WHERE id = ?1", 3, next, count_text, grant) == -1)
			return -1;
		in->description = "Credits rolled over into the next billing cycle";
		r.is_credit = 1;
		r.amount = rolled;
		r.after = r.before;	/* moved from one grant to the other */
		r.type = "credit_rolled_over";
		r.grant_id = next;
		if (ledger_note(db, in, &r, "credit.rolled_over") == -1)
			return -1;
	}
	if (remaining - rolled > 0) {
		in->description = "Credits forfeited at rollover";
		r.is_credit = 0;
		r.amount = remaining - rolled;
		r.after = r.before - r.amount;
		r.type = "rollover_forfeited";
		r.grant_id = grant;
		if (ledger_note(db, in, &r, "credit.rollover_forfeited") == -1)
			return -1;
	}
	return 0;
}

int
ledger_renew(sqlite3 *db, const char *customer_id, const char *sub_id, int64_t credits,
    int64_t at)
{
	struct ledger_request	 in;
	struct ledger_row	 r;
	sqlite3_stmt		*st;
	char			 grant[SANDBOX_ID_MAX], at_text[SANDBOX_AMOUNT_MAX];
	char			 entry[SANDBOX_ID_MAX];
	int64_t			 remaining;
	int			 count;

	ledger_amount_text(at, at_text, sizeof(at_text));
	memset(&in, 0, sizeof(in));
	in.customer_id = customer_id;
	in.source_id = sub_id;
	/* the grants of the cycle that ends (not those this renewal makes) */
	for (;;) {
		st = state_query(db, "SELECT id, remaining, rollover_count FROM grants"
		    " WHERE customer_id = ?1 AND entitlement_id = ?2 AND source_id = ?3"
		    " AND expired = 0 AND created_at < CAST(?4 AS INTEGER) ORDER BY seq LIMIT 1", 4,
		    customer_id, sandbox.entitlement_id, sub_id, at_text);
		if (st == NULL)
			return -1;
		if (sqlite3_step(st) != SQLITE_ROW) {
			state_done(st);
			break;
		}
		snprintf(grant, sizeof(grant), "%s", state_text(st, 0));
		remaining = sqlite3_column_int64(st, 1);
		count = sqlite3_column_int(st, 2);
		state_done(st);
		if (state_exec(db, "UPDATE grants SET expired = 1, updated_at = CAST(?2 AS INTEGER)"
		    " WHERE id = ?1", 2, grant, at_text) == -1)
			return -1;
		if (remaining > 0 && ledger_roll(db, &in, grant, remaining, count, at) == -1)
			return -1;
	}

	/* the overage of the cycle is billed with its invoice: reset to 0 */
	memset(&r, 0, sizeof(r));
	r.ov_before = ledger_overage(db, customer_id);
	if (r.ov_before > 0) {
		in.reference_type = "subscription";
		in.reference_id = sub_id;
		in.description = "Overage reset at the end of the billing cycle";
		r.is_credit = 1;
		r.amount = r.ov_before;
		r.before = r.after = ledger_balance(db, customer_id, at);
		r.type = "overage_reset";
		r.at = at;
		if (ledger_balance_row(db, customer_id, 0, at) == -1 ||
		    ledger_note(db, &in, &r, "credit.overage_reset") == -1)
			return -1;
	}

	memset(&in, 0, sizeof(in));
	in.customer_id = customer_id;
	in.is_credit = 1;
	in.amount = credits;
	in.expires_at_ms = sandbox.expiry_days > 0 ? at + sandbox.expiry_days * DAY_MS : 0;
	in.source_type = "subscription";
	in.source_id = sub_id;
	in.reference_type = "subscription";
	in.reference_id = sub_id;
	in.description = "Plan credits of a new billing cycle";
	in.at_ms = at;
	return ledger_apply(db, &in, entry, sizeof(entry)) == LEDGER_APPLIED ? 0 : -1;
}

int
ledger_meter(sqlite3 *db, const char *customer_id, int64_t total, const char *description,
    const char *metadata, struct ledger_metered *out)
{
	const struct sandbox_plan	*plan;
	struct ledger_request		 in;
	char				 entry[SANDBOX_ID_MAX];
	int64_t				 now = state_clock_ms(), balance, room;

	memset(out, 0, sizeof(*out));
	if (ledger_expire_locked(db, customer_id, now) == -1)
		return -1;
	balance = ledger_balance(db, customer_id, now);
	plan = ledger_customer_plan(db, customer_id);
	out->deducted = total < balance ? total : balance;
	room = plan != NULL ? plan->overage_limit - ledger_overage(db, customer_id) : 0;
	if (room < 0)
		room = 0;
	out->overage = total - out->deducted < room ? total - out->deducted : room;
	out->unbilled = total - out->deducted - out->overage;

	memset(&in, 0, sizeof(in));
	in.customer_id = customer_id;
	in.metadata = metadata;
	in.reference_type = "meter";
	in.reference_id = CATALOG_METER_BUILTIN;
	in.description = description;
	in.at_ms = now;
	if (out->deducted > 0) {
		in.amount = out->deducted;
		if (ledger_apply(db, &in, entry, sizeof(entry)) != LEDGER_APPLIED)
			return -1;
	}
	if (out->overage > 0) {
		/* the balance is 0 now: all of it goes onto the overage */
		in.amount = out->overage;
		in.transaction_type = "overage_charged";
		in.event = "credit.overage_charged";
		if (ledger_apply(db, &in, entry, sizeof(entry)) != LEDGER_APPLIED)
			return -1;
	}
	return 0;
}
