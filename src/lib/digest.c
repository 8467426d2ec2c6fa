/* digest.c: SHA-256 in hex with OpenSSL's implementation fetched once per process. */
#include <pthread.h>

#include <openssl/evp.h>

#include "digest.h"

#define DIGEST_SHA256_LEN	32

static EVP_MD		*digest_sha256;		/* kept until exit; shared by all threads */
static pthread_once_t	 digest_once = PTHREAD_ONCE_INIT;

static void
digest_fetch(void)
{
	digest_sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
}

void
digest_hex(const unsigned char *p, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[p[i] >> 4];
		out[2 * i + 1] = digits[p[i] & 15];
	}
	out[2 * n] = '\0';
}

int
digest_sha256_hex(const struct digest_part *parts, size_t n, char out[DIGEST_SHA256_HEX])
{
	unsigned char	 md[EVP_MAX_MD_SIZE];
	unsigned int	 mdlen = 0;
	EVP_MD_CTX	*ctx = NULL;
	int		 rc = -1;

	pthread_once(&digest_once, digest_fetch);
	if (digest_sha256 == NULL || n > DIGEST_PARTS_MAX ||
	    (ctx = EVP_MD_CTX_new()) == NULL)
		goto out;
	if (EVP_DigestInit_ex(ctx, digest_sha256, NULL) != 1)
		goto out;
	for (size_t i = 0; i < n; i++)
		if (parts[i].len > 0 && EVP_DigestUpdate(ctx, parts[i].data, parts[i].len) != 1)
			goto out;
	if (EVP_DigestFinal_ex(ctx, md, &mdlen) != 1 || mdlen != DIGEST_SHA256_LEN)
		goto out;
	digest_hex(md, mdlen, out);
	rc = 0;
 out:
	EVP_MD_CTX_free(ctx);
	return rc;
}
