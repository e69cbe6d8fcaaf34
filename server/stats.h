/* SPDX-License-Identifier: MIT */
/*
 * stats.h - the server's metrics: the table that declares each one once,
 * the counters each reactor keeps (struct stats, made from the table), and
 * the shutdown summary.
 *
 * Each struct stats has one writer, its reactor; other threads read it (the
 * control plane on reactor 0, main at shutdown). Counters are atomics
 * written with relaxed load+store (a plain mov on x86, no locked
 * instruction), which is exact because there is a single writer. The store
 * counts into the struct stats its store_thread borrows (store.h).
 */
#ifndef RS_SERVER_STATS_H
#define RS_SERVER_STATS_H

#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>

#include "proto.h"

/* X(NAME, id, sentence): why connections closed, beyond proto.h's errors. */
#define STATS_CLOSE_REASONS(X)                                               \
	X(EOF, eof, "peer closed the connection")                            \
	X(IO, io, "socket error")                                            \
	X(PROTO, proto, "protocol violation")                                \
	X(BAD_NUMBER, bad_number,                                            \
	  "ADD or BARRIER on a value that is not an integer")                \
	X(NOMEM, nomem, "out of memory")                                     \
	X(MEMORY_LIMIT, memory_limit, "the store's memory limit is reached") \
	X(SLOW_READER, slow_reader,                                          \
	  "too many reply bytes waiting for the client")                     \
	X(HANDSHAKE_TIMEOUT, handshake_timeout,                              \
	  "no VALIDATE within the handshake timeout")                        \
	X(CONN_LIMIT, conn_limit, "connection limit reached")                \
	X(NOT_ALLOWED, not_allowed, "address not in the allow list")         \
	X(SHUTDOWN, shutdown, "server shutting down")

enum stats_close {
#define STATS_X_ENUM(name, id, text) STATS_CLOSE_##name,
	STATS_CLOSE_REASONS(STATS_X_ENUM)
#undef STATS_X_ENUM
	STATS_CLOSE__COUNT
};

typedef _Atomic uint64_t stat_t;

/*
 * Every metric, declared once. A family is a FAMILY line followed by its
 * samples; one table makes struct stats (the counters), the Prometheus text
 * and the JSON of the control plane (metrics.c) and the shutdown summary
 * (stats_format). Adding a metric is adding its lines here and counting it
 * (stat_add) where it happens; no output code names it.
 *
 *   FAMILY(name, type, label, help)
 *	Prometheus name (also its JSON key), counter or gauge, the label's
 *	name or NULL, and the HELP text.
 *   FIELD(field, value, line)
 *	stat_t field in struct stats, summed over the reactors; @value is
 *	the sample's label value (NULL in a family without a label).
 *   ARRAY(field, n, first, name_of, line)
 *	stat_t field[n], one sample per index from @first, labelled
 *	name_of(index).
 *   PER_REACTOR(field, line)
 *	stat_t field, one sample per reactor, labelled with its index.
 *   COMPUTED(value, expr)
 *	not in struct stats: @expr is computed when the metrics are read.
 *   INFO(expr)
 *	a string @expr (NULL: no sample): in Prometheus name{label="expr"} 1,
 *	in JSON "label": "expr".
 *
 * The expressions of COMPUTED and INFO are only compiled in metrics.c,
 * which includes what they call and has in scope the store @st, the
 * reactor count @nreactors and the I/O @backend's name.
 *
 * @line is 1 for the fields of the shutdown summary (a field as
 * "field=total", an array as "field:" then "name=value" per index), else 0;
 * the summary keeps the table's order.
 */
