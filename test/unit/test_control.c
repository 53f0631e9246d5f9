/*
 * test_control: the control channel. A server runs on a libuv loop in a
 * thread of its own; the tests talk to it with control_request (as
 * relayctl does) and with raw sockets (pipelining, split and over-long
 * lines, many clients), then stop it and check that every handle closed
 * (uv_loop_close() == 0) and the socket file is gone.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "relay/control/control.h"

struct fx {
	char dir[128];
	char path[100];
	uv_loop_t loop;
	uv_async_t stop;
	pthread_t thread;
	struct control_server srv;
	int started;
	int stopped;
	/* what the handlers saw (written on the loop thread, read after a
	 * reply came back) */
	int notify_calls;
	char last_arg[128];
	struct control_status status;
};

static int h_status(void *data, const char *arg, struct rbuf *reply)
{
	struct fx *f = data;
	(void)arg;
	control_status_format(&f->status, reply);
	return 0;
}

static int h_notify(void *data, const char *arg, struct rbuf *reply)
{
	struct fx *f = data;
	f->notify_calls++;
	snprintf(f->last_arg, sizeof(f->last_arg), "%s", arg);
	if (strcmp(arg, "nope") == 0) {
		rbuf_appendf(reply, "unknown backend '%s'\nsecond line", arg);
		return -1;
	}
	return 0;
}

static int h_retry(void *data, const char *arg, struct rbuf *reply)
{
	(void)data;
	rbuf_appendf(reply, "retrying '%s'", arg);
	return 0;
}

static const struct control_command cmds[] = {
	{ "status", 0, h_status },
	{ "notify", 1, h_notify },
	{ "retry", 1, h_retry },
};

static void stopped_cb(struct control_server *s)
{
	struct fx *f = relay_container_of(s, struct fx, srv);
	f->stopped++;
}

static void stop_cb(uv_async_t *a)
{
	struct fx *f = a->data;
	control_server_stop(&f->srv, stopped_cb);
	uv_close((uv_handle_t *)&f->stop, NULL);
}

