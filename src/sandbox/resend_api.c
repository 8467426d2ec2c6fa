/* resend_api.c: Resend's POST /emails and GET /emails/{id} with Idempotency-Key semantics (under /sandbox/resend). */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "db.h"
#include "digest.h"
#include "log.h"
#include "sandbox.h"
#include "valid.h"

#define RESEND_API_RECIPIENTS_MAX	50	/* per field, as Resend's `to` */
#define RESEND_API_SUBJECT_MAX		998	/* one header line (RFC 5322 2.1.1) */
#define RESEND_API_IDEMPOTENCY_TTL_MS	(24LL * 3600 * 1000)	/* keys are kept 24 h */
#define RESEND_API_ADDRESS_MAX		(EMAIL_MAX + 256)	/* "Display Name <addr>" */

void
resend_api_error(struct response *resp, int status, const char *name, const char *fmt, ...)
{
	va_list	ap;

	va_start(ap, fmt);
	state_api_verror(resp, SANDBOX_API_RESEND, status, name, fmt, ap);
	va_end(ap);
}

/* Every Resend call starts here: SANDBOX_LATENCY_MS, then the bearer key and
 * User-Agent the real API demands.  1 to go on. */
static int
resend_api_authorized(const struct request *req, struct response *resp)
{
	fault_sleep_ms(sandbox.latency_ms);	/* as a real upstream's round trip */
	if (!state_bearer(req->authorization)) {
		resend_api_error(resp, 401, "missing_api_key", "Missing API key in the "
		    "authorization header. Include the following header Authorization: Bearer "
		    "YOUR_API_KEY in the request.");
		return 0;
	}
	if (req->user_agent[0] == '\0') {
		/* api.resend.com answers this with Cloudflare's "error code: 1010" */
		resend_api_error(resp, 403, "invalid_access",
		    "error code: 1010 (requests must send a User-Agent header)");
		return 0;
	}
	return 1;
}

/* "addr" or "Display Name <addr>" with a valid address.  1 / 0. */
static int
resend_api_address(const char *s)
{
	char		 addr[EMAIL_MAX + 1];
	const char	*lt, *gt;
	size_t		 n;

	if (!valid_header_text(s, strlen(s)) || strlen(s) > RESEND_API_ADDRESS_MAX)
		return 0;
	if ((lt = strrchr(s, '<')) == NULL)
		return valid_email(s);
	gt = strchr(lt, '>');
	if (gt == NULL || gt[1] != '\0' || (n = (size_t)(gt - lt - 1)) == 0 || n > EMAIL_MAX)
		return 0;
	memcpy(addr, lt + 1, n);
	addr[n] = '\0';
	return valid_email(addr);
}

/*
 * A string or an array of 1..RESEND_API_RECIPIENTS_MAX address strings.
 * Returns 1 valid, 0 invalid, -1 absent.
 */
static int
resend_api_address_list(json_object *root, const char *name)
{
	json_object	*v, *it;
	size_t		 i, n;

	if (!json_object_object_get_ex(root, name, &v) || v == NULL)
		return -1;
	if (json_object_is_type(v, json_type_string))
		return resend_api_address(json_object_get_string(v));
	if (!json_object_is_type(v, json_type_array))
		return 0;
	n = json_object_array_length(v);
	if (n == 0 || n > RESEND_API_RECIPIENTS_MAX)
		return 0;
	for (i = 0; i < n; i++) {
		it = json_object_array_get_idx(v, i);
		if (!json_object_is_type(it, json_type_string) ||
		    !resend_api_address(json_object_get_string(it)))
			return 0;
	}
	return 1;
}

/*
 * The outcome Resend simulates for its test inboxes: delivered@, bounced@,
 * complained@, suppressed@resend.dev (with +label), "delivered" otherwise.
 * The worst outcome among the recipients wins.
 */
