/* backoff: see backoff.h. */
#include "relay/base/backoff.h"

uint64_t backoff_full_jitter(uint32_t attempt, uint64_t base_ms, uint64_t cap_ms, uint64_t min_ms, uint64_t rnd)
{
	uint64_t ceil = base_ms ? base_ms : 1;
	/* Double without overflow until the cap is reached. */
	for (uint32_t i = 0; i < attempt && ceil < cap_ms; i++)
		ceil = ceil > cap_ms / 2 ? cap_ms : ceil * 2;
	if (ceil > cap_ms)
		ceil = cap_ms;
	/* ceil + 1 would wrap to 0 for a cap of UINT64_MAX ms. */
	uint64_t d = ceil == UINT64_MAX ? rnd : rnd % (ceil + 1);
	if (d < min_ms)
		d = min_ms;
	return d > cap_ms ? cap_ms : d;
}
