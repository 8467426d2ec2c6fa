/* digest.h: SHA-256 in hex, for API-key hashes and idempotency keys. */
#ifndef MAILKIT_DIGEST_H
#define MAILKIT_DIGEST_H

#include <stddef.h>

#define DIGEST_SHA256_HEX	65	/* 64 lower-case hex digits + NUL */
#define DIGEST_PARTS_MAX	4	/* pieces hashed as one message */

/* One piece of the message: len bytes at data (NUL bytes included as given). */
struct digest_part {
	const void	*data;
	size_t		 len;
};

/*
 * SHA-256 of the concatenation of n parts (n <= DIGEST_PARTS_MAX) as
 * lower-case hex into out.  The implementation is fetched from OpenSSL
 * once per process (an implicit fetch per call, as EVP_sha256() does,
 * costs more than hashing a short key).  0 / -1.
 */
int	digest_sha256_hex(const struct digest_part *parts, size_t n,
	    char out[DIGEST_SHA256_HEX]);

/* Lower-case hex of n bytes into out (2n + 1 bytes, NUL-terminated). */
void	digest_hex(const unsigned char *p, size_t n, char *out);

#endif
