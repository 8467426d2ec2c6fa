/* valid.c: allowlist checks for client-supplied values. */
#include <string.h>

#include "valid.h"

#define DOMAIN_LABEL_MAX	63	/* RFC 1035 */

/* RFC 5322 atext: the characters a dot-atom local part may use. */
static int
valid_atext(unsigned char c)
{
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
		return 1;
	return c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL;
}

static int
valid_ldh(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	    (c >= '0' && c <= '9') || c == '-';
}

int
valid_email(const char *addr)
{
	const char	*at, *p, *label;
	size_t		 len, labels = 0;

	if (addr == NULL || (len = strlen(addr)) == 0 || len > EMAIL_MAX)
		return 0;
	if ((at = strrchr(addr, '@')) == NULL || at == addr ||
	    (size_t)(at - addr) > EMAIL_LOCAL_MAX)
		return 0;
	/* local part: dot-atom, no leading, trailing or double dots */
	for (p = addr; p < at; p++) {
		if (*p == '.') {
			if (p == addr || p + 1 == at || p[1] == '.')
				return 0;
		} else if (!valid_atext((unsigned char)*p))
			return 0;
	}
	/* domain: at least two LDH labels, none starting or ending with '-' */
	for (label = p = at + 1;; p++) {
		if (*p == '.' || *p == '\0') {
			size_t n = p - label;

			if (n == 0 || n > DOMAIN_LABEL_MAX || label[0] == '-' || p[-1] == '-')
				return 0;
			labels++;
			if (*p == '\0')
				break;
			label = p + 1;
		} else if (!valid_ldh((unsigned char)*p))
			return 0;
	}
	return labels >= 2;
}

int
valid_header_text(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (s[i] == '\r' || s[i] == '\n' || s[i] == '\0')
			return 0;
	return 1;
}

int
valid_customer_id(const char *id)
{
	size_t	n;

	if (id == NULL)
		return 0;
	for (n = 0; id[n] != '\0'; n++) {
		unsigned char c = id[n];

		if (n >= CUSTOMER_ID_MAX || !(valid_ldh(c) || c == '_'))
			return 0;
	}
	return n > 0;
}

int
valid_idempotency_key(const char *key)
{
	size_t	n;

	if (key == NULL)
		return 0;
	for (n = 0; key[n] != '\0'; n++)
		if (n >= IDEMPOTENCY_KEY_MAX || (unsigned char)key[n] < 0x21 ||
		    (unsigned char)key[n] > 0x7e)
			return 0;
	return n > 0;
}

int
valid_utf8(const char *s, size_t len)
{
	const unsigned char	*p = (const unsigned char *)s;
	size_t			 i = 0;

	while (i < len) {
		unsigned char	c = p[i];
		size_t		n;
		unsigned char	lo = 0x80, hi = 0xbf;	/* range of the second byte */

		if (c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf)
			n = 1;
		else if (c >= 0xe0 && c <= 0xef) {
			n = 2;
			if (c == 0xe0)
				lo = 0xa0;	/* overlong */
			else if (c == 0xed)
				hi = 0x9f;	/* surrogates */
		} else if (c >= 0xf0 && c <= 0xf4) {
			n = 3;
			if (c == 0xf0)
				lo = 0x90;	/* overlong */
			else if (c == 0xf4)
				hi = 0x8f;	/* above U+10FFFF */
		} else
			return 0;
		if (len - i <= n || p[i + 1] < lo || p[i + 1] > hi)
			return 0;
		for (size_t k = 2; k <= n; k++)
			if (p[i + k] < 0x80 || p[i + k] > 0xbf)
				return 0;
		i += n + 1;
	}
	return 1;
}
