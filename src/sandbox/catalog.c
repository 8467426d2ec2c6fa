/* catalog.c: Dodo's credit entitlements, products and webhook endpoints as the API makes them (under /sandbox/dodo). */
#include <sys/random.h>

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "log.h"
#include "sandbox.h"
#include "url.h"

#define CATALOG_NAME_MAX	256	/* names, units, descriptions */
#define CATALOG_DESC_MAX	2048
#define CATALOG_KEY_MAX		256	/* idempotency keys */
#define CATALOG_PRICE_MAX	100000000	/* minor units: $1,000,000 */
#define CATALOG_PRICE_METERS_MAX 10		/* meters of one usage-based price */
#define CATALOG_ATTACH_MAX	20	/* credit entitlements on one product */
#define CATALOG_FILTERS_MAX	100	/* filter_types of one endpoint */
#define CATALOG_TYPE_MAX	64	/* one event type name */
#define CATALOG_SECRET_BYTES	24	/* Standard Webhooks: 24-64 random bytes */
#define CATALOG_WEBHOOK_PAGE	100	/* GET /webhooks?limit= at most */
#define CATALOG_JSON_FLAGS	(JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)

/* Dodo's TaxCategory and TimeInterval values. */
static const char *const catalog_tax_categories[] = {
	"digital_products", "saas", "e_book", "edtech", "live_tutoring",
};
static const char *const catalog_intervals[] = { "Day", "Week", "Month", "Year" };

static int
catalog_one_of(const char *v, const char *const *set, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (v != NULL && strcmp(v, set[i]) == 0)
			return 1;
	return 0;
}
#define CATALOG_ONE_OF(v, set)	catalog_one_of((v), (set), sizeof(set) / sizeof((set)[0]))

