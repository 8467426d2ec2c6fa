/* setup.c: `mailkit-admin setup`: find or create the Dodo catalog MailKit needs, and write its settings. */
#include <sys/stat.h>

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <json-c/json.h>

#include "buf.h"
#include "digest.h"
#include "log.h"
#include "settings.h"
#include "url.h"
#include "whsig.h"
#include "setup.h"

#define SETUP_PAGES_MAX		50	/* list pages read per kind (x100 objects) */
#define SETUP_TEXT_MAX		64	/* names, units: Dodo shows them on invoices */
#define SETUP_PATH_MAX		512	/* /products/{id}, /webhooks/{id}/secret */
#define SETUP_KEY_HEX		40	/* hex digits of the body hash in an Idempotency-Key */
#define SETUP_ENV_MAX		(1024 * 1024)	/* 1M: a dotenv file larger than this is refused */
#define SETUP_LINES_MAX		4096	/* lines of that file */
#define SETUP_JSON_FLAGS	(JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)

/*
 * The events webhook.c handles (its table): the endpoint gets these only.
 * Every credit.* event (NeuralAPI's meter deducts, runs into overage and
 * resets it), and the subscription changes that move a customer's plan.
 */
static const char *const setup_events[] = {
	"credit.added", "credit.deducted", "credit.expired", "credit.rolled_over",
	"credit.rollover_forfeited", "credit.overage_charged", "credit.overage_reset",
	"credit.balance_low", "subscription.active", "subscription.renewed",
	"subscription.plan_changed", "subscription.on_hold", "subscription.cancelled",
	"subscription.expired", "subscription.failed", "payment.succeeded",
};

/* NeuralAPI's plans as its tutorial prices them (cents a month); others need a price. */
static const struct { const char *name; long price; } setup_tier_prices[] = {
	{ "standard", 1900 }, { "starter", 2900 }, { "pro", 9900 },
};
#define SETUP_NEURAL_TOPUP_PRICE	1900	/* the token top-up pack, $19 */
#define SETUP_NEURAL_TOPUP_EXPIRY	365	/* days: prepaid tokens outlast the cycle */
#define SETUP_NEURAL_OVERAGE_PRICE	"0.000005"	/* per token past zero: $0.005 per 1K */

int
setup_plan_defaults(struct setup_plan *p, const struct settings *s, struct mk_err *err)
{
	const char	*base = s->base_url != NULL ? s->base_url : "";
	size_t		 n = strlen(base);
	int		 len;

	memset(p, 0, sizeof *p);
	p->entitlement_name = "Email Credits";
	p->unit = "email";
	p->precision = 0;
	p->expiry_days = 30;
	p->currency = "USD";
	p->plan_price = 1900;
	p->plan_credits = s->plan_credits;
	p->topup_price = 900;
	p->topup_credits = 5000;
	p->low_balance_percent = s->low_balance_percent;
	if (settings_is_neuralapi(s)) {
		p->entitlement_name = "API Tokens";
		p->unit = "token";
		p->topup_price = SETUP_NEURAL_TOPUP_PRICE;
		p->topup_credits = s->topup_credits;
		p->topup_expiry_days = SETUP_NEURAL_TOPUP_EXPIRY;
		p->metered = 1;
		p->usage_event = s->usage_event_name;
		p->overage_price = SETUP_NEURAL_OVERAGE_PRICE;
	}
	for (size_t i = 0; i < s->nplans && i < SETTINGS_PLANS_MAX; i++) {
		struct setup_tier		*t = &p->tiers[p->ntiers++];
		const struct settings_plan	*sp = &s->plans[i];
		size_t				 k;

		snprintf(t->name, sizeof t->name, "%s", sp->name);
		/* MailKit's one default plan keeps the tutorial's unprefixed names */
		if (!settings_is_neuralapi(s) && (s->plan_list == NULL || *s->plan_list == '\0'))
			snprintf(t->key, sizeof t->key, "PLAN_PRODUCT_ID");
		else {
			for (k = 0; sp->name[k] != '\0' && k + 1 < sizeof t->key; k++)
				t->key[k] = sp->name[k] == '-' ? '_' : (char)toupper(
				    (unsigned char)sp->name[k]);
			snprintf(t->key + k, sizeof t->key - k, "_PLAN_PRODUCT_ID");
		}
		t->credits = sp->credits;
		t->overage_limit = sp->overage_limit;
		for (k = 0; k < sizeof setup_tier_prices / sizeof setup_tier_prices[0]; k++)
			if (strcmp(setup_tier_prices[k].name, sp->name) == 0)
				t->price = setup_tier_prices[k].price;
	}
	if (p->ntiers > 0) {
		p->plan_price = p->tiers[0].price;
		p->plan_credits = p->tiers[0].credits;
	}
	while (n > 0 && base[n - 1] == '/')
		n--;
	len = snprintf(p->webhook_url, sizeof p->webhook_url, "%.*s%s", (int)n, base,
	    SETUP_WEBHOOK_PATH);
	if (len < 0 || (size_t)len >= sizeof p->webhook_url)
		return mk_fail(err, 400, "BASE_URL is too long");
	return 0;
}

