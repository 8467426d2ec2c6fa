/* tempdb.h: a scratch state file for the unit tests that open the store: DIR/state.db. */
#ifndef MAILKIT_TEST_TEMPDB_H
#define MAILKIT_TEST_TEMPDB_H

#include <stdio.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "store.h"

/* Make the directory dir (a mkdtemp template) and name path (pathlen bytes) in it. */
static inline void
tempdb_make(char *dir, char *path, size_t pathlen)
{
	cr_assert_not_null(mkdtemp(dir));
	snprintf(path, pathlen, "%s/state.db", dir);
}

/* Close the store and remove path, its WAL files, its counters (counters.h) and dir. */
static inline void
tempdb_remove(const char *dir, const char *path)
{
	char f[4096];

	store_close();
	unlink(path);
	snprintf(f, sizeof f, "%s-wal", path);
	unlink(f);
	snprintf(f, sizeof f, "%s-shm", path);
	unlink(f);
	snprintf(f, sizeof f, "%s.counters", path);
	unlink(f);
	rmdir(dir);
}

#endif
