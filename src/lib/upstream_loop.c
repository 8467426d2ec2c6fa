/* upstream_loop.c: one libcurl multi handle per process, on a thread of its own, running every thread's transfers. */
#include "config.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "log.h"
#include "upstream_loop.h"

#define UPSTREAM_LOOP_SPARE	64	/* idle handles the pool keeps (~10 KiB each); a burst's
					 * extra handles are cleaned up as they come back */
#define UPSTREAM_LOOP_POLL_MS	1000	/* longest sleep of the loop with nothing due; a new
					 * transfer or a timer wakes it at once */

/* One caller waiting for its transfer. */
struct upstream_job {
	struct upstream_handle	*h;
	CURLcode		 result;
	int			 done;
	pthread_mutex_t		 lock;
	pthread_cond_t		 cond;
	struct upstream_job	*next;		/* in the loop's queue */
};

static struct {
	pthread_mutex_t		 lock;		/* guards everything below but `multi` */
	CURLM			*multi;		/* the loop thread's only, once started */
	pthread_t		 tid;
	int			 started;	/* 1: the thread runs; -1: it could not start, or stopped */
	int			 stopping;
	struct upstream_job	*queue, **queue_tail;	/* handed over, not yet added */
	struct upstream_handle	*pool;
	int			 pool_len;
} upstream_loop = {
	.lock = PTHREAD_MUTEX_INITIALIZER,
	.queue_tail = &upstream_loop.queue,
};

static void
upstream_job_finish(struct upstream_job *job, CURLcode result)
{
	pthread_mutex_lock(&job->lock);
	job->result = result;
	job->done = 1;
	pthread_cond_signal(&job->cond);
	pthread_mutex_unlock(&job->lock);
}

/* Add what was handed over since the last turn; 1 if the loop should end. */
static int
upstream_loop_admit(CURLM *multi, int *active)
{
	struct upstream_job	*job, *next;
	int			 stop;

	pthread_mutex_lock(&upstream_loop.lock);
	job = upstream_loop.queue;
	upstream_loop.queue = NULL;
	upstream_loop.queue_tail = &upstream_loop.queue;
	stop = upstream_loop.stopping;
	pthread_mutex_unlock(&upstream_loop.lock);

	for (; job != NULL; job = next) {
		next = job->next;
		if (curl_easy_setopt(job->h->easy, CURLOPT_PRIVATE, job) != CURLE_OK ||
		    curl_multi_add_handle(multi, job->h->easy) != CURLM_OK) {
			upstream_job_finish(job, CURLE_FAILED_INIT);
			continue;
		}
		(*active)++;
	}
	return stop && *active == 0;
}

/* Hand every finished transfer back to its caller. */
static void
upstream_loop_reap(CURLM *multi, int *active)
{
	CURLMsg			*msg;
	struct upstream_job	*job;
	CURL			*easy;
	CURLcode		 result;
	int			 left;

	while ((msg = curl_multi_info_read(multi, &left)) != NULL) {
		if (msg->msg != CURLMSG_DONE)
			continue;
		/* msg is gone once the handle is removed: read it first */
		easy = msg->easy_handle;
		result = msg->data.result;
		job = NULL;
		curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&job);
		curl_multi_remove_handle(multi, easy);
		(*active)--;
		if (job != NULL)
			upstream_job_finish(job, result);
	}
}

static void *
upstream_loop_run(void *arg)
{
	CURLM	*multi = arg;
	int	 active = 0, running;

	for (;;) {
		if (upstream_loop_admit(multi, &active))
			break;
		if (curl_multi_perform(multi, &running) != CURLM_OK)
			log_error("upstream loop: curl_multi_perform failed");
		upstream_loop_reap(multi, &active);
		/* returns early on socket activity, a due timer or a wakeup */
		if (curl_multi_poll(multi, NULL, 0, UPSTREAM_LOOP_POLL_MS, NULL) != CURLM_OK)
			log_error("upstream loop: curl_multi_poll failed");
	}
	return NULL;
}

