/*
 * stream_error: a stream's failures, classed for what its owner does next
 * (enum net_err) and described for a person: OpenSSL's error queue read
 * and emptied, a verify failure with the certificate, the name expected
 * and what to change (stream.h).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "relay/base/util.h"
#include "relay/net/stream_internal.h"

/* What OpenSSL's error queue says, emptied, and what it means. */
struct ssl_why {
	char text[400];
	int cert_alert;	   /* the peer sent an alert about our certificate */
	int no_peer_cert;  /* server: the client sent none */
	int wrong_version; /* the peer answered with something that is not TLS */
	int verify_failed; /* the peer's certificate failed verification */
};

static void ssl_why(struct ssl_why *w)
{
	unsigned long e;
	memset(w, 0, sizeof(*w));
	size_t used = 0;
	while ((e = ERR_get_error()) != 0) {
		if (ERR_GET_LIB(e) == ERR_LIB_SSL) {
			switch (ERR_GET_REASON(e)) {
			case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE:
			case SSL_R_SSLV3_ALERT_UNSUPPORTED_CERTIFICATE:
			case SSL_R_SSLV3_ALERT_CERTIFICATE_REVOKED:
			case SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED:
			case SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN:
			case SSL_R_TLSV1_ALERT_UNKNOWN_CA:
			case SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED:
				w->cert_alert = 1;
				break;
			case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
				w->no_peer_cert = 1;
				break;
			case SSL_R_WRONG_VERSION_NUMBER:
			case SSL_R_PACKET_LENGTH_TOO_LONG:
			case SSL_R_RECORD_LENGTH_MISMATCH:
				w->wrong_version = 1;
				break;
			case SSL_R_CERTIFICATE_VERIFY_FAILED:
				w->verify_failed = 1;
				break;
			}
		}
		const char *r = ERR_reason_error_string(e);
		char one[160];
		if (r)
			snprintf(one, sizeof(one), "%s", r);
		else
			ERR_error_string_n(e, one, sizeof(one));
		/* The same reason twice (a record layer and the state machine
		 * both say it) reads as one. */
		if (strstr(w->text, one) || used + strlen(one) + 3 >= sizeof(w->text))
			continue;
		used += (size_t)snprintf(w->text + used, sizeof(w->text) - used, "%s%s", used ? "; " : "", one);
	}
}

void stream_fail(struct net_stream *s, enum net_err kind, int uv_code, const char *fmt, ...)
{
	if (s->failed || s->closing)
		return;
	va_list ap;
	s->failed = 1;
	s->handshaking = 0;
	if (!s->err)
		s->err = xcalloc(1, sizeof(*s->err));
	s->err->kind = kind;
	s->err->uv_code = uv_code;
	va_start(ap, fmt);
	vsnprintf(s->err->msg, sizeof(s->err->msg), fmt, ap);
	va_end(ap);
	uv_timer_stop(&s->timer);
	stream_update_reading(s);
	/* A session that just failed is not offered again: a server that
	 * refuses it would fail every reconnect the same way. */
	if (s->client && s->ctx && s->session_key && !s->open)
		net_tls_session_put(s->ctx, s->session_key, NULL);
	if (s->connecting) {
		s->connecting = 0;
		s->connect_cb(s, s->err, s->connect_arg);
		stream_close_internal(s);
		return;
	}
	if (s->cb.on_error)
		s->cb.on_error(s, s->err);
}

