/*
 * config_keys: every key of relayd.yaml, one row each (type, where the
 * value goes, default, bounds, description), and the rules between the
 * keys of one backend. The loader (config.c) and the value checks
 * (config_value.c) are driven by these tables; a new setting is one row.
 */
#include "relay/base/config_internal.h"

#include <stddef.h>

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
_Static_assert(sizeof(enum relay_db_policy) == sizeof(int) && sizeof(enum relay_api) == sizeof(int) &&
               sizeof(enum relay_when_behind) == sizeof(int) && sizeof(enum relay_state_changing) == sizeof(int),
               "KT_ENUM fields are stored as int");
static const struct enum_word behind_words[] = {
	{ "least_behind", RELAY_BEHIND_LEAST }, { "refuse", RELAY_BEHIND_REFUSE },
};
static const struct enum_word state_words[] = {
	{ "refuse", RELAY_STATE_REFUSE }, { "queue", RELAY_STATE_QUEUE },
};
static const struct enum_spec behind_enum = { behind_words, RELAY_ARRAY_SIZE(behind_words),
	                                      "least_behind or refuse" };
static const struct enum_spec state_enum = { state_words, RELAY_ARRAY_SIZE(state_words), "refuse or queue" };
static const struct enum_word log_format_words[] = {
	{ "text", RELAY_LOG_FORMAT_TEXT }, { "json", RELAY_LOG_FORMAT_JSON },
};
static const struct enum_spec log_format_enum = { log_format_words, RELAY_ARRAY_SIZE(log_format_words), "text or json" };
static const struct enum_word tls_version_words[] = {
	{ "1.2", RELAY_TLS_1_2 }, { "1.3", RELAY_TLS_1_3 },
};
static const struct enum_spec tls_version_enum = { tls_version_words, RELAY_ARRAY_SIZE(tls_version_words),
	                                           "1.2 or 1.3" };
static const struct enum_spec bool_enum = { bool_words, RELAY_ARRAY_SIZE(bool_words), "true or false" };
static const struct enum_spec db_policy_enum = { db_policy_words, RELAY_ARRAY_SIZE(db_policy_words),
	                                         "one of hold, create, dead_letter" };
static const struct enum_spec api_enum = { api_words, RELAY_ARRAY_SIZE(api_words), "v1 or v2" };

#define CF(f) offsetof(struct relay_config, f)
/* The longest max_age: 100 years. Its nanoseconds (what the queue
 * compares with) must fit in an int64. */
