/* SPDX-License-Identifier: MIT */
/*
 * reactor.h - one thread, one io_uring: accept, receive, execute, reply.
 *
 * The loop (see reactor.c): one io_uring_enter submits everything queued and
 * waits for completions; the batch of CQEs is handled (received bytes go
 * straight through the decoder and the store; replies collect per
 * connection); then one SEND per connection with output, buffers returned,
 * the CQ advanced once, and a quiescent point for reclamation.
 *
 * struct server holds what all reactors share; it outlives them.
 */
#ifndef RS_SERVER_REACTOR_H
#define RS_SERVER_REACTOR_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "proto.h"
#include "stats.h"
#include "store.h"

struct control;
struct reactor;

struct net_cidr;

struct server_config {
	struct proto_limits limits;
	uint32_t threads;
	uint64_t max_conns;      /* open client connections; 0: no cap */
	uint64_t max_output;     /* reply bytes queued for one client */
	uint32_t handshake_ms;   /* time allowed before VALIDATE; 0: none */
	struct net_cidr *allow;  /* owned; empty: every address allowed */
	uint32_t nallow;
	bool single_acceptor;    /* reactor 0 accepts and hands sockets out */
	uint32_t control_idle_ms; /* close idle control clients; 0: never */
	uint32_t buf_count;   /* provided receive buffers per reactor (2^n) */
	uint32_t buf_size;    /* bytes per receive buffer */
	uint32_t ring_entries;
};

struct server {
	struct server_config cfg;
	struct store store;
	struct reactor **reactors; /* owned, cfg.threads of them */
	uint32_t nreactors;
	atomic_bool stopping;
	atomic_uint_fast64_t conns; /* open client connections, all reactors */
	int control_fd;             /* HTTP control listener, or -1 */
	struct control *control;    /* owned by reactor 0's thread */
};

/*
 * Create reactor @id serving the listening socket @listen_fd (borrowed; the
 * server closes it). The ring is set up by the reactor's own thread.
 * Returns NULL on ENOMEM.
 */
struct reactor *reactor_create(struct server *srv, uint32_t id, int listen_fd);
/* (listen_fd -1: this reactor accepts nothing itself.) */
/* Start the thread; waits until its ring is up. Returns 0 or -errno. */
int reactor_start(struct reactor *r);
/* Ask the reactor to stop (any thread, async-signal-unsafe). */
void reactor_stop(struct reactor *r);
/*
 * Wait for the thread to end, add its counters into @total (if not NULL),
 * then free everything it owned.
 */
void reactor_join(struct reactor *r, struct stats *total);
/* Live counters (relaxed reads; the reactor keeps writing them). */
const struct stats *reactor_stats(const struct reactor *r);

#endif
