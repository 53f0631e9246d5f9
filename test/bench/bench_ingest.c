/*
 * bench_ingest: how close relayd's acknowledged write path comes to what the
 * disk allows. For each body size N (lines per request) it measures, in one
 * run:
 *
 *  (A) raw LMDB group commit, the reference: one thread appends records (an
 *      80-byte header like relayd's plus the very N-line body the clients
 *      send) under big-endian u64 keys with MDB_APPEND, K records per
 *      transaction, every commit durable (default flags, fresh environment).
 *  (B) relayd itself, spawned on loopback with one backend that nobody
 *      listens at (so it only queues), driven by C keep-alive connections
 *      that each POST the N-line body to /write and wait for the 204; once
 *      with every line timestamped and once with half of them left for
 *      relayd to stamp.
 *
 * Why (A) is a fair ceiling: a 204 from relayd promises the batch is on
 * disk, so every acknowledged request went through a synced LMDB write
 * transaction, and with C clients each waiting for its answer no commit can
 * hold more than C requests. (A) does just that with the same bytes, flags,
 * key scheme and K = C records per commit, and none of relayd's other work
 * (HTTP, line-protocol validation, copying, the event loop, counters), and
 * its commits are always full. At about two fdatasyncs per commit the fsync
 * dominates both, so the ratio relayd/raw says how much relayd loses to
 * everything else, how full it keeps its commits included (relayd's log
 * line "N batches committed in M commits" is printed under the table).
 *
 * Run by hand, never by ctest. Loopback only; every phase is time-bounded:
 * T seconds per case (or a 2 GiB byte budget for raw LMDB), 10 s for relayd
 * to become ready or to stop, 30 s for any single socket operation.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <lmdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/types.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "relay/util.h"

extern char **environ;

#define MAX_CASES 8                   /* entries of -n */
#define MAX_LINES 500000u             /* ~45 MB per body: under relayd's 64 MiB limit */
#define MAX_CONNS 1024u               /* relayd's default max_connections */
#define MAX_SECONDS 600u
#define RAW_MAP_SIZE (8ULL << 30)     /* never filled: the byte budget stops first */
#define RAW_BYTE_BUDGET (2ULL << 30)  /* most bytes one raw case may write */
#define RAW_HDR_SIZE 80               /* header + db/rp, about what relayd stores */
#define NS_PER_S 1000000000ULL
#define READY_TIMEOUT_NS (10 * NS_PER_S)
#define STOP_TIMEOUT_NS (10 * NS_PER_S)
#define POLL_INTERVAL_NS (50 * 1000000ULL)
#define IO_TIMEOUT_S 30               /* per send/recv: a hung relayd cannot hang us */
#define MAX_HEAD 65536                /* bytes of a response's status line + headers */
#define MAX_RESP_BODY (64u << 20)
#define ERR_BODY_MAX 512              /* bytes of an unexpected response body kept */
#define FSYNC_PROBES 50

/*---- options ----*/

struct options {
	unsigned conns;   /* -c: client connections, and K for raw LMDB */
	unsigned seconds; /* -t: per case */
	unsigned lines[MAX_CASES];
	size_t ncases;
	const char *relayd;
	int run_raw, run_relayd;
	int keep;
};

static void usage(FILE *f)
{
	fprintf(f,
	        "usage: bench_ingest [-c CONNS] [-t SECONDS] [-n LINES[,LINES...]]\n"
	        "                    [--relayd PATH] [--only raw|relayd] [--keep]\n"
	        "  -c CONNS        client connections; also records per raw LMDB commit (16)\n"
	        "  -t SECONDS      duration of each case (5)\n"
	        "  -n LIST         lines per request, comma-separated (1000,5000)\n"
	        "  --relayd PATH   relayd binary to start (./build/bin/relayd)\n"
	        "  --only WHAT     run only the raw LMDB reference or only relayd\n"
	        "  --keep          keep the temporary directory (queue, config, log)\n");
}

static int parse_uint(const char *s, unsigned min, unsigned max, unsigned *out)
{
	char *end;
	errno = 0;
	unsigned long v = strtoul(s, &end, 10);
	if (errno || end == s || *end || *s == '-' || v < min || v > max)
		return -1;
	*out = (unsigned)v;
	return 0;
}

static int parse_lines_list(const char *s, struct options *o)
{
	char *copy = xstrdup(s), *save = NULL;
	int rc = 0;
	o->ncases = 0;
	for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		if (o->ncases == MAX_CASES || parse_uint(tok, 1, MAX_LINES, &o->lines[o->ncases]) < 0) {
			rc = -1;
			break;
		}
		o->ncases++;
	}
	free(copy);
	return rc == 0 && o->ncases > 0 ? 0 : -1;
}

