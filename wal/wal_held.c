/*
 * wal_held: the batches of a database a backend does not have, moved out
 * of the log for that backend (docs/architecture.md, "Held databases").
 *
 * The named database `held` holds, per backend:
 *   key id(u8) + u64 BE hash of the db + u64 BE seq -> batch record (as in
 *       the log, route = this backend): one held batch. The hash first, so
 *       that one database's batches are one range of keys, in sequence
 *       order (a collision of two names is told apart by the record's db);
 *   key id(u8) -> 24 bytes, u64 LE batches, points, body bytes: the
 *       backend's held totals, changed in the transaction that changes
 *       the batches, so that the byte limit and the figures never recount.
 * Every function here is one transaction; none outlives its call.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "wal/wal_internal.h"

#define HELD_KEY 17
#define TOT_SIZE 24

void wal_fail_next(struct wal *w, unsigned ops, int rc)
{
	pthread_mutex_lock(&w->mu);
	w->fail_ops = ops;
	w->fail_rc = rc;
	pthread_mutex_unlock(&w->mu);
}

/* The failure wal_fail_next armed for op, once; 0 when none. */
static int failpoint(struct wal *w, unsigned op)
{
	int rc = 0;
	pthread_mutex_lock(&w->mu);
	if (w->fail_ops & op) {
		w->fail_ops &= ~op;
		rc = w->fail_rc;
	}
	pthread_mutex_unlock(&w->mu);
	return rc;
}

/* FNV-1a, 64 bits: a spread of the names over the key space. */
static uint64_t db_hash(const char *db)
{
	uint64_t h = 1469598103934665603ULL;
	for (const unsigned char *p = (const unsigned char *)db; *p; p++)
		h = (h ^ *p) * 1099511628211ULL;
	return h;
}

static void held_key(int id, const char *db, uint64_t seq, unsigned char kb[HELD_KEY])
{
	kb[0] = (unsigned char)id;
	walr_seq_encode(db_hash(db), kb + 1);
	walr_seq_encode(seq, kb + 9);
}

int wali_held_totals(MDB_txn *txn, struct wal *w, int id, struct wal_count *t)
{
	unsigned char kb = (unsigned char)id;
	MDB_val k = { 1, &kb }, v;
	memset(t, 0, sizeof(*t));
	if (!w->have_held)
		return 0;
	int rc = mdb_get(txn, w->dbi_held, &k, &v);
	if (rc == MDB_NOTFOUND)
		return 0;
	if (rc)
		return rc;
	if (v.mv_size != TOT_SIZE)
		return WAL_ECORRUPT;
	t->batches = walr_get_u64(v.mv_data);
	t->points = walr_get_u64((const unsigned char *)v.mv_data + 8);
	t->bytes = walr_get_u64((const unsigned char *)v.mv_data + 16);
	return 0;
}

static int put_totals(MDB_txn *txn, struct wal *w, int id, const struct wal_count *t)
{
	unsigned char kb = (unsigned char)id, vb[TOT_SIZE];
	MDB_val k = { 1, &kb }, v = { TOT_SIZE, vb };
	if (!t->batches && !t->points && !t->bytes) {
		int rc = mdb_del(txn, w->dbi_held, &k, NULL);
		return rc == MDB_NOTFOUND ? 0 : rc;
	}
	walr_put_u64(vb, t->batches);
	walr_put_u64(vb + 8, t->points);
	walr_put_u64(vb + 16, t->bytes);
	return mdb_put(txn, w->dbi_held, &k, &v, 0);
}

/* End a write transaction of backend name: committed with its record r
 * (and the log truncated, with truncate) when rc is 0, else aborted;
 * then the operation is left. */
static int end_write(struct wal *w, MDB_txn *txn, const char *name, const struct walr_backend *r, int truncate, int rc)
{
	if (rc)
		mdb_txn_abort(txn);
	else
		rc = wali_commit_backend(txn, w, name, r, truncate);
	wali_leave(w);
	return wali_map_rc(rc);
}

/* Saturating: a counter damaged on disk must not wrap. */
static void take(struct wal_count *t, uint64_t points, uint64_t bytes)
{
	t->batches -= t->batches ? 1 : 0;
	t->points -= t->points >= points ? points : t->points;
	t->bytes -= t->bytes >= bytes ? bytes : t->bytes;
}

