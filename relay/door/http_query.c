/*
 * http_query: GET and POST /query, POST /api/v2/query. docs/influxdb.md
 * ("Queries") says what each statement class gets; docs/architecture.md
 * ("The query pass-through") draws the path.
 *
 * A read (and anything relayd cannot classify but that names no state
 * change) goes to one backend, the first that is up and caught up
 * (relay/query/router.h), and its answer is streamed back as it comes:
 * nothing but one read of it is held. CREATE DATABASE and CREATE
 * RETENTION POLICY are not passed through: they are queued for every
 * backend, in order with the writes, and answered once committed. Other
 * state changes are refused (query.state_changing: refuse) or queued the
 * same way (queue). KILL QUERY is always refused: a query id belongs to
 * one server.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "relay/base/influxql.h"
#include "relay/door/http_internal.h"
#include "relay/door/ingest.h"
#include "relay/query/router.h"

/* Statements of one query looked at; more are counted (iql_split). */
#define MAX_STMTS 64

/* One query being passed through; c->qp while it lasts. */
struct query_proxy {
	struct conn *c;
	struct upstream *up;
	uint64_t excluded;      /* target indexes whose connect failed */
	int target;             /* the index tried now */
	char name[WAL_NAME_MAX + 1];
	char behind[32];        /* X-Relayd-Behind, "" when caught up */
	int chunked;            /* the answer goes to the client chunked */
	int head_sent;
	int paused;
	int keep;               /* the client keeps its connection */
	int status;
	char first_error[1100]; /* the first connect failure, for the answer when none is left
	                         * (a certificate's is long: which, why, what to change) */
	int verify_failed;      /* a backend's certificate failed verification: 502, not 503 */
};

static void proxy_start(struct conn *c);

/*---- parameters ----*/

/* A url-encoded form, by its media type as Go's mime.ParseMediaType reads
 * it: the type, case-insensitive, then nothing or parameters after ';'. */
static int is_form(const struct request *r)
{
	static const char form[] = "application/x-www-form-urlencoded";
	const char *t = r->content_type;
	if (!t || strncasecmp(t, form, sizeof(form) - 1) != 0)
		return 0;
	t += sizeof(form) - 1;
	while (*t == ' ' || *t == '\t')
		t++;
	return *t == '\0' || *t == ';';
}

static int is_multipart(const struct request *r)
{
	return r->content_type && strncasecmp(r->content_type, "multipart/", 10) == 0;
}

/*
 * A parameter as InfluxDB reads it (Go's Request.FormValue): the first
 * among a url-encoded POST body's pairs, then the URL's. A decoded copy
 * (the caller frees it), NULL when absent; *count gets how many pairs of
 * that name there are in both; *bad as http_form_value(), with 2 also for
 * a NUL byte anywhere in a form body (relayd and Go would read past it
 * differently).
 */
static char *form_value(struct conn *c, const char *name, size_t *count, int *bad)
{
	struct request *r = &c->req;
	char *v = NULL;
	*count = 0;
	if (llhttp_get_method(&c->parser) == HTTP_POST && is_form(r)) {
		if (r->body.len && memchr(r->body.data, '\0', r->body.len))
			*bad |= 2;
		v = http_form_value(r->body.data ? r->body.data : "", r->body.len, name, count, bad);
	}
	const char *url = rbuf_cstr(&r->url);
	const char *q = strchr(url, '?');
	if (q) {
		char *u = http_form_value(q + 1, strlen(q + 1), name, count, bad);
		if (v)
			free(u);
		else
			v = u;
	}
	return v;
}

