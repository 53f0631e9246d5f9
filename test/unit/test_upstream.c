/*
 * test_upstream: the query pass-through's streaming client against a
 * scripted backend on a loopback port, in one loop: framing (length,
 * chunks, the end of the connection), interim answers, an answer cut
 * short, a refused connect, the idle timeout, pausing (no timeout while
 * paused), a cancel (the backend sees the connection close, no callback
 * follows), and the request as it reaches the backend. Over TLS: the
 * pool lends a connection only to a request with the same context, and a
 * certificate that fails verification ends the request before anything
 * is sent, saying why.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "relay/query/upstream.h"
#include "relay/base/util.h"
#include "test/unit/tls_server.h"

/* What the scripted backend sends once it has read a request head (and
 * a body of body_len bytes): parts, one write each, then it closes or
 * keeps the connection open. */
struct script {
	const char *parts[8];
	int close_after;
	size_t body_len;
};

struct backend {
	uv_tcp_t listener;
	uv_tcp_t conn;
	int conn_open, listener_open;
	const struct script *sc;
	struct rbuf got;       /* the request as received */
	int sent;
	int saw_eof;           /* the client closed its side */
};

/* What the client's callbacks saw. */
struct seen {
	int heads, dones, sent;
	int status;
	int64_t cl;
	char hdr[256];         /* "name=value;" ... */
	struct rbuf body;
	int rc;
	enum upstream_stage stage;
	char msg[200];
	struct upstream *u;
	int pause_in_head;     /* pause in on_head, resume from a timer */
	int cancel_in_body;
	uv_timer_t resume;
	int resumed;
	struct backend *b;
};

static void closed_noop(uv_handle_t *h)
{
	(void)h;
}

static void b_alloc(uv_handle_t *h, size_t s, uv_buf_t *buf)
{
	(void)h;
	static char mem[65536];
	(void)s;
	buf->base = mem;
	buf->len = sizeof(mem);
}

static void b_written(uv_write_t *w, int status)
{
	(void)status;
	free(w);
}

static void b_send_script(struct backend *b)
{
	for (size_t i = 0; i < 8 && b->sc->parts[i]; i++) {
		uv_write_t *w = malloc(sizeof(*w));
		uv_buf_t buf = uv_buf_init((char *)(uintptr_t)b->sc->parts[i], (unsigned)strlen(b->sc->parts[i]));
		assert_int_equal(uv_write(w, (uv_stream_t *)&b->conn, &buf, 1, b_written), 0);
	}
	if (b->sc->close_after) {
		uv_close((uv_handle_t *)&b->conn, closed_noop);
		b->conn_open = 0;
	}
}

static void b_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
	struct backend *b = st->data;
	if (n < 0) {
		b->saw_eof = 1;
		if (b->conn_open) {
			uv_close((uv_handle_t *)&b->conn, closed_noop);
			b->conn_open = 0;
		}
		return;
	}
	rbuf_append(&b->got, buf->base, (size_t)n);
	const char *end = strstr(rbuf_cstr(&b->got), "\r\n\r\n");
	if (!b->sent && end && b->got.len >= (size_t)(end + 4 - b->got.data) + b->sc->body_len) {
		b->sent = 1;
		b_send_script(b);
	}
}

static void b_accept(uv_stream_t *ls, int status)
{
	struct backend *b = ls->data;
	assert_int_equal(status, 0);
	uv_tcp_init(ls->loop, &b->conn);
	b->conn.data = b;
	b->conn_open = 1;
	assert_int_equal(uv_accept(ls, (uv_stream_t *)&b->conn), 0);
	uv_read_start((uv_stream_t *)&b->conn, b_alloc, b_read);
}

static int backend_start(uv_loop_t *loop, struct backend *b, const struct script *sc)
{
	struct sockaddr_in a;
	struct sockaddr_storage bound;
	int len = sizeof(bound);
	memset(b, 0, sizeof(*b));
	b->sc = sc;
	uv_tcp_init(loop, &b->listener);
	b->listener.data = b;
	uv_ip4_addr("127.0.0.1", 0, &a);
	assert_int_equal(uv_tcp_bind(&b->listener, (struct sockaddr *)&a, 0), 0);
	assert_int_equal(uv_listen((uv_stream_t *)&b->listener, 4, b_accept), 0);
	b->listener_open = 1;
	uv_tcp_getsockname(&b->listener, (struct sockaddr *)&bound, &len);
	return ntohs(((struct sockaddr_in *)&bound)->sin_port);
}

