/*
 * lineproto: the gate between a /write body and the queue. It checks every
 * line of an InfluxDB 1.x line-protocol body in one pass and appends the
 * form that is queued: comments and blank lines dropped, lines without a
 * timestamp stamped with the acceptance time. It must never let part of a
 * bad request through (out is restored on any error), never allocate except
 * by growing out, and never do I/O or log: it runs in the hot path and under
 * the fuzzer.
 */
#include "relay/base/lineproto.h"
#include "relay/base/lineproto_types.h"
#include "wal/wal.h"

#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Bytes of the line quoted in an error message. */
#define EXCERPT_MAX 60
/* InfluxDB's limit on a series key plus "#!~#" plus a field key. */
#define MAX_KEY_LEN 65535
#define FIELD_KEY_SEP_LEN 4

/*---- precision ----*/

/* A batch's precision is queued as its enum lp_precision: the enum must be
 * the queue format's codes (wal.h), each of them. */
_Static_assert(LP_PRECISION_NS == WAL_PRECISION_NS, "enum lp_precision: ns is not the queue's code");
_Static_assert(LP_PRECISION_US == WAL_PRECISION_US, "enum lp_precision: us is not the queue's code");
_Static_assert(LP_PRECISION_MS == WAL_PRECISION_MS, "enum lp_precision: ms is not the queue's code");
_Static_assert(LP_PRECISION_S == WAL_PRECISION_S, "enum lp_precision: s is not the queue's code");
_Static_assert(LP_PRECISION_M == WAL_PRECISION_M, "enum lp_precision: m is not the queue's code");
_Static_assert(LP_PRECISION_H == WAL_PRECISION_H && LP_PRECISION_H == WAL_PRECISION_MAX,
               "enum lp_precision: h is not the queue's last code");

int lp_precision_parse(const char *s, enum lp_precision *out)
{
	static const struct {
		const char *name;
		enum lp_precision p;
	} names[] = {
		{ "", LP_PRECISION_NS },
		{ "n", LP_PRECISION_NS },
		{ "ns", LP_PRECISION_NS },
		{ "u", LP_PRECISION_US },
		{ "us", LP_PRECISION_US },
		{ "\xc2\xb5", LP_PRECISION_US },  /* "µ" */
		{ "\xc2\xb5s", LP_PRECISION_US }, /* "µs" */
		{ "ms", LP_PRECISION_MS },
		{ "s", LP_PRECISION_S },
		{ "m", LP_PRECISION_M },
		{ "h", LP_PRECISION_H },
	};

	if (!s)
		s = "";
	for (size_t i = 0; i < RELAY_ARRAY_SIZE(names); i++) {
		if (strcmp(s, names[i].name) == 0) {
			*out = names[i].p;
			return 0;
		}
	}
	return -1;
}

const char *lp_line_end(const char *p, const char *e, size_t *key_len)
{
	const char *s = p;
	int in_str = 0;

	while (p < e && *p != ' ' && *p != '\n')
		p += (*p == '\\' && p + 1 < e) ? 2 : 1;
	*key_len = (size_t)(p - s);
	/* Most lines hold neither a quote nor a backslash after their key:
	 * then the first newline ends them, and memchr finds it many bytes
	 * at a time. This scan runs for every line delivered. */
	const char *nl = memchr(p, '\n', (size_t)(e - p));
	size_t n = nl ? (size_t)(nl - p) : (size_t)(e - p);
	if (!memchr(p, '"', n) && !memchr(p, '\\', n))
		return nl ? nl + 1 : e;
	while (p < e) {
		char c = *p;
		if (c == '\\' && p + 1 < e) {
			p += 2;
		} else if (in_str) {
			in_str = c != '"';
			p++;
		} else if (c == '\n') {
			return p + 1;
		} else if (c == '=' && p + 1 < e && p[1] == '"') {
			in_str = 1; /* a string field value starts */
			p += 2;
		} else {
			p++;
		}
	}
	return e;
}

