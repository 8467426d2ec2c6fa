/* mail_smtp.c: the SMTP mail provider — your own relay, through libcurl's SMTP client. */
#include <sys/socket.h>

#include <stdio.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

#include "buf.h"
#include "err.h"
#include "log.h"
#include "mail.h"
#include "mime.h"
#include "settings.h"
#include "upstream.h"
#include "valid.h"

#define SMTP_REPLY_LOG_MAX	200	/* a relay's reply text is cut here in logs */
#define SMTP_PATH_MAX		(EMAIL_MAX + 3)	/* "<addr>" + NUL */

/* Where the SMTP dialogue was when it stopped: the last command we sent. */
enum smtp_stage { SMTP_GREETING, SMTP_HELLO, SMTP_TLS, SMTP_AUTH, SMTP_MAIL, SMTP_RCPT,
	SMTP_DATA };

/* One transaction: the message to upload and what the dialogue showed. */
struct smtp_transfer {
	const char	*data;
	size_t		 len, off;
	int		 uploaded;	/* the whole message was handed to libcurl: the
					   end-of-data mark may have reached the relay */
	enum smtp_stage	 stage;
	char		 reply[SMTP_REPLY_LOG_MAX + 1];	/* the relay's last reply line */
};

static int
smtp_check(const struct settings *s, char *errbuf, size_t errlen)
{
	const char	*url = s->smtp_url, *why = NULL;
	int		 tls_none = s->smtp_tls != NULL && strcmp(s->smtp_tls, "none") == 0;

	if (url == NULL || url[0] == '\0')
		why = "SMTP_URL is not set (needed by MAIL_PROVIDER=smtp)";
	else if (strncmp(url, "smtp://", 7) != 0 && strncmp(url, "smtps://", 8) != 0)
		why = "SMTP_URL must start with smtp:// or smtps://";
	else if (s->mail_from == NULL || s->mail_from[0] == '\0')
		why = "MAIL_FROM is not set (needed by MAIL_PROVIDER=smtp)";
	else if (!tls_none && strcmp(s->smtp_tls, "starttls") != 0)
		why = "SMTP_TLS must be starttls or none";
	else if (tls_none && strncmp(url, "smtps://", 8) == 0)
		why = "SMTP_TLS=none contradicts an smtps:// SMTP_URL";
	else if (tls_none && !s->allow_insecure_upstream && !settings_loopback_host(url + 7))
		why = "SMTP_TLS=none is allowed only for a loopback SMTP_URL (use starttls, or "
		    "set ALLOW_INSECURE_UPSTREAM=1 for a test setup)";
	else if ((s->smtp_username == NULL) != (s->smtp_password == NULL))
		why = "SMTP_USERNAME and SMTP_PASSWORD go together";
	if (why == NULL)
		return 0;
	snprintf(errbuf, errlen, "%s", why);
	return -1;
}

static size_t
smtp_read(char *ptr, size_t size, size_t nmemb, void *arg)
{
	struct smtp_transfer	*t = arg;
	size_t			 n = size * nmemb;

	if (n > t->len - t->off)
		n = t->len - t->off;
	memcpy(ptr, t->data + t->off, n);
	t->off += n;
	if (t->off == t->len)	/* libcurl may not ask again once it has INFILESIZE bytes */
		t->uploaded = 1;
	return n;
}

/* Follow the dialogue: the commands we send (never their arguments) and the replies. */
static int
smtp_debug(CURL *h, curl_infotype type, char *data, size_t size, void *arg)
{
	static const struct { const char *verb; enum smtp_stage stage; } verbs[] = {
		{ "EHLO", SMTP_HELLO }, { "HELO", SMTP_HELLO }, { "STARTTLS", SMTP_TLS },
		{ "AUTH", SMTP_AUTH }, { "MAIL", SMTP_MAIL }, { "RCPT", SMTP_RCPT },
		{ "DATA", SMTP_DATA },
	};
	struct smtp_transfer	*t = arg;
	size_t			 n;

	(void)h;
	if (type == CURLINFO_HEADER_OUT) {
		for (size_t i = 0; i < sizeof verbs / sizeof verbs[0]; i++) {
			n = strlen(verbs[i].verb);
			if (size >= n && strncmp(data, verbs[i].verb, n) == 0)
				t->stage = verbs[i].stage;
		}
	} else if (type == CURLINFO_HEADER_IN) {
		n = size < SMTP_REPLY_LOG_MAX ? size : SMTP_REPLY_LOG_MAX;
		while (n > 0 && (data[n - 1] == '\r' || data[n - 1] == '\n'))
			n--;
		for (size_t i = 0; i < n; i++)	/* the log gets printable text only */
			t->reply[i] = data[i] >= 0x20 && data[i] < 0x7f ? data[i] : '?';
		t->reply[n] = '\0';
	}
	return 0;
}

