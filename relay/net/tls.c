/*
 * tls: see tls.h. The contexts, the client's session cache, the verify
 * callback's note, and the descriptions of certificates and of OpenSSL's
 * errors that the stream's messages are made of.
 */
#include "relay/net/tls.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "relay/base/util.h"
#include "relay/net/net_internal.h"

/* ALPN: the door and the clients speak HTTP/1.1 only. */
static const unsigned char alpn_http11[] = "\x08http/1.1";

void net_tls_errors(char *buf, size_t len)
{
	unsigned long e;
	size_t used = strlen(buf);
	while ((e = ERR_get_error()) != 0) {
		const char *r = ERR_reason_error_string(e);
		char tmp[160];
		if (r)
			snprintf(tmp, sizeof(tmp), "%s", r);
		else
			ERR_error_string_n(e, tmp, sizeof(tmp));
		if (used + 3 >= len)
			continue; /* keep emptying the queue */
		int n = snprintf(buf + used, len - used, "%s%s", used ? "; " : "", tmp);
		if (n > 0)
			used += (size_t)n < len - used ? (size_t)n : len - used - 1;
	}
}

/* "could not load X 'file': reason" for the set-up messages. */
static void load_error(char *err, size_t errlen, const char *what, const char *file)
{
	char why[400] = "";
	/* fopen's errno is the clearest reason for a file that is not there. */
	FILE *f = fopen(file, "r");
	if (!f)
		snprintf(why, sizeof(why), "%s", strerror(errno));
	else
		fclose(f);
	if (!why[0])
		net_tls_errors(why, sizeof(why));
	ERR_clear_error();
	snprintf(err, errlen, "cannot load %s '%s': %s", what, file, why[0] ? why : "unknown error");
}

static void name_line(X509_NAME *nm, char *buf, size_t len)
{
	buf[0] = '\0';
	if (!nm)
		return;
	BIO *b = BIO_new(BIO_s_mem());
	if (!b)
		return;
	X509_NAME_print_ex(b, nm, 0, XN_FLAG_ONELINE & ~ASN1_STRFLGS_ESC_MSB);
	int n = BIO_read(b, buf, (int)len - 1);
	buf[n > 0 ? n : 0] = '\0';
	BIO_free(b);
}

static void time_line(const ASN1_TIME *t, char *buf, size_t len)
{
	buf[0] = '\0';
	BIO *b = BIO_new(BIO_s_mem());
	if (!b)
		return;
	if (t && ASN1_TIME_print(b, t)) {
		int n = BIO_read(b, buf, (int)len - 1);
		buf[n > 0 ? n : 0] = '\0';
	}
	BIO_free(b);
}

void net_tls_describe_cert(X509 *cert, struct net_verify_note *n)
{
	n->subject[0] = n->issuer[0] = n->not_after[0] = n->names[0] = '\0';
	if (!cert)
		return;
	name_line(X509_get_subject_name(cert), n->subject, sizeof(n->subject));
	name_line(X509_get_issuer_name(cert), n->issuer, sizeof(n->issuer));
	time_line(X509_get0_notAfter(cert), n->not_after, sizeof(n->not_after));
	/* The names it is valid for: what a name mismatch needs to show. */
	GENERAL_NAMES *gens = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
	size_t used = 0;
	for (int i = 0; gens && i < sk_GENERAL_NAME_num(gens); i++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
		char one[64] = "";
		if (g->type == GEN_DNS) {
			const ASN1_IA5STRING *s = g->d.dNSName;
			snprintf(one, sizeof(one), "DNS:%.*s", s->length > 50 ? 50 : s->length, (const char *)s->data);
		} else if (g->type == GEN_IPADD) {
			const ASN1_OCTET_STRING *ip = g->d.iPAddress;
			char a[48] = "";
			if (ip->length == 4)
				snprintf(a, sizeof(a), "%u.%u.%u.%u", ip->data[0], ip->data[1], ip->data[2],
					 ip->data[3]);
			else if (ip->length == 16)
				for (int j = 0, k = 0; j < 16; j += 2) /* the 8 groups in hex, unabridged */
					k += snprintf(a + k, sizeof(a) - (size_t)k, "%s%x", j ? ":" : "",
						      (unsigned)(ip->data[j] << 8 | ip->data[j + 1]));
			snprintf(one, sizeof(one), "IP:%s", a);
		}
		if (!one[0] || used + strlen(one) + 3 >= sizeof(n->names))
			continue;
		used += (size_t)snprintf(n->names + used, sizeof(n->names) - used, "%s%s", used ? ", " : "", one);
	}
	GENERAL_NAMES_free(gens);
}

int net_tls_verify_cb(int preverify_ok, X509_STORE_CTX *x)
{
	if (preverify_ok)
		return 1;
	SSL *ssl = X509_STORE_CTX_get_ex_data(x, SSL_get_ex_data_X509_STORE_CTX_idx());
	struct net_verify_note *n = ssl ? net_stream_verify_note(ssl) : NULL;
	/* The first failure is the one to report: later ones (OpenSSL goes on
	 * to check the rest of the chain) follow from it. */
	if (n && !n->err) {
		n->err = X509_STORE_CTX_get_error(x);
		n->depth = X509_STORE_CTX_get_error_depth(x);
		net_tls_describe_cert(X509_STORE_CTX_get_current_cert(x), n);
	}
	return 0;
}

