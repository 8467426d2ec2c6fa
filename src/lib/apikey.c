/* apikey.c: random keys from RAND_bytes, SHA-256 hashes, constant-time compare. */
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "apikey.h"
#include "digest.h"

_Static_assert(APIKEY_HASH_HEX == DIGEST_SHA256_HEX, "a key hash is a SHA-256 in hex");

static const char apikey_b64url[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

int
apikey_generate(const char *prefix, char *out, size_t outlen)
{
	unsigned char	rnd[APIKEY_RANDOM_BYTES + 1];	/* +1: whole 3-byte groups */
	size_t		plen = strlen(prefix), o, i;

	if (outlen < plen + APIKEY_B64_LEN + 1)
		return -1;
	if (RAND_bytes(rnd, APIKEY_RANDOM_BYTES) != 1)
		return -1;
	rnd[APIKEY_RANDOM_BYTES] = 0;
	memcpy(out, prefix, plen);
	o = plen;
	for (i = 0; i < APIKEY_RANDOM_BYTES; i += 3) {
		unsigned long v = (unsigned long)rnd[i] << 16 | (unsigned long)rnd[i + 1] << 8 |
		    (i + 2 < APIKEY_RANDOM_BYTES ? rnd[i + 2] : 0);

		out[o++] = apikey_b64url[v >> 18 & 63];
		out[o++] = apikey_b64url[v >> 12 & 63];
		out[o++] = apikey_b64url[v >> 6 & 63];
		if (i + 2 < APIKEY_RANDOM_BYTES)
			out[o++] = apikey_b64url[v & 63];
	}
	out[o] = '\0';
	OPENSSL_cleanse(rnd, sizeof rnd);
	return o == plen + APIKEY_B64_LEN ? 0 : -1;
}

int
apikey_well_formed(const char *prefix, const char *s)
{
	size_t plen = strlen(prefix), i;

	if (s == NULL || strncmp(s, prefix, plen) != 0)
		return 0;
	for (i = 0; i < APIKEY_B64_LEN; i++)
		if (s[plen + i] == '\0' || strchr(apikey_b64url, s[plen + i]) == NULL)
			return 0;
	return s[plen + APIKEY_B64_LEN] == '\0';
}

int
apikey_hash(const char *s, char out[APIKEY_HASH_HEX])
{
	struct digest_part part = { s, strlen(s) };

	return digest_sha256_hex(&part, 1, out);
}

int
apikey_claim_binding(const char *token, char out[APIKEY_HASH_HEX])
{
	static const char	label[] = "mailkit claim binding v1\n";
	struct digest_part	parts[2] = { { label, sizeof label - 1 }, { token, strlen(token) } };

	return digest_sha256_hex(parts, 2, out);
}

int
apikey_equal(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);

	if (la != lb)
		return 0;
	return CRYPTO_memcmp(a, b, la) == 0;
}

int
apikey_from_bearer(const char *authorization, char *out, size_t outlen)
{
	const char	*p = authorization;
	size_t		 n;

	out[0] = '\0';
	while (*p == ' ')
		p++;
	if (strncasecmp(p, "Bearer", 6) != 0 || p[6] != ' ')
		return -1;
	for (p += 6; *p == ' '; p++)
		;
	n = strcspn(p, " ");
	if (n == 0 || n >= outlen || p[n + strspn(p + n, " ")] != '\0')
		return -1;
	memcpy(out, p, n);
	out[n] = '\0';
	return 0;
}
