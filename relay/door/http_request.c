/*
 * http_request: one request's life at the door. llhttp's callbacks collect
 * the request line and headers (within max_header_size and 100 fields),
 * decide the framing (Transfer-Encoding) and the endpoint, and keep the
 * body only for a write that passed its checks (inflating gzip as it
 * arrives, within max_decompressed_size). Every buffer a request holds
 * counts in the server's budget (http.max_buffered_size) and is given
 * back once its answer is queued.
 */

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relay/door/http_internal.h"

/*---- the buffer budget ----*/

/* What c holds of the server's budget right now. */
static uint64_t conn_held(const struct conn *c)
{
	const struct request *r = &c->req;
	return (uint64_t)r->body.cap + r->lp.cap + c->pend_len + (r->gzip ? ZSTREAM_BYTES : 0);
}

/* Account for a change of c's buffers: keeps srv->buffered the sum of
 * conn_held() over the connections. Called after every change. */
void http_budget_sync(struct conn *c)
{
	uint64_t now = conn_held(c);
	if (c->srv) {
		c->srv->buffered = c->srv->buffered - c->held + now;
		c->srv->stats.buffered_bytes = c->srv->buffered;
	}
	c->held = now;
}

/*
 * Whether c may hold want more bytes of the budget: 0, or the status to
 * answer: 413 when the request alone needs more than the whole budget
 * (waiting cannot help), 503 when other connections hold the rest.
 */
static int budget_check(const struct conn *c, uint64_t want)
{
	uint64_t max = c->srv->cfg->http_max_buffered_bytes;
	uint64_t others = c->srv->buffered - c->held;
	if (c->held > max || want > max - c->held)
		return 413;
	if (others > max - c->held - want)
		return 503;
	return 0;
}

/*
 * Room in b (c->req.body) for extra more bytes, within the budget. Grows by
 * doubling while the budget allows, else to exactly what is needed.
 * Returns 0, or 413/503 as budget_check (b unchanged).
 */
static int budget_reserve(struct conn *c, struct rbuf *b, size_t extra)
{
	if (b->cap - b->len > extra)
		return 0;
	size_t need = b->len + extra + 1;
	if (need < b->len)
		return 413;
	size_t cap = b->cap ? b->cap : 4096;
	while (cap < need)
		cap = cap * 2 > cap ? cap * 2 : need;
	if (budget_check(c, cap - b->cap)) {
		cap = need;
		int st = budget_check(c, cap - b->cap);
		if (st)
			return st;
	}
	b->data = xrealloc(b->data, cap);
	b->cap = cap;
	http_budget_sync(c);
	return 0;
}

/*---- strings a request carries ----*/

/* The length v[0..vl) decodes to (each %XY is one byte; '+' is one). */
static size_t decoded_len(const char *v, size_t vl)
{
	size_t n = 0;
	for (size_t i = 0; i < vl; i++, n++)
		if (v[i] == '%')
			i += 2;
	return n;
}

/* Find query parameter name in q (q without '?'); returns a decoded copy,
 * NULL if absent; *bad gets 1 for a malformed escape, 2 for a NUL byte. */
char *http_query_param(const char *q, const char *name, int *bad)
{
	size_t nl = strlen(name);
	const char *p = q;
	while (p && *p) {
		const char *amp = strchr(p, '&');
		size_t seg = amp ? (size_t)(amp - p) : strlen(p);
		if (seg >= nl && memcmp(p, name, nl) == 0 && (seg == nl || p[nl] == '=')) {
			const char *v = seg == nl ? p + nl : p + nl + 1;
			size_t vl = seg == nl ? 0 : seg - nl - 1;
			char *d = url_decode(v, vl);
			if (!d)
				*bad |= 1;
			else if (strlen(d) != decoded_len(v, vl))
				*bad |= 2; /* a %00 would cut the name short unseen */
			return d;
		}
		p = amp ? amp + 1 : NULL;
	}
	return NULL;
}

