/*
 * config_value: check one value of relayd.yaml against its row of the key
 * table and store it (sizes, durations, addresses, backend URLs, names,
 * enums), and write the loader's messages ("FILE:LINE:COL: what is
 * wrong", values shown short and without control characters).
 */
#include "relay/base/config_internal.h"
#include "relay/base/lineproto.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define BACKEND_NAME_MAX WAL_NAME_MAX /* the queue's limit */

static const char *const log_levels[] = { "debug", "info", "notice", "warn", "error" };

/*---- messages ----*/

__attribute__((format(printf, 3, 0)))
static int vfail(struct loader *ld, const yaml_mark_t *mark, const char *fmt, va_list ap)
{
	size_t n;
	int w;

	if (!ld->err || ld->errlen == 0)
		return -1;
	if (mark)
		w = snprintf(ld->err, ld->errlen, "%s:%zu:%zu: ", ld->name, mark->line + 1, mark->column + 1);
	else
		w = snprintf(ld->err, ld->errlen, "%s: ", ld->name);
	n = w < 0 ? 0 : (size_t)w;
	if (n < ld->errlen)
		vsnprintf(ld->err + n, ld->errlen - n, fmt, ap);
	/* Values are quoted in messages and may hold escaped newlines or
	 * terminal controls; a message stays one harmless line. */
	for (char *p = ld->err; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = '?';
	return -1;
}

/* Report a problem at node (its first character), or without a position
 * when node is NULL. Always returns -1. */
__attribute__((format(printf, 3, 4)))
int cfg_fail(struct loader *ld, const yaml_node_t *node, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vfail(ld, node ? &node->start_mark : NULL, fmt, ap);
	va_end(ap);
	return -1;
}

__attribute__((format(printf, 3, 4)))
int cfg_fail_at(struct loader *ld, const yaml_mark_t *mark, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vfail(ld, mark, fmt, ap);
	va_end(ap);
	return -1;
}

/* A short copy of a user's value for a message: at most ~60 bytes, cut on a
 * UTF-8 character boundary, with "..." when cut. */
const char *cfg_show(char *buf, size_t size, const char *s)
{
	size_t len = strlen(s), keep = size - 4;
	if (len < size) {
		memcpy(buf, s, len + 1);
		return buf;
	}
	while (keep > 0 && ((unsigned char)s[keep] & 0xc0) == 0x80)
		keep--;
	memcpy(buf, s, keep);
	memcpy(buf + keep, "...", 4);
	return buf;
}
/* "1MiB", "16KiB", "25B": the bound in the unit a user would write. */
static const char *fmt_bytes(char *buf, size_t size, uint64_t v)
{
	static const struct {
		const char *unit;
		uint64_t mult;
	} units[] = { { "TiB", 1ULL << 40 }, { "GiB", 1ULL << 30 }, { "MiB", 1ULL << 20 }, { "KiB", 1ULL << 10 } };
	for (size_t i = 0; i < RELAY_ARRAY_SIZE(units); i++) {
		if (v >= units[i].mult && v % units[i].mult == 0) {
			snprintf(buf, size, "%" PRIu64 "%s", v / units[i].mult, units[i].unit);
			return buf;
		}
	}
	snprintf(buf, size, "%" PRIu64 "B", v);
	return buf;
}

const char *cfg_fmt_ms(char *buf, size_t size, uint64_t v)
{
	static const struct {
		const char *unit;
		uint64_t mult;
	} units[] = { { "d", 86400000 }, { "h", 3600000 }, { "m", 60000 }, { "s", 1000 } };
	for (size_t i = 0; i < RELAY_ARRAY_SIZE(units); i++) {
		if (v >= units[i].mult && v % units[i].mult == 0) {
			snprintf(buf, size, "%" PRIu64 "%s", v / units[i].mult, units[i].unit);
			return buf;
		}
	}
	snprintf(buf, size, "%" PRIu64 "ms", v);
	return buf;
}

/*---- values ----*/

static void replace_str(void *base, size_t off, char *s)
{
	char **p = cfg_field_at(base, off);
	free(*p);
	*p = s;
}

/* A plain decimal integer; no sign, no unit, no overflow. */
static int parse_uint(const char *s, uint64_t *out)
{
	uint64_t v = 0;
	if (!isdigit((unsigned char)*s))
		return -1;
	for (; isdigit((unsigned char)*s); s++) {
		unsigned d = (unsigned)(*s - '0');
		if (v > (UINT64_MAX - d) / 10)
			return -1;
		v = v * 10 + d;
	}
	if (*s)
		return -1;
	*out = v;
	return 0;
}

static int valid_backend_name(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > BACKEND_NAME_MAX)
		return 0;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && *s != '_' && *s != '.' && *s != '-')
			return 0;
	return 1;
}

