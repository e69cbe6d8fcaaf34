/* SPDX-License-Identifier: MIT */
/*
 * mpsc.h - a bounded lock-free multi-producer, single-consumer queue of
 * cross-reactor messages (Dmitry Vyukov's array queue): any thread pushes,
 * one thread pops. Each cell carries a sequence number that says whose turn
 * it is, so producers claim cells with one CAS and never wait for each
 * other, and a full queue is reported rather than waited on. No allocation
 * after mpsc_init.
 */
#ifndef RS_SERVER_MPSC_H
#define RS_SERVER_MPSC_H

#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "io.h"

struct mpsc_cell;

struct mpsc {
	struct mpsc_cell *cells; /* owned */
	size_t mask;
	alignas(64) atomic_size_t tail; /* next position to claim */
	alignas(64) size_t head;        /* the consumer's next position */
};

/* @cells: a power of two. Returns 0 or -ENOMEM. */
int mpsc_init(struct mpsc *q, size_t cells);
/* Free the cells (the queue must not be in use). */
void mpsc_destroy(struct mpsc *q);
/* Any thread. Returns 0, or -EAGAIN when the queue is full. */
int mpsc_push(struct mpsc *q, const struct io_msg *m);
/* The consumer's thread only. Returns false when the queue is empty. */
bool mpsc_pop(struct mpsc *q, struct io_msg *m);

#endif
