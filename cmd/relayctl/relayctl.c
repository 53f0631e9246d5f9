/*
 * relayctl: see into relayd's queues and repair them, while relayd runs or
 * not. Views open the queue read-only and use one short read transaction
 * per query, copying out what they show before anything is printed or
 * waited for. Changes (pause, resume, purge, dead-letter requeue and drop,
 * import) are LMDB write transactions through wal/, beside relayd (a
 * shared open: never relayd.lock, never creating anything); then relayd is
 * nudged through its control socket so that they take effect at once. The
 * daemon-only facts (delivery state, last error, rate) come from that
 * socket too. docs/architecture.md explains the design; relayctl(8) the
 * commands.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "relay/base/json.h"
#include "relay/base/config.h"
#include "relay/control/control.h"
#include "relay/base/lineproto.h"
#include "relay/base/util.h"
#include "wal/wal.h"

#define CONTROL_TIMEOUT_MS 2000
#define PAGE_BATCHES 64              /* batches copied out per read transaction */
#define PAGE_BYTES (16u << 20)       /* ... and at most about this many body bytes */
#define IMPORT_BATCH_LINES 5000      /* lines per queued batch */
#define IMPORT_BATCH_BYTES (4u << 20)
#define IMPORT_COMMIT_BATCHES 32     /* batches per commit */
#define IMPORT_MAX_ERRORS 20         /* bad lines listed */
#define DLQ_ALL_STEP 256             /* dead letters per commit with --all */

struct ctl {
	struct relay_config cfg;
	int json;
	long count;         /* -n */
	int yes, all, dlq;
	const char *db, *rp, *precision;
	double watch;       /* seconds; 0 = once */
	char sock[108];
	int sock_ok;
};

static void usage(FILE *f)
{
	fprintf(f,
		"usage: relayctl -c FILE [--json] COMMAND [ARGS]\n"
		"\n"
		"views (relayd running or not):\n"
		"  status [--watch SECONDS]           every backend: state, backlog, age, dead letters, delivery\n"
		"  peek BACKEND [-n N]                the next N pending batches (default 10)\n"
		"  show BACKEND SEQ                   the line protocol of a batch, pending or dead\n"
		"  dlq list BACKEND                   the dead-letter queue, with the backend's errors\n"
		"  dlq show BACKEND SEQ...            dead letters with their line protocol\n"
		"  export BACKEND FILE [--dlq]        pending batches (or dead letters) as influx -import files\n"
		"  verify                             check the whole store; exit 1 on damage\n"
		"  salvage DEST                       copy every readable pending batch of a damaged store into a new\n"
		"                                     store in DEST (relayd stopped)\n"
		"  dump BACKEND                       pending batches as JSON lines\n"
		"changes (take effect at once when relayd runs, else at its next start):\n"
		"  pause BACKEND | resume BACKEND     stop / restart delivery (the queue keeps filling)\n"
		"  retry BACKEND                      ask relayd to skip the current backoff wait\n"
		"  purge BACKEND --yes                drop every pending batch of BACKEND\n"
		"  dlq requeue BACKEND SEQ...|--all   put dead letters back at the end of the queue\n"
		"  dlq drop BACKEND SEQ...|--all      delete dead letters (--all needs --yes)\n"
		"  import BACKEND FILE --db DB [--rp RP] [--precision P]\n"
		"                                     validate a line-protocol file and queue it for BACKEND\n"
		"\n"
		"  -c, --config FILE   relayd's configuration (data_dir and backends)\n"
		"  --json              machine-readable output\n");
}

/*---- small helpers ----*/

static const char *prec_name(unsigned p)
{
	/* A damaged record must not abort relayctl: lp_precision_name does
	 * for a code it does not know. */
	return p <= LP_PRECISION_H ? lp_precision_name((enum lp_precision)p) : "invalid";
}

static void human_bytes(uint64_t b, char *out, size_t n)
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

static void human_age(int64_t s, char *out, size_t n)
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
static int64_t age_seconds(int64_t ns, int64_t now)
{
	if (!ns || ns >= now)
		return 0;
	if (ns < 0 && now > INT64_MAX + ns)
		return INT64_MAX / 1000000000LL;
	return (now - ns) / 1000000000LL; /* now > ns, and the difference fits */
}

/* "2026-01-02T03:04:05Z", or "-" for 0 (or a time gmtime cannot show). */
static void fmt_time(int64_t ns, char *out, size_t n)
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

/* Length (2..4) of the well-formed UTF-8 sequence at s[0..n) and its code
 * point, or 0 when none starts there (ASCII included). */
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
static void term_append(struct rbuf *b, const char *s, size_t n)
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
static void cell(const char *s, size_t max, char *out, size_t n)
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
static const char *shown(const char *s)
{
	static char bufs[4][1024];
	static unsigned next;
	char *b = bufs[next++ % 4];
	cell(s ? s : "", sizeof(bufs[0]) - 1, b, sizeof(bufs[0]));
	return b;
}

static void json_str(struct rbuf *b, const char *s)
{
	rjson_append_string(b, s ? s : "", s ? strlen(s) : 0);
}

static void flush_out(struct rbuf *b)
{
	if (b->len)
		fwrite(b->data, 1, b->len, stdout);
	b->len = 0;
	fflush(stdout);
}

static int parse_seq(const char *s, uint64_t *out)
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

struct progress {
	int on;
	const char *what;
	uint64_t total;
	uint64_t last_ms;
};

static void progress_init(struct progress *p, const char *what, uint64_t total)
{
	p->on = isatty(STDERR_FILENO) && total > 0;
	p->what = what;
	p->total = total;
	p->last_ms = 0;
}

static void progress_show(struct progress *p, uint64_t done, int force)
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

static void progress_done(struct progress *p)
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

static int open_queue(const struct ctl *c, unsigned flags, struct wal **w)
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

static int known_backend(const struct ctl *c, const char *name)
{
	for (size_t i = 0; i < c->cfg.nbackends; i++)
		if (strcmp(c->cfg.backends[i].name, name) == 0)
			return (int)i;
	fprintf(stderr, "relayctl: unknown backend '%s' (not in %s)\n", name, c->cfg.path);
	return -1;
}

/*
 * Open the queue and find backend name. Returns 0, 1 when the backend has
 * no queue yet (relayd never ran with it; *w is open, *id unset), or -1
 * after printing why.
 */
static int configured(const struct ctl *c, const char *name)
{
	for (size_t i = 0; i < c->cfg.nbackends; i++)
		if (strcmp(c->cfg.backends[i].name, name) == 0)
			return 1;
	return 0;
}

static int open_backend(const struct ctl *c, const char *name, unsigned flags, struct wal **w, int *id)
{
	*w = NULL;
	if (open_queue(c, flags, w))
		return -1;
	int rc = wal_backend_open(*w, name, id);
	if (rc == WAL_ENOBACKEND && !configured(c, name)) {
		/* Neither configured nor an orphaned queue (a backend removed
		 * from the configuration keeps its queue until purged, and
		 * every command but retry and import works on it). */
		known_backend(c, name);
		wal_close(*w);
		*w = NULL;
		return -1;
	}
	if (rc == WAL_ENOBACKEND)
		return 1;
	if (rc == WAL_ECORRUPT) {
		fprintf(stderr,
			"relayctl: the record of backend '%s' in '%s/data.mdb' is corrupt (its cursor and counters cannot be "
			"read): see 'relayctl verify'; 'relayctl purge' cannot help, move the file aside to start over\n",
			shown(name), c->cfg.data_dir);
		wal_close(*w);
		*w = NULL;
		return -1;
	}
	if (rc) {
		fprintf(stderr, "relayctl: cannot open queue of backend '%s': %s\n", name, wal_strerror(rc));
		wal_close(*w);
		*w = NULL;
		return -1;
	}
	return 0;
}

