/* settings.h: configuration from a dotenv file and the environment, checked once at start. */
#ifndef MAILKIT_SETTINGS_H
#define MAILKIT_SETTINGS_H

#include <stddef.h>

/*
 * Names are the tutorial's .env names plus the ones the official SDKs read,
 * so a user can drop in the tutorial's .env unchanged.  Sources, lowest
 * precedence first: compiled-in defaults, the dotenv file, the environment.
 * The dotenv file is $MAILKIT_ENV_FILE if set (it must then exist), else
 * the first readable of: mailkit.env beside the running program,
 * ~/mailkit.env ($HOME, else the account's home directory), and
 * SYSCONFDIR/mailkit/mailkit.env; with none, the environment alone.
 */
#define SETTINGS_PLANS_MAX	8	/* plans one product sells */
#define SETTINGS_PLAN_NAME_MAX	32	/* a plan's name, NUL included */

#define SETTINGS_PRODUCT_MAILKIT	"mailkit"	/* emails, one credit per recipient */
#define SETTINGS_PRODUCT_NEURALAPI	"neuralapi"	/* AI tokens, one credit per token */

/*
 * A plan a customer subscribes to (README "Plans").  PLANS names them, in
 * the order the page lists them; plan NAME reads <NAME>_PLAN_PRODUCT_ID,
 * <NAME>_PLAN_CREDITS and <NAME>_PLAN_OVERAGE_LIMIT (NAME upper-cased, '-'
 * as '_').  Without PLANS, MailKit sells one plan, "standard", from the
 * tutorial's PLAN_PRODUCT_ID, PLAN_CREDITS and PLAN_OVERAGE_LIMIT, and
 * NeuralAPI sells "starter" (10,000,000 tokens, blocked at zero) and "pro"
 * (40,000,000 tokens, 10,000,000 of overage) from STARTER_PLAN_* and
 * PRO_PLAN_*, the tutorial's names.
 */
struct settings_plan {
	char	 name[SETTINGS_PLAN_NAME_MAX];	/* [a-z0-9_-]: POST /checkout/subscribe's plan */
	char	*product_id;	/* the Dodo product (subscription); NULL if not set */
	long	 credits;	/* credits issued per billing cycle */
	long	 overage_limit;	/* credits a customer may run past zero (billed at the
				   next invoice); 0: blocked at zero */
};

