/* test_upstream.c: upstream, dodo and mail_resend against a scripted in-process HTTP/1.1 server. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <json-c/json.h>

#include "dodo.h"
#include "err.h"
#include "mail.h"
#include "settings.h"
#include "upstream.h"

/* ---------------------------------------------------------------- test server */

#define TS_SCRIPT_MAX	8	/* scripted replies; the last one repeats */
#define TS_REQUESTS_MAX	16	/* requests recorded */
#define TS_HEADERS_MAX	4096	/* recorded header bytes per request */
#define TS_BODY_MAX	4096	/* recorded body bytes per request */
#define TS_INBUF_MAX	65536	/* one request's headers + body */
#define TS_CHUNK	65536	/* bytes per send() of an oversized reply */

struct ts_reply {
	int		 status;
	const char	*headers;	/* extra "Name: value\r\n" lines, or NULL */
	const char	*body;		/* or NULL */
	int		 stall_ms;	/* wait this long, then hang up without replying */
	size_t		 big;		/* >0: send a body of this many bytes instead */
};

struct ts_request {
	char	method[16];
	char	path[1024];
	char	headers[TS_HEADERS_MAX];
	char	body[TS_BODY_MAX];
};

static struct {
	int			 lfd;
	int			 stop[2];
	int			 port;
	pthread_t		 thread;
	pthread_mutex_t		 mu;
	struct ts_reply		 script[TS_SCRIPT_MAX];
	int			 nscript;
	int			 next;		/* index of the next scripted reply */
	int			 connections;
	int			 requests;
	struct ts_request	 req[TS_REQUESTS_MAX];
} ts;

static char		base_url[64];
static struct settings	S;

/* Wait for fd (or, with fd2 >= 0, fd2) to be ready.  1 fd, 2 fd2, 0 timeout, -1 stop/error. */
static int
ts_wait(int fd, int fd2, short ev, int ms)
{
	struct pollfd	p[3] = {
		{ .fd = ts.stop[0], .events = POLLIN },
		{ .fd = fd, .events = ev },
		{ .fd = fd2, .events = POLLIN },
	};
	int		r = poll(p, fd2 >= 0 ? 3 : 2, ms);

	if (r <= 0)
		return r == 0 ? 0 : -1;
	if (p[0].revents != 0)
		return -1;
	if (p[1].revents != 0)
		return 1;
	return 2;
}

static int
ts_send_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);

		if (w <= 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

static void
ts_reply_send(int fd, const struct ts_reply *r)
{
	char	head[1024];
	size_t	blen = r->big > 0 ? r->big : (r->body != NULL ? strlen(r->body) : 0);
	int	n;

	n = snprintf(head, sizeof head, "HTTP/1.1 %d Scripted\r\nContent-Length: %zu\r\n"
	    "Content-Type: application/json\r\n%s\r\n", r->status, blen,
	    r->headers != NULL ? r->headers : "");
	if (ts_send_all(fd, head, (size_t)n) == -1)
		return;
	if (r->big > 0) {
		static char chunk[TS_CHUNK];
		size_t sent = 0;

		memset(chunk, 'x', sizeof chunk);
		while (sent < r->big) {
			size_t k = r->big - sent < sizeof chunk ? r->big - sent : sizeof chunk;

			if (ts_send_all(fd, chunk, k) == -1)
				return;
			sent += k;
		}
	} else if (blen > 0)
		ts_send_all(fd, r->body, blen);
}

/* Serve requests on one keep-alive connection until it closes.  Returns at once
 * when idle and another connection is waiting (as real servers drop idle ones). */
static void
ts_serve_conn(int fd)
{
	static char	 in[TS_INBUF_MAX];
	size_t		 len = 0, hdrlen, clen;
	char		*eoh, *cl;
	ssize_t		 n;

	for (;;) {
		struct ts_reply	reply;
		int		i;

		while ((eoh = memmem(in, len, "\r\n\r\n", 4)) == NULL) {
			int w = ts_wait(fd, len == 0 ? ts.lfd : -1, POLLIN, -1);

			if (w != 1 || len == sizeof in - 1)
				return;
			if ((n = recv(fd, in + len, sizeof in - 1 - len, 0)) <= 0)
				return;
			len += (size_t)n;
		}
		hdrlen = (size_t)(eoh + 4 - in);
		in[len] = '\0';
		clen = 0;
		eoh[2] = '\0';	/* headers end at the first CRLF of the blank line */
		if ((cl = strcasestr(in, "\r\ncontent-length:")) != NULL)
			clen = strtoul(cl + 17, NULL, 10);
		eoh[2] = '\r';
		if (hdrlen + clen >= sizeof in)
			return;
		while (len < hdrlen + clen) {
			if (ts_wait(fd, -1, POLLIN, -1) != 1 ||
			    (n = recv(fd, in + len, sizeof in - 1 - len, 0)) <= 0)
				return;
			len += (size_t)n;
		}

		pthread_mutex_lock(&ts.mu);
		i = ts.requests++;
		if (i < TS_REQUESTS_MAX) {
			struct ts_request *r = &ts.req[i];

			sscanf(in, "%15s %1023s", r->method, r->path);
			snprintf(r->headers, sizeof r->headers, "%.*s", (int)hdrlen, in);
			snprintf(r->body, sizeof r->body, "%.*s", (int)clen, in + hdrlen);
		}
		reply = ts.script[ts.next < ts.nscript ? ts.next : ts.nscript - 1];
		if (ts.next < ts.nscript)
			ts.next++;
		pthread_mutex_unlock(&ts.mu);

		memmove(in, in + hdrlen + clen, len - hdrlen - clen);
		len -= hdrlen + clen;
		if (reply.stall_ms > 0) {
			ts_wait(-1, -1, 0, reply.stall_ms);
			return;
		}
		ts_reply_send(fd, &reply);
		if (reply.big > 0)
			return;
	}
}

static void *
ts_main(void *arg)
{
	struct timeval	tv = { .tv_sec = 2 };
	int		fd;

	(void)arg;
	while (ts_wait(ts.lfd, -1, POLLIN, -1) == 1) {
		if ((fd = accept(ts.lfd, NULL, NULL)) == -1)
			continue;
		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
		pthread_mutex_lock(&ts.mu);
		ts.connections++;
		pthread_mutex_unlock(&ts.mu);
		ts_serve_conn(fd);
		close(fd);
	}
	return NULL;
}

/* Set the replies for the next requests (resets the script position). */
static void
ts_script(const struct ts_reply *replies, int n)
{
	pthread_mutex_lock(&ts.mu);
	memcpy(ts.script, replies, sizeof *replies * (size_t)n);
	ts.nscript = n;
	ts.next = 0;
	pthread_mutex_unlock(&ts.mu);
}

#define SCRIPT(...) do {						\
	const struct ts_reply r_[] = { __VA_ARGS__ };			\
	ts_script(r_, (int)(sizeof r_ / sizeof r_[0]));			\
} while (0)

