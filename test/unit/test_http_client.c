/*
 * test_http_client: the backend client's handling of what a backend sends:
 * Retry-After in both of its forms, numbers too large for 64 bits, and
 * values that are neither; then whole answers through the read callback
 * (http_client_feed_response), at once and a byte at a time: interim
 * answers, 101, framing that overflows, bounded buffering, answers that
 * end with the connection, and when a connection is not used again.
 * Then the client over TLS against a server of the transport layer in
 * this process (certificates made here): keep-alive, a reconnect that
 * resumes its session, a certificate that fails verification (held, with
 * why), and a context that could not be made.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "relay/delivery/http_client.h"
#include "relay/base/outcome.h"
#include "test/unit/tls_server.h"

static uint64_t ra(const char *v, int64_t now_s)
{
	return http_parse_retry_after(v, strlen(v), now_s);
}

static void test_retry_after_seconds(void **state)
{
	(void)state;
	assert_int_equal(ra("0", 0), 0);
	assert_int_equal(ra("2", 0), 2);
	assert_int_equal(ra(" \t120 ", 0), 120);
	assert_int_equal(ra("007", 0), 7);
	assert_int_equal(ra("18446744073709551615", 0), UINT64_MAX);
	/* Too large for 64 bits: saturated, never wrapped (2^64 + 1 must not
	 * come out as 1, nor 2^61 as a product that is 0 in ms). */
	assert_int_equal(ra("2305843009213693952", 0), 2305843009213693952ULL);
	assert_int_equal(ra("18446744073709551617", 0), UINT64_MAX);
	assert_int_equal(ra("99999999999999999999999999999999999999999", 0), UINT64_MAX);
	/* Not delay-seconds: ignored (the backoff decides). */
	static const char *const bad[] = { "", "  ", "-1", "+5", "5s", "1e3", "1.5", "7 7", "0x10", "\xd9\xa3" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (ra(bad[i], 0) != 0)
			fail_msg("Retry-After '%s' was taken as %llu s", bad[i], (unsigned long long)ra(bad[i], 0));
	/* Only len bytes are read. */
	assert_int_equal(http_parse_retry_after("12345", 2, 0), 12);
}

static void test_retry_after_date(void **state)
{
	(void)state;
	const int64_t t = 784111777; /* Sun, 06 Nov 1994 08:49:37 GMT */
	assert_int_equal(ra("Sun, 06 Nov 1994 08:49:37 GMT", t - 30), 30);
	assert_int_equal(ra("  Sun, 06 Nov 1994 08:49:37 GMT ", t - 1), 1);
	/* Past or now: retry when the backoff says. */
	assert_int_equal(ra("Sun, 06 Nov 1994 08:49:37 GMT", t), 0);
	assert_int_equal(ra("Sun, 06 Nov 1994 08:49:37 GMT", t + 3600), 0);
	assert_int_equal(ra("Thu, 01 Jan 1970 00:00:10 GMT", 0), 10);
	assert_int_equal(ra("Tue, 29 Feb 2028 23:59:59 GMT", 1835481599 - 5), 5);
	assert_int_equal(ra("Fri, 31 Dec 9999 23:59:59 GMT", 0), 253402300799ULL);
	/* Not an IMF-fixdate: ignored. The obsolete forms (RFC 850, asctime)
	 * are not understood either: the backoff decides. */
	static const char *const bad[] = {
		"Sun, 06 Nov 1994 08:49:37 UTC", "Sun, 6 Nov 1994 08:49:37 GMT", "Sun, 06 Nov 94 08:49:37 GMT",
		"Sun, 31 Nov 1994 08:49:37 GMT", "Sun, 29 Feb 2027 08:49:37 GMT", "Sun, 06 Foo 1994 08:49:37 GMT",
		"Sun, 06 Nov 1994 24:00:00 GMT", "Sun, 06 Nov 1994 08:60:00 GMT", "Sun, 06 Nov 1994 08:49:61 GMT",
		"Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994", "Sun, 06 Nov 1994 08:49:37 GMTX",
		"Sun, 0x Nov 1994 08:49:37 GMT", "Sun, 06 Nov -994 08:49:37 GMT",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (ra(bad[i], 0) != 0)
			fail_msg("Retry-After '%s' was taken as %llu s", bad[i], (unsigned long long)ra(bad[i], 0));
}

/* What the callback saw. */
struct seen {
	int calls;
	int status;
	char body[8192];
	size_t body_len;
	uint64_t retry_after_s;
	char err[1280];
	int kept; /* the connection would be used again */
};

static void seen_cb(struct http_client *c, const struct http_response *r, void *arg)
{
	struct seen *s = arg;
	s->calls++;
	s->status = r->status;
	assert_true(r->body_len < sizeof(s->body));
	assert_int_equal(r->body[r->body_len], '\0');
	memcpy(s->body, r->body, r->body_len);
	s->body_len = r->body_len;
	s->retry_after_s = r->retry_after_s;
	snprintf(s->err, sizeof(s->err), "%s", r->err ? r->err : "");
	s->kept = c->connected;
}

/* Answer data to one request, in pieces of piece bytes (0: at once), on a
 * client of its own; every handle is closed afterwards. */
static struct seen feed(const char *data, size_t len, size_t piece, int flags)
{
	uv_loop_t loop;
	struct http_client c;
	struct seen s;
	memset(&s, 0, sizeof(s));
	assert_int_equal(uv_loop_init(&loop), 0);
	http_client_init(&c, &loop, "127.0.0.1", 9, 1000, 1000);
	http_client_feed_response(&c, data, len, piece, flags, seen_cb, &s);
	assert_int_equal(s.calls, 1);
	http_client_close(&c, NULL);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&loop), 0);
	return s;
}

