/*
 * stream: see stream.h.
 *
 * The TLS engine is an SSL object between two memory BIOs: ciphertext
 * read from the socket is written into rbio and the SSL object is run
 * (SSL_do_handshake, then SSL_read); whatever it produced in wbio
 * (handshake messages, records, alerts) is taken out and written with
 * uv_write. It never touches the socket, so it never blocks, and a
 * handshake is only a state the stream is in while reads come.
 *
 * Lifetime: the stream's three handles (tcp, timer, idle) are initialised
 * when it is made and closed by net_stream_close; the memory goes when
 * the last one is closed and no resolve is in flight (maybe_free). Every
 * path that calls the user re-checks closing and failed afterwards: the
 * user may close or fail the stream from inside any callback, and the
 * memory stays valid until the loop runs the close callbacks.
 */
#include "relay/net/stream.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "relay/base/util.h"
#include "relay/net/net_internal.h"
#include "relay/net/stream_internal.h"

/* Ciphertext (or plain bytes) read from the socket, and plaintext out of
 * SSL_read: used and emptied inside one callback, so one per thread. A
 * TLS record carries at most 16 KiB of plaintext. */
#define NET_READ_SIZE 65536
#define NET_PLAIN_SIZE 16384
/* Ciphertext goes in and out of the memory BIOs in slices of about one
 * record, and a BIO that grew past NET_BIO_KEEP (a peer's burst, bytes
 * kept while the user did not read) is replaced once drained: a memory
 * BIO keeps the largest size it ever held, and an idle connection should
 * not keep the size of its largest burst. */
#define NET_SLICE 16384
#define NET_BIO_KEEP (64 * 1024)
static _Thread_local char read_buf[NET_READ_SIZE];
static _Thread_local char plain_buf[NET_PLAIN_SIZE];

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void sock_read_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf);
static void start_connect(struct net_stream *s);

const char *net_err_name(enum net_err kind)
{
	switch (kind) {
	case NET_OK:
		return "ok";
	case NET_ERR_CONNECT:
		return "connect";
	case NET_ERR_TIMEOUT:
		return "timeout";
	case NET_ERR_HANDSHAKE:
		return "handshake";
	case NET_ERR_VERIFY:
		return "verify";
	case NET_ERR_RESET:
		return "reset";
	case NET_ERR_PLAIN_HTTP:
		return "plain-http";
	}
	return "?";
}

/*---- what tls.c asks of a stream ----*/

struct net_verify_note *net_stream_verify_note(SSL *ssl)
{
	struct net_stream *s = SSL_get_app_data(ssl);
	if (s && !s->note)
		s->note = xcalloc(1, sizeof(*s->note));
	return s ? s->note : NULL;
}

const char *net_stream_session_key(SSL *ssl)
{
	struct net_stream *s = SSL_get_app_data(ssl);
	return s ? s->session_key : NULL;
}

/*---- making and freeing ----*/

static struct net_stream *stream_new(uv_loop_t *loop)
{
	struct net_stream *s = xcalloc(1, sizeof(*s));
	s->loop = loop;
	uv_tcp_init(loop, &s->tcp);
	uv_timer_init(loop, &s->timer);
	uv_idle_init(loop, &s->idle);
	s->tcp.data = s->timer.data = s->idle.data = s;
	s->handles = 3;
	return s;
}

static void free_write(struct net_write *w)
{
	free(w->cipher);
	free(w->bufs);
	free(w);
}