const char *lp_precision_name(enum lp_precision p)
{
	switch (p) {
	case LP_PRECISION_NS: return "ns";
	case LP_PRECISION_US: return "u";
	case LP_PRECISION_MS: return "ms";
	case LP_PRECISION_S: return "s";
	case LP_PRECISION_M: return "m";
	case LP_PRECISION_H: return "h";
	}
	/* A made-up name would reach InfluxDB, which accepts any precision
	 * silently and would store the points at the wrong time. */
	relay_fatal("invalid precision %d", (int)p);
}

int64_t lp_precision_ns(enum lp_precision p)
{
	switch (p) {
	case LP_PRECISION_NS: return 1;
	case LP_PRECISION_US: return INT64_C(1000);
	case LP_PRECISION_MS: return INT64_C(1000000);
	case LP_PRECISION_S: return INT64_C(1000000000);
	case LP_PRECISION_M: return INT64_C(60000000000);
	case LP_PRECISION_H: return INT64_C(3600000000000);
	}
	relay_fatal("invalid precision %d", (int)p);
}

int64_t lp_ns_to_precision(int64_t ns, enum lp_precision p)
{
	return ns / lp_precision_ns(p);
}

/*---- scanning ----*/

/* Byte classes for the key scanner: the separators of a line and the escape
 * byte. Everything else is ordinary. */
enum {
	CL_SP = 1,     /* ' ' ends the key section and the field section */
	CL_COMMA = 2,  /* ',' separates tags and fields */
	CL_EQ = 4,     /* '=' separates a key from its value */
	CL_BS = 8,     /* '\\' takes the next byte with it */
};

static const unsigned char lp_class[256] = {
	[' '] = CL_SP,
	[','] = CL_COMMA,
	['='] = CL_EQ,
	['\\'] = CL_BS,
};

/*
 * The key section (measurement, tag keys and values) is scanned the way
 * InfluxDB 1.x scans it: a separator is escaped when the byte before it is
 * a backslash, even if that backslash is itself escaped. So a\\ b (two
 * backslashes) is one token, and a key can never end in a backslash. p is the token's first
 * byte, already checked by the caller; returns the first unescaped byte of
 * (p, le) whose class is in stop, or le.
 */
static inline const char *scan_key(const char *p, const char *le, unsigned stop)
{
	for (p++;;) {
		/* Ordinary bytes are the common case: a tight loop for them. */
		while (p < le && !lp_class[(unsigned char)*p])
			p++;
		if (p == le)
			return le;
		if ((lp_class[(unsigned char)*p] & stop) && p[-1] != '\\')
			return p;
		p++;
	}
}

/*
 * Field keys and values are scanned with pairwise escapes, as InfluxDB's
 * field scanner does: a backslash takes the next byte with it, so \\ is
 * one escaped backslash; a backslash that is the last byte of the line
 * is taken literally. Returns the first unescaped byte of [p, le) whose
 * class is in stop, or le.
 */
static inline const char *scan_escaped(const char *p, const char *le, unsigned stop)
{
	for (;;) {
		while (p < le && !lp_class[(unsigned char)*p])
			p++;
		if (p == le)
			return le;
		if (lp_class[(unsigned char)*p] & stop)
			return p;
		/* An escape, or a separator that is ordinary here. */
		p += *p == '\\' && p + 1 < le ? 2 : 1;
	}
}

static inline bool is_digit(char c)
{
	return (unsigned char)(c - '0') < 10;
}

/*
 * Parse the decimal digits [p, e) (all known to be digits) and check that
 * they stay within limit. Up to 18 digits always fit in int64, which is the
 * common case, so only longer runs pay for the multiplication.
 */
static bool digits_within(const char *p, const char *e, uint64_t limit)
{
	/* 18 digits are below 10^18: within any limit from there up. */
	if (e - p <= 18 && limit >= UINT64_C(999999999999999999))
		return true;
	uint64_t v = 0;
	for (; p < e; p++) {
		unsigned d = (unsigned)(*p - '0');
		if (v > (limit - d) / 10)
			return false;
		v = v * 10 + d;
	}
	return true;
}

