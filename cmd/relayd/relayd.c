/*
 * relayd: the daemon. A thin main: arguments, configuration, the user
 * switch and detaching (cmd/relayd/daemon.c), the queue, the doors (HTTP, UDP),
 * the delivery workers (relay/delivery/backends.c), signals, then the loop;
 * /health and /metrics (cmd/relayd/monitor.c).
 *
 * Shutdown order (SIGTERM/SIGINT): UDP listeners stop and hand what they
 * received to ingest; stop accepting, let writes waiting for a commit get
 * it and their answer, close connections, commit what is still queued,
 * stop the workers, close the queue. A timer bounds it; a second signal or
 * the timer exits at once, which is still safe: nothing acknowledged is
 * lost, since acknowledgement follows the commit.
 * SIGHUP reloads the configuration, SIGUSR1 reopens the log file.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "cmd/relayd/daemon.h"
#include "cmd/relayd/relayd.h"
#include "relay/base/json.h"
#include "relay/base/config.h"
#include "relay/control/control.h"
#include "relay/door/http_server.h"
#include "relay/door/ingest.h"
#include "relay/base/lineproto.h"
#include "relay/base/log.h"
#include "relay/delivery/replay.h"
#include "relay/door/udp.h"
#include "relay/net/tls.h"
#include "relay/base/util.h"
#include "wal/wal.h"

/* A clean shutdown that takes longer than this (a commit stuck on a dying
 * disk, say) is cut short: what was acknowledged is on disk already. The
 * systemd unit and the init script wait longer before their SIGKILL. */
#define SHUTDOWN_TIMEOUT_MS 30000
/* How often systemd's STATUS= line is refreshed. */
#define STATUS_INTERVAL_MS 10000
/* How often stale LMDB reader slots are freed and delivery rates sampled. */
#define MAINT_INTERVAL_MS 5000
/* Where the package installs the configuration: relayd without -c reads
 * it. The build names it (RELAY_SYSCONFDIR, as for relayctl's default). */
#ifndef RELAYD_DEFAULT_CONFIG
#define RELAYD_DEFAULT_CONFIG "/etc/relayd/relayd.yaml"
#endif

#define SWAP(a, b)                        \
	do {                              \
		__typeof__(a) swap_t_ = (a); \
		(a) = (b);                \
		(b) = swap_t_;            \
	} while (0)

static void usage(FILE *f)
{
	fprintf(f,
		"usage: relayd [-c FILE] [--daemon] [--pidfile FILE] [--allow-root]\n"
		"       relayd [-c FILE] --check-config\n"
		"\n"
		"  -c, --config FILE   configuration file (YAML); see relayd.yaml(5);\n"
		"                      default " RELAYD_DEFAULT_CONFIG "\n"
		"  -t, --check-config  check the configuration and exit\n"
		"  -d, --daemon        detach; return once listening (0) or failed (1)\n"
		"  -p, --pidfile FILE  write the pid to FILE (removed on exit)\n"
		"      --allow-root    run as root when the configuration sets no 'user'\n"
		"  -V, --version       print the version and exit\n"
		"  -h, --help          this help\n"
		"\n"
		"relayd accepts InfluxDB writes, commits them to a durable queue in\n"
		"data_dir before answering 204, and forwards them to every backend.\n"
		"Signals: TERM/INT stop cleanly, HUP reloads the configuration,\n"
		"USR1 reopens the log file.\n");
}

/*---- the systemd status line ----*/

static void notify_status(struct relayd *d, const char *extra)
{
	char line[256];
	if (!daemon_notify_enabled())
		return;
	monitor_status_line(d, line, sizeof(line));
	daemon_notify("%sSTATUS=%s", extra ? extra : "", line);
}

static void status_cb(uv_timer_t *t)
{
	notify_status(t->data, NULL);
}

static void watchdog_cb(uv_timer_t *t)
{
	(void)t;
	/* Pinged from the loop thread: a loop that stops turning stops the
	 * pings, and systemd restarts relayd. */
	daemon_notify("WATCHDOG=1");
}

/*---- upkeep and relayctl's control channel ----*/

static void maint_cb(uv_timer_t *t)
{
	struct relayd *d = t->data;
	uint64_t now = now_mono_ns();
	int cleared = 0;

	/* A relayctl killed inside a read transaction leaves its reader slot
	 * behind, and the slot pins the pages of its snapshot: freed here,
	 * the file cannot grow by everything written after it. */
	if (wal_reader_check(d->wal, &cleared) == 0 && cleared > 0)
		relay_log(RELAY_LOG_INFO, "freed %d stale reader slot%s of the queue (a reader was killed)",
		          cleared, relay_s((uint64_t)cleared));
	for (size_t i = 0; i < d->cfg.nbackends; i++) {
		int id = d->ids[i];
		/* The totals since relayd started (a worker a reload restarted
		 * included), so the window never mixes two workers' counts. */
		struct replay_stats tot;
		backends_stats(&d->backends, id, &tot);
		uint64_t pts = tot.delivered_points;
		struct rate_window *rw = &d->rate_win[id];
		/* A counter that went back (a queue id given to another
		 * backend) restarts the window. */
		if (rw->n && pts < rw->points[(rw->next + RELAYD_RATE_SAMPLES - 1) % RELAYD_RATE_SAMPLES])
			rw->n = 0;
		rw->points[rw->next] = pts;
		rw->t_ns[rw->next] = now;
		rw->next = (rw->next + 1) % RELAYD_RATE_SAMPLES;
		if (rw->n < RELAYD_RATE_SAMPLES)
			rw->n++;
		unsigned newest = (rw->next + RELAYD_RATE_SAMPLES - 1) % RELAYD_RATE_SAMPLES;
		unsigned oldest = (rw->next + RELAYD_RATE_SAMPLES - rw->n) % RELAYD_RATE_SAMPLES;
		d->rate[id] = rw->n > 1 && rw->t_ns[newest] > rw->t_ns[oldest]
		                  ? (double)(rw->points[newest] - rw->points[oldest]) * 1e9 /
		                        (double)(rw->t_ns[newest] - rw->t_ns[oldest])
		                  : 0.0;
	}
	monitor_tick(d);
}

