/* dodo.c: the Dodo Payments client (checkouts, customers, purchases, credit balances and ledger). */
#include <stdio.h>
#include <string.h>

#include <json-c/json.h>

#include "apikey.h"
#include "buf.h"
#include "err.h"
#include "log.h"
#include "settings.h"
#include "upstream.h"
#include "url.h"
#include "dodo.h"

#define DODO_PATH_MAX		1024	/* bytes: a path with two encoded ids and a query */
#define DODO_LEDGER_PAGE_MAX	100	/* Dodo's page_size maximum */
#define DODO_CODE_MAX		64	/* an error code we echo must be this short ... */
#define DODO_LOG_TEXT_MAX	200	/* ... and Dodo's message is cut here in logs */

#define DODO_JSON_FLAGS	(JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)

/* Perform one call against Dodo with our key (idempotency_key: a header, or NULL). */
static int
dodo_call_keyed(const struct settings *s, const char *method, const char *path,
    const char *body, const char *idempotency_key, int retry_safe,
    struct upstream_response *resp, struct mk_err *err)
{
	struct upstream_request req = {
		.method = method,
		.base_url = s->dodo_base_url,
		.path = path,
		.bearer = s->dodo_api_key,
		.idempotency_key = idempotency_key,
		.body = body,
		.retry_safe = retry_safe,
	};

	if (s->dodo_base_url == NULL || s->dodo_api_key == NULL) {
		log_error("dodo: DODO_PAYMENTS_API_KEY or DODO_PAYMENTS_BASE_URL is not set");
		return mk_fail(err, 500, "payments service not configured");
	}
	if (upstream_call(&req, resp, err) == -1) {
		int maybe = err != NULL ? err->maybe_done : 0;

		/* keep status and maybe_done, replace the text with ours */
		if (err != NULL && err->status == 504)
			mk_fail(err, 504, "payments service timed out");
		else
			mk_fail(err, 502, "payments service unavailable");
		if (err != NULL)
			err->maybe_done = maybe;
		return -1;
	}
	return 0;
}

static int
dodo_call(const struct settings *s, const char *method, const char *path, const char *body,
    int retry_safe, struct upstream_response *resp, struct mk_err *err)
{
	/* no header: ledger entries carry their idempotency key in the body */
	return dodo_call_keyed(s, method, path, body, NULL, retry_safe, resp, err);
}

/* The string member `key` of obj, or NULL if absent, null or not a scalar. */
static const char *
dodo_json_str(json_object *obj, const char *key)
{
	json_object *v;

	if (obj == NULL || !json_object_is_type(obj, json_type_object) ||
	    !json_object_object_get_ex(obj, key, &v) || v == NULL)
		return NULL;
	switch (json_object_get_type(v)) {
	case json_type_string:
	case json_type_int:	/* amounts are documented as strings; accept numbers too */
	case json_type_double:
		return json_object_get_string(v);
	default:
		return NULL;
	}
}

/* Copy member `key` into dst; absent/null gives "" unless required.  0 / -1. */
static int
dodo_copy(json_object *obj, const char *key, char *dst, size_t dstlen, int required)
{
	const char	*v = dodo_json_str(obj, key);
	int		 n;

	dst[0] = '\0';
	if (v == NULL)
		return required ? -1 : 0;
	n = snprintf(dst, dstlen, "%s", v);
	if (n < 0 || (size_t)n >= dstlen) {
		dst[0] = '\0';
		return -1;
	}
	return 0;
}

static int
dodo_unexpected(const char *what, struct mk_err *err)
{
	log_warn("dodo: %s: unexpected response body", what);
	return mk_fail(err, 502, "payments service unavailable");
}

/* An UPPER_SNAKE error code is safe to show a client; Dodo's message is not. */
static int
dodo_code_safe(const char *code)
{
	size_t	i;

	if (code == NULL || code[0] == '\0' || strlen(code) > DODO_CODE_MAX)
		return 0;
	for (i = 0; code[i] != '\0'; i++)
		if (!((code[i] >= 'A' && code[i] <= 'Z') || code[i] == '_' ||
		    (code[i] >= '0' && code[i] <= '9')))
			return 0;
	return 1;
}

