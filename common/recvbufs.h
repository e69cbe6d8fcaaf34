/* SPDX-License-Identifier: MIT */
/*
 * recvbufs.h - the provided-buffer ring that multishot RECVs draw from,
 * kept only as full as the load needs (the server's io_uring reactors and
 * ringstore-floor use it alike).
 *
 * Why. The kernel takes provided buffers from the ring's head and they come
 * back at its tail, so with every buffer in the ring each receive lands in
 * the buffer used the longest time ago: with 1024 buffers of 16 KiB, every
 * receive's bytes (the kernel's copy, then the parser's reads) went to lines
 * that had left the L2 cache. Measured on multi-set (scripts/bench-ab,
 * pinned, 8 rounds): 128 buffers instead of 1024 cost 0.93x the server's
 * CPU per op and 0.92x the floor's. A fixed small ring, though,
 * runs dry when thousands of connections have data at once (heartbeat-16k:
 * 3,232 ENOBUFS in 4 s at 128), and each dry receive has to be re-armed.
 *
 * How. All @count buffers are registered, but only @target of them are kept
 * in the ring; the rest wait on a LIFO stack, so a buffer that comes back
 * is the next one provided again and the ring cycles through a set that
 * stays in cache. The target follows the receives per batch (between two
 * recv_bufs_flush calls), @used: it doubles when a batch used more than
 * half of it or a receive found the ring empty (ENOBUFS), and halves after
 * RECV_BUFS_QUIET batches in a row used at most a quarter of it, never
 * below @min. recv_bufs_next_target is that rule, alone, for tests.
 *
 * Threads: one ring, one thread (the ring's submitter).
 */
#ifndef RS_COMMON_RECVBUFS_H
#define RS_COMMON_RECVBUFS_H

#include <stdbool.h>
#include <stdint.h>

#include <liburing.h>

/* ringstore's defaults for --recv-buffers and --recv-buffers-min;
 * ringstore-floor takes the same, so that the two batch alike. */
#define RECV_BUFS_DEFAULT_COUNT 1024
#define RECV_BUFS_DEFAULT_MIN 64

/* Batches in a row at a quarter of the target or less before it halves:
 * slow to shrink (about 0.1 s per halving at heartbeat-16k's 12k batches a
 * second; at 64, its occasional bursts met a shrunk ring: 1,869 ENOBUFS in
 * 5 s), quick to grow. */
#define RECV_BUFS_QUIET 1024

struct recv_bufs {
	struct io_uring_buf_ring *br; /* owned mmap, lent to the kernel */
	size_t br_bytes;
	uint8_t *mem;    /* owned: count * size bytes */
	uint16_t *spare; /* owned: ids not in the ring */
	uint32_t nspare;
	uint32_t count;    /* buffers (ring entries), a power of two */
	uint32_t size;     /* bytes per buffer */
	uint32_t min;      /* the least target */
	uint32_t target;   /* buffers to keep in the ring */
	uint32_t provided; /* buffers in the ring now */
	uint32_t used;     /* taken since the last flush */
	uint32_t quiet;    /* flushes in a row with used <= target / 4 */
	bool dry;          /* an ENOBUFS since the last flush */
	uint16_t added;    /* added since the last advance */
	int bgid;
};

/*
 * Register @count buffers of @size bytes as group @bgid of @ring, all of
 * them in the ring to start with (target = count). @count is a power of two
 * from 1 to 32768; @min is clamped to [1, count]. Returns 0 or -errno
 * (then recv_bufs_destroy cleans up).
 */
int recv_bufs_init(struct recv_bufs *rb, struct io_uring *ring, int bgid,
		   uint32_t count, uint32_t size, uint32_t min);
/* Unregister (if @ring is not NULL) and free. */
void recv_bufs_destroy(struct recv_bufs *rb, struct io_uring *ring);

/* The buffer of a completion's id: the kernel took it from the ring. */
static inline uint8_t *recv_bufs_take(struct recv_bufs *rb, unsigned bid)
{
	rb->provided--;
	rb->used++;
	return rb->mem + (size_t)bid * rb->size;
}

/* Buffer @bid's bytes are consumed: it may be provided again. */
static inline void recv_bufs_give(struct recv_bufs *rb, unsigned bid)
{
	rb->spare[rb->nspare++] = (uint16_t)bid;
}

/* A RECV ended with -ENOBUFS: the ring ran dry. */
static inline void recv_bufs_dry(struct recv_bufs *rb)
{
	rb->dry = true;
}

/*
 * End of a batch of completions: adapt the target, refill the ring up to it
 * from the stack's top (most recently used first) and publish the tail.
 */
void recv_bufs_flush(struct recv_bufs *rb);

/* The target after a batch that used @used buffers (@dry: one receive found
 * none), with *@quiet the count of quiet batches before it (updated). */
uint32_t recv_bufs_next_target(uint32_t target, uint32_t used, bool dry,
			       uint32_t *quiet, uint32_t min, uint32_t count);

#endif
