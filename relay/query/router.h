/*
 * router: which backend answers a query, as a pure function of what the
 * relay knows of each one (up, paused, its oldest pending write) and the
 * time. A read may go to one backend only if that backend has every write
 * the client could expect it to see; "caught up" says how stale it may
 * be (query.max_lag). No I/O, no allocation, no clock of its own.
 */
#ifndef RELAY_QUERY_ROUTER_H
#define RELAY_QUERY_ROUTER_H

#include <stddef.h>
#include <stdint.h>

/* What to do when no backend is up and caught up (query.when_behind). */
enum query_policy {
	QUERY_LEAST_BEHIND = 0, /* answer from the one with the smallest lag, and say so */
	QUERY_REFUSE = 1,       /* 503 naming the backends and their lag */
};

/* One query backend as the router sees it, in configured order. */
struct query_backend_view {
	const char *name;
	int up;                    /* its replay worker delivers (not retrying, down, holding, storage) */
	int paused;                /* relayctl pause: its queue fills, nothing is delivered */
	int64_t oldest_pending_ns; /* acceptance time of its oldest pending batch; 0 = nothing pending */
};

struct query_choice {
	int index;      /* the backend chosen, or -1: none (refuse, or every one excluded) */
	int behind;     /* 1 when the chosen one is not caught up (X-Relayd-Behind) */
	int64_t lag_ns; /* the chosen backend's lag (0 when caught up with nothing pending) */
};

/* How far b is behind at now: now - oldest pending acceptance time, 0 when
 * nothing is pending (or the oldest is in the future). */
int64_t query_lag_ns(const struct query_backend_view *b, int64_t now_ns);

/*
 * Choose among v[0..n), skipping those whose bit is set in excluded (a
 * connect that failed for this query). The first backend that is up and
 * caught up (lag <= max_lag_ns) wins. If none: QUERY_LEAST_BEHIND takes
 * the smallest lag among the up ones, or among all when none is up (ties:
 * the first in order), with behind = 1; QUERY_REFUSE returns index -1.
 * Returns out->index.
 */
int query_route(const struct query_backend_view *v, size_t n, uint64_t excluded, int64_t now_ns,
                int64_t max_lag_ns, enum query_policy policy, struct query_choice *out);

/*
 * Say why no backend was chosen, for the 503 of QUERY_REFUSE: each
 * backend not excluded with its state and lag ("'a' is 12.345s behind,
 * 'b' is down and 0.000s behind"). Writes at most len bytes, always
 * NUL-terminated. Returns msg.
 */
char *query_route_explain(const struct query_backend_view *v, size_t n, uint64_t excluded, int64_t now_ns,
                          char *msg, size_t len);

/* lag as seconds with 3 decimals ("1.250") in buf (at least 24 bytes). */
const char *query_fmt_lag(int64_t lag_ns, char *buf, size_t len);

#endif