/*---- corrupt records ----*/

/* Records a view skipped because they do not decode. */
struct skipped_corrupt {
	uint64_t n; /* all of them */
	size_t kept;
	struct {
		uint64_t seq;
		char why[200];
	} at[64];
};

/*
 * Read (with bodies) or peek up to max pending batches of backend id from
 * from_seq, passing over every record that does not decode: each is
 * added to sk (wal_find_corrupt says which and why) and the read goes on
 * after it. Returns 0 or a wal error. Short read transactions only.
 */
static int read_past_corrupt(struct wal *w, int id, uint64_t from, size_t max, size_t max_bytes, int with_body,
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
static int report_corrupt(const struct skipped_corrupt *sk, const char *backend)
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

/* The skipped records as a JSON member: ,"corrupt":[{"seq":..,"why":..}] */
static void corrupt_json(struct rbuf *out, const struct skipped_corrupt *sk)
{
	rbuf_append(out, ",\"corrupt\":[", 12);
	for (size_t i = 0; i < sk->kept; i++) {
		rbuf_appendf(out, "%s{\"seq\":%" PRIu64 ",\"why\":", i ? "," : "", sk->at[i].seq);
		json_str(out, sk->at[i].why);
		rbuf_appendc(out, '}');
	}
	rbuf_appendc(out, ']');
}

/* For commands that change a queue: a backend relayd never created. */
static void no_queue_yet(const char *name)
{
	fprintf(stderr, "relayctl: backend '%s' has no queue yet (relayd has not run with it since it was configured)\n",
		name);
}

/* One request to relayd. 0 ok, 1 not running, -1 it answered an error
 * or not at all (*reply: what to tell; caller frees). */
static int ask_relayd(const struct ctl *c, const char *line, char **reply)
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
static long relayd_pid(const struct ctl *c)
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
 * Tell a running relayd that backend's queue changed. Prints what became
 * of it (stdout; in JSON a "relayd" member is appended to out instead).
 */
static void nudge(const struct ctl *c, const char *backend, struct rbuf *out)
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
	if (c->json) {
		rbuf_append(out, ",\"relayd\":", 10);
		json_str(out, what);
	} else {
		rbuf_appendf(out, "%s\n", msg);
	}
	free(reply);
}

/* What relayd says of its backends: 1 with *st filled, 0 not running,
 * -1 running but no usable answer (*why says why). */
static int relayd_status(const struct ctl *c, struct control_status *st, char *why, size_t whylen)
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

/*---- status ----*/

/* Configured backends, then orphaned queues. */
#define STATUS_MAX (RELAY_MAX_BACKENDS + WAL_MAX_BACKENDS)

/* Delivered points per queue at the last refresh, by name: the set of
 * queues may change between refreshes (an orphaned one purged). */
struct rate_memo {
	char names[STATUS_MAX][WAL_NAME_MAX + 1];
	uint64_t points[STATUS_MAX];
	size_t n;
	uint64_t at_ms;
	int have;
};

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig)
{
	(void)sig;
	interrupted = 1;
}

/* One refresh of status into out: 0, 1 on an error (nothing to show), 2
 * when a queue is damaged (shown as such). */
