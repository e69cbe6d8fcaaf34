/* SPDX-License-Identifier: MIT */
/*
 * buf.h - a growable byte buffer with a read offset.
 *
 * A buf owns its storage. Writers append at the tail; readers consume from the
 * head. The storage only grows (up to the high-water mark of its user) and is
 * reused after buf_reset(), so a long-lived connection stops allocating once
 * it has seen its largest reply. Not thread-safe: one owner at a time.
 */
#ifndef RS_COMMON_BUF_H
#define RS_COMMON_BUF_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct buf {
	uint8_t *data; /* owned; NULL until the first reserve */
	size_t off;    /* first unread byte */
	size_t len;    /* one past the last written byte */
	size_t cap;
};

/* Ensure room for @extra more bytes at the tail. Returns 0 or -ENOMEM. */
int buf_reserve(struct buf *b, size_t extra);
/* Append @n bytes. Returns 0 or -ENOMEM. */
int buf_append(struct buf *b, const void *p, size_t n);
/* Drop @n bytes from the head (n <= buf_used(b)); resets when empty. */
void buf_consume(struct buf *b, size_t n);
/* Forget the contents but keep the storage. */
static inline void buf_reset(struct buf *b)
{
	b->off = 0;
	b->len = 0;
}
/* Release the storage; the buf is empty and reusable afterwards. */
void buf_free(struct buf *b);
/* Give back storage above @keep bytes when the buf is empty (idle trim). */
void buf_shrink(struct buf *b, size_t keep);

static inline size_t buf_used(const struct buf *b)
{
	return b->len - b->off;
}

static inline uint8_t *buf_head(const struct buf *b)
{
	return b->data + b->off;
}

#endif
