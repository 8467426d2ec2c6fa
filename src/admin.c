/* admin.c: mailkit-admin — operator commands: reconcile the send journal with Dodo's ledger, manage API keys. */
#define _GNU_SOURCE	/* strptime, timegm */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>

#include "billing.h"
#include "mailkit.h"
#include "setup.h"
#include "store.h"
#include "usage.h"

#define RECONCILE_MIN_AGE_SEC	60	/* leave fresher rows to the client's own retry */
#define RECONCILE_WINDOW_HOURS	24	/* compare the sends of the last day by default */
#define RECONCILE_ROWS_MAX	200000	/* journal rows compared in one run */
#define RECONCILE_PAGES_MAX	100	/* ledger pages read per customer (x100 entries) */
#define RECONCILE_PASSES_MAX	100	/* resolver passes in one run */

static struct settings		 settings;
static const struct mail_provider *provider;

/*
 * One journal row as the snapshot holds it, and what Dodo's ledger holds
 * under its ref (metadata.mailkit_ref = the row's key).
 */
struct recon_row {
	struct store_send	 row;		/* message not kept */
	int			 debits, refunds;	/* ledger entries */
	long			 debited, refunded;	/* their credits (one per recipient) */
};

struct recon {
	struct recon_row	*rows;
	size_t			 n, cap;
	int			 overflow;
};

/* store_send_list callback: copy the row (no store calls from here). */
static int
recon_collect(const struct store_send *row, void *arg)
{
	struct recon	*r = arg;

	if (r->n == r->cap) {
		size_t		 cap = r->cap == 0 ? 1024 : r->cap * 2;
		struct recon_row *grown;

		if (cap > RECONCILE_ROWS_MAX || (grown = realloc(r->rows, cap * sizeof *grown)) == NULL) {
			r->overflow = 1;
			return 1;
		}
		r->rows = grown;
		r->cap = cap;
	}
	memset(&r->rows[r->n], 0, sizeof r->rows[0]);
	r->rows[r->n].row = *row;
	r->rows[r->n].row.message = NULL;
	r->n++;
	return 0;
}

static int
recon_by_key(const void *a, const void *b)
{
	return strcmp(((const struct recon_row *)a)->row.key, ((const struct recon_row *)b)->row.key);
}

static int
recon_by_customer(const void *a, const void *b)
{
	const struct recon_row *x = a, *y = b;
	int c = strcmp(x->row.customer_id, y->row.customer_id);

	return c != 0 ? c : strcmp(x->row.key, y->row.key);
}

static struct recon_row *
recon_find(struct recon_row *rows, size_t n, const char *ref)
{
	struct recon_row key;

	snprintf(key.row.key, sizeof key.row.key, "%s", ref);
	return bsearch(&key, rows, n, sizeof rows[0], recon_by_key);
}

/* One customer's tally, printed as a line. */
struct recon_customer {
	int	sent, failed, pending, debits, refunds;
	int	repaired, unattributed;
	long	net_credits;	/* credits debited less refunded, final rows */
};

/* 1 when the journal holds ref as a key of customer_id's (a row newer than the snapshot). */
static int
recon_row_exists(const char *customer_id, const char *ref)
{
	struct store_send	row;
	struct mk_err		err;
	int			r;

	r = store_send_get(&settings, customer_id, ref, &row, &err);
	if (r == 1) {
		r = strcmp(row.key, ref) == 0;
		store_send_free(&row);
	}
	return r == 1;
}

/*
 * Read customer_id's ledger (newest first) back to `since`, and count the
 * entries carrying one of our refs against the rows [rows, rows + n) of
 * that customer, sorted by key.  An entry whose ref the snapshot lacks is
 * looked up again: a row made after the snapshot is left for the next run
 * (whatever the two clocks say); a ref the journal does not hold at all is
 * unattributed.
 */
static int
recon_read_ledger(const char *customer_id, struct recon_row *rows, size_t n, time_t since,
    struct recon_customer *c)
{
	struct mk_err	 err;
	json_object	*page, *items, *e, *meta, *v;

