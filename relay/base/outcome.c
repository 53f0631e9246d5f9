/*
 * outcome: the status-and-body -> fate table. Kept in one place so that
 * every rule is visible together and tested together (docs/influxdb.md:
 * peers that took every status as success, or retried a 500 "points
 * beyond retention policy" for ever, lost data or stalled).
 */
#include "relay/base/outcome.h"

#include <string.h>

/* Case-sensitive substring search in a non-terminated buffer. */
static int contains(const char *body, size_t len, const char *needle)
{
	size_t n = strlen(needle);
	if (!body || n > len)
		return 0;
	for (size_t i = 0; i + n <= len; i++)
		if (body[i] == needle[0] && memcmp(body + i, needle, n) == 0)
			return 1;
	return 0;
}

/* Body texts that mean "this data will never be accepted". */
static const char *const permanent_texts[] = {
	"partial write",
	"unable to parse",
	"field type conflict",
	"points beyond retention policy",
	"retention policy not found",
	"max-values-per-tag limit exceeded",
	"max-series-per-database limit exceeded",
};

/* Body texts that mean "overloaded, try again". Checked first: a 500
 * "cache-max-memory-size exceeded" must not be taken for a 500 that is
 * permanent. */
static const char *const transient_texts[] = {
	"cache-max-memory-size exceeded",
	"engine: cache maximum memory size exceeded",
	"timeout",
	"shard is disabled",
	"hinted handoff queue not empty",
};

enum outcome outcome_classify(int status, const char *body, size_t len)
{
	if (status == OUTCOME_STATUS_UNSENDABLE)
		return OUTCOME_DEAD;
	if (status == OUTCOME_STATUS_TLS_VERIFY || status == OUTCOME_STATUS_TLS_CONFIG)
		return OUTCOME_HOLD;
	if (status < 0 || status == 408 || status == 429)
		return OUTCOME_RETRY;
	if (status >= 200 && status < 300)
		return OUTCOME_DELIVERED;
	for (size_t i = 0; i < sizeof(transient_texts) / sizeof(transient_texts[0]); i++)
		if (contains(body, len, transient_texts[i]))
			return OUTCOME_RETRY;
	/* Texts decide only for InfluxDB's own 400/422/500 answers: a
	 * proxy's 502 page must never kill data. */
	if (status == 400 || status == 422 || status == 500) {
		for (size_t i = 0; i < sizeof(permanent_texts) / sizeof(permanent_texts[0]); i++)
			if (contains(body, len, permanent_texts[i]))
				return OUTCOME_DEAD;
	}
	if (status == 401 || status == 403)
		return OUTCOME_HOLD;
	if (status == 404)
		/* 1.x: "database not found"; 2.x: "bucket \"x\" not found". */
		return contains(body, len, "database not found") ||
		               (contains(body, len, "bucket") && contains(body, len, "not found"))
		       ? OUTCOME_NO_DATABASE : OUTCOME_HOLD;
	if (status == 413)
		return OUTCOME_SPLIT;
	if (status >= 400 && status < 500)
		return OUTCOME_DEAD;
	return OUTCOME_RETRY;
}

const char *outcome_name(enum outcome o)
{
	switch (o) {
	case OUTCOME_DELIVERED: return "delivered";
	case OUTCOME_RETRY: return "retry";
	case OUTCOME_HOLD: return "hold";
	case OUTCOME_DEAD: return "dead";
	case OUTCOME_SPLIT: return "split";
	case OUTCOME_NO_DATABASE: return "no-database";
	}
	return "?";
}
