/*
 * replay_held: the databases a backend said it does not have, each held
 * on its own while every other database flows (docs/architecture.md,
 * "Held databases"). The worker's main rounds move a held database's
 * batches out of the log (replay_queue.c, WK_HOLD); here, beside them, on
 * a connection and a pool job of its own, each held database is tried
 * again, oldest batches first (coalesced as usual), after the backend's
 * backoff (retry_min..retry_max), at once on relayctl retry or after a
 * CREATE DATABASE of it went through this backend's queue. A 2xx deletes
 * what it carried from the held store; an empty held set releases the
 * database. One database is worked at a time; within one, nothing is
 * sent before the write ahead of it was answered 2xx, so its order holds.
 *
 *   IDLE --due--> READ [pool: wal_held_read of the db, prepared]
 *                  |-- none held --> released (unless a hold of it commits)
 *                  v
 *                 SEND --2xx--> DONE [pool: wal_held_done] --> READ again
 *                  |--db not found, retry, 5xx--> IDLE, due after backoff
 *                  |   (on_database_not_found: create --> CREATE --> SEND;
 *                  |    dead_letter --> DEAD)
 *                  '--refused for good--> coalesced? SEND one at a time;
 *                      else DEAD [pool: wal_held_dead] --> READ again
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relay/base/log.h"
#include "relay/base/outcome.h"
#include "relay/delivery/backend_api.h"
#include "relay/delivery/replay_internal.h"

enum { HOP_READ, HOP_DONE, HOP_DEAD };

static void kick(struct replay_worker *w);
static void send_held(struct replay_worker *w);
static void start_job(struct replay_worker *w, int op);

static struct replay_held_db *find(struct replay_worker *w, const char *db)
{
	for (size_t i = 0; i < w->held.n; i++)
		if (strcmp(w->held.dbs[i].db, db) == 0)
			return &w->held.dbs[i];
	return NULL;
}

int replay_held_has(const struct replay_worker *w, const char *db)
{
	return *db && find((struct replay_worker *)w, db) != NULL;
}

int replay_held_add(struct replay_worker *w, const char *db)
{
	if (find(w, db))
		return 0;
	if (w->held.n == w->held.cap) {
		w->held.cap = w->held.cap ? 2 * w->held.cap : 4;
		w->held.dbs = xrealloc(w->held.dbs, w->held.cap * sizeof(*w->held.dbs));
	}
	struct replay_held_db *h = &w->held.dbs[w->held.n++];
	memset(h, 0, sizeof(*h));
	h->db = xstrdup(db);
	/* Its first retry after the backoff's first step: the answer that
	 * held it just came. */
	h->attempts = 1;
	h->due = uv_now(w->loop) + replay_delay_after(w, 1, 0, 0);
	return 1;
}

static void drop(struct replay_worker *w, const char *db)
{
	for (size_t i = 0; i < w->held.n; i++) {
		if (strcmp(w->held.dbs[i].db, db) != 0)
			continue;
		free(w->held.dbs[i].db);
		w->held.dbs[i] = w->held.dbs[--w->held.n];
		return;
	}
}

/* A hold (WK_HOLD) of db, or of any database when db is NULL, is on
 * the pool or waits for its retry: its batches are not in the store yet. */
static int hold_pending(const struct replay_worker *w, const char *db)
{
	int running = (w->job.busy && w->job.kind == WK_HOLD) || w->redo.kind == (int)WK_HOLD + 1;
	if (!running || !db)
		return running;
	return w->cur->nbatches && strcmp(w->cur->batches[0].db, db) == 0;
}

/* The held databases as the store has them (at start, after relayctl
 * changed the queue): each due at once, since the backend may have got
 * it meanwhile. A short read transaction on the loop thread, as the
 * pause flag's. When it fails, what is known is kept (at start: nothing,
 * and nothing is sent until a load works, see replay_held_known) and
 * the load is tried again after a backoff. */
