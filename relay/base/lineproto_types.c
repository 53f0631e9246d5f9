/*
 * lineproto_types: the table of field types of one request (measurement,
 * field key, hour) -> type, which lineproto.c consults for each line whose
 * fields are not a shape it has just seen. See lineproto_types.h.
 */
#include "relay/base/lineproto_types.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const ftype_names[] = { "", "float", "integer", "unsigned", "string", "boolean" };

void lp_ftypes_init(struct ftypes *t)
{
	for (int i = 0; i < SHAPES; i++)
		t->shapes[i].meas = NULL;
	memset(t->stack, 0, sizeof(t->stack));
	t->slots = t->stack;
	t->cap = FTYPES_STACK;
	t->used = 0;
	t->fields = t->fstack;
	t->nfields = 0;
	t->fcap = FIELDS_STACK;
}

void lp_ftypes_release(struct ftypes *t)
{
	if (t->slots != t->stack)
		free(t->slots);
	if (t->fields != t->fstack)
		free(t->fields);
}

static struct ftype_slot *ftypes_find(struct ftypes *t, uint64_t h, const char *meas, size_t mlen, const char *key,
                                      size_t klen, int64_t hour)
{
	for (size_t i = h & (t->cap - 1);; i = (i + 1) & (t->cap - 1)) {
		struct ftype_slot *s = &t->slots[i];
		if (s->hash == 0 || (s->hash == h && s->hour == hour && s->mlen == mlen && s->klen == klen &&
		                     memcmp(s->meas, meas, mlen) == 0 && memcmp(s->key, key, klen) == 0))
			return s;
	}
}

/* Record that key of meas has type ty in hour; the slot that says
 * otherwise, or NULL. */
static const struct ftype_slot *ftypes_check(struct ftypes *t, uint64_t mhash, const char *meas, size_t mlen,
                                             const struct ftype_field *f, int64_t hour)
{
	uint64_t h = hash_bytes(mhash ^ (uint64_t)hour, f->key, f->klen);
	h |= 1; /* 0 marks an empty slot */
	struct ftype_slot *s = ftypes_find(t, h, meas, mlen, f->key, f->klen, hour);
	if (s->hash)
		return s->type == f->type ? NULL : s;
	if (t->used + 1 > t->cap / 2) {
		struct ftype_slot *old = t->slots;
		size_t ocap = t->cap;
		t->cap *= 2;
		t->slots = xcalloc(t->cap, sizeof(*t->slots));
		for (size_t i = 0; i < ocap; i++) {
			const struct ftype_slot *o = &old[i];
			if (o->hash)
				*ftypes_find(t, o->hash, o->meas, o->mlen, o->key, o->klen, o->hour) = *o;
		}
		if (old != t->stack)
			free(old);
		s = ftypes_find(t, h, meas, mlen, f->key, f->klen, hour);
	}
	*s = (struct ftype_slot){ h, meas, f->key, (uint32_t)mlen, f->klen, hour, f->type };
	t->used++;
	return NULL;
}

const char *lp_ftypes_record(struct ftypes *t, struct ftype_shape *sh, const char *meas, size_t mlen,
                             uint64_t mhash, int64_t hour, char *why, size_t whylen)
{
	for (size_t i = 0; i < t->nfields; i++) {
		const struct ftype_slot *s = ftypes_check(t, mhash, meas, mlen, &t->fields[i], hour);
		if (!s)
			continue;
		char name[25];
		size_t n = t->fields[i].klen < sizeof(name) - 1 ? t->fields[i].klen : sizeof(name) - 1;
		for (size_t j = 0; j < n; j++) {
			char c = t->fields[i].key[j];
			name[j] = c >= 0x20 && c < 0x7f ? c : '?';
		}
		name[n] = '\0';
		snprintf(why, whylen, "field type conflict (\"%s\" is %s earlier in this request, %s here)", name,
		         ftype_names[s->type], ftype_names[t->fields[i].type]);
		return why;
	}
	if (t->nfields <= FIELDS_STACK) {
		sh->meas = meas;
		sh->mlen = (uint32_t)mlen;
		sh->hour = hour;
		sh->nfields = (uint32_t)t->nfields;
		memcpy(sh->fields, t->fields, t->nfields * sizeof(t->fields[0]));
	}
	return NULL;
}
