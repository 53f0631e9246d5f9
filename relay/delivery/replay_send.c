/*
 * replay_send: the worker's requests to its backend, and what their
 * answers mean. A write (single, or one share per lane), a queued
 * statement (POST /query, alone in its round), the /ping probe of a
 * backend that was down, CREATE DATABASE; then, by outcome_classify()
 * (a statement's answer by backend_api_statement_outcome()):
 * delivered (the cursor moves), retry or hold (backoff), dead (dead-letter,
 * after isolating the bad batch of a coalesced write), too large (413
 * pieces). State in replay_internal.h; the diagram in replay.c.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "relay/base/log.h"
#include "relay/base/outcome.h"
#include "relay/delivery/backend_api.h"
#include "relay/delivery/replay_internal.h"

static void on_response(struct http_client *c, const struct http_response *r, void *arg);
static void write_answered(struct http_client *c, const struct http_response *r, void *arg);

/*---- counters (replay.h: the loop thread's) ----*/

/* A batch's delivery: its count and its latency (its points and bytes
 * are counted apart, since a split batch's go piece by piece). */
static void count_batch(struct replay_worker *w, const struct wal_batch *b, int64_t now_ns)
{
	w->stats.delivered_batches++;
	/* A clock set back must not make a negative latency. */
	int64_t ns = now_ns > b->accept_ns ? now_ns - b->accept_ns : 0;
	relay_histogram_observe(&w->stats.delivery_latency, (double)ns / 1e9);
}

void replay_count_delivered(struct replay_worker *w, const struct wal_batch *b, int64_t now_ns)
{
	count_batch(w, b, now_ns);
	w->stats.delivered_points += b->lines;
	w->stats.delivered_bytes += b->body_len;
}

/* Piece [off, off+len) of a split batch b was delivered: its lines and
 * bytes (the dead-lettered pieces' are not delivered ones). */
static void count_piece(struct replay_worker *w, const struct wal_batch *b, size_t off, size_t len)
{
	uint64_t lines = 0;
	for (const char *p = b->body + off, *end = b->body + off + len; (p = memchr(p, '\n', (size_t)(end - p))); p++)
		lines++;
	w->stats.delivered_points += lines;
	w->stats.delivered_bytes += len;
	w->pieces.delivered_any = 1;
}

void replay_count_split_done(struct replay_worker *w, const struct wal_batch *b)
{
	/* Delivered if any piece was: what was not is in the dead-letter
	 * queue, counted there. */
	if (w->pieces.delivered_any) {
		int64_t now = now_realtime_ns();
		count_batch(w, b, now);
		w->health.last_delivery_ns = now;
	}
	w->pieces.delivered_any = 0;
}

void replay_count_answer(struct replay_worker *w, enum outcome o, uint64_t sent_ns)
{
	if ((unsigned)o < REPLAY_NOUTCOMES)
		w->stats.writes[o]++;
	uint64_t now = now_mono_ns();
	relay_histogram_observe(&w->stats.request_duration, now > sent_ns ? (double)(now - sent_ns) / 1e9 : 0.0);
}

void replay_count_retry(struct replay_worker *w, int status, const char *body, size_t len)
{
	w->stats.retries++;
	w->stats.retry_reasons[replay_retry_reason(status, body, len)]++;
}

/* The body of the current single write: the front 413 piece, the
 * coalesced group, or the one batch. */
static void payload(const struct replay_worker *w, const char **p, size_t *len)
{
	const struct replay_round *r = w->cur;
	const struct wal_batch *b0 = &r->batches[0];
	if (replay_splitting(w)) {
		*p = b0->body + w->pieces.range[0].off;
		*len = w->pieces.range[0].len;
	} else if (r->group_n > 1) {
		*p = r->payload.data;
		*len = r->payload.len;
	} else {
		*p = b0->body;
		*len = b0->body_len;
	}
}

/* Regroup cur on the loop thread, one batch at a time from batches[0], up
 * to the end of the refused group: which batch of the coalesced write is
 * bad? The good ones are delivered (a partial write stored them already:
 * resending overwrites the same points), the bad one is dead-lettered
 * alone. */
