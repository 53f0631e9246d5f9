/*
 * What every relayctl command shares: formatting for the terminal and
 * for JSON, progress, opening the queue and a backend's queue in it,
 * reading past corrupt records, and asking relayd on its control socket.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cmd/relayctl/relayctl.h"
#include "relay/base/lineproto.h"

/*---- small helpers ----*/

const char *prec_name(unsigned p)
{
	/* A damaged record must not abort relayctl: lp_precision_name does
	 * for a code it does not know. */
	return p <= LP_PRECISION_H ? lp_precision_name((enum lp_precision)p) : "invalid";
}

void human_bytes(uint64_t b, char *out, size_t n)
{
	const char *u[] = { "B", "KiB", "MiB", "GiB", "TiB" };
	double v = (double)b;
	int i = 0;
	while (v >= 1024 && i < 4) {
		v /= 1024;
		i++;
	}
	snprintf(out, n, i ? "%.1f %s" : "%.0f %s", v, u[i]);
}

void human_age(int64_t s, char *out, size_t n)
{
	if (s < 0)
		s = 0;
	if (s < 120)
		snprintf(out, n, "%" PRId64 "s", s);
	else if (s < 7200)
		snprintf(out, n, "%" PRId64 "m%02" PRId64 "s", s / 60, s % 60);
	else if (s < 172800)
		snprintf(out, n, "%" PRId64 "h%02" PRId64 "m", s / 3600, (s % 3600) / 60);
	else
		snprintf(out, n, "%" PRId64 "d%02" PRId64 "h", s / 86400, (s % 86400) / 3600);
}

/*
 * Whole seconds from ns to now: 0 for no time (0) or one in the future, and
 * saturated rather than overflowing for a time before 1970 (the queue
 * refuses such stored times, but relayd's answers are not the queue).
 */
int64_t age_seconds(int64_t ns, int64_t now)
{
	if (!ns || ns >= now)
		return 0;
	if (ns < 0 && now > INT64_MAX + ns)
		return INT64_MAX / 1000000000LL;
	return (now - ns) / 1000000000LL; /* now > ns, and the difference fits */
}

/* "2026-01-02T03:04:05Z", or "-" for 0 (or a time gmtime cannot show). */
void fmt_time(int64_t ns, char *out, size_t n)
{
	time_t t = (time_t)(ns / 1000000000LL);
	struct tm tm;
	if (!ns || !gmtime_r(&t, &tm) || !strftime(out, n, "%Y-%m-%dT%H:%M:%SZ", &tm))
		snprintf(out, n, "-");
}

/*---- what reaches the operator's terminal ----*/

/*
 * Whatever relayctl prints that comes from the queue or from relayd
 * (database and retention policy names, org, user, backend names, the
 * backends' messages, line protocol) may hold any byte: the door refuses
 * control bytes now, but older batches, imports and damaged records need
 * not. None of it may reach the terminal raw, where an escape sequence
 * could rewrite the screen or a CR hide what precedes it. Text output
 * shows printable ASCII and well-formed UTF-8 as they are and every other
 * byte as \xHH: C0 controls (tab and newline too, except the newline that
 * ends a line of line protocol), DEL, C1 controls, bytes that are not
 * UTF-8, and the characters that reorder or break lines (bidirectional
 * controls, U+2028, U+2029). JSON output escapes the same characters as
 * \uXXXX and shows a byte that is not UTF-8 as U+FFFD: JSON is UTF-8
 * text. export's files are the only place where stored bytes come out
 * exactly.
 */

/* One unit of s[0..n) (n > 0) as text output shows it, into u (at least
 * 17 bytes, NUL-terminated); returns the bytes of s it stands for. */
static size_t term_unit(const char *s, size_t n, char *u)
{
	const unsigned char *p = (const unsigned char *)s;
	uint32_t cp;
	size_t k;
	if (p[0] >= 0x20 && p[0] < 0x7F) {
		u[0] = s[0];
		u[1] = '\0';
		return 1;
	}
	if ((k = utf8_seq(p, n, &cp)) && !unicode_unsafe(cp)) {
		memcpy(u, s, k);
		u[k] = '\0';
		return k;
	}
	/* a whole unsafe character escaped byte by byte, or one stray byte */
	k = k ? k : 1;
	for (size_t i = 0; i < k; i++)
		snprintf(u + 4 * i, 5, "\\x%02x", p[i]);
	return k;
}

