/*
 * fuzz_http_request: raw bytes into a socket-less connection of the front
 * door (llhttp callbacks, limits, routing, query parsing, line-protocol
 * validation, v1 and v2 writes). The first byte picks small limits with
 * auth on and a 1 MiB buffer budget (which a gzip body can pass), or the
 * defaults with auth off and a v2 backend, so that the limit, budget and
 * auth paths are reached too. After each input the budget must be back to
 * zero (http_fuzz_feed checks).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_config_util.h"
#include "relay/base/config.h"
#include "relay/door/http_server.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct relay_config small, big;
	static int ready;
	if (!ready) {
		static const char y1[] = "data_dir: /nonexistent\nhttp:\n  max_body_size: 300\n  max_header_size: 200\n"
					 "  max_line_size: 64\n  max_buffered_size: 1MiB\nauth:\n  enabled: true\n  users: [{name: u, password: p}]\n"
					 "  tokens: [{name: t, token: tok}]\nbackends:\n  - name: a\n    url: http://127.0.0.1:9\n";
		static const char y2[] = "data_dir: /nonexistent\nbackends:\n  - name: a\n    url: http://127.0.0.1:9\n"
					 "    type: v2\n";
		fuzz_load_config("small", y1, &small);
		fuzz_load_config("big", y2, &big);
		ready = 1;
	}
	if (size == 0)
		return 0;
	http_fuzz_feed(data[0] & 1 ? &small : &big, data + 1, size - 1);
	return 0;
}
