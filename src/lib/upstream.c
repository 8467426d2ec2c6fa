/* upstream.c: the one outbound HTTP client (libcurl), with timeouts, retries and a capped body. */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <curl/curl.h>
#include <json-c/json.h>

#include "clock.h"
#include "buf.h"
#include "err.h"
#include "log.h"
#include "settings.h"
#include "upstream.h"
#include "upstream_loop.h"

#define UPSTREAM_URL_MAX		4096	/* bytes: base URL + path + query */
#define UPSTREAM_HEADER_MAX		1024	/* bytes per request header line we build */
#define UPSTREAM_JSON_DEPTH		32	/* nesting levels; our upstreams send ~4 */
#define UPSTREAM_RECV_BUFFER		4096	/* libcurl's receive buffer per pooled handle:
						 * our upstreams answer in under 2 KiB */
#define UPSTREAM_MAX_RETRIES_LIMIT	10	/* a bigger UPSTREAM_MAX_RETRIES is clamped */
#define UPSTREAM_DEFAULT_CONNECT_MS	10000	/* used when upstream_configure() was not called */
#define UPSTREAM_DEFAULT_TIMEOUT_MS	30000	/* per attempt, idem */
#define UPSTREAM_DEFAULT_RETRIES	2	/* the official SDKs' default: 3 attempts in all */

/* Process-wide, written once by upstream_configure() before threads start. */
static struct {
	long		 connect_timeout_ms;
	long		 timeout_ms;
	int		 max_retries;
	const char	*ca_file;	/* UPSTREAM_CA_FILE (owned by the settings); NULL = default */
} upstream_cfg = {
	UPSTREAM_DEFAULT_CONNECT_MS, UPSTREAM_DEFAULT_TIMEOUT_MS, UPSTREAM_DEFAULT_RETRIES, NULL
};

/* What one attempt produced. */
struct upstream_attempt {
	long		status;
	struct buf	body;
	int		too_big;		/* the body passed UPSTREAM_RESPONSE_MAX */
	long		retry_after_ms;		/* -1: no header */
	int		should_retry;		/* x-should-retry: -1 absent, 0 false, 1 true */
};

/* This thread's request deadline, CLOCK_MONOTONIC ms; 0: none. */
static __thread long long	upstream_deadline;

/* This thread's backoff jitter state (0: not seeded yet); not a secret. */
static __thread unsigned int	upstream_seed;

/* Bumped by upstream_configure(): handles set their fixed options again. */
static _Atomic unsigned int	upstream_config_gen = 1;

static pthread_once_t	upstream_once = PTHREAD_ONCE_INIT;
static int		upstream_ready;

static void
upstream_init_once(void)
{
	upstream_ready = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK;
}

void
upstream_configure(const struct settings *s)
{
	/* libcurl's global init is not thread-safe everywhere: do it here, in main */
	pthread_once(&upstream_once, upstream_init_once);
	if (s == NULL)
		return;
	if (s->connect_timeout_ms > 0)
		upstream_cfg.connect_timeout_ms = s->connect_timeout_ms;
	if (s->timeout_ms > 0)
		upstream_cfg.timeout_ms = s->timeout_ms;
	upstream_cfg.ca_file = s->ca_file != NULL && *s->ca_file != '\0' ? s->ca_file : NULL;
	if (s->max_retries >= 0)
		upstream_cfg.max_retries = s->max_retries > UPSTREAM_MAX_RETRIES_LIMIT ?
		    UPSTREAM_MAX_RETRIES_LIMIT : (int)s->max_retries;
	upstream_config_gen++;
}

void
upstream_deadline_start(long ms)
{
	upstream_deadline = ms > 0 ? clock_ms() + ms : 0;
}

long
upstream_remaining_ms(void)
{
	long long	left;

	if (upstream_deadline == 0)
		return LONG_MAX;
	left = upstream_deadline - clock_ms();
	return left < LONG_MIN / 2 ? LONG_MIN / 2 : (long)left;
}

void
upstream_shutdown(void)
{
	upstream_loop_stop();
}