/* 422 in Dodo's shape, as Dodo answers a body its schema refuses. */
static void catalog_bad(struct response *resp, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void
catalog_bad(struct response *resp, const char *fmt, ...)
{
	va_list	ap;

	va_start(ap, fmt);
	state_api_verror(resp, SANDBOX_API_DODO, 422, "INVALID_REQUEST_BODY", fmt, ap);
	va_end(ap);
}

/* Required string member of 1..max bytes, or NULL. */
static const char *
catalog_string(json_object *root, const char *name, size_t max)
{
	const char	*v;

	if (dodo_api_opt_string(root, name, max, &v) == -1 || v == NULL || v[0] == '\0')
		return NULL;
	return v;
}

/* Integer member in [min, max]: 1 present (in *out), 0 absent or null, -1 wrong. */
static int
catalog_int(json_object *root, const char *name, int64_t min, int64_t max, int64_t *out)
{
	json_object	*v;

	if (!json_object_object_get_ex(root, name, &v) || v == NULL)
		return 0;
	if (!json_object_is_type(v, json_type_int))
		return -1;
	*out = json_object_get_int64(v);
	return *out >= min && *out <= max ? 1 : -1;
}

/* Boolean member: 1 true, 0 false or absent (def), -1 not a boolean. */
static int
catalog_bool(json_object *root, const char *name, int def)
{
	json_object	*v;

	if (!json_object_object_get_ex(root, name, &v) || v == NULL)
		return def;
	if (!json_object_is_type(v, json_type_boolean))
		return -1;
	return json_object_get_boolean(v);
}

/* Copy member name of from into to (null when absent). */
static void
catalog_copy(json_object *to, json_object *from, const char *name)
{
	json_object	*v = NULL;

	json_object_object_get_ex(from, name, &v);
	json_object_object_add(to, name, json_object_get(v));
}

static json_object *
catalog_now(void)
{
	char	t[SANDBOX_TIME_MAX];

	state_iso(state_now_ms(), t, sizeof(t));
	return json_object_new_string(t);
}

/* The stored JSON of (kind, id), or NULL. */
static json_object *
catalog_find(sqlite3 *db, const char *kind, const char *id)
{
	sqlite3_stmt	*st;
	json_object	*o = NULL;

	st = state_query(db, "SELECT json FROM catalog WHERE kind = ?1 AND id = ?2", 2, kind, id);
	if (st != NULL && sqlite3_step(st) == SQLITE_ROW)
		o = state_json_object(st, 0);
	state_done(st);
	return o;
}

/* The stored JSON of the object made under (kind, idempotency key), or NULL. */
static json_object *
catalog_find_key(sqlite3 *db, const char *kind, const char *key)
{
	sqlite3_stmt	*st;
	json_object	*o = NULL;

	if (key == NULL || key[0] == '\0')
		return NULL;
	st = state_query(db, "SELECT json FROM catalog WHERE kind = ?1 AND idempotency_key = ?2",
	    2, kind, key);
	if (st != NULL && sqlite3_step(st) == SQLITE_ROW)
		o = state_json_object(st, 0);
	state_done(st);
	return o;
}

/*
 * Record obj (taken) as (kind, id) and answer it with 200; under a key
 * used before for this kind, answer the first object instead (a lost
 * race on the unique index ends the same way).
 */
static void
catalog_store(sqlite3 *db, struct response *resp, const char *kind, const char *id,
    const char *key, json_object *obj, const char *secret)
{
	json_object	*first;
	sqlite3_stmt	*st;
	char		 now[24];
	int		 rc;

	if (key != NULL && key[0] == '\0')
		key = NULL;
	if ((first = catalog_find_key(db, kind, key)) != NULL) {
		json_object_put(obj);
		response_json(resp, 200, first);
		return;
	}
	snprintf(now, sizeof(now), "%lld", (long long)state_now_ms());
	st = state_query(db, "INSERT INTO catalog (kind, id, json, secret, idempotency_key,"
	    " created_at) VALUES (?1, ?2, ?3, ?4, ?5, CAST(?6 AS INTEGER))", 6, kind, id,
	    json_object_to_json_string_ext(obj, CATALOG_JSON_FLAGS), secret, key, now);
	rc = st != NULL ? sqlite3_step(st) : SQLITE_ERROR;
	state_done(st);
	if (rc == SQLITE_DONE) {
		log_info("sandbox: %s %s created", kind, id);
		response_json(resp, 200, obj);
		return;
	}
	json_object_put(obj);
	if ((first = catalog_find_key(db, kind, key)) != NULL) {
		response_json(resp, 200, first);
		return;
	}
	log_error("sandbox catalog insert: %s", sqlite3_errmsg(db));
	dodo_api_error(resp, 500, "INTERNAL_SERVER_ERROR", "database error");
}

/* Enter a catalog route: authorized, no fault (target "catalog"), the
 * database.  NULL: answered. */
static sqlite3 *
catalog_enter(const struct request *req, struct response *resp)
{
	if (!dodo_api_enter(req, resp, "catalog"))
		return NULL;
	return dodo_api_db(resp);
}

/* GET of one object by the id in the path, or 404. */
static void
catalog_get(const struct request *req, struct response *resp, const char *kind,
    const char *what)
{
	sqlite3		*db;
	json_object	*o;

	if ((db = catalog_enter(req, resp)) == NULL)
		return;
	if ((o = catalog_find(db, kind, req->params[0])) == NULL) {
		dodo_api_error(resp, 404, "NOT_FOUND", "%s %.*s not found", what, 80,
		    req->params[0]);
		return;
	}
	response_json(resp, 200, o);
}

/* A list row: the stored object as it is. */
static json_object *
catalog_row(sqlite3 *db, sqlite3_stmt *st)
{
	(void)db;
	return state_json_object(st, 0);
}

/* ------------------------------------------------------------ credit entitlements */

/* POST /dodo/credit-entitlements */
void
catalog_entitlement_create(const struct request *req, struct response *resp)
{
	struct mk_err	 err;
	sqlite3		*db;
	json_object	*root, *o;
	const char	*name, *unit, *desc;
	char		 id[SANDBOX_ID_MAX];
	int64_t		 precision = 0, expiry = 0;
	int		 has_expiry, overage, rollover;

	if ((db = catalog_enter(req, resp)) == NULL)
		return;
	if ((root = request_json(req, &err)) == NULL) {
		dodo_api_error(resp, 422, "INVALID_REQUEST_BODY", "%s", err.msg);
		return;
	}
	if ((name = catalog_string(root, "name", CATALOG_NAME_MAX)) == NULL)
		catalog_bad(resp, "%s is required", "name");
	else if ((unit = catalog_string(root, "unit", CATALOG_NAME_MAX)) == NULL)
		catalog_bad(resp, "%s is required", "unit");
	else if (catalog_int(root, "precision", 0, 3, &precision) != 1)
		catalog_bad(resp, "%s is required: an integer 0..3", "precision");
	else if ((overage = catalog_bool(root, "overage_enabled", -2)) < 0)
		catalog_bad(resp, "%s is required: a boolean", "overage_enabled");
	else if ((rollover = catalog_bool(root, "rollover_enabled", -2)) < 0)
		catalog_bad(resp, "%s is required: a boolean", "rollover_enabled");
	else if ((has_expiry = catalog_int(root, "expires_after_days", 1, 3650, &expiry)) == -1)
		catalog_bad(resp, "%s must be an integer 1..3650", "expires_after_days");
	else if (dodo_api_opt_string(root, "description", CATALOG_DESC_MAX, &desc) == -1)
		catalog_bad(resp, "%s must be a string", "description");
	else {
		state_id("cde_", id, sizeof(id));
		o = json_object_new_object();
		json_object_object_add(o, "id", json_object_new_string(id));
		json_object_object_add(o, "business_id", json_object_new_string(SANDBOX_BUSINESS_ID));
		json_object_object_add(o, "created_at", catalog_now());
		json_object_object_add(o, "updated_at", catalog_now());
		json_object_object_add(o, "name", json_object_new_string(name));
		json_object_object_add(o, "unit", json_object_new_string(unit));
		json_object_object_add(o, "precision", json_object_new_int64(precision));
		json_object_object_add(o, "description", desc != NULL ?
		    json_object_new_string(desc) : NULL);
		json_object_object_add(o, "expires_after_days", has_expiry ?
		    json_object_new_int64(expiry) : NULL);
		json_object_object_add(o, "overage_enabled", json_object_new_boolean(overage));
		json_object_object_add(o, "overage_behavior", json_object_new_string(
		    "forgive_at_reset"));
		json_object_object_add(o, "rollover_enabled", json_object_new_boolean(rollover));
		catalog_copy(o, root, "currency");
		catalog_copy(o, root, "overage_limit");
		catalog_copy(o, root, "price_per_unit");
		catalog_copy(o, root, "max_rollover_count");
		catalog_copy(o, root, "rollover_percentage");
		catalog_copy(o, root, "rollover_timeframe_count");
		catalog_copy(o, root, "rollover_timeframe_interval");
		catalog_store(db, resp, "entitlement", id, req->idempotency_key, o, NULL);
	}
	json_object_put(root);
}

/*
 * A list route of one kind of catalog object, oldest first, paged by
 * page_size / page_number.
 */
static void
catalog_list(const struct request *req, struct response *resp, const char *kind)
{
	sqlite3		*db;
	sqlite3_stmt	*st;

	if ((db = catalog_enter(req, resp)) == NULL)
		return;
	if ((st = state_prepare(db, "SELECT json FROM catalog WHERE kind = ?3"
	    " ORDER BY seq LIMIT ?1 OFFSET ?2")) != NULL)
		sqlite3_bind_text(st, 3, kind, -1, SQLITE_STATIC);
	dodo_api_list(db, req, resp, st, 1, catalog_row);
}

/* GET /dodo/credit-entitlements */
void
catalog_entitlement_list(const struct request *req, struct response *resp)
{
	catalog_list(req, resp, "entitlement");
}

/* GET /dodo/credit-entitlements/{id} */
void
catalog_entitlement_get(const struct request *req, struct response *resp)
{
	catalog_get(req, resp, "entitlement", "Credit entitlement");
}

/* ------------------------------------------------------------ products */

/*
 * A usage-based price's meters: 1..CATALOG_PRICE_METERS_MAX of {meter_id (a
 * meter of the sandbox's), credit_entitlement_id? (a known one: billing in
 * its credits), meter_units_per_credit?, free_threshold?}.  0 / -1 (422 set).
 */
static int
catalog_price_meters(sqlite3 *db, json_object *price, struct response *resp)
{
	json_object	*meters, *m, *known;
	const char	*id, *cent;
	size_t		 n;

	if (!json_object_object_get_ex(price, "meters", &meters) ||
	    !json_object_is_type(meters, json_type_array) ||
	    (n = json_object_array_length(meters)) == 0 || n > CATALOG_PRICE_METERS_MAX) {
		catalog_bad(resp, "%s must list 1 to 10 meters", "price.meters");
		return -1;
	}
	for (size_t i = 0; i < n; i++) {
		m = json_object_array_get_idx(meters, i);
		if (!json_object_is_type(m, json_type_object) ||
		    (id = catalog_string(m, "meter_id", SANDBOX_ID_MAX)) == NULL) {
			catalog_bad(resp, "%s needs a meter_id", "each of price.meters");
			return -1;
		}
		if ((known = catalog_meter(db, id)) == NULL) {
			dodo_api_error(resp, 404, "NOT_FOUND", "meter %s not found", id);
			return -1;
		}
		json_object_put(known);
		cent = catalog_string(m, "credit_entitlement_id", SANDBOX_ID_MAX);
		if (cent != NULL && strcmp(cent, sandbox.entitlement_id) != 0 &&
		    (known = catalog_find(db, "entitlement", cent)) == NULL) {
			dodo_api_error(resp, 404, "NOT_FOUND", "credit entitlement %s not found",
			    cent);
			return -1;
		} else if (cent != NULL && strcmp(cent, sandbox.entitlement_id) != 0)
			json_object_put(known);
	}
	return 0;
}

/* The price object checked and copied (NULL: 422 set). */
static json_object *
catalog_price(sqlite3 *db, json_object *root, struct response *resp, int *recurring)
{
	json_object	*in, *out;
	const char	*type, *currency, *iv1, *iv2;
	int64_t		 price = 0, n1 = 0, n2 = 0;
	int		 usage_based;

	if (!json_object_object_get_ex(root, "price", &in) ||
	    !json_object_is_type(in, json_type_object)) {
		catalog_bad(resp, "%s is required", "price");
		return NULL;
	}
	type = catalog_string(in, "type", 32);
	currency = catalog_string(in, "currency", 3);
	if (type == NULL || (strcmp(type, "one_time_price") != 0 &&
	    strcmp(type, "recurring_price") != 0 && strcmp(type, "usage_based_price") != 0)) {
		catalog_bad(resp, "%s must be one_time_price, recurring_price or "
		    "usage_based_price", "price.type");
		return NULL;
	}
	if (currency == NULL || strlen(currency) != 3) {
		catalog_bad(resp, "%s is required: an ISO 4217 code", "price.currency");
		return NULL;
	}
	usage_based = strcmp(type, "usage_based_price") == 0;
	if (catalog_int(in, usage_based ? "fixed_price" : "price", 0, CATALOG_PRICE_MAX,
	    &price) != 1) {
		catalog_bad(resp, "%s is required: an integer of minor units", usage_based ?
		    "price.fixed_price" : "price.price");
		return NULL;
	}
	if (usage_based && catalog_price_meters(db, in, resp) == -1)
		return NULL;
	*recurring = !(strcmp(type, "one_time_price") == 0);
	if (*recurring) {
		iv1 = catalog_string(in, "payment_frequency_interval", 8);
		iv2 = catalog_string(in, "subscription_period_interval", 8);
		if (catalog_int(in, "payment_frequency_count", 1, 1000, &n1) != 1 ||
		    catalog_int(in, "subscription_period_count", 1, 1000, &n2) != 1 ||
		    !CATALOG_ONE_OF(iv1, catalog_intervals) || !CATALOG_ONE_OF(iv2, catalog_intervals)) {
			catalog_bad(resp, "%s needs payment_frequency_count/_interval and "
			    "subscription_period_count/_interval (Day, Week, Month, Year)",
			    "a recurring_price");
			return NULL;
		}
	}
	out = json_object_new_object();
	json_object_object_foreach(in, k, v)
		json_object_object_add(out, k, json_object_get(v));
	if (!json_object_object_get_ex(out, "discount", NULL))
		json_object_object_add(out, "discount", json_object_new_int(0));
	if (!json_object_object_get_ex(out, "purchasing_power_parity", NULL))
		json_object_object_add(out, "purchasing_power_parity", json_object_new_boolean(0));
	return out;
}

/* The name and unit of a known entitlement (made here, or the configured one). */
static int
catalog_entitlement_known(sqlite3 *db, const char *id, json_object *mapping)
{
	json_object	*e;

	const char	*name = sandbox.entitlement_name, *unit = sandbox.neuralapi ? "token" :
	    "email";

	e = NULL;
	if (strcmp(id, sandbox.entitlement_id) != 0) {
		if ((e = catalog_find(db, "entitlement", id)) == NULL)
			return 0;
		name = json_object_get_string(json_object_object_get(e, "name"));
		unit = json_object_get_string(json_object_object_get(e, "unit"));
	}
	json_object_object_add(mapping, "credit_entitlement_name", json_object_new_string(name));
	json_object_object_add(mapping, "credit_entitlement_unit", json_object_new_string(unit));
	json_object_put(e);
	return 1;
}

/* credit_entitlements[] checked and turned into mappings (NULL: 422/404 set). */
static json_object *
catalog_attachments(sqlite3 *db, json_object *root, struct response *resp)
{
	json_object	*in, *out, *item, *m, *v;
	const char	*cent, *amount;
	char		 uuid[48];
	int64_t		 n;
	size_t		 len;

	out = json_object_new_array();
	if (!json_object_object_get_ex(root, "credit_entitlements", &in) || in == NULL)
		return out;
	if (!json_object_is_type(in, json_type_array) ||
	    json_object_array_length(in) > CATALOG_ATTACH_MAX) {
		catalog_bad(resp, "%s must be an array of at most 20", "credit_entitlements");
		goto fail;
	}
	len = json_object_array_length(in);
	for (size_t i = 0; i < len; i++) {
		item = json_object_array_get_idx(in, i);
		cent = catalog_string(item, "credit_entitlement_id", SANDBOX_ID_MAX);
		amount = catalog_string(item, "credits_amount", SANDBOX_AMOUNT_MAX);
		if (cent == NULL || amount == NULL || amount[strspn(amount, "0123456789.")] != '\0') {
			catalog_bad(resp, "%s need credit_entitlement_id and credits_amount (a "
			    "decimal string)", "credit_entitlements[]");
			goto fail;
		}
		if (catalog_int(item, "low_balance_threshold_percent", 0, 100, &n) == -1 ||
		    catalog_int(item, "expires_after_days", 1, 3650, &n) == -1) {
			catalog_bad(resp, "%s: low_balance_threshold_percent 0..100, "
			    "expires_after_days 1..3650", "credit_entitlements[]");
			goto fail;
		}
		m = json_object_new_object();
		if (!catalog_entitlement_known(db, cent, m)) {
			json_object_put(m);
			dodo_api_error(resp, 404, "NOT_FOUND", "Credit entitlement %.*s not found",
			    80, cent);
			goto fail;
		}
		state_uuid(uuid, sizeof(uuid));
		json_object_object_add(m, "id", json_object_new_string(uuid));
		json_object_object_add(m, "credit_entitlement_id", json_object_new_string(cent));
		json_object_object_add(m, "credits_amount", json_object_new_string(amount));
		catalog_copy(m, item, "expires_after_days");
		catalog_copy(m, item, "low_balance_threshold_percent");
		catalog_copy(m, item, "currency");
		catalog_copy(m, item, "price_per_unit");
		catalog_copy(m, item, "overage_limit");
		catalog_copy(m, item, "max_rollover_count");
		catalog_copy(m, item, "rollover_percentage");
		catalog_copy(m, item, "trial_credits");
		json_object_object_add(m, "overage_enabled", json_object_new_boolean(
		    catalog_bool(item, "overage_enabled", 0) == 1));
		json_object_object_add(m, "rollover_enabled", json_object_new_boolean(
		    catalog_bool(item, "rollover_enabled", 0) == 1));
		v = NULL;
		json_object_object_get_ex(item, "overage_behavior", &v);
		json_object_object_add(m, "overage_behavior", v != NULL ? json_object_get(v) :
		    json_object_new_string("forgive_at_reset"));
		json_object_object_add(m, "proration_behavior", json_object_new_string("prorate"));
		json_object_object_add(m, "trial_credits_expire_after_trial",
		    json_object_new_boolean(0));
		json_object_array_add(out, m);
	}
	return out;
fail:
	json_object_put(out);
	return NULL;
}

/* POST /dodo/products */
void
catalog_product_create(const struct request *req, struct response *resp)
{
	struct mk_err	 err;
	sqlite3		*db;
	json_object	*root, *o, *price = NULL, *attached = NULL;
	const char	*name, *tax, *desc, *meta;
	char		 id[SANDBOX_ID_MAX], why[128];
	int		 recurring = 0;

	if ((db = catalog_enter(req, resp)) == NULL)
		return;
	if ((root = request_json(req, &err)) == NULL) {
		dodo_api_error(resp, 422, "INVALID_REQUEST_BODY", "%s", err.msg);
		return;
	}
	tax = catalog_string(root, "tax_category", 32);
	if ((name = catalog_string(root, "name", CATALOG_NAME_MAX)) == NULL)
		catalog_bad(resp, "%s is required", "name");
	else if (!CATALOG_ONE_OF(tax, catalog_tax_categories))
		catalog_bad(resp, "%s is required: digital_products, saas, e_book, edtech or "
		    "live_tutoring", "tax_category");
	else if (dodo_api_opt_string(root, "description", CATALOG_DESC_MAX, &desc) == -1)
		catalog_bad(resp, "%s must be a string", "description");
	else if (dodo_api_metadata(root, &meta, why, sizeof(why)) == -1)
		dodo_api_error(resp, 422, "INVALID_REQUEST_BODY", "%s", why);
	else if ((price = catalog_price(db, root, resp, &recurring)) != NULL &&
	    (attached = catalog_attachments(db, root, resp)) != NULL) {
		state_id("pdt_", id, sizeof(id));
		o = json_object_new_object();
		json_object_object_add(o, "product_id", json_object_new_string(id));
		json_object_object_add(o, "business_id", json_object_new_string(SANDBOX_BUSINESS_ID));
		json_object_object_add(o, "brand_id", json_object_new_string(SANDBOX_BUSINESS_ID));
		json_object_object_add(o, "created_at", catalog_now());
		json_object_object_add(o, "updated_at", catalog_now());
		json_object_object_add(o, "name", json_object_new_string(name));
		json_object_object_add(o, "description", desc != NULL ?
		    json_object_new_string(desc) : NULL);
		json_object_object_add(o, "tax_category", json_object_new_string(tax));
		json_object_object_add(o, "is_recurring", json_object_new_boolean(recurring));
		json_object_object_add(o, "license_key_enabled", json_object_new_boolean(0));
		json_object_object_add(o, "price", price);
		json_object_object_add(o, "credit_entitlements", attached);
		json_object_object_add(o, "entitlements", json_object_new_array());
		json_object_object_add(o, "addons", json_object_new_array());
		json_object_object_add(o, "metadata", meta != NULL ?
		    json_tokener_parse(meta) : json_object_new_object());
		price = attached = NULL;	/* taken by o */
		catalog_store(db, resp, "product", id, req->idempotency_key, o, NULL);
	}
	json_object_put(price);
	json_object_put(root);
}

/* A ProductListResponse from a stored Product. */
static json_object *
catalog_product_row(sqlite3 *db, sqlite3_stmt *st)
{
	json_object	*p = state_json_object(st, 0), *o = json_object_new_object(), *price;
	static const char *const same[] = {
		"business_id", "created_at", "entitlements", "is_recurring", "metadata",
		"product_id", "tax_category", "updated_at", "description", "name",
	};

	(void)db;
	for (size_t i = 0; i < sizeof(same) / sizeof(same[0]); i++)
		catalog_copy(o, p, same[i]);
	if (json_object_object_get_ex(p, "price", &price)) {
		catalog_copy(o, price, "currency");
		catalog_copy(o, price, "price");
		catalog_copy(o, price, "tax_inclusive");
		json_object_object_add(o, "price_detail", json_object_get(price));
	}
	json_object_put(p);
	return o;
}

/* GET /dodo/products[?recurring=true|false] */
void
catalog_product_list(const struct request *req, struct response *resp)
{
	sqlite3		*db;
	sqlite3_stmt	*st;
	char		 rec[8];
	const char	*want = NULL;

	if ((db = catalog_enter(req, resp)) == NULL)
		return;
	if (url_query_get(req->query, "recurring", rec, sizeof(rec)) == 0)
		want = strcmp(rec, "true") == 0 ? "1" : "0";
	st = state_query(db, "SELECT json FROM catalog WHERE kind = 'product' AND (?1 IS NULL"
	    " OR json_extract(json, '$.is_recurring') = CAST(?1 AS INTEGER))"
	    " ORDER BY seq LIMIT ?2 OFFSET ?3", 1, want);
	dodo_api_list(db, req, resp, st, 2, catalog_product_row);
}

/* The Product of a plan or the top-up the settings sell (plan NULL). */
static json_object *
catalog_configured_product(const struct sandbox_plan *plan)
{
	json_object	*o = json_object_new_object(), *price = json_object_new_object();
	json_object	*ents = json_object_new_array(), *m = json_object_new_object();
	char		 title[SANDBOX_TITLE_MAX], n[SANDBOX_AMOUNT_MAX];
	long		 days = plan != NULL ? sandbox.expiry_days : sandbox.topup_expiry_days;

	state_product_title(plan, title, sizeof(title));
	json_object_object_add(price, "type", json_object_new_string(plan != NULL ?
	    "recurring_price" : "one_time_price"));
	json_object_object_add(price, "currency", json_object_new_string("USD"));
	json_object_object_add(price, "price", json_object_new_int64(plan != NULL ? plan->price :
	    sandbox.topup_price));
	json_object_object_add(price, "discount", json_object_new_int(0));
	json_object_object_add(price, "purchasing_power_parity", json_object_new_boolean(0));
	json_object_object_add(price, "tax_inclusive", json_object_new_boolean(0));
	if (plan != NULL) {
		json_object_object_add(price, "payment_frequency_count", json_object_new_int(1));
		json_object_object_add(price, "payment_frequency_interval",
		    json_object_new_string("Month"));
		json_object_object_add(price, "subscription_period_count", json_object_new_int(10));
		json_object_object_add(price, "subscription_period_interval",
		    json_object_new_string("Year"));
	}
	json_object_object_add(m, "credit_entitlement_id",
	    json_object_new_string(sandbox.entitlement_id));
	json_object_object_add(m, "credit_entitlement_name",
	    json_object_new_string(sandbox.entitlement_name));
	json_object_object_add(m, "credit_entitlement_unit", json_object_new_string(sandbox.unit));
	snprintf(n, sizeof(n), "%ld", plan != NULL ? plan->credits : sandbox.topup_credits);
	json_object_object_add(m, "credits_amount", json_object_new_string(n));
	json_object_object_add(m, "expires_after_days", days > 0 ? json_object_new_int64(days) :
	    NULL);
	json_object_object_add(m, "overage_enabled", json_object_new_boolean(plan != NULL &&
	    plan->overage_limit > 0));
	snprintf(n, sizeof(n), "%ld", plan != NULL ? plan->overage_limit : 0L);
	json_object_object_add(m, "overage_limit", plan != NULL && plan->overage_limit > 0 ?
	    json_object_new_string(n) : NULL);
	json_object_array_add(ents, m);
	json_object_object_add(o, "product_id", json_object_new_string(plan != NULL ?
	    plan->product_id : sandbox.topup_product_id));
	json_object_object_add(o, "business_id", json_object_new_string(SANDBOX_BUSINESS_ID));
	json_object_object_add(o, "brand_id", json_object_new_string(SANDBOX_BUSINESS_ID));
	json_object_object_add(o, "name", json_object_new_string(title));
	json_object_object_add(o, "description", NULL);
	json_object_object_add(o, "tax_category", json_object_new_string("saas"));
	json_object_object_add(o, "is_recurring", json_object_new_boolean(plan != NULL));
	json_object_object_add(o, "license_key_enabled", json_object_new_boolean(0));
	json_object_object_add(o, "price", price);
	json_object_object_add(o, "credit_entitlements", ents);
	json_object_object_add(o, "entitlements", json_object_new_array());
	json_object_object_add(o, "addons", json_object_new_array());
	json_object_object_add(o, "metadata", json_object_new_object());
	json_object_object_add(o, "created_at", catalog_now());
	json_object_object_add(o, "updated_at", catalog_now());
	return o;
}

/* GET /dodo/products/{id}: one made here, or a plan or the top-up the settings sell. */
void
catalog_product_get(const struct request *req, struct response *resp)
{
	const struct sandbox_plan *plan;
	sqlite3		*db;
	json_object	*o;

	if ((db = catalog_enter(req, resp)) == NULL)
		return;
	if ((o = catalog_find(db, "product", req->params[0])) != NULL) {
		response_json(resp, 200, o);
		return;
	}
	plan = state_plan_of(req->params[0]);
	if (plan != NULL || strcmp(req->params[0], sandbox.topup_product_id) == 0) {
		response_json(resp, 200, catalog_configured_product(plan));
		return;
	}
	dodo_api_error(resp, 404, "NOT_FOUND", "Product %.*s not found", 80, req->params[0]);
}

int
catalog_product_kind(sqlite3 *db, const char *product_id)
{
	json_object	*p, *v;
	int		 kind = 0;

	if (db == NULL || (p = catalog_find(db, "product", product_id)) == NULL)
		return 0;
	kind = json_object_object_get_ex(p, "is_recurring", &v) && json_object_get_boolean(v) ?
	    1 : 2;
	json_object_put(p);
	return kind;
}

/* ------------------------------------------------------------ webhook endpoints */

/* POST /dodo/webhooks */
void
catalog_webhook_create(const struct request *req, struct response *resp)
{
	struct mk_err	 err;
	sqlite3		*db;
	json_object	*root, *o, *types = NULL, *t;
	const char	*url, *desc, *key, *meta;
	unsigned char	 raw[CATALOG_SECRET_BYTES];
	char		 id[SANDBOX_ID_MAX], why[128], secret[128];
	size_t		 n = 0;
	int		 disabled;

	if ((db = catalog_enter(req, resp)) == NULL)
		return;
	if ((root = request_json(req, &err)) == NULL) {
		dodo_api_error(resp, 422, "INVALID_REQUEST_BODY", "%s", err.msg);
		return;
	}
	url = catalog_string(root, "url", SANDBOX_URL_MAX - 1);
	if (json_object_object_get_ex(root, "filter_types", &types) && types != NULL) {
		if (!json_object_is_type(types, json_type_array) ||
		    (n = json_object_array_length(types)) > CATALOG_FILTERS_MAX)
			n = SIZE_MAX;
		for (size_t i = 0; n != SIZE_MAX && i < n; i++) {
			t = json_object_array_get_idx(types, i);
			if (!json_object_is_type(t, json_type_string) ||
			    json_object_get_string_len(t) > CATALOG_TYPE_MAX)
				n = SIZE_MAX;
		}
	}
	if (url == NULL || (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0))
		catalog_bad(resp, "%s is required: an http(s) URL", "url");
	else if (n == SIZE_MAX)
		catalog_bad(resp, "%s must be an array of event type names", "filter_types");
	else if ((disabled = catalog_bool(root, "disabled", 0)) < 0)
		catalog_bad(resp, "%s must be a boolean", "disabled");
	else if (dodo_api_opt_string(root, "description", CATALOG_DESC_MAX, &desc) == -1 ||
	    dodo_api_opt_string(root, "idempotency_key", CATALOG_KEY_MAX, &key) == -1)
		catalog_bad(resp, "%s must be strings", "description and idempotency_key");
	else if (dodo_api_metadata(root, &meta, why, sizeof(why)) == -1)
		dodo_api_error(resp, 422, "INVALID_REQUEST_BODY", "%s", why);
	else if (getrandom(raw, sizeof(raw), 0) != (ssize_t)sizeof(raw))
		dodo_api_error(resp, 500, "INTERNAL_SERVER_ERROR", "no randomness");
	else {
		/* base64 of 24 bytes is 32 characters: the buffer holds it */
		memcpy(secret, "whsec_", 6);
		EVP_EncodeBlock((unsigned char *)secret + 6, raw, sizeof(raw));
		state_id("whk_", id, sizeof(id));
		o = json_object_new_object();
		json_object_object_add(o, "id", json_object_new_string(id));
		json_object_object_add(o, "url", json_object_new_string(url));
		json_object_object_add(o, "description", json_object_new_string(desc != NULL ?
		    desc : ""));
		json_object_object_add(o, "metadata", meta != NULL ? json_tokener_parse(meta) :
		    json_object_new_object());
		json_object_object_add(o, "filter_types", types != NULL ? json_object_get(types) :
		    json_object_new_array());
		json_object_object_add(o, "disabled", json_object_new_boolean(disabled));
		json_object_object_add(o, "rate_limit", NULL);
		json_object_object_add(o, "created_at", catalog_now());
		json_object_object_add(o, "updated_at", catalog_now());
		/* the key in the body is Dodo's; the header works as on the other routes */
		catalog_store(db, resp, "webhook", id, key != NULL ? key : req->idempotency_key, o,
		    secret);
	}
	json_object_put(root);
}

/* GET /dodo/webhooks[?limit=N&iterator=SEQ]: {data, iterator, done}, oldest first. */
void
catalog_webhook_list(const struct request *req, struct response *resp)
{
	sqlite3		*db;
	sqlite3_stmt	*st;
	json_object	*out, *data;
	char		 v[24], *end, next[24] = "";
	long		 limit = 10, after = 0, n = 0;
	int64_t		 last = 0;

	if ((db = catalog_enter(req, resp)) == NULL)
		return;
	if (url_query_get(req->query, "limit", v, sizeof(v)) == 0) {
		limit = strtol(v, &end, 10);
		if (*end != '\0' || limit < 1)
			limit = 10;
		if (limit > CATALOG_WEBHOOK_PAGE)
			limit = CATALOG_WEBHOOK_PAGE;
	}
	if (url_query_get(req->query, "iterator", v, sizeof(v)) == 0) {
		after = strtol(v, &end, 10);
		if (*end != '\0' || after < 0) {
			dodo_api_error(resp, 422, "INVALID_REQUEST_BODY", "bad iterator");
			return;
		}
	}
	st = state_prepare(db, "SELECT json, seq FROM catalog WHERE kind = 'webhook' AND seq > ?1"
	    " ORDER BY seq LIMIT ?2");
	if (st == NULL) {
		dodo_api_error(resp, 500, "INTERNAL_SERVER_ERROR", "database error");
		return;
	}
	sqlite3_bind_int64(st, 1, after);
	sqlite3_bind_int64(st, 2, limit + 1);	/* one more: is there a next page? */
	data = json_object_new_array();
	while (sqlite3_step(st) == SQLITE_ROW) {
		if (n++ == limit) {
			snprintf(next, sizeof(next), "%lld", (long long)last);
			break;
		}
		json_object_array_add(data, state_json_object(st, 0));
		last = sqlite3_column_int64(st, 1);
	}
	state_done(st);
	out = json_object_new_object();
	json_object_object_add(out, "data", data);
	json_object_object_add(out, "iterator", next[0] != '\0' ? json_object_new_string(next) :
	    NULL);
	json_object_object_add(out, "done", json_object_new_boolean(next[0] == '\0'));
	response_json(resp, 200, out);
}

/* GET /dodo/webhooks/{id} */
void
catalog_webhook_get(const struct request *req, struct response *resp)
{
	catalog_get(req, resp, "webhook", "Webhook");
}

/* GET /dodo/webhooks/{id}/secret */
void
catalog_webhook_secret(const struct request *req, struct response *resp)
{
	sqlite3		*db;
	sqlite3_stmt	*st;

	if ((db = catalog_enter(req, resp)) == NULL)
		return;
	st = state_query(db, "SELECT secret FROM catalog WHERE kind = 'webhook' AND id = ?1", 1,
	    req->params[0]);
	if (st != NULL && sqlite3_step(st) == SQLITE_ROW)
		state_reply_member(resp, "secret", json_object_new_string(state_text(st, 0)));
	else
		dodo_api_error(resp, 404, "NOT_FOUND", "Webhook %.*s not found", 80, req->params[0]);
	state_done(st);
}

/* Fill e from a row "SELECT id, json, secret"; 1 usable (and wanted for type), 0 not. */
static int
catalog_endpoint_row(sqlite3_stmt *st, const char *type, struct catalog_endpoint *e)
{
	json_object	*o = state_json_object(st, 1), *v, *types;
	int		 ok = 1;
	size_t		 n;

	snprintf(e->id, sizeof(e->id), "%s", state_text(st, 0));
	snprintf(e->url, sizeof(e->url), "%s", json_object_object_get_ex(o, "url", &v) ?
	    json_object_get_string(v) : "");
	if (whsig_key_from_secret(state_text(st, 2), &e->key) == -1 || e->url[0] == '\0')
		ok = 0;
	if (type != NULL && json_object_object_get_ex(o, "disabled", &v) &&
	    json_object_get_boolean(v))
		ok = 0;
	if (ok && type != NULL && json_object_object_get_ex(o, "filter_types", &types) &&
	    json_object_is_type(types, json_type_array) &&
	    (n = json_object_array_length(types)) > 0) {
		ok = 0;
		for (size_t i = 0; i < n; i++)
			if (strcmp(json_object_get_string(json_object_array_get_idx(types, i)),
			    type) == 0)
				ok = 1;
	}
	json_object_put(o);
	return ok;
}

int
catalog_endpoints(sqlite3 *db, const char *type,
    int (*cb)(const struct catalog_endpoint *, void *), void *arg)
{
	struct catalog_endpoint	 e;
	sqlite3_stmt		*st;
	int			 rc;

	if ((st = state_prepare(db, "SELECT id, json, secret FROM catalog WHERE kind = 'webhook'"
	    " ORDER BY seq")) == NULL)
		return -1;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW)
		if (catalog_endpoint_row(st, type, &e) && cb(&e, arg) != 0)
			break;
	state_done(st);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
		log_error("sandbox endpoints: %s", sqlite3_errmsg(db));
		return -1;
	}
	return 0;
}

