/*
 * control: relayd's local control channel. relayd listens on a unix stream
 * socket, data_dir/relayd.sock (mode 0600, inside the 0700 data_dir: only
 * relayd's user can talk to it); relayctl connects, sends one request line
 * and reads one reply line. It is how relayctl makes a change it committed
 * to the queue (LMDB) take effect at once, and how it reads what only the
 * daemon knows (delivery state, last error, attempts, rate). Nobody
 * listening means relayd is stopped: the change takes effect at its next
 * start. No queue access here: the daemon's callbacks do what they must.
 *
 * Protocol (text, one line each way, '\n'-terminated, at most
 * CONTROL_MAX_LINE bytes per request; several requests may follow on one
 * connection, each answered in order):
 *
 *   request:  COMMAND [ARGUMENT]
 *   reply:    ok [PAYLOAD]          the command was done; PAYLOAD is one line
 *             error MESSAGE         it was not; MESSAGE says why
 *
 *   ping            -> ok relayd                (built in)
 *   status          -> ok {JSON}                (control_status_format)
 *   notify BACKEND  -> ok | error ...           the queue of BACKEND was changed by relayctl
 *   retry BACKEND   -> ok | error ...           skip the current backoff wait of BACKEND
 *
 * An unknown command, a missing or extra argument and an over-long line
 * are answered with "error ..." (an over-long line also closes the
 * connection). Connections idle for CONTROL_IDLE_MS are closed; at most
 * CONTROL_MAX_CLIENTS are served at once (more are closed at once). A
 * client that does not read its answers holds at most about
 * CONTROL_MAX_QUEUED bytes of them in relayd: beyond that its requests are
 * not read until it has read half of them. A client that closes its
 * sending side still gets the answers to its whole lines, then is closed.
 *
 * Server side: libuv, loop thread only. Client side: control_request, a
 * small blocking function for relayctl (no libuv).
 */
#ifndef RELAY_CONTROL_H
#define RELAY_CONTROL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#include "relay/base/util.h"
#include "wal/wal.h"

#define CONTROL_SOCKET_NAME "relayd.sock" /* under data_dir */
#define CONTROL_MAX_LINE 1024             /* request line, '\n' included */
#define CONTROL_MAX_REPLY (1u << 20)      /* reply line, as control_request reads it */
#define CONTROL_MAX_QUEUED (64u << 10)    /* answers waiting for one client before its requests wait */
#define CONTROL_MAX_CLIENTS 64
#define CONTROL_IDLE_MS 30000

#define CONTROL_EREPLY (-20101) /* control_request: the server answered "error MESSAGE" */

/*
 * A command handler, called on the loop thread for a request line
 * "NAME ARG". arg is NULL for commands without an argument, else the text
 * after the first space (non-empty, NUL-terminated, valid during the call).
 * Append the reply payload to reply (one line: a '\n' in it is sent as a
 * space) and return 0 for "ok PAYLOAD", or append a message and return
 * non-zero for "error MESSAGE". It must answer at once (no waiting): the
 * daemon has what it needs in memory, or answers "ok" for something it
 * has started.
 */
typedef int (*control_handler)(void *data, const char *arg, struct rbuf *reply);

struct control_command {
	const char *name;   /* "status", "notify", "retry", "drain" */
	int takes_arg;      /* 1: exactly one argument (a backend name); 0: none */
	control_handler fn;
};

struct control_client;

/* The listener. Embed it in the daemon's struct. */
struct control_server {
	uint64_t requests;    /* answered, for tests and /health */
	/* private: control.c's own */
	uv_loop_t *loop;
	uv_pipe_t listener;
	uv_timer_t sweep;     /* closes idle clients */
	char path[108];
	dev_t dev;            /* of the socket file we bound, to unlink only ours */
	ino_t ino;
	const struct control_command *cmds;
	size_t ncmds;
	void *data;
	struct control_client *clients;
	size_t nclients;
	int handles;          /* open among listener and sweep */
	int stopping;
	void (*stopped_cb)(struct control_server *s);
};

/*
 * Write data_dir/relayd.sock into out. Returns 0, or -ENAMETOOLONG when the
 * path does not fit a unix socket address (108 bytes with the NUL).
 */
int control_socket_path(const char *data_dir, char *out, size_t outlen);

/*
 * Listen on path with the cmds table (it and data must outlive the
 * server; handlers get data). An existing socket file at path is removed
 * only when nobody answers on it (a relayd that died); if somebody does,
 * -EADDRINUSE. Anything else at path (a regular file...) is left alone:
 * -EEXIST. The socket is made 0600 before it accepts connections.
 * Returns 0 (stop it with control_server_stop), or a negative errno/uv
 * code; on failure nothing listens, but s must stay allocated until the
 * loop has run once more (its handle may be closing).
 */
