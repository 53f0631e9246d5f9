/*
 * relayctl status: every queue's figures from the store, the delivery
 * state relayd alone knows from its control socket, once or refreshed
 * with --watch.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cmd/relayctl/relayctl.h"

/* Configured backends, then orphaned queues. */
#define STATUS_MAX (RELAY_MAX_BACKENDS + WAL_MAX_BACKENDS)

/* What relayd's rate stands for: the points delivered over the last 30 s
 * (it samples the count every 5 s and keeps a window of them:
 * cmd/relayd/relayd.c, maint_cb), so it is 0 when nothing was delivered
 * in that time. The check below on the last delivery's age gives the same
 * answer for a relayd too old to have the window. */
#define RATE_WINDOW_S 30

/* Delivered points per queue at the last refresh, by name: the set of
 * queues may change between refreshes (an orphaned one purged). */
struct rate_memo {
	char names[STATUS_MAX][WAL_NAME_MAX + 1];
	uint64_t points[STATUS_MAX];
	size_t n;
	uint64_t at_ms;
	int have;
};

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig)
{
	(void)sig;
	interrupted = 1;
}

/* A rate with one decimal, as the text view shows it (and as status
 * --json always wrote it); null when there is none. */
static json_t *rate_json(double rate)
{
	char r[400]; /* "%.1f" of the largest double fits */
	if (!isfinite(rate))
		return json_null();
	snprintf(r, sizeof(r), "%.1f", rate);
	return json_real(strtod(r, NULL));
}

/* One backend in status --json: the queue's figures, then relayd's
 * (d, NULL when relayd does not run or does not deliver to it). */
/* The databases a backend holds (their batches wait for them to exist). */
static json_t *held_json(const struct wal_held *h, size_t n, int64_t now)
{
	json_t *a = json_array();
	for (size_t i = 0; i < n; i++) {
		json_t *o = json_object();
		json_object_set_new(o, "db", rjson_cstr(h[i].db));
		json_object_set_new(o, "batches", u64_json(h[i].batches));
		json_object_set_new(o, "points", u64_json(h[i].points));
		json_object_set_new(o, "bytes", u64_json(h[i].bytes));
		json_object_set_new(o, "oldest_age_seconds", json_integer(age_seconds(h[i].oldest_accept_ns, now)));
		json_array_append_new(a, o);
	}
	return a;
}

/* The rate limit of a backend: relayd's (d), as in force now; else the
 * configuration file's, when it lists the backend; else none. */
struct rate_limit {
	uint64_t points, bytes, burst_ms;
	int throttled;
	double throttled_s;
};

static struct rate_limit rate_limit_of(const struct ctl *c, const char *name, const struct control_backend_status *d)
{
	struct rate_limit r = { 0, 0, 0, 0, 0.0 };
	if (d) {
		r.points = d->max_rate;
		r.bytes = d->max_rate_bytes;
		r.burst_ms = d->rate_burst_ms;
		r.throttled = d->throttled;
		r.throttled_s = d->throttled_seconds;
		return r;
	}
	for (size_t i = 0; i < c->cfg.nbackends; i++)
		if (strcmp(c->cfg.backends[i].name, name) == 0) {
			r.points = c->cfg.backends[i].max_rate;
			r.bytes = c->cfg.backends[i].max_rate_bytes;
			r.burst_ms = c->cfg.backends[i].rate_burst_ms;
		}
	return r;
}

/* "5000 points/s, 1.0MiB/s (burst 1.0s)" into out. */
static void rate_limit_text(const struct rate_limit *r, char *out, size_t n)
{
	char b[32];
	size_t at = 0;
	out[0] = '\0';
	if (r->points)
		at += (size_t)snprintf(out, n, "%" PRIu64 " points/s", r->points);
	if (r->bytes && at < n) {
		human_bytes(r->bytes, b, sizeof(b));
		at += (size_t)snprintf(out + at, n - at, "%s%s/s", r->points ? ", " : "", b);
	}
	if (at < n)
		snprintf(out + at, n - at, " (burst %.1fs)", (double)r->burst_ms / 1000.0);
}

