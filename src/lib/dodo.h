/* dodo.h: the slice of the Dodo Payments API MailKit uses (checkouts, customers, credit ledger). */
#ifndef MAILKIT_DODO_H
#define MAILKIT_DODO_H

#include "err.h"

struct settings;

#define DODO_ID_MAX	128
#define DODO_AMOUNT_MAX	48	/* NUMERIC(38,28) as text */
#define DODO_URL_MAX	2048

/*
 * Upstream statuses map to err->status as follows: 404 -> 404 (unknown
 * customer or entitlement), 401/403 -> 502 (our key is wrong: an operator
 * problem, logged), other 4xx -> 502 with Dodo's message, 5xx or transport
 * failure -> 502, timeouts -> 504.
 */

struct dodo_checkout {
	char	session_id[DODO_ID_MAX];
	char	checkout_url[DODO_URL_MAX];
};

/* POST /checkouts for one unit of product_id.  Exactly one of customer_id or
 * email (name optional) identifies the buyer.  claim_binding (NULL: none)
 * goes into the session's metadata as APIKEY_CLAIM_METADATA (apikey.h). */
int	dodo_create_checkout(const struct settings *s, const char *product_id,
	    const char *customer_id, const char *email, const char *name,
	    const char *return_url, const char *claim_binding, struct dodo_checkout *out,
	    struct mk_err *err);

struct dodo_balance {
	char	balance[DODO_AMOUNT_MAX];	/* decimal strings, as Dodo sends them */
	char	overage[DODO_AMOUNT_MAX];
	char	last_transaction_at[64];	/* "" when null */
};

/* GET /credit-entitlements/{cent}/balances/{customer_id}. */
int	dodo_get_balance(const struct settings *s, const char *customer_id,
	    struct dodo_balance *out, struct mk_err *err);

enum dodo_entry_type { DODO_DEBIT, DODO_CREDIT };

enum dodo_ledger_outcome {
	DODO_LEDGER_APPLIED,		/* 201: entry created now */
	DODO_LEDGER_DUPLICATE,		/* 409: the idempotency key was used before: already applied */
	DODO_LEDGER_INSUFFICIENT,	/* 400 on a debit: not enough balance, nothing applied */
};

struct dodo_ledger_result {
	enum dodo_ledger_outcome outcome;
	char	entry_id[DODO_ID_MAX];		/* "" unless APPLIED */
	char	balance_after[DODO_AMOUNT_MAX];	/* "" unless APPLIED */
	int	earlier_maybe_done;		/* a retried attempt before the answer may
						 * have applied (upstream.h): an INSUFFICIENT
						 * answer does not prove nothing was applied */
};

/*
 * POST .../balances/{customer_id}/ledger-entries with amount (a decimal
 * string), reason and idempotency_key (required: every call that moves
 * credits carries one, so it is retried safely).  ref, when not NULL, is
 * stored as metadata {"mailkit_ref": ref} so reconciliation can match the
 * entry to MailKit's record.  Returns 0 with out filled for the three
 * outcomes above, -1 otherwise (err->maybe_done set when the entry may have
 * been applied: a timeout after sending, or a 5xx answer).
 */
int	dodo_ledger_entry(const struct settings *s, const char *customer_id,
	    enum dodo_entry_type type, const char *amount, const char *reason,
	    const char *idempotency_key, const char *ref, struct dodo_ledger_result *out,
	    struct mk_err *err);

struct dodo_customer {
	char	customer_id[DODO_ID_MAX];
	char	email[256];
	char	name[256];
};

/* GET /customers/{customer_id}. */
int	dodo_get_customer(const struct settings *s, const char *customer_id,
	    struct dodo_customer *out, struct mk_err *err);

enum dodo_purchase_kind { DODO_SUBSCRIPTION, DODO_PAYMENT };

