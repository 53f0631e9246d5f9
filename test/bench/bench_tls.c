/*
 * bench_tls: relayd over TLS against plain HTTP, in one run (issue 15).
 *
 * At the start a private CA and a server certificate for 127.0.0.1
 * (subjectAltName IP:127.0.0.1, DNS:localhost) are made with the openssl
 * CLI in the temporary directory. The client side is OpenSSL used directly:
 * blocking sockets, SSL_connect once per connection, then SSL_write and
 * SSL_read of HTTP/1.1; it trusts only the private CA and checks that the
 * certificate names 127.0.0.1. Every handshake is a full one (the client
 * keeps no sessions). Each case runs plain and TLS interleaved (plain, TLS,
 * plain, TLS... for --rounds R), so that drift on a shared machine hits both
 * alike; each round's ratio is TLS / plain of that round, and a case's ratio
 * is the median of its rounds' ratios:
 *
 *  (1) ingest with keep-alive: C connections (opened, and handshaken, before
 *      the clock starts) POST N-line batches back to back for T seconds to
 *      relayd's listen.http or listen.https (one relayd with both listeners;
 *      its backend a closed port, so nothing is delivered): points/s.
 *      Aim: TLS >= 80 % of plain.
 *  (2) handshakes: a new connection, the TLS handshake, one GET /ping with
 *      Connection: close, the close; one client after another, then C
 *      clients at once, for T seconds each: connections/s, against the same
 *      with plain TCP connections.
 *  (3) memory per idle connection: a fresh relayd per measurement; after one
 *      warm-up connection, M connections each answered one /ping and left
 *      open: relayd's VmRSS growth / M.
 *  (4) delivery: a backlog of B points queued by a relayd whose backend is a
 *      closed port; relayd stopped; a fresh private influxd started, serving
 *      plain HTTP or HTTPS (https-enabled, the same certificate); relayd
 *      restarted with its backend at it (url http:// or https:// with
 *      tls_ca: the private CA); drain points/s = B / (restart until nothing
 *      is pending). Aim: TLS >= 90 % of plain.
 *
 * --selftest checks the TLS client alone against `openssl s_server -www`:
 * verified handshakes and answers, and refusals of an untrusted CA and of a
 * certificate for another address. --plain-only runs the plain halves only,
 * for a relayd that has no TLS yet.
 *
 * Run by hand, never by ctest. Loopback only, free ports, every process it
 * started stopped by its pid. Every phase is time-bounded: 30 s per openssl
 * command and per socket call, 10 s for a server to become ready or to
 * stop, T seconds (plus one answer) per slice, 60 s to open the idle
 * connections, 60 s to queue a backlog, 120 s for a drain.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "benchkit.h"

#define MAX_ROUNDS 20u
#define MAX_CONNS 256u
#define MAX_SECONDS 600u
#define MAX_LINES 100000u
#define MAX_IDLE 5000u
#define MAX_BACKLOG 50000000u
#define MAX_HEAD 65536                         /* bytes of a response head */
#define MAX_BODY (64u << 20)                   /* bytes of a response body */
#define TS0_NS 1600000000000000000ULL          /* the first point's time (2020-09-13) */
#define SERIES 16                              /* host=h0..h15 */
#define TOOL_MAX_NS (30 * NS_PER_S)            /* one openssl command */
#define READY_MAX_NS (10 * NS_PER_S)           /* a server answering /ping */
#define IDLE_OPEN_MAX_NS (60 * NS_PER_S)       /* opening the idle connections */
#define BACKLOG_MAX_NS (60 * NS_PER_S)         /* queueing a backlog */
#define SETTLE_NS (500 * 1000000ULL)           /* before reading relayd's RSS */
#define AIM_INGEST 0.80
#define AIM_DELIVERY 0.90

enum mode { PLAIN, TLS, NMODES };
static const char *const mode_name[NMODES] = { "plain HTTP", "TLS" };

enum bcase { C_INGEST, C_HANDSHAKES, C_MEMORY, C_DELIVERY, NCASES };
static const char *const case_word[NCASES] = { "ingest", "handshakes", "memory", "delivery" };

/*---- options ----*/

struct options {
	const char *relayd;
	char *influxd, *openssl;
	unsigned rounds, conns, seconds, lines, idle, backlog;
	int key_ec, plain_only, selftest, keep;
	int run[NCASES];
};

static void usage(FILE *f)
{
	fprintf(f,
	        "usage: bench_tls [--relayd PATH] [--influxd PATH] [--openssl PATH] [--rounds R] [-c CONNS]\n"
	        "                 [-t SECONDS] [-n LINES] [--idle M] [--backlog POINTS] [--key rsa|ec]\n"
	        "                 [--only LIST] [--plain-only] [--selftest] [--keep]\n"
	        "  --relayd PATH     relayd binary to start (./build/bin/relayd)\n"
	        "  --influxd PATH    influxd binary for the delivery case (influxd on PATH)\n"
	        "  --openssl PATH    openssl CLI for the certificates (openssl on PATH)\n"
	        "  --rounds R        how many times each case alternates plain and TLS (3)\n"
	        "  -c CONNS          connections of the ingest and parallel handshake cases, and\n"
	        "                    writers of the backlog (4)\n"
	        "  -t SECONDS        length of one slice (one mode, one round) of a timed case (5)\n"
	        "  -n LINES          lines per POST (1000)\n"
	        "  --idle M          idle connections of the memory case (500)\n"
	        "  --backlog POINTS  backlog of the delivery case, rounded up to whole POSTs (2000000)\n"
	        "  --key rsa|ec      the certificates' keys: RSA 2048 or ECDSA P-256 (rsa)\n"
	        "  --only LIST       some of ingest,handshakes,memory,delivery (all; delivery needs influxd)\n"
	        "  --plain-only      the plain halves only (a relayd without TLS); no ratios\n"
	        "  --selftest        check the TLS client against openssl s_server, then stop\n"
	        "  --keep            keep the temporary directory (certificates, configs, logs, data)\n");
}

static int parse_only(const char *s, int run[NCASES])
{
	char *copy = xstrdup(s), *save = NULL;
	int rc = 0;
	for (int k = 0; k < NCASES; k++)
		run[k] = 0;
	for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		int k = 0;
		while (k < NCASES && strcmp(tok, case_word[k]))
			k++;
		if (k == NCASES)
			rc = -1;
		else
			run[k] = 1;
	}
	free(copy);
	return rc;
}