	for (int p = 0; p < RECONCILE_PAGES_MAX; p++) {
		size_t	count;
		int	older = 0;

		if ((page = dodo_list_ledger(&settings, customer_id, 100, p, &err)) == NULL) {
			fprintf(stderr, "mailkit-admin: ledger of %s: %s\n", customer_id, err.msg);
			return -1;
		}
		json_object_object_get_ex(page, "items", &items);
		count = json_object_array_length(items);
		for (size_t i = 0; i < count; i++) {
			struct recon_row	*r;
			struct tm		 tm;
			const char		*created, *ref;
			time_t			 at = 0;
			int			 credit;

			e = json_object_array_get_idx(items, i);
			memset(&tm, 0, sizeof tm);
			if (json_object_object_get_ex(e, "created_at", &v) &&
			    (created = json_object_get_string(v)) != NULL &&
			    strptime(created, "%Y-%m-%dT%H:%M:%S", &tm) != NULL)
				at = timegm(&tm);
			if (at != 0 && at < since) {
				older = 1;	/* newest first: the rest is older still */
				break;
			}
			if (!json_object_object_get_ex(e, "metadata", &meta) ||
			    !json_object_object_get_ex(meta, "mailkit_ref", &v) ||
			    (ref = json_object_get_string(v)) == NULL)
				continue;
			json_object_object_get_ex(e, "is_credit", &v);
			credit = json_object_get_boolean(v);
			if ((r = recon_find(rows, n, ref)) != NULL) {
				long amount = json_object_object_get_ex(e, "amount", &v) ?
				    strtol(json_object_get_string(v), NULL, 10) : 0;

				if (credit) {
					r->refunds++;
					r->refunded += amount;
				} else {
					r->debits++;
					r->debited += amount;
				}
			} else if (!recon_row_exists(customer_id, ref)) {
				c->unattributed++;
				printf("  %s: %s entry %s with mailkit_ref %.64s matches no journal "
				    "row of this customer\n", customer_id, credit ? "credit" : "debit",
				    json_object_object_get_ex(e, "id", &v) ?
				    json_object_get_string(v) : "?", ref);
			}
		}
		json_object_put(page);
		if (count == 0 || older)
			break;
	}
	return 0;
}

/*
 * Judge one final row against its entries and repair what can be repaired:
 * a debit that stands for a send that went out nowhere (refused, voided,
 * refunded without its refund) gets the row's own refund, idempotently.
 */
static void
recon_judge(struct recon_row *r, struct recon_customer *c)
{
	const struct store_send	*row = &r->row;
	struct mk_err		 err;
	int			 net = r->debits - r->refunds;

	if (row->state < SEND_SENT) {
		c->pending++;		/* the resolver's: its entries may still be on the way */
		return;
	}
	if (row->state == SEND_SENT || row->state == SEND_UNCONFIRMED) {
		c->sent++;	/* unconfirmed: maybe delivered; its debit stands */
		if (r->debits == 1 && r->refunds == 0)
			return;
	} else {
		c->failed++;
		if (net == 0 && r->debits <= 1)
			return;
		if (net == 1 && r->debits == 1) {
			if (billing_refund_orphan(&settings, row, &err) == -1) {
				printf("  %s: send %.12s… (%s): a debit stands and its refund "
				    "failed (%s); retried next run\n", row->customer_id, row->key,
				    store_send_state_name(row->state), err.msg);
				c->unattributed++;
				return;
			}
			log_warn("reconcile: send %.12s… (%s, answered %d): refunded a debit that "
			    "stood", row->key, store_send_state_name(row->state), row->status);
			printf("  %s: send %.12s… (%s): refunded a debit that stood\n",
			    row->customer_id, row->key, store_send_state_name(row->state));
			r->refunds++;
			r->refunded = r->debited;
			c->repaired++;
			return;
		}
	}
	c->unattributed++;
	printf("  %s: send %.12s… (%s, answered %d): %d debit%s and %d refund%s; expected %s\n",
	    row->customer_id, row->key, store_send_state_name(row->state), row->status, r->debits,
	    r->debits == 1 ? "" : "s", r->refunds, r->refunds == 1 ? "" : "s",
	    row->state == SEND_SENT || row->state == SEND_UNCONFIRMED ? "one debit" :
	    "none net");
}

