/* dodo_api.c: the Dodo Payments REST API as MailKit and the official SDK use it (under /sandbox/dodo). */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "db.h"
#include "log.h"
#include "sandbox.h"
#include "url.h"
#include "valid.h"

#define DODO_API_QUANTITY_MAX	100	/* units per cart item */
#define DODO_API_REASON_MAX	1000	/* ledger entry reason text */
#define DODO_API_KEY_MAX	256	/* ledger idempotency keys */
#define DODO_API_QUERY_MAX	320	/* one decoded query value (an email fits) */

void
dodo_api_error(struct response *resp, int status, const char *code, const char *fmt, ...)
{
	va_list	ap;

	va_start(ap, fmt);
	state_api_verror(resp, SANDBOX_API_DODO, status, code, fmt, ap);
	va_end(ap);
}

int
dodo_api_authorized(const struct request *req, struct response *resp)
{
	fault_sleep_ms(sandbox.latency_ms);	/* as a real upstream's round trip */
	if (state_bearer(req->authorization))
		return 1;
	dodo_api_error(resp, 401, "UNAUTHORIZED",
	    "Missing or invalid API key: send Authorization: Bearer <key>");
	return 0;
}

/* Authorized and no injected fault answered: 1 to go on. */
int
dodo_api_enter(const struct request *req, struct response *resp, const char *target)
{
	if (!dodo_api_authorized(req, resp))
		return 0;
	return fault_check(target, SANDBOX_API_DODO, resp, NULL) == 0;
}

/* The database or a 500 in Dodo's shape. */
sqlite3 *
dodo_api_db(struct response *resp)
{
	sqlite3	*db = state_db();

	if (db == NULL)
		dodo_api_error(resp, 500, "INTERNAL_SERVER_ERROR", "database unavailable");
	return db;
}

void
dodo_api_time(json_object *o, const char *key, sqlite3_stmt *st, int col)
{
	char	t[SANDBOX_TIME_MAX];

	if (sqlite3_column_type(st, col) == SQLITE_NULL) {
		json_object_object_add(o, key, NULL);
		return;
	}
	state_iso(sqlite3_column_int64(st, col), t, sizeof(t));
	json_object_object_add(o, key, json_object_new_string(t));
}


/* Customer from "SELECT id, email, name, created_at". */
static json_object *
dodo_api_customer_row(sqlite3 *db, sqlite3_stmt *st)
{
	json_object	*o = json_object_new_object();

	(void)db;

	json_object_object_add(o, "business_id", json_object_new_string(SANDBOX_BUSINESS_ID));
	json_object_object_add(o, "customer_id", json_object_new_string(state_text(st, 0)));
	json_object_object_add(o, "email", json_object_new_string(state_text(st, 1)));
	json_object_object_add(o, "name", json_object_new_string(state_text(st, 2)));
	dodo_api_time(o, "created_at", st, 3);
	json_object_object_add(o, "metadata", json_object_new_object());
	json_object_object_add(o, "phone_number", NULL);
	return o;
}

json_object *
dodo_api_customer_json(sqlite3 *db, const char *customer_id)
{
	sqlite3_stmt	*st;
	json_object	*o = NULL;

	st = state_query(db, "SELECT id, email, name, created_at FROM customers WHERE id = ?1",
	    1, customer_id);
	if (st == NULL)
		return NULL;
	if (sqlite3_step(st) == SQLITE_ROW)
		o = dodo_api_customer_row(db, st);
	state_done(st);
	return o;
}

/* The {customer_id, email, name} summary embedded in payments and subscriptions. */
static json_object *
dodo_api_customer_ref(sqlite3 *db, const char *customer_id)
{
	json_object	*c = dodo_api_customer_json(db, customer_id), *o, *v;

	o = json_object_new_object();
	json_object_object_add(o, "customer_id", json_object_new_string(customer_id));
	if (c != NULL && json_object_object_get_ex(c, "email", &v))
		json_object_object_add(o, "email", json_object_get(v));
	if (c != NULL && json_object_object_get_ex(c, "name", &v))
		json_object_object_add(o, "name", json_object_get(v));
	json_object_object_add(o, "phone_number", NULL);
	json_object_object_add(o, "metadata", json_object_new_object());
	json_object_put(c);
	return o;
}

json_object *
dodo_api_payment_json(sqlite3 *db, const char *payment_id)
{
	sqlite3_stmt	*st;
	json_object	*o = NULL, *cart, *item, *subs;

	st = state_query(db, "SELECT id, customer_id, session_id, product_id, quantity,"
	    " subscription_id, total_amount, status, metadata, created_at FROM payments"
	    " WHERE id = ?1", 1, payment_id);
	if (st == NULL)
		return NULL;
	if (sqlite3_step(st) != SQLITE_ROW)
		goto out;
	o = json_object_new_object();
	json_object_object_add(o, "business_id", json_object_new_string(SANDBOX_BUSINESS_ID));
	json_object_object_add(o, "brand_id", json_object_new_string(SANDBOX_BUSINESS_ID));
	json_object_object_add(o, "payment_id", json_object_new_string(state_text(st, 0)));
	json_object_object_add(o, "status", json_object_new_string(state_text(st, 7)));
	json_object_object_add(o, "customer", dodo_api_customer_ref(db, state_text(st, 1)));
	cart = json_object_new_array();
	item = json_object_new_object();
	json_object_object_add(item, "product_id", json_object_new_string(state_text(st, 3)));
	json_object_object_add(item, "quantity", json_object_new_int(sqlite3_column_int(st, 4)));
	json_object_array_add(cart, item);
	json_object_object_add(o, "product_cart", cart);
	json_object_object_add(o, "subscription_id", state_json_text(st, 5));
	subs = json_object_new_array();
	if (sqlite3_column_type(st, 5) != SQLITE_NULL)
		json_object_array_add(subs, json_object_new_string(state_text(st, 5)));
	json_object_object_add(o, "subscription_ids", subs);
	json_object_object_add(o, "checkout_session_id", state_json_text(st, 2));
	json_object_object_add(o, "metadata", state_json_object(st, 8));
	json_object_object_add(o, "total_amount",
	    json_object_new_int64(sqlite3_column_int64(st, 6)));
	json_object_object_add(o, "settlement_amount",
	    json_object_new_int64(sqlite3_column_int64(st, 6)));
	json_object_object_add(o, "currency", json_object_new_string("USD"));
	json_object_object_add(o, "settlement_currency", json_object_new_string("USD"));
	json_object_object_add(o, "payment_method", json_object_new_string("card"));
	json_object_object_add(o, "card_last_four", json_object_new_string("4242"));
	json_object_object_add(o, "card_network", json_object_new_string("VISA"));
	json_object_object_add(o, "tax", json_object_new_int(0));
	json_object_object_add(o, "disputes", json_object_new_array());
	json_object_object_add(o, "refunds", json_object_new_array());
	dodo_api_time(o, "created_at", st, 9);
out:
	state_done(st);
	return o;
}

