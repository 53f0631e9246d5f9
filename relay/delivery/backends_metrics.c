/*
 * backends_metrics: the delivery worker's families of /metrics
 * (docs/monitoring.md, "From the delivery worker"), written from the
 * counters of backends_stats: the workers a reload stopped plus the one
 * running, so that no counter goes back. Each family once, its samples
 * one per backend (and per label value) before the next family begins.
 */
#include <stdio.h>
#include <stdlib.h>

#include "relay/base/metrics.h"
#include "relay/delivery/backends.h"

/* A plain counter: one sample per backend, from the field at offset off. */
struct counter_family {
	const char *name;
	const char *help;
	size_t off;
};

#define STAT_OFF(f) offsetof(struct replay_stats, f)

static const struct counter_family counters[] = {
	{ "relayd_backend_delivered_batches_total", "Batches the backend accepted (2xx).",
	  STAT_OFF(delivered_batches) },
	{ "relayd_backend_delivered_points_total", "Points of the batches the backend accepted.",
	  STAT_OFF(delivered_points) },
	{ "relayd_backend_delivered_bytes_total", "Line-protocol bytes of the batches the backend accepted.",
	  STAT_OFF(delivered_bytes) },
};

static const struct counter_family counters_after[] = {
	{ "relayd_backend_dead_lettered_batches_total", "Batches moved to the dead-letter queue.",
	  STAT_OFF(dead_batches) },
	{ "relayd_backend_splits_total", "Batches split in halves after a 413.", STAT_OFF(splits) },
	{ "relayd_backend_corrupt_records_total", "Queue records that did not decode, moved aside.",
	  STAT_OFF(corrupt_records) },
};

static uint64_t field(const struct replay_stats *s, size_t off)
{
	return *(const uint64_t *)(const void *)((const char *)s + off);
}

static void write_counters(struct rbuf *out, const struct relay_config *cfg, const struct replay_stats *st,
                           const struct counter_family *fams, size_t nfams)
{
	char labels[WAL_NAME_MAX * 2 + 64];
	for (size_t f = 0; f < nfams; f++) {
		prom_family(out, fams[f].name, "counter", fams[f].help);
		for (size_t i = 0; i < cfg->nbackends; i++)
			prom_u64(out, fams[f].name, prom_labels(labels, sizeof(labels), "backend", cfg->backends[i].name, NULL),
				 field(&st[i], fams[f].off));
	}
}

void backends_metrics(const struct backends *bs, const struct relay_config *cfg, const int *ids, struct rbuf *out)
{
	/* A backend's name is at most WAL_NAME_MAX bytes, twice that once
	 * escaped: the labels never get cut. */
	char labels[WAL_NAME_MAX * 2 + 64];
	if (!cfg->nbackends)
		return;
	struct replay_stats *st = xcalloc(cfg->nbackends, sizeof(*st));
	for (size_t i = 0; i < cfg->nbackends; i++)
		backends_stats(bs, ids[i], &st[i]);

	write_counters(out, cfg, st, counters, RELAY_ARRAY_SIZE(counters));

	const char *name = "relayd_backend_writes_total";
	prom_family(out, name, "counter", "Write requests answered, by what the answer meant.");
	for (size_t i = 0; i < cfg->nbackends; i++)
		for (int o = 0; o < REPLAY_NOUTCOMES; o++)
			prom_u64(out, name, prom_labels(labels, sizeof(labels), "backend", cfg->backends[i].name, "outcome",
							replay_outcome_label(o), NULL), st[i].writes[o]);

	name = "relayd_backend_retries_total";
	prom_family(out, name, "counter", "Writes to be sent again (and failed /ping probes), by why.");
	for (size_t i = 0; i < cfg->nbackends; i++)
		for (int r = 0; r < REPLAY_RETRY_NREASONS; r++)
			prom_u64(out, name, prom_labels(labels, sizeof(labels), "backend", cfg->backends[i].name, "reason",
							replay_retry_reason_name((enum replay_retry_reason)r), NULL),
				 st[i].retry_reasons[r]);

	write_counters(out, cfg, st, counters_after, RELAY_ARRAY_SIZE(counters_after));

	/* The rate limit as configured (the worker applies a reload's at
	 * once: replay_set_rate), and the time writes waited for it. */
	name = "relayd_backend_max_rate_points_per_second";
	prom_family(out, name, "gauge", "The backend's max_rate: points sent per second at most; 0 = no limit.");
	for (size_t i = 0; i < cfg->nbackends; i++)
		prom_u64(out, name, prom_labels(labels, sizeof(labels), "backend", cfg->backends[i].name, NULL),
			 cfg->backends[i].max_rate);
	name = "relayd_backend_max_rate_bytes_per_second";
	prom_family(out, name, "gauge", "The backend's max_rate_bytes: bytes sent per second at most; 0 = no limit.");
	for (size_t i = 0; i < cfg->nbackends; i++)
		prom_u64(out, name, prom_labels(labels, sizeof(labels), "backend", cfg->backends[i].name, NULL),
			 cfg->backends[i].max_rate_bytes);
	name = "relayd_backend_throttled_seconds_total";
	prom_family(out, name, "counter", "Time writes waited for the rate limit's tokens (max_rate).");
	for (size_t i = 0; i < cfg->nbackends; i++)
		prom_f64(out, name, prom_labels(labels, sizeof(labels), "backend", cfg->backends[i].name, NULL),
			 (double)st[i].throttled_ms / 1000.0);

	name = "relayd_backend_delivery_latency_seconds";
	prom_family(out, name, "histogram", "Per delivered batch, from its acceptance to the 2xx that delivered it.");
	for (size_t i = 0; i < cfg->nbackends; i++)
		prom_histogram(out, name, prom_labels(labels, sizeof(labels), "backend", cfg->backends[i].name, NULL),
			       &st[i].delivery_latency);

	name = "relayd_backend_request_duration_seconds";
	prom_family(out, name, "histogram", "Per write request, from sending it to its answer.");
	for (size_t i = 0; i < cfg->nbackends; i++)
		prom_histogram(out, name, prom_labels(labels, sizeof(labels), "backend", cfg->backends[i].name, NULL),
			       &st[i].request_duration);
	free(st);
}
