/*
 * relayd: the daemon. A thin main: arguments, configuration, the queue,
 * the front door and the signal handlers, then the loop. Shutdown order
 * (SIGTERM/SIGINT): stop accepting, let writes waiting for a commit get
 * it and their answer, close connections, close the queue. A second signal
 * exits at once, which is still safe: nothing acknowledged is lost, since
 * acknowledgement follows the commit.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "relay/config.h"
#include "relay/http_server.h"
#include "relay/ingest.h"
#include "relay/log.h"
#include "relay/replay.h"
#include "relay/util.h"
#include "wal/wal.h"

struct relayd {
	uv_loop_t *loop;
	struct relay_config cfg;
	struct wal *wal;
	struct ingest ing;
	struct http_server *http;
	uv_signal_t sigterm, sigint;
	int stopping;
	int backend_ids[RELAY_MAX_BACKENDS];
	struct replay_worker *workers; /* one per configured backend */
	size_t workers_running;
};

static void usage(FILE *f)
{
	fprintf(f,
		"usage: relayd -c FILE [--check-config]\n"
		"\n"
		"  -c, --config FILE   configuration file (YAML); see relayd.yaml(5)\n"
		"  -t, --check-config  check the configuration and exit\n"
		"  -V, --version       print the version and exit\n"
		"  -h, --help          this help\n"
		"\n"
		"relayd accepts InfluxDB writes, commits them to a durable queue in\n"
		"data_dir before answering 204, and forwards them to every backend.\n");
}

static void on_worker_stopped(struct replay_worker *w)
{
	struct relayd *d = w->http.loop->data;
	if (--d->workers_running == 0) {
		uv_close((uv_handle_t *)&d->sigterm, NULL);
		uv_close((uv_handle_t *)&d->sigint, NULL);
	}
}

static void on_ingest_closed(struct ingest *ing)
{
	struct relayd *d = relay_container_of(ing, struct relayd, ing);
	/* Writers are answered; now stop delivering. A POST in flight is
	 * abandoned: its batches stay queued and go again after a restart. */
	for (size_t i = 0; i < d->cfg.nbackends; i++)
		replay_stop(&d->workers[i], on_worker_stopped);
}

static void on_commit(struct ingest *ing, void *arg)
{
	struct relayd *d = arg;
	(void)ing;
	for (size_t i = 0; i < d->cfg.nbackends; i++)
		replay_notify(&d->workers[i]);
}

static void on_http_closed(void *arg)
{
	struct relayd *d = arg;
	d->http = NULL;
	/* Every connection is gone; commits already handed to the pool
	 * finish before ingest closes. */
	ingest_close(&d->ing, on_ingest_closed);
}

static void on_signal(uv_signal_t *h, int signum)
{
	struct relayd *d = h->data;
	if (d->stopping) {
		relay_log(RELAY_LOG_WARN, "second signal %d: exiting now (acknowledged writes are on disk)", signum);
		_exit(1);
	}
	d->stopping = 1;
	relay_log(RELAY_LOG_NOTICE, "signal %d: shutting down", signum);
	if (d->http)
		http_server_close(d->http, on_http_closed, d);
	else
		on_http_closed(d);
}

/*
 * GET /health: the relay's state, its front door and group commit
 * figures, and per backend its delivery state and backlog. The backlog
 * comes from a short read transaction (cheap: a few B-tree lookups).
 */
static int health(struct http_server *s, struct rbuf *out, void *arg)
{
	struct relayd *d = arg;
	const struct http_server_stats *hs = http_server_stats(s);
	const struct ingest_stats *is = &d->ing.stats;
	int64_t now = now_realtime_ns();
	int ok = !d->stopping;
	rbuf_appendf(out,
		     "{\"status\":\"%s\",\"version\":\"%s\","
		     "\"http\":{\"connections_open\":%" PRIu64 ",\"connections_accepted\":%" PRIu64
		     ",\"requests\":%" PRIu64 ",\"writes_ok\":%" PRIu64 ",\"writes_rejected\":%" PRIu64
		     ",\"writes_refused\":%" PRIu64 ",\"points_accepted\":%" PRIu64 "},"
		     "\"ingest\":{\"commits\":%" PRIu64 ",\"batches_committed\":%" PRIu64 ",\"batches_refused\":%" PRIu64
		     ",\"commit_errors\":%" PRIu64 ",\"largest_group\":%" PRIu64 "},\"backends\":[",
		     d->stopping ? "stopping" : "ok", RELAYD_VERSION, hs->connections_open, hs->connections_accepted,
		     hs->requests, hs->writes_ok, hs->writes_rejected, hs->writes_refused, hs->points_accepted,
		     is->commits, is->batches_committed, is->batches_refused, is->commit_errors, is->max_group);
	for (size_t i = 0; i < d->cfg.nbackends; i++) {
		const struct replay_worker *w = &d->workers[i];
		struct wal_backend_stat st;
		memset(&st, 0, sizeof(st));
		wal_backend_stat(d->wal, d->cfg.backends[i].name, &st);
		rbuf_appendf(out, "%s{\"name\":", i ? "," : "");
		json_append_string(out, d->cfg.backends[i].name, strlen(d->cfg.backends[i].name));
		rbuf_appendf(out,
			     ",\"state\":\"%s\",\"pending_batches\":%" PRIu64 ",\"pending_points\":%" PRIu64
			     ",\"pending_bytes\":%" PRIu64 ",\"oldest_age_seconds\":%" PRId64 ",\"dead_batches\":%" PRIu64
			     ",\"posts\":%" PRIu64 ",\"delivered_batches\":%" PRIu64 ",\"delivered_points\":%" PRIu64
			     ",\"retries\":%" PRIu64 ",\"last_error\":",
			     replay_health_name(w->health), st.pending_batches, st.pending_points, st.pending_bytes,
			     st.oldest_accept_ns ? (int64_t)((now - st.oldest_accept_ns) / 1000000000LL) : (int64_t)0, st.dead_batches,
			     w->stats.posts, w->stats.delivered_batches, w->stats.delivered_points, w->stats.retries);
		json_append_string(out, w->last_error, strlen(w->last_error));
		rbuf_appendc(out, '}');
	}
	rbuf_append(out, "]}", 2);
	return ok ? 200 : 503;
}