int wal_hold(struct wal *w, int id, const uint64_t *seqs, size_t n)
{
	char name[WAL_NAME_MAX + 1];
	struct walr_backend r;
	struct wal_count tot;
	MDB_txn *txn;
	uint64_t last = 0, held = 0, held_points = 0;
	if (!n)
		return 0;
	int rc = failpoint(w, WAL_FAIL_HOLD);
	if (rc)
		return rc;
	rc = wali_begin_backend_write(w, id, name, &txn, &r);
	if (rc)
		return wali_map_rc(rc);
	if (!w->have_held) {
		rc = WAL_EINVAL;
		goto abort;
	}
	if ((rc = wali_held_totals(txn, w, id, &tot)))
		goto abort;
	for (size_t i = 0; i < n; i++) {
		unsigned char kb[HELD_KEY];
		struct wal_batch b;
		/* Finished meanwhile (purged by relayctl): nothing to hold. */
		if (seqs[i] < r.cursor)
			continue;
		if ((rc = wali_get_routed(txn, w, id, seqs[i], &b)))
			goto abort;
		b.route = 1ULL << id;
		held_key(id, b.db, seqs[i], kb);
		MDB_val hk = { HELD_KEY, kb }, hv = { walr_batch_size(&b), NULL };
		if ((rc = hv.mv_size ? mdb_put(txn, w->dbi_held, &hk, &hv, MDB_RESERVE) : WAL_EINVAL)) {
			wal_batch_release(&b);
			goto abort;
		}
		walr_batch_encode(&b, hv.mv_data);
		tot.batches++;
		tot.points += b.lines;
		tot.bytes += b.body_len;
		held++;
		held_points += b.lines;
		if (seqs[i] > last)
			last = seqs[i];
		wal_batch_release(&b);
	}
	if (!held) {
		mdb_txn_abort(txn);
		wali_leave(w);
		return 0;
	}
	/* The cursor moves past the last held batch as past a dead letter:
	 * every batch before it was delivered (rounds go in order), the held
	 * ones were not, and leave the pending counters for the held ones. */
	if ((rc = wali_advance_cursor(txn, w, id, &r, last, 0)))
		goto abort;
	r.delivered_batches -= r.delivered_batches >= held ? held : r.delivered_batches;
	r.delivered_points -= r.delivered_points >= held_points ? held_points : r.delivered_points;
	rc = put_totals(txn, w, id, &tot);
abort:
	return end_write(w, txn, name, &r, 1, rc);
}

/* A walk over backend id's held batches of db (all of them with db ==
 * NULL), in key order: calls fn for each whose record's db is db. */
typedef int (*held_fn)(void *arg, MDB_cursor *cur, const MDB_val *k, const MDB_val *v, uint64_t seq,
                       const struct wal_batch *hdr);

static int held_walk(MDB_txn *txn, struct wal *w, int id, const char *db, held_fn fn, void *arg)
{
	MDB_cursor *cur;
	unsigned char kb[HELD_KEY];
	size_t plen = db ? 9 : 1;
	MDB_val k, v;
	if (!w->have_held)
		return 0;
	held_key(id, db ? db : "", 0, kb);
	int rc = mdb_cursor_open(txn, w->dbi_held, &cur);
	if (rc)
		return rc;
	k.mv_size = plen;
	k.mv_data = kb;
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		if (k.mv_size < plen || memcmp(k.mv_data, kb, plen) != 0)
			break;
		if (k.mv_size != HELD_KEY)
			continue; /* the totals (or junk) */
		struct wal_batch hdr;
		uint64_t seq = walr_seq_decode((const unsigned char *)k.mv_data + 9);
		memset(&hdr, 0, sizeof(hdr));
		if (wali_decode_hdr(&v, &hdr)) {
			if ((rc = fn(arg, cur, &k, &v, seq, NULL)))
				break;
			continue;
		}
		if ((rc = fn(arg, cur, &k, &v, seq, &hdr)))
			break;
	}
	mdb_cursor_close(cur);
	return rc == MDB_NOTFOUND ? 0 : rc;
}

/* The db of a held record (its strings follow the 48-byte header, db first). */
static int record_db_is(const MDB_val *v, const char *db)
{
	const unsigned char *c = v->mv_data;
	size_t l = walr_get_u16(c + 36);
	return v->mv_size >= WALR_BATCH_HDR + l && strlen(db) == l && memcmp(c + WALR_BATCH_HDR, db, l) == 0;
}

struct read_arg {
	const char *db;
	uint64_t from;
	size_t max, max_bytes, n, bytes;
	struct wal_batch *out;
};

