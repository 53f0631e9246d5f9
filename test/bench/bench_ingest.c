/*
 * bench_ingest: how close relayd's acknowledged write path comes to what the
 * disk allows, and how fast relayd delivers into a real influxd. In one run:
 *
 * Ingest, for each body size N (lines per request):
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
 *  Order for one N: raw with K = C (the connection count), relayd, raw with
 *  K = relayd's measured records per commit, relayd half stamped, raw with
 *  K = its records per commit. relayd's records per commit come from
 *  GET /health ("ingest": commits, batches_committed) read before and after
 *  the case.
 *
 *  Why (A) with K = relayd's own group size is the fair reference: a 204
 *  from relayd promises the batch is on disk, so every acknowledged request
 *  went through a synced LMDB write transaction. (A) does just that with the
 *  same bytes, flags, key scheme and records per commit, and none of
 *  relayd's other work (HTTP, validation, copying, the event loop), so the
 *  ratio says what relayd loses to everything but the disk. K = C is an upper
 *  bound no closed-loop server reaches: while a commit is in flight the
 *  clients it holds wait for it, so with C clients the groups alternate and
 *  hold about C/2 each.
 *
 * Delivery (when influxd is found; Debian's influxdb 1.6.7), with a private
 * influxd on loopback, fresh for each case:
 *
 *  (C) direct: the same C client threads POST distinct 1000-line batches to
 *      influxd for T seconds; points/s = influxd's pointsWrittenOK delta / T.
 *  (D) through relayd: the same clients POST to a relayd whose backend is
 *      that influxd, for T seconds; then we wait until relayd's /health shows
 *      nothing pending. points/s = points stored / (first send to the moment
 *      everything is in influxd).
 *  (E) drain: a relayd whose backend is a closed port takes a backlog of M
 *      points; it is stopped and restarted with the backend pointing at a
 *      fresh influxd; drain points/s = M / (restart to nothing pending).
 *
 *  Every point carries its own timestamp (the request number times N plus
 *  the line number, in ns), so none overwrites another, and influxd's
 *  pointsWrittenOK delta must equal the points sent.
 *
 * Run by hand, never by ctest. Loopback only; every phase is time-bounded:
 * T seconds per case (or a 2 GiB byte budget for raw LMDB), 10 s for a
 * server to become ready or to stop, 30 s for any single socket operation,
 * 30 s to load the backlog and 120 s for any drain.
 *
 * The HTTP client, the child processes (relayd, influxd), latencies and
 * machine facts come from the benchmark kit, benchkit.h.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "benchkit.h"

#define MAX_CASES 8                   /* entries of -n and of --delivery-conns */
#define ROWS_PER_N 5                  /* raw K=C, relayd, raw, relayd half stamped, raw */
#define MAX_LINES 500000u             /* ~45 MB per body: under relayd's 64 MiB limit */
#define MAX_DELIVERY_LINES 100000u    /* ~8.5 MB: under influxd's 25 MB max-body-size */
#define MAX_CONNS 1024u               /* relayd's default max_connections */
#define MAX_SECONDS 600u
#define MAX_BACKLOG 100000000u
#define RAW_MAP_SIZE (8ULL << 30)     /* never filled: the byte budget stops first */
#define RAW_BYTE_BUDGET (2ULL << 30)  /* most bytes one raw case may write */
#define RAW_HDR_SIZE 80               /* header + db/rp, about what relayd stores */
#define BACKLOG_LOAD_MAX_NS (30 * NS_PER_S)   /* longest time to load the drain backlog */
#define TS_WIDTH 19                   /* digits of every timestamp in a body */
#define TS_BASE 1600000000000000000LL /* first unique timestamp (2020-09-13), ns */

/*---- options ----*/

struct options {
	unsigned conns;   /* -c: client connections, and K for the bound raw LMDB row */
	unsigned seconds; /* -t: per case */
	unsigned lines[MAX_CASES];
	size_t ncases;
	const char *relayd;
	char *influxd;    /* NULL: none found, the delivery cases are skipped */
	unsigned dconns[MAX_CASES]; /* --delivery-conns */
	size_t ndconns;
	unsigned dlines;  /* --delivery-lines */
	unsigned backlog; /* --backlog: points */
	unsigned parallel; /* --delivery-parallel: relayd's backend "parallel"; 0 = its default */
	int run_raw, run_relayd, run_delivery;
	int keep;
};

static void usage(FILE *f)
{
	fprintf(f,
	        "usage: bench_ingest [-c CONNS] [-t SECONDS] [-n LINES[,LINES...]]\n"
	        "                    [--relayd PATH] [--influxd PATH]\n"
	        "                    [--only raw|relayd|ingest|delivery] [--delivery-conns LIST]\n"
	        "                    [--delivery-lines N] [--delivery-parallel N] [--backlog POINTS]\n"
	        "                    [--keep]\n"
	        "  -c CONNS              client connections for the ingest cases (16)\n"
	        "  -t SECONDS            duration of each case (5)\n"
	        "  -n LIST               lines per request for the ingest cases (1000,5000)\n"
	        "  --relayd PATH         relayd binary to start (./build/bin/relayd)\n"
	        "  --influxd PATH        influxd binary for the delivery cases (influxd on PATH)\n"
	        "  --only WHAT           raw, relayd, ingest (both) or delivery\n"
	        "  --delivery-conns LIST client connections for the delivery cases (4,16)\n"
	        "  --delivery-lines N    lines per request for the delivery cases (1000)\n"
	        "  --delivery-parallel N relayd's writes in flight per backend (relayd's default)\n"
	        "  --backlog POINTS      backlog for the drain case (3000000)\n"
	        "  --keep                keep the temporary directory (queues, configs, logs)\n");
}

