/* store_usage.h: the usage journal — one row per AI request, from hold to billed (store_usage.c: holds; store_usage_bill.c: the outbox and the meter's clears; see store.h, usage.h). */
#ifndef MAILKIT_STORE_USAGE_H
#define MAILKIT_STORE_USAGE_H

#include <time.h>

#include "err.h"

struct settings;

#define STORE_USAGE_KEY_MAX	65	/* 64 hex digits + NUL (billing_key_base) */
#define STORE_USAGE_LEASE_SEC	60	/* an outbox claim; a hold's lease is the caller's
					   (a claim of a process gone from this host ends at once) */
#define STORE_USAGE_DUE_SLACK	64	/* due rows held by live claims read past in one look */
#define STORE_USAGE_HOST_MAX	256	/* a claim's hostname */
#define STORE_USAGE_KEEP_SEC	(48 * 3600)	/* billed rows are kept this long for replays */
#define STORE_USAGE_POLL_SEC	30	/* an ingested event's deduction is first looked for then */

/*
 * States (stored numbers).  A row is one /api/generate request:
 *   USAGE_HELD      its hold counts against the customer's room while its
 *                   owner's lease runs (the model is being asked);
 *   USAGE_SETTLED   the model answered: `tokens` used, the answer stored
 *                   for replays, and its usage event is in the outbox
 *                   (not yet confirmed ingested);
 *   USAGE_INGESTED  Dodo confirmed the event (ingest 200 or GET /events/{id});
 *   USAGE_DEBITED   billed by the fallback ledger debit instead (an event too
 *                   old to ingest that never landed);
 *   USAGE_RELEASED  the model failed: nothing billed, the hold is gone.
 * Settled, ingested and debited rows count as unsettled usage until
 * `cleared` reaches `tokens` (the meter's deduction showed up, or was given
 * up on: usage.h).
 */
enum store_usage_state {
	USAGE_HELD = 0,
	USAGE_SETTLED = 1,
	USAGE_INGESTED = 2,
	USAGE_DEBITED = 3,
	USAGE_RELEASED = 10,
};

struct store_usage {
	char			 key[STORE_USAGE_KEY_MAX];
	char			 customer_id[128];
	char			 request_hash[STORE_USAGE_KEY_MAX];
	enum store_usage_state	 state;
	long			 hold;		/* tokens reserved at admission */
	long			 max_tokens;	/* completion tokens the model may use */
	long			 tokens;	/* tokens billed (prompt + completion), once settled */
	long			 prompt_tokens;
	long			 completion_tokens;
	long			 cleared;	/* of tokens, deducted by the meter (or given up) */
	char			 model[128];
	char			*answer;	/* the model's text (settled and after); owned */
	char			 billed_by[16];	/* "", "event", "ledger" or "unbilled" */
	long long		 created_ms;	/* the request */
	long long		 settled_ms;	/* the usage event's timestamp */
	time_t			 ingested_at;
	int			 attempts;	/* ingest tries */
	long long		 owner_token;	/* ours while we own the row */
};

/* What the admission saw (the numbers of the 402, and GET's billing view). */
struct store_usage_room {
	long	balance;	/* the balance read from Dodo for this request */
	long	overage_room;	/* overage_limit - current overage, >= 0 */
	long	unsettled;	/* usage not yet seen deducted */
	long	held;		/* live holds of other requests */
	long	available;	/* balance + overage_room - unsettled - held */
};

#define STORE_USAGE_OWNED	0	/* admitted: the caller owns a new hold; ask the model */
#define STORE_USAGE_FINAL	1	/* settled before: replay its answer */
#define STORE_USAGE_MISMATCH	2	/* same key, different request or customer */
#define STORE_USAGE_BUSY	3	/* a live request holds this key */
#define STORE_USAGE_REFUSED	4	/* not admitted: the hold is not covered (402) */

/*
 * The number of clears recorded so far for customer_id (a snapshot, taken
 * BEFORE the balance is read: clears after it count as still unsettled at
 * admission, because the balance read may predate their deduction).  >= 0,
 * or -1 with err.
 */
long long	store_usage_clear_seq(const struct settings *s, const char *customer_id,
		    struct mk_err *err);

