/* err.h: the one failure record every library call fills, and its HTTP meaning. */
#ifndef MAILKIT_ERR_H
#define MAILKIT_ERR_H

#define MK_ERR_MSG_MAX 256

/*
 * Convention across the project: functions return 0 on success and -1 on
 * failure; on failure they fill a caller-supplied struct mk_err.  `status`
 * is the HTTP status the failure should produce for our own client, `msg`
 * is text safe to show that client (never a secret, never upstream bodies
 * verbatim), and `maybe_done` says the upstream may have acted even though
 * we saw a failure (a timeout after the request was sent).
 */
struct mk_err {
	int	status;
	int	maybe_done;
	char	msg[MK_ERR_MSG_MAX];
};

/* Fill err (which may be NULL) and return -1, so callers can `return mk_fail(...)`. */
int	mk_fail(struct mk_err *err, int status, const char *fmt, ...)
	    __attribute__((format(printf, 3, 4)));

/* Reset err to "no error". */
void	mk_err_clear(struct mk_err *err);

#endif
