/*
 * test_net: the transport layer (relay/net) on a private loop, both ends
 * in this process, with certificates made here (a private CA, server
 * certificates for 127.0.0.1 and localhost, an expired one, one for
 * another name, a client certificate, and a second CA nobody uses):
 * plain and TLS echo (several MiB, with both sides pausing their reads),
 * every verify failure and its message, insecure_skip_verify, mTLS,
 * session resumption, plain HTTP to a TLS port, a refused connect,
 * timeouts, closing in mid-handshake, a context swapped under open
 * connections, and the loading errors of contexts.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <netdb.h>
#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "relay/base/util.h"
#include "relay/net/stream.h"
#include "relay/net/tls.h"

static uv_loop_t loop;
static uv_timer_t tick; /* wakes UV_RUN_ONCE so run_until can give up */
static char dir[256];

/*---- certificates ----*/

static char *path(const char *name)
{
	static char bufs[8][320];
	static int next;
	char *b = bufs[next++ % 8];
	snprintf(b, sizeof(bufs[0]), "%s/%s", dir, name);
	return b;
}

static void add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX v3;
	X509V3_set_ctx_nodb(&v3);
	X509V3_set_ctx(&v3, issuer, x, NULL, NULL, 0);
	X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
	assert_non_null(e);
	assert_int_equal(X509_add_ext(x, e, -1), 1);
	X509_EXTENSION_free(e);
}

/* A certificate for key named cn, signed by ca (NULL: self-signed), valid
 * from now+from_s to now+to_s. */
static X509 *make_cert(EVP_PKEY *key, const char *cn, EVP_PKEY *ca_key, X509 *ca, long from_s, long to_s,
		       const char *san, int is_ca, int client)
{
	static long serial = 1;
	X509 *x = X509_new();
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
	X509_gmtime_adj(X509_getm_notBefore(x), from_s);
	X509_gmtime_adj(X509_getm_notAfter(x), to_s);
	X509_set_pubkey(x, key);
	X509_NAME *nm = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(nm, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
	X509_set_issuer_name(x, ca ? X509_get_subject_name(ca) : nm);
	X509 *issuer = ca ? ca : x;
	add_ext(x, issuer, NID_basic_constraints, is_ca ? "critical,CA:TRUE" : "critical,CA:FALSE");
	add_ext(x, issuer, NID_key_usage, is_ca ? "critical,keyCertSign,cRLSign" : "critical,digitalSignature");
	add_ext(x, issuer, NID_subject_key_identifier, "hash");
	if (!is_ca)
		add_ext(x, issuer, NID_ext_key_usage, client ? "clientAuth" : "serverAuth");
	if (san)
		add_ext(x, issuer, NID_subject_alt_name, san);
	assert_true(X509_sign(x, ca_key ? ca_key : key, EVP_sha256()) > 0);
	return x;
}

static void write_pem(const char *name, X509 *cert, EVP_PKEY *key)
{
	FILE *f = fopen(path(name), "w");
	assert_non_null(f);
	if (cert)
		assert_int_equal(PEM_write_X509(f, cert), 1);
	if (key)
		assert_int_equal(PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL), 1);
	fclose(f);
}

/* A leaf signed by the CA: name.pem and name.key. */
static void make_leaf(const char *name, const char *cn, EVP_PKEY *ca_key, X509 *ca, long from_s, long to_s,
		      const char *san, int client)
{
	char f[64];
	EVP_PKEY *k = EVP_EC_gen("P-256");
	assert_non_null(k);
	X509 *x = make_cert(k, cn, ca_key, ca, from_s, to_s, san, 0, client);
	snprintf(f, sizeof(f), "%s.pem", name);
	write_pem(f, x, NULL);
	snprintf(f, sizeof(f), "%s.key", name);
	write_pem(f, NULL, k);
	X509_free(x);
	EVP_PKEY_free(k);
}

static int setup_certs(void **state)
{
	(void)state;
	const char *tmp = getenv("TMPDIR");
	snprintf(dir, sizeof(dir), "%s/test_net.XXXXXX", tmp && *tmp ? tmp : "/tmp");
	assert_non_null(mkdtemp(dir));
	const long day = 86400;
	EVP_PKEY *ca_key = EVP_EC_gen("P-256"), *other_key = EVP_EC_gen("P-256");
	X509 *ca = make_cert(ca_key, "relayd test CA", NULL, NULL, -day, 30 * day, NULL, 1, 0);
	X509 *other = make_cert(other_key, "some other CA", NULL, NULL, -day, 30 * day, NULL, 1, 0);
	write_pem("ca.pem", ca, NULL);
	write_pem("other_ca.pem", other, NULL);
	make_leaf("server", "localhost", ca_key, ca, -day, 30 * day, "DNS:localhost,IP:127.0.0.1", 0);
	make_leaf("expired", "localhost", ca_key, ca, -10 * day, -day, "DNS:localhost,IP:127.0.0.1", 0);
	make_leaf("wrong", "wrong.example", ca_key, ca, -day, 30 * day, "DNS:wrong.example", 0);
	make_leaf("client", "writer-1", ca_key, ca, -day, 30 * day, NULL, 1);
	make_leaf("stranger", "writer-2", other_key, other, -day, 30 * day, NULL, 1);
	X509_free(ca);
	X509_free(other);
	EVP_PKEY_free(ca_key);
	EVP_PKEY_free(other_key);
	return 0;
}

