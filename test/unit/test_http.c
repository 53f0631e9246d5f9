/*
 * test_http: the front door in-process. The outcome table (commit result ->
 * HTTP status) row by row, then a real server on a loopback port with a
 * real queue and group commit: a client thread with blocking sockets sends
 * pipelined, chunked, oversized and malformed requests; the loop runs in
 * the test thread; the answers and the queue are checked afterwards.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "relay/base/config.h"
#include "relay/door/http_server.h"
#include "relay/net/tls.h"
#include "relay/door/ingest.h"
#include "relay/base/util.h"
#include "wal/wal.h"

static void test_outcome_table(void **state)
{
	(void)state;
	static const struct {
		int rc, result, status;
		int retry;
		const char *substr;
	} t[] = {
		{ 0, 0, 204, 0, "" },
		{ 0, WAL_ELIMIT, 503, 1, "queue for backend 'b1' is full (max_size 1GB): write refused" },
		{ 0, WAL_EAGE, 503, 1, "older than its max_age (90m): write refused" },
		{ WAL_EFULL, 0, 503, 1, "storage is full" },
		{ -5 /* -EIO */, 0, 503, 1, "cannot commit" },
		{ WAL_ECORRUPT, 0, 503, 1, "corrupt" },
		/* the queue refused this batch alone: no retry will help */
		{ 0, WAL_ETOOBIG, 413, 0, "too large" },
	};
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		char msg[400];
		uint64_t ra;
		int st = http_write_outcome(t[i].rc, t[i].result, "b1", "1GB", "90m", 7, msg, sizeof(msg), &ra);
		assert_int_equal(st, t[i].status);
		assert_int_equal(ra, t[i].retry ? 7 : 0);
		assert_non_null(strstr(msg, t[i].substr));
	}
}

struct fixture {
	char dir[128];
	struct relay_config cfg;
	struct wal *wal;
	struct ingest ing;
	struct http_server *srv;
	uv_loop_t loop;
	uv_async_t stop;
	int port;
	char results[16][32768];
	int nresults;
	int id;
	int backend_fd; /* test_monitoring's query backend: a listening socket */
	int backend_port;
};

static int connect_to(int port)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		close(fd);
		return -1;
	}
	struct timeval tv = { 5, 0 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return fd;
}

/* Send req, then read until n responses' worth of "HTTP/1.1 " lines and
 * their bodies arrived or the peer closed. */
static void exchange(struct fixture *f, const char *req, size_t len, int nresp)
{
	char *out = f->results[f->nresults++];
	size_t used = 0, cap = sizeof(f->results[0]);
	int fd = connect_to(f->port);
	if (fd < 0) {
		snprintf(out, cap, "connect failed");
		return;
	}
	if (send(fd, req, len, MSG_NOSIGNAL) < 0) {
		/* The server may refuse early (413): still read the answer. */
	}
	for (;;) {
		ssize_t n = recv(fd, out + used, cap - 1 - used, 0);
		if (n <= 0)
			break;
		used += (size_t)n;
		out[used] = '\0';
		int seen = 0;
		for (const char *p = out; (p = strstr(p, "HTTP/1.1 ")); p++)
			seen++;
		/* all status lines in, and the last message complete */
		if (seen >= nresp) {
			const char *last = out;
			for (const char *p = out; (p = strstr(p, "HTTP/1.1 ")); p++)
				last = p;
			const char *end = strstr(last, "\r\n\r\n");
			const char *cl = strstr(last, "Content-Length: ");
			if (end && (!cl || (size_t)(out + used - (end + 4)) >= (size_t)atoi(cl + 16)))
				break;
		}
	}
	out[used] = '\0';
	close(fd);
}

