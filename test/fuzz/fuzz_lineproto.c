/*
 * fuzz_lineproto: feed any bytes to lineproto_validate and check what must
 * hold whatever the input: a refused body leaves out exactly as it was and
 * says which line is bad; an accepted body is queued as lines that end in
 * '\n' and that validate again to the very same bytes with nothing stamped
 * (so a replayed batch never changes); a line limit only ever refuses more.
 * Violations abort(), which both libFuzzer and the replay main report.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "relay/base/lineproto.h"

#define STAMP INT64_C(1700000000000000000)
#define MAX_LINE 64

static const char prefix[] = "prefix";

static void check(int cond)
{
	if (!cond)
		abort();
}

/* Validate into a buffer that already holds prefix and check the common
 * rules; returns the rc. */
static int run(const char *body, size_t len, int64_t stamp, size_t max_line,
               struct rbuf *out, struct lp_result *res, struct lp_error *err)
{
	rbuf_reset(out);
	rbuf_append(out, prefix, sizeof(prefix) - 1);
	int rc = lineproto_validate(body, len, stamp, max_line, out, res, err);
	check(rc == 0 || rc == -1);
	check(out->len >= sizeof(prefix) - 1);
	check(memcmp(out->data, prefix, sizeof(prefix) - 1) == 0);

	if (rc == -1) {
		size_t nls = 0;
		for (size_t i = 0; i < len; i++)
			nls += body[i] == '\n';
		check(out->len == sizeof(prefix) - 1);
		check(err->line >= 1 && err->line <= nls + 1);
		check(memchr(err->msg, '\0', sizeof(err->msg)) != NULL);
		check(strncmp(err->msg, "unable to parse '", 17) == 0);
		return rc;
	}

	size_t n = out->len - (sizeof(prefix) - 1);
	const char *q = out->data + sizeof(prefix) - 1;
	check(res->stamped <= res->lines);
	check((n == 0) == (res->lines == 0));
	if (n) {
		size_t nls = 0;
		for (size_t i = 0; i < n; i++)
			nls += q[i] == '\n';
		check(q[n - 1] == '\n');
		check(q[0] != ' ' && q[0] != '\t' && q[0] != '\n' && q[0] != '#');
		/* Strings may hold newlines, so there can be more '\n' than
		 * lines, never fewer. */
		check(nls >= res->lines);
		/* What is queued is never larger than the body plus stamps. */
		check(n <= len + 1 + (size_t)res->stamped * 21 + res->lines);
	}
	return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *body = (const char *)data;
	struct rbuf out = RBUF_INIT, again = RBUF_INIT, limited = RBUF_INIT;
	struct lp_result res, res2, res3;
	struct lp_error err, err2, err3;

	int rc = run(body, size, STAMP, 0, &out, &res, &err);

	/* A line limit can turn success into "line exceeds", nothing else,
	 * and never changes what an accepted body queues. */
	int rc3 = run(body, size, STAMP, MAX_LINE, &limited, &res3, &err3);
	if (rc != 0)
		check(rc3 == -1);
	else if (rc3 == 0)
		check(limited.len == out.len && memcmp(limited.data, out.data, out.len) == 0 &&
		      res3.lines == res.lines && res3.stamped == res.stamped);
	else
		check(strstr(err3.msg, "line exceeds") != NULL);

	/* Limits (a precision, no unsigned, a cap on the queued form) only
	 * ever refuse more, and never change what an accepted body queues;
	 * past the cap, out is left as it was. */
	if (size) {
		struct rbuf lim_out = RBUF_INIT;
		struct lp_result res4;
		struct lp_error err4;
		struct lp_limits lim = {
			.precision = (enum lp_precision)(data[0] % 6),
			.flags = data[0] & 0x8 ? LP_F_NO_UNSIGNED : 0,
			.max_out = data[0] & 0x10 ? size / 2 + 1 : 0,
		};
		int rc4 = lineproto_validate_limits(body, size, STAMP / lp_precision_ns(lim.precision), &lim, &lim_out,
		                                    &res4, &err4);
		check(rc4 == 0 || rc4 == -1);
		if (rc != 0)
			check(rc4 == -1);
		if (rc4 == 0) {
			check(!lim.max_out || lim_out.len <= lim.max_out);
			check(res4.lines == res.lines);
		} else {
			check(lim_out.len == 0);
			check(!err4.too_big || lim.max_out);
		}
		rbuf_release(&lim_out);
	}

	if (rc == 0) {
		/* Idempotence: the queued form validates to itself, unstamped
		 * (a different stamp would show if any line were stamped). */
		size_t p = sizeof(prefix) - 1;
		int rc2 = run(out.data + p, out.len - p, -1, 0, &again, &res2, &err2);
		check(rc2 == 0);
		check(res2.lines == res.lines);
		check(res2.stamped == 0);
		check(again.len == out.len && memcmp(again.data, out.data, out.len) == 0);
	}

	rbuf_release(&out);
	rbuf_release(&again);
	rbuf_release(&limited);
	return 0;
}