void
upstream_response_free(struct upstream_response *resp)
{
	if (resp == NULL)
		return;
	if (resp->json != NULL)
		json_object_put(resp->json);
	memset(resp, 0, sizeof *resp);
	resp->retry_after_ms = -1;
}

static size_t
upstream_write_cb(char *data, size_t size, size_t nmemb, void *arg)
{
	struct upstream_attempt	*a = arg;
	size_t			 n = size * nmemb;

	if (n > UPSTREAM_RESPONSE_MAX - a->body.len) {
		a->too_big = 1;
		return 0;	/* aborts the transfer with CURLE_WRITE_ERROR */
	}
	if (buf_append(&a->body, data, n) == -1)
		return 0;
	return n;
}

/* Case-insensitive "Name:" match; returns the trimmed value or NULL. */
static const char *
upstream_header_value(const char *line, size_t len, const char *name, char *val, size_t vallen)
{
	size_t	nlen = strlen(name), i, j;

	if (len <= nlen || strncasecmp(line, name, nlen) != 0 || line[nlen] != ':')
		return NULL;
	i = nlen + 1;
	while (i < len && (line[i] == ' ' || line[i] == '\t'))
		i++;
	j = len;
	while (j > i && (line[j - 1] == '\r' || line[j - 1] == '\n' ||
	    line[j - 1] == ' ' || line[j - 1] == '\t'))
		j--;
	if (j - i >= vallen)
		return NULL;
	memcpy(val, line + i, j - i);
	val[j - i] = '\0';
	return val;
}

/* Milliseconds from a number of (possibly fractional) units; -1 if not one. */
static long
upstream_parse_delay(const char *s, double unit_ms)
{
	char	*end;
	double	 v;

	errno = 0;
	v = strtod(s, &end);
	if (end == s || *end != '\0' || errno != 0 || !(v >= 0) || v * unit_ms > 86400000.0)
		return -1;
	return (long)(v * unit_ms);
}

/*
 * Headers that steer retries.  Called once per header line of every
 * response libcurl reads (including interim 1xx ones, which reset state).
 */
static size_t
upstream_header_cb(char *line, size_t size, size_t nmemb, void *arg)
{
	struct upstream_attempt	*a = arg;
	size_t			 n = size * nmemb;
	char			 val[128];
	long			 ms;

	if (n >= 5 && strncmp(line, "HTTP/", 5) == 0) {
		a->retry_after_ms = -1;
		a->should_retry = -1;
		return n;
	}
	if (upstream_header_value(line, n, "retry-after-ms", val, sizeof val) != NULL) {
		if ((ms = upstream_parse_delay(val, 1.0)) >= 0)
			a->retry_after_ms = ms;	/* wins over Retry-After, in any order */
	} else if (upstream_header_value(line, n, "retry-after", val, sizeof val) != NULL) {
		/* seconds, or an HTTP date; only used if retry-after-ms is absent */
		if ((ms = upstream_parse_delay(val, 1000.0)) < 0) {
			time_t when = curl_getdate(val, NULL);

			if (when != -1) {
				time_t now = time(NULL);

				ms = when > now ? (long)(when - now) * 1000 : 0;
			}
		}
		if (ms >= 0 && a->retry_after_ms < 0)
			a->retry_after_ms = ms;
	} else if (upstream_header_value(line, n, "x-should-retry", val, sizeof val) != NULL) {
		if (strcasecmp(val, "true") == 0)
			a->should_retry = 1;
		else if (strcasecmp(val, "false") == 0)
			a->should_retry = 0;
	}
	return n;
}

/* The parsed body, or NULL when it is empty, not JSON, too deep or has trailing bytes. */
static json_object *
upstream_parse_json(const char *text, size_t len)
{
	struct json_tokener	*tok;
	json_object		*obj;
	size_t			 end;

	if (text == NULL || len == 0 || len > INT32_MAX)
		return NULL;
	if ((tok = json_tokener_new_ex(UPSTREAM_JSON_DEPTH)) == NULL)
		return NULL;
	obj = json_tokener_parse_ex(tok, text, (int)len);
	if (obj != NULL) {
#if JSON_C_VERSION_NUM >= ((0 << 16) | (15 << 8))
		end = json_tokener_get_parse_end(tok);
#else
		end = (size_t)tok->char_offset;
#endif
		for (; end < len; end++) {
			char c = text[end];

			if (c != ' ' && c != '\t' && c != '\r' && c != '\n') {
				json_object_put(obj);
				obj = NULL;
				break;
			}
		}
	}
	json_tokener_free(tok);
	return obj;
}

