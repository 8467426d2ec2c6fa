/* mail_sendgrid.c: the SendGrid mail provider (POST /v3/mail/send; no idempotency key). */
#include <stdio.h>
#include <string.h>

#include <json-c/json.h>

#include "err.h"
#include "log.h"
#include "mail.h"
#include "mime.h"
#include "settings.h"
#include "upstream.h"
#include "valid.h"

#define SENDGRID_LOG_TEXT_MAX	200	/* SendGrid's error message is cut here in logs */
#define SENDGRID_NAME_MAX	4096	/* MAIL_FROM's display name */

#define SENDGRID_JSON_FLAGS	(JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)

static int
sendgrid_check(const struct settings *s, char *errbuf, size_t errlen)
{
	return mail_check_settings("sendgrid", errbuf, errlen, "SENDGRID_API_KEY",
	    s->sendgrid_api_key, "MAIL_FROM", s->mail_from, "SENDGRID_BASE_URL",
	    s->sendgrid_base_url, (const char *)NULL);
}

/* [{email}, ...] of n addresses. */
static json_object *
sendgrid_addresses(const char *const *list, size_t n)
{
	json_object	*a = json_object_new_array();

	for (size_t i = 0; i < n; i++) {
		json_object *e = json_object_new_object();

		json_object_object_add(e, "email", json_object_new_string(list[i]));
		json_object_array_add(a, e);
	}
	return a;
}

/* {email[, name]} of a From value, "Name <addr>" or "addr". */
static json_object *
sendgrid_from(const char *from)
{
	json_object	*o = json_object_new_object();
	const char	*lt = strrchr(from, '<');
	char		 addr[EMAIL_MAX + 1], name[SENDGRID_NAME_MAX];
	size_t		 n;

	if (mime_address(from, addr, sizeof addr) == -1) {
		json_object_put(o);
		return NULL;
	}
	json_object_object_add(o, "email", json_object_new_string(addr));
	if (lt != NULL) {
		n = (size_t)(lt - from);
		while (n > 0 && from[n - 1] == ' ')
			n--;
		if (n >= 2 && from[0] == '"' && from[n - 1] == '"') {
			from++;
			n -= 2;
		}
		if (n > 0 && n < sizeof name) {
			memcpy(name, from, n);
			name[n] = '\0';
			json_object_object_add(o, "name", json_object_new_string(name));
		}
	}
	return o;
}

/*
 * The v3 mail/send body: one personalization holding every recipient,
 * text/plain before text/html (SendGrid requires that order), tags as
 * custom_args, and the send's idempotency key as custom_args.mailkit_send
 * so the email can be found in SendGrid's activity.
 */
static json_object *
sendgrid_body(const struct mail_message *msg, const char *from)
{
	json_object	*body = json_object_new_object(), *p = json_object_new_object();
	json_object	*personalizations = json_object_new_array(), *content, *args, *fromj;

	if ((fromj = sendgrid_from(from)) == NULL) {
		json_object_put(body);
		json_object_put(p);
		json_object_put(personalizations);
		return NULL;
	}
	json_object_object_add(p, "to", sendgrid_addresses(msg->to, msg->nto));
	if (msg->ncc > 0)
		json_object_object_add(p, "cc", sendgrid_addresses(msg->cc, msg->ncc));
	if (msg->nbcc > 0)
		json_object_object_add(p, "bcc", sendgrid_addresses(msg->bcc, msg->nbcc));
	json_object_array_add(personalizations, p);
	json_object_object_add(body, "personalizations", personalizations);
	json_object_object_add(body, "from", fromj);
	if (msg->nreply_to > 0)
		json_object_object_add(body, "reply_to_list",
		    sendgrid_addresses(msg->reply_to, msg->nreply_to));
	json_object_object_add(body, "subject", json_object_new_string(msg->subject));
	content = json_object_new_array();
	for (int i = 0; i < 2; i++) {
		const char *value = i == 0 ? msg->text : msg->html;
		json_object *c;

		if (value == NULL)
			continue;
		c = json_object_new_object();
		json_object_object_add(c, "type", json_object_new_string(i == 0 ? "text/plain" :
		    "text/html"));
		json_object_object_add(c, "value", json_object_new_string(value));
		json_object_array_add(content, c);
	}
	json_object_object_add(body, "content", content);
	args = json_object_new_object();
	for (size_t i = 0; i < msg->ntags; i++)
		json_object_object_add(args, msg->tags[i].name,
		    json_object_new_string(msg->tags[i].value));
	json_object_object_add(args, "mailkit_send", json_object_new_string(msg->idempotency_key));
	json_object_object_add(body, "custom_args", args);
	return body;
}

