/*
 * test_config: the YAML loader. Defaults, every key, a table of bad files
 * with the exact position and message each must produce, URL forms, the
 * derived map size, the shipped config.example.yaml, and file errors.
 * Under ASan/LSan a failed load must leave nothing allocated.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "relay/base/config.h"
#include "relay/base/util.h"

#define MIB (1024ULL * 1024)
#define GIB (1024ULL * MIB)
#define TIB (1024ULL * GIB)

/* The smallest valid file, and its pieces for the bad-config table. */
#define DD "data_dir: /x\n"
#define BK "backends:\n  - name: a\n    url: http://127.0.0.1:8086\n"
#define MINIMAL DD BK

static int load(const char *text, struct relay_config *cfg, char *err, size_t errlen)
{
	return config_load_buffer("t.yaml", text, strlen(text), cfg, err, errlen);
}

static void load_ok(const char *text, struct relay_config *cfg)
{
	char err[512];
	if (load(text, cfg, err, sizeof(err)) != 0)
		fail_msg("config did not load: %s", err);
}

static int is_zero(const void *p, size_t n)
{
	const unsigned char *b = p;
	for (size_t i = 0; i < n; i++)
		if (b[i])
			return 0;
	return 1;
}

static void test_defaults(void **state)
{
	struct relay_config cfg;
	(void)state;

	load_ok(MINIMAL, &cfg);
	assert_string_equal(cfg.path, "t.yaml");
	assert_string_equal(cfg.data_dir, "/x");
	assert_string_equal(cfg.log_level, "info");
	assert_string_equal(cfg.listen_http, "127.0.0.1:9096");
	assert_string_equal(cfg.listen_http_host, "127.0.0.1");
	assert_int_equal(cfg.listen_http_port, 9096);
	assert_int_equal(cfg.http_max_body_bytes, 25 * MIB);
	assert_int_equal(cfg.http_max_header_bytes, 16 * 1024);
	assert_int_equal(cfg.http_max_line_bytes, MIB);
	assert_int_equal(cfg.http_header_timeout_ms, 10000);
	assert_int_equal(cfg.http_body_timeout_ms, 60000);
	assert_int_equal(cfg.http_idle_timeout_ms, 120000);
	assert_int_equal(cfg.http_max_connections, 1024);
	assert_int_equal(cfg.queue_max_bytes, GIB);
	assert_int_equal(cfg.queue_max_age_ms, 0);
	assert_int_equal(cfg.queue_retry_after_s, 10);
	assert_int_equal(cfg.queue_map_bytes, 0);
	assert_int_equal(cfg.queue_max_commit_batches, 1024);
	assert_int_equal(cfg.nbackends, 1);
	assert_string_equal(cfg.backends[0].name, "a");
	assert_string_equal(cfg.backends[0].url, "http://127.0.0.1:8086");
	assert_string_equal(cfg.backends[0].host, "127.0.0.1");
	assert_int_equal(cfg.backends[0].port, 8086);
	assert_string_equal(cfg.backends[0].path_prefix, "");
	assert_int_equal(cfg.backends[0].max_bytes, GIB);
	assert_int_equal(cfg.backends[0].max_age_ms, 0);
	assert_int_equal(cfg.backends[0].timeout_ms, 30000);
	assert_int_equal(cfg.backends[0].connect_timeout_ms, 5000);
	assert_int_equal(cfg.backends[0].batch_max_bytes, 8 * MIB);
	assert_int_equal(cfg.backends[0].batch_max_lines, 40000);
	assert_int_equal(cfg.backends[0].parallel, 4);
	assert_int_equal(cfg.backends[0].retry_min_ms, 100);
	assert_int_equal(cfg.backends[0].retry_max_ms, 30000);
	assert_int_equal(cfg.backends[0].on_database_not_found, RELAY_DB_HOLD);
	assert_int_equal(cfg.backends[0].gzip, 0);
	assert_int_equal(cfg.backends[0].max_rate, 0); /* no pacing */
	assert_int_equal(cfg.backends[0].max_rate_bytes, 0);
	assert_int_equal(cfg.backends[0].rate_burst_ms, 1000);
	config_release(&cfg);
	assert_true(is_zero(&cfg, sizeof(cfg)));
}

static void test_every_key(void **state)
{
	static const char text[] =
		"data_dir: /var/lib/relayd-test\n"
		"log_level: debug\n"
		"listen:\n"
		"  http: \"[::1]:19096\"\n"
		"http:\n"
		"  max_body_size: 10MB\n"
		"  max_header_size: 8192\n"
		"  max_line_size: 64KiB\n"
		"  header_timeout: 1500ms\n"
		"  body_timeout: 2m\n"
		"  idle_timeout: 1h\n"
		"  max_connections: 7\n"
		"queue:\n"
		"  max_size: 2GiB\n"
		"  max_age: 1d\n"
		"  retry_after: 1m\n"
		"  map_size: 8GiB\n"
		"  max_commit_batches: 65536\n"
		"backends:\n"
		"  - name: main.db-1_A\n"
		"    url: http://influx.example.com:8087/prefix/\n"
		"    max_size: 512MiB\n"
		"    max_age: 6h\n"
		"    timeout: 2m\n"
		"    connect_timeout: 250ms\n"
		"    batch_max_size: 64KiB\n"
		"    batch_max_lines: 5000\n"
		"    retry_min: 1s\n"
		"    retry_max: 1h\n"
		"    on_database_not_found: create\n"
		"    gzip: true\n"
		"  - name: second\n"
		"    url: 'http://[fe80::1]/'\n"
		"    on_database_not_found: dead_letter\n"
		"    gzip: no\n"
		"  - {name: third, url: 'HTTP://10.0.0.1:1/a/b//', max_age: 0, on_database_not_found: hold,"
		" gzip: Yes}\n";
	struct relay_config cfg;
	(void)state;

	load_ok(text, &cfg);
	assert_string_equal(cfg.data_dir, "/var/lib/relayd-test");
	assert_string_equal(cfg.log_level, "debug");
	assert_string_equal(cfg.listen_http, "[::1]:19096");
	assert_string_equal(cfg.listen_http_host, "::1");
	assert_int_equal(cfg.listen_http_port, 19096);
	assert_int_equal(cfg.http_max_body_bytes, 10000000);
	assert_int_equal(cfg.http_max_header_bytes, 8192);
	assert_int_equal(cfg.http_max_line_bytes, 64 * 1024);
	assert_int_equal(cfg.http_header_timeout_ms, 1500);
	assert_int_equal(cfg.http_body_timeout_ms, 120000);
	assert_int_equal(cfg.http_idle_timeout_ms, 3600000);
	assert_int_equal(cfg.http_max_connections, 7);
	assert_int_equal(cfg.queue_max_bytes, 2 * GIB);
	assert_int_equal(cfg.queue_max_age_ms, 86400000);
	assert_int_equal(cfg.queue_retry_after_s, 60);
	assert_int_equal(cfg.queue_map_bytes, 8 * GIB);
	assert_int_equal(cfg.queue_max_commit_batches, 65536);
	assert_int_equal(cfg.nbackends, 3);

	assert_string_equal(cfg.backends[0].name, "main.db-1_A");
	assert_string_equal(cfg.backends[0].url, "http://influx.example.com:8087/prefix/");
	assert_string_equal(cfg.backends[0].host, "influx.example.com");
	assert_int_equal(cfg.backends[0].port, 8087);
	assert_string_equal(cfg.backends[0].path_prefix, "/prefix");
	assert_int_equal(cfg.backends[0].max_bytes, 512 * MIB);
	assert_int_equal(cfg.backends[0].max_age_ms, 6 * 3600000);
	assert_int_equal(cfg.backends[0].timeout_ms, 120000);
	assert_int_equal(cfg.backends[0].connect_timeout_ms, 250);
	assert_int_equal(cfg.backends[0].batch_max_bytes, 64 * 1024);
	assert_int_equal(cfg.backends[0].batch_max_lines, 5000);
	assert_int_equal(cfg.backends[0].retry_min_ms, 1000);
	assert_int_equal(cfg.backends[0].retry_max_ms, 3600000);
	assert_int_equal(cfg.backends[0].on_database_not_found, RELAY_DB_CREATE);
	assert_int_equal(cfg.backends[0].gzip, 1);

	/* Unset limits come from queue:. */
	assert_string_equal(cfg.backends[1].name, "second");
	assert_string_equal(cfg.backends[1].host, "fe80::1");
	assert_int_equal(cfg.backends[1].port, 80);
	assert_string_equal(cfg.backends[1].path_prefix, "");
	assert_int_equal(cfg.backends[1].max_bytes, 2 * GIB);
	assert_int_equal(cfg.backends[1].max_age_ms, 86400000);
	assert_int_equal(cfg.backends[1].on_database_not_found, RELAY_DB_DEAD_LETTER);
	assert_int_equal(cfg.backends[1].gzip, 0);
	/* Defaults are per backend: the first one's settings do not leak. */
	assert_int_equal(cfg.backends[1].timeout_ms, 30000);
	assert_int_equal(cfg.backends[1].retry_max_ms, 30000);

	/* An explicit 0 overrides the queue's age limit. */
	assert_string_equal(cfg.backends[2].name, "third");
	assert_string_equal(cfg.backends[2].url, "HTTP://10.0.0.1:1/a/b//");
	assert_string_equal(cfg.backends[2].host, "10.0.0.1");
	assert_int_equal(cfg.backends[2].port, 1);
	assert_string_equal(cfg.backends[2].path_prefix, "/a/b");
	assert_int_equal(cfg.backends[2].max_bytes, 2 * GIB);
	assert_int_equal(cfg.backends[2].max_age_ms, 0);
	assert_int_equal(cfg.backends[2].on_database_not_found, RELAY_DB_HOLD);
	assert_int_equal(cfg.backends[2].gzip, 1);
	config_release(&cfg);
}