/* 1 when t is 1..SETUP_TEXT_MAX printable ASCII characters. */
static int
setup_text_ok(const char *t)
{
	size_t	i;

	if (t == NULL || t[0] == '\0' || strlen(t) > SETUP_TEXT_MAX)
		return 0;
	for (i = 0; t[i] != '\0'; i++)
		if (t[i] < 0x20 || t[i] > 0x7e)
			return 0;
	return 1;
}

int
setup_plan_check(const struct setup_plan *p, struct mk_err *err)
{
	const char	*c = p->currency;

	if (!setup_text_ok(p->entitlement_name))
		return mk_fail(err, 400, "--name must be 1-%d printable characters", SETUP_TEXT_MAX);
	if (!setup_text_ok(p->unit))
		return mk_fail(err, 400, "--unit must be 1-%d printable characters", SETUP_TEXT_MAX);
	if (p->precision < 0 || p->precision > 3)
		return mk_fail(err, 400, "--precision must be 0..3 (Dodo's custom units)");
	if (p->expiry_days < 0 || p->expiry_days > 3650)
		return mk_fail(err, 400, "--expiry-days must be 0..3650 (0: never)");
	if (p->plan_price < 1 || p->topup_price < 1)
		return mk_fail(err, 400, "prices must be at least 1 cent");
	if (p->plan_credits < 1 || p->topup_credits < 1 || p->plan_credits > 1000000000L ||
	    p->topup_credits > 1000000000L)
		return mk_fail(err, 400, "credit amounts must be 1..1000000000");
	for (size_t i = 1; i < p->ntiers; i++)
		if (p->tiers[i].price < 1 || p->tiers[i].credits < 1 ||
		    p->tiers[i].credits > 1000000000L)
			return mk_fail(err, 400, "plan %s needs a price (--plan-price %s=CENTS) "
			    "and 1..1000000000 credits", p->tiers[i].name, p->tiers[i].name);
	if (p->topup_expiry_days < 0 || p->topup_expiry_days > 3650)
		return mk_fail(err, 400, "the top-up's expiry must be 0..3650 days");
	if (p->low_balance_percent < 0 || p->low_balance_percent > 100)
		return mk_fail(err, 400, "--low-balance-percent must be 0..100");
	if (c == NULL || strlen(c) != 3 || c[0] < 'A' || c[0] > 'Z' || c[1] < 'A' ||
	    c[1] > 'Z' || c[2] < 'A' || c[2] > 'Z')
		return mk_fail(err, 400, "--currency must be an ISO 4217 code such as USD");
	if (strncmp(p->webhook_url, "https://", 8) != 0 && strncmp(p->webhook_url, "http://", 7) != 0)
		return mk_fail(err, 400, "BASE_URL must be an http(s) URL");
	return 0;
}

/* The string member key of obj, or "" when absent or not a string. */
static const char *
setup_str(json_object *obj, const char *key)
{
	json_object	*v;

	if (obj == NULL || !json_object_object_get_ex(obj, key, &v) ||
	    !json_object_is_type(v, json_type_string))
		return "";
	return json_object_get_string(v);
}

/* Copy the id member `key` of obj into o->id.  0, or -1 with err when there is none. */
static int
setup_take_id(json_object *obj, const char *key, const char *what, struct setup_object *o,
    struct mk_err *err)
{
	const char	*id = setup_str(obj, key);
	int		 n;

	n = snprintf(o->id, sizeof o->id, "%s", id);
	if (id[0] == '\0' || n < 0 || (size_t)n >= sizeof o->id) {
		o->id[0] = '\0';
		return mk_fail(err, 502, "payments service answered the %s without a usable %s",
		    what, key);
	}
	return 0;
}

