/*
 * config: turn relayd.yaml into a struct relay_config. libyaml builds the
 * document tree; one table of keys (type, where the value goes, default,
 * bounds, description) drives every check, so a new setting is one row.
 * The first problem is reported as "FILE:LINE:COL: what is wrong", pointing
 * at the node that is wrong, and a failed load leaves nothing allocated.
 * Never logs and never touches the data directory or the network: relayctl
 * check-config and the fuzzer call it as it is.
 */
#include "relay/config.h"
#include "relay/util.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>

#define MIB (1024ULL * 1024)
/* A configuration is a few kilobytes; anything this big is the wrong file
 * (a log, a database) and reading it all would only delay the error. */
#define CONFIG_MAX_FILE_BYTES ((size_t)1 << 20)
#define BACKEND_NAME_MAX 64
/* The deepest valid file is three levels (top, backends, one backend). */
#define CONFIG_MAX_DEPTH 16

/*---- the key table ----*/

enum key_type {
	KT_SECTION,   /* a mapping holding the rows whose section is this name */
	KT_BACKENDS,  /* the sequence of backends, each checked by backend_keys */
	KT_STRING,    /* char *, not empty */
	KT_LOG_LEVEL, /* char *, one of log_levels[] */
	KT_HOSTPORT,  /* char * as written, plus off_host (char *), off_port (uint16_t) */
	KT_URL,       /* char * as written, plus off_host, off_port and off_path (char *) */
	KT_NAME,      /* char *, a backend name: [A-Za-z0-9_.-]{1,64}, unique */
	KT_SIZE,      /* uint64_t bytes, parse_size */
	KT_DURATION,  /* uint64_t milliseconds, parse_duration_ms */
	KT_SECONDS,   /* uint64_t whole seconds, written as a duration */
	KT_UINT32,    /* uint32_t, a plain decimal integer */
	KT_DB_POLICY, /* enum relay_db_policy: hold, create or dead_letter */
	KT_BOOL,      /* int, 0 or 1: true/false (also yes/no, on/off, as YAML 1.1) */
};

#define KF_REQUIRED 0x1 /* a mapping without it is refused */
#define KF_ZERO_OK  0x2 /* 0 ("none", "derived") is accepted besides [min, max] */
#define KF_INHERIT  0x4 /* backend key: unset means the relay_config field at off_inherit */

struct key_spec {
	const char *section; /* "" for the top level, else the KT_SECTION row's name */
	const char *name;
	enum key_type type;
	unsigned flags;      /* KF_* */
	size_t off;          /* the field the value goes to */
	size_t off_host, off_port, off_path; /* the parsed parts of KT_HOSTPORT, KT_URL */
	size_t off_inherit;  /* KF_INHERIT: the struct relay_config field to copy */
	const char *def;     /* default in the file's own notation; NULL = none */
	uint64_t min, max;   /* bounds in the stored unit (bytes, ms, s, count) */
	const char *desc;    /* what the key does (the man page says the same) */
};

#define CF(f) offsetof(struct relay_config, f)
#define BF(f) offsetof(struct relay_backend_config, f)
#define SECTION(key, text) \
	{ .section = "", .name = key, .type = KT_SECTION, .desc = text }
#define KEY(sec, key, ty, fl, field, dflt, lo, hi, text) \
	{ .section = sec, .name = key, .type = ty, .flags = fl, .off = CF(field), \
	  .def = dflt, .min = lo, .max = hi, .desc = text }

/*
 * Every setting of relayd.yaml. Defaults are written as a user would write
 * them and go through the same checks as the file, so a default can never
 * be something the file itself could not say.
 */
