/*
 * http_server: libuv listener and connections, llhttp request parsing,
 * limits, timeouts, routing and responses. Must never answer 204 for a
 * write before ingest says its commit returned, and never block the loop
 * (no fsync, no DNS, no sleeping here).
 *
 * One request per connection is processed at a time: when a request is
 * complete the parser is paused (HPE_PAUSED from on_message_complete) and
 * reading stops until its response is queued. Bytes already read for the
 * next (pipelined) requests wait in conn->pend. Responses therefore leave
 * in request order, and a client that pipelines cannot make us buffer more
 * than one request's body.
 */
#include "relay/http_server.h"

#include <errno.h>
#include <inttypes.h>
#include <llhttp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relay/lineproto.h"
#include "relay/log.h"
#include "relay/util.h"

#include <zlib.h>

#define READ_BUF_SIZE 65536
#define LINGER_MS 2000
#define MAX_HEADERS 100
/* Answers queued on a connection beyond which its requests are no longer
 * parsed (a client that pipelines without reading would otherwise make us
 * hold every answer); parsing resumes once they are down to OUT_LOW. */
#define OUT_HIGH (64 * 1024)
#define OUT_LOW (16 * 1024)
/* What zlib allocates for one inflate stream (its state and a 32 KiB
 * window): counted in the buffer budget like a body. */
#define ZSTREAM_BYTES (48 * 1024)

enum timer_mode { T_NONE, T_HEADER, T_BODY, T_IDLE, T_LINGER };

struct http_server;

struct conn {
	uv_tcp_t tcp;
	uv_timer_t timer;
	uv_shutdown_t shutdown_req;
	llhttp_t parser;
	struct http_server *srv;
	struct conn *prev, *next;
	int handles;          /* open libuv handles; free when 0 and refs == 0 */
	int refs;             /* held by ingest while a write commits */
	int writes;           /* uv_write requests in flight */
	unsigned closing : 1;   /* handles being closed */
	unsigned close_after : 1; /* close once the queued writes are done */
	unsigned lingering : 1;
	unsigned waiting : 1;   /* a request is with ingest */
	unsigned reading : 1;
	unsigned fake : 1;      /* fuzz build: no socket */
	unsigned out_blocked : 1; /* parsing stopped until out_queued drains to OUT_LOW */
	unsigned keep_body : 1; /* the body is an accepted write's: buffer (and inflate) it */
	size_t out_queued;      /* answer bytes handed to uv_write and not yet written */
	uint64_t held;          /* bytes of the server's buffer budget this connection holds
	                         * (conn_held() when last accounted) */
	enum timer_mode tmode;
	char peer[64];

	/* the request being parsed */
	struct rbuf url;
	struct rbuf hname, hval;
	struct rbuf te;      /* every Transfer-Encoding value, joined by ", " */
	size_t header_bytes;
	unsigned nheaders;
	int in_value;
	struct rbuf body;
	char *authorization;
	char *content_encoding;
	int expect_continue;
	z_stream z;          /* gzip request body being inflated */
	int gzip;            /* 1: z is initialised; 2: its stream ended */
	uint64_t body_received; /* body bytes as sent (before inflating) */
	int err_status;      /* decided while parsing: answered at completion */
	char err_msg[300];
	int fatal;           /* error answered at once, then close */

	/* unparsed bytes of later requests, kept while one is being answered */
	char *pend;
	size_t pend_len;

	/* a write waiting for its commit */
	struct ingest_request ireq;
	struct rbuf lp;
	int api;             /* API_*: the endpoint, set once the headers are in */
	enum lp_precision prec;
	char *q_db, *q_rp, *q_u, *q_p, *q_token, *q_org;
	uint64_t t_start;

};

struct http_server {
	uv_loop_t *loop;
	uv_tcp_t listener;
	const struct relay_config *cfg;
	struct ingest *ing;
	struct conn *conns;
	int port;
	int closing;
	int listener_open;
	void (*done)(void *);
	void *done_arg;
	struct http_server_stats stats;
	http_health_fn health_fn;
	void *health_arg;
	/* One read buffer for every connection: a read is parsed before the
	 * next one starts (bytes of later requests are copied aside), so a
	 * thousand idle connections do not each hold 64 KiB. */
	char *inbuf;
	/* Bytes of request bodies held across all connections: received,
	 * inflated and stamped, with inflate states and pipelined input.
	 * Always the sum of conn_held() over the connections; capped by
	 * http.max_buffered_size (a write beyond gets 503). */
	uint64_t buffered;
	struct relay_ratelimit refusal_log; /* 503s, one line per 10 s */
	struct relay_ratelimit auth_log;    /* 401s and 403s, one line per 10 s */
};

/* The endpoint of a request. Errors on /api/v2/write are answered in
 * InfluxDB 2's form ({"code","message"}) so v2 clients show the message. */
enum { API_NONE = 0, API_V1, API_V2 };

static llhttp_settings_t parser_settings;

static void conn_close(struct conn *c);
static void conn_process(struct conn *c, const char *data, size_t len);
static void conn_continue(struct conn *c);
static void maybe_free(struct conn *c);
static void gzip_end(struct conn *c);
static void request_release(struct conn *c);
static void set_error(struct conn *c, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/*---- responses ----*/

static const char *status_text(int status)
{
	switch (status) {
	case 100: return "Continue";
	case 200: return "OK";
	case 204: return "No Content";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 411: return "Length Required";
	case 413: return "Request Entity Too Large";
	case 415: return "Unsupported Media Type";
	case 417: return "Expectation Failed";
	case 431: return "Request Header Fields Too Large";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 503: return "Service Unavailable";
	}
	/* Every status this file sends is listed above; a class name is the
	 * honest answer for one that is not. */
	return status >= 500 ? "Server Error" : status >= 400 ? "Client Error" : "Status";
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void set_timer(struct conn *c, enum timer_mode m);
static void read_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf);

/*
 * Our last response is out: half-close and drain for a moment rather than
 * close(). Closing with unread input makes the kernel send RST, and the
 * client could lose the response we just wrote (a 413, say).
 */
static void start_linger(struct conn *c)
{
	set_timer(c, T_LINGER);
	c->lingering = 1; /* after set_timer: no later timer replaces this one */
	if (uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, NULL) < 0) {
		conn_close(c);
		return;
	}
	if (!c->reading) {
		if (uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb) == 0)
			c->reading = 1;
		else
			conn_close(c);
	}
}