/* Append s[0..n) escaped for text output. */
void term_append(struct rbuf *b, const char *s, size_t n)
{
	char u[17];
	for (size_t i = 0; i < n;) {
		i += term_unit(s + i, n - i, u);
		rbuf_append(b, u, strlen(u));
	}
}

/*
 * s escaped for text output into out (n bytes), cut to at most max bytes
 * (max < n), ending in "..." when cut; never inside an escape or a UTF-8
 * sequence. For table cells and names inside messages.
 */
void cell(const char *s, size_t max, char *out, size_t n)
{
	size_t len = strlen(s), o = 0, fit = 0;
	char u[17];
	if (max >= n)
		max = n - 1;
	for (size_t i = 0; i < len;) {
		size_t used = term_unit(s + i, len - i, u), ul = strlen(u);
		if (o + ul > max) {
			/* cut: back to where "..." still fits */
			o = fit;
			if (o + 3 <= max) {
				memcpy(out + o, "...", 3);
				o += 3;
			}
			break;
		}
		memcpy(out + o, u, ul);
		o += ul;
		i += used;
		if (o + 3 <= max)
			fit = o;
	}
	out[o] = '\0';
}

/*
 * s escaped for text output (and cut to about 1000 bytes), for a name in
 * a message. The result lives until the fourth next call: a message may
 * show a few names at once.
 */
const char *shown(const char *s)
{
	static char bufs[4][1024];
	static unsigned next;
	char *b = bufs[next++ % 4];
	cell(s ? s : "", sizeof(bufs[0]) - 1, b, sizeof(bufs[0]));
	return b;
}

void flush_out(struct rbuf *b)
{
	if (b->len)
		fwrite(b->data, 1, b->len, stdout);
	b->len = 0;
	fflush(stdout);
}

int parse_seq(const char *s, uint64_t *out)
{
	char *end;
	if (!*s || *s == '-' || *s == '+')
		return -1;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || *end || v == 0)
		return -1;
	*out = v;
	return 0;
}

/*---- progress (stderr, on a terminal only) ----*/

void progress_init(struct progress *p, const char *what, uint64_t total)
{
	p->on = isatty(STDERR_FILENO) && total > 0;
	p->what = what;
	p->total = total;
	p->last_ms = 0;
}

void progress_show(struct progress *p, uint64_t done, int force)
{
	if (!p->on)
		return;
	uint64_t now = now_mono_ns() / 1000000;
	if (!force && now - p->last_ms < 100)
		return;
	p->last_ms = now;
	if (done > p->total)
		done = p->total;
	int pct = (int)(done * 100 / p->total);
	char bar[31];
	int fill = pct * 30 / 100;
	for (int i = 0; i < 30; i++)
		bar[i] = i < fill ? '#' : '.';
	bar[30] = '\0';
	fprintf(stderr, "\r%s [%s] %3d%%", p->what, bar, pct);
	fflush(stderr);
}

void progress_done(struct progress *p)
{
	if (!p->on)
		return;
	progress_show(p, p->total, 1);
	fputc('\n', stderr);
}

/*---- the queue and the daemon ----*/

/* What the operator can do about a damaged queue file: said once, the
 * same way by every command. */
#define MOVE_ASIDE_HINT                                                                                         \
	"nothing was read or changed. 'relayctl salvage DEST' copies every batch still readable into a new store; " \
	"then stop relayd, move the file aside (mv '%s/data.mdb' '%s/data.mdb.damaged') and put the salvaged one " \
	"in its place, or start relayd without it for an empty queue"