static int status_once(const struct ctl *c, struct wal *w, struct rate_memo *memo, struct rbuf *out)
{
	struct control_status *ds = xcalloc(1, sizeof(*ds));
	char why[300] = "";
	int running = relayd_status(c, ds, why, sizeof(why));
	int64_t now = now_realtime_ns();
	uint64_t now_ms = now_mono_ns() / 1000000;
	struct wal_backend_stat *st = xcalloc(STATUS_MAX, sizeof(*st));
	char(*stored)[WAL_NAME_MAX + 1] = xcalloc(WAL_MAX_BACKENDS, sizeof(*stored));
	struct rate_memo *next = memo ? xcalloc(1, sizeof(*next)) : NULL;
	const char *names[STATUS_MAX];
	char damaged[STATUS_MAX] = { 0 };
	size_t nnames = 0, nstored = 0, ndamaged = 0;
	int rc = 0;

	/* The configured backends, then the queues the store holds for
	 * backends no longer configured ("orphaned": delivery stopped, the
	 * queue kept until purged). */
	for (size_t i = 0; i < c->cfg.nbackends; i++)
		names[nnames++] = c->cfg.backends[i].name;
	if ((rc = wal_backend_names(w, stored, WAL_MAX_BACKENDS, &nstored))) {
		fprintf(stderr, "relayctl: cannot list the queues: %s\n", wal_strerror(rc));
		goto out;
	}
	for (size_t i = 0; i < nstored && nnames < STATUS_MAX; i++)
		if (!configured(c, stored[i]))
			names[nnames++] = stored[i];

	/* Every figure first (one short read transaction each), then the
	 * output: nothing is printed while a transaction is open. */
	for (size_t i = 0; i < nnames; i++) {
		rc = wal_backend_stat(w, names[i], &st[i]);
		if (rc == 0 && i >= c->cfg.nbackends && !st[i].pending_batches && !st[i].dead_batches) {
			/* An orphaned queue with nothing left (purged): not shown. */
			names[i--] = names[--nnames];
			continue;
		}
		if (rc == WAL_ENOBACKEND) {
			memset(&st[i], 0, sizeof(st[i])); /* configured, never opened: nothing queued */
			rc = 0;
		} else if (rc == WAL_ECORRUPT) {
			/* One damaged record must not hide every other queue: this
			 * one is shown as damaged, and the exit status says so. */
			fprintf(stderr,
				"relayctl: the record of backend '%s' is corrupt: its figures cannot be read (see 'relayctl "
				"verify')\n",
				shown(names[i]));
			memset(&st[i], 0, sizeof(st[i]));
			damaged[i] = 1;
			ndamaged++;
			rc = 0;
		} else if (rc == 0 && st[i].corrupt_seq) {
			/* A batch that does not decode at the head of the queue: the
			 * figures are there, delivery waits for its quarantine. */
			int id;
			uint64_t seq = st[i].corrupt_seq;
			char cwhy[200] = "";
			if (wal_backend_open(w, names[i], &id) == 0)
				wal_find_corrupt(w, id, seq, &seq, cwhy, sizeof(cwhy));
			fprintf(stderr,
				"relayctl: batch %" PRIu64 " of backend '%s' is corrupt%s%s (relayd moves it to the dead-letter "
				"queue when it reaches it; see 'relayctl verify')\n",
				seq, shown(names[i]), *cwhy ? ": " : "", shown(cwhy));
			damaged[i] = 1;
			ndamaged++;
		} else if (rc) {
			fprintf(stderr, "relayctl: cannot read queue of backend '%s': %s\n", shown(names[i]),
				wal_strerror(rc));
			goto out;
		}
	}
	const char *rstate = running ? "running" : "stopped";
	if (c->json) {
		rbuf_append(out, "{\"relayd\":", 10);
		json_str(out, rstate);
		if (running == 1)
			rbuf_appendf(out, ",\"pid\":%" PRId64, ds->pid);
		if (running < 0) {
			rbuf_append(out, ",\"relayd_error\":", 16);
			json_str(out, why);
		}
		rbuf_append(out, ",\"backends\":[", 13);
	} else {
		if (running == 1)
			rbuf_appendf(out, "relayd: running (pid %" PRId64 ", version %s)\n", ds->pid, shown(ds->version));
		else if (running == 0)
			rbuf_appendf(out, "relayd: stopped\n");
		else
			rbuf_appendf(out, "relayd: %s\n", why);
		rbuf_appendf(out, "%-16s %-9s %-6s %9s %11s %10s %8s %6s %20s %10s\n", "BACKEND", "STATE", "PAUSED",
			     "BATCHES", "POINTS", "BYTES", "OLDEST", "DEAD", "LAST DELIVERY", "POINTS/S");
	}
	for (size_t i = 0; i < nnames; i++) {
		const char *name = names[i];
		int orphaned = i >= c->cfg.nbackends;
		const struct control_backend_status *d = running == 1 && !orphaned ? control_status_find(ds, name) : NULL;
		const char *state = "-";
		if (damaged[i])
			state = "damaged";
		else if (orphaned)
			state = "orphaned";
		else if (d)
			state = d->state;
		else if (running == 0)
			state = st[i].paused ? "paused" : "stopped";
		if (!*state)
			state = "-";
		/* The rate: relayd's own figure, or with --watch the change of
		 * the delivered points since the last refresh. */
		double rate = NAN;
		if (d)
			rate = d->points_per_second;
		else if (memo && memo->have && now_ms > memo->at_ms) {
			for (size_t m = 0; m < memo->n; m++)
				if (strcmp(memo->names[m], name) == 0 && st[i].delivered_points >= memo->points[m])
					rate = (double)(st[i].delivered_points - memo->points[m]) * 1000.0 /
					       (double)(now_ms - memo->at_ms);
		}
		int64_t last = st[i].last_delivery_ns;
		if (d && d->last_delivery_ns > last)
			last = d->last_delivery_ns;
		int64_t age = age_seconds(st[i].oldest_accept_ns, now);
		if (c->json) {
			rbuf_append(out, i ? ",{\"name\":" : "{\"name\":", i ? 9 : 8);
			json_str(out, name);
			rbuf_append(out, ",\"state\":", 9);
			json_str(out, state);
			rbuf_appendf(out,
				     ",\"paused\":%s,\"pending_batches\":%" PRIu64 ",\"pending_points\":%" PRIu64
				     ",\"pending_bytes\":%" PRIu64 ",\"oldest_age_seconds\":%" PRId64
				     ",\"dead_batches\":%" PRIu64 ",\"dead_bytes\":%" PRIu64 ",\"delivered_batches\":%" PRIu64
				     ",\"delivered_points\":%" PRIu64 ",\"last_delivery_ns\":%" PRId64,
				     st[i].paused ? "true" : "false", st[i].pending_batches, st[i].pending_points,
				     st[i].pending_bytes, age, st[i].dead_batches, st[i].dead_bytes,
				     st[i].delivered_batches, st[i].delivered_points, last);
			if (isfinite(rate))
				rbuf_appendf(out, ",\"points_per_second\":%.1f", rate);
			else
				rbuf_append(out, ",\"points_per_second\":null", 25);
			rbuf_append(out, ",\"last_error\":", 14);
			json_str(out, d ? d->last_error : "");
			rbuf_appendf(out, ",\"attempts\":%" PRIu32 ",\"next_attempt_ms\":%" PRId64 "}", d ? d->attempts : 0,
				     d ? d->next_attempt_ms : -1);
		} else {
			char b[32], a[32], t[32], r[32], nm[17], sn[10];
			human_bytes(st[i].pending_bytes, b, sizeof(b));
			if (st[i].pending_batches)
				human_age(age, a, sizeof(a));
			else
				snprintf(a, sizeof(a), "-");
			fmt_time(last, t, sizeof(t));
			if (isfinite(rate))
				snprintf(r, sizeof(r), "%.1f", rate);
			else
				snprintf(r, sizeof(r), "-");
			cell(name, 16, nm, sizeof(nm));
			cell(state, 9, sn, sizeof(sn)); /* relayd's word */
			rbuf_appendf(out, "%-16s %-9s %-6s %9" PRIu64 " %11" PRIu64 " %10s %8s %6" PRIu64 " %20s %10s\n", nm,
				     sn, st[i].paused ? "yes" : "no", st[i].pending_batches, st[i].pending_points, b, a,
				     st[i].dead_batches, t, r);
			if (d && d->last_error[0]) {
				char e[200];
				cell(d->last_error, 160, e, sizeof(e));
				rbuf_appendf(out, "  %s: %s", shown(name), e);
				/* No batch to name for a queue read that fails before it
				 * knows where it reads from (state storage). */
				if (d->attempts && d->head_seq)
					rbuf_appendf(out, " (batch %" PRIu64 ", %" PRIu32 " attempt%s", d->head_seq, d->attempts,
						     d->attempts == 1 ? "" : "s");
				else if (d->attempts)
					rbuf_appendf(out, " (%" PRIu32 " attempt%s", d->attempts, d->attempts == 1 ? "" : "s");
				if (d->attempts && d->next_attempt_ms >= 0)
					rbuf_appendf(out, ", next in %.1fs)", (double)d->next_attempt_ms / 1000.0);
				else if (d->attempts)
					rbuf_appendc(out, ')');
				rbuf_appendc(out, '\n');
			}
		}
		if (next) {
			snprintf(next->names[i], sizeof(next->names[i]), "%s", name);
			next->points[i] = st[i].delivered_points;
		}
	}
	if (c->json)
		rbuf_append(out, "]}\n", 3);
	if (memo) {
		/* Replaced whole: the rates above read the old figures by name. */
		next->n = nnames;
		next->at_ms = now_ms;
		next->have = 1;
		*memo = *next;
	}
out:
	free(next);
	free(stored);
	free(st);
	free(ds);
	return rc ? 1 : ndamaged ? 2 : 0;
}

static int cmd_status(const struct ctl *c)
{
	struct wal *w;
	if (open_queue(c, WAL_F_RDONLY, &w))
		return 1;
	struct rbuf out = RBUF_INIT;
	int rc;
	if (c->watch <= 0) {
		rc = status_once(c, w, NULL, &out);
		flush_out(&out);
	} else {
		/* Refresh in place on a terminal; elsewhere one block per
		 * refresh. No transaction is open while we sleep. */
		struct rate_memo memo;
		memset(&memo, 0, sizeof(memo));
		int tty = isatty(STDOUT_FILENO) && !c->json;
		signal(SIGINT, on_sigint);
		signal(SIGTERM, on_sigint);
		for (;;) {
			if (tty)
				rbuf_append(&out, "\033[H\033[J", 6);
			rc = status_once(c, w, &memo, &out);
			if (!c->json && !tty)
				rbuf_appendc(&out, '\n');
			flush_out(&out);
			if (rc == 1 || interrupted)
				break; /* a damaged queue (2) is shown again at the next refresh */
			struct timespec ts = { (time_t)c->watch, (long)((c->watch - floor(c->watch)) * 1e9) };
			while (nanosleep(&ts, &ts) < 0 && errno == EINTR && !interrupted)
				;
			if (interrupted)
				break;
		}
	}
	rbuf_release(&out);
	wal_close(w);
	return rc ? 1 : 0;
}

/*---- peek, show, dump ----*/

