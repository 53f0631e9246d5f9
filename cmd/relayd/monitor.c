/*
 * monitor: what relayd says of itself (docs/monitoring.md). GET /health
 * (JSON, with an overall status), GET /health/backends/NAME (one line for
 * a load balancer), GET /metrics (Prometheus's text format) and the
 * systemd status line.
 *
 * All of them start from one snapshot (struct snap): every backend's
 * queue figures and the store's from one LMDB read transaction
 * (wal_backend_stats; a backend that holds databases costs one more, to
 * list them), its worker's view, the file's and the filesystem's sizes. A scrape writes nothing and takes no
 * lock a writer waits on; its cost with 64 backends is in
 * docs/performance.md. The door's and the workers' own counters are
 * written by their layers (http_server_metrics, backends_metrics); this
 * file writes the families only the program can see.
 *
 * One definition of each judgement, used by all four: a backend's state
 * as relayctl shows it (backend_state), whether it is caught up
 * (backend_lag_ns, backend_verdict) and the relay's status (judge).
 */
#include <dirent.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "cmd/relayd/relayd.h"
#include "relay/base/json.h"
#include "relay/base/metrics.h"
#include "relay/base/util.h"
#include "relay/delivery/replay.h"


/* A queue above this share of its byte limit makes the relay degraded. */
#define FULL_WARN 0.8
/* After a refused write (a 503, a failed commit) /health says failing
 * this long: a load balancer's check, every few seconds, must see it. */
#define FAILING_HOLD_NS (30 * 1000000000LL)

/* One configured backend, as seen at one moment. */
struct snap_backend {
	const struct relay_backend_config *cfg;
	int id;
	int worker;                 /* a worker runs (else "starting") */
	struct replay_view v;
	struct wal_backend_stat st; /* zero when st_rc */
	int st_rc;
	const char *state;          /* backend_state() */
	int64_t lag_ns;             /* backend_lag_ns() */
	size_t held_dbs;            /* databases held (held_figures()) */
	int64_t held_oldest_ns;     /* acceptance of the oldest held write; 0 = none */
};

struct snap {
	int64_t now_ns;
	size_t n;
	struct snap_backend *b;
	struct wal_stat ws;
	int ws_rc;
	uint64_t file_bytes;        /* data.mdb's size; 0 if unknown */
	int fs_ok;
	uint64_t fs_free, fs_size;  /* data_dir's filesystem */
	const char *status;         /* judge() */
	char why[512];              /* what made it so; "" for ok */
};

/* Whole seconds from t_ns to now_ns: 0 for no time (0) or one in the
 * future, saturated for one before 1970, so that no stored time can make
 * the subtraction overflow. */
static int64_t age_seconds(int64_t now_ns, int64_t t_ns)
{
	if (!t_ns || t_ns >= now_ns)
		return 0;
	if (t_ns < 0 && now_ns > INT64_MAX + t_ns)
		return INT64_MAX / 1000000000LL;
	return (now_ns - t_ns) / 1000000000LL;
}

/* The state relayctl status shows: a pause wins over what the worker
 * says (a paused worker reports its link as it last was). */
static const char *backend_state(const struct snap_backend *b)
{
	if (b->v.paused || b->st.paused)
		return "paused";
	if (!b->worker)
		return "starting";
	return replay_health_name(b->v.health);
}

/*
 * How far behind b is: now minus the acceptance of the oldest write it
 * lacks, pending in the log or held for a database it does not have; 0
 * when it lacks none. The query router's lag (relay/query/router.h) with
 * every database counted, since a load balancer does not know which one
 * a query will read.
 */
static int64_t backend_lag_ns(const struct snap_backend *b, int64_t now_ns)
{
	int64_t oldest = b->st.pending_batches ? b->st.oldest_accept_ns : 0;
	if (b->held_oldest_ns && (!oldest || b->held_oldest_ns < oldest))
		oldest = b->held_oldest_ns;
	if (!oldest || oldest >= now_ns)
		return 0;
	return now_ns - oldest;
}

/* The held databases of b: how many, and the oldest held write. One more
 * read, only for a backend that holds some (rare: a database missing on
 * that backend). A list that cannot be read counts as one database held
 * since now: not caught up, whatever else. */
static void held_figures(struct snap_backend *b, struct wal *wal, int64_t now_ns)
{
	struct wal_held *h = NULL;
	size_t n = 0;
	if (!b->st.held_batches)
		return;
	if (wal_held_list(wal, b->id, &h, &n) != 0) {
		b->held_dbs = 1;
		b->held_oldest_ns = now_ns - 1;
		return;
	}
	b->held_dbs = n;
	for (size_t k = 0; k < n; k++)
		if (h[k].batches && (!b->held_oldest_ns || h[k].oldest_accept_ns < b->held_oldest_ns))
			b->held_oldest_ns = h[k].oldest_accept_ns;
	wal_held_free(h, n);
}

/* query.max_lag in ns, saturated. */
static int64_t max_lag_ns_of(const struct relayd *d)
{
	uint64_t ms = d->cfg.query_max_lag_ms;
	return ms > (uint64_t)(INT64_MAX / 1000000LL) ? INT64_MAX : (int64_t)ms * 1000000LL;
}

