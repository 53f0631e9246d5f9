/*
 * fuzz_control: both sides of the control channel. The first byte picks
 * the side:
 *
 *   even: the rest is what relayctl reads back from relayd: a reply line
 *         (cut at its first '\n', as control_request does) split by
 *         control_reply_parse, and an "ok" payload read by
 *         control_status_parse. What parses must format and parse again
 *         to the same status, and control_status_format's own output must
 *         always parse.
 *   odd:  the rest is what a client sends to relayd's control socket: a
 *         real control_server on a libuv loop (in this thread) reads it
 *         from a real unix socket, in two writes, and the client then
 *         half-closes and reads every answer. Each whole request line
 *         must get exactly one answer, in order, "ok ..." or "error ...",
 *         one line each, as the model below says; an over-long line gets
 *         "error request line too long" and is the last one answered;
 *         then the server closes. One command answers 6000 bytes, so that a
 *         dozen of them pass the limit of queued answers (the server stops
 *         reading, the client reads, the server goes on).
 *
 * Violations abort(), which both libFuzzer and the replay main report.
 */
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "relay/control/control.h"

#define BIG_REPLY 6000

static void check(int cond, const char *what)
{
	if (!cond) {
		fprintf(stderr, "fuzz_control: %s\n", what);
		abort();
	}
}

/*---- relayctl's side: the reply line and the status payload ----*/

static void same_status(const struct control_status *a, const struct control_status *b)
{
	check(a->pid == b->pid && a->started_ns == b->started_ns && a->nbackends == b->nbackends, "status header");
	check(strcmp(a->version, b->version) == 0, "version");
	for (size_t i = 0; i < a->nbackends; i++) {
		const struct control_backend_status *x = &a->backends[i], *y = &b->backends[i];
		check(strcmp(x->name, y->name) == 0 && strcmp(x->state, y->state) == 0 &&
		              strcmp(x->last_error, y->last_error) == 0,
		      "backend strings");
		check(x->head_seq == y->head_seq && x->attempts == y->attempts && x->next_attempt_ms == y->next_attempt_ms &&
		              x->last_delivery_ns == y->last_delivery_ns && x->delivered_points == y->delivered_points,
		      "backend numbers");
	}
}

static void strings_terminated(const struct control_status *st)
{
	check(st->nbackends <= CONTROL_MAX_BACKENDS, "nbackends");
	check(memchr(st->version, '\0', sizeof(st->version)) != NULL, "version unterminated");
	for (size_t i = 0; i < st->nbackends; i++) {
		const struct control_backend_status *b = &st->backends[i];
		check(memchr(b->name, '\0', sizeof(b->name)) && memchr(b->state, '\0', sizeof(b->state)) &&
		              memchr(b->last_error, '\0', sizeof(b->last_error)),
		      "backend string unterminated");
	}
}

static void client_side(const uint8_t *data, size_t size)
{
	char *line = malloc(size + 1);
	memcpy(line, data, size);
	line[size] = '\0';
	char *nl = memchr(line, '\n', size);
	if (nl)
		*nl = '\0';
	const char *payload;
	int rc = control_reply_parse(line, &payload);
	check(rc == 0 || rc == CONTROL_EREPLY || rc == -EPROTO, "reply verdict");
	check((rc == -EPROTO) == (payload == NULL), "reply payload");
	if (rc == 0) {
		struct control_status *st1 = malloc(sizeof(*st1)), *st2 = malloc(sizeof(*st2));
		if (control_status_parse(payload, st1) == 0) {
			strings_terminated(st1);
			struct rbuf f1 = RBUF_INIT, f2 = RBUF_INIT;
			control_status_format(st1, &f1);
			check(memchr(f1.data, '\n', f1.len) == NULL, "formatted status holds a newline");
			check(control_status_parse(rbuf_cstr(&f1), st2) == 0, "own status output does not parse");
			strings_terminated(st2);
			/* A byte that is not UTF-8 is formatted as U+FFFD (JSON
			 * cannot carry it): from the first output on, the round
			 * trip is exact. */
			control_status_format(st2, &f2);
			check(control_status_parse(rbuf_cstr(&f2), st1) == 0, "own status output does not parse");
			same_status(st1, st2);
			struct rbuf f3 = RBUF_INIT;
			control_status_format(st1, &f3);
			check(f2.len == f3.len && memcmp(f2.data, f3.data, f2.len) == 0, "status format not stable");
			rbuf_release(&f1);
			rbuf_release(&f2);
			rbuf_release(&f3);
		}
		free(st1);
		free(st2);
	}
	free(line);
}