/*
 * Map an HTTP answer that is not a success (see dodo.h): log Dodo's
 * {code, message}, give the client a short generic text.  `notfound` is the
 * text for a 404, or NULL to treat 404 like any other refusal.
 */
static int
dodo_fail_status(const char *what, const struct upstream_response *r, const char *notfound,
    struct mk_err *err)
{
	const char	*code = dodo_json_str(r->json, "code");
	const char	*message = dodo_json_str(r->json, "message");

	log_warn("dodo: %s: HTTP %ld %.*s: %.*s", what, r->status,
	    DODO_CODE_MAX, code != NULL ? code : "-",
	    DODO_LOG_TEXT_MAX, message != NULL ? message : "-");
	if (r->status == 404 && notfound != NULL)
		return mk_fail(err, 404, "%s", notfound);
	if (r->status == 401 || r->status == 403) {
		log_error("dodo: %s: our API key was refused (check DODO_PAYMENTS_API_KEY "
		    "matches DODO_PAYMENTS_BASE_URL's mode and has write access)", what);
		return mk_fail(err, 502, "payments service unavailable");
	}
	if (r->status >= 400 && r->status < 500 && r->status != 408 && r->status != 429) {
		if (dodo_code_safe(code))
			return mk_fail(err, 502, "payments service refused the request (%s)", code);
		return mk_fail(err, 502, "payments service refused the request");
	}
	return mk_fail(err, 502, "payments service unavailable");
}

static int
dodo_success(const struct upstream_response *r)
{
	return r->status >= 200 && r->status < 300;
}

int
dodo_create_checkout(const struct settings *s, const char *product_id,
    const char *customer_id, const char *email, const char *name,
    const char *return_url, const char *claim_binding, struct dodo_checkout *out,
    struct mk_err *err)
{
	struct upstream_response	 resp = { .json = NULL };
	json_object			*body = NULL, *cart, *item, *customer, *meta;
	const char			*text;
	int				 result = -1;

	memset(out, 0, sizeof *out);
	if (product_id == NULL || (customer_id == NULL) == (email == NULL)) {
		mk_fail(err, 500, "internal error");
		goto out;
	}
	if ((body = json_object_new_object()) == NULL ||
	    (cart = json_object_new_array()) == NULL)
		goto nomem;
	json_object_object_add(body, "product_cart", cart);
	if ((item = json_object_new_object()) == NULL)
		goto nomem;
	json_object_array_add(cart, item);
	json_object_object_add(item, "product_id", json_object_new_string(product_id));
	json_object_object_add(item, "quantity", json_object_new_int(1));
	if ((customer = json_object_new_object()) == NULL)
		goto nomem;
	json_object_object_add(body, "customer", customer);
	if (customer_id != NULL)
		json_object_object_add(customer, "customer_id", json_object_new_string(customer_id));
	else {
		json_object_object_add(customer, "email", json_object_new_string(email));
		if (name != NULL && name[0] != '\0')
			json_object_object_add(customer, "name", json_object_new_string(name));
	}
	if (return_url != NULL)
		json_object_object_add(body, "return_url", json_object_new_string(return_url));
	if (claim_binding != NULL) {
		if ((meta = json_object_new_object()) == NULL)
			goto nomem;
		json_object_object_add(body, "metadata", meta);
		json_object_object_add(meta, APIKEY_CLAIM_METADATA,
		    json_object_new_string(claim_binding));
	}
	if ((text = json_object_to_json_string_ext(body, DODO_JSON_FLAGS)) == NULL)
		goto nomem;

