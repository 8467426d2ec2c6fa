/* checkout.c: checkout.fcgi — hosted checkout sessions for the plans and top-ups, and the plans on sale. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>

#include "mailkit.h"
#include "clock.h"
#include "store.h"

#define NAME_MAX_BYTES		200	/* a person's name; Dodo stores it as given */
#define PURCHASE_ID_MAX		64	/* sub_... / pay_... */
#define CLAIM_TTL_SEC		(30 * 60)	/* paying on the hosted checkout takes minutes */
#define CHECKOUT_CLAIMS_RETRY_S	"60"	/* Retry-After when CLAIMS_PER_EMAIL are open */
#define PLAN_NAME_MAX_BYTES	64	/* a plan named in a request (settings' are shorter) */
#define PRICE_CACHE_MS		(10 * 60 * 1000)	/* a product's price, reused this long */
#define PRICE_RETRY_MS		(60 * 1000)	/* a failed price lookup, not retried sooner */

static struct settings			 settings;
static const struct mail_provider	*mailer;

/*
 * A new subscriber's claim: a one-time token the page keeps and presents at
 * GET /checkout/return to receive the account's first API key there and
 * then.  The token is made before the checkout session, whose metadata
 * carries its binding (apikey_claim_binding), so it redeems only what that
 * session bought.  Only its hash is stored, with the session and the buyer's
 * email.  On failure the reply simply has no claim: the key then comes by
 * email.
 */
struct checkout_claim {
	char	token[APIKEY_MAX];
	char	hash[APIKEY_HASH_HEX];
	char	binding[APIKEY_HASH_HEX];
};

/* 0 / -1 (no claim then). */
static int
checkout_claim_new(struct checkout_claim *c)
{
	if (apikey_generate(APIKEY_CLAIM_PREFIX, c->token, sizeof c->token) == -1 ||
	    apikey_hash(c->token, c->hash) == -1 ||
	    apikey_claim_binding(c->token, c->binding) == -1) {
		log_warn("[keys] cannot generate a claim token");
		OPENSSL_cleanse(c, sizeof *c);
		return -1;
	}
	return 0;
}

static void
checkout_add_claim(json_object *out, const struct checkout_claim *c, const char *session_id,
    const char *email)
{
	struct mk_err	err;

	if (store_claim_add(&settings, c->hash, session_id, email, time(NULL) + CLAIM_TTL_SEC,
	    &err) == -1) {
		log_warn("[keys] claim for session %s not recorded: %s", session_id, err.msg);
		return;
	}
	json_object_object_add(out, "claim_token", json_object_new_string(c->token));
	json_object_object_add(out, "claim_expires_in", json_object_new_int(CLAIM_TTL_SEC));
}

/* Ask Dodo for a checkout session and answer {checkout_url, session_id[, claim_token]}. */
static void
checkout_start(struct response *resp, const char *product_id, const char *customer_id,
    const char *email, const char *name, const char *return_query)
{
	struct dodo_checkout	 co;
	struct checkout_claim	 claim;
	struct mk_err		 err;
	char			 return_url[DODO_URL_MAX];
	json_object		*out;
	int			 claimed = email != NULL && checkout_claim_new(&claim) == 0;

	if ((size_t)snprintf(return_url, sizeof return_url, "%s/?%s", settings.base_url,
	    return_query) >= sizeof return_url) {
		response_error(resp, 500, "BASE_URL is too long");
		goto out;
	}
	if (dodo_create_checkout(&settings, product_id, customer_id, email, name, return_url,
	    claimed ? claim.binding : NULL, &co, &err) == -1) {
		response_fail(resp, &err);
		goto out;
	}
	out = json_object_new_object();
	json_object_object_add(out, "checkout_url", json_object_new_string(co.checkout_url));
	json_object_object_add(out, "session_id", json_object_new_string(co.session_id));
	if (claimed)
		checkout_add_claim(out, &claim, co.session_id, email);
	response_json(resp, 200, out);
out:
	if (claimed)
		OPENSSL_cleanse(&claim, sizeof claim);
}

