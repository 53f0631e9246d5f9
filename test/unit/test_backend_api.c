/*
 * test_backend_api: a queued batch as a request to v1 and v2 backends:
 * targets, credentials (the backend's own replace the writer's; 1.8's
 * "Token u:p" to v1 as Basic; user/password to v2 as a token), precision
 * translation and timestamp scaling for minutes and hours; and what no
 * request can carry (control bytes in a header value, an unknown
 * precision code) refused with the error the worker acts on; a queued
 * statement as a /query form and what the answer to it means (a table).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "relay/delivery/backend_api.h"
#include "relay/base/config.h"
#include "relay/base/lineproto.h"

static void load(const char *backend_yaml, struct relay_config *cfg)
{
	char text[1024], err[512];
	int n = snprintf(text, sizeof(text), "data_dir: /x\nbackends:\n  - name: b\n%s", backend_yaml);
	if (config_load_buffer("t.yaml", text, (size_t)n, cfg, err, sizeof(err)) != 0)
		fail_msg("config: %s", err);
}

struct req {
	int rc;
	char target[512];
	char headers[512];
	char err[200];
};

static void request(const struct relay_backend_config *bc, const struct wal_batch *b, struct req *r)
{
	struct rbuf t = RBUF_INIT, h = RBUF_INIT;
	r->err[0] = '\0';
	r->rc = backend_api_request(bc, b, &t, &h, r->err, sizeof(r->err));
	snprintf(r->target, sizeof(r->target), "%s", rbuf_cstr(&t));
	snprintf(r->headers, sizeof(r->headers), "%s", h.len ? rbuf_cstr(&h) : "");
	rbuf_release(&t);
	rbuf_release(&h);
	if (r->rc == 0)
		assert_string_equal(r->err, "");
}

static struct wal_batch batch(const char *db, const char *rp, int prec, const char *user,
                              const char *password, const char *token, const char *org)
{
	struct wal_batch b;
	memset(&b, 0, sizeof(b));
	b.db = db;
	b.rp = rp;
	b.precision = (uint8_t)prec;
	b.user = user;
	b.password = password;
	b.token = token;
	b.org = org;
	return b;
}

static void test_v1_targets_and_credentials(void **state)
{
	struct relay_config cfg;
	struct req r;
	(void)state;

	load("    url: http://h:8086/pre/\n", &cfg);
	const struct relay_backend_config *bc = &cfg.backends[0];
	struct wal_batch b = batch("my db", "", LP_PRECISION_NS, "", "", "", "");
	request(bc, &b, &r);
	assert_string_equal(r.target, "/pre/write?db=my%20db&precision=ns");
	assert_string_equal(r.headers, "");

	b = batch("d", "r/1", LP_PRECISION_H, "u", "p:w", "", "org");
	request(bc, &b, &r);
	assert_string_equal(r.target, "/pre/write?db=d&rp=r%2F1&precision=h");
	/* base64("u:p:w") */
	assert_string_equal(r.headers, "Authorization: Basic dTpwOnc=\r\n");

	b = batch("d", "", LP_PRECISION_US, "", "", "abc", "");
	request(bc, &b, &r);
	assert_string_equal(r.target, "/pre/write?db=d&precision=u");
	assert_string_equal(r.headers, "Authorization: Token abc\r\n");


	/* 1.8's "Token user:password" reaches a v1 server as Basic. */
	b = batch("d", "", LP_PRECISION_NS, "", "", "u:p", "");
	request(bc, &b, &r);
	assert_string_equal(r.headers, "Authorization: Basic dTpw\r\n");
	config_release(&cfg);

	/* The backend's own credentials replace the writer's. */
	load("    url: http://h\n    username: svc\n    password: pw\n", &cfg);
	b = batch("d", "", LP_PRECISION_NS, "u", "p", "", "");
	request(&cfg.backends[0], &b, &r);
	assert_string_equal(r.headers, "Authorization: Basic c3ZjOnB3\r\n");
	config_release(&cfg);
	load("    url: http://h\n    token: 'svc:pw'\n", &cfg);
	b = batch("d", "", LP_PRECISION_NS, "u", "p", "t", "");
	request(&cfg.backends[0], &b, &r);
	assert_string_equal(r.headers, "Authorization: Token svc:pw\r\n");
	config_release(&cfg);
}