static const char *
resend_api_outcome(json_object *to)
{
	static const char *const outcomes[] = { "bounced", "complained", "suppressed" };
	json_object	*one;
	const char	*addr, *at, *lt;
	size_t		 i, k, n, local;

	n = json_object_is_type(to, json_type_array) ? json_object_array_length(to) : 1;
	for (k = 0; k < sizeof(outcomes) / sizeof(outcomes[0]); k++)
		for (i = 0; i < n; i++) {
			one = json_object_is_type(to, json_type_array) ?
			    json_object_array_get_idx(to, i) : to;
			addr = json_object_get_string(one);
			if ((lt = strrchr(addr, '<')) != NULL)
				addr = lt + 1;
			if ((at = strchr(addr, '@')) == NULL ||
			    strncasecmp(at, "@resend.dev", 11) != 0)
				continue;
			local = strcspn(addr, "+@");
			if (local == strlen(outcomes[k]) &&
			    strncasecmp(addr, outcomes[k], local) == 0)
				return outcomes[k];
		}
	return "delivered";
}

/* Hex SHA-256 of the raw body: "same payload" for idempotency purposes. */
static void
resend_api_hash(const char *body, size_t len, char *out)
{
	struct digest_part part = { body, len };

	if (digest_sha256_hex(&part, 1, out) == -1)
		out[0] = '\0';
}

enum resend_api_claim { CLAIM_NEW, CLAIM_REPLAY, CLAIM_MISMATCH, CLAIM_IN_FLIGHT, CLAIM_ERROR };

/* Reserve key for this body, or find what an earlier request with it did. */
static enum resend_api_claim
resend_api_claim(sqlite3 *db, const char *key, const char *hash, char *id, size_t idlen)
{
	sqlite3_stmt		*st;
	enum resend_api_claim	 r = CLAIM_NEW;
	char			 cutoff[24], now_text[24];
	int64_t			 now = state_now_ms();

	if (db_begin(db) == -1)
		return CLAIM_ERROR;
	snprintf(cutoff, sizeof(cutoff), "%lld",
	    (long long)(now - RESEND_API_IDEMPOTENCY_TTL_MS));
	snprintf(now_text, sizeof(now_text), "%lld", (long long)now);
	if (state_exec(db, "DELETE FROM idempotency WHERE created_at < CAST(?1 AS INTEGER)",
	    1, cutoff) == -1 ||
	    (st = state_prepare(db, "SELECT body_hash, email_id FROM idempotency"
	    " WHERE key = ?1")) == NULL)
		goto fail;
	sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
	if (sqlite3_step(st) == SQLITE_ROW) {
		if (strcmp(state_text(st, 0), hash) != 0)
			r = CLAIM_MISMATCH;
		else if (sqlite3_column_type(st, 1) == SQLITE_NULL)
			r = CLAIM_IN_FLIGHT;
		else {
			r = CLAIM_REPLAY;
			snprintf(id, idlen, "%s", state_text(st, 1));
		}
	}
	state_done(st);
	if (r == CLAIM_NEW && state_exec(db, "INSERT INTO idempotency (key, body_hash,"
	    " created_at) VALUES (?1, ?2, CAST(?3 AS INTEGER))", 3, key, hash, now_text) == -1)
		goto fail;
	if (db_commit(db) == -1)
		return CLAIM_ERROR;
	return r;
fail:
	db_rollback(db);
	return CLAIM_ERROR;
}

static const char *const resend_api_extra_names[] = { "cc", "bcc", "reply_to", "tags" };

/* cc, bcc and reply_to (a string becomes a one-item array) and tags, as sent. */
static json_object *
resend_api_extras_of(json_object *root)
{
	json_object	*o = json_object_new_object(), *v;

	for (size_t i = 0; i < sizeof resend_api_extra_names / sizeof resend_api_extra_names[0];
	    i++) {
		const char *name = resend_api_extra_names[i];

		if (!json_object_object_get_ex(root, name, &v) || v == NULL)
			continue;
		if (json_object_is_type(v, json_type_string)) {
			json_object *a = json_object_new_array();

			json_object_array_add(a, json_object_get(v));
			json_object_object_add(o, name, a);
		} else
			json_object_object_add(o, name, json_object_get(v));
	}
	return o;
}

void
resend_api_extras(json_object *o, const char *extras_json)
{
	json_object	*extras = extras_json != NULL ? json_tokener_parse(extras_json) : NULL, *v;

	for (size_t i = 0; i < sizeof resend_api_extra_names / sizeof resend_api_extra_names[0];
	    i++)
		json_object_object_add(o, resend_api_extra_names[i], extras != NULL &&
		    json_object_object_get_ex(extras, resend_api_extra_names[i], &v) ?
		    json_object_get(v) : NULL);
	json_object_put(extras);
}

