/* test_log: log lines as text and as JSON (log_format), read back from a
 * log file: every JSON line parses, has its fields, and carries any bytes
 * of a message escaped; lines from several threads stay whole. Which
 * outputs of a log_output list are available (journal, syslog, a file),
 * the first one taken, and the journal's "<N>" lines. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/stat.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "relay/base/json.h"
#include "relay/base/log.h"
#include "relay/base/util.h"

static char path[64];

static int setup(void **state)
{
	(void)state;
	char err[256];
	snprintf(path, sizeof(path), "/tmp/test_log.%ld.XXXXXX", (long)getpid());
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(relay_log_open(path, err, sizeof(err)), 0);
	relay_log_set_level(RELAY_LOG_DEBUG);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	relay_log_close();
	relay_log_set_format(RELAY_LOG_FORMAT_TEXT);
	unlink(path);
	return 0;
}

/* The file's contents, emptied for the next test. */
static char *take(size_t *len)
{
	FILE *f = fopen(path, "r");
	assert_non_null(f);
	struct rbuf b = RBUF_INIT;
	char chunk[4096];
	size_t n;
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		rbuf_append(&b, chunk, n);
	fclose(f);
	assert_int_equal(truncate(path, 0), 0);
	*len = b.len;
	char *s = xstrndup(b.len ? b.data : "", b.len);
	rbuf_release(&b);
	return s;
}

/* Parse the one line in the file as a JSON object with time, level, pid
 * and msg, and return it. */
static json_t *one_json_line(void)
{
	size_t len;
	char *s = take(&len), err[200];
	assert_true(len > 0);
	assert_int_equal(s[len - 1], '\n');
	if (memchr(s, '\n', len) != s + len - 1)
		fail_msg("more than one line: %s", s);
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)s[i] >= 0x80 || ((unsigned char)s[i] < 0x20 && s[i] != '\n') || s[i] == 0x7f)
			fail_msg("byte 0x%02x at %zu in %s", (unsigned char)s[i], i, s);
	json_t *o = rjson_parse(s, len, err, sizeof(err));
	if (!o)
		fail_msg("not JSON (%s): %s", err, s);
	assert_true(json_is_object(o));
	const char *t = rjson_get_str(o, "time", "");
	/* 2026-12-07T08:31:11.123Z */
	assert_int_equal(strlen(t), 24);
	assert_true(t[4] == '-' && t[10] == 'T' && t[19] == '.' && t[23] == 'Z');
	assert_int_equal(rjson_get_int(o, "pid", -1), getpid());
	assert_non_null(rjson_get_str(o, "msg", NULL));
	/* The keys in the order documented in log.h. */
	const char *keys[] = { "time", "level", "pid", "msg" };
	size_t k = 0;
	const char *key;
	json_t *v;
	json_object_foreach(o, key, v) {
		assert_true(k < 4);
		assert_string_equal(key, keys[k++]);
	}
	assert_int_equal(k, 4);
	free(s);
	return o;
}

static void test_text(void **state)
{
	(void)state;
	size_t len;
	relay_log(RELAY_LOG_WARN, "backend '%s' down: %s", "b1", "a\nb\x1b[2J\x7f");
	char *s = take(&len);
	/* TIME level message, controls made '?'. */
	assert_int_equal(len, 24 + strlen(" warn backend 'b1' down: a?b?[2J?\n"));
	assert_string_equal(s + 24, " warn backend 'b1' down: a?b?[2J?\n");
	free(s);
}

static void test_json_fields(void **state)
{
	(void)state;
	relay_log_set_format(RELAY_LOG_FORMAT_JSON);
	relay_log(RELAY_LOG_WARN, "backend '%s' down: %d", "b1", 42);
	json_t *o = one_json_line();
	assert_string_equal(rjson_get_str(o, "level", ""), "warn");
	assert_string_equal(rjson_get_str(o, "msg", ""), "backend 'b1' down: 42");
	json_decref(o);

	static const struct {
		enum relay_log_level lvl;
		const char *name;
	} lv[] = { { RELAY_LOG_DEBUG, "debug" }, { RELAY_LOG_INFO, "info" }, { RELAY_LOG_NOTICE, "notice" },
		   { RELAY_LOG_WARN, "warn" },   { RELAY_LOG_ERROR, "error" } };
	for (size_t i = 0; i < RELAY_ARRAY_SIZE(lv); i++) {
		relay_log(lv[i].lvl, "x");
		o = one_json_line();
		assert_string_equal(rjson_get_str(o, "level", ""), lv[i].name);
		json_decref(o);
	}
	/* Back to text from the next line on. */
	relay_log_set_format(RELAY_LOG_FORMAT_TEXT);
	relay_log(RELAY_LOG_INFO, "plain");
	size_t len;
	char *s = take(&len);
	assert_string_equal(s + 24, " info plain\n");
	free(s);
}

