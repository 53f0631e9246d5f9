/*
 * daemon: detaching, the pidfile, the user switch and systemd
 * notifications. Everything here runs on relayd's main thread; detaching
 * must happen before any other thread exists (fork copies only the
 * caller), so relayd calls it before the loop and its thread pool start.
 */
#include "cmd/relayd/daemon.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "relay/base/log.h"
#include "relay/base/util.h"

/* The write end of the pipe the waiting parent reads; -1 once released
 * or without --daemon. */
static int ready_fd = -1;

int daemon_switch_user(const char *user, int allow_root, char *err, size_t errlen)
{
	if (user) {
		errno = 0;
		struct passwd *pw = getpwnam(user);
		if (!pw) {
			snprintf(err, errlen, "cannot run as user '%s': %s", user,
				 errno ? strerror(errno) : "no such user");
			return -1;
		}
		uid_t uid = pw->pw_uid;
		gid_t gid = pw->pw_gid;
		if (geteuid() == 0) {
			/* Groups first, then the gid, then the uid: once the
			 * uid is dropped, nothing else may be changed. */
			if (initgroups(user, gid) < 0 || setgid(gid) < 0 || setuid(uid) < 0) {
				snprintf(err, errlen, "cannot switch to user '%s': %s", user, strerror(errno));
				return -1;
			}
			if (uid != 0 && (setuid(0) == 0 || seteuid(0) == 0)) {
				snprintf(err, errlen, "switched to user '%s' but could regain root: refusing to go on",
					 user);
				return -1;
			}
		} else if (geteuid() != uid) {
			relay_log(RELAY_LOG_WARN, "'user' is '%s' but relayd was started as uid %u, not root: "
				  "it stays uid %u", user, (unsigned)geteuid(), (unsigned)geteuid());
		}
	}
	if (geteuid() == 0 && !allow_root) {
		snprintf(err, errlen, "refusing to run as root: set 'user' in the configuration "
			 "(the package creates the user 'relayd'), or pass --allow-root");
		return -1;
	}
	return 0;
}

/*
 * The original process after the fork: collect what the daemon logs at
 * warn and above until it says it is ready (a NUL byte) or exits (end of
 * file), show it, and exit accordingly. Only the tail is kept: the
 * reason for a failure is the last thing the daemon logged.
 */
static int wait_for_daemon(int fd)
{
	char buf[8192], chunk[1024];
	size_t len = 0;
	int ready = 0;

	for (;;) {
		ssize_t n = read(fd, chunk, sizeof(chunk));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		char *nul = memchr(chunk, '\0', (size_t)n);
		size_t keep = nul ? (size_t)(nul - chunk) : (size_t)n;
		if (keep > sizeof(buf))
			keep = sizeof(buf);
		if (len + keep > sizeof(buf)) {
			size_t drop = len + keep - sizeof(buf);
			memmove(buf, buf + drop, len - drop);
			len -= drop;
		}
		memcpy(buf + len, chunk, keep);
		len += keep;
		if (nul) {
			ready = 1;
			break;
		}
	}
	if (len) {
		ssize_t w = write(STDERR_FILENO, buf, len);
		(void)w;
	}
	if (!ready && !len)
		fprintf(stderr, "relayd: the daemon exited before it was ready (see its log)\n");
	return ready ? 0 : 1;
}

