/*
 * backend_api: a batch as a write request in the backend's API. See
 * backend_api.h for the translation rules.
 */
#include "relay/delivery/backend_api.h"
#include "relay/base/json.h"
#include "relay/base/lineproto.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Query values: everything but RFC 3986's unreserved characters escaped. */
static void append_urlenc(struct rbuf *b, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
		    c == '_' || c == '.' || c == '~') {
			rbuf_appendc(b, (char)c);
		} else {
			rbuf_appendc(b, '%');
			rbuf_appendc(b, hex[c >> 4]);
			rbuf_appendc(b, hex[c & 15]);
		}
	}
}


/* Bytes that would end a header line or smuggle one in. The door refuses
 * credentials holding them; this keeps any that got into the queue (or the
 * configuration) from reaching a backend's request raw. */
static int unsafe(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			return 1;
	return 0;
}

__attribute__((format(printf, 4, 5)))
static int refuse(int code, char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	if (errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return code;
}

/* "Authorization: Token T[:MORE]". A control byte refuses it (code, whose
 * value the reason names): sent without it, the write would reach the
 * backend unauthenticated or be held for good on its 401. */
static int token(struct rbuf *h, const char *t, size_t tlen, const char *more, int code, const char *whose,
                 char *err, size_t errlen)
{
	if (unsafe(t, tlen) || (more && unsafe(more, strlen(more))))
		return refuse(code, err, errlen, "not sent: %s holds a control byte, which cannot go into a header",
			      whose);
	rbuf_append(h, "Authorization: Token ", 21);
	rbuf_append(h, t, tlen);
	if (more) {
		rbuf_appendc(h, ':');
		rbuf_append(h, more, strlen(more));
	}
	rbuf_append(h, "\r\n", 2);
	return 0;
}

/* Credentials travel in a header, never in the URL (URLs end up in logs).
 * Basic needs no check: base64 holds no control byte. */
static int auth(const struct relay_backend_config *cfg, const struct wal_batch *b, struct rbuf *h, char *err,
                size_t errlen)
{
	int v2 = cfg->type == RELAY_API_V2;

	/* The backend's own credentials replace the writer's. */
	if (cfg->username) {
		rbuf_append_basic_auth(h, cfg->username, strlen(cfg->username), cfg->password);
		return 0;
	}
	if (cfg->token)
		return token(h, cfg->token, strlen(cfg->token), NULL, BACKEND_API_ECONFIG, "the backend's token", err,
			     errlen);
	if (b->user && *b->user) {
		if (v2)
			return token(h, b->user, strlen(b->user), b->password ? b->password : "", BACKEND_API_EBATCH,
				     "the writer's user or password", err, errlen);
		rbuf_append_basic_auth(h, b->user, strlen(b->user), b->password ? b->password : "");
		return 0;
	}
	if (b->token && *b->token) {
		const char *colon = strchr(b->token, ':');
		/* "Token user:password" is InfluxDB 1.8's; a 1.x server before
		 * 1.8 knows only Basic for the same thing. */
		if (!v2 && colon) {
			rbuf_append_basic_auth(h, b->token, (size_t)(colon - b->token), colon + 1);
			return 0;
		}
		return token(h, b->token, strlen(b->token), NULL, BACKEND_API_EBATCH, "the writer's token", err,
			     errlen);
	}
	return 0;
}

/* A precision code read from the queue is a byte: one relayd does not
 * know (a damaged or future record) must not reach lp_precision_name,
 * which stops relayd, nor be guessed. */
static int known_precision(int prec)
{
	return prec >= LP_PRECISION_NS && prec <= LP_PRECISION_H;
}

int64_t backend_api_rescale(const struct relay_backend_config *cfg, int prec, int *sent_prec)
{
	*sent_prec = prec;
	if (cfg->type != RELAY_API_V2)
		return 1;
	/* InfluxDB 2 takes ns, us, ms and s only. */
	if (prec == LP_PRECISION_M || prec == LP_PRECISION_H) {
		*sent_prec = LP_PRECISION_S;
		return prec == LP_PRECISION_M ? 60 : 3600;
	}
	return 1;
}

/* InfluxDB 2's names. A batch in minutes or hours reaches here only if
 * its rescale to seconds failed: it is labelled as it is, so that the
 * server refuses it (and it is dead-lettered) rather than taking the
 * timestamps in the wrong unit. */
static const char *v2_precision(int prec)
{
	switch (prec) {
	case LP_PRECISION_NS: return "ns";
	case LP_PRECISION_US: return "us";
	case LP_PRECISION_MS: return "ms";
	case LP_PRECISION_S: return "s";
	case LP_PRECISION_M: return "m";
	default: return "h";
	}
}

int backend_api_request(const struct relay_backend_config *cfg, const struct wal_batch *b, struct rbuf *target,
                        struct rbuf *headers, char *err, size_t errlen)
{
	/* The label is the batch's own precision: replay_round_rescale
	 * has already turned a v2 backend's minutes and hours into seconds. */
	int prec = b->precision;

	if (!known_precision(prec))
		return refuse(BACKEND_API_EBATCH, err, errlen, "not sent: the batch's precision code %d is unknown",
			      prec);

	rbuf_append(target, cfg->path_prefix, strlen(cfg->path_prefix));
	if (cfg->type == RELAY_API_V2) {
		const char *org = cfg->org ? cfg->org : b->org;
		rbuf_append(target, "/api/v2/write?bucket=", 21);
		append_urlenc(target, b->db);
		if (b->rp && *b->rp) {
			rbuf_append(target, "%2F", 3);
			append_urlenc(target, b->rp);
		}
		if (org && *org) {
			rbuf_append(target, "&org=", 5);
			append_urlenc(target, org);
		}
		rbuf_appendf(target, "&precision=%s", v2_precision(prec));
	} else {
		rbuf_append(target, "/write?db=", 10);
		append_urlenc(target, b->db);
		if (b->rp && *b->rp) {
			rbuf_append(target, "&rp=", 4);
			append_urlenc(target, b->rp);
		}
		rbuf_appendf(target, "&precision=%s", lp_precision_name((enum lp_precision)prec));
	}
	return auth(cfg, b, headers, err, errlen);
}

int backend_api_scale_timestamps(const char *body, size_t len, int64_t factor, struct rbuf *out)
{
	const char *p = body, *e = body + len;

	while (p < e) {
		size_t klen;
		const char *next = lp_line_end(p, e, &klen);
		const char *end = next > p && next[-1] == '\n' ? next - 1 : next;
		const char *ts = end;
		/* The timestamp is the last field: after the line's last blank,
		 * a space or a tab (string fields, which may hold blanks, all
		 * come before it). */
		while (ts > p && ts[-1] != ' ' && ts[-1] != '\t')
			ts--;
		const char *d = ts;
		int neg = d < end && *d == '-';
		int64_t v = 0;
		d += neg;
		if (ts == p || d == end)
			return -1; /* not validated line protocol */
		/* Parsed by hand: the body need not be NUL-terminated. */
		for (; d < end; d++) {
			if (*d < '0' || *d > '9' || v > (INT64_MAX - (*d - '0')) / 10)
				return -1;
			v = v * 10 + (*d - '0');
		}
		if (v > INT64_MAX / factor)
			return -1;
		rbuf_append(out, p, (size_t)(ts - p));
		rbuf_appendf(out, "%s%" PRId64 "\n", neg ? "-" : "", v * factor);
		p = next;
	}
	return 0;
}

int backend_api_create_database(const struct relay_backend_config *cfg, const struct wal_batch *b,
                                struct rbuf *target, struct rbuf *headers, char *err, size_t errlen)
{
	struct rbuf q = RBUF_INIT;

	/* An InfluxQL identifier in double quotes: " and \ escaped. */
	rbuf_append(&q, "CREATE DATABASE \"", 17);
	for (const char *s = b->db; *s; s++) {
		if (*s == '"' || *s == '\\')
			rbuf_appendc(&q, '\\');
		rbuf_appendc(&q, *s);
	}
	rbuf_appendc(&q, '"');
	rbuf_append(target, cfg->path_prefix, strlen(cfg->path_prefix));
	rbuf_append(target, "/query?q=", 9);
	append_urlenc(target, rbuf_cstr(&q));
	rbuf_release(&q);
	return auth(cfg, b, headers, err, errlen);
}

/*---- statements (/query) ----*/

int backend_api_statement(const struct relay_backend_config *cfg, const struct wal_batch *b, struct rbuf *target,
                          struct rbuf *headers, struct rbuf *body, char *err, size_t errlen)
{
	size_t n = b->body_len;
	if (n && b->body[n - 1] == '\n')
		n--;
	if (!n)
		return refuse(BACKEND_API_EBATCH, err, errlen, "not sent: the statement is empty");
	/* The text may hold any byte; percent-encoding carries it whole. */
	char *q = xmalloc(n + 1);
	memcpy(q, b->body, n);
	q[n] = '\0';
	if (strlen(q) != n) {
		free(q);
		return refuse(BACKEND_API_EBATCH, err, errlen, "not sent: the statement holds a NUL byte");
	}
	rbuf_append(body, "q=", 2);
	append_urlenc(body, q);
	free(q);
	if (b->db && *b->db) {
		rbuf_append(body, "&db=", 4);
		append_urlenc(body, b->db);
	}
	if (b->rp && *b->rp) {
		rbuf_append(body, "&rp=", 4);
		append_urlenc(body, b->rp);
	}
	rbuf_append(target, cfg->path_prefix, strlen(cfg->path_prefix));
	rbuf_append(target, "/query", 6);
	return auth(cfg, b, headers, err, errlen);
}

/* The first "error" of a /query answer: at the top, or in a result. */
static const char *query_error(const json_t *doc)
{
	const char *e = rjson_get_str(doc, "error", NULL);
	if (e)
		return e;
	const json_t *results = json_object_get(doc, "results");
	size_t i;
	const json_t *r;
	json_array_foreach(results, i, r) {
		if ((e = rjson_get_str(r, "error", NULL)))
			return e;
	}
	return NULL;
}

enum outcome backend_api_statement_outcome(int status, const char *body, size_t len, char *err, size_t errlen)
{
	if (errlen)
		err[0] = '\0';
	if (status < 200 || status >= 300) {
		/* Transport failures, 408, 429, 5xx: as for a write. Every other
		 * refusal (4xx, a statement no request can carry) is for good. */
		if (status == OUTCOME_STATUS_UNSENDABLE || (status >= 400 && status < 500 && status != 408 && status != 429))
			return OUTCOME_DEAD;
		return OUTCOME_RETRY;
	}
	/* A 2xx without a body reports no error (InfluxDB always sends its
	 * JSON; a proxy may answer 204). */
	size_t blank = 0;
	while (body && blank < len && (body[blank] == ' ' || body[blank] == '\n' || body[blank] == '\r' ||
	                               body[blank] == '\t'))
		blank++;
	if (!body || blank == len)
		return OUTCOME_DELIVERED;
	char perr[120];
	json_t *doc = rjson_parse(body ? body : "", body ? len : 0, perr, sizeof(perr));
	if (!doc || !json_is_object(doc)) {
		if (errlen)
			snprintf(err, errlen, "the answer to the statement is not a JSON object%s%s", doc ? "" : ": ",
				 doc ? "" : perr);
		json_decref(doc);
		return OUTCOME_RETRY;
	}
	const char *e = query_error(doc);
	enum outcome o = OUTCOME_DELIVERED;
	if (e) {
		if (errlen)
			snprintf(err, errlen, "%s", e);
		o = strstr(e, "database not found") ? OUTCOME_NO_DATABASE : OUTCOME_DEAD;
	}
	json_decref(doc);
	return o;
}

/* Whether p[0..e) starts with keyword kw (any case) followed by a blank
 * (or, with at_end, the end). */
static const char *keyword(const char *p, const char *e, const char *kw)
{
	size_t n = strlen(kw);
	if ((size_t)(e - p) < n || strncasecmp(p, kw, n) != 0)
		return NULL;
	p += n;
	if (p < e && !isspace((unsigned char)*p) && *p != '"')
		return NULL;
	while (p < e && isspace((unsigned char)*p))
		p++;
	return p;
}

/* The database one statement p[0..e) creates, as backend_api_created_database. */
static int created_one(const char *p, const char *e, char *out, size_t outlen)
{
	size_t n = 0;
	while (p < e && isspace((unsigned char)*p))
		p++;
	if (!outlen || !(p = keyword(p, e, "CREATE")) || !(p = keyword(p, e, "DATABASE")) || p >= e)
		return 0;
	if (*p == '"') {
		for (p++; p < e && *p != '"'; p++) {
			if (*p == '\\' && p + 1 < e)
				p++;
			if (n + 1 >= outlen)
				return 0;
			out[n++] = *p;
		}
		if (p >= e)
			return 0; /* no closing quote */
	} else {
		for (; p < e && (isalnum((unsigned char)*p) || *p == '_'); p++) {
			if (n + 1 >= outlen)
				return 0;
			out[n++] = *p;
		}
	}
	out[n] = '\0';
	return n > 0;
}

int backend_api_created_database(const char *text, size_t len, size_t *at, char *out, size_t outlen)
{
	const char *e = text + len;
	while (*at < len) {
		/* This statement: up to a semicolon outside quotes. */
		const char *p = text + *at, *q = p;
		char quote = 0;
		for (; q < e; q++) {
			if (quote) {
				if (*q == '\\' && q + 1 < e)
					q++;
				else if (*q == quote)
					quote = 0;
			} else if (*q == '"' || *q == '\'') {
				quote = *q;
			} else if (*q == ';') {
				break;
			}
		}
		*at = (size_t)(q - text) + (q < e);
		if (created_one(p, q, out, outlen))
			return 1;
	}
	return 0;
}
