/*
 * relayctl verify and salvage: the whole store checked (exit 1 on
 * damage), and what is still readable of a damaged one copied into a new
 * store.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cmd/relayctl/relayctl.h"

/* Where verify's problems go: the JSON array when given, else text. */
struct verify_out {
	json_t *problems;
	struct rbuf *out;
	int n;
};

static void verify_problem(void *arg, const char *text)
{
	struct verify_out *v = arg;
	if (v->problems) {
		json_array_append_new(v->problems, rjson_cstr(text));
	} else {
		rbuf_append(v->out, "damaged: ", 9);
		term_append(v->out, text, strlen(text)); /* it may name a stored backend */
		rbuf_appendc(v->out, '\n');
	}
	v->n++;
}

int cmd_salvage(const struct ctl *c)
{
	const char *dest = c->args[0];
	const char *dir = c->cfg.data_dir;
	char why[600];
	struct wal_salvage_stat st;
	if (strcmp(dest, dir) == 0) {
		fprintf(stderr, "relayctl: salvage writes a new store: DEST must be another directory than '%s'\n", dir);
		return 2;
	}
	const char *names[WAL_MAX_BACKENDS];
	size_t nnames = 0;
	for (size_t i = 0; i < c->cfg.nbackends && nnames < WAL_MAX_BACKENDS; i++)
		names[nnames++] = c->cfg.backends[i].name;
	int rc = wal_salvage(dir, dest, names, nnames, &st, why, sizeof(why));
	if (rc == -ENOENT) {
		fprintf(stderr, "relayctl: '%s/data.mdb' does not exist: nothing to salvage\n", dir);
		return 1;
	}
	if (rc) {
		fprintf(stderr, "relayctl: cannot salvage '%s/data.mdb' into '%s': %s\n", dir, dest,
			*why ? shown(why) : wal_strerror(rc));
		return 1;
	}
	struct rbuf out = RBUF_INIT;
	if (c->json) {
		json_t *doc = json_object();
		json_object_set_new(doc, "source", rjson_cstr(dir));
		json_object_set_new(doc, "dest", rjson_cstr(dest));
		json_object_set_new(doc, "pages", u64_json(st.pages));
		json_object_set_new(doc, "backends", u64_json(st.backends));
		json_object_set_new(doc, "backends_assumed", u64_json(st.backends_assumed));
		json_object_set_new(doc, "batches_found", u64_json(st.batches_found));
		json_object_set_new(doc, "batches", u64_json(st.batches_copied));
		json_object_set_new(doc, "points", u64_json(st.points_copied));
		json_object_set_new(doc, "delivered", u64_json(st.batches_delivered));
		json_object_set_new(doc, "orphaned", u64_json(st.batches_orphaned));
		json_object_set_new(doc, "corrupt", u64_json(st.records_corrupt));
		json_object_set_new(doc, "dead_letters_not_copied", u64_json(st.dead_found));
		json_object_set_new(doc, "held_not_copied", u64_json(st.held_found));
		put_json_line(&out, doc);
	} else {
		rbuf_appendf(&out,
			     "salvaged %" PRIu64 " %s (%" PRIu64 " %s) for %" PRIu64 " %s from '%s/data.mdb' "
			     "into '%s/data.mdb'\n",
			     st.batches_copied, relay_plural(st.batches_copied, "batch", "batches"), st.points_copied,
			     relay_plural(st.points_copied, "point", "points"), st.backends + st.backends_assumed,
			     relay_plural(st.backends + st.backends_assumed, "backend", "backends"), shown(dir), shown(dest));
		if (st.backends_assumed)
			rbuf_appendf(&out,
				     "%" PRIu64 " backend record%s not found: taken from the configuration's order, with every "
				     "batch routed to %s copied (some may have been delivered already)\n",
				     st.backends_assumed, st.backends_assumed == 1 ? " was" : "s were",
				     st.backends_assumed == 1 ? "it" : "them");
		rbuf_appendf(&out,
			     "left out: %" PRIu64 " delivered already, %" PRIu64 " of backends whose record was not found, "
			     "%" PRIu64 " batch %s that did not decode; %" PRIu64 " dead %s not copied\n",
			     st.batches_delivered, st.batches_orphaned, st.records_corrupt,
			     relay_plural(st.records_corrupt, "record", "records"), st.dead_found,
			     relay_plural(st.dead_found, "letter", "letters"));
		if (st.held_found)
			rbuf_appendf(&out,
				     "%" PRIu64 " held batch record%s (of databases a backend did not have) not copied: a "
				     "damaged file cannot tell those still held from those delivered since\n",
				     st.held_found, st.held_found == 1 ? "" : "s");
		rbuf_appendf(&out,
			     "to use it: stop relayd, mv '%s/data.mdb' '%s/data.mdb.damaged', mv '%s/data.mdb' '%s/data.mdb', "
			     "start relayd\n",
			     shown(dir), shown(dir), shown(dest), shown(dir));
	}
	flush_out(&out);
	rbuf_release(&out);
	return 0;
}

int cmd_verify(const struct ctl *c)
{
	struct wal *w;
	if (open_queue(c, c->cmd->queue, &w))
		return 1;
	struct wal_verify_stat st;
	json_t *doc = NULL;
	struct rbuf out = RBUF_INIT;
	struct verify_out v = { NULL, &out, 0 };
	if (c->json) {
		doc = json_object();
		v.problems = json_array();
		json_object_set_new(doc, "problems", v.problems);
	}
	int n = wal_verify(w, verify_problem, &v, &st);
	wal_close(w);
	if (n < 0) {
		fprintf(stderr, "relayctl: cannot verify the queue in '%s': %s\n", c->cfg.data_dir, wal_strerror(n));
		json_decref(doc);
		rbuf_release(&out);
		return 1;
	}
	if (c->json) {
		json_object_set_new(doc, "ok", json_boolean(!n));
		json_object_set_new(doc, "problem_count", json_integer(n));
		json_object_set_new(doc, "batches", u64_json(st.batches));
		json_object_set_new(doc, "backends", u64_json(st.backends));
		json_object_set_new(doc, "dead", u64_json(st.dead));
		put_json_line(&out, doc);
	} else if (n)
		rbuf_appendf(&out, "%d problem%s in the queue in '%s'\n", n, relay_s((uint64_t)n), c->cfg.data_dir);
	else
		rbuf_appendf(&out, "ok: %" PRIu64 " %s, %" PRIu64 " %s, %" PRIu64 " dead %s checked\n", st.batches,
			     relay_plural(st.batches, "batch", "batches"), st.backends,
			     relay_plural(st.backends, "backend", "backends"), st.dead,
			     relay_plural(st.dead, "letter", "letters"));
	flush_out(&out);
	rbuf_release(&out);
	return n ? 1 : 0;
}
