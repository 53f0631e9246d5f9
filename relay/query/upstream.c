/*
 * upstream: see upstream.h. Must never block the loop: names are resolved
 * with uv_getaddrinfo (on the thread pool), and every wait has a timer.
 *
 * Lifetime: the request holds its TCP handle, its timer and a pending
 * resolve. Whatever ends it (the answer's end, an error, a cancel) goes
 * through finish(), which closes both handles; the last close callback
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

#define UP_READ_SIZE 65536
/* Headers of an answer kept for on_head: InfluxDB sends about ten. */
#define UP_MAX_HEADERS 64
#define UP_MAX_HEAD_BYTES (64 * 1024)
#define UP_MAX_INTERIM 16

/*
 * A connection to a backend: owned by one request while it runs, or idle
 * in its pool between requests. tcp.data points here; owner is the request
 * (NULL while idle). Freed by its close callback, which also tells its
 * owner and its pool.
 */
struct upstream_conn {
	uv_tcp_t tcp;
	struct upstream *owner;
	struct upstream_pool *pool;   /* NULL: never pooled */
	struct upstream_conn *next;   /* in the pool's idle list */
	char *host;
	uint16_t port;
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
	uv_connect_t connect_req;
	uv_getaddrinfo_t gai;
	llhttp_t parser;
	struct upstream_callbacks cb;
	void *arg;

	char *host;
	uint16_t port;
	char *head;
	size_t head_len;
	const char *body;
	size_t body_len;
	uint64_t connect_timeout_ms, idle_timeout_ms;

	int handles;            /* open libuv handles, the connection's counted while owned */
	int gai_pending;
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
	char msg[200];
	char *rbuf;
};

static void up_read_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf);
static int retry_fresh(struct upstream *u);