/* Returns 0, or 2 (the exit code) after printing what is wrong. */
static int options_parse(int argc, char **argv, struct options *o)
{
	enum { OPT_RELAYD = 256, OPT_INFLUXD, OPT_OPENSSL, OPT_ROUNDS, OPT_IDLE, OPT_BACKLOG, OPT_KEY, OPT_ONLY,
	       OPT_PLAIN, OPT_SELFTEST, OPT_KEEP };
	static const struct option longopts[] = {
		{ "relayd", required_argument, NULL, OPT_RELAYD },
		{ "influxd", required_argument, NULL, OPT_INFLUXD },
		{ "openssl", required_argument, NULL, OPT_OPENSSL },
		{ "rounds", required_argument, NULL, OPT_ROUNDS },
		{ "idle", required_argument, NULL, OPT_IDLE },
		{ "backlog", required_argument, NULL, OPT_BACKLOG },
		{ "key", required_argument, NULL, OPT_KEY },
		{ "only", required_argument, NULL, OPT_ONLY },
		{ "plain-only", no_argument, NULL, OPT_PLAIN },
		{ "selftest", no_argument, NULL, OPT_SELFTEST },
		{ "keep", no_argument, NULL, OPT_KEEP },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *influxd = NULL, *openssl = NULL;
	int c;
	*o = (struct options){ .relayd = "./build/bin/relayd", .rounds = 3, .conns = 4, .seconds = 5, .lines = 1000,
	                       .idle = 500, .backlog = 2000000, .run = { 1, 1, 1, 1 } };
	while ((c = getopt_long(argc, argv, "c:t:n:h", longopts, NULL)) != -1) {
		switch (c) {
		case 'c':
			if (parse_uint(optarg, 1, MAX_CONNS, &o->conns) < 0) {
				bench_err("-c wants 1..%u, not '%s'\n", MAX_CONNS, optarg);
				return 2;
			}
			break;
		case 't':
			if (parse_uint(optarg, 1, MAX_SECONDS, &o->seconds) < 0) {
				bench_err("-t wants 1..%u seconds, not '%s'\n", MAX_SECONDS, optarg);
				return 2;
			}
			break;
		case 'n':
			if (parse_uint(optarg, 1, MAX_LINES, &o->lines) < 0) {
				bench_err("-n wants 1..%u lines, not '%s'\n", MAX_LINES, optarg);
				return 2;
			}
			break;
		case OPT_ROUNDS:
			if (parse_uint(optarg, 1, MAX_ROUNDS, &o->rounds) < 0) {
				bench_err("--rounds wants 1..%u, not '%s'\n", MAX_ROUNDS, optarg);
				return 2;
			}
			break;
		case OPT_IDLE:
			if (parse_uint(optarg, 1, MAX_IDLE, &o->idle) < 0) {
				bench_err("--idle wants 1..%u, not '%s'\n", MAX_IDLE, optarg);
				return 2;
			}
			break;
		case OPT_BACKLOG:
			if (parse_uint(optarg, 1, MAX_BACKLOG, &o->backlog) < 0) {
				bench_err("--backlog wants 1..%u points, not '%s'\n", MAX_BACKLOG, optarg);
				return 2;
			}
			break;
		case OPT_KEY:
			if (strcmp(optarg, "rsa") && strcmp(optarg, "ec")) {
				bench_err("--key wants rsa or ec, not '%s'\n", optarg);
				return 2;
			}
			o->key_ec = strcmp(optarg, "ec") == 0;
			break;
		case OPT_ONLY:
			if (parse_only(optarg, o->run) < 0) {
				bench_err("--only wants some of ingest,handshakes,memory,delivery, not '%s'\n", optarg);
				return 2;
			}
			break;
		case OPT_RELAYD:
			o->relayd = optarg;
			break;
		case OPT_INFLUXD:
			influxd = optarg;
			break;
		case OPT_OPENSSL:
			openssl = optarg;
			break;
		case OPT_PLAIN:
			o->plain_only = 1;
			break;
		case OPT_SELFTEST:
			o->selftest = 1;
			break;
		case OPT_KEEP:
			o->keep = 1;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind < argc) {
		bench_err("unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		return 2;
	}
	o->openssl = openssl ? xstrdup(openssl) : find_on_path("openssl");
	if (!o->openssl) {
		bench_err("no openssl on PATH: use --openssl PATH\n");
		return 2;
	}
	o->influxd = influxd ? xstrdup(influxd) : find_on_path("influxd");
	if (!o->influxd && o->run[C_DELIVERY] && !o->selftest) {
		bench_err("no influxd on PATH: the delivery case is skipped (use --influxd PATH)\n");
		o->run[C_DELIVERY] = 0;
	}
	return 0;
}

/*---- certificates ----*/

struct certs {
	char ca[PATH_MAX], cert[PATH_MAX], key[PATH_MAX];
	char other_ca[PATH_MAX]; /* a second CA, which signed nothing: for the self-test */
};

/* Run argv to its end, at most TOOL_MAX_NS, output to log. Returns 0 when it exited 0, else -1 after a message. */
static int run_tool(char *const argv[], const char *log)
{
	struct child t = { .name = "openssl" };
	int err;
	snprintf(t.log, sizeof(t.log), "%s", log);
	if ((err = child_spawn(&t, argv))) {
		bench_err("cannot start '%s': %s\n", argv[0], strerror(err));
		return -1;
	}
	uint64_t start = now_mono_ns();
	while (child_alive(&t) && now_mono_ns() - start < TOOL_MAX_NS)
		sleep_ns(10 * 1000000ULL);
	if (t.pid)
		bench_err("'%s %s' did not finish within %llu s\n", argv[0], argv[1], TOOL_MAX_NS / NS_PER_S);
	return child_stop(&t, 0);
}

static int write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	if (!f || fputs(text, f) < 0) {
		bench_err("cannot write '%s': %s\n", path, strerror(errno));
		if (f)
			fclose(f);
		return -1;
	}
	if (fclose(f) != 0) {
		bench_err("cannot write '%s': %s\n", path, strerror(errno));
		return -1;
	}
	return 0;
}

/*
 * A private CA (and a second one, unused) and a server certificate for
 * 127.0.0.1 signed by the first, valid for 2 days, in dir. Returns 0 or -1.
 */
static int make_certs(const char *openssl, const char *dir, int ec, struct certs *c)
{
	static const char cnf[] =
		"[req]\ndistinguished_name = dn\nprompt = no\n"
		"[dn]\nCN = bench_tls\n"
		"[v3_ca]\nbasicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign,cRLSign\n"
		"subjectKeyIdentifier = hash\n"
		"[v3_srv]\nbasicConstraints = CA:FALSE\nkeyUsage = critical,digitalSignature,keyEncipherment\n"
		"extendedKeyUsage = serverAuth\nsubjectAltName = IP:127.0.0.1,DNS:localhost\n"
		"subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n";
	char conf[PATH_MAX], log[PATH_MAX], cakey[PATH_MAX], csr[PATH_MAX], okey[PATH_MAX];
	/* -newkey TYPE -pkeyopt OPTION: RSA 2048 or ECDSA P-256. */
	char *ktype = ec ? (char *)"ec" : (char *)"rsa";
	char *kopt = ec ? (char *)"ec_paramgen_curve:P-256" : (char *)"rsa_keygen_bits:2048";
	if (path_join(conf, dir, "openssl.cnf") < 0 || path_join(log, dir, "openssl.log") < 0 ||
	    path_join(cakey, dir, "ca.key") < 0 || path_join(c->ca, dir, "ca.pem") < 0 ||
	    path_join(csr, dir, "server.csr") < 0 || path_join(c->cert, dir, "server.pem") < 0 ||
	    path_join(c->key, dir, "server.key") < 0 || path_join(c->other_ca, dir, "other-ca.pem") < 0 ||
	    path_join(okey, dir, "other-ca.key") < 0) {
		bench_err("temporary directory path too long\n");
		return -1;
	}
	if (write_file(conf, cnf) < 0)
		return -1;
	char *ca[] = { (char *)openssl, (char *)"req", (char *)"-x509", (char *)"-config", conf, (char *)"-extensions",
		       (char *)"v3_ca", (char *)"-newkey", ktype, (char *)"-pkeyopt", kopt, (char *)"-nodes",
		       (char *)"-keyout", cakey, (char *)"-out", c->ca, (char *)"-days", (char *)"2", (char *)"-subj",
		       (char *)"/CN=bench_tls private CA", NULL };
	char *other[] = { (char *)openssl, (char *)"req", (char *)"-x509", (char *)"-config", conf,
		          (char *)"-extensions", (char *)"v3_ca", (char *)"-newkey", ktype, (char *)"-pkeyopt", kopt,
		          (char *)"-nodes", (char *)"-keyout", okey, (char *)"-out", c->other_ca, (char *)"-days",
		          (char *)"2", (char *)"-subj", (char *)"/CN=bench_tls other CA", NULL };
	char *req[] = { (char *)openssl, (char *)"req", (char *)"-new", (char *)"-config", conf, (char *)"-newkey",
		        ktype, (char *)"-pkeyopt", kopt, (char *)"-nodes", (char *)"-keyout", c->key, (char *)"-out",
		        csr, (char *)"-subj", (char *)"/CN=127.0.0.1", NULL };
	char *sign[] = { (char *)openssl, (char *)"x509", (char *)"-req", (char *)"-in", csr, (char *)"-CA", c->ca,
		         (char *)"-CAkey", cakey, (char *)"-set_serial", (char *)"2", (char *)"-days", (char *)"2",
		         (char *)"-extfile", conf, (char *)"-extensions", (char *)"v3_srv", (char *)"-out", c->cert,
		         NULL };
	if (run_tool(ca, log) < 0 || run_tool(other, log) < 0 || run_tool(req, log) < 0 || run_tool(sign, log) < 0)
		return -1;
	return 0;
}

/*---- the client: plain or TLS over a blocking socket ----*/

static SSL_CTX *client_ctx;   /* trusts the private CA only */

/* A connection and the bytes received but not yet consumed; BCONN_INIT is closed; it owns buf. */
struct bconn {
	int fd;
	SSL *ssl;
	char *buf;
	size_t len, cap;
};
#define BCONN_INIT { .fd = -1 }

/* "what: " and OpenSSL's first queued error (or errno's) into err; the queue is cleared. */
static void ssl_fail(char *err, size_t errlen, const char *what, int saved_errno)
{
	char buf[256];
	unsigned long e = ERR_get_error();
	if (e)
		ERR_error_string_n(e, buf, sizeof(buf));
	else if (saved_errno == EAGAIN || saved_errno == EWOULDBLOCK)
		snprintf(buf, sizeof(buf), "timed out");
	else
		snprintf(buf, sizeof(buf), "%s", saved_errno ? strerror(saved_errno) : "connection closed");
	ERR_clear_error();
	if (snprintf(err, errlen, "%s: %s", what, buf) < 0 && errlen)
		err[0] = '\0';
}

/* A client context trusting only ca_file, TLS 1.2 at least, ALPN http/1.1, no session cache; NULL after a message. */
static SSL_CTX *client_ctx_new(const char *ca_file)
{
	static const unsigned char alpn[] = { 8, 'h', 't', 't', 'p', '/', '1', '.', '1' };
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	char err[256];
	if (!ctx || !SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) ||
	    !SSL_CTX_load_verify_locations(ctx, ca_file, NULL) || SSL_CTX_set_alpn_protos(ctx, alpn, sizeof(alpn))) {
		ssl_fail(err, sizeof(err), "cannot make the TLS client context", 0);
		bench_err("%s\n", err);
		SSL_CTX_free(ctx);
		return NULL;
	}
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF); /* every handshake is a full one */
	SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_TICKET);
	return ctx;
}

/* Close c's socket (a TLS close_notify first, not waited for); the buffer stays for reuse. */
static void bconn_close(struct bconn *c)
{
	if (c->ssl) {
		if (SSL_is_init_finished(c->ssl))
			SSL_shutdown(c->ssl);
		SSL_free(c->ssl);
		ERR_clear_error();
		c->ssl = NULL;
	}
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	c->len = 0;
}

static void bconn_release(struct bconn *c)
{
	bconn_close(c);
	free(c->buf);
	c->buf = NULL;
	c->cap = 0;
}

/*
 * Connect c to 127.0.0.1:port; with ctx, then the TLS handshake, the
 * server's certificate verified and checked for the address expect_ip.
 * Returns 0, or -1 with err (c closed).
 */
static int bconn_open_ex(struct bconn *c, SSL_CTX *ctx, const char *expect_ip, uint16_t port, char *err,
                         size_t errlen)
{
	int e = tcp_connect(port, &c->fd);
	c->len = 0;
	if (e < 0) {
		c->fd = -1;
		snprintf(err, errlen, "cannot connect to 127.0.0.1:%u: %s", port, strerror(-e));
		return -1;
	}
	if (!ctx)
		return 0;
	ERR_clear_error();
	if (!(c->ssl = SSL_new(ctx)) || !SSL_set_fd(c->ssl, c->fd) ||
	    !X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), expect_ip)) {
		ssl_fail(err, errlen, "cannot set up a TLS connection", 0);
		bconn_close(c);
		return -1;
	}
	errno = 0;
	if (SSL_connect(c->ssl) != 1) {
		int saved = errno;
		long v = SSL_get_verify_result(c->ssl);
		if (v != X509_V_OK) {
			ERR_clear_error();
			snprintf(err, errlen, "TLS handshake with 127.0.0.1:%u: certificate verify failed: %s", port,
			         X509_verify_cert_error_string(v));
		} else {
			char what[64];
			snprintf(what, sizeof(what), "TLS handshake with 127.0.0.1:%u", port);
			ssl_fail(err, errlen, what, saved);
		}
		bconn_close(c);
		return -1;
	}
	return 0;
}

