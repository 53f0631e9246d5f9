/*
 * util: small helpers shared by the relay modules: a growable byte buffer,
 * allocation that aborts on OOM, parsing of sizes, durations and addresses,
 * and clocks. No I/O, no libuv: safe for leaves like lineproto and config.
 */
#ifndef RELAY_UTIL_H
#define RELAY_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdarg.h>

#define RELAY_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define relay_container_of(ptr, type, member) \
	((type *)((char *)(ptr) - offsetof(type, member)))

/* Abort with a message: used for invariants and out-of-memory (we decide
 * once, like h2o_fatal, rather than threading ENOMEM through callbacks). */
void relay_fatal(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
#define relay_assert(e) \
	((e) ? (void)0 : relay_fatal("assertion failed: %s (%s:%d)", #e, __FILE__, __LINE__))

/* malloc/realloc/strdup that never return NULL (abort on OOM). */
void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);

/*
 * struct rbuf: a growable byte buffer. data is NULL until the first append;
 * the buffer owns data; rbuf_release frees it and leaves an empty buffer.
 * Appends abort on OOM. data is not NUL-terminated unless rbuf_cstr is used.
 */
struct rbuf {
	char *data;
	size_t len;
	size_t cap;
};
#define RBUF_INIT { NULL, 0, 0 }
void rbuf_reserve(struct rbuf *b, size_t extra);
void rbuf_append(struct rbuf *b, const void *p, size_t n);
void rbuf_appendc(struct rbuf *b, char c);
void rbuf_appendf(struct rbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Append the header line "Authorization: Basic <base64 of user:password>\r\n"
 * (user is ulen bytes; password NUL-terminated, NULL = ""). The scratch
 * copy of the password is cleared before it is freed. Aborts on allocation
 * failure, as every rbuf function. */
void rbuf_append_basic_auth(struct rbuf *b, const char *user, size_t ulen, const char *password);
/* Ensures a NUL after len (not counted in len) and returns data. */
const char *rbuf_cstr(struct rbuf *b);
void rbuf_reset(struct rbuf *b); /* len = 0, keeps the allocation */
void rbuf_release(struct rbuf *b);

/*
 * Parse "25MiB", "1GB", "4096", "512k" into bytes. Suffixes: B, k/K/KB/KiB,
 * M/MB/MiB, G/GB/GiB, T/TB/TiB (decimal for KB/MB.., binary for KiB/MiB..
 * and for single letters). Returns 0, or -1 on a malformed or overflowing
 * value.
 */
int parse_size(const char *s, uint64_t *out);
/* Parse "250ms", "10s", "5m", "2h", "7d" (or a bare number of seconds) into
 * milliseconds. Returns 0 or -1. */
int parse_duration_ms(const char *s, uint64_t *out);

/*
 * Parse "HOST:PORT" where HOST is an IPv4 literal, "[IPv6]" or "localhost"
 * (taken as 127.0.0.1). *host is a malloc'd literal address the caller
 * frees. Returns 0, or -1 with a reason in err.
 */
int parse_hostport(const char *s, char **host, uint16_t *port, char *err, size_t errlen);

/* Wall clock in nanoseconds since the epoch (CLOCK_REALTIME). */
int64_t now_realtime_ns(void);
/* Monotonic clock in nanoseconds. */
uint64_t now_mono_ns(void);

/* The value of hex digit c (0-9, a-f, A-F), or -1. */
int hex_value(char c);

/* Percent-decode src[0..len) ('+' is a space) into a new NUL-terminated
 * string (caller frees). Returns NULL on a malformed escape. */
char *url_decode(const char *src, size_t len);

/* The length (2 to 4) of the valid UTF-8 sequence of a character above
 * U+007F at s[0..n), with the character in *cp; 0 if there is none
 * (ASCII, a stray byte, an overlong form, a surrogate, beyond U+10FFFF). */
size_t utf8_seq(const unsigned char *s, size_t n, uint32_t *cp);

/* 1 for characters a terminal or a reader must not get raw: C0 and C1
 * controls, DEL, and the bidirectional and line-separator controls that
 * reorder or break text (U+061C, U+200E/F, U+2028..202E, U+2066..2069). */
int unicode_unsafe(uint32_t cp);

/* path made absolute against dir: path itself when it is absolute or dir
 * is NULL, else dir/path without the "./" a user may start path with.
 * Returns a string the caller frees (aborts on OOM, as xmalloc). */
char *relay_path_join(const char *dir, const char *path);

/* The noun of a count in a message, so that no message says "1 points":
 * relay_plural(n, "batch", "batches") is one when n == 1, else many;
 * relay_s(n) is "" when n == 1, else "s" ("%u attempt%s"). Both return
 * one of the static strings given (nothing is allocated). */
static inline const char *relay_plural(uint64_t n, const char *one, const char *many)
{
	return n == 1 ? one : many;
}
static inline const char *relay_s(uint64_t n)
{
	return n == 1 ? "" : "s";
}

#endif
