/*
 * test_replay_worker: one replay worker on a private libuv loop, a real
 * queue (wal) in a temporary directory, and a scripted backend: a small
 * HTTP server in this program on a free 127.0.0.1 port that answers each
 * write with the next status of its script (204 once the script is
 * spent) and records what it was sent. Each case asserts what reached the
 * backend (the bodies, in order) and what the queue holds afterwards
 * (pending and dead-lettered batches):
 *
 *   204               one coalesced write; the queue is empty
 *   500, 204          the same write again after a backoff
 *   400 (coalesced)   each batch alone; the refused one dead-lettered
 *   413               the batch in halves at a line boundary
 *   404 db not found  that database's batches held (moved out of the log,
 *                     in order) while another database's flow, until
 *                     relayctl retry or a CREATE DATABASE through the queue
 *   a statement       a barrier: the writes before it go in one round, it
 *                     alone to /query as a form, the writes after it next;
 *                     its answer: ok, an error in the 200 (dead-lettered
 *                     with the error), 5xx (again), database not found (held)
 *   max_rate          10 000 points at 5 000/s with a 1 s burst take about
 *                     1 s, all delivered in order; a rate raised while a
 *                     write waits for tokens lets it go at once, the worker
 *                     keeping its place (backends_apply: no restart)
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <uv.h>

#include "relay/base/lineproto.h"
#include "relay/base/log.h"
#include "relay/base/util.h"
#include "relay/delivery/backends.h"
#include "relay/delivery/replay.h"
#include "wal/wal.h"

/*---- the scripted backend ----*/

#define MAX_REQS 32
#define MAX_CONNS 8

struct request {
	char method[8];
	char target[256];
	char body[4096];
	size_t len;
};

struct backend;

struct conn {
	uv_tcp_t tcp;
	struct backend *be;
	struct rbuf in;
	int open;
};

struct backend {
	uv_tcp_t server;
	int port;
	/* the script: status and body of each answer to a write, in turn */
	int status[16];
	const char *answer[16];
	int nscript, next;
	const char *missing; /* a database it does not have: its writes get 404 */
	struct request reqs[MAX_REQS];
	int nreqs;
	struct rbuf stream; /* every POST body, whole, in the order they came */
	int posts;
	struct conn conns[MAX_CONNS];
};

static void conn_closed(uv_handle_t *h)
{
	struct conn *c = h->data;
	rbuf_release(&c->in);
	c->open = 0;
}

static void written(uv_write_t *req, int status)
{
	(void)status;
	free(req->data);
	free(req);
}

static void answer(struct conn *c, int status, const char *body)
{
	struct rbuf out = RBUF_INIT;
	rbuf_appendf(&out, "HTTP/1.1 %d Scripted\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
		     status, strlen(body), body);
	uv_write_t *req = xcalloc(1, sizeof(*req));
	req->data = out.data;
	uv_buf_t buf = uv_buf_init(out.data, (unsigned)out.len);
	assert_int_equal(uv_write(req, (uv_stream_t *)&c->tcp, &buf, 1, written), 0);
}

/* Take every whole request in c->in: record it and answer it. */
static void serve(struct conn *c)
{
	struct backend *be = c->be;
	for (;;) {
		const char *data = rbuf_cstr(&c->in);
		const char *end = strstr(data, "\r\n\r\n");
		if (!end)
			return;
		size_t head = (size_t)(end - data) + 4, clen = 0;
		const char *cl = strstr(data, "Content-Length: ");
		if (cl && cl < end)
			clen = strtoul(cl + 16, NULL, 10);
		if (c->in.len < head + clen)
			return;
		struct request *r = &be->reqs[be->nreqs < MAX_REQS ? be->nreqs : MAX_REQS - 1];
		if (be->nreqs < MAX_REQS)
			be->nreqs++;
		sscanf(data, "%7s %255s", r->method, r->target);
		/* a large body is kept whole only in the stream */
		size_t keep = clen < sizeof(r->body) ? clen : sizeof(r->body) - 1;
		memcpy(r->body, data + head, keep);
		r->body[keep] = '\0';
		r->len = keep;
		if (strcmp(r->method, "POST") == 0 && strstr(r->target, "/write?")) {
			rbuf_append(&be->stream, data + head, clen);
			be->posts++;
		}
		/* a CREATE DATABASE makes the missing database exist */
		if (be->missing && strncmp(r->target, "/query", 6) == 0 && strstr(r->target, "CREATE"))
			be->missing = NULL;
		char dbq[80];
		snprintf(dbq, sizeof(dbq), "db=%s&", be->missing ? be->missing : "");
		if (strcmp(r->method, "GET") == 0) {
			answer(c, 204, ""); /* /ping: reachable */
		} else if (be->missing && strstr(r->target, "/write?") && strstr(r->target, dbq)) {
			answer(c, 404, "{\"error\":\"database not found: \\\"x\\\"\"}");
		} else if (be->next < be->nscript) {
			answer(c, be->status[be->next], be->answer[be->next]);
			be->next++;
		} else {
			answer(c, 204, "");
		}
		memmove(c->in.data, c->in.data + head + clen, c->in.len - head - clen);
		c->in.len -= head + clen;
	}
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	(void)h;
	buf->base = xmalloc(suggested);
	buf->len = suggested;
}

static void read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
	struct conn *c = s->data;
	if (n > 0) {
		rbuf_append(&c->in, buf->base, (size_t)n);
		serve(c);
	} else if (n < 0 && !uv_is_closing((uv_handle_t *)s)) {
		uv_close((uv_handle_t *)s, conn_closed);
	}
	free(buf->base);
}

static void accept_cb(uv_stream_t *server, int status)
{
	struct backend *be = server->data;
	assert_int_equal(status, 0);
	struct conn *c = NULL;
	for (int i = 0; i < MAX_CONNS && !c; i++)
		if (!be->conns[i].open)
			c = &be->conns[i];
	assert_non_null(c);
	memset(c, 0, sizeof(*c));
	c->be = be;
	c->open = 1;
	uv_tcp_init(server->loop, &c->tcp);
	c->tcp.data = c;
	assert_int_equal(uv_accept(server, (uv_stream_t *)&c->tcp), 0);
	assert_int_equal(uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb), 0);
}

static void backend_start(struct backend *be, uv_loop_t *loop)
{
	struct sockaddr_in addr;
	struct sockaddr_storage got;
	int len = sizeof(got);
	memset(be, 0, sizeof(*be));
	assert_int_equal(uv_ip4_addr("127.0.0.1", 0, &addr), 0); /* a free port */
	assert_int_equal(uv_tcp_init(loop, &be->server), 0);
	be->server.data = be;
	assert_int_equal(uv_tcp_bind(&be->server, (const struct sockaddr *)&addr, 0), 0);
	assert_int_equal(uv_listen((uv_stream_t *)&be->server, 8, accept_cb), 0);
	assert_int_equal(uv_tcp_getsockname(&be->server, (struct sockaddr *)&got, &len), 0);
	be->port = ntohs(((struct sockaddr_in *)&got)->sin_port);
}

