/* clock.c: the one monotonic clock every timeout and deadline is measured on. */
#include <time.h>

#include "clock.h"

long long
clock_ms(void)
{
	struct timespec	ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
