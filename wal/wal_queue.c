/*
 * wal_queue: the log itself. Backends (their ids and limits), the group
 * commit of wal_append, wal_read, and wal_ack with the truncation of the
 * log it drives. Durability as in wal.c: LMDB's default flags only.
 */
#include "wal/wal_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <time.h>

#define READER_CHECK_NS (10LL * 1000000000LL)

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
int wali_recount_pending(MDB_txn *txn, struct wal *w, uint64_t mask, struct walr_backend *recs[WAL_MAX_BACKENDS])
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
	struct wali_scan sc;
	int rc = wali_scan_open(&sc, txn, w->dbi_batches, -1, from);
	if (rc)
		return rc;
	while ((rc = wali_scan_next(&sc)) == 0) {
		struct wal_batch hdr;
		if (wali_decode_hdr(&sc.v, &hdr))
			continue;
		for (int id = 0; id < WAL_MAX_BACKENDS; id++) {
			if (!(mask & hdr.route & (1ULL << id)) || sc.seq < recs[id]->cursor)
				continue;
			recs[id]->pending_batches++;
			recs[id]->pending_points += hdr.lines;
			recs[id]->pending_bytes += hdr.body_len;
		}
	}
	wali_scan_close(&sc);
	return rc == MDB_NOTFOUND ? 0 : rc;
}

/*---- backends ----*/

