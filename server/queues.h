/* SPDX-License-Identifier: MIT */
/*
 * queues.h - named FIFO queues (QUEUE_PUSH / QUEUE_POP / QUEUE_LEN).
 *
 * Queues live in their own namespace, apart from the key-value table; a
 * queue with no items behaves as absent. Items are immutable entries (key
 * length 0), so a popped item can be sent by reference. Lock-striped by key
 * hash (stripemap.h), like the waiters; safe from any thread. An atomic count of non-empty
 * queues lets presence checks (CHECK/WAIT) skip the lookup when no queue
 * holds anything.
 */
#ifndef RS_SERVER_QUEUES_H
#define RS_SERVER_QUEUES_H

#include <stddef.h>
#include <stdint.h>

struct queues;
struct table_entry;

struct queues *queues_create(void);
void queues_destroy(struct queues *qs);

/* Append a copy of @val to queue @key. Returns 0 or -ENOMEM. */
int queues_push(struct queues *qs, uint64_t hash, const uint8_t *key,
		size_t klen, const uint8_t *val, size_t vlen);
/*
 * Remove the head of queue @key. Returns the length before the pop (0: empty,
 * *out untouched); on success *out is the item, and the caller owns its
 * reference (table_entry_unref when done).
 */
int64_t queues_pop(struct queues *qs, uint64_t hash, const uint8_t *key,
		   size_t klen, struct table_entry **out);
/* Items in queue @key (0 if it never existed). */
int64_t queues_len(struct queues *qs, uint64_t hash, const uint8_t *key,
		   size_t klen);
/* Queues that hold at least one item, and items in all queues. */
uint64_t queues_nonempty(struct queues *qs);
uint64_t queues_items(struct queues *qs);
/* Value bytes held by all queues. */
uint64_t queues_bytes(struct queues *qs);

/*
 * Call @cb for every item of every queue, each queue's items in order
 * (head first), with the queue's name; stops at the first non-zero return
 * and returns it. Each stripe is locked while its queues are walked (a
 * snapshot of a store no other thread changes: compaction's).
 */
int queues_foreach(struct queues *qs,
		   int (*cb)(const uint8_t *key, size_t klen,
			     const struct table_entry *item, void *arg),
		   void *arg);

#endif