static void *loop_thread(void *arg)
{
	struct fx *f = arg;
	uv_run(&f->loop, UV_RUN_DEFAULT);
	return NULL;
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	snprintf(f->dir, sizeof(f->dir), "/tmp/test_control.XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	assert_int_equal(control_socket_path(f->dir, f->path, sizeof(f->path)), 0);
	assert_int_equal(uv_loop_init(&f->loop), 0);
	f->status.pid = 4242;
	snprintf(f->status.version, sizeof(f->status.version), "9.9.9");
	f->status.started_ns = 1700000000000000000LL;
	f->status.nbackends = 2;
	snprintf(f->status.backends[0].name, 65, "local");
	snprintf(f->status.backends[0].state, 16, "retrying");
	snprintf(f->status.backends[0].last_error, 300, "HTTP 500: {\"error\":\"timeout\"}\n\tand \x01 more");
	f->status.backends[0].head_seq = 17;
	f->status.backends[0].attempts = 3;
	f->status.backends[0].next_attempt_ms = 1500;
	f->status.backends[0].last_delivery_ns = 1700000000123456789LL;
	f->status.backends[0].delivered_points = 123456789012ULL;
	f->status.backends[0].points_per_second = 2500.5;
	f->status.backends[0].max_rate = 5000;
	f->status.backends[0].max_rate_bytes = 1048576;
	f->status.backends[0].rate_burst_ms = 2000;
	f->status.backends[0].throttled = 1;
	f->status.backends[0].throttled_seconds = 12.25;
	snprintf(f->status.backends[1].name, 65, "remote");
	snprintf(f->status.backends[1].state, 16, "up");
	f->status.backends[1].next_attempt_ms = -1;
	*state = f;
	return 0;
}

/* Start the server on the fixture's loop, then run the loop in a thread. */
static void start(struct fx *f)
{
	assert_int_equal(control_server_start(&f->srv, &f->loop, f->path, cmds, 3, f), 0);
	assert_int_equal(uv_async_init(&f->loop, &f->stop, stop_cb), 0);
	f->stop.data = f;
	assert_int_equal(pthread_create(&f->thread, NULL, loop_thread, f), 0);
	f->started = 1;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	if (f->started) {
		uv_async_send(&f->stop);
		pthread_join(f->thread, NULL);
		assert_int_equal(f->stopped, 1);
		struct stat st;
		assert_int_equal(lstat(f->path, &st), -1); /* the socket file is gone */
	}
	uv_run(&f->loop, UV_RUN_DEFAULT); /* a failed start's close */
	assert_int_equal(uv_loop_close(&f->loop), 0);
	char cmd[300];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
	assert_int_equal(system(cmd), 0);
	free(f);
	return 0;
}

static int raw_connect(const char *path)
{
	struct sockaddr_un sa;
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	struct timeval tv = { 5, 0 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	return fd;
}

static void raw_send(int fd, const char *s)
{
	assert_int_equal(send(fd, s, strlen(s), MSG_NOSIGNAL), (ssize_t)strlen(s));
}

/* Read until n '\n' arrived (or EOF); returns what was read. */
static char *raw_read_lines(int fd, int n, int *eof)
{
	static char buf[8192];
	size_t len = 0;
	int lines = 0;
	*eof = 0;
	while (lines < n && len < sizeof(buf) - 1) {
		ssize_t r = recv(fd, buf + len, sizeof(buf) - 1 - len, 0);
		if (r <= 0) {
			*eof = 1;
			break;
		}
		for (ssize_t i = 0; i < r; i++)
			lines += buf[len + (size_t)i] == '\n';
		len += (size_t)r;
	}
	buf[len] = '\0';
	return buf;
}

static void test_requests(void **state)
{
	struct fx *f = *state;
	char *reply;
	start(f);
	struct stat st;
	assert_int_equal(lstat(f->path, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
	assert_int_equal(st.st_mode & 0777, 0600);

	assert_int_equal(control_request(f->path, "ping", 2000, &reply), 0);
	assert_string_equal(reply, "relayd");
	free(reply);

	assert_int_equal(control_request(f->path, "notify local", 2000, &reply), 0);
	assert_string_equal(reply, "");
	free(reply);
	assert_int_equal(f->notify_calls, 1);
	assert_string_equal(f->last_arg, "local");
	/* spaces around the argument are not part of it */
	assert_int_equal(control_request(f->path, "notify   local2  ", 2000, &reply), 0);
	free(reply);
	assert_string_equal(f->last_arg, "local2");

	assert_int_equal(control_request(f->path, "retry remote", 2000, &reply), 0);
	assert_string_equal(reply, "retrying 'remote'");
	free(reply);

	/* a handler's error, its newline flattened: still one line */
	assert_int_equal(control_request(f->path, "notify nope", 2000, &reply), CONTROL_EREPLY);
	assert_string_equal(reply, "unknown backend 'nope' second line");
	free(reply);
	assert_int_equal(control_request(f->path, "notify", 2000, &reply), CONTROL_EREPLY);
	assert_string_equal(reply, "'notify' needs a backend name");
	free(reply);
	assert_int_equal(control_request(f->path, "status now", 2000, &reply), CONTROL_EREPLY);
	assert_string_equal(reply, "'status' takes no argument");
	free(reply);
	assert_int_equal(control_request(f->path, "explode", 2000, &reply), CONTROL_EREPLY);
	assert_string_equal(reply, "unknown command 'explode'");
	free(reply);
	assert_int_equal(f->notify_calls, 3);

	/* a request line may not hold a newline (it would be two requests) */
	assert_int_equal(control_request(f->path, "notify a\nnotify b", 2000, &reply), -EMSGSIZE);
	assert_null(reply);
}

static void test_status_roundtrip(void **state)
{
	struct fx *f = *state;
	char *reply;
	start(f);
	assert_int_equal(control_request(f->path, "status", 2000, &reply), 0);
	struct control_status *st = malloc(sizeof(*st));
	assert_int_equal(control_status_parse(reply, st), 0);
	free(reply);
	assert_int_equal(st->pid, 4242);
	assert_string_equal(st->version, "9.9.9");
	assert_int_equal(st->started_ns, 1700000000000000000LL);
	assert_int_equal(st->nbackends, 2);
	const struct control_backend_status *b = control_status_find(st, "local");
	assert_non_null(b);
	assert_string_equal(b->state, "retrying");
	assert_string_equal(b->last_error, f->status.backends[0].last_error);
	assert_int_equal(b->head_seq, 17);
	assert_int_equal(b->attempts, 3);
	assert_int_equal(b->next_attempt_ms, 1500);
	assert_int_equal(b->last_delivery_ns, 1700000000123456789LL);
	assert_int_equal(b->delivered_points, 123456789012ULL);
	assert_true(b->points_per_second > 2500.4 && b->points_per_second < 2500.6);
	assert_int_equal(b->max_rate, 5000);
	assert_int_equal(b->max_rate_bytes, 1048576);
	assert_int_equal(b->rate_burst_ms, 2000);
	assert_true(b->throttled);
	assert_true(b->throttled_seconds > 12.24 && b->throttled_seconds < 12.26);
	b = control_status_find(st, "remote");
	assert_non_null(b);
	assert_string_equal(b->state, "up");
	assert_int_equal(b->next_attempt_ms, -1);
	assert_int_equal(b->max_rate, 0); /* no limit */
	assert_false(b->throttled);
	assert_null(control_status_find(st, "other"));
	free(st);
}

static void test_status_parse(void **state)
{
	(void)state;
	struct control_status *st = malloc(sizeof(*st));
	/* unknown keys (nested too) are skipped; missing ones keep defaults */
	assert_int_equal(control_status_parse(" {\"x\":{\"a\":[1,2,{\"b\":null}],\"c\":true},\"pid\":7,"
	                                      "\"backends\":[{\"name\":\"a\\u00e9\\\"\",\"new\":[false],"
	                                      "\"state\":\"holding\"}],\"y\":-1.5e3} ",
	                                      st),
	                 0);
	assert_int_equal(st->pid, 7);
	assert_int_equal(st->nbackends, 1);
	assert_string_equal(st->backends[0].name, "a\xc3\xa9\"");
	assert_string_equal(st->backends[0].state, "holding");
	assert_int_equal(st->backends[0].next_attempt_ms, -1);
	/* a too-long string is cut, not overflowed */
	char big[600];
	memset(big, 0, sizeof(big));
	strcpy(big, "{\"backends\":[{\"state\":\"");
	memset(big + strlen(big), 'x', 100);
	strcat(big, "\"}]}");
	assert_int_equal(control_status_parse(big, st), 0);
	assert_int_equal(strlen(st->backends[0].state), 15);
	/* not a status object */
	assert_int_equal(control_status_parse("", st), -1);
	assert_int_equal(control_status_parse("[]", st), -1);
	assert_int_equal(control_status_parse("{\"pid\":", st), -1);
	assert_int_equal(control_status_parse("{\"pid\":1", st), -1);
	assert_int_equal(control_status_parse("{\"pid\":1} x", st), -1);
	assert_int_equal(control_status_parse("{\"backends\":[{\"name\":\"a\"}", st), -1);
	assert_int_equal(control_status_parse("{\"a\":\"\\q\"}", st), -1);
	char deep[100] = "{\"a\":";
	memset(deep + strlen(deep), '[', 40);
	strcat(deep, "}");
	assert_int_equal(control_status_parse(deep, st), -1);
	assert_int_equal(control_status_parse("{}", st), 0);
	assert_int_equal(st->nbackends, 0);
	/* the rate limit's fields: of their types, or the payload is refused;
	 * absent (an older relayd), no limit */
	assert_int_equal(control_status_parse("{\"backends\":[{\"name\":\"a\"}]}", st), 0);
	assert_int_equal(st->backends[0].max_rate, 0);
	assert_false(st->backends[0].throttled);
	assert_int_equal(control_status_parse("{\"backends\":[{\"throttled\":1}]}", st), -1);
	assert_int_equal(control_status_parse("{\"backends\":[{\"max_rate\":-5}]}", st), -1);
	assert_int_equal(control_status_parse("{\"backends\":[{\"max_rate\":1.5}]}", st), -1);
	free(st);
}

/* What relayctl makes of a reply line (control_request uses it). */
static void test_reply_parse(void **state)
{
	(void)state;
	static const struct {
		const char *line;
		int rc;
		const char *payload;
	} cases[] = {
		{ "ok", 0, "" },
		{ "ok relayd", 0, "relayd" },
		{ "ok {\"pid\":1}\r", 0, "{\"pid\":1}" },
		{ "ok ", 0, "" },
		{ "error", CONTROL_EREPLY, "" },
		{ "error no such backend", CONTROL_EREPLY, "no such backend" },
		{ "okay", -EPROTO, NULL },
		{ "errors x", -EPROTO, NULL },
		{ "", -EPROTO, NULL },
		{ "\r", -EPROTO, NULL },
		{ "OK x", -EPROTO, NULL },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char line[64];
		const char *payload = (const char *)1;
		snprintf(line, sizeof(line), "%s", cases[i].line);
		assert_int_equal(control_reply_parse(line, &payload), cases[i].rc);
		if (cases[i].payload)
			assert_string_equal(payload, cases[i].payload);
		else
			assert_null(payload);
	}
}

/* Pipelined requests, a request split across writes, and many clients at
 * once: every request gets its reply, in order. */
static void test_pipelining_and_many_clients(void **state)
{
	struct fx *f = *state;
	int eof;
	start(f);
	int fd = raw_connect(f->path);
	raw_send(fd, "ping\nretry a\r\n\nnotify b\n");
	char *got = raw_read_lines(fd, 3, &eof);
	assert_string_equal(got, "ok relayd\nok retrying 'a'\nok\n");
	raw_send(fd, "ret");
	usleep(50000);
	raw_send(fd, "ry c\n");
	got = raw_read_lines(fd, 1, &eof);
	assert_string_equal(got, "ok retrying 'c'\n");
	close(fd);

	int fds[40];
	for (int i = 0; i < 40; i++)
		fds[i] = raw_connect(f->path);
	for (int i = 39; i >= 0; i--) {
		char req[64];
		snprintf(req, sizeof(req), "retry b%d\n", i);
		raw_send(fds[i], req);
	}
	for (int i = 0; i < 40; i++) {
		char want[64];
		snprintf(want, sizeof(want), "ok retrying 'b%d'\n", i);
		got = raw_read_lines(fds[i], 1, &eof);
		assert_string_equal(got, want);
		close(fds[i]);
	}
	char *reply;
	assert_int_equal(control_request(f->path, "ping", 2000, &reply), 0);
	free(reply);
}

static void test_long_line(void **state)
{
	struct fx *f = *state;
	int eof;
	start(f);
	int fd = raw_connect(f->path);
	char big[CONTROL_MAX_LINE + 100];
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	raw_send(fd, big);
	char *got = raw_read_lines(fd, 2, &eof);
	assert_string_equal(got, "error request line too long\n");
	assert_true(eof); /* and the server hung up */
	close(fd);
	/* exactly the longest line is fine */
	fd = raw_connect(f->path);
	char line[CONTROL_MAX_LINE + 1];
	memset(line, ' ', CONTROL_MAX_LINE - 1);
	memcpy(line, "ping", 4);
	line[CONTROL_MAX_LINE - 1] = '\n';
	line[CONTROL_MAX_LINE] = '\0';
	raw_send(fd, line);
	got = raw_read_lines(fd, 1, &eof);
	assert_string_equal(got, "ok relayd\n");
	close(fd);
}

/* Issue 10: a client that sends requests and never reads its answers.
 * The server must stop reading from it once about CONTROL_MAX_QUEUED bytes
 * of answers wait, so the client soon cannot send more: what it got in
 * stays within the socket buffers plus that limit, however long it keeps
 * trying. When it reads at last, every request it got in is answered, in
 * order, with a whole status. */
static void test_client_that_never_reads(void **state)
{
	struct fx *f = *state;
	start(f);
	int fd = raw_connect(f->path);
	int fl = fcntl(fd, F_GETFL);
	assert_int_equal(fcntl(fd, F_SETFL, fl | O_NONBLOCK), 0);
	static const char req[] = "status\nstatus\nstatus\nstatus\nstatus\nstatus\nstatus\nstatus\n";
	size_t sent = 0, limit = 4u << 20;
	struct timespec t0, now;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	double idle_since = 0;
	for (;;) {
		size_t at = sent % (sizeof(req) - 1); /* a short send goes on mid-request */
		ssize_t n = send(fd, req + at, sizeof(req) - 1 - at, MSG_NOSIGNAL);
		clock_gettime(CLOCK_MONOTONIC, &now);
		double t = (double)(now.tv_sec - t0.tv_sec) + (double)(now.tv_nsec - t0.tv_nsec) / 1e9;
		if (n > 0) {
			sent += (size_t)n;
			idle_since = t;
		} else {
			assert_true(n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
			usleep(2000);
		}
		/* Stuck for half a second: the server stopped reading. */
		if (sent >= limit || t - idle_since > 0.5 || t > 20)
			break;
	}
	/* Without the limit the server read all of it and queued every
	 * answer (about 60 times the bytes sent). */
	print_message("the server stopped reading after %zu bytes of requests\n", sent);
	assert_true(sent < (1u << 20));
	/* Now read: every whole request sent is answered with a status. */
	assert_int_equal(fcntl(fd, F_SETFL, fl), 0);
	size_t want = sent / 7, got = 0;
	struct rbuf in = RBUF_INIT;
	struct control_status *st = malloc(sizeof(*st));
	while (got < want) {
		rbuf_reserve(&in, 65536);
		ssize_t n = recv(fd, in.data + in.len, in.cap - in.len, 0);
		assert_true(n > 0);
		in.len += (size_t)n;
		char *p = in.data, *nl;
		while ((nl = memchr(p, '\n', in.len - (size_t)(p - in.data)))) {
			*nl = '\0';
			assert_true(strncmp(p, "ok {", 4) == 0);
			assert_int_equal(control_status_parse(p + 3, st), 0);
			assert_int_equal(st->pid, 4242);
			assert_int_equal(st->nbackends, 2);
			got++;
			p = nl + 1;
		}
		size_t rest = in.len - (size_t)(p - in.data);
		memmove(in.data, p, rest);
		in.len = rest;
	}
	assert_int_equal(got, want);
	assert_int_equal(in.len, 0);
	free(st);
	rbuf_release(&in);
	/* and the connection goes on serving */
	raw_send(fd, "ping\n");
	int eof;
	assert_string_equal(raw_read_lines(fd, 1, &eof), "ok relayd\n");
	close(fd);
}

/* A client that shuts down its sending side after its requests still
 * gets every answer, and then the server closes; a last line without its
 * '\n' asks nothing. */
static void test_half_closed_client(void **state)
{
	struct fx *f = *state;
	int eof;
	start(f);
	int fd = raw_connect(f->path);
	raw_send(fd, "ping\nretry x\nping");
	assert_int_equal(shutdown(fd, SHUT_WR), 0);
	char *got = raw_read_lines(fd, 3, &eof);
	assert_string_equal(got, "ok relayd\nok retrying 'x'\n");
	assert_true(eof);
	close(fd);
}

/* A socket file left by a relayd that died is replaced; a live one, or a
 * file that is not a socket, is left alone. */
static void test_stale_and_live_socket(void **state)
{
	struct fx *f = *state;
	struct sockaddr_un sa;
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", f->path);
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	close(fd); /* the file stays, nobody listens */
	char *reply;
	assert_int_equal(control_request(f->path, "ping", 500, &reply), -ECONNREFUSED);
	start(f);
	assert_int_equal(control_request(f->path, "ping", 2000, &reply), 0);
	free(reply);

	/* a second server on the same path: refused, the first goes on */
	uv_loop_t loop2;
	struct control_server s2;
	assert_int_equal(uv_loop_init(&loop2), 0);
	assert_int_equal(control_server_start(&s2, &loop2, f->path, cmds, 3, f), -EADDRINUSE);
	uv_run(&loop2, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&loop2), 0);
	assert_int_equal(control_request(f->path, "ping", 2000, &reply), 0);
	free(reply);

	/* not a socket: never removed */
	char other[300];
	snprintf(other, sizeof(other), "%s/not-a-socket", f->dir);
	FILE *fp = fopen(other, "w");
	fputs("keep me", fp);
	fclose(fp);
	assert_int_equal(uv_loop_init(&loop2), 0);
	assert_int_equal(control_server_start(&s2, &loop2, other, cmds, 3, f), -EEXIST);
	assert_int_equal(uv_loop_close(&loop2), 0);
	struct stat st;
	assert_int_equal(stat(other, &st), 0);
	assert_int_equal(st.st_size, 7);
}

static void *answer_garbage(void *arg)
{
	int lfd = *(int *)arg;
	int c = accept(lfd, NULL, NULL);
	if (c >= 0) {
		char buf[64];
		ssize_t n = recv(c, buf, sizeof(buf), 0);
		(void)n;
		const char *g = "hello there\n";
		n = send(c, g, strlen(g), MSG_NOSIGNAL);
		close(c);
	}
	return NULL;
}

static void test_client_errors(void **state)
{
	struct fx *f = *state;
	char *reply = (char *)1;
	assert_int_equal(control_request(f->path, "ping", 500, &reply), -ENOENT);
	assert_null(reply);
	char longp[200];
	memset(longp, 'x', sizeof(longp) - 1);
	longp[sizeof(longp) - 1] = '\0';
	longp[0] = '/';
	assert_int_equal(control_request(longp, "ping", 500, &reply), -ENAMETOOLONG);
	char p[200];
	assert_int_equal(control_socket_path(longp, p, sizeof(p)), -ENAMETOOLONG);

	/* a listener that never answers: the deadline holds */
	struct sockaddr_un sa;
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", f->path);
	int lfd = socket(AF_UNIX, SOCK_STREAM, 0);
	assert_int_equal(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(lfd, 4), 0);
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_int_equal(control_request(f->path, "ping", 300, &reply), -ETIMEDOUT);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double el = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	assert_true(el >= 0.25 && el < 2.0);
	close(lfd);
	unlink(f->path);
	/* a listener that answers something else */
	lfd = socket(AF_UNIX, SOCK_STREAM, 0);
	assert_int_equal(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(lfd, 4), 0);
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, answer_garbage, &lfd), 0);
	assert_int_equal(control_request(f->path, "ping", 2000, &reply), -EPROTO);
	pthread_join(th, NULL);
	assert_null(reply);
	close(lfd);
	unlink(f->path);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_requests, setup, teardown),
		cmocka_unit_test_setup_teardown(test_status_roundtrip, setup, teardown),
		cmocka_unit_test(test_status_parse),
		cmocka_unit_test(test_reply_parse),
		cmocka_unit_test_setup_teardown(test_pipelining_and_many_clients, setup, teardown),
		cmocka_unit_test_setup_teardown(test_long_line, setup, teardown),
		cmocka_unit_test_setup_teardown(test_client_that_never_reads, setup, teardown),
		cmocka_unit_test_setup_teardown(test_half_closed_client, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stale_and_live_socket, setup, teardown),
		cmocka_unit_test_setup_teardown(test_client_errors, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
