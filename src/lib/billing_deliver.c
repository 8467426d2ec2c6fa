/* billing_deliver.c: background delivery, threads that drive due sends until they are final. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <json-c/json.h>

#include "billing.h"
#include "billing_int.h"
#include "digest.h"
#include "dodo.h"
#include "log.h"
#include "settings.h"
#include "store.h"
#include "workers.h"

int
billing_deliver_due(const struct settings *s, const struct mail_provider *mp, time_t due_by,
    int max, struct billing_tally *t, struct mk_err *err)
{
	char	(*keys)[STORE_SEND_KEY_MAX];
	int	n;

	if (max <= 0)
		return 0;
	if ((keys = calloc((size_t)max, sizeof keys[0])) == NULL)
		return mk_fail(err, 503, "out of memory");
	/* the list first, then the rows: no statement stays open while rows move */
	if ((n = store_send_due(s, due_by, keys, max, err)) == -1) {
		free(keys);
		return -1;
	}
	for (int i = 0; i < n; i++) {
		struct store_send	row;
		struct billing_result	out;
		struct mk_err		derr;
		int			r;

		r = store_send_begin(s, keys[i], NULL, NULL, NULL, &row, &derr);
		if (r == STORE_SEND_OWNED) {
			log_info("send %.12s…: background try %d from state %s", row.key,
			    row.attempts + 1, store_send_state_name(row.state));
			billing_drive(s, mp, &row, NULL, BILLING_BACKGROUND, &out, &derr);
			if (row.state >= SEND_SENT)
				t->final++;
			else
				t->pending++;
		} else if (r == STORE_SEND_FINAL)
			t->final++;
		else if (r == STORE_SEND_BUSY)
			t->busy++;
		else if (r == -1 && derr.status != 404)
			t->failed++;
		store_send_free(&row);
	}
	free(keys);
	return n;
}

/*
 * The delivery threads of a process (workers.h).  A request that queues a
 * send wakes one, so its first retry does not wait for the poll.
 */
static struct workers	 billing_deliverer = WORKERS_INIT;
static const struct settings	*billing_deliver_settings;
static const struct mail_provider *billing_deliver_provider;

void
billing_deliver_wake(void)
{
	workers_wake(&billing_deliverer);
}

/* One pass of a delivery thread: the due rows, logged when any moved. */
static void
billing_deliver_pass(void *arg)
{
	struct billing_tally	t = { 0 };
	struct mk_err		err;

	(void)arg;
	if (billing_deliver_due(billing_deliver_settings, billing_deliver_provider, time(NULL),
	    BILLING_DELIVER_BATCH, &t, &err) == -1)
		log_warn("delivery: cannot read the journal (%s)", err.msg);
	else if (t.final + t.pending + t.failed > 0)
		log_info("delivery: %d final, %d still pending, %d busy, %d failed",
		    t.final, t.pending, t.busy, t.failed);
}

int
billing_deliver_start(const struct settings *s, const struct mail_provider *mp)
{
	billing_deliver_settings = s;
	billing_deliver_provider = mp;
	return workers_start(&billing_deliverer, s->delivery_threads, BILLING_DELIVER_POLL_MS,
	    billing_deliver_pass, NULL);
}

void
billing_deliver_stop(void)
{
	workers_stop(&billing_deliverer);
}
