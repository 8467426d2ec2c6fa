/* whsig.c: Standard Webhooks v1 signatures (HMAC-SHA256, base64) with OpenSSL 3. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include "whsig.h"

#define WHSIG_PREFIX		"whsec_"
#define WHSIG_SECRET_B64_MAX	(4 * ((WHSIG_KEY_MAX + 2) / 3))	/* 88: base64 of the largest key */
#define WHSIG_MAC_LEN		32	/* SHA-256 */
#define WHSIG_MAC_B64_LEN	44	/* base64 of 32 bytes, with one '=' */
#define WHSIG_TS_DIGITS_MAX	12	/* Unix seconds; 10 digits until 2286, no overflow at 12 */

static int
whsig_b64_char(int c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
	    (c >= '0' && c <= '9') || c == '+' || c == '/';
}

int
whsig_key_from_secret(const char *secret, struct whsig_key *key)
{
	char		 in[WHSIG_SECRET_B64_MAX + 1];
	unsigned char	 out[WHSIG_SECRET_B64_MAX];	/* decode writes 3 per 4 in */
	size_t		 len, pad, i;
	int		 n;

	memset(key, 0, sizeof(*key));
	if (secret == NULL)
		return -1;
	if (strncmp(secret, WHSIG_PREFIX, sizeof(WHSIG_PREFIX) - 1) == 0)
		secret += sizeof(WHSIG_PREFIX) - 1;

	/* Accept the payload with or without its '=' padding, nothing else. */
	len = strnlen(secret, WHSIG_SECRET_B64_MAX + 1);
	if (len > WHSIG_SECRET_B64_MAX)
		return -1;
	while (len > 0 && secret[len - 1] == '=')
		len--;
	if (len == 0 || len % 4 == 1)
		return -1;			/* empty, or a dangling 6 bits */
	for (i = 0; i < len; i++)
		if (!whsig_b64_char((unsigned char)secret[i]))
			return -1;
	/* Trailing '=' beyond the ones a correct encoding has are rejected. */
	if (secret[len] != '\0' && strlen(secret + len) != (4 - len % 4) % 4)
		return -1;

	memcpy(in, secret, len);
	pad = (4 - len % 4) % 4;
	memset(in + len, '=', pad);
	in[len + pad] = '\0';

	/* EVP_DecodeBlock counts padding as zero bytes; take them off. */
	n = EVP_DecodeBlock(out, (const unsigned char *)in, (int)(len + pad));
	if (n < 0 || (size_t)n < pad)
		goto fail;
	n -= (int)pad;
	if (n == 0 || (size_t)n > sizeof(key->bytes))
		goto fail;
	memcpy(key->bytes, out, (size_t)n);
	key->len = (size_t)n;
	OPENSSL_cleanse(out, sizeof(out));
	OPENSSL_cleanse(in, sizeof(in));
	return 0;

 fail:
	OPENSSL_cleanse(out, sizeof(out));
	OPENSSL_cleanse(in, sizeof(in));
	return -1;
}

/*
 * The HMAC implementation, fetched once per process: EVP_MAC_fetch searches
 * the provider tables under a lock, which would cost more than the MAC of a
 * webhook body.  Shared by all threads (fetched objects are thread-safe);
 * kept until exit.
 */
static EVP_MAC		*whsig_hmac;
static pthread_once_t	 whsig_hmac_once = PTHREAD_ONCE_INIT;

static void
whsig_hmac_fetch(void)
{
	whsig_hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
}

/* HMAC-SHA256(key, id "." ts "." body) into mac[WHSIG_MAC_LEN]. */
static int
whsig_mac(const struct whsig_key *key, const char *id, const char *ts,
    const char *body, size_t body_len, unsigned char *mac)
{
	EVP_MAC_CTX	*ctx = NULL;
	OSSL_PARAM	 params[2];
	char		 digest[] = "SHA256";
	size_t		 maclen = 0;
	int		 rc = -1;

	if (key->len == 0 || key->len > sizeof(key->bytes))
		return -1;
	pthread_once(&whsig_hmac_once, whsig_hmac_fetch);
	if (whsig_hmac == NULL || (ctx = EVP_MAC_CTX_new(whsig_hmac)) == NULL)
		goto out;
	params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0);
	params[1] = OSSL_PARAM_construct_end();
	if (EVP_MAC_init(ctx, key->bytes, key->len, params) != 1 ||
	    EVP_MAC_update(ctx, (const unsigned char *)id, strlen(id)) != 1 ||
	    EVP_MAC_update(ctx, (const unsigned char *)".", 1) != 1 ||
	    EVP_MAC_update(ctx, (const unsigned char *)ts, strlen(ts)) != 1 ||
	    EVP_MAC_update(ctx, (const unsigned char *)".", 1) != 1 ||
	    (body_len > 0 &&
	    EVP_MAC_update(ctx, (const unsigned char *)body, body_len) != 1) ||
	    EVP_MAC_final(ctx, mac, &maclen, WHSIG_MAC_LEN) != 1 ||
	    maclen != WHSIG_MAC_LEN)
		goto out;
	rc = 0;
 out:
	EVP_MAC_CTX_free(ctx);
	return rc;
}

