/*
 * replay: the per-backend delivery state machine. Must never lose a batch
 * (the cursor moves only after a complete 2xx, in a committed transaction),
 * never reorder (writes go out in rounds, in queue order, and a round starts
 * only when the previous one is delivered; within a round the lines are
 * shared out among the parallel lanes by series, so every series stays in
 * order and a live write never overtakes the backlog), never hold an LMDB
 * transaction across network I/O (batches are copied out on the thread pool
 * first), and never spin (every retry waits at least retry_min). The next
 * round is read and prepared while one is in flight (the prefetch), but it
 * is sent only once the round before it is delivered.
 *
 *   notify --> IDLE ---------> READ  [pool job: wal_read into cur, rescale,
 *               ^  ^ 0 batches  |     coalesce, share out by series]
 *               |  '------------+
 *               |               | 1+ batches
 *               |               v
 *               |          THROTTLE  max_rate: the write's points and
 *               |               |    bytes taken from the backend's
 *               |               |    buckets (one for all lanes); short
 *               |               |    of them, wait on the timer, then
 *               |               |    take them (a write beyond the burst
 *               |               v    goes into debt rather than never)
 *               |             SEND  POST cur: one write, or one share per
 *               |               |   lane (the round is judged when every
 *               |               |   lane has answered)
 *               |               |   + PREFETCH [pool: wal_read of the next
 *               |               |     round into prefetch.round, prepared]
 *               |               |
 *               |               |--2xx--> ACK [pool: wal_ack up to
 *               |               |         ack.want, beside the next SEND]
 *               |               |         --> next round: the prefetch if it
 *               |               |         starts at read.from, else READ
 *               |               |--retry--> BACKOFF --> (PROBE /ping while
 *               |               |           down) --> SEND
 *               |               |--hold---> BACKOFF (>= 1 s) --> SEND
 *               |               |--404 database (hold)--> COMMIT [pool:
 *               |               |           wal_hold: to the held store,
 *               |               |           the cursor past it] --> next
 *               |               |           round; a held database's write
 *               |               |           goes there unsent (replay_held.c
 *               |               |           tries it beside the rounds)
 *               |               |   (404 database, create: CREATE --> SEND)
 *               |               |--dead---> coalesced? SEND batch by batch
 *               |               |           (isolate.upto); else COMMIT
 *               |               |           [pool: dead-letter] --> next round
 *               |               '--413----> coalesced? isolate; else SEND the
 *               |                           halves (pieces); a piece of one
 *               |                           line still refused: COMMIT (part)
 *               '-- paused, or relayctl changed the queue: go_idle
 *
 *   Every way into SEND passes the buckets (replay_send_current): a
 *   retry, a 413 piece, a batch of an isolated group each take their own
 *   tokens. Statements go unpaced. No limit set: THROTTLE is never entered.
 *
 *   storage: a READ or COMMIT that fails --> BACKOFF --> the same again
 *            (redo); an ACK that fails --> again on ack.timer, and a
 *            finished round waits in ACKWAIT (nothing new is sent) until
 *            an ack commits. Shown as REPLAY_STORAGE meanwhile.
 *
 * A queue operation that fails is never left behind (issue 11: a failed
 * ack used to be forgotten, the worker went idle showing "up", and only
 * the next write woke it): what could be sent meanwhile could not be
 * recorded either. will_wake() names what may wake a worker; every entry
 * point checks it before returning to the loop.
 *
 * Where things are: the state and its groups in replay_internal.h (one
 * struct per concern: read, job, redo, ack, prefetch, send, pieces,
 * isolate, health); this file holds the entry points, the state, the
 * health, the timers and the step from one round to the next;
 * replay_send.c the requests and their outcomes; replay_queue.c the pool
 * jobs; replay_round.c the pure step from batches to writes.
 */
#include "relay/delivery/replay.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "relay/base/backoff.h"
#include "relay/base/log.h"
#include "relay/delivery/replay_internal.h"

/*---- the state ----*/

const char *replay_state_name(enum replay_state s)
{
	static const char *const names[] = { "idle", "read", "send", "backoff", "probe", "create", "commit",
		                             "ackwait", "throttle", "stopped" };
	return (unsigned)s < RELAY_ARRAY_SIZE(names) ? names[s] : "?";
}

#define FROM(s) (1u << (s))
#define FROM_ANY (FROM(S_NSTATES) - 1)

/*
 * The transitions allowed, by target state: the states it may be entered
 * from. Most states are entered from many: a send that cannot be built, a
 * failed queue operation or a pause may come at any step. What is ruled
 * out: leaving STOPPED; sending, committing, probing or creating from
 * IDLE (a round is always read first); a probe except after a backoff; a
 * CREATE except after a write's answer.
 */
