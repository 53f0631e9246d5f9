/*
 * ingest: group commit on the libuv thread pool. The loop thread never
 * waits for an fsync: it hands a whole group to one uv_queue_work call and
 * goes on reading sockets; what arrives meanwhile waits in a list and forms
 * the next group. This is redis's beforeSleep/AOF idea with the fsync moved
 * off the loop. Ordering: groups commit one at a time, in arrival order, so
 * the queue holds batches in acceptance order.
 */
#include "relay/door/ingest.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "relay/base/util.h"

static void start_commit(struct ingest *ing);
static void finish_close(struct ingest *ing);

static void work_cb(uv_work_t *w)
{
	struct ingest *ing = relay_container_of(w, struct ingest, work);
	/* Runs on a pool thread: the whole transaction, its page writes and
	 * its two fdatasyncs happen here, never on the loop thread. Timed
	 * here, not around the job: a wait for a free pool thread is not the
	 * disk's. after_work_cb reads group_ns once the job has returned. */
	uint64_t t0 = now_mono_ns();
	ing->group_rc = wal_append(ing->wal, ing->group_batches, ing->group_n, now_realtime_ns());
	ing->group_ns = now_mono_ns() - t0;
}

static void after_work_cb(uv_work_t *w, int status)
{
	struct ingest *ing = relay_container_of(w, struct ingest, work);
	int rc = status == 0 ? ing->group_rc : -EIO;
	size_t n = ing->group_n;

	ing->inflight = 0;
	ing->stats.commits++;
	if (rc)
		ing->stats.commit_errors++;
	if (n > ing->stats.max_group)
		ing->stats.max_group = n;
	relay_histogram_observe(&ing->stats.group_size, (double)n);
	if (status == 0)
		relay_histogram_observe(&ing->stats.commit_seconds, (double)ing->group_ns / 1e9);
	/* Answer only now: the commit that holds these batches returned. */
	for (size_t i = 0; i < n; i++) {
		struct ingest_request *req = ing->group[i];
		req->batch.seq = ing->group_batches[i].seq;
		req->batch.result = ing->group_batches[i].result;
		req->batch.refused_by = ing->group_batches[i].refused_by;
		if (rc == 0 && req->batch.result == 0)
			ing->stats.batches_committed++;
		else
			ing->stats.batches_refused++;
		int by = req->batch.refused_by;
		if (rc == 0 && by >= 0 && by < WAL_MAX_BACKENDS &&
		    (req->batch.result == WAL_ELIMIT || req->batch.result == WAL_EAGE))
			ing->stats.refused_by_limit[by][req->batch.result == WAL_EAGE]++;
		ing->group[i] = NULL;
		req->done(req, rc);
	}
	ing->group_n = 0;
	if (rc == 0 && ing->on_commit)
		ing->on_commit(ing, ing->on_commit_arg);
	if (ing->head)
		start_commit(ing);
	else if (ing->closing)
		finish_close(ing);
}

static void start_commit(struct ingest *ing)
{
	size_t n = 0;
	if (ing->inflight || !ing->head)
		return;
	while (ing->head && n < ing->max_group) {
		struct ingest_request *req = ing->head;
		ing->head = req->next_;
		req->next_ = NULL;
		ing->group[n] = req;
		/* A copy of the descriptor: the wal writes seq/result into it on
		 * the pool thread while the loop thread may read req. */
		ing->group_batches[n] = req->batch;
		n++;
	}
	if (!ing->head)
		ing->tail = NULL;
	ing->waiting -= n;
	ing->group_n = n;
	ing->inflight = 1;
	int rc = uv_queue_work(ing->loop, &ing->work, work_cb, after_work_cb);
	relay_assert(rc == 0);
}

static void kick_cb(uv_check_t *h)
{
	struct ingest *ing = relay_container_of(h, struct ingest, kick);
	uv_check_stop(h);
	uv_idle_stop(&ing->kick_now);
	start_commit(ing);
}

static void kick_now_cb(uv_idle_t *h)
{
	(void)h; /* only its being active matters: see ingest_submit */
}

int ingest_init(struct ingest *ing, uv_loop_t *loop, struct wal *wal, uint64_t route, size_t max_group)
{
	memset(ing, 0, sizeof(*ing));
	ing->loop = loop;
	ing->wal = wal;
	ing->route = route;
	ing->max_group = max_group ? max_group : 1;
	ing->group = xcalloc(ing->max_group, sizeof(*ing->group));
	ing->group_batches = xcalloc(ing->max_group, sizeof(*ing->group_batches));
	relay_histogram_init(&ing->stats.commit_seconds, relay_buckets_fast_s, relay_buckets_fast_n);
	relay_histogram_init(&ing->stats.group_size, relay_buckets_group, relay_buckets_group_n);
	int rc = uv_check_init(loop, &ing->kick);
	if (rc == 0)
		rc = uv_idle_init(loop, &ing->kick_now);
	ing->kick_handles_ = 2;
	return rc;
}

