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

#define RELAY_MAX_BACKENDS 64

/* What a backend's queue does when the backend answers 404 "database
 * not found". */
enum relay_db_policy {
	RELAY_DB_HOLD = 0,     /* keep the data, retry (default): the database may be created later */
	RELAY_DB_CREATE,       /* send CREATE DATABASE, then retry */
	RELAY_DB_DEAD_LETTER,  /* move the batch to the dead-letter queue */
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
};

struct relay_config {
	char *path;     /* the file loaded */
	char *data_dir; /* required */
	char *log_level; /* "debug", "info" (default), "notice", "warn", "error" */

	/* listen: */
	char *listen_http;      /* "127.0.0.1:9096" as written (default) */
	char *listen_http_host; /* parsed literal address */
	uint16_t listen_http_port;

	/* http: limits of the front door */
	uint64_t http_max_body_bytes;    /* 413 beyond; default 25 MiB (InfluxDB's) */
	uint64_t http_max_header_bytes;  /* 431 beyond; default 16 KiB (url + all headers) */
	uint64_t http_max_line_bytes;    /* 400 beyond; default 1 MiB (one line of line protocol) */
	uint64_t http_max_decompressed_bytes; /* gzip bodies: 413 beyond; default 100 MiB */
	uint64_t http_header_timeout_ms; /* whole header must arrive within; 408; default 10 s */
	uint64_t http_body_timeout_ms;   /* whole body must arrive within; 408; default 60 s */
	uint64_t http_idle_timeout_ms;   /* keep-alive connection idle; closed; default 120 s */
	uint32_t http_max_connections;   /* default 1024 */

	/* queue: */
	uint64_t queue_max_bytes;     /* default per-backend byte limit; default 1 GiB */
	uint64_t queue_max_age_ms;    /* default per-backend age limit; 0 (none) */
	uint64_t queue_retry_after_s; /* Retry-After sent with a 503 for a full queue; default 10 */
	uint64_t queue_map_bytes;     /* LMDB map size; 0 (default) = derived from the limits */
	uint32_t queue_max_commit_batches; /* most requests one group commit takes; default 1024 */

	struct relay_backend_config *backends;
	size_t nbackends; /* at least 1 */
};

/*
 * Load and check path into *cfg (which need not be initialised). Returns 0,
 * or -1 with a "FILE:LINE:COL: message" (or "FILE: message" when there is
 * no position, e.g. the file cannot be read) in err; on failure *cfg holds
 * nothing to release. On success the caller calls config_release.
 */
int config_load(const char *path, struct relay_config *cfg, char *err, size_t errlen);
/* Same, from a buffer; name is used in messages (and as cfg->path). */
int config_load_buffer(const char *name, const char *text, size_t len,
                       struct relay_config *cfg, char *err, size_t errlen);
/* Free everything cfg owns; cfg may be loaded again afterwards. */
void config_release(struct relay_config *cfg);

/* The LMDB map size for cfg: queue_map_bytes when set, otherwise twice the
 * sum of the backends' byte limits plus 64 MiB of room for the B-tree, the
 * free list and the dead-letter queues. */
uint64_t config_map_size(const struct relay_config *cfg);

#endif
