/*
 * control: the unix-socket control channel between relayctl and relayd
 * (protocol in control.h). The server runs on the loop thread and only
 * parses lines and dispatches them to the daemon's handlers: it never
 * touches the queue and never blocks, except once at start to see whether
 * a socket file left behind still has a listener. The client is a small
 * blocking function with a deadline, for relayctl.
 */
#include "relay/control/control.h"
#include "relay/base/json.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define SWEEP_MS 5000

struct control_client {
	struct control_server *srv;
	uv_pipe_t pipe;
	struct control_client *next, *prev;
	uint64_t last_active;  /* uv_now of the last request */
	size_t len;            /* bytes in buf */
	int writes;            /* replies being written */
	size_t queued;         /* their bytes: memory the client holds by not reading */
	int reading;           /* uv_read_start in effect */
	int eof;               /* the client sent all it will send */
	int hangup;            /* an over-long line: answer it, then close */
	int closing;
	char buf[CONTROL_MAX_LINE];
};

struct write_req {
	uv_write_t req;
	struct control_client *c;
	size_t len;
	char data[];
};

int control_socket_path(const char *data_dir, char *out, size_t outlen)
{
	struct sockaddr_un sa;
	int n = snprintf(out, outlen, "%s/%s", data_dir, CONTROL_SOCKET_NAME);
	if (n < 0 || (size_t)n >= outlen || (size_t)n >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	return 0;
}

/* A connected, blocking, close-on-exec unix socket to path, or -errno. */
static int connect_unix(const char *path, int timeout_ms)
{
	struct sockaddr_un sa;
	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	memcpy(sa.sun_path, path, strlen(path) + 1);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	/* A full listen backlog makes connect wait; bound that wait too. */
	struct timeval tv = { timeout_ms / 1000, (timeout_ms % 1000) * 1000 };
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int e = errno == EAGAIN || errno == EINPROGRESS ? ETIMEDOUT : errno;
		close(fd);
		return -e;
	}
	return fd;
}

/*---- server ----*/

static void maybe_stopped(struct control_server *s)
{
	if (!s->stopping || s->handles || s->nclients)
		return;
	/* Remove the socket file only if it is still the one we bound: a
	 * later relayd may have replaced it. */
	struct stat st;
	if (lstat(s->path, &st) == 0 && st.st_dev == s->dev && st.st_ino == s->ino)
		unlink(s->path);
	s->stopping = 0;
	if (s->stopped_cb)
		s->stopped_cb(s);
}

static void client_closed(uv_handle_t *h)
{
	struct control_client *c = h->data;
	struct control_server *s = c->srv;
	if (c->prev)
		c->prev->next = c->next;
	else
		s->clients = c->next;
	if (c->next)
		c->next->prev = c->prev;
	s->nclients--;
	free(c);
	maybe_stopped(s);
}

static void client_close(struct control_client *c)
{
	if (c->closing)
		return;
	c->closing = 1;
	uv_close((uv_handle_t *)&c->pipe, client_closed);
}

static void serve(struct control_client *c);

static void write_done(uv_write_t *req, int status)
{
	struct write_req *wr = relay_container_of(req, struct write_req, req);
	struct control_client *c = wr->c;
	c->writes--;
	c->queued -= wr->len;
	free(wr);
	/* After uv_close, pending writes end here with UV_ECANCELED before the
	 * close callback frees c: c is still valid. */
	if (status < 0) {
		client_close(c);
		return;
	}
	/* Serve again once the client has read half of what held it back
	 * (not at once below the limit, which would stop and start reading
	 * for every answer), or to close after the last answer. */
	if (!c->closing && (c->writes == 0 || (!c->reading && c->queued <= CONTROL_MAX_QUEUED / 2)))
		serve(c);
}