int open_queue(const struct ctl *c, unsigned flags, struct wal **w)
{
	/* A shared (writing) open uses relayd's own map size, so that it never
	 * writes past the end of relayd's map. */
	struct wal_options o = { flags & WAL_F_SHARED ? config_map_size(&c->cfg) : 0, flags };
	const char *dir = c->cfg.data_dir;
	char why[300];
	int rc = wal_open_why(dir, &o, w, why, sizeof(why));
	if (rc == WAL_EDAMAGED)
		fprintf(stderr, "relayctl: the queue file '%s/data.mdb' is damaged: %s; " MOVE_ASIDE_HINT "\n", dir,
			shown(why), dir, dir);
	else if (rc == WAL_EVERSION && strncmp(why, "it is an LMDB file", 18) == 0)
		fprintf(stderr, "relayctl: the queue file '%s/data.mdb' cannot be read: %s; " MOVE_ASIDE_HINT "\n", dir,
			shown(why), dir, dir);
	else if (rc == WAL_EVERSION && strstr(why, "older relayd"))
		fprintf(stderr,
			"relayctl: the queue in '%s/data.mdb' is in an older format (%s): start relayd once, it upgrades "
			"the queue in place; nothing was read or changed\n",
			dir, shown(why));
	else if (rc == WAL_ECORRUPT)
		fprintf(stderr,
			"relayctl: the queue in '%s/data.mdb' is damaged: %s (its format record, next sequence or "
			"databases); " MOVE_ASIDE_HINT "\n",
			dir, wal_strerror(rc), dir, dir);
	else if (rc == -ENOENT)
		fprintf(stderr, "relayctl: data directory '%s' does not exist (has relayd run with this configuration?)\n",
			dir);
	else if (rc == WAL_ENOTQUEUE)
		fprintf(stderr, "relayctl: '%s' holds no relayd queue (has relayd run with this configuration?)\n", dir);
	else if (rc == WAL_EVERSION && *why)
		fprintf(stderr, "relayctl: the queue in '%s': %s; nothing was read or changed\n", dir, shown(why));
	else if (rc == WAL_EVERSION)
		fprintf(stderr,
			"relayctl: the queue in '%s' was written by an incompatible relayd version (this one reads format %d)\n",
			dir, WAL_FORMAT_VERSION);
	else if (rc == -EACCES || rc == -EPERM)
		fprintf(stderr, "relayctl: cannot open queue in '%s': %s (run as relayd's user)\n", dir, wal_strerror(rc));
	else if (rc)
		fprintf(stderr, "relayctl: cannot open queue in '%s': %s\n", dir, wal_strerror(rc));
	return rc;
}

int known_backend(const struct ctl *c, const char *name)
{
	for (size_t i = 0; i < c->cfg.nbackends; i++)
		if (strcmp(c->cfg.backends[i].name, name) == 0)
			return (int)i;
	fprintf(stderr, "relayctl: unknown backend '%s' (not in %s)\n", name, c->cfg.path);
	return -1;
}

int configured(const struct ctl *c, const char *name)
{
	for (size_t i = 0; i < c->cfg.nbackends; i++)
		if (strcmp(c->cfg.backends[i].name, name) == 0)
			return 1;
	return 0;
}

/* For commands that change a queue: a backend relayd never created. */
static void no_queue_yet(const char *name)
{
	fprintf(stderr, "relayctl: backend '%s' has no queue yet (relayd has not run with it since it was configured)\n",
		name);
}

int open_backend(const struct ctl *c, const char *name, unsigned flags, struct backend_queue *q)
{
	memset(q, 0, sizeof(*q));
	q->name = name;
	if (open_queue(c, flags, &q->w))
		return -1;
	int rc = wal_backend_open(q->w, name, &q->id);
	if (rc == WAL_ENOBACKEND && configured(c, name)) {
		q->fresh = 1;
		return 0;
	}
	if (rc == WAL_ENOBACKEND) {
		/* Neither configured nor an orphaned queue (a backend removed
		 * from the configuration keeps its queue until purged, and
		 * every command but retry and import works on it). */
		known_backend(c, name);
	} else if (rc == WAL_ECORRUPT) {
		fprintf(stderr,
			"relayctl: the record of backend '%s' in '%s/data.mdb' is corrupt (its cursor and counters cannot be "
			"read): see 'relayctl verify'; 'relayctl purge' cannot help, move the file aside to start over\n",
			shown(name), c->cfg.data_dir);
	} else if (rc) {
		fprintf(stderr, "relayctl: cannot open queue of backend '%s': %s\n", name, wal_strerror(rc));
	}
	if (rc) {
		wal_close(q->w);
		q->w = NULL;
		return -1;
	}
	return 0;
}