char *http_form_value(const char *q, size_t len, const char *name, size_t *count, int *bad)
{
	size_t nl = strlen(name);
	const char *p = q, *end = q + len;
	char *first = NULL;
	while (p < end) {
		const char *amp = memchr(p, '&', (size_t)(end - p));
		const char *seg_end = amp ? amp : end;
		const char *eq = memchr(p, '=', (size_t)(seg_end - p));
		const char *kend = eq ? eq : seg_end;
		char *key = url_decode(p, (size_t)(kend - p));
		if (!key) {
			*bad |= 1;
		} else if (strlen(key) == nl && memcmp(key, name, nl) == 0 && decoded_len(p, (size_t)(kend - p)) == nl) {
			if (memchr(p, ';', (size_t)(seg_end - p)))
				*bad |= 4; /* Go skips a pair with a raw ';': it would not see this one */
			(*count)++;
			if (!first) {
				const char *v = eq ? eq + 1 : seg_end;
				size_t vl = (size_t)(seg_end - v);
				first = url_decode(v, vl);
				if (!first)
					*bad |= 1;
				else if (strlen(first) != decoded_len(v, vl))
					*bad |= 2;
			}
		}
		free(key);
		p = amp ? amp + 1 : end;
	}
	return first;
}

int http_has_control(const char *s)
{
	for (; s && *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return 1;
	return 0;
}

/*---- request state ----*/

static void gzip_end(struct request *r)
{
	if (r->gzip)
		inflateEnd(&r->z);
	r->gzip = 0;
}

/*
 * The request is answered (its answer queued), its commit returned, or the
 * connection is going: give back everything it held, so that a connection
 * between requests costs only its struct, and start the next request from
 * zero. The one place a request's fields are freed.
 */
void http_request_release(struct conn *c)
{
	struct request *r = &c->req;
	http_count_released(c);
	gzip_end(r);
	rbuf_release(&r->url);
	rbuf_release(&r->hname);
	rbuf_release(&r->hval);
	rbuf_release(&r->te);
	rbuf_release(&r->body);
	rbuf_release(&r->lp);
	free(r->authorization);
	free(r->content_encoding);
	free(r->content_type);
	rbuf_release(&r->fwd);
	free(r->db);
	free(r->rp);
	free(r->org);
	http_credentials_free(&r->cred);
	memset(r, 0, sizeof(*r));
	http_budget_sync(c);
}

/* A write the budget cannot hold now: refuse it and drop its body, giving
 * the budget back at once rather than when the refusal is answered. */
void http_budget_refuse(struct conn *c, int status)
{
	struct request *r = &c->req;
	const struct relay_config *cfg = c->srv->cfg;
	if (status == 413)
		http_set_error(c, 413, "request needs more than the %" PRIu64 " byte%s of http.max_buffered_size",
		          cfg->http_max_buffered_bytes, relay_s(cfg->http_max_buffered_bytes));
	else
		http_set_error(c, 503, "relay busy: %" PRIu64 " byte%s of request bodies held (http.max_buffered_size): "
		          "retry later", c->srv->buffered, relay_s(c->srv->buffered));
	gzip_end(r);
	r->keep_body = 0;
	rbuf_release(&r->body);
	rbuf_release(&r->lp);
	http_budget_sync(c);
}

static struct conn *conn_of(llhttp_t *p)
{
	return p->data;
}

/* Decide an error that is answered once the request is complete (the body
 * is read and dropped, so the connection stays usable). */
void http_set_error(struct conn *c, int status, const char *fmt, ...)
{
	struct request *r = &c->req;
	if (r->err_status)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(r->err_msg, sizeof(r->err_msg), fmt, ap);
	va_end(ap);
	r->err_status = status;
}

static int count_header_bytes(struct conn *c, size_t n)
{
	struct request *r = &c->req;
	r->header_bytes += n;
	if (r->header_bytes > c->srv->cfg->http_max_header_bytes) {
		r->fatal = 431;
		snprintf(r->err_msg, sizeof(r->err_msg), "request line and headers exceed %" PRIu64 " byte%s",
			 c->srv->cfg->http_max_header_bytes, relay_s(c->srv->cfg->http_max_header_bytes));
		return HPE_USER;
	}
	return HPE_OK;
}

static int on_message_begin(llhttp_t *p)
{
	struct conn *c = conn_of(p);
	/* Whatever ended the last request released it already; this makes
	 * sure a request never starts with another's state. */
	http_request_release(c);
	http_set_timer(c, T_HEADER);
	return HPE_OK;
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
	struct conn *c = conn_of(p);
	if (count_header_bytes(c, len))
		return HPE_USER;
	rbuf_append(&c->req.url, at, len);
	return HPE_OK;
}

/* The query endpoint of url, QUERY_NONE for any other. */
static int query_of(const char *url)
{
	size_t plen = strcspn(url, "?");
	if (plen == 6 && memcmp(url, "/query", 6) == 0)
		return QUERY_V1;
	if (plen == 13 && memcmp(url, "/api/v2/query", 13) == 0)
		return QUERY_FLUX;
	return QUERY_NONE;
}

static void header_done(struct conn *c)
{
	struct request *r = &c->req;
	const char *name = rbuf_cstr(&r->hname);
	const char *val = rbuf_cstr(&r->hval);
	if (strcasecmp(name, "authorization") == 0) {
		free(r->authorization);
		r->authorization = xstrdup(val);
	} else if (strcasecmp(name, "content-encoding") == 0) {
		free(r->content_encoding);
		r->content_encoding = xstrdup(val);
	} else if (strcasecmp(name, "transfer-encoding") == 0) {
		/* Decided on all lines at once (check_transfer_encoding): the
		 * codings of two lines are one list (RFC 9110 5.3). */
		if (r->te.len)
			rbuf_append(&r->te, ", ", 2);
		rbuf_append(&r->te, val, strlen(val));
	} else if (strcasecmp(name, "expect") == 0) {
		if (strcasecmp(val, "100-continue") == 0)
			r->expect_continue = 1;
		else
			http_set_error(c, 417, "unsupported Expect header '%.60s'", val);
	}
	/* What a query passes on to the backend (its answer's form and
	 * encoding, its tracing); within the header limits already. A write
	 * keeps none of it. */
	if (query_of(rbuf_cstr(&r->url)) != QUERY_NONE) {
		if (strcasecmp(name, "content-type") == 0) {
			/* InfluxDB's Go server reads the first, relayd would read
			 * the last: two could make them see different forms. */
			if (r->content_type)
				http_set_error(c, 400, "more than one Content-Type header");
			else
				r->content_type = xstrdup(val);
		}
		if (strcasecmp(name, "accept") == 0 || strcasecmp(name, "accept-encoding") == 0 ||
		    strcasecmp(name, "content-type") == 0 || strcasecmp(name, "user-agent") == 0 ||
		    strcasecmp(name, "x-request-id") == 0)
			rbuf_appendf(&r->fwd, "%s: %s\r\n", name, val);
	}
	rbuf_reset(&r->hname);
	rbuf_reset(&r->hval);
}

/*
 * Transfer-Encoding, from every line of it: llhttp frames a body whose last
 * coding is chunked, but a coding before it (gzip, or chunked twice) would
 * have to be undone, which we do not: refuse it (501) rather than take
 * compressed bytes for line protocol (RFC 9112 6.1).
 */
static void check_transfer_encoding(struct conn *c)
{
	const char *v = rbuf_cstr(&c->req.te);
	int codings = 0, last_chunked = 0;
	while (*v) {
		while (*v == ' ' || *v == '\t' || *v == ',')
			v++;
		if (!*v)
			break;
		size_t n = strcspn(v, ",");
		size_t t = n;
		while (t && (v[t - 1] == ' ' || v[t - 1] == '\t'))
			t--;
		codings++;
		last_chunked = t == 7 && strncasecmp(v, "chunked", 7) == 0;
		v += n;
	}
	/* A list that does not end in chunked is llhttp's to refuse (400). */
	if (last_chunked && codings > 1)
		http_set_error(c, 501, "Transfer-Encoding '%.60s' is not supported (only chunked; "
		          "send compressed bodies with Content-Encoding: gzip)", rbuf_cstr(&c->req.te));
}

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
	struct conn *c = conn_of(p);
	struct request *r = &c->req;
	if (count_header_bytes(c, len))
		return HPE_USER;
	if (r->in_value) {
		header_done(c);
		r->in_value = 0;
	}
	if (r->hname.len == 0 && ++r->nheaders > MAX_HEADERS) {
		r->fatal = 431;
		snprintf(r->err_msg, sizeof(r->err_msg), "more than %d header fields", MAX_HEADERS);
		return HPE_USER;
	}
	rbuf_append(&r->hname, at, len);
	return HPE_OK;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
	struct conn *c = conn_of(p);
	if (count_header_bytes(c, len))
		return HPE_USER;
	c->req.in_value = 1;
	rbuf_append(&c->req.hval, at, len);
	return HPE_OK;
}


