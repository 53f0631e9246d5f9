/*
 * bench_query: queries through relayd's /query pass-through against the same
 * queries straight to influxd, in one run.
 *
 * A private influxd (Debian's influxdb 1.6.7) on loopback gets POINTS points
 * of one measurement m in SERIES series (tag host), one field pair per point
 * (v float, n integer), one second apart per series, written straight into
 * it in large /write bodies. A relayd whose one backend is that influxd
 * serves the same data through its /query pass-through. Then, each case
 * measured on both paths and interleaved (direct, relayd, direct, relayd...)
 * so that drift on a shared machine hits both alike:
 *
 *  (1) small queries, sequential: SELECT last(v) over the last hour of one
 *      series, over one keep-alive connection, one after another: N queries
 *      (after a warm-up), latency from the send to the last byte; p50, p90,
 *      p99 and relayd's p50 minus direct's.
 *  (2) small queries, concurrent: C keep-alive connections, each sending the
 *      same query back to back for T seconds: queries/s, relayd / direct.
 *  (3) large result: SELECT * FROM m over every point, once with
 *      chunked=true&chunk_size=10000 and once without, read to the end as
 *      fast as possible (counted, not kept): MB/s, relayd / direct; relayd's
 *      peak RSS (VmHWM) before and after this case shows whether it streams
 *      the answer or holds it whole.
 *
 * The aims (from the issue): relayd's p50 within 1 ms of direct's, and large
 * results at 90 % or more of direct's bytes per second; the run ends with
 * one verdict line per aim.
 *
 * Run by hand, never by ctest. Loopback only, free ports, every process it
 * started stopped by its pid. Every phase is time-bounded: 10 s for a server
 * to become ready or to stop, 300 s for the load, 30 s for influxd to settle,
 * 30 s for one small query, 120 s for one slice of sequential queries, 300 s
 * for one large answer.
 */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "benchkit.h"

#define SERIES 4                             /* host=h0..h3 */
#define TS0_S 1600000000LL                   /* the first point's time (2020-09-13), s */
#define LOAD_LINES 50000u                    /* points per /write body, ~2.3 MB */
#define CHUNK_SIZE 10000                     /* chunk_size of the chunked large query */
#define MAX_POINTS 20000000u
#define MAX_QUERIES 10000000u
#define MAX_CONNS 256u
#define MAX_SECONDS 600u
#define MAX_ROUNDS 20u
#define WARMUP_QUERIES 200u                  /* per path, before the sequential case */
#define LOAD_MAX_NS (300 * NS_PER_S)         /* the whole load */
#define SETTLE_MAX_NS (30 * NS_PER_S)        /* waiting for influxd to go quiet */
#define SETTLE_WINDOW_NS (1 * NS_PER_S)
#define SETTLE_CPU_PCT 10.0                  /* quiet: under this % of one core */
#define QUERY_MAX_NS (30 * NS_PER_S)         /* one small query */
#define SEQ_SLICE_MAX_NS (120 * NS_PER_S)    /* one slice of sequential queries */
#define LARGE_MAX_NS (300 * NS_PER_S)        /* one large answer */
#define AIM_P50_MS 1.0
#define AIM_LARGE_RATIO 0.90

enum path { DIRECT, RELAYD, NPATHS };
static const char *const path_name[NPATHS] = { "direct to influxd", "through relayd" };

enum large_kind { L_CHUNKED, L_WHOLE, NLARGE };
static const char *const large_name[NLARGE] = { "chunked=true, chunk_size=10000", "not chunked" };

/*---- options ----*/

struct options {
	const char *relayd;
	char *influxd;
	unsigned points;   /* --points */
	unsigned queries;  /* -n: sequential small queries per path */
	unsigned conns;    /* -c */
	unsigned seconds;  /* -t: per path, for the concurrent case */
	unsigned rounds;   /* --rounds: direct/relayd alternations per case */
	int keep, direct_only;
};

static void usage(FILE *f)
{
	fprintf(f,
	        "usage: bench_query [--relayd PATH] [--influxd PATH] [--points N] [-n QUERIES]\n"
	        "                   [-c CONNS] [-t SECONDS] [--rounds R] [--direct-only] [--keep]\n"
	        "  --relayd PATH   relayd binary to start (./build/bin/relayd)\n"
	        "  --influxd PATH  influxd binary (influxd on PATH)\n"
	        "  --points N      points loaded into influxd, the large result (1000000)\n"
	        "  -n QUERIES      sequential small queries per path, after %u of warm-up (2000)\n"
	        "  -c CONNS        connections of the concurrent case (8)\n"
	        "  -t SECONDS      length of the concurrent case, per path (5)\n"
	        "  --rounds R      how many times each case alternates direct and relayd (3)\n"
	        "  --direct-only   measure influxd alone (no relayd; no comparison)\n"
	        "  --keep          keep the temporary directory (influxd's data, configs, logs)\n",
	        WARMUP_QUERIES);
}