/* listen.udp, auth and the backend API keys (issue 4). */
static void test_udp_auth_api(void **state)
{
	struct relay_config cfg;
	(void)state;

	load_ok(DD "listen:\n  udp:\n    - address: 127.0.0.1:8089\n      db: telegraf\n"
	        "      precision: s\n      flush_interval: 50ms\n      read_buffer: 8MiB\n"
	        "    - {address: '127.0.0.1:8090', db: other, rp: week}\n"
	        "auth:\n  enabled: true\n  users:\n    - {name: w, password: 'p:w'}\n"
	        "  tokens:\n    - {name: grafana, token: abc}\n    - {name: app, token: def}\n"
	        "backends:\n  - name: a\n    url: http://h\n"
	        "  - {name: b, url: 'http://h:8087', type: v2, org: o, token: t}\n"
	        "  - {name: c, url: 'http://h', username: u, password: p}\n", &cfg);
	assert_int_equal(cfg.nudp, 2);
	assert_string_equal(cfg.udp[0].host, "127.0.0.1");
	assert_int_equal(cfg.udp[0].port, 8089);
	assert_string_equal(cfg.udp[0].db, "telegraf");
	assert_null(cfg.udp[0].rp);
	assert_int_equal(cfg.udp[0].precision, 3 /* s */);
	assert_int_equal(cfg.udp[0].flush_ms, 50);
	assert_int_equal(cfg.udp[0].read_buffer, 8 * MIB);
	assert_string_equal(cfg.udp[1].rp, "week");
	assert_int_equal(cfg.udp[1].precision, 0 /* ns */);
	assert_int_equal(cfg.udp[1].flush_ms, 100);
	assert_int_equal(cfg.udp[1].batch_max_bytes, MIB);
	assert_int_equal(cfg.udp[1].read_buffer, 0);
	assert_true(cfg.auth_enabled);
	assert_int_equal(cfg.nauth_users, 1);
	assert_string_equal(cfg.auth_users[0].password, "p:w");
	assert_int_equal(cfg.nauth_tokens, 2);
	assert_string_equal(cfg.auth_tokens[1].name, "app");
	assert_string_equal(cfg.auth_tokens[1].token, "def");
	assert_int_equal(cfg.backends[0].type, RELAY_API_V1);
	assert_null(cfg.backends[0].token);
	assert_null(cfg.backends[0].username);
	assert_int_equal(cfg.backends[1].type, RELAY_API_V2);
	assert_string_equal(cfg.backends[1].org, "o");
	assert_string_equal(cfg.backends[1].token, "t");
	assert_string_equal(cfg.backends[2].username, "u");
	assert_string_equal(cfg.backends[2].password, "p");
	assert_string_equal(cfg.log_output, "stderr");
	config_release(&cfg);

	/* One output, or a list of preferences kept in order, joined by '\n'. */
	static const struct {
		const char *yaml, *want;
	} outputs[] = {
		{ DD "log_output: syslog\n" BK, "syslog" },
		{ DD "log_output: /var/log/relayd/relayd.log\n" BK, "/var/log/relayd/relayd.log" },
		{ DD "log_output: journal\n" BK, "journal" },
		{ DD "log_output: [journal, /var/log/relayd/relayd.log]\n" BK, "journal\n/var/log/relayd/relayd.log" },
		{ DD "log_output:\n  - syslog\n  - stderr\n" BK, "syslog\nstderr" },
	};
	for (size_t i = 0; i < RELAY_ARRAY_SIZE(outputs); i++) {
		load_ok(outputs[i].yaml, &cfg);
		assert_string_equal(cfg.log_output, outputs[i].want);
		config_release(&cfg);
	}

	/* Off by default; users may be listed while it is off; empty lists. */
	load_ok(DD "listen:\n  udp:\nauth:\n  users:\n    - {name: w, password: x}\n" BK, &cfg);
	assert_false(cfg.auth_enabled);
	assert_int_equal(cfg.nudp, 0);
	assert_null(cfg.udp);
	assert_int_equal(cfg.nauth_users, 1);
	config_release(&cfg);
}

/* queue: may follow backends:; the backends still inherit its values. */
static void test_inherit_any_order(void **state)
{
	struct relay_config cfg;
	(void)state;

	load_ok(BK "queue:\n  max_size: 3MiB\n  max_age: 5m\n" DD, &cfg);
	assert_int_equal(cfg.backends[0].max_bytes, 3 * MIB);
	assert_int_equal(cfg.backends[0].max_age_ms, 300000);
	config_release(&cfg);
}

static void test_empty_sections_and_forms(void **state)
{
	struct relay_config cfg;
	(void)state;

	/* Sections whose keys are all commented out are empty, not wrong. */
	load_ok(DD "listen:\nhttp:\n  # max_body_size: 1MiB\nqueue: ~\n" BK, &cfg);
	assert_int_equal(cfg.http_max_body_bytes, 25 * MIB);
	config_release(&cfg);

	/* Flow style, quoted values, localhost, units with a space. */
	load_ok("{data_dir: \"/a b\", listen: {http: 'localhost:1'}, http: {max_body_size: 2 MiB},"
	        " backends: [{name: x, url: \"http://h\"}]}", &cfg);
	assert_string_equal(cfg.data_dir, "/a b");
	assert_string_equal(cfg.listen_http, "localhost:1");
	assert_string_equal(cfg.listen_http_host, "127.0.0.1");
	assert_int_equal(cfg.listen_http_port, 1);
	assert_int_equal(cfg.http_max_body_bytes, 2 * MIB);
	assert_string_equal(cfg.backends[0].host, "h");
	config_release(&cfg);

	/* A leading "---" and a trailing "..." are one document. */
	load_ok("---\n" MINIMAL "...\n", &cfg);
	config_release(&cfg);
}

static void test_max_backends(void **state)
{
	struct rbuf b = RBUF_INIT;
	struct relay_config cfg;
	char err[512];
	(void)state;

	rbuf_appendf(&b, DD "backends:\n");
	for (int i = 0; i < RELAY_MAX_BACKENDS; i++)
		rbuf_appendf(&b, "  - {name: b%d, url: 'http://h%d'}\n", i, i);
	load_ok(rbuf_cstr(&b), &cfg);
	assert_int_equal(cfg.nbackends, RELAY_MAX_BACKENDS);
	assert_string_equal(cfg.backends[RELAY_MAX_BACKENDS - 1].name, "b63");
	config_release(&cfg);

	rbuf_appendf(&b, "  - {name: extra, url: 'http://h'}\n");
	assert_int_equal(load(rbuf_cstr(&b), &cfg, err, sizeof(err)), -1);
	assert_string_equal(err, "t.yaml:67:5: 'backends' has more than 64 entries");
	rbuf_release(&b);
}

struct url_case {
	const char *url, *host;
	unsigned port;
	const char *prefix;
};

static void test_url_forms(void **state)
{
	static const struct url_case cases[] = {
		{ "http://influx", "influx", 80, "" },
		{ "http://influx/", "influx", 80, "" },
		{ "http://influx:8086", "influx", 8086, "" },
		{ "http://influx:65535/", "influx", 65535, "" },
		{ "http://127.0.0.1:8086/db/", "127.0.0.1", 8086, "/db" },
		{ "http://[::1]:8086", "::1", 8086, "" },
		{ "http://[2001:db8::5]/a/b///", "2001:db8::5", 80, "/a/b" },
		{ "http://my_host.internal-1.:9/x%20y", "my_host.internal-1.", 9, "/x%20y" },
		{ "http://h/a-b_c.d~e!$&()*+,;=:@%2F/", "h", 80, "/a-b_c.d~e!$&()*+,;=:@%2F" },
		{ "Http://h//", "h", 80, "" },
		{ "http://h:8086/influx", "h", 8086, "/influx" },
		{ "http://h:8086/writer", "h", 8086, "/writer" },
		{ "http://h:8086/write/x", "h", 8086, "/write/x" },
	};
	char text[512];
	(void)state;

	for (size_t i = 0; i < RELAY_ARRAY_SIZE(cases); i++) {
		struct relay_config cfg;
		snprintf(text, sizeof(text), DD "backends:\n  - name: a\n    url: '%s'\n", cases[i].url);
		load_ok(text, &cfg);
		assert_string_equal(cfg.backends[0].url, cases[i].url);
		assert_string_equal(cfg.backends[0].host, cases[i].host);
		assert_int_equal(cfg.backends[0].port, cases[i].port);
		assert_string_equal(cfg.backends[0].path_prefix, cases[i].prefix);
		config_release(&cfg);
	}
}

