/* state.c: the sandbox's SQLite schema, per-thread handles, ids, clocks and the replies both APIs share. */
#include <sys/random.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "db.h"
#include "log.h"
#include "sandbox.h"

#define STATE_ID_RANDOM		24	/* random characters after an id's prefix */
#define STATE_QUERY_PARAMS_MAX	16	/* text parameters of state_query() and state_exec() */
#define STATE_ERROR_MESSAGE_MAX	512	/* the "message" of an API error reply */

/*
 * Amounts are whole credits (the entitlement's precision is 0) kept as
 * INTEGER; times are INTEGER milliseconds since the epoch.  JSON columns
 * hold objects exactly as they will be sent.
 */
static const struct db_migration state_migrations[] = {
	{ "CREATE TABLE customers ("
	  "  id TEXT PRIMARY KEY, email TEXT NOT NULL, name TEXT NOT NULL DEFAULT '',"
	  "  created_at INTEGER NOT NULL);"
	  "CREATE INDEX customers_email ON customers (lower(email));"
	  "CREATE TABLE sessions ("
	  "  id TEXT PRIMARY KEY, product_id TEXT NOT NULL, quantity INTEGER NOT NULL,"
	  "  customer_id TEXT, email TEXT, name TEXT, return_url TEXT, metadata TEXT,"
	  "  created_at INTEGER NOT NULL, completed_at INTEGER, payment_id TEXT,"
	  "  subscription_id TEXT);"
	  "CREATE TABLE payments ("
	  "  id TEXT PRIMARY KEY, customer_id TEXT NOT NULL, session_id TEXT,"
	  "  product_id TEXT NOT NULL, quantity INTEGER NOT NULL, subscription_id TEXT,"
	  "  total_amount INTEGER NOT NULL, status TEXT NOT NULL, metadata TEXT,"
	  "  created_at INTEGER NOT NULL);"
	  "CREATE TABLE subscriptions ("
	  "  id TEXT PRIMARY KEY, customer_id TEXT NOT NULL, product_id TEXT NOT NULL,"
	  "  quantity INTEGER NOT NULL, status TEXT NOT NULL, price INTEGER NOT NULL,"
	  "  metadata TEXT, created_at INTEGER NOT NULL, next_billing_at INTEGER NOT NULL);"
	  "CREATE TABLE balances ("
	  "  id TEXT PRIMARY KEY, customer_id TEXT NOT NULL, entitlement_id TEXT NOT NULL,"
	  "  created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL,"
	  "  last_transaction_at INTEGER, UNIQUE (customer_id, entitlement_id));"
	  "CREATE TABLE grants ("
	  "  seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,"
	  "  customer_id TEXT NOT NULL, entitlement_id TEXT NOT NULL,"
	  "  initial_amount INTEGER NOT NULL, remaining INTEGER NOT NULL,"
	  "  source_type TEXT NOT NULL, source_id TEXT, metadata TEXT,"
	  "  expires_at INTEGER, expired INTEGER NOT NULL DEFAULT 0,"
	  "  created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);"
	  "CREATE INDEX grants_owner ON grants (customer_id, entitlement_id, seq);"
	  "CREATE TABLE ledger ("
	  "  seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,"
	  "  customer_id TEXT NOT NULL, entitlement_id TEXT NOT NULL,"
	  "  amount INTEGER NOT NULL, is_credit INTEGER NOT NULL,"
	  "  balance_before INTEGER NOT NULL, balance_after INTEGER NOT NULL,"
	  "  transaction_type TEXT NOT NULL, grant_id TEXT, reference_type TEXT,"
	  "  reference_id TEXT, description TEXT, reason TEXT, idempotency_key TEXT,"
	  "  metadata TEXT, created_at INTEGER NOT NULL);"
	  "CREATE INDEX ledger_owner ON ledger (customer_id, entitlement_id, seq);"
	  "CREATE UNIQUE INDEX ledger_idempotency ON ledger"
	  "  (customer_id, entitlement_id, idempotency_key) WHERE idempotency_key IS NOT NULL;"
	  "CREATE TABLE emails ("
	  "  seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,"
	  "  from_addr TEXT NOT NULL, to_json TEXT NOT NULL, subject TEXT NOT NULL,"
	  "  html TEXT, text TEXT, status TEXT NOT NULL, idempotency_key TEXT,"
	  "  created_at INTEGER NOT NULL);"
	  "CREATE TABLE idempotency ("
	  "  key TEXT PRIMARY KEY, body_hash TEXT NOT NULL, email_id TEXT,"
	  "  created_at INTEGER NOT NULL);"
	  "CREATE TABLE deliveries ("
	  "  seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,"
	  "  type TEXT NOT NULL, body TEXT NOT NULL, status TEXT NOT NULL,"
	  "  attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at INTEGER NOT NULL,"
	  "  last_status INTEGER, last_error TEXT, created_at INTEGER NOT NULL,"
	  "  updated_at INTEGER NOT NULL);"
	  "CREATE INDEX deliveries_due ON deliveries (status, next_attempt_at);"
	  "CREATE TABLE faults ("
	  "  target TEXT PRIMARY KEY, mode TEXT NOT NULL, remaining INTEGER NOT NULL,"
	  "  stall_ms INTEGER NOT NULL);"
	  "CREATE TABLE calls (target TEXT PRIMARY KEY, n INTEGER NOT NULL);" },
	/* the headers of the last attempt, so tests can verify what was signed */
	{ "ALTER TABLE deliveries ADD COLUMN last_timestamp TEXT;"
	  "ALTER TABLE deliveries ADD COLUMN last_signature TEXT;" },
	/* every /emails call prunes expired idempotency keys: without an index
	 * that is a scan of every key of the last 24 hours */
	{ "CREATE INDEX idempotency_created ON idempotency (created_at);" },
	/* mode "late": when the effect lands, after the request arrived */
	{ "ALTER TABLE faults ADD COLUMN late_ms INTEGER;" },
	/* what the API makes (catalog.c): entitlements, products, webhook
	 * endpoints; a delivery to an endpoint names it */
	{ "CREATE TABLE catalog ("
	  "  seq INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, id TEXT NOT NULL UNIQUE,"
	  "  json TEXT NOT NULL, secret TEXT, idempotency_key TEXT, created_at INTEGER NOT NULL);"
	  "CREATE UNIQUE INDEX catalog_idempotency ON catalog (kind, idempotency_key)"
	  "  WHERE idempotency_key IS NOT NULL;"
	  "ALTER TABLE deliveries ADD COLUMN endpoint_id TEXT;" },
	/* cc, bcc, reply_to and tags as sent ({} of those given), echoed back */
	{ "ALTER TABLE emails ADD COLUMN extras_json TEXT;" },
	/* NeuralAPI (issue 14): overage on balances and entries, rolled-over
	 * grants, usage events (the meter bills the unprocessed ones), the
	 * test clock's offset */
	{ "ALTER TABLE balances ADD COLUMN overage INTEGER NOT NULL DEFAULT 0;"
	  "ALTER TABLE ledger ADD COLUMN overage_before INTEGER NOT NULL DEFAULT 0;"
	  "ALTER TABLE ledger ADD COLUMN overage_after INTEGER NOT NULL DEFAULT 0;"
	  "ALTER TABLE grants ADD COLUMN rollover_count INTEGER NOT NULL DEFAULT 0;"
	  "ALTER TABLE grants ADD COLUMN parent_grant_id TEXT;"
	  "CREATE INDEX grants_source ON grants (source_id);"
	  "CREATE TABLE events ("
	  "  seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL UNIQUE,"
	  "  customer_id TEXT NOT NULL, event_name TEXT NOT NULL, timestamp INTEGER NOT NULL,"
	  "  metadata TEXT, created_at INTEGER NOT NULL, processed INTEGER NOT NULL DEFAULT 0);"
	  "CREATE INDEX events_customer ON events (customer_id, timestamp);"
	  "CREATE INDEX events_unmetered ON events (event_name, customer_id, seq)"
	  "  WHERE processed = 0;"
	  "CREATE TABLE clock (id INTEGER PRIMARY KEY CHECK (id = 1),"
	  "  offset_ms INTEGER NOT NULL);" },
	/* every ledger write looks up the customer's plan (overage limit) */
	{ "CREATE INDEX subscriptions_customer ON subscriptions (customer_id, created_at);" },
};

