/* mail.c: the table of mail providers; each provider is its own module (mail_<name>.c). */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <json-c/json.h>

#include "mail.h"

/* New providers are added here and nowhere else. */
static const struct mail_provider *const mail_providers[] = {
	&mail_resend,
	&mail_smtp,
	&mail_sendgrid,
	&mail_postmark,
};

const struct mail_provider *
mail_provider_find(const char *name)
{
	size_t	i;

	if (name == NULL)
		return NULL;
	for (i = 0; i < sizeof mail_providers / sizeof mail_providers[0]; i++)
		if (strcmp(mail_providers[i]->name, name) == 0)
			return mail_providers[i];
	return NULL;
}

size_t
mail_recipients(const struct mail_message *msg)
{
	return msg->nto + msg->ncc + msg->nbcc;
}

static void
mail_json_list(json_object *o, const char *name, const char *const *list, size_t n)
{
	json_object	*a;

	if (n == 0)
		return;
	a = json_object_new_array();
	for (size_t i = 0; i < n; i++)
		json_object_array_add(a, json_object_new_string(list[i]));
	json_object_object_add(o, name, a);
}

void
mail_json_extras(json_object *o, const struct mail_message *msg)
{
	json_object	*tags;

	mail_json_list(o, "cc", msg->cc, msg->ncc);
	mail_json_list(o, "bcc", msg->bcc, msg->nbcc);
	mail_json_list(o, "reply_to", msg->reply_to, msg->nreply_to);
	if (msg->ntags == 0)
		return;
	tags = json_object_new_array();
	for (size_t i = 0; i < msg->ntags; i++) {
		json_object *t = json_object_new_object();

		json_object_object_add(t, "name", json_object_new_string(msg->tags[i].name));
		json_object_object_add(t, "value", json_object_new_string(msg->tags[i].value));
		json_object_array_add(tags, t);
	}
	json_object_object_add(o, "tags", tags);
}

int
mail_fail(struct mk_err *err, int status, int maybe_done, const char *msg)
{
	mk_fail(err, status, "%s", msg);
	if (err != NULL)
		err->maybe_done = maybe_done;
	return -1;
}

int
mail_check_settings(const char *provider, char *errbuf, size_t errlen, ...)
{
	va_list		 ap;
	const char	*name, *value, *missing = NULL;

	va_start(ap, errlen);
	while (missing == NULL && (name = va_arg(ap, const char *)) != NULL) {
		value = va_arg(ap, const char *);
		if (value == NULL || value[0] == '\0')
			missing = name;
	}
	va_end(ap);
	if (missing == NULL)
		return 0;
	snprintf(errbuf, errlen, "%s is not set (needed by MAIL_PROVIDER=%s)", missing, provider);
	return -1;
}

int
mail_message_ok(const struct mail_message *msg, const char *from)
{
	return msg->idempotency_key != NULL && msg->idempotency_key[0] != '\0' && from != NULL &&
	    msg->nto > 0 && mail_recipients(msg) <= MAIL_MAX_RECIPIENTS && msg->subject != NULL &&
	    (msg->html != NULL || msg->text != NULL);
}

int
mail_fail_transport(struct mk_err *err)
{
	int	maybe = err != NULL ? err->maybe_done : 0;
	int	timeout = err != NULL && err->status == 504;

	/* a connection that never got the request through sent nothing: "not now" */
	if (!maybe)
		return mail_fail(err, 503, 0, "mail provider unavailable, try again");
	return mail_fail(err, timeout ? 504 : 502, 1, timeout ? "mail provider timed out" :
	    "mail provider unavailable");
}
