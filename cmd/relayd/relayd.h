/*
 * relayd: the daemon's state, shared by its files (relayd.c: start,
 * signals, reload, the control channel; monitor.c: /health, /metrics and
 * /health/backends/NAME). Not a library interface: everything here is the
 * loop thread's.
 */
#ifndef RELAYD_RELAYD_H
#define RELAYD_RELAYD_H

#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#include "cmd/relayd/query_targets.h"
#include "relay/base/config.h"
#include "relay/control/control.h"
#include "relay/delivery/backends.h"
#include "relay/door/http_server.h"
#include "relay/door/ingest.h"
#include "relay/door/udp.h"
#include "wal/wal.h"

/* Samples of the delivery rate's window: 30 s at one sample per 5 s. */
#define RELAYD_RATE_SAMPLES 7

struct relayd {
	uv_loop_t *loop;
	/*
	 * The configuration in force. http_server keeps its address and
	 * reads its fields on the loop thread only, when it needs them, so a
	 * reload swaps new contents into this very struct (see reload()).
	 */
	struct relay_config cfg;
	int ids[RELAY_MAX_BACKENDS]; /* queue id of cfg.backends[i] */
	char *start_dir;   /* where relayd was started: -c and --pidfile relative to it mean this */
	char *config_path; /* absolute: reloads read it after chdir("/") */
	char *pidfile;     /* absolute, or NULL */
	uint64_t map_size; /* the queue's LMDB map, fixed until a restart */
	/* The output of cfg.log_output's list in use (relay_log_open_first),
	 * chosen again at every reload; SIGUSR1 reopens it when a file. */
	char log_chosen[4096];
	pid_t pid;
	struct wal *wal;
	struct ingest ing;
	struct http_server *http;
	struct udp_server *udp;
	struct backends backends;
	struct query_targets_src qsrc; /* what /query sees of the backends */
	uv_signal_t sigterm, sigint, sighup, sigusr1;
	uv_timer_t shutdown_timer, status_timer, watchdog_timer, maint_timer;
	/* relayctl's channel (data_dir/relayd.sock) */
	struct control_server control;
	int control_on;
	int64_t started_ns;
	/* Delivered points per queue id, sampled by maint_cb: the rate is
	 * what the window's samples span, so it is 0 exactly when nothing
	 * was delivered in the last 30 s. */
	struct rate_window {
		uint64_t points[RELAYD_RATE_SAMPLES];
		uint64_t t_ns[RELAYD_RATE_SAMPLES];
		unsigned n, next;
	} rate_win[WAL_MAX_BACKENDS];
	double rate[WAL_MAX_BACKENDS];
	int stopping;
	uint64_t reloads, reload_errors;
	/* Batches refused by a full queue and failed commits as last seen,
	 * and when (monotonic) the count last grew: /health says "failing"
	 * for a while after (cmd/relayd/monitor.c). */
	uint64_t refusals_seen;
	uint64_t refused_at_mono_ns;
	/* relayctl drain: /health answers 503 "draining" while writes are
	 * still accepted and delivery goes on. Memory only: a restart ends
	 * it. Since when (realtime), and the door's writes_ok then. */
	int draining;
	int64_t drain_since_ns;
	uint64_t drain_writes_at;
};


/* Wire /health, /health/backends/NAME and /metrics of d->http to d
 * (monitor.c). */
void monitor_attach(struct relayd *d);

/* The systemd status line: the backlog and how many backends deliver
 * (monitor.c). A short read transaction. */
void monitor_status_line(struct relayd *d, char *buf, size_t len);

/* The "drain" control command's payload: one line of JSON, whether
 * relayd drains and what is left to deliver per backend (monitor.c). */
void monitor_drain_report(struct relayd *d, struct rbuf *out);

/* Take note of refused writes (maint timer, every few seconds), so that
 * /health can say "failing" for a while after one. */
void monitor_tick(struct relayd *d);

#endif
