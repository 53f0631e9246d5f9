/*
 * relayctl's views of one queue: peek (the next pending batches, with
 * what relayd says of the one it tries), show (one batch's line protocol,
 * pending or dead) and dump (every pending batch as JSON lines).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/relayctl/relayctl.h"

int cmd_peek(const struct ctl *c)
{
	struct backend_queue q;
	if (open_backend(c, c->args[0], c->cmd->queue, &q))
		return 1;
	int rc = 0;
	size_t max = c->count > 0 ? (size_t)c->count : 10;
	if (max > 100000)
		max = 100000;
	struct wal_batch *b = xcalloc(max, sizeof(*b));
	struct skipped_corrupt *sk = xcalloc(1, sizeof(*sk));
	size_t n = 0;
	/* Up to max batches, in pages that stop at a corrupt record: each
	 * such record is passed over and reported, never the end of the view. */
	uint64_t from = 0;
	while (!q.fresh && rc == 0 && n < max) {
		size_t got;
		rc = read_past_corrupt(q.w, q.id, from, max - n, SIZE_MAX, 0, b + n, &got, sk);
		if (rc || got == 0)
			break;
		n += got;
		from = b[n - 1].seq + 1;
	}
	if (rc) {
		fprintf(stderr, "relayctl: cannot read queue of backend '%s': %s\n", q.name, wal_strerror(rc));
		while (n)
			wal_batch_release(&b[--n]);
		free(b);
		free(sk);
		wal_close(q.w);
		return 1;
	}
	wal_close(q.w);
	int skipped = report_corrupt(sk, q.name);
	/* Attempts and the last error live in relayd's memory, for the batch
	 * it is trying (the head of the queue). */
	struct control_status *ds = xcalloc(1, sizeof(*ds));
	char why[300];
	const struct control_backend_status *d = NULL;
	if (n && relayd_status(c, ds, why, sizeof(why)) == 1)
		d = control_status_find(ds, q.name);
	int64_t now = now_realtime_ns();
	struct rbuf out = RBUF_INIT;
	json_t *doc = NULL, *batches = NULL;
	if (c->json) {
		doc = backend_doc(q.name);
		batches = json_array();
		json_object_set_new(doc, "batches", batches);
	} else if (n) {
		rbuf_appendf(&out, "%-10s %-16s %-12s %-4s %8s %10s %8s %8s  %s\n", "SEQ", "DB", "RP", "PREC", "POINTS",
			     "BYTES", "AGE", "ATTEMPTS", "LAST ERROR");
	} else if (!skipped) {
		rbuf_appendf(&out, "backend '%s': nothing pending\n", q.name);
	}
	for (size_t i = 0; i < n; i++) {
		int head = d && d->head_seq == b[i].seq;
		int64_t age = age_seconds(b[i].accept_ns, now);
		if (c->json) {
			/* attempts and last_error are null but for the batch relayd tries */
			json_t *o = batch_json(&b[i]);
			json_object_set_new(o, "age_seconds", json_integer(age));
			json_object_set_new(o, "attempts", head ? json_integer(d->attempts) : json_null());
			json_object_set_new(o, "last_error", head ? rjson_cstr(d->last_error) : json_null());
			json_array_append_new(batches, o);
		} else {
			char db[17], rp[13], a[32], bytes[32], err[120], att[16];
			cell(b[i].db, 16, db, sizeof(db));
			cell(*b[i].rp ? b[i].rp : "(default)", 12, rp, sizeof(rp));
			human_age(age, a, sizeof(a));
			human_bytes(b[i].body_len, bytes, sizeof(bytes));
			if (head) {
				snprintf(att, sizeof(att), "%" PRIu32, d->attempts);
				cell(d->last_error[0] ? d->last_error : "-", 100, err, sizeof(err));
			} else {
				snprintf(att, sizeof(att), "-");
				snprintf(err, sizeof(err), "-");
			}
			rbuf_appendf(&out, "%-10" PRIu64 " %-16s %-12s %-4s %8" PRIu32 " %10s %8s %8s  %s\n", b[i].seq, db, rp,
				     b[i].kind == WAL_KIND_STATEMENT ? "stmt" : prec_name(b[i].precision), b[i].lines, bytes, a,
				     att, err);
		}
		wal_batch_release(&b[i]);
	}
	if (c->json) {
		json_object_set_new(doc, "corrupt", corrupt_json(sk));
		put_json_line(&out, doc);
	}
	flush_out(&out);
	rbuf_release(&out);
	free(ds);
	free(b);
	free(sk);
	return skipped;
}

