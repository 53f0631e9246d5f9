/*
 * replay_round: from batches to writes (replay_round.h). Pure: every
 * function here reads its arguments and writes the round (or the pieces)
 * it is given, so a prefetch can prepare one round on the thread pool
 * while the loop thread works on the other.
 */
#include "relay/delivery/replay_round.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "relay/base/lineproto.h"
#include "relay/base/log.h"
#include "relay/delivery/backend_api.h"

int replay_round_same_target(const struct wal_batch *a, const struct wal_batch *b)
{
	/* A statement is a barrier: never coalesced, not even with another. */
	if (a->kind != WAL_KIND_LINES || b->kind != WAL_KIND_LINES)
		return 0;
	return a->precision == b->precision && strcmp(a->db, b->db) == 0 && strcmp(a->rp, b->rp) == 0 &&
	       strcmp(a->user, b->user) == 0 && strcmp(a->password, b->password) == 0 &&
	       strcmp(a->token, b->token) == 0 && strcmp(a->org, b->org) == 0;
}

/*---- hours of shards (replay_round.h) ----*/

int replay_hours_has(const struct replay_hours *k, uint32_t target, int64_t hour)
{
	for (unsigned i = 0; i < k->n; i++)
		if (k->h[i].hour == hour && k->h[i].target == target)
			return 1;
	return 0;
}

void replay_hours_add(struct replay_hours *k, uint32_t target, int64_t hour)
{
	if (replay_hours_has(k, target, hour))
		return;
	struct replay_hour e = { target, hour };
	if (k->n < REPLAY_HOURS_MAX) {
		k->h[k->n++] = e;
		return;
	}
	k->h[k->next] = e;
	k->next = (k->next + 1) % REPLAY_HOURS_MAX;
}

void replay_hours_merge(struct replay_hours *k, const struct replay_hours *from)
{
	for (unsigned i = 0; i < from->n; i++)
		replay_hours_add(k, from->h[i].target, from->h[i].hour);
}

/* FNV-1a of db, rp and org, each ended by a NUL: where a write's shards
 * are (a v2 backend's bucket is db/rp in the org the batch names, unless
 * the backend sets one). */
static uint32_t target_hash(const struct wal_batch *b)
{
	uint32_t h = 2166136261u;
	const char *parts[3] = { b->db ? b->db : "", b->rp ? b->rp : "", b->org ? b->org : "" };
	for (int i = 0; i < 3; i++) {
		for (const unsigned char *p = (const unsigned char *)parts[i]; *p; p++)
			h = (h ^ *p) * 16777619u;
		h = (h ^ 0u) * 16777619u;
	}
	return h;
}

/* The hour (since the epoch, rounded down) of the line [p, nl), nl at its
 * '\n', whose timestamp is in precision prec: the digits (and sign) that
 * end the line, after a space or a tab. Returns 0 when there is none or
 * prec is no precision (a damaged record, dead-lettered when it is sent):
 * relayd stamps every line it accepts, and an unknown hour is the safe
 * side. */
static int line_hour(const char *p, const char *nl, unsigned prec, int64_t *hour)
{
	if (prec > LP_PRECISION_H)
		return 0;
	const char *q = nl;
	while (q > p && q[-1] >= '0' && q[-1] <= '9')
		q--;
	const char *digits = q;
	if (digits == nl)
		return 0;
	int neg = q > p && q[-1] == '-';
	q -= neg;
	if (q == p || (q[-1] != ' ' && q[-1] != '\t'))
		return 0;
	/* Leading zeros are allowed (InfluxDB reads "0012" as 12). */
	const char *sig = digits;
	while (sig < nl - 1 && *sig == '0')
		sig++;
	if (nl - sig > 19)
		return 0;
	uint64_t u = 0;
	for (const char *d = sig; d < nl; d++)
		u = u * 10 + (uint64_t)(*d - '0');
	if (u > (uint64_t)INT64_MAX)
		return 0;
	int64_t t = neg ? -(int64_t)u : (int64_t)u;
	int64_t per = INT64_C(3600000000000) / lp_precision_ns((enum lp_precision)prec);
	*hour = t / per - (t % per < 0); /* rounded down, also before 1970 */
	return 1;
}

