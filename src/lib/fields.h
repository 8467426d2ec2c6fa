/* fields.h: request bodies read through a declared allowlist of typed fields. */
#ifndef MAILKIT_FIELDS_H
#define MAILKIT_FIELDS_H

#include <stddef.h>
#include <json-c/json.h>

#include "err.h"

#define MAIL_MAX_RECIPIENTS	50	/* Resend's limit per email: to, cc and bcc together */
#define MAIL_MAX_TAGS		20	/* tags per email */
#define MAIL_TAG_MAX		256	/* bytes of a tag's name or value (Resend's limit) */

enum field_type {
	FIELD_TEXT,		/* any string (request_json refuses invalid UTF-8) */
	FIELD_HEADER_TEXT,	/* a string that may go into a mail header: no CR/LF/NUL */
	FIELD_EMAIL,		/* one address, valid_email() */
	FIELD_EMAIL_LIST,	/* one address, or an array of 1..MAIL_MAX_RECIPIENTS */
	FIELD_CUSTOMER_ID,	/* valid_customer_id() */
	FIELD_TAGS,		/* [{name, value}], 0..MAIL_MAX_TAGS, each 1..MAIL_TAG_MAX of
				   [A-Za-z0-9_-] (Resend's tag rule) */
};

struct field_spec {
	const char	*name;
	enum field_type	 type;
	int		 required;	/* missing, null or "" is a 400 */
	size_t		 max_len;	/* bytes per string; 0 = no limit beyond the body's */
};

struct field_value {
	const char	*str;		/* NULL when absent; points into the parsed JSON */
	size_t		 len;
	const char	*list[MAIL_MAX_RECIPIENTS];	/* FIELD_EMAIL_LIST items (str is list[0]) */
	size_t		 nlist;
	const char	*tag_name[MAIL_MAX_TAGS];	/* FIELD_TAGS items */
	const char	*tag_value[MAIL_MAX_TAGS];
	size_t		 ntags;
};

/*
 * Check the JSON object `root` against specs[0..n) and fill out[i] for
 * specs[i].  A member no spec names is a 400 "unknown field: <name>" (a
 * client that sends a field MailKit does not honour must learn so).
 * Returns 0, or -1 with a 400 in err naming the first bad field.  Values stay valid while root does.
 */
int	fields_read(json_object *root, const struct field_spec *specs, size_t n,
	    struct field_value *out, struct mk_err *err);

#endif
