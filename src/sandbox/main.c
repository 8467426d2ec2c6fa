/* main.c: sandbox.fcgi, the offline Dodo Payments + Resend emulation: settings and routes. */
#include <sys/random.h>

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "log.h"
#include "sandbox.h"
#include "settings.h"

#define SANDBOX_DB_DEFAULT		"sandbox.db"	/* relative to the working directory */
/*
 * Request threads: each call in flight holds one, also while it sleeps
 * SANDBOX_LATENCY_MS or a stall, so that 256 concurrent calls of 100 ms
 * take 100 ms, not 256 / threads times that.  An idle thread only waits
 * in accept(); one that served calls keeps its SQLite handle.
 */
#define SANDBOX_THREADS_DEFAULT		256
#define SANDBOX_THREADS_MAX		1024	/* server.c's SERVER_THREADS_MAX */
/* Their stacks: the handlers, SQLite and json-c need well under 100 KiB
 * (sanitizer builds several times more); the 8 MiB default of 1024
 * threads is 8 GiB of address space. */
#define SANDBOX_THREAD_STACK		(512 * 1024)
#define SANDBOX_LATENCY_MAX_MS		10000	/* SANDBOX_LATENCY_MS: simulated round trips */
#define SANDBOX_PRICE_MAX		100000000	/* cents: $1,000,000 */
#define SANDBOX_METER_INTERVAL_DEFAULT	60000	/* Dodo's meter runs about once a minute */
#define SANDBOX_METER_INTERVAL_MAX	3600000
#define SANDBOX_RANDOM_KEY_BYTES	32	/* an unverifiable key when none is configured */

struct sandbox_config sandbox;
static struct settings settings;

/* Routes below the /sandbox mount. */
static const struct route routes[] = {
	/* pages */
	{ "GET", "/", pages_dashboard },
	{ "GET", "/outbox", pages_outbox },
	{ "GET", "/checkout/{}", pages_checkout },
	{ "POST", "/checkout/{}", pages_checkout_pay },
	{ "POST", "/customers/{}/adjust", pages_adjust },
	/* Dodo Payments */
	{ "POST", "/dodo/checkouts", dodo_api_checkout_create },
	{ "GET", "/dodo/checkouts/{}", dodo_api_checkout_get },
	{ "GET", "/dodo/customers", dodo_api_customer_list },
	{ "GET", "/dodo/customers/{}", dodo_api_customer_get },
	{ "GET", "/dodo/customers/{}/credit-entitlements", dodo_api_customer_entitlements },
	{ "GET", "/dodo/subscriptions", dodo_api_subscription_list },
	{ "GET", "/dodo/subscriptions/{}", dodo_api_subscription_get },
	{ "GET", "/dodo/payments/{}", dodo_api_payment_get },
	{ "POST", "/dodo/credit-entitlements", catalog_entitlement_create },
	{ "GET", "/dodo/credit-entitlements", catalog_entitlement_list },
	{ "GET", "/dodo/credit-entitlements/{}", catalog_entitlement_get },
	{ "POST", "/dodo/products", catalog_product_create },
	{ "GET", "/dodo/products", catalog_product_list },
	{ "GET", "/dodo/products/{}", catalog_product_get },
	{ "POST", "/dodo/webhooks", catalog_webhook_create },
	{ "GET", "/dodo/webhooks", catalog_webhook_list },
	{ "GET", "/dodo/webhooks/{}", catalog_webhook_get },
	{ "GET", "/dodo/webhooks/{}/secret", catalog_webhook_secret },
	{ "GET", "/dodo/credit-entitlements/{}/balances/{}", dodo_api_balance_get },
	{ "POST", "/dodo/credit-entitlements/{}/balances/{}/ledger-entries", dodo_api_ledger_post },
	{ "GET", "/dodo/credit-entitlements/{}/balances/{}/ledger", dodo_api_ledger_list },
	{ "GET", "/dodo/credit-entitlements/{}/balances/{}/grants", dodo_api_grants_list },
	{ "POST", "/dodo/events/ingest", usage_ingest },
	{ "GET", "/dodo/events", usage_event_list },
	{ "GET", "/dodo/events/{}", usage_event_get },
	{ "POST", "/dodo/meters", catalog_meter_create },
	{ "GET", "/dodo/meters", catalog_meter_list },
	{ "GET", "/dodo/meters/{}", catalog_meter_get },
	/* Resend */
	{ "POST", "/resend/emails", resend_api_send },
	{ "GET", "/resend/emails/{}", resend_api_get },
	{ "POST", "/sendgrid/v3/mail/send", sendgrid_api_send },
	{ "POST", "/postmark/email", postmark_api_send },
	/* OpenAI */
	{ "POST", "/openai/v1/chat/completions", openai_api_chat },
	{ "GET", "/openai/v1/models", openai_api_models_list },
	{ "GET", "/openai/v1/models/{}", openai_api_model_get },
	/* tests and operators */
	{ "GET", "/admin/faults", faults_list },
	{ "POST", "/admin/faults", faults_post },
	{ "DELETE", "/admin/faults", faults_delete },
	{ "GET", "/admin/emails", admin_emails },
	{ "GET", "/admin/webhooks", admin_webhooks },
	{ "GET", "/admin/stats", admin_stats },
	{ "POST", "/admin/reset", admin_reset },
	{ "POST", "/admin/meter/run", meter_admin_run },
	{ "GET", "/admin/clock", meter_admin_clock_get },
	{ "POST", "/admin/clock", meter_admin_clock_post },
};