static void backend_close(struct backend *be)
{
	for (int i = 0; i < MAX_CONNS; i++)
		if (be->conns[i].open && !uv_is_closing((uv_handle_t *)&be->conns[i].tcp))
			uv_close((uv_handle_t *)&be->conns[i].tcp, conn_closed);
	uv_close((uv_handle_t *)&be->server, NULL);
	rbuf_release(&be->stream);
}

static void script(struct backend *be, int status, const char *body)
{
	be->status[be->nscript] = status;
	be->answer[be->nscript] = body;
	be->nscript++;
}

/* The bodies of the writes (POSTs) the backend got, in order. */
static int writes(const struct backend *be, const char **bodies, int max)
{
	int n = 0;
	for (int i = 0; i < be->nreqs && n < max; i++)
		if (strcmp(be->reqs[i].method, "POST") == 0)
			bodies[n++] = be->reqs[i].body;
	return n;
}

/*---- the fixture: loop, queue, worker ----*/

struct fixture {
	uv_loop_t loop;
	uv_timer_t tick; /* wakes the loop: run_until checks its condition */
	char dir[64];
	struct wal *wal;
	int id;
	struct relay_backend_config cfg;
	struct backend be;
	struct replay_worker *w;
	int stopped;
};

static int setup(void **state)
{
	struct fixture *f = xcalloc(1, sizeof(*f));
	assert_int_equal(uv_loop_init(&f->loop), 0);
	uv_timer_init(&f->loop, &f->tick);
	snprintf(f->dir, sizeof(f->dir), "/tmp/test_replay_worker.XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	struct wal_options opt;
	memset(&opt, 0, sizeof(opt));
	assert_int_equal(wal_open(f->dir, &opt, &f->wal), 0);
	assert_int_equal(wal_backend_open(f->wal, "b", &f->id), 0);
	backend_start(&f->be, &f->loop);
	struct relay_backend_config *c = &f->cfg;
	c->name = (char *)"b";
	c->url = (char *)"http://127.0.0.1";
	c->host = (char *)"127.0.0.1";
	c->port = (uint16_t)f->be.port;
	c->path_prefix = (char *)"";
	c->timeout_ms = 5000;
	c->connect_timeout_ms = 1000;
	c->batch_max_bytes = 1 << 20;
	c->batch_max_lines = 10000;
	c->retry_min_ms = 10; /* a retry comes quickly */
	c->retry_max_ms = 50;
	c->on_database_not_found = RELAY_DB_HOLD;
	c->parallel = 1; /* one connection: the order of the writes is the order sent */
	c->type = RELAY_API_V1;
	*state = f;
	return 0;
}

static void tick_cb(uv_timer_t *t)
{
	(void)t;
}

static void worker_stopped(struct replay_worker *w, void *arg)
{
	(void)w;
	*(int *)arg = 1;
}

/* Run the loop until done(f) holds, for at most ms. */
static int run_until(struct fixture *f, int (*done)(struct fixture *f), uint64_t ms)
{
	uint64_t end = uv_hrtime() + ms * 1000000ULL;
	uv_timer_start(&f->tick, tick_cb, 5, 5);
	while (!done(f) && uv_hrtime() < end)
		uv_run(&f->loop, UV_RUN_ONCE);
	uv_timer_stop(&f->tick);
	return done(f);
}

static int is_stopped(struct fixture *f)
{
	return f->stopped;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	if (f->w) {
		replay_stop(f->w, worker_stopped, &f->stopped);
		assert_true(run_until(f, is_stopped, 5000));
		replay_free(f->w);
	}
	backend_close(&f->be);
	uv_close((uv_handle_t *)&f->tick, NULL);
	uv_run(&f->loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&f->loop), 0);
	wal_close(f->wal);
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
	assert_int_equal(system(cmd), 0);
	free(f);
	return 0;
}

static uint64_t append_to(struct fixture *f, const char *db, const char *body);

/* Queue one batch of body for backend "b" (db "db", precision ns): its
 * sequence. */
static uint64_t append(struct fixture *f, const char *body)
{
	return append_to(f, "db", body);
}

static uint64_t append_to(struct fixture *f, const char *db, const char *body)
{
	struct wal_batch b;
	memset(&b, 0, sizeof(b));
	b.route = 1ULL << f->id;
	b.accept_ns = now_realtime_ns();
	b.precision = LP_PRECISION_NS;
	b.db = db;
	b.rp = b.user = b.password = b.org = b.token = "";
	b.body = body;
	b.body_len = strlen(body);
	for (const char *p = body; (p = strchr(p, '\n')); p++)
		b.lines++;
	assert_int_equal(wal_append(f->wal, &b, 1, b.accept_ns), 0);
	assert_int_equal(b.result, 0);
	return b.seq;
}

/* Queue one statement (kind WAL_KIND_STATEMENT, db "", credentials u/p)
 * for backend "b": its sequence. */
static uint64_t append_statement(struct fixture *f, const char *text)
{
	struct wal_batch b;
	memset(&b, 0, sizeof(b));
	b.route = 1ULL << f->id;
	b.accept_ns = now_realtime_ns();
	b.kind = WAL_KIND_STATEMENT;
	b.db = b.rp = b.org = b.token = "";
	b.user = "u";
	b.password = "p";
	b.body = text;
	b.body_len = strlen(text);
	assert_int_equal(wal_append(f->wal, &b, 1, b.accept_ns), 0);
	assert_int_equal(b.result, 0);
	return b.seq;
}

static struct wal_backend_stat queue(struct fixture *f)
{
	struct wal_backend_stat st;
	assert_int_equal(wal_backend_stat(f->wal, "b", &st), 0);
	return st;
}

/* Everything is finished: nothing pending, every delivery recorded. */
static int drained(struct fixture *f)
{
	return queue(f).pending_batches == 0;
}

/* What the worker shows. */
static struct replay_view view(struct fixture *f)
{
	struct replay_view v;
	replay_worker_view(f->w, &v);
	return v;
}

static void start(struct fixture *f)
{
	f->w = replay_start(&f->loop, f->wal, &f->cfg, f->id);
	assert_non_null(f->w);
}