/*
 * A float whose decimal exponent puts it right at DBL_MAX's order of
 * magnitude: let strtod decide whether it rounds to infinity. The first
 * significant digits are copied into a buffer with a sticky '1' standing
 * for any non-zero digits dropped, which is enough to decide the rounding
 * because the overflow threshold has at most 309 significant digits.
 */
static bool borderline_float_is_finite(const char *p, const char *e)
{
	char buf[400] = "0.";
	size_t n = 2;
	bool dropped = false;

	for (; p < e && *p != 'e' && *p != 'E'; p++) {
		if (!is_digit(*p) || (n == 2 && *p == '0'))
			continue;
		if (n < 380)
			buf[n++] = *p;
		else if (*p != '0')
			dropped = true;
	}
	if (dropped)
		buf[n++] = '1';
	/* The value is 0.<digits> x 10^309 by construction. */
	memcpy(buf + n, "e309", 5);
	return !isinf(strtod(buf, NULL));
}

/*
 * Check a float "[-]digits[.digits][(e|E)[+-]digits]" (at least one
 * mantissa digit; "1." and ".5" are valid, as InfluxDB's ParseFloat says).
 * A value that rounds to infinity is refused; one that underflows is not,
 * as in InfluxDB.
 */
static const char *check_float(const char *p, const char *e)
{
	const char *s = p;
	if (p < e && *p == '-')
		p++;
	const char *ip = p;
	while (p < e && is_digit(*p))
		p++;
	const char *ie = p;
	const char *fp = p, *fe = p;
	if (p < e && *p == '.') {
		fp = ++p;
		while (p < e && is_digit(*p))
			p++;
		fe = p;
	}
	if (ie == ip && fe == fp)
		return "invalid number";
	if (p == e) {
		/* No exponent: DBL_MAX has 309 integer digits, so fewer than
		 * 300 (leading zeros included) are safe without looking. */
		if (ie - ip < 300)
			return NULL;
	} else if (*p != 'e' && *p != 'E') {
		return "invalid number";
	}

	/* Work out the decimal exponent of the first significant digit. */
	int64_t exp = 0;
	if (p < e) {
		bool neg = false;
		p++;
		if (p < e && (*p == '+' || *p == '-'))
			neg = *p++ == '-';
		if (p == e)
			return "invalid number";
		for (; p < e; p++) {
			if (!is_digit(*p))
				return "invalid number";
			/* Saturate: the sign is all that matters this far out. */
			if (exp < INT64_C(100000000000000000))
				exp = exp * 10 + (*p - '0');
		}
		if (neg)
			exp = -exp;
	}
	const char *q = ip;
	while (q < ie && *q == '0')
		q++;
	int64_t mag;
	if (q < ie) {
		mag = (int64_t)(ie - q) - 1 + exp;
	} else {
		q = fp;
		while (q < fe && *q == '0')
			q++;
		if (q == fe)
			return NULL; /* zero, whatever the exponent */
		mag = -(int64_t)(q - fp) - 1 + exp;
	}
	if (mag < 308)
		return NULL;
	if (mag > 308 || !borderline_float_is_finite(s, e))
		return "invalid float (out of range)";
	return NULL;
}

