/*
 * replay_round: the pure step of delivery, from batches copied out of the
 * queue to the writes that carry them. No libuv, no sockets, no queue
 * transaction: what is here runs on the thread pool (a read, a prefetch)
 * or on the loop thread alike, and is unit-tested on its own
 * (test/unit/test_replay_round.c).
 *
 *   - coalescing: consecutive batches for the same target (db, rp,
 *     precision, credentials) form one write, up to the backend's
 *     batch_max_lines and batch_max_bytes; a statement (WAL_KIND_STATEMENT)
 *     is a barrier: a round ends before it, and it is a round of its own;
 *   - lanes: a write's lines shared out among `parallel` connections by
 *     series (all lines of a series in one share, in queue order), the
 *     shares evened out by bytes;
 *   - rescaling: a v2 backend gets timestamps in minutes or hours as
 *     seconds;
 *   - 413 pieces: a batch too large for the backend cut in halves, then to
 *     the largest size it accepted, at line boundaries.
 *
 * Memory: a round owns its batches (wal_batch copies: replay_round_release
 * frees them) and its buffers (replay_round_free frees those, for good).
 * Nothing here keeps a pointer to its arguments after it returns.
 */
#ifndef RELAY_REPLAY_ROUND_H
#define RELAY_REPLAY_ROUND_H

#include <stddef.h>
#include <stdint.h>

#include "relay/base/config.h"
#include "relay/base/util.h"
#include "wal/wal.h"

#define REPLAY_READ_MAX 512      /* batches copied out per read */
#define REPLAY_MAX_LANES 16      /* parallel writes per backend, at most */
#define REPLAY_PIECES_MAX 64     /* 413 pieces of one batch, at most */

/*
 * Hours of shards: influxd 1.6.7 can hide a point of concurrent writes
 * that create a shard, though it answers 204 (docs/influxdb.md,
 * "Concurrent writes into a new shard"). Shard groups last whole hours and
 * start on whole hours, so a write whose points all fall in hours this
 * worker has written into before (for that db, rp and org) creates no
 * shard.
 * A round that touches another hour goes as one write, not in lanes; once
 * delivered, its hours are known. A worker remembers the last
 * REPLAY_HOURS_MAX (a ring); a forgotten hour only costs one more single
 * write. It forgets them all when shards may have gone (a statement
 * delivered, a database not found): the memory is a promise that the
 * shards exist.
 */
#define REPLAY_HOURS_MAX 256
struct replay_hour {
	uint32_t target;    /* hash of db, rp and org */
	int64_t hour;       /* since the epoch, rounded down */
};
struct replay_hours {
	struct replay_hour h[REPLAY_HOURS_MAX];
	unsigned n;         /* entries in use */
	unsigned next;      /* the one to replace next, when full */
};

/* Whether k holds (target, hour). */
int replay_hours_has(const struct replay_hours *k, uint32_t target, int64_t hour);
/* Add (target, hour) to k unless it is there (the oldest goes when full). */
void replay_hours_add(struct replay_hours *k, uint32_t target, int64_t hour);
/* Add every entry of from to k. */
void replay_hours_merge(struct replay_hours *k, const struct replay_hours *from);

/* One lane's part of a round: the lines of the series given to it. */
struct replay_share {
	struct rbuf body;
	struct rbuf gz;     /* body gzipped, when gzipped is set */
	int gzipped;
	int done;           /* answered 2xx (or empty) */
};

/* Scratch of a round's split among the lanes, kept for the next round
 * (its arrays only grow). */
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
 * thread during a read, the loop thread otherwise. A zeroed round is
 * empty and ready for use.
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
	/* Set by the worker before a fill: the hours it has written into
	 * (a copy: the fill may run on the pool while the worker adds more). */
	struct replay_hours known;
	/* Set by replay_round_prepare for a write of line protocol: the
	 * hours its points fall in (the first REPLAY_HOURS_MAX), to add to
	 * the worker's once it is delivered, and whether one of them was
	 * not known (the write then went whole, not in lanes). */
	struct replay_hours touched;
	int new_hours;
};