static int cmd_peek(const struct ctl *c, const char *backend)
{
	struct wal *w;
	int id;
	int rc = open_backend(c, backend, WAL_F_RDONLY, &w, &id);
	if (rc < 0)
		return 1;
	size_t max = c->count > 0 ? (size_t)c->count : 10;
	if (max > 100000)
		max = 100000;
	struct wal_batch *b = xcalloc(max, sizeof(*b));
	struct skipped_corrupt *sk = xcalloc(1, sizeof(*sk));
	size_t n = 0;
	/* Up to max batches, in pages that stop at a corrupt record: each
	 * such record is passed over and reported, never the end of the view. */
	uint64_t from = 0;
	while (rc == 0 && n < max) {
		size_t got;
		rc = read_past_corrupt(w, id, from, max - n, SIZE_MAX, 0, b + n, &got, sk);
		if (rc || got == 0)
			break;
		n += got;
		from = b[n - 1].seq + 1;
	}
	if (rc && rc != 1) {
		fprintf(stderr, "relayctl: cannot read queue of backend '%s': %s\n", backend, wal_strerror(rc));
		while (n)
			wal_batch_release(&b[--n]);
		free(b);
		free(sk);
		wal_close(w);
		return 1;
	}
	wal_close(w);
	int skipped = report_corrupt(sk, backend);
	/* Attempts and the last error live in relayd's memory, for the batch
	 * it is trying (the head of the queue). */
	struct control_status *ds = xcalloc(1, sizeof(*ds));
	char why[300];
	const struct control_backend_status *d = NULL;
	if (n && relayd_status(c, ds, why, sizeof(why)) == 1)
		d = control_status_find(ds, backend);
	int64_t now = now_realtime_ns();
	struct rbuf out = RBUF_INIT;
	if (c->json) {
		rbuf_append(&out, "{\"backend\":", 11);
		json_str(&out, backend);
		rbuf_append(&out, ",\"batches\":[", 12);
	} else if (n) {
		rbuf_appendf(&out, "%-10s %-16s %-12s %-4s %8s %10s %8s %8s  %s\n", "SEQ", "DB", "RP", "PREC", "POINTS",
			     "BYTES", "AGE", "ATTEMPTS", "LAST ERROR");
	} else if (!skipped) {
		rbuf_appendf(&out, "backend '%s': nothing pending\n", backend);
	}
	for (size_t i = 0; i < n; i++) {
		int head = d && d->head_seq == b[i].seq;
		int64_t age = age_seconds(b[i].accept_ns, now);
		if (c->json) {
			rbuf_appendf(&out, "%s{\"seq\":%" PRIu64 ",\"db\":", i ? "," : "", b[i].seq);
			json_str(&out, b[i].db);
			rbuf_append(&out, ",\"rp\":", 6);
			json_str(&out, b[i].rp);
			rbuf_appendf(&out,
				     ",\"precision\":\"%s\",\"points\":%" PRIu32 ",\"bytes\":%zu,\"accept_ns\":%" PRId64
				     ",\"age_seconds\":%" PRId64,
				     prec_name(b[i].precision), b[i].lines, b[i].body_len, b[i].accept_ns, age);
			if (head) {
				rbuf_appendf(&out, ",\"attempts\":%" PRIu32 ",\"last_error\":", d->attempts);
				json_str(&out, d->last_error);
			} else {
				rbuf_append(&out, ",\"attempts\":null,\"last_error\":null", 34);
			}
			rbuf_appendc(&out, '}');
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
				     prec_name(b[i].precision), b[i].lines, bytes, a, att, err);
		}
		wal_batch_release(&b[i]);
	}
	if (c->json) {
		rbuf_appendc(&out, ']');
		corrupt_json(&out, sk);
		rbuf_append(&out, "}\n", 2);
	}
	flush_out(&out);
	rbuf_release(&out);
	free(ds);
	free(b);
	free(sk);
	return skipped;
}

static void batch_json(struct rbuf *out, const struct wal_batch *b)
{
	rbuf_appendf(out, "\"seq\":%" PRIu64 ",\"db\":", b->seq);
	json_str(out, b->db);
	rbuf_append(out, ",\"rp\":", 6);
	json_str(out, b->rp);
	rbuf_appendf(out, ",\"precision\":\"%s\",\"points\":%" PRIu32 ",\"bytes\":%zu,\"accept_ns\":%" PRId64,
		     prec_name(b->precision), b->lines, b->body_len, b->accept_ns);
}

static void dead_json(struct rbuf *out, const struct wal_dead *d)
{
	rbuf_appendc(out, '{');
	batch_json(out, &d->batch);
	rbuf_appendf(out, ",\"corrupt\":%s,\"status\":%d,\"attempts\":%" PRIu32 ",\"dead_ns\":%" PRId64 ",\"message\":",
		     d->corrupt ? "true" : "false", d->status, d->attempts, d->dead_ns);
	json_str(out, d->msg);
	if (d->batch.body) {
		rbuf_append(out, ",\"body\":", 8);
		rjson_append_string(out, d->batch.body, d->batch.body_len);
	}
	rbuf_appendc(out, '}');
}

/* The header of a dead letter in "dlq show": comment lines, so that the
 * output stays line protocol. */
static void dead_header(struct rbuf *out, const char *backend, const struct wal_dead *d)
{
	char t[32], msg[600];
	fmt_time(d->dead_ns, t, sizeof(t));
	cell(d->msg, 500, msg, sizeof(msg));
	if (d->corrupt) {
		rbuf_appendf(out,
			     "# dead letter %" PRIu64 " of backend '%s': CORRUPT, not a batch relayd can send (%zu bytes): %s\n"
			     "# its bytes follow as they are stored, escaped; 'relayctl dlq drop' removes it\n",
			     d->batch.seq, shown(backend), d->bytes, msg);
		return;
	}
	rbuf_appendf(out, "# dead letter %" PRIu64 " of backend '%s': db '%s', rp '%s', precision %s, %" PRIu32
		     " points, %zu bytes\n",
		     d->batch.seq, shown(backend), shown(d->batch.db), shown(d->batch.rp), prec_name(d->batch.precision),
		     d->batch.lines, d->bytes);
	rbuf_appendf(out, "# refused with status %d after %" PRIu32 " attempt%s at %s: %s\n", d->status, d->attempts,
		     d->attempts == 1 ? "" : "s", t, msg);
}

/*
 * A body as text: one line of output per line of line protocol, each
 * escaped (a newline inside a string field shows as \x0a, so that no
 * line seems to be there that is not).
 */
static void body_text(struct rbuf *out, const char *body, size_t len)
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

static int cmd_show(const struct ctl *c, const char *backend, const char *seqs)
{
	uint64_t seq;
	if (parse_seq(seqs, &seq)) {
		fprintf(stderr, "relayctl: '%s' is not a batch sequence number\n", seqs);
		return 2;
	}
	struct wal *w;
	int id;
	int rc = open_backend(c, backend, WAL_F_RDONLY, &w, &id);
	if (rc < 0)
		return 1;
	struct wal_batch b;
	struct wal_dead d;
	char corrupt_why[200] = "";
	int dead = 0;
	memset(&b, 0, sizeof(b));
	memset(&d, 0, sizeof(d));
	if (rc == 1) {
		rc = WAL_ENOTFOUND; /* no queue yet */
	} else {
		/* Pending first, then the dead letters. */
		rc = wal_get(w, id, seq, &b);
		if (rc == WAL_ENOTFOUND) {
			rc = wal_dead_get(w, id, seq, &d);
			dead = rc == 0;
		}
		uint64_t at;
		if (rc == WAL_ECORRUPT && (wal_find_corrupt(w, id, seq, &at, corrupt_why, sizeof(corrupt_why)) || at != seq))
			corrupt_why[0] = '\0';
	}
	wal_close(w);
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
		if (dead) {
			dead_json(&out, &d);
			/* a "state" member before the closing brace */
			out.len--;
			rbuf_append(&out, ",\"state\":\"dead\"}\n", 17);
		} else {
			rbuf_appendc(&out, '{');
			batch_json(&out, &b);
			rbuf_append(&out, ",\"state\":\"pending\",\"body\":", 26);
			rjson_append_string(&out, b.body, b.body_len);
			rbuf_append(&out, "}\n", 2);
		}
	} else {
		body_text(&out, bb->body, bb->body_len);
	}
	flush_out(&out);
	rbuf_release(&out);
	wal_batch_release(&b);
	wal_dead_release(&d);
	return 0;
}

