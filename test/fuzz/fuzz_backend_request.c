/*
 * fuzz_backend_request: the values a queued batch holds, as a write (or a
 * CREATE DATABASE) to a backend: backend_api_request builds the target and
 * the Authorization header, http_client_build_head the head around them,
 * as the delivery worker does.
 *
 * One input: byte 0 picks one of the eight backends below and, with 0x80, the
 * CREATE DATABASE instead of the write; byte 1 is the stored precision
 * code (any byte: a damaged record may hold any); the rest is db, rp,
 * user, password, org and token, separated by NUL bytes (any other byte,
 * as a damaged or imported record could hold).
 *
 * Checks: no value can inject anything. A built head is exactly one
 * request to llhttp (strict), with the expected method, target and
 * number of header fields; every line ends with CRLF and holds no other
 * CR or LF; the target holds only printable ASCII with valid escapes, and
 * its query decodes back to exactly the stored values; the credentials are
 * exactly what the rules of backend_api.h say. A refusal is justified (an
 * unknown precision, a control byte in a value that would go into a header
 * raw, the backend's own token), says why without the secret, and never
 * comes for a batch that can be sent.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_config_util.h"
#include "relay/delivery/backend_api.h"
#include "relay/delivery/http_client.h"
#include "relay/base/lineproto.h"

#define NCFG 8

static const char *const yamls[NCFG] = {
	"  - name: a\n    url: http://127.0.0.1:8086\n",
	"  - name: a\n    url: http://influx.example:8086/pre/fix\n    username: svc\n    password: pw\n",
	"  - name: a\n    url: http://h\n    token: 'svc:pw'\n",
	"  - name: a\n    url: http://[::1]:8086\n    type: v2\n",
	"  - name: a\n    url: http://h/p%20q\n    type: v2\n    org: my org\n    token: T\n",
	"  - name: a\n    url: http://h\n    token: svc\n",
	"  - name: a\n    url: http://10.0.0.1\n    on_database_not_found: create\n",
	"  - name: a\n    url: http://h\n    type: v2\n    token: \"t\\u00e9\"\n",
};

/* The configuration refuses control bytes in these; the builder must not
 * rely on it. Set after the load, as a configuration made some other way
 * could hold them. */
static void patch(char **field, const char *value)
{
	free(*field);
	*field = xstrdup(value);
}

static void check(int ok, const char *what)
{
	if (!ok) {
		fprintf(stderr, "fuzz_backend_request: %s\n", what);
		abort();
	}
}

static int ctl(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return 1;
	return 0;
}

static int hexval(int c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Percent-decode [p, e) into out (NUL-terminated). */
static void pct_decode(const char *p, const char *e, struct rbuf *out)
{
	rbuf_reset(out);
	for (; p < e; p++) {
		if (*p == '%') {
			check(e - p >= 3 && hexval(p[1]) >= 0 && hexval(p[2]) >= 0, "a bad escape in the target");
			rbuf_appendc(out, (char)(hexval(p[1]) * 16 + hexval(p[2])));
			p += 2;
		} else {
			rbuf_appendc(out, *p);
		}
	}
	rbuf_cstr(out);
}

/* The next query parameter of *q: its name must be name, its value
 * decoded must be want. */
static void expect_param(const char **q, const char *name, const char *want)
{
	size_t nl = strlen(name);
	check(strncmp(*q, name, nl) == 0 && (*q)[nl] == '=', "a query parameter missing or out of order");
	const char *v = *q + nl + 1, *amp = strchr(v, '&');
	const char *e = amp ? amp : v + strlen(v);
	struct rbuf d = RBUF_INIT;
	pct_decode(v, e, &d);
	check(d.len == strlen(want) && memcmp(d.data, want, d.len) == 0, "a query value is not the stored one");
	rbuf_release(&d);
	*q = amp ? amp + 1 : e;
}

static void base64_decode(const char *s, struct rbuf *out)
{
	static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	unsigned acc = 0;
	int bits = 0;
	rbuf_reset(out);
	for (; *s && *s != '='; s++) {
		const char *at = strchr(tbl, *s);
		check(at != NULL && *s, "not base64");
		acc = acc << 6 | (unsigned)(at - tbl);
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			rbuf_appendc(out, (char)((acc >> bits) & 0xff));
		}
	}
	rbuf_cstr(out);
}

/* What backend_api.h says the Authorization header is: its scheme
 * ("Basic", "Token", or NULL for none), and in cred its credentials (for
 * Basic, before base64). */
static const char *expected_auth(const struct relay_backend_config *cfg, const struct wal_batch *b,
                                 struct rbuf *cred)
{
	int v2 = cfg->type == RELAY_API_V2;
	rbuf_reset(cred);
	if (cfg->username) {
		rbuf_appendf(cred, "%s:%s", cfg->username, cfg->password);
		return "Basic";
	}
	if (cfg->token) {
		rbuf_appendf(cred, "%s", cfg->token);
		return "Token";
	}
	if (*b->user) {
		rbuf_appendf(cred, "%s:%s", b->user, b->password);
		return v2 ? "Token" : "Basic";
	}
	if (*b->token) {
		rbuf_appendf(cred, "%s", b->token);
		return !v2 && strchr(b->token, ':') ? "Basic" : "Token";
	}
	return NULL;
}