/* Returns 0, or 2 (the exit code) after printing what is wrong. */
static int options_parse(int argc, char **argv, struct options *o)
{
	enum { OPT_RELAYD = 256, OPT_ONLY, OPT_KEEP };
	static const struct option longopts[] = {
		{ "relayd", required_argument, NULL, OPT_RELAYD },
		{ "only", required_argument, NULL, OPT_ONLY },
		{ "keep", no_argument, NULL, OPT_KEEP },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	*o = (struct options){ .conns = 16, .seconds = 5, .lines = { 1000, 5000 }, .ncases = 2,
	                       .relayd = "./build/bin/relayd", .run_raw = 1, .run_relayd = 1 };
	int c;
	while ((c = getopt_long(argc, argv, "c:t:n:h", longopts, NULL)) != -1) {
		switch (c) {
		case 'c':
			if (parse_uint(optarg, 1, MAX_CONNS, &o->conns) < 0) {
				fprintf(stderr, "bench_ingest: -c wants 1..%u, not '%s'\n", MAX_CONNS, optarg);
				return 2;
			}
			break;
		case 't':
			if (parse_uint(optarg, 1, MAX_SECONDS, &o->seconds) < 0) {
				fprintf(stderr, "bench_ingest: -t wants 1..%u seconds, not '%s'\n", MAX_SECONDS, optarg);
				return 2;
			}
			break;
		case 'n':
			if (parse_lines_list(optarg, o) < 0) {
				fprintf(stderr, "bench_ingest: -n wants up to %d counts of 1..%u lines, not '%s'\n",
				        MAX_CASES, MAX_LINES, optarg);
				return 2;
			}
			break;
		case OPT_RELAYD:
			o->relayd = optarg;
			break;
		case OPT_ONLY:
			if (strcmp(optarg, "raw") && strcmp(optarg, "relayd")) {
				fprintf(stderr, "bench_ingest: --only wants raw or relayd, not '%s'\n", optarg);
				return 2;
			}
			o->run_raw = !strcmp(optarg, "raw");
			o->run_relayd = !o->run_raw;
			break;
		case OPT_KEEP:
			o->keep = 1;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "bench_ingest: unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		return 2;
	}
	return 0;
}

/*---- latencies ----*/

/* A growable array of durations in nanoseconds. */
struct lat_vec {
	uint64_t *v;
	size_t n, cap;
};

static void lat_push(struct lat_vec *l, uint64_t ns)
{
	if (l->n == l->cap) {
		l->cap = l->cap ? l->cap * 2 : 1024;
		l->v = xrealloc(l->v, l->cap * sizeof(*l->v));
	}
	l->v[l->n++] = ns;
}

static void lat_append(struct lat_vec *dst, const struct lat_vec *src)
{
	for (size_t i = 0; i < src->n; i++)
		lat_push(dst, src->v[i]);
}

static void lat_release(struct lat_vec *l)
{
	free(l->v);
	*l = (struct lat_vec){ 0 };
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return (x > y) - (x < y);
}

/* Nearest-rank percentile pct (1..100) in milliseconds; sorts l. -1 when empty. */
static double lat_percentile_ms(struct lat_vec *l, unsigned pct)
{
	if (l->n == 0)
		return -1;
	qsort(l->v, l->n, sizeof(*l->v), cmp_u64);
	size_t rank = (l->n * pct + 99) / 100;
	return (double)l->v[rank ? rank - 1 : 0] / 1e6;
}

/*---- bodies and results ----*/

/*
 * Append a line-protocol body of n lines to b, ~85 bytes a line, values
 * varying from line to line. stamp_every = 1 stamps every line, 2 every
 * other one (relayd stamps the rest at acceptance).
 */
static void body_build(struct rbuf *b, unsigned n, unsigned stamp_every)
{
	static const char *const regions[] = { "us-west", "us-east", "eu-west", "ap-south" };
	uint32_t x = 2463534242u; /* xorshift32 state: the same body on every run */
	for (unsigned i = 0; i < n; i++) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		rbuf_appendf(b, "cpu,host=server%02u,region=%s usage_idle=%u.%u,usage_user=%ui",
		             i % 100, regions[i % RELAY_ARRAY_SIZE(regions)], x % 100, (x >> 8) % 10,
		             (x >> 12) % 100);
		if (i % stamp_every == 0)
			rbuf_appendf(b, " %" PRId64, (int64_t)1700000000000000000 + (int64_t)i * 1000000);
		rbuf_appendc(b, '\n');
	}
}

static double body_bytes_per_line(unsigned stamp_every)
{
	struct rbuf b = RBUF_INIT;
	body_build(&b, 1000, stamp_every);
	double per_line = (double)b.len / 1000;
	rbuf_release(&b);
	return per_line;
}

/* One row of the table. A negative number prints as "–". */
struct row {
	char name[40];
	unsigned lines, conns;
	double points_s, requests_s, commits_s, p50_ms, p99_ms;
	int is_raw;
};

/*---- files and machine facts ----*/

/* out = dir/name. Returns 0, or -1 if it does not fit in PATH_MAX. */
static int path_join(char out[PATH_MAX], const char *dir, const char *name)
{
	int n = snprintf(out, PATH_MAX, "%s/%s", dir, name);
	return n < 0 || n >= PATH_MAX ? -1 : 0;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st, (void)flag, (void)ftw;
	if (remove(path) < 0)
		fprintf(stderr, "bench_ingest: cannot remove '%s': %s\n", path, strerror(errno));
	return 0; /* keep going: remove as much as we can */
}

static void remove_tree(const char *dir)
{
	if (nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS) < 0 && errno != ENOENT)
		fprintf(stderr, "bench_ingest: cannot walk '%s': %s\n", dir, strerror(errno));
}

static const char *fs_name(const char *path)
{
	struct statfs sf;
	if (statfs(path, &sf) < 0)
		return "unknown";
	switch ((unsigned long)sf.f_type) {
	case 0xEF53: return "ext2/3/4";
	case 0x58465342: return "xfs";
	case 0x9123683E: return "btrfs";
	case 0x01021994: return "tmpfs (fsync is free here: the numbers mean nothing)";
	case 0x794C7630: return "overlayfs";
	default: return "other";
	}
}

/*
 * Median time of a 4 KiB pwrite + fdatasync in dir, in ms (at most
 * FSYNC_PROBES samples or ~2 s). Returns -1 on error.
 */
static double fdatasync_probe_ms(const char *dir)
{
	char path[PATH_MAX], page[4096];
	if (path_join(path, dir, "fsync-probe") < 0)
		return -1;
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -1;
	memset(page, 'x', sizeof(page));
	struct lat_vec lat = { 0 };
	uint64_t start = now_mono_ns();
	for (int i = 0; i < FSYNC_PROBES && now_mono_ns() - start < 2 * NS_PER_S; i++) {
		uint64_t t0 = now_mono_ns();
		if (pwrite(fd, page, sizeof(page), (off_t)i * (off_t)sizeof(page)) != (ssize_t)sizeof(page) ||
		    fdatasync(fd) < 0)
			break;
		lat_push(&lat, now_mono_ns() - t0);
	}
	double ms = lat_percentile_ms(&lat, 50);
	lat_release(&lat);
	if (close(fd) < 0 || unlink(path) < 0)
		return -1;
	return ms;
}

static void print_machine_facts(const struct options *o, const char *tmp)
{
	struct utsname u;
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	double fsync_ms = fdatasync_probe_ms(tmp);
	printf("# bench_ingest\n\n");
	if (uname(&u) == 0)
		printf("- machine: %s %s %s, %ld CPUs online\n", u.sysname, u.release, u.machine, ncpu);
	else
		printf("- machine: %ld CPUs online\n", ncpu);
	printf("- data in %s (%s)\n", tmp, fs_name(tmp));
	printf("- bodies: %.1f bytes/line with every line stamped, %.1f with half of them\n",
	       body_bytes_per_line(1), body_bytes_per_line(2));
	if (fsync_ms >= 0)
		printf("- one 4 KiB write + fdatasync: %.3f ms (median of up to %d)\n", fsync_ms, FSYNC_PROBES);
	printf("- fsync dominates: every durable LMDB commit costs about two fdatasyncs (data, then\n"
	       "  meta page), so throughput is set by how many records share one commit\n");
	printf("- %u s per case, %u connections (= K records per raw LMDB commit)\n", o->seconds, o->conns);
	if (o->run_relayd)
		printf("- client threads share the CPUs with relayd\n");
	printf("\n");
}

