/* billing.h: one credit per recipient — the send pipeline that keeps sends and debits equal, and says truly what happened. */
#ifndef MAILKIT_BILLING_H
#define MAILKIT_BILLING_H

#include <time.h>

#include "err.h"
#include "mail.h"

struct settings;
struct store_send;

#define BILLING_NO_CREDIT_MSG \
	"No email credits remaining. Buy a top-up pack to keep sending."
#define BILLING_NOT_CHARGED_MSG \
	"the payments service did not confirm the charge: nothing was charged and " \
	"nothing will be sent; retry with the same Idempotency-Key"
#define BILLING_UNCONFIRMED_MSG \
	"the mail server's answer to the message was lost: it may have been delivered; " \
	"it is not sent again (that could deliver a second copy) and its credit stays taken"
#define BILLING_AMOUNT_MAX	8	/* a ledger amount: "1" .. "50" (MAIL_MAX_RECIPIENTS) */
#define BILLING_KEY_MAX		96	/* derived keys: "mk-send-<64 hex>-refund" */
#define BILLING_ID_MAX		37	/* an email id: 36 characters, UUID-shaped, + NUL */
#define BILLING_WAIT_MAX_MS	30000	/* a duplicate waits this long for the first */
#define BILLING_WAIT_STEP_MS	50
#define BILLING_RESOLVE_TRIES	2	/* extra debits, same key, before an unsure 402 */
#define BILLING_RESOLVE_STEP_MS	1000	/* ... this far apart */
#define BILLING_WINDOW_SEC	(23 * 3600)	/* keep retrying within Resend's 24 h key window */
#define BILLING_BACKOFF_MAX_SEC	30	/* background retries: 1 s, 2 s, 4 s ... capped */
#define BILLING_SETTLE_SEC	120	/* an attempt whose outcome was unknown may still land
					   this long: a refusal within it is not trusted */
#define BILLING_FENCE_SEC	600	/* a voided debit key is fenced this long; later
					   landings are reconciliation's to refund */
#define BILLING_DELIVER_POLL_MS	1000	/* the delivery threads look for due rows this often */
#define BILLING_DELIVER_BATCH	64	/* rows one look takes */

/*
 * What a send's answer says (README "One credit per email").  A send is
 * answered with exactly one of:
 *   200 {id, status "sent"}    the provider accepted it; its credits (one per
 *                              recipient, "one credit" below) taken;
 *   202 {id, status "queued"}  MailKit holds it durably and delivers it in
 *                              the background (same provider idempotency
 *                              key), or, if the provider refuses it for
 *                              good, marks it failed and gives the credit
 *                              back; one credit held;
 *   202 {id, status "unconfirmed"}  (a provider without idempotency, SMTP)
 *                              the relay's answer to the whole message was
 *                              lost: it may have been delivered; final,
 *                              never sent again, one credit taken;
 *   4xx                        final: not sent now, never sent later, no
 *                              credit, ever (a debit that lands late is
 *                              refunded automatically);
 *   5xx                        nothing was accepted and nothing will be
 *                              charged (a debit that lands late is refunded;
 *                              a retry with the same Idempotency-Key within
 *                              SEND_VOID_GRACE_SEC takes the request up
 *                              again instead).
 */
struct billing_result {
	char	id[BILLING_ID_MAX];		/* MailKit's id of the email (billing_email_id) */
	char	provider_id[MAIL_ID_MAX];	/* the provider's id; "" while queued */
	int	queued;				/* 1: accepted for background delivery (202) */
	int	unconfirmed;			/* 1: outcome unknown, never retried (202) */
};

/*
 * Send msg for customer_id and charge one credit per recipient (to, cc and
 * bcc: mail_recipients()) for it, in one ledger entry: all or nothing.
 *
 * Every request is a row in the send journal (store_send.h) that moves
 * through debit -> send -> (refund) with one idempotency key per step, all
 * derived from the request's key: an Idempotency-Key debit at Dodo first, so
 * concurrent sends can never overdraw (Dodo refuses a debit past the
 * balance); then the provider send; if the provider refused for good, a
 * compensating ledger credit.  An outcome that is unknown at answer time is
 * never guessed: after a debit, the send is queued (202) and delivered by
 * billing_deliver_due(); before one, the answer is 5xx and the debit key is
 * fenced (any late debit refunded).
 *
 * client_key is the client's Idempotency-Key header (NULL if none): with it,
 * a retry within STORE_SEND_KEEP_SEC gets the request's current outcome
 * (same id: 200 once delivered, 202 while queued, the same 4xx), a
 * concurrent duplicate waits for the first, and the same key with a
 * different request is refused (409).  Without it, every call is a new
 * request.
 *
 * Returns 0 with out filled (out->queued or out->unconfirmed: 202), or -1 with err: 402
 * BILLING_NO_CREDIT_MSG, 404 unknown customer, 400 refused by the provider
 * as invalid, 409 key reuse, 502/504 upstream failures that charged nothing,
 * 503 state store unavailable.
 */
int	billing_send(const struct settings *s, const struct mail_provider *mp,
	    const char *customer_id, const char *client_key, const struct mail_message *msg,
	    struct billing_result *out, struct mk_err *err);

