/* mail_postmark.c: the Postmark mail provider (POST /email; no idempotency key). */
#include <stdio.h>
#include <string.h>

#include <json-c/json.h>

#include "buf.h"
#include "err.h"
#include "log.h"
#include "mail.h"
#include "settings.h"
#include "upstream.h"

#define POSTMARK_LOG_TEXT_MAX	200	/* Postmark's error message is cut here in logs */
#define POSTMARK_LIST_MAX	(MAIL_MAX_RECIPIENTS * 256)	/* "a, b, ..." */
#define POSTMARK_TOKEN_HEADER	"X-Postmark-Server-Token: "
#define POSTMARK_HEADER_MAX	1024

#define POSTMARK_JSON_FLAGS	(JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)

/* Postmark's ErrorCodes that refuse the email itself (not our account or sender). */
#define POSTMARK_INVALID_REQUEST	300
#define POSTMARK_INACTIVE_RECIPIENT	406

static int
postmark_check(const struct settings *s, char *errbuf, size_t errlen)
{
	return mail_check_settings("postmark", errbuf, errlen, "POSTMARK_SERVER_TOKEN",
	    s->postmark_server_token, "MAIL_FROM", s->mail_from, "POSTMARK_BASE_URL",
	    s->postmark_base_url, (const char *)NULL);
}

/* Postmark takes To, Cc, Bcc and ReplyTo as one comma-separated string. */
static int
postmark_list(json_object *body, const char *name, const char *const *list, size_t n)
{
	struct buf	b;
	int		rc = 0;

	if (n == 0)
		return 0;
	buf_init(&b, POSTMARK_LIST_MAX);
	for (size_t i = 0; i < n && rc == 0; i++)
		rc = buf_printf(&b, "%s%s", i > 0 ? ", " : "", list[i]);
	if (rc == 0)
		json_object_object_add(body, name, json_object_new_string(b.data));
	buf_free(&b);
	return rc;
}

/* The /email body; tags become Metadata, with the send's key as mailkit_send. */
static json_object *
postmark_body(const struct mail_message *msg, const char *from)
{
	json_object	*body = json_object_new_object(), *meta = json_object_new_object();

	json_object_object_add(body, "From", json_object_new_string(from));
	if (postmark_list(body, "To", msg->to, msg->nto) == -1 ||
	    postmark_list(body, "Cc", msg->cc, msg->ncc) == -1 ||
	    postmark_list(body, "Bcc", msg->bcc, msg->nbcc) == -1 ||
	    postmark_list(body, "ReplyTo", msg->reply_to, msg->nreply_to) == -1) {
		json_object_put(body);
		json_object_put(meta);
		return NULL;
	}
	json_object_object_add(body, "Subject", json_object_new_string(msg->subject));
	if (msg->html != NULL)
		json_object_object_add(body, "HtmlBody", json_object_new_string(msg->html));
	if (msg->text != NULL)
		json_object_object_add(body, "TextBody", json_object_new_string(msg->text));
	json_object_object_add(body, "MessageStream", json_object_new_string("outbound"));
	for (size_t i = 0; i < msg->ntags; i++)
		json_object_object_add(meta, msg->tags[i].name,
		    json_object_new_string(msg->tags[i].value));
	json_object_object_add(meta, "mailkit_send", json_object_new_string(msg->idempotency_key));
	json_object_object_add(body, "Metadata", meta);
	return body;
}

/* An integer or string member, or def. */
static long
postmark_json_long(json_object *o, const char *key, long def)
{
	json_object *v;

	if (o == NULL || !json_object_object_get_ex(o, key, &v) ||
	    !json_object_is_type(v, json_type_int))
		return def;
	return (long)json_object_get_int64(v);
}

/*
 * Map a Postmark refusal ({ErrorCode, Message}): 422 with ErrorCode 300
 * (invalid email request) or 406 (inactive recipient) refuses the email;
 * other 422s and 401 are our token, sender signature or account; 429 and
 * 503 (maintenance) are "not now" (nothing sent: a retry is safe); a 500
 * may have sent it, and without an idempotency key that stays unknown.
 */
