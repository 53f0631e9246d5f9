/*
 * replay: one worker per backend on the libuv loop. It reads the backend's
 * queue in acceptance order, coalesces consecutive batches that share db,
 * rp, precision and credentials into one write, shares its lines out by
 * series among `parallel` connections, and moves the cursor only after
 * every share got a complete 2xx. It retries what can succeed later (capped
 * exponential backoff with full jitter, Retry-After honoured, /ping probed
 * while the backend is down), holds what needs an operator (401/403,
 * database not found), dead-letters what never will, and splits what is
 * too large. Queue reads, acks and dead-letters run on the thread pool:
 * they commit to disk.
 */
#ifndef RELAY_REPLAY_H
#define RELAY_REPLAY_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "relay/config.h"
#include "relay/http_client.h"
#include "relay/util.h"
#include "wal/wal.h"

#define REPLAY_READ_MAX 512 /* batches copied out per read */
#define REPLAY_MAX_LANES 16 /* parallel writes per backend, at most */

struct replay_worker;

/* One of a backend's parallel connections, with its share of a write:
 * the lines of the series that hash to it. */
struct replay_lane {
	struct http_client http;
	struct replay_worker *w;
	struct rbuf body;
	struct rbuf gz;
	int gzipped;
	int done;      /* this share was answered 2xx (or is empty) */
	int inflight;
};

enum replay_health {
	REPLAY_UP = 0,   /* delivering, or nothing to deliver */
	REPLAY_RETRYING, /* transient errors (5xx, overload): backing off */
	REPLAY_DOWN,     /* unreachable: probing /ping before resending */
	REPLAY_HOLDING,  /* needs an operator (credentials, database): retrying slowly */
};

struct replay_stats {
	uint64_t posts;          /* write requests sent */
	uint64_t delivered_batches;
	uint64_t delivered_points;
	uint64_t retries;
	uint64_t dead_batches;
	uint64_t splits;
};

struct replay_worker {
	uv_loop_t *loop;
	struct wal *wal;
	const struct relay_backend_config *cfg;
	int id;                 /* the backend's wal id */
	struct http_client http; /* single writes, /ping probes, CREATE DATABASE */
	struct replay_lane *lanes; /* cfg->parallel of them when > 1 */
	int nlanes;
	int lane_mode;           /* the current group is split across the lanes */
	int lanes_waiting;
	int fail_status;         /* first failure among the lanes of this round */
	uint64_t fail_retry_after;
	struct rbuf fail_body;
	char fail_err[160];
	uv_timer_t timer;
	uv_work_t work;         /* queue reads and dead-letters */
	uv_work_t ack_work;     /* acks, beside the next write */
	int ack_busy;
	int ack_rc;
	uint64_t ack_want;      /* delivered up to here (cumulative) */
	uint64_t ack_inflight;  /* the ack being committed */
	uint64_t ack_done;      /* committed up to here */
	uint64_t read_from;     /* next read starts here (0 = the cursor) */
	int state;              /* internal state machine (replay.c) */
	int work_busy;
	int wake;               /* data arrived while busy */
	int stopping;
	int handles;
	void (*stopped_cb)(struct replay_worker *w);

	enum replay_health health;
	char last_error[300];
	uint32_t attempts;      /* of the current payload */
	uint64_t hold_logged_ns; /* monotonic time of the last "holding" line */
	int64_t last_delivery_ns;

	/* batches copied out of the queue, and the group being sent */
	struct wal_batch batches[REPLAY_READ_MAX];
	size_t nbatches;
	size_t group_n;           /* batches[0..group_n) form the payload */
	uint64_t isolate_upto;    /* send one batch at a time up to this seq */
	struct rbuf payload;
	struct rbuf gz;           /* the payload gzipped, when gzipped is set */
	int gzipped;
	struct rbuf target;
	struct rbuf headers;
	/* 413 on a single batch: byte ranges of its body still to send */
	struct { size_t off, len; } ranges[64];
	int nranges;
	size_t split_fit;         /* largest piece the backend accepted */

	/* work item parameters and results */
	int wk_kind;
	uint64_t wk_seq;
	int wk_rc;
	int wk_status;
	uint32_t wk_lines;
	size_t wk_off, wk_len;

	struct replay_stats stats;
};

/* Set up and start w for backend cfg (wal id id). cfg must outlive w. */
void replay_start(struct replay_worker *w, uv_loop_t *loop, struct wal *wal, const struct relay_backend_config *cfg,
                  int id);

/* New batches were committed: start delivering if idle. */
void replay_notify(struct replay_worker *w);

/* Stop: a request in flight is abandoned (its batches stay queued and
 * are sent again later: delivery is at least once), a queue commit in
 * flight finishes. cb runs when every handle is closed. */
void replay_stop(struct replay_worker *w, void (*cb)(struct replay_worker *w));

/* "up", "retrying", "down", "holding". */
const char *replay_health_name(enum replay_health h);

#endif
