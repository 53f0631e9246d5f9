/*
 * upstream: one streaming HTTP/1.1 request to an InfluxDB, on the libuv
 * loop, for the query pass-through. Connect (within a connect timeout),
 * send a request head and a small body, parse the answer with llhttp and
 * hand it on as it comes: the status and headers once, then the body
 * piece by piece (de-chunked), then the end. Nothing of the answer is
 * kept beyond one read: memory does not grow with its size. Reading can
 * be paused while the caller's own client is slow (backpressure), and a
 * request can be cancelled at once: the socket is closed, so InfluxDB
 * sees the client leave and stops the query. One connection per request
 * ("Connection: close"). Knows nothing of the door.
 */
#ifndef RELAY_QUERY_UPSTREAM_H
#define RELAY_QUERY_UPSTREAM_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct upstream;

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
	 * answer, ...) with msg saying what happened. u is freed after this
	 * returns: do not use it again. Not called after upstream_cancel. */
	void (*on_done)(struct upstream *u, int rc, enum upstream_stage stage, const char *msg, void *arg);
	/* Optional: the whole request is written, so the caller may free its
	 * body (nothing will send it again). */
	void (*on_sent)(struct upstream *u, void *arg);
};

struct upstream_request {
	const char *host;            /* a name or a literal address */
	uint16_t port;
	const char *head;            /* the whole request head, ending in "\r\n\r\n"; copied */
	size_t head_len;
	const char *body;            /* the caller's: kept alive until on_sent, on_done or upstream_cancel */
	size_t body_len;
	uint64_t connect_timeout_ms; /* > 0 */
	uint64_t idle_timeout_ms;    /* most time between two reads of the answer; 0 = none */
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

#endif