struct settings {
	/* the product sold */
	char	*product;		/* MAILKIT_PRODUCT: SETTINGS_PRODUCT_MAILKIT or _NEURALAPI */
	char	*plan_list;		/* PLANS: plan names, comma-separated ("" = the default) */
	struct settings_plan plans[SETTINGS_PLANS_MAX];	/* plans[0] is the default plan */
	size_t	 nplans;
	long	 topup_credits;		/* TOPUP_CREDITS: what one top-up pack grants (the page) */
	/* Dodo Payments */
	char	*dodo_api_key;		/* DODO_PAYMENTS_API_KEY (secret) */
	char	*dodo_base_url;		/* DODO_PAYMENTS_BASE_URL */
	char	*webhook_key;		/* DODO_WEBHOOK_KEY or DODO_PAYMENTS_WEBHOOK_KEY (secret, whsec_...) */
	char	*credit_entitlement_id;	/* CREDIT_ENTITLEMENT_ID */
	char	*plan_product_id;	/* the default plan's product id: plans[0].product_id */
	char	*topup_product_id;	/* TOPUP_PRODUCT_ID */
	/* mail */
	char	*mail_provider;		/* MAIL_PROVIDER: resend, postmark, sendgrid, smtp */
	char	*resend_api_key;	/* RESEND_API_KEY (secret) */
	char	*resend_base_url;	/* RESEND_BASE_URL */
	char	*mail_from;		/* MAIL_FROM, "Name <addr>" or "addr" */
	char	*postmark_server_token;	/* POSTMARK_SERVER_TOKEN (secret) */
	char	*postmark_base_url;	/* POSTMARK_BASE_URL */
	char	*sendgrid_api_key;	/* SENDGRID_API_KEY (secret) */
	char	*sendgrid_base_url;	/* SENDGRID_BASE_URL */
	char	*smtp_url;		/* SMTP_URL, smtp://host:port/helo or smtps://... */
	char	*smtp_username;		/* SMTP_USERNAME, NULL: no AUTH */
	char	*smtp_password;		/* SMTP_PASSWORD (secret) */
	char	*smtp_tls;		/* SMTP_TLS, "starttls" (required) or "none" (loopback) */
	char	*smtp_ca_file;		/* SMTP_CA_FILE, CA bundle for the relay; "" = libcurl's */
	/* the AI model (NeuralAPI) */
	char	*openai_api_key;	/* OPENAI_API_KEY (secret) */
	char	*openai_base_url;	/* OPENAI_BASE_URL, the name the official SDK reads */
	char	*openai_model;		/* OPENAI_MODEL, the tutorial's gpt-5-mini by default */
	char	*usage_event_name;	/* USAGE_EVENT_NAME, the meter's event (api.tokens_used) */
	/* the app */
	char	*base_url;		/* BASE_URL, where the page is served */
	long	 port;			/* PORT */
	char	*log_file;		/* MAILKIT_LOG_FILE, "" = stderr */
	long	 threads;		/* MAILKIT_THREADS, request threads per process at most
					   (started on demand, server.c) */
	long	 request_timeout_ms;	/* REQUEST_TIMEOUT_MS: a request's upstream calls,
					   retries and backoff included, end by then (504) */
	long	 store_busy_ms;		/* STORE_BUSY_TIMEOUT_MS: longest wait for the
					   database's write lock before 503 + Retry-After */
	long	 max_body;		/* MAX_BODY_BYTES, request body ceiling (413 above) */
	char	*db_path;		/* MAILKIT_DB, SQLite file shared by the workers */
	long	 plan_credits;		/* the default plan's credits per cycle: plans[0].credits */
	long	 low_balance_percent;	/* LOW_BALANCE_PERCENT, Dodo's threshold setting */
	/* outbound HTTP */
	long	 connect_timeout_ms;	/* UPSTREAM_CONNECT_TIMEOUT_MS */
	long	 timeout_ms;		/* UPSTREAM_TIMEOUT_MS, per attempt */
	long	 max_retries;		/* UPSTREAM_MAX_RETRIES, for requests safe to repeat */
	char	*ca_file;		/* UPSTREAM_CA_FILE, CA bundle; "" = libcurl's default */
	long	 allow_insecure_upstream; /* ALLOW_INSECURE_UPSTREAM: 1 allows plain http to
					   a non-loopback upstream (never in production) */
	/* who may act for a customer (auth.h) */
	char	*auth_mode;		/* MAILKIT_AUTH, SETTINGS_AUTH_API_KEY or _CUSTOMER_ID */
	int	 auth_trusts_customer_id; /* 1 in the tutorial mode "customer_id" */
	long	 rate_limit;		/* RATE_LIMIT_PER_MINUTE per API key; 0 = off */
	long	 checkout_rate_limit;	/* CHECKOUT_RATE_LIMIT_PER_MINUTE per client address
					   and route, unauthenticated checkout routes; 0 = off */
	long	 claims_per_email;	/* CLAIMS_PER_EMAIL: pending claims (checkouts) per
					   buyer email; 0 = no cap */
	/* sends accepted for later (billing.h) */
	long	 delivery_threads;	/* DELIVERY_THREADS per send.fcgi process; 0 = none */
	long	 void_grace_sec;	/* SEND_VOID_GRACE_SEC: a send answered 5xx may be taken
					   up by the client's retry this long before it is voided */
	/* AI requests (usage.h) */
	long	 generate_max_tokens;	/* GENERATE_MAX_TOKENS: max_tokens when a request names none */
	long	 generate_max_tokens_cap; /* GENERATE_MAX_TOKENS_CAP: the most a request may name */
	long	 usage_outbox_threads;	/* USAGE_OUTBOX_THREADS per generate.fcgi; 0 = none */
	/* where the settings came from, for the start-up warnings */
	char	*env_file;		/* the dotenv file read, NULL if none */
	unsigned env_file_mode;		/* its permission bits (st_mode & 07777) */
};

