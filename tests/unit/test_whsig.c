/* test_whsig.c: Standard Webhooks signatures against the spec repository's vectors. */
#include <string.h>
#include <time.h>

#include <criterion/criterion.h>

#include "whsig.h"

/* Vector 1: JS/Go/C#/Java "sign function works" (api-facts.md C.2). */
#define V1_SECRET	"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
#define V1_ID		"msg_p5jXN8AQM9LWM0D4loKWxJek"
#define V1_TS		"1614265330"
#define V1_NOW		((time_t)1614265330)
#define V1_BODY		"{\"test\": 2432232314}"
#define V1_SIG		"v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

/* Vector 2: Rust test_sign. */
#define V2_SECRET	"whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
#define V2_ID		"msg_27UH4WbU6Z5A5EzD8u03UvzRbpk"
#define V2_TS		"1649367553"
#define V2_NOW		((time_t)1649367553)
#define V2_BODY		"{\"email\":\"test@example.com\",\"username\":\"test_user\"}"
#define V2_SIG		"v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="

static struct whsig_key key1, key2;
static char why[128];

static void
setup(void)
{
	cr_assert_eq(whsig_key_from_secret(V1_SECRET, &key1), 0);
	cr_assert_eq(whsig_key_from_secret(V2_SECRET, &key2), 0);
	why[0] = '\0';
}

TestSuite(whsig, .init = setup);

static int
verify1(const char *sig, const char *body, time_t now)
{
	return whsig_verify(&key1, V1_ID, V1_TS, sig, body, strlen(body), now,
	    why, sizeof(why));
}

/* --- keys --- */

Test(whsig, key_vector_bytes)
{
	static const unsigned char k1[] = {
		0x31, 0xf2, 0x90, 0xf6, 0xbf, 0x06, 0x29, 0x8a, 0xab, 0x4f, 0x08, 0xd4,
		0x3c, 0x3f, 0x08, 0x2c, 0xf6, 0x48, 0xa3, 0x62, 0xda, 0x2d, 0xa4, 0xb0,
	};
	static const unsigned char k2[] = {
		0x0b, 0x61, 0x55, 0xb0, 0x14, 0x08, 0x86, 0xbb, 0x1c, 0x0a, 0x19, 0x50,
		0x20, 0xc5, 0x7e, 0x6f, 0x9b, 0x12, 0x62, 0xca, 0x68, 0x6f, 0xba, 0x03,
	};

	cr_assert_eq(key1.len, sizeof(k1));
	cr_assert_eq(memcmp(key1.bytes, k1, sizeof(k1)), 0);
	cr_assert_eq(key2.len, sizeof(k2));
	cr_assert_eq(memcmp(key2.bytes, k2, sizeof(k2)), 0);
}

Test(whsig, key_prefix_optional)
{
	struct whsig_key k;

	cr_assert_eq(whsig_key_from_secret(V1_SECRET + strlen("whsec_"), &k), 0);
	cr_assert_eq(k.len, key1.len);
	cr_assert_eq(memcmp(k.bytes, key1.bytes, k.len), 0);
}

Test(whsig, key_padding_tolerated)
{
	struct whsig_key padded, bare;

	/* "AQID" = 01 02 03; "AQIDBA==" = 01 02 03 04 */
	cr_assert_eq(whsig_key_from_secret("whsec_AQIDBA==", &padded), 0);
	cr_assert_eq(padded.len, 4);
	cr_assert_eq(whsig_key_from_secret("whsec_AQIDBA", &bare), 0);
	cr_assert_eq(bare.len, 4);
	cr_assert_eq(memcmp(bare.bytes, "\x01\x02\x03\x04", 4), 0);
	cr_assert_eq(whsig_key_from_secret("whsec_AQIDBAU", &bare), 0);	/* one '=' missing */
	cr_assert_eq(bare.len, 5);
	cr_assert_eq(whsig_key_from_secret("whsec_AQIDBAU=", &bare), 0);
	cr_assert_eq(bare.len, 5);
}

Test(whsig, key_rejects_bad_secrets)
{
	struct whsig_key k;
	char long_secret[200];

	cr_assert_eq(whsig_key_from_secret("", &k), -1);
	cr_assert_eq(whsig_key_from_secret("whsec_", &k), -1);
	cr_assert_eq(whsig_key_from_secret("whsec_====", &k), -1);
	cr_assert_eq(whsig_key_from_secret(NULL, &k), -1);
	cr_assert_eq(whsig_key_from_secret("whsec_AQIDB", &k), -1);	/* 5 chars: 6 dangling bits */
	cr_assert_eq(whsig_key_from_secret("whsec_AQ ID", &k), -1);
	cr_assert_eq(whsig_key_from_secret("whsec_AQ-_", &k), -1);	/* url-safe alphabet */
	cr_assert_eq(whsig_key_from_secret("whsec_AQIDBA===", &k), -1);	/* extra padding */
	cr_assert_eq(whsig_key_from_secret("whsec_AQ=ID", &k), -1);
	cr_assert_eq(k.len, 0);
	/* 66 bytes of key (88 chars) is over WHSIG_KEY_MAX */
	memset(long_secret, 'A', 88);
	long_secret[88] = '\0';
	cr_assert_eq(whsig_key_from_secret(long_secret, &k), -1);
	/* 64 bytes is fine: 86 chars + "==" */
	memset(long_secret, 'A', 86);
	memcpy(long_secret + 86, "==", 3);
	cr_assert_eq(whsig_key_from_secret(long_secret, &k), 0);
	cr_assert_eq(k.len, 64);
}

