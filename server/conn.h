/* SPDX-License-Identifier: MIT */
/*
 * conn.h - one client connection: its state, its request decoder and spill
 * buffer, its two reply queues, and its wait state.
 *
 * States: CONN_FREE (slot unused) -> CONN_OPEN (handshake, then serving; the
 * decoder enforces VALIDATE first) -> CONN_CLOSING (no more input processed,
 * waiting for its SQEs to finish) -> CONN_FREE. Every transition goes through
 * the reactor's conn_close()/conn_release().
 *
 * Replies are written into oq[fill]; the other queue, oq[fill ^ 1], is the one
 * handed to the kernel, whose iovecs must not move while a SEND is in flight.
 *
 * conn_input() is sans-I/O: it takes received bytes, runs complete requests
 * through the store and leaves replies in oq[fill]; tests can call it
 * without a ring. A conn is used only by its reactor's thread.
 */
#ifndef RS_SERVER_CONN_H
#define RS_SERVER_CONN_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "buf.h"
#include "outq.h"
#include "proto.h"
#include "stats.h"
#include "waiters.h"

struct control_conn;
struct store_thread;

enum conn_state {
	CONN_FREE,
	CONN_OPEN,
	CONN_CLOSING,
};

struct conn {
	int fd;
	uint32_t slot;
	uint32_t gen;              /* bumped on every reuse of the slot */
	uint8_t state;             /* enum conn_state */
	uint8_t fill;              /* oq[fill] collects new replies */
	bool recv_armed;           /* a multishot RECV is in flight */
	bool sending;              /* a SEND is in flight */
	bool dirty;                /* on the reactor's dirty list */
	bool rearm;                /* RECV must be re-armed after the batch */
	bool in_hs;                /* on the reactor's handshake list */
	bool close_after_send;     /* HTTP: close once the replies are out */
	uint32_t inflight;         /* SQEs in flight that name this conn */
	struct conn *next_dirty;   /* borrowed link */
	struct conn *hs_next, *hs_prev; /* handshake list while validating */
	uint64_t opened_ms;        /* CLOCK_MONOTONIC at accept */
	struct proto_decoder dec;
	struct buf spill;          /* owned: a request split across reads */
	struct outq oq[2];         /* owned */
	struct wait_state ws;
	struct msghdr msg;         /* lent to the kernel while sending */
	struct iovec *iov;         /* owned, lent with msg */
	uint32_t iov_cap;
	struct control_conn *http; /* owned; set for control-plane clients */
};

/*
 * Feed received bytes. Complete requests are executed at once; a request
 * that is not complete yet is copied into the spill buffer. Returns 0, or a
 * negative errno after which the connection must be closed; *why then says
 * which close reason to count (and d.err the protocol error, for PROTO).
 * @ops counts requests by opcode.
 */
int conn_input(struct conn *c, struct store_thread *th, const uint8_t *p,
	       size_t n, enum stats_close *why, struct stats *stats);

/* The queue new replies go to. */
static inline struct outq *conn_out(struct conn *c)
{
	return &c->oq[c->fill];
}

#endif