static void test_delivered(void **state)
{
	struct fixture *f = *state;
	append(f, "cpu,host=a v=1 1\n");
	append(f, "cpu,host=a v=2 2\n");
	append(f, "cpu,host=b v=3 3\n");
	start(f);
	assert_true(run_until(f, drained, 5000));
	const char *w[8];
	/* One coalesced write, the batches in queue order. */
	assert_int_equal(writes(&f->be, w, 8), 1);
	assert_string_equal(w[0], "cpu,host=a v=1 1\ncpu,host=a v=2 2\ncpu,host=b v=3 3\n");
	assert_non_null(strstr(f->be.reqs[0].target, "/write?db=db"));
	struct replay_view v;
	replay_worker_view(f->w, &v);
	assert_int_equal(v.health, REPLAY_UP);
	assert_int_equal(v.stats.posts, 1);
	assert_int_equal(v.stats.delivered_batches, 3);
	assert_int_equal(v.stats.delivered_points, 3);
	assert_true(v.last_delivery_ns > 0);
	/* The counters of /metrics: one write answered, delivered; three
	 * batches, their bytes, a latency for each. */
	assert_int_equal(v.stats.writes[OUTCOME_DELIVERED], 1);
	assert_int_equal(v.stats.writes[OUTCOME_RETRY], 0);
	assert_int_equal(v.stats.delivered_bytes, 3 * strlen("cpu,host=a v=1 1\n"));
	assert_int_equal(v.stats.delivery_latency.count, 3);
	assert_true(v.stats.delivery_latency.sum >= 0 && v.stats.delivery_latency.sum < 15);
	assert_int_equal(v.stats.request_duration.count, 1);
	assert_int_equal(v.stats.retries, 0);
	assert_int_equal(queue(f).dead_batches, 0);

	/* A batch committed later: replay_notify sends it. */
	append(f, "cpu,host=a v=4 4\n");
	replay_notify(f->w);
	assert_true(run_until(f, drained, 5000));
	assert_int_equal(writes(&f->be, w, 8), 2);
	assert_string_equal(w[1], "cpu,host=a v=4 4\n");
}

static void test_retry_then_delivered(void **state)
{
	struct fixture *f = *state;
	script(&f->be, 500, "{\"error\":\"engine: something went wrong\"}");
	append(f, "cpu,host=a v=1 1\n");
	start(f);
	assert_true(run_until(f, drained, 5000));
	const char *w[8];
	assert_int_equal(writes(&f->be, w, 8), 2);
	assert_string_equal(w[0], "cpu,host=a v=1 1\n");
	assert_string_equal(w[1], w[0]);
	struct replay_view v;
	replay_worker_view(f->w, &v);
	assert_int_equal(v.health, REPLAY_UP);
	assert_int_equal(v.stats.retries, 1);
	assert_int_equal(v.stats.delivered_batches, 1);
	assert_int_equal(queue(f).dead_batches, 0);
	/* A 500 that is no overload text: a server error. */
	assert_int_equal(v.stats.retry_reasons[REPLAY_RETRY_SERVER_ERROR], 1);
	assert_int_equal(v.stats.writes[OUTCOME_RETRY], 1);
	assert_int_equal(v.stats.writes[OUTCOME_DELIVERED], 1);
	assert_int_equal(v.stats.request_duration.count, 2);
	assert_int_equal(v.stats.delivery_latency.count, 1);
}

/* Retries counted by reason: throttled (429), overloaded (InfluxDB's
 * cache text in a 500), a server error (503). */
static void test_retry_reasons_counted(void **state)
{
	struct fixture *f = *state;
	script(&f->be, 429, "{\"error\":\"slow down\"}");
	script(&f->be, 500, "{\"error\":\"engine: cache-max-memory-size exceeded: (1/1)\"}");
	script(&f->be, 503, "{\"error\":\"busy\"}");
	append(f, "cpu,host=a v=1 1\n");
	start(f);
	assert_true(run_until(f, drained, 5000));
	struct replay_view v = view(f);
	assert_int_equal(v.stats.retries, 3);
	assert_int_equal(v.stats.retry_reasons[REPLAY_RETRY_THROTTLED], 1);
	assert_int_equal(v.stats.retry_reasons[REPLAY_RETRY_OVERLOADED], 1);
	assert_int_equal(v.stats.retry_reasons[REPLAY_RETRY_SERVER_ERROR], 1);
	assert_int_equal(v.stats.writes[OUTCOME_RETRY], 3);
	assert_int_equal(v.stats.writes[OUTCOME_DELIVERED], 1);
	assert_int_equal(v.stats.posts, 4);
}

static int connect_retried(struct fixture *f)
{
	return view(f).stats.retry_reasons[REPLAY_RETRY_CONNECT] >= 2;
}

/* A backend that refuses connections: down, its write and then its /ping
 * probes counted as retries for "connect"; no write was answered. */
static void test_connect_refused_counted(void **state)
{
	struct fixture *f = *state;
	uv_tcp_t probe;
	struct sockaddr_in addr;
	struct sockaddr_storage got;
	int len = sizeof(got);
	/* A port that was free a moment ago: nothing listens there. */
	assert_int_equal(uv_ip4_addr("127.0.0.1", 0, &addr), 0);
	uv_tcp_init(&f->loop, &probe);
	assert_int_equal(uv_tcp_bind(&probe, (const struct sockaddr *)&addr, 0), 0);
	assert_int_equal(uv_tcp_getsockname(&probe, (struct sockaddr *)&got, &len), 0);
	f->cfg.port = ntohs(((struct sockaddr_in *)&got)->sin_port);
	uv_close((uv_handle_t *)&probe, NULL);
	append(f, "cpu,host=a v=1 1\n");
	start(f);
	assert_true(run_until(f, connect_retried, 5000));
	struct replay_view v = view(f);
	assert_int_equal(v.health, REPLAY_DOWN);
	assert_int_equal(v.stats.retries, v.stats.retry_reasons[REPLAY_RETRY_CONNECT]);
	assert_int_equal(v.stats.writes[OUTCOME_DELIVERED], 0);
	assert_int_equal(v.stats.delivered_batches, 0);
	assert_int_equal(queue(f).pending_batches, 1);
}

static int dead_one(struct fixture *f)
{
	struct wal_backend_stat st = queue(f);
	return st.pending_batches == 0 && st.dead_batches == 1;
}

