/*
 * test_query_router: the choice of a query backend, from a table of
 * cases: who is up, paused, how far behind, the policy, the exclusions.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "relay/query/router.h"

#define S 1000000000LL
#define NOW (1700000000LL * S)

struct rcase {
	const char *what;
	struct query_backend_view v[4];
	size_t n;
	uint64_t excluded;
	int64_t max_lag;
	enum query_policy pol;
	int want;          /* index, -1 = none */
	int want_behind;
	int64_t want_lag;
};

/* up, paused, oldest pending (0 = none) */
#define B(name, up, paused, oldest) { name, up, paused, oldest }

static const struct rcase cases[] = {
	{ "first up and empty wins", { B("a", 1, 0, 0), B("b", 1, 0, 0) }, 2, 0, S, QUERY_LEAST_BEHIND, 0, 0, 0 },
	{ "first down: the second", { B("a", 0, 0, 0), B("b", 1, 0, 0) }, 2, 0, S, QUERY_LEAST_BEHIND, 1, 0, 0 },
	{ "lag within max_lag is caught up", { B("a", 1, 0, NOW - S / 2), B("b", 1, 0, 0) }, 2, 0, S,
	  QUERY_LEAST_BEHIND, 0, 0, S / 2 },
	{ "lag exactly max_lag is caught up", { B("a", 1, 0, NOW - S), B("b", 1, 0, 0) }, 2, 0, S,
	  QUERY_LEAST_BEHIND, 0, 0, S },
	{ "lag past max_lag: the next", { B("a", 1, 0, NOW - 2 * S), B("b", 1, 0, 0) }, 2, 0, S,
	  QUERY_LEAST_BEHIND, 1, 0, 0 },
	{ "paused with a backlog is behind", { B("a", 1, 1, NOW - 5 * S), B("b", 1, 0, NOW - S / 10) }, 2, 0, S,
	  QUERY_LEAST_BEHIND, 1, 0, S / 10 },
	{ "paused without a backlog is caught up", { B("a", 1, 1, 0), B("b", 1, 0, 0) }, 2, 0, S,
	  QUERY_LEAST_BEHIND, 0, 0, 0 },
	{ "none caught up: least behind", { B("a", 1, 0, NOW - 9 * S), B("b", 1, 0, NOW - 3 * S),
	  B("c", 1, 0, NOW - 4 * S) }, 3, 0, S, QUERY_LEAST_BEHIND, 1, 1, 3 * S },
	{ "least behind prefers an up one", { B("a", 0, 0, NOW - 2 * S), B("b", 1, 0, NOW - 7 * S) }, 2, 0, S,
	  QUERY_LEAST_BEHIND, 1, 1, 7 * S },
	{ "all down: least behind of all", { B("a", 0, 0, NOW - 2 * S), B("b", 0, 0, 0) }, 2, 0, S,
	  QUERY_LEAST_BEHIND, 1, 1, 0 },
	{ "refuse when none caught up", { B("a", 1, 0, NOW - 9 * S), B("b", 0, 0, 0) }, 2, 0, S, QUERY_REFUSE,
	  -1, 0, 0 },
	{ "refuse still takes a caught-up one", { B("a", 1, 0, NOW - 9 * S), B("b", 1, 0, 0) }, 2, 0, S,
	  QUERY_REFUSE, 1, 0, 0 },
	{ "excluded is skipped", { B("a", 1, 0, 0), B("b", 1, 0, 0) }, 2, 1, S, QUERY_LEAST_BEHIND, 1, 0, 0 },
	{ "all excluded: none", { B("a", 1, 0, 0), B("b", 1, 0, 0) }, 2, 3, S, QUERY_LEAST_BEHIND, -1, 0, 0 },
	{ "max_lag 0: anything pending is behind", { B("a", 1, 0, NOW - 1), B("b", 1, 0, 0) }, 2, 0, 0,
	  QUERY_LEAST_BEHIND, 1, 0, 0 },
	{ "a future acceptance time is no lag", { B("a", 1, 0, NOW + S) }, 1, 0, 0, QUERY_LEAST_BEHIND, 0, 0, 0 },
	{ "no backends", { B("a", 1, 0, 0) }, 0, 0, S, QUERY_LEAST_BEHIND, -1, 0, 0 },
};

static void test_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct rcase *k = &cases[i];
		struct query_choice ch;
		int got = query_route(k->v, k->n, k->excluded, NOW, k->max_lag, k->pol, &ch);
		if (got != k->want || ch.index != got || (got >= 0 && (ch.behind != k->want_behind ||
		                                                       ch.lag_ns != k->want_lag)))
			fail_msg("%s: got %d behind %d lag %lld, want %d behind %d lag %lld", k->what, got, ch.behind,
			         (long long)ch.lag_ns, k->want, k->want_behind, (long long)k->want_lag);
	}
}

static void test_explain(void **state)
{
	(void)state;
	struct query_backend_view v[] = { B("a", 1, 0, NOW - 12345 * (S / 1000)), B("b", 0, 0, 0),
	                                  B("c", 1, 1, NOW - S) };
	char msg[200];
	query_route_explain(v, 3, 0, NOW, msg, sizeof(msg));
	assert_string_equal(msg, "'a' is 12.345s behind, 'b' is not delivering and 0.000s behind, "
	                         "'c' is paused and 1.000s behind");
	query_route_explain(v, 3, 2, NOW, msg, sizeof(msg));
	assert_string_equal(msg, "'a' is 12.345s behind, 'c' is paused and 1.000s behind");
	query_route_explain(v, 3, 7, NOW, msg, sizeof(msg));
	assert_string_equal(msg, "no query backend left to try");
	/* cut, still terminated */
	query_route_explain(v, 3, 0, NOW, msg, 10);
	assert_int_equal(strlen(msg), 9);
}

static void test_fmt_lag(void **state)
{
	(void)state;
	char b[32];
	assert_string_equal(query_fmt_lag(0, b, sizeof(b)), "0.000");
	assert_string_equal(query_fmt_lag(1250 * (S / 1000), b, sizeof(b)), "1.250");
	assert_string_equal(query_fmt_lag(999999, b, sizeof(b)), "0.000");
	assert_string_equal(query_fmt_lag(-5, b, sizeof(b)), "0.000");
	assert_string_equal(query_fmt_lag(3600 * S + 1000000, b, sizeof(b)), "3600.001");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_table),
		cmocka_unit_test(test_explain),
		cmocka_unit_test(test_fmt_lag),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