int wal_backend_open(struct wal *w, const char *name, int *id)
{
	size_t len = name ? strlen(name) : 0;
	if (len == 0 || len > WAL_NAME_MAX)
		return WAL_EINVAL;
	int rc = wali_enter(w);
	if (rc)
		return rc;
	/* Read-only and shared handles only find: a backend's queue is
	 * relayd's to create, with its limits and route. */
	int rdonly = (w->flags & (WAL_F_RDONLY | WAL_F_SHARED)) != 0;
	MDB_txn *txn;
	struct walr_backend r;
	if ((rc = wali_begin(w, rdonly ? MDB_RDONLY : 0, &txn)))
		goto out;
	rc = wali_get_backend(txn, w, name, &r);
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
		if ((rc = wali_get_next_seq(txn, w, &r.cursor)))
			goto abort;
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		r.created_ns = (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
		if ((rc = wali_put_backend(txn, w, name, &r)))
			goto abort;
		rc = mdb_txn_commit(txn);
		if (rc) {
			wali_note_failure(w, rc);
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
	wali_leave(w);
	return wali_map_rc(rc);
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
int wali_oldest_pending(MDB_txn *txn, struct wal *w, int id, uint64_t cursor, int64_t *accept_ns,
                        uint64_t *corrupt_seq)
{
	struct wali_scan sc;
	int rc;
	*accept_ns = 0;
	if (corrupt_seq)
		*corrupt_seq = 0;
	if ((rc = wali_scan_open(&sc, txn, w->dbi_batches, -1, cursor)))
		return rc;
	while ((rc = wali_scan_next(&sc)) == 0) {
		struct wal_batch b;
		if (wali_decode_hdr(&sc.v, &b)) {
			if (corrupt_seq && !*corrupt_seq)
				*corrupt_seq = sc.seq;
			continue;
		}
		if (b.route & (1ULL << id)) {
			*accept_ns = b.accept_ns;
			break;
		}
	}
	wali_scan_close(&sc);
	return rc == MDB_NOTFOUND ? 0 : rc;
}

/*---- append ----*/

static int append_once(struct wal *w, struct wal_batch *b, size_t n, int64_t now_ns, int *map_full)
{
	struct walr_backend rec[WAL_MAX_BACKENDS];
	struct wal_backend_mem mem[WAL_MAX_BACKENDS];
	uint64_t loaded = 0, dirty = 0;
	int64_t oldest[WAL_MAX_BACKENDS];
	struct wal_count held[WAL_MAX_BACKENDS];
	uint64_t seq;
	size_t commit_bytes = 0;
	MDB_txn *txn;
	int rc;

	if (w->flags & WAL_F_RDONLY)
		return WAL_EINVAL;
	if ((rc = wali_enter(w)))
		return rc;
	pthread_mutex_lock(&w->mu);
	memcpy(mem, w->be, sizeof(mem));
	if (now_ns - w->last_reader_check > READER_CHECK_NS) {
		int dead;
		w->last_reader_check = now_ns;
		mdb_reader_check(w->env, &dead);
	}
	pthread_mutex_unlock(&w->mu);

	if ((rc = wali_begin(w, 0, &txn)))
		goto out;
	if ((rc = wali_get_next_seq(txn, w, &seq)))
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
				if ((rc = wali_get_backend(txn, w, mem[id].name, &rec[id])) ||
				    (rc = wali_held_totals(txn, w, id, &held[id])))
					goto abort;
				oldest[id] = -1; /* not looked up yet */
				loaded |= 1ULL << id;
			}
			/* Held batches count toward the limit: they are this
			 * backend's, only waiting for their database. */
			if (mem[id].max_bytes &&
			    rec[id].pending_bytes + held[id].bytes + bt->body_len > mem[id].max_bytes) {
				bt->result = WAL_ELIMIT;
				bt->refused_by = id;
			} else if (mem[id].max_age_ns && rec[id].pending_batches) {
				if (oldest[id] < 0 &&
				    (rc = wali_oldest_pending(txn, w, id, rec[id].cursor, &oldest[id], NULL)))
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
		if ((dirty & (1ULL << id)) && (rc = wali_put_backend(txn, w, mem[id].name, &rec[id])))
			goto abort;
	if ((rc = wali_put_next_seq(txn, w, seq)))
		goto abort;
	/* The durable point: LMDB writes the data pages, fdatasyncs, writes
	 * the meta page and fdatasyncs again. Only after this returns 0 may
	 * any of these batches be acknowledged. */
	rc = mdb_txn_commit(txn);
	if (rc) {
		wali_note_failure(w, rc);
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
		wali_note_failure(w, rc);
out:
	if (rc) {
		/* Nothing of this commit was stored. */
		for (size_t i = 0; i < n; i++)
			b[i].seq = 0;
	}
	wali_leave(w);
	return wali_map_rc(rc);
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
	int rc = wali_begin(w, 0, &txn);
	if (rc)
		return rc;
	if ((rc = wali_get_next_seq(txn, w, &seq)) || (rc = wali_put_next_seq(txn, w, seq))) {
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
		if ((nrc = wali_enter(w)))
			return rc;
		nrc = nudge(w);
		wali_leave(w);
		if (nrc == 0) {
			map_full = 0;
			rc = append_once(w, b, n, now_ns, &map_full);
		}
	}
	return rc;
}

/*---- read and ack ----*/

/*
 * Copy b's six strings (strs[i], lens[i] bytes each, not NUL-terminated),
 * the body (unless NULL) and extra into one new allocation that b then
 * owns (priv_), pointing b's fields into it; *extra_out (if asked) gets
 * the copy of extra. Returns 0 or -ENOMEM (b unchanged).
 */
int wali_pack_batch(struct wal_batch *b, const char *const strs[WALR_NSTR], const size_t lens[WALR_NSTR],
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

/*
 * Copy the batch record rec[0..len) out into *out: one allocation holding
 * the six strings (each NUL-terminated), then, with with_body, the body,
 * then extra[0..extra_len) NUL-terminated (a dead letter's message;
 * *extra_out points at it). Without with_body, body is NULL and body_len
 * the stored size.
 */
int wali_copy_record(const void *rec, size_t len, uint64_t seq, int with_body, const char *extra,
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
	if ((rc = wali_pack_batch(&b, strs, lens, with_body ? src + body_off : NULL, b.body_len, extra, extra_len,
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
	int rc = wali_pack_batch(b, strs, lens, body, len, NULL, 0, NULL);
	if (rc == 0)
		free(old);
	return rc;
}

int wali_copy_batch(const MDB_val *k, const MDB_val *v, struct wal_batch *out)
{
	return wali_copy_record(v->mv_data, v->mv_size, walr_seq_decode(k->mv_data), 1, NULL, 0, out, NULL);
}

void wal_batch_release(struct wal_batch *b)
{
	free(b->priv_);
	memset(b, 0, sizeof(*b));
}


static int read_batches(struct wal *w, int id, uint64_t from_seq, size_t max, size_t max_bytes, int with_body,
                        struct wal_batch *out, size_t *count)
{
	char name[WAL_NAME_MAX + 1];
	struct walr_backend r;
	MDB_txn *txn;
	struct wali_scan sc;
	size_t got = 0, bytes = 0;
	int rc;

	*count = 0;
	if ((rc = wali_begin_backend(w, id, MDB_RDONLY, name, &txn, &r)))
		return wali_map_rc(rc);
	/* Never below the cursor: a caller's from_seq may be older than a
	 * purge or a dead-letter that moved it. */
	if ((rc = wali_scan_open(&sc, txn, w->dbi_batches, -1, from_seq > r.cursor ? from_seq : r.cursor)))
		goto done;
	while (got < max && (got == 0 || bytes < max_bytes) && (rc = wali_scan_next(&sc)) == 0) {
		struct wal_batch hdr;
		if ((rc = wali_decode_hdr(&sc.v, &hdr))) {
			/* A record that does not decode ends the read: what came
			 * before it is returned; alone, it is the caller's to
			 * quarantine (wal_quarantine) or to skip (wal_find_corrupt). */
			if (got)
				rc = 0;
			break;
		}
		if (!(hdr.route & (1ULL << id)))
			continue;
		if ((rc = wali_copy_record(sc.v.mv_data, sc.v.mv_size, sc.seq, with_body, NULL, 0, &out[got], NULL)))
			break;
		bytes += out[got].body_len;
		got++;
	}
	if (rc == MDB_NOTFOUND)
		rc = 0;
done:
	wali_scan_close(&sc);
	/* The read transaction ends here: nothing handed out refers to it. */
	mdb_txn_abort(txn);
	if (rc) {
		while (got)
			wal_batch_release(&out[--got]);
	}
	*count = got;
	wali_leave(w);
	return wali_map_rc(rc);
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
int wali_advance_cursor(MDB_txn *txn, struct wal *w, int id, struct walr_backend *r, uint64_t seq, int dead_last)
{
	struct wali_scan sc;
	int rc = wali_scan_open(&sc, txn, w->dbi_batches, -1, r->cursor);
	if (rc)
		return rc;
	int recount = 0;
	while ((rc = wali_scan_next(&sc)) == 0) {
		struct wal_batch hdr;
		if (sc.seq > seq)
			break;
		if (wali_decode_hdr(&sc.v, &hdr)) {
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
		if (dead_last && sc.seq == seq)
			continue;
		r->delivered_batches++;
		r->delivered_points += hdr.lines;
	}
	wali_scan_close(&sc);
	if (rc && rc != MDB_NOTFOUND)
		return rc;
	r->cursor = seq + 1;
	if (recount) {
		struct walr_backend *recs[WAL_MAX_BACKENDS] = { 0 };
		recs[id] = r;
		return wali_recount_pending(txn, w, 1ULL << id, recs);
	}
	return 0;
}

/*
 * Truncate as we deliver, in the same transaction as the cursor (a disk
 * buffer that is never truncated only grows). Delete from the front of the log every
 * batch whose routed backends have all passed it; stop at the first one
 * still pending somewhere, so that the log stays a suffix of the sequence.
 */
int wali_truncate_log(MDB_txn *txn, struct wal *w)
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
		if (wali_seq_of(&k, &s)) {
			/* A key no code of ours wrote: junk, never read. */
		} else if (wali_decode_hdr(&v, &hdr)) {
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

/*
 * End a write transaction on one backend: its record r written and, with
 * truncate, the front of the log every backend has passed deleted, then
 * the durable commit, so that the cursor and the deletions commit
 * together. txn is ended either way (aborted when a write failed).
 */
int wali_commit_backend(MDB_txn *txn, struct wal *w, const char *name, const struct walr_backend *r, int truncate)
{
	int rc;
	if ((rc = wali_put_backend(txn, w, name, r)) || (truncate && (rc = wali_truncate_log(txn, w)))) {
		mdb_txn_abort(txn);
		return rc;
	}
	return wali_commit(w, txn);
}

int wal_ack(struct wal *w, int id, uint64_t seq, int64_t now_ns)
{
	char name[WAL_NAME_MAX + 1];
	struct walr_backend r;
	MDB_txn *txn;
	uint64_t next;
	int rc;

	if ((rc = wali_begin_backend(w, id, 0, name, &txn, &r)))
		return wali_map_rc(rc);
	if ((rc = wali_get_next_seq(txn, w, &next)))
		goto abort;
	if (seq >= next) {
		rc = WAL_EINVAL;
		goto abort;
	}
	if (seq < r.cursor) { /* already finished: nothing to do */
		mdb_txn_abort(txn);
		goto out;
	}
	if ((rc = wali_advance_cursor(txn, w, id, &r, seq, 0)))
		goto abort;
	r.last_delivery_ns = now_ns;
	/* Durable: the cursor and the deletion commit together, so a
	 * delivered batch is never sent again after a crash, and never lost. */
	rc = wali_commit_backend(txn, w, name, &r, 1);
	goto out;
abort:
	mdb_txn_abort(txn);
out:
	wali_leave(w);
	return wali_map_rc(rc);
}
