/* settings.c: dotenv file + environment -> struct settings, checked once at start. */
#include <sys/stat.h>

#include <ctype.h>
#include <limits.h>
#include <pwd.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "log.h"
#include "mail.h"
#include "settings.h"
#include "valid.h"
#include "whsig.h"

#ifndef SYSCONFDIR
#define SYSCONFDIR "/etc"
#endif
#define SETTINGS_DEFAULT_FILE	SYSCONFDIR "/mailkit/mailkit.env"
#define SETTINGS_FILE_NAME	"mailkit.env"	/* beside the program, or in the home directory */
#define SETTINGS_FILE_MAX	(256 * 1024)	/* a dotenv file is a few hundred bytes */
#define SETTINGS_VALUE_MAX	4096		/* longest accepted value */
#define SETTINGS_LIST_MAX	1024		/* the missing or malformed settings, named */
#define SETTINGS_EXTRA_MAX	64		/* <NAME>_PLAN_* settings kept while loading */
#define SETTINGS_CREDITS_MAX	1000000000000L	/* credits per cycle, top-up or overage */

extern char **environ;

enum setting_type {
	SET_TEXT,	/* printable, no spaces */
	SET_PHRASE,	/* printable, spaces allowed */
	SET_ID,		/* [A-Za-z0-9_-]: safe in an upstream path */
	SET_URL,	/* http:// or https://, trailing '/' removed */
	SET_WHSEC,	/* Standard Webhooks secret */
	SET_FROM,	/* "addr" or "Name <addr>" */
	SET_PATH,	/* file path; "" allowed */
	SET_LONG,	/* decimal within [min, max] */
};

struct setting_def {
	const char		*name;
	const char		*alias;		/* second accepted name, or NULL */
	enum setting_type	 type;
	size_t			 offset;
	const char		*def;		/* NULL: no default */
	long			 min, max;
	unsigned		 need;		/* required when the program needs any of these */
	int			 secret;
};

#define S(field)	offsetof(struct settings, field)

