/* SPDX-License-Identifier: MIT */
/*
 * outq.c - see outq.h. Invariant: segs[head .. nsegs) are unsent, in order;
 * their lengths add up to total; an inline segment's bytes lie in
 * bytes[off, off + len). When everything is sent the queue resets, so inline
 * offsets start again at 0 and storage is reused.
 */
#include "outq.h"

#include <errno.h>
#include <stdlib.h>

#include "table.h"

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
			struct outq_seg *n = realloc(q->segs,
						     cap * sizeof(*n));
			if (!n)
				return -ENOMEM;
			q->segs = n;
			q->cap = cap;
		}
	}
	q->segs[q->nsegs++] = s;
	return 0;
}

int outq_put(struct outq *q, const void *p, size_t n)
{
	uint64_t off = q->bytes.len;
	int ret;

	if (!n)
		return 0;
	ret = buf_append(&q->bytes, p, n);
	if (ret)
		return ret;
	/* buf_append may slide bytes only when off > 0 at the head, which we
	 * never consume through buf_consume, so offsets stay stable. */
	if (q->nsegs > q->head) {
		struct outq_seg *last = &q->segs[q->nsegs - 1];
		if (!last->ref && last->off + last->len == off) {
			last->len += n;
			q->total += n;
			return 0;
		}
	}
	ret = seg_push(q, (struct outq_seg){ .off = off, .len = n });
	if (ret) {
		q->bytes.len = off;
		return ret;
	}
	q->total += n;
	return 0;
}

int outq_put_entry(struct outq *q, struct table_entry *e, const uint8_t *p,
		   uint64_t len)
{
	int ret;

	if (len < OUTQ_REF_MIN)
		return outq_put(q, p, len);
	ret = seg_push(q, (struct outq_seg){ .ref = e, .p = p, .len = len });
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
		iov[n].iov_base = (void *)(s->ref ? s->p
						  : q->bytes.data + s->off);
		iov[n].iov_len = s->len;
	}
	return n;
}

static void outq_reset(struct outq *q)
{
	q->head = q->nsegs = 0;
	q->total = 0;
	buf_reset(&q->bytes);
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
	outq_reset(q);
	buf_free(&q->bytes);
}