struct bad_case {
	const char *what;
	const char *text;
	const char *prefix; /* "t.yaml:LINE:COL: " or "t.yaml: " */
	const char *msg;    /* a substring of the rest */
};

#define URL(u) DD "backends:\n  - name: a\n    url: '" u "'\n"

static const struct bad_case bad_cases[] = {
	/* influxdb-relay's habit: the write path in the url. */
	{ "url ending in /write", URL("http://h:8086/write"), "t.yaml:4:10: ",
	  "backends[0].url 'http://h:8086/write' ends in /write: relayd adds the write path itself; "
	  "use url: http://h:8086" },
	{ "url ending in /write/", URL("http://h:8086/influx/write/"), "t.yaml:4:10: ",
	  "ends in /write: relayd adds the write path itself; use url: http://h:8086/influx" },
	{ "url ending in /api/v2/write", URL("https://h/api/v2/write"), "t.yaml:4:10: ",
	  "backends[0].url 'https://h/api/v2/write' ends in /api/v2/write: relayd adds the write path itself; "
	  "use url: https://h" },
	/* Keys. */
	{ "unknown top-level key", MINIMAL "foo: 1\n", "t.yaml:5:1: ", "unknown key 'foo'" },
	{ "unknown nested key", DD "listen:\n  htp: 1.2.3.4:5\n" BK,
	  "t.yaml:3:3: ", "unknown key 'htp' in 'listen' (did you mean 'http'?)" },
	{ "key in the wrong section", DD "queue:\n  max_body_size: 1\n" BK,
	  "t.yaml:3:3: ", "unknown key 'max_body_size' in 'queue' (did you mean 'http.max_body_size'?)" },
	{ "unknown backend key", DD "backends:\n  - name: a\n    nmae: b\n    url: http://h\n",
	  "t.yaml:4:5: ", "unknown key 'nmae' in 'backends[0]'" },
	{ "duplicate key", DD "data_dir: /y\n" BK, "t.yaml:2:1: ", "duplicate key 'data_dir' (first at line 1)" },
	{ "duplicate nested key", DD "http:\n  max_body_size: 1\n  max_body_size: 2\n" BK,
	  "t.yaml:4:3: ", "duplicate key 'http.max_body_size' (first at line 3)" },
	{ "duplicate section", DD "http: {}\nhttp: {}\n" BK, "t.yaml:3:1: ", "duplicate key 'http'" },
	{ "duplicate backend key", DD "backends:\n  - name: a\n    name: b\n    url: http://h\n",
	  "t.yaml:4:5: ", "duplicate key 'backends[0].name' (first at line 3)" },
	{ "key that is a sequence", "? [a]\n: b\n", "t.yaml:1:3: ", "a key must be a word, not a sequence" },
	{ "merge key", DD "backends:\n  - name: a\n    <<: {url: http://h}\n",
	  "t.yaml:4:5: ", "merge keys (<<) are not supported" },
	{ "NUL in a key", "\"data_dir\\0\": /x\n" BK, "t.yaml:1:1: ", "a key contains a NUL character" },

	/* Types. */
	{ "sequence for a string", "data_dir: [a]\n" BK, "t.yaml:1:11: ", "'data_dir' must be a single value, not a sequence" },
	{ "mapping for a size", DD "http:\n  max_body_size: {a: 1}\n" BK,
	  "t.yaml:3:18: ", "'http.max_body_size' must be a single value, not a mapping" },
	{ "scalar for a section", DD "http: 5\n" BK, "t.yaml:2:7: ", "'http' must be a mapping of keys, not a single value" },
	{ "sequence for a section", DD "queue: [1]\n" BK, "t.yaml:2:8: ", "'queue' must be a mapping of keys, not a sequence" },
	{ "file is a scalar", "hello\n", "t.yaml:1:1: ", "must be a mapping of keys, not a single value" },
	{ "file is a sequence", "- a\n- b\n", "t.yaml:1:1: ", "must be a mapping of keys, not a sequence" },
	{ "empty value", "data_dir:\n" BK, "t.yaml:1:1: ", "'data_dir' needs a value" },
	{ "empty string", "data_dir: ''\n" BK, "t.yaml:1:11: ", "'data_dir' must not be empty" },
	{ "NUL in a value", "data_dir: \"/x\\0y\"\n" BK, "t.yaml:1:11: ", "'data_dir' contains a NUL character" },

	/* Values. */
	{ "bad log level", DD "log_level: verbose\n" BK,
	  "t.yaml:2:12: ", "'log_level' must be one of debug, info, notice, warn, error, not 'verbose'" },
	{ "bad size", DD "http:\n  max_body_size: abc\n" BK,
	  "t.yaml:3:18: ", "'http.max_body_size' must be a size like 25MiB, not 'abc'" },
	{ "negative size", DD "http:\n  max_line_size: -1\n" BK,
	  "t.yaml:3:18: ", "'http.max_line_size' must be a size like 25MiB, not '-1'" },
	{ "zero size", DD "http:\n  max_header_size: 0\n" BK,
	  "t.yaml:3:20: ", "'http.max_header_size' must be at least 1B, not '0'" },
	{ "overflowing size", DD "http:\n  max_body_size: 99999999999TiB\n" BK,
	  "t.yaml:3:18: ", "must be a size like 25MiB" },
	{ "queue too small", DD "queue:\n  max_size: 1000\n" BK,
	  "t.yaml:3:13: ", "'queue.max_size' must be at least 1MiB, not '1000'" },
	{ "backend queue too small", DD "backends:\n  - name: a\n    url: http://h\n    max_size: 1KiB\n",
	  "t.yaml:5:15: ", "'backends[0].max_size' must be at least 1MiB, not '1KiB'" },
	{ "map size too small", DD "queue:\n  map_size: 1000\n" BK,
	  "t.yaml:3:13: ", "'queue.map_size' must be 0 or at least 1MiB, not '1000'" },
	{ "bad duration", DD "http:\n  idle_timeout: 5 minutes\n" BK,
	  "t.yaml:3:17: ", "'http.idle_timeout' must be a duration like 10s, not '5 minutes'" },
	{ "zero timeout", DD "http:\n  body_timeout: 0s\n" BK,
	  "t.yaml:3:17: ", "'http.body_timeout' must be at least 1ms, not '0s'" },
	{ "bad backend duration", DD "backends:\n  - name: a\n    url: http://h\n    max_age: 1w\n",
	  "t.yaml:5:14: ", "'backends[0].max_age' must be a duration like 10s, not '1w'" },
	{ "retry_after not whole seconds", DD "queue:\n  retry_after: 1500ms\n" BK,
	  "t.yaml:3:16: ", "'queue.retry_after' must be a whole number of seconds like 10s, not '1500ms'" },
	{ "retry_after zero", DD "queue:\n  retry_after: 0\n" BK,
	  "t.yaml:3:16: ", "'queue.retry_after' must be at least 1s, not '0'" },
	{ "integer with a unit", DD "http:\n  max_connections: 1k\n" BK,
	  "t.yaml:3:20: ", "'http.max_connections' must be an integer from 1 to 4294967295, not '1k'" },
	{ "zero connections", DD "http:\n  max_connections: 0\n" BK,
	  "t.yaml:3:20: ", "'http.max_connections' must be an integer" },
	{ "too many commit batches", DD "queue:\n  max_commit_batches: 65537\n" BK,
	  "t.yaml:3:23: ", "'queue.max_commit_batches' must be an integer from 1 to 65536, not '65537'" },
	{ "long value is cut", DD "log_level: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n" BK,
	  "t.yaml:2:12: ", "not 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa...'" },
	{ "control characters are not echoed", DD "log_level: \"a\\nb\\x1b[0m\"\n" BK,
	  "t.yaml:2:12: ", "not 'a?b?[0m'" },

	/* Addresses. */
	{ "listen on a name", DD "listen:\n  http: example.com:80\n" BK,
	  "t.yaml:3:9: ", "'listen.http' must be an address like 127.0.0.1:9096: 'example.com' is not an IPv4" },
	{ "listen without a port", DD "listen:\n  http: 127.0.0.1\n" BK,
	  "t.yaml:3:9: ", "'listen.http' must be an address like 127.0.0.1:9096: '127.0.0.1' has no port" },
	{ "listen on a bad port", DD "listen:\n  http: 127.0.0.1:99999\n" BK,
	  "t.yaml:3:9: ", "'listen.http' must be an address like 127.0.0.1:9096: '127.0.0.1:99999' has a bad port" },
	{ "listen on port 0", DD "listen:\n  http: 127.0.0.1:0\n" BK,
	  "t.yaml:3:9: ", "has a bad port" },
	{ "listen on a bad IPv6", DD "listen:\n  http: '[::g]:80'\n" BK,
	  "t.yaml:3:9: ", "is not an IPv6 address" },

	/* Backend URLs. */
	{ "ftp url", URL("ftp://h"), "t.yaml:4:10: ", "'backends[0].url' must be an http:// or https:// URL: scheme 'ftp' is not supported" },
	{ "tls keys on an http url", DD "backends:\n  - name: a\n    url: http://h\n    tls_ca: /x\n", "t.yaml:3:5: ",
	  "'backends[0]' has tls_* or insecure_skip_verify keys but its url is http://" },
	{ "tls_cert without tls_key", DD "backends:\n  - name: a\n    url: https://h\n    tls_cert: /x\n", "t.yaml:3:5: ",
	  "'backends[0]' needs both 'tls_cert' and 'tls_key', or neither" },
	{ "bad tls_min_version", DD "backends:\n  - name: a\n    url: https://h\n    tls_min_version: 1.1\n", "t.yaml:5:22: ",
	  "1.2 or 1.3" },
	{ "no listener", DD "listen:\n  http: off\n" BK, "t.yaml:3:1: ",
	  "'listen.http' is off and 'listen.https' is not set: relayd would listen on nothing" },
	{ "https without a certificate", DD "listen:\n  https: 127.0.0.1:9443\n" BK, "t.yaml:3:1: ",
	  "'listen.https' needs 'tls.cert_file' and 'tls.key_file'" },
	{ "a certificate without https", DD "tls:\n  cert_file: /c\n  key_file: /k\n" BK, "t.yaml:3:1: ",
	  "'tls' names a certificate but 'listen.https' is not set" },
	{ "client_cert_auth without a CA", DD "listen:\n  https: 127.0.0.1:9443\ntls:\n  cert_file: /c\n  key_file: /k\n"
	  "  client_cert_auth: true\n" BK, "t.yaml:7:1: ", "'tls.client_cert_auth' needs 'tls.client_ca_file'" },
	{ "url without a scheme", URL("influx:8086"), "t.yaml:4:10: ", "must be an http:// or https:// URL: it does not start with http:// or https://" },
	{ "url without a host", URL("http://"), "t.yaml:4:10: ", "must be an http:// or https:// URL: it has no host" },
	{ "url with only a path", URL("http:///write"), "t.yaml:4:10: ", "must be an http:// or https:// URL: it has no host" },
	{ "url with only a port", URL("http://:8086"), "t.yaml:4:10: ", "must be an http:// or https:// URL: it has no host" },
	{ "url with port 0", URL("http://h:0"), "t.yaml:4:10: ", "must be an http:// or https:// URL: bad port '0' (want 1-65535)" },
	{ "url with a big port", URL("http://h:65536"), "t.yaml:4:10: ", "bad port '65536'" },
	{ "url with an empty port", URL("http://h:/x"), "t.yaml:4:10: ", "bad port ''" },
	{ "url with a named port", URL("http://h:http"), "t.yaml:4:10: ", "bad port 'http'" },
	{ "url with credentials", URL("http://u:p@h"), "t.yaml:4:10: ", "must be an http:// or https:// URL: user:password@ is not supported" },
	{ "url with a user", URL("http://user@h:8086"), "t.yaml:4:10: ", "user:password@ is not supported" },
	{ "url with a query", URL("http://h/?db=x"), "t.yaml:4:10: ", "a query or fragment" },
	{ "url with a fragment", URL("http://h/#x"), "t.yaml:4:10: ", "a query or fragment" },
	{ "url with a bad IPv4", URL("http://1.2.3"), "t.yaml:4:10: ", "'1.2.3' is not an IPv4 address" },
	{ "url with a bad IPv6", URL("http://[zz]:1"), "t.yaml:4:10: ", "'[zz]' is not an IPv6 address" },
	{ "url with an open bracket", URL("http://[::1"), "t.yaml:4:10: ", "'[' without a closing ']'" },
	{ "url with a bad host", URL("http://h h"), "t.yaml:4:10: ", "the host 'h h' has a character" },
	{ "url with a space in the path", URL("http://h/a b"), "t.yaml:4:10: ",
	  "the path has a character that must be percent-encoded" },
	{ "url with a quote in the path", URL("http://h/a\"b"), "t.yaml:4:10: ", "must be percent-encoded" },
	{ "url with non-ASCII in the path", URL("http://h/\xc3\xa9"), "t.yaml:4:10: ", "must be percent-encoded" },
	{ "url with a bad escape", URL("http://h/a%2"), "t.yaml:4:10: ", "a '%' that is not followed by two hex digits" },
	{ "url with an empty label", URL("http://a..b/"), "t.yaml:4:10: ", "the host 'a..b' has an empty label" },
	{ "url with a leading dot", URL("http://.b/"), "t.yaml:4:10: ", "the host '.b' has an empty label" },

	/* Delivery settings of a backend. */
#define BKV(kv) DD "backends:\n  - name: a\n    url: http://h\n    " kv "\n"
	{ "bad database policy", BKV("on_database_not_found: drop"), "t.yaml:5:28: ",
	  "'backends[0].on_database_not_found' must be one of hold, create, dead_letter, not 'drop'" },
	{ "timeout too short", BKV("timeout: 5ms"), "t.yaml:5:14: ",
	  "'backends[0].timeout' must be at least 10ms, not '5ms'" },
	{ "timeout too long", BKV("timeout: 2h"), "t.yaml:5:14: ", "'backends[0].timeout' must be at most 1h, not '2h'" },
	{ "connect timeout too long", BKV("connect_timeout: 11m"), "t.yaml:5:22: ",
	  "'backends[0].connect_timeout' must be at most 10m, not '11m'" },
	{ "batch too small", BKV("batch_max_size: 1000"), "t.yaml:5:21: ",
	  "'backends[0].batch_max_size' must be at least 1KiB, not '1000'" },
	{ "batch too large", BKV("batch_max_size: 2GiB"), "t.yaml:5:21: ",
	  "'backends[0].batch_max_size' must be at most 1GiB, not '2GiB'" },
	{ "no lines per batch", BKV("batch_max_lines: 0"), "t.yaml:5:22: ",
	  "'backends[0].batch_max_lines' must be an integer from 1 to 10000000, not '0'" },
	{ "gzip not a boolean", BKV("gzip: maybe"), "t.yaml:5:11: ", "'backends[0].gzip' must be true or false, not 'maybe'" },
	{ "gzip as a number", BKV("gzip: 1"), "t.yaml:5:11: ", "'backends[0].gzip' must be true or false, not '1'" },
	{ "retry_max too long", BKV("retry_max: 2d"), "t.yaml:5:16: ", "'backends[0].retry_max' must be at most 1d, not '2d'" },
	{ "retry_min above retry_max", DD "backends:\n  - name: a\n    url: http://h\n  - name: b\n"
	  "    url: http://h\n    retry_min: 1m\n    retry_max: 10s\n", "t.yaml:5:5: ",
	  "'backends[1].retry_min' (1m) must not be more than 'backends[1].retry_max' (10s)" },
	{ "retry_min above the default retry_max", BKV("retry_min: 31s"), "t.yaml:3:5: ",
	  "'backends[0].retry_min' (31s) must not be more than 'backends[0].retry_max' (30s)" },

	/* Required things and backends. */
	{ "missing data_dir", BK, "t.yaml:1:1: ", "'data_dir' is required" },
	{ "missing backends", DD "log_level: info\n", "t.yaml:1:1: ", "'backends' is required" },
	{ "missing both", "log_level: info\n", "t.yaml:1:1: ", "'data_dir' is required" },
	{ "empty backends", DD "backends: []\n", "t.yaml:2:11: ", "'backends' must list at least one backend" },
	{ "null backends", DD "backends:\n", "t.yaml:2:1: ", "'backends' must list at least one backend" },
	{ "backends as a mapping", DD "backends:\n  a: http://h\n", "t.yaml:3:3: ", "'backends' must be a sequence" },
	{ "backend as a scalar", DD "backends:\n  - http://h\n", "t.yaml:3:5: ",
	  "'backends[0]' must be a mapping with 'name' and 'url', not a single value" },
	{ "backend without a name", DD "backends:\n  - url: http://h\n", "t.yaml:3:5: ", "'backends[0].name' is required" },
	{ "backend without a url", DD "backends:\n  - name: a\n  - name: b\n    url: http://h\n",
	  "t.yaml:3:5: ", "'backends[0].url' is required" },
	{ "bad backend name", DD "backends:\n  - name: a b\n    url: http://h\n",
	  "t.yaml:3:11: ", "'backends[0].name' must be 1-64 characters of A-Z a-z 0-9 _ . -, not 'a b'" },
	{ "backend name too long", DD "backends:\n  - url: http://h\n    name: "
	  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n",
	  "t.yaml:4:11: ", "'backends[0].name' must be 1-64 characters" },
	{ "duplicate backend name", DD "backends:\n  - {name: a, url: 'http://h'}\n  - {name: b, url: 'http://h'}\n"
	  "  - name: a\n    url: http://h\n",
	  "t.yaml:5:11: ", "duplicate backend name 'a' (first at line 3)" },

	{ "relative log file", DD "log_output: relayd.log\n" BK, "t.yaml:2:13: ",
	  "'log_output' must be stderr, syslog, journal or an absolute file path, not 'relayd.log'" },
	{ "relative log file in a list", DD "log_output: [journal, relayd.log]\n" BK, "t.yaml:2:23: ",
	  "'log_output' must be stderr, syslog, journal or an absolute file path, not 'relayd.log'" },
	{ "empty log output list", DD "log_output: []\n" BK, "t.yaml:2:13: ",
	  "'log_output' must list at least one output" },
	{ "mapping in a log output list", DD "log_output: [{a: b}]\n" BK, "t.yaml:2:14: ",
	  "'log_output' must be a single value, not a mapping" },
	/* listen.udp, auth, backend APIs. */
	{ "udp without db", DD "listen:\n  udp:\n    - address: 127.0.0.1:1\n" BK, "t.yaml:4:7: ",
	  "'listen.udp[0].db' is required" },
	{ "udp bad address", DD "listen:\n  udp:\n    - {address: nowhere, db: d}\n" BK, "t.yaml:4:17: ",
	  "'listen.udp[0].address' must be an address like 127.0.0.1:9096" },
	{ "udp duplicate address", DD "listen:\n  udp:\n    - {address: '127.0.0.1:5', db: d}\n"
	  "    - {address: '127.0.0.1:5', db: e}\n" BK, "t.yaml:5:17: ",
	  "duplicate listener address '127.0.0.1:5' (first at line 4)" },
	{ "udp bad precision", DD "listen:\n  udp:\n    - {address: '127.0.0.1:5', db: d, precision: xs}\n" BK,
	  "t.yaml:4:50: ", "'listen.udp[0].precision' must be one of ns, u, ms, s, m, h, not 'xs'" },
	{ "udp as a mapping", DD "listen:\n  udp:\n    address: x\n" BK, "t.yaml:4:5: ",
	  "'listen.udp' must be a sequence of listeners (- 'address' and 'db' ...), not a mapping" },
	{ "auth on without anyone", DD "auth:\n  enabled: yes\n" BK, "t.yaml:3:1: ",
	  "'auth.enabled' is true but neither 'auth.users' nor 'auth.tokens' lists anyone" },
	{ "user without password", DD "auth:\n  users:\n    - name: u\n" BK, "t.yaml:4:7: ",
	  "'auth.users[0].password' is required" },
	{ "duplicate user", DD "auth:\n  users:\n    - {name: u, password: a}\n    - {name: u, password: b}\n" BK,
	  "t.yaml:5:14: ", "duplicate user name 'u' (first at line 4)" },
	{ "duplicate token is not echoed", DD "auth:\n  tokens:\n    - {name: a, token: s3cret}\n"
	  "    - {name: b, token: s3cret}\n" BK, "t.yaml:5:24: ", "this token is already used at line 4" },
	{ "bad backend type", BKV("type: v3"), "t.yaml:5:11: ", "'backends[0].type' must be v1 or v2, not 'v3'" },
	{ "username without password", BKV("username: u"), "t.yaml:3:5: ",
	  "'backends[0]' needs both 'username' and 'password', or neither" },
	{ "username and token", BKV("username: u\n    password: p\n    token: t"), "t.yaml:3:5: ",
	  "'backends[0]' has both 'username' and 'token'" },
	{ "v2 with username", BKV("type: v2\n    username: u\n    password: p"), "t.yaml:3:5: ",
	  "'backends[0]' is type v2: a v2 write authenticates with 'token'" },
	{ "v2 create", BKV("type: v2\n    on_database_not_found: create"), "t.yaml:3:5: ",
	  "on_database_not_found: create works with v1 backends only" },
	{ "v1 with org", BKV("org: o"), "t.yaml:3:5: ", "'backends[0].org' applies to type v2 backends only" },

	/* YAML itself. */
	{ "empty file", "", "t.yaml: ", "empty configuration" },
	{ "only comments", "# nothing here\n", "t.yaml: ", "empty configuration" },
	{ "syntax error", DD "  foo: : bar\n" BK, "t.yaml:2:6: ", "invalid yaml: mapping values are not allowed" },
	{ "unterminated quote", "data_dir: \"abc\n" BK, "t.yaml:5:1: ", "invalid yaml: found unexpected end of stream" },
	{ "tab indentation", DD "http:\n\tmax_body_size: 1\n" BK, "t.yaml:3:1: ", "invalid yaml: found character that cannot start any token" },
	{ "invalid UTF-8", "data_dir: /x\xff\n" BK, "t.yaml:1:13: ", "invalid yaml: invalid leading UTF-8 octet" },
	{ "control character", DD "\x01\n" BK, "t.yaml:2:1: ", "invalid yaml: control characters are not allowed" },
	{ "undefined alias", "data_dir: *nope\n" BK, "t.yaml:1:11: ", "invalid yaml: found undefined alias" },
	{ "alias", "data_dir: &d /x\nlog_level: *d\n" BK, "t.yaml:2:1: ",
	  "'log_level' is an alias: anchors and aliases are not supported" },
	{ "recursive alias", DD "backends: &a [*a]\n", "t.yaml:2:11: ", "anchors and aliases are not supported" },
	{ "two documents", MINIMAL "---\n" MINIMAL, "t.yaml:6:1: ", "only one yaml document is allowed" },
	{ "aliased backend", DD "backends:\n  - &b {name: a, url: 'http://h'}\n  - *b\n", "t.yaml:3:5: ",
	  "'backends[1]' is an alias: anchors and aliases are not supported" },
	{ "too deep", DD "x: [[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]\n" BK,
	  "t.yaml:2:19: ", "nesting deeper than 16 levels" },
	/* query: */
	{ "unknown query backend", DD "query:\n  backends: [a, nope]\n" BK, "t.yaml:3:17: ",
	  "'query.backends' names 'nope', which is not a backend" },
	{ "query backend twice", DD "query:\n  backends: [a, a]\n" BK, "t.yaml:3:17: ", "names 'a' twice" },
	{ "query backends not a list", DD "query:\n  backends: a\n" BK, "t.yaml:3:13: ",
	  "must be a sequence of backend names" },
	{ "bad query backend name", DD "query:\n  backends: ['a b']\n" BK, "t.yaml:3:14: ",
	  "must list backend names" },
	{ "bad when_behind", DD "query:\n  when_behind: oldest\n" BK, "t.yaml:3:16: ",
	  "must be least_behind or refuse" },
	{ "bad state_changing", DD "query:\n  state_changing: allow\n" BK, "t.yaml:3:19: ",
	  "must be refuse or queue" },
	{ "query body beyond the budget", DD "http:\n  max_buffered_size: 8MiB\n  max_body_size: 1MiB\nquery:\n  max_body_size: 9MiB\n" BK,
	  "t.yaml:6:1: ", "'query.max_body_size' (9437184 bytes) must not be more than 'http.max_buffered_size'" },
};

