/* test_settings.c: dotenv parsing and the checks settings_load applies. */
#include <sys/stat.h>

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "settings.h"

#define WHSEC "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

struct pairs {
	char	k[16][64];
	char	v[16][128];
	int	n;
};

static int
collect(const char *k, const char *v, void *arg)
{
	struct pairs *p = arg;

	snprintf(p->k[p->n], sizeof p->k[0], "%s", k);
	snprintf(p->v[p->n], sizeof p->v[0], "%s", v);
	p->n++;
	return 0;
}

Test(settings, dotenv_syntax)
{
	const char *text =
	    "# Dodo Payments\n"
	    "DODO_PAYMENTS_API_KEY=abc123\n"
	    "\n"
	    "export BASE_URL = http://localhost:3000   # the page\n"
	    "MAIL_FROM=\"MailKit <hi@x.io>\"\r\n"
	    "RAW='no $expansion \\n here'\n"
	    "ESC=\"line1\\nline2 \\\"q\\\"\"\n"
	    "HASH=a#b\n"
	    "EMPTY=\n";
	struct pairs	p = { 0 };
	char		err[128];

	cr_assert_eq(settings_parse_dotenv(text, strlen(text), collect, &p, err, sizeof err), 0,
	    "%s", err);
	cr_assert_eq(p.n, 7);
	cr_expect_str_eq(p.k[0], "DODO_PAYMENTS_API_KEY");
	cr_expect_str_eq(p.v[0], "abc123");
	cr_expect_str_eq(p.k[1], "BASE_URL");
	cr_expect_str_eq(p.v[1], "http://localhost:3000");
	cr_expect_str_eq(p.v[2], "MailKit <hi@x.io>");
	cr_expect_str_eq(p.v[3], "no $expansion \\n here");
	cr_expect_str_eq(p.v[4], "line1\nline2 \"q\"");
	cr_expect_str_eq(p.v[5], "a#b");
	cr_expect_str_eq(p.k[6], "EMPTY");
	cr_expect_str_eq(p.v[6], "");
}

Test(settings, dotenv_errors_name_the_line)
{
	struct pairs	p = { 0 };
	char		err[128];
	const char	*bad[] = { "OK=1\nthis is not a setting\n", "OK=1\nA=\"open\n",
	    "OK=1\n=value\n", "OK=1\n9LIVES=x\n", "OK=1\nA='x' trailing\n" };

	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		p.n = 0;
		cr_expect_eq(settings_parse_dotenv(bad[i], strlen(bad[i]), collect, &p, err,
		    sizeof err), -1, "accepted: %s", bad[i]);
		cr_expect(strncmp(err, "line 2:", 7) == 0, "err: %s", err);
	}
}

static char *const good_env[] = {
	"DODO_PAYMENTS_API_KEY=test_key_123",
	"DODO_WEBHOOK_KEY=" WHSEC,
	"CREDIT_ENTITLEMENT_ID=cde_1",
	"PLAN_PRODUCT_ID=pdt_plan",
	"TOPUP_PRODUCT_ID=pdt_topup",
	"RESEND_API_KEY=re_123",
	"UNRELATED=ignored",
	NULL,
};

#define NEED_ALL (SETTINGS_NEED_DODO | SETTINGS_NEED_CREDITS | SETTINGS_NEED_PRODUCTS | \
	SETTINGS_NEED_MAIL | SETTINGS_NEED_WEBHOOK)