/*
 * Split an InfluxDB URL: http[s]://HOST[:PORT][/PREFIX] where HOST is a
 * name, an IPv4 literal or [IPv6]; the port defaults to 80, or 443 for
 * https (the caller reads the scheme from the URL). The client adds
 * its own /write?db=... so credentials, a query or a fragment here would be
 * silently dropped or mangled: refuse them instead. On success the caller
 * owns *host and *prefix; on failure why says what is wrong.
 */
static int parse_backend_url(const char *s, char **host, uint16_t *port, char **prefix,
                             char *why, size_t whylen)
{
	const char *auth, *auth_end, *h, *h_end, *port_s = NULL, *path, *end;
	char addr[INET6_ADDRSTRLEN + 8];
	unsigned char bin[16];
	size_t hl;

	int https = strncasecmp(s, "https://", 8) == 0;
	if (!https && strncasecmp(s, "http://", 7) != 0) {
		const char *sep = strstr(s, "://");
		if (sep && sep > s && sep - s <= 16)
			snprintf(why, whylen, "scheme '%.*s' is not supported", (int)(sep - s), s);
		else
			snprintf(why, whylen, "it does not start with http:// or https://");
		return -1;
	}
	if (strpbrk(s, "?#")) {
		snprintf(why, whylen, "a query or fragment ('?', '#') is not allowed");
		return -1;
	}
	auth = s + (https ? 8 : 7);
	auth_end = auth + strcspn(auth, "/");
	if (memchr(auth, '@', (size_t)(auth_end - auth))) {
		snprintf(why, whylen, "user:password@ is not supported");
		return -1;
	}
	if (*auth == '[') {
		const char *close = memchr(auth, ']', (size_t)(auth_end - auth));
		if (!close) {
			snprintf(why, whylen, "'[' without a closing ']'");
			return -1;
		}
		h = auth + 1;
		h_end = close;
		if (close + 1 < auth_end) {
			if (close[1] != ':') {
				snprintf(why, whylen, "unexpected text after ']'");
				return -1;
			}
			port_s = close + 2;
		}
		hl = (size_t)(h_end - h);
		if (hl == 0 || hl >= sizeof(addr)) {
			snprintf(why, whylen, "'[%.*s]' is not an IPv6 address", (int)(hl > 60 ? 60 : hl), h);
			return -1;
		}
		memcpy(addr, h, hl);
		addr[hl] = '\0';
		if (inet_pton(AF_INET6, addr, bin) != 1) {
			snprintf(why, whylen, "'[%s]' is not an IPv6 address", addr);
			return -1;
		}
	} else {
		const char *colon = memchr(auth, ':', (size_t)(auth_end - auth));
		int dotted = 1;
		h = auth;
		h_end = colon ? colon : auth_end;
		if (colon)
			port_s = colon + 1;
		hl = (size_t)(h_end - h);
		if (hl == 0) {
			snprintf(why, whylen, "it has no host");
			return -1;
		}
		if (hl > 253) {
			snprintf(why, whylen, "the host name is longer than 253 characters");
			return -1;
		}
		for (const char *p = h; p < h_end; p++) {
			if (!isalnum((unsigned char)*p) && *p != '-' && *p != '.' && *p != '_') {
				snprintf(why, whylen, "the host '%.*s' has a character other than "
				         "A-Z a-z 0-9 - . _", (int)(hl > 60 ? 60 : hl), h);
				return -1;
			}
			if (!isdigit((unsigned char)*p) && *p != '.')
				dotted = 0;
			/* Only a final dot (a fully qualified name) may end a
			 * label without characters. */
			if (*p == '.' && (p == h || p[-1] == '.')) {
				snprintf(why, whylen, "the host '%.*s' has an empty label",
				         (int)(hl > 60 ? 60 : hl), h);
				return -1;
			}
		}
		/* All digits and dots can only mean an IPv4 literal; the
		 * resolver would read "10.1" as 10.0.0.1, which is never meant. */
		if (dotted) {
			if (hl >= sizeof(addr)) {
				snprintf(why, whylen, "'%.*s' is not an IPv4 address", (int)(hl > 60 ? 60 : hl), h);
				return -1;
			}
			memcpy(addr, h, hl);
			addr[hl] = '\0';
			if (inet_pton(AF_INET, addr, bin) != 1) {
				snprintf(why, whylen, "'%s' is not an IPv4 address", addr);
				return -1;
			}
		}
	}

	*port = https ? 443 : 80;
	if (port_s) {
		uint64_t v = 0;
		const char *p = port_s;
		for (; p < auth_end && isdigit((unsigned char)*p) && v <= 65535; p++)
			v = v * 10 + (unsigned)(*p - '0');
		if (p == port_s || p != auth_end || v == 0 || v > 65535) {
			size_t pl = (size_t)(auth_end - port_s);
			snprintf(why, whylen, "bad port '%.*s' (want 1-65535)", (int)(pl > 20 ? 20 : pl), port_s);
			return -1;
		}
		*port = (uint16_t)v;
	}

	path = auth_end;
	end = path + strlen(path);
	/* The prefix goes into the request line as it is, so it must already
	 * be a valid URL path (RFC 3986 pchar and '/'). */
	for (const char *p = path; p < end; p++) {
		if (*p == '%') {
			if (!isxdigit((unsigned char)p[1]) || !isxdigit((unsigned char)p[2])) {
				snprintf(why, whylen, "the path has a '%%' that is not followed by two hex digits");
				return -1;
			}
			p += 2;
		} else if (!isalnum((unsigned char)*p) && !strchr("/-._~!$&'()*+,;=:@", *p)) {
			snprintf(why, whylen, "the path has a character that must be percent-encoded");
			return -1;
		}
	}
	/* The client appends "/write"; "http://h/influx/" must not give
	 * "/influx//write", which some proxies route differently. */
	while (end > path && end[-1] == '/')
		end--;
	*host = xstrndup(h, (size_t)(h_end - h));
	*prefix = xstrndup(path, (size_t)(end - path));
	return 0;
}

