/* openai_api.c: OpenAI's POST /chat/completions (plain and SSE) and GET /models (under /sandbox/openai/v1). */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "buf.h"
#include "sandbox.h"

#define OPENAI_API_REPLY_PREFIX	"You said: "	/* the completion: this + the last user message */
#define OPENAI_API_TOKENS_PER_MESSAGE 3		/* prompt: per message, around its content */
#define OPENAI_API_TOKENS_PRIMING 3		/* prompt: the assistant reply's start */
#define OPENAI_API_TEXT_MAX	(256 * 1024)	/* one message's text, bytes */
#define OPENAI_API_MESSAGES_MAX	2048		/* OpenAI's own limit */
#define OPENAI_API_TOKENS_MAX	1000000		/* max_tokens / max_completion_tokens */
#define OPENAI_API_STREAM_MAX	(RESPONSE_MAX / 2)	/* SSE body bytes we build */
#define OPENAI_API_CREATED	1700000000LL	/* "created" of the models we list */

/* The models served, as GET /models lists them; the first is the tutorial's. */
static const char *const openai_api_models[] = { "gpt-5-mini", "gpt-4o-mini" };
#define OPENAI_API_NMODELS	(sizeof openai_api_models / sizeof openai_api_models[0])

void
openai_api_error(struct response *resp, int status, const char *type, const char *param,
    const char *code, const char *fmt, ...)
{
	json_object	*o = json_object_new_object(), *e = json_object_new_object();
	char		 msg[512];
	va_list		 ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	json_object_object_add(e, "message", json_object_new_string(msg));
	json_object_object_add(e, "type", json_object_new_string(type));
	json_object_object_add(e, "param", param != NULL ? json_object_new_string(param) : NULL);
	json_object_object_add(e, "code", code != NULL ? json_object_new_string(code) : NULL);
	json_object_object_add(o, "error", e);
	response_json(resp, status, o);
}

/* 400 invalid_request_error about param. */
#define openai_api_invalid(resp, param, code, ...) \
	openai_api_error(resp, 400, "invalid_request_error", param, code, __VA_ARGS__)

/*
 * The tokenizer approximation (README): a token is a run of letters,
 * digits and non-ASCII bytes, or any other single non-space byte.  From
 * byte pos of s, the next token ends at *end (its leading spaces are
 * part of it); 0 when only spaces are left.
 */
static int
openai_api_next_token(const char *s, size_t len, size_t pos, size_t *end)
{
	const unsigned char	*u = (const unsigned char *)s;

	while (pos < len && isspace(u[pos]))
		pos++;
	if (pos == len)
		return 0;
	if (isalnum(u[pos]) || u[pos] >= 0x80)
		while (pos < len && (isalnum(u[pos]) || u[pos] >= 0x80))
			pos++;
	else
		pos++;
	*end = pos;
	return 1;
}

/* Tokens of s (as openai_api_next_token counts them). */
static int64_t
openai_api_count(const char *s, size_t len)
{
	size_t	pos = 0;
	int64_t	n = 0;

	while (openai_api_next_token(s, len, pos, &pos))
		n++;
	return n;
}

/*
 * A message's text into out: a string, or the "text" of its parts of type
 * "text"; null or absent content is "".  role and content are checked as
 * OpenAI does.  0, or -1 with a 400 in resp.
 */
