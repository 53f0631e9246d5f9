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

/* Counters since the worker started (a restarted worker starts at 0). */
struct replay_stats {
	uint64_t posts;          /* write requests sent */
	uint64_t delivered_batches;
	uint64_t delivered_points;
	uint64_t retries;
	uint64_t dead_batches;
	uint64_t splits;
};

/* What a worker shows, copied out (replay_worker_view): the caller's. */
struct replay_view {
	enum replay_health health; /* REPLAY_STORAGE while a queue operation fails */
	int paused;                /* relayctl pause stops it */
	struct replay_stats stats;
	char last_error[300];      /* why it is not up ("" when up and no error since) */
	int64_t last_delivery_ns;  /* wall clock of the last 2xx; 0 = none yet */
	/* The write being tried: its first batch (0 = none), its failed
	 * attempts, the milliseconds until the next attempt (-1 when not
	 * waiting, 0 while it is being tried again). In REPLAY_STORAGE, the
	 * same of the queue operation that fails (head_seq 0 = not known). */
	uint64_t head_seq;
	uint32_t attempts;
	int64_t next_attempt_ms;
};

/*
 * Allocate a worker for backend cfg (wal id id) and start it on loop: it
 * reads the queue at once unless the backend is paused. cfg and wal must
 * outlive the worker. Never fails (allocation failure aborts). The caller
 * owns the worker: replay_stop, then replay_free once stopped.
 */
struct replay_worker *replay_start(uv_loop_t *loop, struct wal *wal, const struct relay_backend_config *cfg,
                                   int id);

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

/* Skip the current wait and try now: a backoff (or probe) wait, a failed
 * queue operation's, or a failed ack's (this one even while paused: it
 * sends nothing). Returns 0, or -1 when the worker is not waiting
 * (delivering, idle, paused). */
int replay_retry_now(struct replay_worker *w);

/* Copy what w shows (health, pause, counters, last error, the write being
 * tried) into *v. On the loop thread; never fails. */
void replay_worker_view(const struct replay_worker *w, struct replay_view *v);

/* "up", "retrying", "down", "holding", "storage". */
const char *replay_health_name(enum replay_health h);

#endif
