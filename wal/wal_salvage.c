/*
 * wal_salvage: copy every readable batch of a damaged store into a new
 * one. The damaged file is never opened with LMDB (its trees cannot be
 * trusted): walf_scan reads every leaf page on its own, and each value is
 * judged by its content alone. A batch record carries its own checksum
 * (format 2 on), so a value that decodes is a batch as relayd wrote it,
 * its kind (byte 34, format 3: lines or a statement) checked and copied
 * with it; the backend records say which of them were still pending.
 */
#include "wal/wal.h"
#include "wal/wal_file.h"
#include "wal/wal_record.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define APPEND_GROUP 64

struct found_backend {
	char name[WAL_NAME_MAX + 1];
	struct walr_backend r;
	int new_id;
};

struct found_batch {
	uint64_t seq;
	struct walf_value where;
	int v1;
};

struct scan {
	struct found_backend be[WAL_MAX_BACKENDS]; /* by old id */
	uint64_t have;                             /* ids found */
	struct found_batch *b;
	size_t n, cap;
	struct wal_salvage_stat *st;
};

static int printable_name(const unsigned char *k, size_t n)
{
	if (n == 0 || n > WAL_NAME_MAX)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (k[i] <= 0x20 || k[i] >= 0x7f)
			return 0;
	return 1;
}

static int on_value(void *arg, const unsigned char *key, size_t klen, const unsigned char *val, size_t vlen,
                    struct walf_value where)
{
	struct scan *sc = arg;
	struct wal_batch hdr;
	if (klen == 8 && vlen >= WALR_BATCH_HDR) {
		int v1 = 0;
		if (walr_batch_decode(val, vlen, &hdr, NULL, NULL, NULL, NULL, 0) == 0 ||
		    (v1 = walr_batch_decode_v1(val, vlen, &hdr, NULL, 0) == 0)) {
			if (sc->n == sc->cap) {
				size_t cap = sc->cap ? 2 * sc->cap : 1024;
				struct found_batch *nb = realloc(sc->b, cap * sizeof(*nb));
				if (!nb)
					return -ENOMEM;
				sc->b = nb;
				sc->cap = cap;
			}
			sc->b[sc->n++] = (struct found_batch){ walr_seq_decode(key), where, v1 };
			return 0;
		}
		if (val[32] == 1 || val[32] == WALR_BATCH_VERSION) {
			sc->st->records_corrupt++;
			return 0;
		}
	}
	/* A held batch (a backend's, of a database it does not have): not
	 * copied, counted. Free pages keep copies of held batches delivered
	 * since, and nothing tells those apart (the log's cursors do for its
	 * batches): copied, an old one could overwrite a newer point. */
	if (klen == 17 && key[0] < WAL_MAX_BACKENDS && vlen >= WALR_BATCH_HDR &&
	    walr_batch_decode(val, vlen, &hdr, NULL, NULL, NULL, NULL, 0) == 0) {
		sc->st->held_found++;
		return 0;
	}
	if (klen == 9 && vlen >= WALR_DEAD_HDR) {
		struct walr_dead d;
		size_t ml, off;
		if (walr_dead_decode(val, vlen, &d, &ml, &off, NULL, 0) == 0) {
			sc->st->dead_found++;
			return 0;
		}
	}
	struct walr_backend r;
	if (vlen == WALR_BACKEND_SIZE && printable_name(key, klen) && walr_backend_decode(val, vlen, &r) == 0 &&
	    r.cursor >= 1) {
		struct found_backend *f = &sc->be[r.id];
		/* Earlier versions of a backend record sit in old pages: a
		 * cursor only moves forward, so the largest is the latest. */
		if (!(sc->have & (1ULL << r.id))) {
			memcpy(f->name, key, klen);
			f->name[klen] = '\0';
			f->r = r;
			sc->have |= 1ULL << r.id;
		} else if (strlen(f->name) == klen && memcmp(f->name, key, klen) == 0 && r.cursor > f->r.cursor) {
			f->r = r;
		}
	}
	return 0;
}

