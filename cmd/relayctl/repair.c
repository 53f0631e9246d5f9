/*
 * relayctl's repairs of one backend's delivery: pause and resume (kept in
 * the queue), retry (relayd skips its backoff wait), purge (every pending
 * batch dropped). Each change is nudged to a running relayd.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/relayctl/relayctl.h"

/* pause and resume: which one, the command's name says. */
int cmd_pause_resume(const struct ctl *c)
{
	int paused = strcmp(c->cmd->name, "pause") == 0;
	const char *backend = c->args[0];
	struct backend_queue q;
	if (open_backend_to_change(c, backend, c->cmd->queue, &q))
		return 1;
	int rc = wal_backend_set_paused(q.w, q.id, paused);
	wal_close(q.w);
	if (rc) {
		fprintf(stderr, "relayctl: cannot %s backend '%s': %s\n", paused ? "pause" : "resume", backend,
			wal_strerror(rc));
		return 1;
	}
	struct rbuf out = RBUF_INIT;
	if (c->json) {
		json_t *doc = backend_doc(backend);
		json_object_set_new(doc, "paused", json_boolean(paused));
		nudge(c, backend, NULL, doc);
		put_json_line(&out, doc);
	} else {
		if (paused)
			rbuf_appendf(&out, "backend '%s' paused: its queue keeps filling; 'relayctl resume %s' restarts delivery\n",
				     backend, backend);
		else
			rbuf_appendf(&out, "backend '%s' resumed\n", backend);
		nudge(c, backend, &out, NULL);
	}
	flush_out(&out);
	rbuf_release(&out);
	return 0;
}

int cmd_retry(const struct ctl *c)
{
	const char *backend = c->args[0];
	if (known_backend(c, backend) < 0)
		return 1;
	char line[128], *reply;
	snprintf(line, sizeof(line), "retry %s", backend);
	int rc = ask_relayd(c, line, &reply);
	if (rc == 0 && c->json) {
		struct rbuf out = RBUF_INIT;
		json_t *doc = backend_doc(backend);
		json_object_set_new(doc, "retry", json_true());
		put_json_line(&out, doc);
		flush_out(&out);
		rbuf_release(&out);
	} else if (rc == 0) {
		printf("relayd retries backend '%s' now\n", shown(backend));
	} else if (rc == 1 && !relayd_pid(c)) {
		fprintf(stderr, "relayctl: relayd is not running: every backend is tried as soon as it starts\n");
	} else {
		fprintf(stderr, "relayctl: relayd did not retry backend '%s': %s\n", shown(backend),
			reply ? shown(reply) : "it does not answer on its control socket");
	}
	free(reply);
	return rc == 0 ? 0 : 1;
}

int cmd_purge(const struct ctl *c)
{
	const char *backend = c->args[0];
	struct backend_queue q;
	/* without --yes only to say what it would drop */
	if (open_backend_to_change(c, backend, c->yes ? c->cmd->queue : WAL_F_RDONLY, &q))
		return 1;
	if (!c->yes) {
		struct wal_backend_stat st;
		memset(&st, 0, sizeof(st));
		wal_backend_stat(q.w, backend, &st);
		wal_close(q.w);
		fprintf(stderr,
			"relayctl: not purging without --yes: it would drop %s%" PRIu64 " pending %s (%" PRIu64
			" %s) of backend '%s'\n",
			st.pending_batches == 1 ? "its " : "all ", st.pending_batches,
			relay_plural(st.pending_batches, "batch", "batches"), st.pending_points,
			relay_plural(st.pending_points, "point", "points"), backend);
		return 1;
	}
	struct wal_count n;
	int rc = wal_purge(q.w, q.id, &n);
	wal_close(q.w);
	if (rc) {
		fprintf(stderr, "relayctl: cannot purge backend '%s': %s\n", backend, wal_strerror(rc));
		return 1;
	}
	struct rbuf out = RBUF_INIT;
	if (c->json) {
		json_t *doc = backend_doc(backend);
		json_object_set_new(doc, "purged_batches", u64_json(n.batches));
		json_object_set_new(doc, "purged_points", u64_json(n.points));
		json_object_set_new(doc, "purged_bytes", u64_json(n.bytes));
		json_object_set_new(doc, "purged_corrupt", u64_json(n.corrupt));
		nudge(c, backend, NULL, doc);
		put_json_line(&out, doc);
	} else {
		char b[32];
		human_bytes(n.bytes, b, sizeof(b));
		rbuf_appendf(&out, "purged %" PRIu64 " %s (%" PRIu64 " %s, %s) of backend '%s'", n.batches,
			     relay_plural(n.batches, "batch", "batches"), n.points, relay_plural(n.points, "point", "points"),
			     b, backend);
		if (n.corrupt)
			rbuf_appendf(&out, ", and %" PRIu64 " corrupt record%s that did not decode", n.corrupt,
				     n.corrupt == 1 ? "" : "s");
		rbuf_appendc(&out, '\n');
		nudge(c, backend, &out, NULL);
	}
	flush_out(&out);
	rbuf_release(&out);
	return 0;
}

