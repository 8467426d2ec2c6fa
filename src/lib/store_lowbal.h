/* store_lowbal.h: low-balance notices: credit.balance_low until a top-up clears it (see store.h). */
#ifndef MAILKIT_STORE_LOWBAL_H
#define MAILKIT_STORE_LOWBAL_H

#include <time.h>

#include "dodo.h"
#include "err.h"

struct settings;

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

#endif
