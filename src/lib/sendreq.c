/* sendreq.c: the body of a send request read into a mail message. */
#include <stdlib.h>
#include <string.h>

#include "fields.h"
#include "sendreq.h"
#include "server.h"
#include "valid.h"

#define SENDREQ_WRAP_HEAD	"{\"batch\":"	/* an array body, wrapped for request_json() */
#define SENDREQ_WRAP_TAIL	"}"

int
sendreq_read(json_object *o, const char *from, struct mail_message *msg,
    const char **customer_id, struct mk_err *err)
{
	static const struct field_spec specs[] = {
		{ "customer_id", FIELD_CUSTOMER_ID, 0, CUSTOMER_ID_MAX },
		{ "to", FIELD_EMAIL_LIST, 1, EMAIL_MAX },
		{ "subject", FIELD_HEADER_TEXT, 1, SENDREQ_SUBJECT_MAX },
		{ "html", FIELD_TEXT, 0, SENDREQ_CONTENT_MAX },
		{ "text", FIELD_TEXT, 0, SENDREQ_CONTENT_MAX },
		{ "cc", FIELD_EMAIL_LIST, 0, EMAIL_MAX },
		{ "bcc", FIELD_EMAIL_LIST, 0, EMAIL_MAX },
		{ "reply_to", FIELD_EMAIL_LIST, 0, EMAIL_MAX },
		{ "tags", FIELD_TAGS, 0, 0 },
	};
	enum { F_CUSTOMER, F_TO, F_SUBJECT, F_HTML, F_TEXT, F_CC, F_BCC, F_REPLY_TO, F_TAGS,
		F_COUNT };
	struct field_value	v[F_COUNT];

	if (fields_read(o, specs, F_COUNT, v, err) == -1)
		return -1;
	if (v[F_HTML].str == NULL && v[F_TEXT].str == NULL)
		return mk_fail(err, 400, "html or text is required");
	if (v[F_TO].nlist + v[F_CC].nlist + v[F_BCC].nlist > MAIL_MAX_RECIPIENTS)
		return mk_fail(err, 400, "to, cc and bcc list more than %d addresses together",
		    MAIL_MAX_RECIPIENTS);
	memset(msg, 0, sizeof *msg);
	msg->from = from;
	memcpy(msg->to, v[F_TO].list, v[F_TO].nlist * sizeof msg->to[0]);
	msg->nto = v[F_TO].nlist;
	memcpy(msg->cc, v[F_CC].list, v[F_CC].nlist * sizeof msg->cc[0]);
	msg->ncc = v[F_CC].nlist;
	memcpy(msg->bcc, v[F_BCC].list, v[F_BCC].nlist * sizeof msg->bcc[0]);
	msg->nbcc = v[F_BCC].nlist;
	memcpy(msg->reply_to, v[F_REPLY_TO].list, v[F_REPLY_TO].nlist * sizeof msg->reply_to[0]);
	msg->nreply_to = v[F_REPLY_TO].nlist;
	for (size_t i = 0; i < v[F_TAGS].ntags; i++) {
		msg->tags[i].name = v[F_TAGS].tag_name[i];
		msg->tags[i].value = v[F_TAGS].tag_value[i];
	}
	msg->ntags = v[F_TAGS].ntags;
	msg->subject = v[F_SUBJECT].str;
	msg->html = v[F_HTML].str;
	msg->text = v[F_TEXT].str;
	*customer_id = v[F_CUSTOMER].str;
	return 0;
}

int
sendreq_key(const struct request *req, const char **client_key, struct mk_err *err)
{
	*client_key = NULL;
	if (req->idempotency_key[0] == '\0')
		return 0;
	if (!valid_idempotency_key(req->idempotency_key))
		return mk_fail(err, 400, "Idempotency-Key must be 1-%d printable characters",
		    IDEMPOTENCY_KEY_MAX);
	*client_key = req->idempotency_key;
	return 0;
}

long
sendreq_batch(const struct request *req, const char *from, struct mail_message *msgs,
    const char **customer_id, json_object **root, struct mk_err *err)
{
	struct request	*wrapped;
	struct mk_err	 merr;
	json_object	*list;
	const char	*claimed;
	size_t		 n, head = strlen(SENDREQ_WRAP_HEAD), tail = strlen(SENDREQ_WRAP_TAIL);

	*root = NULL;
	*customer_id = NULL;
	if (req->body_len == 0)
		return mk_fail(err, 400, "request body is empty: expected a JSON array of emails");
	/* request_json() takes objects only: the array is read as {"batch": <body>} */
	if ((wrapped = calloc(1, sizeof *wrapped)) == NULL ||
	    (wrapped->body = malloc(head + req->body_len + tail + 1)) == NULL) {
		free(wrapped);
		return mk_fail(err, 503, "out of memory");
	}
	memcpy(wrapped->body, SENDREQ_WRAP_HEAD, head);
	memcpy(wrapped->body + head, req->body, req->body_len);
	memcpy(wrapped->body + head + req->body_len, SENDREQ_WRAP_TAIL, tail + 1);
	wrapped->body_len = head + req->body_len + tail;
	*root = request_json(wrapped, err);
	free(wrapped->body);
	free(wrapped);
	if (*root == NULL)
		return -1;
	if (!json_object_object_get_ex(*root, "batch", &list) ||
	    !json_object_is_type(list, json_type_array))
		return mk_fail(err, 400, "request body must be a JSON array of emails");
	if ((n = json_object_array_length(list)) == 0 || n > SENDREQ_BATCH_MAX)
		return mk_fail(err, 400, "a batch holds 1 to %d emails, not %zu", SENDREQ_BATCH_MAX,
		    n);
	for (size_t i = 0; i < n; i++) {
		json_object *o = json_object_array_get_idx(list, i);

		if (!json_object_is_type(o, json_type_object))
			return mk_fail(err, 400, "message %zu: must be a JSON object", i);
		if (sendreq_read(o, from, &msgs[i], &claimed, &merr) == -1)
			return mk_fail(err, merr.status, "message %zu: %s", i, merr.msg);
		if (claimed == NULL)
			continue;
		if (*customer_id != NULL && strcmp(*customer_id, claimed) != 0)
			return mk_fail(err, 400, "message %zu: customer_id differs from an earlier "
			    "message's; a batch is one customer's", i);
		*customer_id = claimed;
	}
	return (long)n;
}
