/*
 * replay: the per-backend delivery state machine. Must never lose a batch
 * (the cursor moves only after a complete 2xx, in a committed transaction),
 * never reorder (writes go out in rounds, in queue order, and a round starts
 * only when the previous one is delivered; within a round the lines are
 * shared out among the parallel lanes by series, so every series stays in
 * order and a live write never overtakes the backlog), never hold an LMDB
 * transaction across network I/O (batches are copied out on the thread pool
 * first), and never spin (every retry waits at least retry_min). The next
 * round is read and prepared while one is in flight (the prefetch), but it
 * is sent only once the round before it is delivered.
 *
 *   IDLE --notify--> READ --batches--> SEND --2xx--> SEND (the prefetched round)
 *                     |                 | \         or READ (past it) ...
 *                     0 batches: IDLE   |  \        + ACK beside the next SEND
 *                                       |   PREFETCH (pool) beside the SEND
 *                                       |--retry--> BACKOFF --> (PROBE) --> SEND
 *                                       |--hold---> BACKOFF --> SEND
 *                                       |--dead---> COMMIT(dead-letter) --> next
 *                                       |--413----> SEND (halves)
 *
 * A queue operation that fails is never left behind (issue 11: a failed
 * ack used to be forgotten, the worker went idle showing "up", and only
 * the next write woke it). A READ or COMMIT that fails waits in BACKOFF
 * and is done again (`redo`); an ACK that fails is tried again on its own
 * timer, and until one commits no new round starts (ACKWAIT): what is
 * sent meanwhile could not be recorded either. Either shows as
 * REPLAY_STORAGE with its error. will_wake() names what may wake a
 * worker; every entry point checks it before returning to the loop.
 */
#include "relay/delivery/replay.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relay/delivery/backend_api.h"
#include "relay/base/backoff.h"
#include "relay/base/lineproto.h"
#include "relay/base/log.h"
#include "relay/base/outcome.h"

#include <zlib.h>

enum state { S_IDLE, S_READ, S_SEND, S_BACKOFF, S_PROBE, S_CREATE, S_COMMIT, S_ACKWAIT, S_STOPPED };

enum work_kind {
	WK_READ = 0,   /* read only (from read_from) */
	WK_DEAD,       /* dead-letter batch wk_seq and finish it, then read */
	WK_DEAD_PART,  /* dead-letter lines [wk_off, +wk_len) of batch 0, no read */
};

#define HOLD_MIN_MS 1000
#define HOLD_REMIND_NS (300ULL * 1000000000ULL)

static void start_read(struct replay_worker *w, int kind);
static void send_current(struct replay_worker *w);
static void on_response(struct http_client *c, const struct http_response *r, void *arg);
static void write_answered(struct http_client *c, const struct http_response *r, void *arg);
static void send_lanes(struct replay_worker *w);
static void next_round(struct replay_worker *w);
static void start_prefetch(struct replay_worker *w);
static void check_awake(struct replay_worker *w);
static void work_ok(struct replay_worker *w);

const char *replay_health_name(enum replay_health h)
{
	switch (h) {
	case REPLAY_UP: return "up";
	case REPLAY_RETRYING: return "retrying";
	case REPLAY_DOWN: return "down";
	case REPLAY_HOLDING: return "holding";
	case REPLAY_STORAGE: return "storage";
	}
	return "?";
}

/*
 * What status and /health show: a failing queue operation first (nothing
 * new is sent meanwhile, whatever the backend says), else the backend's
 * state. Logs each change once, not every retry.
 */
static void publish(struct replay_worker *w)
{
	enum replay_health h = w->redo || w->ack_failing ? REPLAY_STORAGE : w->link;
	snprintf(w->last_error, sizeof(w->last_error), "%s",
		 w->redo ? w->redo_error : w->ack_failing ? w->ack_error : w->link_error);
	if (h == w->health)
		return;
	if (h == REPLAY_HOLDING || h == REPLAY_STORAGE)
		w->hold_logged_ns = now_mono_ns();
	enum replay_health old = w->health;
	w->health = h;
	switch (h) {
	case REPLAY_UP:
		relay_log(RELAY_LOG_NOTICE, "backend '%s' is up again (was %s): delivering", w->cfg->name,
			  replay_health_name(old));
		break;
	case REPLAY_RETRYING:
		relay_log(RELAY_LOG_WARN, "backend '%s' answers with errors, retrying with backoff: %s", w->cfg->name,
			  w->last_error);
		break;
	case REPLAY_DOWN:
		relay_log(RELAY_LOG_WARN, "backend '%s' is down, queueing and probing /ping: %s", w->cfg->name,
			  w->last_error);
		break;
	case REPLAY_HOLDING:
		relay_log(RELAY_LOG_ERROR,
			  "backend '%s' is HOLDING its queue until this is fixed (data is kept, retrying): %s",
			  w->cfg->name, w->last_error);
		break;
	case REPLAY_STORAGE:
		relay_log(RELAY_LOG_ERROR,
			  "backend '%s': %s; delivery waits until the queue works again (data is kept, retrying with "
			  "backoff)", w->cfg->name, w->last_error);
		break;
	}
}

/* Holding and a failing queue need a person: remind them every few
 * minutes, not only once (a single line scrolls away). */
static void remind(struct replay_worker *w, uint32_t attempts)
{
	uint64_t now = now_mono_ns();
	if (now - w->hold_logged_ns < HOLD_REMIND_NS)
		return;
	w->hold_logged_ns = now;
	if (w->health == REPLAY_HOLDING)
		relay_log(RELAY_LOG_ERROR, "backend '%s' is still HOLDING its queue (attempt %u): %s", w->cfg->name,
			  attempts, w->last_error);
	else if (w->health == REPLAY_STORAGE)
		relay_log(RELAY_LOG_ERROR, "backend '%s': still %s (attempt %u)", w->cfg->name, w->last_error,
			  attempts);
}

/* The backend's state, from its answers (reason: why, or NULL to keep
 * the last one). */
static void set_health(struct replay_worker *w, enum replay_health h, const char *reason)
{
	if (reason)
		snprintf(w->link_error, sizeof(w->link_error), "%s", reason);
	if (h == REPLAY_UP && w->link != REPLAY_UP)
		w->link_error[0] = '\0';
	int same = h == w->link;
	w->link = h;
	publish(w);
	if (same && h == REPLAY_HOLDING && w->health == REPLAY_HOLDING)
		remind(w, w->attempts);
}

static uint64_t rnd64(void)
{
	/* Jitter only needs to differ between relays and retries. */
	static uint64_t x;
	if (!x)
		x = now_mono_ns() ^ ((uint64_t)uv_os_getpid() << 32) ^ 0x9e3779b97f4a7c15ULL;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return x;
}

/*---- the payload ----*/

static int same_target(const struct wal_batch *a, const struct wal_batch *b)
{
	return a->precision == b->precision && strcmp(a->db, b->db) == 0 && strcmp(a->rp, b->rp) == 0 &&
	       strcmp(a->user, b->user) == 0 && strcmp(a->password, b->password) == 0 &&
	       strcmp(a->token, b->token) == 0 && strcmp(a->org, b->org) == 0;
}

static uint64_t group_last_seq(const struct replay_round *r)
{
	return r->batches[r->group_n - 1].seq;
}

/* The body of the current single write: the front 413 piece, the
 * coalesced group, or the one batch. */
static void payload(const struct replay_worker *w, const char **p, size_t *len)
{
	const struct replay_round *r = w->cur;
	const struct wal_batch *b0 = &r->batches[0];
	if (w->nranges) {
		*p = b0->body + w->ranges[0].off;
		*len = w->ranges[0].len;
	} else if (r->group_n > 1) {
		*p = r->payload.data;
		*len = r->payload.len;
	} else {
		*p = b0->body;
		*len = b0->body_len;
	}
}

/* gzip src into out (level 1: the point is fewer bytes on the wire for
 * little CPU). Returns 0, or -1 if zlib fails (then send uncompressed). */