/* Fill r->touched with the hours of the group's points; returns whether
 * every one is in r->known. */
static int hours_known(struct replay_round *r)
{
	int known = 1;
	memset(&r->touched, 0, sizeof(r->touched));
	for (size_t b = 0; b < r->group_n; b++) {
		const struct wal_batch *wb = &r->batches[b];
		uint32_t target = target_hash(wb);
		int64_t last = 0;
		int have_last = 0;
		const char *p = wb->body, *e = p + wb->body_len;
		while (p < e) {
			size_t klen;
			const char *next = lp_line_end(p, e, &klen);
			const char *nl = next > p && next[-1] == '\n' ? next - 1 : next;
			int64_t h;
			if (!line_hour(p, nl, wb->precision, &h)) {
				known = 0;
			} else if (!have_last || h != last) {
				/* Points of a batch are mostly in one hour: look up
				 * only when it changes. */
				have_last = 1;
				last = h;
				if (!replay_hours_has(&r->known, target, h))
					known = 0;
				if (r->touched.n < REPLAY_HOURS_MAX)
					replay_hours_add(&r->touched, target, h);
			}
			p = next;
		}
	}
	return known;
}

uint64_t replay_round_last_seq(const struct replay_round *r)
{
	return r->batches[r->group_n - 1].seq;
}