	/* not retried: Dodo has no idempotency for checkouts, a retry could make two */
	if (dodo_call(s, "POST", "/checkouts", text, 0, &resp, err) == -1)
		goto out;
	if (!dodo_success(&resp)) {
		dodo_fail_status("create checkout", &resp,
		    customer_id != NULL ? "unknown customer" : NULL, err);
		goto out;
	}
	if (dodo_copy(resp.json, "session_id", out->session_id, sizeof out->session_id, 1) == -1 ||
	    dodo_copy(resp.json, "checkout_url", out->checkout_url, sizeof out->checkout_url, 1) == -1) {
		dodo_unexpected("create checkout", err);
		goto out;
	}
	result = 0;
	goto out;
nomem:
	mk_fail(err, 500, "out of memory");
out:
	if (body != NULL)
		json_object_put(body);
	upstream_response_free(&resp);
	return result;
}

static int
dodo_need_entitlement(const struct settings *s, struct mk_err *err)
{
	if (s->credit_entitlement_id == NULL || s->credit_entitlement_id[0] == '\0') {
		log_error("dodo: CREDIT_ENTITLEMENT_ID is not set");
		return mk_fail(err, 500, "payments service not configured");
	}
	return 0;
}

/*
 * GET path; 0 when Dodo answered 2xx (resp->json may still be NULL: the
 * caller's parse reports that), -1 with err mapped from the status (what
 * names the call in logs, notfound is the 404 text).
 */
static int
dodo_get(const struct settings *s, const char *path, const char *what,
    const char *notfound, struct upstream_response *resp, struct mk_err *err)
{
	if (dodo_call(s, "GET", path, NULL, 1, resp, err) == -1)
		return -1;
	if (!dodo_success(resp)) {
		dodo_fail_status(what, resp, notfound, err);
		return -1;
	}
	return 0;
}

int
dodo_get_balance(const struct settings *s, const char *customer_id,
    struct dodo_balance *out, struct mk_err *err)
{
	struct upstream_response	resp = { .json = NULL };
	char				path[DODO_PATH_MAX];
	int				result = -1;

	memset(out, 0, sizeof *out);
	if (dodo_need_entitlement(s, err) == -1)
		goto out;
	if (url_path(path, sizeof path, "/credit-entitlements/{}/balances/{}",
	    s->credit_entitlement_id, customer_id) == -1) {
		mk_fail(err, 400, "customer_id too long");
		goto out;
	}
	if (dodo_get(s, path, "get balance", "unknown customer", &resp, err) == -1)
		goto out;
	if (dodo_copy(resp.json, "balance", out->balance, sizeof out->balance, 1) == -1 ||
	    dodo_copy(resp.json, "overage", out->overage, sizeof out->overage, 0) == -1 ||
	    dodo_copy(resp.json, "last_transaction_at", out->last_transaction_at,
	    sizeof out->last_transaction_at, 0) == -1) {
		dodo_unexpected("get balance", err);
		goto out;
	}
	if (out->overage[0] == '\0')
		snprintf(out->overage, sizeof out->overage, "0");
	result = 0;
out:
	upstream_response_free(&resp);
	return result;
}

/* A plain non-negative decimal: digits, optionally '.' and digits. */
static int
dodo_amount_valid(const char *a)
{
	size_t	i = 0, digits = 0;

	if (a == NULL || strlen(a) >= DODO_AMOUNT_MAX)
		return 0;
	for (; a[i] >= '0' && a[i] <= '9'; i++)
		digits++;
	if (digits == 0)
		return 0;
	if (a[i] == '.') {
		for (i++, digits = 0; a[i] >= '0' && a[i] <= '9'; i++)
			digits++;
		if (digits == 0)
			return 0;
	}
	return a[i] == '\0';
}

int
dodo_ledger_entry(const struct settings *s, const char *customer_id,
    enum dodo_entry_type type, const char *amount, const char *reason,
    const char *idempotency_key, const char *ref, struct dodo_ledger_result *out,
    struct mk_err *err)
{
	struct upstream_response	 resp = { .json = NULL };
	json_object			*body = NULL;
	const char			*text, *what;
	char				 path[DODO_PATH_MAX];
	int				 result = -1;