/* Official SDK schedule: min(0.5 s * 2^n, 8 s) times a jitter in (0.75, 1]. */
static long
upstream_backoff_ms(int retries_done)
{
	long	d = UPSTREAM_BACKOFF_BASE_MS;
	double	jitter;
	int	i;

	for (i = 0; i < retries_done && d < UPSTREAM_BACKOFF_MAX_MS; i++)
		d *= 2;
	if (d > UPSTREAM_BACKOFF_MAX_MS)
		d = UPSTREAM_BACKOFF_MAX_MS;
	if (upstream_seed == 0)
		upstream_seed = ((unsigned int)time(NULL) ^ (unsigned int)(uintptr_t)&upstream_seed) | 1;
	jitter = 1.0 - (rand_r(&upstream_seed) / ((double)RAND_MAX + 1.0)) * 0.25;
	return (long)(d * jitter);
}

static void
upstream_sleep_ms(long ms)
{
	struct timespec	ts, rem;

	if (ms <= 0)
		return;
	ts.tv_sec = ms / 1000;
	ts.tv_nsec = (ms % 1000) * 1000000L;
	while (nanosleep(&ts, &rem) == -1 && errno == EINTR)
		ts = rem;
}

/*
 * Wait before attempt number attempts + 1: the server's hint (hint_ms > 0)
 * or, like the SDKs when the hint is zero or missing, the default schedule.
 * -1 without waiting when the wait is above UPSTREAM_RETRY_AFTER_MAX_MS or
 * would leave no time before the request's deadline for another attempt.
 */
static int
upstream_pause(int attempts, long hint_ms)
{
	long	delay = hint_ms > 0 ? hint_ms : upstream_backoff_ms(attempts - 1);

	if (delay > UPSTREAM_RETRY_AFTER_MAX_MS || delay >= upstream_remaining_ms())
		return -1;
	upstream_sleep_ms(delay);
	return 0;
}

/* Transport errors worth another attempt (connection trouble, timeouts). */
static int
upstream_curl_retryable(CURLcode rc)
{
	switch (rc) {
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_CONNECT:
	case CURLE_OPERATION_TIMEDOUT:
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_PARTIAL_FILE:
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_HTTP2:
	case CURLE_HTTP2_STREAM:
		return 1;
	default:
		return 0;
	}
}

/*
 * Could the server have seen (and acted on) the request?  Only failures
 * before a connection existed are certain not to have reached it; anything
 * after libcurl started sending counts as "maybe".
 */
static int
upstream_maybe_sent(CURL *easy, CURLcode rc)
{
	long		reqsize = 0;
	curl_off_t	pretransfer = 0;

	switch (rc) {
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY:
	case CURLE_COULDNT_CONNECT:
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_URL_MALFORMAT:
	case CURLE_UNSUPPORTED_PROTOCOL:
	case CURLE_OUT_OF_MEMORY:
		return 0;
	default:
		break;
	}
	if (curl_easy_getinfo(easy, CURLINFO_REQUEST_SIZE, &reqsize) == CURLE_OK && reqsize > 0)
		return 1;
	if (curl_easy_getinfo(easy, CURLINFO_PRETRANSFER_TIME_T, &pretransfer) == CURLE_OK &&
	    pretransfer > 0)
		return 1;
	return 0;
}

/* Should this HTTP answer be tried again (given retry_safe)?  */
static int
upstream_status_retryable(const struct upstream_attempt *a)
{
	if (a->status < 400 || a->status == 409)	/* 409: Dodo's "key already used" */
		return 0;
	if (a->should_retry != -1)
		return a->should_retry;
	return a->status == 408 || a->status == 429 || a->status >= 500;
}

#define UPSTREAM_SETOPT(c, rc, opt, val) do {			\
	if ((rc) == CURLE_OK)					\
		(rc) = curl_easy_setopt((c), (opt), (val));	\
} while (0)

