/*
 * replay_internal: the replay worker's state, for replay*.c only (never
 * included outside relay/delivery). The public side is replay.h.
 *
 * The fields are grouped by concern, each group saying who writes it and
 * when; the invariants that tie them together are named predicates below,
 * so that a test of "is an ack outstanding" reads the same everywhere.
 * The state (enum replay_state) is written only by replay_set_state().
 *
 * Threads: everything is the loop thread's, except that while job.busy the
 * pool's job owns cur and the job.* parameters and results, and while
 * prefetch.busy the prefetch job owns prefetch.round. cfg, wal, id and
 * nlanes never change after replay_start, so the jobs read them freely.
 *
 * Files: replay.c (entry points, state, health, timers, next round),
 * replay_send.c (requests and what their answers mean), replay_queue.c
 * (reads, dead-letters, acks and the prefetch on the thread pool),
 * replay_round.c (the pure step from batches to writes).
 */
#ifndef RELAY_REPLAY_INTERNAL_H
#define RELAY_REPLAY_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "relay/base/config.h"
#include "relay/base/log.h"
#include "relay/base/outcome.h"
#include "relay/base/tokenbucket.h"
#include "relay/base/util.h"
#include "relay/delivery/http_client.h"
#include "relay/delivery/outage.h"
#include "relay/delivery/replay.h"
#include "relay/delivery/replay_round.h"
#include "wal/wal.h"

#define REPLAY_QUARANTINE_MAX 64 /* corrupt records moved aside in one read, at most */
#define REPLAY_HOLD_MIN_MS 1000  /* least wait of a hold and of a failing queue operation */

/* Where the worker is (the diagram at the top of replay.c). */
enum replay_state {
	S_IDLE,    /* nothing held, nothing pending (or paused) */
	S_READ,    /* a queue read runs (job), or waits for the prefetch */
	S_SEND,    /* cur's write (or its shares) in flight */
	S_BACKOFF, /* waiting on the timer; or a 413 split held while paused */
	S_PROBE,   /* GET /ping in flight (the backend was down) */
	S_CREATE,  /* CREATE DATABASE in flight */
	S_COMMIT,  /* a dead-letter runs (job) */
	S_ACKWAIT, /* a delivery could not be recorded: nothing new until an ack commits */
	S_THROTTLE, /* cur's write waits on the timer for the rate limit's tokens (max_rate) */
	S_STOPPED,
	S_NSTATES
};

/* What the pool job (job.req) does. */
enum replay_job_kind {
	WK_READ = 0,   /* read only (from read.from) */
	WK_DEAD,       /* dead-letter batch job.seq and finish it, then read */
	WK_DEAD_PART,  /* dead-letter lines [job.off, +job.len) of batch 0, no read */
	WK_HOLD,       /* move cur's write (batches 0..group_n) to the held store, then read */
};

/* A database the backend does not have: its batches wait in the held
 * store (replay_held.c). */
struct replay_held_db {
	char *db;
	uint32_t attempts; /* tries that found it still missing */
	uint64_t due;      /* uv_now() of its next try */
};

/* One of a backend's parallel connections. Lane i sends share i of the
 * round being delivered. */
struct replay_lane {
	struct http_client http;
	struct replay_worker *w;
	int inflight;
	uint64_t sent_ns;  /* monotonic time its request went out */
};

struct replay_worker {
	/* Fixed from replay_start on. */
	uv_loop_t *loop;
	struct wal *wal;
	const struct relay_backend_config *cfg;
	int id;                    /* the backend's wal id */
	struct replay_lane *lanes; /* nlanes of them when cfg->parallel > 1 */
	int nlanes;
	struct net_tls_ctx *tls;   /* https: the client context as last made (a reference), or NULL */

	enum replay_state state;   /* replay_set_state() only */
	int paused;                /* relayctl pause: nothing is sent (the flag is in the queue) */
	uv_timer_t timer;          /* backoff of a write, a probe, or a failed queue read or dead-letter */

	/* The round being delivered; the other one is prefetch.round. */
	struct replay_round rounds[2];
	/* The hours of shards (per db, rp and org) this worker's delivered writes
	 * fell in: a round only goes in lanes inside them (replay_round.h). */
	struct replay_hours hours;
	struct replay_round *cur;

	/* Reading the queue. */
	struct {
		uint64_t from;     /* next read starts here (0 = the cursor) */
		int wake;          /* data arrived, or relayctl changed the queue, while busy */
		int stale;         /* the queue changed under a running read of cur: read again */
	} read;