static const unsigned allowed_from[S_NSTATES] = {
	[S_IDLE] = FROM_ANY & ~FROM(S_STOPPED),
	[S_READ] = FROM_ANY & ~FROM(S_STOPPED),
	[S_SEND] = FROM_ANY & ~FROM(S_STOPPED) & ~FROM(S_IDLE),
	[S_BACKOFF] = FROM_ANY & ~FROM(S_STOPPED),
	[S_PROBE] = FROM(S_BACKOFF),
	[S_CREATE] = FROM(S_SEND),
	[S_COMMIT] = FROM_ANY & ~FROM(S_STOPPED) & ~FROM(S_IDLE),
	[S_ACKWAIT] = FROM_ANY & ~FROM(S_STOPPED),
	[S_THROTTLE] = FROM_ANY & ~FROM(S_STOPPED) & ~FROM(S_IDLE),
	[S_STOPPED] = FROM_ANY & ~FROM(S_STOPPED),
};

/*
 * The one place the state is written. A transition the diagram does not
 * have is a bug: developer builds stop on it; a release build says so and
 * goes on (the state is still set), as check_awake does, rather than take
 * delivery down.
 */
void replay_set_state(struct replay_worker *w, enum replay_state s)
{
	enum replay_state old = w->state;
	if (!(allowed_from[s] & FROM(old))) {
		relay_log(RELAY_LOG_ERROR, "backend '%s': BUG: replay state %s -> %s", w->cfg->name,
			  replay_state_name(old), replay_state_name(s));
#ifndef NDEBUG
		relay_fatal("backend '%s': replay worker moved from state %s to %s", w->cfg->name, replay_state_name(old),
			    replay_state_name(s));
#endif
	}
	if (old != s)
		relay_log(RELAY_LOG_DEBUG, "backend '%s': %s -> %s", w->cfg->name, replay_state_name(old),
			  replay_state_name(s));
	/* The time spent waiting for tokens, counted as the wait ends. */
	if (old == S_THROTTLE && s != S_THROTTLE)
		w->stats.throttled_ms += replay_worker_throttling_ms(w);
	else if (old != S_THROTTLE && s == S_THROTTLE)
		w->rate.since_ms = uv_now(w->loop);
	w->state = s;
}

/*---- health ----*/

const char *replay_health_name(enum replay_health h)
{
	switch (h) {
	case REPLAY_UP: return "up";
	case REPLAY_RETRYING: return "retrying";
	case REPLAY_DOWN: return "down";
	case REPLAY_HOLDING: return "holding";
	case REPLAY_STORAGE: return "storage";
	}
	return "?";
}

/* What the outage lines need from the queue: a short read transaction
 * on the loop thread, at the rare moments they are written. A queue that
 * cannot be read (REPLAY_STORAGE, say) gives zeros: the lines still come. */
static void queue_figures(const struct replay_worker *w, struct outage_figures *f)
{
	struct wal_backend_stat st;
	memset(f, 0, sizeof(*f));
	if (wal_backend_stat(w->wal, w->cfg->name, &st) != 0)
		return;
	f->batches = st.pending_batches;
	f->points = st.pending_points;
	f->bytes = st.pending_bytes;
	f->held_bytes = st.held_bytes;
	f->oldest_accept_ns = st.oldest_accept_ns;
}

/* Holding and a failing queue need a person: they are logged louder. */
static enum relay_log_level outage_level(enum replay_health h)
{
	return h == REPLAY_HOLDING || h == REPLAY_STORAGE ? RELAY_LOG_ERROR : RELAY_LOG_WARN;
}

static void remind_cb(uv_timer_t *t)
{
	struct replay_worker *w = t->data;
	struct outage_figures f;
	char line[1600];
	if (w->stopping || w->health.shown == REPLAY_UP)
		return;
	queue_figures(w, &f);
	if (outage_remind(&w->health.outage, w->cfg->name, w->health.last_error, now_realtime_ns(), &f,
			  &w->health.limits, line, sizeof(line)))
		relay_log(outage_level(w->health.shown), "%s", line);
}

/* The reminders of an outage under way, every remind_ms (none when 0). */
static void start_reminders(struct replay_worker *w)
{
	uv_timer_stop(&w->health.remind_timer);
	if (w->health.remind_ms)
		uv_timer_start(&w->health.remind_timer, remind_cb, w->health.remind_ms, w->health.remind_ms);
}

/*
 * What status and /health show: a failing queue operation first (nothing
 * new is sent meanwhile, whatever the backend says), else the backend's
 * state. Each change is logged once, as a line of the outage's story
 * (outage.h), not every retry: reminders come on their own timer.
 */
void replay_publish(struct replay_worker *w)
{
	enum replay_health h = replay_storage_failing(w) ? REPLAY_STORAGE : w->health.link;
	snprintf(w->health.last_error, sizeof(w->health.last_error), "%s",
		 w->redo.kind ? w->redo.error : w->ack.failing ? w->ack.error : w->health.link_error);
	if (h == w->health.shown)
		return;
	enum replay_health old = w->health.shown;
	w->health.shown = h;
	struct outage_figures f;
	char line[1600];
	queue_figures(w, &f);
	int64_t now = now_realtime_ns();
	if (h == REPLAY_UP) {
		uv_timer_stop(&w->health.remind_timer);
		/* Where the backlog ends: the sequence the next batch will get
		 * (replay_check_drained). */
		struct wal_stat ws;
		uint64_t drain_to = wal_stat(w->wal, &ws) == 0 ? ws.next_seq : 0;
		if (outage_end(&w->health.outage, w->cfg->name, now, &f, drain_to, line, sizeof(line)))
			relay_log(RELAY_LOG_NOTICE, "%s", line);
		return;
	}
	outage_begin(&w->health.outage, w->cfg->name, h, w->health.last_error, now, &f, line, sizeof(line));
	relay_log(outage_level(h), "%s", line);
	if (old == REPLAY_UP)
		start_reminders(w);
}

