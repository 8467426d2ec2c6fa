/* admin.c: mailkit-admin — operator commands: reconcile the send journal with Dodo's ledger, manage API keys. */
#define _GNU_SOURCE	/* strptime, timegm */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>

#include "billing.h"
#include "mailkit.h"
#include "store.h"

#define RECONCILE_MIN_AGE_SEC	60	/* leave fresher rows to the client's own retry */
#define RECONCILE_WINDOW_HOURS	24	/* compare the sends of the last day by default */
#define RECONCILE_CUSTOMERS_MAX	4096	/* customers compared in one run */
#define RECONCILE_PAGES_MAX	100	/* ledger pages read per customer (x100 entries) */

static struct settings		 settings;
static const struct mail_provider *provider;

/* Resolver pass: drive every abandoned row on with its own keys. */
struct resume_tally {
	int	final, pending, failed;
};

static int
reconcile_resume_one(const struct store_send *row, void *arg)
{
	struct resume_tally	*t = arg;
	struct mk_err		 err;

	switch (billing_resume(&settings, provider, row, &err)) {
	case 0:
		t->final++;
		break;
	case 1:
		t->pending++;
		break;
	default:
		t->failed++;
		fprintf(stderr, "mailkit-admin: resuming %.12s…: %s\n", row->key, err.msg);
		break;
	}
	return 0;
}

/* One customer's journal rows and what Dodo's ledger says about them. */
struct customer_tally {
	char	id[128];
	int	sent, refunded, rejected, pending;	/* journal */
	int	expect_debits, expect_refunds;		/* journal: entries Dodo must hold */
	int	debits, refunds;			/* Dodo: entries carrying our refs */
	int	drift;
};

struct compare {
	struct customer_tally	*c;
	size_t			 n;
	int			 overflow;
};

static struct customer_tally *
reconcile_customer(struct compare *cmp, const char *id)
{
	for (size_t i = 0; i < cmp->n; i++)
		if (strcmp(cmp->c[i].id, id) == 0)
			return &cmp->c[i];
	if (cmp->n == RECONCILE_CUSTOMERS_MAX) {
		cmp->overflow = 1;
		return NULL;
	}
	memset(&cmp->c[cmp->n], 0, sizeof cmp->c[0]);
	snprintf(cmp->c[cmp->n].id, sizeof cmp->c[0].id, "%s", id);
	return &cmp->c[cmp->n++];
}

static int
reconcile_count_row(const struct store_send *row, void *arg)
{
	struct customer_tally *c = reconcile_customer(arg, row->customer_id);

	if (c == NULL)
		return 1;
	switch (row->state) {
	case SEND_SENT:
		c->sent++;
		c->expect_debits++;
		break;
	case SEND_REFUNDED:
		c->refunded++;
		c->expect_debits++;
		c->expect_refunds++;
		break;
	case SEND_REJECTED:
		c->rejected++;
		break;
	default:
		c->pending++;	/* in flight or unresolved: not counted either way */
		break;
	}
	return 0;
}

