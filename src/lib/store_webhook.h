/* store_webhook.h: webhook deliveries seen — at most one worker handles a webhook-id (see store.h). */
#ifndef MAILKIT_STORE_WEBHOOK_H
#define MAILKIT_STORE_WEBHOOK_H

#include "err.h"

struct settings;

#define STORE_WEBHOOK_KEEP_SEC	(72 * 3600)	/* Dodo retries for ~28 h (api-facts B.2); keep ids longer */
#define STORE_WEBHOOK_LEASE_SEC	120		/* a claim not finished by then is presumed dead (crash) */
#define STORE_ID_MAX		256		/* webhook ids: the request header's size */


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

#endif
