/* setup.h: create or find MailKit's (or NeuralAPI's) Dodo catalog (entitlement, meter, products, webhook endpoint). */
#ifndef MAILKIT_SETUP_H
#define MAILKIT_SETUP_H

#include <stddef.h>

#include "dodo.h"
#include "err.h"
#include "settings.h"

struct settings;

#define SETUP_METADATA_KEY	"mailkit_setup"	/* metadata that marks what setup made */
#define SETUP_SECRET_MAX	256		/* a webhook signing secret, whsec_... */
#define SETUP_WEBHOOK_PATH	"/webhooks/dodo"	/* appended to BASE_URL */

#define SETUP_KEY_MAX		64	/* a setting's name, NUL included */

/* One plan product (a settings plan): what it costs and grants. */
struct setup_tier {
	char		 name[SETTINGS_PLAN_NAME_MAX];	/* the settings plan's name */
	char		 key[SETUP_KEY_MAX];	/* the setting of its product id:
						   PLAN_PRODUCT_ID, STARTER_PLAN_PRODUCT_ID, ... */
	long		 price;			/* cents a month (tiers[0]: plan_price) */
	long		 credits;		/* per cycle (tiers[0]: plan_credits) */
	long		 overage_limit;		/* credits past zero; 0: blocked at zero */
};

/* What to make: the tutorial's catalog unless flags say otherwise. */
struct setup_plan {
	const char	*entitlement_name;	/* "Email Credits" */
	const char	*unit;			/* "email" */
	long		 precision;		/* 0 */
	long		 expiry_days;		/* 30; 0 = credits never expire */
	const char	*currency;		/* "USD" */
	long		 plan_price;		/* 1900 cents a month */
	long		 plan_credits;		/* PLAN_CREDITS, 5000 per cycle */
	long		 topup_price;		/* 900 cents */
	long		 topup_credits;		/* 5000 */
	long		 low_balance_percent;	/* LOW_BALANCE_PERCENT, 20 */
	char		 webhook_url[DODO_URL_MAX];	/* BASE_URL + SETUP_WEBHOOK_PATH */
	/* the settings' plans, in order; tiers[0] takes plan_price and
	   plan_credits (which the flags change) when the catalog is made */
	struct setup_tier tiers[SETTINGS_PLANS_MAX];
	size_t		 ntiers;
	long		 topup_expiry_days;	/* the top-up's credits: 365 for NeuralAPI,
						   else expiry_days (0: the same) */
	/* NeuralAPI (MAILKIT_PRODUCT=neuralapi): usage-based plans whose meter
	   bills in the entitlement's credits, one credit per token */
	int		 metered;
	const char	*usage_event;		/* USAGE_EVENT_NAME: the meter counts it */
	const char	*overage_price;		/* price per credit past zero, "0.000005" */
};

/* One object of the catalog: its id, and whether this run created it. */
struct setup_object {
	char	id[DODO_ID_MAX];
	int	created;
	char	note[MK_ERR_MSG_MAX];	/* "" or a warning: found, but not as planned */
};

struct setup_result {
	struct setup_object	entitlement, meter, topup, webhook;	/* meter: metered only */
	struct setup_object	plans[SETTINGS_PLANS_MAX];	/* p->tiers[i]'s product */
	char			plan_keys[SETTINGS_PLANS_MAX][SETUP_KEY_MAX];	/* its setting */
	size_t			nplans;
	char			webhook_secret[SETUP_SECRET_MAX];	/* secret: never logged */
};

/*
 * The tutorial's plan with PLAN_CREDITS, LOW_BALANCE_PERCENT and BASE_URL
 * from s, and a tier per settings plan.  For NeuralAPI (settings_is_neuralapi)
 * the NeuralAPI tutorial's: "API Tokens" (unit token), Starter $29 and Pro $99
 * as usage-based plans metered by USAGE_EVENT_NAME, Pro's overage at
 * $0.000005 a token, the $19 top-up of TOPUP_CREDITS expiring after 365
 * days; another plan's price must be given (--plan-price NAME=CENTS).  0, or
 * -1 with err when BASE_URL + SETUP_WEBHOOK_PATH is too long.
 */
int	setup_plan_defaults(struct setup_plan *p, const struct settings *s, struct mk_err *err);

/*
 * Check a plan before any call: names and unit printable and short,
 * precision 0..3, expiry 0..3650 days, prices and credit amounts positive,
 * low-balance 0..100 percent, currency three capital letters.  0 / -1 with
 * err naming the first bad value.
 */
int	setup_plan_check(const struct setup_plan *p, struct mk_err *err);

/*
 * Find each object of the catalog through Dodo's API or create it, in
 * order (entitlement, the meter when metered, each plan, top-up, webhook
 * endpoint), then read the endpoint's signing secret.  Found means: the
 * entitlement of that name and unit; the meter of p->usage_event; the
 * product whose metadata SETUP_METADATA_KEY is "plan" (MailKit's one
 * plan), "plan:NAME" or "topup"; the endpoint at p->webhook_url.  Every create carries an
 * Idempotency-Key derived from its body, so a repeat of the same request
 * is answered with the first one's object.  Returns 0 with r filled, or
 * -1 with err (r holds what was done before the failure; a second run
 * finds it).  Never logs the API key or the secret.
 */
int	setup_run(const struct settings *s, const struct setup_plan *p, struct setup_result *r,
	    struct mk_err *err);

/*
 * The settings lines of r ("CREDIT_ENTITLEMENT_ID=...\n", each plan's
 * product id, TOPUP_PRODUCT_ID, DODO_WEBHOOK_KEY: the secret included)
 * into out.  0, or -1 when out is too small.
 */
int	setup_format(const struct setup_result *r, char *out, size_t outlen);

/*
 * Put the settings lines of r into the dotenv file at path: each line
 * that sets one of them (also as `export KEY=`, and the alias
 * DODO_PAYMENTS_WEBHOOK_KEY) is replaced, the others are kept as they
 * are, and missing ones are appended.  The new file is written beside it
 * with mode 0600, synced, and renamed over it, so a reader sees the old
 * file or the new one, never a mix; a missing file is created.  0, or -1
 * with the reason (never a value) in err.
 */
int	setup_write_env(const char *path, const struct setup_result *r, struct mk_err *err);

#endif
