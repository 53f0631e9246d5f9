/*
 * upstream: see upstream.h. Must never block the loop: the transport
 * layer (relay/net/stream.h) resolves on the thread pool and bounds the
 * connect and the TLS handshake with the connect timeout; the answer's
 * waits have our timer.
 *
 * Lifetime: the request holds its stream (the connect under way, or the
 * connection) and its timer. Whatever ends it (the answer's end, an
 * error, a cancel) goes through finish(), which closes both; the last close callback
 * calls on_done (unless cancelled) and frees the struct. So on_done never
 * runs inside a libuv callback that still uses the request.
 */
#include "relay/query/upstream.h"

#include <llhttp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "relay/base/util.h"
#include "relay/net/stream.h"

/* Headers of an answer kept for on_head: InfluxDB sends about ten. */
#define UP_MAX_HEADERS 64
#define UP_MAX_HEAD_BYTES (64 * 1024)
#define UP_MAX_INTERIM 16

/*
 * A connection to a backend: owned by one request while it runs, or idle
 * in its pool between requests. The stream's data points here; owner is
 * the request (NULL while idle). Freed by its close callback, which also
 * tells its owner and its pool. Pooled by host, port and TLS context (a
 * connection made with another context, or to another name, is never
 * lent).
 */
struct upstream_conn {
	struct net_stream *s;
	struct upstream *owner;
	struct upstream_pool *pool;   /* NULL: never pooled */
	struct upstream_conn *next;   /* in the pool's idle list */
	char *host;
	uint16_t port;
	struct net_tls_ctx *tls;      /* a reference, or NULL (plain) */
	char *server_name;            /* NULL: host */
	uint64_t idle_since;          /* uv_now when it went idle */
};

struct upstream_pool {
	uv_loop_t *loop;
	uv_timer_t sweep;
	struct upstream_conn *idle;   /* most recently used first */
	size_t nidle;
	size_t open;                  /* connections not yet freed (owned or idle) */
	int closing;
	int sweep_open;
	struct upstream_pool_stats stats;
};

struct upstream {
	uv_loop_t *loop;
	struct upstream_conn *conn;   /* NULL before the connect and once given back or closed */
	struct upstream_pool *pool;
	uv_timer_t timer;
	llhttp_t parser;
	struct upstream_callbacks cb;
	void *arg;

	char *host;
	uint16_t port;
	struct net_tls_ctx *tls;      /* a reference, or NULL */
	char *server_name;
	char *head;
	size_t head_len;
	const char *body;
	size_t body_len;
	uint64_t connect_timeout_ms, idle_timeout_ms;

	int handles;            /* open handles: the timer, and the connection's stream while owned */
	enum upstream_stage stage;
	unsigned reading : 1, paused : 1, finishing : 1, cancelled : 1, complete : 1, in_value : 1,
		head_given : 1, reused : 1, retried : 1, got_bytes : 1, sent : 1, leftover : 1;
	int interim;

	/* the answer's head, until on_head */
	struct rbuf hbuf;           /* name\0value\0 ... */
	size_t hoff[UP_MAX_HEADERS][2];
	size_t nh;
	struct rbuf hname, hval;

	int rc;
	char msg[1280];               /* a TLS verify failure's message is long (stream.h) */
};

static int retry_fresh(struct upstream *u);

static void maybe_free(struct upstream *u)
{
	if (u->handles)
		return;
	if (!u->cancelled && u->cb.on_done)
		u->cb.on_done(u, u->rc, u->stage, u->msg, u->arg);
	free(u->host);
	free(u->server_name);
	net_tls_ctx_unref(u->tls);
	free(u->head);
	rbuf_release(&u->hbuf);
	rbuf_release(&u->hname);
	rbuf_release(&u->hval);
	free(u);
}

static void handle_closed(uv_handle_t *h)
{
	struct upstream *u = h->data;
	u->handles--;
	maybe_free(u);
}

static void pool_maybe_free(struct upstream_pool *p)
{
	if (p->closing && !p->open && !p->sweep_open)
		free(p);
}

static void conn_free(struct upstream_conn *k)
{
	struct upstream *u = k->owner;
	struct upstream_pool *p = k->pool;
	free(k->host);
	free(k->server_name);
	net_tls_ctx_unref(k->tls);
	free(k);
	if (p) {
		p->open--;
		pool_maybe_free(p);
	}
	if (u) {
		u->handles--;
		maybe_free(u);
	}
}

static void conn_closed(struct net_stream *s)
{
	conn_free(net_stream_data(s));
}

static void conn_close(struct upstream_conn *k)
{
	net_stream_close(k->s, conn_closed);
}

