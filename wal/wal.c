/*
 * wal: the durable queue on LMDB. Every transaction begins and ends inside
 * one function here; nothing here logs, touches the network or knows about
 * HTTP. Durability comes from LMDB's default flags only: no MDB_NOSYNC,
 * MDB_NOMETASYNC or MDB_WRITEMAP (docs/architecture.md, "Durability rules":
 * NOSYNC loses acknowledged data on power loss, WRITEMAP turns a full disk
 * into SIGBUS).
 */
#include "wal/wal.h"
#include "wal/wal_file.h"
#include "wal/wal_record.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_MAP_SIZE (64ULL << 20)
#define READER_CHECK_NS (10LL * 1000000000LL)

struct wal_backend_mem {
	char name[65];
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
	MDB_dbi dbi_meta, dbi_batches, dbi_backends, dbi_dead;
	/*
	 * env_lock: every operation holds it shared; reopening the environment
	 * after MDB_PANIC holds it exclusive, because mdb_env_close must not
	 * run while another thread is inside a transaction.
	 */
	pthread_rwlock_t env_lock;
	pthread_mutex_t mu; /* guards be[], need_reopen, last_reader_check */
	int need_reopen;
	unsigned upgraded_from; /* the format wal_open upgraded the store from; 0 = none */
	uint64_t upgraded;      /* records it rewrote */
	int64_t last_reader_check;
	struct wal_backend_mem be[WAL_MAX_BACKENDS];
};

static const char KEY_FORMAT[] = "format";
static const char KEY_NEXT_SEQ[] = "next_seq";

/*---- errors ----*/

const char *wal_strerror(int rc)
{
	switch (rc) {
	case 0: return "success";
	case WAL_EFULL: return "queue storage is full (LMDB map or disk)";
	case WAL_ELIMIT: return "backend queue size limit reached";
	case WAL_EAGE: return "backend queue age limit reached";
	case WAL_EVERSION: return "queue format version not supported by this binary";
	case WAL_ECORRUPT: return "queue record is corrupt";
	case WAL_ELOCKED: return "data directory is locked by another relayd";
	case WAL_ENOBACKEND: return "no such backend in the queue";
	case WAL_ETOOMANY: return "too many backends";
	case WAL_EINVAL: return "invalid argument";
	case WAL_ENOTQUEUE: return "not a relayd queue";
	case WAL_ENOTFOUND: return "no such batch";
	case WAL_ETOOBIG: return "batch too large for a queue record (a string over 65535 bytes or a body over 4 GiB)";
	case WAL_EDAMAGED: return "the queue file is damaged";
	}
	/* LMDB's own codes run from MDB_KEYEXIST (-30799) up to
	 * MDB_LAST_ERRCODE; MDB_INVALID ("not an LMDB file") among them. */
	if (rc >= MDB_KEYEXIST && rc <= MDB_LAST_ERRCODE)
		return mdb_strerror(rc);
	if (rc < 0 && rc > -4096)
		return strerror(-rc);
	return "unknown error";
}

/* Map an LMDB or errno result to ours: a full map and a full disk are the
 * same condition for the caller (refuse writes, retry later). */
static int map_rc(int rc)
{
	if (rc == 0)
		return 0;
	if (rc == MDB_MAP_FULL || rc == ENOSPC || rc == EDQUOT)
		return WAL_EFULL;
	if (rc > 0)
		return -rc; /* LMDB returns errno values positive */
	return rc;
}

/*
 * LMDB reports a short page write as EIO, which is what a full file system
 * produces. Tell the two apart by asking the file system: if it has less
 * room than this commit needed (plus a margin), the failure was a full
 * disk, which the caller treats like a full map (refuse writes, retry).
 */
static int classify_io_error(struct wal *w, int rc, size_t commit_bytes)
{
	struct statvfs sv;
	if (rc != EIO && rc != -EIO)
		return rc;
	if (statvfs(w->dir, &sv) == 0 &&
	    (uint64_t)sv.f_bavail * sv.f_frsize < (uint64_t)commit_bytes + (4u << 20))
		return ENOSPC;
	return rc;
}

/*---- environment ----*/

static int mkdir_p(const char *path, mode_t mode)
{
	char *tmp = strdup(path);
	if (!tmp)
		return -ENOMEM;
	for (char *p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(tmp, mode) < 0 && errno != EEXIST) {
			int e = errno;
			free(tmp);
			return -e;
		}
		*p = '/';
	}
	int rc = 0;
	if (mkdir(tmp, mode) < 0 && errno != EEXIST)
		rc = -errno;
	free(tmp);
	return rc;
}

/* fsync a directory so that a newly created file's entry is durable. */
static int fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	int rc = fsync(fd) < 0 ? -errno : 0;
	close(fd);
	return rc;
}

static int take_lock(struct wal *w)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/relayd.lock", w->dir);
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	/* flock, not fcntl locks: it belongs to the open file, so it is held
	 * for the life of the process and released by the kernel on kill -9. */
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		int e = errno;
		close(fd);
		return e == EWOULDBLOCK ? WAL_ELOCKED : -e;
	}
	char pid[32];
	int n = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
	if (ftruncate(fd, 0) == 0 && pwrite(fd, pid, (size_t)n, 0) != n) {
		/* The pid is only informative (for "held by pid N"). */
	}
	w->lock_fd = fd;
	return 0;
}

/*
 * Upgrade a store of format version 1 inside txn (relayd's own open): every
 * batch record, and the batch record inside every dead letter, is written
 * again as version 2 with its checksum, in place (same size). A record
 * that does not decode as version 1 is left as it is: it reads as corrupt
 * and is quarantined like any other. *n gets the records upgraded.
 */
static int migrate_v1(MDB_txn *txn, struct wal *w, uint64_t *n)
{
	MDB_dbi dbis[2] = { w->dbi_batches, w->dbi_dead };
	unsigned char *buf = NULL, (*keys)[9] = NULL;
	size_t cap = 0, nkeys = 0, kcap = 0;
	int rc = 0;
	*n = 0;
	for (int d = 0; d < 2 && rc == 0; d++) {
		/* The keys first, then each record rewritten by its key: no
		 * write while a cursor walks the tree (a value in an overflow run
		 * rewritten through the walking cursor moved other keys). */
		MDB_cursor *cur;
		MDB_val k, v;
		size_t klen = d ? 9 : 8;
		nkeys = 0;
		if ((rc = mdb_cursor_open(txn, dbis[d], &cur)))
			break;
		for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
			if (k.mv_size != klen)
				continue;
			if (nkeys == kcap) {
				size_t nc = kcap ? 2 * kcap : 1024;
				unsigned char(*nk)[9] = realloc(keys, nc * sizeof(*keys));
				if (!nk) {
					rc = -ENOMEM;
					break;
				}
				keys = nk;
				kcap = nc;
			}
			memcpy(keys[nkeys++], k.mv_data, klen);
		}
		mdb_cursor_close(cur);
		if (rc != MDB_NOTFOUND)
			break;
		rc = 0;
		for (size_t i = 0; i < nkeys && rc == 0; i++) {
			MDB_val key = { klen, keys[i] };
			size_t off = 0, ml;
			struct walr_dead hd;
			struct wal_batch hdr;
			if ((rc = mdb_get(txn, dbis[d], &key, &v)))
				break;
			if (d == 1 && (walr_dead_decode(v.mv_data, v.mv_size, &hd, &ml, &off, NULL, 0) ||
			               (hd.flags & WALR_DEAD_RAW)))
				continue;
			if (walr_batch_decode_v1((const char *)v.mv_data + off, v.mv_size - off, &hdr, NULL, 0))
				continue;
			if (v.mv_size > cap) {
				unsigned char *nb = realloc(buf, v.mv_size);
				if (!nb) {
					rc = -ENOMEM;
					break;
				}
				buf = nb;
				cap = v.mv_size;
			}
			memcpy(buf, v.mv_data, v.mv_size);
			buf[off + 32] = WALR_BATCH_VERSION;
			walr_batch_seal(buf + off, v.mv_size - off);
			MDB_val nv = { v.mv_size, buf };
			if ((rc = mdb_put(txn, dbis[d], &key, &nv, 0)))
				break;
			(*n)++;
		}
	}
	free(keys);
	free(buf);
	return rc;
}

/* Open the DBIs and check (or, for a new queue, write) the format record.
 * The format is checked before anything else is created or written. */
