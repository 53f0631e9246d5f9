/*
 * ingest: the group commit. Requests whose bodies are validated arrive
 * here; while one commit runs on the libuv thread pool, every request that
 * arrives joins the next one. Each request's callback runs on the loop
 * thread once the commit that holds it has returned: only then may the
 * client be told 204. Nothing here knows HTTP.
 */
#ifndef RELAY_INGEST_H
#define RELAY_INGEST_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "relay/base/metrics.h"
#include "relay/base/util.h"
#include "wal/wal.h"

struct ingest_request;
/*
 * Called on the loop thread when the commit holding req returned. rc is
 * the commit's result (0, WAL_EFULL, -EIO, ...); when it is 0,
 * req->batch.result says whether this batch was stored (0) or refused by a
 * backend limit (WAL_ELIMIT / WAL_EAGE, with req->batch.refused_by).
 */
typedef void (*ingest_done_cb)(struct ingest_request *req, int rc);

/* One write waiting for its commit. The caller owns it (typically embedded
 * in a connection) and must keep it, its strings and body, alive until done
 * runs. */
struct ingest_request {
	struct wal_batch batch; /* route is filled in by ingest_submit */
	ingest_done_cb done;
	void *data;              /* the caller's */
	/* private: ingest.c's */
	struct ingest_request *next_;
};

struct ingest_stats {
	uint64_t commits;
	uint64_t batches_committed;
	uint64_t batches_refused;
	uint64_t commit_errors;
	/* Batches a backend's limit refused, by wal backend id: [0] its
	 * max_size (WAL_ELIMIT), [1] its max_age (WAL_EAGE). */
	uint64_t refused_by_limit[WAL_MAX_BACKENDS][2];
	uint64_t max_group;
	/* Each commit's wall time on the pool thread, its page writes and
	 * fsyncs included (relay_buckets_fast_s), and its requests
	 * (relay_buckets_group). */
	struct relay_histogram commit_seconds;
	struct relay_histogram group_size;
};

struct ingest {
	uv_loop_t *loop;
	struct wal *wal;
	uint64_t route;           /* the backends every batch goes to */
	/* By wal backend id, for messages: name, and max_size and max_age as
	 * the configuration wrote them (set by the program that registers
	 * the backends; the strings stay its own). */
	const char *names[WAL_MAX_BACKENDS];
	const char *max_size[WAL_MAX_BACKENDS];
	const char *max_age[WAL_MAX_BACKENDS];
	/* Called on the loop thread after a commit that stored batches (to
	 * wake the replay workers). */
	void (*on_commit)(struct ingest *ing, void *arg);
	void *on_commit_arg;
	struct ingest_stats stats; /* read by the program (/health, /metrics) */
	/* private: ingest.c's */
	size_t max_group;         /* most requests per commit */
	struct ingest_request *head, *tail; /* waiting for the next commit */
	size_t waiting;
	/* the commit in flight */
	int inflight;
	struct ingest_request **group;
	struct wal_batch *group_batches;
	size_t group_n;
	int group_rc;
	uint64_t group_ns;        /* the commit's duration, set on the pool thread */
	uv_work_t work;
	uv_check_t kick;          /* starts a commit once per loop iteration */
	uv_idle_t kick_now;       /* keeps that iteration's poll from blocking */
	int kick_handles_;        /* kick handles not yet closed */
	int closing;
	int kick_closed_;         /* uv_close called on kick: finish_close ran */
	void (*on_idle)(struct ingest *); /* ingest_close's callback */
};

/* Set up ing on loop. route: mask of backend ids every batch is queued
 * for; max_group: requests per commit (>= 1). Returns 0 or a uv error. */
int ingest_init(struct ingest *ing, uv_loop_t *loop, struct wal *wal, uint64_t route, size_t max_group);

/* Queue req for the next commit; req->done will be called exactly once,
 * on the loop thread, never from inside this call. May be called from any
 * callback (I/O, timer, done): the commit starts in the same loop
 * iteration or the next, never after an idle wait. */
void ingest_submit(struct ingest *ing, struct ingest_request *req);

/* Whether a commit is running or requests are waiting. */
int ingest_busy(const struct ingest *ing);

/*
 * Append the group commit's metric families to out: commits, commit
 * errors, batches committed and refused, the commit duration and group
 * size histograms (docs/monitoring.md). http_server_metrics() calls it for
 * the server's ingest: a program that calls that must not call this too
 * (a family is written once). Cannot fail.
 */
void ingest_metrics(const struct ingest *ing, struct rbuf *out);

/* Stop: requests still waiting are committed first; on_idle runs once
 * nothing is in flight and the handles are closed. May be called from a
 * request's done callback. */
void ingest_close(struct ingest *ing, void (*on_idle)(struct ingest *));

#endif
