/*
 * log: formatted, leveled lines on stderr. One write(2) per event so lines
 * from several threads never interleave.
 */
#include "relay/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static enum relay_log_level min_level = RELAY_LOG_INFO;
static const char *const names[] = { "debug", "info", "notice", "warn", "error" };

int relay_log_level_parse(const char *s, enum relay_log_level *out)
{
	for (int i = 0; i <= RELAY_LOG_ERROR; i++)
		if (s && strcmp(s, names[i]) == 0) {
			*out = (enum relay_log_level)i;
			return 0;
		}
	return -1;
}

void relay_log_set_level(enum relay_log_level lvl)
{
	min_level = lvl;
}

int relay_log_enabled(enum relay_log_level lvl)
{
	return lvl >= min_level;
}

void relay_log(enum relay_log_level lvl, const char *fmt, ...)
{
	char line[2048];
	struct timespec ts;
	struct tm tm;
	va_list ap;
	size_t n;

	if (lvl < min_level)
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
	n += (size_t)snprintf(line + n, sizeof(line) - n, ".%03ldZ %s ", ts.tv_nsec / 1000000L, names[lvl]);
	va_start(ap, fmt);
	int m = vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
	va_end(ap);
	if (m < 0)
		m = 0;
	n += (size_t)m;
	if (n > sizeof(line) - 2)
		n = sizeof(line) - 2;
	line[n++] = '\n';
	ssize_t w = write(STDERR_FILENO, line, n);
	(void)w;
}

int relay_ratelimit_allow(struct relay_ratelimit *r, uint64_t now_ns, uint64_t *suppressed)
{
	if (r->last_ns && now_ns - r->last_ns < r->interval_ns) {
		r->suppressed++;
		return 0;
	}
	*suppressed = r->suppressed;
	r->suppressed = 0;
	/* 0 means "never": a clock that reads 0 still lets the next line be
	 * limited. */
	r->last_ns = now_ns ? now_ns : 1;
	return 1;
}
