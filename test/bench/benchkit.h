/*
 * benchkit: what the benchmarks under test/bench share.
 *
 *  - benchkit.c: options, latencies and percentiles, temporary files, machine
 *    facts, number formatting;
 *  - bench_http.c: a blocking HTTP/1.1 client for loopback, one request at a
 *    time per connection, every socket call bounded by a 30 s timeout;
 *  - bench_proc.c: relayd and influxd as child processes on free loopback
 *    ports: config, start, readiness (/ping), stop by pid, CPU time, peak
 *    memory, log tails; relayd's /health.
 *
 * Messages go to stderr, prefixed with bench_name. Nothing here is thread
 * safe unless said so; a struct http_conn may be used by one thread at a time,
 * one per thread.
 */
#ifndef RELAY_BENCHKIT_H
#define RELAY_BENCHKIT_H

#include <limits.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "relay/base/util.h"

#define NS_PER_S 1000000000ULL
#define ERR_BODY_MAX 512              /* bytes of a response body kept in struct http_resp */
#define FSYNC_PROBES 50               /* most samples of fdatasync_probe_ms */

/* The program's name, the prefix of the kit's messages: set it first in main. */
extern const char *bench_name;

/* Print "bench_name: " and the message to stderr (add the newline yourself). */
void bench_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*---- options (benchkit.c) ----*/

/* Parse a decimal in [min, max] into *out; 0, or -1 (out untouched) if malformed or out of range. */
int parse_uint(const char *s, unsigned min, unsigned max, unsigned *out);

/* Parse a comma-separated list of 1..max_n numbers in [min, max] into out[], *n their count; 0 or -1. */
int parse_uint_list(const char *s, unsigned min, unsigned max, unsigned *out, size_t max_n, size_t *n);

/* The first executable NAME in $PATH, malloc'd (the caller frees it), or NULL when there is none. */
char *find_on_path(const char *name);

/*---- latencies (benchkit.c) ----*/

/* A growable array of durations in nanoseconds; { 0 } is empty; it owns v. */
struct lat_vec {
	uint64_t *v;
	size_t n, cap;
};

/* Append ns to l (grows it; aborts on OOM). */
void lat_push(struct lat_vec *l, uint64_t ns);

/* Append every sample of src to dst; src is unchanged. */
void lat_append(struct lat_vec *dst, const struct lat_vec *src);

/* Free l's samples and leave it empty. */
void lat_release(struct lat_vec *l);

/* Nearest-rank percentile pct (1..100) of l in milliseconds; sorts l. Returns -1 when l is empty. */
double lat_percentile_ms(struct lat_vec *l, unsigned pct);

/*---- files and machine facts (benchkit.c) ----*/

/* out = dir/name. Returns 0, or -1 if it does not fit in PATH_MAX. */
int path_join(char out[PATH_MAX], const char *dir, const char *name);

/* Remove dir and everything under it; what cannot be removed is reported, never fatal. */
void remove_tree(const char *dir);

/* Create $TMPDIR/bench_name.XXXXXX (or under /tmp) into out. Returns 0, or -1 after a message. */
int make_tmpdir(char *out, size_t len);

/* A static name for the file system under path ("ext2/3/4", "tmpfs (...)", "other", "unknown"). */
const char *fs_name(const char *path);

/* Median ms of a 4 KiB pwrite + fdatasync in dir (up to FSYNC_PROBES samples or ~2 s); -1 on error. */
double fdatasync_probe_ms(const char *dir);

/* Write the three load averages of /proc/loadavg (or "unknown") into out; returns out. */
const char *loadavg(char *out, size_t len);

/* Write the CPU model of /proc/cpuinfo (or "unknown") into out; returns out. */
const char *cpu_model(char *out, size_t len);

/* Print "- machine: SYSTEM RELEASE ARCH, N CPUs online" to stdout. */
void print_machine_line(void);

/*---- formatting (benchkit.c) ----*/

/* v with thousands separators ("1,234,567") in out, returned; a negative v gives the static "–". */
const char *fmt_count(double v, char *out, size_t len);

/* v with prec decimals in out, returned; a negative v gives the static "–". */
const char *fmt_fixed(double v, int prec, char *out, size_t len);

/*---- start gate (benchkit.c) ----*/

/* Threads wait at a gate until it opens; initialise with GATE_INIT. Thread safe. */
struct gate {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int state; /* 0 closed; 1 go; -1 abort */
};
#define GATE_INIT { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0 }

/* Block until g is opened; returns the state it was opened with (1 go, -1 abort). */
int gate_wait(struct gate *g);

/* Open g with state (1 go, -1 abort) and wake every waiter. */
void gate_open(struct gate *g, int state);

