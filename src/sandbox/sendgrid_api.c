/* sendgrid_api.c: the emulated SendGrid v3 mail/send, into the same outbox as Resend's. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "sandbox.h"
#include "valid.h"

#define SENDGRID_API_RECIPIENTS_MAX	1000	/* SendGrid: to + cc + bcc per request */

void
sendgrid_api_error(struct response *resp, int status, const char *fmt, ...)
{
	va_list	ap;

	va_start(ap, fmt);
	state_api_verror(resp, SANDBOX_API_SENDGRID, status, "", fmt, ap);
	va_end(ap);
}

/* A string member, or NULL. */
static const char *
sendgrid_api_str(json_object *o, const char *key)
{
	json_object *v;

	if (o == NULL || !json_object_object_get_ex(o, key, &v) ||
	    !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

/*
 * [{email[, name]}] as a Resend-shaped array of addresses into out (taken);
 * the number of them, 0 when absent, -1 when malformed.
 */
static int
sendgrid_api_list(json_object *o, const char *key, json_object **out)
{
	json_object	*v;
	size_t		 n;

	*out = NULL;
	if (!json_object_object_get_ex(o, key, &v) || v == NULL)
		return 0;
	if (!json_object_is_type(v, json_type_array) || (n = json_object_array_length(v)) == 0)
		return -1;
	*out = json_object_new_array();
	for (size_t i = 0; i < n; i++) {
		const char *email = sendgrid_api_str(json_object_array_get_idx(v, i), "email");

		if (email == NULL || !valid_email(email)) {
			json_object_put(*out);
			*out = NULL;
			return -1;
		}
		json_object_array_add(*out, json_object_new_string(email));
	}
	return (int)n;
}

/*
 * The request as the outbox keeps emails (Resend's shape), or NULL with
 * SendGrid's 400 set.  One personalization is emulated (MailKit sends one).
 */
static json_object *
sendgrid_api_convert(json_object *root, struct response *resp)
{
	json_object	*email = json_object_new_object(), *ps, *p, *list, *from, *content, *v;
	const char	*addr, *name, *subject;
	char		 fromtext[EMAIL_MAX + 512];
	int		 n, total = 0;
	const char	*why = NULL;

	if (!json_object_object_get_ex(root, "personalizations", &ps) ||
	    !json_object_is_type(ps, json_type_array) || json_object_array_length(ps) != 1) {
		why = "The personalizations field is required and must have at least one "
		    "personalization.";
		goto fail;
	}
	p = json_object_array_get_idx(ps, 0);
	for (int i = 0; i < 3; i++) {
		static const char *const keys[] = { "to", "cc", "bcc" };

		if ((n = sendgrid_api_list(p, keys[i], &list)) == -1 || (i == 0 && n == 0)) {
			why = i == 0 ? "The to array is required for all personalization objects, "
			    "and must have at least one email object with a valid email address." :
			    "Does not contain a valid address.";
			goto fail;
		}
		total += n;
		if (list != NULL)
			json_object_object_add(email, keys[i], list);
	}
	if (total > SENDGRID_API_RECIPIENTS_MAX) {
		why = "The total number of recipients must be less than 1000.";
		goto fail;
	}
	if (!json_object_object_get_ex(root, "from", &from) ||
	    (addr = sendgrid_api_str(from, "email")) == NULL || !valid_email(addr)) {
		why = "The from object must be provided for every email send. It is an object that "
		    "requires the email parameter, but may also contain a name parameter.";
		goto fail;
	}
	name = sendgrid_api_str(from, "name");
	snprintf(fromtext, sizeof fromtext, name != NULL ? "%s <%s>" : "%.0s%s",
	    name != NULL ? name : "", addr);
	json_object_object_add(email, "from", json_object_new_string(fromtext));
	if ((n = sendgrid_api_list(root, "reply_to_list", &list)) == -1) {
		why = "The reply_to_list must contain valid email objects.";
		goto fail;
	}
	if (list != NULL)
		json_object_object_add(email, "reply_to", list);
	if ((subject = sendgrid_api_str(root, "subject")) == NULL || subject[0] == '\0' ||
	    !valid_header_text(subject, strlen(subject))) {
		why = "The subject is required. You can get around this requirement if you use a "
		    "template with a subject defined or if every personalization has a subject "
		    "defined.";
		goto fail;
	}
	json_object_object_add(email, "subject", json_object_new_string(subject));
	if (!json_object_object_get_ex(root, "content", &content) ||
	    !json_object_is_type(content, json_type_array) ||
	    (n = (int)json_object_array_length(content)) == 0) {
		why = "Unless a valid template_id is provided, the content parameter is required.";
		goto fail;
	}
	for (int i = 0; i < n; i++) {
		json_object	*c = json_object_array_get_idx(content, i);
		const char	*type = sendgrid_api_str(c, "type"), *value = sendgrid_api_str(c, "value");

		if (type == NULL || value == NULL || (strcmp(type, "text/plain") != 0 &&
		    strcmp(type, "text/html") != 0)) {
			why = "Content types must be text/plain or text/html, each with a value.";
			goto fail;
		}
		if (strcmp(type, "text/plain") == 0 && i > 0) {
			why = "If present, text/plain must be first, followed by text/html.";
			goto fail;
		}
		json_object_object_add(email, strcmp(type, "text/plain") == 0 ? "text" : "html",
		    json_object_new_string(value));
	}
	/* custom_args: every value a string; shown as tags */
	if (json_object_object_get_ex(root, "custom_args", &v) && v != NULL) {
		json_object *tags = json_object_new_array();

		if (!json_object_is_type(v, json_type_object)) {
			json_object_put(tags);
			why = "custom_args must be an object of strings.";
			goto fail;
		}
		json_object_object_foreach(v, k, val) {
			json_object *t = json_object_new_object();

			json_object_object_add(t, "name", json_object_new_string(k));
			json_object_object_add(t, "value", json_object_get(val));
			json_object_array_add(tags, t);
		}
		json_object_object_add(email, "tags", tags);
	}
	return email;
fail:
	sendgrid_api_error(resp, 400, "%s", why);
	json_object_put(email);
	return NULL;
}

/* The email of an authorized request past its fault: convert, store, 202. */
static int
sendgrid_api_accept(const struct request *req, struct response *resp)
{
	struct mk_err	 err;
	json_object	*root, *email = NULL;
	char		 id[SANDBOX_ID_MAX];
	int		 stored = 0;

	if ((root = request_json(req, &err)) == NULL) {
		sendgrid_api_error(resp, 400, "Bad Request: %s", err.msg);
		return 0;
	}
	if ((email = sendgrid_api_convert(root, resp)) == NULL)
		goto out;
	if (resend_api_record(email, id, sizeof id) == -1) {
		sendgrid_api_error(resp, 500, "Internal server error");
		goto out;
	}
	stored = 1;
	response_header(resp, "X-Message-Id", id);
	response_body(resp, 202, "text/plain", "", 0);
out:
	json_object_put(email);
	json_object_put(root);
	return stored;
}

void
sendgrid_api_send(const struct request *req, struct response *resp)
{
	fault_sleep_ms(sandbox.latency_ms);	/* as a real upstream's round trip */
	if (!state_bearer(req->authorization)) {
		sendgrid_api_error(resp, 401, "The provided authorization grant is invalid, "
		    "expired, or revoked");
		return;
	}
	fault_email_send(req, resp, SANDBOX_API_SENDGRID, sendgrid_api_accept);
}
