/* SPDX-License-Identifier: MIT */
/*
 * recvbufs.c - see recvbufs.h.
 */
#include "recvbufs.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

int recv_bufs_init(struct recv_bufs *rb, struct io_uring *ring, int bgid,
		   uint32_t count, uint32_t size, uint32_t min)
{
	struct io_uring_buf_reg reg = { 0 };
	int ret;

	memset(rb, 0, sizeof(*rb));
	if (!count || count > 32768 || (count & (count - 1)) || !size)
		return -EINVAL;
	rb->count = count;
	rb->size = size;
	rb->min = min < 1 ? 1 : min > count ? count : min;
	rb->bgid = bgid;
	rb->br_bytes = count * sizeof(struct io_uring_buf);
	rb->br = mmap(NULL, rb->br_bytes, PROT_READ | PROT_WRITE,
		      MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
	if (rb->br == MAP_FAILED) {
		rb->br = NULL;
		return -errno;
	}
	rb->mem = aligned_alloc(4096, (size_t)count * size);
	rb->spare = calloc(count, sizeof(*rb->spare));
	if (!rb->mem || !rb->spare)
		return -ENOMEM;
	reg.ring_addr = (unsigned long)rb->br;
	reg.ring_entries = count;
	reg.bgid = (uint16_t)bgid;
	ret = io_uring_register_buf_ring(ring, &reg, 0);
	if (ret)
		return ret;
	io_uring_buf_ring_init(rb->br);
	/* The stack's top is the next buffer provided: push the highest ids
	 * first, so the ring starts with 0, 1, 2, ... */
	for (uint32_t i = count; i-- > 0;)
		recv_bufs_give(rb, i);
	rb->target = count;
	recv_bufs_flush(rb);
	return 0;
}

void recv_bufs_destroy(struct recv_bufs *rb, struct io_uring *ring)
{
	if (ring && rb->br)
		(void)io_uring_unregister_buf_ring(ring, rb->bgid);
	if (rb->br)
		munmap(rb->br, rb->br_bytes);
	free(rb->mem);
	free(rb->spare);
	memset(rb, 0, sizeof(*rb));
}

uint32_t recv_bufs_next_target(uint32_t target, uint32_t used, bool dry,
			       uint32_t *quiet, uint32_t min, uint32_t count)
{
	if (dry || (uint64_t)used * 2 > target) {
		*quiet = 0;
		if (dry && target < count)
			target *= 2;
		while (target < count && (uint64_t)used * 2 > target)
			target *= 2;
		return target < count ? target : count;
	}
	if ((uint64_t)used * 4 > target) {
		*quiet = 0;
		return target;
	}
	if (++*quiet < RECV_BUFS_QUIET || target / 2 < min)
		return target;
	*quiet = 0;
	return target / 2;
}

void recv_bufs_flush(struct recv_bufs *rb)
{
	rb->target = recv_bufs_next_target(rb->target, rb->used, rb->dry,
					   &rb->quiet, rb->min, rb->count);
	rb->used = 0;
	rb->dry = false;
	while (rb->provided < rb->target && rb->nspare) {
		unsigned bid = rb->spare[--rb->nspare];

		io_uring_buf_ring_add(rb->br, rb->mem + (size_t)bid * rb->size,
				      rb->size, (unsigned short)bid,
				      io_uring_buf_ring_mask(rb->count),
				      rb->added++);
		rb->provided++;
	}
	if (rb->added) {
		io_uring_buf_ring_advance(rb->br, rb->added);
		rb->added = 0;
	}
}
