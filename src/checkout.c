/* checkout.c: checkout.fcgi — hosted checkout sessions for the plan and top-ups. */
#include <stdio.h>
#include <string.h>

#include "mailkit.h"

#define NAME_MAX_BYTES		200	/* a person's name; Dodo stores it as given */
#define PURCHASE_ID_MAX		64	/* sub_... / pay_... */

static struct settings settings;

/* Ask Dodo for a checkout session and answer {checkout_url, session_id}. */
static void
checkout_start(struct response *resp, const char *product_id, const char *customer_id,
    const char *email, const char *name, const char *return_query)
{
	struct dodo_checkout	 co;
	struct mk_err		 err;
	char			 return_url[DODO_URL_MAX];
	json_object		*out;

	if ((size_t)snprintf(return_url, sizeof return_url, "%s/?%s", settings.base_url,
	    return_query) >= sizeof return_url) {
		response_error(resp, 500, "BASE_URL is too long");
		return;
	}
	if (dodo_create_checkout(&settings, product_id, customer_id, email, name, return_url,
	    &co, &err) == -1) {
		response_fail(resp, &err);
		return;
	}
	out = json_object_new_object();
	json_object_object_add(out, "checkout_url", json_object_new_string(co.checkout_url));
	json_object_object_add(out, "session_id", json_object_new_string(co.session_id));
	response_json(resp, 200, out);
}

/* POST /checkout/subscribe {email, name} */
static void
checkout_subscribe(const struct request *req, struct response *resp)
{
	static const struct field_spec specs[] = {
		{ "email", FIELD_EMAIL, 1, EMAIL_MAX },
		{ "name", FIELD_HEADER_TEXT, 0, NAME_MAX_BYTES },
	};
	struct field_value	 v[2];
	struct mk_err		 err;
	json_object		*root;

	if ((root = request_json(req, &err)) == NULL ||
	    fields_read(root, specs, 2, v, &err) == -1) {
		response_fail(resp, &err);
		json_object_put(root);
		return;
	}
	checkout_start(resp, settings.plan_product_id, NULL, v[0].str, v[1].str,
	    "subscribed=1");
	json_object_put(root);
}

/* POST /checkout/topup {customer_id} */
static void
checkout_topup(const struct request *req, struct response *resp)
{
	static const struct field_spec specs[] = {
		{ "customer_id", FIELD_CUSTOMER_ID, 1, CUSTOMER_ID_MAX },
	};
	struct field_value	 v[1];
	struct mk_err		 err;
	json_object		*root;

	if ((root = request_json(req, &err)) == NULL ||
	    fields_read(root, specs, 1, v, &err) == -1) {
		response_fail(resp, &err);
		json_object_put(root);
		return;
	}
	checkout_start(resp, settings.topup_product_id, v[0].str, NULL, NULL, "topped_up=1");
	json_object_put(root);
}

/*
 * GET /checkout/return?subscription_id=... | ?payment_id=...
 * The hosted checkout sends the buyer back with these ids; the redirect is
 * no proof of payment, so look the purchase up and answer who bought it.
 */
static void
checkout_return(const struct request *req, struct response *resp)
{
	struct dodo_customer	 cust;
	struct mk_err		 err;
	enum dodo_purchase_kind	 kind = DODO_SUBSCRIPTION;
	char			 id[PURCHASE_ID_MAX + 1], status[64];
	json_object		*out;

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
	if (dodo_get_purchase(&settings, kind, id, &cust, status, sizeof status, &err) == -1) {
		response_fail(resp, &err);
		return;
	}
	out = json_object_new_object();
	json_object_object_add(out, "customer_id", json_object_new_string(cust.customer_id));
	json_object_object_add(out, "email", json_object_new_string(cust.email));
	json_object_object_add(out, "status", json_object_new_string(status));
	response_json(resp, 200, out);
}

static const struct route routes[] = {
	{ "POST", "/checkout/subscribe", checkout_subscribe },
	{ "POST", "/checkout/topup", checkout_topup },
	{ "GET", "/checkout/return", checkout_return },
};

int
main(void)
{
	struct app app = {
		.name = "checkout.fcgi",
		.routes = routes,
		.nroutes = sizeof routes / sizeof routes[0],
		.json_only = 1,
	};

	return server_main(&app, &settings, SETTINGS_NEED_DODO | SETTINGS_NEED_PRODUCTS);
}
