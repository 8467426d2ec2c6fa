/* customer_plan.c: a customer's plan from their active subscriptions, with a small per-process cache. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <json-c/json.h>

#include "buf.h"
#include "clock.h"
#include "customer_plan.h"
#include "dodo.h"
#include "settings.h"
#include "url.h"
#include "valid.h"

static struct customer_plan_slot {
	char		 customer_id[CUSTOMER_ID_MAX + 1];
	int		 plan;		/* index into settings->plans, -1: none */
	long long	 at;		/* clock_ms() of the lookup; 0: empty */
} slots[CUSTOMER_PLAN_SLOTS];
static pthread_mutex_t slots_lock = PTHREAD_MUTEX_INITIALIZER;

/* FNV-1a of the id: the customer's one slot. */
static size_t
customer_plan_slot(const char *customer_id)
{
	unsigned	h = 2166136261u;

	for (const char *p = customer_id; *p != '\0'; p++)
		h = (h ^ (unsigned char)*p) * 16777619u;
	return h % CUSTOMER_PLAN_SLOTS;
}

/* The plan index of the first subscription in page that sells a plan, or -1. */
static int
customer_plan_pick(const struct settings *s, json_object *page)
{
	json_object	*items, *sub, *product;
	size_t		 n;

	if (!json_object_object_get_ex(page, "items", &items))
		return -1;
	n = json_object_array_length(items);
	for (size_t i = 0; i < n; i++) {
		const struct settings_plan *p;

		sub = json_object_array_get_idx(items, i);
		if (!json_object_object_get_ex(sub, "product_id", &product) ||
		    !json_object_is_type(product, json_type_string))
			continue;
		if ((p = settings_plan_by_product(s, json_object_get_string(product))) != NULL)
			return (int)(p - s->plans);
	}
	return -1;
}

int
customer_plan(const struct settings *s, const char *customer_id,
    const struct settings_plan **plan, struct mk_err *err)
{
	struct customer_plan_slot *slot = &slots[customer_plan_slot(customer_id)];
	json_object	*page;
	struct buf	 path;
	long long	 now = clock_ms();
	int		 idx = -2;

	*plan = NULL;
	if (strlen(customer_id) > CUSTOMER_ID_MAX)
		return mk_fail(err, 404, "unknown customer");
	pthread_mutex_lock(&slots_lock);
	if (slot->at != 0 && now - slot->at < CUSTOMER_PLAN_CACHE_MS &&
	    strcmp(slot->customer_id, customer_id) == 0)
		idx = slot->plan;
	pthread_mutex_unlock(&slots_lock);
	if (idx == -2) {
		buf_init(&path, 256);
		if (buf_printf(&path, "/subscriptions?status=active&page_size=%d&customer_id=",
		    CUSTOMER_PLAN_SUBS_MAX) == -1 || url_encode_component(&path, customer_id) == -1) {
			buf_free(&path);
			return mk_fail(err, 500, "out of memory");
		}
		page = dodo_get_object(s, path.data, err);
		buf_free(&path);
		if (page == NULL)
			return -1;
		idx = customer_plan_pick(s, page);
		json_object_put(page);
		pthread_mutex_lock(&slots_lock);
		snprintf(slot->customer_id, sizeof slot->customer_id, "%s", customer_id);
		slot->plan = idx;
		slot->at = now > 0 ? now : 1;
		pthread_mutex_unlock(&slots_lock);
	}
	if (idx >= 0 && (size_t)idx < s->nplans)
		*plan = &s->plans[idx];
	return 0;
}

void
customer_plan_forget(const char *customer_id)
{
	struct customer_plan_slot *slot = &slots[customer_plan_slot(customer_id)];

	pthread_mutex_lock(&slots_lock);
	if (strcmp(slot->customer_id, customer_id) == 0)
		slot->at = 0;
	pthread_mutex_unlock(&slots_lock);
}