/*---- clocks (benchkit.c) ----*/

/* Sleep ns nanoseconds (resumed after a signal). */
void sleep_ns(uint64_t ns);

/* CPU seconds (user + system) this process has used so far, or -1. */
double self_cpu_s(void);

/* 100 * (after - before) / span: % of one core; -1 when a sample is negative (missing) or span_ns is 0. */
double cpu_pct(double before, double after, uint64_t span_ns);

/*---- HTTP/1.1 client (bench_http.c) ----*/

/* A connection and the bytes received but not yet consumed; { .fd = -1 } is closed and empty; it owns buf. */
struct http_conn {
	int fd;
	char *buf;
	size_t len, cap;
	uint64_t deadline_ns; /* monotonic; past it, reads fail with ETIMEDOUT; 0 = none */
};

/* The head of a response and the first bytes of its body. */
struct http_resp {
	int status;
	int close;           /* the server will close the connection */
	int chunked;         /* http_read_stream: the body came chunked */
	size_t body_len;     /* the whole body's length (decoded when chunked) */
	char body[ERR_BODY_MAX + 1]; /* the first bytes of the body, NUL-terminated */
};

/* A socket connected to 127.0.0.1:port (TCP_NODELAY, 30 s send/recv timeouts) into *out; 0 or -errno. */
int tcp_connect(uint16_t port, int *out);

/* Connect c (whose buffer may be kept from before) to 127.0.0.1:port. Returns 0 or -errno. */
int http_conn_open(struct http_conn *c, uint16_t port);

/* Close c's socket (if open) and drop unconsumed bytes; the buffer stays allocated for reuse. */
void http_conn_close(struct http_conn *c);

/* Close c and free its buffer. */
void http_conn_release(struct http_conn *c);

/* Send all n bytes of p on fd. Returns 0, or -errno (-ETIMEDOUT after the socket's timeout). */
int send_all(int fd, const char *p, size_t n);

/* Parse a response head p[0..n) (through the empty line) into r and *clen (-1: none); chunked refused; 0 or -1 + err. */
int http_parse_head(const char *p, size_t n, struct http_resp *r, long long *clen, char *err, size_t errlen);

/* Read and consume one response (<= 64 MiB, not chunked; whole body to caller's full if not NULL); 0, or -1 + err. */
int http_read_response(struct http_conn *c, struct http_resp *r, struct rbuf *full, char *err, size_t errlen);

/*
 * The answer's body is buf[head, head + body_len), all of it in buf: put
 * its first bytes in r (r->body_len set), the whole of it in full when not
 * NULL, then consume it, with its head, from buf (*len shrinks; what
 * follows belongs to the next answer). For any reader of one connection's
 * bytes (bench_http.c, and bench_tls.c over TLS).
 */
void http_resp_take(char *buf, size_t *len, size_t head, size_t body_len, struct http_resp *r, struct rbuf *full);

/* Send req[0..len) on c and read the answer as http_read_response (full = NULL); 0, or -1 with err. */
int http_roundtrip(struct http_conn *c, const char *req, size_t len, struct http_resp *r, char *err,
                   size_t errlen);

/* Read one response of any size (length, chunked, EOF), counted not kept; *wire: bytes on the wire; 0, or -1 + err. */
int http_read_stream(struct http_conn *c, struct http_resp *r, uint64_t *wire, char *err, size_t errlen);

/* GET /ping on a fresh connection to 127.0.0.1:port. Returns the status, or -1 when none came. */
int http_ping(uint16_t port);

/* METHOD target as HTTP/1.0 (never chunked), whole body to caller's body (NUL-terminated); the status, or -1. */
int http_control(uint16_t port, const char *method, const char *target, struct rbuf *body);

/* The unsigned number after "key": at or after from (may be NULL) into *out; 0, or -1 if none. */
int json_u64(const char *from, const char *key, uint64_t *out);

/*---- a run's failures (benchkit.c) ----*/

/* What went wrong in a run, counted, with the first of each kind kept for
 * the report; { 0 } is none. Not thread safe: one per thread, merged. */
struct run_errors {
	uint64_t bad_status, transport, mismatches;
	int first_status;
	char first_body[ERR_BODY_MAX + 1];
	char first_failure[320];
};

/* An answer that was not the one expected (r's status and body kept if first). */
void note_bad(struct run_errors *e, const struct http_resp *r);
/* A transport failure (what: its text, kept if first). */
void note_failure(struct run_errors *e, const char *what);
/* Add src's counts to dst, keeping dst's first failures, else src's. */
void errors_merge(struct run_errors *dst, const struct run_errors *src);

/*---- child processes (bench_proc.c) ----*/