/*
 * Map a failed transaction (mail.h).  Before the end-of-data mark the relay
 * has not taken the message (RFC 5321 4.1.1.4: no reply, no delivery), so
 * every failure there is definite: a 5xx is a refusal, a 4xx or a broken
 * connection is "not now" (503: the send is retried, no copy can exist).
 * Once the whole message is out, only a reply to it is definite; a lost
 * connection or a timeout then is the one unknown outcome SMTP has.
 */
static int
smtp_fail_transfer(CURLcode rc, long code, const struct smtp_transfer *t,
    struct mk_err *err)
{
	int	temporary = code >= 400 && code < 500;
	int	permanent = code >= 500 && code < 600;

	log_warn("smtp: send: %s (stage %d, reply %s)", curl_easy_strerror(rc), (int)t->stage,
	    t->reply[0] != '\0' ? t->reply : "-");
	if (t->uploaded && !temporary && !permanent)
		return mail_fail(err, rc == CURLE_OPERATION_TIMEDOUT ? 504 : 502, 1,
		    "the mail server's answer to the message was lost: it may have been sent");
	if (rc == CURLE_LOGIN_DENIED || t->stage == SMTP_AUTH) {
		log_error("smtp: the relay refused the login: check SMTP_USERNAME and "
		    "SMTP_PASSWORD");
		return mail_fail(err, 502, 0, "mail server refused the message");
	}
	if (rc == CURLE_USE_SSL_FAILED || rc == CURLE_SSL_CONNECT_ERROR ||
	    rc == CURLE_PEER_FAILED_VERIFICATION || rc == CURLE_SSL_CACERT_BADFILE ||
	    rc == CURLE_SSL_CERTPROBLEM) {
		log_error("smtp: no trusted TLS with the relay (%s): check SMTP_URL, SMTP_TLS and "
		    "SMTP_CA_FILE", curl_easy_strerror(rc));
		return mail_fail(err, 502, 0, "mail server unavailable");
	}
	if (permanent && (t->stage == SMTP_RCPT || t->uploaded))
		return mail_fail(err, 400, 0, t->uploaded ?
		    "message rejected by the mail server" :
		    "recipient rejected by the mail server");
	if (permanent) {
		log_error("smtp: the relay refused the sender or the transaction: check "
		    "MAIL_FROM and the relay's rules for it");
		return mail_fail(err, 502, 0, "mail server refused the message");
	}
	return mail_fail(err, 503, 0, "mail server busy, try again");
}


/*
 * After a timeout the relay is silent: close our side now, or the
 * cleanup's QUIT would wait for it (libcurl's response timeout, 120 s)
 * and the answer with it.
 */
static void
smtp_hang_up(CURL *h)
{
	curl_socket_t	sock;

	if (curl_easy_getinfo(h, CURLINFO_ACTIVESOCKET, &sock) == CURLE_OK &&
	    sock != CURL_SOCKET_BAD)
		(void)shutdown(sock, SHUT_RDWR);
}

static int
smtp_send(const struct settings *s, const struct mail_message *msg,
    struct mail_result *out, struct mk_err *err)
{
	struct smtp_transfer	 t;
	struct curl_slist	*rcpt = NULL, *item;
	struct buf		 body;
	CURL			*h = NULL;
	CURLcode		 rc;
	char			 from[EMAIL_MAX + 1], path[SMTP_PATH_MAX], errbuf[CURL_ERROR_SIZE];
	const char		*ca = s->smtp_ca_file != NULL && s->smtp_ca_file[0] != '\0' ?
				    s->smtp_ca_file : s->ca_file;
	long			 code = 0, left;
	int			 result = -1;

