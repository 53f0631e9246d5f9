/*
 * test_replay_round: the pure step of delivery, from batches to writes
 * (relay/delivery/replay_round.h). Coalescing takes only batches for the
 * same db, rp, precision and credentials, within the backend's lines and
 * bytes per write; the shares of a write keep every series in one lane and
 * in queue order, and are balanced by bytes; a v2 backend's minutes and
 * hours become seconds exactly (negative timestamps too), and a batch that
 * cannot be converted is left alone; 413 pieces are cut at line boundaries.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <zlib.h>

#include "relay/base/lineproto.h"
#include "relay/delivery/replay.h"
#include "relay/delivery/replay_round.h"

static struct relay_backend_config cfg_v1(void)
{
	struct relay_backend_config c;
	memset(&c, 0, sizeof(c));
	c.name = (char *)"b";
	c.type = RELAY_API_V1;
	c.batch_max_bytes = 1 << 20;
	c.batch_max_lines = 100000;
	return c;
}

/* A round of zero batches, on the heap (a round is large). */
static struct replay_round *round_new(void)
{
	return calloc(1, sizeof(struct replay_round));
}

static void round_done(struct replay_round *r)
{
	replay_round_free(r);
	free(r);
}

/* Add a batch with body (a string literal or one that outlives r), for db
 * "db" and no credentials unless changed afterwards. */
static struct wal_batch *add(struct replay_round *r, const char *body)
{
	struct wal_batch *b = &r->batches[r->nbatches];
	memset(b, 0, sizeof(*b));
	b->seq = r->nbatches + 1;
	b->precision = LP_PRECISION_NS;
	b->db = "db";
	b->rp = b->user = b->password = b->org = b->token = "";
	b->body = body;
	b->body_len = strlen(body);
	b->lines = replay_count_lines(body, b->body_len);
	r->nbatches++;
	return b;
}

static void test_coalesce_same_target_only(void **state)
{
	(void)state;
	struct relay_backend_config c = cfg_v1();
	/* Each field that makes another target, changed on the third batch:
	 * the first two coalesce, the third starts another write. */
	for (int field = 0; field < 8; field++) {
		struct replay_round *r = round_new();
		add(r, "m f=1 1\n");
		add(r, "m f=2 2\n");
		struct wal_batch *b = add(r, "m f=3 3\n");
		add(r, "m f=4 4\n");
		switch (field) {
		case 0: b->db = "other"; break;
		case 1: b->rp = "autogen"; break;
		case 2: b->precision = LP_PRECISION_S; break;
		case 3: b->user = "u"; break;
		case 4: b->password = "p"; break;
		case 5: b->token = "t"; break;
		case 6: b->org = "o"; break;
		case 7: break; /* the same target: all four coalesce */
		}
		replay_round_prepare(r, &c, 0, 0, 0);
		assert_int_equal(r->group_n, field == 7 ? 4 : 2);
		assert_false(r->lane_mode);
		assert_false(r->gzipped);
		/* The coalesced body is the batches' bodies, in order. */
		assert_int_equal(r->payload.len, field == 7 ? 32 : 16);
		assert_memory_equal(r->payload.data, field == 7 ? "m f=1 1\nm f=2 2\nm f=3 3\nm f=4 4\n" : "m f=1 1\nm f=2 2\n",
				    r->payload.len);
		assert_int_equal(replay_round_last_seq(r), field == 7 ? 4 : 2);
		assert_true(replay_round_same_target(&r->batches[0], &r->batches[1]));
		assert_int_equal(replay_round_same_target(&r->batches[0], &r->batches[2]), field == 7);
		round_done(r);
	}
}

