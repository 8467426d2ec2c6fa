/* sandbox.h: the offline emulation of Dodo Payments and Resend (sandbox.fcgi), shared declarations. */
#ifndef MAILKIT_SANDBOX_H
#define MAILKIT_SANDBOX_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sqlite3.h>
#include <json-c/json.h>

#include "server.h"
#include "settings.h"
#include "whsig.h"

/*
 * Layout: main.c (settings, route table), state.c (SQLite schema, per-thread
 * handle, ids, clocks), ledger.c (grants, FIFO debits, expiry, low-balance),
 * dodo_api.c and resend_api.c (the two wire APIs; openai_api.c OpenAI's
 * chat completions), usage.c (usage events and meters), meter.c (the
 * meter worker, the test clock, cycle renewals), pages.c (dashboard,
 * hosted checkout, outbox), deliver.c (signed webhook deliveries),
 * faults.c (fault injection and the admin API), late.c (the thread that
 * applies the effects of "late" faults).  Every piece of state lives in
 * SQLite so that it survives restarts and all threads see it; the
 * exceptions (call counts, pending late effects) are noted where they live.
 */

#define SANDBOX_MOUNT		"/sandbox"	/* where the web server routes us */
#define SANDBOX_BUSINESS_ID	"bus_sandbox"
#define SANDBOX_ID_MAX		64	/* "cus_" + 24 random characters, with room */
#define SANDBOX_TIME_MAX	40	/* "2026-11-21T12:00:00.123000Z" */
#define SANDBOX_AMOUNT_MAX	24	/* decimal text of an int64 */
#define SANDBOX_URL_MAX		2048	/* return_url, checkout_url */
#define SANDBOX_NAME_MAX	256	/* customer names */
#define SANDBOX_METADATA_MAX	50	/* Dodo: at most 50 metadata pairs */
#define SANDBOX_METADATA_KEY_MAX 40	/* Dodo ledger metadata: key <= 40 chars */
#define SANDBOX_METADATA_VAL_MAX 500	/* ... value <= 500 chars */
#define SANDBOX_PAGE_SIZE_MAX	100	/* Dodo list endpoints: page_size <= 100 */
#define SANDBOX_PAGE_SIZE_DEFAULT 10
#define SANDBOX_AMOUNT_LIMIT	10000000000LL	/* Dodo: integer part under 10^10 */
#define SANDBOX_SESSION_TTL_MS	(24LL * 3600 * 1000)	/* checkout sessions live 24 h */
#define DAY_MS			(24LL * 3600 * 1000)
#define SANDBOX_CYCLE_MS	(30 * DAY_MS)	/* a subscription's billing cycle */

/* A plan the sandbox sells: a settings plan with its price. */
struct sandbox_plan {
	const char	*name;			/* the settings plan's name */
	const char	*product_id;		/* <NAME>_PLAN_PRODUCT_ID, or pdt_sandbox_<name> */
	long		 credits;		/* credits granted per cycle */
	long		 overage_limit;		/* credits past zero; 0: blocked at zero */
	long		 price;			/* SANDBOX_<NAME>_PLAN_PRICE, cents per month */
	char		 product_buf[SANDBOX_ID_MAX];	/* the default product id */
};

