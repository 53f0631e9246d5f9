/*
 * http_server: a connection's life, the read loop, timeouts, routing and
 * answers (the listeners are http_listen.c's, requests are parsed in
 * http_request.c, writes handled in http_write.c). Must never block the
 * loop (no fsync, no DNS, no sleeping here).
 *
 * Every connection is a relay/net stream, plain or TLS: the bytes read
 * and written here are plaintext either way, and what TLS adds (the
 * handshake, its timeout, plain HTTP on the TLS port, a client
 * certificate) arrives as the stream's callbacks (on_error,
 * on_handshake). Reading paused is the stream's read_stop: a TLS stream
 * then reads no more records either, so backpressure holds as for TCP.
 *
 * One request per connection is processed at a time: when a request is
 * complete the parser is paused (HPE_PAUSED from on_message_complete) and
 * reading stops until its response is queued. Bytes already read for the
 * next (pipelined) requests wait in conn->pend. Responses therefore leave
 * in request order, and a client that pipelines cannot make us buffer more
 * than one request's body; one that does not read its answers is not read
 * either while more than OUT_HIGH bytes of them wait.
 */

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relay/door/http_internal.h"

static void conn_process(struct conn *c, const char *data, size_t len);

/*---- responses ----*/

const char *http_status_text(int status)
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
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	}
	/* Every status relayd makes is listed above; a class name is the
	 * honest answer for one that is not (a backend's, passed through). */
	return status >= 500 ? "Server Error" : status >= 400 ? "Client Error" : "Status";
}

/*
 * Our last response is out: half-close and drain for a moment rather than
 * close(). Closing with unread input makes the kernel send RST, and the
 * client could lose the response we just wrote (a 413, say). With TLS the
 * stream sends close_notify before the FIN (net_stream_shutdown).
 */
static void start_linger(struct conn *c)
{
	http_set_timer(c, T_LINGER);
	c->lingering = 1; /* after set_timer: no later timer replaces this one */
	if (net_stream_shutdown(c->ns, NULL, NULL) < 0) {
		http_conn_close(c);
		return;
	}
	/* A failed stream reads nothing more (the answer to plain HTTP on the
	 * TLS port): the timer alone ends the linger. */
	if (!c->reading && !c->failed) {
		if (net_stream_read_start(c->ns) == 0)
			c->reading = 1;
		else
			http_conn_close(c);
	}
}

struct write_req {
	struct conn *c;
	char *buf;
	size_t len;
};

static void write_cb(struct net_stream *ns, int status, void *arg)
{
	struct write_req *wr = arg;
	struct conn *c = wr->c;
	(void)ns;
	c->out_queued -= wr->len;
	free(wr->buf);
	free(wr);
	c->writes--;
	if (status < 0 && !c->closing) {
		http_conn_close(c);
		return;
	}
	if (c->qp && c->out_queued <= OUT_LOW && !c->closing)
		http_query_drained(c); /* the client caught up: read the backend again */
	if (c->out_blocked && c->out_queued <= OUT_LOW && !c->closing) {
		/* The client read its answers: parse the requests it sent. */
		c->out_blocked = 0;
		http_conn_continue(c);
	}
	if (c->close_after && c->writes == 0 && !c->closing && !c->lingering) {
		if (c->srv->closing)
			http_conn_close(c); /* shutting down: no time to linger */
		else
			start_linger(c);
	}
	http_maybe_free(c);
}

