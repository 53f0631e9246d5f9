/*
 * relayctl dlq: the dead-letter queue of one backend, listed, shown with
 * its line protocol, requeued at the end of the queue or dropped.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/relayctl/relayctl.h"

#define DLQ_ALL_STEP 256 /* dead letters per commit with --all */

int cmd_dlq_list(const struct ctl *c)
{
	struct backend_queue q;
	if (open_backend(c, c->args[0], c->cmd->queue, &q))
		return 1;
	int rc = q.fresh; /* no queue yet: nothing said, exit 1 (as always) */
	struct rbuf out = RBUF_INIT;
	struct wal_dead d[256];
	size_t n = 0, total = 0;
	uint64_t from = 0;
	json_t *doc = NULL, *dead = NULL;
	if (c->json) {
		doc = backend_doc(q.name);
		dead = json_array();
		json_object_set_new(doc, "dead", dead);
	}
	while (rc == 0) {
		rc = wal_dead_list(q.w, q.id, from, RELAY_ARRAY_SIZE(d), 0, d, &n);
		if (rc) {
			fprintf(stderr, "relayctl: cannot read dead letters of backend '%s': %s\n", q.name, wal_strerror(rc));
			break;
		}
		if (n == 0)
			break;
		/* Printed after the read transaction ended. */
		for (size_t i = 0; i < n; i++, total++) {
			if (c->json) {
				json_array_append_new(dead, dead_json(&d[i]));
			} else {
				if (total == 0)
					rbuf_appendf(&out, "%-10s %-16s %-12s %-4s %8s %10s %6s %8s %-20s  %s\n", "SEQ", "DB", "RP",
						     "PREC", "POINTS", "BYTES", "STATUS", "ATTEMPTS", "DEAD SINCE", "MESSAGE");
				char db[17], rp[13], bytes[32], t[32], msg[200];
				cell(d[i].batch.db, 16, db, sizeof(db));
				cell(*d[i].batch.rp ? d[i].batch.rp : "(default)", 12, rp, sizeof(rp));
				human_bytes(d[i].bytes, bytes, sizeof(bytes));
				fmt_time(d[i].dead_ns, t, sizeof(t));
				if (d[i].corrupt) {
					char m[140];
					snprintf(m, sizeof(m), "CORRUPT: %s", d[i].msg);
					cell(m, 120, msg, sizeof(msg));
					rbuf_appendf(&out, "%-10" PRIu64 " %-16s %-12s %-4s %8s %10s %6s %8s %-20s  %s\n",
						     d[i].batch.seq, "-", "-", "-", "-", bytes, "-", "-", t, msg);
					from = d[i].batch.seq + 1;
					wal_dead_release(&d[i]);
					continue;
				}
				cell(d[i].msg, 120, msg, sizeof(msg));
				rbuf_appendf(&out, "%-10" PRIu64 " %-16s %-12s %-4s %8" PRIu32 " %10s %6d %8" PRIu32 " %-20s  %s\n",
					     d[i].batch.seq, db, rp, prec_name(d[i].batch.precision), d[i].batch.lines, bytes,
					     d[i].status, d[i].attempts, t, msg);
			}
			from = d[i].batch.seq + 1;
			wal_dead_release(&d[i]);
		}
		if (!c->json)
			flush_out(&out);
	}
	if (c->json && rc == 0)
		put_json_line(&out, doc);
	else if (c->json)
		json_decref(doc); /* nothing is printed after a failed read */
	else if (rc == 0 && total == 0)
		rbuf_appendf(&out, "backend '%s': no dead letters\n", q.name);
	if (rc == 0)
		flush_out(&out);
	rbuf_release(&out);
	wal_close(q.w);
	return rc ? 1 : 0;
}

static int parse_seqs(char **args, int n, uint64_t **out)
{
	*out = xcalloc((size_t)n + 1, sizeof(**out));
	for (int i = 0; i < n; i++)
		if (parse_seq(args[i], &(*out)[i])) {
			fprintf(stderr, "relayctl: '%s' is not a batch sequence number\n", args[i]);
			free(*out);
			*out = NULL;
			return -1;
		}
	return 0;
}

/*
 * The SEQs a dlq command names after its BACKEND (*seqs NULL when none),
 * then that backend's queue opened: 0, or the exit code after saying what
 * is wrong (2 a SEQ that is not one, 1 the queue).
 */
static int seqs_and_queue(const struct ctl *c, uint64_t **seqs, struct backend_queue *q)
{
	*seqs = NULL;
	if (c->nargs > 1 && parse_seqs(c->args + 1, c->nargs - 1, seqs))
		return 2;
	if (open_backend(c, c->args[0], c->cmd->queue, q)) {
		free(*seqs);
		return 1;
	}
	return 0;
}