/*
 * POST body to path with an Idempotency-Key made from the path and the
 * body (the same request twice gets the same key), and take the new
 * object's id member.  o->created is set on success.
 */
static int
setup_create(const struct settings *s, const char *path, json_object *body, const char *idkey,
    const char *what, struct setup_object *o, struct mk_err *err)
{
	struct digest_part	 parts[2];
	json_object		*made;
	const char		*text;
	char			 hex[DIGEST_SHA256_HEX], key[64];
	int			 rc;

	if ((text = json_object_to_json_string_ext(body, SETUP_JSON_FLAGS)) == NULL)
		return mk_fail(err, 500, "out of memory");
	parts[0] = (struct digest_part){ path, strlen(path) + 1 };
	parts[1] = (struct digest_part){ text, strlen(text) };
	if (digest_sha256_hex(parts, 2, hex) == -1)
		return mk_fail(err, 500, "cannot hash the request");
	snprintf(key, sizeof key, "mailkit-setup-%.*s", SETUP_KEY_HEX, hex);
	if (json_object_is_type(body, json_type_object) && strcmp(path, "/webhooks") == 0)
		json_object_object_add(body, "idempotency_key", json_object_new_string(key));
	if ((made = dodo_create(s, path, body, key, err)) == NULL)
		return -1;
	rc = setup_take_id(made, idkey, what, o, err);
	json_object_put(made);
	if (rc == 0)
		o->created = 1;
	return rc;
}

/* {SETUP_METADATA_KEY: kind} */
static json_object *
setup_metadata(const char *kind)
{
	json_object	*m = json_object_new_object();

	if (m != NULL)
		json_object_object_add(m, SETUP_METADATA_KEY, json_object_new_string(kind));
	return m;
}

/*
 * Walk the pages of /what and call match on each item until it returns 1
 * (found: 1), the list ends (0) or a call fails (-1).
 */
static int
setup_scan(const struct settings *s, const char *what,
    int (*match)(json_object *item, const void *arg), const void *arg, json_object **found,
    struct mk_err *err)
{
	json_object	*page, *items;

	*found = NULL;
	for (int p = 0; p < SETUP_PAGES_MAX; p++) {
		size_t	n;

		if ((page = dodo_list_catalog(s, what, p, err)) == NULL)
			return -1;
		json_object_object_get_ex(page, "items", &items);
		n = json_object_array_length(items);
		for (size_t i = 0; i < n; i++) {
			json_object *item = json_object_array_get_idx(items, i);

			if (match(item, arg)) {
				*found = json_object_get(item);
				json_object_put(page);
				return 1;
			}
		}
		json_object_put(page);
		if (n == 0)
			break;
	}
	return 0;
}

static int
setup_is_entitlement(json_object *item, const void *arg)
{
	const struct setup_plan	*p = arg;

	return strcmp(setup_str(item, "name"), p->entitlement_name) == 0 &&
	    strcmp(setup_str(item, "unit"), p->unit) == 0;
}

static int
setup_entitlement(const struct settings *s, const struct setup_plan *p, struct setup_object *o,
    struct mk_err *err)
{
	json_object	*found, *body, *v;
	char		 desc[128];
	int		 rc;

	if ((rc = setup_scan(s, "credit-entitlements", setup_is_entitlement, p, &found, err)) == -1)
		return -1;
	if (rc == 1) {
		rc = setup_take_id(found, "id", "credit entitlement", o, err);
		if (rc == 0 && ((json_object_object_get_ex(found, "precision", &v) &&
		    json_object_get_int64(v) != p->precision) ||
		    (json_object_object_get_ex(found, "expires_after_days", &v) &&
		    json_object_get_int64(v) != p->expiry_days)))
			snprintf(o->note, sizeof o->note, "its precision or expiry differs from "
			    "the flags; change it in the dashboard, or use another --name");
		json_object_put(found);
		return rc;
	}
	if ((body = json_object_new_object()) == NULL)
		return mk_fail(err, 500, "out of memory");
	snprintf(desc, sizeof desc, "One %s sent through MailKit", p->unit);
	json_object_object_add(body, "name", json_object_new_string(p->entitlement_name));
	json_object_object_add(body, "unit", json_object_new_string(p->unit));
	json_object_object_add(body, "precision", json_object_new_int64(p->precision));
	json_object_object_add(body, "description", json_object_new_string(desc));
	json_object_object_add(body, "expires_after_days",
	    p->expiry_days > 0 ? json_object_new_int64(p->expiry_days) : NULL);
	json_object_object_add(body, "overage_enabled", json_object_new_boolean(0));
	json_object_object_add(body, "rollover_enabled", json_object_new_boolean(0));
	rc = setup_create(s, "/credit-entitlements", body, "id", "credit entitlement", o, err);
	json_object_put(body);
	return rc;
}

