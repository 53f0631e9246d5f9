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

/* The on-disk format this code reads and writes: 3 (a CRC32C in every batch
 * record, since 2; a batch's kind in header byte 34, since 3). A store of
 * format 1 or 2 is upgraded by relayd's own wal_open; the read-only and
 * shared opens refuse it (WAL_EVERSION) until then. */
#define WAL_FORMAT_VERSION 3
/* At most this many backends (one bit each in a batch's route mask). */
#define WAL_MAX_BACKENDS 64
#define WAL_NAME_MAX 64 /* bytes of a backend name */
/* The timestamp precision codes of the format (wal_batch.precision).
 * relay's enum lp_precision is these codes, in this order: lineproto.c
 * checks it when it compiles. */
#define WAL_PRECISION_NS 0
#define WAL_PRECISION_US 1
#define WAL_PRECISION_MS 2
#define WAL_PRECISION_S  3
#define WAL_PRECISION_M  4
#define WAL_PRECISION_H  5
#define WAL_PRECISION_MAX WAL_PRECISION_H
/* What a batch holds (wal_batch.kind). A statement is InfluxQL that changes
 * state (CREATE DATABASE, CREATE RETENTION POLICY, ...), sent through
 * /query and delivered to every backend in order with the writes: its body
 * is the query text ending in '\n', its lines 0, db and rp the query's
 * db and rp parameters (may be ""). */
#define WAL_KIND_LINES     0
#define WAL_KIND_STATEMENT 1

#define WAL_EFULL      (-20001) /* LMDB map full or disk full: nothing of the commit stored; retry later */
#define WAL_ELIMIT     (-20002) /* (per batch) a backend's byte limit would be passed */
#define WAL_EAGE       (-20003) /* (per batch) a backend's oldest pending batch is older than its age limit */
#define WAL_EVERSION   (-20004) /* the queue has a format version this code does not handle */
#define WAL_ECORRUPT   (-20005) /* a stored record cannot be decoded */
#define WAL_ELOCKED    (-20006) /* another process holds the data directory for writing */
#define WAL_ENOBACKEND (-20007) /* no such backend in this queue */
#define WAL_ETOOMANY   (-20008) /* more than WAL_MAX_BACKENDS backends */
#define WAL_EINVAL     (-20009) /* bad argument (name too long, sequence out of range...) */
#define WAL_ENOTQUEUE  (-20010) /* the directory holds no relayd queue (read-only or shared open) */
#define WAL_ENOTFOUND  (-20011) /* no such batch (pending or dead) for this backend */
#define WAL_ETOOBIG    (-20012) /* (per batch) a string or the body is larger than a record holds */
#define WAL_EDAMAGED   (-20013) /* data.mdb itself is damaged (cut short, a meta page or a tree page
                                 * scribbled, not an LMDB file): refused before LMDB maps it */

/* The most a stored batch holds: each of its strings (db, rp, user,
 * password, org, token) and its body. A larger batch is refused by
 * wal_append (result WAL_ETOOBIG); callers check first to say why. */
#define WAL_MAX_STRING 65535u
#define WAL_MAX_BODY   UINT32_MAX

/* Flags for wal_options.flags. */
#define WAL_F_RDONLY 0x1 /* open read-only (relayctl beside a live relayd); never creates */
#define WAL_F_SHARED 0x2 /* open read-write beside a live relayd (relayctl): no relayd.lock, never
                          * creates or initialises a queue, never creates a backend */

/* Backend flags, kept in the backend record (wal_backend_stat.flags). */
#define WAL_BACKEND_PAUSED 0x1 /* delivery paused by the operator; the queue keeps filling */

struct wal;