/*
 * Statements kept prepared per thread, keyed by the SQL text's address:
 * preparing anew on every query was a quarter of the sandbox's CPU.  The
 * sandbox has about 55 distinct statements (a thread of the route tests
 * used 43 at most), all string constants; past this many a thread
 * prepares the rest on each use, as before.
 */
#define STATE_STMT_CACHE	96

struct state_stmt {
	const char	*sql;		/* the caller's string constant: the key */
	sqlite3_stmt	*st;		/* prepared on state_tls_db, PERSISTENT */
	int		 busy;		/* handed out, not yet given back by state_done() */
};

static __thread sqlite3 *state_tls_db;
static __thread struct state_stmt state_stmts[STATE_STMT_CACHE];
static __thread size_t	state_nstmts;
/* closes the handle of a thread that ends without state_close() */
static pthread_key_t	state_key;
static pthread_once_t	state_once = PTHREAD_ONCE_INIT;
static int		state_key_ok;

/*
 * Close a handle after finalizing every statement still prepared on it
 * (the cached ones): sqlite3_close_v2() would otherwise keep the handle
 * alive as a zombie, and its memory would leak.
 */
static void
state_db_free(void *db)
{
	sqlite3_stmt	*st;

	while ((st = sqlite3_next_stmt(db, NULL)) != NULL)
		sqlite3_finalize(st);
	sqlite3_close_v2(db);
	state_nstmts = 0;
}