#define STATS_METRICS(FAMILY, FIELD, ARRAY, PER_REACTOR, COMPUTED, INFO)      \
	FAMILY(ringstore_info, gauge, "backend",                              \
	       "The server: its I/O backend.")                                \
	INFO(backend)                                                         \
	FAMILY(ringstore_connections_accepted_total, counter, NULL,           \
	       "Store connections accepted.")                                 \
	FIELD(accepted, NULL, 1)                                              \
	FAMILY(ringstore_connections_active, gauge, NULL,                     \
	       "Store connections open now.")                                 \
	FIELD(active, NULL, 1)                                                \
	FAMILY(ringstore_received_bytes_total, counter, NULL,                 \
	       "Bytes received from store clients.")                          \
	FIELD(bytes_in, NULL, 1)                                              \
	FAMILY(ringstore_sent_bytes_total, counter, NULL,                     \
	       "Bytes sent to store clients.")                                \
	FIELD(bytes_out, NULL, 1)                                             \
	FAMILY(ringstore_reactor_loop_iterations_total, counter, "reactor",   \
	       "Event loop iterations, by reactor.")                          \
	PER_REACTOR(loops, 1)                                                 \
	FAMILY(ringstore_reactor_completions_total, counter, "reactor",       \
	       "Completions (io_uring) or readiness events (epoll) handled, " \
	       "by reactor (over iterations: the mean batch size).")          \
	PER_REACTOR(cqes, 1)                                                  \
	FAMILY(ringstore_receive_buffer_exhausted_total, counter, NULL,       \
	       "Receives that found no provided buffer (ENOBUFS).")           \
	FIELD(enobufs, NULL, 1)                                               \
	FAMILY(ringstore_accept_errors_total, counter, NULL,                  \
	       "Failed accepts.")                                             \
	FIELD(accept_errors, NULL, 1)                                         \
	FAMILY(ringstore_connections_rejected_total, counter, NULL,           \
	       "Store connections closed at accept (limit, allow list).")     \
	FIELD(rejected, NULL, 1)                                              \
	FAMILY(ringstore_connections_closed_total, counter, "reason",         \
	       "Store connections closed, by reason.")                        \
	ARRAY(closed, STATS_CLOSE__COUNT, 0, stats_close_id, 1)               \
	FAMILY(ringstore_protocol_errors_total, counter, "kind",              \
	       "Store connections dropped for a protocol violation, by "      \
	       "kind.")                                                       \
	ARRAY(proto_errors, PROTO_E__COUNT, PROTO_E_NONE + 1, proto_err_name, \
	      1)                                                              \
	FAMILY(ringstore_requests_total, counter, "op",                       \
	       "Store requests executed, by opcode.")                         \
	ARRAY(requests, OP__COUNT, 0, proto_op_name, 0)                       \
	FAMILY(ringstore_control_connections_total, counter, NULL,            \
	       "Control-plane HTTP connections accepted.")                    \
	FIELD(control_conns, NULL, 0)                                         \
	FAMILY(ringstore_keys, gauge, NULL, "Keys in the store.")             \
	COMPUTED(NULL, table_count(st->table))                                \
	FAMILY(ringstore_stored_bytes, gauge, NULL,                           \
	       "Bytes of the stored keys and values.")                        \
	COMPUTED(NULL, table_bytes(st->table))                                \
	FAMILY(ringstore_waiters, gauge, NULL,                                \
	       "Pending waits, one per client and awaited key.")              \
	COMPUTED(NULL, waiters_count(st->waiters))                            \
	FAMILY(ringstore_queue_items, gauge, NULL, "Items in all queues.")    \
	COMPUTED(NULL, queues_items(st->queues))                              \
	FAMILY(ringstore_queues_nonempty, gauge, NULL,                        \
	       "Queues holding at least one item.")                           \
	COMPUTED(NULL, queues_nonempty(st->queues))                           \
	FAMILY(ringstore_reclaim_pending, gauge, NULL,                        \
	       "Retired objects not yet reclaimed (QSBR).")                   \
	COMPUTED(NULL, qsbr_pending(st->qsbr))                                \
	FAMILY(ringstore_reactors, gauge, NULL, "Reactor threads.")           \
	COMPUTED(NULL, nreactors)                                             \
	FAMILY(ringstore_wakeups_total, counter, "kind",                      \
	       "Wait completions: on the waiter's reactor, or sent to and "   \
	       "received from another reactor.")                              \
	FIELD(wakes_local, "local", 0)                                        \
	FIELD(wakes_remote_sent, "remote_sent", 0)                            \
	FIELD(wakes_remote_recv, "remote_received", 0)                        \
	FAMILY(ringstore_mget_cache_total, counter, "kind",                   \
	       "Large MULTI_GETs answered from the reply cache (hit), and "   \
	       "replies built and cached (build).")                           \
	FIELD(mget_cache_hits, "hit", 0)                                      \
	FIELD(mget_cache_builds, "build", 0)                                  \
	FAMILY(ringstore_recv_buffers_provided_target, gauge, NULL,           \
	       "io_uring: receive buffers the reactors keep in their "        \
	       "buffer rings (adapts to the receives per batch).")            \
	FIELD(recv_bufs_target, NULL, 0)                                      \
	FAMILY(ringstore_writes_in_place_total, counter, NULL,                \
	       "SET and MULTI_SET values written over a live value of the "   \
	       "same length inside its entry, instead of replacing it.")      \
	FIELD(writes_in_place, NULL, 0)                                       \
	FAMILY(ringstore_registered_files_total, counter, "event",            \
	       "io_uring: client sockets put in the ring's registered "       \
	       "files (their sends skip a file lookup), refused, and "        \
	       "released when the connection ended.")                         \
	FIELD(files_registered, "registered", 0)                              \
	FIELD(files_failed, "failed", 0)                                      \
	FIELD(files_released, "released", 0)                                  \
	FAMILY(ringstore_sends_spread_total, counter, NULL,                   \
	       "Sends made on another CPU past --spread-sends in one batch: " \
	       "by the ring's kernel worker (io_uring) or the reactor's "     \
	       "helper thread (epoll).")                                      \
	FIELD(sends_spread, NULL, 0)                                          \
	FAMILY(ringstore_stale_completions_total, counter, NULL,              \
	       "Completions for a connection slot that was reused.")          \
	FIELD(stale_cqes, NULL, 0)                                            \
	FAMILY(ringstore_resident_memory_bytes, gauge, NULL,                  \
	       "Resident set size of the process.")                           \
	COMPUTED(NULL, rss_bytes())                                           \
	FAMILY(ringstore_entry_slab_bytes, gauge, "state",                    \
	       "Slabs for table entries up to 512 B, kept for reuse "         \
	       "(carved), and their free blocks in the shared pool "          \
	       "(pooled); 0 under AddressSanitizer.")                         \
	COMPUTED("carved", blk_slab_bytes())                                  \
	COMPUTED("pooled", blk_pool_bytes())                                  \
	FAMILY(ringstore_log_records_total, counter, NULL,                    \
	       "Changes appended to the write log (--data-dir).")             \
	COMPUTED(NULL, wal_stat(st->wal, WAL_STAT_RECORDS))                   \
	FAMILY(ringstore_log_written_bytes_total, counter, NULL,              \
	       "Bytes written to the write log's files.")                     \
	COMPUTED(NULL, wal_stat(st->wal, WAL_STAT_BYTES))                     \
	FAMILY(ringstore_log_writes_total, counter, NULL,                     \
	       "Write system calls to the write log (one per group of "       \
	       "records).")                                                   \
	COMPUTED(NULL, wal_stat(st->wal, WAL_STAT_WRITES))                    \
	FAMILY(ringstore_log_syncs_total, counter, NULL,                      \
	       "fdatasyncs of the write log: one per loop pass that wrote "   \
	       "with --fsync always, about one a second with everysec.")      \
	COMPUTED(NULL, wal_stat(st->wal, WAL_STAT_SYNCS))                     \
	FAMILY(ringstore_log_compactions_total, counter, NULL,                \
	       "Compactions of the write log into a snapshot.")               \
	COMPUTED(NULL, wal_stat(st->wal, WAL_STAT_COMPACTIONS))               \
	FAMILY(ringstore_log_bytes, gauge, NULL,                              \
	       "Bytes of write log since the last snapshot (compaction "      \
	       "starts past --compact-min-bytes and twice the live data).")   \
	COMPUTED(NULL, wal_log_bytes(st->wal))

#define STATS_X_NONE(...)
#define STATS_X_FIELD(field, ...) stat_t field;
#define STATS_X_ARRAY(field, n, ...) stat_t field[n];

/* One reactor's counters (see the table for what each one counts). */
struct stats {
	STATS_METRICS(STATS_X_NONE, STATS_X_FIELD, STATS_X_ARRAY, STATS_X_FIELD,
		      STATS_X_NONE, STATS_X_NONE)
};

#undef STATS_X_FIELD
#undef STATS_X_ARRAY

static inline void stat_add(stat_t *s, uint64_t n)
{
	uint64_t v = atomic_load_explicit(s, memory_order_relaxed);

	atomic_store_explicit(s, v + n, memory_order_relaxed);
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