	memset(out, 0, sizeof *out);
	what = type == DODO_DEBIT ? "ledger debit" : "ledger credit";
	if (idempotency_key == NULL || idempotency_key[0] == '\0' || !dodo_amount_valid(amount)) {
		mk_fail(err, 500, "internal error");
		goto out;
	}
	if (dodo_need_entitlement(s, err) == -1)
		goto out;
	if (url_path(path, sizeof path, "/credit-entitlements/{}/balances/{}/ledger-entries",
	    s->credit_entitlement_id, customer_id) == -1) {
		mk_fail(err, 400, "customer_id too long");
		goto out;
	}
	if ((body = json_object_new_object()) == NULL) {
		mk_fail(err, 500, "out of memory");
		goto out;
	}
	json_object_object_add(body, "entry_type",
	    json_object_new_string(type == DODO_DEBIT ? "debit" : "credit"));
	json_object_object_add(body, "amount", json_object_new_string(amount));
	json_object_object_add(body, "reason", reason != NULL ? json_object_new_string(reason) : NULL);
	json_object_object_add(body, "idempotency_key", json_object_new_string(idempotency_key));
	if (ref != NULL) {
		json_object *meta = json_object_new_object();

		json_object_object_add(meta, "mailkit_ref", json_object_new_string(ref));
		json_object_object_add(body, "metadata", meta);
	}
	if ((text = json_object_to_json_string_ext(body, DODO_JSON_FLAGS)) == NULL) {
		mk_fail(err, 500, "out of memory");
		goto out;
	}

	/* retried safely: the idempotency key makes a repeat a 409, not a second entry */
	if (dodo_call(s, "POST", path, text, 1, &resp, err) == -1)
		goto out;
	out->earlier_maybe_done = resp.earlier_maybe_done;
	if (dodo_success(&resp)) {
		/*
		 * A 2xx is proof only with the entry in it: a proxy between us and
		 * Dodo can turn a lost answer into an empty 200.  Without the
		 * entry the outcome is unknown, and the same key resolves it.
		 */
		if (dodo_copy(resp.json, "id", out->entry_id, sizeof out->entry_id, 1) == -1 ||
		    out->entry_id[0] == '\0') {
			log_warn("dodo: %s: HTTP %ld without the entry: outcome unknown", what,
			    resp.status);
			mk_fail(err, 502, "payments service unavailable");
			if (err != NULL)
				err->maybe_done = 1;
			goto out;
		}
		if (dodo_copy(resp.json, "balance_after", out->balance_after,
		    sizeof out->balance_after, 0) == -1)
			out->balance_after[0] = '\0';
		out->outcome = DODO_LEDGER_APPLIED;
		result = 0;
	} else if (resp.status == 409) {
		out->outcome = DODO_LEDGER_DUPLICATE;
		result = 0;
	} else if (resp.status == 400 && type == DODO_DEBIT) {
		const char *code = dodo_json_str(resp.json, "code");

		log_info("dodo: %s refused with 400 (%.*s): treated as insufficient balance",
		    what, DODO_CODE_MAX, code != NULL ? code : "-");
		out->outcome = DODO_LEDGER_INSUFFICIENT;
		result = 0;
	} else {
		dodo_fail_status(what, &resp, "unknown customer", err);
		/* a 5xx may follow an entry applied before the failure */
		if (err != NULL && (resp.status >= 500 || resp.earlier_maybe_done))
			err->maybe_done = 1;
	}
out:
	if (body != NULL)
		json_object_put(body);
	upstream_response_free(&resp);
	return result;
}

/* Fill c from a Customer object (or the customer member of a purchase). */
static int
dodo_read_customer(json_object *obj, struct dodo_customer *c)
{
	if (dodo_copy(obj, "customer_id", c->customer_id, sizeof c->customer_id, 1) == -1 ||
	    dodo_copy(obj, "email", c->email, sizeof c->email, 0) == -1 ||
	    dodo_copy(obj, "name", c->name, sizeof c->name, 0) == -1)
		return -1;
	return 0;
}

int
dodo_get_customer(const struct settings *s, const char *customer_id,
    struct dodo_customer *out, struct mk_err *err)
{
	struct upstream_response	resp = { .json = NULL };
	char				path[DODO_PATH_MAX];
	int				result = -1;

