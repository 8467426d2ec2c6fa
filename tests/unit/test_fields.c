/* test_fields.c: typed, allowlisted request fields. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "fields.h"

static const struct field_spec send_specs[] = {
	{ "customer_id", FIELD_CUSTOMER_ID, 1, 64 },
	{ "to", FIELD_EMAIL_LIST, 1, 254 },
	{ "subject", FIELD_HEADER_TEXT, 1, 998 },
	{ "html", FIELD_TEXT, 0, 0 },
};
#define NSPECS (sizeof send_specs / sizeof send_specs[0])

static int
read_body(const char *json, struct field_value *v, struct mk_err *err, json_object **root)
{
	*root = json_tokener_parse(json);
	cr_assert_not_null(*root, "test JSON invalid: %s", json);
	return fields_read(*root, send_specs, NSPECS, v, err);
}

Test(fields, reads_declared_fields)
{
	struct field_value	 v[NSPECS];
	struct mk_err		 err;
	json_object		*root;

	cr_assert_eq(read_body("{\"customer_id\":\"cus_1\",\"to\":\"delivered@resend.dev\","
	    "\"subject\":\"Hi\",\"html\":\"<b>x</b>\"}", v, &err, &root),
	    0, "%s", err.msg);
	cr_expect_str_eq(v[0].str, "cus_1");
	cr_expect_eq(v[1].nlist, 1);
	cr_expect_str_eq(v[1].list[0], "delivered@resend.dev");
	cr_expect_str_eq(v[2].str, "Hi");
	cr_expect_eq(v[3].len, 8);
	json_object_put(root);
}

Test(fields, recipient_lists)
{
	struct field_value	 v[NSPECS];
	struct mk_err		 err;
	json_object		*root;
	char			 body[8192];

	cr_assert_eq(read_body("{\"customer_id\":\"c\",\"to\":[\"a@b.io\",\"c@d.io\"],"
	    "\"subject\":\"s\"}", v, &err, &root), 0, "%s", err.msg);
	cr_expect_eq(v[1].nlist, 2);
	cr_expect_str_eq(v[1].list[1], "c@d.io");
	json_object_put(root);

	strcpy(body, "{\"customer_id\":\"c\",\"subject\":\"s\",\"to\":[");
	for (int i = 0; i < MAIL_MAX_RECIPIENTS + 1; i++)
		strcat(body, i ? ",\"a@b.io\"" : "\"a@b.io\"");
	strcat(body, "]}");
	cr_expect_eq(read_body(body, v, &err, &root), -1);
	cr_expect_not_null(strstr(err.msg, "more than"), "%s", err.msg);
	json_object_put(root);

	cr_expect_eq(read_body("{\"customer_id\":\"c\",\"to\":[\"a@b.io\",7],\"subject\":\"s\"}",
	    v, &err, &root), -1);
	json_object_put(root);
	cr_expect_eq(read_body("{\"customer_id\":\"c\",\"to\":[],\"subject\":\"s\"}",
	    v, &err, &root), -1);
	json_object_put(root);
}

/* Each bad body is a 400 whose message names the field. */
Test(fields, bad_input_names_the_field)
{
	const struct { const char *json; const char *field; } cases[] = {
		{ "{\"to\":\"a@b.io\",\"subject\":\"s\"}", "customer_id" },
		{ "{\"customer_id\":\"\",\"to\":\"a@b.io\",\"subject\":\"s\"}", "customer_id" },
		{ "{\"customer_id\":null,\"to\":\"a@b.io\",\"subject\":\"s\"}", "customer_id" },
		{ "{\"customer_id\":\"a/b\",\"to\":\"a@b.io\",\"subject\":\"s\"}", "customer_id" },
		{ "{\"customer_id\":12,\"to\":\"a@b.io\",\"subject\":\"s\"}", "customer_id" },
		{ "{\"customer_id\":\"c\",\"to\":\"not-an-address\",\"subject\":\"s\"}", "to" },
		{ "{\"customer_id\":\"c\",\"to\":\"a@b.io\\r\\nBcc: x@y.io\",\"subject\":\"s\"}", "to" },
		{ "{\"customer_id\":\"c\",\"to\":\"a@b.io\",\"subject\":\"Hi\\r\\nBcc: x@y.io\"}",
		    "subject" },
		{ "{\"customer_id\":\"c\",\"to\":\"a@b.io\",\"subject\":\"Hi\\u0000x\"}", "subject" },
		{ "{\"customer_id\":\"c\",\"to\":\"a@b.io\"}", "subject" },
		{ "{\"customer_id\":\"c\",\"to\":\"a@b.io\",\"subject\":{}}", "subject" },
	};

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct field_value	 v[NSPECS];
		struct mk_err		 err;
		json_object		*root;

		cr_expect_eq(read_body(cases[i].json, v, &err, &root), -1, "accepted %s",
		    cases[i].json);
		cr_expect_eq(err.status, 400);
		cr_expect_not_null(strstr(err.msg, cases[i].field), "%s -> %s", cases[i].json,
		    err.msg);
		json_object_put(root);
	}
}

Test(fields, length_limits)
{
	struct field_value	 v[NSPECS];
	struct mk_err		 err;
	json_object		*root;
	char			 body[2048];

	snprintf(body, sizeof body, "{\"customer_id\":\"c\",\"to\":\"a@b.io\",\"subject\":\"%0999d\"}", 0);
	cr_expect_eq(read_body(body, v, &err, &root), -1);
	cr_expect_not_null(strstr(err.msg, "longer"), "%s", err.msg);
	json_object_put(root);
}

Test(fields, unknown_fields_are_named)
{
	const char *extra[] = { "bcc", "from", "reply_to", "extra" };
	struct field_value	 v[NSPECS];
	struct mk_err		 err;
	json_object		*root;
	char			 body[512], want[64];

	for (size_t i = 0; i < sizeof extra / sizeof extra[0]; i++) {
		snprintf(body, sizeof body, "{\"customer_id\":\"cus_1\",\"to\":\"a@b.example\","
		    "\"subject\":\"Hi\",\"%s\":\"x@y.example\"}", extra[i]);
		cr_expect_eq(read_body(body, v, &err, &root), -1, "accepted %s", extra[i]);
		cr_expect_eq(err.status, 400);
		snprintf(want, sizeof want, "unknown field: %s", extra[i]);
		cr_expect_str_eq(err.msg, want);
		json_object_put(root);
	}
}
