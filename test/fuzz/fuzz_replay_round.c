/*
 * fuzz_replay_round: what the replay workers make of any body the door
 * accepts. The input's first byte picks the precision, the lanes and how
 * the body is cut into batches; the rest is validated as the door does
 * (lineproto_validate, unstamped lines stamped) and, when accepted, cut
 * into up to three batches at line boundaries and prepared as a round
 * (replay_round_prepare). What must hold whatever the input:
 *   - a round in lanes carries every line of its group exactly once, in
 *     the group's order within each share, each share whole lines;
 *   - a round not in lanes sends the group's bytes unchanged;
 *   - every stored line has an hour (its timestamp is readable), so once
 *     the worker knows the hours a round touched, the same round is never
 *     new again (unless it touched more hours than a round records);
 *   - lanes are only used inside known hours.
 * Violations abort(), which both libFuzzer and the replay main report.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "relay/base/config.h"
#include "relay/base/lineproto.h"
#include "relay/delivery/replay_round.h"

#define STAMP INT64_C(1700000000)

static void check(int cond)
{
	if (!cond)
		abort();
}

/* Whether the lines of a (alen bytes), in order, are a subsequence of
 * the lines of b: a share keeps the group's order. */
static int lines_subsequence(const char *a, size_t alen, const char *b, size_t blen)
{
	const char *p = a, *ae = a + alen, *q = b, *be = b + blen;
	while (p < ae) {
		size_t klen;
		const char *pn = lp_line_end(p, ae, &klen);
		size_t plen = (size_t)(pn - p);
		int found = 0;
		while (q < be) {
			const char *qn = lp_line_end(q, be, &klen);
			size_t qlen = (size_t)(qn - q);
			q = qn;
			if (qlen == plen && memcmp(qn - qlen, p, plen) == 0) {
				found = 1;
				break;
			}
		}
		if (!found)
			return 0;
		p = pn;
	}
	return 1;
}

static size_t count_lines(const char *p, size_t len)
{
	size_t n = 0, klen;
	const char *e = p + len;
	while (p < e) {
		p = lp_line_end(p, e, &klen);
		n++;
	}
	return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	unsigned ctl = data[0];
	const char *body = (const char *)data + 1;
	size_t len = size - 1;
	struct rbuf out = RBUF_INIT;
	struct lp_result res;
	struct lp_error err;
	if (lineproto_validate(body, len, STAMP, 0, &out, &res, &err) != 0 || out.len == 0) {
		rbuf_release(&out);
		return 0;
	}

	struct relay_backend_config cfg;
	memset(&cfg, 0, sizeof(cfg));
	cfg.batch_max_lines = 1u << 20;
	cfg.batch_max_bytes = 1u << 30;
	int nlanes = 2 + (int)(ctl & 3);
	uint8_t prec = (uint8_t)((ctl >> 2) % 6);

	/* Up to three batches, cut after the first and the middle line. */
	struct replay_round *r = calloc(1, sizeof(*r));
	check(r != NULL);
	size_t total = count_lines(out.data, out.len), klen;
	size_t cuts[2] = { (ctl & 0x20) ? 1 : 0, (ctl & 0x40) ? total / 2 : 0 };
	const char *p = out.data, *e = out.data + out.len, *start = p;
	size_t li = 0;
	while (p < e) {
		p = lp_line_end(p, e, &klen);
		li++;
		if (p == e || li == cuts[0] || li == cuts[1]) {
			if (p == start)
				continue;
			struct wal_batch *b = &r->batches[r->nbatches++];
			b->seq = r->nbatches;
			b->kind = WAL_KIND_LINES;
			b->precision = prec;
			b->db = "db";
			b->rp = b->user = b->password = b->org = b->token = "";
			b->body = start;
			b->body_len = (size_t)(p - start);
			b->lines = (uint32_t)count_lines(start, b->body_len);
			start = p;
		}
	}

	/* First sight: every hour is new, the write goes whole. */
	replay_round_prepare(r, &cfg, nlanes, 0, 1);
	check(r->group_n == r->nbatches);
	check(r->new_hours);
	check(!r->lane_mode);
	check(r->touched.n <= REPLAY_HOURS_MAX);
	if (r->group_n > 1) {
		check(r->payload.len == out.len);
		check(memcmp(r->payload.data, out.data, out.len) == 0);
	}

	/* Known hours: the same round is not new, and may go in lanes. */
	replay_hours_merge(&r->known, &r->touched);
	replay_round_prepare(r, &cfg, nlanes, 0, 1);
	if (r->touched.n < REPLAY_HOURS_MAX)
		check(!r->new_hours);
	if (r->lane_mode) {
		check(!r->new_hours);
		size_t bytes = 0, lines = 0;
		for (int i = 0; i < nlanes; i++) {
			const struct replay_share *sh = &r->shares[i];
			bytes += sh->body.len;
			if (sh->body.len) {
				check(sh->body.data[sh->body.len - 1] == '\n');
				lines += count_lines(sh->body.data, sh->body.len);
				check(lines_subsequence(sh->body.data, sh->body.len, out.data, out.len));
			}
		}
		check(bytes == out.len);
		check(lines == total);
	}
	replay_round_free(r); /* its buffers; the batches point into out */
	free(r);
	rbuf_release(&out);
	return 0;
}