int control_server_start(struct control_server *s, uv_loop_t *loop, const char *path,
                         const struct control_command *cmds, size_t ncmds, void *data);

/*
 * Stop: no new connections, every client closed (replies not yet written
 * are dropped), the socket file removed if it is still ours. cb (may be
 * NULL) runs once every handle is closed; s may be freed from then on.
 */
void control_server_stop(struct control_server *s, void (*cb)(struct control_server *s));

/*
 * Client (relayctl): connect to path, send line (without '\n'), and wait
 * at most timeout_ms in all for the reply line. Blocking; no libuv.
 * Returns 0 with *reply = the payload after "ok" ("" when none), or
 * CONTROL_EREPLY with *reply = the server's message; either way the caller
 * frees *reply. Otherwise *reply is NULL and the code says what happened:
 * -ENOENT or -ECONNREFUSED (nobody listens: relayd is stopped), -ETIMEDOUT,
 * -ECONNRESET (closed before a whole reply), -EPROTO (not "ok"/"error"),
 * -EMSGSIZE (line or reply too long), -ENAMETOOLONG, other -errno.
 */
int control_request(const char *path, const char *line, int timeout_ms, char **reply);

/*
 * Split one reply line (NUL-terminated, its '\n' removed; a trailing '\r'
 * is removed in place) as control_request does: 0 for "ok [PAYLOAD]",
 * CONTROL_EREPLY for "error [MESSAGE]", with *payload pointing into line
 * ("" when there is none); -EPROTO for anything else, *payload NULL.
 */
int control_reply_parse(char *line, const char **payload);

/*---- the "status" payload ----*/

/*
 * What the daemon knows of one backend that the queue does not hold.
 * control_status_format writes it, control_status_parse (relayctl) reads
 * it back; a field the daemon does not know is left at its zero value
 * (next_attempt_ms at -1).
 */
struct control_backend_status {
	char name[WAL_NAME_MAX + 1];
	char state[16];            /* "up", "retrying", "down", "holding", "storage", "paused" */
	char last_error[1024];      /* the last failure, "" when none since it was last up */
	uint64_t head_seq;         /* the batch being sent or retried; 0 = none */
	uint32_t attempts;         /* failed attempts of head_seq so far */
	int64_t next_attempt_ms;   /* until the next attempt while waiting; -1 = not waiting */
	int64_t last_delivery_ns;  /* last 2xx since the daemon started; 0 = none */
	uint64_t delivered_points; /* since the daemon started */
	double points_per_second;  /* points delivered per second, relayd's average over about
	                            * the last 30 s (relayctl's DELIVERED/S) */
	/* The rate limit in force (0 = none) and whether a write waits for
	 * its tokens now; the time writes waited so, since relayd started. */
	uint64_t max_rate;         /* points per second */
	uint64_t max_rate_bytes;   /* bytes per second */
	uint64_t rate_burst_ms;
	int throttled;
	double throttled_seconds;
};

#define CONTROL_MAX_BACKENDS WAL_MAX_BACKENDS /* the queue's limit */

struct control_status {
	int64_t pid;
	char version[32];
	int64_t started_ns;        /* when the daemon started */
	size_t nbackends;
	struct control_backend_status backends[CONTROL_MAX_BACKENDS];
};

/* Append st as one line of JSON to out:
 * {"pid":N,"version":"..","started_ns":N,"backends":[{"name":"..",
 *  "state":"..","last_error":"..","head_seq":N,"attempts":N,
 *  "next_attempt_ms":N,"last_delivery_ns":N,"delivered_points":N,
 *  "points_per_second":F,"max_rate":N,"max_rate_bytes":N,
 *  "rate_burst_ms":N,"throttled":B,"throttled_seconds":F},...]} */
void control_status_format(const struct control_status *st, struct rbuf *out);

/*
 * Parse a status payload (NUL-terminated JSON) into *st (zeroed first;
 * unknown keys are skipped, strings too long for a field are cut at a
 * character's start). Returns 0, or -1 when it is not such a JSON object
 * (not JSON, a known key of the wrong type, a fraction where an integer
 * belongs).
 */
int control_status_parse(const char *json, struct control_status *st);

/* The entry of backend name in st, or NULL. */
const struct control_backend_status *control_status_find(const struct control_status *st, const char *name);

#endif