struct wal_options {
	/* LMDB map size in bytes: the most the queue file may grow to. 0 means
	 * 64 MiB (with WAL_F_SHARED: the size the file records, i.e. the
	 * largest any writer used). Ignored with WAL_F_RDONLY, which maps the
	 * file's length plus 64 MiB (not the size the file records: relayd's
	 * headroom may not fit under an address-space limit), and maps again
	 * when the file grows past it. A WAL_F_SHARED opener beside relayd must pass relayd's
	 * size (config_map_size): a larger one could let it write past the end
	 * of relayd's map, which relayd would see as MDB_MAP_RESIZED (and
	 * answer by mapping that larger size, wali_remap). */
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
	uint8_t precision;    /* the request's timestamp precision (WAL_PRECISION_*) */
	uint8_t kind;         /* WAL_KIND_LINES or WAL_KIND_STATEMENT */
	const char *db, *rp;  /* target database and retention policy */
	const char *user, *password; /* credentials the client sent */
	const char *org, *token;     /* v2 organisation and token, when sent */
	const char *body;     /* line protocol, every line ends with '\n' */
	size_t body_len;
	int result;           /* out of wal_append: 0 stored; WAL_ELIMIT, WAL_EAGE, WAL_ETOOBIG or
	                       * WAL_ENOBACKEND refused */
	int refused_by;       /* out: backend id whose limit refused it, or -1 */
	/* private: the queue's own (wal_batch_release frees it) */
	void *priv_;          /* owned allocation of a batch read back */
};

/* What is pending for one backend. */
struct wal_backend_stat {
	char name[WAL_NAME_MAX + 1];
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
	uint32_t flags;            /* WAL_BACKEND_* */
	int paused;                /* flags & WAL_BACKEND_PAUSED */
	uint64_t dead_bytes;       /* body bytes of the dead letters */
	int64_t created_ns;        /* when its queue was created */
	uint64_t corrupt_seq;      /* a record that does not decode, met before the first good pending
	                            * batch (it stops delivery until quarantined); 0 = none */
	/* Held: batches of databases the backend does not have, moved out of
	 * the log (wal_hold). Not in pending_* nor oldest_accept_ns, which are
	 * the log's; counted toward the backend's byte limit. */
	uint64_t held_batches;
	uint64_t held_points;
	uint64_t held_bytes;       /* body bytes */
};

/* Global figures. */
struct wal_stat {
	uint64_t next_seq;    /* the sequence the next batch gets */
	uint64_t batches;     /* batches in the log */
	uint64_t map_size;    /* this handle's map size (WAL_F_RDONLY: what it maps, not relayd's) */
	uint64_t file_pages;  /* pages in use (last page + 1) */
	uint32_t page_size;
	uint32_t format_version;
};

/*
 * Open (and when needed create) the queue in directory dir. Without
 * WAL_F_RDONLY or WAL_F_SHARED (relayd's own open) the directory is
 * created mode 0700 if missing, its files are 0600 (batches carry
 * credentials), an exclusive lock on dir/relayd.lock is taken (a second
 * relayd gets WAL_ELOCKED), and a new queue is made durable (first commit,
 * then an fsync of the directory) before this returns.
 * WAL_F_RDONLY and WAL_F_SHARED open only an existing, initialised queue
 * and never touch relayd.lock, so they work while relayd runs: LMDB
 * serialises the writers. WAL_F_SHARED may write (every change is one
 * LMDB write transaction, as relayd's are) but never creates the
 * directory, the data file, the format record or a DBI: a queue that
 * is missing or half-initialised is WAL_ENOTQUEUE or WAL_ECORRUPT, never
 * initialised behind relayd's back. When either creates LMDB's lock.mdb
 * (none was there), the new file is given to data.mdb's owner and group
 * (when the opener may: root), so that a relayd running as its own user
 * can open the queue a root relayctl looked at.
 * Before LMDB maps data.mdb, the file is checked with pread alone
 * (wal_file.h): LMDB's two meta pages, and every tree page LMDB could
 * follow, each inside the file (a file cut short is SIGBUS for LMDB); a damaged file is WAL_EDAMAGED, an LMDB
 * file of another data version WAL_EVERSION (wal_open_why says why). An
 * empty data.mdb is a new queue for relayd's open, WAL_ENOTQUEUE for the
 * others.
 * The format version is checked before anything else is read or written.
 * On success *out is a handle to release with wal_close; on failure *out is
 * NULL and nothing needs releasing. Errors: -errno (e.g. -ENOENT for a
 * missing directory with WAL_F_RDONLY or WAL_F_SHARED), WAL_ELOCKED,
 * WAL_EDAMAGED, WAL_EVERSION, WAL_ENOTQUEUE, WAL_ECORRUPT, WAL_EINVAL (both
 * flags), LMDB codes.
 */
