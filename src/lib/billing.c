/* billing.c: debit, send, compensate — one credit per email. */
#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "billing.h"
#include "dodo.h"
#include "log.h"
#include "settings.h"

#define KEY_RANDOM_BYTES	16	/* 128 bits: collisions are not a concern */

static void
billing_hex(const unsigned char *p, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[p[i] >> 4];
		out[2 * i + 1] = digits[p[i] & 15];
	}
	out[2 * n] = '\0';
}

int
billing_key_base(const char *customer_id, const char *client_key, char *out, size_t outlen)
{
	unsigned char	 md[EVP_MAX_MD_SIZE];
	unsigned int	 mdlen = 0;
	EVP_MD_CTX	*ctx;
	int		 ok;

	if (client_key == NULL) {
		if (outlen < 2 * KEY_RANDOM_BYTES + 1 || RAND_bytes(md, KEY_RANDOM_BYTES) != 1)
			return -1;
		billing_hex(md, KEY_RANDOM_BYTES, out);
		return 0;
	}
	if ((ctx = EVP_MD_CTX_new()) == NULL)
		return -1;
	/* the NUL separates the two parts: ("ab","c") and ("a","bc") differ */
	ok = EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1 &&
	    EVP_DigestUpdate(ctx, customer_id, strlen(customer_id) + 1) == 1 &&
	    EVP_DigestUpdate(ctx, client_key, strlen(client_key)) == 1 &&
	    EVP_DigestFinal_ex(ctx, md, &mdlen) == 1;
	EVP_MD_CTX_free(ctx);
	if (!ok || outlen < 2 * (size_t)mdlen + 1)
		return -1;
	billing_hex(md, mdlen, out);
	return 0;
}

int
billing_send(const struct settings *s, const struct mail_provider *mp,
    const char *customer_id, const char *client_key, struct mail_message *msg,
    struct mail_result *out, struct mk_err *err)
{
	struct dodo_ledger_result	 debit, refund;
	struct mk_err			 rerr;
	char				 base[65], debit_key[BILLING_KEY_MAX];
	char				 send_key[BILLING_KEY_MAX], refund_key[BILLING_KEY_MAX];

	if (billing_key_base(customer_id, client_key, base, sizeof base) == -1)
		return mk_fail(err, 500, "cannot derive an idempotency key");
	snprintf(debit_key, sizeof debit_key, "mk-send-%s-debit", base);
	snprintf(send_key, sizeof send_key, "mk-send-%s", base);
	snprintf(refund_key, sizeof refund_key, "mk-send-%s-refund", base);

	if (dodo_ledger_entry(s, customer_id, DODO_DEBIT, "1", "email send", debit_key,
	    &debit, err) == -1) {
		if (err->maybe_done)
			log_warn("debit %s for %s: outcome unknown (%s)", debit_key, customer_id,
			    err->msg);
		return -1;
	}
	if (debit.outcome == DODO_LEDGER_INSUFFICIENT)
		return mk_fail(err, 402, "%s", BILLING_NO_CREDIT_MSG);

	msg->idempotency_key = send_key;
	if (mp->send(s, msg, out, err) == 0)
		return 0;
	if (err->maybe_done) {
		/* it may have gone out: keep the credit; a retry with the same key resolves it */
		log_warn("send %s for %s: outcome unknown, credit kept (%s)", send_key,
		    customer_id, err->msg);
		return -1;
	}
	/* the provider refused: nothing was sent, so give the credit back */
	if (dodo_ledger_entry(s, customer_id, DODO_CREDIT, "1", "refund: email not sent",
	    refund_key, &refund, &rerr) == -1)
		log_error("refund %s for %s failed: %s", refund_key, customer_id, rerr.msg);
	return -1;
}