/* query.backends: the order queries try, resolved to indexes; the
 * defaults. */
static void test_query_section(void **state)
{
	struct relay_config cfg;
	(void)state;

	load_ok(MINIMAL, &cfg);
	assert_int_equal(cfg.query_enabled, 1);
	assert_null(cfg.query_backends);
	assert_int_equal(cfg.nquery, 1);
	assert_int_equal(cfg.query_max_lag_ms, 1000);
	assert_int_equal(cfg.query_when_behind, RELAY_BEHIND_LEAST);
	assert_int_equal(cfg.query_timeout_ms, 300000);
	assert_int_equal(cfg.query_max_body_bytes, 16 * MIB);
	assert_int_equal(cfg.query_state_changing, RELAY_STATE_REFUSE);
	config_release(&cfg);

	load_ok(DD "query:\n  enabled: false\n  backends: [c, a]\n  max_lag: 0\n  when_behind: refuse\n"
	           "  timeout: 0\n  max_body_size: 1MiB\n  state_changing: queue\n"
	           "backends:\n  - name: a\n    url: http://h\n  - name: b\n    url: http://h\n"
	           "  - name: c\n    url: http://h\n", &cfg);
	assert_int_equal(cfg.query_enabled, 0);
	assert_string_equal(cfg.query_backends, "c,a");
	assert_int_equal(cfg.nquery, 2);
	assert_int_equal(cfg.query_order[0], 2);
	assert_int_equal(cfg.query_order[1], 0);
	assert_int_equal(cfg.query_max_lag_ms, 0);
	assert_int_equal(cfg.query_when_behind, RELAY_BEHIND_REFUSE);
	assert_int_equal(cfg.query_timeout_ms, 0);
	assert_int_equal(cfg.query_max_body_bytes, MIB);
	assert_int_equal(cfg.query_state_changing, RELAY_STATE_QUEUE);
	config_release(&cfg);

	/* left out, the body limit comes down to a small budget */
	load_ok(DD "http:\n  max_buffered_size: 4MiB\n  max_body_size: 1MiB\n" BK, &cfg);
	assert_int_equal(cfg.query_max_body_bytes, 4 * MIB);
	config_release(&cfg);

	/* an empty list is the default: every backend */
	load_ok(DD "query:\n  backends: []\n" BK, &cfg);
	assert_null(cfg.query_backends);
	assert_int_equal(cfg.nquery, 1);
	config_release(&cfg);
}