static void isolate_group(struct replay_worker *w)
{
	w->isolate.upto = replay_round_last_seq(w->cur);
	replay_round_prepare(w->cur, w->cfg, w->nlanes, 1, 0);
	w->pieces.n = 0;
	w->pieces.fit = 0;
	w->send.attempts = 0;
	replay_send_current(w);
}

/*---- lanes ----*/

/*
 * Every lane of this round has answered: the round is judged as one
 * write, delivered if every share is, otherwise by the first failure; a
 * retry resends only the shares not yet delivered.
 */
static void lanes_answered(struct replay_worker *w)
{
	struct http_response all;
	memset(&all, 0, sizeof(all));
	if (w->send.fail_status) {
		all.status = w->send.fail_status;
		all.body = rbuf_cstr(&w->send.fail_body);
		all.body_len = w->send.fail_body.len;
		all.retry_after_s = w->send.fail_retry_after;
		all.err = w->send.fail_err;
	} else {
		all.status = 204;
		all.body = "";
	}
	w->send.fail_status = 0;
	on_response(NULL, &all, w);
}

/* A lane's answer. */
static void lane_response(struct http_client *c, const struct http_response *r, void *arg)
{
	struct replay_lane *l = arg;
	struct replay_worker *w = l->w;
	(void)c;
	l->inflight = 0;
	/* Each lane's request is a write answered: counted as such (lanes
	 * carry line protocol only, never a statement). */
	replay_count_answer(w, outcome_classify(r->status, r->body, r->body_len), l->sent_ns);
	if (r->status >= 200 && r->status < 300) {
		w->cur->shares[l - w->lanes].done = 1;
	} else if (!w->send.fail_status) {
		w->send.fail_status = r->status;
		w->send.fail_retry_after = r->retry_after_s;
		rbuf_reset(&w->send.fail_body);
		rbuf_append(&w->send.fail_body, r->body, r->body_len);
		snprintf(w->send.fail_err, sizeof(w->send.fail_err), "%s", r->err ? r->err : "");
	}
	if (--w->send.lanes_waiting)
		return;
	lanes_answered(w);
	replay_check_awake(w);
}

static void send_lanes(struct replay_worker *w)
{
	size_t plain = w->send.headers.len;
	w->send.fail_status = 0;
	/* One count for this loop itself: a lane whose connection fails at
	 * once answers inside http_client_request, and the round must not be
	 * judged (and maybe retried on lanes still busy) before every lane
	 * was sent. */
	w->send.lanes_waiting = 1;
	for (int i = 0; i < w->nlanes; i++) {
		struct replay_lane *l = &w->lanes[i];
		const struct replay_share *sh = &w->cur->shares[i];
		if (sh->done)
			continue;
		w->send.headers.len = plain;
		if (sh->gzipped)
			rbuf_append(&w->send.headers, "Content-Encoding: gzip\r\n", 24);
		l->inflight = 1;
		w->send.lanes_waiting++;
		w->stats.posts++;
		l->sent_ns = now_mono_ns();
		/* The share's buffers belong to this request until
		 * lane_response: cur is not refilled before every lane has
		 * answered. */
		int rc = http_client_request(&l->http, "POST", rbuf_cstr(&w->send.target), rbuf_cstr(&w->send.headers),
					     sh->gzipped ? sh->gz.data : sh->body.data,
					     sh->gzipped ? sh->gz.len : sh->body.len, lane_response, l);
		relay_assert(rc == 0);
	}
	w->send.headers.len = plain;
	if (--w->send.lanes_waiting == 0)
		lanes_answered(w);
}

/*---- backoff ----*/

/* Back off after answer r (what) and try again; floor_ms is the least
 * wait (the hold floor, or 0 for retry_min). why, when not NULL, leads
 * the reason shown in the log and in relayctl status. */