static void maybe_free(struct net_stream *s)
{
	/* A resolve cannot be taken back once a thread runs it: its callback
	 * still comes, and must find the stream. */
	if (s->handles || s->gai_pending)
		return;
	/* Writes still waiting for a handshake never went out. */
	while (s->pending) {
		struct net_write *w = s->pending;
		s->pending = w->next;
		s->queued -= w->plain_len;
		if (w->cb)
			w->cb(s, UV_ECANCELED, w->arg);
		free_write(w);
	}
	if (s->shutdown_pending && s->shutdown_cb)
		s->shutdown_cb(s, UV_ECANCELED, s->shutdown_arg);
	if (s->close_cb)
		s->close_cb(s);
	/* SSL_free of a connection that sent no close_notify marks its
	 * session not resumable, and with TLS 1.3 that is the very session
	 * the client cache keeps (the last ticket). A stream closed by its
	 * owner after a good handshake ended well: say so first. */
	if (s->ssl && s->open && !s->failed)
		SSL_set_shutdown(s->ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
	SSL_free(s->ssl); /* frees rbio and wbio */
	net_tls_ctx_unref(s->ctx);
	free(s->note);
	free(s->err);
	free(s->host);
	free(s->name);
	free(s->session_key);
	free(s);
}

static void handle_closed(uv_handle_t *h)
{
	struct net_stream *s = h->data;
	s->handles--;
	maybe_free(s);
}

void stream_close_internal(struct net_stream *s)
{
	if (s->closing)
		return;
	s->closing = 1;
	s->connecting = 0; /* its callback is never called now */
	if (s->gai_pending)
		uv_cancel((uv_req_t *)&s->gai); /* UV_EAI_CANCELED if no thread took it yet */
	/* Closing tcp cancels its writes, connect and shutdown (their
	 * callbacks see UV_ECANCELED) before its close callback. */
	uv_close((uv_handle_t *)&s->tcp, handle_closed);
	uv_close((uv_handle_t *)&s->timer, handle_closed);
	uv_close((uv_handle_t *)&s->idle, handle_closed);
}

void net_stream_close(struct net_stream *s, net_close_cb cb)
{
	if (s->closing)
		return;
	s->close_cb = cb;
	stream_close_internal(s);
}

/*---- writing ----*/

static void write_done(uv_write_t *req, int status)
{
	struct net_write *w = relay_container_of(req, struct net_write, req);
	struct net_stream *s = w->s;
	s->queued -= w->plain_len;
	if (w->cb)
		w->cb(s, status, w->arg);
	free_write(w);
}

/* Move what the SSL object wrote into wbio to the end of out. */
static void drain_wbio(struct net_stream *s, struct rbuf *out)
{
	size_t n = BIO_ctrl_pending(s->wbio);
	if (!n)
		return;
	rbuf_reserve(out, n);
	int got = BIO_read(s->wbio, out->data + out->len, (int)n);
	if (got > 0)
		out->len += (size_t)got;
}

/*
 * Write out (taken: its bytes become w's) as one uv_write carrying w's
 * callback (w may be NULL: the layer's own bytes). Returns 0 or uv_write's
 * code; w and the bytes are freed on failure.
 */
static int send_cipher(struct net_stream *s, struct net_write *w, struct rbuf *out)
{
	if (!out->len && !w) {
		rbuf_release(out);
		return 0;
	}
	if (!w)
		w = xcalloc(1, sizeof(*w));
	w->s = s;
	w->cipher = out->data; /* NULL only for a write of no bytes, which never comes */
	uv_buf_t b = uv_buf_init(out->data, (unsigned)out->len);
	*out = (struct rbuf)RBUF_INIT;
	int rc = uv_write(&w->req, (uv_stream_t *)&s->tcp, &b, 1, write_done);
	if (rc < 0) {
		free_write(w);
		return rc;
	}
	s->queued += w->plain_len;
	return 0;
}

static int send_wbio(struct net_stream *s)
{
	struct rbuf out = RBUF_INIT;
	drain_wbio(s, &out);
	return send_cipher(s, NULL, &out);
}

/* The layer's own bytes (handshake, alerts, close_notify); a failure to
 * hand them to the socket fails the stream. */
static void flush_wbio(struct net_stream *s)
{
	int rc = send_wbio(s);
	if (rc < 0)
		stream_fail(s, NET_ERR_RESET, rc, "write to %s: %s", s->peer, uv_strerror(rc));
}

static BIO *mem_bio(void)
{
	BIO *b = BIO_new(BIO_s_mem());
	if (!b)
		relay_fatal("out of memory (BIO_new)");
	/* An empty BIO means "wait for more", not the end of the stream: the
	 * end is the socket's to say. */
	BIO_set_mem_eof_return(b, -1);
	return b;
}

/* A drained BIO that grew past NET_BIO_KEEP is replaced by a new one
 * (SSL_set0_* frees the old), so its memory goes back. Only between
 * handshake and failure: the handshake may stack a buffering BIO. */
static void trim_bios(struct net_stream *s)
{
	BUF_MEM *bm = NULL;
	if (!s->open || s->failed || s->closing)
		return;
	if (!BIO_ctrl_pending(s->rbio) && BIO_get_mem_ptr(s->rbio, &bm) == 1 && bm && bm->max > NET_BIO_KEEP) {
		s->rbio = mem_bio();
		SSL_set0_rbio(s->ssl, s->rbio);
	}
	bm = NULL;
	if (!BIO_ctrl_pending(s->wbio) && BIO_get_mem_ptr(s->wbio, &bm) == 1 && bm && bm->max > NET_BIO_KEEP) {
		s->wbio = mem_bio();
		SSL_set0_wbio(s->ssl, s->wbio);
	}
}

/* Encrypt w's buffers and send them with w's callback. Returns 0 or a
 * libuv code (w freed). A record at a time, each taken out of wbio at
 * once: the BIO stays one record large however large the write. */
static int tls_send(struct net_stream *s, struct net_write *w, const uv_buf_t *bufs, unsigned nbufs)
{
	struct rbuf out = RBUF_INIT;
	ERR_clear_error();
	for (unsigned i = 0; i < nbufs; i++) {
		size_t off = 0;
		while (off < bufs[i].len) {
			size_t done = 0;
			size_t chunk = bufs[i].len - off < NET_SLICE ? bufs[i].len - off : NET_SLICE;
			/* A memory BIO takes everything: SSL_write_ex writes the whole
			 * chunk or fails for good (after a fatal alert). */
			if (SSL_write_ex(s->ssl, bufs[i].base + off, chunk, &done) != 1) {
				ERR_clear_error();
				rbuf_release(&out);
				free_write(w);
				return UV_EPROTO;
			}
			off += done;
			drain_wbio(s, &out);
		}
	}
	int rc = send_cipher(s, w, &out);
	trim_bios(s);
	return rc;
}

static int plain_send(struct net_stream *s, struct net_write *w, const uv_buf_t *bufs, unsigned nbufs)
{
	int rc = uv_write(&w->req, (uv_stream_t *)&s->tcp, bufs, nbufs, write_done);
	if (rc < 0) {
		free_write(w);
		return rc;
	}
	s->queued += w->plain_len;
	return 0;
}

/* The writes that waited for the handshake (or for its failure as plain
 * HTTP), in order. A failure here is the caller's write failing late: its
 * callback gets the code. */
static void send_pending(struct net_stream *s)
{
	while (s->pending && !s->closing) {
		struct net_write *w = s->pending;
		s->pending = w->next;
		w->next = NULL;
		size_t len = w->plain_len;
		s->queued -= len; /* counted again by the send */
		net_write_cb cb = w->cb;
		void *arg = w->arg;
		uv_buf_t *bufs = w->bufs;
		w->bufs = NULL;
		int rc = s->plain_fallback ? plain_send(s, w, bufs, w->nbufs) : tls_send(s, w, bufs, w->nbufs);
		free(bufs); /* the array only: the caller's bytes are encrypted or held by uv_write's copy */
		if (rc < 0 && cb)
			cb(s, rc, arg);
	}
	if (!s->pending)
		s->pending_tail = NULL;
}

int net_stream_write(struct net_stream *s, const uv_buf_t bufs[], unsigned nbufs, net_write_cb cb, void *arg)
{
	if (s->closing || s->shut || (s->failed && !s->plain_fallback))
		return UV_EPIPE;
	if (!s->connected || s->connecting)
		return UV_ENOTCONN;
	size_t total = 0;
	for (unsigned i = 0; i < nbufs; i++)
		total += bufs[i].len;
	if (!total)
		return UV_EINVAL;
	struct net_write *w = xcalloc(1, sizeof(*w));
	w->s = s;
	w->cb = cb;
	w->arg = arg;
	w->plain_len = total;
	if (!s->tls || s->plain_fallback)
		return plain_send(s, w, bufs, nbufs);
	if (s->handshaking) {
		/* Server side: an answer written before the handshake is done
		 * (a refusal at accept) goes out after it, encrypted. */
		w->bufs = xmalloc(nbufs * sizeof(*bufs));
		memcpy(w->bufs, bufs, nbufs * sizeof(*bufs));
		w->nbufs = nbufs;
		if (s->pending_tail)
			s->pending_tail->next = w;
		else
			s->pending = w;
		s->pending_tail = w;
		s->queued += total;
		return 0;
	}
	return tls_send(s, w, bufs, nbufs);
}

size_t net_stream_write_queue_size(const struct net_stream *s)
{
	return s->queued;
}

/*---- shutting down ----*/

static void shutdown_done(uv_shutdown_t *req, int status)
{
	struct net_stream *s = req->data;
	if (s->shutdown_cb)
		s->shutdown_cb(s, status, s->shutdown_arg);
}

static int do_shutdown(struct net_stream *s)
{
	s->shutdown_pending = 0;
	if (s->tls && s->open && !s->failed && !s->plain_fallback) {
		/* close_notify before the FIN: the peer can tell our end from a
		 * cut. We do not wait for theirs (HTTP needs no more). */
		ERR_clear_error();
		SSL_shutdown(s->ssl);
		ERR_clear_error();
		send_wbio(s);
	}
	s->shutdown_req.data = s;
	/* uv_shutdown waits for every queued write, so the last answer and
	 * the alert go out first. */
	return uv_shutdown(&s->shutdown_req, (uv_stream_t *)&s->tcp, shutdown_done);
}

int net_stream_shutdown(struct net_stream *s, net_shutdown_cb cb, void *arg)
{
	if (s->closing || s->shut)
		return UV_EPIPE;
	if (!s->connected || s->connecting)
		return UV_ENOTCONN;
	s->shut = 1;
	s->shutdown_cb = cb;
	s->shutdown_arg = arg;
	if (s->handshaking) {
		/* After the handshake and the writes that wait for it. */
		s->shutdown_pending = 1;
		return 0;
	}
	return do_shutdown(s);
}

/*---- reading ----*/

/* Read the socket exactly when bytes are wanted: during a handshake, and
 * while the user reads an open stream. Not reading is the backpressure:
 * the kernel's buffers fill and TCP slows the peer. */
void stream_update_reading(struct net_stream *s)
{
	int want =
	    s->connected && !s->closing && !s->failed && !s->eof && (s->handshaking || (s->open && s->user_reading));
	if (want && !s->sock_reading) {
		int rc = uv_read_start((uv_stream_t *)&s->tcp, alloc_cb, sock_read_cb);
		if (rc < 0) {
			stream_fail(s, NET_ERR_RESET, rc, "read from %s: %s", s->peer, uv_strerror(rc));
			return;
		}
		s->sock_reading = 1;
	} else if (!want && s->sock_reading) {
		uv_read_stop((uv_stream_t *)&s->tcp);
		s->sock_reading = 0;
	}
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	(void)h;
	(void)suggested;
	buf->base = read_buf;
	buf->len = sizeof(read_buf);
}

static void got_eof(struct net_stream *s)
{
	s->eof = 1;
	stream_update_reading(s);
	if (s->cb.on_eof)
		s->cb.on_eof(s);
}

/* Decrypted bytes to the user while it reads; what stays in the SSL
 * object or rbio waits for net_stream_read_start. */
static void tls_deliver(struct net_stream *s)
{
	while (s->user_reading && !s->closing && !s->failed && !s->eof) {
		size_t got = 0;
		ERR_clear_error();
		if (SSL_read_ex(s->ssl, plain_buf, sizeof(plain_buf), &got) == 1) {
			if (s->cb.on_read)
				s->cb.on_read(s, plain_buf, got);
			continue;
		}
		int e = SSL_get_error(s->ssl, 0);
		if (e == SSL_ERROR_WANT_READ)
			break;
		if (e == SSL_ERROR_ZERO_RETURN) {
			/* close_notify: a clean end. Ours is the owner's to send
			 * (net_stream_shutdown); what SSL_read wrote goes out. */
			flush_wbio(s);
			if (!s->failed && !s->closing)
				got_eof(s);
			return;
		}
		stream_fail_tls(s, e, 0);
		return;
	}
	/* SSL_read may have written (a KeyUpdate's answer). */
	if (!s->closing && !s->failed)
		flush_wbio(s);
	trim_bios(s);
}

static void handshake_done(struct net_stream *s)
{
	s->handshaking = 0;
	s->open = 1;
	s->reused = SSL_session_reused(s->ssl) == 1;
	uv_timer_stop(&s->timer);
	/* Writes queued during the handshake go before anything the callback
	 * below writes. */
	send_pending(s);
	if (s->shutdown_pending && !s->closing) {
		int rc = do_shutdown(s);
		if (rc < 0 && s->shutdown_cb)
			s->shutdown_cb(s, rc, s->shutdown_arg);
	}
	if (s->closing)
		return;
	if (s->client && s->connecting) {
		s->connecting = 0;
		s->connect_cb(s, NULL, s->connect_arg);
	} else if (!s->client && s->cb.on_handshake) {
		s->cb.on_handshake(s);
	}
	if (!s->closing && !s->failed)
		stream_update_reading(s);
}

static void tls_pump(struct net_stream *s)
{
	if (s->handshaking) {
		ERR_clear_error(); /* SSL_get_error reads the queue: another stream's errors are not ours */
		int r = SSL_do_handshake(s->ssl);
		int e = r == 1 ? SSL_ERROR_NONE : SSL_get_error(s->ssl, r);
		/* What the handshake wrote goes out first, whatever follows:
		 * on a failure it is the alert that tells the peer why. The
		 * error queue is kept for fail_tls meanwhile. */
		int rc = send_wbio(s);
		if (r != 1 && e != SSL_ERROR_WANT_READ) {
			stream_fail_tls(s, e, 1);
			return;
		}
		if (rc < 0) {
			stream_fail(s, NET_ERR_RESET, rc, "write to %s: %s", s->peer, uv_strerror(rc));
			return;
		}
		if (r != 1)
			return;
		handshake_done(s);
		if (s->closing || s->failed)
			return;
	}
	tls_deliver(s);
}

/* A TLS port's first bytes spelling an HTTP method ("GET ", "POST "):
 * a TLS record begins with 0x16, never with a capital letter. */
static int looks_like_http(const char *p, size_t n)
{
	size_t i = 0;
	for (; i < n && i < 16 && p[i] >= 'A' && p[i] <= 'Z'; i++)
		;
	return i > 0 && (i == n || p[i] == ' ');
}

static void sock_read_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
	struct net_stream *s = st->data;
	if (nread == 0 || s->closing || s->failed)
		return;
	if (nread < 0) {
		if (nread != UV_EOF)
			stream_fail(s, NET_ERR_RESET, (int)nread, "read from %s: %s", s->peer, uv_strerror((int)nread));
		else if (s->handshaking)
			stream_fail(s, NET_ERR_RESET, UV_EOF, "tls %s %s: the peer closed the connection during the handshake",
			     s->client ? "with" : "from", s->peer);
		else
			got_eof(s); /* without close_notify: the HTTP framing above says if it was early */
		return;
	}
	if (!s->tls) {
		if (s->cb.on_read)
			s->cb.on_read(s, buf->base, (size_t)nread);
		return;
	}
	if (!s->client && !s->first_bytes) {
		s->first_bytes = 1;
		if (looks_like_http(buf->base, (size_t)nread)) {
			/* From now on the stream is plain, for the answer only:
			 * writes (and those waiting for the handshake) go out as
			 * they are, nothing more is read. */
			s->plain_fallback = 1;
			s->handshaking = 0;
			send_pending(s);
			int n = 0;
			while (n < (int)nread && n < 40 && buf->base[n] >= ' ' && buf->base[n] < 127)
				n++;
			stream_fail(s, NET_ERR_PLAIN_HTTP, UV_EPROTO,
			     "tls from %s: the client spoke plain HTTP to a TLS port (\"%.*s\"); it must use https://",
			     s->peer, n, buf->base);
			if (s->shutdown_pending && !s->closing) {
				int rc = do_shutdown(s);
				if (rc < 0 && s->shutdown_cb)
					s->shutdown_cb(s, rc, s->shutdown_arg);
			}
			return;
		}
	}
	/* A slice at a time, so that rbio stays about a record large; once
	 * the user stops reading (or the stream fails), the rest is kept in
	 * rbio for read_start (or dropped with the stream). */
	size_t off = 0, n = (size_t)nread;
	while (off < n) {
		size_t k = n - off;
		if (k > NET_SLICE && (s->handshaking || s->user_reading) && !s->failed && !s->closing)
			k = NET_SLICE;
		BIO_write(s->rbio, buf->base + off, (int)k);
		off += k;
		if (s->failed || s->closing)
			return;
		tls_pump(s);
	}
}