/* Send "ok PAYLOAD\n" or "error MESSAGE\n". */
static void reply(struct control_client *c, int ok, const char *payload, size_t len)
{
	const char *word = ok ? "ok" : "error";
	size_t wl = strlen(word);
	struct write_req *wr = xmalloc(sizeof(*wr) + wl + 1 + len + 1);
	char *p = wr->data;
	memcpy(p, word, wl);
	p += wl;
	if (len) {
		*p++ = ' ';
		for (size_t i = 0; i < len; i++)
			*p++ = payload[i] == '\n' || payload[i] == '\r' ? ' ' : payload[i];
	}
	*p++ = '\n';
	wr->len = (size_t)(p - wr->data);
	wr->c = c;
	uv_buf_t b = uv_buf_init(wr->data, (unsigned)wr->len);
	if (uv_write(&wr->req, (uv_stream_t *)&c->pipe, &b, 1, write_done) < 0) {
		free(wr);
		client_close(c);
		return;
	}
	c->writes++;
	c->queued += wr->len;
	c->srv->requests++;
}

static void reply_str(struct control_client *c, int ok, const char *msg)
{
	reply(c, ok, msg, strlen(msg));
}

/* One request line (NUL-terminated, without its '\n'). */
static void dispatch(struct control_client *c, char *line)
{
	struct control_server *s = c->srv;
	size_t n = strlen(line);
	if (n && line[n - 1] == '\r')
		line[--n] = '\0';
	if (n == 0)
		return; /* a blank line asks nothing */
	char *arg = strchr(line, ' ');
	if (arg) {
		*arg++ = '\0';
		while (*arg == ' ')
			arg++;
		size_t al = strlen(arg);
		while (al && arg[al - 1] == ' ')
			arg[--al] = '\0';
		if (!*arg)
			arg = NULL;
	}
	if (strcmp(line, "ping") == 0) {
		reply_str(c, 1, "relayd");
		return;
	}
	const struct control_command *cmd = NULL;
	for (size_t i = 0; i < s->ncmds && !cmd; i++)
		if (strcmp(s->cmds[i].name, line) == 0)
			cmd = &s->cmds[i];
	struct rbuf out = RBUF_INIT;
	if (!cmd) {
		rbuf_appendf(&out, "unknown command '%.64s'", line);
		reply(c, 0, out.data, out.len);
	} else if (cmd->takes_arg && !arg) {
		rbuf_appendf(&out, "'%s' needs a backend name", cmd->name);
		reply(c, 0, out.data, out.len);
	} else if (!cmd->takes_arg && arg) {
		rbuf_appendf(&out, "'%s' takes no argument", cmd->name);
		reply(c, 0, out.data, out.len);
	} else {
		int rc = cmd->fn(s->data, cmd->takes_arg ? arg : NULL, &out);
		if (rc && out.len == 0)
			rbuf_appendf(&out, "'%s' failed", cmd->name);
		reply(c, rc == 0, out.data, out.len);
	}
	rbuf_release(&out);
}

static void client_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct control_client *c = h->data;
	(void)suggested;
	buf->base = c->buf + c->len;
	buf->len = sizeof(c->buf) - c->len;
}

static void client_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf);

static void read_stop(struct control_client *c)
{
	if (c->reading)
		uv_read_stop((uv_stream_t *)&c->pipe);
	c->reading = 0;
}

static void read_start(struct control_client *c)
{
	if (c->reading || c->closing)
		return;
	if (uv_read_start((uv_stream_t *)&c->pipe, client_alloc, client_read) < 0) {
		client_close(c);
		return;
	}
	c->reading = 1;
}

/*
 * Answer the whole lines waiting in c->buf, in order, while the answers
 * queued for c stay within CONTROL_MAX_QUEUED; then read on. A client that
 * sends requests without reading the answers would otherwise make relayd
 * hold every answer in memory: past the limit, its requests are left
 * unread (in c->buf and in the socket, where the kernel bounds them) until
 * it reads, and write_done serves it again.
 */