static int teardown_certs(void **state)
{
	(void)state;
	if (getenv("TEST_NET_KEEP"))
		return 0; /* to look at the certificates */
	const char *names[] = {"ca.pem",    "other_ca.pem", "server.pem", "server.key", "expired.pem",	"expired.key",
			       "wrong.pem", "wrong.key",    "client.pem", "client.key", "stranger.pem", "stranger.key"};
	for (size_t i = 0; i < RELAY_ARRAY_SIZE(names); i++)
		unlink(path(names[i]));
	rmdir(dir);
	return 0;
}

/*---- the loop ----*/

static void tick_cb(uv_timer_t *t)
{
	(void)t;
}

static int setup(void **state)
{
	(void)state;
	assert_int_equal(uv_loop_init(&loop), 0);
	uv_timer_init(&loop, &tick);
	uv_timer_start(&tick, tick_cb, 20, 20);
	return 0;
}

static void run_until(const int *flag)
{
	uint64_t start = uv_now(&loop);
	while (!*flag) {
		uv_run(&loop, UV_RUN_ONCE);
		if (uv_now(&loop) - start > 20000)
			fail_msg("gave up waiting after 20 s");
	}
}

static void count_open(uv_handle_t *h, void *arg)
{
	if (!uv_is_closing(h))
		++*(int *)arg;
}

static int open_handles(void)
{
	int n = 0;
	uv_walk(&loop, count_open, &n);
	return n;
}

/* Every handle closed, every stream freed: the loop closes. A test that
 * failed half-way may leave some open: that is reported, not waited for
 * forever. */
static int teardown(void **state)
{
	(void)state;
	uint64_t start = uv_now(&loop);
	while (open_handles() > 1 && uv_now(&loop) - start < 3000)
		uv_run(&loop, UV_RUN_ONCE);
	uv_close((uv_handle_t *)&tick, NULL);
	uv_run(&loop, UV_RUN_NOWAIT);
	if (uv_loop_close(&loop) != 0)
		fail_msg("the test left handles open");
	return 0;
}

static struct net_tls_ctx *server_ctx(const char *cert, const char *client_ca)
{
	char c[64], k[64], err[512];
	snprintf(c, sizeof(c), "%s.pem", cert);
	snprintf(k, sizeof(k), "%s.key", cert);
	struct net_tls_server_opts o = {path(c), path(k), client_ca ? path(client_ca) : NULL};
	struct net_tls_ctx *ctx;
	if (net_tls_server_ctx_new(&o, &ctx, err, sizeof(err)) < 0)
		fail_msg("%s", err);
	return ctx;
}

static struct net_tls_ctx *client_ctx(const char *ca, const char *cert, int insecure)
{
	char c[64], k[64], err[512];
	struct net_tls_client_opts o = {0};
	o.ca_file = ca ? path(ca) : NULL;
	if (cert) {
		snprintf(c, sizeof(c), "%s.pem", cert);
		snprintf(k, sizeof(k), "%s.key", cert);
		o.cert_file = path(c);
		o.key_file = path(k);
	}
	o.insecure_skip_verify = insecure;
	struct net_tls_ctx *ctx;
	if (net_tls_client_ctx_new(&o, &ctx, err, sizeof(err)) < 0)
		fail_msg("%s", err);
	return ctx;
}

/*---- the server: echo, with backpressure ----*/

#define HIGH (256 * 1024)
#define LOW (64 * 1024)

struct sconn;
struct srv {
	uv_tcp_t listener;
	struct sockaddr_storage addr;
	int port;
	struct net_tls_ctx *ctx;
	uint64_t hs_timeout;
	int greet; /* write a line and shut down at accept, before any handshake */
	int accepted, open, handshakes, pauses, errors;
	int in_handshake_seen;
	struct net_error err;
	char cn[64];
	int cn_len;
	char version[16], alpn[32];
	struct sconn *conns;
	int listener_closed;
};

struct sconn {
	struct srv *srv;
	struct net_stream *s;
	int paused;
	struct sconn *next, *prev;
};

static void sconn_closed(struct net_stream *s)
{
	struct sconn *c = net_stream_data(s);
	struct srv *v = c->srv;
	if (c->prev)
		c->prev->next = c->next;
	else
		v->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	v->open--;
	free(c);
}

static void echo_written(struct net_stream *s, int status, void *arg)
{
	(void)status;
	free(arg);
	struct sconn *c = net_stream_data(s);
	if (c->paused && net_stream_write_queue_size(s) <= LOW) {
		c->paused = 0;
		net_stream_read_start(s);
	}
}

static void echo_read(struct net_stream *s, const char *data, size_t len)
{
	struct sconn *c = net_stream_data(s);
	char *copy = xmalloc(len);
	memcpy(copy, data, len);
	uv_buf_t b = uv_buf_init(copy, (unsigned)len);
	if (net_stream_write(s, &b, 1, echo_written, copy) < 0) {
		free(copy);
		return;
	}
	if (net_stream_write_queue_size(s) > HIGH && !c->paused) {
		/* The client is not reading our echo: stop reading it. */
		c->paused = 1;
		c->srv->pauses++;
		net_stream_read_stop(s);
	}
}

static void echo_eof(struct net_stream *s)
{
	net_stream_close(s, sconn_closed);
}

static void answer_shut(struct net_stream *s, int status, void *arg)
{
	(void)status;
	(void)arg;
	net_stream_close(s, sconn_closed);
}

