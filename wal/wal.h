/*
 * wal: relayd's durable queue, a library on LMDB and libc only. It knows
 * nothing of HTTP, libuv, YAML or logging: it stores batches, tells the
 * caller what happened through return codes, and never logs.
 *
 * Model: one LMDB environment holds one shared log of batches, each written
 * once, keyed by a 64-bit sequence number in acceptance order. Every backend
 * has a cursor into that log (the first sequence it has not yet finished
 * with) and exact counters of what is pending for it. A batch carries a
 * bit mask of the backends it is routed to; it is deleted once every
 * backend's cursor has passed it. docs/architecture.md draws the format.
 *
 * Threads: a struct wal may be used from several threads at once. Every
 * LMDB transaction begins and ends inside one wal_* call, so no transaction
 * ever spans a caller's callback, and all data handed out is copied.
 *
 * Errors: functions return 0 or a negative code: -errno from the system,
 * LMDB's codes (MDB_*), or the WAL_E* codes below. wal_strerror() names any
 * of them.
 */
#ifndef RELAY_WAL_H
#define RELAY_WAL_H

#include <stddef.h>
#include <stdint.h>

/* The on-disk format this code reads and writes. */
#define WAL_FORMAT_VERSION 1
/* At most this many backends (one bit each in a batch's route mask). */
#define WAL_MAX_BACKENDS 64

#define WAL_EFULL      (-20001) /* LMDB map full or disk full: nothing of the commit stored; retry later */
#define WAL_ELIMIT     (-20002) /* (per batch) a backend's byte limit would be passed */
#define WAL_EAGE       (-20003) /* (per batch) a backend's oldest pending batch is older than its age limit */
#define WAL_EVERSION   (-20004) /* the queue has a format version this code does not handle */
#define WAL_ECORRUPT   (-20005) /* a stored record cannot be decoded */
#define WAL_ELOCKED    (-20006) /* another process holds the data directory for writing */
#define WAL_ENOBACKEND (-20007) /* no such backend in this queue */
#define WAL_ETOOMANY   (-20008) /* more than WAL_MAX_BACKENDS backends */
#define WAL_EINVAL     (-20009) /* bad argument (name too long, sequence out of range...) */
#define WAL_ENOTQUEUE  (-20010) /* the directory holds no relayd queue (read-only open) */

/* Flags for wal_options.flags. */
#define WAL_F_RDONLY 0x1 /* open read-only (relayctl beside a live relayd); never creates */

struct wal;

struct wal_options {
	/* LMDB map size in bytes: the most the queue file may grow to. 0 means
	 * 64 MiB. Ignored (the file's own size is used) with WAL_F_RDONLY. */
	uint64_t map_size;
	unsigned flags; /* WAL_F_* */
};

/*
 * A batch as appended and as read back. Strings are NUL-terminated; NULL
 * or "" means absent. On append the caller owns everything and the wal
 * copies it inside the commit. On read (wal_read) every pointer points into
 * one allocation owned by the struct: release it with wal_batch_release.
 */
struct wal_batch {
	uint64_t seq;         /* out: its sequence number once stored */
	uint64_t route;       /* bit i set = routed to backend id i */
	int64_t accept_ns;    /* acceptance time, ns since the epoch */
	uint32_t lines;       /* points in body */
	uint8_t precision;    /* the request's timestamp precision (relay's enum) */
	const char *db, *rp;  /* target database and retention policy */
	const char *user, *password; /* credentials the client sent */
	const char *org, *token;     /* v2 organisation and token, when sent */
	const char *body;     /* line protocol, every line ends with '\n' */
	size_t body_len;
	int result;           /* out of wal_append: 0 stored, WAL_ELIMIT or WAL_EAGE refused */
	int refused_by;       /* out: backend id whose limit refused it, or -1 */
	void *priv_;          /* owned allocation of a batch read back */
};

/* What is pending for one backend. */
struct wal_backend_stat {
	char name[65];
	int id;
	uint64_t cursor;           /* first sequence not yet finished */
	uint64_t pending_batches;
	uint64_t pending_points;
	uint64_t pending_bytes;    /* body bytes */
	int64_t oldest_accept_ns;  /* of the first pending batch; 0 when none */
	uint64_t dead_batches;     /* dead-lettered (kept apart) */
	uint64_t delivered_batches;
	uint64_t delivered_points;
	int64_t last_delivery_ns;  /* 0 = never */
};

/* Global figures. */
struct wal_stat {
	uint64_t next_seq;    /* the sequence the next batch gets */
	uint64_t batches;     /* batches in the log */
	uint64_t map_size;    /* current map size */
	uint64_t file_pages;  /* pages in use (last page + 1) */
	uint32_t page_size;
	uint32_t format_version;
};