static void test_coalesce_limits(void **state)
{
	(void)state;
	struct relay_backend_config c = cfg_v1();
	struct replay_round *r = round_new();
	for (int i = 0; i < 10; i++)
		add(r, "m f=1 1\nm f=2 2\n"); /* 16 bytes, 2 lines each */

	c.batch_max_lines = 7; /* 3 batches: 6 lines */
	replay_round_prepare(r, &c, 0, 0, 0);
	assert_int_equal(r->group_n, 3);
	c.batch_max_lines = 8; /* exactly 8 lines is within */
	replay_round_prepare(r, &c, 0, 0, 0);
	assert_int_equal(r->group_n, 4);

	c.batch_max_lines = 100000;
	c.batch_max_bytes = 50; /* 3 batches: 48 bytes */
	replay_round_prepare(r, &c, 0, 0, 0);
	assert_int_equal(r->group_n, 3);
	assert_int_equal(r->payload.len, 48);
	c.batch_max_bytes = 64; /* exactly 64 is within */
	replay_round_prepare(r, &c, 0, 0, 0);
	assert_int_equal(r->group_n, 4);

	/* A first batch beyond the limits goes all the same, alone. */
	c.batch_max_bytes = 10;
	c.batch_max_lines = 1;
	replay_round_prepare(r, &c, 0, 0, 0);
	assert_int_equal(r->group_n, 1);
	assert_int_equal(r->payload.len, 0); /* a single batch is sent from its own body */

	/* Isolating: one batch, however much would fit. */
	c = cfg_v1();
	replay_round_prepare(r, &c, 4, 1, 1);
	assert_int_equal(r->group_n, 1);
	assert_false(r->lane_mode);
	round_done(r);
}

/* The lines of body, one string each (into lines[], at most max). */
static size_t split_lines(const char *body, size_t len, char lines[][64], size_t max)
{
	size_t n = 0;
	const char *p = body, *e = body + len;
	while (p < e && n < max) {
		const char *nl = memchr(p, '\n', (size_t)(e - p));
		assert_non_null(nl);
		assert_true((size_t)(nl - p) < 64);
		memcpy(lines[n], p, (size_t)(nl - p));
		lines[n][nl - p] = '\0';
		n++;
		p = nl + 1;
	}
	return n;
}

/* The series key of a test line "cpu,host=hN,... v=I T": the tags sorted
 * would be the same, so they are compared as a sorted set here by the
 * host tag alone, which every test line has. */
static int host_of(const char *line)
{
	const char *h = strstr(line, "host=h");
	assert_non_null(h);
	return atoi(h + 6);
}

static int seq_of(const char *line)
{
	const char *v = strstr(line, " v=");
	assert_non_null(v);
	return atoi(v + 3);
}

/* replay_round_prepare in lanes for a write into hours the worker knows:
 * the first prepare finds them new (one write: new_hours), the worker
 * learns them (as after a delivery), and the round is prepared again. */
static void prepare_known(struct replay_round *r, const struct relay_backend_config *c, int lanes)
{
	replay_round_prepare(r, c, lanes, 0, 1);
	if (r->new_hours) {
		assert_false(r->lane_mode);
		replay_hours_merge(&r->known, &r->touched);
		replay_round_prepare(r, c, lanes, 0, 1);
	}
	assert_false(r->new_hours);
}

/* The hours of shards a round's points fall in (replay_round.h): by
 * precision, rounded down before 1970 too, per db, rp and org; a line
 * without a timestamp counts as a new hour; the worker's ring keeps the
 * last REPLAY_HOURS_MAX. */