static const struct setting_def setting_defs[] = {
	{ "MAILKIT_PRODUCT", NULL, SET_ID, S(product), SETTINGS_PRODUCT_MAILKIT, 0, 0, 0, 0 },
	{ "PLANS", NULL, SET_PATH, S(plan_list), "", 0, 0, 0, 0 },
	{ "OPENAI_API_KEY", NULL, SET_TEXT, S(openai_api_key), NULL, 0, 0, SETTINGS_NEED_AI, 1 },
	{ "OPENAI_BASE_URL", NULL, SET_URL, S(openai_base_url), "https://api.openai.com/v1",
	    0, 0, 0, 0 },
	{ "OPENAI_MODEL", NULL, SET_TEXT, S(openai_model), "gpt-5-mini", 0, 0, 0, 0 },
	{ "USAGE_EVENT_NAME", NULL, SET_TEXT, S(usage_event_name), "api.tokens_used", 0, 0,
	    0, 0 },
	{ "DODO_PAYMENTS_API_KEY", NULL, SET_TEXT, S(dodo_api_key), NULL, 0, 0,
	    SETTINGS_NEED_DODO, 1 },
	{ "DODO_PAYMENTS_BASE_URL", NULL, SET_URL, S(dodo_base_url),
	    "https://test.dodopayments.com", 0, 0, 0, 0 },
	{ "DODO_WEBHOOK_KEY", "DODO_PAYMENTS_WEBHOOK_KEY", SET_WHSEC, S(webhook_key), NULL,
	    0, 0, SETTINGS_NEED_WEBHOOK, 1 },
	{ "CREDIT_ENTITLEMENT_ID", NULL, SET_ID, S(credit_entitlement_id), NULL, 0, 0,
	    SETTINGS_NEED_CREDITS, 0 },
	{ "TOPUP_PRODUCT_ID", NULL, SET_ID, S(topup_product_id), NULL, 0, 0,
	    SETTINGS_NEED_PRODUCTS, 0 },
	{ "MAIL_PROVIDER", NULL, SET_ID, S(mail_provider), "resend", 0, 0, 0, 0 },
	{ "RESEND_API_KEY", NULL, SET_TEXT, S(resend_api_key), NULL, 0, 0, 0, 1 },
	{ "RESEND_BASE_URL", NULL, SET_URL, S(resend_base_url), "https://api.resend.com",
	    0, 0, 0, 0 },
	{ "POSTMARK_SERVER_TOKEN", NULL, SET_TEXT, S(postmark_server_token), NULL, 0, 0, 0, 1 },
	{ "POSTMARK_BASE_URL", NULL, SET_URL, S(postmark_base_url), "https://api.postmarkapp.com",
	    0, 0, 0, 0 },
	{ "SENDGRID_API_KEY", NULL, SET_TEXT, S(sendgrid_api_key), NULL, 0, 0, 0, 1 },
	{ "SENDGRID_BASE_URL", NULL, SET_URL, S(sendgrid_base_url), "https://api.sendgrid.com",
	    0, 0, 0, 0 },
	{ "SMTP_URL", NULL, SET_TEXT, S(smtp_url), NULL, 0, 0, 0, 0 },
	{ "SMTP_USERNAME", NULL, SET_PHRASE, S(smtp_username), NULL, 0, 0, 0, 0 },
	{ "SMTP_PASSWORD", NULL, SET_PHRASE, S(smtp_password), NULL, 0, 0, 0, 1 },
	{ "SMTP_TLS", NULL, SET_ID, S(smtp_tls), "starttls", 0, 0, 0, 0 },
	{ "SMTP_CA_FILE", NULL, SET_PATH, S(smtp_ca_file), "", 0, 0, 0, 0 },
	{ "MAIL_FROM", NULL, SET_FROM, S(mail_from), "MailKit <onboarding@resend.dev>",
	    0, 0, 0, 0 },
	{ "BASE_URL", NULL, SET_URL, S(base_url), "http://localhost:8080", 0, 0, 0, 0 },
	{ "PORT", NULL, SET_LONG, S(port), "8080", 1, 65535, 0, 0 },
	{ "MAILKIT_LOG_FILE", NULL, SET_PATH, S(log_file), "", 0, 0, 0, 0 },
	{ "MAILKIT_THREADS", NULL, SET_LONG, S(threads), "512", 1, 1024, 0, 0 },
	{ "REQUEST_TIMEOUT_MS", NULL, SET_LONG, S(request_timeout_ms), "10000", 100, 600000,
	    0, 0 },
	{ "STORE_BUSY_TIMEOUT_MS", NULL, SET_LONG, S(store_busy_ms), "1000", 1, 60000, 0, 0 },
	{ "MAX_BODY_BYTES", NULL, SET_LONG, S(max_body), "1048576", 1024,
	    64L * 1024 * 1024, 0, 0 },
	{ "MAILKIT_DB", NULL, SET_PATH, S(db_path), LOCALSTATEDIR "/lib/mailkit/mailkit.db",
	    0, 0, 0, 0 },
	{ "TOPUP_CREDITS", NULL, SET_LONG, S(topup_credits), NULL, 1, SETTINGS_CREDITS_MAX,
	    0, 0 },
	{ "LOW_BALANCE_PERCENT", NULL, SET_LONG, S(low_balance_percent), "20", 0, 100,
	    0, 0 },
	{ "UPSTREAM_CONNECT_TIMEOUT_MS", NULL, SET_LONG, S(connect_timeout_ms), "3000",
	    50, 60000, 0, 0 },
	{ "UPSTREAM_TIMEOUT_MS", NULL, SET_LONG, S(timeout_ms), "10000", 100, 120000, 0, 0 },
	{ "UPSTREAM_MAX_RETRIES", NULL, SET_LONG, S(max_retries), "2", 0, 10, 0, 0 },
	{ "UPSTREAM_CA_FILE", NULL, SET_PATH, S(ca_file), "", 0, 0, 0, 0 },
	{ "ALLOW_INSECURE_UPSTREAM", NULL, SET_LONG, S(allow_insecure_upstream), "0", 0, 1,
	    0, 0 },
	{ "MAILKIT_AUTH", NULL, SET_ID, S(auth_mode), SETTINGS_AUTH_API_KEY, 0, 0, 0, 0 },
	{ "RATE_LIMIT_PER_MINUTE", NULL, SET_LONG, S(rate_limit), "600", 0, 1000000L, 0, 0 },
	{ "CHECKOUT_RATE_LIMIT_PER_MINUTE", NULL, SET_LONG, S(checkout_rate_limit), "30", 0,
	    1000000L, 0, 0 },
	{ "CLAIMS_PER_EMAIL", NULL, SET_LONG, S(claims_per_email), "5", 0, 1000000L, 0, 0 },
	{ "DELIVERY_THREADS", NULL, SET_LONG, S(delivery_threads), "2", 0, 16, 0, 0 },
	{ "SEND_VOID_GRACE_SEC", NULL, SET_LONG, S(void_grace_sec), "30", 0, 3600, 0, 0 },
	{ "GENERATE_MAX_TOKENS", NULL, SET_LONG, S(generate_max_tokens), "1024", 1, 1000000L, 0, 0 },
	{ "GENERATE_MAX_TOKENS_CAP", NULL, SET_LONG, S(generate_max_tokens_cap), "16384", 1,
	    1000000L, 0, 0 },
	{ "USAGE_OUTBOX_THREADS", NULL, SET_LONG, S(usage_outbox_threads), "1", 0, 4, 0, 0 },
};

#define NSETTINGS (sizeof setting_defs / sizeof setting_defs[0])

/* Where each value came from while loading; values are owned copies. */
struct staging {
	char	*value[NSETTINGS];
	int	 from_alias[NSETTINGS];
	char	*extra_key[SETTINGS_EXTRA_MAX];	/* plan settings: names are the plans' */
	char	*extra_value[SETTINGS_EXTRA_MAX];
	size_t	 nextra;
	unsigned mode;		/* the file's permission bits */
};

