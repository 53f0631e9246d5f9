/*
 * metrics: histograms and Prometheus's text exposition format
 * (metrics.h). The format's rules that matter here: a family's samples
 * follow its HELP and TYPE lines with no other family between; label
 * values escape backslash, double quote and newline; HELP text escapes
 * backslash and newline; histogram buckets are cumulative, end with
 * le="+Inf", whose count equals _count.
 */
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relay/base/metrics.h"

const double relay_buckets_fast_s[] = { 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
	                                0.05,   0.1,     0.25,   0.5,   1,      2.5,   5,    10 };
const uint32_t relay_buckets_fast_n = RELAY_ARRAY_SIZE(relay_buckets_fast_s);

const double relay_buckets_delivery_s[] = { 0.005, 0.01, 0.025, 0.05, 0.1,  0.25, 0.5,   1,     2.5,
	                                    5,     10,   30,    60,   300,  900,  3600,  14400, 86400 };
const uint32_t relay_buckets_delivery_n = RELAY_ARRAY_SIZE(relay_buckets_delivery_s);

const double relay_buckets_group[] = { 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024 };
const uint32_t relay_buckets_group_n = RELAY_ARRAY_SIZE(relay_buckets_group);

void relay_histogram_init(struct relay_histogram *h, const double *bounds, uint32_t n)
{
	if (n > RELAY_HIST_MAX_BOUNDS)
		relay_fatal("histogram with %u bounds (most %d)", n, RELAY_HIST_MAX_BOUNDS);
	memset(h, 0, sizeof(*h));
	h->bounds = bounds;
	h->nbounds = n;
}

void relay_histogram_observe(struct relay_histogram *h, double v)
{
	if (isnan(v))
		return;
	/* A binary search would save little over 24 compares. */
	uint32_t i = 0;
	while (i < h->nbounds && v > h->bounds[i])
		i++;
	h->counts[i]++;
	h->count++;
	h->sum += v;
}

void relay_histogram_merge(struct relay_histogram *into, const struct relay_histogram *from)
{
	if (into->nbounds != from->nbounds || into->bounds != from->bounds)
		relay_fatal("merging histograms of different buckets");
	for (uint32_t i = 0; i <= into->nbounds; i++)
		into->counts[i] += from->counts[i];
	into->count += from->count;
	into->sum += from->sum;
}

void prom_family(struct rbuf *out, const char *name, const char *type, const char *help)
{
	rbuf_appendf(out, "# HELP %s ", name);
	for (const char *p = help; *p; p++) {
		if (*p == '\\')
			rbuf_append(out, "\\\\", 2);
		else if (*p == '\n')
			rbuf_append(out, "\\n", 2);
		else
			rbuf_appendc(out, *p);
	}
	rbuf_appendf(out, "\n# TYPE %s %s\n", name, type);
}

const char *prom_labels(char *buf, size_t len, ...)
{
	va_list ap;
	size_t n = 0;
	const char *k;
	if (!len)
		return buf;
	/* Writes one byte if there is room for it and the final NUL. */
#define PUT(c)                       \
	do {                         \
		if (n + 1 < len)     \
			buf[n++] = (c); \
	} while (0)
	va_start(ap, len);
	while ((k = va_arg(ap, const char *)) != NULL) {
		const char *v = va_arg(ap, const char *);
		if (n)
			PUT(',');
		for (; *k; k++)
			PUT(*k);
		PUT('=');
		PUT('"');
		for (; v && *v; v++) {
			if (*v == '\\' || *v == '"') {
				PUT('\\');
				PUT(*v);
			} else if (*v == '\n') {
				PUT('\\');
				PUT('n');
			} else {
				PUT(*v);
			}
		}
		PUT('"');
	}
	va_end(ap);
#undef PUT
	buf[n] = '\0';
	return buf;
}

static void sample_name(struct rbuf *out, const char *name, const char *labels)
{
	if (labels && *labels)
		rbuf_appendf(out, "%s{%s} ", name, labels);
	else
		rbuf_appendf(out, "%s ", name);
}

void prom_u64(struct rbuf *out, const char *name, const char *labels, uint64_t v)
{
	sample_name(out, name, labels);
	rbuf_appendf(out, "%" PRIu64 "\n", v);
}

void prom_i64(struct rbuf *out, const char *name, const char *labels, int64_t v)
{
	sample_name(out, name, labels);
	rbuf_appendf(out, "%" PRId64 "\n", v);
}

/* The shortest of %.15g..%.17g that reads back as v. */
static void append_double(struct rbuf *out, double v)
{
	char tmp[40];
	if (isnan(v)) {
		rbuf_append(out, "NaN", 3);
		return;
	}
	if (isinf(v)) {
		rbuf_appendf(out, "%s", v > 0 ? "+Inf" : "-Inf");
		return;
	}
	for (int prec = 15; prec <= 17; prec++) {
		snprintf(tmp, sizeof(tmp), "%.*g", prec, v);
		if (prec == 17 || strtod(tmp, NULL) == v)
			break;
	}
	rbuf_appendf(out, "%s", tmp);
}

void prom_f64(struct rbuf *out, const char *name, const char *labels, double v)
{
	sample_name(out, name, labels);
	append_double(out, v);
	rbuf_appendc(out, '\n');
}

void prom_histogram(struct rbuf *out, const char *name, const char *labels, const struct relay_histogram *h)
{
	const char *sep = labels && *labels ? "," : "";
	if (!labels)
		labels = "";
	uint64_t cum = 0;
	for (uint32_t i = 0; i < h->nbounds; i++) {
		cum += h->counts[i];
		rbuf_appendf(out, "%s_bucket{%s%sle=\"", name, labels, sep);
		append_double(out, h->bounds[i]);
		rbuf_appendf(out, "\"} %" PRIu64 "\n", cum);
	}
	/* +Inf is count by definition (an observation above every bound is
	 * in counts[nbounds]). */
	rbuf_appendf(out, "%s_bucket{%s%sle=\"+Inf\"} %" PRIu64 "\n", name, labels, sep, h->count);
	char sname[160];
	snprintf(sname, sizeof(sname), "%s_sum", name);
	prom_f64(out, sname, labels, h->sum);
	snprintf(sname, sizeof(sname), "%s_count", name);
	prom_u64(out, sname, labels, h->count);
}
