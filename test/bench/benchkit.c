/*
 * benchkit.c: options, latencies, files and machine facts, formatting and
 * clocks for the benchmarks (see benchkit.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "benchkit.h"

const char *bench_name = "bench";

void bench_err(const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "%s: ", bench_name);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
}

/*---- options ----*/

int parse_uint(const char *s, unsigned min, unsigned max, unsigned *out)
{
	char *end;
	errno = 0;
	unsigned long v = strtoul(s, &end, 10);
	if (errno || end == s || *end || *s == '-' || v < min || v > max)
		return -1;
	*out = (unsigned)v;
	return 0;
}

/* A comma-separated list of 1..max_n numbers in [min, max]. */
int parse_uint_list(const char *s, unsigned min, unsigned max, unsigned *out, size_t max_n, size_t *n)
{
	char *copy = xstrdup(s), *save = NULL;
	int rc = 0;
	*n = 0;
	for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		if (*n == max_n || parse_uint(tok, min, max, &out[*n]) < 0) {
			rc = -1;
			break;
		}
		(*n)++;
	}
	free(copy);
	return rc == 0 && *n > 0 ? 0 : -1;
}

/* The first executable NAME in $PATH (malloc'd), or NULL. */
char *find_on_path(const char *name)
{
	const char *path = getenv("PATH");
	char *copy, *save = NULL, *found = NULL;
	if (!path)
		return NULL;
	copy = xstrdup(path);
	for (char *dir = strtok_r(copy, ":", &save); dir && !found; dir = strtok_r(NULL, ":", &save)) {
		char full[PATH_MAX];
		int n = snprintf(full, sizeof(full), "%s/%s", dir, name);
		if (n > 0 && n < (int)sizeof(full) && access(full, X_OK) == 0)
			found = xstrdup(full);
	}
	free(copy);
	return found;
}

/*---- latencies ----*/

void lat_push(struct lat_vec *l, uint64_t ns)
{
	if (l->n == l->cap) {
		l->cap = l->cap ? l->cap * 2 : 1024;
		l->v = xrealloc(l->v, l->cap * sizeof(*l->v));
	}
	l->v[l->n++] = ns;
}

void lat_append(struct lat_vec *dst, const struct lat_vec *src)
{
	for (size_t i = 0; i < src->n; i++)
		lat_push(dst, src->v[i]);
}

void lat_release(struct lat_vec *l)
{
	free(l->v);
	*l = (struct lat_vec){ 0 };
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return (x > y) - (x < y);
}

/* Nearest-rank percentile pct (1..100) in milliseconds; sorts l. -1 when empty. */
double lat_percentile_ms(struct lat_vec *l, unsigned pct)
{
	if (l->n == 0)
		return -1;
	qsort(l->v, l->n, sizeof(*l->v), cmp_u64);
	size_t rank = (l->n * pct + 99) / 100;
	return (double)l->v[rank ? rank - 1 : 0] / 1e6;
}

/*---- files and machine facts ----*/

/* out = dir/name. Returns 0, or -1 if it does not fit in PATH_MAX. */
int path_join(char out[PATH_MAX], const char *dir, const char *name)
{
	int n = snprintf(out, PATH_MAX, "%s/%s", dir, name);
	return n < 0 || n >= PATH_MAX ? -1 : 0;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st, (void)flag, (void)ftw;
	if (remove(path) < 0)
		bench_err("cannot remove '%s': %s\n", path, strerror(errno));
	return 0; /* keep going: remove as much as we can */
}

void remove_tree(const char *dir)
{
	if (nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS) < 0 && errno != ENOENT)
		bench_err("cannot walk '%s': %s\n", dir, strerror(errno));
}

int make_tmpdir(char *out, size_t len)
{
	const char *base = getenv("TMPDIR");
	int n = snprintf(out, len, "%s/%s.XXXXXX", base && *base ? base : "/tmp", bench_name);
	if (n < 0 || (size_t)n >= len - 64) {
		bench_err("TMPDIR too long\n");
		return -1;
	}
	if (!mkdtemp(out)) {
		bench_err("cannot create a directory like '%s': %s\n", out, strerror(errno));
		return -1;
	}
	return 0;
}

const char *fs_name(const char *path)
{
	struct statfs sf;
	if (statfs(path, &sf) < 0)
		return "unknown";
	switch ((unsigned long)sf.f_type) {
	case 0xEF53: return "ext2/3/4";
	case 0x58465342: return "xfs";
	case 0x9123683E: return "btrfs";
	case 0x01021994: return "tmpfs (fsync is free here: the numbers mean nothing)";
	case 0x794C7630: return "overlayfs";
	default: return "other";
	}
}

/*
 * Median time of a 4 KiB pwrite + fdatasync in dir, in ms (at most
 * FSYNC_PROBES samples or ~2 s). Returns -1 on error.
 */