	memset(out, 0, sizeof *out);
	if (url_path(path, sizeof path, "/customers/{}", customer_id) == -1) {
		mk_fail(err, 400, "customer_id too long");
		goto out;
	}
	if (dodo_get(s, path, "get customer", "unknown customer", &resp, err) == -1)
		goto out;
	if (dodo_read_customer(resp.json, out) == -1) {
		dodo_unexpected("get customer", err);
		goto out;
	}
	result = 0;
out:
	upstream_response_free(&resp);
	return result;
}

int
dodo_get_purchase(const struct settings *s, enum dodo_purchase_kind kind,
    const char *id, struct dodo_customer *customer, char *status, size_t statuslen,
    char *binding, size_t bindinglen, struct mk_err *err)
{
	struct upstream_response	 resp = { .json = NULL };
	json_object			*cust = NULL, *meta = NULL;
	const char			*what, *notfound;
	char				 path[DODO_PATH_MAX];
	int				 result = -1;

	memset(customer, 0, sizeof *customer);
	if (statuslen > 0)
		status[0] = '\0';
	if (bindinglen > 0)
		binding[0] = '\0';
	if (kind == DODO_SUBSCRIPTION) {
		what = "get subscription";
		notfound = "unknown subscription";
	} else {
		what = "get payment";
		notfound = "unknown payment";
	}
	if (url_path(path, sizeof path, kind == DODO_SUBSCRIPTION ? "/subscriptions/{}" :
	    "/payments/{}", id) == -1) {
		mk_fail(err, 400, "id too long");
		goto out;
	}
	if (dodo_get(s, path, what, notfound, &resp, err) == -1)
		goto out;
	if (resp.json == NULL || !json_object_object_get_ex(resp.json, "customer", &cust) ||
	    dodo_read_customer(cust, customer) == -1 ||
	    dodo_copy(resp.json, "status", status, statuslen, 0) == -1) {
		dodo_unexpected(what, err);
		goto out;
	}
	/* a binding that does not fit is no binding: the key is then mailed */
	if (bindinglen > 0 && json_object_object_get_ex(resp.json, "metadata", &meta) &&
	    json_object_is_type(meta, json_type_object) &&
	    dodo_copy(meta, APIKEY_CLAIM_METADATA, binding, bindinglen, 0) == -1)
		binding[0] = '\0';
	result = 0;
out:
	upstream_response_free(&resp);
	return result;
}

/*
 * GET path and hand over the parsed answer when it is an object holding
 * an array `member` (NULL: any object).  what names the call in logs;
 * notfound is the 404's message.
 */
static json_object *
dodo_get_checked(const struct settings *s, const char *path, const char *what,
    const char *notfound, const char *member, struct mk_err *err)
{
	struct upstream_response	 resp = { .json = NULL };
	json_object			*v, *result = NULL;

	if (dodo_get(s, path, what, notfound, &resp, err) == -1)
		goto out;
	if (resp.json == NULL || !json_object_is_type(resp.json, json_type_object) ||
	    (member != NULL && (!json_object_object_get_ex(resp.json, member, &v) ||
	    !json_object_is_type(v, json_type_array)))) {
		dodo_unexpected(what, err);
		goto out;
	}
	result = resp.json;
	resp.json = NULL;	/* ownership passes to the caller */
out:
	upstream_response_free(&resp);
	return result;
}

struct json_object *
dodo_list_ledger(const struct settings *s, const char *customer_id, int page_size,
    int page_number, struct mk_err *err)
{
	char	path[DODO_PATH_MAX];
	size_t	n;
	int	len;

	if (page_size < 1)
		page_size = 1;
	if (page_size > DODO_LEDGER_PAGE_MAX)
		page_size = DODO_LEDGER_PAGE_MAX;
	if (dodo_need_entitlement(s, err) == -1)
		return NULL;
	if (url_path(path, sizeof path, "/credit-entitlements/{}/balances/{}/ledger",
	    s->credit_entitlement_id, customer_id) == -1) {
		mk_fail(err, 400, "customer_id too long");
		return NULL;
	}
	n = strlen(path);
	if (page_number < 0)
		page_number = 0;
	len = snprintf(path + n, sizeof path - n, "?page_size=%d&page_number=%d", page_size,
	    page_number);
	if (len < 0 || (size_t)len >= sizeof path - n) {
		mk_fail(err, 400, "customer_id too long");
		return NULL;
	}
	return dodo_get_checked(s, path, "list ledger", "unknown customer", "items", err);
}

