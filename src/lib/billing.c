/* billing.c: the send journal's state machine — debit, send, compensate, fence; one credit per email. */
#include <sys/random.h>

#include <ctype.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <json-c/json.h>

#include "billing.h"
#include "billing_int.h"
#include "digest.h"
#include "dodo.h"
#include "log.h"
#include "settings.h"
#include "store.h"

#define KEY_CLOCK_BYTES		8	/* nanoseconds since 1970, big-endian: keys sort by time */
#define KEY_RANDOM_BYTES	8	/* 64 bits more: two sends in one nanosecond still differ */
#define BILLING_ID_HEX		32	/* hex digits of the key that make an email id */
#define BILLING_GAVE_UP_MSG	"mail provider unavailable for 23 hours; the email was not " \
	"sent and its credit was returned"

/* Hex SHA-256 of a, a NUL, and b (so ("ab","c") and ("a","bc") differ). */
int
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

void
billing_email_id(const char *key, char *out)
{
	/* 8-4-4-4-12, like the provider's ids, so clients need not tell them apart */
	snprintf(out, BILLING_ID_MAX, "%.8s-%.4s-%.4s-%.4s-%.12s", key, key + 8, key + 12,
	    key + 16, key + 20);
}

int
billing_id_prefix(const char *id, char *prefix, size_t prefixlen)
{
	size_t	n = 0;

	if (prefixlen < BILLING_ID_HEX + 1)
		return -1;
	for (const char *p = id; *p != '\0'; p++) {
		if (*p == '-' && (p - id == 8 || p - id == 13 || p - id == 18 || p - id == 23))
			continue;
		if (!isxdigit((unsigned char)*p) || n == BILLING_ID_HEX)
			return -1;
		prefix[n++] = (char)tolower((unsigned char)*p);
	}
	prefix[n] = '\0';
	return n == BILLING_ID_HEX ? 0 : -1;
}

/* The message as the journal keeps it: enough to send it again byte for byte. */
json_object *
billing_message_json(const struct mail_message *msg)
{
	json_object *o = json_object_new_object(), *to = json_object_new_array();

	for (size_t i = 0; i < msg->nto; i++)
		json_object_array_add(to, json_object_new_string(msg->to[i]));
	json_object_object_add(o, "from", json_object_new_string(msg->from));
	json_object_object_add(o, "to", to);
	/* absent when empty: a message without them hashes as older versions did */
	mail_json_extras(o, msg);
	/* one credit per recipient (billing_amount) */
	if (mail_recipients(msg) > 1)
		json_object_object_add(o, "credits",
		    json_object_new_int64((int64_t)mail_recipients(msg)));
	json_object_object_add(o, "subject", json_object_new_string(msg->subject));
	if (msg->html != NULL)
		json_object_object_add(o, "html", json_object_new_string(msg->html));
	if (msg->text != NULL)
		json_object_object_add(o, "text", json_object_new_string(msg->text));
	return o;
}

/* Read a list member back (strings point into o); the number of items, or -1. */
static long
billing_list_parse(json_object *o, const char *name, const char **list)
{
	json_object	*a;
	size_t		 n;

	if (!json_object_object_get_ex(o, name, &a))
		return 0;
	if (!json_object_is_type(a, json_type_array) ||
	    (n = json_object_array_length(a)) > MAIL_MAX_RECIPIENTS)
		return -1;
	for (size_t i = 0; i < n; i++)
		list[i] = json_object_get_string(json_object_array_get_idx(a, i));
	return (long)n;
}

