/* SPDX-License-Identifier: MIT */
/*
 * test_qsbr.c - unit tests for quiescent-state-based reclamation.
 *
 * Most cases drive several struct qsbr_thread handles from the test thread,
 * which makes the interleaving exact: an object must not be freed while any
 * online handle has not passed a quiescent point since its retirement. The
 * last case runs real threads swapping a shared pointer, for ASan and TSan.
 */
#include "helpers.h"

#include <stdatomic.h>
#include <stdlib.h>

#include "qsbr.h"

static _Atomic int freed;

static void count_free(void *p)
{
	atomic_fetch_add(&freed, 1);
	free(p);
}

static void *obj(void)
{
	return t_malloc(16);
}

/* A domain with two threads registered, @a and @b. */
static struct qsbr *two_threads(struct qsbr_thread **a, struct qsbr_thread **b)
{
	struct qsbr *q = qsbr_create();

	assert_non_null(q);
	*a = qsbr_register(q);
	*b = qsbr_register(q);
	assert_non_null(*a);
	assert_non_null(*b);
	return q;
}

/* @t passes @n quiescent points. */
static void quiesce(struct qsbr_thread *t, int n)
{
	for (int i = 0; i < n; i++)
		qsbr_quiescent(t);
}

/* @t passes up to @n quiescent points, until @want objects in all have
 * been freed; exactly @want must have been by then. */
static void quiesce_until_freed(struct qsbr_thread *t, int n, int want)
{
	for (int i = 0; i < n && atomic_load(&freed) < want; i++)
		qsbr_quiescent(t);
	assert_int_equal(atomic_load(&freed), want);
}

static int setup(void **state)
{
	(void)state;
	atomic_store(&freed, 0);
	return 0;
}

static void test_single_thread_frees(void **state)
{
	struct qsbr *q = qsbr_create();
	struct qsbr_thread *a;

	(void)state;
	assert_non_null(q);
	a = qsbr_register(q);
	assert_non_null(a);
	qsbr_retire(a, obj(), count_free);
	assert_int_equal(qsbr_pending(q), 1);
	quiesce_until_freed(a, 3, 1);
	assert_int_equal(qsbr_pending(q), 0);
	qsbr_unregister(a);
	qsbr_destroy(q);
}

static void test_waits_for_every_online_thread(void **state)
{
	struct qsbr_thread *a, *b;
	struct qsbr *q = two_threads(&a, &b);

	(void)state;
	qsbr_retire(a, obj(), count_free);
	/* b may still hold the object: no amount of a's progress frees it. */
	quiesce(a, 10);
	assert_int_equal(atomic_load(&freed), 0);
	assert_int_equal(qsbr_pending(q), 1);
	/* Once b passes a quiescent point, a frees it within two more. */
	qsbr_quiescent(b);
	quiesce_until_freed(a, 2, 1);
	/* b's quiescent point must come after the retirement to count. */
	qsbr_quiescent(b);
	qsbr_retire(a, obj(), count_free);
	quiesce(a, 10);
	assert_int_equal(atomic_load(&freed), 1);
	qsbr_quiescent(b);
	quiesce_until_freed(a, 2, 2);
	qsbr_unregister(a);
	qsbr_unregister(b);
	assert_int_equal(qsbr_pending(q), 0);
	qsbr_destroy(q);
}

static void test_offline_does_not_block(void **state)
{
	struct qsbr_thread *a, *b;
	struct qsbr *q = two_threads(&a, &b);

	(void)state;
	qsbr_offline(b);
	qsbr_retire(a, obj(), count_free);
	quiesce_until_freed(a, 2, 1);
	/* Back online, b holds back what is retired after. */
	qsbr_online(b);
	qsbr_retire(a, obj(), count_free);
	quiesce(a, 10);
	assert_int_equal(atomic_load(&freed), 1);
	/* Going offline implies a quiescent point. */
	qsbr_offline(b);
	quiesce_until_freed(a, 2, 2);
	qsbr_unregister(a);
	qsbr_unregister(b);
	qsbr_destroy(q);
}

static void test_unregister_hands_over(void **state)
{
	struct qsbr_thread *a, *b;
	struct qsbr *q = two_threads(&a, &b);

	(void)state;
	qsbr_retire(a, obj(), count_free);
	qsbr_retire(a, obj(), count_free);
	qsbr_unregister(a);
	/* b has not passed a quiescent point: nothing may be freed yet. */
	assert_int_equal(atomic_load(&freed), 0);
	assert_int_equal(qsbr_pending(q), 2);
	/* b's own quiescent points free the orphans. */
	quiesce_until_freed(b, 3, 2);
	assert_int_equal(qsbr_pending(q), 0);
	/* Unregistering the last thread frees at once. */
	qsbr_retire(b, obj(), count_free);
	qsbr_unregister(b);
	assert_int_equal(atomic_load(&freed), 3);
	qsbr_destroy(q);
}