static void pool_unlink(struct upstream_pool *p, struct upstream_conn *k)
{
	for (struct upstream_conn **pp = &p->idle; *pp; pp = &(*pp)->next)
		if (*pp == k) {
			*pp = k->next;
			p->nidle--;
			return;
		}
}

/* An idle connection is only ever read to see it end: the backend closed
 * it, or sent what no request asked for. Either way it is done. */
static void idle_done(struct upstream_conn *k)
{
	net_stream_read_stop(k->s);
	pool_unlink(k->pool, k);
	conn_close(k);
}

/* Whether u's connection may carry another request: the whole answer was
 * read and nothing after it, the backend keeps the connection open, the
 * request was wholly written, and the pool takes connections. */
static int reusable(struct upstream *u)
{
	return u->pool && !u->pool->closing && u->complete && !u->leftover && u->sent &&
	       llhttp_should_keep_alive(&u->parser);
}

/* Give u's connection to its pool (idle), or close it. */
static void conn_release(struct upstream *u, int keep)
{
	struct upstream_conn *k = u->conn;
	u->conn = NULL;
	if (u->reading)
		net_stream_read_stop(k->s);
	u->reading = 0;
	struct upstream_pool *p = k->pool;
	if (keep && p && p->nidle < UPSTREAM_POOL_MAX_IDLE && net_stream_read_start(k->s) == 0) {
		k->owner = NULL;
		k->idle_since = uv_now(p->loop);
		k->next = p->idle;
		p->idle = k;
		p->nidle++;
		u->handles--;
		return;
	}
	conn_close(k); /* u->handles drops in conn_closed */
}

/* End the request with rc (0: complete) and msg; on_done follows once the
 * handles are closed. The first call decides. */
__attribute__((format(printf, 3, 4)))
static void finish(struct upstream *u, int rc, const char *fmt, ...)
{
	if (u->finishing)
		return;
	u->finishing = 1;
	u->rc = rc;
	if (fmt) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(u->msg, sizeof(u->msg), fmt, ap);
		va_end(ap);
	}
	uv_timer_stop(&u->timer);
	uv_close((uv_handle_t *)&u->timer, handle_closed);
	if (u->conn)
		conn_release(u, rc == 0 && reusable(u));
	maybe_free(u);
}

static void timer_cb(uv_timer_t *t)
{
	struct upstream *u = t->data;
	/* (The connect's own timeout is the transport's.) */
	if (u->stage != UPSTREAM_CONNECTING)
		finish(u, UV_ETIMEDOUT, "no answer bytes for %llu ms (query.timeout)",
		       (unsigned long long)u->idle_timeout_ms);
}

static void arm_idle(struct upstream *u)
{
	if (u->finishing)
		return;
	if (u->idle_timeout_ms && !u->paused)
		uv_timer_start(&u->timer, timer_cb, u->idle_timeout_ms, 0);
	else
		uv_timer_stop(&u->timer);
}

/*---- the answer ----*/

static struct upstream *of(llhttp_t *p)
{
	return p->data;
}

static int on_message_begin(llhttp_t *p)
{
	struct upstream *u = of(p);
	rbuf_reset(&u->hbuf);
	rbuf_reset(&u->hname);
	rbuf_reset(&u->hval);
	u->nh = 0;
	u->in_value = 0;
	return HPE_OK;
}

static void header_done(struct upstream *u)
{
	if (u->nh < UP_MAX_HEADERS) {
		u->hoff[u->nh][0] = u->hbuf.len;
		rbuf_append(&u->hbuf, rbuf_cstr(&u->hname), u->hname.len + 1);
		u->hoff[u->nh][1] = u->hbuf.len;
		rbuf_append(&u->hbuf, rbuf_cstr(&u->hval), u->hval.len + 1);
		u->nh++;
	}
	rbuf_reset(&u->hname);
	rbuf_reset(&u->hval);
	u->in_value = 0;
}

static int head_bytes_ok(struct upstream *u, size_t more)
{
	return u->hbuf.len + u->hname.len + u->hval.len + more <= UP_MAX_HEAD_BYTES;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
	struct upstream *u = of(p);
	if (u->in_value)
		header_done(u);
	if (!head_bytes_ok(u, len))
		return HPE_USER;
	rbuf_append(&u->hname, at, len);
	return HPE_OK;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
	struct upstream *u = of(p);
	if (!head_bytes_ok(u, len))
		return HPE_USER;
	u->in_value = 1;
	rbuf_append(&u->hval, at, len);
	return HPE_OK;
}