int cmd_dlq_show(const struct ctl *c)
{
	const char *backend = c->args[0];
	int nargs = c->nargs - 1;
	uint64_t *seqs;
	struct backend_queue q;
	if (nargs == 0) {
		fprintf(stderr, "relayctl: dlq show needs at least one SEQ (see 'dlq list')\n");
		return 2;
	}
	int rc = seqs_and_queue(c, &seqs, &q);
	if (rc)
		return rc;
	int no_queue = q.fresh;
	struct rbuf out = RBUF_INIT;
	json_t *all = c->json ? json_array() : NULL;
	for (int i = 0; i < nargs; i++) {
		struct wal_dead d;
		rc = no_queue ? WAL_ENOTFOUND : wal_dead_get(q.w, q.id, seqs[i], &d);
		if (rc == WAL_ENOTFOUND) {
			fprintf(stderr, "relayctl: backend '%s' has no dead letter %" PRIu64 "\n", backend, seqs[i]);
			break;
		} else if (rc) {
			fprintf(stderr, "relayctl: cannot read dead letter %" PRIu64 " of backend '%s': %s\n", seqs[i],
				backend, wal_strerror(rc));
			break;
		}
		if (c->json) {
			json_array_append_new(all, dead_json(&d));
		} else {
			dead_header(&out, backend, &d);
			batch_text(&out, &d.batch);
			flush_out(&out);
		}
		wal_dead_release(&d);
	}
	wal_close(q.w);
	if (c->json && rc == 0) {
		put_json_line(&out, all);
		flush_out(&out);
	} else {
		json_decref(all); /* in JSON, all of them or nothing */
	}
	rbuf_release(&out);
	free(seqs);
	return rc ? 1 : 0;
}

/* dlq requeue and dlq drop: the named dead letters, or all of them. */
int cmd_dlq_move(const struct ctl *c)
{
	int requeue = strcmp(c->cmd->sub, "requeue") == 0;
	const char *verb = requeue ? "requeue" : "drop", *backend = c->args[0];
	int nargs = c->nargs - 1;
	uint64_t *seqs;
	struct backend_queue q;
	if ((nargs == 0) == !c->all) {
		fprintf(stderr, "relayctl: dlq %s needs SEQ... or --all (not both)\n", verb);
		return 2;
	}
	if (!requeue && c->all && !c->yes) {
		fprintf(stderr, "relayctl: not dropping every dead letter of backend '%s' without --yes\n", backend);
		return 1;
	}
	int rc = seqs_and_queue(c, &seqs, &q);
	if (rc)
		return rc;
	struct wal_count total = { 0, 0, 0, 0 }, n;
	uint64_t missing = 0;
	if (q.fresh) {
		rc = nargs ? WAL_ENOTFOUND : 0; /* no queue, so no dead letters */
		if (nargs)
			missing = seqs[0];
	} else if (nargs) {
		/* The named ones in one commit: all or none. */
		rc = requeue ? wal_dead_requeue(q.w, q.id, seqs, (size_t)nargs, now_realtime_ns(), &total, &missing)
			     : wal_dead_drop(q.w, q.id, seqs, (size_t)nargs, &total, &missing);
	} else {
		/* --all: in commits of a bounded size, oldest first. */
		do {
			rc = requeue ? wal_dead_requeue(q.w, q.id, NULL, DLQ_ALL_STEP, now_realtime_ns(), &n, NULL)
				     : wal_dead_drop(q.w, q.id, NULL, DLQ_ALL_STEP, &n, NULL);
			if (rc == 0) {
				total.batches += n.batches;
				total.points += n.points;
				total.bytes += n.bytes;
				total.corrupt += n.corrupt;
			}
		} while (rc == 0 && (n.batches || n.corrupt));
	}
	wal_close(q.w);
	free(seqs);
	if (rc == WAL_ENOTFOUND) {
		fprintf(stderr, "relayctl: backend '%s' has no dead letter %" PRIu64 ": nothing was %s\n", backend, missing,
			requeue ? "requeued" : "dropped");
		return 1;
	}
	if (rc == WAL_ECORRUPT && requeue && nargs) {
		fprintf(stderr,
			"relayctl: dead letter %" PRIu64 " of backend '%s' is a corrupt record, not a batch that can be sent: "
			"nothing was requeued ('relayctl dlq show' shows its bytes, 'relayctl dlq drop' removes it)\n",
			missing, backend);
		return 1;
	}
	if (rc) {
		fprintf(stderr, "relayctl: cannot %s dead letters of backend '%s': %s%s\n", verb, backend, wal_strerror(rc),
			total.batches ? " (some were, see 'dlq list')" : "");
		return 1;
	}
	struct rbuf out = RBUF_INIT;
	if (c->json) {
		json_t *doc = backend_doc(backend);
		json_object_set_new(doc, requeue ? "requeued" : "dropped", u64_json(total.batches));
		json_object_set_new(doc, "points", u64_json(total.points));
		json_object_set_new(doc, "bytes", u64_json(total.bytes));
		json_object_set_new(doc, "corrupt", u64_json(total.corrupt));
		if (requeue && total.batches)
			nudge(c, backend, NULL, doc);
		put_json_line(&out, doc);
	} else {
		rbuf_appendf(&out, "%s %" PRIu64 " dead letter%s (%" PRIu64 " %s) of backend '%s'%s",
			     requeue ? "requeued" : "dropped", total.batches, relay_s(total.batches), total.points,
			     relay_plural(total.points, "point", "points"),
			     backend, requeue && total.batches ? " at the end of its queue" : "");
		if (total.corrupt)
			rbuf_appendf(&out, ", and %" PRIu64 " corrupt record%s", total.corrupt, total.corrupt == 1 ? "" : "s");
		rbuf_appendc(&out, '\n');
		if (requeue && total.batches)
			nudge(c, backend, &out, NULL);
	}
	flush_out(&out);
	rbuf_release(&out);
	return 0;
}