static int load(struct replay_worker *w)
{
	struct wal_held *h = NULL;
	size_t n = 0;
	int at_start = !w->held.known;
	int rc = wal_held_list(w->wal, w->id, &h, &n);
	if (rc) {
		w->held.refresh = 1;
		w->held.load_attempts++;
		uint64_t d = replay_delay_after(w, w->held.load_attempts, REPLAY_HOLD_MIN_MS, 0);
		w->held.load_due = uv_now(w->loop) + d;
		relay_log(RELAY_LOG_WARN, "backend '%s': cannot read its held databases: %s (again in %" PRIu64 " ms)",
			  w->cfg->name, wal_strerror(rc), d);
		return rc;
	}
	w->held.refresh = 0;
	w->held.load_attempts = 0;
	w->held.known = 1;
	for (size_t i = 0; i < w->held.n; i++)
		free(w->held.dbs[i].db);
	w->held.n = 0;
	for (size_t i = 0; i < n; i++) {
		replay_held_add(w, h[i].db);
		w->held.dbs[w->held.n - 1].due = 0;
		if (at_start)
			relay_log(RELAY_LOG_NOTICE,
			          "backend \"%s\": database \"%s\" is held: %" PRIu64 " %s (%" PRIu64 " %s) %s "
			          "for it to exist while other databases flow",
			          w->cfg->name, h[i].db, h[i].batches, relay_plural(h[i].batches, "batch", "batches"),
			          h[i].points, relay_plural(h[i].points, "point", "points"),
			          h[i].batches == 1 ? "waits" : "wait");
	}
	wal_held_free(h, n);
	return 0;
}

int replay_held_known(struct replay_worker *w)
{
	if (w->held.known)
		return 0;
	/* (No hold can be pending: nothing was sent yet.) */
	return load(w);
}

void replay_held_committed(struct replay_worker *w, const char *db)
{
	w->held.gen++;
	if (replay_held_add(w, db)) {
		/* The held retry released it while this hold was on its way
		 * (it waited for a retry): its batch is tried at once, and
		 * every later one of the database joins it meanwhile. */
		find(w, db)->due = 0;
	}
}

/*---- the pool job ----*/

static void held_job(uv_work_t *req)
{
	struct replay_worker *w = req->data;
	struct replay_round *r = w->held.round;
	int64_t now = now_realtime_ns();
	switch (w->held.op) {
	case HOP_DONE:
		w->held.rc = wal_held_done(w->wal, w->id, w->held.db, w->held.upto, now);
		return;
	case HOP_DEAD:
		w->held.rc = wal_held_dead(w->wal, w->id, w->held.db, r->batches[0].seq, w->held.status, w->held.msg,
					   w->held.attempts + 1, now);
		return;
	}
	replay_round_release(r);
	w->held.rc = wal_held_read(w->wal, w->id, w->held.db, 0, REPLAY_READ_MAX, w->cfg->batch_max_bytes,
				   r->batches, &r->nbatches);
	if (w->held.rc == 0 && r->nbatches) {
		replay_round_rescale(r, w->cfg);
		replay_round_prepare(r, w->cfg, 0, 0, 1);
	}
}

/* The database being worked is finished for now (due as set). */
static void finish(struct replay_worker *w)
{
	free(w->held.db);
	w->held.db = NULL;
	w->held.created = 0;
	w->held.isolate = 0;
	w->held.attempts = 0;
	replay_round_release(w->held.round);
}

static void backoff(struct replay_worker *w, uint64_t retry_after_s, const char *why)
{
	struct replay_held_db *h = find(w, w->held.db);
	if (h) {
		h->attempts++;
		uint64_t d = replay_delay_after(w, h->attempts, 0, retry_after_s);
		h->due = uv_now(w->loop) + d;
		relay_log(RELAY_LOG_DEBUG, "backend '%s': held database '%s' not yet (%s), next in %" PRIu64 " ms",
			  w->cfg->name, w->held.db, why, d);
	}
	finish(w);
}