struct write_req {
	uv_write_t req;
	struct conn *c;
	char *buf;
	size_t len;
};

static void write_cb(uv_write_t *req, int status)
{
	struct write_req *wr = (struct write_req *)req;
	struct conn *c = wr->c;
	c->out_queued -= wr->len;
	free(wr->buf);
	free(wr);
	c->writes--;
	if (status < 0 && !c->closing) {
		conn_close(c);
		return;
	}
	if (c->out_blocked && c->out_queued <= OUT_LOW && !c->closing) {
		/* The client read its answers: parse the requests it sent. */
		c->out_blocked = 0;
		conn_continue(c);
	}
	if (c->close_after && c->writes == 0 && !c->closing && !c->lingering) {
		if (c->srv->closing)
			conn_close(c); /* shutting down: no time to linger */
		else
			start_linger(c);
	}
	maybe_free(c);
}

static void send_raw(struct conn *c, char *buf, size_t len)
{
	if (c->fake || c->closing) {
		free(buf);
		return;
	}
	struct write_req *wr = xmalloc(sizeof(*wr));
	wr->c = c;
	wr->buf = buf;
	wr->len = len;
	uv_buf_t b = uv_buf_init(buf, (unsigned)len);
	c->writes++;
	c->out_queued += len;
	if (uv_write(&wr->req, (uv_stream_t *)&c->tcp, &b, 1, write_cb) < 0) {
		c->writes--;
		c->out_queued -= len;
		free(buf);
		free(wr);
		conn_close(c);
	}
}

/*
 * Queue a response. body may be NULL. extra is extra header lines, each
 * ending in "\r\n". With close, the connection ends after this response.
 */
static void respond(struct conn *c, int status, const char *extra, const char *body, size_t body_len,
                    int close, int head_only)
{
	struct rbuf r = RBUF_INIT;
	rbuf_appendf(&r, "HTTP/1.1 %d %s\r\n", status, status_text(status));
	if (body_len)
		rbuf_append(&r, "Content-Type: application/json\r\n", 32);
	rbuf_appendf(&r, "X-Influxdb-Version: relayd-%s\r\nX-Influxdb-Build: relayd\r\n", RELAYD_VERSION);
	if (extra)
		rbuf_append(&r, extra, strlen(extra));
	if (status != 204)
		rbuf_appendf(&r, "Content-Length: %zu\r\n", body_len);
	if (close)
		rbuf_append(&r, "Connection: close\r\n", 19);
	rbuf_append(&r, "\r\n", 2);
	if (body_len && !head_only)
		rbuf_append(&r, body, body_len);
	if (close)
		c->close_after = 1;
	send_raw(c, r.data, r.len);
}

/* InfluxDB 2's error codes, by status. */
static const char *v2_code(int status)
{
	switch (status) {
	case 400: return "invalid";
	case 401: return "unauthorized";
	case 403: return "forbidden";
	case 404: return "not found";
	case 405: return "method not allowed";
	case 413: return "request too large";
	case 415: return "unsupported media type";
	case 503: return "unavailable";
	}
	return status >= 500 ? "internal error" : "invalid";
}

static void respond_error(struct conn *c, int status, const char *msg, const char *extra, int close)
{
	struct rbuf b = RBUF_INIT;
	if (c->api == API_V2) {
		const char *code = v2_code(status);
		rbuf_append(&b, "{\"code\":", 8);
		json_append_string(&b, code, strlen(code));
		rbuf_append(&b, ",\"message\":", 11);
	} else {
		rbuf_append(&b, "{\"error\":", 9);
	}
	json_append_string(&b, msg, strlen(msg));
	rbuf_append(&b, "}\n", 2);
	respond(c, status, extra, b.data, b.len, close, 0);
	rbuf_release(&b);
}

/*---- connection lifetime ----*/

static void maybe_free(struct conn *c)
{
	if (c->handles || c->refs || c->writes)
		return;
	struct http_server *s = c->srv;
	if (c->prev)
		c->prev->next = c->next;
	else if (s && s->conns == c)
		s->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	free(c->pend);
	c->pend = NULL;
	c->pend_len = 0;
	request_release(c); /* gives back the whole budget c held */
	free(c->authorization);
	free(c->content_encoding);
	free(c->q_db);
	free(c->q_rp);
	free(c->q_u);
	free(c->q_p);
	free(c->q_token);
	free(c->q_org);
	int was_fake = c->fake;
	free(c);
	if (!was_fake && s) {
		s->stats.connections_open--;
		if (s->closing && !s->conns && !s->listener_open) {
			void (*done)(void *) = s->done;
			void *arg = s->done_arg;
			free(s->inbuf);
			free(s);
			if (done)
				done(arg);
		}
	}
}

static void handle_closed(uv_handle_t *h)
{
	struct conn *c = h->data;
	c->handles--;
	maybe_free(c);
}

static void conn_close(struct conn *c)
{
	if (c->closing)
		return;
	c->closing = 1;
	if (c->fake)
		return;
	uv_close((uv_handle_t *)&c->timer, handle_closed);
	uv_close((uv_handle_t *)&c->tcp, handle_closed);
}

static void timer_cb(uv_timer_t *t);

static void set_timer(struct conn *c, enum timer_mode m)
{
	const struct relay_config *cfg = c->srv->cfg;
	uint64_t ms = 0;
	if (c->fake || c->closing || c->lingering)
		return;
	c->tmode = m;
	switch (m) {
	case T_HEADER: ms = cfg->http_header_timeout_ms; break;
	case T_BODY: ms = cfg->http_body_timeout_ms; break;
	case T_IDLE: ms = cfg->http_idle_timeout_ms; break;
	case T_LINGER: ms = LINGER_MS; break;
	case T_NONE: uv_timer_stop(&c->timer); return;
	}
	uv_timer_start(&c->timer, timer_cb, ms, 0);
}

static void timer_cb(uv_timer_t *t)
{
	struct conn *c = t->data;
	switch (c->tmode) {
	case T_HEADER:
		respond_error(c, 408, "request headers not received in time", NULL, 1);
		break;
	case T_BODY:
		respond_error(c, 408, "request body not received in time", NULL, 1);
		break;
	case T_IDLE:
	case T_LINGER:
	case T_NONE:
		conn_close(c);
		break;
	}
}

/*---- the buffer budget ----*/

