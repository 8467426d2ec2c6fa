/* mime.c: build the RFC 5322 / MIME bytes of an email for an SMTP relay. */
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "digest.h"
#include "mail.h"
#include "mime.h"
#include "valid.h"

#define MIME_ID_LEFT_MAX	128	/* a Message-ID's left part: a key, or its digest */
#define MIME_BOUNDARY_HEX	24	/* digest digits in the multipart boundary */
#define MIME_NAME_MAX		4096	/* a display name: MAIL_FROM is at most 4096 */

/* A header being written: the buffer and the length of its current line. */
struct mime_header {
	struct buf	*out;
	size_t		 col;
	int		 failed;
};

static void
mime_put(struct mime_header *h, const char *p, size_t n)
{
	if (buf_append(h->out, p, n) == -1)
		h->failed = 1;
	h->col += n;
}

static void
mime_start(struct mime_header *h, struct buf *out, const char *name)
{
	h->out = out;
	h->col = 0;
	mime_put(h, name, strlen(name));
	mime_put(h, ": ", 2);
}

/* Put a token that must not be split, folding before it when the line is full. */
static void
mime_token(struct mime_header *h, const char *p, size_t n, int space_before)
{
	if (space_before) {
		if (h->col + 1 + n > MIME_LINE_SOFT) {
			mime_put(h, "\r\n", 2);
			h->col = 0;
		}
		mime_put(h, " ", 1);
	}
	mime_put(h, p, n);
}

static void
mime_end(struct mime_header *h)
{
	mime_put(h, "\r\n", 2);
}

static int
mime_ascii(const char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s >= 0x80 || iscntrl((unsigned char)*s))
			return 0;
	return 1;
}

/* Bytes of the UTF-8 sequence that starts with c (1 for a stray byte). */
static size_t
mime_utf8_len(unsigned char c)
{
	if (c >= 0xf0 && c < 0xf8)
		return 4;
	if (c >= 0xe0)
		return c < 0xf0 ? 3 : 1;
	if (c >= 0xc0)
		return 2;
	return 1;
}

/*
 * s as RFC 2047 "B" encoded words of at most MIME_WORD_BYTES bytes each,
 * never splitting a UTF-8 character (RFC 2047 5: each word decodes alone).
 */