static void idle_cb(uv_idle_t *h)
{
	struct net_stream *s = h->data;
	uv_idle_stop(h);
	if (s->closing)
		return;
	if (s->start_wanted) {
		s->start_wanted = 0;
		start_connect(s);
		return;
	}
	if (s->drain_wanted) {
		s->drain_wanted = 0;
		if (s->tls && s->open && !s->failed)
			tls_deliver(s);
	}
}

int net_stream_read_start(struct net_stream *s)
{
	if (s->closing || s->failed || s->eof)
		return UV_EINVAL;
	s->user_reading = 1;
	/* Plaintext already decrypted, or records already read, would wait
	 * for more bytes from the socket that may never come: deliver them
	 * from the loop (not inside this call: the caller may be in the
	 * middle of its own state change). */
	if (s->tls && s->open && (SSL_has_pending(s->ssl) || BIO_ctrl_pending(s->rbio))) {
		s->drain_wanted = 1;
		uv_idle_start(&s->idle, idle_cb);
	}
	stream_update_reading(s);
	return 0;
}

void net_stream_read_stop(struct net_stream *s)
{
	s->user_reading = 0;
	if (!s->closing)
		stream_update_reading(s);
}

/*---- the server side ----*/

static void timeout_cb(uv_timer_t *t)
{
	struct net_stream *s = t->data;
	if (s->client)
		stream_fail(s, NET_ERR_TIMEOUT, UV_ETIMEDOUT, "%s %s: not done within %llu ms",
		     s->handshaking ? "tls handshake with" : "connect to", s->peer, (unsigned long long)s->timeout_ms);
	else
		stream_fail(s, NET_ERR_TIMEOUT, UV_ETIMEDOUT, "tls from %s: no handshake within %llu ms", s->peer,
		     (unsigned long long)s->timeout_ms);
}

