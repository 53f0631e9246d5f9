/*
 * wal: the durable queue on LMDB. This file: opening (the format record,
 * the upgrade of an old store), closing, entering an operation and its
 * transactions, and the records every part of wal/ reads (wal_internal.h
 * lists the parts). Every transaction begins and ends inside one function
 * of wal/; nothing here logs, touches the network or knows about
 * HTTP. Durability comes from LMDB's default flags only: no MDB_NOSYNC,
 * MDB_NOMETASYNC or MDB_WRITEMAP (docs/architecture.md, "Durability rules":
 * NOSYNC loses acknowledged data on power loss, WRITEMAP turns a full disk
 * into SIGBUS).
 */
#include "wal/wal_file.h"
#include "wal/wal_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_MAP_SIZE (64ULL << 20)

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
int wali_map_rc(int rc)
{
	if (rc == 0)
		return 0;
	if (rc == MDB_MAP_FULL || rc == ENOSPC || rc == EDQUOT)
		return WAL_EFULL;
	if (rc > 0)
		return -rc; /* LMDB returns errno values positive */
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

int wali_fsync_dir(const char *dir)
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

static uint64_t remap_size(const struct wal *w);

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
		/* A writer grew the map between our open and this transaction
		 * (read-only: the file grew past what we mapped). No other
		 * transaction of ours exists: env_open runs before wal_open
		 * returns, or under the exclusive env_lock (a reopen, which
		 * holds w->mu: not wali_remap, which takes it). A failure is
		 * env_open's, which closes the environment. */
		rc = mdb_env_set_mapsize(w->env, remap_size(w));
		if (rc == 0)
			rc = mdb_txn_begin(w->env, NULL, rdonly ? MDB_RDONLY : 0, &txn);
	}
	if (rc)
		return wali_map_rc(rc);
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
		/* Formats 1 (no checksums) and 2 (no kind) are upgraded by
		 * relayd's own open, in this transaction; readers beside it wait
		 * for that. A format-2 record is a valid format-3 record of kind
		 * 0 (byte 34 was reserved-zero): only the format record changes,
		 * and older binaries then refuse the store as newer. */
		if ((f.version == 1 || f.version == 2) && !rdonly) {
			migrate = (int)f.version;
		} else if (f.version != WAL_FORMAT_VERSION) {
			/* Newer: refused by every open, never touched. A newer
			 * relayd may have changed the meaning of any record, so
			 * no older one can read it, let alone write it; the
			 * words say what the operator can do about it. */
			if (w->why && w->whylen && f.version > WAL_FORMAT_VERSION)
				snprintf(w->why, w->whylen,
				         "this queue was written by a newer relayd (format %u); this relayd reads format %d: "
				         "install the newer relayd or restore a backup",
				         f.version, WAL_FORMAT_VERSION);
			else if (w->why && w->whylen && f.version == 0)
				snprintf(w->why, w->whylen,
				         "the queue's format record says format 0, which no relayd writes (this relayd reads "
				         "format %d)",
				         WAL_FORMAT_VERSION);
			else if (w->why && w->whylen)
				snprintf(w->why, w->whylen,
				         "the queue is in format version %u, of an older relayd: relayd upgrades it when it "
				         "next starts",
				         f.version);
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
	/* Held databases (format 3): created by relayd's own open; a view of
	 * a store that has none yet finds nothing held. */
	rc = mdb_dbi_open(txn, "held", cflag, &w->dbi_held);
	if (rc && !(rc == MDB_NOTFOUND && rdonly))
		goto fail;
	w->have_held = rc == 0;
	rc = 0;
	if (migrate) {
		/* One transaction: the records and the format record change
		 * together, or (a crash, a full map) not at all. */
		uint64_t n = 0;
		unsigned char buf[WALR_FORMAT_SIZE];
		f.version = WAL_FORMAT_VERSION;
		walr_format_encode(&f, buf);
		MDB_val k = { sizeof(KEY_FORMAT) - 1, (void *)KEY_FORMAT }, v = { sizeof(buf), buf };
		if ((migrate == 1 && (rc = migrate_v1(txn, w, &n))) || (rc = mdb_put(txn, w->dbi_meta, &k, &v, 0)))
			goto fail;
		w->upgraded_from = (unsigned)migrate;
		w->upgraded = n;
	}
	/* The first commit of a new queue is a durable one (LMDB syncs it);
	 * the caller then fsyncs the directory so the files' entries are too. */
	rc = mdb_txn_commit(txn);
	return wali_map_rc(rc);
fail:
	mdb_txn_abort(txn);
	return wali_map_rc(rc);
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

/*
 * The map of a read-only open: what the file holds, with room for it to
 * grow while we read, not the size the file records. The recorded size is
 * relayd's map, which may be hundreds of GiB of address space (its
 * headroom, config_map_size) and cannot be reserved under an
 * address-space limit (ulimit -v): relayctl would fail with ENOMEM where
 * relayd itself started. LMDB rounds a smaller size up to the pages in
 * use, and a transaction that finds the file grown past the map returns
 * MDB_MAP_RESIZED, on which we map again with this (open_dbis, wali_begin).
 */
#define RDONLY_MAP_SLACK (64ULL << 20)

uint64_t wali_rdonly_map_size(const struct wal *w)
{
	char path[4096];
	struct stat st;
	uint64_t size = 0;
	snprintf(path, sizeof(path), "%s/data.mdb", w->dir);
	if (stat(path, &st) == 0 && st.st_size > 0)
		size = (uint64_t)st.st_size;
	size += RDONLY_MAP_SLACK;
	size = (size + (1ULL << 20) - 1) & ~((1ULL << 20) - 1);
	if ((uint64_t)SIZE_MAX < size)
		size = SIZE_MAX;
	return size;
}

/*
 * A read-only or shared open (relayctl, often as root) in a directory
 * without lock.mdb would have LMDB create it, as the opener, mode 0600: a
 * relayd running as its own user could then not open its queue (EACCES).
 * So the opener creates it first, empty (LMDB initialises an empty lock
 * file as a new one), and gives it to the owner of data.mdb, whose queue
 * it is, before LMDB opens it: there is no moment when a relayd starting
 * beside it finds a lock file it cannot open. O_EXCL and O_NOFOLLOW: only
 * a file we create is changed, never one another process made, nor what
 * a symlink planted in the directory points at. Removing the lock file
 * after use instead (as relayctl backup does with its copy's) is not safe
 * here: a relayd starting meanwhile may have opened this very file, and a
 * later opener would create another one, so that readers and the writer
 * no longer share one reader table. Failures are ignored (EEXIST:
 * someone else made it; EPERM: not root, and the data's owner is then us
 * as a rule): LMDB opens or creates the file as before.
 */
static void lock_for_owner(const struct wal *w)
{
	char path[4096];
	struct stat data;
	snprintf(path, sizeof(path), "%s/data.mdb", w->dir);
	if (stat(path, &data) < 0 || (data.st_uid == geteuid() && data.st_gid == getegid()))
		return;
	snprintf(path, sizeof(path), "%s/lock.mdb", w->dir);
	int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return;
	if (fchown(fd, data.st_uid, data.st_gid) < 0) {
		/* EPERM when not root: the file stays ours, as LMDB would
		 * have made it. */
	}
	close(fd);
}

static int env_open(struct wal *w)
{
	int rc = check_file(w);
	if (rc)
		return rc;
	if (w->flags & (WAL_F_RDONLY | WAL_F_SHARED))
		lock_for_owner(w);
	rc = mdb_env_create(&w->env);
	if (rc)
		return wali_map_rc(rc);
	mdb_env_set_maxdbs(w->env, 8);
	mdb_env_set_maxreaders(w->env, 126);
	/* Read-only: what the file holds plus room to grow
	 * (wali_rdonly_map_size). Shared with no size given: the size the
	 * file records (LMDB takes it when none is set). */
	if (!(w->flags & WAL_F_RDONLY) && w->map_size) {
		if ((rc = mdb_env_set_mapsize(w->env, w->map_size)))
			goto fail;
	} else if ((w->flags & WAL_F_RDONLY) && (rc = mdb_env_set_mapsize(w->env, wali_rdonly_map_size(w)))) {
		goto fail;
	}
	/* Default flags: synchronous, durable commits. MDB_NOTLS would only
	 * matter for read transactions kept across threads; we keep none. */
	unsigned fl = (w->flags & WAL_F_RDONLY) ? MDB_RDONLY : 0;
	rc = mdb_env_open(w->env, w->dir, fl, 0600);
	if (rc)
		goto fail;
	int created;
	if ((rc = open_dbis(w, &created)))
		goto fail;
	if (created && (rc = wali_fsync_dir(w->dir)))
		goto fail;
	/* Free reader slots left by processes that died holding them (a killed
	 * relayctl, say): they would pin pages and grow the file. */
	int dead;
	mdb_reader_check(w->env, &dead);
	return 0;
fail:
	mdb_env_close(w->env);
	w->env = NULL;
	return wali_map_rc(rc);
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
	/* Writers first: a remap or a reopen (the exclusive side) must not
	 * wait behind a stream of overlapping readers (glibc prefers readers
	 * by default). NONRECURSIVE is safe because no operation takes the
	 * shared lock twice (wali_enter is called once, at the public entry). */
	pthread_rwlockattr_t rwa;
	pthread_rwlockattr_init(&rwa);
	pthread_rwlockattr_setkind_np(&rwa, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&w->env_lock, &rwa);
	pthread_rwlockattr_destroy(&rwa);
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
int wali_enter(struct wal *w)
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

void wali_leave(struct wal *w)
{
	pthread_rwlock_unlock(&w->env_lock);
}

/* After a failed write commit, anything but a full map may have left the
 * environment in an unknown state: reopen it before the next use. */
void wali_note_failure(struct wal *w, int mdb_rc)
{
	if (mdb_rc == MDB_MAP_FULL || mdb_rc == MDB_TXN_FULL || mdb_rc == 0)
		return;
	pthread_mutex_lock(&w->mu);
	w->need_reopen = 1;
	pthread_mutex_unlock(&w->mu);
}

/* Abort a write transaction that failed with rc: a full map or a
 * transaction too large for it is WAL_EFULL (nothing of it stored). */
int wali_abort_full(MDB_txn *txn, int rc)
{
	mdb_txn_abort(txn);
	return rc == MDB_MAP_FULL || rc == MDB_TXN_FULL ? WAL_EFULL : rc;
}

/* Commit a write transaction; a failure marks the environment for a
 * reopen (see note_failure). */
int wali_commit(struct wal *w, MDB_txn *txn)
{
	int rc = mdb_txn_commit(txn);
	if (rc)
		wali_note_failure(w, rc);
	return rc;
}

/*
 * The map size to use after MDB_MAP_RESIZED. Read-only: what the file
 * holds plus room (wali_rdonly_map_size). relayd: its own size, or the
 * file's length plus the same room when the file has outgrown that (a
 * relayctl with a larger queue.map_size wrote past it): never the size
 * the file records, which may not fit under relayd's address-space limit
 * (that is often why the other process's size differed), and never just
 * the pages in use, which would leave no room for relayd's next write.
 * relayctl beside relayd (shared): its own size, relayd's, which LMDB
 * raises to the pages in use, so it never writes past relayd's map (0:
 * the recorded size, as at its open).
 */
static uint64_t remap_size(const struct wal *w)
{
	if (w->flags & WAL_F_RDONLY)
		return wali_rdonly_map_size(w);
	if (w->flags & WAL_F_SHARED)
		return w->map_size;
	uint64_t grown = wali_rdonly_map_size(w);
	return grown > w->map_size ? grown : w->map_size;
}

int wali_remap(struct wal *w)
{
	int rc = mdb_env_set_mapsize(w->env, remap_size(w));
	if (rc) {
		/* The old map is gone and the new one failed: nothing may use
		 * this environment until it is opened again. */
		pthread_mutex_lock(&w->mu);
		w->need_reopen = 1;
		pthread_mutex_unlock(&w->mu);
	}
	return rc;
}

int wali_remap_exclusive(struct wal *w)
{
	/* mdb_env_set_mapsize unmaps the file: it may only run while no
	 * transaction of this process is active, and other threads may be
	 * inside theirs under the shared lock. Trade ours for the exclusive
	 * one, which waits for every operation to leave. Another thread may
	 * have remapped (or marked the environment for a reopen) meanwhile:
	 * mapping again is harmless, a marked environment is not touched. */
	pthread_rwlock_unlock(&w->env_lock);
	pthread_rwlock_wrlock(&w->env_lock);
	pthread_mutex_lock(&w->mu);
	int unusable = !w->env || w->need_reopen;
	pthread_mutex_unlock(&w->mu);
	int rc = unusable ? -EIO : wali_remap(w);
	if (rc && !unusable) {
		/* A failed remap leaves the environment without a map (LMDB's
		 * metas point into what was unmapped): close it now, while no
		 * one is inside, so that threads already past wali_enter's
		 * check find no environment (-EIO) rather than a broken one.
		 * The next wali_enter opens it again. */
		mdb_env_close(w->env);
		w->env = NULL;
	}
	pthread_rwlock_unlock(&w->env_lock);
	pthread_rwlock_rdlock(&w->env_lock);
	if (rc == 0 && !w->env)
		rc = -EIO;
	return rc;
}

int wali_begin(struct wal *w, unsigned flags, MDB_txn **txn)
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
	/* Another process wrote past our map (relayctl beside relayd, or
	 * relayd beside a read-only relayctl). It may go on writing between
	 * our remap and our begin: a few tries, each mapping what it holds. */
	for (int tries = 0; rc == MDB_MAP_RESIZED && tries < 4; tries++) {
		rc = wali_remap_exclusive(w);
		if (rc == 0)
			rc = mdb_txn_begin(w->env, NULL, flags, txn);
	}
	if (rc == MDB_PANIC)
		wali_note_failure(w, rc);
	return rc;
}

/*---- backends ----*/

int wali_get_backend(MDB_txn *txn, struct wal *w, const char *name, struct walr_backend *r)
{
	MDB_val k = { strlen(name), (void *)name }, v;
	int rc = mdb_get(txn, w->dbi_backends, &k, &v);
	if (rc)
		return rc == MDB_NOTFOUND ? WAL_ENOBACKEND : rc;
	return walr_backend_decode(v.mv_data, v.mv_size, r);
}

int wali_put_backend(MDB_txn *txn, struct wal *w, const char *name, const struct walr_backend *r)
{
	unsigned char buf[WALR_BACKEND_SIZE];
	walr_backend_encode(r, buf);
	MDB_val k = { strlen(name), (void *)name }, v = { sizeof(buf), buf };
	return mdb_put(txn, w->dbi_backends, &k, &v, 0);
}

int wali_get_next_seq(MDB_txn *txn, struct wal *w, uint64_t *seq)
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

int wali_put_next_seq(MDB_txn *txn, struct wal *w, uint64_t seq)
{
	unsigned char buf[8];
	walr_put_u64(buf, seq);
	MDB_val k = { sizeof(KEY_NEXT_SEQ) - 1, (void *)KEY_NEXT_SEQ }, v = { 8, buf };
	return mdb_put(txn, w->dbi_meta, &k, &v, 0);
}

/* The sequence of a batches key; -1 for a key of another size, which no
 * reader returns (it is junk: every key this code writes has 8 bytes). */
int wali_seq_of(const MDB_val *k, uint64_t *seq)
{
	if (k->mv_size != 8)
		return -1;
	*seq = walr_seq_decode(k->mv_data);
	return 0;
}

/* Decode a batch record's header (with every check of walr_batch_decode). */
int wali_decode_hdr(const MDB_val *v, struct wal_batch *hdr)
{
	return walr_batch_decode(v->mv_data, v->mv_size, hdr, NULL, NULL, NULL, NULL, 0);
}

/*---- range scans ----*/

int wali_scan_open(struct wali_scan *s, MDB_txn *txn, MDB_dbi dbi, int prefix, uint64_t from)
{
	memset(s, 0, sizeof(*s));
	s->prefix = prefix;
	s->k.mv_data = s->kb;
	if (prefix >= 0) {
		/* dead DBI: backend id (1 byte) then the sequence (BE). */
		s->kb[0] = (unsigned char)prefix;
		walr_seq_encode(from, s->kb + 1);
		s->k.mv_size = 9;
	} else {
		walr_seq_encode(from, s->kb);
		s->k.mv_size = 8;
	}
	return mdb_cursor_open(txn, dbi, &s->cur);
}

int wali_scan_next(struct wali_scan *s)
{
	for (;;) {
		int rc = mdb_cursor_get(s->cur, &s->k, &s->v, s->started ? MDB_NEXT : MDB_SET_RANGE);
		s->started = 1;
		if (rc)
			return rc;
		const unsigned char *kp = s->k.mv_data;
		if (s->prefix < 0) {
			if (wali_seq_of(&s->k, &s->seq))
				continue;
			return 0;
		}
		if (s->k.mv_size == 0 || kp[0] != (unsigned char)s->prefix)
			return MDB_NOTFOUND; /* past the prefix's keys */
		if (s->k.mv_size != 9)
			continue; /* junk among them: skipped */
		s->seq = walr_seq_decode(kp + 1);
		return 0;
	}
}

void wali_scan_close(struct wali_scan *s)
{
	if (s->cur)
		mdb_cursor_close(s->cur);
	s->cur = NULL;
}

int wali_name_of(struct wal *w, int id, char name[WAL_NAME_MAX + 1])
{
	if (id < 0 || id >= WAL_MAX_BACKENDS)
		return WAL_EINVAL;
	pthread_mutex_lock(&w->mu);
	int known = w->be[id].known;
	memcpy(name, w->be[id].name, WAL_NAME_MAX + 1);
	pthread_mutex_unlock(&w->mu);
	return known ? 0 : WAL_ENOBACKEND;
}

/*
 * Begin an operation on backend id: its name, enter, begin a transaction
 * (flags: MDB_RDONLY or 0) and, when r is not NULL, load the backend
 * record. On success the caller owns txn and must wali_leave(w) after
 * ending it; on failure nothing is held.
 */
int wali_begin_backend(struct wal *w, int id, unsigned flags, char name[WAL_NAME_MAX + 1], MDB_txn **txn,
                       struct walr_backend *r)
{
	int rc;
	if ((rc = wali_name_of(w, id, name)))
		return rc;
	if ((rc = wali_enter(w)))
		return rc;
	if ((rc = wali_begin(w, flags, txn))) {
		wali_leave(w);
		return rc;
	}
	if (r && (rc = wali_get_backend(*txn, w, name, r))) {
		mdb_txn_abort(*txn);
		wali_leave(w);
		return rc;
	}
	return 0;
}

/* wali_begin_backend of a write transaction for an operator action, once
 * the handle is known to be one that may write. */
int wali_begin_backend_write(struct wal *w, int id, char name[WAL_NAME_MAX + 1], MDB_txn **txn, struct walr_backend *r)
{
	if (w->flags & WAL_F_RDONLY)
		return WAL_EINVAL;
	return wali_begin_backend(w, id, 0, name, txn, r);
}