/*
 * Drive the usage outbox (usage.h) until a pass takes less than a full
 * batch: events ingested with their stable ids, too-old ones billed by
 * ledger debit.  *rows counts the rows handled.  0 / -1 (printed).
 */
static int
recon_usage_outbox(int *rows)
{
	struct mk_err	err;
	int		n;

	for (int pass = 0; pass < RECONCILE_PASSES_MAX; pass++) {
		if ((n = usage_outbox_pass(&settings, &err)) == -1) {
			fprintf(stderr, "mailkit-admin: usage outbox: %s\n", err.msg);
			return -1;
		}
		*rows += n;
		if (n < DODO_INGEST_MAX)
			break;
	}
	return 0;
}

static int
cmd_reconcile(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "no-resume", no_argument, NULL, 'n' },
		{ "min-age", required_argument, NULL, 'a' },
		{ "hours", required_argument, NULL, 'H' },
		{ "quiet", no_argument, NULL, 'q' },
		{ NULL, 0, NULL, 0 },
	};
	struct billing_tally	 rt = { 0 };
	struct recon		 snap = { 0 };
	struct mk_err		 err;
	long			 min_age = RECONCILE_MIN_AGE_SEC, hours = RECONCILE_WINDOW_HOURS;
	int			 resume = 1, quiet = 0, ch, drift = 0, pending = 0, repaired = 0;
	int			 usage_rows = 0;
	int			 sent = 0, ncustomers = 0;
	long			 net = 0;
	time_t			 now = time(NULL), since;

	while ((ch = getopt_long(argc, argv, "nqa:H:", opts, NULL)) != -1) {
		switch (ch) {
		case 'n': resume = 0; break;
		case 'q': quiet = 1; break;
		case 'a': min_age = strtol(optarg, NULL, 10); break;
		case 'H': hours = strtol(optarg, NULL, 10); break;
		default: return 2;
		}
	}
	if (min_age < 0 || hours < 1 || hours > 24 * 30) {
		fprintf(stderr, "mailkit-admin: --min-age must be >= 0 and --hours 1..720\n");
		return 2;
	}
	since = now - hours * 3600;
	/* 1. the resolver: every due row one step on (pass by pass, each reads its list first) */
	for (int pass = 0; resume && pass < RECONCILE_PASSES_MAX; pass++) {
		struct billing_tally	t = { 0 };
		int			n;

		if ((n = billing_deliver_due(&settings, provider, time(NULL) - min_age,
		    BILLING_DELIVER_BATCH, &t, &err)) == -1) {
			fprintf(stderr, "mailkit-admin: %s\n", err.msg);
			return 1;
		}
		rt.final += t.final;
		rt.failed += t.failed;
		rt.busy = t.busy;
		rt.pending = t.pending;
		if (n < BILLING_DELIVER_BATCH || t.final == 0)
			break;
	}
	/* 1b. NeuralAPI: the usage outbox, as generate.fcgi's threads drain it (none
	 * may run: socket activation starts it only with a request) */
	if (resume && settings_is_neuralapi(&settings) &&
	    recon_usage_outbox(&usage_rows) == -1)
		return 1;
	/* 2. one snapshot of the journal (a single read transaction) */
	if (store_send_list(&settings, since, recon_collect, &snap, &err) == -1) {
		fprintf(stderr, "mailkit-admin: %s\n", err.msg);
		free(snap.rows);
		return 1;
	}
	/* 3. per customer: Dodo's entries against the rows, repairs, report */
	qsort(snap.rows, snap.n, sizeof snap.rows[0], recon_by_customer);
	if (!quiet)
		printf("%-28s %6s %6s %7s %7s %7s %7s %8s  %s\n", "customer", "sent", "failed",
		    "pending", "debits", "refunds", "credits", "repaired", "verdict");
	for (size_t i = 0, j; i < snap.n; i = j) {
		struct recon_customer	 c = { 0 };
		const char		*cus = snap.rows[i].row.customer_id, *verdict = "ok";

		for (j = i; j < snap.n && strcmp(snap.rows[j].row.customer_id, cus) == 0; j++)
			;
		/* rows [i, j) are this customer's, sorted by key for recon_find */
		ncustomers++;
		if (recon_read_ledger(cus, &snap.rows[i], j - i, since, &c) == -1) {
			verdict = "ledger unreadable";
			drift = 1;
		} else {
			for (size_t k = i; k < j; k++) {
				recon_judge(&snap.rows[k], &c);
				if (snap.rows[k].row.state >= SEND_SENT) {
					c.debits += snap.rows[k].debits;
					c.refunds += snap.rows[k].refunds;
					c.net_credits += snap.rows[k].debited -
					    snap.rows[k].refunded;
				}
			}
			if (c.unattributed > 0) {
				verdict = "DRIFT";
				drift = 1;
			} else if (c.repaired > 0)
				verdict = "repaired";
			else if (c.pending > 0)
				verdict = "ok (pending rows)";
		}
		pending += c.pending;
		sent += c.sent;
		net += c.net_credits;
		repaired += c.repaired;
		if (!quiet || c.unattributed > 0 || c.repaired > 0)
			printf("%-28s %6d %6d %7d %7d %7d %7ld %8d  %s\n", cus, c.sent, c.failed,
			    c.pending, c.debits, c.refunds, c.net_credits, c.repaired, verdict);
	}
	if (settings_is_neuralapi(&settings))
		printf("usage outbox: %d row%s handled (usage events ingested, or billed by "
		    "ledger debit when too old)\n", usage_rows, usage_rows == 1 ? "" : "s");
	printf("reconcile: %d customer%s, %d email%s sent, %ld credit%s debited (net), "
	    "%d pending; resumed %d (%d still pending, %d failed); repaired %d; %s\n",
	    ncustomers, ncustomers == 1 ? "" : "s", sent, sent == 1 ? "" : "s", net,
	    net == 1 ? "" : "s", pending, rt.final, rt.pending, rt.failed, repaired,
	    drift ? "DRIFT FOUND" : snap.overflow ? "too many rows; partial" : "no drift");
	free(snap.rows);
	return drift ? 1 : 0;
}