static json_t *backend_json(const char *name, const char *state, const struct wal_backend_stat *st, int64_t age,
                            int64_t last, double rate, const struct control_backend_status *d)
{
	json_t *o = json_object();
	json_object_set_new(o, "name", rjson_cstr(name));
	json_object_set_new(o, "state", rjson_cstr(state));
	json_object_set_new(o, "paused", json_boolean(st->paused));
	json_object_set_new(o, "pending_batches", u64_json(st->pending_batches));
	json_object_set_new(o, "pending_points", u64_json(st->pending_points));
	json_object_set_new(o, "pending_bytes", u64_json(st->pending_bytes));
	json_object_set_new(o, "oldest_age_seconds", json_integer(age));
	json_object_set_new(o, "held_batches", u64_json(st->held_batches));
	json_object_set_new(o, "held_points", u64_json(st->held_points));
	json_object_set_new(o, "held_bytes", u64_json(st->held_bytes));
	json_object_set_new(o, "dead_batches", u64_json(st->dead_batches));
	json_object_set_new(o, "dead_bytes", u64_json(st->dead_bytes));
	json_object_set_new(o, "delivered_batches", u64_json(st->delivered_batches));
	json_object_set_new(o, "delivered_points", u64_json(st->delivered_points));
	json_object_set_new(o, "last_delivery_ns", json_integer(last));
	/* The same figure under its older name, kept for existing scripts. */
	json_object_set_new(o, "delivered_points_per_second", rate_json(rate));
	json_object_set_new(o, "points_per_second", rate_json(rate));
	json_object_set_new(o, "last_error", rjson_cstr(d ? d->last_error : ""));
	json_object_set_new(o, "attempts", json_integer(d ? d->attempts : 0));
	json_object_set_new(o, "next_attempt_ms", json_integer(d ? d->next_attempt_ms : -1));
	return o;
}

/* The rate limit's fields of status --json (0 = no limit). */
static void rate_limit_json(json_t *o, const struct rate_limit *r)
{
	json_object_set_new(o, "max_rate", u64_json(r->points));
	json_object_set_new(o, "max_rate_bytes", u64_json(r->bytes));
	json_object_set_new(o, "rate_burst_ms", u64_json(r->burst_ms));
	json_object_set_new(o, "throttled", json_boolean(r->throttled));
	json_object_set_new(o, "throttled_seconds", json_real(r->throttled_s));
}

/* One refresh of status into out: 0, 1 on an error (nothing to show), 2
 * when a queue is damaged (shown as such). */
