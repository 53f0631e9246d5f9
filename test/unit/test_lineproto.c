/*
 * test_lineproto: table tests for the line-protocol gate. Valid lines are
 * checked against the exact bytes that would be queued (and queued bytes
 * must validate again unchanged); invalid lines against the line number
 * and the reason; plus the limits, the "nothing queued on error" rule and
 * the precision helpers.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "relay/base/lineproto.h"

#define STAMP INT64_C(1700000000000000000)
#define S " 1700000000000000000\n"

struct ok_case {
	const char *in;
	const char *want;
	uint32_t lines;
	uint32_t stamped;
};

static const struct ok_case ok_cases[] = {
	/* Basics: timestamp kept, missing timestamp stamped. */
	{ "cpu v=1 123", "cpu v=1 123\n", 1, 0 },
	{ "cpu v=1 123\n", "cpu v=1 123\n", 1, 0 },
	{ "cpu v=1", "cpu v=1" S, 1, 1 },
	{ "cpu v=1\n", "cpu v=1" S, 1, 1 },
	{ "cpu,host=a v=1i 5\n", "cpu,host=a v=1i 5\n", 1, 0 },
	{ "cpu,host=a,region=b v=1,w=2 5", "cpu,host=a,region=b v=1,w=2 5\n", 1, 0 },
	{ "cpu a=1,b=2i,c=\"x\",d=t,e=3u 5", "cpu a=1,b=2i,c=\"x\",d=t,e=3u 5\n", 1, 0 },
	{ "cpu v=1 5\ncpu v=2\ncpu v=3 7\n", "cpu v=1 5\ncpu v=2" S "cpu v=3 7\n", 3, 1 },

	/* Escapes in the measurement, tag keys and values, field keys. */
	{ "c\\ pu v=1 5", "c\\ pu v=1 5\n", 1, 0 },
	{ "c\\,pu v=1 5", "c\\,pu v=1 5\n", 1, 0 },
	{ "c\\\\pu v=1 5", "c\\\\pu v=1 5\n", 1, 0 },
	{ "c=pu v=1 5", "c=pu v=1 5\n", 1, 0 },
	{ "c#pu v=1 5", "c#pu v=1 5\n", 1, 0 },
	{ "c\\pu v=1 5", "c\\pu v=1 5\n", 1, 0 },
	{ "cpu,ho\\ st=a v=1 5", "cpu,ho\\ st=a v=1 5\n", 1, 0 },
	{ "cpu,ho\\,st=a v=1 5", "cpu,ho\\,st=a v=1 5\n", 1, 0 },
	{ "cpu,ho\\=st=a v=1 5", "cpu,ho\\=st=a v=1 5\n", 1, 0 },
	{ "cpu,h=a\\ b v=1 5", "cpu,h=a\\ b v=1 5\n", 1, 0 },
	{ "cpu,h=a\\,b v=1 5", "cpu,h=a\\,b v=1 5\n", 1, 0 },
	{ "cpu,h=a\\=b v=1 5", "cpu,h=a\\=b v=1 5\n", 1, 0 },
	{ "cpu,h=a\\\\b v=1 5", "cpu,h=a\\\\b v=1 5\n", 1, 0 },
	{ "cpu,h==x v=1 5", "cpu,h==x v=1 5\n", 1, 0 }, /* a value may start with '=' */
	{ "cpu,h=\\=x v=1 5", "cpu,h=\\=x v=1 5\n", 1, 0 },
	{ "cpu f\\\\g=1 5", "cpu f\\\\g=1 5\n", 1, 0 },
	{ "cpu \\==1 5", "cpu \\==1 5\n", 1, 0 },
	{ "cpu,h=#a v=1 5", "cpu,h=#a v=1 5\n", 1, 0 },
	{ "m,b=1,a=2 v=1 5", "m,b=1,a=2 v=1 5\n", 1, 0 },
	/* "time" is refused as a tag key and as the only field, no more. */
	{ "m time=1,v=2 5", "m time=1,v=2 5\n", 1, 0 },
	{ "m,Time=a v=1 5", "m,Time=a v=1 5\n", 1, 0 },
	{ "m,timer=a t\\ime=1 5", "m,timer=a t\\ime=1 5\n", 1, 0 },
	{ "m,a=1,\\a=1,a\\ =1,ab=1 v=1 5", "m,a=1,\\a=1,a\\ =1,ab=1 v=1 5\n", 1, 0 },
	{ "cpu f\\ 1=1 5", "cpu f\\ 1=1 5\n", 1, 0 },
	{ "cpu f\\,1=1 5", "cpu f\\,1=1 5\n", 1, 0 },
	{ "cpu f\\=1=1 5", "cpu f\\=1=1 5\n", 1, 0 },
	{ "cpu \"f\"=1 5", "cpu \"f\"=1 5\n", 1, 0 },
	{ "\xc2\xb5,t=\xc3\xa9 v=1 5", "\xc2\xb5,t=\xc3\xa9 v=1 5\n", 1, 0 },

	/* Strings. */
	{ "cpu s=\"hello\" 5", "cpu s=\"hello\" 5\n", 1, 0 },
	{ "cpu s=\"\" 5", "cpu s=\"\" 5\n", 1, 0 },
	{ "cpu s=\"a\\\"b\" 5", "cpu s=\"a\\\"b\" 5\n", 1, 0 },
	{ "cpu s=\"a\\\\\" 5", "cpu s=\"a\\\\\" 5\n", 1, 0 },
	{ "cpu s=\"a\\\\\\\"\" 5", "cpu s=\"a\\\\\\\"\" 5\n", 1, 0 },
	{ "cpu s=\"a,b c=d 9\" 5", "cpu s=\"a,b c=d 9\" 5\n", 1, 0 },
	{ "cpu s=\"#x\" 5", "cpu s=\"#x\" 5\n", 1, 0 },
	{ "cpu s=\"line1\nline2\" 5", "cpu s=\"line1\nline2\" 5\n", 1, 0 },
	{ "cpu s=\"a\n\nb\"\ncpu v=1 6", "cpu s=\"a\n\nb\"" S "cpu v=1 6\n", 2, 1 },
	{ "cpu s=\"a\r\nb\"\r\n", "cpu s=\"a\r\nb\"" S, 1, 1 },
	{ "cpu s=\"x\",v=1 5", "cpu s=\"x\",v=1 5\n", 1, 0 },

	/* Floats. */
	{ "m v=-1 5", "m v=-1 5\n", 1, 0 },
	{ "m v=1.5 5", "m v=1.5 5\n", 1, 0 },
	{ "m v=-1.5 5", "m v=-1.5 5\n", 1, 0 },
	{ "m v=1. 5", "m v=1. 5\n", 1, 0 },
	{ "m v=.5 5", "m v=.5 5\n", 1, 0 },
	{ "m v=-.5 5", "m v=-.5 5\n", 1, 0 },
	{ "m v=1e5 5", "m v=1e5 5\n", 1, 0 },
	{ "m v=1E5 5", "m v=1E5 5\n", 1, 0 },
	{ "m v=1e+5 5", "m v=1e+5 5\n", 1, 0 },
	{ "m v=1.5e-3 5", "m v=1.5e-3 5\n", 1, 0 },
	{ "m v=-0 5", "m v=-0 5\n", 1, 0 },
	{ "m v=1.7976931348623157e308 5", "m v=1.7976931348623157e308 5\n", 1, 0 },
	{ "m v=-1.7976931348623157e308 5", "m v=-1.7976931348623157e308 5\n", 1, 0 },
	{ "m v=1e-400 5", "m v=1e-400 5\n", 1, 0 },
	{ "m v=0e999999999999999999999 5", "m v=0e999999999999999999999 5\n", 1, 0 },
	{ "m v=0.000001e300 5", "m v=0.000001e300 5\n", 1, 0 },

	/* Integers and unsigned at their edges. */
	{ "m v=0i 5", "m v=0i 5\n", 1, 0 },
	{ "m v=-1i 5", "m v=-1i 5\n", 1, 0 },
	{ "m v=9223372036854775807i 5", "m v=9223372036854775807i 5\n", 1, 0 },
	{ "m v=-9223372036854775808i 5", "m v=-9223372036854775808i 5\n", 1, 0 },
	{ "m v=0009223372036854775807i 5", "m v=0009223372036854775807i 5\n", 1, 0 },
	{ "m v=0u 5", "m v=0u 5\n", 1, 0 },
	{ "m v=18446744073709551615u 5", "m v=18446744073709551615u 5\n", 1, 0 },

	/* Booleans. */
	{ "m a=t,b=T,c=true,d=True,e=TRUE 5", "m a=t,b=T,c=true,d=True,e=TRUE 5\n", 1, 0 },
	{ "m a=f,b=F,c=false,d=False,e=FALSE 5", "m a=f,b=F,c=false,d=False,e=FALSE 5\n", 1, 0 },
	{ "m v=t", "m v=t" S, 1, 1 },

	/* Timestamps. */
	{ "m v=1 0", "m v=1 0\n", 1, 0 },
	{ "m v=1 -1", "m v=1 -1\n", 1, 0 },
	{ "m v=1 9223372036854775806", "m v=1 9223372036854775806\n", 1, 0 },
	{ "m v=1 -9223372036854775806", "m v=1 -9223372036854775806\n", 1, 0 },
	{ "m v=1 0005", "m v=1 0005\n", 1, 0 },
	/* Blanks after a timestamp are dropped: InfluxDB refuses a tab there. */
	{ "m v=1 5  \t", "m v=1 5\n", 1, 0 },
	{ "m v=1 5 \r\n", "m v=1 5\n", 1, 0 },
	{ "m v=1   5", "m v=1   5\n", 1, 0 },
	{ "m v=1 \t5", "m v=1 \t5\n", 1, 0 },

	/* Blanks: leading ones dropped, trailing ones dropped when stamping. */
	{ "  \tcpu v=1 5", "cpu v=1 5\n", 1, 0 },
	{ "cpu v=1   ", "cpu v=1" S, 1, 1 },
	{ "cpu v=1 \t ", "cpu v=1" S, 1, 1 },
	{ "cpu  v=1 5", "cpu  v=1 5\n", 1, 0 },
	{ "cpu \tv=1 5", "cpu \tv=1 5\n", 1, 0 },

	/* Blank and comment lines, CRLF, empty bodies. */
	{ "", "", 0, 0 },
	{ "\n", "", 0, 0 },
	{ "\n\n\n", "", 0, 0 },
	{ "   \r\n\t\n", "", 0, 0 },
	{ "# only a comment", "", 0, 0 },
	{ "# c1\n  # c2\n", "", 0, 0 },
	{ "\n\n# comment\ncpu v=1 5\n  # indented\n\n", "cpu v=1 5\n", 1, 0 },
	{ "# \"unbalanced\ncpu v=1 5", "cpu v=1 5\n", 1, 0 },
	{ "#cpu v=\ncpu v=1 5", "cpu v=1 5\n", 1, 0 },
	{ "cpu v=1 5\r\ncpu v=2\r\n", "cpu v=1 5\ncpu v=2" S, 2, 1 },
	{ "cpu v=1 5\r", "cpu v=1 5\n", 1, 0 },
	{ "cpu v=1\r", "cpu v=1" S, 1, 1 },
	{ "\r\n\r\ncpu v=1 5\r\n", "cpu v=1 5\n", 1, 0 },
};