static void test_json_escapes(void **state)
{
	(void)state;
	static const struct {
		const char *in, *msg;
	} t[] = {
		/* Quotes, backslashes, newlines, other controls: the same
		 * bytes back after parsing. */
		{ "say \"hi\" \\ now", "say \"hi\" \\ now" },
		{ "two\nlines\r\n", "two\nlines\r\n" },
		{ "esc \x1b[2J bell \x07 tab \t del \x7f", "esc \x1b[2J bell \x07 tab \t del \x7f" },
		/* UTF-8 kept (escaped as \u in the line), a C1 control too. */
		{ "\xc2\xb5s \xe2\x80\xae \xc2\x9b", "\xc2\xb5s \xe2\x80\xae \xc2\x9b" },
		/* Bytes that are not UTF-8 become U+FFFD. */
		{ "bad \xff\xfe end", "bad \xef\xbf\xbd\xef\xbf\xbd end" },
		{ "cut \xe2\x80", "cut \xef\xbf\xbd\xef\xbf\xbd" },
		{ "overlong \xc0\xaf", "overlong \xef\xbf\xbd\xef\xbf\xbd" },
	};
	relay_log_set_format(RELAY_LOG_FORMAT_JSON);
	for (size_t i = 0; i < RELAY_ARRAY_SIZE(t); i++) {
		relay_log(RELAY_LOG_INFO, "%s", t[i].in);
		json_t *o = one_json_line();
		const char *m = rjson_get_str(o, "msg", "");
		if (strcmp(m, t[i].msg) != 0)
			fail_msg("case %zu: msg '%s'", i, m);
		json_decref(o);
	}
}

static void test_json_limited(void **state)
{
	(void)state;
	struct relay_ratelimit r = { .interval_ns = UINT64_MAX / 2 };
	relay_log_set_format(RELAY_LOG_FORMAT_JSON);
	relay_log_limited(&r, RELAY_LOG_ERROR, "disk %s", "full");
	json_t *o = one_json_line();
	assert_string_equal(rjson_get_str(o, "msg", ""), "disk full");
	json_decref(o);
	relay_log_limited(&r, RELAY_LOG_ERROR, "disk %s", "full");
	relay_log_limited(&r, RELAY_LOG_ERROR, "disk %s", "full");
	size_t len;
	char *s = take(&len);
	assert_int_equal(len, 0);
	free(s);
	r.interval_ns = 1;
	relay_log_limited(&r, RELAY_LOG_ERROR, "disk %s", "full");
	o = one_json_line();
	assert_string_equal(rjson_get_str(o, "msg", ""), "disk full (2 more suppressed)");
	json_decref(o);

	/* A message too long for a line is cut, but the count stays. */
	char big[5000];
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	r.interval_ns = UINT64_MAX / 2;
	relay_log_limited(&r, RELAY_LOG_ERROR, "%s", big);
	r.interval_ns = 1;
	relay_log_limited(&r, RELAY_LOG_ERROR, "%s", big);
	o = one_json_line();
	const char *m = rjson_get_str(o, "msg", "");
	size_t ml = strlen(m);
	assert_true(ml > 1000 && ml < 2048);
	assert_string_equal(m + ml - strlen(" (1 more suppressed)"), " (1 more suppressed)");
	assert_int_equal(m[0], 'x');
	json_decref(o);
}

static void *logger(void *arg)
{
	long id = (long)arg;
	for (int i = 0; i < 500; i++)
		relay_log(RELAY_LOG_INFO, "thread %ld line %d \"%s\"\n", id, i, "quoted");
	return NULL;
}