/* What c holds of the server's budget right now. */
static uint64_t conn_held(const struct conn *c)
{
	return (uint64_t)c->body.cap + c->lp.cap + c->pend_len + (c->gzip ? ZSTREAM_BYTES : 0);
}

/* Account for a change of c's buffers: keeps srv->buffered the sum of
 * conn_held() over the connections. Called after every change. */
static void budget_sync(struct conn *c)
{
	uint64_t now = conn_held(c);
	if (c->srv) {
		c->srv->buffered = c->srv->buffered - c->held + now;
		c->srv->stats.buffered_bytes = c->srv->buffered;
	}
	c->held = now;
}

/*
 * Whether c may hold want more bytes of the budget: 0, or the status to
 * answer: 413 when the request alone needs more than the whole budget
 * (waiting cannot help), 503 when other connections hold the rest.
 */
static int budget_check(const struct conn *c, uint64_t want)
{
	uint64_t max = c->srv->cfg->http_max_buffered_bytes;
	uint64_t others = c->srv->buffered - c->held;
	if (c->held > max || want > max - c->held)
		return 413;
	if (others > max - c->held - want)
		return 503;
	return 0;
}

/*
 * Room in b (c->body) for extra more bytes, within the budget. Grows by
 * doubling while the budget allows, else to exactly what is needed.
 * Returns 0, or 413/503 as budget_check (b unchanged).
 */
static int budget_reserve(struct conn *c, struct rbuf *b, size_t extra)
{
	if (b->cap - b->len > extra)
		return 0;
	size_t need = b->len + extra + 1;
	if (need < b->len)
		return 413;
	size_t cap = b->cap ? b->cap : 4096;
	while (cap < need)
		cap = cap * 2 > cap ? cap * 2 : need;
	if (budget_check(c, cap - b->cap)) {
		cap = need;
		int st = budget_check(c, cap - b->cap);
		if (st)
			return st;
	}
	b->data = xrealloc(b->data, cap);
	b->cap = cap;
	budget_sync(c);
	return 0;
}

/*---- request state ----*/

static void gzip_end(struct conn *c)
{
	if (c->gzip)
		inflateEnd(&c->z);
	c->gzip = 0;
}

/*
 * The request is answered (its answer queued) or abandoned: give back
 * everything it held, so that a connection between requests costs only
 * its struct. Its strings stay until the next request begins (a write's
 * batch points into q_db and the rest until its commit returns).
 */
static void request_release(struct conn *c)
{
	gzip_end(c);
	c->keep_body = 0;
	rbuf_release(&c->body);
	rbuf_release(&c->lp);
	rbuf_release(&c->url);
	rbuf_release(&c->hname);
	rbuf_release(&c->hval);
	rbuf_release(&c->te);
	budget_sync(c);
}

/* A write the budget cannot hold now: refuse it and drop its body. */
static void budget_refuse(struct conn *c, int status)
{
	const struct relay_config *cfg = c->srv->cfg;
	if (status == 413)
		set_error(c, 413, "request needs more than the %" PRIu64 " bytes of http.max_buffered_size",
		          cfg->http_max_buffered_bytes);
	else
		set_error(c, 503, "relay busy: %" PRIu64 " bytes of request bodies held (http.max_buffered_size): "
		          "retry later", c->srv->buffered);
	gzip_end(c);
	c->keep_body = 0;
	rbuf_release(&c->body);
	rbuf_release(&c->lp);
	budget_sync(c);
}

static void request_reset(struct conn *c)
{
	request_release(c);
	c->body_received = 0;
	c->header_bytes = 0;
	c->nheaders = 0;
	c->in_value = 0;
	free(c->authorization);
	free(c->content_encoding);
	c->authorization = c->content_encoding = NULL;
	c->expect_continue = 0;
	c->err_status = 0;
	c->err_msg[0] = '\0';
	free(c->q_db);
	free(c->q_rp);
	free(c->q_u);
	free(c->q_p);
	free(c->q_token);
	free(c->q_org);
	c->q_db = c->q_rp = c->q_u = c->q_p = c->q_token = c->q_org = NULL;
	c->api = API_NONE;
	c->prec = LP_PRECISION_NS;
}

static struct conn *conn_of(llhttp_t *p)
{
	return p->data;
}

/* Decide an error that is answered once the request is complete (the body
 * is read and dropped, so the connection stays usable). */
static void set_error(struct conn *c, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void set_error(struct conn *c, int status, const char *fmt, ...)
{
	if (c->err_status)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(c->err_msg, sizeof(c->err_msg), fmt, ap);
	va_end(ap);
	c->err_status = status;
}

static int count_header_bytes(struct conn *c, size_t n)
{
	c->header_bytes += n;
	if (c->header_bytes > c->srv->cfg->http_max_header_bytes) {
		c->fatal = 431;
		snprintf(c->err_msg, sizeof(c->err_msg), "request line and headers exceed %" PRIu64 " bytes",
			 c->srv->cfg->http_max_header_bytes);
		return HPE_USER;
	}
	return HPE_OK;
}

static int on_message_begin(llhttp_t *p)
{
	struct conn *c = conn_of(p);
	request_reset(c);
	c->t_start = now_mono_ns();
	set_timer(c, T_HEADER);
	return HPE_OK;
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
	struct conn *c = conn_of(p);
	if (count_header_bytes(c, len))
		return HPE_USER;
	rbuf_append(&c->url, at, len);
	return HPE_OK;
}

static void header_done(struct conn *c)
{
	const char *name = rbuf_cstr(&c->hname);
	const char *val = rbuf_cstr(&c->hval);
	if (strcasecmp(name, "authorization") == 0) {
		free(c->authorization);
		c->authorization = xstrdup(val);
	} else if (strcasecmp(name, "content-encoding") == 0) {
		free(c->content_encoding);
		c->content_encoding = xstrdup(val);
	} else if (strcasecmp(name, "transfer-encoding") == 0) {
		/* Decided on all lines at once (check_transfer_encoding): the
		 * codings of two lines are one list (RFC 9110 5.3). */
		if (c->te.len)
			rbuf_append(&c->te, ", ", 2);
		rbuf_append(&c->te, val, strlen(val));
	} else if (strcasecmp(name, "expect") == 0) {
		if (strcasecmp(val, "100-continue") == 0)
			c->expect_continue = 1;
		else
			set_error(c, 417, "unsupported Expect header '%.60s'", val);
	}
	rbuf_reset(&c->hname);
	rbuf_reset(&c->hval);
}

/*
 * Transfer-Encoding, from every line of it: llhttp frames a body whose last
 * coding is chunked, but a coding before it (gzip, or chunked twice) would
 * have to be undone, which we do not: refuse it (501) rather than take
 * compressed bytes for line protocol (RFC 9112 6.1).
 */
static void check_transfer_encoding(struct conn *c)
{
	const char *v = rbuf_cstr(&c->te);
	int codings = 0, last_chunked = 0;
	while (*v) {
		while (*v == ' ' || *v == '\t' || *v == ',')
			v++;
		if (!*v)
			break;
		size_t n = strcspn(v, ",");
		size_t t = n;
		while (t && (v[t - 1] == ' ' || v[t - 1] == '\t'))
			t--;
		codings++;
		last_chunked = t == 7 && strncasecmp(v, "chunked", 7) == 0;
		v += n;
	}
	/* A list that does not end in chunked is llhttp's to refuse (400). */
	if (last_chunked && codings > 1)
		set_error(c, 501, "Transfer-Encoding '%.60s' is not supported (only chunked; "
		          "send compressed bodies with Content-Encoding: gzip)", rbuf_cstr(&c->te));
}

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
	struct conn *c = conn_of(p);
	if (count_header_bytes(c, len))
		return HPE_USER;
	if (c->in_value) {
		header_done(c);
		c->in_value = 0;
	}
	if (c->hname.len == 0 && ++c->nheaders > MAX_HEADERS) {
		c->fatal = 431;
		snprintf(c->err_msg, sizeof(c->err_msg), "more than %d header fields", MAX_HEADERS);
		return HPE_USER;
	}
	rbuf_append(&c->hname, at, len);
	return HPE_OK;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
	struct conn *c = conn_of(p);
	if (count_header_bytes(c, len))
		return HPE_USER;
	c->in_value = 1;
	rbuf_append(&c->hval, at, len);
	return HPE_OK;
}