static int read_one(void *arg, MDB_cursor *cur, const MDB_val *k, const MDB_val *v, uint64_t seq,
                    const struct wal_batch *hdr)
{
	struct read_arg *a = arg;
	(void)cur;
	(void)k;
	if (!hdr || !record_db_is(v, a->db) || seq < a->from)
		return 0; /* another name of the same hash; a damaged record stays for verify and purge */
	if (a->n >= a->max || (a->n && a->bytes >= a->max_bytes))
		return MDB_NOTFOUND;
	int rc = wali_copy_record(v->mv_data, v->mv_size, seq, 1, NULL, 0, &a->out[a->n], NULL);
	if (rc)
		return rc;
	a->bytes += a->out[a->n].body_len;
	a->n++;
	return 0;
}

int wal_held_read(struct wal *w, int id, const char *db, uint64_t from_seq, size_t max, size_t max_bytes,
                  struct wal_batch *out, size_t *count)
{
	char name[WAL_NAME_MAX + 1];
	MDB_txn *txn;
	struct read_arg a = { db, from_seq, max, max_bytes, 0, 0, out };
	*count = 0;
	int rc = wali_begin_backend(w, id, MDB_RDONLY, name, &txn, NULL);
	if (rc)
		return wali_map_rc(rc);
	rc = held_walk(txn, w, id, db, read_one, &a);
	mdb_txn_abort(txn);
	wali_leave(w);
	if (rc) {
		for (size_t i = 0; i < a.n; i++)
			wal_batch_release(&out[i]);
		return wali_map_rc(rc);
	}
	*count = a.n;
	return 0;
}

struct done_arg {
	const char *db;
	uint64_t upto;
	struct wal_count n;
};

static int done_one(void *arg, MDB_cursor *cur, const MDB_val *k, const MDB_val *v, uint64_t seq,
                    const struct wal_batch *hdr)
{
	struct done_arg *a = arg;
	(void)k;
	if (seq > a->upto)
		return MDB_NOTFOUND;
	if (!hdr || !record_db_is(v, a->db))
		return 0;
	a->n.batches++;
	a->n.points += hdr->lines;
	a->n.bytes += hdr->body_len;
	return mdb_cursor_del(cur, 0);
}

int wal_held_done(struct wal *w, int id, const char *db, uint64_t upto, int64_t now_ns)
{
	char name[WAL_NAME_MAX + 1];
	struct walr_backend r;
	struct wal_count tot;
	MDB_txn *txn;
	struct done_arg a = { db, upto, { 0, 0, 0, 0 } };
	int rc = failpoint(w, WAL_FAIL_HELD_DONE);
	if (rc)
		return rc;
	rc = wali_begin_backend_write(w, id, name, &txn, &r);
	if (rc)
		return wali_map_rc(rc);
	if ((rc = wali_held_totals(txn, w, id, &tot)) || (rc = held_walk(txn, w, id, db, done_one, &a)))
		goto abort;
	if (!a.n.batches) {
		mdb_txn_abort(txn);
		wali_leave(w);
		return 0;
	}
	tot.batches -= tot.batches >= a.n.batches ? a.n.batches : tot.batches;
	tot.points -= tot.points >= a.n.points ? a.n.points : tot.points;
	tot.bytes -= tot.bytes >= a.n.bytes ? a.n.bytes : tot.bytes;
	r.delivered_batches += a.n.batches;
	r.delivered_points += a.n.points;
	r.last_delivery_ns = now_ns;
	rc = put_totals(txn, w, id, &tot);
abort:
	return end_write(w, txn, name, &r, 0, rc);
}

int wal_held_dead(struct wal *w, int id, const char *db, uint64_t seq, int status, const char *msg,
                  uint32_t attempts, int64_t now_ns)
{
	char name[WAL_NAME_MAX + 1];
	struct walr_backend r;
	struct wal_count tot;
	struct wal_batch b;
	MDB_txn *txn;
	unsigned char kb[HELD_KEY], dkb[9];
	MDB_val k = { HELD_KEY, kb }, v;
	int rc = wali_begin_backend_write(w, id, name, &txn, &r);
	if (rc)
		return wali_map_rc(rc);
	held_key(id, db, seq, kb);
	if ((rc = wali_held_totals(txn, w, id, &tot)))
		goto abort;
	if (!w->have_held || (rc = mdb_get(txn, w->dbi_held, &k, &v))) {
		rc = !w->have_held || rc == MDB_NOTFOUND ? WAL_ENOTFOUND : rc;
		goto abort;
	}
	if ((rc = wali_copy_record(v.mv_data, v.mv_size, seq, 1, NULL, 0, &b, NULL)))
		goto abort;
	struct walr_dead d = { status, attempts, now_ns, msg ? msg : "", 0 };
	dkb[0] = (unsigned char)id;
	walr_seq_encode(seq, dkb + 1);
	MDB_val dk = { 9, dkb }, dv = { walr_dead_size(&d, &b), NULL };
	rc = dv.mv_size ? mdb_put(txn, w->dbi_dead, &dk, &dv, MDB_RESERVE | MDB_NOOVERWRITE) : WAL_EINVAL;
	if (rc == 0)
		walr_dead_encode(&d, &b, dv.mv_data);
	take(&tot, b.lines, b.body_len);
	r.dead_batches++;
	r.dead_bytes += b.body_len;
	wal_batch_release(&b);
	if (rc == 0 && (rc = mdb_del(txn, w->dbi_held, &k, NULL)) == 0)
		rc = put_totals(txn, w, id, &tot);
abort:
	return end_write(w, txn, name, &r, 0, rc);
}

