/*
 * udp: line protocol over UDP. Each datagram is validated and stamped at
 * once; good ones are copied into the listener's pending group, which goes
 * to ingest as one batch when flush_interval has passed since its first
 * datagram or when it reaches batch_max_size. Must never block the loop,
 * never let memory grow with a slow disk, and never lose a datagram from
 * the counters: every datagram received is counted as committed, bad or
 * dropped (UDP cannot tell the sender, so the counters and the log must).
 *
 * Memory: at most two groups per listener, one committing and one filling.
 * While a commit is slow the filling group may grow to batch_max_size and
 * then waits; datagrams that find it full are dropped and counted. At
 * shutdown the last group is handed to ingest even while another commits,
 * since nothing new can arrive.
 */
#include "relay/door/udp.h"

#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "relay/base/lineproto.h"
#include "relay/base/log.h"
#include "relay/base/metrics.h"
#include "relay/base/util.h"

/* Larger than any UDP payload (65507 bytes over IPv4): a datagram that
 * does not fit is truncated, and dropped as bad. */
#define DGRAM_BUF_SIZE 65536
/* At most one log line per listener and kind of trouble this often. */
#define LOG_INTERVAL_NS (5ULL * 1000000000ULL)
/* Upper bound of datagrams read at shutdown: the kernel buffer holds far
 * fewer; this only guards against a sender faster than we read. */
#define DRAIN_MAX 1000000

struct udp_listener;

/* Datagrams grouped into one batch. The request and the body belong to
 * the group until ingest calls group_done. */
struct udp_group {
	struct ingest_request req;
	struct udp_listener *l;
	struct rbuf body;   /* validated, stamped lines, each ending in '\n' */
	uint32_t lines;
	uint64_t datagrams;
	int64_t first_ns;   /* arrival of the first datagram: the batch's acceptance time */
};

struct udp_listener {
	uv_udp_t udp;
	uv_timer_t timer;   /* flush_interval, started by a group's first datagram */
	struct udp_server *srv;
	const struct relay_udp_config *cfg;
	struct udp_group *cur;    /* filling; NULL when empty */
	struct udp_group *spare;  /* a free group kept for reuse */
	int inflight;             /* groups with ingest (1 at most until closing) */
	int handles;              /* open libuv handles */
	int port;
	int finished;             /* closed and nothing in flight: counted in srv->live */
	struct rbuf scratch;      /* one datagram's validated form */
	struct udp_stats stats;
	struct relay_ratelimit bad_log, drop_log, refuse_log, err_log;
	char inbuf[DGRAM_BUF_SIZE];
};

struct udp_server {
	uv_loop_t *loop;
	const struct relay_config *cfg;
	struct ingest *ing;
	struct udp_listener **ls;
	size_t n;
	size_t live;       /* listeners not yet finished */
	int closing;
	void (*done)(void *);
	void *done_arg;
};

static void flush(struct udp_listener *l);

/*---- lifetime ----*/

static void group_free(struct udp_group *g)
{
	if (!g)
		return;
	rbuf_release(&g->body);
	free(g);
}

static void server_free(struct udp_server *s)
{
	void (*done)(void *) = s->done;
	void *arg = s->done_arg;
	for (size_t i = 0; i < s->n; i++) {
		struct udp_listener *l = s->ls[i];
		group_free(l->cur);
		group_free(l->spare);
		rbuf_release(&l->scratch);
		free(l);
	}
	free(s->ls);
	free(s);
	if (done)
		done(arg);
}

/* A listener is finished once its handles are closed and ingest holds no
 * group of it; the server goes with its last listener. */
static void maybe_finish(struct udp_listener *l)
{
	struct udp_server *s = l->srv;
	if (l->finished || !s->closing || l->handles || l->inflight)
		return;
	l->finished = 1;
	const struct udp_stats *st = &l->stats;
	if (st->datagrams)
		relay_log(RELAY_LOG_INFO,
			  "udp %s: %" PRIu64 " datagram%s received (%" PRIu64 " bad, %" PRIu64 " dropped), %" PRIu64
			  " point%s committed, %" PRIu64 " dropped",
			  l->cfg->address, st->datagrams, relay_s(st->datagrams), st->datagrams_bad, st->datagrams_dropped,
			  st->points_accepted, relay_s(st->points_accepted), st->points_dropped);
	if (--s->live == 0)
		server_free(s);
}

static void handle_closed(uv_handle_t *h)
{
	struct udp_listener *l = h->data;
	l->handles--;
	maybe_finish(l);
}