static void prepare_write(struct conn *c);

/* The endpoint of url (path only; the query is ignored). */
static int api_of(const char *url)
{
	size_t plen = strcspn(url, "?");
	if (plen == 6 && memcmp(url, "/write", 6) == 0)
		return API_V1;
	if (plen == 13 && memcmp(url, "/api/v2/write", 13) == 0)
		return API_V2;
	return API_NONE;
}

static int on_headers_complete(llhttp_t *p)
{
	struct conn *c = conn_of(p);
	const struct relay_config *cfg = c->srv->cfg;
	if (c->in_value || c->hname.len) {
		header_done(c);
		c->in_value = 0;
	}
	set_timer(c, T_BODY);
	if (c->te.len)
		check_transfer_encoding(c);
	c->api = api_of(rbuf_cstr(&c->url));
	if (c->api != API_NONE && llhttp_get_method(p) == HTTP_POST)
		prepare_write(c);
	/* Only an accepted write's body is kept: every other body (any other
	 * URL, a refused write) is counted against max_body_size and dropped
	 * as it arrives. */
	c->keep_body = c->api != API_NONE && llhttp_get_method(p) == HTTP_POST && !c->err_status;
	/* Refuse an announced oversized body before reading any of it. */
	if ((p->flags & F_CONTENT_LENGTH) && p->content_length > cfg->http_max_body_bytes) {
		c->fatal = 413;
		snprintf(c->err_msg, sizeof(c->err_msg), "request body of %" PRIu64 " bytes exceeds the limit of %" PRIu64 " bytes",
			 (uint64_t)p->content_length, cfg->http_max_body_bytes);
		return -1; /* on_headers_complete's error value; c->fatal says why */
	}
	if (c->content_encoding && strcasecmp(c->content_encoding, "gzip") == 0) {
		/* Inflate as the body arrives, so that the cap on the
		 * decompressed size holds without buffering the compressed body
		 * and a bomb is stopped at the first chunk past the cap. */
		int st = c->keep_body ? budget_check(c, ZSTREAM_BYTES) : 0;
		if (st) {
			budget_refuse(c, st);
		} else if (c->keep_body) {
			memset(&c->z, 0, sizeof(c->z));
			if (inflateInit2(&c->z, 15 + 16) != Z_OK)
				relay_fatal("out of memory initialising zlib");
			c->gzip = 1;
			budget_sync(c);
		}
	} else if (c->content_encoding && *c->content_encoding && strcasecmp(c->content_encoding, "identity")) {
		set_error(c, 415, "unsupported Content-Encoding '%.40s' (want gzip or identity)", c->content_encoding);
	}
	if (c->err_status == 501) {
		c->fatal = 501; /* the body cannot be framed as we would read it */
		return -1;
	}
	/* A client that asked "may I send the body?" gets the refusal now
	 * rather than a 100 (RFC 9110 10.1.1), and the connection closes:
	 * whether it still sends the body is its choice. */
	if (c->expect_continue && c->err_status) {
		c->fatal = c->err_status;
		return -1;
	}
	if (c->expect_continue && !c->fake) {
		static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
		send_raw(c, xstrdup(cont), sizeof(cont) - 1);
	}
	return HPE_OK;
}

/* Count len more body bytes as sent (compressed, for a gzip body; chunk
 * extensions too): HPE_USER with a 413 past max_body_size. */
