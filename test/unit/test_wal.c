/*
 * test_wal: the queue library on a fresh LMDB environment per test:
 * append and order, per-backend cursors, limits, reopen, format version,
 * locking, a full map, read-only and shared access, and the operator
 * actions relayctl uses (pause, purge, peek, dead letters, verify).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "wal/wal.h"
#include "wal/wal_record.h"

/*
 * Fault injection: this executable's fdatasync and pwrite interpose on
 * libc's for liblmdb too (the dynamic linker looks here first). Armed
 * faults fire once.
 */
static int fail_fdatasync_errno;
static int fail_pwrite_errno;

int fdatasync(int fd)
{
	static int (*real)(int);
	if (!real)
		real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
	if (fail_fdatasync_errno) {
		errno = fail_fdatasync_errno;
		fail_fdatasync_errno = 0;
		return -1;
	}
	return real(fd);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
	static ssize_t (*real)(int, const void *, size_t, off_t);
	if (!real)
		real = (ssize_t(*)(int, const void *, size_t, off_t))dlsym(RTLD_NEXT, "pwrite");
	if (fail_pwrite_errno) {
		errno = fail_pwrite_errno;
		fail_pwrite_errno = 0;
		return -1;
	}
	return real(fd, buf, n, off);
}

struct fx {
	char dir[256];
	struct wal *w;
};

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	snprintf(f->dir, sizeof(f->dir), "/tmp/test_wal.XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	strcat(f->dir, "/q"); /* wal_open must create it */
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	char cmd[600];
	if (f->w)
		wal_close(f->w);
	f->dir[strlen(f->dir) - 2] = '\0';
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
	assert_int_equal(system(cmd), 0);
	free(f);
	return 0;
}

static void open_default(struct fx *f, uint64_t map)
{
	struct wal_options o = { .map_size = map, .flags = 0 };
	assert_int_equal(wal_open(f->dir, &o, &f->w), 0);
}

static struct wal_batch mk(const char *body, uint64_t route, int64_t t)
{
	struct wal_batch b;
	memset(&b, 0, sizeof(b));
	b.route = route;
	b.accept_ns = t;
	b.lines = 0;
	for (const char *p = body; *p; p++)
		b.lines += *p == '\n';
	b.precision = 0;
	b.db = "db0";
	b.rp = "autogen";
	b.user = "alice";
	b.password = "s3cret";
	b.body = body;
	b.body_len = strlen(body);
	return b;
}

static void test_create_modes(void **state)
{
	struct fx *f = *state;
	struct stat st;
	open_default(f, 0);
	assert_int_equal(stat(f->dir, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0700);
	char p[300];
	snprintf(p, sizeof(p), "%s/data.mdb", f->dir);
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	snprintf(p, sizeof(p), "%s/relayd.lock", f->dir);
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
}

static void test_append_order_and_read(void **state)
{
	struct fx *f = *state;
	int a;
	open_default(f, 0);
	assert_int_equal(wal_backend_open(f->w, "a", &a), 0);
	assert_int_equal(a, 0);
	struct wal_batch in[3] = {
		mk("m v=1 1\n", 1, 100), mk("m v=2 2\nm v=3 3\n", 1, 200), mk("m v=4 4\n", 1, 300),
	};
	assert_int_equal(wal_append(f->w, in, 3, 1000), 0);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(in[i].result, 0);
		assert_int_equal(in[i].seq, (uint64_t)i + 1);
	}
	struct wal_batch out[8];
	size_t n;
	assert_int_equal(wal_read(f->w, a, 0, 8, 1 << 20, out, &n), 0);
	assert_int_equal(n, 3);
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(out[i].seq, i + 1);
		assert_int_equal(out[i].body_len, in[i].body_len);
		assert_memory_equal(out[i].body, in[i].body, in[i].body_len);
		assert_string_equal(out[i].db, "db0");
		assert_string_equal(out[i].rp, "autogen");
		assert_string_equal(out[i].user, "alice");
		assert_string_equal(out[i].password, "s3cret");
		assert_string_equal(out[i].org, "");
		assert_int_equal(out[i].accept_ns, in[i].accept_ns);
		assert_int_equal(out[i].lines, in[i].lines);
		wal_batch_release(&out[i]);
	}
	struct wal_backend_stat st;
	assert_int_equal(wal_backend_stat(f->w, "a", &st), 0);
	assert_int_equal(st.pending_batches, 3);
	assert_int_equal(st.pending_points, 4);
	assert_int_equal(st.pending_bytes, in[0].body_len + in[1].body_len + in[2].body_len);
	assert_int_equal(st.oldest_accept_ns, 100);
	/* max / max_bytes stop early but return at least one batch. */
	assert_int_equal(wal_read(f->w, a, 0, 2, 1 << 20, out, &n), 0);
	assert_int_equal(n, 2);
	wal_batch_release(&out[0]);
	wal_batch_release(&out[1]);
	assert_int_equal(wal_read(f->w, a, 0, 8, 1, out, &n), 0);
	assert_int_equal(n, 1);
	/* A new body in memory (a v2 backend's timestamps in seconds): the
	 * strings survive the old allocation, the queue keeps its own. */
	assert_int_equal(wal_batch_set_body(&out[0], out[0].body + 2, 5), 0);
	assert_int_equal(out[0].body_len, 5);
	assert_string_equal(out[0].body, "v=1 1");
	assert_string_equal(out[0].db, "db0");
	assert_string_equal(out[0].password, "s3cret");
	assert_string_equal(out[0].org, "");
	wal_batch_release(&out[0]);
	assert_int_equal(wal_read(f->w, a, 0, 1, 1 << 20, out, &n), 0);
	assert_string_equal(out[0].body, "m v=1 1\n");
	wal_batch_release(&out[0]);
}

