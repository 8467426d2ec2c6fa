/* billing.c: the send journal's state machine — debit, send, compensate; one credit per email. */
#include <sys/random.h>

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <json-c/json.h>

#include "billing.h"
#include "digest.h"
#include "dodo.h"
#include "log.h"
#include "settings.h"
#include "store.h"

#define KEY_CLOCK_BYTES		8	/* nanoseconds since 1970, big-endian: keys sort by time */
#define KEY_RANDOM_BYTES	8	/* 64 bits more: two sends in one nanosecond still differ */
#define BILLING_JSON_FLAGS	(JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)

/* Hex SHA-256 of a, a NUL, and b (so ("ab","c") and ("a","bc") differ). */
static int
billing_sha256(const char *a, const char *b, char *out, size_t outlen)
{
	struct digest_part parts[] = { { a, strlen(a) + 1 }, { b, strlen(b) } };

	if (outlen < DIGEST_SHA256_HEX)
		return -1;
	return digest_sha256_hex(parts, 2, out);
}

int
billing_key_base(const char *customer_id, const char *client_key, char *out, size_t outlen)
{
	unsigned char	key[KEY_CLOCK_BYTES + KEY_RANDOM_BYTES];
	struct timespec	now;
	uint64_t	ns;

	if (client_key != NULL)
		return billing_sha256(customer_id, client_key, out, outlen);
	/*
	 * Unique, not secret: the time in nanoseconds, then random bits from
	 * the kernel (one system call).  Keys made later sort later, so the
	 * journal's key index grows at its end, in pages already in memory.
	 */
	if (outlen < 2 * sizeof key + 1 || clock_gettime(CLOCK_REALTIME, &now) == -1 ||
	    getrandom(key + KEY_CLOCK_BYTES, KEY_RANDOM_BYTES, 0) != KEY_RANDOM_BYTES)
		return -1;
	ns = (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
	for (int i = KEY_CLOCK_BYTES - 1; i >= 0; i--, ns >>= 8)
		key[i] = (unsigned char)(ns & 0xff);
	digest_hex(key, sizeof key, out);
	return 0;
}

/* The message as the journal keeps it: enough to send it again byte for byte. */
static json_object *
billing_message_json(const struct mail_message *msg)
{
	json_object *o = json_object_new_object(), *to = json_object_new_array();

	for (size_t i = 0; i < msg->nto; i++)
		json_object_array_add(to, json_object_new_string(msg->to[i]));
	json_object_object_add(o, "from", json_object_new_string(msg->from));
	json_object_object_add(o, "to", to);
	json_object_object_add(o, "subject", json_object_new_string(msg->subject));
	if (msg->html != NULL)
		json_object_object_add(o, "html", json_object_new_string(msg->html));
	if (msg->text != NULL)
		json_object_object_add(o, "text", json_object_new_string(msg->text));
	return o;
}

/* Rebuild msg from the journal's JSON; strings point into the returned object. */
static json_object *
billing_message_parse(const char *text, struct mail_message *msg)
{
	json_object	*o = json_tokener_parse(text), *v, *to;
	size_t		 n;

	memset(msg, 0, sizeof *msg);
	if (o == NULL || !json_object_object_get_ex(o, "to", &to) ||
	    !json_object_is_type(to, json_type_array) ||
	    (n = json_object_array_length(to)) == 0 || n > MAIL_MAX_RECIPIENTS) {
		json_object_put(o);
		return NULL;
	}
	for (size_t i = 0; i < n; i++)
		msg->to[i] = json_object_get_string(json_object_array_get_idx(to, i));
	msg->nto = n;
	if (json_object_object_get_ex(o, "from", &v))
		msg->from = json_object_get_string(v);
	if (json_object_object_get_ex(o, "subject", &v))
		msg->subject = json_object_get_string(v);
	if (json_object_object_get_ex(o, "html", &v))
		msg->html = json_object_get_string(v);
	if (json_object_object_get_ex(o, "text", &v))
		msg->text = json_object_get_string(v);
	return o;
}

/* A failure no retry can change: refused by the upstream before it acted. */
static int
billing_definite(const struct mk_err *err)
{
	return !err->maybe_done && err->status >= 400 && err->status < 500;
}

/*
 * Drive an owned row from its state to a final one.  The message is request
 * when the row was inserted from it, else the row's stored copy.  With
 * answer_first the final state is queued (store_send_finish) so the caller
 * can answer before it is written; reconciliation writes it at once, as it
 * reads the journal again next.  Returns 0 (sent, out filled) or -1 with
 * err; on -1 the row is either final (rejected/refunded, replayed to later
 * retries) or released for a retry to resume.
 */
static int
billing_drive(const struct settings *s, const struct mail_provider *mp,
    struct store_send *row, const struct mail_message *request, int answer_first,
    struct mail_result *out, struct mk_err *err)
{
	int	(*finish)(const struct settings *, struct store_send *, enum store_send_state,
		    int, const char *, const char *, struct mk_err *) =
		    answer_first ? store_send_finish : store_send_advance;
	struct dodo_ledger_result	 entry;
	struct mail_message		 msg;
	struct mk_err			 serr;
	json_object			*stored = NULL;
	char				 debit_key[BILLING_KEY_MAX], send_key[BILLING_KEY_MAX];
	char				 refund_key[BILLING_KEY_MAX];
	int				 rc = -1;

	snprintf(debit_key, sizeof debit_key, "mk-send-%s-debit", row->key);
	snprintf(send_key, sizeof send_key, "mk-send-%s", row->key);
	snprintf(refund_key, sizeof refund_key, "mk-send-%s-refund", row->key);
	if (request != NULL)
		msg = *request;		/* the row was stored from it just now */
	else if ((stored = billing_message_parse(row->message, &msg)) == NULL) {
		log_error("send %.12s…: stored message unreadable", row->key);
		return mk_fail(err, 500, "internal error");
	}
	msg.idempotency_key = send_key;

	for (;;) {
		switch (row->state) {
		case SEND_NEW:
			if (dodo_ledger_entry(s, row->customer_id, DODO_DEBIT, "1", "email send",
			    debit_key, row->key, &entry, err) == -1) {
				if (billing_definite(err)) {
					finish(s, row, SEND_REJECTED, err->status,
					    err->msg, NULL, &serr);
					goto out;
				}
				goto release;
			}
			if (entry.outcome == DODO_LEDGER_INSUFFICIENT) {
				mk_fail(err, 402, "%s", BILLING_NO_CREDIT_MSG);
				finish(s, row, SEND_REJECTED, 402, err->msg, NULL, &serr);
				goto out;
			}
			/*
			 * On to the send without writing the journal: a row resumed
			 * from "new" repeats the debit (Dodo answers 409, already
			 * applied) and the send (the provider replays the same key),
			 * so a crash from here on costs nothing, and a send saves a
			 * write transaction.
			 */
			row->state = SEND_SENDING;
			break;
		case SEND_DEBITED:	/* rows written by older versions */
			if (store_send_advance(s, row, SEND_SENDING, 0, NULL, NULL, err) == -1)
				goto out;
			break;
		case SEND_SENDING:
			if (mp->send(s, &msg, out, err) == 0) {
				if (finish(s, row, SEND_SENT, 200, out->id, out->id, &serr) == -1)
					log_error("send %.12s…: sent as %s but not recorded (%s); "
					    "reconcile will record it", row->key, out->id, serr.msg);
				rc = 0;
				goto out;
			}
			if (err->maybe_done)	/* it may have gone out: keep the credit, resolve later */
				goto release;
			/* the provider refused: nothing was sent, so the credit goes back */
			if (store_send_advance(s, row, SEND_REFUNDING, err->status, err->msg, NULL,
			    &serr) == -1)
				goto out;
			break;
		case SEND_REFUNDING:
			if (dodo_ledger_entry(s, row->customer_id, DODO_CREDIT, "1",
			    "refund: email not sent", refund_key, row->key, &entry, &serr) == -1) {
				log_warn("send %.12s…: refund failed (%s); will retry", row->key,
				    serr.msg);
				mk_fail(err, row->status, "%s", row->reply);
				store_send_release(s, row, row->status, row->reply, &serr);
				goto out;
			}
			store_send_advance(s, row, SEND_REFUNDED, 0, NULL, NULL, &serr);
			mk_fail(err, row->status, "%s", row->reply);
			goto out;
		case SEND_SENT:
			snprintf(out->id, sizeof out->id, "%s", row->email_id);
			rc = 0;
			goto out;
		case SEND_REFUNDED:
		case SEND_REJECTED:
			mk_fail(err, row->status, "%s", row->reply);
			goto out;
		}
	}
release:
	store_send_release(s, row, err->status, err->msg, &serr);
out:
	json_object_put(stored);
	return rc;
}

int
billing_send(const struct settings *s, const struct mail_provider *mp,
    const char *customer_id, const char *client_key, const struct mail_message *msg,
    struct mail_result *out, struct mk_err *err)
{
	struct store_send	 row;
	struct timespec		 step = { 0, BILLING_WAIT_STEP_MS * 1000000L };
	json_object		*mj;
	const char		*message;
	char			 key[STORE_SEND_KEY_MAX], hash[STORE_SEND_KEY_MAX];
	long			 waited = 0;
	int			 rc = -1, r;

	if (billing_key_base(customer_id, client_key, key, sizeof key) == -1)
		return mk_fail(err, 500, "cannot derive an idempotency key");
	mj = billing_message_json(msg);
	message = json_object_to_json_string_ext(mj, BILLING_JSON_FLAGS);
	/* only a client's key can come again, with another request to tell apart */
	hash[0] = '\0';
	if (client_key != NULL && billing_sha256(customer_id, message, hash, sizeof hash) == -1) {
		json_object_put(mj);
		return mk_fail(err, 500, "cannot hash the request");
	}
	memset(&row, 0, sizeof row);
	for (;;) {
		r = store_send_begin(s, key, customer_id, hash, message, &row, err);
		if (r != STORE_SEND_BUSY || waited >= BILLING_WAIT_MAX_MS)
			break;
		/* a concurrent duplicate: wait for the first one's answer */
		store_send_free(&row);
		nanosleep(&step, NULL);
		waited += BILLING_WAIT_STEP_MS;
	}
	switch (r) {
	case STORE_SEND_OWNED:
		rc = billing_drive(s, mp, &row, row.inserted ? msg : NULL, 1, out, err);
		break;
	case STORE_SEND_FINAL:
		if (row.state == SEND_SENT) {
			snprintf(out->id, sizeof out->id, "%s", row.email_id);
			rc = 0;
		} else
			mk_fail(err, row.status, "%s", row.reply);
		break;
	case STORE_SEND_MISMATCH:
		mk_fail(err, 409, "Idempotency-Key was already used with a different request");
		break;
	case STORE_SEND_BUSY:
		mk_fail(err, 409, "a request with this Idempotency-Key is still in progress; "
		    "retry later");
		break;
	default:
		break;		/* -1: err is set */
	}
	store_send_free(&row);
	json_object_put(mj);
	return rc;
}

int
billing_resume(const struct settings *s, const struct mail_provider *mp,
    const struct store_send *pending, struct mk_err *err)
{
	struct store_send	row;
	struct mail_result	out;
	struct mk_err		derr;
	int			r, rc;

	r = store_send_begin(s, pending->key, pending->customer_id, NULL, NULL, &row, err);
	if (r == -1)
		return -1;
	if (r != STORE_SEND_OWNED) {
		store_send_free(&row);
		return r == STORE_SEND_FINAL ? 0 : 1;
	}
	log_info("send %.12s…: resuming from state %s", row.key, store_send_state_name(row.state));
	billing_drive(s, mp, &row, NULL, 0, &out, &derr);
	rc = row.state >= SEND_SENT ? 0 : 1;
	store_send_free(&row);
	return rc;
}
