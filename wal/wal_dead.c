/*
 * wal_dead: the dead-letter queue (dead DBI, keys backend id then
 * sequence): dead-lettering a batch, listing and reading dead letters,
 * dropping and requeueing them, and the quarantine of a record of the log
 * that does not decode.
 */
#include "wal/wal_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/*---- dead letters ----*/

/* dead DBI key: backend id (1 byte) then the batch's sequence (BE). */
static void dead_key(int id, uint64_t seq, unsigned char kb[9])
{
	kb[0] = (unsigned char)id;
	walr_seq_encode(seq, kb + 1);
}

int wali_get_routed(MDB_txn *txn, struct wal *w, int id, uint64_t seq, struct wal_batch *b)
{
	unsigned char kb[8];
	MDB_val k = { 8, kb }, v;
	walr_seq_encode(seq, kb);
	int rc = mdb_get(txn, w->dbi_batches, &k, &v);
	if (rc)
		return rc == MDB_NOTFOUND ? WAL_EINVAL : rc;
	if ((rc = wali_copy_batch(&k, &v, b)))
		return rc;
	if (!(b->route & (1ULL << id))) {
		wal_batch_release(b);
		return WAL_EINVAL;
	}
	return 0;
}

int wal_dead_letter(struct wal *w, int id, uint64_t seq, const char *body, size_t body_len, uint32_t lines,
                    int status, const char *msg, uint32_t attempts, int64_t now_ns, int finish)
{
	char name[WAL_NAME_MAX + 1];
	struct walr_backend r;
	struct wal_batch b, old;
	MDB_txn *txn;
	unsigned char kb[9];
	char *joined = NULL;
	int rc;

	memset(&b, 0, sizeof(b));
	memset(&old, 0, sizeof(old));
	if ((rc = wali_name_of(w, id, name)))
		return rc;
	if (w->flags & WAL_F_RDONLY)
		return WAL_EINVAL;
	if ((rc = wali_enter(w)))
		return rc;
	if ((rc = wali_begin(w, 0, &txn)))
		goto out;
	if ((rc = wali_get_backend(txn, w, name, &r)))
		goto abort;
	if (seq < r.cursor) {
		/* Finished meanwhile (purged by relayctl while the worker was
		 * sending it): nothing is pending to dead-letter. */
		mdb_txn_abort(txn);
		goto out;
	}
	if ((rc = wali_get_routed(txn, w, id, seq, &b)))
		goto abort;
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
		    (rc = wali_copy_record((const char *)dv.mv_data + boff, dv.mv_size - boff, seq, 1, NULL, 0, &old,
		                           NULL))) {
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
		if ((rc = wali_advance_cursor(txn, w, id, &r, seq, 1)))
			goto abort;
	}
	rc = wali_commit_backend(txn, w, name, &r, finish);
	goto out;
abort:
	mdb_txn_abort(txn);
out:
	wal_batch_release(&b);
	wal_batch_release(&old);
	free(joined);
	wali_leave(w);
	return wali_map_rc(rc);
}

/*
 * What a dead-letter record is: 0 a dead batch (*hdr its header), 1 a
 * record wal_quarantine moved there (raw bytes from *raw_off), 2 a record
 * that does not decode itself. why (may be NULL) says what is wrong for
 * 1 and 2; *hd is set for 0 and 1.
 */
