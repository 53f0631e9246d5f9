/*
 * fuzz_influxql: any bytes through iql_split, checking what must hold
 * whatever the input: statements lie inside the query, in order, without
 * overlap and without the ';' between them; the query's class is the
 * highest of its statements'; and each statement, split again on its own,
 * is one statement of the same class and verb (so the class does not
 * depend on what came before). Violations abort().
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "relay/base/influxql.h"

#define MAXST 16

static void check(int cond)
{
	if (!cond)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *q = (const char *)data;
	struct iql_stmt st[MAXST];
	size_t count = 0;
	char err[128];
	enum iql_class all = iql_split(q, size, st, MAXST, &count, err, sizeof(err));
	check(all >= IQL_EMPTY && all <= IQL_INVALID);
	check((all == IQL_INVALID) == (err[0] != '\0'));
	check((all == IQL_EMPTY) == (count == 0 && !err[0]));
	size_t prev_end = 0;
	enum iql_class max = IQL_EMPTY;
	for (size_t i = 0; i < count && i < MAXST; i++) {
		check(st[i].len > 0);
		check(st[i].off >= prev_end && st[i].off + st[i].len <= size);
		check(memchr(st[i].verb, '\0', IQL_VERB_MAX) != NULL);
		prev_end = st[i].off + st[i].len;
		if (st[i].cls > max)
			max = st[i].cls;
		struct iql_stmt one;
		size_t n1 = 0;
		enum iql_class c1 = iql_split(q + st[i].off, st[i].len, &one, 1, &n1, NULL, 0);
		check(n1 == 1 && c1 == st[i].cls && one.off == 0 && one.len == st[i].len);
		check(strcmp(one.verb, st[i].verb) == 0);
	}
	/* a scan error (an unclosed string) may come after the last statement */
	if (count <= MAXST && !(all == IQL_INVALID && max != IQL_INVALID))
		check(all == max);
	return 0;
}
