/*
 * wal_file: the LMDB file checked with pread before LMDB maps it. The
 * layout relied on (LMDB 0.9, data version 1, 64-bit build) is described
 * in docs/architecture.md; every offset used here is named below.
 */
#include "wal/wal_file.h"
#include "wal/wal.h"
#include "wal/wal_record.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Page header: u64 page number, u16 pad, u16 flags, then u16 lower and
 * u16 upper (or, for an overflow page, u32 number of pages). */
#define PAGE_HDR 16
#define PG_PGNO 0
#define PG_FLAGS 10
#define PG_LOWER 12
#define PG_UPPER 14
#define PG_PAGES 12
#define P_BRANCH 0x01
#define P_LEAF 0x02
#define P_OVERFLOW 0x04
#define P_META 0x08
#define P_LEAF2 0x20
#define P_SUBP 0x40
#define P_KIND (P_BRANCH | P_LEAF | P_OVERFLOW | P_META | P_LEAF2 | P_SUBP)

/* Meta, after the page header: u32 magic, u32 version, u64 address, u64
 * map size, two database records (free pages, main), u64 last page, u64
 * transaction id. */
#define LMDB_MAGIC 0xBEEFC0DEu
#define LMDB_DATA_VERSION 1u
#define M_MAGIC 0
#define M_VERSION 4
#define M_MAPSIZE 16
#define M_DBS 24
#define M_LAST_PG 120
#define M_TXNID 128
#define META_SIZE 136

/* Database record (48 bytes): u32 pad (the page size in the free-page
 * record), u16 flags, u16 depth, u64 branch, leaf and overflow page
 * counts, u64 entries, u64 root page. */
#define DB_SIZE 48
#define DB_PAD 0
#define DB_FLAGS 4
#define DB_DEPTH 6
#define DB_ROOT 40
#define DB_DUP_FLAGS 0x74 /* MDB_DUPSORT, MDB_DUPFIXED, MDB_INTEGERDUP, MDB_REVERSEDUP: never used here */
#define P_INVALID UINT64_MAX

/* Node (8-byte header, then the key, then the data): u16 lo, u16 hi
 * (data size, or with the flags a child page number), u16 flags, u16
 * key size. */
#define NODE_HDR 8
#define F_BIGDATA 0x01
#define F_SUBDATA 0x02
#define F_DUPDATA 0x04

#define MAX_DEPTH 32 /* LMDB's cursor stack */
#define MIN_PAGE 512
#define MAX_PAGE 65536

struct walk {
	int fd;
	uint32_t psize;
	uint64_t npages; /* pages in use: last page + 1 */
	uint64_t have;   /* whole pages the file holds */
	uint8_t *seen;   /* one bit per page */
	unsigned char *buf[2 * (MAX_DEPTH + 1)]; /* one page per level: the main tree's, then a named one's */
	uint64_t pages_read;
	char *why;
	size_t whylen;
};