/*
 * GET /subscriptions/{id} or GET /payments/{id}: who bought, and the
 * status ("active", "succeeded", ...).  Used when a buyer comes back from
 * the hosted checkout with ?subscription_id= or ?payment_id= in the URL:
 * the redirect itself is no proof, this lookup is.  binding receives the
 * purchase's APIKEY_CLAIM_METADATA metadata ("" when it has none).
 */
int	dodo_get_purchase(const struct settings *s, enum dodo_purchase_kind kind,
	    const char *id, struct dodo_customer *customer, char *status, size_t statuslen,
	    char *binding, size_t bindinglen, struct mk_err *err);

/*
 * GET .../balances/{customer_id}/ledger?page_size=N&page_number=P (newest
 * first, N <= 100, P from 0; an empty page ends the list).  Returns the
 * parsed {"items": [...]} object (caller puts it) or NULL with err.
 */
struct json_object;
struct json_object *dodo_list_ledger(const struct settings *s, const char *customer_id,
	    int page_size, int page_number, struct mk_err *err);

/*
 * Whether a buyer email already has an active subscription to product_id:
 * GET /customers?email= (at most DODO_PLAN_CUSTOMERS_MAX customers of that
 * email), then GET /subscriptions?customer_id=&product_id=&status=active
 * for each.  0 with *active 1 or 0, or -1 with err (502/504).
 */
#define DODO_PLAN_CUSTOMERS_MAX	10
int	dodo_plan_active(const struct settings *s, const char *email, const char *product_id,
	    int *active, struct mk_err *err);

/*
 * The catalog, for `mailkit-admin setup`.  Each returns Dodo's parsed
 * answer (the caller puts it) or NULL with err.
 *
 * dodo_list_catalog: GET /credit-entitlements or /products (what names
 * one of them) ?page_size=100&page_number=P, checked to be {"items": [...]};
 * an empty page ends the list.  dodo_list_webhooks: GET /webhooks?limit=100
 * [&iterator=...], checked to be {"data": [...]}; "iterator" (absent, null
 * or "" on the last page) gives the next page.  dodo_get_object: GET of one
 * object by a path built with url_path() (/products/{id},
 * /webhooks/{id}/secret).
 *
 * dodo_create: POST path (/credit-entitlements, /products, /webhooks) with
 * the JSON body and an Idempotency-Key header (required: Dodo, or the
 * sandbox, answers a repeat with the object the first call made), not
 * retried (a create is safe to repeat only by its key, which Dodo does not
 * promise for every route); the answer must be a JSON object.
 */
struct json_object *dodo_list_catalog(const struct settings *s, const char *what,
	    int page_number, struct mk_err *err);
struct json_object *dodo_list_webhooks(const struct settings *s, const char *iterator,
	    struct mk_err *err);
struct json_object *dodo_get_object(const struct settings *s, const char *path,
	    struct mk_err *err);
struct json_object *dodo_create(const struct settings *s, const char *path,
	    struct json_object *body, const char *idempotency_key, struct mk_err *err);

/*
 * Usage events (api-facts A.7), for the meter.  dodo_ingest_events: POST
 * /events/ingest {events} (a JSON array of at most DODO_INGEST_MAX
 * {event_id, customer_id, event_name, timestamp, metadata}, which the
 * caller keeps).  Retried on 429/5xx and lost answers with the same body:
 * event_id is Dodo's idempotency key, so a repeat is ignored.  0 when Dodo
 * answered 200 (*ingested: its ingested_count, new events only), -1 with
 * err: 400 when Dodo refused the request as invalid (a bad or too old
 * timestamp, a duplicate id: nothing of it was ingested), else 502/504
 * (maybe_done: it may have been ingested).
 *
 * dodo_get_event: GET /events/{event_id}: 0 with *found 1 (ingested) or 0
 * (404: never ingested), -1 with err (502/504).
 */
#define DODO_INGEST_MAX	1000	/* events per ingest request */
struct json_object;
int	dodo_ingest_events(const struct settings *s, struct json_object *events,
	    long *ingested, struct mk_err *err);
int	dodo_get_event(const struct settings *s, const char *event_id, int *found,
	    struct mk_err *err);

#endif
