/* fields.c: reading request JSON through declared, typed fields. */
#include <string.h>

#include "fields.h"
#include "valid.h"

static int
fields_check_string(const struct field_spec *sp, const char *s, size_t len,
    struct mk_err *err)
{
	if (sp->max_len > 0 && len > sp->max_len)
		return mk_fail(err, 400, "%s is longer than %zu bytes", sp->name, sp->max_len);
	if (memchr(s, '\0', len) != NULL)
		return mk_fail(err, 400, "%s must not contain NUL characters", sp->name);
	switch (sp->type) {
	case FIELD_TEXT:
		break;
	case FIELD_HEADER_TEXT:
		if (!valid_header_text(s, len))
			return mk_fail(err, 400, "%s must not contain line breaks", sp->name);
		break;
	case FIELD_TAGS:
		break;		/* fields_read_tags() checks each part */
	case FIELD_EMAIL:
	case FIELD_EMAIL_LIST:
		if (!valid_email(s))
			return mk_fail(err, 400, "%s is not a valid email address", sp->name);
		break;
	case FIELD_CUSTOMER_ID:
		if (!valid_customer_id(s))
			return mk_fail(err, 400, "%s must be 1-%d letters, digits, '_' or '-'",
			    sp->name, CUSTOMER_ID_MAX);
		break;
	}
	return 0;
}

/* A tag's name or value: 1..MAIL_TAG_MAX of [A-Za-z0-9_-]. */
static const char *
fields_tag_part(json_object *tag, const char *key)
{
	json_object	*v;
	const char	*s;
	size_t		 n;

	if (!json_object_object_get_ex(tag, key, &v) || !json_object_is_type(v, json_type_string))
		return NULL;
	s = json_object_get_string(v);
	n = (size_t)json_object_get_string_len(v);
	if (n == 0 || n > MAIL_TAG_MAX || strspn(s, "abcdefghijklmnopqrstuvwxyz"
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") != n)
		return NULL;
	return s;
}

static int
fields_read_tags(json_object *v, const struct field_spec *sp, struct field_value *out,
    struct mk_err *err)
{
	size_t	n;

	if (!json_object_is_type(v, json_type_array))
		return mk_fail(err, 400, "%s must be a list of {name, value}", sp->name);
	if ((n = json_object_array_length(v)) > MAIL_MAX_TAGS)
		return mk_fail(err, 400, "%s lists more than %d tags", sp->name, MAIL_MAX_TAGS);
	for (size_t i = 0; i < n; i++) {
		json_object	*tag = json_object_array_get_idx(v, i);

		if (!json_object_is_type(tag, json_type_object) ||
		    json_object_object_length(tag) != 2 ||
		    (out->tag_name[i] = fields_tag_part(tag, "name")) == NULL ||
		    (out->tag_value[i] = fields_tag_part(tag, "value")) == NULL)
			return mk_fail(err, 400, "%s: each tag is {name, value}, each 1-%d letters, "
			    "digits, '_' or '-'", sp->name, MAIL_TAG_MAX);
	}
	out->ntags = n;
	return 0;
}

static int
fields_read_one(json_object *v, const struct field_spec *sp, struct field_value *out,
    struct mk_err *err)
{
	if (sp->type == FIELD_TAGS)
		return fields_read_tags(v, sp, out, err);
	if (sp->type == FIELD_EMAIL_LIST && json_object_is_type(v, json_type_array)) {
		size_t n = json_object_array_length(v);

		if (n == 0 && sp->required)
			return mk_fail(err, 400, "%s must list at least one address", sp->name);
		if (n > MAIL_MAX_RECIPIENTS)
			return mk_fail(err, 400, "%s lists more than %d addresses", sp->name,
			    MAIL_MAX_RECIPIENTS);
		for (size_t i = 0; i < n; i++) {
			json_object *item = json_object_array_get_idx(v, i);

			if (!json_object_is_type(item, json_type_string))
				return mk_fail(err, 400, "%s must be a list of strings", sp->name);
			if (fields_check_string(sp, json_object_get_string(item),
			    (size_t)json_object_get_string_len(item), err) == -1)
				return -1;
			out->list[i] = json_object_get_string(item);
		}
		out->nlist = n;
		out->str = n > 0 ? out->list[0] : NULL;
		out->len = n > 0 ? strlen(out->list[0]) : 0;
		return 0;
	}
	if (!json_object_is_type(v, json_type_string))
		return mk_fail(err, 400, "%s must be a string", sp->name);
	out->str = json_object_get_string(v);
	out->len = (size_t)json_object_get_string_len(v);
	if (out->len == 0) {
		out->str = NULL;
		return 0;
	}
	if (fields_check_string(sp, out->str, out->len, err) == -1)
		return -1;
	out->list[0] = out->str;
	out->nlist = 1;
	return 0;
}

int
fields_read(json_object *root, const struct field_spec *specs, size_t n,
    struct field_value *out, struct mk_err *err)
{
	json_object_object_foreach(root, name, value) {
		size_t i;

		(void)value;
		for (i = 0; i < n && strcmp(specs[i].name, name) != 0; i++)
			;
		if (i == n)
			return mk_fail(err, 400, "unknown field: %.64s", name);
	}
	for (size_t i = 0; i < n; i++) {
		const struct field_spec	*sp = &specs[i];
		json_object		*v = NULL;

		memset(&out[i], 0, sizeof out[i]);
		if (json_object_object_get_ex(root, sp->name, &v) && v != NULL &&
		    fields_read_one(v, sp, &out[i], err) == -1)
			return -1;
		if (sp->required && out[i].str == NULL && out[i].ntags == 0)
			return mk_fail(err, 400, "%s is required", sp->name);
	}
	return 0;
}