static void test_bad_configs(void **state)
{
	(void)state;

	for (size_t i = 0; i < RELAY_ARRAY_SIZE(bad_cases); i++) {
		const struct bad_case *c = &bad_cases[i];
		struct relay_config cfg;
		char err[512];

		memset(err, 'x', sizeof(err));
		if (load(c->text, &cfg, err, sizeof(err)) != -1)
			fail_msg("%s: loaded", c->what);
		if (strncmp(err, c->prefix, strlen(c->prefix)) != 0 || !strstr(err + strlen(c->prefix), c->msg))
			fail_msg("%s:\n  got  '%s'\n  want '%s...%s'", c->what, err, c->prefix, c->msg);
		/* One line, and nothing left for the caller to release. */
		assert_null(strchr(err, '\n'));
		assert_true(is_zero(&cfg, sizeof(cfg)));
	}
}

/* libyaml's scanner is quadratic in flow depth; the depth check must stop
 * this long before it takes seconds. */
static void test_deep_nesting(void **state)
{
	size_t depth = 400000;
	char *text = malloc(2 * depth + 8);
	struct relay_config cfg;
	char err[512];
	(void)state;

	assert_non_null(text);
	memcpy(text, "a: ", 3);
	memset(text + 3, '[', depth);
	memset(text + 3 + depth, ']', depth);
	memcpy(text + 3 + 2 * depth, "\n", 2);
	int rc = load(text, &cfg, err, sizeof(err));
	free(text);
	assert_int_equal(rc, -1);
	/* The top-level mapping is the first level, the 16th '[' the 17th. */
	assert_string_equal(err, "t.yaml:1:19: nesting deeper than 16 levels");
}

