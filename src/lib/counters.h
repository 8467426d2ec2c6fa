/* counters.h: small counters shared by every worker process on a host (rate limits), in a mapped file. */
#ifndef MAILKIT_COUNTERS_H
#define MAILKIT_COUNTERS_H

#include <time.h>

#include "err.h"

struct settings;

#define COUNTERS_SLOTS		8192	/* buckets tracked at once (8192 * 16 B = 128 KiB) */
#define COUNTERS_PROBE		16	/* slots tried before a bucket shares one */
#define COUNTERS_SUFFIX		".counters"	/* file = MAILKIT_DB + this */

/*
 * Why not SQLite: a rate limit is checked on every authenticated request,
 * and a write transaction there costs more than the rest of the request's
 * own work.  These counters are lock-free atomics in a MAP_SHARED file next
 * to MAILKIT_DB, so every worker process sees the same numbers and a worker
 * killed mid-update leaves nothing locked.  Counts are advisory: a lost
 * slot (more than COUNTERS_SLOTS busy buckets) makes two buckets share a
 * count, which only ever makes a limit stricter.
 */

/*
 * Count one hit against `bucket` in the current fixed window of window_sec
 * seconds (windows start at multiples of window_sec).  Returns 0 with *hits
 * (this one included) and *window_end, or -1 with err (503) when the file
 * cannot be mapped.  Thread-safe; the mapping is made once per process.
 */
int	counters_hit(const struct settings *s, const char *bucket, long window_sec,
	    long *hits, time_t *window_end, struct mk_err *err);

/*
 * The host-wide API-key generation: every change to the key table bumps
 * it (counters_keys_changed), so a worker's cache of key lookups knows it
 * must read the table again.  Returns 0 when the file is unavailable
 * (callers then do not cache), else a number >= 1.
 */
unsigned long long	counters_keys_generation(const struct settings *s);
void			counters_keys_changed(const struct settings *s);

#endif
