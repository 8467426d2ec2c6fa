/* server.c: the FastCGI accept loop, request copying, routing and the one response writer. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <fcgiapp.h>
#include <openssl/crypto.h>

#include "clock.h"
#include "log.h"
#include "server.h"
#include "settings.h"
#include "upstream.h"
#include "url.h"

#define SERVER_LISTEN_BACKLOG	128	/* for $MAILKIT_SOCKET; spawn-fcgi sets its own */
#define SERVER_SYSTEMD_FD	3	/* SD_LISTEN_FDS_START: systemd's first passed socket */
#define SERVER_READ_CHUNK	(4 * 1024)	/* bytes per FCGX_GetStr; on the stack of
						 * every request thread, so small */
#define SERVER_THREADS_MAX	1024	/* a thread per request in flight, at most */
#define SERVER_RETRY_AFTER_S	"1"	/* seconds, on a 503 that names none */
#define SERVER_THREADS_START	4	/* started before the first request; more on demand */
#define SERVER_IDLE_S		5	/* a thread this long in accept() may end (see server_retire) */
#define SERVER_GROW_QUIET_MS	2000	/* no thread ends this soon after the pool grew */
#define SERVER_TRIM_MS		1000	/* malloc_trim() this long after the last request or thread ended */
#define SERVER_STOP_POLL_MS	100	/* stopping: how often accept()ing threads are woken again */
/*
 * Stacks of request threads unless the program asks otherwise: the deepest
 * path (SQLite under libcurl's and OpenSSL's frames) uses well under 100 KiB,
 * and only pages a thread touched are memory; the rest is address space.
 */
#define SERVER_THREAD_STACK	(512 * 1024)
/*
 * glibc gives threads up to 8 malloc arenas per CPU, each keeping its own
 * free pages: with hundreds of threads that was most of a busy program's
 * memory.  Two arenas serve two CPUs' worth of requests.
 */
#define SERVER_MALLOC_ARENAS	2

static int		server_listen_fd;
/*
 * Under mailkit-supervise (or systemd) the listening socket is shared with a
 * supervisor that outlives this process and starts the next one on it: shutdown(2) on
 * it would refuse every connection after us, so a SIGTERM only wakes our
 * own threads (server_on_signal).  The supervisor shuts the socket down
 * itself when the whole stack stops.
 */
static int		server_supervised;
/*
 * Some kernels want accept() on one socket called by one thread at a time
 * (libfcgi's threaded example serialises it).  Linux does not: it wakes one
 * waiting thread per connection, and a mutex around FCGX_Accept_r would only
 * add a futex hand-over (two context switches) to every request.
 */
#ifdef __linux__
#define SERVER_SERIALIZE_ACCEPT	0
#else
#define SERVER_SERIALIZE_ACCEPT	1
#endif
static pthread_mutex_t	server_accept_lock = PTHREAD_MUTEX_INITIALIZER;

struct worker {
	const struct app	*app;
	pthread_t		 tid;
	volatile sig_atomic_t	 accepting;	/* 1 while blocked in FCGX_Accept_r */
	int			 fresh;		/* counted idle by its creator, not yet by itself */
	int			 slot;		/* index in the pool's table; -1: not in it */
	FCGX_Request		 fcgx;
	struct request		 req;
	struct response		 resp;
	struct buf		 body;		/* request body storage, reused */
};

static const struct {
	int		 status;
	const char	*reason;
} http_reasons[] = {
	{ 200, "OK" }, { 201, "Created" }, { 204, "No Content" },
	{ 302, "Found" }, { 303, "See Other" }, { 304, "Not Modified" },
	{ 400, "Bad Request" }, { 401, "Unauthorized" }, { 402, "Payment Required" },
	{ 403, "Forbidden" }, { 404, "Not Found" }, { 405, "Method Not Allowed" },
	{ 409, "Conflict" }, { 410, "Gone" }, { 411, "Length Required" },
	{ 413, "Content Too Large" }, { 414, "URI Too Long" },
	{ 415, "Unsupported Media Type" }, { 422, "Unprocessable Content" },
	{ 429, "Too Many Requests" }, { 500, "Internal Server Error" },
	{ 502, "Bad Gateway" }, { 503, "Service Unavailable" }, { 504, "Gateway Timeout" },
};

const char *
http_reason(int status)
{
	for (size_t i = 0; i < sizeof http_reasons / sizeof http_reasons[0]; i++)
		if (http_reasons[i].status == status)
			return http_reasons[i].reason;
	return status < 400 ? "OK" : status < 500 ? "Bad Request" : "Internal Server Error";
}

/* ------------------------------------------------------------------ response */

static void
response_reset(struct response *resp)
{
	resp->status = 0;
	resp->content_type = NULL;
	buf_reset(&resp->body);
	resp->headers_len = 0;
	resp->headers[0] = '\0';
	resp->drop = 0;
	resp->cut_at = 0;
}