/* Connect c to 127.0.0.1:port in mode m (TLS: verified against the private CA). Returns 0 or -1 with err. */
static int bconn_open(struct bconn *c, enum mode m, uint16_t port, char *err, size_t errlen)
{
	return bconn_open_ex(c, m == TLS ? client_ctx : NULL, "127.0.0.1", port, err, errlen);
}

static int bconn_send(struct bconn *c, const char *p, size_t n, char *err, size_t errlen)
{
	if (!c->ssl) {
		int e = send_all(c->fd, p, n);
		if (e < 0) {
			snprintf(err, errlen, "cannot send: %s", strerror(-e));
			return -1;
		}
		return 0;
	}
	while (n > 0) {
		size_t w = 0;
		errno = 0;
		if (SSL_write_ex(c->ssl, p, n, &w) != 1) {
			ssl_fail(err, errlen, "cannot send over TLS", errno);
			return -1;
		}
		p += w;
		n -= w;
	}
	return 0;
}

/* Receive more bytes into c->buf. Returns the count, 0 at the end of the stream, or -1 with err. */
static ssize_t bconn_fill(struct bconn *c, char *err, size_t errlen)
{
	if (c->cap - c->len < 16384) {
		c->cap = c->cap ? c->cap * 2 : 65536;
		c->buf = xrealloc(c->buf, c->cap);
	}
	if (!c->ssl) {
		for (;;) {
			ssize_t r = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
			if (r >= 0) {
				c->len += (size_t)r;
				return r;
			}
			if (errno != EINTR) {
				snprintf(err, errlen, "cannot receive: %s",
				         errno == EAGAIN ? "timed out" : strerror(errno));
				return -1;
			}
		}
	}
	size_t got = 0;
	errno = 0;
	if (SSL_read_ex(c->ssl, c->buf + c->len, c->cap - c->len, &got) == 1) {
		c->len += got;
		return (ssize_t)got;
	}
	int saved = errno, e = SSL_get_error(c->ssl, 0);
	if (e == SSL_ERROR_ZERO_RETURN) {
		ERR_clear_error();
		return 0;
	}
	ssl_fail(err, errlen, "cannot receive over TLS", saved);
	return -1;
}

/*
 * Read and consume one response (by Content-Length, or to the end of the
 * stream when there is none); the whole body to full too when not NULL.
 * Returns 0, or -1 with err (c is then unusable).
 */
static int bconn_response(struct bconn *c, struct http_resp *r, struct rbuf *full, char *err, size_t errlen)
{
	const char *sep;
	ssize_t got;
	while (!(sep = c->len ? memmem(c->buf, c->len, "\r\n\r\n", 4) : NULL)) {
		if (c->len >= MAX_HEAD) {
			snprintf(err, errlen, "response head over %d bytes", MAX_HEAD);
			return -1;
		}
		if ((got = bconn_fill(c, err, errlen)) < 0)
			return -1;
		if (got == 0) {
			snprintf(err, errlen, "connection closed before a whole response head");
			return -1;
		}
	}
	size_t head = (size_t)(sep - c->buf) + 4;
	long long clen;
	*r = (struct http_resp){ 0 };
	if (http_parse_head(c->buf, head, r, &clen, err, errlen) < 0)
		return -1;
	int to_eof = 0;
	if (r->status == 204 || r->status == 304)
		clen = 0;
	else if (clen < 0)
		to_eof = r->close = 1;
	if (clen > (long long)MAX_BODY) {
		snprintf(err, errlen, "response body of %lld bytes", clen);
		return -1;
	}
	while (to_eof || c->len - head < (size_t)clen) {
		if (c->len - head > MAX_BODY) {
			snprintf(err, errlen, "response body over %u bytes", MAX_BODY);
			return -1;
		}
		if ((got = bconn_fill(c, err, errlen)) < 0)
			return -1;
		if (got == 0) {
			if (to_eof)
				break;
			snprintf(err, errlen, "connection closed inside a response body");
			return -1;
		}
	}
	http_resp_take(c->buf, &c->len, head, to_eof ? c->len - head : (size_t)clen, r, full);
	return 0;
}

static int bconn_roundtrip(struct bconn *c, const char *req, size_t len, struct http_resp *r, char *err,
                           size_t errlen)
{
	if (bconn_send(c, req, len, err, errlen) < 0)
		return -1;
	return bconn_response(c, r, NULL, err, errlen);
}

/* METHOD target as HTTP/1.0 on a fresh connection in mode m; whole body to body (NUL-terminated); the status or -1. */
static int bconn_control(enum mode m, uint16_t port, const char *method, const char *target, struct rbuf *body)
{
	struct bconn c = BCONN_INIT;
	struct http_resp r;
	char req[512], err[256];
	int status = -1;
	int n = snprintf(req, sizeof(req), "%s %s HTTP/1.0\r\nHost: 127.0.0.1:%u\r\nContent-Length: 0\r\n\r\n", method,
	                 target, port);
	rbuf_reset(body);
	if (n > 0 && (size_t)n < sizeof(req) && bconn_open(&c, m, port, err, sizeof(err)) == 0 &&
	    bconn_send(&c, req, (size_t)n, err, sizeof(err)) == 0 && bconn_response(&c, &r, body, err, sizeof(err)) == 0)
		status = r.status;
	rbuf_cstr(body);
	bconn_release(&c);
	return status;
}

/*---- requests ----*/

static size_t ping_request(char *out, size_t len, uint16_t port, int close)
{
	int n = snprintf(out, len, "GET /ping HTTP/1.1\r\nHost: 127.0.0.1:%u\r\nUser-Agent: bench_tls\r\n%s\r\n", port,
	                 close ? "Connection: close\r\n" : "");
	return n > 0 && (size_t)n < len ? (size_t)n : 0;
}

/* A POST /write of lines points into req (reset first): request seq's points, each of its own time. */
static void write_request(struct rbuf *req, struct rbuf *body, uint16_t port, unsigned lines, uint64_t seq)
{
	rbuf_reset(body);
	rbuf_reset(req);
	for (unsigned j = 0; j < lines; j++) {
		uint64_t i = seq * lines + j;
		uint32_t x = (uint32_t)i * 2654435761u; /* values that vary, the same on every run */
		rbuf_appendf(body, "m,host=h%u v=%u.%03u,n=%ui %" PRIu64 "\n", (unsigned)(i % SERIES), (x >> 8) % 1000,
		             x % 1000, (x >> 4) % 100000, (uint64_t)TS0_NS + i * 1000);
	}
	rbuf_appendf(req,
	             "POST /write?db=bench&precision=ns HTTP/1.1\r\nHost: 127.0.0.1:%u\r\nUser-Agent: bench_tls\r\n"
	             "Content-Type: text/plain; charset=utf-8\r\nContent-Length: %zu\r\n\r\n",
	             port, body->len);
	rbuf_append(req, body->data, body->len);
}

/*---- what went wrong ----*/

/*---- client threads ----*/

enum job { J_WRITE, J_BACKLOG, J_HANDSHAKE };

struct worker {
	pthread_t tid;
	struct gate *gate;
	enum job job;
	enum mode m;
	uint16_t port;
	unsigned lines;
	uint64_t duration_ns;   /* J_WRITE, J_HANDSHAKE */
	uint64_t seq0, step, n; /* J_BACKLOG: requests seq0, seq0 + step, ..., n of them */
	struct bconn conn;      /* J_WRITE, J_BACKLOG: opened before the gate */
	struct lat_vec lat;
	uint64_t ok;
	struct run_errors errs;
};

static void *worker_run(void *arg)
{
	struct worker *w = arg;
	struct rbuf req = RBUF_INIT, body = RBUF_INIT;
	struct http_resp r;
	char err[320], ping[160];
	size_t ping_len = ping_request(ping, sizeof(ping), w->port, 1);
	if (w->job == J_WRITE)
		write_request(&req, &body, w->port, w->lines, w->seq0);
	if (gate_wait(w->gate) < 0)
		goto out;
	uint64_t start = now_mono_ns(), deadline = start + w->duration_ns;
	for (uint64_t k = 0;; k++) {
		if (w->job == J_BACKLOG) {
			if (k == w->n)
				break;
			if (now_mono_ns() - start > BACKLOG_MAX_NS) {
				snprintf(err, sizeof(err), "queueing the backlog took over %llu s", BACKLOG_MAX_NS / NS_PER_S);
				note_failure(&w->errs, err);
				break;
			}
			write_request(&req, &body, w->port, w->lines, w->seq0 + k * w->step);
		} else if (now_mono_ns() >= deadline) {
			break;
		}
		uint64_t t0 = now_mono_ns();
		int rc;
		if (w->job == J_HANDSHAKE) {
			rc = bconn_open(&w->conn, w->m, w->port, err, sizeof(err));
			if (rc == 0)
				rc = bconn_roundtrip(&w->conn, ping, ping_len, &r, err, sizeof(err));
			bconn_close(&w->conn);
		} else {
			rc = bconn_roundtrip(&w->conn, req.data, req.len, &r, err, sizeof(err));
		}
		if (rc < 0) {
			note_failure(&w->errs, err);
			break;
		}
		lat_push(&w->lat, now_mono_ns() - t0);
		if (r.status != 204) {
			note_bad(&w->errs, &r);
			if (w->job == J_BACKLOG)
				break;
			continue;
		}
		w->ok++;
		if (w->job != J_HANDSHAKE && r.close) {
			snprintf(err, sizeof(err), "the server closed a keep-alive connection");
			note_failure(&w->errs, err);
			break;
		}
	}
out:
	rbuf_release(&req);
	rbuf_release(&body);
	return NULL;
}

