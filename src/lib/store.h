/* store.h: MailKit's own durable state (webhook dedupe, low-balance notices) in SQLite. */
#ifndef MAILKIT_STORE_H
#define MAILKIT_STORE_H

#include <time.h>

#include "dodo.h"
#include "err.h"

struct settings;

#define STORE_WEBHOOK_KEEP_SEC	(72 * 3600)	/* Dodo retries for ~28 h (api-facts B.2); keep ids longer */
#define STORE_WEBHOOK_LEASE_SEC	120		/* a claim not finished by then is presumed dead (crash) */
#define STORE_PRUNE_EVERY	100		/* prune old rows on 1 insert in this many per process */
#define STORE_ID_MAX		256		/* webhook ids: the request header's size */

/*
 * Every function takes the settings for settings->db_path (MAILKIT_DB) and
 * works on the process's one handle, opened on first use, shared by its
 * threads under a lock held for the length of the call (store.c says why),
 * and closed at exit.  The schema is brought up to date by db.h migrations
 * when the handle is opened.  Failures are -1 with err->status 503 (the
 * state is unavailable: retrying later may work) unless noted.
 */

/* Open the handle now (programs call it in main to fail fast on a bad
 * MAILKIT_DB).  0 / -1. */
int	store_open(const struct settings *s, struct mk_err *err);

/*
 * Open, migrate and close the handle once: programs call it from their
 * init so a bad MAILKIT_DB stops them at start.  0, or -1 with a message
 * naming MAILKIT_DB in errbuf.
 */
int	store_check(const struct settings *s, char *errbuf, size_t errlen);

/* Close the handle (tests; reopening with another path; at exit). */
void	store_close(void);

/* --- webhook deliveries: at most one worker handles a webhook-id --- */

#define STORE_CLAIM_SEEN	0	/* handled before: acknowledge, do nothing */
#define STORE_CLAIM_NEW		1	/* the caller now owns it: handle, then _done or _release */
#define STORE_CLAIM_BUSY	2	/* another worker is handling it right now */

/*
 * Claim webhook `id` (of event `type`, kept for the record).  Returns
 * STORE_CLAIM_NEW when no one has it, or when a previous claim was neither
 * finished nor released within STORE_WEBHOOK_LEASE_SEC (its worker died);
 * STORE_CLAIM_SEEN when it was handled (store_webhook_done) before;
 * STORE_CLAIM_BUSY while another claim is live; -1 on error.  Ids are kept
 * STORE_WEBHOOK_KEEP_SEC; older ones are pruned now and then.
 */
int	store_webhook_claim(const struct settings *s, const char *id, const char *type,
	    struct mk_err *err);

/* Mark a claimed id handled: later deliveries of it are STORE_CLAIM_SEEN.  0 / -1. */
int	store_webhook_done(const struct settings *s, const char *id, struct mk_err *err);

/* Give up a claim whose handling failed, so the sender's retry is handled
 * afresh.  Does nothing to an id already done.  0 / -1. */
int	store_webhook_release(const struct settings *s, const char *id, struct mk_err *err);

/* --- low-balance notices (credit.balance_low until a top-up clears it) --- */

struct store_low_balance {
	char	available[DODO_AMOUNT_MAX];	/* decimal strings, as Dodo sent them */
	char	threshold[DODO_AMOUNT_MAX];
	time_t	notified_at;			/* when the balance went low (the event's time) */
};

/*
 * Record that customer_id's balance went low at time `at` (the event's
 * timestamp; 0 = now).  Webhooks arrive in any order, so a notice older than
 * the customer's last clear or last notice is ignored.  0 / -1.
 */
int	store_low_balance_set(const struct settings *s, const char *customer_id,
	    const char *available, const char *threshold, time_t at, const char *event_id,
	    struct mk_err *err);

/*
 * 1 when event_id is the event that opened the customer's current low-balance
 * period (the first credit.balance_low since the last clear), so its handler
 * sends the one notice of this downward crossing; 0 for any other event (a
 * repeat within the same period, or a stale one); -1 on error.  Call after
 * store_low_balance_set with the same event_id.
 */
int	store_low_balance_owner(const struct settings *s, const char *customer_id,
	    const char *event_id, struct mk_err *err);

/*
 * The customer's active (not cleared) notice: 1 with out filled, 0 if there
 * is none, -1 on error.
 */