static void test_dead_letter_isolated(void **state)
{
	struct fixture *f = *state;
	/* The coalesced write is refused; sent batch by batch, the first is
	 * taken and the second refused again: only that one is dead. */
	script(&f->be, 400, "{\"error\":\"unable to parse 'cpu v=x': invalid number\"}");
	script(&f->be, 204, "");
	script(&f->be, 400, "{\"error\":\"unable to parse 'cpu v=x': invalid number\"}");
	append(f, "cpu,host=a v=1 1\n");
	uint64_t bad = append(f, "cpu,host=a v=2 2\n");
	append(f, "cpu,host=a v=3 3\n");
	start(f);
	assert_true(run_until(f, dead_one, 5000));
	const char *w[8];
	int n = writes(&f->be, w, 8);
	assert_int_equal(n, 4);
	assert_string_equal(w[0], "cpu,host=a v=1 1\ncpu,host=a v=2 2\ncpu,host=a v=3 3\n");
	assert_string_equal(w[1], "cpu,host=a v=1 1\n");
	assert_string_equal(w[2], "cpu,host=a v=2 2\n");
	assert_string_equal(w[3], "cpu,host=a v=3 3\n"); /* the batch after the dead one goes on */
	struct replay_view v;
	replay_worker_view(f->w, &v);
	assert_int_equal(v.stats.dead_batches, 1);
	assert_int_equal(v.stats.delivered_batches, 2);
	assert_int_equal(v.stats.writes[OUTCOME_DEAD], 2);
	assert_int_equal(v.stats.writes[OUTCOME_DELIVERED], 2);
	assert_int_equal(v.stats.delivery_latency.count, 2);
	assert_int_equal(v.stats.retries, 0);
	assert_non_null(strstr(v.last_error, "HTTP 400"));
	/* The dead letter is the refused batch, with the backend's answer. */
	struct wal_dead dead[4];
	size_t ndead = 0;
	assert_int_equal(wal_dead_list(f->wal, f->id, 0, 4, 1 << 20, dead, &ndead), 0);
	assert_int_equal(ndead, 1);
	assert_int_equal(dead[0].batch.seq, bad);
	assert_int_equal(dead[0].status, 400);
	assert_false(dead[0].corrupt);
	assert_memory_equal(dead[0].batch.body, "cpu,host=a v=2 2\n", dead[0].batch.body_len);
	assert_non_null(strstr(dead[0].msg, "unable to parse"));
	wal_dead_release(&dead[0]);
}

static void test_too_large_split(void **state)
{
	struct fixture *f = *state;
	script(&f->be, 413, "{\"error\":\"Request Entity Too Large\"}");
	append(f, "cpu,host=a v=1 1\ncpu,host=a v=2 2\ncpu,host=a v=3 3\ncpu,host=a v=4 4\n");
	start(f);
	assert_true(run_until(f, drained, 5000));
	const char *w[8];
	assert_int_equal(writes(&f->be, w, 8), 3);
	assert_string_equal(w[0], "cpu,host=a v=1 1\ncpu,host=a v=2 2\ncpu,host=a v=3 3\ncpu,host=a v=4 4\n");
	/* Halves at a line boundary, in order, together the batch. */
	assert_string_equal(w[1], "cpu,host=a v=1 1\ncpu,host=a v=2 2\ncpu,host=a v=3 3\n");
	assert_string_equal(w[2], "cpu,host=a v=4 4\n");
	struct replay_view v;
	replay_worker_view(f->w, &v);
	assert_int_equal(v.stats.splits, 1);
	assert_int_equal(v.stats.delivered_batches, 1);
	assert_int_equal(v.stats.delivered_points, 4);
	assert_int_equal(v.stats.writes[OUTCOME_SPLIT], 1);
	assert_int_equal(v.stats.writes[OUTCOME_DELIVERED], 2);
	assert_int_equal(v.stats.request_duration.count, 3);
	assert_int_equal(v.stats.delivery_latency.count, 1);
	assert_int_equal(queue(f).dead_batches, 0);
}

/* A split whose last piece is refused for good: the delivered pieces'
 * points and bytes count, the refused line's do not, and the batch counts
 * as delivered once (review of issue 14: they were lost, or counted whole). */
static void test_split_with_a_dead_piece_counts_what_was_delivered(void **state)
{
	struct fixture *f = *state;
	script(&f->be, 413, "{\"error\":\"Request Entity Too Large\"}");
	script(&f->be, 204, "");
	script(&f->be, 413, "{\"error\":\"Request Entity Too Large\"}");
	const char *three = "cpu,host=a v=1 1\ncpu,host=a v=2 2\ncpu,host=a v=3 3\n";
	append(f, "cpu,host=a v=1 1\ncpu,host=a v=2 2\ncpu,host=a v=3 3\ncpu,host=a v=4 4\n");
	start(f);
	assert_true(run_until(f, drained, 5000));
	struct replay_view v;
	replay_worker_view(f->w, &v);
	assert_int_equal(v.stats.delivered_batches, 1);
	assert_int_equal(v.stats.delivered_points, 3);
	assert_int_equal(v.stats.delivered_bytes, strlen(three));
	assert_int_equal(v.stats.delivery_latency.count, 1);
	assert_int_equal(v.stats.dead_batches, 1);
	assert_true(v.last_delivery_ns > 0);
	assert_int_equal(queue(f).dead_batches, 1);
}

static int held_two_and_db_delivered(struct fixture *f)
{
	struct wal_backend_stat st = queue(f);
	return st.held_batches == 2 && st.pending_batches == 0;
}

static int nothing_held(struct fixture *f)
{
	struct wal_backend_stat st = queue(f);
	return st.held_batches == 0 && st.pending_batches == 0;
}

/* Issue 13: a database the backend does not have holds only itself: its
 * batches leave the log for the held store, in order, while the other
 * database's go at once; relayctl retry sends them, coalesced, once it
 * exists. */
static void test_database_not_found_holds_only_itself(void **state)
{
	struct fixture *f = *state;
	f->cfg.retry_min_ms = f->cfg.retry_max_ms = 60000; /* only retry brings them */
	f->be.missing = "x";
	append_to(f, "x", "cpu,host=a v=1 1\n");
	append(f, "cpu,host=b v=1 1\n");
	append_to(f, "x", "cpu,host=a v=2 2\n");
	append(f, "cpu,host=b v=2 2\n");
	start(f);
	assert_true(run_until(f, held_two_and_db_delivered, 5000));
	const char *w[8];
	int n = writes(&f->be, w, 8);
	/* x's first write (404), then db's two; x's second never sent */
	assert_int_equal(n, 3);
	assert_non_null(strstr(f->be.reqs[0].target, "db=x&"));
	assert_string_equal(w[1], "cpu,host=b v=1 1\n");
	assert_string_equal(w[2], "cpu,host=b v=2 2\n");
	struct replay_view v;
	replay_worker_view(f->w, &v);
	assert_int_equal(v.health, REPLAY_UP); /* the backend is not held */
	assert_int_equal(v.stats.writes[OUTCOME_NO_DATABASE], 1);
	struct wal_backend_stat st = queue(f);
	assert_int_equal(st.dead_batches, 0);
	assert_int_equal(st.held_points, 2);
	/* x exists now; relayctl retry skips the wait */
	f->be.missing = NULL;
	assert_int_equal(replay_retry_now(f->w), 0);
	assert_true(run_until(f, nothing_held, 5000));
	n = writes(&f->be, w, 8);
	assert_int_equal(n, 4);
	assert_non_null(strstr(f->be.reqs[3].target, "db=x&"));
	assert_string_equal(w[3], "cpu,host=a v=1 1\ncpu,host=a v=2 2\n");
	/* released: x's next write goes straight through */
	append_to(f, "x", "cpu,host=a v=3 3\n");
	replay_notify(f->w);
	assert_true(run_until(f, drained, 5000));
	assert_int_equal(writes(&f->be, w, 8), 5);
	assert_string_equal(w[4], "cpu,host=a v=3 3\n");
	st = queue(f);
	assert_int_equal(st.delivered_batches, 5);
	assert_int_equal(st.dead_batches, 0);
}

