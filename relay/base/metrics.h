/*
 * metrics: what /metrics is made of. Histograms with fixed buckets, and a
 * writer of Prometheus's text exposition format (version 0.0.4, the one
 * every Prometheus, VictoriaMetrics and Telegraf scraper reads). Pure: no
 * I/O, no clock, no libuv, so each layer can keep its own histograms and
 * write its own metric families, and tests can check the text.
 *
 * Names follow Prometheus's conventions (docs/monitoring.md lists them):
 * the prefix relayd_, base units (seconds, bytes), counters end in _total.
 * A family is written once: its HELP and TYPE lines, then every sample of
 * it (one per label set) before the next family begins, as the format
 * requires.
 */
#ifndef RELAY_METRICS_H
#define RELAY_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "relay/base/util.h"

/* Most upper bounds a histogram may have (+Inf comes on top). */
#define RELAY_HIST_MAX_BOUNDS 24

/*
 * A histogram of observations. bounds are the buckets' upper bounds,
 * ascending, in the base unit; they are not copied (use the static
 * arrays below or one of your own that outlives the histogram).
 * counts[i] counts observations v <= bounds[i] and > bounds[i-1] (not
 * cumulative: the writer sums them); counts[nbounds] the rest (+Inf).
 * Zero-initialised it is invalid: call relay_histogram_init.
 * Not thread-safe: one thread observes, the same thread writes.
 */
struct relay_histogram {
	const double *bounds;
	uint32_t nbounds;
	uint64_t counts[RELAY_HIST_MAX_BOUNDS + 1];
	uint64_t count;
	double sum;
};

/* Empty h with these bounds (n <= RELAY_HIST_MAX_BOUNDS; more aborts). */
void relay_histogram_init(struct relay_histogram *h, const double *bounds, uint32_t n);
/* One observation (NaN is ignored). */
void relay_histogram_observe(struct relay_histogram *h, double v);
/* Add from's observations to into; both must have the same bounds (a
 * worker restarted by a reload hands its figures on this way). */
void relay_histogram_merge(struct relay_histogram *into, const struct relay_histogram *from);

/* Buckets relayd uses, in seconds or a count, with their lengths. */
/* A commit or a request: 100 us to 10 s. */
extern const double relay_buckets_fast_s[];
extern const uint32_t relay_buckets_fast_n;
/* Acceptance to delivery: 5 ms to a day (an outage is a long latency). */
extern const double relay_buckets_delivery_s[];
extern const uint32_t relay_buckets_delivery_n;
/* Requests in one group commit: 1 to 1024. */
extern const double relay_buckets_group[];
extern const uint32_t relay_buckets_group_n;

/* The text of one of the arrays above, bound by bound, as le="..." shows
 * it (NULL for any other array: its bounds are formatted each time). */
const char *const *relay_buckets_text(const double *bounds);

/*---- the text format ----*/

/*
 * Begin a family: "# HELP name help" and "# TYPE name type". type is
 * "counter", "gauge", "histogram" or "untyped"; help is escaped as the
 * format requires (backslash, newline).
 */
void prom_family(struct rbuf *out, const char *name, const char *type, const char *help);

/*
 * Labels for a sample: the text between the braces, built from name/value
 * pairs that end with a NULL name, the values escaped (backslash, double
 * quote, newline). Writes into buf (len bytes, cut short if too small:
 * give it room for the values it may hold) and returns buf. No pairs: "".
 * Example: prom_labels(buf, sizeof(buf), "backend", name, NULL).
 */
const char *prom_labels(char *buf, size_t len, ...);

/* One sample: "name{labels} value\n" (no braces when labels is "" or
 * NULL). Integers print exactly; doubles as the shortest text that reads
 * back the same, with +Inf, -Inf and NaN as the format spells them. */
void prom_u64(struct rbuf *out, const char *name, const char *labels, uint64_t v);
void prom_i64(struct rbuf *out, const char *name, const char *labels, int64_t v);
void prom_f64(struct rbuf *out, const char *name, const char *labels, double v);

/* The samples of a histogram: name_bucket{labels,le="..."} cumulative,
 * le="+Inf" last, then name_sum and name_count. Its family (TYPE
 * histogram) must have been begun with prom_family(out, name, ...). */
void prom_histogram(struct rbuf *out, const char *name, const char *labels, const struct relay_histogram *h);

/* The Content-Type of this format. */
#define PROM_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

#endif
