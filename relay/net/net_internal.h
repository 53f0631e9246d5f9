/*
 * net_internal: what tls.c and stream.c share; private to relay/net/.
 */
#ifndef RELAY_NET_INTERNAL_H
#define RELAY_NET_INTERNAL_H

#include <stddef.h>
#include <openssl/ssl.h>

#include "relay/net/tls.h"

/* One cached client session: the last one a server gave for key
 * ("name:port"). */
struct net_tls_session {
	char *key;
	SSL_SESSION *sess;
	struct net_tls_session *next;
};

struct net_tls_ctx {
	int refs;
	int server;
	int insecure;   /* client: insecure_skip_verify */
	int client_ca;  /* server: client certificates required */
	SSL_CTX *ssl;
	struct net_tls_session *sessions;
};

/*
 * What the verify callback saw first go wrong, kept per SSL object (its
 * app data is the stream, which embeds this): OpenSSL reports only a code
 * once the handshake has failed, and the certificate it failed on may not
 * be in the session by then.
 */
struct net_verify_note {
	long err;       /* X509_V_ERR_*; 0: nothing failed */
	int depth;      /* of the certificate it failed on (0: the peer's own) */
	char subject[256], issuer[256], not_after[40], names[256];
};

/* The note of ssl's stream (SSL app data), or NULL. */
struct net_verify_note *net_stream_verify_note(SSL *ssl);

/* The verify callback both kinds of context install: records the first
 * failure in the stream's note, then returns preverify_ok unchanged. */
int net_tls_verify_cb(int preverify_ok, X509_STORE_CTX *x);

/* The cached session for key (not a new reference), or NULL. */
SSL_SESSION *net_tls_session_get(struct net_tls_ctx *ctx, const char *key);

/* Keep sess for key (taking the caller's reference), replacing the old
 * one; sess NULL forgets key. */
void net_tls_session_put(struct net_tls_ctx *ctx, const char *key, SSL_SESSION *sess);

/* The key the stream of ssl caches its session under, or NULL (SSL app
 * data). */
const char *net_stream_session_key(SSL *ssl);

/* Append OpenSSL's error queue (emptied) to buf as "; "-separated reasons. */
void net_tls_errors(char *buf, size_t len);

/* Describe cert into the note's subject, issuer, not_after and names. */
void net_tls_describe_cert(X509 *cert, struct net_verify_note *n);

#endif