static int open_queue(struct relayd *d)
{
	struct wal_options o = { .map_size = config_map_size(&d->cfg), .flags = 0 };
	int rc = wal_open(d->cfg.data_dir, &o, &d->wal);
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
	uint64_t route = 0;
	for (size_t i = 0; i < d->cfg.nbackends; i++) {
		const struct relay_backend_config *b = &d->cfg.backends[i];
		int id;
		if ((rc = wal_backend_open(d->wal, b->name, &id))) {
			relay_log(RELAY_LOG_ERROR, "cannot open queue of backend '%s': %s", b->name, wal_strerror(rc));
			return -1;
		}
		wal_backend_set_limits(d->wal, id, b->max_bytes, (int64_t)b->max_age_ms * 1000000LL);
		d->backend_ids[i] = id;
		route |= 1ULL << id;
		struct wal_backend_stat st;
		if (wal_backend_stat(d->wal, b->name, &st) == 0)
			relay_log(RELAY_LOG_INFO, "backend '%s' (%s): %" PRIu64 " batches, %" PRIu64 " points, %" PRIu64 " bytes queued",
				  b->name, b->url, st.pending_batches, st.pending_points, st.pending_bytes);
	}
	if ((rc = ingest_init(&d->ing, d->loop, d->wal, route, d->cfg.queue_max_commit_batches))) {
		relay_log(RELAY_LOG_ERROR, "cannot start ingest: %s", uv_strerror(rc));
		return -1;
	}
	for (size_t i = 0; i < d->cfg.nbackends; i++) {
		d->ing.names[d->backend_ids[i]] = d->cfg.backends[i].name;
		d->ing.limits[d->backend_ids[i]] = d->cfg.backends[i].max_bytes;
	}
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "check-config", no_argument, NULL, 't' },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *config_path = NULL;
	int check_only = 0, ch;
	char err[1024];
	static struct relayd d;

	while ((ch = getopt_long(argc, argv, "c:tVh", opts, NULL)) != -1) {
		switch (ch) {
		case 'c': config_path = optarg; break;
		case 't': check_only = 1; break;
		case 'V': printf("relayd %s\n", RELAYD_VERSION); return 0;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (!config_path || optind != argc) {
		usage(stderr);
		return 2;
	}
	if (config_load(config_path, &d.cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	if (check_only) {
		printf("%s: ok (%zu backend%s)\n", config_path, d.cfg.nbackends, d.cfg.nbackends == 1 ? "" : "s");
		config_release(&d.cfg);
		return 0;
	}
	enum relay_log_level lvl;
	if (relay_log_level_parse(d.cfg.log_level, &lvl) == 0)
		relay_log_set_level(lvl);
	signal(SIGPIPE, SIG_IGN);

	/* The thread pool runs the group commit and, per backend, a queue
	 * read or dead-letter, an ack and a prefetch of the next round (each
	 * at most one at a time) besides name lookups: size it so that none
	 * waits for another. Must be set before the pool's first use. */
	char pool[16];
	snprintf(pool, sizeof(pool), "%zu", 3 * d.cfg.nbackends + 4);
	setenv("UV_THREADPOOL_SIZE", pool, 0);
	d.loop = uv_default_loop();
	if (open_queue(&d) < 0)
		return 1;
	int rc = http_server_start(d.loop, &d.cfg, &d.ing, &d.http, err, sizeof(err));
	if (rc) {
		relay_log(RELAY_LOG_ERROR, "%s", err);
		wal_close(d.wal);
		return 1;
	}
	http_server_set_health(d.http, health, &d);
	d.loop->data = &d;
	d.workers = xcalloc(d.cfg.nbackends, sizeof(*d.workers));
	for (size_t i = 0; i < d.cfg.nbackends; i++)
		replay_start(&d.workers[i], d.loop, d.wal, &d.cfg.backends[i], d.backend_ids[i]);
	d.workers_running = d.cfg.nbackends;
	d.ing.on_commit = on_commit;
	d.ing.on_commit_arg = &d;
	uv_signal_init(d.loop, &d.sigterm);
	uv_signal_init(d.loop, &d.sigint);
	d.sigterm.data = d.sigint.data = &d;
	uv_signal_start(&d.sigterm, on_signal, SIGTERM);
	uv_signal_start(&d.sigint, on_signal, SIGINT);
	relay_log(RELAY_LOG_NOTICE, "relayd %s listening on http://%s (queue in '%s', %zu backend%s)",
		  RELAYD_VERSION, d.cfg.listen_http, d.cfg.data_dir, d.cfg.nbackends, d.cfg.nbackends == 1 ? "" : "s");

	uv_run(d.loop, UV_RUN_DEFAULT);

	const struct ingest_stats *is = &d.ing.stats;
	relay_log(RELAY_LOG_NOTICE, "stopped: %" PRIu64 " batches committed in %" PRIu64 " commits (largest group %" PRIu64 ")",
		  is->batches_committed, is->commits, is->max_group);
	uv_loop_close(d.loop);
	free(d.workers);
	wal_close(d.wal);
	config_release(&d.cfg);
	return 0;
}
