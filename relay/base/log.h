/*
 * log: one event per line: "2026-11-26T17:34:14.123Z level message" on
 * stderr or in a file, or the message alone through syslog(3) at the
 * matching priority, or (output "journal") on stderr as "<N>message", N
 * the syslog priority, for systemd's journal, which stamps the time itself
 * and reads the priority from the prefix (journalctl -p works). The
 * journal is written through the stream systemd already connected rather
 * than libsystemd's sd_journal_*: relay/base needs no libsystemd, lines
 * keep their order with anything else on stderr, and it is testable
 * without a journal. With log_format json, stderr, a file and the tee get
 * instead one JSON object per line (after the "<N>" for the journal), its
 * keys in this order:
 *   {"time":"2026-11-26T17:34:14.123Z","level":"warn","pid":1234,"msg":"..."}
 * time is UTC with milliseconds, level one of the names below, msg the
 * message (with a rate limit's " (N more suppressed)"), escaped by the JSON
 * leaf (relay/base/json.h): ASCII-only, every control escaped, bytes that
 * are not UTF-8 replaced by U+FFFD. syslog keeps the text message in
 * either format: syslog and journald record the time, level and pid
 * themselves. Levels as redis's: debug, info, notice, warn, error.
 * Messages follow git's style: lowercase, what failed first, names quoted
 * (the backend or the client concerned). Secrets never go in.
 */
#ifndef RELAY_LOG_H
#define RELAY_LOG_H

#include <stddef.h>
#include <stdint.h>

#include "relay/base/config.h" /* enum relay_log_format */

enum relay_log_level {
	RELAY_LOG_DEBUG = 0,
	RELAY_LOG_INFO,
	RELAY_LOG_NOTICE,
	RELAY_LOG_WARN,
	RELAY_LOG_ERROR,
};

/* Parse "debug".."error"; returns 0 or -1. */
int relay_log_level_parse(const char *s, enum relay_log_level *out);
/* Any thread may log while another changes the level (a reload). */
void relay_log_set_level(enum relay_log_level lvl);
int relay_log_enabled(enum relay_log_level lvl);
/* Text (the default) or JSON lines from the next line on. Like the level,
 * any thread may log while another changes it (a reload): each line is
 * written whole in one format or the other. */
void relay_log_set_format(enum relay_log_format f);
void relay_log(enum relay_log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * Where lines go: "stderr" (the default before any call), "journal"
 * (stderr with "<N>" prefixes; see above), "syslog" (with ident "relayd",
 * facility daemon), or the path of a file opened for appending (created
 * 0640). Returns 0, or -1 with the reason in err; the previous output
 * then stays in force. Call from the loop thread before other threads
 * log, or while they are quiet (a reload).
 */
int relay_log_open(const char *output, char *err, size_t errlen);

/*
 * Whether output (as relay_log_open takes it) is available on this host:
 * stderr always; syslog when /dev/log exists and is a socket; journal when
 * JOURNAL_STREAM is "DEV:INODE" of stderr itself; a file when it exists
 * and may be written, or its directory lets it be created (checked with
 * access(2), nothing is created). Returns 1, or 0 with the reason in why
 * ("/dev/log does not exist (no syslog daemon)"). Reads no state of the
 * log; any thread.
 */
int relay_log_output_check(const char *output, char *why, size_t whylen);

/*
 * Open the first available output of prefs, a list of outputs in order of
 * preference separated by '\n' (as relay_config.log_output holds them):
 * stderr, syslog and journal as relay_log_output_check says, a file when
 * it opens. chosen gets the output opened; why gets, for each output
 * passed over, "OUTPUT: reason" joined by "; " ("" when the first was
 * taken). Returns 0 when an output of the list was opened; 1 when none
 * was available and none was a file: lines go to stderr, which always is;
 * -1 when none was available and one was a file (its error is worth
 * stopping for), with the reasons in err and the previous output in
 * force. The buffers are the caller's. Same threads as relay_log_open.
 */
int relay_log_open_first(const char *prefs, char *chosen, size_t chosenlen, char *why, size_t whylen,
                         char *err, size_t errlen);
/*
 * relay_log_open_first for a reload, with current the output in force (as
 * chosen names it; NULL: as relay_log_open_first). An output of prefs
 * equal to current is taken as it is, not reopened: a reload that changes
 * other settings must not fail, or move the log, because the file's
 * directory cannot be written at that moment. When no output before it is
 * available, and none at all, current stays in force: returns -1 with the
 * reasons in err and current in chosen (the caller warns, and the reload
 * goes on). Otherwise as relay_log_open_first (0; chosen gets the output
 * now in force). Same threads as relay_log_open.
 */
int relay_log_resolve(const char *prefs, const char *current, char *chosen, size_t chosenlen, char *why,
                      size_t whylen, char *err, size_t errlen);
/*
 * Reopen the log file by its name (SIGUSR1 after logrotate moved it).
 * Other outputs: nothing to do. Returns 0, or -1 with the reason in err;
 * on failure lines keep going to the old file.
 */
int relay_log_reopen(char *err, size_t errlen);
/* Close a file or syslog and go back to stderr. */
void relay_log_close(void);
/*
 * Also write every line of at least level min to fd, as it would appear in
 * a file, whatever the output is; fd -1 stops. relayd --daemon points this
 * at the pipe its waiting parent reads until the daemon is ready, so that
 * a failed start is reported on the terminal (or to the init script) even
 * when the log goes to syslog or a file. fd stays the caller's to close.
 */
void relay_log_tee(int fd, enum relay_log_level min);

/*
 * A rate limit for one kind of repeating message (redis logs one AOF error
 * per 30 s): at most one line per interval, and that line says how many
 * were suppressed since the previous one. Zero-initialise, set interval_ns.
 * Pure: it neither logs nor reads a clock, so it can be tested alone.
 */
struct relay_ratelimit {
	uint64_t interval_ns;
	uint64_t last_ns;    /* when the last line was let through; 0 = never */
	uint64_t suppressed; /* events refused since then */
};

/* At monotonic time now_ns, one more event happened. Returns 1 when it may
 * be logged now, with *suppressed set to the events refused since the last
 * line logged (and the count reset); returns 0 (and counts it) otherwise. */
int relay_ratelimit_allow(struct relay_ratelimit *r, uint64_t now_ns, uint64_t *suppressed);

/*
 * Log like relay_log, through the rate limit r (its interval_ns set by
 * the caller; 0 means 10 s): a line refused by it is only counted, and the
 * next line logged ends with " (N more suppressed)", so nothing disappears
 * from the log without a trace.
 */
void relay_log_limited(struct relay_ratelimit *r, enum relay_log_level lvl, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#endif
