/* SPDX-License-Identifier: MIT */
/*
 * cpus.h - how much CPU this process may use.
 *
 * Two figures, because they limit different things. The affinity mask (a
 * container's cpuset, taskset) says on how many CPUs threads may run at
 * once: a short burst can use all of them. A cgroup's CPU quota (Kubernetes'
 * CPU limit: cgroup v2 cpu.max, v1 cpu.cfs_quota_us / cpu.cfs_period_us)
 * says how much CPU time per period the process gets: on a 64-CPU node with
 * a limit of 4 CPUs, 32 busy threads burn the period's quota in an eighth of
 * it and then all wait, throttled, for the rest. The server sizes its
 * reactors by both (cpus_usable), and lets a burst spread by the mask alone;
 * the benchmark reports the mask.
 */
#ifndef RS_COMMON_CPUS_H
#define RS_COMMON_CPUS_H

/* CPUs in this process's affinity mask, else the CPUs online; at least 1. */
unsigned cpus_affinity(void);

/*
 * The CPU quota of this process's cgroups, in CPUs (quota / period; the
 * lowest on the path from its cgroup up to the hierarchy's root, cgroup v2
 * and v1's cpu controller both), or 0 if there is none or it cannot be
 * read. @root prefixes every path read (/proc/self/cgroup,
 * /proc/self/mountinfo, the cgroup files): "" in the server, a directory
 * laid out alike in the tests.
 */
double cpus_cgroup_limit(const char *root);

/* What a process with @affinity CPUs and a quota of @limit CPUs (0: none)
 * may keep busy: the quota rounded up, at most @affinity, at least 1. */
unsigned cpus_usable(unsigned affinity, double limit);

#endif
