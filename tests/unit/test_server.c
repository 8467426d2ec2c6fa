/* test_server.c: routing, request JSON parsing and response building. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "server.h"

Test(server, match_literal_and_captures)
{
	struct request req;

	memset(&req, 0, sizeof req);
	cr_expect_eq(server_match("/send", "/send", &req), 1);
	cr_expect_eq(server_match("/send", "/sendfoo", &req), 0);
	cr_expect_eq(server_match("/send", "/send/", &req), 0);
	cr_expect_eq(server_match("/credits/{}", "/credits/cus_1", &req), 1);
	cr_expect_eq(req.nparams, 1);
	cr_expect_str_eq(req.params[0], "cus_1");
	cr_expect_eq(server_match("/credits/{}", "/credits/", &req), 0);
	cr_expect_eq(server_match("/credits/{}", "/credits/a/b", &req), 0);
	cr_expect_eq(server_match("/credits/{}/ledger", "/credits/cus_2/ledger", &req), 1);
	cr_expect_str_eq(req.params[0], "cus_2");
	cr_expect_eq(server_match("/a/{}/b/{}", "/a/x/b/y", &req), 1);
	cr_expect_eq(req.nparams, 2);
	cr_expect_str_eq(req.params[1], "y");
	cr_expect_eq(server_match("/pages/*", "/pages/a/b", &req), 1);
	cr_expect_eq(server_match("/pages/*", "/pagesx", &req), 0);
}

Test(server, captures_are_decoded_once)
{
	struct request req;

	memset(&req, 0, sizeof req);
	/* an encoded slash stays inside the capture: the route does not change */
	cr_expect_eq(server_match("/credits/{}", "/credits/a%2Fb", &req), 1);
	cr_expect_str_eq(req.params[0], "a/b");
	cr_expect_eq(server_match("/credits/{}", "/credits/a%2", &req), -1);
	cr_expect_eq(server_match("/credits/{}", "/credits/%00", &req), -1);
}

static struct request *
body_request(const char *body)
{
	static struct request	req;
	static char		copy[4096];

	memset(&req, 0, sizeof req);
	snprintf(copy, sizeof copy, "%s", body);
	req.body = copy;
	req.body_len = strlen(copy);
	return &req;
}

Test(server, request_json_accepts_objects_only)
{
	struct mk_err	 err;
	json_object	*o;

	o = request_json(body_request(" {\"a\": 1}\n "), &err);
	cr_assert_not_null(o);
	json_object_put(o);

	const char *bad[] = { "", "{", "{\"a\":1} trailing", "[1,2]", "\"str\"", "42",
	    "{\"a\":1}{\"b\":2}", "nul\x01l" };
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		o = request_json(body_request(bad[i]), &err);
		cr_expect_null(o, "accepted %s", bad[i]);
		cr_expect_eq(err.status, 400);
		json_object_put(o);
	}
}

Test(server, request_json_depth_limit)
{
	char	deep[2 * (JSON_MAX_DEPTH + 2) + 16];
	size_t	n = 0;
	struct mk_err err;
	json_object *o;

	for (int i = 0; i < JSON_MAX_DEPTH + 1; i++)
		deep[n++] = i == 0 ? '{' : '[';
	deep[n] = '\0';
	/* "{"a": [[[...]]]}" nested one level deeper than allowed */
	char body[sizeof deep + 64];
	strcpy(body, "{\"a\":");
	for (int i = 0; i < JSON_MAX_DEPTH; i++)
		strcat(body, "[");
	for (int i = 0; i < JSON_MAX_DEPTH; i++)
		strcat(body, "]");
	strcat(body, "}");
	o = request_json(body_request(body), &err);
	cr_expect_null(o);
	cr_expect_eq(err.status, 400);
	cr_expect_not_null(strstr(err.msg, "nested"), "%s", err.msg);
	json_object_put(o);
}