/* The settings of one plan, after its key prefix ("" or "PRO_"). */
static const char *const plan_suffixes[] = {
	"PLAN_PRODUCT_ID", "PLAN_CREDITS", "PLAN_OVERAGE_LIMIT",
};

static int
settings_fail(char *err, size_t errlen, const char *fmt, const char *a, const char *b)
{
	snprintf(err, errlen, fmt, a, b);
	return -1;
}

static const struct setting_def *
settings_def(const char *name, int *is_alias)
{
	for (size_t i = 0; i < NSETTINGS; i++) {
		if (strcmp(setting_defs[i].name, name) == 0) {
			*is_alias = 0;
			return &setting_defs[i];
		}
		if (setting_defs[i].alias != NULL && strcmp(setting_defs[i].alias, name) == 0) {
			*is_alias = 1;
			return &setting_defs[i];
		}
	}
	return NULL;
}

int
settings_is_secret(const char *name)
{
	int				 alias;
	const struct setting_def	*d = settings_def(name, &alias);

	return d != NULL && d->secret;
}

/* 1 if key is a plan's setting: [PREFIX_]PLAN_PRODUCT_ID, ..._CREDITS, ..._OVERAGE_LIMIT. */
static int
settings_plan_key(const char *key)
{
	size_t	klen = strlen(key);

	for (size_t i = 0; i < sizeof plan_suffixes / sizeof plan_suffixes[0]; i++) {
		size_t slen = strlen(plan_suffixes[i]);

		if (klen >= slen && strcmp(key + klen - slen, plan_suffixes[i]) == 0 &&
		    (klen == slen || key[klen - slen - 1] == '_'))
			return 1;
	}
	return 0;
}

/* Keep a plan's setting (the plan names are known only once PLANS is read). */
static int
settings_stage_extra(struct staging *st, const char *key, const char *value)
{
	char	*k, *v;
	size_t	 i;

	if (!settings_plan_key(key))
		return 0;	/* unknown keys belong to other tools: ignored on purpose */
	for (i = 0; i < st->nextra; i++)
		if (strcmp(st->extra_key[i], key) == 0)
			break;
	if (i == SETTINGS_EXTRA_MAX)
		return 0;	/* more than any plan list can use: PLANS names the error */
	if ((v = strdup(value)) == NULL)
		return -1;
	if (i < st->nextra) {
		free(st->extra_value[i]);
		st->extra_value[i] = v;
		return 0;
	}
	if ((k = strdup(key)) == NULL) {
		free(v);
		return -1;
	}
	st->extra_key[i] = k;
	st->extra_value[i] = v;
	st->nextra++;
	return 0;
}

/* A plan setting's raw value, the environment's before the file's, or NULL. */
static const char *
settings_extra(const struct staging *env, const struct staging *file, const char *key)
{
	const struct staging *src[2] = { env, file };

	for (int k = 0; k < 2; k++)
		for (size_t i = 0; i < src[k]->nextra; i++)
			if (strcmp(src[k]->extra_key[i], key) == 0)
				return src[k]->extra_value[i];
	return NULL;
}

/* Store one raw value; the canonical name beats its alias from the same source. */
static int
settings_stage(const char *key, const char *value, void *arg)
{
	struct staging			*st = arg;
	const struct setting_def	*d;
	int				 alias;
	size_t				 i;
	char				*copy;

	if ((d = settings_def(key, &alias)) == NULL)
		return settings_stage_extra(st, key, value);
	i = d - setting_defs;
	if (alias && st->value[i] != NULL && !st->from_alias[i])
		return 0;
	if ((copy = strdup(value)) == NULL)
		return -1;
	free(st->value[i]);
	st->value[i] = copy;
	st->from_alias[i] = alias;
	return 0;
}

