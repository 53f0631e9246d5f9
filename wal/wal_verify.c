/*
 * wal_verify: the walk that checks the whole store in one read
 * transaction, and describes what it found after the transaction ended.
 */
#include "wal/wal_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
	char name[WAL_NAME_MAX + 1];
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
	rc = wali_get_next_seq(txn, w, &next);
	if (rc) {
		problem(p, "meta: next_seq is missing or not 8 bytes");
		next = UINT64_MAX;
	}

	/* backends */
	if ((rc = mdb_cursor_open(txn, w->dbi_backends, &cur)))
		goto out;
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		char name[WAL_NAME_MAX + 1];
		size_t nl = k.mv_size > WAL_NAME_MAX ? WAL_NAME_MAX : k.mv_size;
		memcpy(name, k.mv_data, nl);
		name[nl] = '\0';
		st->backends++;
		struct walr_backend r;
		if (k.mv_size == 0 || k.mv_size > WAL_NAME_MAX)
			problem(p, "backend '%s': name of %zu byte%s (1 to %d allowed)", name, k.mv_size, walr_s(k.mv_size),
			        WAL_NAME_MAX);
		if (walr_backend_decode(v.mv_data, v.mv_size, &r)) {
			problem(p, "backend '%s': record does not decode (%zu byte%s)", name, v.mv_size, walr_s(v.mv_size));
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
			problem(p, "batches: a key of %zu byte%s (8 expected)", k.mv_size, walr_s(k.mv_size));
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
			problem(p, "batch %" PRIu64 ": corrupt, %s (%zu byte%s; relayd quarantines it into the dead-letter "
			        "queue when it reaches it)", seq, why, v.mv_size, walr_s(v.mv_size));
			continue;
		}
		if (hdr.route == 0)
			problem(p, "batch %" PRIu64 ": empty route (no backend needs it, yet it is kept)", seq);
		if (hdr.route & ~known)
			problem(p, "batch %" PRIu64 ": routed to unknown backend ids (mask %#" PRIx64 ")", seq,
			        hdr.route & ~known);
		if (hdr.precision > WAL_PRECISION_MAX)
			problem(p, "batch %" PRIu64 ": precision code %u is not one of the format's (0 to %d; relayd "
			        "dead-letters it when it gets there)", seq, hdr.precision, WAL_PRECISION_MAX);
		/* A statement carries one InfluxQL text and no points: a count of
		 * points or an empty text is not what any writer of ours stores. */
		if (hdr.kind == WAL_KIND_STATEMENT && (hdr.lines != 0 || hdr.body_len == 0))
			problem(p, "batch %" PRIu64 ": a statement with %" PRIu32 " point%s and %zu byte%s of text (a statement "
			        "has no points and a text)", seq, hdr.lines, walr_s(hdr.lines), hdr.body_len,
			        walr_s(hdr.body_len));
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
			problem(p, "dead: a key of %zu byte%s (9 expected)", k.mv_size, walr_s(k.mv_size));
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
		int kind = wali_dead_kind(&v, &hd, &ml, &boff, &hdr, why, sizeof(why));
		if (kind)
			st->corrupt_dead++;
		else if (hdr.precision > WAL_PRECISION_MAX)
			problem(p, "backend '%s': dead letter %" PRIu64 " has precision code %u, not one of the format's",
			        be[id].name, seq, hdr.precision);
		if (kind == 1)
			problem(p, "backend '%s': dead letter %" PRIu64 " is a quarantined batch that did not decode (%s): "
			        "its points are lost ('relayctl dlq show' shows its bytes, 'relayctl dlq drop' removes it)",
			        be[id].name, seq, why);
		else if (kind == 2)
			problem(p, "backend '%s': dead letter %" PRIu64 " is corrupt: %s (%zu byte%s; 'relayctl dlq drop' "
			        "removes it)", be[id].name, seq, why, v.mv_size, walr_s(v.mv_size));
		be[id].dead.batches++;
		be[id].dead.bytes += wali_dead_bytes_of(&v);
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
			        "backend '%s': counters say %" PRIu64 " batch%s, %" PRIu64 " point%s, %" PRIu64
			        " byte%s pending; the log holds %" PRIu64 ", %" PRIu64 ", %" PRIu64 " from its cursor %" PRIu64,
			        b->name, b->r.pending_batches, b->r.pending_batches == 1 ? "" : "es", b->r.pending_points,
			        walr_s(b->r.pending_points), b->r.pending_bytes, walr_s(b->r.pending_bytes), b->pending.batches,
			        b->pending.points, b->pending.bytes, b->r.cursor);
		if (b->r.dead_batches != b->dead.batches || b->r.dead_bytes != b->dead.bytes)
			problem(p,
			        "backend '%s': counters say %" PRIu64 " dead letter%s of %" PRIu64 " byte%s; the dead-letter "
			        "queue holds %" PRIu64 " of %" PRIu64 " byte%s",
			        b->name, b->r.dead_batches, walr_s(b->r.dead_batches), b->r.dead_bytes,
			        walr_s(b->r.dead_bytes), b->dead.batches, b->dead.bytes, walr_s(b->dead.bytes));
		/* held databases: every record decodes, the totals equal a recount */
		struct wal_count tot;
		struct wal_held *h = NULL;
		size_t nh = 0;
		uint64_t bad = 0, hb = 0, hp = 0, hy = 0;
		if ((rc = wali_held_totals(txn, w, id, &tot)) || (rc = wali_held_list(txn, w, id, &h, &nh, &bad)))
			goto out;
		for (size_t i = 0; i < nh; i++) {
			hb += h[i].batches;
			hp += h[i].points;
			hy += h[i].bytes;
		}
		wal_held_free(h, nh);
		if (bad)
			problem(p, "backend '%s': %" PRIu64 " held batch %s ('relayctl purge' drops "
			        "%s)", b->name, bad, bad == 1 ? "record does not decode" : "records do not decode",
			        bad == 1 ? "it" : "them");
		else if (tot.batches != hb || tot.points != hp || tot.bytes != hy)
			problem(p,
			        "backend '%s': counters say %" PRIu64 " batch%s, %" PRIu64 " point%s, %" PRIu64 " byte%s "
			        "held; the held store holds %" PRIu64 ", %" PRIu64 ", %" PRIu64,
			        b->name, tot.batches, tot.batches == 1 ? "" : "es", tot.points, walr_s(tot.points), tot.bytes,
			        walr_s(tot.bytes), hb, hp, hy);
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
	if ((rc = wali_enter(w)))
		return rc;
	if ((rc = wali_begin(w, MDB_RDONLY, &txn)) == 0) {
		rc = verify_walk(txn, w, &p, st);
		mdb_txn_abort(txn);
	}
	wali_leave(w);
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
		return wali_map_rc(rc);
	return p.total > INT32_MAX ? INT32_MAX : (int)p.total;
}
