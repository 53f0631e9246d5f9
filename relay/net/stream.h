/*
 * stream: one TCP connection carrying plain bytes or TLS, the same API
 * either way, on the libuv loop. The door accepts with it, the backend
 * clients connect with it (resolve, connect, handshake); neither sees
 * OpenSSL. TLS runs through OpenSSL with two memory BIOs: bytes read from
 * the socket are fed to the SSL object, and what it wants sent is taken
 * from it and written with uv_write, so the SSL object never touches the
 * socket and nothing blocks: a handshake is a sequence of reads like any
 * other.
 *
 * Every function and callback runs on the loop thread. No callback runs
 * inside the call that caused it (net_connect, net_stream_write,
 * net_stream_read_start, net_stream_close): each is deferred to the loop,
 * so a caller may close or write from inside any callback.
 *
 * Lifetime: the stream owns its TCP handle, a timer and an idle handle,
 * and (with TLS) its SSL object and a reference to its context. Whoever
 * got the stream (net_stream_accept, or the connect callback's success)
 * ends it with net_stream_close, once, whatever happened before; the
 * memory is freed after the close callback. After a failure (on_error) the
 * stream reads nothing more and writes fail with UV_EPIPE, except after
 * NET_ERR_PLAIN_HTTP (see net_stream_accept); its owner still closes it.
 *
 * Errors follow the two conventions of CONTRIBUTING.md: operations return
 * 0 or a negative libuv code (UV_E*); failures that arrive later come as a
 * struct net_error, whose kind classifies them for the caller and whose
 * message says what a human needs (the peer, the TLS alert, the verify
 * failure with the certificate's subject, issuer, expiry and the name
 * expected, and what to change).
 */
#ifndef RELAY_NET_STREAM_H
#define RELAY_NET_STREAM_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#include "relay/net/tls.h"

struct net_stream;

/*
 * What went wrong, classed for what the caller does next. For relayd's
 * outcome table: NET_ERR_VERIFY holds a backend (a retry cannot help until
 * a certificate or the configuration changes); the others are retried
 * like any connection error.
 */
enum net_err {
	NET_OK = 0,
	NET_ERR_CONNECT,    /* resolving the name or the TCP connect failed (refused, unreachable) */
	NET_ERR_TIMEOUT,    /* the connect, or the handshake, did not finish in time */
	NET_ERR_HANDSHAKE,  /* the TLS handshake failed for another reason than a certificate:
	                     * no common version or cipher, a peer that does not speak TLS, an
	                     * alert about the protocol */
	NET_ERR_VERIFY,     /* a certificate: the peer's failed verification (chain, expiry,
	                     * name), or the peer refused ours, or sent none when one is required */
	NET_ERR_RESET,      /* the connection failed after it was set up: reset, a read error, a
	                     * TLS record that does not decrypt, the end in mid-handshake */
	NET_ERR_PLAIN_HTTP, /* server side: a client spoke plain HTTP to a TLS port */
};

/* A name for kind ("verify", "timeout", ...), for logs and tests. */
const char *net_err_name(enum net_err kind);

struct net_error {
	enum net_err kind;
	int uv_code;        /* the libuv code behind it (UV_ECONNREFUSED, UV_ETIMEDOUT ...), or 0 */
	long verify_result; /* NET_ERR_VERIFY: OpenSSL's X509_V_ERR_* (0 when the failure is the
	                     * peer's refusal or a missing certificate) */
	char msg[1024];     /* one line, lowercase, what failed first */
};

/*
 * The callbacks of an open stream; each may be NULL. data is the caller's
 * pointer given with them.
 *
 * on_read: plaintext bytes, len > 0. data points into a buffer the layer
 * reuses: copy what is kept.
 * on_eof: the peer ended its side cleanly (TLS close_notify, or the end of
 * the TCP stream: an HTTP peer's framing says whether that was early).
 * Nothing more is read; writing may still work.
 * on_error: a failure (e->kind); nothing more is read. The caller closes
 * the stream (it may first write, e.g. the door's answer to plain HTTP).
 * e is valid during the callback.
 * on_handshake: server side with TLS: the handshake is done (the peer's
 * certificate, if any, has been verified). Never called for plain streams.
 */