void http_prepare_query(struct conn *c)
{
	struct request *r = &c->req;
	const char *url = rbuf_cstr(&r->url);
	const char *q = strchr(url, '?');
	const char *invalid;
	int bad = 0;

	/* InfluxDB takes u and p from the URL only (not from a form body),
	 * and Authorization: the door reads them as for a write. */
	http_credentials_from_query(&r->cred, q ? q + 1 : "", &bad);
	if (http_credentials_from_header(&r->cred, r->authorization) < 0)
		http_set_error(c, 400, "malformed Basic authorization header");
	else if (bad & 1)
		http_set_error(c, 400, "malformed percent-encoding in the query string");
	else if (bad & 2)
		http_set_error(c, 400, "credentials must not contain control characters (%%00)");
	else if ((invalid = http_credentials_invalid(&r->cred)))
		http_set_error(c, 400, "%s", invalid);
	http_auth_decide(c, "query");
}

/*---- the answer to a statement queued for every backend ----*/

static void statements_done(struct ingest_request *req, int rc)
{
	struct conn *c = req->data;
	struct http_server *s = c->srv;
	char msg[400];
	uint64_t retry_after;
	int status = http_commit_returned(req, rc, msg, sizeof(msg), &retry_after);

	if (!status)
		return;
	int keep = llhttp_should_keep_alive(&c->parser);
	if (status == 204) {
		/* What InfluxDB answers for them: one empty result each. */
		struct rbuf body = RBUF_INIT;
		json_t *o = json_object(), *arr = json_array();
		for (uint32_t i = 0; i < c->req.nstmts; i++) {
			json_t *st = json_object();
			json_object_set_new(st, "statement_id", json_integer(i));
			json_array_append_new(arr, st);
		}
		json_object_set_new(o, "results", arr);
		rjson_append_new(&body, o);
		rbuf_appendc(&body, '\n');
		s->stats.queries_queued++;
		http_respond(c, 200, NULL, body.data, body.len, !keep, 0);
		rbuf_release(&body);
	} else {
		s->stats.query_errors++;
		http_commit_refused(c, "query", status, msg, retry_after);
	}
	http_request_release(c);
	http_conn_continue(c);
}

/* Queue the query text q for every backend, as one statement batch. */
static void queue_statements(struct conn *c, const char *q, size_t nstmts, int replicate)
{
	struct request *r = &c->req;
	struct http_server *s = c->srv;
	int bad = 0;

	size_t count;
	/* CREATE DATABASE and CREATE RETENTION POLICY name their database in
	 * the statement (ON is required): queued with no db, they never wait
	 * behind the held writes of the db parameter's database, whose
	 * creation may be the very thing those writes wait for. Other state
	 * changes (state_changing: queue) keep the query's db (read already,
	 * by http_handle_query) and rp. */
	free(r->rp);
	r->rp = NULL;
	if (replicate) {
		free(r->db);
		r->db = NULL;
	} else {
		r->rp = form_value(c, "rp", &count, &bad);
	}
	int close = !llhttp_should_keep_alive(&c->parser);
	if (bad || http_has_control(r->db) || http_has_control(r->rp)) {
		s->stats.query_errors++;
		http_respond_error(c, 400, "database and retention policy names must not contain control characters",
		                   NULL, close);
		return;
	}
	if (!s->ing) {
		http_respond(c, 200, NULL, "{\"results\":[]}\n", 15, close, 0);
		return;
	}
	rbuf_reset(&r->lp);
	rbuf_append(&r->lp, q, strlen(q));
	rbuf_appendc(&r->lp, '\n');
	http_budget_sync(c);
	struct wal_batch *b = &r->ireq.batch;
	memset(b, 0, sizeof(*b));
	b->kind = WAL_KIND_STATEMENT;
	b->accept_ns = now_realtime_ns();
	/* lines = 0 in the queue (no points); kept here, until the commit
	 * returns, as the count of statements to answer for. */
	b->db = r->db ? r->db : "";
	b->rp = r->rp ? r->rp : "";
	b->user = r->cred.user;
	b->password = r->cred.password;
	b->token = r->cred.token;
	b->body = r->lp.data;
	b->body_len = r->lp.len;
	r->ireq.done = statements_done;
	r->ireq.data = c;
	r->nstmts = (uint32_t)nstmts;
	c->waiting = 1;
	c->refs++;
	ingest_submit(s->ing, &r->ireq);
}

