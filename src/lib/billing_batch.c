/* billing_batch.c: a batch of sends, its credits reserved all or nothing under one key, then each sent as one send is. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "billing.h"
#include "billing_int.h"
#include "clock.h"
#include "digest.h"
#include "dodo.h"
#include "log.h"
#include "settings.h"
#include "store.h"

/* One message of a batch in billing_send_batch(). */
struct billing_item {
	struct store_send	 row;
	json_object		*mj;		/* the message as the journal keeps it */
	int			 owned;		/* we own row and have not settled it yet */
	int			 fresh;		/* owned, debited by this call or before a void: never sent */
	int			 done;		/* answered: out or errs filled */
};

/* A replayed refusal that was the whole batch's (its reservation), not one message's. */
static int
billing_batch_refusal(const struct store_send *row)
{
	return row->state == SEND_REJECTED || row->state == SEND_VOIDING ||
	    row->state == SEND_VOIDED || row->status == 402;
}

/*
 * Undo the reservation of a batch refused with err: every message this call
 * debited (none was sent) gets its credits back, now for a final refusal
 * (4xx), or by the void's fence unless the client retries within
 * SEND_VOID_GRACE_SEC (5xx, 409: the retry takes them up again).
 */
static void
billing_batch_undo(const struct settings *s, const struct mail_provider *mp,
    const struct mail_message *msgs, struct billing_item *it, size_t n,
    const struct mk_err *err)
{
	struct billing_result	out;
	struct mk_err		derr;

	for (size_t j = 0; j < n; j++) {
		if (!it[j].owned)
			continue;
		it[j].owned = 0;
		if (!it[j].fresh) {
			billing_postpone(s, &it[j].row, 0);
			continue;
		}
		if (err->status < 500 && err->status != 409) {
			billing_set_reply(&it[j].row, SEND_REFUNDING, err->status, err->msg);
			if (store_send_save(s, &it[j].row, &derr) == 0)
				billing_drive(s, mp, &it[j].row, &msgs[j], BILLING_REQUEST, &out,
				    &derr);
			continue;
		}
		billing_set_reply(&it[j].row, SEND_VOIDING, err->status >= 500 ? err->status : 503,
		    BILLING_NOT_CHARGED_MSG);
		billing_postpone(s, &it[j].row, s->void_grace_sec);
	}
}

int
billing_send_batch(const struct settings *s, const struct mail_provider *mp,
    const char *customer_id, const char *client_key, const struct mail_message *msgs,
    size_t n, struct billing_result *out, struct mk_err *errs, struct mk_err *err)
{
	struct billing_item	*it;
	struct billing_keys	 k;
	json_object		*all;
	char			 base[STORE_SEND_KEY_MAX], hash[STORE_SEND_KEY_MAX];
	char			 key[STORE_SEND_KEY_MAX], index[32];
	long long		 start = clock_ms();
	int			 rc = -1, partial = 0;
	size_t			 i;

	if (n == 0 || billing_key_base(customer_id, client_key, base, sizeof base) == -1)
		return mk_fail(err, 500, "cannot derive an idempotency key");
	if ((it = calloc(n, sizeof *it)) == NULL)
		return mk_fail(err, 503, "out of memory");
	memset(out, 0, n * sizeof *out);
	memset(errs, 0, n * sizeof *errs);
	all = json_object_new_array();
	for (i = 0; i < n; i++) {
		it[i].mj = billing_message_json(&msgs[i]);
		json_object_array_add(all, json_object_get(it[i].mj));
	}
	/* every message's row carries the hash of the whole batch: any change is a 409 */
	hash[0] = '\0';
	if (client_key != NULL && billing_sha256(customer_id, json_object_to_json_string_ext(all,
	    BILLING_JSON_FLAGS), hash, sizeof hash) == -1) {
		mk_fail(err, 500, "cannot hash the request");
		goto out;
	}
	/*
	 * 1. The reservation: each message's row, and its debit (one per
	 * message, for its recipients), in order, before anything is sent.  The
	 * first refusal undoes the debits taken and refuses the whole batch.
	 * Once a message may have gone out already (a row the background took
	 * up after a crash, or queued by an earlier answer), the batch can no
	 * longer be all or nothing: from then on each message answers for
	 * itself, truthfully.
	 */
	for (i = 0; i < n; i++) {
		struct billing_item	*m = &it[i];
		int			 r;

		snprintf(index, sizeof index, "batch %zu", i);
		if (billing_sha256(base, index, key, sizeof key) == -1) {
			mk_fail(&errs[i], 500, "cannot derive an idempotency key");
			r = -1;
		} else {
			billing_email_id(key, out[i].id);
			r = billing_begin(s, key, customer_id, hash, json_object_to_json_string_ext(
			    m->mj, BILLING_JSON_FLAGS), &m->row, &errs[i]);
		}
		if (r == STORE_SEND_FINAL) {
			m->done = 1;
			if (billing_replay(&m->row, &out[i], &errs[i]) == 0) {
				partial = 1;
				continue;
			}
			if (!billing_batch_refusal(&m->row))
				continue;
		} else if (r == STORE_SEND_OWNED) {
			m->owned = 1;
			billing_take_up(&m->row);
			m->fresh = m->row.state == SEND_NEW ||
			    (m->row.state == SEND_SENDING && m->row.status >= 500);
			if (m->row.state == SEND_SENDING && !m->fresh)
				partial = 1;	/* queued by an earlier answer: maybe sent */
			if (m->row.state == SEND_REFUNDING) {
				/* a refused batch's refund still owed: replay the refusal */
				m->owned = 0;
				m->done = 1;
				billing_drive(s, mp, &m->row, &msgs[i], BILLING_REQUEST, &out[i],
				    &errs[i]);
				if (errs[i].status != 402)
					continue;
			} else if (m->row.state != SEND_NEW)
				continue;
			else {
				billing_keys(m->row.key, &k);
				if (billing_step_debit(s, &m->row, &k, BILLING_REQUEST,
				    !m->row.inserted, &errs[i])) {
					m->row.state = SEND_SENDING;
					continue;
				}
				m->owned = 0;	/* billing_step_debit recorded it */
				m->done = 1;
			}
		} else
			m->done = 1;
		if (partial)
			continue;
		/* the batch is refused: nothing of it was sent, nothing stays charged */
		*err = errs[i];
		billing_batch_undo(s, mp, msgs, it, i, err);
		goto out;
	}
	/*
	 * 2. Each message sent, under its own keys, as billing_send() sends one.
	 * The batch's upstream calls share the request's REQUEST_TIMEOUT_MS: a
	 * message reached when most of it is spent is not sent now, where the
	 * deadline could cut its call short, but queued for the background.
	 */
	for (i = 0; i < n; i++) {
		if (it[i].done)
			continue;
		it[i].owned = 0;
		if (s->request_timeout_ms > 0 && clock_ms() - start >=
		    s->request_timeout_ms / 4 * 3) {
			billing_email_id(it[i].row.key, out[i].id);
			billing_queue(s, &it[i].row, "queued: the batch's time was spent", 0,
			    BILLING_REQUEST, &out[i]);
			continue;
		}
		if (billing_drive(s, mp, &it[i].row, &msgs[i], BILLING_REQUEST, &out[i],
		    &errs[i]) == 0)
			mk_err_clear(&errs[i]);	/* a queued send leaves the provider's error */
	}
	rc = 0;
out:
	for (i = 0; i < n; i++) {
		store_send_free(&it[i].row);
		json_object_put(it[i].mj);
	}
	json_object_put(all);
	free(it);
	return rc;
}