Test(settings, defaults_and_required)
{
	struct settings	s;
	char		err[256];

	cr_assert_eq(settings_load_from(&s, NULL, good_env, NEED_ALL, err, sizeof err), 0,
	    "%s", err);
	cr_expect_str_eq(s.dodo_base_url, "https://test.dodopayments.com");
	cr_expect_str_eq(s.resend_base_url, "https://api.resend.com");
	cr_expect_eq(s.port, 8080);
	cr_expect_eq(s.max_body, 1048576);
	cr_expect_leq(s.timeout_ms, 10000);
	cr_expect_leq(s.connect_timeout_ms, 10000);
	cr_expect_str_eq(s.mail_provider, "resend");
	settings_free(&s);

	/* without the webhook secret only the webhook program fails */
	char *const env2[] = { "DODO_PAYMENTS_API_KEY=k", NULL };
	cr_expect_eq(settings_load_from(&s, NULL, env2, SETTINGS_NEED_DODO, err, sizeof err), 0);
	settings_free(&s);
	cr_expect_eq(settings_load_from(&s, NULL, env2, SETTINGS_NEED_WEBHOOK, err,
	    sizeof err), -1);
	cr_expect_not_null(strstr(err, "DODO_WEBHOOK_KEY"), "%s", err);
}

Test(settings, every_missing_and_malformed_setting_in_one_message)
{
	struct settings	s;
	char		err[1024];
	char *const	env[] = { "PORT=eighty", "MAX_BODY_BYTES=-1", NULL };
	const char	*named[] = { "DODO_PAYMENTS_API_KEY", "DODO_WEBHOOK_KEY",
			    "CREDIT_ENTITLEMENT_ID", "PLAN_PRODUCT_ID", "TOPUP_PRODUCT_ID",
			    "RESEND_API_KEY", "PORT", "MAX_BODY_BYTES" };

	cr_assert_eq(settings_load_from(&s, NULL, env, NEED_ALL, err, sizeof err), -1);
	for (size_t i = 0; i < sizeof named / sizeof named[0]; i++)
		cr_expect_not_null(strstr(err, named[i]), "%s not named: %s", named[i], err);
	cr_expect_not_null(strstr(err, "are not set"), "%s", err);
}

Test(settings, file_then_environment_wins)
{
	char		 path[] = "/tmp/mailkit-test-env-XXXXXX";
	int		 fd = mkstemp(path);
	const char	*text = "PORT=3000\nBASE_URL=http://file.example/\n"
	    "DODO_PAYMENTS_WEBHOOK_KEY=" WHSEC "\nDODO_PAYMENTS_API_KEY=from_file\n";
	char *const	 env[] = { "PORT=9090", NULL };
	struct settings	 s;
	char		 err[256];

	cr_assert_geq(fd, 0);
	cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	cr_assert_eq(settings_load_from(&s, path, env, SETTINGS_NEED_WEBHOOK |
	    SETTINGS_NEED_DODO, err, sizeof err), 0, "%s", err);
	cr_expect_eq(s.port, 9090);
	cr_expect_str_eq(s.base_url, "http://file.example");	/* trailing '/' removed */
	cr_expect_str_eq(s.webhook_key, WHSEC);	/* the SDK's name is accepted too */
	cr_expect_str_eq(s.dodo_api_key, "from_file");
	settings_free(&s);
	unlink(path);
	cr_expect_eq(settings_load_from(&s, path, env, 0, err, sizeof err), -1);
	cr_expect_not_null(strstr(err, path), "%s", err);
}