static void backend_stop(struct backend *b)
{
	if (b->listener_open)
		uv_close((uv_handle_t *)&b->listener, closed_noop);
	b->listener_open = 0;
	if (b->conn_open)
		uv_close((uv_handle_t *)&b->conn, closed_noop);
	b->conn_open = 0;
}

/*---- the client's callbacks ----*/

static void resume_cb(uv_timer_t *t)
{
	struct seen *s = t->data;
	s->resumed = 1;
	if (s->u)
		upstream_resume(s->u);
}

static void on_head(struct upstream *u, int status, const struct upstream_header *h, size_t nh, int64_t cl,
                    void *arg)
{
	struct seen *s = arg;
	s->heads++;
	s->status = status;
	s->cl = cl;
	for (size_t i = 0; i < nh; i++) {
		size_t at = strlen(s->hdr);
		snprintf(s->hdr + at, sizeof(s->hdr) - at, "%s=%s;", h[i].name, h[i].value);
	}
	if (s->pause_in_head) {
		upstream_pause(u);
		uv_timer_start(&s->resume, resume_cb, 300, 0);
	}
}

static void on_body(struct upstream *u, const char *p, size_t n, void *arg)
{
	struct seen *s = arg;
	rbuf_append(&s->body, p, n);
	if (s->cancel_in_body) {
		upstream_cancel(u);
		s->u = NULL;
		/* nothing else will tell the loop to stop: the backend's EOF does */
	}
}

static void on_done(struct upstream *u, int rc, enum upstream_stage stage, const char *msg, void *arg)
{
	struct seen *s = arg;
	(void)u;
	s->dones++;
	s->rc = rc;
	s->stage = stage;
	snprintf(s->msg, sizeof(s->msg), "%s", msg);
	s->u = NULL;
	backend_stop(s->b);
}

static void on_sent(struct upstream *u, void *arg)
{
	struct seen *s = arg;
	(void)u;
	s->sent++;
}

static const struct upstream_callbacks cbs = { on_head, on_body, on_done, on_sent };

static const char GET[] = "GET /query?q=x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n";

static void run(const struct script *sc, struct seen *s, uint64_t idle_ms, int closed_port);

/* The body as the callbacks got it (run() releases theirs). */
static char body_copy[1024];

static void on_body_copy(struct upstream *u, const char *p, size_t n, void *arg)
{
	on_body(u, p, n, arg);
	size_t at = strlen(body_copy);
	if (at + n < sizeof(body_copy)) {
		memcpy(body_copy + at, p, n);
		body_copy[at + n] = '\0';
	}
}


static void test_content_length_and_interim(void **state)
{
	(void)state;
	static const struct script sc = { { "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Type: applica",
	                                    "tion/json\r\nX-Influxdb-Version: 1.6.7\r\nContent-Length: 11\r\n\r\nhello",
	                                    " world" }, 0, 0 };
	struct seen s;
	memset(&s, 0, sizeof(s));
	run(&sc, &s, 0, 0);
	assert_string_equal(body_copy, "hello world");
	assert_int_equal(s.heads, 1);
	assert_int_equal(s.dones, 1);
	assert_int_equal(s.rc, 0);
	assert_int_equal(s.status, 200);
	assert_int_equal(s.cl, 11);
	assert_string_equal(s.hdr, "Content-Type=application/json;X-Influxdb-Version=1.6.7;Content-Length=11;");
}

/* Run one GET against sc until the loop has nothing left; with
 * closed_port, against a port nobody listens on any more. */
static void run(const struct script *sc, struct seen *s, uint64_t idle_ms, int closed_port)
{
	body_copy[0] = '\0';
	struct upstream_callbacks c = { on_head, on_body_copy, on_done, NULL };
	uv_loop_t loop;
	struct backend b;
	assert_int_equal(uv_loop_init(&loop), 0);
	int port = backend_start(&loop, &b, sc);
	if (closed_port) {
		backend_stop(&b);
		uv_run(&loop, UV_RUN_NOWAIT);
	}
	s->b = &b;
	uv_timer_init(&loop, &s->resume);
	s->resume.data = s;
	struct upstream_request rq = { .host = "127.0.0.1", .port = (uint16_t)port, .head = GET,
	                               .head_len = strlen(GET), .connect_timeout_ms = 2000,
	                               .idle_timeout_ms = idle_ms };
	s->u = upstream_start(&loop, &rq, &c, s);
	assert_int_equal(s->dones, 0); /* never from inside upstream_start */
	uv_run(&loop, UV_RUN_DEFAULT);
	uv_close((uv_handle_t *)&s->resume, closed_noop);
	if (b.conn_open)
		backend_stop(&b);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&loop), 0);
	rbuf_release(&s->body);
	rbuf_release(&b.got);
	s->b = NULL;
}