/* The backlog an outage left is delivered when delivery has gone past
 * its end (read.from, the next batch to read, beyond the last sequence
 * given out when the backend came back), or a read found nothing left
 * (empty: its batches may all have been other backends'). */
void replay_check_drained(struct replay_worker *w, int empty)
{
	const struct outage *o = &w->health.outage;
	char line[300];
	if (!o->draining || w->health.shown != REPLAY_UP)
		return;
	if (!empty && !(w->read.from && o->drain_to && w->read.from >= o->drain_to))
		return;
	if (outage_drained(&w->health.outage, w->cfg->name, now_realtime_ns(), line, sizeof(line)))
		relay_log(RELAY_LOG_NOTICE, "%s", line);
}

void replay_set_outage_log(struct replay_worker *w, uint64_t reminder_ms, uint64_t max_bytes, uint64_t max_age_ms)
{
	w->health.limits.max_bytes = max_bytes;
	w->health.limits.max_age_ms = max_age_ms;
	if (reminder_ms == w->health.remind_ms)
		return;
	w->health.remind_ms = reminder_ms;
	if (!w->stopping && w->health.shown != REPLAY_UP)
		start_reminders(w);
}

struct replay_handover *replay_handover_take(const struct replay_worker *w)
{
	struct replay_handover *h = xcalloc(1, sizeof(*h));
	h->link = w->health.link;
	memcpy(h->link_error, w->health.link_error, sizeof(h->link_error));
	h->outage = w->health.outage;
	h->last_delivery_ns = w->health.last_delivery_ns;
	return h;
}

void replay_handover_give(struct replay_worker *w, struct replay_handover *h)
{
	if (!h)
		return;
	w->health.outage = h->outage;
	if (!w->health.last_delivery_ns)
		w->health.last_delivery_ns = h->last_delivery_ns;
	/* Shown as it was, without a line: the outage goes on. The new
	 * worker's first answer moves it (replay_set_link): "up again
	 * after" the whole outage, or nothing new. */
	if (h->link != REPLAY_UP && !replay_storage_failing(w)) {
		w->health.link = h->link;
		memcpy(w->health.link_error, h->link_error, sizeof(w->health.link_error));
		w->health.link_error[sizeof(w->health.link_error) - 1] = '\0';
		snprintf(w->health.last_error, sizeof(w->health.last_error), "%s", w->health.link_error);
		w->health.shown = h->link;
		start_reminders(w);
	}
	free(h);
}

/* The backend's state, from its answers (reason: why, or NULL to keep
 * the last one). */
void replay_set_link(struct replay_worker *w, enum replay_health h, const char *reason)
{
	if (reason)
		snprintf(w->health.link_error, sizeof(w->health.link_error), "%s", reason);
	if (h == REPLAY_UP && w->health.link != REPLAY_UP)
		w->health.link_error[0] = '\0';
	w->health.link = h;
	replay_publish(w);
}

/*---- timers ----*/

static uint64_t rnd64(void)
{
	/* Jitter only needs to differ between relays and retries. */
	static uint64_t x;
	if (!x)
		x = now_mono_ns() ^ ((uint64_t)uv_os_getpid() << 32) ^ 0x9e3779b97f4a7c15ULL;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return x;
}

uint64_t replay_delay_after(const struct replay_worker *w, uint32_t attempts, uint64_t floor_ms,
                            uint64_t retry_after_s)
{
	const struct relay_backend_config *cfg = w->cfg;
	uint64_t min = cfg->retry_min_ms > floor_ms ? cfg->retry_min_ms : floor_ms;
	uint64_t max = cfg->retry_max_ms > min ? cfg->retry_max_ms : min;
	uint64_t d = backoff_full_jitter(attempts ? attempts - 1 : 0, min, max, min, rnd64());
	if (retry_after_s) {
		/* Honour the server's Retry-After within [min, max]: capped so that
		 * a silly value cannot park the queue for hours, and saturated, so
		 * that a huge one (2^61 s is 0 ms once multiplied in 64 bits) means
		 * the cap rather than no wait at all. Never below min: the hold
		 * floor and retry_min keep a hostile backend from making us spin. */
		uint64_t ra = retry_after_s > max / 1000 ? max : retry_after_s * 1000;
		d = ra < min ? min : ra > max ? max : ra;
	}
	return d;
}