/* Settings read once in main() from the environment (see README.md). */
struct sandbox_config {
	const char	*db_path;		/* SANDBOX_DB */
	const char	*webhook_url;		/* SANDBOX_WEBHOOK_URL, "" = record only */
	struct whsig_key webhook_key;		/* DODO_WEBHOOK_KEY */
	int		 neuralapi;		/* MAILKIT_PRODUCT=neuralapi: tokens, not emails */
	const char	*product_name;		/* "MailKit" or "NeuralAPI", on the pages */
	const char	*unit;			/* "emails" or "tokens" */
	const char	*entitlement_name;	/* "Email Credits" or "Token Credits" */
	const char	*entitlement_id;	/* CREDIT_ENTITLEMENT_ID */
	struct sandbox_plan plans[SETTINGS_PLANS_MAX];	/* the settings' plans, [0] default */
	size_t		 nplans;
	const char	*topup_product_id;	/* TOPUP_PRODUCT_ID */
	long		 topup_credits;		/* TOPUP_CREDITS */
	long		 topup_price;		/* SANDBOX_TOPUP_PRICE, cents */
	long		 topup_expiry_days;	/* SANDBOX_TOPUP_EXPIRY_DAYS, 0 = never */
	long		 expiry_days;		/* SANDBOX_CREDIT_EXPIRY_DAYS: plan grants */
	long		 rollover_percent;	/* SANDBOX_ROLLOVER_PERCENT: of a plan grant's
						   remainder carried into the next cycle; 0 = none */
	long		 rollover_max;		/* SANDBOX_ROLLOVER_MAX_COUNT: times a grant rolls */
	const char	*usage_event_name;	/* USAGE_EVENT_NAME: the built-in meter's event */
	long		 meter_interval_ms;	/* SANDBOX_METER_INTERVAL_MS */
	long		 low_percent;		/* SANDBOX_LOW_BALANCE_PERCENT */
	long		 retry_divisor;		/* SANDBOX_WEBHOOK_RETRY_DIVISOR: tests shrink the schedule */
	long		 latency_ms;		/* SANDBOX_LATENCY_MS, added to every API call */
	long		 threads;		/* SANDBOX_THREADS, request threads */
};
extern struct sandbox_config sandbox;

/* ------------------------------------------------------------ state.c */

/* This thread's database handle, opened (and migrated) on first use.
 * Returns NULL, with the reason logged, if the database cannot be opened. */
sqlite3	*state_db(void);
/* Close this thread's handle (a thread that ends without it has it closed). */
void	 state_close(void);
/*
 * A statement for sql on db, with no parameter bound; NULL (logged) on
 * failure.  On this thread's handle it is prepared once and kept: sql must
 * be a string constant, its address is the cache key.  The same sql asked
 * for again while a first use is still open gets a statement of its own.
 * Give it back with state_done(), never sqlite3_finalize().
 */
sqlite3_stmt *state_prepare(sqlite3 *db, const char *sql);
/* The same with the n const char * arguments bound to ?1..?n (NULL binds
 * NULL, text is copied); the caller binds any further parameters. */
sqlite3_stmt *state_query(sqlite3 *db, const char *sql, int n, ...);
/* Done with st from state_prepare() / state_query(): a kept statement is
 * reset (ending its read) with its bindings cleared, another finalized.
 * NULL is ignored. */
void	 state_done(sqlite3_stmt *st);
/* Run sql (no result rows) with text parameters ?1..?n (NULL binds NULL).  0 / -1. */
int	 state_exec(sqlite3 *db, const char *sql, int n, ...);
/* Wall clock in milliseconds since the epoch. */
int64_t	 state_now_ms(void);
/* The sandbox's billing clock: the wall clock plus the test clock's offset
 * (POST /admin/clock).  Grants, entries, balances and subscription cycles
 * run on it; webhook timestamps, retries, ingestion limits and faults on
 * the wall clock. */
int64_t	 state_clock_ms(void);
/* The test clock's offset in ms (0 unless moved). */
int64_t	 state_clock_offset_ms(void);
/* Read the offset from db at start.  0 / -1. */
int	 state_clock_load(sqlite3 *db);
/* Store a new offset (in the caller's transaction) and use it.  0 / -1. */
int	 state_clock_store(sqlite3 *db, int64_t offset_ms);
/* ISO 8601 UTC with microseconds, as Dodo prints times; "" for ms <= 0. */
void	 state_iso(int64_t ms, char *out, size_t len);
/* prefix + 24 random [0-9A-Za-z], e.g. "cus_Xk3..."; out >= SANDBOX_ID_MAX. */
void	 state_id(const char *prefix, char *out, size_t len);
/* A random (version 4) UUID, as Resend's email ids. */
void	 state_uuid(char *out, size_t len);
/* Column text or "" (never NULL). */
const char *state_text(sqlite3_stmt *st, int col);
/* New json string from column text, or json null for SQL NULL. */
json_object *state_json_text(sqlite3_stmt *st, int col);
/* Parse a stored JSON object column; an empty object when NULL/invalid. */
json_object *state_json_object(sqlite3_stmt *st, int col);
/* Wipe every table (POST /admin/reset).  0 / -1. */
int	 state_reset(sqlite3 *db);
/* Find a product: 1 plan, 2 top-up, 0 unknown. */
int	 state_product_kind(const char *product_id);
/* The plan sold as product_id (a subscription product made through the
 * API sells as the default plan), or NULL. */
