/*
 * backends: the replay workers of relayd as a set that follows the
 * configuration. A worker is never restarted from inside one of replay's
 * callbacks: its stop callback only marks the slot, and a zero timer
 * restarts or frees it on the next loop iteration, once replay.c has
 * returned from whatever closed its last handle.
 */
#include "relay/delivery/backends.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "relay/base/log.h"
#include "relay/base/util.h"

/* A worker is allocated by replay_start and stays opaque here: a slot
 * keeps the pointer, and frees the worker (replay_free) only from the
 * deferred timer, once its stop callback has run. */
struct backend_slot {
	struct replay_worker *w; /* NULL before the first start */
	struct backends *bs;
	int id;
	const struct relay_backend_config *bc;   /* what w runs, or ran while it stops */
	const struct relay_backend_config *next; /* once stopped: start with these; NULL = drop the slot */
	int stopping; /* replay_stop called, its callback not yet run */
	int stopped;  /* stopped: waiting for the deferred restart or free */
	struct replay_handover *handover; /* from the stopped worker to the next (replay.h) */
};

struct retired_config {
	struct relay_config *cfg;
	struct retired_config *next;
};

int backends_init(struct backends *bs, uv_loop_t *loop, struct wal *wal)
{
	memset(bs, 0, sizeof(*bs));
	bs->loop = loop;
	bs->wal = wal;
	int rc = uv_timer_init(loop, &bs->defer);
	bs->defer.data = bs;
	return rc;
}

int backends_open(struct backends *bs, const struct relay_config *cfg, int *ids, char *err, size_t errlen)
{
	for (size_t i = 0; i < cfg->nbackends; i++) {
		const struct relay_backend_config *b = &cfg->backends[i];
		int rc = wal_backend_open(bs->wal, b->name, &ids[i]);
		if (rc) {
			snprintf(err, errlen, "cannot open the queue of backend '%s': %s", b->name, wal_strerror(rc));
			return rc;
		}
		if (!bs->names[ids[i]])
			bs->names[ids[i]] = xstrdup(b->name);
	}
	return 0;
}

/*---- configurations kept for running workers ----*/

static int points_into(const struct relay_config *cfg, const struct relay_backend_config *b)
{
	return b && cfg->nbackends && b >= cfg->backends && b < cfg->backends + cfg->nbackends;
}

static int in_use(const struct backends *bs, const struct relay_config *cfg)
{
	for (int id = 0; id < WAL_MAX_BACKENDS; id++) {
		const struct backend_slot *s = bs->slots[id];
		if (s && (points_into(cfg, s->bc) || points_into(cfg, s->next)))
			return 1;
	}
	return 0;
}

static void collect(struct backends *bs)
{
	struct retired_config **pp = &bs->retired;
	while (*pp) {
		struct retired_config *r = *pp;
		if (in_use(bs, r->cfg)) {
			pp = &r->next;
			continue;
		}
		*pp = r->next;
		config_release(r->cfg);
		free(r->cfg);
		free(r);
	}
}

void backends_retire(struct backends *bs, struct relay_config *old)
{
	struct retired_config *r = xcalloc(1, sizeof(*r));
	r->cfg = old;
	r->next = bs->retired;
	bs->retired = r;
	collect(bs);
}

/*---- workers ----*/

static void defer_cb(uv_timer_t *t);

static void worker_stopped(struct replay_worker *w, void *arg)
{
	struct backend_slot *s = arg;
	struct backends *bs = s->bs;
	/* Its counters join those of the workers before it: the next one
	 * starts at 0, the sums (backends_stats) go on. Only here, once per
	 * worker: from now on s->stopped says it was carried. */
	if (!bs->carried[s->id]) {
		bs->carried[s->id] = xmalloc(sizeof(struct replay_stats));
		replay_stats_init(bs->carried[s->id]);
	}
	replay_stats_add(bs->carried[s->id], replay_worker_stats(w));
	free(s->handover);
	s->handover = replay_handover_take(w);
	s->stopping = 0;
	s->stopped = 1;
	uv_timer_start(&s->bs->defer, defer_cb, 0, 0);
}