json_object *
dodo_api_subscription_json(sqlite3 *db, const char *subscription_id)
{
	const struct sandbox_plan *plan;
	sqlite3_stmt	*st;
	json_object	*o = NULL, *cart, *ce;
	char		 n[SANDBOX_AMOUNT_MAX];

	st = state_query(db, "SELECT id, customer_id, product_id, quantity, status, price,"
	    " metadata, created_at, next_billing_at FROM subscriptions WHERE id = ?1",
	    1, subscription_id);
	if (st == NULL)
		return NULL;
	if (sqlite3_step(st) != SQLITE_ROW)
		goto out;
	o = json_object_new_object();
	json_object_object_add(o, "business_id", json_object_new_string(SANDBOX_BUSINESS_ID));
	json_object_object_add(o, "subscription_id", json_object_new_string(state_text(st, 0)));
	json_object_object_add(o, "product_id", json_object_new_string(state_text(st, 2)));
	json_object_object_add(o, "status", json_object_new_string(state_text(st, 4)));
	json_object_object_add(o, "customer", dodo_api_customer_ref(db, state_text(st, 1)));
	json_object_object_add(o, "quantity", json_object_new_int(sqlite3_column_int(st, 3)));
	json_object_object_add(o, "metadata", state_json_object(st, 6));
	json_object_object_add(o, "recurring_pre_tax_amount",
	    json_object_new_int64(sqlite3_column_int64(st, 5)));
	json_object_object_add(o, "currency", json_object_new_string("USD"));
	json_object_object_add(o, "payment_frequency_count", json_object_new_int(1));
	json_object_object_add(o, "payment_frequency_interval", json_object_new_string("Month"));
	json_object_object_add(o, "subscription_period_count", json_object_new_int(10));
	json_object_object_add(o, "subscription_period_interval", json_object_new_string("Year"));
	json_object_object_add(o, "tax_inclusive", json_object_new_boolean(0));
	json_object_object_add(o, "trial_period_days", json_object_new_int(0));
	dodo_api_time(o, "created_at", st, 7);
	dodo_api_time(o, "previous_billing_date", st, 7);
	dodo_api_time(o, "next_billing_date", st, 8);
	json_object_object_add(o, "cancel_at_next_billing_date", json_object_new_boolean(0));
	json_object_object_add(o, "cancelled_at", NULL);
	json_object_object_add(o, "expires_at", NULL);
	json_object_object_add(o, "on_demand", json_object_new_boolean(0));
	cart = json_object_new_array();
	ce = json_object_new_object();
	json_object_object_add(ce, "credit_entitlement_id",
	    json_object_new_string(sandbox.entitlement_id));
	json_object_object_add(ce, "name", json_object_new_string(sandbox.entitlement_name));
	plan = state_plan_of(state_text(st, 2));
	snprintf(n, sizeof(n), "%lld", (long long)(plan != NULL ? plan->credits : 0) *
	    sqlite3_column_int64(st, 3));
	json_object_object_add(ce, "credits_amount", json_object_new_string(n));
	json_object_array_add(cart, ce);
	json_object_object_add(o, "credit_entitlement_cart", cart);
out:
	state_done(st);
	return o;
}

/* ------------------------------------------------------------ input helpers */

/*
 * Metadata: an object of at most SANDBOX_METADATA_MAX string/number/bool
 * values with bounded keys and values.  *out is the JSON text (static
 * storage inside v) or NULL when absent.  0, or -1 with a message in why.
 */
int
dodo_api_metadata(json_object *root, const char **out, char *why, size_t whylen)
{
	return dodo_api_metadata_keys(root, SANDBOX_METADATA_KEY_MAX, out, why, whylen);
}

