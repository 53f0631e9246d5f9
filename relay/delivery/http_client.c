/*
 * http_client: see http_client.h. Must never block the loop: names are
 * resolved with uv_getaddrinfo (on the thread pool), and every wait has a
 * timer. Callbacks to the user run only after llhttp_execute has returned,
 * so the user may send the next request (or close) from inside them.
 */
#include "relay/delivery/http_client.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relay/base/outcome.h"

#define MAX_KEPT_BODY 4096
/* Interim answers taken before one final answer. RFC 9110 sets no limit;
 * this one only stops a backend from keeping a request busy with them (the
 * response timeout bounds the time anyway). */
#define MAX_INTERIM 16

static void start_connect(struct http_client *c);
static void send_request(struct http_client *c);

static void tcp_free(uv_handle_t *h)
{
	free(h);
}

static void drop_connection(struct http_client *c)
{
	if (c->tcp) {
		c->tcp->data = NULL;
		uv_close((uv_handle_t *)c->tcp, tcp_free);
		c->tcp = NULL;
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
	if (status < 0 || !c->keep_alive || c->writing)
		drop_connection(c);
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

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	(void)h;
	buf->base = xmalloc(suggested);
	buf->len = suggested;
}

static void read_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
	struct http_client *c = st->data;
	if (!c || (uv_tcp_t *)st != c->tcp) {
		free(buf->base);
		return;
	}
	if (nread < 0) {
		free(buf->base);
		if (!c->in_request) {
			drop_connection(c); /* the server closed an idle connection */
			return;
		}
		if (c->reused && !c->got_bytes) {
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
		fail(c, OUTCOME_STATUS_RESET, "connection closed before the response was complete (%s)",
		     nread == UV_EOF ? "end of stream" : uv_strerror((int)nread));
		return;
	}
	if (nread == 0) {
		free(buf->base);
		return;
	}
	if (!c->in_request) {
		/* Bytes nobody asked for: the connection is not trustworthy. */
		free(buf->base);
		drop_connection(c);
		return;
	}
	c->got_bytes = 1;
	llhttp_errno_t e = llhttp_execute(&c->parser, buf->base, (size_t)nread);
	/* Bytes after the answer, in the same read: nobody asked for them,
	 * so the connection is out of step and not used again. */
	int trailing = e == HPE_PAUSED && llhttp_get_error_pos(&c->parser) != buf->base + nread;
	free(buf->base);
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

static void write_cb(uv_write_t *req, int status)
{
	struct http_client *c = req->data;
	uv_stream_t *h = req->handle;
	free(req);
	/* A write cancelled by an earlier close belongs to a dead connection. */
	if (!c || (uv_tcp_t *)h != c->tcp)
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
	char what[64];
	if (!c->in_request)
		return;
	if (c->connected)
		snprintf(what, sizeof(what), "no complete response within %llu ms",
			 (unsigned long long)c->response_timeout_ms);
	else
		snprintf(what, sizeof(what), "no connection within %llu ms",
			 (unsigned long long)c->connect_timeout_ms);
	fail(c, OUTCOME_STATUS_TIMEOUT, "%s", what);
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
	uv_write_t *wr = xmalloc(sizeof(*wr));
	wr->data = c;
	c->writing = 1;
	int rc = uv_write(wr, (uv_stream_t *)c->tcp, bufs, (unsigned)n, write_cb);
	if (rc < 0) {
		free(wr);
		fail(c, OUTCOME_STATUS_RESET, "cannot send the request: %s", uv_strerror(rc));
	}
}

static void connect_cb(uv_connect_t *req, int status)
{
	struct http_client *c = req->data;
	uv_stream_t *h = req->handle;
	free(req);
	if (!c->in_request || (uv_tcp_t *)h != c->tcp)
		return; /* timed out meanwhile; the handle is being closed */
	if (status < 0) {
		fail(c, OUTCOME_STATUS_CONNECT_FAILED, "cannot connect: %s", uv_strerror(status));
		return;
	}
	c->connected = 1;
	uv_tcp_nodelay(c->tcp, 1);
	int rc = uv_read_start((uv_stream_t *)c->tcp, alloc_cb, read_cb);
	if (rc < 0) {
		fail(c, OUTCOME_STATUS_RESET, "cannot read: %s", uv_strerror(rc));
		return;
	}
	send_request(c);
}

static void connect_addr(struct http_client *c, const struct sockaddr *sa)
{
	c->tcp = xmalloc(sizeof(*c->tcp));
	uv_tcp_init(c->loop, c->tcp);
	c->tcp->data = c;
	uv_connect_t *req = xmalloc(sizeof(*req));
	req->data = c;
	int rc = uv_tcp_connect(req, c->tcp, sa, connect_cb);
	if (rc < 0) {
		free(req);
		fail(c, OUTCOME_STATUS_CONNECT_FAILED, "cannot connect: %s", uv_strerror(rc));
	}
}

static void gai_cb(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
	struct http_client *c = req->data;
	int stale = c->gai_pending != req;
	free(req);
	if (!stale)
		c->gai_pending = NULL;
	if (stale || !c->in_request || c->connected || c->tcp) {
		uv_freeaddrinfo(res);
		return;
	}
	if (status < 0 || !res) {
		uv_freeaddrinfo(res);
		fail(c, OUTCOME_STATUS_CONNECT_FAILED, "cannot resolve host: %s", uv_strerror(status));
		return;
	}
	connect_addr(c, res->ai_addr);
	uv_freeaddrinfo(res);
}

static void start_connect(struct http_client *c)
{
	struct sockaddr_storage ss;
	uv_timer_start(&c->timer, timer_cb, c->connect_timeout_ms, 0);
	/* Literal addresses skip the resolver (and the thread pool). */
	if (uv_ip4_addr(c->host, c->port, (struct sockaddr_in *)&ss) == 0 ||
	    uv_ip6_addr(c->host, c->port, (struct sockaddr_in6 *)&ss) == 0) {
		connect_addr(c, (struct sockaddr *)&ss);
		return;
	}
	char port[8];
	struct addrinfo hints;
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	snprintf(port, sizeof(port), "%u", c->port);
	uv_getaddrinfo_t *req = xmalloc(sizeof(*req));
	req->data = c;
	c->gai_pending = req;
	int rc = uv_getaddrinfo(c->loop, req, gai_cb, c->host, port, &hints);
	if (rc < 0) {
		free(req);
		c->gai_pending = NULL;
		fail(c, OUTCOME_STATUS_CONNECT_FAILED, "cannot resolve host: %s", uv_strerror(rc));
	}
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

static void timer_closed(uv_handle_t *h)
{
	struct http_client *c = h->data;
	rbuf_release(&c->head);
	rbuf_release(&c->resp_body);
	rbuf_release(&c->hname);
	rbuf_release(&c->hval);
	free(c->host);
	c->host = NULL;
	if (c->close_cb)
		c->close_cb(c);
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
	/* A handle never opened: read_cb only compares it, and closing it
	 * is what dropping a real connection does. */
	c->tcp = xmalloc(sizeof(*c->tcp));
	uv_tcp_init(c->loop, c->tcp);
	c->tcp->data = c;
	c->connected = 1;
	c->reused = 0;
	expect_response(c);
	c->writing = (flags & HTTP_FEED_WRITING) != 0;
	size_t off = 0;
	/* Read after read until the client drops the connection (an answer
	 * with Connection: close, bytes nobody asked for, a failure). */
	while (off < len && c->tcp) {
		size_t n = piece && piece < len - off ? piece : len - off;
		uv_buf_t b = uv_buf_init(xmalloc(n), (unsigned)n);
		memcpy(b.base, data + off, n);
		off += n;
		read_cb((uv_stream_t *)c->tcp, (ssize_t)n, &b);
	}
	if (c->tcp) {
		uv_buf_t b = uv_buf_init(xmalloc(64), 64);
		read_cb((uv_stream_t *)c->tcp, UV_EOF, &b);
	}
	drop_connection(c);
	c->writing = 0;
	relay_assert(!c->in_request);
}