/* The most body bytes the request may send: a query's own limit. */
static uint64_t max_body(const struct conn *c)
{
	const struct relay_config *cfg = c->srv->cfg;
	return c->req.query ? cfg->query_max_body_bytes : cfg->http_max_body_bytes;
}

/* The endpoint of url (path only; the query is ignored). */
static int api_of(const char *url)
{
	size_t plen = strcspn(url, "?");
	if (plen == 6 && memcmp(url, "/write", 6) == 0)
		return API_V1;
	if (plen == 13 && memcmp(url, "/api/v2/write", 13) == 0)
		return API_V2;
	return API_NONE;
}

static int on_headers_complete(llhttp_t *p)
{
	struct conn *c = conn_of(p);
	struct request *r = &c->req;
	const struct relay_config *cfg = c->srv->cfg;
	if (r->in_value || r->hname.len) {
		header_done(c);
		r->in_value = 0;
	}
	http_set_timer(c, T_BODY);
	if (r->te.len)
		check_transfer_encoding(c);
	r->api = api_of(rbuf_cstr(&r->url));
	r->query = query_of(rbuf_cstr(&r->url));
	if (r->api != API_NONE && llhttp_get_method(p) == HTTP_POST)
		http_prepare_write(c);
	if (r->query != QUERY_NONE && cfg->query_enabled)
		http_prepare_query(c);
	/* Only an accepted write's body is kept, and an accepted POST
	 * query's (its form parameters, or Flux): every other body (any other
	 * URL, a refused request) is counted against max_body_size and
	 * dropped as it arrives. */
	r->keep_body = (r->api != API_NONE || (r->query != QUERY_NONE && cfg->query_enabled)) &&
	               llhttp_get_method(p) == HTTP_POST && !r->err_status;
	/* Refuse an announced oversized body before reading any of it. */
	if ((p->flags & F_CONTENT_LENGTH) && p->content_length > max_body(c)) {
		r->fatal = 413;
		snprintf(r->err_msg, sizeof(r->err_msg), "request body of %" PRIu64 " byte%s exceeds the limit of %" PRIu64 " byte%s",
			 (uint64_t)p->content_length, relay_s(p->content_length), max_body(c), relay_s(max_body(c)));
		return -1; /* on_headers_complete's error value; r->fatal says why */
	}
	if (r->content_encoding && strcasecmp(r->content_encoding, "gzip") == 0) {
		/* Inflate as the body arrives, so that the cap on the
		 * decompressed size holds without buffering the compressed body
		 * and a bomb is stopped at the first chunk past the cap. */
		int st = r->keep_body ? budget_check(c, ZSTREAM_BYTES) : 0;
		if (st) {
			http_budget_refuse(c, st);
		} else if (r->keep_body) {
			memset(&r->z, 0, sizeof(r->z));
			if (inflateInit2(&r->z, 15 + 16) != Z_OK)
				relay_fatal("out of memory initialising zlib");
			r->gzip = 1;
			http_budget_sync(c);
		}
	} else if (r->content_encoding && *r->content_encoding && strcasecmp(r->content_encoding, "identity")) {
		http_set_error(c, 415, "unsupported Content-Encoding '%.40s' (want gzip or identity)", r->content_encoding);
	}
	if (r->err_status == 501) {
		r->fatal = 501; /* the body cannot be framed as we would read it */
		return -1;
	}
	/* A client that asked "may I send the body?" gets the refusal now
	 * rather than a 100 (RFC 9110 10.1.1), and the connection closes:
	 * whether it still sends the body is its choice. */
	if (r->expect_continue && r->err_status) {
		r->fatal = r->err_status;
		return -1;
	}
	if (r->expect_continue && !c->fake) {
		static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
		http_send_raw(c, xstrdup(cont), sizeof(cont) - 1);
	}
	return HPE_OK;
}