static void serve(struct control_client *c)
{
	char *nl;
	while (!c->closing && !c->hangup && c->queued <= CONTROL_MAX_QUEUED && (nl = memchr(c->buf, '\n', c->len))) {
		*nl = '\0';
		c->last_active = uv_now(c->srv->loop);
		dispatch(c, c->buf);
		size_t used = (size_t)(nl + 1 - c->buf);
		memmove(c->buf, nl + 1, c->len - used);
		c->len -= used;
	}
	if (c->closing)
		return;
	if (c->queued > CONTROL_MAX_QUEUED && !c->hangup) {
		read_stop(c);
		return;
	}
	if (!c->hangup && !c->eof && c->len == sizeof(c->buf)) {
		/* No '\n' within CONTROL_MAX_LINE: answer and hang up, rather
		 * than buffer without bound. */
		read_stop(c);
		c->len = 0;
		c->hangup = 1;
		reply_str(c, 0, "request line too long");
		if (c->closing)
			return;
	}
	if (c->hangup || c->eof) {
		/* Nothing more will be read: close once the answers are out
		 * (a half-closed client still gets them). */
		read_stop(c);
		if (c->writes == 0)
			client_close(c);
		return;
	}
	read_start(c);
}

static void client_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
	struct control_client *c = st->data;
	(void)buf;
	if (nread == UV_EOF) {
		c->eof = 1; /* a last line without its '\n' asks nothing */
		serve(c);
		return;
	}
	if (nread < 0) {
		client_close(c); /* an error: the client is gone */
		return;
	}
	c->len += (size_t)nread;
	c->last_active = uv_now(c->srv->loop);
	serve(c);
}

static void on_connection(uv_stream_t *server, int status)
{
	struct control_server *s = server->data;
	if (status < 0 || s->stopping)
		return;
	struct control_client *c = xcalloc(1, sizeof(*c));
	c->srv = s;
	if (uv_pipe_init(s->loop, &c->pipe, 0) < 0) {
		free(c);
		return;
	}
	c->pipe.data = c;
	c->next = s->clients;
	if (s->clients)
		s->clients->prev = c;
	s->clients = c;
	s->nclients++;
	c->last_active = uv_now(s->loop);
	if (uv_accept(server, (uv_stream_t *)&c->pipe) < 0 || s->nclients > CONTROL_MAX_CLIENTS)
		client_close(c);
	else
		read_start(c);
}

static void sweep(uv_timer_t *t)
{
	struct control_server *s = t->data;
	uint64_t now = uv_now(s->loop);
	for (struct control_client *c = s->clients; c; c = c->next)
		if (!c->closing && now - c->last_active >= CONTROL_IDLE_MS)
			client_close(c);
}

static void handle_closed(uv_handle_t *h)
{
	struct control_server *s = h->data;
	s->handles--;
	maybe_stopped(s);
}

/* Failed start: the listener's close completes on the loop; nothing to do
 * then (s is not stopping, no callback). */
static void start_failed_closed(uv_handle_t *h)
{
	(void)h;
}

