/*
 * json: relayd's thin leaf over jansson (docs/architecture.md, "JSON").
 * Every JSON relayd writes or reads goes through here, so that escaping and
 * parsing are written once, by a library: /health, the control channel's
 * status payload, relayctl's --json views and the error bodies of the door.
 *
 * What the leaf adds to jansson:
 *   - any bytes make a valid JSON string: a byte that is not part of a
 *     UTF-8 sequence becomes U+FFFD (jansson refuses such a string);
 *   - text is compact and ASCII-only (JSON_ENSURE_ASCII, and DEL escaped
 *     too): every control, C1, bidi override and line separator is an
 *     escape, so a JSON line printed to a terminal or a log cannot act on it;
 *   - output appends to a struct rbuf.
 *
 * Values are jansson's json_t with its reference counting: a function that
 * returns a json_t gives the caller one reference (json_decref it); the
 * jansson calls ending in _new (json_object_set_new, json_array_append_new)
 * take the caller's reference. Allocation failure aborts, as everywhere in
 * relayd (relay/base/util.h): no function here returns NULL for lack of
 * memory.
 */
#ifndef RELAY_JSON_H
#define RELAY_JSON_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "relay/base/util.h"

/* A JSON string holding s[0..n) (s may hold any bytes, NUL included; bytes
 * that are not UTF-8 become U+FFFD). s may be NULL when n is 0. */
json_t *rjson_string(const char *s, size_t n);

/* rjson_string of a C string; NULL is the empty string. */
json_t *rjson_cstr(const char *s);

/* Append v as compact ASCII-only JSON to b. v is borrowed. */
void rjson_append(struct rbuf *b, const json_t *v);

/* Append v to b and drop the caller's reference to v. */
void rjson_append_new(struct rbuf *b, json_t *v);

/* Append the JSON string of s[0..n) to b (rjson_string, then appended). */
void rjson_append_string(struct rbuf *b, const char *s, size_t n);

/*
 * Parse exactly one JSON value from s[0..n) (nothing but white space after
 * it). Returns the value (the caller owns one reference), or NULL with a
 * message (line, column and what is wrong) in err[0..errlen) when s is not
 * JSON, when a string in it is not UTF-8 or holds NUL, or when it nests
 * deeper than jansson allows.
 */
json_t *rjson_parse(const char *s, size_t n, char *err, size_t errlen);

/* Typed reads of obj[key], with a default when the key is missing or of
 * another type. The string returned by rjson_get_str is owned by obj. */
const char *rjson_get_str(const json_t *obj, const char *key, const char *dflt);
int64_t rjson_get_int(const json_t *obj, const char *key, int64_t dflt);
double rjson_get_real(const json_t *obj, const char *key, double dflt);

#endif