/* What the backoff timer does when it fires (and relayctl retry). */
static void timer_fired(struct replay_worker *w)
{
	if (w->stopping)
		return;
	if (w->paused) {
		/* Inside a 413 split the batch and its remaining pieces are
		 * kept (held: no timer; relayctl resume goes on with them), so
		 * that a piece already dead-lettered is not dead-lettered
		 * again after a re-read. Otherwise drop what is held. */
		if (!replay_splitting(w))
			replay_go_idle(w);
		return;
	}
	if (w->redo.kind) {
		replay_redo_job(w); /* a failed queue read or dead-letter */
		return;
	}
	if (w->cur->nbatches == 0) {
		replay_next_round(w); /* nothing held: read */
		return;
	}
	if (w->health.link == REPLAY_DOWN) {
		replay_probe(w);
		return;
	}
	replay_send_current(w);
}

static void timer_cb(uv_timer_t *t)
{
	struct replay_worker *w = t->data;
	timer_fired(w);
	replay_check_awake(w);
}

void replay_schedule(struct replay_worker *w, uint64_t delay_ms)
{
	replay_set_state(w, S_BACKOFF);
	uv_timer_start(&w->timer, timer_cb, delay_ms, 0);
}

/* The tokens are there (or should be): the write again, which takes
 * them. Paused meanwhile: as a backoff's end would be (a 413 split is
 * kept, held in BACKOFF until relayctl resume). */
static void throttle_cb(uv_timer_t *t)
{
	struct replay_worker *w = t->data;
	if (!w->stopping) {
		if (!w->paused)
			replay_send_current(w);
		else if (replay_splitting(w))
			replay_set_state(w, S_BACKOFF);
		else
			replay_go_idle(w);
	}
	replay_check_awake(w);
}

void replay_throttle(struct replay_worker *w, uint64_t delay_ms)
{
	replay_set_state(w, S_THROTTLE);
	uv_timer_start(&w->timer, throttle_cb, delay_ms, 0);
}

uint64_t replay_worker_throttling_ms(const struct replay_worker *w)
{
	uint64_t now = uv_now(w->loop);
	return replay_throttled(w) && now > w->rate.since_ms ? now - w->rate.since_ms : 0;
}

void replay_set_rate(struct replay_worker *w, uint64_t points_per_s, uint64_t bytes_per_s, uint64_t burst_ms)
{
	uint64_t now = uv_now(w->loop);
	if (points_per_s == w->rate.points_per_s && bytes_per_s == w->rate.bytes_per_s && burst_ms == w->rate.burst_ms)
		return;
	relay_log(RELAY_LOG_NOTICE, "backend '%s': max_rate %" PRIu64 " points/s, max_rate_bytes %" PRIu64
		  " bytes/s, rate_burst %" PRIu64 " ms (0: no limit)", w->cfg->name, points_per_s, bytes_per_s, burst_ms);
	w->rate.points_per_s = points_per_s;
	w->rate.bytes_per_s = bytes_per_s;
	w->rate.burst_ms = burst_ms;
	token_bucket_set(&w->rate.points, points_per_s, burst_ms, now);
	token_bucket_set(&w->rate.bytes, bytes_per_s, burst_ms, now);
	if (!w->stopping && replay_throttled(w) && replay_timer_waiting(w)) {
		/* The wait was for the old rate: weigh the write again. */
		uv_timer_stop(&w->timer);
		replay_send_current(w);
	}
	replay_check_awake(w);
}

/*---- from one round to the next ----*/

/*
 * The loop thread's side of starting a round in cur: the per-write state
 * (413 pieces, attempts) starts afresh, and an isolation window that cur
 * has left is closed.
 */
void replay_begin_round(struct replay_worker *w)
{
	if (w->isolate.upto && !replay_isolating(w, w->cur->batches[0].seq))
		w->isolate.upto = 0;
	w->pieces.n = 0;
	w->pieces.fit = 0;
	w->send.attempts = 0;
	w->send.db_created = 0;
}

/*
 * cur is finished (delivered or dead-lettered up to read.from - 1): start
 * the next round. The prefetched round is used only if it begins exactly
 * where cur ended (prefetch.from == read.from): everything before it is
 * then delivered (2xx) or dead-lettered, so sending it now keeps queue
 * order, and a live write still never overtakes the backlog. A prefetch
 * from before a retry, hold or dead-letter of cur is still right as long
 * as it starts there: a batch's content never changes while it is
 * pending, and only this worker moves the cursor. A prefetch that starts
 * before read.from (a coalesced group reached past it) is stale and
 * dropped; one that starts after it (cur was cut into single batches, or
 * 413 pieces) is kept for when read.from gets there. An empty prefetch is
 * never trusted: new batches may have been committed since it read. Nor
 * is one that begins inside an isolation window: it was coalesced, and
 * the window sends one batch at a time.
 */
