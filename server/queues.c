/* SPDX-License-Identifier: MIT */
/*
 * queues.c - see queues.h. Each stripe holds a list of queue records (key
 * copy, head/tail of a singly linked item list, length). A record is freed
 * when its queue becomes empty, so popped-out queues cost no memory.
 */
#include "queues.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "compiler.h"
#include "table.h"

#define QUEUES_STRIPES 1024

struct qitem {
	struct qitem *next;
	struct table_entry *e; /* owned reference */
};

struct queue {
	struct queue *next; /* in the stripe */
	struct qitem *head, *tail;
	int64_t len;
	uint64_t hash;
	size_t klen;
	uint8_t key[];
};

struct qstripe {
	pthread_mutex_t lock;
	struct queue *queues; /* owned */
} RS_ALIGNED_CACHELINE;

struct queues {
	struct qstripe stripes[QUEUES_STRIPES];
	atomic_uint_fast64_t nonempty;
	atomic_uint_fast64_t items;
	atomic_uint_fast64_t bytes; /* value bytes of all items */
};

static struct qstripe *qstripe_of(struct queues *qs, uint64_t hash)
{
	return &qs->stripes[hash & (QUEUES_STRIPES - 1)];
}

struct queues *queues_create(void)
{
	struct queues *qs = aligned_alloc(RS_CACHELINE, sizeof(*qs));

	if (!qs)
		return NULL;
	memset(qs, 0, sizeof(*qs));
	for (size_t i = 0; i < QUEUES_STRIPES; i++)
		pthread_mutex_init(&qs->stripes[i].lock, NULL);
	return qs;
}

void queues_destroy(struct queues *qs)
{
	if (!qs)
		return;
	for (size_t i = 0; i < QUEUES_STRIPES; i++) {
		struct queue *q = qs->stripes[i].queues, *qn;
		for (; q; q = qn) {
			qn = q->next;
			for (struct qitem *it = q->head, *in; it; it = in) {
				in = it->next;
				table_entry_unref(it->e);
				free(it);
			}
			free(q);
		}
		pthread_mutex_destroy(&qs->stripes[i].lock);
	}
	free(qs);
}

static struct queue **find(struct qstripe *s, uint64_t hash,
			   const uint8_t *key, size_t klen)
{
	struct queue **pp = &s->queues;

	for (; *pp; pp = &(*pp)->next)
		if ((*pp)->hash == hash && (*pp)->klen == klen &&
		    !memcmp((*pp)->key, key, klen))
			return pp;
	return pp;
}

int queues_push(struct queues *qs, uint64_t hash, const uint8_t *key,
		size_t klen, const uint8_t *val, size_t vlen)
{
	struct qstripe *s = qstripe_of(qs, hash);
	struct qitem *it = malloc(sizeof(*it));
	struct queue **pp, *q;

	if (!it)
		return -ENOMEM;
	it->next = NULL;
	it->e = table_entry_new(0, NULL, 0, val, vlen, NULL, 0);
	if (!it->e) {
		free(it);
		return -ENOMEM;
	}
	pthread_mutex_lock(&s->lock);
	pp = find(s, hash, key, klen);
	q = *pp;
	if (!q) {
		q = malloc(sizeof(*q) + klen);
		if (!q) {
			pthread_mutex_unlock(&s->lock);
			table_entry_unref(it->e);
			free(it);
			return -ENOMEM;
		}
		memset(q, 0, sizeof(*q));
		q->hash = hash;
		q->klen = klen;
		memcpy(q->key, key, klen);
		*pp = q;
		atomic_fetch_add(&qs->nonempty, 1);
	}
	if (q->tail)
		q->tail->next = it;
	else
		q->head = it;
	q->tail = it;
	q->len++;
	atomic_fetch_add_explicit(&qs->items, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&qs->bytes, vlen, memory_order_relaxed);
	pthread_mutex_unlock(&s->lock);
	return 0;
}

int64_t queues_pop(struct queues *qs, uint64_t hash, const uint8_t *key,
		   size_t klen, struct table_entry **out)
{
	struct qstripe *s = qstripe_of(qs, hash);
	struct queue **pp, *q;
	struct qitem *it = NULL;
	int64_t len;

	pthread_mutex_lock(&s->lock);
	pp = find(s, hash, key, klen);
	q = *pp;
	if (!q) {
		pthread_mutex_unlock(&s->lock);
		return 0;
	}
	len = q->len;
	it = q->head;
	q->head = it->next;
	if (!q->head)
		q->tail = NULL;
	if (--q->len == 0) {
		*pp = q->next;
		free(q);
		atomic_fetch_sub(&qs->nonempty, 1);
	}
	atomic_fetch_sub_explicit(&qs->items, 1, memory_order_relaxed);
	atomic_fetch_sub_explicit(&qs->bytes, it->e->vlen, memory_order_relaxed);
	pthread_mutex_unlock(&s->lock);
	*out = it->e;
	free(it);
	return len;
}

int64_t queues_len(struct queues *qs, uint64_t hash, const uint8_t *key,
		   size_t klen)
{
	struct qstripe *s = qstripe_of(qs, hash);
	int64_t len;

	/* seq_cst: a WAIT's re-check must see a push that raced its enlist. */
	if (atomic_load(&qs->nonempty) == 0)
		return 0;
	pthread_mutex_lock(&s->lock);
	struct queue *q = *find(s, hash, key, klen);
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

	for (size_t i = 0; i < QUEUES_STRIPES && !ret; i++) {
		struct qstripe *s = &qs->stripes[i];

		pthread_mutex_lock(&s->lock);
		for (struct queue *q = s->queues; q && !ret; q = q->next)
			for (struct qitem *it = q->head; it && !ret;
			     it = it->next)
				ret = cb(q->key, q->klen, it->e, arg);
		pthread_mutex_unlock(&s->lock);
	}
	return ret;
}