static void test_error_buffer(void **state)
{
	struct relay_config cfg;
	char err[16];
	(void)state;

	/* A short buffer is cut, still terminated. */
	memset(err, 'x', sizeof(err));
	assert_int_equal(load(DD, &cfg, err, sizeof(err)), -1);
	assert_int_equal(strlen(err), sizeof(err) - 1);
	assert_memory_equal(err, "t.yaml:1:1: 'ba", sizeof(err));
	/* No buffer at all. */
	assert_int_equal(load(DD, &cfg, NULL, 0), -1);
	assert_int_equal(config_load("/nonexistent/relayd.yaml", &cfg, NULL, 0), -1);
	/* NULL text with no length is an empty file. */
	assert_int_equal(config_load_buffer("t.yaml", NULL, 0, &cfg, err, sizeof(err)), -1);
}

/* Control bytes in any string, a budget below one body, the ceiling. */
static void test_door_budget_and_strings(void **state)
{
	struct relay_config cfg;
	char err[512];
	(void)state;

	load_ok(MINIMAL, &cfg);
	assert_int_equal(cfg.http_max_buffered_bytes, 512 * MIB);
	/* 64 MiB + 512 MiB + 1024 x 4 KiB + 8 x 8 MiB */
	assert_int_equal(config_memory_ceiling(&cfg), 64 * MIB + 512 * MIB + 4 * MIB + 64 * MIB);
	config_release(&cfg);

	assert_int_equal(load(DD BK "http: {max_buffered_size: 16MiB}\n", &cfg, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "'http.max_buffered_size' (16777216 bytes) must be at least 'http.max_body_size'"));
	load_ok(DD BK "http: {max_buffered_size: 16MiB, max_body_size: 16MiB}\n", &cfg);
	config_release(&cfg);

	static const char *const bad[] = {
		DD BK "listen:\n  udp:\n    - {address: '127.0.0.1:1', db: \"a\\nb\"}\n",
		DD BK "listen:\n  udp:\n    - {address: '127.0.0.1:1', db: a, rp: \"r\\e[31m\"}\n",
		DD "backends:\n  - {name: a, url: 'http://h', type: v2, org: \"o\\r\"}\n",
		DD "backends:\n  - {name: a, url: 'http://h', username: u, password: \"p\\x7f\"}\n",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (load(bad[i], &cfg, err, sizeof(err)) != -1)
			fail_msg("loaded: %s", bad[i]);
		if (!strstr(err, "must not contain control characters"))
			fail_msg("%s: %s", bad[i], err);
	}
}

/* A file that holds secrets and is readable by others is reported. */
static void test_secrets_exposed(void **state)
{
	struct relay_config cfg;
	char err[512], why[600];
	char path[] = "/tmp/test_config.XXXXXX";
	(void)state;

	int fd = mkstemp(path);
	assert_true(fd >= 0);
	const char *text = DD BK "auth: {enabled: true, tokens: [{name: t, token: secret}]}\n";
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	assert_int_equal(chmod(path, 0600), 0);
	assert_int_equal(config_load(path, &cfg, err, sizeof(err)), 0);
	assert_int_equal(config_secrets_exposed(&cfg, why, sizeof(why)), 0);
	assert_int_equal(chmod(path, 0644), 0);
	assert_int_equal(config_secrets_exposed(&cfg, why, sizeof(why)), 1);
	assert_non_null(strstr(why, "auth.tokens"));
	assert_non_null(strstr(why, "chmod o-r"));
	config_release(&cfg);

	/* No secret: nothing to say, whatever the mode. */
	fd = open(path, O_WRONLY | O_TRUNC);
	assert_int_equal(write(fd, MINIMAL, strlen(MINIMAL)), (ssize_t)strlen(MINIMAL));
	close(fd);
	assert_int_equal(config_load(path, &cfg, err, sizeof(err)), 0);
	assert_int_equal(config_secrets_exposed(&cfg, why, sizeof(why)), 0);
	config_release(&cfg);
	unlink(path);
}

#define NOLIM UINT64_MAX

static void test_map_size(void **state)
{
	struct relay_config cfg;
	(void)state;

	/* Derived: room for every backend the queue can hold at the largest
	 * limit, so that a reload adding backends needs no restart. */
	load_ok(MINIMAL, &cfg);
	assert_int_equal(config_map_need(&cfg), 2 * GIB + 64 * MIB);
	assert_int_equal(config_map_size_under(&cfg, NOLIM), 2 * RELAY_MAX_BACKENDS * GIB + 64 * MIB);
	config_release(&cfg);

	load_ok(DD "backends:\n  - {name: a, url: 'http://h'}\n  - {name: b, url: 'http://h', max_size: 512MiB}\n", &cfg);
	assert_int_equal(config_map_need(&cfg), 3 * GIB + 64 * MIB);
	assert_int_equal(config_map_size_under(&cfg, NOLIM), 2 * RELAY_MAX_BACKENDS * GIB + 64 * MIB);
	config_release(&cfg);

	/* The headroom is capped (address space), never below the need. */
	load_ok(DD "queue: {max_size: 100GiB}\n" BK, &cfg);
	assert_int_equal(config_map_size_under(&cfg, NOLIM), 256 * GIB);
	config_release(&cfg);
	load_ok(DD "queue: {max_size: 100GiB}\nbackends:\n  - {name: a, url: 'http://h'}\n"
	        "  - {name: b, url: 'http://h'}\n  - {name: c, url: 'http://h'}\n", &cfg);
	assert_int_equal(config_map_size_under(&cfg, NOLIM), 600 * GIB + 64 * MIB);
	config_release(&cfg);

	/* Set by the user: as set, whatever the limits need. */
	load_ok(DD "queue: {map_size: 3MiB}\n" BK, &cfg);
	assert_int_equal(config_map_size_under(&cfg, NOLIM), 3 * MIB);
	assert_int_equal(config_map_need(&cfg), 2 * GIB + 64 * MIB);
	config_release(&cfg);

	/* Limits this large are legal; the sum saturates instead of wrapping. */
	load_ok(DD "queue: {max_size: 16000000TiB}\n"
	        "backends:\n  - {name: a, url: 'http://h'}\n  - {name: b, url: 'http://h'}\n", &cfg);
	assert_int_equal(cfg.backends[1].max_bytes, 16000000 * TIB);
	assert_true(config_map_size_under(&cfg, NOLIM) == UINT64_MAX);
	config_release(&cfg);

	/* A struct filled by hand, as other modules' tests do. */
	struct relay_backend_config b[2] = { { .max_bytes = MIB }, { .max_bytes = 2 * MIB } };
	struct relay_config hand = { .backends = b, .nbackends = 2 };
	assert_int_equal(config_map_need(&hand), 6 * MIB + 64 * MIB);
	assert_int_equal(config_map_size_under(&hand, NOLIM), 2 * RELAY_MAX_BACKENDS * 2 * MIB + 64 * MIB);
	hand.queue_map_bytes = 5;
	assert_int_equal(config_map_size_under(&hand, NOLIM), 5);
}

/* Under an address-space limit (ulimit -v 4000000, LimitAS=) the derived
 * headroom takes at most a quarter of it, never less than the need; a need
 * that does not fit is refused with the sizes and RLIMIT_AS named. */
