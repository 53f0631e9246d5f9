/*
 * replay_queue: the worker's queue operations, on the thread pool because
 * they read or commit to disk. The job (a read into cur, a dead-letter),
 * the ack (cumulative, beside the next write) and the prefetch (the next
 * round, read and prepared while cur is in flight). No LMDB transaction
 * outlives its wal_* call: what is read is copied out. A job that fails is
 * shown (REPLAY_STORAGE) and done again after a backoff (redo); an ack
 * that fails is tried again on its own timer. State in replay_internal.h.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "relay/base/log.h"
#include "relay/delivery/replay_internal.h"

/*---- the job: reads and dead-letters ----*/

static void job_cb(uv_work_t *req)
{
	struct replay_worker *w = req->data;
	struct replay_round *r = w->cur;
	int64_t now = now_realtime_ns();
	const struct wal_batch *b0 = r->nbatches ? &r->batches[0] : NULL;
	w->job.rc = 0;
	switch (w->job.kind) {
	case WK_DEAD:
		w->job.rc = wal_dead_letter(w->wal, w->id, w->job.seq, NULL, 0, 0, w->job.status, w->job.dead_msg,
					    w->job.attempts, now, 1);
		return;
	case WK_DEAD_PART:
		/* Known limit: for a v2 backend, a batch in minutes or hours was
		 * rescaled to seconds (replay_round_rescale); the part
		 * dead-lettered here keeps those seconds while the record keeps
		 * the batch's own precision. Only a 413-split single line of
		 * such a batch gets here; relayctl shows the record as it is. */
		w->job.rc = wal_dead_letter(w->wal, w->id, b0->seq, b0->body + w->job.off, w->job.len, w->job.lines,
					    w->job.status, w->job.dead_msg, w->job.attempts, now, 0);
		return;
	case WK_HOLD: {
		uint64_t seqs[REPLAY_READ_MAX];
		for (size_t i = 0; i < r->group_n; i++)
			seqs[i] = r->batches[i].seq;
		w->job.rc = wal_hold(w->wal, w->id, seqs, r->group_n);
		return;
	}
	case WK_READ:
		break;
	}
	replay_round_release(r);
	/* Copy out about one payload's worth: enough to coalesce, little
	 * enough to stay small in memory. */
	size_t max_bytes = w->cfg->batch_max_bytes;
	w->job.quarantined = 0;
	w->job.rc = wal_read(w->wal, w->id, w->read.from, REPLAY_READ_MAX, max_bytes, r->batches, &r->nbatches);
	/* A record that does not decode never stops the queue: it is moved
	 * to the dead-letter queue, marked corrupt, and the read goes on
	 * (a bounded number of times per read: a store damaged all over is
	 * shown as a failing read and retried with backoff). WAL_ENOTFOUND:
	 * another backend's worker moved it first. */
	for (int i = 0; w->job.rc == WAL_ECORRUPT && i < REPLAY_QUARANTINE_MAX; i++) {
		uint64_t seq = 0;
		int qrc = wal_quarantine(w->wal, w->id, w->read.from, &seq, w->job.qwhy, sizeof(w->job.qwhy));
		if (qrc && qrc != WAL_ENOTFOUND) {
			w->job.rc = qrc;
			break;
		}
		if (qrc == 0) {
			w->job.quarantined++;
			w->job.qseq = seq;
		}
		w->job.rc = wal_read(w->wal, w->id, w->read.from, REPLAY_READ_MAX, max_bytes, r->batches, &r->nbatches);
	}
	if (w->job.rc == 0)
		replay_round_rescale(r, w->cfg);
	/* Build (and compress) the payload here, off the loop thread. The
	 * loop thread leaves isolate.upto alone while this runs: no write is
	 * in flight. */
	if (w->job.rc == 0 && r->nbatches)
		replay_round_prepare(r, w->cfg, w->nlanes, replay_isolating(w, r->batches[0].seq), 1);
}

/* A queue operation of the worker succeeded: one that failed is over. */
void replay_job_ok(struct replay_worker *w)
{
	if (!w->redo.kind)
		return;
	w->redo.kind = 0;
	w->redo.attempts = 0;
	replay_publish(w);
}

/*
 * A queue read or dead-letter failed (disk full, I/O error, a record that
 * cannot be decoded): nothing was lost, the batches are still pending.
 * Show it and do it again after a backoff (replay_redo_job), with
 * everything it needs kept: a dead-letter keeps cur (and the 413 pieces);
 * read.from stays where a read from scratch (a pause, a refresh) must
 * start, so that a batch whose dead-letter did not commit is never
 * skipped.
 */