static int by_seq(const void *a, const void *b)
{
	const struct found_batch *x = a, *y = b;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* A stored batch as an appendable one: its strings NUL-terminated in one
 * allocation (*mem, the caller frees it), its body pointing into rec. */
static int to_batch(const unsigned char *rec, size_t len, struct wal_batch *b, char **mem)
{
	uint32_t off[WALR_NSTR];
	uint16_t sl[WALR_NSTR];
	size_t body_off, total = 0;
	memset(b, 0, sizeof(*b));
	if (walr_batch_decode(rec, len, b, off, sl, &body_off, NULL, 0))
		return WAL_ECORRUPT;
	for (int i = 0; i < WALR_NSTR; i++)
		total += sl[i] + 1u;
	char *m = malloc(total), *p = m;
	if (!m)
		return -ENOMEM;
	const char **dst[WALR_NSTR] = { &b->db, &b->rp, &b->user, &b->password, &b->org, &b->token };
	for (int i = 0; i < WALR_NSTR; i++) {
		memcpy(p, rec + off[i], sl[i]);
		p[sl[i]] = '\0';
		*dst[i] = p;
		p += sl[i] + 1;
	}
	b->body = (const char *)rec + body_off;
	*mem = m;
	return 0;
}

static int append_group(struct wal *w, struct wal_batch *g, unsigned char **recs, char **mems, size_t n,
                        struct wal_salvage_stat *st)
{
	int rc = n ? wal_append(w, g, n, 0) : 0;
	for (size_t i = 0; i < n; i++) {
		if (rc == 0 && g[i].result == 0) {
			st->batches_copied++;
			st->points_copied += g[i].lines;
		}
		free(recs[i]);
		free(mems[i]);
	}
	return rc;
}

int wal_salvage(const char *src_dir, const char *dst_dir, const char *const *names, size_t nnames,
                struct wal_salvage_stat *st, char *why, size_t whylen)
{
	char src[4096], dst[4096];
	struct scan *sc = calloc(1, sizeof(*sc));
	struct stat sb;
	struct wal *w = NULL;
	int rc, fd = -1;

	memset(st, 0, sizeof(*st));
	if (why && whylen)
		why[0] = '\0';
	if (!sc)
		return -ENOMEM;
	sc->st = st;
	snprintf(src, sizeof(src), "%s/data.mdb", src_dir);
	snprintf(dst, sizeof(dst), "%s/data.mdb", dst_dir);
	if (stat(dst, &sb) == 0 && sb.st_size > 0) {
		if (why && whylen)
			snprintf(why, whylen, "'%s' holds a queue already: salvage writes into a new directory", dst_dir);
		rc = WAL_EINVAL;
		goto out;
	}
	struct walf_scan_stat ss;
	if ((rc = walf_scan(src, on_value, sc, &ss)))
		goto out;
	st->pages = ss.pages;
	st->leaves = ss.leaves;
	for (int i = 0; i < WAL_MAX_BACKENDS; i++)
		st->backends += (sc->have >> i) & 1;
	/* A backend whose record was lost: relayd gives ids in the order of
	 * its configuration when it creates the queues, so id i is taken to
	 * be the i-th name given, unless that name was found under another
	 * id. Its cursor is unknown: everything routed to it is copied. */
	for (size_t i = 0; i < nnames && i < WAL_MAX_BACKENDS; i++) {
		int taken = (sc->have >> i) & 1;
		for (int j = 0; j < WAL_MAX_BACKENDS && !taken; j++)
			taken = ((sc->have >> j) & 1) && strcmp(sc->be[j].name, names[i]) == 0;
		if (taken || strlen(names[i]) > WAL_NAME_MAX)
			continue;
		memset(&sc->be[i], 0, sizeof(sc->be[i]));
		snprintf(sc->be[i].name, sizeof(sc->be[i].name), "%s", names[i]);
		sc->be[i].r.id = (uint32_t)i;
		sc->be[i].r.cursor = 1;
		sc->have |= 1ULL << i;
		st->backends_assumed++;
	}

	/* In sequence order, each once (old pages hold copies). */
	qsort(sc->b, sc->n, sizeof(*sc->b), by_seq);
	size_t n = 0;
	for (size_t i = 0; i < sc->n; i++)
		if (n == 0 || sc->b[i].seq != sc->b[n - 1].seq)
			sc->b[n++] = sc->b[i];
	st->batches_found = n;

	struct wal_options o = { 0, 0 };
	if ((rc = wal_open(dst_dir, &o, &w)))
		goto out;
	for (int i = 0; i < WAL_MAX_BACKENDS; i++)
		if ((sc->have & (1ULL << i)) && (rc = wal_backend_open(w, sc->be[i].name, &sc->be[i].new_id)))
			goto out;
	if ((fd = open(src, O_RDONLY | O_CLOEXEC)) < 0) {
		rc = -errno;
		goto out;
	}
	struct wal_batch g[APPEND_GROUP];
	unsigned char *recs[APPEND_GROUP];
	char *mems[APPEND_GROUP];
	size_t ng = 0;
	for (size_t i = 0; i < n && rc == 0; i++) {
		struct found_batch *f = &sc->b[i];
		unsigned char *rec = malloc(f->where.len ? f->where.len : 1);
		if (!rec) {
			rc = -ENOMEM;
			break;
		}
		if ((rc = walf_read_value(fd, f->where, rec))) {
			free(rec);
			break;
		}
		if (f->v1) {
			/* A store of format 1: its records carry no checksum; give
			 * this copy one, as the upgrade would. */
			rec[32] = WALR_BATCH_VERSION;
			walr_batch_seal(rec, f->where.len);
		}
		struct wal_batch b;
		char *mem = NULL;
		if (to_batch(rec, f->where.len, &b, &mem)) {
			st->records_corrupt++;
			free(rec);
			continue;
		}
		/* Pending for a backend whose cursor had not passed it. */
		uint64_t route = 0, known = 0;
		for (int id = 0; id < WAL_MAX_BACKENDS; id++) {
			if (!(b.route & (1ULL << id)) || !(sc->have & (1ULL << id)))
				continue;
			known |= 1ULL << id;
			if (f->seq >= sc->be[id].r.cursor)
				route |= 1ULL << sc->be[id].new_id;
		}
		if (!route) {
			if (known)
				st->batches_delivered++;
			else
				st->batches_orphaned++;
			free(mem);
			free(rec);
			continue;
		}
		b.route = route;
		g[ng] = b;
		recs[ng] = rec;
		mems[ng] = mem;
		if (++ng == APPEND_GROUP) {
			rc = append_group(w, g, recs, mems, ng, st);
			ng = 0;
		}
	}
	if (rc == 0)
		rc = append_group(w, g, recs, mems, ng, st);
	else
		while (ng--) {
			free(recs[ng]);
			free(mems[ng]);
		}
out:
	if (fd >= 0)
		close(fd);
	if (w)
		wal_close(w);
	free(sc->b);
	free(sc);
	return rc;
}