/* Each malformed value stops the load with a message naming the key, never the value. */
Test(settings, malformed_values_are_named)
{
	const struct { const char *kv; const char *name; } cases[] = {
		{ "PORT=80a", "PORT" }, { "PORT=0", "PORT" }, { "PORT=70000", "PORT" },
		{ "UPSTREAM_TIMEOUT_MS=-1", "UPSTREAM_TIMEOUT_MS" },
		{ "DODO_PAYMENTS_BASE_URL=ftp://x", "DODO_PAYMENTS_BASE_URL" },
		{ "RESEND_BASE_URL=http://x/?q", "RESEND_BASE_URL" },
		{ "DODO_WEBHOOK_KEY=whsec_", "DODO_WEBHOOK_KEY" },
		{ "DODO_WEBHOOK_KEY=whsec_%%%%", "DODO_WEBHOOK_KEY" },
		{ "CREDIT_ENTITLEMENT_ID=cde/../x", "CREDIT_ENTITLEMENT_ID" },
		{ "CREDIT_ENTITLEMENT_ID=cent_xxxxxxxxxxxx", "CREDIT_ENTITLEMENT_ID" },
		{ "DODO_PAYMENTS_API_KEY=your_dodo_test_api_key", "DODO_PAYMENTS_API_KEY" },
		{ "DODO_PAYMENTS_API_KEY=has space", "DODO_PAYMENTS_API_KEY" },
		{ "MAIL_FROM=MailKit <nobody>", "MAIL_FROM" },
		{ "MAIL_PROVIDER=carrier-pigeon", "MAIL_PROVIDER" },
	};

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		char		kv[128];
		char *const	env[] = { kv, NULL };
		struct settings	s;
		char		err[256];

		snprintf(kv, sizeof kv, "%s", cases[i].kv);
		cr_expect_eq(settings_load_from(&s, NULL, env, 0, err, sizeof err), -1,
		    "accepted %s", cases[i].kv);
		cr_expect_not_null(strstr(err, cases[i].name), "%s: %s", cases[i].kv, err);
		/* values long enough not to occur in the message by chance */
		if (strlen(strchr(cases[i].kv, '=') + 1) > 6)
			cr_expect_null(strstr(err, strchr(cases[i].kv, '=') + 1),
			    "value echoed: %s", err);
	}
}

Test(settings, secrets_are_known)
{
	cr_expect(settings_is_secret("DODO_PAYMENTS_API_KEY"));
	cr_expect(settings_is_secret("DODO_WEBHOOK_KEY"));
	cr_expect(settings_is_secret("DODO_PAYMENTS_WEBHOOK_KEY"));
	cr_expect(settings_is_secret("RESEND_API_KEY"));
	cr_expect(!settings_is_secret("PORT"));
}

/* --- security settings --- */

static int
load_with(const char *kv1, const char *kv2, struct settings *s, char *err, size_t errlen)
{
	char *const env[] = { (char *)kv1, (char *)kv2, NULL };

	return settings_load_from(s, NULL, env, 0, err, errlen);
}

Test(settings, auth_mode_and_rate_limit)
{
	struct settings	s;
	char		err[256];

	cr_assert_eq(settings_load_from(&s, NULL, good_env, NEED_ALL, err, sizeof err), 0, "%s", err);
	cr_expect_str_eq(s.auth_mode, "api_key", "keys by default");
	cr_expect_eq(s.auth_trusts_customer_id, 0);
	cr_expect_eq(s.rate_limit, 600);
	cr_expect_eq(s.allow_insecure_upstream, 0);
	cr_expect_str_eq(s.ca_file, "");
	settings_free(&s);

	cr_assert_eq(load_with("MAILKIT_AUTH=customer_id", "RATE_LIMIT_PER_MINUTE=0", &s, err,
	    sizeof err), 0, "%s", err);
	cr_expect_eq(s.auth_trusts_customer_id, 1);
	cr_expect_eq(s.rate_limit, 0, "0 turns the limit off");
	settings_free(&s);

	const char *bad[] = { "MAILKIT_AUTH=none", "MAILKIT_AUTH=API_KEY", "MAILKIT_AUTH=",
	    "RATE_LIMIT_PER_MINUTE=-1", "RATE_LIMIT_PER_MINUTE=ten",
	    "ALLOW_INSECURE_UPSTREAM=2", "ALLOW_INSECURE_UPSTREAM=yes" };
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		char name[64];

		snprintf(name, sizeof name, "%.*s", (int)strcspn(bad[i], "="), bad[i]);
		cr_expect_eq(load_with(bad[i], NULL, &s, err, sizeof err), -1, "accepted %s", bad[i]);
		cr_expect_not_null(strstr(err, name), "%s: %s", bad[i], err);
	}
}