/*---- logging ----*/

static void peer_name(const struct sockaddr *addr, char *out, size_t n)
{
	char ip[INET6_ADDRSTRLEN] = "?";
	int port = 0;
	if (addr && addr->sa_family == AF_INET) {
		uv_ip4_name((const struct sockaddr_in *)addr, ip, sizeof(ip));
		port = ntohs(((const struct sockaddr_in *)addr)->sin_port);
	} else if (addr && addr->sa_family == AF_INET6) {
		uv_ip6_name((const struct sockaddr_in6 *)addr, ip, sizeof(ip));
		port = ntohs(((const struct sockaddr_in6 *)addr)->sin6_port);
	}
	snprintf(out, n, addr && addr->sa_family == AF_INET6 ? "[%s]:%d" : "%s:%d", ip, port);
}

/* " (K more since the last such line)" or "". */
/*---- commits ----*/

static struct udp_group *group_get(struct udp_listener *l)
{
	struct udp_group *g = l->spare;
	if (g)
		l->spare = NULL;
	else
		g = xcalloc(1, sizeof(*g));
	g->l = l;
	return g;
}

static void group_put(struct udp_listener *l, struct udp_group *g)
{
	rbuf_reset(&g->body);
	g->lines = 0;
	g->datagrams = 0;
	if (!l->spare && !l->srv->closing)
		l->spare = g;
	else
		group_free(g);
}

static void log_refused(struct udp_listener *l, struct udp_group *g, int rc)
{
	struct ingest *ing = l->srv->ing;
	char why[200];
	int refused_by = g->req.batch.refused_by;
	const char *backend = refused_by >= 0 && refused_by < WAL_MAX_BACKENDS && ing->names[refused_by]
				      ? ing->names[refused_by]
				      : "?";

	const char *max_size = refused_by >= 0 && refused_by < WAL_MAX_BACKENDS ? ing->max_size[refused_by] : NULL;
	const char *max_age = refused_by >= 0 && refused_by < WAL_MAX_BACKENDS ? ing->max_age[refused_by] : NULL;

	if (rc == 0 && g->req.batch.result == WAL_ELIMIT)
		snprintf(why, sizeof(why), "the queue for backend '%s' is full (max_size %s)", backend,
		         max_size ? max_size : "?");
	else if (rc == 0 && g->req.batch.result == WAL_EAGE)
		snprintf(why, sizeof(why), "the queue for backend '%s' holds data older than its max_age%s%s%s", backend,
		         max_age ? " (" : "", max_age ? max_age : "", max_age ? ")" : "");
	else if (rc == WAL_EFULL)
		snprintf(why, sizeof(why), "queue storage is full (disk or LMDB map)");
	else
		snprintf(why, sizeof(why), "cannot commit to the queue: %s", wal_strerror(rc ? rc : g->req.batch.result));
	relay_log_limited(&l->refuse_log, RELAY_LOG_WARN, "udp %s: %" PRIu64 " datagram%s (%" PRIu32 " point%s) dropped: %s",
			  l->cfg->address, g->datagrams, relay_s(g->datagrams), g->lines, relay_s(g->lines), why);
}

/* Called by ingest on the loop thread once the commit holding g returned. */
static void group_done(struct ingest_request *req, int rc)
{
	struct udp_group *g = relay_container_of(req, struct udp_group, req);
	struct udp_listener *l = g->l;

	l->inflight--;
	if (rc == 0 && req->batch.result == 0) {
		l->stats.points_accepted += g->lines;
		l->stats.bytes_accepted += g->body.len;
		l->stats.datagrams_committed += g->datagrams;
		l->stats.batches++;
	} else {
		/* No one to answer 503: the loss is counted and logged instead. */
		l->stats.points_dropped += g->lines;
		l->stats.datagrams_dropped += g->datagrams;
		log_refused(l, g, rc);
	}
	group_put(l, g);
	if (l->srv->closing) {
		maybe_finish(l);
		return;
	}
	/* The group filled meanwhile waits for no one now if its interval is
	 * over (the timer fired while we committed) or it is full. */
	if (l->cur && (!uv_is_active((uv_handle_t *)&l->timer) || l->cur->body.len >= l->cfg->batch_max_bytes))
		flush(l);
}

/*
 * Hand the pending group to ingest as one batch. One group commits at a
 * time per listener, which bounds memory to two groups; at shutdown the
 * last one goes at once.
 */
