/* SPDX-License-Identifier: MIT */
/*
 * cpus.c - the affinity mask, and the CPU quota read from the cgroup files
 * the process's own entries in /proc/self/cgroup and /proc/self/mountinfo
 * point at (cpus.h says why both).
 *
 * A cgroup's files are at the mount point of its hierarchy plus its path,
 * less the mount's root (a container without its own cgroup namespace
 * mounts /docker/ID as the root and sees /docker/ID as its path). A quota
 * set on any ancestor applies too, so the walk goes up to the mount point
 * and keeps the lowest. Nothing here fails the caller: a file missing or
 * unreadable is no quota.
 */
#include "cpus.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

unsigned cpus_affinity(void)
{
	cpu_set_t set;
	long n = 0;

	if (sched_getaffinity(0, sizeof(set), &set) == 0)
		n = CPU_COUNT(&set);
	if (n < 1)
		n = sysconf(_SC_NPROCESSORS_ONLN);
	return n < 1 ? 1 : (unsigned)n;
}

unsigned cpus_usable(unsigned affinity, double limit)
{
	unsigned q;

	if (affinity < 1)
		affinity = 1;
	if (limit <= 0 || limit >= affinity)
		return affinity;
	/* Rounded up (a quota of 1.5 CPUs keeps 2 busy part of the time),
	 * so at least 1 and, as limit < affinity, at most affinity. */
	q = (unsigned)limit;
	return q < limit ? q + 1 : q;
}

/* The whole of the small file @dir/@name, NUL-terminated in @buf; its
 * length or -errno. */