/*---- statement classes ----*/

/* Refuse the query as InfluxDB refuses one it will not run (a parse error):
 * 400 with the message in the body and in X-Influxdb-Error, which the influx
 * CLI and the client libraries show. */
static void refuse(struct conn *c, const char *msg)
{
	struct rbuf extra = RBUF_INIT;
	rbuf_appendf(&extra, "X-Influxdb-Error: %s\r\n", msg);
	c->srv->stats.query_errors++;
	http_respond_error(c, 400, msg, rbuf_cstr(&extra), !llhttp_should_keep_alive(&c->parser));
	rbuf_release(&extra);
}

/*
 * Decide what a v1 query gets from its statements: 1 when relayd answers
 * it (refused now, or queued: c->waiting until the commit returns), 0
 * when it goes to a backend.
 */
static int classify(struct conn *c, const char *q)
{
	struct http_server *s = c->srv;
	struct iql_stmt st[MAX_STMTS];
	size_t n = 0;
	char msg[300];
	enum iql_class cls = iql_split(q, strlen(q), st, MAX_STMTS, &n, NULL, 0);
	size_t seen = n < MAX_STMTS ? n : MAX_STMTS;
	const struct iql_stmt *write = NULL, *repl = NULL, *read = NULL, *kill = NULL;

	for (size_t i = 0; i < seen; i++) {
		if (strncmp(st[i].verb, "KILL", 4) == 0 && !kill)
			kill = &st[i];
		if (st[i].cls == IQL_WRITE && !write)
			write = &st[i];
		else if (st[i].cls == IQL_REPLICATE && !repl)
			repl = &st[i];
		else if (st[i].cls == IQL_READ && !read)
			read = &st[i];
	}
	if (cls == IQL_EMPTY || cls == IQL_READ)
		return 0;
	if (n > seen) {
		/* Statements past those looked at may change state. */
		snprintf(msg, sizeof(msg), "this query has %zu statements and not only reads: relayd looks at %d at " /* plural-ok: n >= 2 */
		         "most; send the statements that change state apart", n, MAX_STMTS); /* plural-ok: n > seen >= 1 */
		refuse(c, msg);
		return 1;
	}
	if (!write && !repl)
		return 0; /* not InfluxQL as far as relayd can tell, and no state change: InfluxDB's parser judges */
	if (kill) {
		refuse(c, "KILL QUERY is not passed through relayd: a query id belongs to one InfluxDB; "
		          "run it on the InfluxDB that runs the query");
		return 1;
	}
	const struct iql_stmt *change = write ? write : repl;
	if (read) {
		snprintf(msg, sizeof(msg), "this query mixes %s with %s: relayd sends a read to one InfluxDB and "
		         "queues %s for every one; send them as separate queries", read->verb, change->verb,
		         change->verb);
		refuse(c, msg);
		return 1;
	}
	if (write && s->cfg->query_state_changing != RELAY_STATE_QUEUE) {
		snprintf(msg, sizeof(msg), "%s is refused by relayd: sent to one InfluxDB it would change that one "
		         "and not the others, or overtake writes still queued; run it on every InfluxDB directly, "
		         "or set query.state_changing: queue", write->verb);
		refuse(c, msg);
		return 1;
	}
	if (cls == IQL_INVALID) {
		/* A state change relayd cannot read whole: it cannot be queued
		 * as it is, and a backend would refuse it anyway. */
		snprintf(msg, sizeof(msg), "%s: relayd cannot read this query to queue it for every InfluxDB; check "
		         "its syntax", change->verb);
		refuse(c, msg);
		return 1;
	}
	queue_statements(c, q, n, write == NULL);
	return 1;
}