int wali_dead_kind(const MDB_val *v, struct walr_dead *hd, size_t *ml, size_t *raw_off, struct wal_batch *hdr,
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
uint64_t wali_dead_bytes_of(const MDB_val *v)
{
	struct walr_dead hd;
	struct wal_batch hdr;
	size_t ml, off;
	switch (wali_dead_kind(v, &hd, &ml, &off, &hdr, NULL, 0)) {
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
	int kind = wali_dead_kind(v, &hd, &ml, &boff, &hdr, why, sizeof(why));
	if (kind) {
		static const char *const none[WALR_NSTR] = { "", "", "", "", "", "" };
		static const size_t zero[WALR_NSTR] = { 0 };
		size_t raw_len = kind == 1 ? v->mv_size - boff : v->mv_size;
		const char *raw = kind == 1 ? (const char *)v->mv_data + boff : v->mv_data;
		int rc = wali_pack_batch(&d->batch, none, zero, with_body ? raw : NULL, raw_len, why, strlen(why),
		                         &d->msg);
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
	int rc = wali_copy_record((const char *)v->mv_data + boff, v->mv_size - boff, seq, with_body, hd.msg, ml,
	                          &d->batch, &d->msg);
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
	char name[WAL_NAME_MAX + 1];
	MDB_txn *txn;
	struct wali_scan sc;
	size_t got = 0, bytes = 0;
	int rc;

	*count = 0;
	if ((rc = wali_begin_backend(w, id, MDB_RDONLY, name, &txn, NULL)))
		return wali_map_rc(rc);
	/* Ends past this backend's keys. */
	if ((rc = wali_scan_open(&sc, txn, w->dbi_dead, id, from_seq)))
		goto done;
	while (got < max && (got == 0 || !max_bytes || bytes < max_bytes) && (rc = wali_scan_next(&sc)) == 0) {
		if ((rc = copy_dead(&sc.v, sc.seq, max_bytes != 0, &out[got])))
			break;
		bytes += out[got].bytes;
		got++;
	}
	if (rc == MDB_NOTFOUND)
		rc = 0;
done:
	wali_scan_close(&sc);
	mdb_txn_abort(txn);
	if (rc) {
		while (got)
			wal_dead_release(&out[--got]);
	}
	*count = got;
	wali_leave(w);
	return wali_map_rc(rc);
}

int wal_dead_get(struct wal *w, int id, uint64_t seq, struct wal_dead *out)
{
	char name[WAL_NAME_MAX + 1];
	MDB_txn *txn;
	unsigned char kb[9];
	MDB_val k = { 9, kb }, v;
	int rc;
	memset(out, 0, sizeof(*out));
	if ((rc = wali_begin_backend(w, id, MDB_RDONLY, name, &txn, NULL)))
		return wali_map_rc(rc);
	dead_key(id, seq, kb);
	rc = mdb_get(txn, w->dbi_dead, &k, &v);
	if (rc == 0)
		rc = copy_dead(&v, seq, 1, out);
	else if (rc == MDB_NOTFOUND)
		rc = WAL_ENOTFOUND;
	mdb_txn_abort(txn);
	wali_leave(w);
	return wali_map_rc(rc);
}

/* 1 when dead-letter record v holds no batch relayd can send. */
static int is_corrupt_dead(const MDB_val *v)
{
	struct walr_dead hd;
	struct wal_batch hdr;
	size_t ml, off;
	return wali_dead_kind(v, &hd, &ml, &off, &hdr, NULL, 0) != 0;
}

/* Recount backend id's dead counters from its dead-letter queue. */
static int recount_dead(MDB_txn *txn, struct wal *w, int id, struct walr_backend *r)
{
	struct wali_scan sc;
	int rc = wali_scan_open(&sc, txn, w->dbi_dead, id, 0);
	if (rc)
		return rc;
	r->dead_batches = r->dead_bytes = 0;
	while ((rc = wali_scan_next(&sc)) == 0) {
		r->dead_batches++;
		r->dead_bytes += wali_dead_bytes_of(&sc.v);
	}
	wali_scan_close(&sc);
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
	struct wali_scan sc;
	if ((rc = wali_scan_open(&sc, txn, w->dbi_dead, id, 0)))
		return rc;
	while ((n == 0 || len < n) && (rc = wali_scan_next(&sc)) == 0) {
		if (sendable && is_corrupt_dead(&sc.v))
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
		list[len++] = sc.seq;
	}
	wali_scan_close(&sc);
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
	char name[WAL_NAME_MAX + 1];
	struct walr_backend r;
	struct wal_count cnt = { 0, 0, 0, 0 };
	MDB_txn *txn;
	uint64_t *list = NULL, next = 0;
	size_t nlist = 0;
	unsigned char *copy = NULL;
	int recount = 0;
	int rc = wali_begin_backend_write(w, id, name, &txn, &r);
	if (rc)
		return wali_map_rc(rc);
	if ((rc = dead_targets(txn, w, id, seqs, n, requeue, &list, &nlist, missing)))
		goto abort;
	if (nlist == 0) {
		mdb_txn_abort(txn);
		goto out;
	}
	if (requeue && (rc = wali_get_next_seq(txn, w, &next)))
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
		if (wali_dead_kind(&v, &hd, &ml, &boff, &hdr, NULL, 0)) {
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
	if ((rc = wali_put_backend(txn, w, name, &r)) || (requeue && (rc = wali_put_next_seq(txn, w, next))))
		goto abort;
	rc = wali_commit(w, txn);
	goto out;
abort:
	rc = wali_abort_full(txn, rc);
out:
	wali_leave(w);
	free(list);
	free(copy);
	if (rc == 0 && done)
		*done = cnt;
	return wali_map_rc(rc);
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
	struct wali_scan sc;
	int rc = wali_scan_open(&sc, txn, w->dbi_batches, -1, from > cursor ? from : cursor);
	if (rc)
		return rc;
	while ((rc = wali_scan_next(&sc)) == 0) {
		struct wal_batch hdr;
		if (walr_batch_decode(sc.v.mv_data, sc.v.mv_size, &hdr, NULL, NULL, NULL, why, whylen)) {
			*seq = sc.seq;
			*val = sc.v;
			break;
		}
		if (hdr.route & (1ULL << id)) {
			rc = WAL_ENOTFOUND;
			break;
		}
	}
	wali_scan_close(&sc);
	return rc == MDB_NOTFOUND ? WAL_ENOTFOUND : rc;
}

int wal_find_corrupt(struct wal *w, int id, uint64_t from, uint64_t *seq, char *why, size_t whylen)
{
	char name[WAL_NAME_MAX + 1], tmp[300];
	struct walr_backend r;
	MDB_txn *txn;
	MDB_val v;
	int rc;
	if ((rc = wali_begin_backend(w, id, MDB_RDONLY, name, &txn, &r)) == 0) {
		rc = find_corrupt(txn, w, id, from, r.cursor, seq, &v, tmp, sizeof(tmp));
		mdb_txn_abort(txn);
		wali_leave(w);
	}
	if (rc == 0 && why && whylen)
		snprintf(why, whylen, "%s", tmp);
	return wali_map_rc(rc);
}

int wal_quarantine(struct wal *w, int id, uint64_t from, uint64_t *seq, char *why, size_t whylen)
{
	char name[WAL_NAME_MAX + 1], tmp[300];
	char names[WAL_MAX_BACKENDS][WAL_NAME_MAX + 1];
	struct walr_backend r, recs[WAL_MAX_BACKENDS];
	struct walr_backend *rp[WAL_MAX_BACKENDS] = { 0 };
	uint64_t affected = 0, redead = 0, s = 0;
	unsigned char *raw = NULL;
	size_t raw_len;
	MDB_txn *txn;
	MDB_cursor *cur;
	MDB_val k, v;
	int rc = wali_begin_backend_write(w, id, name, &txn, &r);
	if (rc)
		return wali_map_rc(rc);
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
		if (k.mv_size == 0 || k.mv_size > WAL_NAME_MAX || walr_backend_decode(v.mv_data, v.mv_size, &o) ||
		    o.cursor > s || (affected & (1ULL << o.id)))
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
	if ((rc = wali_recount_pending(txn, w, affected, rp)))
		goto abort;
	for (int i = 0; i < WAL_MAX_BACKENDS; i++) {
		if (!(affected & (1ULL << i)))
			continue;
		if ((redead & (1ULL << i)) && (rc = recount_dead(txn, w, i, &recs[i])))
			goto abort;
		if ((rc = wali_put_backend(txn, w, names[i], &recs[i])))
			goto abort;
	}
	if ((rc = wali_truncate_log(txn, w)))
		goto abort;
	rc = wali_commit(w, txn);
	if (rc == 0) {
		*seq = s;
		if (why && whylen)
			snprintf(why, whylen, "%s", tmp);
	}
	goto out;
abort:
	rc = wali_abort_full(txn, rc);
out:
	free(raw);
	wali_leave(w);
	return wali_map_rc(rc);
}