/* A fresh SSL object between two memory BIOs. */
static void tls_attach(struct net_stream *s, struct net_tls_ctx *ctx)
{
	s->ctx = net_tls_ctx_ref(ctx);
	s->tls = 1;
	s->ssl = SSL_new(ctx->ssl);
	if (!s->ssl)
		relay_fatal("out of memory (SSL_new)");
	s->rbio = mem_bio();
	s->wbio = mem_bio();
	SSL_set_bio(s->ssl, s->rbio, s->wbio); /* the SSL object owns both now */
	SSL_set_app_data(s->ssl, s);
}

static void peer_name(struct net_stream *s)
{
	if (net_stream_peer_text(s, s->peer, sizeof(s->peer)) < 0)
		snprintf(s->peer, sizeof(s->peer), "?:0");
}

int net_stream_accept(uv_loop_t *loop, uv_stream_t *listener, struct net_tls_ctx *tls, uint64_t handshake_timeout_ms,
		      const struct net_stream_callbacks *cb, void *data, struct net_stream **out)
{
	*out = NULL;
	struct net_stream *s = stream_new(loop);
	int rc = uv_accept(listener, (uv_stream_t *)&s->tcp);
	if (rc < 0) {
		stream_close_internal(s);
		return rc;
	}
	s->connected = 1;
	uv_tcp_nodelay(&s->tcp, 1);
	peer_name(s);
	net_stream_set_callbacks(s, cb, data);
	if (!tls) {
		s->open = 1;
		*out = s;
		return 0;
	}
	tls_attach(s, tls);
	SSL_set_accept_state(s->ssl);
	s->handshaking = 1;
	s->timeout_ms = handshake_timeout_ms;
	if (handshake_timeout_ms)
		uv_timer_start(&s->timer, timeout_cb, handshake_timeout_ms, 0);
	/* The handshake reads whether or not the user does. */
	rc = uv_read_start((uv_stream_t *)&s->tcp, alloc_cb, sock_read_cb);
	if (rc < 0) {
		stream_close_internal(s);
		return rc;
	}
	s->sock_reading = 1;
	*out = s;
	return 0;
}

