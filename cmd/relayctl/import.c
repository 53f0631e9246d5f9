/*
 * relayctl import: a line-protocol file validated whole (every bad line
 * listed, nothing queued), then queued for one backend in batches and
 * commits of bounded size.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cmd/relayctl/relayctl.h"
#include "relay/base/lineproto.h"

#define IMPORT_BATCH_LINES 5000      /* lines per queued batch */
#define IMPORT_BATCH_BYTES (4u << 20)
#define IMPORT_COMMIT_BATCHES 32     /* batches per commit */
#define IMPORT_MAX_ERRORS 20         /* bad lines listed */

/* The byte offset in buf[0..len) where physical line `line` (1-based)
 * starts. */
static size_t line_offset(const char *buf, size_t len, size_t line)
{
	size_t off = 0;
	for (size_t l = 1; l < line && off < len; l++) {
		const char *nl = memchr(buf + off, '\n', len - off);
		if (!nl)
			return len;
		off = (size_t)(nl - buf) + 1;
	}
	return off;
}

/*
 * Validate the whole file. On success *valid holds the queued form.
 * Otherwise every bad line (up to IMPORT_MAX_ERRORS listed) is reported:
 * after each one, validation goes on from the next line.
 */
static int import_validate(const char *path, const char *data, size_t len, int64_t stamp, size_t max_line,
                           struct rbuf *valid, uint32_t *points)
{
	struct lp_result res;
	struct lp_error err;
	size_t off = 0, first_line = 1;
	int bad = 0;
	while (off < len) {
		valid->len = 0;
		if (lineproto_validate(data + off, len - off, stamp, max_line, valid, &res, &err) == 0) {
			*points = res.lines;
			break;
		}
		bad++;
		if (bad <= IMPORT_MAX_ERRORS)
			fprintf(stderr, "relayctl: %s:%zu: %s\n", path, first_line + err.line - 1, err.msg);
		/* Go on after the bad line. */
		size_t start = off + line_offset(data + off, len - off, err.line);
		const char *nl = start < len ? memchr(data + start, '\n', len - start) : NULL;
		if (!nl)
			break;
		first_line += err.line;
		off = (size_t)(nl - data) + 1;
	}
	if (bad > IMPORT_MAX_ERRORS)
		fprintf(stderr, "relayctl: %s: ... %d more bad lines\n", path, bad - IMPORT_MAX_ERRORS);
	if (bad)
		fprintf(stderr, "relayctl: %s: %d bad line%s: nothing was queued\n", path, bad, bad == 1 ? "" : "s");
	return bad ? -1 : 0;
}

static const char *const batch_fields[6] = { "db", "rp", "org", "user", "password", "token" };

/*
 * The index in batch_fields of the first of b's six strings that holds a
 * control byte (< 0x20 or DEL), or -1; *value gets that string, *at the
 * byte's offset. relayd's door refuses them (they end up in URLs,
 * headers, log lines and export files): an import must not queue what a
 * writer could not.
 */
static int control_byte_field(const struct wal_batch *b, const char **value, size_t *at)
{
	const char *f[6] = { b->db, b->rp, b->org, b->user, b->password, b->token };
	for (int i = 0; i < 6; i++)
		for (size_t k = 0; f[i] && f[i][k]; k++)
			if ((unsigned char)f[i][k] < 0x20 || f[i][k] == 0x7F) {
				*value = f[i];
				*at = k;
				return i;
			}
	return -1;
}

/* How much of an import stopped part way is in the queue: what went
 * before stays queued, the rest of the file is not. */
static void import_say_queued(uint64_t points, uint64_t nbatches, uint64_t first_seq, uint64_t last_seq)
{
	if (nbatches)
		fprintf(stderr,
			"relayctl: %" PRIu64 " %s in %" PRIu64 " %s (%" PRIu64 "..%" PRIu64
			") %s queued, the rest of the file was not\n",
			points, relay_plural(points, "point", "points"), nbatches, relay_plural(nbatches, "batch", "batches"),
			first_seq, last_seq, points == 1 ? "was" : "were");
	else
		fprintf(stderr, "relayctl: nothing was queued\n");
}