/* Count len more body bytes as sent (compressed, for a gzip body; chunk
 * extensions too): HPE_USER with a 413 past max_body_size. */
static int count_body_bytes(struct conn *c, size_t len)
{
	struct request *r = &c->req;
	r->body_received += len;
	if (r->body_received > max_body(c)) {
		r->fatal = 413;
		snprintf(r->err_msg, sizeof(r->err_msg), "request body exceeds the limit of %" PRIu64 " byte%s",
			 max_body(c), relay_s(max_body(c)));
		return HPE_USER;
	}
	return HPE_OK;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
	struct conn *c = conn_of(p);
	struct request *r = &c->req;
	const struct relay_config *cfg = c->srv->cfg;
	if (count_body_bytes(c, len))
		return HPE_USER;
	if (r->err_status || !r->keep_body)
		return HPE_OK; /* read and dropped: not a write, or its answer is decided */
	if (!r->gzip) {
		int st = budget_reserve(c, &r->body, len);
		if (st) {
			http_budget_refuse(c, st);
			return HPE_OK;
		}
		rbuf_append(&r->body, at, len);
		return HPE_OK;
	}
	uint64_t cap = cfg->http_max_decompressed_bytes;
	r->z.next_in = (Bytef *)(uintptr_t)at;
	r->z.avail_in = (uInt)len;
	while (r->z.avail_in) {
		/* A gzip file may hold several members one after the other
		 * (gzip a b > c; Go's and Python's readers write and read them
		 * so): bytes after a member's end start the next one. Anything
		 * else there fails to inflate and gets 400, never dropped. */
		if (r->gzip == 2) {
			if (inflateReset(&r->z) != Z_OK)
				relay_fatal("zlib: inflateReset failed");
			r->gzip = 1;
		}
		int st = budget_reserve(c, &r->body, 65536);
		if (st) {
			http_budget_refuse(c, st);
			return HPE_OK;
		}
		size_t room = r->body.cap - r->body.len - 1;
		r->z.next_out = (Bytef *)r->body.data + r->body.len;
		r->z.avail_out = (uInt)(room > (1u << 30) ? (1u << 30) : room);
		uInt before = r->z.avail_out;
		int zrc = inflate(&r->z, Z_NO_FLUSH);
		r->body.len += before - r->z.avail_out;
		if (r->body.len > cap) {
			r->fatal = 413;
			snprintf(r->err_msg, sizeof(r->err_msg),
				 "decompressed request body exceeds the limit of %" PRIu64 " byte%s", cap, relay_s(cap));
			return HPE_USER;
		}
		if (zrc == Z_STREAM_END) {
			r->gzip = 2;
		} else if (zrc != Z_OK && zrc != Z_BUF_ERROR) {
			http_set_error(c, 400, "malformed gzip body: %s", r->z.msg ? r->z.msg : "inflate failed");
			return HPE_OK;
		}
	}
	return HPE_OK;
}