int wal_open(const char *dir, const struct wal_options *opt, struct wal **out);

/* wal_open, and when it fails with WAL_EDAMAGED or WAL_EVERSION, what is
 * wrong with data.mdb in words (no file name) in why[0..whylen); "" for
 * any other result. */
int wal_open_why(const char *dir, const struct wal_options *opt, struct wal **out, char *why, size_t whylen);

/* The format version wal_open upgraded the store from (relayd's own open
 * of a store of format 1: every record rewritten with its checksum; of
 * format 1 or 2: the format record changed; in one transaction), 0 when it
 * did not; *records (may be NULL) gets how many records were rewritten
 * (0 from format 2: its records are format-3 records of kind 0). */
unsigned wal_upgraded_from(const struct wal *w, uint64_t *records);

/* Close the environment and release the lock. No call may be in progress. */
void wal_close(struct wal *w);

/*
 * Find backend name, creating its queue if it is new (a new queue starts
 * empty: it gets only batches appended from now on). *id receives its
 * stable id (0..WAL_MAX_BACKENDS-1), used in route masks. With
 * WAL_F_RDONLY or WAL_F_SHARED only finds (backends are relayd's to
 * create). Errors: WAL_ENOBACKEND (read-only or shared, unknown),
 * WAL_ETOOMANY, WAL_EINVAL (name empty or over WAL_NAME_MAX bytes),
 * LMDB codes.
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
 * nor is one the record format cannot hold (WAL_ETOOBIG: a string over
 * WAL_MAX_STRING or a body over WAL_MAX_BODY), one with an accept_ns the
 * format does not hold (WAL_EINVAL: before 1970 or after 2200) or one
 * routed to a backend this process did not open (WAL_ENOBACKEND): one
 * batch's fault never fails
 * the others, which are stored (b[i].result = 0, b[i].seq set). now_ns is
 * the time the age limit is measured against.
 * Returns 0 when the commit succeeded (look at each result), or a negative
 * code when it failed and NOTHING was stored: WAL_EFULL (map or disk full),
 * -EIO and other -errno, LMDB codes. After MDB_PANIC the environment is
 * reopened on the next call.
 */
int wal_append(struct wal *w, struct wal_batch *b, size_t n, int64_t now_ns);

/*
 * Copy out up to max batches pending for backend id, starting at its
 * cursor or at from_seq if that is further (0 = the cursor), stopping
 * early once max_bytes of body bytes have been copied (at least one batch
 * is returned when any is pending). Never a batch below the cursor, even
 * when from_seq is older (a worker's in-memory position after a purge).
 * The read transaction ends before this returns. *count gets the number
 * read into out[0..]; release each with wal_batch_release.
 * A record that does not decode (see wal_quarantine) ends the read: the
 * good batches before it are returned (0); when it is the very first
 * record the read would return, the result is WAL_ECORRUPT with *count
 * 0. A record that does not decode is taken as routed to every backend
 * (its route cannot be trusted): it stops each backend whose cursor has
 * not passed it, until each has quarantined it.
 */
int wal_read(struct wal *w, int id, uint64_t from_seq, size_t max, size_t max_bytes, struct wal_batch *out,
             size_t *count);