static void test_hours_of_a_round(void **state)
{
	(void)state;
	struct relay_backend_config c = cfg_v1();
	struct replay_round *r = round_new();
	add(r, "m,h=a v=1 3599\nm,h=b v=1 3600\nm,h=c v=1 3601\n")->precision = LP_PRECISION_S;
	replay_round_prepare(r, &c, 4, 0, 1);
	assert_true(r->new_hours);
	assert_false(r->lane_mode);
	assert_int_equal(r->touched.n, 2);
	assert_int_equal(r->touched.h[0].hour, 0);
	assert_int_equal(r->touched.h[1].hour, 1);
	/* known: lanes */
	replay_hours_merge(&r->known, &r->touched);
	replay_round_prepare(r, &c, 4, 0, 1);
	assert_false(r->new_hours);
	assert_true(r->lane_mode);
	/* one line of another hour among known ones: the write goes whole */
	replay_round_release(r);
	add(r, "m,h=a v=1 3599\nm,h=b v=1 7200\n")->precision = LP_PRECISION_S;
	replay_round_prepare(r, &c, 4, 0, 1);
	assert_true(r->new_hours);
	assert_false(r->lane_mode);
	/* the same hour of another rp is another shard */
	replay_round_release(r);
	add(r, "m,h=a v=1 1\nm,h=b v=1 2\n")->rp = "week";
	r->batches[0].precision = LP_PRECISION_S;
	replay_round_prepare(r, &c, 4, 0, 1);
	assert_true(r->new_hours);

	const struct {
		const char *body;
		int prec;
		int64_t hour;
	} cases[] = {
		{ "m v=1 5\n", LP_PRECISION_H, 5 },
		{ "m v=1 179\n", LP_PRECISION_M, 2 },
		{ "m v=1 7200000\n", LP_PRECISION_MS, 2 },
		{ "m v=1 3599999999\n", LP_PRECISION_US, 0 },
		{ "m v=1 -1\n", LP_PRECISION_NS, -1 },
		{ "m v=1 -3600000000000\n", LP_PRECISION_NS, -1 },
		{ "m v=1 -3600000000001\n", LP_PRECISION_NS, -2 },
		{ "m s=\"a b\" 3600\n", LP_PRECISION_S, 1 },
		{ "m v=1 \t7200\n", LP_PRECISION_S, 2 },
		{ "m s=\"x\n9\" 7200\n", LP_PRECISION_S, 2 },
		{ "m v=1 9223372036854775806\n", LP_PRECISION_NS, 2562047 },
		{ "m v=1 0000000000000000000000007200\n", LP_PRECISION_S, 2 },
		{ "m v=1 -000\n", LP_PRECISION_S, 0 },
	};
	/* and what is no timestamp: an unknown hour */
	const char *none[] = { "m v=12\n", "m v=1 -\n", "m v=1 --12\n", "m v=1 12345678901234567890\n",
			       "m v=1 9223372036854775808\n", "m v=\"a 12\"\n" };
	for (size_t i = 0; i < sizeof(none) / sizeof(none[0]); i++) {
		replay_round_release(r);
		add(r, none[i])->precision = LP_PRECISION_NS;
		replay_round_prepare(r, &c, 4, 0, 1);
		assert_true(r->new_hours);
		assert_int_equal(r->touched.n, 0);
	}
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		replay_round_release(r);
		memset(&r->known, 0, sizeof(r->known));
		add(r, cases[i].body)->precision = (uint8_t)cases[i].prec;
		replay_round_prepare(r, &c, 4, 0, 1);
		assert_int_equal(r->touched.n, 1);
		assert_int_equal(r->touched.h[0].hour, cases[i].hour);
	}
	/* a precision code no relayd writes (a damaged record, dead-lettered
	 * when sent): an unknown hour, not a crash */
	replay_round_release(r);
	add(r, "m,h=a v=1 1\nm,h=b v=1 2\n")->precision = 9;
	replay_round_prepare(r, &c, 4, 0, 1);
	assert_true(r->new_hours);
	assert_int_equal(r->touched.n, 0);
	/* no timestamp: an unknown hour, whatever is known */
	replay_round_release(r);
	add(r, "m,h=a v=1\nm,h=b v=1\n");
	replay_round_prepare(r, &c, 4, 0, 1);
	assert_true(r->new_hours);
	assert_int_equal(r->touched.n, 0);
	round_done(r);

	/* the ring: the oldest entries go first */
	struct replay_hours k;
	memset(&k, 0, sizeof(k));
	for (int h = 0; h < REPLAY_HOURS_MAX + 6; h++) {
		replay_hours_add(&k, 7, h);
		replay_hours_add(&k, 7, h); /* once only */
	}
	assert_int_equal(k.n, REPLAY_HOURS_MAX);
	assert_false(replay_hours_has(&k, 7, 5));
	assert_true(replay_hours_has(&k, 7, 6));
	assert_true(replay_hours_has(&k, 7, REPLAY_HOURS_MAX + 5));
	assert_false(replay_hours_has(&k, 8, REPLAY_HOURS_MAX + 5));
}

