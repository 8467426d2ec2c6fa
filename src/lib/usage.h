/* usage.h: billed AI requests — holds that really stop at zero, and usage billed exactly once (README "Usage billing (NeuralAPI)"). */
#ifndef MAILKIT_USAGE_H
#define MAILKIT_USAGE_H

#include <stddef.h>
#include <time.h>

#include <json-c/json.h>

#include "err.h"
#include "store_usage.h"

struct settings;
struct settings_plan;

#define USAGE_PROMPT_MAX	(64 * 1024)	/* bytes of prompt (all messages' text) accepted */
#define USAGE_MESSAGES_MAX	64	/* messages of one chat completion */
#define USAGE_MESSAGE_OVERHEAD	8	/* tokens a chat message costs beyond its text (OpenAI
					   counts 3-4 per message plus 3 for the reply's priming) */
#define USAGE_ID_PREFIX		"gen_"	/* an id is this + the journal key's first 32 hex */
#define USAGE_ID_MAX		37	/* "gen_" + 32 + NUL */
#define USAGE_EVENT_PREFIX	"mk-gen-"	/* event_id = this + journal key */
#define USAGE_KEY_MAX		96	/* derived keys: "mk-gen-<64 hex>-debit" */
#define USAGE_WAIT_MAX_MS	30000	/* a duplicate waits this long for the first */
#define USAGE_WAIT_STEP_MS	50
#define USAGE_HOLD_SLACK_SEC	60	/* a hold's lease: the request's deadline + this */
#define USAGE_INGEST_MAX_AGE_SEC (55 * 60)	/* Dodo refuses events over 1 h old: keep 5 min */
#define USAGE_INGEST_CLOSED_SEC	(65 * 60)	/* past this no ingest can land any more: ask
						   GET /events/{id}, then debit the ledger */
#define USAGE_CLEAR_WINDOW_SEC	600	/* ingested usage the meter has not deducted by
					   then never will be (it stopped at zero): cleared */
#define USAGE_POLL_SEC		30	/* the ledger is polled for meter entries this often
					   while usage waits for its deduction */
#define USAGE_POLL_CUSTOMERS	16	/* customers polled per pass */
#define USAGE_BACKOFF_MAX_SEC	60	/* ingest retries: 1 s, 2 s, 4 s ... capped */
#define USAGE_OUTBOX_POLL_MS	1000	/* the outbox threads look for due rows this often */

/*
 * The hold for nmessages messages of text_bytes of text together and
 * max_tokens: an upper bound of what the request can cost.  A token is at
 * least one byte of text in any tokenizer OpenAI uses (and in the
 * sandbox's), so the bytes + USAGE_MESSAGE_OVERHEAD per message and once
 * more for the reply bound the prompt; the model is told max_tokens, so
 * the completion cannot exceed it.
 */
long	usage_hold(size_t text_bytes, size_t nmessages, long max_tokens);

/*
 * messages (a JSON array) checked as a chat completion's: 1..USAGE_MESSAGES_MAX
 * objects {role: "system"|"developer"|"user"|"assistant", content: string},
 * at most USAGE_PROMPT_MAX bytes of content together (other members are
 * dropped).  Returns a clean copy [{role, content}] (caller puts it) with
 * *text_bytes, or NULL with a 400 in err naming the bad message.
 */
json_object	*usage_messages(json_object *messages, size_t *text_bytes, struct mk_err *err);

/* Overage a customer may still run into: the plan's overage_limit minus
 * the current overage (a decimal string), never below 0; 0 without a plan. */
long	usage_overage_room(const struct settings_plan *plan, const char *overage);

/* The event id ("mk-gen-<key>") and ledger-debit key ("mk-gen-<key>-debit")
 * of a journal key; out holds USAGE_KEY_MAX. */
void	usage_event_id(const char *key, char *out);
void	usage_debit_key(const char *key, char *out);

/* ms since 1970 as ISO 8601 UTC with milliseconds ("2026-01-02T03:04:05.678Z"),
 * as Dodo's timestamps; out holds 32. */
void	usage_iso_ms(long long ms, char *out, size_t outlen);

/* An id (gen_ + 32 hex) -> the journal key prefix it names.  0 / -1. */
int	usage_id_prefix(const char *id, char *prefix, size_t prefixlen);

/*
 * One billed completion of messages (usage_messages' clean array, not
 * taken over) for customer_id (README "Usage billing").
 *  1. Admission: the clear sequence is noted, the balance is read from Dodo
 *     (fresh, every request) and the plan's overage room from
 *     customer_plan(); then ONE store transaction admits the hold
 *     (usage_hold) if balance + overage room - unsettled usage - live holds
 *     covers it, and records it.  Concurrent requests, of any number of
 *     processes, are admitted one after another against the same figures,
 *     so together they never pass the balance (+ overage limit).
 *  2. The model is asked with max_tokens.  A failure releases the hold:
 *     nothing is billed (its status is the model's, openai.h).
 *  3. The hold is settled to the real count (prompt + completion tokens)
 *     and the answer stored; the usage event joins the outbox, which
 *     ingests it in the background (usage_outbox_start).
 * client_key is the Idempotency-Key (NULL: none): with it a retry replays
 * the stored answer, a concurrent duplicate waits for the first, and the
 * same key with other messages or max_tokens is refused (409).
 * Returns 0 with out filled (settled, answer owned: store_usage_free), or
 * -1 with err: 402 the hold is not covered (nothing happened), 404 unknown
 * customer, 409 key reuse, 400/502/503/504 the model failed or the
 * payments service could not be read (nothing billed), 503 the store.
 */
int	usage_generate(const struct settings *s, const char *customer_id,
	    const char *client_key, json_object *messages, long max_tokens,
	    struct store_usage *out, struct mk_err *err);

/*
 * A row as the API shows it: {id, object "generation", status, text,
 * tokens_used, model, usage {prompt_tokens, completion_tokens,
 * total_tokens}, created_at, billing {hold, max_tokens, event_id, state,
 * billed_by, cleared}}.  Caller puts it.
 */
json_object	*usage_row_json(const struct store_usage *row);

/*
 * A meter deduction seen (a ledger entry or a credit.deducted /
 * credit.overage_charged webhook with reference_type "meter"): clear
 * amount tokens (a decimal string) of customer_id's usage, FIFO, once per
 * entry_id (store_usage_clear).  0 / -1.
 */
int	usage_meter_deduction(const struct settings *s, const char *customer_id,
	    const char *entry_id, const char *amount, struct mk_err *err);

/*
 * One pass of the outbox, as its threads run it: release dead holds and
 * clear usage never deducted (USAGE_CLEAR_WINDOW_SEC); ingest due events
 * in batches of at most DODO_INGEST_MAX with their stable ids and original
 * timestamps (an unknown outcome: the same ids again, with backoff); an
 * event older than USAGE_INGEST_MAX_AGE_SEC is no longer sent: once
 * USAGE_INGEST_CLOSED_SEC have passed, GET /events/{id} decides: found,
 * done; 404, a ledger debit under usage_debit_key (409: landed before);
 * and poll the ledger for meter entries of customers whose usage waits
 * for its deduction.  Returns outbox rows handled, or -1.
 */
int	usage_outbox_pass(const struct settings *s, struct mk_err *err);

/* Start settings->usage_outbox_threads threads running usage_outbox_pass()
 * every USAGE_OUTBOX_POLL_MS; stop and join them; wake one now.  0 / -1. */
int	usage_outbox_start(const struct settings *s);
void	usage_outbox_stop(void);
void	usage_outbox_wake(void);

#endif