static int
setup_is_product(json_object *item, const void *arg)
{
	json_object	*meta;

	return json_object_object_get_ex(item, "metadata", &meta) &&
	    strcmp(setup_str(meta, SETUP_METADATA_KEY), (const char *)arg) == 0;
}

/* A found product must grant the entitlement setup found: else say so in o->note. */
static int
setup_product_check(const struct settings *s, const char *entitlement_id, int plan,
    struct setup_object *o, struct mk_err *err)
{
	json_object	*product, *cart, *v;
	char		 path[SETUP_PATH_MAX];
	size_t		 n;
	int		 attached = 0;

	if (url_path(path, sizeof path, "/products/{}", o->id) == -1)
		return mk_fail(err, 502, "payments service sent an unusable product id");
	if ((product = dodo_get_object(s, path, err)) == NULL)
		return -1;
	if (json_object_object_get_ex(product, "credit_entitlements", &cart) &&
	    json_object_is_type(cart, json_type_array)) {
		n = json_object_array_length(cart);
		for (size_t i = 0; i < n; i++)
			if (strcmp(setup_str(json_object_array_get_idx(cart, i),
			    "credit_entitlement_id"), entitlement_id) == 0)
				attached = 1;
	}
	if (!attached)
		snprintf(o->note, sizeof o->note, "it grants no %s credits: archive it in the "
		    "dashboard and run setup again", entitlement_id);
	else if (json_object_object_get_ex(product, "is_recurring", &v) &&
	    json_object_get_boolean(v) != plan)
		snprintf(o->note, sizeof o->note, "its price is of the wrong kind (one-time vs "
		    "subscription)");
	json_object_put(product);
	return 0;
}

static int
setup_is_meter(json_object *item, const void *arg)
{
	return strcmp(setup_str(item, "event_name"), (const char *)arg) == 0;
}

/*
 * The meter of p->usage_event (the tutorial's "Token Usage Meter": the sum
 * of each event's metadata "tokens"), which the plans bill in credits.
 */
static int
setup_meter(const struct settings *s, const struct setup_plan *p, struct setup_object *o,
    struct mk_err *err)
{
	json_object	*found, *body, *agg;
	int		 rc;

	if ((rc = setup_scan(s, "meters", setup_is_meter, p->usage_event, &found, err)) == -1)
		return -1;
	if (rc == 1) {
		rc = setup_take_id(found, "id", "meter", o, err);
		json_object_put(found);
		return rc;
	}
	if ((body = json_object_new_object()) == NULL || (agg = json_object_new_object()) == NULL)
		return mk_fail(err, 500, "out of memory");	/* a process that ends now */
	json_object_object_add(agg, "type", json_object_new_string("sum"));
	json_object_object_add(agg, "key", json_object_new_string("tokens"));
	json_object_object_add(body, "name", json_object_new_string("Token Usage Meter"));
	json_object_object_add(body, "event_name", json_object_new_string(p->usage_event));
	json_object_object_add(body, "aggregation", agg);
	json_object_object_add(body, "measurement_unit", json_object_new_string("tokens"));
	json_object_object_add(body, "description", json_object_new_string(
	    "Tokens used per request, as NeuralAPI reports them"));
	rc = setup_create(s, "/meters", body, "id", "meter", o, err);
	json_object_put(body);
	return rc;
}

/*
 * The price of a product: one-time (the top-up), monthly (a plan), or for
 * a metered plan usage-based, its fixed monthly fee plus the meter, which
 * bills in credits of entitlement_id, one credit per unit.
 */
