/* server.h: the FastCGI request loop, owned request copies, and the one response writer. */
#ifndef MAILKIT_SERVER_H
#define MAILKIT_SERVER_H

#include <stddef.h>
#include <json-c/json.h>

#include "buf.h"
#include "err.h"
#include "valid.h"

#define REQUEST_PATH_MAX	2048	/* longer URIs get 414 */
#define REQUEST_PARAMS_MAX	4	/* "{}" captures per route pattern */
#define REQUEST_PARAM_MAX	256	/* bytes per decoded capture */
#define RESPONSE_MAX		(4 * 1024 * 1024)	/* 4M: pages and JSON we produce */
#define RESPONSE_HEADERS_MAX	2048	/* extra header lines per response */

/*
 * Everything a handler may read about a request, copied out of the FastCGI
 * parameters when the request is accepted: nothing here points into libfcgi
 * memory, and all of it is reset before the next request.  Header values
 * longer than their field are refused with 400 before any handler runs.
 */
struct request {
	char	 method[16];
	char	 path[REQUEST_PATH_MAX];	/* REQUEST_URI before '?', mount prefix removed, still encoded */
	char	 query[REQUEST_PATH_MAX];	/* after '?', raw; "" if none */
	char	 content_type[256];
	char	 authorization[1024];
	char	 idempotency_key[IDEMPOTENCY_KEY_MAX + 1];
	char	 webhook_id[256];
	char	 webhook_timestamp[32];
	char	 webhook_signature[4096];
	char	 remote_addr[64];
	char	 host[256];
	char	 user_agent[1024];	/* the sandbox's Resend emulation refuses requests without one */
	char	 origin[256];		/* Origin header; "" if none (the sandbox's CSRF check) */
	/* decoded "{}" captures of the matched route pattern, in order */
	char	 params[REQUEST_PARAMS_MAX][REQUEST_PARAM_MAX];
	size_t	 nparams;
	/* the body exactly as received, NUL-terminated; owned by the loop */
	char	*body;
	size_t	 body_len;
};

/* Filled by a handler, written by exactly one function in server.c. */
struct response {
	int		 status;
	const char	*content_type;		/* static string */
	struct buf	 body;
	char		 headers[RESPONSE_HEADERS_MAX];	/* extra "Name: value\r\n" lines */
	size_t		 headers_len;
	int		 drop;		/* fault tests: RESPONSE_DROP or RESPONSE_CUT; 0 */
	size_t		 cut_at;	/* RESPONSE_CUT: body bytes sent before the cut */
};

#define RESPONSE_DROP	1	/* end the request with no reply at all */
#define RESPONSE_CUT	2	/* send the head (its Content-Length the whole body's)
				   and cut_at bytes of the body, then break the
				   connection without ending the request: a cut
				   mid-body, as a crashed upstream's */

typedef void route_handler(const struct request *req, struct response *resp);

/*
 * A route: method and path pattern.  Patterns are literal segments and
 * "{}" captures of exactly one non-empty segment, e.g. "/credits/{}".  A
 * pattern ending in a slash and a star matches any remainder.  When the path matches
 * some route but none with the request's method, the loop answers 405 with
 * an Allow header; when nothing matches, 404.  All JSON.
 */
struct settings;

struct route {
	const char	*method;
	const char	*pattern;
	route_handler	*handler;
};

struct app {
	const char		*name;		/* program name for logs */
	const struct route	*routes;
	size_t			 nroutes;
	size_t			 max_body;	/* 413 above this, before reading */
	int			 threads;	/* request threads in this process (>= 1); 0: MAILKIT_THREADS */
	size_t			 thread_stack;	/* bytes of stack per request thread; 0: the system's */
	const char		*mount;		/* path prefix to strip, e.g. "/sandbox"; NULL = none */
	int			 json_only;	/* 415 unless POST/PUT/... say Content-Type: application/json */
	int			 loopback_only;	/* 403 unless REMOTE_ADDR is a loopback address */
	/* run by server_main once the settings are loaded, before serving; 0 / -1 with err */
	int			(*init)(const struct settings *s, char *err, size_t errlen);
};

/*
 * Run the accept loop on the FastCGI socket (fd 0, as spawn-fcgi and the
 * web servers pass it, or $MAILKIT_SOCKET if set) until SIGTERM/SIGINT.
 * Requests already being handled finish.  Returns the process exit status.
 */
int	server_run(const struct app *app);

/*
 * The whole life of a program: load and check the settings the program
 * needs (exiting with a message that names the bad key), open the log,
 * configure outbound HTTP, take threads and the body ceiling from the
 * settings, run app->init, and run the loop.  With MAILKIT_CHECK_ONLY set it returns 0
 * right after the checks, so scripts can validate a configuration.
 */
int	server_main(struct app *app, struct settings *s, unsigned need);

/*
 * Copy the FastCGI parameters envp (as FCGX_GetParam reads them) into req,
 * which the caller zeroed: the header fields, the path with the web
 * server's mount (the parameter MAILKIT_PREFIX, when set) and then `mount`
 * (may be NULL) stripped, and the query.  Nothing in req points into envp.  Returns
 * 0, or -1 with err set (400 a header too long for its field or a blank or
 * space-padded Idempotency-Key, 414 a URI too long, 404 outside the mount).
 * Exposed for tests and the fuzzer.
 */
int	request_copy(struct request *req, char **envp, const char *mount,
	    struct mk_err *err);

/*
 * The CONTENT_LENGTH parameter cl (NULL or "" when absent) against the body
 * ceiling max: 1 with *want set, 0 when absent (read to EOF), or -1 with err
 * (400 not a plain decimal number, 413 above max).  Exposed for the fuzzer.
 */
int	request_content_length(const char *cl, size_t max, size_t *want, struct mk_err *err);

/* 1 if REMOTE_ADDR is a loopback address (127.0.0.0/8, ::1, ::ffff:127.x), else 0
 * (an empty one too: a program that must know cannot assume). */
int	request_from_loopback(const struct request *req);

/* Route matching, exposed for tests: 1 if path matches pattern (captures
 * decoded into req->params), 0 if not, -1 if a capture is undecodable. */
int	server_match(const char *pattern, const char *path, struct request *req);

/* --- filling the response (handlers never print) --- */

/* Serialise obj as the body with `status`; takes ownership of obj. */
void	response_json(struct response *resp, int status, json_object *obj);
/* {"error": "<formatted text>"} with `status`. */
void	response_error(struct response *resp, int status, const char *fmt, ...)
	    __attribute__((format(printf, 3, 4)));
/* The one place a struct mk_err becomes an HTTP reply. */
void	response_fail(struct response *resp, const struct mk_err *err);
/* Arbitrary body (pages of the sandbox); content_type must be a static string. */
void	response_body(struct response *resp, int status, const char *content_type,
	    const char *data, size_t len);
/* 303 See Other to location. */
void	response_redirect(struct response *resp, const char *location);
/* Add a header line; refuses names or values with CR/LF/NUL.  0 / -1. */
int	response_header(struct response *resp, const char *name, const char *value);

/* --- reading the request --- */

/*
 * Parse the body as a JSON object with at most JSON_MAX_DEPTH nesting.
 * Returns the object (caller puts it) or NULL with err set to 400.
 */
#define JSON_MAX_DEPTH	16
json_object	*request_json(const struct request *req, struct mk_err *err);

/* Human reason phrase for a status code ("Not Found"). */
const char	*http_reason(int status);

#endif