int open_backend_to_change(const struct ctl *c, const char *name, unsigned flags, struct backend_queue *q)
{
	if (open_backend(c, name, flags, q))
		return -1;
	if (q->fresh) {
		no_queue_yet(name);
		wal_close(q->w);
		q->w = NULL;
		return -1;
	}
	return 0;
}

/*---- corrupt records ----*/

/*
 * Read (with bodies) or peek up to max pending batches of backend id from
 * from_seq, passing over every record that does not decode: each is
 * added to sk (wal_find_corrupt says which and why) and the read goes on
 * after it. Returns 0 or a wal error. Short read transactions only.
 */
int read_past_corrupt(struct wal *w, int id, uint64_t from, size_t max, size_t max_bytes, int with_body,
                             struct wal_batch *out, size_t *count, struct skipped_corrupt *sk)
{
	int retries = 0;
	*count = 0;
	for (;;) {
		int rc = with_body ? wal_read(w, id, from, max, max_bytes, out, count) : wal_peek(w, id, from, max, out, count);
		if (rc != WAL_ECORRUPT)
			return rc;
		uint64_t seq;
		char why[200];
		rc = wal_find_corrupt(w, id, from, &seq, why, sizeof(why));
		if (rc == WAL_ENOTFOUND && retries++ < 3)
			continue; /* quarantined by relayd meanwhile: read again */
		if (rc)
			return rc == WAL_ENOTFOUND ? WAL_ECORRUPT : rc;
		if (sk->kept < RELAY_ARRAY_SIZE(sk->at)) {
			sk->at[sk->kept].seq = seq;
			snprintf(sk->at[sk->kept].why, sizeof(sk->at[0].why), "%s", why);
			sk->kept++;
		}
		sk->n++;
		from = seq + 1;
		retries = 0;
	}
}

/* Tell about the skipped records on stderr; 1 when there were any. */
int report_corrupt(const struct skipped_corrupt *sk, const char *backend)
{
	for (size_t i = 0; i < sk->kept; i++)
		fprintf(stderr,
			"relayctl: batch %" PRIu64 " of backend '%s' is corrupt and was skipped: %s (relayd moves it to the "
			"dead-letter queue when it reaches it; see 'relayctl verify')\n",
			sk->at[i].seq, shown(backend), shown(sk->at[i].why));
	if (sk->n > sk->kept)
		fprintf(stderr, "relayctl: ... and %" PRIu64 " more corrupt batches of backend '%s' skipped\n",
			sk->n - sk->kept, shown(backend));
	return sk->n != 0;
}

/* The skipped records as JSON: [{"seq":..,"why":..},...] */
json_t *corrupt_json(const struct skipped_corrupt *sk)
{
	json_t *a = json_array();
	for (size_t i = 0; i < sk->kept; i++) {
		json_t *o = json_object();
		json_object_set_new(o, "seq", u64_json(sk->at[i].seq));
		json_object_set_new(o, "why", rjson_cstr(sk->at[i].why));
		json_array_append_new(a, o);
	}
	return a;
}

/* One request to relayd. 0 ok, 1 not running, -1 it answered an error
 * or not at all (*reply: what to tell; caller frees). */
int ask_relayd(const struct ctl *c, const char *line, char **reply)
{
	*reply = NULL;
	if (!c->sock_ok)
		return 1;
	int rc = control_request(c->sock, line, CONTROL_TIMEOUT_MS, reply);
	if (rc == 0)
		return 0;
	if (rc == -ENOENT || rc == -ECONNREFUSED)
		return 1;
	if (rc != CONTROL_EREPLY)
		*reply = xstrdup(strerror(-rc));
	return -1;
}

