/*
 * stream_internal: the stream's state, shared by the files of relay/net
 * that make it up (stream.c: making, writing, reading, both ends;
 * stream_error.c: failures, classed and described; stream_info.c: what a
 * stream tells its owner). Never included outside relay/net.
 */
#ifndef RELAY_NET_STREAM_INTERNAL_H
#define RELAY_NET_STREAM_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <openssl/ssl.h>
#include <uv.h>

#include "relay/net/net_internal.h"
#include "relay/net/stream.h"

/* One write: a user's (with a callback, maybe none), or the layer's own
 * handshake messages and alerts. Before the handshake is done a user's
 * write waits in the pending list with a copy of its buffer array. */
struct net_write {
	uv_write_t req;
	struct net_stream *s;
	net_write_cb cb;
	void *arg;
	size_t plain_len; /* counted in s->queued until the callback */
	char *cipher;	  /* TLS: the records, owned */
	uv_buf_t *bufs;	  /* pending: the caller's buffers */
	unsigned nbufs;
	struct net_write *next;
};

struct net_stream {
	uv_loop_t *loop;
	uv_tcp_t tcp;
	uv_timer_t timer; /* the connect's or the handshake's deadline */
	uv_idle_t idle;	  /* deferred work: the connect's start, a drain after read_start */
	uv_connect_t connect_req;
	uv_getaddrinfo_t gai;
	uv_shutdown_t shutdown_req;
	int handles; /* initialised handles not yet closed */

	unsigned client : 1, tls : 1, connected : 1, handshaking : 1, open : 1, failed : 1, eof : 1, closing : 1,
	    user_reading : 1, sock_reading : 1, gai_pending : 1, connecting : 1, plain_fallback : 1, shut : 1,
	    shutdown_pending : 1, first_bytes : 1, start_wanted : 1, drain_wanted : 1, reused : 1;

	SSL *ssl; /* owns rbio and wbio */
	BIO *rbio, *wbio;
	struct net_tls_ctx *ctx;
	struct net_verify_note *note; /* made by the first verify failure */

	char *host;	   /* client: as given */
	char *name;	   /* client: the name verified and sent as SNI */
	char *session_key; /* client: "name:port" in the context's cache */
	uint16_t port;
	uint64_t timeout_ms;
	char peer[72]; /* "host:port" for messages */

	net_connect_cb connect_cb;
	void *connect_arg;
	struct net_stream_callbacks cb;
	void *data;
	net_close_cb close_cb;
	net_shutdown_cb shutdown_cb;
	void *shutdown_arg;

	struct net_write *pending, *pending_tail;
	size_t queued;
	struct net_error *err; /* made by the failure: an idle connection carries neither */
};

/* stream.c */
/* Start or stop reading the socket as the user and the handshake need. */
void stream_update_reading(struct net_stream *s);
/* Close every handle; the memory goes once the last is closed. */
void stream_close_internal(struct net_stream *s);

/* stream_error.c */
/*
 * Record the failure and tell whoever waits: the connect callback (and
 * the stream is then closed here: the caller never owned it), or
 * on_error. Reading stops for good; writes end with UV_EPIPE except on a
 * plain-HTTP fallback.
 */
void stream_fail(struct net_stream *s, enum net_err kind, int uv_code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* A certificate failed verification (vr: X509_V_ERR_*): NET_ERR_VERIFY
 * with the certificate described and what to change. */
void stream_fail_verify(struct net_stream *s, long vr, const char *what);
/* An OpenSSL call failed (e: SSL_get_error's answer): classed from the
 * error queue, which this empties. */
void stream_fail_tls(struct net_stream *s, int e, int in_handshake);

#endif