static int gzip_into(struct rbuf *out, const char *src, size_t len)
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
 * The hash of a series key (measurement and tags, as written) that is the
 * same whatever the order of its tags: InfluxDB sorts a point's tags, so
 * "m,a=1,b=2" and "m,b=2,a=1" are one series, and must travel in one lane
 * or a later point could be stored before an earlier one of the same
 * series. The measurement's hash, then the sum (which does not depend on
 * the order) of each tag's mixed hash. Escapes ("\," and "\\") are skipped
 * over, never taken for a separator.
 */
static uint32_t series_hash(const char *p, size_t n)
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
 * (series_hash); two that collide share a lane, which is still correct. Returns the number of non-empty shares.
 */
static int split_lanes(const struct replay_worker *w, struct replay_round *r, int compress)
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
			uint32_t si = series_of(sp, series_hash(p, klen));
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
		for (int k = 1; k < w->nlanes; k++)
			if (load[k] < load[best])
				best = k;
		load[best] += sp->ser[i].bytes;
		sp->lane_of[sp->ser[i].idx] = (uint8_t)best;
	}

	/* Second pass: copy the lines out, in queue order, each to its lane.
	 * Every batch ends with a whole line, so no line spans two of them. */
	for (int i = 0; i < w->nlanes; i++) {
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
	for (int i = 0; i < w->nlanes; i++) {
		struct replay_share *sh = &r->shares[i];
		sh->done = sh->body.len == 0;
		sh->gzipped =
		    !sh->done && compress && w->cfg->gzip && gzip_into(&sh->gz, sh->body.data, sh->body.len) == 0;
		used += !sh->done;
	}
	return used;
}

/*
 * Make round r ready to send. Coalesce: from batches[0], take consecutive
 * batches for the same target up to the configured lines and bytes.
 * Larger writes cost InfluxDB less CPU per point. With isolate (inside an
 * isolation window, after a coalesced write was refused) the first batch
 * goes alone, so that the bad one is found. With compress (only on the
 * thread pool: it costs CPU), the write is shared out among the lanes and
 * gzipped when the backend is configured for it.
 *
 * Touches only r and what never changes after replay_start (cfg, nlanes):
 * a prefetch runs this on the pool while the loop thread works on the
 * other round.
 */
static void round_prepare(const struct replay_worker *w, struct replay_round *r, int isolate, int compress)
{
	const struct relay_backend_config *cfg = w->cfg;
	size_t lines = r->batches[0].lines, bytes = r->batches[0].body_len;
	r->group_n = 1;
	while (!isolate && r->group_n < r->nbatches) {
		const struct wal_batch *b = &r->batches[r->group_n];
		if (!same_target(&r->batches[0], b) || lines + b->lines > cfg->batch_max_lines ||
		    bytes + b->body_len > cfg->batch_max_bytes)
			break;
		lines += b->lines;
		bytes += b->body_len;
		r->group_n++;
	}
	r->gzipped = 0;
	r->lane_mode = 0;
	/* Lanes only on the thread pool (splitting copies the lines) and
	 * never while isolating a bad batch. */
	if (compress && w->nlanes > 1 && !isolate && split_lanes(w, r, compress) > 1) {
		r->lane_mode = 1;
		return;
	}
	rbuf_reset(&r->payload);
	if (r->group_n > 1) {
		rbuf_reserve(&r->payload, bytes);
		for (size_t i = 0; i < r->group_n; i++)
			rbuf_append(&r->payload, r->batches[i].body, r->batches[i].body_len);
	}
	if (compress && w->cfg->gzip) {
		const char *p = r->group_n > 1 ? r->payload.data : r->batches[0].body;
		size_t len = r->group_n > 1 ? r->payload.len : r->batches[0].body_len;
		r->gzipped = gzip_into(&r->gz, p, len) == 0;
	}
}

/* Is batch seq inside the isolation window (send one batch at a time)? */
static int isolating(const struct replay_worker *w, uint64_t seq)
{
	return w->isolate_upto && seq <= w->isolate_upto;
}

/*
 * The loop thread's side of starting a round in cur: the per-write state
 * (413 pieces, attempts) starts afresh, and an isolation window that cur
 * has left is closed.
 */
static void begin_round(struct replay_worker *w)
{
	if (w->isolate_upto && !isolating(w, w->cur->batches[0].seq))
		w->isolate_upto = 0;
	w->nranges = 0;
	w->split_fit = 0;
	w->attempts = 0;
	w->db_created = 0;
}

/* Regroup cur on the loop thread, one batch at a time from batches[0]
 * (isolation after a refused coalesced write). */
static void regroup_isolated(struct replay_worker *w)
{
	round_prepare(w, w->cur, 1, 0);
	w->nranges = 0;
	w->split_fit = 0;
	w->attempts = 0;
}

static uint32_t count_lines(const char *p, size_t len)
{
	uint32_t n = 0;
	for (const char *e = p + len; (p = memchr(p, '\n', (size_t)(e - p))); p++)
		n++;
	return n;
}

/*
 * Every lane of this round has answered: the round is judged as one
 * write, delivered if every share is, otherwise by the first failure; a
 * retry resends only the shares not yet delivered.
 */
static void lanes_answered(struct replay_worker *w)
{
	struct http_response all;
	memset(&all, 0, sizeof(all));
	if (w->fail_status) {
		all.status = w->fail_status;
		all.body = rbuf_cstr(&w->fail_body);
		all.body_len = w->fail_body.len;
		all.retry_after_s = w->fail_retry_after;
		all.err = w->fail_err;
	} else {
		all.status = 204;
		all.body = "";
	}
	w->fail_status = 0;
	on_response(NULL, &all, w);
}

/* A lane's answer. */
static void lane_response(struct http_client *c, const struct http_response *r, void *arg)
{
	struct replay_lane *l = arg;
	struct replay_worker *w = l->w;
	(void)c;
	l->inflight = 0;
	if (r->status >= 200 && r->status < 300) {
		w->cur->shares[l - w->lanes].done = 1;
	} else if (!w->fail_status) {
		w->fail_status = r->status;
		w->fail_retry_after = r->retry_after_s;
		rbuf_reset(&w->fail_body);
		rbuf_append(&w->fail_body, r->body, r->body_len);
		snprintf(w->fail_err, sizeof(w->fail_err), "%s", r->err ? r->err : "");
	}
	if (--w->lanes_waiting)
		return;
	lanes_answered(w);
	check_awake(w);
}

static void send_lanes(struct replay_worker *w)
{
	size_t plain = w->headers.len;
	w->fail_status = 0;
	/* One count for this loop itself: a lane whose connection fails at
	 * once answers inside http_client_request, and the round must not be
	 * judged (and maybe retried on lanes still busy) before every lane
	 * was sent. */
	w->lanes_waiting = 1;
	for (int i = 0; i < w->nlanes; i++) {
		struct replay_lane *l = &w->lanes[i];
		const struct replay_share *sh = &w->cur->shares[i];
		if (sh->done)
			continue;
		w->headers.len = plain;
		if (sh->gzipped)
			rbuf_append(&w->headers, "Content-Encoding: gzip\r\n", 24);
		l->inflight = 1;
		w->lanes_waiting++;
		w->stats.posts++;
		/* The share's buffers belong to this request until
		 * lane_response: cur is not refilled before every lane has
		 * answered. */
		int rc = http_client_request(&l->http, "POST", rbuf_cstr(&w->target), rbuf_cstr(&w->headers),
					     sh->gzipped ? sh->gz.data : sh->body.data,
					     sh->gzipped ? sh->gz.len : sh->body.len, lane_response, l);
		relay_assert(rc == 0);
	}
	w->headers.len = plain;
	if (--w->lanes_waiting == 0)
		lanes_answered(w);
}

static void retry_later(struct replay_worker *w, const struct http_response *r, enum replay_health h,
                        uint64_t floor_ms);