/* The index in cfg.backends of name, or -1 with a message in reply. */
static int ctl_backend(struct relayd *d, const char *name, struct rbuf *reply)
{
	for (size_t i = 0; i < d->cfg.nbackends; i++)
		if (strcmp(d->cfg.backends[i].name, name) == 0)
			return (int)i;
	rbuf_appendf(reply, "unknown backend '%.64s' (not in relayd's configuration)", name);
	return -1;
}

static int ctl_status(void *data, const char *arg, struct rbuf *reply)
{
	struct relayd *d = data;
	struct control_status *st = xcalloc(1, sizeof(*st));
	(void)arg;

	st->pid = d->pid;
	snprintf(st->version, sizeof(st->version), "%s", RELAYD_VERSION);
	st->started_ns = d->started_ns;
	for (size_t i = 0; i < d->cfg.nbackends && i < CONTROL_MAX_BACKENDS; i++) {
		struct control_backend_status *b = &st->backends[st->nbackends++];
		const struct replay_worker *w = backends_worker(&d->backends, d->ids[i]);
		snprintf(b->name, sizeof(b->name), "%s", d->cfg.backends[i].name);
		b->next_attempt_ms = -1;
		if (!w) {
			snprintf(b->state, sizeof(b->state), "starting");
			continue;
		}
		struct replay_view v;
		replay_worker_view(w, &v);
		b->head_seq = v.head_seq;
		b->attempts = v.attempts;
		b->next_attempt_ms = v.next_attempt_ms;
		snprintf(b->state, sizeof(b->state), "%s", v.paused ? "paused" : replay_health_name(v.health));
		snprintf(b->last_error, sizeof(b->last_error), "%s", v.last_error);
		b->last_delivery_ns = v.last_delivery_ns;
		b->delivered_points = v.stats.delivered_points;
		b->points_per_second = d->rate[d->ids[i]];
		b->max_rate = v.max_rate;
		b->max_rate_bytes = v.max_rate_bytes;
		b->rate_burst_ms = v.rate_burst_ms;
		b->throttled = v.throttled;
		struct replay_stats all;
		backends_stats(&d->backends, d->ids[i], &all); /* since relayd started, across reloads */
		b->throttled_seconds = (double)all.throttled_ms / 1000.0;
	}
	control_status_format(st, reply);
	free(st);
	return 0;
}

/* relayctl changed a backend's queue or its pause flag. */
static int ctl_notify(void *data, const char *arg, struct rbuf *reply)
{
	struct relayd *d = data;
	int i = ctl_backend(d, arg, reply);
	if (i < 0)
		return -1;
	struct replay_worker *w = backends_worker_mut(&d->backends, d->ids[i]);
	if (w)
		replay_refresh(w);
	return 0;
}

static int ctl_retry(void *data, const char *arg, struct rbuf *reply)
{
	struct relayd *d = data;
	int i = ctl_backend(d, arg, reply);
	if (i < 0)
		return -1;
	struct replay_worker *w = backends_worker_mut(&d->backends, d->ids[i]);
	if (!w || replay_retry_now(w) != 0) {
		rbuf_appendf(reply, "backend '%s' is not waiting to retry", arg);
		return -1;
	}
	return 0;
}

/*
 * drain on|off|status (relayctl drain, undrain): while draining, /health
 * answers 503 "draining" so that a load balancer takes this relay out of
 * its write pool; writes that still come are accepted and delivery goes
 * on. Memory only: a restart ends it. Each answers the drain's state and
 * what is left to deliver (monitor_drain_report), with relayd's pid.
 */
static int ctl_drain(void *data, const char *arg, struct rbuf *reply)
{
	struct relayd *d = data;
	int on = strcmp(arg, "on") == 0, off = strcmp(arg, "off") == 0;
	if (!on && !off && strcmp(arg, "status") != 0) {
		rbuf_appendf(reply, "drain wants on, off or status, not '%.64s'", arg);
		return -1;
	}
	if (on && !d->draining) {
		d->draining = 1;
		d->drain_since_ns = now_realtime_ns();
		d->drain_writes_at = d->http ? http_server_stats(d->http)->writes_ok : 0;
		relay_log(RELAY_LOG_NOTICE, "draining for maintenance (relayctl drain): /health answers 503 \"draining\"; "
		          "writes still accepted are delivered as ever");
	} else if (off && d->draining) {
		d->draining = 0;
		relay_log(RELAY_LOG_NOTICE, "drain cancelled (relayctl undrain): /health answers for writes again");
	}
	monitor_drain_report(d, reply);
	if (on || off)
		notify_status(d, NULL);
	return 0;
}

static const struct control_command control_commands[] = {
	{ "status", 0, ctl_status },
	{ "notify", 1, ctl_notify },
	{ "retry", 1, ctl_retry },
	{ "drain", 1, ctl_drain },
};

/* After the queue is open (its lock held: a second relayd was refused, so
 * a live socket here is not another relayd's). */
