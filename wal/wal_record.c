/*
 * wal_record: the byte layout of everything wal stores. Pure functions:
 * no LMDB, no allocation. Every multi-byte integer is little-endian except
 * sequence keys, which are big-endian so that LMDB orders them numerically.
 */
#include "wal/wal_record.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

_Static_assert(WALR_BATCH_HDR == 8 + 8 + 8 + 4 + 4 + 4 + 12, "batch header layout");
_Static_assert(WALR_BACKEND_SIZE == 4 + 4 + 11 * 8, "backend record layout");

void walr_put_u16(unsigned char *p, uint16_t v)
{
	p[0] = (unsigned char)v;
	p[1] = (unsigned char)(v >> 8);
}

void walr_put_u32(unsigned char *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

void walr_put_u64(unsigned char *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

uint16_t walr_get_u16(const unsigned char *p)
{
	return (uint16_t)(p[0] | (p[1] << 8));
}

uint32_t walr_get_u32(const unsigned char *p)
{
	uint32_t v = 0;
	for (int i = 3; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

uint64_t walr_get_u64(const unsigned char *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

void walr_seq_encode(uint64_t seq, unsigned char out[8])
{
	for (int i = 0; i < 8; i++)
		out[i] = (unsigned char)(seq >> (56 - 8 * i));
}

uint64_t walr_seq_decode(const void *p)
{
	const unsigned char *c = p;
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v = (v << 8) | c[i];
	return v;
}

/*---- format record ----*/

/*
 *  0      8        12        16           24
 *  +------+--------+---------+------------+
 *  |magic | version| reserved| created_ns |
 *  +------+--------+---------+------------+
 */
void walr_format_encode(const struct walr_format *f, unsigned char out[WALR_FORMAT_SIZE])
{
	memcpy(out, WALR_MAGIC, 8);
	walr_put_u32(out + 8, f->version);
	walr_put_u32(out + 12, 0);
	walr_put_u64(out + 16, (uint64_t)f->created_ns);
}

int walr_format_decode(const void *p, size_t len, struct walr_format *f)
{
	const unsigned char *c = p;
	/* Check the magic before the size: a newer format may be longer, and
	 * must then be reported as a version mismatch, not as "not a queue". */
	if (len < 16 || memcmp(c, WALR_MAGIC, 8) != 0)
		return WAL_ENOTQUEUE;
	f->version = walr_get_u32(c + 8);
	f->created_ns = len >= 24 ? (int64_t)walr_get_u64(c + 16) : 0;
	return 0;
}

int walr_time_ok(int64_t ns)
{
	return ns >= 0 && ns <= WALR_TIME_MAX_NS;
}

/*---- batch record ----*/

static const char *batch_str(const struct wal_batch *b, int i)
{
	const char *s[WALR_NSTR] = { b->db, b->rp, b->user, b->password, b->org, b->token };
	return s[i] ? s[i] : "";
}

size_t walr_batch_size(const struct wal_batch *b)
{
	size_t n = WALR_BATCH_HDR;
	for (int i = 0; i < WALR_NSTR; i++) {
		size_t l = strlen(batch_str(b, i));
		if (l > UINT16_MAX)
			return 0;
		n += l;
	}
	if (b->body_len > UINT32_MAX)
		return 0;
	return n + b->body_len;
}

/*
 *  0        8          16      24     28      32         36      48
 *  +--------+----------+-------+------+-------+----------+-------+------ - -
 *  | route  | accept_ns| rsvd  | lines| body  | vers|prec| str   | strings, body
 *  | u64    | i64      | u64   | u32  | len   | u8  |u8  | lens  |
 *  |        |          |       |      | u32   | +2 rsvd  | 6xu16 |
 *  +--------+----------+-------+------+-------+----------+-------+------ - -
 */
void walr_batch_encode(const struct wal_batch *b, unsigned char *out)
{
	walr_put_u64(out, b->route);
	walr_put_u64(out + 8, (uint64_t)b->accept_ns);
	walr_put_u64(out + 16, 0);
	walr_put_u32(out + 24, b->lines);
	walr_put_u32(out + 28, (uint32_t)b->body_len);
	out[32] = WALR_BATCH_VERSION; /* record version, for in-place evolution */
	out[33] = b->precision;
	out[34] = out[35] = 0;
	unsigned char *p = out + WALR_BATCH_HDR;
	for (int i = 0; i < WALR_NSTR; i++) {
		const char *s = batch_str(b, i);
		size_t l = strlen(s);
		walr_put_u16(out + 36 + 2 * i, (uint16_t)l);
		memcpy(p, s, l);
		p += l;
	}
	if (b->body_len)
		memcpy(p, b->body, b->body_len);
}

/* The number of '\n' in p[0..len). */
static size_t count_newlines(const unsigned char *p, size_t len)
{
	size_t n = 0;
	const unsigned char *e = p + len;
	while (p < e) {
		const unsigned char *nl = memchr(p, '\n', (size_t)(e - p));
		if (!nl)
			break;
		n++;
		p = nl + 1;
	}
	return n;
}

#define WHY(...) ((why && whylen) ? (void)snprintf(why, whylen, __VA_ARGS__) : (void)0)

/*
 * Every field is checked against what the format and the record's own
 * bytes allow before anything is trusted: a length never reaches past
 * the record, and a count never exceeds what the body holds (a `lines`
 * of 0xffffffff once made a reader size an allocation from it).
 */
int walr_batch_decode(const void *p, size_t len, struct wal_batch *b, uint32_t str_off[WALR_NSTR],
                      uint16_t str_len[WALR_NSTR], size_t *body_off, char *why, size_t whylen)
{
	const unsigned char *c = p;
	if (why && whylen)
		why[0] = '\0';
	if (len < WALR_BATCH_HDR) {
		WHY("record of %zu bytes is shorter than its %d-byte header", len, WALR_BATCH_HDR);
		return WAL_ECORRUPT;
	}
	b->route = walr_get_u64(c);
	b->accept_ns = (int64_t)walr_get_u64(c + 8);
	b->lines = walr_get_u32(c + 24);
	b->body_len = walr_get_u32(c + 28);
	b->precision = c[33];
	if (c[32] != WALR_BATCH_VERSION) {
		WHY("record version %u (this binary reads %d)", c[32], WALR_BATCH_VERSION);
		return WAL_ECORRUPT;
	}
	if (walr_get_u64(c + 16) != 0 || c[34] != 0 || c[35] != 0) {
		WHY("reserved header bytes are not zero");
		return WAL_ECORRUPT;
	}
	/* The precision code is not checked here: a batch whose code is not
	 * one of the format's is otherwise whole, and the delivery side
	 * dead-letters it with its strings and body intact (backend_api
	 * refuses to build a request for it); verify and relayctl name it. */
	if (!walr_time_ok(b->accept_ns)) {
		WHY("acceptance time %" PRId64 " ns is outside 1970..2200", b->accept_ns);
		return WAL_ECORRUPT;
	}
	size_t off = WALR_BATCH_HDR;
	for (int i = 0; i < WALR_NSTR; i++) {
		uint16_t l = walr_get_u16(c + 36 + 2 * i);
		if (str_off) {
			str_off[i] = (uint32_t)off;
			str_len[i] = l;
		}
		off += l;
	}
	/* off is at most 48 + 6 * 65535 and body_len below 2^32: no overflow. */
	if (off + b->body_len != len) {
		WHY("string and body lengths add up to %zu bytes, the record holds %zu", off + b->body_len, len);
		return WAL_ECORRUPT;
	}
	const unsigned char *body = c + off;
	if (b->body_len && body[b->body_len - 1] != '\n') {
		WHY("body does not end with a newline");
		return WAL_ECORRUPT;
	}
	/* A line may hold a newline inside a quoted string field, so a batch
	 * has at most as many points as its body has newlines. */
	size_t nl = count_newlines(body, b->body_len);
	if (b->lines > nl) {
		WHY("header says %" PRIu32 " points, the body holds %zu lines", b->lines, nl);
		return WAL_ECORRUPT;
	}
	if (body_off)
		*body_off = off;
	return 0;
}

/*---- dead-letter record ----*/

/*
 *  0        4          8          16        18     24
 *  +--------+----------+----------+---------+------+-----+-----------------+
 *  | status | attempts | dead_ns  | msg_len | rsvd | msg | batch record    |
 *  | i32    | u32      | i64      | u16     |      |     | (as in batches) |
 *  +--------+----------+----------+---------+------+-----+-----------------+
 */
static size_t dead_msg_len(const struct walr_dead *d)
{
	size_t n = d->msg ? strlen(d->msg) : 0;
	return n > UINT16_MAX ? UINT16_MAX : n;
}

size_t walr_dead_size(const struct walr_dead *d, const struct wal_batch *b)
{
	size_t n = walr_batch_size(b);
	return n ? WALR_DEAD_HDR + dead_msg_len(d) + n : 0;
}

void walr_dead_encode(const struct walr_dead *d, const struct wal_batch *b, unsigned char *out)
{
	size_t ml = dead_msg_len(d);
	walr_put_u32(out, (uint32_t)d->status);
	walr_put_u32(out + 4, d->attempts);
	walr_put_u64(out + 8, (uint64_t)d->dead_ns);
	walr_put_u16(out + 16, (uint16_t)ml);
	memset(out + 18, 0, 6);
	memcpy(out + WALR_DEAD_HDR, d->msg, ml);
	walr_batch_encode(b, out + WALR_DEAD_HDR + ml);
}

size_t walr_dead_raw_size(const struct walr_dead *d, size_t raw_len)
{
	return WALR_DEAD_HDR + dead_msg_len(d) + raw_len;
}

void walr_dead_raw_encode(const struct walr_dead *d, const void *raw, size_t raw_len, unsigned char *out)
{
	size_t ml = dead_msg_len(d);
	walr_put_u32(out, (uint32_t)d->status);
	walr_put_u32(out + 4, d->attempts);
	walr_put_u64(out + 8, (uint64_t)d->dead_ns);
	walr_put_u16(out + 16, (uint16_t)ml);
	memset(out + 18, 0, 6);
	out[18] = WALR_DEAD_RAW;
	memcpy(out + WALR_DEAD_HDR, d->msg, ml);
	if (raw_len)
		memcpy(out + WALR_DEAD_HDR + ml, raw, raw_len);
}

int walr_dead_decode(const void *p, size_t len, struct walr_dead *d, size_t *msg_len, size_t *batch_off, char *why,
                     size_t whylen)
{
	const unsigned char *c = p;
	if (why && whylen)
		why[0] = '\0';
	if (len < WALR_DEAD_HDR) {
		WHY("dead-letter record of %zu bytes is shorter than its %d-byte header", len, WALR_DEAD_HDR);
		return WAL_ECORRUPT;
	}
	d->status = (int32_t)walr_get_u32(c);
	d->attempts = walr_get_u32(c + 4);
	d->dead_ns = (int64_t)walr_get_u64(c + 8);
	d->flags = c[18];
	d->msg = NULL;
	if (!walr_time_ok(d->dead_ns)) {
		WHY("dead-letter time %" PRId64 " ns is outside 1970..2200", d->dead_ns);
		return WAL_ECORRUPT;
	}
	if ((d->flags & ~WALR_DEAD_RAW) || c[19] || c[20] || c[21] || c[22] || c[23]) {
		WHY("reserved dead-letter header bytes are not zero");
		return WAL_ECORRUPT;
	}
	size_t ml = walr_get_u16(c + 16);
	if (WALR_DEAD_HDR + ml > len) {
		WHY("message of %zu bytes does not fit in a record of %zu", ml, len);
		return WAL_ECORRUPT;
	}
	d->msg = (const char *)c + WALR_DEAD_HDR;
	*msg_len = ml;
	*batch_off = WALR_DEAD_HDR + ml;
	return 0;
}

/*---- backend record ----*/

void walr_backend_encode(const struct walr_backend *r, unsigned char out[WALR_BACKEND_SIZE])
{
	walr_put_u32(out, r->id);
	walr_put_u32(out + 4, r->flags);
	walr_put_u64(out + 8, r->cursor);
	walr_put_u64(out + 16, r->pending_batches);
	walr_put_u64(out + 24, r->pending_points);
	walr_put_u64(out + 32, r->pending_bytes);
	walr_put_u64(out + 40, r->dead_batches);
	walr_put_u64(out + 48, r->dead_bytes);
	walr_put_u64(out + 56, r->delivered_batches);
	walr_put_u64(out + 64, r->delivered_points);
	walr_put_u64(out + 72, (uint64_t)r->last_delivery_ns);
	walr_put_u64(out + 80, (uint64_t)r->created_ns);
	walr_put_u64(out + 88, 0); /* reserved */
}

int walr_backend_decode(const void *p, size_t len, struct walr_backend *r)
{
	const unsigned char *c = p;
	if (len < WALR_BACKEND_SIZE)
		return WAL_ECORRUPT;
	r->id = walr_get_u32(c);
	r->flags = walr_get_u32(c + 4);
	r->cursor = walr_get_u64(c + 8);
	r->pending_batches = walr_get_u64(c + 16);
	r->pending_points = walr_get_u64(c + 24);
	r->pending_bytes = walr_get_u64(c + 32);
	r->dead_batches = walr_get_u64(c + 40);
	r->dead_bytes = walr_get_u64(c + 48);
	r->delivered_batches = walr_get_u64(c + 56);
	r->delivered_points = walr_get_u64(c + 64);
	r->last_delivery_ns = (int64_t)walr_get_u64(c + 72);
	r->created_ns = (int64_t)walr_get_u64(c + 80);
	return r->id < WAL_MAX_BACKENDS ? 0 : WAL_ECORRUPT;
}
