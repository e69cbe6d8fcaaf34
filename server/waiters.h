/* SPDX-License-Identifier: MIT */
/*
 * waiters.h - connections blocked in WAIT, BARRIER or a blocking queue pop,
 * and their wake-ups.
 *
 * A wait covers n keys. Each missing key gets a node on that key's list; the
 * wait's pending count is the number of nodes. A writer that changes key K
 * (after publishing the change) walks K's list: each node is unlinked and its
 * wait's count decremented; the waker that brings a count to zero delivers
 * the wake-up through the deliver callback (the reactor appends the 00 byte
 * directly, or sends it to the owning reactor's ring).
 *
 * Lists live in a lock-striped map keyed by the key hash (stripemap.h). An
 * atomic count of all nodes, and one per stripe, let a write to a key nobody
 * waits for cost one load and no lock. Registration re-checks readiness after
 * enlisting, so a concurrent write is never missed: the writer's publish and
 * the waiter's enlist are each followed by a seq_cst fence before the other
 * side's check (Dekker), see waiters.c.
 *
 * A struct wait_state belongs to one connection and is touched by its
 * reactor, except `pending` (atomic, decremented by wakers under the stripe
 * lock) and the nodes (linked/unlinked only under their stripe lock).
 */
#ifndef RS_SERVER_WAITERS_H
#define RS_SERVER_WAITERS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <netinet/in.h>

struct waiters;
struct wait_key;
struct wait_state;

/* Who to wake: a reactor, a connection slot there and its generation. */
struct waiter_ref {
	uint32_t reactor;
	uint32_t slot;
	uint32_t gen;
};

struct wait_node {
	struct wait_node *next, *prev; /* in wk's list; under the stripe lock */
	struct wait_key *wk;           /* NULL while unlinked */
	struct wait_state *ws;         /* the owner */
	uint64_t hash;                 /* of the key; stable while linked */
	const uint8_t *key;            /* borrowed during waiters_wait only */
	size_t klen;
};

struct wait_state {
	atomic_uint_fast64_t pending; /* nodes not yet woken */
	struct waiter_ref who;
	uint32_t seq;            /* identifies the current wait in wake-ups */
	bool active;             /* a wait is registered and not answered */
	uint32_t nnodes;         /* nodes used by the current wait */
	uint32_t cap;            /* nodes allocated */
	struct wait_node *nodes; /* owned; node0 when cap == 1 */
	struct wait_node node0;
	uint64_t since_ns;  /* when the current wait began (CLOCK_MONOTONIC) */
	int64_t barrier_ws; /* world size of a pending BARRIER, else 0 */
	struct sockaddr_in6 peer; /* the client (IPv4 as v4-mapped), for views */
};

/* Is the wait on this key satisfied (e.g. the key is present)? */
typedef bool (*waiters_ready_fn)(void *arg, uint64_t hash, const uint8_t *key,
				 size_t klen);
/*
 * Deliver a completed wait (identified by @who and @seq). Called with a
 * stripe lock held: it must not call into waiters.
 */
typedef void (*waiters_deliver_fn)(void *arg, const struct waiter_ref *who,
				   uint32_t seq);

struct waiters *waiters_create(void);
void waiters_destroy(struct waiters *w);

void wait_state_init(struct wait_state *ws, struct waiter_ref who);
/* Releases the node storage; the wait must not be linked (cancel first). */
void wait_state_free(struct wait_state *ws);

/*
 * Begin a wait on the @n keys of an encoded key list (proto_next_str format;
 * the list must have been validated by the decoder). Keys for which @ready
 * is true are satisfied at once. Returns 1 if every key is ready (answer now:
 * no wait is registered), 0 if the wait is registered (ws->active; the answer
 * comes through @deliver, possibly before this returns if another thread
 * wakes it), -ENOMEM.
 */
int waiters_wait(struct waiters *w, struct wait_state *ws, const uint8_t *list,
		 uint64_t n, waiters_ready_fn ready, void *rarg);

/*
 * Enlist a one-key wait without a readiness check (BARRIER: call before
 * publishing the arrival, then either keep it or waiters_cancel it).
 * Returns 0 or -ENOMEM.
 */
int waiters_enlist(struct waiters *w, struct wait_state *ws, uint64_t hash,
		   const uint8_t *key, size_t klen);

/*
 * Withdraw the current wait (CANCEL_WAIT, close, or an answered barrier).
 * Returns true if a waker had already completed it (its wake-up is on the
 * way or delivered), false if it was withdrawn before completing. Clears
 * ws->active either way.
 */
bool waiters_cancel(struct waiters *w, struct wait_state *ws);

/*
 * Key @key changed: wake its waiters, at most @max completed waits
 * (UINT64_MAX: all; 1: QUEUE_PUSH). Call after publishing the change.
 * Returns the number of completed waits.
 */
uint64_t waiters_wake(struct waiters *w, uint64_t hash, const uint8_t *key,
		      size_t klen, uint64_t max, waiters_deliver_fn deliver,
		      void *darg);
/* The same after a change published by a seq_cst read-modify-write (every
 * table write): no fence needed (see waiters.c). */
uint64_t waiters_wake_sc(struct waiters *w, uint64_t hash, const uint8_t *key,
			 size_t klen, uint64_t max, waiters_deliver_fn deliver,
			 void *darg);

/* False if no wait is registered anywhere, read as waiters_wake_sc reads
 * it: after changes published by seq_cst read-modify-writes (or a seq_cst
 * fence), false means none of their keys has a waiter to wake, so a batch of
 * writes checks once instead of once per key. */
bool waiters_any_sc(struct waiters *w);

/* Registered wait nodes in total (relaxed). */
uint64_t waiters_count(struct waiters *w);

/*
 * Visit every waited-on key: @cb gets the key and its first node (->next
 * leads to the others, in arrival order; ->ws to their owners). Takes each
 * stripe lock in turn and holds it during @cb; for the control plane only.
 */
typedef void (*waiters_visit_fn)(void *arg, const uint8_t *key, size_t klen,
				 const struct wait_node *first);
void waiters_foreach(struct waiters *w, waiters_visit_fn cb, void *arg);

#endif