static int start_control(struct relayd *d)
{
	char path[128];
	int rc = control_socket_path(d->cfg.data_dir, path, sizeof(path));
	if (rc == 0)
		rc = control_server_start(&d->control, d->loop, path, control_commands,
		                          RELAY_ARRAY_SIZE(control_commands), d);
	if (rc) {
		relay_log(RELAY_LOG_ERROR, "cannot listen on the control socket '%s/%s': %s: refusing to start",
		          d->cfg.data_dir, CONTROL_SOCKET_NAME, uv_strerror(rc));
		return -1;
	}
	d->control_on = 1;
	return 0;
}

/*---- shutdown ----*/

static void exit_now(struct relayd *d, const char *why)
{
	relay_log(RELAY_LOG_WARN, "%s: exiting now (acknowledged writes are on disk)", why);
	if (d->pidfile)
		daemon_pidfile_remove(d->pidfile, d->pid);
	_exit(1);
}

static void on_backends_closed(struct backends *bs)
{
	struct relayd *d = relay_container_of(bs, struct relayd, backends);
	/* Everything is stopped: closing the last handles ends the loop. */
	uv_close((uv_handle_t *)&d->sigterm, NULL);
	uv_close((uv_handle_t *)&d->sigint, NULL);
	uv_close((uv_handle_t *)&d->sighup, NULL);
	uv_close((uv_handle_t *)&d->sigusr1, NULL);
	uv_close((uv_handle_t *)&d->shutdown_timer, NULL);
	uv_close((uv_handle_t *)&d->status_timer, NULL);
	uv_close((uv_handle_t *)&d->watchdog_timer, NULL);
	uv_close((uv_handle_t *)&d->maint_timer, NULL);
}

static void on_ingest_closed(struct ingest *ing)
{
	struct relayd *d = relay_container_of(ing, struct relayd, ing);
	/* Writers are answered; now stop delivering. A POST in flight is
	 * abandoned: its batches stay queued and go again after a restart. */
	backends_close(&d->backends, on_backends_closed);
}

static void on_commit(struct ingest *ing, void *arg)
{
	struct relayd *d = arg;
	(void)ing;
	backends_notify(&d->backends);
}

static void on_http_closed(void *arg)
{
	struct relayd *d = arg;
	d->http = NULL;
	/* Every connection is gone; commits already handed to the pool
	 * finish before ingest closes. */
	ingest_close(&d->ing, on_ingest_closed);
}

static void on_udp_closed(void *arg)
{
	struct relayd *d = arg;
	d->udp = NULL;
}

static void shutdown_timeout_cb(uv_timer_t *t)
{
	char why[64];
	snprintf(why, sizeof(why), "shutdown did not finish within %d s", SHUTDOWN_TIMEOUT_MS / 1000);
	exit_now(t->data, why);
}

static void on_stop_signal(uv_signal_t *h, int signum)
{
	struct relayd *d = h->data;
	if (d->stopping) {
		char why[64];
		snprintf(why, sizeof(why), "second signal %d", signum);
		exit_now(d, why);
	}
	d->stopping = 1;
	relay_log(RELAY_LOG_NOTICE, "signal %d: shutting down", signum);
	notify_status(d, "STOPPING=1\n");
	/* relayctl finds nobody from now on, and says relayd is stopped:
	 * what it changes takes effect at the next start. */
	if (d->control_on) {
		d->control_on = 0;
		control_server_stop(&d->control, NULL);
	}
	uv_timer_start(&d->shutdown_timer, shutdown_timeout_cb, SHUTDOWN_TIMEOUT_MS, 0);
	/* UDP first: stop receiving and hand the pending groups to ingest
	 * now, before ingest closes (after the HTTP door), so that every
	 * datagram received is committed. */
	if (d->udp)
		udp_close(d->udp, on_udp_closed, d);
	if (d->http)
		http_server_close(d->http, on_http_closed, d);
	else
		on_http_closed(d);
}

/*---- reload ----*/

static void set_log_level(const struct relay_config *cfg)
{
	enum relay_log_level lvl;
	if (relay_log_level_parse(cfg->log_level, &lvl) == 0)
		relay_log_set_level(lvl);
	relay_log_set_format((enum relay_log_format)cfg->log_format);
}

/* Tell ingest which backends a new batch goes to, and their names and
 * limits for its messages. Loop thread: ingest reads these there. */
static void update_ingest(struct relayd *d)
{
	uint64_t route = 0;
	for (int id = 0; id < WAL_MAX_BACKENDS; id++)
		d->ing.names[id] = d->backends.names[id];
	for (size_t i = 0; i < d->cfg.nbackends; i++) {
		route |= 1ULL << d->ids[i];
		d->ing.max_size[d->ids[i]] = d->cfg.backends[i].max_size_text;
		d->ing.max_age[d->ids[i]] = d->cfg.backends[i].max_age_text;
	}
	d->ing.route = route;
}

static int str_differs(const char *a, const char *b)
{
	return !a != !b || (a && strcmp(a, b) != 0);
}

static void needs_restart(const char *key, const char *now, const char *wanted)
{
	relay_log(RELAY_LOG_WARN, "reload: '%s' changed from '%s' to '%s': this needs a restart; "
		  "'%s' stays in force until then", key, now, wanted, now);
}

/*
 * What cannot change while relayd runs (the queue's directory and map,
 * the sockets it listens on, the user it became, the commit group size
 * ingest allocated for) is put back from the configuration in force into
 * next, with a warning for each one that differs. Afterwards next holds
 * only what may change, and every allocation still has one owner.
 */
