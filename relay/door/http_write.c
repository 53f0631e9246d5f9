/*
 * http_write: the write endpoints, POST /write (v1) and /api/v2/write (v2).
 * Parameters and credentials are decided when the headers are in, so a
 * refused write's body is never kept; a complete body is validated line by
 * line (what every backend would refuse is refused here, naming the line),
 * stamped, and handed to ingest; the answer waits for the commit. Must
 * never answer 204 before ingest says the commit returned.
 */

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relay/door/http_internal.h"

/*---- parameters and credentials ----*/

/* The length v[0..vl) decodes to (each %XY is one byte; '+' is one). */
static size_t decoded_len(const char *v, size_t vl)
{
	size_t n = 0;
	for (size_t i = 0; i < vl; i++, n++)
		if (v[i] == '%')
			i += 2;
	return n;
}

/* Find query parameter name in q (q without '?'); returns a decoded copy,
 * NULL if absent; *bad gets 1 for a malformed escape, 2 for a NUL byte. */
char *http_query_param(const char *q, const char *name, int *bad)
{
	size_t nl = strlen(name);
	const char *p = q;
	while (p && *p) {
		const char *amp = strchr(p, '&');
		size_t seg = amp ? (size_t)(amp - p) : strlen(p);
		if (seg >= nl && memcmp(p, name, nl) == 0 && (seg == nl || p[nl] == '=')) {
			const char *v = seg == nl ? p + nl : p + nl + 1;
			size_t vl = seg == nl ? 0 : seg - nl - 1;
			char *d = url_decode(v, vl);
			if (!d)
				*bad |= 1;
			else if (strlen(d) != decoded_len(v, vl))
				*bad |= 2; /* a %00 would cut the name short unseen */
			return d;
		}
		p = amp ? amp + 1 : NULL;
	}
	return NULL;
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

static void parse_authorization(struct conn *c)
{
	const char *a = c->req.authorization;
	if (!a)
		return;
	if (strncasecmp(a, "Basic ", 6) == 0) {
		char *dec = b64_decode(a + 6);
		char *colon = dec ? strchr(dec, ':') : NULL;
		if (!colon) {
			free(dec);
			http_set_error(c, 400, "malformed Basic authorization header");
			return;
		}
		if (!c->req.user) {
			c->req.user = xstrndup(dec, (size_t)(colon - dec));
			free(c->req.password);
			c->req.password = xstrdup(colon + 1);
		}
		free(dec);
	} else if (strncasecmp(a, "Token ", 6) == 0) {
		c->req.token = xstrdup(a + 6);
	} else if (strncasecmp(a, "Bearer ", 7) == 0) {
		c->req.token = xstrdup(a + 7);
	}
}

static void write_done(struct ingest_request *req, int rc);

/* The commit outcome as an HTTP answer: one table, in one place. */
int http_write_outcome(int rc, int result, const char *backend, uint64_t limit_bytes,
                       uint64_t retry_after_s, char *msg, size_t msglen, uint64_t *retry_after)
{
	*retry_after = 0;
	msg[0] = '\0';
	if (rc == 0 && result == 0)
		return 204;
	if (rc == 0 && result == WAL_ETOOBIG) {
		/* The door checks the sizes first; this is the queue's own
		 * refusal, for the one batch only. */
		snprintf(msg, msglen, "request too large for the queue: %s", wal_strerror(result));
		return 413;
	}
	*retry_after = retry_after_s;
	if (rc == 0 && result == WAL_ELIMIT) {
		snprintf(msg, msglen, "queue for backend '%s' is full (limit %" PRIu64 " bytes): write refused, retry later",
			 backend, limit_bytes);
	} else if (rc == 0 && result == WAL_EAGE) {
		snprintf(msg, msglen, "queue for backend '%s' holds data older than its max_age: write refused, retry later",
			 backend);
	} else if (rc == WAL_EFULL) {
		snprintf(msg, msglen, "queue storage is full (disk or LMDB map): write not stored, retry later");
	} else {
		snprintf(msg, msglen, "cannot commit to the queue: %s: write not stored, retry later",
			 wal_strerror(rc ? rc : result));
	}
	return 503;
}

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

static int too_long(const char *s)
{
	return s && strlen(s) > WAL_MAX_STRING;
}

static int has_control(const char *s)
{
	for (; s && *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return 1;
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

/*
 * With auth on: 0 when the request carries a listed user's name and
 * password (u/p or Basic) or a listed token (Token or Bearer; also
 * InfluxDB 1.8's "Token name:password"), else 401 without credentials
 * or 403 with wrong ones, logged (rate-limited) without the secret.
 */
static int authenticate(struct conn *c)
{
	struct http_server *s = c->srv;
	const struct relay_config *cfg = s->cfg;
	char who[80];

	if (c->req.token) {
		const char *colon = strchr(c->req.token, ':');
		for (size_t i = 0; i < cfg->nauth_tokens; i++)
			if (secret_equal(c->req.token, cfg->auth_tokens[i].token))
				return 0;
		if (colon && user_ok(cfg, c->req.token, (size_t)(colon - c->req.token), colon + 1))
			return 0;
		relay_log_limited(&s->auth_log, RELAY_LOG_WARN,
		                  "write from %s refused (403): token not accepted", c->peer);
		return 403;
	}
	if (c->req.user) {
		if (user_ok(cfg, c->req.user, strlen(c->req.user), c->req.password ? c->req.password : ""))
			return 0;
		relay_log_limited(&s->auth_log, RELAY_LOG_WARN,
		                  "write from %s refused (403): user '%s' unknown or wrong password",
		                  c->peer, log_safe(who, sizeof(who), c->req.user));
		return 403;
	}
	relay_log_limited(&s->auth_log, RELAY_LOG_WARN,
	                  "write from %s refused (401): no credentials", c->peer);
	return 401;
}

/*
 * Read a write's parameters and credentials as soon as its headers are
 * in, and decide whether it may write at all. A refused write's body is
 * then read and dropped, never buffered (a 25 MiB body from a client
 * without credentials costs nothing), and Expect: 100-continue gets the
 * refusal instead of "100 Continue".
 *
 * v1: /write?db=&rp=&precision=&consistency=&u=&p=
 * v2: /api/v2/write?org=&bucket=&precision=, bucket "db/rp" or "db" (the
 *     form InfluxDB 1.8 takes); the org is kept with the batch.
 */
void http_prepare_write(struct conn *c)
{
	struct http_server *s = c->srv;
	const char *url = rbuf_cstr(&c->req.url);
	const char *q = strchr(url, '?');
	const char *query = q ? q + 1 : "";
	char *consistency = NULL;
	int bad = 0, v2 = c->req.api == API_V2;
	char *precision = http_query_param(query, "precision", &bad);

	if (v2) {
		char *bucket = http_query_param(query, "bucket", &bad);
		c->req.org = http_query_param(query, "org", &bad);
		if (!c->req.org || !*c->req.org) {
			free(c->req.org);
			c->req.org = http_query_param(query, "orgID", &bad);
		}
		if (bucket) {
			/* "db/rp": the first '/' splits; "db/" is the default rp. */
			char *slash = strchr(bucket, '/');
			if (slash) {
				if (slash[1])
					c->req.rp = xstrdup(slash + 1);
				*slash = '\0';
			}
			c->req.db = bucket;
		}
	} else {
		c->req.db = http_query_param(query, "db", &bad);
		c->req.rp = http_query_param(query, "rp", &bad);
		consistency = http_query_param(query, "consistency", &bad);
		char *u = http_query_param(query, "u", &bad);
		char *pw = http_query_param(query, "p", &bad);
		if (u) {
			c->req.user = u;
			c->req.password = pw ? pw : xstrdup("");
		} else {
			free(pw);
		}
	}
	parse_authorization(c);
	if (c->req.rp && !*c->req.rp) {
		free(c->req.rp);
		c->req.rp = NULL;
	}
	if (bad & 1)
		http_set_error(c, 400, "malformed percent-encoding in the query string");
	else if (bad & 2)
		http_set_error(c, 400, "names and credentials must not contain control characters (%%00)");
	else if (has_control(c->req.user) || has_control(c->req.password) || has_control(c->req.token))
		/* They travel with the batch into backend requests' headers,
		 * where a CR LF would start a header (or a request) of its own. */
		http_set_error(c, 400, "credentials must not contain control characters");
	else if (c->req.user && strchr(c->req.user, ':') && !c->req.token)
		/* Forwarded as Basic "user:password", where the first ':' ends
		 * the user: a backend would read another user and hold the
		 * queue on its 401. */
		http_set_error(c, 400, "a user name must not contain ':'");
	else if (has_control(c->req.db) || has_control(c->req.rp) || has_control(c->req.org))
		/* Names reach query strings, export files (where a newline
		 * would start a directive of influx -import's) and the
		 * operator's terminal through relayctl. */
		http_set_error(c, 400, "%s must not contain control characters",
		          v2 ? "bucket and org" : "database and retention policy names");
	else if (too_long(c->req.db) || too_long(c->req.rp) || too_long(c->req.org) || too_long(c->req.user) ||
	         too_long(c->req.password) || too_long(c->req.token))
		/* The queue record holds 65535 bytes of each; refused here, a
		 * longer one would fail at commit. */
		http_set_error(c, 400, "a name or credential is longer than %u bytes", WAL_MAX_STRING);
	else if ((!c->req.db || !*c->req.db) && v2)
		http_set_error(c, 400, "bucket is required (\"db/rp\" or \"db\")");
	else if (!c->req.db || !*c->req.db)
		http_set_error(c, 400, "database is required");
	else if (v2 && precision && *precision && strcmp(precision, "ns") && strcmp(precision, "us") &&
	         strcmp(precision, "ms") && strcmp(precision, "s"))
		http_set_error(c, 400, "invalid precision '%.40s' (want ns, us, ms or s)", precision);
	else if (lp_precision_parse(precision, &c->req.prec) < 0)
		http_set_error(c, 400, "invalid precision '%.40s' (want n, ns, u, us, µ, ms, s, m or h)", precision);
	else if (consistency && *consistency && strcmp(consistency, "any") && strcmp(consistency, "one") &&
		 strcmp(consistency, "quorum") && strcmp(consistency, "all"))
		http_set_error(c, 400, "invalid consistency '%.40s' (want any, one, quorum or all)", consistency);
	free(precision);
	free(consistency);
	/* Credentials are checked last so a 400 says what is wrong with
	 * the request whoever sends it; a 401 tells nothing about the rest. */
	if (!c->req.err_status && s->cfg->auth_enabled) {
		int st = authenticate(c);
		if (st == 401)
			http_set_error(c, 401, "authentication required: send a user (u and p, or Basic) or a token (Authorization: Token)");
		else if (st == 403)
			http_set_error(c, 403, "authorization failed");
		if (st)
			s->stats.auth_failures++;
	}
}

void http_handle_write(struct conn *c)
{
	struct http_server *s = c->srv;
	const struct relay_config *cfg = s->cfg;
	enum lp_precision prec = c->req.prec;

	if (c->req.err_status) {
		if (c->req.err_status == 503) {
			s->stats.writes_refused++;
			relay_log_limited(&s->refusal_log, RELAY_LOG_WARN, "write from %s refused (503): %s", c->peer,
			                  c->req.err_msg);
			http_respond_error(c, 503, c->req.err_msg, "Retry-After: 1\r\n", 0);
		} else {
			s->stats.writes_rejected++;
			http_respond_error(c, c->req.err_status, c->req.err_msg, NULL, 0);
		}
		return;
	}

	/* Validate every line before anything is queued, and stamp lines
	 * without a timestamp with the acceptance time (a replay hours later
	 * must not move them to the replay time). What every backend would
	 * refuse is refused here, while the writer can still hear it. The
	 * stamped copy grows within what is left of the buffer budget and
	 * what a queue record holds. */
	struct lp_result res;
	struct lp_error lerr;
	int64_t now = now_realtime_ns();
	uint64_t max = cfg->http_max_buffered_bytes;
	uint64_t room = s->buffered < max ? max - s->buffered : 0;
	struct lp_limits lim = {
		.max_line = cfg->http_max_line_bytes,
		.max_out = room < WAL_MAX_BODY ? (size_t)room : WAL_MAX_BODY,
		.precision = prec,
		.flags = config_lp_flags(cfg),
	};
	int rc;
	rbuf_reset(&c->req.lp);
	if (lim.max_out == 0)
		lim.max_out = 1; /* 0 would mean unlimited */
	rc = lineproto_validate_limits(c->req.body.data ? c->req.body.data : "", c->req.body.len, lp_ns_to_precision(now, prec),
	                               &lim, &c->req.lp, &res, &lerr);
	/* Down to what it holds: doubling left up to half of it unused. */
	if (c->req.lp.cap > c->req.lp.len + 1) {
		c->req.lp.data = xrealloc(c->req.lp.data, c->req.lp.len + 1);
		c->req.lp.cap = c->req.lp.len + 1;
	}
	http_budget_sync(c);
	if (rc < 0 && lerr.too_big) {
		int st = lim.max_out == WAL_MAX_BODY || s->buffered == c->held ? 413 : 503;
		if (st == 413 && lim.max_out == WAL_MAX_BODY)
			http_set_error(c, 413, "request's queued form exceeds the %" PRIu64 " bytes a queue record holds",
			          (uint64_t)WAL_MAX_BODY);
		else
			http_budget_refuse(c, st);
		http_handle_write(c);
		return;
	}
	if (rc < 0) {
		char msg[300];
		snprintf(msg, sizeof(msg), "line %zu: %s (nothing of this request was queued)", lerr.line, lerr.msg);
		s->stats.writes_rejected++;
		http_respond_error(c, 400, msg, NULL, 0);
		return;
	}
	/* The compressed or raw body is not needed once stamped. */
	rbuf_release(&c->req.body);
	http_budget_sync(c);
	if (res.lines == 0) {
		/* Nothing to queue: an empty body or only comments. */
		s->stats.writes_ok++;
		http_respond(c, 204, NULL, NULL, 0, 0, 0);
		return;
	}
	if (!s->ing) {
		http_respond(c, 204, NULL, NULL, 0, 0, 0);
		return;
	}
	struct wal_batch *b = &c->req.ireq.batch;
	memset(b, 0, sizeof(*b));
	b->accept_ns = now;
	b->lines = res.lines;
	b->precision = (uint8_t)prec;
	b->db = c->req.db;
	b->rp = c->req.rp;
	b->user = c->req.user;
	b->password = c->req.password;
	b->token = c->req.token;
	b->org = c->req.org;
	b->body = c->req.lp.data;
	b->body_len = c->req.lp.len;
	c->req.ireq.done = write_done;
	c->req.ireq.data = c;
	c->waiting = 1;
	c->refs++;
	ingest_submit(s->ing, &c->req.ireq);
}

static void write_done(struct ingest_request *req, int rc)
{
	struct conn *c = req->data;
	struct http_server *s = c->srv;
	const struct relay_config *cfg = s->cfg;
	char msg[400];
	uint64_t retry_after;
	const char *backend = "?";
	uint64_t limit = 0;

	c->refs--;
	c->waiting = 0;
	if (req->batch.refused_by >= 0 && req->batch.refused_by < WAL_MAX_BACKENDS &&
	    s->ing->names[req->batch.refused_by]) {
		backend = s->ing->names[req->batch.refused_by];
		limit = s->ing->limits[req->batch.refused_by];
	}
	int status = http_write_outcome(rc, req->batch.result, backend, limit, cfg->queue_retry_after_s,
					msg, sizeof(msg), &retry_after);
	if (c->closing) {
		/* The client left; the batch is committed (or not) all the same,
		 * there is just nobody to tell. */
		http_request_release(c);
		http_maybe_free(c);
		return;
	}
	if (status == 204) {
		s->stats.writes_ok++;
		s->stats.points_accepted += req->batch.lines;
		http_respond(c, 204, NULL, NULL, 0, !llhttp_should_keep_alive(&c->parser), 0);
	} else {
		char extra[64];
		s->stats.writes_refused++;
		snprintf(extra, sizeof(extra), "Retry-After: %" PRIu64 "\r\n", retry_after);
		/* One line per 10 s at most, with a count of what was
		 * suppressed: a full queue must not also fill the log. */
		relay_log_limited(&s->refusal_log, RELAY_LOG_WARN, "write from %s refused (503): %s",
		                  c->peer, msg);
		http_respond_error(c, status, msg, extra, !llhttp_should_keep_alive(&c->parser));
	}
	http_request_release(c);
	http_conn_continue(c);
}