static void test_lanes_keep_series_order(void **state)
{
	(void)state;
	struct relay_backend_config c = cfg_v1();
	enum { NSER = 37, PER = 20, LANES = 4 };
	static char bodies[PER][NSER * 64];
	struct replay_round *r = round_new();
	/* PER batches; each holds one line of every series, the series'
	 * points numbered in queue order (v=), and every other point with its
	 * tags written in the other order (the same series for InfluxDB). */
	int n = 0;
	for (int b = 0; b < PER; b++) {
		char *p = bodies[b];
		p[0] = '\0';
		for (int s = 0; s < NSER; s++) {
			n++;
			if (n % 2)
				sprintf(p + strlen(p), "cpu,host=h%d,dc=x v=%d %d\n", s, n, n);
			else
				sprintf(p + strlen(p), "cpu,dc=x,host=h%d v=%d %d\n", s, n, n);
		}
		add(r, p);
	}
	prepare_known(r, &c, LANES);
	assert_int_equal(r->group_n, PER);
	assert_true(r->lane_mode);

	int lane_of[NSER], last[NSER];
	for (int s = 0; s < NSER; s++)
		lane_of[s] = -1, last[s] = 0;
	static char lines[NSER * PER][64];
	size_t total = 0;
	for (int i = 0; i < LANES; i++) {
		const struct replay_share *sh = &r->shares[i];
		assert_false(sh->gzipped);
		assert_int_equal(sh->done, sh->body.len == 0);
		size_t k = split_lines(sh->body.data, sh->body.len, lines, NSER * PER);
		for (size_t j = 0; j < k; j++) {
			int s = host_of(lines[j]), v = seq_of(lines[j]);
			/* one lane per series, whatever the order of its tags */
			if (lane_of[s] < 0)
				lane_of[s] = i;
			assert_int_equal(lane_of[s], i);
			/* in queue order within the lane */
			assert_true(v > last[s]);
			last[s] = v;
		}
		total += k;
	}
	/* Every line once. */
	assert_int_equal(total, NSER * PER);
	/* Tag order does not change the series. */
	assert_int_equal(replay_series_hash("m,a=1,b=2", 9), replay_series_hash("m,b=2,a=1", 9));
	assert_int_not_equal(replay_series_hash("m,a=1,b=2", 9), replay_series_hash("m,a=1,b=3", 9));
	/* An escaped comma is part of a tag, not a separator. */
	assert_int_not_equal(replay_series_hash("m,a=1\\,b=2", 10), replay_series_hash("m,b=2,a=1", 9));
	round_done(r);
}

static void test_lanes_balanced(void **state)
{
	(void)state;
	struct relay_backend_config c = cfg_v1();
	enum { LANES = 4 };
	static char body[64 * 1024];
	struct replay_round *r = round_new();

	/* 32 series of equal size: 8 per lane, every share the same bytes. */
	body[0] = '\0';
	for (int s = 0; s < 32; s++)
		for (int k = 0; k < 5; k++)
			sprintf(body + strlen(body), "cpu,host=h%02d v=%d 1000\n", s, k);
	add(r, body);
	prepare_known(r, &c, LANES);
	assert_true(r->lane_mode);
	for (int i = 1; i < LANES; i++)
		assert_int_equal(r->shares[i].body.len, r->shares[0].body.len);
	assert_int_equal(r->shares[0].body.len * LANES, strlen(body));

	/* Series of uneven sizes (1 to 40 lines): largest first, each to the
	 * emptiest lane, so no share exceeds another by more than the
	 * largest series. */
	replay_round_release(r);
	body[0] = '\0';
	size_t largest = 0;
	for (int s = 0; s < 40; s++) {
		size_t before = strlen(body);
		for (int k = 0; k <= s; k++)
			sprintf(body + strlen(body), "mem,host=h%02d v=%d 1000\n", s, k);
		if (strlen(body) - before > largest)
			largest = strlen(body) - before;
	}
	add(r, body);
	prepare_known(r, &c, LANES);
	assert_true(r->lane_mode);
	size_t lo = SIZE_MAX, hi = 0, sum = 0;
	for (int i = 0; i < LANES; i++) {
		size_t len = r->shares[i].body.len;
		lo = len < lo ? len : lo;
		hi = len > hi ? len : hi;
		sum += len;
	}
	assert_int_equal(sum, strlen(body));
	assert_true(hi - lo <= largest);

	/* One series: no lanes, one write. */
	replay_round_release(r);
	add(r, "cpu,host=a v=1 1\n");
	add(r, "cpu,host=a v=2 2\n");
	replay_round_prepare(r, &c, LANES, 0, 1);
	assert_false(r->lane_mode);
	assert_int_equal(r->group_n, 2);
	assert_int_equal(r->payload.len, 34);

	/* Not on the loop thread's path (compress = 0): never lanes. */
	replay_round_release(r);
	add(r, "cpu,host=a v=1 1\ncpu,host=b v=1 1\n");
	replay_round_prepare(r, &c, LANES, 0, 0);
	assert_false(r->lane_mode);
	round_done(r);
}