struct bad_case {
	const char *in;
	size_t line;
	const char *why;
};

static const struct bad_case bad_cases[] = {
	/* Key section. */
	{ ",h=a v=1", 1, "missing measurement" },
	{ "cpu", 1, "missing fields" },
	{ "cpu ", 1, "missing fields" },
	{ "cpu  \t", 1, "missing fields" },
	{ "cpu,h=a", 1, "missing fields" },
	{ "cpu,h=a ", 1, "missing fields" },
	{ "cpu\tv=1", 1, "missing fields" },
	{ "cpu\\ v=1", 1, "missing fields" },
	{ "cpu,=a v=1", 1, "missing tag key" },
	{ "cpu, v=1", 1, "missing tag key" },
	{ "cpu,,h=a v=1", 1, "missing tag key" },
	{ "cpu,h=a, v=1", 1, "missing tag key" },
	{ "cpu,h v=1", 1, "missing tag value" },
	{ "cpu,h= v=1", 1, "missing tag value" },
	{ "cpu,h=,g=b v=1", 1, "missing tag value" },
	{ "cpu,h", 1, "missing tag value" },
	{ "cpu,h=a=b v=1", 1, "invalid tag format" },
	{ "m,a=1,a=1 v=1", 1, "duplicate tags" },
	{ "m,time=a v=1", 1, "invalid tag key \"time\"" },
	{ "m,a=1,time=2 v=1", 1, "invalid tag key" },
	{ "m time=1", 1, "invalid field name \"time\"" },
	{ "m time=1,time=2", 1, "invalid field name" },
	{ "m time=\"x\" 5", 1, "invalid field name" },
	{ "m,a=1,b=2,a=3 v=1", 1, "duplicate tags" },
	{ "m,a\\ =1,a\\ =2 v=1", 1, "duplicate tags" },
	{ "cpu,h=a\\ v=1", 1, "invalid tag format" },
	/* Key-section escapes as InfluxDB reads them: the byte after a
	 * backslash is literal even when that backslash is escaped. */
	{ "cpu,h=a\\\\ v=1 5", 1, "invalid tag format" },
	{ "cpu,h=a\\\\,g=b v=1 5", 1, "invalid tag format" },
	{ "cpu,h\\\\=a v=1 5", 1, "missing tag value" },
	{ "cpu\\\\ v=1", 1, "missing fields" },
	{ "cpu\\\\ v=1 5", 1, "invalid field format" },
	{ "cpu,h=a=b v=1 5", 1, "invalid tag format" },

	/* Field keys and values. */
	{ "cpu =1", 1, "missing field key" },
	{ "cpu v=1,=2", 1, "missing field key" },
	{ "cpu v=1,", 1, "missing field key" },
	{ "cpu v=1, w=2", 1, "missing field key" },
	{ "cpu v", 1, "invalid field format" },
	{ "cpu v=1,w", 1, "invalid field format" },
	{ "cpu f\\\\=1", 1, "invalid field format" },
	{ "cpu a\\\\ b=1", 1, "invalid field format" },
	{ "cpu a\\\\,b=1", 1, "invalid field format" },
	{ "cpu v=", 1, "missing field value" },
	{ "cpu v= 5", 1, "missing field value" },
	{ "cpu v=,w=1", 1, "missing field value" },
	{ "cpu v=abc", 1, "invalid boolean" },
	{ "cpu v=tru", 1, "invalid boolean" },
	{ "cpu v=truE", 1, "invalid boolean" },
	{ "cpu v=i", 1, "invalid boolean" },
	{ "cpu v=NaN", 1, "invalid boolean" },
	{ "cpu v=Inf", 1, "invalid boolean" },
	{ "cpu v=-Inf", 1, "invalid number" },
	{ "cpu v=1.2.3", 1, "invalid number" },
	{ "cpu v=1e", 1, "invalid number" },
	{ "cpu v=1e+", 1, "invalid number" },
	{ "cpu v=1e5.0", 1, "invalid number" },
	{ "cpu v=.", 1, "invalid number" },
	{ "cpu v=-", 1, "invalid number" },
	{ "cpu v=.e5", 1, "invalid number" },
	{ "cpu v=+1", 1, "invalid boolean" },
	{ "cpu v=0x10", 1, "invalid number" },
	{ "cpu v=1ii", 1, "invalid number" },
	{ "cpu v=1.5i", 1, "invalid number" },
	{ "cpu v=1e5i", 1, "invalid number" },
	{ "cpu v=-i", 1, "invalid number" },
	{ "cpu v=1i5", 1, "invalid number" },
	{ "cpu v=1u5", 1, "invalid number" },
	{ "cpu v=1\\ 5", 1, "invalid number" },
	{ "cpu v=1\t5", 1, "invalid number" },
	{ "cpu v=1e309", 1, "out of range" },
	{ "cpu v=-1e309", 1, "out of range" },
	{ "cpu v=1.7976931348623159e308", 1, "out of range" },
	{ "cpu v=10e99999999999999999999999", 1, "out of range" },
	{ "cpu v=9223372036854775808i", 1, "integer value out of range" },
	{ "cpu v=-9223372036854775809i", 1, "integer value out of range" },
	{ "cpu v=99999999999999999999i", 1, "integer value out of range" },
	{ "cpu v=18446744073709551616u", 1, "unsigned value out of range" },
	{ "cpu v=-1u", 1, "invalid number" },
	{ "cpu v=\"abc", 1, "unbalanced quotes" },
	{ "cpu v=\"abc\\\"", 1, "unbalanced quotes" },
	{ "cpu v=\"abc\n\ncpu v=1 5", 1, "unbalanced quotes" },
	{ "cpu v=\"a\"b", 1, "invalid field format" },
	{ "cpu v=\"a\"\"b\"", 1, "invalid field format" },

	/* Timestamps. */
	{ "cpu v=1 abc", 1, "bad timestamp" },
	{ "cpu v=1 12a", 1, "bad timestamp" },
	{ "cpu v=1 1 2", 1, "bad timestamp" },
	{ "cpu v=1 -", 1, "bad timestamp" },
	{ "cpu v=1 +5", 1, "bad timestamp" },
	{ "cpu v=1 1.5", 1, "bad timestamp" },
	{ "cpu v=1 ,w=2", 1, "bad timestamp" },
	{ "cpu v=1 9223372036854775808", 1, "bad timestamp" },
	{ "cpu v=1 -9223372036854775809", 1, "bad timestamp" },
	{ "cpu v=1 9223372036854775807", 1, "bad timestamp" },
	{ "cpu v=1 -9223372036854775807", 1, "bad timestamp" },
	{ "cpu v=1 99999999999999999999", 1, "bad timestamp" },
	{ "cpu v=1 5\r\r\n", 1, "bad timestamp" },

	/* Line numbers count every physical line before the bad one. */
	{ "cpu v=1\ncpu v=", 2, "missing field value" },
	{ "cpu v=1\n\n# c\ncpu v=", 4, "missing field value" },
	{ "\r\ncpu", 2, "missing fields" },
	{ "cpu s=\"a\nb\"\ncpu v=", 3, "missing field value" },
	{ "cpu s=\"a\nb\" x\ncpu v=1", 1, "bad timestamp" },
	{ "a v=1 1\nb v=2 2\nc v=3 3\nd,t v=4 4\ne v=5 5\n", 4, "missing tag value" },
};