int	store_low_balance_get(const struct settings *s, const char *customer_id,
	    struct store_low_balance *out, struct mk_err *err);

/*
 * Clear the customer's notice because credits were added at time `at`
 * (0 = now); a notice raised after `at` stays.  0 (also when there was
 * nothing to clear) / -1.
 */
int	store_low_balance_clear(const struct settings *s, const char *customer_id,
	    time_t at, struct mk_err *err);

/* --- the send journal: one row per send request, driven to a final state --- */

#define STORE_SEND_LEASE_SEC	120		/* > the longest a send can take (3 upstream calls) */
#define STORE_SEND_KEEP_SEC	(48 * 3600)	/* > Resend's 24 h idempotency window */
#define STORE_SEND_REPLY_MAX	512		/* an email id or an error message */
#define STORE_SEND_KEY_MAX	65		/* 64 hex digits of SHA-256 + NUL */

/*
 * States, in order.  A row in a non-final state is either owned by a live
 * worker (owner_pid, lease_until) or free to be resumed by a retry of the
 * same request or by `mailkit-admin reconcile`.  Final states never change.
 */
enum store_send_state {
	SEND_NEW,		/* recorded; the debit may or may not have reached Dodo */
	SEND_DEBITED,		/* Dodo confirmed the debit */
	SEND_SENDING,		/* the provider was called; outcome not yet known */
	SEND_REFUNDING,		/* the provider refused: the credit must be given back */
	SEND_SENT,		/* final: provider accepted; debit stands */
	SEND_REFUNDED,		/* final: refused and refunded; net zero */
	SEND_REJECTED,		/* final: refused before any debit (402, 404, ...) */
};

struct store_send {
	char			 key[STORE_SEND_KEY_MAX];
	char			 customer_id[128];
	char			 request_hash[STORE_SEND_KEY_MAX];
	enum store_send_state	 state;
	int			 status;		/* last reply's HTTP status, 0 if none */
	char			 reply[STORE_SEND_REPLY_MAX];	/* email id (200) or error text */
	char			 email_id[128];
	char			*message;		/* JSON to resend from; owned, store_send_free() */
	time_t			 created_at;
	time_t			 updated_at;
	long long		 owner_token;		/* ours while we own the row */
	int			 inserted;		/* store_send_begin created it just now */
};

#define STORE_SEND_OWNED	0	/* the caller owns the row now: drive it on */
#define STORE_SEND_FINAL	1	/* already final: replay status and reply */
#define STORE_SEND_MISMATCH	2	/* same key, different request */
#define STORE_SEND_BUSY		3	/* a live worker owns it */

/*
 * Record a send request under key, or join the existing one, in one
 * transaction.  A new key is inserted as SEND_NEW and owned by this process
 * (out->inserted set).
 * An existing row is compared (customer and request_hash), replayed when
 * final, reported busy while a live process holds it (lease not expired
 * and the owner pid alive), and otherwise taken over.  message is stored
 * on insert; with message NULL an absent key is an error (404) and with
 * request_hash NULL the request is not compared (resuming a known row).
 * Returns one of STORE_SEND_* with out filled, or -1.
 */
int	store_send_begin(const struct settings *s, const char *key, const char *customer_id,
	    const char *request_hash, const char *message, struct store_send *out,
	    struct mk_err *err);

/*
 * Move the row we own (from store_send_begin) to `state`, renewing the
 * lease; status/reply/email_id are stored when non-zero/non-NULL and copied
 * into row.  A final state also releases the row.  Returns 0, or -1 when
 * the row is no longer ours (our lease expired and another process took it
 * over) or the store failed: the caller must stop driving it.
 */
int	store_send_advance(const struct settings *s, struct store_send *row,
	    enum store_send_state state, int status, const char *reply, const char *email_id,
	    struct mk_err *err);

/*
 * store_send_advance() to a final state (SEND_SENT and after; others are
 * written at once) without waiting for the write: the state is queued and
 * recorded within a few milliseconds, in one transaction with the other
 * threads' (store.c says what that means for retries and crashes).  row is
 * updated as by store_send_advance().  Returns 0, or -1 when a state that
 * had to be written at once could not be.
 */
int	store_send_finish(const struct settings *s, struct store_send *row,
	    enum store_send_state state, int status, const char *reply, const char *email_id,
	    struct mk_err *err);

/* Let go of the row we own without changing its state (a failure a retry
 * can get past), recording the reply the client got.  0 / -1. */