static void
state_key_create(void)
{
	state_key_ok = pthread_key_create(&state_key, state_db_free) == 0;
}

sqlite3 *
state_db(void)
{
	char	 why[256];

	if (state_tls_db != NULL)
		return state_tls_db;
	state_tls_db = db_open(sandbox.db_path, state_migrations,
	    sizeof(state_migrations) / sizeof(state_migrations[0]), why, sizeof(why));
	if (state_tls_db == NULL) {
		log_error("sandbox database %s: %s", sandbox.db_path, why);
		return NULL;
	}
	/* test state, not money: no fsync at checkpoints (a power cut may lose
	 * the last commits, a crash of the sandbox loses nothing) */
	if (sqlite3_exec(state_tls_db, "PRAGMA synchronous=OFF", NULL, NULL, NULL) != SQLITE_OK)
		log_warn("sandbox database %s: %s", sandbox.db_path, sqlite3_errmsg(state_tls_db));
	pthread_once(&state_once, state_key_create);
	if (state_key_ok)
		pthread_setspecific(state_key, state_tls_db);
	return state_tls_db;
}

void
state_close(void)
{
	if (state_tls_db == NULL)
		return;
	if (state_key_ok)
		pthread_setspecific(state_key, NULL);
	state_db_free(state_tls_db);
	state_tls_db = NULL;
}

sqlite3_stmt *
state_prepare(sqlite3 *db, const char *sql)
{
	struct state_stmt	*c = NULL;
	sqlite3_stmt		*st = NULL;
	size_t			 i;

	if (db == NULL)
		return NULL;
	if (db == state_tls_db) {
		for (i = 0; i < state_nstmts; i++)
			if (state_stmts[i].sql == sql)
				break;
		if (i < state_nstmts) {
			c = &state_stmts[i];
			/* in use further up the stack (a loop over rows calling a
			 * helper that runs the same query), or an address reused
			 * for other text: a statement of its own, finalized after */
			if (!c->busy && strcmp(sqlite3_sql(c->st), sql) == 0) {
				c->busy = 1;
				return c->st;
			}
			c = NULL;
		} else if (state_nstmts < STATE_STMT_CACHE)
			c = &state_stmts[state_nstmts];
	}
	if (c != NULL) {
		if (sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st,
		    NULL) != SQLITE_OK)
			goto fail;
		c->sql = sql;
		c->st = st;
		c->busy = 1;
		state_nstmts++;
		return st;
	}
	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
		goto fail;
	return st;
fail:
	log_error("sandbox sql: %s", sqlite3_errmsg(db));
	sqlite3_finalize(st);
	return NULL;
}

void
state_done(sqlite3_stmt *st)
{
	size_t	i;

	if (st == NULL)
		return;
	for (i = 0; i < state_nstmts; i++) {
		if (state_stmts[i].st == st) {
			/* reset at once: a statement left mid-way holds its read
			 * transaction open (and the WAL from being checkpointed) */
			sqlite3_reset(st);
			sqlite3_clear_bindings(st);
			state_stmts[i].busy = 0;
			return;
		}
	}
	sqlite3_finalize(st);
}

/* state_query() with the arguments in ap. */
static sqlite3_stmt *
state_vquery(sqlite3 *db, const char *sql, int n, va_list ap)
{
	sqlite3_stmt	*st;
	int		 i;

	if (n > STATE_QUERY_PARAMS_MAX || (st = state_prepare(db, sql)) == NULL)
		return NULL;
	for (i = 1; i <= n; i++)	/* a NULL pointer binds SQL NULL */
		sqlite3_bind_text(st, i, va_arg(ap, const char *), -1, SQLITE_TRANSIENT);
	return st;
}