int
settings_parse_dotenv(const char *text, size_t len,
    int (*cb)(const char *, const char *, void *), void *arg, char *err, size_t errlen)
{
	char		 key[128], value[SETTINGS_VALUE_MAX];
	const char	*p = text, *end = text + len;
	int		 lineno = 0, rc;

	while (p < end) {
		const char	*eol = memchr(p, '\n', end - p);
		const char	*q, *lend = eol ? eol : end;
		size_t		 k = 0, v = 0;

		lineno++;
		if (lend > p && lend[-1] == '\r')
			lend--;
		for (q = p; q < lend && (*q == ' ' || *q == '\t'); q++)
			;
		if (q == lend || *q == '#')
			goto next;
		if (lend - q > 7 && strncmp(q, "export", 6) == 0 && (q[6] == ' ' || q[6] == '\t'))
			for (q += 6; q < lend && (*q == ' ' || *q == '\t'); q++)
				;
		while (q < lend && (isalnum((unsigned char)*q) || *q == '_')) {
			if (k + 1 >= sizeof key)
				goto bad_key;
			key[k++] = *q++;
		}
		key[k] = '\0';
		while (q < lend && (*q == ' ' || *q == '\t'))
			q++;
		if (k == 0 || isdigit((unsigned char)key[0]) || q == lend || *q != '=')
			goto bad_key;
		for (q++; q < lend && (*q == ' ' || *q == '\t'); q++)
			;
		if (q < lend && (*q == '"' || *q == '\'')) {
			char quote = *q++;

			for (; q < lend && *q != quote; q++) {
				char c = *q;

				if (quote == '"' && c == '\\' && q + 1 < lend) {
					c = *++q;
					if (c == 'n')
						c = '\n';
					else if (c == 't')
						c = '\t';
					else if (c == 'r')
						c = '\r';
				}
				if (v + 1 >= sizeof value)
					goto too_long;
				value[v++] = c;
			}
			if (q == lend) {
				snprintf(err, errlen, "line %d: unterminated quoted value for %s",
				    lineno, key);
				return -1;
			}
			for (q++; q < lend && (*q == ' ' || *q == '\t'); q++)
				;
			if (q < lend && *q != '#') {
				snprintf(err, errlen, "line %d: text after the quoted value of %s",
				    lineno, key);
				return -1;
			}
		} else {
			const char *vend = lend;

			/* " #" starts a comment in an unquoted value */
			for (const char *c = q; c < lend; c++)
				if (*c == '#' && c > q && (c[-1] == ' ' || c[-1] == '\t')) {
					vend = c;
					break;
				}
			while (vend > q && (vend[-1] == ' ' || vend[-1] == '\t'))
				vend--;
			if ((size_t)(vend - q) >= sizeof value)
				goto too_long;
			memcpy(value, q, vend - q);
			v = vend - q;
		}
		value[v] = '\0';
		if ((rc = cb(key, value, arg)) != 0)
			return rc;
next:
		p = eol ? eol + 1 : end;
		continue;
bad_key:
		snprintf(err, errlen, "line %d: expected KEY=value", lineno);
		return -1;
too_long:
		snprintf(err, errlen, "line %d: value of %s is longer than %d bytes", lineno,
		    key, SETTINGS_VALUE_MAX);
		return -1;
	}
	return 0;
}

static int
settings_read_file(const char *path, struct staging *st, char *err, size_t errlen)
{
	FILE	*f;
	char	*text;
	size_t	 n;
	char	 why[200];
	int	 rc;

	struct stat sb;

	if ((f = fopen(path, "r")) == NULL)
		return settings_fail(err, errlen, "cannot open settings file %s: %s", path,
		    strerror(errno));
	st->mode = fstat(fileno(f), &sb) == 0 ? (unsigned)(sb.st_mode & 07777) : 0;
	if ((text = malloc(SETTINGS_FILE_MAX + 1)) == NULL) {
		fclose(f);
		return settings_fail(err, errlen, "%s%s: out of memory", path, "");
	}
	n = fread(text, 1, SETTINGS_FILE_MAX + 1, f);
	fclose(f);
	if (n > SETTINGS_FILE_MAX) {
		free(text);
		return settings_fail(err, errlen, "settings file %s is larger than %s", path,
		    "256 KiB");
	}
	rc = settings_parse_dotenv(text, n, settings_stage, st, why, sizeof why);
	free(text);
	if (rc != 0)
		return settings_fail(err, errlen, "%s: %s", path, rc == -1 ? why : "out of memory");
	return 0;
}

/* The tutorial's .env ships placeholders; starting with them fails later and obscurely. */
static int
settings_placeholder(const char *v)
{
	return strncmp(v, "your_", 5) == 0 || strstr(v, "xxxxxxxx") != NULL;
}

static int
settings_check_from(const char *v)
{
	const char	*lt = strrchr(v, '<');
	char		 addr[EMAIL_MAX + 1];
	size_t		 n;

	if (!valid_header_text(v, strlen(v)))
		return 0;
	if (lt == NULL)
		return valid_email(v);
	n = strlen(lt + 1);
	if (n < 2 || lt[n] != '>' || n - 1 > EMAIL_MAX)
		return 0;
	memcpy(addr, lt + 1, n - 1);
	addr[n - 1] = '\0';
	return valid_email(addr);
}

int
settings_loopback_host(const char *authority)
{
	const char	*host = authority, *end;
	char		 h[256];
	size_t		 n;

	if ((end = strchr(host, '@')) != NULL && end < host + strcspn(host, "/"))
		host = end + 1;		/* user:pass@ is not the host */
	if (*host == '[')
		end = strchr(host, ']') != NULL ? strchr(host, ']') + 1 : host + strlen(host);
	else
		end = host + strcspn(host, ":/");
	if ((n = (size_t)(end - host)) == 0 || n >= sizeof h)
		return 0;
	memcpy(h, host, n);
	h[n] = '\0';
	if (strcasecmp(h, "localhost") == 0 || strcmp(h, "[::1]") == 0)
		return 1;
	/* 127.0.0.0/8 written as a dotted quad */
	if (strncmp(h, "127.", 4) == 0) {
		int dots = 0;

		for (const char *p = h; *p != '\0'; p++) {
			if (*p == '.')
				dots++;
			else if (!isdigit((unsigned char)*p))
				return 0;
		}
		return dots == 3;
	}
	return 0;
}

