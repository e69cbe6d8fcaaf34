/* SPDX-License-Identifier: MIT */
/*
 * store_impl.h - what store.c (the operations), mget.c (MULTI_GET and its
 * reply cache) and waits.c (the requests that wait) share; not part of the
 * store's interface (store.h).
 */
#ifndef RS_SERVER_STORE_IMPL_H
#define RS_SERVER_STORE_IMPL_H

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
 * Add @delta to the counter at @k (hashed to @h; created as @delta when
 * missing); the new value is stored as decimal text, logged as its SET, and
 * returned in *res. 0, -EINVAL (not a number), -ENOMEM or the log's error.
 */
int store_add(struct store_thread *th, const struct proto_slice *k, uint64_t h,
	      int64_t delta, int64_t *res);

/* The requests that wait (waits.c). */
int store_check(struct store_thread *th, const struct proto_req *r,
		struct outq *out);
int store_wait(struct store_thread *th, struct wait_state *ws,
	       const struct proto_req *r, struct outq *out);
int store_cancel_wait(struct store_thread *th, struct wait_state *ws,
		      struct outq *out);
int store_barrier(struct store_thread *th, struct wait_state *ws,
		  const struct proto_req *r, struct outq *out);

/* MULTI_GET (mget.c). */
int store_multi_get(struct store_thread *th, const struct proto_req *r,
		    struct outq *out);
/* Free a thread's reply cache (NULL: nothing). */
void store_mget_cache_free(struct mget_cache *c);

#endif
