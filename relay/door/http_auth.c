/*
 * http_auth: inbound credentials (relay/door/http_auth.h). Pure functions
 * of the request's strings and the configuration: no connection, no
 * logging, so that whichever endpoint reads credentials decides, logs and
 * answers in its own words.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relay/door/http_auth.h"
#include "relay/door/http_internal.h"

/*---- reading them ----*/

void http_credentials_from_query(struct http_credentials *cr, const char *q, int *bad)
{
	char *u = http_query_param(q, "u", bad);
	char *pw = http_query_param(q, "p", bad);
	if (u) {
		cr->user = u;
		cr->password = pw ? pw : xstrdup("");
	} else {
		free(pw);
	}
}

static int b64val(int ch)
{
	if (ch >= 'A' && ch <= 'Z') return ch - 'A';
	if (ch >= 'a' && ch <= 'z') return ch - 'a' + 26;
	if (ch >= '0' && ch <= '9') return ch - '0' + 52;
	if (ch == '+') return 62;
	if (ch == '/') return 63;
	return -1;
}

/* Decode base64 s into a new string (NULL if malformed). */
static char *b64_decode(const char *s)
{
	size_t n = strlen(s);
	char *out = xmalloc(n + 1);
	size_t o = 0;
	unsigned acc = 0;
	int bits = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '=')
			break;
		int v = b64val((unsigned char)s[i]);
		if (v < 0) {
			free(out);
			return NULL;
		}
		acc = (acc << 6) | (unsigned)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (char)((acc >> bits) & 0xff);
			if (out[o - 1] == '\0') {
				/* would cut the user or password short unseen */
				free(out);
				return NULL;
			}
		}
	}
	out[o] = '\0';
	return out;
}

int http_credentials_from_header(struct http_credentials *cr, const char *a)
{
	if (!a)
		return 0;
	if (strncasecmp(a, "Basic ", 6) == 0) {
		char *dec = b64_decode(a + 6);
		char *colon = dec ? strchr(dec, ':') : NULL;
		if (!colon) {
			free(dec);
			return -1;
		}
		if (!cr->user) {
			cr->user = xstrndup(dec, (size_t)(colon - dec));
			free(cr->password);
			cr->password = xstrdup(colon + 1);
		}
		free(dec);
	} else if (strncasecmp(a, "Token ", 6) == 0) {
		free(cr->token);
		cr->token = xstrdup(a + 6);
	} else if (strncasecmp(a, "Bearer ", 7) == 0) {
		free(cr->token);
		cr->token = xstrdup(a + 7);
	}
	return 0;
}

const char *http_credentials_invalid(const struct http_credentials *cr)
{
	/* They travel with the batch into backend requests' headers, where a
	 * CR LF would start a header (or a request) of its own. */
	if (http_has_control(cr->user) || http_has_control(cr->password) || http_has_control(cr->token))
		return "credentials must not contain control characters";
	/* Forwarded as Basic "user:password", where the first ':' ends the
	 * user: a backend would read another user and hold the queue on its
	 * 401. */
	if (cr->user && strchr(cr->user, ':') && !cr->token)
		return "a user name must not contain ':'";
	return NULL;
}

void http_credentials_free(struct http_credentials *cr)
{
	free(cr->user);
	free(cr->password);
	free(cr->token);
	cr->user = cr->password = cr->token = NULL;
}

/*---- checking them ----*/

/* a == b for secrets: the time taken depends on the length of a (what
 * the client sent) only, never on how much of a secret it guessed. */
static int secret_equal(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	unsigned char d = la != lb;
	for (size_t i = 0; i < la; i++)
		d |= (unsigned char)(a[i] ^ b[lb ? i % lb : 0]);
	return d == 0;
}

static int user_ok(const struct relay_config *cfg, const char *name, size_t name_len, const char *password)
{
	for (size_t i = 0; i < cfg->nauth_users; i++) {
		const struct relay_user_config *u = &cfg->auth_users[i];
		if (strlen(u->name) == name_len && memcmp(u->name, name, name_len) == 0)
			return secret_equal(password, u->password);
	}
	return 0;
}

/* A client's string made safe for one log line: printable ASCII, cut. */
static const char *log_safe(char *buf, size_t size, const char *s)
{
	size_t n = 0;
	for (; *s && n + 1 < size; s++)
		buf[n++] = (*s >= 0x20 && *s < 0x7f) ? *s : '?';
	buf[n] = '\0';
	return buf;
}

int http_auth_check(const struct relay_config *cfg, const struct http_credentials *cr, char *why, size_t whylen)
{
	char who[80];

	/* A token, when there is one, decides alone, whatever u and p say. */
	if (cr->token) {
		const char *colon = strchr(cr->token, ':');
		for (size_t i = 0; i < cfg->nauth_tokens; i++)
			if (secret_equal(cr->token, cfg->auth_tokens[i].token))
				return 0;
		if (colon && user_ok(cfg, cr->token, (size_t)(colon - cr->token), colon + 1))
			return 0;
		snprintf(why, whylen, "token not accepted");
		return 403;
	}
	if (cr->user) {
		if (user_ok(cfg, cr->user, strlen(cr->user), cr->password ? cr->password : ""))
			return 0;
		snprintf(why, whylen, "user '%s' unknown or wrong password", log_safe(who, sizeof(who), cr->user));
		return 403;
	}
	snprintf(why, whylen, "no credentials");
	return 401;
}