/* Resend's tags: [{name, value}], each ASCII letters, digits, '_' or '-', 1-256. */
static int
resend_api_tags_valid(json_object *root)
{
	json_object	*v, *part;
	size_t		 n;

	if (!json_object_object_get_ex(root, "tags", &v) || v == NULL)
		return 1;
	if (!json_object_is_type(v, json_type_array))
		return 0;
	n = json_object_array_length(v);
	for (size_t i = 0; i < n; i++) {
		json_object *t = json_object_array_get_idx(v, i);

		for (int k = 0; k < 2; k++) {
			const char	*s;
			size_t		 len;

			if (!json_object_object_get_ex(t, k == 0 ? "name" : "value", &part) ||
			    !json_object_is_type(part, json_type_string))
				return 0;
			s = json_object_get_string(part);
			len = strlen(s);
			if (len == 0 || len > 256 || strspn(s, "abcdefghijklmnopqrstuvwxyz"
			    "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") != len)
				return 0;
		}
	}
	return 1;
}

/* Store the email (and complete the key's reservation).  0 / -1. */
static int
resend_api_store(sqlite3 *db, const char *id, json_object *root, const char *key,
    int64_t now)
{
	sqlite3_stmt	*st;
	json_object	*to, *from, *subject, *html = NULL, *text = NULL, *list, *extras;
	int		 rc;

	json_object_object_get_ex(root, "to", &to);
	json_object_object_get_ex(root, "from", &from);
	json_object_object_get_ex(root, "subject", &subject);
	json_object_object_get_ex(root, "html", &html);
	json_object_object_get_ex(root, "text", &text);
	if (json_object_is_type(to, json_type_array))
		list = json_object_get(to);
	else {
		list = json_object_new_array();
		json_object_array_add(list, json_object_get(to));
	}
	extras = resend_api_extras_of(root);
	if (db_begin(db) == -1) {
		json_object_put(list);
		json_object_put(extras);
		return -1;
	}
	st = state_prepare(db, "INSERT INTO emails (id, from_addr, to_json, subject, html, text,"
	    " status, idempotency_key, created_at, extras_json)"
	    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)");
	if (st == NULL)
		goto fail;
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, json_object_get_string(from), -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, json_object_to_json_string_ext(list, JSON_C_TO_STRING_PLAIN |
	    JSON_C_TO_STRING_NOSLASHESCAPE), -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 4, json_object_get_string(subject), -1, SQLITE_STATIC);
	if (json_object_is_type(html, json_type_string))
		sqlite3_bind_text(st, 5, json_object_get_string(html), -1, SQLITE_STATIC);
	if (json_object_is_type(text, json_type_string))
		sqlite3_bind_text(st, 6, json_object_get_string(text), -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 7, resend_api_outcome(to), -1, SQLITE_STATIC);
	if (key != NULL)
		sqlite3_bind_text(st, 8, key, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 9, now);
	sqlite3_bind_text(st, 10, json_object_to_json_string_ext(extras, JSON_C_TO_STRING_PLAIN |
	    JSON_C_TO_STRING_NOSLASHESCAPE), -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	state_done(st);
	if (rc != SQLITE_DONE)
		goto fail;
	if (key != NULL && state_exec(db, "UPDATE idempotency SET email_id = ?2 WHERE key = ?1",
	    2, key, id) == -1)
		goto fail;
	json_object_put(list);
	json_object_put(extras);
	return db_commit(db);
fail:
	log_error("sandbox: storing an email failed: %s", sqlite3_errmsg(db));
	db_rollback(db);
	json_object_put(list);
	json_object_put(extras);
	return -1;
}