/* Check a field value that is not a string: a number or a boolean. */
static const char *check_value(const char *p, const char *e, unsigned flags, enum ftype *type)
{
	size_t n = (size_t)(e - p);
	char last = e[-1];

	if (is_digit(*p) || *p == '-' || *p == '.') {
		if (last == 'i' || last == 'u') {
			bool neg = *p == '-';
			const char *d = p + neg;
			const char *q = d;
			while (q < e - 1 && is_digit(*q))
				q++;
			if (q != e - 1 || q == d)
				return "invalid number";
			*type = last == 'u' ? FT_UINT : FT_INT;
			if (last == 'u') {
				if (flags & LP_F_NO_UNSIGNED)
					return "invalid number (unsigned integers are refused by a backend of "
					       "type v1, InfluxDB 1.x)";
				if (neg)
					return "invalid number (unsigned value is negative)";
				if (!digits_within(d, q, UINT64_MAX))
					return "unsigned value out of range";
			} else {
				if (!digits_within(d, q, neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX))
					return "integer value out of range";
			}
			return NULL;
		}
		*type = FT_FLOAT;
		return check_float(p, e);
	}
	*type = FT_BOOL;

	switch (n) {
	case 1:
		if (*p == 't' || *p == 'T' || *p == 'f' || *p == 'F')
			return NULL;
		break;
	case 4:
		if (!memcmp(p, "true", 4) || !memcmp(p, "True", 4) || !memcmp(p, "TRUE", 4))
			return NULL;
		break;
	case 5:
		if (!memcmp(p, "false", 5) || !memcmp(p, "False", 5) || !memcmp(p, "FALSE", 5))
			return NULL;
		break;
	}
	return "invalid boolean";
}

/* A tag key as it is written (escapes and all): InfluxDB compares keys
 * byte for byte, so a and \a are different keys. */
struct span {
	const char *p;
	size_t n;
};

static int span_cmp(const struct span *a, const struct span *b)
{
	int c = memcmp(a->p, b->p, a->n < b->n ? a->n : b->n);
	return c ? c : (a->n > b->n) - (a->n < b->n);
}

static int span_qsort_cmp(const void *a, const void *b)
{
	return span_cmp(a, b);
}

/* Tag keys compared pairwise on the stack; lines with more tags take the
 * sorted path or tags_have_duplicates. */
#define STACK_TAGS 32

/*
 * Look for two equal keys among the ntags tags that start at the ',' at p,
 * for a line with more tags than STACK_TAGS that are not in order. The keys
 * are sorted in out's spare room, past out->len: nothing is appended, and
 * the memory is reused by the next append.
 */
static bool tags_have_duplicates(struct rbuf *out, const char *p, const char *le, size_t ntags)
{
	const size_t align = _Alignof(struct span);

	rbuf_reserve(out, (ntags + 1) * sizeof(struct span));
	uintptr_t a = (uintptr_t)(out->data + out->len);
	struct span *keys = (struct span *)((a + align - 1) & ~(uintptr_t)(align - 1));
	size_t k = 0;

	/* The tags were checked already: each is ",key=value". */
	while (p < le && *p == ',' && k < ntags) {
		const char *q = scan_key(p + 1, le, CL_SP | CL_COMMA | CL_EQ);
		keys[k].p = p + 1;
		keys[k].n = (size_t)(q - (p + 1));
		k++;
		p = scan_key(q + 1, le, CL_SP | CL_COMMA | CL_EQ);
	}
	qsort(keys, k, sizeof(*keys), span_qsort_cmp);
	for (size_t i = 1; i < k; i++)
		if (span_cmp(&keys[i - 1], &keys[i]) == 0)
			return true;
	return false;
}

/* Whether p[0..n) is ASCII: eight bytes at a time. */
static bool ascii_only(const char *p, size_t n)
{
	uint64_t acc = 0, w;
	size_t i = 0;
	for (; i + 8 <= n; i += 8) {
		memcpy(&w, p + i, 8);
		acc |= w;
	}
	for (; i < n; i++)
		acc |= (unsigned char)p[i];
	return !(acc & UINT64_C(0x8080808080808080));
}

/* Whether p[0..n) is valid UTF-8 (InfluxDB refuses names that are not). */
static size_t utf8_len(const unsigned char *s, size_t n);
static bool utf8_valid(const char *p, size_t n)
{
	const unsigned char *s = (const unsigned char *)p, *e = s + n;
	while (s < e) {
		if (*s < 0x80) {
			s++;
			continue;
		}
		size_t k = utf8_len(s, (size_t)(e - s));
		if (!k)
			return false;
		s += k;
	}
	return true;
}