/*---- (A) raw LMDB group commit ----*/

struct raw_case {
	/* in */
	char dir[PATH_MAX];
	const struct rbuf *body;
	unsigned lines, per_commit;
	uint64_t duration_ns, byte_budget;
	/* out */
	uint64_t records, commits, bytes, elapsed_ns;
	struct lat_vec commit_lat;
	int rc;             /* 0 or the failing call's LMDB/errno code */
	const char *failed; /* the failing call */
};

static void put_le(unsigned char *p, uint64_t v, int nbytes)
{
	for (int i = 0; i < nbytes; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static void put_be64(unsigned char *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (unsigned char)(v >> (56 - 8 * i));
}

/* The fixed part of a record: what relayd keeps beside each body. */
static void raw_header_encode(unsigned char *p, uint64_t seq, int64_t accept_ns, uint32_t lines,
                              uint64_t body_len)
{
	memset(p, 0, RAW_HDR_SIZE);
	put_le(p + 0, 1, 4);          /* format version */
	put_le(p + 4, lines, 4);
	put_le(p + 8, seq, 8);
	put_le(p + 16, 1, 8);         /* route mask: backend 0 */
	put_le(p + 24, (uint64_t)accept_ns, 8);
	put_le(p + 32, body_len, 8);
	memcpy(p + 40, "bench", 5);   /* db */
	memcpy(p + 56, "autogen", 7); /* rp */
}

static int raw_open(struct raw_case *rc, MDB_env **env, MDB_dbi *dbi)
{
	MDB_txn *txn;
	int err;
	if ((err = mdb_env_create(env))) {
		rc->failed = "mdb_env_create";
		return err;
	}
	/* Default flags on purpose: no NOSYNC/NOMETASYNC/WRITEMAP, as relayd. */
	if ((err = mdb_env_set_mapsize(*env, RAW_MAP_SIZE)) ||
	    (err = mdb_env_set_maxdbs(*env, 4)) ||
	    (err = mdb_env_open(*env, rc->dir, 0, 0600))) {
		rc->failed = "mdb_env_open";
		goto fail;
	}
	if ((err = mdb_txn_begin(*env, NULL, 0, &txn))) {
		rc->failed = "mdb_txn_begin";
		goto fail;
	}
	if ((err = mdb_dbi_open(txn, "batches", MDB_CREATE, dbi))) {
		mdb_txn_abort(txn);
		rc->failed = "mdb_dbi_open";
		goto fail;
	}
	if ((err = mdb_txn_commit(txn))) {
		rc->failed = "mdb_txn_commit";
		goto fail;
	}
	return 0;
fail:
	mdb_env_close(*env);
	*env = NULL;
	return err;
}

/* One durable transaction of rc->per_commit records starting at *seq. */
static int raw_commit_group(struct raw_case *rc, MDB_env *env, MDB_dbi dbi, uint64_t *seq)
{
	MDB_txn *txn;
	int err = mdb_txn_begin(env, NULL, 0, &txn);
	if (err) {
		rc->failed = "mdb_txn_begin";
		return err;
	}
	int64_t accept_ns = now_realtime_ns();
	for (unsigned k = 0; k < rc->per_commit; k++) {
		unsigned char kb[8];
		put_be64(kb, *seq + k);
		MDB_val key = { sizeof(kb), kb };
		MDB_val val = { RAW_HDR_SIZE + rc->body->len, NULL };
		/* MDB_RESERVE: encode straight into the page, one copy of the body. */
		if ((err = mdb_put(txn, dbi, &key, &val, MDB_APPEND | MDB_RESERVE))) {
			mdb_txn_abort(txn);
			rc->failed = "mdb_put";
			return err;
		}
		raw_header_encode(val.mv_data, *seq + k, accept_ns, rc->lines, rc->body->len);
		memcpy((unsigned char *)val.mv_data + RAW_HDR_SIZE, rc->body->data, rc->body->len);
	}
	/* The commit is the durable point (fdatasync of data pages, then meta). */
	if ((err = mdb_txn_commit(txn))) {
		rc->failed = "mdb_txn_commit";
		return err;
	}
	*seq += rc->per_commit;
	rc->records += rc->per_commit;
	rc->bytes += (uint64_t)rc->per_commit * (RAW_HDR_SIZE + rc->body->len);
	rc->commits++;
	return 0;
}

/* The writer thread: commit groups until the time or byte budget is spent. */
static void *raw_writer(void *arg)
{
	struct raw_case *rc = arg;
	MDB_env *env;
	MDB_dbi dbi;
	if ((rc->rc = raw_open(rc, &env, &dbi)))
		return NULL;
	uint64_t seq = 1, start = now_mono_ns(), now = start;
	while (now - start < rc->duration_ns && rc->bytes < rc->byte_budget) {
		uint64_t t0 = now;
		if ((rc->rc = raw_commit_group(rc, env, dbi, &seq)))
			break;
		now = now_mono_ns();
		lat_push(&rc->commit_lat, now - t0);
	}
	rc->elapsed_ns = now - start;
	mdb_env_close(env);
	return NULL;
}

/* Run raw LMDB for n lines per record into row. Returns 0 or -1. */
static int run_raw_case(const struct options *o, const char *tmp, unsigned n, struct row *row)
{
	struct rbuf body = RBUF_INIT;
	struct raw_case rc = { .lines = n, .per_commit = o->conns, .body = &body,
	                       .duration_ns = o->seconds * NS_PER_S, .byte_budget = RAW_BYTE_BUDGET };
	pthread_t tid;
	int err, ret = -1;

	body_build(&body, n, 1);
	char name[32];
	snprintf(name, sizeof(name), "raw-%u", n);
	if (path_join(rc.dir, tmp, name) < 0 || mkdir(rc.dir, 0700) < 0) {
		fprintf(stderr, "bench_ingest: cannot create '%s': %s\n", rc.dir, strerror(errno));
		goto out;
	}
	fprintf(stderr, "raw LMDB: %u lines/record, %u records/commit, %u s...\n", n, o->conns, o->seconds);
	if ((err = pthread_create(&tid, NULL, raw_writer, &rc)) || (err = pthread_join(tid, NULL))) {
		fprintf(stderr, "bench_ingest: cannot run the writer thread: %s\n", strerror(err));
		goto out;
	}
	if (rc.rc) {
		fprintf(stderr, "bench_ingest: raw LMDB: %s failed: %s\n", rc.failed, mdb_strerror(rc.rc));
		goto out;
	}
	double secs = (double)rc.elapsed_ns / 1e9;
	*row = (struct row){ .lines = n, .conns = o->conns, .is_raw = 1,
	                     .points_s = (double)rc.records * n / secs,
	                     .requests_s = (double)rc.records / secs,
	                     .commits_s = (double)rc.commits / secs,
	                     .p50_ms = lat_percentile_ms(&rc.commit_lat, 50),
	                     .p99_ms = lat_percentile_ms(&rc.commit_lat, 99) };
	snprintf(row->name, sizeof(row->name), "raw LMDB");
	fprintf(stderr, "  %" PRIu64 " records, %" PRIu64 " commits, %.1f MB in %.2f s\n",
	        rc.records, rc.commits, (double)rc.bytes / 1e6, secs);
	ret = 0;
out:
	if (!o->keep)
		remove_tree(rc.dir);
	lat_release(&rc.commit_lat);
	rbuf_release(&body);
	return ret;
}

/*---- HTTP/1.1 client (blocking, loopback) ----*/

struct http_conn {
	int fd;
	char *buf; /* received, not yet consumed */
	size_t len, cap;
};

struct http_resp {
	int status;
	int close;           /* the server will close the connection */
	size_t body_len;
	char body[ERR_BODY_MAX + 1]; /* the first bytes of the body, NUL-terminated */
};

static int tcp_connect(uint16_t port, int *out)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	struct timeval tv = { .tv_sec = IO_TIMEOUT_S };
	int one = 1;
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port),
	                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	/* Small requests (the ping) must not wait for Nagle; the timeouts bound
	 * every blocking call. */
	if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0 ||
	    connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int err = errno;
		close(fd);
		return -err;
	}
	*out = fd;
	return 0;
}