/*
 * No request can be built for the write being tried (backend_api.h): a
 * value stored with the batch can never be sent, so it goes the way of a
 * batch the backend refuses for good (dead-lettered, after isolating it
 * if it was coalesced); the backend's own credentials wait for the
 * operator, as a 401 would. Never sent, so nothing is in flight.
 */
static void unsendable(struct replay_worker *w, int rc, const char *why)
{
	struct http_response r;
	memset(&r, 0, sizeof(r));
	r.status = OUTCOME_STATUS_UNSENDABLE;
	r.body = "";
	r.err = why;
	if (rc == BACKEND_API_ECONFIG)
		retry_later(w, &r, REPLAY_HOLDING, HOLD_MIN_MS);
	else
		on_response(NULL, &r, w);
}

static void send_current(struct replay_worker *w)
{
	const struct wal_batch *b = &w->cur->batches[0];
	const char *body;
	size_t len;
	char why[160];
	if (w->stopping)
		return;
	/* The backend's API (v1 or v2) and credentials: backend_api.c. */
	rbuf_reset(&w->target);
	rbuf_reset(&w->headers);
	int brc = backend_api_request(w->cfg, b, &w->target, &w->headers, why, sizeof(why));
	if (brc) {
		unsendable(w, brc, why);
		return;
	}
	rbuf_append(&w->headers, "Content-Type: text/plain; charset=utf-8\r\n", 41);
	w->state = S_SEND;
	if (w->cur->lane_mode) {
		send_lanes(w); /* the lanes hold the lines; no coalesced payload */
		return;
	}
	payload(w, &body, &len);
	int gz = w->cur->gzipped && !w->nranges && w->isolate_upto == 0;
	if (gz) {
		body = w->cur->gz.data;
		len = w->cur->gz.len;
	}
	if (gz)
		rbuf_append(&w->headers, "Content-Encoding: gzip\r\n", 24);
	w->stats.posts++;
	int rc = http_client_request(&w->http, "POST", rbuf_cstr(&w->target), rbuf_cstr(&w->headers), body, len,
				     write_answered, w);
	relay_assert(rc == 0);
}

/*---- timers ----*/

static void probe_response(struct http_client *c, const struct http_response *r, void *arg);

static void go_idle(struct replay_worker *w);

static void redo_work(struct replay_worker *w);

/* What the backoff timer does when it fires (and relayctl retry). */
static void timer_fired(struct replay_worker *w)
{
	if (w->stopping)
		return;
	if (w->paused) {
		/* Inside a 413 split the batch and its remaining pieces are
		 * kept (held: no timer; relayctl resume goes on with them), so
		 * that a piece already dead-lettered is not dead-lettered
		 * again after a re-read. Otherwise drop what is held. */
		if (!w->nranges)
			go_idle(w);
		return;
	}
	if (w->redo) {
		redo_work(w); /* a failed queue read or dead-letter */
		return;
	}
	if (w->cur->nbatches == 0) {
		next_round(w); /* nothing held: read */
		return;
	}
	if (w->link == REPLAY_DOWN) {
		/* Probe before resending a possibly large payload to a server
		 * that was unreachable. */
		w->state = S_PROBE;
		rbuf_reset(&w->target);
		rbuf_appendf(&w->target, "%s/ping", w->cfg->path_prefix);
		int rc = http_client_request(&w->http, "GET", rbuf_cstr(&w->target), NULL, NULL, 0, probe_response, w);
		relay_assert(rc == 0);
		return;
	}
	send_current(w);
}

static void timer_cb(uv_timer_t *t)
{
	struct replay_worker *w = t->data;
	timer_fired(w);
	check_awake(w);
}

static void schedule(struct replay_worker *w, uint64_t delay_ms)
{
	w->state = S_BACKOFF;
	uv_timer_start(&w->timer, timer_cb, delay_ms, 0);
}

static uint64_t delay_after(const struct replay_worker *w, uint32_t attempts, uint64_t floor_ms,
                            uint64_t retry_after_s)
{
	const struct relay_backend_config *cfg = w->cfg;
	uint64_t min = cfg->retry_min_ms > floor_ms ? cfg->retry_min_ms : floor_ms;
	uint64_t max = cfg->retry_max_ms > min ? cfg->retry_max_ms : min;
	uint64_t d = backoff_full_jitter(attempts ? attempts - 1 : 0, min, max, min, rnd64());
	if (retry_after_s) {
		/* Honour the server's Retry-After within [min, max]: capped so that
		 * a silly value cannot park the queue for hours, and saturated, so
		 * that a huge one (2^61 s is 0 ms once multiplied in 64 bits) means
		 * the cap rather than no wait at all. Never below min: the hold
		 * floor and retry_min keep a hostile backend from making us spin. */
		uint64_t ra = retry_after_s > max / 1000 ? max : retry_after_s * 1000;
		d = ra < min ? min : ra > max ? max : ra;
	}
	return d;
}

static uint64_t next_delay(const struct replay_worker *w, uint64_t floor_ms, uint64_t retry_after_s)
{
	return delay_after(w, w->attempts, floor_ms, retry_after_s);
}

/* Back off after answer r (what) and try again; floor_ms is the least
 * wait (the hold floor, or 0 for retry_min). why, when not NULL, leads
 * the reason shown in the log and in relayctl status. */
static void retry_later_why(struct replay_worker *w, const struct http_response *r, enum replay_health h,
                            uint64_t floor_ms, const char *why)
{
	char reason[300];
	int n = why ? snprintf(reason, sizeof(reason), "%s: ", why) : 0;
	if (n < 0 || (size_t)n >= sizeof(reason))
		n = 0;
	if (r->status < 0)
		snprintf(reason + n, sizeof(reason) - (size_t)n, "%s", r->err ? r->err : "transport error");
	else
		snprintf(reason + n, sizeof(reason) - (size_t)n, "HTTP %d: %.*s", r->status,
			 (int)(r->body_len > 200 ? 200 : r->body_len), r->body);
	/* Trim the newline InfluxDB ends its JSON with. */
	reason[strcspn(reason, "\n")] = '\0';
	/* A new kind of trouble starts its own backoff: after a long outage
	 * the first answer of a returning server must not wait the cap. */
	if (h != w->link)
		w->attempts = 0;
	w->attempts++;
	w->stats.retries++;
	set_health(w, h, reason);
	uint64_t d = next_delay(w, floor_ms, r->retry_after_s);
	relay_log(RELAY_LOG_DEBUG, "backend '%s': attempt %u failed (%s), next in %" PRIu64 " ms", w->cfg->name,
		  w->attempts, reason, d);
	schedule(w, d);
}

static void retry_later(struct replay_worker *w, const struct http_response *r, enum replay_health h,
                        uint64_t floor_ms)
{
	retry_later_why(w, r, h, floor_ms, NULL);
}

static void probe_response(struct http_client *c, const struct http_response *r, void *arg)
{
	struct replay_worker *w = arg;
	(void)c;
	if (r->status >= 200 && r->status < 300) {
		/* Reachable again: resend now; the state is "up" once the write
		 * itself succeeds. */
		send_current(w);
	} else {
		retry_later(w, r, REPLAY_DOWN, 0);
	}
	check_awake(w);
}

/*---- work (thread pool) ----*/

static void round_release(struct replay_round *r)
{
	for (size_t i = 0; i < r->nbatches; i++)
		wal_batch_release(&r->batches[i]);
	r->nbatches = 0;
	r->group_n = 0;
}

/*
 * InfluxDB 2 takes no minutes or hours: a v2 backend gets such batches
 * with their timestamps in seconds (and precision s, so that they may
 * coalesce with batches in seconds). On the pool, right after the read;
 * the queue keeps the batch as it was written.
 */