static void *client(void *arg)
{
	struct fixture *f = arg;
	/* 0: three pipelined requests in one write, answered in order */
	static const char pipe3[] =
		"POST /write?db=d1 HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\ncpu v=1 1\n"
		"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n"
		"POST /write?db=d1&precision=s HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\ncpu v=2 2\n";
	exchange(f, pipe3, sizeof(pipe3) - 1, 3);
	/* 1: chunked body */
	static const char chunked[] =
		"POST /write?db=d2 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
		"6\r\ncpu v=\r\n4\r\n3 3\n\r\n0\r\n\r\n";
	exchange(f, chunked, sizeof(chunked) - 1, 1);
	/* 2: announced body over the limit: 413 before the body is read */
	static const char big[] = "POST /write?db=d1 HTTP/1.1\r\nHost: x\r\nContent-Length: 999999\r\n\r\n";
	exchange(f, big, sizeof(big) - 1, 1);
	/* 3: header over the limit */
	char hdr[6000];
	int n = snprintf(hdr, sizeof(hdr), "GET /ping HTTP/1.1\r\nX-Big: ");
	memset(hdr + n, 'a', 4500);
	n += 4500;
	n += snprintf(hdr + n, sizeof(hdr) - (size_t)n, "\r\n\r\n");
	exchange(f, hdr, (size_t)n, 1);
	/* 4: smuggling: Content-Length and Transfer-Encoding together */
	static const char smuggle[] =
		"POST /write?db=d1 HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
	exchange(f, smuggle, sizeof(smuggle) - 1, 1);
	/* 5: a bad line: 400 naming line 2; nothing queued */
	static const char bad[] = "POST /write?db=d1 HTTP/1.1\r\nHost: x\r\nContent-Length: 15\r\n\r\ncpu v=1 1\ncpu \n";
	exchange(f, bad, sizeof(bad) - 1, 1);
	/* 6: unknown path, and a GET on /write */
	static const char nf[] = "GET /nope HTTP/1.1\r\nHost: x\r\n\r\nGET /write?db=x HTTP/1.1\r\nHost: x\r\n\r\n";
	exchange(f, nf, sizeof(nf) - 1, 2);
	/* 7: HTTP/1.0 without keep-alive gets its answer and a close */
	static const char h10[] = "GET /ping HTTP/1.0\r\n\r\n";
	exchange(f, h10, sizeof(h10) - 1, 1);
	/* 8: bad precision, missing db */
	static const char q[] = "POST /write?db=a&precision=xs HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
				"POST /write HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n";
	exchange(f, q, sizeof(q) - 1, 2);
	/* 9: /query: a state change is refused, in the URL ... */
	static const char drop[] = "GET /query?q=DROP%20DATABASE%20x HTTP/1.1\r\nHost: x\r\n\r\n";
	exchange(f, drop, sizeof(drop) - 1, 1);
	/* 10: ... and in a form body (its db wins over the URL's, as Go's FormValue reads them) */
	static const char form[] = "POST /query?db=SHOW HTTP/1.1\r\nHost: x\r\n"
				   "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 21\r\n\r\n"
				   "q=DELETE+FROM+%22m%22";
	exchange(f, form, sizeof(form) - 1, 1);
	/* 11: CREATE DATABASE from a form is queued and answered as InfluxDB does */
	static const char create[] = "POST /query HTTP/1.1\r\nHost: x\r\n"
				     "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 32\r\n\r\n"
				     "q=CREATE+DATABASE+%22n%22&db=d9&";
	exchange(f, create, sizeof(create) - 1, 1);
	/* 12: a read with no query backend; a mixed query; HEAD */
	static const char rd[] = "GET /query?q=SHOW+DATABASES HTTP/1.1\r\nHost: x\r\n\r\n"
				 "GET /query?q=CREATE+DATABASE+a%3BSELECT+1 HTTP/1.1\r\nHost: x\r\n\r\n"
				 "HEAD /query?q=SHOW+DATABASES HTTP/1.1\r\nHost: x\r\n\r\n";
	exchange(f, rd, sizeof(rd) - 1, 3);
	/* 13: 70 reads go to a backend; 69 reads and a DROP are refused
	 * (relayd looks at 64 statements) */
	char many[4096];
	int m = snprintf(many, sizeof(many), "GET /query?q=");
	for (int i = 0; i < 70; i++)
		m += snprintf(many + m, sizeof(many) - (size_t)m, "%s", "SHOW+DATABASES%3B");
	m += snprintf(many + m, sizeof(many) - (size_t)m, " HTTP/1.1\r\nHost: x\r\n\r\nGET /query?q=");
	for (int i = 0; i < 69; i++)
		m += snprintf(many + m, sizeof(many) - (size_t)m, "%s", "SHOW+DATABASES%3B");
	m += snprintf(many + m, sizeof(many) - (size_t)m, "DROP+DATABASE+x HTTP/1.1\r\nHost: x\r\n\r\n");
	exchange(f, many, (size_t)m, 2);
	/* 14: a refused state change with a control byte in db is answered
	 * at once, and the connection goes on */
	static const char ctl[] = "GET /query?q=DROP+SERIES+FROM+m&db=%01 HTTP/1.1\r\nHost: x\r\n\r\n"
				  "GET /ping HTTP/1.1\r\nHost: x\r\n\r\n";
	exchange(f, ctl, sizeof(ctl) - 1, 2);
	/* 15: no handler for /metrics nor /health/backends/NAME: 404 */
	static const char nomon[] = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
				    "GET /health/backends/b HTTP/1.1\r\nHost: x\r\n\r\n";
	exchange(f, nomon, sizeof(nomon) - 1, 2);
	uv_async_send(&f->stop);
	return NULL;
}

static void on_closed(void *arg)
{
	struct fixture *f = arg;
	ingest_close(&f->ing, NULL);
}

static void stop_cb(uv_async_t *a)
{
	struct fixture *f = a->data;
	uv_close((uv_handle_t *)a, NULL);
	http_server_close(f->srv, on_closed, f);
}