/* One point line as parse_point sees it. */
struct line {
	const char *start;      /* first byte after the leading blanks */
	const char *lend;       /* end of the content: '\n' or body end, minus a '\r' */
	const char *nl;         /* the '\n' that ends the line, or the body end */
	const char *fields_end; /* one past the last field value */
	const char *ts_end;     /* one past the timestamp, if has_ts */
	bool has_ts;
	/* from lp_limits: the largest |timestamp| whose nanoseconds InfluxDB
	 * stores, and LP_F_* */
	uint64_t ts_max;
	unsigned flags;
	const char *ts_why;     /* the message for a timestamp beyond ts_max */
	struct ftypes *types;   /* the field types seen so far in the request */
	int64_t prec_ns;        /* ns per unit of the request's precision */
	int64_t stamp_hour;     /* the hour of the acceptance time (lines without one) */
	char *why;              /* room for a message naming a field (WHY_SIZE) */
};

#define WHY_SIZE 96

/* The fields of the line just parsed against those of the request so
 * far: NULL, or a "field type conflict" naming the field. */
static const char *check_types(struct line *ln, const char *meas, size_t mlen, uint64_t mhash, int64_t hour)
{
	struct ftypes *t = ln->types;
	struct ftype_shape *sh = ftypes_shape(t, mhash, hour);
	if (same_shape(t, sh, meas, mlen, hour))
		return NULL;
	return lp_ftypes_record(t, sh, meas, mlen, mhash, hour, ln->why, WHY_SIZE);
}

/* parse_point's answer for a timestamp beyond ts_max: the message, with the
 * range, is formatted only then. */
static const char ts_range[] = "bad timestamp";

/*
 * Parse the point in ln (start < lend, start not blank, not '#'). A quoted
 * string may run past the first '\n'; then ln->nl and ln->lend move to the
 * real end of the line. out is only used as scratch space. Returns NULL, or
 * the reason the line is invalid.
 */