static uint16_t u16(const unsigned char *p)
{
	return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t u32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t u64(const unsigned char *p)
{
	return (uint64_t)u32(p) | (uint64_t)u32(p + 4) << 32;
}

static int damaged(struct walk *wk, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int damaged(struct walk *wk, const char *fmt, ...)
{
	if (wk->why && wk->whylen) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(wk->why, wk->whylen, fmt, ap);
		va_end(ap);
	}
	return WAL_EDAMAGED;
}

static int read_at(struct walk *wk, void *buf, size_t len, uint64_t off)
{
	size_t got = 0;
	while (got < len) {
		ssize_t n = pread(wk->fd, (char *)buf + got, len - got, (off_t)(off + got));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return damaged(wk, "the file ends at byte %" PRIu64 ", inside a page", off + got);
		got += (size_t)n;
	}
	return 0;
}

/* Mark pages [pgno, pgno + n) as reached; a page reached twice is a loop
 * or a shared page, which no LMDB tree has. */
static int mark(struct walk *wk, uint64_t pgno, uint64_t n, const char *what)
{
	for (uint64_t p = pgno; p < pgno + n; p++) {
		if (wk->seen[p >> 3] & (1u << (p & 7)))
			return damaged(wk, "page %" PRIu64 " (%s) is reached twice", p, what);
		wk->seen[p >> 3] |= (uint8_t)(1u << (p & 7));
	}
	return 0;
}

/* Pages [pgno, pgno + n) must be in the file: one that the trees reach
 * past its end means the file was cut short. */
static int in_file(struct walk *wk, uint64_t pgno, uint64_t n, const char *name)
{
	if (pgno + n > wk->have)
		return damaged(wk, "%s: page %" PRIu64 " lies past the end of the file (%" PRIu64 " page%s): the file was "
		               "cut short", name, pgno + n - 1, wk->have, walr_s(wk->have));
	return 0;
}

/* A free-page list: u64 count, then that many page numbers. */
static int check_idl(struct walk *wk, const unsigned char *d, size_t len)
{
	if (len < 8 || len % 8)
		return damaged(wk, "a free-page list of %zu byte%s", len, walr_s(len));
	uint64_t n = u64(d);
	if (n != len / 8 - 1)
		return damaged(wk, "a free-page list says %" PRIu64 " page%s in %zu byte%s", n, walr_s(n), len,
		               walr_s(len));
	for (uint64_t i = 1; i <= n; i++) {
		uint64_t pg = u64(d + 8 * i);
		if (pg < 2 || pg >= wk->npages)
			return damaged(wk, "the free-page list names page %" PRIu64 ", outside pages 2..%" PRIu64, pg,
			               wk->npages - 1);
	}
	return 0;
}

enum tree { T_FREE, T_MAIN, T_NAMED };

static int walk_db(struct walk *wk, const unsigned char *db, enum tree kind, const char *name);

/* An overflow run starting at pgno holding dsize bytes: its first page's
 * header, its length within the file. With out, its bytes are read into
 * a new allocation. */
static int check_overflow(struct walk *wk, uint64_t pgno, uint64_t dsize, const char *name, unsigned char **out)
{
	unsigned char hdr[PAGE_HDR];
	int rc;
	if (pgno < 2 || pgno >= wk->npages)
		return damaged(wk, "%s: a value points at page %" PRIu64 ", outside pages 2..%" PRIu64, name, pgno,
		               wk->npages - 1);
	if ((rc = in_file(wk, pgno, 1, name)) || (rc = read_at(wk, hdr, sizeof(hdr), pgno * wk->psize)))
		return rc;
	wk->pages_read++;
	uint32_t n = u32(hdr + PG_PAGES);
	if (u64(hdr + PG_PGNO) != pgno || (u16(hdr + PG_FLAGS) & P_KIND) != P_OVERFLOW)
		return damaged(wk, "%s: page %" PRIu64 " should start an overflow run and does not", name, pgno);
	if (n == 0 || n > wk->npages - pgno)
		return damaged(wk, "%s: the overflow run at page %" PRIu64 " claims %" PRIu32 " page%s, past the end", name,
		               pgno, n, walr_s(n));
	if (PAGE_HDR + dsize > (uint64_t)n * wk->psize)
		return damaged(wk, "%s: a value of %" PRIu64 " byte%s does not fit its %" PRIu32 "-page overflow run", name,
		               dsize, walr_s(dsize), n);
	if ((rc = in_file(wk, pgno, n, name)))
		return rc;
	if ((rc = mark(wk, pgno, n, name)))
		return rc;
	if (out) {
		unsigned char *d = malloc(dsize ? dsize : 1);
		if (!d)
			return -ENOMEM;
		if ((rc = read_at(wk, d, dsize, pgno * wk->psize + PAGE_HDR))) {
			free(d);
			return rc;
		}
		*out = d;
	}
	return 0;
}

static int walk_page(struct walk *wk, uint64_t pgno, unsigned level, unsigned depth, enum tree kind,
                     const char *name)
{
	int rc;
	if (level > depth || level > MAX_DEPTH)
		return damaged(wk, "%s: deeper than its recorded depth %u", name, depth);
	if (pgno < 2 || pgno >= wk->npages)
		return damaged(wk, "%s: a page number %" PRIu64 " outside pages 2..%" PRIu64, name, pgno,
		               wk->npages - 1);
	if ((rc = mark(wk, pgno, 1, name)) || (rc = in_file(wk, pgno, 1, name)))
		return rc;
	/* A named database is walked from inside a leaf of the main tree:
	 * its pages go in the second half of the buffers. */
	unsigned char *p = wk->buf[(kind == T_NAMED ? MAX_DEPTH + 1 : 0) + level];
	if ((rc = read_at(wk, p, wk->psize, pgno * wk->psize)))
		return rc;
	wk->pages_read++;
	uint16_t flags = u16(p + PG_FLAGS) & P_KIND;
	if (u64(p + PG_PGNO) != pgno)
		return damaged(wk, "%s: page %" PRIu64 " says it is page %" PRIu64, name, pgno, u64(p + PG_PGNO));
	int branch = flags == P_BRANCH, leaf = flags == P_LEAF;
	if (!branch && !leaf)
		return damaged(wk, "%s: page %" PRIu64 " has kind %#x, not a branch or leaf page", name, pgno, flags);
	if (leaf != (level == depth))
		return damaged(wk, "%s: page %" PRIu64 " is a %s page at level %u of %u", name, pgno,
		               leaf ? "leaf" : "branch", level, depth);
	unsigned lower = u16(p + PG_LOWER), upper = u16(p + PG_UPPER);
	if (lower < PAGE_HDR || (lower - PAGE_HDR) % 2 || lower > upper || upper > wk->psize)
		return damaged(wk, "%s: page %" PRIu64 " has free space bounds %u..%u", name, pgno, lower, upper);
	unsigned nkeys = (lower - PAGE_HDR) / 2;
	if (branch && nkeys == 0)
		return damaged(wk, "%s: branch page %" PRIu64 " is empty", name, pgno);
	for (unsigned i = 0; i < nkeys; i++) {
		unsigned off = u16(p + PAGE_HDR + 2 * i);
		if (off < upper || off + NODE_HDR > wk->psize)
			return damaged(wk, "%s: page %" PRIu64 " node %u at offset %u is outside its page", name, pgno, i,
			               off);
		const unsigned char *n = p + off;
		uint64_t lo = u16(n), hi = u16(n + 2), nflags = u16(n + 4), ksize = u16(n + 6);
		size_t kend = off + NODE_HDR + ksize;
		if (kend > wk->psize)
			return damaged(wk, "%s: page %" PRIu64 " node %u has a key past the end of its page", name, pgno, i);
		if (branch) {
			uint64_t child = lo | hi << 16 | nflags << 32;
			if ((rc = walk_page(wk, child, level + 1, depth, kind, name)))
				return rc;
			continue;
		}
		uint64_t dsize = lo | hi << 16;
		if (nflags & ~(uint64_t)(F_BIGDATA | F_SUBDATA))
			return damaged(wk, "%s: page %" PRIu64 " node %u has flags %#" PRIx64 " (duplicate keys are never used)",
			               name, pgno, i, nflags);
		if (nflags & F_BIGDATA) {
			if (kend + 8 > wk->psize || (nflags & F_SUBDATA))
				return damaged(wk, "%s: page %" PRIu64 " node %u is a malformed large value", name, pgno, i);
			unsigned char *d = NULL;
			rc = check_overflow(wk, u64(p + kend), dsize, name, kind == T_FREE ? &d : NULL);
			if (rc == 0 && d)
				rc = check_idl(wk, d, dsize);
			free(d);
			if (rc)
				return rc;
			continue;
		}
		if (kend + dsize > wk->psize)
			return damaged(wk, "%s: page %" PRIu64 " node %u has a value past the end of its page", name, pgno, i);
		if (nflags & F_SUBDATA) {
			if (kind != T_MAIN || dsize != DB_SIZE)
				return damaged(wk, "%s: page %" PRIu64 " node %u is a malformed named database", name, pgno, i);
			char sub[80];
			size_t kl = ksize < 40 ? ksize : 40;
			int printable = 1;
			for (size_t j = 0; j < kl; j++)
				printable &= n[NODE_HDR + j] >= 0x20 && n[NODE_HDR + j] < 0x7f;
			snprintf(sub, sizeof(sub), "database '%.*s'", printable ? (int)kl : 1, printable ? (const char *)n + NODE_HDR : "?");
			if ((rc = walk_db(wk, p + kend, T_NAMED, sub)))
				return rc;
			continue;
		}
		if (kind == T_FREE && (rc = check_idl(wk, p + kend, dsize)))
			return rc;
	}
	return 0;
}

static int walk_db(struct walk *wk, const unsigned char *db, enum tree kind, const char *name)
{
	uint16_t flags = u16(db + DB_FLAGS), depth = u16(db + DB_DEPTH);
	uint64_t root = u64(db + DB_ROOT);
	if (flags & DB_DUP_FLAGS)
		return damaged(wk, "%s: flags %#x (duplicate keys are never used)", name, flags);
	if (root == P_INVALID)
		return depth == 0 ? 0 : damaged(wk, "%s: no root page but a depth of %u", name, depth);
	if (depth == 0 || depth > MAX_DEPTH)
		return damaged(wk, "%s: a depth of %u", name, depth);
	return walk_page(wk, root, 1, depth, kind, name);
}

/* Check meta page i (its first META_SIZE bytes after the header in m). */
static int check_meta(struct walk *wk, const unsigned char *pg, int i)
{
	const unsigned char *m = pg + PAGE_HDR;
	int zero = 1;
	for (size_t j = 0; j < PAGE_HDR + META_SIZE; j++)
		zero &= pg[j] == 0;
	if (zero)
		return damaged(wk, "LMDB meta page %d is all zeroes", i);
	if (u32(m + M_MAGIC) != LMDB_MAGIC)
		return damaged(wk, "page %d is not an LMDB meta page (no LMDB magic number)", i);
	if (u32(m + M_VERSION) != LMDB_DATA_VERSION)
		return WAL_EVERSION;
	if ((u16(pg + PG_FLAGS) & P_KIND) != P_META || u64(pg + PG_PGNO) != (uint64_t)i)
		return damaged(wk, "LMDB meta page %d has a wrong page number or kind", i);
	return 0;
}

/* Read both meta pages of fd into pg; the current one's transaction id. */
static int read_txnid(int fd, uint64_t *txnid)
{
	unsigned char a[PAGE_HDR + META_SIZE], b[PAGE_HDR + META_SIZE];
	if (pread(fd, a, sizeof(a), 0) != (ssize_t)sizeof(a))
		return -1;
	uint32_t psize = u32(a + PAGE_HDR + M_DBS + DB_PAD);
	if (psize < MIN_PAGE || psize > MAX_PAGE || pread(fd, b, sizeof(b), psize) != (ssize_t)sizeof(b))
		return -1;
	uint64_t t0 = u64(a + PAGE_HDR + M_TXNID), t1 = u64(b + PAGE_HDR + M_TXNID);
	*txnid = t0 > t1 ? t0 : t1;
	return 0;
}

static int check_once(int fd, struct walf_info *info, char *why, size_t whylen)
{
	struct walk wk;
	struct stat st;
	unsigned char pg[2][PAGE_HDR + META_SIZE];
	int rc;

	memset(info, 0, sizeof(*info));
	memset(&wk, 0, sizeof(wk));
	memset(pg, 0, sizeof(pg));
	wk.why = why;
	wk.whylen = whylen;
	if (why && whylen)
		why[0] = '\0';
	wk.fd = fd;
	if (fstat(wk.fd, &st) < 0) {
		rc = -errno;
		goto out;
	}
	info->file_size = (uint64_t)st.st_size;
	if (st.st_size == 0) {
		info->empty = 1;
		rc = 0;
		goto out;
	}
	/* Page 0 first: its free-page record holds the page size, and so
	 * where page 1 is. */
	if ((uint64_t)st.st_size < sizeof(pg[0])) {
		rc = damaged(&wk, "the file has %" PRIu64 " byte%s, fewer than one LMDB meta page", info->file_size,
		             walr_s(info->file_size));
		goto out;
	}
	if ((rc = read_at(&wk, pg[0], sizeof(pg[0]), 0)))
		goto out;
	uint32_t psize = u32(pg[0] + PAGE_HDR + M_DBS + DB_PAD);
	rc = check_meta(&wk, pg[0], 0);
	if (rc == 0 && (psize < MIN_PAGE || psize > MAX_PAGE || (psize & (psize - 1))))
		rc = damaged(&wk, "LMDB meta page 0 records a page size of %" PRIu32 " bytes", psize);
	if (rc)
		goto out;
	if ((uint64_t)st.st_size < 2ull * psize) {
		rc = damaged(&wk, "the file has %" PRIu64 " byte%s, fewer than LMDB's two meta pages of %" PRIu32 " bytes",
		             info->file_size, walr_s(info->file_size), psize);
		goto out;
	}
	if ((rc = read_at(&wk, pg[1], sizeof(pg[1]), psize)) || (rc = check_meta(&wk, pg[1], 1)))
		goto out;
	if (u32(pg[1] + PAGE_HDR + M_DBS + DB_PAD) != psize) {
		rc = damaged(&wk, "the two LMDB meta pages disagree on the page size");
		goto out;
	}
	/* LMDB uses the meta page with the larger transaction id. */
	int cur = u64(pg[1] + PAGE_HDR + M_TXNID) > u64(pg[0] + PAGE_HDR + M_TXNID);
	const unsigned char *m = pg[cur] + PAGE_HDR;
	uint64_t last = u64(m + M_LAST_PG);
	/* The size again, after the meta pages: a writer may have grown the
	 * file (and then written a meta page saying so) meanwhile. */
	if (fstat(wk.fd, &st) == 0)
		info->file_size = (uint64_t)st.st_size;
	uint64_t have = info->file_size / psize;
	/* LMDB writes whole pages, so a size that is not a multiple was cut.
	 * The last page number may lie past the end, though: a page taken at
	 * the end and freed again in the same transaction is never written,
	 * yet counts in the meta page's last page (seen on a full disk). So
	 * the file is cut short only if a page the trees reach lies past its
	 * end (walk_page, check_overflow). */
	if (last < 1 || info->file_size % psize || have < 2) {
		rc = damaged(&wk,
		             "the file has %" PRIu64 " byte%s (%" PRIu64 " page%s of %" PRIu32 "), and its LMDB meta page %d "
		             "says %" PRIu64 " page%s in use: the file was cut short",
		             info->file_size, walr_s(info->file_size), have, walr_s(have), psize, cur, last + 1,
		             last + 1 == 1 ? " is" : "s are");
		goto out;
	}
	wk.have = have;
	wk.psize = psize;
	wk.npages = last + 1;
	wk.seen = calloc((size_t)(wk.npages / 8 + 1), 1);
	if (!wk.seen) {
		rc = -ENOMEM;
		goto out;
	}
	for (int i = 0; i < 2 * (MAX_DEPTH + 1); i++)
		if (!(wk.buf[i] = malloc(psize))) {
			rc = -ENOMEM;
			goto out;
		}
	wk.seen[0] |= 3; /* the meta pages */
	if ((rc = walk_db(&wk, m + M_DBS, T_FREE, "the free-page database")) ||
	    (rc = walk_db(&wk, m + M_DBS + DB_SIZE, T_MAIN, "the main database")))
		goto out;
	info->page_size = psize;
	info->used_pages = wk.npages;
	info->txnid = u64(m + M_TXNID);
	info->pages_read = wk.pages_read;
	rc = 0;
out:
	if (rc == WAL_EVERSION && why && whylen)
		snprintf(why, whylen, "it is an LMDB file of data version %" PRIu32 " (this LMDB reads %u)",
		         u32(pg[0] + PAGE_HDR + M_VERSION) != LMDB_DATA_VERSION ? u32(pg[0] + PAGE_HDR + M_VERSION)
		                                                                : u32(pg[1] + PAGE_HDR + M_VERSION),
		         LMDB_DATA_VERSION);
	for (int i = 0; i < 2 * (MAX_DEPTH + 1); i++)
		free(wk.buf[i]);
	free(wk.seen);
	return rc;
}

/*
 * The walk holds no LMDB reader slot, so a writer beside it (relayd, when
 * relayctl opens the queue) may reuse pages of the snapshot it walks. A
 * writer only reuses pages freed before the last committed transaction:
 * the pages of snapshot T stay as they are while the current transaction
 * id is at most T + 1. A walk that fails while the id moved further is
 * therefore tried again; one that fails with the id still there, or the
 * meta pages and size alone, is the file's own damage. A file that keeps
 * changing under every try is being written by a working LMDB, which
 * walked it when it opened it: its tree walk is left out.
 */
int walf_check(const char *path, struct walf_info *info, char *why, size_t whylen)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	int rc = 0;
	for (int attempt = 0; attempt < 5; attempt++) {
		uint64_t before = 0, after = 0;
		int have = read_txnid(fd, &before) == 0;
		rc = check_once(fd, info, why, whylen);
		if (rc != WAL_EDAMAGED || !have)
			break;
		if (read_txnid(fd, &after) != 0 || after <= before + 1)
			break;
		if (attempt == 4) {
			rc = 0;
			info->unwalked = 1;
		}
	}
	close(fd);
	return rc;
}