/* pid in data_dir/relayd.lock when that process is a live relayd, else 0.
 * Only read: taking the lock, even for a moment, could make a starting
 * relayd refuse to start. */
long relayd_pid(const struct ctl *c)
{
	char path[4200], buf[64];
	snprintf(path, sizeof(path), "%s/relayd.lock", c->cfg.data_dir);
	FILE *f = fopen(path, "r");
	if (!f)
		return 0;
	long pid = fgets(buf, sizeof(buf), f) ? strtol(buf, NULL, 10) : 0;
	fclose(f);
	if (pid <= 0 || (kill((pid_t)pid, 0) < 0 && errno != EPERM))
		return 0;
	snprintf(path, sizeof(path), "/proc/%ld/comm", pid);
	f = fopen(path, "r");
	if (!f)
		return 0;
	int is = fgets(buf, sizeof(buf), f) && strncmp(buf, "relayd", 6) == 0;
	fclose(f);
	return is ? pid : 0;
}

/*
 * Tell a running relayd that backend's queue changed. What became of it
 * goes to doc as its "relayd" member when doc is given (JSON), else as a
 * line to out when out is given.
 */
void nudge(const struct ctl *c, const char *backend, struct rbuf *out, json_t *doc)
{
	char line[128], *reply;
	snprintf(line, sizeof(line), "notify %s", backend);
	int rc = ask_relayd(c, line, &reply);
	const char *what;
	char msg[400];
	if (rc == 0) {
		what = "notified";
		snprintf(msg, sizeof(msg), "relayd took the change at once");
	} else if (rc == 1 && !relayd_pid(c)) {
		what = "stopped";
		snprintf(msg, sizeof(msg), "relayd is not running: the change takes effect when it starts");
	} else {
		what = "not notified";
		snprintf(msg, sizeof(msg),
			 "relayd runs but did not take the change at once (%s): it takes effect at relayd's next start",
			 reply ? shown(reply) : "no control socket");
	}
	if (doc)
		json_object_set_new(doc, "relayd", rjson_cstr(what));
	else if (out)
		rbuf_appendf(out, "%s\n", msg);
	free(reply);
}

/* What relayd says of its backends: 1 with *st filled, 0 not running,
 * -1 running but no usable answer (*why says why). */
int relayd_status(const struct ctl *c, struct control_status *st, char *why, size_t whylen)
{
	char *reply;
	int rc = ask_relayd(c, "status", &reply);
	if (rc == 1) {
		if (!relayd_pid(c))
			return 0;
		snprintf(why, whylen, "relayd runs but does not answer on %s", c->sock);
		return -1;
	}
	if (rc < 0) {
		snprintf(why, whylen, "relayd did not answer 'status': %s", reply ? shown(reply) : "?");
		free(reply);
		return -1;
	}
	rc = control_status_parse(reply, st);
	free(reply);
	if (rc) {
		snprintf(why, whylen, "relayd's status reply is not understood");
		return -1;
	}
	return 1;
}

/* The header of a dead letter in "dlq show": comment lines, so that the
 * output stays line protocol. */
void dead_header(struct rbuf *out, const char *backend, const struct wal_dead *d)
{
	char t[32], msg[600];
	fmt_time(d->dead_ns, t, sizeof(t));
	cell(d->msg, 500, msg, sizeof(msg));
	if (d->corrupt) {
		rbuf_appendf(out,
			     "# dead letter %" PRIu64 " of backend '%s': CORRUPT, not a batch relayd can send (%zu %s): %s\n"
			     "# its bytes follow as they are stored, escaped; 'relayctl dlq drop' removes it\n",
			     d->batch.seq, shown(backend), d->bytes, relay_plural(d->bytes, "byte", "bytes"), msg);
		return;
	}
	if (d->batch.kind == WAL_KIND_STATEMENT)
		rbuf_appendf(out, "# dead letter %" PRIu64 " of backend '%s': a statement, db '%s', rp '%s', %zu %s\n",
			     d->batch.seq, shown(backend), shown(d->batch.db), shown(d->batch.rp), d->bytes,
			     relay_plural(d->bytes, "byte", "bytes"));
	else
		rbuf_appendf(out, "# dead letter %" PRIu64 " of backend '%s': db '%s', rp '%s', precision %s, %" PRIu32
			     " %s, %zu %s\n",
			     d->batch.seq, shown(backend), shown(d->batch.db), shown(d->batch.rp),
			     prec_name(d->batch.precision), d->batch.lines, relay_plural(d->batch.lines, "point", "points"),
			     d->bytes, relay_plural(d->bytes, "byte", "bytes"));
	rbuf_appendf(out, "# refused with status %d after %" PRIu32 " attempt%s at %s: %s\n", d->status, d->attempts,
		     relay_s(d->attempts), t, msg);
}