static json_object *
setup_price(const struct setup_plan *p, const struct setup_tier *tier, const char *meter_id,
    const char *entitlement_id)
{
	json_object	*price = json_object_new_object(), *meters, *m;

	json_object_object_add(price, "currency", json_object_new_string(p->currency));
	json_object_object_add(price, "discount", json_object_new_int(0));
	json_object_object_add(price, "purchasing_power_parity", json_object_new_boolean(0));
	if (tier == NULL) {
		json_object_object_add(price, "type", json_object_new_string("one_time_price"));
		json_object_object_add(price, "price", json_object_new_int64(p->topup_price));
		return price;
	}
	if (meter_id != NULL) {
		json_object_object_add(price, "type", json_object_new_string("usage_based_price"));
		json_object_object_add(price, "fixed_price", json_object_new_int64(tier->price));
		meters = json_object_new_array();
		m = json_object_new_object();
		json_object_object_add(m, "meter_id", json_object_new_string(meter_id));
		json_object_object_add(m, "credit_entitlement_id",
		    json_object_new_string(entitlement_id));
		json_object_object_add(m, "meter_units_per_credit", json_object_new_string("1"));
		json_object_object_add(m, "free_threshold", json_object_new_int(0));
		json_object_array_add(meters, m);
		json_object_object_add(price, "meters", meters);
	} else {
		json_object_object_add(price, "type", json_object_new_string("recurring_price"));
		json_object_object_add(price, "price", json_object_new_int64(tier->price));
	}
	json_object_object_add(price, "payment_frequency_count", json_object_new_int(1));
	json_object_object_add(price, "payment_frequency_interval", json_object_new_string("Month"));
	/* how long the subscription runs before it ends by itself */
	json_object_object_add(price, "subscription_period_count", json_object_new_int(10));
	json_object_object_add(price, "subscription_period_interval", json_object_new_string("Year"));
	return price;
}

/*
 * The credits a product grants: a plan's per cycle (with its overage
 * rule: none, or up to overage_limit billed at the next invoice), the
 * top-up's once.
 */
static json_object *
setup_grant(const struct setup_plan *p, const struct setup_tier *tier,
    const char *entitlement_id)
{
	json_object	*grant = json_object_new_object();
	char		 amount[32];
	long		 expiry = p->expiry_days;

	if (tier == NULL && p->topup_expiry_days > 0)
		expiry = p->topup_expiry_days;
	snprintf(amount, sizeof amount, "%ld", tier != NULL ? tier->credits : p->topup_credits);
	json_object_object_add(grant, "credit_entitlement_id",
	    json_object_new_string(entitlement_id));
	json_object_object_add(grant, "credits_amount", json_object_new_string(amount));
	json_object_object_add(grant, "expires_after_days",
	    expiry > 0 ? json_object_new_int64(expiry) : NULL);
	json_object_object_add(grant, "low_balance_threshold_percent",
	    json_object_new_int64(p->low_balance_percent));
	json_object_object_add(grant, "overage_enabled",
	    json_object_new_boolean(tier != NULL && tier->overage_limit > 0));
	if (tier != NULL && tier->overage_limit > 0) {
		snprintf(amount, sizeof amount, "%ld", tier->overage_limit);
		json_object_object_add(grant, "overage_limit", json_object_new_string(amount));
		json_object_object_add(grant, "overage_behavior",
		    json_object_new_string("invoice_at_billing"));
		if (p->overage_price != NULL)
			json_object_object_add(grant, "price_per_unit",
			    json_object_new_string(p->overage_price));
	}
	return grant;
}

/*
 * The product of tier (NULL: the top-up) granting credits of
 * entitlement_id, metered by meter_id when not NULL.  Its metadata kind:
 * "topup", "plan" for MailKit's one default plan (PLAN_PRODUCT_ID), else
 * "plan:NAME".
 */
static int
setup_product(const struct settings *s, const struct setup_plan *p,
    const struct setup_tier *tier, const char *meter_id, const char *entitlement_id,
    struct setup_object *o, struct mk_err *err)
{
	json_object	*found, *body, *cart;
	const char	*product = p->metered ? "NeuralAPI" : "MailKit";
	char		 kind[SETTINGS_PLAN_NAME_MAX + 8], name[SETTINGS_PLAN_NAME_MAX + 32];
	char		 desc[160];
	int		 rc;