void http_send_raw(struct conn *c, char *buf, size_t len)
{
	if (c->fake || c->closing || !c->ns) {
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
	/* The stream never calls write_cb inside this call, so c->writes is
	 * right whatever it does; on a failure it never calls it at all. */
	if (net_stream_write(c->ns, &b, 1, write_cb, wr) < 0) {
		c->writes--;
		c->out_queued -= len;
		free(buf);
		free(wr);
		http_conn_close(c);
	}
}

/*
 * Queue a response. body may be NULL. extra is extra header lines, each
 * ending in "\r\n". With close, the connection ends after this response.
 */
void http_respond(struct conn *c, int status, const char *extra, const char *body, size_t body_len,
                    int close, int head_only)
{
	http_respond_as(c, status, "application/json", extra, body, body_len, close, head_only);
}

void http_respond_as(struct conn *c, int status, const char *ctype, const char *extra, const char *body,
                     size_t body_len, int close, int head_only)
{
	struct rbuf r = RBUF_INIT;
	http_count_answer(c, status);
	rbuf_appendf(&r, "HTTP/1.1 %d %s\r\n", status, http_status_text(status));
	if (body_len)
		rbuf_appendf(&r, "Content-Type: %s\r\n", ctype);
	http_version_headers(c->srv, &r);
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
	http_send_raw(c, r.data, r.len);
}

/* Clients that check X-Influxdb-Version (for a 1.x or a 2.x server)
 * refuse one they cannot parse: relayd says the backend's own, and its
 * own version under a header of its own. */
void http_version_headers(const struct http_server *s, struct rbuf *out)
{
	const char *v = s && s->backend_version[0] ? s->backend_version : HTTP_FALLBACK_VERSION;
	const char *b = s && s->backend_build[0] ? s->backend_build : "OSS";
	rbuf_appendf(out, "X-Influxdb-Build: %s\r\nX-Influxdb-Version: %s\r\nX-Relayd-Version: %s\r\n", b, v,
	             RELAYD_VERSION);
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

void http_respond_error(struct conn *c, int status, const char *msg, const char *extra, int close)
{
	struct rbuf b = RBUF_INIT;
	json_t *o = json_object();
	/* v2 clients read {"code","message"}, v1 clients {"error"} */
	if (c->req.api == API_V2 || c->req.query == QUERY_FLUX) {
		json_object_set_new(o, "code", rjson_cstr(v2_code(status)));
		json_object_set_new(o, "message", rjson_cstr(msg));
	} else {
		json_object_set_new(o, "error", rjson_cstr(msg));
	}
	rjson_append_new(&b, o);
	rbuf_appendc(&b, '\n');
	http_respond(c, status, extra, b.data, b.len, close, 0);
	rbuf_release(&b);
}

/*---- connection lifetime ----*/


/* The last handle of a closing server is gone: free it, then tell the
 * owner (after, so that the owner may free what held the server). */
void http_server_free(struct http_server *s)
{
	void (*done)(void *) = s->done;
	void *arg = s->done_arg;
	net_tls_ctx_unref(s->tls);
	free(s);
	if (done)
		done(arg);
}

void http_maybe_free(struct conn *c)
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
	http_request_release(c); /* gives back the whole budget c held */
	int was_fake = c->fake;
	free(c);
	if (!was_fake && s) {
		s->stats.connections_open--;
		if (s->closing && !s->conns && !s->listeners_open)
			http_server_free(s);
	}
}

static void handle_closed(uv_handle_t *h)
{
	struct conn *c = h->data;
	c->handles--;
	http_maybe_free(c);
}

static void stream_closed(struct net_stream *ns)
{
	struct conn *c = net_stream_data(ns);
	c->ns = NULL;
	c->handles--;
	http_maybe_free(c);
}

/* c's TLS handshake is over (done, failed, or c is closing): it no longer
 * counts against tls.max_handshakes. */
static void handshake_over(struct conn *c)
{
	if (c->handshaking) {
		c->handshaking = 0;
		c->srv->handshakes--;
	}
}

void http_conn_close(struct conn *c)
{
	if (c->closing)
		return;
	c->closing = 1;
	/* A client that leaves mid-answer: the backend's query stops too. */
	if (c->qp)
		http_query_abort(c);
	if (c->fake)
		return;
	handshake_over(c);
	uv_close((uv_handle_t *)&c->timer, handle_closed);
	/* The stream cancels its writes (write_cb with UV_ECANCELED) before
	 * its close callback, so c->writes is 0 by the time handles is. */
	if (c->ns)
		net_stream_close(c->ns, stream_closed);
}

static void timer_cb(uv_timer_t *t);

void http_set_timer(struct conn *c, enum timer_mode m)
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
	case T_QWAIT: ms = c->req.query_poll_ms; break;
	case T_NONE: uv_timer_stop(&c->timer); return;
	}
	uv_timer_start(&c->timer, timer_cb, ms, 0);
}

static void timer_cb(uv_timer_t *t)
{
	struct conn *c = t->data;
	switch (c->tmode) {
	case T_HEADER:
		http_respond_error(c, 408, "request headers not received in time", NULL, 1);
		break;
	case T_BODY:
		http_respond_error(c, 408, "request body not received in time", NULL, 1);
		break;
	case T_QWAIT:
		http_query_wait_tick(c);
		break;
	case T_IDLE:
	case T_LINGER:
	case T_NONE:
		http_conn_close(c);
		break;
	}
}