/*
 * influxdb-relay's outputs name the whole write URL ("http://h:8086/write");
 * relayd appends /write (or /api/v2/write) to the prefix itself, so such a
 * url would pass and then hold the queue with 404s from "/write/write".
 * Refused here with the url to write instead; a prefix such as /influx
 * (a proxy's route) stays allowed.
 */
static int write_path_suffix(const char *url, const char *prefix, const yaml_node_t *at, struct loader *ld,
                             const char *path)
{
	static const char *const suffixes[] = { "/api/v2/write", "/write" };
	size_t pl = strlen(prefix);

	for (size_t i = 0; i < RELAY_ARRAY_SIZE(suffixes); i++) {
		size_t sl = strlen(suffixes[i]);
		if (pl < sl || strcmp(prefix + pl - sl, suffixes[i]) != 0)
			continue;
		size_t ul = strlen(url);
		while (ul > 0 && url[ul - 1] == '/')
			ul--;
		char shown[64];
		return cfg_fail(ld, at, "%s '%s' ends in %s: relayd adds the write path itself; use url: %.*s",
		                path, cfg_show(shown, sizeof(shown), url), suffixes[i],
		                (int)(ul - sl > 200 ? 200 : ul - sl), url);
	}
	return 0;
}

static int check_bounds(struct loader *ld, const struct key_spec *k, uint64_t v,
                        const char *(*fmt)(char *, size_t, uint64_t),
                        const char *text, const yaml_node_t *at, const char *path)
{
	char b[32], shown[64];

	if (v == 0 && (k->flags & KF_ZERO_OK))
		return 0;
	if (v < k->min)
		return cfg_fail(ld, at, "'%s' must be %sat least %s, not '%s'", path,
		                (k->flags & KF_ZERO_OK) ? "0 or " : "", fmt(b, sizeof(b), k->min),
		                cfg_show(shown, sizeof(shown), text));
	if (v > k->max)
		return cfg_fail(ld, at, "'%s' must be at most %s, not '%s'", path,
		                fmt(b, sizeof(b), k->max), cfg_show(shown, sizeof(shown), text));
	return 0;
}