/* What b's queue holds against its byte limit (held batches count). */
static double full_share(const struct snap_backend *b)
{
	if (!b->cfg->max_bytes)
		return 0;
	return (double)(b->st.pending_bytes + b->st.held_bytes) / (double)b->cfg->max_bytes;
}

/* A queue that refuses writes now: at its byte limit, or its oldest batch
 * past the age limit. */
static int queue_refuses(const struct snap_backend *b, int64_t now_ns)
{
	if (full_share(b) >= 1.0)
		return 1;
	return b->cfg->max_age_ms && b->st.pending_batches &&
	       (uint64_t)age_seconds(now_ns, b->st.oldest_accept_ns) * 1000 >= b->cfg->max_age_ms;
}

static void why_add(struct snap *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void why_add(struct snap *s, const char *fmt, ...)
{
	size_t len = strlen(s->why);
	if (len + 3 >= sizeof(s->why))
		return;
	if (len) {
		memcpy(s->why + len, "; ", 3);
		len += 2;
	}
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(s->why + len, sizeof(s->why) - len, fmt, ap);
	va_end(ap);
}

/*
 * Writes refused since the last look: remember when (monotonic: a clock
 * set back must not keep the relay failing). Only what "failing" means:
 * batches a full queue refused and commits that failed (ingest's counts,
 * HTTP and UDP alike), not a 503 for the door's memory budget, which one
 * client with a large body can cause and which says nothing of the
 * relay's health.
 */
void monitor_tick(struct relayd *d)
{
	uint64_t refused = d->ing.stats.commit_errors + d->ing.stats.batches_refused;
	if (refused != d->refusals_seen) {
		d->refusals_seen = refused;
		d->refused_at_mono_ns = now_mono_ns();
	}
}

/* What a drain waits for: batches pending or held, every backend. */
static uint64_t snap_left(const struct snap *s)
{
	uint64_t n = 0;
	for (size_t i = 0; i < s->n; i++)
		n += s->b[i].st.pending_batches + s->b[i].st.held_batches;
	return n;
}

/*
 * The relay's status (docs/monitoring.md): stopping; draining while
 * relayctl drain has asked for it (writes are still accepted); failing while writes
 * are refused (a queue at its limit, or a refusal or failed commit in the
 * last FAILING_HOLD_NS); degraded while a backend does not deliver, holds
 * a database's writes, or fills past FULL_WARN; ok otherwise.
 */
static void judge(struct relayd *d, struct snap *s)
{
	int failing = 0, degraded = 0;
	monitor_tick(d);
	s->why[0] = '\0';
	for (size_t i = 0; i < s->n; i++) {
		const struct snap_backend *b = &s->b[i];
		if (b->st_rc) {
			degraded = 1;
			why_add(s, "'%s': its queue cannot be read (%s)", b->cfg->name, wal_strerror(b->st_rc));
			continue;
		}
		if (queue_refuses(b, s->now_ns)) {
			failing = 1;
			why_add(s, "'%s': its queue is full, writes get 503", b->cfg->name);
		} else if (full_share(b) > FULL_WARN) {
			degraded = 1;
			why_add(s, "'%s': its queue is %.0f%% full", b->cfg->name, full_share(b) * 100);
		}
		/* A pause with nothing pending costs nothing yet: it degrades
		 * once writes wait behind it. */
		if (strcmp(b->state, "up") != 0 && !(strcmp(b->state, "paused") == 0 && b->lag_ns == 0)) {
			degraded = 1;
			why_add(s, "'%s' is %s", b->cfg->name, b->state);
		}
		if (b->st.held_batches) {
			degraded = 1;
			why_add(s, "'%s' holds %" PRIu64 " %s for databases it lacks", b->cfg->name,
			        b->st.held_batches, relay_plural(b->st.held_batches, "batch", "batches"));
		}
	}
	uint64_t mono = now_mono_ns();
	if (d->refused_at_mono_ns && mono - d->refused_at_mono_ns < (uint64_t)FAILING_HOLD_NS) {
		failing = 1;
		why_add(s, "writes were refused %" PRIu64 " s ago", (uint64_t)((mono - d->refused_at_mono_ns) / 1000000000u));
	}
	s->status = d->stopping ? "stopping" : failing ? "failing" : degraded ? "degraded" : "ok";
	if (d->draining && !d->stopping) {
		/* Asked for (relayctl drain): it wins over failing and
		 * degraded, whose reasons follow its own. */
		char head[96];
		int n = snprintf(head, sizeof(head), "draining for maintenance: %" PRIu64 " %s left to deliver",
		                 snap_left(s), relay_plural(snap_left(s), "batch", "batches"));
		size_t h = n > 0 && (size_t)n < sizeof(head) ? (size_t)n : 0, len = strlen(s->why);
		if (len) {
			if (h + 2 + len >= sizeof(s->why))
				len = sizeof(s->why) - h - 3;
			memmove(s->why + h + 2, s->why, len);
			memcpy(s->why + h, "; ", 2);
			s->why[h + 2 + len] = '\0';
		} else {
			s->why[h] = '\0';
		}
		memcpy(s->why, head, h);
		s->status = "draining";
	}
}

/* Take the snapshot. */
static struct snap *snap_take(struct relayd *d)
{
	struct snap *s = xcalloc(1, sizeof(*s));
	const char *names[RELAY_MAX_BACKENDS];
	struct wal_backend_stat st[RELAY_MAX_BACKENDS];
	int rcs[RELAY_MAX_BACKENDS];

	s->now_ns = now_realtime_ns();
	s->n = d->cfg.nbackends;
	s->b = xcalloc(s->n ? s->n : 1, sizeof(*s->b));
	for (size_t i = 0; i < s->n; i++)
		names[i] = d->cfg.backends[i].name;
	wal_backend_stats(d->wal, names, s->n, st, rcs, &s->ws, &s->ws_rc);
	for (size_t i = 0; i < s->n; i++) {
		struct snap_backend *b = &s->b[i];
		const struct replay_worker *w = backends_worker(&d->backends, d->ids[i]);
		b->cfg = &d->cfg.backends[i];
		b->id = d->ids[i];
		b->v.next_attempt_ms = -1;
		if (w) {
			b->worker = 1;
			replay_worker_view(w, &b->v);
		}
		b->st = st[i];
		b->st_rc = rcs[i];
		b->state = backend_state(b);
		held_figures(b, d->wal, s->now_ns);
		b->lag_ns = backend_lag_ns(b, s->now_ns);
	}
	char path[4096];
	struct stat fst;
	snprintf(path, sizeof(path), "%s/data.mdb", d->cfg.data_dir);
	if (stat(path, &fst) == 0)
		s->file_bytes = (uint64_t)fst.st_size;
	struct statvfs vfs;
	if (statvfs(d->cfg.data_dir, &vfs) == 0) {
		s->fs_ok = 1;
		s->fs_free = (uint64_t)vfs.f_bavail * vfs.f_frsize;
		s->fs_size = (uint64_t)vfs.f_blocks * vfs.f_frsize;
	}
	judge(d, s);
	return s;
}

static void snap_free(struct snap *s)
{
	if (s) {
		free(s->b);
		free(s);
	}
}

/*---- the systemd status line ----*/

void monitor_status_line(struct relayd *d, char *buf, size_t len)
{
	uint64_t batches = 0, points = 0, bytes = 0;
	int64_t oldest = 0;
	size_t up = 0;
	struct snap *s = snap_take(d);

	for (size_t i = 0; i < s->n; i++) {
		const struct snap_backend *b = &s->b[i];
		if (strcmp(b->state, "up") == 0)
			up++;
		batches += b->st.pending_batches;
		points += b->st.pending_points;
		bytes += b->st.pending_bytes;
		if (b->st.pending_batches && b->st.oldest_accept_ns && (!oldest || b->st.oldest_accept_ns < oldest))
			oldest = b->st.oldest_accept_ns;
	}
	snprintf(buf, len, "%s; %" PRIu64 " point%s in %" PRIu64 " batch%s (%" PRIu64 " KiB) queued, oldest %" PRId64
	         " s; %zu of %zu backend%s up",
	         s->status, points, relay_s(points), batches, relay_plural(batches, "", "es"), (bytes + 1023) / 1024,
	         age_seconds(s->now_ns, oldest), up, s->n, relay_s(s->n));
	snap_free(s);
}

/*---- /health/backends/NAME ----*/

/*
 * Whether a load balancer may send b queries (200) or not (503), and the
 * one line that says why. Up and lagging no more than max_lag is caught
 * up; a paused backend with nothing it lacks is caught up too (it has
 * every write), one with a backlog is not.
 */
static int backend_verdict(const struct snap_backend *b, int64_t max_lag_ns, struct rbuf *out)
{
	char lag[32];
	snprintf(lag, sizeof(lag), "%.3f s", (double)b->lag_ns / 1e9);
	if (b->st_rc) {
		rbuf_appendf(out, "unknown: its queue cannot be read (%s)", wal_strerror(b->st_rc));
		return 503;
	}
	if (strcmp(b->state, "paused") == 0) {
		if (b->lag_ns) {
			rbuf_appendf(out, "paused with %" PRIu64 " %s pending (%" PRIu64 " held), oldest %s old",
			             b->st.pending_batches, relay_plural(b->st.pending_batches, "batch", "batches"),
			             b->st.held_batches, lag);
			return 503;
		}
		rbuf_appendf(out, "caught up (paused, nothing pending)");
		return 200;
	}
	if (strcmp(b->state, "up") != 0) {
		rbuf_appendf(out, "%s%s%s", b->state, b->v.last_error[0] ? ": " : "", b->v.last_error);
		return 503;
	}
	if (b->st.held_batches && b->lag_ns > max_lag_ns) {
		rbuf_appendf(out, "holding: %" PRIu64 " %s for databases it lacks, oldest %s old",
		             b->st.held_batches, relay_plural(b->st.held_batches, "batch waits", "batches wait"), lag);
		return 503;
	}
	if (b->lag_ns > max_lag_ns) {
		rbuf_appendf(out, "behind: %" PRIu64 " %s pending, oldest %s old (max_lag %.3f s)",
		             b->st.pending_batches, relay_plural(b->st.pending_batches, "batch", "batches"), lag, (double)max_lag_ns / 1e9);
		return 503;
	}
	rbuf_appendf(out, "caught up (%" PRIu64 " %s pending, lag %s)", b->st.pending_batches,
	             relay_plural(b->st.pending_batches, "batch", "batches"), lag);
	return 200;
}

static int backend_health(struct http_server *hs, const char *name, int64_t max_lag_ms, struct rbuf *out, void *arg)
{
	struct relayd *d = arg;
	(void)hs;
	size_t i;
	for (i = 0; i < d->cfg.nbackends; i++)
		if (strcmp(d->cfg.backends[i].name, name) == 0)
			break;
	if (i == d->cfg.nbackends) {
		rbuf_appendf(out, "unknown backend (not in relayd's configuration)");
		return 404;
	}
	if (d->stopping) {
		rbuf_appendf(out, "relayd is stopping");
		return 503;
	}
	struct snap *s = snap_take(d);
	/* Saturated: a bound of centuries means "any lag", not an overflow. */
	uint64_t lag_ms = max_lag_ms >= 0 ? (uint64_t)max_lag_ms : d->cfg.query_max_lag_ms;
	int64_t max_lag_ns = lag_ms > (uint64_t)(INT64_MAX / 1000000LL) ? INT64_MAX : (int64_t)lag_ms * 1000000LL;
	int status = backend_verdict(&s->b[i], max_lag_ns, out);
	snap_free(s);
	return status;
}

/*---- /health ----*/

/* One counter into an object. Counters are unsigned; jansson's integers
 * are signed 64-bit, far beyond any counter relayd can reach. */
static void put_u64(json_t *o, const char *key, uint64_t v)
{
	json_object_set_new(o, key, json_integer((json_int_t)v));
}

/* RFC 3339 in UTC with milliseconds, or "" for 0. */
static json_t *json_time(int64_t ns)
{
	char buf[40];
	if (!ns)
		return json_string("");
	time_t t = (time_t)(ns / 1000000000LL);
	struct tm tm;
	gmtime_r(&t, &tm);
	size_t n = strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(buf + n, sizeof(buf) - n, ".%03dZ", (int)((ns % 1000000000LL) / 1000000));
	return json_string(buf);
}

static json_t *health_backend(struct relayd *d, const struct snap *s, const struct snap_backend *b)
{
	json_t *o = json_object();
	const struct replay_view *v = &b->v;
	json_object_set_new(o, "name", rjson_cstr(b->cfg->name));
	json_object_set_new(o, "state", rjson_cstr(b->state));
	json_object_set_new(o, "link", rjson_cstr(b->worker ? replay_health_name(v->health) : "starting"));
	json_object_set_new(o, "paused", json_boolean(strcmp(b->state, "paused") == 0));
	struct rbuf why = RBUF_INIT;
	int caught = backend_verdict(b, max_lag_ns_of(d), &why) == 200;
	json_object_set_new(o, "caught_up", json_boolean(caught));
	json_object_set_new(o, "caught_up_reason", rjson_string(why.data ? why.data : "", why.len));
	rbuf_release(&why);
	json_object_set_new(o, "lag_seconds", json_real((double)b->lag_ns / 1e9));
	put_u64(o, "pending_batches", b->st.pending_batches);
	put_u64(o, "pending_points", b->st.pending_points);
	put_u64(o, "pending_bytes", b->st.pending_bytes);
	json_object_set_new(o, "oldest_age_seconds", json_integer(age_seconds(s->now_ns, b->st.oldest_accept_ns)));
	put_u64(o, "max_bytes", b->cfg->max_bytes);
	put_u64(o, "max_age_seconds", b->cfg->max_age_ms / 1000);
	json_object_set_new(o, "percent_full", json_real(round(full_share(b) * 1000) / 10));
	put_u64(o, "held_batches", b->st.held_batches);
	put_u64(o, "held_points", b->st.held_points);
	put_u64(o, "held_bytes", b->st.held_bytes);
	/* Which databases wait to exist, each on its own (the figures
	 * above are the log's: a held batch is not in them). */
	json_t *held = json_array();
	struct wal_held *h = NULL;
	size_t nh = 0;
	if (b->st.held_batches && wal_held_list(d->wal, b->id, &h, &nh) == 0) {
		for (size_t k = 0; k < nh; k++) {
			json_t *e = json_object();
			json_object_set_new(e, "db", rjson_cstr(h[k].db));
			put_u64(e, "batches", h[k].batches);
			put_u64(e, "points", h[k].points);
			put_u64(e, "bytes", h[k].bytes);
			json_object_set_new(e, "oldest_age_seconds",
			                    json_integer(age_seconds(s->now_ns, h[k].oldest_accept_ns)));
			json_array_append_new(held, e);
		}
		wal_held_free(h, nh);
	}
	json_object_set_new(o, "held", held);
	put_u64(o, "dead_batches", b->st.dead_batches);
	put_u64(o, "dead_bytes", b->st.dead_bytes);
	/* Since relayd started, as /metrics counts them: a worker a reload
	 * restarted keeps adding to them. */
	struct replay_stats tot;
	backends_stats(&d->backends, b->id, &tot);
	put_u64(o, "posts", tot.posts);
	put_u64(o, "delivered_batches", tot.delivered_batches);
	put_u64(o, "delivered_points", tot.delivered_points);
	put_u64(o, "retries", tot.retries);
	/* The last delivery is the queue's record: it survives restarts. */
	int64_t last = b->st.last_delivery_ns > v->last_delivery_ns ? b->st.last_delivery_ns : v->last_delivery_ns;
	json_object_set_new(o, "last_delivery", json_time(last));
	json_object_set_new(o, "last_delivery_age_seconds", last ? json_integer(age_seconds(s->now_ns, last)) : json_null());
	json_object_set_new(o, "last_error", rjson_cstr(b->worker ? v->last_error : ""));
	/* What is being retried, and when the next try comes. */
	json_object_set_new(o, "attempts", json_integer(v->attempts));
	json_object_set_new(o, "next_attempt_ms", json_integer(b->worker ? v->next_attempt_ms : -1));
	if (b->st_rc)
		json_object_set_new(o, "queue_error", rjson_cstr(wal_strerror(b->st_rc)));
	return o;
}

static json_t *health_store(struct relayd *d, const struct snap *s)
{
	json_t *o = json_object();
	json_object_set_new(o, "data_dir", rjson_cstr(d->cfg.data_dir));
	if (s->ws_rc == 0) {
		put_u64(o, "map_size_bytes", s->ws.map_size);
		put_u64(o, "used_bytes", s->ws.file_pages * s->ws.page_size);
		put_u64(o, "batches", s->ws.batches);
	}
	put_u64(o, "file_size_bytes", s->file_bytes);
	if (s->fs_ok) {
		put_u64(o, "filesystem_free_bytes", s->fs_free);
		put_u64(o, "filesystem_size_bytes", s->fs_size);
	}
	return o;
}

/*
 * GET /health: the relay's status and why, its front door and group
 * commit figures, the store, per backend its state, limits and backlog.
 * 200 for ok and degraded, 503 for failing, draining and stopping: a
 * load balancer's plain check sends writes elsewhere exactly when this
 * relay refuses them, or is being taken out of the pool (relayctl drain).
 */
static int health(struct http_server *hs_, struct rbuf *out, void *arg)
{
	struct relayd *d = arg;
	const struct http_server_stats *hs = http_server_stats(hs_);
	const struct ingest_stats *is = &d->ing.stats;
	struct snap *s = snap_take(d);
	json_t *o = json_object(), *sub, *arr;

	json_object_set_new(o, "status", rjson_cstr(s->status));
	json_object_set_new(o, "reason", rjson_cstr(s->why));
	json_object_set_new(o, "version", rjson_cstr(RELAYD_VERSION));
	json_object_set_new(o, "pid", json_integer(d->pid));
	json_object_set_new(o, "started", json_time(d->started_ns));
	sub = json_object();
	put_u64(sub, "reloads", d->reloads);
	put_u64(sub, "reload_errors", d->reload_errors);
	json_object_set_new(o, "config", sub);
	sub = json_object();
	put_u64(sub, "connections_open", hs->connections_open);
	put_u64(sub, "connections_accepted", hs->connections_accepted);
	put_u64(sub, "requests", hs->requests);
	put_u64(sub, "writes_ok", hs->writes_ok);
	put_u64(sub, "writes_rejected", hs->writes_rejected);
	put_u64(sub, "writes_refused", hs->writes_refused);
	put_u64(sub, "points_accepted", hs->points_accepted);
	put_u64(sub, "buffered_bytes", hs->buffered_bytes);
	put_u64(sub, "buffered_limit", d->cfg.http_max_buffered_bytes);
	json_object_set_new(o, "http", sub);
	if (d->cfg.listen_https) {
		sub = json_object();
		json_object_set_new(sub, "address", rjson_cstr(d->cfg.listen_https));
		put_u64(sub, "handshakes", hs->tls_handshakes);
		put_u64(sub, "handshake_failures", hs->tls_handshake_failures);
		put_u64(sub, "handshake_timeouts", hs->tls_handshake_timeouts);
		put_u64(sub, "handshakes_refused", hs->tls_handshakes_refused);
		put_u64(sub, "plain_http", hs->tls_plain_http);
		put_u64(sub, "certificate_reloads", hs->tls_reloads);
		json_object_set_new(o, "tls", sub);
	}
	sub = json_object();
	put_u64(sub, "commits", is->commits);
	put_u64(sub, "batches_committed", is->batches_committed);
	put_u64(sub, "batches_refused", is->batches_refused);
	put_u64(sub, "commit_errors", is->commit_errors);
	put_u64(sub, "largest_group", is->max_group);
	json_object_set_new(o, "ingest", sub);
	json_object_set_new(o, "store", health_store(d, s));

	arr = json_array();
	for (size_t i = 0; i < s->n; i++)
		json_array_append_new(arr, health_backend(d, s, &s->b[i]));
	json_object_set_new(o, "backends", arr);

	arr = json_array();
	for (size_t i = 0; d->udp && i < udp_count(d->udp); i++) {
		const struct relay_udp_config *uc = &d->cfg.udp[i];
		const struct udp_stats *us = udp_stats(d->udp, i);
		sub = json_object();
		json_object_set_new(sub, "address", rjson_cstr(uc->address));
		json_object_set_new(sub, "db", rjson_cstr(uc->db));
		put_u64(sub, "datagrams", us->datagrams);
		put_u64(sub, "datagrams_committed", us->datagrams_committed);
		put_u64(sub, "datagrams_bad", us->datagrams_bad);
		put_u64(sub, "datagrams_dropped", us->datagrams_dropped);
		put_u64(sub, "points_accepted", us->points_accepted);
		put_u64(sub, "points_dropped", us->points_dropped);
		put_u64(sub, "bytes", us->bytes);
		put_u64(sub, "batches", us->batches);
		put_u64(sub, "recv_errors", us->recv_errors);
		put_u64(sub, "receive_buffer", us->receive_buffer);
		json_array_append_new(arr, sub);
	}
	json_object_set_new(o, "udp", arr);
	sub = json_object();
	put_u64(sub, "queries", hs->queries);
	put_u64(sub, "proxied", hs->queries_proxied);
	put_u64(sub, "statements_queued", hs->queries_queued);
	put_u64(sub, "errors", hs->query_errors);
	put_u64(sub, "bytes", hs->query_bytes);
	json_object_set_new(o, "queries", sub);
	rjson_append_new(out, o);
	int code = strcmp(s->status, "ok") == 0 || strcmp(s->status, "degraded") == 0 ? 200 : 503;
	snap_free(s);
	return code;
}

/*---- relayctl drain ----*/

/*
 * The drain's payload: whether relayd drains, since when, its pid (for
 * relayctl drain --stop), writes accepted since the drain began (a load
 * balancer that has not noticed yet), and per backend what is left to
 * deliver. "left" counts batches pending or held; dead letters do not
 * count (they wait for an operator, not for delivery).
 */
void monitor_drain_report(struct relayd *d, struct rbuf *out)
{
	struct snap *s = snap_take(d);
	json_t *o = json_object(), *arr = json_array();
	uint64_t writes = d->http ? http_server_stats(d->http)->writes_ok : 0;

	json_object_set_new(o, "draining", json_boolean(d->draining));
	json_object_set_new(o, "since_ns", json_integer(d->draining ? d->drain_since_ns : 0));
	json_object_set_new(o, "pid", json_integer(d->pid));
	json_object_set_new(o, "status", rjson_cstr(s->status));
	json_object_set_new(o, "reason", rjson_cstr(s->why));
	put_u64(o, "writes_since", d->draining && writes >= d->drain_writes_at ? writes - d->drain_writes_at : 0);
	put_u64(o, "left_batches", snap_left(s));
	for (size_t i = 0; i < s->n; i++) {
		const struct snap_backend *b = &s->b[i];
		json_t *e = json_object();
		json_object_set_new(e, "name", rjson_cstr(b->cfg->name));
		json_object_set_new(e, "state", rjson_cstr(b->state));
		put_u64(e, "pending_batches", b->st.pending_batches);
		put_u64(e, "pending_points", b->st.pending_points);
		put_u64(e, "held_batches", b->st.held_batches);
		put_u64(e, "dead_batches", b->st.dead_batches);
		json_object_set_new(e, "oldest_age_seconds",
		                    json_integer(age_seconds(s->now_ns, b->lag_ns ? s->now_ns - b->lag_ns : 0)));
		json_object_set_new(e, "last_error", rjson_cstr(b->worker ? b->v.last_error : ""));
		if (b->st_rc)
			json_object_set_new(e, "queue_error", rjson_cstr(wal_strerror(b->st_rc)));
		json_array_append_new(arr, e);
	}
	json_object_set_new(o, "backends", arr);
	rjson_append_new(out, o);
	snap_free(s);
}

/*---- /metrics ----*/

/* The process figures every Prometheus client library exports, from
 * /proc/self (Linux). A figure that cannot be read is left out. */
static void process_metrics(struct relayd *d, struct rbuf *out)
{
	char buf[1024];
	long tick = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
	FILE *f = fopen("/proc/self/stat", "r");
	size_t n = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
	if (f)
		fclose(f);
	buf[n] = '\0';
	/* The command name (field 2) is in parentheses and may hold spaces:
	 * the fields that follow are counted from its closing one. */
	const char *p = strrchr(buf, ')');
	unsigned long long ut = 0, stime = 0, vsize = 0;
	long long rss = 0;
	if (p && tick > 0 &&
	    sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d %*d %*d %*u %llu %lld",
	           &ut, &stime, &vsize, &rss) == 4) {
		prom_family(out, "process_cpu_seconds_total", "counter", "User and system CPU time spent, in seconds.");
		prom_f64(out, "process_cpu_seconds_total", NULL, (double)(ut + stime) / (double)tick);
		prom_family(out, "process_virtual_memory_bytes", "gauge",
		            "Virtual memory size, in bytes (includes the queue's memory map).");
		prom_u64(out, "process_virtual_memory_bytes", NULL, vsize);
		prom_family(out, "process_resident_memory_bytes", "gauge", "Resident memory size, in bytes.");
		prom_u64(out, "process_resident_memory_bytes", NULL, (uint64_t)(rss > 0 ? rss : 0) * (uint64_t)page);
	}
	uint64_t fds = 0;
	DIR *dir = opendir("/proc/self/fd");
	if (dir) {
		struct dirent *e;
		while ((e = readdir(dir)) != NULL)
			if (e->d_name[0] != '.')
				fds++;
		closedir(dir);
		prom_family(out, "process_open_fds", "gauge", "Open file descriptors.");
		prom_u64(out, "process_open_fds", NULL, fds ? fds - 1 : 0); /* less the one opendir holds */
	}
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		prom_family(out, "process_max_fds", "gauge", "Most file descriptors the process may open.");
		prom_u64(out, "process_max_fds", NULL, rl.rlim_cur == RLIM_INFINITY ? UINT64_MAX : (uint64_t)rl.rlim_cur);
	}
	prom_family(out, "process_start_time_seconds", "gauge", "Start time of the process since the Unix epoch, in seconds.");
	prom_f64(out, "process_start_time_seconds", NULL, (double)(d->started_ns / 1000000) / 1e3);
}

