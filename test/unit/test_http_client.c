/*
 * test_http_client: the backend client's handling of what a backend sends:
 * Retry-After in both of its forms, numbers too large for 64 bits, and
 * values that are neither.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "relay/http_client.h"

static uint64_t ra(const char *v, int64_t now_s)
{
	return http_parse_retry_after(v, strlen(v), now_s);
}

static void test_retry_after_seconds(void **state)
{
	(void)state;
	assert_int_equal(ra("0", 0), 0);
	assert_int_equal(ra("2", 0), 2);
	assert_int_equal(ra(" \t120 ", 0), 120);
	assert_int_equal(ra("007", 0), 7);
	assert_int_equal(ra("18446744073709551615", 0), UINT64_MAX);
	/* Too large for 64 bits: saturated, never wrapped (2^64 + 1 must not
	 * come out as 1, nor 2^61 as a product that is 0 in ms). */
	assert_int_equal(ra("2305843009213693952", 0), 2305843009213693952ULL);
	assert_int_equal(ra("18446744073709551617", 0), UINT64_MAX);
	assert_int_equal(ra("99999999999999999999999999999999999999999", 0), UINT64_MAX);
	/* Not delay-seconds: ignored (the backoff decides). */
	static const char *const bad[] = { "", "  ", "-1", "+5", "5s", "1e3", "1.5", "7 7", "0x10", "\xd9\xa3" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (ra(bad[i], 0) != 0)
			fail_msg("Retry-After '%s' was taken as %llu s", bad[i], (unsigned long long)ra(bad[i], 0));
	/* Only len bytes are read. */
	assert_int_equal(http_parse_retry_after("12345", 2, 0), 12);
}

static void test_retry_after_date(void **state)
{
	(void)state;
	const int64_t t = 784111777; /* Sun, 06 Nov 1994 08:49:37 GMT */
	assert_int_equal(ra("Sun, 06 Nov 1994 08:49:37 GMT", t - 30), 30);
	assert_int_equal(ra("  Sun, 06 Nov 1994 08:49:37 GMT ", t - 1), 1);
	/* Past or now: retry when the backoff says. */
	assert_int_equal(ra("Sun, 06 Nov 1994 08:49:37 GMT", t), 0);
	assert_int_equal(ra("Sun, 06 Nov 1994 08:49:37 GMT", t + 3600), 0);
	assert_int_equal(ra("Thu, 01 Jan 1970 00:00:10 GMT", 0), 10);
	assert_int_equal(ra("Tue, 29 Feb 2028 23:59:59 GMT", 1835481599 - 5), 5);
	assert_int_equal(ra("Fri, 31 Dec 9999 23:59:59 GMT", 0), 253402300799ULL);
	/* Not an IMF-fixdate: ignored. The obsolete forms (RFC 850, asctime)
	 * are not understood either: the backoff decides. */
	static const char *const bad[] = {
		"Sun, 06 Nov 1994 08:49:37 UTC", "Sun, 6 Nov 1994 08:49:37 GMT", "Sun, 06 Nov 94 08:49:37 GMT",
		"Sun, 31 Nov 1994 08:49:37 GMT", "Sun, 29 Feb 2027 08:49:37 GMT", "Sun, 06 Foo 1994 08:49:37 GMT",
		"Sun, 06 Nov 1994 24:00:00 GMT", "Sun, 06 Nov 1994 08:60:00 GMT", "Sun, 06 Nov 1994 08:49:61 GMT",
		"Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994", "Sun, 06 Nov 1994 08:49:37 GMTX",
		"Sun, 0x Nov 1994 08:49:37 GMT", "Sun, 06 Nov -994 08:49:37 GMT",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (ra(bad[i], 0) != 0)
			fail_msg("Retry-After '%s' was taken as %llu s", bad[i], (unsigned long long)ra(bad[i], 0));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_retry_after_seconds),
		cmocka_unit_test(test_retry_after_date),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
