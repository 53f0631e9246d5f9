/*
 * relayctl export: a backend's pending batches (or dead letters) as
 * influx -import files, one per database, retention policy and
 * precision; a batch that the format cannot carry as it is stays out,
 * named.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cmd/relayctl/relayctl.h"
#include "relay/base/lineproto.h"

/* One output file: every batch of one db, rp and precision. */
struct export_file {
	char *db, *rp;
	unsigned precision;
	char *path;
	FILE *f;
	uint64_t batches, points;
};

/* A batch that cannot go into an export file as it is. */
struct export_skip {
	uint64_t seq;
	const char *why;
	char *owned; /* why, when it was made for this batch */
};

/*
 * A database or retention policy name in a file name: at most
 * EXPORT_PART_MAX bytes of [A-Za-z0-9_-] (the rest become '_'). A longer
 * name is cut and ends with '-' and 8 hex digits of a hash of the whole
 * name, so that two long names with the same beginning get two files
 * and the file name fits NAME_MAX whatever the queue holds (a 60 000-byte
 * database name made the whole export fail).
 */
#define EXPORT_PART_MAX 64
/* What export adds to the name of FILE: ".DB.RP.PRECISION[.NN].lp". */
#define EXPORT_SUFFIX_MAX (1 + EXPORT_PART_MAX + 1 + EXPORT_PART_MAX + 1 + 7 + 3 + 3)

static void path_part(struct rbuf *p, const char *name)
{
	size_t len = strlen(name);
	size_t keep = len <= EXPORT_PART_MAX ? len : EXPORT_PART_MAX - 9;
	for (size_t i = 0; i < keep; i++) {
		char ch = name[i];
		int ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_' ||
			 ch == '-';
		rbuf_appendc(p, ok ? ch : '_');
	}
	if (keep < len) {
		uint32_t h = 2166136261u; /* FNV-1a: short, and enough to tell names apart */
		for (size_t i = 0; i < len; i++)
			h = (h ^ (unsigned char)name[i]) * 16777619u;
		rbuf_appendf(p, "-%08" PRIx32, h);
	}
}

/* Go's unicode.IsSpace, which influx -import's TrimSpace uses, for the
 * character at s (n > 0 bytes). */
static int go_space_at(const char *s, size_t n)
{
	uint32_t cp;
	unsigned char c = (unsigned char)s[0];
	if (c == ' ' || (c >= '\t' && c <= '\r'))
		return 1;
	if (!utf8_seq((const unsigned char *)s, n, &cp))
		return 0;
	return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 ||
	       cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

/* Does a well-formed UTF-8 character (or any byte) end at s + n with white
 * space? */
static int go_space_before(const char *s, size_t n)
{
	for (size_t k = 1; k <= 4 && k <= n; k++)
		if (go_space_at(s + n - k, k))
			return 1;
	return 0;
}

/*
 * Why name (what, "database" or "retention policy") cannot be written on
 * a "# CONTEXT-...: NAME" line of an influx -import file, or NULL. The
 * importer reads the file line by line, takes what follows the first ':'
 * up to the next ':' and trims white space: a newline would end the line
 * (and the next one could switch database), a ':' would cut the name (the
 * points going to the database named by its beginning), white space at
 * either end would be lost. No escape exists in that format.
 */
static const char *context_refusal(const char *name, int is_db)
{
	size_t len = strlen(name);
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)name[i];
		if (ch < 0x20 || ch == 0x7F)
			return is_db ? "its database name holds a control byte (a newline could switch the database)"
				     : "its retention policy holds a control byte (a newline could switch the database)";
		if (ch == ':')
			return is_db ? "its database name holds ':', where influx -import would cut it"
				     : "its retention policy holds ':', where influx -import would cut it";
	}
	if (len && (go_space_at(name, len) || go_space_before(name, len)))
		return is_db ? "its database name begins or ends with white space, which influx -import would drop"
			     : "its retention policy begins or ends with white space, which influx -import would drop";
	if (is_db && !len)
		return "it has no database name";
	return NULL;
}

/*
 * Why batch b cannot be written into an export file as it is, or NULL.
 * Besides its names: influx -import reads the body line by line too, so a
 * string field holding a newline would be cut into lines of which any may
 * be a point of its own or a context line; a line starting with '#' would
 * be a context line or a comment (relayd drops comments, but a damaged or
 * crafted record may hold one); and a body without its last newline would
 * run into the next batch's first line.
 */
