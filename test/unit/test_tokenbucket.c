/*
 * test_tokenbucket: the token bucket that paces delivery
 * (relay/base/tokenbucket.h), on a clock of its own: refill, burst, debt
 * (a cost larger than the burst still goes), no limit, rate changes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "relay/base/tokenbucket.h"

static void test_starts_full_and_refills(void **state)
{
	(void)state;
	struct token_bucket b;
	token_bucket_init(&b, 1000, 1000, 0); /* 1000/s, 1 s: 1000 tokens */
	assert_int_equal(token_bucket_wait_ms(&b, 1000, 0), 0);
	token_bucket_take(&b, 1000, 0);
	/* empty: 500 tokens take half a second */
	assert_int_equal(token_bucket_wait_ms(&b, 500, 0), 500);
	assert_int_equal(token_bucket_wait_ms(&b, 500, 250), 250);
	assert_int_equal(token_bucket_wait_ms(&b, 500, 500), 0);
	token_bucket_take(&b, 500, 500);
	/* refill stops at the capacity */
	assert_true(token_bucket_tokens(&b, 100000) == 1000.0);
}

static void test_burst_caps_what_accumulates(void **state)
{
	(void)state;
	struct token_bucket b;
	token_bucket_init(&b, 100, 2000, 0); /* 200 tokens */
	token_bucket_take(&b, 200, 0);
	/* a long idle time gives back only the burst */
	assert_int_equal(token_bucket_wait_ms(&b, 200, 60000), 0);
	token_bucket_take(&b, 200, 60000);
	assert_int_equal(token_bucket_wait_ms(&b, 100, 60000), 1000);
}

static void test_cost_larger_than_burst_goes_into_debt(void **state)
{
	(void)state;
	struct token_bucket b;
	token_bucket_init(&b, 1000, 1000, 0);
	/* 5000 > 1000: it goes once the bucket is full (it is) */
	assert_int_equal(token_bucket_wait_ms(&b, 5000, 0), 0);
	token_bucket_take(&b, 5000, 0);
	assert_true(token_bucket_tokens(&b, 0) == -4000.0);
	/* the next cost waits for the debt and itself: 4 s + 0.1 s */
	assert_int_equal(token_bucket_wait_ms(&b, 100, 0), 4100);
	/* a large one again waits only for a full bucket: 5 s */
	assert_int_equal(token_bucket_wait_ms(&b, 5000, 0), 5000);
	/* the average is the rate: 10 000 tokens in 5 s + 5 s */
	token_bucket_take(&b, 5000, 5000);
	assert_int_equal(token_bucket_wait_ms(&b, 1, 5000), 4001);
}

static void test_no_limit(void **state)
{
	(void)state;
	struct token_bucket b;
	token_bucket_init(&b, 0, 1000, 0);
	for (int i = 0; i < 100; i++) {
		assert_int_equal(token_bucket_wait_ms(&b, 1000000, 0), 0);
		token_bucket_take(&b, 1000000, 0);
	}
	assert_int_equal(token_bucket_wait_ms(&b, 0, 0), 0);
}

static void test_tiny_capacity_is_one_token(void **state)
{
	(void)state;
	struct token_bucket b;
	token_bucket_init(&b, 1, 100, 0); /* 0.1 token: rounded up to 1 */
	assert_int_equal(token_bucket_wait_ms(&b, 1, 0), 0);
	token_bucket_take(&b, 1, 0);
	assert_int_equal(token_bucket_wait_ms(&b, 1, 0), 1000);
}

static void test_rate_changes(void **state)
{
	(void)state;
	struct token_bucket b;
	token_bucket_init(&b, 1000, 1000, 0);
	token_bucket_take(&b, 3000, 0); /* 2000 in debt */
	/* raised to 4000/s: the debt is repaid four times faster */
	token_bucket_set(&b, 4000, 1000, 0);
	assert_int_equal(token_bucket_wait_ms(&b, 1000, 0), 750);
	/* what accrued before a change counts at the old rate */
	token_bucket_set(&b, 1000, 1000, 500); /* -2000 + 2000 = 0 */
	assert_true(token_bucket_tokens(&b, 500) == 0.0);
	/* lowered below what is held: capped at the new capacity */
	token_bucket_init(&b, 1000, 1000, 0);
	token_bucket_set(&b, 100, 1000, 0);
	assert_true(token_bucket_tokens(&b, 0) == 100.0);
	/* a longer burst keeps what is held and lets more accrue */
	token_bucket_set(&b, 100, 5000, 0);
	assert_true(token_bucket_tokens(&b, 0) == 100.0);
	assert_true(token_bucket_tokens(&b, 100000) == 500.0);
	/* to no limit: everything goes; back to a limit: full again */
	token_bucket_take(&b, 10000, 100000);
	token_bucket_set(&b, 0, 1000, 100000);
	assert_int_equal(token_bucket_wait_ms(&b, 1000000, 100000), 0);
	token_bucket_set(&b, 10, 1000, 100000);
	assert_true(token_bucket_tokens(&b, 100000) == 10.0);
}

static void test_clock_going_back(void **state)
{
	(void)state;
	struct token_bucket b;
	token_bucket_init(&b, 1000, 1000, 5000);
	token_bucket_take(&b, 1000, 5000);
	/* an earlier now adds nothing and takes nothing away */
	assert_int_equal(token_bucket_wait_ms(&b, 1000, 1000), 1000);
	assert_int_equal(token_bucket_wait_ms(&b, 1000, 6000), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_starts_full_and_refills),
		cmocka_unit_test(test_burst_caps_what_accumulates),
		cmocka_unit_test(test_cost_larger_than_burst_goes_into_debt),
		cmocka_unit_test(test_no_limit),
		cmocka_unit_test(test_tiny_capacity_is_one_token),
		cmocka_unit_test(test_rate_changes),
		cmocka_unit_test(test_clock_going_back),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