static void test_chunked_is_dechunked(void **state)
{
	(void)state;
	static const struct script sc = { { "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\n{\"a\":",
	                                    "\r\n", "3\r\n1}\n\r\n0\r\nTrailer: x\r\n\r\n" }, 0, 0 };
	struct seen s;
	memset(&s, 0, sizeof(s));
	run(&sc, &s, 0, 0);
	assert_int_equal(s.rc, 0);
	assert_int_equal(s.cl, -1);
	assert_string_equal(body_copy, "{\"a\":1}\n");
}

static void test_body_to_the_end_of_the_connection(void **state)
{
	(void)state;
	static const struct script sc = { { "HTTP/1.1 200 OK\r\n\r\nsome", " bytes" }, 1, 0 };
	struct seen s;
	memset(&s, 0, sizeof(s));
	run(&sc, &s, 0, 0);
	assert_int_equal(s.rc, 0);
	assert_int_equal(s.cl, -1);
	assert_string_equal(body_copy, "some bytes");
}

static void test_cut_answer(void **state)
{
	(void)state;
	static const struct script sc = { { "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc" }, 1, 0 };
	struct seen s;
	memset(&s, 0, sizeof(s));
	run(&sc, &s, 0, 0);
	assert_int_equal(s.rc, UV_EPROTO);
	assert_int_equal(s.stage, UPSTREAM_ANSWERING);
	assert_string_equal(body_copy, "abc");
	/* nothing at all */
	static const struct script none = { { NULL }, 1, 0 };
	memset(&s, 0, sizeof(s));
	run(&none, &s, 0, 0);
	assert_int_equal(s.rc, UV_EPROTO);
	assert_int_equal(s.stage, UPSTREAM_SENT);
	assert_int_equal(s.heads, 0);
	/* not HTTP */
	static const struct script junk = { { "SSH-2.0-OpenSSH\r\n" }, 0, 0 };
	memset(&s, 0, sizeof(s));
	run(&junk, &s, 0, 0);
	assert_int_equal(s.rc, UV_EPROTO);
	assert_non_null(strstr(s.msg, "malformed answer"));
}

static void test_connect_refused(void **state)
{
	(void)state;
	static const struct script sc = { { NULL }, 0, 0 };
	struct seen s;
	memset(&s, 0, sizeof(s));
	run(&sc, &s, 0, 1);
	assert_int_equal(s.dones, 1);
	assert_int_equal(s.rc, UV_ECONNREFUSED);
	assert_int_equal(s.stage, UPSTREAM_CONNECTING);
}

static void test_idle_timeout(void **state)
{
	(void)state;
	static const struct script sc = { { "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab" }, 0, 0 };
	struct seen s;
	memset(&s, 0, sizeof(s));
	uint64_t t0 = now_mono_ns();
	run(&sc, &s, 100, 0);
	uint64_t ms = (now_mono_ns() - t0) / 1000000;
	assert_int_equal(s.rc, UV_ETIMEDOUT);
	assert_int_equal(s.stage, UPSTREAM_ANSWERING);
	assert_true(ms >= 90 && ms < 2000);
}

static void test_pause_holds_the_timer(void **state)
{
	(void)state;
	/* idle timeout 100 ms, paused 300 ms in on_head, then nothing more
	 * comes: the timeout fires 100 ms after the resume, not while paused
	 * (the wait was the caller's). What was read with the head is still
	 * handed on. */
	static const struct script sc = { { "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nabcd" }, 0, 0 };
	struct seen s;
	memset(&s, 0, sizeof(s));
	s.pause_in_head = 1;
	uint64_t t0 = now_mono_ns();
	run(&sc, &s, 100, 0);
	uint64_t ms = (now_mono_ns() - t0) / 1000000;
	assert_int_equal(s.rc, UV_ETIMEDOUT);
	assert_int_equal(s.resumed, 1);
	assert_true(ms >= 380);
	assert_string_equal(body_copy, "abcd");
}

