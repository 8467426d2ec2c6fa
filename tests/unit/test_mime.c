/* test_mime.c: the bytes of an email as an SMTP relay receives them. */
#include <criterion/criterion.h>
#include <string.h>

#include "buf.h"
#include "mail.h"
#include "mime.h"

#define DATE_2026_12_04	1796394852	/* Fri, 04 Dec 2026 14:34:12 +0000 */

static struct mail_message
message(const char *from, const char *subject, const char *html, const char *text)
{
	struct mail_message m;

	memset(&m, 0, sizeof m);
	m.from = from;
	m.to[0] = "ada@example.com";
	m.nto = 1;
	m.subject = subject;
	m.html = html;
	m.text = text;
	m.idempotency_key = "mk-send-0123abcd";
	return m;
}

static char *
build(const struct mail_message *m)
{
	static struct buf	b;
	struct mk_err		err;

	buf_free(&b);
	buf_init(&b, MIME_MESSAGE_MAX);
	cr_assert_eq(mime_build(m, DATE_2026_12_04, &b, &err), 0, "%s", err.msg);
	return b.data;
}

Test(mime, text_only_message_byte_for_byte)
{
	struct mail_message m = message("MailKit <notify@mailkit.test>", "Hello", NULL,
	    "Hi Ada,\nline two\n");

	cr_expect_str_eq(build(&m),
	    "Message-ID: <mk-send-0123abcd@mailkit.test>\r\n"
	    "Date: Fri, 04 Dec 2026 14:34:12 +0000\r\n"
	    "From: MailKit <notify@mailkit.test>\r\n"
	    "To: ada@example.com\r\n"
	    "Subject: Hello\r\n"
	    "MIME-Version: 1.0\r\n"
	    "Content-Type: text/plain; charset=utf-8\r\n"
	    "Content-Transfer-Encoding: quoted-printable\r\n"
	    "\r\n"
	    "Hi Ada,\r\n"
	    "line two\r\n");
}

Test(mime, html_and_text_make_multipart_alternative_text_first)
{
	struct mail_message m = message("notify@mailkit.test", "Hi", "<p>Hi</p>", "Hi");
	const char *b = build(&m), *text, *html, *end;

	cr_assert_not_null(strstr(b, "From: notify@mailkit.test\r\n"));
	cr_assert_not_null(strstr(b, "MIME-Version: 1.0\r\nContent-Type: multipart/alternative; "
	    "boundary=\"=_mk_"));
	text = strstr(b, "Content-Type: text/plain; charset=utf-8\r\n"
	    "Content-Transfer-Encoding: quoted-printable\r\n\r\nHi\r\n--=_mk_");
	html = strstr(b, "Content-Type: text/html; charset=utf-8\r\n"
	    "Content-Transfer-Encoding: quoted-printable\r\n\r\n<p>Hi</p>\r\n--=_mk_");
	cr_assert_not_null(text);
	cr_assert_not_null(html);
	cr_expect_lt(text, html);
	end = b + strlen(b) - strlen("--\r\n");
	cr_expect_str_eq(end, "--\r\n");
}

Test(mime, non_ascii_subject_and_name_are_encoded_words)
{
	struct mail_message m = message("Zoë Café <z@mailkit.test>", "Grüße aus Köln", NULL, "x");
	const char *b = build(&m);

	/* "Zoë Café" and "Grüße aus Köln" in base64 UTF-8 */
	cr_expect_not_null(strstr(b, "From: =?UTF-8?B?Wm/DqyBDYWbDqQ==?= <z@mailkit.test>\r\n"),
	    "%s", b);
	cr_expect_not_null(strstr(b, "Subject: =?UTF-8?B?R3LDvMOfZSBhdXMgS8O2bG4=?=\r\n"), "%s", b);
}

Test(mime, long_subject_is_folded_and_words_never_split_a_character)
{
	char subject[400], *p = subject;
	struct mail_message m;
	const char *b, *line;

	/* 100 two-byte characters: words of at most 45 bytes hold 22 of them */
	for (int i = 0; i < 100; i++) {
		*p++ = '\xc3';
		*p++ = '\xa9';
	}
	*p = '\0';
	m = message("z@mailkit.test", subject, NULL, "x");
	b = build(&m);
	line = strstr(b, "Subject: ");
	cr_assert_not_null(line);
	/* each word on its own line, continuation lines within 78 and starting with a
	 * space; the first line is "Subject: " and a word of at most 75 */
	cr_expect_not_null(strstr(line, "?=\r\n =?UTF-8?B?"));
	for (const char *q = line; *q != '\0' && strncmp(q, "MIME", 4) != 0;) {
		size_t n = strcspn(q, "\r");

		cr_expect_leq(n, q == line ? 9 + 75 : 78, "line %.*s", (int)n, q);
		q += n + 2;
	}
	/* the first word: 22 é = 44 bytes, 60 base64 characters */
	cr_expect_not_null(strstr(line, "Subject: =?UTF-8?B?"
	    "w6nDqcOpw6nDqcOpw6nDqcOpw6nDqcOpw6nDqcOpw6nDqcOpw6nDqcOpw6k=?=\r\n"), "%s", line);
	/* 100 = 4 words of 22 and one of 12 */
	cr_expect_not_null(strstr(line, "\r\n =?UTF-8?B?w6nDqcOpw6nDqcOpw6nDqcOpw6nDqcOp?=\r\n"));
}