static void test_server(void **state)
{
	(void)state;
	struct fixture *f = calloc(1, sizeof(*f));
	char yaml[512], err[512];
	snprintf(f->dir, sizeof(f->dir), "/tmp/test_http.XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	int n = snprintf(yaml, sizeof(yaml),
			 "data_dir: %s/q\nlisten:\n  http: 127.0.0.1:1\nhttp:\n  max_body_size: 1000\n"
			 "  max_header_size: 4KiB\nbackends:\n  - name: b\n    url: http://127.0.0.1:9\n",
			 f->dir);
	assert_int_equal(config_load_buffer("t.yaml", yaml, (size_t)n, &f->cfg, err, sizeof(err)), 0);
	f->cfg.listen_http_port = 0; /* any free port */
	struct wal_options o = { 0, 0 };
	assert_int_equal(wal_open(f->cfg.data_dir, &o, &f->wal), 0);
	int id;
	assert_int_equal(wal_backend_open(f->wal, "b", &id), 0);
	assert_int_equal(uv_loop_init(&f->loop), 0);
	assert_int_equal(ingest_init(&f->ing, &f->loop, f->wal, 1ULL << id, 64), 0);
	assert_int_equal(http_server_start(&f->loop, &f->cfg, &f->ing, &f->srv, err, sizeof(err)), 0);
	f->port = http_server_port(f->srv);
	uv_async_init(&f->loop, &f->stop, stop_cb);
	f->stop.data = f;
	pthread_t th;
	pthread_create(&th, NULL, client, f);
	uv_run(&f->loop, UV_RUN_DEFAULT);
	pthread_join(th, NULL);
	assert_int_equal(uv_loop_close(&f->loop), 0);

	const char *r = f->results[0];
	const char *a = strstr(r, "HTTP/1.1 204"), *b = a ? strstr(a + 1, "HTTP/1.1 204") : NULL;
	const char *c = b ? strstr(b + 1, "HTTP/1.1 204") : NULL;
	if (!c)
		fail_msg("pipelined: %s", r);
	assert_non_null(strstr(f->results[1], "HTTP/1.1 204"));
	if (!strstr(f->results[2], "HTTP/1.1 413"))
		fail_msg("413: %s", f->results[2]);
	assert_non_null(strstr(f->results[2], "Connection: close"));
	assert_non_null(strstr(f->results[3], "HTTP/1.1 431"));
	assert_non_null(strstr(f->results[4], "HTTP/1.1 400"));
	assert_non_null(strstr(f->results[5], "HTTP/1.1 400"));
	assert_non_null(strstr(f->results[5], "line 2"));
	assert_non_null(strstr(f->results[6], "HTTP/1.1 404"));
	assert_non_null(strstr(f->results[6], "HTTP/1.1 405"));
	assert_non_null(strstr(f->results[7], "HTTP/1.1 204"));
	assert_non_null(strstr(f->results[8], "invalid precision"));
	assert_non_null(strstr(f->results[8], "database is required"));
	if (!strstr(f->results[9], "HTTP/1.1 400") || !strstr(f->results[9], "X-Influxdb-Error: DROP DATABASE is refused"))
		fail_msg("drop: %s", f->results[9]);
	if (!strstr(f->results[10], "HTTP/1.1 400") || !strstr(f->results[10], "DELETE FROM is refused"))
		fail_msg("form: %s", f->results[10]);
	if (!strstr(f->results[11], "HTTP/1.1 200") || !strstr(f->results[11], "{\"results\":[{\"statement_id\":0}]}"))
		fail_msg("create: %s", f->results[11]);
	assert_non_null(strstr(f->results[11], "X-Relayd-Version: "));
	if (!strstr(f->results[12], "HTTP/1.1 503") || !strstr(f->results[12], "no query backend configured") ||
	    !strstr(f->results[12], "separate queries") || !strstr(f->results[12], "Allow: GET, POST"))
		fail_msg("reads: %s", f->results[12]);
	if (!strstr(f->results[13], "HTTP/1.1 503") || !strstr(f->results[13], "has 70 statements and not only reads"))
		fail_msg("many: %s", f->results[13]);
	if (!strstr(f->results[14], "HTTP/1.1 400") || !strstr(f->results[14], "HTTP/1.1 204"))
		fail_msg("control: %s", f->results[14]);
	const char *nf1 = strstr(f->results[15], "HTTP/1.1 404");
	if (!nf1 || !strstr(nf1 + 1, "HTTP/1.1 404"))
		fail_msg("no monitoring handlers: %s", f->results[15]);

	/* exactly the three good writes are queued, in order */
	struct wal_batch out[8];
	size_t cnt;
	assert_int_equal(wal_read(f->wal, id, 0, 8, 1 << 20, out, &cnt), 0);
	assert_int_equal(cnt, 4);
	assert_string_equal(out[0].body, "cpu v=1 1\n");
	assert_string_equal(out[1].body, "cpu v=2 2\n");
	assert_string_equal(out[1].db, "d1");
	assert_int_equal(out[1].precision, 3);
	assert_string_equal(out[2].body, "cpu v=3 3\n");
	assert_string_equal(out[2].db, "d2");
	/* the statement; lines 0; no db (CREATE names its own database: the
	 * query's db=d9 must not make it wait behind d9's held writes) */
	assert_string_equal(out[3].body, "CREATE DATABASE \"n\"\n");
	assert_string_equal(out[3].db, "");
	assert_int_equal(out[3].lines, 0);
	for (size_t i = 0; i < cnt; i++)
		wal_batch_release(&out[i]);
	assert_true(f->ing.stats.commits >= 1);
	wal_close(f->wal);
	config_release(&f->cfg);
	char cmd[200];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
	assert_int_equal(system(cmd), 0);
	free(f);
}

/*---- /metrics and /health/backends/NAME ----*/

/* /metrics: the door's families, as the program's handler writes them. */
static int metrics_fn(struct http_server *s, struct rbuf *out, void *arg)
{
	(void)arg;
	http_server_metrics(s, NULL, out);
	return 200;
}

