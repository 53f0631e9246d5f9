/*
 * bench_proc.c: relayd and influxd as child processes of a benchmark (see
 * benchkit.h): free loopback ports, config files, start, readiness, stop by
 * pid, CPU time and peak memory from /proc, log tails, relayd's /health.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "benchkit.h"

extern char **environ;

#define READY_TIMEOUT_NS (10 * NS_PER_S)
#define STOP_TIMEOUT_NS (10 * NS_PER_S)
#define POLL_INTERVAL_NS (50 * 1000000ULL)
#define DRAIN_POLL_NS (20 * 1000000ULL)       /* /health polls while waiting for a drain */
#define DRAIN_TIMEOUT_NS (120 * NS_PER_S)     /* longest wait for relayd to deliver everything */
#define PORT_TRIES 10

/* A loopback port nobody holds right now (bind to 0, read it back, close). */
static int free_port(uint16_t *port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    getsockname(fd, (struct sockaddr *)&sa, &len) < 0) {
		int err = errno;
		close(fd);
		return -err;
	}
	*port = ntohs(sa.sin_port);
	return close(fd) < 0 ? -errno : 0;
}

/* 1 when nothing listens at 127.0.0.1:port (the connection is refused). */
int port_closed(uint16_t port)
{
	int fd, err = tcp_connect(port, &fd);
	if (err == 0) {
		close(fd);
		return 0;
	}
	return err == -ECONNREFUSED;
}

/*
 * A free loopback port that differs from the n in avoid and that nobody
 * listens at: a port someone holds is refused, never shared. Returns 0 or -1.
 */
int pick_port(uint16_t *port, const uint16_t *avoid, size_t n)
{
	for (int t = 0; t < PORT_TRIES; t++) {
		int err = free_port(port), dup = 0;
		if (err < 0) {
			bench_err("cannot find a free loopback port: %s\n", strerror(-err));
			return -1;
		}
		for (size_t i = 0; i < n; i++)
			dup |= avoid[i] == *port;
		if (!dup && port_closed(*port))
			return 0;
		bench_err("port %u is taken: trying another\n", *port);
	}
	bench_err("no free loopback port after %d tries\n", PORT_TRIES);
	return -1;
}

/* Start argv[0] with stdout and stderr appended to c->log. Returns 0 or an errno. */
int child_spawn(struct child *c, char *const argv[])
{
	posix_spawn_file_actions_t fa;
	int err = posix_spawn_file_actions_init(&fa);
	if (err)
		return err;
	if (!(err = posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0)) &&
	    !(err = posix_spawn_file_actions_addopen(&fa, 2, c->log, O_WRONLY | O_CREAT | O_APPEND, 0600)) &&
	    !(err = posix_spawn_file_actions_adddup2(&fa, 2, 1)))
		err = posix_spawn(&c->pid, argv[0], &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	c->spawn_ns = now_mono_ns();
	c->log_shown = 0;
	if (err) {
		c->pid = 0;
	} else {
		c->started = 1;
		c->wstatus = 0;
	}
	return err;
}

/* Reap the child if it has exited. Returns 1 if it is (still) running. */
int child_alive(struct child *c)
{
	if (c->pid == 0)
		return 0;
	pid_t r = waitpid(c->pid, &c->wstatus, WNOHANG);
	if (r == c->pid || (r < 0 && errno == ECHILD)) {
		c->pid = 0;
		return 0;
	}
	return 1;
}

void describe_exit(int wstatus, char *out, size_t len)
{
	if (WIFEXITED(wstatus))
		snprintf(out, len, "exited with status %d", WEXITSTATUS(wstatus));
	else if (WIFSIGNALED(wstatus))
		snprintf(out, len, "killed by signal %d (%s)", WTERMSIG(wstatus), strsignal(WTERMSIG(wstatus)));
	else
		snprintf(out, len, "ended with wait status 0x%x", wstatus);
}

void child_print_log_tail(struct child *c)
{
	char buf[4096];
	FILE *f;
	if (c->log_shown || !c->log[0] || !(f = fopen(c->log, "r")))
		return;
	c->log_shown = 1;
	long off = 0;
	if (fseek(f, 0, SEEK_END) == 0 && (off = ftell(f)) > (long)sizeof(buf) - 1)
		off -= (long)sizeof(buf) - 1;
	else
		off = 0;
	if (fseek(f, off, SEEK_SET) == 0) {
		size_t n = fread(buf, 1, sizeof(buf) - 1, f);
		buf[n] = '\0';
		fprintf(stderr, "---- tail of %s ----\n%s---- end of log ----\n", c->log, buf);
	}
	fclose(f);
}

/*
 * SIGTERM the child we started (by its pid), wait up to STOP_TIMEOUT_NS,
 * then SIGKILL. Returns 0 when it had exited cleanly (status 0) or when
 * there was nothing to stop, -1 otherwise. With lenient, an unclean exit is
 * only reported.
 */
