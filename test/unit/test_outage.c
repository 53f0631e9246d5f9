/*
 * test_outage: the lines of an outage's story (relay/delivery/outage.h),
 * with made-up times and queue figures: the first line by state, the
 * reminder (backlog, age, time until the queue is full at the rate it
 * grew since the last one, "not growing", a full queue, max_age), the
 * return (how long, the backlog), the drained backlog (how long), and the
 * durations and sizes as a person reads them.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "relay/delivery/outage.h"

#define S (1000000000LL)
#define MIB (1024ULL * 1024)
#define GIB (1024ULL * MIB)

static const int64_t t0 = 1800000000LL * S; /* a wall-clock time */

static void test_format_duration(void **state)
{
	(void)state;
	static const struct {
		int64_t ns;
		const char *want;
	} rows[] = {
		{ 0, "0ms" },
		{ 350 * 1000000LL, "350ms" },
		{ 45 * S, "45s" },
		{ 59 * S + 999999999LL, "59s" },
		{ 600 * S, "10m" },
		{ 602 * S, "10m2s" },
		{ 754 * S, "12m34s" },
		{ 3 * 3600 * S + 20 * 60 * S + 7 * S, "3h20m" },
		{ 3600 * S, "1h" },
		{ 2 * 86400 * S + 3 * 3600 * S, "2d3h" },
		{ 86400 * S, "1d" },
		{ -5 * S, "0ms" },
	};
	char buf[32];
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		outage_format_duration(rows[i].ns, buf, sizeof(buf));
		assert_string_equal(buf, rows[i].want);
	}
}

static void test_format_bytes(void **state)
{
	(void)state;
	char buf[32];
	outage_format_bytes(512, buf, sizeof(buf));
	assert_string_equal(buf, "512 B");
	outage_format_bytes(1024, buf, sizeof(buf));
	assert_string_equal(buf, "1 KiB");
	outage_format_bytes(1258291, buf, sizeof(buf)); /* 1.2 MiB */
	assert_string_equal(buf, "1.2 MiB");
	outage_format_bytes(GIB, buf, sizeof(buf));
	assert_string_equal(buf, "1 GiB");
}

static struct outage_figures figures(uint64_t batches, uint64_t points, uint64_t bytes, int64_t oldest)
{
	struct outage_figures f;
	memset(&f, 0, sizeof(f));
	f.batches = batches;
	f.points = points;
	f.bytes = bytes;
	f.oldest_accept_ns = oldest;
	return f;
}

/* Down for 12m34s: its first line, two reminders (growing, then not),
 * up again with the backlog, and the backlog drained 45 s later. */
static void test_story_down(void **state)
{
	(void)state;
	struct outage o;
	char line[1024];
	struct outage_limits lim = { GIB, 0 };
	memset(&o, 0, sizeof(o));

	struct outage_figures f = figures(0, 0, 0, 0);
	outage_begin(&o, "b", REPLAY_DOWN, "connect: connection refused", t0, &f, line, sizeof(line));
	assert_string_equal(line, "backend 'b' is down, queueing and probing /ping: connect: connection refused");
	assert_int_equal(o.health, REPLAY_DOWN);

	/* 10 min later: 1.2 MiB pending, grown from 0 in 600 s (about 2 KiB/s):
	 * the remaining 1022.8 MiB fill in about 5d22h. */
	f = figures(51, 5123, 1258291, t0 - 2 * S);
	assert_int_equal(outage_remind(&o, "b", "connect: connection refused", t0 + 600 * S, &f, &lim, line,
				       sizeof(line)), 1);
	assert_string_equal(line, "backend 'b' still down after 10m (connect: connection refused): 5123 points in 51 "
				  "batches (1.2 MiB) pending, oldest 10m2s old; at the current rate the queue (1 GiB) "
				  "is full in about 5d22h");

	/* 10 min more, nothing new: not growing. */
	assert_int_equal(outage_remind(&o, "b", "", t0 + 1200 * S, &f, &lim, line, sizeof(line)), 1);
	assert_string_equal(line, "backend 'b' still down after 20m: 5123 points in 51 batches (1.2 MiB) pending, "
				  "oldest 20m2s old; the queue (1 GiB, 0% used) is not growing");

	assert_int_equal(outage_end(&o, "b", t0 + 754 * S + 600 * S, &f, 1000, line, sizeof(line)), 1);
	assert_string_equal(line, "backend 'b' is up again (was down) after 22m34s: delivering 51 batches "
				  "(5123 points, 1.2 MiB)");
	assert_int_equal(o.health, REPLAY_UP);
	assert_true(o.draining);
	assert_int_equal(o.drain_to, 1000);
	/* No outage: no reminder. */
	assert_int_equal(outage_remind(&o, "b", "", t0 + 1400 * S, &f, &lim, line, sizeof(line)), 0);
	assert_string_equal(line, "");

	assert_int_equal(outage_drained(&o, "b", t0 + 1354 * S + 45 * S, line, sizeof(line)), 1);
	assert_string_equal(line, "backend 'b' caught up: the backlog of 51 batches drained in 45s");
	assert_false(o.draining);
	assert_int_equal(outage_drained(&o, "b", t0 + 1500 * S, line, sizeof(line)), 0);
}

/* The rate is the growth since the last reminder: 100 MiB in 60 s with
 * 400 MiB used of 1 GiB: 624 MiB more in about 6m14s. */