static void echo_error(struct net_stream *s, const struct net_error *e)
{
	struct sconn *c = net_stream_data(s);
	c->srv->errors++;
	c->srv->err = *e;
	if (e->kind == NET_ERR_PLAIN_HTTP) {
		/* What the door will do: answer in plain HTTP, then close. */
		static char answer[] = "HTTP/1.1 400 Bad Request\r\nContent-Length: 24\r\nConnection: close\r\n\r\n"
				       "this port speaks https\n";
		uv_buf_t b = uv_buf_init(answer, sizeof(answer) - 1);
		assert_int_equal(net_stream_write(s, &b, 1, NULL, NULL), 0);
		assert_int_equal(net_stream_shutdown(s, answer_shut, NULL), 0);
		return;
	}
	net_stream_close(s, sconn_closed);
}

static void echo_handshake(struct net_stream *s)
{
	struct sconn *c = net_stream_data(s);
	c->srv->handshakes++;
	c->srv->cn_len = net_stream_peer_cn(s, c->srv->cn, sizeof(c->srv->cn));
	snprintf(c->srv->version, sizeof(c->srv->version), "%s", net_stream_tls_version(s));
	net_stream_alpn(s, c->srv->alpn, sizeof(c->srv->alpn));
}

static const struct net_stream_callbacks echo_cbs = {echo_read, echo_eof, echo_error, echo_handshake};

static void on_connection(uv_stream_t *ls, int status)
{
	struct srv *v = ls->data;
	assert_int_equal(status, 0);
	struct sconn *c = xcalloc(1, sizeof(*c));
	c->srv = v;
	struct net_stream *s;
	assert_int_equal(net_stream_accept(&loop, ls, v->ctx, v->hs_timeout, &echo_cbs, c, &s), 0);
	c->s = s;
	c->next = v->conns;
	if (v->conns)
		v->conns->prev = c;
	v->conns = c;
	v->accepted++;
	v->open++;
	if (net_stream_in_handshake(s))
		v->in_handshake_seen++;
	assert_int_equal(net_stream_read_start(s), 0);
	if (v->greet) {
		/* As the door's refusal at accept: queued before the handshake,
		 * sent encrypted after it, then close_notify and FIN. */
		static char hello[] = "hello\n";
		uv_buf_t b = uv_buf_init(hello, 6);
		assert_int_equal(net_stream_write(s, &b, 1, NULL, NULL), 0);
		assert_int_equal(net_stream_shutdown(s, answer_shut, NULL), 0);
	}
}

/* Listen on 127.0.0.1 (or on where host resolves first). */
static void srv_start(struct srv *v, struct net_tls_ctx *ctx, const char *host)
{
	memset(v, 0, sizeof(*v));
	v->ctx = ctx;
	struct addrinfo hints, *res = NULL;
	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	assert_int_equal(getaddrinfo(host ? host : "127.0.0.1", "0", &hints, &res), 0);
	uv_tcp_init(&loop, &v->listener);
	v->listener.data = v;
	assert_int_equal(uv_tcp_bind(&v->listener, res->ai_addr, 0), 0);
	freeaddrinfo(res);
	assert_int_equal(uv_listen((uv_stream_t *)&v->listener, 64, on_connection), 0);
	int len = sizeof(v->addr);
	uv_tcp_getsockname(&v->listener, (struct sockaddr *)&v->addr, &len);
	v->port = ntohs(((struct sockaddr_in *)&v->addr)->sin_port); /* same place in sockaddr_in6 */
}

static void listener_closed(uv_handle_t *h)
{
	struct srv *v = h->data;
	v->listener_closed = 1;
}

/* Close what is open and wait until every stream is freed. */
static void srv_stop(struct srv *v)
{
	for (struct sconn *c = v->conns; c; c = c->next)
		net_stream_close(c->s, sconn_closed);
	uv_close((uv_handle_t *)&v->listener, listener_closed);
	run_until(&v->listener_closed);
	while (v->open)
		uv_run(&loop, UV_RUN_ONCE);
	net_tls_ctx_unref(v->ctx);
}

/*---- the client ----*/

static unsigned char *pattern;
#define PATTERN_SIZE (8u * 1024 * 1024)

struct cli {
	struct net_stream *s;
	int done; /* connected or failed */
	int ok;
	int finished; /* everything echoed back, or an error, or the end */
	int closed;
	struct net_error err;
	int got_error, got_eof;
	size_t len, sent, received;
	size_t pause_every, next_pause;
	uv_timer_t pause_timer;
	int pause_open, pauses;
	int reused;
	char version[16], alpn[32];
	struct rbuf in; /* kept when keep_input */
	int keep_input;
};

static void cli_closed(struct net_stream *s)
{
	struct cli *c = net_stream_data(s);
	c->closed = 1;
}

static void cli_pump(struct cli *c);

static void cli_written(struct net_stream *s, int status, void *arg)
{
	(void)arg;
	struct cli *c = net_stream_data(s);
	if (status == 0)
		cli_pump(c);
}

/* Keep at most HIGH bytes queued: our own backpressure. */
static void cli_pump(struct cli *c)
{
	while (c->sent < c->len && net_stream_write_queue_size(c->s) < HIGH) {
		size_t n = c->len - c->sent < 65536 ? c->len - c->sent : 65536;
		uv_buf_t b = uv_buf_init((char *)pattern + c->sent, (unsigned)n);
		assert_int_equal(net_stream_write(c->s, &b, 1, cli_written, NULL), 0);
		c->sent += n;
	}
}

static void resume_cb(uv_timer_t *t)
{
	struct cli *c = t->data;
	net_stream_read_start(c->s);
}

