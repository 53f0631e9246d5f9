/*
 * relayctl backup DEST: a consistent copy of the queue (wal_backup: one
 * LMDB read transaction, relayd running or not), then what the copy
 * holds, read back from the copy itself: so that "backed up N batches"
 * is a fact about the file written, and a copy that would not open is
 * found now rather than on the day it is restored.
 *
 * Restoring needs no command: stop relayd, put the copy's data.mdb into
 * an empty data_dir (or in place of the old one), start relayd
 * (docs/operations.md, "Backup and restore").
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cmd/relayctl/relayctl.h"

int cmd_backup(const struct ctl *c)
{
	const char *dest = c->args[0];
	const char *dir = c->cfg.data_dir;
	char why[600];
	struct wal *w;
	if (strcmp(dest, dir) == 0) {
		fprintf(stderr, "relayctl: backup writes a new store: DEST must be another directory than '%s'\n", dir);
		return 2;
	}
	if (open_queue(c, WAL_F_RDONLY, &w))
		return 1;
	struct wal_backup_stat bst;
	int rc = wal_backup(w, dest, &bst, why, sizeof(why));
	wal_close(w);
	if (rc) {
		fprintf(stderr, "relayctl: cannot back up the queue in '%s' into '%s': %s\n", shown(dir), shown(dest),
			*why ? shown(why) : wal_strerror(rc));
		return 1;
	}
	/* The copy, opened as relayctl opens any queue: read-only. It gets
	 * a lock.mdb of its own, which is removed after: the backup is the
	 * one file relayd needs. */
	struct wal_options o = { 0, WAL_F_RDONLY };
	struct wal *copy;
	char names[WAL_MAX_BACKENDS][WAL_NAME_MAX + 1], lock[4096];
	size_t n = 0;
	struct wal_backend_stat bs[WAL_MAX_BACKENDS];
	int rcs[WAL_MAX_BACKENDS], grc = 0;
	struct wal_stat gst;
	const char *ptrs[WAL_MAX_BACKENDS];
	rc = wal_open_why(dest, &o, &copy, why, sizeof(why));
	if (rc == 0) {
		rc = wal_backend_names(copy, names, WAL_MAX_BACKENDS, &n);
		for (size_t i = 0; i < n; i++)
			ptrs[i] = names[i];
		if (rc == 0)
			rc = wal_backend_stats(copy, ptrs, n, bs, rcs, &gst, &grc);
		if (rc == 0)
			rc = grc;
		wal_close(copy);
	}
	snprintf(lock, sizeof(lock), "%s/lock.mdb", dest);
	unlink(lock);
	if (rc) {
		fprintf(stderr, "relayctl: the copy in '%s/data.mdb' was written but does not open: %s\n", shown(dest),
			*why ? shown(why) : wal_strerror(rc));
		return 1;
	}
	struct rbuf out = RBUF_INIT;
	uint64_t batches = 0, points = 0;
	for (size_t i = 0; i < n; i++)
		if (rcs[i] == 0) {
			batches += bs[i].pending_batches + bs[i].held_batches;
			points += bs[i].pending_points + bs[i].held_points;
		}
	if (c->json) {
		json_t *doc = json_object();
		json_object_set_new(doc, "source", rjson_cstr(dir));
		json_object_set_new(doc, "dest", rjson_cstr(dest));
		json_object_set_new(doc, "bytes", u64_json(bst.bytes));
		json_object_set_new(doc, "format_version", json_integer(gst.format_version));
		json_object_set_new(doc, "next_seq", u64_json(gst.next_seq));
		json_t *arr = json_array();
		for (size_t i = 0; i < n; i++) {
			if (rcs[i])
				continue;
			json_t *b = backend_doc(bs[i].name);
			json_object_set_new(b, "batches", u64_json(bs[i].pending_batches));
			json_object_set_new(b, "points", u64_json(bs[i].pending_points));
			json_object_set_new(b, "bytes", u64_json(bs[i].pending_bytes));
			json_object_set_new(b, "held_batches", u64_json(bs[i].held_batches));
			json_object_set_new(b, "dead_letters", u64_json(bs[i].dead_batches));
			json_object_set_new(b, "paused", json_boolean(bs[i].paused));
			json_array_append_new(arr, b);
		}
		json_object_set_new(doc, "backends", arr);
		put_json_line(&out, doc);
	} else {
		char size[32];
		human_bytes(bst.bytes, size, sizeof(size));
		rbuf_appendf(&out, "backed up '%s/data.mdb' into '%s/data.mdb': %s (%" PRIu64 " %s), format %" PRIu32 "\n",
			     shown(dir), shown(dest), size, bst.bytes, relay_plural(bst.bytes, "byte", "bytes"),
			     gst.format_version);
		for (size_t i = 0; i < n; i++) {
			if (rcs[i])
				continue;
			const struct wal_backend_stat *b = &bs[i];
			char pb[32];
			human_bytes(b->pending_bytes, pb, sizeof(pb));
			rbuf_appendf(&out, "  backend '%s': %" PRIu64 " pending %s (%" PRIu64 " %s, %s)", shown(b->name),
				     b->pending_batches, relay_plural(b->pending_batches, "batch", "batches"),
				     b->pending_points, relay_plural(b->pending_points, "point", "points"), pb);
			if (b->held_batches)
				rbuf_appendf(&out, ", %" PRIu64 " held", b->held_batches);
			rbuf_appendf(&out, ", %" PRIu64 " dead %s%s%s\n", b->dead_batches,
				     relay_plural(b->dead_batches, "letter", "letters"), b->paused ? ", paused" : "",
				     configured(c, b->name) ? "" : " (not in the configuration)");
		}
		rbuf_appendf(&out, "%" PRIu64 " %s (%" PRIu64 " %s) to deliver in the copy; synced to disk\n", batches,
			     relay_plural(batches, "batch", "batches"), points, relay_plural(points, "point", "points"));
		rbuf_appendf(&out,
			     "to restore: stop relayd, move data_dir's data.mdb aside, copy '%s/data.mdb' into data_dir "
			     "(owned by relayd's user, mode 0600), start relayd\n",
			     shown(dest));
	}
	flush_out(&out);
	rbuf_release(&out);
	return 0;
}
