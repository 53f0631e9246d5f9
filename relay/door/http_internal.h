/*
 * http_internal: what the files of the HTTP door share, and nothing
 * outside them includes. The door is
 *   http_listen.c   the listeners (plain and TLS), accepting, the TLS
 *                   context and its reload, the server's start and close;
 *   http_server.c   connections on relay/net streams, the read loop,
 *                   timers, answers and routing: a connection's life;
 *   http_request.c  one request's life: llhttp's callbacks, the buffers a
 *                   request holds and the server-wide budget they count in,
 *                   its release;
 *   http_write.c    the write endpoints: parameters, line validation, the
 *                   commit and its answer;
 *   http_query.c    /query and /api/v2/query: statement classes, the
 *                   backend's choice (relay/query/router.h), the answer
 *                   streamed from it (relay/query/upstream.h), or the
 *                   statement queued for every backend;
 *   http_auth.c     inbound credentials (http_auth.h): reading them and
 *                   checking them against the configured users and tokens;
 *   http_metrics.c  what /metrics counts of the door (answers by endpoint
 *                   and status, write refusals by reason, queries) and
 *                   writes; the routes /metrics and /health/backends/NAME.
 * docs/architecture.md ("The ack path") draws how a request goes through.
 * Functions here abort on allocation failure (xmalloc) and return no
 * errors unless they say so: a request's problems become its answer.
 */
#ifndef RELAY_HTTP_INTERNAL_H
#define RELAY_HTTP_INTERNAL_H

#include <llhttp.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>
#include <zlib.h>

#include "relay/door/http_auth.h"
#include "relay/door/http_server.h"
#include "relay/net/stream.h"
#include "relay/base/lineproto.h"
#include "relay/base/json.h"
#include "relay/base/log.h"
#include "relay/base/metrics.h"
#include "relay/base/util.h"
#include "relay/query/upstream.h"

#define LINGER_MS 2000
#define MAX_HEADERS 100
/* Answers queued on a connection beyond which its requests are no longer
 * parsed (a client that pipelines without reading would otherwise make us
 * hold every answer); parsing resumes once they are down to OUT_LOW. */
#define OUT_HIGH (64 * 1024)
#define OUT_LOW (16 * 1024)
/* What zlib allocates for one inflate stream (its state and a 32 KiB
 * window): counted in the buffer budget like a body. */
#define ZSTREAM_BYTES (48 * 1024)

/* T_QWAIT: a query waits for its backend to deliver the writes acknowledged
 * before it (http_query.c); the timer polls after 1 ms, then twice as long
 * each time up to QWAIT_POLL_MAX_MS: a few polls when the backend keeps up,
 * at most about 30 in a second when it does not, whatever the number of
 * waiting queries (each poll reads every query backend's queue figures). */
enum timer_mode { T_NONE, T_HEADER, T_BODY, T_IDLE, T_LINGER, T_QWAIT };
#define QWAIT_POLL_MAX_MS 50

struct http_server;

/*
 * One request: what llhttp delivered of it, what the door kept of its body
 * and what it decided. A connection parses and answers one request at a
 * time, so it embeds the one it is on (as h2o's HTTP/1 connection embeds its
 * h2o_req_t). Every field is freed by http_request_release(), and only
 * there, which also leaves the struct zeroed (API_NONE, LP_PRECISION_NS)
 * for the next request. Buffers given back before the answer (a refused
 * body, the inflate state past the body, the raw body once stamped) are
 * returned to the budget where they are dropped, but the struct is only
 * ever emptied in that one place.
 */
struct request {
	/* request line and headers */
	struct rbuf url;
	struct rbuf hname, hval; /* the header field being read */
	struct rbuf te;          /* every Transfer-Encoding value, joined by ", " */
	size_t header_bytes;
	unsigned nheaders;
	int in_value;
	char *authorization;
	char *content_encoding;
	char *content_type;
	struct rbuf fwd;         /* headers a query passes on: "Name: value\r\n" each */
	int query;               /* QUERY_*: /query or /api/v2/query */
	int64_t query_arrival_ns; /* when the query was complete: the writes acknowledged before it
	                           * are what it must see */
	int query_waiting;        /* waiting for them to be delivered (T_QWAIT) */
	uint64_t query_poll_ms;   /* the wait's next poll interval */
	int expect_continue;
	int api;                 /* API_*: the endpoint, set once the headers are in */

