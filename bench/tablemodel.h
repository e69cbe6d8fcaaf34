/* SPDX-License-Identifier: MIT */
/*
 * tablemodel.h - the memory that lookups in ringstore's table touch, with no
 * table behind it: an index of 16-byte slots at most 70 % full, each
 * pointing at a 128-byte entry (two lines) elsewhere, as server/table.c lays
 * out a key space on its slabs. A batch of random keys is touched as
 * table_get_batch and table_set_batch go: prefetch every slot, read each and
 * prefetch its entry's two lines, then read each entry or write a value into
 * it. ringstore-memlat times it alone (--table); ringstore-floor does it
 * before each MULTI_GET and MULTI_SET (--table-keys), to measure what the
 * memory charges inside a serving process.
 */
#ifndef RS_BENCH_TABLEMODEL_H
#define RS_BENCH_TABLEMODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TM_LINE 64
#define TM_SLOT 16
#define TM_ENTRY 128
#define TM_VAL_OFF 48 /* the entry header and a 16-byte key */
#define TM_BATCH_MAX 256
#define TM_MAX_KEYS (1ul << 26)

struct tmodel {
	uint8_t *idx; /* cap slots, each the address of an entry */
	uint8_t *ent; /* n entries */
	size_t cap, n;
	uint64_t rng;
	uint8_t sink; /* the reads' result, so that they are not elided */
	void *maps[2];
	size_t map_bytes[2];
};

/* splitmix64: the next of the sequence in *@s. */
uint64_t tm_rand(uint64_t *s);

/*
 * @bytes at a 2 MiB boundary, advised into transparent huge pages or, with
 * !@huge, out of them (small pages, as most of malloc's heap); *@map and
 * *@map_bytes are what to munmap. NULL (errno set) on failure.
 */
uint8_t *tm_map(size_t bytes, bool huge, void **map, size_t *map_bytes);

/* The index and entries of a table of @n keys (1 to TM_MAX_KEYS), faulted
 * in, each slot pointing at a random entry. 0 or -errno. */
int tmodel_init(struct tmodel *t, size_t n, bool huge);
void tmodel_free(struct tmodel *t);

/* The lines of @n random keys, @batch (1 to TM_BATCH_MAX) at a time: read,
 * or with @vlen bytes of value written (cut to an entry's room). */
void tmodel_touch(struct tmodel *t, uint64_t n, size_t batch, bool write,
		  size_t vlen);

#endif