static int
openai_api_message(json_object *m, struct buf *out, const char **role)
{
	static const char *const roles[] = { "system", "developer", "user", "assistant", "tool" };
	json_object	*v, *part, *t;
	size_t		 k, n;

	*role = NULL;
	if (!json_object_is_type(m, json_type_object) || !json_object_object_get_ex(m, "role",
	    &v) || !json_object_is_type(v, json_type_string))
		return -1;
	for (k = 0; k < sizeof roles / sizeof roles[0]; k++)
		if (strcmp(json_object_get_string(v), roles[k]) == 0)
			*role = roles[k];
	if (*role == NULL)
		return -1;
	buf_reset(out);
	if (!json_object_object_get_ex(m, "content", &v) || v == NULL)
		return strcmp(*role, "assistant") == 0 ? 0 : -1;
	if (json_object_is_type(v, json_type_string))
		return buf_append(out, json_object_get_string(v),
		    (size_t)json_object_get_string_len(v));
	if (!json_object_is_type(v, json_type_array) || (n = json_object_array_length(v)) == 0)
		return -1;
	for (k = 0; k < n; k++) {
		part = json_object_array_get_idx(v, k);
		if (!json_object_object_get_ex(part, "type", &t) ||
		    !json_object_is_type(t, json_type_string))
			return -1;
		if (strcmp(json_object_get_string(t), "text") != 0)
			continue;	/* images and audio: no text to answer */
		if (!json_object_object_get_ex(part, "text", &t) ||
		    !json_object_is_type(t, json_type_string) ||
		    buf_append(out, json_object_get_string(t),
		    (size_t)json_object_get_string_len(t)) == -1)
			return -1;
	}
	return 0;
}

/* What a valid request asks for. */
struct openai_api_call {
	const char	*model;
	int64_t		 max_tokens;	/* 0: no limit */
	int		 stream;
	int		 include_usage;
	int64_t		 prompt_tokens;
	struct buf	 reply;		/* the whole completion before any cut */
};

/* Optional positive integer member name: 0 (left alone when absent or null), -1 with a 400. */
static int
openai_api_limit(json_object *root, const char *name, int64_t *out, struct response *resp)
{
	json_object	*v;

	if (!json_object_object_get_ex(root, name, &v) || v == NULL)
		return 0;
	if (!json_object_is_type(v, json_type_int) || json_object_get_int64(v) < 1 ||
	    json_object_get_int64(v) > OPENAI_API_TOKENS_MAX) {
		openai_api_invalid(resp, name, "integer_below_min_value", "Invalid '%s': expected "
		    "an integer from 1 to %d.", name, OPENAI_API_TOKENS_MAX);
		return -1;
	}
	*out = json_object_get_int64(v);
	return 0;
}

