/* SPDX-License-Identifier: MIT */
/*
 * outq.h - a connection's queue of reply bytes, ready for one sendmsg.
 *
 * Replies are gathered here during a loop iteration and sent with one SEND
 * per connection after the batch. Small replies are copied into an inline
 * byte buffer; a large value is queued by reference (the outq holds a
 * reference on its table entry until the bytes have left), so GET of a big
 * value never copies it. Sans-I/O: the reactor asks for an iovec array, hands
 * it to the kernel, and reports how many bytes were sent.
 *
 * Owned by one connection on one reactor thread.
 *
 * Memory: a queue that has sent everything keeps an inline buffer of at most
 * OUTQ_KEEP bytes, so an idle connection holds little. A larger one goes to
 * its thread's pool (bounded), from which the next large reply on any of the
 * thread's connections takes it: a burst of big replies (every rank reading
 * every other rank's address) reuses memory that is already faulted in
 * instead of growing, freeing and faulting in a buffer per reply.
 */
#ifndef RS_SERVER_OUTQ_H
#define RS_SERVER_OUTQ_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "buf.h"

struct table_entry;

/* Values at least this long are queued by reference, shorter ones copied. */
#define OUTQ_REF_MIN 4096
/* Inline bytes an idle queue keeps; larger buffers go to the thread's pool. */
#define OUTQ_KEEP 16384

struct outq_seg {
	struct table_entry *ref; /* owned reference, or NULL: bytes inline */
	const uint8_t *p;        /* ref: borrowed from *ref */
	uint64_t off;            /* inline: offset in outq.bytes */
	uint64_t len;
};

struct outq {
	struct buf bytes;      /* owned: inline reply bytes */
	struct outq_seg *segs; /* owned array */
	uint32_t head, nsegs, cap;
	uint64_t total; /* bytes not yet sent */
};

/* Append bytes (copied). Returns 0 or -ENOMEM. */
int outq_put(struct outq *q, const void *p, size_t n);
/*
 * Room for @n more inline bytes: returns where to write them, or NULL on
 * ENOMEM. Nothing is queued until outq_commit(); any other outq_* call in
 * between may move the room.
 */
uint8_t *outq_reserve(struct outq *q, size_t n);
/* Queue the first @n bytes written at outq_reserve()'s pointer. Returns 0 or
 * -ENOMEM (then nothing was queued). */
int outq_commit(struct outq *q, size_t n);
/*
 * Append entry @e's value: copied if short (consistently, under its
 * sequence lock: table.h), otherwise referenced (a reference on @e is
 * taken). Returns 0 or -ENOMEM.
 */
int outq_put_entry(struct outq *q, struct table_entry *e);

static inline uint64_t outq_len(const struct outq *q)
{
	return q->total;
}

/*
 * Fill up to @max iovecs with the queued bytes, in order. The pointers stay
 * valid until the next outq_put* or outq_consume. Returns the count.
 */
int outq_iov(const struct outq *q, struct iovec *iov, int max);
/* @n bytes were sent: drop them (and the references they held). */
void outq_consume(struct outq *q, uint64_t n);
/* Drop everything and release the storage. */
void outq_free(struct outq *q);
/* Free the calling thread's pool of reply buffers (at thread exit). */
void outq_pool_drain(void);

#endif
