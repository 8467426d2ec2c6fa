/* mime.h: an email as the bytes an SMTP relay receives (RFC 5322 headers, MIME body). */
#ifndef MAILKIT_MIME_H
#define MAILKIT_MIME_H

#include <stddef.h>
#include <time.h>

#include "buf.h"
#include "err.h"

struct mail_message;

#define MIME_LINE_SOFT	78	/* RFC 5322 2.1.1: lines SHOULD stay within 78 characters */
#define MIME_QP_LINE	76	/* RFC 2045 6.7: quoted-printable lines at most 76 */
#define MIME_WORD_BYTES	45	/* raw bytes per RFC 2047 B-word: 60 base64 chars, so the
				   word "=?UTF-8?B?...?=" stays within 75 (RFC 2047 2) */
#define MIME_ID_MAX	(128 + 1 + 254 + 1) /* a Message-ID: left part, '@', domain */
#define MIME_MESSAGE_MAX (4L * 1024 * 1024) /* two 512 KiB bodies, quoted-printable at
				   worst triples them, plus headers */

/*
 * Append msg to out as an RFC 5322 message with CRLF line endings:
 * Message-ID <msg->idempotency_key@domain of msg->from>, Date (`date`, UTC),
 * From, To, Cc and Reply-To when given (never the bcc: that is the
 * envelope's alone), Subject, MIME-Version, and a body that is
 * text/plain or text/html, or multipart/alternative (text first, html last,
 * as RFC 2046 5.1.4 orders them) when both are given; bodies are UTF-8 in
 * quoted-printable with their line breaks made CRLF.  Non-ASCII subjects
 * and display names become RFC 2047 encoded words; header lines are folded
 * near MIME_LINE_SOFT.  The result ends with CRLF.  Dot-stuffing is the
 * transport's (libcurl escapes lines that begin with '.').
 *
 * The caller has validated the strings (valid.h: no CR, LF or NUL in header
 * values, bare addresses in to).  Returns 0, or -1 with err (500: a field
 * unusable here, or the message past out's ceiling).
 */
int	mime_build(const struct mail_message *msg, time_t date, struct buf *out,
	    struct mk_err *err);

/*
 * The Message-ID of msg without brackets: msg->idempotency_key (or, when
 * that is not dot-atom text, its SHA-256 in hex) '@' the domain of
 * msg->from.  out should hold MIME_ID_MAX.  0 / -1.
 */
int	mime_message_id(const struct mail_message *msg, char *out, size_t outlen);

/*
 * The address part of a From value, "Name <addr>" or "addr", into out
 * (without brackets).  0, or -1 when it does not fit or has no address.
 */
int	mime_address(const char *from, char *out, size_t outlen);

#endif
