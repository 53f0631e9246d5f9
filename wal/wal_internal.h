/*
 * wal_internal: what the files of wal/ share, internal to wal/. The queue
 * is split by concept: wal.c (open, close, the format record, entering an
 * operation and its transactions, the records every part reads),
 * wal_queue.c (backends, append, read, ack, truncation), wal_dead.c (the
 * dead-letter queue and quarantine), wal_ops.c (figures and the operator
 * actions), wal_verify.c (the whole-store check). Every transaction still
 * begins and ends inside one function of one of them; the functions here
 * that take a txn work inside the caller's.
 *
 * Errors: as in wal.h, LMDB's codes raw (positive errno from LMDB
 * included) until wali_map_rc maps them on the way out of a wal_* call.
 */
#ifndef RELAY_WAL_INTERNAL_H
#define RELAY_WAL_INTERNAL_H

#include "wal/wal.h"
#include "wal/wal_record.h"

#include <lmdb.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

/* What this process knows of a backend it opened (memory only). */
struct wal_backend_mem {
	char name[WAL_NAME_MAX + 1];
	int known;           /* opened by this process */
	uint64_t max_bytes;  /* 0 = no limit */
	int64_t max_age_ns;  /* 0 = no limit */
};

struct wal {
	char *dir;
	unsigned flags;
	uint64_t map_size;
	int lock_fd;
	char *why; /* the caller's, during wal_open only */
	size_t whylen;
	MDB_env *env;
	MDB_dbi dbi_meta, dbi_batches, dbi_backends, dbi_dead, dbi_held;
	int have_held; /* the held DBI exists (a read-only open of a store relayd has not opened since format 3
	                * got it has none: nothing is held there) */
	/*
	 * env_lock: every operation holds it shared; reopening the environment
	 * after MDB_PANIC, and mapping it again after MDB_MAP_RESIZED, hold it
	 * exclusive, because mdb_env_close and mdb_env_set_mapsize must not
	 * run while another thread is inside a transaction.
	 */
	pthread_rwlock_t env_lock;
	pthread_mutex_t mu; /* guards be[], need_reopen, last_reader_check */
	int need_reopen;
	unsigned upgraded_from; /* the format wal_open upgraded the store from; 0 = none */
	uint64_t upgraded;      /* records it rewrote */
	int64_t last_reader_check;
	struct wal_backend_mem be[WAL_MAX_BACKENDS];
	unsigned fail_ops; /* wal_fail_next: armed failures (under mu) */
	int fail_rc;
};

/* Keys of the meta DBI. */
#define KEY_FORMAT   "format"
#define KEY_NEXT_SEQ "next_seq"

/*---- wal.c: results, operations, transactions ----*/

/* An LMDB or errno result as ours (a full map or disk is WAL_EFULL). */
/* fsync the directory dir, so that the entries just made in it (a new
 * queue file, a backup's copy) survive a crash. Returns 0 or -errno. */
int wali_fsync_dir(const char *dir);

/* The map size of a read-only open: data.mdb's size plus 64 MiB, rounded
 * up to a MiB (wal.c says why). */
uint64_t wali_rdonly_map_size(const struct wal *w);
/* After MDB_MAP_RESIZED (another process wrote past our map): map again
 * (wal.c, remap_size, says with what size). Returns 0, or the error of the
 * new mapping, after which the environment must not be used: it is
 * marked for a reopen, and the caller fails its operation instead of
 * beginning a transaction on it. No transaction of this process may be
 * active, and w->mu must not be held: wali_remap_exclusive for a caller
 * inside an operation. */
int wali_remap(struct wal *w);
/* wali_remap for a caller inside an operation (it holds the shared
 * env_lock from wali_enter and no transaction): takes the exclusive lock
 * for the remap, so that no other thread's transaction sees the map
 * move, then the shared one again. A failed remap closes the environment
 * (w->env = NULL) before anyone else can enter it. Returns 0, the
 * remap's error, or -EIO when the environment is gone or marked for a
 * reopen; the shared lock is held again in every case (the caller's
 * wali_leave releases it). */
int wali_remap_exclusive(struct wal *w);

int wali_map_rc(int rc);
/* Enter an operation (the shared env_lock; a reopen first after MDB_PANIC);
 * every successful wali_enter is matched by one wali_leave. */
int wali_enter(struct wal *w);
void wali_leave(struct wal *w);
/* Mark the environment for a reopen after a failed write commit. */
void wali_note_failure(struct wal *w, int mdb_rc);
/* Abort a write transaction that failed with rc; returns rc, or WAL_EFULL
 * for a full map or transaction. */
int wali_abort_full(MDB_txn *txn, int rc);
/* Commit a write transaction (a failure marks the environment). */
int wali_commit(struct wal *w, MDB_txn *txn);
/* Begin a transaction, freeing dead readers' slots or adopting a grown
 * map once when LMDB asks for it. */