int	store_send_release(const struct settings *s, struct store_send *row, int status,
	    const char *reply, struct mk_err *err);

/*
 * Keys of rows that are not final, not held by a live owner, and last
 * updated before `older_than`: the resolver's work list.  Calls cb for each
 * (a non-zero return stops).  Returns the number visited, or -1.
 */
int	store_send_pending(const struct settings *s, time_t older_than,
	    int (*cb)(const struct store_send *row, void *arg), void *arg, struct mk_err *err);

/* Every row created at or after `since`, oldest first, for reconciliation. */
int	store_send_list(const struct settings *s, time_t since,
	    int (*cb)(const struct store_send *row, void *arg), void *arg, struct mk_err *err);

const char	*store_send_state_name(enum store_send_state state);
void		 store_send_free(struct store_send *row);

/* --- API keys (auth.h): only SHA-256 hashes, one active key per customer --- */

#define STORE_KEY_ISSUED	0	/* the new key is recorded and active */
#define STORE_KEY_EXISTS	1	/* refused: the customer already has an active key */

struct store_key {
	long long	id;
	char		customer_id[128];
	char		key_hash[65];		/* hex SHA-256 */
	char		shown[32];		/* the first characters, for lists */
	char		source[32];		/* "webhook", "claim", "admin", ... */
	time_t		created_at;
	time_t		revoked_at;		/* 0 while active */
};

/*
 * Record key_hash as customer_id's active key, in one transaction.  With
 * rotate, the customer's active keys are revoked first; without it, an
 * existing active key wins (STORE_KEY_EXISTS), so concurrent issuers (two
 * webhooks, a webhook and the checkout return) end with exactly one key.
 * Returns STORE_KEY_ISSUED (with *id) or STORE_KEY_EXISTS, or -1.
 */
int	store_key_issue(const struct settings *s, const char *customer_id,
	    const char *key_hash, const char *shown, const char *source, int rotate,
	    long long *id, struct mk_err *err);

/* The key whose hash is key_hash: 1 with out filled (check out->revoked_at),
 * 0 if unknown, -1 on error. */
int	store_key_find(const struct settings *s, const char *key_hash, struct store_key *out,
	    struct mk_err *err);

/* Revoke every active key of customer_id.  Returns how many, or -1. */
int	store_key_revoke(const struct settings *s, const char *customer_id, struct mk_err *err);

/* Delete key `id` outright: undoes an issue whose delivery failed.  0 / -1. */
int	store_key_forget(const struct settings *s, long long id, struct mk_err *err);

/* 1 when customer_id has an active key (with `any`: has ever had a key,
 * revoked ones included), 0 if not, -1 on error. */
int	store_key_active(const struct settings *s, const char *customer_id, int any,
	    struct mk_err *err);

/* Every key of customer_id ("" = all customers), oldest first; cb's non-zero
 * return stops.  Returns the number visited, or -1. */
int	store_key_list(const struct settings *s, const char *customer_id,
	    int (*cb)(const struct store_key *key, void *arg), void *arg, struct mk_err *err);

/* --- claims: the page's one-time right to receive a new customer's key --- */

#define STORE_CLAIM_KEEP_SEC	(24 * 3600)	/* expired claims are pruned after this */
#define STORE_CLAIM_ISSUE_SEC	120		/* a taken claim's key is issued within this */

/* Record a claim (the token's hash) for checkout session_id bought by email
 * (compared without case), redeemable until expires_at.  0 / -1. */
int	store_claim_add(const struct settings *s, const char *token_hash,
	    const char *session_id, const char *email, time_t expires_at, struct mk_err *err);

/* Redeem a claim: 1 when it was pending, unexpired and made for email (it is
 * now used), 0 otherwise (unknown, used, expired, another email), -1 on error. */
int	store_claim_take(const struct settings *s, const char *token_hash, const char *email,
	    struct mk_err *err);

/* Make a taken claim pending again (its key could not be issued).  0 / -1. */
int	store_claim_give_back(const struct settings *s, const char *token_hash,
	    struct mk_err *err);

/* 1 when some claim made for email is pending and unexpired, or was taken
 * within STORE_CLAIM_ISSUE_SEC (its taker is issuing the key right now); 0
 * if none; -1 on error.  webhook.fcgi leaves such customers' keys to the taker. */
int	store_claim_pending(const struct settings *s, const char *email, struct mk_err *err);

#endif