static void rescale_round(const struct replay_worker *w, struct replay_round *r)
{
	for (size_t i = 0; i < r->nbatches; i++) {
		struct wal_batch *b = &r->batches[i];
		int sent;
		int64_t f = backend_api_rescale(w->cfg, b->precision, &sent);
		if (f == 1)
			continue;
		struct rbuf out = RBUF_INIT;
		/* A timestamp in minutes or hours so large that it does not fit
		 * in seconds (InfluxDB refuses it in any unit) fails here: the
		 * batch is then sent as it is, labelled in its own unit, and the
		 * v2 server refuses it, so it is dead-lettered, never stored at
		 * the wrong time. */
		if (backend_api_scale_timestamps(b->body, b->body_len, f, &out) != 0) {
			relay_log(RELAY_LOG_WARN, "backend '%s': batch %" PRIu64 " has a timestamp in %s that does not "
			          "fit in seconds: sent unconverted, the backend will refuse it", w->cfg->name, b->seq,
			          b->precision == LP_PRECISION_M ? "minutes" : "hours");
		} else if (wal_batch_set_body(b, out.data, out.len) == 0) {
			b->precision = (uint8_t)sent;
		}
		rbuf_release(&out);
	}
}

static void work_cb(uv_work_t *req)
{
	struct replay_worker *w = req->data;
	struct replay_round *r = w->cur;
	int64_t now = now_realtime_ns();
	const struct wal_batch *b0 = r->nbatches ? &r->batches[0] : NULL;
	w->wk_rc = 0;
	switch (w->wk_kind) {
	case WK_DEAD:
		w->wk_rc = wal_dead_letter(w->wal, w->id, w->wk_seq, NULL, 0, 0, w->wk_status, w->dead_msg,
					   w->attempts, now, 1);
		return;
	case WK_DEAD_PART:
		/* Known limit: for a v2 backend, a batch in minutes or hours was
		 * rescaled to seconds (rescale_round); the part dead-lettered here
		 * keeps those seconds while the record keeps the batch's own
		 * precision. Only a 413-split single line of such a batch gets
		 * here; relayctl shows the record as it is. */
		w->wk_rc = wal_dead_letter(w->wal, w->id, b0->seq, b0->body + w->wk_off, w->wk_len, w->wk_lines,
					   w->wk_status, w->dead_msg, w->attempts, now, 0);
		return;
	case WK_READ:
		break;
	}
	round_release(r);
	/* Copy out about one payload's worth: enough to coalesce, little
	 * enough to stay small in memory. */
	size_t max_bytes = w->cfg->batch_max_bytes;
	w->wk_quarantined = 0;
	w->wk_rc = wal_read(w->wal, w->id, w->read_from, REPLAY_READ_MAX, max_bytes, r->batches, &r->nbatches);
	/* A record that does not decode never stops the queue: it is moved
	 * to the dead-letter queue, marked corrupt, and the read goes on
	 * (a bounded number of times per read: a store damaged all over is
	 * shown as a failing read and retried with backoff). WAL_ENOTFOUND:
	 * another backend's worker moved it first. */
	for (int i = 0; w->wk_rc == WAL_ECORRUPT && i < REPLAY_QUARANTINE_MAX; i++) {
		uint64_t seq = 0;
		int qrc = wal_quarantine(w->wal, w->id, w->read_from, &seq, w->wk_qwhy, sizeof(w->wk_qwhy));
		if (qrc && qrc != WAL_ENOTFOUND) {
			w->wk_rc = qrc;
			break;
		}
		if (qrc == 0) {
			w->wk_quarantined++;
			w->wk_qseq = seq;
		}
		w->wk_rc = wal_read(w->wal, w->id, w->read_from, REPLAY_READ_MAX, max_bytes, r->batches, &r->nbatches);
	}
	if (w->wk_rc == 0)
		rescale_round(w, r);
	/* Build (and compress) the payload here, off the loop thread. The
	 * loop thread leaves isolate_upto alone while this runs: no write is
	 * in flight. */
	if (w->wk_rc == 0 && r->nbatches)
		round_prepare(w, r, isolating(w, r->batches[0].seq), 1);
}

static void finish_stop(struct replay_worker *w);

/*
 * Acks run beside the next write: once a write got its 2xx, the next
 * round (prefetched, or read past it) is sent while the commit that moves
 * the cursor runs on the pool. Acks are cumulative, so one in flight at a time
 * covers everything delivered so far. A crash before the ack commits sends
 * those batches again after the restart (at least once); order is kept,
 * since the next write still starts only after the previous one's 2xx.
 */
static void ack_work_cb(uv_work_t *req)
{
	struct replay_worker *w = req->data;
	w->ack_rc = wal_ack(w->wal, w->id, w->ack_inflight, now_realtime_ns());
}

static void start_ack(struct replay_worker *w);

/* Delivered batches are all recorded (or their ack is being committed). */
static int ack_settled(const struct replay_worker *w)
{
	return w->ack_done >= w->ack_want;
}

/* An ack committed, or a dead-letter moved the cursor past every
 * delivered batch: an ack failure is over. */
static void ack_recovered(struct replay_worker *w)
{
	if (!w->ack_failing)
		return;
	w->ack_failing = 0;
	w->ack_attempts = 0;
	uv_timer_stop(&w->ack_timer);
	publish(w);
}

static void ack_timer_cb(uv_timer_t *t)
{
	struct replay_worker *w = t->data;
	if (!w->stopping) {
		if (ack_settled(w) && !w->ack_busy)
			ack_recovered(w); /* a dead-letter recorded it meanwhile */
		else
			start_ack(w);
		if (w->state == S_ACKWAIT && !w->ack_failing)
			next_round(w);
	}
	check_awake(w);
}

static void ack_after_cb(uv_work_t *req, int status)
{
	struct replay_worker *w = req->data;
	int rc = status ? status : w->ack_rc;
	w->ack_busy = 0;
	if (rc) {
		/* The batches were delivered; they stay pending until an ack
		 * commits (a restart meanwhile sends them again). Nothing new
		 * is sent until then (next_round waits in ACKWAIT), and the ack
		 * is tried again on its own timer, paused or not: it sends
		 * nothing. */
		if (!w->ack_failing)
			w->ack_attempts = 0;
		w->ack_failing = 1;
		w->ack_attempts++;
		snprintf(w->ack_error, sizeof(w->ack_error), "cannot record delivery up to batch %" PRIu64 ": %s",
			 w->ack_inflight, wal_strerror(rc));
		publish(w);
		remind(w, w->ack_attempts);
		if (!w->stopping) {
			uint64_t d = delay_after(w, w->ack_attempts, HOLD_MIN_MS, 0);
			relay_log(RELAY_LOG_DEBUG, "backend '%s': %s (attempt %u), next in %" PRIu64 " ms", w->cfg->name,
				  w->ack_error, w->ack_attempts, d);
			uv_timer_start(&w->ack_timer, ack_timer_cb, d, 0);
		}
	} else if (w->ack_inflight > w->ack_done) {
		w->ack_done = w->ack_inflight;
	}
	if (w->stopping) {
		finish_stop(w);
		return;
	}
	if (rc == 0) {
		ack_recovered(w);
		if (!ack_settled(w))
			start_ack(w); /* what was delivered meanwhile */
		if (w->state == S_ACKWAIT)
			next_round(w);
	}
	check_awake(w);
}

static void start_ack(struct replay_worker *w)
{
	if (w->ack_busy || ack_settled(w))
		return;
	uv_timer_stop(&w->ack_timer); /* a failed one is tried now */
	w->ack_busy = 1;
	w->ack_inflight = w->ack_want;
	w->ack_work.data = w;
	int rc = uv_queue_work(w->loop, &w->ack_work, ack_work_cb, ack_after_cb);
	relay_assert(rc == 0);
}

/*---- prefetch: the next round, prepared while this one is in flight ----*/

/*
 * Runs on the pool beside the writes of cur. Touches only pf (which the
 * loop thread leaves alone while pf_busy) and fields that do not change
 * while it runs (pf_from, cfg, nlanes). No LMDB transaction outlives
 * wal_read: the batches are copies.
 */