static void test_valid_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < RELAY_ARRAY_SIZE(ok_cases); i++) {
		const struct ok_case *c = &ok_cases[i];
		struct rbuf out = RBUF_INIT;
		struct lp_result res = { 99, 99 };
		struct lp_error err = { 0, "", 0 };

		int rc = lineproto_validate(c->in, strlen(c->in), STAMP, 0, &out, &res, &err);
		if (rc != 0)
			fail_msg("case %zu '%s': %s", i, c->in, err.msg);
		if (out.len != strlen(c->want) || (out.len && memcmp(out.data, c->want, out.len) != 0))
			fail_msg("case %zu '%s': got '%.*s'", i, c->in, (int)out.len,
			         out.data ? out.data : "");
		assert_int_equal(res.lines, c->lines);
		assert_int_equal(res.stamped, c->stamped);

		/* What we queue must pass again, unchanged and unstamped. */
		struct rbuf again = RBUF_INIT;
		rc = lineproto_validate(out.data, out.len, 7, 0, &again, &res, &err);
		if (rc != 0)
			fail_msg("case %zu requeue: %s", i, err.msg);
		assert_int_equal(again.len, out.len);
		if (out.len)
			assert_memory_equal(again.data, out.data, out.len);
		assert_int_equal(res.lines, c->lines);
		assert_int_equal(res.stamped, 0);
		rbuf_release(&again);
		rbuf_release(&out);
	}
}