static void cli_read(struct net_stream *s, const char *data, size_t len)
{
	struct cli *c = net_stream_data(s);
	if (c->keep_input) {
		rbuf_append(&c->in, data, len);
		return;
	}
	assert_true(c->received + len <= c->len);
	assert_memory_equal(data, pattern + c->received, len);
	c->received += len;
	if (c->received == c->len) {
		c->finished = 1;
		return;
	}
	if (c->pause_every && c->received >= c->next_pause) {
		/* Not reading for a while: the server's queue grows and it
		 * must stop reading us. */
		c->next_pause += c->pause_every;
		c->pauses++;
		net_stream_read_stop(s);
		uv_timer_start(&c->pause_timer, resume_cb, 30, 0);
	}
}

static void cli_eof(struct net_stream *s)
{
	struct cli *c = net_stream_data(s);
	c->got_eof = 1;
	c->finished = 1;
}

static void cli_error(struct net_stream *s, const struct net_error *e)
{
	struct cli *c = net_stream_data(s);
	c->got_error = 1;
	c->err = *e;
	c->finished = 1;
}

static const struct net_stream_callbacks cli_cbs = {cli_read, cli_eof, cli_error, NULL};

static void cli_connected(struct net_stream *s, const struct net_error *err, void *arg)
{
	struct cli *c = arg;
	c->done = 1;
	if (err) {
		c->err = *err;
		c->finished = 1;
		return;
	}
	c->ok = 1;
	c->reused = net_stream_session_reused(s);
	if (net_stream_tls_version(s)) {
		snprintf(c->version, sizeof(c->version), "%s", net_stream_tls_version(s));
		net_stream_alpn(s, c->alpn, sizeof(c->alpn));
	}
	net_stream_set_callbacks(s, &cli_cbs, c);
	assert_int_equal(net_stream_read_start(s), 0);
	if (c->len)
		cli_pump(c);
}

static void cli_start(struct cli *c, const char *host, int port, struct net_tls_ctx *ctx, const char *name, size_t len)
{
	memset(c, 0, sizeof(*c));
	c->len = len;
	uv_timer_init(&loop, &c->pause_timer);
	c->pause_timer.data = c;
	c->pause_open = 1;
	c->s = net_connect(&loop, host, (uint16_t)port, 5000, ctx, name, cli_connected, c);
	/* The connect callback never runs inside net_connect. */
	assert_int_equal(c->done, 0);
	net_stream_set_callbacks(c->s, NULL, c);
}

static void pause_closed(uv_handle_t *h)
{
	struct cli *c = h->data;
	c->pause_open = 0;
}

/* Close the client if it is ours to close and wait for it. */
static void cli_stop(struct cli *c)
{
	if (c->ok && !c->closed) {
		net_stream_close(c->s, cli_closed);
		run_until(&c->closed);
	}
	uv_close((uv_handle_t *)&c->pause_timer, pause_closed);
	while (c->pause_open)
		uv_run(&loop, UV_RUN_ONCE);
	rbuf_release(&c->in);
}

/* Connect, echo len bytes, close; the client's verdict in c. */
static void echo_once(struct cli *c, struct srv *v, const char *host, struct net_tls_ctx *ctx, const char *name,
		      size_t len)
{
	cli_start(c, host, v->port, ctx, name, len);
	run_until(&c->finished);
}

static void fill_pattern(void)
{
	if (pattern)
		return;
	pattern = xmalloc(PATTERN_SIZE);
	uint32_t x = 2463534242u;
	for (size_t i = 0; i < PATTERN_SIZE; i++) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		pattern[i] = (unsigned char)x;
	}
}

/*---- the tests ----*/

static void test_plain_echo(void **state)
{
	(void)state;
	fill_pattern();
	struct srv v;
	struct cli c;
	srv_start(&v, NULL, NULL);
	echo_once(&c, &v, "127.0.0.1", NULL, NULL, 512 * 1024);
	assert_true(c.ok);
	assert_int_equal(c.received, c.len);
	assert_false(c.got_error);
	assert_int_equal(v.handshakes, 0);
	assert_null(net_stream_tls_version(c.s));
	cli_stop(&c);
	srv_stop(&v);
}

static void test_tls_echo_large(void **state)
{
	(void)state;
	fill_pattern();
	struct srv v;
	struct cli c;
	srv_start(&v, server_ctx("server", NULL), NULL);
	struct net_tls_ctx *cc = client_ctx("ca.pem", NULL, 0);
	cli_start(&c, "127.0.0.1", v.port, cc, NULL, PATTERN_SIZE);
	c.pause_every = 1024 * 1024;
	c.next_pause = c.pause_every;
	run_until(&c.finished);
	if (c.got_error || !c.ok)
		fail_msg("%s", c.err.msg);
	assert_int_equal(c.received, PATTERN_SIZE);
	assert_int_equal(v.handshakes, 1);
	assert_int_equal(v.in_handshake_seen, 1);
	assert_true(c.pauses > 0);
	assert_true(v.pauses > 0); /* the server stopped reading while we did */
	assert_string_equal(c.version, "TLSv1.3");
	assert_string_equal(c.alpn, "http/1.1");
	assert_string_equal(v.alpn, "http/1.1");
	assert_int_equal(v.cn_len, -1); /* no client certificate asked */
	cli_stop(&c);
	srv_stop(&v);
	net_tls_ctx_unref(cc);
}