void replay_next_round(struct replay_worker *w)
{
	if (w->stopping)
		return;
	relay_assert(replay_between_rounds(w));
	replay_check_drained(w, 0);
	if (w->paused) {
		/* Paused while the last write was out: it is answered and
		 * recorded; nothing more goes until relayctl resume. */
		replay_go_idle(w);
		return;
	}
	if (w->ack.failing) {
		/* What was delivered cannot be recorded: sending more would
		 * only add to what a restart sends again. The ack's timer
		 * (or its commit in flight) goes on from here. */
		replay_set_state(w, S_ACKWAIT);
		return;
	}
	if (w->prefetch.busy) {
		/* Wait for it rather than read the same batches twice. */
		w->prefetch.wanted = 1;
		replay_set_state(w, S_READ);
		return;
	}
	if (replay_prefetch_useless(w)) {
		w->prefetch.ready = 0;
		replay_round_release(w->prefetch.round);
	}
	if (replay_prefetch_fits(w)) {
		struct replay_round *t = w->cur;
		w->cur = w->prefetch.round;
		w->prefetch.round = t;
		w->prefetch.ready = 0;
		replay_job_ok(w); /* the next round is read: a failed read is over */
		replay_begin_round(w);
		replay_send_current(w);
		/* The old round's batches are freed on the pool by the next
		 * prefetch; free them here if there is none. */
		replay_start_prefetch(w);
		if (!w->prefetch.busy)
			replay_round_release(w->prefetch.round);
		return;
	}
	replay_start_job(w, WK_READ);
}

/* Batches up to seq are delivered: record it, and go on with the next. */
void replay_delivered_upto(struct replay_worker *w, uint64_t seq)
{
	if (seq > w->ack.want)
		w->ack.want = seq;
	w->read.from = seq + 1;
	replay_start_ack(w);
	replay_next_round(w);
}

/* Read the queue on from read.from, unless no delivery can be recorded
 * (then the ack, once it commits, goes on: ACKWAIT). */
void replay_read_again(struct replay_worker *w)
{
	if (w->ack.failing)
		replay_set_state(w, S_ACKWAIT);
	else
		replay_start_job(w, WK_READ);
}

/*
 * Nothing in flight any more (or only a prefetch, marked stale): drop
 * what the worker holds and wait. Used for a pause, and before a
 * refresh reads the queue again.
 */
void replay_go_idle(struct replay_worker *w)
{
	uv_timer_stop(&w->timer);
	replay_round_release(w->cur);
	if (w->prefetch.busy)
		w->prefetch.stale = 1;
	else
		replay_round_release(w->prefetch.round);
	w->prefetch.ready = 0;
	w->prefetch.wanted = 0;
	w->read.stale = 0;
	w->isolate.upto = 0;
	w->pieces.n = 0;
	w->send.attempts = 0;
	/* A failed read or dead-letter is dropped with the rest: read.from
	 * is where the read from scratch starts, the batch of a dead-letter
	 * that did not commit included. */
	w->redo.kind = 0;
	w->redo.attempts = 0;
	replay_set_state(w, S_IDLE);
	replay_publish(w);
}

/*
 * Whether something is bound to wake the worker: a job on the thread
 * pool, a request in flight (each has its timeout), a timer, the next
 * commit (idle: what was pending is read, every delivery is recorded or
 * being recorded), or relayctl resume (paused). A worker for which none
 * of these holds waits for ever, showing whatever it showed last.
 */
static int will_wake(const struct replay_worker *w)
{
	if (w->stopping || w->state == S_STOPPED)
		return 1;
	/* A delivery not recorded: its commit runs, or its timer does. */
	if (replay_ack_orphaned(w))
		return 0;
	switch (w->state) {
	case S_IDLE:
		return !w->redo.kind;
	case S_READ:
		return w->job.busy || (w->prefetch.busy && w->prefetch.wanted);
	case S_COMMIT:
		return w->job.busy;
	case S_SEND:
		return replay_request_in_flight(w);
	case S_PROBE:
	case S_CREATE:
		return w->send.http.in_request;
	case S_BACKOFF:
		/* paused: a 413 split held until relayctl resume */
		return replay_timer_waiting(w) || w->paused;
	case S_ACKWAIT:
		return w->ack.failing && (w->ack.busy || uv_is_active((const uv_handle_t *)&w->ack.timer));
	case S_THROTTLE:
		return replay_timer_waiting(w);
	case S_STOPPED:
	case S_NSTATES:
		break;
	}
	return 0;
}

/*
 * Called where the worker returns to the loop (every callback and entry
 * point). Developer builds stop on a worker nothing will wake; a release
 * build says so and reads the queue again after a while instead of
 * leaving delivery silently stopped.
 */
void replay_check_awake(struct replay_worker *w)
{
	if (will_wake(w))
		return;
	relay_log(RELAY_LOG_ERROR,
		  "backend '%s': BUG: delivery has nothing to wake it (state %s, %" PRIu64 " delivered, %" PRIu64
		  " recorded): starting again in 1 s", w->cfg->name, replay_state_name(w->state), w->ack.want,
		  w->ack.done);
#ifndef NDEBUG
	relay_fatal("backend '%s': replay worker in state %s with nothing to wake it", w->cfg->name,
		    replay_state_name(w->state));
#endif
	if (replay_ack_orphaned(w))
		uv_timer_start(&w->ack.timer, replay_ack_timer_cb, REPLAY_HOLD_MIN_MS, 0);
	if (!will_wake(w)) {
		replay_go_idle(w);
		if (!w->paused)
			replay_schedule(w, REPLAY_HOLD_MIN_MS);
	}
}

