/*
 * json: relayd's leaf over jansson. Why jansson rather than json-c or
 * cJSON: docs/architecture.md, "JSON". In short: it refuses what is not
 * JSON (invalid UTF-8, trailing garbage, duplicate-free parsing of
 * numbers without loss), keeps the order of an object's keys, writes
 * ASCII-only text on request, and is packaged and maintained in Debian.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relay/base/json.h"

/* Make jansson allocate through relayd's aborting allocator, once: a JSON
 * reply that cannot be built is a process out of memory, like any other
 * allocation in relayd, not an error to handle at each call. */
static void *json_alloc(size_t n)
{
	return xmalloc(n ? n : 1);
}

static void json_setup_once(void)
{
	json_set_alloc_funcs(json_alloc, free);
}

static void json_setup(void)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	pthread_once(&once, json_setup_once);
}

json_t *rjson_string(const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0;
	uint32_t cp;
	size_t k;
	json_setup();
	/* Fast path: already UTF-8. */
	while (i < n) {
		if (p[i] < 0x80) {
			i++;
		} else if ((k = utf8_seq(p + i, n - i, &cp))) {
			i += k;
		} else {
			break;
		}
	}
	if (i == n)
		return json_stringn_nocheck(n ? s : "", n);
	/* Some byte is not UTF-8: copy, putting U+FFFD (EF BF BD) for each. */
	struct rbuf b = RBUF_INIT;
	rbuf_append(&b, s, i);
	while (i < n) {
		if (p[i] < 0x80) {
			rbuf_appendc(&b, (char)p[i++]);
		} else if ((k = utf8_seq(p + i, n - i, &cp))) {
			rbuf_append(&b, p + i, k);
			i += k;
		} else {
			rbuf_append(&b, "\xef\xbf\xbd", 3);
			i++;
		}
	}
	json_t *v = json_stringn_nocheck(b.data, b.len);
	rbuf_release(&b);
	return v;
}

json_t *rjson_cstr(const char *s)
{
	return rjson_string(s, s ? strlen(s) : 0);
}

/* jansson escapes every control but DEL, which a terminal may act on; the
 * text is ASCII-only, so a DEL byte can only be inside a string, where
 * \u007F is the same character. */
static int append_cb(const char *buf, size_t n, void *data)
{
	struct rbuf *b = data;
	const char *del;
	while (n && (del = memchr(buf, 0x7F, n))) {
		rbuf_append(b, buf, (size_t)(del - buf));
		rbuf_append(b, "\\u007F", 6);
		n -= (size_t)(del - buf) + 1;
		buf = del + 1;
	}
	rbuf_append(b, buf, n);
	return 0;
}

void rjson_append(struct rbuf *b, const json_t *v)
{
	json_setup();
	/* JSON_ENCODE_ANY: a bare string or number is a value too.
	 * JSON_REAL_PRECISION(15): 0.1 is written 0.1, not jansson's default
	 * of 17 digits (0.10000000000000001); every real relayd writes is a
	 * rate or a ratio, where 15 digits are more than exact. */
	json_dump_callback(v, append_cb, b,
	                   JSON_COMPACT | JSON_ENSURE_ASCII | JSON_ENCODE_ANY | JSON_REAL_PRECISION(15));
}

void rjson_append_new(struct rbuf *b, json_t *v)
{
	rjson_append(b, v);
	json_decref(v);
}

void rjson_append_string(struct rbuf *b, const char *s, size_t n)
{
	rjson_append_new(b, rjson_string(s, n));
}

json_t *rjson_parse(const char *s, size_t n, char *err, size_t errlen)
{
	json_error_t e;
	json_setup();
	/* JSON_DECODE_ANY: the control channel's replies may be bare values;
	 * JSON_REJECT_DUPLICATES: two values for one key is an error, not a
	 * silent choice of one. */
	json_t *v = json_loadb(s, n, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &e);
	if (!v && err && errlen)
		snprintf(err, errlen, "line %d, column %d: %s", e.line, e.column, e.text);
	return v;
}

const char *rjson_get_str(const json_t *obj, const char *key, const char *dflt)
{
	const json_t *v = json_object_get(obj, key);
	return json_is_string(v) ? json_string_value(v) : dflt;
}

int64_t rjson_get_int(const json_t *obj, const char *key, int64_t dflt)
{
	const json_t *v = json_object_get(obj, key);
	return json_is_integer(v) ? (int64_t)json_integer_value(v) : dflt;
}

double rjson_get_real(const json_t *obj, const char *key, double dflt)
{
	const json_t *v = json_object_get(obj, key);
	return json_is_number(v) ? json_number_value(v) : dflt;
}
