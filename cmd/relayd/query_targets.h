/*
 * query_targets: the door's view of the query backends (relay/door cannot
 * know the delivery): each backend of query.backends with its address,
 * its own credentials, whether its replay worker delivers and its oldest
 * pending write.
 */
#ifndef RELAYD_QUERY_TARGETS_H
#define RELAYD_QUERY_TARGETS_H

#include <stddef.h>
#include <stdio.h>

#include "relay/base/config.h"
#include "relay/delivery/backends.h"
#include "relay/door/http_server.h"
#include "wal/wal.h"

/* What query_targets() reads; the program owns every pointer, which must
 * stay valid while the HTTP server runs. */
struct query_targets_src {
	const struct relay_config *cfg;
	const int *ids;               /* queue id of cfg->backends[i] */
	struct backends *backends;
	struct wal *wal;
};

/* http_query_targets_fn over a struct query_targets_src (arg). One short
 * read transaction per backend for its oldest pending write, and one more
 * for a backend that holds databases, to see whether db is among them. */
size_t query_targets(void *arg, const char *db, struct http_query_target *out, size_t max);

/* One line for --check-config: where queries go, in which order, and what
 * happens when none is caught up ("queries: off" when disabled). */
void query_targets_describe(const struct relay_config *cfg, FILE *f);

#endif