static int count_body_bytes(struct conn *c, size_t len)
{
	const struct relay_config *cfg = c->srv->cfg;
	c->body_received += len;
	if (c->body_received > cfg->http_max_body_bytes) {
		c->fatal = 413;
		snprintf(c->err_msg, sizeof(c->err_msg), "request body exceeds the limit of %" PRIu64 " bytes",
			 cfg->http_max_body_bytes);
		return HPE_USER;
	}
	return HPE_OK;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
	struct conn *c = conn_of(p);
	const struct relay_config *cfg = c->srv->cfg;
	if (count_body_bytes(c, len))
		return HPE_USER;
	if (c->err_status || !c->keep_body)
		return HPE_OK; /* read and dropped: not a write, or its answer is decided */
	if (!c->gzip) {
		int st = budget_reserve(c, &c->body, len);
		if (st) {
			budget_refuse(c, st);
			return HPE_OK;
		}
		rbuf_append(&c->body, at, len);
		return HPE_OK;
	}
	uint64_t cap = cfg->http_max_decompressed_bytes;
	c->z.next_in = (Bytef *)(uintptr_t)at;
	c->z.avail_in = (uInt)len;
	while (c->z.avail_in) {
		/* A gzip file may hold several members one after the other
		 * (gzip a b > c; Go's and Python's readers write and read them
		 * so): bytes after a member's end start the next one. Anything
		 * else there fails to inflate and gets 400, never dropped. */
		if (c->gzip == 2) {
			if (inflateReset(&c->z) != Z_OK)
				relay_fatal("zlib: inflateReset failed");
			c->gzip = 1;
		}
		int st = budget_reserve(c, &c->body, 65536);
		if (st) {
			budget_refuse(c, st);
			return HPE_OK;
		}
		size_t room = c->body.cap - c->body.len - 1;
		c->z.next_out = (Bytef *)c->body.data + c->body.len;
		c->z.avail_out = (uInt)(room > (1u << 30) ? (1u << 30) : room);
		uInt before = c->z.avail_out;
		int zrc = inflate(&c->z, Z_NO_FLUSH);
		c->body.len += before - c->z.avail_out;
		if (c->body.len > cap) {
			c->fatal = 413;
			snprintf(c->err_msg, sizeof(c->err_msg),
				 "decompressed request body exceeds the limit of %" PRIu64 " bytes", cap);
			return HPE_USER;
		}
		if (zrc == Z_STREAM_END) {
			c->gzip = 2;
		} else if (zrc != Z_OK && zrc != Z_BUF_ERROR) {
			set_error(c, 400, "malformed gzip body: %s", c->z.msg ? c->z.msg : "inflate failed");
			return HPE_OK;
		}
	}
	return HPE_OK;
}

/* Chunk extensions ("5;name=value") carry nothing we use, but their
 * bytes arrive all the same: they count against max_body_size, so an
 * endless extension cannot hold a connection's memory or time. */
static int on_chunk_extension(llhttp_t *p, const char *at, size_t len)
{
	(void)at;
	return count_body_bytes(conn_of(p), len);
}

static int on_message_complete(llhttp_t *p)
{
	struct conn *c = conn_of(p);
	if (c->gzip == 1 && !c->err_status)
		set_error(c, 400, "malformed gzip body: truncated");
	gzip_end(c); /* the inflate state is not needed past the body */
	budget_sync(c);
	set_timer(c, T_NONE);
	/* Stop here: the request is answered before the next one is parsed. */
	return HPE_PAUSED;
}