	/* The pool job: a queue read into cur, or a dead-letter. Parameters
	 * and results, the job's while busy. */
	struct {
		uv_work_t req;
		int busy;
		enum replay_job_kind kind;
		int rc;
		uint64_t seq;      /* WK_DEAD: the batch */
		int hold_new;      /* WK_HOLD: its database was not held before */
		int status;        /* the HTTP status a dead letter is stored with (0 = none) */
		uint32_t lines;    /* WK_DEAD_PART: the lines of the piece */
		uint32_t attempts; /* WK_DEAD, WK_DEAD_PART: the requests sent for it, this last one
		                    * included: the number the log says and the record keeps */
		size_t off, len;   /* ... and its bytes in batch 0's body */
		char dead_msg[300]; /* the message a dead letter is stored with */
		/* records the read found undecodable and moved aside
		 * (wal_quarantine): how many, the last one's sequence and
		 * why, for the loop to log */
		unsigned quarantined;
		uint64_t qseq;
		char qwhy[200];
	} job;

	/* A queue read or dead-letter that failed, done again after a backoff. */
	struct {
		int kind;          /* 1 + its enum replay_job_kind; 0 = none */
		uint32_t attempts; /* its failures in a row */
		char error[300];   /* why it failed */
	} redo;

	/* Recording deliveries (cumulative acks, beside the next write). */
	struct {
		uv_work_t req;
		uv_timer_t timer;  /* the next try of an ack that failed */
		int busy;
		int rc;
		int failing;       /* the last ack did not commit: nothing new is sent until one does */
		uint32_t attempts; /* failed acks in a row */
		uint64_t want;     /* delivered up to here */
		uint64_t inflight; /* the ack being committed */
		uint64_t done;     /* committed up to here */
		char error[300];   /* why the last ack failed */
	} ack;

	/* The next round, read and prepared on the pool while cur is in flight. */
	struct {
		uv_work_t req;
		struct replay_round *round;
		int busy;          /* running on the pool */
		int ready;         /* round holds what was pending from `from` on */
		int wanted;        /* cur is over: go on as soon as it is ready */
		int rc;
		int stale;         /* the queue changed under it: drop it */
		uint64_t from;     /* the sequence it read from */
	} prefetch;

	/* The write being tried: its request and its answers. */
	struct {
		struct http_client http; /* single writes, /ping probes, CREATE DATABASE */
		struct rbuf target;
		struct rbuf headers;
		struct rbuf form;        /* a statement's body (q=..&db=..&rp=..) */
		uint64_t sent_ns;        /* monotonic time the write (or statement) went out */
		uint32_t attempts;       /* failed attempts of this write */
		int db_created;          /* CREATE DATABASE succeeded for it */
		int lanes_waiting;       /* shares not yet answered (+1 while sending) */
		int fail_status;         /* first failure among the lanes of this round */
		uint64_t fail_retry_after;
		struct rbuf fail_body;
		char fail_err[160];
	} send;

	/* Held databases and their retries, beside the rounds (replay_held.c):
	 * the loop thread's, but for round, op and the job's results while
	 * busy (the pool job's). */
	struct {
		struct replay_held_db *dbs;
		size_t n, cap;
		uv_timer_t timer;        /* the next due database */
		struct http_client http; /* its own connection: rounds go on meanwhile */
		uv_work_t req;
		int busy;                /* a pool job runs */
		int op, rc;
		char *db;                /* the database being worked, or NULL */
		struct replay_round *round;
		int isolate;             /* a coalesced write was refused: one batch at a time */
		int created;             /* on_database_not_found: create did, this try */
		int refresh;             /* relayctl changed the queue, or a load failed: reload the list when free */
		int known;               /* the list was loaded from the store once: until then nothing is sent */
		uint32_t load_attempts;  /* loads of the list that failed in a row */
		uint64_t load_due;       /* uv_now() of the next load after one failed */
		uint64_t gen;            /* bumped by every hold (WK_HOLD) that commits */
		uint64_t read_gen;       /* gen when the running held read was queued */
		uint64_t upto;           /* delivered up to here (HOP_DONE) */
		int status;              /* a dead letter's status and message (HOP_DEAD) */
		char msg[300];
		uint32_t attempts;
		uint64_t sent_ns;        /* monotonic time its write went out */
		struct rbuf target, headers, form;
	} held;

	/* Pacing (max_rate, max_rate_bytes, rate_burst): one bucket of
	 * points and one of bytes for the whole backend, its lanes
	 * included, refilled by the loop's clock (uv_now). A reload sets
	 * them (replay_set_rate): cfg's values are those of the start. */
	struct {
		uint64_t points_per_s;   /* 0 = no limit */
		uint64_t bytes_per_s;    /* 0 = no limit */
		uint64_t burst_ms;
		struct token_bucket points, bytes;
		uint64_t since_ms;       /* uv_now() when S_THROTTLE was entered */
	} rate;

	/* 413 on a single batch: the pieces of its body still to send. */
	struct replay_pieces pieces;

