/* store_keys.h: API keys and key claims (see store.h). */
#ifndef MAILKIT_STORE_KEYS_H
#define MAILKIT_STORE_KEYS_H

#include <time.h>

#include "err.h"

struct settings;

/* --- API keys (auth.h): only SHA-256 hashes, one active key per customer */

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

/* --- claims: the page's one-time right to receive a new customer's key */

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
/* How many claims store_claim_pending counts for email; -1 on error. */
long long	store_claim_count(const struct settings *s, const char *email, struct mk_err *err);

#endif