static void retry_later_why(struct replay_worker *w, const struct http_response *r, enum replay_health h,
                            uint64_t floor_ms, const char *why)
{
	char reason[1024];
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
	if (h != w->health.link)
		w->send.attempts = 0;
	w->send.attempts++;
	replay_count_retry(w, r->status, r->body, r->body_len);
	replay_set_link(w, h, reason);
	uint64_t d = replay_delay_after(w, w->send.attempts, floor_ms, r->retry_after_s);
	relay_log(RELAY_LOG_DEBUG, "backend '%s': attempt %u failed (%s), next in %" PRIu64 " ms", w->cfg->name,
		  w->send.attempts, reason, d);
	replay_schedule(w, d);
}

static void retry_later(struct replay_worker *w, const struct http_response *r, enum replay_health h,
                        uint64_t floor_ms)
{
	retry_later_why(w, r, h, floor_ms, NULL);
}

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
		retry_later(w, &r, REPLAY_HOLDING, REPLAY_HOLD_MIN_MS);
	else
		on_response(NULL, &r, w);
}

/* Move cur's write to the held store (its database does not exist on
 * the backend), then the next round. */
static void hold_round(struct replay_worker *w)
{
	w->job.hold_new = replay_held_add(w, w->cur->batches[0].db);
	w->send.attempts = 0;
	w->send.db_created = 0;
	w->read.from = replay_round_last_seq(w->cur) + 1;
	replay_start_job(w, WK_HOLD);
}

/*---- pacing (max_rate) ----*/

/* The points and bytes (line protocol, before gzip) the write about to
 * go carries: the front 413 piece, the lanes' shares not yet delivered,
 * the coalesced group, or the one batch. */
static void write_cost(const struct replay_worker *w, uint64_t *points, uint64_t *bytes)
{
	const struct replay_round *r = w->cur;
	const struct wal_batch *b0 = &r->batches[0];
	*points = *bytes = 0;
	if (replay_splitting(w)) {
		*points = replay_count_lines(b0->body + w->pieces.range[0].off, w->pieces.range[0].len);
		*bytes = w->pieces.range[0].len;
	} else if (r->lane_mode) {
		for (int i = 0; i < w->nlanes; i++)
			if (!r->shares[i].done) {
				*points += replay_count_lines(r->shares[i].body.data, r->shares[i].body.len);
				*bytes += r->shares[i].body.len;
			}
	} else {
		for (size_t i = 0; i < r->group_n && i < r->nbatches; i++) {
			*points += r->batches[i].lines;
			*bytes += r->batches[i].body_len;
		}
	}
}

/*
 * Before cur's write goes: take its points and bytes from the buckets,
 * or, short of them, wait for them (THROTTLE: this function again when
 * the timer fires). Returns 1 when the write waits. A write larger than
 * the burst goes once the buckets are full, into debt (tokenbucket.h):
 * pacing slows delivery, never stops it.
 */
static int paced(struct replay_worker *w)
{
	uint64_t points, bytes;
	if (!replay_rate_limited(w))
		return 0;
	uint64_t now = uv_now(w->loop);
	write_cost(w, &points, &bytes);
	uint64_t wp = token_bucket_wait_ms(&w->rate.points, points, now);
	uint64_t wb = token_bucket_wait_ms(&w->rate.bytes, bytes, now);
	uint64_t wait = wp > wb ? wp : wb;
	if (wait) {
		relay_log(RELAY_LOG_DEBUG, "backend '%s': %" PRIu64 " %s, %" PRIu64 " %s wait %" PRIu64
			  " ms for the rate limit", w->cfg->name, points, relay_plural(points, "point", "points"), bytes,
			  relay_plural(bytes, "byte", "bytes"), wait);
		replay_throttle(w, wait);
		return 1;
	}
	token_bucket_take(&w->rate.points, points, now);
	token_bucket_take(&w->rate.bytes, bytes, now);
	return 0;
}

/*---- requests ----*/

