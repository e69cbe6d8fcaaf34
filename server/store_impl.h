/* SPDX-License-Identifier: MIT */
/*
 * store_impl.h - the store's inside, not part of its interface (store.h):
 * the functions, one per opcode, that exec.c's dispatcher calls, and what
 * they share. They live in store.c (the keys and the queues), mget.c
 * (MULTI_GET and its reply cache) and waits.c (the requests that wait);
 * exec.c, above them all, holds the store threads and store_exec.
 */
#ifndef RS_SERVER_STORE_IMPL_H
#define RS_SERVER_STORE_IMPL_H

#include <stdatomic.h>
#include <stdint.h>

#include "outq.h"
#include "proto.h"
#include "store.h"
#include "table.h"
#include "waiters.h"

/* Keys whose slot and entry misses one batch of prefetches overlaps. */
#define LOOKUP_BATCH TABLE_BATCH_MAX

/* Append a value field: u64 length, then the bytes. */
static inline int store_put_bytes(struct outq *out, const void *p, uint64_t len)
{
	int ret = outq_put(out, &len, sizeof(len));
	return ret ? ret : outq_put(out, p, len);
}

/* Append a value field from entry @e (copied or referenced: outq.h). */
static inline int store_put_value(struct outq *out, struct table_entry *e)
{
	uint64_t len = e->vlen;
	int ret = outq_put(out, &len, sizeof(len));

	return ret ? ret : outq_put_entry(out, e);
}

/* Append a one-byte or an i64 reply field. */
static inline int store_put_u8(struct outq *out, uint8_t v)
{
	return outq_put(out, &v, 1);
}

static inline int store_put_i64(struct outq *out, int64_t v)
{
	return outq_put(out, &v, sizeof(v));
}

/* After a table write: every successful table_put/table_cas publishes with
 * a seq_cst CAS, which lets the wake-up skip its fence. */
static inline void store_wake_all(struct store_thread *th, uint64_t h,
				  const struct proto_slice *k)
{
	waiters_wake_sc(th->st->waiters, h, k->p, k->len, UINT64_MAX,
			th->deliver, th->darg);
}

/*
 * The write generation (see the reply cache in store.h and in mget.c).
 * Before a request's first table write our counter goes odd (begin);
 * store_exec makes it even again after the request (end). Both stores are
 * seq_cst, so they are ordered in S with the table's seq_cst CASes between
 * them and with the cache's seq_cst loads.
 */
static inline void store_gen_begin(struct store_thread *th)
{
	if (th->genv & 1)
		return;
	th->genv++;
	atomic_store_explicit(&th->st->gens[th->gen].v, th->genv,
			      memory_order_seq_cst);
}

static inline void store_gen_end(struct store_thread *th)
{
	if (!(th->genv & 1))
		return;
	th->genv++;
	atomic_store_explicit(&th->st->gens[th->gen].v, th->genv,
			      memory_order_seq_cst);
}

/*
 * Add @delta to the counter at @k (hashed to @h; created as @delta when
 * missing); the new value is stored as decimal text, logged as its SET, and
 * returned in *res. 0, -EINVAL (not a number), -ENOMEM or the log's error.
 */
int store_add(struct store_thread *th, const struct proto_slice *k, uint64_t h,
	      int64_t delta, int64_t *res);

/*
 * The operations, one per opcode (docs/protocol.md §5): each runs request
 * @r of a client whose wait state is @ws, appending its immediate reply, if
 * any, to @out. Return values are store_exec's.
 */
/* store.c: the keys and the queues. */
int store_op_set(struct store_thread *th, const struct proto_req *r);
int store_op_compare_set(struct store_thread *th, const struct proto_req *r,
			 struct outq *out);
int store_op_get(struct store_thread *th, const struct proto_slice *k,
		 struct outq *out);
int store_op_add(struct store_thread *th, const struct proto_req *r,
		 struct outq *out);
int store_op_delete(struct store_thread *th, const struct proto_req *r,
		    struct outq *out);
int store_op_append(struct store_thread *th, const struct proto_req *r);
int store_op_multi_set(struct store_thread *th, const struct proto_req *r);
int store_op_queue_push(struct store_thread *th, const struct proto_req *r);
int store_op_queue_pop(struct store_thread *th, const struct proto_req *r,
		       struct outq *out);
int store_op_list_keys(struct store_thread *th, struct outq *out);

/* waits.c: the requests that wait. */
int store_op_check(struct store_thread *th, const struct proto_req *r,
		   struct outq *out);
int store_op_wait(struct store_thread *th, struct wait_state *ws,
		  const struct proto_req *r, struct outq *out);
int store_op_cancel_wait(struct store_thread *th, struct wait_state *ws,
			 struct outq *out);
int store_op_barrier(struct store_thread *th, struct wait_state *ws,
		     const struct proto_req *r, struct outq *out);

/* mget.c: MULTI_GET, and freeing a thread's reply cache (NULL: nothing). */
int store_op_multi_get(struct store_thread *th, const struct proto_req *r,
		       struct outq *out);
void store_mget_cache_free(struct mget_cache *c);

#endif