static void test_cancel_closes_and_calls_nothing(void **state)
{
	(void)state;
	static const struct script sc = { { "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n" },
	                                  0, 0 };
	struct seen s;
	memset(&s, 0, sizeof(s));
	s.cancel_in_body = 1;
	body_copy[0] = '\0';
	struct upstream_callbacks c = { on_head, on_body_copy, on_done, NULL };
	uv_loop_t loop;
	struct backend b;
	assert_int_equal(uv_loop_init(&loop), 0);
	int port = backend_start(&loop, &b, &sc);
	s.b = &b;
	uv_timer_init(&loop, &s.resume);
	struct upstream_request rq = { .host = "127.0.0.1", .port = (uint16_t)port, .head = GET,
	                               .head_len = strlen(GET), .connect_timeout_ms = 2000 };
	s.u = upstream_start(&loop, &rq, &c, &s);
	/* the backend's EOF closes its connection; then the listener */
	while (!b.saw_eof)
		uv_run(&loop, UV_RUN_ONCE);
	backend_stop(&b);
	uv_close((uv_handle_t *)&s.resume, closed_noop);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&loop), 0);
	assert_int_equal(s.dones, 0);
	assert_string_equal(body_copy, "abc");
	rbuf_release(&s.body);
	rbuf_release(&b.got);
}

static void test_request_as_sent(void **state)
{
	(void)state;
	static const struct script sc = { { "HTTP/1.1 204 No Content\r\n\r\n" }, 0, 4 };
	static const char post[] = "POST /query HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\n";
	uv_loop_t loop;
	struct backend b;
	struct seen s;
	memset(&s, 0, sizeof(s));
	assert_int_equal(uv_loop_init(&loop), 0);
	int port = backend_start(&loop, &b, &sc);
	s.b = &b;
	uv_timer_init(&loop, &s.resume);
	struct upstream_request rq = { .host = "localhost", .port = (uint16_t)port, .head = post,
	                               .head_len = strlen(post), .body = "q=ab", .body_len = 4,
	                               .connect_timeout_ms = 2000 };
	s.u = upstream_start(&loop, &rq, &cbs, &s);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(s.rc, 0);
	assert_int_equal(s.sent, 1);
	assert_int_equal(s.status, 204);
	assert_string_equal(rbuf_cstr(&b.got), "POST /query HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nq=ab");
	uv_close((uv_handle_t *)&s.resume, closed_noop);
	if (b.conn_open)
		backend_stop(&b);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&loop), 0);
	rbuf_release(&s.body);
	rbuf_release(&b.got);
}


/*---- the pool: a backend that answers every request on a connection ----*/

struct kconn {
	uv_tcp_t tcp;
	struct kbackend *kb;
	struct rbuf got;
};

struct kbackend {
	uv_tcp_t listener;
	int accepts, requests;
	int close_after_answer; /* close each connection after its answer, without saying so */
};

static void k_closed(uv_handle_t *h)
{
	struct kconn *k = h->data;
	rbuf_release(&k->got);
	free(k);
}

static void k_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
	struct kconn *k = st->data;
	if (n < 0) {
		uv_close((uv_handle_t *)&k->tcp, k_closed);
		return;
	}
	rbuf_append(&k->got, buf->base, (size_t)n);
	const char *end;
	while ((end = strstr(rbuf_cstr(&k->got), "\r\n\r\n")) != NULL) {
		size_t used = (size_t)(end + 4 - k->got.data);
		memmove(k->got.data, k->got.data + used, k->got.len - used);
		k->got.len -= used;
		k->kb->requests++;
		static char answer[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
		uv_write_t *w = malloc(sizeof(*w));
		uv_buf_t b = uv_buf_init(answer, sizeof(answer) - 1);
		assert_int_equal(uv_write(w, st, &b, 1, b_written), 0);
		if (k->kb->close_after_answer) {
			uv_read_stop(st);
			uv_close((uv_handle_t *)&k->tcp, k_closed);
			return;
		}
	}
}