static void test_invalid_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < RELAY_ARRAY_SIZE(bad_cases); i++) {
		const struct bad_case *c = &bad_cases[i];
		struct rbuf out = RBUF_INIT;
		struct lp_result res;
		struct lp_error err;

		rbuf_append(&out, "xyz", 3);
		int rc = lineproto_validate(c->in, strlen(c->in), STAMP, 0, &out, &res, &err);
		if (rc != -1)
			fail_msg("case %zu '%s': accepted", i, c->in);
		if (err.line != c->line)
			fail_msg("case %zu '%s': line %zu, want %zu", i, c->in, err.line, c->line);
		if (!strstr(err.msg, c->why))
			fail_msg("case %zu '%s': message '%s' lacks '%s'", i, c->in, err.msg, c->why);
		if (strncmp(err.msg, "unable to parse '", 17) != 0)
			fail_msg("case %zu: message '%s'", i, err.msg);
		assert_int_equal(out.len, 3);
		assert_memory_equal(out.data, "xyz", 3);
		rbuf_release(&out);
	}
}

/* A bad line anywhere drops the good lines before it too. */
static void test_out_restored(void **state)
{
	struct rbuf out = RBUF_INIT;
	struct lp_result res;
	struct lp_error err;
	const char *in = "cpu v=1 5\ncpu v=2\ncpu v=3 7\ncpu v=x 8\ncpu v=4\n";

	(void)state;
	rbuf_append(&out, "xyz", 3);
	assert_int_equal(lineproto_validate(in, strlen(in), STAMP, 0, &out, &res, &err), -1);
	assert_int_equal(out.len, 3);
	assert_memory_equal(out.data, "xyz", 3);
	assert_int_equal(err.line, 4);
	assert_non_null(strstr(err.msg, "invalid boolean"));
	assert_int_equal(res.lines, 0);

	/* And a good body appends after what is already there. */
	in = "cpu v=1 5\n";
	assert_int_equal(lineproto_validate(in, strlen(in), STAMP, 0, &out, &res, &err), 0);
	assert_int_equal(out.len, 3 + strlen(in));
	assert_memory_equal(out.data, "xyzcpu v=1 5\n", out.len);
	rbuf_release(&out);
}

static void test_max_line(void **state)
{
	struct rbuf out = RBUF_INIT;
	struct lp_result res;
	struct lp_error err;
	const char *in;

	(void)state;
	in = "cpu v=1 5\n"; /* 9 bytes before the '\n' */
	assert_int_equal(lineproto_validate(in, strlen(in), STAMP, 9, &out, &res, &err), 0);
	assert_int_equal(lineproto_validate(in, strlen(in), STAMP, 8, &out, &res, &err), -1);
	assert_int_equal(err.line, 1);
	assert_non_null(strstr(err.msg, "line exceeds 8 bytes"));

	/* Unlimited. */
	rbuf_reset(&out);
	assert_int_equal(lineproto_validate(in, strlen(in), STAMP, 0, &out, &res, &err), 0);

	/* The second line is too long; the limit counts leading blanks and a
	 * '\r' too. */
	rbuf_reset(&out);
	in = "a v=1\n  a v=1\n";
	assert_int_equal(lineproto_validate(in, strlen(in), STAMP, 6, &out, &res, &err), -1);
	assert_int_equal(err.line, 2);
	assert_int_equal(out.len, 0);
	in = "a v=1\r\n";
	assert_int_equal(lineproto_validate(in, strlen(in), STAMP, 5, &out, &res, &err), -1);
	rbuf_reset(&out);
	assert_int_equal(lineproto_validate(in, strlen(in), STAMP, 6, &out, &res, &err), 0);

	/* Comment lines count as well. */
	rbuf_reset(&out);
	in = "a v=1\n# a long comment\n";
	assert_int_equal(lineproto_validate(in, strlen(in), STAMP, 10, &out, &res, &err), -1);
	assert_int_equal(err.line, 2);
	assert_non_null(strstr(err.msg, "line exceeds 10 bytes"));

	/* A string with a newline is one line: its length is all of it. */
	rbuf_reset(&out);
	in = "a s=\"1\n2\" 5\nb v=1\n";
	assert_int_equal(lineproto_validate(in, strlen(in), STAMP, 10, &out, &res, &err), -1);
	assert_int_equal(err.line, 1);
	assert_int_equal(lineproto_validate(in, strlen(in), STAMP, 11, &out, &res, &err), 0);
	assert_int_equal(res.lines, 2);
	rbuf_release(&out);
}