static void pf_work_cb(uv_work_t *req)
{
	struct replay_worker *w = req->data;
	struct replay_round *r = w->pf;
	round_release(r);
	w->pf_rc =
	    wal_read(w->wal, w->id, w->pf_from, REPLAY_READ_MAX, w->cfg->batch_max_bytes, r->batches, &r->nbatches);
	if (w->pf_rc == 0)
		rescale_round(w, r);
	/* Never inside an isolation window: start_prefetch runs only for a
	 * round that is not being isolated, and reads past its end. */
	if (w->pf_rc == 0 && r->nbatches)
		round_prepare(w, r, 0, 1);
}

static void pf_after_cb(uv_work_t *req, int status)
{
	struct replay_worker *w = req->data;
	w->pf_busy = 0;
	if (w->stopping) {
		finish_stop(w);
		return;
	}
	/* A failed prefetch is only a missed chance: the round is read again
	 * the ordinary way, which reports and retries what fails. */
	/* A prefetch that ran while relayctl changed the queue may hold
	 * batches purged or dropped since: not trusted. */
	w->pf_ready = !status && !w->pf_rc && !w->pf_stale;
	w->pf_stale = 0;
	if (!w->pf_ready)
		round_release(w->pf);
	if (w->pf_wanted) {
		w->pf_wanted = 0;
		next_round(w);
	}
	check_awake(w);
}

/*
 * Read and prepare the round after cur while cur is in flight, so that
 * the next round can start the moment cur is delivered instead of after a
 * read, a split and maybe a gzip. Only for an ordinary round: while a bad
 * batch is isolated or a 413 is split, writes go one at a time anyway and
 * the next read depends on how they end.
 */
static void start_prefetch(struct replay_worker *w)
{
	const struct replay_round *c = w->cur;
	if (w->stopping || w->pf_busy || !c->nbatches || w->isolate_upto || w->nranges)
		return;
	uint64_t from = group_last_seq(c) + 1;
	if (w->pf_ready && w->pf_from == from && w->pf->nbatches)
		return; /* already there */
	w->pf_ready = 0;
	w->pf_from = from;
	w->pf_busy = 1;
	w->pf_work.data = w;
	int rc = uv_queue_work(w->loop, &w->pf_work, pf_work_cb, pf_after_cb);
	relay_assert(rc == 0);
}

/*
 * cur is finished (delivered or dead-lettered up to read_from - 1): start
 * the next round. The prefetched round is used only if it begins exactly
 * where cur ended (pf_from == read_from): everything before it is then
 * delivered (2xx) or dead-lettered, so sending it now keeps queue order,
 * and a live write still never overtakes the backlog. A prefetch from
 * before a retry, hold or dead-letter of cur is still right as long as it
 * starts there: a batch's content never changes while it is pending, and
 * only this worker moves the cursor. A prefetch that starts before
 * read_from (a coalesced group reached past it) is stale and dropped; one
 * that starts after it (cur was cut into single batches, or 413 pieces)
 * is kept for when read_from gets there. An empty prefetch is never
 * trusted: new batches may have been committed since it read. Nor is one
 * that begins inside an isolation window: it was coalesced, and the window
 * sends one batch at a time.
 */
static void next_round(struct replay_worker *w)
{
	if (w->stopping)
		return;
	/* Only between rounds: no write in flight, no queue update running
	 * on cur. */
	relay_assert(!w->work_busy && !w->lanes_waiting);
	if (w->paused) {
		/* Paused while the last write was out: it is answered and
		 * recorded; nothing more goes until relayctl resume. */
		go_idle(w);
		return;
	}
	if (w->ack_failing) {
		/* What was delivered cannot be recorded: sending more would
		 * only add to what a restart sends again. The ack's timer
		 * (or its commit in flight) goes on from here. */
		w->state = S_ACKWAIT;
		return;
	}
	if (w->pf_busy) {
		/* Wait for it rather than read the same batches twice. */
		w->pf_wanted = 1;
		w->state = S_READ;
		return;
	}
	if (w->pf_ready && (w->pf_from < w->read_from || !w->pf->nbatches || isolating(w, w->pf->batches[0].seq))) {
		w->pf_ready = 0;
		round_release(w->pf);
	}
	if (w->pf_ready && w->pf_from == w->read_from) {
		struct replay_round *t = w->cur;
		w->cur = w->pf;
		w->pf = t;
		w->pf_ready = 0;
		work_ok(w); /* the next round is read: a failed read is over */
		begin_round(w);
		send_current(w);
		/* The old round's batches are freed on the pool by the next
		 * prefetch; free them here if there is none. */
		start_prefetch(w);
		if (!w->pf_busy)
			round_release(w->pf);
		return;
	}
	start_read(w, WK_READ);
}

/* Batches up to seq are delivered: record it, and go on with the next. */
static void delivered_upto(struct replay_worker *w, uint64_t seq)
{
	if (seq > w->ack_want)
		w->ack_want = seq;
	w->read_from = seq + 1;
	start_ack(w);
	next_round(w);
}

/* Read the queue on from read_from, unless no delivery can be recorded
 * (then the ack, once it commits, goes on: ACKWAIT). */
static void read_again(struct replay_worker *w)
{
	if (w->ack_failing)
		w->state = S_ACKWAIT;
	else
		start_read(w, WK_READ);
}

/* A queue operation of the worker succeeded: one that failed is over. */
static void work_ok(struct replay_worker *w)
{
	if (!w->redo)
		return;
	w->redo = 0;
	w->redo_attempts = 0;
	publish(w);
}

/*
 * A queue read or dead-letter failed (disk full, I/O error, a record that
 * cannot be decoded): nothing was lost, the batches are still pending.
 * Show it and do it again after a backoff (timer_fired: redo_work), with
 * everything it needs kept: a dead-letter keeps cur (and the 413 pieces);
 * read_from stays where a read from scratch (a pause, a refresh) must
 * start, so that a batch whose dead-letter did not commit is never
 * skipped.
 */
static void work_failed(struct replay_worker *w, int kind, int rc)
{
	struct replay_round *r = w->cur;
	const char *err = wal_strerror(rc);
	switch (kind) {
	case WK_READ:
		round_release(r);
		w->cur_stale = 0; /* it is read again anyway */
		if (w->read_from)
			snprintf(w->redo_error, sizeof(w->redo_error), "cannot read the queue from batch %" PRIu64 ": %s",
				 w->read_from, err);
		else
			snprintf(w->redo_error, sizeof(w->redo_error), "cannot read the queue: %s", err);
		break;
	case WK_DEAD:
		w->read_from = w->wk_seq;
		snprintf(w->redo_error, sizeof(w->redo_error), "cannot dead-letter batch %" PRIu64 ": %s", w->wk_seq,
			 err);
		break;
	case WK_DEAD_PART:
		snprintf(w->redo_error, sizeof(w->redo_error), "cannot dead-letter %u line(s) of batch %" PRIu64 ": %s",
			 w->wk_lines, r->batches[0].seq, err);
		break;
	}
	if (!w->redo)
		w->redo_attempts = 0;
	w->redo = kind + 1;
	w->redo_attempts++;
	publish(w);
	remind(w, w->redo_attempts);
	uint64_t d = delay_after(w, w->redo_attempts, HOLD_MIN_MS, 0);
	relay_log(RELAY_LOG_DEBUG, "backend '%s': %s (attempt %u), next in %" PRIu64 " ms", w->cfg->name,
		  w->redo_error, w->redo_attempts, d);
	schedule(w, d);
}

/* The backoff after work_failed is over: do that operation again. */
static void redo_work(struct replay_worker *w)
{
	switch (w->redo - 1) {
	case WK_READ:
		next_round(w); /* the prefetch, if it starts there, or a read */
		return;
	case WK_DEAD:
		w->read_from = w->wk_seq + 1;
		start_read(w, WK_DEAD);
		return;
	case WK_DEAD_PART:
		start_read(w, WK_DEAD_PART);
		return;
	}
	relay_assert(!"unknown queue operation to redo");
}