/*
 * The unauthenticated routes' limit per client address and route
 * (CHECKOUT_RATE_LIMIT_PER_MINUTE; the web server gives REMOTE_ADDR).
 * 0, or -1 with 429 in resp.
 */
static int
checkout_rate(const struct request *req, const char *route, struct response *resp)
{
	char	bucket[128];

	snprintf(bucket, sizeof bucket, "addr:%s:%s", route, req->remote_addr);
	return auth_rate_limit(&settings, bucket, settings.checkout_rate_limit,
	    "per address", resp);
}

/* The product's name in what a buyer reads. */
static const char *
checkout_product_name(void)
{
	return settings_is_neuralapi(&settings) ? "NeuralAPI" : "MailKit";
}

/*
 * Whether email already has an active subscription to any plan: one plan
 * per buyer, whichever tier (a second would charge a month twice; a change
 * of tier is a plan change, not a second subscription).  0 / -1 with err.
 */
static int
checkout_any_plan_active(const char *email, int *active, struct mk_err *err)
{
	*active = 0;
	for (size_t i = 0; i < settings.nplans && !*active; i++)
		if (dodo_plan_active(&settings, email, settings.plans[i].product_id, active,
		    err) == -1)
			return -1;
	return 0;
}

/* POST /checkout/subscribe {[plan], email, name}: plan absent = the default plan */
static void
checkout_subscribe(const struct request *req, struct response *resp)
{
	static const struct field_spec specs[] = {
		{ "email", FIELD_EMAIL, 1, EMAIL_MAX },
		{ "name", FIELD_HEADER_TEXT, 0, NAME_MAX_BYTES },
		{ "plan", FIELD_HEADER_TEXT, 0, PLAN_NAME_MAX_BYTES },
	};
	struct field_value	 v[3];
	struct mk_err		 err;
	json_object		*root;
	const struct settings_plan *plan;
	long long		 pending;
	int			 active;

	if (checkout_rate(req, "subscribe", resp) == -1)
		return;
	if ((root = request_json(req, &err)) == NULL ||
	    fields_read(root, specs, 3, v, &err) == -1) {
		response_fail(resp, &err);
		json_object_put(root);
		return;
	}
	if ((plan = settings_plan_find(&settings, v[2].str)) == NULL) {
		response_error(resp, 400, "Unknown plan: %s", v[2].str);
		goto out;
	}
	/* each subscribe is a Dodo session and a claim: a few at a time per buyer */
	if (settings.claims_per_email > 0) {
		if ((pending = store_claim_count(&settings, v[0].str, &err)) == -1) {
			response_fail(resp, &err);
			goto out;
		}
		if (pending >= settings.claims_per_email) {
			response_error(resp, 429, "%lld checkouts for this email are still open; "
			    "finish one or retry in %d minutes", pending, CLAIM_TTL_SEC / 60);
			response_header(resp, "Retry-After", CHECKOUT_CLAIMS_RETRY_S);
			goto out;
		}
	}
	if (checkout_any_plan_active(v[0].str, &active, &err) == -1) {
		response_fail(resp, &err);
		goto out;
	}
	if (active) {
		response_error(resp, 409, "this email already has an active %s plan: sign in "
		    "with its API key (emailed when you subscribed) and buy a top-up pack for more "
		    "%s", checkout_product_name(), settings_is_neuralapi(&settings) ? "tokens" :
		    "emails");
		goto out;
	}
	checkout_start(resp, plan->product_id, NULL, v[0].str, v[1].str, "subscribed=1");
out:
	json_object_put(root);
}