static int open_dbis(struct wal *w, int *created)
{
	int migrate = 0;
	struct walr_format f;
	MDB_txn *txn;
	/* Read-only and shared opens only find: they run beside relayd, and
	 * must never initialise a queue relayd is about to initialise itself
	 * (two format records, two sets of DBIs). Their DBIs are opened in a
	 * read transaction, committed so that the handles stay valid. */
	int rdonly = (w->flags & (WAL_F_RDONLY | WAL_F_SHARED)) != 0;
	int rc = mdb_txn_begin(w->env, NULL, rdonly ? MDB_RDONLY : 0, &txn);
	if (rc == MDB_MAP_RESIZED) {
		/* A writer grew the map between our open and this transaction. */
		mdb_env_set_mapsize(w->env, 0);
		rc = mdb_txn_begin(w->env, NULL, rdonly ? MDB_RDONLY : 0, &txn);
	}
	if (rc)
		return map_rc(rc);
	*created = 0;
	rc = mdb_dbi_open(txn, "meta", 0, &w->dbi_meta);
	if (rc == MDB_NOTFOUND) {
		if (rdonly) {
			mdb_txn_abort(txn);
			return WAL_ENOTQUEUE;
		}
		/* A new queue, unless the main DB holds something else. */
		MDB_dbi main;
		MDB_stat st;
		if ((rc = mdb_dbi_open(txn, NULL, 0, &main)) || (rc = mdb_stat(txn, main, &st)))
			goto fail;
		if (st.ms_entries) {
			rc = WAL_ENOTQUEUE;
			goto fail;
		}
		if ((rc = mdb_dbi_open(txn, "meta", MDB_CREATE, &w->dbi_meta)))
			goto fail;
		unsigned char buf[WALR_FORMAT_SIZE];
		f.version = WAL_FORMAT_VERSION;
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		f.created_ns = (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
		walr_format_encode(&f, buf);
		MDB_val k = { sizeof(KEY_FORMAT) - 1, (void *)KEY_FORMAT };
		MDB_val v = { sizeof(buf), buf };
		if ((rc = mdb_put(txn, w->dbi_meta, &k, &v, 0)))
			goto fail;
		unsigned char seqbuf[8];
		walr_put_u64(seqbuf, 1);
		MDB_val k2 = { sizeof(KEY_NEXT_SEQ) - 1, (void *)KEY_NEXT_SEQ };
		MDB_val v2 = { 8, seqbuf };
		if ((rc = mdb_put(txn, w->dbi_meta, &k2, &v2, 0)))
			goto fail;
		*created = 1;
	} else if (rc) {
		goto fail;
	} else {
		MDB_val k = { sizeof(KEY_FORMAT) - 1, (void *)KEY_FORMAT }, v;
		if ((rc = mdb_get(txn, w->dbi_meta, &k, &v))) {
			rc = rc == MDB_NOTFOUND ? WAL_ENOTQUEUE : rc;
			goto fail;
		}
		if ((rc = walr_format_decode(v.mv_data, v.mv_size, &f)))
			goto fail;
		/* Format 1 (no checksums) is upgraded by relayd's own open, in
		 * this transaction; readers beside it wait for that. */
		if (f.version == 1 && !rdonly) {
			migrate = 1;
		} else if (f.version != WAL_FORMAT_VERSION) {
			if (w->why && w->whylen)
				snprintf(w->why, w->whylen,
				         f.version < WAL_FORMAT_VERSION
				                 ? "the queue is in format version %u, of an older relayd: relayd upgrades it "
				                   "when it next starts"
				                 : "the queue is in format version %u, of a newer relayd (this one reads %d)",
				         f.version, WAL_FORMAT_VERSION);
			rc = WAL_EVERSION;
			goto fail;
		}
	}
	unsigned cflag = rdonly ? 0 : MDB_CREATE;
	if ((rc = mdb_dbi_open(txn, "batches", cflag, &w->dbi_batches)) ||
	    (rc = mdb_dbi_open(txn, "backends", cflag, &w->dbi_backends)) ||
	    (rc = mdb_dbi_open(txn, "dead", cflag, &w->dbi_dead))) {
		if (rc == MDB_NOTFOUND)
			rc = WAL_ECORRUPT;
		goto fail;
	}
	if (migrate) {
		/* One transaction: the records and the format record change
		 * together, or (a crash, a full map) not at all. */
		uint64_t n;
		unsigned char buf[WALR_FORMAT_SIZE];
		f.version = WAL_FORMAT_VERSION;
		walr_format_encode(&f, buf);
		MDB_val k = { sizeof(KEY_FORMAT) - 1, (void *)KEY_FORMAT }, v = { sizeof(buf), buf };
		if ((rc = migrate_v1(txn, w, &n)) || (rc = mdb_put(txn, w->dbi_meta, &k, &v, 0)))
			goto fail;
		w->upgraded_from = 1;
		w->upgraded = n;
	}
	/* The first commit of a new queue is a durable one (LMDB syncs it);
	 * the caller then fsyncs the directory so the files' entries are too. */
	rc = mdb_txn_commit(txn);
	return map_rc(rc);
fail:
	mdb_txn_abort(txn);
	return map_rc(rc);
}

/*
 * Check data.mdb before LMDB maps it (wal_file.h): LMDB follows whatever
 * the file says, so a file cut short or a scribbled page would be SIGBUS
 * or SIGSEGV inside LMDB. Relayd's own open takes a missing or empty
 * file as a new queue; the others never initialise one.
 */
static int check_file(struct wal *w)
{
	char path[4096], why[300];
	struct walf_info info;
	snprintf(path, sizeof(path), "%s/data.mdb", w->dir);
	int rdonly = (w->flags & (WAL_F_RDONLY | WAL_F_SHARED)) != 0;
	int rc = walf_check(path, &info, why, sizeof(why));
	if (rc == -ENOENT || (rc == 0 && info.empty))
		return rdonly ? WAL_ENOTQUEUE : 0;
	if ((rc == WAL_EDAMAGED || rc == WAL_EVERSION) && w->why && w->whylen)
		snprintf(w->why, w->whylen, "%s", why);
	return rc;
}

static int env_open(struct wal *w)
{
	int rc = check_file(w);
	if (rc)
		return rc;
	rc = mdb_env_create(&w->env);
	if (rc)
		return map_rc(rc);
	mdb_env_set_maxdbs(w->env, 8);
	mdb_env_set_maxreaders(w->env, 126);
	/* Read-only: the size the file records. Shared with no size given: the
	 * same (LMDB takes the recorded size when none is set). */
	if (!(w->flags & WAL_F_RDONLY) && w->map_size) {
		if ((rc = mdb_env_set_mapsize(w->env, w->map_size)))
			goto fail;
	}
	/* Default flags: synchronous, durable commits. MDB_NOTLS would only
	 * matter for read transactions kept across threads; we keep none. */
	unsigned fl = (w->flags & WAL_F_RDONLY) ? MDB_RDONLY : 0;
	if ((rc = mdb_env_open(w->env, w->dir, fl, 0600)))
		goto fail;
	int created;
	if ((rc = open_dbis(w, &created)))
		goto fail;
	if (created && (rc = fsync_dir(w->dir)))
		goto fail;
	/* Free reader slots left by processes that died holding them (a killed
	 * relayctl, say): they would pin pages and grow the file. */
	int dead;
	mdb_reader_check(w->env, &dead);
	return 0;
fail:
	mdb_env_close(w->env);
	w->env = NULL;
	return map_rc(rc);
}

int wal_open(const char *dir, const struct wal_options *opt, struct wal **out)
{
	return wal_open_why(dir, opt, out, NULL, 0);
}

int wal_open_why(const char *dir, const struct wal_options *opt, struct wal **out, char *why, size_t whylen)
{
	if (why && whylen)
		why[0] = '\0';
	struct wal *w;
	int rc;

	*out = NULL;
	if (!dir || !*dir)
		return WAL_EINVAL;
	w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->dir = strdup(dir);
	w->flags = opt ? opt->flags : 0;
	w->map_size = opt && opt->map_size ? opt->map_size : DEFAULT_MAP_SIZE;
	if ((w->flags & WAL_F_SHARED) && !(opt && opt->map_size))
		w->map_size = 0; /* adopt the size the file records */
	w->lock_fd = -1;
	pthread_rwlock_init(&w->env_lock, NULL);
	pthread_mutex_init(&w->mu, NULL);

	if ((w->flags & WAL_F_RDONLY) && (w->flags & WAL_F_SHARED)) {
		rc = WAL_EINVAL;
		goto fail;
	}
	w->why = why;
	w->whylen = whylen;
	if (w->why && w->whylen)
		w->why[0] = '\0';
	if (w->flags & (WAL_F_RDONLY | WAL_F_SHARED)) {
		struct stat st;
		if (stat(dir, &st) < 0) {
			rc = -errno;
			goto fail;
		}
		/* An existing, non-empty data file only (check_file): LMDB
		 * would initialise a missing or empty one (a relayd that crashed
		 * before its first commit leaves an empty one), and that is
		 * relayd's job. */
	} else {
		/* 0700: queued batches can carry credentials. */
		if ((rc = mkdir_p(dir, 0700)))
			goto fail;
		if ((rc = take_lock(w)))
			goto fail;
	}
	if ((rc = env_open(w)))
		goto fail;
	w->why = NULL; /* the caller's buffer is theirs again */
	w->whylen = 0;
	*out = w;
	return 0;
fail:
	if (w->lock_fd >= 0)
		close(w->lock_fd);
	pthread_rwlock_destroy(&w->env_lock);
	pthread_mutex_destroy(&w->mu);
	free(w->dir);
	free(w);
	return rc;
}

unsigned wal_upgraded_from(const struct wal *w, uint64_t *records)
{
	if (records)
		*records = w->upgraded;
	return w->upgraded_from;
}

void wal_close(struct wal *w)
{
	if (!w)
		return;
	if (w->env)
		mdb_env_close(w->env);
	if (w->lock_fd >= 0)
		close(w->lock_fd); /* releases the flock */
	pthread_rwlock_destroy(&w->env_lock);
	pthread_mutex_destroy(&w->mu);
	free(w->dir);
	free(w);
}

/*
 * Enter an operation: take the shared lock, reopening the environment
 * first if an earlier commit left it unusable (MDB_PANIC after a failed
 * meta-page write stays until the environment is reopened).
 */
static int enter(struct wal *w)
{
	pthread_mutex_lock(&w->mu);
	int reopen = w->need_reopen;
	pthread_mutex_unlock(&w->mu);
	if (reopen) {
		pthread_rwlock_wrlock(&w->env_lock);
		pthread_mutex_lock(&w->mu);
		if (w->need_reopen) {
			if (w->env)
				mdb_env_close(w->env);
			w->env = NULL;
			int rc = env_open(w);
			w->need_reopen = rc != 0;
			if (rc) {
				pthread_mutex_unlock(&w->mu);
				pthread_rwlock_unlock(&w->env_lock);
				return rc;
			}
		}
		pthread_mutex_unlock(&w->mu);
		pthread_rwlock_unlock(&w->env_lock);
	}
	pthread_rwlock_rdlock(&w->env_lock);
	if (!w->env) {
		pthread_rwlock_unlock(&w->env_lock);
		return -EIO;
	}
	return 0;
}

static void leave(struct wal *w)
{
	pthread_rwlock_unlock(&w->env_lock);
}

/* After a failed write commit, anything but a full map may have left the
 * environment in an unknown state: reopen it before the next use. */
static void note_failure(struct wal *w, int mdb_rc)
{
	if (mdb_rc == MDB_MAP_FULL || mdb_rc == MDB_TXN_FULL || mdb_rc == 0)
		return;
	pthread_mutex_lock(&w->mu);
	w->need_reopen = 1;
	pthread_mutex_unlock(&w->mu);
}

/* Commit a write transaction; a failure marks the environment for a
 * reopen (see note_failure). */
static int commit(struct wal *w, MDB_txn *txn)
{
	int rc = mdb_txn_commit(txn);
	if (rc)
		note_failure(w, rc);
	return rc;
}

static int begin(struct wal *w, unsigned flags, MDB_txn **txn)
{
	int rc = mdb_txn_begin(w->env, NULL, flags, txn);
	if (rc == MDB_READERS_FULL) {
		/* Processes killed inside a read transaction (a relayctl killed
		 * in a loop) can fill the reader table between two periodic
		 * checks: free their slots and try once more. */
		int dead;
		mdb_reader_check(w->env, &dead);
		rc = mdb_txn_begin(w->env, NULL, flags, txn);
	}
	if (rc == MDB_MAP_RESIZED) {
		/* Another process (the daemon) grew the map: adopt its size. */
		mdb_env_set_mapsize(w->env, 0);
		rc = mdb_txn_begin(w->env, NULL, flags, txn);
	}
	if (rc == MDB_PANIC)
		note_failure(w, rc);
	return rc;
}

/*---- backends ----*/

static int get_backend(MDB_txn *txn, struct wal *w, const char *name, struct walr_backend *r)
{
	MDB_val k = { strlen(name), (void *)name }, v;
	int rc = mdb_get(txn, w->dbi_backends, &k, &v);
	if (rc)
		return rc == MDB_NOTFOUND ? WAL_ENOBACKEND : rc;
	return walr_backend_decode(v.mv_data, v.mv_size, r);
}

static int put_backend(MDB_txn *txn, struct wal *w, const char *name, const struct walr_backend *r)
{
	unsigned char buf[WALR_BACKEND_SIZE];
	walr_backend_encode(r, buf);
	MDB_val k = { strlen(name), (void *)name }, v = { sizeof(buf), buf };
	return mdb_put(txn, w->dbi_backends, &k, &v, 0);
}

static int get_next_seq(MDB_txn *txn, struct wal *w, uint64_t *seq)
{
	MDB_val k = { sizeof(KEY_NEXT_SEQ) - 1, (void *)KEY_NEXT_SEQ }, v;
	int rc = mdb_get(txn, w->dbi_meta, &k, &v);
	if (rc)
		return rc == MDB_NOTFOUND ? WAL_ECORRUPT : rc;
	if (v.mv_size != 8)
		return WAL_ECORRUPT;
	*seq = walr_get_u64(v.mv_data);
	return 0;
}

static int put_next_seq(MDB_txn *txn, struct wal *w, uint64_t seq)
{
	unsigned char buf[8];
	walr_put_u64(buf, seq);
	MDB_val k = { sizeof(KEY_NEXT_SEQ) - 1, (void *)KEY_NEXT_SEQ }, v = { 8, buf };
	return mdb_put(txn, w->dbi_meta, &k, &v, 0);
}

/* The sequence of a batches key; -1 for a key of another size, which no
 * reader returns (it is junk: every key this code writes has 8 bytes). */
static int seq_of(const MDB_val *k, uint64_t *seq)
{
	if (k->mv_size != 8)
		return -1;
	*seq = walr_seq_decode(k->mv_data);
	return 0;
}

/* Decode a batch record's header (with every check of walr_batch_decode). */
static int decode_hdr(const MDB_val *v, struct wal_batch *hdr)
{
	return walr_batch_decode(v->mv_data, v->mv_size, hdr, NULL, NULL, NULL, NULL, 0);
}

/* The cursors of every backend in the store, by id (UINT64_MAX = no such
 * backend). A backend record that does not decode has no cursor here. */
static int load_cursors(MDB_txn *txn, struct wal *w, uint64_t cursors[WAL_MAX_BACKENDS], uint64_t *known)
{
	MDB_cursor *cur;
	MDB_val k, v;
	int rc;
	for (int i = 0; i < WAL_MAX_BACKENDS; i++)
		cursors[i] = UINT64_MAX;
	if (known)
		*known = 0;
	if ((rc = mdb_cursor_open(txn, w->dbi_backends, &cur)))
		return rc;
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		struct walr_backend o;
		if (walr_backend_decode(v.mv_data, v.mv_size, &o) == 0) {
			cursors[o.id] = o.cursor;
			if (known)
				*known |= 1ULL << o.id;
		}
	}
	mdb_cursor_close(cur);
	return rc == MDB_NOTFOUND ? 0 : rc;
}

