/*
 * router: see router.h.
 */
#include "relay/query/router.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

int64_t query_lag_ns(const struct query_backend_view *b, int64_t now_ns)
{
	if (b->oldest_pending_ns <= 0 || b->oldest_pending_ns >= now_ns)
		return 0;
	return now_ns - b->oldest_pending_ns;
}

static int excluded_at(uint64_t excluded, size_t i)
{
	return i < 64 && (excluded >> i) & 1;
}

int query_route(const struct query_backend_view *v, size_t n, uint64_t excluded, int64_t now_ns,
                int64_t max_lag_ns, enum query_policy policy, struct query_choice *out)
{
	int best = -1, best_up = 0;
	int64_t best_lag = 0;

	out->index = -1;
	out->behind = 0;
	out->lag_ns = 0;
	/* A paused backend is judged by its lag alone: with nothing old
	 * pending it has every write, whether or not it is delivering. */
	for (size_t i = 0; i < n; i++) {
		if (excluded_at(excluded, i))
			continue;
		int64_t lag = query_lag_ns(&v[i], now_ns);
		if (v[i].up && lag <= max_lag_ns) {
			out->index = (int)i;
			out->lag_ns = lag;
			return out->index;
		}
	}
	if (policy == QUERY_REFUSE)
		return -1;
	/* The freshest one, an up one before any other: a backend that is
	 * down has a lag that only grows, and may not answer at all. */
	for (size_t i = 0; i < n; i++) {
		if (excluded_at(excluded, i))
			continue;
		int64_t lag = query_lag_ns(&v[i], now_ns);
		int up = v[i].up != 0;
		if (best < 0 || (up && !best_up) || (up == best_up && lag < best_lag)) {
			best = (int)i;
			best_up = up;
			best_lag = lag;
		}
	}
	if (best >= 0) {
		out->index = best;
		out->behind = 1;
		out->lag_ns = best_lag;
	}
	return out->index;
}

const char *query_fmt_lag(int64_t lag_ns, char *buf, size_t len)
{
	if (lag_ns < 0)
		lag_ns = 0;
	snprintf(buf, len, "%" PRId64 ".%03" PRId64, lag_ns / 1000000000, (lag_ns % 1000000000) / 1000000);
	return buf;
}

char *query_route_explain(const struct query_backend_view *v, size_t n, uint64_t excluded, int64_t now_ns,
                          char *msg, size_t len)
{
	size_t at = 0;
	char lag[32];

	if (len == 0)
		return msg;
	msg[0] = '\0';
	for (size_t i = 0; i < n && at < len; i++) {
		if (excluded_at(excluded, i))
			continue;
		query_fmt_lag(query_lag_ns(&v[i], now_ns), lag, sizeof(lag));
		int w = snprintf(msg + at, len - at, "%s'%s' is %s%ss behind", at ? ", " : "", v[i].name,
		                 v[i].paused ? "paused and " : !v[i].up ? "not delivering and " : "", lag);
		if (w < 0)
			break;
		at += (size_t)w;
	}
	if (at == 0)
		snprintf(msg, len, "no query backend left to try");
	return msg;
}
