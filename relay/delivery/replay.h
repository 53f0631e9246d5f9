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
 * they commit to disk. So does the read of the next round, done while the
 * current one is in flight. A queue operation that fails (a full disk, an
 * I/O error, a record that cannot be decoded) is shown (REPLAY_STORAGE)
 * and tried again on a timer until it works: the worker never waits for
 * something that is not bound to come.
 */
#ifndef RELAY_REPLAY_H
#define RELAY_REPLAY_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "relay/base/config.h"
#include "relay/delivery/http_client.h"
#include "relay/base/log.h"
#include "relay/base/util.h"
#include "wal/wal.h"

#define REPLAY_READ_MAX 512 /* batches copied out per read */
#define REPLAY_QUARANTINE_MAX 64 /* corrupt records moved aside in one read, at most */
#define REPLAY_MAX_LANES 16 /* parallel writes per backend, at most */

struct replay_worker;

/* One lane's part of a round: the lines of the series given to it. */
struct replay_share {
	struct rbuf body;
	struct rbuf gz;     /* body gzipped, when gzipped is set */
	int gzipped;
	int done;           /* answered 2xx (or empty) */
};

/* Scratch of a round's split among the lanes, kept for the next round. */
struct replay_series {
	uint64_t bytes;     /* of its lines in the round */
	uint32_t idx;       /* its index before sorting */
	uint32_t hash;      /* of its key (measurement and tags) */
};
struct replay_split {
	struct { uint32_t len, ser; } *line; /* every line: length, series */
	size_t line_cap;
	uint32_t *slot_hash, *slot_ser; /* open addressing: hash -> series + 1 (0 = free) */
	size_t slots;
	struct replay_series *ser;
	size_t nser, ser_cap;
	uint8_t *lane_of;   /* series index -> lane */
	size_t lane_cap;
};

/*
 * A round: batches copied out of the queue, the group of them that forms
 * one write, and that write made ready to send (the coalesced payload, or
 * one share per lane). A worker has two: the round being delivered and the
 * next one, read and prepared on the thread pool while the first is in
 * flight. Whoever fills a round owns it until the fill is over: the pool
 * thread during a read, the loop thread otherwise.
 */
struct replay_round {
	struct wal_batch batches[REPLAY_READ_MAX];
	size_t nbatches;
	size_t group_n;     /* batches[0..group_n) form the write */
	int lane_mode;      /* the write is shared out among the lanes */
	struct rbuf payload; /* the coalesced body, for a single write of group_n > 1 */
	struct rbuf gz;     /* the single write gzipped, when gzipped is set */
	int gzipped;
	struct replay_share shares[REPLAY_MAX_LANES];
	struct replay_split split;
};

/* One of a backend's parallel connections. Lane i sends share i of the
 * round being delivered. */
struct replay_lane {
	struct http_client http;
	struct replay_worker *w;
	int inflight;
};

enum replay_health {
	REPLAY_UP = 0,   /* delivering, or nothing to deliver */
	REPLAY_RETRYING, /* transient errors (5xx, overload): backing off */
	REPLAY_DOWN,     /* unreachable: probing /ping before resending */
	REPLAY_HOLDING,  /* needs an operator (credentials, database): retrying slowly */
	REPLAY_STORAGE,  /* a queue operation failed (disk full, I/O error, a record that
	                  * cannot be read): nothing new is sent, retrying it with backoff */
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
	int lanes_waiting;
	int fail_status;         /* first failure among the lanes of this round */
	uint64_t fail_retry_after;
	struct rbuf fail_body;
	char fail_err[160];
	uv_timer_t timer;       /* backoff of a write, a probe, or a failed queue read or dead-letter */
	uv_work_t work;         /* queue reads and dead-letters */
	uv_work_t ack_work;     /* acks, beside the next write */
	uv_timer_t ack_timer;   /* the next try of an ack that failed */
	int ack_busy;
	int ack_rc;
	int ack_failing;        /* the last ack did not commit: nothing new is sent until one does */
	uint32_t ack_attempts;  /* failed acks in a row */
	uint64_t ack_want;      /* delivered up to here (cumulative) */
	uint64_t ack_inflight;  /* the ack being committed */
	uint64_t ack_done;      /* committed up to here */
	int redo;               /* 1 + the work kind (replay.c) that failed and is tried again; 0 = none */
	uint32_t redo_attempts; /* its failures in a row */
	uint64_t read_from;     /* next read starts here (0 = the cursor) */
	int state;              /* internal state machine (replay.c) */
	int work_busy;
	int wake;               /* data arrived while busy */
	int stopping;
	int handles;
	void (*stopped_cb)(struct replay_worker *w);