/* InfluxDB caps series key + "#!~#" + field key at 65535 bytes. */
static void test_key_length(void **state)
{
	static const struct {
		const char *head;
		size_t fill;
		const char *tail;
		int rc;
	} cases[] = {
		{ "", 65530, " v=1", 0 },
		{ "", 65531, " v=1", -1 },
		{ "m,t=", 65520, " v=1,vvvvvvv=1", 0 },
		{ "m,t=", 65520, " v=1,vvvvvvvv=1", -1 },
		{ "m ", 65530, "=1", 0 },
		{ "m ", 65531, "=1", -1 },
	};
	struct rbuf in = RBUF_INIT, out = RBUF_INIT;
	struct lp_result res;
	struct lp_error err;

	(void)state;
	for (size_t i = 0; i < RELAY_ARRAY_SIZE(cases); i++) {
		rbuf_reset(&in);
		rbuf_append(&in, cases[i].head, strlen(cases[i].head));
		for (size_t k = 0; k < cases[i].fill; k++)
			rbuf_appendc(&in, 'a');
		rbuf_append(&in, cases[i].tail, strlen(cases[i].tail));
		rbuf_reset(&out);
		int rc = lineproto_validate(in.data, in.len, STAMP, 0, &out, &res, &err);
		if (rc != cases[i].rc)
			fail_msg("key length case %zu: rc %d %s", i, rc, rc ? err.msg : "");
		if (rc)
			assert_non_null(strstr(err.msg, "max key length exceeded"));
	}
	rbuf_release(&in);
	rbuf_release(&out);
}

/*
 * Repeated tag keys on lines with many tags: in order, out of order, and
 * the repeat near either end. Whatever path finds them, out is untouched.
 */
static void test_many_tags(void **state)
{
	static const struct {
		int order;     /* 0 ascending, 1 descending, 2 shuffled */
		int dup_a, dup_b; /* tag indexes made equal, or -1 */
	} cases[] = {
		{ 0, -1, -1 }, { 1, -1, -1 }, { 2, -1, -1 },
		{ 0, 98, 99 }, { 1, 0, 99 }, { 2, 0, 99 }, { 2, 50, 80 },
		{ 2, 40, 41 }, { 0, 3, 4 }, { 2, 31, 32 },
	};
	struct rbuf in = RBUF_INIT, out = RBUF_INIT;
	struct lp_result res;
	struct lp_error err;

	(void)state;
	for (size_t c = 0; c < RELAY_ARRAY_SIZE(cases); c++) {
		rbuf_reset(&in);
		rbuf_append(&in, "m", 1);
		for (int i = 0; i < 100; i++) {
			int k = cases[c].order == 0 ? i : cases[c].order == 1 ? 99 - i : (i * 37) % 100;
			if (i == cases[c].dup_b)
				k = cases[c].order == 0 ? cases[c].dup_a :
				    cases[c].order == 1 ? 99 - cases[c].dup_a : (cases[c].dup_a * 37) % 100;
			rbuf_appendf(&in, ",k%03d=v", k);
		}
		rbuf_append(&in, " v=1 5\n", 7);
		rbuf_reset(&out);
		rbuf_append(&out, "xyz", 3);
		int rc = lineproto_validate(in.data, in.len, STAMP, 0, &out, &res, &err);
		if (cases[c].dup_a < 0) {
			if (rc != 0)
				fail_msg("tags case %zu: %s", c, err.msg);
			assert_int_equal(out.len, 3 + in.len);
			assert_memory_equal(out.data + 3, in.data, in.len);
		} else {
			if (rc != -1)
				fail_msg("tags case %zu: duplicate accepted", c);
			assert_non_null(strstr(err.msg, "duplicate tags"));
			assert_int_equal(out.len, 3);
			assert_memory_equal(out.data, "xyz", 3);
		}
	}
	rbuf_release(&in);
	rbuf_release(&out);
}

/*
 * Floats at DBL_MAX's order of magnitude, written out in full: the value
 * halfway between DBL_MAX and the next power of two rounds to infinity, one
 * below it does not. Long runs of digits past the cut-off still count.
 */
static void test_float_edge(void **state)
{
	static const char half[] =
		"17976931348623158079372897140530341507993413271003782693617377898044496"
		"82927647509466490179775872070963302864166928879109465555478519404026306"
		"57488671505820681908902000708383676273854845817711531764475730270069855"
		"57136695962284291481986083493647529271907416844436551070434271155969950"
		"8093042880177904174497792";
	struct {
		const char *head; /* digits, or NULL for half */
		int last;         /* replaces the last digit of half when >= 0 */
		const char *tail;
		int ok;
	} cases[] = {
		{ NULL, '1', "", 1 },
		{ NULL, -1, "", 0 },
		{ NULL, '1', ".999999999999999999999999999999999999999999999999999999999999"
		             "9999999999999999999999999999999999999999999999999999999999999"
		             "9999999999999999999999999999999999999999999999999999999999999", 1 },
		{ NULL, -1, ".000000000000000000000000000000000000000000000000000000000000"
		            "0000000000000000000000000000000000000000000000000000000000000"
		            "0000000000000000000000000000000000000000000000000000000000001", 0 },
		{ NULL, -1, "e-1", 1 },
		{ "-", -1, "", 0 },
		{ "0.17976931348623157e309", -1, NULL, 1 },
		{ "0.17976931348623159e309", -1, NULL, 0 },
		{ "0.000000000000000000000000000000000000000000000001e356", -1, NULL, 1 },
		{ "0.000000000000000000000000000000000000000000000002e357", -1, NULL, 0 },
	};
	struct rbuf in = RBUF_INIT, out = RBUF_INIT;
	struct lp_result res;
	struct lp_error err;

	(void)state;
	for (size_t i = 0; i < RELAY_ARRAY_SIZE(cases); i++) {
		rbuf_reset(&in);
		rbuf_append(&in, "m v=", 4);
		if (cases[i].head)
			rbuf_append(&in, cases[i].head, strlen(cases[i].head));
		if (cases[i].tail) {
			rbuf_append(&in, half, sizeof(half) - 2);
			rbuf_appendc(&in, (char)(cases[i].last >= 0 ? cases[i].last : half[sizeof(half) - 2]));
			rbuf_append(&in, cases[i].tail, strlen(cases[i].tail));
		}
		int rc = lineproto_validate(in.data, in.len, STAMP, 0, &out, &res, &err);
		if ((rc == 0) != cases[i].ok)
			fail_msg("float case %zu: rc %d %s", i, rc, rc ? err.msg : "");
		if (rc)
			assert_non_null(strstr(err.msg, "out of range"));
	}

	/* 1e308 and 2e308 spelled with 309 digits; 400 digits is too many. */
	for (int lead = 1; lead <= 2; lead++) {
		rbuf_reset(&in);
		rbuf_appendf(&in, "m v=%d", lead);
		for (int i = 0; i < 308; i++)
			rbuf_appendc(&in, '0');
		int rc = lineproto_validate(in.data, in.len, STAMP, 0, &out, &res, &err);
		assert_int_equal(rc, lead == 1 ? 0 : -1);
	}
	rbuf_reset(&in);
	rbuf_append(&in, "m v=", 4);
	for (int i = 0; i < 400; i++)
		rbuf_appendc(&in, i ? '0' : '1');
	assert_int_equal(lineproto_validate(in.data, in.len, STAMP, 0, &out, &res, &err), -1);
	/* Leading zeros do not count. */
	rbuf_reset(&in);
	rbuf_append(&in, "m v=", 4);
	for (int i = 0; i < 400; i++)
		rbuf_appendc(&in, i == 399 ? '7' : '0');
	assert_int_equal(lineproto_validate(in.data, in.len, STAMP, 0, &out, &res, &err), 0);
	rbuf_release(&in);
	rbuf_release(&out);
}

