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

/*---- CRC32C ----*/

/*
 * CRC32C (Castagnoli, reflected polynomial 0x82F63B78). Written here rather
 * than zlib's crc32: wal/ links LMDB and libc only, and CRC32C is the
 * checksum storage uses (iSCSI, ext4, btrfs). On x86-64 with SSE4.2 (every
 * x86-64 server of the last decade) the processor's crc32 instruction does
 * it, 8 bytes at a time (~10 GB/s on the VM of docs/performance.md);
 * elsewhere this table, a byte at a time (~270 MB/s there): every record
 * is checksummed once when written and once each time it is decoded.
 */
static const uint32_t crc32c_table[256] = {
	0x00000000, 0xf26b8303, 0xe13b70f7, 0x1350f3f4, 0xc79a971f, 0x35f1141c,
	0x26a1e7e8, 0xd4ca64eb, 0x8ad958cf, 0x78b2dbcc, 0x6be22838, 0x9989ab3b,
	0x4d43cfd0, 0xbf284cd3, 0xac78bf27, 0x5e133c24, 0x105ec76f, 0xe235446c,
	0xf165b798, 0x030e349b, 0xd7c45070, 0x25afd373, 0x36ff2087, 0xc494a384,
	0x9a879fa0, 0x68ec1ca3, 0x7bbcef57, 0x89d76c54, 0x5d1d08bf, 0xaf768bbc,
	0xbc267848, 0x4e4dfb4b, 0x20bd8ede, 0xd2d60ddd, 0xc186fe29, 0x33ed7d2a,
	0xe72719c1, 0x154c9ac2, 0x061c6936, 0xf477ea35, 0xaa64d611, 0x580f5512,
	0x4b5fa6e6, 0xb93425e5, 0x6dfe410e, 0x9f95c20d, 0x8cc531f9, 0x7eaeb2fa,
	0x30e349b1, 0xc288cab2, 0xd1d83946, 0x23b3ba45, 0xf779deae, 0x05125dad,
	0x1642ae59, 0xe4292d5a, 0xba3a117e, 0x4851927d, 0x5b016189, 0xa96ae28a,
	0x7da08661, 0x8fcb0562, 0x9c9bf696, 0x6ef07595, 0x417b1dbc, 0xb3109ebf,
	0xa0406d4b, 0x522bee48, 0x86e18aa3, 0x748a09a0, 0x67dafa54, 0x95b17957,
	0xcba24573, 0x39c9c670, 0x2a993584, 0xd8f2b687, 0x0c38d26c, 0xfe53516f,
	0xed03a29b, 0x1f682198, 0x5125dad3, 0xa34e59d0, 0xb01eaa24, 0x42752927,
	0x96bf4dcc, 0x64d4cecf, 0x77843d3b, 0x85efbe38, 0xdbfc821c, 0x2997011f,
	0x3ac7f2eb, 0xc8ac71e8, 0x1c661503, 0xee0d9600, 0xfd5d65f4, 0x0f36e6f7,
	0x61c69362, 0x93ad1061, 0x80fde395, 0x72966096, 0xa65c047d, 0x5437877e,
	0x4767748a, 0xb50cf789, 0xeb1fcbad, 0x197448ae, 0x0a24bb5a, 0xf84f3859,
	0x2c855cb2, 0xdeeedfb1, 0xcdbe2c45, 0x3fd5af46, 0x7198540d, 0x83f3d70e,
	0x90a324fa, 0x62c8a7f9, 0xb602c312, 0x44694011, 0x5739b3e5, 0xa55230e6,
	0xfb410cc2, 0x092a8fc1, 0x1a7a7c35, 0xe811ff36, 0x3cdb9bdd, 0xceb018de,
	0xdde0eb2a, 0x2f8b6829, 0x82f63b78, 0x709db87b, 0x63cd4b8f, 0x91a6c88c,
	0x456cac67, 0xb7072f64, 0xa457dc90, 0x563c5f93, 0x082f63b7, 0xfa44e0b4,
	0xe9141340, 0x1b7f9043, 0xcfb5f4a8, 0x3dde77ab, 0x2e8e845f, 0xdce5075c,
	0x92a8fc17, 0x60c37f14, 0x73938ce0, 0x81f80fe3, 0x55326b08, 0xa759e80b,
	0xb4091bff, 0x466298fc, 0x1871a4d8, 0xea1a27db, 0xf94ad42f, 0x0b21572c,
	0xdfeb33c7, 0x2d80b0c4, 0x3ed04330, 0xccbbc033, 0xa24bb5a6, 0x502036a5,
	0x4370c551, 0xb11b4652, 0x65d122b9, 0x97baa1ba, 0x84ea524e, 0x7681d14d,
	0x2892ed69, 0xdaf96e6a, 0xc9a99d9e, 0x3bc21e9d, 0xef087a76, 0x1d63f975,
	0x0e330a81, 0xfc588982, 0xb21572c9, 0x407ef1ca, 0x532e023e, 0xa145813d,
	0x758fe5d6, 0x87e466d5, 0x94b49521, 0x66df1622, 0x38cc2a06, 0xcaa7a905,
	0xd9f75af1, 0x2b9cd9f2, 0xff56bd19, 0x0d3d3e1a, 0x1e6dcdee, 0xec064eed,
	0xc38d26c4, 0x31e6a5c7, 0x22b65633, 0xd0ddd530, 0x0417b1db, 0xf67c32d8,
	0xe52cc12c, 0x1747422f, 0x49547e0b, 0xbb3ffd08, 0xa86f0efc, 0x5a048dff,
	0x8ecee914, 0x7ca56a17, 0x6ff599e3, 0x9d9e1ae0, 0xd3d3e1ab, 0x21b862a8,
	0x32e8915c, 0xc083125f, 0x144976b4, 0xe622f5b7, 0xf5720643, 0x07198540,
	0x590ab964, 0xab613a67, 0xb831c993, 0x4a5a4a90, 0x9e902e7b, 0x6cfbad78,
	0x7fab5e8c, 0x8dc0dd8f, 0xe330a81a, 0x115b2b19, 0x020bd8ed, 0xf0605bee,
	0x24aa3f05, 0xd6c1bc06, 0xc5914ff2, 0x37faccf1, 0x69e9f0d5, 0x9b8273d6,
	0x88d28022, 0x7ab90321, 0xae7367ca, 0x5c18e4c9, 0x4f48173d, 0xbd23943e,
	0xf36e6f75, 0x0105ec76, 0x12551f82, 0xe03e9c81, 0x34f4f86a, 0xc69f7b69,
	0xd5cf889d, 0x27a40b9e, 0x79b737ba, 0x8bdcb4b9, 0x988c474d, 0x6ae7c44e,
	0xbe2da0a5, 0x4c4623a6, 0x5f16d052, 0xad7d5351,
};