static int
ts_count(const int *field)
{
	int v;

	pthread_mutex_lock(&ts.mu);
	v = *field;
	pthread_mutex_unlock(&ts.mu);
	return v;
}

static struct ts_request *
ts_req(int i)
{
	cr_assert_lt(i, ts_count(&ts.requests), "request %d was not received", i);
	return &ts.req[i];
}

/* A socket bound to a port but not listening: connecting to it is refused. */
static int
ts_refusing_port(int *fdp)
{
	struct sockaddr_in	sin = { .sin_family = AF_INET };
	socklen_t		slen = sizeof sin;
	int			fd;

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	fd = socket(AF_INET, SOCK_STREAM, 0);
	cr_assert_geq(fd, 0);
	cr_assert_eq(bind(fd, (struct sockaddr *)&sin, sizeof sin), 0);
	cr_assert_eq(getsockname(fd, (struct sockaddr *)&sin, &slen), 0);
	*fdp = fd;
	return ntohs(sin.sin_port);
}

static void
setup(void)
{
	struct sockaddr_in	sin = { .sin_family = AF_INET };
	socklen_t		slen = sizeof sin;

	memset(&ts, 0, sizeof ts);
	pthread_mutex_init(&ts.mu, NULL);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ts.lfd = socket(AF_INET, SOCK_STREAM, 0);
	cr_assert_geq(ts.lfd, 0);
	cr_assert_eq(bind(ts.lfd, (struct sockaddr *)&sin, sizeof sin), 0);
	cr_assert_eq(listen(ts.lfd, 16), 0);
	cr_assert_eq(getsockname(ts.lfd, (struct sockaddr *)&sin, &slen), 0);
	ts.port = ntohs(sin.sin_port);
	cr_assert_eq(pipe(ts.stop), 0);
	SCRIPT({ .status = 200, .body = "{}" });
	cr_assert_eq(pthread_create(&ts.thread, NULL, ts_main, NULL), 0);

	snprintf(base_url, sizeof base_url, "http://127.0.0.1:%d", ts.port);
	memset(&S, 0, sizeof S);
	S.dodo_api_key = "dodo_test_key";
	S.dodo_base_url = base_url;
	S.credit_entitlement_id = "cde_test";
	S.resend_api_key = "re_test_key";
	S.resend_base_url = base_url;
	S.mail_from = "MailKit <mail@example.org>";
	S.mail_provider = "resend";
	S.connect_timeout_ms = 1000;
	S.timeout_ms = 3000;
	S.max_retries = 2;
	upstream_configure(&S);
}

static void
teardown(void)
{
	(void)!write(ts.stop[1], "x", 1);
	pthread_join(ts.thread, NULL);
	close(ts.lfd);
	close(ts.stop[0]);
	close(ts.stop[1]);
}