/* A connect expected to fail verification; returns its message. */
static void expect_verify(const char *cert, const char *ca, const char *host, const char *name, long code,
			  const char **must)
{
	struct srv v;
	struct cli c;
	srv_start(&v, server_ctx(cert, NULL), host);
	struct net_tls_ctx *cc = client_ctx(ca, NULL, 0);
	echo_once(&c, &v, host ? host : "127.0.0.1", cc, name, 1000);
	assert_true(c.done);
	assert_false(c.ok);
	if (c.err.kind != NET_ERR_VERIFY)
		fail_msg("expected a verify failure, got %s: %s", net_err_name(c.err.kind), c.err.msg);
	assert_int_equal(c.err.verify_result, code);
	for (; *must; must++)
		if (!strstr(c.err.msg, *must))
			fail_msg("'%s' not in: %s", *must, c.err.msg);
	print_message("    %s\n", c.err.msg);
	cli_stop(&c);
	/* The server saw our alert. */
	while (v.errors == 0)
		uv_run(&loop, UV_RUN_ONCE);
	assert_int_equal(v.handshakes, 0);
	srv_stop(&v);
	net_tls_ctx_unref(cc);
}

static void test_verify_wrong_ca(void **state)
{
	(void)state;
	const char *must[] = {"certificate verify failed",
			      "subject 'CN = localhost'",
			      "issuer 'CN = relayd test CA'",
			      "not after",
			      "set tls_ca",
			      "127.0.0.1",
			      NULL};
	expect_verify("server", "other_ca.pem", NULL, NULL, X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY, must);
}

static void test_verify_expired(void **state)
{
	(void)state;
	const char *must[] = {"certificate has expired", "subject 'CN = localhost'", "not after", "renew", NULL};
	expect_verify("expired", "ca.pem", NULL, NULL, X509_V_ERR_CERT_HAS_EXPIRED, must);
}

static void test_verify_name_mismatch(void **state)
{
	(void)state;
	const char *must[] = {"hostname mismatch", "expected name 'localhost'", "DNS:wrong.example", "set tls_server_name",
			      NULL};
	expect_verify("wrong", "ca.pem", NULL, "localhost", X509_V_ERR_HOSTNAME_MISMATCH, must);
	/* By address: the certificate's IP entries are what counts. */
	const char *must_ip[] = {"IP address mismatch", "expected name '127.0.0.1'", NULL};
	expect_verify("wrong", "ca.pem", NULL, NULL, X509_V_ERR_IP_ADDRESS_MISMATCH, must_ip);
}

static void test_insecure_skip_verify(void **state)
{
	(void)state;
	fill_pattern();
	const char *certs[] = {"server", "expired", "wrong"};
	const char *cas[] = {"other_ca.pem", "ca.pem", "ca.pem"};
	for (size_t i = 0; i < 3; i++) {
		struct srv v;
		struct cli c;
		srv_start(&v, server_ctx(certs[i], NULL), NULL);
		struct net_tls_ctx *cc = client_ctx(cas[i], NULL, 1);
		echo_once(&c, &v, "127.0.0.1", cc, "localhost", 4096);
		if (!c.ok || c.got_error)
			fail_msg("%s: %s", certs[i], c.err.msg);
		assert_int_equal(c.received, 4096);
		cli_stop(&c);
		srv_stop(&v);
		net_tls_ctx_unref(cc);
	}
}

static void test_mtls(void **state)
{
	(void)state;
	fill_pattern();
	struct srv v;
	struct cli c;
	srv_start(&v, server_ctx("server", "ca.pem"), NULL);

	/* Without a certificate: refused. TLS 1.3 finishes the client's side
	 * of the handshake before the server has looked at its certificate,
	 * so the refusal may come after the connect. */
	struct net_tls_ctx *none = client_ctx("ca.pem", NULL, 0);
	echo_once(&c, &v, "127.0.0.1", none, NULL, 100);
	assert_false(c.received == 100);
	assert_int_equal(c.err.kind, NET_ERR_VERIFY);
	print_message("    client: %s\n", c.err.msg);
	assert_non_null(strstr(c.err.msg, "refused our client certificate"));
	while (v.errors == 0)
		uv_run(&loop, UV_RUN_ONCE);
	assert_int_equal(v.err.kind, NET_ERR_VERIFY);
	print_message("    server: %s\n", v.err.msg);
	assert_non_null(strstr(v.err.msg, "sent no certificate"));
	/* the configuration key, as the operator writes it */
	assert_non_null(strstr(v.err.msg, "tls.client_ca_file requires one"));
	cli_stop(&c);

	/* A certificate from another CA: refused with the reason. */
	struct net_tls_ctx *stranger = client_ctx("ca.pem", "stranger", 0);
	v.errors = 0;
	echo_once(&c, &v, "127.0.0.1", stranger, NULL, 100);
	assert_int_equal(c.err.kind, NET_ERR_VERIFY);
	while (v.errors == 0)
		uv_run(&loop, UV_RUN_ONCE);
	assert_int_equal(v.err.kind, NET_ERR_VERIFY);
	print_message("    server: %s\n", v.err.msg);
	assert_non_null(strstr(v.err.msg, "subject 'CN = writer-2'"));
	cli_stop(&c);

	/* With one: accepted, and its name is there for the door's auth. */
	struct net_tls_ctx *with = client_ctx("ca.pem", "client", 0);
	echo_once(&c, &v, "127.0.0.1", with, NULL, 100);
	if (!c.ok || c.got_error)
		fail_msg("%s", c.err.msg);
	assert_int_equal(c.received, 100);
	assert_int_equal(v.cn_len, 8);
	assert_string_equal(v.cn, "writer-1");
	cli_stop(&c);

	srv_stop(&v);
	net_tls_ctx_unref(none);
	net_tls_ctx_unref(stranger);
	net_tls_ctx_unref(with);
}