/* x's two batches held (two rounds: the second joins the first in the
 * store, retry_min a minute); x created on the backend; text queued: x's
 * batches go right after it, in order, only if text woke x. */
static void release_by_statement(struct fixture *f, const char *text)
{
	f->cfg.retry_min_ms = f->cfg.retry_max_ms = 60000;
	f->be.missing = "x";
	append_to(f, "x", "cpu,host=a v=1 1\n");
	append_to(f, "x", "cpu,host=a v=2 2\n");
	f->cfg.batch_max_lines = 1;
	start(f);
	assert_true(run_until(f, held_two_and_db_delivered, 5000));
	f->be.missing = NULL;
	append_statement(f, text);
	replay_notify(f->w);
	assert_true(run_until(f, nothing_held, 5000));
	const char *w[8];
	assert_int_equal(writes(&f->be, w, 8), 4);
	assert_string_equal(w[2], "cpu,host=a v=1 1\n");
	assert_string_equal(w[3], "cpu,host=a v=2 2\n");
}

/* Issue 13: a CREATE DATABASE of a held database that goes through the
 * backend's queue releases it at once (not after the backoff). */
static void test_create_database_statement_releases(void **state)
{
	struct fixture *f = *state;
	release_by_statement(f, "CREATE DATABASE x\n");
	assert_string_equal(f->be.reqs[1].body, "q=CREATE%20DATABASE%20x");
}

/* ... and so does each database a statement of several creates, not only
 * the first one's (the others would wait out their backoff). */
static void test_created_databases_wake(void **state)
{
	release_by_statement(*state, "CREATE DATABASE a; CREATE DATABASE x\n");
}

/* Held batches of a database already in the store when the worker starts
 * (a restart), under the policy now in force. */
static void hold_two(struct fixture *f)
{
	uint64_t s[2] = { append_to(f, "x", "cpu,host=a v=1 1\n"), append_to(f, "x", "cpu,host=a v=2 2\n") };
	assert_int_equal(wal_hold(f->wal, f->id, s, 2), 0);
	assert_int_equal(queue(f).held_batches, 2);
}

static int two_dead(struct fixture *f)
{
	struct wal_backend_stat st = queue(f);
	return st.held_batches == 0 && st.dead_batches == 2;
}

/* Issue 13: a reload to on_database_not_found: dead_letter applies to what
 * is held: dead-lettered (one at a time: the coalesced write was refused)
 * at the first try. */
static void test_held_then_dead_letter_policy(void **state)
{
	struct fixture *f = *state;
	hold_two(f);
	f->be.missing = "x";
	f->cfg.on_database_not_found = RELAY_DB_DEAD_LETTER;
	start(f);
	assert_true(run_until(f, two_dead, 5000));
	struct wal_dead d[2];
	size_t n;
	assert_int_equal(wal_dead_list(f->wal, f->id, 0, 2, 1 << 20, d, &n), 0);
	assert_int_equal(n, 2);
	assert_int_equal(d[0].status, 404);
	assert_non_null(strstr(d[0].msg, "database not found"));
	wal_dead_release(&d[0]);
	wal_dead_release(&d[1]);
}

/* Issue 13: ... and on_database_not_found: create creates the database,
 * then sends what was held. */
static void test_held_then_create_policy(void **state)
{
	struct fixture *f = *state;
	hold_two(f);
	f->be.missing = "x";
	f->cfg.on_database_not_found = RELAY_DB_CREATE;
	start(f);
	assert_true(run_until(f, nothing_held, 5000));
	const char *w[8];
	int n = writes(&f->be, w, 8);
	assert_int_equal(n, 3); /* the 404, the CREATE, the write */
	assert_non_null(strstr(f->be.reqs[1].target, "/query?q=CREATE%20DATABASE%20%22x%22"));
	assert_string_equal(w[2], "cpu,host=a v=1 1\ncpu,host=a v=2 2\n");
	assert_int_equal(queue(f).dead_batches, 0);
}

/* Issue 13: a statement is a barrier in the writes' order: the writes
 * before it are delivered (coalesced among themselves), then it alone,
 * as a form to /query with the writer's credentials, then the writes
 * after it. */
static void test_statement_barrier(void **state)
{
	struct fixture *f = *state;
	append(f, "cpu,host=a v=1 1\n");
	append(f, "cpu,host=a v=2 2\n");
	append_statement(f, "CREATE DATABASE x\n");
	append(f, "cpu,host=a v=3 3\n");
	append(f, "cpu,host=a v=4 4\n");
	start(f);
	assert_true(run_until(f, drained, 5000));
	assert_int_equal(f->be.nreqs, 3);
	assert_non_null(strstr(f->be.reqs[0].target, "/write?db=db"));
	assert_string_equal(f->be.reqs[0].body, "cpu,host=a v=1 1\ncpu,host=a v=2 2\n");
	assert_string_equal(f->be.reqs[1].target, "/query");
	assert_string_equal(f->be.reqs[1].body, "q=CREATE%20DATABASE%20x");
	assert_non_null(strstr(f->be.reqs[2].target, "/write?db=db"));
	assert_string_equal(f->be.reqs[2].body, "cpu,host=a v=3 3\ncpu,host=a v=4 4\n");
	struct replay_view v;
	replay_worker_view(f->w, &v);
	assert_int_equal(v.stats.delivered_batches, 5);
	assert_int_equal(v.stats.delivered_points, 4);
	assert_int_equal(queue(f).dead_batches, 0);
}

/* The one dead letter is statement seq, refused in a 200 with msg. */
static void assert_dead_statement(struct fixture *f, uint64_t seq, const char *msg)
{
	struct wal_dead dead[2];
	size_t ndead = 0;
	assert_int_equal(wal_dead_list(f->wal, f->id, 0, 2, 1 << 20, dead, &ndead), 0);
	assert_int_equal(ndead, 1);
	assert_int_equal(dead[0].batch.seq, seq);
	assert_int_equal(dead[0].batch.kind, WAL_KIND_STATEMENT);
	assert_int_equal(dead[0].status, 200);
	assert_string_equal(dead[0].msg, msg);
	wal_dead_release(&dead[0]);
}

/* Issue 13: an error in the 200 of a statement is for good: dead-lettered
 * with the error text, and what follows it goes on; a 5xx is tried again. */