	if (tier == NULL)
		snprintf(kind, sizeof kind, "topup");
	else if (strcmp(tier->key, "PLAN_PRODUCT_ID") == 0)
		snprintf(kind, sizeof kind, "plan");
	else
		snprintf(kind, sizeof kind, "plan:%s", tier->name);
	if ((rc = setup_scan(s, "products", setup_is_product, kind, &found, err)) == -1)
		return -1;
	if (rc == 1) {
		rc = setup_take_id(found, "product_id", "product", o, err);
		json_object_put(found);
		if (rc == 0)
			rc = setup_product_check(s, entitlement_id, tier != NULL, o, err);
		return rc;
	}
	if (tier == NULL) {
		snprintf(name, sizeof name, "%s Top-up", product);
		snprintf(desc, sizeof desc, "%ld more %s credits, once", p->topup_credits, p->unit);
	} else {
		if (strcmp(kind, "plan") == 0)
			snprintf(name, sizeof name, "%s Plan", product);
		else
			snprintf(name, sizeof name, "%s %c%s", product,
			    toupper((unsigned char)tier->name[0]), tier->name + 1);
		snprintf(desc, sizeof desc, "%ld %s credits every month%s", tier->credits, p->unit,
		    tier->overage_limit > 0 ? ", with overage" : "");
	}
	if ((body = json_object_new_object()) == NULL || (cart = json_object_new_array()) == NULL)
		return mk_fail(err, 500, "out of memory");	/* a process that ends now */
	json_object_object_add(body, "name", json_object_new_string(name));
	json_object_object_add(body, "description", json_object_new_string(desc));
	json_object_object_add(body, "tax_category", json_object_new_string("saas"));
	json_object_object_add(body, "price", setup_price(p, tier, meter_id, entitlement_id));
	json_object_array_add(cart, setup_grant(p, tier, entitlement_id));
	json_object_object_add(body, "credit_entitlements", cart);
	json_object_object_add(body, "metadata", setup_metadata(kind));
	rc = setup_create(s, "/products", body, "product_id", "product", o, err);
	json_object_put(body);
	return rc;
}

/* The endpoint at url among the pages of GET /webhooks: 1 found (o->id), 0 not, -1 error. */
static int
setup_find_webhook(const struct settings *s, const char *url, struct setup_object *o,
    struct mk_err *err)
{
	json_object	*page, *data, *v;
	char		 iterator[DODO_ID_MAX * 2] = "";
	int		 found = 0, rc = 0;

	for (int p = 0; p < SETUP_PAGES_MAX && !found; p++) {
		size_t	n;

		if ((page = dodo_list_webhooks(s, iterator, err)) == NULL)
			return -1;
		json_object_object_get_ex(page, "data", &data);
		n = json_object_array_length(data);
		for (size_t i = 0; i < n && !found; i++) {
			json_object *item = json_object_array_get_idx(data, i);

			if (strcmp(setup_str(item, "url"), url) != 0)
				continue;
			found = 1;
			rc = setup_take_id(item, "id", "webhook endpoint", o, err);
			if (json_object_object_get_ex(item, "disabled", &v) &&
			    json_object_get_boolean(v))
				snprintf(o->note, sizeof o->note, "it is disabled: enable it in "
				    "the dashboard");
		}
		snprintf(iterator, sizeof iterator, "%s", setup_str(page, "iterator"));
		json_object_put(page);
		if (n == 0 || iterator[0] == '\0')
			break;
	}
	return rc == -1 ? -1 : found;
}

static int
setup_webhook(const struct settings *s, const struct setup_plan *p, struct setup_object *o,
    char *secret, size_t secretlen, struct mk_err *err)
{
	struct whsig_key	 key;
	json_object		*body, *types, *got;
	char			 path[SETUP_PATH_MAX];
	int			 rc, n;

	if ((rc = setup_find_webhook(s, p->webhook_url, o, err)) == -1)
		return -1;
	if (rc == 0) {
		if ((body = json_object_new_object()) == NULL ||
		    (types = json_object_new_array()) == NULL)
			return mk_fail(err, 500, "out of memory");
		for (size_t i = 0; i < sizeof setup_events / sizeof setup_events[0]; i++)
			json_object_array_add(types, json_object_new_string(setup_events[i]));
		json_object_object_add(body, "url", json_object_new_string(p->webhook_url));
		json_object_object_add(body, "description",
		    json_object_new_string("MailKit: credits, balances and purchases"));
		json_object_object_add(body, "filter_types", types);
		json_object_object_add(body, "metadata", setup_metadata("webhook"));
		rc = setup_create(s, "/webhooks", body, "id", "webhook endpoint", o, err);
		json_object_put(body);
		if (rc == -1)
			return -1;
	}
	if (url_path(path, sizeof path, "/webhooks/{}/secret", o->id) == -1)
		return mk_fail(err, 502, "payments service sent an unusable webhook id");
	if ((got = dodo_get_object(s, path, err)) == NULL)
		return -1;
	n = snprintf(secret, secretlen, "%s", setup_str(got, "secret"));
	json_object_put(got);
	if (n <= 0 || (size_t)n >= secretlen || whsig_key_from_secret(secret, &key) == -1) {
		secret[0] = '\0';
		return mk_fail(err, 502, "payments service sent no usable signing secret for "
		    "webhook endpoint %s", o->id);
	}
	return 0;
}

