/*
 * config_derived: what follows from a loaded configuration: whether two
 * backends or UDP listeners are configured alike (a reload keeps those
 * running), the LMDB map size, the memory ceiling, the line-protocol
 * flags, and whether the file exposes secrets to every user.
 */
#include "relay/base/config_internal.h"
#include "relay/base/lineproto.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>

/* Whether the values of every key of tab are the same in a and b. A URL or
 * an address compares as written: its parsed parts follow from it. */
static int fields_equal(const struct key_spec *tab, size_t n, const void *a, const void *b)
{
	for (size_t i = 0; i < n; i++) {
		const struct key_spec *k = &tab[i];
		const void *fa = (const char *)a + k->off, *fb = (const char *)b + k->off;
		switch (k->type) {
		case KT_STRING:
		case KT_LOG_LEVEL:
		case KT_LOG_OUTPUT:
		case KT_HOSTPORT:
		case KT_URL:
		case KT_NAME:
		case KT_NAMES: {
			const char *sa = *(char *const *)fa, *sb = *(char *const *)fb;
			if (!sa != !sb || (sa && strcmp(sa, sb) != 0))
				return 0;
			break;
		}
		case KT_SIZE:
		case KT_DURATION:
		case KT_SECONDS:
			if (*(const uint64_t *)fa != *(const uint64_t *)fb)
				return 0;
			break;
		case KT_UINT32:
			if (*(const uint32_t *)fa != *(const uint32_t *)fb)
				return 0;
			break;
		case KT_ENUM:
		case KT_PRECISION:
			if (*(const int *)fa != *(const int *)fb)
				return 0;
			break;
		case KT_SECTION:
		case KT_LIST:
			break;
		}
	}
	return 1;
}

int config_backend_equal(const struct relay_backend_config *a, const struct relay_backend_config *b)
{
	return fields_equal(cfg_backend_keys, cfg_nbackend_keys, a, b);
}

int config_udp_equal(const struct relay_udp_config *a, const struct relay_udp_config *b)
{
	return fields_equal(cfg_udp_keys, cfg_nudp_keys, a, b);
}

uint64_t config_map_need(const struct relay_config *cfg)
{
	uint64_t total = 64 * MIB;

	/* Saturate: limits in the exabytes are legal to write, and a wrapped
	 * sum would hand LMDB a tiny map. */
	for (size_t i = 0; i < cfg->nbackends; i++) {
		uint64_t b = cfg->backends[i].max_bytes;
		if (b > UINT64_MAX / 2 || 2 * b > UINT64_MAX - total)
			return UINT64_MAX;
		total += 2 * b;
	}
	return total;
}

/*
 * The map is fixed from the queue's open until a restart, but a reload may
 * add backends. Derived, it is therefore sized for every backend the queue
 * can hold (RELAY_MAX_BACKENDS) at the largest limit configured, so that a
 * reload adding backends within the limits in force needs no more room.
 * That costs address space only, not disk or memory: relayd opens LMDB
 * without MDB_WRITEMAP (wal/wal.c, for durability), and then LMDB neither
 * extends the file to the map size (it does so only with MDB_WRITEMAP) nor
 * touches the pages beyond what is used: the file grows as pages are
 * written, and the map's untouched part is reserved addresses. The
 * headroom is capped so that large limits stay far inside a 64-bit
 * process's address space (47 bits on x86-64, 39 bits on some arm64
 * kernels: 512 GiB), and never below what the limits need.
 */
#define MAP_HEADROOM_CAP (256ULL << 30)

uint64_t config_as_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_AS, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY)
		return UINT64_MAX;
	return (uint64_t)rl.rlim_cur;
}

/*
 * Under an address-space limit (ulimit -v, systemd's LimitAS=, limits.conf
 * "as") the headroom is what costs: a map of 256 GiB cannot be reserved
 * at all under a 4 GB limit, and mdb_env_open fails with ENOMEM. So the
 * headroom takes at most a quarter of the limit, leaving the rest to the
 * code, the libraries, the threads' stacks and malloc's arenas (each
 * thread's arena reserves 64 MiB of addresses on glibc); but never less
 * than the limits need, which relayd refuses to start without
 * (config_map_fits).
 */
