/* counters.c: lock-free fixed-window counters in a MAP_SHARED file. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "counters.h"
#include "log.h"
#include "settings.h"

#define COUNTERS_MAGIC	0x4d4b435452530002ULL	/* "MKCTRS", layout version 2 */

/*
 * One bucket: the 64-bit hash of its name (0 = free) and, packed so one CAS
 * updates both, the window number (high 32 bits) and its count (low 32).
 */
struct counter_slot {
	_Atomic uint64_t	key;
	_Atomic uint64_t	window_count;
};

struct counters_file {
	uint64_t		magic;
	uint64_t		nslots;
	_Atomic uint64_t	keys_generation;	/* counters_keys_changed() */
	uint64_t		reserved[5];
	struct counter_slot	slot[COUNTERS_SLOTS];
};

static pthread_mutex_t		 counters_lock = PTHREAD_MUTEX_INITIALIZER;
static struct counters_file	*counters_map;

/* FNV-1a, never 0 (0 marks a free slot). */
static uint64_t
counters_hash(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	for (; *s != '\0'; s++) {
		h ^= (unsigned char)*s;
		h *= 0x100000001b3ULL;
	}
	return h != 0 ? h : 1;
}

/* Map the file, creating it zero-filled (all slots free) on first use. */
static struct counters_file *
counters_open(const struct settings *s)
{
	char		 path[4096];
	struct stat	 st;
	void		*p;
	int		 fd;

	pthread_mutex_lock(&counters_lock);
	if (counters_map != NULL)
		goto out;
	if (s->db_path == NULL || *s->db_path == '\0' ||
	    (size_t)snprintf(path, sizeof path, "%s%s", s->db_path, COUNTERS_SUFFIX) >=
	    sizeof path) {
		log_error("counters: MAILKIT_DB is not set or too long");
		goto out;
	}
	if ((fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600)) == -1) {
		log_error("counters: %s: %s", path, strerror(errno));
		goto out;
	}
	/* a new file is extended with zeros: every slot free, magic 0 */
	if (fstat(fd, &st) == -1 || ((size_t)st.st_size < sizeof *counters_map &&
	    ftruncate(fd, sizeof *counters_map) == -1)) {
		log_error("counters: %s: %s", path, strerror(errno));
		close(fd);
		goto out;
	}
	p = mmap(NULL, sizeof *counters_map, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	if (p == MAP_FAILED) {
		log_error("counters: mmap %s: %s", path, strerror(errno));
		goto out;
	}
	counters_map = p;
	/* stamping the header is idempotent, so racing processes agree; a file
	 * of another layout (an older version) starts over from zero */
	if (counters_map->magic != COUNTERS_MAGIC && counters_map->magic != 0)
		memset(counters_map->slot, 0, sizeof counters_map->slot);
	counters_map->nslots = COUNTERS_SLOTS;
	counters_map->magic = COUNTERS_MAGIC;
out:
	pthread_mutex_unlock(&counters_lock);
	return counters_map;
}

/* The slot for hash h: its own, a free one claimed now, or a stale one reused. */
static struct counter_slot *
counters_slot(struct counters_file *f, uint64_t h, uint32_t window)
{
	size_t start = (size_t)(h % COUNTERS_SLOTS);

	for (size_t i = 0; i < COUNTERS_PROBE; i++) {
		struct counter_slot	*sl = &f->slot[(start + i) % COUNTERS_SLOTS];
		uint64_t		 k = atomic_load(&sl->key);

		if (k == h)
			return sl;
		if (k == 0 && atomic_compare_exchange_strong(&sl->key, &k, h))
			return sl;
		if (k == h)	/* another process claimed it for h meanwhile */
			return sl;
	}
	/* all probed slots busy: take one whose window has passed, else share */
	for (size_t i = 0; i < COUNTERS_PROBE; i++) {
		struct counter_slot	*sl = &f->slot[(start + i) % COUNTERS_SLOTS];
		uint64_t		 wc = atomic_load(&sl->window_count);
		uint64_t		 k = atomic_load(&sl->key);

		if ((uint32_t)(wc >> 32) < window &&
		    atomic_compare_exchange_strong(&sl->key, &k, h))
			return sl;
	}
	return &f->slot[start];
}

int
counters_hit(const struct settings *s, const char *bucket, long window_sec,
    long *hits, time_t *window_end, struct mk_err *err)
{
	struct counters_file	*f = counters_map != NULL ? counters_map : counters_open(s);
	struct counter_slot	*sl;
	uint64_t		 old, next;
	time_t			 now = time(NULL);
	uint32_t		 window;

	if (f == NULL)
		return mk_fail(err, 503, "rate limiter unavailable");
	if (window_sec < 1)
		window_sec = 1;
	window = (uint32_t)(now / window_sec);
	sl = counters_slot(f, counters_hash(bucket), window);
	old = atomic_load(&sl->window_count);
	do {
		if ((uint32_t)(old >> 32) != window)
			next = (uint64_t)window << 32 | 1;
		else if ((uint32_t)old == UINT32_MAX)
			next = old;		/* saturate */
		else
			next = old + 1;
	} while (!atomic_compare_exchange_weak(&sl->window_count, &old, next));
	*hits = (long)(uint32_t)next;
	*window_end = (time_t)(window + 1) * window_sec;
	return 0;
}

unsigned long long
counters_keys_generation(const struct settings *s)
{
	struct counters_file *f = counters_map != NULL ? counters_map : counters_open(s);

	/* +1: a fresh file (0) still reads as a valid generation */
	return f != NULL ? (unsigned long long)atomic_load(&f->keys_generation) + 1 : 0;
}

void
counters_keys_changed(const struct settings *s)
{
	struct counters_file *f = counters_map != NULL ? counters_map : counters_open(s);

	if (f != NULL)
		atomic_fetch_add(&f->keys_generation, 1);
}