sqlite3_stmt *
state_query(sqlite3 *db, const char *sql, int n, ...)
{
	sqlite3_stmt	*st;
	va_list		 ap;

	va_start(ap, n);
	st = state_vquery(db, sql, n, ap);
	va_end(ap);
	return st;
}

int
state_exec(sqlite3 *db, const char *sql, int n, ...)
{
	sqlite3_stmt	*st;
	va_list		 ap;
	int		 rc;

	va_start(ap, n);
	st = state_vquery(db, sql, n, ap);
	va_end(ap);
	if (st == NULL)
		return -1;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW)
		;
	if (rc != SQLITE_DONE)
		log_error("sandbox sql: %s", sqlite3_errmsg(db));
	state_done(st);
	return rc == SQLITE_DONE ? 0 : -1;
}

int64_t
state_now_ms(void)
{
	struct timespec	ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The test clock's lead over the wall clock (one process: README). */
static _Atomic int64_t	state_clock_offset;

int64_t
state_clock_ms(void)
{
	return state_now_ms() + state_clock_offset;
}

int64_t
state_clock_offset_ms(void)
{
	return state_clock_offset;
}

int
state_clock_load(sqlite3 *db)
{
	sqlite3_stmt	*st;

	if ((st = state_prepare(db, "SELECT offset_ms FROM clock WHERE id = 1")) == NULL)
		return -1;
	state_clock_offset = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
	state_done(st);
	return 0;
}

int
state_clock_store(sqlite3 *db, int64_t offset_ms)
{
	char	v[SANDBOX_AMOUNT_MAX];

	snprintf(v, sizeof(v), "%lld", (long long)offset_ms);
	if (state_exec(db, "INSERT INTO clock (id, offset_ms) VALUES (1, CAST(?1 AS INTEGER))"
	    " ON CONFLICT (id) DO UPDATE SET offset_ms = excluded.offset_ms", 1, v) == -1)
		return -1;
	state_clock_offset = offset_ms;
	return 0;
}

void
state_iso(int64_t ms, char *out, size_t len)
{
	struct tm	tm;
	time_t		sec;
	char		day[32];

	if (len == 0)
		return;
	out[0] = '\0';
	if (ms <= 0)
		return;
	sec = (time_t)(ms / 1000);
	if (gmtime_r(&sec, &tm) == NULL ||
	    strftime(day, sizeof(day), "%Y-%m-%dT%H:%M:%S", &tm) == 0)
		return;
	snprintf(out, len, "%s.%03d000Z", day, (int)(ms % 1000));
}

/* Fill p with n random bytes; getrandom() never fails for n <= 256 after boot. */
static void
state_random(unsigned char *p, size_t n)
{
	size_t	got = 0;
	ssize_t	r;

	while (got < n) {
		r = getrandom(p + got, n - got, 0);
		if (r <= 0)
			continue;
		got += (size_t)r;
	}
}

void
state_id(const char *prefix, char *out, size_t len)
{
	static const char	alphabet[] =
	    "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
	unsigned char		r[STATE_ID_RANDOM];
	char			tail[STATE_ID_RANDOM + 1];
	size_t			i;

	state_random(r, sizeof(r));
	for (i = 0; i < STATE_ID_RANDOM; i++)
		tail[i] = alphabet[r[i] % 62];	/* slight bias is fine for test ids */
	tail[STATE_ID_RANDOM] = '\0';
	snprintf(out, len, "%s%s", prefix, tail);
}

void
state_uuid(char *out, size_t len)
{
	unsigned char	u[16];

	state_random(u, sizeof(u));
	u[6] = (u[6] & 0x0f) | 0x40;	/* version 4 */
	u[8] = (u[8] & 0x3f) | 0x80;	/* RFC 4122 variant */
	snprintf(out, len,
	    "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
	    u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11],
	    u[12], u[13], u[14], u[15]);
}

const char *
state_text(sqlite3_stmt *st, int col)
{
	const unsigned char	*t = sqlite3_column_text(st, col);

	return t != NULL ? (const char *)t : "";
}

json_object *
state_json_text(sqlite3_stmt *st, int col)
{
	if (sqlite3_column_type(st, col) == SQLITE_NULL)
		return NULL;
	return json_object_new_string(state_text(st, col));
}