/* /health/backends/NAME: "b" is caught up, any other name unknown; the
 * name "full" (a hook of this test, run on the loop thread between
 * commits) sets the queue's byte limit to 1 so that the next write is
 * refused. */
static int backend_fn(struct http_server *s, const char *name, int64_t max_lag_ms, struct rbuf *out, void *arg)
{
	struct fixture *f = arg;
	(void)s;
	if (strcmp(name, "full") == 0) {
		wal_backend_set_limits(f->wal, f->id, 1, 0);
		rbuf_appendf(out, "limited");
		return 200;
	}
	if (strcmp(name, "b") != 0) {
		rbuf_appendf(out, "unknown backend '%s'", name);
		return 404;
	}
	rbuf_appendf(out, "caught up (max_lag %lld)", (long long)max_lag_ms);
	return 200;
}

/* The query backend: one answer of 14 bytes to the first request. */
static void *backend_thread(void *arg)
{
	struct fixture *f = arg;
	int fd = accept(f->backend_fd, NULL, NULL);
	char buf[4096];
	size_t used = 0;
	while (fd >= 0 && used < sizeof(buf) - 1) {
		ssize_t n = recv(fd, buf + used, sizeof(buf) - 1 - used, 0);
		if (n <= 0)
			break;
		used += (size_t)n;
		buf[used] = '\0';
		if (strstr(buf, "\r\n\r\n")) {
			static const char ans[] = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
						  "Content-Length: 14\r\n\r\n{\"results\":[]}";
			if (send(fd, ans, sizeof(ans) - 1, MSG_NOSIGNAL) < 0)
				break;
			break;
		}
	}
	if (fd >= 0)
		close(fd);
	return NULL;
}

/* Backend b, up but 10 s behind (so the query goes to it, marked behind);
 * none for a query of the database "none". */
static size_t targets_fn(void *arg, const char *db, struct http_query_target *out, size_t max)
{
	struct fixture *f = arg;
	if ((db && strcmp(db, "none") == 0) || max < 1)
		return 0;
	memset(out, 0, sizeof(*out));
	out->name = "b";
	out->host = "127.0.0.1";
	out->port = (uint16_t)f->backend_port;
	out->path_prefix = "";
	out->connect_timeout_ms = 2000;
	out->up = 1;
	out->oldest_pending_ns = now_realtime_ns() - 10000000000LL;
	return 1;
}

static int health_fn(struct http_server *s, struct rbuf *out, void *arg)
{
	(void)s;
	(void)arg;
	rbuf_appendf(out, "{\"status\":\"ok\"}");
	return 200;
}

static void *monitoring_client(void *arg)
{
	struct fixture *f = arg;
	static const char *const reqs[][2] = {
		/* 0: /health needs no credentials either */
		{ "GET /ping HTTP/1.1\r\nHost: x\r\n\r\nGET /health HTTP/1.1\r\nHost: x\r\n\r\n", "2" },
		/* 1: no credentials (auth.enabled): 401, no points counted */
		{ "POST /write?db=d1 HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\ncpu v=1 1\n", "1" },
		/* 2: two points, 20 bytes */
		{ "POST /write?db=d1&u=w&p=pw HTTP/1.1\r\nHost: x\r\nContent-Length: 20\r\n\r\ncpu v=1 1\ncpu v=2 2\n", "1" },
		/* 3: a bad line */
		{ "POST /write?db=d1&u=w&p=pw HTTP/1.1\r\nHost: x\r\nContent-Length: 15\r\n\r\ncpu v=1 1\ncpu \n", "1" },
		/* 4: max_lag given and not; no credentials needed */
		{ "GET /health/backends/b?max_lag=2s HTTP/1.1\r\nHost: x\r\n\r\n"
		  "GET /health/backends/b HTTP/1.1\r\nHost: x\r\n\r\n", "2" },
		/* 5: the name is percent-decoded */
		{ "GET /health/backends/x%2Dy HTTP/1.1\r\nHost: x\r\n\r\n", "1" },
		/* 6: a bad max_lag, a control character in the name */
		{ "GET /health/backends/b?max_lag=soon HTTP/1.1\r\nHost: x\r\n\r\n"
		  "GET /health/backends/b%0A HTTP/1.1\r\nHost: x\r\n\r\n", "2" },
		/* 7: HEAD: the head only (the ping after it shows where it ends) */
		{ "HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\nGET /ping HTTP/1.1\r\nHost: x\r\n\r\n", "2" },
		/* 8 */
		{ "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", "1" },
		/* 9: a read with no query backend: 503; one passed through */
		{ "GET /query?q=SHOW+DATABASES&db=none&u=w&p=pw HTTP/1.1\r\nHost: x\r\n\r\n"
		  "GET /query?q=SHOW+DATABASES&u=w&p=pw HTTP/1.1\r\nHost: x\r\n\r\n", "2" },
		/* 10: the queue's limit refuses the next write (its 2 points) */
		{ "GET /health/backends/full HTTP/1.1\r\nHost: x\r\n\r\n"
		  "POST /write?db=d1&u=w&p=pw HTTP/1.1\r\nHost: x\r\nContent-Length: 20\r\n\r\ncpu v=1 1\ncpu v=2 2\n", "2" },
		/* 11: what all that counted */
		{ "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", "1" },
	};
	for (size_t i = 0; i < sizeof(reqs) / sizeof(reqs[0]); i++)
		exchange(f, reqs[i][0], strlen(reqs[i][0]), atoi(reqs[i][1]));
	uv_async_send(&f->stop);
	return NULL;
}