static const struct key_spec keys[] = {
	KEY("", "data_dir", KT_STRING, KF_REQUIRED, data_dir, NULL, 0, 0,
	    "directory of the durable queue (an LMDB environment)"),
	KEY("", "log_level", KT_LOG_LEVEL, 0, log_level, "info", 0, 0,
	    "least severe message logged: debug, info, notice, warn or error"),

	SECTION("listen", "addresses relayd accepts connections on"),
	{ .section = "listen", .name = "http", .type = KT_HOSTPORT, .off = CF(listen_http),
	  .off_host = CF(listen_http_host), .off_port = CF(listen_http_port),
	  .def = "127.0.0.1:9096",
	  .desc = "HOST:PORT of the InfluxDB-compatible /write, /ping and /health endpoint" },

	SECTION("http", "limits of the front door"),
	KEY("http", "max_body_size", KT_SIZE, 0, http_max_body_bytes, "25MiB", 1, UINT64_MAX,
	    "largest request body; 413 beyond"),
	KEY("http", "max_header_size", KT_SIZE, 0, http_max_header_bytes, "16KiB", 1, UINT64_MAX,
	    "largest request line plus headers; 431 beyond"),
	KEY("http", "max_decompressed_size", KT_SIZE, 0, http_max_decompressed_bytes, "100MiB", 1, UINT64_MAX,
	    "largest body after gzip decompression; 413 beyond (a small bomb cannot exhaust memory)"),
	KEY("http", "max_line_size", KT_SIZE, 0, http_max_line_bytes, "1MiB", 1, UINT64_MAX,
	    "longest line of line protocol; 400 beyond"),
	KEY("http", "header_timeout", KT_DURATION, 0, http_header_timeout_ms, "10s", 1, UINT64_MAX,
	    "time for the whole request head to arrive; 408 beyond"),
	KEY("http", "body_timeout", KT_DURATION, 0, http_body_timeout_ms, "60s", 1, UINT64_MAX,
	    "time for the whole body to arrive; 408 beyond"),
	KEY("http", "idle_timeout", KT_DURATION, 0, http_idle_timeout_ms, "120s", 1, UINT64_MAX,
	    "an idle keep-alive connection is closed after this"),
	KEY("http", "max_connections", KT_UINT32, 0, http_max_connections, "1024", 1, UINT32_MAX,
	    "most client connections open at once"),

	SECTION("queue", "the durable queue and its limits"),
	KEY("queue", "max_size", KT_SIZE, 0, queue_max_bytes, "1GiB", MIB, UINT64_MAX,
	    "bytes a backend's queue may hold before writes get 503; per-backend default"),
	KEY("queue", "max_age", KT_DURATION, KF_ZERO_OK, queue_max_age_ms, "0", 1, UINT64_MAX,
	    "writes get 503 while a backend's oldest batch is older; 0 = no limit"),
	KEY("queue", "retry_after", KT_SECONDS, 0, queue_retry_after_s, "10s", 1, UINT64_MAX,
	    "Retry-After sent with a 503 for a full queue"),
	KEY("queue", "map_size", KT_SIZE, KF_ZERO_OK, queue_map_bytes, "0", MIB, UINT64_MAX,
	    "LMDB map size; 0 = twice the backends' limits plus 64MiB"),
	KEY("queue", "max_commit_batches", KT_UINT32, 0, queue_max_commit_batches, "1024", 1, 65536,
	    "most requests made durable by one group commit"),

	{ .section = "", .name = "backends", .type = KT_BACKENDS, .flags = KF_REQUIRED,
	  .desc = "InfluxDB servers every write is forwarded to" },
};

#define BKEY(key, ty, fl, field, dflt, lo, hi, text) \
	{ .section = "", .name = key, .type = ty, .flags = fl, .off = BF(field), \
	  .def = dflt, .min = lo, .max = hi, .desc = text }

/* The keys of one item of backends; offsets are into relay_backend_config.
 * KF_INHERIT rows take their default from queue: instead of def. */
static const struct key_spec backend_keys[] = {
	BKEY("name", KT_NAME, KF_REQUIRED, name, NULL, 0, 0,
	     "names the backend's queue, its log lines and its metrics"),
	{ .section = "", .name = "url", .type = KT_URL, .flags = KF_REQUIRED, .off = BF(url),
	  .off_host = BF(host), .off_port = BF(port), .off_path = BF(path_prefix),
	  .desc = "http://HOST[:PORT][/PREFIX] of the InfluxDB; /write is appended" },
	{ .section = "", .name = "max_size", .type = KT_SIZE, .flags = KF_INHERIT, .off = BF(max_bytes),
	  .off_inherit = CF(queue_max_bytes), .min = MIB, .max = UINT64_MAX,
	  .desc = "this backend's queue byte limit; default queue.max_size" },
	{ .section = "", .name = "max_age", .type = KT_DURATION, .flags = KF_INHERIT | KF_ZERO_OK,
	  .off = BF(max_age_ms), .off_inherit = CF(queue_max_age_ms), .min = 1, .max = UINT64_MAX,
	  .desc = "this backend's age limit; default queue.max_age" },
	BKEY("timeout", KT_DURATION, 0, timeout_ms, "30s", 10, 3600000,
	     "time for the backend's whole answer to a write; then retry"),
	BKEY("connect_timeout", KT_DURATION, 0, connect_timeout_ms, "5s", 10, 600000,
	     "time to connect to the backend; then retry"),
	BKEY("batch_max_size", KT_SIZE, 0, batch_max_bytes, "8MiB", 1024, 1ULL << 30,
	     "queued batches are coalesced into writes of at most this many bytes"),
	BKEY("batch_max_lines", KT_UINT32, 0, batch_max_lines, "40000", 1, 10000000,
	     "... and at most this many lines"),
	BKEY("retry_min", KT_DURATION, 0, retry_min_ms, "100ms", 10, 3600000,
	     "first retry delay, and the least any retry waits"),
	BKEY("retry_max", KT_DURATION, 0, retry_max_ms, "30s", 10, 86400000,
	     "longest retry delay; also caps a backend's Retry-After"),
	BKEY("parallel", KT_UINT32, 0, parallel, "4", 1, 16,
	     "writes in flight at once to this backend; lines are split between them by series, so each series stays in order"),
	BKEY("on_database_not_found", KT_DB_POLICY, 0, on_database_not_found, "hold", 0, 0,
	     "on a 404 \"database not found\": hold (keep, retry), create, or dead_letter"),
	BKEY("gzip", KT_BOOL, 0, gzip, "false", 0, 0,
	     "send writes compressed (Content-Encoding: gzip)"),
};

