/*
 * backend_api: how a queued batch is written to one backend, in the
 * backend's own API. Batches keep what the writer sent (db, rp, precision,
 * org, user/password or token); this turns that into the request target
 * and the Authorization header for a v1 (/write) or v2 (/api/v2/write)
 * server. Pure functions: no I/O, no logging.
 *
 * Translation (also in docs/architecture.md):
 *   v1 backend: /write?db=DB[&rp=RP]&precision=P
 *   v2 backend: /api/v2/write?bucket=DB[/RP][&org=ORG]&precision=P, where
 *               ORG is the backend's org, else the writer's; a batch in
 *               minutes or hours (v1-only precisions) must first be
 *               rescaled to seconds (backend_api_rescale and
 *               backend_api_scale_timestamps; replay_round.c does it).
 *   credentials: the backend's own (username/password, or token) when
 *               configured, else the writer's. A writer's "Token u:p"
 *               (InfluxDB 1.8's form) goes to a v1 server as Basic u:p,
 *               and a writer's user/password to a v2 server as
 *               "Token u:p"; credentials never go in the URL.
 *
 * What cannot be put in a request is refused, never sent mangled: every
 * query value is percent-encoded, Basic credentials are base64, and a
 * value that would go into a header as it is (a token) may not hold a
 * control byte, which could end the header line and start another header
 * or a request of its own. The door refuses such values; these checks keep
 * any that reach the queue another way (or the configuration) off the
 * wire.
 */
#ifndef RELAY_BACKEND_API_H
#define RELAY_BACKEND_API_H

#include <stdint.h>

#include "relay/base/config.h"
#include "relay/base/outcome.h"
#include "relay/base/util.h"
#include "wal/wal.h"

/* A value stored with the batch cannot go into a request (a precision code
 * relayd does not know, writer's credentials holding a control byte): the
 * batch can never be sent as it is; dead-letter it. */
#define BACKEND_API_EBATCH (-1)
/* The backend's own credentials (its configuration) cannot go into a
 * request: nothing is sent until the operator fixes the configuration. */
#define BACKEND_API_ECONFIG (-2)

/*
 * Append to target the request target (path and query) for writing batch
 * b to backend cfg, and to headers the Authorization header line (with
 * its CRLF) when there are credentials to send. The caller owns both
 * buffers. Returns 0, or BACKEND_API_EBATCH or BACKEND_API_ECONFIG with
 * the reason in err (never a secret; errlen may be 0); the buffers then
 * hold a partial request the caller discards.
 */
int backend_api_request(const struct relay_backend_config *cfg, const struct wal_batch *b, struct rbuf *target,
                        struct rbuf *headers, char *err, size_t errlen);

/*
 * Append the request target and Authorization header of InfluxDB 1.x's
 * "CREATE DATABASE" for b's database (POST, no body) for backend cfg
 * (on_database_not_found: create; v1 backends only, as the config checks).
 * Returns and fails as backend_api_request.
 */
int backend_api_create_database(const struct relay_backend_config *cfg, const struct wal_batch *b,
                                struct rbuf *target, struct rbuf *headers, char *err, size_t errlen);

/*
 * A queued statement (b->kind == WAL_KIND_STATEMENT) as InfluxDB 1.x's
 * /query for backend cfg: append the request target ({prefix}/query,
 * the v1 endpoint, also for a v2 backend through its v1-compatible API),
 * the Authorization header (the credential rules of a write: the
 * backend's own, else the writer's; a v2 backend takes Token, as for its
 * writes), and the form body "q=TEXT[&db=DB][&rp=RP]" (the text without
 * its last '\n'; db and rp only when not empty; every value
 * percent-encoded). The caller owns the buffers and sends the body as
 * application/x-www-form-urlencoded. Returns and fails as
 * backend_api_request.
 */
int backend_api_statement(const struct relay_backend_config *cfg, const struct wal_batch *b, struct rbuf *target,
                          struct rbuf *headers, struct rbuf *body, char *err, size_t errlen);

/*
 * What /query's answer to a statement (status, body[0..len)) means for it.
 * /query answers 200 when the statement failed too: its error is in the
 * JSON, {"results":[{"statement_id":0,"error":"..."}]} (or a top-level
 * "error"), read with jansson (relay/base/json.h). The rules:
 *   2xx without an "error" in the answer or in any result, or without a
 *     body -> DELIVERED;
 *   2xx with one: "database not found" -> NO_DATABASE (as a write's 404),
 *     any other -> DEAD (the statement will never succeed: "error
 *     parsing query", "retention policy already exists" with other
 *     settings, "not authorized", ...);
 *   2xx whose body is not JSON -> RETRY (a proxy's page, a cut answer:
 *     whether the statement ran cannot be told; it is idempotent);
 *   transport failures, 408, 429, 5xx -> RETRY (with the writes' backoff);
 *   OUTCOME_STATUS_UNSENDABLE and every other 4xx -> DEAD.
 * The error text, when there is one, goes to err[0..errlen) ("" else).
 */
enum outcome backend_api_statement_outcome(int status, const char *body, size_t len, char *err, size_t errlen);

/*
 * The databases a queued text creates, one per call: text[*at..len) is
 * read statement by statement (split at the semicolons outside quotes);
 * for the next "CREATE DATABASE name [WITH ...]" (keywords in any case,
 * name bare or double-quoted with \" and \\ escapes), name unquoted into
 * out[0..outlen), *at moved past that statement; returns 1. Returns 0
 * when no statement left creates one (a name that does not fit is
 * skipped). Start with *at = 0 and call until it returns 0.
 */
int backend_api_created_database(const char *text, size_t len, size_t *at, char *out, size_t outlen);

/*
 * The factor by which the timestamps of a batch in precision prec (enum
 * lp_precision) must be multiplied for backend cfg, and the precision they
 * are then in: 1 and prec, unless a v2 backend gets minutes or hours
 * (60 or 3600, and seconds).
 */
int64_t backend_api_rescale(const struct relay_backend_config *cfg, int prec, int *sent_prec);

/*
 * Append body (validated line protocol: every line ends with '\n' and its
 * last field is the timestamp) to out with every timestamp multiplied by
 * factor. Returns 0, or -1 if a timestamp would overflow int64 (out then
 * holds a partial copy the caller discards).
 */
int backend_api_scale_timestamps(const char *body, size_t len, int64_t factor, struct rbuf *out);

#endif
