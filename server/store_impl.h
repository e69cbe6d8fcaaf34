/* SPDX-License-Identifier: MIT */
/*
 * store_impl.h - what store.c (the operations) and mget.c (MULTI_GET and
 * its reply cache) share; not part of the store's interface (store.h).
 */
#ifndef RS_SERVER_STORE_IMPL_H
#define RS_SERVER_STORE_IMPL_H

#include <stdint.h>

#include "outq.h"
#include "proto.h"
#include "store.h"
#include "table.h"

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

/* MULTI_GET (mget.c). */
int store_multi_get(struct store_thread *th, const struct proto_req *r,
		    struct outq *out);
/* Free a thread's reply cache (NULL: nothing). */
void store_mget_cache_free(struct mget_cache *c);

#endif
