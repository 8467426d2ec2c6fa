/* store.h: MailKit's own durable state in SQLite — the handle; one header per concern below. */
#ifndef MAILKIT_STORE_H
#define MAILKIT_STORE_H

#include <stddef.h>

#include "err.h"
#include "store_keys.h"
#include "store_lowbal.h"
#include "store_send.h"
#include "store_webhook.h"
#include "store_usage.h"

struct settings;

#define STORE_PRUNE_EVERY	100		/* prune old rows on 1 insert in this many per process */

/*
 * The store is one SQLite file (MAILKIT_DB) shared by every worker, one
 * module per concern: store_webhook.h (webhook ids handled once),
 * store_lowbal.h (low-balance notices), store_send.h (the send journal),
 * store_keys.h (API keys and key claims), store_usage.h (the holds journal
 * and usage outbox of /api/generate).
 *
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

#endif
