/* FNV-1a hashing. */
#include "config.h"

#include "lib/hash.h"

uint64_t
hash_fnv1a64(const void *p, size_t len, uint64_t seed)
{
	const unsigned char *s = p;
	uint64_t h = seed ? seed : 0xcbf29ce484222325ull;

	for (size_t i = 0; i < len; i++) {
		h ^= s[i];
		h *= 0x100000001b3ull;
	}
	return h;
}