Test(settings, upstream_url_rules)
{
	const char *ok[] = { "https://api.resend.com", "https://10.0.0.1", "http://127.0.0.1",
	    "http://127.0.0.1:8080/sandbox/dodo", "http://127.255.1.2:1", "http://localhost",
	    "http://LOCALHOST:8080/x", "http://[::1]:8080/sandbox", "http://[::1]" };
	const char *refused[] = { "http://api.resend.com", "http://10.0.0.1:8080",
	    "http://128.0.0.1", "http://127.0.0.1.evil.example", "http://localhost.evil.example",
	    "http://127.0.0.1@evil.example", "http://localhost:80@evil.example/",
	    "http://[::2]:8080", "http://", "http://127.0.0", "http://127.0.0.1a",
	    "ftp://127.0.0.1" };

	for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
		cr_expect(settings_upstream_url_ok(ok[i], 0), "refused %s", ok[i]);
	for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++)
		cr_expect(!settings_upstream_url_ok(refused[i], 0), "accepted %s", refused[i]);
	cr_expect(settings_upstream_url_ok("http://api.resend.com", 1), "explicitly allowed");
	cr_expect(!settings_upstream_url_ok("ftp://x", 1));
}

Test(settings, plain_http_upstreams_refused_at_load)
{
	struct settings	s;
	char		err[256];

	cr_expect_eq(load_with("DODO_PAYMENTS_BASE_URL=http://dodo.example.com", NULL, &s, err,
	    sizeof err), -1);
	cr_expect_not_null(strstr(err, "DODO_PAYMENTS_BASE_URL"), "%s", err);
	cr_expect_null(strstr(err, "dodo.example.com"), "value echoed: %s", err);
	cr_expect_eq(load_with("RESEND_BASE_URL=http://api.resend.com", NULL, &s, err,
	    sizeof err), -1);
	cr_expect_not_null(strstr(err, "RESEND_BASE_URL"), "%s", err);
	cr_assert_eq(load_with("RESEND_BASE_URL=http://api.resend.com",
	    "ALLOW_INSECURE_UPSTREAM=1", &s, err, sizeof err), 0, "%s", err);
	settings_free(&s);
	cr_assert_eq(load_with("DODO_PAYMENTS_BASE_URL=http://127.0.0.1:8080/sandbox/dodo",
	    "RESEND_BASE_URL=http://localhost:8080/sandbox/resend", &s, err, sizeof err), 0,
	    "%s", err);
	settings_free(&s);
	/* BASE_URL is where the page is served, not an upstream */
	cr_assert_eq(load_with("BASE_URL=http://mailkit.example.com", NULL, &s, err, sizeof err), 0,
	    "%s", err);
	settings_free(&s);
}

Test(settings, ca_file_must_be_readable)
{
	struct settings	s;
	char		err[256];

	cr_expect_eq(load_with("UPSTREAM_CA_FILE=/nonexistent/ca.pem", NULL, &s, err, sizeof err),
	    -1);
	cr_expect_not_null(strstr(err, "UPSTREAM_CA_FILE"), "%s", err);
	cr_assert_eq(load_with("UPSTREAM_CA_FILE=/dev/null", NULL, &s, err, sizeof err), 0, "%s",
	    err);
	cr_expect_str_eq(s.ca_file, "/dev/null");
	settings_free(&s);
}

Test(settings, file_mode_is_recorded)
{
	char		 path[] = "/tmp/mailkit-test-env-XXXXXX";
	int		 fd = mkstemp(path);
	struct settings	 s;
	char		 err[256];

	cr_assert_geq(fd, 0);
	close(fd);
	cr_assert_eq(chmod(path, 0600), 0);
	cr_assert_eq(settings_load_from(&s, path, NULL, 0, err, sizeof err), 0, "%s", err);
	cr_expect_str_eq(s.env_file, path);
	cr_expect_eq(s.env_file_mode & 0777, 0600);
	settings_free(&s);
	cr_assert_eq(chmod(path, 0644), 0);
	cr_assert_eq(settings_load_from(&s, path, NULL, 0, err, sizeof err), 0, "%s", err);
	cr_expect_eq(s.env_file_mode & 077, 044, "group/other bits seen (%o)", s.env_file_mode);
	settings_free(&s);
	cr_assert_eq(settings_load_from(&s, NULL, NULL, 0, err, sizeof err), 0, "%s", err);
	cr_expect_null(s.env_file);
	settings_free(&s);
	unlink(path);
}