int http_handle_query(struct conn *c)
{
	struct request *r = &c->req;
	struct http_server *s = c->srv;
	int keep = llhttp_should_keep_alive(&c->parser);

	s->stats.queries++;
	r->query_start_ns = now_mono_ns();
	if (r->err_status) {
		s->stats.query_errors++;
		http_respond_error(c, r->err_status, r->err_msg, r->err_status == 503 ? "Retry-After: 1\r\n" : NULL,
		                   !keep);
		return 1;
	}
	if (r->query == QUERY_V1) {
		int bad = 0;
		size_t count = 0;
		if (llhttp_get_method(&c->parser) == HTTP_POST && is_multipart(r)) {
			/* InfluxDB also reads q from a multipart form or file;
			 * relayd would have to parse it to tell a read from a
			 * state change, and must not pass on what it cannot tell. */
			refuse(c, "relayd does not read a query sent as a multipart form: send it in the q parameter");
			return 1;
		}
		/* The q relayd classifies must be the one InfluxDB runs: any
		 * doubt about which that is, and the query is refused. */
		char *q = form_value(c, "q", &count, &bad);
		/* The database it reads, for the choice of a backend (one that
		 * holds this database's writes lacks them). */
		size_t ndb = 0;
		free(r->db);
		r->db = form_value(c, "db", &ndb, &bad);
		const char *doubt = bad & 1 ? "malformed percent-encoding in the query string or form" :
		                    bad & 2 ? "a NUL byte in the query string or form" :
		                    bad & 4 ? "a raw ';' in the q or db pair of the query string (encode it as %3B)" :
		                    count > 1 ? "more than one q parameter" : NULL;
		if (doubt) {
			free(q);
			refuse(c, doubt);
			return 1;
		}
		int answered = q ? classify(c, q) : 0;
		free(q);
		if (answered)
			return !c->waiting;
	}
	r->query_arrival_ns = now_realtime_ns();
	proxy_start(c);
	return c->qp || r->query_waiting ? 0 : 1;
}

/*---- passing a query through ----*/

/* "Host: host:port", an IPv6 literal in brackets. */
static void append_host(struct rbuf *h, const struct http_query_target *t)
{
	int v6 = strchr(t->host, ':') != NULL;
	rbuf_appendf(h, "Host: %s%s%s:%u\r\n", v6 ? "[" : "", t->host, v6 ? "]" : "", t->port);
}

/* The URL's query string without u and p (the backend's own credentials
 * replace the client's). */
static void append_query_without_credentials(struct rbuf *h, const char *q)
{
	int first = 1;
	while (q && *q) {
		size_t seg = strcspn(q, "&");
		int cred = (seg >= 1 && (q[0] == 'u' || q[0] == 'p') && (seg == 1 || q[1] == '='));
		if (!cred && seg) {
			rbuf_appendc(h, first ? '?' : '&');
			rbuf_append(h, q, seg);
			first = 0;
		}
		q += seg + (q[seg] == '&');
	}
}

/* The request head for target t: the client's request with the backend's
 * prefix, credentials as for a write, the headers that matter. */
static void build_head(struct conn *c, const struct http_query_target *t, struct rbuf *h)
{
	struct request *r = &c->req;
	const char *url = rbuf_cstr(&r->url);
	const char *q = strchr(url, '?');
	size_t plen = q ? (size_t)(q - url) : strlen(url);
	int own = t->token || t->username;
	int post = llhttp_get_method(&c->parser) == HTTP_POST;

	rbuf_appendf(h, "%s %s", post ? "POST" : "GET", t->path_prefix ? t->path_prefix : "");
	rbuf_append(h, url, plen);
	if (own)
		append_query_without_credentials(h, q ? q + 1 : NULL);
	else if (q)
		rbuf_append(h, q, strlen(q));
	rbuf_append(h, " HTTP/1.1\r\n", 11);
	append_host(h, t);
	/* No "Connection: close": the connection goes back to the pool for
	 * the next query to this backend (upstream.h). */
	if (t->token) {
		rbuf_appendf(h, "Authorization: Token %s\r\n", t->token);
	} else if (t->username) {
		rbuf_append_basic_auth(h, t->username, strlen(t->username), t->password);
	} else if (r->authorization) {
		rbuf_appendf(h, "Authorization: %s\r\n", r->authorization);
	}
	if (r->fwd.len)
		rbuf_append(h, r->fwd.data, r->fwd.len);
	if (post)
		rbuf_appendf(h, "Content-Length: %zu\r\n", r->body.len);
	rbuf_append(h, "\r\n", 2);
}