void replay_job_failed(struct replay_worker *w, enum replay_job_kind kind, int rc)
{
	struct replay_round *r = w->cur;
	const char *err = wal_strerror(rc);
	switch (kind) {
	case WK_READ:
		replay_round_release(r);
		w->read.stale = 0; /* it is read again anyway */
		if (w->read.from)
			snprintf(w->redo.error, sizeof(w->redo.error), "cannot read the queue from batch %" PRIu64 ": %s",
				 w->read.from, err);
		else
			snprintf(w->redo.error, sizeof(w->redo.error), "cannot read the queue: %s", err);
		break;
	case WK_DEAD:
		w->read.from = w->job.seq;
		snprintf(w->redo.error, sizeof(w->redo.error), "cannot dead-letter batch %" PRIu64 ": %s", w->job.seq,
			 err);
		break;
	case WK_DEAD_PART:
		snprintf(w->redo.error, sizeof(w->redo.error), "cannot dead-letter %u %s of batch %" PRIu64 ": %s",
			 w->job.lines, relay_plural(w->job.lines, "line", "lines"), r->batches[0].seq, err);
		break;
	case WK_HOLD:
		w->read.from = r->batches[0].seq;
		snprintf(w->redo.error, sizeof(w->redo.error), "cannot hold batch %" PRIu64 " of database '%s': %s",
			 r->batches[0].seq, r->batches[0].db, err);
		break;
	}
	if (!w->redo.kind)
		w->redo.attempts = 0;
	w->redo.kind = (int)kind + 1;
	w->redo.attempts++;
	replay_publish(w);
	uint64_t d = replay_delay_after(w, w->redo.attempts, REPLAY_HOLD_MIN_MS, 0);
	relay_log(RELAY_LOG_DEBUG, "backend '%s': %s (attempt %u), next in %" PRIu64 " ms", w->cfg->name,
		  w->redo.error, w->redo.attempts, d);
	replay_schedule(w, d);
}

/* The backoff after job_failed is over: do that operation again. */
void replay_redo_job(struct replay_worker *w)
{
	switch ((enum replay_job_kind)(w->redo.kind - 1)) {
	case WK_READ:
		replay_next_round(w); /* the prefetch, if it starts there, or a read */
		return;
	case WK_DEAD:
		w->read.from = w->job.seq + 1;
		replay_start_job(w, WK_DEAD);
		return;
	case WK_DEAD_PART:
		replay_start_job(w, WK_DEAD_PART);
		return;
	case WK_HOLD:
		w->read.from = replay_round_last_seq(w->cur) + 1;
		replay_start_job(w, WK_HOLD);
		return;
	}
	relay_assert(!"unknown queue operation to redo");
}

static void after_job(struct replay_worker *w, int status)
{
	struct replay_round *r = w->cur;
	enum replay_job_kind kind = w->job.kind;
	w->job.busy = 0;
	if (w->stopping) {
		replay_finish_stop(w);
		return;
	}
	int rc = status ? status : w->job.rc;
	if (kind == WK_READ && w->job.quarantined) {
		/* Loud: a batch that was accepted will never be delivered as
		 * it was; relayctl dlq shows its raw bytes. */
		w->stats.dead_batches += w->job.quarantined;
		w->stats.corrupt_records += w->job.quarantined;
		relay_log(RELAY_LOG_ERROR,
		          "backend '%s': %u corrupt queue %s moved to the dead-letter queue, the last batch %" PRIu64
		          " (%s); the queue goes on (relayctl verify, relayctl dlq list %s)",
		          w->cfg->name, w->job.quarantined, relay_plural(w->job.quarantined, "record", "records"),
		          w->job.qseq, w->job.qwhy, w->cfg->name);
		w->job.quarantined = 0;
	}
	if (rc) {
		replay_job_failed(w, kind, rc);
		return;
	}
	replay_job_ok(w);
	if (kind == WK_DEAD_PART) {
		/* The rest of the split batch goes on. */
		int left = replay_pieces_pop(&w->pieces);
		if (left && w->paused)
			replay_set_state(w, S_BACKOFF); /* held until relayctl resume */
		else if (left)
			replay_send_current(w);
		else {
			replay_count_split_done(w, &r->batches[0]);
			replay_delivered_upto(w, r->batches[0].seq);
		}
		return;
	}
	if (kind == WK_HOLD) {
		const struct wal_batch *b0 = &r->batches[0];
		uint64_t last = replay_round_last_seq(r), points = 0;
		for (size_t i = 0; i < r->group_n; i++)
			points += r->batches[i].lines;
		if (w->job.hold_new)
			relay_log(RELAY_LOG_WARN,
			          "backend \"%s\": database \"%s\" does not exist on %s; holding its %zu %s (%" PRIu64
			          " %s) while other databases flow; create it (CREATE DATABASE through relayd, or on the "
			          "server), or set on_database_not_found: create",
			          w->cfg->name, b0->db, w->cfg->url, r->group_n, relay_plural(r->group_n, "batch", "batches"),
			          points, relay_plural(points, "point", "points"));
		else
			relay_log(RELAY_LOG_DEBUG, "backend '%s': %zu more batch(es) of held database '%s' held",
				  w->cfg->name, r->group_n, b0->db);
		w->job.hold_new = 0;
		/* In the store now: its database is held (again, if the
		 * held retry released it while this hold waited for a retry),
		 * and a held read that began before this commit looks again. */
		replay_held_committed(w, b0->db);
		if (last > w->ack.done)
			w->ack.done = last; /* the hold moved the cursor past it */
		if (replay_ack_settled(w) && !w->ack.busy)
			replay_ack_recovered(w);
		replay_held_kick(w);
		replay_next_round(w);
		return;
	}
	if (kind == WK_DEAD) {
		if (w->job.seq > w->ack.done)
			w->ack.done = w->job.seq; /* the dead-letter moved the cursor past it */
		if (replay_ack_settled(w) && !w->ack.busy)
			replay_ack_recovered(w); /* ... and past every delivered batch */
		/* read.from is past the dead batch: go on from there, with the
		 * prefetched round if it starts just there. */
		replay_next_round(w);
		return;
	}
	if (w->paused) {
		replay_go_idle(w);
		return;
	}
	if (w->read.stale) {
		/* relayctl changed the queue while this read ran: what it
		 * copied out may be purged or dropped since. Read again. */
		w->read.stale = 0;
		replay_round_release(r);
		replay_start_job(w, WK_READ);
		return;
	}
	if (r->nbatches == 0) {
		replay_check_drained(w, 1); /* nothing pending: a backlog left by an outage is delivered */
		replay_set_state(w, S_IDLE);
		if (w->read.wake) {
			w->read.wake = 0;
			replay_read_again(w);
		}
		return;
	}
	w->read.wake = 0;
	replay_begin_round(w);
	replay_send_current(w);
	replay_start_prefetch(w);
}

