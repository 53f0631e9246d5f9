/*
 * log: formatted, leveled lines, as text or as JSON objects. One write(2)
 * per event so lines from several threads never interleave (O_APPEND makes each write land whole
 * at the end of a file, even with logrotate's copytruncate).
 */
#include "relay/base/log.h"
#include "relay/base/json.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <time.h>
#include <sys/uio.h>
#include <unistd.h>

/* Read by every logging thread, changed by a reload on the loop thread:
 * relaxed atomics, since a line logged at the old level is harmless. */
static int min_level = RELAY_LOG_INFO;
static int log_format = RELAY_LOG_FORMAT_TEXT; /* same: a reload changes it */
static const char *const names[] = { "debug", "info", "notice", "warn", "error" };
static const int priorities[] = { LOG_DEBUG, LOG_INFO, LOG_NOTICE, LOG_WARNING, LOG_ERR };

/* The output. out_fd is read by every logging thread and swapped only by
 * relay_log_open/reopen; the lock keeps a line from being written to a
 * descriptor that is being closed. */
static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;
static int out_fd = STDERR_FILENO;
static int out_syslog;
static int out_journal; /* stderr is systemd's journal stream: "<N>" lines */
static char *out_path;
static int tee_fd = -1;
static int tee_min = RELAY_LOG_ERROR;

static int open_file(const char *path, char *err, size_t errlen)
{
	int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0640);
	if (fd < 0)
		snprintf(err, errlen, "cannot open log file '%s': %s", path, strerror(errno));
	return fd;
}

int relay_log_open(const char *output, char *err, size_t errlen)
{
	int fd = -1, sys = 0, journal = 0;
	char *path = NULL;

	if (!output || strcmp(output, "stderr") == 0) {
		fd = STDERR_FILENO;
	} else if (strcmp(output, "journal") == 0) {
		fd = STDERR_FILENO;
		journal = 1;
	} else if (strcmp(output, "syslog") == 0) {
		sys = 1;
	} else {
		fd = open_file(output, err, errlen);
		if (fd < 0)
			return -1;
		path = strdup(output);
		if (!path) {
			close(fd);
			snprintf(err, errlen, "out of memory");
			return -1;
		}
	}
	pthread_mutex_lock(&out_lock);
	if (out_fd > STDERR_FILENO)
		close(out_fd);
	if (out_syslog && !sys)
		closelog();
	if (sys && !out_syslog)
		openlog("relayd", LOG_PID | LOG_NDELAY, LOG_DAEMON);
	free(out_path);
	out_fd = fd;
	out_syslog = sys;
	out_journal = journal;
	out_path = path;
	pthread_mutex_unlock(&out_lock);
	return 0;
}

int relay_log_reopen(char *err, size_t errlen)
{
	int fd;

	pthread_mutex_lock(&out_lock);
	if (!out_path) {
		pthread_mutex_unlock(&out_lock);
		return 0;
	}
	fd = open_file(out_path, err, errlen);
	if (fd >= 0) {
		close(out_fd);
		out_fd = fd;
	}
	pthread_mutex_unlock(&out_lock);
	return fd < 0 ? -1 : 0;
}

/*
 * Whether systemd connected stderr to the journal: it then sets
 * JOURNAL_STREAM to "DEV:INODE" of that stream (systemd.exec(5)), and the
 * variable must match stderr itself, since a child that redirected its
 * stderr keeps the variable of its parent.
 */
static int journal_stream(char *why, size_t whylen)
{
	const char *env = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;
	int n = 0;

	if (!env || !*env) {
		snprintf(why, whylen, "JOURNAL_STREAM is not set (systemd did not connect stderr to the journal)");
		return 0;
	}
	if (sscanf(env, "%llu:%llu%n", &dev, &ino, &n) != 2 || env[n] != '\0') {
		snprintf(why, whylen, "JOURNAL_STREAM '%.40s' is not DEV:INODE", env);
		return 0;
	}
	if (fstat(STDERR_FILENO, &st) < 0 || (unsigned long long)st.st_dev != dev ||
	    (unsigned long long)st.st_ino != ino) {
		snprintf(why, whylen, "stderr is not the journal stream JOURNAL_STREAM names");
		return 0;
	}
	return 1;
}

