/* workers.c: background threads that run a pass every poll_ms or when woken (workers.h). */
#include <time.h>

#include "workers.h"

void
workers_wake(struct workers *w)
{
	pthread_mutex_lock(&w->lock);
	w->woken = 1;
	pthread_cond_signal(&w->wake);
	pthread_mutex_unlock(&w->lock);
}

static void *
workers_loop(void *arg)
{
	struct workers	*w = arg;
	struct timespec	 until;

	for (;;) {
		pthread_mutex_lock(&w->lock);
		if (!w->stopping && !w->woken) {
			clock_gettime(CLOCK_REALTIME, &until);
			until.tv_sec += w->poll_ms / 1000;
			until.tv_nsec += (w->poll_ms % 1000) * 1000000L;
			if (until.tv_nsec >= 1000000000L) {
				until.tv_sec++;
				until.tv_nsec -= 1000000000L;
			}
			pthread_cond_timedwait(&w->wake, &w->lock, &until);
		}
		w->woken = 0;
		if (w->stopping) {
			pthread_mutex_unlock(&w->lock);
			break;
		}
		pthread_mutex_unlock(&w->lock);
		w->pass(w->arg);
	}
	return NULL;
}

int
workers_start(struct workers *w, long n, long poll_ms, void (*pass)(void *), void *arg)
{
	if (n > WORKERS_MAX)
		n = WORKERS_MAX;
	pthread_mutex_lock(&w->lock);
	w->poll_ms = poll_ms;
	w->pass = pass;
	w->arg = arg;
	w->stopping = 0;
	while (w->nthreads < n &&
	    pthread_create(&w->threads[w->nthreads], NULL, workers_loop, w) == 0)
		w->nthreads++;
	pthread_mutex_unlock(&w->lock);
	return n > 0 && w->nthreads == 0 ? -1 : 0;
}

void
workers_stop(struct workers *w)
{
	int	n;

	pthread_mutex_lock(&w->lock);
	w->stopping = 1;
	pthread_cond_broadcast(&w->wake);
	n = w->nthreads;
	w->nthreads = 0;
	pthread_mutex_unlock(&w->lock);
	for (int i = 0; i < n; i++)
		pthread_join(w->threads[i], NULL);
}