/*
 * Open (and when needed create) the queue in directory dir. Without
 * WAL_F_RDONLY the directory is created mode 0700 if missing, its files are
 * 0600 (batches carry credentials), an exclusive lock on dir/relayd.lock is
 * taken (a second writer gets WAL_ELOCKED), and a new queue is made durable
 * (first commit, then an fsync of the directory) before this returns. The
 * format version is checked before anything else is read or written.
 * On success *out is a handle to release with wal_close; on failure *out is
 * NULL and nothing needs releasing. Errors: -errno (e.g. -ENOENT for a
 * missing directory with WAL_F_RDONLY), WAL_ELOCKED, WAL_EVERSION,
 * WAL_ENOTQUEUE, WAL_ECORRUPT, LMDB codes.
 */
int wal_open(const char *dir, const struct wal_options *opt, struct wal **out);

/* Close the environment and release the lock. No call may be in progress. */
void wal_close(struct wal *w);

/*
 * Find backend name, creating its queue if it is new (a new queue starts
 * empty: it gets only batches appended from now on). *id receives its
 * stable id (0..WAL_MAX_BACKENDS-1), used in route masks. With
 * WAL_F_RDONLY only finds. Errors: WAL_ENOBACKEND (read-only, unknown),
 * WAL_ETOOMANY, WAL_EINVAL (name empty or over 64 bytes), LMDB codes.
 */
int wal_backend_open(struct wal *w, const char *name, int *id);

/* Set the limits wal_append enforces for backend id (kept in memory only):
 * max_bytes of pending body bytes (0 = none), max_age_ns of the oldest
 * pending batch (0 = none). */
int wal_backend_set_limits(struct wal *w, int id, uint64_t max_bytes, int64_t max_age_ns);

/*
 * Append n batches in ONE transaction and commit it durably (LMDB's
 * default flags: the commit fsyncs data and meta pages) before returning:
 * the group commit. Each batch is checked against the limits of every
 * backend in its route; a batch that would pass one is not stored
 * (b[i].result = WAL_ELIMIT or WAL_EAGE, b[i].refused_by = the backend id),
 * the others are (b[i].result = 0, b[i].seq set). now_ns is the time the
 * age limit is measured against.
 * Returns 0 when the commit succeeded (look at each result), or a negative
 * code when it failed and NOTHING was stored: WAL_EFULL (map or disk full),
 * -EIO and other -errno, LMDB codes. After MDB_PANIC the environment is
 * reopened on the next call.
 */
int wal_append(struct wal *w, struct wal_batch *b, size_t n, int64_t now_ns);

/*
 * Copy out up to max batches pending for backend id, starting at its
 * cursor or at from_seq if that is further (0 = the cursor), stopping early once max_bytes of body bytes have been copied
 * (at least one batch is returned when any is pending). The read
 * transaction ends before this returns. *count gets the number read into
 * out[0..]; release each with wal_batch_release.
 */
int wal_read(struct wal *w, int id, uint64_t from_seq, size_t max, size_t max_bytes, struct wal_batch *out,
             size_t *count);

/* Free what wal_read allocated for b. */
void wal_batch_release(struct wal_batch *b);

/*
 * Mark every batch of backend id up to and including seq finished
 * (delivered), in one durable commit: the cursor moves past seq, the
 * pending counters drop, and batches every backend has passed are deleted
 * in the same transaction (so the file stops growing as data is
 * delivered). Errors: WAL_ENOBACKEND, WAL_EINVAL (seq beyond the log), LMDB.
 */
int wal_ack(struct wal *w, int id, uint64_t seq, int64_t now_ns);

/*
 * Dead-letter batch seq of backend id: a copy goes to the backend's
 * dead-letter queue (it survives restarts) with the backend's status and
 * message, the attempt count and now_ns. With body != NULL the copy holds
 * that body and line count (the lines that failed) instead of the batch's.
 * With finish, the batch is finished for id in the same commit: the cursor
 * moves past seq (every batch before it counts as delivered) and the
 * pending counters drop. Errors: WAL_EINVAL (no such pending batch for
 * id), WAL_ENOBACKEND, WAL_EFULL, LMDB codes.
 */
int wal_dead_letter(struct wal *w, int id, uint64_t seq, const char *body, size_t body_len, uint32_t lines,
                    int status, const char *msg, uint32_t attempts, int64_t now_ns, int finish);

/* Figures for backend name (works read-only). Errors: WAL_ENOBACKEND. */
int wal_backend_stat(struct wal *w, const char *name, struct wal_backend_stat *st);

/* Global figures. */
int wal_stat(struct wal *w, struct wal_stat *st);

/* A static description of any code this library returns. */
const char *wal_strerror(int rc);

#endif
