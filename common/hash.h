/* SPDX-License-Identifier: MIT */
/*
 * hash.h - the single XXH3 call site. A key is hashed once per request and
 * the 64-bit hash is passed down to the table, the waiters and the queues;
 * the write log's records are checksummed with the same function, seeded
 * with their position.
 */
#ifndef RS_COMMON_HASH_H
#define RS_COMMON_HASH_H

#include <stddef.h>
#include <stdint.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

static inline uint64_t hash_key(const void *key, size_t len)
{
	return XXH3_64bits(key, len);
}

static inline uint64_t hash_seeded(const void *p, size_t len, uint64_t seed)
{
	return XXH3_64bits_withSeed(p, len, seed);
}

#endif