int control_server_start(struct control_server *s, uv_loop_t *loop, const char *path,
                         const struct control_command *cmds, size_t ncmds, void *data)
{
	struct stat st;
	int rc;

	memset(s, 0, sizeof(*s));
	s->loop = loop;
	s->cmds = cmds;
	s->ncmds = ncmds;
	s->data = data;
	if (strlen(path) >= sizeof(s->path))
		return -ENAMETOOLONG;
	memcpy(s->path, path, strlen(path) + 1);

	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode))
			return -EEXIST; /* not ours to remove */
		/* Left behind, or live? Only a listener answers a connect. */
		int fd = connect_unix(path, 1000);
		if (fd >= 0) {
			close(fd);
			return -EADDRINUSE;
		}
		if (fd != -ECONNREFUSED)
			return fd;
		if (unlink(path) < 0 && errno != ENOENT)
			return -errno;
	} else if (errno != ENOENT) {
		return -errno;
	}

	if ((rc = uv_pipe_init(loop, &s->listener, 0)) < 0)
		return rc;
	s->listener.data = s;
	if ((rc = uv_pipe_bind(&s->listener, path)) < 0)
		goto fail;
	/* 0600 before listen: until then a connect is refused, so no one gets
	 * in under the umask's mode. */
	if (chmod(path, 0600) < 0 || lstat(path, &st) < 0) {
		rc = -errno;
		unlink(path);
		goto fail;
	}
	s->dev = st.st_dev;
	s->ino = st.st_ino;
	if ((rc = uv_listen((uv_stream_t *)&s->listener, 16, on_connection)) < 0) {
		unlink(path);
		goto fail;
	}
	s->handles = 1;
	uv_timer_init(loop, &s->sweep);
	s->sweep.data = s;
	s->handles++;
	uv_timer_start(&s->sweep, sweep, SWEEP_MS, SWEEP_MS);
	uv_unref((uv_handle_t *)&s->sweep); /* idle clients never keep the loop alive */
	return 0;
fail:
	uv_close((uv_handle_t *)&s->listener, start_failed_closed);
	return rc;
}

void control_server_stop(struct control_server *s, void (*cb)(struct control_server *s))
{
	s->stopping = 1;
	s->stopped_cb = cb;
	if (s->handles) {
		uv_close((uv_handle_t *)&s->listener, handle_closed);
		uv_close((uv_handle_t *)&s->sweep, handle_closed);
	}
	for (struct control_client *c = s->clients; c; c = c->next)
		client_close(c);
	maybe_stopped(s);
}

/*---- client ----*/

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int control_request(const char *path, const char *line, int timeout_ms, char **reply_out)
{
	*reply_out = NULL;
	size_t ll = strlen(line);
	if (ll + 1 > CONTROL_MAX_LINE || memchr(line, '\n', ll))
		return -EMSGSIZE;
	int64_t deadline = mono_ms() + timeout_ms;
	int fd = connect_unix(path, timeout_ms);
	if (fd < 0)
		return fd;
	char *req = xmalloc(ll + 1);
	memcpy(req, line, ll);
	req[ll] = '\n';
	size_t off = 0;
	int rc = 0;
	while (off < ll + 1) {
		/* MSG_NOSIGNAL: a relayd that goes away is an error, not SIGPIPE. */
		ssize_t n = send(fd, req + off, ll + 1 - off, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			rc = errno == EAGAIN ? -ETIMEDOUT : -errno;
			break;
		}
		off += (size_t)n;
	}
	free(req);
	struct rbuf in = RBUF_INIT;
	char *nl = NULL;
	while (rc == 0 && !nl) {
		int64_t left = deadline - mono_ms();
		if (left <= 0) {
			rc = -ETIMEDOUT;
			break;
		}
		struct pollfd pfd = { fd, POLLIN, 0 };
		int pr = poll(&pfd, 1, (int)left);
		if (pr < 0 && errno == EINTR)
			continue;
		if (pr < 0) {
			rc = -errno;
			break;
		}
		if (pr == 0) {
			rc = -ETIMEDOUT;
			break;
		}
		rbuf_reserve(&in, 4096);
		ssize_t n = recv(fd, in.data + in.len, in.cap - in.len, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = -errno;
			break;
		}
		if (n == 0) {
			rc = -ECONNRESET;
			break;
		}
		size_t old = in.len;
		in.len += (size_t)n;
		nl = memchr(in.data + old, '\n', (size_t)n);
		if (!nl && in.len > CONTROL_MAX_REPLY)
			rc = -EMSGSIZE;
	}
	close(fd);
	if (rc == 0) {
		*nl = '\0';
		const char *payload;
		rc = control_reply_parse(in.data, &payload);
		if (payload)
			*reply_out = xstrdup(payload);
	}
	rbuf_release(&in);
	return rc;
}

