/* openai.c: the AI model client (openai.h) — chat completions, OpenAI's error shape mapped to true statuses. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "err.h"
#include "log.h"
#include "openai.h"
#include "settings.h"
#include "upstream.h"

#define OPENAI_CODE_MAX		64	/* an error code we echo must be this short ... */
#define OPENAI_LOG_TEXT_MAX	200	/* ... and OpenAI's message is cut here in logs */
#define OPENAI_JSON_FLAGS	(JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)

void
openai_result_free(struct openai_result *out)
{
	free(out->text);
	out->text = NULL;
}

/* Member key of obj if it has type t, else NULL. */
static json_object *
openai_member(json_object *obj, const char *key, json_type t)
{
	json_object *v;

	if (obj == NULL || !json_object_is_type(obj, json_type_object) ||
	    !json_object_object_get_ex(obj, key, &v) || !json_object_is_type(v, t))
		return NULL;
	return v;
}

/* A token count: a non-negative integer member of usage, or -1. */
static long
openai_count(json_object *usage, const char *key)
{
	json_object	*v = openai_member(usage, key, json_type_int);
	int64_t		 n;

	if (v == NULL || (n = json_object_get_int64(v)) < 0 || n > 1000000000)
		return -1;
	return (long)n;
}

/* [a-z0-9_] codes only are shown to clients; OpenAI's messages are not. */
static int
openai_code_safe(const char *code)
{
	if (code == NULL || code[0] == '\0' || strlen(code) > OPENAI_CODE_MAX)
		return 0;
	for (const char *p = code; *p != '\0'; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_'))
			return 0;
	return 1;
}

/* Map OpenAI's {error: {message, type, param, code}} answer (openai.h). */
static int
openai_fail_status(const struct upstream_response *r, struct mk_err *err)
{
	json_object	*e = openai_member(r->json, "error", json_type_object);
	json_object	*c = openai_member(e, "code", json_type_string);
	json_object	*t = openai_member(e, "type", json_type_string);
	json_object	*m = openai_member(e, "message", json_type_string);
	const char	*code = c != NULL ? json_object_get_string(c) :
			    t != NULL ? json_object_get_string(t) : NULL;

	log_warn("openai: chat completion: HTTP %ld %.*s: %.*s", r->status, OPENAI_CODE_MAX,
	    code != NULL ? code : "-", OPENAI_LOG_TEXT_MAX,
	    m != NULL ? json_object_get_string(m) : "-");
	if (r->status == 401 || r->status == 403) {
		log_error("openai: our key was refused (check OPENAI_API_KEY and OPENAI_BASE_URL)");
		return mk_fail(err, 502, "AI model unavailable");
	}
	if (r->status == 429 || r->status == 503)
		return mk_fail(err, 503, "AI model busy; nothing was charged, try again later");
	if (r->status == 400 || r->status == 422) {
		if (openai_code_safe(code))
			return mk_fail(err, 400, "the AI model refused the request (%s)", code);
		return mk_fail(err, 400, "the AI model refused the request");
	}
	return mk_fail(err, 502, "AI model unavailable; nothing was charged");
}

/* The request body; caller frees the returned string.  NULL on no memory. */
static char *
openai_body(const struct settings *s, json_object *messages, long max_tokens)
{
	json_object	*body;
	char		*text = NULL;
	const char	*t;

	if ((body = json_object_new_object()) == NULL)
		return NULL;
	json_object_object_add(body, "model", json_object_new_string(s->openai_model));
	json_object_object_add(body, "messages", json_object_get(messages));
	/* max_tokens' current name: reasoning models refuse the old one */
	json_object_object_add(body, "max_completion_tokens", json_object_new_int64(max_tokens));
	if ((t = json_object_to_json_string_ext(body, OPENAI_JSON_FLAGS)) != NULL)
		text = strdup(t);
	json_object_put(body);
	return text;
}

int
openai_chat(const struct settings *s, json_object *messages, long max_tokens,
    struct openai_result *out, struct mk_err *err)
{
	struct upstream_request		 req = {
		.method = "POST",
		.path = "/chat/completions",
		.retry_safe = 1,	/* only the answer returned is billed (openai.h) */
	};
	struct upstream_response	 resp = { .json = NULL };
	json_object			*choices, *choice, *message, *content, *usage, *v;
	char				*body = NULL;
	int				 result = -1;

	memset(out, 0, sizeof *out);
	if (s->openai_base_url == NULL || s->openai_api_key == NULL || s->openai_model == NULL) {
		log_error("openai: OPENAI_API_KEY or OPENAI_BASE_URL is not set");
		return mk_fail(err, 500, "AI model not configured");
	}
	if ((body = openai_body(s, messages, max_tokens)) == NULL)
		return mk_fail(err, 500, "out of memory");
	req.base_url = s->openai_base_url;
	req.bearer = s->openai_api_key;
	req.body = body;
	if (upstream_call(&req, &resp, err) == -1) {
		if (err != NULL && err->status == 504)
			mk_fail(err, 504, "AI model timed out; nothing was charged");
		else
			mk_fail(err, 502, "AI model unavailable; nothing was charged");
		goto out;
	}
	if (resp.status < 200 || resp.status >= 300) {
		openai_fail_status(&resp, err);
		goto out;
	}
	choices = openai_member(resp.json, "choices", json_type_array);
	choice = choices != NULL && json_object_array_length(choices) > 0 ?
	    json_object_array_get_idx(choices, 0) : NULL;
	message = openai_member(choice, "message", json_type_object);
	content = openai_member(message, "content", json_type_string);
	usage = openai_member(resp.json, "usage", json_type_object);
	out->prompt_tokens = openai_count(usage, "prompt_tokens");
	out->completion_tokens = openai_count(usage, "completion_tokens");
	out->total_tokens = openai_count(usage, "total_tokens");
	if (message == NULL || out->prompt_tokens < 0 || out->completion_tokens < 0) {
		log_warn("openai: chat completion: HTTP %ld without a message and usage",
		    resp.status);
		mk_fail(err, 502, "AI model unavailable; nothing was charged");
		goto out;
	}
	if (out->total_tokens < 0)
		out->total_tokens = out->prompt_tokens + out->completion_tokens;
	if (content != NULL && json_object_get_string_len(content) > OPENAI_TEXT_MAX) {
		log_warn("openai: answer longer than %d bytes", OPENAI_TEXT_MAX);
		mk_fail(err, 502, "AI model unavailable; nothing was charged");
		goto out;
	}
	if ((out->text = strdup(content != NULL ? json_object_get_string(content) : "")) ==
	    NULL) {
		mk_fail(err, 500, "out of memory");
		goto out;
	}
	v = openai_member(resp.json, "model", json_type_string);
	snprintf(out->model, sizeof out->model, "%s",
	    v != NULL ? json_object_get_string(v) : s->openai_model);
	v = openai_member(choice, "finish_reason", json_type_string);
	snprintf(out->finish_reason, sizeof out->finish_reason, "%s",
	    v != NULL ? json_object_get_string(v) : "");
	result = 0;
out:
	if (result == -1)
		openai_result_free(out);
	free(body);
	upstream_response_free(&resp);
	return result;
}