/*
 * Quarantine the record that stops wal_read. In ONE durable write
 * transaction: find the first record at or after max(from, cursor) of
 * backend id that wal_read would return or stop at. If it decodes (or
 * nothing is pending), nothing changes: WAL_ENOTFOUND (read again). If
 * it does not decode: its raw bytes go to the dead-letter queue, marked
 * corrupt (wal_dead.corrupt, msg = why, status 0, attempts 0, dead_ns
 * the current time), of id and of every other backend whose cursor had
 * not passed it (its route cannot be trusted, so it was pending for each
 * of them as far as anyone can tell); the record is deleted from the log,
 * so that every cursor is past it without moving over any good batch
 * (batches between the cursor and it, in a worker's hands, stay
 * pending); those backends' pending counters are recounted from the log
 * (its own counts cannot be trusted: this reads their whole backlog) and
 * their dead counters count it (1 batch, its raw size in bytes). *seq
 * gets its sequence, why[0..whylen) (may be NULL) what is wrong.
 * Returns 0; WAL_ENOTFOUND; WAL_ENOBACKEND, WAL_EINVAL (read-only
 * handle), WAL_EFULL, LMDB codes. A worker that got WAL_ECORRUPT from
 * wal_read calls this with the from_seq it read from, then reads again
 * (also after WAL_ENOTFOUND: another backend's worker quarantined it).
 */
int wal_quarantine(struct wal *w, int id, uint64_t from, uint64_t *seq, char *why, size_t whylen);

/*
 * The read-only twin of wal_quarantine, for views: the sequence (*seq)
 * and the reason (why) of the record at or after max(from, cursor) of
 * backend id at which wal_read would stop. Returns 0; WAL_ENOTFOUND when
 * that record decodes (or nothing is pending); WAL_ENOBACKEND, LMDB
 * codes. One short read transaction.
 */
int wal_find_corrupt(struct wal *w, int id, uint64_t from, uint64_t *seq, char *why, size_t whylen);

/* Free what wal_read allocated for b. */
void wal_batch_release(struct wal_batch *b);

/*
 * Give b (a batch read back by wal_read or wal_get, owning its memory) the
 * body body[0..len) in place of its own, in memory only (the queue keeps
 * what was written): b's strings and the new body are copied into one new
 * allocation, which b owns; the old one is freed. body may point into b.
 * Returns 0, or -ENOMEM with b unchanged.
 */
int wal_batch_set_body(struct wal_batch *b, const char *body, size_t len);

/*
 * Mark every batch of backend id up to and including seq finished
 * (delivered), in one durable commit: the cursor moves past seq, the
 * pending counters drop, and batches every backend has passed are deleted
 * in the same transaction (so the file stops growing as data is
 * delivered). A seq below the cursor (already finished: delivered, dead,
 * or purged meanwhile) is a no-op returning 0. Errors: WAL_ENOBACKEND,
 * WAL_EINVAL (seq beyond the log), LMDB.
 */
int wal_ack(struct wal *w, int id, uint64_t seq, int64_t now_ns);

/*
 * Dead-letter batch seq of backend id: a copy goes to the backend's
 * dead-letter queue (it survives restarts) with the backend's status and
 * message, the attempt count and now_ns. With body != NULL the copy holds
 * that body and line count (the lines that failed) instead of the batch's.
 * With finish, the batch is finished for id in the same commit: the cursor
 * moves past seq (every batch before it counts as delivered) and the
 * pending counters drop. A second dead letter of the same batch (another
 * line isolated by a 413 split) is added to the first: the record holds
 * both bodies, the latest status, message and attempts.
 * A seq below the cursor (finished meanwhile, e.g. purged by relayctl) is
 * a no-op returning 0. Errors: WAL_EINVAL (seq not in the log or not
 * routed to id), WAL_ENOBACKEND, WAL_EFULL, LMDB codes.
 */
int wal_dead_letter(struct wal *w, int id, uint64_t seq, const char *body, size_t body_len, uint32_t lines,
                    int status, const char *msg, uint32_t attempts, int64_t now_ns, int finish);

/* Figures for backend name (works read-only). Errors: WAL_ENOBACKEND. */
int wal_backend_stat(struct wal *w, const char *name, struct wal_backend_stat *st);
/*
 * The figures of n backends at once, from one read transaction (so they
 * agree with each other, and a scrape of many backends takes one reader
 * slot): out[i] and rcs[i] for names[i], rcs[i] being what
 * wal_backend_stat would return for it (WAL_ENOBACKEND for a name the
 * store does not know; out[i] is then zero with id -1). global (may be
 * NULL) gets wal_stat's figures from the same transaction, and *global_rc
 * what wal_stat would return. Returns 0, or the error that kept the
 * transaction from starting (every rcs[i] is then WAL_ENOBACKEND and
 * *global_rc WAL_EINVAL). out and rcs are the caller's, n entries each.
 */