/* Rebuild msg from the journal's JSON; strings point into the returned object. */
static json_object *
billing_message_parse(const char *text, struct mail_message *msg)
{
	json_object	*o = json_tokener_parse(text), *v;
	long		 nto, ncc, nbcc, nreply;
	size_t		 ntags = 0;

	memset(msg, 0, sizeof *msg);
	if (o != NULL && json_object_object_get_ex(o, "tags", &v) &&
	    json_object_is_type(v, json_type_array) &&
	    (ntags = json_object_array_length(v)) <= MAIL_MAX_TAGS) {
		for (size_t i = 0; i < ntags; i++) {
			json_object *t = json_object_array_get_idx(v, i), *part;

			if (json_object_object_get_ex(t, "name", &part))
				msg->tags[i].name = json_object_get_string(part);
			if (json_object_object_get_ex(t, "value", &part))
				msg->tags[i].value = json_object_get_string(part);
		}
		msg->ntags = ntags;
	}
	if (o == NULL || (nto = billing_list_parse(o, "to", msg->to)) <= 0 ||
	    (ncc = billing_list_parse(o, "cc", msg->cc)) < 0 ||
	    (nbcc = billing_list_parse(o, "bcc", msg->bcc)) < 0 ||
	    (nreply = billing_list_parse(o, "reply_to", msg->reply_to)) < 0 ||
	    nto + ncc + nbcc > MAIL_MAX_RECIPIENTS || ntags > MAIL_MAX_TAGS) {
		json_object_put(o);
		return NULL;
	}
	msg->nto = (size_t)nto;
	msg->ncc = (size_t)ncc;
	msg->nbcc = (size_t)nbcc;
	msg->nreply_to = (size_t)nreply;
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

/* Seconds before background try number `attempts` (1, 2, 4 ... capped), jittered. */
static long
billing_backoff_sec(int attempts)
{
	static _Thread_local unsigned int seed;
	long	 d = 1;
	double	 jitter;

	if (seed == 0)
		seed = (unsigned int)time(NULL) ^ (unsigned int)(uintptr_t)&seed;
	for (int i = 1; i < attempts && d < BILLING_BACKOFF_MAX_SEC; i++)
		d *= 2;
	if (d > BILLING_BACKOFF_MAX_SEC)
		d = BILLING_BACKOFF_MAX_SEC;
	jitter = 1.0 - (rand_r(&seed) / ((double)RAND_MAX + 1.0)) * 0.25;
	return d * jitter < 1.0 ? 1 : (long)(d * jitter + 0.5);
}

static void
billing_sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		;
}

/* The three keys of a row, derived from its journal key. */
void
billing_keys(const char *key, struct billing_keys *k)
{
	snprintf(k->debit, sizeof k->debit, "mk-send-%s-debit", key);
	snprintf(k->send, sizeof k->send, "mk-send-%s", key);
	snprintf(k->refund, sizeof k->refund, "mk-send-%s-refund", key);
}

void
billing_set_reply(struct store_send *row, enum store_send_state state, int status,
    const char *reply)
{
	row->state = state;
	row->status = status;
	snprintf(row->reply, sizeof row->reply, "%s", reply);
}

/*
 * Let go of a row that is still pending, to be tried again by the
 * background after the backoff (or, for a 5xx void, after the grace a
 * client's retry has to take it up).
 */
void
billing_postpone(const struct settings *s, struct store_send *row, long delay_sec)
{
	struct mk_err	serr;

	row->attempts++;
	if (delay_sec < 0)
		delay_sec = billing_backoff_sec(row->attempts);
	if (store_send_release(s, row, delay_sec, &serr) == -1)
		log_error("send %.12s…: not released (%s); it is resumed when its lease ends",
		    row->key, serr.msg);
}

/* Write a final state now (background, reconciliation) or batched (a request's 200). */
static void
billing_record(const struct settings *s, struct store_send *row, enum billing_mode mode)
{
	struct mk_err	serr;
	int		rc;

	rc = mode == BILLING_REQUEST && row->state == SEND_SENT ?
	    store_send_finish(s, row, &serr) : store_send_save(s, row, &serr);
	if (rc == -1)
		log_error("send %.12s…: state %s not recorded (%s); it is resumed with the same "
		    "keys", row->key, store_send_state_name(row->state), serr.msg);
}

/*
 * The credits a send costs, as a ledger amount: one per recipient (to, cc
 * and bcc), recorded with its message as "credits" when more than one
 * (rows without it, older ones included, cost one).
 */
