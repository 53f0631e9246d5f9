/*
 * config: turn relayd.yaml into a struct relay_config. libyaml builds the
 * document tree; one table of keys (type, where the value goes, default,
 * bounds, description) drives every check, so a new setting is one row.
 * The first problem is reported as "FILE:LINE:COL: what is wrong", pointing
 * at the node that is wrong, and a failed load leaves nothing allocated.
 * Never logs and never touches the data directory or the network: relayctl
 * check-config and the fuzzer call it as it is.
 */
#include "relay/base/config.h"
#include "relay/base/lineproto.h"
#include "relay/base/util.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>

#define MIB (1024ULL * 1024)
/* A configuration is a few kilobytes; anything this big is the wrong file
 * (a log, a database) and reading it all would only delay the error. */
#define CONFIG_MAX_FILE_BYTES ((size_t)1 << 20)
#define BACKEND_NAME_MAX WAL_NAME_MAX /* the queue's limit */
/* The deepest valid file is four levels (top, auth, users, one user). */
#define CONFIG_MAX_DEPTH 16

/*---- the key table ----*/

enum key_type {
	KT_SECTION,   /* a mapping holding the rows whose section is this name */
	KT_LIST,      /* a sequence of mappings, described by .list */
	KT_STRING,    /* char *, not empty */
	KT_LOG_LEVEL, /* char *, one of log_levels[] */
	KT_LOG_OUTPUT, /* char *: "stderr", "syslog" or an absolute path */
	KT_HOSTPORT,  /* char * as written, plus off_host (char *), off_port (uint16_t) */
	KT_URL,       /* char * as written, plus off_host, off_port and off_path (char *) */
	KT_NAME,      /* char *, a name: [A-Za-z0-9_.-]{1,64} */
	KT_SIZE,      /* uint64_t bytes, parse_size */
	KT_DURATION,  /* uint64_t milliseconds, parse_duration_ms */
	KT_SECONDS,   /* uint64_t whole seconds, written as a duration */
	KT_UINT32,    /* uint32_t, a plain decimal integer */
	KT_ENUM,      /* int (or an int-sized enum): one of the words of .enm */
	KT_PRECISION, /* int (enum lp_precision): ns, u, ms, s, m, h as on /write */
};

#define KF_REQUIRED 0x1 /* a mapping without it is refused */
#define KF_ZERO_OK  0x2 /* 0 ("none", "derived") is accepted besides [min, max] */
#define KF_INHERIT  0x4 /* backend key: unset means the relay_config field at off_inherit */
#define KF_UNIQUE   0x8 /* list item key: no two items of the list may share the value */
#define KF_SECRET   0x10 /* a password or token: never repeated in a message */

struct loader;
struct key_spec;

/* The words a KT_ENUM key takes and the values they stand for. */
struct enum_word {
	const char *name;
	int value;
};
struct enum_spec {
	const struct enum_word *words;
	size_t n;
	const char *hint; /* for messages: "true or false" */
};

/* YAML 1.1's booleans, which is what libyaml users expect "yes" to mean. */
static const struct enum_word bool_words[] = {
	{ "true", 1 }, { "True", 1 }, { "TRUE", 1 }, { "yes", 1 }, { "Yes", 1 }, { "YES", 1 },
	{ "on", 1 }, { "On", 1 }, { "ON", 1 },
	{ "false", 0 }, { "False", 0 }, { "FALSE", 0 }, { "no", 0 }, { "No", 0 }, { "NO", 0 },
	{ "off", 0 }, { "Off", 0 }, { "OFF", 0 },
};
static const struct enum_word db_policy_words[] = {
	{ "hold", RELAY_DB_HOLD }, { "create", RELAY_DB_CREATE }, { "dead_letter", RELAY_DB_DEAD_LETTER },
};
static const struct enum_word api_words[] = {
	{ "v1", RELAY_API_V1 }, { "v2", RELAY_API_V2 },
};
/* KT_ENUM stores through an int: the enums it fills must be int-sized. */
_Static_assert(sizeof(enum relay_db_policy) == sizeof(int) && sizeof(enum relay_api) == sizeof(int),
               "KT_ENUM fields are stored as int");