struct parsed {
	int fields, complete;
	struct rbuf url;
};

static int p_url(llhttp_t *p, const char *at, size_t len)
{
	struct parsed *ps = p->data;
	rbuf_append(&ps->url, at, len);
	return 0;
}

static int p_field(llhttp_t *p, const char *at, size_t len)
{
	(void)at;
	(void)len;
	struct parsed *ps = p->data;
	/* Called once per field here: the head is parsed in one piece. */
	ps->fields++;
	return 0;
}

static int p_complete(llhttp_t *p)
{
	struct parsed *ps = p->data;
	ps->complete++;
	return HPE_PAUSED;
}

/* The whole head, as the worker sends it, with a body of body_len. */
static void check_head(const struct relay_backend_config *cfg, const char *method, const char *target,
                       const struct rbuf *auth, size_t body_len)
{
	struct rbuf hdrs = RBUF_INIT, head = RBUF_INIT;
	if (auth->len)
		rbuf_append(&hdrs, auth->data, auth->len);
	rbuf_append(&hdrs, "Content-Type: text/plain; charset=utf-8\r\n", 41);
	http_client_build_head(&head, method, target, cfg->host, cfg->port, rbuf_cstr(&hdrs), body_len);

	/* Line by line: CRLF ends each, and nothing else is a CR or an LF. */
	int lines = 0;
	const char *p = head.data, *e = head.data + head.len;
	while (p < e) {
		const char *crlf = memmem(p, (size_t)(e - p), "\r\n", 2);
		check(crlf != NULL, "the head does not end with CRLF");
		check(!memchr(p, '\r', (size_t)(crlf - p)) && !memchr(p, '\n', (size_t)(crlf - p)),
		      "a bare CR or LF inside a line of the head");
		lines++;
		if (crlf == p)
			check(crlf + 2 == e, "the head goes on after its empty line");
		p = crlf + 2;
	}
	int fields = 4 + (auth->len != 0); /* Host, User-Agent, Content-Length, Content-Type */
	check(lines == 1 + fields + 1, "the head does not have exactly the expected lines");

	/* As a server reads it: exactly one request, its body, nothing more. */
	struct parsed ps;
	memset(&ps, 0, sizeof(ps));
	llhttp_settings_t st;
	llhttp_settings_init(&st);
	st.on_url = p_url;
	st.on_header_field = p_field;
	st.on_message_complete = p_complete;
	llhttp_t parser;
	llhttp_init(&parser, HTTP_REQUEST, &st);
	parser.data = &ps;
	for (size_t i = 0; i < body_len; i++)
		rbuf_appendc(&head, 'x');
	llhttp_errno_t err = llhttp_execute(&parser, head.data, head.len);
	check(err == HPE_PAUSED && ps.complete == 1, "the head is not one request to llhttp");
	check(llhttp_get_error_pos(&parser) == head.data + head.len, "bytes left after the request");
	check(strcmp(llhttp_method_name((llhttp_method_t)parser.method), method) == 0, "another method");
	check(ps.fields == fields, "another number of header fields");
	check(strcmp(rbuf_cstr(&ps.url), target) == 0, "another request target");
	rbuf_release(&ps.url);
	rbuf_release(&hdrs);
	rbuf_release(&head);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct relay_config cfgs[NCFG];
	static int ready;
	if (!ready) {
		for (int i = 0; i < NCFG; i++) {
			char y[512];
			snprintf(y, sizeof(y), "data_dir: /nonexistent\nbackends:\n%s", yamls[i]);
			fuzz_load_config("backend", y, &cfgs[i]);
		}
		patch(&cfgs[1].backends[0].password, "p\r\nw");
		patch(&cfgs[4].backends[0].org, "my org\r\n");
		patch(&cfgs[5].backends[0].token, "svc\r\nX-Evil: 1");
		ready = 1;
	}
	if (size < 2)
		return 0;
	const struct relay_backend_config *cfg = &cfgs[(data[0] & 0x7f) % NCFG].backends[0];
	int create = (data[0] & 0x80) && cfg->type == RELAY_API_V1;

	/* The six values, NUL-separated; missing ones are empty. */
	char *rest = malloc(size - 2 + 1);
	memcpy(rest, data + 2, size - 2);
	rest[size - 2] = '\0';
	const char *v[6] = { "", "", "", "", "", "" };
	char *p = rest, *e = rest + (size - 2);
	for (int i = 0; i < 6 && p <= e; i++) {
		v[i] = p;
		p += strlen(p) + 1;
	}
	struct wal_batch b;
	memset(&b, 0, sizeof(b));
	b.precision = data[1];
	b.db = v[0];
	b.rp = v[1];
	b.user = v[2];
	b.password = v[3];
	b.org = v[4];
	b.token = v[5];

	struct rbuf target = RBUF_INIT, auth = RBUF_INIT, cred = RBUF_INIT, dec = RBUF_INIT;
	char err[200] = "";
	int rc = create ? backend_api_create_database(cfg, &b, &target, &auth, err, sizeof(err))
	                : backend_api_request(cfg, &b, &target, &auth, err, sizeof(err));

	const char *scheme = expected_auth(cfg, &b, &cred);
	int bad_prec = !create && b.precision > LP_PRECISION_H;
	int bad_cred = scheme && strcmp(scheme, "Token") == 0 && ctl(rbuf_cstr(&cred));
	if (rc) {
		check(rc == BACKEND_API_EBATCH || rc == BACKEND_API_ECONFIG, "an unknown error code");
		check(*err && !ctl(err), "a refusal without a printable reason");
		if (rc == BACKEND_API_ECONFIG)
			check(!bad_prec && bad_cred && cfg->token, "ECONFIG without a bad token in the configuration");
		else
			check(bad_prec || (bad_cred && !cfg->token), "EBATCH for a batch that can be sent");
		if (cred.len >= 6)
			check(!strstr(err, rbuf_cstr(&cred)), "the secret is in the reason");
		goto out;
	}
	check(!bad_prec && !bad_cred, "a batch built into a request that no request can carry");

	/* The target: printable ASCII, valid escapes, the stored values. */
	const char *t = rbuf_cstr(&target);
	for (const char *c = t; *c; c++)
		check((unsigned char)*c > 0x20 && (unsigned char)*c < 0x7f, "a blank or control byte in the target");
	size_t pl = strlen(cfg->path_prefix);
	check(strncmp(t, cfg->path_prefix, pl) == 0, "the target does not start with the prefix");
	const char *q;
	if (create) {
		check(strncmp(t + pl, "/query?", 7) == 0, "not /query");
		q = t + pl + 7;
		struct rbuf stmt = RBUF_INIT;
		rbuf_append(&stmt, "CREATE DATABASE \"", 17);
		for (const char *s = b.db; *s; s++) {
			if (*s == '"' || *s == '\\')
				rbuf_appendc(&stmt, '\\');
			rbuf_appendc(&stmt, *s);
		}
		rbuf_appendc(&stmt, '"');
		expect_param(&q, "q", rbuf_cstr(&stmt));
		rbuf_release(&stmt);
	} else if (cfg->type == RELAY_API_V2) {
		check(strncmp(t + pl, "/api/v2/write?", 14) == 0, "not /api/v2/write");
		q = t + pl + 14;
		struct rbuf bucket = RBUF_INIT;
		rbuf_appendf(&bucket, "%s%s%s", b.db, *b.rp ? "/" : "", b.rp);
		expect_param(&q, "bucket", rbuf_cstr(&bucket));
		rbuf_release(&bucket);
		const char *org = cfg->org ? cfg->org : b.org;
		if (*org)
			expect_param(&q, "org", org);
		static const char *const names[] = { "ns", "us", "ms", "s", "m", "h" };
		expect_param(&q, "precision", names[b.precision]);
	} else {
		check(strncmp(t + pl, "/write?", 7) == 0, "not /write");
		q = t + pl + 7;
		expect_param(&q, "db", b.db);
		if (*b.rp)
			expect_param(&q, "rp", b.rp);
		expect_param(&q, "precision", lp_precision_name((enum lp_precision)b.precision));
	}
	check(*q == '\0', "more in the query than expected");

	/* The credentials: exactly the rules' ones, in one clean line. */
	if (!scheme) {
		check(auth.len == 0, "credentials sent that nobody gave");
	} else {
		const char *h = rbuf_cstr(&auth);
		size_t sl = strlen(scheme);
		check(strncmp(h, "Authorization: ", 15) == 0 && strncmp(h + 15, scheme, sl) == 0 && h[15 + sl] == ' ',
		      "another Authorization scheme");
		check(auth.len >= 2 && memcmp(h + auth.len - 2, "\r\n", 2) == 0, "Authorization not ended by CRLF");
		struct rbuf val = RBUF_INIT;
		rbuf_append(&val, h + 16 + sl, auth.len - 16 - sl - 2);
		check(!ctl(rbuf_cstr(&val)), "a control byte in the Authorization value");
		if (strcmp(scheme, "Basic") == 0) {
			base64_decode(rbuf_cstr(&val), &dec);
			check(dec.len == cred.len && memcmp(dec.data, cred.data, cred.len) == 0, "other Basic credentials");
		} else {
			check(strcmp(rbuf_cstr(&val), rbuf_cstr(&cred)) == 0, "another token");
		}
		rbuf_release(&val);
	}
	check_head(cfg, "POST", t, &auth, create ? 0 : 1 + (size & 15));
out:
	rbuf_release(&target);
	rbuf_release(&auth);
	rbuf_release(&cred);
	rbuf_release(&dec);
	free(rest);
	return 0;
}
