/*
 * relayctl: look into relayd's queue. Opens the queue read-only (a short
 * read transaction per query, as mdb_stat does beside a live writer), so it
 * works while relayd runs and while it is stopped, and never blocks the
 * daemon. Commands: status [--json], dump BACKEND.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "relay/config.h"
#include "relay/lineproto.h"
#include "relay/util.h"
#include "wal/wal.h"

static void usage(FILE *f)
{
	fprintf(f,
		"usage: relayctl -c FILE COMMAND [ARGS]\n"
		"\n"
		"commands:\n"
		"  status [--json]   pending batches, points, bytes and age per backend\n"
		"  dump BACKEND      pending batches of BACKEND as JSON lines, in queue order\n"
		"\n"
		"  -c, --config FILE   relayd's configuration (to find data_dir and the backends)\n");
}

static int open_queue(const struct relay_config *cfg, struct wal **w)
{
	struct wal_options o = { 0, WAL_F_RDONLY };
	int rc = wal_open(cfg->data_dir, &o, w);
	if (rc == -ENOENT) {
		fprintf(stderr, "relayctl: data directory '%s' does not exist (has relayd run with this configuration?)\n",
			cfg->data_dir);
	} else if (rc == WAL_ENOTQUEUE) {
		fprintf(stderr, "relayctl: '%s' holds no relayd queue (has relayd run with this configuration?)\n",
			cfg->data_dir);
	} else if (rc == WAL_EVERSION) {
		fprintf(stderr, "relayctl: the queue in '%s' was written by an incompatible relayd version (this one reads format %d)\n",
			cfg->data_dir, WAL_FORMAT_VERSION);
	} else if (rc) {
		fprintf(stderr, "relayctl: cannot open queue in '%s': %s\n", cfg->data_dir, wal_strerror(rc));
	}
	return rc;
}

static int64_t age_seconds(int64_t accept_ns, int64_t now)
{
	if (!accept_ns)
		return 0;
	int64_t d = (now - accept_ns) / 1000000000LL;
	return d < 0 ? 0 : d;
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
	if (s < 120)
		snprintf(out, n, "%" PRId64 "s", s);
	else if (s < 7200)
		snprintf(out, n, "%" PRId64 "m%02" PRId64 "s", s / 60, s % 60);
	else
		snprintf(out, n, "%" PRId64 "h%02" PRId64 "m", s / 3600, (s % 3600) / 60);
}

static int cmd_status(const struct relay_config *cfg, int json)
{
	struct wal *w;
	int rc = open_queue(cfg, &w);
	if (rc)
		return 1;
	int64_t now = now_realtime_ns();
	struct rbuf out = RBUF_INIT;
	if (json)
		rbuf_append(&out, "{\"backends\":[", 13);
	else
		rbuf_appendf(&out, "%-20s %10s %12s %12s %10s %8s\n", "BACKEND", "BATCHES", "POINTS", "BYTES", "OLDEST", "DEAD");
	for (size_t i = 0; i < cfg->nbackends; i++) {
		struct wal_backend_stat st;
		rc = wal_backend_stat(w, cfg->backends[i].name, &st);
		if (rc == WAL_ENOBACKEND) {
			/* Configured but never opened by relayd: nothing queued. */
			memset(&st, 0, sizeof(st));
		} else if (rc) {
			fprintf(stderr, "relayctl: cannot read queue of backend '%s': %s\n", cfg->backends[i].name,
				wal_strerror(rc));
			wal_close(w);
			rbuf_release(&out);
			return 1;
		}
		int64_t age = age_seconds(st.oldest_accept_ns, now);
		if (json) {
			if (i)
				rbuf_appendc(&out, ',');
			rbuf_append(&out, "{\"name\":", 8);
			json_append_string(&out, cfg->backends[i].name, strlen(cfg->backends[i].name));
			rbuf_appendf(&out,
				     ",\"pending_batches\":%" PRIu64 ",\"pending_points\":%" PRIu64 ",\"pending_bytes\":%" PRIu64
				     ",\"oldest_age_seconds\":%" PRId64 ",\"dead_batches\":%" PRIu64 "}",
				     st.pending_batches, st.pending_points, st.pending_bytes, age, st.dead_batches);
		} else {
			char b[32], a[32];
			human_bytes(st.pending_bytes, b, sizeof(b));
			if (st.pending_batches)
				human_age(age, a, sizeof(a));
			else
				snprintf(a, sizeof(a), "-");
			rbuf_appendf(&out, "%-20s %10" PRIu64 " %12" PRIu64 " %12s %10s %8" PRIu64 "\n", cfg->backends[i].name,
				     st.pending_batches, st.pending_points, b, a, st.dead_batches);
		}
	}
	if (json)
		rbuf_append(&out, "]}\n", 3);
	fwrite(out.data, 1, out.len, stdout);
	rbuf_release(&out);
	wal_close(w);
	return 0;
}

