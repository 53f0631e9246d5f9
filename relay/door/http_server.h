/*
 * http_server: the front door. A plain listener (listen.http) and a TLS
 * one (listen.https, relay/net's streams with the tls: section's
 * certificate: the handshake bounded in time and in number), either or
 * both; per connection an llhttp parser, limits (header bytes, body
 * bytes, one budget for the bodies of all connections), timeouts (header,
 * body, idle) and ordered responses for keep-alive and pipelined
 * requests. Routes: GET/HEAD /ping, /health, /health/backends/NAME and
 * /metrics (answered by the program's handlers, without credentials even
 * when auth.enabled), POST /write and /api/v2/write (validated here,
 * committed by ingest), GET/POST /query and POST /api/v2/query (passed
 * through to a backend, or queued for every backend: http_query.c).
 * Implemented in http_listen.c, http_server.c, http_request.c,
 * http_write.c, http_query.c, http_auth.c and http_metrics.c
 * (relay/door/http_internal.h says which does what).
 */
#ifndef RELAY_HTTP_SERVER_H
#define RELAY_HTTP_SERVER_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "relay/base/config.h"
#include "relay/door/ingest.h"

struct http_server;

struct http_server_stats {
	uint64_t connections_accepted;
	uint64_t connections_refused; /* over max_connections */
	uint64_t connections_open;
	uint64_t requests;
	uint64_t writes_ok;        /* 204 */
	uint64_t writes_rejected;  /* 4xx */
	uint64_t writes_refused;   /* 503: queue full, or the buffer budget taken */
	uint64_t points_accepted;  /* committed (counted even when the client left before its 204) */
	uint64_t auth_failures;   /* 401 and 403 (auth.enabled) */
	uint64_t buffered_bytes;  /* request bodies held now (http.max_buffered_size caps it) */
	/* /query and /api/v2/query */
	uint64_t queries;          /* every query request answered */
	uint64_t queries_proxied;  /* passed through to a backend */
	uint64_t queries_queued;   /* statements made durable for every backend (CREATE DATABASE...) */
	uint64_t query_errors;     /* answered 4xx or 5xx, by relayd or the backend, or cut */
	uint64_t query_bytes;      /* answer body bytes passed to clients */
	/* the TLS listener (listen.https) */
	uint64_t tls_handshakes;         /* handshakes done */
	uint64_t tls_handshake_failures; /* failed: no common version, a bad or missing client
	                                  * certificate (mTLS), a peer that left */
	uint64_t tls_handshake_timeouts; /* not done within tls.handshake_timeout */
	uint64_t tls_handshakes_refused; /* closed at once: tls.max_handshakes were in progress */
	uint64_t tls_plain_http;         /* plain HTTP sent to the TLS port (answered 400) */
	uint64_t tls_reloads;            /* certificate contexts swapped in by a reload */
};

/*
 * One backend a query may go to, as the program sees it now (the door may
 * not know the delivery). The strings belong to the program and are valid
 * during the call of the loop callback that asked for them.
 */
struct http_query_target {
	const char *name;
	const char *host;          /* name or literal address */
	uint16_t port;
	const char *path_prefix;   /* "" or "/prefix" */
	/* the backend's own credentials; NULL = none: the client's go through */
	const char *username, *password, *token;
	uint64_t connect_timeout_ms;
	struct net_tls_ctx *tls; const char *server_name; /* https: the backend's client context (NULL: plain), its SNI name */
	int up;                    /* its replay worker delivers */
	int paused;                /* relayctl pause */
	int64_t oldest_pending_ns; /* its oldest pending write's acceptance time; 0 = none */
};
/*
 * Fill out[0..max) with the query backends in the order they are tried
 * (query.backends) and return how many. db is the query's database (NULL
 * when it names none): a backend that holds db's writes (the database did
 * not exist there) has its oldest held write counted in oldest_pending_ns,
 * since it lacks them. Called on the loop thread, once per query attempt.
 */
typedef size_t (*http_query_targets_fn)(void *arg, const char *db, struct http_query_target *out, size_t max);

/*
 * Bind cfg's listen addresses and start accepting on loop: listen.http
 * (plain) unless off, listen.https (TLS, with the certificate of cfg's tls:
 * section) when set; both may be. Every connection, plain or TLS, is
 * carried by relay/net's stream, so what follows the handshake is the same
 * door. Write requests go to ing (NULL only in the fuzz build, where they
 * are answered 204 at once). cfg must outlive the server. Returns 0 and
 * *out, or a uv error code with a message in err (e.g. "cannot listen on
 * 127.0.0.1:9096: address already in use", or why the certificate does
 * not load). Warns in the log when the certificate expires within 30 days.
 */
int http_server_start(uv_loop_t *loop, const struct relay_config *cfg, struct ingest *ing,
                      struct http_server **out, char *err, size_t errlen);

/*
 * GET /health: fn appends a JSON object describing the relay and its
 * backends to out and returns the HTTP status (200 when healthy, 503 when
 * not). Without a handler /health is a 404.
 */
typedef int (*http_health_fn)(struct http_server *s, struct rbuf *out, void *arg);
/* Set /health's handler; fn and arg are kept (not copied) while s runs. */
void http_server_set_health(struct http_server *s, http_health_fn fn, void *arg);