static void test_destroy_frees_orphans(void **state)
{
	struct qsbr_thread *a, *b;
	struct qsbr *q = two_threads(&a, &b);

	(void)state;
	qsbr_retire(a, obj(), count_free);
	qsbr_unregister(a);
	assert_int_equal(atomic_load(&freed), 0);
	/* b leaves without a quiescent point; destroy must free it. */
	qsbr_offline(b);
	qsbr_unregister(b);
	qsbr_destroy(q);
	assert_int_equal(atomic_load(&freed), 1);
}

static void test_ring_grows(void **state)
{
	struct qsbr_thread *a, *b;
	struct qsbr *q = two_threads(&a, &b);
	const int n = 5000;

	(void)state;
	for (int i = 0; i < n; i++) {
		qsbr_retire(a, obj(), count_free);
		qsbr_quiescent(a);
	}
	assert_int_equal(atomic_load(&freed), 0);
	assert_int_equal(qsbr_pending(q), n);
	qsbr_quiescent(b);
	qsbr_quiescent(a);
	qsbr_quiescent(b);
	qsbr_quiescent(a);
	assert_int_equal(atomic_load(&freed), n);
	assert_int_equal(qsbr_pending(q), 0);
	qsbr_unregister(a);
	qsbr_unregister(b);
	qsbr_destroy(q);
}

/* Threads replace a shared object and retire the old one while readers
 * check that what they borrow is never freed under them. */
#define MAGIC 0x5eed5eedu
#define NTHREADS 4
#define ITERS 20000

struct shared_obj {
	_Atomic unsigned magic;
	unsigned gen;
};

static _Atomic(struct shared_obj *) shared;
static struct qsbr *gq;
static _Atomic int bad;

static void poison_free(void *p)
{
	struct shared_obj *o = p;

	atomic_store_explicit(&o->magic, 0, memory_order_relaxed);
	free(o);
	atomic_fetch_add(&freed, 1);
}

static void *churn(void *arg)
{
	struct qsbr_thread *t = qsbr_register(gq);
	unsigned id = (unsigned)(uintptr_t)arg;

	if (!t) {
		atomic_fetch_add(&bad, 1);
		return NULL;
	}
	for (unsigned i = 0; i < ITERS; i++) {
		struct shared_obj *o =
			atomic_load_explicit(&shared, memory_order_acquire);

		if (atomic_load_explicit(&o->magic, memory_order_relaxed) !=
		    MAGIC)
			atomic_fetch_add(&bad, 1);
		if (i % 4 == id % 4) {
			struct shared_obj *n = malloc(sizeof(*n));

			if (!n) {
				atomic_fetch_add(&bad, 1);
				break;
			}
			atomic_init(&n->magic, MAGIC);
			n->gen = i;
			o = atomic_exchange_explicit(&shared, n,
						     memory_order_acq_rel);
			qsbr_retire(t, o, poison_free);
		}
		if (i % 16 == 0)
			qsbr_quiescent(t);
		if (i % 1000 == 999) {
			qsbr_offline(t);
			qsbr_online(t);
		}
	}
	qsbr_unregister(t);
	return NULL;
}

static void test_threads(void **state)
{
	pthread_t th[NTHREADS];
	struct shared_obj *first = t_malloc(sizeof(*first));

	(void)state;
	gq = qsbr_create();
	assert_non_null(gq);
	atomic_store(&bad, 0);
	atomic_init(&first->magic, MAGIC);
	atomic_store(&shared, first);
	for (uintptr_t i = 0; i < NTHREADS; i++)
		th[i] = t_thread(churn, (void *)i);
	for (int i = 0; i < NTHREADS; i++)
		t_join(th[i]);
	assert_int_equal(atomic_load(&bad), 0);
	qsbr_destroy(gq);
	/* Every retired object was freed, once (ASan checks the rest). */
	assert_int_equal(atomic_load(&freed), NTHREADS * (ITERS / 4));
	free(atomic_load(&shared));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_single_thread_frees, setup),
		cmocka_unit_test_setup(test_waits_for_every_online_thread,
				       setup),
		cmocka_unit_test_setup(test_offline_does_not_block, setup),
		cmocka_unit_test_setup(test_unregister_hands_over, setup),
		cmocka_unit_test_setup(test_destroy_frees_orphans, setup),
		cmocka_unit_test_setup(test_ring_grows, setup),
		cmocka_unit_test_setup(test_threads, setup),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
