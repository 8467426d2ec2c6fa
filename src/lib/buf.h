/* buf.h: growable byte buffers that refuse to grow past a ceiling. */
#ifndef MAILKIT_BUF_H
#define MAILKIT_BUF_H

#include <stddef.h>

/*
 * Every buffer is created with a maximum size; appends that would pass it
 * fail and leave the buffer unchanged.  `data` is NUL-terminated whenever it
 * is non-NULL, so text buffers can be used as C strings.  The buffer owns
 * `data`; buf_free() releases it.
 */
struct buf {
	char	*data;
	size_t	 len;
	size_t	 cap;
	size_t	 max;
};

void	buf_init(struct buf *b, size_t max);
int	buf_append(struct buf *b, const void *p, size_t n);	/* 0 / -1 */
int	buf_puts(struct buf *b, const char *s);		/* 0 / -1 */
int	buf_printf(struct buf *b, const char *fmt, ...)
	    __attribute__((format(printf, 2, 3)));		/* 0 / -1 */
/* Append text with & < > " ' escaped for HTML element and attribute context. */
int	buf_html(struct buf *b, const char *text);		/* 0 / -1 */
void	buf_reset(struct buf *b);	/* len = 0, memory kept for reuse */
void	buf_free(struct buf *b);	/* safe on a zeroed or freed buffer */

#endif