int
dodo_api_metadata_keys(json_object *root, size_t key_max, const char **out, char *why,
    size_t whylen)
{
	json_object	*v;
	int		 n = 0;

	*out = NULL;
	if (!json_object_object_get_ex(root, "metadata", &v) || v == NULL)
		return 0;
	if (!json_object_is_type(v, json_type_object)) {
		snprintf(why, whylen, "metadata must be an object");
		return -1;
	}
	json_object_object_foreach(v, key, val) {
		if (++n > SANDBOX_METADATA_MAX) {
			snprintf(why, whylen, "metadata has more than %d keys", SANDBOX_METADATA_MAX);
			return -1;
		}
		if (strlen(key) > key_max) {
			snprintf(why, whylen, "metadata keys are at most %zu characters", key_max);
			return -1;
		}
		if (!json_object_is_type(val, json_type_string) &&
		    !json_object_is_type(val, json_type_int) &&
		    !json_object_is_type(val, json_type_double) &&
		    !json_object_is_type(val, json_type_boolean)) {
			snprintf(why, whylen, "metadata values must be strings, numbers or booleans");
			return -1;
		}
		if (json_object_is_type(val, json_type_string) &&
		    json_object_get_string_len(val) > SANDBOX_METADATA_VAL_MAX) {
			snprintf(why, whylen, "metadata values are at most %d characters",
			    SANDBOX_METADATA_VAL_MAX);
			return -1;
		}
	}
	*out = json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN |
	    JSON_C_TO_STRING_NOSLASHESCAPE);
	return 0;
}

/* Optional string member: 0 with *out NULL when absent/null, -1 when not a string. */
int
dodo_api_opt_string(json_object *root, const char *name, size_t max, const char **out)
{
	json_object	*v;

	*out = NULL;
	if (!json_object_object_get_ex(root, name, &v) || v == NULL)
		return 0;
	if (!json_object_is_type(v, json_type_string) ||
	    (size_t)json_object_get_string_len(v) > max)
		return -1;
	*out = json_object_get_string(v);
	return 0;
}

/* An origin a browser can reach, from SANDBOX_PUBLIC_URL or the Host header. */
static void
dodo_api_origin(const struct request *req, char *out, size_t len)
{
	const char	*pub = getenv("SANDBOX_PUBLIC_URL");
	const char	*h = req->host;
	size_t		 i;

	if (pub != NULL && *pub != '\0') {
		snprintf(out, len, "%s", pub);
		if ((i = strlen(out)) > 0 && out[i - 1] == '/')
			out[i - 1] = '\0';
		return;
	}
	for (i = 0; h[i] != '\0'; i++)
		if (!isalnum((unsigned char)h[i]) && strchr(".-:[]", h[i]) == NULL)
			break;
	if (h[0] == '\0' || h[i] != '\0')
		h = "127.0.0.1";	/* no usable Host: loopback is the best guess */
	snprintf(out, len, "http://%s", h);
}

/* Positive integer page parameters from the query. */
static void
dodo_api_page(const char *query, int *size, int *number)
{
	char	v[16], *end;
	long	n;

	*size = SANDBOX_PAGE_SIZE_DEFAULT;
	*number = 0;
	if (url_query_get(query, "page_size", v, sizeof(v)) == 0) {
		n = strtol(v, &end, 10);
		if (*end == '\0' && n >= 1)
			*size = n > SANDBOX_PAGE_SIZE_MAX ? SANDBOX_PAGE_SIZE_MAX : (int)n;
	}
	if (url_query_get(query, "page_number", v, sizeof(v)) == 0) {
		n = strtol(v, &end, 10);
		if (*end == '\0' && n >= 0 && n < 1000000)
			*number = (int)n;
	}
}

/*
 * The rest of a list route once its query st is prepared (NULL: a 500):
 * bind the page from the query to ?limit and ?limit+1 (LIMIT, OFFSET) and
 * answer {"items": [row(db, st), ...]}.  Gives st back (state_done).
 */
void
dodo_api_list(sqlite3 *db, const struct request *req, struct response *resp,
    sqlite3_stmt *st, int limit, dodo_api_row_fn *row)
{
	json_object	*items, *o;
	int		 size, number;

	if (st == NULL) {
		dodo_api_error(resp, 500, "INTERNAL_SERVER_ERROR", "database error");
		return;
	}
	dodo_api_page(req->query, &size, &number);
	sqlite3_bind_int(st, limit, size);
	sqlite3_bind_int64(st, limit + 1, (int64_t)size * number);
	items = json_object_new_array();
	while (sqlite3_step(st) == SQLITE_ROW)
		if ((o = row(db, st)) != NULL)
			json_object_array_add(items, o);
	state_done(st);
	state_reply_member(resp, "items", items);
}

static int
dodo_api_customer_exists(sqlite3 *db, const char *id)
{
	sqlite3_stmt	*st = state_query(db, "SELECT 1 FROM customers WHERE id = ?1", 1, id);
	int		 found;

	if (st == NULL)
		return 0;
	found = sqlite3_step(st) == SQLITE_ROW;
	state_done(st);
	return found;
}

/*
 * GET of one object by the id in the path: lookup's shape, or 404 "<what>
 * not found".  target is the fault target the route counts as.
 */
static void
dodo_api_get_one(const struct request *req, struct response *resp, const char *target,
    json_object *(*lookup)(sqlite3 *, const char *), const char *what)
{
	sqlite3		*db;
	json_object	*o;

	if (!dodo_api_enter(req, resp, target) || (db = dodo_api_db(resp)) == NULL)
		return;
	if ((o = lookup(db, req->params[0])) == NULL) {
		dodo_api_error(resp, 404, "NOT_FOUND", "%s not found", what);
		return;
	}
	response_json(resp, 200, o);
}

/* ------------------------------------------------------------ checkouts */