static void test_json_threads(void **state)
{
	(void)state;
	pthread_t th[4];
	relay_log_set_format(RELAY_LOG_FORMAT_JSON);
	for (long i = 0; i < 4; i++)
		assert_int_equal(pthread_create(&th[i], NULL, logger, (void *)i), 0);
	for (int i = 0; i < 4; i++)
		pthread_join(th[i], NULL);
	size_t len, lines = 0;
	char *s = take(&len), err[200];
	for (char *p = s, *nl; (nl = memchr(p, '\n', len - (size_t)(p - s))); p = nl + 1) {
		json_t *o = rjson_parse(p, (size_t)(nl - p), err, sizeof(err));
		if (!o)
			fail_msg("line %zu not JSON (%s)", lines, err);
		assert_non_null(strstr(rjson_get_str(o, "msg", ""), "\"quoted\"\n"));
		json_decref(o);
		lines++;
	}
	assert_int_equal(lines, 2000);
	free(s);
}

/* The journal is there when JOURNAL_STREAM names stderr itself; syslog
 * when /dev/log is a socket; a file when it can be written or created. */
static void test_output_check(void **state)
{
	char why[512], env[64], chosen[256], passed[1024], err[512];
	struct stat st;
	(void)state;

	assert_int_equal(relay_log_output_check("stderr", why, sizeof(why)), 1);
	unsetenv("JOURNAL_STREAM");
	assert_int_equal(relay_log_output_check("journal", why, sizeof(why)), 0);
	assert_non_null(strstr(why, "JOURNAL_STREAM is not set"));
	setenv("JOURNAL_STREAM", "bogus", 1);
	assert_int_equal(relay_log_output_check("journal", why, sizeof(why)), 0);
	assert_non_null(strstr(why, "is not DEV:INODE"));
	assert_int_equal(fstat(STDERR_FILENO, &st), 0);
	snprintf(env, sizeof(env), "%llu:%llu", (unsigned long long)st.st_dev, (unsigned long long)st.st_ino + 1);
	setenv("JOURNAL_STREAM", env, 1);
	assert_int_equal(relay_log_output_check("journal", why, sizeof(why)), 0);
	assert_non_null(strstr(why, "stderr is not the journal stream"));
	snprintf(env, sizeof(env), "%llu:%llu", (unsigned long long)st.st_dev, (unsigned long long)st.st_ino);
	setenv("JOURNAL_STREAM", env, 1);
	assert_int_equal(relay_log_output_check("journal", why, sizeof(why)), 1);
	unsetenv("JOURNAL_STREAM");

	int sock = stat("/dev/log", &st) == 0 && S_ISSOCK(st.st_mode);
	assert_int_equal(relay_log_output_check("syslog", why, sizeof(why)), sock);
	if (!sock)
		assert_non_null(strstr(why, "/dev/log"));

	assert_int_equal(relay_log_output_check(path, why, sizeof(why)), 1);
	assert_int_equal(relay_log_output_check("/nonexistent-dir/x.log", why, sizeof(why)), 0);
	assert_non_null(strstr(why, "cannot create '/nonexistent-dir/x.log'"));
	assert_int_equal(relay_log_output_check("/tmp", why, sizeof(why)), 0);
	assert_non_null(strstr(why, "is a directory"));

	/* The first available is opened; what was passed over is said. */
	assert_int_equal(relay_log_open_first("journal\n/nonexistent-dir/x.log\nstderr", chosen, sizeof(chosen),
	                                      passed, sizeof(passed), err, sizeof(err)), 0);
	assert_string_equal(chosen, "stderr");
	assert_non_null(strstr(passed, "journal: JOURNAL_STREAM is not set"));
	assert_non_null(strstr(passed, "; /nonexistent-dir/x.log: cannot open log file"));
	assert_int_equal(relay_log_open_first(path, chosen, sizeof(chosen), passed, sizeof(passed), err,
	                                      sizeof(err)), 0);
	assert_string_equal(chosen, path);
	assert_string_equal(passed, "");
	/* Nothing available: stderr, or an error when a file was asked for. */
	assert_int_equal(relay_log_open_first("journal", chosen, sizeof(chosen), passed, sizeof(passed), err,
	                                      sizeof(err)), 1);
	assert_string_equal(chosen, "stderr");
	assert_int_equal(relay_log_open_first("journal\n/nonexistent-dir/x.log", chosen, sizeof(chosen), passed,
	                                      sizeof(passed), err, sizeof(err)), -1);
	assert_non_null(strstr(err, "no log_output can be used: journal: "));
}

