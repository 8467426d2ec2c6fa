/* emails.c: emails.fcgi — what became of a customer's sends: GET /emails/{id}, GET /emails; and POST /emails/batch. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "billing.h"
#include "mailkit.h"
#include "store.h"

#define EMAILS_PAGE_DEFAULT	20
#define EMAILS_PAGE_MAX		100	/* Resend's list maximum */

static struct settings			 settings;
static const struct mail_provider	*provider;

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

/*
 * POST /emails/batch [{[customer_id,] to, subject, html[, text][, cc, bcc,
 * reply_to, tags]}, ...] (1..SENDREQ_BATCH_MAX, Resend's batch) -> {data:
 * [{id, status, ...}, ...]}, one per message in order, each as POST /send
 * answers it or {id, status "failed", error}; 202 when any is queued or
 * unconfirmed, else 200.  The whole batch's credits are reserved first, all
 * or nothing (billing_send_batch): a refusal (400 naming the message's
 * index, 402, 409, 5xx) means nothing was sent and nothing charged.
 */
static void
emails_batch(const struct request *req, struct response *resp)
{
	struct mail_message	*msgs = NULL;
	struct billing_result	*results = NULL;
	struct mk_err		*errs = NULL, err;
	json_object		*root = NULL, *data, *out;
	const char		*client_key, *claimed;
	char			 customer[CUSTOMER_ID_MAX + 1];
	long			 n;
	int			 keyed, status = 200;

	if (auth_before_body(&settings, req, customer, sizeof customer, &keyed, resp) == -1)
		return;
	if ((msgs = calloc(SENDREQ_BATCH_MAX, sizeof *msgs)) == NULL ||
	    (results = calloc(SENDREQ_BATCH_MAX, sizeof *results)) == NULL ||
	    (errs = calloc(SENDREQ_BATCH_MAX, sizeof *errs)) == NULL) {
		response_error(resp, 503, "out of memory");
		goto out;
	}
	/* every message is checked before anything is charged */
	if (sendreq_key(req, &client_key, &err) == -1 ||
	    (n = sendreq_batch(req, settings.mail_from, msgs, &claimed, &root, &err)) == -1) {
		response_fail(resp, &err);
		goto out;
	}
	if (auth_after_body(&settings, req, claimed, keyed, customer, sizeof customer,
	    resp) == -1)
		goto out;
	if (billing_send_batch(&settings, provider, customer, client_key, msgs, (size_t)n,
	    results, errs, &err) == -1) {
		response_fail(resp, &err);
		goto out;
	}
	data = json_object_new_array();
	for (long i = 0; i < n; i++) {
		json_object *m;

		if (errs[i].status != 0) {
			/* refused by the provider for good: its credits were refunded */
			m = json_object_new_object();
			json_object_object_add(m, "id", json_object_new_string(results[i].id));
			json_object_object_add(m, "status", json_object_new_string("failed"));
			json_object_object_add(m, "error", json_object_new_string(errs[i].msg));
		} else {
			m = billing_result_json(&results[i]);
			if (billing_result_status(&results[i]) == 202)
				status = 202;
		}
		json_object_array_add(data, m);
	}
	out = json_object_new_object();
	json_object_object_add(out, "data", data);
	response_json(resp, status, out);
out:
	json_object_put(root);
	free(msgs);
	free(results);
	free(errs);
}

static int
emails_init(const struct settings *s, char *errbuf, size_t errlen)
{
	/* POST /emails/batch sends; send.fcgi's delivery threads retry what it queues */
	if ((provider = mail_provider_find(s->mail_provider)) == NULL) {
		snprintf(errbuf, errlen, "MAIL_PROVIDER names no known provider");
		return -1;
	}
	return store_check(s, errbuf, errlen);
}

static const struct route routes[] = {
	{ "GET", "/emails", emails_list },
	{ "GET", "/emails/{}", emails_get },
	{ "POST", "/emails/batch", emails_batch },
};

int
main(void)
{
	struct app app = {
		.name = "emails.fcgi",
		.routes = routes,
		.nroutes = sizeof routes / sizeof routes[0],
		.json_only = 1,
		.init = emails_init,
	};

	return server_main(&app, &settings, SETTINGS_NEED_DODO | SETTINGS_NEED_CREDITS |
	    SETTINGS_NEED_MAIL);
}