int control_reply_parse(char *line, const char **payload)
{
	size_t n = strlen(line);
	if (n && line[n - 1] == '\r')
		line[--n] = '\0';
	*payload = NULL;
	if (strncmp(line, "ok", 2) == 0 && (line[2] == '\0' || line[2] == ' ')) {
		*payload = line[2] ? line + 3 : "";
		return 0;
	}
	if (strncmp(line, "error", 5) == 0 && (line[5] == '\0' || line[5] == ' ')) {
		*payload = line[5] ? line + 6 : "";
		return CONTROL_EREPLY;
	}
	return -EPROTO;
}

/*---- status payload ----*/

void control_status_format(const struct control_status *st, struct rbuf *out)
{
	json_t *o = json_object(), *arr = json_array();
	json_object_set_new(o, "pid", json_integer(st->pid));
	json_object_set_new(o, "version", rjson_cstr(st->version));
	json_object_set_new(o, "started_ns", json_integer(st->started_ns));
	for (size_t i = 0; i < st->nbackends && i < CONTROL_MAX_BACKENDS; i++) {
		const struct control_backend_status *b = &st->backends[i];
		json_t *e = json_object();
		json_object_set_new(e, "name", rjson_cstr(b->name));
		json_object_set_new(e, "state", rjson_cstr(b->state));
		json_object_set_new(e, "last_error", rjson_cstr(b->last_error));
		json_object_set_new(e, "head_seq", json_integer((json_int_t)b->head_seq));
		json_object_set_new(e, "attempts", json_integer(b->attempts));
		json_object_set_new(e, "next_attempt_ms", json_integer(b->next_attempt_ms));
		json_object_set_new(e, "last_delivery_ns", json_integer(b->last_delivery_ns));
		json_object_set_new(e, "delivered_points", json_integer((json_int_t)b->delivered_points));
		/* a rate is shown to the millipoint; JSON has no NaN */
		double rate = isfinite(b->points_per_second) ? round(b->points_per_second * 1000) / 1000 : 0.0;
		json_object_set_new(e, "points_per_second", json_real(rate));
		json_object_set_new(e, "max_rate", json_integer((json_int_t)b->max_rate));
		json_object_set_new(e, "max_rate_bytes", json_integer((json_int_t)b->max_rate_bytes));
		json_object_set_new(e, "rate_burst_ms", json_integer((json_int_t)b->rate_burst_ms));
		json_object_set_new(e, "throttled", json_boolean(b->throttled));
		double waited = isfinite(b->throttled_seconds) ? round(b->throttled_seconds * 1000) / 1000 : 0.0;
		json_object_set_new(e, "throttled_seconds", json_real(waited));
		json_array_append_new(arr, e);
	}
	json_object_set_new(o, "backends", arr);
	rjson_append_new(out, o);
}

/* Copy a string into out[0..outlen), cut to outlen - 1 bytes at a
 * character's start: a cut inside a UTF-8 sequence would turn into U+FFFD
 * at the next format and change the string again. */
static void copy_cut(char *out, size_t outlen, const char *s)
{
	size_t n = strlen(s);
	if (n >= outlen) {
		n = outlen - 1;
		while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
			n--;
	}
	memcpy(out, s, n);
	out[n] = '\0';
}

/* obj[key] into *out when present. A key that is present with another type
 * makes the payload invalid (-1); a missing key leaves *out alone. */
static int get_str(const json_t *obj, const char *key, char *out, size_t outlen)
{
	const json_t *v = json_object_get(obj, key);
	if (!v)
		return 0;
	if (!json_is_string(v))
		return -1;
	copy_cut(out, outlen, json_string_value(v));
	return 0;
}

/* Integers exactly (a double would round 64-bit values): a number with a
 * fraction or exponent is refused, and so is a negative unsigned one. */