/* Count the ledger entries that carry one of our refs (metadata.mailkit_ref). */
static int
reconcile_read_ledger(struct customer_tally *c, time_t since)
{
	struct mk_err	 err;
	json_object	*page, *items, *e, *meta, *v;

	for (int p = 0; p < RECONCILE_PAGES_MAX; p++) {
		size_t	n;
		int	older = 0;

		if ((page = dodo_list_ledger(&settings, c->id, 100, p, &err)) == NULL) {
			fprintf(stderr, "mailkit-admin: ledger of %s: %s\n", c->id, err.msg);
			return -1;
		}
		json_object_object_get_ex(page, "items", &items);
		n = json_object_array_length(items);
		for (size_t i = 0; i < n; i++) {
			struct tm	 tm;
			const char	*created;

			e = json_object_array_get_idx(items, i);
			if (json_object_object_get_ex(e, "created_at", &v) &&
			    (created = json_object_get_string(v)) != NULL &&
			    strptime(created, "%Y-%m-%dT%H:%M:%S", &tm) != NULL &&
			    timegm(&tm) < since) {
				older = 1;	/* newest first: the rest is older still */
				break;
			}
			if (!json_object_object_get_ex(e, "metadata", &meta) ||
			    !json_object_object_get_ex(meta, "mailkit_ref", &v))
				continue;
			json_object_object_get_ex(e, "is_credit", &v);
			if (json_object_get_boolean(v))
				c->refunds++;
			else
				c->debits++;
		}
		json_object_put(page);
		if (n == 0 || older)
			return 0;
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
	struct resume_tally	 rt = { 0 };
	struct compare		 cmp = { 0 };
	struct mk_err		 err;
	long			 min_age = RECONCILE_MIN_AGE_SEC, hours = RECONCILE_WINDOW_HOURS;
	int			 resume = 1, quiet = 0, ch, drift = 0, pending = 0;
	int			 sent = 0, net = 0;
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
	if (resume && store_send_pending(&settings, now - min_age, reconcile_resume_one, &rt,
	    &err) == -1) {
		fprintf(stderr, "mailkit-admin: %s\n", err.msg);
		return 1;
	}
	if ((cmp.c = calloc(RECONCILE_CUSTOMERS_MAX, sizeof cmp.c[0])) == NULL)
		return 1;
	if (store_send_list(&settings, since, reconcile_count_row, &cmp, &err) == -1) {
		fprintf(stderr, "mailkit-admin: %s\n", err.msg);
		free(cmp.c);
		return 1;
	}
	if (!quiet)
		printf("%-28s %6s %8s %8s %7s %7s %7s  %s\n", "customer", "sent", "refunded",
		    "rejected", "pending", "debits", "refunds", "verdict");
	for (size_t i = 0; i < cmp.n; i++) {
		struct customer_tally *c = &cmp.c[i];
		const char *verdict = "ok";

		if (reconcile_read_ledger(c, since) == -1) {
			verdict = "ledger unreadable";
			drift = 1;
		} else if (c->pending > 0) {
			/* an in-flight row may or may not have its entry yet */
			if (c->debits < c->expect_debits || c->debits > c->expect_debits + c->pending ||
			    c->refunds < c->expect_refunds ||
			    c->refunds > c->expect_refunds + c->pending)
				c->drift = 1;
			verdict = c->drift ? "DRIFT" : "ok (pending rows)";
		} else if (c->debits != c->expect_debits || c->refunds != c->expect_refunds)
			c->drift = 1;
		if (c->drift)
			verdict = "DRIFT";
		drift |= c->drift;
		pending += c->pending;
		sent += c->sent;
		net += c->debits - c->refunds;
		if (!quiet || c->drift)
			printf("%-28s %6d %8d %8d %7d %7d %7d  %s\n", c->id, c->sent, c->refunded,
			    c->rejected, c->pending, c->debits, c->refunds, verdict);
	}
	printf("reconcile: %zu customer%s, %d email%s sent, %d credit%s debited (net), "
	    "%d pending; resumed %d (%d still pending, %d failed); %s\n",
	    cmp.n, cmp.n == 1 ? "" : "s", sent, sent == 1 ? "" : "s", net, net == 1 ? "" : "s",
	    pending, rt.final, rt.pending, rt.failed,
	    drift ? "DRIFT FOUND" : cmp.overflow ? "too many customers; partial" : "no drift");
	free(cmp.c);
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

static void
usage(void)
{
	fprintf(stderr,
	    "usage: mailkit-admin reconcile [--no-resume] [--min-age SEC] [--hours H] [--quiet]\n"
	    "       mailkit-admin keys issue|rotate CUSTOMER_ID [--mail]\n"
	    "       mailkit-admin keys revoke CUSTOMER_ID\n"
	    "       mailkit-admin keys list [CUSTOMER_ID]\n"
	    "\n"
	    "  reconcile   finish abandoned sends (same idempotency keys), then compare\n"
	    "              MailKit's send journal with Dodo's credit ledger and report\n"
	    "              any drift; exit status 1 when there is drift.\n"
	    "  keys        issue: a first API key for the customer, printed once on\n"
	    "              stdout (--mail: also mailed to the customer); rotate: revoke\n"
	    "              the active key and issue a new one; revoke: revoke every key\n"
	    "              of the customer (requests with it get 401); list: the keys\n"
	    "              (a prefix only) with their state.\n"
	    "\n"
	    "Settings come from MAILKIT_ENV_FILE / the environment, as for the programs.\n");
}

int
main(int argc, char **argv)
{
	char	err[512];

	log_init("mailkit-admin", NULL);
	if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
		usage();
		return argc < 2 ? 2 : 0;
	}
	if (settings_load(&settings, SETTINGS_NEED_DODO | SETTINGS_NEED_CREDITS |
	    SETTINGS_NEED_MAIL, err, sizeof err) == -1)
		fatal("bad settings: %s", err);
	if (settings.log_file != NULL && *settings.log_file != '\0')
		log_init("mailkit-admin", settings.log_file);
	settings_log_warnings(&settings);
	upstream_configure(&settings);
	provider = mail_provider_find(settings.mail_provider);
	if (strcmp(argv[1], "reconcile") == 0)
		return cmd_reconcile(argc - 1, argv + 1);
	if (strcmp(argv[1], "keys") == 0)
		return cmd_keys(argc - 1, argv + 1);
	usage();
	return 2;
}