static void after_work(struct replay_worker *w, int status)
{
	struct replay_round *r = w->cur;
	int kind = w->wk_kind;
	w->work_busy = 0;
	if (w->stopping) {
		finish_stop(w);
		return;
	}
	int rc = status ? status : w->wk_rc;
	if (kind == WK_READ && w->wk_quarantined) {
		/* Loud: a batch that was accepted will never be delivered as
		 * it was; relayctl dlq shows its raw bytes. */
		w->stats.dead_batches += w->wk_quarantined;
		relay_log(RELAY_LOG_ERROR,
		          "backend '%s': %u corrupt queue record(s) moved to the dead-letter queue, the last batch %" PRIu64
		          " (%s); the queue goes on (relayctl verify, relayctl dlq list %s)",
		          w->cfg->name, w->wk_quarantined, w->wk_qseq, w->wk_qwhy, w->cfg->name);
		w->wk_quarantined = 0;
	}
	if (rc) {
		work_failed(w, kind, rc);
		return;
	}
	work_ok(w);
	if (kind == WK_DEAD_PART) {
		/* The rest of the split batch goes on. */
		w->nranges--;
		memmove(&w->ranges[0], &w->ranges[1], sizeof(w->ranges[0]) * (size_t)w->nranges);
		if (w->nranges && w->paused)
			w->state = S_BACKOFF; /* held until relayctl resume */
		else if (w->nranges)
			send_current(w);
		else
			delivered_upto(w, r->batches[0].seq);
		return;
	}
	if (kind == WK_DEAD) {
		if (w->wk_seq > w->ack_done)
			w->ack_done = w->wk_seq; /* the dead-letter moved the cursor past it */
		if (ack_settled(w) && !w->ack_busy)
			ack_recovered(w); /* ... and past every delivered batch */
		/* read_from is past the dead batch: go on from there, with the
		 * prefetched round if it starts just there. */
		next_round(w);
		return;
	}
	if (w->paused) {
		go_idle(w);
		return;
	}
	if (w->cur_stale) {
		/* relayctl changed the queue while this read ran: what it
		 * copied out may be purged or dropped since. Read again. */
		w->cur_stale = 0;
		round_release(r);
		start_read(w, WK_READ);
		return;
	}
	if (r->nbatches == 0) {
		w->state = S_IDLE;
		if (w->wake) {
			w->wake = 0;
			read_again(w);
		}
		return;
	}
	w->wake = 0;
	begin_round(w);
	send_current(w);
	start_prefetch(w);
}

static void after_work_cb(uv_work_t *req, int status)
{
	struct replay_worker *w = req->data;
	after_work(w, status);
	check_awake(w);
}

static void start_read(struct replay_worker *w, int kind)
{
	if (w->stopping)
		return;
	w->wk_kind = kind;
	w->state = kind == WK_READ ? S_READ : S_COMMIT;
	w->work_busy = 1;
	w->work.data = w;
	int rc = uv_queue_work(w->loop, &w->work, work_cb, after_work_cb);
	relay_assert(rc == 0);
}

/*---- outcomes ----*/

static void dead_letter(struct replay_worker *w, const struct http_response *r)
{
	char reason[300];
	if (r->status < 0)
		snprintf(reason, sizeof(reason), "%s", r->err ? r->err : "transport error");
	else
		snprintf(reason, sizeof(reason), "HTTP %d: %.*s", r->status,
			 (int)(r->body_len > 250 ? 250 : r->body_len), r->body);
	reason[strcspn(reason, "\n")] = '\0';
	/* Shown as the last error (the state stays what it was), and stored
	 * with the dead letter: a copy of its own, read on the pool. */
	snprintf(w->link_error, sizeof(w->link_error), "%s", reason);
	snprintf(w->dead_msg, sizeof(w->dead_msg), "%s", reason);
	publish(w);
	if (w->cur->group_n > 1 && !w->nranges) {
		/* Which batch of the coalesced write is bad? Send them one by
		 * one up to the end of this group; the good ones are delivered
		 * (a partial write stored them already: resending overwrites
		 * the same points), the bad one is dead-lettered alone. */
		w->isolate_upto = group_last_seq(w->cur);
		regroup_isolated(w);
		send_current(w);
		return;
	}
	w->wk_status = r->status < 0 ? 0 : r->status; /* 0: no answer, never sent */
	w->stats.dead_batches++;
	if (w->nranges) {
		w->wk_off = w->ranges[0].off;
		w->wk_len = w->ranges[0].len;
		w->wk_lines = count_lines(w->cur->batches[0].body + w->wk_off, w->wk_len);
		relay_log(RELAY_LOG_WARN,
			  "backend '%s': %u line(s) of batch %" PRIu64 " dead-lettered after %u attempt(s): %s",
			  w->cfg->name, w->wk_lines, w->cur->batches[0].seq, w->attempts + 1, reason);
		start_read(w, WK_DEAD_PART);
		return;
	}
	relay_log(RELAY_LOG_WARN,
		  "backend '%s': batch %" PRIu64 " (%u points, db '%s') dead-lettered after %u attempt(s): %s",
		  w->cfg->name, w->cur->batches[0].seq, w->cur->batches[0].lines, w->cur->batches[0].db,
		  w->attempts + 1, reason);
	w->wk_seq = w->cur->batches[0].seq;
	w->read_from = w->wk_seq + 1;
	start_read(w, WK_DEAD);
}

/* If the front range is longer than max, cut off its first max bytes or
 * less, at a line boundary, as a range of its own. */
static void cut_front(struct replay_worker *w, size_t max)
{
	size_t off = w->ranges[0].off, len = w->ranges[0].len;
	if (!max || len <= max || w->nranges >= (int)RELAY_ARRAY_SIZE(w->ranges))
		return;
	const char *p = w->cur->batches[0].body + off;
	const char *nl = memrchr(p, '\n', max);
	if (!nl)
		return; /* a single line longer than max: send it as it is */
	size_t first = (size_t)(nl - p) + 1;
	memmove(&w->ranges[1], &w->ranges[0], sizeof(w->ranges[0]) * (size_t)w->nranges);
	w->ranges[0].len = first;
	w->ranges[1].off = off + first;
	w->ranges[1].len = len - first;
	w->nranges++;
}

/* 413: split the current payload in two at a line boundary. */
static void split(struct replay_worker *w, const struct http_response *r)
{
	if (w->cur->group_n > 1 && !w->nranges) {
		w->isolate_upto = group_last_seq(w->cur);
		regroup_isolated(w);
		send_current(w);
		return;
	}
	const struct wal_batch *b = &w->cur->batches[0];
	w->cur->lane_mode = 0; /* pieces go one at a time, in order */
	if (!w->nranges) {
		w->ranges[0].off = 0;
		w->ranges[0].len = b->body_len;
		w->nranges = 1;
	}
	size_t off = w->ranges[0].off, len = w->ranges[0].len;
	const char *p = b->body + off;
	/* The newline nearest the middle (not the last one) ends the first
	 * half. */
	const char *mid = memchr(p + len / 2, '\n', len - len / 2 - 1);
	if (!mid)
		mid = memrchr(p, '\n', len / 2);
	if (!mid || (size_t)(mid - p) + 1 >= len || w->nranges >= (int)RELAY_ARRAY_SIZE(w->ranges)) {
		/* One line that the backend still finds too large. */
		dead_letter(w, r);
		return;
	}
	size_t first = (size_t)(mid - p) + 1;
	memmove(&w->ranges[2], &w->ranges[1], sizeof(w->ranges[0]) * (size_t)(w->nranges - 1));
	w->ranges[0].len = first;
	w->ranges[1].off = off + first;
	w->ranges[1].len = len - first;
	w->nranges++;
	w->stats.splits++;
	relay_log(RELAY_LOG_INFO, "backend '%s': batch %" PRIu64 " too large for the backend (413), splitting",
		  w->cfg->name, b->seq);
	send_current(w);
}