static const char *verify_hint(struct net_stream *s, long vr)
{
	if (!s->client)
		return "the client's certificate must be valid and chain to a CA in tls.client_ca_file";
	switch (vr) {
	case X509_V_ERR_HOSTNAME_MISMATCH:
	case X509_V_ERR_IP_ADDRESS_MISMATCH:
		return "connect by a name the certificate carries, or set tls_server_name to one of them";
	case X509_V_ERR_CERT_HAS_EXPIRED:
	case X509_V_ERR_CERT_NOT_YET_VALID:
		return "the server must renew its certificate (or this host's clock is wrong); "
		       "insecure_skip_verify: true accepts it meanwhile";
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
	case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
	case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
	case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
	case X509_V_ERR_CERT_UNTRUSTED:
		return "its issuer is not trusted here: set tls_ca (a file or a directory) to the CA that signed "
		       "it, or insecure_skip_verify: true";
	default:
		return "set tls_ca, tls_server_name or insecure_skip_verify to match the server";
	}
}

/* The verify failure, whole: what, on which certificate, the name
 * expected, and what to change. */
void stream_fail_verify(struct net_stream *s, long vr, const char *what)
{
	struct net_verify_note *n = net_stream_verify_note(s->ssl);
	if (!n->subject[0]) {
		/* The callback saw nothing (the result came another way): the
		 * peer's own certificate, from the chain it sent. */
		STACK_OF(X509) *chain = SSL_get_peer_cert_chain(s->ssl);
		X509 *leaf = SSL_get0_peer_certificate(s->ssl);
		if (!leaf && chain && sk_X509_num(chain) > 0)
			leaf = sk_X509_value(chain, 0);
		net_tls_describe_cert(leaf, n);
	}
	char expected[300] = "";
	if (s->client)
		snprintf(expected, sizeof(expected), "; expected name '%s'", s->name);
	char depth[40] = "";
	if (n->depth > 0)
		snprintf(depth, sizeof(depth), " (at depth %d of the chain)", n->depth);
	if (!s->err)
		s->err = xcalloc(1, sizeof(*s->err));
	s->err->verify_result = vr; /* before stream_fail(): the callback reads it */
	stream_fail(s, NET_ERR_VERIFY, UV_EPROTO,
	     "%s %s: certificate verify failed: %s%s; certificate: subject '%s', issuer '%s', not after '%s', "
	     "names '%s'%s; %s",
	     what, s->peer, X509_verify_cert_error_string(vr), depth, n->subject, n->issuer, n->not_after,
	     n->names[0] ? n->names : "none", expected, verify_hint(s, vr));
}

/* A handshake, or a record after it, failed: e from SSL_get_error. */
void stream_fail_tls(struct net_stream *s, int e, int in_handshake)
{
	struct ssl_why w;
	ssl_why(&w);
	const char *what = s->client ? "tls with" : "tls from";
	long vr = s->note ? s->note->err : 0;
	if (!vr && w.verify_failed)
		vr = SSL_get_verify_result(s->ssl);
	if (vr != X509_V_OK) {
		stream_fail_verify(s, vr, what);
		return;
	}
	if (w.cert_alert) {
		stream_fail(s, NET_ERR_VERIFY, UV_EPROTO, "%s %s: the peer refused %s certificate: %s; %s", what, s->peer,
		     s->client ? "our client" : "the server's", w.text,
		     s->client ? "set tls_cert and tls_key to a certificate the server's client CA signed"
			       : "the client must trust the CA of this listener's certificate");
		return;
	}
	if (w.no_peer_cert) {
		stream_fail(s, NET_ERR_VERIFY, UV_EPROTO, "%s %s: the client sent no certificate, and tls.client_ca_file requires one",
		     what, s->peer);
		return;
	}
	if (e == SSL_ERROR_SYSCALL && !w.text[0])
		snprintf(w.text, sizeof(w.text), "unexpected end of the stream");
	if (in_handshake)
		stream_fail(s, NET_ERR_HANDSHAKE, UV_EPROTO, "%s %s: handshake failed: %s%s", what, s->peer,
		     w.text[0] ? w.text : "unknown error",
		     w.wrong_version && s->client ? " (does the server speak TLS on this port? http:// if not)" : "");
	else
		stream_fail(s, NET_ERR_RESET, UV_EPROTO, "%s %s: %s", what, s->peer, w.text[0] ? w.text : "unknown error");
}

