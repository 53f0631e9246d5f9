/*
 * daemon: what makes relayd a well-behaved service, apart from its loop:
 * detaching (--daemon) with a parent that waits for the truth, the
 * pidfile, dropping root for the configured user, and telling systemd
 * how things stand (sd_notify). Plain POSIX and libsystemd: no libuv, no
 * configuration. Messages go to relay_log, or into err for the caller.
 */
#ifndef RELAYD_DAEMON_H
#define RELAYD_DAEMON_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/*
 * Run as user when started as root: its uid, its primary gid and every
 * group it belongs to (initgroups), in the order that leaves no way back.
 * Then refuse to go on as root (uid 0) unless allow_root. Not root and
 * user set to someone else: a warning, nothing changes (the init system
 * chose the user). Returns 0, or -1 with the reason in err.
 */
int daemon_switch_user(const char *user, int allow_root, char *err, size_t errlen);

/*
 * Detach from the terminal: close inherited descriptors above 2, fork,
 * setsid, fork again (the daemon can never reacquire a terminal),
 * chdir("/"), a umask that masks at least group and other write, standard
 * streams on /dev/null. Only the daemon returns
 * (0); the original process stays behind to wait for it: it exits 0 once
 * the daemon calls daemon_ready(), or 1 after printing the daemon's
 * warnings and errors when the daemon exits first, so that an init script
 * sees the truth. Until then every log line of level warn and above is
 * also sent to the waiting parent (relay_log_tee). Returns -1 with err
 * when the first fork or the pipe fails (nothing detached).
 */
int daemon_detach(char *err, size_t errlen);

/* The daemon is listening and its queue is open: release the waiting
 * parent (exit 0) and stop sending it log lines. Harmless without
 * --daemon or when called twice. */
void daemon_ready(void);

/*
 * Write pid to path atomically: a temporary file beside it, then
 * rename(2) over it. A stale pidfile (a relayd that died without removing
 * it) is simply replaced; a second live relayd never gets this far, since
 * the data directory's lock is taken first. Returns 0, or -1 with err.
 */
int daemon_pidfile_write(const char *path, pid_t pid, char *err, size_t errlen);

/* Remove path if it still names pid (another process's pidfile is left
 * alone). */
void daemon_pidfile_remove(const char *path, pid_t pid);

/*
 * systemd: send a notify message ("READY=1", "STATUS=..."): printf-style.
 * Does nothing when relayd was not started by systemd with
 * Type=notify (no NOTIFY_SOCKET).
 */
void daemon_notify(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Whether systemd listens for notify messages. */
int daemon_notify_enabled(void);

/* The watchdog interval systemd expects pings within (WatchdogSec=), in
 * microseconds, or 0 when there is no watchdog. */
uint64_t daemon_watchdog_usec(void);

#endif