/* Write `text` to path; the test fails if it cannot. */
static void
write_text(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	cr_assert_not_null(f, "cannot write %s", path);
	fputs(text, f);
	fclose(f);
}

Test(settings, file_found_beside_the_program_then_in_home)
{
	char	home[] = "/tmp/mailkit-home-XXXXXX", path[512], exe[512], beside[600], err[512];
	struct settings s;
	ssize_t	n;

	cr_assert_not_null(mkdtemp(home));
	snprintf(path, sizeof path, "%s/mailkit.env", home);
	write_text(path, "BASE_URL=https://home.example\n");
	setenv("HOME", home, 1);
	unsetenv("MAILKIT_ENV_FILE");
	unsetenv("BASE_URL");
	cr_assert_eq(settings_load(&s, 0, err, sizeof err), 0, "%s", err);
	cr_expect_str_eq(s.base_url, "https://home.example", "~/mailkit.env without MAILKIT_ENV_FILE");
	cr_expect_str_eq(s.env_file, path);
	settings_free(&s);

	n = readlink("/proc/self/exe", exe, sizeof exe - 1);
	cr_assert_gt(n, 0);
	exe[n] = '\0';
	*strrchr(exe, '/') = '\0';
	snprintf(beside, sizeof beside, "%s/mailkit.env", exe);
	write_text(beside, "BASE_URL=https://beside.example\n");
	cr_assert_eq(settings_load(&s, 0, err, sizeof err), 0, "%s", err);
	cr_expect_str_eq(s.base_url, "https://beside.example", "beside the program comes first");
	settings_free(&s);
	unlink(beside);
	unlink(path);
	rmdir(home);
}

/* MAIL_PROVIDER=smtp: its settings are checked at load, with the plain-http rule for none. */
static int
load_smtp(const char *kv1, const char *kv2, const char *kv3, char *err, size_t errlen)
{
	char *const	env[] = { "MAIL_PROVIDER=smtp", "MAIL_FROM=MailKit <n@mailkit.test>",
	    (char *)kv1, (char *)kv2, (char *)kv3, NULL };
	struct settings	s;
	int		rc;

	/* a NULL among kv1..kv3 ends the list there */
	rc = settings_load_from(&s, NULL, env, SETTINGS_NEED_MAIL, err, errlen);
	if (rc == 0)
		settings_free(&s);
	return rc;
}