/* body holds line as a whole line. */
static void expect_line(const char *body, const char *line)
{
	char want[256];
	snprintf(want, sizeof(want), "\n%s\n", line);
	if (!strstr(body, want))
		fail_msg("no line '%s' in:\n%s", line, body);
}

static void test_monitoring(void **state)
{
	(void)state;
	struct fixture *f = calloc(1, sizeof(*f));
	char yaml[512], err[512];
	snprintf(f->dir, sizeof(f->dir), "/tmp/test_http.XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	int n = snprintf(yaml, sizeof(yaml),
			 "data_dir: %s/q\nlisten:\n  http: 127.0.0.1:1\nhttp:\n  max_body_size: 1000\n"
			 "auth:\n  enabled: true\n  users:\n    - {name: w, password: pw}\n"
			 "backends:\n  - name: b\n    url: http://127.0.0.1:9\n",
			 f->dir);
	assert_int_equal(config_load_buffer("t.yaml", yaml, (size_t)n, &f->cfg, err, sizeof(err)), 0);
	f->cfg.listen_http_port = 0;
	struct wal_options o = { 0, 0 };
	assert_int_equal(wal_open(f->cfg.data_dir, &o, &f->wal), 0);
	assert_int_equal(wal_backend_open(f->wal, "b", &f->id), 0);
	assert_int_equal(uv_loop_init(&f->loop), 0);
	assert_int_equal(ingest_init(&f->ing, &f->loop, f->wal, 1ULL << f->id, 64), 0);
	f->ing.names[f->id] = "b";
	assert_int_equal(http_server_start(&f->loop, &f->cfg, &f->ing, &f->srv, err, sizeof(err)), 0);
	http_server_set_health(f->srv, health_fn, f);
	http_server_set_metrics(f->srv, metrics_fn, f);
	http_server_set_backend_health(f->srv, backend_fn, f);
	http_server_set_query_targets(f->srv, targets_fn, f);
	f->backend_fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in ba = { .sin_family = AF_INET };
	ba.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	socklen_t bl = sizeof(ba);
	assert_int_equal(bind(f->backend_fd, (struct sockaddr *)&ba, sizeof(ba)), 0);
	assert_int_equal(listen(f->backend_fd, 4), 0);
	assert_int_equal(getsockname(f->backend_fd, (struct sockaddr *)&ba, &bl), 0);
	f->backend_port = ntohs(ba.sin_port);
	pthread_t bth;
	pthread_create(&bth, NULL, backend_thread, f);
	f->port = http_server_port(f->srv);
	uv_async_init(&f->loop, &f->stop, stop_cb);
	f->stop.data = f;
	pthread_t th;
	pthread_create(&th, NULL, monitoring_client, f);
	uv_run(&f->loop, UV_RUN_DEFAULT);
	pthread_join(th, NULL);
	pthread_join(bth, NULL);
	close(f->backend_fd);
	assert_int_equal(uv_loop_close(&f->loop), 0);

	char (*r)[sizeof(f->results[0])] = f->results;
	if (!strstr(r[0], "HTTP/1.1 204") || !strstr(r[0], "HTTP/1.1 200") || !strstr(r[0], "{\"status\":\"ok\"}"))
		fail_msg("ping, health: %s", r[0]);
	assert_non_null(strstr(r[1], "HTTP/1.1 401"));
	assert_non_null(strstr(r[2], "HTTP/1.1 204"));
	assert_non_null(strstr(r[3], "HTTP/1.1 400"));
	if (!strstr(r[4], "HTTP/1.1 200") || !strstr(r[4], "Content-Type: text/plain; charset=utf-8\r\n") ||
	    !strstr(r[4], "\r\n\r\ncaught up (max_lag 2000)\n") || !strstr(r[4], "\r\n\r\ncaught up (max_lag -1)\n"))
		fail_msg("backend health: %s", r[4]);
	if (!strstr(r[5], "HTTP/1.1 404") || !strstr(r[5], "unknown backend 'x-y'\n"))
		fail_msg("unknown backend: %s", r[5]);
	if (!strstr(r[6], "HTTP/1.1 400") || !strstr(r[6], "invalid max_lag 'soon'") ||
	    !strstr(r[6], "malformed backend name"))
		fail_msg("bad max_lag or name: %s", r[6]);
	if (!strstr(r[7], "HTTP/1.1 200") || !strstr(r[7], "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n") ||
	    strstr(r[7], "# HELP") || !strstr(r[7], "HTTP/1.1 204"))
		fail_msg("HEAD /metrics: %s", r[7]);
	if (!strstr(r[8], "HTTP/1.1 405") || !strstr(r[8], "Allow: GET, HEAD"))
		fail_msg("POST /metrics: %s", r[8]);
	if (!strstr(r[9], "HTTP/1.1 503") || !strstr(r[9], "HTTP/1.1 200") || !strstr(r[9], "X-Relayd-Behind: ") ||
	    !strstr(r[9], "{\"results\":[]}"))
		fail_msg("queries: %s", r[9]);
	if (!strstr(r[10], "HTTP/1.1 200") || !strstr(r[10], "HTTP/1.1 503") || !strstr(r[10], "is full"))
		fail_msg("queue full: %s", r[10]);

	const char *m = r[11];
	if (!strstr(m, "HTTP/1.1 200") || !strstr(m, "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"))
		fail_msg("GET /metrics: %s", m);
	static const char *const lines[] = {
		"relayd_http_requests_total{endpoint=\"ping\",code=\"204\"} 2",
		"relayd_http_requests_total{endpoint=\"write\",code=\"401\"} 1",
		"relayd_http_requests_total{endpoint=\"write\",code=\"204\"} 1",
		"relayd_http_requests_total{endpoint=\"write\",code=\"400\"} 1",
		"relayd_http_requests_total{endpoint=\"write\",code=\"503\"} 1",
		"relayd_http_requests_total{endpoint=\"health\",code=\"200\"} 4",
		"relayd_http_requests_total{endpoint=\"health\",code=\"404\"} 1",
		"relayd_http_requests_total{endpoint=\"health\",code=\"400\"} 2",
		"relayd_http_requests_total{endpoint=\"metrics\",code=\"200\"} 1",
		"relayd_http_requests_total{endpoint=\"metrics\",code=\"405\"} 1",
		"relayd_http_requests_total{endpoint=\"query\",code=\"503\"} 1",
		"relayd_http_requests_total{endpoint=\"query\",code=\"200\"} 1",
		"relayd_http_connections_accepted_total 12",
		"relayd_http_connections_refused_total 0",
		"relayd_http_buffered_limit_bytes 536870912",
		"relayd_write_requests_refused_total{reason=\"bad_request\"} 1",
		"relayd_write_requests_refused_total{reason=\"unauthorized\"} 1",
		"relayd_write_requests_refused_total{reason=\"too_large\"} 0",
		"relayd_write_requests_refused_total{reason=\"timeout\"} 0",
		"relayd_write_requests_refused_total{reason=\"queue_full\"} 1",
		"relayd_write_requests_refused_total{reason=\"overloaded\"} 0",
		"relayd_write_requests_refused_total{reason=\"storage_error\"} 0",
		"relayd_write_requests_refused_total{reason=\"shutting_down\"} 0",
		"relayd_points_refused_total{reason=\"queue_full\"} 2",
		"relayd_points_refused_total{reason=\"unauthorized\"} 0",
		"relayd_points_accepted_total{source=\"http\"} 2",
		"relayd_points_accepted_total{source=\"udp\"} 0",
		"relayd_bytes_accepted_total{source=\"http\"} 20",
		"relayd_bytes_accepted_total{source=\"udp\"} 0",
		"relayd_ingest_commits_total 2",
		"relayd_ingest_commit_errors_total 0",
		"relayd_ingest_batches_committed_total 1",
		"relayd_ingest_batches_refused_total 1",
		"relayd_backend_refused_batches_total{backend=\"b\",limit=\"max_size\"} 1",
		"relayd_backend_refused_batches_total{backend=\"b\",limit=\"max_age\"} 0",
		"relayd_ingest_commit_group_size_count 2",
		"relayd_ingest_commit_group_size_bucket{le=\"1\"} 2",
		"relayd_ingest_commit_duration_seconds_count 2",
		"# TYPE relayd_udp_datagrams_total counter",
		"relayd_query_requests_total 2",
		"relayd_query_proxied_total{backend=\"b\"} 1",
		"relayd_query_behind_total 1",
		"relayd_query_statements_queued_total 0",
		"relayd_query_errors_total 1",
		"relayd_query_response_bytes_total 14",
		"relayd_query_duration_seconds_count 2",
	};
	for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++)
		expect_line(m, lines[i]);
	/* Each family once. */
	for (const char *p = m; (p = strstr(p, "\n# TYPE ")); p++) {
		char name[128];
		assert_int_equal(sscanf(p, "\n# TYPE %127s", name), 1);
		char again[160];
		snprintf(again, sizeof(again), "\n# TYPE %s ", name);
		if (strstr(p + 1, again))
			fail_msg("family %s twice", name);
	}
	wal_close(f->wal);
	config_release(&f->cfg);
	char cmd[200];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
	assert_int_equal(system(cmd), 0);
	free(f);
}

