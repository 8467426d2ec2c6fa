/* auth.c: Bearer API keys to customers, per-key rate windows, and issuing keys by mail. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>

#include "auth.h"
#include "counters.h"
#include "buf.h"
#include "log.h"
#include "mail.h"
#include "server.h"
#include "settings.h"
#include "store.h"
#include "valid.h"

#define AUTH_MAIL_MAX		(8 * 1024)	/* the key email's body */
#define AUTH_MAIL_SUBJECT	"Your MailKit API key"
#define AUTH_MAIL_KEY_PREFIX	"mailkit-apikey-"	/* + key id + hash: one email per key */
#define AUTH_REALM		"Bearer realm=\"MailKit\""

/* 401 with the RFC 6750 challenge; `bad` says a token was sent and refused. */
static int
auth_refuse(struct response *resp, int bad, const char *msg)
{
	response_error(resp, 401, "%s", msg);
	response_header(resp, "WWW-Authenticate", bad ?
	    AUTH_REALM ", error=\"invalid_token\"" : AUTH_REALM);
	return -1;
}

int
auth_check_claim(const char *claimed, const char *customer_id, struct response *resp)
{
	if (claimed == NULL || *claimed == '\0' || strcmp(claimed, AUTH_ME) == 0 ||
	    strcmp(claimed, customer_id) == 0)
		return 0;
	response_error(resp, 403, "this API key belongs to another customer: leave "
	    "customer_id out, or use that customer's key");
	return -1;
}

int
auth_rate_limit(const struct settings *s, const char *bucket, long limit, const char *per,
    struct response *resp)
{
	struct mk_err	err;
	char		retry[32];
	long		hits;
	time_t		end, now;

	if (limit <= 0)
		return 0;
	if (counters_hit(s, bucket, AUTH_RATE_WINDOW_SEC, &hits, &end, &err) == -1) {
		response_fail(resp, &err);
		return -1;
	}
	if (hits <= limit)
		return 0;
	now = time(NULL);
	snprintf(retry, sizeof retry, "%lld", (long long)(end > now ? end - now : 1));
	response_error(resp, 429, "rate limit of %ld requests per minute %s exceeded; "
	    "retry in %s s", limit, per, retry);
	response_header(resp, "Retry-After", retry);
	return -1;
}

/* Count the request against the key's window; 0, or -1 with 429/503 in resp. */
static int
auth_rate(const struct settings *s, const struct store_key *key, struct response *resp)
{
	char	bucket[64];

	snprintf(bucket, sizeof bucket, "key:%lld", key->id);
	return auth_rate_limit(s, bucket, s->rate_limit, "per API key", resp);
}

/*
 * Key lookups, cached per process: every authenticated request needs one,
 * and the table changes rarely.  An entry is used only while the host-wide
 * key generation (counters.h; bumped by every revoke and rotation) is the
 * one it was read under, and for at most AUTH_CACHE_TTL_SEC; only active
 * keys are cached, so an unknown key always reaches the table.
 */
#define AUTH_CACHE_SLOTS	64
#define AUTH_CACHE_TTL_SEC	60

static struct {
	char			hash[APIKEY_HASH_HEX];
	struct store_key	key;
	unsigned long long	generation;
	time_t			at;
} auth_cache[AUTH_CACHE_SLOTS];
static pthread_mutex_t	auth_cache_lock = PTHREAD_MUTEX_INITIALIZER;

/* store_key_find through the cache: 1 found, 0 not, -1 error. */
static int
auth_key_find(const struct settings *s, const char *hash, struct store_key *key,
    struct mk_err *err)
{
	unsigned long long	 gen = counters_keys_generation(s);
	size_t			 slot = strtoul((char[3]){ hash[0], hash[1], '\0' }, NULL, 16) %
				    AUTH_CACHE_SLOTS;
	time_t			 now = time(NULL);
	int			 found;

	if (gen != 0) {
		pthread_mutex_lock(&auth_cache_lock);
		if (auth_cache[slot].generation == gen && now - auth_cache[slot].at <
		    AUTH_CACHE_TTL_SEC && strcmp(auth_cache[slot].hash, hash) == 0) {
			*key = auth_cache[slot].key;
			pthread_mutex_unlock(&auth_cache_lock);
			return 1;
		}
		pthread_mutex_unlock(&auth_cache_lock);
	}
	if ((found = store_key_find(s, hash, key, err)) == 1 && key->revoked_at == 0 &&
	    gen != 0) {
		pthread_mutex_lock(&auth_cache_lock);
		snprintf(auth_cache[slot].hash, sizeof auth_cache[slot].hash, "%s", hash);
		auth_cache[slot].key = *key;
		auth_cache[slot].generation = gen;
		auth_cache[slot].at = now;
		pthread_mutex_unlock(&auth_cache_lock);
	}
	return found;
}

