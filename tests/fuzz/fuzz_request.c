/*
 * fuzz_request.c: libFuzzer target for request bodies.
 *
 * The input is a request body, as server.c hands it to a handler (an owned,
 * NUL-terminated copy with its length).  It goes through request_json() and
 * then fields_read() with the field specs of POST /send (src/send.c) and of
 * POST /checkout/subscribe and /checkout/topup (src/checkout.c).  Besides
 * "never crashes", every value fields_read() accepts is checked against the
 * promise of its type.
 *
 * An input whose first byte is 'P' is instead a FastCGI parameter set, as
 * the web server hands it to server.c: NUL-separated NAME=VALUE pairs
 * (REMOTE_ADDR, HTTP_AUTHORIZATION, CONTENT_LENGTH, HTTP_IDEMPOTENCY_KEY,
 * ...) for request_copy(), whose result must keep its promises: every field
 * NUL-terminated inside its buffer, no blank or padded Idempotency-Key, a
 * path that starts with '/'; and CONTENT_LENGTH, if among them, through
 * request_content_length(), never accepted above the ceiling.
 */
#include <ctype.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fields.h"
#include "server.h"
#include "valid.h"

/* Copies of the programs' specs (their tables are local to the handlers):
 * keep them in step with src/send.c and src/checkout.c. */
#define SEND_SUBJECT_MAX	998		/* src/send.c SUBJECT_MAX */
#define SEND_CONTENT_MAX	(512 * 1024)	/* src/send.c CONTENT_MAX */
#define CHECKOUT_NAME_MAX	200		/* src/checkout.c NAME_MAX_BYTES */

int	LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const struct field_spec send_specs[] = {
	{ "customer_id", FIELD_CUSTOMER_ID, 0, CUSTOMER_ID_MAX },
	{ "to", FIELD_EMAIL_LIST, 1, EMAIL_MAX },
	{ "subject", FIELD_HEADER_TEXT, 1, SEND_SUBJECT_MAX },
	{ "html", FIELD_TEXT, 0, SEND_CONTENT_MAX },
	{ "text", FIELD_TEXT, 0, SEND_CONTENT_MAX },
};

static const struct field_spec subscribe_specs[] = {
	{ "email", FIELD_EMAIL, 1, EMAIL_MAX },
	{ "name", FIELD_HEADER_TEXT, 0, CHECKOUT_NAME_MAX },
};

static const struct field_spec topup_specs[] = {
	{ "customer_id", FIELD_CUSTOMER_ID, 0, CUSTOMER_ID_MAX },
};

/* Abort unless each accepted value keeps its type's promise. */
static void
fuzz_check(const struct field_spec *specs, size_t n, const struct field_value *v)
{
	for (size_t i = 0; i < n; i++) {
		const struct field_spec *sp = &specs[i];

		if (v[i].str == NULL) {
			if (sp->required)
				abort();
			continue;
		}
		if (v[i].nlist < 1 || v[i].nlist > MAIL_MAX_RECIPIENTS)
			abort();
		for (size_t j = 0; j < v[i].nlist; j++) {
			const char *s = v[i].list[j];
			size_t len = strlen(s);

			if (sp->max_len > 0 && len > sp->max_len)
				abort();
			switch (sp->type) {
			case FIELD_TEXT:
				break;
			case FIELD_HEADER_TEXT:
				if (strpbrk(s, "\r\n") != NULL)
					abort();
				break;
			case FIELD_EMAIL:
			case FIELD_EMAIL_LIST:
				if (!valid_email(s) || strpbrk(s, "\r\n\t <>\",;") != NULL)
					abort();
				break;
			case FIELD_CUSTOMER_ID:
				if (!valid_customer_id(s) || len > CUSTOMER_ID_MAX ||
				    strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
				    "0123456789_-") != len)
					abort();
				break;
			}
		}
		if (strlen(v[i].str) != v[i].len)
			abort();	/* NUL inside a value that was accepted */
	}
}

