/*
 * outage: the lines of an outage's story (outage.h). Only text and
 * arithmetic: the worker reads the clock and the queue, and logs.
 */
#include "relay/delivery/outage.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define NS_PER_S 1000000000LL

void outage_format_duration(int64_t ns, char *buf, size_t len)
{
	if (ns < 0)
		ns = 0;
	int64_t s = ns / NS_PER_S;
	if (s < 1)
		snprintf(buf, len, "%" PRId64 "ms", ns / 1000000);
	else if (s < 60)
		snprintf(buf, len, "%" PRId64 "s", s);
	else if (s < 3600 && s % 60)
		snprintf(buf, len, "%" PRId64 "m%" PRId64 "s", s / 60, s % 60);
	else if (s < 3600)
		snprintf(buf, len, "%" PRId64 "m", s / 60);
	else if (s < 86400 && s % 3600 / 60)
		snprintf(buf, len, "%" PRId64 "h%" PRId64 "m", s / 3600, s % 3600 / 60);
	else if (s < 86400)
		snprintf(buf, len, "%" PRId64 "h", s / 3600);
	else if (s % 86400 / 3600)
		snprintf(buf, len, "%" PRId64 "d%" PRId64 "h", s / 86400, s % 86400 / 3600);
	else
		snprintf(buf, len, "%" PRId64 "d", s / 86400);
}

void outage_format_bytes(uint64_t bytes, char *buf, size_t len)
{
	static const char *const units[] = { "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" };
	if (bytes < 1024) {
		snprintf(buf, len, "%" PRIu64 " B", bytes);
		return;
	}
	double v = (double)bytes / 1024;
	size_t u = 0;
	while (v >= 1024 && u + 1 < sizeof(units) / sizeof(units[0])) {
		v /= 1024;
		u++;
	}
	char num[32];
	snprintf(num, sizeof(num), "%.1f", v);
	size_t n = strlen(num);
	if (n > 2 && strcmp(num + n - 2, ".0") == 0)
		num[n - 2] = '\0'; /* "1 GiB", not "1.0 GiB" */
	snprintf(buf, len, "%s %s", num, units[u]);
}

/* Append to buf[0..len) at *at, as snprintf would, never past the end. */
static void add(char *buf, size_t len, size_t *at, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void add(char *buf, size_t len, size_t *at, const char *fmt, ...)
{
	if (*at >= len)
		return;
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf + *at, len - *at, fmt, ap);
	va_end(ap);
	if (n > 0)
		*at += (size_t)n < len - *at ? (size_t)n : len - *at;
}

static void clear(char *buf, size_t len)
{
	if (len)
		buf[0] = '\0';
}

void outage_begin(struct outage *o, const char *name, enum replay_health h, const char *err, int64_t now_ns,
                  const struct outage_figures *f, char *buf, size_t len)
{
	if (o->health == REPLAY_UP) {
		/* A new outage: a backlog still draining from the last one is
		 * now part of this one's. */
		o->draining = 0;
		o->start_ns = now_ns;
		o->mark_ns = now_ns;
		o->mark_bytes = f->bytes + f->held_bytes;
	}
	o->health = h;
	clear(buf, len);
	switch (h) {
	case REPLAY_RETRYING:
		snprintf(buf, len, "backend '%s' answers with errors, retrying with backoff: %s", name, err);
		break;
	case REPLAY_DOWN:
		snprintf(buf, len, "backend '%s' is down, queueing and probing /ping: %s", name, err);
		break;
	case REPLAY_HOLDING:
		snprintf(buf, len, "backend '%s' is HOLDING its queue until this is fixed (data is kept, retrying): %s",
			 name, err);
		break;
	case REPLAY_STORAGE:
		snprintf(buf, len,
			 "backend '%s': %s; delivery waits until the queue works again (data is kept, retrying with backoff)",
			 name, err);
		break;
	case REPLAY_UP:
		break;
	}
}