/* gunzip src into out (at most cap bytes); returns its length. */
static size_t gunzip(const struct rbuf *src, char *out, size_t cap)
{
	z_stream z;
	memset(&z, 0, sizeof(z));
	assert_int_equal(inflateInit2(&z, 15 + 16), Z_OK);
	z.next_in = (Bytef *)src->data;
	z.avail_in = (uInt)src->len;
	z.next_out = (Bytef *)out;
	z.avail_out = (uInt)cap;
	assert_int_equal(inflate(&z, Z_FINISH), Z_STREAM_END);
	size_t n = z.total_out;
	inflateEnd(&z);
	return n;
}

static void test_gzip(void **state)
{
	(void)state;
	struct relay_backend_config c = cfg_v1();
	c.gzip = 1;
	char out[4096];
	struct replay_round *r = round_new();
	add(r, "cpu,host=a v=1 1\n");
	add(r, "cpu,host=a v=2 2\n");
	replay_round_prepare(r, &c, 0, 0, 1);
	assert_true(r->gzipped);
	assert_int_equal(gunzip(&r->gz, out, sizeof(out)), 34);
	assert_memory_equal(out, "cpu,host=a v=1 1\ncpu,host=a v=2 2\n", 34);
	/* Lanes: each share gzipped on its own. */
	replay_round_release(r);
	add(r, "cpu,host=a v=1 1\ncpu,host=b v=1 1\n");
	prepare_known(r, &c, 2);
	assert_true(r->lane_mode);
	for (int i = 0; i < 2; i++) {
		assert_true(r->shares[i].gzipped);
		size_t n = gunzip(&r->shares[i].gz, out, sizeof(out));
		assert_int_equal(n, r->shares[i].body.len);
		assert_memory_equal(out, r->shares[i].body.data, n);
	}
	/* Without compress (the loop thread), nothing is gzipped. */
	replay_round_prepare(r, &c, 2, 0, 0);
	assert_false(r->gzipped);
	round_done(r);
}

/* Rescale one batch of body in precision prec for a backend of type;
 * check what comes out: its body and precision. */
static void rescaled(enum relay_api type, int prec, const char *body, const char *want, int want_prec)
{
	struct relay_backend_config c = cfg_v1();
	c.type = type;
	struct replay_round *r = round_new();
	struct wal_batch *b = add(r, body);
	b->precision = (uint8_t)prec;
	replay_round_rescale(r, &c);
	if (b->body_len != strlen(want) || memcmp(b->body, want, b->body_len) != 0)
		fail_msg("rescaled '%s' to '%.*s', want '%s'", body, (int)b->body_len, b->body, want);
	assert_int_equal(b->precision, want_prec);
	/* The rest of the batch is kept. */
	assert_string_equal(b->db, "db");
	assert_int_equal(b->seq, 1);
	round_done(r);
}