	/* After a coalesced write was refused: one batch at a time up to here. */
	struct {
		uint64_t upto;     /* 0 = not isolating */
	} isolate;

	/* What status and /health show: REPLAY_STORAGE while a queue
	 * operation fails (its error), else what the backend's answers say
	 * (link, link_error). */
	struct {
		enum replay_health shown;
		char last_error[1024];
		enum replay_health link;
		char link_error[1024];
		/* The outage being told in the log (outage.h): begun and ended
		 * by replay_publish, reminded on remind_timer every remind_ms
		 * (0 = never), its backlog's end seen by replay_check_drained. */
		struct outage outage;
		uv_timer_t remind_timer;
		uint64_t remind_ms;
		struct outage_limits limits; /* the queue's limits as wal_append enforces them now */
		struct relay_ratelimit create_log; /* "created database" lines */
		int64_t last_delivery_ns;
	} health;

	/* Stopping. */
	int stopping;
	int handles;
	void (*stopped_cb)(struct replay_worker *w, void *arg);
	void *stopped_arg;

	struct replay_stats stats; /* the loop thread's: counted as answers come */
};

/* replay_handover_take / replay_handover_give (replay.h). */
struct replay_handover {
	enum replay_health link;
	char link_error[1024];
	struct outage outage;
	int64_t last_delivery_ns;
};

/*---- invariants, named ----*/

/* Batch seq is inside the isolation window (sent one batch at a time). */
static inline bool replay_isolating(const struct replay_worker *w, uint64_t seq)
{
	return w->isolate.upto && seq <= w->isolate.upto;
}

/* A 413 split of batch 0 of cur is under way. */
static inline bool replay_splitting(const struct replay_worker *w)
{
	return w->pieces.n > 0;
}

/* Every delivered batch is recorded (or its ack is being committed). */
static inline bool replay_ack_settled(const struct replay_worker *w)
{
	return w->ack.done >= w->ack.want;
}

/* A delivery is recorded by nothing yet: no ack commits, none waits on its timer. */
static inline bool replay_ack_orphaned(const struct replay_worker *w)
{
	return !replay_ack_settled(w) && !w->ack.busy && !uv_is_active((const uv_handle_t *)&w->ack.timer);
}

/* A queue operation fails (shown as REPLAY_STORAGE; nothing new is sent). */
static inline bool replay_storage_failing(const struct replay_worker *w)
{
	return w->redo.kind || w->ack.failing;
}

/* Between rounds: no write in flight, no pool job on cur. */
static inline bool replay_between_rounds(const struct replay_worker *w)
{
	return !w->job.busy && !w->send.lanes_waiting;
}

/* A request of the worker is in flight (a write, a share, a probe, a CREATE). */
static inline bool replay_request_in_flight(const struct replay_worker *w)
{
	return w->send.lanes_waiting > 0 || w->send.http.in_request;
}

/* The prefetched round starts exactly where the next read would. */
static inline bool replay_prefetch_fits(const struct replay_worker *w)
{
	return w->prefetch.ready && w->prefetch.from == w->read.from;
}

/* The prefetched round can never be used: it starts before the next read
 * (a coalesced group reached past it), found nothing (new batches may have
 * come since), or starts inside an isolation window (it was coalesced). */
static inline bool replay_prefetch_useless(const struct replay_worker *w)
{
	const struct replay_round *p = w->prefetch.round;
	return w->prefetch.ready &&
	       (w->prefetch.from < w->read.from || !p->nbatches || replay_isolating(w, p->batches[0].seq));
}

/* A rate limit is set: writes take tokens before they go. */
static inline bool replay_rate_limited(const struct replay_worker *w)
{
	return w->rate.points_per_s || w->rate.bytes_per_s;
}

/* The write waits for tokens (max_rate): the state says so. */
static inline bool replay_throttled(const struct replay_worker *w)
{
	return w->state == S_THROTTLE;
}

/* The timer waits for a backoff (or a failed queue operation's retry),
 * or, in S_THROTTLE, for the rate limit's tokens. */
static inline bool replay_timer_waiting(const struct replay_worker *w)
{
	return uv_is_active((const uv_handle_t *)&w->timer);
}

/*---- shared between replay*.c (all on the loop thread; none fails) ----*/

/* replay.c */
void replay_set_state(struct replay_worker *w, enum replay_state s); /* the one writer of w->state */
const char *replay_state_name(enum replay_state s);                  /* "idle", "read", ... */
void replay_publish(struct replay_worker *w);       /* recompute health.shown and last_error; log a change */
void replay_check_drained(struct replay_worker *w, int empty); /* the outage's backlog delivered? (empty: a read found nothing) */
void replay_set_link(struct replay_worker *w, enum replay_health h, const char *reason); /* the backend's state */
/*
 * Shards may be gone or new (a statement dropped or made a database or a
 * retention policy, or a write found no database): forget every hour the
 * worker knew, and drop a prefetched round prepared with them, so that
 * the next write into any hour goes whole again (replay_round.h, "Hours
 * of shards"). Loop thread.
 */
