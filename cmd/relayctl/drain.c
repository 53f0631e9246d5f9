/*
 * relayctl drain and undrain: take a running relayd out of a load
 * balancer's write pool for maintenance, and put it back.
 *
 * drain asks relayd ("drain on" on its control socket) to answer /health
 * with 503 "draining"; writes that still come are accepted and every
 * backend's queue goes on being delivered. --wait polls ("drain status")
 * until nothing is left to deliver (no batch pending or held for any
 * backend; dead letters do not count), or until --timeout; --stop then
 * sends SIGTERM to the pid relayd reported and waits for it to exit.
 * undrain ("drain off") ends it. The drain is relayd's memory only: a
 * restart ends it too.
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

/* How often --wait asks relayd, and how long --stop waits for its exit
 * (relayd's own shutdown is bounded by 30 s). */
#define POLL_MS 250
#define STOP_WAIT_MS 40000

static uint64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

/* Ask relayd "drain ARG": 0 with *doc, else 1 after saying why. */
static int ask_drain(const struct ctl *c, const char *arg, json_t **doc)
{
	char line[32], *reply = NULL, err[200];
	*doc = NULL;
	snprintf(line, sizeof(line), "drain %s", arg);
	int rc = ask_relayd(c, line, &reply);
	if (rc == 1 && !relayd_pid(c)) {
		fprintf(stderr, "relayctl: relayd is not running: there is nothing to drain\n");
	} else if (rc != 0) {
		fprintf(stderr, "relayctl: relayd did not answer 'drain %s': %s\n", arg,
			reply ? shown(reply) : "it does not answer on its control socket");
	} else if (!(*doc = rjson_parse(reply, strlen(reply), err, sizeof(err))) || !json_is_object(*doc)) {
		fprintf(stderr, "relayctl: relayd's drain reply is not understood: %s\n", err);
		json_decref(*doc);
		*doc = NULL;
	}
	free(reply);
	return *doc ? 0 : 1;
}

static uint64_t left_of(const json_t *doc)
{
	int64_t n = rjson_get_int(doc, "left_batches", 0);
	return n > 0 ? (uint64_t)n : 0;
}

/* One line per backend with something left, to out. */
static void what_is_left(const json_t *doc, struct rbuf *out)
{
	size_t i;
	json_t *b;
	json_array_foreach(json_object_get(doc, "backends"), i, b) {
		int64_t p = rjson_get_int(b, "pending_batches", 0), h = rjson_get_int(b, "held_batches", 0);
		const char *err = rjson_get_str(b, "last_error", "");
		if (!p && !h)
			continue;
		char age[32];
		human_age(rjson_get_int(b, "oldest_age_seconds", 0), age, sizeof(age));
		rbuf_appendf(out, "  backend '%s' (%s): %" PRId64 " %s pending, %" PRId64 " held, oldest %s",
			     shown(rjson_get_str(b, "name", "?")), shown(rjson_get_str(b, "state", "?")), p,
			     relay_plural((uint64_t)p, "batch", "batches"), h, age);
		if (*err)
			rbuf_appendf(out, "; last error: %s", shown(err));
		rbuf_appendc(out, '\n');
	}
}

/* Whether pid is gone (or a zombie waiting for its parent). */
static int exited(long pid)
{
	char path[64], buf[512];
	if (kill((pid_t)pid, 0) < 0 && errno == ESRCH)
		return 1;
	snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return 1;
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	const char *p = strrchr(buf, ')');
	return p && p[1] == ' ' && p[2] == 'Z';
}

/* SIGTERM to relayd, then wait for it to exit: 0, or 1 after saying why. */
static int stop_relayd(const struct ctl *c, long pid, struct rbuf *out)
{
	if (pid <= 0 || relayd_pid(c) != pid) {
		fprintf(stderr, "relayctl: relayd's pid %ld is not the relayd of '%s' any more: not stopping it\n", pid,
			c->cfg.data_dir);
		return 1;
	}
	if (kill((pid_t)pid, SIGTERM) < 0) {
		fprintf(stderr, "relayctl: cannot send SIGTERM to relayd (pid %ld): %s\n", pid, strerror(errno));
		return 1;
	}
	uint64_t until = mono_ms() + STOP_WAIT_MS;
	while (!exited(pid)) {
		if (mono_ms() > until) {
			fprintf(stderr, "relayctl: relayd (pid %ld) has not exited %d s after SIGTERM\n", pid,
				STOP_WAIT_MS / 1000);
			return 1;
		}
		sleep_ms(50);
	}
	if (!c->json)
		rbuf_appendf(out, "relayd (pid %ld) stopped\n", pid);
	/* A write may have come between the last look and the signal: it is
	 * on disk and goes out at the next start. Say so. */
	struct wal *w;
	if (open_queue(c, WAL_F_RDONLY, &w) == 0) {
		uint64_t left = 0;
		for (size_t i = 0; i < c->cfg.nbackends; i++) {
			struct wal_backend_stat st;
			memset(&st, 0, sizeof(st));
			if (wal_backend_stat(w, c->cfg.backends[i].name, &st) == 0)
				left += st.pending_batches + st.held_batches;
		}
		wal_close(w);
		if (left && !c->json)
			rbuf_appendf(out, "%" PRIu64 " %s after the queues were empty: %s on disk and "
				     "delivered when relayd starts again\n",
				     left, left == 1 ? "batch came" : "batches came", left == 1 ? "it is" : "they are");
	}
	return 0;
}