static void test_rescale(void **state)
{
	(void)state;
	/* v2 takes no minutes or hours: exact seconds. */
	rescaled(RELAY_API_V2, LP_PRECISION_M, "m f=1 2\n", "m f=1 120\n", LP_PRECISION_S);
	rescaled(RELAY_API_V2, LP_PRECISION_H, "m f=1 2\n", "m f=1 7200\n", LP_PRECISION_S);
	rescaled(RELAY_API_V2, LP_PRECISION_M, "m,t=a f=1,g=\"x y\" 28000000\nm f=2 0\n",
		 "m,t=a f=1,g=\"x y\" 1680000000\nm f=2 0\n", LP_PRECISION_S);
	/* Before 1970. */
	rescaled(RELAY_API_V2, LP_PRECISION_H, "m f=1 -3\n", "m f=1 -10800\n", LP_PRECISION_S);
	rescaled(RELAY_API_V2, LP_PRECISION_M, "m f=1 -1\nm f=1 1\n", "m f=1 -60\nm f=1 60\n", LP_PRECISION_S);
	/* The largest that fits, and one more: left as it is, labelled in
	 * its own unit (the backend refuses it; never stored at the wrong
	 * time). */
	rescaled(RELAY_API_V2, LP_PRECISION_H, "m f=1 2562047788015215\n", "m f=1 9223372036854774000\n",
		 LP_PRECISION_S);
	rescaled(RELAY_API_V2, LP_PRECISION_H, "m f=1 2562047788015216\n", "m f=1 2562047788015216\n", LP_PRECISION_H);
	/* A line without a timestamp: not converted, the batch left whole. */
	rescaled(RELAY_API_V2, LP_PRECISION_M, "m f=1 2\nm f=1\n", "m f=1 2\nm f=1\n", LP_PRECISION_M);
	/* What v2 takes is sent as it is: ns, us, ms, s. */
	for (int p = LP_PRECISION_NS; p <= LP_PRECISION_S; p++)
		rescaled(RELAY_API_V2, p, "m f=1 1234567\n", "m f=1 1234567\n", p);
	/* v1 takes every precision: nothing changes. */
	rescaled(RELAY_API_V1, LP_PRECISION_M, "m f=1 2\n", "m f=1 2\n", LP_PRECISION_M);
	rescaled(RELAY_API_V1, LP_PRECISION_H, "m f=1 -2\n", "m f=1 -2\n", LP_PRECISION_H);
}

/* Rescaled batches of minutes and of seconds then coalesce: one target. */
static void test_rescale_then_coalesce(void **state)
{
	(void)state;
	struct relay_backend_config c = cfg_v1();
	c.type = RELAY_API_V2;
	struct replay_round *r = round_new();
	add(r, "m f=1 60\n")->precision = LP_PRECISION_S;
	add(r, "m f=1 2\n")->precision = LP_PRECISION_M;
	add(r, "m f=1 1\n")->precision = LP_PRECISION_MS;
	replay_round_rescale(r, &c);
	replay_round_prepare(r, &c, 0, 0, 0);
	assert_int_equal(r->group_n, 2);
	assert_memory_equal(r->payload.data, "m f=1 60\nm f=1 120\n", r->payload.len);
	round_done(r);
}

static void test_pieces(void **state)
{
	(void)state;
	const char *body = "a 1\nbb 2\nccc 3\ndddd 4\n"; /* 4 + 5 + 6 + 7 = 22 bytes */
	size_t len = strlen(body);
	struct replay_pieces p;
	memset(&p, 0, sizeof(p));
	/* The first 413: two halves at the newline nearest the middle. */
	assert_int_equal(replay_pieces_halve(&p, body, len), 0);
	assert_int_equal(p.n, 2);
	assert_int_equal(p.range[0].off, 0);
	assert_int_equal(p.range[0].len, 15); /* "a 1\nbb 2\nccc 3\n" */
	assert_int_equal(p.range[1].off, 15);
	assert_int_equal(p.range[1].len, 7);
	/* The front half refused too: halved again, the rest kept behind. */
	assert_int_equal(replay_pieces_halve(&p, body, len), 0);
	assert_int_equal(p.n, 3);
	assert_int_equal(p.range[0].len, 9);
	assert_int_equal(p.range[1].off, 9);
	assert_int_equal(p.range[1].len, 6);
	assert_int_equal(p.range[2].off, 15);
	/* Delivered: the next piece is no larger than what was accepted. */
	assert_int_equal(replay_pieces_delivered(&p, body), 2);
	assert_int_equal(p.fit, 9);
	assert_int_equal(p.range[0].off, 9);
	assert_int_equal(p.range[0].len, 6);
	assert_int_equal(replay_pieces_delivered(&p, body), 1);
	assert_int_equal(p.range[0].off, 15);
	assert_int_equal(p.range[0].len, 7); /* within fit: as it is */
	/* One line still too large: cannot be halved. */
	assert_int_equal(replay_pieces_halve(&p, body, len), -1);
	assert_int_equal(p.n, 1);
	assert_int_equal(replay_pieces_pop(&p), 0);

	/* A batch of one line: cannot be halved, and the whole body is the
	 * piece (dead-lettered as such). */
	memset(&p, 0, sizeof(p));
	assert_int_equal(replay_pieces_halve(&p, "m f=1 1\n", 8), -1);
	assert_int_equal(p.n, 1);
	assert_int_equal(p.range[0].len, 8);

	/* A larger piece after a small accepted one is cut to fit, at a
	 * line boundary. */
	const char *b2 = "x 1\nx 2\nx 3\nx 4\nx 5\nx 6\nx 7\nx 8\n"; /* 8 lines of 4 */
	memset(&p, 0, sizeof(p));
	p.n = 2;
	p.range[0].off = 0;
	p.range[0].len = 8;
	p.range[1].off = 8;
	p.range[1].len = 24;
	assert_int_equal(replay_pieces_delivered(&p, b2), 2);
	assert_int_equal(p.fit, 8);
	assert_int_equal(p.range[0].off, 8);
	assert_int_equal(p.range[0].len, 8);
	assert_int_equal(p.range[1].off, 16);
	assert_int_equal(p.range[1].len, 16);

	assert_int_equal(replay_count_lines("a\nb\n", 4), 2);
	assert_int_equal(replay_count_lines("", 0), 0);
}