static void after_job_cb(uv_work_t *req, int status)
{
	struct replay_worker *w = req->data;
	after_job(w, status);
	replay_check_awake(w);
}

/* Start the job: a read (S_READ) or a dead-letter (S_COMMIT). */
void replay_start_job(struct replay_worker *w, enum replay_job_kind kind)
{
	if (w->stopping)
		return;
	w->job.kind = kind;
	if (kind == WK_READ)
		w->cur->known = w->hours; /* a copy: the pool prepares the round */
	replay_set_state(w, kind == WK_READ ? S_READ : S_COMMIT);
	w->job.busy = 1;
	w->job.req.data = w;
	int rc = uv_queue_work(w->loop, &w->job.req, job_cb, after_job_cb);
	relay_assert(rc == 0);
}

/*---- acks ----*/

/*
 * Acks run beside the next write: once a write got its 2xx, the next
 * round (prefetched, or read past it) is sent while the commit that moves
 * the cursor runs on the pool. Acks are cumulative, so one in flight at a time
 * covers everything delivered so far. A crash before the ack commits sends
 * those batches again after the restart (at least once); order is kept,
 * since the next write still starts only after the previous one's 2xx.
 */
static void ack_cb(uv_work_t *req)
{
	struct replay_worker *w = req->data;
	w->ack.rc = wal_ack(w->wal, w->id, w->ack.inflight, now_realtime_ns());
}

/* An ack committed, or a dead-letter moved the cursor past every
 * delivered batch: an ack failure is over. */
void replay_ack_recovered(struct replay_worker *w)
{
	if (!w->ack.failing)
		return;
	w->ack.failing = 0;
	w->ack.attempts = 0;
	uv_timer_stop(&w->ack.timer);
	replay_publish(w);
}

void replay_ack_timer_cb(uv_timer_t *t)
{
	struct replay_worker *w = t->data;
	if (!w->stopping) {
		if (replay_ack_settled(w) && !w->ack.busy)
			replay_ack_recovered(w); /* a dead-letter recorded it meanwhile */
		else
			replay_start_ack(w);
		if (w->state == S_ACKWAIT && !w->ack.failing)
			replay_next_round(w);
	}
	replay_check_awake(w);
}