static const char *const log_levels[] = { "debug", "info", "notice", "warn", "error" };
/* YAML 1.1's booleans, which is what libyaml users expect "yes" to mean. */
static const struct {
	const char *name;
	int value;
} bools[] = {
	{ "true", 1 }, { "True", 1 }, { "TRUE", 1 }, { "yes", 1 }, { "Yes", 1 }, { "YES", 1 },
	{ "on", 1 }, { "On", 1 }, { "ON", 1 },
	{ "false", 0 }, { "False", 0 }, { "FALSE", 0 }, { "no", 0 }, { "No", 0 }, { "NO", 0 },
	{ "off", 0 }, { "Off", 0 }, { "OFF", 0 },
};
static const struct {
	const char *name;
	enum relay_db_policy policy;
} db_policies[] = {
	{ "hold", RELAY_DB_HOLD }, { "create", RELAY_DB_CREATE }, { "dead_letter", RELAY_DB_DEAD_LETTER },
};

/*---- messages ----*/

struct loader {
	const char *name;          /* file name for messages */
	struct relay_config *cfg;
	yaml_document_t *doc;
	unsigned char *visited;    /* one flag per document node: a second visit is an alias */
	char *err;
	size_t errlen;
	/* 1-based line where each key was first seen; 0 = not seen. */
	size_t seen[RELAY_ARRAY_SIZE(keys)];
	size_t bseen[RELAY_MAX_BACKENDS][RELAY_ARRAY_SIZE(backend_keys)];
};

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
static int fail(struct loader *ld, const yaml_node_t *node, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vfail(ld, node ? &node->start_mark : NULL, fmt, ap);
	va_end(ap);
	return -1;
}

__attribute__((format(printf, 3, 4)))
static int fail_at(struct loader *ld, const yaml_mark_t *mark, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vfail(ld, mark, fmt, ap);
	va_end(ap);
	return -1;
}

/* A short copy of a user's value for a message: at most ~60 bytes, cut on a
 * UTF-8 character boundary, with "..." when cut. */
static const char *show(char *buf, size_t size, const char *s)
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

