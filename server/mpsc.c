/* SPDX-License-Identifier: MIT */
/*
 * mpsc.c - the bounded multi-producer, single-consumer queue (see mpsc.h).
 *
 * Cell i starts with seq = i. A producer that claimed position pos (tail
 * CAS) finds seq == pos when the cell is free, writes its message and
 * publishes seq = pos + 1; the consumer at head == pos takes the message
 * when seq == pos + 1 and frees the cell for the next lap with
 * seq = pos + cells. seq < pos means the consumer has not freed the cell
 * of the previous lap: the queue is full.
 */
#include "mpsc.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

struct mpsc_cell {
	atomic_size_t seq;
	struct io_msg msg;
};

int mpsc_init(struct mpsc *q, size_t cells)
{
	q->cells = calloc(cells, sizeof(*q->cells));
	if (!q->cells)
		return -ENOMEM;
	q->mask = cells - 1;
	for (size_t i = 0; i < cells; i++)
		atomic_init(&q->cells[i].seq, i);
	atomic_init(&q->tail, 0);
	q->head = 0;
	return 0;
}

void mpsc_destroy(struct mpsc *q)
{
	free(q->cells);
	q->cells = NULL;
}

int mpsc_push(struct mpsc *q, const struct io_msg *m)
{
	size_t pos = atomic_load_explicit(&q->tail, memory_order_relaxed);
	struct mpsc_cell *cell;

	for (;;) {
		cell = &q->cells[pos & q->mask];
		/* Pairs with the release in mpsc_pop: the consumer has read
		 * the cell's previous message before we overwrite it. */
		size_t seq =
			atomic_load_explicit(&cell->seq, memory_order_acquire);
		intptr_t dif = (intptr_t)seq - (intptr_t)pos;

		if (dif == 0) {
			/* Claim pos. The cell's seq orders the message, so
			 * the claim itself can be relaxed. */
			if (atomic_compare_exchange_weak_explicit(
				    &q->tail, &pos, pos + 1,
				    memory_order_relaxed, memory_order_relaxed))
				break;
		} else if (dif < 0) {
			return -EAGAIN;
		} else {
			pos = atomic_load_explicit(&q->tail,
						   memory_order_relaxed);
		}
	}
	cell->msg = *m;
	/* Pairs with the acquire in mpsc_pop: the message is written. */
	atomic_store_explicit(&cell->seq, pos + 1, memory_order_release);
	return 0;
}

bool mpsc_pop(struct mpsc *q, struct io_msg *m)
{
	struct mpsc_cell *cell = &q->cells[q->head & q->mask];
	/* Pairs with the release in mpsc_push: its message is visible. */
	size_t seq = atomic_load_explicit(&cell->seq, memory_order_acquire);

	if (seq != q->head + 1)
		return false;
	*m = cell->msg;
	/* Pairs with the acquire in mpsc_push: the cell is free again, for
	 * the producer of the next lap. */
	atomic_store_explicit(&cell->seq, q->head + q->mask + 1,
			      memory_order_release);
	q->head++;
	return true;
}