/*
 * Map a SendGrid refusal ({"errors": [{message, field, help}]}).  400 and
 * 413 refuse the email itself; 401/403 are our key or sender; 429 is "not
 * now" (nothing was sent: a retry is safe); a 5xx may have sent it, and
 * without an idempotency key that stays unknown.
 */
static int
sendgrid_fail_status(const struct upstream_response *r, struct mk_err *err)
{
	json_object	*errors, *first, *m;
	const char	*message = NULL;
	long		 st = r->status;

	if (r->json != NULL && json_object_object_get_ex(r->json, "errors", &errors) &&
	    (first = json_object_array_get_idx(errors, 0)) != NULL &&
	    json_object_object_get_ex(first, "message", &m))
		message = json_object_get_string(m);
	log_warn("sendgrid: send: HTTP %ld: %.*s", st, SENDGRID_LOG_TEXT_MAX,
	    message != NULL ? message : "-");
	if (st == 429)
		return mail_fail(err, 503, 0, "mail provider busy, try again");
	if (st >= 500 || st < 400)
		return mail_fail(err, 502, 1, "mail provider unavailable");
	if (st == 400 || st == 413)
		return mail_fail(err, 400, 0,
		    "recipient or content rejected by the mail provider");
	if (st == 401 || st == 403)
		log_error("sendgrid: send refused with %ld: check SENDGRID_API_KEY and that "
		    "MAIL_FROM is a verified sender", st);
	return mail_fail(err, 502, 0, "mail provider refused the message");
}

static int
sendgrid_send(const struct settings *s, const struct mail_message *msg,
    struct mail_result *out, struct mk_err *err)
{
	struct upstream_response	 resp = { .json = NULL };
	struct upstream_request		 req;
	json_object			*body = NULL;
	const char			*text, *from;
	int				 result = -1;

	memset(out, 0, sizeof *out);
	from = msg->from != NULL ? msg->from : s->mail_from;
	if (!mail_message_ok(msg, from) || strlen(msg->idempotency_key) >= sizeof out->id) {
		mk_fail(err, 500, "internal error");
		goto out;
	}
	if ((body = sendgrid_body(msg, from)) == NULL ||
	    (text = json_object_to_json_string_ext(body, SENDGRID_JSON_FLAGS)) == NULL) {
		mk_fail(err, 500, "message cannot be built");
		goto out;
	}
	memset(&req, 0, sizeof req);
	req.method = "POST";
	req.base_url = s->sendgrid_base_url;
	req.path = "/v3/mail/send";
	req.bearer = s->sendgrid_api_key;
	req.body = text;
	req.retry_safe = 0;	/* no idempotency key: a repeated POST may send twice */
	if (upstream_call(&req, &resp, err) == -1) {
		mail_fail_transport(err);
		goto out;
	}
	if (resp.status != 202) {	/* its one success; an empty 200 is not SendGrid */
		sendgrid_fail_status(&resp, err);
		goto out;
	}
	/*
	 * 202 has no body; SendGrid's X-Message-Id header is not read by
	 * upstream.h, so the provider id is the send's own key, which the email
	 * carries as custom_args.mailkit_send.
	 */
	snprintf(out->id, sizeof out->id, "%s", msg->idempotency_key);
	result = 0;
out:
	if (body != NULL)
		json_object_put(body);
	upstream_response_free(&resp);
	return result;
}

const struct mail_provider mail_sendgrid = {
	.name = "sendgrid",
	.idempotent = 0,	/* no idempotency key: a lost answer is never resent */
	.check = sendgrid_check,
	.send = sendgrid_send,
};
