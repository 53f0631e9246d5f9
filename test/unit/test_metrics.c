/* test_metrics: histograms and the Prometheus text format they are
 * written in (escaping, cumulative buckets, number formatting). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "relay/base/metrics.h"

static void test_histogram(void **state)
{
	(void)state;
	static const double b[] = { 1, 2, 5 };
	struct relay_histogram h, g;
	relay_histogram_init(&h, b, 3);
	relay_histogram_observe(&h, 0.5);
	relay_histogram_observe(&h, 1);   /* le is inclusive */
	relay_histogram_observe(&h, 1.5);
	relay_histogram_observe(&h, 9);
	relay_histogram_observe(&h, NAN); /* ignored */
	assert_int_equal(h.count, 4);
	assert_int_equal(h.counts[0], 2);
	assert_int_equal(h.counts[1], 1);
	assert_int_equal(h.counts[2], 0);
	assert_int_equal(h.counts[3], 1);
	relay_histogram_init(&g, b, 3);
	relay_histogram_observe(&g, 3);
	relay_histogram_merge(&g, &h);
	assert_int_equal(g.count, 5);
	assert_true(fabs(g.sum - 15.0) < 1e-9);

	struct rbuf out = RBUF_INIT;
	char l[64];
	prom_family(&out, "x_seconds", "histogram", "a\\b\nc");
	prom_histogram(&out, "x_seconds", prom_labels(l, sizeof(l), "backend", "a", NULL), &g);
	prom_histogram(&out, "x_seconds", "", &g);
	assert_string_equal(rbuf_cstr(&out),
	                    "# HELP x_seconds a\\\\b\\nc\n"
	                    "# TYPE x_seconds histogram\n"
	                    "x_seconds_bucket{backend=\"a\",le=\"1\"} 2\n"
	                    "x_seconds_bucket{backend=\"a\",le=\"2\"} 3\n"
	                    "x_seconds_bucket{backend=\"a\",le=\"5\"} 4\n"
	                    "x_seconds_bucket{backend=\"a\",le=\"+Inf\"} 5\n"
	                    "x_seconds_sum{backend=\"a\"} 15\n"
	                    "x_seconds_count{backend=\"a\"} 5\n"
	                    "x_seconds_bucket{le=\"1\"} 2\n"
	                    "x_seconds_bucket{le=\"2\"} 3\n"
	                    "x_seconds_bucket{le=\"5\"} 4\n"
	                    "x_seconds_bucket{le=\"+Inf\"} 5\n"
	                    "x_seconds_sum 15\n"
	                    "x_seconds_count 5\n");
	rbuf_release(&out);
}

static void test_samples(void **state)
{
	(void)state;
	struct rbuf out = RBUF_INIT;
	char l[32];
	prom_u64(&out, "a_total", NULL, 18446744073709551615ULL);
	prom_i64(&out, "b", "", -3);
	prom_f64(&out, "c", prom_labels(l, sizeof(l), "k", "q\"\\\n", "j", "", NULL), 0.1);
	prom_f64(&out, "d", NULL, 1796000000.123);
	prom_f64(&out, "e", NULL, INFINITY);
	prom_f64(&out, "f", NULL, NAN);
	assert_string_equal(rbuf_cstr(&out), "a_total 18446744073709551615\n"
	                                     "b -3\n"
	                                     "c{k=\"q\\\"\\\\\\n\",j=\"\"} 0.1\n"
	                                     "d 1796000000.123\n"
	                                     "e +Inf\n"
	                                     "f NaN\n");
	/* A buffer too small cuts the labels short, never overflows. */
	char tiny[8];
	prom_labels(tiny, sizeof(tiny), "backend", "long-name", NULL);
	assert_int_equal(strlen(tiny), 7);
	rbuf_release(&out);
}

/* The bounds' texts read back as the bounds, one for one. */
static void test_bucket_texts(void **state)
{
	(void)state;
	const double *arrays[] = { relay_buckets_fast_s, relay_buckets_delivery_s };
	const uint32_t ns[] = { relay_buckets_fast_n, relay_buckets_delivery_n };
	for (size_t a = 0; a < 2; a++) {
		const char *const *t = relay_buckets_text(arrays[a]);
		assert_non_null(t);
		for (uint32_t i = 0; i < ns[a]; i++)
			if (strtod(t[i], NULL) != arrays[a][i])
				fail_msg("bucket %u of array %zu: text %s for %g", i, a, t[i], arrays[a][i]);
	}
	assert_null(relay_buckets_text(relay_buckets_group));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_histogram),
		cmocka_unit_test(test_samples),
		cmocka_unit_test(test_bucket_texts),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