static const char *node_kind(const yaml_node_t *node)
{
	switch (node->type) {
	case YAML_MAPPING_NODE: return "a mapping";
	case YAML_SEQUENCE_NODE: return "a sequence";
	default: return "a single value";
	}
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

static const char *fmt_ms(char *buf, size_t size, uint64_t v)
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

static void *field_at(void *base, size_t off)
{
	return (char *)base + off;
}

static void replace_str(void *base, size_t off, char *s)
{
	char **p = field_at(base, off);
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
 * Split an InfluxDB URL: http://HOST[:PORT][/PREFIX] where HOST is a name,
 * an IPv4 literal or [IPv6]. The HTTP client speaks plain HTTP/1.1 and adds
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

	if (strncasecmp(s, "https://", 8) == 0) {
		snprintf(why, whylen, "https is not supported yet");
		return -1;
	}
	if (strncasecmp(s, "http://", 7) != 0) {
		const char *sep = strstr(s, "://");
		if (sep && sep > s && sep - s <= 16)
			snprintf(why, whylen, "scheme '%.*s' is not supported", (int)(sep - s), s);
		else
			snprintf(why, whylen, "it does not start with http://");
		return -1;
	}
	if (strpbrk(s, "?#")) {
		snprintf(why, whylen, "a query or fragment ('?', '#') is not allowed");
		return -1;
	}
	auth = s + 7;
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

	*port = 80;
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

static int check_bounds(struct loader *ld, const struct key_spec *k, uint64_t v,
                        const char *(*fmt)(char *, size_t, uint64_t),
                        const char *text, const yaml_node_t *at, const char *path)
{
	char b[32], shown[64];

	if (v == 0 && (k->flags & KF_ZERO_OK))
		return 0;
	if (v < k->min)
		return fail(ld, at, "'%s' must be %sat least %s, not '%s'", path,
		            (k->flags & KF_ZERO_OK) ? "0 or " : "", fmt(b, sizeof(b), k->min),
		            show(shown, sizeof(shown), text));
	if (v > k->max)
		return fail(ld, at, "'%s' must be at most %s, not '%s'", path,
		            fmt(b, sizeof(b), k->max), show(shown, sizeof(shown), text));
	return 0;
}

static const char *fmt_secs(char *buf, size_t size, uint64_t v)
{
	snprintf(buf, size, "%" PRIu64 "s", v);
	return buf;
}

/*
 * Check text as the value of key k and store it in base (a relay_config or
 * a relay_backend_config). at is the value's node for messages; NULL when
 * a built-in default is applied. Returns 0 or -1 with the error reported.
 */
static int set_value(struct loader *ld, const struct key_spec *k, void *base,
                     const char *text, const yaml_node_t *at, const char *path)
{
	char shown[64], why[160];
	uint64_t v;

	switch (k->type) {
	case KT_STRING:
		if (!*text)
			return fail(ld, at, "'%s' must not be empty", path);
		replace_str(base, k->off, xstrdup(text));
		return 0;

	case KT_LOG_LEVEL:
		for (size_t i = 0; i < RELAY_ARRAY_SIZE(log_levels); i++) {
			if (strcmp(text, log_levels[i]) == 0) {
				replace_str(base, k->off, xstrdup(text));
				return 0;
			}
		}
		return fail(ld, at, "'%s' must be one of debug, info, notice, warn, error, not '%s'",
		            path, show(shown, sizeof(shown), text));

	case KT_HOSTPORT: {
		char *host;
		uint16_t port;
		if (parse_hostport(text, &host, &port, why, sizeof(why)) < 0)
			return fail(ld, at, "'%s' must be an address like 127.0.0.1:9096: %s", path, why);
		replace_str(base, k->off, xstrdup(text));
		replace_str(base, k->off_host, host);
		*(uint16_t *)field_at(base, k->off_port) = port;
		return 0;
	}

	case KT_URL: {
		char *host, *prefix;
		uint16_t port;
		if (parse_backend_url(text, &host, &port, &prefix, why, sizeof(why)) < 0)
			return fail(ld, at, "'%s' must be an http:// URL: %s", path, why);
		replace_str(base, k->off, xstrdup(text));
		replace_str(base, k->off_host, host);
		replace_str(base, k->off_path, prefix);
		*(uint16_t *)field_at(base, k->off_port) = port;
		return 0;
	}

	case KT_NAME: {
		/* Names key the queues in the WAL and label log lines, so two
		 * backends sharing one would silently share a queue. */
		struct relay_backend_config *b = base;
		size_t self = (size_t)(b - ld->cfg->backends);
		if (!valid_backend_name(text))
			return fail(ld, at, "'%s' must be 1-64 characters of A-Z a-z 0-9 _ . -, not '%s'",
			            path, show(shown, sizeof(shown), text));
		for (size_t i = 0; i < self; i++) {
			if (strcmp(ld->cfg->backends[i].name, text) == 0)
				return fail(ld, at, "duplicate backend name '%s' (first at line %zu)",
				            text, ld->bseen[i][k - backend_keys]);
		}
		replace_str(base, k->off, xstrdup(text));
		return 0;
	}

	case KT_SIZE:
		if (parse_size(text, &v) < 0)
			return fail(ld, at, "'%s' must be a size like 25MiB, not '%s'",
			            path, show(shown, sizeof(shown), text));
		if (check_bounds(ld, k, v, fmt_bytes, text, at, path) < 0)
			return -1;
		*(uint64_t *)field_at(base, k->off) = v;
		return 0;

	case KT_DURATION:
		if (parse_duration_ms(text, &v) < 0)
			return fail(ld, at, "'%s' must be a duration like 10s, not '%s'",
			            path, show(shown, sizeof(shown), text));
		if (check_bounds(ld, k, v, fmt_ms, text, at, path) < 0)
			return -1;
		*(uint64_t *)field_at(base, k->off) = v;
		return 0;

	case KT_SECONDS:
		/* Retry-After carries whole seconds; rounding 1500ms either way
		 * would send something the operator did not write. */
		if (parse_duration_ms(text, &v) < 0 || v % 1000 != 0)
			return fail(ld, at, "'%s' must be a whole number of seconds like 10s, not '%s'",
			            path, show(shown, sizeof(shown), text));
		if (check_bounds(ld, k, v / 1000, fmt_secs, text, at, path) < 0)
			return -1;
		*(uint64_t *)field_at(base, k->off) = v / 1000;
		return 0;

	case KT_UINT32:
		if (parse_uint(text, &v) < 0 || v < k->min || v > k->max)
			return fail(ld, at, "'%s' must be an integer from %" PRIu64 " to %" PRIu64 ", not '%s'",
			            path, k->min, k->max, show(shown, sizeof(shown), text));
		*(uint32_t *)field_at(base, k->off) = (uint32_t)v;
		return 0;

	case KT_DB_POLICY:
		for (size_t i = 0; i < RELAY_ARRAY_SIZE(db_policies); i++) {
			if (strcmp(text, db_policies[i].name) == 0) {
				*(enum relay_db_policy *)field_at(base, k->off) = db_policies[i].policy;
				return 0;
			}
		}
		return fail(ld, at, "'%s' must be one of hold, create, dead_letter, not '%s'",
		            path, show(shown, sizeof(shown), text));

	case KT_BOOL:
		for (size_t i = 0; i < RELAY_ARRAY_SIZE(bools); i++) {
			if (strcmp(text, bools[i].name) == 0) {
				*(int *)field_at(base, k->off) = bools[i].value;
				return 0;
			}
		}
		return fail(ld, at, "'%s' must be true or false, not '%s'",
		            path, show(shown, sizeof(shown), text));

	case KT_SECTION:
	case KT_BACKENDS:
		break;
	}
	relay_fatal("config: key '%s' has no scalar type", k->name);
}

static void release_fields(const struct key_spec *tab, size_t n, void *base)
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
		case KT_NAME:
			replace_str(base, tab[i].off, NULL);
			break;
		default:
			break;
		}
	}
}