uint32_t walr_crc32c_sw(uint32_t crc, const void *p, size_t n)
{
	const unsigned char *c = p;
	crc = ~crc;
	while (n--)
		crc = crc32c_table[(crc ^ *c++) & 0xff] ^ (crc >> 8);
	return ~crc;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
__attribute__((target("sse4.2"))) static uint32_t crc32c_hw(uint32_t crc, const unsigned char *c, size_t n)
{
	uint64_t r = ~crc & 0xffffffffu;
	for (; n && ((uintptr_t)c & 7); n--)
		r = __builtin_ia32_crc32qi((uint32_t)r, *c++);
	for (; n >= 8; n -= 8, c += 8) {
		uint64_t v;
		memcpy(&v, c, 8);
		r = __builtin_ia32_crc32di(r, v);
	}
	for (; n; n--)
		r = __builtin_ia32_crc32qi((uint32_t)r, *c++);
	return ~(uint32_t)r;
}

uint32_t walr_crc32c(uint32_t crc, const void *p, size_t n)
{
	/* Asked once; the answer never changes, so racing first callers
	 * store the same value. */
	static _Atomic int hw = -1;
	int h = hw;
	if (h < 0)
		hw = h = __builtin_cpu_supports("sse4.2") ? 1 : 0;
	return h ? crc32c_hw(crc, p, n) : walr_crc32c_sw(crc, p, n);
}
#else
uint32_t walr_crc32c(uint32_t crc, const void *p, size_t n)
{
	return walr_crc32c_sw(crc, p, n);
}
#endif

/* The checksum of batch record p[0..len) (len >= WALR_BATCH_HDR), its own
 * field (bytes 16..19) taken as zero. */
static uint32_t batch_crc(const unsigned char *p, size_t len)
{
	static const unsigned char zero[4];
	uint32_t crc = walr_crc32c(0, p, 16);
	crc = walr_crc32c(crc, zero, 4);
	return walr_crc32c(crc, p + 20, len - 20);
}

void walr_batch_seal(unsigned char *rec, size_t len)
{
	walr_put_u32(rec + 16, batch_crc(rec, len));
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
 *  |        |          |       |      | u32   |+kind+rsvd| 6xu16 |
 *  +--------+----------+-------+------+-------+----------+-------+------ - -
 */
void walr_batch_encode(const struct wal_batch *b, unsigned char *out)
{
	walr_put_u64(out, b->route);
	walr_put_u64(out + 8, (uint64_t)b->accept_ns);
	walr_put_u64(out + 16, 0); /* the checksum (16..19), sealed below; 20..23 reserved */
	walr_put_u32(out + 24, b->lines);
	walr_put_u32(out + 28, (uint32_t)b->body_len);
	out[32] = WALR_BATCH_VERSION; /* record version, for in-place evolution */
	out[33] = b->precision;
	out[34] = b->kind; /* WAL_KIND_*: byte 34, reserved-zero before format 3 (so every older record is kind 0) */
	out[35] = 0;
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
	walr_batch_seal(out, (size_t)(p - out) + b->body_len);
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
static int batch_decode(const void *p, size_t len, struct wal_batch *b, uint32_t str_off[WALR_NSTR],
                        uint16_t str_len[WALR_NSTR], size_t *body_off, char *why, size_t whylen, int version)
{
	const unsigned char *c = p;
	if (why && whylen)
		why[0] = '\0';
	if (len < WALR_BATCH_HDR) {
		WHY("record of %zu byte%s is shorter than its %d-byte header", len, walr_s(len), WALR_BATCH_HDR);
		return WAL_ECORRUPT;
	}
	b->route = walr_get_u64(c);
	b->accept_ns = (int64_t)walr_get_u64(c + 8);
	b->lines = walr_get_u32(c + 24);
	b->body_len = walr_get_u32(c + 28);
	b->precision = c[33];
	b->kind = c[34];
	if (c[32] != version) {
		WHY("record version %u (this binary reads %d)", c[32], version);
		return WAL_ECORRUPT;
	}
	/* The checksum first: any damage to any byte is found here, before a
	 * single length is believed. A record that passes it was written so
	 * (a bug, or a hostile file), and every field is still checked. */
	if (version >= 2) {
		uint32_t want = walr_get_u32(c + 16), got = batch_crc(c, len);
		if (want != got) {
			WHY("checksum %08" PRIx32 " does not match the record's %08" PRIx32, got, want);
			return WAL_ECORRUPT;
		}
	}
	if ((version < 2 && walr_get_u32(c + 16) != 0) || walr_get_u32(c + 20) != 0 || c[35] != 0 ||
	    (version < 2 && c[34] != 0)) {
		WHY("reserved header bytes are not zero");
		return WAL_ECORRUPT;
	}
	/* Unlike the precision, an unknown kind is damage (or a newer
	 * binary's record in a store it did not upgrade): what the body is
	 * cannot be known, so nothing of it may be sent. */
	if (b->kind > WAL_KIND_STATEMENT) {
		WHY("unknown batch kind %u", b->kind);
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
		WHY("string and body lengths add up to %zu byte%s, the record holds %zu", off + b->body_len,
		    walr_s(off + b->body_len), len);
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
		WHY("header says %" PRIu32 " point%s, the body holds %zu line%s", b->lines, walr_s(b->lines), nl,
		    walr_s(nl));
		return WAL_ECORRUPT;
	}
	if (body_off)
		*body_off = off;
	return 0;
}

int walr_batch_decode(const void *p, size_t len, struct wal_batch *b, uint32_t str_off[WALR_NSTR],
                      uint16_t str_len[WALR_NSTR], size_t *body_off, char *why, size_t whylen)
{
	return batch_decode(p, len, b, str_off, str_len, body_off, why, whylen, WALR_BATCH_VERSION);
}

int walr_batch_decode_v1(const void *p, size_t len, struct wal_batch *b, char *why, size_t whylen)
{
	return batch_decode(p, len, b, NULL, NULL, NULL, why, whylen, 1);
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
		WHY("dead-letter record of %zu byte%s is shorter than its %d-byte header", len, walr_s(len),
		    WALR_DEAD_HDR);
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
		WHY("message of %zu byte%s does not fit in a record of %zu", ml, walr_s(ml), len);
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