static void stop_slot(struct backend_slot *s)
{
	if (s->stopping || s->stopped)
		return;
	s->stopping = 1;
	replay_stop(s->w, worker_stopped, s);
}

static void start_slot(struct backends *bs, struct backend_slot *s)
{
	s->stopped = 0;
	s->stopping = 0;
	/* A restart: the old worker has stopped, and this runs from the
	 * deferred timer, outside its callbacks. */
	replay_free(s->w);
	s->w = replay_start(bs->loop, bs->wal, s->bc, s->id);
	replay_set_outage_log(s->w, bs->outage_reminder_ms, s->bc->max_bytes, s->bc->max_age_ms);
	replay_handover_give(s->w, s->handover);
	s->handover = NULL;
}

static void defer_closed(uv_handle_t *h)
{
	struct backends *bs = h->data;
	for (int id = 0; id < WAL_MAX_BACKENDS; id++) {
		free(bs->names[id]);
		bs->names[id] = NULL;
		free(bs->carried[id]);
		bs->carried[id] = NULL;
	}
	if (bs->closed_cb)
		bs->closed_cb(bs);
}

static void defer_cb(uv_timer_t *t)
{
	struct backends *bs = t->data;
	int left = 0;

	for (int id = 0; id < WAL_MAX_BACKENDS; id++) {
		struct backend_slot *s = bs->slots[id];
		if (!s)
			continue;
		if (s->stopped && s->next && !bs->closing) {
			s->bc = s->next;
			s->next = NULL;
			start_slot(bs, s);
			relay_log(RELAY_LOG_NOTICE, "backend '%s': delivering with its new settings", s->bc->name);
		} else if (s->stopped) {
			bs->slots[id] = NULL;
			replay_free(s->w);
			free(s->handover);
			free(s);
			continue;
		}
		left++;
	}
	collect(bs);
	if (bs->closing && !left && !uv_is_closing((uv_handle_t *)&bs->defer))
		uv_close((uv_handle_t *)&bs->defer, defer_closed);
}

/* Same settings apart from the queue limits, which wal_append enforces
 * and the worker never reads, and the rate limit, which the worker keeps
 * its own copy of (replay_set_rate): these change without a restart, so
 * a backlog being paced keeps its place. */
static int same_delivery(const struct relay_backend_config *a, const struct relay_backend_config *b)
{
	struct relay_backend_config t = *b;
	t.max_bytes = a->max_bytes;
	t.max_age_ms = a->max_age_ms;
	t.max_rate = a->max_rate;
	t.max_rate_bytes = a->max_rate_bytes;
	t.rate_burst_ms = a->rate_burst_ms;
	return config_backend_equal(a, &t);
}