/*---- walking the document ----*/

static yaml_node_t *node_at(struct loader *ld, int id)
{
	yaml_node_t *node = yaml_document_get_node(ld->doc, id);
	relay_assert(node != NULL);
	return node;
}

/*
 * Mark node as read. libyaml resolves an alias to the very node its anchor
 * names, so a node reached twice is an alias. Refusing those keeps the walk
 * finite (an anchor may contain its own alias) and linear (no "billion
 * laughs"), and a relay config has nothing worth sharing.
 */
static int enter(struct loader *ld, yaml_node_t *node, const yaml_node_t *at, const char *path)
{
	size_t i = (size_t)(node - ld->doc->nodes.start);
	if (ld->visited[i]) {
		if (path)
			return fail(ld, at, "'%s' is an alias: anchors and aliases are not supported", path);
		return fail(ld, at, "anchors and aliases are not supported");
	}
	ld->visited[i] = 1;
	return 0;
}

/* YAML's spellings of "nothing", as in "http:" with no value. */
static int is_null(const yaml_node_t *node)
{
	static const char *const nulls[] = { "", "~", "null", "Null", "NULL" };
	if (node->type != YAML_SCALAR_NODE || node->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
		return 0;
	for (size_t i = 0; i < RELAY_ARRAY_SIZE(nulls); i++)
		if (strcmp((const char *)node->data.scalar.value, nulls[i]) == 0)
			return 1;
	return 0;
}

static int has_nul(const yaml_node_t *node)
{
	return strlen((const char *)node->data.scalar.value) != node->data.scalar.length;
}

/* The text of a scalar node; refuses "\0" escapes so C strings see it all. */
static int scalar_text(struct loader *ld, const yaml_node_t *node, const char *path, const char **out)
{
	if (node->type != YAML_SCALAR_NODE)
		return fail(ld, node, "'%s' must be a single value, not %s", path, node_kind(node));
	if (has_nul(node))
		return fail(ld, node, "'%s' contains a NUL character", path);
	*out = (const char *)node->data.scalar.value;
	return 0;
}

static size_t edit_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b), row[65];
	if (la > 64 || lb > 64)
		return SIZE_MAX;
	for (size_t j = 0; j <= lb; j++)
		row[j] = j;
	for (size_t i = 1; i <= la; i++) {
		size_t diag = row[0];
		row[0] = i;
		for (size_t j = 1; j <= lb; j++) {
			size_t up = row[j], best = diag + (a[i - 1] != b[j - 1]);
			if (up + 1 < best)
				best = up + 1;
			if (row[j - 1] + 1 < best)
				best = row[j - 1] + 1;
			row[j] = best;
			diag = up;
		}
	}
	return row[lb];
}

/* "unknown key", with a hint when the key belongs to another section or is
 * a near miss, because most unknown keys are typos or misplaced lines. */
static int unknown_key(struct loader *ld, const yaml_node_t *kn, const struct key_spec *tab,
                       size_t ntab, const char *section, const char *key, const char *prefix)
{
	char shown[64], hint[96] = "";
	size_t best = 3;

	if (strcmp(key, "<<") == 0)
		return fail(ld, kn, "merge keys (<<) are not supported%s%s%s",
		            prefix ? " in '" : "", prefix ? prefix : "", prefix ? "'" : "");
	for (size_t i = 0; i < ntab; i++) {
		if (strcmp(tab[i].name, key) == 0 && strcmp(tab[i].section, section) != 0) {
			snprintf(hint, sizeof(hint), " (did you mean '%s%s%s'?)", tab[i].section,
			         *tab[i].section ? "." : "", tab[i].name);
			break;
		}
		if (strcmp(tab[i].section, section) == 0) {
			size_t d = edit_distance(key, tab[i].name);
			if (d < best && d < strlen(key)) {
				best = d;
				snprintf(hint, sizeof(hint), " (did you mean '%s'?)", tab[i].name);
			}
		}
	}
	show(shown, sizeof(shown), key);
	if (prefix)
		return fail(ld, kn, "unknown key '%s' in '%s'%s", shown, prefix, hint);
	return fail(ld, kn, "unknown key '%s'%s", shown, hint);
}

static int walk_backends(struct loader *ld, yaml_node_t *seq, const yaml_node_t *kn, const char *path);

/*
 * Apply the mapping map to base using the rows of tab in section. seen
 * records where each row's key was found (duplicates and required keys);
 * prefix names the mapping in messages (NULL at the top level).
 */