/* Level 1: the point is fewer bytes on the wire for little CPU. */
int replay_gzip(struct rbuf *out, const char *src, size_t len)
{
	z_stream z;
	memset(&z, 0, sizeof(z));
	if (deflateInit2(&z, 1, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
		return -1;
	rbuf_reset(out);
	rbuf_reserve(out, deflateBound(&z, (uLong)len));
	z.next_in = (Bytef *)(uintptr_t)src;
	z.avail_in = (uInt)len;
	z.next_out = (Bytef *)out->data;
	z.avail_out = (uInt)(out->cap - 1);
	int rc = deflate(&z, Z_FINISH);
	out->len = z.total_out;
	deflateEnd(&z);
	return rc == Z_STREAM_END ? 0 : -1;
}

uint32_t replay_count_lines(const char *p, size_t len)
{
	uint32_t n = 0;
	for (const char *e = p + len; (p = memchr(p, '\n', (size_t)(e - p))); p++)
		n++;
	return n;
}

/*---- series and lanes ----*/

static uint32_t fnv1a(const char *p, size_t n)
{
	uint32_t h = 2166136261u;
	for (size_t i = 0; i < n; i++)
		h = (h ^ (unsigned char)p[i]) * 16777619u;
	return h;
}

/* A 32-bit value spread over all bits (murmur3's finaliser). */
static uint32_t mix32(uint32_t h)
{
	h ^= h >> 16;
	h *= 0x85ebca6bu;
	h ^= h >> 13;
	h *= 0xc2b2ae35u;
	return h ^ (h >> 16);
}

/*
 * A later point of a series must never be stored before an earlier one,
 * so the two must travel in one lane, whatever the order of their tags.
 * The measurement's hash, then the sum (which does not depend on the
 * order) of each tag's mixed hash. Escapes ("\," and "\\") are skipped
 * over, never taken for a separator.
 */
uint32_t replay_series_hash(const char *p, size_t n)
{
	const char *e = p + n, *s = p;
	uint32_t meas = 0, tags = 0;
	int first = 1;
	for (;;) {
		const char *c = s;
		while (c < e && *c != ',')
			c += *c == '\\' && c + 1 < e ? 2 : 1;
		uint32_t h = fnv1a(s, (size_t)(c - s));
		if (first)
			meas = h;
		else
			tags += mix32(h);
		first = 0;
		if (c >= e)
			break;
		s = c + 1;
	}
	return mix32(meas ^ mix32(tags + 0x9e3779b9u));
}

/* Rounds with at most this many series give them out largest first;
 * with more, sorting costs more than it evens out, and in order of first
 * appearance is close enough. */
#define SPLIT_SORT_MAX 4096

static int by_bytes_desc(const void *a, const void *b)
{
	const struct replay_series *x = a, *y = b;
	if (x->bytes != y->bytes)
		return x->bytes < y->bytes ? 1 : -1;
	return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/* Room for n elements of size bytes in p (capacity *cap): returns p, or
 * a new pointer (then p is dead). */
static void *reserve(void *p, size_t *cap, size_t n, size_t size)
{
	if (n <= *cap)
		return p;
	size_t c = *cap ? *cap : 1024;
	while (c < n)
		c *= 2;
	*cap = c;
	return xrealloc(p, c * size);
}

/* An empty series table of at least n slots (a power of two). */
static void table_reset(struct replay_split *sp, size_t n)
{
	size_t slots = 64;
	while (slots < n)
		slots *= 2;
	if (slots > sp->slots) {
		sp->slot_hash = xrealloc(sp->slot_hash, slots * sizeof(*sp->slot_hash));
		sp->slot_ser = xrealloc(sp->slot_ser, slots * sizeof(*sp->slot_ser));
	}
	sp->slots = slots;
	memset(sp->slot_ser, 0, slots * sizeof(*sp->slot_ser));
}

/* The series with key hash h (found or added): its index in sp->ser. */
static uint32_t series_of(struct replay_split *sp, uint32_t h)
{
	size_t mask = sp->slots - 1, i = h & mask;
	while (sp->slot_ser[i] && sp->slot_hash[i] != h)
		i = (i + 1) & mask;
	if (sp->slot_ser[i])
		return sp->slot_ser[i] - 1;
	if (2 * (sp->nser + 1) > sp->slots) {
		/* Keep the table at most half full: rebuild it twice as large. */
		table_reset(sp, 2 * sp->slots);
		for (size_t k = 0; k < sp->nser; k++) {
			size_t j = sp->ser[k].hash & (sp->slots - 1);
			while (sp->slot_ser[j])
				j = (j + 1) & (sp->slots - 1);
			sp->slot_hash[j] = sp->ser[k].hash;
			sp->slot_ser[j] = (uint32_t)k + 1;
		}
		return series_of(sp, h);
	}
	sp->ser = reserve(sp->ser, &sp->ser_cap, sp->nser + 1, sizeof(*sp->ser));
	sp->ser[sp->nser] = (struct replay_series){ .bytes = 0, .idx = (uint32_t)sp->nser, .hash = h };
	sp->slot_hash[i] = h;
	sp->slot_ser[i] = (uint32_t)++sp->nser;
	return (uint32_t)sp->nser - 1;
}

/*
 * Share the group's lines among the lanes by series: all lines of a series
 * go to one lane, in order, so writes in flight at once never reorder the
 * points of one series (an overwritten point still ends with its newest
 * value). Which lane a series gets is decided per round, to even out the
 * bytes: InfluxDB answers a round when its largest share is written, and
 * a lane that gets more than its part leaves the others idle meanwhile.
 * Choosing anew each round is safe because rounds never overlap: a round
 * is sent only once every share of the previous one got its 2xx, so the
 * lines of a series in this round reach the backend after its earlier
 * lines were stored, whichever lane carried those. Series are told apart
 * by a 32-bit hash of their key that ignores the order of its tags
 * (replay_series_hash); two that collide share a lane, which is still
 * correct. Returns the number of non-empty shares.
 */
static int split_lanes(struct replay_round *r, const struct relay_backend_config *cfg, int nlanes, int compress)
{
	struct replay_split *sp = &r->split;
	size_t nlines = 0, n = 0;
	for (size_t b = 0; b < r->group_n; b++)
		nlines += r->batches[b].lines;
	sp->nser = 0;
	table_reset(sp, 2 * nlines);
	sp->line = reserve(sp->line, &sp->line_cap, nlines, sizeof(*sp->line));

	/* First pass: every line's length and series, every series' bytes. */
	for (size_t b = 0; b < r->group_n; b++) {
		const char *p = r->batches[b].body, *e = p + r->batches[b].body_len;
		while (p < e) {
			size_t klen;
			const char *next = lp_line_end(p, e, &klen);
			uint32_t si = series_of(sp, replay_series_hash(p, klen));
			sp->line = reserve(sp->line, &sp->line_cap, n + 1, sizeof(*sp->line));
			sp->line[n].len = (uint32_t)(next - p);
			sp->line[n].ser = si;
			sp->ser[si].bytes += sp->line[n].len;
			n++;
			p = next;
		}
	}

	/* Each series to the lane with the fewest bytes so far, the largest
	 * series first. */
	uint64_t load[REPLAY_MAX_LANES] = { 0 };
	sp->lane_of = reserve(sp->lane_of, &sp->lane_cap, sp->nser, sizeof(*sp->lane_of));
	if (sp->nser <= SPLIT_SORT_MAX)
		qsort(sp->ser, sp->nser, sizeof(*sp->ser), by_bytes_desc);
	for (size_t i = 0; i < sp->nser; i++) {
		int best = 0;
		for (int k = 1; k < nlanes; k++)
			if (load[k] < load[best])
				best = k;
		load[best] += sp->ser[i].bytes;
		sp->lane_of[sp->ser[i].idx] = (uint8_t)best;
	}

	/* Second pass: copy the lines out, in queue order, each to its lane.
	 * Every batch ends with a whole line, so no line spans two of them. */
	for (int i = 0; i < nlanes; i++) {
		rbuf_reset(&r->shares[i].body);
		rbuf_reserve(&r->shares[i].body, load[i]);
	}
	size_t li = 0;
	for (size_t b = 0; b < r->group_n; b++) {
		const char *p = r->batches[b].body, *e = p + r->batches[b].body_len;
		for (; p < e; li++) {
			rbuf_append(&r->shares[sp->lane_of[sp->line[li].ser]].body, p, sp->line[li].len);
			p += sp->line[li].len;
		}
	}
	int used = 0;
	for (int i = 0; i < nlanes; i++) {
		struct replay_share *sh = &r->shares[i];
		sh->done = sh->body.len == 0;
		sh->gzipped = !sh->done && compress && cfg->gzip && replay_gzip(&sh->gz, sh->body.data, sh->body.len) == 0;
		used += !sh->done;
	}
	return used;
}

/*
 * Larger writes cost InfluxDB less CPU per point, hence the coalescing;
 * inside an isolation window (after a coalesced write was refused) the
 * first batch goes alone, so that the bad one is found.
 */
void replay_round_prepare(struct replay_round *r, const struct relay_backend_config *cfg, int nlanes, int isolate,
                          int compress)
{
	size_t lines = r->batches[0].lines, bytes = r->batches[0].body_len;
	r->group_n = 1;
	while (!isolate && r->group_n < r->nbatches) {
		const struct wal_batch *b = &r->batches[r->group_n];
		if (!replay_round_same_target(&r->batches[0], b) || lines + b->lines > cfg->batch_max_lines ||
		    bytes + b->body_len > cfg->batch_max_bytes)
			break;
		lines += b->lines;
		bytes += b->body_len;
		r->group_n++;
	}
	r->gzipped = 0;
	r->lane_mode = 0;
	r->new_hours = 0;
	r->touched.n = 0;
	/* A statement goes alone, as a form to /query (backend_api_statement):
	 * no lanes, no gzip. */
	if (r->batches[0].kind == WAL_KIND_STATEMENT)
		return;
	/* Lanes only on the thread pool (splitting copies the lines), never
	 * while isolating a bad batch, and never into an hour this worker has
	 * not written into: the write that may create a shard goes alone. */
	if (compress && nlanes > 1 && !isolate) {
		r->new_hours = !hours_known(r);
		if (!r->new_hours && split_lanes(r, cfg, nlanes, compress) > 1) {
			r->lane_mode = 1;
			return;
		}
	}
	rbuf_reset(&r->payload);
	if (r->group_n > 1) {
		rbuf_reserve(&r->payload, bytes);
		for (size_t i = 0; i < r->group_n; i++)
			rbuf_append(&r->payload, r->batches[i].body, r->batches[i].body_len);
	}
	if (compress && cfg->gzip) {
		const char *p = r->group_n > 1 ? r->payload.data : r->batches[0].body;
		size_t len = r->group_n > 1 ? r->payload.len : r->batches[0].body_len;
		r->gzipped = replay_gzip(&r->gz, p, len) == 0;
	}
}

/* InfluxDB 2 takes no minutes or hours; the queue keeps the batch as it
 * was written, so only the copy read out is rewritten. */
void replay_round_rescale(struct replay_round *r, const struct relay_backend_config *cfg)
{
	for (size_t i = 0; i < r->nbatches; i++) {
		struct wal_batch *b = &r->batches[i];
		int sent;
		int64_t f = backend_api_rescale(cfg, b->precision, &sent);
		if (f == 1 || b->kind != WAL_KIND_LINES)
			continue;
		struct rbuf out = RBUF_INIT;
		/* A timestamp in minutes or hours so large that it does not fit
		 * in seconds (InfluxDB refuses it in any unit) fails here: the
		 * batch is then sent as it is, labelled in its own unit, and the
		 * v2 server refuses it, so it is dead-lettered, never stored at
		 * the wrong time. */
		if (backend_api_scale_timestamps(b->body, b->body_len, f, &out) != 0) {
			relay_log(RELAY_LOG_WARN, "backend '%s': batch %" PRIu64 " has a timestamp in %s that does not "
			          "fit in seconds: sent unconverted, the backend will refuse it", cfg->name, b->seq,
			          b->precision == LP_PRECISION_M ? "minutes" : "hours");
		} else if (wal_batch_set_body(b, out.data, out.len) == 0) {
			b->precision = (uint8_t)sent;
		}
		rbuf_release(&out);
	}
}

void replay_round_release(struct replay_round *r)
{
	for (size_t i = 0; i < r->nbatches; i++)
		wal_batch_release(&r->batches[i]);
	r->nbatches = 0;
	r->group_n = 0;
}

void replay_round_free(struct replay_round *r)
{
	replay_round_release(r);
	rbuf_release(&r->payload);
	rbuf_release(&r->gz);
	for (int i = 0; i < REPLAY_MAX_LANES; i++) {
		rbuf_release(&r->shares[i].body);
		rbuf_release(&r->shares[i].gz);
	}
	free(r->split.line);
	free(r->split.slot_hash);
	free(r->split.slot_ser);
	free(r->split.ser);
	free(r->split.lane_of);
	memset(r, 0, sizeof(*r));
}

/*---- 413 pieces ----*/

/* Shift the ranges from index at on one place up (n grows by one): the
 * caller then sets range[at] and range[at + 1]. */
static void pieces_open(struct replay_pieces *p, int at)
{
	memmove(&p->range[at + 1], &p->range[at], sizeof(p->range[0]) * (size_t)(p->n - at));
	p->n++;
}

int replay_pieces_halve(struct replay_pieces *p, const char *body, size_t len)
{
	if (!p->n) {
		p->range[0].off = 0;
		p->range[0].len = len;
		p->n = 1;
	}
	size_t off = p->range[0].off, plen = p->range[0].len;
	const char *s = body + off;
	/* The newline nearest the middle (not the last one) ends the first
	 * half. */
	const char *mid = memchr(s + plen / 2, '\n', plen - plen / 2 - 1);
	if (!mid)
		mid = memrchr(s, '\n', plen / 2);
	if (!mid || (size_t)(mid - s) + 1 >= plen || p->n >= REPLAY_PIECES_MAX)
		return -1; /* one line that the backend still finds too large */
	size_t first = (size_t)(mid - s) + 1;
	pieces_open(p, 1);
	p->range[0].len = first;
	p->range[1].off = off + first;
	p->range[1].len = plen - first;
	return 0;
}

int replay_pieces_pop(struct replay_pieces *p)
{
	p->n--;
	memmove(&p->range[0], &p->range[1], sizeof(p->range[0]) * (size_t)p->n);
	return p->n;
}

/* Rather than offer the backend a size it already refused, the next
 * piece is cut to what it accepted. */
int replay_pieces_delivered(struct replay_pieces *p, const char *body)
{
	if (p->range[0].len > p->fit)
		p->fit = p->range[0].len;
	if (!replay_pieces_pop(p))
		return 0;
	size_t off = p->range[0].off, len = p->range[0].len, max = p->fit;
	if (!max || len <= max || p->n >= REPLAY_PIECES_MAX)
		return p->n;
	const char *nl = memrchr(body + off, '\n', max);
	if (!nl)
		return p->n; /* a single line longer than max: sent as it is */
	size_t first = (size_t)(nl - (body + off)) + 1;
	pieces_open(p, 0);
	p->range[0].len = first;
	p->range[1].off = off + first;
	p->range[1].len = len - first;
	return p->n;
}