static void test_rate_since_last_reminder(void **state)
{
	(void)state;
	struct outage o;
	char line[1024];
	struct outage_limits lim = { GIB, 0 };
	memset(&o, 0, sizeof(o));
	struct outage_figures f = figures(10, 10, 300 * MIB, t0 - 60 * S);
	outage_begin(&o, "b", REPLAY_RETRYING, "HTTP 503: busy", t0, &f, line, sizeof(line));
	assert_string_equal(line, "backend 'b' answers with errors, retrying with backoff: HTTP 503: busy");
	f = figures(20, 20, 400 * MIB, t0 - 60 * S);
	assert_int_equal(outage_remind(&o, "b", "HTTP 503: busy", t0 + 60 * S, &f, &lim, line, sizeof(line)), 1);
	assert_non_null(strstr(line, "backend 'b' still answering with errors after 1m (HTTP 503: busy): 20 points in "
				     "20 batches (400 MiB) pending, oldest 2m old; at the current rate the queue "
				     "(1 GiB) is full in about 6m14s"));
	/* Full: writes are refused. */
	f = figures(30, 30, GIB, t0 - 60 * S);
	assert_int_equal(outage_remind(&o, "b", "", t0 + 120 * S, &f, &lim, line, sizeof(line)), 1);
	assert_non_null(strstr(line, "; the queue (1 GiB) is full: writes are refused"));
}

/* Held bytes count toward the limit; max_age is told too. */
static void test_held_and_max_age(void **state)
{
	(void)state;
	struct outage o;
	char line[1024];
	struct outage_limits lim = { 100 * MIB, 3600 * 1000 };
	memset(&o, 0, sizeof(o));
	struct outage_figures f = figures(0, 0, 0, 0);
	outage_begin(&o, "b", REPLAY_HOLDING, "HTTP 401: authorization failed", t0, &f, line, sizeof(line));
	assert_string_equal(line, "backend 'b' is HOLDING its queue until this is fixed (data is kept, retrying): "
				  "HTTP 401: authorization failed");
	f = figures(5, 50, 10 * MIB, t0 - 600 * S);
	f.held_bytes = 40 * MIB; /* 50 of 100 MiB, grown in 100 s: full in 100 s more */
	assert_int_equal(outage_remind(&o, "b", "HTTP 401: authorization failed", t0 + 100 * S, &f, &lim, line,
				       sizeof(line)), 1);
	assert_string_equal(line, "backend 'b' still HOLDING its queue after 1m40s (HTTP 401: authorization failed): "
				  "50 points in 5 batches (10 MiB) pending, oldest 11m40s old; at the current rate the "
				  "queue (100 MiB) is full in about 1m40s; writes are refused in 48m20s, when the "
				  "oldest batch reaches max_age (1h)");
}

/* From one not-up state to another the outage goes on: its start stays;
 * a storage failure has its own wording; up with nothing pending leaves
 * nothing to drain. */
static void test_state_changes(void **state)
{
	(void)state;
	struct outage o;
	char line[1024];
	struct outage_limits lim = { 0, 0 };
	memset(&o, 0, sizeof(o));
	struct outage_figures f = figures(0, 0, 0, 0);
	outage_begin(&o, "b", REPLAY_DOWN, "timeout", t0, &f, line, sizeof(line));
	outage_begin(&o, "b", REPLAY_STORAGE, "cannot read the queue: I/O error", t0 + 30 * S, &f, line, sizeof(line));
	assert_string_equal(line, "backend 'b': cannot read the queue: I/O error; delivery waits until the queue works "
				  "again (data is kept, retrying with backoff)");
	assert_int_equal(o.start_ns, t0);
	assert_int_equal(outage_remind(&o, "b", "", t0 + 90 * S, &f, &lim, line, sizeof(line)), 1);
	assert_string_equal(line, "backend 'b' still waiting for its queue to work after 1m30s: nothing pending");
	assert_int_equal(outage_end(&o, "b", t0 + 100 * S, &f, 0, line, sizeof(line)), 1);
	assert_string_equal(line, "backend 'b' is up again (was storage) after 1m40s: nothing pending");
	assert_false(o.draining);
	/* Up and up again: no line. */
	assert_int_equal(outage_end(&o, "b", t0 + 200 * S, &f, 0, line, sizeof(line)), 0);

	/* Down again while a backlog drains: the new outage tells it. */
	f = figures(3, 3, 300, t0);
	outage_begin(&o, "b", REPLAY_DOWN, "reset", t0 + 300 * S, &f, line, sizeof(line));
	assert_int_equal(outage_end(&o, "b", t0 + 301 * S, &f, 9, line, sizeof(line)), 1);
	assert_string_equal(line, "backend 'b' is up again (was down) after 1s: delivering 3 batches (3 points, "
				  "300 B)");
	outage_begin(&o, "b", REPLAY_DOWN, "reset", t0 + 302 * S, &f, line, sizeof(line));
	assert_false(o.draining);
	assert_int_equal(o.start_ns, t0 + 302 * S);
}

/* A line never overflows its buffer. */
static void test_short_buffer(void **state)
{
	(void)state;
	struct outage o;
	char line[40];
	struct outage_limits lim = { GIB, 3600 * 1000 };
	memset(&o, 0, sizeof(o));
	struct outage_figures f = figures(51, 5123, 1258291, t0);
	outage_begin(&o, "b", REPLAY_DOWN, "connect: connection refused", t0, &f, line, sizeof(line));
	assert_int_equal(strlen(line), sizeof(line) - 1);
	assert_int_equal(outage_remind(&o, "b", "connect: connection refused", t0 + S, &f, &lim, line, sizeof(line)), 1);
	assert_int_equal(strlen(line), sizeof(line) - 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_format_duration),
		cmocka_unit_test(test_format_bytes),
		cmocka_unit_test(test_story_down),
		cmocka_unit_test(test_rate_since_last_reminder),
		cmocka_unit_test(test_held_and_max_age),
		cmocka_unit_test(test_state_changes),
		cmocka_unit_test(test_short_buffer),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