static void
billing_amount(const struct store_send *row, char out[BILLING_AMOUNT_MAX])
{
	const char	*p = row->message != NULL ? strstr(row->message, "\"credits\":") : NULL;
	long		 n = 1;

	/*
	 * Found without parsing the message (its body may be 1 MB): in the
	 * journal's plain JSON (billing_message_json) the sequence "credits":
	 * is only ever our key; inside a string its quotes would be escaped.
	 */
	if (p != NULL)
		n = strtol(p + strlen("\"credits\":"), NULL, 10);
	if (n < 1 || n > MAIL_MAX_RECIPIENTS)
		n = 1;
	snprintf(out, BILLING_AMOUNT_MAX, "%ld", n);
}

/* Credit back what the row's debit took, with the row's refund key. */
static int
billing_refund(const struct settings *s, const struct store_send *row,
    const struct billing_keys *k, struct dodo_ledger_result *entry, struct mk_err *err)
{
	char	amount[BILLING_AMOUNT_MAX];

	billing_amount(row, amount);
	return dodo_ledger_entry(s, row->customer_id, DODO_CREDIT, amount,
	    "refund: email not sent", k->refund, row->key, entry, err);
}

/* Debit the send's credits with the row's key, all or nothing (one entry:
 * Dodo refuses it past the balance); fills row->debited on success. */
static int
billing_debit(const struct settings *s, struct store_send *row, const struct billing_keys *k,
    struct dodo_ledger_result *entry, struct mk_err *err)
{
	char	amount[BILLING_AMOUNT_MAX];

	billing_amount(row, amount);
	if (dodo_ledger_entry(s, row->customer_id, DODO_DEBIT, amount, "email send", k->debit,
	    row->key, entry, err) == -1)
		return -1;
	if (entry->outcome != DODO_LEDGER_INSUFFICIENT) {
		row->debited = 1;
		snprintf(row->debit_entry, sizeof row->debit_entry, "%s", entry->entry_id);
	}
	return 0;
}

/*
 * The debit of a request (state NEW).  Returns 1 when it stands (go on to
 * the send), 0 when the row was settled otherwise (err holds the answer).
 * unsure: an earlier attempt of this debit may be in flight (the row is
 * resumed after a crash), so an "insufficient" answer is not final proof.
 */
int
billing_step_debit(const struct settings *s, struct store_send *row,
    const struct billing_keys *k, enum billing_mode mode, int unsure, struct mk_err *err)
{
	struct dodo_ledger_result	entry;

	for (int tries = 0;; tries++) {
		if (billing_debit(s, row, k, &entry, err) == -1) {
			if (billing_definite(err)) {
				/* refused before acting (unknown customer, ...): final */
				billing_set_reply(row, SEND_REJECTED, err->status, err->msg);
				billing_record(s, row, mode);
				return 0;
			}
			/*
			 * Unknown: the debit may land.  Nothing is sent, so nothing
			 * may be charged: the row is voided (the key fenced, any
			 * landed debit refunded) unless the client's retry takes it
			 * up within the grace.
			 */
			log_warn("send %.12s…: debit unconfirmed (%s); voiding it", row->key,
			    err->msg);
			billing_set_reply(row, SEND_VOIDING, err->status == 504 || err->status == 502 ?
			    err->status : 503, BILLING_NOT_CHARGED_MSG);
			billing_postpone(s, row, s->void_grace_sec);
			mk_fail(err, row->status, "%s", row->reply);
			return 0;
		}
		if (entry.outcome != DODO_LEDGER_INSUFFICIENT)
			return 1;
		unsure |= entry.earlier_maybe_done;
		if (!unsure) {
			billing_set_reply(row, SEND_REJECTED, 402, BILLING_NO_CREDIT_MSG);
			billing_record(s, row, mode);
			mk_fail(err, 402, "%s", BILLING_NO_CREDIT_MSG);
			return 0;
		}
		/*
		 * "Insufficient" after an attempt whose fate is unknown: that one
		 * may still land.  Ask again with the same key a little later (a
		 * 409 would mean it landed), then answer 402 and fence the key.
		 */
		if (mode == BILLING_BACKGROUND || tries >= BILLING_RESOLVE_TRIES) {
			log_warn("send %.12s…: no credit, but an earlier debit attempt is "
			    "unresolved; fencing its key", row->key);
			billing_set_reply(row, SEND_VOIDING, 402, BILLING_NO_CREDIT_MSG);
			billing_postpone(s, row, 1);
			mk_fail(err, 402, "%s", BILLING_NO_CREDIT_MSG);
			return 0;
		}
		billing_sleep_ms(BILLING_RESOLVE_STEP_MS);
	}
}

