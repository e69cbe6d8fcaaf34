/* SPDX-License-Identifier: MIT */
/*
 * blkcache.c - see blkcache.h. A block of class c holds (c + 1) * 16 bytes.
 */
#include "blkcache.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#ifdef BLKCACHE_ASAN
#include <sanitizer/asan_interface.h>
#define POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

#define GRAIN BLKCACHE_GRAIN
#define NCLASS BLKCACHE_NCLASS
#define STACK_MIN 64
#define SLOT_ALIGN 64 /* a cache line */
/* Carved per thread at a time, and large enough that a store of billions
 * of bytes stays far from vm.max_map_count (adjacent chunks are mapped
 * alike, so the kernel merges their mappings anyway). */
#define SLAB_CHUNK ((size_t)2 << 20)
#define POOL_BATCH 64 /* blocks a thread takes from the pool at once */

_Thread_local struct blk_cache blk_cache_tl;

/* Whether class @c is carved from slabs (blkcache.h). */
static bool slab_class(size_t c)
{
	size_t b = (c + 1) * GRAIN;

	return !BLKCACHE_POISONS && b >= 48 &&
	       (b % SLOT_ALIGN == 0 || b % SLOT_ALIGN == SLOT_ALIGN - GRAIN);
}

/* The slot of a slab class: its size rounded up to a cache line. */
static size_t slot_bytes(size_t c)
{
	return ((c + 1) * GRAIN + SLOT_ALIGN - 1) & ~(size_t)(SLOT_ALIGN - 1);
}

/* Free slab blocks no thread's cache holds: one list per class, linked
 * through the blocks' first word. */
static struct {
	pthread_mutex_t lock;
	void *head[NCLASS];
	size_t bytes;  /* in the lists */
	size_t carved; /* carved by all threads, ever */
} pool = { .lock = PTHREAD_MUTEX_INITIALIZER };

/* The pool's first block of class @c, unlinked; NULL if it has none.
 * Under pool.lock. */
static void *pool_pop(size_t c)
{
	void *b = pool.head[c];

	if (b) {
		memcpy(&pool.head[c], b, sizeof(void *));
		pool.bytes -= (c + 1) * GRAIN;
	}
	return b;
}

static void pool_put(size_t c, void **blocks, size_t n)
{
	pthread_mutex_lock(&pool.lock);
	for (size_t i = 0; i < n; i++) {
		memcpy(blocks[i], &pool.head[c], sizeof(void *));
		pool.head[c] = blocks[i];
	}
	pool.bytes += n * (c + 1) * GRAIN;
	pthread_mutex_unlock(&pool.lock);
}

/* A thread that exits drains its cache (pthread key destructor). */
static pthread_key_t exit_key;
static pthread_once_t exit_once = PTHREAD_ONCE_INIT;
static bool exit_ok;

static void drain_at_exit(void *unused)
{
	(void)unused;
	blk_drain();
	/* pthread cleared the key; a later free here must set it again. */
	blk_cache_tl.armed = false;
}

static void make_exit_key(void)
{
	exit_ok = pthread_key_create(&exit_key, drain_at_exit) == 0;
}

/* Arrange for this thread's cache to be drained when it exits. False if
 * that cannot be done (then the block is not cached). */
static bool arm(void)
{
	pthread_once(&exit_once, make_exit_key);
	if (!exit_ok || pthread_setspecific(exit_key, &blk_cache_tl) != 0)
		return false;
	blk_cache_tl.armed = true;
	return true;
}

/* The class of a @size-byte block, or NCLASS when it is not cached. */
static size_t class_of(size_t size)
{
	return size && size <= BLKCACHE_MAX ? (size - 1) / GRAIN : NCLASS;
}

static bool stack_room(struct blk_stack *st);

/*
 * A new chunk, never unmapped: SLAB_CHUNK bytes aligned to SLAB_CHUNK and
 * advised into a transparent huge page. Aligned at least to a page, so
 * that 128-byte slots sit on the 128-byte line pairs the hardware fetches
 * together (with chunks only 64-byte aligned every other slot straddled
 * two: bench-ab --pin multi-get-wide 1.04x against malloc, 0.98x with
 * 4096); aligned to 2 MiB so that a lookup of a random key costs no TLB
 * miss on top of its cache miss (bench-ab --pin, 6 rounds: multi-get-wide
 * 0.96x, multi-set 0.95x against 4 KiB pages). NULL on ENOMEM.
 */
static unsigned char *chunk_map(void)
{
	size_t len = 2 * SLAB_CHUNK;
	unsigned char *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
				MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uintptr_t a;

	if (p == MAP_FAILED)
		return NULL;
	/* Keep the aligned SLAB_CHUNK inside; give the rest back. */
	a = ((uintptr_t)p + SLAB_CHUNK - 1) & ~(uintptr_t)(SLAB_CHUNK - 1);
	if (a > (uintptr_t)p)
		munmap(p, a - (uintptr_t)p);
	if ((uintptr_t)p + len > a + SLAB_CHUNK)
		munmap((void *)(a + SLAB_CHUNK),
		       (uintptr_t)p + len - (a + SLAB_CHUNK));
	/* Advice only: without THP the chunk just uses small pages. */
	(void)madvise((void *)a, SLAB_CHUNK, MADV_HUGEPAGE);
	return (unsigned char *)a;
}