/*---- the client side ----*/

static void start_client_tls(struct net_stream *s)
{
	tls_attach(s, s->ctx);
	net_tls_ctx_unref(s->ctx); /* tls_attach took a second reference */
	SSL_set_connect_state(s->ssl);
	unsigned char ip[16];
	int is_ip = uv_inet_pton(AF_INET, s->name, ip) == 0 || uv_inet_pton(AF_INET6, s->name, ip) == 0;
	if (!s->ctx->insecure) {
		/* The name is checked by OpenSSL's verification itself, so a
		 * mismatch is a verify failure like an untrusted chain. */
		if (is_ip) {
			X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(s->ssl), s->name);
		} else {
			SSL_set_hostflags(s->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
			SSL_set1_host(s->ssl, s->name);
		}
	}
	/* SNI carries a host name, never an address (RFC 6066 section 3). */
	if (!is_ip)
		SSL_set_tlsext_host_name(s->ssl, s->name);
	SSL_SESSION *sess = net_tls_session_get(s->ctx, s->session_key);
	if (sess)
		SSL_set_session(s->ssl, sess); /* takes its own reference */
	s->handshaking = 1;
	stream_update_reading(s);
	if (!s->failed)
		tls_pump(s); /* the ClientHello */
}

static void connect_cb(uv_connect_t *req, int status)
{
	struct net_stream *s = req->data;
	if (s->closing || s->failed)
		return;
	if (status < 0) {
		stream_fail(s, NET_ERR_CONNECT, status, "connect to %s: %s", s->peer, uv_strerror(status));
		return;
	}
	s->connected = 1;
	uv_tcp_nodelay(&s->tcp, 1);
	if (s->ctx) {
		start_client_tls(s);
		return;
	}
	s->open = 1;
	uv_timer_stop(&s->timer);
	s->connecting = 0;
	s->connect_cb(s, NULL, s->connect_arg);
}

