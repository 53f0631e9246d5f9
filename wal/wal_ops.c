/*
 * wal_ops: the figures (wal_backend_stat, wal_backend_names, wal_stat,
 * wal_reader_check) and the operator actions on the log that relayctl
 * uses (pause, purge, get); each one LMDB transaction.
 */
#include "wal/wal_internal.h"

#include <stdio.h>
#include <string.h>

/*---- figures ----*/

static void fill_stat(struct wal_backend_stat *st, const char *name, size_t nlen, const struct walr_backend *r)
{
	memset(st, 0, sizeof(*st));
	if (nlen > WAL_NAME_MAX)
		nlen = WAL_NAME_MAX;
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

/* The global figures inside txn. */
static int global_in(MDB_txn *txn, struct wal *w, struct wal_stat *st)
{
	MDB_stat ms;
	MDB_envinfo info;
	int rc;
	memset(st, 0, sizeof(*st));
	if ((rc = wali_get_next_seq(txn, w, &st->next_seq)) == 0 && (rc = mdb_stat(txn, w->dbi_batches, &ms)) == 0) {
		st->batches = ms.ms_entries;
		st->page_size = ms.ms_psize;
		mdb_env_info(w->env, &info);
		st->map_size = info.me_mapsize;
		st->file_pages = info.me_last_pgno + 1;
		st->format_version = WAL_FORMAT_VERSION;
	}
	return rc;
}

/* Backend name's figures inside txn. */
static int stat_in(MDB_txn *txn, struct wal *w, const char *name, struct wal_backend_stat *st)
{
	struct walr_backend r;
	int rc = wali_get_backend(txn, w, name, &r);
	if (rc == 0) {
		struct wal_count h;
		fill_stat(st, name, strlen(name), &r);
		if (r.pending_batches)
			rc = wali_oldest_pending(txn, w, (int)r.id, r.cursor, &st->oldest_accept_ns, &st->corrupt_seq);
		if (rc == 0 && (rc = wali_held_totals(txn, w, (int)r.id, &h)) == 0) {
			st->held_batches = h.batches;
			st->held_points = h.points;
			st->held_bytes = h.bytes;
		}
	}
	return rc;
}

int wal_backend_stat(struct wal *w, const char *name, struct wal_backend_stat *st)
{
	MDB_txn *txn;
	int rc;
	if ((rc = wali_enter(w)))
		return rc;
	if ((rc = wali_begin(w, MDB_RDONLY, &txn)) == 0) {
		rc = stat_in(txn, w, name, st);
		mdb_txn_abort(txn);
	}
	wali_leave(w);
	return wali_map_rc(rc);
}

int wal_backend_stats(struct wal *w, const char *const *names, size_t n, struct wal_backend_stat *out, int *rcs,
                      struct wal_stat *global, int *global_rc)
{
	MDB_txn *txn;
	int rc;
	if (global) {
		memset(global, 0, sizeof(*global));
		*global_rc = WAL_EINVAL;
	}
	for (size_t i = 0; i < n; i++) {
		memset(&out[i], 0, sizeof(out[i]));
		out[i].id = -1;
		rcs[i] = WAL_ENOBACKEND;
	}
	if ((rc = wali_enter(w)))
		return rc;
	/* One snapshot for all of them: the figures agree with each other,
	 * and a scrape of 64 backends costs one reader slot, not 64. */
	if ((rc = wali_begin(w, MDB_RDONLY, &txn)) == 0) {
		for (size_t i = 0; i < n; i++)
			rcs[i] = wali_map_rc(stat_in(txn, w, names[i], &out[i]));
		if (global)
			*global_rc = wali_map_rc(global_in(txn, w, global));
		mdb_txn_abort(txn);
	}
	wali_leave(w);
	return wali_map_rc(rc);
}

int wal_backend_names(struct wal *w, char (*names)[WAL_NAME_MAX + 1], size_t max, size_t *count)
{
	MDB_txn *txn;
	MDB_cursor *cur = NULL;
	MDB_val k, v;
	size_t n = 0;
	int rc;
	*count = 0;
	if ((rc = wali_enter(w)))
		return rc;
	if ((rc = wali_begin(w, MDB_RDONLY, &txn)))
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
	wali_leave(w);
	return wali_map_rc(rc);
}

int wal_stat(struct wal *w, struct wal_stat *st)
{
	MDB_txn *txn;
	int rc;
	memset(st, 0, sizeof(*st));
	if ((rc = wali_enter(w)))
		return rc;
	if ((rc = wali_begin(w, MDB_RDONLY, &txn)) == 0) {
		rc = global_in(txn, w, st);
		mdb_txn_abort(txn);
	}
	wali_leave(w);
	return wali_map_rc(rc);
}

int wal_reader_check(struct wal *w, int *cleared)
{
	int dead = 0;
	int rc = wali_enter(w);
	if (rc)
		return rc;
	rc = mdb_reader_check(w->env, &dead);
	wali_leave(w);
	if (cleared)
		*cleared = dead;
	return wali_map_rc(rc);
}

/*---- operator actions ----*/

int wal_backend_set_paused(struct wal *w, int id, int paused)
{
	char name[WAL_NAME_MAX + 1];
	struct walr_backend r;
	MDB_txn *txn;
	int rc = wali_begin_backend_write(w, id, name, &txn, &r);
	if (rc)
		return wali_map_rc(rc);
	uint32_t flags = paused ? r.flags | WAL_BACKEND_PAUSED : r.flags & ~(uint32_t)WAL_BACKEND_PAUSED;
	if (flags == r.flags) {
		mdb_txn_abort(txn); /* already so */
	} else {
		r.flags = flags;
		rc = wali_commit_backend(txn, w, name, &r, 0);
	}
	wali_leave(w);
	return wali_map_rc(rc);
}

int wal_purge(struct wal *w, int id, struct wal_count *dropped)
{
	char name[WAL_NAME_MAX + 1];
	struct walr_backend r;
	struct wal_count n = { 0, 0, 0, 0 };
	MDB_txn *txn;
	struct wali_scan sc;
	uint64_t next;
	int rc = wali_begin_backend_write(w, id, name, &txn, &r);
	if (rc)
		return wali_map_rc(rc);
	/* Recount what is dropped from the log itself rather than trusting the
	 * counters: they are set to exactly 0 below either way. */
	if ((rc = wali_get_next_seq(txn, w, &next)) || (rc = wali_scan_open(&sc, txn, w->dbi_batches, -1, r.cursor)))
		goto abort;
	while ((rc = wali_scan_next(&sc)) == 0) {
		struct wal_batch hdr;
		if (wali_decode_hdr(&sc.v, &hdr)) {
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
	wali_scan_close(&sc);
	if (rc != MDB_NOTFOUND)
		goto abort;
	/* The held batches are pending for this backend too. */
	struct wal_count held = { 0, 0, 0, 0 };
	if ((rc = wali_held_purge(txn, w, id, &held)))
		goto abort;
	n.batches += held.batches;
	n.points += held.points;
	n.bytes += held.bytes;
	n.corrupt += held.corrupt;
	if (r.cursor >= next && !r.pending_batches && !r.pending_points && !r.pending_bytes && !held.batches &&
	    !held.corrupt) {
		rc = 0; /* nothing pending: nothing to write */
		mdb_txn_abort(txn);
		goto out;
	}
	r.cursor = next;
	r.pending_batches = r.pending_points = r.pending_bytes = 0;
	/* Durable like an ack: the cursor and the deletions commit together. */
	rc = wali_commit_backend(txn, w, name, &r, 1);
	goto out;
abort:
	mdb_txn_abort(txn);
out:
	wali_leave(w);
	if (rc == 0 && dropped)
		*dropped = n;
	return wali_map_rc(rc);
}

int wal_get(struct wal *w, int id, uint64_t seq, struct wal_batch *out)
{
	char name[WAL_NAME_MAX + 1];
	struct walr_backend r;
	MDB_txn *txn;
	unsigned char kb[8];
	MDB_val k = { 8, kb }, v;
	int rc;
	memset(out, 0, sizeof(*out));
	if ((rc = wali_begin_backend(w, id, MDB_RDONLY, name, &txn, &r)))
		return wali_map_rc(rc);
	walr_seq_encode(seq, kb);
	if (seq < r.cursor || (rc = mdb_get(txn, w->dbi_batches, &k, &v))) {
		rc = rc == 0 || rc == MDB_NOTFOUND ? WAL_ENOTFOUND : rc;
		goto done;
	}
	struct wal_batch hdr;
	if ((rc = wali_decode_hdr(&v, &hdr)))
		goto done;
	if (!(hdr.route & (1ULL << id))) {
		rc = WAL_ENOTFOUND;
		goto done;
	}
	rc = wali_copy_batch(&k, &v, out);
done:
	mdb_txn_abort(txn); /* *out is a copy: nothing refers to the snapshot */
	wali_leave(w);
	return wali_map_rc(rc);
}