/*---- contexts ----*/

static struct net_tls_ctx *ctx_alloc(SSL_CTX *ssl, int server)
{
	struct net_tls_ctx *c = xcalloc(1, sizeof(*c));
	c->refs = 1;
	c->server = server;
	c->ssl = ssl;
	return c;
}

struct net_tls_ctx *net_tls_ctx_ref(struct net_tls_ctx *ctx)
{
	ctx->refs++;
	return ctx;
}

void net_tls_ctx_flush_sessions(struct net_tls_ctx *ctx)
{
	struct net_tls_session *e = ctx->sessions, *next;
	for (; e; e = next) {
		next = e->next;
		SSL_SESSION_free(e->sess);
		free(e->key);
		free(e);
	}
	ctx->sessions = NULL;
}

void net_tls_ctx_unref(struct net_tls_ctx *ctx)
{
	if (!ctx || --ctx->refs > 0)
		return;
	net_tls_ctx_flush_sessions(ctx);
	SSL_CTX_free(ctx->ssl);
	free(ctx);
}

int net_tls_ctx_is_server(const struct net_tls_ctx *ctx)
{
	return ctx->server;
}

int net_tls_ctx_expiry(const struct net_tls_ctx *ctx, long long *seconds, char *when, size_t whenlen)
{
	X509 *leaf = SSL_CTX_get0_certificate(ctx->ssl);
	int days = 0, secs = 0;
	if (!leaf || !ASN1_TIME_diff(&days, &secs, NULL, X509_get0_notAfter(leaf)))
		return -1;
	*seconds = (long long)days * 86400 + secs;
	if (when && whenlen)
		time_line(X509_get0_notAfter(leaf), when, whenlen);
	return 0;
}

SSL_SESSION *net_tls_session_get(struct net_tls_ctx *ctx, const char *key)
{
	for (struct net_tls_session *e = ctx->sessions; e; e = e->next)
		if (strcmp(e->key, key) == 0)
			return e->sess;
	return NULL;
}

void net_tls_session_put(struct net_tls_ctx *ctx, const char *key, SSL_SESSION *sess)
{
	struct net_tls_session **pp = &ctx->sessions;
	for (; *pp; pp = &(*pp)->next)
		if (strcmp((*pp)->key, key) == 0)
			break;
	if (*pp && sess) {
		SSL_SESSION_free((*pp)->sess);
		(*pp)->sess = sess;
	} else if (*pp) {
		struct net_tls_session *e = *pp;
		*pp = e->next;
		SSL_SESSION_free(e->sess);
		free(e->key);
		free(e);
	} else if (sess) {
		struct net_tls_session *e = xcalloc(1, sizeof(*e));
		e->key = xstrdup(key);
		e->sess = sess;
		e->next = ctx->sessions;
		ctx->sessions = e;
	}
}

/*
 * A server gave a session (TLS 1.2: at the handshake's end; TLS 1.3: in a
 * NewSessionTicket after it, read with the first application data). Keep
 * the newest per server: returning 1 takes OpenSSL's reference.
 */
static int new_session_cb(SSL *ssl, SSL_SESSION *sess)
{
	struct net_tls_ctx *ctx = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
	const char *key = net_stream_session_key(ssl);
	if (!ctx || !key || !SSL_SESSION_is_resumable(sess))
		return 0;
	net_tls_session_put(ctx, key, sess);
	return 1;
}

static int alpn_select_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
			  unsigned int inlen, void *arg)
{
	(void)ssl;
	(void)arg;
	unsigned char *o = NULL;
	if (SSL_select_next_proto(&o, outlen, alpn_http11, sizeof(alpn_http11) - 1, in, inlen) !=
	    OPENSSL_NPN_NEGOTIATED)
		return SSL_TLSEXT_ERR_NOACK; /* no http/1.1 offered: answer without ALPN, let HTTP decide */
	*out = o;
	return SSL_TLSEXT_ERR_OK;
}

/* Chain and key into ctx, checked against each other; -1 and err. */
static int load_cert_key(SSL_CTX *ssl, const char *cert_file, const char *key_file, char *err, size_t errlen)
{
	if (SSL_CTX_use_certificate_chain_file(ssl, cert_file) != 1) {
		load_error(err, errlen, "certificate", cert_file);
		return -1;
	}
	/* OpenSSL checks the key against the certificate as it loads it: a
	 * mismatch is told apart from a file that does not load. */
	int loaded = SSL_CTX_use_PrivateKey_file(ssl, key_file, SSL_FILETYPE_PEM) == 1;
	unsigned long e = loaded ? 0 : ERR_peek_last_error();
	if (!loaded && !(ERR_GET_LIB(e) == ERR_LIB_X509 && (ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH ||
							    ERR_GET_REASON(e) == X509_R_KEY_TYPE_MISMATCH))) {
		load_error(err, errlen, "private key", key_file);
		return -1;
	}
	if (!loaded || SSL_CTX_check_private_key(ssl) != 1) {
		ERR_clear_error();
		snprintf(err, errlen, "the key '%s' does not match the certificate '%s'", key_file, cert_file);
		return -1;
	}
	return 0;
}

