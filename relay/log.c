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

static void vlog(enum relay_log_level lvl, const char *suffix, const char *fmt, va_list ap)
{
	char line[2048];
	struct timespec ts;
	struct tm tm;
	size_t n;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
	n += (size_t)snprintf(line + n, sizeof(line) - n, ".%03ldZ %s ", ts.tv_nsec / 1000000L, names[lvl]);
	int m = vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
	if (m < 0)
		m = 0;
	n += (size_t)m;
	if (n > sizeof(line) - 2)
		n = sizeof(line) - 2;
	if (suffix) {
		size_t sl = strlen(suffix);
		if (n + sl <= sizeof(line) - 2) {
			memcpy(line + n, suffix, sl);
			n += sl;
		}
	}
	line[n++] = '\n';
	ssize_t w = write(STDERR_FILENO, line, n);
	(void)w;
}

void relay_log(enum relay_log_level lvl, const char *fmt, ...)
{
	va_list ap;

	if (lvl < min_level)
		return;
	va_start(ap, fmt);
	vlog(lvl, NULL, fmt, ap);
	va_end(ap);
}

void relay_log_limited(struct relay_log_limit *lim, uint64_t interval_ms, enum relay_log_level lvl,
                       const char *fmt, ...)
{
	struct timespec ts;
	char suffix[48] = "";
	va_list ap;
	uint64_t now;

	if (lvl < min_level)
		return;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	now = (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
	if (lim->last_ns && now - lim->last_ns < interval_ms * 1000000ULL) {
		lim->suppressed++;
		return;
	}
	if (lim->suppressed)
		snprintf(suffix, sizeof(suffix), " (%llu more suppressed)", (unsigned long long)lim->suppressed);
	lim->last_ns = now ? now : 1;
	lim->suppressed = 0;
	va_start(ap, fmt);
	vlog(lvl, suffix, fmt, ap);
	va_end(ap);
}
