/* SPDX-License-Identifier: MIT */
/*
 * test_stripemap.c - the lock-striped map under waiters.c and queues.c:
 * a key is found by its hash and its bytes (a copy, taken at add), never by
 * the hash alone; keys whose hashes share low bits share a stripe and its
 * chain, and deleting one leaves the others (at the head, in the middle, at
 * the tail); fini drops and frees every record left, once. One
 * thread: what the locks and counts guarantee is the owners' argument,
 * tested through them (unit_store, the stress test under TSan).
 */
#include "helpers.h"

#include <stdlib.h>
#include <string.h>

#include "compiler.h"
#include "stripemap.h"

struct rec {
	struct stripemap_rec rec;
	int val;
	uint8_t key[];
};

static struct stripemap *map_new(void)
{
	struct stripemap *m = aligned_alloc(RS_CACHELINE, sizeof(*m));

	assert_non_null(m);
	stripemap_init(m, sizeof(struct rec), offsetof(struct rec, key));
	return m;
}

static struct rec *add(struct stripemap *m, uint64_t h, const char *k)
{
	struct stripe *s = stripemap_stripe(m, h);
	struct stripemap_rec *r;

	pthread_mutex_lock(&s->lock);
	assert_null(stripemap_find(m, s, h, (const uint8_t *)k, strlen(k)));
	r = stripemap_add(m, s, h, (const uint8_t *)k, strlen(k));
	assert_non_null(r);
	container_of(r, struct rec, rec)->val = 0; /* the owner's part */
	pthread_mutex_unlock(&s->lock);
	assert_int_equal(r->hash, h);
	assert_int_equal(r->klen, strlen(k));
	return container_of(r, struct rec, rec);
}

static struct rec *find(struct stripemap *m, uint64_t h, const char *k)
{
	struct stripe *s = stripemap_stripe(m, h);
	struct stripemap_rec *r;

	pthread_mutex_lock(&s->lock);
	r = stripemap_find(m, s, h, (const uint8_t *)k, strlen(k));
	pthread_mutex_unlock(&s->lock);
	return r ? container_of(r, struct rec, rec) : NULL;
}

static void del(struct stripemap *m, struct rec *r)
{
	struct stripe *s = stripemap_stripe(m, r->rec.hash);

	pthread_mutex_lock(&s->lock);
	stripemap_del(s, &r->rec);
	pthread_mutex_unlock(&s->lock);
}

static int dropped;

static void drop(struct stripemap_rec *r, void *arg)
{
	assert_ptr_equal(arg, &dropped);
	dropped += container_of(r, struct rec, rec)->val;
}

static void test_find_by_hash_and_bytes(void **state)
{
	struct stripemap *m = map_new();
	char k[] = "/key";
	struct rec *a, *b, *e;

	(void)state;
	a = add(m, 7, k);
	a->val = 1;
	k[1] = 'K'; /* the map holds its own copy */
	assert_null(find(m, 7, k));
	assert_ptr_equal(find(m, 7, "/key"), a);
	assert_memory_equal(a->key, "/key", 4);
	/* The same hash, other bytes (a full collision), and the same bytes
	 * under another hash: three keys. */
	b = add(m, 7, "/kez");
	assert_ptr_not_equal(b, a);
	assert_null(find(m, 8, "/key"));
	e = add(m, 8, "/key");
	assert_ptr_equal(find(m, 7, "/key"), a);
	assert_ptr_equal(find(m, 7, "/kez"), b);
	assert_ptr_equal(find(m, 8, "/key"), e);
	/* A prefix is another key; so is the empty one. */
	assert_null(find(m, 7, "/ke"));
	assert_null(find(m, 7, ""));
	e = add(m, 7, "");
	assert_ptr_equal(find(m, 7, ""), e);
	assert_ptr_equal(find(m, 7, "/key"), a);
	stripemap_fini(m, NULL, NULL);
	free(m);
}

static void test_stripes_and_chains(void **state)
{
	struct stripemap *m = map_new();
	const uint64_t h = 12345;
	struct rec *r[4];

	(void)state;
	/* Hashes equal in their low bits share a stripe. */
	assert_ptr_equal(stripemap_stripe(m, h),
			 stripemap_stripe(m, h + STRIPEMAP_STRIPES));
	assert_ptr_not_equal(stripemap_stripe(m, h),
			     stripemap_stripe(m, h + 1));
	for (int i = 0; i < 4; i++)
		r[i] = add(m, h + (uint64_t)i * STRIPEMAP_STRIPES, "k");
	/* The newest first; deleting from the middle, the head and the tail
	 * leaves the rest findable. */
	assert_ptr_equal(stripemap_stripe(m, h)->recs.head, &r[3]->rec);
	del(m, r[1]);
	del(m, r[3]);
	del(m, r[0]);
	assert_null(find(m, h, "k"));
	assert_null(find(m, h + STRIPEMAP_STRIPES, "k"));
	assert_ptr_equal(find(m, h + 2 * STRIPEMAP_STRIPES, "k"), r[2]);
	del(m, r[2]);
	assert_null(stripemap_stripe(m, h)->recs.head);
	assert_null(stripemap_stripe(m, h)->recs.tail);
	stripemap_fini(m, NULL, NULL);
	free(m);
}

static void test_fini_drops_what_is_left(void **state)
{
	struct stripemap *m = map_new();
	char k[16];

	(void)state;
	dropped = 0;
	for (int i = 0; i < 100; i++) {
		snprintf(k, sizeof(k), "q%d", i);
		add(m, (uint64_t)i * 977, k)->val = 1 << (i % 8);
	}
	del(m, find(m, 0, "q0")); /* val 1: not dropped */
	stripemap_fini(m, drop, &dropped);
	/* 100 records of 1..128 (cycling), less the first. */
	assert_int_equal(dropped, 100 / 8 * 255 + (1 + 2 + 4 + 8) - 1);
	free(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_find_by_hash_and_bytes),
		cmocka_unit_test(test_stripes_and_chains),
		cmocka_unit_test(test_fini_drops_what_is_left),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