static void keep_restart_only(struct relayd *d, struct relay_config *next)
{
	struct relay_config *cur = &d->cfg;
	char a[32], b[32];

	if (str_differs(cur->data_dir, next->data_dir))
		needs_restart("data_dir", cur->data_dir, next->data_dir);
	SWAP(cur->data_dir, next->data_dir);

	if (str_differs(cur->listen_http, next->listen_http))
		needs_restart("listen.http", cur->listen_http ? cur->listen_http : "off",
		              next->listen_http ? next->listen_http : "off");
	SWAP(cur->listen_http, next->listen_http);
	SWAP(cur->listen_http_host, next->listen_http_host);
	SWAP(cur->listen_http_port, next->listen_http_port);
	if (str_differs(cur->listen_https, next->listen_https))
		needs_restart("listen.https", cur->listen_https ? cur->listen_https : "(none)",
		              next->listen_https ? next->listen_https : "(none)");
	SWAP(cur->listen_https, next->listen_https);
	SWAP(cur->listen_https_host, next->listen_https_host);
	SWAP(cur->listen_https_port, next->listen_https_port);

	/* UDP listeners keep pointers to their entries. */
	int udp_same = cur->nudp == next->nudp;
	for (size_t i = 0; udp_same && i < cur->nudp; i++)
		udp_same = config_udp_equal(&cur->udp[i], &next->udp[i]);
	if (!udp_same) {
		snprintf(a, sizeof(a), "%zu listener%s", cur->nudp, relay_s(cur->nudp));
		snprintf(b, sizeof(b), "%zu listener%s", next->nudp, relay_s(next->nudp));
		needs_restart("listen.udp", a, b);
	}
	SWAP(cur->udp, next->udp);
	SWAP(cur->nudp, next->nudp);

	if (str_differs(cur->user, next->user))
		needs_restart("user", cur->user ? cur->user : "(none)", next->user ? next->user : "(none)");
	SWAP(cur->user, next->user);

	if (cur->queue_max_commit_batches != next->queue_max_commit_batches) {
		snprintf(a, sizeof(a), "%" PRIu32, cur->queue_max_commit_batches);
		snprintf(b, sizeof(b), "%" PRIu32, next->queue_max_commit_batches);
		needs_restart("queue.max_commit_batches", a, b);
	}
	SWAP(cur->queue_max_commit_batches, next->queue_max_commit_batches);

	/* The map is sized once, at open. Only a map_size the user set and
	 * changed is a setting that waits for a restart; a derived one has
	 * headroom for more backends (config_map_size), and is worth a word
	 * only when the new limits truly need more than the map has. */
	if (cur->queue_map_bytes != next->queue_map_bytes) {
		snprintf(a, sizeof(a), "%" PRIu64 " MiB", d->map_size >> 20);
		if (next->queue_map_bytes)
			snprintf(b, sizeof(b), "%" PRIu64 " MiB", next->queue_map_bytes >> 20);
		else
			snprintf(b, sizeof(b), "0 (derived: %" PRIu64 " MiB)", config_map_size(next) >> 20);
		needs_restart("queue.map_size", a, b);
	} else if (!next->queue_map_bytes && config_map_need(next) > d->map_size) {
		relay_log(RELAY_LOG_WARN, "reload: the queues' limits now need a map of %" PRIu64 " MiB (twice the "
		          "backends' max_size plus 64 MiB) but the queue's map is %" PRIu64 " MiB until a restart: "
		          "writes may get 503 (queue storage is full) before the queues reach their max_size; "
		          "restart relayd to map more", config_map_need(next) >> 20, d->map_size >> 20);
	}
	SWAP(cur->queue_map_bytes, next->queue_map_bytes);
}

static void reload_refused(struct relayd *d, struct relay_config *next, const char *why)
{
	d->reload_errors++;
	relay_log(RELAY_LOG_ERROR, "reload refused: %s; the configuration in force stays", why);
	config_release(next);
	free(next);
	notify_status(d, "READY=1\n");
}

/*
 * SIGHUP: read the configuration file again. Everything that can fail is
 * done first (parse, open the queues of new backends; a log output that
 * cannot be opened keeps the one in force instead); any failure leaves
 * the configuration in force as it was. Then, with nothing left to fail,
 * the new contents are swapped into d->cfg (http_server sees the new
 * limits, timeouts and credentials from its next callback on), and the
 * workers follow (relay/delivery/backends.c).
 */
