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
 *
 * This header is private to relayctl: the state every command shares
 * (struct ctl), the command table's entry (main.c holds the table), the
 * helpers of common.c and the commands' handlers, each in its family's
 * file (status.c, views.c, repair.c, dlq.c, export.c, import.c, verify.c,
 * drain.c, backup.c).
 */
#ifndef RELAYCTL_H
#define RELAYCTL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "relay/base/config.h"
#include "relay/base/json.h"
#include "relay/base/util.h"
#include "relay/control/control.h"
#include "wal/wal.h"

#define CONTROL_TIMEOUT_MS 2000
#define PAGE_BATCHES 64              /* batches copied out per read transaction */
#define PAGE_BYTES (16u << 20)       /* ... and at most about this many body bytes */

struct ctl;

/* What a command is, for main's dispatch and for the usage text. */
struct cmd {
	const char *name;  /* "status", "dlq" */
	const char *sub;   /* "list" for "dlq list"; NULL for a command of one word */
	int (*run)(const struct ctl *c); /* the arguments (after name and sub) in c->args */
	int min_args, max_args; /* how many arguments run takes; max -1: any number */
	unsigned queue;    /* how run opens the queue: WAL_F_RDONLY, WAL_F_SHARED, or 0 (not through wal_open) */
	unsigned flags;    /* CMD_* */
	const char *args;  /* the arguments as the usage text shows them */
	const char *help;  /* what it does ('\n' continues it); NULL: told with the next entry, on its line */
};

#define CMD_CHANGES 0x1 /* listed under "changes" (else under "views") */
#define CMD_DAEMON 0x2  /* asks relayd on its control socket (status, notify, retry or drain) */

struct ctl {
	struct relay_config cfg;
	const struct cmd *cmd; /* the command running */
	char **args;           /* its arguments (NULL-terminated): as many as its entry allows */
	int nargs;
	int json;
	long count;         /* -n */
	int yes, all, dlq;
	const char *db, *rp, *precision;
	double watch;       /* seconds; 0 = once */
	int wait, stop;     /* drain --wait, --stop */
	uint64_t timeout_ms; /* drain --timeout; 0 = none */
	char sock[108];
	int sock_ok;        /* sock is relayd's control socket (CMD_DAEMON commands only) */
};

/*---- the handlers: 0 done, 1 failed (told on stderr), 2 wrong use ----*/

int cmd_status(const struct ctl *c);       /* status.c */
int cmd_peek(const struct ctl *c);         /* views.c */
int cmd_show(const struct ctl *c);
int cmd_dump(const struct ctl *c);
int cmd_pause_resume(const struct ctl *c); /* repair.c */
int cmd_retry(const struct ctl *c);
int cmd_purge(const struct ctl *c);
int cmd_dlq_list(const struct ctl *c);     /* dlq.c */
int cmd_dlq_show(const struct ctl *c);
int cmd_dlq_move(const struct ctl *c);     /* requeue and drop */
int cmd_export(const struct ctl *c);       /* export.c */
int cmd_import(const struct ctl *c);       /* import.c */
int cmd_verify(const struct ctl *c);       /* verify.c */
int cmd_salvage(const struct ctl *c);
int cmd_drain(const struct ctl *c);        /* drain.c: drain and undrain */
int cmd_backup(const struct ctl *c);       /* backup.c */

/*---- common.c: formatting ----*/

/* A precision code's name; "invalid" for a code no precision has (a
 * damaged record). */
const char *prec_name(unsigned p);
/* "1.5 MiB", "3m05s", "2026-01-02T03:04:05Z" (or "-" for 0) into out[n]. */
void human_bytes(uint64_t b, char *out, size_t n);
void human_age(int64_t s, char *out, size_t n);
void fmt_time(int64_t ns, char *out, size_t n);
/* Whole seconds from ns to now: 0 for 0 or a time to come. */
int64_t age_seconds(int64_t ns, int64_t now);

/* Text output of stored or relayd's bytes (see common.c): s[0..n)
 * escaped; s escaped and cut to a table cell of at most max bytes; s
 * escaped for a message (valid until the fourth next call). */
void term_append(struct rbuf *b, const char *s, size_t n);
void cell(const char *s, size_t max, char *out, size_t n);
const char *shown(const char *s);

/* b to stdout, then emptied. */
void flush_out(struct rbuf *b);
/* A batch sequence number (1 or more): 0, or -1 when s is not one. */
int parse_seq(const char *s, uint64_t *out);

