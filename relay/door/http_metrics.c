/*
 * http_metrics: what /metrics says of the door, and the two routes the
 * program answers for monitoring. Counting is done where the door already
 * decides: an answer is counted by endpoint and status where its head is
 * written (http_respond_as, and a proxied query's on_head), a write's
 * refusal with it; nothing here takes a lock or allocates per request.
 * The families are written by http_server_metrics(), each once, with the
 * names docs/monitoring.md lists.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relay/door/http_internal.h"
#include "relay/door/udp.h"
#include "relay/net/tls.h"

/* The statuses relayd sends, and those InfluxDB commonly does (passed
 * through for queries): counted by number; any other as "other". */
static const int codes[HTTP_NCODES] = {
	200, 204, 206, 301, 302, 304, 400, 401, 403, 404, 405, 408,
	411, 413, 415, 417, 422, 429, 431, 500, 501, 502, 503, 504,
};

static const char *const endpoint_names[EP_COUNT] = {
	"write", "v2_write", "query", "v2_query", "ping", "health", "metrics", "other",
};

static const char *const refusal_names[REFUSAL_COUNT] = {
	"bad_request", "unauthorized", "too_large", "timeout", "queue_full", "overloaded", "storage_error",
	"shutting_down",
};

#define BACKENDS_PREFIX "/health/backends/"
#define TEXT_PLAIN "text/plain; charset=utf-8"

void http_counts_init(struct http_server *s)
{
	memset(&s->counts, 0, sizeof(s->counts));
	relay_histogram_init(&s->counts.query_seconds, relay_buckets_fast_s, relay_buckets_fast_n);
}

enum http_endpoint http_endpoint_of(const char *url, size_t len)
{
	static const struct {
		const char *path;
		enum http_endpoint ep;
	} paths[] = {
		{ "/write", EP_WRITE },  { "/api/v2/write", EP_V2_WRITE }, { "/query", EP_QUERY },
		{ "/api/v2/query", EP_V2_QUERY }, { "/ping", EP_PING }, { "/health", EP_HEALTH },
		{ "/metrics", EP_METRICS },
	};
	const char *q = url ? memchr(url, '?', len) : NULL;
	size_t plen = q ? (size_t)(q - url) : len;
	for (size_t i = 0; i < RELAY_ARRAY_SIZE(paths); i++)
		if (plen == strlen(paths[i].path) && memcmp(url, paths[i].path, plen) == 0)
			return paths[i].ep;
	if (plen >= sizeof(BACKENDS_PREFIX) - 1 && memcmp(url, BACKENDS_PREFIX, sizeof(BACKENDS_PREFIX) - 1) == 0)
		return EP_HEALTH;
	return EP_OTHER;
}

static size_t code_index(int status)
{
	for (size_t i = 0; i < HTTP_NCODES; i++)
		if (codes[i] == status)
			return i;
	return HTTP_NCODES;
}

/* Why a write answered status was refused, when the code that refused it
 * left no more precise reason. */
static enum http_refusal refusal_of(const struct http_server *s, int status)
{
	switch (status) {
	case 401:
	case 403: return REFUSAL_UNAUTHORIZED;
	case 408: return REFUSAL_TIMEOUT;
	case 413: return REFUSAL_TOO_LARGE;
	case 503: return s->closing ? REFUSAL_SHUTTING_DOWN : REFUSAL_OVERLOADED; /* the buffer budget */
	}
	/* 405, 411, 415, 417, 431, 501: the request as sent cannot be taken;
	 * a 5xx other than 503 is the queue's. */
	return status >= 500 ? REFUSAL_STORAGE_ERROR : REFUSAL_BAD_REQUEST;
}

void http_count_answer(struct conn *c, int status)
{
	struct http_server *s = c->srv;
	if (c->uncounted || !s || status < 200)
		return;
	enum http_endpoint ep = http_endpoint_of(c->req.url.data, c->req.url.len);
	s->counts.answers[ep][code_index(status)]++;
	if ((ep == EP_WRITE || ep == EP_V2_WRITE) && status >= 400) {
		enum http_refusal why = c->req.refusal ? (enum http_refusal)(c->req.refusal - 1) : refusal_of(s, status);
		s->counts.refused[why]++;
		s->counts.refused_points[why] += c->req.points;
	}
}