	/* the body */
	int keep_body;           /* an accepted write's: buffer (and inflate) it */
	struct rbuf body;
	z_stream z;              /* gzip body being inflated */
	int gzip;                /* 1: z is initialised; 2: its stream ended */
	uint64_t body_received;  /* body bytes as sent (before inflating) */

	/* the answer, when decided while parsing */
	int err_status;          /* answered at completion */
	char err_msg[300];
	int fatal;               /* answered at once, then close */

	/* a write: its parameters and credentials (the batch points into
	 * them until its commit returns), its stamped lines, its commit */
	enum lp_precision prec;
	char *db, *rp, *org;
	struct http_credentials cred;
	struct rbuf lp;
	struct ingest_request ireq;
	uint32_t nstmts;         /* statements of a queued query, answered one result each */

	/* for /metrics: why a write is refused when its status alone does
	 * not say (REFUSAL_* + 1; 0 = by the status), its points once its
	 * lines are validated, and when a query was complete */
	int refusal;
	uint32_t points;
	uint64_t query_start_ns;
};

struct conn {
	struct net_stream *ns;  /* plain or TLS (relay/net); NULL in the fuzz build */
	uv_timer_t timer;
	llhttp_t parser;
	struct http_server *srv;
	struct conn *prev, *next;
	int handles;          /* the timer and the stream until their close callbacks; free when 0
	                       * and refs == 0 */
	int refs;             /* held by ingest while a write commits */
	int writes;           /* net_stream_write requests in flight */
	unsigned closing : 1;   /* handles being closed */
	unsigned close_after : 1; /* close once the queued writes are done */
	unsigned lingering : 1;
	unsigned waiting : 1;   /* a request is with ingest */
	unsigned reading : 1;
	unsigned fake : 1;      /* fuzz build: no socket */
	unsigned out_blocked : 1; /* parsing stopped until out_queued drains to OUT_LOW */
	unsigned uncounted : 1; /* its one answer is no request's (too many connections) */
	unsigned tls : 1;       /* came in on the TLS listener */
	unsigned handshaking : 1; /* counted in srv->handshakes until the handshake ends */
	unsigned cert_ok : 1;   /* TLS with a verified client certificate (mTLS); cert_cn is its CN */
	unsigned cert_logged : 1; /* its CN was logged on its first use as credentials */
	unsigned failed : 1;    /* the stream failed (relay/net): nothing more is read */
	unsigned got_bytes : 1; /* a byte arrived: the first ones are checked for a TLS handshake */
	size_t out_queued;      /* answer bytes handed to net_stream_write and not yet written */
	uint64_t held;          /* bytes of the server's buffer budget this connection holds
	                         * (conn_held() when last accounted) */
	enum timer_mode tmode;
	char peer[64];
	char cert_cn[65];       /* the client certificate's subject CN (at most 64, RFC 5280) */
	struct query_proxy *qp; /* a query being passed through (http_query.c); NULL otherwise */

	struct request req;     /* the request being parsed, answered or committed */

	/* unparsed bytes of later requests, kept while one is being answered */
	char *pend;
	size_t pend_len;
};

/* The endpoints /metrics counts answers of (label endpoint). */
enum http_endpoint { EP_WRITE, EP_V2_WRITE, EP_QUERY, EP_V2_QUERY, EP_PING, EP_HEALTH, EP_METRICS, EP_OTHER, EP_COUNT };
/* Why a write was refused (label reason). */
enum http_refusal {
	REFUSAL_BAD_REQUEST, REFUSAL_UNAUTHORIZED, REFUSAL_TOO_LARGE, REFUSAL_TIMEOUT, REFUSAL_QUEUE_FULL,
	REFUSAL_OVERLOADED, REFUSAL_STORAGE_ERROR, REFUSAL_SHUTTING_DOWN, REFUSAL_COUNT
};
/* The statuses counted by their number (http_metrics.c lists them); any
 * other (a backend's, passed through) is counted as code="other". */
