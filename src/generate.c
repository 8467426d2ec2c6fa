/* generate.fcgi — POST /api/generate, a billed AI completion; GET /api/generate/{id}, its billing; POST /v1/chat/completions, the same in OpenAI's shape. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mailkit.h"
#include "openai.h"
#include "store.h"
#include "usage.h"

static struct settings	settings;

/*
 * The body {prompt, max_tokens?, customer_id?}: prompt 1..USAGE_PROMPT_MAX
 * bytes, max_tokens an integer in 1..GENERATE_MAX_TOKENS_CAP (default
 * GENERATE_MAX_TOKENS).  0, or -1 with a 400 in err.
 */
static int
generate_read(json_object *root, const char **prompt, long *max_tokens, const char **claimed,
    struct mk_err *err)
{
	enum { F_PROMPT, F_CUSTOMER, F_COUNT };
	static const struct field_spec specs[] = {
		{ "prompt", FIELD_TEXT, 1, USAGE_PROMPT_MAX },
		{ "customer_id", FIELD_CUSTOMER_ID, 0, CUSTOMER_ID_MAX },
	};
	struct field_value	 v[F_COUNT];
	json_object		*mt;
	int64_t			 n;

	*max_tokens = settings.generate_max_tokens;
	if (json_object_object_get_ex(root, "max_tokens", &mt)) {
		if (mt != NULL) {
			if (!json_object_is_type(mt, json_type_int) ||
			    (n = json_object_get_int64(mt)) < 1 ||
			    n > settings.generate_max_tokens_cap)
				return mk_fail(err, 400, "max_tokens must be an integer from 1 to %ld",
				    settings.generate_max_tokens_cap);
			*max_tokens = (long)n;
		}
		json_object_object_del(root, "max_tokens");
	}
	if (fields_read(root, specs, F_COUNT, v, err) == -1)
		return -1;
	*prompt = v[F_PROMPT].str;
	*claimed = v[F_CUSTOMER].str;
	return 0;
}

/* POST /api/generate -> 200 {id, text, tokens_used, model, usage, billing} */
static void
generate_post(const struct request *req, struct response *resp)
{
	struct store_usage	 row;
	struct mk_err		 err;
	json_object		*root = NULL, *messages = NULL, *msg;
	const char		*client_key, *prompt = NULL, *claimed = NULL;
	char			 customer[CUSTOMER_ID_MAX + 1];
	long			 max_tokens;
	int			 keyed;

	memset(&row, 0, sizeof row);
	if (auth_before_body(&settings, req, customer, sizeof customer, &keyed, resp) == -1)
		return;
	/* every check before any upstream call */
	if (sendreq_key(req, &client_key, &err) == -1 ||
	    (root = request_json(req, &err)) == NULL ||
	    generate_read(root, &prompt, &max_tokens, &claimed, &err) == -1) {
		response_fail(resp, &err);
		goto out;
	}
	if (auth_after_body(&settings, req, claimed, keyed, customer, sizeof customer,
	    resp) == -1)
		goto out;
	if ((messages = json_object_new_array()) == NULL ||
	    (msg = json_object_new_object()) == NULL) {
		mk_fail(&err, 500, "out of memory");
		response_fail(resp, &err);
		goto out;
	}
	json_object_object_add(msg, "role", json_object_new_string("user"));
	json_object_object_add(msg, "content", json_object_new_string(prompt));
	json_object_array_add(messages, msg);
	if (usage_generate(&settings, customer, client_key, messages, max_tokens, &row,
	    &err) == -1) {
		response_fail(resp, &err);
		goto out;
	}
	response_json(resp, 200, usage_row_json(&row));
out:
	store_usage_free(&row);
	json_object_put(messages);
	json_object_put(root);
}

/* GET /api/generate/{id}: one of the customer's own requests and its billing. */
static void
generate_get(const struct request *req, struct response *resp)
{
	struct store_usage	 row;
	struct mk_err		 err;
	char			 customer[CUSTOMER_ID_MAX + 1], claimed[CUSTOMER_ID_MAX + 1];
	char			 prefix[STORE_USAGE_KEY_MAX];
	int			 r, has_claim;

	has_claim = url_query_get(req->query, "customer_id", claimed, sizeof claimed) == 0;
	if (auth_customer(&settings, req, has_claim ? claimed : NULL, customer, sizeof customer,
	    resp) == -1)
		return;
	if (usage_id_prefix(req->params[0], prefix, sizeof prefix) == -1) {
		response_error(resp, 404, "no such generation");
		return;
	}
	if ((r = store_usage_get(&settings, customer, prefix, &row, &err)) == -1) {
		response_fail(resp, &err);
		return;
	}
	if (r == 0)
		response_error(resp, 404, "no such generation");
	else
		response_json(resp, 200, usage_row_json(&row));
	store_usage_free(&row);
}

/* OpenAI's error shape, so the official SDK raises the matching error class. */
static void
generate_openai_fail(struct response *resp, const struct mk_err *err)
{
	json_object	*o = json_object_new_object(), *e = json_object_new_object();
	const char	*type = err->status == 402 ? "insufficient_quota" :
			    err->status == 409 ? "conflict" :
			    err->status < 500 ? "invalid_request_error" : "api_error";

	json_object_object_add(e, "message", json_object_new_string(err->msg));
	json_object_object_add(e, "type", json_object_new_string(type));
	json_object_object_add(e, "param", NULL);
	json_object_object_add(e, "code", err->status == 402 ?
	    json_object_new_string("insufficient_quota") : NULL);
	json_object_object_add(o, "error", e);
	response_json(resp, err->status, o);
}

