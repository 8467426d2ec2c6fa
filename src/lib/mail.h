/* mail.h: the mail provider interface; each provider is one module (mail_<name>.c). */
#ifndef MAILKIT_MAIL_H
#define MAILKIT_MAIL_H

#include <stddef.h>

#include "err.h"
#include "fields.h"

struct settings;
struct json_object;

#define MAIL_ID_MAX	128

struct mail_tag {
	const char	*name;			/* [A-Za-z0-9_-], fields.h */
	const char	*value;
};

/*
 * Every string has been validated by the caller (fields.h, valid.h); to,
 * cc and bcc hold at most MAIL_MAX_RECIPIENTS addresses together
 * (mail_recipients()).  bcc is in the envelope only, never in a header.
 */
struct mail_message {
	const char	*from;			/* "Name <addr>" or "addr" */
	const char	*to[MAIL_MAX_RECIPIENTS];
	size_t		 nto;
	const char	*cc[MAIL_MAX_RECIPIENTS];
	size_t		 ncc;
	const char	*bcc[MAIL_MAX_RECIPIENTS];
	size_t		 nbcc;
	const char	*reply_to[MAIL_MAX_RECIPIENTS];
	size_t		 nreply_to;
	struct mail_tag	 tags[MAIL_MAX_TAGS];
	size_t		 ntags;
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

/* Recipients of msg: to + cc + bcc (each is charged a credit, billing.h). */
size_t	mail_recipients(const struct mail_message *msg);

/*
 * Add msg's cc, bcc and reply_to (arrays of addresses) and tags ([{name,
 * value}]) to the JSON object o, in Resend's shape; each is left out when
 * empty.
 */
void	mail_json_extras(struct json_object *o, const struct mail_message *msg);

/*
 * A provider's check(): the settings it needs, as name, value pairs ending
 * with NULL.  0 when every value is set and not empty, else -1 with
 * "<name> is not set (needed by MAIL_PROVIDER=<provider>)" in errbuf.
 */
int	mail_check_settings(const char *provider, char *errbuf, size_t errlen, ...);

/* A provider's failure: err filled with status, maybe_done and msg; -1. */
int	mail_fail(struct mk_err *err, int status, int maybe_done, const char *msg);

/* 1 when msg can be sent from `from`: a key, 1..MAIL_MAX_RECIPIENTS
 * recipients with at least one in to, a subject, html or text. */
int	mail_message_ok(const struct mail_message *msg, const char *from);

/*
 * An upstream_call() transport failure (err filled by it) as a provider
 * without idempotency answers it: nothing got through -> 503 "not now"
 * (safe to repeat); it may have -> 502/504 with maybe_done (never repeated).
 * Returns -1.
 */
int	mail_fail_transport(struct mk_err *err);

/* The provider named by settings (MAIL_PROVIDER), or NULL if unknown. */
const struct mail_provider	*mail_provider_find(const char *name);

extern const struct mail_provider mail_resend;
extern const struct mail_provider mail_smtp;
extern const struct mail_provider mail_sendgrid;
extern const struct mail_provider mail_postmark;

#endif