struct json_object *
dodo_list_catalog(const struct settings *s, const char *what, int page_number,
    struct mk_err *err)
{
	char	path[DODO_PATH_MAX];
	int	len;

	len = snprintf(path, sizeof path, "/%s?page_size=%d&page_number=%d", what,
	    DODO_LEDGER_PAGE_MAX, page_number < 0 ? 0 : page_number);
	if (len < 0 || (size_t)len >= sizeof path) {
		mk_fail(err, 500, "internal error");
		return NULL;
	}
	return dodo_get_checked(s, path, what, "not found", "items", err);
}

struct json_object *
dodo_list_webhooks(const struct settings *s, const char *iterator, struct mk_err *err)
{
	struct buf	 b;
	json_object	*result = NULL;

	buf_init(&b, DODO_PATH_MAX);
	if (buf_puts(&b, "/webhooks?limit=100") == -1 ||
	    (iterator != NULL && iterator[0] != '\0' &&
	    (buf_puts(&b, "&iterator=") == -1 || url_encode_component(&b, iterator) == -1))) {
		mk_fail(err, 502, "payments service sent an unusable page iterator");
		goto out;
	}
	result = dodo_get_checked(s, b.data, "list webhooks", "not found", "data", err);
out:
	buf_free(&b);
	return result;
}

struct json_object *
dodo_get_object(const struct settings *s, const char *path, struct mk_err *err)
{
	return dodo_get_checked(s, path, path, "not found", NULL, err);
}

struct json_object *
dodo_create(const struct settings *s, const char *path, struct json_object *body,
    const char *idempotency_key, struct mk_err *err)
{
	struct upstream_response	 resp = { .json = NULL };
	json_object			*result = NULL;
	const char			*text;

	if (idempotency_key == NULL || idempotency_key[0] == '\0') {
		mk_fail(err, 500, "internal error");
		goto out;
	}
	if ((text = json_object_to_json_string_ext(body, DODO_JSON_FLAGS)) == NULL) {
		mk_fail(err, 500, "out of memory");
		goto out;
	}
	if (dodo_call_keyed(s, "POST", path, text, idempotency_key, 0, &resp, err) == -1)
		goto out;
	if (!dodo_success(&resp)) {
		dodo_fail_status(path, &resp, NULL, err);
		goto out;
	}
	if (resp.json == NULL || !json_object_is_type(resp.json, json_type_object)) {
		dodo_unexpected(path, err);
		goto out;
	}
	result = resp.json;
	resp.json = NULL;	/* ownership passes to the caller */
out:
	upstream_response_free(&resp);
	return result;
}

