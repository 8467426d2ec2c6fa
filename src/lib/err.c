/* err.c: filling struct mk_err. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "err.h"

int
mk_fail(struct mk_err *err, int status, const char *fmt, ...)
{
	va_list	ap;

	if (err == NULL)
		return -1;
	err->status = status;
	err->maybe_done = 0;
	va_start(ap, fmt);
	vsnprintf(err->msg, sizeof err->msg, fmt, ap);
	va_end(ap);
	return -1;
}

void
mk_err_clear(struct mk_err *err)
{
	memset(err, 0, sizeof *err);
}