int relay_log_output_check(const char *output, char *why, size_t whylen)
{
	struct stat st;

	why[0] = '\0';
	if (strcmp(output, "stderr") == 0)
		return 1;
	if (strcmp(output, "journal") == 0)
		return journal_stream(why, whylen);
	if (strcmp(output, "syslog") == 0) {
		/* syslog(3) writes to this socket and drops lines silently
		 * when nobody listens there (containers, minimal hosts). */
		if (stat("/dev/log", &st) < 0) {
			snprintf(why, whylen, "/dev/log does not exist (no syslog daemon)");
			return 0;
		}
		if (!S_ISSOCK(st.st_mode)) {
			snprintf(why, whylen, "/dev/log is not a socket");
			return 0;
		}
		return 1;
	}
	/* A file: writable if it exists, else its directory lets it be
	 * created; checked without creating it (--check-config may run as
	 * another user than relayd). */
	if (stat(output, &st) == 0) {
		if (S_ISDIR(st.st_mode)) {
			snprintf(why, whylen, "'%s' is a directory", output);
			return 0;
		}
		if (access(output, W_OK) < 0) {
			snprintf(why, whylen, "cannot open '%s': %s", output, strerror(errno));
			return 0;
		}
		return 1;
	}
	char dir[4096];
	const char *slash = strrchr(output, '/');
	size_t dl = slash && slash != output ? (size_t)(slash - output) : 1;
	if (dl >= sizeof(dir))
		dl = sizeof(dir) - 1;
	memcpy(dir, output, dl);
	dir[dl] = '\0';
	if (access(dir, W_OK | X_OK) < 0) {
		snprintf(why, whylen, "cannot create '%s': %s: %s", output, dir, strerror(errno));
		return 0;
	}
	return 1;
}

/* The next output of prefs ('\n'-separated) from *p into buf; 0 at the end. */
static int next_output(const char **p, char *buf, size_t size)
{
	if (!*p || !**p)
		return 0;
	size_t len = strcspn(*p, "\n");
	snprintf(buf, size, "%.*s", (int)len, *p);
	*p += len + ((*p)[len] == '\n');
	return 1;
}

int relay_log_open_first(const char *prefs, char *chosen, size_t chosenlen, char *why, size_t whylen,
                         char *err, size_t errlen)
{
	return relay_log_resolve(prefs, NULL, chosen, chosenlen, why, whylen, err, errlen);
}

int relay_log_resolve(const char *prefs, const char *current, char *chosen, size_t chosenlen, char *why,
                      size_t whylen, char *err, size_t errlen)
{
	char out[4096], reason[512];
	const char *p = prefs ? prefs : "stderr";
	size_t wl = 0;
	int files = 0;

	why[0] = '\0';
	while (next_output(&p, out, sizeof(out))) {
		int ok;
		if (current && strcmp(out, current) == 0) {
			/* The output in force: it works (a file is open), and a
			 * reopen could only fail (a directory made unwritable
			 * since) or be SIGUSR1's job. */
			snprintf(chosen, chosenlen, "%s", out);
			return 0;
		}
		if (strcmp(out, "stderr") && strcmp(out, "syslog") && strcmp(out, "journal")) {
			/* A file is available when it opens: the open is the test. */
			files++;
			ok = relay_log_open(out, reason, sizeof(reason)) == 0;
		} else {
			ok = relay_log_output_check(out, reason, sizeof(reason));
			if (ok)
				relay_log_open(out, reason, sizeof(reason));
		}
		if (ok) {
			snprintf(chosen, chosenlen, "%s", out);
			return 0;
		}
		int w = snprintf(why + wl, wl < whylen ? whylen - wl : 0, "%s%s: %s", wl ? "; " : "", out, reason);
		if (w > 0)
			wl += (size_t)w;
		if (wl >= whylen)
			wl = whylen ? whylen - 1 : 0;
	}
	/* Nothing was available. A file was asked for: say why it could not
	 * be opened rather than log somewhere nobody looks. Else stderr,
	 * which is always there. */
	if (files || current) {
		snprintf(err, errlen, "no log_output can be used: %s", why);
		if (current)
			snprintf(chosen, chosenlen, "%s", current);
		return -1;
	}
	relay_log_open("stderr", reason, sizeof(reason));
	snprintf(chosen, chosenlen, "stderr");
	return 1;
}