/* Check the body as OpenAI does and fill c (reply built).  0, or -1 with a 4xx in resp. */
static int
openai_api_parse(json_object *root, struct openai_api_call *c, struct response *resp)
{
	json_object	*v, *msgs, *opt;
	struct buf	 text;
	const char	*role, *answered = NULL;
	size_t		 i, n;
	int		 rc = -1;

	if (!json_object_object_get_ex(root, "model", &v) || !json_object_is_type(v,
	    json_type_string) || json_object_get_string_len(v) == 0) {
		openai_api_invalid(resp, "model", "missing_required_parameter",
		    "you must provide a model parameter");
		return -1;
	}
	c->model = json_object_get_string(v);
	for (i = 0; i < OPENAI_API_NMODELS && strcmp(c->model, openai_api_models[i]) != 0; i++)
		;
	if (i == OPENAI_API_NMODELS) {
		openai_api_error(resp, 404, "invalid_request_error", NULL, "model_not_found",
		    "The model `%.100s` does not exist or you do not have access to it.", c->model);
		return -1;
	}
	if (!json_object_object_get_ex(root, "messages", &msgs) || msgs == NULL) {
		openai_api_invalid(resp, "messages", "missing_required_parameter",
		    "Missing required parameter: 'messages'.");
		return -1;
	}
	if (!json_object_is_type(msgs, json_type_array) ||
	    (n = json_object_array_length(msgs)) == 0 || n > OPENAI_API_MESSAGES_MAX) {
		openai_api_invalid(resp, "messages", json_object_is_type(msgs, json_type_array) ?
		    "empty_array" : "invalid_type", "Invalid 'messages': expected an array of 1 to "
		    "%d messages.", OPENAI_API_MESSAGES_MAX);
		return -1;
	}
	if (openai_api_limit(root, "max_tokens", &c->max_tokens, resp) == -1 ||
	    openai_api_limit(root, "max_completion_tokens", &c->max_tokens, resp) == -1)
		return -1;
	if (json_object_object_get_ex(root, "stream", &v) && v != NULL) {
		if (!json_object_is_type(v, json_type_boolean)) {
			openai_api_invalid(resp, "stream", "invalid_type",
			    "Invalid type for 'stream': expected a boolean.");
			return -1;
		}
		c->stream = json_object_get_boolean(v);
	}
	if (json_object_object_get_ex(root, "stream_options", &opt) && opt != NULL) {
		if (!c->stream) {
			openai_api_invalid(resp, "stream_options", "invalid_value", "The "
			    "'stream_options' parameter is only allowed when 'stream' is enabled.");
			return -1;
		}
		c->include_usage = json_object_object_get_ex(opt, "include_usage", &v) &&
		    json_object_get_boolean(v);
	}
	buf_init(&text, OPENAI_API_TEXT_MAX);
	c->prompt_tokens = OPENAI_API_TOKENS_PRIMING;
	for (i = 0; i < n; i++) {
		if (openai_api_message(json_object_array_get_idx(msgs, i), &text, &role) == -1) {
			openai_api_invalid(resp, "messages", "invalid_value", "Invalid 'messages[%zu]':"
			    " expected {role: system|developer|user|assistant|tool, content: a "
			    "string or an array of content parts}.", i);
			goto out;
		}
		c->prompt_tokens += OPENAI_API_TOKENS_PER_MESSAGE +
		    openai_api_count(text.data != NULL ? text.data : "", text.len);
		if (strcmp(role, "user") == 0 || answered == NULL) {
			buf_reset(&c->reply);
			if (buf_puts(&c->reply, OPENAI_API_REPLY_PREFIX) == -1 ||
			    buf_append(&c->reply, text.data != NULL ? text.data : "", text.len) == -1)
				goto out;
			answered = role;
		}
	}
	rc = 0;
out:
	if (rc == -1 && resp->status == 0)
		openai_api_invalid(resp, "messages", "invalid_value", "messages too long");
	buf_free(&text);
	return rc;
}

/* The usage object of prompt and completion token counts. */
static json_object *
openai_api_usage(int64_t prompt, int64_t completion)
{
	json_object	*u = json_object_new_object();

	json_object_object_add(u, "prompt_tokens", json_object_new_int64(prompt));
	json_object_object_add(u, "completion_tokens", json_object_new_int64(completion));
	json_object_object_add(u, "total_tokens", json_object_new_int64(prompt + completion));
	return u;
}

/* A completion object's common members: id, object, created, model. */
static json_object *
openai_api_head(const char *id, const char *object, int64_t created, const char *model)
{
	json_object	*o = json_object_new_object();

	json_object_object_add(o, "id", json_object_new_string(id));
	json_object_object_add(o, "object", json_object_new_string(object));
	json_object_object_add(o, "created", json_object_new_int64(created));
	json_object_object_add(o, "model", json_object_new_string(model));
	json_object_object_add(o, "system_fingerprint", json_object_new_string("fp_sandbox"));
	return o;
}

/* One choice: "message" or "delta" holding {role?, content?}; finish may be NULL. */
static json_object *
openai_api_choice(const char *member, const char *role, const char *content, size_t len,
    const char *finish)
{
	json_object	*ch = json_object_new_object(), *m = json_object_new_object();

	if (role != NULL)
		json_object_object_add(m, "role", json_object_new_string(role));
	if (content != NULL)
		json_object_object_add(m, "content", json_object_new_string_len(content, (int)len));
	if (strcmp(member, "message") == 0)
		json_object_object_add(m, "refusal", NULL);
	json_object_object_add(ch, "index", json_object_new_int(0));
	json_object_object_add(ch, member, m);
	json_object_object_add(ch, "logprobs", NULL);
	json_object_object_add(ch, "finish_reason", finish != NULL ?
	    json_object_new_string(finish) : NULL);
	return ch;
}

