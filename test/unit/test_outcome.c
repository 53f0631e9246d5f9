/*
 * test_outcome: the backend answer -> fate table, row by row, with the
 * answers InfluxDB 1.6.7 really gives (docs/influxdb.md), and the
 * backoff function's bounds.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "relay/base/backoff.h"
#include "relay/base/outcome.h"

static void test_table(void **state)
{
	(void)state;
	static const struct {
		int status;
		const char *body;
		enum outcome want;
	} t[] = {
		/* delivered */
		{ 204, "", OUTCOME_DELIVERED },
		{ 200, "{}", OUTCOME_DELIVERED },
		/* transport failures and transient statuses */
		{ OUTCOME_STATUS_CONNECT_FAILED, NULL, OUTCOME_RETRY },
		{ OUTCOME_STATUS_TIMEOUT, NULL, OUTCOME_RETRY },
		{ OUTCOME_STATUS_RESET, NULL, OUTCOME_RETRY },
		{ OUTCOME_STATUS_PROTOCOL, NULL, OUTCOME_RETRY },
		/* no request can carry the batch: resending changes nothing */
		{ OUTCOME_STATUS_UNSENDABLE, NULL, OUTCOME_DEAD },
		{ OUTCOME_STATUS_TLS_VERIFY, NULL, OUTCOME_HOLD },
		{ OUTCOME_STATUS_TLS_CONFIG, NULL, OUTCOME_HOLD },
		{ 408, "", OUTCOME_RETRY },
		{ 429, "{\"error\":\"too many requests\"}", OUTCOME_RETRY },
		{ 500, "{\"error\":\"engine: cache-max-memory-size exceeded: (1073741824/1073741824)\"}", OUTCOME_RETRY },
		{ 500, "{\"error\":\"timeout\"}", OUTCOME_RETRY },
		{ 500, "", OUTCOME_RETRY },
		{ 502, "<html>bad gateway</html>", OUTCOME_RETRY },
		{ 503, "", OUTCOME_RETRY },
		{ 503, "{\"error\":\"invalid upstream\"}", OUTCOME_RETRY }, /* texts decide only for 400/422/500 */
		{ 504, "", OUTCOME_RETRY },
		/* permanent: body text decides, whatever the status */
		{ 400, "{\"error\":\"partial write: unable to parse 'cpu v=': missing field value dropped=0\"}", OUTCOME_DEAD },
		{ 400, "{\"error\":\"partial write: field type conflict: input field \\\"v\\\" on measurement \\\"m\\\" is type string, already exists as type float dropped=1\"}", OUTCOME_DEAD },
		{ 400, "{\"error\":\"partial write: points beyond retention policy dropped=3\"}", OUTCOME_DEAD },
		{ 500, "{\"error\":\"retention policy not found: nope\"}", OUTCOME_DEAD },
		{ 500, "{\"error\":\"partial write: points beyond retention policy dropped=1\"}", OUTCOME_DEAD },
		{ 500, "{\"error\":\"field type conflict\"}", OUTCOME_DEAD },
		{ 422, "{\"code\":\"unprocessable entity\",\"message\":\"failure writing points\"}", OUTCOME_DEAD },
		{ 400, "", OUTCOME_DEAD },
		{ 405, "", OUTCOME_DEAD },
		/* hold */
		{ 401, "{\"error\":\"authorization failed\"}", OUTCOME_HOLD },
		{ 403, "{\"error\":\"forbidden\"}", OUTCOME_HOLD },
		{ 404, "404 page not found", OUTCOME_HOLD },
		{ 404, "{\"error\":\"database not found: \\\"x\\\"\"}", OUTCOME_NO_DATABASE },
		{ 404, "{\"code\":\"not found\",\"message\":\"bucket \\\"x\\\" not found\"}", OUTCOME_NO_DATABASE },
		{ 422, "{\"code\":\"unprocessable entity\",\"message\":\"failure writing points\"}", OUTCOME_DEAD },
		/* too large */
		{ 413, "{\"error\":\"Request Entity Too Large\"}", OUTCOME_SPLIT },
		/* odd statuses */
		{ 100, "", OUTCOME_RETRY },
		{ 302, "", OUTCOME_RETRY },
	};
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		enum outcome o = outcome_classify(t[i].status, t[i].body, t[i].body ? strlen(t[i].body) : 0);
		if (o != t[i].want)
			fail_msg("row %zu: %d %s -> %s, want %s", i, t[i].status, t[i].body ? t[i].body : "(null)",
				 outcome_name(o), outcome_name(t[i].want));
	}
}

static void test_body_not_terminated(void **state)
{
	(void)state;
	/* the classifier must read only len bytes */
	const char buf[] = "partial write: xyz";
	assert_int_equal(outcome_classify(400, buf, 7), OUTCOME_DEAD); /* 4xx anyway */
	assert_int_equal(outcome_classify(500, buf, 7), OUTCOME_RETRY); /* "partial" is not enough */
	assert_int_equal(outcome_classify(500, buf, sizeof(buf) - 1), OUTCOME_DEAD);
}

static void test_backoff(void **state)
{
	(void)state;
	/* never below the floor, never above the cap, ceiling doubles */
	for (uint32_t attempt = 0; attempt < 80; attempt++) {
		for (uint64_t r = 0; r < 5000; r += 7) {
			uint64_t d = backoff_full_jitter(attempt, 100, 30000, 100, r * 2654435761ULL);
			assert_true(d >= 100);
			assert_true(d <= 30000);
			uint64_t ceil = 100;
			for (uint32_t i = 0; i < attempt && ceil < 30000; i++)
				ceil *= 2;
			if (ceil > 30000)
				ceil = 30000;
			assert_true(d <= ceil);
		}
	}
	/* full jitter reaches both ends of the window */
	assert_int_equal(backoff_full_jitter(3, 100, 30000, 0, 0), 0);
	assert_int_equal(backoff_full_jitter(3, 100, 30000, 0, 800), 800);
	assert_int_equal(backoff_full_jitter(60, 100, 30000, 0, 30000), 30000);
	assert_int_equal(backoff_full_jitter(1000000, 1, UINT64_MAX / 2, 0, 5), 5);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_table),
		cmocka_unit_test(test_body_not_terminated),
		cmocka_unit_test(test_backoff),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