static void after_held_job(uv_work_t *req, int status)
{
	struct replay_worker *w = req->data;
	struct replay_round *r = w->held.round;
	w->held.busy = 0;
	if (w->stopping) {
		replay_finish_stop(w);
		return;
	}
	int rc = status ? status : w->held.rc;
	if (rc) {
		relay_log(RELAY_LOG_WARN, "backend '%s': held database '%s': %s (tried again after a backoff)",
			  w->cfg->name, w->held.db, wal_strerror(rc));
		backoff(w, 0, wal_strerror(rc));
		kick(w);
		return;
	}
	switch (w->held.op) {
	case HOP_DONE:
		/* Counted once the store has recorded it: a commit that
		 * failed sends the batches again (above), counted then. */
		{
			int64_t now = now_realtime_ns();
			for (size_t i = 0; i < r->group_n; i++) {
				replay_count_delivered(w, &r->batches[i], now);
				if (r->batches[i].kind == WAL_KIND_STATEMENT)
					replay_forget_hours(w); /* as for the queue's own */
			}
			w->health.last_delivery_ns = now;
		}
		/* fall through */
	case HOP_DEAD: {
		/* On with what is left of it, at once. */
		struct replay_held_db *h = find(w, w->held.db);
		if (h) {
			h->attempts = 0;
			h->due = 0;
		}
		w->held.isolate = 0;
		start_job(w, HOP_READ);
		return;
	}
	default:
		break;
	}
	if (r->nbatches == 0) {
		/* Nothing held any more, as of the read's snapshot. A hold
		 * that committed since (gen moved on) may have put a batch
		 * there: read again. A hold of it on the pool, or waiting for
		 * its retry, will: look again soon. Either way the database
		 * stays listed, so that no later batch of it is sent ahead. */
		if (w->held.gen != w->held.read_gen) {
			start_job(w, HOP_READ);
			return;
		}
		if (hold_pending(w, w->held.db)) {
			struct replay_held_db *h = find(w, w->held.db);
			if (h)
				h->due = uv_now(w->loop) + 100;
			finish(w);
			kick(w);
			return;
		}
		relay_log(RELAY_LOG_NOTICE,
		          "backend \"%s\": database \"%s\" released: its held batches are delivered, its writes flow again",
		          w->cfg->name, w->held.db);
		drop(w, w->held.db);
		finish(w);
		kick(w);
		return;
	}
	send_held(w);
}

static void start_job(struct replay_worker *w, int op)
{
	if (op == HOP_READ)
		w->held.read_gen = w->held.gen;
	w->held.op = op;
	w->held.busy = 1;
	w->held.req.data = w;
	int rc = uv_queue_work(w->loop, &w->held.req, held_job, after_held_job);
	relay_assert(rc == 0);
}

/*---- requests ----*/

static void dead(struct replay_worker *w, int status, const char *body, size_t len)
{
	struct replay_round *r = w->held.round;
	if (r->group_n > 1) {
		/* Which batch of the coalesced write? One at a time. */
		w->held.isolate = 1;
		replay_round_prepare(r, w->cfg, 0, 1, 0);
		send_held(w);
		return;
	}
	w->held.status = status < 0 ? 0 : status;
	snprintf(w->held.msg, sizeof(w->held.msg), "HTTP %d: %.*s", status, (int)(len > 250 ? 250 : len), body);
	w->held.msg[strcspn(w->held.msg, "\n")] = '\0';
	w->stats.dead_batches++;
	/* The number wal_held_dead stores with it (held_job): one log line
	 * and one record, one count. */
	relay_log(RELAY_LOG_WARN,
		  "backend '%s': held batch %" PRIu64 " of database '%s' dead-lettered after %u attempt%s: %s",
		  w->cfg->name, r->batches[0].seq, w->held.db, w->held.attempts + 1, relay_s(w->held.attempts + 1),
		  w->held.msg);
	start_job(w, HOP_DEAD);
}

static void judge(struct replay_worker *w, enum outcome o, const struct http_response *r);

static void created(struct http_client *c, const struct http_response *r, void *arg)
{
	struct replay_worker *w = arg;
	char err[200];
	(void)c;
	if (backend_api_statement_outcome(r->status, r->body, r->body_len, err, sizeof(err)) == OUTCOME_DELIVERED) {
		relay_log(RELAY_LOG_NOTICE, "backend '%s': created database '%s'", w->cfg->name, w->held.db);
		w->held.created = 1;
		send_held(w);
	} else {
		backoff(w, r->retry_after_s, "CREATE DATABASE failed");
		kick(w);
	}
}