static int walk_mapping(struct loader *ld, yaml_node_t *map, const struct key_spec *tab, size_t ntab,
                        const char *section, void *base, size_t *seen, const char *prefix)
{
	char path[160];

	for (yaml_node_pair_t *pair = map->data.mapping.pairs.start;
	     pair < map->data.mapping.pairs.top; pair++) {
		yaml_node_t *kn = node_at(ld, pair->key), *vn = node_at(ld, pair->value);
		const struct key_spec *k = NULL;
		const char *key, *text = NULL;

		if (enter(ld, kn, kn, NULL) < 0)
			return -1;
		if (kn->type != YAML_SCALAR_NODE)
			return fail(ld, kn, "a key%s%s%s must be a word, not %s", prefix ? " in '" : "",
			            prefix ? prefix : "", prefix ? "'" : "", node_kind(kn));
		if (has_nul(kn))
			return fail(ld, kn, "a key contains a NUL character");
		key = (const char *)kn->data.scalar.value;
		for (size_t i = 0; i < ntab && !k; i++)
			if (strcmp(tab[i].section, section) == 0 && strcmp(tab[i].name, key) == 0)
				k = &tab[i];
		if (!k)
			return unknown_key(ld, kn, tab, ntab, section, key, prefix);

		snprintf(path, sizeof(path), "%s%s%s", prefix ? prefix : "", prefix ? "." : "", k->name);
		if (seen[k - tab])
			return fail(ld, kn, "duplicate key '%s' (first at line %zu)", path, seen[k - tab]);
		seen[k - tab] = kn->start_mark.line + 1;
		if (enter(ld, vn, kn, path) < 0)
			return -1;

		switch (k->type) {
		case KT_SECTION:
			/* "http:" with every line below commented out is an
			 * empty section, not a mistake. */
			if (is_null(vn))
				break;
			if (vn->type != YAML_MAPPING_NODE)
				return fail(ld, vn, "'%s' must be a mapping of keys, not %s", path, node_kind(vn));
			if (walk_mapping(ld, vn, tab, ntab, k->name, base, seen, path) < 0)
				return -1;
			break;
		case KT_BACKENDS:
			if (walk_backends(ld, vn, kn, path) < 0)
				return -1;
			break;
		default:
			/* An empty value's position is wherever the next token
			 * starts, often a line below: point at the key. */
			if (is_null(vn))
				return fail(ld, kn, "'%s' needs a value", path);
			if (scalar_text(ld, vn, path, &text) < 0)
				return -1;
			if (set_value(ld, k, base, text, vn, path) < 0)
				return -1;
			break;
		}
	}

	for (size_t i = 0; i < ntab; i++) {
		if ((tab[i].flags & KF_REQUIRED) && !seen[i] && strcmp(tab[i].section, section) == 0) {
			snprintf(path, sizeof(path), "%s%s%s", prefix ? prefix : "", prefix ? "." : "", tab[i].name);
			return fail(ld, map, "'%s' is required", path);
		}
	}
	return 0;
}

/* Rules between the keys of one backend, checked once it is complete. */
static int check_backend(struct loader *ld, const yaml_node_t *item,
                         const struct relay_backend_config *b, const char *path)
{
	char lo[32], hi[32];

	/* The backoff draws delays between the two; reversed, every retry
	 * would wait retry_min and the cap would mean nothing. */
	if (b->retry_min_ms > b->retry_max_ms)
		return fail(ld, item, "'%s.retry_min' (%s) must not be more than '%s.retry_max' (%s)",
		            path, fmt_ms(lo, sizeof(lo), b->retry_min_ms), path,
		            fmt_ms(hi, sizeof(hi), b->retry_max_ms));
	return 0;
}

/* Fill base with the defaults of tab; the file's values overwrite them. */
static void apply_defaults(struct loader *ld, const struct key_spec *tab, size_t ntab, void *base)
{
	for (size_t i = 0; i < ntab; i++) {
		if (tab[i].def && set_value(ld, &tab[i], base, tab[i].def, NULL, tab[i].name) < 0)
			relay_fatal("config: built-in default of '%s' is invalid", tab[i].name);
	}
}

static int walk_backends(struct loader *ld, yaml_node_t *seq, const yaml_node_t *kn, const char *path)
{
	struct relay_config *cfg = ld->cfg;
	size_t n;
	char ipath[200];

	if (is_null(seq))
		return fail(ld, kn, "'%s' must list at least one backend", path);
	if (seq->type != YAML_SEQUENCE_NODE)
		return fail(ld, seq, "'%s' must be a sequence of backends (- name: ..., url: ...), not %s",
		            path, node_kind(seq));
	n = (size_t)(seq->data.sequence.items.top - seq->data.sequence.items.start);
	if (n == 0)
		return fail(ld, seq, "'%s' must list at least one backend", path);
	if (n > RELAY_MAX_BACKENDS)
		return fail(ld, node_at(ld, seq->data.sequence.items.start[RELAY_MAX_BACKENDS]),
		            "'%s' has more than %d entries", path, RELAY_MAX_BACKENDS);

	/* Allocated whole and zeroed before any item is read, so a failure
	 * part way leaves only NULLs and owned strings to release. */
	cfg->backends = xcalloc(n, sizeof(*cfg->backends));
	cfg->nbackends = n;
	for (size_t i = 0; i < n; i++) {
		yaml_node_t *item = node_at(ld, seq->data.sequence.items.start[i]);
		snprintf(ipath, sizeof(ipath), "%s[%zu]", path, i);
		if (enter(ld, item, item, ipath) < 0)
			return -1;
		if (item->type != YAML_MAPPING_NODE)
			return fail(ld, item, "'%s' must be a mapping with 'name' and 'url', not %s",
			            ipath, node_kind(item));
		apply_defaults(ld, backend_keys, RELAY_ARRAY_SIZE(backend_keys), &cfg->backends[i]);
		if (walk_mapping(ld, item, backend_keys, RELAY_ARRAY_SIZE(backend_keys), "",
		                 &cfg->backends[i], ld->bseen[i], ipath) < 0)
			return -1;
		if (check_backend(ld, item, &cfg->backends[i], ipath) < 0)
			return -1;
	}
	return 0;
}

