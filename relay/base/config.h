/*
 * config: load relayd's YAML configuration (libyaml) into struct
 * relay_config. Every key comes from one table with its type, default and
 * description; an unknown key, a wrong type, a bad value, a bad address or
 * URL, or a duplicate backend name is refused with "FILE:LINE:COL: what is
 * wrong". No I/O beyond reading the file, no logging, no libuv.
 */
#ifndef RELAY_CONFIG_H
#define RELAY_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "wal/wal.h"

#define RELAY_MAX_BACKENDS WAL_MAX_BACKENDS /* the queue's limit: one bit each in a route mask */

/* What a backend's queue does when the backend answers 404 "database
 * not found". */
enum relay_db_policy {
	RELAY_DB_HOLD = 0,     /* keep the data, retry (default): the database may be created later */
	RELAY_DB_CREATE,       /* send CREATE DATABASE, then retry */
	RELAY_DB_DEAD_LETTER,  /* move the batch to the dead-letter queue */
};

/* What the query pass-through does when no query backend is caught up
 * (query.when_behind); the values are relay/query/router.h's policies. */
/* The least TLS version a connection may use (tls_min_version). */
enum relay_tls_version {
	RELAY_TLS_1_2 = 0,
	RELAY_TLS_1_3 = 1,
};

/* How log lines are written (log_format). */
enum relay_log_format {
	RELAY_LOG_FORMAT_TEXT = 0, /* "TIME level message" */
	RELAY_LOG_FORMAT_JSON = 1, /* {"time":..,"level":..,"msg":..} per line */
};

enum relay_when_behind {
	RELAY_BEHIND_LEAST = 0,  /* answer from the least behind, with X-Relayd-Behind */
	RELAY_BEHIND_REFUSE = 1, /* 503 naming the backends and their lag */
};

/* What /query does with a statement that changes state beyond CREATE
 * DATABASE and CREATE RETENTION POLICY (query.state_changing). */
enum relay_state_changing {
	RELAY_STATE_REFUSE = 0, /* 400 naming the statement */
	RELAY_STATE_QUEUE = 1,  /* queued for every backend, like CREATE DATABASE */
};

/* Which write API a backend speaks. */
enum relay_api {
	RELAY_API_V1 = 1, /* POST /write?db=&rp= (InfluxDB 1.x) */
	RELAY_API_V2 = 2, /* POST /api/v2/write?org=&bucket= (InfluxDB 2.x, and 1.8+ with bucket "db/rp") */
};

/* One InfluxDB a batch is forwarded to. */
struct relay_backend_config {
	char *name;        /* [A-Za-z0-9_.-]{1,64}, unique */
	char *url;         /* as written: http://host[:port][/prefix] */
	char *host;        /* parsed host (name or literal, no brackets) */
	uint16_t port;     /* parsed port (80 when the URL has none) */
	char *path_prefix; /* "" or "/prefix" without a trailing '/' */
	uint64_t max_bytes;  /* queue byte limit for this backend (defaults to queue.max_bytes) */
	uint64_t max_age_ms; /* refuse writes while the oldest pending batch is older; 0 = no limit */
	/* The two as the user wrote them ("1GiB", "2h"; the inherited
	 * queue: values' text, or the default's), for the messages of a
	 * refused write: a limit reads as it was configured. */
	char *max_size_text, *max_age_text;
	/* delivery */
	uint64_t timeout_ms;         /* whole response; default 30 s */
	uint64_t connect_timeout_ms; /* default 5 s */
	uint64_t batch_max_bytes;    /* coalesce queued batches into POSTs up to this; default 8 MiB */
	uint32_t batch_max_lines;    /* ... and this many lines; default 40000 */
	uint64_t retry_min_ms;       /* first retry delay, and the least any retry waits; default 100 ms */
	uint64_t retry_max_ms;       /* retry delay cap (and Retry-After cap); default 30 s */
	enum relay_db_policy on_database_not_found; /* default hold */
	int gzip;                    /* send Content-Encoding: gzip; default off */
	uint32_t parallel;           /* writes in flight at once, split by series; default 4 */
	/* Pacing (a token bucket in the worker; a reload changes them without
	 * a restart): what is sent to the backend, backlog and live writes
	 * alike. 0 = no limit. */
	uint32_t max_rate;           /* points per second; default 0 */
	uint64_t max_rate_bytes;     /* line-protocol bytes per second; default 0 */
	uint64_t rate_burst_ms;      /* the buckets hold this much of their rate; default 1 s */
	/* API and credentials. When the backend has its own (username or
	 * token), the writer's credentials are not forwarded to it. */
	enum relay_api type;         /* default v1 */
	char *username, *password;   /* v1 only, both or neither; NULL = none */
	char *org;                   /* v2 only; NULL = the writer's org, if any */
	char *token;                 /* Authorization: Token; NULL = none */
	/* TLS (an https:// url). NULL paths = none. */
	int tls;                     /* the url is https:// (set from it) */
	char *tls_ca;                /* CA file or directory; NULL = OpenSSL's default verify paths */
	char *tls_cert, *tls_key;    /* client certificate and key (mTLS), both or neither */
	char *tls_server_name;       /* name verified and sent as SNI; NULL = the url's host */
	int tls_min_version;         /* enum relay_tls_version; default 1.2 */
	int insecure_skip_verify;    /* accept any certificate (warned at every start); default false */
};