/* 1 when the body's fields are acceptable; otherwise a 422 is set. */
static int
resend_api_valid(json_object *root, struct response *resp)
{
	static const char *const lists[] = { "cc", "bcc", "reply_to" };
	json_object	*v;
	int		 has_html, has_text;
	size_t		 i;

	if (!json_object_object_get_ex(root, "from", &v) || v == NULL) {
		resend_api_error(resp, 422, "missing_required_field", "Missing `from` field.");
		return 0;
	}
	if (!json_object_is_type(v, json_type_string) ||
	    !resend_api_address(json_object_get_string(v))) {
		resend_api_error(resp, 422, "validation_error", "Invalid `from` field. The email "
		    "address needs to follow the `email@example.com` or `Name <email@example.com>` "
		    "format.");
		return 0;
	}
	switch (resend_api_address_list(root, "to")) {
	case -1:
		resend_api_error(resp, 422, "missing_required_field", "Missing `to` field.");
		return 0;
	case 0:
		resend_api_error(resp, 422, "validation_error", "Invalid `to` field. Give 1 to %d "
		    "addresses in the `email@example.com` or `Name <email@example.com>` format.",
		    RESEND_API_RECIPIENTS_MAX);
		return 0;
	}
	for (i = 0; i < sizeof(lists) / sizeof(lists[0]); i++)
		if (resend_api_address_list(root, lists[i]) == 0) {
			resend_api_error(resp, 422, "validation_error", "Invalid `%s` field.",
			    lists[i]);
			return 0;
		}
	if (!resend_api_tags_valid(root)) {
		resend_api_error(resp, 422, "validation_error", "Invalid `tags` field: each tag is "
		    "{name, value} of ASCII letters, numbers, underscores or dashes.");
		return 0;
	}
	if (!json_object_object_get_ex(root, "subject", &v) || v == NULL) {
		resend_api_error(resp, 422, "missing_required_field", "Missing `subject` field.");
		return 0;
	}
	if (!json_object_is_type(v, json_type_string) ||
	    json_object_get_string_len(v) > RESEND_API_SUBJECT_MAX ||
	    !valid_header_text(json_object_get_string(v), (size_t)json_object_get_string_len(v))) {
		resend_api_error(resp, 422, "validation_error",
		    "Invalid `subject` field: one line of at most %d characters.",
		    RESEND_API_SUBJECT_MAX);
		return 0;
	}
	has_html = json_object_object_get_ex(root, "html", &v) && v != NULL;
	if (has_html && !json_object_is_type(v, json_type_string)) {
		resend_api_error(resp, 422, "validation_error", "Invalid `html` field.");
		return 0;
	}
	has_text = json_object_object_get_ex(root, "text", &v) && v != NULL;
	if (has_text && !json_object_is_type(v, json_type_string)) {
		resend_api_error(resp, 422, "validation_error", "Invalid `text` field.");
		return 0;
	}
	if (!has_html && !has_text) {
		resend_api_error(resp, 422, "validation_error",
		    "Missing `html` or `text` field (templates are not emulated).");
		return 0;
	}
	return 1;
}

/*
 * An email of an authorized request past its fault: validate, honour
 * Idempotency-Key, store, answer.  stall (ms) is an injected stall, slept
 * with the key reserved.  1 when an email was stored, else 0 (a replay of
 * a key stores nothing).
 */
static int
resend_api_accept(const struct request *req, struct response *resp, long stall)
{
	struct mk_err		 err;
	enum resend_api_claim	 claim = CLAIM_NEW;
	sqlite3			*db;
	json_object		*root = NULL;
	const char		*key = req->idempotency_key[0] != '\0' ? req->idempotency_key : NULL;
	char			 hash[DIGEST_SHA256_HEX], id[SANDBOX_ID_MAX];
	int			 stored = 0;
	size_t			 i;

	if ((db = state_db()) == NULL) {
		resend_api_error(resp, 500, "application_error", "database unavailable");
		return 0;
	}
	if (key != NULL) {
		for (i = 0; key[i] != '\0'; i++)
			if ((unsigned char)key[i] < 0x20 || key[i] == 0x7f)
				break;
		if (key[i] != '\0' || i > IDEMPOTENCY_KEY_MAX) {
			resend_api_error(resp, 400, "invalid_idempotency_key",
			    "The key must be between 1-256 chars.");
			return 0;
		}
	}
	if ((root = request_json(req, &err)) == NULL) {
		resend_api_error(resp, 422, "validation_error", "%s", err.msg);
		return 0;
	}
	if (!resend_api_valid(root, resp))
		goto out;

	if (key != NULL) {
		resend_api_hash(req->body, req->body_len, hash);
		claim = resend_api_claim(db, key, hash, id, sizeof(id));
	}
	switch (claim) {
	case CLAIM_REPLAY:
		goto reply;	/* the id the first request got; nothing is sent */
	case CLAIM_MISMATCH:
		resend_api_error(resp, 409, "invalid_idempotent_request", "Same idempotency key "
		    "used with a different request payload. Change your idempotency key or "
		    "payload.");
		goto out;
	case CLAIM_IN_FLIGHT:
		resend_api_error(resp, 409, "concurrent_idempotent_requests", "Same idempotency "
		    "key used while original request is still in progress. Try the request again "
		    "later.");
		goto out;
	case CLAIM_ERROR:
		resend_api_error(resp, 500, "application_error", "database error");
		goto out;
	case CLAIM_NEW:
		break;
	}
	/* an injected stall holds the key "in flight", so concurrent repeats see a 409 */
	fault_sleep_ms(stall);
	state_uuid(id, sizeof(id));
	if (resend_api_store(db, id, root, key, state_now_ms()) == -1) {
		if (key != NULL)
			state_exec(db, "DELETE FROM idempotency WHERE key = ?1 AND email_id IS NULL",
			    1, key);
		resend_api_error(resp, 500, "application_error", "database error");
		goto out;
	}
	stored = 1;
reply:
	state_reply_member(resp, "id", json_object_new_string(id));
out:
	json_object_put(root);
	return stored;
}

