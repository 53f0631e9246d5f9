/*
 * http_client: see http_client.h. Must never block the loop: the
 * transport layer resolves on the thread pool and bounds the connect and
 * the handshake with the connect timeout; the response has our timer. Callbacks to the user run only after llhttp_execute has returned,
 * so the user may send the next request (or close) from inside them.
 */
#include "relay/delivery/http_client.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relay/base/log.h"
#include "relay/base/outcome.h"

#define MAX_KEPT_BODY 4096
/* Interim answers taken before one final answer. RFC 9110 sets no limit;
 * this one only stops a backend from keeping a request busy with them (the
 * response timeout bounds the time anyway). */
#define MAX_INTERIM 16

static void start_connect(struct http_client *c);
static void send_request(struct http_client *c);

static void maybe_closed(struct http_client *c);

static void stream_closed(struct net_stream *s)
{
	struct http_client *c = net_stream_data(s);
	c->streams--;
	maybe_closed(c);
}

static void drop_connection(struct http_client *c)
{
	if (c->s) {
		/* Nothing more of it reaches us but its write callbacks, which
		 * see it is no longer c->s; its close is counted. */
		net_stream_set_callbacks(c->s, NULL, c);
		net_stream_close(c->s, stream_closed);
		c->s = NULL;
	}
	c->connected = 0;
}

static void finish(struct http_client *c, int status, const char *err)
{
	struct http_response r;
	uv_timer_stop(&c->timer);
	c->in_request = 0;
	/* An answer that came before the whole request was written (a 413
	 * after the first bytes of a large body, say) leaves the rest of the
	 * body on its way: the server would read it as the next request. */
	if (status < 0 || !c->keep_alive || c->writing || c->tls_changed)
		drop_connection(c);
	c->tls_changed = 0;
	r.status = status;
	/* NUL-terminated, so that callers may treat it as a string. */
	r.body = rbuf_cstr(&c->resp_body);
	r.body_len = c->resp_body.len;
	r.retry_after_s = c->retry_after_s;
	r.err = err;
	http_client_cb cb = c->cb;
	c->cb = NULL;
	c->body = NULL;
	if (cb)
		cb(c, &r, c->cb_arg);
}

__attribute__((format(printf, 3, 4)))
static void fail(struct http_client *c, int status, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(c->err, sizeof(c->err), fmt, ap);
	va_end(ap);
	rbuf_reset(&c->resp_body);
	c->retry_after_s = 0;
	finish(c, status, c->err);
}

/*---- response parsing ----*/

static int on_message_begin(llhttp_t *p)
{
	struct http_client *c = p->data;
	rbuf_reset(&c->resp_body);
	rbuf_reset(&c->hname);
	rbuf_reset(&c->hval);
	c->in_value = 0;
	c->retry_after_s = 0;
	return 0;
}

/* Days from 1970-01-01 to y-m-d of the proleptic Gregorian calendar (m
 * 1-12): the usual shift of the year to start in March, so that the leap
 * day is the last of the year. */
