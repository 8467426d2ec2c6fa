/* billing_int.h: what billing.c shares with billing_batch.c and billing_deliver.c; not for programs. */
#ifndef MAILKIT_BILLING_INT_H
#define MAILKIT_BILLING_INT_H

#include <json-c/json.h>

#include "billing.h"
#include "mail.h"
#include "store.h"

#define BILLING_JSON_FLAGS	(JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)

/* Who drives a row: the request that answers the client, or the background. */
enum billing_mode { BILLING_REQUEST, BILLING_BACKGROUND };

/* The ledger and provider keys of one send, derived from its journal key. */
struct billing_keys {
	char	debit[BILLING_KEY_MAX];
	char	send[BILLING_KEY_MAX];
	char	refund[BILLING_KEY_MAX];
};

/* Hex SHA-256 of a, a NUL, and b into out (DIGEST_SHA256_HEX bytes); 0 / -1. */
int	billing_sha256(const char *a, const char *b, char *out, size_t outlen);

/* The message as the journal keeps it (to, cc, bcc, subject, bodies, tags); caller puts it. */
json_object *	billing_message_json(const struct mail_message *msg);

/* The debit, send and refund keys derived from a row's journal key. */
void	billing_keys(const char *key, struct billing_keys *k);

/* Record the answer a row gives from now on (state, HTTP status, reply text). */
void	billing_set_reply(struct store_send *row, enum store_send_state state, int status,
    const char *reply);

/* Due again in delay_sec, with the row's attempts counted (journal write). */
void	billing_postpone(const struct settings *s, struct store_send *row, long delay_sec);

/* Take the row's debit with its key: 0 debited, 1 answered (row final or fenced), -1 err. */
int	billing_step_debit(const struct settings *s, struct store_send *row,
    const struct billing_keys *k, enum billing_mode mode, int unsure, struct mk_err *err);

/* Hold the row for the background after `reason`, due in delay_sec; out says 202 queued. */
void	billing_queue(const struct settings *s, struct store_send *row, const char *reason,
    long delay_sec, enum billing_mode mode, struct billing_result *out);

/* A request takes up a row it may drive again (a retry within the grace). */
void	billing_take_up(struct store_send *row);

/* Drive a row through debit, send and compensation as far as it goes now (billing.c). */
int	billing_drive(const struct settings *s, const struct mail_provider *mp,
    struct store_send *row, const struct mail_message *request, enum billing_mode mode,
    struct billing_result *out, struct mk_err *err);

/* The answer a row already gave, for a retry with its key. */
int	billing_replay(const struct store_send *row, struct billing_result *out, struct mk_err *err);

/* Claim the journal row for key (new, or the one a retry finds); 0 new, 1 found, -1 err. */
int	billing_begin(const struct settings *s, const char *key, const char *customer_id,
    const char *hash, const char *message, struct store_send *row, struct mk_err *err);

#endif