static int on_headers_complete(llhttp_t *p)
{
	struct upstream *u = of(p);
	struct upstream_header h[UP_MAX_HEADERS];
	int status = llhttp_get_status_code(p);

	if (u->in_value || u->hname.len)
		header_done(u);
	if (status >= 100 && status < 200) {
		/* An interim answer (100 Continue): the final one follows. */
		if (status == 101 || ++u->interim > UP_MAX_INTERIM)
			return HPE_USER;
		return HPE_OK;
	}
	for (size_t i = 0; i < u->nh; i++) {
		h[i].name = u->hbuf.data + u->hoff[i][0];
		h[i].value = u->hbuf.data + u->hoff[i][1];
	}
	int64_t cl = -1;
	if ((p->flags & F_CONTENT_LENGTH) && !(p->flags & F_CHUNKED))
		cl = (int64_t)p->content_length;
	u->stage = UPSTREAM_ANSWERING;
	u->head_given = 1;
	u->cb.on_head(u, status, h, u->nh, cl, u->arg);
	rbuf_release(&u->hbuf);
	return u->cancelled ? HPE_USER : HPE_OK;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
	struct upstream *u = of(p);
	if (!u->head_given)
		return HPE_OK; /* an interim answer's body: there is none */
	u->cb.on_body(u, at, len, u->arg);
	return u->cancelled ? HPE_USER : HPE_OK;
}

static int on_message_complete(llhttp_t *p)
{
	struct upstream *u = of(p);
	if (!u->head_given)
		return HPE_OK; /* the end of an interim answer */
	u->complete = 1;
	return HPE_PAUSED; /* nothing after the answer is ours */
}

static const llhttp_settings_t settings = {
	.on_message_begin = on_message_begin,
	.on_header_field = on_header_field,
	.on_header_value = on_header_value,
	.on_headers_complete = on_headers_complete,
	.on_body = on_body,
	.on_message_complete = on_message_complete,
};

/* The end of the connection (nread UV_EOF, or the failure's libuv code
 * with the transport's message). */
static void up_end(struct upstream *u, int nread, const char *why)
{
	if (u->finishing)
		return;
	u->reading = 0;
	if (!u->got_bytes && retry_fresh(u))
		return;
	if (nread == UV_EOF) {
		/* An answer without a length ends here. */
		llhttp_errno_t e = llhttp_finish(&u->parser);
		if ((e == HPE_OK || e == HPE_PAUSED) && u->complete) {
			finish(u, 0, NULL);
			return;
		}
		finish(u, UV_EPROTO, "%s closed the connection before the whole answer",
		       u->head_given ? "backend" : "backend answered nothing and");
		return;
	}
	finish(u, nread, "reading the answer: %s", why);
}

static void up_read(struct upstream *u, const char *data, size_t len)
{
	if (u->finishing)
		return;
	arm_idle(u);
	u->got_bytes = 1;
	llhttp_errno_t err = llhttp_execute(&u->parser, data, len);
	if (u->cancelled || u->finishing)
		return;
	if (err == HPE_PAUSED && u->complete) {
		/* Bytes after the answer: nothing asked for them, so the
		 * connection's state is unknown and it is not reused. */
		u->leftover = llhttp_get_error_pos(&u->parser) != data + len;
		finish(u, 0, NULL);
		return;
	}
	if (err != HPE_OK)
		finish(u, UV_EPROTO, "malformed answer: %s", llhttp_get_error_reason(&u->parser));
}

/* The stream's callbacks, owned or idle (k->owner NULL). */
static void conn_read(struct net_stream *s, const char *data, size_t len)
{
	struct upstream_conn *k = net_stream_data(s);
	if (k->owner)
		up_read(k->owner, data, len);
	else
		idle_done(k);
}

static void conn_eof(struct net_stream *s)
{
	struct upstream_conn *k = net_stream_data(s);
	if (k->owner)
		up_end(k->owner, UV_EOF, "end of stream");
	else
		idle_done(k);
}

static void conn_error(struct net_stream *s, const struct net_error *e)
{
	struct upstream_conn *k = net_stream_data(s);
	if (k->owner)
		up_end(k->owner, e->uv_code ? e->uv_code : UV_EPROTO, e->msg);
	else
		idle_done(k);
}

static const struct net_stream_callbacks conn_cbs = {
	.on_read = conn_read,
	.on_eof = conn_eof,
	.on_error = conn_error,
};

/*---- the request ----*/

