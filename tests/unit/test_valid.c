/* test_valid.c: the allowlist checks in valid.c. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "valid.h"

Test(valid, email_accepts_ordinary_addresses)
{
	cr_expect(valid_email("delivered@resend.dev"));
	cr_expect(valid_email("first.last+tag@mail.example.co.uk"));
	cr_expect(valid_email("o'brien@example.org"));
	cr_expect(valid_email("x@a-b.io"));
}

Test(valid, email_rejects_malformed_and_dangerous)
{
	const char *bad[] = {
		"", "plain", "@example.com", "a@", "a@b", "a@@b.com", "a b@c.com",
		"a@b .com", ".a@b.com", "a.@b.com", "a..b@c.com", "a@-b.com", "a@b-.com",
		"a@b..com", "a@b.com\r\nBcc: x@y.com", "a@b.com\n", "\"q\"@b.com",
		"a@[127.0.0.1]", "a@b_c.com", "a(comment)@b.com", "a@b.com>", "<a@b.com",
	};

	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		cr_expect(!valid_email(bad[i]), "accepted \"%s\"", bad[i]);
}

Test(valid, email_length_limits)
{
	char local[EMAIL_LOCAL_MAX + 2], addr[EMAIL_MAX + 10];

	memset(local, 'a', sizeof local - 1);
	local[EMAIL_LOCAL_MAX] = '\0';
	snprintf(addr, sizeof addr, "%s@b.com", local);
	cr_expect(valid_email(addr), "64-byte local part refused");
	local[EMAIL_LOCAL_MAX] = 'a';
	local[EMAIL_LOCAL_MAX + 1] = '\0';
	snprintf(addr, sizeof addr, "%s@b.com", local);
	cr_expect(!valid_email(addr), "65-byte local part accepted");

	/* "x@" + 4 labels of 60 + "." + "com" = 249 bytes: valid; 6 more: 255, over the limit */
	strcpy(addr, "x@");
	for (int i = 0; i < 4; i++) {
		memset(addr + strlen(addr) + 60, 0, 1);
		memset(addr + strlen(addr), 'b', 60);
		strcat(addr, ".");
	}
	strcat(addr, "com");
	cr_expect_eq(strlen(addr), 249);
	cr_expect(valid_email(addr), "249-byte address refused");
	strcat(addr, ".ccccc");
	cr_expect_eq(strlen(addr), 255);
	cr_expect(!valid_email(addr), "255-byte address accepted");
}

Test(valid, header_text_refuses_line_breaks_and_nul)
{
	cr_expect(valid_header_text("Hello from MailKit", 18));
	cr_expect(!valid_header_text("Hi\r\nBcc: a@b.com", 16));
	cr_expect(!valid_header_text("Hi\nthere", 8));
	cr_expect(!valid_header_text("Hi\rthere", 8));
	cr_expect(!valid_header_text("Hi\0there", 8));
}

Test(valid, customer_ids)
{
	char long_id[CUSTOMER_ID_MAX + 2];

	cr_expect(valid_customer_id("cus_1a2B3c-4"));
	cr_expect(!valid_customer_id(""));
	cr_expect(!valid_customer_id("cus/../x"));
	cr_expect(!valid_customer_id("cus?x=1"));
	cr_expect(!valid_customer_id("cus 1"));
	cr_expect(!valid_customer_id("cus.1"));
	cr_expect(!valid_customer_id("cus%2F"));
	memset(long_id, 'a', sizeof long_id);
	long_id[CUSTOMER_ID_MAX] = '\0';
	cr_expect(valid_customer_id(long_id));
	long_id[CUSTOMER_ID_MAX] = 'a';
	long_id[CUSTOMER_ID_MAX + 1] = '\0';
	cr_expect(!valid_customer_id(long_id));
}

Test(valid, idempotency_keys)
{
	char key[IDEMPOTENCY_KEY_MAX + 2];

	cr_expect(valid_idempotency_key("order-123/welcome"));
	cr_expect(!valid_idempotency_key(""));
	cr_expect(!valid_idempotency_key("has space"));
	cr_expect(!valid_idempotency_key("tab\there"));
	cr_expect(!valid_idempotency_key("caf\xc3\xa9"));
	memset(key, 'k', sizeof key);
	key[IDEMPOTENCY_KEY_MAX] = '\0';
	cr_expect(valid_idempotency_key(key));
	key[IDEMPOTENCY_KEY_MAX] = 'k';
	key[IDEMPOTENCY_KEY_MAX + 1] = '\0';
	cr_expect(!valid_idempotency_key(key));
}

Test(valid, utf8)
{
	cr_expect(valid_utf8("", 0));
	cr_expect(valid_utf8("plain", 5));
	cr_expect(valid_utf8("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 14));
	cr_expect(valid_utf8("\xf4\x8f\xbf\xbf", 4));		/* U+10FFFF */
	cr_expect(!valid_utf8("\xff\xfe", 2));
	cr_expect(!valid_utf8("\xc0\xaf", 2));			/* overlong '/' */
	cr_expect(!valid_utf8("\xe0\x80\xaf", 3));			/* overlong */
	cr_expect(!valid_utf8("\xed\xa0\x80", 3));			/* surrogate */
	cr_expect(!valid_utf8("\xf4\x90\x80\x80", 4));		/* above U+10FFFF */
	cr_expect(!valid_utf8("\xe2\x82", 2));			/* truncated */
	cr_expect(!valid_utf8("\x80", 1));				/* lone continuation */
}
