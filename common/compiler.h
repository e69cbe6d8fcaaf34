/* SPDX-License-Identifier: MIT */
/*
 * compiler.h - tiny helpers shared by every module: branch hints, container_of,
 * ARRAY_SIZE and the cache-line size used to pad shared structures.
 */
#ifndef RS_COMMON_COMPILER_H
#define RS_COMMON_COMPILER_H

#include <stddef.h>

#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

#define container_of(ptr, type, member) \
	((type *)((char *)(ptr) - offsetof(type, member)))

#define RS_CACHELINE 64
#define RS_ALIGNED_CACHELINE __attribute__((aligned(RS_CACHELINE)))

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "ringstore assumes a little-endian host (the TCPStore wire is host order)"
#endif

#endif