const struct sandbox_plan *state_plan_of(const char *product_id);
#define SANDBOX_TITLE_MAX	64	/* "NeuralAPI Starter" */
/* What a product is called (pages, products): plan NULL is the top-up. */
void	 state_product_title(const struct sandbox_plan *plan, char *out, size_t len);

/* Replies shared by the emulated APIs. */
enum sandbox_api { SANDBOX_API_DODO, SANDBOX_API_RESEND, SANDBOX_API_SENDGRID,
	SANDBOX_API_POSTMARK, SANDBOX_API_OPENAI };

/* 1 when authorization is "Bearer <key>" with a non-empty key (both APIs
 * accept any key: only its presence is checked). */
int	 state_bearer(const char *authorization);
/* An error in api's own shape, with status: Dodo {"code", "message"},
 * Resend {"statusCode", "name", "message"}, SendGrid {"errors": [{"message",
 * "field": null, "help": null}]}, Postmark {"ErrorCode", "Message"}; code
 * fills "code" / "name" / "ErrorCode" (a number; SendGrid: unused). */
void	 state_api_verror(struct response *resp, enum sandbox_api api, int status,
	    const char *code, const char *fmt, va_list ap) __attribute__((format(printf, 5, 0)));
/* 200 with the object {key: value}; value is taken. */
void	 state_reply_member(struct response *resp, const char *key, json_object *value);

/* ------------------------------------------------------------ ledger.c */

enum ledger_outcome {
	LEDGER_APPLIED = 0,
	LEDGER_INSUFFICIENT,	/* debit larger than the balance, and no overage allowed */
	LEDGER_OVERAGE_EXCEEDED, /* debit would take the overage past the plan's limit */
	LEDGER_DUPLICATE,	/* idempotency_key used before for this balance */
	LEDGER_NO_CUSTOMER,	/* customer unknown */
	LEDGER_FAILED		/* database error (logged) */
};

struct ledger_request {
	const char	*customer_id;
	int		 is_credit;
	int64_t		 amount;		/* > 0 */
	const char	*reason;		/* may be NULL */
	const char	*idempotency_key;	/* may be NULL */
	const char	*metadata;		/* JSON object text, or NULL for {} */
	int64_t		 expires_at_ms;		/* credits: 0 = never */
	const char	*source_type;		/* credits: grant source (api, subscription, one_time) */
	const char	*source_id;		/* credits: sub_/pay_ id or NULL */
	const char	*transaction_type;	/* NULL: credit_added / credit_deducted */
	const char	*event;			/* NULL: credit.added / credit.deducted */
	const char	*reference_type;	/* may be NULL */
	const char	*reference_id;		/* may be NULL */
	const char	*description;		/* may be NULL */
	int64_t		 at_ms;			/* when (billing clock); 0 = now */
};

/*
 * Apply one ledger entry inside the caller's open write transaction:
 * notice expired grants first (credit.expired entries), then create a grant
 * (credit) or draw the oldest non-expired grants first (debit), write the
 * entry, and enqueue credit.added / credit.deducted (or in->event) and,
 * when a debit takes the balance from >= threshold to below it,
 * credit.balance_low.  A debit past the balance goes into overage when the
 * customer's plan allows it (the balance to 0, the rest onto the overage,
 * up to the plan's overage_limit: else LEDGER_OVERAGE_EXCEEDED), else it is
 * LEDGER_INSUFFICIENT.  The entry id goes to entry_id.  Nothing is written
 * unless LEDGER_APPLIED.
 */
