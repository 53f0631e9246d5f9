/*
 * replay_stats: the delivery worker's counters (replay.h) and the names
 * their labels take on /metrics. Pure: no clock, no I/O; the worker
 * counts on its loop thread, backends.c adds up the workers a reload
 * restarted.
 */
#include <string.h>

#include "relay/delivery/replay.h"

void replay_stats_init(struct replay_stats *s)
{
	memset(s, 0, sizeof(*s));
	relay_histogram_init(&s->delivery_latency, relay_buckets_delivery_s, relay_buckets_delivery_n);
	relay_histogram_init(&s->request_duration, relay_buckets_fast_s, relay_buckets_fast_n);
}

void replay_stats_add(struct replay_stats *into, const struct replay_stats *from)
{
	into->posts += from->posts;
	into->delivered_batches += from->delivered_batches;
	into->delivered_points += from->delivered_points;
	into->delivered_bytes += from->delivered_bytes;
	for (size_t i = 0; i < REPLAY_NOUTCOMES; i++)
		into->writes[i] += from->writes[i];
	into->retries += from->retries;
	for (size_t i = 0; i < REPLAY_RETRY_NREASONS; i++)
		into->retry_reasons[i] += from->retry_reasons[i];
	into->dead_batches += from->dead_batches;
	into->splits += from->splits;
	into->corrupt_records += from->corrupt_records;
	into->throttled_ms += from->throttled_ms;
	relay_histogram_merge(&into->delivery_latency, &from->delivery_latency);
	relay_histogram_merge(&into->request_duration, &from->request_duration);
}

enum replay_retry_reason replay_retry_reason(int status, const char *body, size_t len)
{
	switch (status) {
	case OUTCOME_STATUS_CONNECT_FAILED: return REPLAY_RETRY_CONNECT;
	case OUTCOME_STATUS_TIMEOUT: return REPLAY_RETRY_TIMEOUT;
	case OUTCOME_STATUS_RESET: return REPLAY_RETRY_RESET;
	case OUTCOME_STATUS_PROTOCOL: return REPLAY_RETRY_PROTOCOL;
	case 408:
	case 429:
		return REPLAY_RETRY_THROTTLED;
	default:
		break;
	}
	if (status < 0)
		return REPLAY_RETRY_OTHER; /* never sent (OUTCOME_STATUS_UNSENDABLE) */
	/* outcome.c keeps the one list of overload texts: a 400 is RETRY
	 * only when its body holds one of them (every other 400 is DEAD),
	 * so asking about a 400 with this body asks about the texts alone. */
	if (outcome_classify(400, body, len) == OUTCOME_RETRY)
		return REPLAY_RETRY_OVERLOADED;
	if (status >= 500 && status < 600)
		return REPLAY_RETRY_SERVER_ERROR;
	return REPLAY_RETRY_OTHER;
}

const char *replay_retry_reason_name(enum replay_retry_reason r)
{
	static const char *const names[REPLAY_RETRY_NREASONS] = {
		[REPLAY_RETRY_CONNECT] = "connect",     [REPLAY_RETRY_TIMEOUT] = "timeout",
		[REPLAY_RETRY_RESET] = "reset",         [REPLAY_RETRY_PROTOCOL] = "protocol",
		[REPLAY_RETRY_THROTTLED] = "throttled", [REPLAY_RETRY_OVERLOADED] = "overloaded",
		[REPLAY_RETRY_SERVER_ERROR] = "server_error", [REPLAY_RETRY_OTHER] = "other",
	};
	return (unsigned)r < REPLAY_RETRY_NREASONS ? names[r] : "other";
}

const char *replay_outcome_label(int o)
{
	static const char *const names[REPLAY_NOUTCOMES] = {
		[OUTCOME_DELIVERED] = "delivered", [OUTCOME_RETRY] = "retry", [OUTCOME_HOLD] = "hold",
		[OUTCOME_DEAD] = "dead",           [OUTCOME_SPLIT] = "split", [OUTCOME_NO_DATABASE] = "no_database",
	};
	return o >= 0 && o < REPLAY_NOUTCOMES ? names[o] : "?";
}