int
catalog_endpoint_get(sqlite3 *db, const char *id, struct catalog_endpoint *out)
{
	sqlite3_stmt	*st;
	int		 ok = 0;

	st = state_query(db, "SELECT id, json, secret FROM catalog WHERE kind = 'webhook'"
	    " AND id = ?1", 1, id);
	if (st != NULL && sqlite3_step(st) == SQLITE_ROW)
		ok = catalog_endpoint_row(st, NULL, out);
	state_done(st);
	return ok ? 0 : -1;
}

/* ------------------------------------------------------------ meters */

/* Dodo's MeterAggregation types. */
static const char *const catalog_aggregations[] = { "count", "sum", "max", "last" };

/* A Meter object with the common members; aggregation and filter are taken. */
static json_object *
catalog_meter_json(const char *id, const char *name, const char *event_name,
    json_object *aggregation, const char *unit, const char *desc, json_object *filter)
{
	json_object	*o = json_object_new_object();

	json_object_object_add(o, "id", json_object_new_string(id));
	json_object_object_add(o, "business_id", json_object_new_string(SANDBOX_BUSINESS_ID));
	json_object_object_add(o, "name", json_object_new_string(name));
	json_object_object_add(o, "event_name", json_object_new_string(event_name));
	json_object_object_add(o, "aggregation", aggregation);
	json_object_object_add(o, "measurement_unit", json_object_new_string(unit));
	json_object_object_add(o, "description", desc != NULL ? json_object_new_string(desc) :
	    NULL);
	json_object_object_add(o, "filter", filter);
	json_object_object_add(o, "created_at", catalog_now());
	json_object_object_add(o, "updated_at", catalog_now());
	return o;
}

