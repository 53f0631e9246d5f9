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

/* The same bounds as text, for le="...": formatting a fraction takes
 * printf's float path, and every scrape writes each bound once per
 * backend. test_metrics checks that each text reads back as its bound. */
static const char *const fast_s_text[] = { "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005",
	                                   "0.01",   "0.025",   "0.05",   "0.1",   "0.25",   "0.5",
	                                   "1",      "2.5",     "5",      "10" };
static const char *const delivery_s_text[] = { "0.005", "0.01", "0.025", "0.05", "0.1",  "0.25",
	                                       "0.5",   "1",    "2.5",   "5",    "10",   "30",
	                                       "60",    "300",  "900",   "3600", "14400", "86400" };
_Static_assert(RELAY_ARRAY_SIZE(fast_s_text) == RELAY_ARRAY_SIZE(relay_buckets_fast_s), "one text per bound");
_Static_assert(RELAY_ARRAY_SIZE(delivery_s_text) == RELAY_ARRAY_SIZE(relay_buckets_delivery_s), "one text per bound");

const char *const *relay_buckets_text(const double *bounds)
{
	if (bounds == relay_buckets_fast_s)
		return fast_s_text;
	if (bounds == relay_buckets_delivery_s)
		return delivery_s_text;
	return NULL;
}

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

/*
 * The writers below avoid printf: a scrape of 64 backends writes about
 * 8 000 samples, and formatting them through vsnprintf was most of its
 * cost (docs/performance.md, "/metrics").
 */
static void append_str(struct rbuf *out, const char *s)
{
	rbuf_append(out, s, strlen(s));
}

static void append_u64(struct rbuf *out, uint64_t v)
{
	char tmp[24];
	size_t n = sizeof(tmp);
	do {
		tmp[--n] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	rbuf_append(out, tmp + n, sizeof(tmp) - n);
}

static void sample_name(struct rbuf *out, const char *name, const char *labels)
{
	append_str(out, name);
	if (labels && *labels) {
		rbuf_appendc(out, '{');
		append_str(out, labels);
		rbuf_appendc(out, '}');
	}
	rbuf_appendc(out, ' ');
}

void prom_u64(struct rbuf *out, const char *name, const char *labels, uint64_t v)
{
	sample_name(out, name, labels);
	append_u64(out, v);
	rbuf_appendc(out, '\n');
}

void prom_i64(struct rbuf *out, const char *name, const char *labels, int64_t v)
{
	sample_name(out, name, labels);
	if (v < 0) {
		rbuf_appendc(out, '-');
		append_u64(out, (uint64_t)0 - (uint64_t)v);
	} else {
		append_u64(out, (uint64_t)v);
	}
	rbuf_appendc(out, '\n');
}

/* The shortest of %.15g..%.17g that reads back as v; a whole number
 * below 2^53 (every count and most gauges) exactly, without printf. */
static void append_double(struct rbuf *out, double v)
{
	char tmp[40];
	if (isnan(v)) {
		rbuf_append(out, "NaN", 3);
		return;
	}
	if (isinf(v)) {
		append_str(out, v > 0 ? "+Inf" : "-Inf");
		return;
	}
	if (v == floor(v) && fabs(v) < 9007199254740992.0) {
		if (v < 0) {
			rbuf_appendc(out, '-');
			append_u64(out, (uint64_t)-v);
		} else {
			append_u64(out, (uint64_t)v);
		}
		return;
	}
	for (int prec = 15; prec <= 17; prec++) {
		snprintf(tmp, sizeof(tmp), "%.*g", prec, v);
		if (prec == 17 || strtod(tmp, NULL) == v)
			break;
	}
	append_str(out, tmp);
}

void prom_f64(struct rbuf *out, const char *name, const char *labels, double v)
{
	sample_name(out, name, labels);
	append_double(out, v);
	rbuf_appendc(out, '\n');
}

void prom_histogram(struct rbuf *out, const char *name, const char *labels, const struct relay_histogram *h)
{
	size_t nlen = strlen(name), llen = labels ? strlen(labels) : 0;
	const char *const *text = relay_buckets_text(h->bounds);
	uint64_t cum = 0;
	/* name_bucket{labels,le="B"} C, for each bound, then +Inf. */
	for (uint32_t i = 0; i <= h->nbounds; i++) {
		cum += h->counts[i];
		rbuf_append(out, name, nlen);
		rbuf_append(out, "_bucket{", 8);
		if (llen) {
			rbuf_append(out, labels, llen);
			rbuf_appendc(out, ',');
		}
		rbuf_append(out, "le=\"", 4);
		if (i < h->nbounds && text)
			append_str(out, text[i]);
		else if (i < h->nbounds)
			append_double(out, h->bounds[i]);
		else
			rbuf_append(out, "+Inf", 4); /* == count: everything above the last bound is in counts[nbounds] */
		rbuf_append(out, "\"} ", 3);
		append_u64(out, cum);
		rbuf_appendc(out, '\n');
	}
	char sname[160];
	snprintf(sname, sizeof(sname), "%s_sum", name);
	prom_f64(out, sname, labels, h->sum);
	snprintf(sname, sizeof(sname), "%s_count", name);
	prom_u64(out, sname, labels, h->count);
}