static const char *export_refusal(const struct wal_batch *b)
{
	const char *why;
	/* A statement is InfluxQL, not a point: an influx -import file of
	 * points cannot carry it, and relayctl import reads line protocol
	 * only. Left out and named like any batch a file cannot carry. */
	if (b->kind == WAL_KIND_STATEMENT)
		return "it is a statement (InfluxQL, not line protocol: run it with influx -execute; "
		       "'relayctl show' prints it)";
	if ((why = context_refusal(b->db, 1)) || (why = context_refusal(b->rp, 0)))
		return why;
	if (b->precision > LP_PRECISION_H)
		return "its precision code is not one of the format's (a damaged record)";
	const char *p = b->body, *e = b->body + b->body_len;
	if (b->body_len && e[-1] != '\n')
		return "its body does not end with a newline";
	while (p < e) {
		size_t kl;
		const char *l = lp_line_end(p, e, &kl);
		if (*p == '#')
			return "a line of its body starts with '#'";
		if (memchr(p, '\n', (size_t)(l - p) - 1))
			return "a string field in its body holds a newline";
		p = l;
	}
	return NULL;
}

static struct export_file *export_file_for(struct export_file **files, size_t *n, const char *base,
                                           const struct wal_batch *b, int *err)
{
	for (size_t i = 0; i < *n; i++)
		if ((*files)[i].precision == b->precision && strcmp((*files)[i].db, b->db) == 0 &&
		    strcmp((*files)[i].rp, b->rp) == 0)
			return &(*files)[i];
	/* BASE.DB.RP.PRECISION.lp ("default" for the database's default
	 * retention policy); .2, .3... if two groups map to one name. */
	struct rbuf p = RBUF_INIT;
	int fd = -1;
	for (int k = 1; fd < 0 && k < 100; k++) {
		p.len = 0;
		rbuf_appendf(&p, "%s.", base);
		path_part(&p, b->db);
		rbuf_appendc(&p, '.');
		path_part(&p, *b->rp ? b->rp : "default");
		rbuf_appendf(&p, ".%s", prec_name(b->precision));
		if (k > 1)
			rbuf_appendf(&p, ".%d", k);
		rbuf_append(&p, ".lp", 3);
		int taken = 0;
		for (size_t i = 0; i < *n && !taken; i++)
			taken = strcmp((*files)[i].path, rbuf_cstr(&p)) == 0;
		if (taken)
			continue;
		/* Never overwrite: an earlier export may be all that is left of
		 * data purged since. */
		fd = open(rbuf_cstr(&p), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (fd < 0) {
			*err = errno;
			fprintf(stderr, "relayctl: cannot create '%s': %s\n", rbuf_cstr(&p), strerror(errno));
			rbuf_release(&p);
			return NULL;
		}
	}
	if (fd < 0) {
		*err = EEXIST;
		rbuf_release(&p);
		return NULL;
	}
	*files = xrealloc(*files, (*n + 1) * sizeof(**files));
	struct export_file *e = &(*files)[(*n)++];
	memset(e, 0, sizeof(*e));
	e->db = xstrdup(b->db);
	e->rp = xstrdup(b->rp);
	e->precision = b->precision;
	e->path = xstrdup(rbuf_cstr(&p));
	rbuf_release(&p);
	e->f = fdopen(fd, "w");
	if (!e->f)
		relay_fatal("fdopen: %s", strerror(errno));
	/* influx -import's format: the DML section, then its context. */
	fprintf(e->f, "# exported by relayctl: precision %s (influx -import -precision=%s)\n# DML\n",
		prec_name(b->precision), prec_name(b->precision));
	fprintf(e->f, "# CONTEXT-DATABASE: %s\n", b->db);
	if (*b->rp)
		fprintf(e->f, "# CONTEXT-RETENTION-POLICY: %s\n", b->rp);
	return e;
}

/* What export wrote and left out, for --json. */
static json_t *export_json(const struct ctl *c, const char *backend, const struct export_skip *skipped,
                           size_t nskipped, const struct export_file *files, size_t nfiles)
{
	json_t *doc = backend_doc(backend), *a;
	json_object_set_new(doc, "source", rjson_cstr(c->dlq ? "dead" : "pending"));
	json_object_set_new(doc, "skipped_batches", u64_json(nskipped));
	json_object_set_new(doc, "skipped", a = json_array());
	for (size_t i = 0; i < nskipped; i++) {
		json_t *o = json_object();
		json_object_set_new(o, "seq", u64_json(skipped[i].seq));
		json_object_set_new(o, "reason", rjson_cstr(skipped[i].why));
		json_array_append_new(a, o);
	}
	json_object_set_new(doc, "files", a = json_array());
	for (size_t i = 0; i < nfiles; i++) {
		json_t *o = json_object();
		json_object_set_new(o, "path", rjson_cstr(files[i].path));
		json_object_set_new(o, "db", rjson_cstr(files[i].db));
		json_object_set_new(o, "rp", rjson_cstr(files[i].rp));
		json_object_set_new(o, "precision", rjson_cstr(prec_name(files[i].precision)));
		json_object_set_new(o, "batches", u64_json(files[i].batches));
		json_object_set_new(o, "points", u64_json(files[i].points));
		json_array_append_new(a, o);
	}
	return doc;
}

/* What an export has written and left out so far. */
struct exporter {
	const char *base;
	struct export_file **files;
	size_t *nfiles;
	struct export_skip **skipped;
	size_t *nskipped;
	int *err;
};

/* Write batch b into its file, or (why != NULL) leave it out, named. */
static void export_batch(struct exporter *x, const struct wal_batch *b, const char *why)
{
	if (why) {
		/* Left out, never written changed: the others still go out,
		 * and the exit status tells a script not to purge. */
		*x->skipped = xrealloc(*x->skipped, (*x->nskipped + 1) * sizeof(**x->skipped));
		(*x->skipped)[(*x->nskipped)++] = (struct export_skip){ b->seq, why, NULL };
	}
	struct export_file *e = *x->err || why ? NULL : export_file_for(x->files, x->nfiles, x->base, b, x->err);
	if (e) {
		fwrite(b->body, 1, b->body_len, e->f);
		e->batches++;
		e->points += b->lines;
	}
}

/*
 * The batches of databases the backend holds (they wait for their
 * database to exist, out of the log): pending all the same, so exported
 * after the log's, each database's in its order (purge drops them too).
 */
static int export_held(struct wal *w, int id, const char *backend, struct exporter *x)
{
	struct wal_held *h = NULL;
	size_t nh = 0;
	int rc = wal_held_list(w, id, &h, &nh);
	for (size_t i = 0; i < nh && rc == 0 && !*x->err; i++) {
		uint64_t from = 0;
		for (;;) {
			struct wal_batch bp[PAGE_BATCHES];
			size_t n;
			if ((rc = wal_held_read(w, id, h[i].db, from, PAGE_BATCHES, PAGE_BYTES, bp, &n)) || n == 0)
				break;
			for (size_t k = 0; k < n; k++) {
				export_batch(x, &bp[k], export_refusal(&bp[k]));
				from = bp[k].seq + 1;
				wal_batch_release(&bp[k]);
			}
		}
	}
	if (rc)
		fprintf(stderr, "relayctl: cannot read the held databases of backend '%s': %s\n", backend,
			wal_strerror(rc));
	wal_held_free(h, nh);
	return rc;
}

int cmd_export(const struct ctl *c)
{
	const char *backend = c->args[0], *base = c->args[1];
	struct backend_queue q;
	const char *slash = strrchr(base, '/');
	const char *fname = slash ? slash + 1 : base;
	if (!*fname || strlen(fname) + EXPORT_SUFFIX_MAX > 255) {
		fprintf(stderr,
			"relayctl: '%s': the file name is %s (at most %d bytes: each export file adds the database, "
			"retention policy and precision to it)\n",
			base, *fname ? "too long" : "empty", 255 - EXPORT_SUFFIX_MAX);
		return 1;
	}
	if (open_backend(c, backend, c->cmd->queue, &q))
		return 1;
	int rc = 0;
	struct export_file *files = NULL;
	struct export_skip *skipped = NULL;
	struct skipped_corrupt *sk = NULL;
	size_t nfiles = 0, nskipped = 0;
	int err = 0;
	struct exporter ex = { base, &files, &nfiles, &skipped, &nskipped, &err };
	if (q.fresh)
		goto done; /* no queue yet: nothing to export */
	struct wal_backend_stat st;
	memset(&st, 0, sizeof(st));
	wal_backend_stat(q.w, backend, &st);
	sk = xcalloc(1, sizeof(*sk));
	struct progress prog;
	progress_init(&prog, "exporting", c->dlq ? st.dead_batches : st.pending_batches);
	uint64_t last = 0, done = 0;
	for (;;) {
		/* A page per short read transaction, written after it ended. */
		struct wal_batch bp[PAGE_BATCHES];
		struct wal_dead dp[PAGE_BATCHES];
		size_t n;
		if (c->dlq)
			rc = wal_dead_list(q.w, q.id, last + 1, PAGE_BATCHES, PAGE_BYTES, dp, &n);
		else {
			uint64_t before = sk->kept;
			rc = read_past_corrupt(q.w, q.id, last + 1, PAGE_BATCHES, PAGE_BYTES, 1, bp, &n, sk);
			/* Each corrupt record passed over is left out like a batch
			 * that cannot go into a file, and named the same way. */
			for (size_t i = before; i < sk->kept; i++) {
				char why[240];
				snprintf(why, sizeof(why), "corrupt, %s", sk->at[i].why);
				skipped = xrealloc(skipped, (nskipped + 1) * sizeof(*skipped));
				skipped[nskipped] = (struct export_skip){ sk->at[i].seq, NULL, xstrdup(why) };
				skipped[nskipped].why = skipped[nskipped].owned;
				nskipped++;
				if (sk->at[i].seq > last)
					last = sk->at[i].seq;
			}
		}
		if (rc) {
			fprintf(stderr, "relayctl: cannot read %s of backend '%s': %s\n", c->dlq ? "dead letters" : "queue",
				backend, wal_strerror(rc));
			break;
		}
		if (n == 0)
			break;
		for (size_t i = 0; i < n; i++) {
			struct wal_batch *b = c->dlq ? &dp[i].batch : &bp[i];
			const char *why = c->dlq && dp[i].corrupt ? "a corrupt record, not a batch" : export_refusal(b);
			export_batch(&ex, b, why);
			last = b->seq;
			if (c->dlq)
				wal_dead_release(&dp[i]);
			else
				wal_batch_release(b);
		}
		done += n;
		progress_show(&prog, done, 0);
		if (err)
			break;
	}
	if (rc == 0 && !err && !c->dlq)
		rc = export_held(q.w, q.id, backend, &ex);
	if (rc == 0 && !err)
		progress_done(&prog);
	else if (prog.on)
		fputc('\n', stderr);
done:
	wal_close(q.w);
	for (size_t i = 0; i < nfiles; i++)
		if (files[i].f && fclose(files[i].f) != 0 && !err) {
			err = errno;
			fprintf(stderr, "relayctl: cannot write '%s': %s\n", files[i].path, strerror(errno));
		}
	struct rbuf out = RBUF_INIT;
	if (!rc && !err) {
		for (size_t i = 0; i < nskipped; i++)
			fprintf(stderr, "relayctl: batch %" PRIu64 " not exported: %s (see 'relayctl %s %s %" PRIu64 "')\n",
				skipped[i].seq, skipped[i].why, c->dlq ? "dlq show" : "show", shown(backend),
				skipped[i].seq);
		if (nskipped)
			fprintf(stderr, "relayctl: %zu batch%s not exported; the files hold every other one\n", nskipped,
				nskipped == 1 ? "" : "es");
	}
	if (rc || err) {
		/* A partial export is worse than none: remove what was written. */
		for (size_t i = 0; i < nfiles; i++)
			unlink(files[i].path);
	} else if (c->json) {
		put_json_line(&out, export_json(c, backend, skipped, nskipped, files, nfiles));
	} else if (nfiles == 0 && nskipped == 0) {
		rbuf_appendf(&out, "backend '%s': nothing to export (no %s)\n", backend,
			     c->dlq ? "dead letters" : "pending batches");
	} else {
		for (size_t i = 0; i < nfiles; i++)
			rbuf_appendf(&out,
				     "wrote %s: %" PRIu64 " %s (db '%s', rp '%s', precision %s)\n"
				     "  load with: influx -import -path='%s' -precision=%s\n",
				     files[i].path, files[i].points, relay_plural(files[i].points, "point", "points"),
				     shown(files[i].db),
				     *files[i].rp ? shown(files[i].rp) : "(default)", prec_name(files[i].precision),
				     files[i].path, prec_name(files[i].precision));
	}
	flush_out(&out);
	rbuf_release(&out);
	for (size_t i = 0; i < nfiles; i++) {
		free(files[i].db);
		free(files[i].rp);
		free(files[i].path);
	}
	free(files);
	for (size_t i = 0; i < nskipped; i++)
		free(skipped[i].owned);
	free(skipped);
	free(sk);
	return rc || err || nskipped ? 1 : 0;
}

