/* test_util: sizes, durations, addresses, percent-decoding, JSON strings,
 * the log rate limit. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "relay/base/log.h"
#include "relay/base/util.h"

static void test_sizes(void **state)
{
	(void)state;
	static const struct {
		const char *in;
		int rc;
		uint64_t out;
	} t[] = {
		{ "0", 0, 0 }, { "4096", 0, 4096 }, { "1k", 0, 1024 }, { "1KiB", 0, 1024 }, { "1KB", 0, 1000 },
		{ "25MiB", 0, 25ULL << 20 }, { "25MB", 0, 25000000 }, { "2G", 0, 2ULL << 30 },
		{ "1GiB", 0, 1ULL << 30 }, { "1TiB", 0, 1ULL << 40 }, { "10 MiB", 0, 10ULL << 20 },
		{ "", -1, 0 }, { "MiB", -1, 0 }, { "-1", -1, 0 }, { "1.5GiB", -1, 0 }, { "12XB", -1, 0 },
		{ "18446744073709551616", -1, 0 }, { "17179869184GiB", -1, 0 },
	};
	for (size_t i = 0; i < RELAY_ARRAY_SIZE(t); i++) {
		uint64_t v = 12345;
		int rc = parse_size(t[i].in, &v);
		if (rc != t[i].rc || (rc == 0 && v != t[i].out))
			fail_msg("parse_size('%s') = %d, %llu", t[i].in, rc, (unsigned long long)v);
	}
}

static void test_durations(void **state)
{
	(void)state;
	static const struct {
		const char *in;
		int rc;
		uint64_t ms;
	} t[] = {
		{ "0", 0, 0 }, { "10", 0, 10000 }, { "250ms", 0, 250 }, { "10s", 0, 10000 }, { "5m", 0, 300000 },
		{ "2h", 0, 7200000 }, { "7d", 0, 604800000 }, { "1.5s", -1, 0 }, { "s", -1, 0 }, { "10x", -1, 0 },
		{ "-1s", -1, 0 },
	};
	for (size_t i = 0; i < RELAY_ARRAY_SIZE(t); i++) {
		uint64_t v = 0;
		int rc = parse_duration_ms(t[i].in, &v);
		if (rc != t[i].rc || (rc == 0 && v != t[i].ms))
			fail_msg("parse_duration_ms('%s') = %d, %llu", t[i].in, rc, (unsigned long long)v);
	}
}

static void test_hostport(void **state)
{
	(void)state;
	static const struct {
		const char *in;
		const char *host;
		int port;
	} t[] = {
		{ "127.0.0.1:9096", "127.0.0.1", 9096 }, { "localhost:1", "127.0.0.1", 1 },
		{ "[::1]:8086", "::1", 8086 }, { "0.0.0.0:65535", "0.0.0.0", 65535 },
		{ "127.0.0.1", NULL, 0 }, { "127.0.0.1:0", NULL, 0 }, { "127.0.0.1:65536", NULL, 0 },
		{ "example.com:80", NULL, 0 }, { ":80", NULL, 0 }, { "[::1:80", NULL, 0 }, { "[zz]:80", NULL, 0 },
		{ "1.2.3.4:80x", NULL, 0 }, { "256.1.1.1:80", NULL, 0 },
	};
	for (size_t i = 0; i < RELAY_ARRAY_SIZE(t); i++) {
		char *host = NULL, err[200] = "";
		uint16_t port = 0;
		int rc = parse_hostport(t[i].in, &host, &port, err, sizeof(err));
		if (t[i].host) {
			if (rc != 0 || strcmp(host, t[i].host) != 0 || port != t[i].port)
				fail_msg("parse_hostport('%s'): rc %d host %s port %u err %s", t[i].in, rc, host, port, err);
		} else if (rc == 0 || err[0] == '\0') {
			fail_msg("parse_hostport('%s') accepted or gave no reason", t[i].in);
		}
		free(host);
	}
}

static void test_url_decode(void **state)
{
	(void)state;
	char *s = url_decode("a%20b+c%2Fd%c2%b5", 17);
	assert_string_equal(s, "a b c/d\xc2\xb5");
	free(s);
	assert_null(url_decode("%2", 2));
	assert_null(url_decode("%zz", 3));
	assert_null(url_decode("abc%", 4));
	s = url_decode("", 0);
	assert_string_equal(s, "");
	free(s);
}

static void test_rbuf(void **state)
{
	(void)state;
	struct rbuf b = RBUF_INIT;
	for (int i = 0; i < 10000; i++)
		rbuf_appendf(&b, "%d,", i % 10);
	assert_int_equal(b.len, 20000);
	assert_memory_equal(b.data + 19990, "5,6,7,8,9,", 10);
	rbuf_release(&b);
	assert_null(b.data);
	assert_int_equal(b.len, 0);
}

static void test_path_join(void **state)
{
	(void)state;
	static const struct {
		const char *dir, *path, *want;
	} cases[] = {
		{ "/etc/relayd", "q", "/etc/relayd/q" },
		{ "/etc/relayd", "./q", "/etc/relayd/q" },
		{ "/etc/relayd", "././q/r", "/etc/relayd/q/r" },
		{ "/etc/relayd", "../q", "/etc/relayd/../q" },
		{ "/etc/relayd", "/var/lib/relayd", "/var/lib/relayd" },
		{ "/", "q", "/q" },
		{ NULL, "q", "q" },
	};
	for (size_t i = 0; i < RELAY_ARRAY_SIZE(cases); i++) {
		char *got = relay_path_join(cases[i].dir, cases[i].path);
		assert_string_equal(got, cases[i].want);
		free(got);
	}
	assert_string_equal(relay_plural(1, "batch", "batches"), "batch");
	assert_string_equal(relay_plural(0, "batch", "batches"), "batches");
	assert_string_equal(relay_s(1), "");
	assert_string_equal(relay_s(2), "s");
}

static void test_ratelimit(void **state)
{
	(void)state;
	struct relay_ratelimit r = { .interval_ns = 1000 };
	uint64_t sup = 99;
	/* The first event passes, even at time 0. */
	assert_int_equal(relay_ratelimit_allow(&r, 0, &sup), 1);
	assert_int_equal(sup, 0);
	/* Within the interval: refused and counted. */
	assert_int_equal(relay_ratelimit_allow(&r, 1, &sup), 0);
	assert_int_equal(relay_ratelimit_allow(&r, 999, &sup), 0);
	assert_int_equal(r.suppressed, 2);
	/* After it: passes with the count, which starts again. */
	assert_int_equal(relay_ratelimit_allow(&r, 1001, &sup), 1);
	assert_int_equal(sup, 2);
	assert_int_equal(relay_ratelimit_allow(&r, 1500, &sup), 0);
	assert_int_equal(relay_ratelimit_allow(&r, 2001, &sup), 1);
	assert_int_equal(sup, 1);
	assert_int_equal(relay_ratelimit_allow(&r, 5000, &sup), 1);
	assert_int_equal(sup, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sizes),      cmocka_unit_test(test_durations),
		cmocka_unit_test(test_hostport),   cmocka_unit_test(test_url_decode),
		cmocka_unit_test(test_rbuf), cmocka_unit_test(test_ratelimit), cmocka_unit_test(test_path_join),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