static int
postmark_fail_status(const struct upstream_response *r, struct mk_err *err)
{
	json_object	*m = NULL;
	long		 st = r->status, code = postmark_json_long(r->json, "ErrorCode", -1);

	if (r->json != NULL)
		json_object_object_get_ex(r->json, "Message", &m);
	log_warn("postmark: send: HTTP %ld ErrorCode %ld: %.*s", st, code,
	    POSTMARK_LOG_TEXT_MAX, m != NULL ? json_object_get_string(m) : "-");
	if (st == 429 || st == 503)
		return mail_fail(err, 503, 0, "mail provider busy, try again");
	if (st >= 500 || st < 400)
		return mail_fail(err, 502, 1, "mail provider unavailable");
	if (st == 422 && (code == POSTMARK_INVALID_REQUEST || code == POSTMARK_INACTIVE_RECIPIENT))
		return mail_fail(err, 400, 0, "recipient or content rejected by the mail provider");
	log_error("postmark: send refused with %ld (ErrorCode %ld): check POSTMARK_SERVER_TOKEN "
	    "and MAIL_FROM's sender signature", st, code);
	return mail_fail(err, 502, 0, "mail provider refused the message");
}

static int
postmark_send(const struct settings *s, const struct mail_message *msg,
    struct mail_result *out, struct mk_err *err)
{
	struct upstream_response	 resp = { .json = NULL };
	struct upstream_request		 req;
	json_object			*body = NULL, *v;
	const char			*text, *from, *id;
	char				 header[POSTMARK_HEADER_MAX];
	int				 n, result = -1;

	memset(out, 0, sizeof *out);
	from = msg->from != NULL ? msg->from : s->mail_from;
	n = snprintf(header, sizeof header, POSTMARK_TOKEN_HEADER "%s", s->postmark_server_token);
	if (!mail_message_ok(msg, from) || n < 0 || (size_t)n >= sizeof header) {
		mk_fail(err, 500, "internal error");
		goto out;
	}
	if ((body = postmark_body(msg, from)) == NULL ||
	    (text = json_object_to_json_string_ext(body, POSTMARK_JSON_FLAGS)) == NULL) {
		mk_fail(err, 500, "message cannot be built");
		goto out;
	}
	memset(&req, 0, sizeof req);
	req.method = "POST";
	req.base_url = s->postmark_base_url;
	req.path = "/email";
	req.auth_header = header;
	req.body = text;
	req.retry_safe = 0;	/* no idempotency key: a repeated POST may send twice */
	if (upstream_call(&req, &resp, err) == -1) {
		mail_fail_transport(err);
		goto out;
	}
	if (resp.status != 200 || postmark_json_long(resp.json, "ErrorCode", -1) != 0) {
		postmark_fail_status(&resp, err);
		goto out;
	}
	/* accepted: without a MessageID we cannot say so, but it may well be on its way */
	id = resp.json != NULL && json_object_object_get_ex(resp.json, "MessageID", &v) ?
	    json_object_get_string(v) : NULL;
	n = id != NULL ? snprintf(out->id, sizeof out->id, "%s", id) : -1;
	if (n <= 0 || (size_t)n >= sizeof out->id) {
		log_warn("postmark: send: HTTP %ld without a usable MessageID", resp.status);
		out->id[0] = '\0';
		mail_fail(err, 502, 1, "mail provider unavailable");
		goto out;
	}
	result = 0;
out:
	explicit_bzero(header, sizeof header);
	if (body != NULL)
		json_object_put(body);
	upstream_response_free(&resp);
	return result;
}

const struct mail_provider mail_postmark = {
	.name = "postmark",
	.idempotent = 0,	/* no idempotency key: a lost answer is never resent */
	.check = postmark_check,
	.send = postmark_send,
};