int wal_backend_stats(struct wal *w, const char *const *names, size_t n, struct wal_backend_stat *out, int *rcs,
                      struct wal_stat *global, int *global_rc);

/*
 * The names of every backend queue in the store, configured or not (a
 * backend removed from the configuration keeps its queue until purged),
 * in byte order, at most max of them, into the caller's names. One short
 * read transaction. Returns 0, or a wal error.
 */
int wal_backend_names(struct wal *w, char (*names)[WAL_NAME_MAX + 1], size_t max, size_t *count);

/* Global figures. */
int wal_stat(struct wal *w, struct wal_stat *st);

/*
 * Free the reader slots of processes that died holding a read transaction
 * (a relayctl killed with -9): each pins the pages of its snapshot, and the
 * file grows by everything written meanwhile. relayd calls it on a timer;
 * wal_open and wal_append call it too. *cleared (may be NULL) gets the
 * number of slots freed. Errors: LMDB codes, -errno.
 */
int wal_reader_check(struct wal *w, int *cleared);

/*---- held databases ----*/

/*
 * A database a backend said it does not have holds only its own batches
 * (docs/architecture.md, "Held databases"): they are moved out of the log
 * for that backend into its held store, the cursor moves on, and every
 * other database flows. Each function is one transaction.
 */

/* One held database of a backend. */
struct wal_held {
	char *db;                 /* owned by the array: wal_held_free */
	uint64_t batches, points, bytes;
	int64_t oldest_accept_ns; /* of its oldest held batch */
};

/*
 * Move batches seqs[0..n) (pending for backend id, in sequence order,
 * each routed to it) out of the log into id's held store, in ONE durable
 * commit: each is kept under its database, in sequence order; id's cursor
 * moves past the last of them as past a dead letter (every batch before
 * it not held counts as delivered), its pending counters drop, its held
 * totals grow. A seq below the cursor (finished meanwhile) is passed
 * over. Errors: WAL_EINVAL (a seq not in the log or not routed to id; a
 * read-only handle), WAL_ENOBACKEND, WAL_EFULL, LMDB codes.
 */
int wal_hold(struct wal *w, int id, const uint64_t *seqs, size_t n);

/*
 * Copy out up to max held batches of database db of backend id with a
 * sequence of at least from_seq (0: all), oldest first, stopping once max_bytes of body bytes were copied (at least one
 * is returned when any is held). Release each with wal_batch_release. A
 * held record that does not decode is passed over (verify names it,
 * purge drops it). Errors: WAL_ENOBACKEND, LMDB codes.
 */
int wal_held_read(struct wal *w, int id, const char *db, uint64_t from_seq, size_t max, size_t max_bytes,
                  struct wal_batch *out, size_t *count);

/*
 * Held batches of database db of backend id up to sequence upto were
 * delivered: deleted in one durable commit, counted delivered (and
 * last_delivery_ns = now_ns), the held totals drop. Errors as wal_hold.
 */
int wal_held_done(struct wal *w, int id, const char *db, uint64_t upto, int64_t now_ns);

/*
 * Held batch seq of database db of backend id was refused for good: moved
 * to id's dead-letter queue with status, msg and attempts, in one durable
 * commit. Errors: WAL_ENOTFOUND, WAL_ENOBACKEND, WAL_EFULL, LMDB codes.
 */
int wal_held_dead(struct wal *w, int id, const char *db, uint64_t seq, int status, const char *msg,
                  uint32_t attempts, int64_t now_ns);

/*
 * The databases backend id holds, in no particular order, with their
 * figures: *out (free with wal_held_free) gets *n of them. One short read
 * transaction. Errors: WAL_ENOBACKEND, -ENOMEM, LMDB codes.
 */
int wal_held_list(struct wal *w, int id, struct wal_held **out, size_t *n);

