/* sendreq.h: the body of a send request (POST /send, each message of POST /emails/batch) read into a mail message. */
#ifndef MAILKIT_SENDREQ_H
#define MAILKIT_SENDREQ_H

#include <json-c/json.h>

#include "err.h"
#include "mail.h"

struct request;

#define SENDREQ_SUBJECT_MAX	998		/* RFC 5322 line length limit */
#define SENDREQ_CONTENT_MAX	(512 * 1024)	/* html or text: a transactional email */
#define SENDREQ_BATCH_MAX	100		/* messages in one batch, as Resend's */

/*
 * Read one send's JSON object `o` ({[customer_id,] to, subject, html[,
 * text][, cc, bcc, reply_to, tags]}) into msg, from `from`: every field
 * checked (fields.h), html or text required, at most MAIL_MAX_RECIPIENTS
 * in to, cc and bcc together.  *customer_id is the body's customer_id
 * (NULL if absent).  msg's strings point into o and stay valid while o
 * does; msg->idempotency_key is left NULL.  Never calls an upstream.
 * Returns 0, or -1 with a 400 in err naming the bad field.
 */
int	sendreq_read(json_object *o, const char *from, struct mail_message *msg,
	    const char **customer_id, struct mk_err *err);

/*
 * The request's Idempotency-Key: *client_key points at it, or is NULL when
 * none was sent.  Returns 0, or -1 with a 400 in err when it is malformed.
 */
int	sendreq_key(const struct request *req, const char **client_key, struct mk_err *err);

/*
 * POST /emails/batch's body: a JSON array of 1..SENDREQ_BATCH_MAX send
 * objects, each read as sendreq_read() reads one, into msgs (room for
 * SENDREQ_BATCH_MAX).  The body is checked as request_json() checks one
 * (UTF-8, strict JSON, no repeated names); *root holds the parsed body
 * (the caller puts it, also on failure).  *customer_id is the customer_id
 * the messages name (NULL if none does; 400 if two differ).  Returns the
 * number of messages, or -1 with a 400 in err, naming the index of the
 * first bad message ("message 3: to is required").
 */
long	sendreq_batch(const struct request *req, const char *from, struct mail_message *msgs,
	    const char **customer_id, json_object **root, struct mk_err *err);

#endif