/* Start the thread if it is not running; 0 if it runs.  Called with the lock held. */
static int
upstream_loop_start_locked(void)
{
	pthread_attr_t	attr;
	int		rc;

	if (upstream_loop.started != 0)
		return upstream_loop.started == 1 && !upstream_loop.stopping ? 0 : -1;
	upstream_loop.started = -1;
	if ((upstream_loop.multi = curl_multi_init()) == NULL) {
		log_error("upstream loop: curl_multi_init failed: transfers run on their own threads");
		return -1;
	}
	pthread_attr_init(&attr);
	/* libcurl's frames and a TLS handshake: far below this, touched pages only */
	(void)pthread_attr_setstacksize(&attr, 512 * 1024);
	rc = pthread_create(&upstream_loop.tid, &attr, upstream_loop_run, upstream_loop.multi);
	pthread_attr_destroy(&attr);
	if (rc != 0) {
		log_error("upstream loop: cannot start its thread: transfers run on their own threads");
		curl_multi_cleanup(upstream_loop.multi);
		upstream_loop.multi = NULL;
		return -1;
	}
	upstream_loop.started = 1;
	return 0;
}

CURLcode
upstream_loop_perform(struct upstream_handle *h)
{
	struct upstream_job	job;
	CURLM			*multi;

	memset(&job, 0, sizeof job);
	job.h = h;
	pthread_mutex_lock(&upstream_loop.lock);
	if (upstream_loop_start_locked() == -1) {
		pthread_mutex_unlock(&upstream_loop.lock);
		return curl_easy_perform(h->easy);
	}
	pthread_mutex_init(&job.lock, NULL);
	pthread_cond_init(&job.cond, NULL);
	*upstream_loop.queue_tail = &job;
	upstream_loop.queue_tail = &job.next;
	multi = upstream_loop.multi;
	pthread_mutex_unlock(&upstream_loop.lock);

	/* the one multi call made off the loop thread: documented as thread-safe */
	curl_multi_wakeup(multi);

	pthread_mutex_lock(&job.lock);
	while (!job.done)
		pthread_cond_wait(&job.cond, &job.lock);
	pthread_mutex_unlock(&job.lock);
	pthread_cond_destroy(&job.cond);
	pthread_mutex_destroy(&job.lock);
	return job.result;
}

struct upstream_handle *
upstream_loop_take(void)
{
	struct upstream_handle	*h;

	pthread_mutex_lock(&upstream_loop.lock);
	if ((h = upstream_loop.pool) != NULL) {
		upstream_loop.pool = h->next;
		upstream_loop.pool_len--;
	}
	pthread_mutex_unlock(&upstream_loop.lock);
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
	pthread_mutex_lock(&upstream_loop.lock);
	if (upstream_loop.pool_len < UPSTREAM_LOOP_SPARE) {
		h->next = upstream_loop.pool;
		upstream_loop.pool = h;
		upstream_loop.pool_len++;
		h = NULL;
	}
	pthread_mutex_unlock(&upstream_loop.lock);
	if (h != NULL)
		upstream_handle_free(h);
}

void
upstream_loop_stop(void)
{
	struct upstream_handle	*h, *next;
	int			 joined = 0;

	pthread_mutex_lock(&upstream_loop.lock);
	upstream_loop.stopping = 1;
	if (upstream_loop.started == 1) {
		pthread_mutex_unlock(&upstream_loop.lock);
		curl_multi_wakeup(upstream_loop.multi);
		pthread_join(upstream_loop.tid, NULL);
		joined = 1;
		pthread_mutex_lock(&upstream_loop.lock);
		upstream_loop.started = -1;	/* from now on, callers perform on their own */
	}
	h = upstream_loop.pool;
	upstream_loop.pool = NULL;
	upstream_loop.pool_len = 0;
	pthread_mutex_unlock(&upstream_loop.lock);
	for (; h != NULL; h = next) {
		next = h->next;
		upstream_handle_free(h);
	}
	/* after the handles: the multi holds the connections they used */
	if (joined) {
		curl_multi_cleanup(upstream_loop.multi);
		upstream_loop.multi = NULL;
	}
}
