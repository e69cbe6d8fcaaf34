/* SPDX-License-Identifier: MIT */
/* tablemodel.c - see tablemodel.h. */
#include "tablemodel.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>

#define HUGE_PAGE ((size_t)2 << 20)

uint64_t tm_rand(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

uint8_t *tm_map(size_t bytes, bool huge, void **map, size_t *map_bytes)
{
	uint8_t *m;

	*map_bytes = bytes + HUGE_PAGE;
	*map = mmap(NULL, *map_bytes, PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (*map == MAP_FAILED)
		return NULL;
	m = (uint8_t *)(((uintptr_t)*map + HUGE_PAGE - 1) &
			~(uintptr_t)(HUGE_PAGE - 1));
	/* Advice only: without THP the memory keeps small pages. */
	(void)madvise(m, bytes, huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
	return m;
}

int tmodel_init(struct tmodel *t, size_t n, bool huge)
{
	size_t cap = 16;

	memset(t, 0, sizeof(*t));
	if (n < 1 || n > TM_MAX_KEYS)
		return -EINVAL;
	while (cap / 10 * 7 < n)
		cap *= 2;
	t->cap = cap;
	t->n = n;
	t->rng = 0x5eed;
	t->idx = tm_map(cap * TM_SLOT, huge, &t->maps[0], &t->map_bytes[0]);
	if (!t->idx)
		return -errno;
	t->ent = tm_map(n * TM_ENTRY, huge, &t->maps[1], &t->map_bytes[1]);
	if (!t->ent) {
		int e = errno;

		munmap(t->maps[0], t->map_bytes[0]);
		return -e;
	}
	memset(t->ent, 'v', n * TM_ENTRY);
	/* Each slot points at a random entry: keys hash anywhere, entries
	 * are allocated in arrival order. */
	for (size_t i = 0; i < cap; i++) {
		uint8_t *e = t->ent + (tm_rand(&t->rng) % n) * TM_ENTRY;

		memcpy(t->idx + i * TM_SLOT, &e, sizeof(e));
	}
	return 0;
}

void tmodel_free(struct tmodel *t)
{
	munmap(t->maps[1], t->map_bytes[1]);
	munmap(t->maps[0], t->map_bytes[0]);
}

void tmodel_touch(struct tmodel *t, uint64_t n, size_t batch, bool write,
		  size_t vlen)
{
	uint8_t acc = 0;

	if (vlen > TM_ENTRY - TM_VAL_OFF)
		vlen = TM_ENTRY - TM_VAL_OFF;
	while (n) {
		size_t m = n < batch ? (size_t)n : batch;
		uint8_t *p[TM_BATCH_MAX];

		for (size_t j = 0; j < m; j++) {
			p[j] = t->idx +
			       (tm_rand(&t->rng) & (t->cap - 1)) * TM_SLOT;
			__builtin_prefetch(p[j]);
		}
		for (size_t j = 0; j < m; j++) {
			uintptr_t e;

			memcpy(&e, p[j], sizeof(e));
			p[j] = (uint8_t *)e;
			__builtin_prefetch(p[j]);
			__builtin_prefetch(p[j] + TM_LINE);
		}
		for (size_t j = 0; j < m; j++) {
			if (write)
				memset(p[j] + TM_VAL_OFF, acc, vlen);
			else
				acc ^= p[j][0] ^ p[j][TM_ENTRY - 1];
		}
		n -= m;
	}
	t->sink ^= acc;
}