enum ledger_outcome ledger_apply(sqlite3 *db, const struct ledger_request *in,
	    char *entry_id, size_t idlen);
/* The same in its own BEGIN IMMEDIATE transaction; wakes the delivery thread. */
enum ledger_outcome ledger_post(const struct ledger_request *in, char *entry_id, size_t idlen);
/* Available balance (sum of non-expired grants) of a customer. */
int64_t	 ledger_balance(sqlite3 *db, const char *customer_id, int64_t now_ms);
/* A customer's current overage (credits used past zero, not yet reset). */
int64_t	 ledger_overage(sqlite3 *db, const char *customer_id);
/* The plan of a customer's newest active subscription to a plan, or NULL
 * (no overage then). */
const struct sandbox_plan *ledger_customer_plan(sqlite3 *db, const char *customer_id);
/* Flag grants that expired since last noticed, in their own transaction.  0 / -1. */
int	 ledger_expire_due(sqlite3 *db, const char *customer_id);
/* The CreditLedgerEntry object of an entry (superset of the 201 reply), or NULL. */
json_object *ledger_entry_json(sqlite3 *db, const char *entry_id);
/* Threshold under which credit.balance_low fires: SANDBOX_LOW_BALANCE_PERCENT
 * of plan's credits (NULL: the default plan's). */
int64_t	 ledger_low_threshold(const struct sandbox_plan *plan);
/*
 * The cycle end at_ms of subscription sub_id of customer_id, in the
 * caller's transaction: its grants' remainder expires (credit.expired) or,
 * with SANDBOX_ROLLOVER_PERCENT, rolls over into a new grant
 * (credit.rolled_over, the rest credit.rollover_forfeited; a grant rolled
 * SANDBOX_ROLLOVER_MAX_COUNT times expires), the overage is reset
 * (credit.overage_reset), and credits of the new cycle are granted
 * (credit.added).  0 / -1.
 */
int	 ledger_renew(sqlite3 *db, const char *customer_id, const char *sub_id,
	    int64_t credits, int64_t at_ms);

/* What one meter pass did to a customer, in credits. */
struct ledger_metered {
	int64_t	deducted;	/* from grants, oldest first */
	int64_t	overage;	/* onto the overage */
	int64_t	unbilled;	/* past zero with no overage room: never billed */
};
/*
 * Bill total metered credits of customer_id (the built-in meter's usage),
 * in the caller's transaction: from the grants, oldest first, down to 0 (a
 * "credit_deducted" entry, credit.deducted), the rest onto the overage up
 * to the plan's limit ("overage_charged", credit.overage_charged), the
 * rest unbilled.  Entries carry reference_type "meter", reference_id the
 * meter, description and metadata (JSON text).  0 / -1.
 */
int	 ledger_meter(sqlite3 *db, const char *customer_id, int64_t total,
	    const char *description, const char *metadata, struct ledger_metered *out);

/* ------------------------------------------------------------ meter.c */

/* What a meter pass did (POST /admin/meter/run answers it). */
struct meter_result {
	int64_t	customers;	/* customers with new usage */
	int64_t	events;		/* events metered */
	int64_t	deducted;	/* credits from grants */
	int64_t	overage;	/* credits onto overages */
	int64_t	unbilled;	/* credits past zero never billed */
	int64_t	renewed;	/* subscription cycles renewed first */
};
/* One pass now: cycles due renewed, then every customer's unmetered
 * events of USAGE_EVENT_NAME billed (ledger_meter).  Passes take turns.
 * 0 / -1 (a customer's failure is logged and his events stay unmetered). */
