/*
 * http_client: one keep-alive HTTP/1.1 connection to one backend, on the
 * libuv loop, one request at a time, plain or TLS: bytes go through the
 * transport layer (relay/net/stream.h), which resolves, connects and makes
 * the handshake within the connect timeout; nothing here knows TLS beyond
 * holding the context. Responses are parsed with llhttp.
 * Connect and response timeouts; a reused connection the server had
 * closed is retried once on a fresh one. Interim answers (1xx, RFC 9110
 * section 15.2) are read and skipped; the callback gets the final one.
 * 101 Switching Protocols is no answer to a request of ours: a protocol
 * failure. Nothing here decides what a status means (see outcome.h).
 */
#ifndef RELAY_HTTP_CLIENT_H
#define RELAY_HTTP_CLIENT_H

#include <stddef.h>
#include <stdint.h>
#include <llhttp.h>
#include <uv.h>

#include "relay/base/util.h"
#include "relay/net/stream.h"

struct http_client;

/*
 * The answer to a request. status is the HTTP status, or a negative
 * OUTCOME_STATUS_* (outcome.h) for a transport failure, with err saying
 * what happened ("connection refused", "response timeout after 30000 ms").
 * body holds at most the first 4 KiB of the response body (enough to
 * classify it), NUL-terminated; retry_after_s is the Retry-After header in seconds
 * (http_parse_retry_after; 0 if absent, not understood or already past). The
 * pointers are valid during the callback.
 */
struct http_response {
	int status;
	const char *body;
	size_t body_len;
	uint64_t retry_after_s;
	const char *err;
};

typedef void (*http_client_cb)(struct http_client *c, const struct http_response *resp, void *arg);

struct http_client {
	uv_loop_t *loop;
	char *host;
	uint16_t port;
	uint64_t connect_timeout_ms;
	uint64_t response_timeout_ms;

	/* TLS (http_client_set_tls): the context connections are made with
	 * (a reference held), or NULL for plain HTTP */
	struct net_tls_ctx *tls;
	char *server_name;      /* NULL: host */
	char *tls_error;        /* the context could not be made: every request fails with it */
	uint64_t tls_handshakes; /* full handshakes and resumed ones, since init */
	uint64_t tls_resumed;

	/* private: http_client.c's */
	struct net_stream *s;   /* the connection, or the connect under way; NULL when none */
	int streams;            /* streams not yet closed (http_client_close waits for them) */
	uv_timer_t timer;
	llhttp_t parser;
	llhttp_settings_t settings;
	int connected;          /* a connection is up (also the fed one of http_client_feed_response) */
	int reused;             /* this request went out on a kept-alive connection */
	int in_request;
	int writing;            /* the request is not all written yet */
	int got_bytes;          /* response bytes seen for this request */
	int complete;           /* the final answer is parsed */
	int keep_alive;
	int closing;
	int timer_open;
	int tls_changed;        /* the context changed during the request: not kept alive */
	void (*close_cb)(struct http_client *c);

	/* the request in progress; the caller owns body until the callback */
	struct rbuf head;
	const char *body;
	size_t body_len;
	http_client_cb cb;
	void *cb_arg;

	/* the response being parsed */
	struct rbuf resp_body;
	struct rbuf hname, hval;
	int in_value;
	int interim;            /* interim (1xx) answers skipped for this request */
	int refused;            /* a callback refused the response; err says why */
	uint64_t retry_after_s;
	char err[1280];         /* a TLS verify failure's message is long (stream.h) */
};

/*
 * A Retry-After value (RFC 9110 section 10.2.3): delay-seconds, or an
 * HTTP-date in the IMF-fixdate form ("Sun, 06 Nov 1994 08:49:37 GMT"),
 * taken relative to now_s (seconds since the epoch). Blanks around it are
 * ignored. Seconds too large for 64 bits saturate at UINT64_MAX, never wrap:
 * the value comes from a peer, and whoever multiplies it must saturate too.
 * Returns the delay in seconds (0 for a date already past), or 0 when the
 * value is neither form (a sign, a unit, the obsolete date forms): the
 * caller's own backoff then decides.
 */
uint64_t http_parse_retry_after(const char *v, size_t len, int64_t now_s);

/* Set up c for host:port (a name or a literal address) on loop. */
void http_client_init(struct http_client *c, uv_loop_t *loop, const char *host, uint16_t port,
                      uint64_t connect_timeout_ms, uint64_t response_timeout_ms);

/*
 * Connect with TLS from now on: tls (a client context; a reference is
 * taken, the caller keeps its own) and server_name (copied; NULL: host),
 * or, with tls NULL and tls_error set, fail every request at once with
 * OUTCOME_STATUS_TLS_CONFIG and that message (the context could not be
 * made). An idle connection made with the old context is closed, one in
 * use is closed after its answer: a reload's new CA or client
 * certificate applies to the next request.
 */
void http_client_set_tls(struct http_client *c, struct net_tls_ctx *tls, const char *server_name,
                         const char *tls_error);

/*
 * Send one request. target is the path and query ("/write?db=x");
 * headers are extra header lines, each ending in "\r\n" (may be NULL);
 * body/body_len must stay valid until cb runs. cb runs exactly once, on
 * the loop thread, never inside this call. Returns 0, or -EBUSY if a
 * request is already in progress.
 */
int http_client_request(struct http_client *c, const char *method, const char *target, const char *headers,
                        const char *body, size_t body_len, http_client_cb cb, void *arg);

/* Abort any request (its callback is not called) and close; cb runs when
 * every handle and stream is closed (the TLS context reference is
 * dropped then). */
void http_client_close(struct http_client *c, void (*cb)(struct http_client *c));

/*
 * Append to out the head of a request as http_client_request sends it:
 * the request line, Host (an IPv6 literal in brackets), User-Agent,
 * Content-Length: body_len, then headers as given (lines ending in "\r\n";
 * may be NULL) and the empty line. Checks nothing: what goes in target
 * and headers must already be fit for a request head (backend_api.h).
 */
void http_client_build_head(struct rbuf *out, const char *method, const char *target, const char *host,
                            uint16_t port, const char *headers, size_t body_len);

/* http_client_feed_response: the request is still being written when the
 * answer comes (an early answer, like a 413 before the whole body). */
#define HTTP_FEED_WRITING 1

/*
 * For tests and fuzzing: the answer data to a request of c, handed to the
 * read callback exactly as the stream hands over what it reads, in pieces
 * of at most piece bytes (0: in one), then the end of the stream. c must
 * be set up (http_client_init) and idle; nothing is connected or sent:
 * the connection is only a flag. cb runs exactly once, inside this call,
 * as for http_client_request; in it, c->connected is 0 if the connection
 * would not be used again. flags: HTTP_FEED_*. Afterwards c is idle.
 */
void http_client_feed_response(struct http_client *c, const char *data, size_t len, size_t piece, int flags,
                               http_client_cb cb, void *arg);

#endif