static const char *parse_point(struct line *ln, const char *end, struct rbuf *out)
{
	const char *p = ln->start, *le = ln->lend, *q;
	const char *why;
	struct span keys[STACK_TAGS], prev = { NULL, 0 };
	size_t ntags = 0;
	bool sorted = true;

	ln->types->nfields = 0;
	/* Measurement, up to the first unescaped ',' or ' '. */
	if (*p == ',')
		return "missing measurement";
	p = scan_key(p, le, CL_SP | CL_COMMA);
	if (p == le)
		return "missing fields";
	const char *meas = ln->start;
	size_t mlen = (size_t)(p - meas);
	/* Names need a UTF-8 check only when the line has a byte past ASCII
	 * (a string value that runs past the line's first '\n' clears this:
	 * the names after it are checked one by one). */
	bool ascii = ascii_only(ln->start, (size_t)(ln->lend - ln->start));
	if (!ascii && !utf8_valid(meas, mlen))
		return "invalid measurement (not UTF-8)";
	uint64_t mhash = hash_bytes(UINT64_C(0xcbf29ce484222325), meas, mlen);

	/* Tags: ",key=value" until the space before the fields. */
	const char *tags = p;
	while (*p == ',') {
		p++;
		if (p == le || *p == ' ' || *p == ',' || *p == '=')
			return "missing tag key";
		q = scan_key(p, le, CL_SP | CL_COMMA | CL_EQ);
		if (q == le || *q != '=')
			return "missing tag value";
		/* InfluxDB drops the whole point for this key (a partial
		 * write), so refuse it here while the client can still hear. */
		if (q - p == 4 && memcmp(p, "time", 4) == 0)
			return "invalid tag key \"time\"";

		/* InfluxDB refuses a point that repeats a tag key. Few tags
		 * are compared pairwise; many in order need only their
		 * neighbour; many out of order are sorted below. */
		struct span key = { p, (size_t)(q - p) };
		if (ntags < STACK_TAGS) {
			for (size_t i = 0; i < ntags; i++)
				if (keys[i].n == key.n && memcmp(keys[i].p, key.p, key.n) == 0)
					return "duplicate tags";
			keys[ntags] = key;
		}
		if (ntags && sorted && span_cmp(&prev, &key) >= 0)
			sorted = false;
		prev = key;
		ntags++;

		p = q + 1;
		/* The first byte of a value may be '=': InfluxDB takes it. */
		if (p == le || *p == ' ' || *p == ',')
			return "missing tag value";
		q = scan_key(p, le, CL_SP | CL_COMMA | CL_EQ);
		if (q == le)
			return "missing fields";
		if (*q == '=')
			return "invalid tag format (unescaped '=' in tag value)";
		p = q;
	}
	if (ntags > STACK_TAGS && !sorted && tags_have_duplicates(out, tags, le, ntags))
		return "duplicate tags";
	size_t key_len = (size_t)(p - ln->start);
	bool only_time = true;

	/* InfluxDB skips any blanks between the key and the fields. */
	p++;
	while (p < le && (*p == ' ' || *p == '\t'))
		p++;
	if (p == le)
		return "missing fields";

	for (;;) {
		q = scan_escaped(p, le, CL_SP | CL_COMMA | CL_EQ);
		if (q == p)
			return "missing field key";
		if (q == le || *q != '=')
			return "invalid field format (field key without '=')";
		/* InfluxDB splits the key from the value a second time with
		 * the key-section rule, which sees \\= as an escaped '='. */
		if (q[-1] == '\\')
			return "invalid field format (field key ends with a backslash)";
		if (key_len + FIELD_KEY_SEP_LEN + (size_t)(q - p) > MAX_KEY_LEN)
			return "max key length exceeded";
		/* A field named "time" is dropped by InfluxDB, and so is a
		 * point left with no other field. */
		if (q - p != 4 || memcmp(p, "time", 4) != 0)
			only_time = false;
		const char *fkey = p;
		size_t fklen = (size_t)(q - p);
		if (!ascii && !utf8_valid(fkey, fklen))
			return "invalid field key (not UTF-8)";
		enum ftype ftype;
		p = q + 1;
		if (p == le || *p == ',' || *p == ' ')
			return "missing field value";
		if (*p == '"') {
			/* Find the closing quote: one not preceded by an odd run
			 * of backslashes (each pair is an escaped backslash). */
			const char *s = p + 1;
			for (;;) {
				q = memchr(s, '"', (size_t)(end - s));
				if (!q)
					return "unbalanced quotes";
				const char *b = q;
				while (b > p + 1 && b[-1] == '\\')
					b--;
				s = q + 1;
				if (((q - b) & 1) == 0)
					break;
			}
			p = s;
			if (p > ln->nl) {
				/* The string held a newline: the line goes on. */
				ascii = false;
				q = memchr(p, '\n', (size_t)(end - p));
				ln->nl = q ? q : end;
				ln->lend = ln->nl > p && ln->nl[-1] == '\r' ? ln->nl - 1 : ln->nl;
				le = ln->lend;
			}
			if (p < le && *p != ',' && *p != ' ')
				return "invalid field format (text after a string value)";
			ftype = FT_STRING;
		} else {
			q = scan_escaped(p, le, CL_SP | CL_COMMA);
			/* A backslash is never part of a valid number or boolean, so
			 * scan_escaped skipping one does not change the verdict. */
			why = check_value(p, q, ln->flags, &ftype);
			if (why)
				return why;
			p = q;
		}
		ftypes_add_field(ln->types, fkey, fklen, ftype);
		if (p == le || *p == ' ')
			break;
		p++; /* ',' */
	}
	if (only_time)
		return "invalid field name \"time\" (the only field)";

	ln->fields_end = p;
	ln->has_ts = false;

	/* Optional timestamp, then nothing but blanks. */
	while (p < le && (*p == ' ' || *p == '\t'))
		p++;
	if (p == le)
		return check_types(ln, meas, mlen, mhash, ln->stamp_hour);
	q = p;
	bool neg = *q == '-';
	if (*q == '-')
		q++;
	const char *d = q;
	while (q < le && is_digit(*q))
		q++;
	if (q == d)
		return "bad timestamp";
	/* InfluxDB keeps the two values at each end of int64 for itself, and
	 * refuses a timestamp whose nanoseconds at the request's precision
	 * fall outside the rest ("time outside range"). */
	if (!digits_within(d, q, ln->ts_max))
		return ln->ts_why;
	ln->ts_end = q;
	while (q < le && (*q == ' ' || *q == '\t'))
		q++;
	if (q != le)
		return "bad timestamp";
	ln->has_ts = true;
	/* Within ts_max: its nanoseconds fit in int64. */
	int64_t ts = 0;
	for (const char *c = d; c < ln->ts_end; c++)
		ts = ts * 10 + (*c - '0');
	return check_types(ln, meas, mlen, mhash, hour_of((neg ? -ts : ts) * ln->prec_ns));
}