/*---- relayd's side: a real server ----*/

static int h_status(void *data, const char *arg, struct rbuf *reply)
{
	struct control_status *st = data;
	(void)arg;
	control_status_format(st, reply);
	return 0;
}

/* Fails for an argument starting with 'e', with a message that holds the
 * bytes a reply must not carry raw. */
static int h_notify(void *data, const char *arg, struct rbuf *reply)
{
	(void)data;
	if (arg[0] == 'e') {
		rbuf_appendf(reply, "no\nsuch\r\nbackend '%s'", arg);
		return -1;
	}
	return 0;
}

static int h_retry(void *data, const char *arg, struct rbuf *reply)
{
	(void)data;
	(void)arg;
	rbuf_reserve(reply, BIG_REPLY);
	memset(reply->data + reply->len, 'r', BIG_REPLY);
	reply->len += BIG_REPLY;
	return 0;
}

static const struct control_command cmds[] = {
	{ "status", 0, h_status },
	{ "notify", 1, h_notify },
	{ "retry", 1, h_retry },
};

static struct {
	uv_loop_t loop;
	struct control_server srv;
	struct control_status status;
	char dir[64];
	char path[108];
	int up;
	int stopped;
} S;

static void on_stopped(struct control_server *s)
{
	(void)s;
	S.stopped = 1;
}

static void server_down(void)
{
	control_server_stop(&S.srv, on_stopped);
	while (!S.stopped)
		uv_run(&S.loop, UV_RUN_ONCE);
	uv_run(&S.loop, UV_RUN_NOWAIT);
	uv_loop_close(&S.loop);
	rmdir(S.dir);
}

static void server_up(void)
{
	snprintf(S.dir, sizeof(S.dir), "/tmp/fuzz_control.XXXXXX");
	check(mkdtemp(S.dir) != NULL, "mkdtemp");
	check(control_socket_path(S.dir, S.path, sizeof(S.path)) == 0, "socket path");
	check(uv_loop_init(&S.loop) == 0, "loop");
	S.status.pid = 42;
	snprintf(S.status.version, sizeof(S.status.version), "fuzz\x1b");
	S.status.nbackends = 1;
	snprintf(S.status.backends[0].name, sizeof(S.status.backends[0].name), "b\"1\\");
	snprintf(S.status.backends[0].state, sizeof(S.status.backends[0].state), "up");
	snprintf(S.status.backends[0].last_error, sizeof(S.status.backends[0].last_error), "a\nb\rc\x01");
	S.status.backends[0].next_attempt_ms = -1;
	check(control_server_start(&S.srv, &S.loop, S.path, cmds, 3, &S.status) == 0, "server start");
	S.up = 1;
	atexit(server_down);
}

/* The model: what the server must answer to one request line (without
 * its '\n'): 0 nothing, 1 "ok", 2 "error", 3 "ok relayd", 4 "ok" with the
 * big payload. */
