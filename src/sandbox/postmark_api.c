/* postmark_api.c: the emulated Postmark POST /email, into the same outbox as Resend's. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "sandbox.h"
#include "valid.h"

#define POSTMARK_API_RECIPIENTS_MAX	50	/* Postmark: To, Cc and Bcc, each */

void
postmark_api_error(struct response *resp, int status, int code, const char *fmt, ...)
{
	va_list	ap;
	char	c[16];

	snprintf(c, sizeof c, "%d", code);
	va_start(ap, fmt);
	state_api_verror(resp, SANDBOX_API_POSTMARK, status, c, fmt, ap);
	va_end(ap);
}

/*
 * A comma-separated address list ("a, b" or "Name <a>") as an array of
 * addresses into email[name]; 0 absent, 1 added, -1 malformed.
 */
static int
postmark_api_list(json_object *root, const char *key, json_object *email, const char *name)
{
	json_object	*v, *a;
	char		 copy[POSTMARK_API_RECIPIENTS_MAX * 320], *p, *item;
	size_t		 n = 0;

	if (!json_object_object_get_ex(root, key, &v) || v == NULL)
		return 0;
	if (!json_object_is_type(v, json_type_string) ||
	    (size_t)json_object_get_string_len(v) >= sizeof copy)
		return -1;
	snprintf(copy, sizeof copy, "%s", json_object_get_string(v));
	a = json_object_new_array();
	for (p = copy; (item = strsep(&p, ",")) != NULL;) {
		char	*lt, *gt;

		item += strspn(item, " ");
		while (*item != '\0' && item[strlen(item) - 1] == ' ')
			item[strlen(item) - 1] = '\0';
		if ((lt = strrchr(item, '<')) != NULL && (gt = strchr(lt, '>')) != NULL) {
			*gt = '\0';
			item = lt + 1;
		}
		if (!valid_email(item) || ++n > POSTMARK_API_RECIPIENTS_MAX) {
			json_object_put(a);
			return -1;
		}
		json_object_array_add(a, json_object_new_string(item));
	}
	json_object_object_add(email, name, a);
	return 1;
}

/* The request as the outbox keeps emails (Resend's shape), or NULL with a 422 set. */
static json_object *
postmark_api_convert(json_object *root, struct response *resp)
{
	static const struct { const char *key, *name; } lists[] = {
		{ "To", "to" }, { "Cc", "cc" }, { "Bcc", "bcc" }, { "ReplyTo", "reply_to" },
	};
	json_object	*email = json_object_new_object(), *v;
	const char	*why = NULL;
	int		 r;

	if (!json_object_object_get_ex(root, "From", &v) || !json_object_is_type(v,
	    json_type_string) || !valid_header_text(json_object_get_string(v),
	    (size_t)json_object_get_string_len(v))) {
		why = "Invalid 'From' address.";
		goto fail;
	}
	json_object_object_add(email, "from", json_object_get(v));
	for (size_t i = 0; i < sizeof lists / sizeof lists[0]; i++) {
		if ((r = postmark_api_list(root, lists[i].key, email, lists[i].name)) == -1 ||
		    (i == 0 && r == 0)) {
			why = i == 0 && r == 0 ? "Zero recipients specified" :
			    "Error parsing recipients: invalid address or more than 50 of them.";
			goto fail;
		}
	}
	if (!json_object_object_get_ex(root, "Subject", &v) ||
	    !json_object_is_type(v, json_type_string) ||
	    !valid_header_text(json_object_get_string(v), (size_t)json_object_get_string_len(v))) {
		why = "Invalid 'Subject'.";
		goto fail;
	}
	json_object_object_add(email, "subject", json_object_get(v));
	if (json_object_object_get_ex(root, "HtmlBody", &v) && json_object_is_type(v,
	    json_type_string))
		json_object_object_add(email, "html", json_object_get(v));
	if (json_object_object_get_ex(root, "TextBody", &v) && json_object_is_type(v,
	    json_type_string))
		json_object_object_add(email, "text", json_object_get(v));
	if (!json_object_object_get_ex(email, "html", NULL) &&
	    !json_object_object_get_ex(email, "text", NULL)) {
		why = "Provide either email TextBody or HtmlBody or both.";
		goto fail;
	}
	/* Metadata: shown as tags */
	if (json_object_object_get_ex(root, "Metadata", &v) && v != NULL) {
		json_object *tags = json_object_new_array();

		json_object_object_add(email, "tags", tags);
		if (!json_object_is_type(v, json_type_object)) {
			why = "Metadata must be an object of strings.";
			goto fail;
		}
		json_object_object_foreach(v, k, val) {
			json_object *t = json_object_new_object();

			json_object_object_add(t, "name", json_object_new_string(k));
			json_object_object_add(t, "value", json_object_get(val));
			json_object_array_add(tags, t);
		}
	}
	return email;
fail:
	postmark_api_error(resp, 422, 300, "%s", why);
	json_object_put(email);
	return NULL;
}

/* The email of a request past its fault: convert, store, 200 {..., MessageID}. */
static int
postmark_api_accept(const struct request *req, struct response *resp)
{
	struct mk_err	 err;
	json_object	*root, *email = NULL, *o, *to;
	char		 id[SANDBOX_ID_MAX], t[SANDBOX_TIME_MAX];
	int		 stored = 0;

	if ((root = request_json(req, &err)) == NULL) {
		postmark_api_error(resp, 422, 402, "Received invalid JSON input.");
		return 0;
	}
	if ((email = postmark_api_convert(root, resp)) == NULL)
		goto out;
	if (resend_api_record(email, id, sizeof id) == -1) {
		postmark_api_error(resp, 500, 0, "Internal server error");
		goto out;
	}
	stored = 1;
	o = json_object_new_object();
	json_object_object_get_ex(root, "To", &to);
	json_object_object_add(o, "To", json_object_get(to));
	state_iso(state_now_ms(), t, sizeof t);
	json_object_object_add(o, "SubmittedAt", json_object_new_string(t));
	json_object_object_add(o, "MessageID", json_object_new_string(id));
	json_object_object_add(o, "ErrorCode", json_object_new_int(0));
	json_object_object_add(o, "Message", json_object_new_string("OK"));
	response_json(resp, 200, o);
out:
	json_object_put(email);
	json_object_put(root);
	return stored;
}

void
postmark_api_send(const struct request *req, struct response *resp)
{
	/* the server token travels in X-Postmark-Server-Token, which the request
	 * struct does not carry: any caller is accepted (README) */
	fault_sleep_ms(sandbox.latency_ms);	/* as a real upstream's round trip */
	fault_email_send(req, resp, SANDBOX_API_POSTMARK, postmark_api_accept);
}