/*
 * Fence a voided row's debit key: debit again with the same key.  If a
 * debit lands now or had landed (409), the key is spent and no late attempt
 * can land any more; refund it.  If the balance refuses, nothing of ours has
 * landed yet: try again later, for BILLING_FENCE_SEC (a debit that lands
 * even later is an orphan that reconciliation refunds).  Returns 0 when the
 * row is final, 1 when still pending.
 */
static int
billing_step_fence(const struct settings *s, struct store_send *row,
    const struct billing_keys *k, struct mk_err *err)
{
	struct dodo_ledger_result	entry;

	if (!row->debited) {
		if (billing_debit(s, row, k, &entry, err) == -1) {
			billing_postpone(s, row, -1);
			return 1;
		}
		if (entry.outcome == DODO_LEDGER_INSUFFICIENT) {
			if (time(NULL) - row->created_at < BILLING_FENCE_SEC) {
				billing_postpone(s, row, -1);
				return 1;
			}
			row->state = SEND_VOIDED;	/* nothing of ours ever landed */
			billing_record(s, row, BILLING_BACKGROUND);
			return 0;
		}
		log_warn("send %.12s…: a debit stands for a send answered %d; refunding it",
		    row->key, row->status);
	}
	if (billing_refund(s, row, k, &entry, err) == -1) {
		billing_postpone(s, row, -1);
		return 1;
	}
	row->refunded = 1;
	snprintf(row->refund_entry, sizeof row->refund_entry, "%s", entry.entry_id);
	row->state = SEND_VOIDED;
	billing_record(s, row, BILLING_BACKGROUND);
	return 0;
}

/*
 * A send to a provider without idempotency whose outcome is unknown: the
 * message may well have been delivered, and another attempt could deliver
 * a second copy.  It is final: not retried, its credit stays taken, and the
 * answer says "unconfirmed" (README "Mail providers").
 */
static void
billing_unconfirmed(const struct settings *s, struct store_send *row, enum billing_mode mode,
    struct billing_result *out)
{
	if (row->state != SEND_UNCONFIRMED) {
		billing_set_reply(row, SEND_UNCONFIRMED, 202, BILLING_UNCONFIRMED_MSG);
		billing_record(s, row, mode);
	}
	out->unconfirmed = 1;
}

/*
 * Answer a debited send 202 queued (reason kept as its reply) and let the
 * background deliver it delay_sec from now (-1: after the backoff).
 */
void
billing_queue(const struct settings *s, struct store_send *row, const char *reason,
    long delay_sec, enum billing_mode mode, struct billing_result *out)
{
	row->status = 202;
	snprintf(row->reply, sizeof row->reply, "%s", reason);
	billing_postpone(s, row, delay_sec);
	out->queued = 1;
	if (mode == BILLING_REQUEST)
		billing_deliver_wake();
}

/* A client's retry takes up a send it was told was not charged (a 5xx void). */
void
billing_take_up(struct store_send *row)
{
	if (row->state == SEND_VOIDING && row->status >= 500)
		row->state = row->debited ? SEND_SENDING : SEND_NEW;
}

/*
 * Drive an owned row from its state on.  The message is `request` when the
 * row was inserted from it, else the row's stored copy.  Returns 0 with out
 * filled (sent, or queued in the background), or -1 with err holding the
 * answer (final, or 5xx with nothing charged).  In every case the row is
 * recorded or released before return.
 */
int
billing_drive(const struct settings *s, const struct mail_provider *mp,
    struct store_send *row, const struct mail_message *request, enum billing_mode mode,
    struct billing_result *out, struct mk_err *err)
{
	struct billing_keys		 k;
	struct dodo_ledger_result	 entry;
	struct mail_message		 msg;
	struct mail_result		 sent;
	json_object			*stored = NULL;
	/* a row taken over (not inserted now) may have a debit attempt in flight */
	int				 rc = -1, unsure = request == NULL;