/*---- routing ----*/

/* Answer the request just completed. Returns 1 if answered synchronously,
 * 0 if the answer comes later (a write waiting for its commit). */
static int dispatch(struct conn *c)
{
	struct http_server *s = c->srv;
	const char *url = rbuf_cstr(&c->req.url);
	const char *q = strchr(url, '?');
	size_t plen = q ? (size_t)(q - url) : strlen(url);
	int method = llhttp_get_method(&c->parser);
	int keep = llhttp_should_keep_alive(&c->parser);

	s->stats.requests++;
	/* Queries first: their own errors (credentials, 401, 403, a body
	 * over the budget) are answered and counted as queries. */
	if (c->req.query != QUERY_NONE && s->cfg->query_enabled) {
		int flux = c->req.query == QUERY_FLUX;
		if (method != HTTP_POST && (flux || method != HTTP_GET)) {
			http_respond_error(c, 405, flux ? "method not allowed: /api/v2/query takes POST" :
			                                  "method not allowed: /query takes GET or POST",
			                   flux ? "Allow: POST\r\n" : "Allow: GET, POST\r\n", !keep);
			return 1;
		}
		return http_handle_query(c);
	}
	if (c->req.err_status && c->req.api == API_NONE) {
		http_respond_error(c, c->req.err_status, c->req.err_msg, NULL, !keep);
		return 1;
	}
	if (plen == 5 && memcmp(url, "/ping", 5) == 0) {
		if (method != HTTP_GET && method != HTTP_HEAD) {
			http_respond_error(c, 405, "method not allowed: /ping takes GET or HEAD", "Allow: GET, HEAD\r\n", !keep);
			return 1;
		}
		int bad = 0;
		char *verbose = q ? http_query_param(q + 1, "verbose", &bad) : NULL;
		if (verbose && strcmp(verbose, "true") == 0) {
			struct rbuf body = RBUF_INIT;
			json_t *o = json_object();
			json_object_set_new(o, "version", rjson_cstr(s->backend_version[0] ? s->backend_version :
			                                                                  HTTP_FALLBACK_VERSION));
			rjson_append_new(&body, o);
			rbuf_appendc(&body, '\n');
			http_respond(c, 200, NULL, body.data, body.len, !keep, method == HTTP_HEAD);
			rbuf_release(&body);
		} else {
			http_respond(c, 204, NULL, NULL, 0, !keep, 0);
		}
		free(verbose);
		return 1;
	}
	if (c->req.api != API_NONE) {
		if (method != HTTP_POST) {
			http_respond_error(c, 405,
			                   c->req.api == API_V2 ? "method not allowed: /api/v2/write takes POST" :
			                                          "method not allowed: /write takes POST",
			                   "Allow: POST\r\n", !keep);
			return 1;
		}
		http_handle_write(c);
		return !c->waiting;
	}
	if (c->req.err_status) {
		http_respond_error(c, c->req.err_status, c->req.err_msg, NULL, !keep);
		return 1;
	}
	if (http_handle_monitoring(c, url, plen, method, keep))
		return 1;
	if (plen == 7 && memcmp(url, "/health", 7) == 0 && s->health_fn) {
		if (method != HTTP_GET && method != HTTP_HEAD) {
			http_respond_error(c, 405, "method not allowed: /health takes GET or HEAD", "Allow: GET, HEAD\r\n", !keep);
			return 1;
		}
		struct rbuf out = RBUF_INIT;
		int status = s->health_fn(s, &out, s->health_arg);
		rbuf_appendc(&out, '\n');
		http_respond(c, status, "Cache-Control: no-store\r\n", out.data, out.len, !keep, method == HTTP_HEAD);
		rbuf_release(&out);
		return 1;
	}
	http_respond_error(c, 404, "not found", NULL, !keep);
	return 1;
}
/*---- the read loop ----*/

/* Keep data, read but not parsed yet, for later. At most one read's worth
 * (relay/net reads 64 KiB at most): reading stops while it is kept. Counted in the budget,
 * though never refused: the bytes are already read. */
static void save_pending(struct conn *c, const char *data, size_t len)
{
	char *p = xmalloc(len ? len : 1);
	memcpy(p, data, len);
	free(c->pend);
	c->pend = p;
	c->pend_len = len;
	http_budget_sync(c);
}