/*---- TLS ----*/

/*
 * Make the backend's client TLS context from its keys and hand it to every
 * HTTP client of the worker (they take their own references; connections
 * open keep the old one until they close). Made anew at every start and
 * reload, never kept across them: a CA file or client certificate replaced
 * on disk takes effect at the next SIGHUP even when the keys are the same.
 * A context that cannot be made holds the backend rather than refusing the
 * reload: the file is the operator's to fix, the other backends and the
 * listener must not wait for it, and the message is shown where a hold is
 * (log, relayctl status, /health).
 */
static void make_tls(struct replay_worker *w)
{
	const struct relay_backend_config *b = w->cfg;
	struct net_tls_client_opts o;
	struct net_tls_ctx *ctx = NULL;
	char err[512], msg[700] = "";
	struct stat st;

	if (!b->tls)
		return;
	memset(&o, 0, sizeof(o));
	/* tls_ca is a file or a hashed directory: which, the disk says. */
	if (b->tls_ca && stat(b->tls_ca, &st) == 0 && S_ISDIR(st.st_mode))
		o.ca_dir = b->tls_ca;
	else
		o.ca_file = b->tls_ca;
	o.cert_file = b->tls_cert;
	o.key_file = b->tls_key;
	o.min_version = b->tls_min_version == RELAY_TLS_1_3 ? NET_TLS_1_3 : NET_TLS_1_2;
	o.insecure_skip_verify = b->insecure_skip_verify;
	if (net_tls_client_ctx_new(&o, &ctx, err, sizeof(err)) != 0) {
		ctx = NULL;
		snprintf(msg, sizeof(msg), "cannot set up TLS: %s; fix tls_ca, tls_cert or tls_key (or the file) "
			 "and reload (SIGHUP)", err);
		relay_log(RELAY_LOG_ERROR, "backend '%s': %s; its queue is held", b->name, msg);
	}
	if (b->insecure_skip_verify)
		relay_log(RELAY_LOG_WARN, "backend '%s': insecure_skip_verify is set: %s's certificate is not verified, "
			  "so anyone on the path can read and change what is sent; set tls_ca instead", b->name, b->host);
	net_tls_ctx_unref(w->tls);
	w->tls = ctx ? net_tls_ctx_ref(ctx) : NULL;
	http_client_set_tls(&w->send.http, ctx, b->tls_server_name, msg);
	for (int i = 0; i < w->nlanes; i++)
		http_client_set_tls(&w->lanes[i].http, ctx, b->tls_server_name, msg);
	http_client_set_tls(&w->held.http, ctx, b->tls_server_name, msg);
	net_tls_ctx_unref(ctx);
}

struct net_tls_ctx *replay_worker_tls(const struct replay_worker *w)
{
	return w->tls;
}

void replay_reload_tls(struct replay_worker *w)
{
	if (w->stopping || !w->cfg->tls)
		return;
	make_tls(w);
	/* Fixed by this reload, maybe (a CA, a certificate): try now rather
	 * than after the hold's backoff. */
	if (!w->paused && w->state == S_BACKOFF && replay_timer_waiting(w) && w->health.link != REPLAY_UP) {
		uv_timer_stop(&w->timer);
		timer_fired(w);
	}
	replay_held_retry_now(w);
	replay_check_awake(w);
}

/*---- entry points ----*/

struct replay_worker *replay_start(uv_loop_t *loop, struct wal *wal, const struct relay_backend_config *cfg,
                                   int id)
{
	struct replay_worker *w = xcalloc(1, sizeof(*w));
	w->loop = loop;
	w->wal = wal;
	w->cfg = cfg;
	w->id = id;
	w->cur = &w->rounds[0];
	w->prefetch.round = &w->rounds[1];
	replay_stats_init(&w->stats);
	http_client_init(&w->send.http, loop, cfg->host, cfg->port, cfg->connect_timeout_ms, cfg->timeout_ms);
	uv_timer_init(loop, &w->timer);
	w->timer.data = w;
	uv_timer_init(loop, &w->ack.timer);
	w->ack.timer.data = w;
	uv_timer_init(loop, &w->health.remind_timer);
	w->health.remind_timer.data = w;
	w->health.limits.max_bytes = cfg->max_bytes;
	w->health.limits.max_age_ms = cfg->max_age_ms;
	w->handles = 4;
	w->nlanes = cfg->parallel > 1 ? (int)(cfg->parallel > REPLAY_MAX_LANES ? REPLAY_MAX_LANES : cfg->parallel) : 0;
	if (w->nlanes) {
		w->lanes = xcalloc((size_t)w->nlanes, sizeof(*w->lanes));
		for (int i = 0; i < w->nlanes; i++) {
			w->lanes[i].w = w;
			http_client_init(&w->lanes[i].http, loop, cfg->host, cfg->port, cfg->connect_timeout_ms,
					 cfg->timeout_ms);
		}
		w->handles += w->nlanes;
	}
	w->rate.points_per_s = cfg->max_rate;
	w->rate.bytes_per_s = cfg->max_rate_bytes;
	w->rate.burst_ms = cfg->rate_burst_ms;
	token_bucket_init(&w->rate.points, cfg->max_rate, cfg->rate_burst_ms, uv_now(loop));
	token_bucket_init(&w->rate.bytes, cfg->max_rate_bytes, cfg->rate_burst_ms, uv_now(loop));
	replay_held_init(w);
	make_tls(w);
	w->state = S_IDLE; /* the first state: not a transition */
	struct wal_backend_stat st;
	if (wal_backend_stat(wal, cfg->name, &st) == 0 && st.paused) {
		/* relayctl pause survives restarts: the flag is in the queue. */
		w->paused = 1;
		relay_log(RELAY_LOG_NOTICE, "backend '%s' is paused: %" PRIu64 " %s (relayctl resume %s)",
			  cfg->name, st.pending_batches, st.pending_batches == 1 ? "batch waits" : "batches wait", cfg->name);
	} else {
		/* (A stat that fails, on a record it cannot decode say, leaves
		 * the read to fail the same way: shown and retried.) */
		replay_start_job(w, WK_READ);
	}
	replay_held_kick(w);
	replay_check_awake(w);
	return w;
}

