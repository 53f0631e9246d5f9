/*
 * http_listen: the door's listeners and its life as a whole: listen.http
 * (plain) and listen.https (TLS) bound at start, each connection accepted
 * into a relay/net stream (the TLS listener's with the server context,
 * counted against tls.max_handshakes and http.max_connections), the
 * certificate's context made and swapped by a reload, and the close.
 * What a connection does once accepted is http_server.c's.
 */

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relay/door/http_internal.h"

static void on_connection(uv_stream_t *ls, int status)
{
	struct http_server *s = ls->data;
	const struct relay_config *cfg = s->cfg;
	if (status < 0 || s->closing)
		return;
	int tls = ls == (uv_stream_t *)&s->tls_listener;
	struct conn *c = http_conn_new(s);
	uv_timer_init(s->loop, &c->timer);
	c->timer.data = c;
	c->handles = 1;
	c->next = s->conns;
	if (s->conns)
		s->conns->prev = c;
	s->conns = c;
	s->stats.connections_open++;
	/* The handshake's own deadline; without one (0), the header timeout
	 * bounds it, so that no connection waits unbounded. */
	uint64_t hs_ms = cfg->tls_handshake_timeout_ms ? cfg->tls_handshake_timeout_ms : cfg->http_header_timeout_ms;
	if (net_stream_accept(s->loop, ls, tls ? s->tls : NULL, hs_ms, &http_conn_callbacks, c, &c->ns) < 0) {
		http_conn_close(c);
		return;
	}
	c->handles++;
	net_stream_peer_text(c->ns, c->peer, sizeof(c->peer)); /* "" if the peer is gone */
	s->stats.connections_accepted++;
	if (tls) {
		/* The handshake started in net_stream_accept: count it now, so
		 * that every way out (done, failed, closed) gives it back. */
		c->tls = 1;
		c->handshaking = 1;
		s->handshakes++;
		if (s->handshakes > cfg->tls_max_handshakes) {
			/* Handshakes are what costs CPU, and a flood of them what
			 * a client can make cheaply: beyond the cap, close at once,
			 * before a byte of it is worked on; nothing is answered
			 * (an answer would need the handshake). */
			s->stats.tls_handshakes_refused++;
			relay_log_limited(&s->tls_fail_log, RELAY_LOG_WARN,
			                  "tls from %s: %" PRIu32 " connection%s %s in a handshake (tls.max_handshakes): "
			                  "closed at once", c->peer, cfg->tls_max_handshakes,
			                  relay_s(cfg->tls_max_handshakes), relay_plural(cfg->tls_max_handshakes, "is", "are"));
			http_conn_close(c);
			return;
		}
	}
	if (s->stats.connections_open > cfg->http_max_connections) {
		/* Over the limit: say so and close; never evict anything. On
		 * the TLS listener the answer goes out once the handshake is
		 * done (the stream holds it), bounded by the handshake cap and
		 * timeout like any handshake. */
		s->stats.connections_refused++;
		c->uncounted = 1; /* no request was read: a connection's refusal, counted as one */
		http_respond_error(c, 503, "too many connections", "Retry-After: 1\r\n", 1);
		return;
	}
	if (net_stream_read_start(c->ns) < 0) {
		http_conn_close(c);
		return;
	}
	c->reading = 1;
	/* On the TLS listener the header timeout starts once the handshake is
	 * done (on_handshake): until then the handshake's own bounds it. */
	if (!tls)
		http_set_timer(c, T_HEADER);
}

/* Bind and listen on host:port into l (initialised here). Returns 0, or a
 * uv code with err saying which address ("as_written", as the
 * configuration has it). */
static int listen_on(struct http_server *s, uv_tcp_t *l, const char *host, uint16_t port, const char *as_written,
                     int *bound_port, char *err, size_t errlen)
{
	struct sockaddr_storage addr;
	int rc;
	if (strchr(host, ':'))
		rc = uv_ip6_addr(host, port, (struct sockaddr_in6 *)&addr);
	else
		rc = uv_ip4_addr(host, port, (struct sockaddr_in *)&addr);
	if (rc) {
		snprintf(err, errlen, "cannot use listen address '%s': %s", as_written, uv_strerror(rc));
		return rc;
	}
	uv_tcp_init(s->loop, l);
	l->data = s;
	s->listeners_open++;
	/* No SO_REUSEPORT: a second relayd (or anything else) on the port
	 * must make this fail, not share the port. libuv sets SO_REUSEADDR,
	 * which only allows rebinding over TIME_WAIT. */
	rc = uv_tcp_bind(l, (struct sockaddr *)&addr, 0);
	if (rc == 0)
		rc = uv_listen((uv_stream_t *)l, 511, on_connection);
	if (rc) {
		snprintf(err, errlen, "cannot listen on %s: %s", as_written, uv_strerror(rc));
		return rc;
	}
	struct sockaddr_storage bound;
	int blen = sizeof(bound);
	uv_tcp_getsockname(l, (struct sockaddr *)&bound, &blen);
	*bound_port = bound.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&bound)->sin6_port)
	                                          : ntohs(((struct sockaddr_in *)&bound)->sin_port);
	return 0;
}

/* Warn when ctx's certificate expires within 30 days, or has expired:
 * clients refuse an expired one, and certbot-style rotation that stopped
 * working is seen here first. */