/* Chunk extensions ("5;name=value") carry nothing we use, but their
 * bytes arrive all the same: they count against max_body_size, so an
 * endless extension cannot hold a connection's memory or time. */
static int on_chunk_extension(llhttp_t *p, const char *at, size_t len)
{
	(void)at;
	return count_body_bytes(conn_of(p), len);
}

static int on_message_complete(llhttp_t *p)
{
	struct conn *c = conn_of(p);
	if (c->req.gzip == 1 && !c->req.err_status)
		http_set_error(c, 400, "malformed gzip body: truncated");
	gzip_end(&c->req); /* the inflate state is not needed past the body */
	http_budget_sync(c);
	http_set_timer(c, T_NONE);
	/* Stop here: the request is answered before the next one is parsed. */
	return HPE_PAUSED;
}

/* Filled in at compile time: what llhttp_settings_init() would leave
 * unset is zero here too, and nothing can change it at run time. */
static const llhttp_settings_t parser_settings = {
	.on_message_begin = on_message_begin,
	.on_url = on_url,
	.on_header_field = on_header_field,
	.on_header_value = on_header_value,
	.on_headers_complete = on_headers_complete,
	.on_body = on_body,
	.on_message_complete = on_message_complete,
	.on_chunk_extension_name = on_chunk_extension,
	.on_chunk_extension_value = on_chunk_extension,
};

void http_parser_init(struct conn *c)
{
	llhttp_init(&c->parser, HTTP_REQUEST, &parser_settings);
	c->parser.data = c;
}