static int expected(const char *l, size_t n)
{
	const char *z = memchr(l, '\0', n); /* the server reads a C string */
	if (z)
		n = (size_t)(z - l);
	if (n && l[n - 1] == '\r')
		n--;
	if (n == 0)
		return 0;
	const char *sp = memchr(l, ' ', n);
	size_t cl = sp ? (size_t)(sp - l) : n;
	const char *arg = NULL;
	size_t al = 0;
	if (sp) {
		arg = sp + 1;
		al = n - cl - 1;
		while (al && *arg == ' ')
			arg++, al--;
		while (al && arg[al - 1] == ' ')
			al--;
		if (!al)
			arg = NULL;
	}
	if (cl == 4 && memcmp(l, "ping", 4) == 0)
		return 3;
	if (cl == 6 && memcmp(l, "status", 6) == 0)
		return arg ? 2 : 1;
	if (cl == 6 && memcmp(l, "notify", 6) == 0)
		return !arg || arg[0] == 'e' ? 2 : 1;
	if (cl == 5 && memcmp(l, "retry", 5) == 0)
		return arg ? 4 : 2;
	return 2;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void server_side(const uint8_t *data, size_t size)
{
	if (!S.up)
		server_up();
	struct sockaddr_un sa;
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	memcpy(sa.sun_path, S.path, strlen(S.path) + 1);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	check(fd >= 0, "socket");
	check(connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0, "connect");

	/* Send in two writes (the server must carry a line across reads),
	 * half-close, and read until the server closes. */
	size_t off = 0, half = size / 2;
	int shut = 0, eof = 0, turn = 0;
	struct rbuf in = RBUF_INIT;
	double deadline = now_s() + 10;
	while (!eof) {
		int progress = 0;
		size_t upto = turn < 2 ? half : size;
		if (off < upto) {
			ssize_t n = send(fd, data + off, upto - off, MSG_NOSIGNAL | MSG_DONTWAIT);
			if (n > 0) {
				off += (size_t)n;
				progress = 1;
			} else if (n < 0 && errno != EAGAIN) {
				off = size; /* the server hung up (an over-long line) */
			}
		}
		if (off == size && !shut) {
			shutdown(fd, SHUT_WR);
			shut = 1;
		}
		turn++;
		uv_run(&S.loop, UV_RUN_NOWAIT);
		rbuf_reserve(&in, 65536);
		ssize_t n = recv(fd, in.data + in.len, in.cap - in.len, MSG_DONTWAIT);
		if (n > 0) {
			in.len += (size_t)n;
			progress = 1;
		} else if (n == 0 || (n < 0 && errno != EAGAIN)) {
			eof = 1; /* a reset comes only after every queued answer was read */
		}
		if (!progress && !eof && shut) {
			/* Only the server can move now: wait for its loop or its
			 * answers, never for a timeout. */
			struct pollfd p[2] = { { fd, POLLIN, 0 }, { uv_backend_fd(&S.loop), POLLIN, 0 } };
			int t = uv_backend_timeout(&S.loop); /* 0 while callbacks are pending */
			poll(p, 2, t < 0 || t > 5 ? 5 : t);
		}
		check(now_s() < deadline, "the server neither answered nor closed within 10 s");
	}
	close(fd);
	/* Let the server see the close and free the client. */
	for (int i = 0; i < 20 && S.srv.nclients; i++)
		uv_run(&S.loop, UV_RUN_NOWAIT);

	/* Check every answer against the model, in order. */
	const char *p = (const char *)data, *e = p + size;
	const char *r = in.data, *re = in.data + in.len;
	int too_long = 0;
	while (p < e && !too_long) {
		const char *nl = memchr(p, '\n', (size_t)(e - p));
		size_t n = nl ? (size_t)(nl - p) : (size_t)(e - p);
		int want;
		if (n >= CONTROL_MAX_LINE) {
			too_long = 1;
			want = 5;
		} else if (!nl) {
			break; /* a last line without '\n' asks nothing */
		} else {
			want = expected(p, n);
		}
		p = nl ? nl + 1 : e;
		if (want == 0)
			continue;
		const char *rl = r < re ? memchr(r, '\n', (size_t)(re - r)) : NULL;
		check(rl != NULL, "a request line got no answer");
		size_t len = (size_t)(rl - r);
		check(memchr(r, '\r', len) == NULL, "an answer holds a CR");
		int ok = len >= 2 && memcmp(r, "ok", 2) == 0 && (len == 2 || r[2] == ' ');
		int err = len >= 5 && memcmp(r, "error", 5) == 0 && (len == 5 || r[5] == ' ');
		check(ok || err, "an answer is neither ok nor error");
		switch (want) {
		case 1: check(ok, "expected ok"); break;
		case 2: check(err, "expected error"); break;
		case 3: check(len == 9 && memcmp(r, "ok relayd", 9) == 0, "ping"); break;
		case 4: check(ok && len == 3 + BIG_REPLY, "the big answer"); break;
		case 5: check(len == 27 && memcmp(r, "error request line too long", 27) == 0, "too long"); break;
		}
		r = rl + 1;
	}
	check(r == re, "more answers than requests");
	rbuf_release(&in);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	if (size > (1u << 16))
		size = 1u << 16; /* a run stays short; longer inputs find nothing more */
	if (data[0] & 1)
		server_side(data + 1, size - 1);
	else
		client_side(data + 1, size - 1);
	return 0;
}