static void test_session_resumption(void **state)
{
	(void)state;
	fill_pattern();
	struct srv v;
	struct cli c;
	srv_start(&v, server_ctx("server", NULL), "localhost");
	struct net_tls_ctx *cc = client_ctx("ca.pem", NULL, 0);
	/* By name: resolved (uv_getaddrinfo), verified against DNS:localhost. */
	for (int i = 0; i < 3; i++) {
		echo_once(&c, &v, "localhost", cc, NULL, 1000);
		if (!c.ok || c.got_error)
			fail_msg("%s", c.err.msg);
		assert_int_equal(c.received, 1000);
		assert_int_equal(c.reused, i > 0);
		cli_stop(&c);
	}
	/* Forgotten sessions: a full handshake again. */
	net_tls_ctx_flush_sessions(cc);
	echo_once(&c, &v, "localhost", cc, NULL, 1000);
	assert_true(c.ok);
	assert_int_equal(c.reused, 0);
	cli_stop(&c);
	srv_stop(&v);
	net_tls_ctx_unref(cc);
}

static void test_plain_http_to_tls(void **state)
{
	(void)state;
	struct srv v;
	struct cli c;
	srv_start(&v, server_ctx("server", NULL), NULL);
	cli_start(&c, "127.0.0.1", v.port, NULL, NULL, 0);
	run_until(&c.done);
	assert_true(c.ok);
	c.keep_input = 1;
	static char req[] = "GET /ping HTTP/1.1\r\nHost: relayd\r\n\r\n";
	uv_buf_t b = uv_buf_init(req, sizeof(req) - 1);
	assert_int_equal(net_stream_write(c.s, &b, 1, NULL, NULL), 0);
	run_until(&c.finished);
	assert_true(c.got_eof);
	assert_non_null(strstr(rbuf_cstr(&c.in), "HTTP/1.1 400 Bad Request"));
	assert_int_equal(v.err.kind, NET_ERR_PLAIN_HTTP);
	print_message("    %s\n", v.err.msg);
	assert_non_null(strstr(v.err.msg, "plain HTTP"));
	assert_non_null(strstr(v.err.msg, "GET /ping"));
	cli_stop(&c);
	srv_stop(&v);
}

static void test_write_before_handshake(void **state)
{
	(void)state;
	struct net_tls_ctx *cc = client_ctx("ca.pem", NULL, 0);
	struct net_tls_ctx *ctxs[] = {NULL, cc};
	for (int i = 0; i < 2; i++) {
		struct srv v;
		struct cli c;
		srv_start(&v, i ? server_ctx("server", NULL) : NULL, NULL);
		v.greet = 1;
		cli_start(&c, "127.0.0.1", v.port, ctxs[i], NULL, 0);
		c.keep_input = 1;
		run_until(&c.finished);
		if (!c.ok || c.got_error)
			fail_msg("%s", c.err.msg);
		assert_true(c.got_eof); /* close_notify (TLS) or FIN (plain) */
		assert_int_equal(c.in.len, 6);
		assert_memory_equal(c.in.data, "hello\n", 6);
		assert_int_equal(v.handshakes, i);
		cli_stop(&c);
		srv_stop(&v);
	}
	net_tls_ctx_unref(cc);
}

static void test_tls_to_plain_server(void **state)
{
	(void)state;
	/* The other way round: https:// to a plain HTTP port. The echo
	 * server sends the ClientHello back, which is no ServerHello. */
	struct srv v;
	struct cli c;
	srv_start(&v, NULL, NULL);
	struct net_tls_ctx *cc = client_ctx("ca.pem", NULL, 0);
	echo_once(&c, &v, "127.0.0.1", cc, NULL, 0);
	assert_false(c.ok);
	assert_int_equal(c.err.kind, NET_ERR_HANDSHAKE);
	print_message("    %s\n", c.err.msg);
	cli_stop(&c);
	srv_stop(&v);
	net_tls_ctx_unref(cc);
}

static void test_connect_refused(void **state)
{
	(void)state;
	/* A port nobody listens on: bound, read, closed. */
	uv_tcp_t t;
	struct sockaddr_in a;
	struct sockaddr_storage ss;
	int len = sizeof(ss);
	uv_ip4_addr("127.0.0.1", 0, &a);
	uv_tcp_init(&loop, &t);
	assert_int_equal(uv_tcp_bind(&t, (struct sockaddr *)&a, 0), 0);
	uv_tcp_getsockname(&t, (struct sockaddr *)&ss, &len);
	int port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
	uv_close((uv_handle_t *)&t, NULL); /* the socket is closed now, the handle later */

	struct net_tls_ctx *cc = client_ctx("ca.pem", NULL, 0);
	struct net_tls_ctx *ctxs[] = {NULL, cc};
	for (int i = 0; i < 2; i++) {
		struct cli c;
		cli_start(&c, "127.0.0.1", port, ctxs[i], NULL, 0);
		run_until(&c.done);
		assert_false(c.ok);
		assert_int_equal(c.err.kind, NET_ERR_CONNECT);
		assert_int_equal(c.err.uv_code, UV_ECONNREFUSED);
		assert_non_null(strstr(c.err.msg, "connection refused"));
		cli_stop(&c);
	}
	net_tls_ctx_unref(cc);
}

/* A peer that accepts and says nothing. */
struct mute {
	uv_tcp_t listener;
	uv_tcp_t conns[8];
	int port, nconns, closed;
};

static void mute_accept(uv_stream_t *ls, int status)
{
	struct mute *m = ls->data;
	(void)status;
	assert_true(m->nconns < 8);
	uv_tcp_t *t = &m->conns[m->nconns];
	uv_tcp_init(&loop, t);
	t->data = m;
	assert_int_equal(uv_accept(ls, (uv_stream_t *)t), 0);
	m->nconns++;
}

