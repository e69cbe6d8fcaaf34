/* SPDX-License-Identifier: MIT */
/*
 * memlat.c - ringstore-memlat: what one cache miss costs on this machine, by
 * working-set size. The floor (floor.c) is what the kernel charges for a
 * workload's bytes; a store over a key space larger than the caches also
 * pays for the lines its lookups miss, and that price is the machine's, not
 * the code's. This measures it, for each size:
 *
 *  dependent    ns per load of a pointer chase through one random cycle over
 *               every line of the set: the latency of one miss that nothing
 *               overlaps (a lookup's slot, then its entry);
 *  independent  ns per line when lines are read in random order in groups
 *               of --batch, each group prefetched before it is read, as a
 *               batch of keys is looked up: the throughput of overlapped
 *               misses.
 *
 * Lines are 64 bytes; the set is one mapping aligned to 2 MiB, advised into
 * transparent huge pages with --huge (default: small pages, as malloc's heap
 * mostly is). Compare sizes within one run: the machine is shared.
 *
 * --table N models a batch of --batch lookups of random keys in a table of N
 * keys instead, in two layouts, and prints ns per key for each:
 *
 *  index        ringstore's: an index of 16-byte slots, a power of two at
 *               most 70 % full, each pointing at a 128-byte entry (two
 *               lines) elsewhere. As table_get_batch does: prefetch every
 *               key's slot, then read each slot and prefetch its entry's
 *               two lines, then read them. Three lines a key, the entry's
 *               behind the slot's.
 *  inline       the entries in the index itself: one 128-byte bucket a slot
 *               (same slot count), prefetched, then read. Two adjacent lines
 *               a key and no pointer to follow, but a larger footprint.
 *
 * The difference is what a table with small entries inline could save on
 * MULTI_GET and MULTI_SET over that key space, before any instruction.
 */
#include <errno.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "now.h"
#include "tablemodel.h"

#define LINE 64
#define MAX_SIZES 32
#define MAX_BATCH TM_BATCH_MAX

struct set {
	uint8_t *base, *map;
	size_t lines, map_bytes;
	uint32_t *order; /* a random permutation of the lines */
};

static int set_init(struct set *s, size_t bytes, int huge, uint64_t *rng)
{
	void *map;

	s->lines = bytes / LINE;
	s->base = tm_map(s->lines * LINE, huge, &map, &s->map_bytes);
	if (!s->base)
		return -errno;
	s->map = map;
	s->order = malloc(s->lines * sizeof(*s->order));
	if (!s->order) {
		munmap(s->map, s->map_bytes);
		return -ENOMEM;
	}
	for (size_t i = 0; i < s->lines; i++)
		s->order[i] = (uint32_t)i;
	/* Fisher-Yates; then each line points at the next in that order,
	 * the last at the first: one cycle through every line. */
	for (size_t i = s->lines - 1; i > 0; i--) {
		size_t j = tm_rand(rng) % (i + 1);
		uint32_t t = s->order[i];

		s->order[i] = s->order[j];
		s->order[j] = t;
	}
	for (size_t i = 0; i < s->lines; i++) {
		uint8_t *p = s->base + (size_t)s->order[i] * LINE;
		uint8_t *next =
			s->base + (size_t)s->order[(i + 1) % s->lines] * LINE;

		memcpy(p, &next, sizeof(next));
		memset(p + sizeof(next), (int)i, LINE - sizeof(next));
	}
	return 0;
}

static void set_free(struct set *s)
{
	free(s->order);
	munmap(s->map, s->map_bytes);
}

/* The pointer stored at @at. */
static uint8_t *load_ptr(const uint8_t *at)
{
	uint8_t *v;

	memcpy(&v, at, sizeof(v));
	return v;
}

/* ns per load of @loads chained loads; *sink keeps the chain live. */
static double dependent(const struct set *s, size_t loads, uintptr_t *sink)
{
	uint8_t *p = s->base + (size_t)s->order[0] * LINE;
	double t0;

	for (size_t i = 0; i < s->lines && i < loads; i++) /* warm the TLB */
		p = load_ptr(p);
	t0 = (double)now_mono_ns();
	for (size_t i = 0; i < loads; i++)
		p = load_ptr(p);
	*sink ^= (uintptr_t)p;
	return ((double)now_mono_ns() - t0) / (double)loads;
}

