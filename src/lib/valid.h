/* valid.h: allowlist checks for values that come from clients. */
#ifndef MAILKIT_VALID_H
#define MAILKIT_VALID_H

#include <stddef.h>

#define EMAIL_MAX		254	/* RFC 5321 path limit, minus the brackets */
#define EMAIL_LOCAL_MAX		64	/* RFC 5321 4.5.3.1.1 */
#define CUSTOMER_ID_MAX		64	/* Dodo ids are like cus_ + ~20 chars */
#define IDEMPOTENCY_KEY_MAX	256	/* Resend's documented maximum */

/*
 * Each returns 1 when the value is acceptable and 0 otherwise; none of them
 * allocate.  They are deliberately stricter than the RFCs: a value that
 * passes can be placed in a mail header, an SMTP envelope or a JSON body
 * without further escaping.
 */

/* addr-spec with a dot-atom local part and a dotted LDH domain (no quoted
 * strings, no comments, no IP literals); no CR, LF, NUL, space or control bytes. */
int	valid_email(const char *addr);
/* Text that may go into a mail header: no CR, LF or NUL in the first len bytes. */
int	valid_header_text(const char *s, size_t len);
/* Customer ids: 1..CUSTOMER_ID_MAX of [A-Za-z0-9_-]. */
int	valid_customer_id(const char *id);
/* Idempotency keys: 1..IDEMPOTENCY_KEY_MAX printable ASCII bytes (0x21-0x7e). */
int	valid_idempotency_key(const char *key);
/* Well-formed UTF-8 (RFC 3629) in the first len bytes: no overlong forms,
 * no surrogates, nothing above U+10FFFF. */
int	valid_utf8(const char *s, size_t len);

#endif