static void create_db_response(struct http_client *c, const struct http_response *r, void *arg)
{
	struct replay_worker *w = arg;
	(void)c;
	/* /query answers 200 even when the statement failed; the error is in
	 * the JSON. */
	if (r->status >= 200 && r->status < 300 && !memmem(r->body, r->body_len, "\"error\"", 7)) {
		/* Rate-limited: with a backend that keeps answering "not found"
		 * after a CREATE, this comes once per hold backoff. */
		relay_log_limited(&w->create_log, RELAY_LOG_NOTICE, "backend '%s': created database '%s'", w->cfg->name,
				  w->cur->batches[0].db);
		w->db_created = 1;
		send_current(w);
	} else {
		retry_later(w, r, REPLAY_HOLDING, HOLD_MIN_MS);
	}
	check_awake(w);
}

static void create_database(struct replay_worker *w)
{
	char why[160];
	rbuf_reset(&w->target);
	rbuf_reset(&w->headers);
	int brc = backend_api_create_database(w->cfg, &w->cur->batches[0], &w->target, &w->headers, why, sizeof(why));
	if (brc) {
		unsendable(w, brc, why);
		return;
	}
	w->state = S_CREATE;
	int rc = http_client_request(&w->http, "POST", rbuf_cstr(&w->target), rbuf_cstr(&w->headers), NULL, 0,
				     create_db_response, w);
	relay_assert(rc == 0);
}

static void on_response(struct http_client *c, const struct http_response *r, void *arg)
{
	struct replay_worker *w = arg;
	(void)c;
	enum outcome o = outcome_classify(r->status, r->body, r->body_len);
	switch (o) {
	case OUTCOME_DELIVERED:
		set_health(w, REPLAY_UP, NULL);
		w->attempts = 0;
		w->db_created = 0;
		if (w->nranges) {
			size_t sent = w->ranges[0].len;
			if (sent > w->split_fit)
				w->split_fit = sent;
			w->nranges--;
			memmove(&w->ranges[0], &w->ranges[1], sizeof(w->ranges[0]) * (size_t)w->nranges);
			if (w->nranges) {
				/* Cut the next piece to what the backend accepted, rather
				 * than offer it a size it already refused. */
				cut_front(w, w->split_fit);
				if (w->paused)
					w->state = S_BACKOFF; /* held until relayctl resume */
				else
					send_current(w);
				return;
			}
			w->cur->group_n = 1;
		}
		for (size_t i = 0; i < w->cur->group_n; i++) {
			w->stats.delivered_batches++;
			w->stats.delivered_points += w->cur->batches[i].lines;
		}
		w->last_delivery_ns = now_realtime_ns();
		delivered_upto(w, group_last_seq(w->cur));
		return;
	case OUTCOME_RETRY:
		retry_later(w, r, r->status < 0 ? REPLAY_DOWN : REPLAY_RETRYING, 0);
		return;
	case OUTCOME_HOLD:
		retry_later(w, r, REPLAY_HOLDING, HOLD_MIN_MS);
		return;
	case OUTCOME_NO_DATABASE:
		if (w->cfg->on_database_not_found == RELAY_DB_CREATE && !w->db_created) {
			create_database(w);
			return;
		}
		if (w->db_created) {
			/* The CREATE answered 200 yet the write still finds no
			 * database (a proxy that sends /query elsewhere, a
			 * database dropped at once, a name the server reads
			 * otherwise): a hold with its backoff, not a loop of
			 * writes and CREATEs. The next attempt may create again. */
			w->db_created = 0;
			retry_later_why(w, r, REPLAY_HOLDING, HOLD_MIN_MS, "still not found after CREATE DATABASE");
			return;
		}
		if (w->cfg->on_database_not_found == RELAY_DB_DEAD_LETTER) {
			dead_letter(w, r);
			return;
		}
		retry_later(w, r, REPLAY_HOLDING, HOLD_MIN_MS);
		return;
	case OUTCOME_SPLIT:
		split(w, r);
		return;
	case OUTCOME_DEAD:
		dead_letter(w, r);
		return;
	}
}

/* The answer to a single write (not shared among lanes). */
static void write_answered(struct http_client *c, const struct http_response *r, void *arg)
{
	struct replay_worker *w = arg;
	on_response(c, r, w);
	check_awake(w);
}

/*---- lifecycle ----*/

void replay_start(struct replay_worker *w, uv_loop_t *loop, struct wal *wal, const struct relay_backend_config *cfg,
                  int id)
{
	memset(w, 0, sizeof(*w));
	w->loop = loop;
	w->wal = wal;
	w->cfg = cfg;
	w->id = id;
	w->cur = &w->rounds[0];
	w->pf = &w->rounds[1];
	http_client_init(&w->http, loop, cfg->host, cfg->port, cfg->connect_timeout_ms, cfg->timeout_ms);
	uv_timer_init(loop, &w->timer);
	w->timer.data = w;
	uv_timer_init(loop, &w->ack_timer);
	w->ack_timer.data = w;
	w->handles = 3;
	w->nlanes = cfg->parallel > 1 ? (int)(cfg->parallel > REPLAY_MAX_LANES ? REPLAY_MAX_LANES : cfg->parallel) : 0;
	if (w->nlanes) {
		w->lanes = xcalloc((size_t)w->nlanes, sizeof(*w->lanes));
		for (int i = 0; i < w->nlanes; i++) {
			w->lanes[i].w = w;
			http_client_init(&w->lanes[i].http, loop, cfg->host, cfg->port, cfg->connect_timeout_ms,
					 cfg->timeout_ms);
		}
		w->handles += w->nlanes;
	}
	w->state = S_IDLE;
	struct wal_backend_stat st;
	if (wal_backend_stat(wal, cfg->name, &st) == 0 && st.paused) {
		/* relayctl pause survives restarts: the flag is in the queue. */
		w->paused = 1;
		relay_log(RELAY_LOG_NOTICE, "backend '%s' is paused: %" PRIu64 " batches wait (relayctl resume %s)",
			  cfg->name, st.pending_batches, cfg->name);
	} else {
		/* (A stat that fails, on a record it cannot decode say, leaves
		 * the read to fail the same way: shown and retried.) */
		start_read(w, WK_READ);
	}
	check_awake(w);
}

void replay_notify(struct replay_worker *w)
{
	if (w->stopping || w->paused)
		return;
	if (w->state == S_IDLE) {
		read_again(w);
	} else {
		w->wake = 1;
		/* A prefetch that found nothing while a round is in flight
		 * looks again, now that there is something to find. */
		if (w->state == S_SEND && w->pf_ready && !w->pf->nbatches)
			start_prefetch(w);
	}
	check_awake(w);
}

/*
 * Nothing in flight any more (or only a prefetch, marked stale): drop
 * what the worker holds and wait. Used for a pause, and before a
 * refresh reads the queue again.
 */
static void go_idle(struct replay_worker *w)
{
	uv_timer_stop(&w->timer);
	round_release(w->cur);
	if (w->pf_busy)
		w->pf_stale = 1;
	else
		round_release(w->pf);
	w->pf_ready = 0;
	w->pf_wanted = 0;
	w->cur_stale = 0;
	w->isolate_upto = 0;
	w->nranges = 0;
	w->attempts = 0;
	/* A failed read or dead-letter is dropped with the rest: read_from
	 * is where the read from scratch starts, the batch of a dead-letter
	 * that did not commit included. */
	w->redo = 0;
	w->redo_attempts = 0;
	w->state = S_IDLE;
	publish(w);
}

static const char *state_name(int state)
{
	static const char *const names[] = { "idle", "read", "send", "backoff", "probe", "create", "commit",
		                             "ackwait", "stopped" };
	return state >= 0 && state < (int)RELAY_ARRAY_SIZE(names) ? names[state] : "?";
}

/*
 * Whether something is bound to wake the worker: a job on the thread
 * pool, a request in flight (each has its timeout), a timer, the next
 * commit (idle: what was pending is read, every delivery is recorded or
 * being recorded), or relayctl resume (paused). A worker for which none
 * of these holds waits for ever, showing whatever it showed last.
 */
