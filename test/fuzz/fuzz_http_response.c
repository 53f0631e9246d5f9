/*
 * fuzz_http_response: raw bytes as a backend's answer to a write, through
 * the backend client's own read callback (http_client_feed_response), then
 * the end of the stream. The first byte picks the size of the pieces the
 * answer arrives in (1-63 bytes, or 0: all at once) and whether it comes
 * before the request was all written; the rest is the answer.
 *
 * Checks, for every input: the callback runs exactly once; a status is a
 * final one (200-999, never an interim 1xx or anything below 100) with no
 * error, or a transport failure (OUTCOME_STATUS_*) with a message; the
 * body kept is at most 4 KiB and NUL-terminated; and the same bytes read
 * in one piece give the same status, body and Retry-After (up to the one
 * second a date may move meanwhile): how a backend's answer is cut into
 * segments must never change what it means.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relay/delivery/http_client.h"
#include "relay/base/outcome.h"

struct seen {
	int calls;
	int status;
	char body[4097];
	size_t body_len;
	uint64_t retry_after_s;
	int kept;
};

static void check(int ok, const char *what)
{
	if (!ok) {
		fprintf(stderr, "fuzz_http_response: %s\n", what);
		abort();
	}
}

static void seen_cb(struct http_client *c, const struct http_response *r, void *arg)
{
	struct seen *s = arg;
	s->calls++;
	s->status = r->status;
	if (r->status >= 0) {
		check(r->status >= 200 && r->status <= 999, "a status that is no final answer reached the caller");
		check(r->err == NULL, "an answer with an error message");
	} else {
		check(r->status >= OUTCOME_STATUS_PROTOCOL, "an unknown transport failure");
		check(r->err && *r->err, "a failure without a message");
	}
	check(r->body != NULL && r->body_len <= 4096, "more than 4 KiB of body kept");
	check(r->body[r->body_len] == '\0', "body not NUL-terminated");
	memcpy(s->body, r->body, r->body_len);
	s->body_len = r->body_len;
	s->retry_after_s = r->retry_after_s;
	s->kept = c->connected;
}

static struct seen run(uv_loop_t *loop, const char *data, size_t len, size_t piece, int flags)
{
	struct http_client c;
	struct seen s;
	memset(&s, 0, sizeof(s));
	http_client_init(&c, loop, "127.0.0.1", 9, 1000, 1000);
	http_client_feed_response(&c, data, len, piece, flags, seen_cb, &s);
	check(s.calls == 1, "the callback did not run exactly once");
	http_client_close(&c, NULL);
	uv_run(loop, UV_RUN_DEFAULT);
	return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uv_loop_t loop;
	static int ready;
	if (!ready) {
		check(uv_loop_init(&loop) == 0, "uv_loop_init");
		ready = 1;
	}
	if (size == 0)
		return 0;
	size_t piece = data[0] & 0x3f;
	int flags = data[0] & 0x40 ? HTTP_FEED_WRITING : 0;
	const char *answer = (const char *)data + 1;
	size_t len = size - 1;

	struct seen a = run(&loop, answer, len, piece, flags);
	if (flags & HTTP_FEED_WRITING)
		check(!a.kept, "a connection kept after an answer that came before the request was written");
	if (piece == 0)
		return 0;
	struct seen b = run(&loop, answer, len, 0, flags);
	check(a.status == b.status, "the status depends on how the answer was cut into reads");
	if (a.status >= 0) {
		check(a.body_len == b.body_len && memcmp(a.body, b.body, a.body_len) == 0,
		      "the body depends on how the answer was cut into reads");
		check(a.retry_after_s == b.retry_after_s || a.retry_after_s + 1 == b.retry_after_s ||
		              a.retry_after_s == b.retry_after_s + 1,
		      "Retry-After depends on how the answer was cut into reads");
	}
	return 0;
}
