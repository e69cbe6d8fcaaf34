/* SPDX-License-Identifier: MIT */
/*
 * test_outq.c - unit tests for a connection's reply queue: reserve/commit
 * (written in place, one segment per run of inline bytes, iovecs in order
 * across partial sends) and the thread's pool of large buffers (a drained
 * queue keeps at most OUTQ_KEEP bytes; its larger buffer is taken again by
 * the next large reply, so a burst reuses memory instead of growing more).
 */
#include "helpers.h"

#include <stdlib.h>
#include <string.h>

#include "outq.h"

static void test_reserve_commit_in_order(void **state)
{
	struct outq q = { 0 };
	uint8_t out[64];
	uint8_t *p;
	struct iovec iov[4];

	(void)state;
	assert_int_equal(outq_put(&q, "ab", 2), 0);
	p = outq_reserve(&q, 10);
	assert_non_null(p);
	memcpy(p, "cdefXXXXXX", 10);
	assert_int_equal(outq_commit(&q, 4), 0); /* only "cdef" */
	assert_int_equal(outq_len(&q), 6);
	/* contiguous inline bytes stay one segment */
	assert_int_equal(outq_iov(&q, iov, 4), 1);
	assert_int_equal(outq_commit(&q, 0), 0);
	assert_int_equal(outq_put(&q, "gh", 2), 0);
	assert_int_equal(t_outq_gather(&q, out, sizeof(out)), 8);
	assert_memory_equal(out, "abcdefgh", 8);
	outq_consume(&q, 3);
	assert_int_equal(t_outq_gather(&q, out, sizeof(out)), 5);
	assert_memory_equal(out, "defgh", 5);
	outq_free(&q);
}

static void test_drained_queue_pools_a_large_buffer(void **state)
{
	struct outq a = { 0 }, b = { 0 };
	size_t big = 100000;
	uint8_t *p, *first;

	(void)state;
	first = outq_reserve(&a, big);
	assert_non_null(first);
	memset(first, 7, big);
	assert_int_equal(outq_commit(&a, big), 0);
	outq_consume(&a, big);
	/* drained: the big buffer left the queue */
	assert_true(a.bytes.cap <= OUTQ_KEEP);
	assert_int_equal(outq_len(&a), 0);

	/* the next large reply, on another queue, gets that very buffer */
	p = outq_reserve(&b, big);
	assert_ptr_equal(p, first);
	assert_int_equal(outq_commit(&b, big), 0);
	assert_int_equal(outq_len(&b), big);

	/* a small reply does not take a pooled buffer */
	assert_int_equal(outq_put(&a, "x", 1), 0);
	assert_true(a.bytes.cap <= OUTQ_KEEP);

	/* freeing a queue frees its storage rather than pooling it */
	outq_free(&b);
	p = outq_reserve(&b, big);
	assert_non_null(p);
	assert_int_equal(outq_commit(&b, big), 0);
	outq_free(&b);
	outq_free(&a);
	outq_pool_drain();
}

static void test_small_buffer_is_kept_when_drained(void **state)
{
	struct outq q = { 0 };
	uint8_t *p;

	(void)state;
	assert_int_equal(outq_put(&q, "hello", 5), 0);
	p = q.bytes.data;
	outq_consume(&q, 5);
	assert_ptr_equal(q.bytes.data, p); /* kept for the next reply */
	assert_int_equal(outq_put(&q, "again", 5), 0);
	assert_ptr_equal(q.bytes.data, p);
	outq_free(&q);
	outq_pool_drain();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_reserve_commit_in_order),
		cmocka_unit_test(test_drained_queue_pools_a_large_buffer),
		cmocka_unit_test(test_small_buffer_is_kept_when_drained),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
