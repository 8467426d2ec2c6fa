/* clock.h: the one monotonic clock every timeout and deadline is measured on. */
#ifndef MAILKIT_CLOCK_H
#define MAILKIT_CLOCK_H

/*
 * Milliseconds on CLOCK_MONOTONIC: only differences mean anything (it
 * does not jump with the wall clock).  Thread-safe, no failure.
 */
long long	clock_ms(void);

/*
 * Milliseconds since 1970 on the wall clock (CLOCK_REALTIME): for times
 * that are shown or stored, such as a usage event's timestamp; never for
 * measuring a wait.
 */
long long	clock_wall_ms(void);

#endif
