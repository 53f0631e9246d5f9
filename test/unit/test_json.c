/* The JSON leaf over jansson: any bytes make valid JSON, the text is
 * ASCII-only and compact, parsing refuses what is not exactly one value. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "relay/base/json.h"

static void test_string_escapes(void **state)
{
	(void)state;
	struct rbuf b = RBUF_INIT;
	rjson_append_string(&b, "a\"b\\c\nd\x01", 8);
	assert_string_equal(rbuf_cstr(&b), "\"a\\\"b\\\\c\\nd\\u0001\"");
	rbuf_reset(&b);
	/* DEL, C1 (CSI), bidi controls escaped; UTF-8 as escapes (ASCII-only text, upper-case hex as jansson writes them);
	 * a byte that is not UTF-8 is U+FFFD, an encoded surrogate three. */
	static const char in[] = "\x7f|\xc2\x9b[31m|\xe2\x80\xae|\xc3\xa9\xe2\x82\xac|\xff\xc3|\xed\xa0\x80|\xf0\x9f\x98\x80";
	rjson_append_string(&b, in, sizeof(in) - 1);
	assert_string_equal(rbuf_cstr(&b), "\"\\u007F|\\u009B[31m|\\u202E|\\u00E9\\u20AC|\\uFFFD\\uFFFD|"
	                                   "\\uFFFD\\uFFFD\\uFFFD|\\uD83D\\uDE00\"");
	rbuf_reset(&b);
	/* NUL inside is kept, as an escape. */
	rjson_append_string(&b, "a\0b", 3);
	assert_string_equal(rbuf_cstr(&b), "\"a\\u0000b\"");
	rbuf_reset(&b);
	rjson_append_new(&b, rjson_cstr(NULL));
	assert_string_equal(rbuf_cstr(&b), "\"\"");
	rbuf_release(&b);
}

static void test_object_order_and_round_trip(void **state)
{
	(void)state;
	struct rbuf b = RBUF_INIT;
	json_t *o = json_object();
	json_object_set_new(o, "z", json_integer(-3));
	json_object_set_new(o, "a", rjson_cstr("x\xffy"));
	json_object_set_new(o, "m", json_real(0.5));
	rjson_append_new(&b, o);
	/* keys in insertion order, compact */
	assert_string_equal(rbuf_cstr(&b), "{\"z\":-3,\"a\":\"x\\uFFFDy\",\"m\":0.5}");
	char err[160];
	json_t *v = rjson_parse(b.data, b.len, err, sizeof(err));
	assert_non_null(v);
	assert_int_equal(rjson_get_int(v, "z", 0), -3);
	assert_string_equal(rjson_get_str(v, "a", NULL), "x\xef\xbf\xbdy");
	assert_true(rjson_get_real(v, "m", 0) == 0.5);
	/* missing or of another type: the default */
	assert_int_equal(rjson_get_int(v, "a", 7), 7);
	assert_string_equal(rjson_get_str(v, "nope", "d"), "d");
	json_decref(v);
	rbuf_release(&b);
}

static void test_parse_refuses(void **state)
{
	(void)state;
	char err[160];
	static const char *bad[] = {
		"", "{", "{\"a\":1} x", "{\"a\":1,\"a\":2}", "\"\xff\"", "\"a\\u0000b\"x", "[1,]", "nan",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		json_t *v = rjson_parse(bad[i], strlen(bad[i]), err, sizeof(err));
		if (v)
			fail_msg("accepted %s", bad[i]);
		assert_non_null(strstr(err, "line "));
	}
	json_t *v = rjson_parse(" 42 \n", 5, err, sizeof(err));
	assert_non_null(v);
	assert_true(json_is_integer(v));
	json_decref(v);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_string_escapes),
		cmocka_unit_test(test_object_order_and_round_trip),
		cmocka_unit_test(test_parse_refuses),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