struct net_stream_callbacks {
	void (*on_read)(struct net_stream *s, const char *data, size_t len);
	void (*on_eof)(struct net_stream *s);
	void (*on_error)(struct net_stream *s, const struct net_error *e);
	void (*on_handshake)(struct net_stream *s);
};

/* net_connect's answer: err NULL and s ready (TLS done), or err set and s
 * already being closed by the layer (the caller must not use s again). */
typedef void (*net_connect_cb)(struct net_stream *s, const struct net_error *err, void *arg);

/* A write's completion: status 0, or a negative libuv code (UV_ECANCELED
 * when the stream was closed before the bytes went out). */
typedef void (*net_write_cb)(struct net_stream *s, int status, void *arg);

typedef void (*net_close_cb)(struct net_stream *s);
typedef void (*net_shutdown_cb)(struct net_stream *s, int status, void *arg);

/*
 * Server side: accept the next connection of listener into a new stream.
 * tls: a server context (a reference is taken: a reload may drop the
 * caller's at once), or NULL for plain TCP. handshake_timeout_ms: 0 for
 * none; otherwise a handshake not done in time is on_error with
 * NET_ERR_TIMEOUT (the door may instead time the whole request head with
 * its own timer). cb is copied; data is the caller's. With TLS the
 * handshake starts at once, whether or not reading is started; plain
 * streams read nothing until net_stream_read_start. While a TLS stream
 * waits for its first bytes, it checks whether they look like an HTTP
 * request (a method in capitals, then a space): that is on_error with
 * NET_ERR_PLAIN_HTTP, and writes on the stream then go out as plain bytes,
 * so the caller can answer in HTTP before it closes.
 * Returns 0 with *out set, or a negative libuv code from uv_accept or
 * uv_read_start (no stream is given; what was made is closed and freed by
 * the layer).
 */
int net_stream_accept(uv_loop_t *loop, uv_stream_t *listener, struct net_tls_ctx *tls, uint64_t handshake_timeout_ms,
                      const struct net_stream_callbacks *cb, void *data, struct net_stream **out);

/*
 * Client side: connect to host:port (a literal IPv4 or IPv6 address is
 * connected at once; a name is resolved with uv_getaddrinfo on the thread
 * pool, and the first address is tried), then, with tls (a client
 * context, referenced), make the handshake: SNI and the certificate's name
 * checked against server_name (NULL: host; an IP address is matched
 * against the certificate's IP entries and sent without SNI), a cached
 * session offered. timeout_ms bounds the whole (resolve, connect,
 * handshake); 0 means none. cb runs once, never inside this call: with
 * the ready stream, or with the error (NET_ERR_CONNECT, NET_ERR_TIMEOUT,
 * NET_ERR_HANDSHAKE, NET_ERR_VERIFY, NET_ERR_RESET). Returns the stream
 * (always): closing it before cb runs cancels the connect, and cb is then
 * never called; its close callback is.
 */
struct net_stream *net_connect(uv_loop_t *loop, const char *host, uint16_t port, uint64_t timeout_ms,
                               struct net_tls_ctx *tls, const char *server_name, net_connect_cb cb, void *arg);

/* Set the callbacks and the caller's pointer (cb copied; NULL clears). */
void net_stream_set_callbacks(struct net_stream *s, const struct net_stream_callbacks *cb, void *data);
void *net_stream_data(const struct net_stream *s);

/*
 * Start delivering plaintext to on_read. Bytes a TLS stream already holds
 * decrypted or undecrypted are delivered from the loop, not from inside
 * this call. Returns 0, or UV_EINVAL after a failure, end or close.
 */