/* One UDP listener: datagrams of line protocol for one database. */
struct relay_udp_config {
	char *address;          /* "127.0.0.1:8089" as written */
	char *host;             /* parsed literal address */
	uint16_t port;
	char *db;               /* required */
	char *rp;               /* NULL = the database's default */
	int precision;          /* enum lp_precision; default ns */
	uint64_t flush_ms;      /* datagrams are grouped this long before a commit; default 100 ms */
	uint64_t batch_max_bytes; /* ... or until this many bytes; default 1 MiB */
	uint64_t read_buffer;   /* SO_RCVBUF; 0 (default) = the system's */
};

/* Inbound authentication (auth:). Secrets are compared in constant time
 * and never logged; only the names appear in logs. */
struct relay_user_config {
	char *name;
	char *password;
};
struct relay_token_config {
	char *name;  /* for logs */
	char *token;
};

struct relay_config {
	char *path;     /* the file loaded */
	char *data_dir; /* required */
	char *log_level; /* "debug", "info" (default), "notice", "warn", "error" */
	/* Outputs in order of preference, joined by '\n' (one, or the YAML
	 * list's items): "stderr" (default), "syslog", "journal", or an
	 * absolute file path. The first available is used
	 * (relay_log_open_first). */
	char *log_output;
	int log_format;   /* enum relay_log_format; default text */
	uint64_t log_outage_reminder_ms; /* reminder while a backend stays down; 0 = none; 10 min */
	char *user;     /* started as root, run as this user; NULL = none */

	/* listen: */
	char *listen_http;      /* "127.0.0.1:9096" as written (default); NULL = off ("off") */
	char *listen_http_host; /* parsed literal address; NULL = off */
	uint16_t listen_http_port;
	char *listen_https;     /* TLS listener, as written; NULL = none (default) */
	char *listen_https_host;
	uint16_t listen_https_port;
	struct relay_udp_config *udp; /* listen.udp */
	size_t nudp;

	/* http: limits of the front door */
	uint64_t http_max_body_bytes;    /* 413 beyond; default 25 MiB (InfluxDB's) */
	uint64_t http_max_header_bytes;  /* 431 beyond; default 16 KiB (url + all headers) */
	uint64_t http_max_line_bytes;    /* 400 beyond; default 1 MiB (one line of line protocol) */
	uint64_t http_max_decompressed_bytes; /* gzip bodies: 413 beyond; default 100 MiB */
	uint64_t http_header_timeout_ms; /* whole header must arrive within; 408; default 10 s */
	uint64_t http_body_timeout_ms;   /* whole body must arrive within; 408; default 60 s */
	uint64_t http_idle_timeout_ms;   /* keep-alive connection idle; closed; default 120 s */
	uint32_t http_max_connections;   /* default 1024 */
	uint64_t http_max_buffered_bytes; /* bodies held across all connections; 503 beyond; default 512 MiB */

	/* tls: the TLS listener's certificate (listen.https) */
	char *tls_cert_file;           /* certificate chain, PEM; required with listen.https */
	char *tls_key_file;            /* its private key, PEM */
	char *tls_client_ca_file;      /* CA of client certificates; NULL = none asked (no mTLS) */
	int tls_client_cert_auth;      /* a verified client certificate stands in for inbound auth; default false */
	uint64_t tls_handshake_timeout_ms; /* a handshake must finish within; default 10 s */
	uint32_t tls_max_handshakes;   /* connections in handshake at once; default 256 */

	/* queue: */
	uint64_t queue_max_bytes;     /* default per-backend byte limit; default 1 GiB */
	uint64_t queue_max_age_ms;    /* default per-backend age limit; 0 (none) */
	char *queue_max_size_text, *queue_max_age_text; /* the two as written ("1GiB", "0") */
	uint64_t queue_retry_after_s; /* Retry-After sent with a 503 for a full queue; default 10 */
	uint64_t queue_map_bytes;     /* LMDB map size; 0 (default) = derived from the limits */
	uint32_t queue_max_commit_batches; /* most requests one group commit takes; default 1024 */

	/* auth: off unless enabled; then every write needs a listed user or
	 * token (401 without credentials, 403 with wrong ones). */
	int auth_enabled;
	struct relay_user_config *auth_users;
	size_t nauth_users;
	struct relay_token_config *auth_tokens;
	size_t nauth_tokens;

	struct relay_backend_config *backends;
	size_t nbackends; /* at least 1 */