static void test_statement_outcomes(void **state)
{
	struct fixture *f = *state;
	script(&f->be, 200, "{\"results\":[{\"statement_id\":0,\"error\":\"error parsing query: found EOF\"}]}");
	script(&f->be, 204, "");
	script(&f->be, 503, "{\"error\":\"busy\"}");
	script(&f->be, 200, "{\"results\":[{\"statement_id\":0}]}");
	uint64_t bad = append_statement(f, "CREATE DATABSE\n");
	append(f, "cpu,host=a v=1 1\n");
	append_statement(f, "CREATE DATABASE y\n");
	start(f);
	assert_true(run_until(f, dead_one, 5000));
	assert_int_equal(f->be.nreqs, 4);
	assert_string_equal(f->be.reqs[0].target, "/query");
	assert_string_equal(f->be.reqs[1].body, "cpu,host=a v=1 1\n");
	assert_string_equal(f->be.reqs[2].body, "q=CREATE%20DATABASE%20y");
	assert_string_equal(f->be.reqs[3].body, f->be.reqs[2].body); /* the 503, then again */
	assert_dead_statement(f, bad, "HTTP 200: error parsing query: found EOF");
	struct replay_view v;
	replay_worker_view(f->w, &v);
	assert_int_equal(v.stats.retries, 1);
	assert_int_equal(v.stats.retry_reasons[REPLAY_RETRY_SERVER_ERROR], 1);
	assert_int_equal(v.health, REPLAY_UP);
}

/* A statement sent without a db parameter names its database in its
 * text (CREATE RETENTION POLICY r ON nosuch ...): "database not found" is
 * not a database of the queue to hold, and holding the backend for it
 * would stop every write behind it for ever. It is dead-lettered with the
 * backend's answer (which names the database) and the queue goes on. */
static void test_statement_database_not_found(void **state)
{
	struct fixture *f = *state;
	script(&f->be, 200, "{\"results\":[{\"statement_id\":0,\"error\":\"database not found: nosuch\"}]}");
	uint64_t seq = append_statement(f, "CREATE RETENTION POLICY r ON nosuch DURATION 1h REPLICATION 1\n");
	append(f, "cpu,host=a v=1 1\n");
	start(f);
	assert_true(run_until(f, dead_one, 5000));
	assert_int_equal(f->be.nreqs, 2);
	assert_string_equal(f->be.reqs[0].target, "/query");
	assert_string_equal(f->be.reqs[1].body, "cpu,host=a v=1 1\n"); /* the write behind it goes on */
	assert_dead_statement(f, seq, "HTTP 200: database not found: nosuch");
	assert_int_equal(view(f).health, REPLAY_UP);
	assert_int_equal(queue(f).held_batches, 0);
}

/* All the POSTed bodies, one after the other. */
static void all_writes(const struct backend *be, char *out, size_t outlen)
{
	const char *w[MAX_REQS];
	int n = writes(be, w, MAX_REQS);
	out[0] = '\0';
	for (int i = 0; i < n; i++)
		strncat(out, w[i], outlen - strlen(out) - 1);
}

/* x held (hold_two), then more in the log for x (unless NULL); the next
 * call of each wal operation in ops fails as a full disk would; the worker
 * runs until nothing is held or pending. */
static void held_with_failure(struct fixture *f, const char *more, unsigned ops)
{
	hold_two(f);
	if (more)
		append_to(f, "x", more);
	wal_fail_next(f->wal, ops, WAL_EFULL);
	start(f);
	assert_true(run_until(f, nothing_held, 5000));
}

/* A delivery of held batches whose record (wal_held_done) fails is sent
 * again; it is counted once, when the record commits. */
static void test_held_delivery_counted_once(void **state)
{
	struct fixture *f = *state;
	held_with_failure(f, NULL, WAL_FAIL_HELD_DONE);
	const char *w[8];
	assert_int_equal(writes(&f->be, w, 8), 2); /* sent again after the failed record */
	assert_string_equal(w[1], w[0]);
	assert_int_equal(view(f).stats.delivered_batches, 2);
	assert_int_equal(view(f).stats.delivered_points, 2);
	assert_int_equal(queue(f).delivered_batches, 2);
}

/* x is held, and exists now. The round's hold of x's next batch fails
 * (disk full) and waits for its retry; meanwhile the held retry delivers
 * what the store has and finds nothing more. x must stay held until that
 * hold commits (and then be tried again), or the batch after it would go
 * straight through, ahead of it, and it would stay in the store. */
static void test_hold_retry_keeps_database_held(void **state)
{
	struct fixture *f = *state;
	held_with_failure(f, "cpu,host=a v=3 3\n", WAL_FAIL_HOLD);
	append_to(f, "x", "cpu,host=a v=4 4\n");
	replay_notify(f->w);
	assert_true(run_until(f, drained, 5000));
	char all[512];
	all_writes(&f->be, all, sizeof(all));
	assert_string_equal(all, "cpu,host=a v=1 1\ncpu,host=a v=2 2\ncpu,host=a v=3 3\ncpu,host=a v=4 4\n");
	struct wal_backend_stat st = queue(f);
	assert_int_equal(st.held_batches, 0);
	assert_int_equal(st.delivered_batches, 4);
}

/* The list of held databases cannot be read at start: nothing is sent
 * until it can (a write of x would go ahead of x's held batches), and it
 * is read again (here at the first write), not given up. */
static void test_held_list_unreadable_at_start(void **state)
{
	struct fixture *f = *state;
	held_with_failure(f, "cpu,host=a v=3 3\n", WAL_FAIL_HELD_LIST);
	char all[512];
	all_writes(&f->be, all, sizeof(all));
	assert_string_equal(all, "cpu,host=a v=1 1\ncpu,host=a v=2 2\ncpu,host=a v=3 3\n");
}

/* ... and with nothing in the log to send: read again after a backoff. */
static void test_held_list_read_again(void **state)
{
	struct fixture *f = *state;
	held_with_failure(f, NULL, WAL_FAIL_HELD_LIST);
	const char *w[8];
	assert_int_equal(writes(&f->be, w, 8), 1);
	assert_string_equal(w[0], "cpu,host=a v=1 1\ncpu,host=a v=2 2\n");
}

/*---- backends: counters across a restart, and their /metrics text ----*/

struct set {
	struct fixture *f;
	struct backends bs;
	struct relay_config cfg[2];
	struct relay_backend_config b[2];
	int ids[1];
	int closed;
};

static struct set *the_set;

static int set_drained_twice(struct fixture *f)
{
	(void)f;
	struct replay_stats st;
	backends_stats(&the_set->bs, the_set->ids[0], &st);
	return st.delivered_batches == 2 && drained(f);
}

static int set_delivered_once(struct fixture *f)
{
	(void)f;
	struct replay_stats st;
	backends_stats(&the_set->bs, the_set->ids[0], &st);
	return st.delivered_batches == 1;
}

static int set_closed(struct fixture *f)
{
	(void)f;
	return the_set->closed;
}

static void set_closed_cb(struct backends *bs)
{
	(void)bs;
	the_set->closed = 1;
}