/*
 * Admit a request, in ONE write transaction (so requests of any number of
 * processes are judged one after another):
 *   available = balance + overage_room - (unsettled usage of the customer
 *               + clears recorded after clear_seq) - (live holds)
 * and when available >= hold the row is inserted (or a released row, or a
 * hold whose owner's lease ran out, of the same key taken up again) as
 * USAGE_HELD with a lease of lease_sec, owned by the caller.  An existing
 * settled row of key is FINAL (out filled with its answer), another
 * customer or request_hash is MISMATCH, a live hold BUSY.  A refusal
 * leaves no row.  room (may be NULL) receives the figures.  Returns one of
 * STORE_USAGE_*, or -1 with err; out->answer is owned (store_usage_free)
 * after OWNED and FINAL only.
 */
int	store_usage_admit(const struct settings *s, const char *key, const char *customer_id,
	    const char *request_hash, long hold, long max_tokens, long balance,
	    long overage_room, long long clear_seq, long lease_sec, struct store_usage *out,
	    struct store_usage_room *room, struct mk_err *err);

/*
 * Settle the caller's hold: USAGE_SETTLED with the model's counts, the
 * answer and settled_ms (the event's timestamp), due in the outbox now,
 * let go.  0, or -1 (503; 409 when the row is no longer the caller's).
 */
int	store_usage_settle(const struct settings *s, struct store_usage *row, struct mk_err *err);

/* Release the caller's hold (the model failed: nothing billed).  0 / -1. */
int	store_usage_release(const struct settings *s, const struct store_usage *row,
	    struct mk_err *err);

/*
 * Claim up to max outbox rows: settled, due, not claimed by a live outbox
 * lease, oldest first; each gets owner_token and a STORE_USAGE_LEASE_SEC
 * lease.  rows receive them without the answer.  Returns how many, or -1.
 */
int	store_usage_outbox_take(const struct settings *s, struct store_usage *rows, int max,
	    struct mk_err *err);

/*
 * Drive one claimed outbox row on: to USAGE_INGESTED (confirmed) or
 * USAGE_DEBITED (billed_by "ledger" or "unbilled"; its tokens are then
 * also cleared, with a clear recorded under clear_id), or back to the
 * outbox due delay_sec from now (attempts counted).  Only the claim's
 * owner may write.  0 / -1.
 */
int	store_usage_ingested(const struct settings *s, const struct store_usage *row,
	    struct mk_err *err);
int	store_usage_debited(const struct settings *s, const struct store_usage *row,
	    const char *billed_by, const char *clear_id, struct mk_err *err);
int	store_usage_postpone(const struct settings *s, const struct store_usage *row,
	    long delay_sec, struct mk_err *err);

/*
 * Apply a meter deduction of amount tokens (ledger entry entry_id) to
 * customer_id's oldest uncleared settled or ingested usage, FIFO, capped at
 * the usage that exists.  Once per entry_id: 1 applied now, 0 seen
 * before, -1 on error.  *applied (may be NULL) gets the tokens cleared.
 */
int	store_usage_clear(const struct settings *s, const char *customer_id,
	    const char *entry_id, long amount, long *applied, struct mk_err *err);

/*
 * Usage ingested before `before` and still not cleared: give up waiting
 * for its deduction (the meter stopped at zero, or its webhooks and ledger
 * entries never showed); each row cleared is logged.  Also releases holds
 * whose lease ended (their process died).  Returns rows cleared or
 * released, or -1.
 */
int	store_usage_expire(const struct settings *s, time_t before, struct mk_err *err);

/*
 * Customers with usage ingested but not cleared whose poll is due (at most
 * max, into ids), with the oldest such usage's settled_ms in since_ms; each
 * is next due poll_sec from now.  Returns how many, or -1.
 */
int	store_usage_poll_due(const struct settings *s, long poll_sec, char (*ids)[128],
	    long long *since_ms, int max, struct mk_err *err);

/* customer_id's row whose key starts with prefix: 1 with out filled, 0 none, -1. */
int	store_usage_get(const struct settings *s, const char *customer_id, const char *prefix,
	    struct store_usage *out, struct mk_err *err);

const char	*store_usage_state_name(enum store_usage_state state);
void		 store_usage_free(struct store_usage *row);

#endif
