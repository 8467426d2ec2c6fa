/* clock.h: the one monotonic clock every timeout and deadline is measured on. */
#ifndef MAILKIT_CLOCK_H
#define MAILKIT_CLOCK_H

/*
 * Milliseconds on CLOCK_MONOTONIC: only differences mean anything (it
 * does not jump with the wall clock).  Thread-safe, no failure.
 */
long long	clock_ms(void);

#endif