/* The sample of family name for backend b in text, or -1. */
static long long sample(const char *text, const char *name_and_labels)
{
	char key[256];
	snprintf(key, sizeof(key), "\n%s ", name_and_labels);
	const char *p = strstr(text, key);
	return p ? strtoll(p + strlen(key), NULL, 10) : -1;
}

/* A reload that restarts the worker (its settings changed) keeps its
 * counters: the sums go on, never back; every family is written once,
 * with every outcome and reason. */
static void test_backends_metrics(void **state)
{
	struct fixture *f = *state;
	struct set *s = xcalloc(1, sizeof(*s));
	char err[200];
	the_set = s;
	s->f = f;
	s->b[0] = f->cfg;
	s->b[1] = f->cfg;
	s->b[1].timeout_ms = 4000; /* a delivery setting: a restart */
	for (int i = 0; i < 2; i++) {
		s->cfg[i].backends = &s->b[i];
		s->cfg[i].nbackends = 1;
	}
	assert_int_equal(backends_init(&s->bs, &f->loop, f->wal), 0);
	assert_int_equal(backends_open(&s->bs, &s->cfg[0], s->ids, err, sizeof(err)), 0);
	append(f, "cpu,host=a v=1 1\n");
	backends_apply(&s->bs, &s->cfg[0], s->ids);
	assert_true(run_until(f, set_delivered_once, 5000));
	backends_apply(&s->bs, &s->cfg[1], s->ids);
	append(f, "cpu,host=a v=2 2\n");
	backends_notify(&s->bs);
	assert_true(run_until(f, set_drained_twice, 5000));
	/* The new worker counts from 0; the set from the start. */
	struct replay_view v;
	replay_worker_view(backends_worker(&s->bs, s->ids[0]), &v);
	assert_int_equal(v.stats.delivered_batches, 1);

	struct rbuf out = RBUF_INIT;
	backends_metrics(&s->bs, &s->cfg[1], s->ids, &out);
	const char *t = rbuf_cstr(&out);
	assert_int_equal(sample(t, "relayd_backend_delivered_batches_total{backend=\"b\"}"), 2);
	assert_int_equal(sample(t, "relayd_backend_delivered_points_total{backend=\"b\"}"), 2);
	assert_int_equal(sample(t, "relayd_backend_delivered_bytes_total{backend=\"b\"}"), 34);
	assert_int_equal(sample(t, "relayd_backend_writes_total{backend=\"b\",outcome=\"delivered\"}"), 2);
	assert_int_equal(sample(t, "relayd_backend_writes_total{backend=\"b\",outcome=\"no_database\"}"), 0);
	assert_int_equal(sample(t, "relayd_backend_retries_total{backend=\"b\",reason=\"server_error\"}"), 0);
	assert_int_equal(sample(t, "relayd_backend_retries_total{backend=\"b\",reason=\"other\"}"), 0);
	assert_int_equal(sample(t, "relayd_backend_dead_lettered_batches_total{backend=\"b\"}"), 0);
	assert_int_equal(sample(t, "relayd_backend_splits_total{backend=\"b\"}"), 0);
	assert_int_equal(sample(t, "relayd_backend_corrupt_records_total{backend=\"b\"}"), 0);
	assert_int_equal(sample(t, "relayd_backend_delivery_latency_seconds_count{backend=\"b\"}"), 2);
	assert_int_equal(sample(t, "relayd_backend_delivery_latency_seconds_bucket{backend=\"b\",le=\"+Inf\"}"), 2);
	assert_int_equal(sample(t, "relayd_backend_request_duration_seconds_count{backend=\"b\"}"), 2);
	/* Each family once. */
	const char *fams[] = { "delivered_batches_total", "delivered_points_total", "delivered_bytes_total",
		               "writes_total", "retries_total", "dead_lettered_batches_total", "splits_total",
		               "corrupt_records_total", "delivery_latency_seconds", "request_duration_seconds" };
	for (size_t i = 0; i < sizeof(fams) / sizeof(fams[0]); i++) {
		char type[128];
		snprintf(type, sizeof(type), "# TYPE relayd_backend_%s ", fams[i]);
		const char *p = strstr(t, type);
		assert_non_null(p);
		assert_null(strstr(p + 1, type));
	}
	if (getenv("TEST_METRICS_OUT")) {
		FILE *fp = fopen(getenv("TEST_METRICS_OUT"), "w");
		if (fp) {
			fputs(t, fp);
			fclose(fp);
		}
	}
	rbuf_release(&out);

	backends_close(&s->bs, set_closed_cb);
	assert_true(run_until(f, set_closed, 5000));
	free(s);
	the_set = NULL;
}

/*---- pacing (max_rate) ----*/

/* Queue n batches of per lines each, "cpu,host=a v=I I\n" for I from
 * *next on, and append them to want. */
static void append_points(struct fixture *f, int n, int per, int *next, struct rbuf *want)
{
	struct rbuf body = RBUF_INIT;
	for (int b = 0; b < n; b++) {
		rbuf_reset(&body);
		for (int l = 0; l < per; l++, (*next)++)
			rbuf_appendf(&body, "cpu,host=a v=%d %d\n", *next, *next);
		rbuf_append(want, body.data, body.len);
		append(f, rbuf_cstr(&body));
	}
	rbuf_release(&body);
}

static int throttled_now(struct fixture *f)
{
	return view(f).throttled;
}

/* 10 000 points at 5 000/s with a burst of 1 s: the first 5 000 go at
 * once (the bucket starts full), the next 5 000 as the bucket fills, so
 * the whole takes about 1 s; every point is delivered once, in order. */
static void test_rate_limit_paces(void **state)
{
	struct fixture *f = *state;
	struct rbuf want = RBUF_INIT;
	int next = 0;
	f->cfg.max_rate = 5000;
	f->cfg.rate_burst_ms = 1000;
	f->cfg.batch_max_lines = 1000; /* writes of 1 000 points: 10 of them */
	append_points(f, 100, 100, &next, &want);
	uint64_t t0 = uv_hrtime();
	start(f);
	assert_true(run_until(f, drained, 10000));
	uint64_t ms = (uv_hrtime() - t0) / 1000000;
	assert_true(ms >= 900);
	assert_true(ms < 5000);
	assert_int_equal(f->be.posts, 10);
	assert_int_equal(f->be.stream.len, want.len);
	assert_memory_equal(f->be.stream.data, want.data, want.len);
	struct replay_view v = view(f);
	assert_int_equal(v.stats.delivered_points, 10000);
	assert_int_equal(v.max_rate, 5000);
	assert_int_equal(v.max_rate_bytes, 0);
	assert_int_equal(v.rate_burst_ms, 1000);
	assert_false(v.throttled);
	/* four 200 ms waits at least (the fifth write may find the tokens
	 * the first four took time to deliver) */
	assert_true(v.stats.throttled_ms >= 700);
	assert_true(v.stats.throttled_ms <= ms);
	rbuf_release(&want);
}