/* POST /dodo/checkouts */
void
dodo_api_checkout_create(const struct request *req, struct response *resp)
{
	struct mk_err	 err;
	sqlite3		*db;
	sqlite3_stmt	*st;
	json_object	*root = NULL, *cart, *item, *v, *cust, *out;
	const char	*product_id, *customer_id = NULL, *email = NULL, *name = NULL;
	const char	*return_url = NULL, *metadata = NULL;
	char		 why[128], id[SANDBOX_ID_MAX], origin[SANDBOX_URL_MAX];
	char		 url[SANDBOX_URL_MAX + 128];
	int64_t		 quantity = 1;
	size_t		 i;

	if (!dodo_api_enter(req, resp, "checkout") || (db = dodo_api_db(resp)) == NULL)
		return;
	if ((root = request_json(req, &err)) == NULL) {
		dodo_api_error(resp, 422, "INVALID_REQUEST_BODY", "%s", err.msg);
		return;
	}
	if (!json_object_object_get_ex(root, "product_cart", &cart) ||
	    !json_object_is_type(cart, json_type_array)) {
		dodo_api_error(resp, 422, "INVALID_REQUEST_BODY", "product_cart is required");
		goto out;
	}
	if (json_object_array_length(cart) == 0) {
		/* the misspelling is Dodo's own */
		dodo_api_error(resp, 422, "PRODUCT_CART_EMTPY", "product_cart is empty");
		goto out;
	}
	if (json_object_array_length(cart) > 1) {
		dodo_api_error(resp, 422, "INVALID_REQUEST_BODY",
		    "the sandbox supports one product per cart");
		goto out;
	}
	item = json_object_array_get_idx(cart, 0);
	if (!json_object_is_type(item, json_type_object) ||
	    !json_object_object_get_ex(item, "product_id", &v) ||
	    !json_object_is_type(v, json_type_string)) {
		dodo_api_error(resp, 422, "INVALID_REQUEST_BODY",
		    "product_cart[0].product_id is required");
		goto out;
	}
	product_id = json_object_get_string(v);
	if (json_object_object_get_ex(item, "quantity", &v) && v != NULL) {
		if (!json_object_is_type(v, json_type_int) ||
		    (quantity = json_object_get_int64(v)) < 1 ||
		    quantity > DODO_API_QUANTITY_MAX) {
			dodo_api_error(resp, 422, "INVALID_REQUEST_BODY",
			    "product_cart[0].quantity must be an integer 1..%d",
			    DODO_API_QUANTITY_MAX);
			goto out;
		}
	}
	if (state_product_kind(product_id) == 0) {
		dodo_api_error(resp, 404, "NOT_FOUND", "Product %.*s not found", 80, product_id);
		goto out;
	}

	if (!json_object_object_get_ex(root, "customer", &cust) || cust == NULL ||
	    !json_object_is_type(cust, json_type_object)) {
		dodo_api_error(resp, 422, "INVALID_REQUEST_BODY",
		    "customer is required: {customer_id} or {email, name}");
		goto out;
	}
	if (dodo_api_opt_string(cust, "customer_id", CUSTOMER_ID_MAX, &customer_id) == -1 ||
	    dodo_api_opt_string(cust, "email", EMAIL_MAX, &email) == -1 ||
	    dodo_api_opt_string(cust, "name", SANDBOX_NAME_MAX, &name) == -1) {
		dodo_api_error(resp, 422, "INVALID_REQUEST_BODY",
		    "customer fields must be strings of reasonable length");
		goto out;
	}
	if (customer_id != NULL) {
		if (!dodo_api_customer_exists(db, customer_id)) {
			dodo_api_error(resp, 404, "NOT_FOUND", "Customer not found");
			goto out;
		}
		email = name = NULL;
	} else if (email == NULL || !valid_email(email)) {
		dodo_api_error(resp, 422, "INVALID_REQUEST_BODY",
		    "customer.email must be a valid email address");
		goto out;
	} else if (name != NULL && !valid_header_text(name, strlen(name))) {
		dodo_api_error(resp, 422, "INVALID_REQUEST_BODY", "customer.name is invalid");
		goto out;
	}

	if (dodo_api_opt_string(root, "return_url", SANDBOX_URL_MAX, &return_url) == -1) {
		dodo_api_error(resp, 422, "INVALID_REQUEST_BODY", "return_url must be a URL");
		goto out;
	}
	if (return_url != NULL) {
		if (strncmp(return_url, "http://", 7) != 0 &&
		    strncmp(return_url, "https://", 8) != 0) {
			dodo_api_error(resp, 422, "INVALID_REQUEST_BODY",
			    "return_url must be an http(s) URL");
			goto out;
		}
		for (i = 0; return_url[i] != '\0'; i++)
			if ((unsigned char)return_url[i] <= 0x20 || return_url[i] == 0x7f ||
			    return_url[i] == '#')
				break;
		if (return_url[i] != '\0') {
			dodo_api_error(resp, 422, "INVALID_REQUEST_BODY",
			    "return_url must not contain spaces, controls or a fragment");
			goto out;
		}
	}
	if (dodo_api_metadata(root, &metadata, why, sizeof(why)) == -1) {
		dodo_api_error(resp, 422, "INVALID_REQUEST_BODY", "%s", why);
		goto out;
	}

	state_id("cks_", id, sizeof(id));
	st = state_prepare(db, "INSERT INTO sessions (id, product_id, quantity, customer_id,"
	    " email, name, return_url, metadata, created_at)"
	    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)");
	if (st == NULL) {
		dodo_api_error(resp, 500, "INTERNAL_SERVER_ERROR", "database error");
		goto out;
	}
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, product_id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, quantity);
	sqlite3_bind_text(st, 4, customer_id, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 5, email, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 6, name, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 7, return_url, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 8, metadata != NULL ? metadata : "{}", -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 9, state_now_ms());
	if (sqlite3_step(st) != SQLITE_DONE) {
		state_done(st);
		dodo_api_error(resp, 500, "INTERNAL_SERVER_ERROR", "database error");
		goto out;
	}
	state_done(st);

	dodo_api_origin(req, origin, sizeof(origin));
	snprintf(url, sizeof(url), "%s%s/checkout/%s", origin, SANDBOX_MOUNT, id);
	out = json_object_new_object();
	json_object_object_add(out, "session_id", json_object_new_string(id));
	json_object_object_add(out, "checkout_url", json_object_new_string(url));
	json_object_object_add(out, "client_secret", NULL);
	json_object_object_add(out, "payment_id", NULL);
	json_object_object_add(out, "publishable_key", NULL);
	response_json(resp, 200, out);
