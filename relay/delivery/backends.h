/*
 * backends: relayd's delivery side as a set a reload can change. One
 * replay worker per configured backend, found by the backend's queue id;
 * the configurations the workers were started with, kept alive while a
 * worker runs on one of their entries; and the steps that take the
 * running set to a new configuration: start, restart with new settings,
 * stop. All on the loop thread.
 *
 * Why restart rather than hand a worker its new settings (all but the
 * queue limits and the rate limit, which the worker copies and a setter
 * changes): replay.c reads
 * its `const struct relay_backend_config *` on thread-pool threads too
 * (its queue jobs size their reads and form the payload there), and copies the
 * address, timeouts and lane count into its connections when it starts.
 * A pointer swapped under it would race, and would not reach the
 * connections anyway.
 */
#ifndef RELAYD_BACKENDS_H
#define RELAYD_BACKENDS_H

#include <uv.h>

#include "relay/base/config.h"
#include "relay/delivery/replay.h"
#include "wal/wal.h"

struct backend_slot;
struct retired_config;
struct rbuf;

struct backends {
	uv_loop_t *loop;
	struct wal *wal;
	struct backend_slot *slots[WAL_MAX_BACKENDS]; /* by queue id; NULL = no worker */
	/* The name of every queue id opened so far, for the group commit's
	 * messages (ingest keeps these pointers): owned, freed on close. */
	char *names[WAL_MAX_BACKENDS];
	struct retired_config *retired; /* configurations a worker may still run on */
	/* The counters of the workers stopped so far, by queue id (NULL =
	 * none stopped yet): a restarted worker starts at 0, and these keep
	 * the sums monotonic for relayd's life. Owned, freed on close. */
	struct replay_stats *carried[WAL_MAX_BACKENDS];
	uint64_t outage_reminder_ms; /* log_outage_reminder of the configuration in force */
	uv_timer_t defer;   /* restarts and frees, outside replay's own callbacks */
	int closing;
	void (*closed_cb)(struct backends *bs);
};

/* Set up bs on loop for the queue wal. Returns 0 or a uv error. */
int backends_init(struct backends *bs, uv_loop_t *loop, struct wal *wal);

/*
 * Open the queue of every backend of cfg, creating those that are new (a
 * new queue starts empty: it gets what is accepted from now on), and put
 * the id of cfg->backends[i] in ids[i]. Nothing starts or stops. Returns
 * 0, or a wal error (WAL_ETOOMANY, a failed commit) with the backend named
 * in err; queues created before the failure stay, empty and unused.
 * Blocks the loop for the commit that creates a queue (a reload is rare).
 */
int backends_open(struct backends *bs, const struct relay_config *cfg, int *ids, char *err, size_t errlen);

/*
 * Take the running workers to cfg (ids from backends_open): a worker for
 * each backend without one; a restart for each whose delivery settings
 * changed (once the old worker has stopped: a write it had in flight is
 * sent again, at least once as always); a stop for each that cfg no
 * longer lists (its queue stays on disk until purged). The queue limits
 * of every listed backend are set (no restart for a limit), and so are
 * every worker's outage reminder (cfg->log_outage_reminder_ms) and rate
 * limit (max_rate, max_rate_bytes, rate_burst: replay_set_rate). Logs each
 * change. Workers point into cfg->backends: cfg must stay alive until it
 * is handed to backends_retire and released there.
 */
void backends_apply(struct backends *bs, const struct relay_config *cfg, const int *ids);

/* Take old (heap-allocated with malloc, no longer in force): it is
 * released and freed once no worker runs on one of its backends. */
void backends_retire(struct backends *bs, struct relay_config *old);

/* The worker of queue id (running, stopping or about to restart), or
 * NULL. Valid until the next loop iteration. */
const struct replay_worker *backends_worker(const struct backends *bs, int id);

/* The worker of queue id if it runs (not stopping, not about to
 * restart), to act on: NULL otherwise. */
struct replay_worker *backends_worker_mut(struct backends *bs, int id);
/*
 * The delivery counters of queue id since relayd started, into *out: the
 * sums of its workers stopped by reloads and of the one running (or
 * stopping). Zeros (with empty histograms) for an id that never had a
 * worker. On the loop thread; never fails.
 */
void backends_stats(const struct backends *bs, int id, struct replay_stats *out);

/*
 * Append to out (Prometheus's text format, relay/base/metrics.h) the
 * families docs/monitoring.md lists "from the delivery worker", each once
 * with its HELP and TYPE lines and one sample (or one per label value)
 * for each backend of cfg, labelled backend="NAME": the backend
 * cfg->backends[i] has queue id ids[i] (backends_open). The families:
 * relayd_backend_delivered_{batches,points,bytes}_total,
 * relayd_backend_writes_total{outcome}, relayd_backend_retries_total{reason}
 * (every outcome and reason, zeros included, so that a rule sees its
 * series from the start), relayd_backend_dead_lettered_batches_total,
 * relayd_backend_splits_total, relayd_backend_corrupt_records_total, and
 * the histograms relayd_backend_delivery_latency_seconds and
 * relayd_backend_request_duration_seconds; the rate limit in force,
 * relayd_backend_max_rate_points_per_second and
 * relayd_backend_max_rate_bytes_per_second (gauges, 0 = none), and
 * relayd_backend_throttled_seconds_total (the time writes waited for its
 * tokens, the wait under way included). A backend that cfg no longer
 * lists is not written. Not written here: the figures read from the queue
 * and the worker's state (pending, state, paused...), which the program
 * writes. Counters never go back across reloads (backends_stats). out is
 * the caller's; the function only appends (aborts on allocation failure,
 * as every rbuf). On the loop thread.
 */
void backends_metrics(const struct backends *bs, const struct relay_config *cfg, const int *ids, struct rbuf *out);

/* Batches were committed: wake every running worker. */
void backends_notify(struct backends *bs);

/* Stop every worker (a write in flight is abandoned: sent again after a
 * restart; a queue commit in flight finishes). cb runs once all are
 * stopped and bs's handles are closed; retired configurations and names
 * are freed by then. */
void backends_close(struct backends *bs, void (*cb)(struct backends *bs));

#endif
