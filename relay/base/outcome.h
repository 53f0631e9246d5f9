/*
 * outcome: what a backend's answer to a write means for the batch, decided
 * from the status AND the body (docs/influxdb.md: InfluxDB 1.x answers
 * some permanent errors with 5xx and some transient ones with 500). One
 * function, one table, tested row by row. No I/O.
 */
#ifndef RELAY_OUTCOME_H
#define RELAY_OUTCOME_H

#include <stddef.h>

enum outcome {
	OUTCOME_DELIVERED = 0, /* 2xx: the batch leaves the queue */
	OUTCOME_RETRY,         /* may succeed later: back off and resend */
	OUTCOME_HOLD,          /* needs an operator (credentials, database): keep, retry slowly, say so loudly */
	OUTCOME_DEAD,          /* will never succeed: dead-letter it, move on */
	OUTCOME_SPLIT,         /* too large: split in halves and resend */
	OUTCOME_NO_DATABASE,   /* 404 database not found: the backend's policy decides (hold, create, dead-letter) */
};

/* Transport failures, passed instead of an HTTP status. */
#define OUTCOME_STATUS_CONNECT_FAILED  (-1) /* refused, unreachable, DNS */
#define OUTCOME_STATUS_TIMEOUT         (-2) /* connect or response timeout */
#define OUTCOME_STATUS_RESET           (-3) /* connection reset or closed mid-response */
#define OUTCOME_STATUS_PROTOCOL        (-4) /* unparseable response */
#define OUTCOME_STATUS_UNSENDABLE      (-5) /* no request can carry the batch (backend_api.h): never sent */
#define OUTCOME_STATUS_TLS_VERIFY      (-6) /* a certificate failed verification (chain, expiry, name),
                                             * or the server refused ours */
#define OUTCOME_STATUS_TLS_CONFIG      (-7) /* the backend's TLS context cannot be made (a CA file
                                             * missing, a key that does not match): never sent */

/*
 * Classify a response: status is the HTTP status (or one of the
 * OUTCOME_STATUS_* values), body its first bytes (may be NULL). The
 * rules, in order:
 *   OUTCOME_STATUS_UNSENDABLE -> DEAD (sending it again changes nothing);
 *   OUTCOME_STATUS_TLS_VERIFY, OUTCOME_STATUS_TLS_CONFIG -> HOLD (only a
 *   new certificate, CA or setting helps: a handshake that timed out or
 *   was reset is OUTCOME_STATUS_TIMEOUT or _RESET, and retried);
 *   other transport failures, 408, 429 -> RETRY; 2xx -> DELIVERED;
 *   body "cache-max-memory-size exceeded" or other overload text -> RETRY;
 *   body "partial write", "unable to parse", "field type conflict",
 *   "points beyond retention policy", "retention policy not found",
 *   series/values limits -> DEAD (for 400, 422 and 500: some versions send
 *   them as 500);
 *   401, 403 -> HOLD; 404 with "database not found" -> NO_DATABASE;
 *   404 otherwise (a wrong URL prefix) -> HOLD; 413 -> SPLIT;
 *   other 4xx -> DEAD; 5xx -> RETRY; anything else -> RETRY.
 */
enum outcome outcome_classify(int status, const char *body, size_t len);

/* "delivered", "retry", "hold", "dead", "split", "no-database". */
const char *outcome_name(enum outcome o);

#endif
