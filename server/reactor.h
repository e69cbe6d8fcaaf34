/* SPDX-License-Identifier: MIT */
/*
 * reactor.h - one thread, one event loop: accept, receive, execute, reply.
 *
 * The loop (see reactor.c) waits for a batch of I/O events from its backend
 * (io.h: io_uring or epoll); received bytes go straight through the decoder
 * and the store and replies collect per connection; after the batch, one
 * send per connection with output, and a quiescent point for reclamation.
 */
#ifndef RS_SERVER_REACTOR_H
#define RS_SERVER_REACTOR_H

#include <stdint.h>

struct reactor;
struct server;
struct stats;

/*
 * Create reactor @id of @srv (borrowed; it outlives the reactor) serving
 * the listening socket @listen_fd (borrowed; the server closes it; -1: this
 * reactor accepts nothing itself), with the backend srv->io. Fills
 * srv->ios[id] and srv->stats[id]. Returns NULL on failure (logged).
 */
struct reactor *reactor_create(struct server *srv, uint32_t id, int listen_fd);
/* Start the thread; waits until its backend is up. Returns 0 or -errno. */
int reactor_start(struct reactor *r);
/* Ask the reactor to stop (any thread). */
void reactor_stop(struct reactor *r);
/*
 * Wait for the thread to end and add its counters into @total (if not
 * NULL). Other reactors may still post to it until they are joined too.
 */
void reactor_join(struct reactor *r, struct stats *total);
/* Free a joined reactor, once every reactor is joined. */
void reactor_destroy(struct reactor *r);

#endif