void replay_send_current(struct replay_worker *w)
{
	const struct wal_batch *b = &w->cur->batches[0];
	const char *body;
	size_t len;
	char why[160];
	if (w->stopping)
		return;
	/* Which databases are held is known before anything is sent: a
	 * write of one whose held batches were not listed would overtake
	 * them. A list that cannot be read is a failing queue read. */
	int lrc = replay_held_known(w);
	if (lrc) {
		replay_job_failed(w, WK_READ, lrc);
		snprintf(w->redo.error, sizeof(w->redo.error), "cannot read the held databases: %s",
			 wal_strerror(lrc));
		replay_publish(w);
		return;
	}
	/* A database waiting to exist holds only itself: its batches join
	 * its held ones, in order, and the rounds go on. */
	if (!replay_splitting(w) && replay_held_has(w, b->db)) {
		hold_round(w);
		return;
	}
	/* The backend's API (v1 or v2) and credentials: backend_api.c. */
	rbuf_reset(&w->send.target);
	rbuf_reset(&w->send.headers);
	if (b->kind == WAL_KIND_STATEMENT) {
		/* Alone in its round (replay_round_prepare): the writes before
		 * it are delivered, those after it wait for it. */
		rbuf_reset(&w->send.form);
		int src = backend_api_statement(w->cfg, b, &w->send.target, &w->send.headers, &w->send.form, why,
						sizeof(why));
		if (src) {
			unsendable(w, src, why);
			return;
		}
		rbuf_append(&w->send.headers, "Content-Type: application/x-www-form-urlencoded\r\n", 49);
		replay_set_state(w, S_SEND);
		w->stats.posts++;
		w->send.sent_ns = now_mono_ns();
		int rc = http_client_request(&w->send.http, "POST", rbuf_cstr(&w->send.target),
					     rbuf_cstr(&w->send.headers), w->send.form.data, w->send.form.len,
					     write_answered, w);
		relay_assert(rc == 0);
		return;
	}
	int brc = backend_api_request(w->cfg, b, &w->send.target, &w->send.headers, why, sizeof(why));
	if (brc) {
		unsendable(w, brc, why);
		return;
	}
	rbuf_append(&w->send.headers, "Content-Type: text/plain; charset=utf-8\r\n", 41);
	if (paced(w))
		return;
	replay_set_state(w, S_SEND);
	if (w->cur->lane_mode) {
		send_lanes(w); /* the lanes hold the lines; no coalesced payload */
		return;
	}
	payload(w, &body, &len);
	int gz = w->cur->gzipped && !replay_splitting(w) && w->isolate.upto == 0;
	if (gz) {
		body = w->cur->gz.data;
		len = w->cur->gz.len;
	}
	if (gz)
		rbuf_append(&w->send.headers, "Content-Encoding: gzip\r\n", 24);
	w->stats.posts++;
	w->send.sent_ns = now_mono_ns();
	int rc = http_client_request(&w->send.http, "POST", rbuf_cstr(&w->send.target), rbuf_cstr(&w->send.headers),
				     body, len, write_answered, w);
	relay_assert(rc == 0);
}

static void probe_response(struct http_client *c, const struct http_response *r, void *arg)
{
	struct replay_worker *w = arg;
	(void)c;
	if (r->status >= 200 && r->status < 300) {
		/* Reachable again: resend now; the state is "up" once the write
		 * itself succeeds. */
		replay_send_current(w);
	} else if (r->status == OUTCOME_STATUS_TLS_VERIFY || r->status == OUTCOME_STATUS_TLS_CONFIG) {
		/* Reachable, but a certificate (or the TLS set-up) stands in
		 * the way: the operator's to fix, as for a write. */
		retry_later(w, r, REPLAY_HOLDING, REPLAY_HOLD_MIN_MS);
	} else {
		retry_later(w, r, REPLAY_DOWN, 0);
	}
	replay_check_awake(w);
}

/* Probe before resending a possibly large payload to a server that was
 * unreachable. */
void replay_probe(struct replay_worker *w)
{
	replay_set_state(w, S_PROBE);
	rbuf_reset(&w->send.target);
	rbuf_appendf(&w->send.target, "%s/ping", w->cfg->path_prefix);
	int rc = http_client_request(&w->send.http, "GET", rbuf_cstr(&w->send.target), NULL, NULL, 0, probe_response, w);
	relay_assert(rc == 0);
}