out:
	json_object_put(root);
}

/* GET /dodo/checkouts/{id} */
void
dodo_api_checkout_get(const struct request *req, struct response *resp)
{
	sqlite3		*db;
	sqlite3_stmt	*st;
	json_object	*o;

	if (!dodo_api_enter(req, resp, "checkout") || (db = dodo_api_db(resp)) == NULL)
		return;
	st = state_query(db, "SELECT s.id, s.created_at, COALESCE(c.email, s.email),"
	    " COALESCE(c.name, s.name), s.payment_id, s.completed_at FROM sessions s"
	    " LEFT JOIN customers c ON c.id = s.customer_id WHERE s.id = ?1", 1, req->params[0]);
	if (st == NULL) {
		dodo_api_error(resp, 500, "INTERNAL_SERVER_ERROR", "database error");
		return;
	}
	if (sqlite3_step(st) != SQLITE_ROW) {
		state_done(st);
		dodo_api_error(resp, 404, "NOT_FOUND", "Checkout session not found");
		return;
	}
	o = json_object_new_object();
	json_object_object_add(o, "id", json_object_new_string(state_text(st, 0)));
	dodo_api_time(o, "created_at", st, 1);
	json_object_object_add(o, "customer_email", state_json_text(st, 2));
	json_object_object_add(o, "customer_name", state_json_text(st, 3));
	json_object_object_add(o, "payment_id", state_json_text(st, 4));
	json_object_object_add(o, "payment_status",
	    sqlite3_column_type(st, 5) != SQLITE_NULL ? json_object_new_string("succeeded") : NULL);
	state_done(st);
	response_json(resp, 200, o);
}

/* ------------------------------------------------------------ customers */

/* GET /dodo/customers/{id} */
void
dodo_api_customer_get(const struct request *req, struct response *resp)
{
	dodo_api_get_one(req, resp, "customer", dodo_api_customer_json, "Customer");
}

/* GET /dodo/customers[?email=&name=&page_size=&page_number=]: newest first. */
void
dodo_api_customer_list(const struct request *req, struct response *resp)
{
	sqlite3		*db;
	sqlite3_stmt	*st;
	char		 email[DODO_API_QUERY_MAX], name[DODO_API_QUERY_MAX];
	int		 has_email, has_name;

	if (!dodo_api_enter(req, resp, "customer") || (db = dodo_api_db(resp)) == NULL)
		return;
	has_email = url_query_get(req->query, "email", email, sizeof(email)) == 0;
	has_name = url_query_get(req->query, "name", name, sizeof(name)) == 0;
	/* email is matched case-insensitively, name as a case-insensitive substring */
	st = state_query(db, "SELECT id, email, name, created_at FROM customers"
	    " WHERE (?1 IS NULL OR lower(email) = lower(?1))"
	    " AND (?2 IS NULL OR instr(lower(name), lower(?2)) > 0)"
	    " ORDER BY created_at DESC, rowid DESC LIMIT ?3 OFFSET ?4",
	    2, has_email ? email : NULL, has_name ? name : NULL);
	dodo_api_list(db, req, resp, st, 3, dodo_api_customer_row);
}

/* Members "balance" and "overage" of a customer, as decimal strings. */
static void
dodo_api_amounts(sqlite3 *db, json_object *o, const char *customer_id)
{
	char	n[SANDBOX_AMOUNT_MAX];

	snprintf(n, sizeof(n), "%lld", (long long)ledger_balance(db, customer_id,
	    state_clock_ms()));
	json_object_object_add(o, "balance", json_object_new_string(n));
	snprintf(n, sizeof(n), "%lld", (long long)ledger_overage(db, customer_id));
	json_object_object_add(o, "overage", json_object_new_string(n));
}

/* GET /dodo/customers/{id}/credit-entitlements */
void
dodo_api_customer_entitlements(const struct request *req, struct response *resp)
{
	sqlite3		*db;
	json_object	*items, *o;

	if (!dodo_api_enter(req, resp, "balance_read") || (db = dodo_api_db(resp)) == NULL)
		return;
	if (!dodo_api_customer_exists(db, req->params[0])) {
		dodo_api_error(resp, 404, "NOT_FOUND", "Customer not found");
		return;
	}
	ledger_expire_due(db, req->params[0]);
	o = json_object_new_object();
	json_object_object_add(o, "credit_entitlement_id",
	    json_object_new_string(sandbox.entitlement_id));
	json_object_object_add(o, "name", json_object_new_string(sandbox.entitlement_name));
	json_object_object_add(o, "unit", json_object_new_string(sandbox.unit));
	dodo_api_amounts(db, o, req->params[0]);
	json_object_object_add(o, "description", json_object_new_string(sandbox.neuralapi ?
	    "One token = one credit" : "One email = one credit"));
	items = json_object_new_array();
	json_object_array_add(items, o);
	state_reply_member(resp, "items", items);
}

/* ------------------------------------------------------------ purchases */

/* GET /dodo/subscriptions/{id} (the "checkout" fault target: MailKit looks purchases up on return) */
void
dodo_api_subscription_get(const struct request *req, struct response *resp)
{
	dodo_api_get_one(req, resp, "checkout", dodo_api_subscription_json, "Subscription");
}

