/*
 * bench_http.c: a blocking HTTP/1.1 client for loopback (see benchkit.h).
 * One request at a time per connection; every socket call is bounded by
 * IO_TIMEOUT_S, so a hung server cannot hang a benchmark.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "benchkit.h"

#define IO_TIMEOUT_S 30               /* per send/recv: a hung server cannot hang us */
#define MAX_HEAD 65536                /* bytes of a response's status line + headers */
#define MAX_RESP_BODY (64u << 20)

int tcp_connect(uint16_t port, int *out)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	struct timeval tv = { .tv_sec = IO_TIMEOUT_S };
	int one = 1;
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port),
	                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	/* Small requests (the ping) must not wait for Nagle; the timeouts bound
	 * every blocking call. */
	if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0 ||
	    connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int err = errno;
		close(fd);
		return -err;
	}
	*out = fd;
	return 0;
}

int http_conn_open(struct http_conn *c, uint16_t port)
{
	c->len = 0;
	return tcp_connect(port, &c->fd);
}

void http_conn_close(struct http_conn *c)
{
	if (c->fd >= 0 && close(c->fd) < 0)
		bench_err("close: %s\n", strerror(errno));
	c->fd = -1;
	c->len = 0;
}

void http_conn_release(struct http_conn *c)
{
	http_conn_close(c);
	free(c->buf);
	c->buf = NULL;
	c->cap = 0;
}

int send_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return errno == EAGAIN ? -ETIMEDOUT : -errno;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Receive more bytes into c->buf. Returns the count, 0 at EOF, or -errno (-ETIMEDOUT past c->deadline_ns). */
static ssize_t conn_fill(struct http_conn *c)
{
	if (c->cap - c->len < 4096) {
		c->cap = c->cap ? c->cap * 2 : 16384;
		c->buf = xrealloc(c->buf, c->cap);
	}
	if (c->deadline_ns && now_mono_ns() >= c->deadline_ns)
		return -ETIMEDOUT;
	for (;;) {
		ssize_t r = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
		if (r >= 0) {
			c->len += (size_t)r;
			return r;
		}
		if (errno != EINTR)
			return errno == EAGAIN ? -ETIMEDOUT : -errno;
	}
}

/*
 * Parse a response head p[0..n) (status line and headers, ending in an
 * empty line). *clen gets Content-Length, or -1 when absent. Transfer-Encoding
 * chunked sets *chunked when chunked is not NULL, and is refused otherwise.
 */
