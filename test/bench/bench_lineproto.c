/*
 * bench_lineproto: how fast the door validates and stamps line protocol,
 * as a ratio against a reference measured in the same run: a plain scan
 * of the same body for its line ends and a copy of it (memchr + memcpy),
 * the least any validator must do. Bodies in the shape Telegraf sends
 * (cpu, mem, disk, net: 4-8 tags, 5-15 fields, a timestamp each) and one
 * of short unstamped lines. Run by hand; figures go to docs/performance.md.
 *
 *   ./build/bin/bench_lineproto [-n ROUNDS]
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "relay/base/lineproto.h"
#include "relay/base/util.h"

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void telegraf_body(struct rbuf *b, int lines)
{
	for (int i = 0; i < lines; i++) {
		int64_t t = INT64_C(1700000000000000000) + (int64_t)i * 1000;
		switch (i % 4) {
		case 0:
			rbuf_appendf(b, "cpu,cpu=cpu%d,host=web-%02d.example.com,dc=eu-west-1 usage_user=%d.25,"
			             "usage_system=1.5,usage_idle=90.125,usage_iowait=0.5,usage_irq=0,usage_softirq=0.1,"
			             "usage_steal=0,usage_guest=0,usage_nice=0.25 %" PRId64 "\n", i % 8, i % 40, i % 100, t);
			break;
		case 1:
			rbuf_appendf(b, "mem,host=web-%02d.example.com,dc=eu-west-1 active=%di,available=81234567i,"
			             "available_percent=63.2,buffered=1234i,cached=9876543i,free=123456i,total=16777216i,"
			             "used=7654321i,used_percent=36.8 %" PRId64 "\n", i % 40, i, t);
			break;
		case 2:
			rbuf_appendf(b, "disk,device=sda%d,fstype=ext4,host=web-%02d.example.com,mode=rw,path=/var/lib free=%di,"
			             "inodes_free=1234567i,inodes_total=2345678i,inodes_used=1111111i,total=500000000000i,"
			             "used=250000000000i,used_percent=50.0 %" PRId64 "\n", i % 4, i % 40, i, t);
			break;
		default:
			rbuf_appendf(b, "net,host=web-%02d.example.com,interface=eth%d bytes_recv=%di,bytes_sent=99i,"
			             "drop_in=0i,drop_out=0i,err_in=0i,err_out=0i,packets_recv=12345i,packets_sent=54321i,"
			             "state=\"up\" %" PRId64 "\n", i % 40, i % 2, i, t);
		}
	}
}

static void short_body(struct rbuf *b, int lines)
{
	for (int i = 0; i < lines; i++)
		rbuf_appendf(b, "m,k=%d v=%di\n", i % 16, i);
}

/* The reference: find every line end and copy the body. */
static size_t scan_copy(const char *body, size_t len, struct rbuf *out)
{
	size_t lines = 0;
	const char *p = body, *e = body + len;
	while (p < e) {
		const char *nl = memchr(p, '\n', (size_t)(e - p));
		if (!nl)
			nl = e;
		lines++;
		p = nl + 1;
	}
	rbuf_reset(out);
	rbuf_append(out, body, len);
	return lines;
}

static void run(const char *name, struct rbuf *body, int rounds)
{
	struct rbuf out = RBUF_INIT;
	struct lp_result res;
	struct lp_error err;
	struct lp_limits lim = { .max_line = 1 << 20, .precision = LP_PRECISION_NS, .flags = LP_F_NO_UNSIGNED };
	volatile size_t sink = 0;

	double best_ref = 1e9, best_lp = 1e9;
	for (int k = 0; k < 5; k++) {
		double t0 = now_s();
		for (int i = 0; i < rounds; i++)
			sink += scan_copy(body->data, body->len, &out);
		double t1 = now_s();
		for (int i = 0; i < rounds; i++) {
			rbuf_reset(&out);
			if (lineproto_validate_limits(body->data, body->len, INT64_C(1700000000000000000), &lim, &out, &res,
			                              &err) < 0) {
				fprintf(stderr, "%s: %s (line %zu)\n", name, err.msg, err.line);
				exit(1);
			}
			sink += res.lines;
		}
		double t2 = now_s();
		if (t1 - t0 < best_ref)
			best_ref = t1 - t0;
		if (t2 - t1 < best_lp)
			best_lp = t2 - t1;
	}
	double mb = (double)body->len * rounds / 1e6;
	printf("%-22s %8.1f MB/s validate+stamp, %8.1f MB/s scan+copy, ratio %.3f\n", name, mb / best_lp,
	       mb / best_ref, best_ref / best_lp);
	(void)sink;
	rbuf_release(&out);
}

int main(int argc, char **argv)
{
	int rounds = 200;
	if (argc == 3 && strcmp(argv[1], "-n") == 0)
		rounds = atoi(argv[2]);
	struct rbuf tel = RBUF_INIT, sh = RBUF_INIT;
	telegraf_body(&tel, 5000);
	short_body(&sh, 20000);
	printf("bodies: telegraf %zu bytes, 5000 lines; short %zu bytes, 20000 lines; %d rounds, best of 5\n",
	       tel.len, sh.len, rounds);
	run("telegraf (timestamps)", &tel, rounds);
	run("short, unstamped", &sh, rounds);
	rbuf_release(&tel);
	rbuf_release(&sh);
	return 0;
}
