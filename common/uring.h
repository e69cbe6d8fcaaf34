/* SPDX-License-Identifier: MIT */
/*
 * uring.h - what the bench's io_uring loops share (ringstore-bench's
 * threads and ringstore-floor): an SQE that is never NULL.
 */
#ifndef RS_COMMON_URING_H
#define RS_COMMON_URING_H

#include <stdlib.h>

#include <liburing.h>

#include "log.h"

/*
 * An SQE of @ring, submitting first while the queue is full. A queue that
 * stays full through 1000 submits is a bug: @who is logged and it aborts.
 */
static inline struct io_uring_sqe *uring_sqe(struct io_uring *ring,
					     const char *who)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(ring);

	for (int i = 0; !sqe && i < 1000; i++) {
		io_uring_submit(ring);
		sqe = io_uring_get_sqe(ring);
	}
	if (!sqe) {
		log_error("%s: submission queue stuck full", who);
		abort();
	}
	return sqe;
}

#endif
