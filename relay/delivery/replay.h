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
 *
 * The worker is opaque: its state lives in relay/delivery/replay_internal.h,
 * read and written only by replay*.c on the loop thread (and, for the
 * round being read, by one thread-pool job at a time). Callers see it
 * through replay_worker_view(), one snapshot of everything they show.
 */
#ifndef RELAY_REPLAY_H
#define RELAY_REPLAY_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "relay/base/config.h"
#include "relay/base/metrics.h"
#include "relay/base/outcome.h"
#include "relay/net/tls.h"
#include "wal/wal.h"

struct replay_worker;

enum replay_health {
	REPLAY_UP = 0,   /* delivering, or nothing to deliver */
	REPLAY_RETRYING, /* transient errors (5xx, overload): backing off */
	REPLAY_DOWN,     /* unreachable: probing /ping before resending */
	REPLAY_HOLDING,  /* needs an operator (credentials, database): retrying slowly */
	REPLAY_STORAGE,  /* a queue operation failed (disk full, I/O error, a record that
	                  * cannot be read): nothing new is sent, retrying it with backoff */
};

/*
 * Why a write is to be sent again: the label reason of
 * relayd_backend_retries_total (docs/monitoring.md). Every value is
 * written for every backend, zeros included.
 */
enum replay_retry_reason {
	REPLAY_RETRY_CONNECT = 0,  /* refused, unreachable, DNS */
	REPLAY_RETRY_TIMEOUT,      /* connect or response timeout */
	REPLAY_RETRY_RESET,        /* connection reset or closed mid-answer */
	REPLAY_RETRY_PROTOCOL,     /* an answer that does not parse */
	REPLAY_RETRY_THROTTLED,    /* 408, 429 */
	REPLAY_RETRY_OVERLOADED,   /* InfluxDB's overload texts (cache-max-memory-size...) */
	REPLAY_RETRY_SERVER_ERROR, /* other 5xx */
	REPLAY_RETRY_OTHER,        /* the rest: a hold (401, 403...), a 3xx, a request never sent */
	REPLAY_RETRY_NREASONS
};

/* The outcomes of relay/base/outcome.h, counted by index. */
#define REPLAY_NOUTCOMES (OUTCOME_NO_DATABASE + 1)

/*
 * Counters since the worker started (a restarted worker starts at 0;
 * backends.h keeps the sums of the workers a reload stopped). Written on
 * the loop thread only.
 */
struct replay_stats {
	uint64_t posts;          /* write requests sent */
	uint64_t delivered_batches; /* accepted by the backend (2xx) */
	uint64_t delivered_points;
	uint64_t delivered_bytes;   /* their line-protocol (or statement) bytes */
	uint64_t writes[REPLAY_NOUTCOMES]; /* write requests answered, by enum outcome */
	uint64_t retries;        /* writes to be sent again (and failed /ping probes): the sum of... */
	uint64_t retry_reasons[REPLAY_RETRY_NREASONS]; /* ... these, by enum replay_retry_reason */
	uint64_t dead_batches;   /* moved to the dead-letter queue, corrupt records included */
	uint64_t splits;         /* 413 splits in halves */
	uint64_t corrupt_records; /* records that did not decode, moved aside (also in dead_batches) */
	uint64_t throttled_ms;   /* time writes waited for the rate limit's tokens (max_rate) */
	/* Per delivered batch: acceptance to the 2xx, in seconds
	 * (relay_buckets_delivery_s: an outage is a latency of hours). */
	struct relay_histogram delivery_latency;
	/* Per write request: sent to answered, in seconds
	 * (relay_buckets_fast_s: a healthy write takes milliseconds, and
	 * resolution there is what tells a slow backend; one that takes
	 * more than 10 s falls in +Inf, still counted in _sum and _count). */
	struct relay_histogram request_duration;
};

/* Zero counters and empty histograms with their buckets. */
void replay_stats_init(struct replay_stats *s);
/* Add from's counters and histograms to into (both from replay_stats_init). */
void replay_stats_add(struct replay_stats *into, const struct replay_stats *from);

/*
 * Why a write answered with status (an HTTP status, or one of the
 * OUTCOME_STATUS_* transport failures) and body[0..len) (may be NULL) is
 * to be sent again. Meant for answers outcome_classify() takes for RETRY
 * or HOLD; pure. The overload texts are outcome.c's own (a RETRY that a
 * 400 with the same body would also get).
 */
enum replay_retry_reason replay_retry_reason(int status, const char *body, size_t len);
/* "connect", "timeout", "reset", "protocol", "throttled", "overloaded",
 * "server_error", "other": the label values of docs/monitoring.md. */
const char *replay_retry_reason_name(enum replay_retry_reason r);
/* "delivered", "retry", "hold", "dead", "split", "no_database": the
 * label values of relayd_backend_writes_total (outcome_name() spells the
 * last "no-database"). */
const char *replay_outcome_label(int o);

