/* SPDX-License-Identifier: MIT */
/*
 * waiters.c - see waiters.h.
 *
 * Layout: a striped map (stripemap.h) of wait_key records, one per
 * waited-on key, each holding a copy of the key and the list of its nodes
 * in arrival order. A record is deleted with its last node, so keys nobody
 * waits for cost no memory. Each stripe's count is the number of nodes
 * enlisted in it, and `total` the number enlisted anywhere.
 *
 * The no-lost-wake-up argument (Dekker): a writer publishes its change with a
 * table CAS, issues a seq_cst fence (waiters_wake), then loads the node
 * counts (first the total, then the stripe's); or, when the CAS itself was
 * seq_cst, loads the counts seq_cst with no fence (waiters_wake_sc). A
 * waiter increments both counts (seq_cst, under the stripe lock), then
 * re-checks readiness. Of two such sequences at least one sees the other:
 * either the writer sees count > 0 and takes the lock (and so sees the node,
 * enlisted before the count was raised), or the waiter's re-check sees the
 * published value and completes itself.
 */
#include "waiters.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "compiler.h"
#include "hash.h"
#include "list.h"
#include "now.h"
#include "proto.h"
#include "stripemap.h"

LIST_DEFINE(wait_nodes, struct wait_node, next, prev)

struct wait_key {
	struct stripemap_rec rec; /* first: chain link, hash, key length */
	struct wait_nodes nodes;  /* in arrival order; never empty */
	uint8_t key[];
};
_Static_assert(offsetof(struct wait_key, rec) == 0, "stripemap.h");

struct waiters {
	struct stripemap map; /* of wait_key; stripe counts: nodes */
	/* Nodes enlisted anywhere: read by every write, so that writes to
	 * keys nobody waits for skip the stripe's cache line entirely. It is
	 * written only when a wait begins or ends, so it stays in cache. */
	atomic_uint_fast64_t total RS_ALIGNED_CACHELINE;
};

static struct stripe *stripe_of(struct waiters *w, uint64_t hash)
{
	return stripemap_stripe(&w->map, hash);
}

struct waiters *waiters_create(void)
{
	struct waiters *w = aligned_alloc(RS_CACHELINE, sizeof(*w));

	if (!w)
		return NULL;
	stripemap_init(&w->map, sizeof(struct wait_key),
		       offsetof(struct wait_key, key));
	atomic_init(&w->total, 0);
	return w;
}

void waiters_destroy(struct waiters *w)
{
	if (!w)
		return;
	stripemap_fini(&w->map, NULL, NULL);
	free(w);
}

void wait_state_init(struct wait_state *ws, struct waiter_ref who)
{
	memset(ws, 0, sizeof(*ws));
	atomic_init(&ws->pending, 0);
	ws->who = who;
	ws->nodes = &ws->node0;
	ws->cap = 1;
}

void wait_state_free(struct wait_state *ws)
{
	if (ws->nodes != &ws->node0)
		free(ws->nodes);
	ws->nodes = &ws->node0;
	ws->cap = 1;
}

static int reserve_nodes(struct wait_state *ws, uint64_t n)
{
	if (n <= ws->cap)
		return 0;
	if (n > UINT32_MAX)
		return -ENOMEM;
	struct wait_node *nodes = calloc(n, sizeof(*nodes));
	if (!nodes)
		return -ENOMEM;
	wait_state_free(ws);
	ws->nodes = nodes;
	ws->cap = (uint32_t)n;
	return 0;
}

/* Under s->lock: the record of @key, or NULL. */
static struct wait_key *find_key(struct waiters *w, struct stripe *s,
				 uint64_t hash, const uint8_t *key, size_t klen)
{
	struct stripemap_rec *r = stripemap_find(&w->map, s, hash, key, klen);

	return r ? container_of(r, struct wait_key, rec) : NULL;
}

/* Under s->lock: take @node off its key's list; frees an empty key record. */
static void unlink_node(struct waiters *w, struct stripe *s,
			struct wait_node *node)
{
	struct wait_key *wk = node->wk;

	wait_nodes_remove(&wk->nodes, node);
	node->wk = NULL;
	atomic_fetch_sub_explicit(&s->count, 1, memory_order_relaxed);
	atomic_fetch_sub_explicit(&w->total, 1, memory_order_relaxed);
	if (!wk->nodes.head)
		stripemap_del(s, &wk->rec);
}