static int sandbox_init(const struct settings *s, char *err, size_t errlen);

/* One process (see faults.c) of SANDBOX_THREADS request threads, which
 * sandbox_init sets: MAILKIT_THREADS is for MailKit's own programs. */
static struct app sandbox_app = {
	.name = "sandbox.fcgi",
	.routes = routes,
	.nroutes = sizeof(routes) / sizeof(routes[0]),
	.mount = SANDBOX_MOUNT,
	.json_only = 0,		/* the pages post HTML forms */
	.loopback_only = 1,	/* it shows every email and lets anyone pay: README */
	.init = sandbox_init,
	.thread_stack = SANDBOX_THREAD_STACK,
};

static const char *
sandbox_env(const char *name, const char *def)
{
	const char	*v = getenv(name);

	return v != NULL && *v != '\0' ? v : def;
}

/* A whole number setting within [min, max].  0 / -1 with err naming the key. */
static int
sandbox_env_long(const char *name, long def, long min, long max, long *out, char *err,
    size_t errlen)
{
	const char	*v = getenv(name);
	char		*end;
	long		 n;

	*out = def;
	if (v == NULL || *v == '\0')
		return 0;
	errno = 0;
	n = strtol(v, &end, 10);
	if (errno != 0 || end == v || *end != '\0' || n < min || n > max) {
		snprintf(err, errlen, "%s must be a whole number in %ld..%ld", name, min, max);
		return -1;
	}
	*out = n;
	return 0;
}

static const char *
sandbox_setting(const char *value, const char *def)
{
	return value != NULL && *value != '\0' ? value : def;
}

/* What each product's catalogue defaults to (README.md, "Settings"). */
static const struct sandbox_product_default {
	int		 neuralapi;
	const char	*product_name, *unit, *entitlement_name, *entitlement_id;
	const char	*topup_product_id;
	long		 topup_price, topup_expiry_days;	/* -1: SANDBOX_CREDIT_EXPIRY_DAYS */
} sandbox_products[] = {
	{ 0, "MailKit", "emails", "Email Credits", "cde_sandbox_email", "pdt_sandbox_topup",
	  900, -1 },
	{ 1, "NeuralAPI", "tokens", "Token Credits", "cde_sandbox_tokens",
	  "pdt_sandbox_token_topup", 1900, 365 },
};

/* Plan prices when SANDBOX_<NAME>_PLAN_PRICE is not set, in cents a month. */
static const struct { const char *name; long price; } sandbox_plan_prices[] = {
	{ "standard", 1900 }, { "starter", 2900 }, { "pro", 9900 },
};