static void test_v2_targets_and_credentials(void **state)
{
	struct relay_config cfg;
	struct req r;
	int sent;
	(void)state;

	load("    url: http://h:8087\n    type: v2\n", &cfg);
	const struct relay_backend_config *bc = &cfg.backends[0];
	struct wal_batch b = batch("db", "rp", LP_PRECISION_US, "", "", "tok", "acme inc");
	request(bc, &b, &r);
	assert_string_equal(r.target, "/api/v2/write?bucket=db%2Frp&org=acme%20inc&precision=us");
	assert_string_equal(r.headers, "Authorization: Token tok\r\n");

	/* no rp: the bucket is the database; no org: none sent; a v1
	 * writer's user/password as 1.8's token. */
	b = batch("db", "", LP_PRECISION_MS, "u", "p", "", "");
	request(bc, &b, &r);
	assert_string_equal(r.target, "/api/v2/write?bucket=db&precision=ms");
	assert_string_equal(r.headers, "Authorization: Token u:p\r\n");

	/* minutes and hours are rescaled to seconds before the request is
	 * built (replay.c); one that could not be is labelled as it is, so
	 * that the v2 server refuses it rather than misreads it */
	b = batch("db", "", LP_PRECISION_M, "", "", "", "");
	request(bc, &b, &r);
	assert_string_equal(r.target, "/api/v2/write?bucket=db&precision=m");
	assert_int_equal(backend_api_rescale(bc, LP_PRECISION_M, &sent), 60);
	assert_int_equal(sent, LP_PRECISION_S);
	assert_int_equal(backend_api_rescale(bc, LP_PRECISION_H, &sent), 3600);
	assert_int_equal(backend_api_rescale(bc, LP_PRECISION_NS, &sent), 1);
	assert_int_equal(sent, LP_PRECISION_NS);
	config_release(&cfg);

	/* the backend's org and token win */
	load("    url: http://h\n    type: v2\n    org: mine\n    token: T\n", &cfg);
	b = batch("db", "", LP_PRECISION_S, "", "", "writer", "theirs");
	request(&cfg.backends[0], &b, &r);
	assert_string_equal(r.target, "/api/v2/write?bucket=db&org=mine&precision=s");
	assert_string_equal(r.headers, "Authorization: Token T\r\n");
	config_release(&cfg);

	/* v1 backends never rescale */
	load("    url: http://h\n", &cfg);
	assert_int_equal(backend_api_rescale(&cfg.backends[0], LP_PRECISION_H, &sent), 1);
	assert_int_equal(sent, LP_PRECISION_H);
	config_release(&cfg);
}

