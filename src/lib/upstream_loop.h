/* upstream_loop.h: one process-wide libcurl multi handle that every thread's transfers run on. */
#ifndef MAILKIT_UPSTREAM_LOOP_H
#define MAILKIT_UPSTREAM_LOOP_H

#include <curl/curl.h>

/*
 * Why: curl_easy_perform() gives every easy handle a private multi handle,
 * with its own socket hash, DNS cache and connection cache (~80 KiB), and
 * its own connections.  With a thread per request in flight that was most
 * of a busy program's memory.  Here all transfers of a process run on one
 * multi handle: one connection cache shared by every thread (keep-alive
 * connections go to whichever request needs one next), and easy handles
 * that live in a small pool instead of one per thread.
 *
 * Each thread still drives its own transfer, as curl_easy_perform() does:
 * it polls its transfer's sockets and runs the multi handle for them under
 * one lock, so no hand-over to another thread sits between a request and
 * its answer (a loop thread doing every transfer cost 30-50 us of CPU per
 * call in context switches).
 */

/* An easy handle with what upstream.c keeps beside it. */
struct upstream_handle {
	CURL			*easy;
	unsigned int		 config;	/* upstream.c's option generation it was set for */
	char			 errbuf[CURL_ERROR_SIZE];
	struct upstream_handle	*next;		/* in the pool */
};

/*
 * A handle from the pool, or a new one (config 0: no options set yet).
 * NULL when libcurl cannot make one.  Thread-safe.
 */
struct upstream_handle	*upstream_loop_take(void);

/*
 * Back to the pool, options and all, for the next caller.  The pool keeps
 * at most UPSTREAM_LOOP_SPARE handles; others are cleaned up.  Thread-safe.
 */
void	upstream_loop_give(struct upstream_handle *h);

/*
 * Run the transfer h->easy is set up for on the shared multi handle (made
 * on first use) and return when it is done: the result curl_easy_perform()
 * would give, with the handle's own timeouts.  If the multi handle cannot
 * be used (no memory, stopped), curl_easy_perform() runs it.  Thread-safe.
 */
CURLcode	upstream_loop_perform(struct upstream_handle *h);

/*
 * Free the pool and the multi handle with its connection cache.  Call once
 * no thread performs any more (at exit); a later call performs on its own.
 */
void	upstream_loop_stop(void);

#endif