/* A relayd or an influxd started by us; { .name = ... } is not started. */
struct child {
	const char *name;     /* "relayd" or "influxd" */
	pid_t pid;            /* 0 before the start and once reaped */
	int started;          /* spawned and not yet stopped */
	int log_shown;        /* the log's tail was printed already */
	int wstatus;          /* valid once reaped */
	uint16_t port;        /* its HTTP port */
	uint16_t backend_port; /* relayd: where its one backend is */
	uint16_t rpc_port;    /* influxd: its RPC port */
	unsigned parallel;    /* relayd: its backend's "parallel", 0 = not set */
	uint64_t spawn_ns;    /* monotonic time of the last spawn */
	char dir[PATH_MAX];   /* relayd: data_dir; influxd: its whole directory */
	char conf[PATH_MAX], log[PATH_MAX];
	const char *https_cert, *https_key; /* influxd: serve HTTPS (only) with these; NULL = plain HTTP */
};

/* 1 when nothing listens at 127.0.0.1:port (a connection is refused), else 0. */
int port_closed(uint16_t port);

/* A free loopback port into *port, none of avoid[0..n), nobody listening; 0, or -1 after a message. */
int pick_port(uint16_t *port, const uint16_t *avoid, size_t n);

/* Spawn argv[0] (argv NULL-terminated), stdin /dev/null, stdout and stderr appended to c->log; 0 or an errno. */
int child_spawn(struct child *c, char *const argv[]);

/* Reap c if it has exited (c->wstatus, c->pid = 0). Returns 1 while it runs, else 0. */
int child_alive(struct child *c);

/* Describe a wait status ("exited with status 1", "killed by signal 9 (...)") into out. */
void describe_exit(int wstatus, char *out, size_t len);

/* Print the last 4 KiB of c's log to stderr, once per spawn; nothing if there is no log. */
void child_print_log_tail(struct child *c);

/* SIGTERM c by pid, SIGKILL after 10 s; 0 if it exited 0 or was not started, else -1 (0 if lenient) + log tail. */
int child_stop(struct child *c, int lenient);

/* CPU seconds (user + system) c has used so far, from /proc; -1 when not running or unreadable. */
double child_cpu_s(const struct child *c);

/* c's peak resident memory (VmHWM of /proc/PID/status) in KiB; -1 when not running or unreadable. */
long child_peak_rss_kib(const struct child *c);

/* c's current resident memory (VmRSS of /proc/PID/status) in KiB; -1 when not running or unreadable. */
long child_rss_kib(const struct child *c);

/* Poll GET /ping until 204, at most 10 s; 0, or -1 (c died or never answered) after a message and the log's tail. */
int child_wait_ready(struct child *c);

/*---- relayd (bench_proc.c) ----*/

/* (Re)start relayd (binary path) with p's config file, rewritten first from p. Returns 0, or -1 after a message. */
int relayd_spawn(struct child *p, const char *path);

/* Start relayd in tmp/NAME, backend at backend_port (0: closed), parallel (0: default), ready; 0/-1; child_stop. */
int relayd_start(struct child *p, const char *path, const char *tmp, const char *name, uint16_t backend_port,
                 unsigned parallel);

/* What GET /health tells; the backend figures are the first backend's. */
struct relayd_health {
	uint64_t commits, batches_committed, points_accepted;
	uint64_t pending_batches, pending_points, posts, delivered_points, retries;
};

/* Read relayd's GET /health at port into *h. Returns 0, or -1 (no 200 or a field missing). */
int relayd_health_read(uint16_t port, struct relayd_health *h);

/* Poll /health every 20 ms (<= 120 s) until nothing is pending: *done its time, *h it; 0, or -1 after a message. */
int relayd_wait_drained(struct child *p, uint64_t *done, struct relayd_health *h);

/* Copy the last line of p's log with "batches committed in" into out ("" when none). */
void relayd_commit_summary(const struct child *p, char *out, size_t len);

/*---- influxd (bench_proc.c) ----*/

/* Start a private influxd in tmp/NAME on free ports, ready, database "bench" made; 0/-1; influxd_finish after. */
int influxd_start(struct child *c, const char *path, const char *tmp, const char *name);

/* Write tmp/NAME's config (HTTP at port, free if 0; HTTPS only with https_cert/key) and spawn; no wait; 0/-1. */
int influxd_launch(struct child *c, const char *path, const char *tmp, const char *name, uint16_t port,
                   const char *https_cert, const char *https_key);

/* influxd's httpd pointsWrittenOK from /debug/vars into *out. Returns 0, or -1 after a message. */
int influxd_points_ok(const struct child *c, uint64_t *out);

/* Stop influxd (leniently) and, unless keep, remove its directory. */
void influxd_finish(struct child *c, int keep);

#endif