Test(settings, smtp_provider_rules)
{
	char	err[256];

	cr_expect_eq(load_smtp(NULL, NULL, NULL, err, sizeof err), -1);
	cr_expect_not_null(strstr(err, "SMTP_URL is not set"), "%s", err);
	cr_expect_eq(load_smtp("SMTP_URL=http://relay.example.com", NULL, NULL, err, sizeof err),
	    -1);
	cr_expect_not_null(strstr(err, "smtp://"), "%s", err);
	cr_expect_eq(load_smtp("SMTP_URL=smtp://relay.example.com:587/mk.test", NULL, NULL, err,
	    sizeof err), 0, "%s", err);
	cr_expect_eq(load_smtp("SMTP_URL=smtps://relay.example.com:465/mk.test", NULL, NULL, err,
	    sizeof err), 0, "%s", err);
	/* plain SMTP only to loopback, like plain-http upstreams */
	cr_expect_eq(load_smtp("SMTP_URL=smtp://relay.example.com:25/mk.test", "SMTP_TLS=none",
	    NULL, err, sizeof err), -1);
	cr_expect_not_null(strstr(err, "SMTP_TLS=none"), "%s", err);
	cr_expect_null(strstr(err, "relay.example.com"), "value echoed: %s", err);
	cr_expect_eq(load_smtp("SMTP_URL=smtp://127.0.0.1:2525/mk.test", "SMTP_TLS=none", NULL,
	    err, sizeof err), 0, "%s", err);
	cr_expect_eq(load_smtp("SMTP_URL=smtp://localhost:2525", "SMTP_TLS=none", NULL, err,
	    sizeof err), 0, "%s", err);
	cr_expect_eq(load_smtp("SMTP_URL=smtp://relay.example.com:25", "SMTP_TLS=none",
	    "ALLOW_INSECURE_UPSTREAM=1", err, sizeof err), 0, "%s", err);
	cr_expect_eq(load_smtp("SMTP_URL=smtps://127.0.0.1:465", "SMTP_TLS=none", NULL, err,
	    sizeof err), -1);
	cr_expect_eq(load_smtp("SMTP_URL=smtp://127.0.0.1:25", "SMTP_TLS=maybe", NULL, err,
	    sizeof err), -1);
	cr_expect_not_null(strstr(err, "SMTP_TLS must be"), "%s", err);
	cr_expect_eq(load_smtp("SMTP_URL=smtp://127.0.0.1:25", "SMTP_USERNAME=u", NULL, err,
	    sizeof err), -1);
	cr_expect_not_null(strstr(err, "SMTP_PASSWORD"), "%s", err);
	cr_expect_eq(load_smtp("SMTP_URL=smtp://127.0.0.1:25", "SMTP_USERNAME=u",
	    "SMTP_PASSWORD=a pass phrase", err, sizeof err), 0, "%s", err);
	cr_expect(settings_is_secret("SMTP_PASSWORD"));
	cr_expect(settings_is_secret("SENDGRID_API_KEY"));
	cr_expect(settings_is_secret("POSTMARK_SERVER_TOKEN"));
	cr_expect(!settings_is_secret("SMTP_USERNAME"));
}

Test(settings, mailkit_sells_its_one_plan_by_default)
{
	struct settings			 s;
	const struct settings_plan	*p;
	char				 err[256];
	char *const			 env[] = { "PLAN_PRODUCT_ID=pdt_plan", "PLAN_CREDITS=250",
					    "TOPUP_PRODUCT_ID=pdt_topup", NULL };

	cr_assert_eq(settings_load_from(&s, NULL, env, SETTINGS_NEED_PRODUCTS, err,
	    sizeof err), 0, "%s", err);
	cr_expect_str_eq(s.product, "mailkit");
	cr_assert_eq(s.nplans, 1);
	p = settings_plan_find(&s, NULL);
	cr_assert_not_null(p);
	cr_expect_str_eq(p->name, "standard");
	cr_expect_str_eq(p->product_id, "pdt_plan");
	cr_expect_eq(p->credits, 250);
	cr_expect_eq(p->overage_limit, 0);
	cr_expect_eq(s.plan_credits, 250);
	cr_expect_str_eq(s.plan_product_id, "pdt_plan");
	cr_expect_eq(s.topup_credits, 5000);
	cr_expect_eq(settings_plan_by_product(&s, "pdt_plan"), p);
	cr_expect_null(settings_plan_by_product(&s, "pdt_topup"));
	cr_expect_null(settings_plan_find(&s, "pro"));
	cr_expect_eq(settings_is_neuralapi(&s), 0);
	settings_free(&s);
}

