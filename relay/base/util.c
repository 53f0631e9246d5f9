/*
 * util: buffers, allocation, parsing of sizes/durations/addresses, clocks.
 * Never does I/O beyond writing a fatal message to stderr.
 */
#include "relay/base/util.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void relay_fatal(const char *fmt, ...)
{
	va_list ap;
	fputs("relayd: fatal: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	abort();
}

void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (!p)
		relay_fatal("out of memory allocating %zu byte%s", n, relay_s(n));
	return p;
}

void *xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);
	if (!p)
		relay_fatal("out of memory allocating %zu x %zu byte%s", n, size, relay_s(size));
	return p;
}

void *xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);
	if (!q)
		relay_fatal("out of memory allocating %zu byte%s", n, relay_s(n));
	return q;
}

char *xstrdup(const char *s)
{
	return xstrndup(s, strlen(s));
}

char *xstrndup(const char *s, size_t n)
{
	char *p = xmalloc(n + 1);
	memcpy(p, s, n);
	p[n] = '\0';
	return p;
}

/*---- rbuf ----*/

void rbuf_reserve(struct rbuf *b, size_t extra)
{
	if (b->cap - b->len > extra)
		return;
	size_t need = b->len + extra + 1; /* +1 leaves room for rbuf_cstr */
	if (need < b->len)
		relay_fatal("buffer size overflow");
	size_t cap = b->cap ? b->cap : 256;
	while (cap < need)
		cap = cap * 2 > cap ? cap * 2 : need;
	b->data = xrealloc(b->data, cap);
	b->cap = cap;
}

void rbuf_append(struct rbuf *b, const void *p, size_t n)
{
	if (n == 0)
		return;
	rbuf_reserve(b, n);
	memcpy(b->data + b->len, p, n);
	b->len += n;
}

void rbuf_appendc(struct rbuf *b, char c)
{
	rbuf_reserve(b, 1);
	b->data[b->len++] = c;
}

void rbuf_appendf(struct rbuf *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	rbuf_reserve(b, (size_t)n + 1);
	va_start(ap, fmt);
	vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
}

void rbuf_append_basic_auth(struct rbuf *b, const char *user, size_t ulen, const char *password)
{
	static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	struct rbuf up = RBUF_INIT;
	rbuf_append(&up, user, ulen);
	rbuf_appendc(&up, ':');
	if (password)
		rbuf_append(&up, password, strlen(password));
	const unsigned char *s = (const unsigned char *)up.data;
	size_t n = up.len;
	rbuf_append(b, "Authorization: Basic ", 21);
	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)s[i] << 16 | (i + 1 < n ? (uint32_t)s[i + 1] << 8 : 0) | (i + 2 < n ? s[i + 2] : 0);
		char out[4] = { tbl[v >> 18 & 63], tbl[v >> 12 & 63], i + 1 < n ? tbl[v >> 6 & 63] : '=',
			        i + 2 < n ? tbl[v & 63] : '=' };
		rbuf_append(b, out, 4);
	}
	rbuf_append(b, "\r\n", 2);
	/* The buffer held a password: clear it before it goes back. */
	memset(up.data, 0, up.len);
	rbuf_release(&up);
}

const char *rbuf_cstr(struct rbuf *b)
{
	rbuf_reserve(b, 1);
	b->data[b->len] = '\0';
	return b->data;
}

void rbuf_reset(struct rbuf *b)
{
	b->len = 0;
}

void rbuf_release(struct rbuf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}

/*---- parsing ----*/

static int parse_u64_prefix(const char **sp, uint64_t *out)
{
	const char *s = *sp;
	uint64_t v = 0;
	if (!isdigit((unsigned char)*s))
		return -1;
	while (isdigit((unsigned char)*s)) {
		unsigned d = (unsigned)(*s - '0');
		if (v > (UINT64_MAX - d) / 10)
			return -1;
		v = v * 10 + d;
		s++;
	}
	*sp = s;
	*out = v;
	return 0;
}

struct unit {
	const char *suffix;
	uint64_t mult;
};

/* A number then one of the units' suffixes (exactly): the product, or -1
 * for anything else or an overflow. */
static int parse_scaled(const char *s, const struct unit *units, size_t n, int allow_space, uint64_t *out)
{
	uint64_t v;
	if (!s || parse_u64_prefix(&s, &v) < 0)
		return -1;
	while (allow_space && *s == ' ')
		s++;
	for (size_t i = 0; i < n; i++) {
		if (strcmp(s, units[i].suffix) == 0) {
			if (v && units[i].mult > UINT64_MAX / v)
				return -1;
			*out = v * units[i].mult;
			return 0;
		}
	}
	return -1;
}

int parse_size(const char *s, uint64_t *out)
{
	static const struct unit units[] = {
		{ "", 1 }, { "B", 1 },
		{ "k", 1024ULL }, { "K", 1024ULL }, { "KiB", 1024ULL }, { "KB", 1000ULL }, { "kB", 1000ULL },
		{ "M", 1ULL << 20 }, { "MiB", 1ULL << 20 }, { "MB", 1000000ULL },
		{ "G", 1ULL << 30 }, { "GiB", 1ULL << 30 }, { "GB", 1000000000ULL },
		{ "T", 1ULL << 40 }, { "TiB", 1ULL << 40 }, { "TB", 1000000000000ULL },
	};
	return parse_scaled(s, units, RELAY_ARRAY_SIZE(units), 1, out);
}