static void test_map_size_under_limit(void **state)
{
	struct relay_config cfg;
	char why[600];
	(void)state;
	const uint64_t lim = 4000000ULL * 1024; /* ulimit -v 4000000 */

	load_ok(MINIMAL, &cfg);
	/* a quarter of the limit is less than the need (2 GiB + 64 MiB) */
	assert_int_equal(config_map_size_under(&cfg, lim), 2 * GIB + 64 * MIB);
	assert_int_equal(config_map_fits(&cfg, lim, why, sizeof(why)), 1);
	/* a larger limit: the quarter, above the need and below the cap */
	assert_int_equal(config_map_size_under(&cfg, 64 * GIB), 16 * GIB);
	assert_int_equal(config_map_size_under(&cfg, 4 * TIB), 2 * RELAY_MAX_BACKENDS * GIB + 64 * MIB);
	/* the limit of this process, none here: as without */
	if (config_as_limit() == NOLIM)
		assert_int_equal(config_map_size(&cfg), config_map_size_under(&cfg, NOLIM));
	/* the need alone does not fit */
	assert_int_equal(config_map_fits(&cfg, 2 * GIB, why, sizeof(why)), 0);
	assert_non_null(strstr(why, "RLIMIT_AS"));
	assert_non_null(strstr(why, "2112 MiB"));
	assert_non_null(strstr(why, "2048 MiB"));
	assert_int_equal(config_map_fits(&cfg, NOLIM, why, sizeof(why)), 1);
	config_release(&cfg);

	/* set by the user: as set; refused when it cannot fit */
	load_ok(DD "queue: {map_size: 3GiB}\n" BK, &cfg);
	assert_int_equal(config_map_size_under(&cfg, lim), 3 * GIB);
	assert_int_equal(config_map_fits(&cfg, 2 * GIB, why, sizeof(why)), 0);
	assert_non_null(strstr(why, "queue.map_size"));
	config_release(&cfg);
}


static void test_example_file(void **state)
{
	const char *dir = getenv("RELAY_SOURCE_DIR");
	struct relay_config ex, def;
	char path[4096], err[512];
	(void)state;

	if (dir && *dir)
		snprintf(path, sizeof(path), "%s/config.example.yaml", dir);
	else
		snprintf(path, sizeof(path), "../../config.example.yaml");
	if (access(path, R_OK) != 0)
		fail_msg("cannot find config.example.yaml at '%s' (set RELAY_SOURCE_DIR)", path);
	if (config_load(path, &ex, err, sizeof(err)) != 0)
		fail_msg("config.example.yaml does not load: %s", err);

	assert_string_equal(ex.path, path);
	/* next to the example, wherever it is read from (README's make run) */
	char want[4200];
	snprintf(want, sizeof(want), "%.*s/relayd-data", (int)(strrchr(path, '/') - path), path);
	if (path[0] == '/')
		assert_string_equal(ex.data_dir, want);
	assert_true(ex.data_dir[0] == '/');
	assert_non_null(strstr(ex.data_dir, "/relayd-data"));
	assert_int_equal(ex.nbackends, 1);
	assert_string_equal(ex.backends[0].name, "local");
	assert_string_equal(ex.backends[0].host, "127.0.0.1");
	assert_int_equal(ex.backends[0].port, 8086);

	/* The example says it shows the defaults; hold it to that. */
	load_ok(MINIMAL, &def);
	assert_string_equal(ex.log_level, def.log_level);
	assert_string_equal(ex.listen_http, def.listen_http);
	assert_int_equal(ex.http_max_body_bytes, def.http_max_body_bytes);
	assert_int_equal(ex.http_max_header_bytes, def.http_max_header_bytes);
	assert_int_equal(ex.http_max_line_bytes, def.http_max_line_bytes);
	assert_int_equal(ex.http_header_timeout_ms, def.http_header_timeout_ms);
	assert_int_equal(ex.http_body_timeout_ms, def.http_body_timeout_ms);
	assert_int_equal(ex.http_idle_timeout_ms, def.http_idle_timeout_ms);
	assert_int_equal(ex.http_max_connections, def.http_max_connections);
	assert_int_equal(ex.queue_max_bytes, def.queue_max_bytes);
	assert_int_equal(ex.queue_max_age_ms, def.queue_max_age_ms);
	assert_int_equal(ex.queue_retry_after_s, def.queue_retry_after_s);
	assert_int_equal(ex.queue_map_bytes, def.queue_map_bytes);
	assert_int_equal(ex.queue_max_commit_batches, def.queue_max_commit_batches);
	assert_int_equal(ex.backends[0].max_bytes, def.backends[0].max_bytes);
	assert_int_equal(ex.backends[0].max_age_ms, def.backends[0].max_age_ms);
	assert_int_equal(ex.backends[0].timeout_ms, def.backends[0].timeout_ms);
	assert_int_equal(ex.backends[0].connect_timeout_ms, def.backends[0].connect_timeout_ms);
	assert_int_equal(ex.backends[0].batch_max_bytes, def.backends[0].batch_max_bytes);
	assert_int_equal(ex.backends[0].batch_max_lines, def.backends[0].batch_max_lines);
	assert_int_equal(ex.backends[0].retry_min_ms, def.backends[0].retry_min_ms);
	assert_int_equal(ex.backends[0].retry_max_ms, def.backends[0].retry_max_ms);
	assert_int_equal(ex.backends[0].on_database_not_found, def.backends[0].on_database_not_found);
	assert_int_equal(ex.backends[0].gzip, def.backends[0].gzip);
	config_release(&def);
	config_release(&ex);
}

/* user: off by default; any non-empty name is taken (relayd looks it up
 * when it starts). */
static void test_user(void **state)
{
	struct relay_config cfg;
	char err[512];
	(void)state;

	load_ok(MINIMAL, &cfg);
	assert_null(cfg.user);
	config_release(&cfg);
	load_ok(DD "user: relayd\n" BK, &cfg);
	assert_string_equal(cfg.user, "relayd");
	config_release(&cfg);
	assert_int_equal(load(DD "user: ''\n" BK, &cfg, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "'user' must not be empty"));
}

/* The pacing keys: points and bytes per second (0 = none), the burst. */
static void test_rate_keys(void **state)
{
	struct relay_config cfg;
	char err[512];
	(void)state;
	load_ok(MINIMAL "    max_rate: 5000\n    max_rate_bytes: 2MiB\n    rate_burst: 250ms\n", &cfg);
	assert_int_equal(cfg.backends[0].max_rate, 5000);
	assert_int_equal(cfg.backends[0].max_rate_bytes, 2 * MIB);
	assert_int_equal(cfg.backends[0].rate_burst_ms, 250);
	config_release(&cfg);
	load_ok(MINIMAL "    max_rate: 0\n    max_rate_bytes: 0\n", &cfg);
	assert_int_equal(cfg.backends[0].max_rate, 0);
	assert_int_equal(cfg.backends[0].max_rate_bytes, 0);
	config_release(&cfg);
	assert_int_equal(load(MINIMAL "    max_rate: -1\n", &cfg, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "max_rate"));
	assert_int_equal(load(MINIMAL "    max_rate: fast\n", &cfg, err, sizeof(err)), -1);
	assert_int_equal(load(MINIMAL "    max_rate_bytes: lots\n", &cfg, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "max_rate_bytes"));
	assert_int_equal(load(MINIMAL "    rate_burst: 0\n", &cfg, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "rate_burst"));
	assert_int_equal(load(MINIMAL "    rate_burst: 2h\n", &cfg, err, sizeof(err)), -1);
}

/* A reload restarts a worker only when a backend's settings differ:
 * every key counts, and two loads of the same text are equal. */
static void test_backend_equal(void **state)
{
	static const char *const variants[] = {
		"    timeout: 31s\n", "    connect_timeout: 1s\n", "    batch_max_size: 1MiB\n",
		"    batch_max_lines: 7\n", "    retry_min: 1s\n", "    retry_max: 1m\n", "    parallel: 2\n",
		"    on_database_not_found: create\n", "    gzip: true\n", "    max_size: 5MiB\n",
		"    max_age: 1h\n", "    username: u\n    password: p\n", "    token: t\n",
		"    type: v2\n", "    type: v2\n    org: o\n", "    max_rate: 5000\n", "    max_rate_bytes: 1MiB\n",
		"    rate_burst: 2s\n",
	};
	struct relay_config a, b;
	char text[512];
	(void)state;

	load_ok(MINIMAL, &a);
	load_ok(MINIMAL, &b);
	assert_true(config_backend_equal(&a.backends[0], &b.backends[0]));
	config_release(&b);
	load_ok(DD "backends:\n  - name: a\n    url: http://127.0.0.1:8087\n", &b);
	assert_false(config_backend_equal(&a.backends[0], &b.backends[0]));
	config_release(&b);
	for (size_t i = 0; i < sizeof(variants) / sizeof(variants[0]); i++) {
		snprintf(text, sizeof(text), "%s%s", MINIMAL, variants[i]);
		load_ok(text, &b);
		if (config_backend_equal(&a.backends[0], &b.backends[0]))
			fail_msg("backend with '%s' compares equal to the default", variants[i]);
		config_release(&b);
	}
	config_release(&a);

	load_ok(DD "listen:\n  udp:\n    - {address: 127.0.0.1:8089, db: x}\n" BK, &a);
	load_ok(DD "listen:\n  udp:\n    - {address: 127.0.0.1:8089, db: x}\n" BK, &b);
	assert_true(config_udp_equal(&a.udp[0], &b.udp[0]));
	config_release(&b);
	load_ok(DD "listen:\n  udp:\n    - {address: 127.0.0.1:8089, db: y}\n" BK, &b);
	assert_false(config_udp_equal(&a.udp[0], &b.udp[0]));
	config_release(&b);
	config_release(&a);
}

