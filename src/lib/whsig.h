/* whsig.h: Standard Webhooks signatures (the scheme Dodo Payments uses). */
#ifndef MAILKIT_WHSIG_H
#define MAILKIT_WHSIG_H

#include <stddef.h>
#include <time.h>

#define WHSIG_KEY_MAX		64	/* the spec's secrets are 24..64 bytes */
#define WHSIG_TOLERANCE_SEC	300	/* +-5 minutes, as the reference libraries */
#define WHSIG_SIGNATURE_MAX	64	/* "v1," + base64(32 bytes) + NUL */

struct whsig_key {
	unsigned char	bytes[WHSIG_KEY_MAX];
	size_t		len;
};

/*
 * Decode "whsec_<base64>" (the prefix is optional; missing '=' padding is
 * tolerated) into key.  Returns 0, or -1 for an empty, undecodable or
 * over-long secret.
 */
int	whsig_key_from_secret(const char *secret, struct whsig_key *key);

/* Write "v1,<base64 HMAC-SHA256(key, id.ts.body)>" to out.  0 / -1. */
int	whsig_sign(const struct whsig_key *key, const char *id, const char *timestamp,
	    const char *body, size_t body_len, char *out, size_t outlen);

/*
 * Verify a delivery exactly as received: id, timestamp (digits only, within
 * WHSIG_TOLERANCE_SEC of now) and a signature header of space-separated
 * "<version>,<base64>" items, any v1 item of which may match (compared in
 * constant time).  Returns 0 when valid, -1 with a short reason in why
 * (for logs; never contains the secret).
 */
int	whsig_verify(const struct whsig_key *key, const char *id, const char *timestamp,
	    const char *signature_header, const char *body, size_t body_len, time_t now,
	    char *why, size_t whylen);

#endif