static const struct enum_spec bool_enum = { bool_words, RELAY_ARRAY_SIZE(bool_words), "true or false" };
static const struct enum_spec db_policy_enum = { db_policy_words, RELAY_ARRAY_SIZE(db_policy_words),
	                                         "one of hold, create, dead_letter" };
static const struct enum_spec api_enum = { api_words, RELAY_ARRAY_SIZE(api_words), "v1 or v2" };

/* A sequence of mappings (backends, listen.udp, auth.users ...): an array
 * of elem_size items in struct relay_config, each filled from keys. */
struct list_spec {
	int index;                  /* LIST_*: which seen-array of the loader */
	const struct key_spec *keys;
	size_t nkeys;
	size_t elem_size;
	size_t off_items, off_count; /* the array pointer and its size_t count in relay_config */
	size_t min, max;            /* items */
	const char *noun;           /* one item, for messages: "backend" */
	const char *needs;          /* its required keys, for messages: "'name' and 'url'" */
	/* Rules between the keys of one item, once it is complete; NULL = none. */
	int (*check)(struct loader *ld, const yaml_node_t *item, void *elem, const char *path);
};

struct key_spec {
	const char *section; /* "" for the top level, else the KT_SECTION row's name */
	const char *name;
	enum key_type type;
	unsigned flags;      /* KF_* */
	size_t off;          /* the field the value goes to */
	size_t off_host, off_port, off_path; /* the parsed parts of KT_HOSTPORT, KT_URL */
	size_t off_inherit;  /* KF_INHERIT: the struct relay_config field to copy */
	const struct list_spec *list; /* KT_LIST */
	const struct enum_spec *enm;  /* KT_ENUM */
	const char *def;     /* default in the file's own notation; NULL = none */
	uint64_t min, max;   /* bounds in the stored unit (bytes, ms, s, count) */
	const char *desc;    /* what the key does (the man page says the same) */
};

#define CF(f) offsetof(struct relay_config, f)
#define BF(f) offsetof(struct relay_backend_config, f)
#define UF(f) offsetof(struct relay_udp_config, f)
#define AF(f) offsetof(struct relay_user_config, f)
#define TF(f) offsetof(struct relay_token_config, f)
#define SECTION(key, text) \
	{ .section = "", .name = key, .type = KT_SECTION, .desc = text }
#define KEY(sec, key, ty, fl, field, dflt, lo, hi, text) \
	{ .section = sec, .name = key, .type = ty, .flags = fl, .off = CF(field), \
	  .def = dflt, .min = lo, .max = hi, .desc = text }

#define BKEY(key, ty, fl, field, dflt, lo, hi, text) \
	{ .section = "", .name = key, .type = ty, .flags = fl, .off = BF(field), \
	  .def = dflt, .min = lo, .max = hi, .desc = text }

/* The keys of one item of backends; offsets are into relay_backend_config.
 * KF_INHERIT rows take their default from queue: instead of def. */
