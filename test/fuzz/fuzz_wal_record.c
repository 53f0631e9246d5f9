/*
 * fuzz_wal_record: the queue's record decoders on any bytes, as a damaged
 * or hostile data.mdb would hand them over. The first byte picks how:
 * bit 0 clear, a batch record (walr_batch_decode); set, a dead-letter
 * record (walr_dead_decode, then the batch record inside it unless it is
 * a quarantined one). Bit 1 set: the batch record's checksum is written
 * first (walr_batch_seal), as a hostile file or a bug would have it, so
 * that mutations reach the checks of every field behind the checksum.
 * The rest is the record, in a buffer of exactly its size, so that ASan
 * sees any read past it.
 *
 * Checks: a refused record always says why; an accepted batch record
 * holds only what the format allows (a good checksum, a stored time,
 * a body ending in '\n', no more points than the body has newlines, a
 * kind of the format's (header byte 34: lines or a statement),
 * strings and body exactly filling the record), and encoding what was
 * decoded gives back the same bytes, so nothing in an accepted record
 * goes unchecked.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wal/wal_record.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_batch(unsigned char *p, size_t len, int seal)
{
	if (seal && len >= WALR_BATCH_HDR)
		walr_batch_seal(p, len);
	struct wal_batch b;
	uint32_t off[WALR_NSTR];
	uint16_t sl[WALR_NSTR];
	size_t body_off;
	char why[200];
	memset(&b, 0, sizeof(b));
	if (walr_batch_decode(p, len, &b, off, sl, &body_off, why, sizeof(why))) {
		if (!why[0])
			abort(); /* refused without a reason */
		return;
	}
	if (why[0] || !walr_time_ok(b.accept_ns) || body_off + b.body_len != len || b.kind > WAL_KIND_STATEMENT ||
	    b.kind != p[34])
		abort();
	for (int i = 0; i < WALR_NSTR; i++)
		if (off[i] < WALR_BATCH_HDR || off[i] + sl[i] > body_off)
			abort();
	const unsigned char *body = p + body_off;
	size_t nl = 0;
	for (size_t i = 0; i < b.body_len; i++)
		nl += body[i] == '\n';
	if (b.lines > nl || (b.body_len && body[b.body_len - 1] != '\n'))
		abort();
	/* Encode it again: the same bytes (strings with a NUL inside cannot be
	 * stored through the C API; such a record is left there). */
	char *strs[WALR_NSTR];
	int has_nul = 0;
	for (int i = 0; i < WALR_NSTR; i++) {
		has_nul |= memchr(p + off[i], '\0', sl[i]) != NULL;
		strs[i] = malloc((size_t)sl[i] + 1);
		memcpy(strs[i], p + off[i], sl[i]);
		strs[i][sl[i]] = '\0';
	}
	if (!has_nul) {
		struct wal_batch e = b;
		e.db = strs[0];
		e.rp = strs[1];
		e.user = strs[2];
		e.password = strs[3];
		e.org = strs[4];
		e.token = strs[5];
		e.body = (const char *)body;
		if (walr_batch_size(&e) != len)
			abort();
		unsigned char *again = malloc(len);
		walr_batch_encode(&e, again);
		if (memcmp(again, p, len) != 0)
			abort();
		free(again);
	}
	for (int i = 0; i < WALR_NSTR; i++)
		free(strs[i]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	size_t len = size - 1;
	unsigned char *p = malloc(len ? len : 1);
	memcpy(p, data + 1, len);
	if (!(data[0] & 1)) {
		check_batch(p, len, data[0] & 2);
	} else {
		struct walr_dead d;
		size_t ml, boff;
		char why[200];
		if (walr_dead_decode(p, len, &d, &ml, &boff, why, sizeof(why))) {
			if (!why[0])
				abort();
		} else {
			if (boff != WALR_DEAD_HDR + ml || boff > len || !walr_time_ok(d.dead_ns))
				abort();
			if (!(d.flags & WALR_DEAD_RAW)) {
				/* The batch record inside, in a buffer of its own size. */
				unsigned char *inner = malloc(len - boff ? len - boff : 1);
				memcpy(inner, p + boff, len - boff);
				check_batch(inner, len - boff, data[0] & 2);
				free(inner);
			}
		}
	}
	free(p);
	return 0;
}