/*
 * Testing only (relayd never calls it): the next call of each held-store
 * operation in ops (WAL_FAIL_*) fails with rc before it touches the
 * store, as a full disk or an I/O error would, once. So the unit tests
 * reach the callers' failure paths (a hold waiting for its retry, a
 * delivery that was not recorded, an unreadable list) on a real store.
 * ops 0 clears what is armed. Thread-safe.
 */
#define WAL_FAIL_HOLD      1u /* wal_hold */
#define WAL_FAIL_HELD_DONE 2u /* wal_held_done */
#define WAL_FAIL_HELD_LIST 4u /* wal_held_list */
void wal_fail_next(struct wal *w, unsigned ops, int rc);
void wal_held_free(struct wal_held *h, size_t n);

/*---- operator actions (relayctl): each one LMDB transaction ----*/

/* Batches, points and body bytes touched by an operator action. */
struct wal_count {
	uint64_t batches;
	uint64_t points;
	uint64_t bytes;
	uint64_t corrupt; /* records that did not decode, removed all the same (not in the three above) */
};

/*
 * Set or clear WAL_BACKEND_PAUSED for backend id, in one durable commit.
 * wal itself does not act on the flag (wal_append still queues, wal_read
 * still reads): the replay worker reads it (wal_backend_stat) and stops
 * sending while it is set; it survives restarts.
 * Errors: WAL_ENOBACKEND, WAL_EINVAL (read-only handle), LMDB codes.
 */
int wal_backend_set_paused(struct wal *w, int id, int paused);

/*
 * Drop every pending batch of backend id (and every held one: wal_hold),
 * in one durable commit: its
 * cursor moves to the end of the log, its pending counters become 0 (they
 * are not counted as delivered), and batches no backend needs any more are
 * deleted (the rule of wal_ack). *dropped (may be NULL) gets what was
 * dropped, recounted from the log; a record that does not decode is
 * dropped all the same (counted in dropped->corrupt). A replay worker delivering meanwhile is
 * safe: its later wal_ack, wal_dead_letter and wal_read of those batches
 * are no-ops or start past the cursor.
 * Errors: WAL_ENOBACKEND, WAL_EINVAL (read-only), WAL_EFULL, LMDB codes.
 */
int wal_purge(struct wal *w, int id, struct wal_count *dropped);

/*
 * Like wal_read, but without the bodies (the strings are copied; body is
 * NULL, body_len is the stored size): the next max pending batches of
 * backend id from max(from_seq, cursor), for a look at the queue.
 * Release each with wal_batch_release. The stored batches hold no attempt
 * count or error: those live in the replay worker's memory (relayd's
 * control "status" command reports them for the batch it is trying).
 */
int wal_peek(struct wal *w, int id, uint64_t from_seq, size_t max, struct wal_batch *out, size_t *count);

/*
 * Copy out pending batch seq of backend id, with its body. Release with
 * wal_batch_release. Errors: WAL_ENOTFOUND (not in the log, not routed to
 * id, or below the cursor), WAL_ENOBACKEND, LMDB codes.
 */
int wal_get(struct wal *w, int id, uint64_t seq, struct wal_batch *out);

/* A dead letter as read back. Every pointer points into one allocation
 * owned by the struct: release it with wal_dead_release. */
struct wal_dead {
	struct wal_batch batch; /* batch.seq = the sequence it had in the log; route = this backend;
	                         * body NULL when read without bodies */
	size_t bytes;           /* body bytes stored */
	int status;             /* the backend's HTTP status (or a negative transport failure) */
	uint32_t attempts;
	int64_t dead_ns;        /* when it was dead-lettered */
	const char *msg;        /* the backend's message, NUL-terminated; for a corrupt one, what is wrong */
	int corrupt;            /* 1: not a batch relayd can send. Either a record wal_quarantine moved
	                         * here (its raw bytes are batch.body when read with bodies), or a dead
	                         * letter that itself does not decode; its strings are "", lines 0 */
};

/*
 * Copy out up to max dead letters of backend id with sequence >= from_seq,
 * in sequence order. max_bytes == 0: without bodies; otherwise with them,
 * stopping once max_bytes of body bytes were copied (at least one is
 * returned when any is there). *count gets the number read into out[0..];
 * release each with wal_dead_release. One short read transaction. A dead
 * letter that does not decode is listed with corrupt set, never an error.
 * Errors: WAL_ENOBACKEND, -ENOMEM, LMDB codes.
 */
