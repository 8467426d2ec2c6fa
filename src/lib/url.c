/* url.c: percent-encoding for upstream paths and query strings. */
#include <stdarg.h>
#include <string.h>

#include "buf.h"
#include "url.h"

static const char hexdigits[] = "0123456789ABCDEF";

/* Path segments keep only what can never be read as structure. */
static int
url_segment_safe(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	    (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '~';
}

int
url_path(char *dst, size_t dstlen, const char *tmpl, ...)
{
	va_list		 ap;
	size_t		 n = 0;
	const char	*t, *arg;
	int		 rc = -1;

	va_start(ap, tmpl);
	for (t = tmpl; *t != '\0'; t++) {
		if (t[0] == '{' && t[1] == '}') {
			t++;
			if ((arg = va_arg(ap, const char *)) == NULL)
				goto out;
			for (; *arg != '\0'; arg++) {
				unsigned char c = *arg;

				if (url_segment_safe(c)) {
					if (n + 1 >= dstlen)
						goto out;
					dst[n++] = c;
				} else {
					if (n + 3 >= dstlen)
						goto out;
					dst[n++] = '%';
					dst[n++] = hexdigits[c >> 4];
					dst[n++] = hexdigits[c & 15];
				}
			}
			continue;
		}
		if (n + 1 >= dstlen)
			goto out;
		dst[n++] = *t;
	}
	rc = 0;
out:
	va_end(ap);
	if (dstlen > 0)
		dst[rc == 0 ? n : 0] = '\0';
	return rc;
}

int
url_encode_component(struct buf *b, const char *s)
{
	for (; *s != '\0'; s++) {
		unsigned char c = *s;
		char esc[3] = { '%', hexdigits[c >> 4], hexdigits[c & 15] };

		if (url_segment_safe(c) || c == '.') {
			if (buf_append(b, &c, 1) == -1)
				return -1;
		} else if (buf_append(b, esc, 3) == -1)
			return -1;
	}
	return 0;
}

static int
url_hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int
url_decode(const char *src, size_t len, char *dst, size_t dstlen, int plus_is_space)
{
	size_t	i, n = 0;

	for (i = 0; i < len; i++) {
		char c = src[i];

		if (c == '%') {
			int hi, lo;

			if (i + 2 >= len || (hi = url_hexval(src[i + 1])) < 0 ||
			    (lo = url_hexval(src[i + 2])) < 0)
				return -1;
			c = (char)(hi << 4 | lo);
			if (c == '\0')
				return -1;
			i += 2;
		} else if (c == '+' && plus_is_space)
			c = ' ';
		if (n + 1 >= dstlen)
			return -1;
		dst[n++] = c;
	}
	if (dstlen == 0)
		return -1;
	dst[n] = '\0';
	return 0;
}

int
url_query_get(const char *query, const char *name, char *dst, size_t dstlen)
{
	size_t		 namelen = strlen(name);
	const char	*p = query, *end, *eq;

	while (p != NULL && *p != '\0') {
		end = strchr(p, '&');
		if (end == NULL)
			end = p + strlen(p);
		eq = memchr(p, '=', end - p);
		if (eq != NULL && (size_t)(eq - p) == namelen && memcmp(p, name, namelen) == 0)
			return url_decode(eq + 1, end - eq - 1, dst, dstlen, 1);
		p = *end == '&' ? end + 1 : NULL;
	}
	return -1;
}