static void reload(struct relayd *d)
{
	struct relay_config *next = xcalloc(1, sizeof(*next));
	int ids[RELAY_MAX_BACKENDS];
	char err[1024];

	daemon_notify("RELOADING=1\nMONOTONIC_USEC=%" PRIu64, now_mono_ns() / 1000);
	relay_log(RELAY_LOG_INFO, "reloading the configuration from '%s'", d->config_path);
	if (config_load(d->config_path, next, err, sizeof(err)) < 0) {
		reload_refused(d, next, err);
		return;
	}
	/* The TLS listener's certificate, key and client CA are read again
	 * (a rotation is a file replaced, then SIGHUP): the new context is
	 * made before anything changes, and first of what opens things, so a
	 * bad file refuses the reload with nothing to undo, and the
	 * certificate in force keeps being served. Only for a listener that
	 * runs and stays (listen.https itself needs a restart). */
	struct net_tls_ctx *tls = NULL;
	if (d->http && d->cfg.listen_https && next->listen_https &&
	    http_server_tls_ctx_new(next, &tls, err, sizeof(err)) < 0) {
		reload_refused(d, next, err);
		return;
	}
	if (backends_open(&d->backends, next, ids, err, sizeof(err)) != 0) {
		net_tls_ctx_unref(tls);
		reload_refused(d, next, err);
		return;
	}
	/* The list is resolved again: an output before the one in force may
	 * have come (a syslog daemon started) or the one in force left the
	 * list. The output in force is kept as it is, not reopened (that is
	 * SIGUSR1's), and when nothing in the list can be used it stays, with
	 * a warning: the log is no reason to refuse a change of backends. */
	char chosen[sizeof(d->log_chosen)], passed[1024];
	if (relay_log_resolve(next->log_output, d->log_chosen, chosen, sizeof(chosen), passed, sizeof(passed), err,
	                      sizeof(err)) < 0)
		relay_log(RELAY_LOG_WARN, "reload: %s; logging on to %s", err, d->log_chosen);
	if (strcmp(chosen, d->log_chosen) != 0)
		relay_log(RELAY_LOG_NOTICE, "reload: logging to %s now (was %s)%s%s", chosen, d->log_chosen,
		          *passed ? "; passed over: " : "", passed);
	snprintf(d->log_chosen, sizeof(d->log_chosen), "%s", chosen);

	/* From here on nothing fails. */
	keep_restart_only(d, next);
	SWAP(d->cfg, *next);
	memcpy(d->ids, ids, sizeof(ids));
	set_log_level(&d->cfg);
	backends_apply(&d->backends, &d->cfg, d->ids);
	update_ingest(d);
	/* next now holds the old contents; workers that keep running with
	 * unchanged settings still point into its backends. */
	backends_retire(&d->backends, next);
	/* After the swap: the server reads the tls: section of d->cfg (the
	 * new one now) for its messages; connections open keep the old
	 * context until they close. */
	if (tls)
		http_server_set_tls(d->http, tls);
	d->reloads++;
	relay_log(RELAY_LOG_NOTICE, "configuration reloaded from '%s' (%zu backend%s)", d->config_path,
		  d->cfg.nbackends, relay_s(d->cfg.nbackends));
	if (d->http)
		http_server_probe_version(d->http); /* the first query backend may be another now */
	notify_status(d, "READY=1\n");
}

static void on_sighup(uv_signal_t *h, int signum)
{
	struct relayd *d = h->data;
	(void)signum;
	if (d->stopping) {
		relay_log(RELAY_LOG_NOTICE, "SIGHUP while shutting down: not reloading");
		return;
	}
	reload(d);
}

static void on_sigusr1(uv_signal_t *h, int signum)
{
	struct relayd *d = h->data;
	char err[512];
	(void)signum;
	if (d->log_chosen[0] != '/') {
		relay_log(RELAY_LOG_DEBUG, "SIGUSR1: the log goes to %s, no file to reopen", d->log_chosen);
		return;
	}
	/* logrotate moved the file away: lines go on into the moved file
	 * until this reopens the name. */
	if (relay_log_reopen(err, sizeof(err)) < 0)
		relay_log(RELAY_LOG_ERROR, "%s; logging on into the old file", err);
	else
		relay_log(RELAY_LOG_NOTICE, "log file '%s' reopened", d->log_chosen);
}

/*---- startup ----*/

/*
 * What an operator must hear about log_output before relayd starts (in
 * --check-config, and on stderr before --daemon detaches): that no output
 * of the list is available on this host, with the fix. Checked without
 * opening anything (relay_log_output_check). why gets the warning, or ""
 * when there is none; returns the output that will be used as far as can
 * be told now ("stderr" when none is available and none is a file).
 */
static const char *log_output_warning(const struct relay_config *cfg, char *why, size_t whylen)
{
	static char first[4096];
	char reasons[1536] = "", reason[512], out[4096];
	const char *p = cfg->log_output;
	size_t rl = 0, n = 0;
	int file = 0;

	why[0] = '\0';
	while (p && *p) {
		size_t len = strcspn(p, "\n");
		snprintf(out, sizeof(out), "%.*s", (int)len, p);
		p += len + (p[len] == '\n');
		n++;
		file |= out[0] == '/';
		if (relay_log_output_check(out, reason, sizeof(reason))) {
			snprintf(first, sizeof(first), "%s", out);
			return first;
		}
		int w = snprintf(reasons + rl, sizeof(reasons) - rl, "%s%s: %s", rl ? "; " : "", out, reason);
		if (w > 0)
			rl = rl + (size_t)w < sizeof(reasons) ? rl + (size_t)w : sizeof(reasons) - 1;
	}
	if (n == 1 && strcmp(cfg->log_output, "syslog") == 0)
		snprintf(why, whylen, "log_output is syslog but %s: its lines would be lost, so relayd logs to stderr; "
		         "set log_output to a file (/var/log/relayd/relayd.log), or to journal under systemd, or to a "
		         "list such as [journal, syslog, /var/log/relayd/relayd.log]", reason);
	else if (file)
		snprintf(why, whylen, "no log_output can be used (%s): relayd will refuse to start", reasons);
	else
		snprintf(why, whylen, "no log_output can be used (%s), so relayd logs to stderr; add a file to the "
		         "list (/var/log/relayd/relayd.log)", reasons);
	snprintf(first, sizeof(first), "%s", file ? "" : "stderr");
	return first;
}