int
settings_upstream_url_ok(const char *url, int allow_insecure)
{
	if (strncmp(url, "https://", 8) == 0)
		return 1;
	if (strncmp(url, "http://", 7) != 0)
		return 0;
	return allow_insecure || settings_loopback_host(url + 7);
}

/* Rules across several settings: auth mode, plain-http upstreams, the CA file. */
static int
settings_check_security(struct settings *s, char *err, size_t errlen)
{
	static const struct { const char *name; size_t offset; } upstreams[] = {
		{ "DODO_PAYMENTS_BASE_URL", S(dodo_base_url) },
		{ "RESEND_BASE_URL", S(resend_base_url) },
		{ "SENDGRID_BASE_URL", S(sendgrid_base_url) },
		{ "POSTMARK_BASE_URL", S(postmark_base_url) },
		{ "OPENAI_BASE_URL", S(openai_base_url) },
	};

	if (strcmp(s->auth_mode, SETTINGS_AUTH_API_KEY) == 0)
		s->auth_trusts_customer_id = 0;
	else if (strcmp(s->auth_mode, SETTINGS_AUTH_CUSTOMER_ID) == 0)
		s->auth_trusts_customer_id = 1;
	else {
		snprintf(err, errlen, "MAILKIT_AUTH must be %s or %s", SETTINGS_AUTH_API_KEY,
		    SETTINGS_AUTH_CUSTOMER_ID);
		return -1;
	}
	for (size_t i = 0; i < sizeof upstreams / sizeof upstreams[0]; i++) {
		const char *url = *(char **)((char *)s + upstreams[i].offset);

		if (url != NULL && !settings_upstream_url_ok(url, s->allow_insecure_upstream != 0)) {
			snprintf(err, errlen, "%s uses plain http to a host that is not loopback: "
			    "use https (or set ALLOW_INSECURE_UPSTREAM=1 for a test setup)",
			    upstreams[i].name);
			return -1;
		}
	}
	if (s->ca_file != NULL && *s->ca_file != '\0' && access(s->ca_file, R_OK) == -1) {
		snprintf(err, errlen, "UPSTREAM_CA_FILE cannot be read: %s", strerror(errno));
		return -1;
	}
	return 0;
}

void
settings_log_warnings(const struct settings *s)
{
	if (s->env_file != NULL && (s->env_file_mode & 077) != 0)
		log_warn("settings file %s is readable or writable by group or others "
		    "(mode %04o): it holds secrets; chmod 600 it", s->env_file,
		    s->env_file_mode);
	if (s->auth_trusts_customer_id)
		log_warn("MAILKIT_AUTH=customer_id: requests are trusted to name their own "
		    "customer_id, as in the tutorial; anyone who knows or guesses a customer id "
		    "can spend its credits.  Never expose this mode to the internet; "
		    "use MAILKIT_AUTH=api_key");
	if (s->allow_insecure_upstream)
		log_warn("ALLOW_INSECURE_UPSTREAM=1: upstream API keys may cross the network "
		    "in plain http");
}

/* Check one value and store it; on failure write the reason (naming the key) to err. */
static int
settings_convert(struct settings *s, const struct setting_def *d, const char *v,
    char *err, size_t errlen)
{
	char		**str = (char **)((char *)s + d->offset);
	long		 *num = (long *)((char *)s + d->offset);
	struct whsig_key key;
	const char	 *why = NULL;
	size_t		 len = strlen(v);

	switch (d->type) {
	case SET_LONG: {
		char *end;

		errno = 0;
		*num = strtol(v, &end, 10);
		if (len == 0 || !isdigit((unsigned char)v[0]) || *end != '\0' || errno != 0 ||
		    *num < d->min || *num > d->max) {
			snprintf(err, errlen, "%s must be a whole number from %ld to %ld",
			    d->name, d->min, d->max);
			return -1;
		}
		return 0;
	}
	case SET_TEXT:
		for (size_t i = 0; i < len; i++)
			if (!isgraph((unsigned char)v[i]))
				why = "must not contain spaces or control characters";
		break;
	case SET_PHRASE:
	case SET_PATH:
		if (!valid_header_text(v, len))
			why = "must not contain line breaks";
		break;
	case SET_ID:
		if (!valid_customer_id(v))
			why = "may only contain letters, digits, '_' and '-'";
		break;
	case SET_URL:
		if (strncmp(v, "http://", 7) != 0 && strncmp(v, "https://", 8) != 0)
			why = "must start with http:// or https://";
		for (size_t i = 0; i < len; i++)
			if (!isgraph((unsigned char)v[i]) || v[i] == '?' || v[i] == '#')
				why = "must be a plain URL without spaces, query or fragment";
		break;
	case SET_WHSEC:
		if (whsig_key_from_secret(v, &key) == -1)
			why = "must be a Standard Webhooks secret (whsec_ followed by base64)";
		break;
	case SET_FROM:
		if (!settings_check_from(v))
			why = "must be an address or \"Name <address>\"";
		break;
	}
	if (why == NULL && len > 0 && d->type != SET_PATH && settings_placeholder(v))
		why = "still holds the tutorial's placeholder value";
	if (why == NULL && len == 0 && d->type != SET_PATH)
		why = "is empty";
	if (why != NULL) {
		snprintf(err, errlen, "%s %s", d->name, why);
		return -1;
	}
	if ((*str = strdup(v)) == NULL) {
		snprintf(err, errlen, "%s: out of memory", d->name);
		return -1;
	}
	if (d->type == SET_URL)
		while (len > 0 && (*str)[len - 1] == '/')
			(*str)[--len] = '\0';
	return 0;
}