/*---- errors ----*/

/* Length of the valid UTF-8 sequence at s[0..n), or 0 if there is none. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
	size_t len;
	unsigned char lo = 0x80, hi = 0xbf;

	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		len = 2;
	else if (s[0] >= 0xe0 && s[0] <= 0xef)
		len = 3;
	else if (s[0] >= 0xf0 && s[0] <= 0xf4)
		len = 4;
	else
		return 0;
	/* Second-byte ranges that rule out overlongs, surrogates and code
	 * points past U+10FFFF. */
	if (s[0] == 0xe0)
		lo = 0xa0;
	else if (s[0] == 0xed)
		hi = 0x9f;
	else if (s[0] == 0xf0)
		lo = 0x90;
	else if (s[0] == 0xf4)
		hi = 0x8f;
	if (n < len || s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < len; i++)
		if (s[i] < 0x80 || s[i] > 0xbf)
			return 0;
	return len;
}

/*
 * Fill err for the line that starts at line (physical first byte) with its
 * content at start. The message quotes up to EXCERPT_MAX bytes of the first
 * physical line, with control bytes and broken UTF-8 shown as '?': it goes
 * into logs and a JSON reply, and the body is untrusted.
 */
static void set_error(struct lp_error *err, const char *body, const char *line,
                      const char *start, const char *end, const char *why)
{
	char ex[EXCERPT_MAX + 4];
	size_t n = 0, lineno = 1;
	const char *p = body;
	const char *nl;

	if (!err)
		return;
	/* Counted only here, so the fast path never tracks line numbers. */
	while ((nl = memchr(p, '\n', (size_t)(line - p)))) {
		lineno++;
		p = nl + 1;
	}

	nl = memchr(start, '\n', (size_t)(end - start));
	const unsigned char *s = (const unsigned char *)start;
	const unsigned char *e = (const unsigned char *)(nl ? nl : end);
	if (e > s && e[-1] == '\r')
		e--;
	while (s < e) {
		size_t k = utf8_len(s, (size_t)(e - s));
		if (n + (k ? k : 1) > EXCERPT_MAX) {
			memcpy(ex + n, "...", 3);
			n += 3;
			break;
		}
		if (k > 1) {
			memcpy(ex + n, s, k);
			n += k;
			s += k;
			continue;
		}
		ex[n++] = k == 0 || (*s < 0x20 && *s != '\t') || *s == 0x7f ? '?' : (char)*s;
		s++;
	}
	ex[n] = '\0';

	err->line = lineno;
	snprintf(err->msg, sizeof(err->msg), "unable to parse '%s': %s", ex, why);
}

/*---- validate ----*/

int lineproto_validate(const char *body, size_t len, int64_t stamp, size_t max_line,
                       struct rbuf *out, struct lp_result *res, struct lp_error *err)
{
	struct lp_limits lim = { .max_line = max_line, .precision = LP_PRECISION_NS };
	return lineproto_validate_limits(body, len, stamp, &lim, out, res, err);
}

int lineproto_validate_limits(const char *body, size_t len, int64_t stamp, const struct lp_limits *lim,
                              struct rbuf *out, struct lp_result *res, struct lp_error *err)
{
	const size_t out_len = out->len;
	const size_t max_line = lim ? lim->max_line : 0;
	const size_t max_out = lim && lim->max_out ? lim->max_out : SIZE_MAX;