static void test_stamp_values(void **state)
{
	struct rbuf out = RBUF_INIT;
	struct lp_result res;
	struct lp_error err;

	(void)state;
	assert_int_equal(lineproto_validate("m v=1", 5, -5, 0, &out, &res, &err), 0);
	assert_int_equal(out.len, 9);
	assert_memory_equal(out.data, "m v=1 -5\n", 9);
	rbuf_reset(&out);
	assert_int_equal(lineproto_validate("m v=1\nm v=2", 11, INT64_MIN, 0, &out, &res, &err), 0);
	assert_string_equal(rbuf_cstr(&out),
	                    "m v=1 -9223372036854775808\nm v=2 -9223372036854775808\n");
	assert_int_equal(res.stamped, 2);
	rbuf_release(&out);
}

/* Bytes the table cannot hold: NUL inside a line, and a NULL body. */
static void test_odd_bytes(void **state)
{
	struct rbuf out = RBUF_INIT;
	struct lp_result res;
	struct lp_error err;
	static const char nul_ok[] = "c\0pu,t=\0 s=\"\0\" 5";
	static const char nul_bad[] = "c\0pu v=\0";

	(void)state;
	assert_int_equal(lineproto_validate(nul_ok, sizeof(nul_ok) - 1, STAMP, 0, &out, &res, &err), 0);
	assert_int_equal(out.len, sizeof(nul_ok));
	assert_memory_equal(out.data, nul_ok, sizeof(nul_ok) - 1);
	assert_int_equal(out.data[out.len - 1], '\n');

	rbuf_reset(&out);
	assert_int_equal(lineproto_validate(nul_bad, sizeof(nul_bad) - 1, STAMP, 0, &out, &res, &err), -1);
	/* The NUL is shown as '?', so the message is not cut short. */
	assert_string_equal(err.msg, "unable to parse 'c?pu v=?': invalid boolean");

	assert_int_equal(lineproto_validate(NULL, 0, STAMP, 0, &out, &res, &err), 0);
	assert_int_equal(res.lines, 0);
	assert_int_equal(out.len, 0);
	rbuf_release(&out);
}

static void test_error_excerpt(void **state)
{
	struct rbuf out = RBUF_INIT;
	struct lp_result res;
	struct lp_error err;
	char in[300];

	(void)state;
	/* Long lines are cut at 60 bytes, marked with "...". */
	memset(in, 'a', sizeof(in));
	memcpy(in + sizeof(in) - 3, " v=", 3);
	assert_int_equal(lineproto_validate(in, sizeof(in), STAMP, 0, &out, &res, &err), -1);
	char want[200];
	snprintf(want, sizeof(want), "unable to parse '%.60s...': missing field value", in);
	assert_string_equal(err.msg, want);

	/* The excerpt starts after leading blanks, stops at the line end and
	 * hides control bytes. */
	const char *s = "  \tcpu,h=\x01 v=\r\nnext v=1";
	assert_int_equal(lineproto_validate(s, strlen(s), STAMP, 0, &out, &res, &err), -1);
	assert_string_equal(err.msg, "unable to parse 'cpu,h=? v=': missing field value");

	/* UTF-8 is kept whole; broken UTF-8 becomes '?'. */
	s = "\xc2\xb5 v=\xff";
	assert_int_equal(lineproto_validate(s, strlen(s), STAMP, 0, &out, &res, &err), -1);
	assert_string_equal(err.msg, "unable to parse '\xc2\xb5 v=?': invalid boolean");

	/* A multi-byte character is not split at the cut. */
	memset(in, 'a', 59);
	memcpy(in + 59, "\xc3\xa9 v=", 5);
	assert_int_equal(lineproto_validate(in, 64, STAMP, 0, &out, &res, &err), -1);
	snprintf(want, sizeof(want), "unable to parse '%.59s...': missing field value", in);
	assert_string_equal(err.msg, want);
	rbuf_release(&out);
}

/* res and err are optional. */
static void test_null_outputs(void **state)
{
	struct rbuf out = RBUF_INIT;

	(void)state;
	assert_int_equal(lineproto_validate("m v=1", 5, 1, 0, &out, NULL, NULL), 0);
	assert_int_equal(lineproto_validate("m v=", 4, 1, 0, &out, NULL, NULL), -1);
	assert_int_equal(out.len, 8); /* "m v=1 1\n" */
	rbuf_release(&out);
}