/* A list row: the Subscription of "SELECT id ...". */
static json_object *
dodo_api_subscription_row(sqlite3 *db, sqlite3_stmt *st)
{
	return dodo_api_subscription_json(db, state_text(st, 0));
}

/* GET /dodo/subscriptions[?customer_id=&product_id=&status=&page_size=&page_number=]: newest first. */
void
dodo_api_subscription_list(const struct request *req, struct response *resp)
{
	sqlite3		*db;
	sqlite3_stmt	*st;
	char		 cus[DODO_API_QUERY_MAX], pdt[DODO_API_QUERY_MAX], status[32];
	int		 has_cus, has_pdt, has_status;

	if (!dodo_api_enter(req, resp, "checkout") || (db = dodo_api_db(resp)) == NULL)
		return;
	has_cus = url_query_get(req->query, "customer_id", cus, sizeof(cus)) == 0;
	has_pdt = url_query_get(req->query, "product_id", pdt, sizeof(pdt)) == 0;
	has_status = url_query_get(req->query, "status", status, sizeof(status)) == 0;
	st = state_query(db, "SELECT id FROM subscriptions WHERE (?1 IS NULL OR customer_id = ?1)"
	    " AND (?2 IS NULL OR product_id = ?2) AND (?3 IS NULL OR status = ?3)"
	    " ORDER BY created_at DESC, rowid DESC LIMIT ?4 OFFSET ?5", 3,
	    has_cus ? cus : NULL, has_pdt ? pdt : NULL, has_status ? status : NULL);
	dodo_api_list(db, req, resp, st, 4, dodo_api_subscription_row);
}

/* GET /dodo/payments/{id} */
void
dodo_api_payment_get(const struct request *req, struct response *resp)
{
	dodo_api_get_one(req, resp, "checkout", dodo_api_payment_json, "Payment");
}

/* ------------------------------------------------------------ credit ledger */

/*
 * Common checks of the balance routes (params: entitlement, customer):
 * 1 to go on, 0 with a 404 set.
 */
static int
dodo_api_balance_owner(sqlite3 *db, const struct request *req, struct response *resp)
{
	if (strcmp(req->params[0], sandbox.entitlement_id) != 0) {
		dodo_api_error(resp, 404, "NOT_FOUND", "Credit entitlement not found");
		return 0;
	}
	if (!dodo_api_customer_exists(db, req->params[1])) {
		dodo_api_error(resp, 404, "NOT_FOUND", "Customer not found");
		return 0;
	}
	return 1;
}

/*
 * Entry of the balance read routes: authorized, no injected fault, a known
 * entitlement and customer, and expiries noticed.  The database, or NULL
 * with the reply set.
 */
static sqlite3 *
dodo_api_balance_read(const struct request *req, struct response *resp)
{
	sqlite3	*db;

	if (!dodo_api_enter(req, resp, "balance_read") || (db = dodo_api_db(resp)) == NULL ||
	    !dodo_api_balance_owner(db, req, resp))
		return NULL;
	ledger_expire_due(db, req->params[1]);
	return db;
}

/* GET /dodo/credit-entitlements/{cent}/balances/{cus} */
void
dodo_api_balance_get(const struct request *req, struct response *resp)
{
	sqlite3		*db;
	sqlite3_stmt	*st;
	json_object	*o;
	char		 id[REQUEST_PARAM_MAX + 8];

	if ((db = dodo_api_balance_read(req, resp)) == NULL)
		return;
	o = json_object_new_object();
	st = state_query(db, "SELECT b.id, b.created_at, b.updated_at, b.last_transaction_at,"
	    " c.created_at FROM customers c LEFT JOIN balances b ON b.customer_id = c.id"
	    " AND b.entitlement_id = ?2 WHERE c.id = ?1", 2, req->params[1],
	    sandbox.entitlement_id);
	if (st == NULL) {
		json_object_put(o);
		dodo_api_error(resp, 500, "INTERNAL_SERVER_ERROR", "database error");
		return;
	}
	if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL) {
		json_object_object_add(o, "id", json_object_new_string(state_text(st, 0)));
		dodo_api_time(o, "created_at", st, 1);
		dodo_api_time(o, "updated_at", st, 2);
		dodo_api_time(o, "last_transaction_at", st, 3);
	} else {
		/* never granted: a zero balance rather than a 404 (the customer exists) */
		snprintf(id, sizeof(id), "cbal_%s", req->params[1]);
		json_object_object_add(o, "id", json_object_new_string(id));
		dodo_api_time(o, "created_at", st, 4);
		dodo_api_time(o, "updated_at", st, 4);
		json_object_object_add(o, "last_transaction_at", NULL);
	}
	state_done(st);
	dodo_api_amounts(db, o, req->params[1]);
	json_object_object_add(o, "credit_entitlement_id",
	    json_object_new_string(sandbox.entitlement_id));
	json_object_object_add(o, "customer_id", json_object_new_string(req->params[1]));
	response_json(resp, 200, o);
}

/* Whole credits: digits with an optional all-zero fraction ("25", "25.000"),
 * or a JSON integer.  0 with *out set, -1 otherwise. */
static int
dodo_api_amount(json_object *v, int64_t *out)
{
	const char	*s, *p;
	int64_t		 n = 0;

	if (json_object_is_type(v, json_type_int)) {
		n = json_object_get_int64(v);
	} else if (json_object_is_type(v, json_type_string)) {
		s = json_object_get_string(v);
		if (!isdigit((unsigned char)s[0]))
			return -1;
		for (p = s; isdigit((unsigned char)*p); p++) {
			n = n * 10 + (*p - '0');
			if (n >= SANDBOX_AMOUNT_LIMIT)
				return -1;
		}
		if (*p == '.')
			for (p++; *p == '0'; p++)
				;
		if (*p != '\0')
			return -1;
	} else
		return -1;
	if (n <= 0 || n >= SANDBOX_AMOUNT_LIMIT)
		return -1;
	*out = n;
	return 0;
}

