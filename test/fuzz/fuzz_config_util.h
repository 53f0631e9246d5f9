/*
 * fuzz_config_util: the configurations the door's fuzz targets run under,
 * loaded once per process through the real loader. A built-in config that
 * does not load is a bug in the target: abort, so the fuzzer says so.
 */
#ifndef RELAY_FUZZ_CONFIG_UTIL_H
#define RELAY_FUZZ_CONFIG_UTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relay/base/config.h"

static inline void fuzz_load_config(const char *name, const char *yaml, struct relay_config *cfg)
{
	char err[512];
	if (config_load_buffer(name, yaml, strlen(yaml), cfg, err, sizeof(err))) {
		fprintf(stderr, "fuzz config: %s\n", err);
		abort();
	}
}

#endif