static void connect_addr(struct net_stream *s, const struct sockaddr *sa)
{
	s->connect_req.data = s;
	int rc = uv_tcp_connect(&s->connect_req, &s->tcp, sa, connect_cb);
	if (rc < 0)
		stream_fail(s, NET_ERR_CONNECT, rc, "connect to %s: %s", s->peer, uv_strerror(rc));
}

static void gai_cb(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
	struct net_stream *s = req->data;
	s->gai_pending = 0;
	if (s->closing) {
		uv_freeaddrinfo(res);
		maybe_free(s);
		return;
	}
	if (!s->failed) {
		if (status < 0 || !res)
			stream_fail(s, NET_ERR_CONNECT, status < 0 ? status : UV_EAI_NONAME, "cannot resolve '%s': %s",
			     s->host, uv_strerror(status < 0 ? status : UV_EAI_NONAME));
		else
			connect_addr(s, res->ai_addr);
	}
	uv_freeaddrinfo(res);
}

static void start_connect(struct net_stream *s)
{
	struct sockaddr_storage ss;
	/* Literal addresses skip the resolver (and the thread pool). */
	if (uv_ip4_addr(s->host, s->port, (struct sockaddr_in *)&ss) == 0 ||
	    uv_ip6_addr(s->host, s->port, (struct sockaddr_in6 *)&ss) == 0) {
		connect_addr(s, (struct sockaddr *)&ss);
		return;
	}
	char port[8];
	struct addrinfo hints;
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	snprintf(port, sizeof(port), "%u", s->port);
	s->gai.data = s;
	s->gai_pending = 1;
	int rc = uv_getaddrinfo(s->loop, &s->gai, gai_cb, s->host, port, &hints);
	if (rc < 0) {
		s->gai_pending = 0;
		stream_fail(s, NET_ERR_CONNECT, rc, "cannot resolve '%s': %s", s->host, uv_strerror(rc));
	}
}