int net_tls_server_ctx_new(const struct net_tls_server_opts *o, struct net_tls_ctx **out, char *err, size_t errlen)
{
	*out = NULL;
	if (!o->cert_file || !o->key_file) {
		snprintf(err, errlen, "a TLS listener needs a certificate and a key");
		return -1;
	}
	/* Errors of an earlier failure must not be read as this one's. */
	ERR_clear_error();
	SSL_CTX *ssl = SSL_CTX_new(TLS_server_method());
	if (!ssl) {
		snprintf(err, errlen, "cannot make a TLS context: ");
		net_tls_errors(err, errlen);
		return -1;
	}
	SSL_CTX_set_min_proto_version(ssl, TLS1_2_VERSION);
	/* Idle connections give their record buffers back: the door may hold
	 * thousands of kept-alive connections. */
	SSL_CTX_set_mode(ssl, SSL_MODE_RELEASE_BUFFERS);
	/* Renegotiation is a way to make the server work; nothing needs it. */
	SSL_CTX_set_options(ssl, SSL_OP_NO_RENEGOTIATION);
	/* Resumption with client certificates needs a context id, or OpenSSL
	 * refuses to resume (and fails the handshake). */
	SSL_CTX_set_session_id_context(ssl, (const unsigned char *)"relayd", 6);
	SSL_CTX_set_alpn_select_cb(ssl, alpn_select_cb, NULL);
	if (load_cert_key(ssl, o->cert_file, o->key_file, err, errlen) < 0)
		goto fail;
	if (o->client_ca_file) {
		STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(o->client_ca_file);
		if (!names || SSL_CTX_load_verify_locations(ssl, o->client_ca_file, NULL) != 1) {
			sk_X509_NAME_pop_free(names, X509_NAME_free);
			load_error(err, errlen, "client CA file", o->client_ca_file);
			goto fail;
		}
		SSL_CTX_set_client_CA_list(ssl, names); /* takes names */
		SSL_CTX_set_verify(ssl, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, net_tls_verify_cb);
	}
	*out = ctx_alloc(ssl, 1);
	(*out)->client_ca = o->client_ca_file != NULL;
	SSL_CTX_set_app_data(ssl, *out);
	return 0;
fail:
	SSL_CTX_free(ssl);
	return -1;
}

int net_tls_client_ctx_new(const struct net_tls_client_opts *o, struct net_tls_ctx **out, char *err, size_t errlen)
{
	*out = NULL;
	ERR_clear_error();
	SSL_CTX *ssl = SSL_CTX_new(TLS_client_method());
	if (!ssl) {
		snprintf(err, errlen, "cannot make a TLS context: ");
		net_tls_errors(err, errlen);
		return -1;
	}
	SSL_CTX_set_min_proto_version(ssl, o->min_version == NET_TLS_1_3 ? TLS1_3_VERSION : TLS1_2_VERSION);
	SSL_CTX_set_mode(ssl, SSL_MODE_RELEASE_BUFFERS);
	SSL_CTX_set_alpn_protos(ssl, alpn_http11, sizeof(alpn_http11) - 1);
	/* Sessions are ours to keep (one per server, new_session_cb); OpenSSL's
	 * internal client cache would never be looked up anyway. */
	SSL_CTX_set_session_cache_mode(ssl, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
	SSL_CTX_sess_set_new_cb(ssl, new_session_cb);
	if (o->insecure_skip_verify) {
		SSL_CTX_set_verify(ssl, SSL_VERIFY_NONE, NULL);
	} else {
		if (o->ca_file || o->ca_dir) {
			if (SSL_CTX_load_verify_locations(ssl, o->ca_file, o->ca_dir) != 1) {
				load_error(err, errlen, o->ca_file ? "CA file" : "CA directory",
					   o->ca_file ? o->ca_file : o->ca_dir);
				goto fail;
			}
		} else if (SSL_CTX_set_default_verify_paths(ssl) != 1) {
			snprintf(err, errlen, "cannot load the system's CA certificates: ");
			net_tls_errors(err, errlen);
			goto fail;
		}
		SSL_CTX_set_verify(ssl, SSL_VERIFY_PEER, net_tls_verify_cb);
	}
	if (o->key_file && !o->cert_file) {
		snprintf(err, errlen, "a client key '%s' without its certificate", o->key_file);
		goto fail;
	}
	if (o->cert_file && load_cert_key(ssl, o->cert_file, o->key_file ? o->key_file : o->cert_file, err, errlen) < 0)
		goto fail;
	*out = ctx_alloc(ssl, 0);
	(*out)->insecure = o->insecure_skip_verify != 0;
	SSL_CTX_set_app_data(ssl, *out);
	return 0;
fail:
	SSL_CTX_free(ssl);
	return -1;
}