/* What one slice of client threads did. */
struct slice {
	uint64_t ok, span_ns;
	double cpu_server_s, cpu_self_s;
	struct lat_vec lat;
};

/*
 * Run n client threads like proto (worker i: seq0 = proto->seq0 + i, step n)
 * until they end; J_WRITE and J_BACKLOG connect first. server's CPU is
 * measured when not NULL. Returns 0, or -1 when a client stopped on an error
 * or a status other than 204 came (merged into e).
 */
static int run_slice(const struct worker *proto, unsigned n, const struct child *server, struct slice *s,
                     struct run_errors *e)
{
	struct gate gate = GATE_INIT;
	struct worker *ws = xcalloc(n, sizeof(*ws));
	unsigned started = 0;
	char err[320];
	int rc, ret = -1;
	*s = (struct slice){ 0 };
	for (unsigned i = 0; i < n; i++) {
		ws[i] = *proto;
		ws[i].gate = &gate;
		ws[i].conn = (struct bconn)BCONN_INIT;
		ws[i].lat = (struct lat_vec){ 0 };
		ws[i].seq0 = proto->seq0 + i;
		ws[i].step = n;
		if (proto->job == J_BACKLOG)
			ws[i].n = proto->n / n + (i < proto->n % n);
		if (proto->job != J_HANDSHAKE && bconn_open(&ws[i].conn, proto->m, proto->port, err, sizeof(err)) < 0) {
			note_failure(e, err);
			bench_err("%s\n", err);
			goto out;
		}
	}
	for (; started < n; started++)
		if ((rc = pthread_create(&ws[started].tid, NULL, worker_run, &ws[started]))) {
			bench_err("cannot start a client thread: %s\n", strerror(rc));
			break;
		}
	double c0 = server ? child_cpu_s(server) : -1, s0 = self_cpu_s();
	uint64_t t0 = now_mono_ns();
	gate_open(&gate, started == n ? 1 : -1);
	for (unsigned i = 0; i < started; i++)
		pthread_join(ws[i].tid, NULL);
	s->span_ns = now_mono_ns() - t0;
	s->cpu_server_s = server ? child_cpu_s(server) - c0 : -1;
	s->cpu_self_s = self_cpu_s() - s0;
	if (started < n)
		goto out;
	ret = 0;
	for (unsigned i = 0; i < n; i++) {
		s->ok += ws[i].ok;
		lat_append(&s->lat, &ws[i].lat);
		if (ws[i].errs.transport || ws[i].errs.bad_status) {
			if (ws[i].errs.transport)
				bench_err("client %u stopped: %s\n", i, ws[i].errs.first_failure);
			else
				bench_err("client %u: answered %d: %s\n", i, ws[i].errs.first_status, ws[i].errs.first_body);
			ret = -1;
		}
		errors_merge(e, &ws[i].errs);
	}
out:
	for (unsigned i = 0; i < n; i++) {
		bconn_release(&ws[i].conn);
		lat_release(&ws[i].lat);
	}
	free(ws);
	return ret;
}

/*---- relayd ----*/

/* A relayd of ours: its child, its TLS port, what its config says. */
struct relay {
	struct child c;
	uint16_t https_port;    /* 0: no listen.https */
	unsigned max_conns;     /* http.max_connections; 0 = relayd's default */
	enum mode backend_mode; /* http:// or https:// (with tls_ca) */
};

static int relay_write_config(const struct relay *r, const struct certs *certs)
{
	FILE *f = fopen(r->c.conf, "w");
	if (!f)
		return -1;
	fprintf(f, "data_dir: \"%s\"\n", r->c.dir);
	if (r->https_port)
		fprintf(f, "listen: {http: 127.0.0.1:%u, https: 127.0.0.1:%u}\n"
		           "tls: {cert_file: \"%s\", key_file: \"%s\"}\n",
		        r->c.port, r->https_port, certs->cert, certs->key);
	else
		fprintf(f, "listen: {http: 127.0.0.1:%u}\n", r->c.port);
	fprintf(f, "http: {max_body_size: 64MiB");
	if (r->max_conns)
		fprintf(f, ", max_connections: %u", r->max_conns);
	fprintf(f, "}\nqueue: {max_size: 16GiB, max_commit_batches: 1024}\n");
	if (r->backend_mode == TLS)
		fprintf(f, "backends: [{name: bench, url: \"https://127.0.0.1:%u\", tls_ca: \"%s\"}]\n",
		        r->c.backend_port, certs->ca);
	else
		fprintf(f, "backends: [{name: bench, url: \"http://127.0.0.1:%u\"}]\n", r->c.backend_port);
	int bad = ferror(f);
	return fclose(f) != 0 || bad ? -1 : 0;
}

/* When relayd's log says it refuses TLS, say what to do about it. */
static void explain_refusal(const struct child *c)
{
	char line[512];
	FILE *f = fopen(c->log, "r");
	if (!f)
		return;
	while (fgets(line, sizeof(line), f))
		if (strstr(line, "not served yet") || strstr(line, "not delivered to yet")) {
			bench_err("this relayd has no TLS listener or no https delivery yet (issue 15): "
			          "use a relayd that has, or --plain-only\n");
			break;
		}
	fclose(f);
}

/* (Re)write r's config and start it; ready when its plain /ping answers. Returns 0, or -1 after a message. */
static int relay_spawn(struct relay *r, const char *path, const struct certs *certs)
{
	char *const argv[] = { (char *)path, (char *)"-c", r->c.conf, geteuid() == 0 ? (char *)"--allow-root" : NULL,
		               NULL };
	int err;
	if (relay_write_config(r, certs) < 0) {
		bench_err("cannot write '%s'\n", r->c.conf);
		return -1;
	}
	if ((err = child_spawn(&r->c, argv))) {
		bench_err("cannot start '%s': %s\n", path, strerror(err));
		return -1;
	}
	fprintf(stderr, "relayd: pid %ld on 127.0.0.1:%u", (long)r->c.pid, r->c.port);
	if (r->https_port)
		fprintf(stderr, " and https 127.0.0.1:%u", r->https_port);
	fprintf(stderr, ", backend %s://127.0.0.1:%u, log %s\n", r->backend_mode == TLS ? "https" : "http",
	        r->c.backend_port, r->c.log);
	if (child_wait_ready(&r->c) < 0) {
		explain_refusal(&r->c);
		return -1;
	}
	return 0;
}

/*
 * Set up a relayd in tmp/NAME on free ports (TLS listener when https),
 * its backend at a closed port, and start it. On failure the caller still
 * calls child_stop.
 */
static int relay_start(struct relay *r, const char *path, const char *tmp, const char *name, int https,
                       enum mode backend_mode, unsigned max_conns, const struct certs *certs)
{
	char file[96];
	*r = (struct relay){ .c = { .name = "relayd" }, .max_conns = max_conns, .backend_mode = backend_mode };
	if (path_join(r->c.dir, tmp, name) < 0)
		goto toolong;
	snprintf(file, sizeof(file), "%s.yaml", name);
	if (path_join(r->c.conf, tmp, file) < 0)
		goto toolong;
	snprintf(file, sizeof(file), "%s.log", name);
	if (path_join(r->c.log, tmp, file) < 0)
		goto toolong;
	uint16_t taken[2];
	if (pick_port(&r->c.port, NULL, 0) < 0)
		return -1;
	taken[0] = r->c.port;
	if (pick_port(&r->c.backend_port, taken, 1) < 0)
		return -1;
	taken[1] = r->c.backend_port;
	if (https && pick_port(&r->https_port, taken, 2) < 0)
		return -1;
	return relay_spawn(r, path, certs);
toolong:
	bench_err("temporary directory path too long\n");
	return -1;
}

