/* upstream_loop.c: one libcurl multi handle per process, shared by every thread's transfers. */
#define _GNU_SOURCE		/* PTHREAD_ADAPTIVE_MUTEX_INITIALIZER_NP */
#include "config.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "clock.h"
#include "log.h"
#include "upstream_loop.h"

#define UPSTREAM_LOOP_SPARE	64	/* idle handles the pool keeps (~10 KiB each); a burst's
					 * extra handles are cleaned up as they come back */
#define UPSTREAM_LOOP_WAIT_MS	1000	/* longest poll() of a thread that does not keep the
					 * multi's timers; it re-checks its transfer then */
#define UPSTREAM_JOB_SOCKETS	2	/* sockets of one transfer at once (happy eyeballs) */
#define UPSTREAM_LOOP_TIMER_RUNS 4	/* timeout runs in a row when each asks for the next now */

/*
 * One thread's transfer in the shared multi handle.  Each thread polls the
 * sockets of its own transfer, as curl_easy_perform() would, and drives
 * the multi handle for them under the lock: no other thread sits between
 * a request and its answer.  A thread that finishes someone else's
 * transfer, or changes the sockets it waits on, writes that thread's
 * eventfd.  The oldest transfer's thread also keeps the multi's timers.
 */
struct upstream_job {
	struct upstream_handle	*h;
	CURLcode		 result;
	int			 done;
	curl_socket_t		 socks[UPSTREAM_JOB_SOCKETS];
	int			 what[UPSTREAM_JOB_SOCKETS];	/* CURL_POLL_IN/OUT/INOUT */
	int			 nsocks;
	int			 wake_fd;		/* this thread's eventfd */
	struct upstream_job	*prev, *next;		/* transfers in the multi, oldest first */
};

static struct {
	pthread_mutex_t		 lock;		/* guards the multi handle, the timer, the jobs */
	CURLM			*multi;
	int			 state;		/* 0: not made yet; 1: ready; -1: none (failed or stopped) */
	long long		 timer_due;	/* CLOCK_MONOTONIC ms the multi wants a timeout run; 0: none */
	struct upstream_job	*head, *tail;
	pthread_mutex_t		 pool_lock;	/* guards the pool */
	struct upstream_handle	*pool;
	int			 pool_len;
} upstream_loop = {
#ifdef PTHREAD_ADAPTIVE_MUTEX_INITIALIZER_NP
	/* held for a socket's worth of work: spinning a little beats sleeping */
	.lock = PTHREAD_ADAPTIVE_MUTEX_INITIALIZER_NP,
#else
	.lock = PTHREAD_MUTEX_INITIALIZER,
#endif
	.pool_lock = PTHREAD_MUTEX_INITIALIZER,
};

/* The job of the thread inside a curl call right now (callbacks run on it). */
static __thread struct upstream_job	*upstream_self;

/* This thread's eventfd, made on first use and kept for its life. */
static pthread_once_t	upstream_wake_once = PTHREAD_ONCE_INIT;
static pthread_key_t	upstream_wake_key;
static __thread int	upstream_wake_fd = -1;

static void
upstream_wake_close(void *p)
{
	close((int)(intptr_t)p - 1);
}

static void
upstream_wake_key_make(void)
{
	(void)pthread_key_create(&upstream_wake_key, upstream_wake_close);
}

static int
upstream_wake_fd_get(void)
{
	if (upstream_wake_fd >= 0)
		return upstream_wake_fd;
	if ((upstream_wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) == -1)
		return -1;
	pthread_once(&upstream_wake_once, upstream_wake_key_make);
	/* stored +1: a NULL value runs no destructor */
	(void)pthread_setspecific(upstream_wake_key, (void *)(intptr_t)(upstream_wake_fd + 1));
	return upstream_wake_fd;
}

/* Tell a waiting thread to look at its transfer again (not the caller's own). */
static void
upstream_job_notify(struct upstream_job *job)
{
	uint64_t	one = 1;

	if (job == upstream_self)
		return;
	while (write(job->wake_fd, &one, sizeof one) == -1 && errno == EINTR)
		;
}

/* CURLMOPT_SOCKETFUNCTION: which sockets a transfer waits on, and for what. */
static int
upstream_loop_socket_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
	struct upstream_job	*job = NULL;
	int			 i;

	(void)userp;
	(void)socketp;
	if (curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&job) != CURLE_OK || job == NULL)
		return 0;
	for (i = 0; i < job->nsocks && job->socks[i] != s; i++)
		;
	if (what == CURL_POLL_REMOVE) {
		if (i < job->nsocks) {
			job->nsocks--;
			job->socks[i] = job->socks[job->nsocks];
			job->what[i] = job->what[job->nsocks];
		}
	} else if (i < job->nsocks) {
		job->what[i] = what;
	} else if (job->nsocks < UPSTREAM_JOB_SOCKETS) {
		job->socks[job->nsocks] = s;
		job->what[job->nsocks] = what;
		job->nsocks++;
	}
	upstream_job_notify(job);
	return 0;
}