static int parse_head(const char *p, size_t n, struct http_resp *r, long long *clen, int *chunked,
                      char *err, size_t errlen)
{
	if (n < 12 || memcmp(p, "HTTP/1.", 7) || p[8] != ' ' ||
	    p[9] < '1' || p[9] > '5' || p[10] < '0' || p[10] > '9' || p[11] < '0' || p[11] > '9') {
		snprintf(err, errlen, "malformed status line");
		return -1;
	}
	r->status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
	r->close = p[7] == '0'; /* HTTP/1.0: we never ask for keep-alive there */
	*clen = -1;
	const char *line = (const char *)memmem(p, n, "\r\n", 2) + 2, *end = p + n;
	while (line < end) {
		const char *eol = memmem(line, (size_t)(end - line), "\r\n", 2);
		if (!eol || eol == line)
			break;
		const char *colon = memchr(line, ':', (size_t)(eol - line));
		if (!colon) {
			snprintf(err, errlen, "malformed header line");
			return -1;
		}
		size_t nlen = (size_t)(colon - line);
		const char *v = colon + 1;
		while (v < eol && (*v == ' ' || *v == '\t'))
			v++;
		size_t vlen = (size_t)(eol - v);
		while (vlen && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t'))
			vlen--;
		if (nlen == 14 && !strncasecmp(line, "Content-Length", 14)) {
			char num[24];
			char *numend;
			if (vlen == 0 || vlen >= sizeof(num)) {
				snprintf(err, errlen, "bad Content-Length");
				return -1;
			}
			memcpy(num, v, vlen);
			num[vlen] = '\0';
			errno = 0;
			*clen = strtoll(num, &numend, 10);
			if (errno || *numend || *clen < 0) {
				snprintf(err, errlen, "bad Content-Length '%s'", num);
				return -1;
			}
		} else if (chunked && nlen == 17 && !strncasecmp(line, "Transfer-Encoding", 17) &&
		           vlen == 7 && !strncasecmp(v, "chunked", 7)) {
			*chunked = 1;
		} else if (nlen == 17 && !strncasecmp(line, "Transfer-Encoding", 17) &&
		           !(vlen == 8 && !strncasecmp(v, "identity", 8))) {
			/* Control requests go out as HTTP/1.0, so that no server
			 * answers them chunked. */
			snprintf(err, errlen, "unsupported Transfer-Encoding '%.*s'", (int)vlen, v);
			return -1;
		} else if (nlen == 10 && !strncasecmp(line, "Connection", 10) &&
		           vlen == 5 && !strncasecmp(v, "close", 5)) {
			r->close = 1;
		}
		line = eol + 2;
	}
	return 0;
}

int http_parse_head(const char *p, size_t n, struct http_resp *r, long long *clen, char *err, size_t errlen)
{
	return parse_head(p, n, r, clen, NULL, err, errlen);
}

/*
 * Read one complete response from c (head, then the body by Content-Length,
 * or to EOF when there is none) and consume it; the whole body goes to full
 * too when full is not NULL. Returns 0, or -1 with the reason in err (the
 * connection is then unusable).
 */
void http_resp_take(char *buf, size_t *len, size_t head, size_t body_len, struct http_resp *r, struct rbuf *full)
{
	r->body_len = body_len;
	size_t keep = body_len < ERR_BODY_MAX ? body_len : ERR_BODY_MAX;
	memcpy(r->body, buf + head, keep);
	r->body[keep] = '\0';
	if (full) {
		rbuf_reset(full);
		rbuf_append(full, buf + head, body_len);
	}
	/* Consume exactly this response; anything after it belongs to the next. */
	size_t used = head + body_len;
	memmove(buf, buf + used, *len - used);
	*len -= used;
}

int http_read_response(struct http_conn *c, struct http_resp *r, struct rbuf *full, char *err,
                              size_t errlen)
{
	const char *sep;
	ssize_t got;
	while (!(sep = c->len ? memmem(c->buf, c->len, "\r\n\r\n", 4) : NULL)) {
		if (c->len >= MAX_HEAD) {
			snprintf(err, errlen, "response head over %d bytes", MAX_HEAD);
			return -1;
		}
		if ((got = conn_fill(c)) <= 0) {
			snprintf(err, errlen, "%s while reading a response head",
			         got ? strerror((int)-got) : "connection closed");
			return -1;
		}
	}
	size_t head = (size_t)(sep - c->buf) + 4;
	long long clen;
	if (parse_head(c->buf, head, r, &clen, NULL, err, errlen) < 0)
		return -1;
	if (r->status < 200) {
		snprintf(err, errlen, "unexpected interim response %d", r->status);
		return -1;
	}
	int to_eof = 0;
	if (r->status == 204 || r->status == 304)
		clen = 0;
	else if (clen < 0)
		to_eof = r->close = 1;
	if (clen > (long long)MAX_RESP_BODY) {
		snprintf(err, errlen, "response body of %lld bytes", clen);
		return -1;
	}
	while (to_eof ? c->len - head < MAX_RESP_BODY : c->len - head < (size_t)clen) {
		if ((got = conn_fill(c)) < 0) {
			snprintf(err, errlen, "%s while reading a response body", strerror((int)-got));
			return -1;
		}
		if (got == 0 && to_eof)
			break;
		if (got == 0) {
			snprintf(err, errlen, "connection closed inside a response body");
			return -1;
		}
	}
	http_resp_take(c->buf, &c->len, head, to_eof ? c->len - head : (size_t)clen, r, full);
	return 0;
}

int http_roundtrip(struct http_conn *c, const char *req, size_t len, struct http_resp *r,
                          char *err, size_t errlen)
{
	int rc = send_all(c->fd, req, len);
	if (rc < 0) {
		snprintf(err, errlen, "cannot send request: %s", strerror(-rc));
		return -1;
	}
	return http_read_response(c, r, NULL, err, errlen);
}

/*---- streamed responses ----*/

#define STREAM_BUF (256u << 10) /* receive buffer while streaming: fewer, larger recv calls */
#define MAX_CHUNK_LINE 1024     /* a chunk-size line (with extensions) or a trailer line */

/* Drop the consumed bytes c->buf[0..*pos) and set *pos to 0. */
static void stream_compact(struct http_conn *c, size_t *pos)
{
	memmove(c->buf, c->buf + *pos, c->len - *pos);
	c->len -= *pos;
	*pos = 0;
}

/* Receive until c->buf holds a CRLF at or after *pos; *eol gets its offset. Returns 0 or -1 with err. */
static int stream_line(struct http_conn *c, size_t *pos, size_t *eol, char *err, size_t errlen)
{
	for (;;) {
		const char *p = c->len > *pos ? memmem(c->buf + *pos, c->len - *pos, "\r\n", 2) : NULL;
		if (p) {
			*eol = (size_t)(p - c->buf);
			return 0;
		}
		if (c->len - *pos > MAX_CHUNK_LINE) {
			snprintf(err, errlen, "chunk framing line over %d bytes", MAX_CHUNK_LINE);
			return -1;
		}
		stream_compact(c, pos);
		ssize_t got = conn_fill(c);
		if (got <= 0) {
			snprintf(err, errlen, "%s inside a chunked body", got ? strerror((int)-got) : "connection closed");
			return -1;
		}
	}
}

/* Count up to *left body bytes of c->buf from *pos, keeping the first ones in r->body. */
static void stream_take(struct http_conn *c, size_t *pos, uint64_t *left, struct http_resp *r)
{
	size_t n = c->len - *pos;
	if ((uint64_t)n > *left)
		n = (size_t)*left;
	if (r->body_len < ERR_BODY_MAX) {
		size_t k = ERR_BODY_MAX - r->body_len < n ? ERR_BODY_MAX - r->body_len : n;
		memcpy(r->body + r->body_len, c->buf + *pos, k);
	}
	r->body_len += n;
	*pos += n;
	*left -= n;
	if (*pos == c->len)
		*pos = c->len = 0; /* all consumed: the next recv gets the whole buffer */
}

/*
 * Count *left body bytes (to EOF when to_eof); receives as needed. Returns 0
 * or -1 with err.
 */
static int stream_body(struct http_conn *c, size_t *pos, uint64_t left, int to_eof, struct http_resp *r,
                       char *err, size_t errlen)
{
	while (left > 0) {
		if (*pos == c->len) {
			*pos = c->len = 0;
			ssize_t got = conn_fill(c);
			if (got < 0) {
				snprintf(err, errlen, "%s while reading a response body", strerror((int)-got));
				return -1;
			}
			if (got == 0) {
				if (to_eof)
					return 0;
				snprintf(err, errlen, "connection closed inside a response body");
				return -1;
			}
		}
		stream_take(c, pos, &left, r);
	}
	return 0;
}

/* The chunks of a chunked body from *pos, through the trailers. Returns 0 or -1 with err. */
static int stream_chunks(struct http_conn *c, size_t *pos, struct http_resp *r, uint64_t *wire, char *err,
                         size_t errlen)
{
	size_t eol;
	for (;;) {
		if (stream_line(c, pos, &eol, err, errlen) < 0)
			return -1;
		char *end;
		const char *p = c->buf + *pos;
		errno = 0;
		unsigned long long size = strtoull(p, &end, 16);
		if (end == p || errno || (end < c->buf + eol && *end != ';' && *end != ' ' && *end != '\t') ||
		    *p == '-' || *p == '+' || *p == ' ') {
			snprintf(err, errlen, "bad chunk size line '%.*s'", (int)(eol - *pos < 40 ? eol - *pos : 40), p);
			return -1;
		}
		*wire += eol + 2 - *pos;
		*pos = eol + 2;
		if (size == 0)
			break;
		if (stream_body(c, pos, size, 0, r, err, errlen) < 0)
			return -1;
		*wire += size;
		if (stream_line(c, pos, &eol, err, errlen) < 0)
			return -1;
		if (eol != *pos) {
			snprintf(err, errlen, "no CRLF after a chunk's data");
			return -1;
		}
		*wire += 2;
		*pos += 2;
	}
	/* Trailers, if any, end with an empty line. */
	do {
		if (stream_line(c, pos, &eol, err, errlen) < 0)
			return -1;
		*wire += eol + 2 - *pos;
		size_t was = *pos;
		*pos = eol + 2;
		if (eol == was)
			break;
	} while (1);
	return 0;
}

int http_read_stream(struct http_conn *c, struct http_resp *r, uint64_t *wire, char *err, size_t errlen)
{
	const char *sep;
	ssize_t got;
	uint64_t w = 0;
	if (c->cap < STREAM_BUF) {
		c->buf = xrealloc(c->buf, STREAM_BUF);
		c->cap = STREAM_BUF;
	}
	while (!(sep = c->len ? memmem(c->buf, c->len, "\r\n\r\n", 4) : NULL)) {
		if (c->len >= MAX_HEAD) {
			snprintf(err, errlen, "response head over %d bytes", MAX_HEAD);
			return -1;
		}
		if ((got = conn_fill(c)) <= 0) {
			snprintf(err, errlen, "%s while reading a response head",
			         got ? strerror((int)-got) : "connection closed");
			return -1;
		}
	}
	size_t pos = (size_t)(sep - c->buf) + 4;
	long long clen;
	int chunked = 0, rc;
	*r = (struct http_resp){ 0 };
	if (parse_head(c->buf, pos, r, &clen, &chunked, err, errlen) < 0)
		return -1;
	if (r->status < 200) {
		snprintf(err, errlen, "unexpected interim response %d", r->status);
		return -1;
	}
	r->chunked = chunked;
	if (r->status == 204 || r->status == 304) {
		clen = 0;
		chunked = 0;
	}
	if (chunked) {
		rc = stream_chunks(c, &pos, r, &w, err, errlen);
	} else {
		if (clen < 0)
			r->close = 1;
		rc = stream_body(c, &pos, clen < 0 ? UINT64_MAX : (uint64_t)clen, clen < 0, r, err, errlen);
		w = r->body_len;
	}
	if (rc < 0)
		return -1;
	r->body[r->body_len < ERR_BODY_MAX ? r->body_len : ERR_BODY_MAX] = '\0';
	stream_compact(c, &pos); /* anything after this response belongs to the next */
	if (wire)
		*wire = w;
	return 0;
}

/* GET /ping on a fresh connection. Returns the status, or -1. */
int http_ping(uint16_t port)
{
	struct http_conn c = { .fd = -1 };
	struct http_resp r;
	char req[128], err[256];
	int n = snprintf(req, sizeof(req),
	                 "GET /ping HTTP/1.1\r\nHost: 127.0.0.1:%u\r\nConnection: close\r\n\r\n", port);
	int status = -1;
	if (http_conn_open(&c, port) == 0 &&
	    http_roundtrip(&c, req, (size_t)n, &r, err, sizeof(err)) == 0)
		status = r.status;
	http_conn_release(&c);
	return status;
}

/*
 * METHOD target as HTTP/1.0 (no body, no chunked answer: influxd chunks
 * even small HTTP/1.1 answers) on a fresh connection; the whole response
 * body goes to body (NUL-terminated). Returns the status, or -1.
 */
int http_control(uint16_t port, const char *method, const char *target, struct rbuf *body)
{
	struct http_conn c = { .fd = -1 };
	struct http_resp r;
	struct rbuf req = RBUF_INIT;
	char err[256];
	int status = -1;
	rbuf_appendf(&req, "%s %s HTTP/1.0\r\nHost: 127.0.0.1:%u\r\nContent-Length: 0\r\n\r\n", method, target,
	             port);
	rbuf_reset(body);
	if (http_conn_open(&c, port) == 0 && send_all(c.fd, req.data, req.len) == 0 &&
	    http_read_response(&c, &r, body, err, sizeof(err)) == 0)
		status = r.status;
	rbuf_cstr(body);
	http_conn_close(&c);
	http_conn_release(&c);
	rbuf_release(&req);
	return status;
}

/* The unsigned number after "key": at or after from in json. Returns 0 or -1. */
int json_u64(const char *from, const char *key, uint64_t *out)
{
	char pat[64];
	char *end;
	snprintf(pat, sizeof(pat), "\"%s\":", key);
	const char *p = from ? strstr(from, pat) : NULL;
	if (!p)
		return -1;
	p += strlen(pat);
	while (*p == ' ')
		p++;
	if (*p < '0' || *p > '9')
		return -1;
	errno = 0;
	unsigned long long v = strtoull(p, &end, 10);
	if (errno || end == p)
		return -1;
	*out = v;
	return 0;
}
