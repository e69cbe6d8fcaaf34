/* SPDX-License-Identifier: MIT */
/*
 * bench.h - the engine of ringstore-bench, as seen by the workloads.
 *
 * The engine (bench.c) owns threads, rings and connections: it connects with
 * a bounded number of connects in flight, does the TCPStore handshake
 * (VALIDATE, PING, echo check), sends whatever a connection has queued and
 * scans replies with proto's incremental reply scanner. A workload
 * (workload.c) only decides what each connection sends next and what a reply
 * means. It queues requests with the proto_enc_* encoders into c->out and
 * frames them as a transaction:
 *
 *	bench_tx_begin(t, c, ops, keys);
 *	proto_enc_...(&c->out, ...); bench_expect(c, OP_..., nkeys);
 *	bench_tx_end(t, c);
 *
 * A transaction's latency runs from bench_tx_begin to the end of its last
 * expected reply; one without replies (a plain SET, as PyTorch clients send
 * it) completes at once. Replies arrive in request order, so expectations
 * are a FIFO per connection.
 *
 * Threads: each bench thread owns its ring, its connections and its
 * counters outright; the main thread reads the published counters (relaxed
 * atomics) and drives the run through the phase word.
 */
#ifndef RS_BENCH_BENCH_H
#define RS_BENCH_BENCH_H

#include <liburing.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "buf.h"
#include "hist.h"
#include "proto.h"

#define BENCH_MAX_PIPELINE 32
#define BENCH_EXPQ 128 /* expected replies per connection, a power of two */
#define BENCH_TXQ 64   /* transactions per connection, a power of two */
#define BENCH_CAP 16   /* bytes of each reply kept for the workload */

enum bench_phase {
	PH_CONNECT, /* connect and handshake every connection */
	PH_PREPARE, /* populate keys / arm waiters, unmeasured */
	PH_RUN,     /* the measured part */
	PH_DRAIN,   /* send nothing new, let replies arrive */
	PH_DONE,    /* threads close everything and exit */
};

enum bench_conn_state {
	CS_IDLE,       /* not connected yet */
	CS_RETRY,      /* waiting for due_ns to connect again */
	CS_CONNECTING, /* a connect SQE is in flight */
	CS_HANDSHAKE,  /* VALIDATE + PING sent, waiting for the echo */
	CS_READY,
	CS_DEAD,       /* failed for good; counted in errors */
};

struct bench_opts {
	char host[256];
	uint16_t port;
	uint32_t conns;
	uint32_t pipeline;
	uint32_t keys;
	uint32_t key_bytes;
	uint32_t value_bytes;
	uint64_t keyspace;
	double duration;
	uint64_t ops;
	uint32_t threads;
	bool json;
	int workload;
	int server_pid;
	uint32_t src_addrs;
	uint32_t connect_inflight;
	double rate;       /* heartbeat: CHECKs per connection per second */
	uint32_t queue_max; /* queue: producers pause above this length */
	bool progress;
	const char *label; /* free text copied into the JSON */
};

struct bench_exp {
	uint8_t op;
	uint8_t last; /* this reply ends a transaction */
	uint16_t nkeys;
};

struct bench_tx {
	uint64_t t0;
	uint16_t ops;
	uint16_t keys;
	bool measured;
};

struct bench_conn {
	int fd;
	uint32_t id;     /* global index, 0 .. conns-1 */
	uint32_t idx;    /* index in its thread */
	uint16_t gen;    /* bumped on every (re)connect; stale CQEs are dropped */
	uint8_t state;   /* enum bench_conn_state */
	uint8_t retries;
	bool sending;    /* a send SQE is in flight on @inflight */
	bool dirty;      /* on the thread's dirty list */
	bool recv_armed; /* a multishot recv is in flight */
	bool scanning;   /* @sc is inside a reply */
	struct buf out;      /* owned: requests not yet handed to the kernel */
	struct buf inflight; /* owned, lent to the kernel while @sending */
	struct proto_reply_scanner sc;
	uint8_t cap[BENCH_CAP]; /* the first bytes of the current reply */
	uint8_t caplen;
	uint16_t eh, en;     /* head and count of @exp */
	uint16_t th, tn;     /* head and count of @tx */
	uint16_t open_exp;   /* expectations of the transaction being built */
	struct bench_exp exp[BENCH_EXPQ];
	struct bench_tx tx[BENCH_TXQ];
	uint64_t t_start; /* when the first connect began */
	uint64_t due_ns;  /* CS_RETRY: when to connect again */
	/* Workload-private state. */
	uint32_t wl;
	uint64_t wl_a;
	uint64_t wl_b;
};