void relay_log_tee(int fd, enum relay_log_level min)
{
	pthread_mutex_lock(&out_lock);
	tee_fd = fd;
	tee_min = (int)min;
	pthread_mutex_unlock(&out_lock);
}

void relay_log_close(void)
{
	char err[8];
	relay_log_open("stderr", err, sizeof(err));
}

int relay_log_level_parse(const char *s, enum relay_log_level *out)
{
	for (int i = 0; i <= RELAY_LOG_ERROR; i++)
		if (s && strcmp(s, names[i]) == 0) {
			*out = (enum relay_log_level)i;
			return 0;
		}
	return -1;
}

void relay_log_set_level(enum relay_log_level lvl)
{
	__atomic_store_n(&min_level, (int)lvl, __ATOMIC_RELAXED);
}

void relay_log_set_format(enum relay_log_format f)
{
	__atomic_store_n(&log_format, (int)f, __ATOMIC_RELAXED);
}

int relay_log_enabled(enum relay_log_level lvl)
{
	return (int)lvl >= __atomic_load_n(&min_level, __ATOMIC_RELAXED);
}

/* One event as a JSON object on one line (log_format: json), appended to
 * b: the message's bytes go through the JSON leaf, which escapes every
 * control, quote and non-ASCII character and turns bytes that are not
 * UTF-8 into U+FFFD, so no message can break the line or the object. */
static void json_line(struct rbuf *b, const char *stamp, enum relay_log_level lvl, const char *msg, size_t len)
{
	json_t *m = rjson_string(msg, len); /* first: sets up jansson's allocator */
	json_t *o = json_object();
	json_object_set_new(o, "time", rjson_cstr(stamp));
	json_object_set_new(o, "level", rjson_cstr(names[lvl]));
	json_object_set_new(o, "pid", json_integer((json_int_t)getpid()));
	json_object_set_new(o, "msg", m);
	rjson_append_new(b, o);
	rbuf_appendc(b, '\n');
}