static void
mime_encoded_words(struct mime_header *h, const char *s, int space_before)
{
	static const char b64[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	const unsigned char	*p = (const unsigned char *)s;
	size_t			 len = strlen(s);

	while (len > 0) {
		char	word[16 + 4 * (MIME_WORD_BYTES / 3 + 1)];
		size_t	n = 0, w;

		while (n < len && n + mime_utf8_len(p[n]) <= MIME_WORD_BYTES)
			n += mime_utf8_len(p[n]);
		if (n == 0 || n > len)
			n = len < MIME_WORD_BYTES ? len : MIME_WORD_BYTES;
		w = (size_t)snprintf(word, sizeof word, "=?UTF-8?B?");
		for (size_t i = 0; i < n; i += 3) {
			unsigned v = (unsigned)p[i] << 16;

			if (i + 1 < n)
				v |= (unsigned)p[i + 1] << 8;
			if (i + 2 < n)
				v |= p[i + 2];
			word[w++] = b64[(v >> 18) & 63];
			word[w++] = b64[(v >> 12) & 63];
			word[w++] = i + 1 < n ? b64[(v >> 6) & 63] : '=';
			word[w++] = i + 2 < n ? b64[v & 63] : '=';
		}
		word[w++] = '?';
		word[w++] = '=';
		mime_token(h, word, w, space_before);
		space_before = 1;
		p += n;
		len -= n;
	}
}

/*
 * Unstructured text (a subject): folded at its spaces when it is plain
 * ASCII, else encoded words.  Text that could be read as an encoded word,
 * or whose words cannot be folded under the 998 limit, is encoded too.
 */
static void
mime_unstructured(struct mime_header *h, const char *s)
{
	const char	*p = s;
	int		 plain = mime_ascii(s) && strstr(s, "=?") == NULL;

	for (const char *q = s; plain && *q != '\0'; q += strcspn(q, " ")) {
		q += strspn(q, " ");
		if (strcspn(q, " ") > MIME_LINE_SOFT * 10)
			plain = 0;
	}
	if (!plain || *s == '\0' || s[strlen(s) - 1] == ' ' || *s == ' ') {
		if (*s == '\0')
			return;
		mime_encoded_words(h, s, 0);
		return;
	}
	/*
	 * Each space may start a folded line (unfolding removes only the CRLF),
	 * so the text is split at every space; runs of spaces give empty words.
	 */
	for (int first = 1;; first = 0) {
		size_t	n = strcspn(p, " ");

		mime_token(h, p, n, !first);
		p += n;
		if (*p == '\0')
			break;
		p++;
	}
}

/* RFC 5322 atext, the characters a display name may use unquoted (with spaces). */
static int
mime_atext_phrase(const char *s)
{
	for (; *s != '\0'; s++)
		if (!isalnum((unsigned char)*s) && strchr("!#$%&'*+-/=?^_`{|}~ ", *s) == NULL)
			return 0;
	return 1;
}

int
mime_address(const char *from, char *out, size_t outlen)
{
	const char	*lt = strrchr(from, '<');
	size_t		 n;

	if (lt == NULL) {
		n = strlen(from);
		lt = from - 1;
	} else {
		n = strlen(lt + 1);
		if (n == 0 || lt[n] != '>')
			return -1;
		n--;
	}
	if (n == 0 || n >= outlen)
		return -1;
	memcpy(out, lt + 1, n);
	out[n] = '\0';
	return 0;
}

/* From: "Name <addr>" with the name as atoms, a quoted string, or encoded words. */
static void
mime_from(struct mime_header *h, const char *from)
{
	const char	*lt = strrchr(from, '<');
	char		 name[MIME_NAME_MAX];
	size_t		 n;

	mime_start(h, h->out, "From");
	if (lt == NULL) {
		mime_put(h, from, strlen(from));
		return;
	}
	n = (size_t)(lt - from);
	while (n > 0 && from[n - 1] == ' ')
		n--;
	if (n >= sizeof name) {
		h->failed = 1;
		return;
	}
	memcpy(name, from, n);
	name[n] = '\0';
	/* a name the setting quoted itself: its inside is the name */
	if (n >= 2 && name[0] == '"' && name[n - 1] == '"') {
		memmove(name, name + 1, n - 2);
		name[n - 2] = '\0';
	}
	if (name[0] == '\0')
		;
	else if (!mime_ascii(name))
		mime_encoded_words(h, name, 0);
	else if (mime_atext_phrase(name))
		mime_put(h, name, strlen(name));
	else {
		mime_put(h, "\"", 1);
		for (const char *p = name; *p != '\0'; p++) {
			if (*p == '"' || *p == '\\')
				mime_put(h, "\\", 1);
			mime_put(h, p, 1);
		}
		mime_put(h, "\"", 1);
	}
	mime_token(h, lt, strlen(lt), name[0] != '\0');
}

/* A list of bare addresses, comma-separated and folded. */
static void
mime_address_list(struct mime_header *h, const char *name, const char *const *list, size_t n)
{
	mime_start(h, h->out, name);
	for (size_t i = 0; i < n; i++) {
		char	item[MIME_NAME_MAX];
		int	len = snprintf(item, sizeof item, "%s%s", list[i], i + 1 < n ? "," : "");

		if (len < 0 || (size_t)len >= sizeof item) {
			h->failed = 1;
			return;
		}
		mime_token(h, item, (size_t)len, i > 0);
	}
	mime_end(h);
}

/* "Fri, 04 Dec 2026 14:34:12 +0000", in English whatever the locale. */
static int
mime_date(time_t t, char *out, size_t outlen)
{
	static const char days[7][4] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };
	static const char months[12][4] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul",
	    "Aug", "Sep", "Oct", "Nov", "Dec" };
	struct tm	tm;
	int		n;

	if (gmtime_r(&t, &tm) == NULL || tm.tm_wday < 0 || tm.tm_wday > 6 || tm.tm_mon < 0 ||
	    tm.tm_mon > 11)
		return -1;
	n = snprintf(out, outlen, "%s, %02d %s %04d %02d:%02d:%02d +0000", days[tm.tm_wday],
	    tm.tm_mday, months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
	return n > 0 && (size_t)n < outlen ? 0 : -1;
}

/*
 * text as quoted-printable (RFC 2045 6.7) with CRLF line breaks: any of
 * CRLF, LF or CR in the input ends a line; '=', controls, bytes >= 0x80
 * and a space or tab before a line break are encoded; lines longer than
 * MIME_QP_LINE get soft breaks.
 */
static int
mime_qp(struct buf *out, const char *text)
{
	static const char	 hex[] = "0123456789ABCDEF";
	const unsigned char	*p = (const unsigned char *)text;
	size_t			 col = 0;
	int			 rc = 0;

	while (*p != '\0' && rc == 0) {
		char	enc[3];
		size_t	n;
		int	eol_next;

		if (*p == '\r' || *p == '\n') {
			p += (*p == '\r' && p[1] == '\n') ? 2 : 1;
			rc = buf_append(out, "\r\n", 2);
			col = 0;
			continue;
		}
		eol_next = p[1] == '\0' || p[1] == '\r' || p[1] == '\n';
		if ((*p >= 33 && *p <= 126 && *p != '=') || ((*p == ' ' || *p == '\t') && !eol_next)) {
			enc[0] = (char)*p;
			n = 1;
		} else {
			enc[0] = '=';
			enc[1] = hex[*p >> 4];
			enc[2] = hex[*p & 15];
			n = 3;
		}
		/* room for a soft break's '=' unless this is the line's last character */
		if (col + n > MIME_QP_LINE - (eol_next ? 0 : 1)) {
			rc = buf_append(out, "=\r\n", 3);
			col = 0;
		}
		if (rc == 0)
			rc = buf_append(out, enc, n);
		col += n;
		p++;
	}
	if (rc == 0 && col > 0)
		rc = buf_append(out, "\r\n", 2);
	return rc;
}