void backends_apply(struct backends *bs, const struct relay_config *cfg, const int *ids)
{
	int listed[WAL_MAX_BACKENDS] = { 0 };

	bs->outage_reminder_ms = cfg->log_outage_reminder_ms;
	for (size_t i = 0; i < cfg->nbackends; i++) {
		const struct relay_backend_config *b = &cfg->backends[i];
		int id = ids[i];
		struct backend_slot *s = bs->slots[id];
		listed[id] = 1;
		wal_backend_set_limits(bs->wal, id, b->max_bytes, (int64_t)b->max_age_ms * 1000000LL);
		if (!s) {
			struct wal_backend_stat st;
			memset(&st, 0, sizeof(st));
			wal_backend_stat(bs->wal, b->name, &st);
			s = xcalloc(1, sizeof(*s));
			s->bs = bs;
			s->id = id;
			s->bc = b;
			bs->slots[id] = s;
			start_slot(bs, s);
			relay_log(RELAY_LOG_INFO, "backend '%s' (%s): %" PRIu64 " %s, %" PRIu64 " %s, %" PRIu64 " %s queued",
				  b->name, b->url, st.pending_batches, relay_plural(st.pending_batches, "batch", "batches"),
				  st.pending_points, relay_plural(st.pending_points, "point", "points"), st.pending_bytes,
				  relay_plural(st.pending_bytes, "byte", "bytes"));
			continue;
		}
		if (s->stopping || s->stopped) {
			/* Stopping for an earlier reload: it starts again with
			 * these settings instead. */
			s->next = b;
			continue;
		}
		if (same_delivery(s->bc, b)) {
			/* The reminder interval and the limits its lines measure
			 * against change without a restart. */
			replay_set_outage_log(s->w, bs->outage_reminder_ms, b->max_bytes, b->max_age_ms);
			/* So does the rate limit: the worker keeps its place. */
			replay_set_rate(s->w, b->max_rate, b->max_rate_bytes, b->rate_burst_ms);
			/* Its certificates are read again all the same. */
			replay_reload_tls(s->w);
			relay_log(RELAY_LOG_DEBUG, "backend '%s': delivery settings unchanged", b->name);
			continue;
		}
		relay_log(RELAY_LOG_NOTICE, "backend '%s': delivery settings changed: restarting its worker "
			  "(a write in flight is sent again)", b->name);
		s->next = b;
		stop_slot(s);
	}
	for (int id = 0; id < WAL_MAX_BACKENDS; id++) {
		struct backend_slot *s = bs->slots[id];
		if (!s || listed[id])
			continue;
		if (s->next || !(s->stopping || s->stopped))
			relay_log(RELAY_LOG_NOTICE, "backend '%s' is no longer configured: delivery stops, "
				  "its queue stays on disk until purged", bs->names[id]);
		s->next = NULL;
		stop_slot(s);
	}
}

const struct replay_worker *backends_worker(const struct backends *bs, int id)
{
	if (id < 0 || id >= WAL_MAX_BACKENDS || !bs->slots[id])
		return NULL;
	return bs->slots[id]->w;
}

void backends_stats(const struct backends *bs, int id, struct replay_stats *out)
{
	replay_stats_init(out);
	if (id < 0 || id >= WAL_MAX_BACKENDS)
		return;
	if (bs->carried[id])
		replay_stats_add(out, bs->carried[id]);
	/* A stopped worker's counters are in carried already (worker_stopped);
	 * a stopping one's are not yet. */
	const struct backend_slot *s = bs->slots[id];
	if (s && s->w && !s->stopped) {
		replay_stats_add(out, replay_worker_stats(s->w));
		out->throttled_ms += replay_worker_throttling_ms(s->w); /* the wait under way */
	}
}

struct replay_worker *backends_worker_mut(struct backends *bs, int id)
{
	struct backend_slot *s;
	if (id < 0 || id >= WAL_MAX_BACKENDS || !(s = bs->slots[id]) || s->stopping || s->stopped)
		return NULL;
	return s->w;
}

void backends_notify(struct backends *bs)
{
	for (int id = 0; id < WAL_MAX_BACKENDS; id++) {
		struct backend_slot *s = bs->slots[id];
		if (s && !s->stopping && !s->stopped)
			replay_notify(s->w);
	}
}

void backends_close(struct backends *bs, void (*cb)(struct backends *bs))
{
	bs->closing = 1;
	bs->closed_cb = cb;
	for (int id = 0; id < WAL_MAX_BACKENDS; id++) {
		struct backend_slot *s = bs->slots[id];
		if (!s)
			continue;
		s->next = NULL;
		stop_slot(s);
	}
	/* Frees what has stopped already and closes the timer once nothing
	 * is left (at once when there were no workers). */
	uv_timer_start(&bs->defer, defer_cb, 0, 0);
}
