/* emails.c: emails.fcgi — what became of a customer's sends: GET /emails/{id}, GET /emails. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "billing.h"
#include "mailkit.h"
#include "store.h"

#define EMAILS_PAGE_DEFAULT	20
#define EMAILS_PAGE_MAX		100	/* Resend's list maximum */

static struct settings settings;

/*
 * The customer asking: the API key's (auth.h), or with MAILKIT_AUTH=customer_id
 * the ?customer_id= of the query.  0 / -1 with the answer in resp.
 */
static int
emails_customer(const struct request *req, char *customer_id, size_t len,
    struct response *resp)
{
	char	claimed[CUSTOMER_ID_MAX + 1];
	int	has_claim;

	has_claim = url_query_get(req->query, "customer_id", claimed, sizeof claimed) == 0;
	return auth_customer(&settings, req, has_claim ? claimed : NULL, customer_id, len, resp);
}

/* GET /emails/{id}: one of the customer's own emails (404 for anyone else's). */
static void
emails_get(const struct request *req, struct response *resp)
{
	struct store_send	 row;
	struct mk_err		 err;
	char			 customer_id[CUSTOMER_ID_MAX + 1], prefix[STORE_SEND_KEY_MAX];
	int			 r;

	if (emails_customer(req, customer_id, sizeof customer_id, resp) == -1)
		return;
	if (billing_id_prefix(req->params[0], prefix, sizeof prefix) == -1) {
		response_error(resp, 404, "no such email");
		return;
	}
	memset(&row, 0, sizeof row);
	if ((r = store_send_get(&settings, customer_id, prefix, &row, &err)) == -1) {
		response_fail(resp, &err);
		return;
	}
	if (r == 0)
		response_error(resp, 404, "no such email");
	else
		response_json(resp, 200, billing_email_json(&row));
	store_send_free(&row);
}

static int
emails_add(const struct store_send *row, void *arg)
{
	json_object_array_add(arg, billing_email_json(row));
	return 0;
}

/* GET /emails[?limit=N][&after=id]: newest first, {object "list", has_more, data}. */
static void
emails_list(const struct request *req, struct response *resp)
{
	struct mk_err	 err;
	json_object	*data, *out;
	char		 customer_id[CUSTOMER_ID_MAX + 1], value[64], after[STORE_SEND_KEY_MAX];
	long		 limit = EMAILS_PAGE_DEFAULT;
	int		 n, has_after;

	if (emails_customer(req, customer_id, sizeof customer_id, resp) == -1)
		return;
	if (url_query_get(req->query, "limit", value, sizeof value) == 0) {
		char *end;

		limit = strtol(value, &end, 10);
		if (*end != '\0' || limit < 1 || limit > EMAILS_PAGE_MAX) {
			response_error(resp, 400, "limit must be 1-%d", EMAILS_PAGE_MAX);
			return;
		}
	}
	has_after = url_query_get(req->query, "after", value, sizeof value) == 0;
	if (has_after && billing_id_prefix(value, after, sizeof after) == -1) {
		response_error(resp, 400, "after must be an email id");
		return;
	}
	data = json_object_new_array();
	/* one more than asked tells whether there is a next page */
	n = store_send_page(&settings, customer_id, has_after ? after : NULL, (int)limit + 1,
	    emails_add, data, &err);
	if (n == -1) {
		json_object_put(data);
		response_fail(resp, &err);
		return;
	}
	if (n > limit)
		json_object_array_del_idx(data, (size_t)limit, 1);
	out = json_object_new_object();
	json_object_object_add(out, "object", json_object_new_string("list"));
	json_object_object_add(out, "has_more", json_object_new_boolean(n > limit));
	json_object_object_add(out, "data", data);
	response_json(resp, 200, out);
}

static int
emails_init(const struct settings *s, char *errbuf, size_t errlen)
{
	return store_check(s, errbuf, errlen);
}

static const struct route routes[] = {
	{ "GET", "/emails", emails_list },
	{ "GET", "/emails/{}", emails_get },
};

int
main(void)
{
	struct app app = {
		.name = "emails.fcgi",
		.routes = routes,
		.nroutes = sizeof routes / sizeof routes[0],
		.init = emails_init,
	};

	return server_main(&app, &settings, 0);
}