	billing_keys(row->key, &k);
	memset(out, 0, sizeof *out);
	billing_email_id(row->key, out->id);
	if (mode == BILLING_REQUEST)
		billing_take_up(row);
	memset(&msg, 0, sizeof msg);
	if (request != NULL)
		msg = *request;		/* the row was stored from it just now */
	else if (row->state <= SEND_SENDING &&
	    (stored = billing_message_parse(row->message, &msg)) == NULL) {
		log_error("send %.12s…: stored message unreadable", row->key);
		store_send_release(s, row, BILLING_BACKOFF_MAX_SEC, err);
		return mk_fail(err, 500, "internal error");
	}
	msg.idempotency_key = k.send;

	for (;;) {
		switch (row->state) {
		case SEND_NEW:
			if (!billing_step_debit(s, row, &k, mode, unsure, err))
				goto out;
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
			row->debited = 1;
			row->state = SEND_SENDING;
			break;
		case SEND_SENDING:
			/*
			 * A provider without idempotency (SMTP): an attempt whose outcome
			 * is unknown is never repeated.  The row says so before the call,
			 * so a worker that dies in the middle leaves that mark behind.
			 */
			if (!mp->idempotent) {
				if (row->unsure_at != 0) {
					billing_unconfirmed(s, row, mode, out);
					rc = 0;
					goto out;
				}
				row->unsure_at = time(NULL);
				if (store_send_save(s, row, err) == -1)
					goto out;
			}
			if (mp->send(s, &msg, &sent, err) == 0) {
				billing_set_reply(row, SEND_SENT, 200, sent.id);
				snprintf(row->email_id, sizeof row->email_id, "%s", sent.id);
				billing_record(s, row, mode);
				snprintf(out->provider_id, sizeof out->provider_id, "%s", sent.id);
				rc = 0;
				goto out;
			}
			if (!mp->idempotent && err->maybe_done) {
				log_error("send %.12s…: %s; not retried (no idempotency), the "
				    "credit stays taken", row->key, err->msg);
				billing_unconfirmed(s, row, mode, out);
				rc = 0;
				goto out;
			}
			if (!mp->idempotent)
				row->unsure_at = 0;	/* definitely not sent: safe to repeat */
			if (err->maybe_done)
				row->unsure_at = time(NULL);
			/*
			 * Unknown, refused for now (503: a rate limit), or refused while
			 * an earlier attempt whose fate was unknown may still land at the
			 * provider (not proof that nothing was sent): the send stays
			 * queued; once that attempt is settled, a retry with the key
			 * replays it or is refused for real.
			 */
			if (err->maybe_done || err->status == 503 ||
			    time(NULL) - row->unsure_at < BILLING_SETTLE_SEC) {
				if (time(NULL) - row->created_at >= BILLING_WINDOW_SEC) {
					log_error("send %.12s…: provider unavailable past the "
					    "idempotency window; giving up and refunding", row->key);
					billing_set_reply(row, SEND_REFUNDING, 502, BILLING_GAVE_UP_MSG);
					break;
				}
				/* accepted for later: the background retries with the same key */
				log_info("send %.12s…: provider outcome unknown (%s); queued",
				    row->key, err->msg);
				billing_queue(s, row, err->msg, -1, mode, out);
				rc = 0;
				goto out;
			}
			/* the provider refused for good: nothing was sent, the credit goes back */
			billing_set_reply(row, SEND_REFUNDING, err->status, err->msg);
			if (store_send_save(s, row, err) == -1)
				goto out;
			break;
		case SEND_REFUNDING:
			if (billing_refund(s, row, &k, &entry, err) == -1) {
				log_warn("send %.12s…: refund failed (%s); will retry", row->key,
				    err->msg);
				billing_postpone(s, row, -1);
			} else {
				row->refunded = 1;
				snprintf(row->refund_entry, sizeof row->refund_entry, "%s",
				    entry.entry_id);
				row->state = SEND_REFUNDED;
				billing_record(s, row, mode);
			}
			/* either way the answer is the refusal: the refund is owed, not optional */
			mk_fail(err, row->status, "%s", row->reply);
			goto out;
		case SEND_VOIDING:
			/* background (or a 402 replayed): fence the debit key */
			billing_step_fence(s, row, &k, err);
			mk_fail(err, row->status, "%s", row->reply);
			goto out;
		case SEND_SENT:
			snprintf(out->provider_id, sizeof out->provider_id, "%s", row->email_id);
			rc = 0;
			goto out;
		case SEND_UNCONFIRMED:
			billing_unconfirmed(s, row, mode, out);
			rc = 0;
			goto out;
		case SEND_REFUNDED:
		case SEND_REJECTED:
		case SEND_VOIDED:
			mk_fail(err, row->status, "%s", row->reply);
			goto out;
		}
	}
out:
	json_object_put(stored);
	return rc;
}