int
catalog_meter_builtin(sqlite3 *db)
{
	json_object	*agg = json_object_new_object(), *o;
	char		 desc[CATALOG_DESC_MAX], now[24];
	int		 rc;

	json_object_object_add(agg, "type", json_object_new_string("sum"));
	json_object_object_add(agg, "key", json_object_new_string("tokens"));
	snprintf(desc, sizeof(desc), "Built into the sandbox: deducts the sum of metadata.tokens "
	    "from %s (%s), one credit per unit", sandbox.entitlement_id, sandbox.entitlement_name);
	o = catalog_meter_json(CATALOG_METER_BUILTIN, sandbox.neuralapi ? "Token usage" : "Usage",
	    sandbox.usage_event_name, agg, sandbox.unit, desc, NULL);
	snprintf(now, sizeof(now), "%lld", (long long)state_now_ms());
	/* USAGE_EVENT_NAME may differ from the last start's: the row follows it */
	rc = state_exec(db, "INSERT INTO catalog (kind, id, json, created_at) VALUES ('meter', ?1,"
	    " ?2, CAST(?3 AS INTEGER)) ON CONFLICT (id) DO UPDATE SET json = excluded.json", 3,
	    CATALOG_METER_BUILTIN, json_object_to_json_string_ext(o, CATALOG_JSON_FLAGS), now);
	json_object_put(o);
	return rc;
}