/* A byte limit paces the same way: 20 writes of 1 000 bytes at 10 000
 * bytes/s, a burst of 100 ms (1 000 bytes): about 2 s in all. */
static void test_rate_limit_bytes(void **state)
{
	struct fixture *f = *state;
	struct rbuf want = RBUF_INIT;
	f->cfg.max_rate_bytes = 10000;
	f->cfg.rate_burst_ms = 100;
	f->cfg.batch_max_bytes = 1000;
	for (int b = 0; b < 20; b++) {
		char body[1001];
		int tail = snprintf(NULL, 0, "\" %d\n", b), head = 14; /* cpu,host=a s=" */
		memcpy(body, "cpu,host=a s=\"", (size_t)head);
		memset(body + head, '0', (size_t)(1000 - head - tail));
		snprintf(body + 1000 - tail, (size_t)tail + 1, "\" %d\n", b);
		assert_int_equal(strlen(body), 1000);
		rbuf_append(&want, body, strlen(body));
		append(f, body);
	}
	uint64_t t0 = uv_hrtime();
	start(f);
	assert_true(run_until(f, drained, 10000));
	uint64_t ms = (uv_hrtime() - t0) / 1000000;
	assert_true(ms >= 1700);
	assert_int_equal(f->be.posts, 20);
	assert_int_equal(f->be.stream.len, want.len);
	assert_memory_equal(f->be.stream.data, want.data, want.len);
	rbuf_release(&want);
}

/* A reload that raises max_rate while a write waits for tokens: the
 * worker is not restarted (its counters go on), and the write goes at
 * once, nothing sent twice. */
static void test_rate_raised_by_reload(void **state)
{
	struct fixture *f = *state;
	struct set *s = xcalloc(1, sizeof(*s));
	struct rbuf want = RBUF_INIT;
	char err[200];
	int next = 0;
	the_set = s;
	s->f = f;
	f->cfg.batch_max_lines = 1000;
	s->b[0] = f->cfg;
	s->b[0].max_rate = 100; /* 1 000 points wait 10 s */
	s->b[0].rate_burst_ms = 1000;
	s->b[1] = s->b[0];
	s->b[1].max_rate = 1000000;
	for (int i = 0; i < 2; i++) {
		s->cfg[i].backends = &s->b[i];
		s->cfg[i].nbackends = 1;
	}
	assert_int_equal(backends_init(&s->bs, &f->loop, f->wal), 0);
	assert_int_equal(backends_open(&s->bs, &s->cfg[0], s->ids, err, sizeof(err)), 0);
	append_points(f, 5, 1000, &next, &want);
	backends_apply(&s->bs, &s->cfg[0], s->ids);
	f->w = backends_worker_mut(&s->bs, s->ids[0]);
	assert_true(run_until(f, throttled_now, 5000));
	struct replay_worker *before = f->w;
	assert_int_equal(view(f).stats.delivered_points, 1000);

	struct rbuf out = RBUF_INIT;
	backends_metrics(&s->bs, &s->cfg[0], s->ids, &out);
	assert_int_equal(sample(rbuf_cstr(&out), "relayd_backend_max_rate_points_per_second{backend=\"b\"}"), 100);
	assert_int_equal(sample(rbuf_cstr(&out), "relayd_backend_max_rate_bytes_per_second{backend=\"b\"}"), 0);
	assert_non_null(strstr(rbuf_cstr(&out), "\nrelayd_backend_throttled_seconds_total{backend=\"b\"} "));

	uint64_t t0 = uv_hrtime();
	backends_apply(&s->bs, &s->cfg[1], s->ids);
	assert_ptr_equal(backends_worker_mut(&s->bs, s->ids[0]), before); /* not restarted */
	assert_true(run_until(f, drained, 3000));
	assert_true((uv_hrtime() - t0) / 1000000 < 2000);
	struct replay_view v = view(f);
	assert_int_equal(v.stats.delivered_points, 5000); /* one worker all along */
	assert_int_equal(v.max_rate, 1000000);
	assert_false(v.throttled);
	assert_true(v.stats.throttled_ms > 0);
	assert_int_equal(f->be.posts, 5);
	assert_int_equal(f->be.stream.len, want.len);
	assert_memory_equal(f->be.stream.data, want.data, want.len);

	rbuf_reset(&out);
	backends_metrics(&s->bs, &s->cfg[1], s->ids, &out);
	assert_int_equal(sample(rbuf_cstr(&out), "relayd_backend_max_rate_points_per_second{backend=\"b\"}"), 1000000);
	rbuf_release(&out);
	rbuf_release(&want);

	f->w = NULL; /* the set's */
	backends_close(&s->bs, set_closed_cb);
	assert_true(run_until(f, set_closed, 5000));
	free(s);
	the_set = NULL;
}

int main(void)
{
	/* What the worker logs (retries, holds, dead letters) is expected
	 * here: only errors are shown. */
	relay_log_set_level(RELAY_LOG_ERROR);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_delivered, setup, teardown),
		cmocka_unit_test_setup_teardown(test_retry_then_delivered, setup, teardown),
		cmocka_unit_test_setup_teardown(test_retry_reasons_counted, setup, teardown),
		cmocka_unit_test_setup_teardown(test_connect_refused_counted, setup, teardown),
		cmocka_unit_test_setup_teardown(test_backends_metrics, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dead_letter_isolated, setup, teardown),
		cmocka_unit_test_setup_teardown(test_too_large_split, setup, teardown),
		cmocka_unit_test_setup_teardown(test_split_with_a_dead_piece_counts_what_was_delivered, setup, teardown),
		cmocka_unit_test_setup_teardown(test_database_not_found_holds_only_itself, setup, teardown),
		cmocka_unit_test_setup_teardown(test_create_database_statement_releases, setup, teardown),
		cmocka_unit_test_setup_teardown(test_held_then_dead_letter_policy, setup, teardown),
		cmocka_unit_test_setup_teardown(test_held_then_create_policy, setup, teardown),
		cmocka_unit_test_setup_teardown(test_statement_barrier, setup, teardown),
		cmocka_unit_test_setup_teardown(test_statement_outcomes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_statement_database_not_found, setup, teardown),
		cmocka_unit_test_setup_teardown(test_created_databases_wake, setup, teardown),
		cmocka_unit_test_setup_teardown(test_held_delivery_counted_once, setup, teardown),
		cmocka_unit_test_setup_teardown(test_hold_retry_keeps_database_held, setup, teardown),
		cmocka_unit_test_setup_teardown(test_held_list_unreadable_at_start, setup, teardown),
		cmocka_unit_test_setup_teardown(test_held_list_read_again, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rate_limit_paces, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rate_limit_bytes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rate_raised_by_reload, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
