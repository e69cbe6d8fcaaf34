/* SPDX-License-Identifier: MIT */
/*
 * test_cpus.c - the CPU quota read from cgroup files (cpus_cgroup_limit)
 * on trees laid out like /proc and /sys/fs/cgroup in a scratch directory:
 * cgroup v2, v1's cpu controller, a container's mount root, quotas on
 * ancestors, a host with both; then the arithmetic (cpus_usable), and the
 * real files of this process.
 */
#include "helpers.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cpus.h"

static char tree[PATH_MAX];

/* Write @text to @rel under the tree, making its directories. */
static void put(const char *rel, const char *text)
{
	char path[PATH_MAX];
	FILE *f;

	assert_true(snprintf(path, sizeof(path), "%s/%s", tree, rel) <
		    (int)sizeof(path));
	for (char *p = path + strlen(tree) + 1; (p = strchr(p, '/')); p++) {
		*p = '\0';
		assert_true(mkdir(path, 0755) == 0 || errno == EEXIST);
		*p = '/';
	}
	f = fopen(path, "w");
	assert_non_null(f);
	assert_true(fputs(text, f) >= 0);
	assert_int_equal(fclose(f), 0);
}

/* A v1 cgroup @dir's quota: @quota (microseconds, "-1" for none) per
 * period of 100 ms. */
static void put_cfs(const char *dir, const char *quota)
{
	char rel[PATH_MAX], text[32];

	snprintf(rel, sizeof(rel), "%s/cpu.cfs_quota_us", dir);
	snprintf(text, sizeof(text), "%s\n", quota);
	put(rel, text);
	snprintf(rel, sizeof(rel), "%s/cpu.cfs_period_us", dir);
	put(rel, "100000\n");
}

static int setup(void **state)
{
	(void)state;
	t_tmpdir(tree, sizeof(tree), "test_cpus");
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	return t_rmtree(tree);
}

#define MI_V2                                                       \
	"30 25 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 " \
	"cgroup2 rw,nsdelegate\n"
#define MI_ROOT "25 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"

/* v2: the lowest cpu.max from the process's cgroup up to the root. */
static void test_v2_nested(void **state)
{
	(void)state;
	put("proc/self/mountinfo", MI_ROOT MI_V2);
	put("proc/self/cgroup", "0::/kubepods/pod1/ctr\n");
	put("sys/fs/cgroup/kubepods/cpu.max", "max 100000\n");
	put("sys/fs/cgroup/kubepods/pod1/cpu.max", "250000 100000\n");
	put("sys/fs/cgroup/kubepods/pod1/ctr/cpu.max", "max 100000\n");
	assert_true(cpus_cgroup_limit(tree) == 2.5);
	/* A lower quota deeper down wins over the pod's. */
	put("sys/fs/cgroup/kubepods/pod1/ctr/cpu.max", "50000 100000\n");
	assert_true(cpus_cgroup_limit(tree) == 0.5);
	/* ... and a lower one higher up wins too. */
	put("sys/fs/cgroup/kubepods/pod1/ctr/cpu.max", "max 100000\n");
	put("sys/fs/cgroup/kubepods/cpu.max", "100000 50000\n");
	assert_true(cpus_cgroup_limit(tree) == 2.0);
	/* No quota anywhere. */
	put("sys/fs/cgroup/kubepods/cpu.max", "max 100000\n");
	put("sys/fs/cgroup/kubepods/pod1/cpu.max", "max 100000\n");
	assert_true(cpus_cgroup_limit(tree) == 0);
}

/* A container with its own cgroup namespace sees itself at "/", mounted at
 * the hierarchy's root: the quota is at the mount point. */
static void test_v2_namespaced(void **state)
{
	(void)state;
	put("proc/self/mountinfo", MI_ROOT MI_V2);
	put("proc/self/cgroup", "0::/\n");
	put("sys/fs/cgroup/cpu.max", "150000 100000\n");
	assert_true(cpus_cgroup_limit(tree) == 1.5);
}

/* v1: the cpu controller's mount (not cpuacct's, not cpuset's), found by
 * its options; a container's mount root is taken off the path. */
static void test_v1_container_root(void **state)
{
	(void)state;
	put("proc/self/mountinfo", MI_ROOT
	    "40 30 0:35 /docker/abc /sys/fs/cgroup/cpuacct rw - cgroup cgroup "
	    "rw,cpuacct\n"
	    "41 30 0:36 /docker/abc /sys/fs/cgroup/cpu rw - cgroup cgroup "
	    "rw,cpu\n"
	    "42 30 0:37 /docker/abc /sys/fs/cgroup/cpuset rw - cgroup cgroup "
	    "rw,cpuset\n");
	put("proc/self/cgroup",
	    "4:cpuset:/docker/abc\n3:cpuacct:/docker/abc\n2:cpu:/docker/abc\n"
	    "0::/\n");
	put_cfs("sys/fs/cgroup/cpu", "300000");
	/* Files a wrong match would read instead. */
	put_cfs("sys/fs/cgroup/cpuacct", "100000");
	put_cfs("sys/fs/cgroup/cpu/docker/abc", "100000");
	assert_true(cpus_cgroup_limit(tree) == 3.0);
}

/* v1 with cpu and cpuacct on one mount, the quota on the parent; -1 is no
 * quota. */