static void after_ack_cb(uv_work_t *req, int status)
{
	struct replay_worker *w = req->data;
	int rc = status ? status : w->ack.rc;
	w->ack.busy = 0;
	if (rc) {
		/* The batches were delivered; they stay pending until an ack
		 * commits (a restart meanwhile sends them again). Nothing new
		 * is sent until then (replay_next_round waits in ACKWAIT), and
		 * the ack is tried again on its own timer, paused or not: it
		 * sends nothing. */
		if (!w->ack.failing)
			w->ack.attempts = 0;
		w->ack.failing = 1;
		w->ack.attempts++;
		snprintf(w->ack.error, sizeof(w->ack.error), "cannot record delivery up to batch %" PRIu64 ": %s",
			 w->ack.inflight, wal_strerror(rc));
		replay_publish(w);
		if (!w->stopping) {
			uint64_t d = replay_delay_after(w, w->ack.attempts, REPLAY_HOLD_MIN_MS, 0);
			relay_log(RELAY_LOG_DEBUG, "backend '%s': %s (attempt %u), next in %" PRIu64 " ms", w->cfg->name,
				  w->ack.error, w->ack.attempts, d);
			uv_timer_start(&w->ack.timer, replay_ack_timer_cb, d, 0);
		}
	} else if (w->ack.inflight > w->ack.done) {
		w->ack.done = w->ack.inflight;
	}
	if (w->stopping) {
		replay_finish_stop(w);
		return;
	}
	if (rc == 0) {
		replay_ack_recovered(w);
		if (!replay_ack_settled(w))
			replay_start_ack(w); /* what was delivered meanwhile */
		if (w->state == S_ACKWAIT)
			replay_next_round(w);
	}
	replay_check_awake(w);
}

void replay_start_ack(struct replay_worker *w)
{
	if (w->ack.busy || replay_ack_settled(w))
		return;
	uv_timer_stop(&w->ack.timer); /* a failed one is tried now */
	w->ack.busy = 1;
	w->ack.inflight = w->ack.want;
	w->ack.req.data = w;
	int rc = uv_queue_work(w->loop, &w->ack.req, ack_cb, after_ack_cb);
	relay_assert(rc == 0);
}

/*---- prefetch: the next round, prepared while this one is in flight ----*/

/*
 * Runs on the pool beside the writes of cur. Touches only prefetch.round
 * (which the loop thread leaves alone while prefetch.busy) and fields
 * that do not change while it runs (prefetch.from, cfg, nlanes). No LMDB
 * transaction outlives wal_read: the batches are copies.
 */
static void prefetch_cb(uv_work_t *req)
{
	struct replay_worker *w = req->data;
	struct replay_round *r = w->prefetch.round;
	replay_round_release(r);
	w->prefetch.rc = wal_read(w->wal, w->id, w->prefetch.from, REPLAY_READ_MAX, w->cfg->batch_max_bytes,
				  r->batches, &r->nbatches);
	if (w->prefetch.rc == 0)
		replay_round_rescale(r, w->cfg);
	/* Never inside an isolation window: replay_start_prefetch runs only
	 * for a round that is not being isolated, and reads past its end. */
	if (w->prefetch.rc == 0 && r->nbatches)
		replay_round_prepare(r, w->cfg, w->nlanes, 0, 1);
}

static void after_prefetch_cb(uv_work_t *req, int status)
{
	struct replay_worker *w = req->data;
	w->prefetch.busy = 0;
	if (w->stopping) {
		replay_finish_stop(w);
		return;
	}
	/* A failed prefetch is only a missed chance: the round is read again
	 * the ordinary way, which reports and retries what fails. */
	/* A prefetch that ran while relayctl changed the queue may hold
	 * batches purged or dropped since: not trusted. */
	w->prefetch.ready = !status && !w->prefetch.rc && !w->prefetch.stale;
	w->prefetch.stale = 0;
	if (!w->prefetch.ready)
		replay_round_release(w->prefetch.round);
	if (w->prefetch.wanted) {
		w->prefetch.wanted = 0;
		replay_next_round(w);
	}
	replay_check_awake(w);
}

/*
 * Read and prepare the round after cur while cur is in flight, so that
 * the next round can start the moment cur is delivered instead of after a
 * read, a split and maybe a gzip. Only for an ordinary round: while a bad
 * batch is isolated or a 413 is split, writes go one at a time anyway and
 * the next read depends on how they end.
 */
void replay_start_prefetch(struct replay_worker *w)
{
	const struct replay_round *c = w->cur;
	if (w->stopping || w->prefetch.busy || !c->nbatches || w->isolate.upto || replay_splitting(w))
		return;
	uint64_t from = replay_round_last_seq(c) + 1;
	if (w->prefetch.ready && w->prefetch.from == from && w->prefetch.round->nbatches)
		return; /* already there */
	w->prefetch.ready = 0;
	w->prefetch.from = from;
	/* cur's hours are not among them yet (it is in flight): a prefetched
	 * round in the same new hour goes whole too, the safe side. */
	w->prefetch.round->known = w->hours;
	w->prefetch.busy = 1;
	w->prefetch.req.data = w;
	int rc = uv_queue_work(w->loop, &w->prefetch.req, prefetch_cb, after_prefetch_cb);
	relay_assert(rc == 0);
}
