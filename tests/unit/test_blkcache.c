/* SPDX-License-Identifier: MIT */
/*
 * test_blkcache.c - unit tests for the per-thread block cache.
 *
 * One thread: a freed block comes back for the next allocation of its size
 * class (and only of its class), blocks are usable to the class's full
 * size, large blocks bypass the cache, the per-thread byte cap holds, and
 * blk_drain empties it. Threads: blocks allocated on one thread and freed on
 * another land in the freeing thread's cache, and a thread that exits with
 * a full cache gives its blocks back (under ASan's leak checker in
 * scripts/test, a leak fails the run).
 */
#include "helpers.h"

#include <stdlib.h>
#include <string.h>

#include "blkcache.h"

static void test_reuse_by_class(void **state)
{
	(void)state;
	blk_drain();
	assert_int_equal(blk_cached_bytes(), 0);

	char *a = blk_alloc(100); /* class 112 */
	assert_non_null(a);
	memset(a, 0xab, 112); /* the whole class is usable */
	blk_free(a, 100);
	assert_int_equal(blk_cached_bytes(), 112);

	/* Another class does not take it. */
	char *b = blk_alloc(200);
	assert_non_null(b);
	assert_ptr_not_equal(a, b);
	assert_int_equal(blk_cached_bytes(), 112);

	/* Any size of the same class does, LIFO. */
	char *c = blk_alloc(97);
	assert_ptr_equal(a, c);
	assert_int_equal(blk_cached_bytes(), 0);
	blk_free(c, 97);
	blk_free(b, 200);
	assert_int_equal(blk_cached_bytes(), 112 + 208);
	assert_ptr_equal(blk_alloc(208), b);
	assert_ptr_equal(blk_alloc(112), a);
	blk_free(a, 112);
	blk_free(b, 208);
	blk_drain();
	assert_int_equal(blk_cached_bytes(), 0);
}

static void test_large_blocks_bypass(void **state)
{
	(void)state;
	blk_drain();
	char *p = blk_alloc(BLKCACHE_MAX + 1);
	assert_non_null(p);
	memset(p, 1, BLKCACHE_MAX + 1);
	blk_free(p, BLKCACHE_MAX + 1);
	assert_int_equal(blk_cached_bytes(), 0);

	p = blk_alloc(BLKCACHE_MAX);
	blk_free(p, BLKCACHE_MAX);
	assert_int_equal(blk_cached_bytes(), BLKCACHE_MAX);
	blk_free(NULL, 64); /* no-op */
	assert_int_equal(blk_cached_bytes(), BLKCACHE_MAX);
	blk_drain();
}

static void test_byte_cap(void **state)
{
	size_t n = BLKCACHE_BYTES / BLKCACHE_MAX + 100;
	void **v = t_calloc(n, sizeof(*v));

	(void)state;
	blk_drain();
	for (size_t i = 0; i < n; i++) {
		v[i] = blk_alloc(BLKCACHE_MAX);
		assert_non_null(v[i]);
	}
	for (size_t i = 0; i < n; i++) {
		blk_free(v[i], BLKCACHE_MAX);
		assert_true(blk_cached_bytes() <= BLKCACHE_BYTES);
	}
	assert_int_equal(blk_cached_bytes(), BLKCACHE_BYTES);
	blk_drain();
	assert_int_equal(blk_cached_bytes(), 0);
	free(v);
}

#define HANDOFF 5000

struct handoff {
	void *blocks[HANDOFF];
	size_t cached_after; /* the freeing thread's cache, after its frees */
};

static void *free_them(void *arg)
{
	struct handoff *h = arg;

	for (size_t i = 0; i < HANDOFF; i++) {
		/* The allocator's writes are visible (pthread_create). */
		assert_int_equal(((unsigned char *)h->blocks[i])[47], i & 0xff);
		blk_free(h->blocks[i], 48);
	}
	h->cached_after = blk_cached_bytes();
	return NULL; /* exits with a full cache: the exit hook drains it */
}

