/* store_webhook.c: webhook deliveries seen — at most one worker handles a webhook-id. */
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
static const char *const store_webhook_sql[SQL_COUNT] = {
	/* New id, or a claim left behind by a dead worker (lease expired). */
	[SQL_CLAIM] =
	    "INSERT INTO webhook_events (id, type, received_at, claimed_at)"
	    " VALUES (?1, ?2, ?3, ?3)"
	    " ON CONFLICT (id) DO UPDATE SET claimed_at = excluded.claimed_at"
	    " WHERE webhook_events.done_at IS NULL AND"
	    " (webhook_events.claimed_at IS NULL OR webhook_events.claimed_at <= ?4)",
	[SQL_CLAIM_STATE] =
	    "SELECT done_at IS NOT NULL FROM webhook_events WHERE id = ?1",
	[SQL_PRUNE] =
	    "DELETE FROM webhook_events WHERE received_at < ?1",
	[SQL_DONE] =
	    "UPDATE webhook_events SET done_at = ?2, claimed_at = NULL WHERE id = ?1",
	[SQL_RELEASE] =
	    "UPDATE webhook_events SET claimed_at = NULL"
	    " WHERE id = ?1 AND done_at IS NULL",
};

/* Drop ids past STORE_WEBHOOK_KEEP_SEC; failure only logs (it is housekeeping). */
static void
store_webhook_prune(struct store_handle *t, time_t now)
{
	sqlite3_stmt	*st;
	struct mk_err	 ignored;

	if ((st = store_stmt(t, SQL_PRUNE, store_webhook_sql, &ignored)) == NULL)
		return;
	sqlite3_bind_int64(st, 1, (sqlite3_int64)now - STORE_WEBHOOK_KEEP_SEC);
	(void)store_step_done(t, st, "pruning webhook ids", &ignored);
}

int
store_webhook_claim(const struct settings *s, const char *id, const char *type,
    struct mk_err *err)
{
	struct store_handle	*t STORE_HELD = NULL;
	sqlite3_stmt		*st;
	time_t			 now = time(NULL);
	int			 rc;

	if (id == NULL || *id == '\0' || strlen(id) >= STORE_ID_MAX)
		return mk_fail(err, 400, "invalid webhook id");
	if ((t = store_lock(s, err)) == NULL)
		return -1;
	if (t->claims++ % STORE_PRUNE_EVERY == 0)
		store_webhook_prune(t, now);

	if ((st = store_stmt(t, SQL_CLAIM, store_webhook_sql, err)) == NULL)
		return -1;
	store_bind_text(st, 1, id);
	store_bind_text(st, 2, type);
	sqlite3_bind_int64(st, 3, (sqlite3_int64)now);
	sqlite3_bind_int64(st, 4, (sqlite3_int64)now - STORE_WEBHOOK_LEASE_SEC);
	if (store_step_done(t, st, "claiming a webhook id", err) == -1)
		return -1;
	if (sqlite3_changes(t->db) > 0)
		return STORE_CLAIM_NEW;

	/* Someone has it: finished, or still working on it? */
	if ((st = store_stmt(t, SQL_CLAIM_STATE, store_webhook_sql, err)) == NULL)
		return -1;
	store_bind_text(st, 1, id);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		rc = sqlite3_column_int(st, 0) ? STORE_CLAIM_SEEN : STORE_CLAIM_BUSY;
	else if (rc == SQLITE_DONE)
		rc = STORE_CLAIM_BUSY;	/* pruned in between: let the sender retry */
	else {
		log_error("store: reading a webhook claim: %s", sqlite3_errmsg(t->db));
		rc = mk_fail(err, 503, "state store unavailable");
	}
	sqlite3_reset(st);
	return rc;
}

/* SQL_DONE / SQL_RELEASE on id. */
static int
store_webhook_update(const struct settings *s, enum store_sql which, const char *id,
    const char *what, struct mk_err *err)
{
	struct store_handle	*t STORE_HELD = NULL;
	sqlite3_stmt		*st;

	if ((t = store_lock(s, err)) == NULL ||
	    (st = store_stmt(t, which, store_webhook_sql, err)) == NULL)
		return -1;
	store_bind_text(st, 1, id);
	if (which == SQL_DONE)
		sqlite3_bind_int64(st, 2, (sqlite3_int64)time(NULL));
	return store_step_done(t, st, what, err);
}

int
store_webhook_done(const struct settings *s, const char *id, struct mk_err *err)
{
	return store_webhook_update(s, SQL_DONE, id, "finishing a webhook claim", err);
}

int
store_webhook_release(const struct settings *s, const char *id, struct mk_err *err)
{
	return store_webhook_update(s, SQL_RELEASE, id, "releasing a webhook claim", err);
}
