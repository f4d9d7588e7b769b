/* Non-cryptographic hashing for keys and content fingerprints. */
#ifndef LIB_HASH_H
#define LIB_HASH_H

#include <stddef.h>
#include <stdint.h>

/* FNV-1a, 64 bits. Pass 0 as seed to start; chain by passing the previous result. */
uint64_t hash_fnv1a64(const void *p, size_t len, uint64_t seed);
/* out[k] = hash_fnv1a64(p, len, seeds[k]) for k = 0, 1, in one pass over p. */
void hash_fnv1a64_pair(const void *p, size_t len, const uint64_t seeds[2], uint64_t out[2]);

#endif