static const struct key_spec backend_keys[] = {
	BKEY("name", KT_NAME, KF_REQUIRED | KF_UNIQUE, name, NULL, 0, 0,
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
	{ .section = "", .name = "on_database_not_found", .type = KT_ENUM, .enm = &db_policy_enum,
	  .off = BF(on_database_not_found), .def = "hold",
	  .desc = "on a 404 \"database not found\": hold (keep, retry), create, or dead_letter" },
	{ .section = "", .name = "gzip", .type = KT_ENUM, .enm = &bool_enum, .off = BF(gzip), .def = "false",
	  .desc = "send writes compressed (Content-Encoding: gzip)" },
	{ .section = "", .name = "type", .type = KT_ENUM, .enm = &api_enum, .off = BF(type), .def = "v1",
	  .desc = "the backend's write API: v1 (/write) or v2 (/api/v2/write)" },
	BKEY("username", KT_STRING, 0, username, NULL, 0, 0,
	     "v1: user sent instead of the writer's credentials (with password)"),
	BKEY("password", KT_STRING, KF_SECRET, password, NULL, 0, 0,
	     "v1: password of username"),
	BKEY("org", KT_STRING, 0, org, NULL, 0, 0,
	     "v2: organisation written to; default the writer's org"),
	BKEY("token", KT_STRING, KF_SECRET, token, NULL, 0, 0,
	     "token sent as Authorization: Token instead of the writer's credentials (1.8+: user:password)"),
};

#define UKEY(key, ty, fl, field, dflt, lo, hi, text) \
	{ .section = "", .name = key, .type = ty, .flags = fl, .off = UF(field), \
	  .def = dflt, .min = lo, .max = hi, .desc = text }

/* The keys of one item of listen.udp. */
static const struct key_spec udp_keys[] = {
	{ .section = "", .name = "address", .type = KT_HOSTPORT, .flags = KF_REQUIRED | KF_UNIQUE,
	  .off = UF(address), .off_host = UF(host), .off_port = UF(port),
	  .desc = "HOST:PORT the datagrams arrive on" },
	UKEY("db", KT_STRING, KF_REQUIRED, db, NULL, 0, 0, "database the points are written to"),
	UKEY("rp", KT_STRING, 0, rp, NULL, 0, 0, "retention policy; default the database's"),
	UKEY("precision", KT_PRECISION, 0, precision, "ns", 0, 0,
	     "unit of the datagrams' timestamps: ns, u, ms, s, m or h"),
	UKEY("flush_interval", KT_DURATION, 0, flush_ms, "100ms", 1, 60000,
	     "datagrams are grouped this long before they are committed"),
	UKEY("batch_max_size", KT_SIZE, 0, batch_max_bytes, "1MiB", 1024, 64 * MIB,
	     "... or until this many bytes arrived"),
	UKEY("read_buffer", KT_SIZE, KF_ZERO_OK, read_buffer, "0", 4096, 1ULL << 30,
	     "socket receive buffer (SO_RCVBUF); 0 = the system's default"),
};

/* The keys of one item of auth.users and of auth.tokens. */
static const struct key_spec user_keys[] = {
	{ .section = "", .name = "name", .type = KT_STRING, .flags = KF_REQUIRED | KF_UNIQUE,
	  .off = AF(name), .desc = "user name (u=, Basic auth)" },
	{ .section = "", .name = "password", .type = KT_STRING,
	  .flags = KF_REQUIRED | KF_SECRET, .off = AF(password), .desc = "its password" },
};
static const struct key_spec token_keys[] = {
	{ .section = "", .name = "name", .type = KT_NAME, .flags = KF_REQUIRED | KF_UNIQUE,
	  .off = TF(name), .desc = "names the token in logs (the token itself is never logged)" },
	{ .section = "", .name = "token", .type = KT_STRING, .flags = KF_REQUIRED | KF_UNIQUE | KF_SECRET,
	  .off = TF(token), .desc = "the secret a writer sends as Authorization: Token TOKEN" },
};

enum { LIST_BACKENDS, LIST_UDP, LIST_USERS, LIST_TOKENS, NLISTS };

static int check_backend(struct loader *ld, const yaml_node_t *item, void *elem, const char *path);

static const struct list_spec backend_list = {
	.index = LIST_BACKENDS, .keys = backend_keys, .nkeys = RELAY_ARRAY_SIZE(backend_keys),
	.elem_size = sizeof(struct relay_backend_config),
	.off_items = CF(backends), .off_count = CF(nbackends), .min = 1, .max = RELAY_MAX_BACKENDS,
	.noun = "backend", .needs = "'name' and 'url'", .check = check_backend,
};
static const struct list_spec udp_list = {
	.index = LIST_UDP, .keys = udp_keys, .nkeys = RELAY_ARRAY_SIZE(udp_keys),
	.elem_size = sizeof(struct relay_udp_config),
	.off_items = CF(udp), .off_count = CF(nudp), .min = 0, .max = 64,
	.noun = "listener", .needs = "'address' and 'db'",
};
static const struct list_spec user_list = {
	.index = LIST_USERS, .keys = user_keys, .nkeys = RELAY_ARRAY_SIZE(user_keys),
	.elem_size = sizeof(struct relay_user_config),
	.off_items = CF(auth_users), .off_count = CF(nauth_users), .min = 0, .max = 10000,
	.noun = "user", .needs = "'name' and 'password'",
};
static const struct list_spec token_list = {
	.index = LIST_TOKENS, .keys = token_keys, .nkeys = RELAY_ARRAY_SIZE(token_keys),
	.elem_size = sizeof(struct relay_token_config),
	.off_items = CF(auth_tokens), .off_count = CF(nauth_tokens), .min = 0, .max = 10000,
	.noun = "token", .needs = "'name' and 'token'",
};

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
	KEY("", "log_output", KT_LOG_OUTPUT, 0, log_output, "stderr", 0, 0,
	    "where log lines go: stderr, syslog, or the absolute path of a file"),
	KEY("", "user", KT_STRING, 0, user, NULL, 0, 0,
	    "started as root, relayd runs as this user (and its groups) before it opens anything"),

	SECTION("listen", "addresses relayd accepts connections on"),
	{ .section = "listen", .name = "http", .type = KT_HOSTPORT, .off = CF(listen_http),
	  .off_host = CF(listen_http_host), .off_port = CF(listen_http_port),
	  .def = "127.0.0.1:9096",
	  .desc = "HOST:PORT of the InfluxDB-compatible /write, /api/v2/write, /ping and /health endpoint" },
	{ .section = "listen", .name = "udp", .type = KT_LIST, .list = &udp_list,
	  .desc = "UDP listeners for line protocol, each for one database" },

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
	KEY("http", "max_buffered_size", KT_SIZE, 0, http_max_buffered_bytes, "512MiB", MIB, UINT64_MAX,
	    "request bodies held in memory across all connections (as received, inflated and stamped); "
	    "a write beyond gets 503"),

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

	SECTION("auth", "who may write (off by default)"),
	{ .section = "auth", .name = "enabled", .type = KT_ENUM, .enm = &bool_enum, .off = CF(auth_enabled),
	  .def = "false", .desc = "require a listed user or token on every write" },
	{ .section = "auth", .name = "users", .type = KT_LIST, .list = &user_list,
	  .desc = "users (name, password): v1 u/p parameters, Basic auth, or Token name:password" },
	{ .section = "auth", .name = "tokens", .type = KT_LIST, .list = &token_list,
	  .desc = "tokens (name, token): Authorization: Token (or Bearer) TOKEN" },

	{ .section = "", .name = "backends", .type = KT_LIST, .flags = KF_REQUIRED, .list = &backend_list,
	  .desc = "InfluxDB servers every write is forwarded to" },
};