/* A chat completion's max_tokens or max_completion_tokens: 0, or -1 with a 400. */
static int
generate_chat_limit(json_object *root, long *max_tokens, struct mk_err *err)
{
	static const char *const names[] = { "max_completion_tokens", "max_tokens" };
	json_object	*v;
	int64_t		 n;

	*max_tokens = settings.generate_max_tokens;
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
		if (!json_object_object_get_ex(root, names[i], &v) || v == NULL)
			continue;
		if (!json_object_is_type(v, json_type_int) || (n = json_object_get_int64(v)) < 1 ||
		    n > settings.generate_max_tokens_cap)
			return mk_fail(err, 400, "%s must be an integer from 1 to %ld", names[i],
			    settings.generate_max_tokens_cap);
		*max_tokens = (long)n;
		return 0;
	}
	return 0;
}

/*
 * POST /v1/chat/completions: OpenAI's chat completion (non-streaming, one
 * choice) with a MailKit API key as the Bearer key, billed exactly as
 * POST /api/generate (the model is OPENAI_MODEL whatever `model` says; other
 * OpenAI parameters are ignored).  Errors in OpenAI's shape.
 */
static void
generate_chat(const struct request *req, struct response *resp)
{
	struct store_usage	 row;
	struct mk_err		 err;
	json_object		*root = NULL, *messages = NULL, *v, *o, *ch, *choice, *m, *u;
	const char		*client_key;
	char			 customer[CUSTOMER_ID_MAX + 1], id[64];
	size_t			 bytes;
	long			 max_tokens;

	memset(&row, 0, sizeof row);
	if (auth_customer(&settings, req, NULL, customer, sizeof customer, resp) == -1)
		return;
	if (sendreq_key(req, &client_key, &err) == -1 ||
	    (root = request_json(req, &err)) == NULL ||
	    generate_chat_limit(root, &max_tokens, &err) == -1)
		goto fail;
	if ((json_object_object_get_ex(root, "stream", &v) && json_object_get_boolean(v)) ||
	    (json_object_object_get_ex(root, "n", &v) && v != NULL &&
	    json_object_get_int64(v) != 1)) {
		mk_fail(&err, 400, "only stream: false and n: 1 are supported");
		goto fail;
	}
	if (!json_object_object_get_ex(root, "messages", &v) ||
	    (messages = usage_messages(v, &bytes, &err)) == NULL)
		goto fail;
	if (usage_generate(&settings, customer, client_key, messages, max_tokens, &row,
	    &err) == -1)
		goto fail;
	o = json_object_new_object();
	snprintf(id, sizeof id, "chatcmpl-%.32s", row.key);
	json_object_object_add(o, "id", json_object_new_string(id));
	json_object_object_add(o, "object", json_object_new_string("chat.completion"));
	json_object_object_add(o, "created", json_object_new_int64(row.created_ms / 1000));
	json_object_object_add(o, "model", json_object_new_string(row.model));
	ch = json_object_new_array();
	choice = json_object_new_object();
	m = json_object_new_object();
	json_object_object_add(m, "role", json_object_new_string("assistant"));
	json_object_object_add(m, "content", json_object_new_string(row.answer));
	json_object_object_add(m, "refusal", NULL);
	json_object_object_add(choice, "index", json_object_new_int(0));
	json_object_object_add(choice, "message", m);
	json_object_object_add(choice, "logprobs", NULL);
	json_object_object_add(choice, "finish_reason", json_object_new_string(
	    row.completion_tokens >= max_tokens ? "length" : "stop"));
	json_object_array_add(ch, choice);
	json_object_object_add(o, "choices", ch);
	u = json_object_new_object();
	json_object_object_add(u, "prompt_tokens", json_object_new_int64(row.prompt_tokens));
	json_object_object_add(u, "completion_tokens",
	    json_object_new_int64(row.completion_tokens));
	json_object_object_add(u, "total_tokens", json_object_new_int64(row.tokens));
	json_object_object_add(o, "usage", u);
	response_json(resp, 200, o);
	goto out;
fail:
	generate_openai_fail(resp, &err);
out:
	store_usage_free(&row);
	json_object_put(messages);
	json_object_put(root);
}

static int
generate_init(const struct settings *s, char *err, size_t errlen)
{
	if (store_check(s, err, errlen) == -1)
		return -1;
	/* settled usage is ingested from here, in the background */
	if (getenv("MAILKIT_CHECK_ONLY") == NULL && usage_outbox_start(s) == -1) {
		snprintf(err, errlen, "cannot start the usage outbox threads");
		return -1;
	}
	return 0;
}

static const struct route routes[] = {
	{ "POST", "/api/generate", generate_post },
	{ "GET", "/api/generate/{}", generate_get },
	{ "POST", "/v1/chat/completions", generate_chat },
};

int
main(void)
{
	struct app app = {
		.name = "generate.fcgi",
		.routes = routes,
		.nroutes = sizeof routes / sizeof routes[0],
		.json_only = 1,
		.init = generate_init,
	};
	int rc;

	rc = server_main(&app, &settings, SETTINGS_NEED_DODO | SETTINGS_NEED_CREDITS |
	    SETTINGS_NEED_AI);
	usage_outbox_stop();
	return rc;
}