static void mute_closed(uv_handle_t *h)
{
	struct mute *m = h->data;
	m->closed++;
}

static void mute_start(struct mute *m)
{
	memset(m, 0, sizeof(*m));
	struct sockaddr_in a;
	struct sockaddr_storage ss;
	int len = sizeof(ss);
	uv_ip4_addr("127.0.0.1", 0, &a);
	uv_tcp_init(&loop, &m->listener);
	m->listener.data = m;
	assert_int_equal(uv_tcp_bind(&m->listener, (struct sockaddr *)&a, 0), 0);
	assert_int_equal(uv_listen((uv_stream_t *)&m->listener, 8, mute_accept), 0);
	uv_tcp_getsockname(&m->listener, (struct sockaddr *)&ss, &len);
	m->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

static void mute_stop(struct mute *m)
{
	int want = 1 + m->nconns;
	uv_close((uv_handle_t *)&m->listener, mute_closed);
	for (int i = 0; i < m->nconns; i++)
		uv_close((uv_handle_t *)&m->conns[i], mute_closed);
	while (m->closed < want)
		uv_run(&loop, UV_RUN_ONCE);
}

static void test_client_timeout_and_close_in_handshake(void **state)
{
	(void)state;
	struct mute m;
	mute_start(&m);
	struct net_tls_ctx *cc = client_ctx("ca.pem", NULL, 0);

	/* A server that never answers the ClientHello: the timeout. */
	struct cli c;
	memset(&c, 0, sizeof(c));
	uv_timer_init(&loop, &c.pause_timer);
	c.pause_timer.data = &c;
	c.pause_open = 1;
	c.s = net_connect(&loop, "127.0.0.1", (uint16_t)m.port, 200, cc, NULL, cli_connected, &c);
	net_stream_set_callbacks(c.s, NULL, &c);
	run_until(&c.done);
	assert_int_equal(c.err.kind, NET_ERR_TIMEOUT);
	assert_non_null(strstr(c.err.msg, "tls handshake with 127.0.0.1"));
	cli_stop(&c);

	/* Closed by its owner in mid-handshake: no connect callback, the
	 * close callback, everything freed (LeakSanitizer checks). */
	cli_start(&c, "127.0.0.1", m.port, cc, NULL, 0);
	while (m.nconns < 2 || !net_stream_in_handshake(c.s))
		uv_run(&loop, UV_RUN_ONCE);
	net_stream_close(c.s, cli_closed);
	run_until(&c.closed);
	assert_int_equal(c.done, 0);
	cli_stop(&c);

	/* Closed while connecting, and while resolving. */
	const char *hosts[] = {"127.0.0.1", "localhost"};
	for (int i = 0; i < 2; i++) {
		cli_start(&c, hosts[i], m.port, cc, NULL, 0);
		net_stream_close(c.s, cli_closed);
		run_until(&c.closed);
		assert_int_equal(c.done, 0);
		cli_stop(&c);
	}
	mute_stop(&m);
	net_tls_ctx_unref(cc);
}

/* A raw client that connects and sends a few bytes (or none). */
struct raw {
	uv_tcp_t tcp;
	uv_connect_t req;
	uv_write_t wr;
	const char *send;
	size_t send_len;
	int connected, closed;
};

static void raw_connected(uv_connect_t *req, int status)
{
	struct raw *r = req->data;
	assert_int_equal(status, 0);
	r->connected = 1;
	if (r->send_len) {
		uv_buf_t b = uv_buf_init((char *)r->send, (unsigned)r->send_len);
		uv_write(&r->wr, (uv_stream_t *)&r->tcp, &b, 1, NULL);
	}
}

static void raw_closed(uv_handle_t *h)
{
	struct raw *r = h->data;
	r->closed = 1;
}

static void raw_start(struct raw *r, int port, const char *send, size_t len)
{
	memset(r, 0, sizeof(*r));
	struct sockaddr_in a;
	uv_ip4_addr("127.0.0.1", port, &a);
	uv_tcp_init(&loop, &r->tcp);
	r->tcp.data = r;
	r->req.data = r;
	r->send = send;
	r->send_len = len;
	assert_int_equal(uv_tcp_connect(&r->req, &r->tcp, (struct sockaddr *)&a, raw_connected), 0);
}

static void raw_stop(struct raw *r)
{
	uv_close((uv_handle_t *)&r->tcp, raw_closed);
	run_until(&r->closed);
}

static void count_cancelled(struct net_stream *s, int status, void *arg)
{
	(void)s;
	assert_int_equal(status, UV_ECANCELED);
	++*(int *)arg;
}

static void shut_cancelled(struct net_stream *s, int status, void *arg)
{
	count_cancelled(s, status, arg);
}

static void test_server_handshake_timeout_and_close(void **state)
{
	(void)state;
	struct srv v;
	struct raw r;
	/* Half a ClientHello, then nothing: the handshake timeout. */
	static const char partial[] = "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03";
	srv_start(&v, server_ctx("server", NULL), NULL);
	v.hs_timeout = 200;
	raw_start(&r, v.port, partial, sizeof(partial) - 1);
	while (v.errors == 0)
		uv_run(&loop, UV_RUN_ONCE);
	assert_int_equal(v.err.kind, NET_ERR_TIMEOUT);
	assert_non_null(strstr(v.err.msg, "no handshake within 200 ms"));
	raw_stop(&r);

	/* Closed by the door in mid-handshake (shutting down): freed. */
	v.hs_timeout = 0;
	raw_start(&r, v.port, partial, sizeof(partial) - 1);
	while (v.open == 0)
		uv_run(&loop, UV_RUN_ONCE);
	for (int i = 0; i < 5; i++)
		uv_run(&loop, UV_RUN_NOWAIT);
	assert_true(net_stream_in_handshake(v.conns->s));
	/* A write and a shutdown waiting for the handshake are cancelled. */
	static char early[] = "early";
	uv_buf_t b = uv_buf_init(early, 5);
	int cancelled = 0;
	struct net_stream *s = v.conns->s;
	assert_int_equal(net_stream_write(s, &b, 1, count_cancelled, &cancelled), 0);
	assert_int_equal(net_stream_write_queue_size(s), 5);
	assert_int_equal(net_stream_shutdown(s, shut_cancelled, &cancelled), 0);
	assert_int_equal(net_stream_shutdown(s, shut_cancelled, &cancelled), UV_EPIPE);
	srv_stop(&v);
	assert_int_equal(cancelled, 2);
	raw_stop(&r);
}

static void test_context_swap(void **state)
{
	(void)state;
	fill_pattern();
	struct srv v;
	struct cli old, fresh;
	srv_start(&v, server_ctx("server", NULL), NULL);
	struct net_tls_ctx *cc = client_ctx("ca.pem", NULL, 0);
	cli_start(&old, "127.0.0.1", v.port, cc, NULL, 0);
	run_until(&old.done);
	assert_true(old.ok);
	/* A reload: the listener's context is replaced and the old one's
	 * reference dropped; the open connection keeps its own. */
	net_tls_ctx_unref(v.ctx);
	v.ctx = server_ctx("wrong", NULL);
	/* New connections see the new certificate (not valid for 127.0.0.1). */
	echo_once(&fresh, &v, "127.0.0.1", cc, NULL, 100);
	assert_int_equal(fresh.err.kind, NET_ERR_VERIFY);
	cli_stop(&fresh);
	/* The old one still works. */
	old.len = 300000;
	cli_pump(&old);
	run_until(&old.finished);
	assert_int_equal(old.received, 300000);
	cli_stop(&old);
	srv_stop(&v);
	net_tls_ctx_unref(cc);
}

static void test_ctx_errors(void **state)
{
	(void)state;
	char err[512];
	struct net_tls_ctx *ctx = (struct net_tls_ctx *)1;
	struct net_tls_server_opts so = {path("nothere.pem"), path("server.key"), NULL};
	assert_int_equal(net_tls_server_ctx_new(&so, &ctx, err, sizeof(err)), -1);
	assert_null(ctx);
	assert_non_null(strstr(err, "cannot load certificate"));
	assert_non_null(strstr(err, "No such file or directory"));

	so.cert_file = path("server.pem");
	so.key_file = path("wrong.key");
	assert_int_equal(net_tls_server_ctx_new(&so, &ctx, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "does not match the certificate"));

	so.key_file = path("server.pem"); /* a certificate where the key should be */
	assert_int_equal(net_tls_server_ctx_new(&so, &ctx, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "cannot load private key"));

	so.key_file = path("server.key");
	so.client_ca_file = path("server.key"); /* no certificate in it */
	assert_int_equal(net_tls_server_ctx_new(&so, &ctx, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "cannot load client CA file"));

	/* An expired certificate loads; the caller can tell. */
	so.cert_file = path("expired.pem");
	so.key_file = path("expired.key");
	so.client_ca_file = NULL;
	assert_int_equal(net_tls_server_ctx_new(&so, &ctx, err, sizeof(err)), 0);
	long long left = 0;
	char when[64];
	assert_int_equal(net_tls_ctx_expiry(ctx, &left, when, sizeof(when)), 0);
	assert_true(left < 0);
	assert_non_null(strstr(when, "GMT"));
	assert_int_equal(net_tls_ctx_is_server(ctx), 1);
	net_tls_ctx_unref(ctx);

	struct net_tls_client_opts co = {0};
	co.ca_file = path("nothere.pem");
	assert_int_equal(net_tls_client_ctx_new(&co, &ctx, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "cannot load CA file"));
	co.ca_file = NULL;
	co.key_file = path("client.key");
	assert_int_equal(net_tls_client_ctx_new(&co, &ctx, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "without its certificate"));
	co.cert_file = path("client.pem");
	co.key_file = path("server.key");
	assert_int_equal(net_tls_client_ctx_new(&co, &ctx, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "does not match"));
	/* The system's store, TLS 1.3 minimum: loads. */
	co.cert_file = co.key_file = NULL;
	co.min_version = NET_TLS_1_3;
	assert_int_equal(net_tls_client_ctx_new(&co, &ctx, err, sizeof(err)), 0);
	assert_int_equal(net_tls_ctx_is_server(ctx), 0);
	assert_int_equal(net_tls_ctx_expiry(ctx, &left, NULL, 0), -1);
	net_tls_ctx_unref(ctx);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_plain_echo, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_tls_echo_large, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_verify_wrong_ca, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_verify_expired, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_verify_name_mismatch, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_insecure_skip_verify, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_mtls, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_session_resumption, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_plain_http_to_tls, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_write_before_handshake, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_tls_to_plain_server, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_connect_refused, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_client_timeout_and_close_in_handshake, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_server_handshake_timeout_and_close, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_context_swap, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_ctx_errors, setup, teardown),
	};
	int rc = cmocka_run_group_tests(tests, setup_certs, teardown_certs);
	free(pattern);
	return rc;
}