static const char *fmt_secs(char *buf, size_t size, uint64_t v)
{
	snprintf(buf, size, "%" PRIu64 "s", v);
	return buf;
}

/*
 * KF_UNIQUE: refuse text when an earlier item of the list being read has
 * the same value for k. Backend names key the queues in the WAL and label
 * log lines, so two backends sharing one would silently share a queue; two
 * UDP listeners on one address, or two users of one name, are mistakes too.
 */
static int check_unique(struct loader *ld, const struct key_spec *k, const char *text,
                        const yaml_node_t *at)
{
	const struct list_spec *l = ld->cur_list;
	char shown[64];

	if (!(k->flags & KF_UNIQUE) || !l || !at)
		return 0;
	const char *items = *(char **)cfg_field_at(ld->cfg, l->off_items);
	for (size_t i = 0; i < ld->cur_item; i++) {
		const char *other = *(char **)(items + i * l->elem_size + k->off);
		size_t line;
		if (!other || strcmp(other, text) != 0)
			continue;
		line = ld->lseen[l->index][i * l->nkeys + (size_t)(k - l->keys)];
		if (k->flags & KF_SECRET)
			return cfg_fail(ld, at, "this %s is already used at line %zu", k->name, line);
		return cfg_fail(ld, at, "duplicate %s %s '%s' (first at line %zu)", l->noun, k->name,
		                cfg_show(shown, sizeof(shown), text), line);
	}
	return 0;
}

/*
 * Check text as the value of key k and store it in base (a relay_config or
 * a relay_backend_config). at is the value's node for messages; NULL when
 * a built-in default is applied. Returns 0 or -1 with the error reported.
 */