/* Append "data: <chunk>\n\n" (chunk taken) to sse.  0 / -1. */
static int
openai_api_event(struct buf *sse, json_object *chunk)
{
	int	rc = buf_printf(sse, "data: %s\n\n", json_object_to_json_string_ext(chunk,
	    JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));

	json_object_put(chunk);
	return rc;
}

/* A chat.completion.chunk with one choice (or none: choice NULL). */
static json_object *
openai_api_chunk(const struct openai_api_call *c, const char *id, int64_t created,
    json_object *choice, json_object *usage)
{
	json_object	*o = openai_api_head(id, "chat.completion.chunk", created, c->model);
	json_object	*choices = json_object_new_array();

	if (choice != NULL)
		json_object_array_add(choices, choice);
	json_object_object_add(o, "choices", choices);
	if (c->include_usage)
		json_object_object_add(o, "usage", usage);
	else
		json_object_put(usage);
	return o;
}

/*
 * The SSE body: the role chunk, a chunk per token, the finish chunk, the
 * usage chunk (include_usage) and [DONE].  cut ("drop" fault): the head
 * promises the whole body, but the connection breaks after the first half
 * of the token chunks (RESPONSE_CUT), as when the model's server dies
 * mid-stream: no finish, no usage, no [DONE], and a body shorter than its
 * Content-Length.
 */
static void
openai_api_stream(const struct openai_api_call *c, const char *id, int64_t created,
    size_t len, int64_t completion, const char *finish, int cut, struct response *resp)
{
	struct buf	 sse;
	size_t		 pos = 0, end, cut_at = 0;
	int64_t		 k = 0;
	int		 rc;

	buf_init(&sse, OPENAI_API_STREAM_MAX);
	rc = openai_api_event(&sse, openai_api_chunk(c, id, created,
	    openai_api_choice("delta", "assistant", "", 0, NULL), NULL));
	while (rc == 0 && openai_api_next_token(c->reply.data, len, pos, &end)) {
		if (k++ == completion / 2)
			cut_at = sse.len;
		rc = openai_api_event(&sse, openai_api_chunk(c, id, created,
		    openai_api_choice("delta", NULL, c->reply.data + pos, end - pos, NULL), NULL));
		pos = end;
	}
	if (cut_at == 0)
		cut_at = sse.len;
	if (rc == 0)
		rc = openai_api_event(&sse, openai_api_chunk(c, id, created,
		    openai_api_choice("delta", NULL, NULL, 0, finish), NULL));
	if (rc == 0 && c->include_usage)
		rc = openai_api_event(&sse, openai_api_chunk(c, id, created, NULL,
		    openai_api_usage(c->prompt_tokens, completion)));
	if (rc == 0)
		rc = buf_puts(&sse, "data: [DONE]\n\n");
	if (rc == 0) {
		response_body(resp, 200, "text/event-stream", sse.data, sse.len);
		if (cut) {
			resp->drop = RESPONSE_CUT;
			resp->cut_at = cut_at;
		}
	} else
		openai_api_error(resp, 500, "server_error", NULL, NULL, "The reply is too long.");
	buf_free(&sse);
}

/* Every call starts here: SANDBOX_LATENCY_MS, then the bearer key.  1 to go on. */
static int
openai_api_authorized(const struct request *req, struct response *resp)
{
	fault_sleep_ms(sandbox.latency_ms);	/* as a real upstream's round trip */
	if (state_bearer(req->authorization))
		return 1;
	openai_api_error(resp, 401, "invalid_request_error", NULL, NULL, "You didn't provide "
	    "an API key. You need to provide your API key in an Authorization header using "
	    "Bearer auth (i.e. Authorization: Bearer YOUR_KEY).");
	return 0;
}

