/*
 * wal_record: pure encoding and decoding of what wal stores in LMDB. The
 * on-disk structures are fixed-width, little-endian, and separate from the
 * in-memory ones (struct wal_batch), so that the format does not change
 * when a compiler or a struct does. docs/architecture.md draws them.
 * Internal to wal/: not included by anything outside it.
 */
#ifndef RELAY_WAL_RECORD_H
#define RELAY_WAL_RECORD_H

#include <stddef.h>
#include <stdint.h>
#include "wal/wal.h"

/* "" for 1, else "s": the words of why-texts with a count ("1 byte",
 * "2 bytes"). wal/ cannot use relay/base's relay_s (it knows nothing
 * above it), hence its own. */
static inline const char *walr_s(uint64_t n)
{
	return n == 1 ? "" : "s";
}

/* meta DBI, key "format": what queue this is and which format. */
#define WALR_MAGIC "RELAYDQ\0"
#define WALR_FORMAT_SIZE 24
struct walr_format {
	uint32_t version;
	int64_t created_ns;
};
void walr_format_encode(const struct walr_format *f, unsigned char out[WALR_FORMAT_SIZE]);
/* Returns 0, WAL_ENOTQUEUE (bad magic or size). */
int walr_format_decode(const void *p, size_t len, struct walr_format *f);

/*
 * Stored times (a batch's accept_ns, a dead letter's dead_ns) lie within
 * [0, WALR_TIME_MAX_NS], 1970-01-01 to 2200-01-01 UTC: no clock of a
 * running relayd wrote anything outside, so a record that holds such a
 * time is corrupt and its decoder says so. Readers can then subtract a
 * stored time from the current one without overflow.
 */
#define WALR_TIME_MAX_NS INT64_C(7258118400000000000)
/* 1 when ns is a time a record may hold, else 0. */
int walr_time_ok(int64_t ns);

/* batches DBI value: a 48-byte header, then the six strings, then body. */
#define WALR_BATCH_HDR 48
#define WALR_NSTR 6 /* db rp user password org token */
/* Size of the encoded batch, or 0 if a string is longer than 65535 bytes
 * or the body longer than 4 GiB - 1. */
size_t walr_batch_size(const struct wal_batch *b);
/* Encode b into out (walr_batch_size(b) bytes). */
void walr_batch_encode(const struct wal_batch *b, unsigned char *out);
/* The record version of a batch record (header byte 32): 2, with a CRC32C
 * of the whole record in bytes 16..19 (format versions 2 and 3: format 3
 * gave reserved byte 34 to the kind, so a format-2 record is a format-3
 * record of kind 0 and the record version stayed); 1 had none (format
 * version 1, read only to upgrade a store, walr_batch_decode_v1). */
#define WALR_BATCH_VERSION 2
/*
 * Decode and check the batch record p[0..len) into b: route, accept_ns,
 * lines, precision, body_len; with str_off != NULL also the string
 * offsets into p (str_off[i] = offset, str_len[i] = length) and
 * *body_off. Nothing outside p[0..len) is ever read. Every field is
 * checked against what the format and the record allow: the length
 * (at least the header, and exactly the header, strings and body), the
 * record version, the checksum (CRC32C over the whole record, its own four
 * bytes taken as zero: checked before any length is believed), the
 * reserved bytes (zero), the kind (byte 34: WAL_KIND_LINES or
 * WAL_KIND_STATEMENT, anything else is corrupt), accept_ns (walr_time_ok), a
 * body ending in '\n' when not empty, and
 * `lines` at most the body's number of '\n' (a line may hold a quoted
 * newline, never fewer newlines than points). Not the precision code: a
 * batch with a code above WAL_PRECISION_MAX is whole otherwise, and the
 * delivery side dead-letters it with a reason (its body kept).
 * Returns 0, or WAL_ECORRUPT with why[0..whylen) (may be NULL) saying
 * in words what is wrong; b's fields may then be partly set and must
 * not be trusted.
 */