int
auth_customer(const struct settings *s, const struct request *req, const char *claimed,
    char *customer_id, size_t len, struct response *resp)
{
	struct store_key	 key;
	struct mk_err		 err;
	char			 token[APIKEY_MAX], hash[APIKEY_HASH_HEX];
	int			 named = claimed != NULL && *claimed != '\0' &&
				    strcmp(claimed, AUTH_ME) != 0;
	int			 found;

	customer_id[0] = '\0';
	if (req->authorization[0] == '\0' && s->auth_trusts_customer_id) {
		/* the tutorial's mode: the request names its customer */
		if (!named || !valid_customer_id(claimed)) {
			response_error(resp, 400, "customer_id must be 1-%d letters, digits, "
			    "'_' or '-'", CUSTOMER_ID_MAX);
			return -1;
		}
		snprintf(customer_id, len, "%s", claimed);
		return 0;
	}
	if (req->authorization[0] == '\0')
		return auth_refuse(resp, 0, "an API key is required: send Authorization: "
		    "Bearer <key>");
	if (apikey_from_bearer(req->authorization, token, sizeof token) == -1 ||
	    !apikey_well_formed(APIKEY_PREFIX, token))
		return auth_refuse(resp, 1, "invalid or revoked API key");
	if (apikey_hash(token, hash) == -1) {
		OPENSSL_cleanse(token, sizeof token);
		response_error(resp, 500, "internal error");
		return -1;
	}
	OPENSSL_cleanse(token, sizeof token);
	if ((found = auth_key_find(s, hash, &key, &err)) == -1) {
		response_fail(resp, &err);
		return -1;
	}
	/* the lookup was by hash; compare again in constant time all the same */
	if (found == 0 || key.revoked_at != 0 || !apikey_equal(key.key_hash, hash))
		return auth_refuse(resp, 1, "invalid or revoked API key");
	if (auth_check_claim(claimed, key.customer_id, resp) == -1)
		return -1;
	if (auth_rate(s, &key, resp) == -1)
		return -1;
	snprintf(customer_id, len, "%s", key.customer_id);
	return 0;
}

int
auth_before_body(const struct settings *s, const struct request *req, char *customer_id,
    size_t len, int *keyed, struct response *resp)
{
	*keyed = 0;
	customer_id[0] = '\0';
	if (req->authorization[0] == '\0' && s->auth_trusts_customer_id)
		return 0;	/* the body will name the customer */
	if (auth_customer(s, req, NULL, customer_id, len, resp) == -1)
		return -1;
	*keyed = 1;
	return 0;
}

int
auth_after_body(const struct settings *s, const struct request *req, const char *claimed,
    int keyed, char *customer_id, size_t len, struct response *resp)
{
	if (keyed)
		return auth_check_claim(claimed, customer_id, resp);
	return auth_customer(s, req, claimed, customer_id, len, resp);
}

/* The key email, every interpolated value escaped in the HTML part.  0 / -1. */
static int
auth_mail_bodies(struct buf *html, struct buf *text, const struct settings *s,
    const char *name, const char *customer_id, const char *key)
{
	int rc = 0;

	rc |= buf_puts(html, "<!doctype html><html><head><meta charset=\"utf-8\"></head><body>"
	    "<p>Hello");
	if (*name != '\0') {
		rc |= buf_puts(html, " ");
		rc |= buf_html(html, name);
	}
	rc |= buf_puts(html, ",</p><p>Your MailKit API key for account <code>");
	rc |= buf_html(html, customer_id);
	rc |= buf_puts(html, "</code> is:</p><p><code>");
	rc |= buf_html(html, key);
	rc |= buf_puts(html, "</code></p><p>Send it as <code>Authorization: Bearer &lt;key&gt;"
	    "</code> with every request, or paste it into the page at <a href=\"");
	rc |= buf_html(html, s->base_url);
	rc |= buf_puts(html, "\">");
	rc |= buf_html(html, s->base_url);
	rc |= buf_puts(html, "</a>.  Keep it secret: anyone holding it can send email on your "
	    "credits.  MailKit stores only a hash of it and cannot show it again; ask for a "
	    "new key if it is lost or leaked.</p><p>— MailKit</p></body></html>");
	rc |= buf_printf(text, "Hello%s%s,\n\nYour MailKit API key for account %s is:\n\n"
	    "    %s\n\nSend it as \"Authorization: Bearer <key>\" with every request, or "
	    "paste it into the page at %s.  Keep it secret: anyone holding it can send email "
	    "on your credits.  MailKit stores only a hash of it and cannot show it again; ask "
	    "for a new key if it is lost or leaked.\n\n-- MailKit\n",
	    *name != '\0' ? " " : "", name, customer_id, key, s->base_url);
	return rc == 0 ? 0 : -1;
}