static int enlist(struct waiters *w, struct wait_node *node, uint64_t hash,
		  const uint8_t *key, size_t klen)
{
	struct stripe *s = stripe_of(w, hash);
	struct wait_key *wk;

	pthread_mutex_lock(&s->lock);
	wk = find_key(w, s, hash, key, klen);
	if (!wk) {
		struct stripemap_rec *r =
			stripemap_add(&w->map, s, hash, key, klen);
		if (!r) {
			pthread_mutex_unlock(&s->lock);
			return -ENOMEM;
		}
		wk = container_of(r, struct wait_key, rec);
		wk->nodes = (struct wait_nodes){ 0 };
	}
	node->wk = wk;
	wait_nodes_push_tail(&wk->nodes, node);
	/* seq_cst: pair with the fence + count loads in waiters_wake. */
	atomic_fetch_add(&w->total, 1);
	atomic_fetch_add(&s->count, 1);
	pthread_mutex_unlock(&s->lock);
	return 0;
}

/*
 * Withdraw @node if no waker took it yet. Returns true if this call unlinked
 * it and that brought the wait's count to zero.
 */
static bool withdraw(struct waiters *w, struct wait_node *node)
{
	struct stripe *s = stripe_of(w, node->hash);
	bool done = false;

	pthread_mutex_lock(&s->lock);
	if (node->wk) {
		unlink_node(w, s, node);
		done = atomic_fetch_sub(&node->ws->pending, 1) == 1;
	}
	pthread_mutex_unlock(&s->lock);
	return done;
}

static void begin(struct wait_state *ws, uint64_t n)
{
	ws->seq++;
	ws->active = true;
	ws->nnodes = (uint32_t)n;
	ws->since_ns = now_mono_ns();
	/* Relaxed: published to wakers by the stripe unlock in enlist. */
	atomic_store_explicit(&ws->pending, n, memory_order_relaxed);
}

int waiters_wait(struct waiters *w, struct wait_state *ws, const uint8_t *list,
		 uint64_t n, waiters_ready_fn ready, void *rarg)
{
	const uint8_t *cur = list;
	struct proto_slice k;
	uint64_t missing = 0, used = 0, i;
	int ret;

	for (i = 0; i < n; i++) {
		proto_next_str(&cur, &k);
		if (!ready(rarg, hash_key(k.p, k.len), k.p, k.len))
			missing++;
	}
	if (!missing)
		return 1;
	ret = reserve_nodes(ws, missing);
	if (ret)
		return ret;
	/* Second pass: a key may have become ready meanwhile. */
	cur = list;
	for (i = 0; i < n && used < missing; i++) {
		proto_next_str(&cur, &k);
		uint64_t h = hash_key(k.p, k.len);
		if (ready(rarg, h, k.p, k.len))
			continue;
		ws->nodes[used++] = (struct wait_node){ .ws = ws,
							.hash = h,
							.key = k.p,
							.klen = k.len };
	}
	if (!used)
		return 1;
	begin(ws, used);
	for (i = 0; i < used; i++) {
		struct wait_node *node = &ws->nodes[i];
		ret = enlist(w, node, node->hash, node->key, node->klen);
		if (ret) {
			/* Forget the nodes never enlisted, then back out. */
			atomic_fetch_sub(&ws->pending, used - i);
			ws->nnodes = (uint32_t)i;
			waiters_cancel(w, ws);
			return ret;
		}
	}
	/* Re-check after enlisting (see the file header). */
	atomic_thread_fence(memory_order_seq_cst);
	for (i = 0; i < used; i++) {
		struct wait_node *node = &ws->nodes[i];
		if (ready(rarg, node->hash, node->key, node->klen) &&
		    withdraw(w, node)) {
			ws->active = false;
			ws->nnodes = 0;
			return 1;
		}
	}
	return 0;
}

int waiters_enlist(struct waiters *w, struct wait_state *ws, uint64_t hash,
		   const uint8_t *key, size_t klen)
{
	begin(ws, 1);
	ws->nodes[0] = (struct wait_node){ .ws = ws, .hash = hash };
	int ret = enlist(w, &ws->nodes[0], hash, key, klen);
	if (ret) {
		atomic_store(&ws->pending, 0);
		ws->active = false;
		ws->nnodes = 0;
	}
	return ret;
}

bool waiters_cancel(struct waiters *w, struct wait_state *ws)
{
	bool mine = false;

	for (uint32_t i = 0; i < ws->nnodes; i++) {
		struct wait_node *node = &ws->nodes[i];
		struct stripe *s = stripe_of(w, node->hash);

		/* node->wk changes only under this stripe's lock. */
		pthread_mutex_lock(&s->lock);
		if (node->wk) {
			unlink_node(w, s, node);
			if (atomic_fetch_sub(&ws->pending, 1) == 1)
				mine = true;
		}
		pthread_mutex_unlock(&s->lock);
	}
	/*
	 * Each node is unlinked exactly once with exactly one decrement, so
	 * pending is 0 now. If our unlinks did not make the final decrement, a
	 * waker did, and that waker delivers (or delivered) the wake-up.
	 */
	bool completed = ws->active && ws->nnodes && !mine;
	ws->active = false;
	ws->nnodes = 0;
	return completed;
}

