/* usage.c: billed AI requests (usage.h) — admission of holds, the model call, settlement, the API's view. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <json-c/json.h>

#include "billing.h"
#include "customer_plan.h"
#include "digest.h"
#include "dodo.h"
#include "log.h"
#include "openai.h"
#include "settings.h"
#include "store.h"
#include "usage.h"

#define USAGE_ID_HEX	32	/* hex digits of the key that make an id */

long
usage_hold(size_t text_bytes, size_t nmessages, long max_tokens)
{
	/* the text, each message's overhead, and the reply's priming */
	return (long)text_bytes + (long)(nmessages + 1) * USAGE_MESSAGE_OVERHEAD + max_tokens;
}

json_object *
usage_messages(json_object *messages, size_t *text_bytes, struct mk_err *err)
{
	static const char *const roles[] = { "system", "developer", "user", "assistant" };
	json_object	*clean, *m, *role, *content, *c;
	size_t		 n, i, r;

	*text_bytes = 0;
	if (!json_object_is_type(messages, json_type_array) ||
	    (n = json_object_array_length(messages)) == 0 || n > USAGE_MESSAGES_MAX) {
		mk_fail(err, 400, "messages must be an array of 1 to %d messages",
		    USAGE_MESSAGES_MAX);
		return NULL;
	}
	if ((clean = json_object_new_array()) == NULL) {
		mk_fail(err, 500, "out of memory");
		return NULL;
	}
	for (i = 0; i < n; i++) {
		m = json_object_array_get_idx(messages, i);
		if (!json_object_is_type(m, json_type_object) ||
		    !json_object_object_get_ex(m, "role", &role) ||
		    !json_object_is_type(role, json_type_string) ||
		    !json_object_object_get_ex(m, "content", &content) ||
		    !json_object_is_type(content, json_type_string)) {
			mk_fail(err, 400, "message %zu: role and content (a string) are required", i);
			goto fail;
		}
		for (r = 0; r < sizeof roles / sizeof roles[0]; r++)
			if (strcmp(json_object_get_string(role), roles[r]) == 0)
				break;
		if (r == sizeof roles / sizeof roles[0]) {
			mk_fail(err, 400, "message %zu: role must be system, developer, user or "
			    "assistant", i);
			goto fail;
		}
		*text_bytes += (size_t)json_object_get_string_len(content);
		if (*text_bytes > USAGE_PROMPT_MAX) {
			mk_fail(err, 400, "the messages' text is longer than %d bytes",
			    USAGE_PROMPT_MAX);
			goto fail;
		}
		c = json_object_new_object();
		json_object_object_add(c, "role", json_object_new_string(roles[r]));
		json_object_object_add(c, "content", json_object_get(content));
		json_object_array_add(clean, c);
	}
	return clean;
fail:
	json_object_put(clean);
	return NULL;
}

/* A decimal string as whole credits, rounded toward minus infinity
 * ("12.5" -> 12, "-0.5" -> -1); 0 if it does not parse. */
static long
usage_whole(const char *amount)
{
	char		*end;
	long long	 v;
	int		 frac = 0;

	if (amount == NULL || *amount == '\0')
		return 0;
	v = strtoll(amount, &end, 10);
	if (end == amount && *end != '.' && *end != '-')
		return 0;
	if (*end == '.')
		for (end++; *end >= '0' && *end <= '9'; end++)
			frac |= *end != '0';
	if (*end != '\0' || v > 1000000000000LL || v < -1000000000000LL)
		return 0;
	return (long)(amount[0] == '-' && frac ? v - 1 : v);
}

long
usage_overage_room(const struct settings_plan *plan, const char *overage)
{
	long room;

	if (plan == NULL || plan->overage_limit <= 0)
		return 0;
	room = plan->overage_limit - usage_whole(overage);
	return room > 0 ? room : 0;
}

void
usage_event_id(const char *key, char *out)
{
	snprintf(out, USAGE_KEY_MAX, "%s%s", USAGE_EVENT_PREFIX, key);
}

void
usage_debit_key(const char *key, char *out)
{
	snprintf(out, USAGE_KEY_MAX, "%s%s-debit", USAGE_EVENT_PREFIX, key);
}

int
usage_id_prefix(const char *id, char *prefix, size_t prefixlen)
{
	size_t n = strlen(USAGE_ID_PREFIX);

	if (prefixlen < USAGE_ID_HEX + 1 || strncmp(id, USAGE_ID_PREFIX, n) != 0 ||
	    strlen(id + n) != USAGE_ID_HEX)
		return -1;
	for (size_t i = 0; i < USAGE_ID_HEX; i++) {
		char c = (char)tolower((unsigned char)id[n + i]);

		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
			return -1;
		prefix[i] = c;
	}
	prefix[USAGE_ID_HEX] = '\0';
	return 0;
}

