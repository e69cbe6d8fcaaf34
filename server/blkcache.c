/* SPDX-License-Identifier: MIT */
/*
 * blkcache.c - see blkcache.h. A block of class c holds (c + 1) * 16 bytes.
 */
#include "blkcache.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define RS_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define RS_ASAN 1
#endif

#ifdef RS_ASAN
#include <sanitizer/asan_interface.h>
#define POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

#define GRAIN 16
#define NCLASS (BLKCACHE_MAX / GRAIN)
#define STACK_MIN 64
#define PREFETCH_AHEAD 4

/*
 * A class's cached blocks are a stack of pointers, not a list linked
 * through the blocks: popping one must not load from it, because a block
 * freed a grace period ago is usually out of the CPU's caches and a
 * linked list makes every allocation wait for that miss.
 */
struct stack {
	void **p;
	size_t n, cap;
};

static _Thread_local struct {
	struct stack cls[NCLASS];
	size_t bytes;
	bool armed; /* the exit hook below is set for this thread */
} cache;

/* A thread that exits drains its cache (pthread key destructor). */
static pthread_key_t exit_key;
static pthread_once_t exit_once = PTHREAD_ONCE_INIT;
static bool exit_ok;

static void drain_at_exit(void *unused)
{
	(void)unused;
	blk_drain();
	/* pthread cleared the key; a later free here must set it again. */
	cache.armed = false;
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
	if (!exit_ok || pthread_setspecific(exit_key, &cache) != 0)
		return false;
	cache.armed = true;
	return true;
}

/* The class of a @size-byte block, or NCLASS when it is not cached. */
static size_t class_of(size_t size)
{
	return size && size <= BLKCACHE_MAX ? (size - 1) / GRAIN : NCLASS;
}

void *blk_alloc(size_t size)
{
	size_t c = class_of(size);
	struct stack *st;
	void *b;

	if (c == NCLASS)
		return malloc(size);
	st = &cache.cls[c];
	if (!st->n)
		return malloc((c + 1) * GRAIN);
	b = st->p[--st->n];
	/* A cached block is cold by the time it is reused (it was freed a
	 * grace period ago), and the caller is about to fill it: fetch the
	 * block PREFETCH_AHEAD allocations from now, for writing, so that the
	 * store misses do not fill the store buffer and stall the core. */
	if (st->n >= PREFETCH_AHEAD) {
		char *next = st->p[st->n - PREFETCH_AHEAD];

		__builtin_prefetch(next, 1);
		if ((c + 1) * GRAIN > 64)
			__builtin_prefetch(next + 64, 1);
	}
	UNPOISON(b, (c + 1) * GRAIN);
	cache.bytes -= (c + 1) * GRAIN;
	return b;
}

/* Room for one more pointer on @st. False on ENOMEM. */
static bool stack_room(struct stack *st)
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

void blk_free(void *p, size_t size)
{
	size_t c = class_of(size);
	struct stack *st = &cache.cls[c < NCLASS ? c : 0];

	if (!p)
		return;
	if (c == NCLASS || cache.bytes + (c + 1) * GRAIN > BLKCACHE_BYTES ||
	    (!cache.armed && !arm()) || !stack_room(st)) {
		free(p);
		return;
	}
	st->p[st->n++] = p;
	cache.bytes += (c + 1) * GRAIN;
	POISON(p, (c + 1) * GRAIN);
}

void blk_drain(void)
{
	for (size_t c = 0; c < NCLASS; c++) {
		struct stack *st = &cache.cls[c];

		while (st->n) {
			void *b = st->p[--st->n];

			UNPOISON(b, (c + 1) * GRAIN);
			free(b);
		}
		free(st->p);
		*st = (struct stack){ 0 };
	}
	cache.bytes = 0;
}

size_t blk_cached_bytes(void)
{
	return cache.bytes;
}