static int cmd_dump(const struct relay_config *cfg, const char *backend)
{
	int known = 0;
	for (size_t i = 0; i < cfg->nbackends; i++)
		known |= strcmp(cfg->backends[i].name, backend) == 0;
	if (!known) {
		fprintf(stderr, "relayctl: unknown backend '%s' (not in %s)\n", backend, cfg->path);
		return 1;
	}
	struct wal *w;
	if (open_queue(cfg, &w))
		return 1;
	int id, rc = wal_backend_open(w, backend, &id);
	if (rc == WAL_ENOBACKEND) {
		wal_close(w);
		return 0; /* never used: nothing queued */
	}
	if (rc) {
		fprintf(stderr, "relayctl: cannot open queue of backend '%s': %s\n", backend, wal_strerror(rc));
		wal_close(w);
		return 1;
	}
	/* Read in slices, each its own short read transaction (never one
	 * long one: it would pin pages while relayd writes), paging by
	 * sequence number. */
	struct wal_batch b[64];
	size_t n;
	uint64_t last = 0;
	struct rbuf out = RBUF_INIT;
	int first = 1;
	for (;;) {
		rc = wal_read(w, id, last + 1, 64, 16u << 20, b, &n);
		if (rc) {
			fprintf(stderr, "relayctl: cannot read queue of backend '%s': %s\n", backend, wal_strerror(rc));
			break;
		}
		size_t shown = 0;
		for (size_t i = 0; i < n; i++) {
			if (!first && b[i].seq <= last) {
				wal_batch_release(&b[i]);
				continue;
			}
			first = 0;
			rbuf_reset(&out);
			rbuf_appendf(&out, "{\"seq\":%" PRIu64 ",\"db\":", b[i].seq);
			json_append_string(&out, b[i].db, strlen(b[i].db));
			rbuf_append(&out, ",\"rp\":", 6);
			json_append_string(&out, b[i].rp, strlen(b[i].rp));
			/* Who wrote it, never the secret: the user's name and
			 * whether a password or token came with it. */
			rbuf_append(&out, ",\"org\":", 7);
			json_append_string(&out, b[i].org, strlen(b[i].org));
			rbuf_append(&out, ",\"user\":", 8);
			json_append_string(&out, b[i].user, strlen(b[i].user));
			rbuf_appendf(&out, ",\"auth\":\"%s\"",
			             *b[i].token ? "token" : *b[i].user ? "password" : "none");
			rbuf_appendf(&out, ",\"precision\":\"%s\",\"lines\":%" PRIu32 ",\"bytes\":%zu,\"accept_ns\":%" PRId64 ",\"body\":",
				     lp_precision_name((enum lp_precision)b[i].precision), b[i].lines, b[i].body_len,
				     b[i].accept_ns);
			json_append_string(&out, b[i].body, b[i].body_len);
			rbuf_append(&out, "}\n", 2);
			fwrite(out.data, 1, out.len, stdout);
			last = b[i].seq;
			shown++;
			wal_batch_release(&b[i]);
		}
		if (n == 0 || shown == 0)
			break;
	}
	rbuf_release(&out);
	wal_close(w);
	return rc ? 1 : 0;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *config_path = NULL;
	int json = 0, ch;
	char err[1024];
	struct relay_config cfg;

	while ((ch = getopt_long(argc, argv, "+c:jh", opts, NULL)) != -1) {
		switch (ch) {
		case 'c': config_path = optarg; break;
		case 'j': json = 1; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (!config_path || optind >= argc) {
		usage(stderr);
		return 2;
	}
	const char *cmd = argv[optind++];
	/* Options may also follow the command: relayctl -c F status --json */
	for (int i = optind; i < argc; i++)
		if (strcmp(argv[i], "--json") == 0) {
			json = 1;
			memmove(&argv[i], &argv[i + 1], sizeof(char *) * (size_t)(argc - i));
			argc--;
			i--;
		}
	if (config_load(config_path, &cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "relayctl: %s\n", err);
		return 1;
	}
	int rc;
	if (strcmp(cmd, "status") == 0 && optind == argc) {
		rc = cmd_status(&cfg, json);
	} else if (strcmp(cmd, "dump") == 0 && optind + 1 == argc) {
		rc = cmd_dump(&cfg, argv[optind]);
	} else {
		fprintf(stderr, "relayctl: unknown command or wrong arguments: '%s'\n", cmd);
		usage(stderr);
		rc = 2;
	}
	config_release(&cfg);
	return rc;
}