/*---- salvage's scan ----*/

/* The page size: page 0's when it is a meta page, else page 1's found at
 * each size it could be, else 4096. */
static uint32_t guess_page_size(int fd)
{
	unsigned char pg[PAGE_HDR + META_SIZE];
	if (pread(fd, pg, sizeof(pg), 0) == (ssize_t)sizeof(pg) && u32(pg + PAGE_HDR + M_MAGIC) == LMDB_MAGIC) {
		uint32_t ps = u32(pg + PAGE_HDR + M_DBS + DB_PAD);
		if (ps >= MIN_PAGE && ps <= MAX_PAGE && !(ps & (ps - 1)))
			return ps;
	}
	for (uint32_t ps = MIN_PAGE; ps <= MAX_PAGE; ps *= 2)
		if (pread(fd, pg, sizeof(pg), ps) == (ssize_t)sizeof(pg) && u32(pg + PAGE_HDR + M_MAGIC) == LMDB_MAGIC &&
		    u64(pg + PG_PGNO) == 1 && u32(pg + PAGE_HDR + M_DBS + DB_PAD) == ps)
			return ps;
	return 4096;
}

int walf_read_value(int fd, struct walf_value where, void *buf)
{
	size_t got = 0;
	while (got < where.len) {
		ssize_t n = pread(fd, (char *)buf + got, where.len - got, (off_t)(where.off + got));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		got += (size_t)n;
	}
	return 0;
}

