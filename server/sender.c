/* SPDX-License-Identifier: MIT */
/*
 * sender.c - the send helper thread (see sender.h).
 *
 * One ring of jobs and three counters, each written by one thread: posted
 * (the owner: jobs [0, posted) are written), done (the helper: jobs
 * [0, done) are sent and their res set) and reaped (the owner). Slot
 * i & mask holds job i from its post until its reap, so posted - reaped
 * <= SENDER_SLOTS keeps the helper and the owner off each other's slots.
 *
 * Sleeping: with nothing posted the helper sets idle and sleeps on the
 * futex word wakes. The owner, after a post, takes idle back and bumps
 * wakes before waking it, and stop does the same after setting quit; the
 * helper reads wakes before it checks for work, so a bump it has not seen
 * makes its futex wait return at once. A busy helper costs the owner no
 * system call.
 */
#include "sender.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Results between two calls of wake while the helper stays busy. */
#define WAKE_EVERY 64

struct sender {
	struct sender_job *jobs; /* owned: SENDER_SLOTS */
	void (*wake)(void *arg);
	void *arg;
	pthread_t thread;
	bool running;                   /* the thread was started, not joined */
	alignas(64) atomic_uint posted; /* the owner's */
	uint32_t reaped;                /* the owner's */
	alignas(64) atomic_uint done;   /* the helper's */
	alignas(64) atomic_uint idle;   /* 1: the helper may sleep */
	atomic_uint wakes;              /* the futex word */
	atomic_bool quit;
};

#define SLOT_MASK (SENDER_SLOTS - 1)

ssize_t sender_send_now(int fd, const struct iovec *iov, unsigned n)
{
	struct msghdr msg = { .msg_iov = (struct iovec *)iov, .msg_iovlen = n };
	ssize_t res;

	/* One iovec (the common case: a reply batch gathered inline) goes
	 * out with send(), which spares the kernel importing a msghdr. */
	do
		res = n == 1 ? send(fd, iov[0].iov_base, iov[0].iov_len,
				    MSG_NOSIGNAL | MSG_DONTWAIT)
			     : sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
	while (res < 0 && errno == EINTR);
	return res < 0 ? -errno : res;
}

static void futex_wait(atomic_uint *w, unsigned val)
{
	syscall(SYS_futex, (unsigned *)w, FUTEX_WAIT_PRIVATE, val, NULL, NULL,
		0);
}

static void futex_wake(atomic_uint *w)
{
	syscall(SYS_futex, (unsigned *)w, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

/* The owner: make a sleeping (or falling asleep) helper look again. */
static void kick(struct sender *s)
{
	/* Pairs with the helper's seq_cst load of wakes in helper_main. */
	atomic_fetch_add_explicit(&s->wakes, 1, memory_order_seq_cst);
	futex_wake(&s->wakes);
}

static void *helper_main(void *arg)
{
	struct sender *s = arg;
	uint32_t next = 0, unsignalled = 0;

	for (;;) {
		/* Pairs with the release store of posted in sender_post. */
		uint32_t posted =
			atomic_load_explicit(&s->posted, memory_order_acquire);
		unsigned w;

		while (next != posted) {
			struct sender_job *j = &s->jobs[next & SLOT_MASK];
			ssize_t r = sender_send_now(j->fd, j->iov, j->n);

			j->res = r > INT_MAX ? INT_MAX : (int32_t)r;
			/* Pairs with the acquire load in sender_reap. */
			atomic_store_explicit(&s->done, ++next,
					      memory_order_release);
			if (++unsignalled == WAKE_EVERY) {
				s->wake(s->arg);
				unsignalled = 0;
			}
		}
		if (unsignalled) {
			s->wake(s->arg);
			unsignalled = 0;
		}
		/* Read before looking for work: see the file header. */
		w = atomic_load_explicit(&s->wakes, memory_order_seq_cst);
		/* Pairs with the exchange in sender_post. */
		atomic_store_explicit(&s->idle, 1, memory_order_seq_cst);
		if (atomic_load_explicit(&s->posted, memory_order_seq_cst) !=
		    next) {
			atomic_store_explicit(&s->idle, 0,
					      memory_order_relaxed);
			continue;
		}
		/* Pairs with the seq_cst store of quit in sender_stop. */
		if (atomic_load_explicit(&s->quit, memory_order_seq_cst))
			return NULL;
		futex_wait(&s->wakes, w);
		atomic_store_explicit(&s->idle, 0, memory_order_relaxed);
	}
}

int sender_start(struct sender **out, const char *name, void (*wake)(void *arg),
		 void *arg)
{
	struct sender *s = aligned_alloc(_Alignof(struct sender), sizeof(*s));
	pthread_attr_t attr;
	char tname[16];
	int ret;

	if (!s)
		return -ENOMEM;
	memset(s, 0, sizeof(*s));
	atomic_init(&s->posted, 0);
	atomic_init(&s->done, 0);
	atomic_init(&s->idle, 0);
	atomic_init(&s->wakes, 0);
	atomic_init(&s->quit, false);
	s->wake = wake;
	s->arg = arg;
	/* Touched only as far as bursts reach. */
	s->jobs = calloc(SENDER_SLOTS, sizeof(*s->jobs));
	if (!s->jobs) {
		ret = -ENOMEM;
		goto fail;
	}
	ret = -pthread_attr_init(&attr);
	if (ret)
		goto fail;
	/* It calls send and its own small functions only. */
	(void)pthread_attr_setstacksize(&attr, 64 * 1024);
	ret = -pthread_create(&s->thread, &attr, helper_main, s);
	pthread_attr_destroy(&attr);
	if (ret)
		goto fail;
	s->running = true;
	snprintf(tname, sizeof(tname), "%s", name);
	(void)pthread_setname_np(s->thread, tname);
	*out = s;
	return 0;
fail:
	sender_destroy(s);
	return ret;
}

bool sender_post(struct sender *s, const struct sender_job *job)
{
	uint32_t p = atomic_load_explicit(&s->posted, memory_order_relaxed);

	if (p - s->reaped == SENDER_SLOTS)
		return false;
	s->jobs[p & SLOT_MASK] = *job;
	/*
	 * Release: pairs with the helper's acquire load of posted. seq_cst
	 * with the exchange below: pairs with the helper's store of idle and
	 * its load of posted (either it sees this job or we see it idle).
	 */
	atomic_store_explicit(&s->posted, p + 1, memory_order_seq_cst);
	if (atomic_exchange_explicit(&s->idle, 0, memory_order_seq_cst))
		kick(s);
	return true;
}

bool sender_reap(struct sender *s, struct sender_job *job)
{
	/* Pairs with the release store of done in helper_main. */
	if (atomic_load_explicit(&s->done, memory_order_acquire) == s->reaped)
		return false;
	*job = s->jobs[s->reaped++ & SLOT_MASK];
	return true;
}

void sender_stop(struct sender *s)
{
	if (!s || !s->running)
		return;
	/* Pairs with the helper's seq_cst load of quit. */
	atomic_store_explicit(&s->quit, true, memory_order_seq_cst);
	kick(s);
	pthread_join(s->thread, NULL);
	s->running = false;
}

void sender_destroy(struct sender *s)
{
	if (!s)
		return;
	sender_stop(s);
	free(s->jobs);
	free(s);
}
