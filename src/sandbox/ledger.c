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
 */
#define LEDGER_LIVE_GRANTS \
	"customer_id = ?1 AND entitlement_id = ?2 AND expired = 0 AND remaining > 0" \
	" AND (expires_at IS NULL OR expires_at > ?3)"
#define LEDGER_DUE_GRANTS \
	"customer_id = ?1 AND entitlement_id = ?2 AND expired = 0" \
	" AND expires_at IS NOT NULL AND expires_at <= ?3"

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
ledger_low_threshold(void)
{
	return (int64_t)sandbox.plan_credits * sandbox.low_percent / 100;
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
	    " reference_id, description, reason, metadata, created_at"
	    " FROM ledger WHERE id = ?1", 1, entry_id);
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
	json_object_object_add(o, "overage_before", json_object_new_string("0"));
	json_object_object_add(o, "overage_after", json_object_new_string("0"));
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

/* Insert one ledger row; all text may be NULL except the ids and type.  0 / -1. */
static int
ledger_insert(sqlite3 *db, const char *id, const struct ledger_request *in, int is_credit,
    int64_t amount, int64_t before, int64_t after, const char *type, const char *grant_id,
    int64_t now)
{
	sqlite3_stmt	*st;
	int		 rc;

	st = state_prepare(db, "INSERT INTO ledger (id, customer_id, entitlement_id, amount,"
	    " is_credit, balance_before, balance_after, transaction_type, grant_id,"
	    " reference_type, reference_id, description, reason, idempotency_key, metadata,"
	    " created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13,"
	    " ?14, ?15, ?16)");
	if (st == NULL)
		return -1;
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, in->customer_id, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, sandbox.entitlement_id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 4, amount);
	sqlite3_bind_int(st, 5, is_credit);
	sqlite3_bind_int64(st, 6, before);
	sqlite3_bind_int64(st, 7, after);
	sqlite3_bind_text(st, 8, type, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 9, grant_id, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 10, in->reference_type, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 11, in->reference_id, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 12, in->description, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 13, in->reason, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 14, in->idempotency_key, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 15, in->metadata != NULL ? in->metadata : "{}", -1,
	    SQLITE_STATIC);
	sqlite3_bind_int64(st, 16, now);
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

/* Flag every grant of customer that has passed expires_at, writing a
 * credit_expired entry and a credit.expired event for each.  In a transaction. */
static int
ledger_expire_locked(sqlite3 *db, const char *customer_id, int64_t now)
{
	sqlite3_stmt		*st;
	struct ledger_request	 in;
	char			 grant[SANDBOX_ID_MAX], entry[SANDBOX_ID_MAX];
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
		state_id("cle_", entry, sizeof(entry));
		if (ledger_insert(db, entry, &in, 0, remaining, live + remaining, live,
		    "credit_expired", grant, now) == -1 ||
		    ledger_event(db, "credit.expired", entry) == -1)
			return -1;
	}
}

int
ledger_expire_due(sqlite3 *db, const char *customer_id)
{
	sqlite3_stmt	*st;
	int64_t		 now = state_now_ms();
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
ledger_low_balance_event(sqlite3 *db, const char *customer_id, int64_t after)
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
	    json_object_new_string(SANDBOX_ENTITLEMENT_NAME));
	json_object_object_add(d, "brand_id", json_object_new_string(SANDBOX_BUSINESS_ID));
	ledger_amount_text(after, n, sizeof(n));
	json_object_object_add(d, "available_balance", json_object_new_string(n));
	ledger_amount_text(sandbox.plan_credits, n, sizeof(n));
	json_object_object_add(d, "subscription_credits_amount", json_object_new_string(n));
	ledger_amount_text(ledger_low_threshold(), n, sizeof(n));
	json_object_object_add(d, "threshold_amount", json_object_new_string(n));
	json_object_object_add(d, "threshold_percent", json_object_new_int((int)sandbox.low_percent));
	return deliver_enqueue(db, "credit.balance_low", d);
}

enum ledger_outcome
ledger_apply(sqlite3 *db, const struct ledger_request *in, char *entry_id, size_t idlen)
{
	sqlite3_stmt	*st;
	char		 grant_id[SANDBOX_ID_MAX], balance_id[SANDBOX_ID_MAX];
	char		 now_text[SANDBOX_AMOUNT_MAX];
	const char	*type;
	int64_t		 now = state_now_ms(), before, after, threshold;
	int		 found;

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

	before = ledger_balance(db, in->customer_id, now);
	if (!in->is_credit && in->amount > before)
		return LEDGER_INSUFFICIENT;
	after = in->is_credit ? before + in->amount : before - in->amount;

	if (in->is_credit) {
		if (ledger_grant(db, in, now, grant_id, sizeof(grant_id)) == -1)
			return LEDGER_FAILED;
	} else if (ledger_draw(db, in->customer_id, in->amount, now, grant_id,
	    sizeof(grant_id)) == -1)
		return LEDGER_FAILED;

	type = in->transaction_type != NULL ? in->transaction_type :
	    in->is_credit ? "credit_added" : "credit_deducted";
	state_id("cle_", entry_id, idlen);
	if (ledger_insert(db, entry_id, in, in->is_credit, in->amount, before, after, type,
	    grant_id[0] != '\0' ? grant_id : NULL, now) == -1)
		return LEDGER_FAILED;

	/* The balance row: Dodo's CustomerCreditBalance, created on first use. */
	ledger_amount_text(now, now_text, sizeof(now_text));
	state_id("cbal_", balance_id, sizeof(balance_id));
	if (state_exec(db, "INSERT INTO balances (id, customer_id, entitlement_id, created_at,"
	    " updated_at, last_transaction_at) VALUES (?1, ?2, ?3, CAST(?4 AS INTEGER),"
	    " CAST(?4 AS INTEGER), CAST(?4 AS INTEGER)) ON CONFLICT (customer_id, entitlement_id)"
	    " DO UPDATE SET updated_at = excluded.updated_at,"
	    " last_transaction_at = excluded.last_transaction_at", 4, balance_id,
	    in->customer_id, sandbox.entitlement_id, now_text) == -1)
		return LEDGER_FAILED;

	if (ledger_event(db, in->is_credit ? "credit.added" : "credit.deducted",
	    entry_id) == -1)
		return LEDGER_FAILED;
	threshold = ledger_low_threshold();
	if (!in->is_credit && before >= threshold && after < threshold &&
	    ledger_low_balance_event(db, in->customer_id, after) == -1)
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