/* POST /checkout/topup {[customer_id]}: the customer from auth.h */
static void
checkout_topup(const struct request *req, struct response *resp)
{
	static const struct field_spec specs[] = {
		{ "customer_id", FIELD_CUSTOMER_ID, 0, CUSTOMER_ID_MAX },
	};
	struct field_value	 v[1];
	struct mk_err		 err;
	json_object		*root;
	char			 customer[CUSTOMER_ID_MAX + 1];
	int			 keyed;

	if (auth_before_body(&settings, req, customer, sizeof customer, &keyed, resp) == -1)
		return;
	if ((root = request_json(req, &err)) == NULL ||
	    fields_read(root, specs, 1, v, &err) == -1) {
		response_fail(resp, &err);
		json_object_put(root);
		return;
	}
	if (auth_after_body(&settings, req, v[0].str, keyed, customer, sizeof customer,
	    resp) == 0)
		checkout_start(resp, settings.topup_product_id, customer, NULL, NULL,
		    "topped_up=1");
	json_object_put(root);
}

/*
 * The API key part of a paid checkout's return.  With a valid claim (the
 * browser that started this subscription), the customer's first key is
 * issued and answered (and mailed too); without one, a customer who never
 * had a key gets one by email.  Fills "api_key" (string or null) and
 * "api_key_delivery": "returned", "emailed", "existing" (the customer's key
 * was issued before, by email) or "pending" (it could not be sent yet).
 * -1 with resp filled when the claim cannot be handled now (try again).
 */
static int
checkout_return_key(const struct request *req, const struct dodo_customer *cust,
    const char *binding, json_object *out, struct response *resp)
{
	char		 token[APIKEY_MAX], hash[APIKEY_HASH_HEX], key[APIKEY_MAX];
	char		 want[APIKEY_HASH_HEX];
	const char	*delivery = "existing";
	struct mk_err	 err;
	int		 claimed = 0, rc;

	key[0] = '\0';
	/* the claim token, from the header (kept out of access logs) or the query */
	if (apikey_from_bearer(req->authorization, token, sizeof token) == -1 &&
	    url_query_get(req->query, "claim_token", token, sizeof token) == -1)
		token[0] = '\0';
	if (apikey_well_formed(APIKEY_CLAIM_PREFIX, token) && apikey_hash(token, hash) == 0 &&
	    apikey_claim_binding(token, want) == 0 && !apikey_equal(want, binding)) {
		/* another session's token (or a purchase made without one): the
		 * key goes to the buyer's address below, never to this caller */
		log_warn("[keys] %s: claim token presented for a purchase of another checkout "
		    "session: refused", cust->customer_id);
	} else if (apikey_well_formed(APIKEY_CLAIM_PREFIX, token) &&
	    apikey_hash(token, hash) == 0) {
		if ((claimed = store_claim_take(&settings, hash, cust->email, &err)) == -1)
			goto fail;
		if (!claimed)
			log_info("[keys] %s: claim token not valid (used, expired or another "
			    "buyer's)", cust->customer_id);
	}
	OPENSSL_cleanse(token, sizeof token);
	if (claimed) {
		rc = auth_issue_key(&settings, mailer, cust->customer_id, cust->email, cust->name,
		    "checkout", AUTH_ISSUE_MAIL_TRY, key, sizeof key, &err);
		if (rc == -1) {
			struct mk_err e2;

			if (store_claim_give_back(&settings, hash, &e2) == -1)
				log_warn("[keys] claim not given back: %s", e2.msg);
			goto fail;
		}
		if (rc == STORE_KEY_ISSUED)
			delivery = "returned";
	} else if ((rc = store_key_active(&settings, cust->customer_id, 1, &err)) == -1)
		goto fail;
	else if (rc == 0) {
		rc = auth_issue_key(&settings, mailer, cust->customer_id, cust->email, cust->name,
		    "checkout-email", AUTH_ISSUE_MAIL, key, sizeof key, &err);
		OPENSSL_cleanse(key, sizeof key);
		key[0] = '\0';
		if (rc == -1) {
			log_warn("[keys] %s: no key mailed yet: %s", cust->customer_id, err.msg);
			delivery = "pending";
		} else
			delivery = rc == STORE_KEY_ISSUED ? "emailed" : "existing";
	}
	json_object_object_add(out, "api_key", key[0] != '\0' ? json_object_new_string(key) :
	    NULL);
	json_object_object_add(out, "api_key_delivery", json_object_new_string(delivery));
	OPENSSL_cleanse(key, sizeof key);
	return 0;
fail:
	OPENSSL_cleanse(token, sizeof token);
	response_fail(resp, &err);
	return -1;
}