struct list_arg {
	struct wal_held *h;
	size_t n, cap;
	uint64_t corrupt;
	int err;
};

static int list_one(void *arg, MDB_cursor *cur, const MDB_val *k, const MDB_val *v, uint64_t seq,
                    const struct wal_batch *hdr)
{
	struct list_arg *a = arg;
	(void)cur;
	(void)k;
	(void)seq;
	if (!hdr) {
		a->corrupt++;
		return 0;
	}
	const unsigned char *c = v->mv_data;
	size_t l = walr_get_u16(c + 36);
	size_t i;
	for (i = 0; i < a->n; i++)
		if (strlen(a->h[i].db) == l && memcmp(a->h[i].db, c + WALR_BATCH_HDR, l) == 0)
			break;
	if (i == a->n) {
		if (a->n == a->cap) {
			size_t nc = a->cap ? 2 * a->cap : 8;
			struct wal_held *nh = realloc(a->h, nc * sizeof(*nh));
			if (!nh)
				return -ENOMEM;
			a->h = nh;
			a->cap = nc;
		}
		memset(&a->h[i], 0, sizeof(a->h[i]));
		if (!(a->h[i].db = malloc(l + 1)))
			return -ENOMEM;
		memcpy(a->h[i].db, c + WALR_BATCH_HDR, l);
		a->h[i].db[l] = '\0';
		a->h[i].oldest_accept_ns = hdr->accept_ns;
		a->n++;
	}
	a->h[i].batches++;
	a->h[i].points += hdr->lines;
	a->h[i].bytes += hdr->body_len;
	if (hdr->accept_ns < a->h[i].oldest_accept_ns)
		a->h[i].oldest_accept_ns = hdr->accept_ns;
	return 0;
}

void wal_held_free(struct wal_held *h, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(h[i].db);
	free(h);
}

int wali_held_list(MDB_txn *txn, struct wal *w, int id, struct wal_held **out, size_t *n, uint64_t *corrupt)
{
	struct list_arg a = { NULL, 0, 0, 0, 0 };
	int rc = held_walk(txn, w, id, NULL, list_one, &a);
	if (rc) {
		wal_held_free(a.h, a.n);
		return rc;
	}
	*out = a.h;
	*n = a.n;
	if (corrupt)
		*corrupt = a.corrupt;
	return 0;
}

int wal_held_list(struct wal *w, int id, struct wal_held **out, size_t *n)
{
	char name[WAL_NAME_MAX + 1];
	MDB_txn *txn;
	*out = NULL;
	*n = 0;
	int rc = failpoint(w, WAL_FAIL_HELD_LIST);
	if (rc)
		return rc;
	rc = wali_begin_backend(w, id, MDB_RDONLY, name, &txn, NULL);
	if (rc)
		return wali_map_rc(rc);
	rc = wali_held_list(txn, w, id, out, n, NULL);
	mdb_txn_abort(txn);
	wali_leave(w);
	return wali_map_rc(rc);
}

static int drop_one(void *arg, MDB_cursor *cur, const MDB_val *k, const MDB_val *v, uint64_t seq,
                    const struct wal_batch *hdr)
{
	struct wal_count *n = arg;
	(void)k;
	(void)v;
	(void)seq;
	if (hdr) {
		n->batches++;
		n->points += hdr->lines;
		n->bytes += hdr->body_len;
	} else {
		n->corrupt++;
	}
	return mdb_cursor_del(cur, 0);
}

int wali_held_purge(MDB_txn *txn, struct wal *w, int id, struct wal_count *n)
{
	struct wal_count zero = { 0, 0, 0, 0 };
	if (!w->have_held)
		return 0;
	int rc = held_walk(txn, w, id, NULL, drop_one, n);
	return rc ? rc : put_totals(txn, w, id, &zero);
}