static int
keys_print(const struct store_key *k, void *arg)
{
	char		 created[32], revoked[32] = "active";
	struct tm	 tm;

	(void)arg;
	strftime(created, sizeof created, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&k->created_at, &tm));
	if (k->revoked_at != 0)
		strftime(revoked, sizeof revoked, "revoked %Y-%m-%dT%H:%M:%SZ",
		    gmtime_r(&k->revoked_at, &tm));
	printf("%-6lld %-28s %-18s %-14s %-20s %s\n", k->id, k->customer_id, k->shown,
	    k->source, created, revoked);
	return 0;
}

/*
 * keys issue|rotate CUSTOMER_ID [--mail]: print a new key once on stdout
 * (only its hash is kept); issue refuses when the customer has an active
 * key, rotate revokes it.  keys revoke CUSTOMER_ID; keys list [CUSTOMER_ID].
 */
static int
cmd_keys(int argc, char **argv)
{
	struct dodo_customer	 cus;
	struct mk_err		 err;
	const char		*sub, *id = NULL;
	char			 key[APIKEY_MAX];
	int			 mail = 0, rc;

	if (argc < 2) {
		fprintf(stderr, "mailkit-admin: keys needs issue, rotate, revoke or list\n");
		return 2;
	}
	sub = argv[1];
	for (int i = 2; i < argc; i++) {
		if (strcmp(argv[i], "--mail") == 0)
			mail = 1;
		else if (id == NULL && argv[i][0] != '-')
			id = argv[i];
		else {
			fprintf(stderr, "mailkit-admin: unexpected argument %s\n", argv[i]);
			return 2;
		}
	}
	if (id != NULL && !valid_customer_id(id)) {
		fprintf(stderr, "mailkit-admin: %s is not a customer id\n", id);
		return 2;
	}
	if (strcmp(sub, "list") == 0) {
		printf("%-6s %-28s %-18s %-14s %-20s %s\n", "id", "customer", "key", "source",
		    "created", "state");
		if (store_key_list(&settings, id != NULL ? id : "", keys_print, NULL, &err) == -1) {
			fprintf(stderr, "mailkit-admin: %s\n", err.msg);
			return 1;
		}
		return 0;
	}
	if (id == NULL) {
		fprintf(stderr, "mailkit-admin: keys %s needs a CUSTOMER_ID\n", sub);
		return 2;
	}
	if (strcmp(sub, "revoke") == 0) {
		if ((rc = store_key_revoke(&settings, id, &err)) == -1) {
			fprintf(stderr, "mailkit-admin: %s\n", err.msg);
			return 1;
		}
		log_info("[keys] %s: %d key%s revoked by mailkit-admin", id, rc, rc == 1 ? "" : "s");
		fprintf(stderr, "revoked %d key%s of %s\n", rc, rc == 1 ? "" : "s", id);
		return 0;
	}
	if (strcmp(sub, "issue") != 0 && strcmp(sub, "rotate") != 0) {
		fprintf(stderr, "mailkit-admin: unknown keys command %s\n", sub);
		return 2;
	}
	/* a key for a customer Dodo does not know would be useless */
	if (dodo_get_customer(&settings, id, &cus, &err) == -1) {
		fprintf(stderr, "mailkit-admin: customer %s: %s\n", id, err.msg);
		return 1;
	}
	rc = auth_issue_key(&settings, provider, id, cus.email, cus.name, "admin",
	    (strcmp(sub, "rotate") == 0 ? AUTH_ISSUE_ROTATE : 0) | (mail ? AUTH_ISSUE_MAIL : 0),
	    key, sizeof key, &err);
	if (rc == -1) {
		fprintf(stderr, "mailkit-admin: %s\n", err.msg);
		return 1;
	}
	if (rc == STORE_KEY_EXISTS) {
		fprintf(stderr, "mailkit-admin: %s already has an active key; use "
		    "'keys rotate %s' to replace it\n", id, id);
		return 1;
	}
	printf("%s\n", key);
	fflush(stdout);
	OPENSSL_cleanse(key, sizeof key);
	fprintf(stderr, "new key for %s printed above (shown once; MailKit keeps only its "
	    "hash)%s\n", id, mail ? " and mailed to the customer" : "");
	return 0;
}

