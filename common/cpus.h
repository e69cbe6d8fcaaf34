/* SPDX-License-Identifier: MIT */
/*
 * cpus.h - how many CPUs this process may run on: its affinity mask (a
 * container's cpuset, taskset), else the CPUs online; at least 1. The
 * server sizes its reactors and --spread-sends by it, the benchmark reports
 * it.
 */
#ifndef RS_COMMON_CPUS_H
#define RS_COMMON_CPUS_H

#include <sched.h>
#include <unistd.h>

static inline long cpus_usable(void)
{
	cpu_set_t set;
	long n = 0;

	if (sched_getaffinity(0, sizeof(set), &set) == 0)
		n = CPU_COUNT(&set);
	if (n < 1)
		n = sysconf(_SC_NPROCESSORS_ONLN);
	return n < 1 ? 1 : n;
}

#endif