	/* What status and /health show: REPLAY_STORAGE while a queue
	 * operation fails (its error), else what the backend's answers say
	 * (link, link_error). */
	enum replay_health health;
	char last_error[300];
	enum replay_health link;
	char link_error[300];
	char ack_error[300];     /* why the last ack failed */
	char redo_error[300];    /* why the queue operation being tried again failed */
	char dead_msg[300];      /* the message a dead letter is stored with (read on the pool) */
	uint32_t attempts;      /* of the current payload */
	uint64_t hold_logged_ns; /* monotonic time of the last "holding" or "storage" line */
	int db_created;          /* CREATE DATABASE succeeded for the write being tried */
	struct relay_ratelimit create_log; /* "created database" lines */
	int64_t last_delivery_ns;

	/* the round being delivered (cur), and the next one (pf): prefetched,
	 * that is read and prepared on the pool while cur is in flight */
	struct replay_round rounds[2];
	struct replay_round *cur, *pf;
	uv_work_t pf_work;
	int pf_busy;             /* a prefetch is running on the pool */
	int pf_ready;            /* pf holds what was pending from pf_from on */
	int pf_wanted;           /* cur is over: start pf as soon as it is ready */
	int pf_rc;
	int pf_stale;            /* the queue changed under a running prefetch: drop it */
	int cur_stale;           /* ... under a running read of cur: read again */
	int paused;              /* relayctl pause: nothing is sent (the flag is in the queue) */
	uint64_t pf_from;        /* the sequence the prefetch read from */
	uint64_t isolate_upto;    /* send one batch at a time up to this seq */
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
	/* records a read found undecodable and moved aside (wal_quarantine):
	 * how many, the last one's sequence and why, for the loop to log */
	unsigned wk_quarantined;
	uint64_t wk_qseq;
	char wk_qwhy[200];

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

/*
 * relayctl changed this backend's queue (purge, dead letters requeued, an
 * import) or its pause flag: read the flag again. Paused, nothing more is
 * sent (a write in flight finishes; a backoff wait ends); resumed, or not
 * paused, what the worker holds in memory is dropped and the queue read
 * again from its cursor. On the loop thread.
 */
void replay_refresh(struct replay_worker *w);

/* Whether the pause flag stops this worker. */
int replay_paused(const struct replay_worker *w);

/* Skip the current wait and try now: a backoff (or probe) wait, a failed
 * queue operation's, or a failed ack's (this one even while paused: it
 * sends nothing). Returns 0, or -1 when the worker is not waiting
 * (delivering, idle, paused). */
int replay_retry_now(struct replay_worker *w);

/* What relayctl status shows of the write being tried: its first batch
 * (0 = none), its failed attempts, and the milliseconds until the next
 * attempt (-1 when not waiting). In REPLAY_STORAGE, the same of the queue
 * operation that fails: the batch it is about (0 = not known), its failed
 * attempts, the time to its next try. */
void replay_status(const struct replay_worker *w, uint64_t *head_seq, uint32_t *attempts, int64_t *next_ms);

/* "up", "retrying", "down", "holding", "storage". */
const char *replay_health_name(enum replay_health h);

#endif