/* A whole number option value: 0, or -1 (said on stderr) when it is not one. */
static int
admin_number(const char *name, const char *text, long *out)
{
	char	*end;

	errno = 0;
	*out = strtol(text, &end, 10);
	if (errno != 0 || end == text || *end != '\0') {
		fprintf(stderr, "mailkit-admin: --%s needs a whole number, not %s\n", name, text);
		return -1;
	}
	return 0;
}

/*
 * --plan-price CENTS (the first plan) or NAME=CENTS: where the number
 * goes (*num) and, for NAME=, the text after '='.  0 / -1 (said).
 */
static int
admin_tier_price(struct setup_plan *plan, char *arg, long **num)
{
	char	*eq = strchr(arg, '=');

	*num = &plan->plan_price;
	if (eq == NULL)
		return 0;
	*eq = '\0';
	for (size_t i = 0; i < plan->ntiers; i++)
		if (strcmp(plan->tiers[i].name, arg) == 0) {
			*num = i == 0 ? &plan->plan_price : &plan->tiers[i].price;
			memmove(arg, eq + 1, strlen(eq + 1) + 1);
			return 0;
		}
	fprintf(stderr, "mailkit-admin: --plan-price %s=: no such plan (PLANS)\n", arg);
	return -1;
}

static void
setup_say(const char *what, const struct setup_object *o)
{
	fprintf(stderr, "%-22s %s %s\n", what, o->created ? "created" : "found  ", o->id);
	if (o->note[0] != '\0')
		fprintf(stderr, "  warning: %s\n", o->note);
}