static void create(struct replay_worker *w)
{
	char why[160];
	rbuf_reset(&w->held.target);
	rbuf_reset(&w->held.headers);
	if (backend_api_create_database(w->cfg, &w->held.round->batches[0], &w->held.target, &w->held.headers, why,
					sizeof(why))) {
		backoff(w, 0, why);
		kick(w);
		return;
	}
	int rc = http_client_request(&w->held.http, "POST", rbuf_cstr(&w->held.target), rbuf_cstr(&w->held.headers),
				     NULL, 0, created, w);
	relay_assert(rc == 0);
}

static void judge(struct replay_worker *w, enum outcome o, const struct http_response *r)
{
	struct replay_round *rd = w->held.round;
	switch (o) {
	case OUTCOME_DELIVERED:
		/* Counted when wal_held_done has committed (after_held_job). */
		w->held.upto = replay_round_last_seq(rd);
		start_job(w, HOP_DONE);
		return;
	case OUTCOME_NO_DATABASE:
		if (w->cfg->on_database_not_found == RELAY_DB_CREATE && !w->held.created) {
			create(w);
			return;
		}
		if (w->cfg->on_database_not_found == RELAY_DB_DEAD_LETTER) {
			dead(w, r->status, r->body, r->body_len);
			return;
		}
		backoff(w, r->retry_after_s, "database not found");
		kick(w);
		return;
	case OUTCOME_DEAD:
	case OUTCOME_SPLIT:
		/* A 413 of a held batch alone is dead-lettered whole: pieces
		 * are the main rounds' (a known limit of the held retry). */
		dead(w, r->status, r->body ? r->body : "", r->body ? r->body_len : 0);
		return;
	case OUTCOME_RETRY:
	case OUTCOME_HOLD:
		replay_count_retry(w, r->status, r->body, r->body_len);
		backoff(w, r->retry_after_s, r->status < 0 ? "no answer" : "refused for now");
		kick(w);
		return;
	}
}

static void answered(struct http_client *c, const struct http_response *r, void *arg)
{
	struct replay_worker *w = arg;
	(void)c;
	if (w->stopping)
		return;
	struct http_response a;
	char err[300];
	enum outcome o = replay_classify(&w->held.round->batches[0], r, &a, err, sizeof(err));
	replay_count_answer(w, o, w->held.sent_ns);
	judge(w, o, &a);
}

static void send_held(struct replay_worker *w)
{
	struct replay_round *r = w->held.round;
	const struct wal_batch *b = &r->batches[0];
	char why[160];
	int rc;
	if (w->stopping)
		return;
	if (w->paused) {
		/* Nothing is sent while paused; relayctl resume kicks it. */
		finish(w);
		return;
	}
	rbuf_reset(&w->held.target);
	rbuf_reset(&w->held.headers);
	rbuf_reset(&w->held.form);
	const char *body = b->body;
	size_t len = b->body_len;
	if (b->kind == WAL_KIND_STATEMENT) {
		rc = backend_api_statement(w->cfg, b, &w->held.target, &w->held.headers, &w->held.form, why, sizeof(why));
		rbuf_append(&w->held.headers, "Content-Type: application/x-www-form-urlencoded\r\n", 49);
		body = w->held.form.data;
		len = w->held.form.len;
	} else {
		rc = backend_api_request(w->cfg, b, &w->held.target, &w->held.headers, why, sizeof(why));
		rbuf_append(&w->held.headers, "Content-Type: text/plain; charset=utf-8\r\n", 41);
		if (r->gzipped && !w->held.isolate) {
			rbuf_append(&w->held.headers, "Content-Encoding: gzip\r\n", 24);
			body = r->gz.data;
			len = r->gz.len;
		} else if (r->group_n > 1) {
			body = r->payload.data;
			len = r->payload.len;
		}
	}
	if (rc == BACKEND_API_EBATCH) {
		dead(w, 0, why, strlen(why));
		return;
	}
	if (rc) {
		backoff(w, 0, why);
		kick(w);
		return;
	}
	w->stats.posts++;
	w->held.sent_ns = now_mono_ns();
	rc = http_client_request(&w->held.http, "POST", rbuf_cstr(&w->held.target), rbuf_cstr(&w->held.headers), body,
				 len, answered, w);
	relay_assert(rc == 0);
}