/*
 * Recount the pending counters of the backends in mask from the log, each
 * from its own cursor (recs[id] holds the record, cursor included). A
 * record that does not decode counts for none: it is quarantined, or
 * will be, and its counts cannot be trusted.
 */
static int recount_pending(MDB_txn *txn, struct wal *w, uint64_t mask, struct walr_backend *recs[WAL_MAX_BACKENDS])
{
	uint64_t from = UINT64_MAX;
	for (int id = 0; id < WAL_MAX_BACKENDS; id++)
		if (mask & (1ULL << id)) {
			recs[id]->pending_batches = recs[id]->pending_points = recs[id]->pending_bytes = 0;
			if (recs[id]->cursor < from)
				from = recs[id]->cursor;
		}
	if (from == UINT64_MAX)
		return 0;
	MDB_cursor *cur;
	unsigned char kb[8];
	MDB_val k = { 8, kb }, v;
	int rc = mdb_cursor_open(txn, w->dbi_batches, &cur);
	if (rc)
		return rc;
	walr_seq_encode(from, kb);
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		uint64_t s;
		struct wal_batch hdr;
		if (seq_of(&k, &s) || decode_hdr(&v, &hdr))
			continue;
		for (int id = 0; id < WAL_MAX_BACKENDS; id++) {
			if (!(mask & hdr.route & (1ULL << id)) || s < recs[id]->cursor)
				continue;
			recs[id]->pending_batches++;
			recs[id]->pending_points += hdr.lines;
			recs[id]->pending_bytes += hdr.body_len;
		}
	}
	mdb_cursor_close(cur);
	return rc == MDB_NOTFOUND ? 0 : rc;
}

int wal_backend_open(struct wal *w, const char *name, int *id)
{
	size_t len = name ? strlen(name) : 0;
	if (len == 0 || len > 64)
		return WAL_EINVAL;
	int rc = enter(w);
	if (rc)
		return rc;
	/* Read-only and shared handles only find: a backend's queue is
	 * relayd's to create, with its limits and route. */
	int rdonly = (w->flags & (WAL_F_RDONLY | WAL_F_SHARED)) != 0;
	MDB_txn *txn;
	struct walr_backend r;
	if ((rc = begin(w, rdonly ? MDB_RDONLY : 0, &txn)))
		goto out;
	rc = get_backend(txn, w, name, &r);
	if (rc == WAL_ENOBACKEND && !rdonly) {
		/* A new queue: the lowest free id, a cursor at the head of the
		 * log (it gets only what is appended from now on). */
		uint64_t used = 0;
		MDB_cursor *cur;
		MDB_val k, v;
		if ((rc = mdb_cursor_open(txn, w->dbi_backends, &cur)))
			goto abort;
		for (int op = MDB_FIRST; mdb_cursor_get(cur, &k, &v, op) == 0; op = MDB_NEXT) {
			struct walr_backend o;
			if (walr_backend_decode(v.mv_data, v.mv_size, &o) == 0)
				used |= 1ULL << o.id;
		}
		mdb_cursor_close(cur);
		int free_id = -1;
		for (int i = 0; i < WAL_MAX_BACKENDS; i++)
			if (!(used & (1ULL << i))) {
				free_id = i;
				break;
			}
		if (free_id < 0) {
			rc = WAL_ETOOMANY;
			goto abort;
		}
		memset(&r, 0, sizeof(r));
		r.id = (uint32_t)free_id;
		if ((rc = get_next_seq(txn, w, &r.cursor)))
			goto abort;
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		r.created_ns = (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
		if ((rc = put_backend(txn, w, name, &r)))
			goto abort;
		rc = mdb_txn_commit(txn);
		if (rc) {
			note_failure(w, rc);
			goto out;
		}
	} else if (rc) {
		goto abort;
	} else {
		mdb_txn_abort(txn);
	}
	pthread_mutex_lock(&w->mu);
	snprintf(w->be[r.id].name, sizeof(w->be[r.id].name), "%s", name);
	w->be[r.id].known = 1;
	pthread_mutex_unlock(&w->mu);
	*id = (int)r.id;
	rc = 0;
	goto out;
abort:
	mdb_txn_abort(txn);
out:
	leave(w);
	return map_rc(rc);
}

int wal_backend_set_limits(struct wal *w, int id, uint64_t max_bytes, int64_t max_age_ns)
{
	if (id < 0 || id >= WAL_MAX_BACKENDS)
		return WAL_EINVAL;
	pthread_mutex_lock(&w->mu);
	int known = w->be[id].known;
	if (known) {
		w->be[id].max_bytes = max_bytes;
		w->be[id].max_age_ns = max_age_ns;
	}
	pthread_mutex_unlock(&w->mu);
	return known ? 0 : WAL_ENOBACKEND;
}

/*
 * Acceptance time of the first batch at or after cursor routed to id.
 * A record that does not decode is passed over (its time cannot be
 * trusted, and one damaged record must not stop the appends that check
 * an age limit); *corrupt_seq (may be NULL) gets the first one met before
 * that batch, or 0.
 */
static int oldest_pending(MDB_txn *txn, struct wal *w, int id, uint64_t cursor, int64_t *accept_ns,
                          uint64_t *corrupt_seq)
{
	MDB_cursor *cur;
	unsigned char kb[8];
	MDB_val k = { 8, kb }, v;
	int rc;
	*accept_ns = 0;
	if (corrupt_seq)
		*corrupt_seq = 0;
	walr_seq_encode(cursor, kb);
	if ((rc = mdb_cursor_open(txn, w->dbi_batches, &cur)))
		return rc;
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		struct wal_batch b;
		uint64_t s;
		if (seq_of(&k, &s))
			continue;
		if (decode_hdr(&v, &b)) {
			if (corrupt_seq && !*corrupt_seq)
				*corrupt_seq = s;
			continue;
		}
		if (b.route & (1ULL << id)) {
			*accept_ns = b.accept_ns;
			break;
		}
	}
	mdb_cursor_close(cur);
	return rc == MDB_NOTFOUND ? 0 : rc;
}

/*---- append ----*/

static int append_once(struct wal *w, struct wal_batch *b, size_t n, int64_t now_ns, int *map_full)
{
	struct walr_backend rec[WAL_MAX_BACKENDS];
	struct wal_backend_mem mem[WAL_MAX_BACKENDS];
	uint64_t loaded = 0, dirty = 0;
	int64_t oldest[WAL_MAX_BACKENDS];
	uint64_t seq;
	size_t commit_bytes = 0;
	MDB_txn *txn;
	int rc;

	if (w->flags & WAL_F_RDONLY)
		return WAL_EINVAL;
	if ((rc = enter(w)))
		return rc;
	pthread_mutex_lock(&w->mu);
	memcpy(mem, w->be, sizeof(mem));
	if (now_ns - w->last_reader_check > READER_CHECK_NS) {
		int dead;
		w->last_reader_check = now_ns;
		mdb_reader_check(w->env, &dead);
	}
	pthread_mutex_unlock(&w->mu);

	if ((rc = begin(w, 0, &txn)))
		goto out;
	if ((rc = get_next_seq(txn, w, &seq)))
		goto abort;
	for (size_t i = 0; i < n; i++) {
		struct wal_batch *bt = &b[i];
		bt->result = 0;
		bt->refused_by = -1;
		bt->seq = 0;
		/* A batch the record format cannot hold is refused alone: one
		 * writer's oversized field must not fail the other writers of
		 * this group commit. */
		size_t size = walr_batch_size(bt);
		if (size == 0) {
			bt->result = WAL_ETOOBIG;
			continue;
		}
		/* A time the decoder would refuse (a clock before 1970, or a
		 * caller's value) is never stored: it would read back corrupt. */
		if (!walr_time_ok(bt->accept_ns)) {
			bt->result = WAL_EINVAL;
			continue;
		}
		/* Check every routed backend's limits before storing anything of
		 * this batch: a refused batch leaves no trace. */
		for (int id = 0; id < WAL_MAX_BACKENDS && bt->result == 0; id++) {
			if (!(bt->route & (1ULL << id)))
				continue;
			if (!mem[id].known) {
				bt->result = WAL_ENOBACKEND;
				bt->refused_by = id;
				break;
			}
			if (!(loaded & (1ULL << id))) {
				if ((rc = get_backend(txn, w, mem[id].name, &rec[id])))
					goto abort;
				oldest[id] = -1; /* not looked up yet */
				loaded |= 1ULL << id;
			}
			if (mem[id].max_bytes && rec[id].pending_bytes + bt->body_len > mem[id].max_bytes) {
				bt->result = WAL_ELIMIT;
				bt->refused_by = id;
			} else if (mem[id].max_age_ns && rec[id].pending_batches) {
				if (oldest[id] < 0 &&
				    (rc = oldest_pending(txn, w, id, rec[id].cursor, &oldest[id], NULL)))
					goto abort;
				if (oldest[id] && now_ns - oldest[id] > mem[id].max_age_ns) {
					bt->result = WAL_EAGE;
					bt->refused_by = id;
				}
			}
		}
		if (bt->result)
			continue;
		unsigned char kb[8];
		walr_seq_encode(seq, kb);
		MDB_val k = { 8, kb }, v = { size, NULL };
		/* MDB_APPEND: keys only grow, so LMDB can skip the search and fill
		 * pages completely. MDB_RESERVE: encode straight into the page,
		 * one copy of the body inside the commit (a body must be copied
		 * into the queue, never referenced: a relay that kept a pointer
		 * into a reused request buffer delivered another request's lines). */
		if ((rc = mdb_put(txn, w->dbi_batches, &k, &v, MDB_APPEND | MDB_RESERVE)))
			goto abort;
		walr_batch_encode(bt, v.mv_data);
		commit_bytes += size;
		bt->seq = seq++;
		for (int id = 0; id < WAL_MAX_BACKENDS; id++) {
			if (!(bt->route & (1ULL << id)))
				continue;
			if (rec[id].pending_batches == 0 && oldest[id] <= 0)
				oldest[id] = bt->accept_ns;
			rec[id].pending_batches++;
			rec[id].pending_points += bt->lines;
			rec[id].pending_bytes += bt->body_len;
			dirty |= 1ULL << id;
		}
	}
	for (int id = 0; id < WAL_MAX_BACKENDS; id++)
		if ((dirty & (1ULL << id)) && (rc = put_backend(txn, w, mem[id].name, &rec[id])))
			goto abort;
	if ((rc = put_next_seq(txn, w, seq)))
		goto abort;
	/* The durable point: LMDB writes the data pages, fdatasyncs, writes
	 * the meta page and fdatasyncs again. Only after this returns 0 may
	 * any of these batches be acknowledged. */
	rc = mdb_txn_commit(txn);
	if (rc) {
		note_failure(w, rc);
		rc = classify_io_error(w, rc, commit_bytes);
	}
	goto out;
abort:
	mdb_txn_abort(txn);
	if (rc == MDB_MAP_FULL || rc == MDB_TXN_FULL) {
		*map_full = 1;
		rc = WAL_EFULL;
	}
	else if (rc > 0 || (rc >= MDB_KEYEXIST && rc <= MDB_LAST_ERRCODE))
		note_failure(w, rc);
out:
	if (rc) {
		/* Nothing of this commit was stored. */
		for (size_t i = 0; i < n; i++)
			b[i].seq = 0;
	}
	leave(w);
	return map_rc(rc);
}