/* A reload's resolution: the output in force is kept without a reopen (a
 * file whose name is gone stays the one written to), an output before it
 * that is available now is taken, and nothing usable keeps the one in
 * force with the reasons. */
static void test_resolve_keeps_the_output_in_force(void **state)
{
	char chosen[256], passed[1024], err[1024], moved[80];
	struct stat st;
	(void)state;

	/* setup opened path: move it away; a reopen would create path anew */
	snprintf(moved, sizeof(moved), "%s.moved", path);
	assert_int_equal(rename(path, moved), 0);
	assert_int_equal(relay_log_resolve(path, path, chosen, sizeof(chosen), passed, sizeof(passed), err,
	                                   sizeof(err)), 0);
	assert_string_equal(chosen, path);
	assert_int_equal(stat(path, &st), -1);
	relay_log(RELAY_LOG_INFO, "still here");
	assert_int_equal(stat(moved, &st), 0);
	assert_true(st.st_size > 0);
	/* nothing usable, with a file or without: the output in force stays */
	assert_int_equal(relay_log_resolve("/nonexistent-dir/x.log", path, chosen, sizeof(chosen), passed,
	                                   sizeof(passed), err, sizeof(err)), -1);
	assert_string_equal(chosen, path);
	assert_non_null(strstr(err, "no log_output can be used: /nonexistent-dir/x.log: cannot open log file"));
	assert_int_equal(relay_log_resolve("journal", path, chosen, sizeof(chosen), passed, sizeof(passed), err,
	                                   sizeof(err)), -1);
	assert_string_equal(chosen, path);
	assert_int_equal(stat(path, &st), -1);
	/* an output before it: taken */
	assert_int_equal(relay_log_resolve("/nonexistent-dir/x.log\nstderr\n/tmp/unused", path, chosen,
	                                   sizeof(chosen), passed, sizeof(passed), err, sizeof(err)), 0);
	assert_string_equal(chosen, "stderr");
	assert_non_null(strstr(passed, "/nonexistent-dir/x.log: cannot open log file"));
	unlink(moved);
}

/* "journal": stderr gets "<N>message" (N the syslog priority), without our
 * time; with log_format json, "<N>" and the JSON object. */
static void test_journal_lines(void **state)
{
	char err[256];
	size_t len;
	(void)state;

	int saved = dup(STDERR_FILENO);
	int fd = open(path, O_WRONLY | O_APPEND);
	assert_true(saved >= 0 && fd >= 0);
	assert_int_equal(dup2(fd, STDERR_FILENO), STDERR_FILENO);
	close(fd);
	assert_int_equal(relay_log_open("journal", err, sizeof(err)), 0);
	relay_log(RELAY_LOG_INFO, "hello %d", 1);
	relay_log(RELAY_LOG_WARN, "careful");
	relay_log(RELAY_LOG_ERROR, "bad\nline");
	relay_log_set_format(RELAY_LOG_FORMAT_JSON);
	relay_log(RELAY_LOG_NOTICE, "as json");
	relay_log_set_format(RELAY_LOG_FORMAT_TEXT);
	relay_log_close();
	assert_int_equal(dup2(saved, STDERR_FILENO), STDERR_FILENO);
	close(saved);
	char *s = take(&len);
	char *json = strstr(s, "<5>{\"time\":\"");
	assert_non_null(json);
	assert_non_null(strstr(json, "\"level\":\"notice\""));
	assert_non_null(strstr(json, "\"msg\":\"as json\"}\n"));
	*json = '\0';
	assert_string_equal(s, "<6>hello 1\n<4>careful\n<3>bad?line\n");
	free(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_text, setup, teardown),
		cmocka_unit_test_setup_teardown(test_json_fields, setup, teardown),
		cmocka_unit_test_setup_teardown(test_json_escapes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_json_limited, setup, teardown),
		cmocka_unit_test_setup_teardown(test_json_threads, setup, teardown),
		cmocka_unit_test_setup_teardown(test_output_check, setup, teardown),
		cmocka_unit_test_setup_teardown(test_resolve_keeps_the_output_in_force, setup, teardown),
		cmocka_unit_test_setup_teardown(test_journal_lines, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