int wal_dead_list(struct wal *w, int id, uint64_t from_seq, size_t max, size_t max_bytes, struct wal_dead *out,
                  size_t *count);

/* Dead letter seq of backend id, with its body. Release with
 * wal_dead_release. Errors: WAL_ENOTFOUND, WAL_ENOBACKEND, LMDB codes. */
int wal_dead_get(struct wal *w, int id, uint64_t seq, struct wal_dead *out);

/* Free what wal_dead_list or wal_dead_get allocated for d. */
void wal_dead_release(struct wal_dead *d);

/*
 * Delete dead letters of backend id, in one durable commit: the n
 * sequences in seqs, or with seqs == NULL the first n of them (n == 0:
 * all). The backend's dead counters drop. *done (may be NULL) gets what
 * was deleted (a corrupt one in done->corrupt: it is always deleted). When a named sequence is not in the dead-letter queue
 * nothing is deleted: WAL_ENOTFOUND, and *missing (may be NULL) gets it.
 * Errors: WAL_ENOTFOUND, WAL_ENOBACKEND, WAL_EINVAL (read-only), LMDB codes.
 */
int wal_dead_drop(struct wal *w, int id, const uint64_t *seqs, size_t n, struct wal_count *done,
                  uint64_t *missing);

/*
 * Put dead letters of backend id back into its queue, in one durable
 * commit (which sequences: as for wal_dead_drop): each is appended as a
 * new batch at the END of the log, routed to backend id only, accepted at
 * now_ns (a new sequence: it goes behind everything queued, so the
 * backend's order of writes is the order they are requeued in), with its
 * strings and body unchanged; the pending counters grow, the dead record
 * is deleted and the dead counters drop. The backends' limits are not
 * applied (the operator asked for it). *done and *missing as for
 * wal_dead_drop. A corrupt dead letter cannot be requeued: without seqs
 * it is left where it is; named, the call is WAL_ECORRUPT (*missing
 * gets it) and nothing is requeued.
 * Errors: WAL_ENOTFOUND, WAL_ECORRUPT, WAL_ENOBACKEND, WAL_EINVAL,
 * WAL_EFULL (nothing requeued), LMDB codes.
 */
int wal_dead_requeue(struct wal *w, int id, const uint64_t *seqs, size_t n, int64_t now_ns,
                     struct wal_count *done, uint64_t *missing);

/* What wal_verify walked. */
struct wal_verify_stat {
	uint64_t batches;
	uint64_t backends;
	uint64_t dead;
	uint64_t corrupt_batches; /* batch records that do not decode */
	uint64_t corrupt_dead;    /* dead letters that are corrupt (quarantined, or not decoding) */
};

/*
 * Walk the whole store and check it: the format record and next_seq;
 * every batch decodes (every field as walr_batch_decode checks it: each
 * batch that does not is named with its sequence and why), has a
 * non-empty route naming known backends and a sequence below next_seq;
 * every backend record
 * decodes, ids are unique, every cursor is within [1, next_seq]; every
 * backend's pending counters equal a recount of the log from its cursor;
 * every dead letter decodes, belongs to a known backend, and the dead
 * counters equal a recount. A quarantined record in a dead-letter queue
 * is reported too (a batch was lost to damage there). Each problem is described in one line of text
 * handed to problem(arg, text) (text valid during the call only) AFTER
 * the read transaction ended; at most 1000 are described, all are
 * counted. The walk uses ONE read transaction (the counts must come from
 * one snapshot), which pins pages while relayd writes: keep it for when
 * the store is small or quiet, or run it on a copy.
 * Returns the number of problems (0 = healthy), or a negative code when
 * the walk itself could not run (-ENOMEM, LMDB codes). *st (may be NULL)
 * gets what was walked.
 */
int wal_verify(struct wal *w, void (*problem)(void *arg, const char *text), void *arg,
               struct wal_verify_stat *st);