static void write_cb(struct net_stream *s, int status, void *arg)
{
	struct upstream *u = arg;
	/* One write per attempt: a stale connection's write may end
	 * (cancelled by its close) after the request went on to a new one. */
	int current = u->conn && s == u->conn->s;
	if (!current)
		return;
	if (status < 0 && !u->finishing && !retry_fresh(u))
		finish(u, status, "sending the request: %s", uv_strerror(status));
	if (status == 0 && !u->finishing) {
		u->sent = 1;
		u->body = NULL;
		if (u->cb.on_sent)
			u->cb.on_sent(u, u->arg);
	}
}

/* Write the request on u->conn (connected, fresh or reused) and read. */
static void send_request(struct upstream *u)
{
	u->stage = UPSTREAM_SENT;
	uv_buf_t b[2] = { uv_buf_init(u->head, (unsigned)u->head_len),
	                  uv_buf_init((char *)(uintptr_t)u->body, (unsigned)u->body_len) };
	int rc = net_stream_write(u->conn->s, b, u->body_len ? 2 : 1, write_cb, u);
	if (rc < 0) {
		if (!retry_fresh(u))
			finish(u, rc, "sending the request: %s", uv_strerror(rc));
		return;
	}
	if (!u->paused) {
		rc = net_stream_read_start(u->conn->s);
		if (rc < 0) {
			finish(u, rc, "reading the answer: %s", uv_strerror(rc));
			return;
		}
		u->reading = 1;
	}
	arm_idle(u);
}

static void connect_cb(struct net_stream *s, const struct net_error *err, void *arg)
{
	struct upstream *u = arg;
	struct upstream_conn *k = u->conn;
	if (u->finishing || !k || k->s != s)
		return; /* (a closed connect never calls back) */
	if (err) {
		/* The layer closes s itself and calls nothing more of ours:
		 * the connection is freed here. */
		u->conn = NULL;
		u->handles--;
		k->owner = NULL;
		conn_free(k);
		/* A certificate is the operator's to fix: the message says
		 * what (the door answers it with 502). */
		finish(u, err->uv_code ? err->uv_code : UV_EPROTO, "%s", err->msg);
		return;
	}
	uv_tcp_nodelay(net_stream_tcp(s), 1);
	net_stream_set_callbacks(s, &conn_cbs, k);
	send_request(u);
}

static void connect_stream(struct upstream *u)
{
	struct upstream_conn *k = xcalloc(1, sizeof(*k));
	k->owner = u;
	k->pool = u->pool;
	k->host = xstrdup(u->host);
	k->port = u->port;
	k->tls = u->tls ? net_tls_ctx_ref(u->tls) : NULL;
	k->server_name = u->server_name ? xstrdup(u->server_name) : NULL;
	if (k->pool) {
		k->pool->open++;
		k->pool->stats.connects++;
	}
	u->conn = k;
	u->handles++;
	k->s = net_connect(u->loop, u->host, u->port, u->connect_timeout_ms, u->tls, u->server_name, connect_cb, u);
	net_stream_set_callbacks(k->s, NULL, k);
}

static int same_str(const char *a, const char *b)
{
	return a == b || (a && b && strcmp(a, b) == 0);
}

/* Deferred start: callbacks never run inside upstream_start. */
/* An idle connection of the pool to u's backend, taken out of it; NULL
 * when there is none. */
static struct upstream_conn *pool_take(struct upstream *u)
{
	struct upstream_pool *p = u->pool;
	if (!p || p->closing)
		return NULL;
	for (struct upstream_conn *k = p->idle; k; k = k->next)
		if (k->port == u->port && strcmp(k->host, u->host) == 0 && k->tls == u->tls &&
		    same_str(k->server_name, u->server_name)) {
			pool_unlink(p, k);
			net_stream_read_stop(k->s);
			k->owner = u;
			p->stats.reuses++;
			return k;
		}
	return NULL;
}

static void connect_fresh(struct upstream *u);

/*
 * A reused connection failed before any byte of the answer: the backend
 * had closed it while it was idle (its own idle timeout), and saw nothing
 * of this request. Once per request, close it and send on a new
 * connection; 1 when that is under way. Only reads are passed through, so
 * sending one again is safe even if the backend did see it.
 */
static int retry_fresh(struct upstream *u)
{
	if (!u->reused || u->retried || u->got_bytes || u->finishing || u->cancelled)
		return 0;
	u->retried = 1;
	u->reused = 0;
	u->sent = 0;
	if (u->pool)
		u->pool->stats.stale++;
	conn_release(u, 0);
	llhttp_init(&u->parser, HTTP_RESPONSE, &settings);
	u->parser.data = u;
	u->stage = UPSTREAM_CONNECTING;
	connect_fresh(u);
	return 1;
}