/*---- scheduling ----*/

static void timer_cb(uv_timer_t *t)
{
	kick(t->data);
}

/* Work the next due database, or wait on the timer for the first one. */
static void kick(struct replay_worker *w)
{
	if (w->stopping || w->held.busy || w->held.db || w->held.http.in_request)
		return;
	/* The list reloaded, but not while a round moves a batch here (on
	 * the pool or waiting for its retry): the store does not have it
	 * yet, and forgetting its database would let its next batch go
	 * ahead of it (the end of that job kicks again). */
	uint64_t now = uv_now(w->loop);
	if (w->held.refresh && !hold_pending(w, NULL) && now >= w->held.load_due)
		load(w);
	uv_timer_stop(&w->held.timer);
	/* A load that failed is tried again on the timer (one deferred for
	 * a hold, when the hold ends: after_job kicks). */
	uint64_t wake = w->held.refresh && w->held.load_attempts ? w->held.load_due : UINT64_MAX;
	struct replay_held_db *next = NULL;
	if (!w->paused)
		for (size_t i = 0; i < w->held.n; i++)
			if (!next || w->held.dbs[i].due < next->due)
				next = &w->held.dbs[i];
	if (next && next->due <= now) {
		w->held.db = xstrdup(next->db);
		start_job(w, HOP_READ);
		return;
	}
	if (next && next->due < wake)
		wake = next->due;
	if (wake != UINT64_MAX)
		uv_timer_start(&w->held.timer, timer_cb, wake > now ? wake - now : 0, 0);
}

void replay_held_kick(struct replay_worker *w)
{
	kick(w);
}

void replay_held_wake(struct replay_worker *w, const char *db)
{
	struct replay_held_db *h = db ? find(w, db) : NULL;
	if (db && !h)
		return;
	for (size_t i = 0; i < w->held.n; i++)
		if (!db || &w->held.dbs[i] == h)
			w->held.dbs[i].due = 0;
	kick(w);
}

int replay_held_retry_now(struct replay_worker *w)
{
	if (!w->held.n || w->paused)
		return -1;
	relay_log(RELAY_LOG_NOTICE, "backend '%s': trying its %zu held %s now (relayctl retry)", w->cfg->name,
		  w->held.n, relay_plural(w->held.n, "database", "databases"));
	replay_held_wake(w, NULL);
	return 0;
}

void replay_held_refresh(struct replay_worker *w)
{
	w->held.refresh = 1;
	kick(w);
}

/*---- life ----*/

static void held_closed(struct http_client *c)
{
	struct replay_worker *w = relay_container_of(c, struct replay_worker, held.http);
	w->handles--;
	replay_finish_stop(w);
}

static void held_timer_closed(uv_handle_t *h)
{
	struct replay_worker *w = h->data;
	w->handles--;
	replay_finish_stop(w);
}

void replay_held_init(struct replay_worker *w)
{
	const struct relay_backend_config *cfg = w->cfg;
	http_client_init(&w->held.http, w->loop, cfg->host, cfg->port, cfg->connect_timeout_ms, cfg->timeout_ms);
	uv_timer_init(w->loop, &w->held.timer);
	w->held.timer.data = w;
	w->handles += 2;
	w->held.round = xcalloc(1, sizeof(*w->held.round));
	load(w);
}

void replay_held_stop(struct replay_worker *w)
{
	uv_timer_stop(&w->held.timer);
	uv_close((uv_handle_t *)&w->held.timer, held_timer_closed);
	http_client_close(&w->held.http, held_closed);
}

void replay_held_free(struct replay_worker *w)
{
	for (size_t i = 0; i < w->held.n; i++)
		free(w->held.dbs[i].db);
	free(w->held.dbs);
	w->held.dbs = NULL;
	w->held.n = 0;
	free(w->held.db);
	w->held.db = NULL;
	if (w->held.round) {
		replay_round_free(w->held.round);
		free(w->held.round);
		w->held.round = NULL;
	}
	rbuf_release(&w->held.target);
	rbuf_release(&w->held.headers);
	rbuf_release(&w->held.form);
}