/*
 * GET /checkout/return?subscription_id=... | ?payment_id=...[&claim_token=...]
 * The hosted checkout sends the buyer back with these ids; the redirect is
 * no proof of payment, so look the purchase up and answer who bought it,
 * and (checkout_return_key) how the account's API key is delivered.  The
 * claim token may come as "Authorization: Bearer mkc_..." instead.
 */
static void
checkout_return(const struct request *req, struct response *resp)
{
	struct dodo_customer	 cust;
	struct mk_err		 err;
	enum dodo_purchase_kind	 kind = DODO_SUBSCRIPTION;
	char			 id[PURCHASE_ID_MAX + 1], status[64];
	char			 binding[APIKEY_HASH_HEX];
	json_object		*out;

	if (checkout_rate(req, "return", resp) == -1)
		return;
	if (url_query_get(req->query, "subscription_id", id, sizeof id) == -1) {
		kind = DODO_PAYMENT;
		if (url_query_get(req->query, "payment_id", id, sizeof id) == -1) {
			response_error(resp, 400, "subscription_id or payment_id is required");
			return;
		}
	}
	if (!valid_customer_id(id)) {
		response_error(resp, 400, "%s is not a valid id",
		    kind == DODO_SUBSCRIPTION ? "subscription_id" : "payment_id");
		return;
	}
	if (dodo_get_purchase(&settings, kind, id, &cust, status, sizeof status, binding,
	    sizeof binding, &err) == -1) {
		response_fail(resp, &err);
		return;
	}
	out = json_object_new_object();
	json_object_object_add(out, "customer_id", json_object_new_string(cust.customer_id));
	json_object_object_add(out, "email", json_object_new_string(cust.email));
	json_object_object_add(out, "status", json_object_new_string(status));
	/* keys only for what was paid for */
	if (strcmp(status, kind == DODO_SUBSCRIPTION ? "active" : "succeeded") == 0 &&
	    checkout_return_key(req, &cust, binding, out, resp) == -1) {
		json_object_put(out);
		return;
	}
	response_json(resp, 200, out);
}

/*
 * Prices for GET /plans, read from each product at Dodo (the catalogue is
 * the one truth about what a buyer pays) and kept PRICE_CACHE_MS per
 * process; a failed lookup is retried after PRICE_RETRY_MS, and meanwhile
 * the plan is listed without its price.  Slot i is plans[i], the last the
 * top-up.
 */
static struct checkout_price {
	long long	 at;		/* clock_ms() of the lookup; 0: never */
	long		 amount;	/* minor units; -1: unknown */
	char		 currency[8];
} prices[SETTINGS_PLANS_MAX + 1];
static pthread_mutex_t prices_lock = PTHREAD_MUTEX_INITIALIZER;

/* A Product's price: price.price, or price.fixed_price for a usage-based one. */
static void
checkout_price_read(json_object *product, struct checkout_price *out)
{
	json_object	*price, *v;

	out->amount = -1;
	out->currency[0] = '\0';
	if (!json_object_object_get_ex(product, "price", &price) ||
	    !json_object_is_type(price, json_type_object))
		return;
	if ((json_object_object_get_ex(price, "price", &v) ||
	    json_object_object_get_ex(price, "fixed_price", &v)) &&
	    json_object_is_type(v, json_type_int) && json_object_get_int64(v) >= 0)
		out->amount = (long)json_object_get_int64(v);
	if (json_object_object_get_ex(price, "currency", &v) &&
	    json_object_is_type(v, json_type_string) && json_object_get_string_len(v) == 3)
		snprintf(out->currency, sizeof out->currency, "%s", json_object_get_string(v));
	if (out->currency[0] == '\0')
		out->amount = -1;
}

