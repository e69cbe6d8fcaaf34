/* SPDX-License-Identifier: MIT */
/*
 * test_recvbufs.c - the receive-buffer ring's target rule
 * (recv_bufs_next_target), then a real ring: buffers come back and the
 * ring is refilled up to the target, most recently used first.
 */
#include "helpers.h"

#include "recvbufs.h"

/* Steady batches settle where used is over a quarter and at most half of
 * the target: from 1024, 60 per batch ends at 128 after three quiet runs. */
static void test_shrinks_to_the_load(void **state)
{
	uint32_t t = 1024, quiet = 0;

	(void)state;
	for (int i = 0; i < RECV_BUFS_QUIET - 1; i++)
		t = recv_bufs_next_target(t, 60, false, &quiet, 64, 1024);
	assert_int_equal(t, 1024); /* not quiet for long enough yet */
	t = recv_bufs_next_target(t, 60, false, &quiet, 64, 1024);
	assert_int_equal(t, 512);
	for (int i = 0; i < 10 * RECV_BUFS_QUIET; i++)
		t = recv_bufs_next_target(t, 60, false, &quiet, 64, 1024);
	assert_int_equal(t, 128);
	/* One busier batch in between restarts the quiet count. */
	quiet = 0;
	t = 512;
	for (int i = 0; i < RECV_BUFS_QUIET - 1; i++)
		t = recv_bufs_next_target(t, 60, false, &quiet, 64, 1024);
	t = recv_bufs_next_target(t, 200, false, &quiet, 64, 1024);
	assert_int_equal(quiet, 0);
	t = recv_bufs_next_target(t, 60, false, &quiet, 64, 1024);
	assert_int_equal(t, 512);
}

/* Never below min, never above count; idle batches (0 used) shrink too. */
static void test_bounds(void **state)
{
	uint32_t t = 1024, quiet = 0;

	(void)state;
	for (int i = 0; i < 100 * RECV_BUFS_QUIET; i++)
		t = recv_bufs_next_target(t, 0, false, &quiet, 64, 1024);
	assert_int_equal(t, 64);
	t = recv_bufs_next_target(t, 5000, false, &quiet, 64, 1024);
	assert_int_equal(t, 1024);
	t = recv_bufs_next_target(t, 0, true, &quiet, 64, 1024);
	assert_int_equal(t, 1024);
	/* min == count: a fixed ring. */
	t = 256;
	for (int i = 0; i < 10 * RECV_BUFS_QUIET; i++)
		t = recv_bufs_next_target(t, 1, false, &quiet, 256, 256);
	assert_int_equal(t, 256);
}

/* The target after one batch from a target of 128 in a ring of 64 to
 * 1024 buffers, which used @used of them (@dry: and ran out). */
static uint32_t after_128(uint32_t used, bool dry, uint32_t *quiet)
{
	return recv_bufs_next_target(128, used, dry, quiet, 64, 1024);
}

/* A batch that used over half of the target, or ran dry, grows it at once:
 * to the first power of two at least twice the use, and a dry ring at
 * least doubles. */
static void test_grows_at_once(void **state)
{
	uint32_t quiet = 5;

	(void)state;
	assert_int_equal(after_128(65, false, &quiet), 256);
	assert_int_equal(quiet, 0);
	assert_int_equal(after_128(300, false, &quiet), 1024);
	assert_int_equal(after_128(64, false, &quiet), 128);
	assert_int_equal(after_128(10, true, &quiet), 256);
	assert_int_equal(after_128(200, true, &quiet), 512);
}

/* A real ring (skipped where io_uring is not allowed): init provides all
 * of them; once the target is small, the ring is refilled only up to it,
 * from the top of the stack (the buffers given back last). */
static void test_ring(void **state)
{
	struct io_uring ring;
	struct recv_bufs rb;
	unsigned next = 0, mask = 255;
	uint16_t tail;

	(void)state;
	if (io_uring_queue_init(8, &ring, 0) < 0)
		t_skip("io_uring is not allowed here");
	assert_int_equal(recv_bufs_init(&rb, &ring, 3, 256, 512, 16), 0);
	assert_int_equal(rb.provided, 256);
	assert_int_equal(rb.nspare, 0);
	assert_int_equal(rb.target, 256);
	assert_int_equal(rb.br->bufs[5].bid, 5); /* the ring starts 0, 1, .. */
	for (int i = 0; i < 4 * RECV_BUFS_QUIET; i++)
		recv_bufs_flush(&rb); /* idle batches */
	assert_int_equal(rb.target, 16);
	assert_int_equal(rb.provided,
			 256); /* none taken back from the kernel */
	/* Batches of 4 receives, as the kernel would hand them out (ring
	 * order), each buffer given back after use: nothing is added until
	 * fewer than 16 are left in the ring. */
	for (int b = 0; b < 61; b++) {
		for (int k = 0; k < 4; k++, next++) {
			assert_ptr_equal(recv_bufs_take(&rb, next),
					 rb.mem + (size_t)next * 512);
			recv_bufs_give(&rb, next);
		}
		tail = rb.br->tail;
		recv_bufs_flush(&rb);
		if (b < 60)
			assert_int_equal(rb.br->tail, tail);
	}
	/* The 61st batch left 12: four were added, 243 down to 240. */
	assert_int_equal(rb.target, 16);
	assert_int_equal(rb.provided, 16);
	assert_int_equal(rb.nspare, 244 - 4);
	tail = rb.br->tail;
	for (unsigned k = 0; k < 4; k++)
		assert_int_equal(
			rb.br->bufs[(uint16_t)(tail - 4 + k) & mask].bid,
			243 - k);
	recv_bufs_destroy(&rb, &ring);
	io_uring_queue_exit(&ring);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_shrinks_to_the_load),
		cmocka_unit_test(test_bounds),
		cmocka_unit_test(test_grows_at_once),
		cmocka_unit_test(test_ring),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
