/*
 * backoff: capped exponential backoff with full jitter (a delay drawn
 * uniformly from [0, min(cap, base * 2^attempt)]), so that many relays
 * retrying one InfluxDB do not hammer it in lock-step. Pure: the caller
 * passes the random number.
 */
#ifndef RELAY_BACKOFF_H
#define RELAY_BACKOFF_H

#include <stdint.h>

/* The delay in ms before retry number attempt (0 = first retry). rnd is
 * a uniformly random 64-bit number. The result is at least min_ms (so a
 * refused connection never turns into a hot loop) and at most cap_ms. */
uint64_t backoff_full_jitter(uint32_t attempt, uint64_t base_ms, uint64_t cap_ms, uint64_t min_ms, uint64_t rnd);

#endif
