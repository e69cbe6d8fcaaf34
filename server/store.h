/* SPDX-License-Identifier: MIT */
/*
 * store.h - TCPStore semantics over the table, the waiters and the queues:
 * one function per opcode, dispatched by store_exec.
 *
 * Sans-I/O: a request comes in parsed (proto_req), replies go out into an
 * outq, and deferred WAIT/BARRIER answers go through the deliver callback
 * (see waiters.h). The reactor owns the sockets; unit tests drive this layer
 * directly.
 *
 * struct store is shared by every reactor; struct store_thread is one
 * reactor's handle (its QSBR registration and its deliver callback).
 *
 * With a memory cap (store.max_memory), a request that would store more
 * bytes while the keys, values and queue items already take the cap fails
 * with -ENOSPC before changing anything (its connection is closed); reads,
 * deletes and pops keep working. The check is against a relaxed total, so
 * concurrent writers may overshoot the cap by at most one request each.
 */
#ifndef RS_SERVER_STORE_H
#define RS_SERVER_STORE_H

#include <stdint.h>

#include "buf.h"
#include "proto.h"
#include "waiters.h"

struct outq;
struct qsbr;
struct qsbr_thread;
struct queues;
struct table;

struct store {
	struct qsbr *qsbr;       /* owned */
	struct table *table;     /* owned */
	struct waiters *waiters; /* owned */
	struct queues *queues;   /* owned */
	uint64_t max_memory;     /* cap on stored key+value bytes; 0: none */
};

struct store_thread {
	struct store *st;          /* borrowed */
	struct qsbr_thread *qt;    /* owned registration */
	waiters_deliver_fn deliver;
	void *darg;
	struct buf scratch;        /* owned: LIST_KEYS assembly */
};

/* Build the shared store. Returns 0 or -ENOMEM (and leaves *st empty). */
int store_init(struct store *st, size_t initial_keys);
void store_destroy(struct store *st);

/* Register the calling thread. Returns 0 or -ENOMEM. */
int store_thread_init(struct store_thread *th, struct store *st,
		      waiters_deliver_fn deliver, void *darg);
void store_thread_destroy(struct store_thread *th);

/*
 * Execute one request from a client whose wait state is @ws, appending any
 * immediate reply to @out. Returns 0, -EINVAL when an ADD or BARRIER meets a
 * non-numeric value, -ENOSPC when a write meets the memory cap (either way
 * the connection must be closed), or -ENOMEM.
 */
int store_exec(struct store_thread *th, struct wait_state *ws,
	       const struct proto_req *req, struct outq *out);

/*
 * A wake-up for wait @seq of @ws arrived on the owner's thread: answer it
 * (append 00) if that wait is still the current one. Returns 1 if it
 * answered, 0 if the wake-up was stale, -ENOMEM.
 */
int store_wake_arrived(struct wait_state *ws, uint32_t seq, struct outq *out);

/* The client is going away: withdraw its wait, free its nodes. */
void store_client_gone(struct store_thread *th, struct wait_state *ws);

/*
 * Parse a stored counter like C++ std::stoll (leading white space, optional
 * sign, decimal digits, anything after ignored). Returns 0 or -EINVAL.
 */
int store_parse_i64(const uint8_t *p, size_t len, int64_t *out);

#endif
