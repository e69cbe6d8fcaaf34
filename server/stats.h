/* SPDX-License-Identifier: MIT */
/*
 * stats.h - counters kept by each reactor, summed for logs, the shutdown
 * summary and (later) the control plane.
 *
 * Each struct stats has one writer, its reactor; other threads read it.
 * Counters are atomics written with relaxed load+store (a plain mov on x86,
 * no locked instruction), which is exact because there is a single writer.
 */
#ifndef RS_SERVER_STATS_H
#define RS_SERVER_STATS_H

#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>

#include "proto.h"

/* Why connections closed, beyond the protocol errors of proto.h. */
/* X(NAME, id, sentence): why connections closed, beyond proto.h's errors. */
#define STATS_CLOSE_REASONS(X)                                             \
	X(EOF, eof, "peer closed the connection")                          \
	X(IO, io, "socket error")                                          \
	X(PROTO, proto, "protocol violation")                              \
	X(BAD_NUMBER, bad_number,                                          \
	  "ADD or BARRIER on a value that is not an integer")              \
	X(NOMEM, nomem, "out of memory")                                   \
	X(MEMORY_LIMIT, memory_limit, "the store's memory limit is reached") \
	X(SLOW_READER, slow_reader,                                        \
	  "too many reply bytes waiting for the client")                   \
	X(HANDSHAKE_TIMEOUT, handshake_timeout,                            \
	  "no VALIDATE within the handshake timeout")                      \
	X(CONN_LIMIT, conn_limit, "connection limit reached")              \
	X(NOT_ALLOWED, not_allowed, "address not in the allow list")       \
	X(SHUTDOWN, shutdown, "server shutting down")

enum stats_close {
#define STATS_X_ENUM(name, id, text) STATS_CLOSE_##name,
	STATS_CLOSE_REASONS(STATS_X_ENUM)
#undef STATS_X_ENUM
	STATS_CLOSE__COUNT
};

typedef _Atomic uint64_t stat_t;

struct stats {
	stat_t accepted;
	stat_t accept_errors;
	stat_t active;                       /* open connections now */
	stat_t closed[STATS_CLOSE__COUNT];
	stat_t proto_errors[PROTO_E__COUNT];
	stat_t requests[OP__COUNT];
	stat_t bytes_in;
	stat_t bytes_out;
	stat_t loops;
	stat_t cqes;
	stat_t wakes_local;
	stat_t wakes_remote_sent;
	stat_t wakes_remote_recv;
	stat_t stale_cqes;
	stat_t enobufs;
	stat_t rejected;                     /* closed at accept (limit, allow) */
	stat_t control_conns;                /* control-plane HTTP connections */
	stat_t mget_cache_hits;              /* MULTI_GETs answered from the */
	stat_t mget_cache_builds;            /* reply cache; replies cached */
	stat_t writes_in_place;              /* SET values rewritten in place */
	stat_t recv_bufs_target;             /* gauge: receive buffers kept in
					      * the io_uring buffer ring */
	stat_t files_registered;             /* io_uring: sockets put in, */
	stat_t files_failed;                 /* refused by, and released */
	stat_t files_released;               /* from the registered files */
	stat_t sends_spread;                 /* sends handed to a kernel
					      * worker (io_uring) or a helper
					      * thread (epoll): --spread-sends */
};

static inline void stat_add(stat_t *s, uint64_t n)
{
	atomic_store_explicit(s, atomic_load_explicit(s, memory_order_relaxed) + n,
			      memory_order_relaxed);
}

static inline uint64_t stat_get(const stat_t *s)
{
	return atomic_load_explicit((stat_t *)s, memory_order_relaxed);
}

/* "BAD_NUMBER", its lower-case id "bad_number", and a sentence. */
const char *stats_close_name(enum stats_close c);
const char *stats_close_id(enum stats_close c);
const char *stats_close_text(enum stats_close c);
/* Add every counter of @src into @dst (dst is a private total). */
void stats_sum(struct stats *dst, const struct stats *src);
/* One line: the summary logged at shutdown. */
void stats_format(const struct stats *s, char *out, size_t len);

#endif