/* The answer a row gives without being driven: final, or a queued 202. */
int
billing_replay(const struct store_send *row, struct billing_result *out, struct mk_err *err)
{
	memset(out, 0, sizeof *out);
	billing_email_id(row->key, out->id);
	if (row->state == SEND_SENT) {
		snprintf(out->provider_id, sizeof out->provider_id, "%s", row->email_id);
		return 0;
	}
	if (row->state == SEND_UNCONFIRMED) {
		out->unconfirmed = 1;
		return 0;
	}
	return mk_fail(err, row->status, "%s", row->reply);
}

/*
 * store_send_begin(), waiting up to BILLING_WAIT_MAX_MS for a concurrent
 * duplicate to finish.  Returns STORE_SEND_OWNED or STORE_SEND_FINAL with
 * row filled (the caller frees it either way), or -1 with err: 409 for a
 * key reused with another request or still in progress, else the store's.
 */
int
billing_begin(const struct settings *s, const char *key, const char *customer_id,
    const char *hash, const char *message, struct store_send *row, struct mk_err *err)
{
	struct timespec	step = { 0, BILLING_WAIT_STEP_MS * 1000000L };
	long		waited = 0;
	int		r;

	memset(row, 0, sizeof *row);
	for (;;) {
		r = store_send_begin(s, key, customer_id, hash, message, row, err);
		if (r != STORE_SEND_BUSY || waited >= BILLING_WAIT_MAX_MS)
			break;
		/* a concurrent duplicate: wait for the first one's answer */
		store_send_free(row);
		nanosleep(&step, NULL);
		waited += BILLING_WAIT_STEP_MS;
	}
	if (r == STORE_SEND_MISMATCH)
		return mk_fail(err, 409, "Idempotency-Key was already used with a different "
		    "request");
	if (r == STORE_SEND_BUSY)
		return mk_fail(err, 409, "a request with this Idempotency-Key is still in "
		    "progress; retry later");
	return r;
}

int
billing_send(const struct settings *s, const struct mail_provider *mp,
    const char *customer_id, const char *client_key, const struct mail_message *msg,
    struct billing_result *out, struct mk_err *err)
{
	struct store_send	 row;
	json_object		*mj;
	const char		*message;
	char			 key[STORE_SEND_KEY_MAX], hash[STORE_SEND_KEY_MAX];
	int			 rc = -1;

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
	switch (billing_begin(s, key, customer_id, hash, message, &row, err)) {
	case STORE_SEND_OWNED:
		rc = billing_drive(s, mp, &row, row.inserted ? msg : NULL, BILLING_REQUEST, out,
		    err);
		break;
	case STORE_SEND_FINAL:
		rc = billing_replay(&row, out, err);
		break;
	default:
		break;		/* -1: err is set */
	}
	store_send_free(&row);
	json_object_put(mj);
	return rc;
}

int
billing_refund_orphan(const struct settings *s, const struct store_send *row,
    struct mk_err *err)
{
	struct billing_keys		k;
	struct dodo_ledger_result	entry;

	billing_keys(row->key, &k);
	return billing_refund(s, row, &k, &entry, err);
}