static int status_once(const struct ctl *c, struct wal *w, struct rate_memo *memo, struct rbuf *out)
{
	struct control_status *ds = xcalloc(1, sizeof(*ds));
	char why[300] = "";
	int running = relayd_status(c, ds, why, sizeof(why));
	int64_t now = now_realtime_ns();
	uint64_t now_ms = now_mono_ns() / 1000000;
	struct wal_backend_stat *st = xcalloc(STATUS_MAX, sizeof(*st));
	char(*stored)[WAL_NAME_MAX + 1] = xcalloc(WAL_MAX_BACKENDS, sizeof(*stored));
	struct rate_memo *next = memo ? xcalloc(1, sizeof(*next)) : NULL;
	const char *names[STATUS_MAX];
	char damaged[STATUS_MAX] = { 0 };
	struct wal_held *held[STATUS_MAX] = { 0 };
	size_t nheld[STATUS_MAX] = { 0 };
	size_t nnames = 0, nconf, nstored = 0, ndamaged = 0;
	int rc = 0, from_memo = 0;

	/* The configured backends, then the queues the store holds for
	 * backends no longer configured ("orphaned": delivery stopped, the
	 * queue kept until purged). Configured means in relayd's list when
	 * it answers, asked again at every refresh: a reload may have added
	 * or removed backends since relayctl read the configuration file. */
	if (running == 1) {
		for (size_t i = 0; i < ds->nbackends && nnames < STATUS_MAX; i++)
			names[nnames++] = ds->backends[i].name;
	} else {
		for (size_t i = 0; i < c->cfg.nbackends; i++)
			names[nnames++] = c->cfg.backends[i].name;
	}
	nconf = nnames;
	if ((rc = wal_backend_names(w, stored, WAL_MAX_BACKENDS, &nstored))) {
		fprintf(stderr, "relayctl: cannot list the queues: %s\n", wal_strerror(rc));
		goto out;
	}
	for (size_t i = 0; i < nstored && nnames < STATUS_MAX; i++) {
		size_t k = 0;
		while (k < nconf && strcmp(names[k], stored[i]) != 0)
			k++;
		if (k == nconf)
			names[nnames++] = stored[i];
	}

	/* Every figure first (one short read transaction each), then the
	 * output: nothing is printed while a transaction is open. */
	for (size_t i = 0; i < nnames; i++) {
		rc = wal_backend_stat(w, names[i], &st[i]);
		if (rc == 0 && i >= nconf && !st[i].pending_batches && !st[i].dead_batches &&
		    !st[i].held_batches) {
			/* An orphaned queue with nothing left (purged): not shown. */
			names[i--] = names[--nnames];
			continue;
		}
		if (rc == WAL_ENOBACKEND) {
			memset(&st[i], 0, sizeof(st[i])); /* configured, never opened: nothing queued */
			rc = 0;
		} else if (rc == WAL_ECORRUPT) {
			/* One damaged record must not hide every other queue: this
			 * one is shown as damaged, and the exit status says so. */
			fprintf(stderr,
				"relayctl: the record of backend '%s' is corrupt: its figures cannot be read (see 'relayctl "
				"verify')\n",
				shown(names[i]));
			memset(&st[i], 0, sizeof(st[i]));
			damaged[i] = 1;
			ndamaged++;
			rc = 0;
		} else if (rc == 0 && st[i].corrupt_seq) {
			/* A batch that does not decode at the head of the queue: the
			 * figures are there, delivery waits for its quarantine. */
			int id;
			uint64_t seq = st[i].corrupt_seq;
			char cwhy[200] = "";
			if (wal_backend_open(w, names[i], &id) == 0)
				wal_find_corrupt(w, id, seq, &seq, cwhy, sizeof(cwhy));
			fprintf(stderr,
				"relayctl: batch %" PRIu64 " of backend '%s' is corrupt%s%s (relayd moves it to the dead-letter "
				"queue when it reaches it; see 'relayctl verify')\n",
				seq, shown(names[i]), *cwhy ? ": " : "", shown(cwhy));
			damaged[i] = 1;
			ndamaged++;
		} else if (rc) {
			fprintf(stderr, "relayctl: cannot read queue of backend '%s': %s\n", shown(names[i]),
				wal_strerror(rc));
			goto out;
		}
		int id;
		if (st[i].held_batches && wal_backend_open(w, names[i], &id) == 0 &&
		    (rc = wal_held_list(w, id, &held[i], &nheld[i]))) {
			fprintf(stderr, "relayctl: cannot read the held databases of backend '%s': %s\n", shown(names[i]),
				wal_strerror(rc));
			goto out;
		}
	}
	json_t *doc = NULL, *backends = NULL;
	if (c->json) {
		doc = json_object();
		json_object_set_new(doc, "relayd", rjson_cstr(running ? "running" : "stopped"));
		if (running == 1)
			json_object_set_new(doc, "pid", json_integer(ds->pid));
		if (running < 0)
			json_object_set_new(doc, "relayd_error", rjson_cstr(why));
		backends = json_array();
		json_object_set_new(doc, "backends", backends);
	} else {
		if (running == 1)
			rbuf_appendf(out, "relayd: running (pid %" PRId64 ", version %s)\n", ds->pid, shown(ds->version));
		else if (running == 0)
			rbuf_appendf(out, "relayd: stopped\n");
		else
			rbuf_appendf(out, "relayd: %s\n", why);
		rbuf_appendf(out, "%-16s %-9s %-6s %9s %11s %10s %8s %6s %20s %11s\n", "BACKEND", "STATE", "PAUSED",
			     "BATCHES", "POINTS", "BYTES", "OLDEST", "DEAD", "LAST DELIVERY", "DELIVERED/S");
	}
	for (size_t i = 0; i < nnames; i++) {
		const char *name = names[i];
		int orphaned = i >= nconf;
		const struct control_backend_status *d = running == 1 && !orphaned ? control_status_find(ds, name) : NULL;
		const char *state = "-";
		if (damaged[i])
			state = "damaged";
		else if (orphaned)
			state = "orphaned";
		else if (d)
			state = d->state;
		else if (running == 0)
			state = st[i].paused ? "paused" : "stopped";
		if (!*state)
			state = "-";
		int64_t last = st[i].last_delivery_ns;
		if (d && d->last_delivery_ns > last)
			last = d->last_delivery_ns;
		/* The rate of delivered points: relayd's own figure (0 when
		 * nothing was delivered in its window); 0 where nothing
		 * delivers (relayd stopped, an orphaned queue); with --watch
		 * while relayd does not answer, the change of the delivered
		 * points since the last refresh; else unknown. */
		double rate = NAN;
		if (d) {
			rate = d->points_per_second;
			if (!(rate > 0) || !isfinite(rate) || !last || now - last > (int64_t)RATE_WINDOW_S * 1000000000)
				rate = 0;
		} else if (running == 0 || (running == 1 && orphaned)) {
			rate = 0;
		} else if (memo && memo->have && now_ms > memo->at_ms) {
			for (size_t m = 0; m < memo->n; m++)
				if (strcmp(memo->names[m], name) == 0 && st[i].delivered_points >= memo->points[m]) {
					rate = (double)(st[i].delivered_points - memo->points[m]) * 1000.0 /
					       (double)(now_ms - memo->at_ms);
					from_memo = 1;
				}
		}
		int64_t age = age_seconds(st[i].oldest_accept_ns, now);
		struct rate_limit lim = rate_limit_of(c, name, orphaned ? NULL : d);
		if (orphaned)
			memset(&lim, 0, sizeof(lim)); /* nothing delivers it */
		if (c->json) {
			json_t *o = backend_json(name, state, &st[i], age, last, rate, d);
			rate_limit_json(o, &lim);
			json_object_set_new(o, "held", held_json(held[i], nheld[i], now));
			json_array_append_new(backends, o);
		} else {
			char b[32], a[32], t[32], r[32], nm[17], sn[10];
			human_bytes(st[i].pending_bytes, b, sizeof(b));
			if (st[i].pending_batches)
				human_age(age, a, sizeof(a));
			else
				snprintf(a, sizeof(a), "-");
			fmt_time(last, t, sizeof(t));
			if (isfinite(rate))
				snprintf(r, sizeof(r), "%.1f", rate);
			else
				snprintf(r, sizeof(r), "-");
			cell(name, 16, nm, sizeof(nm));
			cell(state, 9, sn, sizeof(sn)); /* relayd's word */
			rbuf_appendf(out, "%-16s %-9s %-6s %9" PRIu64 " %11" PRIu64 " %10s %8s %6" PRIu64 " %20s %11s\n", nm,
				     sn, st[i].paused ? "yes" : "no", st[i].pending_batches, st[i].pending_points, b, a,
				     st[i].dead_batches, t, r);
			if (d && d->last_error[0]) {
				char e[200];
				cell(d->last_error, 160, e, sizeof(e));
				rbuf_appendf(out, "  %s: %s", shown(name), e);
				/* No batch to name for a queue read that fails before it
				 * knows where it reads from (state storage). */
				if (d->attempts && d->head_seq)
					rbuf_appendf(out, " (batch %" PRIu64 ", %" PRIu32 " attempt%s", d->head_seq, d->attempts,
						     d->attempts == 1 ? "" : "s");
				else if (d->attempts)
					rbuf_appendf(out, " (%" PRIu32 " attempt%s", d->attempts, d->attempts == 1 ? "" : "s");
				if (d->attempts && d->next_attempt_ms >= 0)
					rbuf_appendf(out, ", next in %.1fs)", (double)d->next_attempt_ms / 1000.0);
				else if (d->attempts)
					rbuf_appendc(out, ')');
				rbuf_appendc(out, '\n');
			}
			if (lim.points || lim.bytes) {
				char lt[120];
				rate_limit_text(&lim, lt, sizeof(lt));
				rbuf_appendf(out, "  %s: max_rate %s%s\n", shown(name), lt,
					     lim.throttled ? ", throttled: waiting for tokens" : "");
			}
			for (size_t h = 0; h < nheld[i]; h++) {
				char db[80], hb[32], ha[32];
				cell(held[i][h].db, 64, db, sizeof(db));
				human_bytes(held[i][h].bytes, hb, sizeof(hb));
				human_age(age_seconds(held[i][h].oldest_accept_ns, now), ha, sizeof(ha));
				rbuf_appendf(out,
					     "  %s: held database '%s': %" PRIu64 " %s, %" PRIu64 " %s, %s, oldest %s "
					     "(waits for the database to exist; other databases flow)\n",
					     shown(name), db, held[i][h].batches,
					     relay_plural(held[i][h].batches, "batch", "batches"), held[i][h].points,
					     relay_plural(held[i][h].points, "point", "points"), hb, ha);
			}
		}
		if (next) {
			snprintf(next->names[i], sizeof(next->names[i]), "%s", name);
			next->points[i] = st[i].delivered_points;
		}
	}
	if (c->json)
		put_json_line(out, doc);
	else if (running == 1)
		rbuf_appendf(out,
			     "DELIVERED/S: points delivered per second, relayd's average over about the last %d s\n",
			     RATE_WINDOW_S);
	else if (running == 0)
		rbuf_appendf(out, "DELIVERED/S: points delivered per second (0: relayd is stopped)\n");
	else if (from_memo)
		rbuf_appendf(out, "DELIVERED/S: points delivered per second since the last refresh (relayd does not "
				  "answer)\n");
	else
		rbuf_appendf(out, "DELIVERED/S: points delivered per second (-: unknown, relayd does not answer)\n");
	if (memo) {
		/* Replaced whole: the rates above read the old figures by name. */
		next->n = nnames;
		next->at_ms = now_ms;
		next->have = 1;
		*memo = *next;
	}
out:
	for (size_t i = 0; i < STATUS_MAX; i++)
		wal_held_free(held[i], nheld[i]);
	free(next);
	free(stored);
	free(st);
	free(ds);
	return rc ? 1 : ndamaged ? 2 : 0;
}

