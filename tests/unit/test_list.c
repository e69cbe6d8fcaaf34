/* SPDX-License-Identifier: MIT */
/*
 * test_list.c - the typed intrusive lists of common/list.h: order after
 * appends at either end, unlinks at the head, the tail, the middle and of a
 * sole element (both links cleared, the ends kept), membership, a zeroed
 * list and element as valid empty and unlinked ones, and one element on two
 * lists at once through two pairs of fields (as a connection is on the
 * handshake list, oldest first, and unlinked when it validates).
 */
#include "helpers.h"

#include "list.h"

struct item {
	int v;
	struct item *next, *prev;     /* on a struct items */
	struct item *o_next, *o_prev; /* on a struct others */
};

LIST_DEFINE(items, struct item, next, prev)
LIST_DEFINE(others, struct item, o_next, o_prev)

/* @l holds exactly the @n values of @want, head to tail, and its links
 * agree walked backwards. */
static void expect(const struct items *l, const int *want, int n)
{
	const struct item *it = l->head, *last = NULL;
	int i = 0;

	for (; it; last = it, it = it->next, i++) {
		assert_true(i < n);
		assert_int_equal(it->v, want[i]);
		assert_ptr_equal(it->prev, last);
	}
	assert_int_equal(i, n);
	assert_ptr_equal(l->tail, last);
}

static void test_push_and_remove(void **state)
{
	struct item e[5] = { { .v = 0 },
			     { .v = 1 },
			     { .v = 2 },
			     { .v = 3 },
			     { .v = 4 } };
	struct items l = { 0 };

	(void)state;
	expect(&l, NULL, 0);
	assert_false(items_linked(&l, &e[0]));
	items_push_tail(&l, &e[1]);
	items_push_tail(&l, &e[2]);
	items_push_head(&l, &e[0]);
	items_push_tail(&l, &e[3]);
	items_push_tail(&l, &e[4]);
	expect(&l, (const int[]){ 0, 1, 2, 3, 4 }, 5);
	for (int i = 0; i < 5; i++)
		assert_true(items_linked(&l, &e[i]));

	items_remove(&l, &e[2]); /* the middle */
	expect(&l, (const int[]){ 0, 1, 3, 4 }, 4);
	assert_false(items_linked(&l, &e[2]));
	assert_null(e[2].next);
	assert_null(e[2].prev);
	items_remove(&l, &e[0]); /* the head */
	expect(&l, (const int[]){ 1, 3, 4 }, 3);
	assert_false(items_linked(&l, &e[0]));
	items_remove(&l, &e[4]); /* the tail */
	expect(&l, (const int[]){ 1, 3 }, 2);
	assert_null(e[4].prev);
	assert_false(items_linked(&l, &e[4]));
	items_remove(&l, &e[1]);
	expect(&l, (const int[]){ 3 }, 1);
	assert_true(items_linked(&l, &e[3])); /* the sole one: it is the head */
	items_remove(&l, &e[3]);
	expect(&l, NULL, 0);
	assert_false(items_linked(&l, &e[3]));

	/* Removed elements can go back on, at either end. */
	items_push_head(&l, &e[3]);
	items_push_head(&l, &e[2]);
	items_push_tail(&l, &e[4]);
	expect(&l, (const int[]){ 2, 3, 4 }, 3);
}

/* An oldest-first queue with unlinks from anywhere, on a second pair of
 * fields: the first list is untouched by it. */
static void test_two_lists(void **state)
{
	struct item e[4] = { { .v = 0 }, { .v = 1 }, { .v = 2 }, { .v = 3 } };
	struct items a = { 0 };
	struct others o = { 0 };

	(void)state;
	for (int i = 0; i < 4; i++) {
		items_push_tail(&a, &e[i]);
		others_push_tail(&o, &e[3 - i]);
	}
	assert_ptr_equal(o.head, &e[3]);
	others_remove(&o, &e[1]);
	assert_false(others_linked(&o, &e[1]));
	assert_true(items_linked(&a, &e[1]));
	/* Expire from the head until one is too young (here: e[0]). */
	while (o.head && o.head->v > 0)
		others_remove(&o, o.head);
	assert_ptr_equal(o.head, &e[0]);
	assert_ptr_equal(o.tail, &e[0]);
	expect(&a, (const int[]){ 0, 1, 2, 3 }, 4);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_push_and_remove),
		cmocka_unit_test(test_two_lists),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
