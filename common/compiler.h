/* SPDX-License-Identifier: MIT */
/*
 * compiler.h - tiny helpers shared by every module: branch hints, container_of,
 * ARRAY_SIZE, a spin-wait pause and the cache-line size used to pad shared
 * structures.
 */
#ifndef RS_COMMON_COMPILER_H
#define RS_COMMON_COMPILER_H

#include <stddef.h>

#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

#define container_of(ptr, type, member) \
	((type *)((char *)(ptr)-offsetof(type, member)))

/* A spin-wait loop's pause. */
#if defined(__x86_64__) || defined(__i386__)
#define cpu_relax() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define cpu_relax() __asm__ __volatile__("yield" ::: "memory")
#else
#define cpu_relax() __asm__ __volatile__("" ::: "memory")
#endif

#define RS_CACHELINE 64
#define RS_ALIGNED_CACHELINE __attribute__((aligned(RS_CACHELINE)))

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "ringstore assumes a little-endian host (the TCPStore wire is host order)"
#endif

#endif