int	 meter_run(struct meter_result *out);
/* The worker: a pass every SANDBOX_METER_INTERVAL_MS.  0 / -1. */
int	 meter_start(void);
void	 meter_stop(void);
/* POST /admin/meter/run -> the meter_result; GET/POST /admin/clock. */
void	 meter_admin_run(const struct request *, struct response *);
void	 meter_admin_clock_get(const struct request *, struct response *);
void	 meter_admin_clock_post(const struct request *, struct response *);

/* ------------------------------------------------------------ deliver.c */

/* Insert a webhook (envelope around data, which is taken) for delivery,
 * inside the caller's transaction: status "pending", or "recorded" (never
 * sent) when SANDBOX_WEBHOOK_URL is empty.  0 / -1. */
int	 deliver_enqueue(sqlite3 *db, const char *type, json_object *data);
/* Wake the delivery thread (call after COMMIT); nothing when record-only. */
void	 deliver_wake(void);
/* Start the delivery thread (from main, before server_run).  0 / -1. */
int	 deliver_start(void);
/* Ask the delivery thread to stop and wait for it. */
void	 deliver_stop(void);

/* ------------------------------------------------------------ faults.c */

/* What an injected fault leaves to the handler that asked for it. */
enum fault_kind {
	FAULT_NONE,		/* no fault, or one that already answered */
	FAULT_STALL,		/* sleep stall_ms where the handler chooses, then go on */
	FAULT_LATE,		/* hand the request to fault_late() */
	FAULT_ACCEPT500		/* go on, then fault_after() turns a success into a 500 */
};

struct fault_plan {
	enum fault_kind	 kind;
	long		 stall_ms;	/* FAULT_STALL, FAULT_LATE: hold the request this long */
	int64_t		 late_at_ms;	/* FAULT_LATE: apply the effect then (wall clock) */
};

/*
 * Count a call of target and consume one pending fault for it.  Returns 1
 * when the fault answered the request (resp filled: 500 / 429 / 422 in the
 * API's error shape, or dropped), 0 to go on.  With plan NULL a stall is
 * slept here; with plan non-NULL, stall, late and accept500 are described
 * there for the handler (plan->kind FAULT_NONE otherwise).  Only handlers
 * that pass a plan get late and accept500 (faults_post() refuses them for
 * the other targets).
 */
int	 fault_check(const char *target, enum sandbox_api api, struct response *resp,
	    struct fault_plan *plan);
/* An effect to apply at late time: run the request's work with no fault
 * taken, filling resp; 1 when it changed the state, 0 when it did not. */
typedef int fault_apply_fn(const struct request *req, struct response *resp);
/*
 * The "late" fault (plan from fault_check(), kind FAULT_LATE): a copy of
 * req is queued for the late thread, which runs apply on it at
 * plan->late_at_ms; this thread holds the request plan->stall_ms and ends
 * it with no reply, as "drop".  target names the effect in the log.
 */
void	 fault_late(const struct request *req, struct response *resp,
	    const struct fault_plan *plan, const char *target, fault_apply_fn *apply);
/* At the end of a handler that passed plan: with accept500, a success
 * already applied is answered 500 in api's shape instead. */
/* The email_send target for an email API without idempotency keys (SendGrid,
 * Postmark): faults as fault_check(), then accept(req, resp) now, or late. */
void	 fault_email_send(const struct request *req, struct response *resp,
	    enum sandbox_api api, fault_apply_fn *accept);
void	 fault_after(const struct fault_plan *plan, enum sandbox_api api,
	    struct response *resp);
/* The calls counted per target live in this process (see faults.c): read
 * the counts saved by the last clean stop from db at start (0 / -1), and
 * save them at a clean stop (errors logged). */
int	 fault_calls_load(sqlite3 *db);
void	 fault_calls_save(void);
/* Sleep ms milliseconds (bounded by the fault API's maximum). */
void	 fault_sleep_ms(long ms);
/* For the delivery thread: 1 if this attempt must fail (target "webhook"). */
int	 fault_webhook_should_fail(sqlite3 *db);

/* Optional integer member name of root within [min, max]: 0 with *out set,
 * or left alone when absent or null; -1 when it is anything else. */
