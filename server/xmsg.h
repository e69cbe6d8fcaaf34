/* SPDX-License-Identifier: MIT */
/*
 * xmsg.h - cross-reactor messages: a wait released on one reactor for a
 * connection of another, and sockets handed out by a single acceptor.
 *
 * The backend carries them (MSG_RING on io_uring; a lock-free queue and an
 * eventfd on epoll); this file decides what is sent and what an arriving
 * wake-up does. Everything runs on the sending or the receiving reactor's
 * thread.
 */
#ifndef RS_SERVER_XMSG_H
#define RS_SERVER_XMSG_H

#include <stdint.h>

struct conn_table;
struct io_msg;
struct waiter_ref;

/* Post @m to reactor @target. Returns 0 or -errno (not sent). */
int xmsg_post(struct conn_table *t, uint32_t target, const struct io_msg *m);

/*
 * waiters_deliver_fn of the reactor whose table is @arg: a wait of @who
 * completed with @seq. Runs on the waker's thread, under a stripe lock.
 */
void xmsg_deliver(void *arg, const struct waiter_ref *who, uint32_t seq);

/* A wake-up for a conn of ours (from us or a message): answer it. */
void xmsg_wake(struct conn_table *t, uint32_t slot, uint32_t gen, uint32_t seq);

#endif
