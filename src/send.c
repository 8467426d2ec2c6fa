/* send.c: send.fcgi — POST /send, one email for one credit. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "billing.h"
#include "mailkit.h"

static struct settings			 settings;
static const struct mail_provider	*provider;

/* POST /send {[customer_id,] to, subject, html[, text][, cc, bcc, reply_to, tags]} -> 200 {id, status "sent", provider_id}
 * or 202 {id, status "queued" or "unconfirmed"}; the customer from auth.h */
static void
send_email(const struct request *req, struct response *resp)
{
	struct mail_message	 msg;
	struct billing_result	 result;
	struct mk_err		 err;
	json_object		*root = NULL;
	const char		*client_key, *claimed;
	char			 customer[CUSTOMER_ID_MAX + 1];
	int			 keyed;

	if (auth_before_body(&settings, req, customer, sizeof customer, &keyed, resp) == -1)
		return;
	/* customer_id is optional: with an API key the key names the customer */
	if (sendreq_key(req, &client_key, &err) == -1 ||
	    (root = request_json(req, &err)) == NULL ||
	    sendreq_read(root, settings.mail_from, &msg, &claimed, &err) == -1) {
		response_fail(resp, &err);
		goto out;
	}
	if (auth_after_body(&settings, req, claimed, keyed, customer, sizeof customer,
	    resp) == -1)
		goto out;
	if (billing_send(&settings, provider, customer, client_key, &msg, &result,
	    &err) == -1) {
		response_fail(resp, &err);
		goto out;
	}
	response_json(resp, billing_result_status(&result), billing_result_json(&result));
out:
	json_object_put(root);
}

static int
send_init(const struct settings *s, char *err, size_t errlen)
{
	if ((provider = mail_provider_find(s->mail_provider)) == NULL) {
		snprintf(err, errlen, "MAIL_PROVIDER names no known provider");
		return -1;
	}
	/* accepted sends go out from here too, not only at reconciliation */
	if (getenv("MAILKIT_CHECK_ONLY") == NULL && billing_deliver_start(s, provider) == -1) {
		snprintf(err, errlen, "cannot start the delivery threads");
		return -1;
	}
	return 0;
}

static const struct route routes[] = {
	{ "POST", "/send", send_email },
};

int
main(void)
{
	struct app app = {
		.name = "send.fcgi",
		.routes = routes,
		.nroutes = sizeof routes / sizeof routes[0],
		.json_only = 1,
		.init = send_init,
	};
	int rc;

	rc = server_main(&app, &settings, SETTINGS_NEED_DODO | SETTINGS_NEED_CREDITS |
	    SETTINGS_NEED_MAIL);
	billing_deliver_stop();
	return rc;
}