/* A body bigger than one rbuf growth step, mixing stamped and not. */
static void test_many_lines(void **state)
{
	struct rbuf in = RBUF_INIT, out = RBUF_INIT;
	struct lp_result res;
	struct lp_error err;

	(void)state;
	for (int i = 0; i < 10000; i++) {
		if (i % 2)
			rbuf_appendf(&in, "cpu,host=h%d w=%di\n", i, i);
		else
			rbuf_appendf(&in, "cpu,host=h%d v=%d.5 %d\n", i, i, i);
	}
	assert_int_equal(lineproto_validate(in.data, in.len, 42, 0, &out, &res, &err), 0);
	assert_int_equal(res.lines, 10000);
	assert_int_equal(res.stamped, 5000);
	assert_int_equal(out.len, in.len + 5000 * 3);
	rbuf_appendf(&in, "bad\n");
	assert_int_equal(lineproto_validate(in.data, in.len, 42, 0, &out, &res, &err), -1);
	assert_int_equal(err.line, 10001);
	rbuf_release(&in);
	rbuf_release(&out);
}

struct prec_case {
	const char *s;
	int rc;
	enum lp_precision p;
};

static void test_precision_parse(void **state)
{
	static const struct prec_case cases[] = {
		{ "", 0, LP_PRECISION_NS },
		{ "n", 0, LP_PRECISION_NS },
		{ "ns", 0, LP_PRECISION_NS },
		{ "u", 0, LP_PRECISION_US },
		{ "us", 0, LP_PRECISION_US },
		{ "\xc2\xb5", 0, LP_PRECISION_US },
		{ "\xc2\xb5s", 0, LP_PRECISION_US },
		{ "ms", 0, LP_PRECISION_MS },
		{ "s", 0, LP_PRECISION_S },
		{ "m", 0, LP_PRECISION_M },
		{ "h", 0, LP_PRECISION_H },
		{ "x", -1, 0 },
		{ "NS", -1, 0 },
		{ "ns ", -1, 0 },
		{ "mss", -1, 0 },
		{ "\xc2", -1, 0 },
		{ "\xb5", -1, 0 },
		{ "d", -1, 0 },
		{ "sec", -1, 0 },
	};
	enum lp_precision p;

	(void)state;
	for (size_t i = 0; i < RELAY_ARRAY_SIZE(cases); i++) {
		p = (enum lp_precision)99;
		int rc = lp_precision_parse(cases[i].s, &p);
		if (rc != cases[i].rc)
			fail_msg("precision '%s': rc %d", cases[i].s, rc);
		if (rc == 0 && p != cases[i].p)
			fail_msg("precision '%s': got %d", cases[i].s, (int)p);
	}
	p = LP_PRECISION_H;
	assert_int_equal(lp_precision_parse(NULL, &p), 0);
	assert_int_equal(p, LP_PRECISION_NS);
}

static void test_precision_name(void **state)
{
	static const char *const names[] = { "ns", "u", "ms", "s", "m", "h" };
	enum lp_precision p;

	(void)state;
	assert_string_equal(lp_precision_name(LP_PRECISION_NS), "ns");
	assert_string_equal(lp_precision_name(LP_PRECISION_US), "u");
	assert_string_equal(lp_precision_name(LP_PRECISION_H), "h");
	/* Every name parses back to its precision. */
	for (int i = LP_PRECISION_NS; i <= LP_PRECISION_H; i++) {
		assert_string_equal(lp_precision_name((enum lp_precision)i), names[i]);
		assert_int_equal(lp_precision_parse(names[i], &p), 0);
		assert_int_equal(p, i);
	}
}

static void test_ns_to_precision(void **state)
{
	const int64_t t = INT64_C(1700000123456789012);

	(void)state;
	assert_int_equal(lp_ns_to_precision(t, LP_PRECISION_NS), t);
	assert_int_equal(lp_ns_to_precision(t, LP_PRECISION_US), INT64_C(1700000123456789));
	assert_int_equal(lp_ns_to_precision(t, LP_PRECISION_MS), INT64_C(1700000123456));
	assert_int_equal(lp_ns_to_precision(t, LP_PRECISION_S), INT64_C(1700000123));
	assert_int_equal(lp_ns_to_precision(t, LP_PRECISION_M), INT64_C(28333335));
	assert_int_equal(lp_ns_to_precision(t, LP_PRECISION_H), INT64_C(472222));
	assert_int_equal(lp_ns_to_precision(0, LP_PRECISION_H), 0);
	assert_int_equal(lp_ns_to_precision(INT64_C(59999999999), LP_PRECISION_M), 0);
	assert_int_equal(lp_ns_to_precision(INT64_C(60000000000), LP_PRECISION_M), 1);
	assert_int_equal(lp_ns_to_precision(INT64_C(-1500), LP_PRECISION_US), -1);
	assert_int_equal(lp_ns_to_precision(INT64_MAX, LP_PRECISION_S), INT64_C(9223372036));
}

/* lp_limits: timestamps that overflow ns at their precision, unsigned
 * integers for InfluxDB 1.x, and the cap on the queued form. */