static int http_conn_open(struct http_conn *c, uint16_t port)
{
	c->len = 0;
	return tcp_connect(port, &c->fd);
}

static void http_conn_close(struct http_conn *c)
{
	if (c->fd >= 0 && close(c->fd) < 0)
		fprintf(stderr, "bench_ingest: close: %s\n", strerror(errno));
	c->fd = -1;
	c->len = 0;
}

static void http_conn_release(struct http_conn *c)
{
	http_conn_close(c);
	free(c->buf);
	c->buf = NULL;
	c->cap = 0;
}

static int send_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return errno == EAGAIN ? -ETIMEDOUT : -errno;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Receive more bytes into c->buf. Returns the count, 0 at EOF, or -errno. */
static ssize_t conn_fill(struct http_conn *c)
{
	if (c->cap - c->len < 4096) {
		c->cap = c->cap ? c->cap * 2 : 16384;
		c->buf = xrealloc(c->buf, c->cap);
	}
	for (;;) {
		ssize_t r = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
		if (r >= 0) {
			c->len += (size_t)r;
			return r;
		}
		if (errno != EINTR)
			return errno == EAGAIN ? -ETIMEDOUT : -errno;
	}
}

/*
 * Parse a response head p[0..n) (status line and headers, ending in an
 * empty line). *clen gets Content-Length, or -1 when absent.
 */
static int parse_head(const char *p, size_t n, struct http_resp *r, long long *clen,
                      char *err, size_t errlen)
{
	if (n < 12 || memcmp(p, "HTTP/1.", 7) || p[8] != ' ' ||
	    p[9] < '1' || p[9] > '5' || p[10] < '0' || p[10] > '9' || p[11] < '0' || p[11] > '9') {
		snprintf(err, errlen, "malformed status line");
		return -1;
	}
	r->status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
	r->close = p[7] == '0'; /* HTTP/1.0: we never ask for keep-alive there */
	*clen = -1;
	const char *line = (const char *)memmem(p, n, "\r\n", 2) + 2, *end = p + n;
	while (line < end) {
		const char *eol = memmem(line, (size_t)(end - line), "\r\n", 2);
		if (!eol || eol == line)
			break;
		const char *colon = memchr(line, ':', (size_t)(eol - line));
		if (!colon) {
			snprintf(err, errlen, "malformed header line");
			return -1;
		}
		size_t nlen = (size_t)(colon - line);
		const char *v = colon + 1;
		while (v < eol && (*v == ' ' || *v == '\t'))
			v++;
		size_t vlen = (size_t)(eol - v);
		while (vlen && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t'))
			vlen--;
		if (nlen == 14 && !strncasecmp(line, "Content-Length", 14)) {
			char num[24];
			char *numend;
			if (vlen == 0 || vlen >= sizeof(num)) {
				snprintf(err, errlen, "bad Content-Length");
				return -1;
			}
			memcpy(num, v, vlen);
			num[vlen] = '\0';
			errno = 0;
			*clen = strtoll(num, &numend, 10);
			if (errno || *numend || *clen < 0) {
				snprintf(err, errlen, "bad Content-Length '%s'", num);
				return -1;
			}
		} else if (nlen == 17 && !strncasecmp(line, "Transfer-Encoding", 17) &&
		           !(vlen == 8 && !strncasecmp(v, "identity", 8))) {
			snprintf(err, errlen, "unsupported Transfer-Encoding '%.*s'", (int)vlen, v);
			return -1;
		} else if (nlen == 10 && !strncasecmp(line, "Connection", 10) &&
		           vlen == 5 && !strncasecmp(v, "close", 5)) {
			r->close = 1;
		}
		line = eol + 2;
	}
	return 0;
}

/*
 * Read one complete response from c (head, then the body by Content-Length,
 * or to EOF when there is none) and consume it. Returns 0, or -1 with the
 * reason in err (the connection is then unusable).
 */
static int http_read_response(struct http_conn *c, struct http_resp *r, char *err, size_t errlen)
{
	const char *sep;
	ssize_t got;
	while (!(sep = c->len ? memmem(c->buf, c->len, "\r\n\r\n", 4) : NULL)) {
		if (c->len >= MAX_HEAD) {
			snprintf(err, errlen, "response head over %d bytes", MAX_HEAD);
			return -1;
		}
		if ((got = conn_fill(c)) <= 0) {
			snprintf(err, errlen, "%s while reading a response head",
			         got ? strerror((int)-got) : "connection closed");
			return -1;
		}
	}
	size_t head = (size_t)(sep - c->buf) + 4;
	long long clen;
	if (parse_head(c->buf, head, r, &clen, err, errlen) < 0)
		return -1;
	if (r->status < 200) {
		snprintf(err, errlen, "unexpected interim response %d", r->status);
		return -1;
	}
	int to_eof = 0;
	if (r->status == 204 || r->status == 304)
		clen = 0;
	else if (clen < 0)
		to_eof = r->close = 1;
	if (clen > (long long)MAX_RESP_BODY) {
		snprintf(err, errlen, "response body of %lld bytes", clen);
		return -1;
	}
	while (to_eof ? c->len - head < MAX_RESP_BODY : c->len - head < (size_t)clen) {
		if ((got = conn_fill(c)) < 0) {
			snprintf(err, errlen, "%s while reading a response body", strerror((int)-got));
			return -1;
		}
		if (got == 0 && to_eof)
			break;
		if (got == 0) {
			snprintf(err, errlen, "connection closed inside a response body");
			return -1;
		}
	}
	r->body_len = to_eof ? c->len - head : (size_t)clen;
	size_t keep = r->body_len < ERR_BODY_MAX ? r->body_len : ERR_BODY_MAX;
	memcpy(r->body, c->buf + head, keep);
	r->body[keep] = '\0';
	/* Consume exactly this response; anything after it belongs to the next. */
	size_t used = head + r->body_len;
	memmove(c->buf, c->buf + used, c->len - used);
	c->len -= used;
	return 0;
}

static int http_roundtrip(struct http_conn *c, const char *req, size_t len, struct http_resp *r,
                          char *err, size_t errlen)
{
	int rc = send_all(c->fd, req, len);
	if (rc < 0) {
		snprintf(err, errlen, "cannot send request: %s", strerror(-rc));
		return -1;
	}
	return http_read_response(c, r, err, errlen);
}

/* GET /ping on a fresh connection. Returns the status, or -1. */
static int http_ping(uint16_t port)
{
	struct http_conn c = { .fd = -1 };
	struct http_resp r;
	char req[128], err[256];
	int n = snprintf(req, sizeof(req),
	                 "GET /ping HTTP/1.1\r\nHost: 127.0.0.1:%u\r\nConnection: close\r\n\r\n", port);
	int status = -1;
	if (http_conn_open(&c, port) == 0 &&
	    http_roundtrip(&c, req, (size_t)n, &r, err, sizeof(err)) == 0)
		status = r.status;
	http_conn_release(&c);
	return status;
}

/*---- the relayd process ----*/

struct relayd_proc {
	pid_t pid;       /* 0 before the start and once reaped */
	int started;     /* spawned: relayd_stop has something to stop or report */
	int log_shown;   /* the log's tail was printed already */
	int wstatus;     /* valid once reaped */
	uint16_t port, backend_port;
	char dir[PATH_MAX];  /* the queue: data_dir */
	char conf[PATH_MAX], log[PATH_MAX];
};

/* A loopback port nobody holds right now (bind to 0, read it back, close). */
static int free_port(uint16_t *port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    getsockname(fd, (struct sockaddr *)&sa, &len) < 0) {
		int err = errno;
		close(fd);
		return -err;
	}
	*port = ntohs(sa.sin_port);
	return close(fd) < 0 ? -errno : 0;
}

