/* SPDX-License-Identifier: MIT */
/*
 * conn.h - client connections: one connection's state, request intake and
 * reply queues, and the reactor's table of them with their lifecycle.
 *
 * States: CONN_FREE (slot unused) -> CONN_OPEN (handshake, then serving; the
 * decoder enforces VALIDATE first) -> CONN_CLOSING (no more input processed,
 * waiting for the backend's operations on it to finish) -> CONN_FREE. Every
 * transition goes through conn_open(), conn_close() and conn_release().
 *
 * Replies are written into oq[fill]; the other queue, oq[fill ^ 1], is the one
 * being sent, whose iovecs must not move while a send is in flight.
 *
 * A connection speaks the store protocol, or a guest protocol given at
 * conn_open (the control plane's HTTP, as memcached hosts several protocols
 * on its connections): then its input goes to the guest's hook and it is
 * not counted as a store client.
 *
 * conn_input() is sans-I/O: it takes received bytes, runs complete requests
 * through the store and leaves replies in oq[fill]; tests can call it
 * without a reactor. A conn and its table are used only by their reactor's
 * thread, and only the reactor's side (reactor.c, admit.c, xmsg.c) calls
 * these functions: the I/O backend sees nothing of a connection but its
 * struct io_conn (io.h), and reports to the reactor, which decides.
 *
 * Freeing follows libuv's rule, checked by asserts: a connection is freed
 * only once it is closing, off the dirty list, and the backend holds no
 * operation on it (c->io.held == 0); the backend's forget() runs before its
 * socket is closed.
 */
#ifndef RS_SERVER_CONN_H
#define RS_SERVER_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "buf.h"
#include "io.h"
#include "list.h"
#include "outq.h"
#include "proto.h"
#include "stats.h"
#include "waiters.h"

struct io_ops;
struct server;
struct store_thread;

/* Guest-protocol connections at once; more are refused at accept, so that
 * local HTTP clients can never take the descriptors the store needs. */
#define CONN_MAX_GUESTS 64

enum conn_state {
	CONN_FREE,
	CONN_OPEN,
	CONN_CLOSING,
};

/* A protocol other than the store's, hosted on a connection. */
struct conn_guest_ops {
	/*
	 * Feed @n received bytes to @state and append the answer to @out.
	 * Returns 0 to keep reading, 1 to send @out and then close, or
	 * -errno to close at once.
	 */
	int (*input)(void *state, const uint8_t *p, size_t n, struct buf *out);
	void (*destroy)(void *state);
};

struct conn {
	/* The socket, the slot, the generation (bumped on every reuse of the
	 * slot) and what the backend keeps of the connection (io.h). */
	struct io_conn io;
	uint8_t state;           /* enum conn_state */
	uint8_t fill;            /* oq[fill] collects new replies */
	bool sending;            /* a send of ours is with the backend */
	bool dirty;              /* on the table's dirty list */
	bool close_after_send;   /* guest: close once the replies are out */
	struct conn *next_dirty; /* borrowed link */
	struct conn *hs_next, *hs_prev; /* handshake list while validating */
	uint64_t active_ms;             /* CLOCK_MONOTONIC at accept; guests: at
				      their last input */
	struct proto_decoder dec;
	struct buf spill;  /* owned: a request split across reads */
	struct outq oq[2]; /* owned */
	struct wait_state ws;
	struct iovec *iov; /* owned: the send in flight's, lent to the
				    * backend until it reports `sent` */
	uint32_t iov_cap;
	const struct conn_guest_ops *guest; /* NULL: the store protocol */
	void *guest_state;                  /* owned through guest->destroy */
};

/* Store clients that owe a VALIDATE, oldest first (conn_expire). */
LIST_DEFINE(conn_hs_list, struct conn, hs_next, hs_prev)

/* One reactor's connections and what their lifecycle touches. */
struct conn_table {
	struct server *srv;       /* borrowed */
	uint32_t reactor;         /* the owning reactor's id */
	struct store_thread *th;  /* borrowed */
	struct stats *stats;      /* borrowed: the reactor's counters */
	const struct io_ops *ops; /* borrowed */
	struct io *io;            /* borrowed */
	bool stopping;            /* no new connections are served */

	struct conn **chunks; /* owned */
	uint32_t nchunks;
	uint32_t *free_slots; /* owned stack */
	uint32_t nfree;
	uint32_t open;          /* conns not yet released */
	struct conn *dirty;     /* output or a state change to flush */
	struct conn_hs_list hs; /* awaiting VALIDATE, oldest first */
	struct conn *guests[CONN_MAX_GUESTS]; /* open guest connections */
	uint32_t nguests;
	uint64_t guest_scan_ms; /* last idle scan */
};

/* Free every connection still in @t (after the backend has quit). */
void conn_table_destroy(struct conn_table *t);

/*
 * Serve socket @fd (owned from here on, also on failure): a store client
 * from @peer, or a client of @guest with @state (owned from here on).
 * Starts receiving. Returns the conn, or NULL (out of memory; @fd closed).
 */
struct conn *conn_open(struct conn_table *t, int fd,
		       const struct sockaddr_in6 *peer,
		       const struct conn_guest_ops *guest, void *state);

/*
 * Close @c for @why (@err: the errno of an I/O failure): log, count, stop
 * processing its input, withdraw its waits and tell the backend (which
 * shuts the socket down); the slot is freed by conn_release() once the
 * backend holds nothing of it.
 */
void conn_close(struct conn_table *t, struct conn *c, enum stats_close why,
		int err);

/* Free the slot if @c is closing and nothing holds it any more. */
void conn_release(struct conn_table *t, struct conn *c);

/* @c sent its VALIDATE (its decoder left the handshake): off the
 * handshake clock, if it was on it. */
void conn_validated(struct conn_table *t, struct conn *c);

/* Close every open connection and take no new ones (shutdown). */
void conn_close_all(struct conn_table *t);

/* Close store clients past the handshake timeout and idle guests. */
void conn_expire(struct conn_table *t);

/* The conn (open or closing) in @slot with generation @gen, or NULL. */
struct conn *conn_get(struct conn_table *t, uint32_t slot, uint32_t gen);

/* The connection whose backend part is @ic. */
static inline struct conn *conn_of(struct io_conn *ic)
{
	return (struct conn *)((char *)ic - offsetof(struct conn, io));
}

/* Put @c on the dirty list (once) so that the loop flushes it. */
static inline void conn_mark_dirty(struct conn_table *t, struct conn *c)
{
	if (c->dirty)
		return;
	c->dirty = true;
	c->next_dirty = t->dirty;
	t->dirty = c;
}

/* The queue new replies go to. */
static inline struct outq *conn_out(struct conn *c)
{
	return &c->oq[c->fill];
}

/*
 * Feed received bytes. Complete requests are executed at once; a request
 * that is not complete yet is copied into the spill buffer. Returns 0, or a
 * negative errno after which the connection must be closed; *why then says
 * which close reason to count (and c->dec.err the protocol error, for
 * STATS_CLOSE_PROTO). @stats counts requests by opcode.
 */
int conn_input(struct conn *c, struct store_thread *th, const uint8_t *p,
	       size_t n, enum stats_close *why, struct stats *stats);

#endif
