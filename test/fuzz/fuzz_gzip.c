/*
 * fuzz_gzip: the fuzz input is the body of a POST /write with
 * Content-Encoding: gzip, fed to a socket-less connection of the front
 * door (http_fuzz_feed): inflating as the body arrives, the cap on the
 * decompressed size, malformed and truncated streams, what follows the end
 * of a stream, then line-protocol validation of what came out. A pipelined
 * GET /ping follows, so the connection's state after each outcome is used
 * again.
 *
 * The first byte picks how: bit 0 small limits (300-byte body, 1 KiB
 * decompressed) or the defaults; bit 1 Content-Length or chunked transfer
 * encoding; bits 2-7 the chunk size (1 to 64 bytes), so that the stream is
 * cut at every kind of boundary. The rest is the body.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_config_util.h"
#include "relay/base/config.h"
#include "relay/door/http_server.h"
#include "relay/base/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char ping[] = "GET /ping HTTP/1.1\r\nHost: fuzz\r\n\r\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct relay_config small, big;
	static int ready;
	if (!ready) {
		static const char y1[] = "data_dir: /nonexistent\nhttp:\n  max_body_size: 300\n"
					 "  max_decompressed_size: 1KiB\n  max_line_size: 64\n"
					 "backends:\n  - name: a\n    url: http://127.0.0.1:9\n";
		static const char y2[] = "data_dir: /nonexistent\nbackends:\n  - name: a\n    url: http://127.0.0.1:9\n";
		fuzz_load_config("small", y1, &small);
		fuzz_load_config("big", y2, &big);
		ready = 1;
	}
	if (size == 0)
		return 0;
	const struct relay_config *cfg = data[0] & 1 ? &small : &big;
	int chunked = (data[0] >> 1) & 1;
	size_t step = 1 + (data[0] >> 2);
	const uint8_t *body = data + 1;
	size_t len = size - 1;

	struct rbuf req = RBUF_INIT;
	rbuf_appendf(&req, "POST /write?db=fuzz HTTP/1.1\r\nHost: fuzz\r\nContent-Encoding: gzip\r\n");
	if (!chunked) {
		rbuf_appendf(&req, "Content-Length: %zu\r\n\r\n", len);
		rbuf_append(&req, (const char *)body, len);
	} else {
		rbuf_appendf(&req, "Transfer-Encoding: chunked\r\n\r\n");
		for (size_t off = 0; off < len; off += step) {
			size_t n = len - off < step ? len - off : step;
			rbuf_appendf(&req, "%zx\r\n", n);
			rbuf_append(&req, (const char *)body + off, n);
			rbuf_append(&req, "\r\n", 2);
		}
		rbuf_appendf(&req, "0\r\n\r\n");
	}
	rbuf_append(&req, ping, sizeof(ping) - 1);
	http_fuzz_feed(cfg, (const uint8_t *)req.data, req.len);
	rbuf_release(&req);
	return 0;
}