uint64_t config_map_size_under(const struct relay_config *cfg, uint64_t as_limit)
{
	uint64_t need, largest = cfg->queue_max_bytes, room;

	if (cfg->queue_map_bytes)
		return cfg->queue_map_bytes;
	need = config_map_need(cfg);
	for (size_t i = 0; i < cfg->nbackends; i++)
		if (cfg->backends[i].max_bytes > largest)
			largest = cfg->backends[i].max_bytes;
	room = largest > (MAP_HEADROOM_CAP - 64 * MIB) / (2 * RELAY_MAX_BACKENDS)
	               ? MAP_HEADROOM_CAP
	               : 64 * MIB + 2 * RELAY_MAX_BACKENDS * largest;
	if (room > MAP_HEADROOM_CAP)
		room = MAP_HEADROOM_CAP;
	if (as_limit != UINT64_MAX && room > as_limit / 4)
		room = as_limit / 4;
	/* A 32-bit size_t cannot map this much: there, what is needed. */
	if ((uint64_t)SIZE_MAX < room)
		room = need;
	return need > room ? need : room;
}

uint64_t config_map_size(const struct relay_config *cfg)
{
	return config_map_size_under(cfg, config_as_limit());
}

int config_map_fits(const struct relay_config *cfg, uint64_t as_limit, char *why, size_t whylen)
{
	uint64_t map = config_map_size_under(cfg, as_limit);

	if (as_limit == UINT64_MAX || map < as_limit)
		return 1;
	snprintf(why, whylen,
	         "the queue's LMDB map needs %" PRIu64 " MiB of address space (%s) but the process may use only %" PRIu64
	         " MiB (RLIMIT_AS: ulimit -v, systemd's LimitAS=, limits.conf \"as\"): raise the limit, or lower %s",
	         map >> 20,
	         cfg->queue_map_bytes ? "queue.map_size" : "twice the backends' max_size plus 64 MiB", as_limit >> 20,
	         cfg->queue_map_bytes ? "queue.map_size" : "the backends' max_size");
	return 0;
}

int config_secrets_exposed(const struct relay_config *cfg, char *why, size_t whylen)
{
	const char *what = NULL;
	struct stat st;

	if (cfg->nauth_users)
		what = "auth.users passwords";
	else if (cfg->nauth_tokens)
		what = "auth.tokens";
	for (size_t i = 0; !what && i < cfg->nbackends; i++)
		if (cfg->backends[i].password || cfg->backends[i].token)
			what = "backend credentials";
	if (!what || !cfg->path || stat(cfg->path, &st) < 0 || !(st.st_mode & S_IROTH))
		return 0;
	snprintf(why, whylen, "%s holds %s and is readable by every user (mode %04o): chmod o-r %s",
	         cfg->path, what, (unsigned)(st.st_mode & 07777), cfg->path);
	return 1;
}

/* Saturating a + b: limits in the exabytes are legal to write. */
static uint64_t sat_add(uint64_t a, uint64_t b)
{
	return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

static uint64_t sat_mul(uint64_t a, uint64_t b)
{
	return b && a > UINT64_MAX / b ? UINT64_MAX : a * b;
}

uint64_t config_memory_ceiling(const struct relay_config *cfg)
{
	/* The fixed part: code, libraries, LMDB's reader table, the log and
	 * the loop's own buffers, with room to spare. */
	uint64_t total = 64 * MIB;

	total = sat_add(total, cfg->http_max_buffered_bytes);
	/* A TLS connection holds OpenSSL's state besides: 18.5 KiB measured
	 * idle (docs/performance.md); any connection may be a TLS one. */
	total = sat_add(total, sat_mul(cfg->http_max_connections,
	                               cfg->listen_https ? CONFIG_TLS_CONN_BYTES : CONFIG_CONN_BYTES));
	for (size_t i = 0; i < cfg->nbackends; i++)
		total = sat_add(total, sat_mul(cfg->backends[i].batch_max_bytes, CONFIG_ROUND_COPIES));
	for (size_t i = 0; i < cfg->nudp; i++)
		total = sat_add(total, sat_add(sat_mul(cfg->udp[i].batch_max_bytes, 2), 64 * 1024));
	return total;
}

unsigned config_lp_flags(const struct relay_config *cfg)
{
	for (size_t i = 0; i < cfg->nbackends; i++)
		if (cfg->backends[i].type == RELAY_API_V1)
			return LP_F_NO_UNSIGNED;
	return 0;
}
