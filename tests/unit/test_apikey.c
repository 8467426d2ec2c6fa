/* test_apikey.c: API key generation, hashing, parsing and constant-time comparison. */
#include <criterion/criterion.h>
#include <string.h>

#include "apikey.h"

Test(apikey, generated_keys_are_well_formed_and_distinct)
{
	char	a[APIKEY_MAX], b[APIKEY_MAX];

	cr_assert_eq(apikey_generate(APIKEY_PREFIX, a, sizeof a), 0);
	cr_assert_eq(apikey_generate(APIKEY_PREFIX, b, sizeof b), 0);
	cr_expect_eq(strlen(a), strlen(APIKEY_PREFIX) + APIKEY_B64_LEN);
	cr_expect(apikey_well_formed(APIKEY_PREFIX, a), "%s", a);
	cr_expect(apikey_well_formed(APIKEY_PREFIX, b), "%s", b);
	cr_expect_str_neq(a, b);
	/* only base64url characters after the prefix */
	cr_expect_eq(strspn(a + 3, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	    "0123456789-_"), APIKEY_B64_LEN);
	/* claim tokens are another kind, not usable as keys */
	cr_assert_eq(apikey_generate(APIKEY_CLAIM_PREFIX, b, sizeof b), 0);
	cr_expect(apikey_well_formed(APIKEY_CLAIM_PREFIX, b));
	cr_expect(!apikey_well_formed(APIKEY_PREFIX, b));
	/* too small an output buffer is refused, not truncated */
	cr_expect_eq(apikey_generate(APIKEY_PREFIX, a, 40), -1);
}

Test(apikey, many_keys_never_repeat_and_use_every_character)
{
	char	k[APIKEY_MAX], first[APIKEY_MAX];
	int	seen[256] = { 0 };

	cr_assert_eq(apikey_generate(APIKEY_PREFIX, first, sizeof first), 0);
	for (int i = 0; i < 2000; i++) {
		cr_assert_eq(apikey_generate(APIKEY_PREFIX, k, sizeof k), 0);
		cr_assert_str_neq(k, first);
		for (size_t j = 3; k[j] != '\0'; j++)
			seen[(unsigned char)k[j]] = 1;
	}
	int n = 0;
	for (int c = 0; c < 256; c++)
		n += seen[c];
	cr_expect_eq(n, 64, "all 64 base64url characters appear (%d)", n);
}

Test(apikey, well_formed_is_strict)
{
	const char *bad[] = {
		"", "mk_", "mk_short",
		"mk_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",	/* 42 */
		"mk_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",	/* 44 */
		"mk_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA+",	/* '+' is not base64url */
		"mk_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
		"MK_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
		"xx_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
		"mk_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n",
	};

	cr_expect(apikey_well_formed(APIKEY_PREFIX,
	    "mk_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"));
	cr_expect(!apikey_well_formed(APIKEY_PREFIX, NULL));
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		cr_expect(!apikey_well_formed(APIKEY_PREFIX, bad[i]), "accepted %s", bad[i]);
}

Test(apikey, hash_is_hex_sha256)
{
	char h[APIKEY_HASH_HEX], h2[APIKEY_HASH_HEX];

	cr_assert_eq(apikey_hash("abc", h), 0);
	cr_expect_str_eq(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	cr_assert_eq(apikey_hash("mk_x", h), 0);
	cr_assert_eq(apikey_hash("mk_y", h2), 0);
	cr_expect_str_neq(h, h2);
	cr_expect_eq(strlen(h), 64);
}

Test(apikey, verify_compares_whole_values)
{
	char	key[APIKEY_MAX], stored[APIKEY_HASH_HEX], given[APIKEY_HASH_HEX];

	cr_assert_eq(apikey_generate(APIKEY_PREFIX, key, sizeof key), 0);
	cr_assert_eq(apikey_hash(key, stored), 0);
	cr_assert_eq(apikey_hash(key, given), 0);
	cr_expect(apikey_equal(stored, given));
	/* one character off, anywhere */
	key[10] = key[10] == 'A' ? 'B' : 'A';
	cr_assert_eq(apikey_hash(key, given), 0);
	cr_expect(!apikey_equal(stored, given));
	cr_expect(!apikey_equal("abc", "abcd"));
	cr_expect(!apikey_equal("abcd", "abc"));
	cr_expect(!apikey_equal("", "a"));
	cr_expect(apikey_equal("", ""));
	cr_expect(!apikey_equal("abcd", "abce"));
}

Test(apikey, bearer_header_parsing)
{
	char	out[APIKEY_MAX];

	cr_expect_eq(apikey_from_bearer("Bearer mk_abc", out, sizeof out), 0);
	cr_expect_str_eq(out, "mk_abc");
	cr_expect_eq(apikey_from_bearer("bearer   mk_abc  ", out, sizeof out), 0, "case, spaces");
	cr_expect_str_eq(out, "mk_abc");
	cr_expect_eq(apikey_from_bearer("BEARER mk_abc", out, sizeof out), 0);
	cr_expect_eq(apikey_from_bearer("", out, sizeof out), -1);
	cr_expect_str_eq(out, "");
	cr_expect_eq(apikey_from_bearer("Bearer", out, sizeof out), -1);
	cr_expect_eq(apikey_from_bearer("Bearer ", out, sizeof out), -1);
	cr_expect_eq(apikey_from_bearer("Basic bWs6eA==", out, sizeof out), -1);
	cr_expect_eq(apikey_from_bearer("Bearermk_abc", out, sizeof out), -1);
	cr_expect_eq(apikey_from_bearer("Bearer a b", out, sizeof out), -1, "two tokens");
	cr_expect_eq(apikey_from_bearer("Bearer 0123456789", out, 8), -1, "too long for out");
}