int net_stream_read_start(struct net_stream *s);

/* Stop delivering (backpressure): the socket is not read while stopped,
 * except that a TLS handshake in progress goes on. Safe inside on_read:
 * nothing more is delivered. */
void net_stream_read_stop(struct net_stream *s);

/*
 * Queue plaintext: bufs[0..nbufs) (at least one byte in all), in order
 * after every earlier write. The caller keeps the buffers valid until cb
 * (the array itself may be temporary). A TLS stream encrypts them at once
 * (after the handshake, if it is still going on). cb (may be NULL) runs
 * once, never inside this call, when the bytes are handed to the kernel or
 * failed. Returns 0, or a negative libuv code, and then cb is not called:
 * UV_EINVAL (no bytes), UV_EPIPE (closed, shut down, or TLS failed),
 * UV_EPROTO (OpenSSL refused to encrypt), or uv_write's own.
 */
int net_stream_write(struct net_stream *s, const uv_buf_t bufs[], unsigned nbufs, net_write_cb cb, void *arg);

/* Plaintext bytes accepted by net_stream_write whose callbacks have not
 * run yet: the caller's backpressure figure. */
size_t net_stream_write_queue_size(const struct net_stream *s);

/*
 * End our side after every queued write: with TLS a close_notify alert
 * first (when the handshake was done), then the TCP half-close. Reading
 * goes on (a caller draining before it closes keeps reading). cb (may be
 * NULL) gets 0 or a negative libuv code. Returns 0, or UV_EPIPE if
 * already shut down or closed.
 */
int net_stream_shutdown(struct net_stream *s, net_shutdown_cb cb, void *arg);

/*
 * Close now: pending writes get UV_ECANCELED, a connect in progress is
 * cancelled (its callback is not called), a resolve in flight is waited
 * for (libuv cannot take it back) but its answer is dropped. cb (may be
 * NULL) runs after everything is released but the stream memory, which is
 * freed right after it. A second call does nothing.
 */
void net_stream_close(struct net_stream *s, net_close_cb cb);

/* 1 if s carries TLS (a handshake done or in progress). */
int net_stream_is_tls(const struct net_stream *s);

/* 1 while a TLS handshake is in progress (the door's cap on connections
 * in handshake counts these). */
int net_stream_in_handshake(const struct net_stream *s);

/* Client side: 1 if the handshake resumed a cached session. */
int net_stream_session_reused(const struct net_stream *s);

/*
 * Server side with mTLS: copy the verified client certificate's subject
 * common name into buf (NUL-terminated). Returns its length, or -1 when
 * there is none (plain, no certificate, no CN, or it does not fit).
 */
int net_stream_peer_cn(const struct net_stream *s, char *buf, size_t len);

/* The negotiated TLS version ("TLSv1.3") and ALPN protocol ("" if none);
 * NULL for a plain stream. Valid while the stream is open. */
const char *net_stream_tls_version(const struct net_stream *s);
const char *net_stream_alpn(const struct net_stream *s, char *buf, size_t len);

/* The peer's address (uv_tcp_getpeername). Returns 0 or a libuv code. */
int net_stream_peername(const struct net_stream *s, struct sockaddr_storage *ss);

/* The peer's address as text, "ip:port" for log lines (an IPv6 address
 * is not bracketed: "::1:8086"; a family other than IPv4/IPv6 gives "?:0"). Writes into the caller's buf of len bytes, truncated to fit
 * and always terminated (len > 0); nothing is kept. Returns 0, or the
 * libuv code of uv_tcp_getpeername (the peer is gone, the socket not
 * connected) with buf set to "". */
int net_stream_peer_text(const struct net_stream *s, char *buf, size_t len);

/* The TCP handle, for socket options only (keep-alive, nodelay): never
 * read, write or close it directly. */
uv_tcp_t *net_stream_tcp(struct net_stream *s);

#endif