void http_count_proxied(struct http_server *s, const char *name, const struct http_query_target *t, size_t n)
{
	struct http_counts *k = &s->counts;
	for (size_t i = 0; i < k->nproxied; i++) {
		if (strcmp(k->proxied[i].name, name) == 0) {
			k->proxied[i].n++;
			return;
		}
	}
	if (k->nproxied == RELAY_ARRAY_SIZE(k->proxied)) {
		/* Full: a reload renamed backends. Keep only the names a query
		 * can go to now; name is one of them and not kept, so at least
		 * one entry goes. */
		size_t j = 0;
		for (size_t i = 0; i < k->nproxied; i++) {
			int live = 0;
			for (size_t m = 0; m < n && !live; m++)
				live = strcmp(t[m].name, k->proxied[i].name) == 0;
			if (live)
				k->proxied[j++] = k->proxied[i];
		}
		k->nproxied = j;
	}
	if (k->nproxied < RELAY_ARRAY_SIZE(k->proxied)) {
		snprintf(k->proxied[k->nproxied].name, sizeof(k->proxied[0].name), "%s", name);
		k->proxied[k->nproxied++].n = 1;
	}
}

void http_count_released(struct conn *c)
{
	struct request *r = &c->req;
	if (!r->query_start_ns || !c->srv)
		return;
	uint64_t now = now_mono_ns();
	relay_histogram_observe(&c->srv->counts.query_seconds,
	                        now > r->query_start_ns ? (double)(now - r->query_start_ns) / 1e9 : 0);
	r->query_start_ns = 0;
}

/*---- the routes ----*/

/* One line of text as /health/backends/NAME's answer, "\n" added. */
static void text_answer(struct conn *c, int status, const char *extra, const char *text, size_t len, int keep,
                        int head)
{
	struct rbuf b = RBUF_INIT;
	rbuf_append(&b, text, len);
	if (!b.len || b.data[b.len - 1] != '\n')
		rbuf_appendc(&b, '\n');
	http_respond_as(c, status, TEXT_PLAIN, extra, b.data, b.len, !keep, head);
	rbuf_release(&b);
}

/* p[0..n) percent-decoded ('+' is itself: this is a path), or NULL for a
 * malformed escape or a control character (the caller frees). */
static char *path_decode(const char *p, size_t n)
{
	char *out = xmalloc(n + 1);
	size_t j = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)p[i];
		if (ch == '%') {
			int hi = i + 2 < n ? hex_value(p[i + 1]) : -1;
			int lo = i + 2 < n ? hex_value(p[i + 2]) : -1;
			if (hi < 0 || lo < 0) {
				free(out);
				return NULL;
			}
			ch = (unsigned char)(hi * 16 + lo);
			i += 2;
		}
		if (ch < 0x20 || ch == 0x7f) {
			free(out);
			return NULL;
		}
		out[j++] = (char)ch;
	}
	out[j] = '\0';
	return out;
}

static void backend_health(struct conn *c, const char *url, size_t plen, int keep, int head)
{
	struct http_server *s = c->srv;
	size_t pre = sizeof(BACKENDS_PREFIX) - 1;
	char msg[200];
	char *name = path_decode(url + pre, plen - pre);
	if (!name) {
		snprintf(msg, sizeof(msg), "malformed backend name: a bad percent-encoding or a control character");
		text_answer(c, 400, NULL, msg, strlen(msg), keep, head);
		return;
	}
	if (!*name) {
		free(name);
		snprintf(msg, sizeof(msg), "no backend named: use /health/backends/NAME");
		text_answer(c, 404, NULL, msg, strlen(msg), keep, head);
		return;
	}
	int64_t max_lag = -1;
	int bad = 0;
	char *v = url[plen] == '?' ? http_query_param(url + plen + 1, "max_lag", &bad) : NULL;
	uint64_t ms = 0;
	if (bad || (v && parse_duration_ms(v, &ms) < 0)) {
		snprintf(msg, sizeof(msg), "invalid max_lag '%.40s': want a duration such as 500ms, 2s or 1m",
		         v && !http_has_control(v) ? v : "?");
		free(v);
		free(name);
		text_answer(c, 400, NULL, msg, strlen(msg), keep, head);
		return;
	}
	if (v)
		max_lag = ms > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)ms;
	free(v);
	struct rbuf out = RBUF_INIT;
	int status = s->backend_health_fn(s, name, max_lag, &out, s->backend_health_arg);
	free(name);
	text_answer(c, status, "Cache-Control: no-store\r\n", out.data ? out.data : "", out.len, keep, head);
	rbuf_release(&out);
}