static void test_cross_thread_free_and_exit(void **state)
{
	static struct handoff h;
	(void)state;
	blk_drain();
	for (size_t i = 0; i < HANDOFF; i++) {
		h.blocks[i] = blk_alloc(48);
		assert_non_null(h.blocks[i]);
		memset(h.blocks[i], (int)(i & 0xff), 48);
	}
	t_join(t_thread(free_them, &h));
	assert_int_equal(h.cached_after, (size_t)HANDOFF * 48);
	/* They went to the other thread's cache, not ours. */
	assert_int_equal(blk_cached_bytes(), 0);
}

/*
 * Slab classes (blkcache.h): 64-byte aligned; a block freed on another
 * thread, beyond its cache or at its exit, goes to the shared pool and is
 * allocated again before anything new is carved.
 */
#define SLAB_N 20000 /* 112-byte blocks: 2.1 MB, under the cache's cap */

static void *free_slabs(void *arg)
{
	void **v = arg;

	for (size_t i = 0; i < SLAB_N; i++)
		blk_free(v[i], 112);
	return NULL; /* the exit hook hands them to the pool */
}

static void test_slab_blocks(void **state)
{
	static void *v[SLAB_N];
	size_t carved;

	(void)state;
	if (BLKCACHE_POISONS)
		t_skip("ASan: every block is malloc's");
	blk_drain();
	for (size_t i = 0; i < SLAB_N; i++) {
		v[i] = blk_alloc(100 + i % 13); /* class 112 */
		assert_non_null(v[i]);
		assert_int_equal((uintptr_t)v[i] % 64, 0);
		memset(v[i], (int)(i & 0xff), 112);
	}
	/* Slots do not overlap: every block still holds its own bytes. */
	for (size_t i = 0; i < SLAB_N; i++) {
		assert_int_equal(((unsigned char *)v[i])[0], i & 0xff);
		assert_int_equal(((unsigned char *)v[i])[111], i & 0xff);
	}
	for (size_t b = 48; b <= 512; b += 16) {
		void *p = blk_alloc(b);

		assert_non_null(p);
		if (b % 64 == 0 || b % 64 == 48)
			assert_int_equal((uintptr_t)p % 64, 0);
		blk_free(p, b);
	}
	blk_drain();
	/* Freed on another thread, which exits: all of them to the pool. */
	t_join(t_thread(free_slabs, v));
	assert_true(blk_pool_bytes() >= (size_t)SLAB_N * 112);
	carved = blk_slab_bytes();
	for (size_t i = 0; i < SLAB_N; i++) {
		v[i] = blk_alloc(112);
		assert_non_null(v[i]);
		assert_int_equal((uintptr_t)v[i] % 64, 0);
	}
	/* ...and they came back: nothing new was carved for them. */
	assert_int_equal(blk_slab_bytes(), carved);
	for (size_t i = 0; i < SLAB_N; i++)
		blk_free(v[i], 112);
	blk_drain();
	assert_int_equal(blk_cached_bytes(), 0);
}

/* A slab block freed beyond the byte cap goes to the pool (malloc's free
 * of it would be a crash, or a corrupt heap). */
static void test_slab_beyond_cap(void **state)
{
	size_t n = BLKCACHE_BYTES / BLKCACHE_MAX + 100, pooled;
	void **v;

	(void)state;
	if (BLKCACHE_POISONS)
		t_skip("ASan: every block is malloc's");
	v = t_calloc(n, sizeof(*v));
	blk_drain();
	for (size_t i = 0; i < n; i++) {
		v[i] = blk_alloc(BLKCACHE_MAX); /* 512: a slab class */
		assert_non_null(v[i]);
	}
	pooled = blk_pool_bytes();
	for (size_t i = 0; i < n; i++)
		blk_free(v[i], BLKCACHE_MAX);
	assert_int_equal(blk_cached_bytes(), BLKCACHE_BYTES);
	assert_int_equal(blk_pool_bytes() - pooled, (size_t)100 * BLKCACHE_MAX);
	blk_drain();
	free(v);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_reuse_by_class),
		cmocka_unit_test(test_large_blocks_bypass),
		cmocka_unit_test(test_byte_cap),
		cmocka_unit_test(test_cross_thread_free_and_exit),
		cmocka_unit_test(test_slab_blocks),
		cmocka_unit_test(test_slab_beyond_cap),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