__attribute__((format(printf, 3, 0)))
static void vlog(enum relay_log_level lvl, const char *suffix, const char *fmt, va_list ap)
{
	char msg[2048], line[2048 + 64], stamp[40];
	struct timespec ts;
	struct tm tm;
	size_t n, len, sl = suffix ? strlen(suffix) : 0;
	int json = __atomic_load_n(&log_format, __ATOMIC_RELAXED) == RELAY_LOG_FORMAT_JSON;
	struct rbuf jb = RBUF_INIT;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	n = strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(stamp + n, sizeof(stamp) - n, ".%03ldZ", ts.tv_nsec / 1000000L);

	/* The message, cut short if need be so that the suffix (a rate
	 * limit's count of suppressed lines) always fits after it. */
	if (sl > sizeof(msg) / 2)
		sl = 0;
	int m = vsnprintf(msg, sizeof(msg) - sl, fmt, ap);
	len = m < 0 ? 0 : (size_t)m;
	if (len > sizeof(msg) - sl - 1)
		len = sizeof(msg) - sl - 1;
	memcpy(msg + len, suffix ? suffix : "", sl);
	len += sl;

	/* The text line, for text outputs and for syslog in either format. */
	n = (size_t)snprintf(line, sizeof(line), "%s %s ", stamp, names[lvl]);
	size_t prefix = n;
	memcpy(line + n, msg, len);
	n += len;
	/* One event, one line: a client's bytes quoted in a message must not
	 * start a forged line of their own, nor reach a terminal as a control
	 * (DEL, or a C1 control in UTF-8: 0xC2 0x80..0x9F, CSI among them). */
	for (size_t i = prefix; i < n; i++) {
		unsigned char ch = (unsigned char)line[i];
		if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
			line[i] = '?';
		else if (ch == 0xc2 && i + 1 < n && (unsigned char)line[i + 1] >= 0x80 &&
		         (unsigned char)line[i + 1] < 0xa0)
			line[i] = line[i + 1] = '?';
	}
	line[n] = '\n';
	/* The line for files, stderr and the tee: the text line, or the JSON
	 * object built outside the lock. */
	const char *out = line;
	size_t outlen = n + 1;
	if (json) {
		json_line(&jb, stamp, lvl, msg, len);
		out = jb.data;
		outlen = jb.len;
	}

	pthread_mutex_lock(&out_lock);
	if (tee_fd >= 0 && (int)lvl >= tee_min) {
		ssize_t t = write(tee_fd, out, outlen);
		(void)t; /* a parent that went away has nothing left to show */
	}
	if (out_syslog) {
		/* syslog stamps the time and level itself: the text message after
		 * our prefix, in either format (a JSON object inside a syslog
		 * record would be read by nobody). */
		line[n] = '\0';
		syslog(priorities[lvl], "%s", line + prefix);
	} else if (out_journal) {
		/* The journal stamps the time itself and reads the priority
		 * from a "<N>" prefix (sd-daemon(3)), so journalctl -p works:
		 * the message alone, or the JSON object for log_format json. */
		char pri[8];
		struct iovec iov[2];
		snprintf(pri, sizeof(pri), "<%d>", priorities[lvl]);
		iov[0].iov_base = pri;
		iov[0].iov_len = strlen(pri);
		iov[1].iov_base = (void *)(json ? out : line + prefix);
		iov[1].iov_len = json ? outlen : n + 1 - prefix;
		ssize_t w = writev(out_fd, iov, 2);
		(void)w;
	} else {
		ssize_t w = write(out_fd, out, outlen);
		(void)w; /* nowhere to report a failed log write */
	}
	pthread_mutex_unlock(&out_lock);
	rbuf_release(&jb);
}

void relay_log(enum relay_log_level lvl, const char *fmt, ...)
{
	va_list ap;

	if (!relay_log_enabled(lvl))
		return;
	va_start(ap, fmt);
	vlog(lvl, NULL, fmt, ap);
	va_end(ap);
}

void relay_log_limited(struct relay_ratelimit *r, enum relay_log_level lvl, const char *fmt, ...)
{
	struct timespec ts;
	char suffix[48] = "";
	uint64_t suppressed;
	va_list ap;

	if (!relay_log_enabled(lvl))
		return;
	if (!r->interval_ns)
		r->interval_ns = 10000000000ULL;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	if (!relay_ratelimit_allow(r, (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec, &suppressed))
		return;
	if (suppressed)
		snprintf(suffix, sizeof(suffix), " (%llu more suppressed)", (unsigned long long)suppressed);
	va_start(ap, fmt);
	vlog(lvl, suffix, fmt, ap);
	va_end(ap);
}

int relay_ratelimit_allow(struct relay_ratelimit *r, uint64_t now_ns, uint64_t *suppressed)
{
	if (r->last_ns && now_ns - r->last_ns < r->interval_ns) {
		r->suppressed++;
		return 0;
	}
	*suppressed = r->suppressed;
	r->suppressed = 0;
	/* 0 means "never": a clock that reads 0 still lets the next line be
	 * limited. */
	r->last_ns = now_ns ? now_ns : 1;
	return 1;
}
