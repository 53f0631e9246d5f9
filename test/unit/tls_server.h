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

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <unistd.h>
#include <uv.h>

#include "relay/net/stream.h"

static char certdir[256];

/* name in the certificates' directory. */

static char *cpath(const char *name)
{
	static char bufs[4][320];
	static int next;
	char *b = bufs[next++ % 4];
	snprintf(b, sizeof(bufs[0]), "%s/%s", certdir, name);
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

/* key's certificate named cn, signed by ca_key/ca (NULL: self-signed, a CA). */
static X509 *make_cert(EVP_PKEY *key, const char *cn, EVP_PKEY *ca_key, X509 *ca, const char *san)
{
	X509 *x = X509_new();
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), ca ? 2 : 1);
	X509_gmtime_adj(X509_getm_notBefore(x), -86400);
	X509_gmtime_adj(X509_getm_notAfter(x), 86400);
	X509_set_pubkey(x, key);
	X509_NAME *nm = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(nm, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
	X509_set_issuer_name(x, ca ? X509_get_subject_name(ca) : nm);
	X509 *issuer = ca ? ca : x;
	add_ext(x, issuer, NID_basic_constraints, ca ? "critical,CA:FALSE" : "critical,CA:TRUE");
	add_ext(x, issuer, NID_key_usage, ca ? "critical,digitalSignature" : "critical,keyCertSign,cRLSign");
	if (san)
		add_ext(x, issuer, NID_subject_alt_name, san);
	assert_true(X509_sign(x, ca_key ? ca_key : key, EVP_sha256()) > 0);
	return x;
}

static void write_pem(const char *name, X509 *cert, EVP_PKEY *key)
{
	FILE *f = fopen(cpath(name), "w");
	assert_non_null(f);
	if (cert)
		assert_int_equal(PEM_write_X509(f, cert), 1);
	if (key)
		assert_int_equal(PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL), 1);
	fclose(f);
}

static int setup_certs(void **state)
{
	(void)state;
	const char *tmp = getenv("TMPDIR");
	snprintf(certdir, sizeof(certdir), "%s/tls_server.XXXXXX", tmp && *tmp ? tmp : "/tmp");
	assert_non_null(mkdtemp(certdir));
	EVP_PKEY *ca_key = EVP_EC_gen("P-256"), *other_key = EVP_EC_gen("P-256"), *key = EVP_EC_gen("P-256");
	X509 *ca = make_cert(ca_key, "test CA", NULL, NULL, NULL);
	X509 *other = make_cert(other_key, "another CA", NULL, NULL, NULL);
	X509 *leaf = make_cert(key, "localhost", ca_key, ca, "DNS:localhost,IP:127.0.0.1");
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
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++)
		unlink(cpath(files[i]));
	rmdir(certdir);
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