/*
 * An empty slab class @c: up to POOL_BATCH blocks from the shared pool onto
 * @st, the first of them returned; else a slot carved from this thread's
 * chunk (a new chunk when the rest is too short: what is left of the old
 * one, under a slot, stays unused). NULL on ENOMEM.
 */
static void *slab_alloc(size_t c, struct blk_stack *st)
{
	struct blk_cache *bc = &blk_cache_tl;
	size_t slot = slot_bytes(c);
	size_t cls = (c + 1) * GRAIN;
	void *b;

	/* Uncontended but for threads whose same class ran dry: a carve,
	 * or a batch from the pool, is one lock per POOL_BATCH blocks or per
	 * allocation while the store grows. */
	pthread_mutex_lock(&pool.lock);
	if ((b = pool_pop(c))) {
		for (size_t i = 1; i < POOL_BATCH && pool.head[c] &&
				   bc->bytes + cls <= BLKCACHE_BYTES &&
				   (bc->armed || arm()) && stack_room(st);
		     i++) {
			st->p[st->n++] = pool_pop(c);
			bc->bytes += cls;
		}
	} else {
		if ((size_t)(bc->carve_end - bc->carve) < slot) {
			unsigned char *chunk = chunk_map();

			if (chunk) {
				bc->carve = chunk;
				bc->carve_end = chunk + SLAB_CHUNK;
				pool.carved += SLAB_CHUNK;
			}
		}
		if ((size_t)(bc->carve_end - bc->carve) >= slot) {
			b = bc->carve;
			bc->carve += slot;
		}
	}
	pthread_mutex_unlock(&pool.lock);
	return b;
}

/* blk_alloc's other cases: not a cached size, an empty class, or ASan. */
void *blk_alloc_slow(size_t size)
{
	size_t c = class_of(size);
	struct blk_stack *st;
	void *b;

	if (c == NCLASS)
		return malloc(size);
	st = &blk_cache_tl.cls[c];
	if (!st->n && slab_class(c))
		return slab_alloc(c, st);
	if (!st->n)
		return malloc((c + 1) * GRAIN);
	b = st->p[--st->n];
	blk_prefetch_next(st, (c + 1) * GRAIN);
	UNPOISON(b, (c + 1) * GRAIN);
	blk_cache_tl.bytes -= (c + 1) * GRAIN;
	return b;
}

/* Room for one more pointer on @st. False on ENOMEM. */
static bool stack_room(struct blk_stack *st)
{
	size_t cap;
	void **p;

	if (st->n < st->cap)
		return true;
	cap = st->cap ? st->cap * 2 : STACK_MIN;
	p = realloc(st->p, cap * sizeof(*p));
	if (!p)
		return false;
	st->p = p;
	st->cap = cap;
	return true;
}

/* blk_free's other cases: not a cached size, a full stack or cache, the
 * thread's first free, or ASan. */
void blk_free_slow(void *p, size_t size)
{
	size_t c = class_of(size);
	struct blk_stack *st = &blk_cache_tl.cls[c < NCLASS ? c : 0];

	if (!p)
		return;
	if (c == NCLASS ||
	    blk_cache_tl.bytes + (c + 1) * GRAIN > BLKCACHE_BYTES ||
	    (!blk_cache_tl.armed && !arm()) || !stack_room(st)) {
		if (c != NCLASS && slab_class(c))
			pool_put(c, &p, 1); /* never malloc's */
		else
			free(p);
		return;
	}
	st->p[st->n++] = p;
	blk_cache_tl.bytes += (c + 1) * GRAIN;
	POISON(p, (c + 1) * GRAIN);
}

void blk_drain(void)
{
	for (size_t c = 0; c < NCLASS; c++) {
		struct blk_stack *st = &blk_cache_tl.cls[c];

		if (slab_class(c)) {
			pool_put(c, st->p, st->n);
			st->n = 0;
		}
		while (st->n) {
			void *b = st->p[--st->n];

			UNPOISON(b, (c + 1) * GRAIN);
			free(b);
		}
		free(st->p);
		*st = (struct blk_stack){ 0 };
	}
	blk_cache_tl.bytes = 0;
	/* The rest of the chunk is left unused (its carved blocks may live
	 * on in other threads' caches, so it cannot be freed). */
	blk_cache_tl.carve = blk_cache_tl.carve_end = NULL;
}

size_t blk_cached_bytes(void)
{
	return blk_cache_tl.bytes;
}

/* One of the pool's counters, read under its lock. */
static size_t pool_count(const size_t *v)
{
	size_t n;

	pthread_mutex_lock(&pool.lock);
	n = *v;
	pthread_mutex_unlock(&pool.lock);
	return n;
}

size_t blk_slab_bytes(void)
{
	return pool_count(&pool.carved);
}

size_t blk_pool_bytes(void)
{
	return pool_count(&pool.bytes);
}