/* base64 of the MAC into b64[WHSIG_MAC_B64_LEN + 1]. */
static int
whsig_mac_b64(const struct whsig_key *key, const char *id, const char *ts,
    const char *body, size_t body_len, char *b64)
{
	unsigned char	mac[WHSIG_MAC_LEN];
	int		n;

	if (whsig_mac(key, id, ts, body, body_len, mac) == -1)
		return -1;
	n = EVP_EncodeBlock((unsigned char *)b64, mac, WHSIG_MAC_LEN);
	OPENSSL_cleanse(mac, sizeof(mac));
	return n == WHSIG_MAC_B64_LEN ? 0 : -1;
}

int
whsig_sign(const struct whsig_key *key, const char *id, const char *timestamp,
    const char *body, size_t body_len, char *out, size_t outlen)
{
	char	b64[WHSIG_MAC_B64_LEN + 1];

	if (id == NULL || timestamp == NULL || (body == NULL && body_len > 0))
		return -1;
	if (whsig_mac_b64(key, id, timestamp, body, body_len, b64) == -1)
		return -1;
	if ((size_t)snprintf(out, outlen, "v1,%s", b64) >= outlen)
		return -1;
	return 0;
}

/* Digits only, so the bytes signed are the bytes parsed.  0 / -1. */
static int
whsig_parse_ts(const char *s, long long *ts)
{
	long long	v = 0;
	size_t		i;

	for (i = 0; s[i] != '\0'; i++) {
		if (i >= WHSIG_TS_DIGITS_MAX || s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	if (i == 0)
		return -1;
	*ts = v;
	return 0;
}

static int
whsig_why(char *why, size_t whylen, const char *reason)
{
	if (why != NULL && whylen > 0)
		snprintf(why, whylen, "%s", reason);
	return -1;
}

int
whsig_verify(const struct whsig_key *key, const char *id, const char *timestamp,
    const char *signature_header, const char *body, size_t body_len, time_t now,
    char *why, size_t whylen)
{
	char		 expected[WHSIG_MAC_B64_LEN + 1];
	const char	*p, *item, *comma;
	size_t		 itemlen;
	long long	 ts;
	int		 seen_v1 = 0, match = 0;

	if (key == NULL || key->len == 0)
		return whsig_why(why, whylen, "no signing key");
	if (id == NULL || *id == '\0')
		return whsig_why(why, whylen, "missing webhook-id");
	if (timestamp == NULL || *timestamp == '\0')
		return whsig_why(why, whylen, "missing webhook-timestamp");
	if (signature_header == NULL || *signature_header == '\0')
		return whsig_why(why, whylen, "missing webhook-signature");
	if (body == NULL && body_len > 0)
		return whsig_why(why, whylen, "no body");
	if (whsig_parse_ts(timestamp, &ts) == -1)
		return whsig_why(why, whylen, "malformed webhook-timestamp");
	if (ts < (long long)now - WHSIG_TOLERANCE_SEC)
		return whsig_why(why, whylen, "webhook-timestamp too old");
	if (ts > (long long)now + WHSIG_TOLERANCE_SEC)
		return whsig_why(why, whylen, "webhook-timestamp too new");
	if (whsig_mac_b64(key, id, timestamp, body, body_len, expected) == -1)
		return whsig_why(why, whylen, "cannot compute HMAC");

	/* Space-separated "<version>,<sig>" items; versions other than v1
	 * (e.g. v1a, ed25519) are not ours to check.  Every v1 item is
	 * compared, so the time taken does not depend on which one matched. */
	for (p = signature_header; *p != '\0'; p = item + itemlen) {
		while (*p == ' ')
			p++;
		item = p;
		itemlen = strcspn(item, " ");
		if (itemlen == 0)
			break;
		comma = memchr(item, ',', itemlen);
		if (comma == NULL || (size_t)(comma - item) != 2 ||
		    strncmp(item, "v1", 2) != 0)
			continue;
		seen_v1 = 1;
		if (itemlen - 3 == WHSIG_MAC_B64_LEN &&
		    CRYPTO_memcmp(comma + 1, expected, WHSIG_MAC_B64_LEN) == 0)
			match = 1;
	}
	OPENSSL_cleanse(expected, sizeof(expected));
	if (match)
		return 0;
	return whsig_why(why, whylen, seen_v1 ? "no matching signature" :
	    "no v1 signature");
}