static void
fuzz_fields(json_object *root, const struct field_spec *specs, size_t n)
{
	struct field_value	v[8];
	struct mk_err		err;

	memset(&err, 0, sizeof err);
	if (fields_read(root, specs, n, v, &err) == 0)
		fuzz_check(specs, n, v);
	else if (err.status != 400 || err.msg[0] == '\0')
		abort();	/* a refusal is always a 400 that says why */
}

#define FUZZ_PARAMS_MAX	64	/* pairs per input */
#define FUZZ_MAX_BODY	4096	/* a body ceiling like the tests' MAX_BODY_BYTES */

static void
fuzz_terminated(const char *field, size_t size)
{
	if (memchr(field, '\0', size) == NULL)
		abort();
}

/* data: "P" then NUL-separated NAME=VALUE pairs; checks request_copy(). */
static void
fuzz_params(const uint8_t *data, size_t size)
{
	struct request	*req;
	struct mk_err	 err;
	char		*copy, *envp[FUZZ_PARAMS_MAX + 1], *p, *end;
	size_t		 n = 0;

	if ((req = calloc(1, sizeof *req)) == NULL || (copy = malloc(size + 1)) == NULL)
		abort();
	memcpy(copy, data, size);
	copy[size] = '\0';
	for (p = copy + 1, end = copy + size; p < end && n < FUZZ_PARAMS_MAX;
	    p += strlen(p) + 1)
		if (strchr(p, '=') != NULL)
			envp[n++] = p;
	envp[n] = NULL;
	memset(&err, 0, sizeof err);
	if (request_copy(req, envp, (size & 1) ? "/sandbox" : NULL, &err) == 0) {
		size_t klen = strlen(req->idempotency_key);

		fuzz_terminated(req->method, sizeof req->method);
		fuzz_terminated(req->path, sizeof req->path);
		fuzz_terminated(req->query, sizeof req->query);
		fuzz_terminated(req->authorization, sizeof req->authorization);
		fuzz_terminated(req->idempotency_key, sizeof req->idempotency_key);
		fuzz_terminated(req->remote_addr, sizeof req->remote_addr);
		fuzz_terminated(req->origin, sizeof req->origin);
		if (req->path[0] != '/')
			abort();
		if (klen > 0 && (isspace((unsigned char)req->idempotency_key[0]) ||
		    isspace((unsigned char)req->idempotency_key[klen - 1])))
			abort();
	} else if (err.status < 400 || err.status > 499 || err.msg[0] == '\0')
		abort();
	for (size_t i = 0; i < n; i++) {
		size_t	want;
		int	known;

		if (strncmp(envp[i], "CONTENT_LENGTH=", 15) != 0)
			continue;
		known = request_content_length(envp[i] + 15, FUZZ_MAX_BODY, &want, &err);
		if ((known == 1 && want > FUZZ_MAX_BODY) || (known == 0 && envp[i][15] != '\0') ||
		    (known == -1 && err.status != 400 && err.status != 413))
			abort();
	}
	free(copy);
	free(req);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct request	*req;
	struct mk_err	 err;
	json_object	*root;

	if (size > 0 && data[0] == 'P') {
		fuzz_params(data, size);
		return 0;
	}
	/* the struct is large (header copies): on the heap, like the loop's */
	if ((req = calloc(1, sizeof *req)) == NULL)
		abort();
	if ((req->body = malloc(size + 1)) == NULL)
		abort();
	memcpy(req->body, data, size);
	req->body[size] = '\0';
	req->body_len = size;
	memset(&err, 0, sizeof err);

	if ((root = request_json(req, &err)) != NULL) {
		if (!json_object_is_type(root, json_type_object))
			abort();
		fuzz_fields(root, send_specs, sizeof send_specs / sizeof send_specs[0]);
		fuzz_fields(root, subscribe_specs,
		    sizeof subscribe_specs / sizeof subscribe_specs[0]);
		fuzz_fields(root, topup_specs, sizeof topup_specs / sizeof topup_specs[0]);
		json_object_put(root);
	} else if (err.status != 400 || err.msg[0] == '\0')
		abort();
	free(req->body);
	free(req);
	return 0;
}