#define HTTP_NCODES 24

/* The door's counters for /metrics beyond struct http_server_stats. */
struct http_counts {
	uint64_t answers[EP_COUNT][HTTP_NCODES + 1];
	uint64_t refused[REFUSAL_COUNT];
	uint64_t refused_points[REFUSAL_COUNT];
	uint64_t bytes_accepted;   /* line protocol of the points committed */
	uint64_t query_behind;     /* answered with X-Relayd-Behind */
	struct relay_histogram query_seconds;
	/* queries sent to each query backend, by name: at most the backends
	 * a query can go to (entries of names no longer among them are
	 * dropped when room is needed) */
	struct {
		char name[WAL_NAME_MAX + 1];
		uint64_t n;
	} proxied[RELAY_MAX_BACKENDS];
	size_t nproxied;
};

struct http_server {
	uv_loop_t *loop;
	uv_tcp_t listener;      /* listen.http, when on */
	uv_tcp_t tls_listener;  /* listen.https, when set */
	int has_plain, has_tls;
	const struct relay_config *cfg;
	struct ingest *ing;
	struct conn *conns;
	int port, tls_port;
	int closing;
	int listeners_open;     /* listeners not yet closed */
	/* The TLS listener's context: one reference, owned here; every
	 * connection holds its own (relay/net), so a reload swaps this one
	 * and open connections keep the one they began with. */
	struct net_tls_ctx *tls;
	uint32_t handshakes;    /* connections in a TLS handshake now (tls.max_handshakes) */
	struct relay_ratelimit tls_log;      /* plain HTTP on the TLS port, one line per 10 s */
	struct relay_ratelimit tls_on_plain_log; /* TLS on the plain port, one line per 10 s */
	struct relay_ratelimit tls_fail_log; /* failed handshakes, one line per 10 s */
	void (*done)(void *);
	void *done_arg;
	struct http_server_stats stats;
	http_health_fn health_fn;
	void *health_arg;
	http_metrics_fn metrics_fn;
	void *metrics_arg;
	http_backend_health_fn backend_health_fn;
	void *backend_health_arg;
	struct http_counts counts;
	/* Bytes of request bodies held across all connections: received,
	 * inflated and stamped, with inflate states and pipelined input.
	 * Always the sum of conn_held() over the connections; capped by
	 * http.max_buffered_size (a write beyond gets 503). */
	uint64_t buffered;
	struct relay_ratelimit refusal_log; /* 503s, one line per 10 s */
	struct relay_ratelimit auth_log;    /* 401s and 403s, one line per 10 s */
	/* the query pass-through */
	http_query_targets_fn targets_fn;
	void *targets_arg;
	struct upstream *probe;          /* the version probe in flight, or NULL */
	struct upstream_pool *pool;      /* idle connections to the query backends */
	char backend_version[64];        /* X-Influxdb-Version learnt from a backend; "" = not yet */
	char backend_build[32];          /* X-Influxdb-Build likewise */
	struct relay_ratelimit query_log; /* query failures, one line per 10 s */
};

/* The endpoint of a request. Errors on /api/v2/write are answered in
 * InfluxDB 2's form ({"code","message"}) so v2 clients show the message. */
enum { API_NONE = 0, API_V1, API_V2 };
/* The query endpoints (request.query). */
enum { QUERY_NONE = 0, QUERY_V1, QUERY_FLUX };
struct query_proxy;

/*---- http_server.c ----*/

/* A new connection of s, its parser set up, nothing else: no stream, no
 * timer (http_listen.c adds them; the fuzz build has neither). */
struct conn *http_conn_new(struct http_server *s);
/* Close c: its timer and stream; it is freed once nothing holds it
 * (http_maybe_free). A query passed through is cancelled; a handshake in
 * progress stops counting. Idempotent. */
