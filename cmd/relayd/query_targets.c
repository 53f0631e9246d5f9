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

size_t query_targets(void *arg, struct http_query_target *out, size_t max)
{
	const struct query_targets_src *src = arg;
	const struct relay_config *cfg = src->cfg;
	size_t n = 0;

	for (size_t k = 0; k < cfg->nquery && n < max; k++) {
		size_t i = cfg->query_order[k];
		const struct relay_backend_config *b = &cfg->backends[i];
		const struct replay_worker *w = backends_worker(src->backends, src->ids[i]);
		struct http_query_target *t = &out[n++];
		struct replay_view v;
		struct wal_backend_stat st;

		memset(t, 0, sizeof(*t));
		t->name = b->name;
		t->host = b->host;
		t->port = b->port;
		t->path_prefix = b->path_prefix;
		t->username = b->username;
		t->password = b->password;
		t->token = b->token;
		t->connect_timeout_ms = b->connect_timeout_ms;
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
		} else {
			/* Its queue cannot be read: nothing says it is caught up. */
			t->up = 0;
		}
	}
	return n;
}
