/* test_url.c: building upstream URLs from untrusted ids, and query parsing. */
#include <criterion/criterion.h>
#include <string.h>

#include "buf.h"
#include "url.h"

Test(url, path_keeps_safe_ids_verbatim)
{
	char p[256];

	cr_assert_eq(url_path(p, sizeof p, "/credit-entitlements/{}/balances/{}",
	    "cde_123", "cus_Ab-9~x"), 0);
	cr_expect_str_eq(p, "/credit-entitlements/cde_123/balances/cus_Ab-9~x");
}

Test(url, slash_and_query_in_an_id_cannot_change_the_path)
{
	char p[256];

	cr_assert_eq(url_path(p, sizeof p, "/customers/{}", "../admin?x=1#f"), 0);
	cr_expect_str_eq(p, "/customers/%2E%2E%2Fadmin%3Fx%3D1%23f");
	/* exactly one '/' before the segment: the path has one more segment, not more */
	cr_expect_null(strchr(p + strlen("/customers/"), '/'));
	cr_expect_null(strchr(p, '?'));
	cr_expect_null(strchr(p, '#'));

	cr_assert_eq(url_path(p, sizeof p, "/customers/{}/x", "a/b"), 0);
	cr_expect_str_eq(p, "/customers/a%2Fb/x");
	cr_assert_eq(url_path(p, sizeof p, "/c/{}", "100%"), 0);
	cr_expect_str_eq(p, "/c/100%25");
	cr_assert_eq(url_path(p, sizeof p, "/c/{}", "\xff\r\n"), 0);
	cr_expect_str_eq(p, "/c/%FF%0D%0A");
}

Test(url, path_refuses_to_truncate)
{
	char p[12];

	cr_expect_eq(url_path(p, sizeof p, "/customers/{}", "cus_1"), -1);
	cr_expect_str_eq(p, "");
	cr_expect_eq(url_path(p, sizeof p, "/c/{}", "aaaaaaaa"), 0);
	cr_expect_eq(url_path(p, sizeof p, "/c/{}", "aaaaaaaaa"), -1);
	cr_expect_eq(url_path(p, sizeof p, "/c/{}", "aaaaaa/"), -1);	/* %2F needs 3 */
	cr_expect_eq(url_path(p, sizeof p, "/c/{}", NULL), -1);
}

Test(url, decode)
{
	char d[32];

	cr_expect_eq(url_decode("a%20b+c", 7, d, sizeof d, 0), 0);
	cr_expect_str_eq(d, "a b+c");
	cr_expect_eq(url_decode("a%20b+c", 7, d, sizeof d, 1), 0);
	cr_expect_str_eq(d, "a b c");
	cr_expect_eq(url_decode("%2f%2F", 6, d, sizeof d, 0), 0);
	cr_expect_str_eq(d, "//");
	cr_expect_eq(url_decode("bad%2", 5, d, sizeof d, 0), -1);
	cr_expect_eq(url_decode("bad%zz", 6, d, sizeof d, 0), -1);
	cr_expect_eq(url_decode("nul%00", 6, d, sizeof d, 0), -1);
	cr_expect_eq(url_decode("toolong", 7, d, 4, 0), -1);
}

Test(url, query_get)
{
	char v[64];

	cr_expect_eq(url_query_get("subscribed=1&subscription_id=sub_1&email=a%40b.com",
	    "email", v, sizeof v), 0);
	cr_expect_str_eq(v, "a@b.com");
	cr_expect_eq(url_query_get("a=1&ab=2", "ab", v, sizeof v), 0);
	cr_expect_str_eq(v, "2");
	cr_expect_eq(url_query_get("xa=1", "a", v, sizeof v), -1);
	cr_expect_eq(url_query_get("", "a", v, sizeof v), -1);
	cr_expect_eq(url_query_get("a", "a", v, sizeof v), -1);
	cr_expect_eq(url_query_get("name=Ada+Lovelace", "name", v, sizeof v), 0);
	cr_expect_str_eq(v, "Ada Lovelace");
}

Test(url, encode_component)
{
	struct buf b;

	buf_init(&b, 64);
	cr_assert_eq(url_encode_component(&b, "a b&c=d/é"), 0);
	cr_expect_str_eq(b.data, "a%20b%26c%3Dd%2F%C3%A9");
	buf_free(&b);
}