/*---- routing ----*/

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
static char *query_param(const char *q, const char *name, int *bad)
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
	const char *a = c->authorization;
	if (!a)
		return;
	if (strncasecmp(a, "Basic ", 6) == 0) {
		char *dec = b64_decode(a + 6);
		char *colon = dec ? strchr(dec, ':') : NULL;
		if (!colon) {
			free(dec);
			set_error(c, 400, "malformed Basic authorization header");
			return;
		}
		if (!c->q_u) {
			c->q_u = xstrndup(dec, (size_t)(colon - dec));
			free(c->q_p);
			c->q_p = xstrdup(colon + 1);
		}
		free(dec);
	} else if (strncasecmp(a, "Token ", 6) == 0) {
		c->q_token = xstrdup(a + 6);
	} else if (strncasecmp(a, "Bearer ", 7) == 0) {
		c->q_token = xstrdup(a + 7);
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

	if (c->q_token) {
		const char *colon = strchr(c->q_token, ':');
		for (size_t i = 0; i < cfg->nauth_tokens; i++)
			if (secret_equal(c->q_token, cfg->auth_tokens[i].token))
				return 0;
		if (colon && user_ok(cfg, c->q_token, (size_t)(colon - c->q_token), colon + 1))
			return 0;
		relay_log_limited(&s->auth_log, RELAY_LOG_WARN,
		                  "write from %s refused (403): token not accepted", c->peer);
		return 403;
	}
	if (c->q_u) {
		if (user_ok(cfg, c->q_u, strlen(c->q_u), c->q_p ? c->q_p : ""))
			return 0;
		relay_log_limited(&s->auth_log, RELAY_LOG_WARN,
		                  "write from %s refused (403): user '%s' unknown or wrong password",
		                  c->peer, log_safe(who, sizeof(who), c->q_u));
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
static void prepare_write(struct conn *c)
{
	struct http_server *s = c->srv;
	const char *url = rbuf_cstr(&c->url);
	const char *q = strchr(url, '?');
	const char *query = q ? q + 1 : "";
	char *consistency = NULL;
	int bad = 0, v2 = c->api == API_V2;
	char *precision = query_param(query, "precision", &bad);

	if (v2) {
		char *bucket = query_param(query, "bucket", &bad);
		c->q_org = query_param(query, "org", &bad);
		if (!c->q_org || !*c->q_org) {
			free(c->q_org);
			c->q_org = query_param(query, "orgID", &bad);
		}
		if (bucket) {
			/* "db/rp": the first '/' splits; "db/" is the default rp. */
			char *slash = strchr(bucket, '/');
			if (slash) {
				if (slash[1])
					c->q_rp = xstrdup(slash + 1);
				*slash = '\0';
			}
			c->q_db = bucket;
		}
	} else {
		c->q_db = query_param(query, "db", &bad);
		c->q_rp = query_param(query, "rp", &bad);
		consistency = query_param(query, "consistency", &bad);
		char *u = query_param(query, "u", &bad);
		char *pw = query_param(query, "p", &bad);
		if (u) {
			c->q_u = u;
			c->q_p = pw ? pw : xstrdup("");
		} else {
			free(pw);
		}
	}
	parse_authorization(c);
	if (c->q_rp && !*c->q_rp) {
		free(c->q_rp);
		c->q_rp = NULL;
	}
	if (bad & 1)
		set_error(c, 400, "malformed percent-encoding in the query string");
	else if (bad & 2)
		set_error(c, 400, "names and credentials must not contain control characters (%%00)");
	else if (has_control(c->q_u) || has_control(c->q_p) || has_control(c->q_token))
		/* They travel with the batch into backend requests' headers,
		 * where a CR LF would start a header (or a request) of its own. */
		set_error(c, 400, "credentials must not contain control characters");
	else if (has_control(c->q_db) || has_control(c->q_rp) || has_control(c->q_org))
		/* Names reach query strings, export files (where a newline
		 * would start a directive of influx -import's) and the
		 * operator's terminal through relayctl. */
		set_error(c, 400, "%s must not contain control characters",
		          v2 ? "bucket and org" : "database and retention policy names");
	else if (too_long(c->q_db) || too_long(c->q_rp) || too_long(c->q_org) || too_long(c->q_u) ||
	         too_long(c->q_p) || too_long(c->q_token))
		/* The queue record holds 65535 bytes of each; refused here, a
		 * longer one would fail at commit. */
		set_error(c, 400, "a name or credential is longer than %u bytes", WAL_MAX_STRING);
	else if ((!c->q_db || !*c->q_db) && v2)
		set_error(c, 400, "bucket is required (\"db/rp\" or \"db\")");
	else if (!c->q_db || !*c->q_db)
		set_error(c, 400, "database is required");
	else if (v2 && precision && *precision && strcmp(precision, "ns") && strcmp(precision, "us") &&
	         strcmp(precision, "ms") && strcmp(precision, "s"))
		set_error(c, 400, "invalid precision '%.40s' (want ns, us, ms or s)", precision);
	else if (lp_precision_parse(precision, &c->prec) < 0)
		set_error(c, 400, "invalid precision '%.40s' (want n, ns, u, us, µ, ms, s, m or h)", precision);
	else if (consistency && *consistency && strcmp(consistency, "any") && strcmp(consistency, "one") &&
		 strcmp(consistency, "quorum") && strcmp(consistency, "all"))
		set_error(c, 400, "invalid consistency '%.40s' (want any, one, quorum or all)", consistency);
	free(precision);
	free(consistency);
	/* Credentials are checked last so a 400 says what is wrong with
	 * the request whoever sends it; a 401 tells nothing about the rest. */
	if (!c->err_status && s->cfg->auth_enabled) {
		int st = authenticate(c);
		if (st == 401)
			set_error(c, 401, "authentication required: send a user (u and p, or Basic) or a token (Authorization: Token)");
		else if (st == 403)
			set_error(c, 403, "authorization failed");
		if (st)
			s->stats.auth_failures++;
	}
}

static void handle_write(struct conn *c)
{
	struct http_server *s = c->srv;
	const struct relay_config *cfg = s->cfg;
	enum lp_precision prec = c->prec;

	if (c->err_status) {
		if (c->err_status == 503) {
			s->stats.writes_refused++;
			relay_log_limited(&s->refusal_log, RELAY_LOG_WARN, "write from %s refused (503): %s", c->peer,
			                  c->err_msg);
			respond_error(c, 503, c->err_msg, "Retry-After: 1\r\n", 0);
		} else {
			s->stats.writes_rejected++;
			respond_error(c, c->err_status, c->err_msg, NULL, 0);
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
	rbuf_reset(&c->lp);
	if (lim.max_out == 0)
		lim.max_out = 1; /* 0 would mean unlimited */
	rc = lineproto_validate_limits(c->body.data ? c->body.data : "", c->body.len, lp_ns_to_precision(now, prec),
	                               &lim, &c->lp, &res, &lerr);
	/* Down to what it holds: doubling left up to half of it unused. */
	if (c->lp.cap > c->lp.len + 1) {
		c->lp.data = xrealloc(c->lp.data, c->lp.len + 1);
		c->lp.cap = c->lp.len + 1;
	}
	budget_sync(c);
	if (rc < 0 && lerr.too_big) {
		int st = lim.max_out == WAL_MAX_BODY || s->buffered == c->held ? 413 : 503;
		if (st == 413 && lim.max_out == WAL_MAX_BODY)
			set_error(c, 413, "request's queued form exceeds the %" PRIu64 " bytes a queue record holds",
			          (uint64_t)WAL_MAX_BODY);
		else
			budget_refuse(c, st);
		handle_write(c);
		return;
	}
	if (rc < 0) {
		char msg[300];
		snprintf(msg, sizeof(msg), "line %zu: %s (nothing of this request was queued)", lerr.line, lerr.msg);
		s->stats.writes_rejected++;
		respond_error(c, 400, msg, NULL, 0);
		return;
	}
	/* The compressed or raw body is not needed once stamped. */
	rbuf_release(&c->body);
	budget_sync(c);
	if (res.lines == 0) {
		/* Nothing to queue: an empty body or only comments. */
		s->stats.writes_ok++;
		respond(c, 204, NULL, NULL, 0, 0, 0);
		return;
	}
	if (!s->ing) {
		respond(c, 204, NULL, NULL, 0, 0, 0);
		return;
	}
	struct wal_batch *b = &c->ireq.batch;
	memset(b, 0, sizeof(*b));
	b->accept_ns = now;
	b->lines = res.lines;
	b->precision = (uint8_t)prec;
	b->db = c->q_db;
	b->rp = c->q_rp;
	b->user = c->q_u;
	b->password = c->q_p;
	b->token = c->q_token;
	b->org = c->q_org;
	b->body = c->lp.data;
	b->body_len = c->lp.len;
	c->ireq.done = write_done;
	c->ireq.data = c;
	c->waiting = 1;
	c->refs++;
	ingest_submit(s->ing, &c->ireq);
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
		request_release(c);
		maybe_free(c);
		return;
	}
	if (status == 204) {
		s->stats.writes_ok++;
		s->stats.points_accepted += req->batch.lines;
		respond(c, 204, NULL, NULL, 0, !llhttp_should_keep_alive(&c->parser), 0);
	} else {
		char extra[64];
		s->stats.writes_refused++;
		snprintf(extra, sizeof(extra), "Retry-After: %" PRIu64 "\r\n", retry_after);
		/* One line per 10 s at most, with a count of what was
		 * suppressed: a full queue must not also fill the log. */
		relay_log_limited(&s->refusal_log, RELAY_LOG_WARN, "write from %s refused (503): %s",
		                  c->peer, msg);
		respond_error(c, status, msg, extra, !llhttp_should_keep_alive(&c->parser));
	}
	request_release(c);
	conn_continue(c);
}

/* Answer the request just completed. Returns 1 if answered synchronously,
 * 0 if the answer comes later (a write waiting for its commit). */
static int dispatch(struct conn *c)
{
	struct http_server *s = c->srv;
	const char *url = rbuf_cstr(&c->url);
	const char *q = strchr(url, '?');
	size_t plen = q ? (size_t)(q - url) : strlen(url);
	int method = llhttp_get_method(&c->parser);
	int keep = llhttp_should_keep_alive(&c->parser);

	s->stats.requests++;
	if (c->err_status && c->api == API_NONE) {
		respond_error(c, c->err_status, c->err_msg, NULL, !keep);
		return 1;
	}
	if (plen == 5 && memcmp(url, "/ping", 5) == 0) {
		if (method != HTTP_GET && method != HTTP_HEAD) {
			respond_error(c, 405, "method not allowed: /ping takes GET or HEAD", "Allow: GET, HEAD\r\n", !keep);
			return 1;
		}
		int bad = 0;
		char *verbose = q ? query_param(q + 1, "verbose", &bad) : NULL;
		if (verbose && strcmp(verbose, "true") == 0) {
			char body[96];
			int n = snprintf(body, sizeof(body), "{\"version\":\"relayd-%s\"}\n", RELAYD_VERSION);
			respond(c, 200, NULL, body, (size_t)n, !keep, method == HTTP_HEAD);
		} else {
			respond(c, 204, NULL, NULL, 0, !keep, 0);
		}
		free(verbose);
		return 1;
	}
	if (c->api != API_NONE) {
		if (method != HTTP_POST) {
			respond_error(c, 405, c->api == API_V2 ? "method not allowed: /api/v2/write takes POST" :
			              "method not allowed: /write takes POST", "Allow: POST\r\n", !keep);
			return 1;
		}
		handle_write(c);
		return !c->waiting;
	}
	if (c->err_status) {
		respond_error(c, c->err_status, c->err_msg, NULL, !keep);
		return 1;
	}
	if (plen == 7 && memcmp(url, "/health", 7) == 0 && s->health_fn) {
		if (method != HTTP_GET && method != HTTP_HEAD) {
			respond_error(c, 405, "method not allowed: /health takes GET or HEAD", "Allow: GET, HEAD\r\n", !keep);
			return 1;
		}
		struct rbuf out = RBUF_INIT;
		int status = s->health_fn(s, &out, s->health_arg);
		rbuf_appendc(&out, '\n');
		respond(c, status, "Cache-Control: no-store\r\n", out.data, out.len, !keep, method == HTTP_HEAD);
		rbuf_release(&out);
		return 1;
	}
	respond_error(c, 404, "not found", NULL, !keep);
	return 1;
}

/*---- the read loop ----*/

/* Keep data, read but not parsed yet, for later. At most one read's worth
 * (READ_BUF_SIZE): reading stops while it is kept. Counted in the budget,
 * though never refused: the bytes are already read. */
static void save_pending(struct conn *c, const char *data, size_t len)
{
	char *p = xmalloc(len ? len : 1);
	memcpy(p, data, len);
	free(c->pend);
	c->pend = p;
	c->pend_len = len;
	budget_sync(c);
}

static void stop_reading(struct conn *c)
{
	if (!c->fake && c->reading) {
		uv_read_stop((uv_stream_t *)&c->tcp);
		c->reading = 0;
	}
}

static void fatal_error(struct conn *c, int status, const char *msg)
{
	/* Reading goes on: read_cb drops input once close_after is set. */
	c->fatal = 0;
	set_timer(c, T_NONE);
	respond_error(c, status, msg, NULL, 1);
	request_release(c);
}

static void conn_process(struct conn *c, const char *data, size_t len)
{
	while (!c->closing && !c->close_after) {
		llhttp_errno_t err = llhttp_execute(&c->parser, data, len);
		if (err == HPE_OK)
			return;
		if (err == HPE_PAUSED) {
			const char *pos = llhttp_get_error_pos(&c->parser);
			size_t used = pos ? (size_t)(pos - data) : len;
			if (used > len)
				used = len;
			data += used;
			len -= used;
			if (!dispatch(c)) {
				/* Wait for the commit; keep the rest for later. */
				if (len)
					save_pending(c, data, len);
				stop_reading(c);
				return;
			}
			request_release(c);
			if (c->close_after)
				return;
			set_timer(c, T_IDLE);
			if (c->out_queued > OUT_HIGH) {
				/* The client sends requests but does not read the
				 * answers: stop parsing until it does (write_cb goes
				 * on); the idle timeout ends a client that never does. */
				c->out_blocked = 1;
				if (len)
					save_pending(c, data, len);
				stop_reading(c);
				return;
			}
			llhttp_resume(&c->parser);
			continue;
		}
		if (c->fatal) {
			char msg[sizeof(c->err_msg)];
			memcpy(msg, c->err_msg, sizeof(msg));
			fatal_error(c, c->fatal, msg);
			return;
		}
		/* Malformed HTTP, smuggling attempts (Content-Length with
		 * Transfer-Encoding, bad chunk sizes...): 400 and close. */
		char msg[200];
		snprintf(msg, sizeof(msg), "malformed HTTP request: %s", llhttp_get_error_reason(&c->parser));
		fatal_error(c, 400, msg);
		return;
	}
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct conn *c = h->data;
	(void)suggested;
	buf->base = c->srv->inbuf;
	buf->len = READ_BUF_SIZE;
}

static void read_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
	struct conn *c = st->data;
	(void)buf;
	if (nread == 0)
		return;
	if (nread < 0) {
		/* EOF or error. A request in flight still commits, but there is
		 * nobody to answer. */
		c->reading = 0;
		conn_close(c);
		return;
	}
	if (c->lingering || c->close_after)
		return; /* draining after our last response */
	conn_process(c, buf->base, (size_t)nread);
}

/* After an asynchronous answer: parse what was already read, then read
 * more. */
static void conn_continue(struct conn *c)
{
	if (c->closing || c->close_after)
		return;
	llhttp_resume(&c->parser);
	set_timer(c, T_IDLE);
	if (c->pend) {
		char *p = c->pend;
		size_t n = c->pend_len;
		c->pend = NULL;
		c->pend_len = 0;
		budget_sync(c);
		conn_process(c, p, n);
		free(p);
	}
	if (!c->closing && !c->close_after && !c->waiting && !c->out_blocked && !c->reading && !c->fake) {
		if (uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb) == 0)
			c->reading = 1;
		else
			conn_close(c);
	}
}

/*---- listener ----*/

static struct conn *conn_new(struct http_server *s)
{
	struct conn *c = xcalloc(1, sizeof(*c));
	c->srv = s;
	llhttp_init(&c->parser, HTTP_REQUEST, &parser_settings);
	c->parser.data = c;
	return c;
}

static void on_connection(uv_stream_t *ls, int status)
{
	struct http_server *s = ls->data;
	if (status < 0 || s->closing)
		return;
	struct conn *c = conn_new(s);
	uv_tcp_init(s->loop, &c->tcp);
	uv_timer_init(s->loop, &c->timer);
	c->tcp.data = c;
	c->timer.data = c;
	c->handles = 2;
	c->next = s->conns;
	if (s->conns)
		s->conns->prev = c;
	s->conns = c;
	s->stats.connections_open++;
	if (uv_accept(ls, (uv_stream_t *)&c->tcp) < 0) {
		conn_close(c);
		return;
	}
	struct sockaddr_storage ss;
	int sl = sizeof(ss);
	c->peer[0] = '\0';
	if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &sl) == 0) {
		char ip[INET6_ADDRSTRLEN] = "?";
		int port = 0;
		if (ss.ss_family == AF_INET) {
			uv_ip4_name((struct sockaddr_in *)&ss, ip, sizeof(ip));
			port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
		} else if (ss.ss_family == AF_INET6) {
			uv_ip6_name((struct sockaddr_in6 *)&ss, ip, sizeof(ip));
			port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
		}
		snprintf(c->peer, sizeof(c->peer), "%s:%d", ip, port);
	}
	uv_tcp_nodelay(&c->tcp, 1);
	s->stats.connections_accepted++;
	if (s->stats.connections_open > s->cfg->http_max_connections) {
		/* Over the limit: say so and close; never evict anything. */
		s->stats.connections_refused++;
		respond_error(c, 503, "too many connections", "Retry-After: 1\r\n", 1);
		return;
	}
	if (uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb) < 0) {
		conn_close(c);
		return;
	}
	c->reading = 1;
	set_timer(c, T_HEADER);
}

