/* store_lowbal.c: low-balance notices — one per downward crossing, cleared by a top-up. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "db.h"
#include "log.h"
#include "settings.h"
#include "store.h"
#include "store_int.h"

/* This module's statements, in the slots store_int.h numbers. */
static const char *const store_lowbal_sql[SQL_COUNT] = {
	/* Newer than the last notice and than the last clear (a clear wins ties). */
	[SQL_LOW_SET] =
	    "INSERT INTO low_balance (customer_id, available, threshold, notified_at,"
	    " notice_event) VALUES (?1, ?2, ?3, ?4, ?5)"
	    " ON CONFLICT (customer_id) DO UPDATE SET available = excluded.available,"
	    " threshold = excluded.threshold, notified_at = excluded.notified_at,"
	    " notice_event = CASE WHEN low_balance.cleared_at IS NULL"
	    "  THEN coalesce(low_balance.notice_event, excluded.notice_event)"
	    "  ELSE excluded.notice_event END,"
	    " cleared_at = NULL"
	    " WHERE excluded.notified_at >= low_balance.notified_at AND"
	    " (low_balance.cleared_at IS NULL OR excluded.notified_at > low_balance.cleared_at)",
	[SQL_LOW_OWNER] =
	    "SELECT notice_event = ?2 FROM low_balance"
	    " WHERE customer_id = ?1 AND cleared_at IS NULL",
	[SQL_LOW_GET] =
	    "SELECT available, threshold, notified_at FROM low_balance"
	    " WHERE customer_id = ?1 AND cleared_at IS NULL",
	[SQL_LOW_CLEAR] =
	    "UPDATE low_balance SET cleared_at = ?2"
	    " WHERE customer_id = ?1 AND cleared_at IS NULL AND notified_at <= ?2",
};

int
store_low_balance_set(const struct settings *s, const char *customer_id,
    const char *available, const char *threshold, time_t at, const char *event_id,
    struct mk_err *err)
{
	struct store_handle	*t STORE_HELD = NULL;
	sqlite3_stmt		*st;

	if ((t = store_lock(s, err)) == NULL ||
	    (st = store_stmt(t, SQL_LOW_SET, store_lowbal_sql, err)) == NULL)
		return -1;
	store_bind_text(st, 1, customer_id);
	store_bind_text(st, 2, available);
	store_bind_text(st, 3, threshold);
	sqlite3_bind_int64(st, 4, (sqlite3_int64)(at != 0 ? at : time(NULL)));
	store_bind_text(st, 5, event_id);
	return store_step_done(t, st, "recording a low balance", err);
}

int
store_low_balance_owner(const struct settings *s, const char *customer_id,
    const char *event_id, struct mk_err *err)
{
	struct store_handle	*t STORE_HELD = NULL;
	sqlite3_stmt		*st;
	int			 rc;

	if ((t = store_lock(s, err)) == NULL ||
	    (st = store_stmt(t, SQL_LOW_OWNER, store_lowbal_sql, err)) == NULL)
		return -1;
	store_bind_text(st, 1, customer_id);
	store_bind_text(st, 2, event_id);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		rc = sqlite3_column_int(st, 0) == 1;
	else if (rc == SQLITE_DONE)
		rc = 0;
	else {
		log_error("store: reading a low-balance owner: %s", sqlite3_errmsg(t->db));
		rc = mk_fail(err, 503, "state store unavailable");
	}
	sqlite3_reset(st);
	return rc;
}


int
store_low_balance_get(const struct settings *s, const char *customer_id,
    struct store_low_balance *out, struct mk_err *err)
{
	struct store_handle	*t STORE_HELD = NULL;
	sqlite3_stmt		*st;
	int			 rc;

	memset(out, 0, sizeof(*out));
	if ((t = store_lock(s, err)) == NULL ||
	    (st = store_stmt(t, SQL_LOW_GET, store_lowbal_sql, err)) == NULL)
		return -1;
	store_bind_text(st, 1, customer_id);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		store_column_text(st, 0, out->available, sizeof(out->available));
		store_column_text(st, 1, out->threshold, sizeof(out->threshold));
		out->notified_at = (time_t)sqlite3_column_int64(st, 2);
		rc = 1;
	} else if (rc == SQLITE_DONE)
		rc = 0;
	else {
		log_error("store: reading a low balance: %s", sqlite3_errmsg(t->db));
		rc = mk_fail(err, 503, "state store unavailable");
	}
	sqlite3_reset(st);
	return rc;
}

int
store_low_balance_clear(const struct settings *s, const char *customer_id, time_t at,
    struct mk_err *err)
{
	struct store_handle	*t STORE_HELD = NULL;
	sqlite3_stmt		*st;

	if ((t = store_lock(s, err)) == NULL ||
	    (st = store_stmt(t, SQL_LOW_CLEAR, store_lowbal_sql, err)) == NULL)
		return -1;
	store_bind_text(st, 1, customer_id);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)(at != 0 ? at : time(NULL)));
	return store_step_done(t, st, "clearing a low balance", err);
}
