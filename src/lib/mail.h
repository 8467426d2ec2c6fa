/* mail.h: the mail provider interface; each provider is one module (mail_<name>.c). */
#ifndef MAILKIT_MAIL_H
#define MAILKIT_MAIL_H

#include <stddef.h>

#include "err.h"
#include "fields.h"

struct settings;

#define MAIL_ID_MAX	128

/* Every string has been validated by the caller (fields.h, valid.h). */
struct mail_message {
	const char	*from;			/* "Name <addr>" or "addr" */
	const char	*to[MAIL_MAX_RECIPIENTS];
	size_t		 nto;
	const char	*subject;
	const char	*html;			/* may be NULL if text is set */
	const char	*text;			/* may be NULL */
	const char	*idempotency_key;	/* required: same key + same message = same send */
};

struct mail_result {
	char	id[MAIL_ID_MAX];		/* the provider's message id */
};

/*
 * A provider.  send() returns 0 when the provider accepted the message,
 * -1 otherwise with err filled: err->maybe_done = 0 means the provider
 * definitely did not send (a 4xx refusal: err->status 400 for bad
 * recipients or content, 503 for "not now" such as a rate limit, which a
 * later call may get past, 502 otherwise); maybe_done = 1 means the outcome
 * is unknown (timeout, 5xx after retries, or a refusal that came after a
 * retried attempt whose outcome was unknown) and, for an idempotent
 * provider, a later call with the same idempotency key resolves it.  A
 * provider that is not idempotent (SMTP) may deliver a second copy when
 * called again after maybe_done = 1: callers must not retry it then.
 */
struct mail_provider {
	const char	*name;
	int		 idempotent;	/* 1: the same idempotency key never sends twice */
	/* Check the settings this provider needs; 0 / -1 with a message naming the key. */
	int		(*check)(const struct settings *s, char *errbuf, size_t errlen);
	int		(*send)(const struct settings *s, const struct mail_message *msg,
			    struct mail_result *out, struct mk_err *err);
};

/* The provider named by settings (MAIL_PROVIDER), or NULL if unknown. */
const struct mail_provider	*mail_provider_find(const char *name);

extern const struct mail_provider mail_resend;
extern const struct mail_provider mail_smtp;

#endif