int child_stop(struct child *c, int lenient)
{
	char how[96];
	int killed = 0;
	if (!c->started)
		return 0;
	c->started = 0;
	if (child_alive(c)) {
		if (kill(c->pid, SIGTERM) < 0)
			bench_err("kill %ld: %s\n", (long)c->pid, strerror(errno));
		uint64_t start = now_mono_ns();
		while (child_alive(c) && now_mono_ns() - start < STOP_TIMEOUT_NS)
			sleep_ns(POLL_INTERVAL_NS / 5);
		if (c->pid) {
			killed = 1;
			bench_err("%s did not stop within 10 s of SIGTERM: SIGKILL\n", c->name);
			if (kill(c->pid, SIGKILL) < 0 || waitpid(c->pid, &c->wstatus, 0) < 0)
				bench_err("cannot kill %ld: %s\n", (long)c->pid, strerror(errno));
			c->pid = 0;
		}
	}
	describe_exit(c->wstatus, how, sizeof(how));
	if (!killed && WIFEXITED(c->wstatus) && WEXITSTATUS(c->wstatus) == 0) {
		fprintf(stderr, "%s: stopped (%s)\n", c->name, how);
		return 0;
	}
	bench_err("%s %s\n", c->name, how);
	child_print_log_tail(c);
	return lenient ? 0 : -1;
}