int	 fault_int_member(json_object *root, const char *name, int64_t min, int64_t max,
	    int64_t *out);
void	 faults_post(const struct request *, struct response *);
void	 faults_delete(const struct request *, struct response *);
void	 faults_list(const struct request *, struct response *);
void	 admin_emails(const struct request *, struct response *);
void	 admin_webhooks(const struct request *, struct response *);
void	 admin_stats(const struct request *, struct response *);
void	 admin_reset(const struct request *, struct response *);

/* ------------------------------------------------------------ late.c */

/*
 * Queue apply(copy of req) for the late thread at at_ms (wall clock ms);
 * the copy (body included) is owned by the queue, so the request thread
 * may be gone by then.  0, or -1 (logged) when it cannot be queued.
 */
int	 late_queue(const char *target, const struct request *req, fault_apply_fn *apply,
	    int64_t at_ms);
/* Start the late thread (from main, before server_run).  0 / -1. */
int	 late_start(void);
/* Stop it: effects still pending are dropped, each logged. */
void	 late_stop(void);
/* POST /admin/reset: drop the pending effects (logged) and zero the count. */
void	 late_clear(void);
/* Late effects applied since the start or the last reset (GET /admin/stats). */
int64_t	 late_applied(void);

/* ------------------------------------------------------------ dodo_api.c */

/* Shared by the Dodo routes of dodo_api.c, catalog.c and usage.c: */
/* Every Dodo call starts here: SANDBOX_LATENCY_MS, then 1 when the request
 * carries "Authorization: Bearer <token>"; else a 401 is set. */
int	 dodo_api_authorized(const struct request *req, struct response *resp);
/* authorized (SANDBOX_LATENCY_MS slept) and no injected fault for target
 * answered: 1 to go on, else resp is filled. */
int	 dodo_api_enter(const struct request *req, struct response *resp, const char *target);
/* This thread's database, or NULL with a 500 in Dodo's shape. */
sqlite3	*dodo_api_db(struct response *resp);
/* Member key of o: the ISO time of column col of st, or null. */
void	 dodo_api_time(json_object *o, const char *key, sqlite3_stmt *st, int col);
/* The "metadata" member of root checked as Dodo does (<= 50 pairs, short
 * keys and values, scalar values): *out its JSON text (owned by root) or
 * NULL when absent.  0, or -1 with the reason in why. */
int	 dodo_api_metadata(json_object *root, const char **out, char *why, size_t whylen);
/* The same with keys of at most key_max characters (usage events: 100). */
int	 dodo_api_metadata_keys(json_object *root, size_t key_max, const char **out, char *why,
	    size_t whylen);
/* "YYYY-MM-DDTHH:MM:SS[.frac](Z|+00:00)" to epoch ms (milliseconds of
 * the fraction kept).  0 / -1. */
int	 dodo_api_parse_time(const char *s, int64_t *ms);
/* Optional string member of at most max bytes: 0 (*out NULL when absent
 * or null), -1 when it is not such a string. */
int	 dodo_api_opt_string(json_object *root, const char *name, size_t max, const char **out);
/* One row of a Dodo list route as JSON; NULL leaves the row out. */
typedef json_object *dodo_api_row_fn(sqlite3 *db, sqlite3_stmt *st);
/* Finish a page-number list route: bind page_size / page_number from the
 * query to parameters limit and limit + 1 of st (LIMIT, OFFSET), answer
 * {"items": [row(db, st), ...]} (st NULL: a 500), give st back. */
void	 dodo_api_list(sqlite3 *db, const struct request *req, struct response *resp,
	    sqlite3_stmt *st, int limit, dodo_api_row_fn *row);

