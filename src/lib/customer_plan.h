/* customer_plan.h: which plan a customer is on — their active subscription's, looked up at Dodo and cached briefly. */
#ifndef MAILKIT_CUSTOMER_PLAN_H
#define MAILKIT_CUSTOMER_PLAN_H

#include "err.h"

struct settings;
struct settings_plan;

#define CUSTOMER_PLAN_CACHE_MS	30000	/* an answer is reused this long per process */
#define CUSTOMER_PLAN_SLOTS	256	/* customers cached per process */
#define CUSTOMER_PLAN_SUBS_MAX	20	/* active subscriptions looked at per customer */

/*
 * The plan of customer_id: the settings plan (settings_plan_by_product)
 * of the newest active subscription whose product is one of the plans.
 * 0 with *plan set, or with *plan NULL when the customer has no active
 * subscription to a plan (top-up credits only: no overage, ever); -1 with
 * err (502/504 from Dodo, 404 unknown customer).  GET
 * /subscriptions?customer_id=&status=active, answers cached for
 * CUSTOMER_PLAN_CACHE_MS, so a plan change shows within that time or at
 * once after customer_plan_forget().  Thread-safe.
 */
int	customer_plan(const struct settings *s, const char *customer_id,
	    const struct settings_plan **plan, struct mk_err *err);

/* Drop customer_id's cached plan (a subscription webhook says it changed). */
void	customer_plan_forget(const char *customer_id);

#endif