/*---- the TLS listener ----*/

/* A self-signed P-256 certificate for CN cn (and IP 127.0.0.1) into
 * dir/name.pem and dir/name.key. */
static void make_cert(const char *dir, const char *name, const char *cn)
{
	EVP_PKEY *key = EVP_EC_gen("P-256");
	assert_non_null(key);
	X509 *x = X509_new();
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 7);
	X509_gmtime_adj(X509_getm_notBefore(x), -3600);
	X509_gmtime_adj(X509_getm_notAfter(x), 86400L * 365);
	X509_set_pubkey(x, key);
	X509_NAME *nm = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(nm, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
	X509_set_issuer_name(x, nm);
	X509V3_CTX v3;
	X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
	X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, "IP:127.0.0.1");
	X509_add_ext(x, e, -1);
	X509_EXTENSION_free(e);
	assert_true(X509_sign(x, key, EVP_sha256()) > 0);
	char path[300];
	snprintf(path, sizeof(path), "%s/%s.pem", dir, name);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	PEM_write_X509(f, x);
	fclose(f);
	snprintf(path, sizeof(path), "%s/%s.key", dir, name);
	f = fopen(path, "w");
	assert_non_null(f);
	PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL);
	fclose(f);
	X509_free(x);
	EVP_PKEY_free(key);
}