/*---- small helpers ----*/

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* The median of v[0..n) (v is not changed); -1 when n is 0. */
static double median_of(const double *v, unsigned n)
{
	double s[MAX_ROUNDS];
	if (n == 0)
		return -1;
	memcpy(s, v, n * sizeof(*v));
	qsort(s, n, sizeof(*s), cmp_double);
	return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

static double min_of(const double *v, unsigned n)
{
	double m = n ? v[0] : -1;
	for (unsigned i = 1; i < n; i++)
		if (v[i] < m)
			m = v[i];
	return m;
}

static double max_of(const double *v, unsigned n)
{
	double m = n ? v[0] : -1;
	for (unsigned i = 1; i < n; i++)
		if (v[i] > m)
			m = v[i];
	return m;
}

/* a / b, or -1 when either is missing. */
static double ratio(double a, double b)
{
	return a > 0 && b > 0 ? a / b : -1;
}

/* What the TLS client negotiated with 127.0.0.1:port ("TLSv1.3, TLS_AES_256_GCM_SHA384, ALPN http/1.1"). */
static void tls_params(uint16_t port, char *out, size_t len)
{
	struct bconn c = BCONN_INIT;
	char err[320];
	if (bconn_open(&c, TLS, port, err, sizeof(err)) < 0) {
		snprintf(out, len, "(%.200s)", err);
		return;
	}
	const unsigned char *alpn = NULL;
	unsigned alen = 0;
	SSL_get0_alpn_selected(c.ssl, &alpn, &alen);
	snprintf(out, len, "%s, %s, ALPN %.*s", SSL_get_version(c.ssl), SSL_get_cipher_name(c.ssl),
	         alen ? (int)alen : 4, alen ? (const char *)alpn : "none");
	bconn_release(&c);
}

/*---- (1) ingest with keep-alive ----*/

struct ingest_row {
	double pps;               /* points/s */
	double p50, p99;          /* ms */
	double cpu_relayd, cpu_clients; /* % of one core */
	double cpu_per_point;           /* relayd's CPU µs per 1000 points: less moved by other load than points/s */
	int ran;
};

static int case_ingest(const struct options *o, struct relay *r, struct ingest_row rows[][NMODES],
                       struct run_errors *e)
{
	uint64_t slice_ns = (uint64_t)o->seconds * NS_PER_S;
	fprintf(stderr, "ingest: %u keep-alive connections, %u-line POSTs, %u s per slice, %u round(s)...\n", o->conns,
	        o->lines, o->seconds, o->rounds);
	for (unsigned k = 0; k < o->rounds; k++)
		for (int m = 0; m < NMODES; m++) {
			struct slice s;
			if (m == TLS && o->plain_only)
				continue;
			struct worker proto = { .job = J_WRITE, .m = (enum mode)m, .lines = o->lines,
				                .port = m == TLS ? r->https_port : r->c.port, .duration_ns = slice_ns,
				                .seq0 = 0 };
			int rc = run_slice(&proto, o->conns, &r->c, &s, e);
			struct ingest_row *x = &rows[k][m];
			if (rc == 0 && s.span_ns) {
				double span = (double)s.span_ns / 1e9;
				x->pps = (double)s.ok * o->lines / span;
				x->p50 = lat_percentile_ms(&s.lat, 50);
				x->p99 = lat_percentile_ms(&s.lat, 99);
				x->cpu_relayd = 100 * s.cpu_server_s / span;
				x->cpu_per_point = s.ok ? 1e9 * s.cpu_server_s / ((double)s.ok * o->lines) : -1;
				x->cpu_clients = 100 * s.cpu_self_s / span;
				x->ran = 1;
				fprintf(stderr, "  round %u, %s: %.0f points/s (p50 %.2f ms)\n", k + 1, mode_name[m], x->pps,
				        x->p50);
			}
			lat_release(&s.lat);
			if (rc < 0)
				return -1;
		}
	return 0;
}

/*---- (2) handshakes ----*/

struct hs_row {
	double cps;              /* connections/s */
	double p50, p99;         /* ms per connection, connect to close */
	double relayd_ms;        /* relayd's CPU ms per connection */
	double cpu_clients;      /* % of one core */
	int ran;
};

enum { HS_SEQ, HS_PAR, NHS };

static int case_handshakes(const struct options *o, struct relay *r, struct hs_row rows[][NHS][NMODES],
                           struct run_errors *e)
{
	uint64_t slice_ns = (uint64_t)o->seconds * NS_PER_S;
	unsigned clients[NHS] = { 1, o->conns };
	fprintf(stderr, "handshakes: a connection, GET /ping, close; 1 and %u clients, %u s per slice...\n", o->conns,
	        o->seconds);
	for (unsigned k = 0; k < o->rounds; k++)
		for (int h = 0; h < NHS; h++)
			for (int m = 0; m < NMODES; m++) {
				struct slice s;
				if (m == TLS && o->plain_only)
					continue;
				struct worker proto = { .job = J_HANDSHAKE, .m = (enum mode)m,
					                .port = m == TLS ? r->https_port : r->c.port,
					                .duration_ns = slice_ns };
				int rc = run_slice(&proto, clients[h], &r->c, &s, e);
				struct hs_row *x = &rows[k][h][m];
				if (rc == 0 && s.span_ns && s.ok) {
					double span = (double)s.span_ns / 1e9;
					x->cps = (double)s.ok / span;
					x->p50 = lat_percentile_ms(&s.lat, 50);
					x->p99 = lat_percentile_ms(&s.lat, 99);
					x->relayd_ms = 1e3 * s.cpu_server_s / (double)s.ok;
					x->cpu_clients = 100 * s.cpu_self_s / span;
					x->ran = 1;
					fprintf(stderr, "  round %u, %u client(s), %s: %.0f connections/s\n", k + 1, clients[h],
					        mode_name[m], x->cps);
				}
				lat_release(&s.lat);
				if (rc < 0)
					return -1;
			}
	return 0;
}

/*---- (3) memory per idle connection ----*/

struct mem_row {
	long rss0, rss1, rss2;   /* KiB: before, with the idle connections, after closing them */
	double kib_per_conn;
	int ran;
};

/* A fresh relayd; one warm-up connection; o->idle connections in mode m, one /ping each, left open. */
static int memory_once(const struct options *o, const char *tmp, enum mode m, unsigned round,
                       const struct certs *certs, struct mem_row *x, struct run_errors *e)
{
	struct relay r;
	struct bconn *cs = xcalloc(o->idle, sizeof(*cs));
	struct http_resp resp;
	char name[64], err[320], ping[160];
	int ret = -1;
	for (unsigned i = 0; i < o->idle; i++)
		cs[i] = (struct bconn)BCONN_INIT;
	snprintf(name, sizeof(name), "relayd-mem%u-%s", round + 1, m == TLS ? "tls" : "plain");
	if (relay_start(&r, o->relayd, tmp, name, !o->plain_only, PLAIN, o->idle + 64, certs) < 0)
		goto out;
	uint16_t port = m == TLS ? r.https_port : r.c.port;
	size_t plen = ping_request(ping, sizeof(ping), port, 0);
	/* The warm-up: whatever relayd sets up at its first connection of the kind is not counted. */
	if (bconn_open(&cs[0], m, port, err, sizeof(err)) < 0 ||
	    bconn_roundtrip(&cs[0], ping, plen, &resp, err, sizeof(err)) < 0)
		goto fail;
	bconn_close(&cs[0]);
	sleep_ns(SETTLE_NS);
	x->rss0 = child_rss_kib(&r.c);
	uint64_t start = now_mono_ns();
	for (unsigned i = 0; i < o->idle; i++) {
		if (now_mono_ns() - start > IDLE_OPEN_MAX_NS) {
			snprintf(err, sizeof(err), "opening %u connections took over %llu s", o->idle,
			         IDLE_OPEN_MAX_NS / NS_PER_S);
			goto fail;
		}
		if (bconn_open(&cs[i], m, port, err, sizeof(err)) < 0 ||
		    bconn_roundtrip(&cs[i], ping, plen, &resp, err, sizeof(err)) < 0)
			goto fail;
		if (resp.status != 204 || resp.close) {
			note_bad(e, &resp);
			bench_err("memory: /ping answered %d%s\n", resp.status, resp.close ? " and closed" : "");
			goto out;
		}
		/* Only the connection is kept: the client's buffer is not relayd's memory, but it is ours. */
		free(cs[i].buf);
		cs[i].buf = NULL;
		cs[i].cap = 0;
	}
	sleep_ns(SETTLE_NS);
	x->rss1 = child_rss_kib(&r.c);
	for (unsigned i = 0; i < o->idle; i++)
		bconn_close(&cs[i]);
	sleep_ns(SETTLE_NS);
	x->rss2 = child_rss_kib(&r.c);
	if (x->rss0 < 0 || x->rss1 < 0) {
		bench_err("memory: cannot read relayd's VmRSS\n");
		goto out;
	}
	x->kib_per_conn = (double)(x->rss1 - x->rss0) / o->idle;
	x->ran = 1;
	fprintf(stderr, "  round %u, %s: VmRSS %ld -> %ld KiB with %u idle connections (%.1f KiB each), %ld KiB after "
	        "closing them\n", round + 1, mode_name[m], x->rss0, x->rss1, o->idle, x->kib_per_conn, x->rss2);
	ret = 0;
	goto out;
fail:
	note_failure(e, err);
	bench_err("memory: %s\n", err);
out:
	for (unsigned i = 0; i < o->idle; i++)
		bconn_release(&cs[i]);
	free(cs);
	if (child_stop(&r.c, 0) < 0)
		ret = -1;
	if (!o->keep && r.c.dir[0])
		remove_tree(r.c.dir);
	return ret;
}

static int case_memory(const struct options *o, const char *tmp, const struct certs *certs,
                       struct mem_row rows[][NMODES], struct run_errors *e)
{
	fprintf(stderr, "memory: %u idle connections, a fresh relayd each time...\n", o->idle);
	for (unsigned k = 0; k < o->rounds; k++)
		for (int m = 0; m < NMODES; m++) {
			if (m == TLS && o->plain_only)
				continue;
			if (memory_once(o, tmp, (enum mode)m, k, certs, &rows[k][m], e) < 0)
				return -1;
		}
	return 0;
}

/*---- (4) delivery ----*/

struct drain_row {
	uint64_t points, stored;
	double pps, span_s;
	double lines_per_post;
	double cpu_relayd, cpu_influxd; /* % of one core */
	double cpu_per_point;           /* relayd's and influxd's CPU s per million points */
	uint64_t retries;
	int ran;
};

/* Poll GET /ping over mode m until 204, at most READY_MAX_NS. Returns 0, or -1 after a message. */
static int influxd_ready(struct child *c, enum mode m)
{
	struct rbuf body = RBUF_INIT;
	uint64_t start = now_mono_ns();
	int rc = -1;
	while (now_mono_ns() - start < READY_MAX_NS) {
		if (!child_alive(c)) {
			char how[96];
			describe_exit(c->wstatus, how, sizeof(how));
			bench_err("influxd %s before answering /ping\n", how);
			child_print_log_tail(c);
			break;
		}
		if (bconn_control(m, c->port, "GET", "/ping", &body) == 204) {
			rc = 0;
			break;
		}
		sleep_ns(10 * 1000000ULL);
	}
	if (rc < 0 && c->pid) {
		bench_err("influxd did not answer /ping (%s) within %llu s\n", mode_name[m], READY_MAX_NS / NS_PER_S);
		child_print_log_tail(c);
	}
	rbuf_release(&body);
	return rc;
}

/* influxd's httpd pointsWrittenOK over mode m. Returns 0 or -1 after a message. */
static int influxd_points(const struct child *c, enum mode m, uint64_t *out)
{
	struct rbuf body = RBUF_INIT;
	int rc = -1;
	if (bconn_control(m, c->port, "GET", "/debug/vars", &body) == 200 && body.data)
		rc = json_u64(strstr(body.data, "\"httpd:"), "pointsWrittenOK", out);
	if (rc < 0)
		bench_err("cannot read pointsWrittenOK from influxd's /debug/vars\n");
	rbuf_release(&body);
	return rc;
}

static int drain_once(const struct options *o, const char *tmp, enum mode m, unsigned round,
                      const struct certs *certs, struct drain_row *d, struct run_errors *e)
{
	struct relay r;
	struct child inf = { .name = "influxd" };
	struct relayd_health h, h1;
	struct slice s = { 0 };
	struct rbuf body = RBUF_INIT;
	char name[64];
	uint64_t requests = (o->backlog + o->lines - 1) / o->lines, pw0, pw1, done;
	int ret = -1;
	const char *mtag = m == TLS ? "tls" : "plain";
	snprintf(name, sizeof(name), "relayd-drain%u-%s", round + 1, mtag);
	if (relay_start(&r, o->relayd, tmp, name, 0, m, 0, certs) < 0)
		goto out;
	struct worker proto = { .job = J_BACKLOG, .m = PLAIN, .port = r.c.port, .lines = o->lines,
		                .seq0 = (uint64_t)round * requests, .n = requests };
	unsigned writers = requests < o->conns ? (unsigned)requests : o->conns;
	if (run_slice(&proto, writers, NULL, &s, e) < 0)
		goto out;
	if (relayd_health_read(r.c.port, &h) < 0) {
		bench_err("cannot read relayd's /health\n");
		goto out;
	}
	d->points = requests * o->lines;
	if (h.pending_points != d->points) {
		bench_err("delivery: %" PRIu64 " points acknowledged but %" PRIu64 " pending\n", d->points,
		          h.pending_points);
		goto out;
	}
	if (child_stop(&r.c, 0) < 0)
		goto out;
	snprintf(name, sizeof(name), "influxd-drain%u-%s", round + 1, mtag);
	if (influxd_launch(&inf, o->influxd, tmp, name, 0, m == TLS ? certs->cert : NULL,
	                   m == TLS ? certs->key : NULL) < 0 || influxd_ready(&inf, m) < 0)
		goto out;
	int status = bconn_control(m, inf.port, "POST", "/query?q=CREATE%20DATABASE%20bench", &body);
	if (status != 200 || !body.data || strstr(body.data, "\"error\"")) {
		bench_err("CREATE DATABASE bench: status %d: %s\n", status, body.data ? body.data : "");
		goto out;
	}
	if (influxd_points(&inf, m, &pw0) < 0)
		goto out;
	r.c.backend_port = inf.port;
	if (r.c.port == inf.port || r.c.port == inf.rpc_port || !port_closed(r.c.port)) {
		uint16_t avoid[2] = { inf.port, inf.rpc_port };
		if (pick_port(&r.c.port, avoid, 2) < 0)
			goto out;
	}
	fprintf(stderr, "  round %u, %s: %" PRIu64 " points queued; relayd restarted with its backend at influxd\n",
	        round + 1, mode_name[m], d->points);
	double icpu0 = child_cpu_s(&inf);
	if (relay_spawn(&r, o->relayd, certs) < 0 || relayd_wait_drained(&r.c, &done, &h1) < 0)
		goto out;
	double rcpu = child_cpu_s(&r.c), icpu1 = child_cpu_s(&inf);
	if (influxd_points(&inf, m, &pw1) < 0)
		goto out;
	uint64_t span = done - r.c.spawn_ns;
	d->stored = pw1 - pw0;
	d->span_s = (double)span / 1e9;
	d->pps = (double)d->points / d->span_s;
	d->lines_per_post = h1.posts ? (double)h1.delivered_points / (double)h1.posts : -1;
	d->cpu_relayd = cpu_pct(0, rcpu, span); /* a fresh process: all its CPU is the drain's */
	d->cpu_influxd = cpu_pct(icpu0, icpu1, span);
	d->cpu_per_point = rcpu >= 0 && icpu0 >= 0 && icpu1 >= 0 ? 1e6 * (rcpu + icpu1 - icpu0) / (double)d->points : -1;
	d->retries = h1.retries;
	if (d->stored != d->points) {
		bench_err("delivery: influxd stored %" PRIu64 " points of %" PRIu64 "\n", d->stored, d->points);
		goto out;
	}
	d->ran = 1;
	fprintf(stderr, "  round %u, %s: %" PRIu64 " points drained in %.2f s: %.0f points/s, %.0f lines/POST\n",
	        round + 1, mode_name[m], d->points, d->span_s, d->pps, d->lines_per_post);
	ret = 0;
out:
	lat_release(&s.lat);
	rbuf_release(&body);
	if (child_stop(&r.c, 0) < 0)
		ret = -1;
	if (!o->keep && r.c.dir[0])
		remove_tree(r.c.dir);
	influxd_finish(&inf, o->keep);
	return ret;
}

static int case_delivery(const struct options *o, const char *tmp, const struct certs *certs,
                         struct drain_row rows[][NMODES], struct run_errors *e)
{
	fprintf(stderr, "delivery: a backlog of %u points (rounded up to %u-line POSTs) drained into influxd...\n",
	        o->backlog, o->lines);
	for (unsigned k = 0; k < o->rounds; k++)
		for (int m = 0; m < NMODES; m++) {
			if (m == TLS && o->plain_only)
				continue;
			if (drain_once(o, tmp, (enum mode)m, k, certs, &rows[k][m], e) < 0)
				return -1;
		}
	return 0;
}

/*---- the tables ----*/

/* A case's rounds against its aim. */
struct verdict {
	double med;      /* the median of the rounds' TLS / plain; -1 none */
	unsigned n, met; /* rounds with both paths; those at or above the aim */
};

/* The load average when each case started, printed under its table. */
static char case_load[NCASES][64];

static void print_case_load(enum bcase k)
{
	printf("load average at the start of this case: %s\n\n", case_load[k]);
}

/* The median line of a case's ratios, filling v. */
static void print_median(const double *rat, unsigned n, double aim, struct verdict *v)
{
	v->n = n;
	v->med = median_of(rat, n);
	v->met = 0;
	for (unsigned i = 0; i < n; i++)
		v->met += rat[i] >= aim;
	if (n)
		printf("\nTLS / plain, median of %u round(s): **%.2f** (range %.2f–%.2f; %u of %u at or above %.2f)\n", n,
		       v->med, min_of(rat, n), max_of(rat, n), v->met, n, aim);
}

/* "0.93" or "–" into out. */
static const char *fmt_ratio(double v, char *out, size_t len)
{
	return fmt_fixed(v, 2, out, len);
}

/* The rounds' TLS / plain ratios of a case into rat[], their count returned. */
static unsigned collect(const double *plain, const double *tls, const int *ran_p, const int *ran_t, unsigned n,
                        size_t stride, double *rat)
{
	unsigned k = 0;
	for (unsigned i = 0; i < n; i++) {
		const double *p = (const double *)((const char *)plain + i * stride);
		const double *t = (const double *)((const char *)tls + i * stride);
		const int *rp = (const int *)((const char *)ran_p + i * stride);
		const int *rt = (const int *)((const char *)ran_t + i * stride);
		if (*rp && *rt && ratio(*t, *p) > 0)
			rat[k++] = ratio(*t, *p);
	}
	return k;
}

static void print_facts(const struct options *o, const char *ca_params, const char *tmp)
{
	char cpu[128], la[64];
	printf("# bench_tls: relayd over TLS against plain HTTP, in one run\n\n");
	print_machine_line();
	printf("- CPU: %s\n", cpu_model(cpu, sizeof(cpu)));
	printf("- load average at the start: %s\n", loadavg(la, sizeof(la)));
	printf("- temporary directory: %s (%s)\n", tmp, fs_name(tmp));
	printf("- relayd: %s\n", o->relayd);
	if (o->run[C_DELIVERY])
		printf("- influxd: %s\n", o->influxd);
	printf("- client and certificates: %s; a private CA; server certificate %s for 127.0.0.1\n",
	       OpenSSL_version(OPENSSL_VERSION), o->key_ec ? "ECDSA P-256" : "RSA 2048");
	if (!o->plain_only && ca_params[0])
		printf("- TLS at relayd's listener: %s\n", ca_params);
	printf("- %u round(s), each case alternating plain and TLS; %u s per timed slice; the clients share the\n"
	       "  CPUs with relayd (and influxd)\n\n", o->rounds, o->seconds);
}

static void print_ingest(const struct options *o, struct ingest_row rows[][NMODES], struct verdict *v)
{
	char a[32], b[32], c[32], d[32], f[32], g[32], h[32];
	double rat[MAX_ROUNDS];
	printf("## Ingest with keep-alive (%u connections, %u-line POSTs)\n\n", o->conns, o->lines);
	print_case_load(C_INGEST);
	printf("| round | path | points/s | TLS / plain | p50 ms | p99 ms | CPU %% relayd | CPU %% clients "
	       "| relayd CPU µs / 1000 points |\n");
	printf("|---:|---|---:|---:|---:|---:|---:|---:|---:|\n");
	for (unsigned k = 0; k < o->rounds; k++)
		for (int m = 0; m < NMODES; m++) {
			const struct ingest_row *x = &rows[k][m];
			if (!x->ran)
				continue;
			printf("| %u | %s | %s | %s | %s | %s | %s | %s | %s |\n", k + 1, mode_name[m],
			       fmt_count(x->pps, a, sizeof(a)),
			       m == TLS ? fmt_ratio(ratio(x->pps, rows[k][PLAIN].ran ? rows[k][PLAIN].pps : -1), b, sizeof(b))
			                : "",
			       fmt_fixed(x->p50, 2, c, sizeof(c)), fmt_fixed(x->p99, 2, d, sizeof(d)),
			       fmt_fixed(x->cpu_relayd, 0, f, sizeof(f)), fmt_fixed(x->cpu_clients, 0, g, sizeof(g)),
			       fmt_fixed(x->cpu_per_point, 0, h, sizeof(h)));
		}
	unsigned nc = collect(&rows[0][PLAIN].cpu_per_point, &rows[0][TLS].cpu_per_point, &rows[0][PLAIN].ran,
	                      &rows[0][TLS].ran, o->rounds, sizeof(rows[0]), rat);
	double cpu_med = median_of(rat, nc);
	unsigned n = collect(&rows[0][PLAIN].pps, &rows[0][TLS].pps, &rows[0][PLAIN].ran, &rows[0][TLS].ran, o->rounds,
	                     sizeof(rows[0]), rat);
	print_median(rat, n, AIM_INGEST, v);
	if (nc)
		printf("relayd's CPU per point, TLS / plain: %.2f (median of %u)\n", cpu_med, nc);
	printf("\npoints/s: acknowledged (204) points / seconds of the slice. The connections (and their\n"
	       "handshakes) are opened before the clock starts; latency is from the send to the last byte of the "
	       "answer.\nCPU per point is what relayd spent, less moved than points/s by other work on the machine.\n\n");
}

static void print_handshakes(const struct options *o, struct hs_row rows[][NHS][NMODES])
{
	char a[32], b[32], c[32], d[32], f[32], g[32];
	unsigned clients[NHS] = { 1, o->conns };
	printf("## Handshakes (a new connection, GET /ping with Connection: close, close)\n\n");
	print_case_load(C_HANDSHAKES);
	printf("| clients | round | path | connections/s | TLS / plain | p50 ms | p99 ms | relayd CPU ms / connection "
	       "| CPU %% clients |\n");
	printf("|---:|---:|---|---:|---:|---:|---:|---:|---:|\n");
	for (int h = 0; h < NHS; h++)
		for (unsigned k = 0; k < o->rounds; k++)
			for (int m = 0; m < NMODES; m++) {
				const struct hs_row *x = &rows[k][h][m];
				if (!x->ran)
					continue;
				printf("| %u | %u | %s | %s | %s | %s | %s | %s | %s |\n", clients[h], k + 1, mode_name[m],
				       fmt_count(x->cps, a, sizeof(a)),
				       m == TLS ? fmt_ratio(ratio(x->cps, rows[k][h][PLAIN].ran ? rows[k][h][PLAIN].cps : -1), b,
				                            sizeof(b))
				                : "",
				       fmt_fixed(x->p50, 3, c, sizeof(c)), fmt_fixed(x->p99, 3, d, sizeof(d)),
				       fmt_fixed(x->relayd_ms, 3, f, sizeof(f)), fmt_fixed(x->cpu_clients, 0, g, sizeof(g)));
			}
	printf("\n");
	for (int h = 0; h < NHS; h++) {
		double cps[NMODES][MAX_ROUNDS], rat[MAX_ROUNDS];
		unsigned n[NMODES] = { 0, 0 };
		for (unsigned k = 0; k < o->rounds; k++)
			for (int m = 0; m < NMODES; m++)
				if (rows[k][h][m].ran)
					cps[m][n[m]++] = rows[k][h][m].cps;
		unsigned nr = collect(&rows[0][h][PLAIN].cps, &rows[0][h][TLS].cps, &rows[0][h][PLAIN].ran,
		                      &rows[0][h][TLS].ran, o->rounds, sizeof(rows[0]), rat);
		printf("- %u client(s): median %s TLS connections/s against %s plain", clients[h],
		       fmt_count(median_of(cps[TLS], n[TLS]), a, sizeof(a)),
		       fmt_count(median_of(cps[PLAIN], n[PLAIN]), b, sizeof(b)));
		if (nr)
			printf(" (TLS / plain %.2f, median of %u)", median_of(rat, nr), nr);
		printf("\n");
	}
	printf("\nEvery TLS connection is a full handshake (the client keeps no sessions) and verifies the\n"
	       "certificate; the client's handshake work shares the CPUs with relayd's. No aim: measured.\n\n");
}

static void print_memory(const struct options *o, struct mem_row rows[][NMODES], double *tls_kib,
                         double *plain_kib)
{
	char a[32], b[32];
	double per[NMODES][MAX_ROUNDS], extra[MAX_ROUNDS];
	unsigned n[NMODES] = { 0, 0 }, ne = 0;
	printf("## Memory per idle connection (%u idle connections, a fresh relayd each time)\n\n", o->idle);
	print_case_load(C_MEMORY);
	printf("| round | path | VmRSS before KiB | with them KiB | KiB / connection | after closing them KiB |\n");
	printf("|---:|---|---:|---:|---:|---:|\n");
	for (unsigned k = 0; k < o->rounds; k++) {
		for (int m = 0; m < NMODES; m++) {
			const struct mem_row *x = &rows[k][m];
			if (!x->ran)
				continue;
			per[m][n[m]++] = x->kib_per_conn;
			printf("| %u | %s | %ld | %ld | %s | %s |\n", k + 1, mode_name[m], x->rss0, x->rss1,
			       fmt_fixed(x->kib_per_conn, 1, a, sizeof(a)), fmt_fixed((double)x->rss2, 0, b, sizeof(b)));
		}
		if (rows[k][PLAIN].ran && rows[k][TLS].ran)
			extra[ne++] = rows[k][TLS].kib_per_conn - rows[k][PLAIN].kib_per_conn;
	}
	*tls_kib = median_of(per[TLS], n[TLS]);
	*plain_kib = median_of(per[PLAIN], n[PLAIN]);
	printf("\nmedian KiB per idle connection: plain %s", fmt_fixed(*plain_kib, 1, a, sizeof(a)));
	if (n[TLS])
		printf(", TLS %s", fmt_fixed(*tls_kib, 1, b, sizeof(b)));
	if (ne)
		printf("; TLS − plain %.1f KiB (median of %u)", median_of(extra, ne), ne);
	printf("\n\nKiB / connection = (VmRSS with them − VmRSS before) / %u, after one warm-up connection of the\n"
	       "same kind and %.1f s of quiet; each connection was handshaken and answered one /ping.\n\n", o->idle,
	       (double)SETTLE_NS / 1e9);
}

static void print_delivery(const struct options *o, struct drain_row rows[][NMODES], struct verdict *v)
{
	char a[32], b[32], c[32], f[32], g[32], h[32], i[32];
	double rat[MAX_ROUNDS];
	printf("## Delivery: a backlog of %s points drained into influxd (plain HTTP against HTTPS)\n\n",
	       fmt_count((double)((o->backlog + o->lines - 1) / o->lines * o->lines), a, sizeof(a)));
	print_case_load(C_DELIVERY);
	printf("| round | backend | points | seconds | points/s | TLS / plain | lines / POST | retries "
	       "| CPU %% relayd | CPU %% influxd | CPU s / M points |\n");
	printf("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
	for (unsigned k = 0; k < o->rounds; k++)
		for (int m = 0; m < NMODES; m++) {
			const struct drain_row *x = &rows[k][m];
			if (!x->ran)
				continue;
			printf("| %u | %s | %s | %.2f | %s | %s | %s | %" PRIu64 " | %s | %s | %s |\n", k + 1,
			       m == TLS ? "https://" : "http://", fmt_count((double)x->points, a, sizeof(a)), x->span_s,
			       fmt_count(x->pps, b, sizeof(b)),
			       m == TLS ? fmt_ratio(ratio(x->pps, rows[k][PLAIN].ran ? rows[k][PLAIN].pps : -1), c, sizeof(c))
			                : "",
			       fmt_fixed(x->lines_per_post, 0, f, sizeof(f)), x->retries,
			       fmt_fixed(x->cpu_relayd, 0, g, sizeof(g)), fmt_fixed(x->cpu_influxd, 0, i, sizeof(i)),
			       fmt_fixed(x->cpu_per_point, 2, h, sizeof(h)));
		}
	unsigned nc = collect(&rows[0][PLAIN].cpu_per_point, &rows[0][TLS].cpu_per_point, &rows[0][PLAIN].ran,
	                      &rows[0][TLS].ran, o->rounds, sizeof(rows[0]), rat);
	double cpu_med = median_of(rat, nc);
	unsigned n = collect(&rows[0][PLAIN].pps, &rows[0][TLS].pps, &rows[0][PLAIN].ran, &rows[0][TLS].ran, o->rounds,
	                     sizeof(rows[0]), rat);
	print_median(rat, n, AIM_DELIVERY, v);
	if (nc)
		printf("relayd's and influxd's CPU per point, TLS / plain: %.2f (median of %u)\n", cpu_med, nc);
	printf("\nseconds: relayd's restart with its backend at a fresh influxd until nothing is pending\n"
	       "(/health polled every 20 ms); influxd stored every point (its pointsWrittenOK). https://: influxd with\n"
	       "https-enabled and the same certificate, relayd's backend with tls_ca: the private CA.\n"
	       "CPU s / M points: relayd's and influxd's CPU over the drain per million points (both ends of TLS).\n\n");
}

/* "- WHAT at ≥ AIM of plain: met (93.1 %, median of 3 rounds; 2 of 3 at or above)" or "not measured". */
static void print_verdict(const char *what, double aim, const struct verdict *v)
{
	if (v->n == 0 || v->med <= 0) {
		printf("- %s at ≥ %.0f %% of plain: not measured\n", what, 100 * aim);
		return;
	}
	printf("- %s at ≥ %.0f %% of plain: %s (%.1f %%, the median of %u round(s); %u of %u at or above)\n", what,
	       100 * aim, v->med >= aim ? "met" : "NOT met", 100 * v->med, v->n, v->met, v->n);
}

/*---- the self-test ----*/

/*
 * The client against `openssl s_server -www` with the same certificate:
 * verified handshakes and whole answers; an untrusted CA and a certificate
 * for another address refused. Returns 0 when all held.
 */
static int selftest(const struct options *o, const char *tmp, const struct certs *certs)
{
	struct child srv = { .name = "openssl s_server" };
	char accept[32], err[320], req[128];
	int failed = 0, n = 20, err_no;
	if (path_join(srv.log, tmp, "s_server.log") < 0 || pick_port(&srv.port, NULL, 0) < 0)
		return -1;
	snprintf(accept, sizeof(accept), "127.0.0.1:%u", srv.port);
	char *const argv[] = { o->openssl, (char *)"s_server", (char *)"-accept", accept, (char *)"-cert",
		               (char *)certs->cert, (char *)"-key", (char *)certs->key, (char *)"-www", NULL };
	if ((err_no = child_spawn(&srv, argv))) {
		bench_err("cannot start openssl s_server: %s\n", strerror(err_no));
		return -1;
	}
	uint64_t start = now_mono_ns();
	while (port_closed(srv.port) && child_alive(&srv) && now_mono_ns() - start < READY_MAX_NS)
		sleep_ns(10 * 1000000ULL);
	if (port_closed(srv.port)) {
		bench_err("openssl s_server does not listen at %s\n", accept);
		child_print_log_tail(&srv);
		child_stop(&srv, 1);
		return -1;
	}
	int len = snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nHost: 127.0.0.1:%u\r\n\r\n", srv.port);
	uint64_t t0 = now_mono_ns();
	for (int i = 0; i < n && !failed; i++) {
		struct bconn c = BCONN_INIT;
		struct http_resp r;
		if (bconn_open(&c, TLS, srv.port, err, sizeof(err)) < 0 ||
		    bconn_roundtrip(&c, req, (size_t)len, &r, err, sizeof(err)) < 0) {
			printf("- FAILED: handshake and GET / %d: %s\n", i + 1, err);
			failed = 1;
		} else if (r.status != 200 || r.body_len == 0) {
			printf("- FAILED: GET / answered %d with %zu bytes\n", r.status, r.body_len);
			failed = 1;
		}
		bconn_release(&c);
	}
	if (!failed) {
		char params[160];
		tls_params(srv.port, params, sizeof(params));
		printf("- ok: %d verified handshakes and GET / answered 200 (%.2f ms each, with s_server's answer), %s\n", n,
		       (double)(now_mono_ns() - t0) / 1e6 / n, params);
	}
	/* Trusting another CA: the handshake must fail verification. */
	SSL_CTX *other = client_ctx_new(certs->other_ca);
	struct bconn c = BCONN_INIT;
	if (!other) {
		failed = 1;
	} else if (bconn_open_ex(&c, other, "127.0.0.1", srv.port, err, sizeof(err)) == 0) {
		printf("- FAILED: a handshake trusting another CA succeeded\n");
		failed = 1;
	} else {
		printf("- ok: trusting another CA is refused (%s)\n", err);
	}
	bconn_release(&c);
	SSL_CTX_free(other);
	/* The certificate names 127.0.0.1, not 127.0.0.2: the handshake must fail. */
	if (bconn_open_ex(&c, client_ctx, "127.0.0.2", srv.port, err, sizeof(err)) == 0) {
		printf("- FAILED: a certificate for 127.0.0.1 was accepted for 127.0.0.2\n");
		failed = 1;
	} else {
		printf("- ok: the certificate is refused for another address (%s)\n", err);
	}
	bconn_release(&c);
	child_stop(&srv, 1); /* s_server ends on SIGTERM with status 0 or by the signal: either is fine */
	return failed ? -1 : 0;
}

/*---- main ----*/

static void on_sigpipe(int sig)
{
	(void)sig; /* a write to a closed socket fails with EPIPE instead of ending the run */
}

int main(int argc, char **argv)
{
	struct options o;
	struct certs certs;
	struct relay door = { .c = { .name = "relayd" } };
	struct run_errors errs = { 0 };
	struct ingest_row ingest[MAX_ROUNDS][NMODES];
	struct hs_row hs[MAX_ROUNDS][NHS][NMODES];
	struct mem_row mem[MAX_ROUNDS][NMODES];
	struct drain_row drain[MAX_ROUNDS][NMODES];
	char tmp[PATH_MAX], cdir[PATH_MAX], la[64], params[256] = "";
	struct verdict vi = { .med = -1 }, vd = { .med = -1 };
	double tls_kib = -1, plain_kib = -1;
	int failed = 1, rc, ran[NCASES] = { 0 };
	struct sigaction sa = { .sa_handler = on_sigpipe };

	bench_name = "bench_tls";
	memset(ingest, 0, sizeof(ingest));
	memset(hs, 0, sizeof(hs));
	memset(mem, 0, sizeof(mem));
	memset(drain, 0, sizeof(drain));
	if ((rc = options_parse(argc, argv, &o)))
		return rc;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGPIPE, &sa, NULL);
	if (!o.selftest && access(o.relayd, X_OK) < 0) {
		bench_err("cannot run relayd '%s': %s (use --relayd PATH)\n", o.relayd, strerror(errno));
		goto early;
	}
	if (o.run[C_DELIVERY] && !o.selftest && access(o.influxd, X_OK) < 0) {
		bench_err("cannot run influxd '%s': %s (use --influxd PATH)\n", o.influxd, strerror(errno));
		goto early;
	}
	if (make_tmpdir(tmp, sizeof(tmp)) < 0)
		goto early;
	if (strpbrk(tmp, "\"\\")) {
		bench_err("'%s' cannot go into a config file\n", tmp);
		goto out;
	}
	if (path_join(cdir, tmp, "certs") < 0 || mkdir(cdir, 0700) < 0) {
		bench_err("cannot create the certificates' directory under '%s'\n", tmp);
		goto out;
	}
	fprintf(stderr, "certificates: a private CA and a server certificate for 127.0.0.1 (%s) in %s...\n",
	        o.key_ec ? "ECDSA P-256" : "RSA 2048", cdir);
	if (make_certs(o.openssl, cdir, o.key_ec, &certs) < 0 || !(client_ctx = client_ctx_new(certs.ca)))
		goto out;

	if (o.selftest) {
		printf("# bench_tls --selftest: the TLS client against openssl s_server -www\n\n");
		failed = selftest(&o, tmp, &certs) < 0;
		goto out;
	}

	if (o.run[C_INGEST] || o.run[C_HANDSHAKES]) {
		if (relay_start(&door, o.relayd, tmp, "relayd", !o.plain_only, PLAIN, 0, &certs) < 0)
			goto out;
		if (!o.plain_only)
			tls_params(door.https_port, params, sizeof(params));
	}
	if (!o.plain_only && !params[0] && o.run[C_MEMORY]) {
		/* The memory case without the door: ask a short-lived relayd what its listener speaks. */
		struct relay probe;
		if (relay_start(&probe, o.relayd, tmp, "relayd-probe", 1, PLAIN, 0, &certs) == 0)
			tls_params(probe.https_port, params, sizeof(params));
		int bad = child_stop(&probe.c, 0) < 0;
		if (!o.keep && probe.c.dir[0])
			remove_tree(probe.c.dir);
		if (bad || !params[0])
			goto out;
	}
	print_facts(&o, params, tmp);
	fflush(stdout);

	if (o.run[C_INGEST]) {
		loadavg(case_load[C_INGEST], sizeof(case_load[C_INGEST]));
		if (case_ingest(&o, &door, ingest, &errs) < 0)
			goto report;
		ran[C_INGEST] = 1;
	}
	if (o.run[C_HANDSHAKES]) {
		loadavg(case_load[C_HANDSHAKES], sizeof(case_load[C_HANDSHAKES]));
		if (case_handshakes(&o, &door, hs, &errs) < 0)
			goto report;
		ran[C_HANDSHAKES] = 1;
	}
	if (child_stop(&door.c, 0) < 0)
		goto report;
	if (o.run[C_MEMORY]) {
		loadavg(case_load[C_MEMORY], sizeof(case_load[C_MEMORY]));
		if (case_memory(&o, tmp, &certs, mem, &errs) < 0)
			goto report;
		ran[C_MEMORY] = 1;
	}
	if (o.run[C_DELIVERY]) {
		loadavg(case_load[C_DELIVERY], sizeof(case_load[C_DELIVERY]));
		if (case_delivery(&o, tmp, &certs, drain, &errs) < 0)
			goto report;
		ran[C_DELIVERY] = 1;
	}
	failed = 0;

report:
	if (ran[C_INGEST])
		print_ingest(&o, ingest, &vi);
	if (ran[C_HANDSHAKES])
		print_handshakes(&o, hs);
	if (ran[C_MEMORY])
		print_memory(&o, mem, &tls_kib, &plain_kib);
	if (ran[C_DELIVERY])
		print_delivery(&o, drain, &vd);
	printf("## Verdict\n\n");
	print_verdict("delivery over TLS", AIM_DELIVERY, &vd);
	print_verdict("ingest over TLS with keep-alive", AIM_INGEST, &vi);
	if (ran[C_HANDSHAKES] && !o.plain_only)
		printf("- handshakes per second: measured (no aim)\n");
	if (tls_kib >= 0)
		printf("- memory per idle TLS connection: %.1f KiB (plain %.1f KiB), measured (no aim)\n", tls_kib,
		       plain_kib);
	printf("\nload average at the end: %s\n", loadavg(la, sizeof(la)));
	if (errs.bad_status)
		printf("\nERROR: %" PRIu64 " answers other than 204; the first was %d with body:\n%s\n", errs.bad_status,
		       errs.first_status, errs.first_body[0] ? errs.first_body : "(empty)");
	if (errs.transport)
		printf("\nERROR: %" PRIu64 " clients stopped on a transport error; the first: %s\n", errs.transport,
		       errs.first_failure);
	if (errs.bad_status || errs.transport)
		failed = 1;
out:
	if (child_stop(&door.c, 0) < 0)
		failed = 1;
	if (o.keep)
		printf("\nkept %s\n", tmp);
	else
		remove_tree(tmp);
	SSL_CTX_free(client_ctx);
early:
	free(o.influxd);
	free(o.openssl);
	if (fflush(stdout) != 0 || ferror(stdout))
		failed = 1;
	if (failed)
		bench_err("FAILED\n");
	return failed;
}
