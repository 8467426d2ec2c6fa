/* log.h: one-line log records to a file or stderr, shared by every program. */
#ifndef MAILKIT_LOG_H
#define MAILKIT_LOG_H

/*
 * Records look like `2026-11-21T12:00:00Z send.fcgi[1234] warn: text` and are
 * written with a single write(2) on an O_APPEND descriptor, so concurrent
 * worker processes never interleave within a line.  Never pass secrets.
 */

/* Open `path` for appending (NULL or "" keeps stderr).  Returns 0 / -1. */
int	log_init(const char *progname, const char *path);

void	log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void	log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void	log_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Log at error level and exit(1).  Only for start-up failures, never for bad input. */
void	fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

#endif