static void test_limits(void **state)
{
	(void)state;
	struct rbuf out = RBUF_INIT;
	struct lp_result res;
	struct lp_error err;
	static const struct {
		enum lp_precision p;
		const char *ts;
		int ok;
	} t[] = {
		{ LP_PRECISION_H, "2562047", 1 },        { LP_PRECISION_H, "2562048", 0 },
		{ LP_PRECISION_H, "-2562047", 1 },       { LP_PRECISION_H, "-2562048", 0 },
		{ LP_PRECISION_H, "1700000000", 0 },     { LP_PRECISION_M, "153722867", 1 },
		{ LP_PRECISION_M, "153722868", 0 },      { LP_PRECISION_S, "9223372036", 1 },
		{ LP_PRECISION_S, "9223372037", 0 },     { LP_PRECISION_MS, "9223372036854", 1 },
		{ LP_PRECISION_MS, "9223372036855", 0 }, { LP_PRECISION_US, "9223372036854775", 1 },
		{ LP_PRECISION_US, "9223372036854776", 0 }, { LP_PRECISION_NS, "9223372036854775806", 1 },
		{ LP_PRECISION_NS, "9223372036854775807", 0 }, { LP_PRECISION_H, "0000000000000000000001", 1 },
	};
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		char in[64];
		snprintf(in, sizeof(in), "m v=1 1\nm v=2 %s\n", t[i].ts);
		struct lp_limits lim = { .precision = t[i].p };
		rbuf_reset(&out);
		int rc = lineproto_validate_limits(in, strlen(in), 5, &lim, &out, &res, &err);
		if ((rc == 0) != t[i].ok)
			fail_msg("%s at %s: rc %d (%s)", t[i].ts, lp_precision_name(t[i].p), rc, err.msg);
		if (!t[i].ok) {
			assert_int_equal(err.line, 2);
			assert_non_null(strstr(err.msg, "bad timestamp (outside"));
			assert_int_equal(out.len, 0);
		}
	}

	struct lp_limits v1 = { .flags = LP_F_NO_UNSIGNED };
	rbuf_reset(&out);
	assert_int_equal(lineproto_validate_limits("m a=1i\nm b=1u\n", 14, 5, &v1, &out, &res, &err), -1);
	assert_int_equal(err.line, 2);
	assert_non_null(strstr(err.msg, "unsigned integers are refused"));
	assert_int_equal(lineproto_validate_limits("m b=1u\n", 7, 5, NULL, &out, &res, &err), 0);

	/* max_out: "m v=1 5\n" is 8 bytes; three fit in 24, not in 23 */
	struct lp_limits cap = { .max_out = 24 };
	rbuf_reset(&out);
	assert_int_equal(lineproto_validate_limits("m v=1\nm v=2\nm v=3\n", 18, 5, &cap, &out, &res, &err), 0);
	assert_int_equal(out.len, 24);
	cap.max_out = 23;
	rbuf_reset(&out);
	assert_int_equal(lineproto_validate_limits("m v=1\nm v=2\nm v=3\n", 18, 5, &cap, &out, &res, &err), -1);
	assert_int_equal(err.too_big, 1);
	assert_int_equal(err.line, 3);
	assert_int_equal(out.len, 0);
	rbuf_release(&out);
}

/* What InfluxDB refuses of a whole request: one field of a measurement
 * with two types, and names that are not UTF-8. */
static void test_types_and_names(void **state)
{
	(void)state;
	struct rbuf out = RBUF_INIT;
	struct lp_result res;
	struct lp_error err;
	static const struct {
		const char *in;
		size_t line;       /* 0: accepted */
		const char *why;
	} t[] = {
		{ "m f=1,f=\"x\" 1\n", 1, "field type conflict (\"f\" is float earlier in this request, string here)" },
		{ "m f=1 1\nm f=\"x\" 2\n", 2, "field type conflict" },
		{ "m f=1i 1\nm f=1 2\n", 2, "is integer earlier" },
		{ "m f=1u 1\nm f=1i 2\n", 2, "is unsigned earlier" },
		{ "m f=t 1\nm,t=a f=1 2\n", 2, "is boolean earlier" },
		/* the same field of another measurement, or the same type: fine */
		{ "m f=1 1\nn f=\"x\" 2\nm f=2 3\nm,t=a f=3\n", 0, NULL },
		{ "m f=1i,f=2i 1\n", 0, NULL },
		/* shards last whole hours: another hour may be another shard */
		{ "m f=1 1\nm f=\"x\" 7200000000000\n", 0, NULL },
		{ "m f=1 3599999999999\nm f=\"x\" 3600000000000\n", 0, NULL },
		{ "m f=1 -1\nm f=\"x\" 0\n", 0, NULL },
		{ "m f=1 3600000000000\nm f=\"x\" 7199999999999\n", 2, "field type conflict" },
		/* a line without a time is in the hour of the stamp (5 ns) */
		{ "m f=1 1\nm f=2i\n", 2, "is float earlier" },
		{ "m\xff f=1 1\n", 1, "invalid measurement (not UTF-8)" },
		{ "m f\xc3\x28=1 1\n", 1, "invalid field key (not UTF-8)" },
		{ "m\xed\xa0\x80 f=1 1\n", 1, "not UTF-8" }, /* a surrogate */
		{ "\xc3\xa9t\xc3\xa9,t=\xff v\xc3\xa9=\"\xff\" 1\n", 0, NULL }, /* tags and strings may hold any byte */
	};
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		rbuf_reset(&out);
		int rc = lineproto_validate(t[i].in, strlen(t[i].in), 5, 0, &out, &res, &err);
		if (t[i].line == 0) {
			if (rc != 0)
				fail_msg("case %zu refused: %s", i, err.msg);
			continue;
		}
		if (rc != -1)
			fail_msg("case %zu accepted", i);
		assert_int_equal(err.line, t[i].line);
		if (!strstr(err.msg, t[i].why))
			fail_msg("case %zu: %s", i, err.msg);
		assert_int_equal(out.len, 0);
	}
	/* Many fields: the table grows past its stack slots. */
	struct rbuf in = RBUF_INIT;
	for (int i = 0; i < 300; i++)
		rbuf_appendf(&in, "m f%d=%di 1\n", i, i);
	rbuf_appendf(&in, "m f7=7 2\n");
	assert_int_equal(lineproto_validate(in.data, in.len, 5, 0, &out, &res, &err), -1);
	assert_int_equal(err.line, 301);
	rbuf_release(&in);
	rbuf_release(&out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_valid_table),
		cmocka_unit_test(test_invalid_table),
		cmocka_unit_test(test_out_restored),
		cmocka_unit_test(test_max_line),
		cmocka_unit_test(test_key_length),
		cmocka_unit_test(test_many_tags),
		cmocka_unit_test(test_float_edge),
		cmocka_unit_test(test_stamp_values),
		cmocka_unit_test(test_odd_bytes),
		cmocka_unit_test(test_error_excerpt),
		cmocka_unit_test(test_null_outputs),
		cmocka_unit_test(test_many_lines),
		cmocka_unit_test(test_precision_parse),
		cmocka_unit_test(test_precision_name),
		cmocka_unit_test(test_ns_to_precision),
		cmocka_unit_test(test_limits),
		cmocka_unit_test(test_types_and_names),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