/*
 * Commit a tiny write transaction. LMDB reuses a page freed by transaction
 * T only from transaction T+2 on (T's snapshot is still the previous meta
 * page), so when the last thing that happened was a delivery that freed
 * space, a full map stays full for the next append. One small commit moves
 * the horizon.
 */
static int nudge(struct wal *w)
{
	MDB_txn *txn;
	uint64_t seq;
	int rc = begin(w, 0, &txn);
	if (rc)
		return rc;
	if ((rc = get_next_seq(txn, w, &seq)) || (rc = put_next_seq(txn, w, seq))) {
		mdb_txn_abort(txn);
		return rc;
	}
	return mdb_txn_commit(txn);
}

int wal_append(struct wal *w, struct wal_batch *b, size_t n, int64_t now_ns)
{
	int map_full = 0;
	int rc = append_once(w, b, n, now_ns, &map_full);
	if (rc == WAL_EFULL && map_full) {
		int nrc;
		if ((nrc = enter(w)))
			return rc;
		nrc = nudge(w);
		leave(w);
		if (nrc == 0) {
			map_full = 0;
			rc = append_once(w, b, n, now_ns, &map_full);
		}
	}
	return rc;
}

/*---- read and ack ----*/

/*
 * Copy the batch record rec[0..len) out into *out: one allocation holding
 * the six strings (each NUL-terminated), then, with with_body, the body,
 * then extra[0..extra_len) NUL-terminated (a dead letter's message;
 * *extra_out points at it). Without with_body, body is NULL and body_len
 * the stored size.
 */
/*
 * Copy b's six strings (strs[i], lens[i] bytes each, not NUL-terminated),
 * the body (unless NULL) and extra into one new allocation that b then
 * owns (priv_), pointing b's fields into it; *extra_out (if asked) gets
 * the copy of extra. Returns 0 or -ENOMEM (b unchanged).
 */
static int pack_batch(struct wal_batch *b, const char *const strs[WALR_NSTR], const size_t lens[WALR_NSTR],
                      const char *body, size_t body_len, const char *extra, size_t extra_len,
                      const char **extra_out)
{
	size_t total = (body ? body_len + 1 : 0) + extra_len + 1;
	for (int i = 0; i < WALR_NSTR; i++)
		total += lens[i] + 1;
	char *mem = malloc(total);
	if (!mem)
		return -ENOMEM;
	char *p = mem;
	const char **dst[WALR_NSTR] = { &b->db, &b->rp, &b->user, &b->password, &b->org, &b->token };
	for (int i = 0; i < WALR_NSTR; i++) {
		memcpy(p, strs[i], lens[i]);
		p[lens[i]] = '\0';
		*dst[i] = p;
		p += lens[i] + 1;
	}
	if (body) {
		memcpy(p, body, body_len);
		p[body_len] = '\0';
		b->body = p;
		b->body_len = body_len;
		p += body_len + 1;
	}
	if (extra_len)
		memcpy(p, extra, extra_len);
	p[extra_len] = '\0';
	if (extra_out)
		*extra_out = p;
	b->priv_ = mem;
	return 0;
}

static int copy_record(const void *rec, size_t len, uint64_t seq, int with_body, const char *extra,
                       size_t extra_len, struct wal_batch *out, const char **extra_out)
{
	uint32_t off[WALR_NSTR];
	uint16_t slen[WALR_NSTR];
	const char *strs[WALR_NSTR];
	size_t lens[WALR_NSTR];
	size_t body_off;
	struct wal_batch b;
	memset(&b, 0, sizeof(b));
	int rc = walr_batch_decode(rec, len, &b, off, slen, &body_off, NULL, 0);
	if (rc)
		return rc;
	const char *src = rec;
	for (int i = 0; i < WALR_NSTR; i++) {
		strs[i] = src + off[i];
		lens[i] = slen[i];
	}
	if ((rc = pack_batch(&b, strs, lens, with_body ? src + body_off : NULL, b.body_len, extra, extra_len,
	                     extra_out)))
		return rc;
	b.seq = seq;
	b.refused_by = -1;
	*out = b;
	return 0;
}

int wal_batch_set_body(struct wal_batch *b, const char *body, size_t len)
{
	const char *strs[WALR_NSTR] = { b->db, b->rp, b->user, b->password, b->org, b->token };
	size_t lens[WALR_NSTR];
	void *old = b->priv_;
	for (int i = 0; i < WALR_NSTR; i++) {
		if (!strs[i])
			strs[i] = "";
		lens[i] = strlen(strs[i]);
	}
	/* The strings may live in old: copied before it is freed. */
	int rc = pack_batch(b, strs, lens, body, len, NULL, 0, NULL);
	if (rc == 0)
		free(old);
	return rc;
}

static int copy_batch(const MDB_val *k, const MDB_val *v, struct wal_batch *out)
{
	return copy_record(v->mv_data, v->mv_size, walr_seq_decode(k->mv_data), 1, NULL, 0, out, NULL);
}

void wal_batch_release(struct wal_batch *b)
{
	free(b->priv_);
	memset(b, 0, sizeof(*b));
}

static int name_of(struct wal *w, int id, char name[65])
{
	if (id < 0 || id >= WAL_MAX_BACKENDS)
		return WAL_EINVAL;
	pthread_mutex_lock(&w->mu);
	int known = w->be[id].known;
	memcpy(name, w->be[id].name, 65);
	pthread_mutex_unlock(&w->mu);
	return known ? 0 : WAL_ENOBACKEND;
}

static int read_batches(struct wal *w, int id, uint64_t from_seq, size_t max, size_t max_bytes, int with_body,
                        struct wal_batch *out, size_t *count)
{
	char name[65];
	struct walr_backend r;
	MDB_txn *txn;
	MDB_cursor *cur = NULL;
	size_t got = 0, bytes = 0;
	int rc;

	*count = 0;
	if ((rc = name_of(w, id, name)))
		return rc;
	if ((rc = enter(w)))
		return rc;
	if ((rc = begin(w, MDB_RDONLY, &txn)))
		goto out;
	if ((rc = get_backend(txn, w, name, &r)) || (rc = mdb_cursor_open(txn, w->dbi_batches, &cur)))
		goto done;
	unsigned char kb[8];
	MDB_val k = { 8, kb }, v;
	/* Never below the cursor: a caller's from_seq may be older than a
	 * purge or a dead-letter that moved it. */
	walr_seq_encode(from_seq > r.cursor ? from_seq : r.cursor, kb);
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0 && got < max && (got == 0 || bytes < max_bytes);
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		struct wal_batch hdr;
		uint64_t s;
		if (seq_of(&k, &s))
			continue;
		if ((rc = decode_hdr(&v, &hdr))) {
			/* A record that does not decode ends the read: what came
			 * before it is returned; alone, it is the caller's to
			 * quarantine (wal_quarantine) or to skip (wal_find_corrupt). */
			if (got)
				rc = 0;
			break;
		}
		if (!(hdr.route & (1ULL << id)))
			continue;
		if ((rc = copy_record(v.mv_data, v.mv_size, s, with_body, NULL, 0, &out[got], NULL)))
			break;
		bytes += out[got].body_len;
		got++;
	}
	if (rc == MDB_NOTFOUND)
		rc = 0;
done:
	if (cur)
		mdb_cursor_close(cur);
	/* The read transaction ends here: nothing handed out refers to it. */
	mdb_txn_abort(txn);
	if (rc) {
		while (got)
			wal_batch_release(&out[--got]);
	}
	*count = got;
out:
	leave(w);
	return map_rc(rc);
}

int wal_read(struct wal *w, int id, uint64_t from_seq, size_t max, size_t max_bytes, struct wal_batch *out,
             size_t *count)
{
	return read_batches(w, id, from_seq, max, max_bytes, 1, out, count);
}

int wal_peek(struct wal *w, int id, uint64_t from_seq, size_t max, struct wal_batch *out, size_t *count)
{
	return read_batches(w, id, from_seq, max, SIZE_MAX, 0, out, count);
}

/*
 * Move backend r's cursor past seq inside txn: every batch routed to it in
 * [cursor, seq] leaves its pending counters and counts as delivered, except
 * seq itself when dead_last (it was dead-lettered instead).
 */
static int advance_cursor(MDB_txn *txn, struct wal *w, int id, struct walr_backend *r, uint64_t seq, int dead_last)
{
	MDB_cursor *cur;
	unsigned char kb[8];
	MDB_val k = { 8, kb }, v;
	int rc = mdb_cursor_open(txn, w->dbi_batches, &cur);
	if (rc)
		return rc;
	int recount = 0;
	walr_seq_encode(r->cursor, kb);
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		uint64_t s;
		struct wal_batch hdr;
		if (seq_of(&k, &s))
			continue;
		if (s > seq)
			break;
		if (decode_hdr(&v, &hdr)) {
			/* Damaged after the caller read it (it acks only what it
			 * read): finished all the same; its counts cannot be
			 * trusted, so the counters are recounted below. */
			recount = 1;
			continue;
		}
		if (!(hdr.route & (1ULL << id)))
			continue;
		/* Saturating: a counter damaged on disk must not wrap. */
		r->pending_batches -= r->pending_batches ? 1 : 0;
		r->pending_points -= r->pending_points >= hdr.lines ? hdr.lines : r->pending_points;
		r->pending_bytes -= r->pending_bytes >= hdr.body_len ? hdr.body_len : r->pending_bytes;
		if (dead_last && s == seq)
			continue;
		r->delivered_batches++;
		r->delivered_points += hdr.lines;
	}
	mdb_cursor_close(cur);
	if (rc && rc != MDB_NOTFOUND)
		return rc;
	r->cursor = seq + 1;
	if (recount) {
		struct walr_backend *recs[WAL_MAX_BACKENDS] = { 0 };
		recs[id] = r;
		return recount_pending(txn, w, 1ULL << id, recs);
	}
	return 0;
}

/*
 * Truncate as we deliver, in the same transaction as the cursor (a disk
 * buffer that is never truncated only grows). Delete from the front of the log every
 * batch whose routed backends have all passed it; stop at the first one
 * still pending somewhere, so that the log stays a suffix of the sequence.
 */
