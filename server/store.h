/* SPDX-License-Identifier: MIT */
/*
 * store.h - TCPStore semantics over the table, the waiters and the queues:
 * one function per opcode (store.c, mget.c, waits.c), dispatched by
 * store_exec (exec.c, with the store threads).
 *
 * Sans-I/O: a request comes in parsed (proto_req), replies go out into an
 * outq, and deferred WAIT/BARRIER answers go through the deliver callback
 * (see waiters.h). The reactor owns the sockets; unit tests drive this layer
 * directly.
 *
 * struct store is shared by every reactor; struct store_thread is one
 * reactor's handle (its QSBR registration and its deliver callback).
 *
 * With a write log (store.wal, --data-dir), every change is also appended
 * to the log as the request that makes it (wal.h: the record's place is
 * taken before the change, under the key's stripe lock, and published after
 * it), and replay at start-up executes those requests through store_exec.
 *
 * With a memory cap (store.max_memory), a request that would store more
 * bytes while the keys, values and queue items already take the cap fails
 * with -ENOSPC before changing anything (its connection is closed); reads,
 * deletes and pops keep working. The check is against a relaxed total, so
 * concurrent writers may overshoot the cap by at most one request each.
 *
 * Reply cache. NCCL's scalable init has every rank fetch the same list of
 * keys (every root's unique id) with one MULTI_GET, thousands of times in a
 * burst with no write in between. Each store_thread keeps the reply to its
 * last large MULTI_GET (STORE_MGET_CACHE_MIN keys or more, all values
 * short) and sends it again, by reference, for a byte-identical request as
 * long as no write happened anywhere since it was built. "No write" is
 * checked with one generation counter per store_thread, bumped to odd
 * before a request's first table write and back to even after it (a
 * seqlock with one writer per counter, so writers share no cache line):
 * a reply is cached only if every counter was even and unchanged across
 * its build, and served only while every counter still has the value it
 * had then. See mget.c for why that is linearizable.
 */
#ifndef RS_SERVER_STORE_H
#define RS_SERVER_STORE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "buf.h"
#include "proto.h"
#include "waiters.h"
#include "wal.h"

struct outq;
struct qsbr;
struct qsbr_thread;
struct queues;
struct stats;
struct table;

#define STORE_MAX_THREADS 256
#define STORE_MGET_CACHE_MIN 64                /* keys */
#define STORE_MGET_CACHE_MAX ((size_t)8 << 20) /* reply bytes */

/* A store_thread's write generation: odd while it is writing. */
struct store_gen {
	_Atomic uint64_t v;
} __attribute__((aligned(64)));

struct store {
	struct qsbr *qsbr;       /* owned */
	struct table *table;     /* owned */
	struct waiters *waiters; /* owned */
	struct queues *queues;   /* owned */
	uint64_t max_memory;     /* cap on stored key+value bytes; 0: none */
	bool mget_cache_off;     /* no MULTI_GET reply cache */
	struct store_gen *gens;  /* owned: [STORE_MAX_THREADS] */
	_Atomic unsigned ngens;  /* generations handed out */
	unsigned threads;        /* store threads allowed (store_init) */
	struct wal *wal;         /* borrowed: the write log, or NULL; set
				  * after replay, before store threads
				  * register */
};

/* The reply to the last large MULTI_GET, and what it was built from. */
struct mget_cache {
	uint8_t *req; /* owned: the key list's bytes */
	size_t req_len;
	uint64_t count;
	struct table_entry *reply; /* owned reference: value = reply bytes */
	unsigned ngens;
	uint64_t snap[STORE_MAX_THREADS];
	struct table_entry **ents; /* owned scratch: one per key */
	size_t ents_cap;
};

struct store_thread {
	struct store *st;       /* borrowed */
	struct qsbr_thread *qt; /* owned registration */
	waiters_deliver_fn deliver;
	void *darg;
	struct buf scratch;      /* owned: LIST_KEYS assembly, values read
				    * for read-modify-writes */
	unsigned gen;            /* our index in st->gens */
	uint64_t genv;           /* our generation (we are its only writer) */
	struct mget_cache *mget; /* owned; NULL until first needed */
	struct wal_writer ww;    /* this thread's records (wal.h) */
	struct stats *stats;     /* borrowed: where this thread counts
				    * (writes in place, the reply cache) */
};

/*
 * Build the shared store for @threads store threads (1 to
 * STORE_MAX_THREADS); with one, its table has one writer (table_create).
 * Returns 0, -EINVAL or -ENOMEM (and leaves *st empty).
 */
int store_init(struct store *st, size_t initial_keys, unsigned threads);
void store_destroy(struct store *st);

/*
 * Register the calling thread, which counts into @stats (borrowed: the
 * reactor's counters; it must outlive @th, and this thread is its only
 * writer). Returns 0, -EINVAL (every thread store_init allowed is
 * registered) or -ENOMEM.
 */
int store_thread_init(struct store_thread *th, struct store *st,
		      struct stats *stats, waiters_deliver_fn deliver,
		      void *darg);
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
 * Delete @key as DELETE_KEY does (its waiters are not woken). This is the
 * one path by which a key leaves the table: DELETE_KEY and the control
 * plane's prefix delete both come through here (so a hook on deletions,
 * such as a write log, belongs here). Returns 1 if the key was deleted, 0
 * if it was absent, or -ENOMEM (the table could not grow).
 */
int store_delete_key(struct store_thread *th, const void *key, size_t klen);

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