/* POST /openai/v1/chat/completions */
void
openai_api_chat(const struct request *req, struct response *resp)
{
	struct openai_api_call	 c = { 0 };
	struct mk_err		 err;
	json_object		*root, *o, *choices;
	char			 id[SANDBOX_ID_MAX];
	const char		*finish = "stop";
	size_t			 len, pos = 0, end = 0;
	int64_t			 completion = 0, created;
	int			 cut = 0;

	if (!openai_api_authorized(req, resp))
		return;
	if ((root = request_json(req, &err)) == NULL ||
	    !json_object_is_type(root, json_type_object)) {
		openai_api_invalid(resp, NULL, NULL, "We could not parse the JSON body of your "
		    "request. (HINT: This likely means you aren't using your HTTP library "
		    "correctly.)");
		json_object_put(root);
		return;
	}
	buf_init(&c.reply, OPENAI_API_TEXT_MAX + sizeof OPENAI_API_REPLY_PREFIX);
	if (openai_api_parse(root, &c, resp) == -1)
		goto out;
	/* faults come after validation: a bad request is refused whatever is armed */
	if (fault_check("openai", SANDBOX_API_OPENAI, resp, NULL) != 0) {
		if (!resp->drop || !c.stream)
			goto out;
		resp->drop = 0;		/* a stream is cut mid-way (below) rather than never answered */
		cut = 1;
	}
	/* the completion: the reply's first max_tokens tokens */
	while (openai_api_next_token(c.reply.data, c.reply.len, pos, &end)) {
		if (c.max_tokens > 0 && completion == c.max_tokens) {
			finish = "length";
			break;
		}
		completion++;
		pos = end;
	}
	len = pos;
	state_id("chatcmpl-", id, sizeof id);
	created = state_now_ms() / 1000;
	if (c.stream) {
		openai_api_stream(&c, id, created, len, completion, finish, cut, resp);
		goto out;
	}
	o = openai_api_head(id, "chat.completion", created, c.model);
	choices = json_object_new_array();
	json_object_array_add(choices, openai_api_choice("message", "assistant", c.reply.data,
	    len, finish));
	json_object_object_add(o, "choices", choices);
	json_object_object_add(o, "usage", openai_api_usage(c.prompt_tokens, completion));
	json_object_object_add(o, "service_tier", json_object_new_string("default"));
	response_json(resp, 200, o);
out:
	buf_free(&c.reply);
	json_object_put(root);
}

/* A model object. */
static json_object *
openai_api_model(const char *name)
{
	json_object	*m = json_object_new_object();

	json_object_object_add(m, "id", json_object_new_string(name));
	json_object_object_add(m, "object", json_object_new_string("model"));
	json_object_object_add(m, "created", json_object_new_int64(OPENAI_API_CREATED));
	json_object_object_add(m, "owned_by", json_object_new_string("sandbox"));
	return m;
}

/* GET /openai/v1/models */
void
openai_api_models_list(const struct request *req, struct response *resp)
{
	json_object	*o, *data;
	size_t		 i;

	if (!openai_api_authorized(req, resp))
		return;
	o = json_object_new_object();
	data = json_object_new_array();
	for (i = 0; i < OPENAI_API_NMODELS; i++)
		json_object_array_add(data, openai_api_model(openai_api_models[i]));
	json_object_object_add(o, "object", json_object_new_string("list"));
	json_object_object_add(o, "data", data);
	response_json(resp, 200, o);
}

/* GET /openai/v1/models/{model} */
void
openai_api_model_get(const struct request *req, struct response *resp)
{
	size_t	i;

	if (!openai_api_authorized(req, resp))
		return;
	for (i = 0; i < OPENAI_API_NMODELS; i++)
		if (strcmp(req->params[0], openai_api_models[i]) == 0) {
			response_json(resp, 200, openai_api_model(openai_api_models[i]));
			return;
		}
	openai_api_error(resp, 404, "invalid_request_error", "model", "model_not_found",
	    "The model `%.100s` does not exist or you do not have access to it.",
	    req->params[0]);
}