Test(mime, ascii_subject_folds_at_spaces)
{
	char subject[200];
	struct mail_message m;
	const char *b;

	memset(subject, 'a', sizeof subject);
	memcpy(subject + 60, " ", 1);
	memcpy(subject + 130, "  ", 2);
	subject[sizeof subject - 1] = '\0';
	m = message("z@mailkit.test", subject, NULL, "x");
	b = build(&m);
	/* unfolded (CRLF removed) it is the subject again, spaces included */
	{
		char unfolded[400], *u = unfolded;
		const char *s = strstr(b, "Subject: ") + 9;

		while (strncmp(s, "\r\nMIME", 6) != 0) {
			if (s[0] == '\r' && s[1] == '\n') {
				cr_expect_eq(s[2], ' ');
				s += 2;
				continue;
			}
			*u++ = *s++;
		}
		*u = '\0';
		cr_expect_str_eq(unfolded, subject);
	}
}

Test(mime, quoted_printable_body)
{
	char text[200];
	struct mail_message m;
	const char *b;

	memset(text, 'x', sizeof text);
	text[sizeof text - 1] = '\0';
	m = message("z@mailkit.test", "s", NULL, "a=b caf\xc3\xa9 \r\n.dot\rend \n");
	b = strstr(build(&m), "\r\n\r\n") + 4;
	/* '=' and UTF-8 encoded, a space before a break encoded, CR and LF become CRLF,
	 * a leading dot left to the transport's dot-stuffing */
	cr_expect_str_eq(b, "a=3Db caf=C3=A9=20\r\n.dot\r\nend=20\r\n");

	m = message("z@mailkit.test", "s", NULL, text);
	b = strstr(build(&m), "\r\n\r\n") + 4;
	/* 199 x: 75 + "=" soft break, 75 + "=", then 49 */
	cr_expect_eq(strcspn(b, "\r"), 76);
	cr_expect_eq(b[75], '=');
	cr_expect_eq(strlen(b), 75 + 3 + 75 + 3 + 49 + 2);
}

Test(mime, to_lists_every_recipient_folded)
{
	struct mail_message m = message("z@mailkit.test", "s", NULL, "x");
	const char *b;

	m.to[1] = "bob-with-a-rather-long-address@example.com";
	m.to[2] = "carol-also-long-enough-to-fold@example.org";
	m.nto = 3;
	b = build(&m);
	cr_expect_not_null(strstr(b, "To: ada@example.com, "
	    "bob-with-a-rather-long-address@example.com,\r\n"
	    " carol-also-long-enough-to-fold@example.org\r\n"), "%s", b);
}

Test(mime, quoted_display_name_and_message_id_of_an_odd_key)
{
	struct mail_message m = message("Ops, \"Team\" <ops@mailkit.test>", "s", NULL, "x");
	char id[MIME_ID_MAX];
	const char *b;

	m.idempotency_key = "key with spaces";
	b = build(&m);
	cr_expect_not_null(strstr(b, "From: \"Ops, \\\"Team\\\"\" <ops@mailkit.test>\r\n"), "%s",
	    b);
	cr_assert_eq(mime_message_id(&m, id, sizeof id), 0);
	/* not dot-atom text: its SHA-256 instead */
	cr_expect_eq(strlen(id), 64 + strlen("@mailkit.test"));
	cr_expect_not_null(strstr(b, "Message-ID: <"));
	cr_expect_not_null(strstr(b, id));
}

Test(mime, address_of_a_from_value)
{
	char a[64];

	cr_expect_eq(mime_address("MailKit <n@mailkit.test>", a, sizeof a), 0);
	cr_expect_str_eq(a, "n@mailkit.test");
	cr_expect_eq(mime_address("n@mailkit.test", a, sizeof a), 0);
	cr_expect_str_eq(a, "n@mailkit.test");
	cr_expect_eq(mime_address("MailKit <>", a, sizeof a), -1);
	cr_expect_eq(mime_address("MailKit <n@mailkit.test", a, sizeof a), -1);
}

Test(mime, cc_and_reply_to_are_headers_bcc_never)
{
	struct mail_message m = message("z@mailkit.test", "s", NULL, "x");
	const char *b;

	m.cc[0] = "carol@example.com";
	m.ncc = 1;
	m.bcc[0] = "secret-bcc@example.com";
	m.nbcc = 1;
	m.reply_to[0] = "support@mailkit.test";
	m.reply_to[1] = "ops@mailkit.test";
	m.nreply_to = 2;
	b = build(&m);
	cr_expect_not_null(strstr(b, "To: ada@example.com\r\nCc: carol@example.com\r\n"
	    "Reply-To: support@mailkit.test, ops@mailkit.test\r\nSubject: s\r\n"), "%s", b);
	cr_expect_null(strstr(b, "secret-bcc"), "%s", b);
	cr_expect_null(strstr(b, "Bcc"), "%s", b);
	cr_expect_eq(mail_recipients(&m), 3);
}