/* --- sign --- */

Test(whsig, sign_vector1)
{
	char out[WHSIG_SIGNATURE_MAX];

	cr_assert_eq(whsig_sign(&key1, V1_ID, V1_TS, V1_BODY, strlen(V1_BODY),
	    out, sizeof(out)), 0);
	cr_assert_str_eq(out, V1_SIG);
}

Test(whsig, sign_vector2)
{
	char out[WHSIG_SIGNATURE_MAX];

	cr_assert_eq(whsig_sign(&key2, V2_ID, V2_TS, V2_BODY, strlen(V2_BODY),
	    out, sizeof(out)), 0);
	cr_assert_str_eq(out, V2_SIG);
}

Test(whsig, sign_small_buffer_fails)
{
	char out[10];

	cr_assert_eq(whsig_sign(&key1, V1_ID, V1_TS, V1_BODY, strlen(V1_BODY),
	    out, sizeof(out)), -1);
}

/* --- verify --- */

Test(whsig, verify_vector1)
{
	cr_assert_eq(verify1(V1_SIG, V1_BODY, V1_NOW), 0, "%s", why);
}

Test(whsig, verify_vector2)
{
	cr_assert_eq(whsig_verify(&key2, V2_ID, V2_TS, V2_SIG, V2_BODY, strlen(V2_BODY),
	    V2_NOW, why, sizeof(why)), 0, "%s", why);
}

Test(whsig, verify_wrong_signature)
{
	cr_assert_eq(verify1("v1,dawfeoifkpqwoekfpqoekf", V1_BODY, V1_NOW), -1);
	cr_assert_str_eq(why, "no matching signature");
	cr_assert_eq(verify1("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA=",
	    V1_BODY, V1_NOW), -1);
}

Test(whsig, verify_bare_and_truncated)
{
	char trunc[9];

	cr_assert_eq(verify1("v1,", V1_BODY, V1_NOW), -1);
	memcpy(trunc, V1_SIG, 8);
	trunc[8] = '\0';
	cr_assert_eq(verify1(trunc, V1_BODY, V1_NOW), -1);
	cr_assert_eq(verify1("", V1_BODY, V1_NOW), -1);
	cr_assert_eq(verify1("v1", V1_BODY, V1_NOW), -1);
	cr_assert_eq(verify1(" ", V1_BODY, V1_NOW), -1);
	/* the right base64 without its version */
	cr_assert_eq(verify1(V1_SIG + 3, V1_BODY, V1_NOW), -1);
}

#define DECOYS_JS \
	"v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= " \
	"v2,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc="
#define DECOYS_RUST \
	"v1,tFtCZ5RDCPxzWQRWXWPgrCgE2frDBe9gjpbWQxnVfsQ= " \
	"v1,Mm7xgUVICxZfQ3bgf0h0Dof65L/IFx+PnZvnDWPCX6Q= " \
	"v1,9DfC1c3eeOrXB6w/5dIDydLNQaEyww5KalE5jLBZucE="

Test(whsig, verify_decoys_only_fail)
{
	cr_assert_eq(verify1(DECOYS_JS, V1_BODY, V1_NOW), -1);
	cr_assert_eq(verify1(DECOYS_RUST, V1_BODY, V1_NOW), -1);
}

Test(whsig, verify_decoys_plus_valid_pass)
{
	cr_assert_eq(verify1(DECOYS_JS " " V1_SIG, V1_BODY, V1_NOW), 0, "%s", why);
	cr_assert_eq(verify1(V1_SIG " " DECOYS_JS, V1_BODY, V1_NOW), 0, "%s", why);
	cr_assert_eq(verify1(DECOYS_RUST " " V1_SIG " " DECOYS_JS, V1_BODY, V1_NOW), 0,
	    "%s", why);
	cr_assert_eq(whsig_verify(&key2, V2_ID, V2_TS, DECOYS_RUST " " V2_SIG, V2_BODY,
	    strlen(V2_BODY), V2_NOW, why, sizeof(why)), 0, "%s", why);
}

Test(whsig, verify_other_versions_ignored)
{
	/* the valid MAC under another version label is not a v1 signature */
	cr_assert_eq(verify1("v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
	    V1_BODY, V1_NOW), -1);
	cr_assert_str_eq(why, "no v1 signature");
	cr_assert_eq(verify1("v1a,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
	    V1_BODY, V1_NOW), -1);
	cr_assert_eq(verify1("v1a,xyz v2,abc " V1_SIG, V1_BODY, V1_NOW), 0, "%s", why);
}