static void k_accept(uv_stream_t *ls, int status)
{
	struct kbackend *kb = ls->data;
	assert_int_equal(status, 0);
	struct kconn *k = calloc(1, sizeof(*k));
	k->kb = kb;
	uv_tcp_init(ls->loop, &k->tcp);
	k->tcp.data = k;
	assert_int_equal(uv_accept(ls, (uv_stream_t *)&k->tcp), 0);
	kb->accepts++;
	uv_read_start((uv_stream_t *)&k->tcp, b_alloc, k_read);
}

/* Requests one after another: each starts from the previous one's on_done. */
struct chain {
	uv_loop_t *loop;
	struct upstream_pool *pool;
	struct kbackend *kb;
	uint16_t port;
	int left, ok;
	struct upstream_pool_stats st; /* the pool's, just before it closes */
};

static const char KGET[] = "GET /query?q=x HTTP/1.1\r\nHost: h\r\n\r\n";
static void chain_next(struct chain *ch);

static void k_head(struct upstream *u, int status, const struct upstream_header *h, size_t nh, int64_t cl, void *arg)
{
	(void)u, (void)h, (void)nh, (void)cl, (void)arg;
	assert_int_equal(status, 200);
}

static void k_body(struct upstream *u, const char *p, size_t n, void *arg)
{
	(void)u, (void)p, (void)n, (void)arg;
}

static void k_done(struct upstream *u, int rc, enum upstream_stage stage, const char *msg, void *arg)
{
	struct chain *ch = arg;
	(void)u, (void)stage;
	if (rc != 0)
		fail_msg("request failed: %s", msg);
	ch->ok++;
	chain_next(ch);
}

static void chain_next(struct chain *ch)
{
	static const struct upstream_callbacks kcbs = { k_head, k_body, k_done, NULL };
	if (!ch->left) {
		ch->st = *upstream_pool_stats(ch->pool);
		upstream_pool_close(ch->pool); /* its idle connection closes; the loop ends */
		uv_close((uv_handle_t *)&ch->kb->listener, closed_noop);
		return;
	}
	ch->left--;
	struct upstream_request rq = { .host = "127.0.0.1", .port = ch->port, .head = KGET,
	                               .head_len = strlen(KGET), .connect_timeout_ms = 2000, .pool = ch->pool };
	upstream_start(ch->loop, &rq, &kcbs, ch);
}

