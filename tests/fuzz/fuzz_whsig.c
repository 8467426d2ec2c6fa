/*
 * fuzz_whsig.c: libFuzzer target for webhook verification.
 *
 * Input: five fields separated by '\n' -- secret, webhook-id,
 * webhook-timestamp, webhook-signature, then the raw body (the rest, which
 * may itself hold newlines).  Each header field is copied into an exactly
 * sized, NUL-terminated allocation so that any over-read is caught.
 *
 * Besides "never crashes", it checks two properties: a delivery signed by
 * whsig_sign() verifies, and one with that signature's last base64 digit
 * changed does not.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "whsig.h"

#define FUZZ_FIELDS	4		/* secret, id, timestamp, signature header */
#define FUZZ_NOW	1614265330	/* vector 1's timestamp (api-facts.md C.2) */

int	LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char *
fuzz_strndup(const uint8_t *p, size_t n)
{
	char *s = malloc(n + 1);

	if (s == NULL)
		abort();
	memcpy(s, p, n);
	s[n] = '\0';
	return s;
}

/* The timestamp as the verifier reads it, when it is plain digits. */
static int
fuzz_ts(const char *s, time_t *out)
{
	long long v = 0;
	size_t i;

	for (i = 0; s[i] != '\0'; i++) {
		if (i >= 12 || s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	if (i == 0)
		return -1;
	*out = (time_t)v;
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char		*field[FUZZ_FIELDS], why[128], sig[WHSIG_SIGNATURE_MAX];
	const uint8_t	*p = data, *end = data + size, *nl;
	char		*body;
	size_t		 body_len;
	struct whsig_key key;
	time_t		 ts;

	for (int i = 0; i < FUZZ_FIELDS; i++) {
		nl = memchr(p, '\n', (size_t)(end - p));
		if (nl == NULL)
			nl = end;
		field[i] = fuzz_strndup(p, (size_t)(nl - p));
		p = nl < end ? nl + 1 : end;
	}
	body_len = (size_t)(end - p);
	body = fuzz_strndup(p, body_len);

	if (whsig_key_from_secret(field[0], &key) == 0) {
		if (key.len == 0 || key.len > WHSIG_KEY_MAX)
			abort();
		/* at a fixed "now" (vector 1's), and at the delivery's own time */
		whsig_verify(&key, field[1], field[2], field[3], body, body_len, FUZZ_NOW,
		    why, sizeof why);
		if (fuzz_ts(field[2], &ts) == 0) {
			whsig_verify(&key, field[1], field[2], field[3], body, body_len, ts,
			    why, sizeof why);
			if (field[1][0] != '\0' &&
			    whsig_sign(&key, field[1], field[2], body, body_len, sig,
			    sizeof sig) == 0) {
				size_t n = strlen(sig);

				if (whsig_verify(&key, field[1], field[2], sig, body, body_len,
				    ts, why, sizeof why) != 0)
					abort();	/* our own signature must verify */
				sig[n - 2] = sig[n - 2] == 'A' ? 'B' : 'A';
				if (whsig_verify(&key, field[1], field[2], sig, body, body_len,
				    ts, why, sizeof why) == 0)
					abort();	/* and a changed one must not */
			}
		}
	} else {
		/* a key that failed to decode is all zero: refused, never used */
		memset(&key, 0, sizeof key);
		if (whsig_verify(&key, field[1], field[2], field[3], body, body_len,
		    FUZZ_NOW, why, sizeof why) == 0)
			abort();
	}
	for (int i = 0; i < FUZZ_FIELDS; i++)
		free(field[i]);
	free(body);
	return 0;
}
