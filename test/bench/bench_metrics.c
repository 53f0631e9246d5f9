/*
 * bench_metrics: what a Prometheus scrape of GET /metrics costs relayd, and
 * whether it slows the door, with 64 backends (the most a queue has).
 *
 * One relayd, 64 backends at closed loopback ports (every one down, so
 * every queue holds the whole backlog: the scrape reads 64 backends'
 * figures, none of them trivial), a backlog of BATCHES batches written
 * first. Then, in one run, interleaved so that drift on a shared machine
 * hits every case alike:
 *
 *  (1) the scrape itself: sequential GET /metrics on one keep-alive
 *      connection: latency p50/p99 and the size of the text, against GET
 *      /ping on the same connection (the door's cheapest answer) as the
 *      reference; and relayd's CPU time per scrape.
 *  (2) the door under scrapes: one writer posting small batches back to
 *      back for T seconds, alone (the reference), then with a scraper
 *      asking once a second (what Prometheus does at a 1 s interval), then
 *      with a scraper asking back to back (a worst case no real scraper
 *      makes): the writer's p50 and p99, each as a ratio to the reference.
 *
 * Run by hand, never by ctest:
 *   bench_metrics --relayd build/bin/relayd [--rounds N] [--seconds T] [--batches N]
 * Loopback only, free ports, the relayd it started stopped by its pid.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "benchkit.h"

#define NBACKENDS 64
#define SCRAPES 200u   /* per round, sequential */

struct options {
	const char *relayd;
	unsigned rounds, seconds, batches;
};

static void usage(FILE *f)
{
	fprintf(f, "usage: bench_metrics [--relayd PATH] [--rounds N] [--seconds T] [--batches N]\n"
	           "  --relayd PATH  relayd to measure (default build/bin/relayd)\n"
	           "  --rounds N     rounds of every case, interleaved (default 3)\n"
	           "  --seconds T    length of each write case (default 5)\n"
	           "  --batches N    backlog written before the cases (default 2000)\n");
}

static int options_parse(int argc, char **argv, struct options *o)
{
	static const struct option longopts[] = {
		{ "relayd", required_argument, NULL, 'r' }, { "rounds", required_argument, NULL, 'n' },
		{ "seconds", required_argument, NULL, 't' }, { "batches", required_argument, NULL, 'b' },
		{ "help", no_argument, NULL, 'h' },          { NULL, 0, NULL, 0 },
	};
	int c;
	*o = (struct options){ "build/bin/relayd", 3, 5, 2000 };
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case 'r': o->relayd = optarg; break;
		case 'n': if (parse_uint(optarg, 1, 20, &o->rounds) < 0) goto bad; break;
		case 't': if (parse_uint(optarg, 1, 600, &o->seconds) < 0) goto bad; break;
		case 'b': if (parse_uint(optarg, 0, 1000000, &o->batches) < 0) goto bad; break;
		case 'h': usage(stdout); exit(0);
		default: goto bad;
		}
	}
	if (optind == argc)
		return 0;
bad:
	usage(stderr);
	return 2;
}

/* relayd's config: 64 backends, each at a port nothing listens on. */
static int write_config(struct child *p)
{
	FILE *f = fopen(p->conf, "w");
	if (!f)
		return -1;
	fprintf(f, "data_dir: %s\nlisten: {http: 127.0.0.1:%u}\nqueue: {max_size: 1GiB}\nbackends:\n", p->dir, p->port);
	for (int i = 0; i < NBACKENDS; i++)
		fprintf(f, "  - {name: b%02d, url: \"http://127.0.0.1:%u\"}\n", i, p->backend_port);
	return fclose(f) == 0 ? 0 : -1;
}

static int post_write(struct http_conn *c, uint16_t port, unsigned n, char *err, size_t errlen)
{
	char req[512];
	struct http_resp r;
	int len = snprintf(req, sizeof(req),
	                   "POST /write?db=bench HTTP/1.1\r\nHost: 127.0.0.1:%u\r\nContent-Length: %d\r\n\r\n"
	                   "cpu,host=h%u usage=%u.5 %u000000000\n",
	                   port, (int)(snprintf(NULL, 0, "cpu,host=h%u usage=%u.5 %u000000000\n", n % 16, n, n)),
	                   n % 16, n, n);
	if (http_roundtrip(c, req, (size_t)len, &r, err, errlen) < 0)
		return -1;
	if (r.status != 204) {
		snprintf(err, errlen, "write answered %d: %.200s", r.status, r.body);
		return -1;
	}
	return 0;
}