struct net_stream *net_connect(uv_loop_t *loop, const char *host, uint16_t port, uint64_t timeout_ms,
			       struct net_tls_ctx *tls, const char *server_name, net_connect_cb cb, void *arg)
{
	struct net_stream *s = stream_new(loop);
	s->client = 1;
	s->connecting = 1;
	s->connect_cb = cb;
	s->connect_arg = arg;
	s->host = xstrdup(host);
	s->port = port;
	s->timeout_ms = timeout_ms;
	/* An IPv6 literal in brackets, or its colons read as the port's. */
	const char *lb = strchr(host, ':') ? "[" : "", *rb = *lb ? "]" : "";
	snprintf(s->peer, sizeof(s->peer), "%s%.60s%s:%u", lb, host, rb, port);
	if (tls) {
		/* The SSL object is made once connected; the context is held
		 * from now, so a reload meanwhile does not change it. */
		s->ctx = net_tls_ctx_ref(tls);
		s->name = xstrdup(server_name && *server_name ? server_name : host);
		size_t n = strlen(s->name) + 8;
		s->session_key = xmalloc(n);
		snprintf(s->session_key, n, "%s:%u", s->name, port);
	}
	if (timeout_ms)
		uv_timer_start(&s->timer, timeout_cb, timeout_ms, 0);
	/* Started from the loop: cb never runs inside this call. */
	s->start_wanted = 1;
	uv_idle_start(&s->idle, idle_cb);
	return s;
}