/* Append item to the list in buf (sep between items); cut at the end if full. */
static void
settings_list(char *buf, size_t len, const char *sep, const char *item)
{
	size_t	used = strlen(buf);

	snprintf(buf + used, len - used, "%s%s", used > 0 ? sep : "", item);
}

/* What each product sells when PLANS does not say, and its plans' defaults. */
static const struct plan_default {
	const char	*product;
	const char	*name;
	long		 credits;
	long		 overage_limit;
} plan_defaults[] = {
	{ SETTINGS_PRODUCT_MAILKIT, "standard", 5000, 0 },
	{ SETTINGS_PRODUCT_NEURALAPI, "starter", 10000000, 0 },
	{ SETTINGS_PRODUCT_NEURALAPI, "pro", 40000000, 10000000 },
};
#define NPLAN_DEFAULTS	(sizeof plan_defaults / sizeof plan_defaults[0])

/* Where a load's problems are gathered, to be named all at once. */
struct settings_problems {
	char	missing[SETTINGS_LIST_MAX];
	char	bad[SETTINGS_LIST_MAX];
	int	nmissing;
};

/* Read plan p's number setting key (NULL: not set, def used). */
static void
settings_plan_long(const char *key, const char *v, long def, long min, long *out,
    struct settings_problems *pr)
{
	char	*end, why[256];

	*out = def;
	if (v == NULL)
		return;
	errno = 0;
	*out = strtol(v, &end, 10);
	if (!isdigit((unsigned char)v[0]) || *end != '\0' || errno != 0 || *out < min ||
	    *out > SETTINGS_CREDITS_MAX) {
		snprintf(why, sizeof why, "%s must be a whole number from %ld to %ld", key, min,
		    SETTINGS_CREDITS_MAX);
		settings_list(pr->bad, sizeof pr->bad, "; ", why);
	}
}

/* One plan: its name checked, its settings read under prefix ("" or "PRO_"). */
static void
settings_plan_load(struct settings *s, const char *name, size_t namelen, const char *prefix,
    const struct staging *env, const struct staging *file, unsigned need,
    struct settings_problems *pr)
{
	struct settings_plan	*p = &s->plans[s->nplans];
	const struct plan_default *d = NULL;
	char			 key[128], why[256];
	const char		*v;

	if (namelen == 0 || namelen >= SETTINGS_PLAN_NAME_MAX) {
		settings_list(pr->bad, sizeof pr->bad, "; ", "PLANS must name each plan in "
		    "1-31 characters, separated by commas");
		return;
	}
	for (size_t i = 0; i < namelen; i++)
		if (!(islower((unsigned char)name[i]) || isdigit((unsigned char)name[i]) ||
		    name[i] == '_' || name[i] == '-')) {
			settings_list(pr->bad, sizeof pr->bad, "; ", "PLANS may only hold "
			    "lower-case letters, digits, '_', '-' and commas");
			return;
		}
	memcpy(p->name, name, namelen);
	p->name[namelen] = '\0';
	if (settings_plan_find(s, p->name) != NULL) {
		snprintf(why, sizeof why, "PLANS names %s twice", p->name);
		settings_list(pr->bad, sizeof pr->bad, "; ", why);
		return;
	}
	for (size_t i = 0; i < NPLAN_DEFAULTS; i++)
		if (strcmp(plan_defaults[i].product, s->product) == 0 &&
		    strcmp(plan_defaults[i].name, p->name) == 0)
			d = &plan_defaults[i];

	snprintf(key, sizeof key, "%sPLAN_PRODUCT_ID", prefix);
	if ((v = settings_extra(env, file, key)) == NULL) {
		if (need & SETTINGS_NEED_PRODUCTS) {
			settings_list(pr->missing, sizeof pr->missing, ", ", key);
			pr->nmissing++;
		}
	} else if (*v == '\0' || !valid_customer_id(v) || settings_placeholder(v)) {
		snprintf(why, sizeof why, "%s %s", key, *v == '\0' ? "is empty" :
		    settings_placeholder(v) ? "still holds the tutorial's placeholder value" :
		    "may only contain letters, digits, '_' and '-'");
		settings_list(pr->bad, sizeof pr->bad, "; ", why);
	} else if ((p->product_id = strdup(v)) == NULL)
		settings_list(pr->bad, sizeof pr->bad, "; ", "out of memory");