static void create_db_response(struct http_client *c, const struct http_response *r, void *arg)
{
	struct replay_worker *w = arg;
	(void)c;
	/* /query answers 200 even when the statement failed; the error is in
	 * the JSON. */
	char err[200];
	if (backend_api_statement_outcome(r->status, r->body, r->body_len, err, sizeof(err)) == OUTCOME_DELIVERED) {
		/* Rate-limited: with a backend that keeps answering "not found"
		 * after a CREATE, this comes once per hold backoff. */
		relay_log_limited(&w->health.create_log, RELAY_LOG_NOTICE, "backend '%s': created database '%s'",
				  w->cfg->name, w->cur->batches[0].db);
		w->send.db_created = 1;
		replay_send_current(w);
	} else {
		retry_later(w, r, REPLAY_HOLDING, REPLAY_HOLD_MIN_MS);
	}
	replay_check_awake(w);
}

static void create_database(struct replay_worker *w)
{
	char why[160];
	rbuf_reset(&w->send.target);
	rbuf_reset(&w->send.headers);
	int brc = backend_api_create_database(w->cfg, &w->cur->batches[0], &w->send.target, &w->send.headers, why,
					      sizeof(why));
	if (brc) {
		unsendable(w, brc, why);
		return;
	}
	replay_set_state(w, S_CREATE);
	int rc = http_client_request(&w->send.http, "POST", rbuf_cstr(&w->send.target), rbuf_cstr(&w->send.headers),
				     NULL, 0, create_db_response, w);
	relay_assert(rc == 0);
}

/*---- outcomes ----*/

void replay_forget_hours(struct replay_worker *w)
{
	memset(&w->hours, 0, sizeof(w->hours));
	/* A batch being split learns its hours when its last piece is
	 * delivered: not those, which earlier pieces wrote before this. */
	if (replay_splitting(w))
		w->cur->touched.n = 0;
	if (w->prefetch.busy) {
		w->prefetch.stale = 1;
	} else if (w->prefetch.ready) {
		w->prefetch.ready = 0;
		replay_round_release(w->prefetch.round);
	}
}

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
	snprintf(w->health.link_error, sizeof(w->health.link_error), "%s", reason);
	snprintf(w->job.dead_msg, sizeof(w->job.dead_msg), "%s", reason);
	replay_publish(w);
	if (w->cur->group_n > 1 && !replay_splitting(w)) {
		isolate_group(w);
		return;
	}
	w->job.status = r->status < 0 ? 0 : r->status; /* 0: no answer, never sent */
	/* The requests sent for it: send.attempts counts the failures before
	 * this outcome, and the request that got it was sent too, unless it
	 * could not be made at all (unsendable: nothing went out). One number
	 * for the log line and the record, so that relayctl dlq list says
	 * what the log said. */
	w->job.attempts = w->send.attempts + (r->status == OUTCOME_STATUS_UNSENDABLE ? 0 : 1);
	w->stats.dead_batches++; /* a piece of a split batch counts as one */
	/* A statement refused may have been applied in part (the first of
	 * two, a DROP that timed out): shards may be gone. */
	if (w->cur->batches[0].kind == WAL_KIND_STATEMENT)
		replay_forget_hours(w);
	if (replay_splitting(w)) {
		/* The line dead-lettered was never stored: the batch's hours
		 * are not learned when its other pieces are delivered. */
		w->cur->touched.n = 0;
		w->job.off = w->pieces.range[0].off;
		w->job.len = w->pieces.range[0].len;
		w->job.lines = replay_count_lines(w->cur->batches[0].body + w->job.off, w->job.len);
		relay_log(RELAY_LOG_WARN,
			  "backend '%s': %u %s of batch %" PRIu64 " dead-lettered after %u attempt%s: %s", w->cfg->name,
			  w->job.lines, relay_plural(w->job.lines, "line", "lines"), w->cur->batches[0].seq,
			  w->job.attempts, relay_s(w->job.attempts), reason);
		replay_start_job(w, WK_DEAD_PART);
		return;
	}
	relay_log(RELAY_LOG_WARN,
		  "backend '%s': batch %" PRIu64 " (%u %s, db '%s') dead-lettered after %u attempt%s: %s", w->cfg->name,
		  w->cur->batches[0].seq, w->cur->batches[0].lines, relay_plural(w->cur->batches[0].lines, "point", "points"),
		  w->cur->batches[0].db, w->job.attempts, relay_s(w->job.attempts), reason);
	w->job.seq = w->cur->batches[0].seq;
	w->read.from = w->job.seq + 1;
	replay_start_job(w, WK_DEAD);
}

