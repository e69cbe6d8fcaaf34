/* SPDX-License-Identifier: MIT */
/*
 * waits.c - the requests that wait for keys (CHECK, WAIT, CANCEL_WAIT,
 * BARRIER) and the arrival of a wake-up, over waiters.c; the rest of the
 * store's semantics is store.c's (see store.h for the rules both follow:
 * a key is present when it is in the table or names a non-empty queue, a
 * client has at most one wait, BARRIER is an ADD of 1 whose caller waits
 * for the count).
 */
#include "store_impl.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "hash.h"
#include "queues.h"
#include "table.h"
#include "waiters.h"

/* Present for CHECK/WAIT: in the table, or a non-empty queue. */
static bool ready(void *arg, uint64_t h, const uint8_t *key, size_t klen)
{
	struct store_thread *th = arg;

	return table_get(th->st->table, th->qt, h, key, klen) ||
	       queues_len(th->st->queues, h, key, klen) > 0;
}

int store_op_check(struct store_thread *th, const struct proto_req *r,
		   struct outq *out)
{
	const uint8_t *cur = r->list;
	struct proto_slice k;

	for (uint64_t i = 0; i < r->count; i++) {
		proto_next_str(&cur, &k);
		if (!ready(th, hash_key(k.p, k.len), k.p, k.len))
			return store_put_u8(out, PROTO_CHECK_NOT_READY);
	}
	return store_put_u8(out, PROTO_CHECK_READY);
}

/*
 * A client that starts a new wait while one is pending breaks the protocol's
 * one-request-at-a-time rule; withdraw the old wait, answering it if it had
 * already completed, so that replies stay one per request.
 */
static int drop_stale_wait(struct store_thread *th, struct wait_state *ws,
			   struct outq *out)
{
	if (ws->active && waiters_cancel(th->st->waiters, ws))
		return store_put_u8(out, PROTO_WAIT_STOP);
	return 0;
}

int store_op_wait(struct store_thread *th, struct wait_state *ws,
		  const struct proto_req *r, struct outq *out)
{
	int ret = drop_stale_wait(th, ws, out);

	if (ret)
		return ret;
	ws->barrier_ws = 0;
	ret = waiters_wait(th->st->waiters, ws, r->list, r->count, ready, th);
	if (ret == 1)
		return store_put_u8(out, PROTO_WAIT_STOP);
	return ret;
}

int store_op_cancel_wait(struct store_thread *th, struct wait_state *ws,
			 struct outq *out)
{
	int ret = drop_stale_wait(th, ws, out);

	return ret ? ret : store_put_u8(out, PROTO_WAIT_CANCELED);
}

int store_op_barrier(struct store_thread *th, struct wait_state *ws,
		     const struct proto_req *r, struct outq *out)
{
	uint64_t h = hash_key(r->key.p, r->key.len);
	int64_t count;
	int ret = drop_stale_wait(th, ws, out);

	if (ret)
		return ret;
	/* Enlist before arriving, so the final arrival cannot miss us. The
	 * views read barrier_ws under the stripe lock: set it first. */
	ws->barrier_ws = r->num;
	ret = waiters_enlist(th->st->waiters, ws, h, r->key.p, r->key.len);
	if (ret)
		return ret;
	ret = store_add(th, &r->key, h, 1, &count);
	if (ret) {
		waiters_cancel(th->st->waiters, ws);
		return ret;
	}
	if (count < r->num)
		return 0; /* answered by the final arrival (or any write) */
	/* Final arrival: one 00 for us, whether or not a waker beat us. */
	waiters_cancel(th->st->waiters, ws);
	store_wake_all(th, h, &r->key);
	return store_put_u8(out, PROTO_WAIT_STOP);
}

int store_wake_arrived(struct wait_state *ws, uint32_t seq, struct outq *out)
{
	if (!ws->active || ws->seq != seq)
		return 0;
	/*
	 * Acquire: pairs with the waker's final decrement in waiters_wake,
	 * which follows its last write to our nodes. The wake-up may have
	 * come through another ring (MSG_RING), an ordering the C memory
	 * model cannot see; this load makes reusing the nodes for the next
	 * wait safe without relying on it.
	 */
	if (atomic_load_explicit(&ws->pending, memory_order_acquire) != 0)
		return 0;
	ws->active = false;
	ws->nnodes = 0;
	int ret = store_put_u8(out, PROTO_WAIT_STOP);
	return ret ? ret : 1;
}

void store_client_gone(struct store_thread *th, struct wait_state *ws)
{
	if (ws->active)
		waiters_cancel(th->st->waiters, ws);
	wait_state_free(ws);
}