static void run_chain(struct kbackend *kb, int n, struct upstream_pool_stats *st)
{
	uv_loop_t loop;
	struct sockaddr_in a;
	struct sockaddr_storage bound;
	int len = sizeof(bound);
	assert_int_equal(uv_loop_init(&loop), 0);
	uv_tcp_init(&loop, &kb->listener);
	kb->listener.data = kb;
	uv_ip4_addr("127.0.0.1", 0, &a);
	assert_int_equal(uv_tcp_bind(&kb->listener, (struct sockaddr *)&a, 0), 0);
	assert_int_equal(uv_listen((uv_stream_t *)&kb->listener, 8, k_accept), 0);
	uv_tcp_getsockname(&kb->listener, (struct sockaddr *)&bound, &len);
	struct chain ch;
	memset(&ch, 0, sizeof(ch));
	ch.loop = &loop;
	ch.pool = upstream_pool_new(&loop);
	ch.kb = kb;
	ch.port = ntohs(((struct sockaddr_in *)&bound)->sin_port);
	ch.left = n;
	chain_next(&ch);
	/* the stats are read before the last request closes the pool */
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(ch.ok, n);
	*st = ch.st;
	assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_pool_reuses_a_connection(void **state)
{
	(void)state;
	struct kbackend kb;
	memset(&kb, 0, sizeof(kb));
	struct upstream_pool_stats st;
	run_chain(&kb, 5, &st);
	assert_int_equal(kb.requests, 5);
	assert_int_equal(kb.accepts, 1);
	assert_int_equal(st.connects, 1);
	assert_int_equal(st.reuses, 4);
	assert_int_equal(st.stale, 0);
}

static void test_pool_connection_closed_by_the_backend(void **state)
{
	(void)state;
	struct kbackend kb;
	memset(&kb, 0, sizeof(kb));
	kb.close_after_answer = 1;
	/* Each pooled connection is closed by the backend: found closed while
	 * idle, or when the next request goes out on it (sent again on a new
	 * one). Every request succeeds, each on a connection of its own. */
	struct upstream_pool_stats st;
	run_chain(&kb, 5, &st);
	assert_int_equal(kb.requests, 5);
	assert_int_equal(kb.accepts, 5);
	assert_int_equal(st.connects, 5);
	assert_int_equal(st.stale, st.reuses); /* every reuse met a closed connection */
	print_message("closed by the backend: %llu of 5 requests went out on a pooled connection first\n",
	              (unsigned long long)st.reuses);
}

/*---- over TLS ----*/

struct tseen {
	int done, status, rc;
	enum upstream_stage stage;
	char msg[1280];
};

static void t_head(struct upstream *u, int status, const struct upstream_header *h, size_t nh, int64_t cl,
                   void *arg)
{
	(void)u, (void)h, (void)nh, (void)cl;
	((struct tseen *)arg)->status = status;
}

static void t_body(struct upstream *u, const char *p, size_t n, void *arg)
{
	(void)u, (void)p, (void)n, (void)arg;
}

static void t_done(struct upstream *u, int rc, enum upstream_stage stage, const char *msg, void *arg)
{
	struct tseen *s = arg;
	(void)u;
	s->done = 1;
	s->rc = rc;
	s->stage = stage;
	snprintf(s->msg, sizeof(s->msg), "%s", msg ? msg : "");
}

static struct tseen tls_get(uv_loop_t *loop, int port, struct upstream_pool *p, struct net_tls_ctx *ctx)
{
	static const struct upstream_callbacks tcbs = { t_head, t_body, t_done, NULL };
	struct tseen s;
	memset(&s, 0, sizeof(s));
	struct upstream_request rq = { .host = "127.0.0.1", .port = (uint16_t)port, .tls = ctx,
	                               .server_name = "localhost", .head = KGET, .head_len = strlen(KGET),
	                               .connect_timeout_ms = 5000, .idle_timeout_ms = 5000, .pool = p };
	upstream_start(loop, &rq, &tcbs, &s);
	while (!s.done)
		uv_run(loop, UV_RUN_ONCE);
	return s;
}

static void test_tls_pool_and_verify(void **state)
{
	(void)state;
	uv_loop_t loop;
	struct tserver srv;
	assert_int_equal(uv_loop_init(&loop), 0);
	tserver_start(&srv, &loop);
	struct upstream_pool *pool = upstream_pool_new(&loop);
	struct net_tls_ctx *good = tls_client_ctx(cpath("ca.pem")), *bad = tls_client_ctx(cpath("other.pem"));

	struct tseen s = tls_get(&loop, srv.port, pool, good);
	assert_int_equal(s.rc, 0);
	assert_int_equal(s.status, 204);
	s = tls_get(&loop, srv.port, pool, good);
	assert_int_equal(s.rc, 0);
	assert_int_equal(upstream_pool_stats(pool)->connects, 1);
	assert_int_equal(upstream_pool_stats(pool)->reuses, 1);

	/* Another context: not lent the idle connection; its own fails
	 * verification before anything is sent. */
	s = tls_get(&loop, srv.port, pool, bad);
	assert_int_not_equal(s.rc, 0);
	assert_int_equal(s.stage, UPSTREAM_CONNECTING);
	assert_int_equal(upstream_pool_stats(pool)->connects, 2);
	if (!strstr(s.msg, "certificate verify failed") || !strstr(s.msg, "expected name 'localhost'") ||
	    !strstr(s.msg, "tls_ca"))
		fail_msg("unexpected message: %s", s.msg);
	assert_int_equal(srv.answered, 2);

	net_tls_ctx_unref(good); /* the pooled connection keeps its own */
	net_tls_ctx_unref(bad);
	upstream_pool_close(pool);
	tserver_stop(&srv);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_content_length_and_interim),
		cmocka_unit_test(test_chunked_is_dechunked),
		cmocka_unit_test(test_body_to_the_end_of_the_connection),
		cmocka_unit_test(test_cut_answer),
		cmocka_unit_test(test_connect_refused),
		cmocka_unit_test(test_idle_timeout),
		cmocka_unit_test(test_pause_holds_the_timer),
		cmocka_unit_test(test_cancel_closes_and_calls_nothing),
		cmocka_unit_test(test_request_as_sent),
		cmocka_unit_test(test_pool_reuses_a_connection),
		cmocka_unit_test(test_pool_connection_closed_by_the_backend),
		cmocka_unit_test(test_tls_pool_and_verify),
	};
	return cmocka_run_group_tests(tests, setup_certs, teardown_certs);
}