/* Nothing a batch holds gets into a request raw. */
static void test_refused_values(void **state)
{
	struct relay_config cfg;
	struct req r;
	(void)state;

	load("    url: http://h\n", &cfg);
	const struct relay_backend_config *v1 = &cfg.backends[0];
	/* A token goes into the header as it is: a CR LF in it would end the
	 * header and start another (or a request). Refused, never sent
	 * without it (a 401 would hold the queue for good, a backend without
	 * auth would take a write its writer meant to authenticate). */
	struct wal_batch b = batch("d", "", LP_PRECISION_NS, "", "", "a\r\n\r\nPOST /write?db=x HTTP/1.1", "");
	request(v1, &b, &r);
	assert_int_equal(r.rc, BACKEND_API_EBATCH);
	assert_non_null(strstr(r.err, "the writer's token holds a control byte"));
	assert_null(strstr(r.err, "POST")); /* the secret is never in the reason */
	static const char *const evil[] = { "a\rb", "a\nb", "a\tb", "\x7f", "a\x01", "tok\r\n\r\nPOST /x HTTP/1.1" };
	for (size_t i = 0; i < sizeof(evil) / sizeof(evil[0]); i++) {
		b = batch("d", "", LP_PRECISION_NS, "", "", evil[i], "");
		request(v1, &b, &r);
		assert_int_equal(r.rc, BACKEND_API_EBATCH);
	}
	/* High bytes are obs-text, allowed in a header value. */
	b = batch("d", "", LP_PRECISION_NS, "", "", "t\xc3\xa9", "");
	request(v1, &b, &r);
	assert_int_equal(r.rc, 0);
	assert_string_equal(r.headers, "Authorization: Token t\xc3\xa9\r\n");
	/* Basic is base64: whatever the user and password hold, one clean
	 * line (the door refuses control bytes; these come another way). */
	b = batch("d", "", LP_PRECISION_NS, "u\r\nX: 1", "p\n", "", "");
	request(v1, &b, &r);
	assert_int_equal(r.rc, 0);
	assert_string_equal(r.headers, "Authorization: Basic dQ0KWDogMTpwCg==\r\n");
	/* ... and as 1.8's "Token u:p" to v1, Basic too. */
	b = batch("d", "", LP_PRECISION_NS, "", "", "u\r\n:p", "");
	request(v1, &b, &r);
	assert_int_equal(r.rc, 0);
	assert_string_equal(r.headers, "Authorization: Basic dQ0KOnA=\r\n");
	/* Query values are percent-encoded, whatever they hold. */
	b = batch("a b\r\nHost: x&rp=y#z%", "r/\x01?", LP_PRECISION_MS, "", "", "", "");
	request(v1, &b, &r);
	assert_int_equal(r.rc, 0);
	assert_string_equal(r.target, "/write?db=a%20b%0D%0AHost%3A%20x%26rp%3Dy%23z%25&rp=r%2F%01%3F&precision=ms");
	/* A precision code relayd does not know: never guessed, never sent
	 * (lp_precision_name would stop relayd). */
	static const int precs[] = { LP_PRECISION_H + 1, 7, 200, 255 };
	for (size_t i = 0; i < sizeof(precs) / sizeof(precs[0]); i++) {
		b = batch("d", "", precs[i], "", "", "", "");
		request(v1, &b, &r);
		assert_int_equal(r.rc, BACKEND_API_EBATCH);
		assert_non_null(strstr(r.err, "precision code"));
	}
	/* CREATE DATABASE: the name is escaped and encoded; the same
	 * credentials rules. */
	struct rbuf t = RBUF_INIT, h = RBUF_INIT;
	char err[200] = "";
	b = batch("x\" WITH ALL\\", "", LP_PRECISION_NS, "", "", "", "");
	assert_int_equal(backend_api_create_database(v1, &b, &t, &h, err, sizeof(err)), 0);
	assert_string_equal(rbuf_cstr(&t), "/query?q=CREATE%20DATABASE%20%22x%5C%22%20WITH%20ALL%5C%5C%22");
	rbuf_reset(&t);
	b = batch("d", "", LP_PRECISION_NS, "", "", "a\nb", "");
	assert_int_equal(backend_api_create_database(v1, &b, &t, &h, err, sizeof(err)), BACKEND_API_EBATCH);
	rbuf_release(&t);
	rbuf_release(&h);
	config_release(&cfg);

	/* v2: a writer's user and password go in as a token. */
	load("    url: http://h\n    type: v2\n", &cfg);
	b = batch("d", "", LP_PRECISION_NS, "u", "p\r\nX: 1", "", "org\r\nX: 2");
	request(&cfg.backends[0], &b, &r);
	assert_int_equal(r.rc, BACKEND_API_EBATCH);
	assert_non_null(strstr(r.err, "the writer's user or password"));
	b = batch("d", "", LP_PRECISION_NS, "", "", "a\r\nX-Evil: 1", "");
	request(&cfg.backends[0], &b, &r);
	assert_int_equal(r.rc, BACKEND_API_EBATCH);
	assert_null(strstr(r.err, "X-Evil"));
	b = batch("d", "", 9, "", "", "", "");
	request(&cfg.backends[0], &b, &r);
	assert_int_equal(r.rc, BACKEND_API_EBATCH);
	b = batch("d", "r", LP_PRECISION_S, "", "", "", "o r&g\n");
	request(&cfg.backends[0], &b, &r);
	assert_int_equal(r.rc, 0);
	assert_string_equal(r.target, "/api/v2/write?bucket=d%2Fr&org=o%20r%26g%0A&precision=s");
	config_release(&cfg);

	/* The backend's own token: the configuration refuses control bytes,
	 * but should one get there another way it is the operator's to fix
	 * (the worker holds), whatever the batch holds. */
	load("    url: http://h\n    token: svc\n", &cfg);
	free(cfg.backends[0].token);
	cfg.backends[0].token = xstrdup("svc\r\nX-Evil: 1");
	b = batch("d", "", LP_PRECISION_NS, "", "", "", "");
	request(&cfg.backends[0], &b, &r);
	assert_int_equal(r.rc, BACKEND_API_ECONFIG);
	assert_non_null(strstr(r.err, "the backend's token"));
	assert_null(strstr(r.err, "svc"));
	/* errlen 0: the code alone */
	struct rbuf t2 = RBUF_INIT, h2 = RBUF_INIT;
	assert_int_equal(backend_api_request(&cfg.backends[0], &b, &t2, &h2, NULL, 0), BACKEND_API_ECONFIG);
	rbuf_release(&t2);
	rbuf_release(&h2);
	config_release(&cfg);
}