/*
 * The options every call shares, set once per handle (and again after
 * upstream_configure()): resetting the handle and setting them anew on
 * each call cost as much as parsing the reply.
 */
static CURLcode
upstream_fixed_options(struct upstream_handle *t)
{
	CURL		*c = t->easy;
	CURLcode	 rc = CURLE_OK;
	unsigned int	 gen = upstream_config_gen;

	if (t->config == gen)
		return CURLE_OK;
	/* reset keeps live connections, DNS and TLS session caches */
	curl_easy_reset(c);
	UPSTREAM_SETOPT(c, rc, CURLOPT_ERRORBUFFER, t->errbuf);
	UPSTREAM_SETOPT(c, rc, CURLOPT_NOSIGNAL, 1L);
#if LIBCURL_VERSION_NUM >= 0x075500
	UPSTREAM_SETOPT(c, rc, CURLOPT_PROTOCOLS_STR, "http,https");
#else
	UPSTREAM_SETOPT(c, rc, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
	UPSTREAM_SETOPT(c, rc, CURLOPT_FOLLOWLOCATION, 0L);
	UPSTREAM_SETOPT(c, rc, CURLOPT_PATH_AS_IS, 1L);	/* url_path() already encoded ids */
	UPSTREAM_SETOPT(c, rc, CURLOPT_BUFFERSIZE, (long)UPSTREAM_RECV_BUFFER);
	UPSTREAM_SETOPT(c, rc, CURLOPT_TCP_KEEPALIVE, 1L);
	/* libcurl's defaults, set explicitly: never talk to an unverified peer */
	UPSTREAM_SETOPT(c, rc, CURLOPT_SSL_VERIFYPEER, 1L);
	UPSTREAM_SETOPT(c, rc, CURLOPT_SSL_VERIFYHOST, 2L);
	if (upstream_cfg.ca_file != NULL)
		UPSTREAM_SETOPT(c, rc, CURLOPT_CAINFO, upstream_cfg.ca_file);
	/* Resend rejects requests without a User-Agent (403, "error 1010") */
	UPSTREAM_SETOPT(c, rc, CURLOPT_USERAGENT, "MailKit/" PACKAGE_VERSION);
	UPSTREAM_SETOPT(c, rc, CURLOPT_WRITEFUNCTION, upstream_write_cb);
	UPSTREAM_SETOPT(c, rc, CURLOPT_HEADERFUNCTION, upstream_header_cb);
	if (rc == CURLE_OK)
		t->config = gen;
	return rc;
}

/*
 * One attempt on the thread's handle, given at most budget_ms (the
 * request's deadline); the caller reads a->status on CURLE_OK.
 */
static CURLcode
upstream_perform(struct upstream_handle *t, const struct upstream_request *req,
    const char *url, struct curl_slist *headers, struct upstream_attempt *a, long budget_ms)
{
	CURL		*c = t->easy;
	CURLcode	 rc;

	if ((rc = upstream_fixed_options(t)) != CURLE_OK)
		return rc;
	t->errbuf[0] = '\0';
	/* everything a call sets, each call sets: nothing of the last one stays */
	UPSTREAM_SETOPT(c, rc, CURLOPT_CONNECTTIMEOUT_MS,
	    budget_ms < upstream_cfg.connect_timeout_ms ? budget_ms : upstream_cfg.connect_timeout_ms);
	UPSTREAM_SETOPT(c, rc, CURLOPT_TIMEOUT_MS,
	    budget_ms < upstream_cfg.timeout_ms ? budget_ms : upstream_cfg.timeout_ms);
	UPSTREAM_SETOPT(c, rc, CURLOPT_URL, url);
	UPSTREAM_SETOPT(c, rc, CURLOPT_HTTPHEADER, headers);
	UPSTREAM_SETOPT(c, rc, CURLOPT_WRITEDATA, a);
	UPSTREAM_SETOPT(c, rc, CURLOPT_HEADERDATA, a);
	if (strcmp(req->method, "GET") == 0) {
		UPSTREAM_SETOPT(c, rc, CURLOPT_HTTPGET, 1L);
		UPSTREAM_SETOPT(c, rc, CURLOPT_CUSTOMREQUEST, (char *)NULL);
	} else {
		const char *body = req->body != NULL ? req->body : "";

		UPSTREAM_SETOPT(c, rc, CURLOPT_POSTFIELDS, body);
		UPSTREAM_SETOPT(c, rc, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(body));
		UPSTREAM_SETOPT(c, rc, CURLOPT_CUSTOMREQUEST,
		    strcmp(req->method, "POST") != 0 ? req->method : (char *)NULL);
	}
	if (rc != CURLE_OK) {
		t->config = 0;		/* a half-set handle starts over next time */
		return rc;
	}
	rc = upstream_loop_perform(t);
	if (rc == CURLE_OK)
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &a->status);
	return rc;
}

