/* SPDX-License-Identifier: MIT */
/*
 * test_mpsc.c - unit tests for the cross-reactor message queue.
 *
 * One thread: FIFO order, a full queue reports -EAGAIN and takes messages
 * again once popped, and many laps over the cells. Threads: several
 * producers push numbered messages while one consumer pops; every message
 * arrives exactly once and each producer's messages in order (run under
 * TSan by scripts/test).
 */
#include "helpers.h"

#include <errno.h>
#include <sched.h>
#include <stdlib.h>

#include "mpsc.h"

#define PRODUCERS 4
#define PER_PRODUCER 50000

static struct io_msg msg(uint32_t slot, uint32_t seq)
{
	return (struct io_msg){ .kind = IO_MSG_WAKE,
				.slot = slot,
				.gen = 1,
				.arg = (int32_t)seq };
}

static void test_fifo_full_and_laps(void **state)
{
	struct mpsc q;
	struct io_msg m;
	uint32_t next_in = 0, next_out = 0;

	(void)state;
	assert_int_equal(mpsc_init(&q, 8), 0);
	assert_false(mpsc_pop(&q, &m));
	for (int i = 0; i < 8; i++) {
		struct io_msg in = msg(0, next_in++);
		assert_int_equal(mpsc_push(&q, &in), 0);
	}
	struct io_msg extra = msg(0, 999);
	assert_int_equal(mpsc_push(&q, &extra), -EAGAIN);
	assert_true(mpsc_pop(&q, &m));
	assert_int_equal(m.arg, next_out++);
	struct io_msg in = msg(0, next_in++);
	assert_int_equal(mpsc_push(&q, &in), 0);
	assert_int_equal(mpsc_push(&q, &extra), -EAGAIN);
	/* Many laps, with the queue between empty and nearly full. */
	for (int lap = 0; lap < 1000; lap++) {
		while (next_out < next_in &&
		       (lap & 1 || next_in - next_out > 3)) {
			assert_true(mpsc_pop(&q, &m));
			assert_int_equal(m.arg, next_out++);
		}
		for (int k = 0; k < 1 + lap % 5; k++) {
			struct io_msg x = msg(0, next_in);
			if (mpsc_push(&q, &x))
				break;
			next_in++;
		}
	}
	while (mpsc_pop(&q, &m))
		assert_int_equal(m.arg, next_out++);
	assert_int_equal(next_out, next_in);
	mpsc_destroy(&q);
}

struct prod {
	struct mpsc *q;
	uint32_t id;
	uint64_t full; /* pushes that found the queue full */
};

static void *producer(void *arg)
{
	struct prod *p = arg;

	for (uint32_t i = 0; i < PER_PRODUCER; i++) {
		struct io_msg m = msg(p->id, i);
		while (mpsc_push(p->q, &m)) {
			p->full++;
			sched_yield();
		}
	}
	return NULL;
}

static void test_producers_and_consumer(void **state)
{
	struct mpsc q;
	struct prod p[PRODUCERS];
	pthread_t t[PRODUCERS];
	uint32_t next[PRODUCERS] = { 0 };
	uint64_t got = 0, full = 0;
	struct io_msg m;

	(void)state;
	/* Small, so that producers find it full and laps are many. */
	assert_int_equal(mpsc_init(&q, 64), 0);
	for (uint32_t i = 0; i < PRODUCERS; i++) {
		p[i] = (struct prod){ .q = &q, .id = i };
		t[i] = t_thread(producer, &p[i]);
	}
	while (got < (uint64_t)PRODUCERS * PER_PRODUCER) {
		if (!mpsc_pop(&q, &m)) {
			sched_yield();
			continue;
		}
		assert_true(m.slot < PRODUCERS);
		assert_int_equal(m.kind, IO_MSG_WAKE);
		assert_int_equal(m.gen, 1);
		/* Each producer's messages arrive in its order, once. */
		assert_int_equal((uint32_t)m.arg, next[m.slot]);
		next[m.slot]++;
		got++;
	}
	for (uint32_t i = 0; i < PRODUCERS; i++) {
		t_join(t[i]);
		assert_int_equal(next[i], PER_PRODUCER);
		full += p[i].full;
	}
	assert_false(mpsc_pop(&q, &m));
	print_message("pushes that found the queue full: %llu\n",
		      (unsigned long long)full);
	mpsc_destroy(&q);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fifo_full_and_laps),
		cmocka_unit_test(test_producers_and_consumer),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
