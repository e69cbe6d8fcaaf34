/* SPDX-License-Identifier: MIT */
/*
 * blkcache.c - see blkcache.h. A block of class c holds (c + 1) * 16 bytes.
 */
#include "blkcache.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

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

_Thread_local struct blk_cache blk_cache_tl;

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

/* blk_alloc's other cases: not a cached size, an empty class, or ASan. */
void *blk_alloc_slow(size_t size)
{
	size_t c = class_of(size);
	struct blk_stack *st;
	void *b;

	if (c == NCLASS)
		return malloc(size);
	st = &blk_cache_tl.cls[c];
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
	if (c == NCLASS || blk_cache_tl.bytes + (c + 1) * GRAIN > BLKCACHE_BYTES ||
	    (!blk_cache_tl.armed && !arm()) || !stack_room(st)) {
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

		while (st->n) {
			void *b = st->p[--st->n];

			UNPOISON(b, (c + 1) * GRAIN);
			free(b);
		}
		free(st->p);
		*st = (struct blk_stack){ 0 };
	}
	blk_cache_tl.bytes = 0;
}

size_t blk_cached_bytes(void)
{
	return blk_cache_tl.bytes;
}
