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

static void write_done(struct ingest_request *req, int rc);

/* The commit outcome as an HTTP answer: one table, in one place. */
int http_write_outcome(int rc, int result, const char *backend, const char *max_size, const char *max_age,
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
	/* The limits in the words of the configuration ("max_size 1GiB"),
	 * not in bytes: the operator finds and changes what was written. */
	if (rc == 0 && result == WAL_ELIMIT) {
		snprintf(msg, msglen, "queue for backend '%s' is full (max_size %s): write refused, retry later",
			 backend, max_size ? max_size : "?");
	} else if (rc == 0 && result == WAL_EAGE) {
		snprintf(msg, msglen, "queue for backend '%s' holds data older than its max_age%s%s%s: write refused, "
			 "retry later", backend, max_age ? " (" : "", max_age ? max_age : "", max_age ? ")" : "");
	} else if (rc == WAL_EFULL) {
		snprintf(msg, msglen, "queue storage is full (disk or LMDB map): write not stored, retry later");
	} else {
		snprintf(msg, msglen, "cannot commit to the queue: %s: write not stored, retry later",
			 wal_strerror(rc ? rc : result));
	}
	return 503;
}

static int too_long(const char *s)
{
	return s && strlen(s) > WAL_MAX_STRING;
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
	struct request *r = &c->req;
	const char *url = rbuf_cstr(&r->url);
	const char *q = strchr(url, '?');
	const char *query = q ? q + 1 : "";
	const char *invalid;
	char *consistency = NULL;
	int bad = 0, v2 = r->api == API_V2;
	char *precision = http_query_param(query, "precision", &bad);

	if (v2) {
		char *bucket = http_query_param(query, "bucket", &bad);
		r->org = http_query_param(query, "org", &bad);
		if (!r->org || !*r->org) {
			free(r->org);
			r->org = http_query_param(query, "orgID", &bad);
		}
		if (bucket) {
			/* "db/rp": the first '/' splits; "db/" is the default rp. */
			char *slash = strchr(bucket, '/');
			if (slash) {
				if (slash[1])
					r->rp = xstrdup(slash + 1);
				*slash = '\0';
			}
			r->db = bucket;
		}
	} else {
		r->db = http_query_param(query, "db", &bad);
		r->rp = http_query_param(query, "rp", &bad);
		consistency = http_query_param(query, "consistency", &bad);
		http_credentials_from_query(&r->cred, query, &bad);
	}
	if (http_credentials_from_header(&r->cred, r->authorization) < 0)
		http_set_error(c, 400, "malformed Basic authorization header");
	if (r->rp && !*r->rp) {
		free(r->rp);
		r->rp = NULL;
	}
	if (bad & 1)
		http_set_error(c, 400, "malformed percent-encoding in the query string");
	else if (bad & 2)
		http_set_error(c, 400, "names and credentials must not contain control characters (%%00)");
	else if ((invalid = http_credentials_invalid(&r->cred)))
		http_set_error(c, 400, "%s", invalid);
	else if (http_has_control(r->db) || http_has_control(r->rp) || http_has_control(r->org))
		/* Names reach query strings, export files (where a newline
		 * would start a directive of influx -import's) and the
		 * operator's terminal through relayctl. */
		http_set_error(c, 400, "%s must not contain control characters",
		          v2 ? "bucket and org" : "database and retention policy names");
	else if (too_long(r->db) || too_long(r->rp) || too_long(r->org) || too_long(r->cred.user) ||
	         too_long(r->cred.password) || too_long(r->cred.token))
		/* The queue record holds 65535 bytes of each; refused here, a
		 * longer one would fail at commit. */
		http_set_error(c, 400, "a name or credential is longer than %u bytes", WAL_MAX_STRING);
	else if ((!r->db || !*r->db) && v2)
		http_set_error(c, 400, "bucket is required (\"db/rp\" or \"db\")");
	else if (!r->db || !*r->db)
		http_set_error(c, 400, "database is required");
	else if (v2 && precision && *precision && strcmp(precision, "ns") && strcmp(precision, "us") &&
	         strcmp(precision, "ms") && strcmp(precision, "s"))
		http_set_error(c, 400, "invalid precision '%.40s' (want ns, us, ms or s)", precision);
	else if (lp_precision_parse(precision, &r->prec) < 0)
		http_set_error(c, 400, "invalid precision '%.40s' (want n, ns, u, us, µ, ms, s, m or h)", precision);
	else if (consistency && *consistency && strcmp(consistency, "any") && strcmp(consistency, "one") &&
		 strcmp(consistency, "quorum") && strcmp(consistency, "all"))
		http_set_error(c, 400, "invalid consistency '%.40s' (want any, one, quorum or all)", consistency);
	free(precision);
	free(consistency);
	/* Credentials are checked last so a 400 says what is wrong with
	 * the request whoever sends it; a 401 tells nothing about the rest. */
	http_auth_decide(c, "write");
}

void http_auth_decide(struct conn *c, const char *what)
{
	struct request *r = &c->req;
	struct http_server *s = c->srv;
	if (r->err_status || !s->cfg->auth_enabled)
		return;
	/* mTLS with tls.client_cert_auth: the client certificate, verified
	 * in the handshake, stands in for credentials the request does not
	 * bring. Credentials it does bring are checked as ever: a wrong
	 * password is not hidden behind a good certificate (and they travel
	 * on to the backends). */
	if (c->cert_ok && s->cfg->tls_client_cert_auth && !r->cred.user && !r->cred.token) {
		if (!c->cert_logged) {
			c->cert_logged = 1;
			relay_log(RELAY_LOG_DEBUG, "%s from %s: client certificate '%s' accepted as credentials", what,
			          c->peer, c->cert_cn);
		}
		return;
	}
	char why[160];
	int st = http_auth_check(s->cfg, &r->cred, why, sizeof(why));
	if (st) {
		/* Rate-limited, and without the secret. */
		relay_log_limited(&s->auth_log, RELAY_LOG_WARN, "%s from %s refused (%d): %s", what, c->peer, st, why);
		s->stats.auth_failures++;
	}
	if (st == 401)
		http_set_error(c, 401, "authentication required: send a user (u and p, or Basic) or a token (Authorization: Token)");
	else if (st == 403)
		http_set_error(c, 403, "authorization failed");
}

