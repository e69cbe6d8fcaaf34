/* SPDX-License-Identifier: MIT */
/*
 * test_sender.c - unit tests for the send helper thread (sender.c), the
 * epoll backend's --spread-sends.
 *
 * Over Unix socket pairs: results come back in posting order with the
 * bytes written, and every socket reads its bytes in order (one and two
 * iovecs); the helper calls wake after results, so an owner that sleeps
 * until then reaps them all; a ring of SENDER_SLOTS unreaped jobs refuses
 * the next post until one is reaped; a full socket gives a short write,
 * then -EAGAIN; errors come back as -errno; stop sends what was posted
 * before it returns. Run under TSan by scripts/test.
 */
#include "helpers.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sender.h"

#define PAIRS 50 /* not a multiple of the helper's wake interval */
#define ROUNDS 100

/* The helper's wake: an eventfd the owner polls. On the helper's thread,
 * where cmocka cannot fail a test: abort instead. */
static void wake_efd(void *arg)
{
	uint64_t one = 1;

	if (write(*(int *)arg, &one, sizeof(one)) != sizeof(one))
		abort();
}

/* Sleep until the helper wakes us: a result that never wakes fails. */
static void sleep_for_wake(int efd)
{
	struct pollfd p = { .fd = efd, .events = POLLIN };
	uint64_t v;

	assert_int_equal(poll(&p, 1, 30000), 1);
	assert_int_equal(read(efd, &v, sizeof(v)), sizeof(v));
}

static void test_order_bytes_and_wakes(void **state)
{
	int sv[PAIRS][2], efd = t_eventfd();
	/* Each job's bytes ("RRR-PPP") and iovecs, kept until it is reaped. */
	static char text[ROUNDS][PAIRS][8];
	static struct iovec iov[ROUNDS][PAIRS][2];
	struct sender *s;
	uint64_t posted = 0, reaped = 0;

	(void)state;
	for (int p = 0; p < PAIRS; p++)
		t_socketpair(sv[p], true);
	assert_int_equal(sender_start(&s, "test-sender", wake_efd, &efd), 0);
	for (int r = 0; r < ROUNDS; r++) {
		for (int p = 0; p < PAIRS; p++) {
			unsigned n = (r + p) % 2 + 1; /* send, sendmsg */
			struct sender_job j;

			snprintf(text[r][p], 8, "%03d-%03d", r, p);
			/* One iovec of 7 bytes, or 3 and 4. */
			iov[r][p][0] =
				(struct iovec){ text[r][p], n == 1 ? 7 : 3 };
			iov[r][p][1] = (struct iovec){ text[r][p] + 3, 4 };
			j = (struct sender_job){ .iov = iov[r][p],
						 .tag = posted,
						 .fd = sv[p][0],
						 .n = n,
						 .res = -1 };
			assert_true(sender_post(s, &j));
			posted++;
		}
		if (r % 2)
			continue; /* two rounds in the ring at once */
		/* Reap everything: the helper falls asleep, and the next
		 * round's posts must wake it. */
		while (reaped < posted) {
			struct sender_job j;
			bool any = false;

			while (sender_reap(s, &j)) {
				assert_int_equal(j.tag, reaped); /* in order */
				assert_int_equal(j.res, 7);
				assert_int_equal(j.fd, sv[reaped % PAIRS][0]);
				reaped++;
				any = true;
			}
			if (!any || reaped < posted)
				sleep_for_wake(efd);
		}
	}
	sender_destroy(s);
	for (int p = 0; p < PAIRS; p++) {
		char got[ROUNDS * 7 + 1], want[8];

		assert_int_equal(read(sv[p][1], got, sizeof(got)), ROUNDS * 7);
		for (int r = 0; r < ROUNDS; r++) {
			snprintf(want, sizeof(want), "%03d-%03d", r, p);
			assert_memory_equal(got + r * 7, want, 7);
		}
		t_close_pair(sv[p]);
	}
	close(efd);
}

static void test_full_ring_refuses_a_post(void **state)
{
	int efd = t_eventfd();
	char byte = 'x';
	struct iovec iov = { &byte, 1 };
	struct sender_job j = { .iov = &iov, .fd = -1, .n = 1 };
	struct sender *s;

	(void)state;
	assert_int_equal(sender_start(&s, "test-sender", wake_efd, &efd), 0);
	for (uint32_t i = 0; i < SENDER_SLOTS; i++) {
		j.tag = i;
		assert_true(sender_post(s, &j));
	}
	j.tag = SENDER_SLOTS;
	assert_false(sender_post(s, &j)); /* nothing reaped yet */
	while (!sender_reap(s, &j))
		sleep_for_wake(efd);
	assert_int_equal(j.tag, 0);
	assert_int_equal(j.res, -EBADF); /* a send's error, as -errno */
	j.tag = SENDER_SLOTS;
	assert_true(sender_post(s, &j)); /* room for one */
	assert_false(sender_post(s, &j));
	sender_destroy(s);
	close(efd);
}

static void test_full_socket_short_write_then_eagain(void **state)
{
	int sv[2], efd = t_eventfd(), small = 4096;
	size_t len = 1 << 20;
	char *big = t_calloc(1, len);
	struct iovec iov = { big, len };
	struct sender_job j = { .iov = &iov, .n = 1 };
	struct sender *s;

	(void)state;
	t_socketpair(sv, true);
	assert_int_equal(setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small,
				    sizeof(small)),
			 0);
	j.fd = sv[0];
	assert_int_equal(sender_start(&s, "test-sender", wake_efd, &efd), 0);
	assert_true(sender_post(s, &j));
	assert_true(sender_post(s, &j));
	while (!sender_reap(s, &j))
		sleep_for_wake(efd);
	assert_true(j.res > 0 && (size_t)j.res < len);
	while (!sender_reap(s, &j))
		sleep_for_wake(efd);
	assert_int_equal(j.res, -EAGAIN);
	sender_destroy(s);
	t_close_pair(sv);
	close(efd);
	free(big);
}

static void test_stop_sends_what_was_posted(void **state)
{
	int sv[2], efd = t_eventfd();
	char text[] = "0123456789";
	struct iovec iov[10];
	struct sender *s;
	char got[16];

	(void)state;
	t_socketpair(sv, true);
	assert_int_equal(sender_start(&s, "test-sender", wake_efd, &efd), 0);
	for (int i = 0; i < 10; i++) {
		struct sender_job j = { .iov = &iov[i], .fd = sv[0], .n = 1 };

		iov[i] = (struct iovec){ text + i, 1 };
		assert_true(sender_post(s, &j));
	}
	sender_stop(s);
	sender_stop(s); /* idempotent */
	assert_int_equal(read(sv[1], got, sizeof(got)), 10);
	assert_memory_equal(got, text, 10);
	sender_destroy(s);
	sender_destroy(NULL);
	t_close_pair(sv);
	close(efd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_order_bytes_and_wakes),
		cmocka_unit_test(test_full_ring_refuses_a_post),
		cmocka_unit_test(test_full_socket_short_write_then_eagain),
		cmocka_unit_test(test_stop_sends_what_was_posted),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