static void flush(struct udp_listener *l)
{
	struct udp_group *g = l->cur;
	if (!g)
		return;
	if (l->inflight && !l->srv->closing)
		return; /* group_done flushes it */
	uv_timer_stop(&l->timer);
	l->cur = NULL;
	struct wal_batch *b = &g->req.batch;
	memset(b, 0, sizeof(*b));
	b->accept_ns = g->first_ns;
	b->lines = g->lines;
	b->precision = (uint8_t)l->cfg->precision;
	b->db = l->cfg->db;
	b->rp = l->cfg->rp;
	b->body = g->body.data;
	b->body_len = g->body.len;
	b->refused_by = -1;
	g->req.done = group_done;
	g->req.data = l;
	l->inflight++;
	ingest_submit(l->srv->ing, &g->req);
}

static void timer_cb(uv_timer_t *t)
{
	flush(t->data);
}

/*---- datagrams ----*/

static void drop_bad(struct udp_listener *l, const struct sockaddr *addr, const char *peer, size_t len,
                     const char *what)
{
	char who[80];

	l->stats.datagrams_bad++;
	if (!peer) {
		peer_name(addr, who, sizeof(who));
		peer = who;
	}
	relay_log_limited(&l->bad_log, RELAY_LOG_WARN, "udp %s: bad datagram of %zu byte%s from %s dropped: %s",
			  l->cfg->address, len, relay_s(len), peer, what);
}

static void receive(struct udp_listener *l, const char *data, size_t len, int truncated,
                    const struct sockaddr *addr, const char *peer)
{
	const struct relay_udp_config *uc = l->cfg;
	struct lp_result res;
	struct lp_error lerr;
	char what[300];

	l->stats.datagrams++;
	l->stats.bytes += len;
	if (truncated) {
		snprintf(what, sizeof(what), "larger than %d bytes (truncated)", DGRAM_BUF_SIZE);
		drop_bad(l, addr, peer, len, what);
		return;
	}
	/* Stamp with the arrival time, as the HTTP door does with the
	 * acceptance time: a late delivery must not move the points. */
	int64_t now = now_realtime_ns();
	rbuf_reset(&l->scratch);
	/* What a backend would refuse is dropped here, counted and logged,
	 * rather than dead-lettered later (as the HTTP door does). */
	struct lp_limits lim = {
		.max_line = l->srv->cfg->http_max_line_bytes,
		.precision = (enum lp_precision)uc->precision,
		.flags = config_lp_flags(l->srv->cfg),
	};
	if (lineproto_validate_limits(data, len, lp_ns_to_precision(now, (enum lp_precision)uc->precision), &lim,
	                              &l->scratch, &res, &lerr) < 0) {
		snprintf(what, sizeof(what), "line %zu: %s", lerr.line, lerr.msg);
		drop_bad(l, addr, peer, len, what);
		return;
	}
	if (res.lines == 0)
		return; /* empty, or only comments */

	struct udp_group *g = l->cur;
	if (g && g->body.len + l->scratch.len > uc->batch_max_bytes) {
		/* The group is full: send it; if the previous one still commits,
		 * both buffers are taken and this datagram cannot be kept. */
		flush(l);
		g = l->cur;
		if (g) {
			l->stats.datagrams_dropped++;
			l->stats.points_dropped += res.lines;
			relay_log_limited(&l->drop_log, RELAY_LOG_WARN,
					  "udp %s: datagram of %" PRIu32 " point%s dropped: the next group is full (%zu byte%s) "
					  "while the previous one still commits",
					  uc->address, res.lines, relay_s(res.lines), g->body.len, relay_s(g->body.len));
			return;
		}
	}
	if (!g) {
		g = l->cur = group_get(l);
		g->first_ns = now;
		uv_timer_start(&l->timer, timer_cb, uc->flush_ms, 0);
	}
	rbuf_append(&g->body, l->scratch.data, l->scratch.len);
	g->lines += res.lines;
	g->datagrams++;
	if (g->body.len >= uc->batch_max_bytes)
		flush(l);
}

void udp_receive(struct udp_server *s, size_t i, const char *data, size_t len, const char *peer)
{
	relay_assert(i < s->n);
	receive(s->ls[i], data, len, 0, NULL, peer ? peer : "?");
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct udp_listener *l = h->data;
	(void)suggested;
	/* One datagram at a time: recv_cb is done with it before the next
	 * read, so a single buffer per listener suffices. */
	buf->base = l->inbuf;
	buf->len = sizeof(l->inbuf);
}