void replay_notify(struct replay_worker *w)
{
	if (w->stopping || w->paused)
		return;
	if (w->state == S_IDLE) {
		replay_read_again(w);
	} else {
		w->read.wake = 1;
		/* A prefetch that found nothing while a round is in flight
		 * looks again, now that there is something to find. */
		if (w->state == S_SEND && w->prefetch.ready && !w->prefetch.round->nbatches)
			replay_start_prefetch(w);
	}
	replay_check_awake(w);
}

void replay_refresh(struct replay_worker *w)
{
	struct wal_backend_stat st;
	if (w->stopping)
		return;
	int rc = wal_backend_stat(w->wal, w->cfg->name, &st);
	if (rc) {
		/* The queue changed all the same: read it again below, with
		 * the pause flag as it was. */
		relay_log(RELAY_LOG_WARN, "backend '%s': cannot read its queue's figures (%s): pause flag unchanged",
			  w->cfg->name, wal_strerror(rc));
	} else {
		if (st.paused != w->paused)
			relay_log(RELAY_LOG_NOTICE, "backend '%s' %s by relayctl (%" PRIu64 " %s pending)",
				  w->cfg->name, st.paused ? "paused" : "resumed", st.pending_batches,
				  relay_plural(st.pending_batches, "batch", "batches"));
		w->paused = st.paused;
	}
	replay_held_refresh(w);
	switch (w->state) {
	case S_THROTTLE:
		/* Nothing in flight, like a backoff; a 413 split is kept: held
		 * in BACKOFF while paused, or it goes on waiting for tokens. */
		if (replay_splitting(w)) {
			if (w->paused) {
				uv_timer_stop(&w->timer);
				replay_set_state(w, S_BACKOFF);
			} else {
				w->read.wake = 1;
			}
			break;
		}
		replay_go_idle(w);
		if (!w->paused)
			replay_read_again(w);
		break;
	case S_BACKOFF:
		if (replay_splitting(w)) {
			/* A 413 split is under way: keep the batch and its
			 * remaining pieces (a piece already dead-lettered must not
			 * be again). Paused: held, no timer; resumed from held: the
			 * next piece goes now (or its dead-letter, when that is
			 * what failed). */
			if (w->paused)
				uv_timer_stop(&w->timer);
			else if (!replay_timer_waiting(w))
				timer_fired(w);
			else
				w->read.wake = 1;
			break;
		}
		/* fall through */
	case S_IDLE:
	case S_ACKWAIT:
		/* Nothing in flight: what the worker holds may have been purged
		 * or dropped; read the queue again from its cursor (wal_read
		 * never returns a batch below it). */
		replay_go_idle(w);
		if (!w->paused)
			replay_read_again(w);
		break;
	default:
		/* A write, a probe or a queue update is in flight: it ends the
		 * ordinary way, and the round after it is read afresh (or, when
		 * paused, not at all); a queue read in flight is read again. A
		 * late ack or dead-letter of a batch purged meanwhile is a no-op
		 * in wal. */
		w->read.wake = 1;
		if (w->job.busy && w->job.kind == WK_READ)
			w->read.stale = 1;
		if (w->prefetch.busy)
			w->prefetch.stale = 1;
		else if (w->prefetch.ready) {
			w->prefetch.ready = 0;
			replay_round_release(w->prefetch.round);
		}
		break;
	}
	replay_check_awake(w);
}