int cmd_show(const struct ctl *c)
{
	const char *backend = c->args[0], *seqs = c->args[1];
	uint64_t seq;
	if (parse_seq(seqs, &seq)) {
		fprintf(stderr, "relayctl: '%s' is not a batch sequence number\n", seqs);
		return 2;
	}
	struct backend_queue q;
	if (open_backend(c, backend, c->cmd->queue, &q))
		return 1;
	int rc;
	struct wal_batch b;
	struct wal_dead d;
	char corrupt_why[200] = "";
	int dead = 0;
	memset(&b, 0, sizeof(b));
	memset(&d, 0, sizeof(d));
	if (q.fresh) {
		rc = WAL_ENOTFOUND; /* no queue yet */
	} else {
		/* Pending first, then the dead letters. */
		rc = wal_get(q.w, q.id, seq, &b);
		if (rc == WAL_ENOTFOUND) {
			rc = wal_dead_get(q.w, q.id, seq, &d);
			dead = rc == 0;
		}
		uint64_t at;
		if (rc == WAL_ECORRUPT && (wal_find_corrupt(q.w, q.id, seq, &at, corrupt_why, sizeof(corrupt_why)) || at != seq))
			corrupt_why[0] = '\0';
	}
	wal_close(q.w);
	if (rc == WAL_ENOTFOUND) {
		fprintf(stderr, "relayctl: backend '%s' has no batch %" PRIu64 " (neither pending nor dead-lettered)\n",
			backend, seq);
		return 1;
	}
	if (rc == WAL_ECORRUPT) {
		fprintf(stderr,
			"relayctl: batch %" PRIu64 " of backend '%s' is corrupt%s%s (relayd moves it to the dead-letter queue "
			"when it reaches it, then 'relayctl dlq show' shows its bytes; see 'relayctl verify')\n",
			seq, backend, *corrupt_why ? ": " : "", shown(corrupt_why));
		return 1;
	}
	if (rc) {
		fprintf(stderr, "relayctl: cannot read batch %" PRIu64 " of backend '%s': %s\n", seq, backend,
			wal_strerror(rc));
		return 1;
	}
	struct rbuf out = RBUF_INIT;
	const struct wal_batch *bb = dead ? &d.batch : &b;
	if (dead && d.corrupt && !c->json) {
		/* Its raw bytes, escaped, after a comment line saying what it is. */
		dead_header(&out, backend, &d);
		body_text(&out, d.batch.body, d.batch.body_len);
		flush_out(&out);
		rbuf_release(&out);
		wal_dead_release(&d);
		return 0;
	}
	if (c->json) {
		json_t *o;
		if (dead) {
			o = dead_json(&d);
			json_object_set_new(o, "state", rjson_cstr("dead"));
		} else {
			o = batch_json(&b);
			json_object_set_new(o, "state", rjson_cstr("pending"));
			json_object_set_new(o, "body", rjson_string(b.body, b.body_len));
		}
		put_json_line(&out, o);
	} else {
		batch_text(&out, bb);
	}
	flush_out(&out);
	rbuf_release(&out);
	wal_batch_release(&b);
	wal_dead_release(&d);
	return 0;
}

/* One line of dump: the batch with who wrote it, never the secret (the
 * user's name and whether a password or token came with it). */
static json_t *dump_json(const struct wal_batch *b)
{
	json_t *o = json_object();
	json_object_set_new(o, "seq", u64_json(b->seq));
	json_object_set_new(o, "db", rjson_cstr(b->db));
	json_object_set_new(o, "rp", rjson_cstr(b->rp));
	json_object_set_new(o, "org", rjson_cstr(b->org));
	json_object_set_new(o, "user", rjson_cstr(b->user));
	json_object_set_new(o, "auth", rjson_cstr(*b->token ? "token" : *b->user ? "password" : "none"));
	json_object_set_new(o, "kind", rjson_cstr(kind_name(b->kind)));
	json_object_set_new(o, "precision", rjson_cstr(prec_name(b->precision)));
	json_object_set_new(o, "lines", json_integer(b->lines));
	json_object_set_new(o, "bytes", u64_json(b->body_len));
	json_object_set_new(o, "accept_ns", json_integer(b->accept_ns));
	json_object_set_new(o, "body", rjson_string(b->body, b->body_len));
	return o;
}

int cmd_dump(const struct ctl *c)
{
	struct backend_queue q;
	if (open_backend(c, c->args[0], c->cmd->queue, &q))
		return 1;
	if (q.fresh) {
		wal_close(q.w);
		return 0; /* never used: nothing queued */
	}
	/* Read in slices, each its own short read transaction (never one
	 * long one: it would pin pages while relayd writes), paging by
	 * sequence number; print each slice after its transaction ended. */
	struct wal_batch b[PAGE_BATCHES];
	struct skipped_corrupt *sk = xcalloc(1, sizeof(*sk));
	size_t n;
	uint64_t last = 0;
	struct rbuf out = RBUF_INIT;
	int rc;
	for (;;) {
		uint64_t before = sk->n;
		rc = read_past_corrupt(q.w, q.id, last + 1, PAGE_BATCHES, PAGE_BYTES, 1, b, &n, sk);
		if (sk->n > before && sk->kept)
			last = sk->at[sk->kept - 1].seq > last ? sk->at[sk->kept - 1].seq : last;
		if (rc) {
			fprintf(stderr, "relayctl: cannot read queue of backend '%s': %s\n", q.name, wal_strerror(rc));
			break;
		}
		for (size_t i = 0; i < n; i++) {
			put_json_line(&out, dump_json(&b[i]));
			last = b[i].seq;
			wal_batch_release(&b[i]);
		}
		flush_out(&out);
		if (n == 0)
			break;
	}
	rbuf_release(&out);
	wal_close(q.w);
	int skipped = report_corrupt(sk, q.name);
	free(sk);
	return rc || skipped ? 1 : 0;
}

