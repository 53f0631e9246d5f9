/*
 * log: one event per line on stderr: "2026-11-26T17:34:14.123Z level message".
 * Levels as redis's: debug, info, notice, warn, error. Messages follow git's
 * style: lowercase, what failed first, names quoted. Secrets never go in.
 */
#ifndef RELAY_LOG_H
#define RELAY_LOG_H

#include <stdint.h>

enum relay_log_level {
	RELAY_LOG_DEBUG = 0,
	RELAY_LOG_INFO,
	RELAY_LOG_NOTICE,
	RELAY_LOG_WARN,
	RELAY_LOG_ERROR,
};

/* Parse "debug".."error"; returns 0 or -1. */
int relay_log_level_parse(const char *s, enum relay_log_level *out);
void relay_log_set_level(enum relay_log_level lvl);
int relay_log_enabled(enum relay_log_level lvl);
void relay_log(enum relay_log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A rate limit for one kind of repeated event (refused writes, failed
 * logins, bad datagrams): zero-initialise, keep it beside what it counts. */
struct relay_log_limit {
	uint64_t last_ns;     /* CLOCK_MONOTONIC of the last line logged; 0 = none yet */
	uint64_t suppressed;  /* events not logged since */
};
/*
 * Log like relay_log, unless a line went out through lim less than
 * interval_ms ago: then only count the event. A logged line ends with
 * " (N more suppressed)" when events were counted since the last one, so
 * nothing disappears from the log without a trace.
 */
void relay_log_limited(struct relay_log_limit *lim, uint64_t interval_ms, enum relay_log_level lvl,
                       const char *fmt, ...) __attribute__((format(printf, 4, 5)));

#endif