/* What wal_salvage found and copied. */
struct wal_salvage_stat {
	uint64_t pages, leaves;     /* pages of the damaged file; those that read as leaf pages */
	uint64_t backends;          /* backend records found (the latest of each) */
	uint64_t backends_assumed;  /* ... and taken from names[] for records not found */
	uint64_t batches_found;     /* distinct batch records that decode (checksum and every field) */
	uint64_t batches_copied;    /* ... appended to the new store */
	uint64_t points_copied;
	uint64_t batches_delivered; /* found, but every backend it was routed to had passed it */
	uint64_t batches_orphaned;  /* routed only to backends whose record was not found */
	uint64_t records_corrupt;   /* batch records that did not decode */
	uint64_t dead_found;        /* dead letters found: not copied */
	uint64_t held_found;        /* held batch records found (of pages in use or free): not copied */
};

/*
 * Copy every readable pending batch of the store in src_dir, damaged or
 * not, into a new store in dst_dir (created mode 0700; refused when it
 * holds a queue already: WAL_EINVAL with why). src_dir's data.mdb is never
 * opened with LMDB: every page is read on its own (wal_file.h), each value
 * judged by its content: a batch record whose checksum and fields check
 * out, a backend record (the one with the furthest cursor of each name).
 * A batch is copied for each backend whose cursor had not passed it (its
 * route rewritten to the new store's ids), in sequence order, as a new
 * batch (new sequence numbers, the same acceptance time, strings and
 * body); one no backend needed any more is left out. Dead letters are
 * not copied (counted). names[0..nnames) (relayd's configured backends, in
 * order) stand in for backend records that were not found: relayd gives
 * ids in configuration order, so id i is taken to be names[i] (unless
 * that name was found under another id), with an unknown cursor: every
 * batch routed to it is copied (delivery is at least once anyway).
 * relayd must not run on dst_dir meanwhile; it may
 * on src_dir (a file being written reads as partly old, partly new).
 * Returns 0 (*st filled), or -errno, WAL_EINVAL, wal_open's and
 * wal_append's errors.
 */
int wal_salvage(const char *src_dir, const char *dst_dir, const char *const *names, size_t nnames,
                struct wal_salvage_stat *st, char *why, size_t whylen);

/* What wal_backup wrote. */
struct wal_backup_stat {
	uint64_t bytes; /* the size of the copy's data.mdb */
};

/*
 * Copy the store of w (any open: relayctl's read-only one beside a
 * running relayd is the intended use) into dst_dir/data.mdb: LMDB's
 * compacting copy (mdb_env_copyfd2, MDB_CP_COMPACT), which reads the
 * whole store inside ONE read transaction of its own, so the copy is
 * the snapshot of the last commit before the copy began: every batch
 * acknowledged before it is in the copy, relayd's writes meanwhile are
 * not, nothing is half-written. It holds the pending batches, held
 * batches, dead letters, backends (cursors, counters, paused flags) and
 * the format record: a store relayd opens as its own (put it in an
 * empty data_dir). The read transaction pins the pages of its snapshot
 * while the copy runs (the source file may grow by what relayd writes
 * meanwhile).
 * dst_dir must not exist (it is created mode 0700; its parent must
 * exist) or be empty: anything in it is refused (WAL_EINVAL, why says
 * so) and nothing is written. data.mdb is created mode 0600 (batches
 * carry credentials), fsynced, then dst_dir (and its parent when
 * dst_dir was created) fsynced, before this returns 0: a backup reported
 * done survives a crash. On failure whatever was written is removed
 * (dst_dir too when this created it).
 * No memory is handed out; st (may be NULL) is the caller's. why[0..whylen)
 * (may be NULL) says what failed, naming the path. Errors: WAL_EINVAL,
 * WAL_EFULL (the disk of dst_dir is full), -errno (-EEXIST, -EACCES,
 * -EIO...), LMDB codes.
 */
int wal_backup(struct wal *w, const char *dst_dir, struct wal_backup_stat *st, char *why, size_t whylen);

/* A static description of any code this library returns. */
const char *wal_strerror(int rc);

#endif