	uint32_t lines = 0, stamped = 0;
	char tail[24];
	const char *why;
	char whybuf[WHY_SIZE];
	struct line ln;

	if (res)
		res->lines = res->stamped = 0;
	if (err) {
		err->line = 0;
		err->too_big = 0;
		err->msg[0] = '\0';
	}
	if (len == 0)
		return 0;

	enum lp_precision prec = lim ? lim->precision : LP_PRECISION_NS;
	ln.flags = lim ? lim->flags : 0;
	ln.ts_max = (uint64_t)(INT64_MAX - 1) / (uint64_t)lp_precision_ns(prec);
	ln.ts_why = ts_range;
	ln.why = whybuf;
	ln.prec_ns = lp_precision_ns(prec);
	int64_t stamp_ns;
	ln.stamp_hour = __builtin_mul_overflow(stamp, ln.prec_ns, &stamp_ns) ? stamp : hour_of(stamp_ns);
	struct ftypes types;
	lp_ftypes_init(&types);
	ln.types = &types;

	/* Formatted once: most bodies of a client without clocks get it on
	 * every line. */
	int tail_len = snprintf(tail, sizeof(tail), " %" PRId64 "\n", stamp);

	const char *p = body, *end = body + len, *line;
	while (p < end) {
		line = p;
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		if (!nl)
			nl = end;
		const char *lend = nl > p && nl[-1] == '\r' ? nl - 1 : nl;

		while (p < lend && (*p == ' ' || *p == '\t'))
			p++;
		if (p == lend || *p == '#') {
			/* Blank and comment lines are dropped, but still count
			 * against the limit: it caps what we are asked to read. */
			if (max_line && (size_t)(nl - line) > max_line)
				goto too_long;
			p = nl < end ? nl + 1 : end;
			continue;
		}

		ln.start = p;
		ln.lend = lend;
		ln.nl = nl;
		why = parse_point(&ln, end, out);
		if (why)
			goto fail;
		if (max_line && (size_t)(ln.nl - line) > max_line)
			goto too_long;
		if (lines == UINT32_MAX) {
			why = "too many lines in one body";
			goto fail;
		}

		/* One reserve per line; the line is copied as it came, up to
		 * its timestamp or its last field. Blanks after a timestamp are
		 * dropped too: InfluxDB 1.6 refuses a tab there. */
		size_t n = (size_t)((ln.has_ts ? ln.ts_end : ln.fields_end) - ln.start);
		size_t add = n + (ln.has_ts ? 1 : (size_t)tail_len);
		if (add > max_out - (out->len - out_len)) {
			why = "the queued form of the body is too large";
			if (err)
				err->too_big = 1;
			goto fail;
		}
		rbuf_reserve(out, n + (size_t)tail_len);
		char *w = out->data + out->len;
		memcpy(w, ln.start, n);
		if (ln.has_ts) {
			w[n] = '\n';
			out->len += n + 1;
		} else {
			memcpy(w + n, tail, (size_t)tail_len);
			out->len += n + (size_t)tail_len;
			stamped++;
		}
		lines++;
		p = ln.nl < end ? ln.nl + 1 : end;
	}

	if (res) {
		res->lines = lines;
		res->stamped = stamped;
	}
	lp_ftypes_release(&types);
	return 0;

too_long:
	snprintf(whybuf, sizeof(whybuf), "line exceeds %zu byte%s", max_line, relay_s(max_line));
	why = whybuf;
fail:
	if (why == ts_range) {
		int ns = prec == LP_PRECISION_NS;
		snprintf(whybuf, sizeof(whybuf), "bad timestamp (outside -%" PRIu64 "..%" PRIu64 "%s%s)", ln.ts_max,
		         ln.ts_max, ns ? "" : " at precision ", ns ? "" : lp_precision_name(prec));
		why = whybuf;
	}
	/* Nothing of a bad request may be queued, not even its good lines. */
	lp_ftypes_release(&types);
	out->len = out_len;
	set_error(err, body, line, p, end, why);
	return -1;
}
