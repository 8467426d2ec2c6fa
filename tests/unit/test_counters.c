/* test_counters.c: shared fixed-window counters (counters.c), across processes. */
#include <sys/wait.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "counters.h"
#include "settings.h"

#define FORKS		4	/* processes hitting one bucket at once */
#define HITS_EACH	500

static char dir[] = "/tmp/mailkit-test-counters-XXXXXX";
static char db[sizeof dir + 32], file[sizeof dir + 64];

static void
setup(void)
{
	cr_assert_not_null(mkdtemp(dir));
	snprintf(db, sizeof db, "%s/state.db", dir);
	snprintf(file, sizeof file, "%s%s", db, COUNTERS_SUFFIX);
}

static void
teardown(void)
{
	unlink(file);
	rmdir(dir);
}

TestSuite(counters, .init = setup, .fini = teardown);

static struct settings
settings_at(char *path)
{
	struct settings s;

	memset(&s, 0, sizeof s);
	s.db_path = path;
	return s;
}

Test(counters, counts_per_bucket_and_window)
{
	struct settings	s = settings_at(db);
	struct mk_err	err;
	long		hits;
	time_t		end, now = time(NULL);

	for (long i = 1; i <= 5; i++) {
		cr_assert_eq(counters_hit(&s, "key:1", 3600, &hits, &end, &err), 0, "%s", err.msg);
		cr_expect_eq(hits, i);
	}
	cr_expect_eq(end % 3600, 0, "windows start at multiples of their length");
	cr_expect_gt(end, now);
	cr_expect_leq(end, now + 3600);
	cr_assert_eq(counters_hit(&s, "key:2", 3600, &hits, &end, &err), 0);
	cr_expect_eq(hits, 1, "buckets are separate");
}

/* Every process sees one count: N processes x M hits = N*M, none lost. */
Test(counters, shared_by_processes_without_losing_hits)
{
	struct settings	s = settings_at(db);
	struct mk_err	err;
	long		hits;
	time_t		end;
	int		status;

	for (int p = 0; p < FORKS; p++) {
		if (fork() == 0) {
			for (int i = 0; i < HITS_EACH; i++)
				if (counters_hit(&s, "key:shared", 3600, &hits, &end, &err) == -1)
					_exit(1);
			_exit(0);
		}
	}
	for (int p = 0; p < FORKS; p++) {
		cr_assert_neq(wait(&status), -1);
		cr_expect_eq(WEXITSTATUS(status), 0);
	}
	cr_assert_eq(counters_hit(&s, "key:shared", 3600, &hits, &end, &err), 0);
	cr_expect_eq(hits, FORKS * HITS_EACH + 1);
}

/* A new window restarts the count (1-second windows: wait for the next). */
Test(counters, next_window_restarts)
{
	struct settings	s = settings_at(db);
	struct mk_err	err;
	long		hits;
	time_t		end;

	cr_assert_eq(counters_hit(&s, "key:w", 1, &hits, &end, &err), 0);
	cr_assert_eq(counters_hit(&s, "key:w", 1, &hits, &end, &err), 0);
	while (time(NULL) < end)
		usleep(20000);
	cr_assert_eq(counters_hit(&s, "key:w", 1, &hits, &end, &err), 0);
	cr_expect_eq(hits, 1);
}

/* More buckets than slots still count (sharing makes limits stricter, never looser). */
Test(counters, many_buckets_never_undercount)
{
	struct settings	s = settings_at(db);
	struct mk_err	err;
	char		name[32];
	long		hits;
	time_t		end;

	for (int i = 0; i < COUNTERS_SLOTS + 500; i++) {
		snprintf(name, sizeof name, "key:%d", i);
		cr_assert_eq(counters_hit(&s, name, 3600, &hits, &end, &err), 0);
		cr_assert_geq(hits, 1);
	}
	for (int i = 0; i < 3; i++)
		cr_assert_eq(counters_hit(&s, "key:7", 3600, &hits, &end, &err), 0);
	cr_expect_geq(hits, 4);
}

Test(counters, unusable_path_is_503)
{
	static char	bad[] = "/nonexistent-mailkit-dir/state.db";
	struct settings	s = settings_at(bad);
	struct mk_err	err;
	long		hits;
	time_t		end;

	/* a process maps one file for its life: run the failure in a fresh child */
	if (fork() == 0)
		_exit(counters_hit(&s, "key:1", 60, &hits, &end, &err) == -1 && err.status == 503 ?
		    0 : 1);
	int status;
	cr_assert_neq(wait(&status), -1);
	cr_expect_eq(WEXITSTATUS(status), 0);
}
