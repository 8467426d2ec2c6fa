/* billing.h: one email, one credit — the send pipeline that keeps sends and debits equal. */
#ifndef MAILKIT_BILLING_H
#define MAILKIT_BILLING_H

#include "err.h"
#include "mail.h"

struct settings;

#define BILLING_NO_CREDIT_MSG \
	"No email credits remaining. Buy a top-up pack or upgrade your plan."
#define BILLING_KEY_MAX		96	/* derived idempotency keys: "mk-send-<64 hex>-refund" */

/*
 * Send msg for customer_id and charge exactly one credit for it.
 *
 * Order (Dodo's guidance): an idempotent ledger debit first, so concurrent
 * sends can never overdraw (Dodo refuses a debit past the balance); then the
 * provider send with an idempotency key derived from the same request; if
 * the provider definitely refused, a compensating, idempotent ledger credit.
 *
 * client_key is the client's Idempotency-Key header (NULL if none): keys
 * derived from it (with the customer id) make a retried request reuse the
 * same debit and the same provider send.  msg->idempotency_key is set here.
 *
 * Returns 0 with out->id, or -1 with err: 402 BILLING_NO_CREDIT_MSG, 404
 * unknown customer, 400 refused by the provider as invalid, 502/504
 * upstream failures.
 */
int	billing_send(const struct settings *s, const struct mail_provider *mp,
	    const char *customer_id, const char *client_key, struct mail_message *msg,
	    struct mail_result *out, struct mk_err *err);

/*
 * Derive the idempotency key base for a send: hex SHA-256 of customer_id
 * and client_key when client_key is given (the same request retried maps to
 * the same keys), else 128 random bits.  Writes 64 or 32 hex digits.  0 / -1.
 */
int	billing_key_base(const char *customer_id, const char *client_key, char *out,
	    size_t outlen);

#endif