static void stop_reading(struct conn *c)
{
	if (!c->fake && c->reading) {
		net_stream_read_stop(c->ns);
		c->reading = 0;
	}
}

static void fatal_error(struct conn *c, int status, const char *msg)
{
	/* Reading goes on: read_cb drops input once close_after is set. */
	http_set_timer(c, T_NONE);
	http_respond_error(c, status, msg, NULL, 1);
	http_request_release(c);
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
				/* Wait for the commit or the backend's answer; keep
				 * the rest for later. While a query is passed through
				 * the socket is still read (when nothing waits), so a
				 * client that leaves is seen at once. */
				if (len)
					save_pending(c, data, len);
				if (!c->qp || len)
					stop_reading(c);
				return;
			}
			http_request_release(c);
			if (c->close_after)
				return;
			http_set_timer(c, T_IDLE);
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
		if (c->req.fatal) {
			char msg[sizeof(c->req.err_msg)];
			memcpy(msg, c->req.err_msg, sizeof(msg));
			fatal_error(c, c->req.fatal, msg);
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

/* Plaintext from the stream (decrypted already on the TLS listener).
 * data is the stream's buffer, reused after this call: what is kept is
 * copied (save_pending). */
static void on_read(struct net_stream *ns, const char *data, size_t len)
{
	struct conn *c = net_stream_data(ns);
	if (c->closing || c->lingering || c->close_after)
		return; /* draining after our last response */
	if (c->qp) {
		/* The next request, sent while a query's answer streams: kept
		 * for later, and nothing more is read until it is taken. */
		save_pending(c, data, len);
		stop_reading(c);
		return;
	}
	/* A TLS ClientHello on the plain port (a record of type 22,
	 * handshake, version 3.x): say so plainly, where llhttp would say
	 * "invalid method", and log it, as for plain HTTP on the TLS port. */
	if (!c->got_bytes && !c->tls && len >= 3 && (unsigned char)data[0] == 0x16 && data[1] == 0x03) {
		c->got_bytes = 1;
		relay_log_limited(&c->srv->tls_on_plain_log, RELAY_LOG_WARN,
		                  "%s spoke TLS to the plain HTTP port %s: answered 400 and closed", c->peer,
		                  c->srv->cfg->listen_http ? c->srv->cfg->listen_http : "?");
		fatal_error(c, 400, "this port speaks plain HTTP, not TLS: use http:// (or the https:// port, listen.https)");
		return;
	}
	c->got_bytes = 1;
	conn_process(c, data, len);
}

/* The client ended its side. A request in flight still commits, but there
 * is nobody to answer. */
static void on_eof(struct net_stream *ns)
{
	struct conn *c = net_stream_data(ns);
	c->reading = 0;
	http_conn_close(c);
}

/* "https://ADDRESS:PORT" of the socket the client reached, for the answer
 * to plain HTTP on the TLS port: the address it used, even when the
 * listener is bound to every address. */
static void tls_url(struct conn *c, char *buf, size_t len)
{
	struct sockaddr_storage ss;
	int sl = sizeof(ss);
	char ip[INET6_ADDRSTRLEN] = "";
	int port = c->srv->tls_port;
	if (uv_tcp_getsockname(net_stream_tcp(c->ns), (struct sockaddr *)&ss, &sl) == 0) {
		if (ss.ss_family == AF_INET6)
			uv_ip6_name((struct sockaddr_in6 *)&ss, ip, sizeof(ip));
		else if (ss.ss_family == AF_INET)
			uv_ip4_name((struct sockaddr_in *)&ss, ip, sizeof(ip));
	}
	if (!ip[0])
		snprintf(ip, sizeof(ip), "%s", c->srv->cfg->listen_https_host);
	int v6 = strchr(ip, ':') != NULL;
	snprintf(buf, len, "https://%s%s%s:%d", v6 ? "[" : "", ip, v6 ? "]" : "", port);
}

/*
 * The stream failed: on the TLS listener a handshake that failed or timed
 * out, or plain HTTP; on either, a reset or a read error. Nothing more is
 * read from it; it is closed here, except after plain HTTP, which is
 * answered first (the stream sends that answer as plain bytes).
 */
static void on_error(struct net_stream *ns, const struct net_error *e)
{
	struct conn *c = net_stream_data(ns);
	struct http_server *s = c->srv;
	int in_handshake = c->handshaking;
	c->failed = 1;
	c->reading = 0;
	handshake_over(c);
	if (c->closing)
		return;
	if (e->kind == NET_ERR_PLAIN_HTTP) {
		char url[96], msg[160];
		s->stats.tls_plain_http++;
		/* A misconfigured writer retries: one line per burst. */
		relay_log_limited(&s->tls_log, RELAY_LOG_WARN, "%s", e->msg);
		tls_url(c, url, sizeof(url));
		snprintf(msg, sizeof(msg), "this port speaks HTTPS (TLS): use %s", url);
		c->uncounted = 1; /* no request was read: the connection's refusal */
		http_set_timer(c, T_NONE);
		http_respond_error(c, 400, msg, NULL, 1);
		return;
	}
	if (e->kind == NET_ERR_TIMEOUT) {
		s->stats.tls_handshake_timeouts++;
		relay_log(RELAY_LOG_DEBUG, "%s", e->msg);
	} else if (in_handshake) {
		/* A bad client certificate is worth seeing; a scanner's
		 * garbage is not worth a line each. */
		s->stats.tls_handshake_failures++;
		relay_log_limited(&s->tls_fail_log, RELAY_LOG_INFO, "%s", e->msg);
	} else {
		relay_log(RELAY_LOG_DEBUG, "%s", e->msg);
	}
	http_conn_close(c);
}

/* The TLS handshake is done: the connection is an HTTP one from now on,
 * with the header timeout. A verified client certificate (mTLS) is noted
 * for http_auth_decide. */
static void on_handshake(struct net_stream *ns)
{
	struct conn *c = net_stream_data(ns);
	handshake_over(c);
	c->srv->stats.tls_handshakes++;
	if (net_stream_peer_cn(ns, c->cert_cn, sizeof(c->cert_cn)) >= 0)
		c->cert_ok = 1;
	if (!c->close_after)
		http_set_timer(c, T_HEADER);
}

const struct net_stream_callbacks http_conn_callbacks = {on_read, on_eof, on_error, on_handshake};

void http_answer_end(struct conn *c, int close)
{
	http_request_release(c);
	if (c->closing)
		return;
	if (!close) {
		http_conn_continue(c);
		return;
	}
	c->close_after = 1;
	if (c->writes == 0 && !c->lingering) {
		if (c->srv->closing)
			http_conn_close(c);
		else
			start_linger(c);
	}
}

/* After an asynchronous answer: parse what was already read, then read
 * more. */
void http_conn_continue(struct conn *c)
{
	if (c->closing || c->close_after)
		return;
	llhttp_resume(&c->parser);
	http_set_timer(c, T_IDLE);
	if (c->pend) {
		char *p = c->pend;
		size_t n = c->pend_len;
		c->pend = NULL;
		c->pend_len = 0;
		http_budget_sync(c);
		conn_process(c, p, n);
		free(p);
	}
	if (!c->closing && !c->close_after && !c->waiting && !c->out_blocked && !c->reading && !c->fake) {
		if (net_stream_read_start(c->ns) == 0)
			c->reading = 1;
		else
			http_conn_close(c);
	}
}
/*---- a connection is made (http_listen.c accepts it) ----*/

struct conn *http_conn_new(struct http_server *s)
{
	struct conn *c = xcalloc(1, sizeof(*c));
	c->srv = s;
	http_parser_init(c);
	return c;
}

void http_fuzz_feed(const struct relay_config *cfg, const uint8_t *data, size_t len)
{
	struct http_server s;
	memset(&s, 0, sizeof(s));
	s.cfg = cfg;
	http_counts_init(&s);
	struct conn *c = http_conn_new(&s);
	c->fake = 1;
	/* Feed in two pieces so that state carried between reads is
	 * exercised too. */
	size_t half = len / 2;
	conn_process(c, (const char *)data, half);
	if (!c->closing && !c->close_after && !c->waiting)
		conn_process(c, (const char *)data + half, len - half);
	/* The budget's invariant: the server's count is what its one
	 * connection holds, and nothing once it is freed. */
	if (s.buffered != c->held)
		relay_fatal("fuzz: budget %" PRIu64 " != held %" PRIu64, s.buffered, c->held);
	c->handles = c->refs = c->writes = 0;
	http_maybe_free(c);
	if (s.buffered != 0)
		relay_fatal("fuzz: %" PRIu64 " bytes of budget left after the connection", s.buffered); /* plural-ok: the fuzz harness only */
}