int
dodo_api_parse_time(const char *s, int64_t *ms)
{
	struct tm	tm;
	int		y, mo, d, h, mi, sec, used = 0, frac = 0, digits = 0;
	const char	*p;

	if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &sec, &used) != 6 ||
	    used != 19)
		return -1;
	p = s + used;
	if (*p == '.')
		for (p++; isdigit((unsigned char)*p); p++)
			if (digits++ < 3)
				frac = frac * 10 + (*p - '0');
	for (; digits < 3; digits++)
		frac *= 10;
	if (strcmp(p, "Z") != 0 && strcmp(p, "+00:00") != 0 && *p != '\0')
		return -1;
	if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60)
		return -1;
	memset(&tm, 0, sizeof(tm));
	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = d;
	tm.tm_hour = h;
	tm.tm_min = mi;
	tm.tm_sec = sec;
	*ms = (int64_t)timegm(&tm) * 1000 + frac;
	return *ms > 0 ? 0 : -1;
}

static fault_apply_fn dodo_api_ledger_late;

/*
 * A ledger entry of an authorized request: parse, check, apply, answer.
 * With plan, the fault of the entry's target is taken once entry_type
 * names it, and left in plan (a late one ends the request here); NULL at
 * late time, when the request took its fault long ago.  1 when the entry
 * was written, else 0.
 */
static int
dodo_api_ledger_entry(const struct request *req, struct response *resp,
    struct fault_plan *plan)
{
	struct mk_err		 err;
	struct ledger_request	 in;
	enum ledger_outcome	 r = LEDGER_FAILED;
	sqlite3			*db;
	json_object		*root = NULL, *v, *o;
	const char		*type = NULL, *expires = NULL, *target;
	char			 why[128], entry[SANDBOX_ID_MAX];

	if ((db = dodo_api_db(resp)) == NULL)
		return 0;
	if ((root = request_json(req, &err)) == NULL) {
		dodo_api_error(resp, 422, "INVALID_REQUEST_BODY", "%s", err.msg);
		return 0;
	}
	memset(&in, 0, sizeof(in));
	if (dodo_api_opt_string(root, "entry_type", 16, &type) == -1 || type == NULL ||
	    (strcmp(type, "credit") != 0 && strcmp(type, "debit") != 0)) {
		dodo_api_error(resp, 422, "INVALID_REQUEST_BODY",
		    "entry_type must be \"credit\" or \"debit\"");
		goto out;
	}
	in.is_credit = strcmp(type, "credit") == 0;
	target = in.is_credit ? "ledger_credit" : "ledger_debit";
	if (plan != NULL) {
		if (fault_check(target, SANDBOX_API_DODO, resp, plan) != 0)
			goto out;
		if (plan->kind == FAULT_LATE) {
			fault_late(req, resp, plan, target, dodo_api_ledger_late);
			goto out;
		}
		if (plan->kind == FAULT_STALL)
			fault_sleep_ms(plan->stall_ms);
	}
	if (!dodo_api_balance_owner(db, req, resp))
		goto out;
	if (!json_object_object_get_ex(root, "amount", &v) || dodo_api_amount(v, &in.amount) == -1) {
		dodo_api_error(resp, 422, "INVALID_REQUEST_BODY",
		    "amount must be a positive whole number of credits below 10^10, as a string");
		goto out;
	}
	if (dodo_api_opt_string(root, "reason", DODO_API_REASON_MAX, &in.reason) == -1 ||
	    dodo_api_opt_string(root, "idempotency_key", DODO_API_KEY_MAX,
	    &in.idempotency_key) == -1 ||
	    dodo_api_opt_string(root, "expires_at", SANDBOX_TIME_MAX, &expires) == -1) {
		dodo_api_error(resp, 422, "INVALID_REQUEST_BODY",
		    "reason, idempotency_key and expires_at must be strings");
		goto out;
	}
	if (expires != NULL && (!in.is_credit ||
	    dodo_api_parse_time(expires, &in.expires_at_ms) == -1)) {
		dodo_api_error(resp, 422, "INVALID_REQUEST_BODY",
		    "expires_at must be an ISO 8601 UTC time, on credit entries only");
		goto out;
	}
	if (dodo_api_metadata(root, &in.metadata, why, sizeof(why)) == -1) {
		dodo_api_error(resp, 422, "INVALID_REQUEST_BODY", "%s", why);
		goto out;
	}
	in.customer_id = req->params[1];
	in.source_type = "api";
	in.description = in.reason;

	r = ledger_post(&in, entry, sizeof(entry));
	switch (r) {
	case LEDGER_APPLIED:
		if ((o = ledger_entry_json(db, entry)) == NULL)
			dodo_api_error(resp, 500, "INTERNAL_SERVER_ERROR", "database error");
		else
			response_json(resp, 201, o);
		break;
	case LEDGER_INSUFFICIENT:
		dodo_api_error(resp, 400, "INSUFFICIENT_BALANCE",
		    "Insufficient credit balance for this debit");
		break;
	case LEDGER_OVERAGE_EXCEEDED:
		dodo_api_error(resp, 400, "OVERAGE_LIMIT_EXCEEDED",
		    "This debit would take the overage past the plan's overage limit");
		break;
	case LEDGER_DUPLICATE:
		dodo_api_error(resp, 409, "IDEMPOTENCY_KEY_ALREADY_USED",
		    "A ledger entry with this idempotency_key already exists");
		break;
	case LEDGER_NO_CUSTOMER:
		dodo_api_error(resp, 404, "NOT_FOUND", "Customer not found");
		break;
	default:
		dodo_api_error(resp, 500, "INTERNAL_SERVER_ERROR", "ledger error");
		break;
	}
out:
	json_object_put(root);
	return r == LEDGER_APPLIED;
}