/* Header text we put on the wire must not carry CR/LF (header injection). */
static int
upstream_header_safe(const char *s)
{
	return s != NULL && strpbrk(s, "\r\n") == NULL;
}

static void
upstream_headers_free(struct curl_slist *headers)
{
	struct curl_slist *h;

	/* the list holds a copy of the bearer: wipe it before freeing */
	for (h = headers; h != NULL; h = h->next)
		explicit_bzero(h->data, strlen(h->data));
	curl_slist_free_all(headers);
}

static struct curl_slist *
upstream_headers(const struct upstream_request *req)
{
	struct curl_slist	*list = NULL, *n;
	char			 line[UPSTREAM_HEADER_MAX];
	int			 len;

#define UPSTREAM_ADD(s) do {						\
	if ((n = curl_slist_append(list, (s))) == NULL)			\
		goto fail;						\
	list = n;							\
} while (0)
	UPSTREAM_ADD("Accept: application/json");
	if (req->body != NULL)
		UPSTREAM_ADD("Content-Type: application/json");
	/* no "Expect: 100-continue" round trip on larger bodies */
	UPSTREAM_ADD("Expect:");
	if (req->bearer != NULL) {
		if (!upstream_header_safe(req->bearer))
			goto fail;
		len = snprintf(line, sizeof line, "Authorization: Bearer %s", req->bearer);
		if (len < 0 || (size_t)len >= sizeof line)
			goto fail;
		n = curl_slist_append(list, line);
		explicit_bzero(line, sizeof line);
		if (n == NULL)
			goto fail;
		list = n;
	}
	if (req->auth_header != NULL) {
		if (!upstream_header_safe(req->auth_header) || strchr(req->auth_header, ':') == NULL)
			goto fail;
		UPSTREAM_ADD(req->auth_header);	/* the list's copy is wiped on free */
	}
	if (req->idempotency_key != NULL) {
		if (!upstream_header_safe(req->idempotency_key))
			goto fail;
		len = snprintf(line, sizeof line, "Idempotency-Key: %s", req->idempotency_key);
		if (len < 0 || (size_t)len >= sizeof line)
			goto fail;
		UPSTREAM_ADD(line);
	}
#undef UPSTREAM_ADD
	return list;
fail:
	upstream_headers_free(list);
	return NULL;
}

/* For logs: host and path without scheme or query (queries may carry emails). */
static void
upstream_log_target(const struct upstream_request *req, char *dst, size_t dstlen)
{
	const char	*base = req->base_url, *p;
	size_t		 pathlen = strcspn(req->path, "?");

	if ((p = strstr(base, "://")) != NULL)
		base = p + 3;
	snprintf(dst, dstlen, "%s%.*s", base, (int)pathlen, req->path);
}

int
upstream_call(const struct upstream_request *req, struct upstream_response *resp,
    struct mk_err *err)
{
	struct upstream_handle	*t = NULL;
	struct upstream_attempt	 a;
	struct curl_slist	*headers = NULL;
	char			 url[UPSTREAM_URL_MAX], target[256];
	const char		*sep;
	size_t			 blen;
	CURLcode		 rc;
	int			 len, maybe_done = 0, result = -1;