/* The same answer whole and a byte at a time must be read the same. */
static struct seen feed_both(const char *data)
{
	size_t len = strlen(data);
	struct seen a = feed(data, len, 0, 0), b = feed(data, len, 1, 0);
	if (a.status != b.status || a.body_len != b.body_len || memcmp(a.body, b.body, a.body_len) != 0 ||
	    a.retry_after_s != b.retry_after_s)
		fail_msg("read whole: %d '%s'; a byte at a time: %d '%s'", a.status, a.err, b.status, b.err);
	return a;
}

static void test_answers(void **state)
{
	(void)state;
	struct seen s = feed_both("HTTP/1.1 204 No Content\r\nX-Influxdb-Version: 1.6.7\r\n\r\n");
	assert_int_equal(s.status, 204);
	assert_true(s.kept);
	s = feed_both("HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 37\r\n\r\n"
		      "{\"error\":\"database not found: \\\"x\\\"\"}");
	assert_int_equal(s.status, 404);
	assert_string_equal(s.body, "{\"error\":\"database not found: \\\"x\\\"\"}");
	assert_true(s.kept);
	s = feed_both("HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n"
		      "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n");
	assert_int_equal(s.status, 400);
	assert_string_equal(s.body, "hello world");
	assert_true(s.kept);
	s = feed_both("HTTP/1.1 503 Service Unavailable\r\nRetry-After:  7 \r\nContent-Length: 0\r\n\r\n");
	assert_int_equal(s.status, 503);
	assert_int_equal(s.retry_after_s, 7);
	/* An empty reason phrase is allowed (RFC 9112 section 4), and so is
	 * none at all, which some servers send. */
	s = feed_both("HTTP/1.1 204 \r\n\r\n");
	assert_int_equal(s.status, 204);
	s = feed_both("HTTP/1.1 204\r\n\r\n");
	assert_int_equal(s.status, 204);
	/* Not kept: HTTP/1.0, Connection: close. */
	s = feed_both("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok");
	assert_int_equal(s.status, 200);
	assert_false(s.kept);
	s = feed_both("HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
	assert_int_equal(s.status, 204);
	assert_false(s.kept);
}

static void test_interim_answers(void **state)
{
	(void)state;
	struct seen s = feed_both("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n");
	assert_int_equal(s.status, 204);
	assert_true(s.kept);
	s = feed_both("HTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\n"
		      "HTTP/1.1 102 Processing\r\n\r\n"
		      "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
	assert_int_equal(s.status, 200);
	assert_string_equal(s.body, "ok");
	/* A 1xx has no body whatever its header says; its Retry-After is
	 * not the final answer's. */
	s = feed_both("HTTP/1.1 103 Early Hints\r\nRetry-After: 99\r\nContent-Length: 0\r\n\r\n"
		      "HTTP/1.1 199 Whatever\r\nTransfer-Encoding: chunked\r\n\r\n"
		      "HTTP/1.1 503 Busy\r\nContent-Length: 4\r\n\r\nbusy");
	assert_int_equal(s.status, 503);
	assert_string_equal(s.body, "busy");
	assert_int_equal(s.retry_after_s, 0);
	/* 16 interim answers are taken, 17 are not. */
	char buf[1024] = "";
	for (int i = 0; i < 16; i++)
		strcat(buf, "HTTP/1.1 100 Continue\r\n\r\n");
	strcat(buf, "HTTP/1.1 204 No Content\r\n\r\n");
	s = feed_both(buf);
	assert_int_equal(s.status, 204);
	char buf17[1024] = "HTTP/1.1 100 Continue\r\n\r\n";
	strcat(buf17, buf);
	s = feed_both(buf17);
	assert_int_equal(s.status, OUTCOME_STATUS_PROTOCOL);
	assert_non_null(strstr(s.err, "interim"));
	assert_false(s.kept);
	/* 101 is no answer to a write, after a 100 too. */
	s = feed_both("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n");
	assert_int_equal(s.status, OUTCOME_STATUS_PROTOCOL);
	assert_non_null(strstr(s.err, "101"));
	assert_false(s.kept);
	s = feed_both("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 101 Switching Protocols\r\n\r\nPRI * HTTP/2.0\r\n");
	assert_int_equal(s.status, OUTCOME_STATUS_PROTOCOL);
	/* Only interim answers, then the end: cut short. */
	s = feed_both("HTTP/1.1 100 Continue\r\n\r\n");
	assert_int_equal(s.status, OUTCOME_STATUS_RESET);
}

static void test_framing(void **state)
{
	(void)state;
	/* Numbers that do not fit: refused, never wrapped. */
	static const char *const bad[] = {
		"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551616\r\n\r\nx",
		"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\nx",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFF\r\nx",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\nx",
		"HTTP/1.1 2000 OK\r\n\r\n",
		"HTTP/1.1 99 Odd\r\n\r\n",
		"HTTP/1.1 000 Zero\r\n\r\n",
		"HTTP/1.1 20 OK\r\n\r\n",
		"HTTP/2 200\r\n\r\n",
		"SSH-2.0-OpenSSH_9.2\r\n",
		"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
		"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n",
		"HTTP/1.1 200 OK\nContent-Length: 0\n\n",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct seen s = feed_both(bad[i]);
		if (s.status >= 0)
			fail_msg("answer %zu taken as status %d", i, s.status);
		assert_false(s.kept);
	}
	/* Nothing at all, or cut short: the connection closed early. */
	struct seen s = feed("", 0, 0, 0);
	assert_int_equal(s.status, OUTCOME_STATUS_RESET);
	s = feed_both("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhel");
	assert_int_equal(s.status, OUTCOME_STATUS_RESET);
	s = feed_both("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n");
	assert_int_equal(s.status, OUTCOME_STATUS_RESET);
	/* Neither Content-Length nor chunked: the body ends with the
	 * connection (RFC 9112 section 6.3), and the answer is whole. */
	s = feed_both("HTTP/1.1 500 Internal Server Error\r\n\r\n{\"error\":\"timeout\"}");
	assert_int_equal(s.status, 500);
	assert_string_equal(s.body, "{\"error\":\"timeout\"}");
	assert_false(s.kept);
	/* Bytes after the answer: the connection is out of step. */
	s = feed_both("HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n");
	assert_int_equal(s.status, 204);
	s = feed("HTTP/1.1 204 No Content\r\n\r\nX", 29, 0, 0);
	assert_int_equal(s.status, 204);
	assert_false(s.kept);
	s = feed("HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\nabc", 50, 0, 0);
	assert_int_equal(s.status, 204);
	assert_false(s.kept);
	/* An answer before the request was all written: the rest of the body
	 * would reach the server as the next request. */
	static const char early[] = "HTTP/1.1 413 Request Entity Too Large\r\nContent-Length: 0\r\n\r\n";
	s = feed(early, sizeof(early) - 1, 0, HTTP_FEED_WRITING);
	assert_int_equal(s.status, 413);
	assert_false(s.kept);
	s = feed(early, sizeof(early) - 1, 0, 0);
	assert_true(s.kept);
}

static void test_bounded(void **state)
{
	(void)state;
	/* A hostile backend's header and body cost bounded memory: the body
	 * kept is its first 4 KiB, a header value its first 1023 bytes (a
	 * Retry-After of 100 000 digits saturates), whatever the pieces. */
	size_t big = 1 << 20;
	struct rbuf d = RBUF_INIT;
	rbuf_appendf(&d, "HTTP/1.1 503 Busy\r\nX-Junk: ");
	for (size_t i = 0; i < 100000; i++)
		rbuf_appendc(&d, 'j');
	rbuf_appendf(&d, "\r\nRetry-After: ");
	for (size_t i = 0; i < 100000; i++)
		rbuf_appendc(&d, '9');
	rbuf_appendf(&d, "\r\n");
	for (size_t i = 0; i < 10000; i++)
		rbuf_appendf(&d, "X-Many-%zu: v\r\n", i);
	rbuf_appendf(&d, "Content-Length: %zu\r\n\r\n", big);
	for (size_t i = 0; i < big; i++)
		rbuf_appendc(&d, (char)('a' + i % 26));
	size_t pieces[] = { 0, 1, 7, 4096, 65536 };
	for (size_t i = 0; i < sizeof(pieces) / sizeof(pieces[0]); i++) {
		struct seen s = feed(d.data, d.len, pieces[i], 0);
		assert_int_equal(s.status, 503);
		assert_int_equal(s.body_len, 4096);
		assert_int_equal(s.retry_after_s, UINT64_MAX);
		assert_int_equal(memcmp(s.body, "abcdefghijklmnopqrstuvwxyzabcd", 30), 0);
		assert_true(s.kept);
	}
	rbuf_release(&d);
}

static void test_build_head(void **state)
{
	(void)state;
	struct rbuf h = RBUF_INIT;
	http_client_build_head(&h, "POST", "/write?db=a", "influx.example", 8086, "Authorization: Token t\r\n", 12);
	assert_string_equal(rbuf_cstr(&h), "POST /write?db=a HTTP/1.1\r\nHost: influx.example:8086\r\n"
					   "User-Agent: relayd/" RELAYD_VERSION "\r\nContent-Length: 12\r\n"
					   "Authorization: Token t\r\n\r\n");
	rbuf_reset(&h);
	/* An IPv6 literal in brackets: "Host: ::1:8086" is no host and port. */
	http_client_build_head(&h, "GET", "/ping", "::1", 8086, NULL, 0);
	assert_non_null(strstr(rbuf_cstr(&h), "\r\nHost: [::1]:8086\r\n"));
	rbuf_release(&h);
}

/*---- over TLS ----*/

static void got(struct http_client *c, const struct http_response *r, void *arg)
{
	struct seen *s = arg;
	(void)c;
	s->calls++;
	s->status = r->status;
	snprintf(s->err, sizeof(s->err), "%s", r->err ? r->err : "");
}

/* One GET on c, run until answered. */
static struct seen ask(uv_loop_t *loop, struct http_client *c)
{
	struct seen s;
	memset(&s, 0, sizeof(s));
	assert_int_equal(http_client_request(c, "GET", "/ping", NULL, NULL, 0, got, &s), 0);
	while (!s.calls)
		uv_run(loop, UV_RUN_ONCE);
	return s;
}

static void close_all(uv_loop_t *loop, struct http_client *c, struct tserver *srv)
{
	http_client_close(c, NULL);
	tserver_stop(srv);
	uv_run(loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(loop), 0);
}

static void test_tls_keep_alive_and_resumption(void **state)
{
	(void)state;
	uv_loop_t loop;
	struct tserver srv;
	struct http_client c;
	assert_int_equal(uv_loop_init(&loop), 0);
	tserver_start(&srv, &loop);
	struct net_tls_ctx *ctx = tls_client_ctx(cpath("ca.pem"));
	http_client_init(&c, &loop, "127.0.0.1", (uint16_t)srv.port, 5000, 5000);
	http_client_set_tls(&c, ctx, NULL, NULL);
	net_tls_ctx_unref(ctx); /* the client holds its own */

	/* Keep-alive: two requests, one connection, one handshake. */
	assert_int_equal(ask(&loop, &c).status, 204);
	assert_int_equal(ask(&loop, &c).status, 204);
	assert_int_equal(srv.accepted, 1);
	assert_int_equal(c.tls_handshakes, 1);
	assert_int_equal(c.tls_resumed, 0);

	/* The server ends the connection: the next one resumes the session
	 * the context kept (net_stream_session_reused). */
	srv.close_after = 1;
	assert_int_equal(ask(&loop, &c).status, 204);
	srv.close_after = 0;
	assert_int_equal(ask(&loop, &c).status, 204);
	assert_int_equal(srv.accepted, 2);
	assert_int_equal(c.tls_handshakes, 2);
	assert_int_equal(c.tls_resumed, 1);
	close_all(&loop, &c, &srv);
}

static void test_tls_verify_holds(void **state)
{
	(void)state;
	uv_loop_t loop;
	struct tserver srv;
	struct http_client c;
	assert_int_equal(uv_loop_init(&loop), 0);
	tserver_start(&srv, &loop);
	struct net_tls_ctx *ctx = tls_client_ctx(cpath("other.pem"));
	http_client_init(&c, &loop, "127.0.0.1", (uint16_t)srv.port, 5000, 5000);
	http_client_set_tls(&c, ctx, "localhost", NULL);
	net_tls_ctx_unref(ctx);
	struct seen s = ask(&loop, &c);
	assert_int_equal(s.status, OUTCOME_STATUS_TLS_VERIFY);
	assert_int_equal(outcome_classify(s.status, NULL, 0), OUTCOME_HOLD);
	const char *must[] = { "certificate verify failed", "subject 'CN = localhost'", "issuer 'CN = test CA'",
			       "not after", "expected name 'localhost'", "tls_ca" };
	for (size_t i = 0; i < sizeof(must) / sizeof(must[0]); i++)
		if (!strstr(s.err, must[i]))
			fail_msg("'%s' not in: %s", must[i], s.err);
	assert_int_equal(srv.answered, 0);

	/* A reload with the right CA: delivered. */
	ctx = tls_client_ctx(cpath("ca.pem"));
	http_client_set_tls(&c, ctx, "localhost", NULL);
	net_tls_ctx_unref(ctx);
	assert_int_equal(ask(&loop, &c).status, 204);

	/* A context that could not be made: every request fails with why,
	 * from the loop, and holds. */
	http_client_set_tls(&c, NULL, NULL, "cannot set up TLS: no such file");
	s = ask(&loop, &c);
	assert_int_equal(s.status, OUTCOME_STATUS_TLS_CONFIG);
	assert_int_equal(outcome_classify(s.status, NULL, 0), OUTCOME_HOLD);
	assert_string_equal(s.err, "cannot set up TLS: no such file");
	close_all(&loop, &c, &srv);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_retry_after_seconds),
		cmocka_unit_test(test_retry_after_date),
		cmocka_unit_test(test_answers),
		cmocka_unit_test(test_interim_answers),
		cmocka_unit_test(test_framing),
		cmocka_unit_test(test_bounded),
		cmocka_unit_test(test_build_head),
		cmocka_unit_test(test_tls_keep_alive_and_resumption),
		cmocka_unit_test(test_tls_verify_holds),
	};
	return cmocka_run_group_tests(tests, setup_certs, teardown_certs);
}
