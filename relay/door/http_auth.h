/*
 * http_auth: the credentials a request brings to the door and whether they
 * are accepted (auth.enabled). Reads InfluxDB's forms (u and p in the
 * query, an Authorization header: Basic, Token or Bearer) and compares them
 * with the configured users and tokens. It knows no endpoint and no
 * connection, so every endpoint that takes InfluxDB's credentials shares
 * one reading of them and one comparison.
 */
#ifndef RELAY_HTTP_AUTH_H
#define RELAY_HTTP_AUTH_H

#include <stddef.h>

#include "relay/base/config.h"

/*
 * What one request carries. Each string is NULL when absent, else a
 * malloc'd copy owned by the struct until http_credentials_free(). A
 * zeroed struct is empty. Batches point into these strings, so they must
 * outlive a write's commit.
 */
struct http_credentials {
	char *user;     /* u, or the user of Basic */
	char *password; /* p ("" when u came without it), or the password of Basic */
	char *token;    /* the value of Token or Bearer (InfluxDB 1.8 also takes "name:password") */
};

/*
 * Take u and p from query string q (without the '?'), as InfluxDB 1.x
 * does on /write and /query: user and password when u is present (password
 * "" without p), nothing otherwise. Decoding problems are ORed into *bad as
 * http_query_param() reports them (1: malformed escape, 2: a NUL byte); the
 * caller answers 400 for them. Call on an empty cr.
 */
void http_credentials_from_query(struct http_credentials *cr, const char *q, int *bad);

/*
 * Take the credentials of Authorization header value a (NULL: no header).
 * Basic "user:password" sets user and password unless a user came in the
 * query already (that one wins); Token and Bearer set token; any other
 * scheme is ignored. Returns 0, or -1 when Basic does not decode to
 * "user:password" (the caller answers 400), leaving cr as it was.
 */
int http_credentials_from_header(struct http_credentials *cr, const char *a);

/*
 * Whether cr may travel on to the backends with a batch: NULL, or the
 * message of the 400 to answer (a control character anywhere, a ':' in a
 * user name when there is no token). The message is a static string.
 */
const char *http_credentials_invalid(const struct http_credentials *cr);

/*
 * Compare cr with cfg's users and tokens: a listed user's name and
 * password (u/p or Basic), or a listed token (Token or Bearer, also a
 * user's "name:password" given as a token). Returns 0 when accepted, 401
 * when cr carries nothing, 403 when what it carries is not accepted; for
 * 401 and 403 why gets the reason for the log (never the secret, the user
 * name made printable and cut), else why is left as it was. A password or
 * token is compared in time that depends only on the length of what the
 * client sent, never on how much of a secret it guessed.
 */
int http_auth_check(const struct relay_config *cfg, const struct http_credentials *cr, char *why, size_t whylen);

/* Free cr's strings and empty it. cr may be empty already. */
void http_credentials_free(struct http_credentials *cr);

#endif