struct tls_fixture {
	struct fixture f;
	int tls_port;
	uv_async_t swap;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int swapped;
	char cn[2][64];    /* the certificate's CN before and after the swap */
	char alpn[32];
};

/* Read one answer (head and Content-Length body) from ssl into out. */
static void tls_read_answer(SSL *ssl, char *out, size_t cap)
{
	size_t used = 0;
	out[0] = '\0';
	for (;;) {
		int n = SSL_read(ssl, out + used, (int)(cap - 1 - used));
		if (n <= 0)
			break;
		used += (size_t)n;
		out[used] = '\0';
		const char *end = strstr(out, "\r\n\r\n");
		const char *cl = strstr(out, "Content-Length: ");
		if (end && (!cl || (size_t)(out + used - (end + 4)) >= (size_t)atoi(cl + 16)))
			break;
	}
}

static SSL *tls_open(SSL_CTX *ctx, int port, int *fd)
{
	*fd = connect_to(port);
	if (*fd < 0)
		return NULL;
	SSL *ssl = SSL_new(ctx);
	SSL_set_fd(ssl, *fd);
	if (SSL_connect(ssl) != 1) {
		SSL_free(ssl);
		close(*fd);
		return NULL;
	}
	return ssl;
}

static void peer_cn(SSL *ssl, char *buf, size_t len)
{
	X509 *c = SSL_get1_peer_certificate(ssl);
	buf[0] = '\0';
	if (c)
		X509_NAME_get_text_by_NID(X509_get_subject_name(c), NID_commonName, buf, (int)len);
	X509_free(c);
}

static void *tls_client(void *arg)
{
	struct tls_fixture *t = arg;
	struct fixture *f = &t->f;
	static const char wr[] = "POST /write?db=t HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\ncpu v=1 1\n";
	/* The client checks nothing: the verification is test_net's; here
	 * the certificate's name tells which context answered. */
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	SSL_CTX_set_alpn_protos(ctx, (const unsigned char *)"\x02h2\x08http/1.1", 12);
	int fd;
	/* 0: a write over TLS, on a connection kept open across the swap */
	SSL *ssl = tls_open(ctx, t->tls_port, &fd);
	if (ssl) {
		const unsigned char *p = NULL;
		unsigned n = 0;
		SSL_get0_alpn_selected(ssl, &p, &n);
		snprintf(t->alpn, sizeof(t->alpn), "%.*s", (int)n, p ? (const char *)p : "");
		peer_cn(ssl, t->cn[0], sizeof(t->cn[0]));
		SSL_write(ssl, wr, (int)sizeof(wr) - 1);
		tls_read_answer(ssl, f->results[f->nresults], sizeof(f->results[0]));
	}
	f->nresults++;
	/* 1: plain HTTP to the TLS port */
	static const char plain[] = "GET /ping HTTP/1.1\r\nHost: x\r\n\r\n";
	exchange(f, plain, sizeof(plain) - 1, 1);
	/* the certificate is swapped on the loop */
	uv_async_send(&t->swap);
	pthread_mutex_lock(&t->mu);
	while (!t->swapped)
		pthread_cond_wait(&t->cv, &t->mu);
	pthread_mutex_unlock(&t->mu);
	/* 2: the connection open before the swap still works */
	if (ssl) {
		SSL_write(ssl, wr, (int)sizeof(wr) - 1);
		tls_read_answer(ssl, f->results[f->nresults], sizeof(f->results[0]));
		SSL_shutdown(ssl);
		SSL_free(ssl);
		close(fd);
	}
	f->nresults++;
	/* 3: a new one gets the new certificate */
	ssl = tls_open(ctx, t->tls_port, &fd);
	if (ssl) {
		peer_cn(ssl, t->cn[1], sizeof(t->cn[1]));
		static const char ping[] = "GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
		SSL_write(ssl, ping, (int)sizeof(ping) - 1);
		tls_read_answer(ssl, f->results[f->nresults], sizeof(f->results[0]));
		SSL_free(ssl);
		close(fd);
	}
	f->nresults++;
	SSL_CTX_free(ctx);
	uv_async_send(&f->stop);
	return NULL;
}

static void swap_cb(uv_async_t *a)
{
	struct tls_fixture *t = a->data;
	struct net_tls_ctx *ctx = NULL;
	char path[2][300], err[512];
	snprintf(path[0], sizeof(path[0]), "%s/second.pem", t->f.dir);
	snprintf(path[1], sizeof(path[1]), "%s/second.key", t->f.dir);
	struct net_tls_server_opts o = {path[0], path[1], NULL};
	assert_int_equal(net_tls_server_ctx_new(&o, &ctx, err, sizeof(err)), 0);
	http_server_set_tls(t->f.srv, ctx);
	uv_close((uv_handle_t *)a, NULL);
	pthread_mutex_lock(&t->mu);
	t->swapped = 1;
	pthread_cond_signal(&t->cv);
	pthread_mutex_unlock(&t->mu);
}