static void init_settings(void)
{
	static int done;
	if (done)
		return;
	llhttp_settings_init(&parser_settings);
	parser_settings.on_message_begin = on_message_begin;
	parser_settings.on_url = on_url;
	parser_settings.on_header_field = on_header_field;
	parser_settings.on_header_value = on_header_value;
	parser_settings.on_headers_complete = on_headers_complete;
	parser_settings.on_body = on_body;
	parser_settings.on_message_complete = on_message_complete;
	parser_settings.on_chunk_extension_name = on_chunk_extension;
	parser_settings.on_chunk_extension_value = on_chunk_extension;
	done = 1;
}

int http_server_start(uv_loop_t *loop, const struct relay_config *cfg, struct ingest *ing,
                      struct http_server **out, char *err, size_t errlen)
{
	struct sockaddr_storage addr;
	int rc;

	init_settings();
	*out = NULL;
	if (strchr(cfg->listen_http_host, ':'))
		rc = uv_ip6_addr(cfg->listen_http_host, cfg->listen_http_port, (struct sockaddr_in6 *)&addr);
	else
		rc = uv_ip4_addr(cfg->listen_http_host, cfg->listen_http_port, (struct sockaddr_in *)&addr);
	if (rc) {
		snprintf(err, errlen, "cannot use listen address '%s': %s", cfg->listen_http, uv_strerror(rc));
		return rc;
	}
	struct http_server *s = xcalloc(1, sizeof(*s));
	s->loop = loop;
	s->cfg = cfg;
	s->ing = ing;
	s->inbuf = xmalloc(READ_BUF_SIZE);
	uv_tcp_init(loop, &s->listener);
	s->listener.data = s;
	s->listener_open = 1;
	/* No SO_REUSEPORT: a second relayd (or anything else) on the port
	 * must make this fail, not share the port. libuv sets SO_REUSEADDR,
	 * which only allows rebinding over TIME_WAIT. */
	rc = uv_tcp_bind(&s->listener, (struct sockaddr *)&addr, 0);
	if (rc == 0)
		rc = uv_listen((uv_stream_t *)&s->listener, 511, on_connection);
	if (rc) {
		snprintf(err, errlen, "cannot listen on %s: %s", cfg->listen_http, uv_strerror(rc));
		s->closing = 1;
		uv_close((uv_handle_t *)&s->listener, NULL);
		/* The caller runs the loop once to finish the close; the struct
		 * is leaked deliberately as the process is about to exit. */
		return rc;
	}
	struct sockaddr_storage bound;
	int blen = sizeof(bound);
	uv_tcp_getsockname(&s->listener, (struct sockaddr *)&bound, &blen);
	s->port = bound.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&bound)->sin6_port)
					      : ntohs(((struct sockaddr_in *)&bound)->sin_port);
	*out = s;
	return 0;
}