static uint64_t wake(struct waiters *w, struct stripe *s, uint64_t hash,
		     const uint8_t *key, size_t klen, uint64_t max,
		     waiters_deliver_fn deliver, void *darg);

uint64_t waiters_wake(struct waiters *w, uint64_t hash, const uint8_t *key,
		      size_t klen, uint64_t max, waiters_deliver_fn deliver,
		      void *darg)
{
	struct stripe *s = stripe_of(w, hash);

	/* Pairs with the seq_cst increments in enlist (see file header):
	 * nobody waiting anywhere, or on this stripe, means nobody to wake. */
	atomic_thread_fence(memory_order_seq_cst);
	if (atomic_load_explicit(&w->total, memory_order_relaxed) == 0 ||
	    atomic_load_explicit(&s->count, memory_order_relaxed) == 0)
		return 0;
	return wake(w, s, hash, key, klen, max, deliver, darg);
}

/*
 * For a change published by a seq_cst read-modify-write (the table's CAS):
 * that operation and the seq_cst loads of the counts below replace the
 * fence. If our load of a count misses a waiter's increment I, it precedes
 * I in S; the publication precedes our load, and I precedes the waiter's
 * fence before its re-check, so that re-check observes the publication or
 * a later value (C11 7.17.3). Either way one side sees the other.
 */
uint64_t waiters_wake_sc(struct waiters *w, uint64_t hash, const uint8_t *key,
			 size_t klen, uint64_t max, waiters_deliver_fn deliver,
			 void *darg)
{
	struct stripe *s = stripe_of(w, hash);

	if (atomic_load_explicit(&w->total, memory_order_seq_cst) == 0 ||
	    atomic_load_explicit(&s->count, memory_order_seq_cst) == 0)
		return 0;
	return wake(w, s, hash, key, klen, max, deliver, darg);
}

bool waiters_any_sc(struct waiters *w)
{
	return atomic_load_explicit(&w->total, memory_order_seq_cst) != 0;
}

static uint64_t wake(struct waiters *w, struct stripe *s, uint64_t hash,
		     const uint8_t *key, size_t klen, uint64_t max,
		     waiters_deliver_fn deliver, void *darg)
{
	struct wait_key *wk;
	uint64_t woken = 0;

	pthread_mutex_lock(&s->lock);
	wk = find_key(w, s, hash, key, klen);
	while (wk && woken < max) {
		struct wait_node *node = wk->nodes.head;
		struct wait_state *ws = node->ws;
		bool last = !node->next;
		/*
		 * Read who and seq while our node is still linked: the owner
		 * cannot start another wait before that. After the final
		 * decrement the owner may reuse ws at once (its acquire load
		 * in store_wake_arrived pairs with this seq_cst decrement), so
		 * ws is not touched again.
		 */
		struct waiter_ref who = ws->who;
		uint32_t seq = ws->seq;

		unlink_node(w, s, node);
		if (atomic_fetch_sub(&ws->pending, 1) == 1) {
			deliver(darg, &who, seq);
			woken++;
		}
		if (last)
			break; /* wk was freed with its last node */
	}
	pthread_mutex_unlock(&s->lock);
	return woken;
}

uint64_t waiters_count(struct waiters *w)
{
	uint64_t n = 0;

	for (size_t i = 0; i < STRIPEMAP_STRIPES; i++)
		n += atomic_load_explicit(&w->map.stripes[i].count,
					  memory_order_relaxed);
	return n;
}

void waiters_foreach(struct waiters *w, waiters_visit_fn cb, void *arg)
{
	for (size_t i = 0; i < STRIPEMAP_STRIPES; i++) {
		struct stripe *s = &w->map.stripes[i];
		if (!atomic_load_explicit(&s->count, memory_order_relaxed))
			continue;
		pthread_mutex_lock(&s->lock);
		for (struct stripemap_rec *r = s->recs.head; r; r = r->next) {
			struct wait_key *wk =
				container_of(r, struct wait_key, rec);
			cb(arg, wk->key, r->klen, wk->nodes.head);
		}
		pthread_mutex_unlock(&s->lock);
	}
}
