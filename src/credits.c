/* credits.c: credits.fcgi — a customer's live balance and recent ledger. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mailkit.h"
#include "store.h"

#define LEDGER_PAGE_DEFAULT	20	/* entries the page lists */
#define LEDGER_PAGE_MAX		100	/* Dodo's page_size maximum */

static struct settings settings;

/*
 * The credits a customer's cycle grants: their plan's, or with no plan
 * (top-up credits only) none.  The low-balance threshold is
 * LOW_BALANCE_PERCENT of the plan's credits, or of one top-up pack.
 */
static void
credits_allowance(const struct settings_plan *plan, long *allowance, long *threshold)
{
	*allowance = plan != NULL ? plan->credits : 0;
	*threshold = (plan != NULL ? plan->credits : settings.topup_credits) *
	    settings.low_balance_percent / 100;
}

/* GET /credits, /credits/me or /credits/{customer_id}: the customer from auth.h */
static void
credits_balance(const struct request *req, struct response *resp)
{
	char			 customer_id[CUSTOMER_ID_MAX + 1];
	struct dodo_balance	 bal;
	struct store_low_balance low;
	struct mk_err		 err;
	const struct settings_plan *plan;
	json_object		*out, *notice = NULL;
	long			 allowance, threshold;
	int			 has_low;

	if (auth_customer(&settings, req, req->nparams > 0 ? req->params[0] : NULL,
	    customer_id, sizeof customer_id, resp) == -1)
		return;
	if (dodo_get_balance(&settings, customer_id, &bal, &err) == -1 ||
	    customer_plan(&settings, customer_id, &plan, &err) == -1) {
		response_fail(resp, &err);
		return;
	}
	credits_allowance(plan, &allowance, &threshold);
	/*
	 * The notice matters only while the balance is under the threshold (a
	 * top-up above it means it is over, whether or not its webhook came
	 * yet), so most reads skip the store.  It is a nicety: the store being
	 * unavailable must not hide the balance.
	 */
	has_low = 0;
	if (strtod(bal.balance, NULL) < (double)threshold &&
	    (has_low = store_low_balance_get(&settings, customer_id, &low, &err)) == -1)
		log_warn("low-balance notice unavailable: %s", err.msg);
	if (has_low == 1) {
		notice = json_object_new_object();
		json_object_object_add(notice, "available_balance",
		    json_object_new_string(low.available));
		json_object_object_add(notice, "threshold", json_object_new_string(low.threshold));
		json_object_object_add(notice, "notified_at",
		    json_object_new_int64((int64_t)low.notified_at));
	}
	out = json_object_new_object();
	json_object_object_add(out, "customer_id", json_object_new_string(customer_id));
	json_object_object_add(out, "balance", json_object_new_string(bal.balance));
	json_object_object_add(out, "overage", json_object_new_string(bal.overage));
	json_object_object_add(out, "last_transaction_at", bal.last_transaction_at[0] ?
	    json_object_new_string(bal.last_transaction_at) : NULL);
	json_object_object_add(out, "plan", plan != NULL ? json_object_new_string(plan->name) :
	    NULL);
	json_object_object_add(out, "allowance", json_object_new_int64(allowance));
	if (plan != NULL && plan->overage_limit > 0)
		json_object_object_add(out, "overage_limit",
		    json_object_new_int64(plan->overage_limit));
	json_object_object_add(out, "low_balance_threshold", json_object_new_int64(threshold));
	json_object_object_add(out, "low_balance", notice);
	response_json(resp, 200, out);
}

/* GET /credits/{customer_id}/ledger[?limit=N] (also /credits/me/ledger) */
static void
credits_ledger(const struct request *req, struct response *resp)
{
	char		 customer_id[CUSTOMER_ID_MAX + 1];
	struct mk_err	 err;
	json_object	*page;
	char		 limit[8];
	int		 n = LEDGER_PAGE_DEFAULT;

	if (auth_customer(&settings, req, req->params[0], customer_id, sizeof customer_id,
	    resp) == -1)
		return;
	if (url_query_get(req->query, "limit", limit, sizeof limit) == 0) {
		char *end;
		long v = strtol(limit, &end, 10);

		if (*end != '\0' || v < 1 || v > LEDGER_PAGE_MAX) {
			response_error(resp, 400, "limit must be 1-%d", LEDGER_PAGE_MAX);
			return;
		}
		n = (int)v;
	}
	if ((page = dodo_list_ledger(&settings, customer_id, n, 0, &err)) == NULL) {
		response_fail(resp, &err);
		return;
	}
	response_json(resp, 200, page);
}

/* Open the state now so a bad MAILKIT_DB stops the program at start, not mid-request. */
static int
credits_init(const struct settings *s, char *errbuf, size_t errlen)
{
	return store_check(s, errbuf, errlen);
}

static const struct route routes[] = {
	{ "GET", "/credits", credits_balance },
	{ "GET", "/credits/{}", credits_balance },
	{ "GET", "/credits/{}/ledger", credits_ledger },
};

int
main(void)
{
	struct app app = {
		.name = "credits.fcgi",
		.routes = routes,
		.nroutes = sizeof routes / sizeof routes[0],
		.init = credits_init,
	};

	return server_main(&app, &settings, SETTINGS_NEED_DODO | SETTINGS_NEED_CREDITS);
}