/* Issue 13: a statement is a barrier: the round before it ends there,
 * and it goes alone (no lanes, no gzip, no payload), even beside
 * another statement or a batch of its own target. */
static void test_statement_barrier(void **state)
{
	(void)state;
	struct relay_backend_config c = cfg_v1();
	c.gzip = 1;
	struct replay_round *r = round_new();
	add(r, "m,h=a f=1 1\n");
	add(r, "m,h=b f=2 2\n");
	add(r, "CREATE DATABASE x\n")->kind = WAL_KIND_STATEMENT;
	add(r, "m,h=c f=3 3\n");
	replay_round_prepare(r, &c, 4, 0, 1);
	assert_int_equal(r->group_n, 2);
	round_done(r);

	r = round_new();
	struct wal_batch *s = add(r, "CREATE DATABASE x\n");
	s->kind = WAL_KIND_STATEMENT;
	s->lines = 0;
	add(r, "CREATE DATABASE y\n")->kind = WAL_KIND_STATEMENT;
	add(r, "m,h=c f=3 3\n");
	replay_round_prepare(r, &c, 4, 0, 1);
	assert_int_equal(r->group_n, 1);
	assert_int_equal(r->lane_mode, 0);
	assert_int_equal(r->gzipped, 0);
	assert_int_equal(r->payload.len, 0);
	assert_int_equal(replay_round_last_seq(r), 1);
	/* never rescaled: it has no timestamps */
	c.type = RELAY_API_V2;
	s->precision = LP_PRECISION_H;
	replay_round_rescale(r, &c);
	assert_string_equal(r->batches[0].body, "CREATE DATABASE x\n");
	assert_int_equal(r->batches[0].precision, LP_PRECISION_H);
	round_done(r);
}

/* Why a write is sent again (relayd_backend_retries_total{reason}): from
 * the transport failure, the status and InfluxDB's overload texts. */