/* The settings' plans, each with its product id (or the sandbox's own) and price. */
static int
sandbox_plans_init(const struct settings *s, char *err, size_t errlen)
{
	struct sandbox_plan	*p;
	char			 key[96];
	long			 def;
	size_t			 i, j;

	sandbox.nplans = 0;
	for (i = 0; i < s->nplans && i < SETTINGS_PLANS_MAX; i++) {
		p = &sandbox.plans[sandbox.nplans++];
		p->name = s->plans[i].name;
		p->credits = s->plans[i].credits;
		p->overage_limit = s->plans[i].overage_limit;
		/* MailKit's one plan keeps the sandbox's historic product id */
		if (strcmp(p->name, "standard") == 0)
			snprintf(p->product_buf, sizeof(p->product_buf), "pdt_sandbox_plan");
		else
			snprintf(p->product_buf, sizeof(p->product_buf), "pdt_sandbox_%s", p->name);
		p->product_id = sandbox_setting(s->plans[i].product_id, p->product_buf);
		def = 1900;
		for (j = 0; j < sizeof(sandbox_plan_prices) / sizeof(sandbox_plan_prices[0]); j++)
			if (strcmp(sandbox_plan_prices[j].name, p->name) == 0)
				def = sandbox_plan_prices[j].price;
		if (strcmp(p->name, "standard") == 0 &&
		    sandbox_env_long("SANDBOX_PLAN_PRICE", def, 0, SANDBOX_PRICE_MAX, &def, err,
		    errlen) == -1)
			return -1;
		snprintf(key, sizeof(key), "SANDBOX_%s_PLAN_PRICE", p->name);
		for (j = 0; key[j] != '\0'; j++)
			key[j] = key[j] == '-' ? '_' : (char)toupper((unsigned char)key[j]);
		if (sandbox_env_long(key, def, 0, SANDBOX_PRICE_MAX, &p->price, err, errlen) == -1)
			return -1;
	}
	if (sandbox.nplans == 0) {
		snprintf(err, errlen, "the settings name no plan");
		return -1;
	}
	return 0;
}

/* The product sold (MAILKIT_PRODUCT): names, unit, catalogue, top-up. */
static int
sandbox_catalogue_init(const struct settings *s, char *err, size_t errlen)
{
	const struct sandbox_product_default *d = &sandbox_products[settings_is_neuralapi(s)];
	long	expiry;

	sandbox.neuralapi = d->neuralapi;
	sandbox.product_name = d->product_name;
	sandbox.unit = d->unit;
	sandbox.entitlement_name = d->entitlement_name;
	sandbox.entitlement_id = sandbox_setting(s->credit_entitlement_id, d->entitlement_id);
	sandbox.topup_product_id = sandbox_setting(s->topup_product_id, d->topup_product_id);
	sandbox.topup_credits = s->topup_credits;
	sandbox.usage_event_name = sandbox_setting(s->usage_event_name, "api.tokens_used");
	if (sandbox_env_long("SANDBOX_CREDIT_EXPIRY_DAYS", 30, 0, 3650, &sandbox.expiry_days,
	    err, errlen) == -1)
		return -1;
	expiry = d->topup_expiry_days >= 0 ? d->topup_expiry_days : sandbox.expiry_days;
	if (sandbox_env_long("SANDBOX_TOPUP_PRICE", d->topup_price, 0, SANDBOX_PRICE_MAX,
	    &sandbox.topup_price, err, errlen) == -1 ||
	    sandbox_env_long("SANDBOX_TOPUP_EXPIRY_DAYS", expiry, 0, 3650,
	    &sandbox.topup_expiry_days, err, errlen) == -1 ||
	    sandbox_env_long("SANDBOX_ROLLOVER_PERCENT", 0, 0, 100, &sandbox.rollover_percent,
	    err, errlen) == -1 ||
	    sandbox_env_long("SANDBOX_ROLLOVER_MAX_COUNT", 1, 1, 100, &sandbox.rollover_max,
	    err, errlen) == -1 ||
	    sandbox_env_long("SANDBOX_METER_INTERVAL_MS", SANDBOX_METER_INTERVAL_DEFAULT, 1,
	    SANDBOX_METER_INTERVAL_MAX, &sandbox.meter_interval_ms, err, errlen) == -1)
		return -1;
	return sandbox_plans_init(s, err, errlen);
}

