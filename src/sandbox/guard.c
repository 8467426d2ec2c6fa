/* guard.c: who may change the sandbox's state (same-origin forms with a per-page token, or JSON), and masking the keys MailKit mailed. */
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "apikey.h"
#include "log.h"
#include "sandbox.h"
#include "url.h"

#define GUARD_KEY_LABEL		"mailkit sandbox csrf v1"	/* domain separation */
#define GUARD_KEY_VISIBLE	4	/* characters of a mailed key the outbox shows */
#define GUARD_KEY_MIN		16	/* shorter "mk_..." runs are prose, not keys */
#define GUARD_PREFIX_LEN	(sizeof(APIKEY_PREFIX) - 1)
#define GUARD_ELLIPSIS		"\xe2\x80\xa6"	/* U+2026, 3 bytes */

static unsigned char	guard_key[EVP_MAX_MD_SIZE];
static unsigned int	guard_key_len;

int
guard_init(void)
{
	/* from the webhook key, which the stack keeps across restarts, so a
	 * page loaded before a restart still posts */
	if (HMAC(EVP_sha256(), sandbox.webhook_key.bytes, (int)sandbox.webhook_key.len,
	    (const unsigned char *)GUARD_KEY_LABEL, strlen(GUARD_KEY_LABEL), guard_key,
	    &guard_key_len) == NULL)
		return -1;
	return 0;
}

void
guard_token(const char *page, char out[GUARD_TOKEN_MAX])
{
	static const char	hex[] = "0123456789abcdef";
	unsigned char		mac[EVP_MAX_MD_SIZE];
	unsigned int		len = 0;
	size_t			i;

	out[0] = '\0';
	if (HMAC(EVP_sha256(), guard_key, (int)guard_key_len, (const unsigned char *)page,
	    strlen(page), mac, &len) == NULL)
		return;
	for (i = 0; i < len && 2 * i + 2 < GUARD_TOKEN_MAX; i++) {
		out[2 * i] = hex[mac[i] >> 4];
		out[2 * i + 1] = hex[mac[i] & 15];
	}
	out[2 * i] = '\0';
}

/* An Origin that is not this host's own ("null" included); none is fine
 * (curl, the SDKs, same-origin GETs of old browsers). */
static int
guard_foreign_origin(const struct request *req)
{
	const char	*o = req->origin, *rest;

	if (o[0] == '\0')
		return 0;
	if (strncasecmp(o, "http://", 7) == 0)
		rest = o + 7;
	else if (strncasecmp(o, "https://", 8) == 0)
		rest = o + 8;
	else
		return 1;
	return req->host[0] == '\0' || strcasecmp(rest, req->host) != 0;
}

static int
guard_is_json(const char *content_type)
{
	size_t	n = strlen("application/json");

	while (*content_type == ' ')
		content_type++;
	return strncasecmp(content_type, "application/json", n) == 0 &&
	    (content_type[n] == '\0' || content_type[n] == ';' || content_type[n] == ' ');
}

int
guard_change(const struct request *req, const char *page, struct response *resp)
{
	char	want[GUARD_TOKEN_MAX], got[GUARD_TOKEN_MAX];
	int	ok;

	if (guard_foreign_origin(req)) {
		log_warn("sandbox: %s %s from Origin %s refused", req->method, req->path,
		    req->origin);
		response_error(resp, 403, "cross-site request refused");
		return -1;
	}
	/* other methods and JSON bodies need a CORS preflight cross-site, which
	 * the sandbox never grants */
	if (strcmp(req->method, "POST") != 0 || guard_is_json(req->content_type))
		return 0;
	if (page == NULL) {
		response_error(resp, 415, "Content-Type must be application/json");
		return -1;
	}
	guard_token(page, want);
	ok = url_query_get(req->body, GUARD_TOKEN_FIELD, got, sizeof(got)) == 0 &&
	    want[0] != '\0' && strlen(got) == strlen(want) &&
	    CRYPTO_memcmp(got, want, strlen(want)) == 0;
	OPENSSL_cleanse(want, sizeof(want));
	if (!ok) {
		response_error(resp, 403, "the form's " GUARD_TOKEN_FIELD " token is missing or "
		    "wrong: reload the page and submit it again");
		return -1;
	}
	return 0;
}

static int
guard_key_char(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	    c == '_' || c == '-';
}

void
guard_mask_keys(char *s)
{
	char	*r = s, *w = s;

	while (*r != '\0') {
		size_t	run = 0;

		if (strncmp(r, APIKEY_PREFIX, GUARD_PREFIX_LEN) == 0 &&
		    (r == s || !guard_key_char((unsigned char)r[-1]))) {
			while (guard_key_char((unsigned char)r[GUARD_PREFIX_LEN + run]))
				run++;
		}
		if (run < GUARD_KEY_MIN) {
			*w++ = *r++;
			continue;
		}
		/* mk_ + 4 characters + "…": always shorter than what it replaces */
		memmove(w, r, GUARD_PREFIX_LEN + GUARD_KEY_VISIBLE);
		w += GUARD_PREFIX_LEN + GUARD_KEY_VISIBLE;
		memcpy(w, GUARD_ELLIPSIS, strlen(GUARD_ELLIPSIS));
		w += strlen(GUARD_ELLIPSIS);
		r += GUARD_PREFIX_LEN + run;
	}
	*w = '\0';
}