void http_handle_write(struct conn *c)
{
	struct request *r = &c->req;
	struct http_server *s = c->srv;
	const struct relay_config *cfg = s->cfg;
	enum lp_precision prec = r->prec;

	if (r->err_status) {
		if (r->err_status == 503) {
			s->stats.writes_refused++;
			relay_log_limited(&s->refusal_log, RELAY_LOG_WARN, "write from %s refused (503): %s", c->peer,
			                  r->err_msg);
			http_respond_error(c, 503, r->err_msg, "Retry-After: 1\r\n", 0);
		} else {
			s->stats.writes_rejected++;
			http_respond_error(c, r->err_status, r->err_msg, NULL, 0);
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
	rbuf_reset(&r->lp);
	if (lim.max_out == 0)
		lim.max_out = 1; /* 0 would mean unlimited */
	rc = lineproto_validate_limits(r->body.data ? r->body.data : "", r->body.len, lp_ns_to_precision(now, prec),
	                               &lim, &r->lp, &res, &lerr);
	/* Down to what it holds: doubling left up to half of it unused. */
	if (r->lp.cap > r->lp.len + 1) {
		r->lp.data = xrealloc(r->lp.data, r->lp.len + 1);
		r->lp.cap = r->lp.len + 1;
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
	r->points = res.lines;
	/* The compressed or raw body is not needed once stamped. */
	rbuf_release(&r->body);
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
	struct wal_batch *b = &r->ireq.batch;
	memset(b, 0, sizeof(*b));
	b->accept_ns = now;
	b->lines = res.lines;
	b->precision = (uint8_t)prec;
	b->db = r->db;
	b->rp = r->rp;
	b->user = r->cred.user;
	b->password = r->cred.password;
	b->token = r->cred.token;
	b->org = r->org;
	b->body = r->lp.data;
	b->body_len = r->lp.len;
	r->ireq.done = write_done;
	r->ireq.data = c;
	c->waiting = 1;
	c->refs++;
	ingest_submit(s->ing, &r->ireq);
}

int http_commit_returned(struct ingest_request *req, int rc, char *msg, size_t msglen, uint64_t *retry_after)
{
	struct conn *c = req->data;
	struct http_server *s = c->srv;
	const char *backend = "?", *max_size = NULL, *max_age = NULL;

	c->refs--;
	c->waiting = 0;
	if (req->batch.refused_by >= 0 && req->batch.refused_by < WAL_MAX_BACKENDS &&
	    s->ing->names[req->batch.refused_by]) {
		backend = s->ing->names[req->batch.refused_by];
		max_size = s->ing->max_size[req->batch.refused_by];
		max_age = s->ing->max_age[req->batch.refused_by];
	}
	int status = http_write_outcome(rc, req->batch.result, backend, max_size, max_age,
	                                s->cfg->queue_retry_after_s, msg, msglen, retry_after);
	if (c->closing) {
		/* The client left; the batch is committed (or not) all the same,
		 * there is just nobody to tell. */
		http_request_release(c);
		http_maybe_free(c);
		return 0;
	}
	return status;
}

static void write_done(struct ingest_request *req, int rc)
{
	struct conn *c = req->data;
	struct http_server *s = c->srv;
	char msg[400];
	uint64_t retry_after;
	int result = req->batch.result;

	/* Counted before http_commit_returned, which frees c (and may free
	 * s) when the client left: the points are committed all the same. */
	if (rc == 0 && result == 0) {
		s->stats.points_accepted += req->batch.lines;
		s->counts.bytes_accepted += req->batch.body_len;
	}
	/* Why, if it was refused: the status alone (503) does not tell a
	 * backend's limit from a failed commit. */
	if (rc == 0 && (result == WAL_ELIMIT || result == WAL_EAGE))
		c->req.refusal = 1 + REFUSAL_QUEUE_FULL;
	else if (rc == 0 && result == WAL_ETOOBIG)
		c->req.refusal = 1 + REFUSAL_TOO_LARGE;
	else
		c->req.refusal = 1 + REFUSAL_STORAGE_ERROR;
	int status = http_commit_returned(req, rc, msg, sizeof(msg), &retry_after);

	if (!status)
		return;
	if (status == 204) {
		s->stats.writes_ok++;
		http_respond(c, 204, NULL, NULL, 0, !llhttp_should_keep_alive(&c->parser), 0);
	} else {
		s->stats.writes_refused++;
		http_commit_refused(c, "write", status, msg, retry_after);
	}
	http_request_release(c);
	http_conn_continue(c);
}

void http_commit_refused(struct conn *c, const char *what, int status, const char *msg, uint64_t retry_after)
{
	char extra[64];
	snprintf(extra, sizeof(extra), "Retry-After: %" PRIu64 "\r\n", retry_after);
	/* One line per 10 s at most, with a count of what was suppressed: a
	 * full queue must not also fill the log. */
	relay_log_limited(&c->srv->refusal_log, RELAY_LOG_WARN, "%s from %s refused (%d): %s", what, c->peer, status,
	                  msg);
	http_respond_error(c, status, msg, extra, !llhttp_should_keep_alive(&c->parser));
}
