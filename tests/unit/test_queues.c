/* SPDX-License-Identifier: MIT */
/*
 * test_queues.c - the named FIFO queues (queues.c) on one thread: items
 * come out in push order, a pop returns the length before it and an empty
 * pop touches nothing; queues are told apart by their key bytes, also when
 * their hashes collide or share a stripe; the counters (non-empty queues,
 * items, bytes) follow every push and pop, so a queue that empties leaves
 * nothing behind; destroy releases what is still queued (ASan's leak check
 * in scripts/test). Cross-thread pushes and pops: the stress test.
 */
#include "helpers.h"

#include <string.h>

#include "hash.h"
#include "queues.h"
#include "stripemap.h"
#include "table.h"

static int push(struct queues *qs, uint64_t h, const char *k, const char *v)
{
	return queues_push(qs, h, (const uint8_t *)k, strlen(k),
			   (const uint8_t *)v, strlen(v));
}

/* Pop from @k: the length before the pop must be @len, and the item @v. */
static void expect_pop(struct queues *qs, uint64_t h, const char *k,
		       int64_t len, const char *v)
{
	struct table_entry *e = NULL;

	assert_int_equal(queues_pop(qs, h, (const uint8_t *)k, strlen(k), &e),
			 len);
	assert_non_null(e);
	assert_int_equal(e->vlen, strlen(v));
	assert_memory_equal(table_entry_val(e), v, strlen(v));
	table_entry_unref(e);
}

static int64_t len_of(struct queues *qs, uint64_t h, const char *k)
{
	return queues_len(qs, h, (const uint8_t *)k, strlen(k));
}

static void test_fifo_and_counters(void **state)
{
	struct queues *qs = queues_create();
	uint64_t h = hash_key("/q", 2);
	struct table_entry *e = (struct table_entry *)&e;

	(void)state;
	assert_non_null(qs);
	assert_int_equal(len_of(qs, h, "/q"), 0);
	assert_int_equal(queues_pop(qs, h, (const uint8_t *)"/q", 2, &e), 0);
	assert_ptr_equal(e, (struct table_entry *)&e); /* untouched */
	assert_int_equal(push(qs, h, "/q", "one"), 0);
	assert_int_equal(push(qs, h, "/q", ""), 0);
	assert_int_equal(push(qs, h, "/q", "three"), 0);
	assert_int_equal(len_of(qs, h, "/q"), 3);
	assert_int_equal(queues_nonempty(qs), 1);
	assert_int_equal(queues_items(qs), 3);
	assert_int_equal(queues_bytes(qs), 8);
	expect_pop(qs, h, "/q", 3, "one");
	assert_int_equal(push(qs, h, "/q", "four"), 0);
	expect_pop(qs, h, "/q", 3, "");
	expect_pop(qs, h, "/q", 2, "three");
	assert_int_equal(queues_bytes(qs), 4);
	expect_pop(qs, h, "/q", 1, "four");
	/* Empty again: as if it had never been. */
	assert_int_equal(len_of(qs, h, "/q"), 0);
	assert_int_equal(queues_nonempty(qs), 0);
	assert_int_equal(queues_items(qs), 0);
	assert_int_equal(queues_bytes(qs), 0);
	assert_int_equal(push(qs, h, "/q", "again"), 0);
	expect_pop(qs, h, "/q", 1, "again");
	queues_destroy(qs);
}

/* Keys whose hashes are equal, or equal in the bits that pick a stripe,
 * and keys that are prefixes of each other: separate queues. */
static void test_queues_apart(void **state)
{
	struct queues *qs = queues_create();
	const uint64_t h = 4242, near = h + STRIPEMAP_STRIPES;

	(void)state;
	assert_non_null(qs);
	assert_int_equal(push(qs, h, "/a", "a1"), 0);
	assert_int_equal(push(qs, h, "/b", "b1"), 0);    /* same hash */
	assert_int_equal(push(qs, near, "/a", "n1"), 0); /* same stripe */
	assert_int_equal(push(qs, h, "/aa", "x1"), 0);
	assert_int_equal(push(qs, h, "/a", "a2"), 0);
	assert_int_equal(queues_nonempty(qs), 4);
	assert_int_equal(len_of(qs, h, "/a"), 2);
	assert_int_equal(len_of(qs, h, "/b"), 1);
	assert_int_equal(len_of(qs, near, "/a"), 1);
	assert_int_equal(len_of(qs, h, "/aa"), 1);
	assert_int_equal(len_of(qs, h, ""), 0);
	expect_pop(qs, h, "/b", 1, "b1");
	expect_pop(qs, h, "/a", 2, "a1");
	expect_pop(qs, near, "/a", 1, "n1");
	assert_int_equal(queues_nonempty(qs), 2);
	expect_pop(qs, h, "/a", 1, "a2");
	assert_int_equal(len_of(qs, h, "/aa"), 1);
	/* Destroyed with "/aa" still holding an item. */
	queues_destroy(qs);
	queues_destroy(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fifo_and_counters),
		cmocka_unit_test(test_queues_apart),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
