/*
 * outage: the story of one backend's outage in the log, as a few lines:
 * when it stopped delivering (with the error), a reminder every so often
 * while it stays so (the backlog, its age, when the queue fills at the
 * rate it grows), when it delivers again (how long it was away, the
 * backlog to deliver), when that backlog has drained (how long it took).
 *
 * Pure: no clock, no I/O, no libuv. The worker passes the wall-clock time
 * and the queue's figures (wal_backend_stat) in, and logs the text this
 * module writes; tests drive it with made-up times.
 */
#ifndef RELAY_OUTAGE_H
#define RELAY_OUTAGE_H

#include <stddef.h>
#include <stdint.h>

#include "relay/delivery/replay.h"

/* A backend's queue at one moment (from struct wal_backend_stat). */
struct outage_figures {
	uint64_t batches, points, bytes; /* pending in the log */
	uint64_t held_bytes;             /* held for missing databases: they count toward the limit too */
	int64_t oldest_accept_ns;        /* of the oldest pending batch; 0 = none */
};

/* The limits the reminder measures against (0 = none). */
struct outage_limits {
	uint64_t max_bytes;  /* max_size: writes get 503 beyond */
	uint64_t max_age_ms; /* max_age: writes get 503 once the oldest is older */
};

/*
 * One backend's outage. Zero-initialised: no outage (health REPLAY_UP).
 * Times are wall-clock nanoseconds, as the caller read them.
 */
struct outage {
	enum replay_health health; /* REPLAY_UP: none under way */
	int64_t start_ns;          /* when it stopped delivering */
	int64_t mark_ns;           /* the start, or the last reminder: the rate is measured since */
	uint64_t mark_bytes;       /* pending + held bytes then */
	/* After it: the backlog it left, being delivered. */
	int draining;
	int64_t up_ns;             /* when it delivered again */
	uint64_t backlog_batches;  /* pending then */
	uint64_t drain_to;         /* the caller's mark of the backlog's end (a sequence) */
};

/*
 * The backend's health changed from old to h (h not REPLAY_UP) at now_ns,
 * its queue as f says. From up, an outage begins; from another not-up
 * health, the one under way goes on (its start kept) in the new health.
 * Writes the line that tells it (the error err, NUL-terminated) to
 * buf[0..len) (always terminated, cut short if too small).
 */
void outage_begin(struct outage *o, const char *name, enum replay_health h, const char *err, int64_t now_ns,
                  const struct outage_figures *f, char *buf, size_t len);

/*
 * The reminder while the outage goes on, at now_ns (err: why, as shown):
 * how long, what is pending, how old, and when the queue is full at the
 * rate its bytes grew since the last reminder (or the start). Writes it
 * to buf and returns 1; returns 0 (buf "") when no outage is under way.
 */
int outage_remind(struct outage *o, const char *name, const char *err, int64_t now_ns, const struct outage_figures *f,
                  const struct outage_limits *lim, char *buf, size_t len);

/*
 * The backend delivers again at now_ns: how long it was away, the backlog
 * it has to deliver (f), or "nothing pending". A backlog is remembered (draining), with drain_to
 * (the caller's mark: the sequence past the last batch pending now) for
 * outage_drained. Returns 1 with the line in buf, or 0 (buf "") when no
 * outage was under way.
 */
int outage_end(struct outage *o, const char *name, int64_t now_ns, const struct outage_figures *f, uint64_t drain_to,
               char *buf, size_t len);

/*
 * The backlog left by the outage is delivered (the caller decides when:
 * delivery reached drain_to, or the queue is empty): how long that took.
 * Returns 1 with the line in buf and draining over, or 0 (buf "") when
 * nothing was draining.
 */
int outage_drained(struct outage *o, const char *name, int64_t now_ns, char *buf, size_t len);

/* Forget a draining backlog (the backend went away again before it was
 * delivered: the next outage's lines tell the rest). */
void outage_forget_backlog(struct outage *o);

/* ns as a person reads it: "350ms", "45s", "10m2s", "3h20m", "2d3h"
 * (negative counts as 0). */
void outage_format_duration(int64_t ns, char *buf, size_t len);
/* bytes as "512 B", "1.2 MiB", "1 GiB". */
void outage_format_bytes(uint64_t bytes, char *buf, size_t len);

#endif