/* What a worker shows, copied out (replay_worker_view): the caller's. */
struct replay_view {
	enum replay_health health; /* REPLAY_STORAGE while a queue operation fails */
	int paused;                /* relayctl pause stops it */
	struct replay_stats stats;
	char last_error[1024];      /* why it is not up ("" when up and no error since) */
	int64_t last_delivery_ns;  /* wall clock of the last 2xx; 0 = none yet */
	/* The write being tried: its first batch (0 = none), its failed
	 * attempts, the milliseconds until the next attempt (-1 when not
	 * waiting, 0 while it is being tried again). In REPLAY_STORAGE, the
	 * same of the queue operation that fails (head_seq 0 = not known). */
	uint64_t head_seq;
	uint32_t attempts;
	int64_t next_attempt_ms;
	/* Pacing as in force now (replay_set_rate; 0 = no limit), and
	 * whether the write waits for tokens this moment. stats.throttled_ms
	 * includes the wait under way. */
	uint64_t max_rate;        /* points per second */
	uint64_t max_rate_bytes;  /* bytes per second */
	uint64_t rate_burst_ms;
	int throttled;
};

/*
 * Allocate a worker for backend cfg (wal id id) and start it on loop: it
 * reads the queue at once unless the backend is paused. cfg and wal must
 * outlive the worker. Never fails (allocation failure aborts). The caller
 * owns the worker: replay_stop, then replay_free once stopped.
 */
struct replay_worker *replay_start(uv_loop_t *loop, struct wal *wal, const struct relay_backend_config *cfg,
                                   int id);

/*
 * What the outage lines (outage.h) use that a reload may change without
 * a restart: the reminder interval while the backend is not up
 * (log_outage_reminder; 0 = no reminders, the default of a new worker)
 * and the queue's limits as wal_append enforces them now (max_size,
 * max_age; a new worker starts with its cfg's). An outage under way
 * takes the new interval at once. On the loop thread.
 */
void replay_set_outage_log(struct replay_worker *w, uint64_t reminder_ms, uint64_t max_bytes, uint64_t max_age_ms);

/*
 * The rate limit (max_rate points/s, max_rate_bytes bytes/s, 0 = none;
 * a burst of burst_ms of them), as a reload changes it without a
 * restart: the worker keeps its place, its buckets keep what they hold
 * (capped at the new burst; a debt stays, repaid at the new rate), and a
 * write waiting for tokens is looked at again at once. A new worker
 * starts with its cfg's, its buckets full. On the loop thread.
 */
void replay_set_rate(struct replay_worker *w, uint64_t points_per_s, uint64_t bytes_per_s, uint64_t burst_ms);

/* The time the write under way has waited for tokens so far (0 when
 * none waits): not yet in replay_worker_stats' throttled_ms. */
uint64_t replay_worker_throttling_ms(const struct replay_worker *w);

/* New batches were committed: start delivering if idle. */
void replay_notify(struct replay_worker *w);

/*
 * Stop: a request in flight is abandoned (its batches stay queued and
 * are sent again later: delivery is at least once), a queue commit in
 * flight finishes. cb(w, arg) runs when every handle is closed and every
 * pool job has ended; the worker is then stopped but still allocated.
 * Call once.
 */
void replay_stop(struct replay_worker *w, void (*cb)(struct replay_worker *w, void *arg), void *arg);

/* Free a stopped worker (after replay_stop's callback has run; not from
 * inside that callback, whose caller may still hold w). NULL is a no-op. */
void replay_free(struct replay_worker *w);

/*
 * relayctl changed this backend's queue (purge, dead letters requeued, an
 * import) or its pause flag: read the flag again. Paused, nothing more is
 * sent (a write in flight finishes; a backoff wait ends); resumed, or not
 * paused, what the worker holds in memory is dropped and the queue read
 * again from its cursor. On the loop thread.
 */
void replay_refresh(struct replay_worker *w);

/*
 * A reload that kept the backend's settings: make its TLS context anew
 * from the files (a CA or client certificate replaced on disk), warn
 * again if insecure_skip_verify is set, and, if the backend is waiting
 * after a failure, try now. Nothing for a plain backend. On the loop
 * thread.
 */
void replay_reload_tls(struct replay_worker *w);

/* The backend's client TLS context as last made (a reference stays with
 * w: whoever keeps it longer takes one), or NULL for a plain backend or
 * one whose context could not be made. */
struct net_tls_ctx *replay_worker_tls(const struct replay_worker *w);

/* Skip the current wait and try now: a backoff (or probe) wait, a failed
 * queue operation's, or a failed ack's (this one even while paused: it
 * sends nothing). Returns 0, or -1 when the worker is not waiting
 * (delivering, idle, paused). */
int replay_retry_now(struct replay_worker *w);

/* Copy what w shows (health, pause, counters, last error, the write being
 * tried) into *v. On the loop thread; never fails. */
void replay_worker_view(const struct replay_worker *w, struct replay_view *v);

/* w's counters (a restarted worker starts at 0), valid until w is freed:
 * also once stopped, so that backends.c can keep their sums. On the loop
 * thread. */
const struct replay_stats *replay_worker_stats(const struct replay_worker *w);

/*
 * What a stopped worker hands to the one a reload starts in its place for
 * the same backend: the backend's state as it last answered and the
 * outage under way, so that status and /health do not say "up" before
 * the new worker has tried, and the log goes on with the same outage
 * (its start, its reminders, "up again after" the whole time) instead of
 * beginning another.
 * replay_handover_take: from a stopped worker (after replay_stop's
 * callback); the caller owns the result (free it, or give it).
 * replay_handover_give: to a worker just started, before the loop runs
 * it again; takes h (frees it). NULL is a no-op.
 */
struct replay_handover;
struct replay_handover *replay_handover_take(const struct replay_worker *w);
void replay_handover_give(struct replay_worker *w, struct replay_handover *h);

/* "up", "retrying", "down", "holding", "storage". */
const char *replay_health_name(enum replay_health h);

#endif
