/* SPDX-License-Identifier: MIT */
/*
 * server.h - what every reactor of one ringstore process shares: the
 * configuration, the store, and the per-reactor faces other threads may
 * reach (backend instances for cross-reactor messages, counter blocks for
 * the control plane).
 *
 * main.c owns struct server: it fills the configuration (the command line
 * that options.c reads, and defaults sized by the CPUs), creates the store
 * and the reactors, and outlives them all. Reactors only read it, except for
 * the counters that say so.
 */
#ifndef RS_SERVER_SERVER_H
#define RS_SERVER_SERVER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "proto.h"
#include "store.h"

struct control;
struct io;
struct io_ops;
struct net_cidr;
struct reactor;
struct stats;

/* The flag that sets each field is in options.c's table. */
struct server_config {
	struct proto_limits limits;
	uint32_t threads;       /* reactors; at least 1 once main() runs */
	uint64_t max_conns;     /* open client connections; 0: no cap */
	uint64_t max_output;    /* reply bytes queued for one client */
	uint32_t handshake_ms;  /* time allowed before VALIDATE; 0: none */
	struct net_cidr *allow; /* owned; empty: every address allowed */
	uint32_t nallow;
	bool single_acceptor;     /* reactor 0 accepts and hands sockets out */
	uint32_t control_idle_ms; /* close idle control clients; 0: never */
	uint32_t buf_count;    /* receive buffers per reactor (2^n; io_uring) */
	uint32_t buf_min;      /* the fewest kept in the ring (recvbufs.h) */
	uint32_t buf_size;     /* bytes per receive buffer */
	uint32_t ring_entries; /* io_uring: SQ entries per ring (not a flag) */
	bool fixed_files;      /* io_uring: sends name registered files */
	uint32_t spread_sends; /* past this many sends in one flush, every
				* other one is made on another CPU (the
				* reactor's send_flags; io.h's
				* IO_SEND_ELSEWHERE); 0: never */
};

struct server {
	struct server_config cfg;
	const struct io_ops *io; /* the I/O backend every reactor runs */
	struct store store;
	struct reactor **reactors;  /* owned, cfg.threads of them */
	struct io **ios;            /* owned array: reactor i's backend */
	const struct stats **stats; /* owned array: reactor i's counters */
	uint32_t nreactors;
	atomic_uint_fast64_t conns; /* open client connections, all reactors */
	int control_fd;             /* HTTP control listener, or -1 */
	struct control *control;    /* owned by reactor 0's thread */
};

#endif