int daemon_detach(char *err, size_t errlen)
{
	int fds[2];
	pid_t pid;

	/* Descriptors inherited from whoever started relayd (a shell, an
	 * init script's captures) would stay open for months; daemon(7) says
	 * close them. Nothing of relayd's own is open yet. */
	close_range(3, ~0U, 0);
	if (pipe2(fds, O_CLOEXEC) < 0) {
		snprintf(err, errlen, "cannot create a pipe: %s", strerror(errno));
		return -1;
	}
	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		snprintf(err, errlen, "cannot fork: %s", strerror(errno));
		close(fds[0]);
		close(fds[1]);
		return -1;
	}
	if (pid > 0) {
		int st;
		close(fds[1]);
		/* The intermediate child exits as soon as it has forked. */
		while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
			;
		exit(wait_for_daemon(fds[0]));
	}

	close(fds[0]);
	/* A session of its own: no controlling terminal, no SIGHUP when the
	 * terminal closes. */
	if (setsid() < 0) {
		dprintf(fds[1], "relayd: setsid: %s\n", strerror(errno));
		_exit(1);
	}
	pid = fork();
	if (pid < 0) {
		dprintf(fds[1], "relayd: cannot fork: %s\n", strerror(errno));
		_exit(1);
	}
	if (pid > 0)
		_exit(0); /* not a session leader any more: no terminal can be acquired */

	/* Hold no directory busy (a mount point could not be unmounted).
	 * relayd made every path it needs absolute before this. */
	if (chdir("/") < 0) {
		dprintf(fds[1], "relayd: chdir /: %s\n", strerror(errno));
		_exit(1);
	}
	/* Keep the caller's umask, but never let group or others write
	 * what relayd creates (the pidfile, a log file). */
	mode_t m = umask(0);
	umask(m | 022);
	int nul = open("/dev/null", O_RDWR);
	if (nul < 0 || dup2(nul, STDIN_FILENO) < 0 || dup2(nul, STDOUT_FILENO) < 0 ||
	    dup2(nul, STDERR_FILENO) < 0) {
		dprintf(fds[1], "relayd: cannot open /dev/null: %s\n", strerror(errno));
		_exit(1);
	}
	if (nul > STDERR_FILENO)
		close(nul);
	ready_fd = fds[1];
	relay_log_tee(ready_fd, RELAY_LOG_WARN);
	return 0;
}

void daemon_ready(void)
{
	if (ready_fd < 0)
		return;
	/* After relay_log_tee(-1) returns no thread writes to the pipe, so
	 * the NUL is the last byte the parent reads. */
	relay_log_tee(-1, RELAY_LOG_ERROR);
	ssize_t w = write(ready_fd, "", 1);
	(void)w; /* a parent that is gone needs no answer */
	close(ready_fd);
	ready_fd = -1;
}

int daemon_pidfile_write(const char *path, pid_t pid, char *err, size_t errlen)
{
	char tmp[PATH_MAX], text[32];
	int fd, n;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp)) {
		snprintf(err, errlen, "pidfile path '%s' is too long", path);
		return -1;
	}
	/* O_NOFOLLOW: the run directory may be writable by relayd's user,
	 * who must not be able to point the temporary file elsewhere. */
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
	if (fd < 0) {
		snprintf(err, errlen, "cannot write pidfile '%s': %s", tmp, strerror(errno));
		return -1;
	}
	n = snprintf(text, sizeof(text), "%ld\n", (long)pid);
	int ok = write(fd, text, (size_t)n) == n;
	int saved = errno;
	if (close(fd) < 0 && ok) {
		ok = 0;
		saved = errno;
	}
	if (!ok) {
		snprintf(err, errlen, "cannot write pidfile '%s': %s", tmp, strerror(saved));
		unlink(tmp);
		return -1;
	}
	/* No fsync: a pidfile lives in /run (gone after a power loss), and
	 * a stale or empty one never keeps relayd from starting. The rename
	 * makes readers see either the old file or the whole new one. */
	if (rename(tmp, path) < 0) {
		snprintf(err, errlen, "cannot write pidfile '%s': %s", path, strerror(errno));
		unlink(tmp);
		return -1;
	}
	return 0;
}

void daemon_pidfile_remove(const char *path, pid_t pid)
{
	char text[32];
	ssize_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);

	if (fd < 0)
		return;
	n = read(fd, text, sizeof(text) - 1);
	close(fd);
	if (n <= 0)
		return;
	text[n] = '\0';
	if (strtol(text, NULL, 10) == (long)pid)
		unlink(path);
}

int daemon_notify_enabled(void)
{
	const char *s = getenv("NOTIFY_SOCKET");
	return s && *s;
}

void daemon_notify(const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	if (!daemon_notify_enabled())
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	/* A lost notification is not worth failing for: systemd times out
	 * and says so itself. */
	sd_notify(0, msg);
}

uint64_t daemon_watchdog_usec(void)
{
	uint64_t usec = 0;
	return sd_watchdog_enabled(0, &usec) > 0 ? usec : 0;
}