static int relayd_write_config(const struct relayd_proc *p)
{
	FILE *f = fopen(p->conf, "w");
	if (!f)
		return -errno;
	/* The backend port is closed: relayd only queues, nothing drains. */
	fprintf(f,
	        "data_dir: %s\n"
	        "listen: {http: 127.0.0.1:%u}\n"
	        "http: {max_body_size: 64MiB}\n"
	        "queue: {max_size: 16GiB, max_commit_batches: 1024}\n"
	        "backends: [{name: bench, url: \"http://127.0.0.1:%u\"}]\n",
	        p->dir, p->port, p->backend_port);
	int bad = ferror(f);
	if (fclose(f) != 0 || bad)
		return -EIO;
	return 0;
}

static int relayd_spawn(struct relayd_proc *p, const char *path)
{
	posix_spawn_file_actions_t fa;
	char *const argv[] = { (char *)path, (char *)"-c", p->conf, NULL };
	int err = posix_spawn_file_actions_init(&fa);
	if (err)
		return err;
	/* stdin from /dev/null; stdout and stderr to the log in the tmp dir. */
	if (!(err = posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0)) &&
	    !(err = posix_spawn_file_actions_addopen(&fa, 2, p->log, O_WRONLY | O_CREAT | O_TRUNC, 0600)) &&
	    !(err = posix_spawn_file_actions_adddup2(&fa, 2, 1)))
		err = posix_spawn(&p->pid, path, &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	if (err)
		p->pid = 0;
	else
		p->started = 1;
	return err;
}

/* Reap relayd if it has exited. Returns 1 if it is (still) running. */
static int relayd_alive(struct relayd_proc *p)
{
	if (p->pid == 0)
		return 0;
	pid_t r = waitpid(p->pid, &p->wstatus, WNOHANG);
	if (r == p->pid || (r < 0 && errno == ECHILD)) {
		p->pid = 0;
		return 0;
	}
	return 1;
}

static void describe_exit(int wstatus, char *out, size_t len)
{
	if (WIFEXITED(wstatus))
		snprintf(out, len, "exited with status %d", WEXITSTATUS(wstatus));
	else if (WIFSIGNALED(wstatus))
		snprintf(out, len, "killed by signal %d (%s)", WTERMSIG(wstatus), strsignal(WTERMSIG(wstatus)));
	else
		snprintf(out, len, "ended with wait status 0x%x", wstatus);
}

static void relayd_print_log_tail(struct relayd_proc *p)
{
	char buf[4096];
	FILE *f;
	if (p->log_shown || !(f = fopen(p->log, "r")))
		return;
	p->log_shown = 1;
	long off = 0;
	if (fseek(f, 0, SEEK_END) == 0 && (off = ftell(f)) > (long)sizeof(buf) - 1)
		off -= (long)sizeof(buf) - 1;
	else
		off = 0;
	if (fseek(f, off, SEEK_SET) == 0) {
		size_t n = fread(buf, 1, sizeof(buf) - 1, f);
		buf[n] = '\0';
		fprintf(stderr, "---- tail of %s ----\n%s---- end of log ----\n", p->log, buf);
	}
	fclose(f);
}