/* A gauge family with one sample per backend, from a field of the snapshot. */
#define BACKEND_GAUGE(NAME_, HELP_, EXPR_)                                                   \
	do {                                                                                \
		prom_family(out, NAME_, "gauge", HELP_);                                    \
		for (size_t i_ = 0; i_ < s->n; i_++) {                                      \
			const struct snap_backend *b = &s->b[i_];                           \
			prom_labels(lb, sizeof(lb), "backend", b->cfg->name, NULL);         \
			prom_f64(out, NAME_, lb, (double)(EXPR_));                          \
		}                                                                           \
	} while (0)

static const char *const backend_states[] = { "up", "retrying", "down", "holding", "storage", "paused", "starting" };

static void backend_metrics(struct relayd *d, const struct snap *s, struct rbuf *out)
{
	char lb[256];
	int64_t max_lag_ns = max_lag_ns_of(d);

	BACKEND_GAUGE("relayd_backend_pending_batches", "Batches accepted and not yet delivered.", b->st.pending_batches);
	BACKEND_GAUGE("relayd_backend_pending_points", "Points accepted and not yet delivered.", b->st.pending_points);
	BACKEND_GAUGE("relayd_backend_pending_bytes", "Line-protocol bytes accepted and not yet delivered.",
	              b->st.pending_bytes);
	BACKEND_GAUGE("relayd_backend_oldest_pending_age_seconds", "Age of the oldest batch not yet delivered (0 when none).",
	              b->st.pending_batches && b->st.oldest_accept_ns && b->st.oldest_accept_ns < s->now_ns
	                  ? (double)(s->now_ns - b->st.oldest_accept_ns) / 1e9
	                  : 0.0);
	BACKEND_GAUGE("relayd_backend_max_bytes", "The queue's byte limit (max_size): writes get 503 beyond.",
	              b->cfg->max_bytes);
	BACKEND_GAUGE("relayd_backend_max_age_seconds", "The queue's age limit (max_age); 0 = none.",
	              (double)b->cfg->max_age_ms / 1e3);
	BACKEND_GAUGE("relayd_backend_held_batches", "Batches held for databases the backend does not have.",
	              b->st.held_batches);
	BACKEND_GAUGE("relayd_backend_held_points", "Points held for databases the backend does not have.",
	              b->st.held_points);
	BACKEND_GAUGE("relayd_backend_held_bytes", "Bytes held for databases the backend does not have (they count toward max_size).",
	              b->st.held_bytes);
	BACKEND_GAUGE("relayd_backend_held_databases", "Databases whose writes are held.", b->held_dbs);
	BACKEND_GAUGE("relayd_backend_held_oldest_age_seconds",
	              "Age of the oldest write held for a database the backend does not have (0 when none).",
	              b->held_oldest_ns && b->held_oldest_ns < s->now_ns ? (double)(s->now_ns - b->held_oldest_ns) / 1e9
	                                                                 : 0.0);
	BACKEND_GAUGE("relayd_backend_dead_letter_batches", "Batches in the dead-letter queue.", b->st.dead_batches);
	BACKEND_GAUGE("relayd_backend_dead_letter_bytes", "Bytes in the dead-letter queue.", b->st.dead_bytes);

	prom_family(out, "relayd_backend_state", "gauge",
	            "1 for the backend's state now (as relayctl status shows it), 0 for the others.");
	for (size_t i = 0; i < s->n; i++)
		for (size_t k = 0; k < RELAY_ARRAY_SIZE(backend_states); k++) {
			prom_labels(lb, sizeof(lb), "backend", s->b[i].cfg->name, "state", backend_states[k], NULL);
			prom_u64(out, "relayd_backend_state", lb, strcmp(s->b[i].state, backend_states[k]) == 0);
		}
	BACKEND_GAUGE("relayd_backend_paused", "1 while delivery is paused by relayctl pause.",
	              strcmp(b->state, "paused") == 0);
	/* The same verdict as /health/backends/NAME, without its text. */
	struct rbuf scratch = RBUF_INIT;
	BACKEND_GAUGE("relayd_backend_caught_up",
	              "1 while the backend lacks no write accepted longer ago than query.max_lag (/health/backends/NAME answers 200).",
	              (rbuf_reset(&scratch), backend_verdict(b, max_lag_ns, &scratch) == 200));
	rbuf_release(&scratch);
	BACKEND_GAUGE("relayd_backend_backoff_seconds", "Time until the next attempt of a failed write (0 when none waits).",
	              b->v.next_attempt_ms > 0 ? (double)b->v.next_attempt_ms / 1e3 : 0.0);
	BACKEND_GAUGE("relayd_backend_failed_attempts", "Failed attempts of the write being tried.", b->v.attempts);
	BACKEND_GAUGE("relayd_backend_last_delivery_timestamp_seconds",
	              "When the backend last accepted a write, since the Unix epoch (0 = never).",
	              (double)((b->st.last_delivery_ns > b->v.last_delivery_ns ? b->st.last_delivery_ns
	                                                                        : b->v.last_delivery_ns) /
	                       1000000) /
	                  1e3);
}