static void warn_expiry(const struct net_tls_ctx *ctx, const char *cert_file)
{
	long long secs = 0;
	char when[64] = "";
	if (net_tls_ctx_expiry(ctx, &secs, when, sizeof(when)) < 0)
		return;
	if (secs < 0)
		relay_log(RELAY_LOG_WARN,
		          "tls: the certificate '%s' expired on %s: clients refuse it; replace it and send SIGHUP",
		          cert_file, when);
	else if (secs < 30LL * 86400)
		relay_log(RELAY_LOG_WARN,
		          "tls: the certificate '%s' expires on %s (in %lld day%s): replace it and send SIGHUP",
		          cert_file, when, secs / 86400, relay_s((uint64_t)(secs / 86400)));
}

int http_server_tls_ctx_new(const struct relay_config *cfg, struct net_tls_ctx **out, char *err, size_t errlen)
{
	struct net_tls_server_opts o = {cfg->tls_cert_file, cfg->tls_key_file, cfg->tls_client_ca_file};
	char why[900];
	if (net_tls_server_ctx_new(&o, out, why, sizeof(why)) < 0) {
		snprintf(err, errlen, "tls: %s", why);
		return -1;
	}
	return 0;
}

void http_server_set_tls(struct http_server *s, struct net_tls_ctx *ctx)
{
	if (!s->has_tls) {
		net_tls_ctx_unref(ctx);
		return;
	}
	warn_expiry(ctx, s->cfg->tls_cert_file);
	/* Open connections hold their own references: dropping ours frees
	 * the old context only once the last of them closes. */
	net_tls_ctx_unref(s->tls);
	s->tls = ctx;
	s->stats.tls_reloads++;
}

static void listener_closed(uv_handle_t *h)
{
	struct http_server *s = h->data;
	s->listeners_open--;
	if (!s->listeners_open && !s->conns)
		http_server_free(s);
}

static void close_listeners(struct http_server *s)
{
	if (s->has_plain && !uv_is_closing((uv_handle_t *)&s->listener))
		uv_close((uv_handle_t *)&s->listener, listener_closed);
	if (s->has_tls && !uv_is_closing((uv_handle_t *)&s->tls_listener))
		uv_close((uv_handle_t *)&s->tls_listener, listener_closed);
}

int http_server_start(uv_loop_t *loop, const struct relay_config *cfg, struct ingest *ing,
                      struct http_server **out, char *err, size_t errlen)
{
	int rc = 0;

	*out = NULL;
	struct http_server *s = xcalloc(1, sizeof(*s));
	s->loop = loop;
	s->cfg = cfg;
	s->ing = ing;
	http_counts_init(s);
	/* The certificate first: a file that does not load is the likeliest
	 * failure, and nothing is bound yet when it is refused. */
	if (cfg->listen_https && http_server_tls_ctx_new(cfg, &s->tls, err, errlen) < 0) {
		free(s);
		return UV_EINVAL;
	}
	s->pool = upstream_pool_new(loop);
	if (cfg->listen_http) {
		s->has_plain = 1;
		rc = listen_on(s, &s->listener, cfg->listen_http_host, cfg->listen_http_port, cfg->listen_http, &s->port,
		               err, errlen);
	}
	if (rc == 0 && cfg->listen_https) {
		s->has_tls = 1;
		rc = listen_on(s, &s->tls_listener, cfg->listen_https_host, cfg->listen_https_port, cfg->listen_https,
		               &s->tls_port, err, errlen);
	}
	if (rc) {
		/* The listeners' close callbacks free s when the caller runs
		 * the loop to finish the close (or it is left to the exit). */
		s->closing = 1;
		upstream_pool_close(s->pool);
		s->pool = NULL;
		if (!s->listeners_open) {
			http_server_free(s);
			return rc;
		}
		close_listeners(s);
		return rc;
	}
	if (s->tls)
		warn_expiry(s->tls, cfg->tls_cert_file);
	*out = s;
	return 0;
}

void http_server_set_query_targets(struct http_server *s, http_query_targets_fn fn, void *arg)
{
	s->targets_fn = fn;
	s->targets_arg = arg;
}

void http_server_set_health(struct http_server *s, http_health_fn fn, void *arg)
{
	s->health_fn = fn;
	s->health_arg = arg;
}

void http_server_set_metrics(struct http_server *s, http_metrics_fn fn, void *arg)
{
	s->metrics_fn = fn;
	s->metrics_arg = arg;
}

void http_server_set_backend_health(struct http_server *s, http_backend_health_fn fn, void *arg)
{
	s->backend_health_fn = fn;
	s->backend_health_arg = arg;
}

int http_server_port(const struct http_server *s)
{
	return s->port;
}

int http_server_tls_port(const struct http_server *s)
{
	return s->tls_port;
}

const struct http_server_stats *http_server_stats(const struct http_server *s)
{
	return &s->stats;
}

void http_server_close(struct http_server *s, void (*done)(void *arg), void *arg)
{
	s->closing = 1;
	s->done = done;
	s->done_arg = arg;
	if (s->probe) {
		upstream_cancel(s->probe);
		s->probe = NULL;
	}
	/* Its idle connections close now; those of queries still running
	 * close as the queries end (closing_conn cancels them). */
	upstream_pool_close(s->pool);
	s->pool = NULL;
	/* Connections waiting for a commit get their answer first (ingest
	 * finishes its commits before it closes); the others close now. */
	for (struct conn *c = s->conns; c; c = c->next) {
		if (c->waiting)
			c->close_after = 1;
		else
			http_conn_close(c);
	}
	close_listeners(s);
}