void http_server_set_health(struct http_server *s, http_health_fn fn, void *arg)
{
	s->health_fn = fn;
	s->health_arg = arg;
}

int http_server_port(const struct http_server *s)
{
	return s->port;
}

const struct http_server_stats *http_server_stats(const struct http_server *s)
{
	return &s->stats;
}

static void listener_closed(uv_handle_t *h)
{
	struct http_server *s = h->data;
	s->listener_open = 0;
	if (!s->conns) {
		void (*done)(void *) = s->done;
		void *arg = s->done_arg;
		free(s->inbuf);
		free(s);
		if (done)
			done(arg);
	}
}

void http_server_close(struct http_server *s, void (*done)(void *arg), void *arg)
{
	s->closing = 1;
	s->done = done;
	s->done_arg = arg;
	/* Connections waiting for a commit get their answer first (ingest
	 * finishes its commits before it closes); the others close now. */
	for (struct conn *c = s->conns; c; c = c->next) {
		if (c->waiting)
			c->close_after = 1;
		else
			conn_close(c);
	}
	uv_close((uv_handle_t *)&s->listener, listener_closed);
}

void http_fuzz_feed(const struct relay_config *cfg, const uint8_t *data, size_t len)
{
	struct http_server s;
	memset(&s, 0, sizeof(s));
	s.cfg = cfg;
	init_settings();
	struct conn *c = conn_new(&s);
	c->fake = 1;
	/* Feed in two pieces so that state carried between reads is
	 * exercised too. */
	size_t half = len / 2;
	conn_process(c, (const char *)data, half);
	if (!c->closing && !c->close_after && !c->waiting)
		conn_process(c, (const char *)data + half, len - half);
	c->srv = NULL;
	c->handles = c->refs = c->writes = 0;
	maybe_free(c);
}