void replay_forget_hours(struct replay_worker *w);
/* The backoff after attempts failures: at least floor_ms and retry_min,
 * at most retry_max, Retry-After (seconds, 0 = none) honoured within. */
uint64_t replay_delay_after(const struct replay_worker *w, uint32_t attempts, uint64_t floor_ms,
                            uint64_t retry_after_s);
void replay_schedule(struct replay_worker *w, uint64_t delay_ms); /* BACKOFF, the timer started */
void replay_throttle(struct replay_worker *w, uint64_t delay_ms); /* THROTTLE: cur's write again after delay_ms */
void replay_next_round(struct replay_worker *w);    /* cur is finished: the prefetch, or a read */
void replay_begin_round(struct replay_worker *w);   /* per-write state afresh for a new cur */
void replay_delivered_upto(struct replay_worker *w, uint64_t seq); /* ack up to seq, then the next round */
void replay_read_again(struct replay_worker *w);    /* a read, or ACKWAIT while acks fail */
void replay_go_idle(struct replay_worker *w);       /* drop what is held: IDLE */
void replay_check_awake(struct replay_worker *w);   /* at every return to the loop: something will wake w */
void replay_finish_stop(struct replay_worker *w);   /* free and call back once nothing is left running */

/* replay_send.c */
/* Count batch b delivered at wall-clock now_ns: batches, points, bytes,
 * its latency since acceptance. */
void replay_count_delivered(struct replay_worker *w, const struct wal_batch *b, int64_t now_ns);
/* A split (413) batch is finished (its last piece delivered or
 * dead-lettered): it counts as one delivered batch if any piece was. */
void replay_count_split_done(struct replay_worker *w, const struct wal_batch *b);
/* Count a write request answered: its outcome, and its duration since
 * sent_ns (monotonic). */
void replay_count_answer(struct replay_worker *w, enum outcome o, uint64_t sent_ns);
/* Count a retry of answer (status, body): its reason. */
void replay_count_retry(struct replay_worker *w, int status, const char *body, size_t len);
/* What answer r to a request carrying b means: outcome_classify for line
 * protocol; for a statement backend_api_statement_outcome, *a then
 * holding its error text as the body when a 2xx carried one (err[0..errlen)
 * holds it). *a is r otherwise. */
enum outcome replay_classify(const struct wal_batch *b, const struct http_response *r, struct http_response *a,
                             char *err, size_t errlen);
void replay_send_current(struct replay_worker *w);  /* SEND cur's write (or shares); no-op when stopping */
void replay_probe(struct replay_worker *w);         /* PROBE: GET /ping */

/* replay_held.c */
void replay_held_init(struct replay_worker *w);     /* at start: its handles, the held databases of the store */
void replay_held_stop(struct replay_worker *w);     /* close its handles */
void replay_held_free(struct replay_worker *w);
int replay_held_has(const struct replay_worker *w, const char *db); /* db is held: its batches go to the store */
int replay_held_add(struct replay_worker *w, const char *db);       /* 1 when it was not held before */
void replay_held_committed(struct replay_worker *w, const char *db); /* a hold of db committed (after_job) */
int replay_held_known(struct replay_worker *w);     /* the list is loaded (tried now if not): 0, or why not */
void replay_held_kick(struct replay_worker *w);     /* try what is due, or wait for it */
void replay_held_wake(struct replay_worker *w, const char *db); /* db (NULL: all) due now (CREATE DATABASE, retry) */
int replay_held_retry_now(struct replay_worker *w); /* relayctl retry: 0 when something is held */
void replay_held_refresh(struct replay_worker *w);  /* relayctl changed the queue: reload the list */

/* replay_queue.c */
void replay_start_job(struct replay_worker *w, enum replay_job_kind kind); /* READ or COMMIT on the pool */
void replay_job_failed(struct replay_worker *w, enum replay_job_kind kind, int rc); /* shown, redone after a backoff */
void replay_job_ok(struct replay_worker *w);        /* a queue operation worked: a failing one is over */
void replay_redo_job(struct replay_worker *w);      /* the failed job again, after its backoff */
void replay_start_ack(struct replay_worker *w);     /* commit the cursor up to ack.want, unless one runs */
void replay_ack_timer_cb(uv_timer_t *t);            /* ack.timer: a failed ack again */
void replay_ack_recovered(struct replay_worker *w); /* an ack failure is over */
void replay_start_prefetch(struct replay_worker *w); /* read the round after cur, if it can be used */

#endif
