/* billing_deliver.c: background delivery, threads that drive due sends until they are final. */
#include <errno.h>
#include <pthread.h>
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
 * The delivery threads of a process.  They sleep on `wake` between passes;
 * a request that queues a send wakes one, so its first retry does not wait
 * for the poll.
 */
#define BILLING_DELIVER_THREADS_MAX	16

static struct {
	pthread_mutex_t			 lock;
	pthread_cond_t			 wake;
	pthread_t			 threads[BILLING_DELIVER_THREADS_MAX];
	int				 nthreads, stopping;
	const struct settings		*settings;
	const struct mail_provider	*provider;
} billing_deliverer = {
	.lock = PTHREAD_MUTEX_INITIALIZER,
	.wake = PTHREAD_COND_INITIALIZER,
};

void
billing_deliver_wake(void)
{
	pthread_mutex_lock(&billing_deliverer.lock);
	pthread_cond_signal(&billing_deliverer.wake);
	pthread_mutex_unlock(&billing_deliverer.lock);
}

static void *
billing_deliver_loop(void *arg)
{
	struct billing_tally	t;
	struct mk_err		err;
	struct timespec		until;

	(void)arg;
	for (;;) {
		pthread_mutex_lock(&billing_deliverer.lock);
		if (billing_deliverer.stopping) {
			pthread_mutex_unlock(&billing_deliverer.lock);
			break;
		}
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += BILLING_DELIVER_POLL_MS / 1000;
		until.tv_nsec += (BILLING_DELIVER_POLL_MS % 1000) * 1000000L;
		if (until.tv_nsec >= 1000000000L) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&billing_deliverer.wake, &billing_deliverer.lock, &until);
		if (billing_deliverer.stopping) {
			pthread_mutex_unlock(&billing_deliverer.lock);
			break;
		}
		pthread_mutex_unlock(&billing_deliverer.lock);
		memset(&t, 0, sizeof t);
		if (billing_deliver_due(billing_deliverer.settings, billing_deliverer.provider,
		    time(NULL), BILLING_DELIVER_BATCH, &t, &err) == -1)
			log_warn("delivery: cannot read the journal (%s)", err.msg);
		else if (t.final + t.pending + t.failed > 0)
			log_info("delivery: %d final, %d still pending, %d busy, %d failed",
			    t.final, t.pending, t.busy, t.failed);
	}
	return NULL;
}

int
billing_deliver_start(const struct settings *s, const struct mail_provider *mp)
{
	long	want = s->delivery_threads;

	if (want > BILLING_DELIVER_THREADS_MAX)
		want = BILLING_DELIVER_THREADS_MAX;
	pthread_mutex_lock(&billing_deliverer.lock);
	billing_deliverer.settings = s;
	billing_deliverer.provider = mp;
	billing_deliverer.stopping = 0;
	while (billing_deliverer.nthreads < want &&
	    pthread_create(&billing_deliverer.threads[billing_deliverer.nthreads], NULL,
	    billing_deliver_loop, NULL) == 0)
		billing_deliverer.nthreads++;
	pthread_mutex_unlock(&billing_deliverer.lock);
	if (want > 0 && billing_deliverer.nthreads == 0)
		return -1;
	return 0;
}

void
billing_deliver_stop(void)
{
	int	n;

	pthread_mutex_lock(&billing_deliverer.lock);
	billing_deliverer.stopping = 1;
	pthread_cond_broadcast(&billing_deliverer.wake);
	n = billing_deliverer.nthreads;
	billing_deliverer.nthreads = 0;
	pthread_mutex_unlock(&billing_deliverer.lock);
	for (int i = 0; i < n; i++)
		pthread_join(billing_deliverer.threads[i], NULL);
}