static void proxy_free(struct conn *c)
{
	struct query_proxy *qp = c->qp;
	if (!qp)
		return;
	if (qp->up)
		upstream_cancel(qp->up);
	c->qp = NULL;
	free(qp);
}

/* The answers InfluxDB gives that relayd passes on as they are. */
static int passed_header(const char *name)
{
	static const char *const names[] = {
		"Content-Type", "Content-Encoding", "X-Influxdb-Error", "X-Influxdb-Version", "X-Influxdb-Build",
		"Request-Id", "X-Request-Id",
	};
	for (size_t i = 0; i < RELAY_ARRAY_SIZE(names); i++)
		if (strcasecmp(name, names[i]) == 0)
			return 1;
	return 0;
}

static void copy_header(char *dst, size_t len, const char *v)
{
	if (!http_has_control(v) && strlen(v) < len)
		snprintf(dst, len, "%s", v);
}

static void on_head(struct upstream *u, int status, const struct upstream_header *h, size_t nh,
                    int64_t content_length, void *arg)
{
	struct conn *c = arg;
	struct query_proxy *qp = c->qp;
	struct http_server *s = c->srv;
	struct rbuf out = RBUF_INIT;
	int have_version = 0;
	(void)u;

	qp->status = status;
	rbuf_appendf(&out, "HTTP/1.1 %d %s\r\n", status, http_status_text(status));
	for (size_t i = 0; i < nh; i++) {
		if (!passed_header(h[i].name) || http_has_control(h[i].value))
			continue;
		if (strcasecmp(h[i].name, "X-Influxdb-Version") == 0) {
			have_version = 1;
			copy_header(s->backend_version, sizeof(s->backend_version), h[i].value);
		} else if (strcasecmp(h[i].name, "X-Influxdb-Build") == 0) {
			copy_header(s->backend_build, sizeof(s->backend_build), h[i].value);
		}
		rbuf_appendf(&out, "%s: %s\r\n", h[i].name, h[i].value);
	}
	if (!have_version)
		http_version_headers(s, &out);
	else
		rbuf_appendf(&out, "X-Relayd-Version: %s\r\n", RELAYD_VERSION);
	rbuf_appendf(&out, "X-Relayd-Backend: %s\r\n", qp->name);
	if (qp->behind[0])
		rbuf_appendf(&out, "X-Relayd-Behind: %s\r\n", qp->behind);
	if (status == 204 || status == 304) {
		/* no body, no framing */
	} else if (content_length >= 0) {
		rbuf_appendf(&out, "Content-Length: %" PRId64 "\r\n", content_length);
	} else if (c->parser.http_major == 1 && c->parser.http_minor == 0) {
		/* An HTTP/1.0 client knows no chunks: the end of the
		 * connection ends the answer. */
		qp->keep = 0;
	} else {
		qp->chunked = 1;
		rbuf_append(&out, "Transfer-Encoding: chunked\r\n", 28);
	}
	if (!qp->keep)
		rbuf_append(&out, "Connection: close\r\n", 19);
	rbuf_append(&out, "\r\n", 2);
	qp->head_sent = 1;
	if (status >= 400)
		s->stats.query_errors++;
	if (qp->behind[0])
		s->counts.query_behind++;
	http_count_answer(c, status);
	http_send_raw(c, out.data, out.len);
}

