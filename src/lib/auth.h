/* auth.h: who a request acts for (API keys, or the tutorial's trusted customer_id), rate limits, issuing keys. */
#ifndef MAILKIT_AUTH_H
#define MAILKIT_AUTH_H

#include <stddef.h>

#include "apikey.h"
#include "err.h"

struct settings;
struct request;
struct response;
struct mail_provider;

#define AUTH_RATE_WINDOW_SEC	60	/* RATE_LIMIT_PER_MINUTE counts in fixed minutes */
#define AUTH_ME			"me"	/* a path id meaning "the key's customer" */

/*
 * Count one request in `bucket`'s current minute (counters.h: shared by
 * every worker on the host); past `limit` (0 = no limit) 429 "rate limit of
 * N requests per minute <per> exceeded" with Retry-After.  Returns 0, or -1
 * with resp filled (also 503 when the counters are unavailable).
 */
int	auth_rate_limit(const struct settings *s, const char *bucket, long limit,
	    const char *per, struct response *resp);

/*
 * Decide which customer the request acts for; on success customer_id
 * (CUSTOMER_ID_MAX + 1 bytes or more) holds it.  `claimed` is the id the
 * request itself names (path or body; NULL or "" if none, AUTH_ME for
 * "the caller").
 *
 * MAILKIT_AUTH=api_key (the default): the customer comes from
 * "Authorization: Bearer <key>" only.  No key, a malformed, unknown or
 * revoked key: 401 with WWW-Authenticate: Bearer.  A claimed id other
 * than the key's customer: 403 (never silently replaced).  Then the key's
 * rate limit (RATE_LIMIT_PER_MINUTE, shared by all workers): 429 with
 * Retry-After.
 * MAILKIT_AUTH=customer_id (the tutorial): a Bearer key, when sent, is
 * checked exactly as above; without one the claimed id is trusted (400 if
 * it is missing or malformed).
 *
 * Returns 0, or -1 with resp filled.  Never calls an upstream.
 */
int	auth_customer(const struct settings *s, const struct request *req, const char *claimed,
	    char *customer_id, size_t len, struct response *resp);

/* After auth_customer(..., NULL, ...): 0 when `claimed` (NULL, "", AUTH_ME or
 * an id) agrees with the authenticated customer, else -1 with 403 in resp. */
int	auth_check_claim(const char *claimed, const char *customer_id, struct response *resp);

/*
 * For routes that name the customer in the JSON body, in two steps around
 * the body's parsing.  auth_before_body: when a key is sent or required,
 * check it now, so an unauthenticated request costs no parsing (*keyed = 1).
 * auth_after_body: with a key, the body's customer_id (claimed) must agree
 * (403 otherwise); without one (MAILKIT_AUTH=customer_id), it names the
 * customer.  customer_id holds len >= CUSTOMER_ID_MAX + 1 bytes.  Both
 * return 0, or -1 with resp filled.
 */
int	auth_before_body(const struct settings *s, const struct request *req,
	    char *customer_id, size_t len, int *keyed, struct response *resp);
int	auth_after_body(const struct settings *s, const struct request *req, const char *claimed,
	    int keyed, char *customer_id, size_t len, struct response *resp);

#define AUTH_ISSUE_ROTATE	0x01	/* revoke the active key first (else an active key wins) */
#define AUTH_ISSUE_MAIL		0x02	/* mail the key; if that fails, undo the issue (-1) */
#define AUTH_ISSUE_MAIL_TRY	0x04	/* mail the key; a failure is only logged */

/*
 * Issue an API key for customer_id (source names who issued it, for
 * `mailkit-admin keys list`): generate it, store its hash, and mail it to
 * `email` (addressing `name`, may be "") when flags ask, with an
 * idempotency key unique to this key.  Returns STORE_KEY_ISSUED with the key
 * in key[keylen >= APIKEY_MAX] (the one time it exists in clear: hand it
 * over, never log it), STORE_KEY_EXISTS when the customer already has an
 * active key (nothing issued, nothing mailed), or -1 with err.
 */
int	auth_issue_key(const struct settings *s, const struct mail_provider *mailer,
	    const char *customer_id, const char *email, const char *name, const char *source,
	    unsigned flags, char *key, size_t keylen, struct mk_err *err);

#endif
