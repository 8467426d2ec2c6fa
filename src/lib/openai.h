/* openai.h: the AI model client — one non-streaming chat completion over upstream.h. */
#ifndef MAILKIT_OPENAI_H
#define MAILKIT_OPENAI_H

#include <json-c/json.h>

#include "err.h"

struct settings;

#define OPENAI_MODEL_MAX	128		/* a model name as the answer names it */
#define OPENAI_TEXT_MAX		(256 * 1024)	/* bytes of answer text kept (UPSTREAM_RESPONSE_MAX
						   bounds the whole reply anyway) */

/* What one completion returned.  text is owned: openai_result_free(). */
struct openai_result {
	char	*text;			/* choices[0].message.content ("" for none) */
	char	 model[OPENAI_MODEL_MAX];	/* the model that answered */
	long	 prompt_tokens;		/* usage as the model counted it */
	long	 completion_tokens;
	long	 total_tokens;
	char	 finish_reason[32];	/* "stop", "length", ... ("" if absent) */
};

/*
 * POST {OPENAI_BASE_URL}/chat/completions {model: OPENAI_MODEL, messages,
 * max_completion_tokens: max_tokens} (messages: [{role, content}], the
 * caller's, not taken over)
 * with Authorization: Bearer OPENAI_API_KEY (never logged).  The model can
 * never use more than max_tokens completion tokens: it is told so.
 *
 * 408/429/5xx and connection failures are retried as upstream.h retries
 * (Retry-After honoured).  A completion is not idempotent at OpenAI, but a
 * retry is safe for billing: only the answer returned is billed.
 *
 * Returns 0 with out filled (usage required: an answer without usage is
 * refused, since it could not be billed), or -1 with err and nothing to
 * bill: 400 the model refused the request as invalid (OpenAI's error code
 * named, e.g. context_length_exceeded), 503 the model is rate limited or
 * overloaded (429 after retries), 502 any other failure (5xx, our key
 * refused, an answer that does not parse), 504 timeout.
 */
int	openai_chat(const struct settings *s, json_object *messages, long max_tokens,
	    struct openai_result *out, struct mk_err *err);

/* Release out->text; safe on a zeroed struct. */
void	openai_result_free(struct openai_result *out);

#endif
