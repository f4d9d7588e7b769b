/* FNV-1a hashing. */
#include "config.h"

#include "lib/hash.h"

#define HASH_FNV_BASIS 0xcbf29ce484222325ull
#define HASH_FNV_PRIME 0x100000001b3ull

uint64_t
hash_fnv1a64(const void *p, size_t len, uint64_t seed)
{
	const unsigned char *s = p;
	uint64_t h = seed ? seed : HASH_FNV_BASIS;

	for (size_t i = 0; i < len; i++) {
		h ^= s[i];
		h *= HASH_FNV_PRIME;
	}
	return h;
}

void
hash_fnv1a64_pair(const void *p, size_t len, const uint64_t seeds[2], uint64_t out[2])
{
	const unsigned char *s = p;
	uint64_t h0 = seeds[0] ? seeds[0] : HASH_FNV_BASIS,
		 h1 = seeds[1] ? seeds[1] : HASH_FNV_BASIS;

	for (size_t i = 0; i < len; i++) {
		h0 = (h0 ^ s[i]) * HASH_FNV_PRIME;
		h1 = (h1 ^ s[i]) * HASH_FNV_PRIME;
	}
	out[0] = h0;
	out[1] = h1;
}