/* The request's hash for a client key: customer, max_tokens and the messages. */
static int
usage_request_hash(const char *customer_id, json_object *messages, long max_tokens, char *out)
{
	char			 mt[32];
	const char		*text;
	struct digest_part	 parts[3];

	if ((text = json_object_to_json_string_ext(messages, JSON_C_TO_STRING_PLAIN)) == NULL)
		return -1;
	snprintf(mt, sizeof mt, "%ld", max_tokens);
	parts[0] = (struct digest_part){ customer_id, strlen(customer_id) + 1 };
	parts[1] = (struct digest_part){ mt, strlen(mt) + 1 };
	parts[2] = (struct digest_part){ text, strlen(text) };
	return digest_sha256_hex(parts, 3, out);
}

/* The hold of a clean messages array (usage_messages). */
static long
usage_hold_of(json_object *messages, long max_tokens)
{
	size_t	n = json_object_array_length(messages), bytes = 0;

	for (size_t i = 0; i < n; i++) {
		json_object *c;

		if (json_object_object_get_ex(json_object_array_get_idx(messages, i), "content", &c))
			bytes += (size_t)json_object_get_string_len(c);
	}
	return usage_hold(bytes, n, max_tokens);
}

/*
 * Read what admission needs from Dodo: the clear sequence first (usage.h),
 * then the balance and the plan's overage room.  0 / -1.
 */
static int
usage_read_room(const struct settings *s, const char *customer_id, long long *seq,
    long *balance, long *room, struct mk_err *err)
{
	const struct settings_plan	*plan = NULL;
	struct dodo_balance		 bal;

	if ((*seq = store_usage_clear_seq(s, customer_id, err)) < 0 ||
	    dodo_get_balance(s, customer_id, &bal, err) == -1 ||
	    customer_plan(s, customer_id, &plan, err) == -1)
		return -1;
	*balance = usage_whole(bal.balance);
	*room = usage_overage_room(plan, bal.overage);
	return 0;
}

/* Admit (or find) the request's row, waiting out a live duplicate. */
static int
usage_admit(const struct settings *s, const char *key, const char *customer_id,
    const char *hash, long hold, long max_tokens, struct store_usage *row, struct mk_err *err)
{
	struct timespec		step = { 0, USAGE_WAIT_STEP_MS * 1000000L };
	struct store_usage_room	room;
	long			waited = 0, balance, overage_room;
	long long		seq;
	long			lease = s->request_timeout_ms / 1000 + USAGE_HOLD_SLACK_SEC;
	int			r;

	for (;;) {
		/* a replay needs no payments call: look first */
		if ((r = store_usage_get(s, customer_id, key, row, err)) == -1)
			return -1;
		if (r == 1 && strcmp(row->key, key) == 0 && (row->state == USAGE_SETTLED ||
		    row->state == USAGE_INGESTED || row->state == USAGE_DEBITED)) {
			if (strcmp(row->request_hash, hash) != 0) {
				store_usage_free(row);
				return mk_fail(err, 409, "Idempotency-Key was already used with a "
				    "different request");
			}
			return STORE_USAGE_FINAL;
		}
		store_usage_free(row);
		if (usage_read_room(s, customer_id, &seq, &balance, &overage_room, err) == -1)
			return -1;
		r = store_usage_admit(s, key, customer_id, hash, hold, max_tokens, balance,
		    overage_room, seq, lease, row, &room, err);
		if (r != STORE_USAGE_BUSY || waited >= USAGE_WAIT_MAX_MS)
			break;
		store_usage_free(row);
		nanosleep(&step, NULL);
		waited += USAGE_WAIT_STEP_MS;
	}
	switch (r) {
	case STORE_USAGE_MISMATCH:
		return mk_fail(err, 409, "Idempotency-Key was already used with a different request");
	case STORE_USAGE_BUSY:
		return mk_fail(err, 409, "a request with this Idempotency-Key is still in progress; "
		    "retry later");
	case STORE_USAGE_REFUSED:
		log_info("usage %.12s…: %s: hold of %ld refused (balance %ld + overage room %ld"
		    " - unsettled %ld - held %ld = %ld)", key, customer_id, hold, room.balance,
		    room.overage_room, room.unsettled, room.held, room.available);
		return mk_fail(err, 402, "Not enough tokens: this request may use up to %ld tokens "
		    "(prompt + max_tokens) and %ld are available. Buy a top-up pack, or lower "
		    "max_tokens.", hold, room.available > 0 ? room.available : 0);
	default:
		return r;	/* OWNED, FINAL, or -1 */
	}
}