static int open_queue(struct relayd *d)
{
	char err[512];
	uint64_t as_limit = config_as_limit();
	char why[600];
	/* Under an address-space limit (ulimit -v, LimitAS=) the map must
	 * fit; config_map_size keeps the derived headroom to a quarter of it,
	 * but what the limits need cannot shrink: say so plainly rather than
	 * LMDB's "Cannot allocate memory". */
	if (!config_map_fits(&d->cfg, as_limit, why, sizeof(why))) {
		relay_log(RELAY_LOG_ERROR, "cannot open the queue in '%s': %s; refusing to start", d->cfg.data_dir, why);
		return -1;
	}
	struct wal_options o = { .map_size = config_map_size_under(&d->cfg, as_limit), .flags = 0 };
	d->map_size = o.map_size;
	int rc = wal_open_why(d->cfg.data_dir, &o, &d->wal, why, sizeof(why));
	uint64_t need = config_map_need(&d->cfg);
	if (rc == -ENOMEM && !d->cfg.queue_map_bytes && o.map_size > need) {
		/* The headroom could not be reserved (a limit that getrlimit
		 * does not show, overcommit refusing, a fragmented 32-bit
		 * space): the limits need less, and a reload that adds backends
		 * beyond that is warned about (keep_restart_only). */
		relay_log(RELAY_LOG_WARN,
		          "cannot reserve a map of %" PRIu64 " MiB for the queue (%s): mapping %" PRIu64
		          " MiB, what the backends' max_size needs; a reload adding backends may need a restart",
		          o.map_size >> 20, strerror(ENOMEM), need >> 20);
		o.map_size = need;
		d->map_size = need;
		rc = wal_open_why(d->cfg.data_dir, &o, &d->wal, why, sizeof(why));
	}
	if (rc == -ENOMEM) {
		char lim[64] = "none";
		if (as_limit != UINT64_MAX)
			snprintf(lim, sizeof(lim), "%" PRIu64 " MiB", as_limit >> 20);
		relay_log(RELAY_LOG_ERROR,
		          "cannot open the queue in '%s': cannot map %" PRIu64 " MiB of address space (%s; the "
		          "address-space limit, RLIMIT_AS: ulimit -v or systemd's LimitAS=, is %s): raise the limit, or "
		          "lower %s; refusing to start",
		          d->cfg.data_dir, o.map_size >> 20, strerror(ENOMEM), lim,
		          d->cfg.queue_map_bytes ? "queue.map_size" : "the backends' max_size");
		return -1;
	}
	/* Which version: LMDB's data format (wal_open_why says "an LMDB file
	 * of data version N") or relayd's own format record. */
	int lmdb_version = rc == WAL_EVERSION && strncmp(why, "it is an LMDB file", 18) == 0;
	if (rc == WAL_EDAMAGED || lmdb_version || rc == WAL_ECORRUPT) {
		/* Refused before LMDB touched a page (a file cut short would be
		 * SIGBUS there): say which file, what is wrong and what to do. */
		relay_log(RELAY_LOG_ERROR,
		          "the queue file '%s/data.mdb' %s: %s; refusing to start. 'relayctl salvage DEST' copies every "
		          "batch still readable into a new store; then move the file aside (mv '%s/data.mdb' "
		          "'%s/data.mdb.damaged') and put the salvaged one in its place, or start without it for an empty "
		          "queue",
		          d->cfg.data_dir, rc == WAL_EVERSION ? "cannot be read" : "is damaged",
		          rc == WAL_ECORRUPT ? "its format record, next sequence or databases do not decode" : why,
		          d->cfg.data_dir, d->cfg.data_dir);
		return -1;
	}
	if (rc == WAL_EVERSION) {
		/* The queue library's words say which format and what to do. */
		if (*why)
			relay_log(RELAY_LOG_ERROR, "the queue in '%s': %s; refusing to start", d->cfg.data_dir, why);
		else
			relay_log(RELAY_LOG_ERROR,
			          "the queue in '%s' was written by an incompatible relayd version (this one reads "
			          "format %d): refusing to start",
			          d->cfg.data_dir, WAL_FORMAT_VERSION);
		return -1;
	}
	if (rc == WAL_ELOCKED) {
		char path[4096], pid[32] = "";
		snprintf(path, sizeof(path), "%s/relayd.lock", d->cfg.data_dir);
		FILE *f = fopen(path, "r");
		if (f) {
			if (!fgets(pid, sizeof(pid), f))
				pid[0] = '\0';
			fclose(f);
			pid[strcspn(pid, "\n")] = '\0';
		}
		relay_log(RELAY_LOG_ERROR, "data directory '%s' is locked by another relayd%s%s%s: refusing to start",
			  d->cfg.data_dir, *pid ? " (pid " : "", pid, *pid ? ")" : "");
		return -1;
	}
	if (rc) {
		relay_log(RELAY_LOG_ERROR, "cannot open queue in '%s': %s", d->cfg.data_dir, wal_strerror(rc));
		return -1;
	}
	uint64_t upgraded;
	unsigned from = wal_upgraded_from(d->wal, &upgraded);
	/* From format 1 every record gets its checksum; from 2 only the format
	 * record changes (its records are format-3 records of kind lines). */
	if (from)
		relay_log(RELAY_LOG_NOTICE, "upgraded the queue in '%s' from format %u to %d: %" PRIu64 " record%s rewritten%s "
		          "(relayctl and relayd of format %u cannot read it any more)",
		          d->cfg.data_dir, from, WAL_FORMAT_VERSION, upgraded, relay_s(upgraded),
		          upgraded ? " with checksums" : ", the format record changed", from);
	if ((rc = backends_init(&d->backends, d->loop, d->wal)) != 0) {
		relay_log(RELAY_LOG_ERROR, "cannot start delivery: %s", uv_strerror(rc));
		return -1;
	}
	if (backends_open(&d->backends, &d->cfg, d->ids, err, sizeof(err)) != 0) {
		relay_log(RELAY_LOG_ERROR, "%s", err);
		return -1;
	}
	if ((rc = ingest_init(&d->ing, d->loop, d->wal, 0, d->cfg.queue_max_commit_batches))) {
		relay_log(RELAY_LOG_ERROR, "cannot start ingest: %s", uv_strerror(rc));
		return -1;
	}
	update_ingest(d);
	return 0;
}