static void write_file(const char *path, const char *text, size_t len)
{
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(text, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

/* Relative paths in a file mean its directory, whoever reads it and
 * from wherever (relayd and relayctl agree); absolute ones stay; a
 * buffer with no directory keeps them as written. */
static void test_relative_paths(void **state)
{
	char dir[] = "/tmp/test_config.XXXXXX", path[256], want[512], err[512], cwd[4096];
	struct relay_config cfg;
	(void)state;

	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/relayd.yaml", dir);
	static const char text[] =
		"data_dir: ./q\n"
		"listen:\n  https: 127.0.0.1:9443\n"
		"tls:\n  cert_file: certs/relay.pem\n  key_file: /etc/relayd/key.pem\n  client_ca_file: ../ca.pem\n"
		"backends:\n  - name: a\n    url: https://h\n    tls_ca: ca/\n    tls_cert: c.pem\n    tls_key: ./k.pem\n";
	write_file(path, text, strlen(text));
	assert_int_equal(config_load(path, &cfg, err, sizeof(err)), 0);
	snprintf(want, sizeof(want), "%s/q", dir);
	assert_string_equal(cfg.data_dir, want);
	snprintf(want, sizeof(want), "%s/certs/relay.pem", dir);
	assert_string_equal(cfg.tls_cert_file, want);
	assert_string_equal(cfg.tls_key_file, "/etc/relayd/key.pem");
	snprintf(want, sizeof(want), "%s/../ca.pem", dir);
	assert_string_equal(cfg.tls_client_ca_file, want);
	snprintf(want, sizeof(want), "%s/ca/", dir);
	assert_string_equal(cfg.backends[0].tls_ca, want);
	snprintf(want, sizeof(want), "%s/c.pem", dir);
	assert_string_equal(cfg.backends[0].tls_cert, want);
	snprintf(want, sizeof(want), "%s/k.pem", dir);
	assert_string_equal(cfg.backends[0].tls_key, want);
	config_release(&cfg);

	/* The file named relative to the current directory: the same. */
	assert_non_null(getcwd(cwd, sizeof(cwd)));
	assert_int_equal(chdir("/tmp"), 0);
	assert_int_equal(config_load(path + strlen("/tmp/"), &cfg, err, sizeof(err)), 0);
	assert_int_equal(chdir(cwd), 0);
	snprintf(want, sizeof(want), "%s/q", dir);
	assert_string_equal(cfg.data_dir, want);
	config_release(&cfg);

	/* A buffer has no directory: paths stay as written. */
	load_ok("data_dir: ./q\n" BK, &cfg);
	assert_string_equal(cfg.data_dir, "./q");
	config_release(&cfg);

	assert_int_equal(unlink(path), 0);
	assert_int_equal(rmdir(dir), 0);
}

/* An influxdb-relay TOML file is named for what it is, with the way to
 * convert it, instead of libyaml's complaint. */
static void test_toml_file(void **state)
{
	static const char toml[] =
		"# influxdb-relay\n"
		"\n"
		"[[http]]\n"
		"name = \"example-http\"\n"
		"bind-addr = \"127.0.0.1:9096\"\n"
		"output = [\n"
		"    { name=\"local1\", location = \"http://127.0.0.1:8086/write\" },\n"
		"    { name=\"local2\", location = \"http://127.0.0.1:7086/write\" },\n"
		"]\n"
		"[[udp]]\n"
		"name = \"example-udp\"\n"
		"bind-addr = \"127.0.0.1:9096\"\n"
		"read-buffer = 0 # default\n"
		"output = [\n"
		"    { name=\"local1\", location=\"127.0.0.1:8089\", mtu=512 },\n"
		"]\n";
	static const char *const also[] = {
		"[http]\nname = \"x\"\n",
		"# comment\nbind-addr = \"127.0.0.1:9096\"\n",
	};
	struct relay_config cfg;
	char err[512];
	(void)state;

	assert_int_equal(load(toml, &cfg, err, sizeof(err)), -1);
	assert_string_equal(err, "t.yaml looks like an influxdb-relay configuration (TOML); relayd reads YAML. "
	                    "Convert it with: relayctl migrate t.yaml > relayd.yaml (see docs/operations.md, "
	                    "\"Moving from influxdb-relay\")");
	for (size_t i = 0; i < RELAY_ARRAY_SIZE(also); i++) {
		assert_int_equal(load(also[i], &cfg, err, sizeof(err)), -1);
		assert_non_null(strstr(err, "looks like an influxdb-relay configuration (TOML)"));
	}
	/* YAML that fails for its own reasons keeps its own message. */
	assert_int_equal(load("data_dir: [x\n", &cfg, err, sizeof(err)), -1);
	assert_null(strstr(err, "TOML"));
	assert_int_equal(load("- a\n", &cfg, err, sizeof(err)), -1);
	assert_null(strstr(err, "TOML"));
}

/* max_size and max_age are kept as written, inherited ones too, for the
 * messages of a refused write. */
static void test_limit_texts(void **state)
{
	struct relay_config cfg;
	(void)state;

	load_ok(MINIMAL, &cfg);
	assert_string_equal(cfg.queue_max_size_text, "1GiB");
	assert_string_equal(cfg.backends[0].max_size_text, "1GiB");
	assert_string_equal(cfg.backends[0].max_age_text, "0");
	config_release(&cfg);

	load_ok(DD "backends:\n  - {name: a, url: 'http://h'}\n"
	        "  - {name: b, url: 'http://h', max_size: 512MiB, max_age: 90m}\n"
	        "queue: {max_size: 2GB, max_age: 2h}\n", &cfg);
	assert_int_equal(cfg.backends[0].max_bytes, 2000000000ULL);
	assert_string_equal(cfg.backends[0].max_size_text, "2GB");
	assert_string_equal(cfg.backends[0].max_age_text, "2h");
	assert_string_equal(cfg.backends[1].max_size_text, "512MiB");
	assert_string_equal(cfg.backends[1].max_age_text, "90m");
	config_release(&cfg);
}

static void test_files(void **state)
{
	char dir[] = "/tmp/test_config.XXXXXX", path[256], err[512];
	struct relay_config cfg;
	(void)state;

	assert_non_null(mkdtemp(dir));

	/* A missing file. */
	snprintf(path, sizeof(path), "%s/missing.yaml", dir);
	memset(&cfg, 0xa5, sizeof(cfg));
	assert_int_equal(config_load(path, &cfg, err, sizeof(err)), -1);
	assert_true(strncmp(err, path, strlen(path)) == 0);
	assert_string_equal(err + strlen(path), ": cannot read: No such file or directory");
	assert_true(is_zero(&cfg, sizeof(cfg)));

	/* A directory. */
	assert_int_equal(config_load(dir, &cfg, err, sizeof(err)), -1);
	assert_true(strncmp(err, dir, strlen(dir)) == 0);
	assert_non_null(strstr(err, ": cannot read: "));

	/* A good file; errors name the path given. */
	snprintf(path, sizeof(path), "%s/relayd.yaml", dir);
	write_file(path, MINIMAL, strlen(MINIMAL));
	assert_int_equal(config_load(path, &cfg, err, sizeof(err)), 0);
	assert_string_equal(cfg.path, path);
	assert_string_equal(cfg.backends[0].name, "a");
	config_release(&cfg);
	/* Loading again after a release works. */
	assert_int_equal(config_load(path, &cfg, err, sizeof(err)), 0);
	config_release(&cfg);
	config_release(&cfg);

	write_file(path, DD "foo: 1\n", strlen(DD "foo: 1\n"));
	assert_int_equal(config_load(path, &cfg, err, sizeof(err)), -1);
	assert_true(strncmp(err, path, strlen(path)) == 0);
	assert_string_equal(err + strlen(path), ":2:1: unknown key 'foo'");
	assert_int_equal(unlink(path), 0);

	/* Something far too large to be a configuration. */
	size_t big = 2 * 1024 * 1024;
	char *junk = malloc(big);
	assert_non_null(junk);
	memset(junk, '#', big);
	snprintf(path, sizeof(path), "%s/big.yaml", dir);
	write_file(path, junk, big);
	free(junk);
	assert_int_equal(config_load(path, &cfg, err, sizeof(err)), -1);
	assert_non_null(strstr(err, ": cannot read: larger than 1MiB"));
	assert_int_equal(unlink(path), 0);

	assert_int_equal(rmdir(dir), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_every_key),
		cmocka_unit_test(test_udp_auth_api),
		cmocka_unit_test(test_inherit_any_order),
		cmocka_unit_test(test_empty_sections_and_forms),
		cmocka_unit_test(test_max_backends),
		cmocka_unit_test(test_url_forms),
		cmocka_unit_test(test_bad_configs),
		cmocka_unit_test(test_query_section),
		cmocka_unit_test(test_deep_nesting),
		cmocka_unit_test(test_error_buffer),
		cmocka_unit_test(test_map_size),
		cmocka_unit_test(test_map_size_under_limit),
		cmocka_unit_test(test_door_budget_and_strings),
		cmocka_unit_test(test_secrets_exposed),
		cmocka_unit_test(test_example_file),
		cmocka_unit_test(test_user),
		cmocka_unit_test(test_backend_equal),
		cmocka_unit_test(test_rate_keys),
		cmocka_unit_test(test_files),
		cmocka_unit_test(test_relative_paths),
		cmocka_unit_test(test_toml_file),
		cmocka_unit_test(test_limit_texts),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