json_object *
billing_result_json(const struct billing_result *r)
{
	json_object *out = json_object_new_object();

	json_object_object_add(out, "id", json_object_new_string(r->id));
	json_object_object_add(out, "status", json_object_new_string(r->queued ? "queued" :
	    r->unconfirmed ? "unconfirmed" : "sent"));
	if (r->unconfirmed)
		json_object_object_add(out, "message",
		    json_object_new_string(BILLING_UNCONFIRMED_MSG));
	else if (!r->queued)
		json_object_object_add(out, "provider_id", json_object_new_string(r->provider_id));
	return out;
}

int
billing_result_status(const struct billing_result *r)
{
	/* 200: the provider has it; 202: MailKit holds it and delivers it */
	return r->queued || r->unconfirmed ? 202 : 200;
}

/* "2026-12-04T12:00:00Z" */
static json_object *
billing_time_json(time_t t)
{
	struct tm	tm;
	char		buf[32];

	if (t <= 0 || gmtime_r(&t, &tm) == NULL)
		return NULL;
	strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
	return json_object_new_string(buf);
}

static json_object *
billing_ledger_json(const char *type, const char *amount, const char *entry_id,
    const char *key)
{
	json_object	*e = json_object_new_object();

	json_object_object_add(e, "type", json_object_new_string(type));
	json_object_object_add(e, "amount", json_object_new_string(amount));
	/* "" when Dodo answered 409 (applied before) and gave no entry id */
	json_object_object_add(e, "entry_id", entry_id[0] != '\0' ?
	    json_object_new_string(entry_id) : NULL);
	json_object_object_add(e, "idempotency_key", json_object_new_string(key));
	return e;
}

json_object *
billing_email_json(const struct store_send *row)
{
	struct billing_keys	 k;
	json_object		*o = json_object_new_object(), *ledger, *msg, *v;
	const char		*status;
	char			 id[BILLING_ID_MAX], amount[BILLING_AMOUNT_MAX];

	billing_keys(row->key, &k);
	billing_email_id(row->key, id);
	if (row->state == SEND_SENT)
		status = "sent";
	else if (row->state == SEND_UNCONFIRMED)
		status = "unconfirmed";
	else if (row->state <= SEND_SENDING)
		status = "queued";
	else
		status = "failed";	/* refunding, voiding and every other final state */
	json_object_object_add(o, "object", json_object_new_string("email"));
	json_object_object_add(o, "id", json_object_new_string(id));
	json_object_object_add(o, "status", json_object_new_string(status));
	json_object_object_add(o, "created_at", billing_time_json(row->created_at));
	json_object_object_add(o, "updated_at", billing_time_json(row->updated_at));
	/* recipients and subject outlive the body (store_send.h: journal hygiene) */
	msg = row->message != NULL ? json_tokener_parse(row->message) : NULL;
	json_object_object_add(o, "to", msg != NULL && json_object_object_get_ex(msg, "to", &v) ?
	    json_object_get(v) : json_object_new_array());
	/* cc, bcc, reply_to and tags as sent; empty when the request had none */
	for (size_t i = 0; i < 4; i++) {
		static const char *const echoed[] = { "cc", "bcc", "reply_to", "tags" };

		json_object_object_add(o, echoed[i], msg != NULL &&
		    json_object_object_get_ex(msg, echoed[i], &v) ? json_object_get(v) :
		    json_object_new_array());
	}
	json_object_object_add(o, "subject", msg != NULL &&
	    json_object_object_get_ex(msg, "subject", &v) ? json_object_get(v) : NULL);
	json_object_put(msg);
	json_object_object_add(o, "provider_id", row->email_id[0] != '\0' ?
	    json_object_new_string(row->email_id) : NULL);
	json_object_object_add(o, "error", strcmp(status, "sent") != 0 &&
	    strcmp(status, "queued") != 0 ?
	    json_object_new_string(row->reply) : NULL);
	ledger = json_object_new_array();
	billing_amount(row, amount);
	if (row->debited)
		json_object_array_add(ledger, billing_ledger_json("debit", amount,
		    row->debit_entry, k.debit));
	if (row->refunded)
		json_object_array_add(ledger, billing_ledger_json("refund", amount,
		    row->refund_entry, k.refund));
	json_object_object_add(o, "ledger", ledger);
	return o;
}

