/*
 * query_targets: see query_targets.h.
 */
#include "cmd/relayd/query_targets.h"

#include <inttypes.h>
#include <string.h>

#include "relay/delivery/replay.h"

void query_targets_describe(const struct relay_config *cfg, FILE *f)
{
	if (!cfg->query_enabled) {
		fprintf(f, "queries: off\n");
		return;
	}
	fprintf(f, "queries: to ");
	for (size_t k = 0; k < cfg->nquery; k++)
		fprintf(f, "%s%s", k ? ", " : "", cfg->backends[cfg->query_order[k]].name);
	fprintf(f, " (the first caught up within %" PRIu64 " ms; else %s); state changes %s\n", cfg->query_max_lag_ms,
	        cfg->query_when_behind == RELAY_BEHIND_REFUSE ? "refused" : "the least behind",
	        cfg->query_state_changing == RELAY_STATE_QUEUE ? "queued" : "refused");
}

/* The query's database is held on this backend (it did not exist there):
 * the backend lacks those writes, as if they were pending, from the oldest
 * of them on. Nothing is known when the list cannot be read: the backend
 * is not up for this query then. */
static void count_held(struct wal *wal, int id, const char *db, struct http_query_target *t)
{
	struct wal_held *h = NULL;
	size_t n = 0;
	if (wal_held_list(wal, id, &h, &n) != 0) {
		t->up = 0;
		return;
	}
	for (size_t k = 0; k < n; k++)
		if (strcmp(h[k].db, db) == 0 && h[k].batches &&
		    (!t->oldest_pending_ns || h[k].oldest_accept_ns < t->oldest_pending_ns))
			t->oldest_pending_ns = h[k].oldest_accept_ns;
	wal_held_free(h, n);
}

size_t query_targets(void *arg, const char *db, struct http_query_target *out, size_t max)
{
	const struct query_targets_src *src = arg;
	const struct relay_config *cfg = src->cfg;
	size_t n = 0;

	for (size_t k = 0; k < cfg->nquery && n < max; k++) {
		size_t i = cfg->query_order[k];
		const struct relay_backend_config *b = &cfg->backends[i];
		const struct replay_worker *w = backends_worker(src->backends, src->ids[i]);
		struct replay_view v;
		struct wal_backend_stat st;
		struct net_tls_ctx *tls = b->tls && w ? replay_worker_tls(w) : NULL;
		/* An https backend whose TLS context could not be made (its
		 * worker holds, saying why) is never asked in plain HTTP. */
		if (b->tls && !tls)
			continue;
		struct http_query_target *t = &out[n++];

		memset(t, 0, sizeof(*t));
		t->name = b->name;
		t->host = b->host;
		t->port = b->port;
		t->path_prefix = b->path_prefix;
		t->username = b->username;
		t->password = b->password;
		t->token = b->token;
		t->connect_timeout_ms = b->connect_timeout_ms;
		t->tls = tls; /* the worker's reference: the upstream takes its own */
		t->server_name = b->tls_server_name;
		if (w) {
			replay_worker_view(w, &v);
			/* "up": delivering, or nothing to deliver; retrying, down,
			 * holding and a failing queue are not. */
			t->up = v.health == REPLAY_UP;
			t->paused = v.paused;
		}
		memset(&st, 0, sizeof(st));
		if (wal_backend_stat(src->wal, b->name, &st) == 0) {
			t->oldest_pending_ns = st.pending_batches ? st.oldest_accept_ns : 0;
			t->paused = t->paused || st.paused;
			if (db && st.held_batches)
				count_held(src->wal, src->ids[i], db, t);
		} else {
			/* Its queue cannot be read: nothing says it is caught up. */
			t->up = 0;
		}
	}
	return n;
}