static void test_scale_timestamps(void **state)
{
	struct rbuf out = RBUF_INIT;
	(void)state;

	static const char body[] = "cpu,host=a v=1 10\n"
	                           "s s=\"a b\nc 5\" 7\n"      /* a string with a space and a newline */
	                           "m\\ x,t=\\ y v=2i,w=\"z\" -3\n";
	assert_int_equal(backend_api_scale_timestamps(body, sizeof(body) - 1, 60, &out), 0);
	assert_string_equal(rbuf_cstr(&out), "cpu,host=a v=1 600\n"
	                                      "s s=\"a b\nc 5\" 420\n"
	                                      "m\\ x,t=\\ y v=2i,w=\"z\" -180\n");
	rbuf_reset(&out);
	/* a tab before the timestamp (the door keeps blanks as they came) */
	static const char tab[] = "m v=1 \t100\n";
	assert_int_equal(backend_api_scale_timestamps(tab, sizeof(tab) - 1, 60, &out), 0);
	assert_string_equal(rbuf_cstr(&out), "m v=1 \t6000\n");
	rbuf_reset(&out);
	static const char big[] = "m v=1 9223372036854775\n";
	assert_int_equal(backend_api_scale_timestamps(big, sizeof(big) - 1, 3600, &out), -1);
	rbuf_release(&out);
}

static struct wal_batch statement(const char *text, const char *db, const char *rp)
{
	struct wal_batch b = batch(db, rp, LP_PRECISION_NS, "", "", "", "");
	b.kind = WAL_KIND_STATEMENT;
	b.body = text;
	b.body_len = strlen(text);
	return b;
}

/* Issue 13: a statement goes to /query as a form, with the credential
 * rules of a write; a v2 backend through its v1-compatible /query. */