/*
 * GET /metrics: fn appends Prometheus's text format (relay/base/metrics.h)
 * to out and returns the HTTP status (200). The answer carries
 * PROM_CONTENT_TYPE; HEAD gets its head only. Without a handler /metrics is
 * a 404. The door's own families come from http_server_metrics(), which
 * fn calls.
 */
typedef int (*http_metrics_fn)(struct http_server *s, struct rbuf *out, void *arg);
/* Set /metrics' handler; fn and arg are kept (not copied) while s runs. */
void http_server_set_metrics(struct http_server *s, http_metrics_fn fn, void *arg);

/*
 * GET /health/backends/NAME[?max_lag=DURATION]: fn appends one line of text
 * (without its "\n", which the door adds) saying whether backend name is
 * caught up, and returns the HTTP status: 200 caught up, 503 not, 404 no
 * such backend. name is percent-decoded (never empty, no control
 * character; valid during the call only); max_lag_ms is the max_lag parameter (parse_duration_ms:
 * "500ms", "2s"), or -1 when not given. The door answers 400 itself for a
 * malformed name or max_lag, 405 for a method other than GET and HEAD, 404
 * without a handler. text/plain; HEAD gets the head only.
 */
typedef int (*http_backend_health_fn)(struct http_server *s, const char *name, int64_t max_lag_ms, struct rbuf *out,
                                      void *arg);
/* Set /health/backends/NAME's handler; fn and arg are kept while s runs. */
void http_server_set_backend_health(struct http_server *s, http_backend_health_fn fn, void *arg);

struct udp_server;
/*
 * Append to out every metric family of the door (docs/monitoring.md, "The
 * front door and the group commit", "UDP listeners", "Queries"), each
 * once: answers by endpoint and code, connections, the buffer budget,
 * write refusals and their points by reason (every reason, zeros
 * included), points and bytes accepted by source (http from s, udp summed
 * over udp's listeners: 0 when udp is NULL), the group commit
 * (ingest_metrics, when s has an ingest), each UDP listener
 * (udp_metrics; the families without samples when udp is NULL) and the
 * queries (one relayd_query_proxied_total sample per query backend,
 * zeros included). Reads counters only: no I/O, no lock, cannot fail.
 * Call on the loop thread (from the /metrics handler).
 */
void http_server_metrics(const struct http_server *s, const struct udp_server *udp, struct rbuf *out);

/* Set the query backends' source; fn and arg are kept while s runs.
 * Without one, /query answers 503. */
void http_server_set_query_targets(struct http_server *s, http_query_targets_fn fn, void *arg);

/*
 * Ask the first query backend its version (GET /ping), for the
 * X-Influxdb-Version relayd's own answers carry; call at start and after a
 * reload. Until one answers (and when none does), relayd sends
 * HTTP_FALLBACK_VERSION. Every proxied answer teaches it as well.
 */
void http_server_probe_version(struct http_server *s);
#define HTTP_FALLBACK_VERSION "1.8.10"

/* The port actually bound (useful with port 0): the plain listener's, or
 * 0 when listen.http is off. */
int http_server_port(const struct http_server *s);
/* The TLS listener's port, or 0 when there is none. */
int http_server_tls_port(const struct http_server *s);

struct net_tls_ctx;
/*
 * Make the TLS listener's context from cfg's tls: section (certificate
 * chain, key, client CA): the fallible half of a certificate reload, done
 * before anything is changed. Returns 0 with *out holding one reference
 * (the caller's: give it to http_server_set_tls, or net_tls_ctx_unref), or
 * -1 with err saying which file and why ("tls: cannot load certificate
 * '/etc/relayd/cert.pem': No such file or directory").
 */
int http_server_tls_ctx_new(const struct relay_config *cfg, struct net_tls_ctx **out, char *err, size_t errlen);

/*
 * Swap in ctx (taking the caller's reference) for the connections accepted
 * from now on; open connections keep the context they began with (each
 * holds a reference), so none is dropped. The old context is released
 * once its last connection closes. Cannot fail. Logs the new certificate's
 * expiry as a warning when it is within 30 days or past. A server without
 * a TLS listener drops ctx.
 */
void http_server_set_tls(struct http_server *s, struct net_tls_ctx *ctx);

/* The server's counters, owned by s: valid until http_server_close's done
 * runs, and updated in place as the loop runs. */
const struct http_server_stats *http_server_stats(const struct http_server *s);

/*
 * Stop accepting, close idle connections, let requests waiting for a
 * commit get their answer, then close the rest. done runs once every
 * handle is closed; the server is freed before done runs.
 */
void http_server_close(struct http_server *s, void (*done)(void *arg), void *arg);

/*
 * The HTTP status and JSON error message for a write's commit result
 * (rc from the commit, result/refused_by from the batch). Returns the
 * status; msg gets the text ("" for 204). backend names the refusing
 * backend; max_size and max_age are its limits as the user wrote them
 * ("1GiB", "2h"; NULL = not known, left out of the message). retry_after
 * gets the seconds to advertise, or 0.
 */
int http_write_outcome(int rc, int result, const char *backend, const char *max_size, const char *max_age,
                       uint64_t retry_after_s, char *msg, size_t msglen, uint64_t *retry_after);

/* Feed bytes to a socket-less connection with cfg's limits, as if read
 * from a client; responses are discarded and writes answered without a
 * queue. For the fuzz target (it needs no loop, no socket, no queue). */
void http_fuzz_feed(const struct relay_config *cfg, const uint8_t *data, size_t len);

#endif
