/* upstream.h: the one outbound HTTP client, shared by the payments and mail modules. */
#ifndef MAILKIT_UPSTREAM_H
#define MAILKIT_UPSTREAM_H

#include <json-c/json.h>

#include "err.h"

struct settings;

#define UPSTREAM_RESPONSE_MAX	(1024 * 1024)	/* 1M: larger replies abort the transfer */
#define UPSTREAM_BACKOFF_BASE_MS 500		/* the official SDKs' schedule: 0.5 s * 2^n ... */
#define UPSTREAM_BACKOFF_MAX_MS	8000		/* ... capped at 8 s, times jitter in (0.75, 1] */
#define UPSTREAM_RETRY_AFTER_MAX_MS 10000	/* a longer Retry-After is not waited for */

struct upstream_request {
	const char	*method;	/* "GET", "POST", ... */
	const char	*base_url;	/* "https://test.dodopayments.com" (no trailing slash needed) */
	const char	*path;		/* built with url_path(); may carry "?query" */
	const char	*bearer;	/* Authorization: Bearer <bearer>; never logged */
	const char	*idempotency_key; /* sent as Idempotency-Key when non-NULL */
	const char	*auth_header;	/* one more header, "Name: value", for APIs that take
					   their key elsewhere (Postmark); never logged */
	const char	*body;		/* JSON text, or NULL */
	int		 retry_safe;	/* 1: GET, or a POST the server deduplicates */
};

struct upstream_response {
	long		 status;	/* HTTP status of the last attempt */
	json_object	*json;		/* parsed body or NULL if empty/not JSON; caller puts it */
	long		 retry_after_ms; /* from retry-after-ms / Retry-After, -1 if none */
	int		 attempts;
	int		 earlier_maybe_done; /* an earlier attempt may have acted: it timed out
					  * after sending, or the server answered 5xx */
};

/*
 * Call process-wide settings once before any request: timeouts, retries,
 * CA bundle.  Not thread-safe; call from main before server_run().
 */
void	upstream_configure(const struct settings *s);

/*
 * Perform the request, with connect and total timeouts from the settings,
 * on a pooled libcurl handle run by the process's one transfer loop
 * (upstream_loop.h): keep-alive connections are shared by all threads.
 * The calling thread waits for the answer.
 * When retry_safe, 408/429/5xx and connection errors are retried up to
 * max_retries times with the official SDKs' backoff, honouring
 * x-should-retry, retry-after-ms and Retry-After.  (409 is never retried: on
 * Dodo's ledger it means "idempotency key already used".)
 *
 * Returns 0 when an HTTP response arrived (any status: the caller maps it;
 * resp->earlier_maybe_done says whether a retried attempt before it may
 * have been acted on, which matters when the last answer is a refusal),
 * -1 on transport failure: err->status 504 for a timeout, 502 otherwise,
 * and err->maybe_done set if the request may have reached the server.
 * On 0 the caller owns resp->json.
 */
int	upstream_call(const struct upstream_request *req, struct upstream_response *resp,
	    struct mk_err *err);

/*
 * Bound every upstream_call this thread makes from now on, attempts,
 * retries and backoff included, to ms milliseconds from now; 0 lifts the
 * bound (each attempt then has UPSTREAM_TIMEOUT_MS).  The server loop
 * starts one per request (REQUEST_TIMEOUT_MS).  Past the bound a call fails
 * as a timeout: 504, maybe_done if an attempt may have reached the server.
 */
void	upstream_deadline_start(long ms);

/*
 * Milliseconds left of this thread's bound (<= 0: passed), LONG_MAX when
 * there is none: for calls made outside upstream_call (SMTP) to keep it.
 */
long	upstream_remaining_ms(void);

/*
 * At exit, once no thread calls any more: stop the transfer loop, close
 * its connections and free the pooled handles.  A later upstream_call
 * still works (on the calling thread).
 */
void	upstream_shutdown(void);

/* Release resp->json and reset resp.  Safe on a zeroed struct. */
void	upstream_response_free(struct upstream_response *resp);

#endif