/* {"code": code, "message": ...} with status, as Dodo's errors. */
void	 dodo_api_error(struct response *resp, int status, const char *code,
	    const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* Shapes shared with the webhooks; NULL when the id is unknown. */
json_object *dodo_api_customer_json(sqlite3 *db, const char *customer_id);
json_object *dodo_api_payment_json(sqlite3 *db, const char *payment_id);
json_object *dodo_api_subscription_json(sqlite3 *db, const char *subscription_id);

void	 dodo_api_checkout_create(const struct request *, struct response *);
void	 dodo_api_checkout_get(const struct request *, struct response *);
void	 dodo_api_customer_get(const struct request *, struct response *);
void	 dodo_api_customer_list(const struct request *, struct response *);
void	 dodo_api_customer_entitlements(const struct request *, struct response *);
void	 dodo_api_subscription_get(const struct request *, struct response *);
void	 dodo_api_subscription_list(const struct request *, struct response *);
void	 dodo_api_payment_get(const struct request *, struct response *);
void	 dodo_api_balance_get(const struct request *, struct response *);
void	 dodo_api_ledger_post(const struct request *, struct response *);
void	 dodo_api_ledger_list(const struct request *, struct response *);
void	 dodo_api_grants_list(const struct request *, struct response *);

/* ------------------------------------------------------------ catalog.c */

/*
 * The catalog an operator makes through the API (mailkit-admin setup):
 * credit entitlements, products with credits attached, webhook endpoints
 * with their signing secrets.  Recorded and answered as Dodo does; a
 * create with an Idempotency-Key seen before answers the first object.
 * Balances stay those of the configured CREDIT_ENTITLEMENT_ID, and a
 * product bought is priced and credited as the configured plan or top-up
 * (README.md).
 */
void	 catalog_entitlement_create(const struct request *, struct response *);
void	 catalog_entitlement_list(const struct request *, struct response *);
void	 catalog_entitlement_get(const struct request *, struct response *);
void	 catalog_product_create(const struct request *, struct response *);
void	 catalog_product_list(const struct request *, struct response *);
void	 catalog_product_get(const struct request *, struct response *);
void	 catalog_webhook_create(const struct request *, struct response *);
void	 catalog_webhook_list(const struct request *, struct response *);
void	 catalog_webhook_get(const struct request *, struct response *);
void	 catalog_webhook_secret(const struct request *, struct response *);
/* A product made through the API: 1 a subscription, 2 one-time, 0 none. */
int	 catalog_product_kind(sqlite3 *db, const char *product_id);
/* Meters (POST /meters, GET /meters[/{id}]; target "catalog"): Dodo's Meter
 * shape.  The built-in meter, CATALOG_METER_BUILTIN, sums the "tokens" of
 * USAGE_EVENT_NAME events and is the one meter.c bills; catalog_meter_builtin()
 * writes it (at start and after a reset: 0 / -1). */
#define CATALOG_METER_BUILTIN	"mtr_sandbox_usage"
void	 catalog_meter_create(const struct request *, struct response *);
void	 catalog_meter_list(const struct request *, struct response *);
void	 catalog_meter_get(const struct request *, struct response *);
int	 catalog_meter_builtin(sqlite3 *db);
/* The Meter of that id, or NULL. */
json_object *catalog_meter(sqlite3 *db, const char *id);

/* One registered endpoint a webhook of a type goes to. */
struct catalog_endpoint {
	char		 id[SANDBOX_ID_MAX];
	char		 url[SANDBOX_URL_MAX];
	struct whsig_key key;
};
/*
 * Call cb for each enabled endpoint whose filter_types holds type (or is
 * empty: every type), in creation order, until cb returns non-zero.
 * 0, or -1 on a database error (logged).
 */
int	 catalog_endpoints(sqlite3 *db, const char *type,
	    int (*cb)(const struct catalog_endpoint *, void *), void *arg);
/* The endpoint of that id (enabled or not): 0, or -1 when unknown. */
int	 catalog_endpoint_get(sqlite3 *db, const char *id, struct catalog_endpoint *out);

/* ------------------------------------------------------------ usage.c */

/* POST /dodo/events/ingest: Dodo's limits (README.md); fault target events_ingest. */
void	 usage_ingest(const struct request *, struct response *);
/* GET /dodo/events and /dodo/events/{event_id}; fault target events_read. */
void	 usage_event_list(const struct request *, struct response *);
void	 usage_event_get(const struct request *, struct response *);

/* ------------------------------------------------------------ resend_api.c */

/* {"statusCode": status, "name": name, "message": message}, as Resend's errors. */
void	 resend_api_error(struct response *resp, int status, const char *name,
	    const char *fmt, ...) __attribute__((format(printf, 4, 5)));
void	 resend_api_send(const struct request *, struct response *);
void	 resend_api_get(const struct request *, struct response *);
/* Add cc, bcc, reply_to (arrays, or null) and tags (array, or null) from a
 * stored extras_json to an email object o. */
void	 resend_api_extras(json_object *o, const char *extras_json);
/* Store an email given in Resend's shape (from, to, cc, bcc, reply_to, tags,
 * subject, html, text), as the outbox shows it; its new id into id.  0 / -1. */
int	 resend_api_record(json_object *root, char *id, size_t idlen);

/* ------------------------------------------------------------ sendgrid_api.c */

/* SendGrid's error shape, {"errors": [{"message", "field": null, "help": null}]}. */
void	 sendgrid_api_error(struct response *resp, int status, const char *fmt, ...)
	    __attribute__((format(printf, 3, 4)));
/* POST /sendgrid/v3/mail/send: 202, no body, X-Message-Id. */
void	 sendgrid_api_send(const struct request *, struct response *);

/* ------------------------------------------------------------ postmark_api.c */

/* Postmark's error shape, {"ErrorCode": code, "Message"}. */
void	 postmark_api_error(struct response *resp, int status, int code, const char *fmt, ...)
	    __attribute__((format(printf, 4, 5)));
/* POST /postmark/email: 200 {To, SubmittedAt, MessageID, ErrorCode: 0, Message}. */
void	 postmark_api_send(const struct request *, struct response *);

/* ------------------------------------------------------------ openai_api.c */

/* {"error": {"message", "type", "param", "code"}} with status, as OpenAI's
 * errors; param and code may be NULL (JSON null). */
void	 openai_api_error(struct response *resp, int status, const char *type,
	    const char *param, const char *code, const char *fmt, ...)
	    __attribute__((format(printf, 6, 7)));
/* POST /openai/v1/chat/completions: a deterministic completion with usage
 * (README.md), or its SSE chunks with "stream": true; fault target "openai". */
void	 openai_api_chat(const struct request *, struct response *);
/* GET /openai/v1/models and /openai/v1/models/{model}. */
void	 openai_api_models_list(const struct request *, struct response *);
void	 openai_api_model_get(const struct request *, struct response *);

/* ------------------------------------------------------------ pages.c */

void	 pages_dashboard(const struct request *, struct response *);
void	 pages_checkout(const struct request *, struct response *);
void	 pages_checkout_pay(const struct request *, struct response *);
void	 pages_adjust(const struct request *, struct response *);
void	 pages_outbox(const struct request *, struct response *);

/* --- guard.c: who may change state; what the outbox may show --- */

#define GUARD_TOKEN_MAX		65	/* hex HMAC-SHA256 + NUL */
#define GUARD_TOKEN_FIELD	"csrf"	/* the hidden form field */

/* Derive the token key from the webhook key (stable across restarts).  0 / -1. */
int	guard_init(void);
/* The form token of one page, e.g. "/checkout/cks_..." (hex, NUL-terminated). */
void	guard_token(const char *page, char out[GUARD_TOKEN_MAX]);
/*
 * May this request change state?  A foreign Origin is a 403; a POST must be
 * JSON (admin routes: page NULL, else 415) or a form carrying page's token
 * (else 403).  Other methods need a CORS preflight cross-site, which the
 * sandbox never grants.  Returns 0, or -1 with resp filled.
 */
int	guard_change(const struct request *req, const char *page, struct response *resp);
/* In place: every MailKit API key in s becomes "mk_abcd…" (the outbox shows
 * what was mailed, not a usable key). */
void	guard_mask_keys(char *s);

#endif