static void on_body(struct upstream *u, const char *p, size_t n, void *arg)
{
	struct conn *c = arg;
	struct query_proxy *qp = c->qp;
	char *buf;
	size_t len = 0;

	if (!n)
		return;
	if (qp->chunked) {
		buf = xmalloc(n + 32);
		len = (size_t)snprintf(buf, 32, "%zx\r\n", n);
		memcpy(buf + len, p, n);
		len += n;
		memcpy(buf + len, "\r\n", 2);
		len += 2;
	} else {
		buf = xmalloc(n);
		memcpy(buf, p, n);
		len = n;
	}
	c->srv->stats.query_bytes += n;
	http_send_raw(c, buf, len);
	if (c->closing)
		return; /* the write failed: http_conn_close cancelled u */
	if (c->out_queued > OUT_HIGH && !qp->paused) {
		/* The client reads slower than the backend answers: stop
		 * reading the backend until it catches up. A client that stops
		 * reading altogether is closed after http.idle_timeout. */
		qp->paused = 1;
		upstream_pause(u);
		http_set_timer(c, T_IDLE);
	}
}

/* The request is written: its body (a form, or Flux) is not needed again,
 * and a long answer should not hold it in the budget. */
static void on_sent(struct upstream *u, void *arg)
{
	struct conn *c = arg;
	(void)u;
	rbuf_release(&c->req.body);
	http_budget_sync(c);
}

void http_query_drained(struct conn *c)
{
	struct query_proxy *qp = c->qp;
	if (!qp || !qp->paused || !qp->up)
		return;
	qp->paused = 0;
	http_set_timer(c, T_NONE);
	upstream_resume(qp->up);
}

void http_query_abort(struct conn *c)
{
	proxy_free(c);
}

static void on_done(struct upstream *u, int rc, enum upstream_stage stage, const char *msg, void *arg)
{
	struct conn *c = arg;
	struct query_proxy *qp = c->qp;
	struct http_server *s = c->srv;
	(void)u;

	qp->up = NULL;
	if (rc == 0) {
		int keep = qp->keep, chunked = qp->chunked;
		/* Freed first: a failing write closes c, which frees it too. */
		proxy_free(c);
		if (chunked)
			http_send_raw(c, xstrdup("0\r\n\r\n"), 5);
		http_answer_end(c, !keep);
		return;
	}
	relay_log_limited(&s->query_log, RELAY_LOG_WARN, "query from %s to backend '%s' failed: %s", c->peer,
	                  qp->name, msg);
	if (qp->head_sent) {
		/* Part of the answer is out: the client can only learn of the
		 * failure from a connection that ends before the answer does. */
		s->stats.query_errors++;
		proxy_free(c);
		http_answer_end(c, 1);
		return;
	}
	if (stage == UPSTREAM_CONNECTING) {
		/* The backend saw nothing: another one may answer. */
		if (qp->target >= 0 && qp->target < 64)
			qp->excluded |= 1ULL << qp->target;
		if (!qp->first_error[0])
			snprintf(qp->first_error, sizeof(qp->first_error), "backend '%s': %.1000s", qp->name, msg);
		if (rc == UPSTREAM_EVERIFY)
			qp->verify_failed = 1;
		proxy_start(c);
		if (!c->qp && !c->req.query_waiting)
			http_answer_end(c, !llhttp_should_keep_alive(&c->parser));
		return;
	}
	char err[1100];
	snprintf(err, sizeof(err), "backend '%s': %.1000s", qp->name, msg);
	int keep = qp->keep;
	proxy_free(c);
	s->stats.query_errors++;
	http_respond_error(c, rc == UV_ETIMEDOUT ? 504 : 502, err, NULL, !keep);
	http_answer_end(c, !keep);
}

