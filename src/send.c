/* send.c: send.fcgi — POST /send, one email for one credit. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "billing.h"
#include "mailkit.h"

#define SUBJECT_MAX	998	/* RFC 5322 line length limit */
#define CONTENT_MAX	(512 * 1024)	/* html or text: a transactional email, not a newsletter */

static struct settings			 settings;
static const struct mail_provider	*provider;

/* POST /send {[customer_id,] to, subject, html[, text][, cc, bcc, reply_to, tags]} -> 200 {id, status "sent", provider_id}
 * or 202 {id, status "queued" or "unconfirmed"}; the customer from auth.h */
static void
send_email(const struct request *req, struct response *resp)
{
	/* customer_id is optional: with an API key the key names the customer */
	static const struct field_spec specs[] = {
		{ "customer_id", FIELD_CUSTOMER_ID, 0, CUSTOMER_ID_MAX },
		{ "to", FIELD_EMAIL_LIST, 1, EMAIL_MAX },
		{ "subject", FIELD_HEADER_TEXT, 1, SUBJECT_MAX },
		{ "html", FIELD_TEXT, 0, CONTENT_MAX },
		{ "text", FIELD_TEXT, 0, CONTENT_MAX },
		{ "cc", FIELD_EMAIL_LIST, 0, EMAIL_MAX },
		{ "bcc", FIELD_EMAIL_LIST, 0, EMAIL_MAX },
		{ "reply_to", FIELD_EMAIL_LIST, 0, EMAIL_MAX },
		{ "tags", FIELD_TAGS, 0, 0 },
	};
	enum { F_CUSTOMER, F_TO, F_SUBJECT, F_HTML, F_TEXT, F_CC, F_BCC, F_REPLY_TO, F_TAGS,
		F_COUNT };
	struct field_value	 v[F_COUNT];
	struct mail_message	 msg;
	struct billing_result	 result;
	struct mk_err		 err;
	json_object		*root = NULL, *out;
	const char		*client_key = NULL;
	char			 customer[CUSTOMER_ID_MAX + 1];
	int			 keyed;

	if (auth_before_body(&settings, req, customer, sizeof customer, &keyed, resp) == -1)
		return;
	if (req->idempotency_key[0] != '\0') {
		if (!valid_idempotency_key(req->idempotency_key)) {
			response_error(resp, 400, "Idempotency-Key must be 1-%d printable characters",
			    IDEMPOTENCY_KEY_MAX);
			return;
		}
		client_key = req->idempotency_key;
	}
	if ((root = request_json(req, &err)) == NULL ||
	    fields_read(root, specs, F_COUNT, v, &err) == -1) {
		response_fail(resp, &err);
		goto out;
	}
	if (auth_after_body(&settings, req, v[F_CUSTOMER].str, keyed, customer,
	    sizeof customer, resp) == -1)
		goto out;
	if (v[F_HTML].str == NULL && v[F_TEXT].str == NULL) {
		response_error(resp, 400, "html or text is required");
		goto out;
	}
	if (v[F_TO].nlist + v[F_CC].nlist + v[F_BCC].nlist > MAIL_MAX_RECIPIENTS) {
		response_error(resp, 400, "to, cc and bcc list more than %d addresses together",
		    MAIL_MAX_RECIPIENTS);
		goto out;
	}
	memset(&msg, 0, sizeof msg);
	msg.from = settings.mail_from;
	memcpy(msg.to, v[F_TO].list, v[F_TO].nlist * sizeof msg.to[0]);
	msg.nto = v[F_TO].nlist;
	memcpy(msg.cc, v[F_CC].list, v[F_CC].nlist * sizeof msg.cc[0]);
	msg.ncc = v[F_CC].nlist;
	memcpy(msg.bcc, v[F_BCC].list, v[F_BCC].nlist * sizeof msg.bcc[0]);
	msg.nbcc = v[F_BCC].nlist;
	memcpy(msg.reply_to, v[F_REPLY_TO].list, v[F_REPLY_TO].nlist * sizeof msg.reply_to[0]);
	msg.nreply_to = v[F_REPLY_TO].nlist;
	for (size_t i = 0; i < v[F_TAGS].ntags; i++) {
		msg.tags[i].name = v[F_TAGS].tag_name[i];
		msg.tags[i].value = v[F_TAGS].tag_value[i];
	}
	msg.ntags = v[F_TAGS].ntags;
	msg.subject = v[F_SUBJECT].str;
	msg.html = v[F_HTML].str;
	msg.text = v[F_TEXT].str;
	if (billing_send(&settings, provider, customer, client_key, &msg, &result,
	    &err) == -1) {
		response_fail(resp, &err);
		goto out;
	}
	/* 200: the provider has it; 202: MailKit holds it and delivers it (billing.h) */
	out = json_object_new_object();
	json_object_object_add(out, "id", json_object_new_string(result.id));
	json_object_object_add(out, "status", json_object_new_string(result.queued ? "queued" :
	    result.unconfirmed ? "unconfirmed" : "sent"));
	if (result.unconfirmed)
		json_object_object_add(out, "message",
		    json_object_new_string(BILLING_UNCONFIRMED_MSG));
	else if (!result.queued)
		json_object_object_add(out, "provider_id",
		    json_object_new_string(result.provider_id));
	response_json(resp, result.queued || result.unconfirmed ? 202 : 200, out);
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