/* CURLMOPT_TIMERFUNCTION: when the multi wants CURL_SOCKET_TIMEOUT run. */
static int
upstream_loop_timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
	long long	old = upstream_loop.timer_due;

	(void)multi;
	(void)userp;
	upstream_loop.timer_due = timeout_ms < 0 ? 0 : clock_ms() + timeout_ms;
	/*
	 * Sooner than the timekeeper's poll() would end: wake it.  "Now" set
	 * from inside a curl call is run by that caller right after it.
	 */
	if (timeout_ms == 0 && upstream_self != NULL)
		return 0;
	if (upstream_loop.timer_due != 0 && (old == 0 || upstream_loop.timer_due < old) &&
	    upstream_loop.head != NULL)
		upstream_job_notify(upstream_loop.head);
	return 0;
}

/* Hand every finished transfer to its thread.  With the lock held. */
static void
upstream_loop_reap(void)
{
	CURLMsg			*msg;
	struct upstream_job	*job;
	CURL			*easy;
	CURLcode		 result;
	int			 left;

	while ((msg = curl_multi_info_read(upstream_loop.multi, &left)) != NULL) {
		if (msg->msg != CURLMSG_DONE)
			continue;
		/* msg is gone once the handle is removed: read it first */
		easy = msg->easy_handle;
		result = msg->data.result;
		job = NULL;
		curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&job);
		curl_multi_remove_handle(upstream_loop.multi, easy);
		if (job == NULL)
			continue;
		job->result = result;
		job->done = 1;
		upstream_job_notify(job);
	}
}

/* Run what is due: the sockets poll() found ready, and expired timers.  With the lock held. */
static void
upstream_loop_drive(const struct pollfd *pfd, int npfd)
{
	int	running, i, ev;

	for (i = 0; i < npfd; i++) {
		if (pfd[i].revents == 0)
			continue;
		ev = 0;
		if (pfd[i].revents & (POLLIN | POLLHUP))
			ev |= CURL_CSELECT_IN;
		if (pfd[i].revents & POLLOUT)
			ev |= CURL_CSELECT_OUT;
		if (pfd[i].revents & (POLLERR | POLLNVAL))
			ev |= CURL_CSELECT_ERR;
		curl_multi_socket_action(upstream_loop.multi, pfd[i].fd, ev, &running);
	}
	/* a timeout run may ask for another at once */
	for (i = 0; i < UPSTREAM_LOOP_TIMER_RUNS && upstream_loop.timer_due != 0 &&
	    clock_ms() >= upstream_loop.timer_due; i++) {
		upstream_loop.timer_due = 0;
		curl_multi_socket_action(upstream_loop.multi, CURL_SOCKET_TIMEOUT, 0, &running);
	}
	upstream_loop_reap();
}

/* Make the multi handle on first use; 0 if it is there.  With the lock held. */
static int
upstream_loop_ready(void)
{
	CURLM	*m;

	if (upstream_loop.state != 0)
		return upstream_loop.state == 1 ? 0 : -1;
	upstream_loop.state = -1;
	if ((m = curl_multi_init()) == NULL) {
		log_error("upstream: curl_multi_init failed: each transfer runs on its own");
		return -1;
	}
	if (curl_multi_setopt(m, CURLMOPT_SOCKETFUNCTION, upstream_loop_socket_cb) != CURLM_OK ||
	    curl_multi_setopt(m, CURLMOPT_TIMERFUNCTION, upstream_loop_timer_cb) != CURLM_OK) {
		log_error("upstream: cannot set the multi handle's callbacks: each transfer runs on its own");
		curl_multi_cleanup(m);
		return -1;
	}
	upstream_loop.multi = m;
	upstream_loop.state = 1;
	return 0;
}

static void
upstream_job_link(struct upstream_job *job)
{
	job->prev = upstream_loop.tail;
	job->next = NULL;
	if (upstream_loop.tail != NULL)
		upstream_loop.tail->next = job;
	else
		upstream_loop.head = job;
	upstream_loop.tail = job;
}

static void
upstream_job_unlink(struct upstream_job *job)
{
	int	was_head = upstream_loop.head == job;

	if (job->prev != NULL)
		job->prev->next = job->next;
	else
		upstream_loop.head = job->next;
	if (job->next != NULL)
		job->next->prev = job->prev;
	else
		upstream_loop.tail = job->prev;
	/* the next oldest keeps the timers from now: wake it if one is due before it looks */
	if (was_head && upstream_loop.head != NULL && upstream_loop.timer_due != 0 &&
	    upstream_loop.timer_due - clock_ms() < UPSTREAM_LOOP_WAIT_MS)
		upstream_job_notify(upstream_loop.head);
}

/* How long this job's thread may sleep in poll(): the timekeeper until the timer. */
static int
upstream_job_wait_ms(const struct upstream_job *job)
{
	long long	left;

	if (job != upstream_loop.head || upstream_loop.timer_due == 0)
		return UPSTREAM_LOOP_WAIT_MS;
	left = upstream_loop.timer_due - clock_ms();
	if (left <= 0)
		return 0;
	return left < UPSTREAM_LOOP_WAIT_MS ? (int)left : UPSTREAM_LOOP_WAIT_MS;
}