json_object *
state_json_object(sqlite3_stmt *st, int col)
{
	json_object	*o = NULL;

	if (sqlite3_column_type(st, col) != SQLITE_NULL)
		o = json_tokener_parse(state_text(st, col));
	if (o != NULL && !json_object_is_type(o, json_type_object)) {
		json_object_put(o);
		o = NULL;
	}
	return o != NULL ? o : json_object_new_object();
}

int
state_reset(sqlite3 *db)
{
	/* one string run once: not worth a place in the statement cache */
	static const char	sql[] = "DELETE FROM customers; DELETE FROM sessions;"
	    " DELETE FROM payments; DELETE FROM subscriptions; DELETE FROM balances;"
	    " DELETE FROM grants; DELETE FROM ledger; DELETE FROM emails;"
	    " DELETE FROM idempotency; DELETE FROM deliveries; DELETE FROM faults;"
	    " DELETE FROM calls; DELETE FROM catalog; DELETE FROM events; DELETE FROM clock;";

	if (db == NULL || db_begin(db) == -1)
		return -1;
	if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK || db_commit(db) == -1) {
		log_error("sandbox reset: %s", sqlite3_errmsg(db));
		db_rollback(db);
		return -1;
	}
	state_clock_offset = 0;
	return catalog_meter_builtin(db);
}

const struct sandbox_plan *
state_plan_of(const char *product_id)
{
	if (product_id == NULL)
		return NULL;
	for (size_t i = 0; i < sandbox.nplans; i++)
		if (strcmp(product_id, sandbox.plans[i].product_id) == 0)
			return &sandbox.plans[i];
	/* a subscription product made through the API sells as the default plan */
	if (catalog_product_kind(state_db(), product_id) == 1)
		return &sandbox.plans[0];
	return NULL;
}

void
state_product_title(const struct sandbox_plan *plan, char *out, size_t len)
{
	if (plan == NULL) {
		snprintf(out, len, "%s", sandbox.neuralapi ? "Token Top-Up" : "Top-Up Pack");
		return;
	}
	snprintf(out, len, "%s %c%s", sandbox.product_name,
	    plan->name[0] >= 'a' && plan->name[0] <= 'z' ? plan->name[0] - 'a' + 'A' :
	    plan->name[0], plan->name + 1);
}

int
state_product_kind(const char *product_id)
{
	if (product_id == NULL)
		return 0;
	if (state_plan_of(product_id) != NULL)
		return 1;
	if (strcmp(product_id, sandbox.topup_product_id) == 0)
		return 2;
	return catalog_product_kind(state_db(), product_id);
}

/* ------------------------------------------------------------ API replies */

int
state_bearer(const char *authorization)
{
	const char	*a = authorization;

	if (strncasecmp(a, "Bearer ", 7) != 0)
		return 0;
	for (a += 7; *a == ' '; a++)
		;
	return *a != '\0';
}

void
state_api_verror(struct response *resp, enum sandbox_api api, int status, const char *code,
    const char *fmt, va_list ap)
{
	json_object	*o = json_object_new_object();
	char		 msg[STATE_ERROR_MESSAGE_MAX];

	vsnprintf(msg, sizeof(msg), fmt, ap);
	if (api == SANDBOX_API_SENDGRID) {
		json_object *errors = json_object_new_array(), *e = json_object_new_object();

		json_object_object_add(e, "message", json_object_new_string(msg));
		json_object_object_add(e, "field", NULL);
		json_object_object_add(e, "help", NULL);
		json_object_array_add(errors, e);
		json_object_object_add(o, "errors", errors);
		response_json(resp, status, o);
		return;
	}
	if (api == SANDBOX_API_POSTMARK) {
		json_object_object_add(o, "ErrorCode", json_object_new_int((int)strtol(code, NULL,
		    10)));
		json_object_object_add(o, "Message", json_object_new_string(msg));
		response_json(resp, status, o);
		return;
	}
	if (api == SANDBOX_API_RESEND) {
		json_object_object_add(o, "statusCode", json_object_new_int(status));
		json_object_object_add(o, "name", json_object_new_string(code));
	} else
		json_object_object_add(o, "code", json_object_new_string(code));
	json_object_object_add(o, "message", json_object_new_string(msg));
	response_json(resp, status, o);
}

void
state_reply_member(struct response *resp, const char *key, json_object *value)
{
	json_object	*o = json_object_new_object();

	json_object_object_add(o, key, value);
	response_json(resp, 200, o);
}
