/* test_setup.c: the plan checks and the env file writer of `mailkit-admin setup`. */
#include <criterion/criterion.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "settings.h"
#include "setup.h"

static struct setup_result
result(void)
{
	struct setup_result r;

	memset(&r, 0, sizeof r);
	snprintf(r.entitlement.id, sizeof r.entitlement.id, "cde_1");
	r.nplans = 1;
	snprintf(r.plan_keys[0], sizeof r.plan_keys[0], "PLAN_PRODUCT_ID");
	snprintf(r.plans[0].id, sizeof r.plans[0].id, "pdt_p");
	snprintf(r.topup.id, sizeof r.topup.id, "pdt_t");
	snprintf(r.webhook_secret, sizeof r.webhook_secret, "whsec_c2VjcmV0c2VjcmV0c2VjcmV0");
	return r;
}

static char *
slurp(const char *path)
{
	static char	text[4096];
	FILE		*f = fopen(path, "r");
	size_t		 n;

	cr_assert_not_null(f);
	n = fread(text, 1, sizeof text - 1, f);
	text[n] = '\0';
	fclose(f);
	return text;
}

Test(setup, defaults_are_the_tutorials_and_the_webhook_is_under_base_url)
{
	struct settings		s = { .base_url = "https://mail.example.org/", .plan_credits = 5000,
				    .low_balance_percent = 20 };
	struct setup_plan	p;
	struct mk_err		err;

	cr_assert_eq(setup_plan_defaults(&p, &s, &err), 0);
	cr_expect_str_eq(p.webhook_url, "https://mail.example.org/webhooks/dodo");
	cr_expect_str_eq(p.entitlement_name, "Email Credits");
	cr_expect_str_eq(p.unit, "email");
	cr_expect_eq(p.precision, 0);
	cr_expect_eq(p.expiry_days, 30);
	cr_expect_eq(p.plan_price, 1900);
	cr_expect_eq(p.topup_price, 900);
	cr_expect_eq(p.plan_credits, 5000);
	cr_expect_eq(p.topup_credits, 5000);
	cr_expect_eq(p.low_balance_percent, 20);
	cr_expect_eq(setup_plan_check(&p, &err), 0);
	p.precision = 4;
	cr_expect_eq(setup_plan_check(&p, &err), -1);
	p.precision = 0;
	p.currency = "usd";
	cr_expect_eq(setup_plan_check(&p, &err), -1);
	p.currency = "USD";
	p.unit = "e\nmail";
	cr_expect_eq(setup_plan_check(&p, &err), -1);
}

Test(setup, format_prints_the_four_settings_lines)
{
	struct setup_result	r = result();
	char			out[512], small[16];

	cr_assert_eq(setup_format(&r, out, sizeof out), 0);
	cr_expect_str_eq(out, "CREDIT_ENTITLEMENT_ID=cde_1\nPLAN_PRODUCT_ID=pdt_p\n"
	    "TOPUP_PRODUCT_ID=pdt_t\nDODO_WEBHOOK_KEY=whsec_c2VjcmV0c2VjcmV0c2VjcmV0\n");
	cr_expect_eq(setup_format(&r, small, sizeof small), -1);
}

Test(setup, write_env_replaces_ours_keeps_the_rest_and_is_0600)
{
	struct setup_result	r = result();
	struct mk_err		err;
	struct stat		st;
	char			dir[] = "/tmp/mailkit-setup-XXXXXX", path[64];
	FILE			*f;

	cr_assert_not_null(mkdtemp(dir));
	snprintf(path, sizeof path, "%s/mailkit.env", dir);
	f = fopen(path, "w");
	cr_assert_not_null(f);
	fputs("# comment\nexport PLAN_PRODUCT_ID=old\nRESEND_API_KEY=re_x\nPLAN_PRODUCT_ID=dup\n"
	    "DODO_PAYMENTS_WEBHOOK_KEY=whsec_old\nNOT_PLAN_PRODUCT_ID=keep", f);
	fclose(f);
	chmod(path, 0644);
	cr_assert_eq(setup_write_env(path, &r, &err), 0, "%s", err.msg);
	cr_expect_str_eq(slurp(path), "# comment\nPLAN_PRODUCT_ID=pdt_p\nRESEND_API_KEY=re_x\n"
	    "NOT_PLAN_PRODUCT_ID=keep\nCREDIT_ENTITLEMENT_ID=cde_1\nTOPUP_PRODUCT_ID=pdt_t\n"
	    "DODO_WEBHOOK_KEY=whsec_c2VjcmV0c2VjcmV0c2VjcmV0\n");
	cr_assert_eq(stat(path, &st), 0);
	cr_expect_eq(st.st_mode & 0777, 0600);
	/* again: the same file, nothing duplicated */
	cr_assert_eq(setup_write_env(path, &r, &err), 0);
	cr_expect_str_eq(slurp(path), "# comment\nPLAN_PRODUCT_ID=pdt_p\nRESEND_API_KEY=re_x\n"
	    "NOT_PLAN_PRODUCT_ID=keep\nCREDIT_ENTITLEMENT_ID=cde_1\nTOPUP_PRODUCT_ID=pdt_t\n"
	    "DODO_WEBHOOK_KEY=whsec_c2VjcmV0c2VjcmV0c2VjcmV0\n");
	unlink(path);
	/* a missing file is created; no temporary file is left beside it */
	cr_assert_eq(setup_write_env(path, &r, &err), 0);
	cr_expect_str_eq(slurp(path), "CREDIT_ENTITLEMENT_ID=cde_1\nPLAN_PRODUCT_ID=pdt_p\n"
	    "TOPUP_PRODUCT_ID=pdt_t\nDODO_WEBHOOK_KEY=whsec_c2VjcmV0c2VjcmV0c2VjcmV0\n");
	unlink(path);
	cr_expect_eq(rmdir(dir), 0, "only the env file was in the directory");
	/* an unwritable place: an error naming the file, no value in it */
	cr_expect_eq(setup_write_env("/nonexistent-dir/x.env", &r, &err), -1);
	cr_expect_null(strstr(err.msg, "whsec_"));
}
