/*
 * wal_file: check an LMDB data file with pread alone, before LMDB maps
 * it. LMDB trusts its file: it maps it whole and follows page numbers
 * and offsets as they are stored, so a truncated file is SIGBUS at the
 * first page past the end, and a scribbled page pointer a read anywhere
 * in the map or beyond. This walk checks what LMDB would follow, so that
 * a damaged file is refused with a reason instead. docs/architecture.md
 * ("What is checked before LMDB opens the file") lists what it relies on.
 * Internal to wal/.
 */
#ifndef RELAY_WAL_FILE_H
#define RELAY_WAL_FILE_H

#include <stddef.h>
#include <stdint.h>

/* What the check found out about a file that passed it. */
struct walf_info {
	int empty;          /* the file has no byte (a relayd that died before its first commit) */
	uint64_t file_size; /* bytes */
	uint32_t page_size;
	uint64_t used_pages; /* the current meta page's last page + 1 */
	uint64_t txnid;      /* of the current meta page */
	uint64_t pages_read; /* tree pages read by the walk */
	int unwalked;        /* a writer changed the file under five walks in a row: trees not checked */
};

/*
 * Check the LMDB file path: both meta pages (LMDB's magic and data
 * version, page numbers, the page size), the current one's last page
 * against the file's size, then every page of the free-page tree, the
 * main tree and each named database's tree, and the first page of each
 * overflow run: page numbers inside the file, page kinds, node offsets
 * and sizes inside their page, no page reached twice, depths as the
 * trees record, free-page lists within the file. Reads with pread only.
 * Returns 0 (info filled; info->empty for a file of 0 bytes, which is
 * not walked), -ENOENT when there is no file, another -errno when it
 * cannot be read, WAL_EVERSION when both meta pages are LMDB's but of
 * another data version, or WAL_EDAMAGED, with why[0..whylen) saying in
 * words what is wrong (why may be NULL).
 */
int walf_check(const char *path, struct walf_info *info, char *why, size_t whylen);

/* Where a value lies in the file: len bytes from offset off. */
struct walf_value {
	uint64_t off;
	uint64_t len;
};

/* What walf_scan went through. */
struct walf_scan_stat {
	uint32_t page_size;
	uint64_t pages;      /* pages in the file */
	uint64_t leaves;     /* pages that read as leaf pages */
	uint64_t values;     /* leaf values handed to the callback */
	uint64_t unreadable; /* leaf values whose bounds or overflow run did not hold */
};

/*
 * Salvage's reader: every page of the file, whatever the meta pages and
 * trees say, taken alone. Each page that reads as a leaf page (its own
 * page number, the leaf kind, sane bounds) has each of its nodes checked
 * against the page (and an overflow run against the file) and handed to
 * cb(arg, key, klen, val, vlen, where): val is valid during the call only;
 * walf_read_value reads it again later. Pages that are free or stale
 * (earlier versions of a tree page) are read too: the caller tells live
 * values from old ones by their content. cb returns 0 to go on, or an
 * error that ends the scan and is returned. Returns 0, -errno, or what cb
 * returned. Reads with pread only.
 */
int walf_scan(const char *path,
              int (*cb)(void *arg, const unsigned char *key, size_t klen, const unsigned char *val, size_t vlen,
                        struct walf_value where),
              void *arg, struct walf_scan_stat *st);

/* Read the value at where from path's open descriptor fd into buf
 * (where.len bytes). Returns 0 or -errno (-EIO for a short read). */
int walf_read_value(int fd, struct walf_value where, void *buf);

#endif