static int truncate_log(MDB_txn *txn, struct wal *w)
{
	uint64_t cursors[WAL_MAX_BACKENDS];
	MDB_cursor *cur;
	MDB_val k, v;
	int rc;
	if ((rc = load_cursors(txn, w, cursors, NULL)))
		return rc;
	if ((rc = mdb_cursor_open(txn, w->dbi_batches, &cur)))
		return rc;
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		uint64_t s;
		struct wal_batch hdr;
		int done = 1;
		if (seq_of(&k, &s)) {
			/* A key no code of ours wrote: junk, never read. */
		} else if (decode_hdr(&v, &hdr)) {
			/* Its route cannot be trusted: it goes once every
			 * backend's cursor has passed it. */
			for (int i = 0; i < WAL_MAX_BACKENDS && done; i++)
				if (cursors[i] != UINT64_MAX && cursors[i] <= s)
					done = 0;
		} else {
			for (int i = 0; i < WAL_MAX_BACKENDS && done; i++)
				if ((hdr.route & (1ULL << i)) && cursors[i] <= s)
					done = 0;
		}
		if (!done)
			break;
		if ((rc = mdb_cursor_del(cur, 0)))
			break;
	}
	mdb_cursor_close(cur);
	return rc == MDB_NOTFOUND ? 0 : rc;
}

int wal_ack(struct wal *w, int id, uint64_t seq, int64_t now_ns)
{
	char name[65];
	struct walr_backend r;
	MDB_txn *txn;
	uint64_t next;
	int rc;

	if ((rc = name_of(w, id, name)))
		return rc;
	if ((rc = enter(w)))
		return rc;
	if ((rc = begin(w, 0, &txn)))
		goto out;
	if ((rc = get_backend(txn, w, name, &r)) || (rc = get_next_seq(txn, w, &next)))
		goto abort;
	if (seq >= next) {
		rc = WAL_EINVAL;
		goto abort;
	}
	if (seq < r.cursor) { /* already finished: nothing to do */
		mdb_txn_abort(txn);
		goto out;
	}
	if ((rc = advance_cursor(txn, w, id, &r, seq, 0)))
		goto abort;
	r.last_delivery_ns = now_ns;
	if ((rc = put_backend(txn, w, name, &r)) || (rc = truncate_log(txn, w)))
		goto abort;
	/* Durable: the cursor and the deletion commit together, so a
	 * delivered batch is never sent again after a crash, and never lost. */
	rc = commit(w, txn);
	goto out;
abort:
	mdb_txn_abort(txn);
out:
	leave(w);
	return map_rc(rc);
}

/*---- dead letters ----*/

/* dead DBI key: backend id (1 byte) then the batch's sequence (BE). */
static void dead_key(int id, uint64_t seq, unsigned char kb[9])
{
	kb[0] = (unsigned char)id;
	walr_seq_encode(seq, kb + 1);
}

/* Where a cursor over the dead DBI stands for backend id: 0 at one of its
 * dead letters (*seq), 1 at a key of another size among its keys (junk:
 * skipped), -1 past its keys. */
static int dead_key_at(const MDB_val *k, int id, uint64_t *seq)
{
	const unsigned char *kp = k->mv_data;
	if (k->mv_size == 0 || kp[0] != (unsigned char)id)
		return -1;
	if (k->mv_size != 9)
		return 1;
	*seq = walr_seq_decode(kp + 1);
	return 0;
}

int wal_dead_letter(struct wal *w, int id, uint64_t seq, const char *body, size_t body_len, uint32_t lines,
                    int status, const char *msg, uint32_t attempts, int64_t now_ns, int finish)
{
	char name[65];
	struct walr_backend r;
	struct wal_batch b, old;
	MDB_txn *txn;
	unsigned char kb[9];
	MDB_val k = { 8, kb }, v;
	char *joined = NULL;
	int rc;

	memset(&b, 0, sizeof(b));
	memset(&old, 0, sizeof(old));
	if ((rc = name_of(w, id, name)))
		return rc;
	if (w->flags & WAL_F_RDONLY)
		return WAL_EINVAL;
	if ((rc = enter(w)))
		return rc;
	if ((rc = begin(w, 0, &txn)))
		goto out;
	if ((rc = get_backend(txn, w, name, &r)))
		goto abort;
	if (seq < r.cursor) {
		/* Finished meanwhile (purged by relayctl while the worker was
		 * sending it): nothing is pending to dead-letter. */
		mdb_txn_abort(txn);
		goto out;
	}
	walr_seq_encode(seq, kb);
	if ((rc = mdb_get(txn, w->dbi_batches, &k, &v))) {
		rc = rc == MDB_NOTFOUND ? WAL_EINVAL : rc;
		goto abort;
	}
	if ((rc = copy_batch(&k, &v, &b)))
		goto abort;
	if (!(b.route & (1ULL << id))) {
		rc = WAL_EINVAL;
		goto abort;
	}
	/* The copy is routed to this backend only, and may hold just the
	 * lines that failed. */
	b.route = 1ULL << id;
	if (body) {
		b.body = body;
		b.body_len = body_len;
		b.lines = lines;
	}
	uint64_t dead_bytes = b.body_len;
	dead_key(id, seq, kb);
	MDB_val dk = { 9, kb }, dv;
	/* A dead letter of this batch exists already (a 413 split isolated
	 * another bad line of it): keep both, in one record, so that the key
	 * (backend, sequence) stays unique and the counters stay exact. */
	rc = mdb_get(txn, w->dbi_dead, &dk, &dv);
	int merge = rc == 0;
	if (rc && rc != MDB_NOTFOUND)
		goto abort;
	if (merge) {
		struct walr_dead od;
		size_t ml, boff;
		if ((rc = walr_dead_decode(dv.mv_data, dv.mv_size, &od, &ml, &boff, NULL, 0)) ||
		    (od.flags & WALR_DEAD_RAW) ||
		    (rc = copy_record((const char *)dv.mv_data + boff, dv.mv_size - boff, seq, 1, NULL, 0, &old, NULL))) {
			rc = rc ? rc : WAL_ECORRUPT;
			goto abort;
		}
		joined = malloc(old.body_len + b.body_len + 1);
		if (!joined) {
			rc = -ENOMEM;
			goto abort;
		}
		memcpy(joined, old.body, old.body_len);
		memcpy(joined + old.body_len, b.body, b.body_len);
		b.body = joined;
		b.body_len += old.body_len;
		b.lines += old.lines;
	}
	struct walr_dead d = { status, attempts, now_ns, msg ? msg : "", 0 };
	size_t size = walr_dead_size(&d, &b);
	dv.mv_size = size;
	dv.mv_data = NULL;
	rc = size ? mdb_put(txn, w->dbi_dead, &dk, &dv, MDB_RESERVE) : WAL_EINVAL;
	if (rc)
		goto abort;
	walr_dead_encode(&d, &b, dv.mv_data);
	if (!merge)
		r.dead_batches++;
	r.dead_bytes += dead_bytes;
	if (finish) {
		/* Everything before seq must be finished already: the replay
		 * worker dead-letters only the batch at the head of its queue. */
		if ((rc = advance_cursor(txn, w, id, &r, seq, 1)))
			goto abort;
	}
	if ((rc = put_backend(txn, w, name, &r)) || (finish && (rc = truncate_log(txn, w))))
		goto abort;
	rc = commit(w, txn);
	goto out;
abort:
	mdb_txn_abort(txn);
out:
	wal_batch_release(&b);
	wal_batch_release(&old);
	free(joined);
	leave(w);
	return map_rc(rc);
}

/*---- figures ----*/

static void fill_stat(struct wal_backend_stat *st, const char *name, size_t nlen, const struct walr_backend *r)
{
	memset(st, 0, sizeof(*st));
	if (nlen > 64)
		nlen = 64;
	memcpy(st->name, name, nlen);
	st->name[nlen] = '\0';
	st->id = (int)r->id;
	st->cursor = r->cursor;
	st->pending_batches = r->pending_batches;
	st->pending_points = r->pending_points;
	st->pending_bytes = r->pending_bytes;
	st->dead_batches = r->dead_batches;
	st->delivered_batches = r->delivered_batches;
	st->delivered_points = r->delivered_points;
	st->last_delivery_ns = r->last_delivery_ns;
	st->flags = r->flags;
	st->paused = (r->flags & WAL_BACKEND_PAUSED) != 0;
	st->dead_bytes = r->dead_bytes;
	st->created_ns = r->created_ns;
}

int wal_backend_stat(struct wal *w, const char *name, struct wal_backend_stat *st)
{
	struct walr_backend r;
	MDB_txn *txn;
	int rc;
	if ((rc = enter(w)))
		return rc;
	if ((rc = begin(w, MDB_RDONLY, &txn)))
		goto out;
	if ((rc = get_backend(txn, w, name, &r)) == 0) {
		fill_stat(st, name, strlen(name), &r);
		if (r.pending_batches)
			rc = oldest_pending(txn, w, (int)r.id, r.cursor, &st->oldest_accept_ns, &st->corrupt_seq);
	}
	mdb_txn_abort(txn);
out:
	leave(w);
	return map_rc(rc);
}

int wal_backend_names(struct wal *w, char (*names)[WAL_NAME_MAX + 1], size_t max, size_t *count)
{
	MDB_txn *txn;
	MDB_cursor *cur = NULL;
	MDB_val k, v;
	size_t n = 0;
	int rc;
	*count = 0;
	if ((rc = enter(w)))
		return rc;
	if ((rc = begin(w, MDB_RDONLY, &txn)))
		goto out;
	if ((rc = mdb_cursor_open(txn, w->dbi_backends, &cur)) == 0) {
		/* Keys are the names, in byte order; copied out before the
		 * read transaction ends. */
		for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0 && n < max;
		     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
			size_t len = k.mv_size > WAL_NAME_MAX ? WAL_NAME_MAX : k.mv_size;
			memcpy(names[n], k.mv_data, len);
			names[n][len] = '\0';
			n++;
		}
		if (rc == MDB_NOTFOUND || n == max)
			rc = 0;
		mdb_cursor_close(cur);
	}
	mdb_txn_abort(txn);
	if (rc == 0)
		*count = n;
out:
	leave(w);
	return map_rc(rc);
}

int wal_stat(struct wal *w, struct wal_stat *st)
{
	MDB_txn *txn;
	MDB_stat ms;
	MDB_envinfo info;
	int rc;
	memset(st, 0, sizeof(*st));
	if ((rc = enter(w)))
		return rc;
	if ((rc = begin(w, MDB_RDONLY, &txn)))
		goto out;
	if ((rc = get_next_seq(txn, w, &st->next_seq)) == 0 && (rc = mdb_stat(txn, w->dbi_batches, &ms)) == 0) {
		st->batches = ms.ms_entries;
		st->page_size = ms.ms_psize;
		mdb_env_info(w->env, &info);
		st->map_size = info.me_mapsize;
		st->file_pages = info.me_last_pgno + 1;
		st->format_version = WAL_FORMAT_VERSION;
	}
	mdb_txn_abort(txn);
out:
	leave(w);
	return map_rc(rc);
}

int wal_reader_check(struct wal *w, int *cleared)
{
	int dead = 0;
	int rc = enter(w);
	if (rc)
		return rc;
	rc = mdb_reader_check(w->env, &dead);
	leave(w);
	if (cleared)
		*cleared = dead;
	return map_rc(rc);
}

/*---- operator actions ----*/

/*
 * Begin a write transaction for an operator action on backend id: check
 * the handle may write, enter, begin, and load the backend record. On
 * success the caller owns txn and must leave(w) after ending it.
 */
static int begin_backend_write(struct wal *w, int id, char name[65], MDB_txn **txn, struct walr_backend *r)
{
	int rc;
	if (w->flags & WAL_F_RDONLY)
		return WAL_EINVAL;
	if ((rc = name_of(w, id, name)))
		return rc;
	if ((rc = enter(w)))
		return rc;
	if ((rc = begin(w, 0, txn))) {
		leave(w);
		return rc;
	}
	if ((rc = get_backend(*txn, w, name, r))) {
		mdb_txn_abort(*txn);
		leave(w);
		return rc;
	}
	return 0;
}

