/* SPDX-License-Identifier: MIT */
/*
 * now.h - the one clock of every program in the tree: CLOCK_MONOTONIC for
 * deadlines, timeouts and ages (it never jumps), CLOCK_REALTIME only where a
 * time is shown to people or compared across hosts.
 *
 * Header-only and inline: clock_gettime through the vDSO costs about 20 ns,
 * no system call, and a call per reading is all the hot paths need.
 */
#ifndef RS_COMMON_NOW_H
#define RS_COMMON_NOW_H

#include <stdint.h>
#include <time.h>

/* CLOCK_MONOTONIC in nanoseconds. */
static inline uint64_t now_mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* CLOCK_MONOTONIC in milliseconds. */
static inline uint64_t now_mono_ms(void)
{
	return now_mono_ns() / 1000000u;
}

/* CLOCK_REALTIME (Unix time) in nanoseconds. */
static inline uint64_t now_wall_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

#endif