/*
 * 413 pieces: byte ranges of batches[0]'s body still to send, in order,
 * the front one next. n == 0: the batch is not being split.
 */
struct replay_pieces {
	struct { size_t off, len; } range[REPLAY_PIECES_MAX];
	int n;
	size_t fit;         /* largest piece the backend accepted */
	int delivered_any;  /* a piece of the batch was delivered (it counts as delivered, once) */
};

/* Whether a and b go to the same place the same way: both line protocol
 * (a statement is never coalesced), db, rp, precision and every
 * credential equal. Only such batches are coalesced. */
int replay_round_same_target(const struct wal_batch *a, const struct wal_batch *b);

/*
 * Make r (r->nbatches > 0) ready to send for backend cfg with nlanes
 * connections (0 or 1: one). Coalesces from batches[0] the consecutive
 * batches for the same target up to cfg->batch_max_lines and
 * cfg->batch_max_bytes (the first batch always, even alone beyond them);
 * with isolate, batches[0] goes alone. With compress (meant for the thread
 * pool: it costs CPU), a write of more than one series is shared out
 * among the lanes when nlanes > 1, not isolating, and every point falls
 * in an hour of r->known (lane_mode; r->touched and r->new_hours say
 * which hours it touched), and the
 * write (or each share) is gzipped when cfg->gzip asks for it and zlib
 * succeeds. Reads only cfg and r; writes only r. Never fails (allocation
 * failure aborts, as everywhere in relayd).
 */
void replay_round_prepare(struct replay_round *r, const struct relay_backend_config *cfg, int nlanes, int isolate,
                          int compress);

/*
 * For a v2 backend (cfg->type), rewrite each batch of r in minutes or
 * hours to seconds (timestamps multiplied, precision set to seconds). A
 * batch whose timestamps cannot be converted (one would overflow, or a
 * line has none) is left as it is and a warning logged: the backend then
 * refuses it and it is dead-lettered, never stored at the wrong time.
 * The queue keeps the batch as it was written.
 */
void replay_round_rescale(struct replay_round *r, const struct relay_backend_config *cfg);

/* The sequence of the last batch of r's write (r->group_n > 0). */
uint64_t replay_round_last_seq(const struct replay_round *r);

/* Drop r's batches (their copies are freed); its buffers stay for reuse. */
void replay_round_release(struct replay_round *r);

/* Free everything r holds; r is then a zeroed, empty round. */
void replay_round_free(struct replay_round *r);

/*
 * The hash of a series key (measurement and tags, as written, n bytes)
 * that is the same whatever the order of its tags: InfluxDB sorts a
 * point's tags, so "m,a=1,b=2" and "m,b=2,a=1" are one series.
 */
uint32_t replay_series_hash(const char *p, size_t n);

/* The newlines in [p, p + len): the lines of a validated body. */
uint32_t replay_count_lines(const char *p, size_t len);

/* gzip src into out (replacing what out held; level 1). Returns 0, or -1
 * if zlib fails (out is then to be ignored). */
int replay_gzip(struct rbuf *out, const char *src, size_t len);

/*
 * 413 on body (a whole batch, len bytes, every line ending in '\n'):
 * split the front piece (the whole body when p->n == 0) in two at the
 * newline nearest its middle. Returns 0, or -1 when it cannot be split
 * (a single line, or no room for another piece): p is then unchanged
 * apart from starting the pieces (p->n = 1 on a fresh split).
 */
int replay_pieces_halve(struct replay_pieces *p, const char *body, size_t len);

/* The front piece was delivered (fit grows to its size if larger) and is
 * dropped; the next one is cut to at most fit bytes at a line boundary
 * when it is larger (a single longer line stays as it is). Returns the
 * pieces left. */
int replay_pieces_delivered(struct replay_pieces *p, const char *body);

/* The front piece is finished otherwise (dead-lettered): drop it.
 * Returns the pieces left. */
int replay_pieces_pop(struct replay_pieces *p);

#endif