static void init_handles(struct relayd *d)
{
	uv_signal_t *sigs[] = { &d->sigterm, &d->sigint, &d->sighup, &d->sigusr1 };
	uv_timer_t *timers[] = { &d->shutdown_timer, &d->status_timer, &d->watchdog_timer, &d->maint_timer };
	for (size_t i = 0; i < RELAY_ARRAY_SIZE(sigs); i++) {
		uv_signal_init(d->loop, sigs[i]);
		sigs[i]->data = d;
	}
	for (size_t i = 0; i < RELAY_ARRAY_SIZE(timers); i++) {
		uv_timer_init(d->loop, timers[i]);
		timers[i]->data = d;
	}
	uv_signal_start(&d->sigterm, on_stop_signal, SIGTERM);
	uv_signal_start(&d->sigint, on_stop_signal, SIGINT);
	uv_signal_start(&d->sighup, on_sighup, SIGHUP);
	uv_signal_start(&d->sigusr1, on_sigusr1, SIGUSR1);
	if (daemon_notify_enabled())
		uv_timer_start(&d->status_timer, status_cb, STATUS_INTERVAL_MS, STATUS_INTERVAL_MS);
	uv_timer_start(&d->maint_timer, maint_cb, MAINT_INTERVAL_MS, MAINT_INTERVAL_MS);
	uint64_t wd = daemon_watchdog_usec();
	if (wd) {
		/* Twice per interval, as sd_watchdog_enabled(3) advises. */
		uint64_t ms = wd / 2000 ? wd / 2000 : 1;
		uv_timer_start(&d->watchdog_timer, watchdog_cb, 0, ms);
	}
}

static void release(struct relayd *d)
{
	config_release(&d->cfg);
	free(d->start_dir);
	free(d->config_path);
	free(d->pidfile);
}

