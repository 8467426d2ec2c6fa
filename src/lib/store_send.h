/* store_send.h: the send journal — one row per send request, driven to a final state. */
#ifndef MAILKIT_STORE_SEND_H
#define MAILKIT_STORE_SEND_H

#include <time.h>

#include "dodo.h"
#include "err.h"

struct settings;

#define STORE_SEND_LEASE_SEC	120		/* > the longest a send can take (3 upstream calls) */
#define STORE_SEND_KEEP_SEC	(48 * 3600)	/* final rows: > Resend's 24 h idempotency window */
#define STORE_SEND_REPLY_MAX	512		/* an email id or an error message */
#define STORE_SEND_KEY_MAX	65		/* 64 hex digits of SHA-256 + NUL */

/*
 * States.  The numbers are stored; final states are SEND_SENT and above,
 * and never change.  A row in a non-final state is either owned by a live
 * worker (owner_host, owner_pid, owner_token, lease_until) or free to be
 * taken up: by a retry of the same request, or by the background delivery
 * once its next_attempt_at has come (billing.h).  An owner on this host is
 * live while its process exists and its lease runs; one on another host
 * until its lease ends, so any number of hosts can drain one journal.
 */
enum store_send_state {
	SEND_NEW = 0,		/* recorded; the debit may or may not have reached Dodo */
	SEND_DEBITED = 1,	/* (rows of older versions) Dodo confirmed the debit */
	SEND_SENDING = 2,	/* debited; the provider's answer is awaited or unknown */
	SEND_REFUNDING = 3,	/* not sent, for good: the credit is owed back */
	SEND_VOIDING = 4,	/* answered "not charged": any debit under its key is refunded */
	SEND_SENT = 10,		/* final: the provider accepted; the debit stands */
	SEND_REFUNDED = 11,	/* final: failed and refunded; net zero */
	SEND_REJECTED = 12,	/* final: refused before any debit (402, 404, ...) */
	SEND_VOIDED = 13,	/* final: not accepted; any debit that landed was refunded */
	SEND_UNCONFIRMED = 14,	/* final: a provider without idempotency (SMTP) lost its
				 * answer to the message; maybe delivered, never retried;
				 * the debit stands */
};

/*
 * Journal hygiene: a row keeps the message body (html, text) only while it
 * may still be sent: the body is dropped when the row reaches a final state,
 * SEND_REFUNDING, or SEND_VOIDING with a final answer (status < 500).  The
 * recipients and subject stay, for GET /emails/{id}.  Final rows are deleted
 * STORE_SEND_KEEP_SEC after their last change.
 */
struct store_send {
	char			 key[STORE_SEND_KEY_MAX];
	char			 customer_id[128];
	char			 request_hash[STORE_SEND_KEY_MAX];
	enum store_send_state	 state;
	int			 status;		/* the answer's HTTP status, 0 if none yet */
	char			 reply[STORE_SEND_REPLY_MAX];	/* provider id (200) or error text */
	char			 email_id[128];		/* the provider's id, "" until known */
	int			 debited;		/* our debit stands at Dodo */
	char			 debit_entry[DODO_ID_MAX];	/* its entry id, "" if not told */
	int			 refunded;		/* our refund stands at Dodo */
	char			 refund_entry[DODO_ID_MAX];
	int			 attempts;		/* background tries so far */
	time_t			 unsure_at;		/* last provider call whose outcome was
							 * unknown (it may still land), 0 if none */
	time_t			 next_attempt_at;	/* when the background may take it up */
	char			*message;		/* JSON to resend from; owned, store_send_free() */
	time_t			 created_at;
	time_t			 updated_at;
	long long		 owner_token;		/* ours while we own the row */
	int			 inserted;		/* store_send_begin created it just now */
};

#define STORE_SEND_OWNED	0	/* the caller owns the row now: drive it on */
#define STORE_SEND_FINAL	1	/* the answer is final: replay status and reply */
#define STORE_SEND_MISMATCH	2	/* same key, different request */
#define STORE_SEND_BUSY		3	/* a live worker owns it */

/*
 * Record a send request under key, or join the existing one, in one
 * transaction.  A new key is inserted as SEND_NEW, owned by this process
 * and due at once (out->inserted set).  An existing row is compared
 * (customer and request_hash), replayed when its answer is final (a final
 * state, or SEND_VOIDING with a 4xx), reported busy while a live process
 * holds it (lease not expired and the owner pid alive), and otherwise taken
 * over.  message is stored on insert; with message NULL an absent key is an
 * error (404).  With customer_id NULL the caller is the background taking
 * up a known row: nothing is compared, and only a final state is FINAL (an
 * answered void still has its debit key to fence).  Returns one of
 * STORE_SEND_* with out filled, or -1.
 */
int	store_send_begin(const struct settings *s, const char *key, const char *customer_id,
	    const char *request_hash, const char *message, struct store_send *out,
	    struct mk_err *err);

/*
 * Write the mutable fields of the row we own (state, status, reply,
 * email_id, the ledger entries, attempts, unsure_at, next_attempt_at) now, renewing
 * the lease; a final state also releases the row.  Returns 0, or -1 when
 * the row is no longer ours (our lease expired and another worker took it
 * over) or the store failed: the caller must stop driving it.
 */
int	store_send_save(const struct settings *s, struct store_send *row, struct mk_err *err);

/*
 * store_send_save() of a final state without waiting for the write: the row
 * is queued and recorded within a few milliseconds, in one transaction with
 * the other threads' (store_send.c says what that means for retries and
 * crashes; a write that fails is retried while the lease lasts).  A
 * non-final state is written at once.  0 / -1 as store_send_save().
 */
int	store_send_finish(const struct settings *s, struct store_send *row,
	    struct mk_err *err);

/* Write the row's fields as store_send_save() does and let go of it: the
 * background may take it up delay_sec from now.  0 / -1. */
int	store_send_release(const struct settings *s, struct store_send *row, long delay_sec,
	    struct mk_err *err);

/*
 * The keys of up to max rows that are not final, not held by a live owner,
 * and due (next_attempt_at <= due_by), oldest due first, into keys.  The
 * list is read whole before the call returns, so the caller may then begin
 * each.  Returns how many, or -1.
 */
int	store_send_due(const struct settings *s, time_t due_by, char (*keys)[STORE_SEND_KEY_MAX],
	    int max, struct mk_err *err);

/* customer_id's row whose key starts with prefix (an email id, billing.h):
 * 1 with out filled (out->message owned), 0 if none, -1 on error. */
int	store_send_get(const struct settings *s, const char *customer_id, const char *prefix,
	    struct store_send *out, struct mk_err *err);

/*
 * customer_id's rows, newest first, up to limit, after the row whose key
 * starts with after_prefix (NULL: from the newest).  Calls cb per row, which
 * must not call store functions (the listing holds the handle); a non-zero
 * return stops.  Returns the number visited, or -1 (400 when after_prefix
 * names no row of the customer).
 */
int	store_send_page(const struct settings *s, const char *customer_id,
	    const char *after_prefix, int limit,
	    int (*cb)(const struct store_send *row, void *arg), void *arg, struct mk_err *err);

/*
 * Every row created at or after `since`, oldest first, read in one
 * transaction (a consistent snapshot, for reconciliation).  cb as for
 * store_send_page().  Returns the number visited, or -1.
 */
int	store_send_list(const struct settings *s, time_t since,
	    int (*cb)(const struct store_send *row, void *arg), void *arg, struct mk_err *err);

const char	*store_send_state_name(enum store_send_state state);
void		 store_send_free(struct store_send *row);

#endif