static void test_statement_request(void **state)
{
	struct relay_config cfg;
	struct rbuf t = RBUF_INIT, h = RBUF_INIT, f = RBUF_INIT;
	char err[200];
	(void)state;

	load("    url: http://h:8086/pre/\n", &cfg);
	struct wal_batch b = statement("CREATE DATABASE \"my db\"\n", "", "");
	b.user = "u";
	b.password = "p";
	assert_int_equal(backend_api_statement(&cfg.backends[0], &b, &t, &h, &f, err, sizeof(err)), 0);
	assert_string_equal(rbuf_cstr(&t), "/pre/query");
	assert_string_equal(rbuf_cstr(&f), "q=CREATE%20DATABASE%20%22my%20db%22");
	assert_string_equal(rbuf_cstr(&h), "Authorization: Basic dTpw\r\n");
	config_release(&cfg);

	/* db and rp when given; the backend's token for a v2 backend */
	load("    url: http://h\n    type: v2\n    token: T\n", &cfg);
	rbuf_reset(&t);
	rbuf_reset(&h);
	rbuf_reset(&f);
	b = statement("CREATE RETENTION POLICY r ON d DURATION 1h REPLICATION 1\n", "d", "r&x");
	assert_int_equal(backend_api_statement(&cfg.backends[0], &b, &t, &h, &f, err, sizeof(err)), 0);
	assert_string_equal(rbuf_cstr(&t), "/query");
	assert_string_equal(rbuf_cstr(&f), "q=CREATE%20RETENTION%20POLICY%20r%20ON%20d%20DURATION%201h%20"
					   "REPLICATION%201&db=d&rp=r%26x");
	assert_string_equal(rbuf_cstr(&h), "Authorization: Token T\r\n");
	/* an empty statement is not sent */
	b = statement("\n", "", "");
	assert_int_equal(backend_api_statement(&cfg.backends[0], &b, &t, &h, &f, err, sizeof(err)),
			 BACKEND_API_EBATCH);
	assert_non_null(strstr(err, "empty"));
	config_release(&cfg);
	rbuf_release(&t);
	rbuf_release(&h);
	rbuf_release(&f);
}

/* Issue 13: the answer to a statement, row by row. */
static void test_statement_outcome(void **state)
{
	static const struct {
		int status;
		const char *body;
		enum outcome want;
		const char *err;
	} rows[] = {
		{ 200, "{\"results\":[{\"statement_id\":0}]}\n", OUTCOME_DELIVERED, "" },
		{ 204, "{}", OUTCOME_DELIVERED, "" },
		{ 204, "", OUTCOME_DELIVERED, "" },
		{ 200, " \n", OUTCOME_DELIVERED, "" },
		{ 200, "{\"results\":[{\"statement_id\":0},{\"statement_id\":1,\"error\":\"database not found: x\"}]}",
		  OUTCOME_NO_DATABASE, "database not found: x" },
		{ 200, "{\"results\":[{\"statement_id\":0,\"error\":\"retention policy already exists\"}]}", OUTCOME_DEAD,
		  "retention policy already exists" },
		{ 200, "{\"error\":\"error parsing query: found EOF\"}", OUTCOME_DEAD, "error parsing query: found EOF" },
		/* "error" only as a value, never as a key: delivered */
		{ 200, "{\"results\":[{\"statement_id\":0,\"series\":[{\"name\":\"error\"}]}]}", OUTCOME_DELIVERED, "" },
		/* not JSON (a proxy's page, a cut answer): whether it ran is unknown */
		{ 200, "<html>ok</html>", OUTCOME_RETRY, "the answer to the statement is not a JSON object" },
		{ 200, "{\"results\":[", OUTCOME_RETRY, "the answer to the statement is not a JSON object" },
		{ 200, "[1]", OUTCOME_RETRY, "the answer to the statement is not a JSON object" },
		{ 400, "{\"error\":\"error parsing query\"}", OUTCOME_DEAD, "" },
		{ 401, "{\"error\":\"authorization failed\"}", OUTCOME_DEAD, "" },
		{ 403, "", OUTCOME_DEAD, "" },
		{ 404, "404 page not found", OUTCOME_DEAD, "" },
		{ 413, "", OUTCOME_DEAD, "" },
		{ 408, "", OUTCOME_RETRY, "" },
		{ 429, "", OUTCOME_RETRY, "" },
		{ 500, "{\"error\":\"timeout\"}", OUTCOME_RETRY, "" },
		{ 503, "", OUTCOME_RETRY, "" },
		{ OUTCOME_STATUS_CONNECT_FAILED, NULL, OUTCOME_RETRY, "" },
		{ OUTCOME_STATUS_TIMEOUT, NULL, OUTCOME_RETRY, "" },
		{ OUTCOME_STATUS_RESET, NULL, OUTCOME_RETRY, "" },
		{ OUTCOME_STATUS_UNSENDABLE, NULL, OUTCOME_DEAD, "" },
	};
	(void)state;
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		char err[200];
		const char *body = rows[i].body;
		enum outcome o = backend_api_statement_outcome(rows[i].status, body, body ? strlen(body) : 0, err,
							       sizeof(err));
		if (o != rows[i].want || strncmp(err, rows[i].err, strlen(rows[i].err)) != 0 || (!*rows[i].err && *err))
			fail_msg("row %zu (%d %s): %s '%s', want %s '%s'", i, rows[i].status, body ? body : "(none)",
				 outcome_name(o), err, outcome_name(rows[i].want), rows[i].err);
	}
}