static int read_in(const char *dir, const char *name, char *buf, size_t size)
{
	char path[PATH_MAX];
	size_t len = 0;
	int fd;

	if (snprintf(path, sizeof(path), "%s/%s", dir, name) >=
	    (int)sizeof(path))
		return -ENAMETOOLONG;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	while (len < size - 1) {
		ssize_t n = read(fd, buf + len, size - 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	close(fd);
	buf[len] = '\0';
	return (int)len;
}

/* The file's one number (a decimal integer, or "max" as -1), or -EINVAL. */
static int parse_quota_word(const char *s, long long *out)
{
	char *end;

	if (strncmp(s, "max", 3) == 0 &&
	    (s[3] == '\0' || s[3] == ' ' || s[3] == '\n')) {
		*out = -1;
		return 3;
	}
	errno = 0;
	*out = strtoll(s, &end, 10);
	if (errno || end == s)
		return -EINVAL;
	return (int)(end - s);
}

/* v2 cpu.max ("QUOTA PERIOD", QUOTA "max" for none) in @dir, in CPUs. */
static double limit_v2(const char *dir)
{
	char buf[128];
	long long quota, period;
	int n;

	if (read_in(dir, "cpu.max", buf, sizeof(buf)) <= 0)
		return 0;
	n = parse_quota_word(buf, &quota);
	if (n < 0 || buf[n] != ' ' ||
	    parse_quota_word(buf + n + 1, &period) < 0)
		return 0;
	return quota > 0 && period > 0 ? (double)quota / (double)period : 0;
}

/* The number in the file @dir/@name, if it reads as one above 0; else 0. */
static long long read_positive(const char *dir, const char *name)
{
	char buf[64];
	long long v;

	if (read_in(dir, name, buf, sizeof(buf)) <= 0 ||
	    parse_quota_word(buf, &v) < 0 || v <= 0)
		return 0;
	return v;
}

/* v1 cpu.cfs_quota_us (-1 for none) over cpu.cfs_period_us, in CPUs. */
static double limit_v1(const char *dir)
{
	long long quota = read_positive(dir, "cpu.cfs_quota_us");
	long long period = quota ? read_positive(dir, "cpu.cfs_period_us") : 0;

	return period ? (double)quota / (double)period : 0;
}

/* The lowest nonzero of @a and @b (0: neither limits). */
static double lower(double a, double b)
{
	if (a <= 0)
		return b;
	return b > 0 && b < a ? b : a;
}

/* Whether the comma-separated @list holds @word. */
static bool has_word(const char *list, const char *word)
{
	size_t len = strlen(word);

	for (const char *p = list; p && *p; p = strchr(p, ',')) {
		if (*p == ',')
			p++;
		if (strncmp(p, word, len) == 0 &&
		    (p[len] == ',' || p[len] == '\0'))
			return true;
	}
	return false;
}

/* mountinfo writes a space, tab, newline and backslash as \ooo. */
static void unescape_octal(char *s)
{
	char *w = s;

	for (char *r = s; *r; r++) {
		if (r[0] == '\\' && r[1] >= '0' && r[1] <= '3' && r[2] >= '0' &&
		    r[2] <= '7' && r[3] >= '0' && r[3] <= '7') {
			*w++ = (char)((r[1] - '0') * 64 + (r[2] - '0') * 8 +
				      (r[3] - '0'));
			r += 3;
		} else {
			*w++ = *r;
		}
	}
	*w = '\0';
}

/*
 * The mount of the hierarchy (@v2: the cgroup2 one, else the cgroup one
 * whose options name the cpu controller) from @mountinfo: its root within
 * the hierarchy and its mount point, unescaped. 0 or -ENOENT.
 */
static int find_mount(char *mountinfo, bool v2, char *root, size_t root_size,
		      char *mnt, size_t mnt_size)
{
	char *save = NULL;

	for (char *line = strtok_r(mountinfo, "\n", &save); line;
	     line = strtok_r(NULL, "\n", &save)) {
		char *sep = strstr(line, " - ");
		char *f[5], *fs, *opts, *s2 = NULL, *p = line;
		int i;

		if (!sep)
			continue;
		*sep = '\0';
		for (i = 0; i < 5; i++) {
			f[i] = strtok_r(p, " ", &s2);
			p = NULL;
			if (!f[i])
				break;
		}
		if (i < 5)
			continue;
		s2 = NULL;
		fs = strtok_r(sep + 3, " ", &s2);
		(void)strtok_r(NULL, " ", &s2); /* the source */
		opts = strtok_r(NULL, " ", &s2);
		if (!fs || (v2 ? strcmp(fs, "cgroup2") != 0
			       : strcmp(fs, "cgroup") != 0 || !opts ||
					    !has_word(opts, "cpu")))
			continue;
		unescape_octal(f[3]);
		unescape_octal(f[4]);
		if (snprintf(root, root_size, "%s", f[3]) >= (int)root_size ||
		    snprintf(mnt, mnt_size, "%s", f[4]) >= (int)mnt_size)
			return -ENAMETOOLONG;
		return 0;
	}
	return -ENOENT;
}

/*
 * The lowest quota from the cgroup at @cgpath (as /proc/self/cgroup gives
 * it) up to its hierarchy's mount, found in @mountinfo (a copy: it is cut
 * up) under @prefix.
 */
static double limit_walk(const char *prefix, const char *mountinfo_text,
			 bool v2, const char *cgpath)
{
	char root[PATH_MAX], mnt[PATH_MAX], dir[PATH_MAX];
	const char *rel = "";
	char *copy = strdup(mountinfo_text);
	size_t base, rlen;
	double limit = 0;
	int ret;

	if (!copy)
		return 0;
	ret = find_mount(copy, v2, root, sizeof(root), mnt, sizeof(mnt));
	free(copy);
	if (ret < 0)
		return 0;
	/* The path less the mount's root; outside it (another namespace's
	 * view), the mount point itself is the nearest cgroup known. */
	rlen = strcmp(root, "/") == 0 ? 0 : strlen(root);
	if (strncmp(cgpath, root, rlen) == 0 &&
	    (cgpath[rlen] == '/' || cgpath[rlen] == '\0'))
		rel = cgpath + rlen;
	ret = snprintf(dir, sizeof(dir), "%s%s", prefix, mnt);
	if (ret < 0 || ret >= (int)sizeof(dir))
		return 0;
	base = (size_t)ret;
	if (snprintf(dir + base, sizeof(dir) - base, "%s", rel) >=
	    (int)(sizeof(dir) - base))
		return 0;
	for (;;) {
		size_t len = strlen(dir);
		char *slash;

		while (len > base && dir[len - 1] == '/')
			dir[--len] = '\0';
		limit = lower(limit, v2 ? limit_v2(dir) : limit_v1(dir));
		if (len <= base)
			break;
		slash = strrchr(dir + base, '/');
		if (!slash)
			break;
		*slash = '\0';
	}
	return limit;
}

double cpus_cgroup_limit(const char *root)
{
	char cg[8192], *mountinfo = NULL, *save = NULL;
	size_t cap = 65536;
	double limit = 0;
	int len;

	if (read_in(root, "proc/self/cgroup", cg, sizeof(cg)) <= 0)
		return 0;
	/* mountinfo can be long (a host with many mounts): grow to fit. */
	for (;;) {
		char *m = realloc(mountinfo, cap);
		if (!m)
			goto out;
		mountinfo = m;
		len = read_in(root, "proc/self/mountinfo", mountinfo, cap);
		if (len < 0)
			goto out;
		if ((size_t)len < cap - 1 || cap >= (16u << 20))
			break;
		cap *= 2;
	}
	/* Lines "ID:CONTROLLERS:PATH"; v2's is "0::PATH". */
	for (char *line = strtok_r(cg, "\n", &save); line;
	     line = strtok_r(NULL, "\n", &save)) {
		char *c1 = strchr(line, ':'),
		     *c2 = c1 ? strchr(c1 + 1, ':') : NULL;

		if (!c2)
			continue;
		*c1 = '\0';
		*c2 = '\0';
		if (strcmp(line, "0") == 0 && c1[1] == '\0')
			limit = lower(limit, limit_walk(root, mountinfo, true,
							c2 + 1));
		else if (has_word(c1 + 1, "cpu"))
			limit = lower(limit, limit_walk(root, mountinfo, false,
							c2 + 1));
	}
out:
	free(mountinfo);
	return limit;
}