/* Counters the main thread reads while the run goes (relaxed). */
struct bench_pub {
	_Atomic uint64_t ready;
	_Atomic uint64_t dead;
	_Atomic uint64_t ops;
	_Atomic uint64_t keys;
	_Atomic uint64_t done; /* workload-defined: ranks released, waiters woken */
};

struct bench_thread {
	struct bench *b; /* borrowed */
	int id;
	pthread_t th;
	struct io_uring ring;
	bool ring_ok;
	struct io_uring_buf_ring *br; /* owned */
	uint8_t *bufs;                /* owned, lent to the kernel */
	unsigned nbufs, bufsz;
	struct bench_conn *conns; /* owned */
	uint32_t nconns;
	uint32_t base; /* global id of conns[0] */
	struct bench_conn **dirty;
	uint32_t ndirty;
	uint32_t next_connect;
	uint32_t connecting;
	uint32_t nretry;
	int seen_phase;
	uint64_t rng;
	/* Counters, owned by the thread; the interesting ones are published. */
	uint64_t ops, keys, txs, errors, resets, ready, dead, done;
	uint64_t empty_pops, untimed_ops;
	uint64_t last_connect_ns; /* latest connect completion */
	uint64_t last_done_ns;    /* latest workload completion (rendezvous, fanout) */
	struct hist lat;
	struct bench_pub pub;
	/* Workload-private per-thread state. */
	uint64_t wl_cursor;
	double wl_credit;
	uint64_t wl_last_ns;
	uint64_t wl_next; /* populate: next key index */
	uint64_t wl_acked;
	uint64_t wl_paused; /* queue: producers waiting for the queue to shrink */
	void *wl_priv;      /* owned by workload.c */
};

struct bench {
	struct bench_opts o;
	struct bench_thread *threads;
	_Atomic int phase;
	_Atomic uint64_t fire_ns;  /* fanout: when the releasing SET was sent */
	_Atomic int64_t prep_left; /* PH_PREPARE ends when this reaches 0 */
	uint64_t run_id;           /* makes this run's keys unique */
	uint8_t *value;            /* value_bytes of filler */
};

/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t bench_now(void);

/* xorshift64* on the thread's state: uniform in [0, n). */
static inline uint64_t bench_rand(struct bench_thread *t, uint64_t n)
{
	uint64_t x = t->rng;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	t->rng = x;
	return n ? (x * 0x2545F4914F6CDD1Dull) % n : 0;
}

/*
 * Open a transaction on @c counting @ops operations and @keys keys, started
 * at @t0 (0: now; a workload passes an earlier time when one logical
 * operation takes two round trips, like PyTorch's get = WAIT then GET). It
 * is measured (latency, ops/s) only if it was opened during PH_RUN and @ops
 * is not 0.
 */
void bench_tx_begin(struct bench_thread *t, struct bench_conn *c,
		    uint16_t ops, uint16_t keys, uint64_t t0);
/* The request just encoded into c->out expects a reply of @op. */
void bench_expect(struct bench_conn *c, enum proto_op op, uint16_t nkeys);
/* Close the transaction and schedule c->out for sending. */
void bench_tx_end(struct bench_thread *t, struct bench_conn *c);
/* True if @c can take another transaction under the pipeline depth @depth. */
static inline bool bench_can_issue(const struct bench_conn *c, uint32_t depth)
{
	return c->state == CS_READY && c->tn < depth &&
	       c->en + 4 <= BENCH_EXPQ;
}
/* Count a connection-level error and close @c for good. */
void bench_conn_fail(struct bench_thread *t, struct bench_conn *c,
		     const char *why);

#endif