static void test_retry_reason(void **state)
{
	(void)state;
	static const struct {
		int status;
		const char *body;
		enum replay_retry_reason want;
	} rows[] = {
		{ OUTCOME_STATUS_CONNECT_FAILED, NULL, REPLAY_RETRY_CONNECT },
		{ OUTCOME_STATUS_TIMEOUT, NULL, REPLAY_RETRY_TIMEOUT },
		{ OUTCOME_STATUS_RESET, "", REPLAY_RETRY_RESET },
		{ OUTCOME_STATUS_PROTOCOL, "", REPLAY_RETRY_PROTOCOL },
		{ OUTCOME_STATUS_UNSENDABLE, "", REPLAY_RETRY_OTHER },
		{ 408, "", REPLAY_RETRY_THROTTLED },
		{ 429, "{\"error\":\"too many requests\"}", REPLAY_RETRY_THROTTLED },
		{ 500, "{\"error\":\"engine: cache-max-memory-size exceeded: (1073741824/1073741824)\"}",
		  REPLAY_RETRY_OVERLOADED },
		{ 503, "{\"error\":\"engine: cache maximum memory size exceeded\"}", REPLAY_RETRY_OVERLOADED },
		{ 500, "{\"error\":\"timeout\"}", REPLAY_RETRY_OVERLOADED },
		{ 500, "{\"error\":\"engine: something went wrong\"}", REPLAY_RETRY_SERVER_ERROR },
		{ 502, "<html>Bad Gateway</html>", REPLAY_RETRY_SERVER_ERROR },
		{ 503, NULL, REPLAY_RETRY_SERVER_ERROR },
		{ 401, "{\"error\":\"authorization failed\"}", REPLAY_RETRY_OTHER },
		{ 404, "404 page not found", REPLAY_RETRY_OTHER },
		{ 302, "", REPLAY_RETRY_OTHER },
	};
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		size_t len = rows[i].body ? strlen(rows[i].body) : 0;
		enum replay_retry_reason got = replay_retry_reason(rows[i].status, rows[i].body, len);
		if (got != rows[i].want)
			fail_msg("row %zu (status %d): got %s, want %s", i, rows[i].status, replay_retry_reason_name(got),
				 replay_retry_reason_name(rows[i].want));
	}
	/* The label values of docs/monitoring.md. */
	const char *const reasons[] = { "connect", "timeout", "reset", "protocol", "throttled", "overloaded",
		                        "server_error", "other" };
	assert_int_equal(REPLAY_RETRY_NREASONS, sizeof(reasons) / sizeof(reasons[0]));
	for (int r = 0; r < REPLAY_RETRY_NREASONS; r++)
		assert_string_equal(replay_retry_reason_name((enum replay_retry_reason)r), reasons[r]);
	const char *const outcomes[] = { "delivered", "retry", "hold", "dead", "split", "no_database" };
	assert_int_equal(REPLAY_NOUTCOMES, sizeof(outcomes) / sizeof(outcomes[0]));
	for (int o = 0; o < REPLAY_NOUTCOMES; o++)
		assert_string_equal(replay_outcome_label(o), outcomes[o]);
	assert_string_equal(replay_outcome_label(OUTCOME_NO_DATABASE), "no_database");
}

/* Sums of two workers' counters (a restart by a reload). */
static void test_stats_add(void **state)
{
	(void)state;
	struct replay_stats a, b;
	replay_stats_init(&a);
	replay_stats_init(&b);
	a.delivered_batches = 2;
	a.writes[OUTCOME_RETRY] = 1;
	a.retry_reasons[REPLAY_RETRY_CONNECT] = 3;
	relay_histogram_observe(&a.delivery_latency, 0.5);
	b.delivered_batches = 5;
	b.corrupt_records = 1;
	relay_histogram_observe(&b.delivery_latency, 7200);
	relay_histogram_observe(&b.request_duration, 0.002);
	replay_stats_add(&a, &b);
	assert_int_equal(a.delivered_batches, 7);
	assert_int_equal(a.writes[OUTCOME_RETRY], 1);
	assert_int_equal(a.retry_reasons[REPLAY_RETRY_CONNECT], 3);
	assert_int_equal(a.corrupt_records, 1);
	assert_int_equal(a.delivery_latency.count, 2);
	assert_true(a.delivery_latency.sum > 7200.4);
	assert_int_equal(a.request_duration.count, 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_coalesce_same_target_only),
		cmocka_unit_test(test_coalesce_limits),
		cmocka_unit_test(test_hours_of_a_round),
		cmocka_unit_test(test_lanes_keep_series_order),
		cmocka_unit_test(test_lanes_balanced),
		cmocka_unit_test(test_gzip),
		cmocka_unit_test(test_rescale),
		cmocka_unit_test(test_rescale_then_coalesce),
		cmocka_unit_test(test_pieces),
		cmocka_unit_test(test_statement_barrier),
		cmocka_unit_test(test_retry_reason),
		cmocka_unit_test(test_stats_add),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