void ingest_submit(struct ingest *ing, struct ingest_request *req)
{
	req->batch.route = ing->route;
	req->next_ = NULL;
	if (ing->tail)
		ing->tail->next_ = req;
	else
		ing->head = req;
	ing->tail = req;
	ing->waiting++;
	/* Start the commit from a check handle, after this loop iteration has
	 * read every socket that was ready: all of them join one group. */
	if (!ing->inflight) {
		uv_check_start(&ing->kick, kick_cb);
		/* A check handle runs after the poll phase. Submitted from an
		 * I/O callback that is this iteration; submitted from a timer
		 * (a UDP flush) the poll would first block until the next
		 * event, however far. An active idle handle makes that poll
		 * return at once. */
		uv_idle_start(&ing->kick_now, kick_now_cb);
	}
}

int ingest_busy(const struct ingest *ing)
{
	return ing->inflight || ing->head != NULL;
}

static void kick_closed(uv_handle_t *h)
{
	struct ingest *ing = h->data;
	if (--ing->kick_handles_)
		return;
	free(ing->group);
	free(ing->group_batches);
	ing->group = NULL;
	ing->group_batches = NULL;
	if (ing->on_idle)
		ing->on_idle(ing);
}

static void finish_close(struct ingest *ing)
{
	/* ingest_close may run inside a done callback of after_work_cb (the
	 * last UDP group's commit ends the UDP server, whose owner closes
	 * ingest), and after_work_cb then finishes the close itself: once. */
	if (ing->kick_closed_)
		return;
	ing->kick_closed_ = 1;
	ing->kick.data = ing->kick_now.data = ing;
	uv_close((uv_handle_t *)&ing->kick, kick_closed);
	uv_close((uv_handle_t *)&ing->kick_now, kick_closed);
}

void ingest_close(struct ingest *ing, void (*on_idle)(struct ingest *))
{
	ing->closing = 1;
	ing->on_idle = on_idle;
	if (ingest_busy(ing)) {
		/* Finish what was accepted: the commit in flight, then the rest;
		 * after_work_cb calls finish_close when the list is empty. */
		start_commit(ing);
		return;
	}
	finish_close(ing);
}

void ingest_metrics(const struct ingest *ing, struct rbuf *out)
{
	const struct ingest_stats *st = &ing->stats;
	prom_family(out, "relayd_ingest_commits_total", "counter", "Group commits.");
	prom_u64(out, "relayd_ingest_commits_total", NULL, st->commits);
	prom_family(out, "relayd_ingest_commit_errors_total", "counter",
	            "Group commits that failed (disk full, I/O error): their writers got 5xx.");
	prom_u64(out, "relayd_ingest_commit_errors_total", NULL, st->commit_errors);
	prom_family(out, "relayd_ingest_batches_committed_total", "counter", "Batches committed.");
	prom_u64(out, "relayd_ingest_batches_committed_total", NULL, st->batches_committed);
	prom_family(out, "relayd_ingest_batches_refused_total", "counter",
	            "Batches not stored: refused by a full queue, or in a commit that failed.");
	prom_u64(out, "relayd_ingest_batches_refused_total", NULL, st->batches_refused);
	/* Which backend's full queue refused them (a write goes to every
	 * backend, so one full queue refuses it for all): every registered
	 * backend, zeros included, so that an alert has a series to watch. */
	const char *name = "relayd_backend_refused_batches_total";
	prom_family(out, name, "counter",
	            "Batches refused because this backend's queue reached its max_size or max_age, by limit.");
	for (int id = 0; id < WAL_MAX_BACKENDS; id++) {
		if (!ing->names[id])
			continue;
		char labels[WAL_NAME_MAX * 4 + 64];
		for (int k = 0; k < 2; k++)
			prom_u64(out, name,
			         prom_labels(labels, sizeof(labels), "backend", ing->names[id], "limit",
			                     k ? "max_age" : "max_size", NULL),
			         st->refused_by_limit[id][k]);
	}
	prom_family(out, "relayd_ingest_commit_duration_seconds", "histogram", "One group commit, fsync included.");
	prom_histogram(out, "relayd_ingest_commit_duration_seconds", NULL, &st->commit_seconds);
	prom_family(out, "relayd_ingest_commit_group_size", "histogram", "Requests per group commit.");
	prom_histogram(out, "relayd_ingest_commit_group_size", NULL, &st->group_size);
}