static double
now_s(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

static struct upstream_request
get_req(const char *path)
{
	struct upstream_request r = {
		.method = "GET", .base_url = base_url, .path = path,
		.bearer = "tok", .retry_safe = 1,
	};

	return r;
}

TestSuite(upstream, .init = setup, .fini = teardown, .timeout = 15);

/* ---------------------------------------------------------------- upstream */

Test(upstream, get_parses_json)
{
	struct upstream_request		req = get_req("/thing");
	struct upstream_response	resp;
	struct mk_err			err;
	json_object			*v;

	SCRIPT({ .status = 200, .body = "{\"a\": 1, \"b\": \"x\"}" });
	cr_assert_eq(upstream_call(&req, &resp, &err), 0);
	cr_assert_eq(resp.status, 200);
	cr_assert_eq(resp.attempts, 1);
	cr_assert_eq(resp.retry_after_ms, -1);
	cr_assert_not_null(resp.json);
	cr_assert(json_object_object_get_ex(resp.json, "b", &v));
	cr_assert_str_eq(json_object_get_string(v), "x");
	cr_assert_str_eq(ts_req(0)->method, "GET");
	cr_assert_str_eq(ts_req(0)->path, "/thing");
	upstream_response_free(&resp);
	cr_assert_null(resp.json);
}

Test(upstream, non_json_body_gives_null)
{
	struct upstream_request		req = get_req("/thing");
	struct upstream_response	resp;
	struct mk_err			err;

	SCRIPT({ .status = 200, .body = "{\"a\": 1} trailing" });
	cr_assert_eq(upstream_call(&req, &resp, &err), 0);
	cr_assert_null(resp.json);
	SCRIPT({ .status = 204 });
	cr_assert_eq(upstream_call(&req, &resp, &err), 0);
	cr_assert_eq(resp.status, 204);
	cr_assert_null(resp.json);
}

Test(upstream, sends_headers_and_body)
{
	struct upstream_request		req = {
		.method = "POST", .base_url = base_url, .path = "/emails",
		.bearer = "sekret_token", .idempotency_key = "send/abc-1",
		.body = "{\"x\":1}", .retry_safe = 0,
	};
	struct upstream_response	resp;
	struct mk_err			err;
	const char			*h;

	cr_assert_eq(upstream_call(&req, &resp, &err), 0);
	h = ts_req(0)->headers;
	cr_assert_str_eq(ts_req(0)->method, "POST");
	cr_assert_not_null(strcasestr(h, "\r\nAuthorization: Bearer sekret_token\r\n"), "%s", h);
	cr_assert_not_null(strcasestr(h, "\r\nUser-Agent: MailKit/"), "%s", h);
	cr_assert_not_null(strcasestr(h, "\r\nIdempotency-Key: send/abc-1\r\n"), "%s", h);
	cr_assert_not_null(strcasestr(h, "\r\nContent-Type: application/json\r\n"), "%s", h);
	cr_assert_not_null(strcasestr(h, "\r\nAccept: application/json\r\n"), "%s", h);
	cr_assert_null(strcasestr(h, "\r\nExpect:"), "%s", h);
	cr_assert_str_eq(ts_req(0)->body, "{\"x\":1}");
	upstream_response_free(&resp);
}

Test(upstream, base_url_trailing_slash)
{
	struct upstream_request		req = get_req("/a/b");
	struct upstream_response	resp;
	struct mk_err			err;
	char				base[80];

	snprintf(base, sizeof base, "%s/prefix/", base_url);
	req.base_url = base;
	cr_assert_eq(upstream_call(&req, &resp, &err), 0);
	cr_assert_str_eq(ts_req(0)->path, "/prefix/a/b");
	upstream_response_free(&resp);
}

Test(upstream, retries_500_with_default_backoff)
{
	struct upstream_request		req = get_req("/r");
	struct upstream_response	resp;
	struct mk_err			err;
	double				t0 = now_s(), dt;

	SCRIPT({ .status = 500, .body = "{}" }, { .status = 200, .body = "{\"ok\":true}" });
	cr_assert_eq(upstream_call(&req, &resp, &err), 0);
	dt = now_s() - t0;
	cr_assert_eq(resp.status, 200);
	cr_assert_eq(resp.attempts, 2);
	cr_assert_eq(ts_count(&ts.requests), 2);
	/* first retry waits 0.5 s times a jitter in (0.75, 1] */
	cr_assert_geq(dt, 0.37, "%f", dt);
	cr_assert_lt(dt, 1.5, "%f", dt);
	upstream_response_free(&resp);
}

Test(upstream, retry_after_ms_and_exhaustion)
{
	struct upstream_request		req = get_req("/r");
	struct upstream_response	resp;
	struct mk_err			err;
	double				t0 = now_s();

	SCRIPT({ .status = 503, .headers = "retry-after-ms: 20\r\n", .body = "{}" });
	cr_assert_eq(upstream_call(&req, &resp, &err), 0);
	cr_assert_eq(resp.status, 503);
	cr_assert_eq(resp.attempts, 3);		/* 1 + max_retries */
	cr_assert_eq(resp.retry_after_ms, 20);
	cr_assert_eq(ts_count(&ts.requests), 3);
	cr_assert_lt(now_s() - t0, 0.5);
	upstream_response_free(&resp);
}

Test(upstream, retry_after_seconds_honoured)
{
	struct upstream_request		req = get_req("/r");
	struct upstream_response	resp;
	struct mk_err			err;
	double				t0 = now_s(), dt;

	SCRIPT({ .status = 429, .headers = "Retry-After: 1\r\n", .body = "{}" },
	    { .status = 200, .body = "{}" });
	cr_assert_eq(upstream_call(&req, &resp, &err), 0);
	dt = now_s() - t0;
	cr_assert_eq(resp.status, 200);
	cr_assert_eq(resp.attempts, 2);
	cr_assert_geq(dt, 0.95, "%f", dt);
	cr_assert_lt(dt, 2.0, "%f", dt);
	upstream_response_free(&resp);
}

Test(upstream, retry_after_too_long_returns_response)
{
	struct upstream_request		req = get_req("/r");
	struct upstream_response	resp;
	struct mk_err			err;
	double				t0 = now_s();

	SCRIPT({ .status = 429, .headers = "Retry-After: 60\r\n", .body = "{}" },
	    { .status = 200, .body = "{}" });
	cr_assert_eq(upstream_call(&req, &resp, &err), 0);
	cr_assert_eq(resp.status, 429);
	cr_assert_eq(resp.attempts, 1);
	cr_assert_eq(resp.retry_after_ms, 60000);
	cr_assert_lt(now_s() - t0, 0.5);
	upstream_response_free(&resp);
}

Test(upstream, retry_after_http_date)
{
	struct upstream_request		req = get_req("/r");
	struct upstream_response	resp;
	struct mk_err			err;
	char				hdr[128];
	time_t				when = time(NULL) + 3600;
	struct tm			tm;

	gmtime_r(&when, &tm);
	strftime(hdr, sizeof hdr, "Retry-After: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
	SCRIPT({ .status = 503, .headers = hdr }, { .status = 200 });
	cr_assert_eq(upstream_call(&req, &resp, &err), 0);
	/* an hour away: far past UPSTREAM_RETRY_AFTER_MAX_MS, so not waited for */
	cr_assert_eq(resp.status, 503);
	cr_assert_eq(resp.attempts, 1);
	cr_assert_geq(resp.retry_after_ms, 3590000);
	cr_assert_leq(resp.retry_after_ms, 3600000);
}

Test(upstream, no_retry_when_not_retry_safe)
{
	struct upstream_request		req = {
		.method = "POST", .base_url = base_url, .path = "/checkouts",
		.body = "{}", .retry_safe = 0,
	};
	struct upstream_response	resp;
	struct mk_err			err;

	SCRIPT({ .status = 500, .headers = "retry-after-ms: 1\r\n" }, { .status = 200 });
	cr_assert_eq(upstream_call(&req, &resp, &err), 0);
	cr_assert_eq(resp.status, 500);
	cr_assert_eq(resp.attempts, 1);
	cr_assert_eq(ts_count(&ts.requests), 1);
}

Test(upstream, no_retry_on_409)
{
	struct upstream_request		req = get_req("/r");
	struct upstream_response	resp;
	struct mk_err			err;

	SCRIPT({ .status = 409, .headers = "x-should-retry: true\r\nretry-after-ms: 1\r\n" },
	    { .status = 200 });
	cr_assert_eq(upstream_call(&req, &resp, &err), 0);
	cr_assert_eq(resp.status, 409);
	cr_assert_eq(resp.attempts, 1);
}

Test(upstream, x_should_retry_header)
{
	struct upstream_request		req = get_req("/r");
	struct upstream_response	resp;
	struct mk_err			err;

	SCRIPT({ .status = 503, .headers = "X-Should-Retry: false\r\nretry-after-ms: 1\r\n" },
	    { .status = 200 });
	cr_assert_eq(upstream_call(&req, &resp, &err), 0);
	cr_assert_eq(resp.status, 503);
	cr_assert_eq(resp.attempts, 1);

	/* "true" makes an otherwise final 400 retryable */
	SCRIPT({ .status = 400, .headers = "x-should-retry: true\r\nretry-after-ms: 1\r\n" },
	    { .status = 200 });
	cr_assert_eq(upstream_call(&req, &resp, &err), 0);
	cr_assert_eq(resp.status, 200);
	cr_assert_eq(resp.attempts, 2);
}

Test(upstream, timeout_is_504_maybe_done)
{
	struct upstream_request		req = {
		.method = "POST", .base_url = base_url, .path = "/slow",
		.body = "{}", .retry_safe = 0,
	};
	struct upstream_response	resp;
	struct mk_err			err;
	double				t0 = now_s(), dt;

	S.timeout_ms = 300;
	upstream_configure(&S);
	SCRIPT({ .status = 200, .stall_ms = 3000 });
	cr_assert_eq(upstream_call(&req, &resp, &err), -1);
	dt = now_s() - t0;
	cr_assert_eq(err.status, 504);
	cr_assert_eq(err.maybe_done, 1);
	cr_assert_eq(resp.attempts, 1);
	cr_assert_geq(dt, 0.25, "%f", dt);
	cr_assert_lt(dt, 1.5, "%f", dt);
}

/* A stalled POST on a thread of its own: its result and how long it took. */
struct stalled_call {
	struct mk_err	err;
	int		rc;
	double		seconds;
};

static void *
stalled_call_run(void *arg)
{
	struct stalled_call		*c = arg;
	struct upstream_request		 req = {
		.method = "POST", .base_url = base_url, .path = "/slow",
		.body = "{}", .retry_safe = 0,
	};
	struct upstream_response	 resp;
	double				 t0 = now_s();

	c->rc = upstream_call(&req, &resp, &c->err);
	c->seconds = now_s() - t0;
	upstream_response_free(&resp);
	return NULL;
}

Test(upstream, timeout_kept_while_other_calls_start)
{
	struct upstream_request		req = get_req("/later");
	struct upstream_response	resp;
	struct mk_err			err;
	struct stalled_call		c = { .rc = 0 };
	pthread_t			tid;

	/* the server stalls the first call and, busy with it, answers no other */
	S.timeout_ms = 500;
	S.max_retries = 0;
	upstream_configure(&S);
	SCRIPT({ .status = 200, .stall_ms = 4000 });
	cr_assert_eq(pthread_create(&tid, NULL, stalled_call_run, &c), 0);
	usleep(150 * 1000);
	/* a second transfer joining the shared multi handle must not lose the first one's timer */
	(void)upstream_call(&req, &resp, &err);
	upstream_response_free(&resp);
	pthread_join(tid, NULL);
	cr_assert_eq(c.rc, -1);
	cr_assert_eq(c.err.status, 504, "%d %s", c.err.status, c.err.msg);
	cr_assert_lt(c.seconds, 1.5, "the stalled call took %f s", c.seconds);
}

Test(upstream, connection_refused_is_502_not_done)
{
	struct upstream_request		req = get_req("/r");
	struct upstream_response	resp;
	struct mk_err			err;
	char				base[64];
	int				fd, port = ts_refusing_port(&fd);

	S.max_retries = 0;
	upstream_configure(&S);
	snprintf(base, sizeof base, "http://127.0.0.1:%d", port);
	req.base_url = base;
	cr_assert_eq(upstream_call(&req, &resp, &err), -1);
	cr_assert_eq(err.status, 502);
	cr_assert_eq(err.maybe_done, 0);
	cr_assert_eq(resp.attempts, 1);
	close(fd);
}

Test(upstream, connection_refused_is_retried)
{
	struct upstream_request		req = get_req("/r");
	struct upstream_response	resp;
	struct mk_err			err;
	char				base[64];
	int				fd, port = ts_refusing_port(&fd);

	S.max_retries = 1;
	upstream_configure(&S);
	snprintf(base, sizeof base, "http://127.0.0.1:%d", port);
	req.base_url = base;
	cr_assert_eq(upstream_call(&req, &resp, &err), -1);
	cr_assert_eq(err.status, 502);
	cr_assert_eq(resp.attempts, 2);
	close(fd);
}

Test(upstream, oversized_response_fails)
{
	struct upstream_request		req = get_req("/big");
	struct upstream_response	resp;
	struct mk_err			err;

	SCRIPT({ .status = 200, .big = UPSTREAM_RESPONSE_MAX + 1 });
	cr_assert_eq(upstream_call(&req, &resp, &err), -1);
	cr_assert_eq(err.status, 502);
	cr_assert_eq(resp.attempts, 1);		/* not retried: it would be as big again */
	cr_assert_null(resp.json);

	/* exactly at the cap is fine */
	SCRIPT({ .status = 200, .big = UPSTREAM_RESPONSE_MAX });
	cr_assert_eq(upstream_call(&req, &resp, &err), 0);
	cr_assert_eq(resp.status, 200);
	upstream_response_free(&resp);
}

Test(upstream, keep_alive_reuses_connection)
{
	struct upstream_request		req = get_req("/one");
	struct upstream_response	resp;
	struct mk_err			err;

	SCRIPT({ .status = 200, .body = "{}" });
	cr_assert_eq(upstream_call(&req, &resp, &err), 0);
	upstream_response_free(&resp);
	req.path = "/two";
	cr_assert_eq(upstream_call(&req, &resp, &err), 0);
	upstream_response_free(&resp);
	cr_assert_eq(ts_count(&ts.requests), 2);
	cr_assert_eq(ts_count(&ts.connections), 1);
}

/* One GET of /shared from a thread of its own (the request threads' case). */
static void *
call_from_thread(void *arg)
{
	struct upstream_request		req = get_req("/shared");
	struct upstream_response	resp;
	struct mk_err			err;
	int				*ok = arg;

	*ok = upstream_call(&req, &resp, &err) == 0 && resp.status == 200;
	upstream_response_free(&resp);
	return NULL;
}

Test(upstream, keep_alive_shared_across_threads)
{
	pthread_t	tid;
	int		ok[3] = { 0 };

	/* one after another, each on a new thread: one connection serves all */
	for (int i = 0; i < 3; i++) {
		cr_assert_eq(pthread_create(&tid, NULL, call_from_thread, &ok[i]), 0);
		pthread_join(tid, NULL);
		cr_assert(ok[i], "call %d failed", i);
	}
	cr_assert_eq(ts_count(&ts.requests), 3);
	cr_assert_eq(ts_count(&ts.connections), 1,
	    "threads did not share the keep-alive connection");
}

/* ---------------------------------------------------------------- dodo */

Test(upstream, dodo_ledger_outcomes)
{
	struct dodo_ledger_result	out;
	struct mk_err			err;
	json_object			*body, *v;

	SCRIPT({ .status = 201, .body = "{\"id\":\"cle_1\",\"amount\":\"1\","
	    "\"balance_before\":\"5\",\"balance_after\":\"4\",\"entry_type\":\"debit\"}" });
	cr_assert_eq(dodo_ledger_entry(&S, "cus_1", DODO_DEBIT, "1", "email send",
	    "send/k1", NULL, &out, &err), 0);
	cr_assert_eq(out.outcome, DODO_LEDGER_APPLIED);
	cr_assert_str_eq(out.entry_id, "cle_1");
	cr_assert_str_eq(out.balance_after, "4");
	cr_assert_str_eq(ts_req(0)->path,
	    "/credit-entitlements/cde_test/balances/cus_1/ledger-entries");
	cr_assert_not_null(strcasestr(ts_req(0)->headers, "\r\nAuthorization: Bearer dodo_test_key\r\n"));
	body = json_tokener_parse(ts_req(0)->body);
	cr_assert_not_null(body);
	cr_assert(json_object_object_get_ex(body, "entry_type", &v));
	cr_assert_str_eq(json_object_get_string(v), "debit");
	cr_assert(json_object_object_get_ex(body, "amount", &v));
	cr_assert(json_object_is_type(v, json_type_string), "amount must be a string");
	cr_assert_str_eq(json_object_get_string(v), "1");
	cr_assert(json_object_object_get_ex(body, "idempotency_key", &v));
	cr_assert_str_eq(json_object_get_string(v), "send/k1");
	cr_assert(json_object_object_get_ex(body, "reason", &v));
	cr_assert_str_eq(json_object_get_string(v), "email send");
	json_object_put(body);

	SCRIPT({ .status = 409, .body = "{\"code\":\"CONFLICT\",\"message\":\"key exists\"}" });
	cr_assert_eq(dodo_ledger_entry(&S, "cus_1", DODO_DEBIT, "1", NULL, "send/k1", NULL, &out, &err), 0);
	cr_assert_eq(out.outcome, DODO_LEDGER_DUPLICATE);
	cr_assert_str_eq(out.entry_id, "");

	SCRIPT({ .status = 400, .body = "{\"code\":\"INSUFFICIENT\",\"message\":\"no\"}" });
	cr_assert_eq(dodo_ledger_entry(&S, "cus_1", DODO_DEBIT, "1", NULL, "send/k2", NULL, &out, &err), 0);
	cr_assert_eq(out.outcome, DODO_LEDGER_INSUFFICIENT);
	/* a 400 on a credit is not "insufficient" */
	cr_assert_eq(dodo_ledger_entry(&S, "cus_1", DODO_CREDIT, "1", NULL, "refund/k2", NULL, &out, &err), -1);
	cr_assert_eq(err.status, 502);

	SCRIPT({ .status = 404, .body = "{\"code\":\"NOT_FOUND\",\"message\":\"nope\"}" });
	cr_assert_eq(dodo_ledger_entry(&S, "cus_x", DODO_DEBIT, "1", NULL, "send/k3", NULL, &out, &err), -1);
	cr_assert_eq(err.status, 404);
	cr_assert_str_eq(err.msg, "unknown customer");
}

Test(upstream, dodo_ledger_retries_then_duplicate)
{
	struct dodo_ledger_result	out;
	struct mk_err			err;

	/* the first attempt landed but its answer was lost: the retry sees 409 */
	SCRIPT({ .status = 502, .headers = "retry-after-ms: 5\r\n" }, { .status = 409, .body = "{}" });
	cr_assert_eq(dodo_ledger_entry(&S, "cus_1", DODO_DEBIT, "1", NULL, "send/k9", NULL, &out, &err), 0);
	cr_assert_eq(out.outcome, DODO_LEDGER_DUPLICATE);
	cr_assert_eq(ts_count(&ts.requests), 2);
}

/* A 2xx without the entry (a proxy's empty 200) proves nothing: outcome unknown. */
Test(upstream, dodo_ledger_empty_success_is_unknown)
{
	struct dodo_ledger_result	out;
	struct mk_err			err;

	SCRIPT({ .status = 200, .body = "" });
	cr_assert_eq(dodo_ledger_entry(&S, "cus_1", DODO_DEBIT, "1", NULL, "send/k7", NULL, &out,
	    &err), -1);
	cr_assert_eq(err.status, 502);
	cr_assert_eq(err.maybe_done, 1);
}

/* "Insufficient" after an attempt that may have landed says so (billing fences it). */
Test(upstream, dodo_ledger_insufficient_after_a_5xx_is_unsure)
{
	struct dodo_ledger_result	out;
	struct mk_err			err;

	SCRIPT({ .status = 500, .headers = "retry-after-ms: 5\r\n" },
	    { .status = 400, .body = "{\"code\":\"INSUFFICIENT\",\"message\":\"no\"}" });
	cr_assert_eq(dodo_ledger_entry(&S, "cus_1", DODO_DEBIT, "1", NULL, "send/k8", NULL, &out,
	    &err), 0);
	cr_assert_eq(out.outcome, DODO_LEDGER_INSUFFICIENT);
	cr_assert_eq(out.earlier_maybe_done, 1);
	SCRIPT({ .status = 400, .body = "{\"code\":\"INSUFFICIENT\",\"message\":\"no\"}" });
	cr_assert_eq(dodo_ledger_entry(&S, "cus_1", DODO_DEBIT, "1", NULL, "send/k8", NULL, &out,
	    &err), 0);
	cr_assert_eq(out.earlier_maybe_done, 0, "a first answer is proof");
}

Test(upstream, dodo_get_balance_fields)
{
	struct dodo_balance	b;
	struct mk_err		err;

	SCRIPT({ .status = 200, .body = "{\"id\":\"cb_1\",\"balance\":\"4999\",\"overage\":\"0\","
	    "\"credit_entitlement_id\":\"cde_test\",\"customer_id\":\"cus_1\","
	    "\"created_at\":\"2026-01-01T00:00:00Z\",\"updated_at\":\"2026-01-02T00:00:00Z\","
	    "\"last_transaction_at\":null}" });
	cr_assert_eq(dodo_get_balance(&S, "cus_1", &b, &err), 0);
	cr_assert_str_eq(b.balance, "4999");
	cr_assert_str_eq(b.overage, "0");
	cr_assert_str_eq(b.last_transaction_at, "");
	cr_assert_str_eq(ts_req(0)->method, "GET");
	cr_assert_str_eq(ts_req(0)->path, "/credit-entitlements/cde_test/balances/cus_1");

	SCRIPT({ .status = 200, .body = "{\"balance\":\"12.5\",\"overage\":\"3\","
	    "\"last_transaction_at\":\"2026-11-21T12:00:00Z\"}" });
	cr_assert_eq(dodo_get_balance(&S, "cus_1", &b, &err), 0);
	cr_assert_str_eq(b.balance, "12.5");
	cr_assert_str_eq(b.overage, "3");
	cr_assert_str_eq(b.last_transaction_at, "2026-11-21T12:00:00Z");

	SCRIPT({ .status = 404, .body = "{\"code\":\"NOT_FOUND\",\"message\":\"x\"}" });
	cr_assert_eq(dodo_get_balance(&S, "cus_2", &b, &err), -1);
	cr_assert_eq(err.status, 404);

	SCRIPT({ .status = 401, .body = "{\"code\":\"UNAUTHORIZED\",\"message\":\"bad key\"}" });
	cr_assert_eq(dodo_get_balance(&S, "cus_2", &b, &err), -1);
	cr_assert_eq(err.status, 502);
	cr_assert_null(strstr(err.msg, "bad key"), "Dodo's message leaked: %s", err.msg);

	SCRIPT({ .status = 200, .body = "not json" });
	cr_assert_eq(dodo_get_balance(&S, "cus_2", &b, &err), -1);
	cr_assert_eq(err.status, 502);
}

Test(upstream, dodo_ids_are_one_encoded_segment)
{
	struct dodo_customer	c;
	struct mk_err		err;

	SCRIPT({ .status = 200, .body = "{\"customer_id\":\"cus_1\",\"email\":\"a@example.org\","
	    "\"name\":null}" });
	cr_assert_eq(dodo_get_customer(&S, "a/b?c#d", &c, &err), 0);
	cr_assert_str_eq(ts_req(0)->path, "/customers/a%2Fb%3Fc%23d");
	cr_assert_str_eq(c.customer_id, "cus_1");
	cr_assert_str_eq(c.email, "a@example.org");
	cr_assert_str_eq(c.name, "");

	cr_assert_eq(dodo_get_customer(&S, "../x", &c, &err), 0);
	cr_assert_str_eq(ts_req(1)->path, "/customers/%2E%2E%2Fx");
}

Test(upstream, dodo_checkout_not_retried_and_body)
{
	struct dodo_checkout	co;
	struct mk_err		err;
	json_object		*body, *v, *cust;

	SCRIPT({ .status = 500, .headers = "retry-after-ms: 1\r\n" },
	    { .status = 200, .body = "{\"session_id\":\"cks_1\",\"checkout_url\":\"https://x/cks_1\"}" });
	cr_assert_eq(dodo_create_checkout(&S, "pdt_plan", NULL, "a@example.org", "Ann",
	    "https://shop/return", NULL, &co, &err), -1);
	cr_assert_eq(err.status, 502);
	cr_assert_eq(ts_count(&ts.requests), 1);

	cr_assert_eq(dodo_create_checkout(&S, "pdt_plan", NULL, "a@example.org", "Ann",
	    "https://shop/return", "b1nd", &co, &err), 0);
	cr_assert_str_eq(co.session_id, "cks_1");
	cr_assert_str_eq(co.checkout_url, "https://x/cks_1");
	cr_assert_str_eq(ts_req(1)->path, "/checkouts");
	/* no slash escaping in URLs we send */
	cr_assert_not_null(strstr(ts_req(1)->body, "\"https://shop/return\""), "%s", ts_req(1)->body);
	body = json_tokener_parse(ts_req(1)->body);
	cr_assert_not_null(body);
	cr_assert(json_object_object_get_ex(body, "customer", &cust));
	cr_assert(json_object_object_get_ex(cust, "email", &v));
	cr_assert_str_eq(json_object_get_string(v), "a@example.org");
	cr_assert(json_object_object_get_ex(body, "product_cart", &v));
	cr_assert_eq(json_object_array_length(v), 1);
	cr_assert(json_object_object_get_ex(body, "metadata", &v));
	cr_assert(json_object_object_get_ex(v, "mailkit_claim", &v));
	cr_assert_str_eq(json_object_get_string(v), "b1nd");
	json_object_put(body);
}

Test(upstream, dodo_purchase_and_ledger_list)
{
	struct dodo_customer	 c;
	struct mk_err		 err;
	char			 status[32], binding[65];
	json_object		*items, *list;

	SCRIPT({ .status = 200, .body = "{\"subscription_id\":\"sub_1\",\"status\":\"active\","
	    "\"metadata\":{\"mailkit_claim\":\"b1nd\"},"
	    "\"customer\":{\"customer_id\":\"cus_9\",\"email\":\"b@example.org\",\"name\":\"Bo\"}}" });
	cr_assert_eq(dodo_get_purchase(&S, DODO_SUBSCRIPTION, "sub_1", &c, status, sizeof status,
	    binding, sizeof binding, &err), 0);
	cr_assert_str_eq(binding, "b1nd");
	cr_assert_str_eq(ts_req(0)->path, "/subscriptions/sub_1");
	cr_assert_str_eq(c.customer_id, "cus_9");
	cr_assert_str_eq(c.name, "Bo");
	cr_assert_str_eq(status, "active");

	SCRIPT({ .status = 404, .body = "{}" });
	cr_assert_eq(dodo_get_purchase(&S, DODO_PAYMENT, "pay_1", &c, status, sizeof status,
	    binding, sizeof binding, &err), -1);
	cr_assert_str_eq(ts_req(1)->path, "/payments/pay_1");
	cr_assert_eq(err.status, 404);

	SCRIPT({ .status = 200, .body = "{\"items\":[{\"id\":\"e1\"},{\"id\":\"e2\"}]}" });
	list = dodo_list_ledger(&S, "cus_9", 5, 0, &err);
	cr_assert_not_null(list);
	cr_assert_str_eq(ts_req(2)->path,
	    "/credit-entitlements/cde_test/balances/cus_9/ledger?page_size=5&page_number=0");
	cr_assert(json_object_object_get_ex(list, "items", &items));
	cr_assert_eq(json_object_array_length(items), 2);
	json_object_put(list);
}

/* ---------------------------------------------------------------- resend */

static struct mail_message
test_message(void)
{
	struct mail_message m = {
		.from = "MailKit <mail@example.org>",
		.to = { "delivered@resend.dev", "x@example.org" },
		.nto = 2,
		.subject = "Hi",
		.html = "<p>Hi</p>",
		.idempotency_key = "send/cus_1/k1",
	};

	return m;
}

Test(upstream, resend_send_ok)
{
	struct mail_message	 m = test_message();
	struct mail_result	 out;
	struct mk_err		 err;
	json_object		*body, *v;
	char			 why[128];

	cr_assert_eq(mail_provider_find("resend"), &mail_resend);
	cr_assert_null(mail_provider_find("carrier-pigeon"));
	cr_assert_null(mail_provider_find(NULL));
	cr_assert_eq(mail_resend.check(&S, why, sizeof why), 0);

	SCRIPT({ .status = 200, .body = "{\"id\":\"4ef9a417-02e9-4d39-ad75-9611e0fcc33c\"}" });
	cr_assert_eq(mail_resend.send(&S, &m, &out, &err), 0);
	cr_assert_str_eq(out.id, "4ef9a417-02e9-4d39-ad75-9611e0fcc33c");
	cr_assert_str_eq(ts_req(0)->path, "/emails");
	cr_assert_not_null(strcasestr(ts_req(0)->headers, "\r\nIdempotency-Key: send/cus_1/k1\r\n"));
	cr_assert_not_null(strcasestr(ts_req(0)->headers, "\r\nAuthorization: Bearer re_test_key\r\n"));
	body = json_tokener_parse(ts_req(0)->body);
	cr_assert_not_null(body);
	cr_assert(json_object_object_get_ex(body, "to", &v));
	cr_assert_eq(json_object_array_length(v), 2);
	cr_assert(json_object_object_get_ex(body, "from", &v));
	cr_assert_str_eq(json_object_get_string(v), "MailKit <mail@example.org>");
	cr_assert_not(json_object_object_get_ex(body, "text", &v));
	json_object_put(body);
}

Test(upstream, resend_check_names_missing_key)
{
	char why[128];

	S.resend_api_key = "";
	cr_assert_eq(mail_resend.check(&S, why, sizeof why), -1);
	cr_assert_not_null(strstr(why, "RESEND_API_KEY"), "%s", why);
}

Test(upstream, resend_refusals)
{
	struct mail_message	m = test_message();
	struct mail_result	out;
	struct mk_err		err;

	SCRIPT({ .status = 422, .body = "{\"statusCode\":422,\"name\":\"validation_error\","
	    "\"message\":\"Invalid `to` field.\"}" });
	cr_assert_eq(mail_resend.send(&S, &m, &out, &err), -1);
	cr_assert_eq(err.status, 400);
	cr_assert_eq(err.maybe_done, 0);
	cr_assert_eq(ts_count(&ts.requests), 1);

	SCRIPT({ .status = 403, .body = "{\"statusCode\":403,\"name\":\"invalid_api_key\","
	    "\"message\":\"API key is invalid\"}" });
	cr_assert_eq(mail_resend.send(&S, &m, &out, &err), -1);
	cr_assert_eq(err.status, 502);
	cr_assert_eq(err.maybe_done, 0);

	SCRIPT({ .status = 409, .body = "{\"name\":\"invalid_idempotent_request\",\"message\":\"x\"}" });
	cr_assert_eq(mail_resend.send(&S, &m, &out, &err), -1);
	cr_assert_eq(err.status, 502);
	cr_assert_eq(err.maybe_done, 0);

	SCRIPT({ .status = 409, .body = "{\"name\":\"concurrent_idempotent_requests\",\"message\":\"x\"}" });
	cr_assert_eq(mail_resend.send(&S, &m, &out, &err), -1);
	cr_assert_eq(err.status, 502);
	cr_assert_eq(err.maybe_done, 1);
}

Test(upstream, resend_5xx_after_retries_maybe_done)
{
	struct mail_message	m = test_message();
	struct mail_result	out;
	struct mk_err		err;

	SCRIPT({ .status = 500, .headers = "retry-after-ms: 5\r\n",
	    .body = "{\"statusCode\":500,\"name\":\"internal_server_error\",\"message\":\"x\"}" });
	cr_assert_eq(mail_resend.send(&S, &m, &out, &err), -1);
	cr_assert_eq(err.status, 502);
	cr_assert_eq(err.maybe_done, 1);
	cr_assert_eq(ts_count(&ts.requests), 3);
	/* every attempt carried the same key */
	cr_assert_not_null(strcasestr(ts_req(2)->headers, "\r\nIdempotency-Key: send/cus_1/k1\r\n"));
}

Test(upstream, resend_timeout_is_504_maybe_done)
{
	struct mail_message	m = test_message();
	struct mail_result	out;
	struct mk_err		err;

	S.timeout_ms = 200;
	S.max_retries = 0;
	upstream_configure(&S);
	SCRIPT({ .status = 200, .stall_ms = 2000 });
	cr_assert_eq(mail_resend.send(&S, &m, &out, &err), -1);
	cr_assert_eq(err.status, 504);
	cr_assert_eq(err.maybe_done, 1);
}
