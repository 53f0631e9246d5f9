/*
 * lineproto_types: the field types of one request, for lineproto.c only
 * (private to relay/base; callers use lineproto.h).
 *
 * InfluxDB keeps a field's type per measurement and shard, and refuses
 * points that give a field another type than the shard holds (400 "field
 * type conflict"), those of the same request included. A request that
 * does so within one shard is refused here, naming the line. Shard groups
 * last whole hours (at least one) from the epoch, so two points in the
 * same hour are in the same shard whatever the retention policy: the
 * table is keyed by (measurement, field key, hour), as written, with the
 * type each got first. Points in different hours may be in different
 * shards and are left to the backend. Open addressing, on the stack
 * first, doubling on the heap; keys point into the body.
 *
 * The per-field and per-line steps (ftypes_add_field, hash_bytes,
 * hour_of, same_shape) are inline here: they run for every field of every
 * line. The table itself (lookup, growth, the conflict message) is in
 * lineproto_types.c.
 */
#ifndef RELAY_LINEPROTO_TYPES_H
#define RELAY_LINEPROTO_TYPES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "relay/base/util.h"

/* Field types, as InfluxDB keeps them per measurement. */
enum ftype { FT_FLOAT = 1, FT_INT, FT_UINT, FT_STRING, FT_BOOL };

#define HOUR_NS INT64_C(3600000000000)

struct ftype_slot {
	uint64_t hash;          /* 0: empty */
	const char *meas, *key;
	uint32_t mlen, klen;
	int64_t hour;
	enum ftype type;
};

/* A field of the line being parsed, checked once its time is known. */
struct ftype_field {
	const char *key;
	uint32_t klen;
	enum ftype type;
};

#define FTYPES_STACK 64
#define FIELDS_STACK 32

/*
 * The fast path: most lines repeat the shape of an earlier line of their
 * measurement (the same field keys with the same types, in the same hour),
 * which the table has already taken. A few recent shapes, one per
 * measurement hash, are compared key by key, which costs a fraction of the
 * lookups.
 */
#define SHAPES 16
struct ftype_shape {
	const char *meas;       /* NULL: empty */
	uint32_t mlen, nfields;
	int64_t hour;
	struct ftype_field fields[FIELDS_STACK];
};

struct ftypes {
	struct ftype_slot *slots;
	size_t cap, used;       /* cap a power of two; used <= cap / 2 */
	struct ftype_field *fields;
	size_t nfields, fcap;
	struct ftype_slot stack[FTYPES_STACK];
	struct ftype_field fstack[FIELDS_STACK];
	struct ftype_shape shapes[SHAPES];
};

/* Make t an empty table (on its own stack arrays). Never fails. */
void lp_ftypes_init(struct ftypes *t);
/* Free what t took from the heap; t must be initialized again before use. */
void lp_ftypes_release(struct ftypes *t);
/*
 * The slow path of a line's check, when its fields (t->fields, nfields of
 * them) are not the shape sh (ftypes_shape) already holds: record each
 * field of meas in hour, and on the first whose type differs from the one
 * the table holds, write a "field type conflict" message naming it into
 * why (whylen bytes) and return why. Otherwise the line becomes sh's shape
 * (when its fields fit) and NULL is returned. Keys are kept as pointers
 * into the body, which must outlive t; the table grows with xcalloc
 * (fatal when out of memory).
 */
const char *lp_ftypes_record(struct ftypes *t, struct ftype_shape *sh, const char *meas, size_t mlen,
                             uint64_t mhash, int64_t hour, char *why, size_t whylen);

/* Note that the line being parsed has field key[0..klen) of type type;
 * key points into the body. Grows t->fields with xmalloc past FIELDS_STACK. */
static inline void ftypes_add_field(struct ftypes *t, const char *key, size_t klen, enum ftype type)
{
	if (t->nfields == t->fcap) {
		size_t cap = t->fcap * 2;
		struct ftype_field *f = xmalloc(cap * sizeof(*f));
		memcpy(f, t->fields, t->nfields * sizeof(*f));
		if (t->fields != t->fstack)
			free(t->fields);
		t->fields = f;
		t->fcap = cap;
	}
	t->fields[t->nfields++] = (struct ftype_field){ key, (uint32_t)klen, type };
}

/* FNV-1a: bytes of names are short, and any decent spread will do. */
static inline uint64_t hash_bytes(uint64_t h, const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		h ^= (unsigned char)p[i];
		h *= UINT64_C(0x100000001b3);
	}
	return h;
}

/* The hour since the epoch that ns falls in (rounding down). */
static inline int64_t hour_of(int64_t ns)
{
	return ns / HOUR_NS - (ns % HOUR_NS < 0);
}

/* a[0..n) == b[0..n), for the short names of a line: word loads, no call. */
static inline bool short_eq(const char *a, const char *b, size_t n)
{
	uint64_t x, y;
	if (n >= 8) {
		for (size_t i = 0; i + 8 <= n; i += 8) {
			memcpy(&x, a + i, 8);
			memcpy(&y, b + i, 8);
			if (x != y)
				return false;
		}
		memcpy(&x, a + n - 8, 8);
		memcpy(&y, b + n - 8, 8);
		return x == y;
	}
	for (size_t i = 0; i < n; i++)
		if (a[i] != b[i])
			return false;
	return true;
}

/* Whether the line's fields (in t) have the shape sh. */
static inline bool same_shape(const struct ftypes *t, const struct ftype_shape *sh, const char *meas,
                              size_t mlen, int64_t hour)
{
	if (!sh->meas || sh->mlen != mlen || sh->hour != hour || sh->nfields != t->nfields ||
	    !short_eq(sh->meas, meas, mlen))
		return false;
	for (size_t i = 0; i < t->nfields; i++) {
		const struct ftype_field *a = &t->fields[i], *b = &sh->fields[i];
		if (a->klen != b->klen || a->type != b->type || !short_eq(a->key, b->key, a->klen))
			return false;
	}
	return true;
}

/* The recent shape slot for a measurement (its hash) in hour. */
static inline struct ftype_shape *ftypes_shape(struct ftypes *t, uint64_t mhash, int64_t hour)
{
	/* The high bits of a multiplicative mix: FNV's low bits follow the
	 * last byte too closely to spread a few names. */
	return &t->shapes[((mhash ^ (uint64_t)hour) * UINT64_C(0x9e3779b97f4a7c15)) >> 60];
}

#endif
