/* apikey.h: customer API keys and claim tokens: generation, hashing, parsing, comparing. */
#ifndef MAILKIT_APIKEY_H
#define MAILKIT_APIKEY_H

#include <stddef.h>

/*
 * A key is APIKEY_PREFIX followed by APIKEY_RANDOM_BYTES from RAND_bytes in
 * unpadded base64url: "mk_" + 43 characters.  Only its SHA-256 is stored:
 * 256 random bits need no salt or slow hash, since nobody can brute-force
 * the input.  Claim tokens (the page's one-time right to fetch a new key)
 * are built the same way with APIKEY_CLAIM_PREFIX.
 */
#define APIKEY_PREFIX		"mk_"
#define APIKEY_CLAIM_PREFIX	"mkc_"
#define APIKEY_RANDOM_BYTES	32
#define APIKEY_B64_LEN		43	/* unpadded base64url of 32 bytes */
#define APIKEY_MAX		64	/* buffer for a key or a claim token, with NUL */
#define APIKEY_HASH_HEX		65	/* 64 hex digits of SHA-256 + NUL */
#define APIKEY_SHOWN		12	/* characters of a key shown in lists and logs */

/* Write a fresh random "<prefix><43 base64url>" to out.  0 / -1 (no entropy, small out). */
int	apikey_generate(const char *prefix, char *out, size_t outlen);

/* 1 when s is exactly prefix + 43 base64url characters, else 0. */
int	apikey_well_formed(const char *prefix, const char *s);

/* Lower-case hex SHA-256 of the NUL-terminated s into out[APIKEY_HASH_HEX].  0 / -1. */
int	apikey_hash(const char *s, char out[APIKEY_HASH_HEX]);

/*
 * The binding of a claim token to its checkout session: hex SHA-256 of a
 * fixed label and the token, sent as the checkout's metadata (Dodo copies
 * it onto the subscription and payment the session creates), so that a
 * token only ever redeems the purchase of its own session.  Reveals nothing
 * of the token, and differs from its stored hash.  0 / -1.
 */
#define APIKEY_CLAIM_METADATA	"mailkit_claim"	/* the checkout metadata key */
int	apikey_claim_binding(const char *token, char out[APIKEY_HASH_HEX]);

/* Compare two NUL-terminated hashes (or any secrets of equal length) in
 * constant time; 1 when equal.  Different lengths are simply unequal. */
int	apikey_equal(const char *a, const char *b);

/*
 * The token of an "Authorization: Bearer <token>" header value (the scheme
 * is case-insensitive, RFC 6750) copied into out.  Returns 0, or -1 when
 * the header is empty, another scheme, or the token does not fit.
 */
int	apikey_from_bearer(const char *authorization, char *out, size_t outlen);

#endif