double fdatasync_probe_ms(const char *dir)
{
	char path[PATH_MAX], page[4096];
	if (path_join(path, dir, "fsync-probe") < 0)
		return -1;
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -1;
	memset(page, 'x', sizeof(page));
	struct lat_vec lat = { 0 };
	uint64_t start = now_mono_ns();
	for (int i = 0; i < FSYNC_PROBES && now_mono_ns() - start < 2 * NS_PER_S; i++) {
		uint64_t t0 = now_mono_ns();
		if (pwrite(fd, page, sizeof(page), (off_t)i * (off_t)sizeof(page)) != (ssize_t)sizeof(page) ||
		    fdatasync(fd) < 0)
			break;
		lat_push(&lat, now_mono_ns() - t0);
	}
	double ms = lat_percentile_ms(&lat, 50);
	lat_release(&lat);
	if (close(fd) < 0 || unlink(path) < 0)
		return -1;
	return ms;
}

/* The three load averages from /proc/loadavg, or "unknown". */
const char *loadavg(char *out, size_t len)
{
	double a, b, c;
	FILE *f = fopen("/proc/loadavg", "r");
	snprintf(out, len, "unknown");
	if (f) {
		if (fscanf(f, "%lf %lf %lf", &a, &b, &c) == 3)
			snprintf(out, len, "%.2f %.2f %.2f", a, b, c);
		fclose(f);
	}
	return out;
}

const char *cpu_model(char *out, size_t len)
{
	char line[512];
	FILE *f = fopen("/proc/cpuinfo", "r");
	snprintf(out, len, "unknown");
	if (!f)
		return out;
	while (fgets(line, sizeof(line), f)) {
		const char *colon = strchr(line, ':');
		if (strncmp(line, "model name", 10) || !colon)
			continue;
		colon++;
		while (*colon == ' ' || *colon == '\t')
			colon++;
		snprintf(out, len, "%.*s", (int)strcspn(colon, "\n"), colon);
		break;
	}
	fclose(f);
	return out;
}

void print_machine_line(void)
{
	struct utsname u;
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	if (uname(&u) == 0)
		printf("- machine: %s %s %s, %ld CPUs online\n", u.sysname, u.release, u.machine, ncpu);
	else
		printf("- machine: %ld CPUs online\n", ncpu);
}

/*---- formatting ----*/

/* Format v with thousands separators ("1,234,567"), or "–" when negative. */
const char *fmt_count(double v, char *out, size_t len)
{
	char digits[32];
	if (v < 0)
		return "–";
	int n = snprintf(digits, sizeof(digits), "%.0f", v);
	size_t j = 0;
	for (int i = 0; i < n && j + 2 < len; i++) {
		if (i > 0 && (n - i) % 3 == 0)
			out[j++] = ',';
		out[j++] = digits[i];
	}
	out[j] = '\0';
	return out;
}

const char *fmt_fixed(double v, int prec, char *out, size_t len)
{
	if (v < 0)
		return "–";
	snprintf(out, len, "%.*f", prec, v);
	return out;
}

/*---- start gate ----*/

int gate_wait(struct gate *g)
{
	pthread_mutex_lock(&g->mu);
	while (g->state == 0)
		pthread_cond_wait(&g->cv, &g->mu);
	int s = g->state;
	pthread_mutex_unlock(&g->mu);
	return s;
}

void gate_open(struct gate *g, int state)
{
	pthread_mutex_lock(&g->mu);
	g->state = state;
	pthread_cond_broadcast(&g->cv);
	pthread_mutex_unlock(&g->mu);
}

/*---- clocks ----*/

void sleep_ns(uint64_t ns)
{
	struct timespec ts = { .tv_sec = (time_t)(ns / NS_PER_S), .tv_nsec = (long)(ns % NS_PER_S) };
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* CPU seconds this process has used so far. */
double self_cpu_s(void)
{
	struct timespec ts;
	if (clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts) < 0)
		return -1;
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* 100 * (after - before) / span, or -1 when either sample is missing. */
double cpu_pct(double before, double after, uint64_t span_ns)
{
	if (before < 0 || after < 0 || span_ns == 0)
		return -1;
	return 100 * (after - before) * 1e9 / (double)span_ns;
}

/*---- a run's failures ----*/

void note_bad(struct run_errors *e, const struct http_resp *r)
{
	if (e->bad_status++ == 0) {
		e->first_status = r->status;
		memcpy(e->first_body, r->body, sizeof(e->first_body));
	}
}

void note_failure(struct run_errors *e, const char *what)
{
	if (e->transport++ == 0)
		snprintf(e->first_failure, sizeof(e->first_failure), "%s", what);
}

void errors_merge(struct run_errors *dst, const struct run_errors *src)
{
	if (src->bad_status && !dst->bad_status) {
		dst->first_status = src->first_status;
		memcpy(dst->first_body, src->first_body, sizeof(dst->first_body));
	}
	if (src->transport && !dst->transport)
		memcpy(dst->first_failure, src->first_failure, sizeof(dst->first_failure));
	dst->bad_status += src->bad_status;
	dst->transport += src->transport;
	dst->mismatches += src->mismatches;
}