int
resend_api_record(json_object *root, char *id, size_t idlen)
{
	sqlite3	*db = state_db();

	if (db == NULL)
		return -1;
	state_uuid(id, idlen);
	return resend_api_store(db, id, root, NULL, state_now_ms());
}

/* The email of a "late" fault, at its time (fault_apply_fn). */
static int
resend_api_late(const struct request *req, struct response *resp)
{
	return resend_api_accept(req, resp, 0);
}

/* POST /resend/emails */
void
resend_api_send(const struct request *req, struct response *resp)
{
	struct fault_plan	plan;

	if (!resend_api_authorized(req, resp))
		return;
	if (fault_check("email_send", SANDBOX_API_RESEND, resp, &plan) != 0)
		return;
	if (plan.kind == FAULT_LATE) {
		fault_late(req, resp, &plan, "email_send", resend_api_late);
		return;
	}
	resend_api_accept(req, resp, plan.kind == FAULT_STALL ? plan.stall_ms : 0);
	fault_after(&plan, SANDBOX_API_RESEND, resp);
}

/* GET /resend/emails/{id} */
void
resend_api_get(const struct request *req, struct response *resp)
{
	sqlite3_stmt	*st;
	json_object	*o, *to;
	char		 t[SANDBOX_TIME_MAX];

	if (!resend_api_authorized(req, resp))
		return;
	st = state_query(state_db(), "SELECT id, from_addr, to_json, subject, html, text,"
	    " status, created_at, extras_json FROM emails WHERE id = ?1", 1, req->params[0]);
	if (st == NULL) {
		resend_api_error(resp, 500, "application_error", "database error");
		return;
	}
	if (sqlite3_step(st) != SQLITE_ROW) {
		state_done(st);
		resend_api_error(resp, 404, "not_found", "Email not found");
		return;
	}
	o = json_object_new_object();
	json_object_object_add(o, "object", json_object_new_string("email"));
	json_object_object_add(o, "id", json_object_new_string(state_text(st, 0)));
	to = json_tokener_parse(state_text(st, 2));
	json_object_object_add(o, "to", to != NULL ? to : json_object_new_array());
	json_object_object_add(o, "from", json_object_new_string(state_text(st, 1)));
	state_iso(sqlite3_column_int64(st, 7), t, sizeof(t));
	json_object_object_add(o, "created_at", json_object_new_string(t));
	json_object_object_add(o, "subject", json_object_new_string(state_text(st, 3)));
	json_object_object_add(o, "html", state_json_text(st, 4));
	json_object_object_add(o, "text", state_json_text(st, 5));
	resend_api_extras(o, sqlite3_column_type(st, 8) == SQLITE_NULL ? NULL :
	    state_text(st, 8));
	json_object_object_add(o, "last_event", json_object_new_string(state_text(st, 6)));
	json_object_object_add(o, "scheduled_at", NULL);
	state_done(st);
	response_json(resp, 200, o);
}