/* The entry of a "late" fault, at its time (fault_apply_fn). */
static int
dodo_api_ledger_late(const struct request *req, struct response *resp)
{
	return dodo_api_ledger_entry(req, resp, NULL);
}

/* POST /dodo/credit-entitlements/{cent}/balances/{cus}/ledger-entries */
void
dodo_api_ledger_post(const struct request *req, struct response *resp)
{
	struct fault_plan	plan = { .kind = FAULT_NONE };

	if (!dodo_api_authorized(req, resp))
		return;
	dodo_api_ledger_entry(req, resp, &plan);
	fault_after(&plan, SANDBOX_API_DODO, resp);
}

/* Ledger entry from "SELECT id". */
static json_object *
dodo_api_ledger_row(sqlite3 *db, sqlite3_stmt *st)
{
	return ledger_entry_json(db, state_text(st, 0));
}

/* GET .../balances/{cus}/ledger[?page_size&page_number&transaction_type]: newest first. */
void
dodo_api_ledger_list(const struct request *req, struct response *resp)
{
	sqlite3		*db;
	sqlite3_stmt	*st;
	char		 type[64];
	int		 has_type;

	if ((db = dodo_api_balance_read(req, resp)) == NULL)
		return;
	has_type = url_query_get(req->query, "transaction_type", type, sizeof(type)) == 0;
	st = state_query(db, "SELECT id FROM ledger WHERE customer_id = ?1 AND"
	    " entitlement_id = ?2 AND (?3 IS NULL OR transaction_type = ?3)"
	    " ORDER BY seq DESC LIMIT ?4 OFFSET ?5", 3, req->params[1], sandbox.entitlement_id,
	    has_type ? type : NULL);
	dodo_api_list(db, req, resp, st, 4, dodo_api_ledger_row);
}

/* CreditGrant from the grants query of dodo_api_grants_list(). */
static json_object *
dodo_api_grant_row(sqlite3 *db, sqlite3_stmt *st)
{
	json_object	*o = json_object_new_object();
	char		 n[SANDBOX_AMOUNT_MAX];

	(void)db;
	json_object_object_add(o, "id", json_object_new_string(state_text(st, 0)));
	dodo_api_time(o, "created_at", st, 1);
	dodo_api_time(o, "updated_at", st, 2);
	json_object_object_add(o, "credit_entitlement_id",
	    json_object_new_string(sandbox.entitlement_id));
	json_object_object_add(o, "customer_id", json_object_new_string(state_text(st, 10)));
	snprintf(n, sizeof(n), "%lld", (long long)sqlite3_column_int64(st, 3));
	json_object_object_add(o, "initial_amount", json_object_new_string(n));
	snprintf(n, sizeof(n), "%lld", (long long)sqlite3_column_int64(st, 4));
	json_object_object_add(o, "remaining_amount", json_object_new_string(n));
	json_object_object_add(o, "is_expired", json_object_new_boolean(sqlite3_column_int(st, 5)));
	json_object_object_add(o, "is_rolled_over", json_object_new_boolean(
	    strcmp(state_text(st, 6), "rollover") == 0));
	json_object_object_add(o, "rollover_count", json_object_new_int(sqlite3_column_int(st,
	    11)));
	json_object_object_add(o, "source_type", json_object_new_string(state_text(st, 6)));
	json_object_object_add(o, "source_id", state_json_text(st, 7));
	json_object_object_add(o, "metadata", state_json_object(st, 8));
	dodo_api_time(o, "expires_at", st, 9);
	json_object_object_add(o, "parent_grant_id", state_json_text(st, 12));
	return o;
}

/* GET .../balances/{cus}/grants[?status=active|expired|depleted]: oldest first. */
void
dodo_api_grants_list(const struct request *req, struct response *resp)
{
	sqlite3		*db;
	sqlite3_stmt	*st;
	char		 status[16];
	int		 has_status;

	if ((db = dodo_api_balance_read(req, resp)) == NULL)
		return;
	has_status = url_query_get(req->query, "status", status, sizeof(status)) == 0;
	st = state_query(db, "SELECT id, created_at, updated_at, initial_amount, remaining,"
	    " expired OR (expires_at IS NOT NULL AND expires_at <= ?3), source_type, source_id,"
	    " metadata, expires_at, customer_id, rollover_count, parent_grant_id FROM grants"
	    " WHERE customer_id = ?1 AND entitlement_id = ?2"
	    " AND (?4 IS NULL"
	    "  OR (?4 = 'expired' AND (expired OR (expires_at IS NOT NULL AND expires_at <= ?3)))"
	    "  OR (?4 = 'depleted' AND remaining = 0)"
	    "  OR (?4 = 'active' AND remaining > 0 AND NOT expired"
	    "      AND (expires_at IS NULL OR expires_at > ?3)))"
	    " ORDER BY seq LIMIT ?5 OFFSET ?6", 2, req->params[1], sandbox.entitlement_id);
	if (st != NULL) {
		sqlite3_bind_int64(st, 3, state_clock_ms());
		if (has_status)
			sqlite3_bind_text(st, 4, status, -1, SQLITE_STATIC);
	}
	dodo_api_list(db, req, resp, st, 5, dodo_api_grant_row);
}
