/*
 * fuzz_settings.c: libFuzzer target for the settings file.
 *
 * The input is a dotenv file.  It goes through settings_parse_dotenv()
 * directly (every pair handed to the callback must be a well-formed key
 * and a bounded value), and then, written to a scratch file, through
 * settings_load_from() with no environment, once needing nothing and once
 * needing every setting, freeing what a successful load returns.
 */
#include <ctype.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "settings.h"

#define FUZZ_VALUE_MAX	4096	/* settings.c SETTINGS_VALUE_MAX */
#define FUZZ_NEED_ALL	0x1f	/* every SETTINGS_NEED_* flag */

int	LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char	fuzz_path[64];

static int
fuzz_pair(const char *key, const char *value, void *arg)
{
	size_t	klen = strlen(key);

	(void)arg;
	if (klen == 0 || isdigit((unsigned char)key[0]))
		abort();
	for (size_t i = 0; i < klen; i++)
		if (!isalnum((unsigned char)key[i]) && key[i] != '_')
			abort();
	if (strlen(value) >= FUZZ_VALUE_MAX)
		abort();
	return 0;
}

/* One scratch file per process, removed at exit. */
static void
fuzz_cleanup(void)
{
	if (fuzz_path[0] != '\0')
		unlink(fuzz_path);
}

static const char *
fuzz_file(const uint8_t *data, size_t size)
{
	FILE	*f;

	if (fuzz_path[0] == '\0') {
		int fd;

		snprintf(fuzz_path, sizeof fuzz_path, "/tmp/mailkit-fuzz-settings.XXXXXX");
		if ((fd = mkstemp(fuzz_path)) == -1)
			abort();
		close(fd);
		atexit(fuzz_cleanup);
	}
	if ((f = fopen(fuzz_path, "w")) == NULL)
		abort();
	if (size > 0 && fwrite(data, 1, size, f) != size)
		abort();
	if (fclose(f) != 0)
		abort();
	return fuzz_path;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char *const	 no_env[] = { NULL };
	struct settings		 s;
	char			 err[512], *text;
	const char		*path;
	int			 rc;

	/* an exactly sized copy without a terminator: the parser takes a length */
	if ((text = malloc(size > 0 ? size : 1)) == NULL)
		abort();
	memcpy(text, data, size);
	err[0] = '\0';
	rc = settings_parse_dotenv(text, size, fuzz_pair, NULL, err, sizeof err);
	if (rc != 0 && (rc != -1 || strncmp(err, "line ", 5) != 0))
		abort();
	free(text);

	path = fuzz_file(data, size);
	if (settings_load_from(&s, path, no_env, 0, err, sizeof err) == 0)
		settings_free(&s);
	if (settings_load_from(&s, path, no_env, FUZZ_NEED_ALL, err, sizeof err) == 0)
		settings_free(&s);
	return 0;
}