CURLcode
upstream_loop_perform(struct upstream_handle *h)
{
	struct upstream_job	job;
	struct pollfd		pfd[UPSTREAM_JOB_SOCKETS + 1];
	int			npfd, running, timeout, i;
	uint64_t		drained;

	memset(&job, 0, sizeof job);
	job.h = h;
	if ((job.wake_fd = upstream_wake_fd_get()) == -1)
		return curl_easy_perform(h->easy);
	pthread_mutex_lock(&upstream_loop.lock);
	if (upstream_loop_ready() == -1 ||
	    curl_easy_setopt(h->easy, CURLOPT_PRIVATE, &job) != CURLE_OK) {
		pthread_mutex_unlock(&upstream_loop.lock);
		return curl_easy_perform(h->easy);
	}
	upstream_self = &job;
	if (curl_multi_add_handle(upstream_loop.multi, h->easy) != CURLM_OK) {
		upstream_self = NULL;
		pthread_mutex_unlock(&upstream_loop.lock);
		return CURLE_FAILED_INIT;
	}
	upstream_job_link(&job);
	/* start it here: resolve, connect or take a cached connection, send */
	curl_multi_socket_action(upstream_loop.multi, CURL_SOCKET_TIMEOUT, 0, &running);
	upstream_loop_drive(NULL, 0);
	while (!job.done) {
		npfd = 0;
		for (i = 0; i < job.nsocks; i++) {
			pfd[npfd].fd = job.socks[i];
			pfd[npfd].events = (job.what[i] & CURL_POLL_IN ? POLLIN : 0) |
			    (job.what[i] & CURL_POLL_OUT ? POLLOUT : 0);
			pfd[npfd].revents = 0;
			npfd++;
		}
		pfd[npfd].fd = job.wake_fd;
		pfd[npfd].events = POLLIN;
		pfd[npfd].revents = 0;
		timeout = upstream_job_wait_ms(&job);
		upstream_self = NULL;
		pthread_mutex_unlock(&upstream_loop.lock);

		if (poll(pfd, (nfds_t)npfd + 1, timeout) > 0 && pfd[npfd].revents != 0)
			(void)!read(job.wake_fd, &drained, sizeof drained);

		pthread_mutex_lock(&upstream_loop.lock);
		upstream_self = &job;
		if (job.done)
			break;
		upstream_loop_drive(pfd, npfd);
	}
	upstream_job_unlink(&job);
	upstream_self = NULL;
	pthread_mutex_unlock(&upstream_loop.lock);
	/* a wake-up still pending for this transfer costs the next one a spurious turn, no more */
	return job.result;
}

struct upstream_handle *
upstream_loop_take(void)
{
	struct upstream_handle	*h;

	pthread_mutex_lock(&upstream_loop.pool_lock);
	if ((h = upstream_loop.pool) != NULL) {
		upstream_loop.pool = h->next;
		upstream_loop.pool_len--;
	}
	pthread_mutex_unlock(&upstream_loop.pool_lock);
	if (h != NULL) {
		h->next = NULL;
		return h;
	}
	if ((h = calloc(1, sizeof *h)) == NULL)
		return NULL;
	if ((h->easy = curl_easy_init()) == NULL) {
		free(h);
		return NULL;
	}
	return h;
}

static void
upstream_handle_free(struct upstream_handle *h)
{
	curl_easy_cleanup(h->easy);
	free(h);
}

void
upstream_loop_give(struct upstream_handle *h)
{
	if (h == NULL)
		return;
	pthread_mutex_lock(&upstream_loop.pool_lock);
	if (upstream_loop.pool_len < UPSTREAM_LOOP_SPARE) {
		h->next = upstream_loop.pool;
		upstream_loop.pool = h;
		upstream_loop.pool_len++;
		h = NULL;
	}
	pthread_mutex_unlock(&upstream_loop.pool_lock);
	if (h != NULL)
		upstream_handle_free(h);
}

void
upstream_loop_stop(void)
{
	struct upstream_handle	*h, *next;
	CURLM			*multi = NULL;

	pthread_mutex_lock(&upstream_loop.lock);
	/* transfers still in it (a thread that outlived the loop's users) keep it */
	if (upstream_loop.state == 1 && upstream_loop.head == NULL) {
		multi = upstream_loop.multi;
		upstream_loop.multi = NULL;
		upstream_loop.state = -1;	/* from now on, callers perform on their own */
	}
	pthread_mutex_unlock(&upstream_loop.lock);
	pthread_mutex_lock(&upstream_loop.pool_lock);
	h = upstream_loop.pool;
	upstream_loop.pool = NULL;
	upstream_loop.pool_len = 0;
	pthread_mutex_unlock(&upstream_loop.pool_lock);
	for (; h != NULL; h = next) {
		next = h->next;
		upstream_handle_free(h);
	}
	/* after the handles: the multi holds the connections they used */
	if (multi != NULL)
		curl_multi_cleanup(multi);
}