	memset(out, 0, sizeof *out);
	memset(&t, 0, sizeof t);
	buf_init(&body, MIME_MESSAGE_MAX);
	if (mime_address(msg->from != NULL ? msg->from : s->mail_from, from, sizeof from) == -1 ||
	    mime_message_id(msg, out->id, sizeof out->id) == -1) {
		mk_fail(err, 500, "internal error");
		goto out;
	}
	if (mime_build(msg, time(NULL), &body, err) == -1)
		goto out;
	/* the envelope: every recipient, the bcc included (it is in no header) */
	for (size_t i = 0; i < mail_recipients(msg); i++) {
		const char *addr = i < msg->nto ? msg->to[i] : i < msg->nto + msg->ncc ?
		    msg->cc[i - msg->nto] : msg->bcc[i - msg->nto - msg->ncc];

		snprintf(path, sizeof path, "<%s>", addr);
		if ((item = curl_slist_append(rcpt, path)) == NULL) {
			mk_fail(err, 500, "out of memory");
			goto out;
		}
		rcpt = item;
	}
	if ((h = curl_easy_init()) == NULL) {
		mk_fail(err, 500, "out of memory");
		goto out;
	}
	t.data = body.data;
	t.len = body.len;
	snprintf(path, sizeof path, "<%s>", from);
	errbuf[0] = '\0';
	curl_easy_setopt(h, CURLOPT_URL, s->smtp_url);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "smtp,smtps");
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
	/* the request's bound (REQUEST_TIMEOUT_MS) holds for the relay too */
	if ((left = upstream_remaining_ms()) <= 0) {
		mk_fail(err, 504, "no time left to reach the mail server: not sent");
		goto out;
	}
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, left < s->connect_timeout_ms ? left :
	    s->connect_timeout_ms);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, left < s->timeout_ms ? left : s->timeout_ms);
	/* STARTTLS is required, not tried: a relay that does not offer it fails the send */
	curl_easy_setopt(h, CURLOPT_USE_SSL, strcmp(s->smtp_tls, "none") == 0 ?
	    (long)CURLUSESSL_NONE : (long)CURLUSESSL_ALL);
	if (ca != NULL && ca[0] != '\0')
		curl_easy_setopt(h, CURLOPT_CAINFO, ca);
	if (s->smtp_username != NULL) {
		curl_easy_setopt(h, CURLOPT_USERNAME, s->smtp_username);
		curl_easy_setopt(h, CURLOPT_PASSWORD, s->smtp_password);
	}
	curl_easy_setopt(h, CURLOPT_MAIL_FROM, path);
	curl_easy_setopt(h, CURLOPT_MAIL_RCPT, rcpt);
	curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
	curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)body.len);
	curl_easy_setopt(h, CURLOPT_READFUNCTION, smtp_read);
	curl_easy_setopt(h, CURLOPT_READDATA, &t);
	/* the debug callback sees the dialogue; nothing of it goes to stderr */
	curl_easy_setopt(h, CURLOPT_VERBOSE, 1L);
	curl_easy_setopt(h, CURLOPT_DEBUGFUNCTION, smtp_debug);
	curl_easy_setopt(h, CURLOPT_DEBUGDATA, &t);
	rc = curl_easy_perform(h);
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
	if (rc == CURLE_OPERATION_TIMEDOUT)
		smtp_hang_up(h);
	if (rc != CURLE_OK) {
		smtp_fail_transfer(rc, code, &t, err);
		goto out;
	}
	log_info("smtp: sent %s to %zu recipient%s (%s)", out->id, mail_recipients(msg),
	    mail_recipients(msg) == 1 ? "" : "s", t.reply[0] != '\0' ? t.reply : "-");
	result = 0;
out:
	if (h != NULL)
		curl_easy_cleanup(h);
	curl_slist_free_all(rcpt);
	buf_free(&body);
	return result;
}

const struct mail_provider mail_smtp = {
	.name = "smtp",
	.idempotent = 0,	/* no key: a lost answer to the message is never resent */
	.check = smtp_check,
	.send = smtp_send,
};