/*
 * Read your writes. A backend counts as caught up while what it has not
 * delivered is younger than query.max_lag; but a client that writes and
 * then reads (a script, the influx shell's insert then select, Telegraf's
 * CREATE DATABASE then a dashboard) expects its own writes in the answer,
 * as InfluxDB gives them. So a query to a backend that delivers (up) and
 * still has writes pending that were accepted before the query waits for
 * them, polling (T_QWAIT, backing off), for at most max_lag from the query's
 * arrival; after that it goes as the router says (a backend still that far
 * behind is no longer caught up). A backend that is not up, or chosen as
 * the least behind, is not waited for: its delivery is not moving.
 */
static int must_wait(const struct request *r, const struct http_query_target *t, const struct query_choice *ch,
                     int64_t now, int64_t max_lag)
{
	return t->up && !ch->behind && t->oldest_pending_ns != 0 && t->oldest_pending_ns <= r->query_arrival_ns &&
	       now - r->query_arrival_ns < max_lag;
}

void http_query_wait_tick(struct conn *c)
{
	proxy_start(c);
	if (!c->qp && !c->req.query_waiting)
		http_answer_end(c, !llhttp_should_keep_alive(&c->parser));
}

/*
 * Choose a backend and send the query to it: c->qp while it runs. When
 * none can take it, the answer (503) is queued and c->qp is NULL.
 */
static void proxy_start(struct conn *c)
{
	struct http_server *s = c->srv;
	const struct relay_config *cfg = s->cfg;
	struct http_query_target t[RELAY_MAX_BACKENDS];
	struct query_backend_view v[RELAY_MAX_BACKENDS];
	struct query_choice ch;
	int keep = llhttp_should_keep_alive(&c->parser);
	size_t n = s->targets_fn ? s->targets_fn(s->targets_arg, c->req.db, t, RELAY_MAX_BACKENDS) : 0;
	int64_t now = now_realtime_ns();
	uint64_t excluded = c->qp ? c->qp->excluded : 0;

	if (c->req.query_waiting) {
		c->req.query_waiting = 0;
		http_set_timer(c, T_NONE);
	}

	for (size_t i = 0; i < n; i++) {
		v[i].name = t[i].name;
		v[i].up = t[i].up;
		v[i].paused = t[i].paused;
		v[i].oldest_pending_ns = t[i].oldest_pending_ns;
	}
	int64_t max_lag = cfg->query_max_lag_ms > INT64_MAX / 1000000 ? INT64_MAX :
	                  (int64_t)cfg->query_max_lag_ms * 1000000;
	enum query_policy pol = cfg->query_when_behind == RELAY_BEHIND_REFUSE ? QUERY_REFUSE : QUERY_LEAST_BEHIND;
	if (query_route(v, n, excluded, now, max_lag, pol, &ch) < 0) {
		char why[400], msg[1200];
		int status = 503;
		if (c->qp && c->qp->first_error[0]) {
			snprintf(msg, sizeof(msg), "no query backend reachable: %s", c->qp->first_error);
			/* A certificate refused is no passing unavailability: as a
			 * gateway that got no valid answer, 502. */
			if (c->qp->verify_failed)
				status = 502;
		}
		else if (n == 0)
			snprintf(msg, sizeof(msg), "no query backend configured");
		else
			snprintf(msg, sizeof(msg), "no query backend is caught up within query.max_lag (%" PRIu64 " ms): %s",
			         cfg->query_max_lag_ms, query_route_explain(v, n, excluded, now, why, sizeof(why)));
		proxy_free(c);
		s->stats.query_errors++;
		http_respond_error(c, status, msg, status == 503 ? "Retry-After: 1\r\n" : NULL, !keep);
		return;
	}
	if (must_wait(&c->req, &t[ch.index], &ch, now, max_lag)) {
		struct request *r = &c->req;
		r->query_waiting = 1;
		r->query_poll_ms = !r->query_poll_ms ? 1 : r->query_poll_ms * 2 > QWAIT_POLL_MAX_MS ? QWAIT_POLL_MAX_MS :
		                   r->query_poll_ms * 2;
		http_set_timer(c, T_QWAIT);
		return;
	}
	struct query_proxy *qp = c->qp;
	if (!qp) {
		qp = xcalloc(1, sizeof(*qp));
		qp->c = c;
		qp->keep = keep;
		c->qp = qp;
		s->stats.queries_proxied++;
	}
	const struct http_query_target *tg = &t[ch.index];
	qp->excluded = excluded;
	qp->target = ch.index;
	snprintf(qp->name, sizeof(qp->name), "%s", tg->name);
	qp->behind[0] = '\0';
	if (ch.behind)
		query_fmt_lag(ch.lag_ns, qp->behind, sizeof(qp->behind));

	struct rbuf head = RBUF_INIT;
	build_head(c, tg, &head);
	struct upstream_request rq = {
		.host = tg->host,
		.port = tg->port,
		.tls = tg->tls,
		.server_name = tg->server_name,
		.head = head.data,
		.head_len = head.len,
		.body = c->req.body.data,
		.body_len = llhttp_get_method(&c->parser) == HTTP_POST ? c->req.body.len : 0,
		.connect_timeout_ms = tg->connect_timeout_ms,
		.idle_timeout_ms = cfg->query_timeout_ms,
		.pool = s->pool,
	};
	static const struct upstream_callbacks cbs = { on_head, on_body, on_done, on_sent };
	http_count_proxied(s, tg->name, t, n);
	qp->up = upstream_start(s->loop, &rq, &cbs, c);
	rbuf_release(&head);
}