int wali_begin(struct wal *w, unsigned flags, MDB_txn **txn);
/* Backend record of name inside txn; WAL_ENOBACKEND when there is none. */
int wali_get_backend(MDB_txn *txn, struct wal *w, const char *name, struct walr_backend *r);
int wali_put_backend(MDB_txn *txn, struct wal *w, const char *name, const struct walr_backend *r);
/* The meta record next_seq inside txn. */
int wali_get_next_seq(MDB_txn *txn, struct wal *w, uint64_t *seq);
int wali_put_next_seq(MDB_txn *txn, struct wal *w, uint64_t seq);
/* The sequence of a batches key; -1 for a key of another size (junk). */
int wali_seq_of(const MDB_val *k, uint64_t *seq);
/* A batch record's header, with every check of walr_batch_decode. */
int wali_decode_hdr(const MDB_val *v, struct wal_batch *hdr);
/*
 * A walk in key order over the records of one DBI whose keys are a prefix
 * (none: the batches DBI; one byte, a backend id: the dead DBI) then a
 * big-endian sequence: from the key prefix+from on, for as long as the
 * keys begin with the prefix. A key of another size among them is junk
 * (no code of ours writes one) and passed over. Every scan of a backend's
 * pending batches or dead letters goes through it:
 *
 *	struct wali_scan sc;
 *	if ((rc = wali_scan_open(&sc, txn, w->dbi_batches, -1, from)))
 *		return rc;
 *	while ((rc = wali_scan_next(&sc)) == 0)
 *		... sc.seq, sc.v ...
 *	wali_scan_close(&sc);
 *	return rc == MDB_NOTFOUND ? 0 : rc;
 */
struct wali_scan {
	MDB_cursor *cur;
	MDB_val k, v;  /* the record it stands at: v is valid until the next write in the txn */
	uint64_t seq;  /* its sequence */
	int prefix;    /* the keys' first byte, or -1 for none */
	int started;
	unsigned char kb[9];
};
/* Open a scan inside txn (nothing is read yet). Returns 0 or an LMDB
 * code; on success wali_scan_close must follow. */
int wali_scan_open(struct wali_scan *s, MDB_txn *txn, MDB_dbi dbi, int prefix, uint64_t from);
/* Step to the next record: 0 (s->seq, s->k, s->v set), MDB_NOTFOUND
 * past the last one, or an LMDB code. */
int wali_scan_next(struct wali_scan *s);
void wali_scan_close(struct wali_scan *s);
/* The name of backend id as this process opened it; WAL_ENOBACKEND. */
int wali_name_of(struct wal *w, int id, char name[WAL_NAME_MAX + 1]);
/* Enter and begin a transaction (flags: MDB_RDONLY or 0) on backend id,
 * its record loaded into *r unless r is NULL; on success the caller ends
 * txn, then calls wali_leave; on failure nothing is held. */
int wali_begin_backend(struct wal *w, int id, unsigned flags, char name[WAL_NAME_MAX + 1], MDB_txn **txn,
                       struct walr_backend *r);
/* The same for a write transaction, refused (WAL_EINVAL) on a read-only
 * handle. */
int wali_begin_backend_write(struct wal *w, int id, char name[WAL_NAME_MAX + 1], MDB_txn **txn, struct walr_backend *r);

/*---- wal_queue.c: the log ----*/

/* Recount the pending counters of the backends in mask from the log. */
int wali_recount_pending(MDB_txn *txn, struct wal *w, uint64_t mask, struct walr_backend *recs[WAL_MAX_BACKENDS]);
/* Acceptance time of the first batch at or after cursor routed to id. */
int wali_oldest_pending(MDB_txn *txn, struct wal *w, int id, uint64_t cursor, int64_t *accept_ns,
                        uint64_t *corrupt_seq);
/* Move backend r's cursor past seq, its counters with it. */
int wali_advance_cursor(MDB_txn *txn, struct wal *w, int id, struct walr_backend *r, uint64_t seq, int dead_last);
/* Delete the front of the log every backend has passed. */
int wali_truncate_log(MDB_txn *txn, struct wal *w);
/* Write backend record r, with truncate wali_truncate_log, and commit
 * durably; txn is ended either way. */
int wali_commit_backend(MDB_txn *txn, struct wal *w, const char *name, const struct walr_backend *r, int truncate);
/* Copy strings, body and extra into one allocation b then owns. */
int wali_pack_batch(struct wal_batch *b, const char *const strs[WALR_NSTR], const size_t lens[WALR_NSTR],
                    const char *body, size_t body_len, const char *extra, size_t extra_len, const char **extra_out);
/* Copy a stored batch record out into *out (one allocation). */
int wali_copy_record(const void *rec, size_t len, uint64_t seq, int with_body, const char *extra, size_t extra_len,
                     struct wal_batch *out, const char **extra_out);
/* wali_copy_record of the batch under key k, with its body. */
int wali_copy_batch(const MDB_val *k, const MDB_val *v, struct wal_batch *out);

/*---- wal_held.c: held databases ----*/

/* Backend id's held totals (batches, points, body bytes; zero when none). */
int wali_held_totals(MDB_txn *txn, struct wal *w, int id, struct wal_count *t);
/* Backend id's held databases inside txn (wal_held_list); *corrupt (may
 * be NULL) gets the held records that do not decode. */
int wali_held_list(MDB_txn *txn, struct wal *w, int id, struct wal_held **out, size_t *n, uint64_t *corrupt);
/* Delete every held batch of backend id (counted into *n) and its totals. */
int wali_held_purge(MDB_txn *txn, struct wal *w, int id, struct wal_count *n);

/*---- wal_dead.c: the dead-letter queue ----*/

/* Copy out pending batch seq (with its body) and check it is routed to
 * id: WAL_EINVAL when it is not in the log or not routed to id. */
int wali_get_routed(MDB_txn *txn, struct wal *w, int id, uint64_t seq, struct wal_batch *b);

/* What a dead-letter record is: 0 a dead batch, 1 a quarantined record,
 * 2 one that does not decode itself. */
int wali_dead_kind(const MDB_val *v, struct walr_dead *hd, size_t *ml, size_t *raw_off, struct wal_batch *hdr,
                   char *why, size_t whylen);
/* The body bytes a dead-letter record counts for in the dead counters. */
uint64_t wali_dead_bytes_of(const MDB_val *v);

#endif