static void maybe_free(struct upstream *u)
{
	if (u->handles || u->gai_pending)
		return;
	if (!u->cancelled && u->cb.on_done)
		u->cb.on_done(u, u->rc, u->stage, u->msg, u->arg);
	free(u->host);
	free(u->head);
	free(u->rbuf);
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

static void conn_closed(uv_handle_t *h)
{
	struct upstream_conn *k = h->data;
	struct upstream *u = k->owner;
	struct upstream_pool *p = k->pool;
	free(k->host);
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

static void conn_close(struct upstream_conn *k)
{
	uv_close((uv_handle_t *)&k->tcp, conn_closed);
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

static void idle_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	static char sink[64];
	(void)h;
	(void)suggested;
	buf->base = sink;
	buf->len = sizeof(sink);
}

/* An idle connection is only ever read to see it end: the backend closed
 * it, or sent what no request asked for. Either way it is done. */
static void idle_read_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
	struct upstream_conn *k = st->data;
	(void)buf;
	if (nread == 0)
		return;
	uv_read_stop(st);
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
		uv_read_stop((uv_stream_t *)&k->tcp);
	u->reading = 0;
	struct upstream_pool *p = k->pool;
	if (keep && p && p->nidle < UPSTREAM_POOL_MAX_IDLE &&
	    uv_read_start((uv_stream_t *)&k->tcp, idle_alloc_cb, idle_read_cb) == 0) {
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
	if (u->gai_pending)
		uv_cancel((uv_req_t *)&u->gai); /* its callback still runs, with UV_ECANCELED */
	uv_timer_stop(&u->timer);
	uv_close((uv_handle_t *)&u->timer, handle_closed);
	if (u->conn)
		conn_release(u, rc == 0 && reusable(u));
	maybe_free(u);
}

static void timer_cb(uv_timer_t *t)
{
	struct upstream *u = t->data;
	if (u->stage == UPSTREAM_CONNECTING)
		finish(u, UV_ETIMEDOUT, "connect timeout after %llu ms", (unsigned long long)u->connect_timeout_ms);
	else
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

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct upstream *u = ((struct upstream_conn *)h->data)->owner;
	(void)suggested;
	if (!u->rbuf)
		u->rbuf = xmalloc(UP_READ_SIZE);
	buf->base = u->rbuf;
	buf->len = UP_READ_SIZE;
}

static void up_read_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
	struct upstream *u = ((struct upstream_conn *)st->data)->owner;
	if (nread == 0 || u->finishing)
		return;
	if (nread < 0) {
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
		finish(u, (int)nread, "reading the answer: %s", uv_strerror((int)nread));
		return;
	}
	arm_idle(u);
	u->got_bytes = 1;
	llhttp_errno_t err = llhttp_execute(&u->parser, buf->base, (size_t)nread);
	if (u->cancelled || u->finishing)
		return;
	if (err == HPE_PAUSED && u->complete) {
		/* Bytes after the answer: nothing asked for them, so the
		 * connection's state is unknown and it is not reused. */
		u->leftover = llhttp_get_error_pos(&u->parser) != buf->base + nread;
		finish(u, 0, NULL);
		return;
	}
	if (err != HPE_OK)
		finish(u, UV_EPROTO, "malformed answer: %s", llhttp_get_error_reason(&u->parser));
}

/*---- the request ----*/

static void write_cb(uv_write_t *req, int status)
{
	struct upstream *u = req->data;
	/* One write request per attempt: a stale connection's write may end
	 * (cancelled by its close) after the request went on to a new one. */
	int current = u->conn && req->handle == (uv_stream_t *)&u->conn->tcp;
	free(req);
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
	uv_write_t *wr = xmalloc(sizeof(*wr));
	wr->data = u;
	int rc = uv_write(wr, (uv_stream_t *)&u->conn->tcp, b, u->body_len ? 2 : 1, write_cb);
	if (rc < 0) {
		free(wr);
		if (!retry_fresh(u))
			finish(u, rc, "sending the request: %s", uv_strerror(rc));
		return;
	}
	if (!u->paused) {
		rc = uv_read_start((uv_stream_t *)&u->conn->tcp, alloc_cb, up_read_cb);
		if (rc < 0) {
			finish(u, rc, "reading the answer: %s", uv_strerror(rc));
			return;
		}
		u->reading = 1;
	}
	arm_idle(u);
}

static void connect_cb(uv_connect_t *req, int status)
{
	struct upstream *u = req->data;
	if (u->finishing)
		return;
	if (status < 0) {
		finish(u, status, "connect to %s:%u: %s", u->host, u->port, uv_strerror(status));
		return;
	}
	uv_tcp_nodelay(&u->conn->tcp, 1);
	send_request(u);
}

static void connect_addr(struct upstream *u, const struct sockaddr *sa)
{
	struct upstream_conn *k = xcalloc(1, sizeof(*k));
	uv_tcp_init(u->loop, &k->tcp);
	k->tcp.data = k;
	k->owner = u;
	k->pool = u->pool;
	k->host = xstrdup(u->host);
	k->port = u->port;
	if (k->pool) {
		k->pool->open++;
		k->pool->stats.connects++;
	}
	u->conn = k;
	u->handles++;
	u->connect_req.data = u;
	int rc = uv_tcp_connect(&u->connect_req, &k->tcp, sa, connect_cb);
	if (rc < 0)
		finish(u, rc, "connect to %s:%u: %s", u->host, u->port, uv_strerror(rc));
}

static void gai_cb(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
	struct upstream *u = req->data;
	u->gai_pending = 0;
	if (u->finishing) {
		uv_freeaddrinfo(res);
		maybe_free(u);
		return;
	}
	if (status < 0 || !res)
		finish(u, status < 0 ? status : UV_EAI_NONAME, "cannot resolve '%s': %s", u->host,
		       uv_strerror(status < 0 ? status : UV_EAI_NONAME));
	else
		connect_addr(u, res->ai_addr);
	uv_freeaddrinfo(res);
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
		if (k->port == u->port && strcmp(k->host, u->host) == 0) {
			pool_unlink(p, k);
			uv_read_stop((uv_stream_t *)&k->tcp);
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
	struct sockaddr_storage ss;

	uv_timer_start(&u->timer, timer_cb, u->connect_timeout_ms, 0);
	if (uv_ip4_addr(u->host, u->port, (struct sockaddr_in *)&ss) == 0 ||
	    uv_ip6_addr(u->host, u->port, (struct sockaddr_in6 *)&ss) == 0) {
		connect_addr(u, (struct sockaddr *)&ss);
		return;
	}
	char port[8];
	struct addrinfo hints;
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	snprintf(port, sizeof(port), "%u", u->port);
	u->gai.data = u;
	u->gai_pending = 1;
	int rc = uv_getaddrinfo(u->loop, &u->gai, gai_cb, u->host, port, &hints);
	if (rc < 0) {
		u->gai_pending = 0;
		finish(u, rc, "cannot resolve '%s': %s", u->host, uv_strerror(rc));
	}
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
		uv_read_stop((uv_stream_t *)&u->conn->tcp);
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
		int rc = uv_read_start((uv_stream_t *)&u->conn->tcp, alloc_cb, up_read_cb);
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
			uv_read_stop((uv_stream_t *)&k->tcp);
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
		uv_read_stop((uv_stream_t *)&k->tcp);
		conn_close(k);
	}
	uv_timer_stop(&p->sweep);
	uv_close((uv_handle_t *)&p->sweep, sweep_closed);
}

const struct upstream_pool_stats *upstream_pool_stats(const struct upstream_pool *p)
{
	return &p->stats;
}