/*
 * A body as text: one line of output per line of line protocol, each
 * escaped (a newline inside a string field shows as \x0a, so that no
 * line seems to be there that is not).
 */
void batch_text(struct rbuf *out, const struct wal_batch *b)
{
	if (b->kind != WAL_KIND_STATEMENT) {
		body_text(out, b->body, b->body_len);
		return;
	}
	/* InfluxQL, not line protocol: said so, on one escaped line. */
	size_t len = b->body_len - (b->body_len && b->body[b->body_len - 1] == '\n');
	rbuf_append(out, "statement: ", 11);
	term_append(out, b->body, len);
	rbuf_appendc(out, '\n');
}

const char *kind_name(unsigned kind)
{
	return kind == WAL_KIND_STATEMENT ? "statement" : "lines";
}

void body_text(struct rbuf *out, const char *body, size_t len)
{
	const char *p = body, *e = body + len;
	while (p < e) {
		size_t kl;
		const char *l = lp_line_end(p, e, &kl);
		term_append(out, p, (size_t)(l - p) - (l[-1] == '\n'));
		rbuf_appendc(out, '\n');
		p = l;
	}
}

/*---- JSON: values built through relay/base/json.h, never text by hand ----*/

/*
 * A count or sequence number as a JSON integer. jansson's integers are
 * signed 64-bit: a value past INT64_MAX (no queue holds one) is written as
 * a real rather than wrapped negative.
 */
json_t *u64_json(uint64_t v)
{
	return v <= INT64_MAX ? json_integer((json_int_t)v) : json_real((double)v);
}

/* doc as one line of out; takes the caller's reference to doc. */
void put_json_line(struct rbuf *out, json_t *doc)
{
	rjson_append_new(out, doc);
	rbuf_appendc(out, '\n');
}

/* A command's answer about one backend: {"backend":NAME}, members to
 * follow. */
json_t *backend_doc(const char *backend)
{
	json_t *doc = json_object();
	json_object_set_new(doc, "backend", rjson_cstr(backend));
	return doc;
}

/* A batch's members every view shows the same way, in this order. */
json_t *batch_json(const struct wal_batch *b)
{
	json_t *o = json_object();
	json_object_set_new(o, "seq", u64_json(b->seq));
	json_object_set_new(o, "db", rjson_cstr(b->db));
	json_object_set_new(o, "rp", rjson_cstr(b->rp));
	json_object_set_new(o, "kind", rjson_cstr(kind_name(b->kind)));
	json_object_set_new(o, "precision", rjson_cstr(prec_name(b->precision)));
	json_object_set_new(o, "points", json_integer(b->lines));
	json_object_set_new(o, "bytes", u64_json(b->body_len));
	json_object_set_new(o, "accept_ns", json_integer(b->accept_ns));
	return o;
}

/* A dead letter: the batch, why and when it died, and its body when read. */
json_t *dead_json(const struct wal_dead *d)
{
	json_t *o = batch_json(&d->batch);
	json_object_set_new(o, "corrupt", json_boolean(d->corrupt));
	json_object_set_new(o, "status", json_integer(d->status));
	json_object_set_new(o, "attempts", json_integer(d->attempts));
	json_object_set_new(o, "dead_ns", json_integer(d->dead_ns));
	json_object_set_new(o, "message", rjson_cstr(d->msg));
	if (d->batch.body)
		json_object_set_new(o, "body", rjson_string(d->batch.body, d->batch.body_len));
	return o;
}