static int will_wake(const struct replay_worker *w)
{
	if (w->stopping || w->state == S_STOPPED)
		return 1;
	/* A delivery not recorded: its commit runs, or its timer does. */
	if (!ack_settled(w) && !w->ack_busy && !uv_is_active((const uv_handle_t *)&w->ack_timer))
		return 0;
	switch (w->state) {
	case S_IDLE:
		return !w->redo;
	case S_READ:
		return w->work_busy || (w->pf_busy && w->pf_wanted);
	case S_COMMIT:
		return w->work_busy;
	case S_SEND:
		return w->lanes_waiting > 0 || w->http.in_request;
	case S_PROBE:
	case S_CREATE:
		return w->http.in_request;
	case S_BACKOFF:
		/* paused: a 413 split held until relayctl resume */
		return uv_is_active((const uv_handle_t *)&w->timer) || w->paused;
	case S_ACKWAIT:
		return w->ack_failing && (w->ack_busy || uv_is_active((const uv_handle_t *)&w->ack_timer));
	}
	return 0;
}

/*
 * Called where the worker returns to the loop (every callback and entry
 * point). Developer builds stop on a worker nothing will wake; a release
 * build says so and reads the queue again after a while instead of
 * leaving delivery silently stopped.
 */
static void check_awake(struct replay_worker *w)
{
	if (will_wake(w))
		return;
	relay_log(RELAY_LOG_ERROR,
		  "backend '%s': BUG: delivery has nothing to wake it (state %s, %" PRIu64 " delivered, %" PRIu64
		  " recorded): starting again in 1 s", w->cfg->name, state_name(w->state), w->ack_want, w->ack_done);
#ifndef NDEBUG
	relay_fatal("backend '%s': replay worker in state %s with nothing to wake it", w->cfg->name,
		    state_name(w->state));
#endif
	if (!ack_settled(w) && !w->ack_busy && !uv_is_active((uv_handle_t *)&w->ack_timer))
		uv_timer_start(&w->ack_timer, ack_timer_cb, HOLD_MIN_MS, 0);
	if (!will_wake(w)) {
		go_idle(w);
		if (!w->paused)
			schedule(w, HOLD_MIN_MS);
	}
}

int replay_paused(const struct replay_worker *w)
{
	return w->paused;
}

void replay_refresh(struct replay_worker *w)
{
	struct wal_backend_stat st;
	if (w->stopping)
		return;
	int rc = wal_backend_stat(w->wal, w->cfg->name, &st);
	if (rc) {
		/* The queue changed all the same: read it again below, with
		 * the pause flag as it was. */
		relay_log(RELAY_LOG_WARN, "backend '%s': cannot read its queue's figures (%s): pause flag unchanged",
			  w->cfg->name, wal_strerror(rc));
	} else {
		if (st.paused != w->paused)
			relay_log(RELAY_LOG_NOTICE, "backend '%s' %s by relayctl (%" PRIu64 " batches pending)",
				  w->cfg->name, st.paused ? "paused" : "resumed", st.pending_batches);
		w->paused = st.paused;
	}
	switch (w->state) {
	case S_BACKOFF:
		if (w->nranges) {
			/* A 413 split is under way: keep the batch and its
			 * remaining pieces (a piece already dead-lettered must not
			 * be again). Paused: held, no timer; resumed from held: the
			 * next piece goes now (or its dead-letter, when that is
			 * what failed). */
			if (w->paused)
				uv_timer_stop(&w->timer);
			else if (!uv_is_active((uv_handle_t *)&w->timer))
				timer_fired(w);
			else
				w->wake = 1;
			break;
		}
		/* fall through */
	case S_IDLE:
	case S_ACKWAIT:
		/* Nothing in flight: what the worker holds may have been purged
		 * or dropped; read the queue again from its cursor (wal_read
		 * never returns a batch below it). */
		go_idle(w);
		if (!w->paused)
			read_again(w);
		break;
	default:
		/* A write, a probe or a queue update is in flight: it ends the
		 * ordinary way, and the round after it is read afresh (or, when
		 * paused, not at all); a queue read in flight is read again. A
		 * late ack or dead-letter of a batch purged meanwhile is a no-op
		 * in wal. */
		w->wake = 1;
		if (w->work_busy && w->wk_kind == WK_READ)
			w->cur_stale = 1;
		if (w->pf_busy)
			w->pf_stale = 1;
		else if (w->pf_ready) {
			w->pf_ready = 0;
			round_release(w->pf);
		}
		break;
	}
	check_awake(w);
}

int replay_retry_now(struct replay_worker *w)
{
	int done = -1;
	if (w->stopping)
		return -1;
	if (uv_is_active((uv_handle_t *)&w->ack_timer)) {
		/* Recording a delivery sends nothing: paused or not. */
		relay_log(RELAY_LOG_NOTICE, "backend '%s': recording its deliveries again now (relayctl retry)",
			  w->cfg->name);
		start_ack(w);
		done = 0;
	}
	if (!w->paused && w->state == S_BACKOFF && uv_is_active((uv_handle_t *)&w->timer)) {
		uv_timer_stop(&w->timer);
		relay_log(RELAY_LOG_NOTICE, "backend '%s': retrying now (relayctl retry)", w->cfg->name);
		timer_fired(w);
		done = 0;
	}
	check_awake(w);
	return done;
}

void replay_status(const struct replay_worker *w, uint64_t *head_seq, uint32_t *attempts, int64_t *next_ms)
{
	const uv_timer_t *t = &w->timer;
	/* While a queue read or update runs on the pool, cur is the pool's:
	 * no batch to name then. */
	*head_seq = !w->work_busy && w->cur->nbatches ? w->cur->batches[0].seq : 0;
	*attempts = w->attempts;
	if (w->redo) {
		/* A failed read has no batch but where it reads from. */
		if (!*head_seq && w->redo - 1 == WK_READ)
			*head_seq = w->read_from;
		*attempts = w->redo_attempts;
	} else if (w->ack_failing) {
		*head_seq = w->ack_inflight;
		*attempts = w->ack_attempts;
		t = &w->ack_timer;
	}
	*next_ms = -1;
	if (uv_is_active((const uv_handle_t *)t) && (t == &w->ack_timer || w->state == S_BACKOFF))
		*next_ms = (int64_t)uv_timer_get_due_in(t);
	else if ((w->ack_failing && w->ack_busy) || (w->redo && w->work_busy))
		*next_ms = 0; /* the failed operation is being tried again right now */
}

static void finish_stop(struct replay_worker *w)
{
	if (w->handles || w->work_busy || w->ack_busy || w->pf_busy)
		return;
	for (size_t k = 0; k < RELAY_ARRAY_SIZE(w->rounds); k++) {
		struct replay_round *r = &w->rounds[k];
		round_release(r);
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
	}
	rbuf_release(&w->fail_body);
	free(w->lanes);
	w->lanes = NULL;
	rbuf_release(&w->target);
	rbuf_release(&w->headers);
	w->state = S_STOPPED;
	if (w->stopped_cb)
		w->stopped_cb(w);
}

static void http_closed(struct http_client *c)
{
	struct replay_worker *w = relay_container_of(c, struct replay_worker, http);
	w->handles--;
	finish_stop(w);
}

static void lane_closed(struct http_client *c)
{
	struct replay_lane *l = relay_container_of(c, struct replay_lane, http);
	l->w->handles--;
	finish_stop(l->w);
}

static void timer_closed(uv_handle_t *h)
{
	struct replay_worker *w = h->data;
	w->handles--;
	finish_stop(w);
}

void replay_stop(struct replay_worker *w, void (*cb)(struct replay_worker *w))
{
	w->stopping = 1;
	w->stopped_cb = cb;
	uv_timer_stop(&w->timer);
	uv_close((uv_handle_t *)&w->timer, timer_closed);
	uv_timer_stop(&w->ack_timer);
	uv_close((uv_handle_t *)&w->ack_timer, timer_closed);
	http_client_close(&w->http, http_closed);
	for (int i = 0; i < w->nlanes; i++)
		http_client_close(&w->lanes[i].http, lane_closed);
}
