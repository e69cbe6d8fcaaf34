/* SPDX-License-Identifier: MIT */
/*
 * exec.c - a store thread, and store_exec: the one entry by which a
 * request reaches the store (see store.h). It checks the memory cap,
 * dispatches the opcode to its operation (store_impl.h: store.c, mget.c,
 * waits.c) and ends the request's write generation. It sits above the
 * operations, which never call back up here.
 */
#include "store.h"

#include <errno.h>
#include <string.h>

#include "compiler.h"
#include "hash.h"
#include "outq.h"
#include "qsbr.h"
#include "queues.h"
#include "store_impl.h"
#include "table.h"

int store_thread_init(struct store_thread *th, struct store *st,
		      struct stats *stats, waiters_deliver_fn deliver,
		      void *darg)
{
	memset(th, 0, sizeof(*th));
	th->st = st;
	th->stats = stats;
	th->deliver = deliver;
	th->darg = darg;
	th->gen = atomic_fetch_add(&st->ngens, 1);
	/* More threads than store_init was told would break the table's
	 * one-writer mode (and overflow st->gens). */
	if (th->gen >= st->threads)
		return -EINVAL;
	/* A reused slot keeps counting up, so no snapshot can match again. */
	th->genv = atomic_load_explicit(&st->gens[th->gen].v,
					memory_order_relaxed);
	th->ww.w = st->wal;
	th->qt = qsbr_register(st->qsbr);
	return th->qt ? 0 : -ENOMEM;
}

void store_thread_destroy(struct store_thread *th)
{
	unsigned last = th->gen + 1;

	store_mget_cache_free(th->mget);
	th->mget = NULL;
	if (th->qt)
		qsbr_unregister(th->qt);
	buf_free(&th->scratch);
	th->qt = NULL;
	if (!th->st)
		return;
	/* The last thread registered gives its place back (the thread that
	 * replays the write log before the reactors start), and with it the
	 * one-writer table's writer role. A reused place keeps counting its
	 * generation up (store_thread_init). */
	atomic_compare_exchange_strong(&th->st->ngens, &last, th->gen);
	table_writer_done(th->st->table);
	th->st = NULL;
}

/* Bytes a request may add to the store (an upper bound). */
static uint64_t write_bytes(const struct proto_req *r)
{
	switch (r->op) {
	case OP_SET:
	case OP_APPEND:
	case OP_QUEUE_PUSH:
		return r->key.len + r->val[0].len;
	case OP_COMPARE_SET:
		return r->key.len + r->val[1].len;
	case OP_ADD:
	case OP_BARRIER:
		return r->key.len + 20;
	case OP_MULTI_SET:
		return (uint64_t)(r->end - r->list);
	default:
		return 0;
	}
}

static bool over_memory(struct store *st, const struct proto_req *r)
{
	uint64_t add = write_bytes(r);

	if (!st->max_memory || !add)
		return false;
	return table_bytes(st->table) + queues_bytes(st->queues) + add >
	       st->max_memory;
}

static int exec(struct store_thread *th, struct wait_state *ws,
		const struct proto_req *r, struct outq *out)
{
	switch (r->op) {
	case OP_VALIDATE:
		return 0; /* checked by the decoder; never answered */
	case OP_SET:
		return store_op_set(th, r);
	case OP_COMPARE_SET:
		return store_op_compare_set(th, r, out);
	case OP_GET:
		return store_op_get(th, &r->key, out);
	case OP_ADD:
		return store_op_add(th, r, out);
	case OP_CHECK:
		return store_op_check(th, r, out);
	case OP_WAIT:
		return store_op_wait(th, ws, r, out);
	case OP_GETNUMKEYS:
		return store_put_i64(out, (int64_t)table_count(th->st->table));
	case OP_DELETE_KEY:
		return store_op_delete(th, r, out);
	case OP_APPEND:
		return store_op_append(th, r);
	case OP_MULTI_GET:
		return store_op_multi_get(th, r, out);
	case OP_MULTI_SET:
		return store_op_multi_set(th, r);
	case OP_CANCEL_WAIT:
		return store_op_cancel_wait(th, ws, out);
	case OP_PING:
		return outq_put(out, &r->u32, sizeof(r->u32));
	case OP_QUEUE_PUSH:
		return store_op_queue_push(th, r);
	case OP_QUEUE_POP:
		return store_op_queue_pop(th, r, out);
	case OP_QUEUE_LEN:
		return store_put_i64(out,
				     queues_len(th->st->queues,
						hash_key(r->key.p, r->key.len),
						r->key.p, r->key.len));
	case OP_LIST_KEYS:
		return store_op_list_keys(th, out);
	case OP_BARRIER:
		return store_op_barrier(th, ws, r, out);
	case OP__COUNT:
		break;
	}
	return -EPROTO;
}

int store_exec(struct store_thread *th, struct wait_state *ws,
	       const struct proto_req *r, struct outq *out)
{
	int ret;

	if (unlikely(over_memory(th->st, r)))
		return -ENOSPC;
	ret = exec(th, ws, r, out);
	store_gen_end(th); /* after the request's last table write, if any */
	return ret;
}
