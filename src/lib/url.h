/* url.h: building upstream URLs safely and reading query strings. */
#ifndef MAILKIT_URL_H
#define MAILKIT_URL_H

#include <stddef.h>

struct buf;

/*
 * Write `tmpl` to dst, replacing each "{}" with the next `const char *`
 * argument percent-encoded as exactly one path segment: every byte outside
 * [A-Za-z0-9_~-] is encoded, so '/', '?', '#', '%' and '.' in an id can never
 * change the upstream path.  Returns 0, or -1 if dst is too small.
 * Example: url_path(p, sizeof p, "/customers/{}", id).
 */
int	url_path(char *dst, size_t dstlen, const char *tmpl, ...);

/* Append s to b percent-encoded for a query component (application/x-www-form-urlencoded
 * style, space as %20).  Returns 0 / -1. */
int	url_encode_component(struct buf *b, const char *s);

/* Percent-decode src[0..len) into dst (NUL-terminated).  '+' is kept as '+'
 * unless plus_is_space.  Returns 0, or -1 on a bad escape, an encoded NUL or
 * a too-small dst. */
int	url_decode(const char *src, size_t len, char *dst, size_t dstlen, int plus_is_space);

/* Find `name` in a raw query or form body ("a=1&b=2") and decode its value
 * into dst.  Returns 0 if found, -1 if absent or undecodable. */
int	url_query_get(const char *query, const char *name, char *dst, size_t dstlen);

#endif
