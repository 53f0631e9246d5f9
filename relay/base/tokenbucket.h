/*
 * tokenbucket: a token bucket on a caller's millisecond clock, for pacing
 * delivery (a backend's max_rate, max_rate_bytes and rate_burst). Pure:
 * no clock of its own, no I/O; the caller passes its "now" (the replay
 * worker passes uv_now()).
 *
 * The bucket holds up to rate x burst tokens and fills at rate tokens per
 * second; it starts full. A cost c may go when the bucket holds at least
 * min(c, capacity): so a cost larger than the whole burst still goes,
 * once the bucket is full, and the bucket goes into debt (negative
 * tokens) that later costs wait to repay. The average stays the rate, and
 * nothing is ever refused for being too large. A rate of 0 means no limit:
 * every cost goes at once.
 */
#ifndef RELAY_TOKENBUCKET_H
#define RELAY_TOKENBUCKET_H

#include <stdint.h>

struct token_bucket {
	double rate;      /* tokens per second; 0 = no limit */
	double capacity;  /* rate x burst, at least 1 token */
	double tokens;    /* now; below 0 = debt */
	uint64_t last_ms; /* the clock when tokens was last brought up to date */
};

/* Set up b with rate tokens/s (0 = no limit) and burst_ms of them as its
 * capacity, full at now_ms. */
void token_bucket_init(struct token_bucket *b, uint64_t rate, uint64_t burst_ms, uint64_t now_ms);

/*
 * Change the rate and burst at now_ms, keeping the bucket's state: what
 * it held (or owed) up to now is counted at the old rate, then the tokens
 * are capped at the new capacity (a debt stays, repaid at the new rate).
 * From no limit to a limit, the bucket starts full.
 */
void token_bucket_set(struct token_bucket *b, uint64_t rate, uint64_t burst_ms, uint64_t now_ms);

/* Milliseconds from now_ms until cost may go (0: now). Changes nothing
 * but the refill up to now_ms. */
uint64_t token_bucket_wait_ms(struct token_bucket *b, uint64_t cost, uint64_t now_ms);

/* Take cost at now_ms (into debt if the bucket holds less). */
void token_bucket_take(struct token_bucket *b, uint64_t cost, uint64_t now_ms);

/* The tokens held at now_ms (negative: a debt). */
double token_bucket_tokens(struct token_bucket *b, uint64_t now_ms);

#endif