static void test_cursors_per_backend(void **state)
{
	struct fx *f = *state;
	int a, b;
	open_default(f, 0);
	assert_int_equal(wal_backend_open(f->w, "a", &a), 0);
	assert_int_equal(wal_backend_open(f->w, "b", &b), 0);
	assert_int_not_equal(a, b);
	uint64_t both = (1ULL << a) | (1ULL << b);
	struct wal_batch in[4] = { mk("x v=1 1\n", both, 1), mk("x v=2 2\n", both, 2),
				   mk("x v=3 3\n", 1ULL << b, 3), mk("x v=4 4\n", both, 4) };
	assert_int_equal(wal_append(f->w, in, 4, 10), 0);
	struct wal_backend_stat sa, sb;
	assert_int_equal(wal_backend_stat(f->w, "a", &sa), 0);
	assert_int_equal(wal_backend_stat(f->w, "b", &sb), 0);
	assert_int_equal(sa.pending_batches, 3); /* batch 3 is not routed to a */
	assert_int_equal(sb.pending_batches, 4);
	/* The same figures from one snapshot, an unknown name beside them. */
	{
		const char *names[3] = { "b", "nope", "a" };
		struct wal_backend_stat all[3];
		int rcs[3], grc;
		struct wal_stat g;
		assert_int_equal(wal_backend_stats(f->w, names, 3, all, rcs, &g, &grc), 0);
		assert_int_equal(grc, 0);
		assert_int_equal(g.batches, 4);
		assert_true(g.map_size > 0 && g.page_size > 0 && g.file_pages > 0);
		assert_int_equal(rcs[0], 0);
		assert_int_equal(rcs[1], WAL_ENOBACKEND);
		assert_int_equal(rcs[2], 0);
		assert_int_equal(all[0].pending_batches, 4);
		assert_int_equal(all[1].id, -1);
		assert_int_equal(all[2].pending_batches, 3);
		assert_int_equal(all[2].oldest_accept_ns, sa.oldest_accept_ns);
	}

	/* a finishes 1..2: b still needs them, nothing is deleted. */
	assert_int_equal(wal_ack(f->w, a, 2, 50), 0);
	struct wal_stat ws;
	assert_int_equal(wal_stat(f->w, &ws), 0);
	assert_int_equal(ws.batches, 4);
	assert_int_equal(wal_backend_stat(f->w, "a", &sa), 0);
	assert_int_equal(sa.pending_batches, 1);
	assert_int_equal(sa.delivered_batches, 2);
	assert_int_equal(sa.last_delivery_ns, 50);
	assert_int_equal(sa.oldest_accept_ns, 4);

	struct wal_batch out[4];
	size_t n;
	assert_int_equal(wal_read(f->w, a, 0, 4, 1 << 20, out, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(out[0].seq, 4);
	wal_batch_release(&out[0]);

	/* b finishes 1..3: 1 and 2 are done everywhere and deleted; 3 was only
	 * b's and is deleted too; 4 is pending for both. */
	assert_int_equal(wal_ack(f->w, b, 3, 60), 0);
	assert_int_equal(wal_stat(f->w, &ws), 0);
	assert_int_equal(ws.batches, 1);
	assert_int_equal(wal_read(f->w, b, 0, 4, 1 << 20, out, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(out[0].seq, 4);
	wal_batch_release(&out[0]);
	/* ack past the log is refused; ack of the past is a no-op */
	assert_int_equal(wal_ack(f->w, a, 99, 1), WAL_EINVAL);
	assert_int_equal(wal_ack(f->w, a, 1, 1), 0);
	assert_int_equal(wal_ack(f->w, a, 4, 70), 0);
	assert_int_equal(wal_ack(f->w, b, 4, 70), 0);
	assert_int_equal(wal_stat(f->w, &ws), 0);
	assert_int_equal(ws.batches, 0);
	assert_int_equal(ws.next_seq, 5);
}

static void test_new_backend_starts_empty(void **state)
{
	struct fx *f = *state;
	int a, c;
	open_default(f, 0);
	assert_int_equal(wal_backend_open(f->w, "a", &a), 0);
	struct wal_batch in = mk("x v=1 1\n", 1ULL << a, 1);
	assert_int_equal(wal_append(f->w, &in, 1, 1), 0);
	assert_int_equal(wal_backend_open(f->w, "c", &c), 0);
	struct wal_backend_stat st;
	assert_int_equal(wal_backend_stat(f->w, "c", &st), 0);
	assert_int_equal(st.pending_batches, 0);
	assert_int_equal(st.cursor, 2);
	assert_int_equal(wal_backend_stat(f->w, "nope", &st), WAL_ENOBACKEND);
	/* routing to a backend this process never opened refuses that batch */
	struct wal_batch bad = mk("x v=1 1\n", 1ULL << 9, 1);
	assert_int_equal(wal_append(f->w, &bad, 1, 1), 0);
	assert_int_equal(bad.result, WAL_ENOBACKEND);
	assert_int_equal(bad.seq, 0);
	assert_int_equal(wal_backend_open(f->w, "", &c), WAL_EINVAL);
}

static void test_byte_limit(void **state)
{
	struct fx *f = *state;
	int a, b;
	open_default(f, 0);
	assert_int_equal(wal_backend_open(f->w, "a", &a), 0);
	assert_int_equal(wal_backend_open(f->w, "b", &b), 0);
	assert_int_equal(wal_backend_set_limits(f->w, a, 20, 0), 0);
	uint64_t both = (1ULL << a) | (1ULL << b);
	/* 9 bytes each: two fit under 20, the third is refused, in one commit */
	struct wal_batch in[3] = { mk("x v=1 11\n", both, 1), mk("x v=2 22\n", both, 2), mk("x v=3 33\n", both, 3) };
	assert_int_equal(wal_append(f->w, in, 3, 10), 0);
	assert_int_equal(in[0].result, 0);
	assert_int_equal(in[1].result, 0);
	assert_int_equal(in[2].result, WAL_ELIMIT);
	assert_int_equal(in[2].refused_by, a);
	assert_int_equal(in[2].seq, 0);
	struct wal_backend_stat st;
	/* a refused batch leaves no trace on the other backend either */
	assert_int_equal(wal_backend_stat(f->w, "b", &st), 0);
	assert_int_equal(st.pending_batches, 2);
	/* room again once a delivers */
	assert_int_equal(wal_ack(f->w, a, in[0].seq, 11), 0);
	struct wal_batch again = mk("x v=3 33\n", both, 3);
	assert_int_equal(wal_append(f->w, &again, 1, 12), 0);
	assert_int_equal(again.result, 0);
	assert_int_equal(again.seq, 3);
}

/* A batch the record format cannot hold (a string over 65535 bytes) is
 * refused alone; the other batches of the same group commit are stored. */
static void test_too_big_refused_alone(void **state)
{
	struct fx *f = *state;
	int a;
	open_default(f, 0);
	assert_int_equal(wal_backend_open(f->w, "a", &a), 0);
	char *huge = malloc(WAL_MAX_STRING + 2);
	memset(huge, 'd', WAL_MAX_STRING + 1);
	huge[WAL_MAX_STRING + 1] = '\0';
	struct wal_batch in[3] = { mk("x v=1 1\n", 1, 1), mk("x v=2 2\n", 1, 2), mk("x v=3 3\n", 1, 3) };
	in[1].db = huge;
	/* a batch routed to a backend the queue does not know: refused alone too */
	struct wal_batch stray = mk("x v=4 4\n", 1ULL << 7, 4);
	assert_int_equal(wal_append(f->w, in, 3, 10), 0);
	assert_int_equal(wal_append(f->w, &stray, 1, 10), 0);
	free(huge);
	assert_int_equal(in[0].result, 0);
	assert_int_equal(in[1].result, WAL_ETOOBIG);
	assert_int_equal(in[1].seq, 0);
	assert_int_equal(in[2].result, 0);
	assert_int_equal(stray.result, WAL_ENOBACKEND);
	/* a time the format does not hold is refused alone too */
	struct wal_batch early = mk("x v=6 6\n", 1, -1);
	assert_int_equal(wal_append(f->w, &early, 1, 10), 0);
	assert_int_equal(early.result, WAL_EINVAL);
	struct wal_backend_stat st;
	assert_int_equal(wal_backend_stat(f->w, "a", &st), 0);
	assert_int_equal(st.pending_batches, 2);
	/* exactly 65535 bytes fit */
	char *max = malloc(WAL_MAX_STRING + 1);
	memset(max, 'r', WAL_MAX_STRING);
	max[WAL_MAX_STRING] = '\0';
	struct wal_batch edge = mk("x v=5 5\n", 1, 5);
	edge.rp = max;
	assert_int_equal(wal_append(f->w, &edge, 1, 10), 0);
	free(max);
	assert_int_equal(edge.result, 0);
	assert_string_equal(wal_strerror(WAL_ETOOBIG),
	                    "batch too large for a queue record (a string over 65535 bytes or a body over 4 GiB)");
}

static void test_age_limit(void **state)
{
	struct fx *f = *state;
	int a;
	open_default(f, 0);
	assert_int_equal(wal_backend_open(f->w, "a", &a), 0);
	assert_int_equal(wal_backend_set_limits(f->w, a, 0, 1000), 0);
	struct wal_batch b1 = mk("x v=1 1\n", 1, 5000);
	assert_int_equal(wal_append(f->w, &b1, 1, 5000), 0);
	struct wal_batch b2 = mk("x v=2 2\n", 1, 5500);
	assert_int_equal(wal_append(f->w, &b2, 1, 5500), 0);
	assert_int_equal(b2.result, 0);
	struct wal_batch b3 = mk("x v=3 3\n", 1, 6001);
	assert_int_equal(wal_append(f->w, &b3, 1, 6001), 0);
	assert_int_equal(b3.result, WAL_EAGE);
	/* delivering the old one lifts the limit */
	assert_int_equal(wal_ack(f->w, a, b1.seq, 6002), 0);
	b3 = mk("x v=3 3\n", 1, 6003);
	assert_int_equal(wal_append(f->w, &b3, 1, 6003), 0);
	assert_int_equal(b3.result, 0);
}

static void test_reopen_keeps_everything(void **state)
{
	struct fx *f = *state;
	int a;
	open_default(f, 0);
	assert_int_equal(wal_backend_open(f->w, "a", &a), 0);
	char body[64];
	for (int i = 0; i < 50; i++) {
		snprintf(body, sizeof(body), "m v=%di %d\n", i, i);
		struct wal_batch b = mk(body, 1, i);
		assert_int_equal(wal_append(f->w, &b, 1, i), 0);
	}
	assert_int_equal(wal_ack(f->w, a, 10, 1), 0);
	wal_close(f->w);
	f->w = NULL;
	open_default(f, 0);
	assert_int_equal(wal_backend_open(f->w, "a", &a), 0);
	struct wal_batch out[64];
	size_t n;
	assert_int_equal(wal_read(f->w, a, 0, 64, 1 << 20, out, &n), 0);
	assert_int_equal(n, 40);
	for (size_t i = 0; i < n; i++) {
		snprintf(body, sizeof(body), "m v=%zui %zu\n", i + 10, i + 10);
		assert_int_equal(out[i].seq, i + 11);
		assert_string_equal(out[i].body, body);
		wal_batch_release(&out[i]);
	}
	struct wal_batch b = mk("m v=1 1\n", 1, 1);
	assert_int_equal(wal_append(f->w, &b, 1, 1), 0);
	assert_int_equal(b.seq, 51);
}

static void test_second_writer_locked(void **state)
{
	struct fx *f = *state;
	struct wal *w2;
	open_default(f, 0);
	struct wal_options o = { 0, 0 };
	assert_int_equal(wal_open(f->dir, &o, &w2), WAL_ELOCKED);
	assert_null(w2);
	/* a reader is welcome beside the writer */
	o.flags = WAL_F_RDONLY;
	assert_int_equal(wal_open(f->dir, &o, &w2), 0);
	wal_close(w2);
}

static void test_readonly(void **state)
{
	struct fx *f = *state;
	struct wal *r;
	struct wal_options ro = { 0, WAL_F_RDONLY };
	int a;
	assert_int_equal(wal_open(f->dir, &ro, &r), -ENOENT);
	open_default(f, 0);
	assert_int_equal(wal_backend_open(f->w, "a", &a), 0);
	struct wal_batch b = mk("m v=1 1\n", 1, 42);
	assert_int_equal(wal_append(f->w, &b, 1, 42), 0);
	assert_int_equal(wal_open(f->dir, &ro, &r), 0);
	struct wal_backend_stat st;
	assert_int_equal(wal_backend_stat(r, "a", &st), 0);
	assert_int_equal(st.pending_batches, 1);
	assert_int_equal(st.oldest_accept_ns, 42);
	assert_int_equal(wal_append(r, &b, 1, 1), WAL_EINVAL);
	/* the writer goes on while the reader is open */
	assert_int_equal(wal_append(f->w, &b, 1, 43), 0);
	assert_int_equal(wal_backend_stat(r, "a", &st), 0);
	assert_int_equal(st.pending_batches, 2);
	wal_close(r);
}

static void test_readonly_not_a_queue(void **state)
{
	struct fx *f = *state;
	struct wal *r;
	struct wal_options ro = { 0, WAL_F_RDONLY };
	assert_int_equal(mkdir(f->dir, 0700), 0);
	assert_int_equal(wal_open(f->dir, &ro, &r), WAL_ENOTQUEUE);
}

/* Rewrite the format record as if a newer relayd had written the queue. */
static void set_format_version(const char *dir, uint32_t version)
{
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	assert_int_equal(mdb_env_create(&env), 0);
	mdb_env_set_maxdbs(env, 8);
	assert_int_equal(mdb_env_open(env, dir, 0, 0600), 0);
	assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
	assert_int_equal(mdb_dbi_open(txn, "meta", 0, &dbi), 0);
	unsigned char buf[WALR_FORMAT_SIZE];
	struct walr_format fm = { version, 1 };
	walr_format_encode(&fm, buf);
	MDB_val k = { 6, (void *)"format" }, v = { sizeof(buf), buf };
	assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
	assert_int_equal(mdb_txn_commit(txn), 0);
	mdb_env_close(env);
}

static void test_format_version_checked(void **state)
{
	struct fx *f = *state;
	struct wal *w2;
	int a;
	open_default(f, 0);
	assert_int_equal(wal_backend_open(f->w, "a", &a), 0);
	wal_close(f->w);
	f->w = NULL;
	set_format_version(f->dir, WAL_FORMAT_VERSION + 1);
	struct wal_options o = { 0, 0 };
	/* Newer: refused by every open, in words that say what to do. */
	char why[300], want[300];
	snprintf(want, sizeof(want),
	         "this queue was written by a newer relayd (format %d); this relayd reads format %d: install the newer "
	         "relayd or restore a backup",
	         WAL_FORMAT_VERSION + 1, WAL_FORMAT_VERSION);
	for (unsigned fl = 0; fl <= WAL_F_SHARED; fl++) {
		struct wal_options oo = { 0, fl };
		assert_int_equal(wal_open_why(f->dir, &oo, &w2, why, sizeof(why)), WAL_EVERSION);
		assert_null(w2);
		assert_string_equal(why, want);
	}
	assert_int_equal(wal_open(f->dir, &o, &w2), WAL_EVERSION);
	o.flags = WAL_F_RDONLY;
	assert_int_equal(wal_open(f->dir, &o, &w2), WAL_EVERSION);
	set_format_version(f->dir, 0);
	o.flags = 0;
	assert_int_equal(wal_open_why(f->dir, &o, &w2, why, sizeof(why)), WAL_EVERSION);
	assert_non_null(strstr(why, "format 0, which no relayd writes"));
	set_format_version(f->dir, WAL_FORMAT_VERSION);
	assert_int_equal(wal_open(f->dir, &o, &w2), 0);
	wal_close(w2);
}

static void test_map_full_is_clean(void **state)
{
	struct fx *f = *state;
	int a;
	open_default(f, 1 << 20); /* 1 MiB map */
	assert_int_equal(wal_backend_open(f->w, "a", &a), 0);
	size_t len = 100000;
	char *body = malloc(len + 1);
	memset(body, 'x', len);
	memcpy(body, "m v=1 ", 6);
	body[len - 1] = '\n';
	body[len] = '\0';
	int stored = 0, rc = 0;
	for (int i = 0; i < 40; i++) {
		struct wal_batch b = mk(body, 1, i);
		rc = wal_append(f->w, &b, 1, i);
		if (rc)
			break;
		stored++;
	}
	assert_int_equal(rc, WAL_EFULL);
	assert_true(stored > 0);
	struct wal_backend_stat st;
	assert_int_equal(wal_backend_stat(f->w, "a", &st), 0);
	assert_int_equal(st.pending_batches, (uint64_t)stored);
	/* delivering frees pages: appends work again */
	assert_int_equal(wal_ack(f->w, a, (uint64_t)stored, 1), 0);
	struct wal_batch b = mk(body, 1, 99);
	assert_int_equal(wal_append(f->w, &b, 1, 99), 0);
	assert_int_equal(b.result, 0);
	assert_int_equal(b.seq, (uint64_t)stored + 1);
	free(body);
}

/* An fsync error fails that commit (never acknowledged, nothing stored);
 * the next commit succeeds once the fault is gone. */
static void test_fsync_error_fails_commit_only(void **state)
{
	struct fx *f = *state;
	int a;
	open_default(f, 0);
	assert_int_equal(wal_backend_open(f->w, "a", &a), 0);
	struct wal_batch b1 = mk("m v=1 1\n", 1, 1);
	assert_int_equal(wal_append(f->w, &b1, 1, 1), 0);
	struct wal_batch b2 = mk("m v=2 2\n", 1, 2);
	fail_fdatasync_errno = EIO;
	int rc = wal_append(f->w, &b2, 1, 2);
	assert_true(rc < 0);
	assert_int_equal(fail_fdatasync_errno, 0); /* the fault fired */
	assert_int_equal(b2.seq, 0);
	struct wal_batch b3 = mk("m v=3 3\n", 1, 3);
	assert_int_equal(wal_append(f->w, &b3, 1, 3), 0);
	struct wal_batch out[4];
	size_t n;
	assert_int_equal(wal_read(f->w, a, 0, 4, 1 << 20, out, &n), 0);
	assert_int_equal(n, 2);
	assert_string_equal(out[0].body, "m v=1 1\n");
	assert_string_equal(out[1].body, "m v=3 3\n");
	wal_batch_release(&out[0]);
	wal_batch_release(&out[1]);
	struct wal_backend_stat st;
	assert_int_equal(wal_backend_stat(f->w, "a", &st), 0);
	assert_int_equal(st.pending_batches, 2);
}

/* A write error (a full disk) fails the commit cleanly; later commits
 * work, and what was committed before is intact after a reopen. */
static void test_write_error_then_recovery(void **state)
{
	struct fx *f = *state;
	int a;
	open_default(f, 0);
	assert_int_equal(wal_backend_open(f->w, "a", &a), 0);
	struct wal_batch b1 = mk("m v=1 1\n", 1, 1);
	assert_int_equal(wal_append(f->w, &b1, 1, 1), 0);
	struct wal_batch b2 = mk("m v=2 2\n", 1, 2);
	fail_pwrite_errno = ENOSPC;
	assert_true(wal_append(f->w, &b2, 1, 2) < 0);
	assert_int_equal(fail_pwrite_errno, 0);
	struct wal_batch b3 = mk("m v=3 3\n", 1, 3);
	assert_int_equal(wal_append(f->w, &b3, 1, 3), 0);
	wal_close(f->w);
	f->w = NULL;
	open_default(f, 0);
	assert_int_equal(wal_backend_open(f->w, "a", &a), 0);
	struct wal_backend_stat st;
	assert_int_equal(wal_backend_stat(f->w, "a", &st), 0);
	assert_int_equal(st.pending_batches, 2);
	assert_int_equal(st.pending_points, 2);
}

static void test_dead_letter(void **state)
{
	struct fx *f = *state;
	int a, b;
	open_default(f, 0);
	assert_int_equal(wal_backend_open(f->w, "a", &a), 0);
	assert_int_equal(wal_backend_open(f->w, "b", &b), 0);
	uint64_t both = (1ULL << a) | (1ULL << b);
	struct wal_batch in[3] = { mk("x v=1 1\n", both, 1), mk("x v=\"s\" 2\n", both, 2), mk("x v=3 3\n", both, 3) };
	assert_int_equal(wal_append(f->w, in, 3, 10), 0);
	/* only the head of the queue can be finished as dead */
	assert_int_equal(wal_dead_letter(f->w, a, 2, NULL, 0, 0, 400, "x", 1, 5, 1), 0);
	struct wal_backend_stat st;
	assert_int_equal(wal_backend_stat(f->w, "a", &st), 0);
	assert_int_equal(st.pending_batches, 1);
	assert_int_equal(st.dead_batches, 1);
	assert_int_equal(st.delivered_batches, 1); /* batch 1, before the dead one */
	assert_int_equal(st.cursor, 3);
	/* b is untouched */
	assert_int_equal(wal_backend_stat(f->w, "b", &st), 0);
	assert_int_equal(st.pending_batches, 3);
	assert_int_equal(st.dead_batches, 0);
	/* a dead copy of part of a batch, without finishing it */
	assert_int_equal(wal_dead_letter(f->w, b, 1, "x v=1 1\n", 8, 1, 413, "too large", 3, 6, 0), 0);
	assert_int_equal(wal_backend_stat(f->w, "b", &st), 0);
	assert_int_equal(st.pending_batches, 3);
	assert_int_equal(st.dead_batches, 1);
	/* not pending any more for a (finished meanwhile): a no-op */
	assert_int_equal(wal_dead_letter(f->w, a, 1, NULL, 0, 0, 400, "x", 1, 5, 1), 0);
	assert_int_equal(wal_backend_stat(f->w, "a", &st), 0);
	assert_int_equal(st.dead_batches, 1);
	assert_int_equal(st.cursor, 3);
	/* not in the log at all: refused */
	assert_int_equal(wal_dead_letter(f->w, a, 99, NULL, 0, 0, 400, "x", 1, 5, 1), WAL_EINVAL);
	/* survives a reopen */
	wal_close(f->w);
	f->w = NULL;
	open_default(f, 0);
	assert_int_equal(wal_backend_stat(f->w, "a", &st), 0);
	assert_int_equal(st.dead_batches, 1);
}

/*---- shared and read-only opens beside relayd ----*/

static int count_problems(struct wal *w);

static void test_shared_open(void **state)
{
	struct fx *f = *state;
	struct wal *s;
	struct wal_options so = { 0, WAL_F_SHARED };
	int a, b, sa;
	/* nothing there: never created */
	assert_int_equal(wal_open(f->dir, &so, &s), -ENOENT);
	assert_int_equal(mkdir(f->dir, 0700), 0);
	assert_int_equal(wal_open(f->dir, &so, &s), WAL_ENOTQUEUE);
	/* an empty data file (relayd died before its first commit) is not
	 * initialised behind relayd's back */
	char p[300];
	snprintf(p, sizeof(p), "%s/data.mdb", f->dir);
	FILE *fp = fopen(p, "w");
	assert_non_null(fp);
	fclose(fp);
	assert_int_equal(wal_open(f->dir, &so, &s), WAL_ENOTQUEUE);
	struct stat st;
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_size, 0);
	unlink(p);
	struct wal_options both = { 0, WAL_F_SHARED | WAL_F_RDONLY };
	assert_int_equal(wal_open(f->dir, &both, &s), WAL_EINVAL);

	/* beside relayd (which holds relayd.lock): opens, writes */
	open_default(f, 0);
	assert_int_equal(wal_backend_open(f->w, "a", &a), 0);
	assert_int_equal(wal_backend_open(f->w, "b", &b), 0);
	assert_int_equal(wal_open(f->dir, &so, &s), 0);
	assert_int_equal(wal_backend_open(s, "a", &sa), 0);
	assert_int_equal(sa, a);
	/* backends are relayd's to create */
	assert_int_equal(wal_backend_open(s, "new", &sa), WAL_ENOBACKEND);
	/* an import: one batch for one backend only */
	struct wal_batch in = mk("m v=1 1\nm v=2 2\n", 1ULL << a, 7);
	assert_int_equal(wal_append(s, &in, 1, 7), 0);
	assert_int_equal(in.result, 0);
	struct wal_backend_stat sta, stb;
	assert_int_equal(wal_backend_stat(f->w, "a", &sta), 0);
	assert_int_equal(wal_backend_stat(f->w, "b", &stb), 0);
	assert_int_equal(sta.pending_batches, 1);
	assert_int_equal(sta.pending_points, 2);
	assert_int_equal(stb.pending_batches, 0);
	/* relayd goes on appending and delivering */
	struct wal_batch more = mk("m v=3 3\n", (1ULL << a) | (1ULL << b), 8);
	assert_int_equal(wal_append(f->w, &more, 1, 8), 0);
	assert_int_equal(more.seq, 2);
	assert_int_equal(wal_ack(f->w, a, 2, 9), 0);
	assert_int_equal(wal_backend_stat(s, "a", &sta), 0);
	assert_int_equal(sta.pending_batches, 0);
	assert_int_equal(count_problems(s), 0);
	wal_close(s);
	/* the shared handle never took relayd.lock: a second relayd is still
	 * refused because of the first one only */
	wal_close(f->w);
	f->w = NULL;
	assert_int_equal(wal_open(f->dir, &so, &s), 0);
	open_default(f, 0);
	wal_close(s);
}

/* A child process (relayd, say, with a map of map_size; with
 * WAL_F_SHARED in flags, relayctl beside a running relayd) that appends
 * count batches of len bytes for backend "a", the first at time first,
 * once appender_run releases it. Forked before the caller starts threads:
 * a fork while another thread holds the allocator's lock (ASan's) can
 * leave the child stuck. */
struct appender {
	pid_t pid;
	int go; /* the write end of the child's pipe */
};

static struct appender appender_fork(const char *dir, uint64_t map_size, unsigned flags, int first, int count,
                                     size_t len)
{
	int fds[2];
	assert_int_equal(pipe(fds), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		char c;
		/* Only its own pipe: the write ends of earlier children's
		 * (inherited) would keep them waiting if the test failed. */
		if (fds[0] > 3)
			close_range(3, (unsigned)fds[0] - 1, 0);
		close_range((unsigned)fds[0] + 1, ~0U, 0);
		if (read(fds[0], &c, 1) != 1)
			_exit(3); /* never released */
		struct wal *w2;
		struct wal_options o = { map_size, flags };
		int id, rc;
		if ((rc = wal_open(dir, &o, &w2)) || (rc = wal_backend_open(w2, "a", &id))) {
			fprintf(stderr, "child: opening the queue: %s\n", wal_strerror(rc));
			_exit(1);
		}
		char *body = malloc(len + 1);
		memset(body, 'x', len);
		memcpy(body, "m v=1 ", 6);
		body[len - 1] = '\n';
		body[len] = '\0';
		for (int i = first; i < first + count; i++) {
			struct wal_batch bb = mk(body, 1, i);
			if ((rc = wal_append(w2, &bb, 1, i))) {
				fprintf(stderr, "child: appending: %s\n", wal_strerror(rc));
				_exit(2);
			}
		}
		wal_close(w2);
		free(body);
		_exit(0);
	}
	close(fds[0]);
	return (struct appender){ pid, fds[1] };
}

/* Release the child and wait until it has appended everything. */
static void appender_run(struct appender a)
{
	assert_int_equal(write(a.go, "g", 1), 1);
	close(a.go);
	int status;
	assert_int_equal(waitpid(a.pid, &status, 0), a.pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

static void append_in_child(const char *dir, uint64_t map_size, int first, int count, size_t len)
{
	appender_run(appender_fork(dir, map_size, 0, first, count, len));
}

struct resize_reader {
	struct wal *w;
	int id;
	atomic_int *stop;
	int rounds, errors;
};

/* Read the first batches again and again, checking every byte: a map
 * moved under a transaction shows as a crash or as bytes that changed. */
static void *read_while_resized(void *arg)
{
	struct resize_reader *r = arg;
	while (!atomic_load(r->stop)) {
		struct wal_batch out[8];
		size_t n = 0;
		int rc = wal_read(r->w, r->id, 0, 8, 1 << 30, out, &n);
		if (rc || n != 8) {
			if (!r->errors)
				fprintf(stderr, "reader: rc %d (%s), %zu batches\n", rc, wal_strerror(rc), n);
			r->errors++;
		}
		for (size_t i = 0; i < n; i++) {
			const char *b = out[i].body;
			if (out[i].body_len != 16384 || memcmp(b, "m v=1 ", 6) || b[16383] != '\n' ||
			    b[6] != 'x' || b[8000] != 'x')
				r->errors++;
			wal_batch_release(&out[i]);
		}
		r->rounds++;
	}
	return NULL;
}

/* relayd's handle is used by several threads; relayctl (another process,
 * beside it, with a larger map) grows the file past relayd's map, and the
 * next transaction relayd's threads begin meets MDB_MAP_RESIZED. Mapping
 * again must wait until no other thread is inside a transaction
 * (wali_remap_exclusive): mdb_env_set_mapsize unmaps what their pointers
 * point into. */
static void test_map_resized_under_concurrent_readers(void **state)
{
	struct fx *f = *state;
	int a;
	open_default(f, 1 << 20);
	assert_int_equal(wal_backend_open(f->w, "a", &a), 0);
	char *body = malloc(16385);
	memset(body, 'x', 16384);
	memcpy(body, "m v=1 ", 6);
	body[16383] = '\n';
	body[16384] = '\0';
	for (int i = 0; i < 8; i++) {
		struct wal_batch b = mk(body, 1, i);
		assert_int_equal(wal_append(f->w, &b, 1, i), 0);
	}
	free(body);
	/* 6 times 2 MiB more, each past what relayd's map held */
	struct appender ap[6];
	for (int k = 0; k < 6; k++)
		ap[k] = appender_fork(f->dir, 64 << 20, WAL_F_SHARED, 100 + 32 * k, 32, 64 * 1024);
	atomic_int stop = 0;
	struct resize_reader rd[3];
	pthread_t th[3];
	for (int i = 0; i < 3; i++) {
		rd[i] = (struct resize_reader){ f->w, a, &stop, 0, 0 };
		assert_int_equal(pthread_create(&th[i], NULL, read_while_resized, &rd[i]), 0);
	}
	for (int k = 0; k < 6; k++)
		appender_run(ap[k]);
	atomic_store(&stop, 1);
	int rounds = 0;
	for (int i = 0; i < 3; i++) {
		assert_int_equal(pthread_join(th[i], NULL), 0);
		assert_int_equal(rd[i].errors, 0);
		rounds += rd[i].rounds;
	}
	assert_true(rounds > 0);
	struct wal_backend_stat st;
	assert_int_equal(wal_backend_stat(f->w, "a", &st), 0);
	assert_int_equal(st.pending_batches, 8 + 6 * 32);
	/* relayd mapped what the file holds plus room for its own writes,
	 * not just the pages in use (nor the 64 MiB relayctl recorded) */
	struct wal_stat ws;
	assert_int_equal(wal_stat(f->w, &ws), 0);
	assert_true(ws.map_size > 64ULL << 20);
	char big[256 * 1024 + 1];
	memset(big, 'y', sizeof(big) - 1);
	memcpy(big, "m v=2 ", 6);
	big[sizeof(big) - 2] = '\n';
	big[sizeof(big) - 1] = '\0';
	for (int i = 0; i < 8; i++) {
		struct wal_batch b = mk(big, 1, 1000 + i);
		assert_int_equal(wal_append(f->w, &b, 1, 1000 + i), 0);
	}
}

/* A queue of one batch for backend "a", written by a handle with map
 * map_size (recorded in the file) and closed: a read-only handle on it. */
static struct wal *reader_of_one_batch(struct fx *f, uint64_t map_size)
{
	int a;
	open_default(f, map_size);
	assert_int_equal(wal_backend_open(f->w, "a", &a), 0);
	struct wal_batch b = mk("m v=1 1\n", 1, 1);
	assert_int_equal(wal_append(f->w, &b, 1, 1), 0);
	wal_close(f->w);
	f->w = NULL;
	struct wal *r;
	struct wal_options ro = { 0, WAL_F_RDONLY };
	assert_int_equal(wal_open(f->dir, &ro, &r), 0);
	return r;
}

/* What reader r sees of "a" after another process grew the file: pending
 * batches, and count of them read from seq from, the last one last_seq
 * (of last_len bytes, unless 0). */
static void expect_grown(struct wal *r, uint64_t pending, uint64_t from, size_t count, uint64_t last_seq,
                         size_t last_len)
{
	struct wal_backend_stat st;
	assert_int_equal(wal_backend_stat(r, "a", &st), 0);
	assert_int_equal(st.pending_batches, pending);
	int id;
	assert_int_equal(wal_backend_open(r, "a", &id), 0);
	struct wal_batch out[8];
	size_t n;
	assert_true(count <= 8);
	assert_int_equal(wal_read(r, id, from, count, 1 << 30, out, &n), 0);
	assert_int_equal(n, count);
	assert_int_equal(out[n - 1].seq, last_seq);
	if (last_len)
		assert_int_equal(out[n - 1].body_len, last_len);
	for (size_t i = 0; i < n; i++)
		wal_batch_release(&out[i]);
}

/* A reader whose map is smaller than the file another process grew gets
 * MDB_MAP_RESIZED from LMDB; wal maps again (wali_remap) and goes on. */
static void test_readonly_map_resized(void **state)
{
	struct fx *f = *state;
	struct wal *r = reader_of_one_batch(f, 1 << 20); /* maps the 1 MiB the file records */
	/* Another process (relayd with a larger map): 4 MiB more. */
	append_in_child(f->dir, 16 << 20, 0, 64, 64 * 1024);
	expect_grown(r, 65, 60, 4, 63, 0);
	wal_close(r);
}

/* A read-only open maps what the file holds (plus 64 MiB), not the map
 * size the file records (relayd's, which may not fit under ulimit -v);
 * when a writer grows the file past that, it maps again: in a transaction
 * of its own (wali_begin) and in a backup's copy (wal_backup). One handle
 * only: LMDB forbids two environments on one file in a process (closing
 * one frees the other's reader slots). */
static void test_readonly_maps_the_file_not_the_recorded_map(void **state)
{
	struct fx *f = *state;
	struct wal *r = reader_of_one_batch(f, 4ULL << 30); /* recorded in the file: 4 GiB */
	struct wal_stat ws;
	assert_int_equal(wal_stat(r, &ws), 0);
	assert_true(ws.map_size <= 66ULL << 20);

	/* the backup's own read transaction meets the grown file first */
	append_in_child(f->dir, 4ULL << 30, 1, 80, 1 << 20);
	char dst[600], why[600];
	snprintf(dst, sizeof(dst), "%.*s/backup-grown", (int)(strlen(f->dir) - 2), f->dir);
	struct wal_backup_stat bst;
	assert_int_equal(wal_backup(r, dst, &bst, why, sizeof(why)), 0);
	assert_true(bst.bytes >= 80ULL << 20);

	/* and then a view's */
	append_in_child(f->dir, 4ULL << 30, 81, 80, 1 << 20);
	expect_grown(r, 161, 159, 2, 160, 1 << 20);
	assert_int_equal(wal_stat(r, &ws), 0);
	assert_true(ws.map_size >= 160ULL << 20);
	assert_true(ws.map_size < 1ULL << 30);
	wal_close(r);
}

/* A process killed inside a read transaction leaves its reader slot;
 * wal_reader_check frees it. */
static void test_reader_check(void **state)
{
	struct fx *f = *state;
	int a, cleared = -1;
	open_default(f, 0);
	assert_int_equal(wal_backend_open(f->w, "a", &a), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		MDB_env *env;
		MDB_txn *txn;
		if (mdb_env_create(&env) || mdb_env_set_maxdbs(env, 8) || mdb_env_open(env, f->dir, MDB_RDONLY, 0600) ||
		    mdb_txn_begin(env, NULL, MDB_RDONLY, &txn))
			_exit(1);
		kill(getpid(), SIGKILL); /* dies holding the read transaction */
		_exit(2);
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFSIGNALED(status));
	assert_int_equal(wal_reader_check(f->w, &cleared), 0);
	assert_int_equal(cleared, 1);
	assert_int_equal(wal_reader_check(f->w, &cleared), 0);
	assert_int_equal(cleared, 0);
}

static void *stat_in_new_thread(void *arg)
{
	struct fx *f = arg;
	struct wal_backend_stat st;
	return (void *)(intptr_t)wal_backend_stat(f->w, "a", &st);
}

/* So many processes died inside a read transaction that the reader table
 * is full: a new reader (a thread without a slot yet) still gets in. */
static void test_reader_table_full_of_dead_readers(void **state)
{
	struct fx *f = *state;
	int a;
	open_default(f, 0);
	assert_int_equal(wal_backend_open(f->w, "a", &a), 0);
	int full = 0;
	for (int i = 0; i < 140 && !full; i++) {
		pid_t pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			MDB_env *env;
			MDB_txn *txn;
			if (mdb_env_create(&env) || mdb_env_set_maxdbs(env, 8) ||
			    mdb_env_open(env, f->dir, MDB_RDONLY, 0600))
				_exit(1);
			if (mdb_txn_begin(env, NULL, MDB_RDONLY, &txn))
				_exit(3); /* the table is full */
			kill(getpid(), SIGKILL);
			_exit(2);
		}
		int status;
		assert_int_equal(waitpid(pid, &status, 0), pid);
		full = WIFEXITED(status) && WEXITSTATUS(status) == 3;
	}
	assert_true(full);
	pthread_t th;
	void *ret;
	assert_int_equal(pthread_create(&th, NULL, stat_in_new_thread, f), 0);
	assert_int_equal(pthread_join(th, &ret), 0);
	assert_int_equal((int)(intptr_t)ret, 0);
}

/*---- operator actions ----*/

static void test_pause_flag(void **state)
{
	struct fx *f = *state;
	int a, b;
	open_default(f, 0);
	assert_int_equal(wal_backend_open(f->w, "a", &a), 0);
	assert_int_equal(wal_backend_open(f->w, "b", &b), 0);
	struct wal_backend_stat st;
	assert_int_equal(wal_backend_stat(f->w, "a", &st), 0);
	assert_false(st.paused);
	assert_int_equal(wal_backend_set_paused(f->w, a, 1), 0);
	assert_int_equal(wal_backend_set_paused(f->w, a, 1), 0); /* idempotent */
	assert_int_equal(wal_backend_stat(f->w, "a", &st), 0);
	assert_true(st.paused);
	assert_int_equal(st.flags & WAL_BACKEND_PAUSED, WAL_BACKEND_PAUSED);
	assert_int_equal(wal_backend_stat(f->w, "b", &st), 0);
	assert_false(st.paused);
	/* the queue keeps filling and acks keep the flag */
	struct wal_batch in = mk("m v=1 1\n", (1ULL << a) | (1ULL << b), 1);
	assert_int_equal(wal_append(f->w, &in, 1, 1), 0);
	assert_int_equal(wal_ack(f->w, a, 1, 2), 0);
	/* survives a restart */
	wal_close(f->w);
	f->w = NULL;
	open_default(f, 0);
	assert_int_equal(wal_backend_open(f->w, "a", &a), 0);
	assert_int_equal(wal_backend_stat(f->w, "a", &st), 0);
	assert_true(st.paused);
	assert_int_equal(st.delivered_batches, 1);
	assert_int_equal(wal_backend_set_paused(f->w, a, 0), 0);
	assert_int_equal(wal_backend_stat(f->w, "a", &st), 0);
	assert_false(st.paused);
	/* read-only handles cannot change it */
	struct wal *r;
	struct wal_options ro = { 0, WAL_F_RDONLY };
	assert_int_equal(wal_open(f->dir, &ro, &r), 0);
	int ra;
	assert_int_equal(wal_backend_open(r, "a", &ra), 0);
	assert_int_equal(wal_backend_set_paused(r, ra, 1), WAL_EINVAL);
	wal_close(r);
}

static void test_purge(void **state)
{
	struct fx *f = *state;
	int a, b;
	open_default(f, 0);
	assert_int_equal(wal_backend_open(f->w, "a", &a), 0);
	assert_int_equal(wal_backend_open(f->w, "b", &b), 0);
	uint64_t both = (1ULL << a) | (1ULL << b);
	struct wal_batch in[5] = { mk("x v=1 1\n", 1ULL << a, 1), mk("x v=2 2\nx v=3 3\n", both, 2),
				   mk("x v=4 4\n", 1ULL << a, 3), mk("x v=5 5\n", 1ULL << b, 4),
				   mk("x v=6 6\n", 1ULL << a, 5) };
	assert_int_equal(wal_append(f->w, in, 5, 10), 0);
	/* the worker delivered 1 and holds 2..5 in memory */
	assert_int_equal(wal_ack(f->w, a, 1, 11), 0);
	struct wal_batch held[8];
	size_t n;
	assert_int_equal(wal_read(f->w, a, 2, 8, 1 << 20, held, &n), 0);
	assert_int_equal(n, 3);

	struct wal_count c;
	assert_int_equal(wal_purge(f->w, a, &c), 0);
	assert_int_equal(c.batches, 3); /* 2, 3, 5 */
	assert_int_equal(c.points, 4);
	assert_int_equal(c.bytes, in[1].body_len + in[2].body_len + in[4].body_len);
	struct wal_backend_stat st;
	assert_int_equal(wal_backend_stat(f->w, "a", &st), 0);
	assert_int_equal(st.pending_batches, 0);
	assert_int_equal(st.pending_points, 0);
	assert_int_equal(st.pending_bytes, 0);
	assert_int_equal(st.cursor, 6);
	assert_int_equal(st.delivered_batches, 1); /* purged is not delivered */
	assert_int_equal(st.oldest_accept_ns, 0);
	/* b is untouched; the log keeps what b needs: 2 and 4 (and 3, between
	 * them: the log stays a suffix) */
	assert_int_equal(wal_backend_stat(f->w, "b", &st), 0);
	assert_int_equal(st.pending_batches, 2);
	struct wal_stat ws;
	assert_int_equal(wal_stat(f->w, &ws), 0);
	assert_int_equal(ws.batches, 4);

	/* the worker's late operations on what it held are harmless */
	assert_int_equal(wal_ack(f->w, a, 3, 12), 0);
	assert_int_equal(wal_dead_letter(f->w, a, 5, NULL, 0, 0, 400, "bad", 1, 13, 1), 0);
	assert_int_equal(wal_dead_letter(f->w, a, 2, "x v=2 2\n", 8, 1, 413, "big", 1, 13, 0), 0);
	assert_int_equal(wal_backend_stat(f->w, "a", &st), 0);
	assert_int_equal(st.pending_batches, 0);
	assert_int_equal(st.dead_batches, 0);
	assert_int_equal(st.delivered_batches, 1);
	assert_int_equal(st.cursor, 6);
	/* ... and its next read, from its old position, starts at the cursor */
	for (size_t i = 0; i < n; i++)
		wal_batch_release(&held[i]);
	assert_int_equal(wal_read(f->w, a, 2, 8, 1 << 20, held, &n), 0);
	assert_int_equal(n, 0);
	struct wal_batch later = mk("x v=7 7\n", both, 6);
	assert_int_equal(wal_append(f->w, &later, 1, 14), 0);
	assert_int_equal(wal_read(f->w, a, 2, 8, 1 << 20, held, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(held[0].seq, 6);
	wal_batch_release(&held[0]);

	/* b purged too: everything is gone from the log */
	assert_int_equal(wal_purge(f->w, b, &c), 0);
	assert_int_equal(c.batches, 3);
	assert_int_equal(wal_purge(f->w, a, &c), 0);
	assert_int_equal(c.batches, 1);
	assert_int_equal(wal_stat(f->w, &ws), 0);
	assert_int_equal(ws.batches, 0);
	/* nothing pending: a no-op */
	assert_int_equal(wal_purge(f->w, a, &c), 0);
	assert_int_equal(c.batches, 0);
	assert_int_equal(count_problems(f->w), 0);
}

static void test_peek_and_get(void **state)
{
	struct fx *f = *state;
	int a, b;
	open_default(f, 0);
	assert_int_equal(wal_backend_open(f->w, "a", &a), 0);
	assert_int_equal(wal_backend_open(f->w, "b", &b), 0);
	struct wal_batch in[3] = { mk("x v=1 1\n", 1ULL << a, 100), mk("x v=2 2\nx v=3 3\n", 1ULL << b, 200),
				   mk("x v=4 4\n", 1ULL << a, 300) };
	in[2].precision = 3;
	in[2].rp = "";
	assert_int_equal(wal_append(f->w, in, 3, 10), 0);
	struct wal_batch out[4];
	size_t n;
	assert_int_equal(wal_peek(f->w, a, 0, 4, out, &n), 0);
	assert_int_equal(n, 2);
	assert_int_equal(out[0].seq, 1);
	assert_null(out[0].body);
	assert_int_equal(out[0].body_len, in[0].body_len);
	assert_int_equal(out[0].lines, 1);
	assert_int_equal(out[0].accept_ns, 100);
	assert_string_equal(out[0].db, "db0");
	assert_int_equal(out[1].seq, 3);
	assert_int_equal(out[1].precision, 3);
	assert_string_equal(out[1].rp, "");
	wal_batch_release(&out[0]);
	wal_batch_release(&out[1]);
	assert_int_equal(wal_peek(f->w, a, 0, 1, out, &n), 0);
	assert_int_equal(n, 1);
	wal_batch_release(&out[0]);

	struct wal_batch g;
	assert_int_equal(wal_get(f->w, a, 3, &g), 0);
	assert_int_equal(g.seq, 3);
	assert_string_equal(g.body, "x v=4 4\n");
	assert_string_equal(g.password, "s3cret");
	wal_batch_release(&g);
	assert_int_equal(wal_get(f->w, a, 2, &g), WAL_ENOTFOUND); /* b's */
	assert_int_equal(wal_get(f->w, a, 9, &g), WAL_ENOTFOUND);
	assert_int_equal(wal_ack(f->w, a, 1, 11), 0);
	assert_int_equal(wal_get(f->w, a, 1, &g), WAL_ENOTFOUND); /* delivered */
	assert_int_equal(wal_get(f->w, b, 2, &g), 0);
	assert_int_equal(g.lines, 2);
	wal_batch_release(&g);
}

/* Three dead letters for a (seqs 1, 3, 4), one for b (seq 2). */
static void make_dead(struct fx *f, int *a, int *b)
{
	open_default(f, 0);
	assert_int_equal(wal_backend_open(f->w, "a", a), 0);
	assert_int_equal(wal_backend_open(f->w, "b", b), 0);
	uint64_t both = (1ULL << *a) | (1ULL << *b);
	struct wal_batch in[5] = { mk("x v=1 1\n", 1ULL << *a, 1), mk("x v=2 2\n", 1ULL << *b, 2),
				   mk("x v=3 3\nx v=33 33\n", both, 3), mk("x v=4 4\n", 1ULL << *a, 4),
				   mk("x v=5 5\n", 1ULL << *a, 5) };
	in[2].token = "tok";
	assert_int_equal(wal_append(f->w, in, 5, 10), 0);
	assert_int_equal(wal_dead_letter(f->w, *a, 1, NULL, 0, 0, 400, "unable to parse", 1, 1001, 1), 0);
	assert_int_equal(wal_dead_letter(f->w, *b, 2, NULL, 0, 0, 400, "field type conflict", 2, 1002, 1), 0);
	assert_int_equal(wal_dead_letter(f->w, *a, 3, NULL, 0, 0, 500, "retention policy not found: x", 3, 1003, 1), 0);
	assert_int_equal(wal_dead_letter(f->w, *a, 4, NULL, 0, 0, 400, "partial write", 4, 1004, 1), 0);
}

static void test_dead_list_and_get(void **state)
{
	struct fx *f = *state;
	int a, b;
	make_dead(f, &a, &b);
	struct wal_dead d[8];
	size_t n;
	assert_int_equal(wal_dead_list(f->w, a, 0, 8, 0, d, &n), 0);
	assert_int_equal(n, 3);
	assert_int_equal(d[0].batch.seq, 1);
	assert_int_equal(d[1].batch.seq, 3);
	assert_int_equal(d[2].batch.seq, 4);
	assert_null(d[1].batch.body);
	assert_int_equal(d[1].bytes, strlen("x v=3 3\nx v=33 33\n"));
	assert_int_equal(d[1].batch.lines, 2);
	assert_int_equal(d[1].status, 500);
	assert_int_equal(d[1].attempts, 3);
	assert_int_equal(d[1].dead_ns, 1003);
	assert_string_equal(d[1].msg, "retention policy not found: x");
	assert_string_equal(d[1].batch.token, "tok");
	assert_int_equal(d[1].batch.route, 1ULL << a);
	for (size_t i = 0; i < n; i++)
		wal_dead_release(&d[i]);
	/* paging: from a sequence, a byte budget (at least one) */
	assert_int_equal(wal_dead_list(f->w, a, 2, 8, 1, d, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(d[0].batch.seq, 3);
	assert_string_equal(d[0].batch.body, "x v=3 3\nx v=33 33\n");
	wal_dead_release(&d[0]);
	assert_int_equal(wal_dead_list(f->w, b, 0, 8, 1 << 20, d, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(d[0].batch.seq, 2);
	assert_string_equal(d[0].batch.body, "x v=2 2\n");
	wal_dead_release(&d[0]);
	struct wal_dead one;
	assert_int_equal(wal_dead_get(f->w, a, 4, &one), 0);
	assert_string_equal(one.batch.body, "x v=4 4\n");
	assert_string_equal(one.msg, "partial write");
	wal_dead_release(&one);
	assert_int_equal(wal_dead_get(f->w, a, 2, &one), WAL_ENOTFOUND);
	assert_int_equal(count_problems(f->w), 0);
}

static void test_dead_drop(void **state)
{
	struct fx *f = *state;
	int a, b;
	make_dead(f, &a, &b);
	struct wal_count c;
	uint64_t missing = 0;
	uint64_t seqs[] = { 3, 7 };
	/* one missing: nothing dropped */
	assert_int_equal(wal_dead_drop(f->w, a, seqs, 2, &c, &missing), WAL_ENOTFOUND);
	assert_int_equal(missing, 7);
	struct wal_backend_stat st;
	assert_int_equal(wal_backend_stat(f->w, "a", &st), 0);
	assert_int_equal(st.dead_batches, 3);
	assert_int_equal(wal_dead_drop(f->w, a, seqs, 1, &c, &missing), 0);
	assert_int_equal(c.batches, 1);
	assert_int_equal(c.points, 2);
	assert_int_equal(wal_backend_stat(f->w, "a", &st), 0);
	assert_int_equal(st.dead_batches, 2);
	assert_int_equal(st.dead_bytes, 16);
	/* the first one, then all the rest */
	assert_int_equal(wal_dead_drop(f->w, a, NULL, 1, &c, NULL), 0);
	assert_int_equal(c.batches, 1);
	struct wal_dead d;
	assert_int_equal(wal_dead_get(f->w, a, 1, &d), WAL_ENOTFOUND);
	assert_int_equal(wal_dead_drop(f->w, a, NULL, 0, &c, NULL), 0);
	assert_int_equal(c.batches, 1);
	assert_int_equal(wal_dead_drop(f->w, a, NULL, 0, &c, NULL), 0);
	assert_int_equal(c.batches, 0);
	assert_int_equal(wal_backend_stat(f->w, "a", &st), 0);
	assert_int_equal(st.dead_batches, 0);
	assert_int_equal(st.dead_bytes, 0);
	/* b's stays */
	assert_int_equal(wal_backend_stat(f->w, "b", &st), 0);
	assert_int_equal(st.dead_batches, 1);
	assert_int_equal(count_problems(f->w), 0);
}

static void test_dead_requeue(void **state)
{
	struct fx *f = *state;
	int a, b;
	make_dead(f, &a, &b);
	struct wal_backend_stat st, stb0, stb;
	assert_int_equal(wal_backend_stat(f->w, "a", &st), 0);
	assert_int_equal(st.pending_batches, 1); /* 5 */
	assert_int_equal(wal_backend_stat(f->w, "b", &stb0), 0);
	struct wal_count c;
	uint64_t seq3 = 3;
	assert_int_equal(wal_dead_requeue(f->w, a, &seq3, 1, 5000, &c, NULL), 0);
	assert_int_equal(c.batches, 1);
	assert_int_equal(c.points, 2);
	assert_int_equal(wal_backend_stat(f->w, "a", &st), 0);
	assert_int_equal(st.pending_batches, 2);
	assert_int_equal(st.pending_points, 3);
	assert_int_equal(st.dead_batches, 2);
	/* at the end of the log, for a only, accepted now, unchanged otherwise */
	struct wal_batch out[4];
	size_t n;
	assert_int_equal(wal_read(f->w, a, 0, 4, 1 << 20, out, &n), 0);
	assert_int_equal(n, 2);
	assert_int_equal(out[0].seq, 5);
	assert_int_equal(out[1].seq, 6);
	assert_int_equal(out[1].route, 1ULL << a);
	assert_int_equal(out[1].accept_ns, 5000);
	assert_string_equal(out[1].body, "x v=3 3\nx v=33 33\n");
	assert_string_equal(out[1].token, "tok");
	assert_string_equal(out[1].user, "alice");
	wal_batch_release(&out[0]);
	wal_batch_release(&out[1]);
	assert_int_equal(wal_backend_stat(f->w, "b", &stb), 0);
	assert_int_equal(stb.pending_batches, stb0.pending_batches);
	struct wal_dead d;
	assert_int_equal(wal_dead_get(f->w, a, 3, &d), WAL_ENOTFOUND);
	/* all the rest, in sequence order */
	assert_int_equal(wal_dead_requeue(f->w, a, NULL, 0, 6000, &c, NULL), 0);
	assert_int_equal(c.batches, 2);
	assert_int_equal(wal_read(f->w, a, 7, 4, 1 << 20, out, &n), 0);
	assert_int_equal(n, 2);
	assert_string_equal(out[0].body, "x v=1 1\n");
	assert_string_equal(out[1].body, "x v=4 4\n");
	wal_batch_release(&out[0]);
	wal_batch_release(&out[1]);
	assert_int_equal(wal_backend_stat(f->w, "a", &st), 0);
	assert_int_equal(st.dead_batches, 0);
	assert_int_equal(st.pending_batches, 4);
	struct wal_stat ws;
	assert_int_equal(wal_stat(f->w, &ws), 0);
	assert_int_equal(ws.next_seq, 9);
	/* delivering them (and b its batch 3) empties the log */
	assert_int_equal(wal_ack(f->w, a, 8, 7000), 0);
	assert_int_equal(wal_stat(f->w, &ws), 0);
	assert_int_equal(ws.batches, 6); /* 3 is still b's: the log stays a suffix */
	assert_int_equal(wal_ack(f->w, b, 3, 7000), 0);
	assert_int_equal(wal_stat(f->w, &ws), 0);
	assert_int_equal(ws.batches, 0);
	uint64_t none = 1, missing = 0;
	assert_int_equal(wal_dead_requeue(f->w, a, &none, 1, 1, &c, &missing), WAL_ENOTFOUND);
	assert_int_equal(missing, 1);
	assert_int_equal(count_problems(f->w), 0);
}

/* Two bad lines of one batch isolated by 413 splits: one record, both
 * lines, exact counters. */
static void test_dead_letter_parts_merge(void **state)
{
	struct fx *f = *state;
	int a;
	open_default(f, 0);
	assert_int_equal(wal_backend_open(f->w, "a", &a), 0);
	struct wal_batch in = mk("x v=1 1\nx v=2 2\nx v=3 3\n", 1, 1);
	assert_int_equal(wal_append(f->w, &in, 1, 1), 0);
	assert_int_equal(wal_dead_letter(f->w, a, 1, "x v=1 1\n", 8, 1, 413, "first", 1, 10, 0), 0);
	assert_int_equal(wal_dead_letter(f->w, a, 1, "x v=3 3\n", 8, 1, 413, "second", 2, 20, 0), 0);
	struct wal_backend_stat st;
	assert_int_equal(wal_backend_stat(f->w, "a", &st), 0);
	assert_int_equal(st.dead_batches, 1);
	assert_int_equal(st.dead_bytes, 16);
	struct wal_dead d;
	assert_int_equal(wal_dead_get(f->w, a, 1, &d), 0);
	assert_string_equal(d.batch.body, "x v=1 1\nx v=3 3\n");
	assert_int_equal(d.batch.lines, 2);
	assert_string_equal(d.msg, "second");
	assert_int_equal(d.attempts, 2);
	wal_dead_release(&d);
	assert_int_equal(count_problems(f->w), 0);
}

/*---- verify ----*/

struct seen {
	int n;
	char text[4096];
};

static void note_problem(void *arg, const char *text)
{
	struct seen *s = arg;
	s->n++;
	size_t l = strlen(s->text);
	snprintf(s->text + l, sizeof(s->text) - l, "%s\n", text);
}

static int count_problems(struct wal *w)
{
	struct seen s = { 0, "" };
	int rc = wal_verify(w, note_problem, &s, NULL);
	if (rc != s.n)
		fprintf(stderr, "verify returned %d, described %d\n", rc, s.n);
	if (rc)
		fprintf(stderr, "verify: %s", s.text);
	return rc;
}

/* Edit the store with LMDB directly, as damage would. */
static void raw_edit(const char *dir, const char *dbname, const void *key, size_t klen, const void *val, size_t vlen)
{
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	assert_int_equal(mdb_env_create(&env), 0);
	mdb_env_set_maxdbs(env, 8);
	assert_int_equal(mdb_env_open(env, dir, 0, 0600), 0);
	assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
	assert_int_equal(mdb_dbi_open(txn, dbname, 0, &dbi), 0);
	MDB_val k = { klen, (void *)key }, v = { vlen, (void *)val };
	assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
	assert_int_equal(mdb_txn_commit(txn), 0);
	mdb_env_close(env);
}

static void test_verify(void **state)
{
	struct fx *f = *state;
	int a, b;
	make_dead(f, &a, &b);
	struct wal_verify_stat vs;
	struct seen s = { 0, "" };
	assert_int_equal(wal_verify(f->w, note_problem, &s, &vs), 0);
	assert_int_equal(s.n, 0);
	assert_int_equal(vs.backends, 2);
	assert_int_equal(vs.dead, 4);
	assert_int_equal(vs.batches, 3); /* 3 (b's), 4 (behind it), 5 */
	wal_close(f->w);
	f->w = NULL;

	/* a truncated batch record, a batch with an empty route */
	unsigned char k5[8], k9[8];
	walr_seq_encode(5, k5);
	walr_seq_encode(3, k9);
	raw_edit(f->dir, "batches", k5, 8, "garbage", 7);
	struct wal_batch eb = mk("x v=9 9\n", 0, 1);
	size_t sz = walr_batch_size(&eb);
	unsigned char *buf = malloc(sz);
	walr_batch_encode(&eb, buf);
	raw_edit(f->dir, "batches", k9, 8, buf, sz);
	/* a batch with a precision code the format does not have */
	unsigned char k4[8];
	walr_seq_encode(4, k4);
	struct wal_batch pb = mk("x v=4 4\n", 1ULL << a, 4);
	pb.precision = 9;
	assert_int_equal(walr_batch_size(&pb), sz);
	walr_batch_encode(&pb, buf);
	raw_edit(f->dir, "batches", k4, 8, buf, sz);
	free(buf);
	/* a backend whose cursor is past the log and whose counters lie */
	struct walr_backend r;
	memset(&r, 0, sizeof(r));
	r.id = (uint32_t)b;
	r.cursor = 99;
	r.pending_batches = 7;
	r.dead_batches = 1;
	r.dead_bytes = 8;
	unsigned char rb[WALR_BACKEND_SIZE];
	walr_backend_encode(&r, rb);
	raw_edit(f->dir, "backends", "b", 1, rb, sizeof(rb));
	/* a dead letter that does not decode */
	unsigned char dk[9] = { (unsigned char)a, 0, 0, 0, 0, 0, 0, 0, 4 };
	raw_edit(f->dir, "dead", dk, 9, "xx", 2);

	struct wal_options ro = { 0, WAL_F_RDONLY };
	assert_int_equal(wal_open(f->dir, &ro, &f->w), 0);
	memset(&s, 0, sizeof(s));
	int rc = wal_verify(f->w, note_problem, &s, &vs);
	assert_int_equal(rc, s.n);
	assert_non_null(strstr(s.text, "batch 5: corrupt, record of 7 bytes is shorter than its 48-byte header"));
	assert_non_null(strstr(s.text, "batch 3: empty route"));
	assert_non_null(strstr(s.text, "batch 4: precision code 9 is not one of the format's"));
	assert_non_null(strstr(s.text, "backend 'b': cursor 99 is outside the log"));
	assert_non_null(strstr(s.text, "backend 'b': counters say 7 batches"));
	assert_non_null(strstr(s.text, "dead letter 4 is corrupt: the dead-letter record does not decode"));
	assert_non_null(strstr(s.text, "backend 'a': counters say 3 dead letters"));
	assert_true(rc >= 6);
}

static void test_record_roundtrip(void **state)
{
	(void)state;
	struct wal_batch b = mk("a b=1 2\n", 0x8000000000000001ULL, 5);
	b.org = "org";
	b.token = "tok";
	b.precision = 3;
	size_t n = walr_batch_size(&b);
	unsigned char *buf = malloc(n);
	walr_batch_encode(&b, buf);
	struct wal_batch d;
	uint32_t off[WALR_NSTR];
	uint16_t ln[WALR_NSTR];
	size_t body_off;
	assert_int_equal(walr_batch_decode(buf, n, &d, off, ln, &body_off, NULL, 0), 0);
	assert_int_equal(d.route, b.route);
	assert_int_equal(d.accept_ns, 5);
	assert_int_equal(d.precision, 3);
	assert_int_equal(d.lines, 1);
	assert_int_equal(ln[4], 3);
	assert_memory_equal(buf + off[5], "tok", 3);
	assert_memory_equal(buf + body_off, "a b=1 2\n", 8);
	/* a truncated or inflated record is corrupt, never read past */
	assert_int_equal(walr_batch_decode(buf, n - 1, &d, off, ln, &body_off, NULL, 0), WAL_ECORRUPT);
	assert_int_equal(walr_batch_decode(buf, 10, &d, NULL, NULL, NULL, NULL, 0), WAL_ECORRUPT);
	buf[32] = 9;
	assert_int_equal(walr_batch_decode(buf, n, &d, NULL, NULL, NULL, NULL, 0), WAL_ECORRUPT);
	free(buf);
	assert_int_equal(walr_seq_decode((const unsigned char[]){ 0, 0, 0, 0, 0, 0, 1, 2 }), 258);
}

/* Issue 10: a stored time outside 1970..2200 is corruption, refused by the
 * decoders, so that nothing computes "now - t" with an absurd t (signed
 * overflow for t near INT64_MIN). */
static void test_record_time_bounds(void **state)
{
	(void)state;
	static const struct {
		int64_t t;
		int ok;
	} cases[] = {
		{ 0, 1 }, { 1700000000000000000LL, 1 }, { WALR_TIME_MAX_NS, 1 }, { WALR_TIME_MAX_NS + 1, 0 },
		{ INT64_MAX, 0 }, { -1, 0 }, { INT64_MIN, 0 }, { INT64_MIN + 1, 0 },
	};
	/* 2200-01-01T00:00:00Z */
	assert_int_equal(WALR_TIME_MAX_NS, 7258118400LL * 1000000000LL);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct wal_batch b = mk("a b=1 2\n", 1, cases[i].t), d;
		size_t n = walr_batch_size(&b);
		unsigned char *buf = malloc(n);
		walr_batch_encode(&b, buf);
		memset(&d, 0, sizeof(d));
		assert_int_equal(walr_batch_decode(buf, n, &d, NULL, NULL, NULL, NULL, 0), cases[i].ok ? 0 : WAL_ECORRUPT);
		if (cases[i].ok)
			assert_int_equal(d.accept_ns, cases[i].t);
		free(buf);

		/* a dead letter: its own time, and the batch's inside it */
		struct walr_dead dd = { 400, 1, cases[i].t, "bad", 0 }, dg;
		struct wal_batch inner = mk("a b=1 2\n", 1, 5);
		n = walr_dead_size(&dd, &inner);
		buf = malloc(n);
		walr_dead_encode(&dd, &inner, buf);
		size_t ml, boff;
		assert_int_equal(walr_dead_decode(buf, n, &dg, &ml, &boff, NULL, 0), cases[i].ok ? 0 : WAL_ECORRUPT);
		free(buf);
	}
}

/* Rewrite the stored record of batch seq with acceptance time t. */
static void set_stored_time(struct fx *f, uint64_t seq, const char *body, int64_t t)
{
	struct wal_batch b = mk(body, 1, t);
	size_t n = walr_batch_size(&b);
	unsigned char *buf = malloc(n), k[8];
	walr_batch_encode(&b, buf);
	walr_seq_encode(seq, k);
	raw_edit(f->dir, "batches", k, 8, buf, n);
	free(buf);
}

/* The same through the queue: a batch whose stored time is INT64_MIN (or
 * far in the future) is reported as corrupt by every reader, and the age
 * limit's "now - oldest" is never computed with it (under UBSan the old
 * code stopped there with a signed overflow). */
static void test_stored_time_out_of_range(void **state)
{
	struct fx *f = *state;
	int a;
	open_default(f, 0);
	assert_int_equal(wal_backend_open(f->w, "a", &a), 0);
	struct wal_batch b1 = mk("x v=1 1\n", 1, 5000);
	assert_int_equal(wal_append(f->w, &b1, 1, 5000), 0);
	assert_int_equal(b1.result, 0);
	wal_close(f->w);
	f->w = NULL;

	const int64_t bad[] = { INT64_MIN, -1, WALR_TIME_MAX_NS + 1, INT64_MAX };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		set_stored_time(f, b1.seq, "x v=1 1\n", bad[i]);
		open_default(f, 0);
		assert_int_equal(wal_backend_open(f->w, "a", &a), 0);
		assert_int_equal(wal_backend_set_limits(f->w, a, 0, 1000), 0);
		/* The age limit passes over the damaged record (one record must
		 * not stop every append): the new batch is stored. */
		struct wal_batch b2 = mk("x v=2 2\n", 1, 6000);
		assert_int_equal(wal_append(f->w, &b2, 1, 6000), 0);
		assert_int_equal(b2.result, 0);
		struct wal_backend_stat st;
		assert_int_equal(wal_backend_stat(f->w, "a", &st), 0);
		assert_int_equal(st.corrupt_seq, b1.seq);
		assert_int_equal(st.oldest_accept_ns, 6000);
		struct wal_batch out[2];
		size_t got = 9;
		assert_int_equal(wal_read(f->w, a, 0, 2, SIZE_MAX, out, &got), WAL_ECORRUPT);
		assert_int_equal(got, 0);
		assert_int_equal(wal_peek(f->w, a, 0, 2, out, &got), WAL_ECORRUPT);
		assert_int_equal(wal_get(f->w, a, b1.seq, out), WAL_ECORRUPT);
		struct wal_verify_stat vs;
		struct seen s = { 0, "" };
		assert_true(wal_verify(f->w, note_problem, &s, &vs) > 0);
		char want[160];
		snprintf(want, sizeof(want), "batch %" PRIu64 ": corrupt, acceptance time %" PRId64 " ns is outside", b1.seq,
		         bad[i]);
		assert_non_null(strstr(s.text, want));
		wal_close(f->w);
		f->w = NULL;
	}
	/* back in range: readable again, and the age limit works on it */
	set_stored_time(f, b1.seq, "x v=1 1\n", 5000);
	open_default(f, 0);
	assert_int_equal(wal_backend_open(f->w, "a", &a), 0);
	assert_int_equal(wal_backend_set_limits(f->w, a, 0, 1000), 0);
	struct wal_batch b3 = mk("x v=3 3\n", 1, 6001);
	assert_int_equal(wal_append(f->w, &b3, 1, 6001), 0);
	assert_int_equal(b3.result, WAL_EAGE);
}


/* Store raw bytes as batch seq's record. */
static void set_stored_raw(struct fx *f, uint64_t seq, const void *rec, size_t len)
{
	unsigned char k[8];
	walr_seq_encode(seq, k);
	raw_edit(f->dir, "batches", k, 8, rec, len);
}

/* Issue 11: every field of a batch record is checked against what the
 * format and the record's own body allow, with a reason, and nothing
 * outside the record is ever read. */
static void test_record_checks(void **state)
{
	(void)state;
	struct wal_batch b = mk("m f=1 1\nm f=\"a\nb\" 2\n", 1, 5); /* 2 points, 3 newlines: a quoted one */
	b.lines = 2;
	size_t n = walr_batch_size(&b);
	unsigned char *good = malloc(n), *buf = malloc(n);
	walr_batch_encode(&b, good);
	struct wal_batch d;
	char why[200];
	assert_int_equal(walr_batch_decode(good, n, &d, NULL, NULL, NULL, why, sizeof(why)), 0);
	assert_string_equal(why, "");
	/* a precision code outside the format decodes (the delivery side
	 * dead-letters such a batch with its body; verify names it) */
	memcpy(buf, good, n);
	buf[33] = 9;
	walr_batch_seal(buf, n);
	assert_int_equal(walr_batch_decode(buf, n, &d, NULL, NULL, NULL, why, sizeof(why)), 0);
	assert_int_equal(d.precision, 9);
	/* any byte changed without a new checksum: found by the checksum,
	 * before any length in the record is believed */
	for (size_t at = 0; at < n; at++) {
		memcpy(buf, good, n);
		buf[at] ^= 0x20;
		assert_int_equal(walr_batch_decode(buf, n, &d, NULL, NULL, NULL, why, sizeof(why)), WAL_ECORRUPT);
		if (at != 32)
			assert_non_null(strstr(why, "checksum"));
	}
	/* CRC32C's check value, by both ways of computing it, at every
	 * length and alignment, in one go or in pieces */
	assert_int_equal(walr_crc32c(0, "123456789", 9), 0xe3069283);
	assert_int_equal(walr_crc32c_sw(0, "123456789", 9), 0xe3069283);
	unsigned char junk[300];
	for (size_t j = 0; j < sizeof(junk); j++)
		junk[j] = (unsigned char)(j * 131 + 7);
	for (size_t at = 0; at < 9; at++)
		for (size_t len = 0; len + at <= sizeof(junk); len += 7) {
			uint32_t a = walr_crc32c(0, junk + at, len), sw = walr_crc32c_sw(0, junk + at, len);
			assert_int_equal(a, sw);
			assert_int_equal(walr_crc32c(walr_crc32c(0, junk + at, len / 3), junk + at + len / 3, len - len / 3), a);
		}
	/* the fields of a record whose checksum is right all the same (a
	 * hostile file): each still checked */
	static const struct {
		size_t at;
		uint8_t byte;
		const char *why;
	} cases[] = {
		{ 32, 1, "record version 1 (this binary reads 2)" },
		{ 20, 1, "reserved header bytes are not zero" },
		{ 35, 1, "reserved header bytes are not zero" },
		{ 34, 2, "unknown batch kind 2" },
		{ 34, 0xff, "unknown batch kind 255" },
		{ 24, 4, "header says 4 points, the body holds 3 lines" },
		{ 28, 0xff, "string and body lengths add up to" },
		{ 36, 0xff, "string and body lengths add up to" },
		{ 15, 0x80, "acceptance time" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		memcpy(buf, good, n);
		buf[cases[i].at] = cases[i].byte;
		walr_batch_seal(buf, n);
		assert_int_equal(walr_batch_decode(buf, n, &d, NULL, NULL, NULL, why, sizeof(why)), WAL_ECORRUPT);
		assert_non_null(strstr(why, cases[i].why));
	}
	/* lines = 0xffffffff: never trusted as a size */
	memcpy(buf, good, n);
	walr_put_u32(buf + 24, UINT32_MAX);
	walr_batch_seal(buf, n);
	assert_int_equal(walr_batch_decode(buf, n, &d, NULL, NULL, NULL, why, sizeof(why)), WAL_ECORRUPT);
	assert_string_equal(why, "header says 4294967295 points, the body holds 3 lines");
	/* a body without its last newline */
	memcpy(buf, good, n);
	buf[n - 1] = 'x';
	walr_batch_seal(buf, n);
	assert_int_equal(walr_batch_decode(buf, n, &d, NULL, NULL, NULL, why, sizeof(why)), WAL_ECORRUPT);
	assert_string_equal(why, "body does not end with a newline");
	/* every length short of the whole record, from a buffer of exactly
	 * that length (ASan would see a read past it) */
	for (size_t len = 0; len < n; len++) {
		unsigned char *exact = malloc(len ? len : 1);
		memcpy(exact, good, len);
		assert_int_equal(walr_batch_decode(exact, len, &d, NULL, NULL, NULL, why, sizeof(why)), WAL_ECORRUPT);
		assert_true(why[0] != '\0');
		free(exact);
	}
	/* a dead-letter header with unknown flags, or a message past its end */
	struct walr_dead dd = { 400, 1, 5, "msg", 0 }, dg;
	size_t dn = walr_dead_size(&dd, &b), ml, boff;
	unsigned char *db = malloc(dn);
	walr_dead_encode(&dd, &b, db);
	assert_int_equal(walr_dead_decode(db, dn, &dg, &ml, &boff, why, sizeof(why)), 0);
	db[18] = 0x80;
	assert_int_equal(walr_dead_decode(db, dn, &dg, &ml, &boff, why, sizeof(why)), WAL_ECORRUPT);
	db[18] = 0;
	walr_put_u16(db + 16, 60000);
	assert_int_equal(walr_dead_decode(db, dn, &dg, &ml, &boff, why, sizeof(why)), WAL_ECORRUPT);
	assert_non_null(strstr(why, "message of 60000 bytes"));
	free(db);
	free(buf);
	free(good);
}

/* A record of batch seq of route mask `route` with `lines` points stored
 * in place of the original (a corrupt header, the body unchanged). */
static void corrupt_lines(struct fx *f, uint64_t seq, const char *body, uint64_t route, uint32_t lines)
{
	struct wal_batch b = mk(body, route, 5000);
	size_t n = walr_batch_size(&b);
	unsigned char *buf = malloc(n);
	walr_batch_encode(&b, buf);
	walr_put_u32(buf + 24, lines);
	walr_batch_seal(buf, n); /* a hostile record: its checksum right, its count not */
	set_stored_raw(f, seq, buf, n);
	free(buf);
}

/* Issue 11: one corrupt record never stops a queue. wal_read returns the
 * good batches before it, then WAL_ECORRUPT; wal_quarantine moves its
 * raw bytes to the dead-letter queue of every backend that had not
 * passed it, marked corrupt, and takes it out of the log without moving
 * any cursor over a good batch. */
static void test_quarantine(void **state)
{
	struct fx *f = *state;
	int a, b;
	open_default(f, 0);
	assert_int_equal(wal_backend_open(f->w, "a", &a), 0);
	assert_int_equal(wal_backend_open(f->w, "b", &b), 0);
	const char *bodies[5] = { "m v=1 1\n", "m v=2 2\n", "m v=3 3\n", "m v=4 4\n", "m v=5 5\n" };
	for (int i = 0; i < 5; i++) {
		struct wal_batch x = mk(bodies[i], (1ULL << a) | (1ULL << b), 5000);
		assert_int_equal(wal_append(f->w, &x, 1, 5000), 0);
	}
	wal_close(f->w);
	f->w = NULL;
	corrupt_lines(f, 3, bodies[2], (1ULL << a) | (1ULL << b), UINT32_MAX);
	open_default(f, 0);
	assert_int_equal(wal_backend_open(f->w, "a", &a), 0);
	assert_int_equal(wal_backend_open(f->w, "b", &b), 0);

	struct wal_batch out[8];
	size_t got;
	/* the good batches before it, rc 0; then WAL_ECORRUPT, alone */
	assert_int_equal(wal_read(f->w, a, 0, 8, SIZE_MAX, out, &got), 0);
	assert_int_equal(got, 2);
	assert_int_equal(out[1].seq, 2);
	for (size_t i = 0; i < got; i++)
		wal_batch_release(&out[i]);
	assert_int_equal(wal_read(f->w, a, 3, 8, SIZE_MAX, out, &got), WAL_ECORRUPT);
	assert_int_equal(got, 0);
	uint64_t seq = 0;
	char why[200];
	/* from 0 (the cursor) the first record read is batch 1, which decodes:
	 * nothing to find there, nothing to quarantine */
	assert_int_equal(wal_find_corrupt(f->w, a, 0, &seq, why, sizeof(why)), WAL_ENOTFOUND);
	assert_int_equal(wal_quarantine(f->w, a, 1, &seq, why, sizeof(why)), WAL_ENOTFOUND);
	assert_int_equal(wal_find_corrupt(f->w, a, 3, &seq, why, sizeof(why)), 0);
	assert_int_equal(seq, 3);
	assert_string_equal(why, "header says 4294967295 points, the body holds 1 line");
	/* read-only handles cannot quarantine (one environment per process
	 * at a time: LMDB's locks are the process's) */
	wal_close(f->w);
	f->w = NULL;
	struct wal *ro;
	struct wal_options roo = { 0, WAL_F_RDONLY };
	assert_int_equal(wal_open(f->dir, &roo, &ro), 0);
	int ra;
	assert_int_equal(wal_backend_open(ro, "a", &ra), 0);
	assert_int_equal(wal_quarantine(ro, ra, 3, &seq, why, sizeof(why)), WAL_EINVAL);
	wal_close(ro);
	open_default(f, 0);
	assert_int_equal(wal_backend_open(f->w, "a", &a), 0);
	assert_int_equal(wal_backend_open(f->w, "b", &b), 0);
	/* from = 3, as a worker whose read stopped there */
	seq = 0;
	assert_int_equal(wal_quarantine(f->w, a, 3, &seq, why, sizeof(why)), 0);
	assert_int_equal(seq, 3);
	assert_non_null(strstr(why, "4294967295 points"));
	/* the worker of b comes second: already done */
	assert_int_equal(wal_quarantine(f->w, b, 3, &seq, why, sizeof(why)), WAL_ENOTFOUND);
	assert_int_equal(wal_quarantine(f->w, a, 0, &seq, why, sizeof(why)), WAL_ENOTFOUND);

	/* cursors did not move over 1 and 2; the counters are exact */
	struct wal_backend_stat st;
	assert_int_equal(wal_backend_stat(f->w, "a", &st), 0);
	assert_int_equal(st.cursor, 1);
	assert_int_equal(st.pending_batches, 4);
	assert_int_equal(st.pending_points, 4);
	assert_int_equal(st.dead_batches, 1);
	assert_int_equal(st.corrupt_seq, 0);
	assert_int_equal(wal_read(f->w, b, 0, 8, SIZE_MAX, out, &got), 0);
	assert_int_equal(got, 4);
	assert_int_equal(out[2].seq, 4);
	for (size_t i = 0; i < got; i++)
		wal_batch_release(&out[i]);

	/* each backend's dead-letter queue shows it, corrupt, with why and
	 * its raw bytes */
	int ids[2] = { a, b };
	for (int i = 0; i < 2; i++) {
		struct wal_dead d[4];
		assert_int_equal(wal_dead_list(f->w, ids[i], 0, 4, 1 << 20, d, &got), 0);
		assert_int_equal(got, 1);
		assert_int_equal(d[0].batch.seq, 3);
		assert_true(d[0].corrupt);
		assert_non_null(strstr(d[0].msg, "4294967295 points"));
		assert_int_equal(d[0].batch.body_len, WALR_BATCH_HDR + strlen("db0autogenalices3cret") + 8);
		wal_dead_release(&d[0]);
	}
	/* a corrupt dead letter is never requeued; dropped, it is counted */
	struct wal_count c;
	uint64_t missing = 0, three = 3;
	assert_int_equal(wal_dead_requeue(f->w, a, &three, 1, 6000, &c, &missing), WAL_ECORRUPT);
	assert_int_equal(missing, 3);
	assert_int_equal(wal_dead_requeue(f->w, a, NULL, 0, 6000, &c, NULL), 0);
	assert_int_equal(c.batches, 0);
	struct wal_verify_stat vs;
	struct seen sn = { 0, "" };
	assert_int_equal(wal_verify(f->w, note_problem, &sn, &vs), 2);
	assert_non_null(strstr(sn.text, "backend 'a': dead letter 3 is a quarantined batch that did not decode"));
	assert_int_equal(vs.corrupt_dead, 2);
	assert_int_equal(wal_dead_drop(f->w, a, NULL, 0, &c, NULL), 0);
	assert_int_equal(c.corrupt, 1);
	assert_int_equal(wal_dead_drop(f->w, b, &three, 1, &c, NULL), 0);
	assert_int_equal(c.corrupt, 1);
	assert_int_equal(count_problems(f->w), 0);
	assert_int_equal(wal_backend_stat(f->w, "b", &st), 0);
	assert_int_equal(st.dead_batches, 0);
	assert_int_equal(st.dead_bytes, 0);
	/* delivery goes on to the end, and the log empties */
	assert_int_equal(wal_ack(f->w, a, 5, 7000), 0);
	assert_int_equal(wal_ack(f->w, b, 5, 7000), 0);
	struct wal_stat ws;
	assert_int_equal(wal_stat(f->w, &ws), 0);
	assert_int_equal(ws.batches, 0);
}

/* Rewrite every record of the store in dir as format 1 wrote it (the old
 * encoder: record version 1, no checksum) and its format record as 1. */
static void make_v1(const char *dir)
{
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	MDB_cursor *cur;
	MDB_val k, v;
	const char *dbs[2] = { "batches", "dead" };
	assert_int_equal(mdb_env_create(&env), 0);
	mdb_env_set_maxdbs(env, 8);
	assert_int_equal(mdb_env_open(env, dir, 0, 0600), 0);
	assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
	for (int d = 0; d < 2; d++) {
		/* every record copied out first, then put back changed by key */
		unsigned char keys[64][9], *vals[64];
		size_t lens[64], n = 0;
		assert_int_equal(mdb_dbi_open(txn, dbs[d], 0, &dbi), 0);
		assert_int_equal(mdb_cursor_open(txn, dbi, &cur), 0);
		for (int rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
			assert_true(n < 64);
			memcpy(keys[n], k.mv_data, k.mv_size);
			vals[n] = malloc(v.mv_size);
			memcpy(vals[n], v.mv_data, v.mv_size);
			lens[n++] = v.mv_size;
		}
		mdb_cursor_close(cur);
		for (size_t i = 0; i < n; i++) {
			unsigned char *c = vals[i];
			size_t off = d ? WALR_DEAD_HDR + walr_get_u16(c + 16) : 0;
			c[off + 32] = 1;
			walr_put_u32(c + off + 16, 0);
			MDB_val kk = { d ? 9u : 8u, keys[i] }, nv = { lens[i], c };
			assert_int_equal(mdb_put(txn, dbi, &kk, &nv, 0), 0);
			free(c);
		}
	}
	assert_int_equal(mdb_txn_commit(txn), 0);
	mdb_env_close(env);
	set_format_version(dir, 1);
}

/* Issue 11 §3: a store of format 1 (no checksums) is upgraded by relayd's
 * own open, in one transaction: every record rewritten with its checksum,
 * nothing else changed; the views refuse it until then, naming what to
 * do. */
static void test_upgrade_from_format_1(void **state)
{
	struct fx *f = *state;
	int a;
	open_default(f, 0);
	assert_int_equal(wal_backend_open(f->w, "a", &a), 0);
	static char big[6001]; /* a value in an overflow run */
	for (size_t j = 0; j + 8 <= 6000; j += 8)
		memcpy(big + j, "m v=9 9\n", 8);
	for (int i = 0; i < 20; i++) {
		struct wal_batch x = mk(i % 5 == 0 ? big : i % 2 ? "m v=1 1\n" : "m v=2 2\nm v=3 3\n", 1ULL << a, 5000 + i);
		assert_int_equal(wal_append(f->w, &x, 1, 5000), 0);
	}
	assert_int_equal(wal_dead_letter(f->w, a, 1, NULL, 0, 0, 400, "bad", 1, 6000, 1), 0);
	struct wal_batch before[32];
	size_t nb;
	assert_int_equal(wal_read(f->w, a, 0, 32, SIZE_MAX, before, &nb), 0);
	assert_int_equal(nb, 19);
	wal_close(f->w);
	f->w = NULL;
	make_v1(f->dir);
	/* a record that was already damaged stays so (corrupt after the upgrade) */
	set_stored_raw(f, 7, "junk", 4);

	struct wal *ro;
	struct wal_options roo = { 0, WAL_F_RDONLY };
	char why[300];
	assert_int_equal(wal_open_why(f->dir, &roo, &ro, why, sizeof(why)), WAL_EVERSION);
	assert_non_null(strstr(why, "format version 1, of an older relayd"));
	open_default(f, 0);
	uint64_t n = 0;
	assert_int_equal(wal_upgraded_from(f->w, &n), 1);
	assert_int_equal(n, 18 + 1); /* batches 2..20 but the junk 7, and 1 dead letter */
	assert_int_equal(wal_backend_open(f->w, "a", &a), 0);
	struct wal_batch after[32];
	size_t na, i = 0;
	uint64_t from = 0, seq;
	/* the same batches, the junk one quarantined */
	for (;;) {
		int rc = wal_read(f->w, a, from, 32, SIZE_MAX, after + i, &na);
		if (rc == WAL_ECORRUPT) {
			assert_int_equal(wal_quarantine(f->w, a, from, &seq, why, sizeof(why)), 0);
			assert_int_equal(seq, 7);
			continue;
		}
		assert_int_equal(rc, 0);
		if (!na)
			break;
		i += na;
		from = after[i - 1].seq + 1;
	}
	assert_int_equal(i, 18);
	for (size_t j = 0, k = 0; j < nb; j++) {
		if (before[j].seq == 7)
			continue;
		assert_int_equal(after[k].seq, before[j].seq);
		assert_int_equal(after[k].body_len, before[j].body_len);
		assert_memory_equal(after[k].body, before[j].body, before[j].body_len);
		assert_string_equal(after[k].password, before[j].password);
		wal_batch_release(&after[k++]);
	}
	for (size_t j = 0; j < nb; j++)
		wal_batch_release(&before[j]);
	struct wal_dead d;
	assert_int_equal(wal_dead_get(f->w, a, 1, &d), 0);
	assert_false(d.corrupt);
	assert_string_equal(d.msg, "bad");
	wal_dead_release(&d);
	/* reopened: nothing more to upgrade; verify is content */
	wal_close(f->w);
	f->w = NULL;
	open_default(f, 0);
	assert_int_equal(wal_upgraded_from(f->w, NULL), 0);
	struct seen sn = { 0, "" };
	assert_int_equal(wal_verify(f->w, note_problem, &sn, NULL), 1);
	assert_non_null(strstr(sn.text, "dead letter 7 is a quarantined batch"));
}

/* Issue 13: a batch's kind is stored (header byte 34) and read back; a
 * statement travels through the log, the dead-letter queue and a requeue
 * as a statement. */
static void test_kind_round_trip(void **state)
{
	struct fx *f = *state;
	int a;
	open_default(f, 0);
	assert_int_equal(wal_backend_open(f->w, "a", &a), 0);
	struct wal_batch x[3] = { mk("m v=1 1\n", 1ULL << a, 5000), mk("CREATE DATABASE \"x\"\n", 1ULL << a, 5001),
		                  mk("m v=2 2\n", 1ULL << a, 5002) };
	x[1].kind = WAL_KIND_STATEMENT;
	x[1].lines = 0;
	x[1].rp = "";
	assert_int_equal(wal_append(f->w, x, 3, 5000), 0);
	struct wal_batch r[3];
	size_t n;
	assert_int_equal(wal_read(f->w, a, 0, 3, SIZE_MAX, r, &n), 0);
	assert_int_equal(n, 3);
	assert_int_equal(r[0].kind, WAL_KIND_LINES);
	assert_int_equal(r[1].kind, WAL_KIND_STATEMENT);
	assert_int_equal(r[1].lines, 0);
	assert_string_equal(r[1].body, "CREATE DATABASE \"x\"\n");
	assert_int_equal(r[2].kind, WAL_KIND_LINES);
	for (size_t i = 0; i < n; i++)
		wal_batch_release(&r[i]);
	/* the pending figures count a statement as a batch without points */
	struct wal_backend_stat st;
	assert_int_equal(wal_backend_stat(f->w, "a", &st), 0);
	assert_int_equal(st.pending_batches, 3);
	assert_int_equal(st.pending_points, 2);
	/* peek keeps it; the dead-letter queue and a requeue keep it */
	assert_int_equal(wal_peek(f->w, a, 2, 1, r, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(r[0].kind, WAL_KIND_STATEMENT);
	wal_batch_release(&r[0]);
	assert_int_equal(wal_ack(f->w, a, 1, 6000), 0);
	assert_int_equal(wal_dead_letter(f->w, a, 2, NULL, 0, 0, 200, "error parsing query", 1, 6000, 1), 0);
	struct wal_dead d;
	assert_int_equal(wal_dead_get(f->w, a, 2, &d), 0);
	assert_int_equal(d.batch.kind, WAL_KIND_STATEMENT);
	wal_dead_release(&d);
	assert_int_equal(wal_dead_requeue(f->w, a, NULL, 0, 7000, NULL, NULL), 0);
	assert_int_equal(wal_read(f->w, a, 0, 3, SIZE_MAX, r, &n), 0);
	assert_int_equal(n, 2);
	assert_int_equal(r[0].kind, WAL_KIND_LINES);
	assert_int_equal(r[1].kind, WAL_KIND_STATEMENT);
	assert_string_equal(r[1].body, "CREATE DATABASE \"x\"\n");
	for (size_t i = 0; i < n; i++)
		wal_batch_release(&r[i]);
	struct seen sn = { 0, "" };
	assert_int_equal(wal_verify(f->w, note_problem, &sn, NULL), 0);
}

/* Issue 13: a record whose kind byte is not one of the format's is
 * corrupt (what its body is cannot be known): wal_read stops at it and
 * it is quarantined like any other damaged record. */
static void test_kind_unknown_is_corrupt(void **state)
{
	struct fx *f = *state;
	int a;
	open_default(f, 0);
	assert_int_equal(wal_backend_open(f->w, "a", &a), 0);
	for (int i = 0; i < 3; i++) {
		struct wal_batch x = mk("m v=1 1\n", 1ULL << a, 5000);
		assert_int_equal(wal_append(f->w, &x, 1, 5000), 0);
	}
	wal_close(f->w);
	f->w = NULL;
	struct wal_batch b = mk("m v=1 1\n", 1ULL << a, 5000);
	size_t n = walr_batch_size(&b);
	unsigned char *buf = malloc(n);
	walr_batch_encode(&b, buf);
	buf[34] = 7;
	walr_batch_seal(buf, n);
	set_stored_raw(f, 2, buf, n);
	free(buf);
	open_default(f, 0);
	assert_int_equal(wal_backend_open(f->w, "a", &a), 0);
	struct wal_batch r[3];
	size_t got;
	assert_int_equal(wal_read(f->w, a, 0, 3, SIZE_MAX, r, &got), 0);
	assert_int_equal(got, 1);
	wal_batch_release(&r[0]);
	assert_int_equal(wal_read(f->w, a, 2, 3, SIZE_MAX, r, &got), WAL_ECORRUPT);
	struct seen sn = { 0, "" };
	assert_int_equal(wal_verify(f->w, note_problem, &sn, NULL), 1);
	assert_non_null(strstr(sn.text, "unknown batch kind 7"));
	uint64_t seq;
	char why[200];
	assert_int_equal(wal_quarantine(f->w, a, 2, &seq, why, sizeof(why)), 0);
	assert_int_equal(seq, 2);
	assert_non_null(strstr(why, "unknown batch kind 7"));
}

/* Issue 13: a store of format 2 is upgraded to 3 by relayd's own open
 * (the format record alone: its records are format-3 records of kind
 * 0); the views refuse it until then; after it, an older binary would
 * refuse it as newer. */
static void test_upgrade_from_format_2(void **state)
{
	struct fx *f = *state;
	int a;
	open_default(f, 0);
	assert_int_equal(wal_backend_open(f->w, "a", &a), 0);
	for (int i = 0; i < 4; i++) {
		struct wal_batch x = mk(i % 2 ? "m v=1 1\n" : "m v=2 2\nm v=3 3\n", 1ULL << a, 5000 + i);
		assert_int_equal(wal_append(f->w, &x, 1, 5000), 0);
	}
	assert_int_equal(wal_dead_letter(f->w, a, 1, NULL, 0, 0, 400, "bad", 1, 6000, 1), 0);
	wal_close(f->w);
	f->w = NULL;
	set_format_version(f->dir, 2);

	struct wal *ro;
	struct wal_options roo = { 0, WAL_F_RDONLY };
	char why[300];
	assert_int_equal(wal_open_why(f->dir, &roo, &ro, why, sizeof(why)), WAL_EVERSION);
	assert_non_null(strstr(why, "format version 2, of an older relayd"));
	open_default(f, 0);
	uint64_t n = 99;
	assert_int_equal(wal_upgraded_from(f->w, &n), 2);
	assert_int_equal(n, 0);
	struct wal_stat ws;
	assert_int_equal(wal_stat(f->w, &ws), 0);
	assert_int_equal(ws.format_version, 3);
	assert_int_equal(wal_backend_open(f->w, "a", &a), 0);
	struct wal_batch r[4];
	size_t got;
	assert_int_equal(wal_read(f->w, a, 0, 4, SIZE_MAX, r, &got), 0);
	assert_int_equal(got, 3);
	for (size_t i = 0; i < got; i++) {
		assert_int_equal(r[i].kind, WAL_KIND_LINES);
		wal_batch_release(&r[i]);
	}
	struct wal_dead d;
	assert_int_equal(wal_dead_get(f->w, a, 1, &d), 0);
	assert_int_equal(d.batch.kind, WAL_KIND_LINES);
	wal_dead_release(&d);
	struct seen sn = { 0, "" };
	assert_int_equal(wal_verify(f->w, note_problem, &sn, NULL), 0);
	wal_close(f->w);
	f->w = NULL;
	open_default(f, 0);
	assert_int_equal(wal_upgraded_from(f->w, NULL), 0);
	wal_close(f->w);
	f->w = NULL;
	/* the views open it now */
	assert_int_equal(wal_open_why(f->dir, &roo, &ro, why, sizeof(why)), 0);
	wal_close(ro);
}

/* Issue 13: a held database's batches leave the log for that backend
 * (its cursor moves on), are kept in order under their database, count
 * toward the byte limit, survive a reopen, and go when delivered, dead or
 * purged; the totals stay exact all along. */
static void test_held(void **state)
{
	struct fx *f = *state;
	int a, b;
	open_default(f, 0);
	assert_int_equal(wal_backend_open(f->w, "a", &a), 0);
	assert_int_equal(wal_backend_open(f->w, "b", &b), 0);
	const char *dbs[6] = { "x", "live", "x", "live", "x", "y" };
	for (int i = 0; i < 6; i++) {
		struct wal_batch x = mk(i == 4 ? "m v=5 5\nm v=6 6\n" : "m v=1 1\n", (1ULL << a) | (1ULL << b), 5000 + i);
		x.db = dbs[i];
		assert_int_equal(wal_append(f->w, &x, 1, 5000), 0);
	}
	/* a delivered 2, holds x's 1 and 3 (as a worker would: one round each) */
	uint64_t s1 = 1, s3 = 3;
	assert_int_equal(wal_hold(f->w, a, &s1, 1), 0);
	assert_int_equal(wal_hold(f->w, a, &s3, 1), 0);
	struct wal_backend_stat st;
	assert_int_equal(wal_backend_stat(f->w, "a", &st), 0);
	assert_int_equal(st.cursor, 4);
	assert_int_equal(st.pending_batches, 3);
	assert_int_equal(st.delivered_batches, 1); /* batch 2 */
	assert_int_equal(st.held_batches, 2);
	assert_int_equal(st.held_points, 2);
	assert_int_equal(st.held_bytes, 16);
	assert_int_equal(st.oldest_accept_ns, 5003); /* the log's oldest, not the held one's */
	/* b is untouched, and the log keeps what b still needs */
	assert_int_equal(wal_backend_stat(f->w, "b", &st), 0);
	assert_int_equal(st.pending_batches, 6);
	assert_int_equal(st.held_batches, 0);
	uint64_t s5 = 5;
	assert_int_equal(wal_hold(f->w, a, &s5, 1), 0);
	/* held bytes count toward the limit: 16 + 16 held + 8 pending (6) */
	assert_int_equal(wal_backend_set_limits(f->w, a, 45, 0), 0);
	struct wal_batch over = mk("m v=9 9\n", 1ULL << a, 6000);
	assert_int_equal(wal_append(f->w, &over, 1, 6000), 0);
	assert_int_equal(over.result, WAL_ELIMIT);
	assert_int_equal(wal_backend_set_limits(f->w, a, 0, 0), 0);
	/* survives a reopen */
	wal_close(f->w);
	f->w = NULL;
	open_default(f, 0);
	assert_int_equal(wal_backend_open(f->w, "a", &a), 0);
	assert_int_equal(wal_backend_open(f->w, "b", &b), 0);
	struct wal_held *h;
	size_t nh;
	assert_int_equal(wal_held_list(f->w, a, &h, &nh), 0);
	assert_int_equal(nh, 1);
	assert_string_equal(h[0].db, "x");
	assert_int_equal(h[0].batches, 3);
	assert_int_equal(h[0].points, 4);
	assert_int_equal(h[0].bytes, 32);
	assert_int_equal(h[0].oldest_accept_ns, 5000);
	wal_held_free(h, nh);
	/* read in order, by database */
	struct wal_batch r[4];
	size_t n;
	assert_int_equal(wal_held_read(f->w, a, "x", 0, 4, SIZE_MAX, r, &n), 0);
	assert_int_equal(n, 3);
	assert_int_equal(r[0].seq, 1);
	assert_int_equal(r[1].seq, 3);
	assert_int_equal(r[2].seq, 5);
	assert_string_equal(r[2].body, "m v=5 5\nm v=6 6\n");
	for (size_t i = 0; i < n; i++)
		wal_batch_release(&r[i]);
	assert_int_equal(wal_held_read(f->w, a, "y", 0, 4, SIZE_MAX, r, &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(wal_held_read(f->w, a, "x", 0, 4, 1, r, &n), 0);
	assert_int_equal(n, 1); /* at least one, then the byte bound */
	wal_batch_release(&r[0]);
	assert_int_equal(wal_held_read(f->w, a, "x", 2, 4, SIZE_MAX, r, &n), 0);
	assert_int_equal(n, 2); /* from a sequence on: a page after another */
	assert_int_equal(r[0].seq, 3);
	wal_batch_release(&r[0]);
	wal_batch_release(&r[1]);
	struct seen sn = { 0, "" };
	assert_int_equal(wal_verify(f->w, note_problem, &sn, NULL), 0);
	/* 1 and 3 delivered; 5 refused for good */
	assert_int_equal(wal_held_done(f->w, a, "x", 3, 7000), 0);
	assert_int_equal(wal_backend_stat(f->w, "a", &st), 0);
	assert_int_equal(st.held_batches, 1);
	assert_int_equal(st.held_points, 2);
	assert_int_equal(st.delivered_batches, 4); /* 2 and 4 from the log, 1 and 3 held */
	assert_int_equal(wal_held_dead(f->w, a, "x", 5, 400, "unable to parse", 1, 7000), 0);
	assert_int_equal(wal_backend_stat(f->w, "a", &st), 0);
	assert_int_equal(st.held_batches, 0);
	assert_int_equal(st.held_bytes, 0);
	assert_int_equal(st.dead_batches, 1);
	struct wal_dead d;
	assert_int_equal(wal_dead_get(f->w, a, 5, &d), 0);
	assert_string_equal(d.batch.db, "x");
	assert_int_equal(d.batch.lines, 2);
	wal_dead_release(&d);
	assert_int_equal(wal_held_dead(f->w, a, "x", 5, 400, "again", 1, 7000), WAL_ENOTFOUND);
	/* purge drops held batches with the pending ones */
	uint64_t s6 = 6;
	assert_int_equal(wal_hold(f->w, a, &s6, 1), 0);
	struct wal_count dropped;
	assert_int_equal(wal_purge(f->w, a, &dropped), 0);
	assert_int_equal(dropped.batches, 1);
	assert_int_equal(wal_backend_stat(f->w, "a", &st), 0);
	assert_int_equal(st.held_batches + st.pending_batches, 0);
	sn.n = 0;
	sn.text[0] = '\0';
	assert_int_equal(wal_verify(f->w, note_problem, &sn, NULL), 0);
}

/* wal_fail_next: each armed held-store operation fails once, before it
 * touches the store (nothing changes), then works again. */
static void test_fail_next(void **state)
{
	struct fx *f = *state;
	int a;
	open_default(f, 0);
	assert_int_equal(wal_backend_open(f->w, "a", &a), 0);
	for (int i = 0; i < 2; i++) {
		struct wal_batch x = mk("m v=1 1\n", 1ULL << a, 5000 + i);
		x.db = "x";
		assert_int_equal(wal_append(f->w, &x, 1, 5000), 0);
	}
	uint64_t s1 = 1;
	wal_fail_next(f->w, WAL_FAIL_HOLD | WAL_FAIL_HELD_DONE | WAL_FAIL_HELD_LIST, WAL_EFULL);
	assert_int_equal(wal_hold(f->w, a, &s1, 1), WAL_EFULL);
	struct wal_backend_stat st;
	assert_int_equal(wal_backend_stat(f->w, "a", &st), 0);
	assert_int_equal(st.held_batches, 0);
	assert_int_equal(st.pending_batches, 2);
	assert_int_equal(wal_hold(f->w, a, &s1, 1), 0);
	struct wal_held *h;
	size_t nh;
	assert_int_equal(wal_held_list(f->w, a, &h, &nh), WAL_EFULL);
	assert_int_equal(wal_held_list(f->w, a, &h, &nh), 0);
	assert_int_equal(nh, 1);
	wal_held_free(h, nh);
	assert_int_equal(wal_held_done(f->w, a, "x", 1, 6000), WAL_EFULL);
	assert_int_equal(wal_backend_stat(f->w, "a", &st), 0);
	assert_int_equal(st.held_batches, 1);
	assert_int_equal(wal_held_done(f->w, a, "x", 1, 6000), 0);
	/* disarmed */
	wal_fail_next(f->w, WAL_FAIL_HOLD, WAL_EFULL);
	wal_fail_next(f->w, 0, 0);
	uint64_t s2 = 2;
	assert_int_equal(wal_hold(f->w, a, &s2, 1), 0);
	assert_int_equal(wal_backend_stat(f->w, "a", &st), 0);
	assert_int_equal(st.held_batches, 1);
	assert_int_equal(st.pending_batches, 0);
}

/* Issue 11: purge removes what it cannot decode; the log empties. */
static void test_purge_corrupt(void **state)
{
	struct fx *f = *state;
	int a;
	open_default(f, 0);
	assert_int_equal(wal_backend_open(f->w, "a", &a), 0);
	for (int i = 0; i < 3; i++) {
		struct wal_batch x = mk("m v=1 1\n", 1ULL << a, 5000);
		assert_int_equal(wal_append(f->w, &x, 1, 5000), 0);
	}
	wal_close(f->w);
	f->w = NULL;
	set_stored_raw(f, 1, "short", 5);
	set_stored_raw(f, 2, "", 0);
	open_default(f, 0);
	assert_int_equal(wal_backend_open(f->w, "a", &a), 0);
	struct wal_count c;
	assert_int_equal(wal_purge(f->w, a, &c), 0);
	assert_int_equal(c.batches, 1);
	assert_int_equal(c.corrupt, 2);
	struct wal_stat ws;
	assert_int_equal(wal_stat(f->w, &ws), 0);
	assert_int_equal(ws.batches, 0);
	assert_int_equal(count_problems(f->w), 0);
}

/* Copy file src to dst, then let edit change it. */
static void copy_file(const char *src, const char *dst)
{
	char cmd[1400];
	snprintf(cmd, sizeof(cmd), "mkdir -p '%s' && cp '%s/data.mdb' '%s/data.mdb' && rm -f '%s/lock.mdb'", dst, src, dst,
	         dst);
	assert_int_equal(system(cmd), 0);
}

/* Open dir read-only; if that works, read everything a view would. The
 * point is that it returns at all: no SIGBUS, no SIGSEGV, no ASan report. */
static int open_and_walk(const char *dir, char *why, size_t whylen)
{
	struct wal *w;
	struct wal_options ro = { 0, WAL_F_RDONLY };
	int rc = wal_open_why(dir, &ro, &w, why, whylen);
	if (rc)
		return rc;
	char names[WAL_MAX_BACKENDS][WAL_NAME_MAX + 1];
	size_t nn = 0;
	wal_backend_names(w, names, WAL_MAX_BACKENDS, &nn);
	for (size_t i = 0; i < nn; i++) {
		int id;
		struct wal_backend_stat st;
		wal_backend_stat(w, names[i], &st);
		if (wal_backend_open(w, names[i], &id))
			continue;
		struct wal_batch out[16];
		size_t got;
		uint64_t from = 0;
		for (int guard = 0; guard < 1000; guard++) {
			int r = wal_read(w, id, from, 16, SIZE_MAX, out, &got);
			uint64_t s;
			if (r == WAL_ECORRUPT && wal_find_corrupt(w, id, from, &s, NULL, 0) == 0) {
				from = s + 1;
				continue;
			}
			if (r || got == 0)
				break;
			from = out[got - 1].seq + 1;
			for (size_t j = 0; j < got; j++)
				wal_batch_release(&out[j]);
		}
		struct wal_dead d[16];
		if (wal_dead_list(w, id, 0, 16, 1 << 20, d, &got) == 0)
			for (size_t j = 0; j < got; j++)
				wal_dead_release(&d[j]);
	}
	wal_verify(w, NULL, NULL, NULL);
	wal_close(w);
	return 0;
}

/* Issue 11: a damaged data.mdb is refused with a reason before LMDB maps
 * it: cut short at any length, meta pages zeroed, a newer LMDB data
 * version, not LMDB at all; and 64 scribbles of 16 bytes over its pages,
 * 300 times, never make a reader crash (refused, or read with its
 * damaged records reported). */
static void test_damaged_files(void **state)
{
	struct fx *f = *state;
	int a;
	open_default(f, 0);
	assert_int_equal(wal_backend_open(f->w, "a", &a), 0);
	static char body[3000];
	for (size_t i = 0; i + 8 < sizeof(body); i += 8)
		memcpy(body + i, "m v=1 1\n", 8);
	for (int i = 0; i < 50; i++) {
		struct wal_batch x = mk(i % 2 ? body : "m v=1 1\n", 1ULL << a, 5000);
		assert_int_equal(wal_append(f->w, &x, 1, 5000), 0);
	}
	assert_int_equal(wal_dead_letter(f->w, a, 1, NULL, 0, 0, 400, "bad", 1, 5000, 1), 0);
	wal_close(f->w);
	f->w = NULL;
	char src[300], dst[300], path[400], why[300];
	snprintf(src, sizeof(src), "%s", f->dir);
	snprintf(dst, sizeof(dst), "%s.d", f->dir);
	snprintf(path, sizeof(path), "%s/data.mdb", dst);
	struct stat st;
	assert_int_equal(stat(strcat(strcpy(why, src), "/data.mdb"), &st), 0);
	off_t size = st.st_size;
	assert_int_equal(size % 4096, 0);

	/* healthy: opens, nothing to say */
	copy_file(src, dst);
	assert_int_equal(open_and_walk(dst, why, sizeof(why)), 0);

	/* A last page past the end that no tree reaches: LMDB counts a page
	 * taken at the end and freed again in one transaction in its last
	 * page, and never writes it (relayctl said "cut short" on a full
	 * disk). Both meta pages say the file has three pages more: fine. */
	copy_file(src, dst);
	{
		int fd = open(path, O_RDWR);
		for (int mp = 0; mp < 2; mp++) {
			uint64_t last;
			off_t at = (off_t)mp * 4096 + 16 + 120; /* page header, then the meta's last page */
			assert_int_equal(pread(fd, &last, 8, at), 8);
			last += 3;
			assert_int_equal(pwrite(fd, &last, 8, at), 8);
		}
		close(fd);
	}
	if (open_and_walk(dst, why, sizeof(why)) != 0)
		fail_msg("unreached pages past the end: %s", why);

	/* cut short at every page boundary and a few bytes around them */
	for (off_t len = 1; len < size; len += len < 9000 ? 1361 : 4096) {
		copy_file(src, dst);
		assert_int_equal(truncate(path, len), 0);
		int rc = open_and_walk(dst, why, sizeof(why));
		assert_int_equal(rc, WAL_EDAMAGED);
		assert_true(why[0] != '\0');
	}
	copy_file(src, dst);
	assert_int_equal(truncate(path, 8192), 0);
	assert_int_equal(open_and_walk(dst, why, sizeof(why)), WAL_EDAMAGED);
	assert_non_null(strstr(why, "the file was cut short"));

	/* meta pages zeroed: one, then both; a newer LMDB data version */
	static const unsigned char zero[4096];
	for (int m = 0; m < 3; m++) {
		copy_file(src, dst);
		int fd = open(path, O_WRONLY);
		if (m != 1)
			assert_int_equal(pwrite(fd, zero, 4096, 0), 4096);
		if (m != 0)
			assert_int_equal(pwrite(fd, zero, 4096, 4096), 4096);
		close(fd);
		assert_int_equal(open_and_walk(dst, why, sizeof(why)), WAL_EDAMAGED);
		assert_non_null(strstr(why, "is all zeroes"));
	}
	copy_file(src, dst);
	int fd = open(path, O_WRONLY);
	unsigned char v2[4] = { 2, 0, 0, 0 };
	assert_int_equal(pwrite(fd, v2, 4, 16 + 4), 4);
	close(fd);
	assert_int_equal(open_and_walk(dst, why, sizeof(why)), WAL_EVERSION);
	assert_non_null(strstr(why, "LMDB file of data version 2"));

	/* not an LMDB file at all */
	copy_file(src, dst);
	FILE *fp = fopen(path, "w");
	for (int i = 0; i < 3000; i++)
		fputs("this is not a queue\n", fp);
	fclose(fp);
	assert_int_equal(open_and_walk(dst, why, sizeof(why)), WAL_EDAMAGED);
	assert_non_null(strstr(why, "not an LMDB meta page"));

	/* scribbles over the pages after the meta pages */
	unsigned seed = 11;
	int refused = 0, opened = 0;
	for (int round = 0; round < 300; round++) {
		copy_file(src, dst);
		fd = open(path, O_WRONLY);
		for (int i = 0; i < 64; i++) {
			unsigned char junk[16];
			for (int j = 0; j < 16; j++)
				junk[j] = (unsigned char)(rand_r(&seed) >> 7);
			off_t at = 8192 + (off_t)(rand_r(&seed) % (unsigned)(size - 8192 - 16));
			assert_int_equal(pwrite(fd, junk, 16, at), 16);
		}
		close(fd);
		int rc = open_and_walk(dst, why, sizeof(why));
		if (rc)
			refused++;
		else
			opened++;
	}
	fprintf(stderr, "scribbled stores: %d refused, %d opened\n", refused, opened);
	assert_int_equal(refused + opened, 300);
	char cmd[400];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dst);
	assert_int_equal(system(cmd), 0);
}

static void test_strerror(void **state)
{
	(void)state;
	assert_non_null(strstr(wal_strerror(WAL_EFULL), "full"));
	assert_non_null(strstr(wal_strerror(WAL_ELOCKED), "locked"));
	assert_non_null(strstr(wal_strerror(-ENOSPC), "space"));
	assert_non_null(wal_strerror(MDB_PANIC));
	/* LMDB's own codes by name, never "unknown error" */
	assert_non_null(strstr(wal_strerror(MDB_INVALID), "not an LMDB file"));
	assert_non_null(strstr(wal_strerror(WAL_EDAMAGED), "damaged"));
}

/* wal_backup: a copy that opens as a queue holding what the source held,
 * mode 0600, into a new or empty directory only, the source still in use. */
static void test_backup(void **state)
{
	struct fx *f = *state;
	char dst[600], path[700], why[600];
	int a, b;
	open_default(f, 0);
	assert_int_equal(wal_backend_open(f->w, "a", &a), 0);
	assert_int_equal(wal_backend_open(f->w, "b", &b), 0);
	for (int i = 0; i < 50; i++) {
		struct wal_batch x = mk("m v=1 1\nm v=2 2\n", (1ull << a) | (1ull << b), 1000 + i);
		assert_int_equal(wal_append(f->w, &x, 1, 1000 + i), 0);
		assert_int_equal(x.result, 0);
	}
	assert_int_equal(wal_ack(f->w, a, 10, 2000), 0);
	snprintf(dst, sizeof(dst), "%.*s/backup", (int)(strlen(f->dir) - 2), f->dir);
	struct wal_backup_stat st;
	assert_int_equal(wal_backup(f->w, dst, &st, why, sizeof(why)), 0);
	assert_true(st.bytes > 0);
	struct stat sb;
	snprintf(path, sizeof(path), "%s/data.mdb", dst);
	assert_int_equal(stat(path, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0600);
	assert_int_equal((uint64_t)sb.st_size, st.bytes);
	/* The source goes on: what is written after is not in the copy. */
	struct wal_batch later = mk("m v=3 3\n", 1ull << a, 5000);
	assert_int_equal(wal_append(f->w, &later, 1, 5000), 0);
	/* The copy opens as relayd's own store and holds every batch. */
	struct wal *c;
	struct wal_options o = { 0, 0 };
	assert_int_equal(wal_open(dst, &o, &c), 0);
	int ca, cb;
	assert_int_equal(wal_backend_open(c, "a", &ca), 0);
	assert_int_equal(wal_backend_open(c, "b", &cb), 0);
	(void)ca;
	(void)cb;
	struct wal_backend_stat bs;
	assert_int_equal(wal_backend_stat(c, "a", &bs), 0);
	assert_int_equal(bs.pending_batches, 40);
	assert_int_equal(bs.pending_points, 80);
	assert_int_equal(wal_backend_stat(c, "b", &bs), 0);
	assert_int_equal(bs.pending_batches, 50);
	assert_int_equal(count_problems(c), 0);
	wal_close(c);
	/* A non-empty DEST is refused, and nothing in it is touched. */
	assert_int_equal(wal_backup(f->w, dst, &st, why, sizeof(why)), WAL_EINVAL);
	assert_non_null(strstr(why, "is not empty"));
	assert_int_equal(stat(path, &sb), 0);
	/* An empty directory is fine; a missing parent is an error, and
	 * nothing is left behind. */
	snprintf(path, sizeof(path), "%.*s/empty", (int)(strlen(f->dir) - 2), f->dir);
	assert_int_equal(mkdir(path, 0700), 0);
	assert_int_equal(wal_backup(f->w, path, NULL, NULL, 0), 0);
	snprintf(path, sizeof(path), "%.*s/no/such", (int)(strlen(f->dir) - 2), f->dir);
	assert_int_equal(wal_backup(f->w, path, NULL, why, sizeof(why)), -ENOENT);
	assert_non_null(strstr(why, "cannot create"));
	/* A read-only handle (relayctl's) copies too. */
	struct wal *ro;
	struct wal_options roo = { 0, WAL_F_RDONLY };
	assert_int_equal(wal_open(f->dir, &roo, &ro), 0);
	snprintf(path, sizeof(path), "%.*s/fromro", (int)(strlen(f->dir) - 2), f->dir);
	assert_int_equal(wal_backup(ro, path, NULL, NULL, 0), 0);
	wal_close(ro);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_create_modes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_append_order_and_read, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cursors_per_backend, setup, teardown),
		cmocka_unit_test_setup_teardown(test_new_backend_starts_empty, setup, teardown),
		cmocka_unit_test_setup_teardown(test_byte_limit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_age_limit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_too_big_refused_alone, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reopen_keeps_everything, setup, teardown),
		cmocka_unit_test_setup_teardown(test_second_writer_locked, setup, teardown),
		cmocka_unit_test_setup_teardown(test_readonly, setup, teardown),
		cmocka_unit_test_setup_teardown(test_readonly_not_a_queue, setup, teardown),
		cmocka_unit_test_setup_teardown(test_format_version_checked, setup, teardown),
		cmocka_unit_test_setup_teardown(test_map_full_is_clean, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fsync_error_fails_commit_only, setup, teardown),
		cmocka_unit_test_setup_teardown(test_write_error_then_recovery, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dead_letter, setup, teardown),
		cmocka_unit_test_setup_teardown(test_shared_open, setup, teardown),
		cmocka_unit_test_setup_teardown(test_readonly_map_resized, setup, teardown),
		cmocka_unit_test_setup_teardown(test_map_resized_under_concurrent_readers, setup, teardown),
		cmocka_unit_test_setup_teardown(test_readonly_maps_the_file_not_the_recorded_map, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reader_check, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reader_table_full_of_dead_readers, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pause_flag, setup, teardown),
		cmocka_unit_test_setup_teardown(test_purge, setup, teardown),
		cmocka_unit_test_setup_teardown(test_peek_and_get, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dead_list_and_get, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dead_drop, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dead_requeue, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dead_letter_parts_merge, setup, teardown),
		cmocka_unit_test_setup_teardown(test_verify, setup, teardown),
		cmocka_unit_test(test_record_roundtrip),
		cmocka_unit_test(test_record_time_bounds),
		cmocka_unit_test_setup_teardown(test_stored_time_out_of_range, setup, teardown),
		cmocka_unit_test(test_record_checks),
		cmocka_unit_test_setup_teardown(test_quarantine, setup, teardown),
		cmocka_unit_test_setup_teardown(test_purge_corrupt, setup, teardown),
		cmocka_unit_test_setup_teardown(test_upgrade_from_format_1, setup, teardown),
		cmocka_unit_test_setup_teardown(test_upgrade_from_format_2, setup, teardown),
		cmocka_unit_test_setup_teardown(test_kind_round_trip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_kind_unknown_is_corrupt, setup, teardown),
		cmocka_unit_test_setup_teardown(test_held, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fail_next, setup, teardown),
		cmocka_unit_test_setup_teardown(test_damaged_files, setup, teardown),
		cmocka_unit_test_setup_teardown(test_backup, setup, teardown),
		cmocka_unit_test(test_strerror),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