int outage_remind(struct outage *o, const char *name, const char *err, int64_t now_ns, const struct outage_figures *f,
                  const struct outage_limits *lim, char *buf, size_t len)
{
	char d[32], b[32], q[32];
	size_t at = 0;
	clear(buf, len);
	if (o->health == REPLAY_UP)
		return 0;
	outage_format_duration(now_ns - o->start_ns, d, sizeof(d));
	switch (o->health) {
	case REPLAY_RETRYING:
		add(buf, len, &at, "backend '%s' still answering with errors after %s", name, d);
		break;
	case REPLAY_HOLDING:
		add(buf, len, &at, "backend '%s' still HOLDING its queue after %s", name, d);
		break;
	case REPLAY_STORAGE:
		add(buf, len, &at, "backend '%s' still waiting for its queue to work after %s", name, d);
		break;
	default:
		add(buf, len, &at, "backend '%s' still down after %s", name, d);
		break;
	}
	if (err && *err)
		add(buf, len, &at, " (%s)", err);
	if (f->batches) {
		outage_format_bytes(f->bytes, b, sizeof(b));
		add(buf, len, &at, ": %" PRIu64 " %s in %" PRIu64 " %s (%s) pending", f->points,
		    relay_plural(f->points, "point", "points"), f->batches, relay_plural(f->batches, "batch", "batches"), b);
		if (f->oldest_accept_ns) {
			outage_format_duration(now_ns - f->oldest_accept_ns, d, sizeof(d));
			add(buf, len, &at, ", oldest %s old", d);
		}
	} else {
		add(buf, len, &at, ": nothing pending");
	}

	/* The rate: what the queue grew by since the last reminder (or the
	 * start), per second of it. Bytes held for a missing database count
	 * toward the limit as the log's do. */
	uint64_t used = f->bytes + f->held_bytes;
	int64_t dt = now_ns - o->mark_ns;
	if (lim->max_bytes) {
		outage_format_bytes(lim->max_bytes, q, sizeof(q));
		if (used >= lim->max_bytes) {
			add(buf, len, &at, "; the queue (%s) is full: writes are refused", q);
		} else if (used > o->mark_bytes && dt > 0) {
			double rate = (double)(used - o->mark_bytes) / ((double)dt / NS_PER_S); /* bytes per second */
			double eta_s = (double)(lim->max_bytes - used) / rate;
			/* Beyond ten years is "never" in all but name; keep it in range. */
			if (eta_s > 3650.0 * 86400)
				eta_s = 3650.0 * 86400;
			outage_format_duration((int64_t)(eta_s * NS_PER_S), d, sizeof(d));
			add(buf, len, &at, "; at the current rate the queue (%s) is full in about %s", q, d);
		} else {
			add(buf, len, &at, "; the queue (%s, %" PRIu64 "%% used) is not growing", q,
			    (uint64_t)((double)used * 100 / (double)lim->max_bytes));
		}
	}
	if (lim->max_age_ms && f->oldest_accept_ns) {
		int64_t left = (int64_t)lim->max_age_ms * 1000000 - (now_ns - f->oldest_accept_ns);
		outage_format_duration((int64_t)lim->max_age_ms * 1000000, q, sizeof(q));
		if (left <= 0) {
			add(buf, len, &at, "; its oldest batch is past max_age (%s): writes are refused", q);
		} else {
			outage_format_duration(left, d, sizeof(d));
			add(buf, len, &at, "; writes are refused in %s, when the oldest batch reaches max_age (%s)", d, q);
		}
	}
	o->mark_ns = now_ns;
	o->mark_bytes = used;
	return 1;
}

int outage_end(struct outage *o, const char *name, int64_t now_ns, const struct outage_figures *f, uint64_t drain_to,
               char *buf, size_t len)
{
	char d[32], b[32];
	size_t at = 0;
	clear(buf, len);
	if (o->health == REPLAY_UP)
		return 0;
	outage_format_duration(now_ns - o->start_ns, d, sizeof(d));
	/* "is up again (was STATE)" leads, as it always did: scripts and
	 * tests look for it. */
	add(buf, len, &at, "backend '%s' is up again (was %s) after %s", name, replay_health_name(o->health), d);
	if (f->batches) {
		outage_format_bytes(f->bytes, b, sizeof(b));
		add(buf, len, &at, ": delivering %" PRIu64 " %s (%" PRIu64 " %s, %s)", f->batches,
		    relay_plural(f->batches, "batch", "batches"), f->points, relay_plural(f->points, "point", "points"), b);
	} else {
		add(buf, len, &at, ": nothing pending");
	}
	o->health = REPLAY_UP;
	o->draining = f->batches > 0;
	o->up_ns = now_ns;
	o->backlog_batches = f->batches;
	o->drain_to = drain_to;
	return 1;
}

int outage_drained(struct outage *o, const char *name, int64_t now_ns, char *buf, size_t len)
{
	char d[32];
	clear(buf, len);
	if (!o->draining)
		return 0;
	outage_format_duration(now_ns - o->up_ns, d, sizeof(d));
	snprintf(buf, len, "backend '%s' caught up: the backlog of %" PRIu64 " %s drained in %s", name,
		 o->backlog_batches, relay_plural(o->backlog_batches, "batch", "batches"), d);
	o->draining = 0;
	return 1;
}

void outage_forget_backlog(struct outage *o)
{
	o->draining = 0;
}