#define MAX_AGE_MS (100ULL * 366 * 86400 * 1000)
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
const struct key_spec cfg_backend_keys[] = {
	BKEY("name", KT_NAME, KF_REQUIRED | KF_UNIQUE, name, NULL, 0, 0,
	     "names the backend's queue, its log lines and its metrics"),
	{ .section = "", .name = "url", .type = KT_URL, .flags = KF_REQUIRED, .off = BF(url),
	  .off_host = BF(host), .off_port = BF(port), .off_path = BF(path_prefix),
	  .desc = "http://HOST[:PORT][/PREFIX] of the InfluxDB; /write is appended" },
	{ .section = "", .name = "max_size", .type = KT_SIZE, .flags = KF_INHERIT | KF_TEXT, .off = BF(max_bytes),
	  .off_inherit = CF(queue_max_bytes), .off_text = BF(max_size_text),
	  .off_inherit_text = CF(queue_max_size_text), .min = MIB, .max = UINT64_MAX,
	  .desc = "this backend's queue byte limit; default queue.max_size" },
	{ .section = "", .name = "max_age", .type = KT_DURATION, .flags = KF_INHERIT | KF_ZERO_OK | KF_TEXT,
	  .off = BF(max_age_ms), .off_inherit = CF(queue_max_age_ms), .off_text = BF(max_age_text),
	  .off_inherit_text = CF(queue_max_age_text), .min = 1, .max = MAX_AGE_MS,
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
	BKEY("max_rate", KT_UINT32, 0, max_rate, "0", 0, 1000000000,
	     "points sent to the backend per second at most (backlog and live writes, one queue); 0 = no limit"),
	BKEY("max_rate_bytes", KT_SIZE, KF_ZERO_OK, max_rate_bytes, "0", 1, 1ULL << 40,
	     "line-protocol bytes sent to the backend per second at most; 0 = no limit"),
	BKEY("rate_burst", KT_DURATION, 0, rate_burst_ms, "1s", 10, 3600000,
	     "how much of max_rate and max_rate_bytes may go at once after a pause (the buckets' size)"),
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
	BKEY("tls_ca", KT_STRING, KF_PATH, tls_ca, NULL, 0, 0,
	     "https: CA file or directory the backend's certificate is verified with; default the system's"),
	BKEY("tls_cert", KT_STRING, KF_PATH, tls_cert, NULL, 0, 0,
	     "https: client certificate (PEM) for a backend that asks for one (with tls_key)"),
	BKEY("tls_key", KT_STRING, KF_PATH, tls_key, NULL, 0, 0,
	     "https: the client certificate's private key (PEM)"),
	BKEY("tls_server_name", KT_STRING, 0, tls_server_name, NULL, 0, 0,
	     "https: name the certificate must carry, sent as SNI; default the url's host"),
	{ .section = "", .name = "tls_min_version", .type = KT_ENUM, .enm = &tls_version_enum,
	  .off = BF(tls_min_version), .def = "1.2", .desc = "https: the least TLS version accepted: 1.2 or 1.3" },
	{ .section = "", .name = "insecure_skip_verify", .type = KT_ENUM, .enm = &bool_enum,
	  .off = BF(insecure_skip_verify), .def = "false",
	  .desc = "https: accept any certificate, unverified (a warning at every start); for tests only" },
};

#define UKEY(key, ty, fl, field, dflt, lo, hi, text) \
	{ .section = "", .name = key, .type = ty, .flags = fl, .off = UF(field), \
	  .def = dflt, .min = lo, .max = hi, .desc = text }

/* The keys of one item of listen.udp. */
const struct key_spec cfg_udp_keys[] = {
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

static int check_backend(struct loader *ld, const yaml_node_t *item, void *elem, const char *path);

static const struct list_spec backend_list = {
	.index = LIST_BACKENDS, .keys = cfg_backend_keys, .nkeys = RELAY_ARRAY_SIZE(cfg_backend_keys),
	.elem_size = sizeof(struct relay_backend_config),
	.off_items = CF(backends), .off_count = CF(nbackends), .min = 1, .max = RELAY_MAX_BACKENDS,
	.noun = "backend", .needs = "'name' and 'url'", .check = check_backend,
};
static const struct list_spec udp_list = {
	.index = LIST_UDP, .keys = cfg_udp_keys, .nkeys = RELAY_ARRAY_SIZE(cfg_udp_keys),
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
const struct key_spec cfg_keys[] = {
	KEY("", "data_dir", KT_STRING, KF_REQUIRED | KF_PATH, data_dir, NULL, 0, 0,
	    "directory of the durable queue (an LMDB environment)"),
	KEY("", "log_level", KT_LOG_LEVEL, 0, log_level, "info", 0, 0,
	    "least severe message logged: debug, info, notice, warn or error"),
	KEY("", "log_output", KT_LOG_OUTPUT, 0, log_output, "stderr", 0, 0,
	    "where log lines go: stderr, syslog, journal or the absolute path of a file, or a list of them "
	    "in order of preference (the first available is used)"),
	{ .section = "", .name = "log_format", .type = KT_ENUM, .enm = &log_format_enum, .off = CF(log_format),
	  .def = "text", .desc = "text (one line per event) or json (one object per line, for log shippers)" },
	KEY("", "log_outage_reminder", KT_DURATION, KF_ZERO_OK, log_outage_reminder_ms, "10m", 1, UINT64_MAX,
	    "while a backend stays down, a reminder line this often (backlog, age, time until full); 0 = none"),
	KEY("", "user", KT_STRING, 0, user, NULL, 0, 0,
	    "started as root, relayd runs as this user (and its groups) before it opens anything"),

	SECTION("listen", "addresses relayd accepts connections on"),
	{ .section = "listen", .name = "http", .type = KT_HOSTPORT, .flags = KF_OFF_OK, .off = CF(listen_http),
	  .off_host = CF(listen_http_host), .off_port = CF(listen_http_port),
	  .def = "127.0.0.1:9096",
	  .desc = "HOST:PORT of the InfluxDB-compatible /write, /api/v2/write, /ping and /health endpoint; off = none" },
	{ .section = "listen", .name = "https", .type = KT_HOSTPORT, .off = CF(listen_https),
	  .off_host = CF(listen_https_host), .off_port = CF(listen_https_port),
	  .desc = "HOST:PORT of the same endpoints over TLS (the tls: section's certificate); default none" },
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

	SECTION("tls", "the TLS listener (listen.https)"),
	KEY("tls", "cert_file", KT_STRING, KF_PATH, tls_cert_file, NULL, 0, 0,
	    "certificate chain (PEM, the server's first); SIGHUP reads it again"),
	KEY("tls", "key_file", KT_STRING, KF_PATH, tls_key_file, NULL, 0, 0, "its private key (PEM)"),
	KEY("tls", "client_ca_file", KT_STRING, KF_PATH, tls_client_ca_file, NULL, 0, 0,
	    "CA of client certificates: clients must present one it signed (mTLS); default none asked"),
	{ .section = "tls", .name = "client_cert_auth", .type = KT_ENUM, .enm = &bool_enum,
	  .off = CF(tls_client_cert_auth), .def = "false",
	  .desc = "with auth.enabled, a verified client certificate counts as credentials (its CN is logged)" },
	KEY("tls", "handshake_timeout", KT_DURATION, 0, tls_handshake_timeout_ms, "10s", 1, 3600000,
	    "a TLS handshake must finish within this; then the connection is closed"),
	KEY("tls", "max_handshakes", KT_UINT32, 0, tls_max_handshakes, "256", 1, 1000000,
	    "connections in handshake at once; more are closed at once"),

	SECTION("queue", "the durable queue and its limits"),
	{ .section = "queue", .name = "max_size", .type = KT_SIZE, .flags = KF_TEXT, .off = CF(queue_max_bytes),
	  .off_text = CF(queue_max_size_text), .def = "1GiB", .min = MIB, .max = UINT64_MAX,
	  .desc = "bytes a backend's queue may hold before writes get 503; per-backend default" },
	{ .section = "queue", .name = "max_age", .type = KT_DURATION, .flags = KF_ZERO_OK | KF_TEXT,
	  .off = CF(queue_max_age_ms), .off_text = CF(queue_max_age_text), .def = "0", .min = 1, .max = MAX_AGE_MS,
	  .desc = "writes get 503 while a backend's oldest batch is older; 0 = no limit" },
	KEY("queue", "retry_after", KT_SECONDS, 0, queue_retry_after_s, "10s", 1, UINT64_MAX,
	    "Retry-After sent with a 503 for a full queue"),
	KEY("queue", "map_size", KT_SIZE, KF_ZERO_OK, queue_map_bytes, "0", MIB, UINT64_MAX,
	    "LMDB map size; 0 = derived from the limits, with room for more backends"),
	KEY("queue", "max_commit_batches", KT_UINT32, 0, queue_max_commit_batches, "1024", 1, 65536,
	    "most requests made durable by one group commit"),

	SECTION("auth", "who may write (off by default)"),
	{ .section = "auth", .name = "enabled", .type = KT_ENUM, .enm = &bool_enum, .off = CF(auth_enabled),
	  .def = "false", .desc = "require a listed user or token on every write" },
	{ .section = "auth", .name = "users", .type = KT_LIST, .list = &user_list,
	  .desc = "users (name, password): v1 u/p parameters, Basic auth, or Token name:password" },
	{ .section = "auth", .name = "tokens", .type = KT_LIST, .list = &token_list,
	  .desc = "tokens (name, token): Authorization: Token (or Bearer) TOKEN" },

	SECTION("query", "the /query pass-through to the backends (docs/influxdb.md, \"Queries\")"),
	{ .section = "query", .name = "enabled", .type = KT_ENUM, .enm = &bool_enum, .off = CF(query_enabled),
	  .def = "true", .desc = "answer /query and /api/v2/query from the backends (false: 404)" },
	{ .section = "query", .name = "backends", .type = KT_NAMES, .off = CF(query_backends),
	  .desc = "backends a query may go to, in the order they are tried; default every backend, in order" },
	KEY("query", "max_lag", KT_DURATION, KF_ZERO_OK, query_max_lag_ms, "1s", 1, UINT64_MAX,
	    "a backend is caught up while nothing pending for it was accepted longer ago than this"),
	{ .section = "query", .name = "when_behind", .type = KT_ENUM, .enm = &behind_enum,
	  .off = CF(query_when_behind), .def = "least_behind",
	  .desc = "no backend up and caught up: least_behind (answer, with X-Relayd-Behind) or refuse (503)" },
	KEY("query", "timeout", KT_DURATION, KF_ZERO_OK, query_timeout_ms, "300s", 1, UINT64_MAX,
	    "most time between two pieces of a backend's answer; then the answer is cut; 0 = none"),
	KEY("query", "max_body_size", KT_SIZE, 0, query_max_body_bytes, "16MiB", 1, UINT64_MAX,
	    "largest POST /query body (form parameters); 413 beyond"),
	{ .section = "query", .name = "state_changing", .type = KT_ENUM, .enm = &state_enum,
	  .off = CF(query_state_changing), .def = "refuse",
	  .desc = "DROP, DELETE, ALTER, GRANT, SELECT INTO...: refuse (400) or queue for every backend" },

	{ .section = "", .name = "backends", .type = KT_LIST, .flags = KF_REQUIRED, .list = &backend_list,
	  .desc = "InfluxDB servers every write is forwarded to" },
};
const size_t cfg_nkeys = RELAY_ARRAY_SIZE(cfg_keys);
const size_t cfg_nbackend_keys = RELAY_ARRAY_SIZE(cfg_backend_keys);
const size_t cfg_nudp_keys = RELAY_ARRAY_SIZE(cfg_udp_keys);

/* Rules between the keys of one backend, checked once it is complete. */
static int check_backend(struct loader *ld, const yaml_node_t *item, void *elem, const char *path)
{
	struct relay_backend_config *b = elem;
	char lo[32], hi[32];

	if (!b->username != !b->password)
		return cfg_fail(ld, item, "'%s' needs both 'username' and 'password', or neither", path);
	if (b->username && b->token)
		return cfg_fail(ld, item, "'%s' has both 'username' and 'token': give one kind of credentials", path);
	if (b->type == RELAY_API_V2 && b->username)
		return cfg_fail(ld, item, "'%s' is type v2: a v2 write authenticates with 'token' "
		                "(for InfluxDB 1.8, token: \"username:password\")", path);
	/* Creating a v2 bucket needs an org ID and a retention, which a
	 * relay cannot guess. */
	if (b->type == RELAY_API_V2 && b->on_database_not_found == RELAY_DB_CREATE)
		return cfg_fail(ld, item, "'%s' is type v2: on_database_not_found: create works with v1 backends only "
		                "(use hold or dead_letter)", path);
	if (b->type == RELAY_API_V1 && b->org)
		return cfg_fail(ld, item, "'%s.org' applies to type v2 backends only", path);
	b->tls = strncasecmp(b->url, "https://", 8) == 0;
	if (!b->tls && (b->tls_ca || b->tls_cert || b->tls_key || b->tls_server_name || b->insecure_skip_verify))
		return cfg_fail(ld, item, "'%s' has tls_* or insecure_skip_verify keys but its url is http://: "
		                "use https:// or drop them", path);
	if (!b->tls_cert != !b->tls_key)
		return cfg_fail(ld, item, "'%s' needs both 'tls_cert' and 'tls_key', or neither", path);

	/* The backoff draws delays between the two; reversed, every retry
	 * would wait retry_min and the cap would mean nothing. */
	if (b->retry_min_ms > b->retry_max_ms)
		return cfg_fail(ld, item, "'%s.retry_min' (%s) must not be more than '%s.retry_max' (%s)",
		                path, cfg_fmt_ms(lo, sizeof(lo), b->retry_min_ms), path,
		                cfg_fmt_ms(hi, sizeof(hi), b->retry_max_ms));
	return 0;
}