void
response_body(struct response *resp, int status, const char *content_type,
    const char *data, size_t len)
{
	buf_reset(&resp->body);
	if (buf_append(&resp->body, data, len) == -1) {
		log_error("response of %zu bytes exceeds the %d-byte ceiling", len, RESPONSE_MAX);
		response_error(resp, 500, "internal error");
		return;
	}
	resp->status = status;
	resp->content_type = content_type;
}

void
response_json(struct response *resp, int status, json_object *obj)
{
	const char *text;

	if (obj == NULL) {
		response_error(resp, 500, "internal error");
		return;
	}
	text = json_object_to_json_string_ext(obj,
	    JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
	response_body(resp, status, "application/json", text, strlen(text));
	json_object_put(obj);
}

void
response_error(struct response *resp, int status, const char *fmt, ...)
{
	char		 msg[MK_ERR_MSG_MAX];
	json_object	*obj;
	const char	*text;
	va_list		 ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	obj = json_object_new_object();
	json_object_object_add(obj, "error", json_object_new_string(msg));
	text = json_object_to_json_string_ext(obj,
	    JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
	buf_reset(&resp->body);
	if (buf_puts(&resp->body, text) == -1)
		buf_reset(&resp->body);
	json_object_put(obj);
	resp->status = status;
	resp->content_type = "application/json";
}

void
response_fail(struct response *resp, const struct mk_err *err)
{
	int status = err->status >= 400 && err->status <= 599 ? err->status : 500;

	response_error(resp, status, "%s", err->msg[0] ? err->msg : http_reason(status));
}

int
response_header(struct response *resp, const char *name, const char *value)
{
	size_t	nl = strlen(name), vl = strlen(value);

	for (size_t i = 0; i < nl; i++)
		if (!isalnum((unsigned char)name[i]) && name[i] != '-')
			return -1;
	for (size_t i = 0; i < vl; i++)
		if (value[i] == '\r' || value[i] == '\n')
			return -1;
	if (nl == 0 || resp->headers_len + nl + vl + 5 > sizeof resp->headers)
		return -1;
	resp->headers_len += snprintf(resp->headers + resp->headers_len,
	    sizeof resp->headers - resp->headers_len, "%s: %s\r\n", name, value);
	return 0;
}

void
response_redirect(struct response *resp, const char *location)
{
	if (response_header(resp, "Location", location) == -1) {
		response_error(resp, 500, "internal error");
		return;
	}
	response_body(resp, 303, "text/plain; charset=utf-8", "", 0);
}

/*
 * The one place bytes of a reply are written.  A HEAD request gets the
 * headers the GET would have had, Content-Length included, and no body.
 */
static void
server_write(FCGX_Request *fcgx, const struct response *resp, int head_only)
{
	char	head[RESPONSE_HEADERS_MAX + 512];
	int	n;

	n = snprintf(head, sizeof head,
	    "Status: %d %s\r\n"
	    "Content-Type: %s\r\n"
	    "Content-Length: %zu\r\n"
	    "Cache-Control: no-store\r\n"
	    "X-Content-Type-Options: nosniff\r\n"
	    "%s\r\n",
	    resp->status, http_reason(resp->status),
	    resp->content_type ? resp->content_type : "application/json",
	    resp->body.len, resp->headers);
	if (n < 0 || (size_t)n >= sizeof head)
		return;
	FCGX_PutStr(head, n, fcgx->out);
	if (resp->body.len > 0 && !head_only)
		FCGX_PutStr(resp->body.data, (int)(resp->drop == RESPONSE_CUT &&
		    resp->cut_at < resp->body.len ? resp->cut_at : resp->body.len), fcgx->out);
}

/* ------------------------------------------------------------------ request */

/*
 * Members written in the text: every ':' outside a string starts one object
 * member in standard JSON.  json-c's strict mode still takes single quotes,
 * which would hide a '"' from this count: a quote or comment outside a
 * string gives (size_t)-1, which no parsed tree matches.
 */
static size_t
request_json_members_written(const char *s, size_t len)
{
	size_t	n = 0;
	int	in_string = 0;

	for (size_t i = 0; i < len; i++) {
		if (in_string) {
			if (s[i] == '\\')
				i++;
			else if (s[i] == '"')
				in_string = 0;
		} else if (s[i] == '"')
			in_string = 1;
		else if (s[i] == '\'' || s[i] == '/')
			return (size_t)-1;
		else if (s[i] == ':')
			n++;
	}
	return n;
}

/* Members held by the parsed tree (depth is bounded by JSON_MAX_DEPTH). */
static size_t
request_json_members_parsed(json_object *o)
{
	size_t	n = 0;

	if (json_object_is_type(o, json_type_object)) {
		json_object_object_foreach(o, name, v) {
			(void)name;
			n += 1 + request_json_members_parsed(v);
		}
	} else if (json_object_is_type(o, json_type_array)) {
		size_t len = json_object_array_length(o);

		for (size_t i = 0; i < len; i++)
			n += request_json_members_parsed(json_object_array_get_idx(o, i));
	}
	return n;
}

json_object *
request_json(const struct request *req, struct mk_err *err)
{
	json_tokener	*tok = NULL;
	json_object	*obj = NULL;
	size_t		 end;

	if (req->body_len == 0) {
		mk_fail(err, 400, "request body is empty: expected a JSON object");
		return NULL;
	}
	/* json-c would accept stray bytes inside strings; nothing downstream should see them */
	if (!valid_utf8(req->body, req->body_len)) {
		mk_fail(err, 400, "request body is not valid UTF-8");
		return NULL;
	}
	if ((tok = json_tokener_new_ex(JSON_MAX_DEPTH)) == NULL) {
		mk_fail(err, 500, "out of memory");
		return NULL;
	}
	/* strict: no comments, single quotes or trailing commas, so that the
	 * duplicate check below can count members in the text */
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
	obj = json_tokener_parse_ex(tok, req->body, (int)req->body_len);
	end = json_tokener_get_parse_end(tok);
	if (obj != NULL && json_tokener_get_error(tok) == json_tokener_success)
		while (end < req->body_len && isspace((unsigned char)req->body[end]))
			end++;
	if (obj == NULL || json_tokener_get_error(tok) != json_tokener_success ||
	    end != req->body_len) {
		if (json_tokener_get_error(tok) == json_tokener_error_depth)
			mk_fail(err, 400, "request body is nested deeper than %d levels",
			    JSON_MAX_DEPTH);
		else
			mk_fail(err, 400, "request body is not valid JSON");
		goto fail;
	}
	if (!json_object_is_type(obj, json_type_object)) {
		mk_fail(err, 400, "request body must be a JSON object");
		goto fail;
	}
	/* json-c keeps the last of two equal names: a duplicate leaves the
	 * tree with fewer members than the text wrote */
	if (request_json_members_parsed(obj) !=
	    request_json_members_written(req->body, req->body_len)) {
		mk_fail(err, 400, "request body repeats a member name or is not standard JSON");
		goto fail;
	}
	json_tokener_free(tok);
	return obj;
fail:
	json_object_put(obj);
	json_tokener_free(tok);
	return NULL;
}

/* Copy a FastCGI parameter into dst; -1 if it does not fit. */
static int
server_param(char **envp, const char *name, char *dst, size_t dstlen)
{
	const char	*v = FCGX_GetParam(name, envp);
	size_t		 n;

	dst[0] = '\0';
	if (v == NULL)
		return 0;
	if ((n = strlen(v)) >= dstlen)
		return -1;
	memcpy(dst, v, n + 1);
	return 0;
}

static const struct {
	const char	*param;
	const char	*header;	/* for the error message */
	size_t		 offset;
	size_t		 size;
} server_headers[] = {
#define H(p, h, f) { p, h, offsetof(struct request, f), sizeof ((struct request *)0)->f }
	H("REQUEST_METHOD", "method", method),
	H("CONTENT_TYPE", "Content-Type", content_type),
	H("HTTP_AUTHORIZATION", "Authorization", authorization),
	H("HTTP_IDEMPOTENCY_KEY", "Idempotency-Key", idempotency_key),
	H("HTTP_WEBHOOK_ID", "webhook-id", webhook_id),
	H("HTTP_WEBHOOK_TIMESTAMP", "webhook-timestamp", webhook_timestamp),
	H("HTTP_WEBHOOK_SIGNATURE", "webhook-signature", webhook_signature),
	H("REMOTE_ADDR", "remote address", remote_addr),
	H("HTTP_HOST", "Host", host),
	H("HTTP_USER_AGENT", "User-Agent", user_agent),
	H("HTTP_ORIGIN", "Origin", origin),
#undef H
};

/*
 * Remove prefix (a path such as "/sandbox"; NULL or "" for none) from the
 * front of path, on a segment boundary ("/" if nothing is left).  -1 when
 * path does not start with it.
 */
static int
request_strip(char *path, const char *prefix)
{
	size_t	 plen;

	if (prefix == NULL || (plen = strlen(prefix)) == 0)
		return 0;
	if (strncmp(path, prefix, plen) != 0 || (path[plen] != '/' && path[plen] != '\0'))
		return -1;
	memmove(path, path + plen, strlen(path + plen) + 1);
	if (path[0] == '\0')
		strcpy(path, "/");
	return 0;
}

int
request_copy(struct request *req, char **envp, const char *mount, struct mk_err *err)
{
	const char	*uri, *q, *idem;
	size_t		 pathlen;

	for (size_t i = 0; i < sizeof server_headers / sizeof server_headers[0]; i++)
		if (server_param(envp, server_headers[i].param,
		    (char *)req + server_headers[i].offset, server_headers[i].size) == -1)
			return mk_fail(err, 400, "%s header is too long",
			    server_headers[i].header);
	/* sent but blank, or padded: a client bug that would otherwise read
	 * as "no key" (and a retry would send twice) */
	if ((idem = FCGX_GetParam("HTTP_IDEMPOTENCY_KEY", envp)) != NULL &&
	    (idem[0] == '\0' || isspace((unsigned char)idem[0]) ||
	    isspace((unsigned char)idem[strlen(idem) - 1])))
		return mk_fail(err, 400, "Idempotency-Key must not be blank or have leading "
		    "or trailing spaces");
	if ((uri = FCGX_GetParam("REQUEST_URI", envp)) == NULL)
		uri = FCGX_GetParam("SCRIPT_NAME", envp);
	if (uri == NULL || uri[0] != '/')
		return mk_fail(err, 400, "request has no path");
	q = strchr(uri, '?');
	pathlen = q ? (size_t)(q - uri) : strlen(uri);
	if (pathlen >= sizeof req->path || (q && strlen(q + 1) >= sizeof req->query))
		return mk_fail(err, 414, "request URI is too long");
	memcpy(req->path, uri, pathlen);
	req->path[pathlen] = '\0';
	strcpy(req->query, q ? q + 1 : "");	/* lengths checked above */
	/* the web server's mount of MailKit (mod_fcgid's .htaccess sets it),
	 * then the program's own */
	if (request_strip(req->path, FCGX_GetParam("MAILKIT_PREFIX", envp)) == -1 ||
	    request_strip(req->path, mount) == -1)
		return mk_fail(err, 404, "no such resource");
	return 0;
}

int
request_from_loopback(const struct request *req)
{
	const char	*a = req->remote_addr;

	if (strncasecmp(a, "::ffff:", 7) == 0)
		a += 7;
	if (strcmp(a, "::1") == 0)
		return 1;
	if (strncmp(a, "127.", 4) != 0)
		return 0;
	/* the rest must be digits and dots: "127.evil" is no address */
	return a[4] != '\0' && strspn(a + 4, "0123456789.") == strlen(a + 4);
}

/*
 * Fill req from the FastCGI parameters.  Returns 0, or an HTTP status
 * (with resp filled) when the request must be refused before routing.
 */
static int
server_read_head(struct worker *w)
{
	struct mk_err	err;

	if (request_copy(&w->req, w->fcgx.envp, w->app->mount, &err) == -1) {
		response_fail(&w->resp, &err);
		return err.status;
	}
	if (w->app->loopback_only && !request_from_loopback(&w->req)) {
		response_error(&w->resp, 403, "%s answers clients on this machine only",
		    w->app->name);
		return 403;
	}
	return 0;
}

static int
server_is_json(const char *content_type)
{
	const char	*ct = content_type;
	size_t		 n;

	while (*ct == ' ')
		ct++;
	n = strcspn(ct, "; ");
	return n == strlen("application/json") && strncasecmp(ct, "application/json", n) == 0;
}

int
request_content_length(const char *cl, size_t max, size_t *want, struct mk_err *err)
{
	char			*end;
	unsigned long long	 v;

	*want = 0;
	if (cl == NULL || *cl == '\0')
		return 0;
	errno = 0;
	v = strtoull(cl, &end, 10);
	if (!isdigit((unsigned char)cl[0]) || *end != '\0' || errno != 0)
		return mk_fail(err, 400, "invalid Content-Length");
	if (v > max)
		return mk_fail(err, 413, "request body is larger than %zu bytes", max);
	*want = (size_t)v;
	return 1;
}

/*
 * Read the body: exactly CONTENT_LENGTH bytes, or to EOF when there is none
 * (Apache's mod_proxy_fcgi with a chunked request).  The ceiling is checked
 * against CONTENT_LENGTH before a byte is read.  Returns 0 or a status.
 */
static int
server_read_body(struct worker *w)
{
	FCGX_Request	*fcgx = &w->fcgx;
	size_t		 max = w->app->max_body, want = 0, got = 0;
	int		 known;
	char		 chunk[SERVER_READ_CHUNK];
	struct mk_err	 err;

	if ((known = request_content_length(FCGX_GetParam("CONTENT_LENGTH", fcgx->envp), max,
	    &want, &err)) == -1) {
		response_fail(&w->resp, &err);
		return err.status;
	}
	buf_reset(&w->body);
	for (;;) {
		size_t	room = known ? want - got : max + 1 - got;
		int	n;

		if (room == 0)
			break;
		if (room > sizeof chunk)
			room = sizeof chunk;
		if ((n = FCGX_GetStr(chunk, (int)room, fcgx->in)) <= 0)
			break;
		if (buf_append(&w->body, chunk, (size_t)n) == -1) {
			response_error(&w->resp, 413, "request body is larger than %zu bytes", max);
			return 413;
		}
		got += (size_t)n;
	}
	if (!known && got > max) {
		response_error(&w->resp, 413, "request body is larger than %zu bytes", max);
		return 413;
	}
	if (known && got < want) {
		response_error(&w->resp, 400, "request body is shorter than its Content-Length");
		return 400;
	}
	w->req.body = w->body.data ? w->body.data : (char *)"";
	w->req.body_len = got;
	return 0;
}

int
server_match(const char *pattern, const char *path, struct request *req)
{
	const char	*p = pattern, *s = path;
	size_t		 n = 0;

	for (;;) {
		if (p[0] == '/' && p[1] == '*' && p[2] == '\0')
			return *s == '/' || *s == '\0';
		if (p[0] == '{' && p[1] == '}') {
			size_t len = strcspn(s, "/");

			if (len == 0 || n >= REQUEST_PARAMS_MAX)
				return 0;
			if (req != NULL && url_decode(s, len, req->params[n],
			    sizeof req->params[n], 0) == -1)
				return -1;
			n++;
			p += 2;
			s += len;
			continue;
		}
		if (*p != *s)
			return 0;
		if (*p == '\0')
			break;
		p++;
		s++;
	}
	if (req != NULL)
		req->nparams = n;
	return 1;
}

/* Route w->req, run its handler or answer 404/405. */
static void
server_dispatch(struct worker *w)
{
	const struct app	*app = w->app;
	struct request		*req = &w->req;
	char			 allow[128] = "";
	int			 matched = 0;
	/* HEAD is answered wherever GET is, by the GET handler */
	const char		*method = strcmp(req->method, "HEAD") == 0 ? "GET" : req->method;

	for (size_t i = 0; i < app->nroutes; i++) {
		const struct route *r = &app->routes[i];
		int m = server_match(r->pattern, req->path, NULL);

		if (m == 0)
			continue;
		matched = 1;
		if (strcmp(r->method, method) != 0) {
			if (strstr(allow, r->method) == NULL) {
				size_t len = strlen(allow);

				snprintf(allow + len, sizeof allow - len, "%s%s",
				    len ? ", " : "", r->method);
			}
			continue;
		}
		if (server_match(r->pattern, req->path, req) == -1) {
			response_error(&w->resp, 400, "malformed percent-encoding in the path");
			return;
		}
		if (strcmp(method, "GET") != 0) {
			/* before reading a byte; a missing Content-Type is refused
			 * too (a cross-site form or text/plain fetch needs no CORS
			 * preflight, application/json does) */
			if (app->json_only && !server_is_json(req->content_type)) {
				response_error(&w->resp, 415,
				    "Content-Type must be application/json");
				return;
			}
			if (server_read_body(w) != 0)
				return;
		}
		r->handler(req, &w->resp);
		if (w->resp.status == 0) {
			log_error("%s %s: handler set no response", req->method, req->path);
			response_error(&w->resp, 500, "internal error");
		}
		return;
	}
	if (matched) {
		response_header(&w->resp, "Allow", allow);
		response_error(&w->resp, 405, "method %s is not allowed here; use %s",
		    req->method, allow);
	} else
		response_error(&w->resp, 404, "no such resource");
}

static void
server_handle(struct worker *w)
{
	memset(&w->req, 0, offsetof(struct request, body));
	w->req.body = (char *)"";
	w->req.body_len = 0;
	response_reset(&w->resp);
	if (server_read_head(w) == 0)
		server_dispatch(w);
	if (w->resp.drop == RESPONSE_DROP)
		return;
	/* a 503 is a passing state (a busy store, a send another worker
	 * holds): say when to come back, unless the handler did */
	if (w->resp.status == 503 && strstr(w->resp.headers, "Retry-After:") == NULL)
		response_header(&w->resp, "Retry-After", SERVER_RETRY_AFTER_S);
	if (w->resp.status >= 500)
		log_warn("%s %s -> %d %s", w->req.method, w->req.path, w->resp.status,
		    w->resp.body.data ? w->resp.body.data : "");
	server_write(&w->fcgx, &w->resp, strcmp(w->req.method, "HEAD") == 0);
	if (w->resp.drop == RESPONSE_CUT) {
		/* what was written reaches the web server; the request's end
		 * never does: it sees the connection break mid-body */
		FCGX_FFlush(w->fcgx.out);
		(void)shutdown(w->fcgx.ipcFd, SHUT_RDWR);
	}
}

/*
 * The pool.  A request in flight holds its thread for its whole life,
 * upstream round trips included, so a process serves at most as many
 * requests at once as it has threads.  It starts SERVER_THREADS_START and
 * adds one whenever the last idle thread takes a request, up to
 * MAILKIT_THREADS: a quiet program stays small, a busy one gets a thread
 * per request in flight, and nobody has to size it by hand.  When the
 * load goes down the pool follows (server_retire): spare threads end.
 *
 * Threads are detached and leave the table themselves, under the lock;
 * server_run waits until none is left, nor any retired thread still ending.
 */
static struct {
	pthread_mutex_t		 lock;		/* guards the table and `live` */
	pthread_cond_t		 gone;		/* a thread left the table */
	const struct app	*app;
	struct worker		**workers;	/* [max]; NULL: a free slot */
	int			 max;
	int			 live;		/* threads in the table */
	int			 ending;	/* retired, out of the table, not yet ended */
	_Atomic int		 idle;		/* threads on their way to, or in, accept */
	_Atomic long long	 grown_at;	/* CLOCK_MONOTONIC ms of the last growth */
	_Atomic long long	 settled_at;	/* when a request or a thread last ended; 0: trimmed since */
	int			 grow_failed;	/* logged once */
	pthread_attr_t		 attr;
	volatile sig_atomic_t	 stopping;
} server_pool = { .lock = PTHREAD_MUTEX_INITIALIZER, .gone = PTHREAD_COND_INITIALIZER };

static long	server_request_timeout_ms;	/* REQUEST_TIMEOUT_MS; 0 = none */
static sem_t	server_wake;			/* posted by the signal handler */

static void	*server_worker(void *);

static struct worker *
server_worker_new(const struct app *app)
{
	struct worker	*w;

	if ((w = calloc(1, sizeof *w)) == NULL)
		return NULL;
	w->app = app;
	buf_init(&w->body, app->max_body);
	buf_init(&w->resp.body, RESPONSE_MAX);
	return w;
}

static void
server_worker_free(struct worker *w)
{
	buf_free(&w->body);
	buf_free(&w->resp.body);
	free(w);
}

/*
 * Start one more request thread, counted idle from now so that requests
 * accepted meanwhile do not start more.  0 / -1 (at the cap, stopping, or
 * out of memory or threads: the backlog queues the request meanwhile).
 */
static int
server_grow(void)
{
	struct worker	*w = NULL;
	int		 rc = -1, slot;

	pthread_mutex_lock(&server_pool.lock);
	if (server_pool.stopping || server_pool.live >= server_pool.max)
		goto out;
	for (slot = 0; server_pool.workers[slot] != NULL; slot++)
		;	/* live < max: there is a free one */
	if ((w = server_worker_new(server_pool.app)) == NULL)
		goto fail;
	w->fresh = 1;
	w->slot = slot;
	server_pool.idle++;
	if (pthread_create(&w->tid, &server_pool.attr, server_worker, w) != 0) {
		server_pool.idle--;
		goto fail;
	}
	server_pool.workers[slot] = w;
	server_pool.live++;
	server_pool.grown_at = clock_ms();
	rc = 0;
	goto out;
fail:
	if (!server_pool.grow_failed)
		log_error("cannot start request thread %d: %s", server_pool.live + 1,
		    strerror(errno));
	server_pool.grow_failed = 1;
	if (w != NULL)
		server_worker_free(w);
out:
	pthread_mutex_unlock(&server_pool.lock);
	return rc;
}

/*
 * Should this thread end?  Yes when the other threads idle are spare
 * enough without it: SERVER_THREADS_START plus a quarter of those busy,
 * and the pool has not had to grow for SERVER_GROW_QUIET_MS (so a load
 * that comes and goes keeps its threads).  Asked after each request and
 * after SERVER_IDLE_S in accept; `counted`: the thread is counted idle
 * now.  On yes the thread has left the table (and the idle count): it must
 * end without touching the pool again.
 */
static int
server_retire(struct worker *w, int counted)
{
	int		 others, busy, spare, retire = 0;
	long long	 now = clock_ms();

	if (server_pool.stopping || w->slot < 0)
		return 0;	/* stopping: server_run's wait takes care of it */
	pthread_mutex_lock(&server_pool.lock);
	others = server_pool.idle - counted;
	busy = server_pool.live - others - 1;
	spare = SERVER_THREADS_START + (busy > 0 ? busy / 4 : 0);
	if (server_pool.live > SERVER_THREADS_START && others >= spare &&
	    now - server_pool.grown_at >= SERVER_GROW_QUIET_MS) {
		server_pool.workers[w->slot] = NULL;
		server_pool.live--;
		server_pool.ending++;
		if (counted)
			server_pool.idle--;
		retire = 1;
	}
	pthread_mutex_unlock(&server_pool.lock);
	return retire;
}

/*
 * What a thread's libraries keep for it goes before the thread is off the
 * books: once it is, server_run may return and the process exit, and
 * OpenSSL's cleanup at exit does not free another thread's state (its
 * error queue, allocated by any HMAC or TLS call), which would leak.
 */
static void
server_thread_release(struct worker *w)
{
	FCGX_Free(&w->fcgx, 1);
	OPENSSL_thread_stop();
}

/*
 * The end of a thread that left the table: its memory goes back to
 * malloc, and server_run trims malloc's arenas once threads stop ending.
 */
static void
server_retired(struct worker *w)
{
	server_thread_release(w);
	server_worker_free(w);
	server_pool.settled_at = clock_ms();
	pthread_mutex_lock(&server_pool.lock);
	server_pool.ending--;
	pthread_cond_broadcast(&server_pool.gone);
	pthread_mutex_unlock(&server_pool.lock);
}

/* Leave the table at the end (stopping, or accept failed for good). */
static void
server_leave(struct worker *w)
{
	server_thread_release(w);
	pthread_mutex_lock(&server_pool.lock);
	if (w->slot >= 0) {
		server_pool.workers[w->slot] = NULL;
		server_pool.live--;
		server_worker_free(w);
	}
	pthread_cond_broadcast(&server_pool.gone);
	pthread_mutex_unlock(&server_pool.lock);
}

static void *
server_worker(void *arg)
{
	struct worker	*w = arg;
	int		 rc;

	if (FCGX_InitRequest(&w->fcgx, server_listen_fd, 0) != 0) {
		log_error("FCGX_InitRequest failed");
		server_pool.idle--;
		server_leave(w);
		return NULL;
	}
	for (;;) {
		if (!w->fresh)
			server_pool.idle++;
		w->fresh = 0;
		if (server_pool.stopping) {
			server_pool.idle--;
			break;
		}
		if (SERVER_SERIALIZE_ACCEPT)
			pthread_mutex_lock(&server_accept_lock);
		w->accepting = 1;
		rc = FCGX_Accept_r(&w->fcgx);
		w->accepting = 0;
		if (SERVER_SERIALIZE_ACCEPT)
			pthread_mutex_unlock(&server_accept_lock);
		/* the last idle thread took this request: have another wait */
		if (--server_pool.idle == 0 && rc >= 0)
			(void)server_grow();
		if (rc == -EAGAIN || rc == -EWOULDBLOCK) {
			/* SERVER_IDLE_S without a request (the socket's receive timeout) */
			if (server_retire(w, 0)) {
				server_retired(w);
				return NULL;
			}
			continue;
		}
		if (rc < 0)
			break;
		upstream_deadline_start(server_request_timeout_ms);
		server_handle(w);
		upstream_deadline_start(0);
		/*
		 * Idle from here: the client has its answer once Finish returns and
		 * may send its next request before this thread is back in accept;
		 * that request waits in the backlog for it, it does not start a thread.
		 */
		server_pool.idle++;
		w->fresh = 1;
		FCGX_Finish_r(&w->fcgx);
		server_pool.settled_at = clock_ms();
		if (server_retire(w, 1)) {
			server_retired(w);
			return NULL;
		}
	}
	server_leave(w);
	return NULL;
}

static void
server_on_signal(int sig)
{
	(void)sig;
	server_pool.stopping = 1;
	FCGX_ShutdownPending();
	/* wakes every thread blocked in accept(), not just the one the signal hit */
	if (!server_supervised)
		shutdown(server_listen_fd, SHUT_RDWR);
	sem_post(&server_wake);
}

/*
 * Under a supervisor the socket is not ours to shut: interrupt each thread
 * waiting in accept() instead (libfcgi's SIGUSR1 handler has no SA_RESTART,
 * and its accept loop gives up on EINTR once shutdown is pending).  A thread
 * about to block misses it, but not the socket's receive timeout.
 */
static void
server_wake_acceptors(void)
{
	pthread_mutex_lock(&server_pool.lock);
	for (int i = 0; i < server_pool.max; i++)
		if (server_pool.workers[i] != NULL && server_pool.workers[i]->accepting)
			pthread_kill(server_pool.workers[i]->tid, SIGUSR1);
	pthread_mutex_unlock(&server_pool.lock);
}

/*
 * Between stop signals, once a second: when requests or threads have
 * ended, none is in flight and none ended for SERVER_TRIM_MS, give the
 * arenas' free pages back to the system (free() keeps them for the next
 * burst; trimming walks every arena, so not after each request).
 */
static void
server_housekeep(void)
{
	struct timespec	until;
	long long	settled;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 1;
	if (sem_timedwait(&server_wake, &until) == 0 || server_pool.stopping)
		return;
	settled = server_pool.settled_at;
	if (settled != 0 && clock_ms() - settled >= SERVER_TRIM_MS &&
	    server_pool.idle >= server_pool.live) {
		server_pool.settled_at = 0;
		malloc_trim(0);
	}
}

/* After a stop signal: until every request thread has left the table and ended. */
static void
server_wait_all(void)
{
	struct timespec	until;

	pthread_mutex_lock(&server_pool.lock);
	while (server_pool.live > 0 || server_pool.ending > 0) {
		pthread_mutex_unlock(&server_pool.lock);
		if (server_supervised)
			server_wake_acceptors();
		pthread_mutex_lock(&server_pool.lock);
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_nsec += SERVER_STOP_POLL_MS * 1000000L;
		if (until.tv_nsec >= 1000000000L) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000L;
		}
		if (server_pool.live > 0 || server_pool.ending > 0)
			(void)pthread_cond_timedwait(&server_pool.gone, &server_pool.lock, &until);
	}
	pthread_mutex_unlock(&server_pool.lock);
}

/*
 * The listening socket, from the first of: systemd's socket activation
 * (LISTEN_PID is this process and LISTEN_FDS is 1: the socket is fd 3; the
 * variables are then removed so no child takes it for its own),
 * $MAILKIT_SOCKET (a unix socket path, created here), or fd 0 (spawn-fcgi,
 * mod_fcgid, a web server that starts the program).  Returns the descriptor,
 * or -1 (logged) when there is none.  Sets *shared when the socket outlives
 * this process (systemd holds it and starts the next one on it), as a
 * supervisor's does.
 */
static int
server_listen_socket(const char *name, int *shared)
{
	const char	*pid = getenv("LISTEN_PID"), *fds = getenv("LISTEN_FDS");
	const char	*sock = getenv("MAILKIT_SOCKET");
	char		*end;
	long		 n;
	int		 fd;

	if (pid != NULL && fds != NULL) {
		errno = 0;
		n = strtol(pid, &end, 10);
		if (errno == 0 && end != pid && *end == '\0' && n == (long)getpid()) {
			int one = strcmp(fds, "1") == 0;

			unsetenv("LISTEN_PID");
			unsetenv("LISTEN_FDS");
			unsetenv("LISTEN_FDNAMES");
			if (!one) {
				log_error("%s takes one socket from systemd, not LISTEN_FDS "
				    "sockets (one ListenStream= per .socket unit)", name);
				return -1;
			}
			if (fcntl(SERVER_SYSTEMD_FD, F_SETFD, FD_CLOEXEC) == -1) {
				log_error("no socket on fd %d from systemd: %s",
				    SERVER_SYSTEMD_FD, strerror(errno));
				return -1;
			}
			*shared = 1;
			return SERVER_SYSTEMD_FD;
		}
	}
	if (sock != NULL && *sock != '\0') {
		unlink(sock);
		if ((fd = FCGX_OpenSocket(sock, SERVER_LISTEN_BACKLOG)) < 0) {
			log_error("cannot listen on %s", sock);
			return -1;
		}
		return fd;
	}
	if (FCGX_IsCGI()) {
		log_error("%s is a FastCGI program: start it with spawn-fcgi, systemd or "
		    "from the web server (or set MAILKIT_SOCKET)", name);
		return -1;
	}
	return 0;
}

int
server_run(const struct app *app)
{
	struct sigaction	 sa;
	struct timeval		 idle = { .tv_sec = SERVER_IDLE_S };
	int			 max = app->threads, start;

	if (getenv("MAILKIT_CHECK_ONLY") != NULL)
		return 0;	/* settings were checked by the caller: report success */
	if (max < 1)
		max = 1;
	if (max > SERVER_THREADS_MAX)
		max = SERVER_THREADS_MAX;
	start = max < SERVER_THREADS_START ? max : SERVER_THREADS_START;
	if (FCGX_Init() != 0) {
		log_error("FCGX_Init failed");
		return 1;
	}
	server_supervised = getenv("MAILKIT_SUPERVISED") != NULL;
	if ((server_listen_fd = server_listen_socket(app->name, &server_supervised)) == -1)
		return 1;
	/* accept() gives up after SERVER_IDLE_S, so that idle threads can retire */
	if (setsockopt(server_listen_fd, SOL_SOCKET, SO_RCVTIMEO, &idle, sizeof idle) == -1)
		log_warn("cannot set the socket's receive timeout: idle threads stay: %s",
		    strerror(errno));
#ifdef M_ARENA_MAX
	mallopt(M_ARENA_MAX, SERVER_MALLOC_ARENAS);
#endif
	if ((server_pool.workers = calloc(max, sizeof *server_pool.workers)) == NULL ||
	    sem_init(&server_wake, 0, 0) == -1) {
		log_error("out of memory");
		free(server_pool.workers);
		return 1;
	}
	server_pool.app = app;
	server_pool.max = max;
	server_pool.live = 0;
	server_pool.ending = 0;
	server_pool.idle = 0;
	server_pool.stopping = 0;
	/* after FCGX_Init, which installs handlers of its own */
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = server_on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	log_info("%s ready (%d threads, up to %d on demand)", app->name, start, max);
	pthread_attr_init(&server_pool.attr);
	pthread_attr_setdetachstate(&server_pool.attr, PTHREAD_CREATE_DETACHED);
	if (pthread_attr_setstacksize(&server_pool.attr,
	    app->thread_stack > 0 ? app->thread_stack : SERVER_THREAD_STACK) != 0)
		log_warn("thread stack of %zu bytes refused: the system's default is used",
		    app->thread_stack);
	for (int i = 0; i < start; i++)
		if (server_grow() == -1)
			break;
	if (server_pool.live == 0) {
		/* no thread at all: serve on this one, one request at a time */
		struct worker *w = server_worker_new(app);

		if (w == NULL) {
			log_error("out of memory");
			return 1;
		}
		w->tid = pthread_self();
		w->fresh = 1;
		w->slot = -1;		/* not in the table: never retires */
		server_pool.idle = 1;
		server_worker(w);
		server_worker_free(w);
	} else {
		/* this thread only waits for a stop signal, and trims, then waits for the others */
		while (!server_pool.stopping)
			server_housekeep();
		server_wait_all();
	}
	pthread_attr_destroy(&server_pool.attr);
	sem_destroy(&server_wake);
	free(server_pool.workers);
	server_pool.workers = NULL;
	/* transfers of threads still running (send.fcgi's delivery) finish first */
	upstream_shutdown();
	log_info("%s stopped", app->name);
	return 0;
}

int
server_main(struct app *app, struct settings *s, unsigned need)
{
	char	err[512];

	log_init(app->name, NULL);
	if (settings_load(s, need, err, sizeof err) == -1)
		fatal("bad settings: %s", err);
	if (log_init(app->name, s->log_file) == -1)
		fatal("cannot open MAILKIT_LOG_FILE %s: %s", s->log_file, strerror(errno));
	settings_log_warnings(s);
	upstream_configure(s);
	if (app->init != NULL && app->init(s, err, sizeof err) == -1)
		fatal("%s", err);
	if (app->threads <= 0)
		app->threads = (int)s->threads;
	server_request_timeout_ms = s->request_timeout_ms;
	app->max_body = (size_t)s->max_body;
	return server_run(app);
}