	snprintf(key, sizeof key, "%sPLAN_CREDITS", prefix);
	if ((v = settings_extra(env, file, key)) == NULL && d == NULL) {
		settings_list(pr->missing, sizeof pr->missing, ", ", key);
		pr->nmissing++;
	}
	settings_plan_long(key, v, d != NULL ? d->credits : 0, 1, &p->credits, pr);
	snprintf(key, sizeof key, "%sPLAN_OVERAGE_LIMIT", prefix);
	settings_plan_long(key, settings_extra(env, file, key), d != NULL ? d->overage_limit : 0,
	    0, &p->overage_limit, pr);
	s->nplans++;
}

/*
 * The product and its plans: PLANS, else the product's default plans
 * (README "Plans").  Problems go into pr.
 */
static void
settings_plans_load(struct settings *s, const struct staging *env, const struct staging *file,
    unsigned need, struct settings_problems *pr)
{
	const char	*list = s->plan_list, *p, *comma;
	int		 neural;
	char		 prefix[SETTINGS_PLAN_NAME_MAX + 1];

	if (s->product == NULL)
		return;		/* MAILKIT_PRODUCT malformed: named already */
	neural = strcmp(s->product, SETTINGS_PRODUCT_NEURALAPI) == 0;
	if (!neural && strcmp(s->product, SETTINGS_PRODUCT_MAILKIT) != 0) {
		settings_list(pr->bad, sizeof pr->bad, "; ", "MAILKIT_PRODUCT must be "
		    SETTINGS_PRODUCT_MAILKIT " or " SETTINGS_PRODUCT_NEURALAPI);
		return;
	}
	if (s->topup_credits == 0)
		s->topup_credits = neural ? 5000000 : 5000;
	if (list == NULL || *list == '\0') {
		if (!neural) {
			/* the tutorial's one plan, under its unprefixed names */
			settings_plan_load(s, "standard", 8, "", env, file, need, pr);
			goto done;
		}
		list = "starter,pro";
	}
	for (p = list; ; p = comma + 1) {
		size_t	n;

		while (*p == ' ')
			p++;
		comma = strchr(p, ',');
		n = comma != NULL ? (size_t)(comma - p) : strlen(p);
		while (n > 0 && p[n - 1] == ' ')
			n--;
		if (s->nplans == SETTINGS_PLANS_MAX) {
			settings_list(pr->bad, sizeof pr->bad, "; ", "PLANS names more than 8 plans");
			break;
		}
		if (n < sizeof prefix - 1) {
			for (size_t i = 0; i < n; i++)
				prefix[i] = p[i] == '-' ? '_' : (char)toupper((unsigned char)p[i]);
			prefix[n] = '_';
			prefix[n + 1] = '\0';
		}
		settings_plan_load(s, p, n, prefix, env, file, need, pr);
		if (comma == NULL)
			break;
	}
done:
	if (s->nplans > 0) {
		s->plan_product_id = s->plans[0].product_id;
		s->plan_credits = s->plans[0].credits;
	}
}

const struct settings_plan *
settings_plan_find(const struct settings *s, const char *name)
{
	if (name == NULL || *name == '\0')
		return s->nplans > 0 ? &s->plans[0] : NULL;
	for (size_t i = 0; i < s->nplans; i++)
		if (strcmp(s->plans[i].name, name) == 0)
			return &s->plans[i];
	return NULL;
}

const struct settings_plan *
settings_plan_by_product(const struct settings *s, const char *product_id)
{
	if (product_id == NULL)
		return NULL;
	for (size_t i = 0; i < s->nplans; i++)
		if (s->plans[i].product_id != NULL && strcmp(s->plans[i].product_id, product_id) == 0)
			return &s->plans[i];
	return NULL;
}

int
settings_is_neuralapi(const struct settings *s)
{
	return s->product != NULL && strcmp(s->product, SETTINGS_PRODUCT_NEURALAPI) == 0;
}