int parse_duration_ms(const char *s, uint64_t *out)
{
	static const struct unit units[] = {
		{ "", 1000 }, { "ms", 1 }, { "s", 1000 }, { "m", 60000 },
		{ "h", 3600000 }, { "d", 86400000 },
	};
	return parse_scaled(s, units, RELAY_ARRAY_SIZE(units), 0, out);
}

int parse_hostport(const char *s, char **host, uint16_t *port, char *err, size_t errlen)
{
	const char *colon;
	char addr[64];
	size_t hl;
	unsigned char tmp[16];

	if (s[0] == '[') {
		const char *end = strchr(s, ']');
		if (!end || end[1] != ':') {
			snprintf(err, errlen, "'%s' is not [IPV6]:PORT", s);
			return -1;
		}
		hl = (size_t)(end - s - 1);
		if (hl >= sizeof(addr)) {
			snprintf(err, errlen, "address '%s' is too long", s);
			return -1;
		}
		memcpy(addr, s + 1, hl);
		addr[hl] = '\0';
		colon = end + 1;
		if (inet_pton(AF_INET6, addr, tmp) != 1) {
			snprintf(err, errlen, "'%s' is not an IPv6 address", addr);
			return -1;
		}
	} else {
		colon = strrchr(s, ':');
		if (!colon) {
			snprintf(err, errlen, "'%s' has no port (want HOST:PORT)", s);
			return -1;
		}
		hl = (size_t)(colon - s);
		if (hl == 0 || hl >= sizeof(addr)) {
			snprintf(err, errlen, "'%s' has no usable host (want HOST:PORT)", s);
			return -1;
		}
		memcpy(addr, s, hl);
		addr[hl] = '\0';
		if (strcmp(addr, "localhost") == 0)
			strcpy(addr, "127.0.0.1");
		if (inet_pton(AF_INET, addr, tmp) != 1) {
			snprintf(err, errlen, "'%s' is not an IPv4 address, [IPv6] address or localhost", addr);
			return -1;
		}
	}
	const char *p = colon + 1;
	uint64_t v;
	if (parse_u64_prefix(&p, &v) < 0 || *p || v == 0 || v > 65535) {
		snprintf(err, errlen, "'%s' has a bad port (want 1-65535)", s);
		return -1;
	}
	*host = xstrdup(addr);
	*port = (uint16_t)v;
	return 0;
}

/*---- clocks ----*/

int64_t now_realtime_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

uint64_t now_mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/*---- encoding ----*/

int hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

char *url_decode(const char *src, size_t len)
{
	char *out = xmalloc(len + 1);
	size_t o = 0;
	for (size_t i = 0; i < len; i++) {
		char c = src[i];
		if (c == '%') {
			int hi, lo;
			if (i + 2 >= len || (hi = hex_value(src[i + 1])) < 0 || (lo = hex_value(src[i + 2])) < 0) {
				free(out);
				return NULL;
			}
			out[o++] = (char)(hi * 16 + lo);
			i += 2;
		} else if (c == '+') {
			out[o++] = ' ';
		} else {
			out[o++] = c;
		}
	}
	out[o] = '\0';
	return out;
}

size_t utf8_seq(const unsigned char *s, size_t n, uint32_t *cp)
{
	if (n == 0 || s[0] < 0xC2 || s[0] > 0xF4)
		return 0;
	size_t len = s[0] < 0xE0 ? 2 : s[0] < 0xF0 ? 3 : 4;
	if (n < len)
		return 0;
	uint32_t c = s[0] & (0x3Fu >> (len - 1));
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xC0) != 0x80)
			return 0;
		c = c << 6 | (s[i] & 0x3Fu);
	}
	/* overlong forms, UTF-16 surrogates, beyond Unicode */
	if ((len == 3 && c < 0x800) || (len == 4 && c < 0x10000) || (c >= 0xD800 && c <= 0xDFFF) || c > 0x10FFFF)
		return 0;
	*cp = c;
	return len;
}

int unicode_unsafe(uint32_t cp)
{
	return cp < 0x20 || (cp >= 0x7F && cp < 0xA0) || cp == 0x061C || cp == 0x200E || cp == 0x200F ||
	       (cp >= 0x2028 && cp <= 0x202E) || (cp >= 0x2066 && cp <= 0x2069);
}

char *relay_path_join(const char *dir, const char *path)
{
	if (path[0] == '/' || !dir)
		return xstrdup(path);
	while (path[0] == '.' && path[1] == '/')
		path += 2;
	struct rbuf b = RBUF_INIT;
	rbuf_appendf(&b, "%s%s%s", dir, strcmp(dir, "/") ? "/" : "", path);
	char *out = xstrdup(rbuf_cstr(&b));
	rbuf_release(&b);
	return out;
}