int cmd_drain(const struct ctl *c)
{
	int undrain = strcmp(c->cmd->name, "undrain") == 0;
	int wait = c->wait || c->stop || c->timeout_ms;
	if (undrain && wait) {
		fprintf(stderr, "relayctl: undrain takes no --wait, --timeout or --stop\n");
		return 2;
	}
	json_t *doc;
	if (ask_drain(c, undrain ? "off" : "on", &doc))
		return 1;
	long pid = (long)rjson_get_int(doc, "pid", 0);
	struct rbuf out = RBUF_INIT;
	int rc = 0;

	if (undrain) {
		if (c->json)
			put_json_line(&out, json_incref(doc));
		else
			rbuf_appendf(&out, "relayd (pid %ld) is no longer draining: /health says '%s' again\n", pid,
				     shown(rjson_get_str(doc, "status", "?")));
		goto done;
	}
	if (!c->json) {
		rbuf_appendf(&out, "relayd (pid %ld) is draining: /health answers 503 \"draining\", so a load balancer "
			     "takes it out of the write pool; writes that still come are accepted and delivered\n", pid);
		rbuf_appendf(&out, "%" PRIu64 " %s left to deliver\n", left_of(doc),
			     relay_plural(left_of(doc), "batch", "batches"));
		what_is_left(doc, &out);
		flush_out(&out);
	}
	if (!wait) {
		if (!c->json)
			rbuf_appendf(&out, "'relayctl drain --wait' waits until nothing is left, 'relayctl undrain' ends "
				     "the drain; a restart of relayd ends it too\n");
		else
			put_json_line(&out, json_incref(doc));
		goto done;
	}
	uint64_t start = mono_ms();
	while (left_of(doc) > 0 && json_is_true(json_object_get(doc, "draining"))) {
		if (c->timeout_ms && mono_ms() - start >= c->timeout_ms)
			break;
		sleep_ms(POLL_MS);
		json_decref(doc);
		if (ask_drain(c, "status", &doc)) {
			rbuf_release(&out);
			return 1;
		}
	}
	uint64_t left = left_of(doc);
	int drained = left == 0;
	if (!json_is_true(json_object_get(doc, "draining"))) {
		fprintf(stderr, "relayctl: the drain was cancelled (relayctl undrain) before the queues were empty\n");
		rc = 1;
		goto done;
	}
	if (!drained) {
		char t[32];
		human_age((int64_t)((mono_ms() - start) / 1000), t, sizeof(t));
		struct rbuf msg = RBUF_INIT;
		rbuf_appendf(&msg, "relayctl: timed out after %s: %" PRIu64 " %s left to deliver\n", t, left,
			     relay_plural(left, "batch", "batches"));
		what_is_left(doc, &msg);
		fwrite(msg.data, 1, msg.len, stderr);
		rbuf_release(&msg);
		if (c->json)
			put_json_line(&out, json_incref(doc));
		rc = 1;
		goto done;
	}
	if (!c->json) {
		int64_t w = rjson_get_int(doc, "writes_since", 0);
		rbuf_appendf(&out, "drained: every backend's queue is empty (nothing pending, nothing held; dead "
			     "letters not counted)\n");
		if (w)
			rbuf_appendf(&out, "%" PRId64 " %s during the drain (a load balancer that had not "
				     "noticed yet); all delivered\n",
				     w, w == 1 ? "write came" : "writes came");
	}
	if (c->stop) {
		flush_out(&out);
		rc = stop_relayd(c, pid, &out);
		json_object_set_new(doc, "stopped", json_boolean(rc == 0));
	} else if (!c->json) {
		rbuf_appendf(&out, "stop relayd now (systemctl stop relayd), or 'relayctl undrain' to take writes again\n");
	}
	if (c->json)
		put_json_line(&out, json_incref(doc));
done:
	flush_out(&out);
	rbuf_release(&out);
	json_decref(doc);
	return rc;
}