static void store_metrics(const struct snap *s, struct rbuf *out)
{
	if (s->ws_rc == 0) {
		prom_family(out, "relayd_store_map_size_bytes", "gauge", "The queue's LMDB map: the most its file can grow to.");
		prom_u64(out, "relayd_store_map_size_bytes", NULL, s->ws.map_size);
		prom_family(out, "relayd_store_used_bytes", "gauge",
		            "Pages in use up to the last one LMDB wrote (the file's high-water mark).");
		prom_u64(out, "relayd_store_used_bytes", NULL, s->ws.file_pages * s->ws.page_size);
		prom_family(out, "relayd_store_batches", "gauge", "Batches in the log (each kept until every backend has it).");
		prom_u64(out, "relayd_store_batches", NULL, s->ws.batches);
	}
	prom_family(out, "relayd_store_file_size_bytes", "gauge", "Size of data.mdb on disk.");
	prom_u64(out, "relayd_store_file_size_bytes", NULL, s->file_bytes);
	if (s->fs_ok) {
		prom_family(out, "relayd_store_filesystem_free_bytes", "gauge",
		            "Space left for relayd on data_dir's filesystem.");
		prom_u64(out, "relayd_store_filesystem_free_bytes", NULL, s->fs_free);
		prom_family(out, "relayd_store_filesystem_size_bytes", "gauge", "Size of data_dir's filesystem.");
		prom_u64(out, "relayd_store_filesystem_size_bytes", NULL, s->fs_size);
	}
}