int
setup_run(const struct settings *s, const struct setup_plan *p, struct setup_result *r,
    struct mk_err *err)
{
	memset(r, 0, sizeof *r);
	if (setup_plan_check(p, err) == -1)
		return -1;
	if (setup_entitlement(s, p, &r->entitlement, err) == -1)
		return -1;
	if (p->metered && setup_meter(s, p, &r->meter, err) == -1)
		return -1;
	for (size_t i = 0; i < p->ntiers; i++) {
		struct setup_tier t = p->tiers[i];

		if (i == 0) {	/* the flags' */
			t.price = p->plan_price;
			t.credits = p->plan_credits;
		}
		snprintf(r->plan_keys[i], sizeof r->plan_keys[i], "%s", t.key);
		if (setup_product(s, p, &t, p->metered ? r->meter.id : NULL, r->entitlement.id,
		    &r->plans[i], err) == -1)
			return -1;
		r->nplans = i + 1;
	}
	if (setup_product(s, p, NULL, NULL, r->entitlement.id, &r->topup, err) == -1)
		return -1;
	return setup_webhook(s, p, &r->webhook, r->webhook_secret, sizeof r->webhook_secret, err);
}

/*
 * The settings setup writes, in the order printed: the entitlement, each
 * plan's product, the top-up, the webhook key.  setup_key(r, i) is the
 * name of the i-th, setup_value(r, i) its value.
 */
#define SETUP_NKEYS(r)	(3 + (r)->nplans)

static const char *
setup_key(const struct setup_result *r, size_t i)
{
	if (i == 0)
		return "CREDIT_ENTITLEMENT_ID";
	if (i <= r->nplans)
		return r->plan_keys[i - 1];
	return i == r->nplans + 1 ? "TOPUP_PRODUCT_ID" : "DODO_WEBHOOK_KEY";
}

static const char *
setup_value(const struct setup_result *r, size_t i)
{
	if (i == 0)
		return r->entitlement.id;
	if (i <= r->nplans)
		return r->plans[i - 1].id;
	return i == r->nplans + 1 ? r->topup.id : r->webhook_secret;
}

int
setup_format(const struct setup_result *r, char *out, size_t outlen)
{
	size_t	used = 0;

	for (size_t i = 0; i < SETUP_NKEYS(r); i++) {
		int n = snprintf(out + used, outlen - used, "%s=%s\n", setup_key(r, i),
		    setup_value(r, i));

		if (n < 0 || (size_t)n >= outlen - used)
			return -1;
		used += (size_t)n;
	}
	return 0;
}

/* Which of r's settings line sets (SETUP_NKEYS(r) for the webhook alias), or -1. */
static int
setup_line_key(const struct setup_result *r, const char *line, size_t len)
{
	size_t	i = 0, k;

	while (i < len && (line[i] == ' ' || line[i] == '\t'))
		i++;
	if (len - i > 7 && strncmp(line + i, "export ", 7) == 0)
		i += 7;
	for (k = i; k < len && line[k] != '=' && line[k] != ' '; k++)
		;
	if (k >= len || line[k] != '=')
		return -1;
	for (size_t j = 0; j < SETUP_NKEYS(r); j++)
		if (strlen(setup_key(r, j)) == k - i && strncmp(line + i, setup_key(r, j),
		    k - i) == 0)
			return (int)j;
	if (k - i == strlen("DODO_PAYMENTS_WEBHOOK_KEY") &&
	    strncmp(line + i, "DODO_PAYMENTS_WEBHOOK_KEY", k - i) == 0)
		return (int)SETUP_NKEYS(r);
	return -1;
}