/*---- loading ----*/

/* Backend keys left out take the queue: section's values, which may come
 * after the backends in the file, so this runs once everything is read. */
static void apply_inherited(struct loader *ld)
{
	for (size_t b = 0; b < ld->cfg->nbackends; b++) {
		for (size_t i = 0; i < RELAY_ARRAY_SIZE(backend_keys); i++) {
			const struct key_spec *k = &backend_keys[i];
			if ((k->flags & KF_INHERIT) && !ld->bseen[b][i])
				*(uint64_t *)field_at(&ld->cfg->backends[b], k->off) =
					*(uint64_t *)field_at(ld->cfg, k->off_inherit);
		}
	}
}

static void syntax_error(struct loader *ld, const yaml_parser_t *parser, const char *text, size_t len)
{
	const char *problem = parser->problem ? parser->problem : "cannot parse";

	if (parser->error == YAML_MEMORY_ERROR)
		relay_fatal("out of memory parsing %s", ld->name);
	if (parser->error == YAML_READER_ERROR) {
		/* The reader reports a byte offset, not a mark; for UTF-8
		 * (every sane config) turn it into a line and column. */
		yaml_mark_t mark = { 0, 0, 0 };
		size_t off = parser->problem_offset < len ? parser->problem_offset : len;
		if (parser->encoding != YAML_UTF8_ENCODING) {
			fail_at(ld, NULL, "invalid yaml at byte %zu: %s", parser->problem_offset, problem);
			return;
		}
		for (size_t i = 0; i < off; i++) {
			if (text[i] == '\n') {
				mark.line++;
				mark.column = 0;
			} else if (((unsigned char)text[i] & 0xc0) != 0x80) {
				mark.column++;
			}
		}
		fail_at(ld, &mark, "invalid yaml: %s", problem);
		return;
	}
	if (parser->context)
		fail_at(ld, &parser->problem_mark, "invalid yaml: %s (%s at line %zu)", problem,
		        parser->context, parser->context_mark.line + 1);
	else
		fail_at(ld, &parser->problem_mark, "invalid yaml: %s", problem);
}

/*
 * libyaml's scanner revisits every open flow level on each token, so
 * "[[[[..." costs time quadratic in its depth: 80KiB of brackets take
 * seconds, 1MiB hours. A pass over the events that stops at
 * CONFIG_MAX_DEPTH bounds that work before the document is built. It
 * meets any syntax error first, and reports it as the load would.
 */
static int check_depth(struct loader *ld, const char *text, size_t len)
{
	yaml_parser_t parser;
	yaml_event_t ev;
	int depth = 0, rc = 0, done = 0;

	if (!yaml_parser_initialize(&parser))
		relay_fatal("out of memory starting the yaml parser");
	yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
	while (!done && rc == 0) {
		if (!yaml_parser_parse(&parser, &ev)) {
			syntax_error(ld, &parser, text, len);
			rc = -1;
			break;
		}
		switch (ev.type) {
		case YAML_SEQUENCE_START_EVENT:
		case YAML_MAPPING_START_EVENT:
			if (++depth > CONFIG_MAX_DEPTH)
				rc = fail_at(ld, &ev.start_mark, "nesting deeper than %d levels", CONFIG_MAX_DEPTH);
			break;
		case YAML_SEQUENCE_END_EVENT:
		case YAML_MAPPING_END_EVENT:
			depth--;
			break;
		case YAML_STREAM_END_EVENT:
			done = 1;
			break;
		default:
			break;
		}
		yaml_event_delete(&ev);
	}
	yaml_parser_delete(&parser);
	return rc;
}

