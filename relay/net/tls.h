/*
 * tls: OpenSSL contexts for the transport layer (stream.h). A server
 * context is the door's certificate chain and key (and, for mTLS, the CA
 * its clients' certificates must chain to); a client context is how a
 * backend is verified (the system's CA store, or a CA file or directory),
 * with an optional client certificate, a minimum version, and the
 * sessions kept for resumption.
 *
 * A context is immutable once made (except the client's session cache)
 * and reference-counted: every stream holds a reference to the context it
 * was made with, so a reload makes a new context and drops its own
 * reference to the old one; open connections keep theirs until they
 * close, new connections get the new one. Contexts and their counts
 * belong to the loop thread (no locking).
 *
 * Errors follow the set-up convention (CONTRIBUTING.md): the functions that
 * load files return 0 or -1 and write a whole message into err.
 */
#ifndef RELAY_NET_TLS_H
#define RELAY_NET_TLS_H

#include <stddef.h>

struct net_tls_ctx;

/* The door's TLS: PEM files. */
struct net_tls_server_opts {
	const char *cert_file;      /* the certificate chain, leaf first (required) */
	const char *key_file;       /* its private key (required) */
	const char *client_ca_file; /* NULL: no client certificates asked; else every client must
	                             * present one that chains to a CA in this file (mTLS) */
};

/* The minimum TLS version a client context accepts. */
enum net_tls_version {
	NET_TLS_1_2 = 0, /* the default */
	NET_TLS_1_3 = 1,
};

/* How a backend is verified and what this side presents. */
struct net_tls_client_opts {
	const char *ca_file;  /* trusted CAs (PEM), or NULL; with ca_dir NULL too, OpenSSL's
	                       * default verify paths, which honour SSL_CERT_FILE and SSL_CERT_DIR */
	const char *ca_dir;   /* a hashed CA directory (openssl rehash), or NULL */
	const char *cert_file; /* client certificate chain for mTLS, or NULL */
	const char *key_file;  /* its key; required with cert_file */
	enum net_tls_version min_version;
	int insecure_skip_verify; /* 1: neither the chain nor the name is checked (the caller
	                           * logs a warning at every start, as the issue asks) */
};

/*
 * Make a server context: TLS 1.2 minimum, OpenSSL's default ciphers, ALPN
 * "http/1.1" (chosen when the client offers it; a client offering only
 * other protocols gets no ALPN answer rather than an alert), small idle
 * buffers (SSL_MODE_RELEASE_BUFFERS). Refused, with a message in err: a
 * file missing or unreadable, a chain or key that does not parse, a key
 * that does not match the certificate, a client CA file without a
 * certificate. An expired certificate is loaded (refusing it would stop
 * relayd from starting, and a reload would keep an equally expired one):
 * the caller asks net_tls_ctx_expiry and warns. On success *out holds the
 * one reference the caller owns (net_tls_ctx_unref). Returns 0 or -1.
 */
int net_tls_server_ctx_new(const struct net_tls_server_opts *o, struct net_tls_ctx **out, char *err,
                           size_t errlen);

/*
 * Make a client context: peer verification with the CAs above (or none
 * with insecure_skip_verify), the minimum version, a client certificate
 * if given, ALPN "http/1.1" offered, and a cache of one session per
 * server name and port for resumption. Refused, with a message: a CA file
 * or directory, certificate or key that cannot be loaded, a key without a
 * certificate or one that does not match it. Returns 0 or -1; *out as
 * above.
 */
int net_tls_client_ctx_new(const struct net_tls_client_opts *o, struct net_tls_ctx **out, char *err,
                           size_t errlen);

/* One more reference to ctx (returned). */
struct net_tls_ctx *net_tls_ctx_ref(struct net_tls_ctx *ctx);

/* Drop a reference; the last one frees the context and its cached
 * sessions. NULL is ignored. */
void net_tls_ctx_unref(struct net_tls_ctx *ctx);

/* 1 for a server context, 0 for a client context. */
int net_tls_ctx_is_server(const struct net_tls_ctx *ctx);

/*
 * When the context's own certificate (the server's, or the client's for
 * mTLS) stops being valid: *seconds from now (negative: expired that long
 * ago) and, if when is not NULL, the date as text ("Jan  1 00:00:00 2027
 * GMT"). Returns 0, or -1 when the context has no certificate.
 */
int net_tls_ctx_expiry(const struct net_tls_ctx *ctx, long long *seconds, char *when, size_t whenlen);

/* Forget the cached sessions of a client context (all of them): the next
 * connection to each server makes a full handshake. */
void net_tls_ctx_flush_sessions(struct net_tls_ctx *ctx);

#endif