Test(whsig, verify_time_window)
{
	cr_assert_eq(verify1(V1_SIG, V1_BODY, V1_NOW + WHSIG_TOLERANCE_SEC), 0);
	cr_assert_eq(verify1(V1_SIG, V1_BODY, V1_NOW - WHSIG_TOLERANCE_SEC), 0);
	cr_assert_eq(verify1(V1_SIG, V1_BODY, V1_NOW + WHSIG_TOLERANCE_SEC + 1), -1);
	cr_assert_str_eq(why, "webhook-timestamp too old");
	cr_assert_eq(verify1(V1_SIG, V1_BODY, V1_NOW - WHSIG_TOLERANCE_SEC - 1), -1);
	cr_assert_str_eq(why, "webhook-timestamp too new");
	cr_assert_eq(verify1(V1_SIG, V1_BODY, time(NULL)), -1);
}

Test(whsig, verify_timestamp_must_be_digits)
{
	static const char *bad[] = {
		"1614265330a", " 1614265330", "1614265330 ", "+1614265330",
		"-1614265330", "1614265330.0", "0x60379ef2", "", "1614265330000000",
	};
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_assert_eq(whsig_verify(&key1, V1_ID, bad[i], V1_SIG, V1_BODY,
		    strlen(V1_BODY), V1_NOW, why, sizeof(why)), -1, "accepted '%s'", bad[i]);
}

Test(whsig, verify_missing_parts)
{
	cr_assert_eq(whsig_verify(&key1, "", V1_TS, V1_SIG, V1_BODY, strlen(V1_BODY),
	    V1_NOW, why, sizeof(why)), -1);
	cr_assert_eq(whsig_verify(&key1, NULL, V1_TS, V1_SIG, V1_BODY, strlen(V1_BODY),
	    V1_NOW, why, sizeof(why)), -1);
	cr_assert_eq(whsig_verify(&key1, V1_ID, NULL, V1_SIG, V1_BODY, strlen(V1_BODY),
	    V1_NOW, why, sizeof(why)), -1);
	cr_assert_eq(whsig_verify(&key1, V1_ID, V1_TS, NULL, V1_BODY, strlen(V1_BODY),
	    V1_NOW, why, sizeof(why)), -1);
}

Test(whsig, verify_empty_key_rejected)
{
	struct whsig_key empty;

	memset(&empty, 0, sizeof(empty));
	cr_assert_eq(whsig_verify(&empty, V1_ID, V1_TS, V1_SIG, V1_BODY, strlen(V1_BODY),
	    V1_NOW, why, sizeof(why)), -1);
	cr_assert_eq(whsig_sign(&empty, V1_ID, V1_TS, V1_BODY, strlen(V1_BODY),
	    why, sizeof(why)), -1);
}

Test(whsig, verify_body_one_byte_changed)
{
	char body[] = V1_BODY;

	body[10] ^= 1;
	cr_assert_eq(verify1(V1_SIG, body, V1_NOW), -1);
	/* and one byte fewer */
	cr_assert_eq(whsig_verify(&key1, V1_ID, V1_TS, V1_SIG, V1_BODY,
	    strlen(V1_BODY) - 1, V1_NOW, why, sizeof(why)), -1);
}

Test(whsig, verify_other_id_fails)
{
	cr_assert_eq(whsig_verify(&key1, "msg_other", V1_TS, V1_SIG, V1_BODY,
	    strlen(V1_BODY), V1_NOW, why, sizeof(why)), -1);
}

Test(whsig, verify_wrong_key_fails)
{
	cr_assert_eq(whsig_verify(&key2, V1_ID, V1_TS, V1_SIG, V1_BODY, strlen(V1_BODY),
	    V1_NOW, why, sizeof(why)), -1);
}

Test(whsig, verify_empty_payload)
{
	char sig[WHSIG_SIGNATURE_MAX];

	cr_assert_eq(whsig_sign(&key1, V1_ID, V1_TS, "", 0, sig, sizeof(sig)), 0);
	cr_assert_eq(verify1(sig, "", V1_NOW), 0, "%s", why);
	cr_assert_eq(whsig_verify(&key1, V1_ID, V1_TS, sig, NULL, 0, V1_NOW,
	    why, sizeof(why)), 0, "%s", why);
	cr_assert_eq(verify1(sig, V1_BODY, V1_NOW), -1);
}

Test(whsig, verify_body_with_nul_bytes)
{
	static const char body[] = "{\"a\":1}\0tail";
	char sig[WHSIG_SIGNATURE_MAX];

	cr_assert_eq(whsig_sign(&key1, V1_ID, V1_TS, body, sizeof(body) - 1, sig,
	    sizeof(sig)), 0);
	cr_assert_eq(whsig_verify(&key1, V1_ID, V1_TS, sig, body, sizeof(body) - 1,
	    V1_NOW, why, sizeof(why)), 0, "%s", why);
	/* the part before the NUL alone is a different message */
	cr_assert_eq(verify1(sig, body, V1_NOW), -1);
}

Test(whsig, why_never_contains_secret)
{
	cr_assert_eq(verify1("v1,AAAA", V1_BODY, V1_NOW), -1);
	cr_assert_null(strstr(why, "MfKQ9r8G"));
}