int wal_backend_set_paused(struct wal *w, int id, int paused)
{
	char name[65];
	struct walr_backend r;
	MDB_txn *txn;
	int rc = begin_backend_write(w, id, name, &txn, &r);
	if (rc)
		return map_rc(rc);
	uint32_t flags = paused ? r.flags | WAL_BACKEND_PAUSED : r.flags & ~(uint32_t)WAL_BACKEND_PAUSED;
	if (flags == r.flags) {
		mdb_txn_abort(txn); /* already so */
	} else {
		r.flags = flags;
		if ((rc = put_backend(txn, w, name, &r)) == 0)
			rc = commit(w, txn);
		else
			mdb_txn_abort(txn);
	}
	leave(w);
	return map_rc(rc);
}

int wal_purge(struct wal *w, int id, struct wal_count *dropped)
{
	char name[65];
	struct walr_backend r;
	struct wal_count n = { 0, 0, 0, 0 };
	MDB_txn *txn;
	MDB_cursor *cur;
	uint64_t next;
	unsigned char kb[8];
	MDB_val k = { 8, kb }, v;
	int rc = begin_backend_write(w, id, name, &txn, &r);
	if (rc)
		return map_rc(rc);
	if ((rc = get_next_seq(txn, w, &next)) || (rc = mdb_cursor_open(txn, w->dbi_batches, &cur)))
		goto abort;
	/* Recount what is dropped from the log itself rather than trusting the
	 * counters: they are set to exactly 0 below either way. */
	walr_seq_encode(r.cursor, kb);
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		struct wal_batch hdr;
		uint64_t s;
		if (seq_of(&k, &s))
			continue;
		if (decode_hdr(&v, &hdr)) {
			/* Dropped all the same: the cursor moves past it, and it
			 * leaves the log once no backend's cursor is before it. */
			n.corrupt++;
			continue;
		}
		if (!(hdr.route & (1ULL << id)))
			continue;
		n.batches++;
		n.points += hdr.lines;
		n.bytes += hdr.body_len;
	}
	mdb_cursor_close(cur);
	if (rc != MDB_NOTFOUND)
		goto abort;
	if (r.cursor >= next && !r.pending_batches && !r.pending_points && !r.pending_bytes) {
		rc = 0; /* nothing pending: nothing to write */
		mdb_txn_abort(txn);
		goto out;
	}
	r.cursor = next;
	r.pending_batches = r.pending_points = r.pending_bytes = 0;
	if ((rc = put_backend(txn, w, name, &r)) || (rc = truncate_log(txn, w)))
		goto abort;
	/* Durable like an ack: the cursor and the deletions commit together. */
	rc = commit(w, txn);
	goto out;
abort:
	mdb_txn_abort(txn);
out:
	leave(w);
	if (rc == 0 && dropped)
		*dropped = n;
	return map_rc(rc);
}

int wal_get(struct wal *w, int id, uint64_t seq, struct wal_batch *out)
{
	char name[65];
	struct walr_backend r;
	MDB_txn *txn;
	unsigned char kb[8];
	MDB_val k = { 8, kb }, v;
	int rc;
	memset(out, 0, sizeof(*out));
	if ((rc = name_of(w, id, name)))
		return rc;
	if ((rc = enter(w)))
		return rc;
	if ((rc = begin(w, MDB_RDONLY, &txn)))
		goto out;
	if ((rc = get_backend(txn, w, name, &r)))
		goto done;
	walr_seq_encode(seq, kb);
	if (seq < r.cursor || (rc = mdb_get(txn, w->dbi_batches, &k, &v))) {
		rc = rc == 0 || rc == MDB_NOTFOUND ? WAL_ENOTFOUND : rc;
		goto done;
	}
	struct wal_batch hdr;
	if ((rc = decode_hdr(&v, &hdr)))
		goto done;
	if (!(hdr.route & (1ULL << id))) {
		rc = WAL_ENOTFOUND;
		goto done;
	}
	rc = copy_batch(&k, &v, out);
done:
	mdb_txn_abort(txn); /* *out is a copy: nothing refers to the snapshot */
out:
	leave(w);
	return map_rc(rc);
}

/*
 * What a dead-letter record is: 0 a dead batch (*hdr its header), 1 a
 * record wal_quarantine moved there (raw bytes from *raw_off), 2 a record
 * that does not decode itself. why (may be NULL) says what is wrong for
 * 1 and 2; *hd is set for 0 and 1.
 */
static int dead_kind(const MDB_val *v, struct walr_dead *hd, size_t *ml, size_t *raw_off, struct wal_batch *hdr,
                     char *why, size_t whylen)
{
	char tmp[200];
	if (walr_dead_decode(v->mv_data, v->mv_size, hd, ml, raw_off, tmp, sizeof(tmp))) {
		if (why && whylen)
			snprintf(why, whylen, "the dead-letter record does not decode: %s", tmp);
		return 2;
	}
	if (hd->flags & WALR_DEAD_RAW) {
		if (why && whylen)
			snprintf(why, whylen, "%.*s", (int)*ml, hd->msg);
		return 1;
	}
	if (walr_batch_decode((const char *)v->mv_data + *raw_off, v->mv_size - *raw_off, hdr, NULL, NULL, NULL, tmp,
	                      sizeof(tmp))) {
		if (why && whylen)
			snprintf(why, whylen, "the dead letter's batch does not decode: %s", tmp);
		return 2;
	}
	return 0;
}

/* The body bytes a dead-letter record counts for in the dead counters:
 * its batch's body; a quarantined record's raw bytes; 0 for one that
 * does not decode. */
static uint64_t dead_bytes_of(const MDB_val *v)
{
	struct walr_dead hd;
	struct wal_batch hdr;
	size_t ml, off;
	switch (dead_kind(v, &hd, &ml, &off, &hdr, NULL, 0)) {
	case 0: return hdr.body_len;
	case 1: return v->mv_size - off;
	default: return 0;
	}
}

/* Copy dead record v (key seq) out into *d, with or without its body. A
 * corrupt one is copied as such (d->corrupt): never an error. */
static int copy_dead(const MDB_val *v, uint64_t seq, int with_body, struct wal_dead *d)
{
	struct walr_dead hd;
	struct wal_batch hdr;
	size_t ml, boff;
	char why[300];
	memset(d, 0, sizeof(*d));
	int kind = dead_kind(v, &hd, &ml, &boff, &hdr, why, sizeof(why));
	if (kind) {
		static const char *const none[WALR_NSTR] = { "", "", "", "", "", "" };
		static const size_t zero[WALR_NSTR] = { 0 };
		size_t raw_len = kind == 1 ? v->mv_size - boff : v->mv_size;
		const char *raw = kind == 1 ? (const char *)v->mv_data + boff : v->mv_data;
		int rc = pack_batch(&d->batch, none, zero, with_body ? raw : NULL, raw_len, why, strlen(why), &d->msg);
		if (rc)
			return rc;
		if (!with_body)
			d->batch.body_len = raw_len;
		d->batch.seq = seq;
		d->batch.refused_by = -1;
		d->bytes = raw_len;
		d->corrupt = 1;
		if (kind == 1) {
			d->status = hd.status;
			d->attempts = hd.attempts;
			d->dead_ns = hd.dead_ns;
		}
		return 0;
	}
	int rc = copy_record((const char *)v->mv_data + boff, v->mv_size - boff, seq, with_body, hd.msg, ml, &d->batch,
	                     &d->msg);
	if (rc)
		return rc;
	d->bytes = hdr.body_len;
	d->status = hd.status;
	d->attempts = hd.attempts;
	d->dead_ns = hd.dead_ns;
	return 0;
}

void wal_dead_release(struct wal_dead *d)
{
	wal_batch_release(&d->batch);
	memset(d, 0, sizeof(*d));
}

int wal_dead_list(struct wal *w, int id, uint64_t from_seq, size_t max, size_t max_bytes, struct wal_dead *out,
                  size_t *count)
{
	char name[65];
	MDB_txn *txn;
	MDB_cursor *cur = NULL;
	unsigned char kb[9];
	MDB_val k = { 9, kb }, v;
	size_t got = 0, bytes = 0;
	int rc;

	*count = 0;
	if ((rc = name_of(w, id, name)))
		return rc;
	if ((rc = enter(w)))
		return rc;
	if ((rc = begin(w, MDB_RDONLY, &txn)))
		goto out;
	if ((rc = mdb_cursor_open(txn, w->dbi_dead, &cur)))
		goto done;
	dead_key(id, from_seq, kb);
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
	     rc == 0 && got < max && (got == 0 || !max_bytes || bytes < max_bytes);
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		uint64_t s;
		int at = dead_key_at(&k, id, &s);
		if (at < 0)
			break; /* past this backend's keys */
		if (at > 0)
			continue;
		if ((rc = copy_dead(&v, s, max_bytes != 0, &out[got])))
			break;
		bytes += out[got].bytes;
		got++;
	}
	if (rc == MDB_NOTFOUND)
		rc = 0;
done:
	if (cur)
		mdb_cursor_close(cur);
	mdb_txn_abort(txn);
	if (rc) {
		while (got)
			wal_dead_release(&out[--got]);
	}
	*count = got;
out:
	leave(w);
	return map_rc(rc);
}

int wal_dead_get(struct wal *w, int id, uint64_t seq, struct wal_dead *out)
{
	char name[65];
	MDB_txn *txn;
	unsigned char kb[9];
	MDB_val k = { 9, kb }, v;
	int rc;
	memset(out, 0, sizeof(*out));
	if ((rc = name_of(w, id, name)))
		return rc;
	if ((rc = enter(w)))
		return rc;
	if ((rc = begin(w, MDB_RDONLY, &txn)))
		goto out;
	dead_key(id, seq, kb);
	rc = mdb_get(txn, w->dbi_dead, &k, &v);
	if (rc == 0)
		rc = copy_dead(&v, seq, 1, out);
	else if (rc == MDB_NOTFOUND)
		rc = WAL_ENOTFOUND;
	mdb_txn_abort(txn);
out:
	leave(w);
	return map_rc(rc);
}

/* 1 when dead-letter record v holds no batch relayd can send. */
static int is_corrupt_dead(const MDB_val *v)
{
	struct walr_dead hd;
	struct wal_batch hdr;
	size_t ml, off;
	return dead_kind(v, &hd, &ml, &off, &hdr, NULL, 0) != 0;
}

/* Recount backend id's dead counters from its dead-letter queue. */
static int recount_dead(MDB_txn *txn, struct wal *w, int id, struct walr_backend *r)
{
	MDB_cursor *cur;
	unsigned char kb[9];
	MDB_val k = { 9, kb }, v;
	int rc = mdb_cursor_open(txn, w->dbi_dead, &cur);
	if (rc)
		return rc;
	r->dead_batches = r->dead_bytes = 0;
	dead_key(id, 0, kb);
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		uint64_t s;
		int at = dead_key_at(&k, id, &s);
		if (at < 0)
			break;
		if (at > 0)
			continue;
		r->dead_batches++;
		r->dead_bytes += dead_bytes_of(&v);
	}
	mdb_cursor_close(cur);
	return rc == MDB_NOTFOUND ? 0 : rc;
}

/*
 * The sequences a dead-letter action works on, inside txn: a copy of the
 * n given ones (each must exist, else WAL_ENOTFOUND and *missing), or the
 * first n (all when n == 0) of backend id. *out is malloc'd (NULL when
 * there are none), *nout its length.
 */