Test(settings, neuralapi_sells_starter_and_pro_under_the_tutorial_names)
{
	struct settings			 s;
	const struct settings_plan	*starter, *pro;
	char				 err[256];
	char *const			 env[] = { "MAILKIT_PRODUCT=neuralapi",
					    "STARTER_PLAN_PRODUCT_ID=pdt_s", "PRO_PLAN_PRODUCT_ID=pdt_p",
					    "PRO_PLAN_OVERAGE_LIMIT=500", "TOPUP_PRODUCT_ID=pdt_t",
					    "OPENAI_API_KEY=sk-test", NULL };

	cr_assert_eq(settings_load_from(&s, NULL, env, SETTINGS_NEED_PRODUCTS |
	    SETTINGS_NEED_AI, err, sizeof err), 0, "%s", err);
	cr_expect_eq(settings_is_neuralapi(&s), 1);
	cr_assert_eq(s.nplans, 2);
	starter = settings_plan_find(&s, "starter");
	pro = settings_plan_find(&s, "pro");
	cr_assert(starter != NULL && pro != NULL);
	cr_expect_eq(settings_plan_find(&s, ""), starter);
	cr_expect_eq(starter->credits, 10000000);
	cr_expect_eq(starter->overage_limit, 0);
	cr_expect_eq(pro->credits, 40000000);
	cr_expect_eq(pro->overage_limit, 500);
	cr_expect_eq(settings_plan_by_product(&s, "pdt_p"), pro);
	cr_expect_eq(s.topup_credits, 5000000);
	cr_expect_str_eq(s.openai_base_url, "https://api.openai.com/v1");
	cr_expect_str_eq(s.openai_model, "gpt-5-mini");
	cr_expect_str_eq(s.usage_event_name, "api.tokens_used");
	cr_expect_eq(settings_is_secret("OPENAI_API_KEY"), 1);
	settings_free(&s);

	/* without the key, an AI program names it */
	char *const env2[] = { "MAILKIT_PRODUCT=neuralapi", NULL };
	cr_expect_eq(settings_load_from(&s, NULL, env2, SETTINGS_NEED_AI, err, sizeof err), -1);
	cr_expect_not_null(strstr(err, "OPENAI_API_KEY"), "%s", err);
}

Test(settings, a_plan_list_names_each_plans_settings)
{
	struct settings	s;
	char		err[1024];
	char *const	env[] = { "PLANS=basic, business-plus", "BASIC_PLAN_PRODUCT_ID=pdt_b",
			    "BASIC_PLAN_CREDITS=1000", "BUSINESS_PLUS_PLAN_PRODUCT_ID=pdt_bp",
			    "BUSINESS_PLUS_PLAN_CREDITS=20000",
			    "BUSINESS_PLUS_PLAN_OVERAGE_LIMIT=2000", NULL };

	cr_assert_eq(settings_load_from(&s, NULL, env, SETTINGS_NEED_PRODUCTS, err,
	    sizeof err), -1);
	cr_expect_not_null(strstr(err, "TOPUP_PRODUCT_ID"), "%s", err);
	cr_expect_null(strstr(err, "PLAN_PRODUCT_ID,"), "%s", err);
	cr_assert_eq(settings_load_from(&s, NULL, env, 0, err, sizeof err), 0, "%s", err);
	cr_assert_eq(s.nplans, 2);
	cr_expect_str_eq(s.plans[0].name, "basic");
	cr_expect_str_eq(s.plans[1].name, "business-plus");
	cr_expect_eq(s.plans[1].credits, 20000);
	cr_expect_eq(s.plans[1].overage_limit, 2000);
	cr_expect_str_eq(s.plans[1].product_id, "pdt_bp");
	settings_free(&s);

	/* a plan of no product's defaults needs its credits; bad names and numbers are named */
	char *const bad[] = { "PLANS=gold,Gold,gold", "GOLD_PLAN_OVERAGE_LIMIT=-5",
	    "MAILKIT_PRODUCT=mailkit", NULL };
	cr_assert_eq(settings_load_from(&s, NULL, bad, SETTINGS_NEED_PRODUCTS, err,
	    sizeof err), -1);
	cr_expect_not_null(strstr(err, "GOLD_PLAN_PRODUCT_ID"), "%s", err);
	cr_expect_not_null(strstr(err, "GOLD_PLAN_CREDITS"), "%s", err);
	cr_expect_not_null(strstr(err, "GOLD_PLAN_OVERAGE_LIMIT must be"), "%s", err);
	cr_expect_not_null(strstr(err, "PLANS may only hold"), "%s", err);
	cr_expect_not_null(strstr(err, "PLANS names gold twice"), "%s", err);

	char *const product[] = { "MAILKIT_PRODUCT=video", NULL };
	cr_expect_eq(settings_load_from(&s, NULL, product, 0, err, sizeof err), -1);
	cr_expect_not_null(strstr(err, "MAILKIT_PRODUCT must be"), "%s", err);
}