static void start_cb(uv_timer_t *t)
{
	struct upstream *u = t->data;
	struct upstream_conn *k = pool_take(u);
	if (k) {
		u->conn = k;
		u->handles++;
		u->reused = 1;
		send_request(u);
		return;
	}
	connect_fresh(u);
}

static void connect_fresh(struct upstream *u)
{
	uv_timer_stop(&u->timer);
	connect_stream(u);
}

struct upstream *upstream_start(uv_loop_t *loop, const struct upstream_request *rq,
                                const struct upstream_callbacks *cb, void *arg)
{
	struct upstream *u = xcalloc(1, sizeof(*u));
	u->loop = loop;
	u->cb = *cb;
	u->arg = arg;
	u->host = xstrdup(rq->host);
	u->port = rq->port;
	u->tls = rq->tls ? net_tls_ctx_ref(rq->tls) : NULL;
	u->server_name = rq->server_name ? xstrdup(rq->server_name) : NULL;
	u->head = xmalloc(rq->head_len ? rq->head_len : 1);
	memcpy(u->head, rq->head, rq->head_len);
	u->head_len = rq->head_len;
	u->body = rq->body;
	u->body_len = rq->body_len;
	u->pool = rq->pool;
	u->connect_timeout_ms = rq->connect_timeout_ms ? rq->connect_timeout_ms : 1;
	u->idle_timeout_ms = rq->idle_timeout_ms;
	llhttp_init(&u->parser, HTTP_RESPONSE, &settings);
	u->parser.data = u;
	uv_timer_init(loop, &u->timer);
	u->timer.data = u;
	u->handles = 1;
	uv_timer_start(&u->timer, start_cb, 0, 0);
	return u;
}

void upstream_pause(struct upstream *u)
{
	if (u->paused || u->finishing)
		return;
	u->paused = 1;
	if (u->reading) {
		net_stream_read_stop(u->conn->s);
		u->reading = 0;
	}
	if (u->stage != UPSTREAM_CONNECTING)
		arm_idle(u);
}

void upstream_resume(struct upstream *u)
{
	if (!u->paused || u->finishing)
		return;
	u->paused = 0;
	if (u->stage == UPSTREAM_CONNECTING)
		return; /* connect_cb starts reading */
	if (!u->reading && u->conn) {
		int rc = net_stream_read_start(u->conn->s);
		if (rc < 0) {
			finish(u, rc, "reading the answer: %s", uv_strerror(rc));
			return;
		}
		u->reading = 1;
	}
	arm_idle(u);
}

void upstream_cancel(struct upstream *u)
{
	u->cancelled = 1;
	finish(u, UV_ECANCELED, "cancelled");
}

/*---- the pool ----*/

/* Close connections idle longer than UPSTREAM_POOL_IDLE_MS: a backend
 * closes its own idle ones sooner or later, and one that is gone is
 * better found here than by a request. */
static void sweep_cb(uv_timer_t *t)
{
	struct upstream_pool *p = t->data;
	uint64_t now = uv_now(p->loop);
	struct upstream_conn **pp = &p->idle;
	while (*pp) {
		struct upstream_conn *k = *pp;
		if (now - k->idle_since >= UPSTREAM_POOL_IDLE_MS) {
			*pp = k->next;
			p->nidle--;
			net_stream_read_stop(k->s);
			conn_close(k);
		} else {
			pp = &k->next;
		}
	}
}

struct upstream_pool *upstream_pool_new(uv_loop_t *loop)
{
	struct upstream_pool *p = xcalloc(1, sizeof(*p));
	p->loop = loop;
	uv_timer_init(loop, &p->sweep);
	p->sweep.data = p;
	p->sweep_open = 1;
	uv_timer_start(&p->sweep, sweep_cb, UPSTREAM_POOL_IDLE_MS / 2, UPSTREAM_POOL_IDLE_MS / 2);
	uv_unref((uv_handle_t *)&p->sweep); /* an idle pool does not keep the loop alive */
	return p;
}

static void sweep_closed(uv_handle_t *h)
{
	struct upstream_pool *p = h->data;
	p->sweep_open = 0;
	pool_maybe_free(p);
}

void upstream_pool_close(struct upstream_pool *p)
{
	if (!p || p->closing)
		return;
	p->closing = 1;
	while (p->idle) {
		struct upstream_conn *k = p->idle;
		p->idle = k->next;
		p->nidle--;
		net_stream_read_stop(k->s);
		conn_close(k);
	}
	uv_timer_stop(&p->sweep);
	uv_close((uv_handle_t *)&p->sweep, sweep_closed);
}

const struct upstream_pool_stats *upstream_pool_stats(const struct upstream_pool *p)
{
	return &p->stats;
}