static int cmd_dump(const struct ctl *c, const char *backend)
{
	struct wal *w;
	int id;
	int rc = open_backend(c, backend, WAL_F_RDONLY, &w, &id);
	if (rc < 0)
		return 1;
	if (rc == 1) {
		wal_close(w);
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
	for (;;) {
		uint64_t before = sk->n;
		rc = read_past_corrupt(w, id, last + 1, PAGE_BATCHES, PAGE_BYTES, 1, b, &n, sk);
		if (sk->n > before && sk->kept)
			last = sk->at[sk->kept - 1].seq > last ? sk->at[sk->kept - 1].seq : last;
		if (rc) {
			fprintf(stderr, "relayctl: cannot read queue of backend '%s': %s\n", backend, wal_strerror(rc));
			break;
		}
		for (size_t i = 0; i < n; i++) {
			rbuf_appendf(&out, "{\"seq\":%" PRIu64 ",\"db\":", b[i].seq);
			json_str(&out, b[i].db);
			rbuf_append(&out, ",\"rp\":", 6);
			json_str(&out, b[i].rp);
			/* Who wrote it, never the secret: the user's name and
			 * whether a password or token came with it. */
			rbuf_append(&out, ",\"org\":", 7);
			json_str(&out, b[i].org);
			rbuf_append(&out, ",\"user\":", 8);
			json_str(&out, b[i].user);
			rbuf_appendf(&out, ",\"auth\":\"%s\"", *b[i].token ? "token" : *b[i].user ? "password" : "none");
			rbuf_appendf(&out,
				     ",\"precision\":\"%s\",\"lines\":%" PRIu32 ",\"bytes\":%zu,\"accept_ns\":%" PRId64
				     ",\"body\":",
				     prec_name(b[i].precision), b[i].lines, b[i].body_len, b[i].accept_ns);
			rjson_append_string(&out, b[i].body, b[i].body_len);
			rbuf_append(&out, "}\n", 2);
			last = b[i].seq;
			wal_batch_release(&b[i]);
		}
		flush_out(&out);
		if (n == 0)
			break;
	}
	rbuf_release(&out);
	wal_close(w);
	int skipped = report_corrupt(sk, backend);
	free(sk);
	return rc || skipped ? 1 : 0;
}

/*---- pause, resume, retry, purge ----*/

static int cmd_pause(const struct ctl *c, const char *backend, int paused)
{
	struct wal *w;
	int id;
	int rc = open_backend(c, backend, WAL_F_SHARED, &w, &id);
	if (rc < 0)
		return 1;
	if (rc == 1) {
		no_queue_yet(backend);
		wal_close(w);
		return 1;
	}
	rc = wal_backend_set_paused(w, id, paused);
	wal_close(w);
	if (rc) {
		fprintf(stderr, "relayctl: cannot %s backend '%s': %s\n", paused ? "pause" : "resume", backend,
			wal_strerror(rc));
		return 1;
	}
	struct rbuf out = RBUF_INIT;
	if (c->json) {
		rbuf_append(&out, "{\"backend\":", 11);
		json_str(&out, backend);
		rbuf_appendf(&out, ",\"paused\":%s", paused ? "true" : "false");
		nudge(c, backend, &out);
		rbuf_append(&out, "}\n", 2);
	} else {
		if (paused)
			rbuf_appendf(&out, "backend '%s' paused: its queue keeps filling; 'relayctl resume %s' restarts delivery\n",
				     backend, backend);
		else
			rbuf_appendf(&out, "backend '%s' resumed\n", backend);
		nudge(c, backend, &out);
	}
	flush_out(&out);
	rbuf_release(&out);
	return 0;
}

static int cmd_retry(const struct ctl *c, const char *backend)
{
	if (known_backend(c, backend) < 0)
		return 1;
	char line[128], *reply;
	snprintf(line, sizeof(line), "retry %s", backend);
	int rc = ask_relayd(c, line, &reply);
	if (rc == 0 && c->json) {
		struct rbuf out = RBUF_INIT;
		rbuf_append(&out, "{\"backend\":", 11);
		json_str(&out, backend);
		rbuf_append(&out, ",\"retry\":true}\n", 15);
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

static int cmd_purge(const struct ctl *c, const char *backend)
{
	struct wal *w;
	int id;
	int rc = open_backend(c, backend, c->yes ? WAL_F_SHARED : WAL_F_RDONLY, &w, &id);
	if (rc < 0)
		return 1;
	if (rc == 1) {
		no_queue_yet(backend);
		wal_close(w);
		return 1;
	}
	if (!c->yes) {
		struct wal_backend_stat st;
		memset(&st, 0, sizeof(st));
		wal_backend_stat(w, backend, &st);
		wal_close(w);
		fprintf(stderr,
			"relayctl: not purging without --yes: it would drop all %" PRIu64 " pending batches (%" PRIu64
			" points) of backend '%s'\n",
			st.pending_batches, st.pending_points, backend);
		return 1;
	}
	struct wal_count n;
	rc = wal_purge(w, id, &n);
	wal_close(w);
	if (rc) {
		fprintf(stderr, "relayctl: cannot purge backend '%s': %s\n", backend, wal_strerror(rc));
		return 1;
	}
	struct rbuf out = RBUF_INIT;
	if (c->json) {
		rbuf_append(&out, "{\"backend\":", 11);
		json_str(&out, backend);
		rbuf_appendf(&out,
			     ",\"purged_batches\":%" PRIu64 ",\"purged_points\":%" PRIu64 ",\"purged_bytes\":%" PRIu64
			     ",\"purged_corrupt\":%" PRIu64,
			     n.batches, n.points, n.bytes, n.corrupt);
		nudge(c, backend, &out);
		rbuf_append(&out, "}\n", 2);
	} else {
		char b[32];
		human_bytes(n.bytes, b, sizeof(b));
		rbuf_appendf(&out, "purged %" PRIu64 " batches (%" PRIu64 " points, %s) of backend '%s'", n.batches,
			     n.points, b, backend);
		if (n.corrupt)
			rbuf_appendf(&out, ", and %" PRIu64 " corrupt record%s that did not decode", n.corrupt,
				     n.corrupt == 1 ? "" : "s");
		rbuf_appendc(&out, '\n');
		nudge(c, backend, &out);
	}
	flush_out(&out);
	rbuf_release(&out);
	return 0;
}

/*---- dead letters ----*/

static int dlq_list(const struct ctl *c, const char *backend)
{
	struct wal *w;
	int id;
	int rc = open_backend(c, backend, WAL_F_RDONLY, &w, &id);
	if (rc < 0)
		return 1;
	struct rbuf out = RBUF_INIT;
	struct wal_dead d[256];
	size_t n = 0, total = 0;
	uint64_t from = 0;
	if (c->json) {
		rbuf_append(&out, "{\"backend\":", 11);
		json_str(&out, backend);
		rbuf_append(&out, ",\"dead\":[", 9);
	}
	while (rc == 0) {
		rc = wal_dead_list(w, id, from, RELAY_ARRAY_SIZE(d), 0, d, &n);
		if (rc) {
			fprintf(stderr, "relayctl: cannot read dead letters of backend '%s': %s\n", backend, wal_strerror(rc));
			break;
		}
		if (n == 0)
			break;
		/* Printed after the read transaction ended. */
		for (size_t i = 0; i < n; i++, total++) {
			if (c->json) {
				if (total)
					rbuf_appendc(&out, ',');
				dead_json(&out, &d[i]);
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
	if (c->json)
		rbuf_append(&out, "]}\n", 3);
	else if (rc == 0 && total == 0)
		rbuf_appendf(&out, "backend '%s': no dead letters\n", backend);
	if (rc == 0)
		flush_out(&out);
	rbuf_release(&out);
	wal_close(w);
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

static int dlq_show(const struct ctl *c, const char *backend, char **args, int nargs)
{
	uint64_t *seqs;
	if (nargs == 0) {
		fprintf(stderr, "relayctl: dlq show needs at least one SEQ (see 'dlq list')\n");
		return 2;
	}
	if (parse_seqs(args, nargs, &seqs))
		return 2;
	struct wal *w;
	int id, rc = open_backend(c, backend, WAL_F_RDONLY, &w, &id);
	if (rc < 0) {
		free(seqs);
		return 1;
	}
	int no_queue = rc == 1;
	struct rbuf out = RBUF_INIT;
	if (c->json)
		rbuf_append(&out, "[", 1);
	for (int i = 0; i < nargs; i++) {
		struct wal_dead d;
		rc = no_queue ? WAL_ENOTFOUND : wal_dead_get(w, id, seqs[i], &d);
		if (rc == WAL_ENOTFOUND) {
			fprintf(stderr, "relayctl: backend '%s' has no dead letter %" PRIu64 "\n", backend, seqs[i]);
			break;
		} else if (rc) {
			fprintf(stderr, "relayctl: cannot read dead letter %" PRIu64 " of backend '%s': %s\n", seqs[i],
				backend, wal_strerror(rc));
			break;
		}
		if (c->json) {
			if (i)
				rbuf_appendc(&out, ',');
			dead_json(&out, &d);
		} else {
			dead_header(&out, backend, &d);
			body_text(&out, d.batch.body, d.batch.body_len);
			flush_out(&out);
		}
		wal_dead_release(&d);
	}
	wal_close(w);
	if (c->json && rc == 0) {
		rbuf_append(&out, "]\n", 2);
		flush_out(&out);
	}
	rbuf_release(&out);
	free(seqs);
	return rc ? 1 : 0;
}

/* requeue (1) or drop (0) the named dead letters, or all of them. */
static int dlq_move(const struct ctl *c, const char *backend, char **args, int nargs, int requeue)
{
	const char *verb = requeue ? "requeue" : "drop";
	uint64_t *seqs = NULL;
	if ((nargs == 0) == !c->all) {
		fprintf(stderr, "relayctl: dlq %s needs SEQ... or --all (not both)\n", verb);
		return 2;
	}
	if (!requeue && c->all && !c->yes) {
		fprintf(stderr, "relayctl: not dropping every dead letter of backend '%s' without --yes\n", backend);
		return 1;
	}
	if (nargs && parse_seqs(args, nargs, &seqs))
		return 2;
	struct wal *w;
	int id, rc = open_backend(c, backend, WAL_F_SHARED, &w, &id);
	if (rc < 0) {
		free(seqs);
		return 1;
	}
	struct wal_count total = { 0, 0, 0, 0 }, n;
	uint64_t missing = 0;
	if (rc == 1) {
		rc = nargs ? WAL_ENOTFOUND : 0; /* no queue, so no dead letters */
		if (nargs)
			missing = seqs[0];
	} else if (nargs) {
		/* The named ones in one commit: all or none. */
		rc = requeue ? wal_dead_requeue(w, id, seqs, (size_t)nargs, now_realtime_ns(), &total, &missing)
			     : wal_dead_drop(w, id, seqs, (size_t)nargs, &total, &missing);
	} else {
		/* --all: in commits of a bounded size, oldest first. */
		do {
			rc = requeue ? wal_dead_requeue(w, id, NULL, DLQ_ALL_STEP, now_realtime_ns(), &n, NULL)
				     : wal_dead_drop(w, id, NULL, DLQ_ALL_STEP, &n, NULL);
			if (rc == 0) {
				total.batches += n.batches;
				total.points += n.points;
				total.bytes += n.bytes;
				total.corrupt += n.corrupt;
			}
		} while (rc == 0 && (n.batches || n.corrupt));
	}
	wal_close(w);
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
		rbuf_append(&out, "{\"backend\":", 11);
		json_str(&out, backend);
		rbuf_appendf(&out, ",\"%s\":%" PRIu64 ",\"points\":%" PRIu64 ",\"bytes\":%" PRIu64 ",\"corrupt\":%" PRIu64,
			     requeue ? "requeued" : "dropped", total.batches, total.points, total.bytes, total.corrupt);
		if (requeue && total.batches)
			nudge(c, backend, &out);
		rbuf_append(&out, "}\n", 2);
	} else {
		rbuf_appendf(&out, "%s %" PRIu64 " dead letter%s (%" PRIu64 " points) of backend '%s'%s",
			     requeue ? "requeued" : "dropped", total.batches, total.batches == 1 ? "" : "s", total.points,
			     backend, requeue && total.batches ? " at the end of its queue" : "");
		if (total.corrupt)
			rbuf_appendf(&out, ", and %" PRIu64 " corrupt record%s", total.corrupt, total.corrupt == 1 ? "" : "s");
		rbuf_appendc(&out, '\n');
		if (requeue && total.batches)
			nudge(c, backend, &out);
	}
	flush_out(&out);
	rbuf_release(&out);
	return 0;
}

static int cmd_dlq(const struct ctl *c, char **args, int nargs)
{
	if (nargs < 2) {
		fprintf(stderr, "relayctl: usage: dlq list|show|requeue|drop BACKEND [SEQ...|--all]\n");
		return 2;
	}
	const char *sub = args[0], *backend = args[1];
	if (strcmp(sub, "list") == 0 && nargs == 2)
		return dlq_list(c, backend);
	if (strcmp(sub, "show") == 0)
		return dlq_show(c, backend, args + 2, nargs - 2);
	if (strcmp(sub, "requeue") == 0)
		return dlq_move(c, backend, args + 2, nargs - 2, 1);
	if (strcmp(sub, "drop") == 0)
		return dlq_move(c, backend, args + 2, nargs - 2, 0);
	fprintf(stderr, "relayctl: unknown dlq command or wrong arguments: '%s'\n", sub);
	return 2;
}

/*---- export ----*/

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

static int cmd_export(const struct ctl *c, const char *backend, const char *base)
{
	struct wal *w;
	int id;
	const char *slash = strrchr(base, '/');
	const char *fname = slash ? slash + 1 : base;
	if (!*fname || strlen(fname) + EXPORT_SUFFIX_MAX > 255) {
		fprintf(stderr,
			"relayctl: '%s': the file name is %s (at most %d bytes: each export file adds the database, "
			"retention policy and precision to it)\n",
			base, *fname ? "too long" : "empty", 255 - EXPORT_SUFFIX_MAX);
		return 1;
	}
	int rc = open_backend(c, backend, WAL_F_RDONLY, &w, &id);
	if (rc < 0)
		return 1;
	struct export_file *files = NULL;
	struct export_skip *skipped = NULL;
	struct skipped_corrupt *sk = NULL;
	size_t nfiles = 0, nskipped = 0;
	int err = 0;
	if (rc == 1) {
		rc = 0; /* no queue yet: nothing to export */
		goto done;
	}
	struct wal_backend_stat st;
	memset(&st, 0, sizeof(st));
	wal_backend_stat(w, backend, &st);
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
			rc = wal_dead_list(w, id, last + 1, PAGE_BATCHES, PAGE_BYTES, dp, &n);
		else {
			uint64_t before = sk->kept;
			rc = read_past_corrupt(w, id, last + 1, PAGE_BATCHES, PAGE_BYTES, 1, bp, &n, sk);
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
			if (why) {
				/* Left out, never written changed: the others still go out,
				 * and the exit status tells a script not to purge. */
				skipped = xrealloc(skipped, (nskipped + 1) * sizeof(*skipped));
				skipped[nskipped++] = (struct export_skip){ b->seq, why, NULL };
			}
			struct export_file *e = err || why ? NULL : export_file_for(&files, &nfiles, base, b, &err);
			if (e) {
				fwrite(b->body, 1, b->body_len, e->f);
				e->batches++;
				e->points += b->lines;
			}
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
	if (rc == 0 && !err)
		progress_done(&prog);
	else if (prog.on)
		fputc('\n', stderr);
done:
	wal_close(w);
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
		rbuf_append(&out, "{\"backend\":", 11);
		json_str(&out, backend);
		rbuf_appendf(&out, ",\"source\":\"%s\",\"skipped_batches\":%zu,\"skipped\":[", c->dlq ? "dead" : "pending",
			     nskipped);
		for (size_t i = 0; i < nskipped; i++) {
			rbuf_appendf(&out, "%s{\"seq\":%" PRIu64 ",\"reason\":", i ? "," : "", skipped[i].seq);
			json_str(&out, skipped[i].why);
			rbuf_appendc(&out, '}');
		}
		rbuf_append(&out, "],\"files\":[", 11);
		for (size_t i = 0; i < nfiles; i++) {
			rbuf_append(&out, i ? ",{\"path\":" : "{\"path\":", i ? 9 : 8);
			json_str(&out, files[i].path);
			rbuf_append(&out, ",\"db\":", 6);
			json_str(&out, files[i].db);
			rbuf_append(&out, ",\"rp\":", 6);
			json_str(&out, files[i].rp);
			rbuf_appendf(&out, ",\"precision\":\"%s\",\"batches\":%" PRIu64 ",\"points\":%" PRIu64 "}",
				     prec_name(files[i].precision), files[i].batches, files[i].points);
		}
		rbuf_append(&out, "]}\n", 3);
	} else if (nfiles == 0 && nskipped == 0) {
		rbuf_appendf(&out, "backend '%s': nothing to export (no %s)\n", backend,
			     c->dlq ? "dead letters" : "pending batches");
	} else {
		for (size_t i = 0; i < nfiles; i++)
			rbuf_appendf(&out,
				     "wrote %s: %" PRIu64 " points (db '%s', rp '%s', precision %s)\n"
				     "  load with: influx -import -path='%s' -precision=%s\n",
				     files[i].path, files[i].points, shown(files[i].db),
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

/*---- import ----*/

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
			"relayctl: %" PRIu64 " points in %" PRIu64 " batches (%" PRIu64 "..%" PRIu64
			") were queued, the rest of the file was not\n",
			points, nbatches, first_seq, last_seq);
	else
		fprintf(stderr, "relayctl: nothing was queued\n");
}

static int cmd_import(const struct ctl *c, const char *backend, const char *path)
{
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
	struct wal *w = NULL;
	int id, rc = 1;
	int opened = open_backend(c, backend, WAL_F_SHARED, &w, &id);
	if (opened < 0)
		return 1;
	if (opened == 1) {
		no_queue_yet(backend);
		wal_close(w);
		return 1;
	}
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat fst;
	if (fd < 0 || fstat(fd, &fst) < 0) {
		fprintf(stderr, "relayctl: cannot open '%s': %s\n", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		wal_close(w);
		return 1;
	}
	if (!S_ISREG(fst.st_mode)) {
		fprintf(stderr, "relayctl: '%s' is not a regular file\n", path);
		close(fd);
		wal_close(w);
		return 1;
	}
	size_t len = (size_t)fst.st_size;
	const char *data = "";
	if (len) {
		data = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
		if (data == MAP_FAILED) {
			fprintf(stderr, "relayctl: cannot read '%s': %s\n", path, strerror(errno));
			close(fd);
			wal_close(w);
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
	wal_backend_set_limits(w, id, c->cfg.backends[bi].max_bytes, 0);

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
			b->route = 1ULL << id;
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
		int arc = wal_append(w, group, ng, now_realtime_ns());
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
			rbuf_append(&out, "{\"backend\":", 11);
			json_str(&out, backend);
			rbuf_appendf(&out, ",\"points\":%" PRIu64 ",\"batches\":%" PRIu64 ",\"first_seq\":%" PRIu64
				     ",\"last_seq\":%" PRIu64,
				     queued_points, nbatches, first_seq, last_seq);
			nudge(c, backend, &out);
			rbuf_append(&out, "}\n", 2);
		} else {
			rbuf_appendf(&out,
				     "queued %" PRIu64 " points of '%s' in %" PRIu64 " batches (%" PRIu64 "..%" PRIu64
				     ") for backend '%s' (db '%s', rp '%s', precision %s)\n",
				     queued_points, path, nbatches, first_seq, last_seq, backend, c->db,
				     c->rp && *c->rp ? c->rp : "(default)", lp_precision_name(prec));
			nudge(c, backend, &out);
		}
		flush_out(&out);
		rbuf_release(&out);
	} else if (nbatches) {
		struct rbuf out = RBUF_INIT;
		nudge(c, backend, &out); /* what was queued goes out */
		rbuf_release(&out);
	}
out:
	free(group);
	rbuf_release(&valid);
	if (w)
		wal_close(w);
	if (len)
		munmap((void *)data, len);
	return rc;
}

/*---- verify ----*/

struct verify_out {
	const struct ctl *c;
	struct rbuf *out;
	int n;
};

static void verify_problem(void *arg, const char *text)
{
	struct verify_out *v = arg;
	if (v->c->json) {
		if (v->n)
			rbuf_appendc(v->out, ',');
		json_str(v->out, text);
	} else {
		rbuf_append(v->out, "damaged: ", 9);
		term_append(v->out, text, strlen(text)); /* it may name a stored backend */
		rbuf_appendc(v->out, '\n');
	}
	v->n++;
}

/*---- salvage ----*/

static int cmd_salvage(const struct ctl *c, const char *dest)
{
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
		rbuf_append(&out, "{\"source\":", 10);
		json_str(&out, dir);
		rbuf_append(&out, ",\"dest\":", 8);
		json_str(&out, dest);
		rbuf_appendf(&out,
			     ",\"pages\":%" PRIu64 ",\"backends\":%" PRIu64 ",\"backends_assumed\":%" PRIu64
			     ",\"batches_found\":%" PRIu64
			     ",\"batches\":%" PRIu64 ",\"points\":%" PRIu64 ",\"delivered\":%" PRIu64 ",\"orphaned\":%" PRIu64
			     ",\"corrupt\":%" PRIu64 ",\"dead_letters_not_copied\":%" PRIu64 "}\n",
			     st.pages, st.backends, st.backends_assumed, st.batches_found, st.batches_copied, st.points_copied,
			     st.batches_delivered, st.batches_orphaned, st.records_corrupt, st.dead_found);
	} else {
		rbuf_appendf(&out,
			     "salvaged %" PRIu64 " batches (%" PRIu64 " points) for %" PRIu64 " backends from '%s/data.mdb' "
			     "into '%s/data.mdb'\n",
			     st.batches_copied, st.points_copied, st.backends + st.backends_assumed, shown(dir), shown(dest));
		if (st.backends_assumed)
			rbuf_appendf(&out,
				     "%" PRIu64 " backend record%s not found: taken from the configuration's order, with every "
				     "batch routed to %s copied (some may have been delivered already)\n",
				     st.backends_assumed, st.backends_assumed == 1 ? " was" : "s were",
				     st.backends_assumed == 1 ? "it" : "them");
		rbuf_appendf(&out,
			     "left out: %" PRIu64 " delivered already, %" PRIu64 " of backends whose record was not found, "
			     "%" PRIu64 " batch records that did not decode; %" PRIu64 " dead letters not copied\n",
			     st.batches_delivered, st.batches_orphaned, st.records_corrupt, st.dead_found);
		rbuf_appendf(&out,
			     "to use it: stop relayd, mv '%s/data.mdb' '%s/data.mdb.damaged', mv '%s/data.mdb' '%s/data.mdb', "
			     "start relayd\n",
			     shown(dir), shown(dir), shown(dest), shown(dir));
	}
	flush_out(&out);
	rbuf_release(&out);
	return 0;
}

static int cmd_verify(const struct ctl *c)
{
	struct wal *w;
	if (open_queue(c, WAL_F_RDONLY, &w))
		return 1;
	struct rbuf out = RBUF_INIT;
	struct verify_out v = { c, &out, 0 };
	struct wal_verify_stat st;
	if (c->json)
		rbuf_append(&out, "{\"problems\":[", 13);
	int n = wal_verify(w, verify_problem, &v, &st);
	wal_close(w);
	if (n < 0) {
		fprintf(stderr, "relayctl: cannot verify the queue in '%s': %s\n", c->cfg.data_dir, wal_strerror(n));
		rbuf_release(&out);
		return 1;
	}
	if (c->json)
		rbuf_appendf(&out, "],\"ok\":%s,\"problem_count\":%d,\"batches\":%" PRIu64 ",\"backends\":%" PRIu64
			     ",\"dead\":%" PRIu64 "}\n",
			     n ? "false" : "true", n, st.batches, st.backends, st.dead);
	else if (n)
		rbuf_appendf(&out, "%d problem%s in the queue in '%s'\n", n, n == 1 ? "" : "s", c->cfg.data_dir);
	else
		rbuf_appendf(&out, "ok: %" PRIu64 " batches, %" PRIu64 " backends, %" PRIu64 " dead letters checked\n",
			     st.batches, st.backends, st.dead);
	flush_out(&out);
	rbuf_release(&out);
	return n ? 1 : 0;
}

/*---- main ----*/

int main(int argc, char **argv)
{
	enum { O_JSON = 256, O_YES, O_ALL, O_DLQ, O_DB, O_RP, O_PREC, O_WATCH };
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "json", no_argument, NULL, O_JSON },
		{ "count", required_argument, NULL, 'n' },
		{ "yes", no_argument, NULL, O_YES },
		{ "all", no_argument, NULL, O_ALL },
		{ "dlq", no_argument, NULL, O_DLQ },
		{ "db", required_argument, NULL, O_DB },
		{ "rp", required_argument, NULL, O_RP },
		{ "precision", required_argument, NULL, O_PREC },
		{ "watch", required_argument, NULL, O_WATCH },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct ctl c;
	const char *config_path = NULL;
	char err[1024], *end;
	int ch;

	memset(&c, 0, sizeof(c));
	c.count = 10;
	c.precision = "ns";
	/* Options may come anywhere: relayctl -c F status --json. */
	while ((ch = getopt_long(argc, argv, "c:n:jh", opts, NULL)) != -1) {
		switch (ch) {
		case 'c': config_path = optarg; break;
		case 'j':
		case O_JSON: c.json = 1; break;
		case 'n':
			c.count = strtol(optarg, &end, 10);
			if (*end || c.count <= 0) {
				fprintf(stderr, "relayctl: -n wants a positive number, not '%s'\n", optarg);
				return 2;
			}
			break;
		case O_YES: c.yes = 1; break;
		case O_ALL: c.all = 1; break;
		case O_DLQ: c.dlq = 1; break;
		case O_DB: c.db = optarg; break;
		case O_RP: c.rp = optarg; break;
		case O_PREC: c.precision = optarg; break;
		case O_WATCH:
			c.watch = strtod(optarg, &end);
			if (*end || !(c.watch > 0) || c.watch > 86400) {
				fprintf(stderr, "relayctl: --watch wants a number of seconds, not '%s'\n", optarg);
				return 2;
			}
			break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (!config_path || optind >= argc) {
		usage(stderr);
		return 2;
	}
	const char *cmd = argv[optind];
	char **args = argv + optind + 1;
	int nargs = argc - optind - 1;
	if (config_load(config_path, &c.cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "relayctl: %s\n", err);
		return 1;
	}
	c.sock_ok = control_socket_path(c.cfg.data_dir, c.sock, sizeof(c.sock)) == 0;

	int rc;
	if (strcmp(cmd, "status") == 0 && nargs == 0)
		rc = cmd_status(&c);
	else if (strcmp(cmd, "peek") == 0 && nargs == 1)
		rc = cmd_peek(&c, args[0]);
	else if (strcmp(cmd, "show") == 0 && nargs == 2)
		rc = cmd_show(&c, args[0], args[1]);
	else if (strcmp(cmd, "dump") == 0 && nargs == 1)
		rc = cmd_dump(&c, args[0]);
	else if (strcmp(cmd, "pause") == 0 && nargs == 1)
		rc = cmd_pause(&c, args[0], 1);
	else if (strcmp(cmd, "resume") == 0 && nargs == 1)
		rc = cmd_pause(&c, args[0], 0);
	else if (strcmp(cmd, "retry") == 0 && nargs == 1)
		rc = cmd_retry(&c, args[0]);
	else if (strcmp(cmd, "purge") == 0 && nargs == 1)
		rc = cmd_purge(&c, args[0]);
	else if (strcmp(cmd, "dlq") == 0)
		rc = cmd_dlq(&c, args, nargs);
	else if (strcmp(cmd, "export") == 0 && nargs == 2)
		rc = cmd_export(&c, args[0], args[1]);
	else if (strcmp(cmd, "import") == 0 && nargs == 2)
		rc = cmd_import(&c, args[0], args[1]);
	else if (strcmp(cmd, "verify") == 0 && nargs == 0)
		rc = cmd_verify(&c);
	else if (strcmp(cmd, "salvage") == 0 && nargs == 1)
		rc = cmd_salvage(&c, args[0]);
	else {
		fprintf(stderr, "relayctl: unknown command or wrong arguments: '%s'\n", cmd);
		usage(stderr);
		rc = 2;
	}
	config_release(&c.cfg);
	return rc;
}