static void test_tls_listener(void **state)
{
	(void)state;
	struct tls_fixture *t = calloc(1, sizeof(*t));
	struct fixture *f = &t->f;
	char yaml[1024], err[1024];
	snprintf(f->dir, sizeof(f->dir), "/tmp/test_http.XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	make_cert(f->dir, "first", "first");
	make_cert(f->dir, "second", "second");

	/* A certificate that does not load refuses the start, saying which. */
	int n = snprintf(yaml, sizeof(yaml),
			 "data_dir: %s/q\nlisten:\n  http: off\n  https: 127.0.0.1:1\n"
			 "tls:\n  cert_file: %s/missing.pem\n  key_file: %s/first.key\n"
			 "backends:\n  - name: b\n    url: http://127.0.0.1:9\n",
			 f->dir, f->dir, f->dir);
	assert_int_equal(config_load_buffer("t.yaml", yaml, (size_t)n, &f->cfg, err, sizeof(err)), 0);
	f->cfg.listen_https_port = 0;
	assert_int_equal(uv_loop_init(&f->loop), 0);
	assert_int_not_equal(http_server_start(&f->loop, &f->cfg, NULL, &f->srv, err, sizeof(err)), 0);
	if (!strstr(err, "tls: cannot load certificate") || !strstr(err, "missing.pem"))
		fail_msg("refusal: %s", err);
	assert_null(f->srv);
	config_release(&f->cfg);
	memset(&f->cfg, 0, sizeof(f->cfg));

	n = snprintf(yaml, sizeof(yaml),
		     "data_dir: %s/q\nlisten:\n  http: off\n  https: 127.0.0.1:1\n"
		     "tls:\n  cert_file: %s/first.pem\n  key_file: %s/first.key\n"
		     "backends:\n  - name: b\n    url: http://127.0.0.1:9\n",
		     f->dir, f->dir, f->dir);
	assert_int_equal(config_load_buffer("t.yaml", yaml, (size_t)n, &f->cfg, err, sizeof(err)), 0);
	f->cfg.listen_https_port = 0;
	struct wal_options o = { 0, 0 };
	assert_int_equal(wal_open(f->cfg.data_dir, &o, &f->wal), 0);
	assert_int_equal(wal_backend_open(f->wal, "b", &f->id), 0);
	assert_int_equal(ingest_init(&f->ing, &f->loop, f->wal, 1ULL << f->id, 64), 0);
	if (http_server_start(&f->loop, &f->cfg, &f->ing, &f->srv, err, sizeof(err)) != 0)
		fail_msg("start: %s", err);
	assert_int_equal(http_server_port(f->srv), 0); /* listen.http: off */
	t->tls_port = http_server_tls_port(f->srv);
	assert_true(t->tls_port > 0);
	f->port = t->tls_port;
	uv_async_init(&f->loop, &f->stop, stop_cb);
	f->stop.data = f;
	uv_async_init(&f->loop, &t->swap, swap_cb);
	t->swap.data = t;
	pthread_mutex_init(&t->mu, NULL);
	pthread_cond_init(&t->cv, NULL);
	pthread_t th;
	pthread_create(&th, NULL, tls_client, t);
	uv_run(&f->loop, UV_RUN_DEFAULT);
	pthread_join(th, NULL);
	assert_int_equal(uv_loop_close(&f->loop), 0);

	char (*r)[sizeof(f->results[0])] = f->results;
	assert_string_equal(t->alpn, "http/1.1");
	assert_string_equal(t->cn[0], "first");
	if (!strstr(r[0], "HTTP/1.1 204"))
		fail_msg("write over TLS: %s", r[0]);
	char want[128];
	snprintf(want, sizeof(want), "{\"error\":\"this port speaks HTTPS (TLS): use https://127.0.0.1:%d\"}",
		 t->tls_port);
	if (!strstr(r[1], "HTTP/1.1 400") || !strstr(r[1], want) || !strstr(r[1], "Connection: close"))
		fail_msg("plain HTTP to the TLS port: %s", r[1]);
	if (!strstr(r[2], "HTTP/1.1 204"))
		fail_msg("kept-alive connection across the swap: %s", r[2]);
	assert_string_equal(t->cn[1], "second");
	if (!strstr(r[3], "HTTP/1.1 204"))
		fail_msg("after the swap: %s", r[3]);
	/* both writes over TLS are queued */
	struct wal_batch out[4];
	size_t cnt;
	assert_int_equal(wal_read(f->wal, f->id, 0, 4, 1 << 20, out, &cnt), 0);
	assert_int_equal(cnt, 2);
	for (size_t i = 0; i < cnt; i++) {
		assert_string_equal(out[i].body, "cpu v=1 1\n");
		wal_batch_release(&out[i]);
	}
	pthread_mutex_destroy(&t->mu);
	pthread_cond_destroy(&t->cv);
	wal_close(f->wal);
	config_release(&f->cfg);
	char cmd[200];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
	assert_int_equal(system(cmd), 0);
	free(t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_outcome_table),
		cmocka_unit_test(test_server),
		cmocka_unit_test(test_monitoring),
		cmocka_unit_test(test_tls_listener),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