static const char *const log_levels[] = { "debug", "info", "notice", "warn", "error" };
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
	/* The same for the items of each list: item i's row j at
	 * lseen[list][i * nkeys + j]. */
	size_t *lseen[NLISTS];
	/* The list whose item is being read, and its index, so that a
	 * KF_UNIQUE value can be compared with the items before it. */
	const struct list_spec *cur_list;
	size_t cur_item;
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
	const char *items = *(char **)field_at(ld->cfg, l->off_items);
	for (size_t i = 0; i < ld->cur_item; i++) {
		const char *other = *(char **)(items + i * l->elem_size + k->off);
		size_t line;
		if (!other || strcmp(other, text) != 0)
			continue;
		line = ld->lseen[l->index][i * l->nkeys + (size_t)(k - l->keys)];
		if (k->flags & KF_SECRET)
			return fail(ld, at, "this %s is already used at line %zu", k->name, line);
		return fail(ld, at, "duplicate %s %s '%s' (first at line %zu)", l->noun, k->name,
		            show(shown, sizeof(shown), text), line);
	}
	return 0;
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
		/* Names, credentials and paths all end up in HTTP headers, query
		 * strings, queue records or log lines, where a control byte
		 * starts a line of its own. */
		for (const char *c = text; *c; c++)
			if ((unsigned char)*c < 0x20 || *c == 0x7f)
				return fail(ld, at, "'%s' must not contain control characters", path);
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
		return fail(ld, at, "'%s' must be one of debug, info, notice, warn, error, not '%s'",
		            path, show(shown, sizeof(shown), text));

	case KT_LOG_OUTPUT:
		/* A relative path would depend on the directory relayd was
		 * started from, which a daemon leaves for "/". */
		if (strcmp(text, "stderr") && strcmp(text, "syslog") && text[0] != '/')
			return fail(ld, at, "'%s' must be stderr, syslog or an absolute file path, not '%s'",
			            path, show(shown, sizeof(shown), text));
		replace_str(base, k->off, xstrdup(text));
		return 0;

	case KT_HOSTPORT: {
		char *host;
		uint16_t port;
		if (parse_hostport(text, &host, &port, why, sizeof(why)) < 0)
			return fail(ld, at, "'%s' must be an address like 127.0.0.1:9096: %s", path, why);
		if (check_unique(ld, k, text, at) < 0) {
			free(host);
			return -1;
		}
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

	case KT_NAME:
		if (!valid_backend_name(text))
			return fail(ld, at, "'%s' must be 1-%d characters of A-Z a-z 0-9 _ . -, not '%s'",
			            path, BACKEND_NAME_MAX, show(shown, sizeof(shown), text));
		if (check_unique(ld, k, text, at) < 0)
			return -1;
		replace_str(base, k->off, xstrdup(text));
		return 0;

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

	case KT_ENUM:
		for (size_t i = 0; i < k->enm->n; i++) {
			if (strcmp(text, k->enm->words[i].name) == 0) {
				*(int *)field_at(base, k->off) = k->enm->words[i].value;
				return 0;
			}
		}
		return fail(ld, at, "'%s' must be %s, not '%s'", path, k->enm->hint, show(shown, sizeof(shown), text));

	case KT_PRECISION: {
		enum lp_precision p;
		if (lp_precision_parse(text, &p) < 0)
			return fail(ld, at, "'%s' must be one of ns, u, ms, s, m, h, not '%s'",
			            path, show(shown, sizeof(shown), text));
		*(int *)field_at(base, k->off) = (int)p;
		return 0;
	}

	case KT_SECTION:
	case KT_LIST:
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
		case KT_LOG_OUTPUT:
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

static int walk_list(struct loader *ld, const struct list_spec *l, yaml_node_t *seq,
                     const yaml_node_t *kn, const char *path);

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
		case KT_LIST:
			if (walk_list(ld, k->list, vn, kn, path) < 0)
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
static int check_backend(struct loader *ld, const yaml_node_t *item, void *elem, const char *path)
{
	const struct relay_backend_config *b = elem;
	char lo[32], hi[32];

	if (!b->username != !b->password)
		return fail(ld, item, "'%s' needs both 'username' and 'password', or neither", path);
	if (b->username && b->token)
		return fail(ld, item, "'%s' has both 'username' and 'token': give one kind of credentials", path);
	if (b->type == RELAY_API_V2 && b->username)
		return fail(ld, item, "'%s' is type v2: a v2 write authenticates with 'token' "
		            "(for InfluxDB 1.8, token: \"username:password\")", path);
	/* Creating a v2 bucket needs an org ID and a retention, which a
	 * relay cannot guess. */
	if (b->type == RELAY_API_V2 && b->on_database_not_found == RELAY_DB_CREATE)
		return fail(ld, item, "'%s' is type v2: on_database_not_found: create works with v1 backends only "
		            "(use hold or dead_letter)", path);
	if (b->type == RELAY_API_V1 && b->org)
		return fail(ld, item, "'%s.org' applies to type v2 backends only", path);

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

static int walk_list(struct loader *ld, const struct list_spec *l, yaml_node_t *seq,
                     const yaml_node_t *kn, const char *path)
{
	struct relay_config *cfg = ld->cfg;
	size_t n;
	char ipath[200];
	char *items;

	if (is_null(seq)) {
		if (l->min == 0)
			return 0; /* "udp:" with every item commented out */
		return fail(ld, kn, "'%s' must list at least one %s", path, l->noun);
	}
	if (seq->type != YAML_SEQUENCE_NODE)
		return fail(ld, seq, "'%s' must be a sequence of %ss (- %s ...), not %s",
		            path, l->noun, l->needs, node_kind(seq));
	n = (size_t)(seq->data.sequence.items.top - seq->data.sequence.items.start);
	if (n < l->min)
		return fail(ld, seq, "'%s' must list at least one %s", path, l->noun);
	if (n > l->max)
		return fail(ld, node_at(ld, seq->data.sequence.items.start[l->max]),
		            "'%s' has more than %zu entries", path, l->max);
	if (n == 0)
		return 0;

	/* Allocated whole and zeroed before any item is read, so a failure
	 * part way leaves only NULLs and owned strings to release. */
	items = xcalloc(n, l->elem_size);
	*(char **)field_at(cfg, l->off_items) = items;
	*(size_t *)field_at(cfg, l->off_count) = n;
	ld->lseen[l->index] = xcalloc(n * l->nkeys, sizeof(size_t));
	for (size_t i = 0; i < n; i++) {
		yaml_node_t *item = node_at(ld, seq->data.sequence.items.start[i]);
		void *elem = items + i * l->elem_size;
		snprintf(ipath, sizeof(ipath), "%s[%zu]", path, i);
		if (enter(ld, item, item, ipath) < 0)
			return -1;
		if (item->type != YAML_MAPPING_NODE)
			return fail(ld, item, "'%s' must be a mapping with %s, not %s",
			            ipath, l->needs, node_kind(item));
		ld->cur_list = NULL; /* defaults are never duplicates */
		apply_defaults(ld, l->keys, l->nkeys, elem);
		ld->cur_list = l;
		ld->cur_item = i;
		if (walk_mapping(ld, item, l->keys, l->nkeys, "", elem,
		                 ld->lseen[l->index] + i * l->nkeys, ipath) < 0)
			return -1;
		ld->cur_list = NULL;
		if (l->check && l->check(ld, item, elem, ipath) < 0)
			return -1;
	}
	return 0;
}

/*---- loading ----*/

/* Backend keys left out take the queue: section's values, which may come
 * after the backends in the file, so this runs once everything is read. */
static void apply_inherited(struct loader *ld)
{
	const size_t nk = RELAY_ARRAY_SIZE(backend_keys);
	for (size_t b = 0; b < ld->cfg->nbackends; b++) {
		for (size_t i = 0; i < nk; i++) {
			const struct key_spec *k = &backend_keys[i];
			if ((k->flags & KF_INHERIT) && !ld->lseen[LIST_BACKENDS][b * nk + i])
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

/* The line a top-level key was seen on, as a mark for messages. */
static yaml_mark_t key_mark(struct loader *ld, const char *section, const char *name)
{
	yaml_mark_t m = { 0, 0, 0 };
	for (size_t i = 0; i < RELAY_ARRAY_SIZE(keys); i++)
		if (strcmp(keys[i].section, section) == 0 && strcmp(keys[i].name, name) == 0 && ld->seen[i])
			m.line = ld->seen[i] - 1;
	return m;
}

/* Rules between keys of different sections, once everything is read. */
static int check_config(struct loader *ld)
{
	const struct relay_config *cfg = ld->cfg;

	/* Auth switched on with nobody allowed in would refuse every write,
	 * which is never what the operator meant. */
	if (cfg->auth_enabled && cfg->nauth_users == 0 && cfg->nauth_tokens == 0) {
		yaml_mark_t m = key_mark(ld, "auth", "enabled");
		return fail_at(ld, &m, "'auth.enabled' is true but neither 'auth.users' nor 'auth.tokens' lists anyone");
	}
	/* A body of max_body_size must fit in the door's memory budget, or
	 * the largest writes could never be taken. */
	if (cfg->http_max_buffered_bytes < cfg->http_max_body_bytes) {
		yaml_mark_t m = key_mark(ld, "http", "max_buffered_size");
		return fail_at(ld, &m, "'http.max_buffered_size' (%" PRIu64 " bytes) must be at least "
		               "'http.max_body_size' (%" PRIu64 " bytes)",
		               cfg->http_max_buffered_bytes, cfg->http_max_body_bytes);
	}
	return 0;
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
	if (rc == 0)
		rc = check_config(ld);
	free(ld->visited);
	ld->visited = NULL;
	return rc;
}

int config_load_buffer(const char *name, const char *text, size_t len,
                       struct relay_config *cfg, char *err, size_t errlen)
{
	/* On the heap: seen and the list tables are a few KiB, and this runs in fuzzers
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
	for (size_t i = 0; i < NLISTS; i++)
		free(ld->lseen[i]);
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
	/* Each list's items, then the lists (the array pointers and counts
	 * are plain fields of cfg, zeroed below). */
	for (size_t i = 0; i < RELAY_ARRAY_SIZE(keys); i++) {
		const struct list_spec *l = keys[i].list;
		char *items;
		size_t n;
		if (keys[i].type != KT_LIST)
			continue;
		items = *(char **)field_at(cfg, l->off_items);
		n = *(size_t *)field_at(cfg, l->off_count);
		for (size_t j = 0; items && j < n; j++)
			release_fields(l->keys, l->nkeys, items + j * l->elem_size);
		free(items);
	}
	release_fields(keys, RELAY_ARRAY_SIZE(keys), cfg);
	free(cfg->path);
	memset(cfg, 0, sizeof(*cfg));
}

/* Whether the values of every key of tab are the same in a and b. A URL or
 * an address compares as written: its parsed parts follow from it. */
static int fields_equal(const struct key_spec *tab, size_t n, const void *a, const void *b)
{
	for (size_t i = 0; i < n; i++) {
		const struct key_spec *k = &tab[i];
		const void *fa = (const char *)a + k->off, *fb = (const char *)b + k->off;
		switch (k->type) {
		case KT_STRING:
		case KT_LOG_LEVEL:
		case KT_LOG_OUTPUT:
		case KT_HOSTPORT:
		case KT_URL:
		case KT_NAME: {
			const char *sa = *(char *const *)fa, *sb = *(char *const *)fb;
			if (!sa != !sb || (sa && strcmp(sa, sb) != 0))
				return 0;
			break;
		}
		case KT_SIZE:
		case KT_DURATION:
		case KT_SECONDS:
			if (*(const uint64_t *)fa != *(const uint64_t *)fb)
				return 0;
			break;
		case KT_UINT32:
			if (*(const uint32_t *)fa != *(const uint32_t *)fb)
				return 0;
			break;
		case KT_ENUM:
		case KT_PRECISION:
			if (*(const int *)fa != *(const int *)fb)
				return 0;
			break;
		case KT_SECTION:
		case KT_LIST:
			break;
		}
	}
	return 1;
}

int config_backend_equal(const struct relay_backend_config *a, const struct relay_backend_config *b)
{
	return fields_equal(backend_keys, RELAY_ARRAY_SIZE(backend_keys), a, b);
}

int config_udp_equal(const struct relay_udp_config *a, const struct relay_udp_config *b)
{
	return fields_equal(udp_keys, RELAY_ARRAY_SIZE(udp_keys), a, b);
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

int config_secrets_exposed(const struct relay_config *cfg, char *why, size_t whylen)
{
	const char *what = NULL;
	struct stat st;

	if (cfg->nauth_users)
		what = "auth.users passwords";
	else if (cfg->nauth_tokens)
		what = "auth.tokens";
	for (size_t i = 0; !what && i < cfg->nbackends; i++)
		if (cfg->backends[i].password || cfg->backends[i].token)
			what = "backend credentials";
	if (!what || !cfg->path || stat(cfg->path, &st) < 0 || !(st.st_mode & S_IROTH))
		return 0;
	snprintf(why, whylen, "%s holds %s and is readable by every user (mode %04o): chmod o-r %s",
	         cfg->path, what, (unsigned)(st.st_mode & 07777), cfg->path);
	return 1;
}

/* Saturating a + b: limits in the exabytes are legal to write. */
static uint64_t sat_add(uint64_t a, uint64_t b)
{
	return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

static uint64_t sat_mul(uint64_t a, uint64_t b)
{
	return b && a > UINT64_MAX / b ? UINT64_MAX : a * b;
}

uint64_t config_memory_ceiling(const struct relay_config *cfg)
{
	/* The fixed part: code, libraries, LMDB's reader table, the log and
	 * the loop's own buffers, with room to spare. */
	uint64_t total = 64 * MIB;

	total = sat_add(total, cfg->http_max_buffered_bytes);
	total = sat_add(total, sat_mul(cfg->http_max_connections, CONFIG_CONN_BYTES));
	for (size_t i = 0; i < cfg->nbackends; i++)
		total = sat_add(total, sat_mul(cfg->backends[i].batch_max_bytes, CONFIG_ROUND_COPIES));
	for (size_t i = 0; i < cfg->nudp; i++)
		total = sat_add(total, sat_add(sat_mul(cfg->udp[i].batch_max_bytes, 2), 64 * 1024));
	return total;
}

unsigned config_lp_flags(const struct relay_config *cfg)
{
	for (size_t i = 0; i < cfg->nbackends; i++)
		if (cfg->backends[i].type == RELAY_API_V1)
			return LP_F_NO_UNSIGNED;
	return 0;
}