/* ns per line of @loads lines read in groups of @batch, each group
 * prefetched first; *sink keeps the reads live. */
static double independent(const struct set *s, size_t loads, size_t batch,
			  uint64_t *rng, uintptr_t *sink)
{
	size_t groups = loads / batch, pos = tm_rand(rng) % s->lines;
	uint64_t sum = 0;
	double t0 = (double)now_mono_ns();

	for (size_t g = 0; g < groups; g++) {
		const uint8_t *p[MAX_BATCH];

		for (size_t j = 0; j < batch; j++) {
			/* A stride through the random order: no line is
			 * reread until the whole set has been. */
			p[j] = s->base + (size_t)s->order[pos] * LINE;
			pos = pos + 1 == s->lines ? 0 : pos + 1;
			__builtin_prefetch(p[j]);
		}
		for (size_t j = 0; j < batch; j++)
			sum += p[j][LINE - 1];
	}
	*sink ^= (uintptr_t)sum;
	return ((double)now_mono_ns() - t0) / (double)(groups * batch);
}

/* ns per key of @loads lookups of random keys, @batch at a time, in @t
 * (tablemodel.h: three lines a key, the entry found through the slot). */
static double index_lookups(struct tmodel *t, size_t loads, size_t batch)
{
	double t0 = (double)now_mono_ns();

	tmodel_touch(t, loads, batch, false, 0);
	return ((double)now_mono_ns() - t0) / (double)loads;
}

/* The same with the entries inline: one 128-byte bucket a slot of @cap at
 * @b, its two adjacent lines prefetched, then read; no pointer to follow. */
static double inline_lookups(const uint8_t *b, size_t cap, size_t loads,
			     size_t batch, uint64_t *rng, uintptr_t *sink)
{
	size_t groups = loads / batch;
	uint64_t sum = 0;
	double t0 = (double)now_mono_ns();

	for (size_t g = 0; g < groups; g++) {
		const uint8_t *p[MAX_BATCH];

		for (size_t j = 0; j < batch; j++) {
			p[j] = b + (tm_rand(rng) & (cap - 1)) * TM_ENTRY;
			__builtin_prefetch(p[j]);
			__builtin_prefetch(p[j] + LINE);
		}
		for (size_t j = 0; j < batch; j++)
			sum += p[j][0] + p[j][TM_ENTRY - 1];
	}
	*sink ^= (uintptr_t)sum;
	return ((double)now_mono_ns() - t0) / (double)(groups * batch);
}

static int run_table(size_t n, size_t loads, size_t batch, int huge,
		     uint64_t *rng, uintptr_t *sink)
{
	struct tmodel t;
	uint8_t *b;
	void *map;
	size_t map_bytes;
	int ret = tmodel_init(&t, n, huge);
	double ns;

	if (ret) {
		fprintf(stderr, "ringstore-memlat: --table %zu: %s\n", n,
			strerror(-ret));
		return 1;
	}
	printf("%8s %10s %8s %12s\n", "layout", "keys", "MiB", "ns_per_key");
	/* Once over first, to fault the pages in and warm the TLB. */
	(void)index_lookups(&t, loads / 4 + batch, batch);
	ns = index_lookups(&t, loads, batch);
	printf("%8s %10zu %8.1f %12.1f\n", "index", n,
	       (double)(t.cap * TM_SLOT + n * TM_ENTRY) / (1 << 20), ns);
	*sink ^= t.sink;
	/* Inline: as many buckets as the index has slots. */
	b = tm_map(t.cap * TM_ENTRY, huge, &map, &map_bytes);
	if (!b) {
		fprintf(stderr, "ringstore-memlat: --table %zu: %s\n", n,
			strerror(errno));
		tmodel_free(&t);
		return 1;
	}
	memset(b, 'v', t.cap * TM_ENTRY);
	(void)inline_lookups(b, t.cap, loads / 4 + batch, batch, rng, sink);
	ns = inline_lookups(b, t.cap, loads, batch, rng, sink);
	printf("%8s %10zu %8.1f %12.1f\n", "inline", n,
	       (double)(t.cap * TM_ENTRY) / (1 << 20), ns);
	munmap(map, map_bytes);
	tmodel_free(&t);
	return 0;
}