#define SETTINGS_AUTH_API_KEY		"api_key"	/* Authorization: Bearer <key> (default) */
#define SETTINGS_AUTH_CUSTOMER_ID	"customer_id"	/* the tutorial: trust the request's id */


/* What a program needs beyond the always-checked settings; OR them together. */
#define SETTINGS_NEED_DODO	0x01	/* API key (+ base URL) */
#define SETTINGS_NEED_CREDITS	0x02	/* credit entitlement id */
#define SETTINGS_NEED_PRODUCTS	0x04	/* plan and top-up product ids */
#define SETTINGS_NEED_MAIL	0x08	/* the mail provider's key and the sender */
#define SETTINGS_NEED_WEBHOOK	0x10	/* the webhook signing secret */
#define SETTINGS_NEED_AI	0x20	/* the OpenAI key */

/*
 * Load and check every setting.  On failure returns -1 with a message in
 * err that names the offending key (and the file and line for a malformed
 * dotenv line) but never its value.  On success the strings in *s are owned
 * by *s until settings_free().
 */
int	settings_load(struct settings *s, unsigned need, char *err, size_t errlen);

/*
 * The same, with every source explicit, for tests: `path` is the dotenv
 * file (NULL for none) and `env` a NULL-terminated "KEY=value" array used in
 * place of the process environment.
 */
int	settings_load_from(struct settings *s, const char *path, char *const *env,
	    unsigned need, char *err, size_t errlen);

/*
 * Parse dotenv text: `KEY=value`, optional `export `, `#` comments, blank
 * lines, 'single' (literal) and "double" quoted values (\n \" \\ escapes),
 * and ` #` trailing comments after unquoted values.  Calls cb for each pair;
 * a non-zero return from cb stops parsing and is returned.  Returns 0, or -1
 * with "line N: reason" in err.
 */
int	settings_parse_dotenv(const char *text, size_t len,
	    int (*cb)(const char *key, const char *value, void *arg), void *arg,
	    char *err, size_t errlen);

/*
 * 1 when url (http:// or https://) may be used for an upstream: https, or
 * plain http to a loopback host (127.0.0.0/8, [::1], localhost), or any
 * http when allow_insecure is set.  settings_load applies it to
 * DODO_PAYMENTS_BASE_URL and the mail providers' base URLs.
 */
int	settings_upstream_url_ok(const char *url, int allow_insecure);

/*
 * 1 when the host of authority ("host[:port][/...]", after the scheme's
 * "://", user info skipped) is loopback: 127.0.0.0/8 as a dotted quad,
 * [::1] or localhost.
 */
int	settings_loopback_host(const char *authority);

/*
 * Log what an administrator must know about the loaded settings: the
 * settings file readable by group or others, and the tutorial auth mode.
 * Called by server_main and mailkit-admin once the log is open.
 */
void	settings_log_warnings(const struct settings *s);

/* The plan named name (NULL or "": the default plan, plans[0]), or NULL. */
const struct settings_plan *settings_plan_find(const struct settings *s, const char *name);

/* The plan sold as product_id, or NULL. */
const struct settings_plan *settings_plan_by_product(const struct settings *s,
	    const char *product_id);

/* 1 when the settings sell NeuralAPI (MAILKIT_PRODUCT=neuralapi). */
int	settings_is_neuralapi(const struct settings *s);

/* 1 if the named setting is a secret that must never be logged. */
int	settings_is_secret(const char *name);

void	settings_free(struct settings *s);

#endif