/* Issue 13: which statement creates which database. */
static void test_created_database(void **state)
{
	static const struct {
		const char *text;
		const char *db; /* NULL: not a CREATE DATABASE */
	} rows[] = {
		{ "CREATE DATABASE x\n", "x" },
		{ "  create   database   telegraf_2 WITH DURATION 1d\n", "telegraf_2" },
		{ "CREATE DATABASE \"my \\\"db\\\"\"\n", "my \"db\"" },
		{ "CREATE DATABASE\"q\"", "q" },
		{ "CREATE RETENTION POLICY r ON x DURATION 1h REPLICATION 1\n", NULL },
		{ "CREATE DATABASES x\n", NULL },
		{ "CREATE DATABASE \"open\n", NULL },
		{ "CREATE DATABASE\n", NULL },
		{ "DROP DATABASE x\n", NULL },
	};
	(void)state;
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		char out[64];
		size_t at = 0;
		int got = backend_api_created_database(rows[i].text, strlen(rows[i].text), &at, out, sizeof(out));
		if (got != (rows[i].db != NULL) || (got && strcmp(out, rows[i].db) != 0))
			fail_msg("row %zu '%s': %d '%s'", i, rows[i].text, got, got ? out : "");
	}
	char small[3];
	size_t at = 0;
	assert_int_equal(backend_api_created_database("CREATE DATABASE abc", 19, &at, small, sizeof(small)), 0);
}

/* Every database a text of several statements creates, in order: the
 * later ones too (a wake of each), semicolons inside quotes not splitting
 * it, a name that does not fit skipped. */
static void test_created_databases(void **state)
{
	static const char text[] = "CREATE DATABASE a; DROP DATABASE z;create database \"b;c\" WITH DURATION 1d ;"
	                           "CREATE DATABASE waytoolongforthebuffer; CREATE RETENTION POLICY r ON q DURATION 1d "
	                           "REPLICATION 1;  CREATE DATABASE d\n";
	const char *want[] = { "a", "b;c", "d" };
	char out[16];
	size_t at = 0;
	(void)state;
	for (size_t i = 0; i < 3; i++) {
		assert_int_equal(backend_api_created_database(text, strlen(text), &at, out, sizeof(out)), 1);
		assert_string_equal(out, want[i]);
	}
	assert_int_equal(backend_api_created_database(text, strlen(text), &at, out, sizeof(out)), 0);
	assert_int_equal(at, strlen(text));
	/* One statement named in quotes with a semicolon: not split. */
	at = 0;
	assert_int_equal(backend_api_created_database("DROP DATABASE \"x;CREATE DATABASE y\"", 35, &at, out,
	                                              sizeof(out)), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_v1_targets_and_credentials),
		cmocka_unit_test(test_v2_targets_and_credentials),
		cmocka_unit_test(test_refused_values),
		cmocka_unit_test(test_scale_timestamps),
		cmocka_unit_test(test_statement_request),
		cmocka_unit_test(test_statement_outcome),
		cmocka_unit_test(test_created_database),
		cmocka_unit_test(test_created_databases),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
