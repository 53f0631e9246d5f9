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
/* Precision codes of the format: 0 ns, 1 us, 2 ms, 3 s, 4 m, 5 h. */
#define WALR_PRECISION_MAX 5
/* Size of the encoded batch, or 0 if a string is longer than 65535 bytes
 * or the body longer than 4 GiB - 1. */
size_t walr_batch_size(const struct wal_batch *b);
/* Encode b into out (walr_batch_size(b) bytes). */
void walr_batch_encode(const struct wal_batch *b, unsigned char *out);
/*
 * Decode the header of p[0..len) into b: route, accept_ns, lines,
 * precision, body_len; with strings != NULL also the string offsets into
 * p (strings[i] = offset, lens[i] = length) and *body_off. Returns 0 or
 * WAL_ECORRUPT when sizes disagree or accept_ns is not a time a record may
 * hold (walr_time_ok); b's fields may then be partly set.
 */
int walr_batch_decode(const void *p, size_t len, struct wal_batch *b,
                      uint32_t str_off[WALR_NSTR], uint16_t str_len[WALR_NSTR], size_t *body_off);

/* dead DBI value: a 24-byte header, the backend's message, then a batch
 * record exactly as in the batches DBI. */
#define WALR_DEAD_HDR 24
struct walr_dead {
	int32_t status;    /* HTTP status, or a negative transport failure */
	uint32_t attempts;
	int64_t dead_ns;
	const char *msg;   /* NUL-terminated; at most 65535 bytes kept */
};
size_t walr_dead_size(const struct walr_dead *d, const struct wal_batch *b);
void walr_dead_encode(const struct walr_dead *d, const struct wal_batch *b, unsigned char *out);
/* Decode the header; d->msg and *msg_len point into p, *batch_off is where the
 * batch record starts. Returns 0 or WAL_ECORRUPT (too short, or dead_ns not
 * a time a record may hold). */
int walr_dead_decode(const void *p, size_t len, struct walr_dead *d, size_t *msg_len, size_t *batch_off);

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
