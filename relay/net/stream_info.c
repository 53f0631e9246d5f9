/*
 * stream_info: what a stream tells its owner (stream.h): its callbacks
 * and data, whether it is TLS and in handshake, the session, the peer's
 * certificate name, the version and ALPN, the peer's address.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "relay/net/stream_internal.h"

void net_stream_set_callbacks(struct net_stream *s, const struct net_stream_callbacks *cb, void *data)
{
	if (cb)
		s->cb = *cb;
	else
		memset(&s->cb, 0, sizeof(s->cb));
	s->data = data;
}

void *net_stream_data(const struct net_stream *s)
{
	return s->data;
}

int net_stream_is_tls(const struct net_stream *s)
{
	return s->tls && !s->plain_fallback;
}

int net_stream_in_handshake(const struct net_stream *s)
{
	return s->handshaking;
}

int net_stream_session_reused(const struct net_stream *s)
{
	return s->reused;
}

int net_stream_peer_cn(const struct net_stream *s, char *buf, size_t len)
{
	if (!s->ssl || !s->open || !len)
		return -1;
	X509 *cert = SSL_get0_peer_certificate(s->ssl);
	if (!cert || SSL_get_verify_result(s->ssl) != X509_V_OK)
		return -1;
	X509_NAME *nm = X509_get_subject_name(cert);
	int i = X509_NAME_get_index_by_NID(nm, NID_commonName, -1);
	if (i < 0)
		return -1;
	const ASN1_STRING *d = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(nm, i));
	int n = ASN1_STRING_length(d);
	const unsigned char *p = ASN1_STRING_get0_data(d);
	/* A CN with a NUL inside would compare equal to a shorter name. */
	if (n < 0 || (size_t)n >= len || memchr(p, '\0', (size_t)n))
		return -1;
	memcpy(buf, p, (size_t)n);
	buf[n] = '\0';
	return n;
}

const char *net_stream_tls_version(const struct net_stream *s)
{
	return s->ssl && !s->plain_fallback ? SSL_get_version(s->ssl) : NULL;
}

const char *net_stream_alpn(const struct net_stream *s, char *buf, size_t len)
{
	if (!s->ssl || s->plain_fallback || !len)
		return NULL;
	const unsigned char *p = NULL;
	unsigned n = 0;
	SSL_get0_alpn_selected(s->ssl, &p, &n);
	snprintf(buf, len, "%.*s", (int)n, p ? (const char *)p : "");
	return buf;
}

int net_stream_peername(const struct net_stream *s, struct sockaddr_storage *ss)
{
	int len = sizeof(*ss);
	return uv_tcp_getpeername(&s->tcp, (struct sockaddr *)ss, &len);
}

int net_stream_peer_text(const struct net_stream *s, char *buf, size_t len)
{
	struct sockaddr_storage ss;
	if (len)
		buf[0] = '\0';
	int rc = net_stream_peername(s, &ss);
	if (rc < 0)
		return rc;
	char ip[64] = "?";
	int port = 0;
	if (ss.ss_family == AF_INET) {
		uv_ip4_name((struct sockaddr_in *)&ss, ip, sizeof(ip));
		port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
	} else if (ss.ss_family == AF_INET6) {
		uv_ip6_name((struct sockaddr_in6 *)&ss, ip, sizeof(ip));
		port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	}
	snprintf(buf, len, "%s:%d", ip, port);
	return 0;
}

uv_tcp_t *net_stream_tcp(struct net_stream *s)
{
	return &s->tcp;
}