	memset(resp, 0, sizeof *resp);
	resp->retry_after_ms = -1;
	buf_init(&a.body, UPSTREAM_RESPONSE_MAX);
	if (req->method == NULL || req->base_url == NULL || req->path == NULL) {
		mk_fail(err, 500, "internal error");
		goto out;
	}
	upstream_log_target(req, target, sizeof target);
	/* exactly one '/' between base and path */
	blen = strlen(req->base_url);
	if (blen > 0 && req->base_url[blen - 1] == '/')
		blen--;
	sep = req->path[0] == '/' ? "" : "/";
	len = snprintf(url, sizeof url, "%.*s%s%s", (int)blen, req->base_url, sep, req->path);
	if (len < 0 || (size_t)len >= sizeof url) {
		log_warn("upstream %s %s: URL too long", req->method, target);
		mk_fail(err, 502, "upstream request too large");
		goto out;
	}
	pthread_once(&upstream_once, upstream_init_once);
	if (!upstream_ready || (t = upstream_loop_take()) == NULL) {
		log_error("upstream: cannot create a libcurl handle");
		mk_fail(err, 502, "upstream unavailable");
		goto out;
	}
	if ((headers = upstream_headers(req)) == NULL) {
		log_error("upstream %s %s: cannot build request headers", req->method, target);
		mk_fail(err, 502, "upstream unavailable");
		goto out;
	}

	for (;;) {
		int	retry_ok;
		long	left = upstream_remaining_ms();

		if (left <= 0) {
			/* the request's deadline passed during a backoff: a timeout */
			log_warn("upstream %s %s: request deadline passed (attempt %d)",
			    req->method, target, resp->attempts + 1);
			mk_fail(err, 504, "upstream timed out");
			if (err != NULL)
				err->maybe_done = maybe_done;
			goto out;
		}
		buf_reset(&a.body);
		a.status = 0;
		a.too_big = 0;
		a.retry_after_ms = -1;
		a.should_retry = -1;
		resp->attempts++;
		rc = upstream_perform(t, req, url, headers, &a, left);
		retry_ok = req->retry_safe && resp->attempts <= upstream_cfg.max_retries;

		if (rc != CURLE_OK) {
			int timeout = rc == CURLE_OPERATION_TIMEDOUT;

			/* sticky: an earlier attempt that may have landed still may have */
			if (a.too_big || upstream_maybe_sent(t->easy, rc))
				maybe_done = 1;
			if (a.too_big)
				log_warn("upstream %s %s: response over %d bytes (attempt %d)",
				    req->method, target, UPSTREAM_RESPONSE_MAX, resp->attempts);
			else
				log_warn("upstream %s %s: %s (attempt %d)", req->method, target,
				    t->errbuf[0] != '\0' ? t->errbuf : curl_easy_strerror(rc),
				    resp->attempts);
			if (retry_ok && !a.too_big && upstream_curl_retryable(rc) &&
			    upstream_pause(resp->attempts, -1) == 0)
				continue;
			if (a.too_big)
				mk_fail(err, 502, "upstream response too large");
			else if (timeout)
				mk_fail(err, 504, "upstream timed out");
			else
				mk_fail(err, 502, "upstream unavailable");
			if (err != NULL)
				err->maybe_done = maybe_done;
			goto out;
		}

		resp->status = a.status;
		resp->retry_after_ms = a.retry_after_ms;
		if (a.status >= 400)
			log_warn("upstream %s %s: HTTP %ld (attempt %d)", req->method, target,
			    a.status, resp->attempts);
		if (retry_ok && upstream_status_retryable(&a)) {
			/* a 5xx may come after the server acted (it applied, then failed) */
			if (a.status >= 500)
				maybe_done = 1;
			if (upstream_pause(resp->attempts, a.retry_after_ms) == 0)
				continue;
			log_warn("upstream %s %s: a retry would wait past Retry-After's "
			    "ceiling or the request's deadline, not retrying", req->method, target);
		}
		resp->json = upstream_parse_json(a.body.data, a.body.len);
		resp->earlier_maybe_done = maybe_done;
		result = 0;
		break;
	}
out:
	/* no request of ours stays on it: the next call sets its own */
	if (t != NULL)
		upstream_loop_give(t);
	if (headers != NULL)
		upstream_headers_free(headers);
	buf_free(&a.body);
	return result;
}