int replay_retry_now(struct replay_worker *w)
{
	int done = -1;
	if (w->stopping)
		return -1;
	if (uv_is_active((uv_handle_t *)&w->ack.timer)) {
		/* Recording a delivery sends nothing: paused or not. */
		relay_log(RELAY_LOG_NOTICE, "backend '%s': recording its deliveries again now (relayctl retry)",
			  w->cfg->name);
		replay_start_ack(w);
		done = 0;
	}
	if (!w->paused && w->state == S_BACKOFF && replay_timer_waiting(w)) {
		uv_timer_stop(&w->timer);
		relay_log(RELAY_LOG_NOTICE, "backend '%s': retrying now (relayctl retry)", w->cfg->name);
		timer_fired(w);
		done = 0;
	}
	if (replay_held_retry_now(w) == 0)
		done = 0;
	replay_check_awake(w);
	return done;
}

/* The head_seq, attempts and next_attempt_ms of a view (replay.h). */
static void replay_status(const struct replay_worker *w, uint64_t *head_seq, uint32_t *attempts, int64_t *next_ms)
{
	const uv_timer_t *t = &w->timer;
	/* While a queue read or update runs on the pool, cur is the pool's:
	 * no batch to name then. */
	*head_seq = !w->job.busy && w->cur->nbatches ? w->cur->batches[0].seq : 0;
	*attempts = w->send.attempts;
	if (w->redo.kind) {
		/* A failed read has no batch but where it reads from. */
		if (!*head_seq && w->redo.kind - 1 == WK_READ)
			*head_seq = w->read.from;
		*attempts = w->redo.attempts;
	} else if (w->ack.failing) {
		*head_seq = w->ack.inflight;
		*attempts = w->ack.attempts;
		t = &w->ack.timer;
	}
	*next_ms = -1;
	if (uv_is_active((const uv_handle_t *)t) && (t == &w->ack.timer || w->state == S_BACKOFF))
		*next_ms = (int64_t)uv_timer_get_due_in(t);
	else if ((w->ack.failing && w->ack.busy) || (w->redo.kind && w->job.busy))
		*next_ms = 0; /* the failed operation is being tried again right now */
}

void replay_worker_view(const struct replay_worker *w, struct replay_view *v)
{
	memset(v, 0, sizeof(*v));
	v->health = w->health.shown;
	v->paused = w->paused;
	v->stats = w->stats;
	snprintf(v->last_error, sizeof(v->last_error), "%s", w->health.last_error);
	v->last_delivery_ns = w->health.last_delivery_ns;
	replay_status(w, &v->head_seq, &v->attempts, &v->next_attempt_ms);
	v->stats.throttled_ms += replay_worker_throttling_ms(w);
	v->max_rate = w->rate.points_per_s;
	v->max_rate_bytes = w->rate.bytes_per_s;
	v->rate_burst_ms = w->rate.burst_ms;
	v->throttled = replay_throttled(w);
}

/*---- stopping ----*/

void replay_finish_stop(struct replay_worker *w)
{
	if (w->handles || w->job.busy || w->ack.busy || w->prefetch.busy || w->held.busy)
		return;
	replay_held_free(w);
	for (size_t k = 0; k < RELAY_ARRAY_SIZE(w->rounds); k++)
		replay_round_free(&w->rounds[k]);
	rbuf_release(&w->send.fail_body);
	free(w->lanes);
	w->lanes = NULL;
	rbuf_release(&w->send.target);
	rbuf_release(&w->send.headers);
	rbuf_release(&w->send.form);
	replay_set_state(w, S_STOPPED);
	/* Last: the callback may hand w to whoever frees it. */
	if (w->stopped_cb)
		w->stopped_cb(w, w->stopped_arg);
}

static void http_closed(struct http_client *c)
{
	struct replay_worker *w = relay_container_of(c, struct replay_worker, send.http);
	w->handles--;
	replay_finish_stop(w);
}

static void lane_closed(struct http_client *c)
{
	struct replay_lane *l = relay_container_of(c, struct replay_lane, http);
	l->w->handles--;
	replay_finish_stop(l->w);
}

static void timer_closed(uv_handle_t *h)
{
	struct replay_worker *w = h->data;
	w->handles--;
	replay_finish_stop(w);
}

void replay_stop(struct replay_worker *w, void (*cb)(struct replay_worker *w, void *arg), void *arg)
{
	w->stopping = 1;
	w->stopped_cb = cb;
	w->stopped_arg = arg;
	uv_timer_stop(&w->timer);
	uv_close((uv_handle_t *)&w->timer, timer_closed);
	uv_timer_stop(&w->ack.timer);
	uv_close((uv_handle_t *)&w->ack.timer, timer_closed);
	uv_timer_stop(&w->health.remind_timer);
	uv_close((uv_handle_t *)&w->health.remind_timer, timer_closed);
	http_client_close(&w->send.http, http_closed);
	for (int i = 0; i < w->nlanes; i++)
		http_client_close(&w->lanes[i].http, lane_closed);
	replay_held_stop(w);
}

const struct replay_stats *replay_worker_stats(const struct replay_worker *w)
{
	return &w->stats;
}

void replay_free(struct replay_worker *w)
{
	if (!w)
		return;
	relay_assert(w->state == S_STOPPED);
	net_tls_ctx_unref(w->tls);
	free(w);
}
