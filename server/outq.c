/* SPDX-License-Identifier: MIT */
/*
 * outq.c - see outq.h. Invariant: segs[head .. nsegs) are unsent, in order;
 * their lengths add up to total; an inline segment's bytes lie in
 * bytes[off, off + len). When everything is sent the queue resets, so inline
 * offsets start again at 0 and storage is reused (up to OUTQ_KEEP bytes; a
 * larger buffer moves to the thread's pool).
 *
 * The pool is thread-local: a reactor's connections are used by its thread
 * only, so buffers circulate among them without locks. It holds at most
 * POOL_SLOTS buffers and POOL_BYTES bytes; beyond that buffers are freed.
 */
#include "outq.h"

#include <errno.h>
#include <stdlib.h>

#include "table.h"

#define POOL_SLOTS 32
#define POOL_BYTES ((size_t)32 << 20)

static _Thread_local struct {
	struct buf b[POOL_SLOTS]; /* owned, empty buffers */
	uint32_t n;
	size_t bytes;
} pool;

/* Keep @b's storage for later, or free it; @b is left empty either way. */
static void pool_put(struct buf *b)
{
	if (pool.n < POOL_SLOTS && pool.bytes + b->cap <= POOL_BYTES) {
		buf_reset(b);
		pool.b[pool.n++] = *b;
		pool.bytes += b->cap;
		*b = (struct buf){ 0 };
	} else {
		buf_free(b);
	}
}

/* Give the empty buffer @b the pool's smallest buffer of at least @need
 * bytes, if there is one. */
static void pool_take(struct buf *b, size_t need)
{
	uint32_t best = UINT32_MAX;

	for (uint32_t i = 0; i < pool.n; i++)
		if (pool.b[i].cap >= need &&
		    (best == UINT32_MAX || pool.b[i].cap < pool.b[best].cap))
			best = i;
	if (best == UINT32_MAX)
		return;
	buf_free(b);
	*b = pool.b[best];
	pool.bytes -= b->cap;
	pool.b[best] = pool.b[--pool.n];
}

void outq_pool_drain(void)
{
	while (pool.n)
		buf_free(&pool.b[--pool.n]);
	pool.bytes = 0;
}

static int seg_push(struct outq *q, struct outq_seg s)
{
	if (q->nsegs == q->cap) {
		if (q->head) {
			/* Slide the unsent tail to the front. */
			memmove(q->segs, q->segs + q->head,
				(q->nsegs - q->head) * sizeof(*q->segs));
			q->nsegs -= q->head;
			q->head = 0;
		} else {
			uint32_t cap = q->cap ? q->cap * 2 : 4;
			struct outq_seg *n = realloc(q->segs, cap * sizeof(*n));
			if (!n)
				return -ENOMEM;
			q->segs = n;
			q->cap = cap;
		}
	}
	q->segs[q->nsegs++] = s;
	return 0;
}

uint8_t *outq_reserve(struct outq *q, size_t n)
{
	struct buf *b = &q->bytes;

	if (b->cap - b->len < n) {
		if (!b->len && n > OUTQ_KEEP)
			pool_take(b, n);
		if (buf_reserve(b, n))
			return NULL;
	}
	return b->data + b->len;
}

int outq_commit(struct outq *q, size_t n)
{
	uint64_t off = q->bytes.len;

	if (!n)
		return 0;
	/* Extend the last segment when it is inline and ends here. */
	if (q->nsegs > q->head) {
		struct outq_seg *last = &q->segs[q->nsegs - 1];
		if (!last->ref && last->off + last->len == off)
			goto done;
	}
	if (seg_push(q, (struct outq_seg){ .off = off, .len = 0 }))
		return -ENOMEM;
done:
	q->segs[q->nsegs - 1].len += n;
	q->bytes.len += n;
	q->total += n;
	return 0;
}

int outq_put(struct outq *q, const void *p, size_t n)
{
	uint8_t *dst;

	if (!n)
		return 0;
	if (!(dst = outq_reserve(q, n)))
		return -ENOMEM;
	memcpy(dst, p, n);
	return outq_commit(q, n);
}

_Static_assert(TABLE_INPLACE_MAX <= OUTQ_REF_MIN,
	       "a value sent by reference is never rewritten in place");

int outq_put_entry(struct outq *q, struct table_entry *e)
{
	uint64_t len = e->vlen;
	uint8_t *dst;
	int ret;

	if (len < OUTQ_REF_MIN) {
		if (!len)
			return 0;
		if (!(dst = outq_reserve(q, len)))
			return -ENOMEM;
		table_entry_read_val(e, dst, len);
		return outq_commit(q, len);
	}
	ret = seg_push(q, (struct outq_seg){ .ref = e,
					     .p = table_entry_val(e),
					     .len = len });
	if (ret)
		return ret;
	table_entry_ref(e);
	q->total += len;
	return 0;
}

int outq_iov(const struct outq *q, struct iovec *iov, int max)
{
	int n = 0;

	for (uint32_t i = q->head; i < q->nsegs && n < max; i++, n++) {
		const struct outq_seg *s = &q->segs[i];
		iov[n].iov_base =
			(void *)(s->ref ? s->p : q->bytes.data + s->off);
		iov[n].iov_len = s->len;
	}
	return n;
}

static void outq_reset(struct outq *q)
{
	q->head = q->nsegs = 0;
	q->total = 0;
	buf_reset(&q->bytes);
	if (q->bytes.cap > OUTQ_KEEP)
		pool_put(&q->bytes);
}

void outq_consume(struct outq *q, uint64_t n)
{
	q->total -= n;
	while (n && q->head < q->nsegs) {
		struct outq_seg *s = &q->segs[q->head];
		if (n < s->len) {
			if (s->ref)
				s->p += n;
			else
				s->off += n;
			s->len -= n;
			return;
		}
		n -= s->len;
		if (s->ref)
			table_entry_unref(s->ref);
		q->head++;
	}
	if (q->head == q->nsegs)
		outq_reset(q);
}

void outq_free(struct outq *q)
{
	for (uint32_t i = q->head; i < q->nsegs; i++)
		if (q->segs[i].ref)
			table_entry_unref(q->segs[i].ref);
	free(q->segs);
	q->segs = NULL;
	q->cap = 0;
	buf_free(&q->bytes); /* first: freed, not pooled */
	outq_reset(q);
}