/* Returns 0, or 2 (the exit code) after printing what is wrong. */
static int options_parse(int argc, char **argv, struct options *o)
{
	enum { OPT_RELAYD = 256, OPT_INFLUXD, OPT_POINTS, OPT_ROUNDS, OPT_DIRECT, OPT_KEEP };
	static const struct option longopts[] = {
		{ "relayd", required_argument, NULL, OPT_RELAYD },
		{ "influxd", required_argument, NULL, OPT_INFLUXD },
		{ "points", required_argument, NULL, OPT_POINTS },
		{ "rounds", required_argument, NULL, OPT_ROUNDS },
		{ "direct-only", no_argument, NULL, OPT_DIRECT },
		{ "keep", no_argument, NULL, OPT_KEEP },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *influxd = NULL;
	int c;
	*o = (struct options){ .relayd = "./build/bin/relayd", .points = 1000000, .queries = 2000, .conns = 8,
	                       .seconds = 5, .rounds = 3 };
	while ((c = getopt_long(argc, argv, "n:c:t:h", longopts, NULL)) != -1) {
		switch (c) {
		case 'n':
			if (parse_uint(optarg, 1, MAX_QUERIES, &o->queries) < 0) {
				bench_err("-n wants 1..%u queries, not '%s'\n", MAX_QUERIES, optarg);
				return 2;
			}
			break;
		case 'c':
			if (parse_uint(optarg, 1, MAX_CONNS, &o->conns) < 0) {
				bench_err("-c wants 1..%u, not '%s'\n", MAX_CONNS, optarg);
				return 2;
			}
			break;
		case 't':
			if (parse_uint(optarg, 1, MAX_SECONDS, &o->seconds) < 0) {
				bench_err("-t wants 1..%u seconds, not '%s'\n", MAX_SECONDS, optarg);
				return 2;
			}
			break;
		case OPT_POINTS:
			if (parse_uint(optarg, SERIES, MAX_POINTS, &o->points) < 0) {
				bench_err("--points wants %d..%u, not '%s'\n", SERIES, MAX_POINTS, optarg);
				return 2;
			}
			break;
		case OPT_ROUNDS:
			if (parse_uint(optarg, 1, MAX_ROUNDS, &o->rounds) < 0) {
				bench_err("--rounds wants 1..%u, not '%s'\n", MAX_ROUNDS, optarg);
				return 2;
			}
			break;
		case OPT_RELAYD:
			o->relayd = optarg;
			break;
		case OPT_INFLUXD:
			influxd = optarg;
			break;
		case OPT_DIRECT:
			o->direct_only = 1;
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
		bench_err("unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		return 2;
	}
	if (o->queries < o->rounds) {
		bench_err("-n %u is fewer queries than --rounds %u\n", o->queries, o->rounds);
		return 2;
	}
	o->influxd = influxd ? xstrdup(influxd) : find_on_path("influxd");
	if (!o->influxd) {
		bench_err("no influxd on PATH: use --influxd PATH\n");
		return 2;
	}
	return 0;
}

/*---- what went wrong ----*/

/* Over the whole run, for the summary and the exit code. */
/* An answer counts when it is a 200 whose JSON has no "error". */
static int answer_ok(const struct http_resp *r)
{
	return r->status == 200 && !strstr(r->body, "\"error\"");
}

/*---- requests ----*/

/* Append s percent-encoded for a query string. */
static void url_encode(struct rbuf *b, const char *s)
{
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;
		if (isalnum(ch) || ch == '-' || ch == '_' || ch == '.' || ch == '~')
			rbuf_appendc(b, (char)ch);
		else
			rbuf_appendf(b, "%%%02X", ch);
	}
}

/* GET /query?db=bench&q=STATEMENT[&extra] as HTTP/1.1 keep-alive, into req (reset first). */
static void query_request(struct rbuf *req, uint16_t port, const char *statement, const char *extra)
{
	rbuf_reset(req);
	rbuf_appendf(req, "GET /query?db=bench&q=");
	url_encode(req, statement);
	if (extra)
		rbuf_appendf(req, "&%s", extra);
	rbuf_appendf(req, " HTTP/1.1\r\nHost: 127.0.0.1:%u\r\nUser-Agent: bench_query\r\nAccept: application/json\r\n\r\n",
	             port);
}

/*
 * Send req on c (connecting first when c is closed, which counts in
 * *reconnects after the first time) and read the whole answer, counted, not
 * kept, within max_ns. Returns 0 with r filled, or -1 with err (c closed).
 */
static int query_once(struct http_conn *c, uint16_t port, const struct rbuf *req, uint64_t max_ns,
                      struct http_resp *r, uint64_t *wire, unsigned *reconnects, char *err, size_t errlen)
{
	int e;
	if (c->fd < 0) {
		if ((e = http_conn_open(c, port)) < 0) {
			snprintf(err, errlen, "cannot connect to 127.0.0.1:%u: %s", port, strerror(-e));
			return -1;
		}
		if (reconnects)
			(*reconnects)++;
	}
	c->deadline_ns = now_mono_ns() + max_ns;
	if ((e = send_all(c->fd, req->data, req->len)) < 0) {
		snprintf(err, errlen, "cannot send a query: %s", strerror(-e));
		http_conn_close(c);
		return -1;
	}
	if (http_read_stream(c, r, wire, err, errlen) < 0) {
		http_conn_close(c);
		return -1;
	}
	if (r->close)
		http_conn_close(c);
	return 0;
}

/*---- the data ----*/

/* The time of the last point, in ns. */
static int64_t last_ts_ns(const struct options *o)
{
	return (int64_t)(TS0_S + (o->points - 1) / SERIES) * (int64_t)NS_PER_S;
}

/* POST one /write body of points [from, to) on c. Returns 0, or -1 after a message. */
static int load_body(struct http_conn *c, uint16_t port, unsigned from, unsigned to, struct rbuf *body,
                     struct rbuf *req)
{
	struct http_resp r;
	char err[256];
	rbuf_reset(body);
	rbuf_reset(req);
	for (unsigned i = from; i < to; i++) {
		uint32_t x = i * 2654435761u; /* values that vary, the same on every run */
		rbuf_appendf(body, "m,host=h%u v=%u.%03u,n=%ui %" PRId64 "000000000\n", i % SERIES, (x >> 8) % 1000,
		             x % 1000, (x >> 4) % 100000, (int64_t)(TS0_S + i / SERIES));
	}
	rbuf_appendf(req,
	             "POST /write?db=bench&precision=ns HTTP/1.1\r\nHost: 127.0.0.1:%u\r\nUser-Agent: bench_query\r\n"
	             "Content-Type: text/plain; charset=utf-8\r\nContent-Length: %zu\r\n\r\n",
	             port, body->len);
	rbuf_append(req, body->data, body->len);
	if (c->fd < 0 && http_conn_open(c, port) < 0) {
		bench_err("cannot connect to influxd\n");
		return -1;
	}
	if (http_roundtrip(c, req->data, req->len, &r, err, sizeof(err)) < 0) {
		bench_err("loading: %s\n", err);
		return -1;
	}
	if (r.status != 204) {
		bench_err("loading: influxd answered %d: %s\n", r.status, r.body);
		return -1;
	}
	if (r.close)
		http_conn_close(c);
	return 0;
}

/* The number after "values":[["...", in a one-row answer. Returns 0 or -1. */
static int answer_count(const char *json, uint64_t *out)
{
	const char *p = json ? strstr(json, "\"values\":[[") : NULL;
	char *end;
	if (!p || !(p = strchr(p, ',')))
		return -1;
	errno = 0;
	unsigned long long v = strtoull(p + 1, &end, 10);
	if (errno || end == p + 1)
		return -1;
	*out = v;
	return 0;
}

/*
 * Write o->points points into influxd's "bench" (sequentially: one body at a
 * time), then check SELECT count(v). Returns 0, or -1 after a message.
 */
static int load_data(const struct options *o, const struct child *inf, double *secs, double *mbytes)
{
	struct http_conn c = { .fd = -1 };
	struct rbuf body = RBUF_INIT, req = RBUF_INIT, q = RBUF_INIT, ans = RBUF_INIT;
	uint64_t start = now_mono_ns(), bytes = 0, count = 0;
	int ret = -1;
	fprintf(stderr, "loading %u points into influxd (%u per request)...\n", o->points, LOAD_LINES);
	for (unsigned from = 0; from < o->points; from += LOAD_LINES) {
		unsigned to = o->points - from < LOAD_LINES ? o->points : from + LOAD_LINES;
		if (now_mono_ns() - start > LOAD_MAX_NS) {
			bench_err("loading took over %llu s\n", LOAD_MAX_NS / NS_PER_S);
			goto out;
		}
		if (load_body(&c, inf->port, from, to, &body, &req) < 0)
			goto out;
		bytes += body.len;
	}
	*secs = (double)(now_mono_ns() - start) / 1e9;
	*mbytes = (double)bytes / 1e6;
	rbuf_appendf(&q, "/query?db=bench&q=");
	url_encode(&q, "SELECT count(v) FROM m");
	rbuf_cstr(&q);
	int status = http_control(inf->port, "GET", q.data, &ans);
	if (status != 200 || answer_count(ans.data, &count) < 0 || count != o->points) {
		bench_err("influxd holds %" PRIu64 " points, not %u (status %d: %.200s)\n", count, o->points, status,
		          ans.data ? ans.data : "");
		goto out;
	}
	fprintf(stderr, "  %u points, %.1f MB in %.2f s; SELECT count(v) agrees\n", o->points, *mbytes, *secs);
	ret = 0;
out:
	http_conn_release(&c);
	rbuf_release(&body);
	rbuf_release(&req);
	rbuf_release(&q);
	rbuf_release(&ans);
	return ret;
}

/* Wait until influxd uses under SETTLE_CPU_PCT of a core for a second (its compactions after the load). */
static void settle(const struct child *inf)
{
	uint64_t start = now_mono_ns();
	double pct = -1;
	while (now_mono_ns() - start < SETTLE_MAX_NS) {
		double c0 = child_cpu_s(inf);
		sleep_ns(SETTLE_WINDOW_NS);
		pct = cpu_pct(c0, child_cpu_s(inf), SETTLE_WINDOW_NS);
		if (pct >= 0 && pct < SETTLE_CPU_PCT) {
			fprintf(stderr, "influxd is quiet (%.0f%% of a core) after %.1f s\n", pct,
			        (double)(now_mono_ns() - start) / 1e9);
			return;
		}
	}
	fprintf(stderr, "influxd still used %.0f%% of a core after %llu s: measuring anyway\n", pct,
	        SETTLE_MAX_NS / NS_PER_S);
}

/*---- (1) small queries, sequential ----*/

struct seq_path {
	struct http_conn conn;
	struct lat_vec lat;
	uint64_t ok, body_len;
	unsigned reconnects;
	double p50, p90, p99; /* ms */
	int ran;
};

/*
 * count queries over p's connection, one after another, latencies kept when
 * record. Returns 0, or -1 when a query failed in transport (recorded in e).
 */
static int seq_slice(struct seq_path *p, uint16_t port, const struct rbuf *req, unsigned count, int record,
                     struct run_errors *e)
{
	struct http_resp r;
	char err[256];
	uint64_t start = now_mono_ns();
	for (unsigned i = 0; i < count; i++) {
		if (now_mono_ns() - start > SEQ_SLICE_MAX_NS) {
			snprintf(err, sizeof(err), "%u queries took over %llu s", count, SEQ_SLICE_MAX_NS / NS_PER_S);
			note_failure(e, err);
			return -1;
		}
		uint64_t t0 = now_mono_ns();
		if (query_once(&p->conn, port, req, QUERY_MAX_NS, &r, NULL, &p->reconnects, err, sizeof(err)) < 0) {
			note_failure(e, err);
			return -1;
		}
		uint64_t t = now_mono_ns() - t0;
		if (!answer_ok(&r)) {
			note_bad(e, &r);
			continue;
		}
		if (record) {
			lat_push(&p->lat, t);
			p->ok++;
			p->body_len = r.body_len;
		}
	}
	return 0;
}

/*---- (2) small queries, concurrent ----*/

struct worker {
	pthread_t tid;
	struct gate *gate;
	uint16_t port;
	const struct rbuf *req;
	uint64_t duration_ns;
	struct http_conn conn;
	struct lat_vec lat;
	uint64_t ok;
	unsigned reconnects;
	struct run_errors errs;
};

static void *worker_run(void *arg)
{
	struct worker *w = arg;
	struct http_resp r;
	char err[256];
	if (gate_wait(w->gate) < 0)
		return NULL;
	uint64_t deadline = now_mono_ns() + w->duration_ns;
	while (now_mono_ns() < deadline) {
		uint64_t t0 = now_mono_ns();
		if (query_once(&w->conn, w->port, w->req, QUERY_MAX_NS, &r, NULL, &w->reconnects, err, sizeof(err)) <
		    0) {
			note_failure(&w->errs, err);
			break;
		}
		lat_push(&w->lat, now_mono_ns() - t0);
		if (answer_ok(&r))
			w->ok++;
		else
			note_bad(&w->errs, &r);
	}
	return NULL;
}

struct conc_path {
	uint64_t ok, span_ns;
	unsigned reconnects;
	struct lat_vec lat;
	double cpu_relayd_s, cpu_influxd_s, cpu_self_s; /* sums over the slices */
	double qps, p50, p99;
	int ran;
};

/* One slice: conns workers for duration_ns. Returns 0, or -1 when it could not run or a connection broke. */
static int conc_slice(struct conc_path *p, unsigned conns, uint16_t port, const struct rbuf *req,
                      uint64_t duration_ns, const struct child *rel, const struct child *inf, struct run_errors *e)
{
	struct gate gate = GATE_INIT;
	struct worker *ws = xcalloc(conns, sizeof(*ws));
	unsigned started = 0;
	int err, ret = -1;
	for (unsigned i = 0; i < conns; i++) {
		ws[i] = (struct worker){ .gate = &gate, .port = port, .req = req, .duration_ns = duration_ns,
		                         .conn = { .fd = -1 } };
		if ((err = http_conn_open(&ws[i].conn, port)) < 0) {
			bench_err("cannot connect to 127.0.0.1:%u: %s\n", port, strerror(-err));
			goto out;
		}
	}
	for (; started < conns; started++)
		if ((err = pthread_create(&ws[started].tid, NULL, worker_run, &ws[started]))) {
			bench_err("cannot start a client thread: %s\n", strerror(err));
			break;
		}
	double r0 = rel ? child_cpu_s(rel) : -1, i0 = child_cpu_s(inf), s0 = self_cpu_s();
	uint64_t t0 = now_mono_ns();
	gate_open(&gate, started == conns ? 1 : -1);
	for (unsigned i = 0; i < started; i++)
		pthread_join(ws[i].tid, NULL);
	uint64_t span = now_mono_ns() - t0;
	if (started < conns)
		goto out;
	p->span_ns += span;
	if (rel)
		p->cpu_relayd_s += child_cpu_s(rel) - r0;
	p->cpu_influxd_s += child_cpu_s(inf) - i0;
	p->cpu_self_s += self_cpu_s() - s0;
	ret = 0;
	for (unsigned i = 0; i < conns; i++) {
		p->ok += ws[i].ok;
		p->reconnects += ws[i].reconnects;
		lat_append(&p->lat, &ws[i].lat);
		if (ws[i].errs.transport) {
			fprintf(stderr, "  client %u stopped: %s\n", i, ws[i].errs.first_failure);
			ret = -1;
		}
		errors_merge(e, &ws[i].errs);
	}
out:
	for (unsigned i = 0; i < conns; i++) {
		http_conn_release(&ws[i].conn);
		lat_release(&ws[i].lat);
	}
	free(ws);
	return ret;
}

/*---- (3) large result ----*/

struct large_path {
	double rate[MAX_ROUNDS];  /* body bytes/s of each run */
	double secs[MAX_ROUNDS];
	unsigned runs;
	uint64_t body_len, wire_len;
	int te_chunked;           /* the HTTP answer came with Transfer-Encoding: chunked */
	double cpu_relayd_s, cpu_influxd_s, cpu_self_s, span_s;
	double median, best;      /* MB/s */
	double paired;            /* relayd: the median of its runs' rates / the direct runs' just before; -1 n/a */
};

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

/* The median of v[0..n), which it sorts; -1 when n is 0. */
static double median(double *v, unsigned n)
{
	if (n == 0)
		return -1;
	qsort(v, n, sizeof(*v), cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* One large query on a fresh connection, read to the end. Returns 0, or -1 (recorded in e). */
static int large_run(struct large_path *p, uint16_t port, const struct rbuf *req, const struct child *rel,
                     const struct child *inf, struct run_errors *e, int record)
{
	struct http_conn c = { .fd = -1 };
	struct http_resp r;
	uint64_t wire = 0;
	char err[256];
	int ret = -1, rc;
	if ((rc = http_conn_open(&c, port)) < 0) {
		snprintf(err, sizeof(err), "cannot connect to 127.0.0.1:%u: %s", port, strerror(-rc));
		note_failure(e, err);
		goto out;
	}
	double r0 = rel ? child_cpu_s(rel) : -1, i0 = child_cpu_s(inf), s0 = self_cpu_s();
	uint64_t t0 = now_mono_ns();
	if (query_once(&c, port, req, LARGE_MAX_NS, &r, &wire, NULL, err, sizeof(err)) < 0) {
		note_failure(e, err);
		goto out;
	}
	uint64_t t = now_mono_ns() - t0;
	if (!answer_ok(&r)) {
		note_bad(e, &r);
		goto out;
	}
	ret = 0;
	if (!record)
		goto out;
	if (p->runs && p->body_len != r.body_len) {
		fprintf(stderr, "  MISMATCH: an answer of %zu bytes after one of %" PRIu64 "\n", r.body_len,
		        p->body_len);
		e->mismatches++;
	}
	p->secs[p->runs] = (double)t / 1e9;
	p->rate[p->runs] = (double)r.body_len / p->secs[p->runs];
	p->runs++;
	p->body_len = r.body_len;
	p->wire_len = wire;
	p->te_chunked = r.chunked;
	p->span_s += (double)t / 1e9;
	if (rel)
		p->cpu_relayd_s += child_cpu_s(rel) - r0;
	p->cpu_influxd_s += child_cpu_s(inf) - i0;
	p->cpu_self_s += self_cpu_s() - s0;
	fprintf(stderr, "  %.1f MB in %.3f s: %.1f MB/s\n", (double)r.body_len / 1e6, p->secs[p->runs - 1],
	        p->rate[p->runs - 1] / 1e6);
out:
	http_conn_release(&c);
	return ret;
}

/*---- output ----*/

static void print_facts(const struct options *o, const char *tmp, double load_s, double load_mb)
{
	char la[64], cpu[128];
	printf("# bench_query\n\n");
	print_machine_line();
	printf("- CPU: %s\n", cpu_model(cpu, sizeof(cpu)));
	printf("- load average before the cases: %s\n", loadavg(la, sizeof(la)));
	printf("- data in %s (%s)\n", tmp, fs_name(tmp));
	printf("- influxd %s; relayd %s\n", o->influxd, o->direct_only ? "not started (--direct-only)" : o->relayd);
	printf("- data: %u points of m in %d series (host), fields v (float) and n (integer), one second\n"
	       "  apart per series; %.1f MB of line protocol loaded straight into influxd in %.2f s\n",
	       o->points, SERIES, load_mb, load_s);
	printf("- small query: SELECT last(v) FROM m WHERE host='h1' AND time > (last point - 1 h);\n"
	       "  %u sequential after %u of warm-up, then %u connections for %u s, per path\n", o->queries,
	       WARMUP_QUERIES, o->conns, o->seconds);
	printf("- large query: SELECT * FROM m (%u rows), chunked and not\n", o->points);
	if (o->direct_only)
		printf("- each case in %u slices; clients share the CPUs with influxd\n\n", o->rounds);
	else
		printf("- each case alternates direct and relayd %u times; clients share the CPUs with relayd and\n"
		       "  influxd\n\n", o->rounds);
}

static void print_seq(const struct seq_path *s)
{
	char a[32], b[32], c[32], d[32];
	printf("## Small queries, sequential (one keep-alive connection)\n\n");
	printf("| path | queries | p50 ms | p90 ms | p99 ms | answer bytes | reconnects |\n");
	printf("|---|---:|---:|---:|---:|---:|---:|\n");
	for (int p = 0; p < NPATHS; p++) {
		if (!s[p].ran)
			continue;
		printf("| %s | %s | %s | %s | %s | %" PRIu64 " | %u |\n", path_name[p], fmt_count((double)s[p].ok, a, sizeof(a)),
		       fmt_fixed(s[p].p50, 3, b, sizeof(b)), fmt_fixed(s[p].p90, 3, c, sizeof(c)),
		       fmt_fixed(s[p].p99, 3, d, sizeof(d)), s[p].body_len, s[p].reconnects ? s[p].reconnects - 1 : 0);
	}
	if (s[DIRECT].ran && s[RELAYD].ran && s[DIRECT].p50 >= 0 && s[RELAYD].p50 >= 0)
		printf("\nrelayd − direct: p50 %+.3f ms, p90 %+.3f ms, p99 %+.3f ms\n", s[RELAYD].p50 - s[DIRECT].p50,
		       s[RELAYD].p90 - s[DIRECT].p90, s[RELAYD].p99 - s[DIRECT].p99);
	printf("\nlatency: from the send to the last byte of the answer. %u queries of warm-up per path\n"
	       "are not counted. reconnects: connections the server closed (0 with keep-alive).\n\n",
	       WARMUP_QUERIES);
}

static void print_conc(const struct conc_path *cp, unsigned conns)
{
	char a[32], b[32], c[32], d[32], e[32], f[32], g[32], ratio[32];
	printf("## Small queries, concurrent (%u keep-alive connections)\n\n", conns);
	printf("| path | conns | seconds | queries | queries/s | vs direct | p50 ms | p99 ms "
	       "| CPU %% relayd / influxd / clients |\n");
	printf("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
	for (int p = 0; p < NPATHS; p++) {
		const struct conc_path *x = &cp[p];
		double span = (double)x->span_ns / 1e9;
		if (!x->ran)
			continue;
		snprintf(ratio, sizeof(ratio), "–");
		if (p == DIRECT)
			snprintf(ratio, sizeof(ratio), "1.00");
		else if (cp[DIRECT].ran && cp[DIRECT].qps > 0)
			snprintf(ratio, sizeof(ratio), "%.2f", x->qps / cp[DIRECT].qps);
		printf("| %s | %u | %.2f | %s | %s | %s | %s | %s | %s / %s / %s |\n", path_name[p], conns, span,
		       fmt_count((double)x->ok, a, sizeof(a)), fmt_count(x->qps, b, sizeof(b)), ratio,
		       fmt_fixed(x->p50, 3, c, sizeof(c)), fmt_fixed(x->p99, 3, d, sizeof(d)),
		       fmt_fixed(p == RELAYD ? 100 * x->cpu_relayd_s / span : -1, 0, e, sizeof(e)),
		       fmt_fixed(100 * x->cpu_influxd_s / span, 0, f, sizeof(f)),
		       fmt_fixed(100 * x->cpu_self_s / span, 0, g, sizeof(g)));
	}
	printf("\nqueries/s: answered queries (200, no error) / seconds, summed over the slices.\n\n");
}

static void print_large(struct large_path lp[NLARGE][NPATHS], unsigned points, long rss0, long rss1)
{
	char e[32], f[32], g[32];
	printf("## Large result (SELECT * FROM m, %u rows), read to the end\n\n", points);
	printf("| query | path | runs | answer MB | HTTP body | median s | MB/s (median) | MB/s (best) | vs direct "
	       "| CPU %% relayd / influxd / client |\n");
	printf("|---|---|---:|---:|---|---:|---:|---:|---:|---:|\n");
	for (int k = 0; k < NLARGE; k++)
		for (int p = 0; p < NPATHS; p++) {
			struct large_path *x = &lp[k][p];
			char ratio[32] = "–";
			if (!x->runs)
				continue;
			double secs[MAX_ROUNDS];
			memcpy(secs, x->secs, sizeof(secs));
			if (p == DIRECT)
				snprintf(ratio, sizeof(ratio), "1.00");
			else if (x->paired > 0)
				snprintf(ratio, sizeof(ratio), "%.2f", x->paired);
			printf("| %s | %s | %u | %.1f | %s | %.3f | %.1f | %.1f | %s | %s / %s / %s |\n", large_name[k],
			       path_name[p], x->runs, (double)x->body_len / 1e6,
			       x->te_chunked ? "chunked" : "Content-Length", median(secs, x->runs), x->median, x->best, ratio,
			       fmt_fixed(p == RELAYD ? 100 * x->cpu_relayd_s / x->span_s : -1, 0, e, sizeof(e)),
			       fmt_fixed(100 * x->cpu_influxd_s / x->span_s, 0, f, sizeof(f)),
			       fmt_fixed(100 * x->cpu_self_s / x->span_s, 0, g, sizeof(g)));
		}
	printf("\nanswer MB: the decoded body (the JSON), 10^6 bytes; MB/s = answer MB / (send to last byte).\n"
	       "vs direct: the median over the rounds of relayd's MB/s / direct's in the run just before it.\n"
	       "A fresh connection per run; one unmeasured run straight to influxd warms it first.\n");
	if (rss0 >= 0 && rss1 >= 0)
		printf("relayd's peak RSS (VmHWM): %.1f MiB before the large case, %.1f MiB after.\n", rss0 / 1024.0,
		       rss1 / 1024.0);
	printf("\n");
}

/* One line per aim: met, NOT met or not measured. */
static void print_verdicts(const struct seq_path *s, struct large_path lp[NLARGE][NPATHS], long rss0, long rss1,
                           int direct_only)
{
	printf("## Verdict\n\n");
	if (direct_only) {
		printf("- not measured: --direct-only (no relayd)\n");
		return;
	}
	if (s[DIRECT].ran && s[RELAYD].ran && s[DIRECT].p50 >= 0 && s[RELAYD].p50 >= 0) {
		double d = s[RELAYD].p50 - s[DIRECT].p50;
		printf("- p50 within %.0f ms of direct: %s (relayd %.3f ms, direct %.3f ms: %+.3f ms)\n", AIM_P50_MS,
		       d <= AIM_P50_MS ? "met" : "NOT met", s[RELAYD].p50, s[DIRECT].p50, d);
	} else {
		printf("- p50 within %.0f ms of direct: not measured\n", AIM_P50_MS);
	}
	for (int k = 0; k < NLARGE; k++) {
		const struct large_path *dp = &lp[k][DIRECT], *rp = &lp[k][RELAYD];
		if (dp->runs && rp->runs && rp->paired > 0) {
			double ratio = rp->paired;
			printf("- large result (%s) at >= %.0f %% of direct's bytes/s: %s (%.0f %%; medians %.1f vs %.1f "
			       "MB/s)\n", large_name[k], 100 * AIM_LARGE_RATIO, ratio >= AIM_LARGE_RATIO ? "met" : "NOT met",
			       100 * ratio, rp->median, dp->median);
		} else {
			printf("- large result (%s) at >= %.0f %% of direct's bytes/s: not measured\n", large_name[k],
			       100 * AIM_LARGE_RATIO);
		}
	}
	uint64_t biggest = 0;
	for (int k = 0; k < NLARGE; k++)
		if (lp[k][RELAYD].runs && lp[k][RELAYD].body_len > biggest)
			biggest = lp[k][RELAYD].body_len;
	if (rss0 >= 0 && rss1 >= 0 && biggest) {
		double grew = (double)(rss1 - rss0) * 1024;
		printf("- streaming (relayd's peak RSS grew by less than a quarter of the largest answer): %s "
		       "(+%.1f MiB for %.1f MB)\n", grew < (double)biggest / 4 ? "met" : "NOT met", grew / 1048576,
		       (double)biggest / 1e6);
	}
}

static void print_errors(const struct run_errors *e)
{
	if (e->bad_status)
		printf("\nERROR: %" PRIu64 " answers other than 200 without error; the first was %d with body:\n%s\n",
		       e->bad_status, e->first_status, e->first_body[0] ? e->first_body : "(empty)");
	if (e->transport)
		printf("\nERROR: %" PRIu64 " queries or clients stopped on a transport error; the first: %s\n",
		       e->transport, e->first_failure);
	if (e->mismatches)
		printf("\nERROR: %" PRIu64 " answers to the same query differed (between runs or paths)\n", e->mismatches);
}

/*---- main ----*/

/*
 * The first answer of each path to the small query: relayd must answer
 * /query (a 404 means it has no pass-through) and say what influxd says.
 * Returns 0, or -1 after a message.
 */
static int probe(const struct options *o, uint16_t port[NPATHS], const struct rbuf req[NPATHS],
                 struct run_errors *errs)
{
	struct http_resp r[NPATHS];
	char err[256];
	for (int p = 0; p < NPATHS; p++) {
		struct http_conn c = { .fd = -1 };
		if (p == RELAYD && o->direct_only)
			break;
		int rc = query_once(&c, port[p], &req[p], QUERY_MAX_NS, &r[p], NULL, NULL, err, sizeof(err));
		http_conn_release(&c);
		if (rc < 0) {
			bench_err("%s: the first query failed: %s\n", path_name[p], err);
			return -1;
		}
		if (p == RELAYD && r[p].status == 404) {
			bench_err("relayd (%s) answers 404 to GET /query: it has no query pass-through, so there is\n"
			          "nothing to compare. Use a relayd that has one, or --direct-only.\n", o->relayd);
			return -1;
		}
		if (!answer_ok(&r[p])) {
			bench_err("%s: the first query was answered %d: %s\n", path_name[p], r[p].status, r[p].body);
			return -1;
		}
		fprintf(stderr, "%s: %d, %zu bytes: %s", path_name[p], r[p].status, r[p].body_len, r[p].body);
	}
	if (!o->direct_only && (r[DIRECT].body_len != r[RELAYD].body_len || strcmp(r[DIRECT].body, r[RELAYD].body))) {
		bench_err("MISMATCH: relayd's answer differs from influxd's:\n  direct: %s\n  relayd: %s\n",
		          r[DIRECT].body, r[RELAYD].body);
		errs->mismatches++;
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct options o;
	struct child inf = { .name = "influxd" }, rel = { .name = "relayd" };
	struct run_errors errs = { 0 };
	struct seq_path seq[NPATHS] = { { .conn = { .fd = -1 } }, { .conn = { .fd = -1 } } };
	struct conc_path conc[NPATHS] = { 0 };
	struct large_path large[NLARGE][NPATHS];
	struct rbuf small[NPATHS] = { RBUF_INIT, RBUF_INIT }, big[NLARGE][NPATHS];
	uint16_t port[NPATHS];
	char tmp[PATH_MAX], la[64], stmt[160];
	double load_s = 0, load_mb = 0;
	long rss0 = -1, rss1 = -1;
	int failed = 1, rc, npaths;

	bench_name = "bench_query";
	memset(large, 0, sizeof(large));
	memset(big, 0, sizeof(big));
	if ((rc = options_parse(argc, argv, &o)))
		return rc;
	npaths = o.direct_only ? 1 : NPATHS;
	if (!o.direct_only && access(o.relayd, X_OK) < 0) {
		bench_err("cannot run relayd '%s': %s (use --relayd PATH or --direct-only)\n", o.relayd, strerror(errno));
		free(o.influxd);
		return 1;
	}
	if (access(o.influxd, X_OK) < 0) {
		bench_err("cannot run influxd '%s': %s (use --influxd PATH)\n", o.influxd, strerror(errno));
		free(o.influxd);
		return 1;
	}
	if (make_tmpdir(tmp, sizeof(tmp)) < 0) {
		free(o.influxd);
		return 1;
	}
	if (influxd_start(&inf, o.influxd, tmp, "influxd") < 0 || load_data(&o, &inf, &load_s, &load_mb) < 0)
		goto out;
	port[DIRECT] = inf.port;
	if (!o.direct_only) {
		if (relayd_start(&rel, o.relayd, tmp, "relayd", inf.port, 0) < 0)
			goto out;
		port[RELAYD] = rel.port;
	}
	settle(&inf);

	snprintf(stmt, sizeof(stmt), "SELECT last(v) FROM m WHERE host='h1' AND time > %" PRId64,
	         last_ts_ns(&o) - 3600 * (int64_t)NS_PER_S);
	for (int p = 0; p < npaths; p++) {
		query_request(&small[p], port[p], stmt, NULL);
		query_request(&big[L_CHUNKED][p], port[p], "SELECT * FROM m", "chunked=true&chunk_size=10000");
		query_request(&big[L_WHOLE][p], port[p], "SELECT * FROM m", NULL);
	}
	if (probe(&o, port, small, &errs) < 0)
		goto out;
	print_facts(&o, tmp, load_s, load_mb);
	fflush(stdout);

	/* (1) sequential: warm-up, then the slices, alternating. */
	fprintf(stderr, "small queries, sequential: %u per path after %u of warm-up...\n", o.queries, WARMUP_QUERIES);
	int seq_ok = 1;
	for (int p = 0; p < npaths && seq_ok; p++)
		if (seq_slice(&seq[p], port[p], &small[p], WARMUP_QUERIES, 0, &errs) < 0)
			seq_ok = 0;
	for (unsigned r = 0; r < o.rounds && seq_ok; r++) {
		unsigned n = o.queries / o.rounds + (r < o.queries % o.rounds);
		for (int p = 0; p < npaths && seq_ok; p++)
			if (seq_slice(&seq[p], port[p], &small[p], n, 1, &errs) < 0)
				seq_ok = 0;
	}
	for (int p = 0; p < npaths; p++) {
		seq[p].ran = seq_ok;
		seq[p].p50 = lat_percentile_ms(&seq[p].lat, 50);
		seq[p].p90 = lat_percentile_ms(&seq[p].lat, 90);
		seq[p].p99 = lat_percentile_ms(&seq[p].lat, 99);
		fprintf(stderr, "  %s: p50 %.3f ms, p99 %.3f ms over %" PRIu64 "\n", path_name[p], seq[p].p50,
		        seq[p].p99, seq[p].ok);
		http_conn_release(&seq[p].conn);
	}

	/* (2) concurrent: -t seconds per path, in o.rounds slices each. */
	fprintf(stderr, "small queries, concurrent: %u connections, %u s per path...\n", o.conns, o.seconds);
	int conc_ok = 1;
	uint64_t slice_ns = (uint64_t)o.seconds * NS_PER_S / o.rounds;
	for (unsigned r = 0; r < o.rounds && conc_ok; r++)
		for (int p = 0; p < npaths && conc_ok; p++)
			if (conc_slice(&conc[p], o.conns, port[p], &small[p], slice_ns, p == RELAYD ? &rel : NULL, &inf,
			               &errs) < 0)
				conc_ok = 0;
	for (int p = 0; p < npaths; p++) {
		conc[p].ran = conc_ok && conc[p].span_ns > 0;
		if (conc[p].ran)
			conc[p].qps = (double)conc[p].ok * 1e9 / (double)conc[p].span_ns;
		conc[p].p50 = lat_percentile_ms(&conc[p].lat, 50);
		conc[p].p99 = lat_percentile_ms(&conc[p].lat, 99);
		fprintf(stderr, "  %s: %.0f queries/s\n", path_name[p], conc[p].qps);
	}

	/* (3) large: one warm-up straight to influxd, then the runs, alternating. */
	fprintf(stderr, "large result: SELECT * FROM m, %u rows, %u runs per path and kind...\n", o.points, o.rounds);
	if (!o.direct_only)
		rss0 = child_peak_rss_kib(&rel);
	int large_ok = large_run(&large[L_WHOLE][DIRECT], port[DIRECT], &big[L_WHOLE][DIRECT], NULL, &inf, &errs, 0) == 0;
	for (unsigned r = 0; r < o.rounds && large_ok; r++)
		for (int k = 0; k < NLARGE && large_ok; k++)
			for (int p = 0; p < npaths && large_ok; p++) {
				fprintf(stderr, " %s, %s:\n", large_name[k], path_name[p]);
				if (large_run(&large[k][p], port[p], &big[k][p], p == RELAYD ? &rel : NULL, &inf, &errs, 1) < 0)
					large_ok = 0;
			}
	if (!o.direct_only)
		rss1 = child_peak_rss_kib(&rel);
	for (int k = 0; k < NLARGE; k++)
		for (int p = 0; p < npaths; p++) {
			struct large_path *x = &large[k][p];
			double rates[MAX_ROUNDS];
			memcpy(rates, x->rate, sizeof(rates));
			x->median = median(rates, x->runs) / 1e6;
			x->best = x->runs ? rates[x->runs - 1] / 1e6 : -1;
			x->paired = -1;
		}
	for (int k = 0; k < NLARGE && !o.direct_only; k++) {
		/* Pair each relayd run with the direct run just before it: drift cancels within a pair. */
		struct large_path *d = &large[k][DIRECT], *x = &large[k][RELAYD];
		double ratios[MAX_ROUNDS];
		unsigned n = d->runs < x->runs ? d->runs : x->runs;
		for (unsigned r = 0; r < n; r++)
			ratios[r] = x->rate[r] / d->rate[r];
		if (n)
			x->paired = median(ratios, n);
	}
	for (int k = 0; k < NLARGE && !o.direct_only; k++)
		if (large[k][DIRECT].runs && large[k][RELAYD].runs &&
		    large[k][DIRECT].body_len != large[k][RELAYD].body_len) {
			bench_err("MISMATCH: %s: influxd's answer has %" PRIu64 " bytes, relayd's %" PRIu64 "\n",
			          large_name[k], large[k][DIRECT].body_len, large[k][RELAYD].body_len);
			errs.mismatches++;
		}

	if (seq_ok)
		print_seq(seq);
	if (conc_ok)
		print_conc(conc, o.conns);
	if (large_ok)
		print_large(large, o.points, rss0, rss1);
	print_verdicts(seq, large, rss0, rss1, o.direct_only);
	printf("\nload average at the end: %s\n", loadavg(la, sizeof(la)));
	print_errors(&errs);
	failed = !seq_ok || !conc_ok || !large_ok || errs.bad_status || errs.transport || errs.mismatches;
	if (!o.direct_only && !child_alive(&rel)) {
		bench_err("relayd died during the run\n");
		failed = 1;
	}
out:
	if (child_stop(&rel, 0) < 0)
		failed = 1;
	influxd_finish(&inf, o.keep);
	for (int p = 0; p < NPATHS; p++) {
		lat_release(&seq[p].lat);
		lat_release(&conc[p].lat);
		rbuf_release(&small[p]);
		for (int k = 0; k < NLARGE; k++)
			rbuf_release(&big[k][p]);
	}
	if (o.keep)
		printf("\nkept %s\n", tmp);
	else
		remove_tree(tmp);
	free(o.influxd);
	if (fflush(stdout) != 0 || ferror(stdout))
		failed = 1;
	if (failed)
		bench_err("FAILED\n");
	return failed;
}
