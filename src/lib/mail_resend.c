/* mail_resend.c: the Resend mail provider (POST /emails with an Idempotency-Key). */
#include <stdio.h>
#include <string.h>

#include <json-c/json.h>

#include "err.h"
#include "log.h"
#include "mail.h"
#include "settings.h"
#include "upstream.h"

#define RESEND_LOG_TEXT_MAX	200	/* Resend's error message is cut here in logs */
#define RESEND_NAME_MAX		64	/* error names are short snake_case */

#define RESEND_JSON_FLAGS	(JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)

static int
resend_check(const struct settings *s, char *errbuf, size_t errlen)
{
	return mail_check_settings("resend", errbuf, errlen, "RESEND_API_KEY",
	    s->resend_api_key, "MAIL_FROM", s->mail_from, "RESEND_BASE_URL", s->resend_base_url,
	    (const char *)NULL);
}

/* A string member of obj, or NULL. */
static const char *
resend_json_str(json_object *obj, const char *key)
{
	json_object *v;

	if (obj == NULL || !json_object_object_get_ex(obj, key, &v) ||
	    !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

/*
 * Map a Resend refusal (see mail.h and api-facts D.5).  Only a 4xx that
 * certainly stopped the send gives maybe_done = 0 (429: 503, for now);
 * 409-concurrent and 5xx (after retries, some of which may have timed out)
 * leave it unknown.
 */
static int
resend_fail_status(const struct upstream_response *r, struct mk_err *err)
{
	const char	*name = resend_json_str(r->json, "name");
	const char	*message = resend_json_str(r->json, "message");
	long		 st = r->status;

	log_warn("resend: send: HTTP %ld %.*s: %.*s", st, RESEND_NAME_MAX,
	    name != NULL ? name : "-", RESEND_LOG_TEXT_MAX, message != NULL ? message : "-");
	if (name == NULL)
		name = "";
	if (st == 409) {
		if (strcmp(name, "invalid_idempotent_request") == 0)
			return mail_fail(err, 502, 0, "mail provider refused the message");
		/* concurrent_idempotent_requests: the first attempt is still in flight */
		return mail_fail(err, 502, 1, "mail provider busy, try again");
	}
	if (st == 429)	/* not processed: not sent, but not refused for good either */
		return mail_fail(err, 503, 0, "mail provider busy, try again");
	if (st == 408 || st >= 500 || st < 400)
		return mail_fail(err, 502, 1, "mail provider unavailable");
	if (st == 422 || (st == 400 && strcmp(name, "validation_error") == 0))
		return mail_fail(err, 400, 0, "recipient or content rejected by the mail provider");
	if (st == 401 || st == 403)
		log_error("resend: send refused with %ld (%s): check RESEND_API_KEY and that "
		    "MAIL_FROM's domain is verified", st, name);
	return mail_fail(err, 502, 0, "mail provider refused the message");
}

static int
resend_send(const struct settings *s, const struct mail_message *msg,
    struct mail_result *out, struct mk_err *err)
{
	struct upstream_response	 resp = { .json = NULL };
	struct upstream_request		 req;
	json_object			*body = NULL, *to;
	const char			*text, *from, *id;
	size_t				 i;
	int				 n, result = -1;

	memset(out, 0, sizeof *out);
	from = msg->from != NULL ? msg->from : s->mail_from;
	if (!mail_message_ok(msg, from)) {
		mk_fail(err, 500, "internal error");
		goto out;
	}
	if ((body = json_object_new_object()) == NULL || (to = json_object_new_array()) == NULL) {
		mk_fail(err, 500, "out of memory");
		goto out;
	}
	json_object_object_add(body, "from", json_object_new_string(from));
	json_object_object_add(body, "to", to);
	for (i = 0; i < msg->nto; i++)
		json_object_array_add(to, json_object_new_string(msg->to[i]));
	mail_json_extras(body, msg);	/* cc, bcc, reply_to, tags: Resend's own shape */
	json_object_object_add(body, "subject", json_object_new_string(msg->subject));
	if (msg->html != NULL)
		json_object_object_add(body, "html", json_object_new_string(msg->html));
	if (msg->text != NULL)
		json_object_object_add(body, "text", json_object_new_string(msg->text));
	if ((text = json_object_to_json_string_ext(body, RESEND_JSON_FLAGS)) == NULL) {
		mk_fail(err, 500, "out of memory");
		goto out;
	}

	memset(&req, 0, sizeof req);
	req.method = "POST";
	req.base_url = s->resend_base_url;
	req.path = "/emails";
	req.bearer = s->resend_api_key;
	req.idempotency_key = msg->idempotency_key;
	req.body = text;
	req.retry_safe = 1;	/* same key + same payload = the original response, no second send */
	if (upstream_call(&req, &resp, err) == -1) {
		int maybe = err != NULL ? err->maybe_done : 0;

		mail_fail(err, err != NULL && err->status == 504 ? 504 : 502, maybe,
		    err != NULL && err->status == 504 ? "mail provider timed out" :
		    "mail provider unavailable");
		goto out;
	}
	if (resp.status < 200 || resp.status >= 300) {
		resend_fail_status(&resp, err);
		/* a refusal does not prove that an earlier, timed-out attempt did not land */
		if (err != NULL && resp.earlier_maybe_done)
			err->maybe_done = 1;
		goto out;
	}
	/* accepted: without an id we cannot say so, but it may well be on its way */
	id = resend_json_str(resp.json, "id");
	n = id != NULL ? snprintf(out->id, sizeof out->id, "%s", id) : -1;
	if (n <= 0 || (size_t)n >= sizeof out->id) {
		log_warn("resend: send: HTTP %ld without a usable id", resp.status);
		out->id[0] = '\0';
		mail_fail(err, 502, 1, "mail provider unavailable");
		goto out;
	}
	result = 0;
out:
	if (body != NULL)
		json_object_put(body);
	upstream_response_free(&resp);
	return result;
}

const struct mail_provider mail_resend = {
	.name = "resend",
	.idempotent = 1,	/* Idempotency-Key: 24 hours */
	.check = resend_check,
	.send = resend_send,
};