static void recv_cb(uv_udp_t *h, ssize_t nread, const uv_buf_t *buf, const struct sockaddr *addr, unsigned flags)
{
	struct udp_listener *l = h->data;
	(void)buf;
	if (nread < 0) {
		l->stats.recv_errors++;
		relay_log_limited(&l->err_log, RELAY_LOG_WARN, "udp %s: cannot receive: %s", l->cfg->address,
				  uv_strerror((int)nread));
		return;
	}
	if (!addr)
		return; /* nothing more to read now (nread is 0) */
	receive(l, l->inbuf, (size_t)nread, (flags & UV_UDP_PARTIAL) != 0, addr, NULL);
}

/*
 * At shutdown, after reading stopped: take what the kernel already holds
 * for the socket. Those datagrams arrived before the stop; without this,
 * a datagram still in the socket buffer when the signal came would be
 * lost although it had reached the host.
 */
static void drain(struct udp_listener *l)
{
	uv_os_fd_t fd;
	if (uv_fileno((uv_handle_t *)&l->udp, &fd) < 0)
		return;
	for (int i = 0; i < DRAIN_MAX; i++) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		/* MSG_TRUNC: the real length even when it did not fit. */
		ssize_t n = recvfrom(fd, l->inbuf, sizeof(l->inbuf), MSG_DONTWAIT | MSG_TRUNC, (struct sockaddr *)&ss, &sl);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			break; /* EAGAIN: empty */
		}
		int truncated = (size_t)n > sizeof(l->inbuf);
		receive(l, l->inbuf, truncated ? sizeof(l->inbuf) : (size_t)n, truncated, (struct sockaddr *)&ss, NULL);
	}
}

/*---- start and stop ----*/

/* SO_RCVBUF: a burst must fit in the kernel's buffer while the loop is
 * busy. The kernel caps the request at net.core.rmem_max (and Linux
 * reports twice what it grants), so say what was actually granted. */
static void set_receive_buffer(struct udp_listener *l)
{
	int v = 0;
	if (l->cfg->read_buffer) {
		v = l->cfg->read_buffer > INT32_MAX ? INT32_MAX : (int)l->cfg->read_buffer;
		int rc = uv_recv_buffer_size((uv_handle_t *)&l->udp, &v);
		if (rc < 0)
			relay_log(RELAY_LOG_WARN, "udp %s: cannot set read_buffer to %" PRIu64 " bytes: %s",
				  l->cfg->address, l->cfg->read_buffer, uv_strerror(rc));
		v = 0;
	}
	if (uv_recv_buffer_size((uv_handle_t *)&l->udp, &v) < 0)
		return;
	l->stats.receive_buffer = (uint64_t)v;
	if (!l->cfg->read_buffer)
		return;
	if ((uint64_t)v < l->cfg->read_buffer)
		relay_log(RELAY_LOG_WARN,
			  "udp %s: read_buffer %" PRIu64 " bytes asked, the kernel granted %d "
			  "(raise net.core.rmem_max for more)",
			  l->cfg->address, l->cfg->read_buffer, v);
	else if ((uint64_t)v != l->cfg->read_buffer)
		relay_log(RELAY_LOG_INFO, "udp %s: read_buffer %" PRIu64 " bytes asked, the kernel reports %d",
			  l->cfg->address, l->cfg->read_buffer, v);
}

static int listener_start(struct udp_listener *l, char *err, size_t errlen)
{
	const struct relay_udp_config *uc = l->cfg;
	struct sockaddr_storage addr;
	int rc;

	if (strchr(uc->host, ':'))
		rc = uv_ip6_addr(uc->host, uc->port, (struct sockaddr_in6 *)&addr);
	else
		rc = uv_ip4_addr(uc->host, uc->port, (struct sockaddr_in *)&addr);
	if (rc) {
		snprintf(err, errlen, "cannot use udp listen address '%s': %s", uc->address, uv_strerror(rc));
		return rc;
	}
	/* No UV_UDP_REUSEADDR: a port someone else holds must make this
	 * fail, not be shared with them. */
	rc = uv_udp_bind(&l->udp, (struct sockaddr *)&addr, 0);
	if (rc) {
		snprintf(err, errlen, "cannot listen on udp %s: %s", uc->address, uv_strerror(rc));
		return rc;
	}
	struct sockaddr_storage bound;
	int blen = sizeof(bound);
	if (uv_udp_getsockname(&l->udp, (struct sockaddr *)&bound, &blen) == 0)
		l->port = bound.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&bound)->sin6_port)
						      : ntohs(((struct sockaddr_in *)&bound)->sin_port);
	set_receive_buffer(l);
	rc = uv_udp_recv_start(&l->udp, alloc_cb, recv_cb);
	if (rc) {
		snprintf(err, errlen, "cannot receive on udp %s: %s", uc->address, uv_strerror(rc));
		return rc;
	}
	return 0;
}

