/*
 * tls_server: for the unit tests of the backend clients over TLS
 * (test_http_client, test_upstream): certificates made in a temporary
 * directory (a CA, a server certificate for localhost and 127.0.0.1
 * signed by it, and another CA that signed nothing), and a TLS server of
 * the transport layer on a loopback port that answers every request (a
 * head without a body) 204, closing after it when close_after is set.
 * Header-only (static functions): each test program includes it once.
 */
#ifndef RELAY_TEST_TLS_SERVER_H
#define RELAY_TEST_TLS_SERVER_H

#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "relay/net/stream.h"
#include "relay/net/tls.h"
#include "test/unit/test_certs.h"

static int setup_certs(void **state)
{
	(void)state;
	const long day = 86400;
	certdir_make("tls_server");
	EVP_PKEY *ca_key = EVP_EC_gen("P-256"), *other_key = EVP_EC_gen("P-256"), *key = EVP_EC_gen("P-256");
	X509 *ca = make_cert(ca_key, "test CA", NULL, NULL, -day, day, NULL, 1, NULL);
	X509 *other = make_cert(other_key, "another CA", NULL, NULL, -day, day, NULL, 1, NULL);
	X509 *leaf = make_cert(key, "localhost", ca_key, ca, -day, day, "DNS:localhost,IP:127.0.0.1", 0, NULL);
	write_pem("ca.pem", ca, NULL);
	write_pem("other.pem", other, NULL);
	write_pem("server.pem", leaf, NULL);
	write_pem("server.key", NULL, key);
	X509_free(ca);
	X509_free(other);
	X509_free(leaf);
	EVP_PKEY_free(ca_key);
	EVP_PKEY_free(other_key);
	EVP_PKEY_free(key);
	return 0;
}

static int teardown_certs(void **state)
{
	(void)state;
	static const char *const files[] = { "ca.pem", "other.pem", "server.pem", "server.key" };
	certdir_remove(files, sizeof(files) / sizeof(files[0]));
	return 0;
}

/* A TLS server of the transport layer: every request (no body) is
 * answered 204; with close_after, "Connection: close" and the end. */
struct tserver {
	uv_loop_t *loop;
	uv_tcp_t listener;
	struct net_tls_ctx *ctx;
	int port;
	int close_after;
	int accepted;
	int answered;
};

struct tconn {
	struct tserver *srv;
	struct net_stream *s;
	char buf[4096];
	size_t len;
};

static void tconn_closed(struct net_stream *s)
{
	free(net_stream_data(s));
}

static void tconn_written(struct net_stream *s, int status, void *arg)
{
	struct tconn *k = arg;
	(void)status;
	if (k->srv->close_after)
		net_stream_close(s, tconn_closed);
}

static void tconn_read(struct net_stream *s, const char *data, size_t len)
{
	struct tconn *k = net_stream_data(s);
	static char ok[] = "HTTP/1.1 204 No Content\r\n\r\n";
	static char bye[] = "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n";
	if (len > sizeof(k->buf) - k->len)
		len = sizeof(k->buf) - k->len;
	memcpy(k->buf + k->len, data, len);
	k->len += len;
	char *end;
	while ((end = memmem(k->buf, k->len, "\r\n\r\n", 4)) != NULL) {
		size_t n = (size_t)(end + 4 - k->buf);
		memmove(k->buf, k->buf + n, k->len - n);
		k->len -= n;
		k->srv->answered++;
		uv_buf_t b = k->srv->close_after ? uv_buf_init(bye, sizeof(bye) - 1) : uv_buf_init(ok, sizeof(ok) - 1);
		assert_int_equal(net_stream_write(s, &b, 1, tconn_written, k), 0);
	}
}

static void tconn_end(struct net_stream *s)
{
	net_stream_close(s, tconn_closed);
}

static void tconn_error(struct net_stream *s, const struct net_error *e)
{
	(void)e;
	net_stream_close(s, tconn_closed);
}

static void on_conn(uv_stream_t *l, int status)
{
	static const struct net_stream_callbacks cbs = { .on_read = tconn_read, .on_eof = tconn_end,
							 .on_error = tconn_error };
	struct tserver *srv = l->data;
	struct tconn *k = calloc(1, sizeof(*k));
	assert_int_equal(status, 0);
	k->srv = srv;
	srv->accepted++;
	assert_int_equal(net_stream_accept(srv->loop, l, srv->ctx, 5000, &cbs, k, &k->s), 0);
	assert_int_equal(net_stream_read_start(k->s), 0);
}

static void tserver_start(struct tserver *srv, uv_loop_t *loop)
{
	struct net_tls_server_opts o = { .cert_file = cpath("server.pem"), .key_file = cpath("server.key") };
	char err[512];
	struct sockaddr_in a;
	struct sockaddr_storage ss;
	int n = sizeof(ss);
	memset(srv, 0, sizeof(*srv));
	srv->loop = loop;
	assert_int_equal(net_tls_server_ctx_new(&o, &srv->ctx, err, sizeof(err)), 0);
	uv_tcp_init(loop, &srv->listener);
	srv->listener.data = srv;
	uv_ip4_addr("127.0.0.1", 0, &a);
	assert_int_equal(uv_tcp_bind(&srv->listener, (struct sockaddr *)&a, 0), 0);
	assert_int_equal(uv_listen((uv_stream_t *)&srv->listener, 16, on_conn), 0);
	uv_tcp_getsockname(&srv->listener, (struct sockaddr *)&ss, &n);
	srv->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

static void tserver_stop(struct tserver *srv)
{
	uv_close((uv_handle_t *)&srv->listener, NULL);
	net_tls_ctx_unref(srv->ctx);
}

/* A client context trusting the CA file ca (the caller's reference). */
static struct net_tls_ctx *tls_client_ctx(const char *ca)
{
	struct net_tls_client_opts o = { .ca_file = ca };
	struct net_tls_ctx *ctx;
	char err[512];
	assert_int_equal(net_tls_client_ctx_new(&o, &ctx, err, sizeof(err)), 0);
	return ctx;
}

#endif
