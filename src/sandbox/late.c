/* late.c: the effects of "late" faults, applied by one thread at their time, after the request was dropped. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "sandbox.h"

#define LATE_LOG_ANSWER_MAX	200	/* bytes of a skipped effect's answer in its log line */
#define LATE_TARGET_MAX		16	/* "ledger_credit" and a NUL, with room */

/*
 * A pending effect: a copy of the whole request (the request thread ends
 * long before the effect is due) and the handler's function that applies
 * it.  Pending effects live in this process's memory, not in SQLite: they
 * hold a function pointer, and the sandbox is one process (see faults.c).
 * A clean stop drops the pending ones, each logged; a crash loses them.
 * The list is kept sorted by due time; it holds at most a few thousand
 * (the faults armed), so a list is enough.
 */
struct late_effect {
	struct late_effect	*next;
	int64_t			 at_ms;		/* due, wall clock */
	char			 target[LATE_TARGET_MAX];
	fault_apply_fn		*apply;
	struct request		 req;		/* req.body points at body */
	char			 body[];
};

static pthread_mutex_t	 late_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t	 late_cond = PTHREAD_COND_INITIALIZER;	/* CLOCK_REALTIME, as at_ms */
static struct late_effect *late_head;
static pthread_t	 late_tid;
static int		 late_running;
static int		 late_stopping;
static _Atomic int64_t	 late_count;	/* applied since the start or the last reset */

int
late_queue(const char *target, const struct request *req, fault_apply_fn *apply, int64_t at_ms)
{
	struct late_effect	*e, **pp;

	if ((e = malloc(sizeof(*e) + req->body_len + 1)) == NULL) {
		log_error("sandbox: late %s dropped: out of memory", target);
		return -1;
	}
	e->next = NULL;
	e->at_ms = at_ms;
	snprintf(e->target, sizeof(e->target), "%s", target);
	e->apply = apply;
	memcpy(&e->req, req, sizeof(e->req));
	memcpy(e->body, req->body, req->body_len);
	e->body[req->body_len] = '\0';
	e->req.body = e->body;

	pthread_mutex_lock(&late_lock);
	if (!late_running || late_stopping) {
		pthread_mutex_unlock(&late_lock);
		log_warn("sandbox: late %s dropped: the late thread is not running", target);
		free(e);
		return -1;
	}
	for (pp = &late_head; *pp != NULL && (*pp)->at_ms <= at_ms; pp = &(*pp)->next)
		;
	e->next = *pp;
	*pp = e;
	pthread_cond_signal(&late_cond);
	pthread_mutex_unlock(&late_lock);
	return 0;
}

/* Run one effect as its request would have run now, and log what it did. */
static void
late_apply(struct late_effect *e)
{
	struct response	resp;

	memset(&resp, 0, sizeof(resp));
	buf_init(&resp.body, RESPONSE_MAX);
	if (e->apply(&e->req, &resp)) {
		atomic_fetch_add(&late_count, 1);
		log_info("sandbox: late %s applied (%d)", e->target, resp.status);
	} else
		log_info("sandbox: late %s skipped (its answer: %d %.*s)", e->target, resp.status,
		    LATE_LOG_ANSWER_MAX, resp.body.data != NULL ? resp.body.data : "");
	buf_free(&resp.body);
}

/* Drop every pending effect, logging each with why. */
static void
late_drop_all(const char *why)
{
	struct late_effect	*e, *next;

	pthread_mutex_lock(&late_lock);
	e = late_head;
	late_head = NULL;
	pthread_mutex_unlock(&late_lock);
	for (; e != NULL; e = next) {
		next = e->next;
		log_info("sandbox: late %s skipped: %s before it was due", e->target, why);
		free(e);
	}
}

static void *
late_main(void *arg)
{
	struct late_effect	*e;
	struct timespec		 until;

	(void)arg;
	pthread_mutex_lock(&late_lock);
	while (!late_stopping) {
		if (late_head == NULL) {
			pthread_cond_wait(&late_cond, &late_lock);
			continue;
		}
		if (state_now_ms() < late_head->at_ms) {
			until.tv_sec = (time_t)(late_head->at_ms / 1000);
			until.tv_nsec = (long)(late_head->at_ms % 1000) * 1000000L;
			pthread_cond_timedwait(&late_cond, &late_lock, &until);
			continue;	/* due now, or woken by an earlier one or a stop */
		}
		e = late_head;
		late_head = e->next;
		pthread_mutex_unlock(&late_lock);
		late_apply(e);
		free(e);
		pthread_mutex_lock(&late_lock);
	}
	pthread_mutex_unlock(&late_lock);
	state_close();
	return NULL;
}

int
late_start(void)
{
	if (pthread_create(&late_tid, NULL, late_main, NULL) != 0)
		return -1;
	pthread_mutex_lock(&late_lock);
	late_running = 1;
	pthread_mutex_unlock(&late_lock);
	return 0;
}

void
late_stop(void)
{
	pthread_mutex_lock(&late_lock);
	if (!late_running) {
		pthread_mutex_unlock(&late_lock);
		return;
	}
	late_stopping = 1;
	pthread_cond_signal(&late_cond);
	pthread_mutex_unlock(&late_lock);
	pthread_join(late_tid, NULL);
	late_drop_all("the sandbox stopped");
	pthread_mutex_lock(&late_lock);
	late_running = 0;
	pthread_mutex_unlock(&late_lock);
}

void
late_clear(void)
{
	late_drop_all("POST /admin/reset");
	atomic_store(&late_count, 0);
}

int64_t
late_applied(void)
{
	return atomic_load(&late_count);
}
