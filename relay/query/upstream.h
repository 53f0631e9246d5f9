/*
 * upstream: one streaming HTTP/1.1 request to an InfluxDB, on the libuv
 * loop, for the query pass-through, plain or TLS (through the transport
 * layer, relay/net/stream.h). Connect (within a connect timeout, which
 * bounds the TLS handshake too),
 * send a request head and a small body, parse the answer with llhttp and
 * hand it on as it comes: the status and headers once, then the body
 * piece by piece (de-chunked), then the end. Nothing of the answer is
 * kept beyond one read: memory does not grow with its size. Reading can
 * be paused while the caller's own client is slow (backpressure), and a
 * request can be cancelled at once: the socket is closed, so InfluxDB
 * sees the client leave and stops the query. With a pool, a connection
 * whose answer was read whole and that the backend keeps open goes back to
 * the pool and carries a later request to the same backend (a dashboard's
 * many small queries do not each pay a connect, nor leave a socket in
 * TIME_WAIT); without one, the caller sends "Connection: close". Knows
 * nothing of the door.
 */
#ifndef RELAY_QUERY_UPSTREAM_H
#define RELAY_QUERY_UPSTREAM_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct net_tls_ctx;

struct upstream;
struct upstream_pool;

/* Idle connections a pool keeps at most (beyond: closed), and how long
 * one may stay idle before the pool closes it. */
#define UPSTREAM_POOL_MAX_IDLE 64
#define UPSTREAM_POOL_IDLE_MS 30000

struct upstream_pool_stats {
	uint64_t connects;  /* new connections made for its requests */
	uint64_t reuses;    /* requests sent on an idle connection */
	uint64_t stale;     /* of those, found closed by the backend and sent again on a new one */
};

/* One header of the answer; the strings are valid during the callback. */
struct upstream_header {
	const char *name;
	const char *value;
};

/* Where the request failed, for the caller to decide whether another
 * backend may be tried: nothing reached the server before UPSTREAM_SENT. */
enum upstream_stage {
	UPSTREAM_CONNECTING = 0, /* resolving or connecting: the server saw nothing */
	UPSTREAM_SENT,           /* connected, request (being) written, no answer yet */
	UPSTREAM_ANSWERING,      /* the head was handed on; body pieces may have been */
};

struct upstream_callbacks {
	/* The final answer's status and headers (interim 1xx answers are
	 * skipped). content_length is the Content-Length, or -1 when the
	 * body is chunked or runs to the end of the connection. */
	void (*on_head)(struct upstream *u, int status, const struct upstream_header *h, size_t nh,
	                int64_t content_length, void *arg);
	/* A piece of the body, de-chunked; p is valid during the call. */
	void (*on_body)(struct upstream *u, const char *p, size_t n, void *arg);
	/* The end: rc 0 when the whole answer arrived, else a libuv code
	 * (UV_ECONNREFUSED, UV_ETIMEDOUT, UV_EPROTO for a malformed or cut
	 * answer or a TLS failure, ...) with msg saying what happened (for a
	 * certificate that fails verification: which, why, and what to
	 * change). u is freed after this
	 * returns: do not use it again. Not called after upstream_cancel. */
	void (*on_done)(struct upstream *u, int rc, enum upstream_stage stage, const char *msg, void *arg);
	/* Optional: the whole request is written, so the caller may free its
	 * body (nothing will send it again). */
	void (*on_sent)(struct upstream *u, void *arg);
};

struct upstream_request {
	const char *host;            /* a name or a literal address */
	uint16_t port;
	struct net_tls_ctx *tls;     /* a client context for https (a reference is taken), or NULL */
	const char *server_name;     /* the name verified and sent as SNI (copied); NULL: host */
	const char *head;            /* the whole request head, ending in "\r\n\r\n"; copied */
	size_t head_len;
	const char *body;            /* the caller's: kept alive until on_sent, on_done or upstream_cancel */
	size_t body_len;
	uint64_t connect_timeout_ms; /* > 0 */
	uint64_t idle_timeout_ms;    /* most time between two reads of the answer; 0 = none */
	struct upstream_pool *pool;  /* idle connections to take and give back; NULL = one per request */
};

/*
 * Start rq on loop. Every callback runs on the loop thread, never from
 * inside this call; on_head and on_body may pause, resume or cancel (the
 * parse of what was read stops at a cancel). Returns the request (it frees itself after
 * on_done, or after upstream_cancel). Never fails: allocation failure
 * aborts, and every other failure arrives through on_done.
 */
struct upstream *upstream_start(uv_loop_t *loop, const struct upstream_request *rq,
                                const struct upstream_callbacks *cb, void *arg);

/* Stop reading the answer (the caller's client is behind); the idle
 * timer stops too, as the wait is the caller's. What was read already is
 * still parsed and handed on: at most one read (64 KiB) after the pause.
 * Idempotent. */
void upstream_pause(struct upstream *u);
/* Read again, and restart the idle timer. Idempotent. */
void upstream_resume(struct upstream *u);
/* Close the connection now and call nothing more; u is freed once its
 * handles are closed. The caller may free the body right after. */
void upstream_cancel(struct upstream *u);

/* A pool of idle connections on loop (its sweep timer does not keep the
 * loop alive). Allocation failure aborts. */
struct upstream_pool *upstream_pool_new(uv_loop_t *loop);
/* Close its idle connections now; connections of requests still running
 * are closed when they end, not pooled. The pool frees itself once its
 * last connection is closed: do not use p after this. NULL is a no-op. */
void upstream_pool_close(struct upstream_pool *p);
/* Its counters, valid until upstream_pool_close. */
const struct upstream_pool_stats *upstream_pool_stats(const struct upstream_pool *p);

#endif
