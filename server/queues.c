/* SPDX-License-Identifier: MIT */
/*
 * queues.c - see queues.h. A striped map (stripemap.h) holds a record per
 * non-empty queue: a copy of its key, its items in order and their number.
 * A record is deleted when its queue becomes empty, so popped-out queues
 * cost no memory.
 *
 * `nonempty` counts the records. It is raised and lowered seq_cst, under
 * the stripe lock, because queues_len skips the lookup when it reads 0: a
 * WAIT's re-check (waiters.c) must not miss a push that raced its enlist.
 */
#include "queues.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "compiler.h"
#include "list.h"
#include "stripemap.h"
#include "table.h"

struct qitem {
	struct qitem *next, *prev;
	struct table_entry *e; /* owned reference */
};

LIST_DEFINE(qitems, struct qitem, next, prev)

struct queue {
	struct stripemap_rec rec; /* first: chain link, hash, key length */
	struct qitems items;      /* owned, oldest first; never empty */
	int64_t len;
	uint8_t key[];
};
_Static_assert(offsetof(struct queue, rec) == 0, "stripemap.h");

struct queues {
	struct stripemap map; /* of struct queue; stripe counts unused */
	/* Written by every push and pop: a line of their own, so that the
	 * map's read-only tail (read by every lookup) is not bounced. */
	atomic_uint_fast64_t nonempty RS_ALIGNED_CACHELINE;
	atomic_uint_fast64_t items;
	atomic_uint_fast64_t bytes; /* value bytes of all items */
};

struct queues *queues_create(void)
{
	struct queues *qs = aligned_alloc(RS_CACHELINE, sizeof(*qs));

	if (!qs)
		return NULL;
	stripemap_init(&qs->map, sizeof(struct queue),
		       offsetof(struct queue, key));
	atomic_init(&qs->nonempty, 0);
	atomic_init(&qs->items, 0);
	atomic_init(&qs->bytes, 0);
	return qs;
}

/* stripemap_fini's drop: a queue's items and their references. */
static void drop_items(struct stripemap_rec *r, void *arg)
{
	struct queue *q = container_of(r, struct queue, rec);
	struct qitem *it, *next;

	(void)arg;
	for (it = q->items.head; it; it = next) {
		next = it->next;
		table_entry_unref(it->e);
		free(it);
	}
}

void queues_destroy(struct queues *qs)
{
	if (!qs)
		return;
	stripemap_fini(&qs->map, drop_items, NULL);
	free(qs);
}

/* Under s->lock: the queue of @key, or NULL. */
static struct queue *find(struct queues *qs, struct stripe *s, uint64_t hash,
			  const uint8_t *key, size_t klen)
{
	struct stripemap_rec *r = stripemap_find(&qs->map, s, hash, key, klen);

	return r ? container_of(r, struct queue, rec) : NULL;
}

int queues_push(struct queues *qs, uint64_t hash, const uint8_t *key,
		size_t klen, const uint8_t *val, size_t vlen)
{
	struct stripe *s = stripemap_stripe(&qs->map, hash);
	struct qitem *it = malloc(sizeof(*it));
	struct queue *q;

	if (!it)
		return -ENOMEM;
	it->next = it->prev = NULL;
	it->e = table_entry_new(0, NULL, 0, val, vlen, NULL, 0);
	if (!it->e) {
		free(it);
		return -ENOMEM;
	}
	pthread_mutex_lock(&s->lock);
	q = find(qs, s, hash, key, klen);
	if (!q) {
		struct stripemap_rec *r =
			stripemap_add(&qs->map, s, hash, key, klen);
		if (!r) {
			pthread_mutex_unlock(&s->lock);
			table_entry_unref(it->e);
			free(it);
			return -ENOMEM;
		}
		q = container_of(r, struct queue, rec);
		q->items = (struct qitems){ 0 };
		q->len = 0;
		/* seq_cst: pairs with the load in queues_len (see the top). */
		atomic_fetch_add(&qs->nonempty, 1);
	}
	qitems_push_tail(&q->items, it);
	q->len++;
	atomic_fetch_add_explicit(&qs->items, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&qs->bytes, vlen, memory_order_relaxed);
	pthread_mutex_unlock(&s->lock);
	return 0;
}

int64_t queues_pop(struct queues *qs, uint64_t hash, const uint8_t *key,
		   size_t klen, struct table_entry **out)
{
	struct stripe *s = stripemap_stripe(&qs->map, hash);
	struct qitem *it;
	struct queue *q;
	int64_t len;

	pthread_mutex_lock(&s->lock);
	q = find(qs, s, hash, key, klen);
	if (!q) {
		pthread_mutex_unlock(&s->lock);
		return 0;
	}
	len = q->len;
	it = q->items.head;
	qitems_remove(&q->items, it);
	if (--q->len == 0) {
		stripemap_del(s, &q->rec);
		/* seq_cst: as the increment in queues_push. */
		atomic_fetch_sub(&qs->nonempty, 1);
	}
	atomic_fetch_sub_explicit(&qs->items, 1, memory_order_relaxed);
	atomic_fetch_sub_explicit(&qs->bytes, it->e->vlen,
				  memory_order_relaxed);
	pthread_mutex_unlock(&s->lock);
	*out = it->e;
	free(it);
	return len;
}

int64_t queues_len(struct queues *qs, uint64_t hash, const uint8_t *key,
		   size_t klen)
{
	struct stripe *s = stripemap_stripe(&qs->map, hash);
	struct queue *q;
	int64_t len;

	/* seq_cst: a WAIT's re-check must see a push that raced its enlist
	 * (pairs with the increment in queues_push). */
	if (atomic_load(&qs->nonempty) == 0)
		return 0;
	pthread_mutex_lock(&s->lock);
	q = find(qs, s, hash, key, klen);
	len = q ? q->len : 0;
	pthread_mutex_unlock(&s->lock);
	return len;
}

uint64_t queues_nonempty(struct queues *qs)
{
	return atomic_load_explicit(&qs->nonempty, memory_order_relaxed);
}

uint64_t queues_items(struct queues *qs)
{
	return atomic_load_explicit(&qs->items, memory_order_relaxed);
}

uint64_t queues_bytes(struct queues *qs)
{
	return atomic_load_explicit(&qs->bytes, memory_order_relaxed);
}

int queues_foreach(struct queues *qs,
		   int (*cb)(const uint8_t *key, size_t klen,
			     const struct table_entry *item, void *arg),
		   void *arg)
{
	int ret = 0;

	for (size_t i = 0; i < STRIPEMAP_STRIPES && !ret; i++) {
		struct stripe *s = &qs->map.stripes[i];

		pthread_mutex_lock(&s->lock);
		for (struct stripemap_rec *r = s->recs.head; r && !ret;
		     r = r->next) {
			struct queue *q = container_of(r, struct queue, rec);

			for (struct qitem *it = q->items.head; it && !ret;
			     it = it->next)
				ret = cb(q->key, r->klen, it->e, arg);
		}
		pthread_mutex_unlock(&s->lock);
	}
	return ret;
}