int udp_start(uv_loop_t *loop, const struct relay_config *cfg, struct ingest *ing, struct udp_server **out,
              char *err, size_t errlen)
{
	struct udp_server *s = xcalloc(1, sizeof(*s));
	int rc = 0;

	*out = NULL;
	s->loop = loop;
	s->cfg = cfg;
	s->ing = ing;
	s->n = cfg->nudp;
	s->ls = xcalloc(s->n ? s->n : 1, sizeof(*s->ls));
	for (size_t i = 0; i < s->n; i++) {
		struct udp_listener *l = xcalloc(1, sizeof(*l));
		s->ls[i] = l;
		l->srv = s;
		l->cfg = &cfg->udp[i];
		l->bad_log.interval_ns = l->drop_log.interval_ns = LOG_INTERVAL_NS;
		l->refuse_log.interval_ns = l->err_log.interval_ns = LOG_INTERVAL_NS;
		uv_udp_init(loop, &l->udp);
		uv_timer_init(loop, &l->timer);
		l->udp.data = l->timer.data = l;
		l->handles = 2;
		s->live++;
	}
	for (size_t i = 0; i < s->n && rc == 0; i++)
		rc = listener_start(s->ls[i], err, errlen);
	if (rc) {
		/* Nothing was received yet: closing frees everything as the
		 * loop runs. */
		udp_close(s, NULL, NULL);
		return rc;
	}
	*out = s;
	return 0;
}

size_t udp_count(const struct udp_server *s)
{
	return s->n;
}

const struct udp_stats *udp_stats(const struct udp_server *s, size_t i)
{
	relay_assert(i < s->n);
	return &s->ls[i]->stats;
}

int udp_port(const struct udp_server *s, size_t i)
{
	relay_assert(i < s->n);
	return s->ls[i]->port;
}

/* One family: its HELP and TYPE, then the field at offset off of each
 * listener's stats. */
static void family(const struct udp_server *s, struct rbuf *out, const char *name, const char *type, const char *help,
                   size_t off)
{
	prom_family(out, name, type, help);
	for (size_t i = 0; s && i < s->n; i++) {
		const struct udp_listener *l = s->ls[i];
		char labels[160];
		uint64_t v;
		memcpy(&v, (const char *)&l->stats + off, sizeof(v));
		prom_u64(out, name, prom_labels(labels, sizeof(labels), "listener", l->cfg->address, NULL), v);
	}
}

void udp_metrics(const struct udp_server *s, struct rbuf *out)
{
#define F(name, type, help, field) family(s, out, name, type, help, offsetof(struct udp_stats, field))
	F("relayd_udp_datagrams_total", "counter", "Datagrams received.", datagrams);
	F("relayd_udp_datagrams_bad_total", "counter", "Datagrams with no valid line, dropped whole.", datagrams_bad);
	F("relayd_udp_datagrams_dropped_total", "counter", "Valid datagrams dropped (queue full or commit failed).",
	  datagrams_dropped);
	F("relayd_udp_points_accepted_total", "counter", "Points committed.", points_accepted);
	F("relayd_udp_points_dropped_total", "counter", "Valid points dropped.", points_dropped);
	F("relayd_udp_received_bytes_total", "counter", "Datagram bytes received.", bytes);
	F("relayd_udp_receive_errors_total", "counter", "Errors the socket reported.", recv_errors);
	F("relayd_udp_receive_buffer_bytes", "gauge", "The socket's receive buffer as the kernel set it.",
	  receive_buffer);
#undef F
}

void udp_close(struct udp_server *s, void (*done)(void *arg), void *arg)
{
	s->done = done;
	s->done_arg = arg;
	s->closing = 1;
	if (s->n == 0) {
		server_free(s);
		return;
	}
	for (size_t i = 0; i < s->n; i++) {
		struct udp_listener *l = s->ls[i];
		/* Stop reading first, then take what the kernel holds, then hand
		 * the pending group to ingest: every datagram that reached us
		 * before the stop is committed (the caller closes ingest only
		 * after this, and ingest commits all it was given). */
		uv_udp_recv_stop(&l->udp);
		drain(l);
		flush(l);
		uv_close((uv_handle_t *)&l->timer, handle_closed);
		uv_close((uv_handle_t *)&l->udp, handle_closed);
	}
}