static void test_v1_joined_parent(void **state)
{
	(void)state;
	put("proc/self/mountinfo", MI_ROOT
	    "41 30 0:36 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup "
	    "rw,cpu,cpuacct\n");
	put("proc/self/cgroup", "2:cpu,cpuacct:/batch/job7\n");
	put_cfs("sys/fs/cgroup/cpu,cpuacct/batch/job7", "-1");
	put_cfs("sys/fs/cgroup/cpu,cpuacct/batch", "75000");
	put_cfs("sys/fs/cgroup/cpu,cpuacct", "-1");
	assert_true(cpus_cgroup_limit(tree) == 0.75);
}

/* A host with both (this machine: v1 cpu, v2 without it): the lower. And a
 * mount point with a space, as mountinfo escapes it. */
static void test_hybrid_and_escapes(void **state)
{
	(void)state;
	put("proc/self/mountinfo", MI_ROOT
	    "41 30 0:36 / /sys/fs/cgroup/my\\040cpu rw - cgroup cgroup rw,cpu\n"
	    "50 30 0:40 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n");
	put("proc/self/cgroup", "1:cpu:/a\n0::/b\n");
	put_cfs("sys/fs/cgroup/my cpu/a", "400000");
	assert_true(cpus_cgroup_limit(tree) == 4.0);
	put("sys/fs/cgroup/unified/b/cpu.max", "200000 100000\n");
	assert_true(cpus_cgroup_limit(tree) == 2.0);
}

/* Nothing to read, or nonsense: no quota, never a failure. */
static void test_missing_and_malformed(void **state)
{
	(void)state;
	assert_true(cpus_cgroup_limit(tree) == 0); /* no /proc at all */
	put("proc/self/cgroup", "0::/x\n");
	assert_true(cpus_cgroup_limit(tree) == 0); /* no mountinfo */
	put("proc/self/mountinfo", MI_ROOT "garbage line\n" MI_V2);
	assert_true(cpus_cgroup_limit(tree) == 0); /* no cpu.max */
	put("sys/fs/cgroup/x/cpu.max", "lots 100000\n");
	assert_true(cpus_cgroup_limit(tree) == 0);
	put("sys/fs/cgroup/x/cpu.max", "100000\n");
	assert_true(cpus_cgroup_limit(tree) == 0);
	put("sys/fs/cgroup/x/cpu.max", "100000 0\n");
	assert_true(cpus_cgroup_limit(tree) == 0);
	put("sys/fs/cgroup/x/cpu.max", "100000 100000\n");
	assert_true(cpus_cgroup_limit(tree) == 1.0); /* the same tree, sane */
	/* A path outside the mount's root falls back to the mount point. */
	put("proc/self/mountinfo", MI_ROOT
	    "30 25 0:26 /other /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n");
	put("sys/fs/cgroup/cpu.max", "300000 100000\n");
	assert_true(cpus_cgroup_limit(tree) == 3.0);
}

/* A host with thousands of mounts: mountinfo past the first 64 KiB read,
 * the cgroup2 line last. */
static void test_long_mountinfo(void **state)
{
	static const char filler[] =
		"99 25 0:99 / /run/containerd/io.containerd.runtime.v2.task/"
		"k8s.io/0123456789abcdef/rootfs rw - overlay overlay rw\n";
	size_t n = 3000, len = strlen(filler);
	char *text = t_malloc(n * len + sizeof(MI_V2));

	(void)state;
	for (size_t i = 0; i < n; i++)
		memcpy(text + i * len, filler, len);
	memcpy(text + n * len, MI_V2, sizeof(MI_V2));
	assert_true(strlen(text) > 4 * 65536);
	put("proc/self/mountinfo", text);
	free(text);
	put("proc/self/cgroup", "0::/big\n");
	put("sys/fs/cgroup/big/cpu.max", "50000 100000\n");
	assert_true(cpus_cgroup_limit(tree) == 0.5);
}

/* The quota rounded up, within the mask, at least 1. */
static void test_usable(void **state)
{
	(void)state;
	assert_int_equal(cpus_usable(2, 0), 2);
	assert_int_equal(cpus_usable(64, 4.0), 4);
	assert_int_equal(cpus_usable(64, 3.5), 4);
	assert_int_equal(cpus_usable(64, 0.25), 1);
	assert_int_equal(cpus_usable(2, 1.0), 1);
	assert_int_equal(cpus_usable(2, 1.01), 2);
	assert_int_equal(cpus_usable(2, 8.0), 2);
	assert_int_equal(cpus_usable(0, 0), 1);
}

/* This process's own files: whatever the host has, the call reads them and
 * the figure is within what the quota files can say (0 or positive). */
static void test_real_files(void **state)
{
	double limit = cpus_cgroup_limit("");

	(void)state;
	assert_true(limit >= 0);
	assert_true(cpus_affinity() >= 1);
	assert_true(cpus_usable(cpus_affinity(), limit) <= cpus_affinity());
}

/* A test that gets a fresh scratch tree. */
#define IN_TREE(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		IN_TREE(test_v2_nested),
		IN_TREE(test_v2_namespaced),
		IN_TREE(test_v1_container_root),
		IN_TREE(test_v1_joined_parent),
		IN_TREE(test_hybrid_and_escapes),
		IN_TREE(test_missing_and_malformed),
		IN_TREE(test_long_mountinfo),
		cmocka_unit_test(test_usable),
		cmocka_unit_test(test_real_files),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