static int
mime_part_headers(struct buf *out, const char *type)
{
	return buf_printf(out, "Content-Type: text/%s; charset=utf-8\r\n"
	    "Content-Transfer-Encoding: quoted-printable\r\n", type);
}

/* The Message-ID's left part: the key when it is dot-atom text, else its digest. */
static int
mime_id_left(const char *key, char *out, size_t outlen)
{
	struct digest_part	part = { key, strlen(key) };
	int			plain = key[0] != '\0' && key[0] != '.' && strlen(key) < outlen;

	for (const char *p = key; plain && *p != '\0'; p++)
		if (!isalnum((unsigned char)*p) && strchr("!#$%&'*+-/=?^_`{|}~.", *p) == NULL)
			plain = 0;
	if (plain && strstr(key, "..") == NULL && key[strlen(key) - 1] != '.') {
		snprintf(out, outlen, "%s", key);
		return 0;
	}
	if (outlen < DIGEST_SHA256_HEX)
		return -1;
	return digest_sha256_hex(&part, 1, out);
}

int
mime_message_id(const struct mail_message *msg, char *out, size_t outlen)
{
	char		 addr[EMAIL_MAX + 1], left[MIME_ID_LEFT_MAX];
	const char	*domain;
	int		 n;

	if (msg->from == NULL || msg->idempotency_key == NULL ||
	    mime_address(msg->from, addr, sizeof addr) == -1 ||
	    (domain = strrchr(addr, '@')) == NULL ||
	    mime_id_left(msg->idempotency_key, left, sizeof left) == -1)
		return -1;
	n = snprintf(out, outlen, "%s%s", left, domain);
	return n > 0 && (size_t)n < outlen ? 0 : -1;
}

int
mime_build(const struct mail_message *msg, time_t date, struct buf *out, struct mk_err *err)
{
	struct mime_header	 h = { .out = out };
	struct digest_part	 part;
	char			 id[MIME_ID_MAX], when[64], boundary[DIGEST_SHA256_HEX];
	int			 multi;

	if (msg->subject == NULL || msg->nto == 0 || (msg->html == NULL && msg->text == NULL) ||
	    mime_message_id(msg, id, sizeof id) == -1 || mime_date(date, when, sizeof when) == -1)
		return mk_fail(err, 500, "message cannot be built");
	part.data = msg->idempotency_key;
	part.len = strlen(msg->idempotency_key);
	if (digest_sha256_hex(&part, 1, boundary) == -1)
		return mk_fail(err, 500, "message cannot be built");
	boundary[MIME_BOUNDARY_HEX] = '\0';

	if (buf_printf(out, "Message-ID: <%s>\r\nDate: %s\r\n", id, when) == -1)
		goto fail;
	mime_from(&h, msg->from);
	mime_end(&h);
	mime_address_list(&h, "To", msg->to, msg->nto);
	if (msg->ncc > 0)
		mime_address_list(&h, "Cc", msg->cc, msg->ncc);
	if (msg->nreply_to > 0)
		mime_address_list(&h, "Reply-To", msg->reply_to, msg->nreply_to);
	mime_start(&h, out, "Subject");
	mime_unstructured(&h, msg->subject);
	mime_end(&h);
	if (h.failed || buf_puts(out, "MIME-Version: 1.0\r\n") == -1)
		goto fail;
	multi = msg->html != NULL && msg->text != NULL;
	if (!multi) {
		if (mime_part_headers(out, msg->text != NULL ? "plain" : "html") == -1 ||
		    buf_puts(out, "\r\n") == -1 ||
		    mime_qp(out, msg->text != NULL ? msg->text : msg->html) == -1)
			goto fail;
		return 0;
	}
	/* "=_" cannot occur in quoted-printable, so the boundary never does (RFC 2045 6.7) */
	if (buf_printf(out, "Content-Type: multipart/alternative; boundary=\"=_mk_%s\"\r\n"
	    "\r\n--=_mk_%s\r\n", boundary, boundary) == -1 ||
	    mime_part_headers(out, "plain") == -1 || buf_puts(out, "\r\n") == -1 ||
	    mime_qp(out, msg->text) == -1 ||
	    buf_printf(out, "--=_mk_%s\r\n", boundary) == -1 ||
	    mime_part_headers(out, "html") == -1 || buf_puts(out, "\r\n") == -1 ||
	    mime_qp(out, msg->html) == -1 ||
	    buf_printf(out, "--=_mk_%s--\r\n", boundary) == -1)
		goto fail;
	return 0;
fail:
	return mk_fail(err, 500, "message too large to build");
}