/* Load the one document of text into *doc; on failure *doc is empty. */
static int parse_document(struct loader *ld, const char *text, size_t len, yaml_document_t *doc)
{
	yaml_parser_t parser;
	yaml_document_t extra;
	int rc = -1;

	if (!yaml_parser_initialize(&parser))
		relay_fatal("out of memory starting the yaml parser");
	yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
	/* The whole stream is parsed before anything is judged, so a syntax
	 * error anywhere is reported ahead of a bad value above it. */
	if (!yaml_parser_load(&parser, doc)) {
		syntax_error(ld, &parser, text, len);
		goto out;
	}
	/* A document with no root is the end of the stream. */
	if (yaml_document_get_root_node(doc)) {
		yaml_node_t *second;
		if (!yaml_parser_load(&parser, &extra)) {
			syntax_error(ld, &parser, text, len);
			yaml_document_delete(doc);
			goto out;
		}
		second = yaml_document_get_root_node(&extra);
		if (second) {
			fail(ld, second, "only one yaml document is allowed (remove the second '---')");
			yaml_document_delete(&extra);
			yaml_document_delete(doc);
			goto out;
		}
		yaml_document_delete(&extra);
	}
	rc = 0;
out:
	yaml_parser_delete(&parser);
	return rc;
}

static int apply_document(struct loader *ld, yaml_document_t *doc)
{
	yaml_node_t *root = yaml_document_get_root_node(doc);
	int rc;

	if (!root || is_null(root))
		return fail(ld, NULL, "empty configuration ('data_dir' and 'backends' are required)");
	if (root->type != YAML_MAPPING_NODE)
		return fail(ld, root, "the configuration must be a mapping of keys, not %s", node_kind(root));
	ld->doc = doc;
	ld->visited = xcalloc((size_t)(doc->nodes.top - doc->nodes.start), 1);
	ld->visited[root - doc->nodes.start] = 1;
	rc = walk_mapping(ld, root, keys, RELAY_ARRAY_SIZE(keys), "", ld->cfg, ld->seen, NULL);
	if (rc == 0)
		apply_inherited(ld);
	free(ld->visited);
	ld->visited = NULL;
	return rc;
}

int config_load_buffer(const char *name, const char *text, size_t len,
                       struct relay_config *cfg, char *err, size_t errlen)
{
	/* On the heap: bseen alone is a few KiB, and this runs in fuzzers
	 * and on small thread stacks alike. */
	struct loader *ld = xcalloc(1, sizeof(*ld));
	yaml_document_t doc;
	int rc = -1;

	memset(cfg, 0, sizeof(*cfg));
	if (err && errlen)
		err[0] = '\0';
	if (!text) {
		text = "";
		len = 0;
	}
	ld->name = name;
	ld->cfg = cfg;
	ld->err = err;
	ld->errlen = errlen;
	/* Defaults first, then the file overwrites them: every field is
	 * set even when its key is absent. */
	cfg->path = xstrdup(name);
	apply_defaults(ld, keys, RELAY_ARRAY_SIZE(keys), cfg);

	if (check_depth(ld, text, len) == 0 && parse_document(ld, text, len, &doc) == 0) {
		rc = apply_document(ld, &doc);
		yaml_document_delete(&doc);
	}
	free(ld);
	/* Whatever was filled in before the error goes; *cfg ends zeroed. */
	if (rc < 0)
		config_release(cfg);
	return rc;
}

int config_load(const char *path, struct relay_config *cfg, char *err, size_t errlen)
{
	struct rbuf buf = RBUF_INIT;
	char chunk[8192];
	size_t n;
	FILE *f;
	int rc;

	memset(cfg, 0, sizeof(*cfg));
	f = fopen(path, "rb");
	if (!f) {
		if (err && errlen)
			snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
		return -1;
	}
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
		rbuf_append(&buf, chunk, n);
		if (buf.len > CONFIG_MAX_FILE_BYTES) {
			if (err && errlen)
				snprintf(err, errlen, "%s: cannot read: larger than 1MiB, "
				         "not a configuration file", path);
			goto fail;
		}
	}
	if (ferror(f)) {
		/* fread leaves errno set, e.g. EISDIR for a directory. */
		if (err && errlen)
			snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
		goto fail;
	}
	fclose(f);
	rc = config_load_buffer(path, buf.data ? buf.data : "", buf.len, cfg, err, errlen);
	rbuf_release(&buf);
	return rc;

fail:
	fclose(f);
	rbuf_release(&buf);
	return -1;
}

void config_release(struct relay_config *cfg)
{
	if (!cfg)
		return;
	for (size_t i = 0; i < cfg->nbackends; i++)
		release_fields(backend_keys, RELAY_ARRAY_SIZE(backend_keys), &cfg->backends[i]);
	free(cfg->backends);
	release_fields(keys, RELAY_ARRAY_SIZE(keys), cfg);
	free(cfg->path);
	memset(cfg, 0, sizeof(*cfg));
}

uint64_t config_map_size(const struct relay_config *cfg)
{
	uint64_t total = 64 * MIB;

	if (cfg->queue_map_bytes)
		return cfg->queue_map_bytes;
	/* Saturate: limits in the exabytes are legal to write, and a wrapped
	 * sum would hand LMDB a tiny map. */
	for (size_t i = 0; i < cfg->nbackends; i++) {
		uint64_t b = cfg->backends[i].max_bytes;
		if (b > UINT64_MAX / 2 || 2 * b > UINT64_MAX - total)
			return UINT64_MAX;
		total += 2 * b;
	}
	return total;
}
