/*
 * fuzz_config: feed arbitrary bytes to config_load_buffer. Besides crashes
 * and leaks it checks the contract: a success satisfies every documented
 * invariant of struct relay_config, and a failure leaves one printable line
 * that starts with the file name and nothing to release (the TOML hint names the file first too).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relay/base/config.h"
#include "relay/base/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_loaded(const struct relay_config *cfg)
{
	relay_assert(strcmp(cfg->path, "fuzz.yaml") == 0);
	relay_assert(cfg->data_dir && *cfg->data_dir);
	relay_assert(cfg->log_level && cfg->listen_http && cfg->listen_http_host);
	relay_assert(cfg->listen_http_port != 0);
	relay_assert(cfg->http_max_connections >= 1);
	relay_assert(cfg->queue_max_bytes >= 1024 * 1024);
	relay_assert(cfg->queue_retry_after_s >= 1);
	relay_assert(cfg->queue_max_commit_batches >= 1 && cfg->queue_max_commit_batches <= 65536);
	relay_assert(cfg->nbackends >= 1 && cfg->nbackends <= RELAY_MAX_BACKENDS);
	for (size_t i = 0; i < cfg->nbackends; i++) {
		const struct relay_backend_config *b = &cfg->backends[i];
		size_t plen = strlen(b->path_prefix);
		relay_assert(b->name && b->url && b->host && *b->host);
		relay_assert(strlen(b->name) >= 1 && strlen(b->name) <= 64);
		relay_assert(b->port != 0);
		relay_assert(plen == 0 || (b->path_prefix[0] == '/' && b->path_prefix[plen - 1] != '/'));
		relay_assert(b->max_bytes >= 1024 * 1024);
		relay_assert(b->timeout_ms >= 10 && b->connect_timeout_ms >= 10);
		relay_assert(b->batch_max_bytes >= 1024 && b->batch_max_lines >= 1);
		relay_assert(b->retry_min_ms >= 10 && b->retry_min_ms <= b->retry_max_ms);
		relay_assert(b->on_database_not_found == RELAY_DB_HOLD ||
		             b->on_database_not_found == RELAY_DB_CREATE ||
		             b->on_database_not_found == RELAY_DB_DEAD_LETTER);
		relay_assert(b->gzip == 0 || b->gzip == 1);
		for (size_t j = 0; j < i; j++)
			relay_assert(strcmp(cfg->backends[j].name, b->name) != 0);
	}
	relay_assert(config_map_size(cfg) >= 64 * 1024 * 1024 || cfg->queue_map_bytes);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct relay_config cfg;
	char err[512];

	if (config_load_buffer("fuzz.yaml", (const char *)data, size, &cfg, err, sizeof(err)) == 0) {
		check_loaded(&cfg);
		config_release(&cfg);
		return 0;
	}
	/* "fuzz.yaml:LINE:COL: ...", or the TOML hint, "fuzz.yaml looks like ..." */
	relay_assert(strncmp(err, "fuzz.yaml:", 10) == 0 || strncmp(err, "fuzz.yaml looks like ", 21) == 0);
	for (const char *p = err; *p; p++)
		relay_assert((unsigned char)*p >= 0x20 && *p != 0x7f);
	relay_assert(cfg.path == NULL && cfg.backends == NULL && cfg.nbackends == 0);
	return 0;
}
