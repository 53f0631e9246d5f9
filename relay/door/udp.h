/*
 * udp: UDP listeners for line protocol (listen.udp), as InfluxDB 1.x's UDP
 * service. One uv_udp_t per listener, each for one database. Every
 * datagram is validated whole (the HTTP door's rules and line limit, lines
 * without a timestamp stamped with its arrival time in the listener's
 * precision); a bad datagram is dropped whole and counted. Good ones are
 * grouped for flush_interval or up to batch_max_size and each group is
 * committed by ingest as one batch, exactly like an HTTP write.
 *
 * UDP has no acknowledgement: what cannot be stored (a full queue, a
 * failed commit, a group that finds both buffers busy) is dropped, but
 * always counted and logged (rate-limited), never lost from the counters.
 */
#ifndef RELAY_UDP_H
#define RELAY_UDP_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "relay/base/config.h"
#include "relay/door/ingest.h"

struct udp_server;

/* Counters of one listener, since it started. */
struct udp_stats {
	uint64_t datagrams;         /* received: committed + bad + dropped + pending + empty */
	uint64_t datagrams_bad;     /* failed validation or truncated: dropped whole */
	uint64_t datagrams_committed; /* valid, and their points committed to the queue */
	uint64_t datagrams_dropped; /* valid but not stored: buffers full, queue full, failed commit */
	uint64_t points_accepted;   /* committed to the queue */
	uint64_t bytes_accepted;    /* their line protocol, as queued (stamped) */
	uint64_t points_dropped;    /* valid but not stored (the points of datagrams_dropped) */
	uint64_t bytes;             /* datagram payload bytes received */
	uint64_t batches;           /* groups committed (each one queued batch) */
	uint64_t recv_errors;       /* errors reported by the socket */
	uint64_t receive_buffer;    /* SO_RCVBUF as the kernel reports it */
};

/*
 * Bind every listener of cfg->udp on loop and start receiving; the groups
 * go to ing. cfg and ing must outlive the server (ing must not be closed
 * before udp_close has been called). With no listener configured, *out is
 * still a (trivial) server.
 *
 * Returns 0 and *out, or a uv error code with a message naming the address
 * in err ("cannot listen on udp 127.0.0.1:8089: address already in use").
 * On failure nothing is left receiving; the handles already opened are
 * closed and freed as the loop runs (the caller may also just exit).
 */
int udp_start(uv_loop_t *loop, const struct relay_config *cfg, struct ingest *ing, struct udp_server **out,
              char *err, size_t errlen);

/* Listeners (cfg->nudp, in the configuration's order). */
size_t udp_count(const struct udp_server *s);
/* Counters of listener i; valid until udp_close's done runs. */
const struct udp_stats *udp_stats(const struct udp_server *s, size_t i);
/* The port listener i is bound to (useful with port 0). */
int udp_port(const struct udp_server *s, size_t i);

/*
 * Append the UDP listeners' metric families to out (docs/monitoring.md,
 * "UDP listeners"): one sample per listener, labelled listener="ADDRESS"
 * as configured. s may be NULL (no UDP server): the families are written
 * without samples. http_server_metrics() calls it: a program that calls
 * that must not call this too (a family is written once). Cannot fail.
 */
void udp_metrics(const struct udp_server *s, struct rbuf *out);

/*
 * Stop: every listener stops receiving, reads what the kernel already
 * holds for it (so that a datagram that arrived before the stop is kept),
 * and hands its pending group to ingest at once. Call it before
 * ingest_close: those groups then commit before ingest closes. done runs
 * once every handle is closed and every group's commit has returned (at
 * once, inside this call, when there is no listener); the server is freed
 * just before done runs.
 */
void udp_close(struct udp_server *s, void (*done)(void *arg), void *arg);

/*
 * Handle one datagram on listener i as if it had just arrived from peer
 * (a "HOST:PORT" string used in log lines). The receive callback calls
 * this; tests call it to drive a listener without a socket. data is only
 * read during the call.
 */
void udp_receive(struct udp_server *s, size_t i, const char *data, size_t len, const char *peer);

#endif