enum { OPT_ALLOW_ROOT = 0x100 };

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "check-config", no_argument, NULL, 't' },
		{ "daemon", no_argument, NULL, 'd' },
		{ "pidfile", required_argument, NULL, 'p' },
		{ "allow-root", no_argument, NULL, OPT_ALLOW_ROOT },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *config_path = NULL, *pidfile = NULL;
	int check_only = 0, detach = 0, allow_root = 0, ch;
	char err[1024], cwd[PATH_MAX];
	static struct relayd d;

	while ((ch = getopt_long(argc, argv, "c:tdp:Vh", opts, NULL)) != -1) {
		switch (ch) {
		case 'c': config_path = optarg; break;
		case 't': check_only = 1; break;
		case 'd': detach = 1; break;
		case 'p': pidfile = optarg; break;
		case OPT_ALLOW_ROOT: allow_root = 1; break;
		case 'V': printf("relayd %s\n", RELAYD_VERSION); return 0;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (!config_path)
		config_path = RELAYD_DEFAULT_CONFIG;
	if (!*config_path || optind != argc || (pidfile && !*pidfile)) {
		usage(stderr);
		return 2;
	}
	if (config_load(config_path, &d.cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	char exposed_why[PATH_MAX + 200], log_why[2048];
	int exposed = config_secrets_exposed(&d.cfg, exposed_why, sizeof(exposed_why));
	const char *log_first = log_output_warning(&d.cfg, log_why, sizeof(log_why));
	if (check_only) {
		if (exposed)
			fprintf(stderr, "warning: %s\n", exposed_why);
		if (*log_why)
			fprintf(stderr, "warning: %s\n", log_why);
		uint64_t ceiling = (config_memory_ceiling(&d.cfg) + (1 << 20) - 1) >> 20;
		printf("%s: ok (%zu backend%s)\nmemory ceiling: %" PRIu64 " MiB (systemd: MemoryMax=%" PRIu64 "M)\n",
		       config_path, d.cfg.nbackends, relay_s(d.cfg.nbackends), ceiling, ceiling);
		query_targets_describe(&d.cfg, stdout);
		config_release(&d.cfg);
		return 0;
	}
	/* The paths of the command line are made absolute now: the daemon
	 * leaves for "/", and a reload reads the file again from there. The
	 * file's own relative paths mean its directory (config_load). */
	d.start_dir = xstrdup(getcwd(cwd, sizeof(cwd)) ? cwd : "/");
	d.config_path = relay_path_join(d.start_dir, config_path);
	d.pidfile = pidfile ? relay_path_join(d.start_dir, pidfile) : NULL;
	/* Before anything else can fail or --daemon detaches: on the
	 * terminal (or the init script's capture), where it is seen. */
	if (*log_why)
		relay_log(RELAY_LOG_WARN, "%s", log_why);
	signal(SIGPIPE, SIG_IGN);
	/* A reload or a logrotate signal that arrives while relayd starts
	 * must not kill it (their default action); the loop's handlers take
	 * over once it runs. */
	signal(SIGHUP, SIG_IGN);
	signal(SIGUSR1, SIG_IGN);

	/* Before anything is opened, so that the queue, the log file and the
	 * pidfile belong to the user relayd runs as. */
	if (daemon_switch_user(d.cfg.user, allow_root, err, sizeof(err)) < 0) {
		relay_log(RELAY_LOG_ERROR, "%s", err);
		release(&d);
		return 1;
	}
	if (detach) {
		if (strcmp(log_first, "stderr") == 0)
			relay_log(RELAY_LOG_WARN, "the log would go to stderr, which --daemon points at /dev/null: "
				  "set log_output to syslog or a file to keep the log");
		/* Before the loop and its thread pool exist: fork copies only
		 * the calling thread. */
		if (daemon_detach(err, sizeof(err)) < 0) {
			relay_log(RELAY_LOG_ERROR, "%s", err);
			release(&d);
			return 1;
		}
	}
	d.pid = getpid();
	char passed[1024];
	if (relay_log_open_first(d.cfg.log_output, d.log_chosen, sizeof(d.log_chosen), passed, sizeof(passed), err,
	                         sizeof(err)) < 0) {
		relay_log(RELAY_LOG_ERROR, "%s: refusing to start", err);
		release(&d);
		return 1;
	}
	set_log_level(&d.cfg);
	relay_log(RELAY_LOG_INFO, "logging to %s%s%s%s", d.log_chosen, *passed ? " (passed over: " : "", passed,
	          *passed ? ")" : "");
	if (exposed)
		relay_log(RELAY_LOG_WARN, "%s", exposed_why);

	/* The thread pool runs the group commit and, per backend, a queue
	 * read or dead-letter, an ack and a prefetch of the next round (each
	 * at most one at a time) besides name lookups: size it so that none
	 * waits for another. Must be set before the pool's first use; backends
	 * added by a reload share it. */
	char pool[16];
	snprintf(pool, sizeof(pool), "%zu", 3 * d.cfg.nbackends + 4);
	setenv("UV_THREADPOOL_SIZE", pool, 0);
	d.loop = uv_default_loop();
	if (open_queue(&d) < 0)
		return 1;
	/* Listeners after the queue: a datagram can be committed as soon as
	 * it is read. A port that cannot be bound stops the start. */
	int rc = udp_start(d.loop, &d.cfg, &d.ing, &d.udp, err, sizeof(err));
	if (rc) {
		relay_log(RELAY_LOG_ERROR, "%s: refusing to start", err);
		wal_close(d.wal);
		return 1;
	}
	rc = http_server_start(d.loop, &d.cfg, &d.ing, &d.http, err, sizeof(err));
	if (rc) {
		relay_log(RELAY_LOG_ERROR, "%s", err);
		wal_close(d.wal);
		return 1;
	}
	monitor_attach(&d);
	d.qsrc = (struct query_targets_src){ &d.cfg, d.ids, &d.backends, d.wal };
	http_server_set_query_targets(d.http, query_targets, &d.qsrc);
	http_server_probe_version(d.http);
	backends_apply(&d.backends, &d.cfg, d.ids);
	d.ing.on_commit = on_commit;
	d.ing.on_commit_arg = &d;
	init_handles(&d);
	d.started_ns = now_realtime_ns();
	if (start_control(&d) < 0)
		return 1;
	/* After the data directory's lock is held: a second relayd on the
	 * same directory has been refused by now, so this pidfile is ours. */
	if (d.pidfile && daemon_pidfile_write(d.pidfile, d.pid, err, sizeof(err)) < 0) {
		relay_log(RELAY_LOG_ERROR, "%s", err);
		return 1;
	}
	char listeners[600];
	snprintf(listeners, sizeof(listeners), "%s%s%s%s%s", d.cfg.listen_http ? "http://" : "",
		 d.cfg.listen_http ? d.cfg.listen_http : "", d.cfg.listen_http && d.cfg.listen_https ? " and " : "",
		 d.cfg.listen_https ? "https://" : "", d.cfg.listen_https ? d.cfg.listen_https : "");
	relay_log(RELAY_LOG_NOTICE, "relayd %s listening on %s (queue in '%s', %zu backend%s)", RELAYD_VERSION,
		  listeners, d.cfg.data_dir, d.cfg.nbackends, relay_s(d.cfg.nbackends));
	if (d.cfg.listen_https && d.cfg.tls_client_ca_file)
		relay_log(RELAY_LOG_NOTICE, "https clients must present a certificate signed by a CA in '%s'%s",
			  d.cfg.tls_client_ca_file,
			  d.cfg.tls_client_cert_auth && d.cfg.auth_enabled ? " (it stands in for credentials)" : "");
	for (size_t i = 0; i < d.cfg.nudp; i++)
		relay_log(RELAY_LOG_NOTICE, "listening on udp://%s for database '%s'%s%s%s (precision %s)",
			  d.cfg.udp[i].address, d.cfg.udp[i].db, d.cfg.udp[i].rp ? ", retention policy '" : "",
			  d.cfg.udp[i].rp ? d.cfg.udp[i].rp : "", d.cfg.udp[i].rp ? "'" : "",
			  lp_precision_name((enum lp_precision)d.cfg.udp[i].precision));
	daemon_ready();
	notify_status(&d, "READY=1\n");

	uv_run(d.loop, UV_RUN_DEFAULT);

	const struct ingest_stats *is = &d.ing.stats;
	relay_log(RELAY_LOG_NOTICE, "stopped: %" PRIu64 " %s committed in %" PRIu64 " commit%s (largest group %" PRIu64 ")",
		  is->batches_committed, relay_plural(is->batches_committed, "batch", "batches"), is->commits,
		  relay_s(is->commits), is->max_group);
	uv_loop_close(d.loop);
	wal_close(d.wal);
	if (d.pidfile)
		daemon_pidfile_remove(d.pidfile, d.pid);
	release(&d);
	relay_log_close();
	return 0;
}