/* A body as text, one escaped line of output per line of line protocol. */
void body_text(struct rbuf *out, const char *body, size_t len);
/* A batch's body as body_text does, or a statement as one line
 * "statement: TEXT" (escaped). */
void batch_text(struct rbuf *out, const struct wal_batch *b);
/* "lines" or "statement" (wal_batch.kind), as the JSON views name it. */
const char *kind_name(unsigned kind);
/* The comment lines before a dead letter's body in "dlq show". */
void dead_header(struct rbuf *out, const char *backend, const struct wal_dead *d);

/*---- common.c: JSON, built as jansson values (relay/base/json.h) ----*/

/* Each returns a new value (the caller owns one reference). */
json_t *u64_json(uint64_t v); /* an integer (a real past INT64_MAX) */
/* seq, db, rp, precision, points, bytes, accept_ns */
json_t *batch_json(const struct wal_batch *b);
/* batch_json's, then corrupt, status, attempts, dead_ns, message, body */
json_t *dead_json(const struct wal_dead *d);
/* {"backend":backend}: a command's answer about one backend. */
json_t *backend_doc(const char *backend);
/* Append doc and a newline to out (compact, ASCII-only); takes doc. */
void put_json_line(struct rbuf *out, json_t *doc);

/*---- common.c: progress on stderr, on a terminal only ----*/

struct progress {
	int on;
	const char *what;
	uint64_t total;
	uint64_t last_ms;
};

void progress_init(struct progress *p, const char *what, uint64_t total);
void progress_show(struct progress *p, uint64_t done, int force);
void progress_done(struct progress *p);

/*---- common.c: the queue ----*/

/* Open the queue (flags: WAL_F_RDONLY or WAL_F_SHARED): 0, or a wal
 * error after telling the operator what it means and what to do. */
int open_queue(const struct ctl *c, unsigned flags, struct wal **w);
/* The index of backend name in the configuration, or -1 after saying it
 * is unknown. */
int known_backend(const struct ctl *c, const char *name);
/* 1 when name is a configured backend, else 0 (silent). */
int configured(const struct ctl *c, const char *name);
/* One backend's queue, as a command opened it. */
struct backend_queue {
	const char *name;
	struct wal *w;
	int id;    /* unset when fresh */
	int fresh; /* the backend has no queue yet: relayd never ran with it */
};

/* Open the queue (flags: WAL_F_RDONLY or WAL_F_SHARED) and find backend
 * name in it: 0 (q->fresh when it has no queue yet), or -1 after printing
 * why (nothing left open). */
int open_backend(const struct ctl *c, const char *name, unsigned flags, struct backend_queue *q);
/* open_backend for a command that changes the queue: a backend without
 * one yet is an error too (told). */
int open_backend_to_change(const struct ctl *c, const char *name, unsigned flags, struct backend_queue *q);

/* Records a view skipped because they do not decode. */
struct skipped_corrupt {
	uint64_t n; /* all of them */
	size_t kept;
	struct {
		uint64_t seq;
		char why[200];
	} at[64];
};

/* wal_read (with_body) or wal_peek past every corrupt record, each noted
 * in sk: 0 or a wal error. */
int read_past_corrupt(struct wal *w, int id, uint64_t from, size_t max, size_t max_bytes, int with_body,
                      struct wal_batch *out, size_t *count, struct skipped_corrupt *sk);
/* The skipped records on stderr; 1 when there were any. */
int report_corrupt(const struct skipped_corrupt *sk, const char *backend);
/* The skipped records as a JSON array of {"seq","why"}. */
json_t *corrupt_json(const struct skipped_corrupt *sk);

/*---- common.c: the daemon ----*/

/* One request to relayd: 0 ok, 1 not running, -1 it answered an error
 * or not at all (*reply: what to tell; caller frees). */
int ask_relayd(const struct ctl *c, const char *line, char **reply);
/* The pid of a live relayd owning data_dir, else 0. */
long relayd_pid(const struct ctl *c);
/* Tell a running relayd that backend's queue changed, and say what
 * became of it: a "relayd" member of doc when given, else a line of out
 * when given. */
void nudge(const struct ctl *c, const char *backend, struct rbuf *out, json_t *doc);
/* What relayd says of its backends: 1 with *st filled, 0 not running,
 * -1 running but no usable answer (*why says why). */
int relayd_status(const struct ctl *c, struct control_status *st, char *why, size_t whylen);

#endif