/* CPU seconds (user + system) the child has used so far, or -1 (from /proc). */
double child_cpu_s(const struct child *c)
{
	char path[64], buf[1024];
	unsigned long long ut, st;
	if (c->pid == 0)
		return -1;
	snprintf(path, sizeof(path), "/proc/%ld/stat", (long)c->pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	/* Fields after "(comm)": state is field 3, utime 14, stime 15. */
	const char *q = strrchr(buf, ')');
	if (!q || sscanf(q + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
		return -1;
	return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* The VmHWM line of /proc/PID/status, in KiB, or -1. */
long child_peak_rss_kib(const struct child *c)
{
	char path[64], line[256];
	long kib = -1;
	if (c->pid == 0)
		return -1;
	snprintf(path, sizeof(path), "/proc/%ld/status", (long)c->pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmHWM: %ld kB", &kib) == 1)
			break;
	fclose(f);
	return kib;
}

/* The VmRSS line of /proc/PID/status, in KiB, or -1. */
long child_rss_kib(const struct child *c)
{
	char path[64], line[256];
	long kib = -1;
	if (c->pid == 0)
		return -1;
	snprintf(path, sizeof(path), "/proc/%ld/status", (long)c->pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
			break;
	fclose(f);
	return kib;
}

/* Poll GET /ping until 204, for at most READY_TIMEOUT_NS. */
int child_wait_ready(struct child *c)
{
	uint64_t start = now_mono_ns();
	while (now_mono_ns() - start < READY_TIMEOUT_NS) {
		if (!child_alive(c)) {
			char how[96];
			describe_exit(c->wstatus, how, sizeof(how));
			bench_err("%s %s before answering /ping\n", c->name, how);
			child_print_log_tail(c);
			return -1;
		}
		if (http_ping(c->port) == 204)
			return 0;
		sleep_ns(POLL_INTERVAL_NS / 5);
	}
	bench_err("%s did not answer /ping with 204 within 10 s\n", c->name);
	child_print_log_tail(c);
	return -1;
}

/*---- relayd ----*/

static int relayd_write_config(const struct child *p)
{
	FILE *f = fopen(p->conf, "w");
	if (!f)
		return -errno;
	/* Coalescing and delivery settings stay at their defaults, but for
	 * "parallel" when --delivery-parallel asks. */
	char extra[32] = "";
	if (p->parallel)
		snprintf(extra, sizeof(extra), ", parallel: %u", p->parallel);
	fprintf(f,
	        "data_dir: %s\n"
	        "listen: {http: 127.0.0.1:%u}\n"
	        "http: {max_body_size: 64MiB}\n"
	        "queue: {max_size: 16GiB, max_commit_batches: 1024}\n"
	        "backends: [{name: bench, url: \"http://127.0.0.1:%u\"%s}]\n",
	        p->dir, p->port, p->backend_port, extra);
	int bad = ferror(f);
	if (fclose(f) != 0 || bad)
		return -EIO;
	return 0;
}

/* (Re)start relayd with p's config file, rewritten first. Returns 0 or -1. */
int relayd_spawn(struct child *p, const char *path)
{
	/* relayd refuses root without a user: to switch to; the benchmark
	 * runs as whoever runs it, root included. */
	char *const argv[] = { (char *)path, (char *)"-c", p->conf,
	                       geteuid() == 0 ? (char *)"--allow-root" : NULL, NULL };
	int err;
	if ((err = relayd_write_config(p)) < 0) {
		bench_err("cannot write '%s': %s\n", p->conf, strerror(-err));
		return -1;
	}
	if ((err = child_spawn(p, argv))) {
		bench_err("cannot start '%s': %s\n", path, strerror(err));
		return -1;
	}
	fprintf(stderr, "relayd: pid %ld on 127.0.0.1:%u, backend 127.0.0.1:%u%s, log %s\n", (long)p->pid, p->port,
	        p->backend_port, port_closed(p->backend_port) ? " (closed)" : "", p->log);
	return 0;
}

/*
 * Start a relayd whose queue is tmp/NAME and whose one backend is at
 * backend_port, or at a closed port when that is 0, with "parallel" set when
 * parallel is not 0; wait until it is ready.
 * On failure the caller still calls child_stop.
 */
int relayd_start(struct child *p, const char *path, const char *tmp, const char *name,
                        uint16_t backend_port, unsigned parallel)
{
	char file[64];
	*p = (struct child){ .name = "relayd", .parallel = parallel };
	snprintf(file, sizeof(file), "%s.yaml", name);
	if (path_join(p->dir, tmp, name) < 0 || path_join(p->conf, tmp, file) < 0) {
		bench_err("temporary directory path too long\n");
		return -1;
	}
	snprintf(file, sizeof(file), "%s.log", name);
	if (path_join(p->log, tmp, file) < 0)
		return -1;
	uint16_t avoid[1] = { backend_port };
	if (pick_port(&p->port, avoid, backend_port ? 1 : 0) < 0)
		return -1;
	p->backend_port = backend_port;
	if (!backend_port && pick_port(&p->backend_port, &p->port, 1) < 0)
		return -1;
	if (relayd_spawn(p, path) < 0 || child_wait_ready(p) < 0)
		return -1;
	return 0;
}

int relayd_health_read(uint16_t port, struct relayd_health *h)
{
	struct rbuf body = RBUF_INIT;
	int status = http_control(port, "GET", "/health", &body), rc = -1;
	const char *json = body.data, *ingest, *http, *be;
	if (status == 200 && json) {
		ingest = strstr(json, "\"ingest\":");
		http = strstr(json, "\"http\":");
		be = strstr(json, "\"backends\":");
		if (!json_u64(ingest, "commits", &h->commits) &&
		    !json_u64(ingest, "batches_committed", &h->batches_committed) &&
		    !json_u64(http, "points_accepted", &h->points_accepted) &&
		    !json_u64(be, "pending_batches", &h->pending_batches) &&
		    !json_u64(be, "pending_points", &h->pending_points) &&
		    !json_u64(be, "posts", &h->posts) &&
		    !json_u64(be, "delivered_points", &h->delivered_points) &&
		    !json_u64(be, "retries", &h->retries))
			rc = 0;
	}
	rbuf_release(&body);
	return rc;
}

/*
 * Poll relayd's /health until its backend has nothing pending, for at most
 * DRAIN_TIMEOUT_NS. *done gets the time just after the answer that said so
 * (everything was delivered by then), *h that answer. Returns 0 or -1.
 */
int relayd_wait_drained(struct child *p, uint64_t *done, struct relayd_health *h)
{
	uint64_t start = now_mono_ns();
	int seen = 0;
	while (now_mono_ns() - start < DRAIN_TIMEOUT_NS) {
		if (!child_alive(p)) {
			char how[96];
			describe_exit(p->wstatus, how, sizeof(how));
			bench_err("relayd %s while delivering\n", how);
			child_print_log_tail(p);
			return -1;
		}
		if (relayd_health_read(p->port, h) == 0) {
			seen = 1;
			if (h->pending_points == 0 && h->pending_batches == 0) {
				*done = now_mono_ns();
				return 0;
			}
		}
		sleep_ns(DRAIN_POLL_NS);
	}
	if (seen)
		bench_err("relayd still had %" PRIu64 " points pending after %llu s\n",
		        h->pending_points, DRAIN_TIMEOUT_NS / NS_PER_S);
	else
		bench_err("relayd's /health never answered\n");
	child_print_log_tail(p);
	return -1;
}

/* Copy relayd's shutdown summary line ("... batches committed in N commits") into out. */
void relayd_commit_summary(const struct child *p, char *out, size_t len)
{
	char line[512];
	FILE *f = fopen(p->log, "r");
	out[0] = '\0';
	if (!f)
		return;
	while (fgets(line, sizeof(line), f))
		if (strstr(line, " committed in "))
			snprintf(out, len, "%s", line);
	fclose(f);
}

/*---- influxd ----*/

static int influxd_write_config(const struct child *c)
{
	FILE *f = fopen(c->conf, "w");
	if (!f)
		return -errno;
	fprintf(f,
	        "reporting-disabled = true\n"
	        "bind-address = \"127.0.0.1:%u\"\n"
	        "\n[meta]\n  dir = \"%s/meta\"\n"
	        "\n[data]\n  dir = \"%s/data\"\n  wal-dir = \"%s/wal\"\n  query-log-enabled = false\n"
	        "\n[http]\n  bind-address = \"127.0.0.1:%u\"\n  log-enabled = false\n",
	        c->rpc_port, c->dir, c->dir, c->dir, c->port);
	if (c->https_cert)
		fprintf(f, "  https-enabled = true\n  https-certificate = \"%s\"\n  https-private-key = \"%s\"\n",
		        c->https_cert, c->https_key);
	fprintf(f, "\n[monitor]\n  store-enabled = false\n"
	           "\n[continuous_queries]\n  enabled = false\n"
	           "\n[subscriber]\n  enabled = false\n");
	int bad = ferror(f);
	if (fclose(f) != 0 || bad)
		return -EIO;
	return 0;
}

/*
 * Write the config of a private influxd in tmp/NAME (HTTP at port, or a free
 * port when it is 0; HTTPS only when https_cert is set) and spawn it; no
 * wait. On failure the caller still calls child_stop.
 */
int influxd_launch(struct child *c, const char *path, const char *tmp, const char *name, uint16_t port,
                   const char *https_cert, const char *https_key)
{
	char *const argv[] = { (char *)path, (char *)"-config", c->conf, NULL };
	int err;
	*c = (struct child){ .name = "influxd", .https_cert = https_cert, .https_key = https_key };
	if (strpbrk(tmp, "\"\\") || (https_cert && strpbrk(https_cert, "\"\\")) ||
	    (https_key && strpbrk(https_key, "\"\\"))) {
		bench_err("'%s' cannot go into influxd's config\n", tmp);
		return -1;
	}
	if (path_join(c->dir, tmp, name) < 0 || path_join(c->conf, c->dir, "influxdb.conf") < 0 ||
	    path_join(c->log, c->dir, "influxd.log") < 0) {
		bench_err("temporary directory path too long\n");
		return -1;
	}
	if (mkdir(c->dir, 0700) < 0) {
		bench_err("cannot create '%s': %s\n", c->dir, strerror(errno));
		return -1;
	}
	c->port = port;
	if ((!port && pick_port(&c->port, NULL, 0) < 0) || pick_port(&c->rpc_port, &c->port, 1) < 0)
		return -1;
	if ((err = influxd_write_config(c)) < 0) {
		bench_err("cannot write '%s': %s\n", c->conf, strerror(-err));
		return -1;
	}
	if ((err = child_spawn(c, argv))) {
		bench_err("cannot start '%s': %s\n", path, strerror(err));
		return -1;
	}
	fprintf(stderr, "influxd: pid %ld on 127.0.0.1:%u%s (rpc %u), in %s\n", (long)c->pid, c->port,
	        https_cert ? " (https)" : "", c->rpc_port, c->dir);
	return 0;
}

/*
 * Start a private influxd in tmp/NAME on free loopback ports, wait for its
 * /ping and create the database "bench". On failure the caller still calls
 * child_stop.
 */
int influxd_start(struct child *c, const char *path, const char *tmp, const char *name)
{
	struct rbuf body = RBUF_INIT;
	int status;
	if (influxd_launch(c, path, tmp, name, 0, NULL, NULL) < 0)
		return -1;
	if (child_wait_ready(c) < 0)
		return -1;
	status = http_control(c->port, "POST", "/query?q=CREATE%20DATABASE%20bench", &body);
	if (status != 200 || !body.data || strstr(body.data, "\"error\"")) {
		bench_err("CREATE DATABASE bench: status %d: %s\n", status,
		        body.data ? body.data : "");
		rbuf_release(&body);
		return -1;
	}
	rbuf_release(&body);
	return 0;
}

/* influxd's httpd pointsWrittenOK from /debug/vars. Returns 0 or -1. */
int influxd_points_ok(const struct child *c, uint64_t *out)
{
	struct rbuf body = RBUF_INIT;
	int rc = -1;
	if (http_control(c->port, "GET", "/debug/vars", &body) == 200 && body.data) {
		const char *httpd = strstr(body.data, "\"httpd:");
		rc = json_u64(httpd, "pointsWrittenOK", out);
	}
	if (rc < 0)
		bench_err("cannot read pointsWrittenOK from influxd's /debug/vars\n");
	rbuf_release(&body);
	return rc;
}

/* Stop influxd and, unless --keep, remove its directory. */
void influxd_finish(struct child *c, int keep)
{
	child_stop(c, 1);
	if (!keep && c->dir[0])
		remove_tree(c->dir);
}