/*
 * setup [flags] [--write [FILE]]: create or find the catalog (setup.h) and
 * print its settings lines, or write them into the env file.
 */
static int
cmd_setup(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "name", required_argument, NULL, 'n' },
		{ "unit", required_argument, NULL, 'u' },
		{ "precision", required_argument, NULL, 'p' },
		{ "expiry-days", required_argument, NULL, 'e' },
		{ "currency", required_argument, NULL, 'c' },
		{ "plan-price", required_argument, NULL, 'P' },
		{ "plan-credits", required_argument, NULL, 'C' },
		{ "topup-price", required_argument, NULL, 'T' },
		{ "topup-credits", required_argument, NULL, 'K' },
		{ "low-balance-percent", required_argument, NULL, 'l' },
		{ "write", optional_argument, NULL, 'w' },
		{ NULL, 0, NULL, 0 },
	};
	struct setup_plan	 plan;
	struct setup_result	 r;
	struct mk_err		 err;
	const char		*write_to = NULL;
	char			 lines[1024];
	int			 write = 0, ch, idx = 0, rc = 1;
	long			*num;

	if (setup_plan_defaults(&plan, &settings, &err) == -1) {
		fprintf(stderr, "mailkit-admin: %s\n", err.msg);
		return 2;
	}
	while ((ch = getopt_long(argc, argv, "", opts, &idx)) != -1) {
		num = NULL;
		switch (ch) {
		case 'n': plan.entitlement_name = optarg; break;
		case 'u': plan.unit = optarg; break;
		case 'c': plan.currency = optarg; break;
		case 'p': num = &plan.precision; break;
		case 'e': num = &plan.expiry_days; break;
		case 'P':
			if (admin_tier_price(&plan, optarg, &num) == -1)
				return 2;
			break;
		case 'C': num = &plan.plan_credits; break;
		case 'T': num = &plan.topup_price; break;
		case 'K': num = &plan.topup_credits; break;
		case 'l': num = &plan.low_balance_percent; break;
		case 'w': write = 1; write_to = optarg; break;
		default: return 2;
		}
		if (num != NULL && admin_number(opts[idx].name, optarg, num) == -1)
			return 2;
	}
	/* --write FILE as well as --write=FILE */
	if (write && write_to == NULL && optind < argc)
		write_to = argv[optind++];
	if (optind < argc) {
		fprintf(stderr, "mailkit-admin: unexpected argument %s\n", argv[optind]);
		return 2;
	}
	if (write && write_to == NULL && (write_to = settings.env_file) == NULL) {
		fprintf(stderr, "mailkit-admin: no env file was read: say where, --write FILE\n");
		return 2;
	}
	if (setup_plan_check(&plan, &err) == -1) {
		fprintf(stderr, "mailkit-admin: %s\n", err.msg);
		return 2;
	}
	if (strncmp(plan.webhook_url, "https://", 8) != 0)
		fprintf(stderr, "mailkit-admin: warning: Dodo delivers webhooks to public https "
		    "URLs only; %s will not get them (set BASE_URL)\n", plan.webhook_url);
	if (setup_run(&settings, &plan, &r, &err) == -1) {
		fprintf(stderr, "mailkit-admin: setup against %s failed: %s%s\n",
		    settings.dodo_base_url, err.msg, err.status == 502 ? " (see the log line "
		    "above)" : "");
		goto out;
	}
	setup_say("credit entitlement", &r.entitlement);
	if (plan.metered)
		setup_say("meter", &r.meter);
	for (size_t i = 0; i < r.nplans; i++) {
		char what[64];

		snprintf(what, sizeof what, "plan product %s", plan.tiers[i].name);
		setup_say(r.nplans > 1 || plan.metered ? what : "plan product", &r.plans[i]);
	}
	setup_say("top-up product", &r.topup);
	setup_say("webhook endpoint", &r.webhook);
	if (setup_format(&r, lines, sizeof lines) == -1) {
		fprintf(stderr, "mailkit-admin: the settings lines are too long\n");
		goto out;
	}
	if (write) {
		if (setup_write_env(write_to, &r, &err) == -1) {
			fprintf(stderr, "mailkit-admin: %s\n", err.msg);
			goto out;
		}
		fprintf(stderr, "wrote CREDIT_ENTITLEMENT_ID, ");
		for (size_t i = 0; i < r.nplans; i++)
			fprintf(stderr, "%s, ", r.plan_keys[i]);
		fprintf(stderr, "TOPUP_PRODUCT_ID and DODO_WEBHOOK_KEY into %s (mode 0600); "
		    "restart MailKit to use them\n", write_to);
	} else
		fputs(lines, stdout);
	rc = 0;