void http_conn_close(struct conn *c);
/* What a connection's stream calls (reads, end, failure, handshake done);
 * the stream's data is the struct conn. */
extern const struct net_stream_callbacks http_conn_callbacks;
/* Free s (its TLS context reference too), then run its done callback:
 * once its listeners are closed and its last connection freed. */
void http_server_free(struct http_server *s);

/* Queue buf[0..len), a whole answer, on c. Takes buf (malloc'd) in every
 * case: freed once written, or at once when c has no socket or is closing.
 * A failed write closes c. */
void http_send_raw(struct conn *c, char *buf, size_t len);
/* Queue an answer with status, copying body[0..body_len) (body may be NULL
 * when body_len is 0). extra is extra header lines, each ending in "\r\n",
 * or NULL. With close, the connection ends once it is written. head_only:
 * a HEAD request's answer (headers only). The one place relayd's own
 * answers get their head: counted there (http_count_answer). */
void http_respond(struct conn *c, int status, const char *extra, const char *body, size_t body_len, int close,
                  int head_only);
/* http_respond with a body of Content-Type ctype (sent when body_len is
 * not 0; http_respond's is application/json). */
void http_respond_as(struct conn *c, int status, const char *ctype, const char *extra, const char *body,
                     size_t body_len, int close, int head_only);
/* An error answer: msg as JSON in the endpoint's API form (v1 or v2, from
 * c->req.api), then as http_respond(). msg and extra are copied. */
void http_respond_error(struct conn *c, int status, const char *msg, const char *extra, int close);
/* The reason phrase of status ("Not Found"). */
const char *http_status_text(int status);
/* The version headers every answer of relayd's own carries, appended to
 * out: X-Influxdb-Version and X-Influxdb-Build (the backend's, once
 * known), X-Relayd-Version. */
void http_version_headers(const struct http_server *s, struct rbuf *out);
/* An answer sent in pieces (a proxied query) is complete: with close the
 * connection ends once it is written, else the next request is read. */
void http_answer_end(struct conn *c, int close);
/* Free c once nothing holds it (open handles, a commit, writes in flight),
 * releasing its request and read-ahead bytes; the server too when it is
 * closing, its listener is closed and c was its last connection (then its
 * done callback runs). Otherwise does nothing: the last holder calls it
 * again. */
void http_maybe_free(struct conn *c);
/* Run c's one timer for mode m with its configured timeout (T_NONE stops
 * it). Ignored on a socket-less, closing or lingering connection. */
void http_set_timer(struct conn *c, enum timer_mode m);
/* After an asynchronous answer, or when queued answers drained: parse
 * what was already read, then read more. Does nothing once c is closing or
 * is to close after its queued answers. */
void http_conn_continue(struct conn *c);

/*---- http_request.c ----*/

/* Set up c->parser for requests, with this file's callbacks and c as the
 * parser's data. Allocates nothing; cannot fail. */
void http_parser_init(struct conn *c);
/* Decide an error that is answered once the request is complete (the body
 * is read and dropped, so the connection stays usable). The first wins;
 * the message is cut to fit c->req.err_msg. */
