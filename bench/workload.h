/* SPDX-License-Identifier: MIT */
/*
 * workload.h - what ringstore-bench's connections send, and what their
 * replies mean (see workload.c for each workload's request pattern).
 *
 * Every call runs on the bench thread that owns the connection; workloads
 * keep their state in the workload fields of bench_conn and bench_thread.
 */
#ifndef RS_BENCH_WORKLOAD_H
#define RS_BENCH_WORKLOAD_H

#include <stdbool.h>
#include <stdint.h>

#include "bench.h"

#define WORKLOADS(X)                  \
	X(MULTI_SET, "multi-set")     \
	X(MULTI_GET, "multi-get")     \
	X(MULTI_MIX, "multi-mix")     \
	X(OPS_MIX, "ops-mix")         \
	X(RENDEZVOUS, "rendezvous")   \
	X(FANOUT, "fanout")           \
	X(HEARTBEAT, "heartbeat")     \
	X(QUEUE, "queue")

enum workload_kind {
#define WL_X_ENUM(name, text) WL_##name,
	WORKLOADS(WL_X_ENUM)
#undef WL_X_ENUM
	WL__COUNT
};

/* "multi-get" -> WL_MULTI_GET; -EINVAL for an unknown name. */
int workload_parse(const char *name);
const char *workload_name(int w);

/* Fill options the user left at 0 with the workload's defaults. */
void workload_defaults(struct bench_opts *o);

/* Connections the engine opens: fanout adds the one releasing SETter. */
uint32_t workload_total_conns(const struct bench_opts *o);

/*
 * What PH_PREPARE must achieve before PH_RUN: the initial value of
 * bench.prep_left (0: skip the phase). Workloads decrement it.
 */
int64_t workload_prep_count(const struct bench_opts *o);

/* True if connections are made inside PH_RUN (rendezvous measures them). */
bool workload_connects_in_run(const struct bench_opts *o);

/*
 * Queue the next transactions on a ready connection @c, as many as the
 * workload and the pipeline depth allow in the current @phase.
 */
void workload_issue(struct bench_thread *t, struct bench_conn *c, int phase,
		    uint64_t now);

/*
 * One reply of @op ended on @c; @cap holds its first @caplen bytes.
 * Returns 0, or -EPROTO if the reply is wrong (the engine then fails @c).
 */
int workload_reply(struct bench_thread *t, struct bench_conn *c, uint8_t op,
		   const uint8_t *cap, unsigned caplen, uint64_t now);

/* Per-thread scratch space: 0 or -ENOMEM; free accepts a failed init. */
int workload_thread_init(struct bench_thread *t);
void workload_thread_free(struct bench_thread *t);

/* Called once per loop iteration for timed workloads (heartbeat, queue). */
void workload_tick(struct bench_thread *t, int phase, uint64_t now);

#endif