static int64_t days_from_civil(int64_t y, int m, int d)
{
	y -= m <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	int64_t yoe = y - era * 400;
	int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

/* n decimal digits at s, or -1 if any is not a digit. */
static int digits(const char *s, int n)
{
	int v = 0;
	for (int i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	return v;
}

/* IMF-fixdate, "Sun, 06 Nov 1994 08:49:37 GMT", exactly: seconds since
 * the epoch, or -1. The day name is checked for form only. */
static int64_t parse_imf_fixdate(const char *s, size_t len)
{
	static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
	if (len != 29 || s[3] != ',' || s[4] != ' ' || s[7] != ' ' || s[11] != ' ' || s[16] != ' ' ||
	    s[19] != ':' || s[22] != ':' || memcmp(s + 25, " GMT", 4) != 0)
		return -1;
	int mon = 0;
	while (mon < 12 && memcmp(months + 3 * mon, s + 8, 3) != 0)
		mon++;
	int day = digits(s + 5, 2), year = digits(s + 12, 4);
	int h = digits(s + 17, 2), mi = digits(s + 20, 2), sec = digits(s + 23, 2);
	static const int mdays[] = { 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
	int leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
	if (mon == 12 || day < 1 || day > mdays[mon] || (mon == 1 && day == 29 && !leap) || year < 0 || h < 0 ||
	    h > 23 || mi < 0 || mi > 59 || sec < 0 || sec > 60)
		return -1;
	return days_from_civil(year, mon + 1, day) * 86400 + h * 3600 + mi * 60 + sec;
}

uint64_t http_parse_retry_after(const char *v, size_t len, int64_t now_s)
{
	while (len && (*v == ' ' || *v == '\t'))
		v++, len--;
	while (len && (v[len - 1] == ' ' || v[len - 1] == '\t'))
		len--;
	if (!len)
		return 0;
	if (v[0] >= '0' && v[0] <= '9') {
		uint64_t s = 0;
		for (size_t i = 0; i < len; i++) {
			if (v[i] < '0' || v[i] > '9')
				return 0;
			unsigned d = (unsigned)(v[i] - '0');
			/* Saturate: 2^61 seconds must not come out as 0 ms later. */
			s = s > (UINT64_MAX - d) / 10 ? UINT64_MAX : s * 10 + d;
		}
		return s;
	}
	int64_t at = parse_imf_fixdate(v, len);
	return at > now_s ? (uint64_t)(at - now_s) : 0;
}

static void header_done(struct http_client *c)
{
	const char *n = rbuf_cstr(&c->hname);
	if (strcasecmp(n, "retry-after") == 0)
		c->retry_after_s = http_parse_retry_after(rbuf_cstr(&c->hval), c->hval.len,
		                                          now_realtime_ns() / 1000000000);
	rbuf_reset(&c->hname);
	rbuf_reset(&c->hval);
}

/* Append to b what fits of at/len within max bytes in all. */
static void append_bounded(struct rbuf *b, const char *at, size_t len, size_t max)
{
	if (b->len < max)
		rbuf_append(b, at, len < max - b->len ? len : max - b->len);
}

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
	struct http_client *c = p->data;
	if (c->in_value) {
		header_done(c);
		c->in_value = 0;
	}
	/* Keep a prefix only (names that matter are short). Truncate rather
	 * than skip a piece that does not fit: a name arrives in as many
	 * pieces as the backend sends segments, and skipping one could make
	 * "Retry-" + a long piece + "After" read as Retry-After. */
	append_bounded(&c->hname, at, len, 255);
	return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
	struct http_client *c = p->data;
	c->in_value = 1;
	append_bounded(&c->hval, at, len, 1023);
	return 0;
}

/* Refuse the response from inside a callback: llhttp stops with an error,
 * and read_cb reports err rather than llhttp's generic reason. */
__attribute__((format(printf, 2, 3)))
static int refuse(struct http_client *c, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(c->err, sizeof(c->err), fmt, ap);
	va_end(ap);
	c->refused = 1;
	return -1;
}

static int on_headers_complete(llhttp_t *p)
{
	struct http_client *c = p->data;
	int status = llhttp_get_status_code(p);
	if (c->in_value || c->hname.len)
		header_done(c);
	c->in_value = 0;
	if (status < 100 || status > 999)
		return refuse(c, "malformed response: status %d is not three digits", status);
	if (status == 101)
		/* Whatever follows is another protocol: the write was not
		 * taken, and the connection is of no use to us any more. */
		return refuse(c, "the backend answered 101 Switching Protocols to a write");
	if (status < 200) {
		/* An interim answer (100 Continue, 103 Early Hints, ...): no
		 * body, whatever its header says (RFC 9110 section 15.2); the
		 * final answer follows on the same connection. */
		if (++c->interim > MAX_INTERIM)
			return refuse(c, "malformed response: more than %d interim (1xx) answers", MAX_INTERIM);
		return 1; /* llhttp: no body */
	}
	return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
	struct http_client *c = p->data;
	/* Keep the start only: enough to classify the answer. */
	if (c->resp_body.len < MAX_KEPT_BODY) {
		size_t n = MAX_KEPT_BODY - c->resp_body.len;
		rbuf_append(&c->resp_body, at, len < n ? len : n);
	}
	return 0;
}

static int on_message_complete(llhttp_t *p)
{
	struct http_client *c = p->data;
	/* An interim answer is over: parse on, into the next one. on_message_begin
	 * forgets its headers (a Retry-After of a 103 is not the final
	 * answer's). */
	if (llhttp_get_status_code(p) < 200)
		return 0;
	c->complete = 1;
	return HPE_PAUSED;
}

/*---- I/O ----*/

/* The connection ended or failed (nread: UV_EOF, or the failure's libuv
 * code; e: the transport's error, or NULL for a clean end). */
static void on_end(struct http_client *c, ssize_t nread, const struct net_error *e)
{
	if (!c->in_request) {
		drop_connection(c); /* the server closed an idle connection */
		return;
	}
	if (c->reused && !c->got_bytes && !(e && e->kind == NET_ERR_VERIFY)) {
		/* The kept-alive connection was closed by the server just as
		 * we used it: nothing was processed, resend on a fresh one. */
		drop_connection(c);
		c->reused = 0;
		start_connect(c);
		return;
	}
	if (nread == UV_EOF && c->got_bytes && !c->refused) {
		/* An answer with neither Content-Length nor chunked framing
		 * ends where the connection does (RFC 9112 section 6.3):
		 * llhttp completes it now, or says it was cut short. */
		llhttp_finish(&c->parser);
		if (c->complete) {
			c->keep_alive = 0;
			finish(c, llhttp_get_status_code(&c->parser), NULL);
			return;
		}
	}
	if (e && e->kind == NET_ERR_VERIFY) {
		/* TLS 1.3: a server that refuses our client certificate (or
		 * wants one) says so after our side of the handshake is done. */
		fail(c, OUTCOME_STATUS_TLS_VERIFY, "%s", e->msg);
		return;
	}
	if (e)
		fail(c, OUTCOME_STATUS_RESET, "connection closed before the response was complete (%s)", e->msg);
	else
		fail(c, OUTCOME_STATUS_RESET, "connection closed before the response was complete (%s)",
		     nread == UV_EOF ? "end of stream" : uv_strerror((int)nread));
}

static void on_bytes(struct http_client *c, const char *data, size_t len)
{
	if (!c->in_request) {
		/* Bytes nobody asked for: the connection is not trustworthy. */
		drop_connection(c);
		return;
	}
	c->got_bytes = 1;
	llhttp_errno_t e = llhttp_execute(&c->parser, data, len);
	/* Bytes after the answer, in the same read: nobody asked for them,
	 * so the connection is out of step and not used again. */
	int trailing = e == HPE_PAUSED && llhttp_get_error_pos(&c->parser) != data + len;
	if (e == HPE_PAUSED && c->complete) {
		int status = llhttp_get_status_code(&c->parser);
		c->keep_alive = llhttp_should_keep_alive(&c->parser) && !trailing;
		llhttp_resume(&c->parser);
		finish(c, status, NULL);
	} else if (e != HPE_OK && c->refused) {
		char why[sizeof(c->err)];
		snprintf(why, sizeof(why), "%s", c->err); /* fail() writes err */
		fail(c, OUTCOME_STATUS_PROTOCOL, "%s", why);
	} else if (e != HPE_OK) {
		fail(c, OUTCOME_STATUS_PROTOCOL, "malformed response: %s", llhttp_get_error_reason(&c->parser));
	}
}

static void stream_read(struct net_stream *s, const char *data, size_t len)
{
	struct http_client *c = net_stream_data(s);
	if (s == c->s)
		on_bytes(c, data, len);
}

static void stream_eof(struct net_stream *s)
{
	struct http_client *c = net_stream_data(s);
	if (s == c->s)
		on_end(c, UV_EOF, NULL);
}

static void stream_error(struct net_stream *s, const struct net_error *e)
{
	struct http_client *c = net_stream_data(s);
	if (s == c->s)
		on_end(c, e->uv_code ? e->uv_code : UV_EPROTO, e);
}

static const struct net_stream_callbacks stream_cbs = {
	.on_read = stream_read,
	.on_eof = stream_eof,
	.on_error = stream_error,
};

static void write_cb(struct net_stream *s, int status, void *arg)
{
	struct http_client *c = arg;
	/* A write cancelled by an earlier close belongs to a dead connection. */
	if (s != c->s)
		return;
	c->writing = 0;
	if (status < 0 && c->in_request) {
		if (c->reused && !c->got_bytes) {
			drop_connection(c);
			c->reused = 0;
			start_connect(c);
			return;
		}
		fail(c, OUTCOME_STATUS_RESET, "cannot send the request: %s", uv_strerror(status));
	}
}

static void timer_cb(uv_timer_t *t)
{
	struct http_client *c = t->data;
	if (!c->in_request)
		return;
	if (!c->connected && c->tls_error) {
		/* No context, so no connection: the operator must fix a file. */
		fail(c, OUTCOME_STATUS_TLS_CONFIG, "%s", c->tls_error);
		return;
	}
	/* (The connect's own timeout is the transport's.) */
	fail(c, OUTCOME_STATUS_TIMEOUT, "no complete response within %llu ms",
	     (unsigned long long)c->response_timeout_ms);
}

/* A fresh parser and state for the answer to the request going out. */
static void expect_response(struct http_client *c)
{
	c->got_bytes = 0;
	c->interim = 0;
	c->refused = 0;
	c->complete = 0;
	llhttp_init(&c->parser, HTTP_RESPONSE, &c->settings);
	c->parser.data = c;
	uv_timer_start(&c->timer, timer_cb, c->response_timeout_ms, 0);
}

static void send_request(struct http_client *c)
{
	uv_buf_t bufs[2];
	int n = 1;
	bufs[0] = uv_buf_init(c->head.data, (unsigned)c->head.len);
	if (c->body_len)
		bufs[n++] = uv_buf_init((char *)c->body, (unsigned)c->body_len);
	expect_response(c);
	c->writing = 1;
	int rc = net_stream_write(c->s, bufs, (unsigned)n, write_cb, c);
	if (rc < 0)
		fail(c, OUTCOME_STATUS_RESET, "cannot send the request: %s", uv_strerror(rc));
}

/* The transport's connect failure as an outcome status: a certificate is
 * the operator's to fix (hold); the rest is retried like a refused
 * connect. */
static int connect_status(enum net_err kind)
{
	switch (kind) {
	case NET_ERR_VERIFY: return OUTCOME_STATUS_TLS_VERIFY;
	case NET_ERR_TIMEOUT: return OUTCOME_STATUS_TIMEOUT;
	case NET_ERR_RESET: return OUTCOME_STATUS_RESET;
	default: return OUTCOME_STATUS_CONNECT_FAILED;
	}
}

static void connect_cb(struct net_stream *s, const struct net_error *err, void *arg)
{
	struct http_client *c = arg;
	if (s != c->s)
		return; /* (a closed connect never calls back; kept for safety) */
	if (err) {
		/* The layer closes s itself: nothing of it comes back. */
		c->s = NULL;
		c->streams--;
		fail(c, connect_status(err->kind), "%s", err->msg);
		return;
	}
	c->connected = 1;
	uv_tcp_nodelay(net_stream_tcp(s), 1);
	if (net_stream_is_tls(s)) {
		int resumed = net_stream_session_reused(s);
		c->tls_handshakes++;
		c->tls_resumed += resumed != 0;
		/* The one place a test (and an operator at debug level) can see
		 * that a reconnect resumed its session. */
		relay_log(RELAY_LOG_DEBUG, "tls with %s:%u: %s, session %s", c->host, c->port,
			  net_stream_tls_version(s), resumed ? "resumed" : "new");
	}
	net_stream_set_callbacks(s, &stream_cbs, c);
	int rc = net_stream_read_start(s);
	if (rc < 0) {
		fail(c, OUTCOME_STATUS_RESET, "cannot read: %s", uv_strerror(rc));
		return;
	}
	send_request(c);
}

static void start_connect(struct http_client *c)
{
	if (c->tls_error) {
		/* Answered from the loop, never inside http_client_request. */
		uv_timer_start(&c->timer, timer_cb, 0, 0);
		return;
	}
	uv_timer_stop(&c->timer);
	c->streams++;
	c->s = net_connect(c->loop, c->host, c->port, c->connect_timeout_ms, c->tls, c->server_name, connect_cb, c);
	net_stream_set_callbacks(c->s, NULL, c);
}

/*---- API ----*/

void http_client_init(struct http_client *c, uv_loop_t *loop, const char *host, uint16_t port,
                      uint64_t connect_timeout_ms, uint64_t response_timeout_ms)
{
	memset(c, 0, sizeof(*c));
	c->loop = loop;
	c->host = xstrdup(host);
	c->port = port;
	c->connect_timeout_ms = connect_timeout_ms;
	c->response_timeout_ms = response_timeout_ms;
	llhttp_settings_init(&c->settings);
	c->settings.on_message_begin = on_message_begin;
	c->settings.on_header_field = on_header_field;
	c->settings.on_header_value = on_header_value;
	c->settings.on_headers_complete = on_headers_complete;
	c->settings.on_body = on_body;
	c->settings.on_message_complete = on_message_complete;
	uv_timer_init(loop, &c->timer);
	c->timer.data = c;
	c->timer_open = 1;
}

void http_client_build_head(struct rbuf *out, const char *method, const char *target, const char *host,
                            uint16_t port, const char *headers, size_t body_len)
{
	/* An IPv6 literal goes in brackets (RFC 9110 section 7.2), or its
	 * colons would read as the port's. */
	const char *lb = strchr(host, ':') ? "[" : "", *rb = *lb ? "]" : "";
	rbuf_appendf(out, "%s %s HTTP/1.1\r\nHost: %s%s%s:%u\r\nUser-Agent: relayd/%s\r\nContent-Length: %zu\r\n",
		     method, target, lb, host, rb, port, RELAYD_VERSION, body_len);
	if (headers)
		rbuf_append(out, headers, strlen(headers));
	rbuf_append(out, "\r\n", 2);
}

/* Take the request as c's current one (not sent yet). */
static void take_request(struct http_client *c, const char *method, const char *target, const char *headers,
                         const char *body, size_t body_len, http_client_cb cb, void *arg)
{
	rbuf_reset(&c->head);
	http_client_build_head(&c->head, method, target, c->host, c->port, headers, body_len);
	c->body = body;
	c->body_len = body_len;
	c->cb = cb;
	c->cb_arg = arg;
	c->in_request = 1;
	c->keep_alive = 1;
	c->err[0] = '\0';
	rbuf_reset(&c->resp_body);
}

int http_client_request(struct http_client *c, const char *method, const char *target, const char *headers,
                        const char *body, size_t body_len, http_client_cb cb, void *arg)
{
	if (c->in_request || c->closing)
		return -EBUSY;
	take_request(c, method, target, headers, body, body_len, cb, arg);
	if (c->connected) {
		c->reused = 1;
		send_request(c);
	} else {
		c->reused = 0;
		start_connect(c);
	}
	return 0;
}

void http_client_set_tls(struct http_client *c, struct net_tls_ctx *tls, const char *server_name,
                         const char *tls_error)
{
	if (tls)
		net_tls_ctx_ref(tls);
	net_tls_ctx_unref(c->tls);
	c->tls = tls;
	free(c->server_name);
	c->server_name = server_name ? xstrdup(server_name) : NULL;
	free(c->tls_error);
	c->tls_error = !tls && tls_error ? xstrdup(tls_error) : NULL;
	/* The next request connects with the new context. */
	if (c->in_request)
		c->tls_changed = 1;
	else
		drop_connection(c);
}

static void maybe_closed(struct http_client *c)
{
	if (!c->closing || c->timer_open || c->streams || c->host == NULL)
		return;
	rbuf_release(&c->head);
	rbuf_release(&c->resp_body);
	rbuf_release(&c->hname);
	rbuf_release(&c->hval);
	free(c->host);
	c->host = NULL;
	net_tls_ctx_unref(c->tls);
	c->tls = NULL;
	free(c->server_name);
	c->server_name = NULL;
	free(c->tls_error);
	c->tls_error = NULL;
	if (c->close_cb)
		c->close_cb(c);
}

static void timer_closed(uv_handle_t *h)
{
	maybe_closed(h->data);
}

void http_client_close(struct http_client *c, void (*cb)(struct http_client *c))
{
	c->closing = 1;
	c->close_cb = cb;
	c->cb = NULL;
	c->in_request = 0;
	drop_connection(c);
	if (c->timer_open) {
		c->timer_open = 0;
		uv_timer_stop(&c->timer);
		uv_close((uv_handle_t *)&c->timer, timer_closed);
	}
}

void http_client_feed_response(struct http_client *c, const char *data, size_t len, size_t piece, int flags,
                               http_client_cb cb, void *arg)
{
	relay_assert(!c->in_request && !c->closing);
	take_request(c, "POST", "/write?db=fed", NULL, NULL, 0, cb, arg);
	drop_connection(c);
	/* No stream: a connection only in name, which finish drops by
	 * clearing the flag. */
	c->connected = 1;
	c->reused = 0;
	expect_response(c);
	c->writing = (flags & HTTP_FEED_WRITING) != 0;
	size_t off = 0;
	/* Read after read until the client drops the connection (an answer
	 * with Connection: close, bytes nobody asked for, a failure). */
	while (off < len && c->connected) {
		size_t n = piece && piece < len - off ? piece : len - off;
		/* A copy of its own, as the stream's buffer would be: a
		 * sanitizer sees reads past the piece. */
		char *b = xmalloc(n);
		memcpy(b, data + off, n);
		off += n;
		on_bytes(c, b, n);
		free(b);
	}
	if (c->connected)
		on_end(c, UV_EOF, NULL);
	drop_connection(c);
	c->writing = 0;
	relay_assert(!c->in_request);
}