void http_set_error(struct conn *c, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Account for a change of c's buffers in the server's budget, so that
 * srv->buffered stays the sum of what every connection holds. Call after
 * every change of a buffer the budget counts. */
void http_budget_sync(struct conn *c);
/* Refuse the write for the budget (status 413 or 503, through
 * http_set_error) and drop its body, giving the budget back now. */
void http_budget_refuse(struct conn *c, int status);
/* Free everything c->req holds and zero it, giving its share of the budget
 * back (http_budget_sync). Called once the request's answer is queued (for
 * a write, once its commit returned: the batch points into c->req), when a
 * request begins, and when c is freed; never while c->waiting. Idempotent. */
void http_request_release(struct conn *c);
/* Find query parameter name in q (q without '?'); returns a decoded copy
 * (the caller frees it), NULL if absent. *bad gets 1 ORed in for a
 * malformed escape (and NULL is returned), 2 for a NUL byte (the copy is
 * returned, cut at it). */
char *http_query_param(const char *q, const char *name, int *bad);
/* Parameter name as Go's url.ParseQuery reads q[0..len): pairs split on
 * '&', keys and values percent-decoded ('+' is a space), so "%71=x" is a
 * "q". *count gets the number of pairs named name added to it; returns a
 * decoded copy of the first one's value (the caller frees it), NULL when
 * none. *bad gets 1 ORed in for a malformed escape, 2 for a NUL byte in
 * the value, 4 for a raw ';' in such a pair (Go skips the pair: it would
 * not see what relayd saw). */
char *http_form_value(const char *q, size_t len, const char *name, size_t *count, int *bad);
/* 1 if s holds a control character (below 0x20, or DEL), else 0 (also for
 * NULL): such a string must not reach a header, a query or a terminal. */
int http_has_control(const char *s);

/*---- http_write.c ----*/

/* Read a write's parameters and credentials once its headers are in, and
 * decide whether it may write at all (http_set_error if not; auth failures
 * are logged and counted). The strings go to c->req, which owns them. */
void http_prepare_write(struct conn *c);
/* The write is complete: answer it, or validate it and hand it to ingest
 * (c->waiting, and a reference on c, until its commit returns; the answer
 * is queued then). */
void http_handle_write(struct conn *c);
/* A commit of c's request (req->data is c) returned: c is no longer
 * waiting and ingest's reference is dropped; returns the status to answer
 * (http_write_outcome, with the refusing backend's name and limits), msg
 * and *retry_after as there. When c is closing (its client left) it is
 * released and freed if nothing else holds it, and 0 is returned: nobody
 * is left to answer. Shared by writes and queued statements. */
int http_commit_returned(struct ingest_request *req, int rc, char *msg, size_t msglen, uint64_t *retry_after);
/* Answer a commit that did not store c's request (status and msg from
 * http_commit_returned) with Retry-After, and log it (rate-limited; what
 * names the request: "write", "query"). */
void http_commit_refused(struct conn *c, const char *what, int status, const char *msg, uint64_t retry_after);
/* Whether cr may come in (auth.enabled): the 401 or 403 is set through
 * http_set_error, logged (what names the request for the log) and
 * counted. Shared by writes and queries. */
void http_auth_decide(struct conn *c, const char *what);

/*---- http_metrics.c ----*/

/* Set up s->counts (its histogram's buckets). */
void http_counts_init(struct http_server *s);
/* The endpoint of url[0..len) (its path; the query string is ignored). */
enum http_endpoint http_endpoint_of(const char *url, size_t len);
/* An answer with status to c's request is being queued: count it by
 * endpoint and status, and a write endpoint's 4xx and 5xx as a refusal
 * (c->req.refusal, or by the status). Does nothing for c->uncounted. */
void http_count_answer(struct conn *c, int status);
/* A query goes to the backend named name; t[0..n) are the backends a
 * query can go to now (what bounds the table). */
void http_count_proxied(struct http_server *s, const char *name, const struct http_query_target *t, size_t n);
/* c's request is being released: a query's duration is observed (once). */
void http_count_released(struct conn *c);
/* GET/HEAD /metrics and /health/backends/NAME: answer them and return 1;
 * 0 for any other path. */
int http_handle_monitoring(struct conn *c, const char *url, size_t plen, int method, int keep);

/*---- http_query.c ----*/

/* A query's credentials and whether it may come in, once its headers are
 * in (the body is then kept only for an accepted POST). */
void http_prepare_query(struct conn *c);
/* The query request is complete: answer it (returns 1), or start passing
 * it through or queueing it (returns 0; the answer follows). */
int http_handle_query(struct conn *c);
/* c's queued answer bytes drained to OUT_LOW: read the backend again. */
void http_query_drained(struct conn *c);
/* c is closing: cancel its query's upstream request at once. */
void http_query_abort(struct conn *c);
/* T_QWAIT fired: look again whether c's query may go to its backend. */
void http_query_wait_tick(struct conn *c);

#endif