int cfg_set_value(struct loader *ld, const struct key_spec *k, void *base,
                  const char *text, const yaml_node_t *at, const char *path)
{
	char shown[64], why[160];
	uint64_t v;

	switch (k->type) {
	case KT_STRING:
		if (!*text)
			return cfg_fail(ld, at, "'%s' must not be empty", path);
		/* Names, credentials and paths all end up in HTTP headers, query
		 * strings, queue records or log lines, where a control byte
		 * starts a line of its own. */
		for (const char *c = text; *c; c++)
			if ((unsigned char)*c < 0x20 || *c == 0x7f)
				return cfg_fail(ld, at, "'%s' must not contain control characters", path);
		if (check_unique(ld, k, text, at) < 0)
			return -1;
		replace_str(base, k->off, xstrdup(text));
		return 0;

	case KT_LOG_LEVEL:
		for (size_t i = 0; i < RELAY_ARRAY_SIZE(log_levels); i++) {
			if (strcmp(text, log_levels[i]) == 0) {
				replace_str(base, k->off, xstrdup(text));
				return 0;
			}
		}
		return cfg_fail(ld, at, "'%s' must be one of debug, info, notice, warn, error, not '%s'",
		                path, cfg_show(shown, sizeof(shown), text));

	case KT_LOG_OUTPUT:
		if (cfg_check_log_output(ld, at, text, path) < 0)
			return -1;
		replace_str(base, k->off, xstrdup(text));
		return 0;

	case KT_HOSTPORT: {
		char *host;
		uint16_t port;
		/* "off": no such listener (listen.http beside listen.https). */
		if ((k->flags & KF_OFF_OK) && strcmp(text, "off") == 0) {
			replace_str(base, k->off, NULL);
			replace_str(base, k->off_host, NULL);
			*(uint16_t *)cfg_field_at(base, k->off_port) = 0;
			return 0;
		}
		if (parse_hostport(text, &host, &port, why, sizeof(why)) < 0)
			return cfg_fail(ld, at, "'%s' must be an address like 127.0.0.1:9096: %s", path, why);
		if (check_unique(ld, k, text, at) < 0) {
			free(host);
			return -1;
		}
		replace_str(base, k->off, xstrdup(text));
		replace_str(base, k->off_host, host);
		*(uint16_t *)cfg_field_at(base, k->off_port) = port;
		return 0;
	}

	case KT_URL: {
		char *host, *prefix;
		uint16_t port;
		if (parse_backend_url(text, &host, &port, &prefix, why, sizeof(why)) < 0)
			return cfg_fail(ld, at, "'%s' must be an http:// or https:// URL: %s", path, why);
		if (write_path_suffix(text, prefix, at, ld, path) < 0) {
			free(host);
			free(prefix);
			return -1;
		}
		replace_str(base, k->off, xstrdup(text));
		replace_str(base, k->off_host, host);
		replace_str(base, k->off_path, prefix);
		*(uint16_t *)cfg_field_at(base, k->off_port) = port;
		return 0;
	}

	case KT_NAME:
		if (!valid_backend_name(text))
			return cfg_fail(ld, at, "'%s' must be 1-%d characters of A-Z a-z 0-9 _ . -, not '%s'",
			                path, BACKEND_NAME_MAX, cfg_show(shown, sizeof(shown), text));
		if (check_unique(ld, k, text, at) < 0)
			return -1;
		replace_str(base, k->off, xstrdup(text));
		return 0;

	case KT_SIZE:
		if (parse_size(text, &v) < 0)
			return cfg_fail(ld, at, "'%s' must be a size like 25MiB, not '%s'",
			                path, cfg_show(shown, sizeof(shown), text));
		if (check_bounds(ld, k, v, fmt_bytes, text, at, path) < 0)
			return -1;
		*(uint64_t *)cfg_field_at(base, k->off) = v;
		if (k->flags & KF_TEXT)
			replace_str(base, k->off_text, xstrdup(text));
		return 0;

	case KT_DURATION:
		if (parse_duration_ms(text, &v) < 0)
			return cfg_fail(ld, at, "'%s' must be a duration like 10s, not '%s'",
			                path, cfg_show(shown, sizeof(shown), text));
		if (check_bounds(ld, k, v, cfg_fmt_ms, text, at, path) < 0)
			return -1;
		*(uint64_t *)cfg_field_at(base, k->off) = v;
		if (k->flags & KF_TEXT)
			replace_str(base, k->off_text, xstrdup(text));
		return 0;

	case KT_SECONDS:
		/* Retry-After carries whole seconds; rounding 1500ms either way
		 * would send something the operator did not write. */
		if (parse_duration_ms(text, &v) < 0 || v % 1000 != 0)
			return cfg_fail(ld, at, "'%s' must be a whole number of seconds like 10s, not '%s'",
			                path, cfg_show(shown, sizeof(shown), text));
		if (check_bounds(ld, k, v / 1000, fmt_secs, text, at, path) < 0)
			return -1;
		*(uint64_t *)cfg_field_at(base, k->off) = v / 1000;
		return 0;

	case KT_UINT32:
		if (parse_uint(text, &v) < 0 || v < k->min || v > k->max)
			return cfg_fail(ld, at, "'%s' must be an integer from %" PRIu64 " to %" PRIu64 ", not '%s'",
			                path, k->min, k->max, cfg_show(shown, sizeof(shown), text));
		*(uint32_t *)cfg_field_at(base, k->off) = (uint32_t)v;
		return 0;

	case KT_ENUM:
		for (size_t i = 0; i < k->enm->n; i++) {
			if (strcmp(text, k->enm->words[i].name) == 0) {
				*(int *)cfg_field_at(base, k->off) = k->enm->words[i].value;
				return 0;
			}
		}
		return cfg_fail(ld, at, "'%s' must be %s, not '%s'", path, k->enm->hint, cfg_show(shown, sizeof(shown), text));

	case KT_PRECISION: {
		enum lp_precision p;
		if (lp_precision_parse(text, &p) < 0)
			return cfg_fail(ld, at, "'%s' must be one of ns, u, ms, s, m, h, not '%s'",
			                path, cfg_show(shown, sizeof(shown), text));
		*(int *)cfg_field_at(base, k->off) = (int)p;
		return 0;
	}

	case KT_SECTION:
	case KT_LIST:
	case KT_NAMES:
		break;
	}
	relay_fatal("config: key '%s' has no scalar type", k->name);
}