static void usage(FILE *out)
{
	fprintf(out,
		"Usage: ringstore-memlat [options]\n"
		"What one cache miss costs here, by working-set size: the\n"
		"latency of a miss nothing overlaps (a pointer chase) and the\n"
		"cost per line of misses overlapped in prefetched batches.\n"
		"  --sizes LIST  working sets in MiB, comma-separated\n"
		"                (default 1,2,4,8,16,32,64)\n"
		"  --loads N     loads timed per size and pattern (default\n"
		"                2000000)\n"
		"  --batch N     lines per prefetched group, 1-%d (default 16:\n"
		"                one MULTI_GET's keys)\n"
		"  --huge        advise the set into transparent huge pages\n"
		"  --table N     instead: ns per key of batched lookups in a\n"
		"                table of N keys, ringstore's layout (slot,\n"
		"                then entry) against entries inline\n"
		"  -h, --help    this text\n",
		MAX_BATCH);
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = { { "sizes", 1, NULL, 's' },
						  { "loads", 1, NULL, 'n' },
						  { "batch", 1, NULL, 'b' },
						  { "huge", 0, NULL, 'H' },
						  { "table", 1, NULL, 't' },
						  { "help", 0, NULL, 'h' },
						  { 0 } };
	const char *sizes = "1,2,4,8,16,32,64";
	long loads = 2000000, batch = 16, table = 0;
	size_t mib[MAX_SIZES], nsizes = 0;
	uint64_t rng = 0x5eed;
	uintptr_t sink = 0;
	int huge = 0, c;
	char *list, *tok, *save, *end;

	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case 's':
			sizes = optarg;
			break;
		case 'n':
			loads = strtol(optarg, NULL, 10);
			break;
		case 'b':
			batch = strtol(optarg, NULL, 10);
			break;
		case 'H':
			huge = 1;
			break;
		case 't':
			table = strtol(optarg, NULL, 10);
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc || loads < 1 || batch < 1 || batch > MAX_BATCH ||
	    table < 0 || (unsigned long)table > TM_MAX_KEYS) {
		usage(stderr);
		return 2;
	}
	if (table) {
		printf("# ringstore-memlat: %s pages, %ld loads, batches of "
		       "%ld\n",
		       huge ? "huge" : "small", loads, batch);
		c = run_table((size_t)table, (size_t)loads, (size_t)batch, huge,
			      &rng, &sink);
		fprintf(stderr, "# checksum %lx\n", (unsigned long)sink);
		return c;
	}
	list = strdup(sizes);
	for (tok = strtok_r(list, ",", &save); tok;
	     tok = strtok_r(NULL, ",", &save)) {
		long v = strtol(tok, &end, 10);

		if (*end || v < 1 || v > 65536 || nsizes == MAX_SIZES) {
			fprintf(stderr,
				"ringstore-memlat: --sizes wants up to "
				"%d sizes in MiB, 1-65536: '%s'\n",
				MAX_SIZES, tok);
			free(list);
			return 2;
		}
		mib[nsizes++] = (size_t)v;
	}
	free(list);
	printf("# ringstore-memlat: %s pages, %ld loads, batches of %ld\n",
	       huge ? "huge" : "small", loads, batch);
	printf("%8s %14s %16s\n", "MiB", "dependent_ns", "independent_ns");
	for (size_t i = 0; i < nsizes; i++) {
		struct set s = { 0 };
		int ret = set_init(&s, mib[i] << 20, huge, &rng);
		double dep, ind;

		if (ret) {
			fprintf(stderr, "ringstore-memlat: %zu MiB: %s\n",
				mib[i], strerror(-ret));
			return 1;
		}
		dep = dependent(&s, (size_t)loads, &sink);
		ind = independent(&s, (size_t)loads, (size_t)batch, &rng,
				  &sink);
		printf("%8zu %14.1f %16.1f\n", mib[i], dep, ind);
		set_free(&s);
	}
	/* The loads' results, so that no loop is optimized away. */
	fprintf(stderr, "# checksum %lx\n", (unsigned long)sink);
	return 0;
}
