/* mail.c: the table of mail providers; each provider is its own module (mail_<name>.c). */
#include <string.h>

#include "mail.h"

/* New providers (postmark, sendgrid, ...) are added here and nowhere else. */
static const struct mail_provider *const mail_providers[] = {
	&mail_resend,
	&mail_smtp,
};

const struct mail_provider *
mail_provider_find(const char *name)
{
	size_t	i;

	if (name == NULL)
		return NULL;
	for (i = 0; i < sizeof mail_providers / sizeof mail_providers[0]; i++)
		if (strcmp(mail_providers[i]->name, name) == 0)
			return mail_providers[i];
	return NULL;
}