static int get_int(const json_t *obj, const char *key, int is_signed, int64_t *out)
{
	const json_t *v = json_object_get(obj, key);
	if (!v)
		return 0;
	if (!json_is_integer(v) || (!is_signed && json_integer_value(v) < 0))
		return -1;
	*out = (int64_t)json_integer_value(v);
	return 0;
}

static int get_real(const json_t *obj, const char *key, double *out)
{
	const json_t *v = json_object_get(obj, key);
	if (!v)
		return 0;
	if (!json_is_number(v))
		return -1;
	*out = json_number_value(v);
	return 0;
}

/* obj[key], a boolean, into *out when present. */
static int get_bool(const json_t *obj, const char *key, int *out)
{
	const json_t *v = json_object_get(obj, key);
	if (!v)
		return 0;
	if (!json_is_boolean(v))
		return -1;
	*out = json_is_true(v);
	return 0;
}

static int parse_backend(const json_t *e, struct control_backend_status *b)
{
	int64_t head = 0, attempts = 0, delivered = 0, max_rate = 0, max_bytes = 0, burst = 0;
	memset(b, 0, sizeof(*b));
	b->next_attempt_ms = -1;
	if (!json_is_object(e))
		return -1;
	if (get_str(e, "name", b->name, sizeof(b->name)) || get_str(e, "state", b->state, sizeof(b->state)) ||
	    get_str(e, "last_error", b->last_error, sizeof(b->last_error)) || get_int(e, "head_seq", 0, &head) ||
	    get_int(e, "attempts", 0, &attempts) || get_int(e, "next_attempt_ms", 1, &b->next_attempt_ms) ||
	    get_int(e, "last_delivery_ns", 1, &b->last_delivery_ns) ||
	    get_int(e, "delivered_points", 0, &delivered) || get_real(e, "points_per_second", &b->points_per_second) ||
	    get_int(e, "max_rate", 0, &max_rate) || get_int(e, "max_rate_bytes", 0, &max_bytes) ||
	    get_int(e, "rate_burst_ms", 0, &burst) || get_bool(e, "throttled", &b->throttled) ||
	    get_real(e, "throttled_seconds", &b->throttled_seconds))
		return -1;
	b->max_rate = (uint64_t)max_rate;
	b->max_rate_bytes = (uint64_t)max_bytes;
	b->rate_burst_ms = (uint64_t)burst;
	b->head_seq = (uint64_t)head;
	b->attempts = attempts > UINT32_MAX ? UINT32_MAX : (uint32_t)attempts;
	b->delivered_points = (uint64_t)delivered;
	return 0;
}

int control_status_parse(const char *text, struct control_status *st)
{
	memset(st, 0, sizeof(*st));
	json_t *o = rjson_parse(text, strlen(text), NULL, 0);
	int rc = -1;
	if (!json_is_object(o))
		goto out;
	if (get_int(o, "pid", 1, &st->pid) || get_str(o, "version", st->version, sizeof(st->version)) ||
	    get_int(o, "started_ns", 1, &st->started_ns))
		goto out;
	const json_t *arr = json_object_get(o, "backends");
	if (arr && !json_is_array(arr))
		goto out;
	size_t i;
	const json_t *e;
	json_array_foreach(arr, i, e) {
		struct control_backend_status tmp;
		struct control_backend_status *b = st->nbackends < CONTROL_MAX_BACKENDS ? &st->backends[st->nbackends] : &tmp;
		if (parse_backend(e, b))
			goto out;
		if (b != &tmp)
			st->nbackends++;
	}
	rc = 0;
out:
	json_decref(o);
	return rc;
}

const struct control_backend_status *control_status_find(const struct control_status *st, const char *name)
{
	for (size_t i = 0; i < st->nbackends; i++)
		if (strcmp(st->backends[i].name, name) == 0)
			return &st->backends[i];
	return NULL;
}
