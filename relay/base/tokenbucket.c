/*
 * tokenbucket: see tokenbucket.h.
 */
#include "relay/base/tokenbucket.h"

#include <math.h>

static double capacity_of(uint64_t rate, uint64_t burst_ms)
{
	double c = (double)rate * (double)burst_ms / 1000.0;
	return c < 1.0 ? 1.0 : c;
}

/* Bring the tokens up to now_ms (a clock that goes back adds nothing). */
static void refill(struct token_bucket *b, uint64_t now_ms)
{
	if (now_ms > b->last_ms && b->rate > 0) {
		b->tokens += b->rate * (double)(now_ms - b->last_ms) / 1000.0;
		if (b->tokens > b->capacity)
			b->tokens = b->capacity;
	}
	if (now_ms > b->last_ms)
		b->last_ms = now_ms;
}

void token_bucket_init(struct token_bucket *b, uint64_t rate, uint64_t burst_ms, uint64_t now_ms)
{
	b->rate = (double)rate;
	b->capacity = capacity_of(rate, burst_ms);
	b->tokens = b->capacity;
	b->last_ms = now_ms;
}

void token_bucket_set(struct token_bucket *b, uint64_t rate, uint64_t burst_ms, uint64_t now_ms)
{
	if (!(b->rate > 0)) {
		token_bucket_init(b, rate, burst_ms, now_ms);
		return;
	}
	refill(b, now_ms);
	b->rate = (double)rate;
	b->capacity = capacity_of(rate, burst_ms);
	if (b->tokens > b->capacity)
		b->tokens = b->capacity;
	if (!(b->rate > 0))
		b->tokens = b->capacity;
}

uint64_t token_bucket_wait_ms(struct token_bucket *b, uint64_t cost, uint64_t now_ms)
{
	if (!(b->rate > 0) || !cost)
		return 0;
	refill(b, now_ms);
	double need = (double)cost < b->capacity ? (double)cost : b->capacity;
	if (b->tokens >= need)
		return 0;
	/* Rounded up: at the time given, the tokens are there. */
	double ms = ceil((need - b->tokens) * 1000.0 / b->rate);
	return ms < 1 ? 1 : ms > 1e15 ? (uint64_t)1e15 : (uint64_t)ms;
}

void token_bucket_take(struct token_bucket *b, uint64_t cost, uint64_t now_ms)
{
	if (!(b->rate > 0))
		return;
	refill(b, now_ms);
	b->tokens -= (double)cost;
}

double token_bucket_tokens(struct token_bucket *b, uint64_t now_ms)
{
	refill(b, now_ms);
	return b->tokens;
}