/* Runs once the common settings are loaded, before the loop starts. */
static int
sandbox_init(const struct settings *s, char *err, size_t errlen)
{
	sandbox.db_path = sandbox_env("SANDBOX_DB", SANDBOX_DB_DEFAULT);
	sandbox.webhook_url = sandbox_env("SANDBOX_WEBHOOK_URL", "");
	if (sandbox_catalogue_init(s, err, errlen) == -1 ||
	    sandbox_env_long("SANDBOX_LOW_BALANCE_PERCENT", 20, 0, 100, &sandbox.low_percent,
	    err, errlen) == -1 ||
	    sandbox_env_long("SANDBOX_WEBHOOK_RETRY_DIVISOR", 1, 1, 1000000,
	    &sandbox.retry_divisor, err, errlen) == -1 ||
	    sandbox_env_long("SANDBOX_LATENCY_MS", 0, 0, SANDBOX_LATENCY_MAX_MS,
	    &sandbox.latency_ms, err, errlen) == -1 ||
	    sandbox_env_long("SANDBOX_THREADS", SANDBOX_THREADS_DEFAULT, 1, SANDBOX_THREADS_MAX,
	    &sandbox.threads, err, errlen) == -1)
		return -1;
	sandbox_app.threads = (int)sandbox.threads;

	if (s->webhook_key != NULL && *s->webhook_key != '\0') {
		if (whsig_key_from_secret(s->webhook_key, &sandbox.webhook_key) == -1) {
			snprintf(err, errlen, "DODO_WEBHOOK_KEY is not a whsec_<base64> secret");
			return -1;
		}
	} else {
		if (getrandom(sandbox.webhook_key.bytes, SANDBOX_RANDOM_KEY_BYTES, 0) !=
		    SANDBOX_RANDOM_KEY_BYTES) {
			snprintf(err, errlen, "no randomness for a webhook key");
			return -1;
		}
		sandbox.webhook_key.len = SANDBOX_RANDOM_KEY_BYTES;
		log_warn("DODO_WEBHOOK_KEY is not set: webhooks are signed with a random key "
		    "nobody can verify");
	}
	if (guard_init() == -1) {
		snprintf(err, errlen, "cannot derive the form token key");
		return -1;
	}
	if (state_db() == NULL) {
		snprintf(err, errlen, "cannot open SANDBOX_DB %s", sandbox.db_path);
		return -1;
	}
	if (state_clock_load(state_db()) == -1 || catalog_meter_builtin(state_db()) == -1) {
		snprintf(err, errlen, "cannot read the test clock from SANDBOX_DB %s",
		    sandbox.db_path);
		return -1;
	}
	if (fault_calls_load(state_db()) == -1) {
		snprintf(err, errlen, "cannot read the call counts from SANDBOX_DB %s",
		    sandbox.db_path);
		return -1;
	}
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		snprintf(err, errlen, "curl_global_init failed");
		return -1;
	}
	if (getenv("MAILKIT_CHECK_ONLY") == NULL && deliver_start() == -1) {
		snprintf(err, errlen, "cannot start the webhook delivery thread");
		return -1;
	}
	if (getenv("MAILKIT_CHECK_ONLY") == NULL && late_start() == -1) {
		snprintf(err, errlen, "cannot start the thread of late faults");
		return -1;
	}
	if (getenv("MAILKIT_CHECK_ONLY") == NULL && meter_start() == -1) {
		snprintf(err, errlen, "cannot start the meter thread");
		return -1;
	}
	log_info("sandbox: %s, db %s, webhooks to %s, entitlement %s, %zu plans (default %s),"
	    " top-up %s, %ld ms added to each API call", sandbox.product_name,
	    sandbox.db_path, sandbox.webhook_url[0] != '\0' ? sandbox.webhook_url :
	    "(nowhere: recorded only)",
	    sandbox.entitlement_id, sandbox.nplans, sandbox.plans[0].product_id,
	    sandbox.topup_product_id, sandbox.latency_ms);
	return 0;
}

int
main(void)
{
	int	rc;

	rc = server_main(&sandbox_app, &settings, 0);
	meter_stop();
	late_stop();
	deliver_stop();
	fault_calls_save();
	state_close();
	return rc;
}
