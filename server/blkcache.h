/* SPDX-License-Identifier: MIT */
/*
 * blkcache.h - a per-thread cache of small freed blocks, in front of malloc.
 *
 * The store allocates one block per value written (table_entry_new) and
 * frees the entry it replaced a grace period later, in bursts: QSBR hands a
 * reactor back thousands of blocks at one quiescent point. glibc's own
 * thread cache holds seven blocks per size, so a burst spills into its bins
 * and every write paid malloc's and free's slow paths (a fifth of a
 * MULTI_SET's instructions). This cache keeps freed blocks of up to
 * BLKCACHE_MAX bytes on per-thread LIFO lists, one per 16-byte size class,
 * up to BLKCACHE_BYTES bytes per thread; beyond that, or for larger blocks,
 * it is malloc and free.
 *
 * A block may be freed on another thread than the one that allocated it
 * (the caller orders its uses before the free, e.g. by a reference count);
 * it joins the freeing thread's cache. A block only ever goes back to
 * blk_free with the size it was allocated with: the size picks its class.
 *
 * Slab classes: a class of 48 or 64 bytes, or of a multiple of 64 bytes or
 * 16 short of one (112, 128, 176, 192, ... 512), is not malloc'd but carved
 * from page-aligned 2 MiB chunks in a slot rounded up to 64 bytes, which is
 * what malloc's chunk for it costs too (its 8-byte header rounds it up). A
 * table entry then starts on a cache line and spans as few lines as its
 * size allows: a 112-byte one two, where malloc's spans three half the
 * time. Slab blocks never go back to malloc: beyond the byte cap, and when
 * a thread exits, they join a shared pool (a mutex and a list linked
 * through the free blocks), which a thread whose class is empty draws on
 * before it carves, so blocks allocated on one thread and freed on another
 * come back into use. Memory carved is never returned to the system: the
 * slabs stay at the store's high-water mark. Not under ASan, whose
 * malloc'd blocks catch overflows a slot's padding would hide.
 *
 * Under AddressSanitizer a cached block is poisoned, so a use after
 * blk_free is still reported.
 *
 * Threads: each function acts on the calling thread's cache only. A thread
 * that exits through pthread_exit or by returning from its start routine
 * drains its cache itself (a pthread key destructor); the main thread calls
 * blk_drain() before exit if it wants its blocks back (e.g. for a leak
 * checker).
 */
#ifndef RS_SERVER_BLKCACHE_H
#define RS_SERVER_BLKCACHE_H

#include <stdbool.h>
#include <stddef.h>

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define BLKCACHE_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define BLKCACHE_ASAN 1
#endif
/* Under ASan every free takes the slow path, which poisons the block. */
#ifdef BLKCACHE_ASAN
#define BLKCACHE_POISONS 1
#else
#define BLKCACHE_POISONS 0
#endif

#define BLKCACHE_MAX 512                 /* largest cached block, bytes */
#define BLKCACHE_BYTES ((size_t)8 << 20) /* per thread */

/* A block of at least @size bytes (aligned as malloc's), or NULL. */
static inline void *blk_alloc(size_t size);
/* Free @p, a block from blk_alloc(@size) (the same @size). NULL is a no-op. */
static inline void blk_free(void *p, size_t size);
/* Return every block cached by this thread to malloc. */
void blk_drain(void);
/* Bytes this thread holds cached (for tests and stats). */
size_t blk_cached_bytes(void);
/* Bytes carved for slab classes by all threads so far, and bytes in the
 * shared pool now (for tests and stats). */
size_t blk_slab_bytes(void);
size_t blk_pool_bytes(void);

/* ---- the fast paths, inline (one per table write); the rest is in
 * blkcache.c ---------------------------------------------------------- */

#define BLKCACHE_GRAIN 16
#define BLKCACHE_NCLASS (BLKCACHE_MAX / BLKCACHE_GRAIN)

/*
 * A class's cached blocks are a stack of pointers, not a list linked
 * through the blocks: popping one must not load from it, because a block
 * freed a grace period ago is usually out of the CPU's caches and a
 * linked list makes every allocation wait for that miss.
 */
struct blk_stack {
	void **p;
	size_t n, cap;
};

struct blk_cache {
	struct blk_stack cls[BLKCACHE_NCLASS];
	size_t bytes;
	bool armed; /* the exit hook is set for this thread */
	/* The rest of this thread's current slab chunk (blkcache.c). */
	unsigned char *carve, *carve_end;
};

extern _Thread_local struct blk_cache blk_cache_tl;

void *blk_alloc_slow(size_t size);
void blk_free_slow(void *p, size_t size);

/*
 * A cached block is cold by the time it is reused (it was freed a grace
 * period ago), and the caller is about to fill it: fetch the block
 * BLKCACHE_PREFETCH_AHEAD allocations from now, for writing, so that the
 * store misses do not fill the store buffer and stall the core.
 */
#define BLKCACHE_PREFETCH_AHEAD 4

static inline void blk_prefetch_next(const struct blk_stack *st, size_t bytes)
{
	if (st->n >= BLKCACHE_PREFETCH_AHEAD) {
		const char *next = st->p[st->n - BLKCACHE_PREFETCH_AHEAD];

		__builtin_prefetch(next, 1);
		if (bytes > 64)
			__builtin_prefetch(next + 64, 1);
	}
}

static inline void *blk_alloc(size_t size)
{
	size_t c = (size - 1) / BLKCACHE_GRAIN;
	struct blk_stack *st;
	void *b;

	if (size - 1 >= BLKCACHE_MAX || BLKCACHE_POISONS) /* 0 wraps */
		return blk_alloc_slow(size);
	st = &blk_cache_tl.cls[c];
	if (!st->n)
		return blk_alloc_slow(size);
	b = st->p[--st->n];
	blk_cache_tl.bytes -= (c + 1) * BLKCACHE_GRAIN;
	blk_prefetch_next(st, (c + 1) * BLKCACHE_GRAIN);
	return b;
}

static inline void blk_free(void *p, size_t size)
{
	size_t c = (size - 1) / BLKCACHE_GRAIN;
	struct blk_stack *st = &blk_cache_tl.cls[c < BLKCACHE_NCLASS ? c : 0];

	if (size - 1 >= BLKCACHE_MAX || st->n == st->cap ||
	    blk_cache_tl.bytes + (c + 1) * BLKCACHE_GRAIN > BLKCACHE_BYTES ||
	    !blk_cache_tl.armed || BLKCACHE_POISONS) {
		blk_free_slow(p, size);
		return;
	}
	if (p) {
		st->p[st->n++] = p;
		blk_cache_tl.bytes += (c + 1) * BLKCACHE_GRAIN;
	}
}

#endif