int
usage_generate(const struct settings *s, const char *customer_id, const char *client_key,
    json_object *messages, long max_tokens, struct store_usage *out, struct mk_err *err)
{
	struct openai_result	 ai;
	struct mk_err		 rerr;
	char			 key[STORE_USAGE_KEY_MAX], hash[STORE_USAGE_KEY_MAX];
	long			 hold = usage_hold_of(messages, max_tokens);
	int			 r;

	memset(out, 0, sizeof *out);
	if (billing_key_base(customer_id, client_key, key, sizeof key) == -1)
		return mk_fail(err, 500, "cannot derive an idempotency key");
	/* only a client's key can come again, with another request to tell apart */
	hash[0] = '\0';
	if (client_key != NULL &&
	    usage_request_hash(customer_id, messages, max_tokens, hash) == -1)
		return mk_fail(err, 500, "cannot hash the request");
	if ((r = usage_admit(s, key, customer_id, hash, hold, max_tokens, out, err)) == -1)
		return -1;
	if (r == STORE_USAGE_FINAL)
		return 0;
	if (openai_chat(s, messages, max_tokens, &ai, err) == -1) {
		if (store_usage_release(s, out, &rerr) == -1)
			log_warn("usage %.12s…: hold not released (%s): it lapses with its lease",
			    key, rerr.msg);
		store_usage_free(out);
		return -1;
	}
	out->prompt_tokens = ai.prompt_tokens;
	out->completion_tokens = ai.completion_tokens;
	out->tokens = ai.prompt_tokens + ai.completion_tokens;
	snprintf(out->model, sizeof out->model, "%s", ai.model);
	out->answer = ai.text;
	ai.text = NULL;
	if (out->tokens > hold)
		log_warn("usage %.12s…: %ld tokens used, over the hold of %ld (the prompt "
		    "estimate was low)", key, out->tokens, hold);
	if (store_usage_settle(s, out, err) == -1) {
		/* unrecorded: the answer is not given, so nothing is billed; the
		 * hold lapses with its lease */
		log_error("usage %.12s…: %ld tokens used but not recorded: not billed", key,
		    out->tokens);
		store_usage_free(out);
		return -1;
	}
	usage_outbox_wake();
	return 0;
}

void
usage_iso_ms(long long ms, char *out, size_t outlen)
{
	time_t		t = (time_t)(ms / 1000);
	struct tm	tm;
	char		base[32];

	gmtime_r(&t, &tm);
	strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out, outlen, "%s.%03lldZ", base, ms % 1000);
}

json_object *
usage_row_json(const struct store_usage *row)
{
	json_object	*o = json_object_new_object(), *u, *b;
	char		 id[USAGE_ID_MAX], ev[USAGE_KEY_MAX], when[40];

	snprintf(id, sizeof id, "%s%.32s", USAGE_ID_PREFIX, row->key);
	usage_event_id(row->key, ev);
	usage_iso_ms(row->created_ms, when, sizeof when);
	json_object_object_add(o, "id", json_object_new_string(id));
	json_object_object_add(o, "object", json_object_new_string("generation"));
	json_object_object_add(o, "status",
	    json_object_new_string(store_usage_state_name(row->state)));
	json_object_object_add(o, "text", row->state == USAGE_HELD ||
	    row->state == USAGE_RELEASED ? NULL : json_object_new_string(row->answer != NULL ?
	    row->answer : ""));
	json_object_object_add(o, "tokens_used", json_object_new_int64(row->tokens));
	json_object_object_add(o, "model", json_object_new_string(row->model));
	u = json_object_new_object();
	json_object_object_add(u, "prompt_tokens", json_object_new_int64(row->prompt_tokens));
	json_object_object_add(u, "completion_tokens",
	    json_object_new_int64(row->completion_tokens));
	json_object_object_add(u, "total_tokens", json_object_new_int64(row->tokens));
	json_object_object_add(o, "usage", u);
	json_object_object_add(o, "created_at", json_object_new_string(when));
	b = json_object_new_object();
	json_object_object_add(b, "hold", json_object_new_int64(row->hold));
	json_object_object_add(b, "max_tokens", json_object_new_int64(row->max_tokens));
	json_object_object_add(b, "event_id", json_object_new_string(ev));
	json_object_object_add(b, "billed_by", row->billed_by[0] != '\0' ?
	    json_object_new_string(row->billed_by) : NULL);
	json_object_object_add(b, "ingested", json_object_new_boolean(
	    row->state == USAGE_INGESTED || row->state == USAGE_DEBITED));
	json_object_object_add(b, "cleared", json_object_new_int64(row->cleared));
	json_object_object_add(b, "ingest_attempts", json_object_new_int(row->attempts));
	json_object_object_add(o, "billing", b);
	return o;
}

int
usage_meter_deduction(const struct settings *s, const char *customer_id, const char *entry_id,
    const char *amount, struct mk_err *err)
{
	long	tokens = usage_whole(amount), applied;
	int	rc;

	if (tokens <= 0 || entry_id == NULL || *entry_id == '\0')
		return 0;
	if ((rc = store_usage_clear(s, customer_id, entry_id, tokens, &applied, err)) == -1)
		return -1;
	if (rc == 1)
		log_info("usage: %s: meter deduction %s of %ld tokens cleared %ld of its usage",
		    customer_id, entry_id, tokens, applied);
	return 0;
}