Test(server, request_json_refuses_invalid_utf8_and_duplicates)
{
	const char *bad[] = {
		"{\"s\":\"a\xff\xfe\"}", "{\"s\":\"\xc0\xaf\"}", "{\"s\":\"\xed\xa0\x80\"}",
		"{\"s\":\"\xe2\x82\"}", "{\"a\":1,\"a\":2}", "{\"a\":1,\"\\u0061\":2}",
		"{\"o\":{\"x\":{\"y\":1},\"x\":{\"y\":1,\"z\":2}}}", "[{\"a\":1}]",
		"{\"a\":[{\"b\":1,\"b\":1}]}", "{'a':1}", "{\"a\":1,}", "{\"a\":1 /* \"a\" */}", "{\"a\":1, // x\n\"b\":2}",
	};
	const char *good[] = {
		"{\"s\":\"caf\xc3\xa9 \xf0\x9f\x98\x80\"}", "{\"a\":\"x:y\",\"b\":\"\\\":\"}",
		"{\"a\":{\"a\":{\"a\":1}},\"b\":[{\"a\":1},{\"a\":2}]}",
	};
	struct mk_err	 err;
	json_object	*o;

	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		o = request_json(body_request(bad[i]), &err);
		cr_expect_null(o, "accepted %s", bad[i]);
		cr_expect_eq(err.status, 400);
		json_object_put(o);
	}
	for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
		o = request_json(body_request(good[i]), &err);
		cr_expect_not_null(o, "refused %s: %s", good[i], err.msg);
		json_object_put(o);
	}
}

Test(server, request_copy_refuses_blank_idempotency_keys)
{
	static struct request	req;
	struct mk_err		err;
	char			uri[] = "REQUEST_URI=/send", k1[] = "HTTP_IDEMPOTENCY_KEY=",
				k2[] = "HTTP_IDEMPOTENCY_KEY= k", k3[] = "HTTP_IDEMPOTENCY_KEY=k ",
				ok[] = "HTTP_IDEMPOTENCY_KEY=k", addr[] = "REMOTE_ADDR=127.0.0.1";
	char			*bad[] = { k1, k2, k3 };

	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		char *envp[] = { uri, bad[i], NULL };

		memset(&req, 0, sizeof req);
		cr_expect_eq(request_copy(&req, envp, NULL, &err), -1, "accepted %s", bad[i]);
		cr_expect_eq(err.status, 400);
	}
	char *envp[] = { uri, ok, addr, NULL };

	memset(&req, 0, sizeof req);
	cr_assert_eq(request_copy(&req, envp, NULL, &err), 0, "%s", err.msg);
	cr_expect_str_eq(req.idempotency_key, "k");
	cr_expect_str_eq(req.remote_addr, "127.0.0.1");
	cr_expect_str_eq(req.path, "/send");
}

Test(server, request_copy_strips_the_web_servers_prefix_then_the_mount)
{
	static struct request	req;
	struct mk_err		err;
	char			uri[] = "REQUEST_URI=/mailkit/sandbox/outbox?x=1",
				pre[] = "MAILKIT_PREFIX=/mailkit", root[] = "REQUEST_URI=/mailkit",
				out[] = "REQUEST_URI=/mailkitx/sandbox/outbox";
	char			*envp[] = { uri, pre, NULL }, *envr[] = { root, pre, NULL },
				*envo[] = { out, pre, NULL };

	memset(&req, 0, sizeof req);
	cr_assert_eq(request_copy(&req, envp, "/sandbox", &err), 0, "%s", err.msg);
	cr_expect_str_eq(req.path, "/outbox");
	cr_expect_str_eq(req.query, "x=1");
	memset(&req, 0, sizeof req);
	cr_assert_eq(request_copy(&req, envr, NULL, &err), 0, "%s", err.msg);
	cr_expect_str_eq(req.path, "/");
	memset(&req, 0, sizeof req);
	cr_expect_eq(request_copy(&req, envo, NULL, &err), -1, "outside the prefix");
	cr_expect_eq(err.status, 404);
}