/*---- the version relayd says it is ----*/

static void probe_head(struct upstream *u, int status, const struct upstream_header *h, size_t nh,
                       int64_t content_length, void *arg)
{
	struct http_server *s = arg;
	(void)status;
	(void)content_length;
	for (size_t i = 0; i < nh; i++) {
		if (strcasecmp(h[i].name, "X-Influxdb-Version") == 0)
			copy_header(s->backend_version, sizeof(s->backend_version), h[i].value);
		else if (strcasecmp(h[i].name, "X-Influxdb-Build") == 0)
			copy_header(s->backend_build, sizeof(s->backend_build), h[i].value);
	}
	s->probe = NULL;
	upstream_cancel(u); /* nothing else of the answer is needed */
}

static void probe_body(struct upstream *u, const char *p, size_t n, void *arg)
{
	(void)u;
	(void)p;
	(void)n;
	(void)arg;
}

static void probe_done(struct upstream *u, int rc, enum upstream_stage stage, const char *msg, void *arg)
{
	struct http_server *s = arg;
	(void)u;
	(void)rc;
	(void)stage;
	(void)msg;
	s->probe = NULL;
}

void http_server_probe_version(struct http_server *s)
{
	struct http_query_target t[RELAY_MAX_BACKENDS];
	size_t n = s->targets_fn && s->cfg->query_enabled ? s->targets_fn(s->targets_arg, NULL, t, RELAY_MAX_BACKENDS) : 0;
	if (n == 0 || s->closing)
		return;
	if (s->probe)
		upstream_cancel(s->probe);
	struct rbuf head = RBUF_INIT;
	rbuf_appendf(&head, "GET %s/ping HTTP/1.1\r\n", t[0].path_prefix ? t[0].path_prefix : "");
	append_host(&head, &t[0]);
	rbuf_append(&head, "Connection: close\r\n\r\n", 21);
	struct upstream_request rq = {
		.host = t[0].host,
		.port = t[0].port,
		.tls = t[0].tls,
		.server_name = t[0].server_name,
		.head = head.data,
		.head_len = head.len,
		.connect_timeout_ms = t[0].connect_timeout_ms,
		.idle_timeout_ms = 10000,
	};
	static const struct upstream_callbacks cbs = { probe_head, probe_body, probe_done, NULL };
	s->probe = upstream_start(s->loop, &rq, &cbs, s);
	rbuf_release(&head);
}