int walf_scan(const char *path,
              int (*cb)(void *arg, const unsigned char *key, size_t klen, const unsigned char *val, size_t vlen,
                        struct walf_value where),
              void *arg, struct walf_scan_stat *st)
{
	struct stat sb;
	int rc = 0;
	memset(st, 0, sizeof(*st));
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &sb) < 0) {
		rc = -errno;
		close(fd);
		return rc;
	}
	uint32_t psize = guess_page_size(fd);
	uint64_t npages = (uint64_t)sb.st_size / psize;
	unsigned char *p = malloc(psize), *big = NULL;
	if (!p) {
		close(fd);
		return -ENOMEM;
	}
	st->page_size = psize;
	st->pages = npages;
	for (uint64_t pgno = 2; pgno < npages && rc == 0; pgno++) {
		struct walf_value page = { pgno * psize, psize };
		if (walf_read_value(fd, page, p) || u64(p + PG_PGNO) != pgno || (u16(p + PG_FLAGS) & P_KIND) != P_LEAF)
			continue;
		unsigned lower = u16(p + PG_LOWER), upper = u16(p + PG_UPPER);
		if (lower < PAGE_HDR || (lower - PAGE_HDR) % 2 || lower > upper || upper > psize)
			continue;
		st->leaves++;
		for (unsigned i = 0; i < (lower - PAGE_HDR) / 2 && rc == 0; i++) {
			unsigned off = u16(p + PAGE_HDR + 2 * i);
			if (off < upper || off + NODE_HDR > psize) {
				st->unreadable++;
				continue;
			}
			const unsigned char *n = p + off;
			uint64_t dsize = (uint64_t)u16(n) | (uint64_t)u16(n + 2) << 16;
			unsigned nflags = u16(n + 4), ksize = u16(n + 6);
			size_t kend = off + NODE_HDR + ksize;
			if (kend > psize || (nflags & (F_SUBDATA | F_DUPDATA))) {
				st->unreadable += kend > psize;
				continue;
			}
			struct walf_value where;
			const unsigned char *val;
			if (nflags & F_BIGDATA) {
				unsigned char hdr[PAGE_HDR];
				uint64_t ov = kend + 8 <= psize ? u64(p + kend) : 0;
				struct walf_value h = { ov * psize, PAGE_HDR };
				if (ov < 2 || ov >= npages || walf_read_value(fd, h, hdr) || u64(hdr + PG_PGNO) != ov ||
				    (u16(hdr + PG_FLAGS) & P_KIND) != P_OVERFLOW || u32(hdr + PG_PAGES) == 0 ||
				    u32(hdr + PG_PAGES) > npages - ov || PAGE_HDR + dsize > (uint64_t)u32(hdr + PG_PAGES) * psize) {
					st->unreadable++;
					continue;
				}
				where.off = ov * psize + PAGE_HDR;
				where.len = dsize;
				free(big);
				if (!(big = malloc(dsize ? dsize : 1))) {
					rc = -ENOMEM;
					break;
				}
				if (walf_read_value(fd, where, big)) {
					st->unreadable++;
					continue;
				}
				val = big;
			} else {
				if (kend + dsize > psize) {
					st->unreadable++;
					continue;
				}
				where.off = pgno * psize + kend;
				where.len = dsize;
				val = p + kend;
			}
			st->values++;
			rc = cb(arg, n + NODE_HDR, ksize, val, (size_t)dsize, where);
		}
	}
	free(big);
	free(p);
	close(fd);
	return rc;
}