json_object *
catalog_meter(sqlite3 *db, const char *id)
{
	return catalog_find(db, "meter", id);
}

/* POST /dodo/meters {name, event_name, measurement_unit, aggregation: {type, key?},
 * description?, filter?} */
void
catalog_meter_create(const struct request *req, struct response *resp)
{
	struct mk_err	 err;
	sqlite3		*db;
	json_object	*root, *agg, *out, *filter = NULL;
	const char	*name, *event, *unit, *desc, *type, *key = NULL;
	char		 id[SANDBOX_ID_MAX];

	if ((db = catalog_enter(req, resp)) == NULL)
		return;
	if ((root = request_json(req, &err)) == NULL) {
		dodo_api_error(resp, 422, "INVALID_REQUEST_BODY", "%s", err.msg);
		return;
	}
	if (!json_object_object_get_ex(root, "aggregation", &agg) ||
	    !json_object_is_type(agg, json_type_object))
		agg = NULL;
	type = agg != NULL ? catalog_string(agg, "type", 16) : NULL;
	if ((name = catalog_string(root, "name", CATALOG_NAME_MAX)) == NULL)
		catalog_bad(resp, "%s is required", "name");
	else if ((event = catalog_string(root, "event_name", CATALOG_NAME_MAX)) == NULL)
		catalog_bad(resp, "%s is required", "event_name");
	else if ((unit = catalog_string(root, "measurement_unit", CATALOG_NAME_MAX)) == NULL)
		catalog_bad(resp, "%s is required", "measurement_unit");
	else if (!CATALOG_ONE_OF(type, catalog_aggregations))
		catalog_bad(resp, "%s is required: {type: count, sum, max or last, key}",
		    "aggregation");
	else if (strcmp(type, "count") != 0 &&
	    (key = catalog_string(agg, "key", CATALOG_NAME_MAX)) == NULL)
		catalog_bad(resp, "%s is required when the type is not count", "aggregation.key");
	else if (dodo_api_opt_string(root, "description", CATALOG_DESC_MAX, &desc) == -1)
		catalog_bad(resp, "%s must be a string", "description");
	else if (json_object_object_get_ex(root, "filter", &filter) && filter != NULL &&
	    !json_object_is_type(filter, json_type_object))
		catalog_bad(resp, "%s must be an object {conjunction, clauses}", "filter");
	else {
		out = json_object_new_object();
		json_object_object_add(out, "type", json_object_new_string(type));
		json_object_object_add(out, "key", key != NULL ? json_object_new_string(key) : NULL);
		state_id("mtr_", id, sizeof(id));
		catalog_store(db, resp, "meter", id, req->idempotency_key, catalog_meter_json(id,
		    name, event, out, unit, desc, json_object_get(filter)), NULL);
	}
	json_object_put(root);
}

/* GET /dodo/meters: the built-in meter first, then those made, oldest first. */
void
catalog_meter_list(const struct request *req, struct response *resp)
{
	catalog_list(req, resp, "meter");
}

/* GET /dodo/meters/{id} */
void
catalog_meter_get(const struct request *req, struct response *resp)
{
	catalog_get(req, resp, "meter", "Meter");
}