out:
	OPENSSL_cleanse(lines, sizeof lines);
	OPENSSL_cleanse(r.webhook_secret, sizeof r.webhook_secret);
	return rc;
}

static void
usage(void)
{
	fprintf(stderr,
	    "usage: mailkit-admin reconcile [--no-resume] [--min-age SEC] [--hours H] [--quiet]\n"
	    "       mailkit-admin keys issue|rotate CUSTOMER_ID [--mail]\n"
	    "       mailkit-admin keys revoke CUSTOMER_ID\n"
	    "       mailkit-admin keys list [CUSTOMER_ID]\n"
	    "       mailkit-admin setup [--write [FILE]] [--name N] [--unit U] [--precision P]\n"
	    "           [--expiry-days D] [--currency C] [--plan-price [NAME=]CENTS] [--plan-credits N]\n"
	    "           [--topup-price CENTS] [--topup-credits N] [--low-balance-percent P]\n"
	    "\n"
	    "  reconcile   drive every due send on (same idempotency keys), then compare\n"
	    "              MailKit's send journal with Dodo's credit ledger per send,\n"
	    "              refund every debit that stands for an email not sent, and\n"
	    "              report what it cannot attribute; exit status 1 then.\n"
	    "  keys        issue: a first API key for the customer, printed once on\n"
	    "              stdout (--mail: also mailed to the customer); rotate: revoke\n"
	    "              the active key and issue a new one; revoke: revoke every key\n"
	    "              of the customer (requests with it get 401); list: the keys\n"
	    "              (a prefix only) with their state.\n"
	    "  setup       with only DODO_PAYMENTS_API_KEY and BASE_URL set: find or create\n"
	    "              the \"Email Credits\" entitlement (unit email, precision 0,\n"
	    "              30-day expiry), the $19/month plan and the $9 top-up (5,000\n"
	    "              credits each, low-balance alert at 20%%) and the webhook endpoint\n"
	    "              BASE_URL/webhooks/dodo; print the settings lines, or with\n"
	    "              --write put them into the env file (default: the one read).\n"
	    "              Running it again creates nothing new.\n"
	    "\n"
	    "Settings come from MAILKIT_ENV_FILE / the environment, as for the programs.\n");
}

int
main(int argc, char **argv)
{
	char	err[512];
	int	is_setup;

	log_init("mailkit-admin", NULL);
	if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
		usage();
		return argc < 2 ? 2 : 0;
	}
	/* setup makes what the other commands need: it needs only the key */
	is_setup = strcmp(argv[1], "setup") == 0;
	if (settings_load(&settings, is_setup ? SETTINGS_NEED_DODO : SETTINGS_NEED_DODO |
	    SETTINGS_NEED_CREDITS | SETTINGS_NEED_MAIL, err, sizeof err) == -1)
		fatal("bad settings: %s", err);
	/* setup is run by hand: its log lines belong on the terminal */
	if (!is_setup && settings.log_file != NULL && *settings.log_file != '\0')
		log_init("mailkit-admin", settings.log_file);
	settings_log_warnings(&settings);
	upstream_configure(&settings);
	provider = mail_provider_find(settings.mail_provider);
	if (strcmp(argv[1], "reconcile") == 0)
		return cmd_reconcile(argc - 1, argv + 1);
	if (strcmp(argv[1], "keys") == 0)
		return cmd_keys(argc - 1, argv + 1);
	if (is_setup)
		return cmd_setup(argc - 1, argv + 1);
	usage();
	return 2;
}