int walr_batch_decode(const void *p, size_t len, struct wal_batch *b, uint32_t str_off[WALR_NSTR],
                      uint16_t str_len[WALR_NSTR], size_t *body_off, char *why, size_t whylen);
/* The same checks for a record of version 1 (no checksum): to upgrade a
 * store of format version 1 (wal_open). */
int walr_batch_decode_v1(const void *p, size_t len, struct wal_batch *b, char *why, size_t whylen);
/* Write the checksum of batch record rec[0..len) (version 2) after a field
 * of it was changed in place. */
void walr_batch_seal(unsigned char *rec, size_t len);
/* CRC32C of p[0..n), continuing crc (0 to start): the processor's crc32
 * instruction where there is one (x86-64 with SSE4.2), else the table.
 * walr_crc32c_sw is the table alone (the tests compare the two). */
uint32_t walr_crc32c(uint32_t crc, const void *p, size_t n);
uint32_t walr_crc32c_sw(uint32_t crc, const void *p, size_t n);

/* dead DBI value: a 24-byte header, the backend's message, then a batch
 * record exactly as in the batches DBI. */
#define WALR_DEAD_HDR 24
/* dead header byte 18: flags. WALR_DEAD_RAW: what follows the message is
 * the raw bytes of a batch record that could not be decoded (moved there
 * by wal_quarantine), not a batch record; msg says what was wrong. */
#define WALR_DEAD_RAW 0x01
struct walr_dead {
	int32_t status;    /* HTTP status, or a negative transport failure; 0 for a quarantined record */
	uint32_t attempts;
	int64_t dead_ns;
	const char *msg;   /* on encode NUL-terminated, at most 65535 bytes kept; on decode msg_len bytes */
	uint8_t flags;     /* out of decode: WALR_DEAD_* */
};
size_t walr_dead_size(const struct walr_dead *d, const struct wal_batch *b);
void walr_dead_encode(const struct walr_dead *d, const struct wal_batch *b, unsigned char *out);
/* A dead-letter record holding the raw bytes raw[0..raw_len) of a record
 * that does not decode (flag WALR_DEAD_RAW): its size, and its encoding. */
size_t walr_dead_raw_size(const struct walr_dead *d, size_t raw_len);
void walr_dead_raw_encode(const struct walr_dead *d, const void *raw, size_t raw_len, unsigned char *out);
/* Decode the header; d->msg and *msg_len point into p, *batch_off is where the
 * batch record (or, with WALR_DEAD_RAW in d->flags, the raw bytes) starts.
 * Returns 0 or WAL_ECORRUPT with why (too short, dead_ns not a time a
 * record may hold, unknown flags or reserved bytes, a message longer than
 * the record). */
int walr_dead_decode(const void *p, size_t len, struct walr_dead *d, size_t *msg_len, size_t *batch_off, char *why,
                     size_t whylen);

/* backends DBI value, keyed by name. */
#define WALR_BACKEND_SIZE 96
struct walr_backend {
	uint32_t id;
	uint32_t flags;
	uint64_t cursor;
	uint64_t pending_batches;
	uint64_t pending_points;
	uint64_t pending_bytes;
	uint64_t dead_batches;
	uint64_t dead_bytes;
	uint64_t delivered_batches;
	uint64_t delivered_points;
	int64_t last_delivery_ns;
	int64_t created_ns;
};
void walr_backend_encode(const struct walr_backend *r, unsigned char out[WALR_BACKEND_SIZE]);
int walr_backend_decode(const void *p, size_t len, struct walr_backend *r);

/* Sequence keys: big-endian, so LMDB's byte order is numeric order and
 * MDB_APPEND can be used. */
void walr_seq_encode(uint64_t seq, unsigned char out[8]);
uint64_t walr_seq_decode(const void *p);

/* Little-endian helpers. */
void walr_put_u16(unsigned char *p, uint16_t v);
void walr_put_u32(unsigned char *p, uint32_t v);
void walr_put_u64(unsigned char *p, uint64_t v);
uint16_t walr_get_u16(const unsigned char *p);
uint32_t walr_get_u32(const unsigned char *p);
uint64_t walr_get_u64(const unsigned char *p);

#endif
