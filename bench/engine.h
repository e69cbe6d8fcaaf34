/* SPDX-License-Identifier: MIT */
/*
 * engine.h - the engine of ringstore-bench, and the hook table through which
 * it drives a workload.
 *
 * The engine (engine.c) owns threads, rings and connections: it connects with
 * a bounded number of connects in flight, does the TCPStore handshake
 * (VALIDATE, PING, echo check), sends whatever a connection has queued, scans
 * replies with proto's incremental reply scanner, times transactions into
 * histograms, samples the server's CPU from /proc around the measured window
 * and prints the report. It knows no workload by name: it calls the hooks of
 * the struct bench_workload it is given (workload.c defines the table), so
 * dependencies run one way: main.c -> workload.c -> engine.c.
 *
 * A workload only decides what each connection sends next and what a reply
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
#ifndef RS_BENCH_ENGINE_H
#define RS_BENCH_ENGINE_H

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
#define BENCH_PORTS_PER_SRC 28000u /* connections per source address */

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
	CS_DEAD, /* failed for good; counted in errors */
};

struct bench_workload;

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
	uint32_t rounds; /* nccl-init: MULTI_GETs per connection */
	bool json;
	const struct bench_workload *wl; /* borrowed, static */
	int server_pid;
	const char *server_metrics; /* HOST:PORT of its /metrics, or NULL */
	uint32_t src_addrs;
	uint32_t connect_inflight;
	double rate;        /* heartbeat: CHECKs per connection per second */
	double total_rate;  /* heartbeat: CHECKs per second, all connections */
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
	uint32_t id;   /* global index, 0 .. conns-1 */
	uint32_t idx;  /* index in its thread */
	uint16_t gen;  /* bumped on every (re)connect; stale CQEs are dropped */
	uint8_t state; /* enum bench_conn_state */
	uint8_t retries;
	bool sending;        /* a send SQE is in flight on @inflight */
	bool dirty;          /* on the thread's dirty list */
	bool recv_armed;     /* a multishot recv is in flight */
	bool scanning;       /* @sc is inside a reply */
	struct buf out;      /* owned: requests not yet handed to the kernel */
	struct buf inflight; /* owned, lent to the kernel while @sending */
	struct proto_reply_scanner sc;
	uint8_t cap[BENCH_CAP]; /* the first bytes of the current reply */
	uint8_t caplen;
	uint16_t eh, en;   /* head and count of @exp */
	uint16_t th, tn;   /* head and count of @tx */
	uint16_t open_exp; /* expectations of the transaction being built */
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
	_Atomic uint64_t
		done; /* workload-defined: ranks released, waiters woken */
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
	uint64_t rx_bytes, tx_bytes; /* during PH_RUN */
	uint64_t last_connect_ns;    /* latest connect completion */
	uint64_t last_done_ns; /* latest workload completion (rendezvous, fanout) */
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
	uint64_t prep_dead;        /* connections dead when PH_PREPARE began */
	uint64_t run_id;           /* makes this run's keys unique */
	uint8_t *value;            /* value_bytes of filler */
};

/*
 * A workload, as the engine sees it: a row of the table in workload.c. Every
 * hook runs on the bench thread that owns @t and @c, except adjust,
 * total_conns and prep_count (the main thread, before the threads start).
 * Hooks that may be NULL say so.
 */
struct bench_workload {
	const char *name;
	const char *help; /* one line or more for --help, "\n"-separated */
	/* This workload's defaults for the options the user left unset
	 * (those bench_opts_fill reads). */
	struct bench_opts dflt;
	/*
	 * After dflt is applied, before the engine's defaults (NULL: none):
	 * options that follow from others, and those the workload fixes.
	 */
	void (*adjust)(struct bench_opts *o);
	/* Connections to open (NULL: o->conns). */
	uint32_t (*total_conns)(const struct bench_opts *o);
	/*
	 * The initial value of bench.prep_left: what PH_PREPARE must achieve
	 * before PH_RUN (NULL or 0: no prepare phase). Workloads decrement it.
	 */
	int64_t (*prep_count)(const struct bench_opts *o);
	/*
	 * Queue the next transactions on a ready connection @c, as many as
	 * the workload and the pipeline depth allow in @phase. Called when
	 * the phase changes and after every batch of replies on @c.
	 */
	void (*issue)(struct bench_thread *t, struct bench_conn *c, int phase,
		      uint64_t now);
	/*
	 * One reply of @op ended on @c; @cap holds its first @caplen bytes.
	 * Returns 0, or -EPROTO if the reply is wrong (the engine fails @c).
	 */
	int (*reply)(struct bench_thread *t, struct bench_conn *c, uint8_t op,
		     const uint8_t *cap, unsigned caplen, uint64_t now);
	/* Once per loop iteration (NULL: none): timed workloads. */
	void (*tick)(struct bench_thread *t, int phase, uint64_t now);
	/* Per-thread scratch space: 0 or -ENOMEM; free takes a failed init. */
	int (*thread_init)(struct bench_thread *t);
	void (*thread_free)(struct bench_thread *t);
	/*
	 * Ends the measured window when done + dead connections reach this
	 * (NULL: the window lasts --duration or --ops). The window's limit is
	 * then at least 60 s plus 2 ms per connection.
	 */
	uint64_t (*done_target)(const struct bench_opts *o, uint32_t total);
	bool connects_in_run; /* connections are made (and timed) in PH_RUN */
	bool own_latency; /* records its own latencies, not per transaction */
};

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
void bench_tx_begin(struct bench_thread *t, struct bench_conn *c, uint16_t ops,
		    uint16_t keys, uint64_t t0);
/* The request just encoded into c->out expects a reply of @op. */
void bench_expect(struct bench_conn *c, enum proto_op op, uint16_t nkeys);
/* Close the transaction and schedule c->out for sending. */
void bench_tx_end(struct bench_thread *t, struct bench_conn *c);
/* True if @c can take another transaction under the pipeline depth @depth. */
static inline bool bench_can_issue(const struct bench_conn *c, uint32_t depth)
{
	return c->state == CS_READY && c->tn < depth && c->en + 4 <= BENCH_EXPQ;
}

/* The engine's defaults, for what neither the user nor the workload set. */
extern const struct bench_opts bench_fallback;
/*
 * Fill the options @o leaves unset (0, or UINT32_MAX for value_bytes) with
 * those @d sets (not 0): conns, pipeline, keys, key_bytes, value_bytes,
 * keyspace and rounds; the other fields of @d are not read.
 */
void bench_opts_fill(struct bench_opts *o, const struct bench_opts *d);

/*
 * Run the benchmark described by @b->o against the server (whose address
 * must be resolved), then print the report on stdout (text or JSON).
 * Returns 0, 1 if the run timed out or was interrupted, or -errno if it
 * could not start.
 */
int bench_run(struct bench *b);

#endif