static int metrics(struct http_server *hs, struct rbuf *out, void *arg)
{
	struct relayd *d = arg;
	char lb[128];
	struct snap *s = snap_take(d);

	prom_family(out, "relayd_build_info", "gauge", "Always 1; the version is in the label.");
	prom_u64(out, "relayd_build_info", prom_labels(lb, sizeof(lb), "version", RELAYD_VERSION, NULL), 1);
	prom_family(out, "relayd_start_time_seconds", "gauge", "When relayd started, since the Unix epoch.");
	prom_f64(out, "relayd_start_time_seconds", NULL, (double)(d->started_ns / 1000000) / 1e3);
	static const char *const statuses[] = { "ok", "degraded", "failing", "draining", "stopping" };
	prom_family(out, "relayd_status", "gauge", "1 for the relay's overall status now (as /health says it), 0 for the others.");
	for (size_t k = 0; k < RELAY_ARRAY_SIZE(statuses); k++)
		prom_u64(out, "relayd_status", prom_labels(lb, sizeof(lb), "status", statuses[k], NULL),
		         strcmp(s->status, statuses[k]) == 0);
	prom_family(out, "relayd_config_reloads_total", "counter", "Configuration reloads that took effect.");
	prom_u64(out, "relayd_config_reloads_total", NULL, d->reloads);
	prom_family(out, "relayd_config_reload_errors_total", "counter", "Configuration reloads refused (the old one stays).");
	prom_u64(out, "relayd_config_reload_errors_total", NULL, d->reload_errors);
	process_metrics(d, out);
	store_metrics(s, out);
	backend_metrics(d, s, out);
	backends_metrics(&d->backends, &d->cfg, d->ids, out);
	http_server_metrics(hs, d->udp, out);
	snap_free(s);
	return 200;
}

void monitor_attach(struct relayd *d)
{
	http_server_set_health(d->http, health, d);
	http_server_set_backend_health(d->http, backend_health, d);
	http_server_set_metrics(d->http, metrics, d);
}