/* Read all of path into b (a missing file is empty).  0 / -1. */
static int
setup_read_file(const char *path, struct buf *b, struct mk_err *err)
{
	char	chunk[8192];
	size_t	n;
	FILE	*f;

	if ((f = fopen(path, "r")) == NULL) {
		if (errno == ENOENT)
			return 0;
		return mk_fail(err, 500, "cannot read %s: %s", path, strerror(errno));
	}
	while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
		if (buf_append(b, chunk, n) == -1) {
			fclose(f);
			return mk_fail(err, 500, "%s is larger than %d bytes", path, SETUP_ENV_MAX);
		}
	if (ferror(f)) {
		fclose(f);
		return mk_fail(err, 500, "cannot read %s", path);
	}
	fclose(f);
	return 0;
}

int
setup_write_env(const char *path, const struct setup_result *r, struct mk_err *err)
{
	struct buf	 in, out;
	int		 done[SETTINGS_PLANS_MAX + 4] = { 0 }, fd = -1, result = -1, lines = 0;
	char		*tmp = NULL;
	const char	*p, *end;

	buf_init(&in, SETUP_ENV_MAX);
	buf_init(&out, SETUP_ENV_MAX + 4096);
	if (setup_read_file(path, &in, err) == -1)
		goto out;
	/* the kept lines, with ours in place of the ones they replace */
	for (p = in.data != NULL ? in.data : "", end = p + in.len; p < end; lines++) {
		const char	*nl = memchr(p, '\n', (size_t)(end - p));
		size_t		 len = nl != NULL ? (size_t)(nl - p) : (size_t)(end - p);
		int		 k = setup_line_key(r, p, len);

		if (lines >= SETUP_LINES_MAX) {
			mk_fail(err, 500, "%s has more than %d lines", path, SETUP_LINES_MAX);
			goto out;
		}
		if (k == -1) {
			if (buf_append(&out, p, len) == -1 || buf_puts(&out, "\n") == -1)
				goto toolong;
		} else if (k < (int)SETUP_NKEYS(r) && !done[k]) {
			if (buf_printf(&out, "%s=%s\n", setup_key(r, (size_t)k),
			    setup_value(r, (size_t)k)) == -1)
				goto toolong;
			done[k] = 1;
		}	/* else: a repeat, or the alias DODO_WEBHOOK_KEY replaces: dropped */
		p += len + (nl != NULL);
	}
	for (size_t k = 0; k < SETUP_NKEYS(r); k++)
		if (!done[k] && buf_printf(&out, "%s=%s\n", setup_key(r, k), setup_value(r, k)) == -1)
			goto toolong;
	/* beside the file, so that rename() replaces it in one step */
	if ((tmp = malloc(strlen(path) + sizeof ".setup-XXXXXX")) == NULL) {
		mk_fail(err, 500, "out of memory");
		goto out;
	}
	snprintf(tmp, strlen(path) + sizeof ".setup-XXXXXX", "%s.setup-XXXXXX", path);
	if ((fd = mkstemp(tmp)) == -1) {
		mk_fail(err, 500, "cannot create a file beside %s: %s", path, strerror(errno));
		goto out;
	}
	if (fchmod(fd, 0600) == -1 || write(fd, out.data, out.len) != (ssize_t)out.len ||
	    fsync(fd) == -1) {
		mk_fail(err, 500, "cannot write %s: %s", tmp, strerror(errno));
		goto out;
	}
	if (close(fd) == -1) {
		fd = -1;
		mk_fail(err, 500, "cannot write %s: %s", tmp, strerror(errno));
		goto out;
	}
	fd = -1;
	if (rename(tmp, path) == -1) {
		mk_fail(err, 500, "cannot replace %s: %s", path, strerror(errno));
		goto out;
	}
	free(tmp);
	tmp = NULL;
	result = 0;
	goto out;
toolong:
	mk_fail(err, 500, "%s would be larger than %d bytes", path, SETUP_ENV_MAX);
out:
	if (fd != -1)
		close(fd);
	if (tmp != NULL) {
		unlink(tmp);
		free(tmp);
	}
	buf_free(&in);
	if (out.data != NULL)
		memset(out.data, 0, out.len);	/* it held the secret */
	buf_free(&out);
	return result;
}
