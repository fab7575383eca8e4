/*
 * tsan_ring.c - the ring's two-thread stress run (tests/unit/ring_stress.h) under
 * ThreadSanitizer, from a plain main() since criterion cannot run under TSan. Exits 0
 * when every item arrived in order and intact; TSan makes it exit non-zero on a race.
 */
#include "../unit/ring_stress.h"

#include <stdio.h>

int main(void)
{
	static struct ring_stress s;
	const size_t capacities[] = {2, 8, 64};

	for (size_t i = 0; i < sizeof(capacities) / sizeof(capacities[0]); i++) {
		if (ring_stress_run(&s, capacities[i], 200000) != 0) {
			fprintf(stderr, "tsan_ring: could not start the threads\n");
			return 1;
		}
		if (s.bad != 0 || s.received != s.items) {
			fprintf(stderr,
			        "tsan_ring: capacity %zu: %llu bad, %llu of %llu received\n",
			        capacities[i], (unsigned long long)s.bad,
			        (unsigned long long)s.received, (unsigned long long)s.items);
			return 1;
		}
	}
	printf("tsan_ring: ok\n");
	return 0;
}