/* Returns 0, or 2 (the exit code) after printing what is wrong. */
static int options_parse(int argc, char **argv, struct options *o)
{
	enum { OPT_RELAYD = 256, OPT_INFLUXD, OPT_ONLY, OPT_KEEP, OPT_DCONNS, OPT_DLINES, OPT_DPARALLEL, OPT_BACKLOG };
	static const struct option longopts[] = {
		{ "relayd", required_argument, NULL, OPT_RELAYD },
		{ "influxd", required_argument, NULL, OPT_INFLUXD },
		{ "only", required_argument, NULL, OPT_ONLY },
		{ "delivery-conns", required_argument, NULL, OPT_DCONNS },
		{ "delivery-lines", required_argument, NULL, OPT_DLINES },
		{ "delivery-parallel", required_argument, NULL, OPT_DPARALLEL },
		{ "backlog", required_argument, NULL, OPT_BACKLOG },
		{ "keep", no_argument, NULL, OPT_KEEP },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *influxd = NULL, *only = NULL;
	*o = (struct options){ .conns = 16, .seconds = 5, .lines = { 1000, 5000 }, .ncases = 2,
	                       .relayd = "./build/bin/relayd", .dconns = { 4, 16 }, .ndconns = 2,
	                       .dlines = 1000, .backlog = 3000000 };
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
			if (parse_uint_list(optarg, 1, MAX_LINES, o->lines, MAX_CASES, &o->ncases) < 0) {
				fprintf(stderr, "bench_ingest: -n wants up to %d counts of 1..%u lines, not '%s'\n",
				        MAX_CASES, MAX_LINES, optarg);
				return 2;
			}
			break;
		case OPT_DCONNS:
			if (parse_uint_list(optarg, 1, MAX_CONNS, o->dconns, MAX_CASES, &o->ndconns) < 0) {
				fprintf(stderr, "bench_ingest: --delivery-conns wants up to %d counts of 1..%u, not '%s'\n",
				        MAX_CASES, MAX_CONNS, optarg);
				return 2;
			}
			break;
		case OPT_DLINES:
			if (parse_uint(optarg, 1, MAX_DELIVERY_LINES, &o->dlines) < 0) {
				fprintf(stderr, "bench_ingest: --delivery-lines wants 1..%u, not '%s'\n", MAX_DELIVERY_LINES,
				        optarg);
				return 2;
			}
			break;
		case OPT_DPARALLEL:
			if (parse_uint(optarg, 1, 16, &o->parallel) < 0) {
				fprintf(stderr, "bench_ingest: --delivery-parallel wants 1..16, not '%s'\n", optarg);
				return 2;
			}
			break;
		case OPT_BACKLOG:
			if (parse_uint(optarg, 1, MAX_BACKLOG, &o->backlog) < 0) {
				fprintf(stderr, "bench_ingest: --backlog wants 1..%u points, not '%s'\n", MAX_BACKLOG, optarg);
				return 2;
			}
			break;
		case OPT_RELAYD:
			o->relayd = optarg;
			break;
		case OPT_INFLUXD:
			influxd = optarg;
			break;
		case OPT_ONLY:
			if (strcmp(optarg, "raw") && strcmp(optarg, "relayd") && strcmp(optarg, "ingest") &&
			    strcmp(optarg, "delivery")) {
				fprintf(stderr, "bench_ingest: --only wants raw, relayd, ingest or delivery, not '%s'\n",
				        optarg);
				return 2;
			}
			only = optarg;
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
	o->influxd = influxd ? xstrdup(influxd) : find_on_path("influxd");
	o->run_raw = !only || !strcmp(only, "raw") || !strcmp(only, "ingest");
	o->run_relayd = !only || !strcmp(only, "relayd") || !strcmp(only, "ingest");
	/* By default the delivery cases run whenever there is an influxd. */
	o->run_delivery = (!only && o->influxd) || (only && !strcmp(only, "delivery"));
	if (o->run_delivery && !o->influxd) {
		fprintf(stderr, "bench_ingest: --only delivery needs influxd on PATH or --influxd PATH\n");
		return 2;
	}
	return 0;
}

/*---- bodies and results ----*/

/*
 * Append a line-protocol body of n lines to b, ~85 bytes a line, values
 * varying from line to line. stamp_every = 1 stamps every line, 2 every
 * other one (relayd stamps the rest at acceptance). Every timestamp is
 * TS_WIDTH digits wide, so that it can be rewritten in place.
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

/* Write v as exactly TS_WIDTH decimal digits at p. */
static void put_dec_ts(char *p, uint64_t v)
{
	for (int k = TS_WIDTH - 1; k >= 0; k--) {
		p[k] = (char)('0' + v % 10);
		v /= 10;
	}
}

/* One row of the ingest table. A negative number prints as "–". */
struct row {
	char name[48];
	unsigned lines, conns;
	double per_commit; /* raw: K; relayd: measured requests per commit (-1: unknown) */
	double points_s, requests_s, commits_s, p50_ms, p99_ms;
	int is_raw;
	int ref_same;      /* relayd rows: the raw row with K = per_commit, or -1 */
	int ref_bound;     /* the raw row with K = conns for this N, or -1 */
};

/* One row of the delivery table. */
enum drow_kind { D_DIRECT, D_RELAYD, D_DRAIN };

struct drow {
	enum drow_kind kind;
	unsigned conns, lines;
	int ran;                /* the case produced numbers */
	uint64_t sent;          /* points acknowledged to the clients (drain: the backlog) */
	uint64_t stored;        /* influxd's pointsWrittenOK delta */
	double span_s;          /* what points/s divides by */
	double points_s;        /* stored (drain: backlog) / span */
	double acked_s;         /* clients' acknowledged points/s, -1 n/a */
	double p50_ms, p99_ms;  /* clients' latencies, -1 n/a */
	double load_s;          /* relayd/drain: how long the clients loaded */
	uint64_t backlog_end;   /* relayd: points pending when the clients stopped */
	double lines_per_post;  /* relayd: lines per POST to influxd, -1 n/a */
	uint64_t retries;       /* relayd: failed POSTs */
	double cpu_relayd, cpu_influxd, cpu_clients; /* % of one core, -1 n/a */
	double ready_s;         /* drain: restart to /ping answered */
};

/*---- machine facts ----*/

static void print_machine_facts(const struct options *o, const char *tmp)
{
	char la[64];
	double fsync_ms = fdatasync_probe_ms(tmp);
	printf("# bench_ingest\n\n");
	print_machine_line();
	printf("- load average at the start: %s\n", loadavg(la, sizeof(la)));
	printf("- data in %s (%s)\n", tmp, fs_name(tmp));
	printf("- bodies: %.1f bytes/line with every line stamped, %.1f with half of them\n",
	       body_bytes_per_line(1), body_bytes_per_line(2));
	if (fsync_ms >= 0)
		printf("- one 4 KiB write + fdatasync: %.3f ms (median of up to %d)\n", fsync_ms, FSYNC_PROBES);
	printf("- every durable LMDB commit costs about two fdatasyncs (data, then meta page), so\n"
	       "  throughput depends on how many records share one commit\n");
	if (fsync_ms >= 0 && fsync_ms < 0.5)
		printf("- fdatasync is cheap here (a write cache acknowledges it): commits are bound by\n"
		       "  the bytes written and by CPU rather than by flush latency\n");
	printf("- %u s per case; ingest: %u connections\n", o->seconds, o->conns);
	if (o->run_delivery) {
		char par[32] = "relayd's default";
		if (o->parallel)
			snprintf(par, sizeof(par), "%u", o->parallel);
		printf("- delivery: influxd %s, %u lines per request, backlog %u points, relayd's\n"
		       "  writes in flight per backend (parallel): %s\n", o->influxd, o->dlines, o->backlog, par);
	}
	if (o->run_relayd || o->run_delivery)
		printf("- client threads share the CPUs with relayd%s\n", o->run_delivery ? " and influxd" : "");
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

/*
 * Run raw LMDB for n lines per record, k records per commit, into row
 * (named name). Returns 0 or -1.
 */
static int run_raw_case(const struct options *o, const char *tmp, unsigned n, unsigned k, const char *name,
                        struct row *row)
{
	static unsigned serial;
	struct rbuf body = RBUF_INIT;
	struct raw_case rc = { .lines = n, .per_commit = k, .body = &body,
	                       .duration_ns = o->seconds * NS_PER_S, .byte_budget = RAW_BYTE_BUDGET };
	pthread_t tid;
	int err, ret = -1;

	body_build(&body, n, 1);
	char sub[48];
	snprintf(sub, sizeof(sub), "raw-%u-%u-%u", n, k, ++serial);
	if (path_join(rc.dir, tmp, sub) < 0 || mkdir(rc.dir, 0700) < 0) {
		fprintf(stderr, "bench_ingest: cannot create '%s': %s\n", rc.dir, strerror(errno));
		goto out;
	}
	fprintf(stderr, "raw LMDB: %u lines/record, %u records/commit, %u s...\n", n, k, o->seconds);
	if ((err = pthread_create(&tid, NULL, raw_writer, &rc)) || (err = pthread_join(tid, NULL))) {
		fprintf(stderr, "bench_ingest: cannot run the writer thread: %s\n", strerror(err));
		goto out;
	}
	if (rc.rc) {
		fprintf(stderr, "bench_ingest: raw LMDB: %s failed: %s\n", rc.failed, mdb_strerror(rc.rc));
		goto out;
	}
	double secs = (double)rc.elapsed_ns / 1e9;
	*row = (struct row){ .lines = n, .conns = o->conns, .is_raw = 1, .per_commit = k,
	                     .points_s = (double)rc.records * n / secs,
	                     .requests_s = (double)rc.records / secs,
	                     .commits_s = (double)rc.commits / secs,
	                     .p50_ms = lat_percentile_ms(&rc.commit_lat, 50),
	                     .p99_ms = lat_percentile_ms(&rc.commit_lat, 99),
	                     .ref_same = -1, .ref_bound = -1 };
	snprintf(row->name, sizeof(row->name), "%s", name);
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

/*---- load: C client threads ----*/

/* Request numbers over the whole run: each makes its own timestamps. */
static atomic_uint_fast64_t g_next_request;

/* Shared by all clients of a case; read-only while they run, but issued. */
struct load_case {
	const char *req;       /* the whole request: head and body */
	size_t req_len;
	const size_t *ts_off;  /* unique: where each line's timestamp is in req; else NULL */
	unsigned lines;
	uint16_t port;
	uint64_t duration_ns;
	uint64_t max_requests; /* 0: as many as fit in duration_ns */
	atomic_uint_fast64_t issued;
	struct gate gate;
};

struct client {
	pthread_t tid;
	struct load_case *lc;
	struct http_conn conn;
	char *own;              /* unique: this client's copy of the request */
	uint64_t ok, bad;       /* 204s; other statuses */
	struct lat_vec lat;     /* send start to full response, every response */
	int first_bad_status;   /* 0 = none */
	char first_bad_body[ERR_BODY_MAX + 1];
	char failure[256];      /* transport error that stopped this client, or "" */
};

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

/* Give every line of the request its own timestamp: TS_BASE + n * lines + i. */
static void stamp_request(char *req, const size_t *ts_off, unsigned lines, uint64_t n)
{
	uint64_t ts = (uint64_t)TS_BASE + n * lines;
	for (unsigned i = 0; i < lines; i++)
		put_dec_ts(req + ts_off[i], ts + i);
}

/* One client: POST the request back to back until the deadline or the cap. */
static void *client_run(void *arg)
{
	struct client *cl = arg;
	struct load_case *lc = cl->lc;
	struct http_resp r;
	if (gate_wait(&lc->gate) < 0)
		return NULL;
	uint64_t deadline = now_mono_ns() + lc->duration_ns;
	while (now_mono_ns() < deadline) {
		const char *req = lc->req;
		if (lc->max_requests && atomic_fetch_add(&lc->issued, 1) >= lc->max_requests)
			break;
		if (cl->own) {
			stamp_request(cl->own, lc->ts_off, lc->lines, atomic_fetch_add(&g_next_request, 1));
			req = cl->own;
		}
		uint64_t t0 = now_mono_ns();
		if (http_roundtrip(&cl->conn, req, lc->req_len, &r, cl->failure, sizeof(cl->failure)) < 0)
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

/* What one load produced. */
struct load_spec {
	uint16_t port;
	unsigned conns, lines, stamp_every;
	int unique;            /* a fresh timestamp on every line of every request */
	uint64_t duration_ns;
	uint64_t max_requests; /* 0: no cap */
};

struct load_result {
	uint64_t ok;              /* 204s */
	uint64_t start_ns, end_ns; /* the gate opened; the last client finished */
	double p50_ms, p99_ms;
	int transport_failed;     /* some connection broke */
};

/* Fold the clients' results into res and errs. */
static void load_summarise(struct client *cls, unsigned n, struct load_result *res, struct run_errors *errs)
{
	struct lat_vec all = { 0 };
	for (unsigned i = 0; i < n; i++) {
		struct client *cl = &cls[i];
		res->ok += cl->ok;
		lat_append(&all, &cl->lat);
		errs->bad_status += cl->bad;
		if (cl->bad && errs->first_status == 0) {
			errs->first_status = cl->first_bad_status;
			memcpy(errs->first_body, cl->first_bad_body, sizeof(errs->first_body));
		}
		if (cl->failure[0]) {
			res->transport_failed = 1;
			note_failure(errs, cl->failure);
			fprintf(stderr, "  client %u stopped: %s\n", i, cl->failure);
		}
		if (cl->bad)
			fprintf(stderr, "  client %u: %" PRIu64 " responses other than 204 (first %d)\n", i,
			        cl->bad, cl->first_bad_status);
	}
	res->p50_ms = lat_percentile_ms(&all, 50);
	res->p99_ms = lat_percentile_ms(&all, 99);
	fprintf(stderr, "  %" PRIu64 " x 204 in %.2f s\n", res->ok, (double)(res->end_ns - res->start_ns) / 1e9);
	lat_release(&all);
}

/*
 * Run spec->conns keep-alive clients against 127.0.0.1:spec->port. Returns 0,
 * or -1 when the load could not run at all.
 */
static int run_clients(const struct load_spec *spec, struct load_result *res, struct run_errors *errs)
{
	struct rbuf body = RBUF_INIT, req = RBUF_INIT;
	struct load_case lc = { .port = spec->port, .duration_ns = spec->duration_ns, .lines = spec->lines,
	                        .max_requests = spec->max_requests,
	                        .gate = GATE_INIT };
	struct client *cls = xcalloc(spec->conns, sizeof(*cls));
	size_t *ts_off = NULL;
	unsigned started = 0;
	int err, ret = -1;

	*res = (struct load_result){ 0 };
	atomic_init(&lc.issued, 0);
	body_build(&body, spec->lines, spec->unique ? 1 : spec->stamp_every);
	request_build(&req, spec->port, &body);
	lc.req = req.data;
	lc.req_len = req.len;
	if (spec->unique) {
		/* Every line ends in a TS_WIDTH-digit timestamp and a newline. */
		size_t head = req.len - body.len, line = 0;
		ts_off = xcalloc(spec->lines, sizeof(*ts_off));
		for (size_t i = head; i < req.len; i++)
			if (req.data[i] == '\n')
				ts_off[line++] = i - TS_WIDTH;
		relay_assert(line == spec->lines);
		lc.ts_off = ts_off;
	}
	for (unsigned i = 0; i < spec->conns; i++) {
		cls[i] = (struct client){ .lc = &lc, .conn = { .fd = -1 } };
		if (spec->unique) {
			cls[i].own = xmalloc(req.len);
			memcpy(cls[i].own, req.data, req.len);
		}
		if ((err = http_conn_open(&cls[i].conn, spec->port)) < 0) {
			fprintf(stderr, "bench_ingest: cannot connect to 127.0.0.1:%u: %s\n", spec->port, strerror(-err));
			goto out;
		}
	}
	for (; started < spec->conns; started++) {
		if ((err = pthread_create(&cls[started].tid, NULL, client_run, &cls[started]))) {
			fprintf(stderr, "bench_ingest: cannot start a client thread: %s\n", strerror(err));
			break;
		}
	}
	res->start_ns = now_mono_ns();
	gate_open(&lc.gate, started == spec->conns ? 1 : -1);
	for (unsigned i = 0; i < started; i++)
		if ((err = pthread_join(cls[i].tid, NULL)))
			fprintf(stderr, "bench_ingest: pthread_join: %s\n", strerror(err));
	res->end_ns = now_mono_ns();
	if (started == spec->conns) {
		load_summarise(cls, spec->conns, res, errs);
		ret = 0;
	}
out:
	for (unsigned i = 0; i < spec->conns; i++) {
		http_conn_release(&cls[i].conn);
		lat_release(&cls[i].lat);
		free(cls[i].own);
	}
	free(cls);
	free(ts_off);
	rbuf_release(&req);
	rbuf_release(&body);
	return ret;
}

/*---- (B) ingest into relayd ----*/

/*
 * Drive relayd with o->conns clients POSTing n lines (half of them without
 * a timestamp when half_stamped) for o->seconds; relayd's /health before and
 * after gives its commits. Returns 0, or -1 when the case could not run.
 */
static int run_load_case(const struct options *o, struct child *p, unsigned n, int half_stamped,
                         struct row *row, struct run_errors *errs)
{
	struct load_spec spec = { .port = p->port, .conns = o->conns, .lines = n, .stamp_every = half_stamped ? 2 : 1,
	                          .duration_ns = o->seconds * NS_PER_S };
	struct load_result res;
	struct relayd_health h0, h1;
	fprintf(stderr, "relayd: %u lines/request (%s), %u connections, %u s...\n", n,
	        half_stamped ? "half stamped" : "all stamped", o->conns, o->seconds);
	int have_h0 = relayd_health_read(p->port, &h0) == 0;
	double relayd_cpu0 = child_cpu_s(p), self_cpu0 = self_cpu_s();
	if (run_clients(&spec, &res, errs) < 0)
		return -1;
	double relayd_cpu1 = child_cpu_s(p), self_cpu1 = self_cpu_s();
	int have_h1 = relayd_health_read(p->port, &h1) == 0;
	uint64_t elapsed = res.end_ns - res.start_ns;
	double secs = (double)elapsed / 1e9;
	*row = (struct row){ .lines = n, .conns = o->conns, .per_commit = -1, .commits_s = -1,
	                     .points_s = (double)res.ok * n / secs, .requests_s = (double)res.ok / secs,
	                     .p50_ms = res.p50_ms, .p99_ms = res.p99_ms, .ref_same = -1, .ref_bound = -1 };
	snprintf(row->name, sizeof(row->name), "relayd%s", half_stamped ? ", half stamped" : "");
	if (have_h0 && have_h1 && h1.commits > h0.commits) {
		uint64_t commits = h1.commits - h0.commits, batches = h1.batches_committed - h0.batches_committed;
		row->per_commit = (double)batches / (double)commits;
		row->commits_s = (double)commits / secs;
		fprintf(stderr, "  /health: %" PRIu64 " batches in %" PRIu64 " commits: %.2f per commit\n", batches,
		        commits, row->per_commit);
		if (batches != res.ok)
			fprintf(stderr, "  note: relayd committed %" PRIu64 " batches, the clients saw %" PRIu64 " x 204\n",
			        batches, res.ok);
	} else {
		fprintf(stderr, "bench_ingest: could not read relayd's commits from /health\n");
	}
	double rc = cpu_pct(relayd_cpu0, relayd_cpu1, elapsed), sc = cpu_pct(self_cpu0, self_cpu1, elapsed);
	if (rc >= 0 && sc >= 0)
		fprintf(stderr, "  CPU: relayd %.0f%%, clients %.0f%% (of one core)\n", rc, sc);
	return res.transport_failed ? -1 : 0;
}

/* Raw LMDB's K for a measured average group: rounded to nearest, at least 1. */
static unsigned k_of(double per_commit)
{
	unsigned k = (unsigned)(per_commit + 0.5);
	return k ? k : 1;
}

/*
 * For one N: raw K=conns, then each relayd case followed right away by raw
 * LMDB with relayd's own measured records per commit. Returns -1 when relayd
 * misbehaved badly enough that no further relayd case should run.
 */
static int run_ingest_n(const struct options *o, const char *tmp, struct child *relayd, int relayd_up,
                        unsigned n, struct row *rows, size_t *nrows, struct run_errors *errs, int *failed)
{
	int bound = -1;
	char name[48];
	if (o->run_raw) {
		snprintf(name, sizeof(name), "raw LMDB, K=%u (=conns, bound)", o->conns);
		if (run_raw_case(o, tmp, n, o->conns, name, &rows[*nrows]) == 0) {
			rows[*nrows].ref_bound = -1;
			bound = (int)(*nrows)++;
		} else {
			*failed = 1;
		}
	}
	if (!relayd_up)
		return 0;
	for (int half = 0; half <= 1; half++) {
		size_t me = *nrows;
		if (run_load_case(o, relayd, n, half, &rows[me], errs) < 0) {
			fprintf(stderr, "bench_ingest: connections failed: no further relayd cases\n");
			return -1;
		}
		rows[me].ref_bound = bound;
		(*nrows)++;
		if (!child_alive(relayd)) {
			char how[96];
			describe_exit(relayd->wstatus, how, sizeof(how));
			fprintf(stderr, "bench_ingest: relayd %s during the run\n", how);
			return -1;
		}
		if (o->run_raw && rows[me].per_commit > 0) {
			unsigned k = k_of(rows[me].per_commit);
			snprintf(name, sizeof(name), "raw LMDB, K=%u (relayd's K)", k);
			if (run_raw_case(o, tmp, n, k, name, &rows[*nrows]) == 0) {
				rows[*nrows].ref_bound = bound;
				rows[me].ref_same = (int)(*nrows)++;
			} else {
				*failed = 1;
			}
		}
	}
	return 0;
}

/*---- (C, D, E) delivery into influxd ----*/

static void delivery_spec(const struct options *o, uint16_t port, unsigned conns, struct load_spec *spec)
{
	*spec = (struct load_spec){ .port = port, .conns = conns, .lines = o->dlines, .stamp_every = 1, .unique = 1,
	                            .duration_ns = o->seconds * NS_PER_S };
}

/* Compare what influxd stored with what was sent; a shortfall is an error. */
static void count_check(const char *what, uint64_t sent, uint64_t stored, struct run_errors *errs)
{
	if (sent == stored)
		return;
	fprintf(stderr, "bench_ingest: %s: MISMATCH: %" PRIu64 " points sent, influxd stored %" PRIu64 "\n", what,
	        sent, stored);
	errs->mismatches++;
}

/* (C) the clients straight into a fresh influxd. */
static int run_direct_case(const struct options *o, const char *tmp, unsigned conns, struct drow *d,
                           struct run_errors *errs)
{
	struct child inf;
	struct load_spec spec;
	struct load_result res;
	uint64_t pw0, pw1;
	char sub[48];
	int ret = -1;
	*d = (struct drow){ .kind = D_DIRECT, .conns = conns, .lines = o->dlines, .lines_per_post = o->dlines,
	                    .cpu_relayd = -1, .ready_s = -1 };
	snprintf(sub, sizeof(sub), "influxd-direct-%u", conns);
	fprintf(stderr, "direct: %u connections x %u lines into influxd, %u s...\n", conns, o->dlines, o->seconds);
	if (influxd_start(&inf, o->influxd, tmp, sub) < 0 || influxd_points_ok(&inf, &pw0) < 0)
		goto out;
	delivery_spec(o, inf.port, conns, &spec);
	double icpu0 = child_cpu_s(&inf), scpu0 = self_cpu_s();
	if (run_clients(&spec, &res, errs) < 0)
		goto out;
	double icpu1 = child_cpu_s(&inf), scpu1 = self_cpu_s();
	if (influxd_points_ok(&inf, &pw1) < 0)
		goto out;
	uint64_t span = res.end_ns - res.start_ns;
	d->sent = res.ok * o->dlines;
	d->stored = pw1 - pw0;
	d->span_s = (double)span / 1e9;
	d->points_s = (double)d->stored / d->span_s;
	d->acked_s = (double)d->sent / d->span_s;
	d->p50_ms = res.p50_ms;
	d->p99_ms = res.p99_ms;
	d->cpu_influxd = cpu_pct(icpu0, icpu1, span);
	d->cpu_clients = cpu_pct(scpu0, scpu1, span);
	d->ran = 1;
	count_check("direct", d->sent, d->stored, errs);
	fprintf(stderr, "  %.0f points/s stored; CPU: influxd %.0f%%, clients %.0f%%\n", d->points_s, d->cpu_influxd,
	        d->cpu_clients);
	ret = res.transport_failed ? -1 : 0;
out:
	influxd_finish(&inf, o->keep);
	return ret;
}

/* (D) the clients into a relayd that delivers into a fresh influxd. */
static int run_through_case(const struct options *o, const char *tmp, unsigned conns, struct drow *d,
                            struct run_errors *errs)
{
	struct child inf, rel = { .name = "relayd" };
	struct load_spec spec;
	struct load_result res;
	struct relayd_health h0, hstop, h1;
	uint64_t pw0, pw1, done;
	char sub[48];
	int ret = -1;
	*d = (struct drow){ .kind = D_RELAYD, .conns = conns, .lines = o->dlines, .ready_s = -1 };
	fprintf(stderr, "through relayd: %u connections x %u lines, %u s, then until delivered...\n", conns, o->dlines,
	        o->seconds);
	snprintf(sub, sizeof(sub), "influxd-relayd-%u", conns);
	if (influxd_start(&inf, o->influxd, tmp, sub) < 0)
		goto out;
	snprintf(sub, sizeof(sub), "relayd-deliver-%u", conns);
	if (relayd_start(&rel, o->relayd, tmp, sub, inf.port, o->parallel) < 0 || relayd_health_read(rel.port, &h0) < 0 ||
	    influxd_points_ok(&inf, &pw0) < 0)
		goto out;
	delivery_spec(o, rel.port, conns, &spec);
	double rcpu0 = child_cpu_s(&rel), icpu0 = child_cpu_s(&inf), scpu0 = self_cpu_s();
	if (run_clients(&spec, &res, errs) < 0)
		goto out;
	double scpu1 = self_cpu_s();
	if (relayd_health_read(rel.port, &hstop) == 0)
		d->backlog_end = hstop.pending_points;
	if (relayd_wait_drained(&rel, &done, &h1) < 0)
		goto out;
	double rcpu1 = child_cpu_s(&rel), icpu1 = child_cpu_s(&inf);
	if (influxd_points_ok(&inf, &pw1) < 0)
		goto out;
	uint64_t span = done - res.start_ns, load = res.end_ns - res.start_ns;
	d->sent = res.ok * o->dlines;
	d->stored = pw1 - pw0;
	d->span_s = (double)span / 1e9;
	d->load_s = (double)load / 1e9;
	d->points_s = (double)d->stored / d->span_s;
	d->acked_s = (double)d->sent / d->load_s;
	d->p50_ms = res.p50_ms;
	d->p99_ms = res.p99_ms;
	d->retries = h1.retries - h0.retries;
	d->lines_per_post = h1.posts > h0.posts ? (double)(h1.delivered_points - h0.delivered_points) /
	                                              (double)(h1.posts - h0.posts) : -1;
	d->cpu_relayd = cpu_pct(rcpu0, rcpu1, span);
	d->cpu_influxd = cpu_pct(icpu0, icpu1, span);
	d->cpu_clients = cpu_pct(scpu0, scpu1, load);
	d->ran = 1;
	count_check("through relayd", d->sent, d->stored, errs);
	fprintf(stderr, "  %.0f points/s delivered (%.2f s load + %.2f s tail, %" PRIu64 " pending at the stop), "
	        "%.0f lines/POST; CPU: relayd %.0f%%, influxd %.0f%%, clients %.0f%%\n", d->points_s, d->load_s,
	        d->span_s - d->load_s, d->backlog_end, d->lines_per_post, d->cpu_relayd, d->cpu_influxd, d->cpu_clients);
	ret = res.transport_failed ? -1 : 0;
out:
	if (child_stop(&rel, 0) < 0)
		ret = -1;
	if (!o->keep && rel.dir[0])
		remove_tree(rel.dir);
	influxd_finish(&inf, o->keep);
	return ret;
}

/*
 * (E) a backlog of o->backlog points queued while the backend is down
 * (closed port), then relayd restarted with the backend at a fresh influxd:
 * the time from the restart until nothing is pending.
 */
static int run_drain_case(const struct options *o, const char *tmp, unsigned conns, struct drow *d,
                          struct run_errors *errs)
{
	struct child inf = { .name = "influxd" }, rel = { .name = "relayd" };
	struct load_spec spec;
	struct load_result res;
	struct relayd_health h, h1;
	uint64_t pw0, pw1, done;
	int ret = -1;
	*d = (struct drow){ .kind = D_DRAIN, .conns = conns, .lines = o->dlines, .acked_s = -1, .p50_ms = -1,
	                    .p99_ms = -1, .cpu_clients = -1 };
	fprintf(stderr, "drain: a backlog of %u points through %u connections (backend down, %llu s at most)...\n",
	        o->backlog, conns, BACKLOG_LOAD_MAX_NS / NS_PER_S);
	if (relayd_start(&rel, o->relayd, tmp, "relayd-drain", 0, o->parallel) < 0)
		goto out;
	delivery_spec(o, rel.port, conns, &spec);
	spec.duration_ns = BACKLOG_LOAD_MAX_NS;
	spec.max_requests = (o->backlog + o->dlines - 1) / o->dlines;
	if (run_clients(&spec, &res, errs) < 0 || res.transport_failed)
		goto out;
	if (relayd_health_read(rel.port, &h) < 0) {
		fprintf(stderr, "bench_ingest: cannot read relayd's /health\n");
		goto out;
	}
	d->sent = h.pending_points;
	d->load_s = (double)(res.end_ns - res.start_ns) / 1e9;
	if (h.pending_points != res.ok * o->dlines)
		fprintf(stderr, "bench_ingest: drain: %" PRIu64 " points acknowledged but %" PRIu64 " pending\n",
		        res.ok * o->dlines, h.pending_points);
	if (child_stop(&rel, 0) < 0)
		goto out;
	if (influxd_start(&inf, o->influxd, tmp, "influxd-drain") < 0 || influxd_points_ok(&inf, &pw0) < 0)
		goto out;
	fprintf(stderr, "drain: restarting relayd with its backend at influxd, %" PRIu64 " points pending...\n",
	        d->sent);
	rel.backend_port = inf.port;
	if (rel.port == inf.port || rel.port == inf.rpc_port || !port_closed(rel.port)) {
		/* influxd took relayd's old port: relayd moves. */
		uint16_t avoid[2] = { inf.port, inf.rpc_port };
		if (pick_port(&rel.port, avoid, 2) < 0)
			goto out;
	}
	double icpu0 = child_cpu_s(&inf);
	if (relayd_spawn(&rel, o->relayd) < 0 || child_wait_ready(&rel) < 0)
		goto out;
	d->ready_s = (double)(now_mono_ns() - rel.spawn_ns) / 1e9;
	if (relayd_wait_drained(&rel, &done, &h1) < 0)
		goto out;
	double rcpu = child_cpu_s(&rel), icpu1 = child_cpu_s(&inf);
	if (influxd_points_ok(&inf, &pw1) < 0)
		goto out;
	uint64_t span = done - rel.spawn_ns;
	d->stored = pw1 - pw0;
	d->span_s = (double)span / 1e9;
	d->points_s = (double)d->sent / d->span_s;
	d->retries = h1.retries;
	d->lines_per_post = h1.posts ? (double)h1.delivered_points / (double)h1.posts : -1;
	d->cpu_relayd = cpu_pct(0, rcpu, span); /* a fresh process: all its CPU is the drain's */
	d->cpu_influxd = cpu_pct(icpu0, icpu1, span);
	d->ran = 1;
	count_check("drain", d->sent, d->stored, errs);
	fprintf(stderr, "  %" PRIu64 " points drained in %.2f s (ready after %.2f s): %.0f points/s, %.0f lines/POST; "
	        "CPU: relayd %.0f%%, influxd %.0f%%\n", d->sent, d->span_s, d->ready_s, d->points_s, d->lines_per_post,
	        d->cpu_relayd, d->cpu_influxd);
	ret = 0;
out:
	if (child_stop(&rel, 0) < 0)
		ret = -1;
	if (!o->keep && rel.dir[0])
		remove_tree(rel.dir);
	influxd_finish(&inf, o->keep);
	return ret;
}

/*
 * The delivery cases, in this order: for each connection count, direct then
 * through relayd; then the drain, loaded through the most connections.
 * Returns the rows written.
 */
static size_t run_delivery(const struct options *o, const char *tmp, struct drow *rows, struct run_errors *errs,
                           int *failed)
{
	size_t n = 0;
	unsigned most = 0;
	for (size_t i = 0; i < o->ndconns; i++) {
		if (o->dconns[i] > most)
			most = o->dconns[i];
		if (run_direct_case(o, tmp, o->dconns[i], &rows[n], errs) < 0)
			*failed = 1;
		n++;
		if (run_through_case(o, tmp, o->dconns[i], &rows[n], errs) < 0)
			*failed = 1;
		n++;
	}
	if (run_drain_case(o, tmp, most, &rows[n], errs) < 0)
		*failed = 1;
	return n + 1;
}

/*---- output ----*/

static const char *fmt_ratio(const struct row *rows, const struct row *r, int ref, char *out, size_t len)
{
	if (ref < 0 || rows[ref].points_s <= 0)
		return "–";
	snprintf(out, len, "%.2f", r->points_s / rows[ref].points_s);
	return out;
}

static void print_table(const struct row *rows, size_t n, unsigned conns)
{
	printf("## Ingest (durable acknowledgement)\n\n");
	printf("| case | lines/batch | conns | records/commit | points/s | requests/s | commits/s | p50 ms | p99 ms "
	       "| vs raw, same K | vs raw, K=%u (bound) |\n", conns);
	printf("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
	for (size_t i = 0; i < n; i++) {
		const struct row *r = &rows[i];
		char a[32], b[32], c[32], d[32], e[32], k[32], s[32], u[32];
		printf("| %s | %u | %u | %s | %s | %s | %s | %s | %s | %s | %s |\n", r->name, r->lines, r->conns,
		       fmt_fixed(r->per_commit, r->is_raw ? 0 : 2, k, sizeof(k)),
		       fmt_count(r->points_s, a, sizeof(a)), fmt_count(r->requests_s, b, sizeof(b)),
		       fmt_count(r->commits_s, c, sizeof(c)), fmt_fixed(r->p50_ms, 2, d, sizeof(d)),
		       fmt_fixed(r->p99_ms, 2, e, sizeof(e)), fmt_ratio(rows, r, r->ref_same, s, sizeof(s)),
		       fmt_ratio(rows, r, r->ref_bound, u, sizeof(u)));
	}
	printf("\nrecords/commit: raw LMDB's K; for relayd, batches_committed / commits from /health (deltas).\n"
	       "vs raw, same K: relayd / the raw LMDB row run right after it with K = its records/commit\n"
	       "rounded (the fair reference). vs raw, K=%u: against raw LMDB with K = conns, which no\n"
	       "closed-loop server reaches (an upper bound); for raw rows it shows what smaller groups cost.\n"
	       "raw rows: requests/s = records/s, p50/p99 = one commit. relayd rows: p50/p99 = send start\n"
	       "to full response.\n", conns);
}

/* relayd's shutdown line, and the average group it implies when it parses. */
static void print_relayd_summary(const char *line)
{
	const char *p = strstr(line, "stopped: ");
	unsigned long long batches, commits;
	if (!line[0])
		return;
	printf("\nrelayd's log at shutdown, over all its ingest cases:\n    %s", line);
	if (p && sscanf(p, "stopped: %llu batches committed in %llu commits", &batches, &commits) == 2 &&
	    commits > 0)
		printf("so relayd put %.2f requests in a commit on average.\n", (double)batches / (double)commits);
}

static const char *drow_name(const struct drow *d)
{
	switch (d->kind) {
	case D_DIRECT: return "direct to influxd";
	case D_RELAYD: return "through relayd";
	case D_DRAIN: return "drain after outage";
	}
	return "?";
}

/* The direct row with the same connections, or the fastest for a drain. */
static int drow_ref(const struct drow *rows, size_t n, const struct drow *d)
{
	int best = -1;
	for (size_t i = 0; i < n; i++) {
		const struct drow *x = &rows[i];
		if (x->kind != D_DIRECT || !x->ran)
			continue;
		if (d->kind == D_RELAYD && x->conns == d->conns)
			return (int)i;
		if (d->kind == D_DRAIN && (best < 0 || x->points_s > rows[best].points_s))
			best = (int)i;
	}
	return d->kind == D_DRAIN ? best : -1;
}

static void print_delivery(const struct drow *rows, size_t n)
{
	printf("\n## Delivery into influxd\n\n");
	printf("| case | conns | lines/request | points sent | points in influxd | seconds | points/s | vs direct "
	       "| clients' acked points/s | p50 ms | p99 ms | lines/POST to influxd | CPU %% relayd / influxd / clients |\n");
	printf("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
	for (size_t i = 0; i < n; i++) {
		const struct drow *d = &rows[i];
		char a[32], b[32], c[32], e[32], f[32], g[32], h[32], k[32], l[32], m[32], q[32], ratio[32] = "–";
		int ref = drow_ref(rows, n, d);
		if (!d->ran) {
			printf("| %s | %u | %u | failed | | | | | | | | | |\n", drow_name(d), d->conns, d->lines);
			continue;
		}
		if (ref >= 0 && rows[ref].points_s > 0)
			snprintf(ratio, sizeof(ratio), "%.2f (c=%u)", d->points_s / rows[ref].points_s, rows[ref].conns);
		printf("| %s | %u | %u | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s / %s / %s |\n",
		       drow_name(d), d->conns, d->lines, fmt_count((double)d->sent, a, sizeof(a)),
		       fmt_count((double)d->stored, b, sizeof(b)), fmt_fixed(d->span_s, 2, c, sizeof(c)),
		       fmt_count(d->points_s, e, sizeof(e)), d->kind == D_DIRECT ? "1.00" : ratio,
		       fmt_count(d->acked_s, f, sizeof(f)), fmt_fixed(d->p50_ms, 2, g, sizeof(g)),
		       fmt_fixed(d->p99_ms, 2, h, sizeof(h)), fmt_count(d->lines_per_post, k, sizeof(k)),
		       fmt_fixed(d->cpu_relayd, 0, l, sizeof(l)), fmt_fixed(d->cpu_influxd, 0, m, sizeof(m)),
		       fmt_fixed(d->cpu_clients, 0, q, sizeof(q)));
	}
	printf("\ndirect: seconds = the load; points/s = pointsWrittenOK delta / seconds.\n"
	       "through relayd: seconds = first send until relayd's /health shows nothing pending;\n"
	       "points/s = points in influxd / seconds; clients' acked points/s is over the load alone.\n"
	       "drain: points sent = the backlog; seconds = relayd's restart until nothing pending;\n"
	       "vs direct compares with the fastest direct row (its conns in brackets).\n");
	for (size_t i = 0; i < n; i++) {
		const struct drow *d = &rows[i];
		char nm[48];
		if (!d->ran)
			continue;
		if (d->kind == D_RELAYD)
			printf("- %s, c=%u: the clients loaded for %.2f s; %s points were still pending when they "
			       "stopped; %" PRIu64 " failed POSTs.\n", drow_name(d), d->conns, d->load_s,
			       fmt_count((double)d->backlog_end, nm, sizeof(nm)), d->retries);
		if (d->kind == D_DRAIN)
			printf("- drain: the backlog took %.2f s to load through %u connections; the restarted relayd "
			       "answered /ping after %.2f s; %" PRIu64 " failed POSTs.\n", d->load_s, d->conns, d->ready_s,
			       d->retries);
		if (d->sent != d->stored)
			printf("- MISMATCH in %s, c=%u: %" PRIu64 " points sent, influxd stored %" PRIu64 ".\n",
			       drow_name(d), d->conns, d->sent, d->stored);
	}
}

static void print_errors(const struct run_errors *e)
{
	if (e->bad_status)
		printf("\nERROR: %" PRIu64 " responses other than 204; the first was %d with body:\n%s\n",
		       e->bad_status, e->first_status, e->first_body[0] ? e->first_body : "(empty)");
	if (e->transport)
		printf("\nERROR: %" PRIu64 " clients stopped on a transport error; the first: %s\n",
		       e->transport, e->first_failure);
	if (e->mismatches)
		printf("\nERROR: %" PRIu64 " cases where influxd stored a different number of points than were sent\n",
		       e->mismatches);
}

/*---- main ----*/

/*
 * One relayd serves every ingest case. The cases run interleaved (raw N
 * K=C, relayd N, raw N K=relayd's, relayd N half stamped, raw N, then the
 * next N) so that each ratio compares measurements taken seconds apart: this
 * disk's fsync time drifts. relayd sits idle (its backend is down) while
 * raw LMDB runs. The delivery cases come after, each with its own relayd
 * and influxd.
 */
int main(int argc, char **argv)
{
	struct options o;
	struct row rows[ROWS_PER_N * MAX_CASES];
	struct drow drows[2 * MAX_CASES + 1];
	struct run_errors errs = { 0 };
	struct child relayd = { .name = "relayd" };
	size_t nrows = 0, ndrows = 0;
	char tmp[PATH_MAX], summary[512] = "", la[64];
	int failed = 0, relayd_up = 0, rc;

	bench_name = "bench_ingest";
	if ((rc = options_parse(argc, argv, &o)))
		return rc;
	if ((o.run_relayd || o.run_delivery) && access(o.relayd, X_OK) < 0) {
		fprintf(stderr, "bench_ingest: cannot run relayd '%s': %s (use --relayd PATH or --only raw)\n",
		        o.relayd, strerror(errno));
		return 1;
	}
	if (o.run_delivery && access(o.influxd, X_OK) < 0) {
		fprintf(stderr, "bench_ingest: cannot run influxd '%s': %s (use --influxd PATH or --only ingest)\n",
		        o.influxd, strerror(errno));
		free(o.influxd);
		return 1;
	}
	if (make_tmpdir(tmp, sizeof(tmp)) < 0)
		return 1;
	print_machine_facts(&o, tmp);
	if (!o.run_delivery && !o.influxd)
		fprintf(stderr, "bench_ingest: no influxd on PATH: the delivery cases are skipped (--influxd PATH)\n");
	if (o.run_relayd && !(relayd_up = relayd_start(&relayd, o.relayd, tmp, "q", 0, 0) == 0))
		failed = 1;
	for (size_t i = 0; i < o.ncases && (o.run_raw || o.run_relayd); i++)
		if (run_ingest_n(&o, tmp, &relayd, relayd_up, o.lines[i], rows, &nrows, &errs, &failed) < 0)
			relayd_up = 0, failed = 1;
	int had_relayd = relayd.started;
	if (child_stop(&relayd, 0) < 0)
		failed = 1;
	else if (had_relayd)
		relayd_commit_summary(&relayd, summary, sizeof(summary));
	if (o.run_delivery)
		ndrows = run_delivery(&o, tmp, drows, &errs, &failed);
	if (nrows) {
		print_table(rows, nrows, o.conns);
		print_relayd_summary(summary);
	}
	if (ndrows)
		print_delivery(drows, ndrows);
	printf("\nload average at the end: %s\n", loadavg(la, sizeof(la)));
	print_errors(&errs);
	if (errs.bad_status || errs.transport || errs.mismatches)
		failed = 1;
	if (o.keep)
		printf("\nkept %s\n", tmp);
	else
		remove_tree(tmp);
	free(o.influxd);
	if (fflush(stdout) != 0 || ferror(stdout))
		failed = 1;
	if (failed)
		fprintf(stderr, "bench_ingest: FAILED\n");
	return failed;
}