	/* query: the /query pass-through (relay/query, relay/door/http_query.c) */
	int query_enabled;             /* default true */
	char *query_backends;          /* the names as written, joined by ','; NULL = every backend */
	uint64_t query_max_lag_ms;     /* a backend is caught up while its oldest pending write is younger; 1 s */
	int query_when_behind;         /* enum relay_when_behind; default least_behind */
	uint64_t query_timeout_ms;     /* most time between two reads of an answer; 0 = none; 300 s */
	uint64_t query_max_body_bytes; /* a POST /query body is held up to this; 16 MiB */
	int query_state_changing;      /* enum relay_state_changing; default refuse */
	/* Derived from query_backends once the file is read: indexes into
	 * backends, in the order queries try them. */
	size_t query_order[RELAY_MAX_BACKENDS];
	size_t nquery;
};

/*
 * Load and check path into *cfg (which need not be initialised). Returns 0,
 * or -1 with a "FILE:LINE:COL: message" (or "FILE: message" when there is
 * no position, e.g. the file cannot be read) in err; on failure *cfg holds
 * nothing to release. On success the caller calls config_release.
 * Relative paths of the file (data_dir, the tls: files, a backend's
 * tls_ca, tls_cert and tls_key) are made absolute against the directory
 * of path (as named, symbolic links not followed; against the current
 * directory when path itself is relative), so that every reader agrees.
 * A file that looks like influxdb-relay's TOML and fails to load gets a
 * message saying so and how to convert it.
 */
int config_load(const char *path, struct relay_config *cfg, char *err, size_t errlen);
/* Same, from a buffer; name is used in messages (and as cfg->path).
 * A buffer has no directory: relative paths stay as written. */
int config_load_buffer(const char *name, const char *text, size_t len,
                       struct relay_config *cfg, char *err, size_t errlen);
/* Free everything cfg owns; cfg may be loaded again afterwards. */
void config_release(struct relay_config *cfg);

/*
 * Whether two backends (or two UDP listeners) have the same value for
 * every key, as a reload decides whether a running one must be restarted
 * with new settings. Driven by the key table, so a key added there is
 * compared too.
 */
int config_backend_equal(const struct relay_backend_config *a, const struct relay_backend_config *b);
int config_udp_equal(const struct relay_udp_config *a, const struct relay_udp_config *b);

/* What cfg's limits need of the LMDB map: twice the sum of the backends'
 * byte limits plus 64 MiB of room for the B-tree, the free list and the
 * dead-letter queues (saturating). Whatever queue.map_size says. */
uint64_t config_map_need(const struct relay_config *cfg);

/* The LMDB map size for cfg under an address-space limit of as_limit
 * bytes (UINT64_MAX: none): queue_map_bytes when set; otherwise derived
 * with headroom: room for RELAY_MAX_BACKENDS backends at the largest byte
 * limit configured (capped at 256 GiB of address space, and at a quarter
 * of as_limit), never less than config_map_need, so that a reload adding
 * backends within those limits fits the map in force. The map is address
 * space, not disk: the file grows as it is used (see config_derived.c). */
uint64_t config_map_size_under(const struct relay_config *cfg, uint64_t as_limit);

/* config_map_size_under with this process's limit (config_as_limit):
 * what relayd maps, and what relayctl's shared opens pass beside it. */
uint64_t config_map_size(const struct relay_config *cfg);

/* This process's address-space limit in bytes (getrlimit RLIMIT_AS, the
 * soft limit), or UINT64_MAX when there is none. */
uint64_t config_as_limit(void);

/* 1 when cfg's map (config_map_size_under) fits under as_limit; else 0,
 * and why gets a message naming RLIMIT_AS and both sizes. */
int config_map_fits(const struct relay_config *cfg, uint64_t as_limit, char *why, size_t whylen);

/*
 * 1 when cfg's file holds a secret (auth users or tokens, a backend's
 * password or token) and every user may read it; why gets a message that
 * says which and how to fix it. 0 otherwise (also when the file cannot be
 * stat'ed). relayd warns with it at start and in --check-config.
 */
int config_secrets_exposed(const struct relay_config *cfg, char *why, size_t whylen);

/* What one open connection costs beyond the buffered bodies (the struct,
 * the parser, the head being read), and how many copies of a delivery
 * round a backend holds at most (the batches read, the coalesced payload,
 * the lanes' shares, their gzip output; twice, with the prefetch). */
#define CONFIG_CONN_BYTES 4096
/* ... and with listen.https: OpenSSL's state of an idle TLS connection
 * (18.5 KiB measured, test_tls_listener) with room. */
#define CONFIG_TLS_CONN_BYTES (24 * 1024)
#define CONFIG_ROUND_COPIES 8

/*
 * The most memory relayd should need with cfg, in bytes (saturating): a
 * fixed 64 MiB, http.max_buffered_size, CONFIG_CONN_BYTES per allowed
 * connection (CONFIG_TLS_CONN_BYTES with listen.https), CONFIG_ROUND_COPIES x batch_max_size per backend and two
 * UDP batches per listener. The systemd unit's MemoryMax= is sized from
 * it (docs/operations.md); relayd --check-config prints it.
 */
uint64_t config_memory_ceiling(const struct relay_config *cfg);

/* The lineproto LP_F_* flags for what every backend of cfg accepts:
 * LP_F_NO_UNSIGNED when one has type v1 (InfluxDB 1.x refuses "1u"). */
unsigned config_lp_flags(const struct relay_config *cfg);

#endif