/* 413: split the current payload in two at a line boundary. */
static void too_large(struct replay_worker *w, const struct http_response *r)
{
	if (w->cur->group_n > 1 && !replay_splitting(w)) {
		isolate_group(w);
		return;
	}
	const struct wal_batch *b = &w->cur->batches[0];
	w->cur->lane_mode = 0; /* pieces go one at a time, in order */
	if (replay_pieces_halve(&w->pieces, b->body, b->body_len) != 0) {
		/* One line that the backend still finds too large. */
		dead_letter(w, r);
		return;
	}
	w->stats.splits++;
	relay_log(RELAY_LOG_INFO, "backend '%s': batch %" PRIu64 " too large for the backend (413), splitting",
		  w->cfg->name, b->seq);
	replay_send_current(w);
}

static void delivered(struct replay_worker *w)
{
	replay_set_link(w, REPLAY_UP, NULL);
	w->send.attempts = 0;
	w->send.db_created = 0;
	if (replay_splitting(w)) {
		count_piece(w, &w->cur->batches[0], w->pieces.range[0].off, w->pieces.range[0].len);
		w->health.last_delivery_ns = now_realtime_ns();
		if (replay_pieces_delivered(&w->pieces, w->cur->batches[0].body)) {
			if (w->paused)
				replay_set_state(w, S_BACKOFF); /* held until relayctl resume */
			else
				replay_send_current(w);
			return;
		}
		w->cur->group_n = 1;
		replay_count_split_done(w, &w->cur->batches[0]);
		/* Every piece delivered: the batch's hours exist (touched is
		 * empty unless it was prepared for lanes). */
		replay_hours_merge(&w->hours, &w->cur->touched);
	} else {
		int64_t now = now_realtime_ns();
		for (size_t i = 0; i < w->cur->group_n; i++)
			replay_count_delivered(w, &w->cur->batches[i], now);
		w->health.last_delivery_ns = now;
		/* Its shards exist now: later writes into them may use lanes. */
		replay_hours_merge(&w->hours, &w->cur->touched);
	}
	const struct wal_batch *b0 = &w->cur->batches[0];
	char created[WAL_NAME_MAX * 4];
	if (b0->kind == WAL_KIND_STATEMENT)
		replay_forget_hours(w); /* DROP DATABASE, a new default rp... */
	/* The text is not logged: a statement may carry a password (CREATE
	 * USER ... WITH PASSWORD). */
	if (b0->kind == WAL_KIND_STATEMENT) {
		/* Every database it creates: their held batches go now, not
		 * after the backoff. */
		size_t at = 0;
		int any = 0;
		while (backend_api_created_database(b0->body, b0->body_len, &at, created, sizeof(created))) {
			relay_log(RELAY_LOG_NOTICE, "backend '%s': statement %" PRIu64 " delivered: database '%s' created",
				  w->cfg->name, b0->seq, created);
			replay_held_wake(w, created);
			any = 1;
		}
		if (!any)
			relay_log(RELAY_LOG_INFO, "backend '%s': statement %" PRIu64 " delivered", w->cfg->name, b0->seq);
	}
	replay_delivered_upto(w, replay_round_last_seq(w->cur));
}