static int dead_targets(MDB_txn *txn, struct wal *w, int id, const uint64_t *seqs, size_t n, int sendable,
                        uint64_t **out, size_t *nout, uint64_t *missing)
{
	unsigned char kb[9];
	MDB_val k = { 9, kb }, v;
	uint64_t *list = NULL;
	size_t len = 0, cap = 0;
	int rc = 0;

	*out = NULL;
	*nout = 0;
	if (seqs) {
		if (n == 0)
			return 0;
		if (!(list = malloc(n * sizeof(*list))))
			return -ENOMEM;
		for (size_t i = 0; i < n; i++) {
			dead_key(id, seqs[i], kb);
			if ((rc = mdb_get(txn, w->dbi_dead, &k, &v))) {
				if (rc == MDB_NOTFOUND) {
					rc = WAL_ENOTFOUND;
					if (missing)
						*missing = seqs[i];
				}
				free(list);
				return rc;
			}
			if (sendable && is_corrupt_dead(&v)) {
				if (missing)
					*missing = seqs[i];
				free(list);
				return WAL_ECORRUPT;
			}
			/* A sequence named twice is acted on once. */
			int dup = 0;
			for (size_t j = 0; j < len && !dup; j++)
				dup = list[j] == seqs[i];
			if (!dup)
				list[len++] = seqs[i];
		}
		*out = list;
		*nout = len;
		return 0;
	}
	MDB_cursor *cur;
	if ((rc = mdb_cursor_open(txn, w->dbi_dead, &cur)))
		return rc;
	dead_key(id, 0, kb);
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0 && (n == 0 || len < n);
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		uint64_t s;
		int at = dead_key_at(&k, id, &s);
		if (at < 0)
			break;
		if (at > 0)
			continue;
		if (sendable && is_corrupt_dead(&v))
			continue; /* nothing to send: left for dlq drop */
		if (len == cap) {
			cap = cap ? 2 * cap : 64;
			uint64_t *nl = realloc(list, cap * sizeof(*list));
			if (!nl) {
				rc = -ENOMEM;
				break;
			}
			list = nl;
		}
		list[len++] = s;
	}
	mdb_cursor_close(cur);
	if (rc && rc != MDB_NOTFOUND) {
		free(list);
		return rc;
	}
	*out = list;
	*nout = len;
	return 0;
}

/* Drop or requeue (append at the end of the log for id only) the dead
 * letters chosen by dead_targets, in one transaction. */
static int dead_move(struct wal *w, int id, const uint64_t *seqs, size_t n, int requeue, int64_t now_ns,
                     struct wal_count *done, uint64_t *missing)
{
	char name[65];
	struct walr_backend r;
	struct wal_count cnt = { 0, 0, 0, 0 };
	MDB_txn *txn;
	uint64_t *list = NULL, next = 0;
	size_t nlist = 0;
	unsigned char *copy = NULL;
	int recount = 0;
	int rc = begin_backend_write(w, id, name, &txn, &r);
	if (rc)
		return map_rc(rc);
	if ((rc = dead_targets(txn, w, id, seqs, n, requeue, &list, &nlist, missing)))
		goto abort;
	if (nlist == 0) {
		mdb_txn_abort(txn);
		goto out;
	}
	if (requeue && (rc = get_next_seq(txn, w, &next)))
		goto abort;
	for (size_t i = 0; i < nlist; i++) {
		unsigned char kb[9];
		MDB_val k = { 9, kb }, v;
		struct walr_dead hd;
		struct wal_batch hdr;
		size_t ml, boff;
		dead_key(id, list[i], kb);
		if ((rc = mdb_get(txn, w->dbi_dead, &k, &v)))
			goto abort;
		if (dead_kind(&v, &hd, &ml, &boff, &hdr, NULL, 0)) {
			/* A drop removes what it cannot decode (a requeue never
			 * picks one, dead_targets): the dead counters are then
			 * recounted, its own sizes cannot be trusted. */
			if ((rc = mdb_del(txn, w->dbi_dead, &k, NULL)))
				goto abort;
			cnt.corrupt++;
			recount = 1;
			continue;
		}
		cnt.batches++;
		cnt.points += hdr.lines;
		cnt.bytes += hdr.body_len;
		if (requeue) {
			/* The stored batch record is the queue's own format: copy it
			 * out (v dies at the next write in this transaction), give it
			 * this backend's route and the time of its new acceptance,
			 * and append it under the next sequence. */
			size_t len = v.mv_size - boff;
			unsigned char *nc = realloc(copy, len);
			if (!nc) {
				rc = -ENOMEM;
				goto abort;
			}
			copy = nc;
			memcpy(copy, (const char *)v.mv_data + boff, len);
			walr_put_u64(copy, 1ULL << id);
			walr_put_u64(copy + 8, (uint64_t)now_ns);
			walr_batch_seal(copy, len);
			unsigned char sk[8];
			walr_seq_encode(next, sk);
			MDB_val bk = { 8, sk }, bv = { len, copy };
			if ((rc = mdb_put(txn, w->dbi_batches, &bk, &bv, MDB_APPEND)))
				goto abort;
			next++;
			r.pending_batches++;
			r.pending_points += hdr.lines;
			r.pending_bytes += hdr.body_len;
		}
		if ((rc = mdb_del(txn, w->dbi_dead, &k, NULL)))
			goto abort;
		r.dead_batches = r.dead_batches ? r.dead_batches - 1 : 0;
		r.dead_bytes = r.dead_bytes >= hdr.body_len ? r.dead_bytes - hdr.body_len : 0;
	}
	if (recount && (rc = recount_dead(txn, w, id, &r)))
		goto abort;
	if ((rc = put_backend(txn, w, name, &r)) || (requeue && (rc = put_next_seq(txn, w, next))))
		goto abort;
	rc = commit(w, txn);
	goto out;
abort:
	mdb_txn_abort(txn);
	if (rc == MDB_MAP_FULL || rc == MDB_TXN_FULL)
		rc = WAL_EFULL;
out:
	leave(w);
	free(list);
	free(copy);
	if (rc == 0 && done)
		*done = cnt;
	return map_rc(rc);
}

int wal_dead_drop(struct wal *w, int id, const uint64_t *seqs, size_t n, struct wal_count *done, uint64_t *missing)
{
	return dead_move(w, id, seqs, n, 0, 0, done, missing);
}

int wal_dead_requeue(struct wal *w, int id, const uint64_t *seqs, size_t n, int64_t now_ns,
                     struct wal_count *done, uint64_t *missing)
{
	return dead_move(w, id, seqs, n, 1, now_ns, done, missing);
}

/*---- quarantine ----*/

/*
 * Inside txn: the record at or after max(from, cursor) at which wal_read
 * of backend id would stop, or the first it would return. 0 when it does
 * not decode (*seq, *val: the record, valid until the next write in txn;
 * why), WAL_ENOTFOUND when it decodes or there is none, or an LMDB code.
 */
static int find_corrupt(MDB_txn *txn, struct wal *w, int id, uint64_t from, uint64_t cursor, uint64_t *seq,
                        MDB_val *val, char *why, size_t whylen)
{
	MDB_cursor *cur;
	unsigned char kb[8];
	MDB_val k = { 8, kb }, v;
	int rc = mdb_cursor_open(txn, w->dbi_batches, &cur);
	if (rc)
		return rc;
	walr_seq_encode(from > cursor ? from : cursor, kb);
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		uint64_t s;
		struct wal_batch hdr;
		if (seq_of(&k, &s))
			continue;
		if (walr_batch_decode(v.mv_data, v.mv_size, &hdr, NULL, NULL, NULL, why, whylen)) {
			*seq = s;
			*val = v;
			break;
		}
		if (hdr.route & (1ULL << id)) {
			rc = WAL_ENOTFOUND;
			break;
		}
	}
	mdb_cursor_close(cur);
	return rc == MDB_NOTFOUND ? WAL_ENOTFOUND : rc;
}

int wal_find_corrupt(struct wal *w, int id, uint64_t from, uint64_t *seq, char *why, size_t whylen)
{
	char name[65], tmp[300];
	struct walr_backend r;
	MDB_txn *txn;
	MDB_val v;
	int rc;
	if ((rc = name_of(w, id, name)))
		return rc;
	if ((rc = enter(w)))
		return rc;
	if ((rc = begin(w, MDB_RDONLY, &txn)) == 0) {
		if ((rc = get_backend(txn, w, name, &r)) == 0)
			rc = find_corrupt(txn, w, id, from, r.cursor, seq, &v, tmp, sizeof(tmp));
		mdb_txn_abort(txn);
	}
	leave(w);
	if (rc == 0 && why && whylen)
		snprintf(why, whylen, "%s", tmp);
	return map_rc(rc);
}

int wal_quarantine(struct wal *w, int id, uint64_t from, uint64_t *seq, char *why, size_t whylen)
{
	char name[65], tmp[300];
	char names[WAL_MAX_BACKENDS][65];
	struct walr_backend r, recs[WAL_MAX_BACKENDS];
	struct walr_backend *rp[WAL_MAX_BACKENDS] = { 0 };
	uint64_t affected = 0, redead = 0, s = 0;
	unsigned char *raw = NULL;
	size_t raw_len;
	MDB_txn *txn;
	MDB_cursor *cur;
	MDB_val k, v;
	int rc = begin_backend_write(w, id, name, &txn, &r);
	if (rc)
		return map_rc(rc);
	if ((rc = find_corrupt(txn, w, id, from, r.cursor, &s, &v, tmp, sizeof(tmp))))
		goto abort;
	/* Copied out: v dies at the first write of this transaction. */
	raw_len = v.mv_size;
	if (!(raw = malloc(raw_len ? raw_len : 1))) {
		rc = -ENOMEM;
		goto abort;
	}
	memcpy(raw, v.mv_data, raw_len);
	/* Every backend whose cursor has not passed it: its route cannot be
	 * trusted, so as far as anyone can tell it was pending for each. */
	if ((rc = mdb_cursor_open(txn, w->dbi_backends, &cur)))
		goto abort;
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		struct walr_backend o;
		if (k.mv_size == 0 || k.mv_size > 64 || walr_backend_decode(v.mv_data, v.mv_size, &o) || o.cursor > s ||
		    (affected & (1ULL << o.id)))
			continue;
		affected |= 1ULL << o.id;
		memcpy(names[o.id], k.mv_data, k.mv_size);
		names[o.id][k.mv_size] = '\0';
		recs[o.id] = o;
		rp[o.id] = &recs[o.id];
	}
	mdb_cursor_close(cur);
	if (rc != MDB_NOTFOUND)
		goto abort;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	struct walr_dead d = { 0, 0, (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec, tmp, 0 };
	for (int i = 0; i < WAL_MAX_BACKENDS; i++) {
		if (!(affected & (1ULL << i)))
			continue;
		unsigned char kb[9];
		dead_key(i, s, kb);
		MDB_val dk = { 9, kb }, dv;
		/* A dead letter of this sequence already there (a line of it
		 * isolated by a 413 split before the record was damaged) is
		 * replaced; the dead counters are then recounted. */
		rc = mdb_get(txn, w->dbi_dead, &dk, &dv);
		if (rc == 0)
			redead |= 1ULL << i;
		else if (rc != MDB_NOTFOUND)
			goto abort;
		dv.mv_size = walr_dead_raw_size(&d, raw_len);
		dv.mv_data = NULL;
		if ((rc = mdb_put(txn, w->dbi_dead, &dk, &dv, MDB_RESERVE)))
			goto abort;
		walr_dead_raw_encode(&d, raw, raw_len, dv.mv_data);
		if (!(redead & (1ULL << i))) {
			recs[i].dead_batches++;
			recs[i].dead_bytes += raw_len;
		}
	}
	/* Out of the log: every cursor is past it now, none moved over a good
	 * batch (a worker may hold those in memory, unacknowledged). */
	unsigned char sk[8];
	walr_seq_encode(s, sk);
	MDB_val bk = { 8, sk };
	if ((rc = mdb_del(txn, w->dbi_batches, &bk, NULL)))
		goto abort;
	if ((rc = recount_pending(txn, w, affected, rp)))
		goto abort;
	for (int i = 0; i < WAL_MAX_BACKENDS; i++) {
		if (!(affected & (1ULL << i)))
			continue;
		if ((redead & (1ULL << i)) && (rc = recount_dead(txn, w, i, &recs[i])))
			goto abort;
		if ((rc = put_backend(txn, w, names[i], &recs[i])))
			goto abort;
	}
	if ((rc = truncate_log(txn, w)))
		goto abort;
	rc = commit(w, txn);
	if (rc == 0) {
		*seq = s;
		if (why && whylen)
			snprintf(why, whylen, "%s", tmp);
	}
	goto out;
abort:
	mdb_txn_abort(txn);
	if (rc == MDB_MAP_FULL || rc == MDB_TXN_FULL)
		rc = WAL_EFULL;
out:
	free(raw);
	leave(w);
	return map_rc(rc);
}