int
settings_load_from(struct settings *s, const char *path, char *const *env, unsigned need,
    char *err, size_t errlen)
{
	struct staging		 file = { 0 }, envst = { 0 };
	const struct mail_provider *mp;
	struct settings_problems pr = { .nmissing = 0 };
	char			 why[256];
	int			 rc = -1;

	memset(s, 0, sizeof *s);
	if (path != NULL && settings_read_file(path, &file, err, errlen) == -1)
		goto out;
	for (char *const *e = env; e != NULL && *e != NULL; e++) {
		const char	*eq = strchr(*e, '=');
		char		 name[128];

		if (eq == NULL || (size_t)(eq - *e) >= sizeof name)
			continue;
		memcpy(name, *e, eq - *e);
		name[eq - *e] = '\0';
		if (settings_stage(name, eq + 1, &envst) == -1) {
			snprintf(err, errlen, "out of memory");
			goto out;
		}
	}
	/* every missing and malformed setting is named at once, not one per start */
	for (size_t i = 0; i < NSETTINGS; i++) {
		const struct setting_def	*d = &setting_defs[i];
		const char			*v = envst.value[i];

		if (v == NULL)
			v = file.value[i];
		if (v == NULL)
			v = d->def;
		if (v == NULL) {
			if (d->need & need) {
				settings_list(pr.missing, sizeof pr.missing, ", ", d->name);
				pr.nmissing++;
			}
			continue;
		}
		if (settings_convert(s, d, v, why, sizeof why) == -1)
			settings_list(pr.bad, sizeof pr.bad, "; ", why);
	}
	settings_plans_load(s, &envst, &file, need, &pr);
	if ((mp = mail_provider_find(s->mail_provider)) == NULL) {
		if (s->mail_provider != NULL)
			settings_list(pr.bad, sizeof pr.bad, "; ",
			    "MAIL_PROVIDER names no known provider");
	} else if ((need & SETTINGS_NEED_MAIL) && mp->check(s, why, sizeof why) == -1)
		settings_list(pr.bad, sizeof pr.bad, "; ", why);
	if (pr.nmissing > 0 || pr.bad[0] != '\0') {
		if (pr.nmissing > 0)
			snprintf(err, errlen, "%s %s not set (put %s in the environment or the "
			    "settings file)%s%s", pr.missing, pr.nmissing > 1 ? "are" : "is",
			    pr.nmissing > 1 ? "them" : "it", pr.bad[0] != '\0' ? "; " : "",
			    pr.bad);
		else
			snprintf(err, errlen, "%s", pr.bad);
		goto out;
	}
	if (settings_check_security(s, err, errlen) == -1)
		goto out;
	if (path != NULL && (s->env_file = strdup(path)) == NULL) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	s->env_file_mode = file.mode;
	rc = 0;
out:
	for (size_t i = 0; i < NSETTINGS; i++) {
		free(file.value[i]);
		free(envst.value[i]);
	}
	for (size_t i = 0; i < SETTINGS_EXTRA_MAX; i++) {
		free(file.extra_key[i]);
		free(file.extra_value[i]);
		free(envst.extra_key[i]);
		free(envst.extra_value[i]);
	}
	if (rc == -1)
		settings_free(s);
	return rc;
}

/* 1 if path names a file this process can read. */
static int
settings_readable(const char *path)
{
	return access(path, R_OK) == 0;
}

/*
 * The settings file when $MAILKIT_ENV_FILE is unset: mailkit.env beside the
 * running program (shared hosting: the programs and their settings in one
 * directory the web server will not serve), else ~/mailkit.env ($HOME, or
 * the account's home directory: a web server passes no HOME to FastCGI
 * programs), else SETTINGS_DEFAULT_FILE.  The first readable one is written
 * into buf; returns buf, or NULL when there is none.
 */
static const char *
settings_find_file(char *buf, size_t len)
{
	char		 exe[PATH_MAX];
	const char	*home = getenv("HOME"), *slash;
	struct passwd	*pw;
	ssize_t		 n;

	if ((n = readlink("/proc/self/exe", exe, sizeof exe - 1)) > 0) {
		exe[n] = '\0';
		if ((slash = strrchr(exe, '/')) != NULL &&
		    (size_t)snprintf(buf, len, "%.*s/%s", (int)(slash - exe), exe,
		    SETTINGS_FILE_NAME) < len && settings_readable(buf))
			return buf;
	}
	if ((home == NULL || *home == '\0') && (pw = getpwuid(geteuid())) != NULL)
		home = pw->pw_dir;
	if (home != NULL && *home != '\0' &&
	    (size_t)snprintf(buf, len, "%s/%s", home, SETTINGS_FILE_NAME) < len &&
	    settings_readable(buf))
		return buf;
	if (settings_readable(SETTINGS_DEFAULT_FILE))
		return SETTINGS_DEFAULT_FILE;
	return NULL;
}

int
settings_load(struct settings *s, unsigned need, char *err, size_t errlen)
{
	const char	*path = getenv("MAILKIT_ENV_FILE");
	char		 found[PATH_MAX];

	if (path == NULL || *path == '\0')
		path = settings_find_file(found, sizeof found);
	return settings_load_from(s, path, environ, need, err, errlen);
}

void
settings_free(struct settings *s)
{
	free(s->env_file);
	s->env_file = NULL;
	for (size_t i = 0; i < s->nplans; i++) {
		free(s->plans[i].product_id);
		s->plans[i].product_id = NULL;
	}
	s->nplans = 0;
	s->plan_product_id = NULL;
	for (size_t i = 0; i < NSETTINGS; i++) {
		const struct setting_def *d = &setting_defs[i];

		if (d->type != SET_LONG) {
			char **str = (char **)((char *)s + d->offset);

			free(*str);
			*str = NULL;
		}
	}
}