/* What answer r, of outcome o, means for the write (or statement) tried. */
static void judge(struct replay_worker *w, enum outcome o, const struct http_response *r)
{
	switch (o) {
	case OUTCOME_DELIVERED:
		delivered(w);
		return;
	case OUTCOME_RETRY:
		retry_later(w, r, r->status < 0 ? REPLAY_DOWN : REPLAY_RETRYING, 0);
		return;
	case OUTCOME_HOLD:
		retry_later(w, r, REPLAY_HOLDING, REPLAY_HOLD_MIN_MS);
		return;
	case OUTCOME_NO_DATABASE:
		/* Its shards are gone, or will be new: this write goes whole
		 * from now on, whoever creates the database. */
		replay_forget_hours(w);
		if (w->cur->lane_mode)
			replay_round_prepare(w->cur, w->cfg, 0, 0, 0);
		/* A statement names its database in its text: only one sent
		 * with a db parameter can have it created for it. */
		if (w->cfg->on_database_not_found == RELAY_DB_CREATE && !w->send.db_created &&
		    *w->cur->batches[0].db) {
			create_database(w);
			return;
		}
		if (w->send.db_created) {
			/* The CREATE answered 200 yet the write still finds no
			 * database (a proxy that sends /query elsewhere, a
			 * database dropped at once, a name the server reads
			 * otherwise): a hold with its backoff, not a loop of
			 * writes and CREATEs. The next attempt may create again. */
			w->send.db_created = 0;
			retry_later_why(w, r, REPLAY_HOLDING, REPLAY_HOLD_MIN_MS, "still not found after CREATE DATABASE");
			return;
		}
		if (w->cfg->on_database_not_found == RELAY_DB_DEAD_LETTER) {
			dead_letter(w, r);
			return;
		}
		if (!*w->cur->batches[0].db && w->cur->batches[0].kind == WAL_KIND_STATEMENT) {
			/* A statement sent without a db parameter (CREATE
			 * RETENTION POLICY r ON nosuch ...) names its database
			 * in its text: no database of the queue can be held for
			 * it, and holding the backend would stop every write
			 * behind it until someone created that database.
			 * Dead-lettered with the answer, which names the
			 * database; requeued by hand once it exists. */
			relay_log(RELAY_LOG_WARN,
			          "backend \"%s\": statement %" PRIu64 " names a database the backend does not have (%.*s); "
			          "dead-lettered, the queue goes on: create the database, then relayctl dlq requeue %s %" PRIu64,
			          w->cfg->name, w->cur->batches[0].seq, (int)(r->body_len > 200 ? 200 : r->body_len),
			          r->body ? r->body : "", w->cfg->name, w->cur->batches[0].seq);
			dead_letter(w, r);
			return;
		}
		/* Only this database waits (replay_held.c). */
		if (*w->cur->batches[0].db && !replay_splitting(w)) {
			hold_round(w);
			return;
		}
		retry_later(w, r, REPLAY_HOLDING, REPLAY_HOLD_MIN_MS);
		return;
	case OUTCOME_SPLIT:
		too_large(w, r);
		return;
	case OUTCOME_DEAD:
		dead_letter(w, r);
		return;
	}
}

enum outcome replay_classify(const struct wal_batch *b, const struct http_response *r, struct http_response *a,
                             char *err, size_t errlen)
{
	*a = *r;
	if (b->kind != WAL_KIND_STATEMENT)
		return outcome_classify(r->status, r->body, r->body_len);
	/* A statement's 2xx may carry its error: shown and stored with a
	 * dead letter in place of the whole JSON. */
	enum outcome o = backend_api_statement_outcome(r->status, r->body, r->body_len, err, errlen);
	if (*err && r->status >= 200 && r->status < 300) {
		a->body = err;
		a->body_len = strlen(err);
	}
	return o;
}

/* Judge answer r to the write of cur. Not counted here: a lanes' round
 * was counted lane by lane, and an unsendable write was never sent. */
static void on_response(struct http_client *c, const struct http_response *r, void *arg)
{
	struct replay_worker *w = arg;
	struct http_response a;
	char err[300];
	(void)c;
	enum outcome o = replay_classify(&w->cur->batches[0], r, &a, err, sizeof(err));
	judge(w, o, &a);
}

/* The answer to a single write or statement (not shared among lanes):
 * counted, then judged. */
static void write_answered(struct http_client *c, const struct http_response *r, void *arg)
{
	struct replay_worker *w = arg;
	struct http_response a;
	char err[300];
	(void)c;
	enum outcome o = replay_classify(&w->cur->batches[0], r, &a, err, sizeof(err));
	replay_count_answer(w, o, w->send.sent_ns);
	judge(w, o, &a);
	replay_check_awake(w);
}
