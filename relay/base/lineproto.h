/*
 * lineproto: validate an InfluxDB line-protocol body and produce the form
 * that is queued. Pure functions: no I/O, no logging, no libuv. Used at the
 * HTTP door before anything is queued, and by the fuzz target.
 */
#ifndef RELAY_LINEPROTO_H
#define RELAY_LINEPROTO_H

#include <stddef.h>
#include <stdint.h>
#include "relay/base/util.h"

/* Timestamp precisions InfluxDB 1.x accepts on /write. */
enum lp_precision {
	LP_PRECISION_NS = 0,
	LP_PRECISION_US,
	LP_PRECISION_MS,
	LP_PRECISION_S,
	LP_PRECISION_M,
	LP_PRECISION_H,
};

/*
 * Parse a precision query value: "n"/"ns", "u"/"us"/"µ" (UTF-8 0xC2 0xB5)
 * /"µs", "ms", "s", "m", "h". An empty or NULL string is ns (InfluxDB's
 * default). Returns 0, or -1 for anything else (InfluxDB silently accepts
 * bad precisions; we refuse them).
 */
int lp_precision_parse(const char *s, enum lp_precision *out);
/* The canonical query spelling: "ns", "u", "ms", "s", "m", "h". */
const char *lp_precision_name(enum lp_precision p);
/* Convert nanoseconds since the epoch to the unit of p (truncating). */
int64_t lp_ns_to_precision(int64_t ns, enum lp_precision p);

/*
 * The end of the line of validated line protocol starting at p (before
 * e): just past its '\n', or e. A quoted string field may hold a newline,
 * which does not end the line. *key_len is the length of the series key
 * (measurement and tags, up to the first unescaped space).
 */
const char *lp_line_end(const char *p, const char *e, size_t *key_len);

/* Where and why validation failed. line is 1-based, counting every line of
 * the request body (blank and comment lines included). */
struct lp_error {
	size_t line;
	char msg[200];
	int too_big;      /* 1: the queued form would exceed lp_limits.max_out */
};

/* What the backends take, and what the caller can hold. */
struct lp_limits {
	size_t max_line;  /* most bytes of one line; 0 = unlimited */
	size_t max_out;   /* most bytes the queued form (out) may grow by; 0 = unlimited */
	/* Timestamps are in this precision: a line's timestamp times the
	 * precision's length in ns must stay within what InfluxDB stores
	 * (-9223372036854775806..9223372036854775806 ns), or it is refused
	 * here rather than by every backend later (docs/architecture.md,
	 * "What the door checks"). */
	enum lp_precision precision;
	unsigned flags;   /* LP_F_* */
};
/* Refuse unsigned integer fields ("1u"): InfluxDB 1.x answers "invalid
 * number" for them; 2.x takes them. */
#define LP_F_NO_UNSIGNED 0x1

/* What was accepted. */
struct lp_result {
	uint32_t lines;   /* points (non-blank, non-comment lines) written to out */
	uint32_t stamped; /* lines that got the acceptance time appended */
};

/*
 * Validate body[0..len) as line protocol, and append the queued form to out:
 * every point line, byte for byte, except that
 *   - blank lines and comment lines (first non-blank byte '#') are dropped,
 *   - leading spaces/tabs before a point and a trailing '\r' are dropped,
 *   - a line without a timestamp gets " <stamp>" appended (trailing spaces
 *     and tabs removed first), stamp being the acceptance time already
 *     converted to the request's precision,
 *   - every line, the last one included, ends with '\n'.
 * A quoted string field value may contain a newline; it does not end the
 * line, as in InfluxDB.
 *
 * Checked per line: measurement (non-empty, escapes "\ " "\," "\\"), tag
 * set (",key=value", both non-empty, escapes "\ " "\," "\=" "\\"), at least
 * one field "key=value" (key non-empty; value a float, an integer "123i"
 * within int64, an unsigned "123u" within uint64, a boolean t/T/true/True/
 * TRUE/f/F/false/False/FALSE, or a double-quoted string with "\"" and "\\"
 * escapes), an optional integer timestamp within int64, nothing after it
 * but spaces/tabs. max_line (0 = unlimited) caps the bytes of one line.
 *
 * Returns 0 when every line is valid (out holds res->lines lines; 0 lines
 * is valid: an empty body). Returns -1 on the first invalid line, with err
 * filled in; out is then restored to its length on entry, so nothing of the
 * request can be queued. out is owned by the caller.
 */
int lineproto_validate(const char *body, size_t len, int64_t stamp, size_t max_line,
                       struct rbuf *out, struct lp_result *res, struct lp_error *err);

/*
 * lineproto_validate with every limit of lim (NULL = none; timestamps in
 * ns). Beyond the checks above: a timestamp that overflows nanoseconds at
 * lim->precision is invalid, and so is an unsigned field with
 * LP_F_NO_UNSIGNED. When the queued form would grow out by more than
 * lim->max_out bytes, returns -1 with err->too_big = 1 (and out restored):
 * out never grows past its length on entry plus max_out plus one line's
 * reserve, so a caller that reserved that room first sees no
 * reallocation.
 */
int lineproto_validate_limits(const char *body, size_t len, int64_t stamp, const struct lp_limits *lim,
                              struct rbuf *out, struct lp_result *res, struct lp_error *err);

/* The most nanoseconds-per-unit of p (1 for ns, 3.6e12 for h). */
int64_t lp_precision_ns(enum lp_precision p);

#endif