static void
resp_init(struct response *r)
{
	memset(r, 0, sizeof *r);
	buf_init(&r->body, RESPONSE_MAX);
}

Test(server, response_error_is_json)
{
	struct response	 r;
	json_object	*o;

	resp_init(&r);
	response_error(&r, 404, "no customer \"%s\"", "x</script>");
	cr_expect_eq(r.status, 404);
	cr_expect_str_eq(r.content_type, "application/json");
	o = json_tokener_parse(r.body.data);
	cr_assert_not_null(o, "not JSON: %s", r.body.data);
	cr_expect_str_eq(json_object_get_string(json_object_object_get(o, "error")),
	    "no customer \"x</script>\"");
	json_object_put(o);
	buf_free(&r.body);
}

Test(server, response_fail_maps_status)
{
	struct response	r;
	struct mk_err	err;

	resp_init(&r);
	mk_fail(&err, 504, "payments service timed out");
	response_fail(&r, &err);
	cr_expect_eq(r.status, 504);
	cr_expect_not_null(strstr(r.body.data, "timed out"));
	mk_fail(&err, 0, "weird");
	response_fail(&r, &err);
	cr_expect_eq(r.status, 500);
	buf_free(&r.body);
}

Test(server, response_headers_refuse_injection)
{
	struct response r;

	resp_init(&r);
	cr_expect_eq(response_header(&r, "Retry-After", "1"), 0);
	cr_expect_eq(response_header(&r, "X-Bad", "a\r\nSet-Cookie: x=1"), -1);
	cr_expect_eq(response_header(&r, "Bad Name", "v"), -1);
	cr_expect_eq(response_header(&r, "Bad:Name", "v"), -1);
	cr_expect_str_eq(r.headers, "Retry-After: 1\r\n");
	response_redirect(&r, "http://localhost:8080/?subscribed=1");
	cr_expect_eq(r.status, 303);
	cr_expect_not_null(strstr(r.headers, "Location: http://localhost:8080/?subscribed=1\r\n"));
	buf_free(&r.body);
}

Test(server, reasons)
{
	cr_expect_str_eq(http_reason(402), "Payment Required");
	cr_expect_str_eq(http_reason(413), "Content Too Large");
	cr_expect_str_eq(http_reason(504), "Gateway Timeout");
}

Test(server, loopback_addresses)
{
	static struct request	req;
	const char *yes[] = { "127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1", "::FFFF:127.0.0.9" };
	const char *no[] = { "", "10.0.0.1", "203.0.113.7", "::ffff:192.0.2.1", "127.", "127.evil",
	    "1127.0.0.1", "::2", "fe80::1" };

	for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
		snprintf(req.remote_addr, sizeof req.remote_addr, "%s", yes[i]);
		cr_expect(request_from_loopback(&req), "%s", yes[i]);
	}
	for (size_t i = 0; i < sizeof no / sizeof no[0]; i++) {
		snprintf(req.remote_addr, sizeof req.remote_addr, "%s", no[i]);
		cr_expect(!request_from_loopback(&req), "%s", no[i]);
	}
}

Test(server, content_length)
{
	struct mk_err	err;
	size_t		want;

	cr_expect_eq(request_content_length(NULL, 100, &want, &err), 0);
	cr_expect_eq(request_content_length("", 100, &want, &err), 0);
	cr_expect_eq(request_content_length("42", 100, &want, &err), 1);
	cr_expect_eq(want, 42);
	cr_expect_eq(request_content_length("100", 100, &want, &err), 1);
	cr_expect_eq(request_content_length("101", 100, &want, &err), -1);
	cr_expect_eq(err.status, 413);
	const char *bad[] = { "-1", "+1", " 1", "1 ", "0x10", "1e3", "99999999999999999999999" };
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		cr_expect_eq(request_content_length(bad[i], 100, &want, &err), -1, "%s", bad[i]);
		cr_expect_eq(err.status, 400, "%s", bad[i]);
	}
}
