/* billing.h: one email, one credit — the send pipeline that keeps sends and debits equal. */
#ifndef MAILKIT_BILLING_H
#define MAILKIT_BILLING_H

#include <time.h>

#include "err.h"
#include "mail.h"

struct settings;
struct store_send;

#define BILLING_NO_CREDIT_MSG \
	"No email credits remaining. Buy a top-up pack or upgrade your plan."
#define BILLING_KEY_MAX		96	/* derived keys: "mk-send-<64 hex>-refund" */
#define BILLING_WAIT_MAX_MS	30000	/* a duplicate waits this long for the first */
#define BILLING_WAIT_STEP_MS	50

/*
 * Send msg for customer_id and charge exactly one credit for it.
 *
 * Every request is a row in the send journal (store.h) that moves through
 * debit -> send -> (refund) with one idempotency key per step, all derived
 * from the request's key: an Idempotency-Key debit at Dodo first, so
 * concurrent sends can never overdraw (Dodo refuses a debit past the
 * balance); then the provider send; if the provider definitely refused, a
 * compensating ledger credit.  An unknown outcome (a timeout) leaves the row
 * where it is; the same request retried, or `mailkit-admin reconcile`,
 * drives it on with the same keys, so it resolves instead of guessing.
 *
 * client_key is the client's Idempotency-Key header (NULL if none): with it,
 * a retry within STORE_SEND_KEEP_SEC replays the first final answer (same
 * status, same id), a concurrent duplicate waits for the first, and the same
 * key with a different request is refused (409).  Without it, every call is
 * a new request.
 *
 * Returns 0 with out->id, or -1 with err: 402 BILLING_NO_CREDIT_MSG, 404
 * unknown customer, 400 refused by the provider as invalid, 409 key reuse,
 * 502/504 upstream failures, 503 state store unavailable.
 */
int	billing_send(const struct settings *s, const struct mail_provider *mp,
	    const char *customer_id, const char *client_key, const struct mail_message *msg,
	    struct mail_result *out, struct mk_err *err);

/*
 * Drive a pending journal row (from store_send_pending) on to a final state
 * with the same keys, as billing_send would have.  Returns 0 when the row is
 * final now, 1 when it is still pending (busy elsewhere, or the upstream
 * still fails: try again later), -1 on a store failure.
 */
int	billing_resume(const struct settings *s, const struct mail_provider *mp,
	    const struct store_send *row, struct mk_err *err);

/*
 * The journal key for a send: hex SHA-256 of customer_id and client_key
 * when client_key is given (the same request retried maps to the same key),
 * else the time in nanoseconds and 64 random bits, in hex (32 digits, sorting
 * by time).  0 / -1.
 */
int	billing_key_base(const char *customer_id, const char *client_key, char *out,
	    size_t outlen);

#endif