static void sleep_ns(uint64_t ns)
{
	struct timespec ts = { .tv_sec = (time_t)(ns / NS_PER_S), .tv_nsec = (long)(ns % NS_PER_S) };
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/*
 * Copy relayd's own shutdown summary (its "... batches committed in N
 * commits ..." log line) into out, or "" when the log has none: it tells
 * how many requests shared a commit, which the clients cannot see.
 */
static void relayd_commit_summary(const struct relayd_proc *p, char *out, size_t len)
{
	char line[512];
	FILE *f = fopen(p->log, "r");
	out[0] = '\0';
	if (!f)
		return;
	while (fgets(line, sizeof(line), f))
		if (strstr(line, "batches committed in"))
			snprintf(out, len, "%s", line);
	fclose(f);
}

/* CPU seconds (user + system) relayd has used so far, or -1 (from /proc). */
static double relayd_cpu_s(const struct relayd_proc *p)
{
	char path[64], buf[1024];
	unsigned long long ut, st;
	snprintf(path, sizeof(path), "/proc/%ld/stat", (long)p->pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	/* Fields after "(comm)": state is field 3, utime 14, stime 15. */
	const char *q = strrchr(buf, ')');
	if (!q || sscanf(q + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
		return -1;
	return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* CPU seconds this process (the clients) has used so far. */
static double self_cpu_s(void)
{
	struct timespec ts;
	if (clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts) < 0)
		return -1;
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Poll GET /ping until 204, for at most READY_TIMEOUT_NS. */
static int relayd_wait_ready(struct relayd_proc *p)
{
	uint64_t start = now_mono_ns();
	while (now_mono_ns() - start < READY_TIMEOUT_NS) {
		if (!relayd_alive(p)) {
			char how[96];
			describe_exit(p->wstatus, how, sizeof(how));
			fprintf(stderr, "bench_ingest: relayd %s before answering /ping\n", how);
			return -1;
		}
		if (http_ping(p->port) == 204)
			return 0;
		sleep_ns(POLL_INTERVAL_NS);
	}
	fprintf(stderr, "bench_ingest: relayd did not answer /ping with 204 within 10 s\n");
	return -1;
}

/*
 * Write the config, start relayd and wait until it is ready. On failure the
 * caller still calls relayd_stop (it handles a process that never started).
 */
static int relayd_start(struct relayd_proc *p, const char *path, const char *tmp)
{
	int err;
	*p = (struct relayd_proc){ 0 };
	if (path_join(p->dir, tmp, "q") < 0 || path_join(p->conf, tmp, "relayd.yaml") < 0 ||
	    path_join(p->log, tmp, "relayd.log") < 0) {
		fprintf(stderr, "bench_ingest: temporary directory path too long\n");
		return -1;
	}
	if ((err = free_port(&p->port)) < 0 || (err = free_port(&p->backend_port)) < 0) {
		fprintf(stderr, "bench_ingest: cannot find a free loopback port: %s\n", strerror(-err));
		return -1;
	}
	if (p->port == p->backend_port && (err = free_port(&p->backend_port)) < 0)
		return -1;
	if ((err = relayd_write_config(p)) < 0) {
		fprintf(stderr, "bench_ingest: cannot write '%s': %s\n", p->conf, strerror(-err));
		return -1;
	}
	if ((err = relayd_spawn(p, path))) {
		fprintf(stderr, "bench_ingest: cannot start '%s': %s\n", path, strerror(err));
		return -1;
	}
	fprintf(stderr, "relayd: pid %ld on 127.0.0.1:%u, backend 127.0.0.1:%u (closed), log %s\n",
	        (long)p->pid, p->port, p->backend_port, p->log);
	if (relayd_wait_ready(p) < 0) {
		relayd_print_log_tail(p);
		return -1;
	}
	return 0;
}

/*
 * SIGTERM the relayd we started, wait up to STOP_TIMEOUT_NS, then SIGKILL.
 * Returns 0 when it had exited cleanly (status 0), -1 otherwise.
 */
static int relayd_stop(struct relayd_proc *p)
{
	char how[96];
	int killed = 0;
	if (!p->started)
		return 0;
	if (relayd_alive(p)) {
		if (kill(p->pid, SIGTERM) < 0)
			fprintf(stderr, "bench_ingest: kill %ld: %s\n", (long)p->pid, strerror(errno));
		uint64_t start = now_mono_ns();
		while (relayd_alive(p) && now_mono_ns() - start < STOP_TIMEOUT_NS)
			sleep_ns(POLL_INTERVAL_NS);
		if (p->pid) {
			killed = 1;
			fprintf(stderr, "bench_ingest: relayd did not stop within 10 s of SIGTERM: SIGKILL\n");
			if (kill(p->pid, SIGKILL) < 0 || waitpid(p->pid, &p->wstatus, 0) < 0)
				fprintf(stderr, "bench_ingest: cannot kill %ld: %s\n", (long)p->pid, strerror(errno));
			p->pid = 0;
		}
	}
	describe_exit(p->wstatus, how, sizeof(how));
	if (!killed && WIFEXITED(p->wstatus) && WEXITSTATUS(p->wstatus) == 0) {
		fprintf(stderr, "relayd: stopped (%s)\n", how);
		return 0;
	}
	fprintf(stderr, "bench_ingest: relayd %s\n", how);
	relayd_print_log_tail(p);
	return -1;
}

/*---- (B) load on relayd ----*/

/* Start gate: clients wait until main says go (1) or abort (-1). */
struct gate {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int state;
};

/* Shared by all clients of a case; read-only while they run. */
struct load_case {
	const char *req; /* the whole request: head and body */
	size_t req_len;
	uint16_t port;
	uint64_t duration_ns;
	struct gate gate;
};

struct client {
	pthread_t tid;
	const struct load_case *lc;
	struct gate *gate;
	struct http_conn conn;
	uint64_t ok, bad;       /* 204s; other statuses */
	struct lat_vec lat;     /* send start to full response, every response */
	int first_bad_status;   /* 0 = none */
	char first_bad_body[ERR_BODY_MAX + 1];
	char failure[256];      /* transport error that stopped this client, or "" */
};

static int gate_wait(struct gate *g)
{
	pthread_mutex_lock(&g->mu);
	while (g->state == 0)
		pthread_cond_wait(&g->cv, &g->mu);
	int s = g->state;
	pthread_mutex_unlock(&g->mu);
	return s;
}

static void gate_open(struct gate *g, int state)
{
	pthread_mutex_lock(&g->mu);
	g->state = state;
	pthread_cond_broadcast(&g->cv);
	pthread_mutex_unlock(&g->mu);
}

static void client_record(struct client *cl, const struct http_resp *r)
{
	if (r->status == 204) {
		cl->ok++;
		return;
	}
	if (cl->bad++ == 0) {
		cl->first_bad_status = r->status;
		memcpy(cl->first_bad_body, r->body, sizeof(cl->first_bad_body));
	}
}

/* One client: POST the request back to back until the deadline. */
static void *client_run(void *arg)
{
	struct client *cl = arg;
	const struct load_case *lc = cl->lc;
	struct http_resp r;
	if (gate_wait(cl->gate) < 0)
		return NULL;
	uint64_t deadline = now_mono_ns() + lc->duration_ns;
	for (uint64_t t0 = now_mono_ns(); t0 < deadline; t0 = now_mono_ns()) {
		if (http_roundtrip(&cl->conn, lc->req, lc->req_len, &r, cl->failure, sizeof(cl->failure)) < 0)
			break;
		lat_push(&cl->lat, now_mono_ns() - t0);
		client_record(cl, &r);
		if (r.close) {
			int err;
			http_conn_close(&cl->conn);
			if ((err = http_conn_open(&cl->conn, lc->port)) < 0) {
				snprintf(cl->failure, sizeof(cl->failure), "cannot reconnect: %s", strerror(-err));
				break;
			}
		}
	}
	return NULL;
}

static void request_build(struct rbuf *req, uint16_t port, const struct rbuf *body)
{
	rbuf_appendf(req,
	             "POST /write?db=bench&precision=ns HTTP/1.1\r\n"
	             "Host: 127.0.0.1:%u\r\n"
	             "User-Agent: bench_ingest\r\n"
	             "Content-Type: text/plain; charset=utf-8\r\n"
	             "Content-Length: %zu\r\n\r\n",
	             port, body->len);
	rbuf_append(req, body->data, body->len);
}

/* What went wrong over the whole run, for the summary and the exit code. */
struct run_errors {
	uint64_t bad_status, transport;
	int first_status;
	char first_body[ERR_BODY_MAX + 1];
	char first_failure[256];
};

/* Fold the clients' results into row and errs. */
static void load_summarise(struct client *cls, unsigned n, unsigned lines, uint64_t elapsed_ns,
                           struct row *row, struct run_errors *errs)
{
	struct lat_vec all = { 0 };
	uint64_t ok = 0;
	for (unsigned i = 0; i < n; i++) {
		struct client *cl = &cls[i];
		ok += cl->ok;
		lat_append(&all, &cl->lat);
		errs->bad_status += cl->bad;
		if (cl->bad && errs->first_status == 0) {
			errs->first_status = cl->first_bad_status;
			memcpy(errs->first_body, cl->first_bad_body, sizeof(errs->first_body));
		}
		if (cl->failure[0]) {
			if (errs->transport++ == 0)
				snprintf(errs->first_failure, sizeof(errs->first_failure), "%s", cl->failure);
			fprintf(stderr, "  client %u stopped: %s\n", i, cl->failure);
		}
		if (cl->bad)
			fprintf(stderr, "  client %u: %" PRIu64 " responses other than 204 (first %d)\n", i,
			        cl->bad, cl->first_bad_status);
	}
	double secs = (double)elapsed_ns / 1e9;
	row->lines = lines;
	row->conns = n;
	row->points_s = (double)ok * lines / secs;
	row->requests_s = (double)ok / secs;
	row->commits_s = -1; /* not visible from outside relayd */
	row->p50_ms = lat_percentile_ms(&all, 50);
	row->p99_ms = lat_percentile_ms(&all, 99);
	fprintf(stderr, "  %" PRIu64 " x 204 in %.2f s\n", ok, secs);
	lat_release(&all);
}

/*
 * Drive relayd with o->conns clients POSTing n lines (half of them without
 * a timestamp when half_stamped) for o->seconds. Returns 0, or -1 when the
 * case could not run at all.
 */
static int run_load_case(const struct options *o, struct relayd_proc *p, unsigned n, int half_stamped,
                         struct row *row, struct run_errors *errs)
{
	struct rbuf body = RBUF_INIT, req = RBUF_INIT;
	struct load_case lc = { .port = p->port, .duration_ns = o->seconds * NS_PER_S,
	                        .gate = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0 } };
	struct client *cls = xcalloc(o->conns, sizeof(*cls));
	unsigned started = 0;
	int err, ret = -1;

	body_build(&body, n, half_stamped ? 2 : 1);
	request_build(&req, p->port, &body);
	lc.req = req.data;
	lc.req_len = req.len;
	fprintf(stderr, "relayd: %u lines/request (%s), %u connections, %u s...\n", n,
	        half_stamped ? "half stamped" : "all stamped", o->conns, o->seconds);
	for (unsigned i = 0; i < o->conns; i++) {
		cls[i] = (struct client){ .lc = &lc, .gate = &lc.gate, .conn = { .fd = -1 } };
		if ((err = http_conn_open(&cls[i].conn, p->port)) < 0) {
			fprintf(stderr, "bench_ingest: cannot connect to relayd: %s\n", strerror(-err));
			goto out;
		}
	}
	for (; started < o->conns; started++) {
		if ((err = pthread_create(&cls[started].tid, NULL, client_run, &cls[started]))) {
			fprintf(stderr, "bench_ingest: cannot start a client thread: %s\n", strerror(err));
			break;
		}
	}
	double relayd_cpu0 = relayd_cpu_s(p), self_cpu0 = self_cpu_s();
	uint64_t t0 = now_mono_ns();
	gate_open(&lc.gate, started == o->conns ? 1 : -1);
	for (unsigned i = 0; i < started; i++)
		if ((err = pthread_join(cls[i].tid, NULL)))
			fprintf(stderr, "bench_ingest: pthread_join: %s\n", strerror(err));
	uint64_t elapsed = now_mono_ns() - t0;
	double relayd_cpu = relayd_cpu_s(p) - relayd_cpu0, self_cpu = self_cpu_s() - self_cpu0;
	if (started == o->conns) {
		load_summarise(cls, o->conns, n, elapsed, row, errs);
		/* Whether relayd was waiting on the disk or short of CPU. */
		if (relayd_cpu0 >= 0 && relayd_cpu >= 0)
			fprintf(stderr, "  CPU: relayd %.0f%%, clients %.0f%% (of one core)\n",
			        100 * relayd_cpu * 1e9 / (double)elapsed, 100 * self_cpu * 1e9 / (double)elapsed);
		snprintf(row->name, sizeof(row->name), "relayd%s", half_stamped ? ", half stamped" : "");
		ret = 0;
	}
out:
	for (unsigned i = 0; i < o->conns; i++) {
		http_conn_release(&cls[i].conn);
		lat_release(&cls[i].lat);
	}
	free(cls);
	rbuf_release(&req);
	rbuf_release(&body);
	return ret;
}

/*
 * Both relayd cases (all stamped, half stamped) for n lines. Returns 0, or
 * -1 when relayd misbehaved badly enough that no further case should run
 * (connections dropped, or the process ended).
 */
static int run_relayd_cases(const struct options *o, struct relayd_proc *p, unsigned n,
                            struct row *rows, size_t *nrows, struct run_errors *errs)
{
	for (int half = 0; half <= 1; half++) {
		uint64_t dropped = errs->transport;
		if (run_load_case(o, p, n, half, &rows[*nrows], errs) < 0)
			return -1;
		(*nrows)++;
		if (errs->transport > dropped) {
			fprintf(stderr, "bench_ingest: connections failed: no further relayd cases\n");
			return -1;
		}
		if (!relayd_alive(p)) {
			char how[96];
			describe_exit(p->wstatus, how, sizeof(how));
			fprintf(stderr, "bench_ingest: relayd %s during the run\n", how);
			return -1;
		}
	}
	return 0;
}

/*---- output ----*/

/* Format v with thousands separators ("1,234,567"), or "–" when negative. */
static const char *fmt_count(double v, char *out, size_t len)
{
	char digits[32];
	if (v < 0)
		return "–";
	int n = snprintf(digits, sizeof(digits), "%.0f", v);
	size_t j = 0;
	for (int i = 0; i < n && j + 2 < len; i++) {
		if (i > 0 && (n - i) % 3 == 0)
			out[j++] = ',';
		out[j++] = digits[i];
	}
	out[j] = '\0';
	return out;
}

static const char *fmt_ms(double v, char *out, size_t len)
{
	if (v < 0)
		return "–";
	snprintf(out, len, "%.2f", v);
	return out;
}

static const struct row *find_raw(const struct row *rows, size_t n, unsigned lines)
{
	for (size_t i = 0; i < n; i++)
		if (rows[i].is_raw && rows[i].lines == lines)
			return &rows[i];
	return NULL;
}

static void print_table(const struct row *rows, size_t n)
{
	printf("| case | lines/batch | conns | points/s | requests/s | commits/s | p50 ms | p99 ms | vs raw LMDB |\n");
	printf("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
	/* Raw LMDB rows first, then relayd's, each in run order. */
	for (size_t k = 0; k < 2 * n; k++) {
		const struct row *r = &rows[k % n];
		if (r->is_raw != (k < n))
			continue;
		const struct row *raw = find_raw(rows, n, r->lines);
		char a[32], b[32], c[32], d[32], e[32], ratio[32] = "–";
		if (raw && raw->points_s > 0)
			snprintf(ratio, sizeof(ratio), "%.2f", r->points_s / raw->points_s);
		printf("| %s | %u | %u | %s | %s | %s | %s | %s | %s |\n", r->name, r->lines, r->conns,
		       fmt_count(r->points_s, a, sizeof(a)), fmt_count(r->requests_s, b, sizeof(b)),
		       fmt_count(r->commits_s, c, sizeof(c)), fmt_ms(r->p50_ms, d, sizeof(d)),
		       fmt_ms(r->p99_ms, e, sizeof(e)), ratio);
	}
	printf("\nraw LMDB rows: requests/s = records/s, conns = records per commit, p50/p99 = one commit.\n"
	       "relayd rows: p50/p99 = send start to full response; its commits/s are not visible here.\n");
}

/* relayd's shutdown line, and the average group it implies when it parses. */
static void print_relayd_summary(const char *line, unsigned conns)
{
	const char *p = strstr(line, "stopped: ");
	unsigned long long batches, commits;
	if (!line[0])
		return;
	printf("\nrelayd's log at shutdown, over all its cases:\n    %s", line);
	if (p && sscanf(p, "stopped: %llu batches committed in %llu commits", &batches, &commits) == 2 &&
	    commits > 0)
		printf("so relayd put %.1f requests in a commit on average; raw LMDB puts %u in every one.\n",
		       (double)batches / (double)commits, conns);
}

static void print_errors(const struct run_errors *e)
{
	if (e->bad_status)
		printf("\nERROR: %" PRIu64 " responses other than 204; the first was %d with body:\n%s\n",
		       e->bad_status, e->first_status, e->first_body[0] ? e->first_body : "(empty)");
	if (e->transport)
		printf("\nERROR: %" PRIu64 " clients stopped on a transport error; the first: %s\n",
		       e->transport, e->first_failure);
}

/*---- main ----*/

static int make_tmpdir(char *out, size_t len)
{
	const char *base = getenv("TMPDIR");
	int n = snprintf(out, len, "%s/bench_ingest.XXXXXX", base && *base ? base : "/tmp");
	if (n < 0 || (size_t)n >= len - 64) {
		fprintf(stderr, "bench_ingest: TMPDIR too long\n");
		return -1;
	}
	if (!mkdtemp(out)) {
		fprintf(stderr, "bench_ingest: cannot create a directory like '%s': %s\n", out, strerror(errno));
		return -1;
	}
	return 0;
}

/*
 * One relayd serves every relayd case. The cases run interleaved (raw N,
 * relayd N, relayd N half stamped, then the next N) so that each ratio
 * compares measurements taken minutes apart at most: this disk's fsync time
 * drifts. relayd sits idle (its backend is down) while raw LMDB runs.
 */
int main(int argc, char **argv)
{
	struct options o;
	struct row rows[3 * MAX_CASES];
	struct run_errors errs = { 0 };
	struct relayd_proc relayd = { 0 };
	size_t nrows = 0;
	char tmp[PATH_MAX], summary[512] = "";
	int failed = 0, relayd_up = 0, rc;

	if ((rc = options_parse(argc, argv, &o)))
		return rc;
	if (o.run_relayd && access(o.relayd, X_OK) < 0) {
		fprintf(stderr, "bench_ingest: cannot run relayd '%s': %s (use --relayd PATH or --only raw)\n",
		        o.relayd, strerror(errno));
		return 1;
	}
	if (make_tmpdir(tmp, sizeof(tmp)) < 0)
		return 1;
	print_machine_facts(&o, tmp);
	if (o.run_relayd && !(relayd_up = relayd_start(&relayd, o.relayd, tmp) == 0))
		failed = 1;
	for (size_t i = 0; i < o.ncases; i++) {
		if (o.run_raw && run_raw_case(&o, tmp, o.lines[i], &rows[nrows]) == 0)
			nrows++;
		else if (o.run_raw)
			failed = 1;
		if (relayd_up && run_relayd_cases(&o, &relayd, o.lines[i], rows, &nrows, &errs) < 0)
			relayd_up = 0, failed = 1;
	}
	if (relayd_stop(&relayd) < 0)
		failed = 1;
	else if (relayd.started)
		relayd_commit_summary(&relayd, summary, sizeof(summary));
	print_table(rows, nrows);
	print_relayd_summary(summary, o.conns);
	print_errors(&errs);
	if (errs.bad_status || errs.transport)
		failed = 1;
	if (o.keep)
		printf("\nkept %s\n", tmp);
	else
		remove_tree(tmp);
	if (fflush(stdout) != 0 || ferror(stdout))
		failed = 1;
	if (failed)
		fprintf(stderr, "bench_ingest: FAILED\n");
	return failed;
}