int cfg_check_log_output(struct loader *ld, const yaml_node_t *at, const char *text, const char *path)
{
	char shown[64];

	/* A file must be absolute: a relative one would be one typo of a
	 * word away ("jounral" would become a file next to the
	 * configuration). Control characters would break the '\n'-joined
	 * list. */
	if (strcmp(text, "stderr") && strcmp(text, "syslog") && strcmp(text, "journal") && text[0] != '/')
		return cfg_fail(ld, at, "'%s' must be stderr, syslog, journal or an absolute file path, not '%s'",
		                path, cfg_show(shown, sizeof(shown), text));
	for (const char *c = text; *c; c++)
		if ((unsigned char)*c < 0x20 || *c == 0x7f)
			return cfg_fail(ld, at, "'%s' must not contain control characters", path);
	return 0;
}

int cfg_valid_name(const char *s)
{
	return valid_backend_name(s);
}

void cfg_release_fields(const struct key_spec *tab, size_t n, void *base)
{
	for (size_t i = 0; i < n; i++) {
		switch (tab[i].type) {
		case KT_URL:
			replace_str(base, tab[i].off_path, NULL);
			/* fall through */
		case KT_HOSTPORT:
			replace_str(base, tab[i].off_host, NULL);
			/* fall through */
		case KT_STRING:
		case KT_LOG_LEVEL:
		case KT_LOG_OUTPUT:
		case KT_NAME:
		case KT_NAMES:
			replace_str(base, tab[i].off, NULL);
			break;
		case KT_SIZE:
		case KT_DURATION:
			if (tab[i].flags & KF_TEXT)
				replace_str(base, tab[i].off_text, NULL);
			break;
		default:
			break;
		}
	}
}
/* Fill base with the defaults of tab; the file's values overwrite them. */
void cfg_apply_defaults(struct loader *ld, const struct key_spec *tab, size_t ntab, void *base)
{
	for (size_t i = 0; i < ntab; i++) {
		if (tab[i].def && cfg_set_value(ld, &tab[i], base, tab[i].def, NULL, tab[i].name) < 0)
			relay_fatal("config: built-in default of '%s' is invalid", tab[i].name);
	}
}