int cmd_status(const struct ctl *c)
{
	struct wal *w;
	if (open_queue(c, c->cmd->queue, &w))
		return 1;
	struct rbuf out = RBUF_INIT;
	int rc;
	if (c->watch <= 0) {
		rc = status_once(c, w, NULL, &out);
		flush_out(&out);
	} else {
		/* Refresh in place on a terminal; elsewhere one block per
		 * refresh. No transaction is open while we sleep. */
		struct rate_memo memo;
		memset(&memo, 0, sizeof(memo));
		int tty = isatty(STDOUT_FILENO) && !c->json;
		signal(SIGINT, on_sigint);
		signal(SIGTERM, on_sigint);
		for (;;) {
			if (tty)
				rbuf_append(&out, "\033[H\033[J", 6);
			rc = status_once(c, w, &memo, &out);
			if (!c->json && !tty)
				rbuf_appendc(&out, '\n');
			flush_out(&out);
			if (rc == 1 || interrupted)
				break; /* a damaged queue (2) is shown again at the next refresh */
			struct timespec ts = { (time_t)c->watch, (long)((c->watch - floor(c->watch)) * 1e9) };
			while (nanosleep(&ts, &ts) < 0 && errno == EINTR && !interrupted)
				;
			if (interrupted)
				break;
		}
	}
	rbuf_release(&out);
	wal_close(w);
	return rc ? 1 : 0;
}
