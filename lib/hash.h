/* Non-cryptographic hashing for keys and content fingerprints. */
#ifndef LIB_HASH_H
#define LIB_HASH_H

#include <stddef.h>
#include <stdint.h>

/* FNV-1a, 64 bits. Pass 0 as seed to start; chain by passing the previous result. */
uint64_t hash_fnv1a64(const void *p, size_t len, uint64_t seed);

#endif