/*---- verify ----*/

#define VERIFY_MAX_TEXT 1000

/* Problems found inside the read transaction, described after it ends. */
struct problems {
	char **text;
	size_t n;     /* described (at most VERIFY_MAX_TEXT) */
	size_t total; /* found */
	int oom;
};

static void problem(struct problems *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void problem(struct problems *p, const char *fmt, ...)
{
	p->total++;
	if (p->n >= VERIFY_MAX_TEXT || p->oom)
		return;
	if (p->n % 64 == 0) {
		char **nt = realloc(p->text, (p->n + 64) * sizeof(*nt));
		if (!nt) {
			p->oom = 1;
			return;
		}
		p->text = nt;
	}
	va_list ap;
	va_start(ap, fmt);
	int rc = vasprintf(&p->text[p->n], fmt, ap);
	va_end(ap);
	if (rc < 0)
		p->oom = 1;
	else
		p->n++;
}

struct verify_backend {
	char name[65];
	struct walr_backend r;
	struct wal_count pending; /* recounted from the log */
	uint64_t corrupt;         /* records from its cursor on that do not decode */
	struct wal_count dead;    /* recounted from the dead letters */
};

static int verify_walk(MDB_txn *txn, struct wal *w, struct problems *p, struct wal_verify_stat *st)
{
	struct verify_backend *be = calloc(WAL_MAX_BACKENDS, sizeof(*be));
	uint64_t known = 0, next = 0;
	MDB_cursor *cur = NULL;
	MDB_val k, v;
	int rc;

	if (!be)
		return -ENOMEM;

	/* meta */
	MDB_val fk = { sizeof(KEY_FORMAT) - 1, (void *)KEY_FORMAT };
	struct walr_format f;
	if ((rc = mdb_get(txn, w->dbi_meta, &fk, &v)))
		problem(p, "meta: no format record (%s)", mdb_strerror(rc));
	else if (walr_format_decode(v.mv_data, v.mv_size, &f))
		problem(p, "meta: the format record does not decode");
	else if (f.version != WAL_FORMAT_VERSION)
		problem(p, "meta: format version %u, expected %d", f.version, WAL_FORMAT_VERSION);
	rc = get_next_seq(txn, w, &next);
	if (rc) {
		problem(p, "meta: next_seq is missing or not 8 bytes");
		next = UINT64_MAX;
	}

	/* backends */
	if ((rc = mdb_cursor_open(txn, w->dbi_backends, &cur)))
		goto out;
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		char name[65];
		size_t nl = k.mv_size > 64 ? 64 : k.mv_size;
		memcpy(name, k.mv_data, nl);
		name[nl] = '\0';
		st->backends++;
		struct walr_backend r;
		if (k.mv_size == 0 || k.mv_size > 64)
			problem(p, "backend '%s': name of %zu bytes (1 to 64 allowed)", name, k.mv_size);
		if (walr_backend_decode(v.mv_data, v.mv_size, &r)) {
			problem(p, "backend '%s': record does not decode (%zu bytes)", name, v.mv_size);
			continue;
		}
		if (known & (1ULL << r.id)) {
			problem(p, "backend '%s': id %u is also used by backend '%s'", name, r.id, be[r.id].name);
			continue;
		}
		known |= 1ULL << r.id;
		memcpy(be[r.id].name, name, nl + 1);
		be[r.id].r = r;
		if (r.cursor == 0 || r.cursor > next)
			problem(p, "backend '%s': cursor %" PRIu64 " is outside the log [1, %" PRIu64 "]", name, r.cursor,
			        next);
	}
	mdb_cursor_close(cur);
	cur = NULL;
	if (rc != MDB_NOTFOUND)
		goto out;

	/* batches: decode each, recount what is pending per backend */
	if ((rc = mdb_cursor_open(txn, w->dbi_batches, &cur)))
		goto out;
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		st->batches++;
		if (k.mv_size != 8) {
			problem(p, "batches: a key of %zu bytes (8 expected)", k.mv_size);
			continue;
		}
		uint64_t seq = walr_seq_decode(k.mv_data);
		struct wal_batch hdr;
		char why[200];
		if (seq >= next)
			problem(p, "batch %" PRIu64 ": at or past next_seq %" PRIu64, seq, next);
		if (walr_batch_decode(v.mv_data, v.mv_size, &hdr, NULL, NULL, NULL, why, sizeof(why))) {
			/* Named with why: every damaged batch, not only the first,
			 * and what is wrong with it. */
			st->corrupt_batches++;
			/* Its counts cannot be known: the backends it stops cannot
			 * have their counters checked (they are recounted when it is
			 * quarantined). */
			for (int id = 0; id < WAL_MAX_BACKENDS; id++)
				if ((known & (1ULL << id)) && seq >= be[id].r.cursor)
					be[id].corrupt++;
			problem(p, "batch %" PRIu64 ": corrupt, %s (%zu bytes; relayd quarantines it into the dead-letter "
			        "queue when it reaches it)", seq, why, v.mv_size);
			continue;
		}
		if (hdr.route == 0)
			problem(p, "batch %" PRIu64 ": empty route (no backend needs it, yet it is kept)", seq);
		if (hdr.route & ~known)
			problem(p, "batch %" PRIu64 ": routed to unknown backend ids (mask %#" PRIx64 ")", seq,
			        hdr.route & ~known);
		if (hdr.precision > WALR_PRECISION_MAX)
			problem(p, "batch %" PRIu64 ": precision code %u is not one of the format's (0 to %d; relayd "
			        "dead-letters it when it gets there)", seq, hdr.precision, WALR_PRECISION_MAX);
		for (int id = 0; id < WAL_MAX_BACKENDS; id++) {
			if (!(hdr.route & known & (1ULL << id)) || seq < be[id].r.cursor)
				continue;
			be[id].pending.batches++;
			be[id].pending.points += hdr.lines;
			be[id].pending.bytes += hdr.body_len;
		}
	}
	mdb_cursor_close(cur);
	cur = NULL;
	if (rc != MDB_NOTFOUND)
		goto out;

	/* dead letters */
	if ((rc = mdb_cursor_open(txn, w->dbi_dead, &cur)))
		goto out;
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		st->dead++;
		if (k.mv_size != 9) {
			problem(p, "dead: a key of %zu bytes (9 expected)", k.mv_size);
			continue;
		}
		const unsigned char *kp = k.mv_data;
		int id = kp[0];
		uint64_t seq = walr_seq_decode(kp + 1);
		struct walr_dead hd;
		struct wal_batch hdr;
		size_t ml, boff;
		char why[300];
		if (id >= WAL_MAX_BACKENDS || !(known & (1ULL << id))) {
			problem(p, "dead letter %d/%" PRIu64 ": belongs to no known backend (id %d)", id, seq, id);
			continue;
		}
		int kind = dead_kind(&v, &hd, &ml, &boff, &hdr, why, sizeof(why));
		if (kind)
			st->corrupt_dead++;
		else if (hdr.precision > WALR_PRECISION_MAX)
			problem(p, "backend '%s': dead letter %" PRIu64 " has precision code %u, not one of the format's",
			        be[id].name, seq, hdr.precision);
		if (kind == 1)
			problem(p, "backend '%s': dead letter %" PRIu64 " is a quarantined batch that did not decode (%s): "
			        "its points are lost ('relayctl dlq show' shows its bytes, 'relayctl dlq drop' removes it)",
			        be[id].name, seq, why);
		else if (kind == 2)
			problem(p, "backend '%s': dead letter %" PRIu64 " is corrupt: %s (%zu bytes; 'relayctl dlq drop' "
			        "removes it)", be[id].name, seq, why, v.mv_size);
		be[id].dead.batches++;
		be[id].dead.bytes += dead_bytes_of(&v);
	}
	mdb_cursor_close(cur);
	cur = NULL;
	if (rc != MDB_NOTFOUND)
		goto out;
	rc = 0;

	/* counters against the recounts */
	for (int id = 0; id < WAL_MAX_BACKENDS; id++) {
		if (!(known & (1ULL << id)))
			continue;
		const struct verify_backend *b = &be[id];
		if (!b->corrupt && (b->r.pending_batches != b->pending.batches || b->r.pending_points != b->pending.points ||
		                    b->r.pending_bytes != b->pending.bytes))
			problem(p,
			        "backend '%s': counters say %" PRIu64 " batches, %" PRIu64 " points, %" PRIu64
			        " bytes pending; the log holds %" PRIu64 ", %" PRIu64 ", %" PRIu64 " from its cursor %" PRIu64,
			        b->name, b->r.pending_batches, b->r.pending_points, b->r.pending_bytes, b->pending.batches,
			        b->pending.points, b->pending.bytes, b->r.cursor);
		if (b->r.dead_batches != b->dead.batches || b->r.dead_bytes != b->dead.bytes)
			problem(p,
			        "backend '%s': counters say %" PRIu64 " dead letters of %" PRIu64 " bytes; the dead-letter "
			        "queue holds %" PRIu64 " of %" PRIu64 " bytes",
			        b->name, b->r.dead_batches, b->r.dead_bytes, b->dead.batches, b->dead.bytes);
	}
out:
	if (cur)
		mdb_cursor_close(cur);
	free(be);
	return rc;
}

int wal_verify(struct wal *w, void (*cb)(void *arg, const char *text), void *arg, struct wal_verify_stat *st)
{
	struct problems p = { NULL, 0, 0, 0 };
	struct wal_verify_stat dummy;
	MDB_txn *txn;
	int rc;
	if (!st)
		st = &dummy;
	memset(st, 0, sizeof(*st));
	if ((rc = enter(w)))
		return rc;
	if ((rc = begin(w, MDB_RDONLY, &txn)) == 0) {
		rc = verify_walk(txn, w, &p, st);
		mdb_txn_abort(txn);
	}
	leave(w);
	/* Described only now: the caller may print or wait, and no read
	 * transaction may be held meanwhile. */
	for (size_t i = 0; i < p.n; i++) {
		if (rc == 0 && cb)
			cb(arg, p.text[i]);
		free(p.text[i]);
	}
	free(p.text);
	if (rc == 0 && p.oom)
		rc = -ENOMEM;
	if (rc == 0 && cb && p.total > p.n) {
		char more[96];
		snprintf(more, sizeof(more), "... and %zu more problems", p.total - p.n);
		cb(arg, more);
	}
	if (rc)
		return map_rc(rc);
	return p.total > INT32_MAX ? INT32_MAX : (int)p.total;
}