int
dodo_plan_active(const struct settings *s, const char *email, const char *product_id,
    int *active, struct mk_err *err)
{
	json_object	*page = NULL, *customers, *subs, *items;
	struct buf	 b;
	size_t		 n;
	int		 result = -1;

	*active = 0;
	buf_init(&b, DODO_PATH_MAX);
	if (buf_puts(&b, "/customers?page_size=") == -1 ||
	    buf_printf(&b, "%d&email=", DODO_PLAN_CUSTOMERS_MAX) == -1 ||
	    url_encode_component(&b, email) == -1) {
		mk_fail(err, 400, "email too long");
		goto out;
	}
	if ((page = dodo_get_checked(s, b.data, "list customers", "not found", "items",
	    err)) == NULL)
		goto out;
	json_object_object_get_ex(page, "items", &customers);
	n = json_object_array_length(customers);
	for (size_t i = 0; i < n && !*active; i++) {
		const char *cus = dodo_json_str(json_object_array_get_idx(customers, i),
		    "customer_id");

		if (cus == NULL)
			continue;
		buf_reset(&b);
		if (buf_puts(&b, "/subscriptions?status=active&page_size=1&customer_id=") == -1 ||
		    url_encode_component(&b, cus) == -1 || buf_puts(&b, "&product_id=") == -1 ||
		    url_encode_component(&b, product_id) == -1) {
			mk_fail(err, 502, "payments service sent an unusable customer id");
			goto out;
		}
		if ((subs = dodo_get_checked(s, b.data, "list subscriptions", "not found",
		    "items", err)) == NULL)
			goto out;
		json_object_object_get_ex(subs, "items", &items);
		*active = json_object_array_length(items) > 0;
		json_object_put(subs);
	}
	result = 0;
out:
	json_object_put(page);
	buf_free(&b);
	return result;
}

int
dodo_ingest_events(const struct settings *s, struct json_object *events, long *ingested,
    struct mk_err *err)
{
	struct upstream_response	 resp = { .json = NULL };
	json_object			*body, *v;
	const char			*text;
	int				 result = -1;

	*ingested = 0;
	if (json_object_array_length(events) > DODO_INGEST_MAX ||
	    (body = json_object_new_object()) == NULL)
		return mk_fail(err, 500, "internal error");
	json_object_object_add(body, "events", json_object_get(events));
	if ((text = json_object_to_json_string_ext(body, DODO_JSON_FLAGS)) == NULL) {
		mk_fail(err, 500, "out of memory");
		goto out;
	}
	/* retried safely: a repeated event_id is ignored (api-facts A.7) */
	if (dodo_call(s, "POST", "/events/ingest", text, 1, &resp, err) == -1)
		goto out;
	if (dodo_success(&resp)) {
		if ((v = json_object_is_type(resp.json, json_type_object) &&
		    json_object_object_get_ex(resp.json, "ingested_count", &v) ? v : NULL) ==
		    NULL || !json_object_is_type(v, json_type_int)) {
			/* the outcome is unknown: the same ids resolve it */
			dodo_unexpected("ingest events", err);
			if (err != NULL)
				err->maybe_done = 1;
			goto out;
		}
		*ingested = (long)json_object_get_int64(v);
		result = 0;
	} else if (resp.status == 400 || resp.status == 422) {
		dodo_fail_status("ingest events", &resp, NULL, err);
		mk_fail(err, 400, "usage events refused");
		if (err != NULL)
			err->maybe_done = resp.earlier_maybe_done;
	} else {
		dodo_fail_status("ingest events", &resp, NULL, err);
		if (err != NULL)
			err->maybe_done = 1;
	}
out:
	json_object_put(body);
	upstream_response_free(&resp);
	return result;
}

int
dodo_get_event(const struct settings *s, const char *event_id, int *found,
    struct mk_err *err)
{
	struct upstream_response	resp = { .json = NULL };
	char				path[DODO_PATH_MAX];
	const char			*id;
	int				result = -1;

	*found = 0;
	if (url_path(path, sizeof path, "/events/{}", event_id) == -1)
		return mk_fail(err, 500, "event id too long");
	if (dodo_call(s, "GET", path, NULL, 1, &resp, err) == -1)
		goto out;
	if (resp.status == 404 && json_object_is_type(resp.json, json_type_object)) {
		/* Dodo's own 404 (a JSON error): never ingested.  A bare 404 from
		 * something in between proves nothing. */
		result = 0;
	} else if (dodo_success(&resp)) {
		/* proof only with the event in it (a proxy can turn an answer into an empty 200) */
		if ((id = dodo_json_str(resp.json, "event_id")) == NULL || strcmp(id, event_id) != 0) {
			dodo_unexpected("get event", err);
			goto out;
		}
		*found = 1;
		result = 0;
	} else
		dodo_fail_status("get event", &resp, NULL, err);
out:
	upstream_response_free(&resp);
	return result;
}