int cmd_import(const struct ctl *c)
{
	const char *backend = c->args[0], *path = c->args[1];
	enum lp_precision prec;
	if (!c->db || !*c->db) {
		fprintf(stderr, "relayctl: import needs --db DB (the database the points go to)\n");
		return 2;
	}
	if (lp_precision_parse(c->precision, &prec)) {
		fprintf(stderr, "relayctl: bad --precision '%s' (ns, u, ms, s, m or h)\n", c->precision);
		return 2;
	}
	int bi = known_backend(c, backend);
	if (bi < 0)
		return 1;
	/* The queue first: a missing queue is reported before a large file
	 * is read. */
	struct backend_queue q;
	int rc = 1;
	if (open_backend_to_change(c, backend, c->cmd->queue, &q))
		return 1;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat fst;
	if (fd < 0 || fstat(fd, &fst) < 0) {
		fprintf(stderr, "relayctl: cannot open '%s': %s\n", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		wal_close(q.w);
		return 1;
	}
	if (!S_ISREG(fst.st_mode)) {
		fprintf(stderr, "relayctl: '%s' is not a regular file\n", path);
		close(fd);
		wal_close(q.w);
		return 1;
	}
	size_t len = (size_t)fst.st_size;
	const char *data = "";
	if (len) {
		data = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
		if (data == MAP_FAILED) {
			fprintf(stderr, "relayctl: cannot read '%s': %s\n", path, strerror(errno));
			close(fd);
			wal_close(q.w);
			return 1;
		}
	}
	close(fd);

	struct rbuf valid = RBUF_INIT;
	uint32_t points = 0;
	struct wal_batch *group = NULL;
	uint64_t first_seq = 0, last_seq = 0, queued_points = 0, nbatches = 0;
	/* Lines without a timestamp get the time of the import. */
	int64_t now = now_realtime_ns();
	if (import_validate(path, data, len, lp_ns_to_precision(now, prec), (size_t)c->cfg.http_max_line_bytes, &valid,
			    &points))
		goto out;
	if (points == 0) {
		printf("%s: no points to import\n", path);
		rc = 0;
		goto out;
	}
	/* The backend's byte limit holds for an import too (its age limit is
	 * for live writers: a backfill is old by nature). */
	wal_backend_set_limits(q.w, q.id, c->cfg.backends[bi].max_bytes, 0);

	/* Batches of IMPORT_BATCH_LINES lines (at line ends of the validated
	 * form: a quoted string may hold a newline), committed
	 * IMPORT_COMMIT_BATCHES at a time. */
	struct progress prog;
	progress_init(&prog, "queueing", valid.len);
	group = xcalloc(IMPORT_COMMIT_BATCHES, sizeof(*group));
	const char *p = valid.data, *end = valid.data + valid.len;
	rc = 0;
	while (p < end && rc == 0) {
		size_t ng = 0, gbytes = 0;
		uint64_t first_point = queued_points + 1;
		int refused = 0;
		while (p < end && ng < IMPORT_COMMIT_BATCHES && gbytes < 32u << 20 && !refused) {
			const char *s = p;
			uint32_t lines = 0;
			while (p < end && lines < IMPORT_BATCH_LINES && (size_t)(p - s) < IMPORT_BATCH_BYTES) {
				size_t kl;
				p = lp_line_end(p, end, &kl);
				lines++;
			}
			struct wal_batch *b = &group[ng++];
			memset(b, 0, sizeof(*b));
			b->route = 1ULL << q.id;
			b->accept_ns = now;
			b->lines = lines;
			b->precision = (uint8_t)prec;
			b->db = c->db;
			b->rp = c->rp ? c->rp : "";
			b->body = s;
			b->body_len = (size_t)(p - s);
			gbytes += b->body_len;
			const char *val;
			size_t at;
			int fi = control_byte_field(b, &val, &at);
			if (fi >= 0) {
				int secret = fi >= 4; /* a password or token is never shown */
				if (prog.on)
					fputc('\n', stderr);
				fprintf(stderr,
					"relayctl: %s: batch %" PRIu64 " (points %" PRIu64 "..%" PRIu64 "): its %s%s%s%s holds "
					"a control byte (0x%02x at byte %zu), which relayd never queues: refused\n",
					path, nbatches + ng, first_point, first_point + lines - 1, batch_fields[fi],
					secret ? "" : " '", secret ? "" : shown(val), secret ? "" : "'", (unsigned char)val[at],
					at);
				refused = 1;
			}
			first_point += lines;
		}
		if (refused) {
			/* Nothing of this group is queued: what went before stays. */
			import_say_queued(queued_points, nbatches, first_seq, last_seq);
			rc = 1;
			break;
		}
		int arc = wal_append(q.w, group, ng, now_realtime_ns());
		size_t stored = 0;
		for (size_t i = 0; arc == 0 && i < ng; i++) {
			if (group[i].result) {
				arc = group[i].result;
				break;
			}
			if (!first_seq)
				first_seq = group[i].seq;
			last_seq = group[i].seq;
			queued_points += group[i].lines;
			nbatches++;
			stored++;
		}
		if (arc) {
			/* A limit refused a batch of this commit: the ones before it
			 * in the commit were stored (they were checked first). */
			if (prog.on)
				fputc('\n', stderr);
			fprintf(stderr, "relayctl: cannot queue more of '%s' for backend '%s': %s\n", path, backend,
				wal_strerror(arc));
			import_say_queued(queued_points, nbatches, first_seq, last_seq);
			rc = 1;
			break;
		}
		progress_show(&prog, (uint64_t)(p - valid.data), 0);
	}
	if (rc == 0) {
		progress_done(&prog);
		struct rbuf out = RBUF_INIT;
		if (c->json) {
			json_t *doc = backend_doc(backend);
			json_object_set_new(doc, "points", u64_json(queued_points));
			json_object_set_new(doc, "batches", u64_json(nbatches));
			json_object_set_new(doc, "first_seq", u64_json(first_seq));
			json_object_set_new(doc, "last_seq", u64_json(last_seq));
			nudge(c, backend, NULL, doc);
			put_json_line(&out, doc);
		} else {
			rbuf_appendf(&out,
				     "queued %" PRIu64 " %s of '%s' in %" PRIu64 " %s (%" PRIu64 "..%" PRIu64
				     ") for backend '%s' (db '%s', rp '%s', precision %s)\n",
				     queued_points, relay_plural(queued_points, "point", "points"), path, nbatches,
				     relay_plural(nbatches, "batch", "batches"), first_seq, last_seq, backend, c->db,
				     c->rp && *c->rp ? c->rp : "(default)", lp_precision_name(prec));
			nudge(c, backend, &out, NULL);
		}
		flush_out(&out);
		rbuf_release(&out);
	} else if (nbatches) {
		nudge(c, backend, NULL, NULL); /* what was queued goes out; the failure was told */
	}
out:
	free(group);
	rbuf_release(&valid);
	if (q.w)
		wal_close(q.w);
	if (len)
		munmap((void *)data, len);
	return rc;
}