int http_handle_monitoring(struct conn *c, const char *url, size_t plen, int method, int keep)
{
	struct http_server *s = c->srv;
	int metrics = plen == 8 && memcmp(url, "/metrics", 8) == 0;
	int backend = plen >= sizeof(BACKENDS_PREFIX) - 1 &&
	              memcmp(url, BACKENDS_PREFIX, sizeof(BACKENDS_PREFIX) - 1) == 0;
	if ((!metrics || !s->metrics_fn) && (!backend || !s->backend_health_fn))
		return 0; /* not these, or no handler: the 404 */
	if (method != HTTP_GET && method != HTTP_HEAD) {
		http_respond_error(c, 405,
		                   metrics ? "method not allowed: /metrics takes GET or HEAD" :
		                             "method not allowed: /health/backends/NAME takes GET or HEAD",
		                   "Allow: GET, HEAD\r\n", !keep);
		return 1;
	}
	int head = method == HTTP_HEAD;
	if (backend) {
		backend_health(c, url, plen, keep, head);
		return 1;
	}
	struct rbuf out = RBUF_INIT;
	int status = s->metrics_fn(s, &out, s->metrics_arg);
	http_respond_as(c, status, PROM_CONTENT_TYPE, "Cache-Control: no-store\r\n", out.data, out.len, !keep, head);
	rbuf_release(&out);
	return 1;
}

/*---- the families ----*/

static void counter(struct rbuf *out, const char *name, const char *help, uint64_t v)
{
	prom_family(out, name, "counter", help);
	prom_u64(out, name, NULL, v);
}

static void gauge(struct rbuf *out, const char *name, const char *help, uint64_t v)
{
	prom_family(out, name, "gauge", help);
	prom_u64(out, name, NULL, v);
}

static void by_reason(struct rbuf *out, const char *name, const char *help, const uint64_t *v)
{
	char labels[64];
	prom_family(out, name, "counter", help);
	for (size_t i = 0; i < REFUSAL_COUNT; i++)
		prom_u64(out, name, prom_labels(labels, sizeof(labels), "reason", refusal_names[i], NULL), v[i]);
}

static void by_source(struct rbuf *out, const char *name, const char *help, uint64_t http, uint64_t udp)
{
	char labels[64];
	prom_family(out, name, "counter", help);
	prom_u64(out, name, prom_labels(labels, sizeof(labels), "source", "http", NULL), http);
	prom_u64(out, name, prom_labels(labels, sizeof(labels), "source", "udp", NULL), udp);
}

static void query_families(const struct http_server *s, struct rbuf *out)
{
	const struct http_server_stats *st = &s->stats;
	const struct http_counts *k = &s->counts;
	const struct relay_config *cfg = s->cfg;
	char labels[160];

	counter(out, "relayd_query_requests_total", "/query and /api/v2/query requests answered.", st->queries);
	prom_family(out, "relayd_query_proxied_total", "counter", "Queries passed through to the backend.");
	/* Every query backend, zeros included; a backend a reload removed
	 * is no longer said. */
	for (size_t i = 0; i < cfg->nquery; i++) {
		const char *name = cfg->backends[cfg->query_order[i]].name;
		uint64_t n = 0;
		for (size_t j = 0; j < k->nproxied; j++)
			if (strcmp(k->proxied[j].name, name) == 0)
				n = k->proxied[j].n;
		prom_u64(out, "relayd_query_proxied_total", prom_labels(labels, sizeof(labels), "backend", name, NULL), n);
	}
	counter(out, "relayd_query_behind_total", "Queries answered by a backend that was not caught up.",
	        k->query_behind);
	counter(out, "relayd_query_statements_queued_total", "Statements queued for every backend (CREATE DATABASE...).",
	        st->queries_queued);
	counter(out, "relayd_query_errors_total", "Queries answered 4xx or 5xx, or cut.", st->query_errors);
	counter(out, "relayd_query_response_bytes_total", "Answer bytes passed to clients.", st->query_bytes);
	prom_family(out, "relayd_query_duration_seconds", "histogram", "From the request to the end of its answer.");
	prom_histogram(out, "relayd_query_duration_seconds", NULL, &k->query_seconds);
}