static int get(struct http_conn *c, uint16_t port, const char *target, size_t *body_len, char *err, size_t errlen)
{
	char req[256];
	struct http_resp r;
	int len = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%u\r\n\r\n", target, port);
	if (http_roundtrip(c, req, (size_t)len, &r, err, errlen) < 0)
		return -1;
	if (r.status != 200 && r.status != 204) {
		snprintf(err, errlen, "GET %s answered %d", target, r.status);
		return -1;
	}
	if (body_len)
		*body_len = r.body_len;
	return 0;
}

/* The scraper of case (2): back to back (interval 0) or once per interval. */
struct scraper {
	uint16_t port;
	uint64_t interval_ns;
	volatile int stop;
	unsigned scrapes;
	int failed;
	pthread_t th;
};

static void *scraper_main(void *arg)
{
	struct scraper *s = arg;
	struct http_conn c = { .fd = -1 };
	char err[256];
	if (http_conn_open(&c, s->port) < 0) {
		s->failed = 1;
		return NULL;
	}
	while (!s->stop) {
		uint64_t t0 = 0;
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		t0 = (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
		if (get(&c, s->port, "/metrics", NULL, err, sizeof(err)) < 0) {
			bench_err("scraper: %s\n", err);
			s->failed = 1;
			break;
		}
		s->scrapes++;
		if (s->interval_ns) {
			clock_gettime(CLOCK_MONOTONIC, &ts);
			uint64_t spent = (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec - t0;
			/* Sleep in slices so that stop is seen within 50 ms. */
			for (uint64_t left = spent < s->interval_ns ? s->interval_ns - spent : 0; left && !s->stop;) {
				uint64_t d = left < 50000000ULL ? left : 50000000ULL;
				sleep_ns(d);
				left -= d;
			}
		}
	}
	http_conn_release(&c);
	return NULL;
}

static uint64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

enum { C_ALONE, C_PERIODIC, C_HAMMER, NCASES };
static const char *const case_name[NCASES] = { "writes alone (reference)", "writes + a scrape every 1 s",
	                                       "writes + scrapes back to back" };

/* One write case: T seconds of sequential writes, with the scraper asked. */
static int write_case(const struct options *o, uint16_t port, int which, unsigned *seq, struct lat_vec *lat,
                      unsigned *scrapes)
{
	struct http_conn c = { .fd = -1 };
	struct scraper s = { .port = port, .interval_ns = which == C_PERIODIC ? NS_PER_S : 0 };
	char err[256];
	int rc = 0;
	if (http_conn_open(&c, port) < 0)
		return -1;
	if (which != C_ALONE && pthread_create(&s.th, NULL, scraper_main, &s) != 0)
		return -1;
	uint64_t end = mono_ns() + (uint64_t)o->seconds * NS_PER_S;
	while (mono_ns() < end) {
		uint64_t t0 = mono_ns();
		if (post_write(&c, port, (*seq)++, err, sizeof(err)) < 0) {
			bench_err("%s\n", err);
			rc = -1;
			break;
		}
		lat_push(lat, mono_ns() - t0);
	}
	if (which != C_ALONE) {
		s.stop = 1;
		pthread_join(s.th, NULL);
		*scrapes += s.scrapes;
		if (s.failed)
			rc = -1;
	}
	http_conn_release(&c);
	return rc;
}

int main(int argc, char **argv)
{
	struct options o;
	struct child rel = { .name = "relayd" };
	char tmp[PATH_MAX], err[256], n1[32], n2[32], n3[32], n4[32], n5[32];
	struct lat_vec scrape = { 0 }, ping = { 0 }, wl[NCASES] = { { 0 } };
	unsigned scrapes[NCASES] = { 0 }, seq = 0;
	size_t text_len = 0;
	double cpu_scrapes = 0;
	int failed = 1, rc;

	bench_name = "bench_metrics";
	if ((rc = options_parse(argc, argv, &o)))
		return rc;
	if (access(o.relayd, X_OK) < 0) {
		bench_err("cannot run relayd '%s': %s\n", o.relayd, strerror(errno));
		return 1;
	}
	if (make_tmpdir(tmp, sizeof(tmp)) < 0)
		return 1;
	if (path_join(rel.dir, tmp, "data") < 0 || path_join(rel.conf, tmp, "relayd.yaml") < 0 ||
	    path_join(rel.log, tmp, "relayd.log") < 0 || pick_port(&rel.port, NULL, 0) < 0 ||
	    pick_port(&rel.backend_port, &rel.port, 1) < 0 || write_config(&rel) < 0)
		goto out;
	{
		char *const av[] = { (char *)o.relayd, (char *)"-c", rel.conf,
		                     geteuid() == 0 ? (char *)"--allow-root" : NULL, NULL };
		if (child_spawn(&rel, av) || child_wait_ready(&rel) < 0)
			goto out;
	}
	/* The backlog: every batch pending for all 64 backends. */
	{
		struct http_conn c = { .fd = -1 };
		if (http_conn_open(&c, rel.port) < 0)
			goto out;
		for (unsigned i = 0; i < o.batches; i++)
			if (post_write(&c, rel.port, seq++, err, sizeof(err)) < 0) {
				bench_err("backlog: %s\n", err);
				http_conn_release(&c);
				goto out;
			}
		http_conn_release(&c);
	}
	print_machine_line();
	printf("- relayd: %d backends (all down), a backlog of %u batches each, %u round(s), %u s per write case\n",
	       NBACKENDS, o.batches, o.rounds, o.seconds);
	fflush(stdout);

	for (unsigned r = 0; r < o.rounds; r++) {
		/* (1) scrapes against pings, alternating on one connection. */
		struct http_conn c = { .fd = -1 };
		if (http_conn_open(&c, rel.port) < 0)
			goto out;
		double cpu0 = child_cpu_s(&rel), cpu_ping = 0;
		for (unsigned i = 0; i < SCRAPES; i++) {
			uint64_t t0 = mono_ns();
			if (get(&c, rel.port, "/metrics", &text_len, err, sizeof(err)) < 0)
				goto fail_conn;
			lat_push(&scrape, mono_ns() - t0);
		}
		double cpu1 = child_cpu_s(&rel);
		for (unsigned i = 0; i < SCRAPES; i++) {
			uint64_t t0 = mono_ns();
			if (get(&c, rel.port, "/ping", NULL, err, sizeof(err)) < 0)
				goto fail_conn;
			lat_push(&ping, mono_ns() - t0);
		}
		cpu_ping = child_cpu_s(&rel) - cpu1;
		cpu_scrapes += (cpu1 - cpu0) - cpu_ping; /* less the door's own cost of a request */
		http_conn_release(&c);
		/* (2) the write cases, in turn. */
		for (int k = 0; k < NCASES; k++)
			if (write_case(&o, rel.port, k, &seq, &wl[k], &scrapes[k]) < 0)
				goto out;
		continue;
fail_conn:
		bench_err("%s\n", err);
		http_conn_release(&c);
		goto out;
	}

	double sp50 = lat_percentile_ms(&scrape, 50), sp99 = lat_percentile_ms(&scrape, 99);
	double pp50 = lat_percentile_ms(&ping, 50);
	printf("\n| scrape of /metrics | p50 ms | p99 ms | vs /ping p50 | size | relayd CPU per scrape |\n"
	       "|---|---|---|---|---|---|\n");
	printf("| %d backends | %s | %s | %s x (ping %s ms) | %zu KiB | %s ms |\n", NBACKENDS, fmt_fixed(sp50, 3, n1, sizeof(n1)),
	       fmt_fixed(sp99, 3, n2, sizeof(n2)), fmt_fixed(sp50 / pp50, 1, n3, sizeof(n3)), fmt_fixed(pp50, 3, n4, sizeof(n4)),
	       text_len / 1024, fmt_fixed(cpu_scrapes * 1e3 / (o.rounds * SCRAPES), 3, n5, sizeof(n5)));
	double r50 = lat_percentile_ms(&wl[C_ALONE], 50), r99 = lat_percentile_ms(&wl[C_ALONE], 99);
	printf("\n| write latency | writes | scrapes | p50 ms | p99 ms | p50 / reference | p99 / reference |\n"
	       "|---|---|---|---|---|---|---|\n");
	for (int k = 0; k < NCASES; k++) {
		size_t n = wl[k].n;
		double p50 = lat_percentile_ms(&wl[k], 50), p99 = lat_percentile_ms(&wl[k], 99);
		printf("| %s | %zu | %u | %s | %s | %s | %s |\n", case_name[k], n, scrapes[k], fmt_fixed(p50, 3, n1, sizeof(n1)),
		       fmt_fixed(p99, 3, n2, sizeof(n2)), fmt_fixed(p50 / r50, 2, n3, sizeof(n3)),
		       fmt_fixed(p99 / r99, 2, n4, sizeof(n4)));
	}
	failed = 0;
out:
	if (child_stop(&rel, 0) < 0)
		failed = 1;
	if (!failed)
		remove_tree(tmp);
	else
		bench_err("kept %s\n", tmp);
	lat_release(&scrape);
	lat_release(&ping);
	for (int k = 0; k < NCASES; k++)
		lat_release(&wl[k]);
	return failed;
}
