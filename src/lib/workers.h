/* workers.h: a few background threads of a process that run one pass every so often, or at once when woken. */
#ifndef MAILKIT_WORKERS_H
#define MAILKIT_WORKERS_H

#include <pthread.h>

#define WORKERS_MAX	16	/* threads one pool runs at most */

/*
 * A pool: its threads each call pass(arg) in a loop, sleeping poll_ms
 * between passes unless woken (workers_wake).  A wake that comes while
 * every thread is in a pass is kept, so the next pass starts at once.
 * Define one with WORKERS_INIT; the fields are the pool's own.
 */
struct workers {
	pthread_mutex_t	 lock;
	pthread_cond_t	 wake;
	pthread_t	 threads[WORKERS_MAX];
	int		 nthreads, stopping, woken;
	long		 poll_ms;
	void		(*pass)(void *);
	void		*arg;
};

#define WORKERS_INIT	{ .lock = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER }

/*
 * Start n threads (at most WORKERS_MAX; n <= 0 starts none) running
 * pass(arg) every poll_ms.  0, or -1 when n > 0 and no thread could be
 * started.
 */
int	workers_start(struct workers *w, long n, long poll_ms, void (*pass)(void *), void *arg);

/* Stop and join the threads (each finishes the pass in hand). */
void	workers_stop(struct workers *w);

/* Make one thread start a pass now. */
void	workers_wake(struct workers *w);

#endif