/*
 * Send a batch: msgs[0..n) for customer_id, each as billing_send() sends
 * one, under keys derived from the batch's (client_key, or a fresh one)
 * and the message's index, so each is an email of its own (GET
 * /emails/{id}).
 *
 * First the reservation, all or nothing: each message's debit (one per
 * recipient, one ledger entry per message), in order, before any is sent.
 * If one is refused (402, 404) or unknown (5xx), the debits taken are
 * undone (refunded now for a 4xx; for a 5xx voided, or taken up again by a
 * retry with the same key within SEND_VOID_GRACE_SEC) and the call returns
 * -1 with that answer in err: nothing sent, nothing charged.  Also -1 with
 * 409 when client_key was used with another request (the hash of the whole
 * batch is compared) or is still in progress, 503 when the store failed.
 *
 * Then every message is sent: returns 0 with out[i] filled for each (the
 * email id always; sent, queued or unconfirmed as billing_result says) and
 * errs[i].status 0, or errs[i] the message's own final refusal (a provider
 * that refused it for good: its credits refunded).  A retry with the same
 * client_key replays each message's current outcome.  If a message of the
 * batch may already have gone out (a crash in the middle of an earlier
 * attempt, after which the background delivered the reserved part), the
 * batch is answered message by message instead of being refused whole.
 */
int	billing_send_batch(const struct settings *s, const struct mail_provider *mp,
	    const char *customer_id, const char *client_key, const struct mail_message *msgs,
	    size_t n, struct billing_result *out, struct mk_err *errs, struct mk_err *err);

/*
 * A send's answer body, POST /send's: {id, status "sent", provider_id},
 * {id, status "queued"} or {id, status "unconfirmed", message}.  Its HTTP
 * status is billing_result_status().  Caller puts it.
 */
struct json_object	*billing_result_json(const struct billing_result *r);
int			 billing_result_status(const struct billing_result *r);

/* What one pass of billing_deliver_due() did. */
struct billing_tally {
	int	final;		/* rows now final (sent, failed, voided) */
	int	pending;	/* still pending: retried later */
	int	busy;		/* owned by a live worker: left alone */
	int	failed;		/* store failures */
};

/*
 * Drive every journal row due by `due_by` (queued sends, owed refunds,
 * fences, rows left by a dead worker) one step on, with its own keys, as the
 * background delivery does; at most `max` rows.  Rows still pending get their
 * next try after a capped, jittered backoff (1 s, 2 s, 4 s ... up to
 * BILLING_BACKOFF_MAX_SEC) for BILLING_WINDOW_SEC.  Returns rows visited,
 * or -1 with err when the journal cannot be read.
 */
int	billing_deliver_due(const struct settings *s, const struct mail_provider *mp,
	    time_t due_by, int max, struct billing_tally *t, struct mk_err *err);

/*
 * Start settings->delivery_threads threads in this process that run
 * billing_deliver_due() every BILLING_DELIVER_POLL_MS (sooner after a send
 * is queued), so accepted sends go out without waiting for reconciliation.
 * Leases in the journal let any number of processes, on any number of
 * hosts, drain one journal.  0 / -1 (no thread could be started).
 */
int	billing_deliver_start(const struct settings *s, const struct mail_provider *mp);

/* Stop and join the delivery threads (they finish the row in hand). */
void	billing_deliver_stop(void);

/* Make a delivery thread of this process look for due rows now. */
void	billing_deliver_wake(void);

/*
 * Refund a debit Dodo holds for journal row `row` that the journal says must
 * not stand (reconciliation's repair of an orphan debit or a missing
 * refund), with the row's own refund key, so repeating it is harmless.
 * 0 (refunded now or before) / -1 with err.
 */
int	billing_refund_orphan(const struct settings *s, const struct store_send *row,
	    struct mk_err *err);

/*
 * The journal key for a send: hex SHA-256 of customer_id and client_key
 * when client_key is given (the same request retried maps to the same key),
 * else the time in nanoseconds and 64 random bits, in hex (32 digits, sorting
 * by time).  0 / -1.
 */
int	billing_key_base(const char *customer_id, const char *client_key, char *out,
	    size_t outlen);

/*
 * A journal row as the API shows an email, close to Resend's GET
 * /emails/{id}: {object, id, status ("queued", "sent", "unconfirmed" or "failed"),
 * created_at, updated_at, to, cc, bcc, reply_to, tags, subject, provider_id,
 * error, ledger: [{type
 * "debit" or "refund", amount, entry_id, idempotency_key}]}.  Caller puts it.
 */
struct json_object	*billing_email_json(const struct store_send *row);

/* The email id for a journal key: its first 32 hex digits as a UUID
 * (8-4-4-4-12).  out must hold BILLING_ID_MAX. */
void	billing_email_id(const char *key, char *out);

/* The journal key prefix (32 hex digits) an email id names, for lookups;
 * dashes optional, case-insensitive.  0, or -1 if id is not an email id. */
int	billing_id_prefix(const char *id, char *prefix, size_t prefixlen);

#endif
