/*
 * http_server: the front door. A libuv TCP listener; per connection an
 * llhttp parser, limits (header bytes, body bytes, one budget for the
 * bodies of all connections), timeouts (header, body, idle) and ordered
 * responses for keep-alive and pipelined requests. Routes: GET/HEAD /ping,
 * /health, POST /write and /api/v2/write (validated here, committed by
 * ingest). Implemented in http_server.c, http_request.c, http_write.c and
 * http_auth.c (relay/door/http_internal.h says which does what).
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
	uint64_t points_accepted;
	uint64_t auth_failures;   /* 401 and 403 (auth.enabled) */
	uint64_t buffered_bytes;  /* request bodies held now (http.max_buffered_size caps it) */
};

/*
 * Bind cfg's listen address and start accepting on loop. Write requests go
 * to ing (NULL only in the fuzz build, where they are answered 204 at once).
 * cfg must outlive the server. Returns 0 and *out, or a uv error code with
 * a message in err (e.g. "cannot listen on 127.0.0.1:9096: address already
 * in use").
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

/* The port actually bound (useful with port 0). */
int http_server_port(const struct http_server *s);

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
 * backend. retry_after gets the seconds to advertise, or 0.
 */
int http_write_outcome(int rc, int result, const char *backend, uint64_t limit_bytes,
                       uint64_t retry_after_s, char *msg, size_t msglen, uint64_t *retry_after);

/* Feed bytes to a socket-less connection with cfg's limits, as if read
 * from a client; responses are discarded and writes answered without a
 * queue. For the fuzz target (it needs no loop, no socket, no queue). */
void http_fuzz_feed(const struct relay_config *cfg, const uint8_t *data, size_t len);

#endif