/* Add "price" and "currency" of product_id (slot) to o when known. */
static void
checkout_add_price(json_object *o, size_t slot, const char *product_id)
{
	struct checkout_price	 p;
	struct mk_err		 err;
	json_object		*product;
	char			 path[DODO_ID_MAX + 32];
	long long		 now = clock_ms();

	pthread_mutex_lock(&prices_lock);
	p = prices[slot];
	pthread_mutex_unlock(&prices_lock);
	if (p.at == 0 || now - p.at >= (p.amount >= 0 ? PRICE_CACHE_MS : PRICE_RETRY_MS)) {
		p.amount = -1;
		if (url_path(path, sizeof path, "/products/{}", product_id) == 0) {
			if ((product = dodo_get_object(&settings, path, &err)) != NULL) {
				checkout_price_read(product, &p);
				json_object_put(product);
			} else
				log_warn("price of product %s unavailable: %s", product_id,
				    err.msg);
		}
		p.at = now > 0 ? now : 1;
		pthread_mutex_lock(&prices_lock);
		prices[slot] = p;
		pthread_mutex_unlock(&prices_lock);
	}
	if (p.amount >= 0) {
		json_object_object_add(o, "price", json_object_new_int64(p.amount));
		json_object_object_add(o, "currency", json_object_new_string(p.currency));
	}
}

/*
 * GET /plans: what is sold, for the page's plan picker: {product, plans:
 * [{name, credits, overage_limit[, price, currency]}], topup: {credits[,
 * price, currency]}}, prices in minor units.
 */
static void
checkout_plans(const struct request *req, struct response *resp)
{
	json_object	*out = json_object_new_object(), *list = json_object_new_array(), *o;

	(void)req;
	for (size_t i = 0; i < settings.nplans; i++) {
		const struct settings_plan *p = &settings.plans[i];

		o = json_object_new_object();
		json_object_object_add(o, "name", json_object_new_string(p->name));
		json_object_object_add(o, "credits", json_object_new_int64(p->credits));
		json_object_object_add(o, "overage_limit", json_object_new_int64(p->overage_limit));
		checkout_add_price(o, i, p->product_id);
		json_object_array_add(list, o);
	}
	json_object_object_add(out, "product", json_object_new_string(settings.product));
	json_object_object_add(out, "plans", list);
	o = json_object_new_object();
	json_object_object_add(o, "credits", json_object_new_int64(settings.topup_credits));
	checkout_add_price(o, SETTINGS_PLANS_MAX, settings.topup_product_id);
	json_object_object_add(out, "topup", o);
	response_json(resp, 200, out);
}

/* Find the mail provider (keys are mailed) and open the state now. */
static int
checkout_init(const struct settings *s, char *errbuf, size_t errlen)
{
	if ((mailer = mail_provider_find(s->mail_provider)) == NULL) {
		snprintf(errbuf, errlen, "MAIL_PROVIDER names no known provider");
		return -1;
	}
	return store_check(s, errbuf, errlen);
}

static const struct route routes[] = {
	{ "POST", "/checkout/subscribe", checkout_subscribe },
	{ "POST", "/checkout/topup", checkout_topup },
	{ "GET", "/checkout/return", checkout_return },
	{ "GET", "/plans", checkout_plans },
};

int
main(void)
{
	struct app app = {
		.name = "checkout.fcgi",
		.routes = routes,
		.nroutes = sizeof routes / sizeof routes[0],
		.json_only = 1,
		.init = checkout_init,
	};

	return server_main(&app, &settings, SETTINGS_NEED_DODO | SETTINGS_NEED_PRODUCTS |
	    SETTINGS_NEED_MAIL);
}