/* The TLS listener's families; their counters stay 0 without one, and
 * the certificate's expiry has no sample then. */
static void tls_families(const struct http_server *s, struct rbuf *out)
{
	const struct http_server_stats *st = &s->stats;
	char labels[64];
	static const char *const results[] = { "ok", "failed", "timeout", "refused" };
	const uint64_t counts[] = { st->tls_handshakes, st->tls_handshake_failures, st->tls_handshake_timeouts,
		                    st->tls_handshakes_refused };
	prom_family(out, "relayd_tls_handshakes_total", "counter",
	            "TLS handshakes on listen.https, by result: ok, failed (version, cipher, client certificate, "
	            "a peer that left), timeout (tls.handshake_timeout), refused (tls.max_handshakes in progress).");
	for (size_t i = 0; i < RELAY_ARRAY_SIZE(results); i++)
		prom_u64(out, "relayd_tls_handshakes_total", prom_labels(labels, sizeof(labels), "result", results[i], NULL),
		         counts[i]);
	counter(out, "relayd_tls_plain_http_total", "Plain HTTP requests sent to the TLS port (answered 400).",
	        st->tls_plain_http);
	counter(out, "relayd_tls_certificate_reloads_total", "Listener certificates swapped in by a reload.",
	        st->tls_reloads);
	prom_family(out, "relayd_tls_certificate_expiry_timestamp_seconds", "gauge",
	            "When the TLS listener's certificate stops being valid, since the Unix epoch.");
	long long secs;
	if (s->tls && net_tls_ctx_expiry(s->tls, &secs, NULL, 0) == 0)
		prom_i64(out, "relayd_tls_certificate_expiry_timestamp_seconds", NULL,
		         (int64_t)(now_realtime_ns() / 1000000000LL) + (int64_t)secs);
}

void http_server_metrics(const struct http_server *s, const struct udp_server *udp, struct rbuf *out)
{
	const struct http_server_stats *st = &s->stats;
	const struct http_counts *k = &s->counts;
	char labels[96], code[16];

	prom_family(out, "relayd_http_requests_total", "counter", "Requests answered, by endpoint and HTTP status.");
	for (size_t e = 0; e < EP_COUNT; e++) {
		for (size_t i = 0; i <= HTTP_NCODES; i++) {
			if (!k->answers[e][i])
				continue;
			if (i < HTTP_NCODES)
				snprintf(code, sizeof(code), "%d", codes[i]);
			else
				snprintf(code, sizeof(code), "other");
			prom_u64(out, "relayd_http_requests_total",
			         prom_labels(labels, sizeof(labels), "endpoint", endpoint_names[e], "code", code, NULL),
			         k->answers[e][i]);
		}
	}
	gauge(out, "relayd_http_connections_open", "Client connections open now.", st->connections_open);
	counter(out, "relayd_http_connections_accepted_total", "Client connections accepted.",
	        st->connections_accepted);
	counter(out, "relayd_http_connections_refused_total",
	        "Client connections closed at once (over http.max_connections).", st->connections_refused);
	gauge(out, "relayd_http_buffered_bytes", "Request bodies held in memory now.", s->buffered);
	gauge(out, "relayd_http_buffered_limit_bytes", "Their cap (http.max_buffered_size).",
	      s->cfg->http_max_buffered_bytes);
	by_reason(out, "relayd_write_requests_refused_total", "Write requests not accepted, by why.", k->refused);
	by_reason(out, "relayd_points_refused_total", "Points in refused write requests, where they were counted.",
	          k->refused_points);

	uint64_t udp_points = 0, udp_bytes = 0;
	for (size_t i = 0; udp && i < udp_count(udp); i++) {
		udp_points += udp_stats(udp, i)->points_accepted;
		udp_bytes += udp_stats(udp, i)->bytes_accepted;
	}
	by_source(out, "relayd_points_accepted_total", "Points committed.", st->points_accepted, udp_points);
	by_source(out, "relayd_bytes_accepted_total", "Line-protocol bytes of the points committed.",
	          k->bytes_accepted, udp_bytes);
	if (s->ing)
		ingest_metrics(s->ing, out);
	udp_metrics(udp, out);
	query_families(s, out);
	tls_families(s, out);
}