/* Mail the key.  0 / -1 with err (err->maybe_done as mail.h). */
static int
auth_mail_key(const struct settings *s, const struct mail_provider *mailer, long long id,
    const char *hash, const char *customer_id, const char *email, const char *name,
    const char *key, struct mk_err *err)
{
	struct mail_message	 msg;
	struct mail_result	 sent;
	struct buf		 html, text;
	char			 idem[IDEMPOTENCY_KEY_MAX + 1];
	int			 rc = -1;

	buf_init(&html, AUTH_MAIL_MAX);
	buf_init(&text, AUTH_MAIL_MAX);
	if (mailer == NULL || !valid_email(email)) {
		mk_fail(err, 400, "no usable email address to send the key to");
		goto out;
	}
	if (auth_mail_bodies(&html, &text, s, name != NULL ? name : "", customer_id, key) == -1) {
		mk_fail(err, 500, "key email does not fit %d bytes", AUTH_MAIL_MAX);
		goto out;
	}
	snprintf(idem, sizeof idem, "%s%lld-%.16s", AUTH_MAIL_KEY_PREFIX, id, hash);
	memset(&msg, 0, sizeof msg);
	msg.from = s->mail_from;
	msg.to[0] = email;
	msg.nto = 1;
	msg.subject = AUTH_MAIL_SUBJECT;
	msg.html = html.data;
	msg.text = text.data;
	msg.idempotency_key = idem;
	if (mailer->send(s, &msg, &sent, err) == -1)
		goto out;
	log_info("[keys] %s: key %lld mailed (%s id %s)", customer_id, id, mailer->name,
	    sent.id);
	rc = 0;
out:
	/* the bodies held the key in clear */
	if (html.data != NULL)
		OPENSSL_cleanse(html.data, html.len);
	if (text.data != NULL)
		OPENSSL_cleanse(text.data, text.len);
	buf_free(&html);
	buf_free(&text);
	return rc;
}

int
auth_issue_key(const struct settings *s, const struct mail_provider *mailer,
    const char *customer_id, const char *email, const char *name, const char *source,
    unsigned flags, char *key, size_t keylen, struct mk_err *err)
{
	char		hash[APIKEY_HASH_HEX], shown[APIKEY_SHOWN + 4];
	long long	id = 0;
	int		rc;

	key[0] = '\0';
	if (!valid_customer_id(customer_id))
		return mk_fail(err, 400, "invalid customer id");
	if (apikey_generate(APIKEY_PREFIX, key, keylen) == -1 || apikey_hash(key, hash) == -1)
		return mk_fail(err, 500, "cannot generate a key");
	snprintf(shown, sizeof shown, "%.*s...", APIKEY_SHOWN, key);
	rc = store_key_issue(s, customer_id, hash, shown, source,
	    (flags & AUTH_ISSUE_ROTATE) != 0, &id, err);
	if (rc != STORE_KEY_ISSUED) {
		OPENSSL_cleanse(key, keylen);
		key[0] = '\0';
		return rc;
	}
	log_info("[keys] %s: key %lld (%s) issued by %s%s", customer_id, id, shown, source,
	    (flags & AUTH_ISSUE_ROTATE) ? ", older keys revoked" : "");
	if ((flags & (AUTH_ISSUE_MAIL | AUTH_ISSUE_MAIL_TRY)) == 0)
		return STORE_KEY_ISSUED;
	if (auth_mail_key(s, mailer, id, hash, customer_id, email, name, key, err) == 0)
		return STORE_KEY_ISSUED;
	if (flags & AUTH_ISSUE_MAIL_TRY) {
		log_warn("[keys] %s: key %lld issued but not mailed: %s", customer_id, id,
		    err->msg);
		return STORE_KEY_ISSUED;
	}
	/* nobody has the key: forget it so that a retry issues (and mails) a new one */
	log_warn("[keys] %s: key %lld not mailed, withdrawn: %s", customer_id, id, err->msg);
	OPENSSL_cleanse(key, keylen);
	key[0] = '\0';
	{
		struct mk_err e2;

		if (store_key_forget(s, id, &e2) == -1)
			log_error("[keys] %s: cannot withdraw key %lld: %s", customer_id, id,
			    e2.msg);
	}
	return -1;
}
