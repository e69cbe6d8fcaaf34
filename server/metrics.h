/* SPDX-License-Identifier: MIT */
/*
 * metrics.h - the server's metrics as Prometheus text (GET /metrics) or as
 * one JSON object (GET /handler/stats), rendered from the table of stats.h:
 * the counters of every reactor, summed or one sample per reactor, and the
 * figures computed as they are read (the store's sizes, the process's
 * memory). Prometheus: HELP and TYPE lines, then one line per sample.
 * JSON: "name": value, or "name": {"label value": value, ...} for a
 * labelled family.
 *
 * Runs on the control plane's thread; the counters are read with relaxed
 * loads while their reactors write them, the store's sizes are relaxed
 * totals.
 */
#ifndef RS_SERVER_METRICS_H
#define RS_SERVER_METRICS_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"

struct server;
struct stats;
struct store;

/*
 * Append the metrics to @out, in Prometheus text (@json false) or JSON: the
 * I/O @backend (NULL: not reported), @n per-reactor counter blocks @rs
 * (index = reactor id; a NULL block counts as zeros) and the live sizes of
 * @st. Returns 0 or -ENOMEM.
 */
int metrics_write(struct buf *out, bool json, const char *backend,
		  const struct stats *const *rs, size_t n, struct store *st);

/* The same for every reactor of @srv (NULL: no reactor counters). */
int metrics_of_server(struct buf *out, bool json, const struct server *srv,
		      struct store *st);

#endif
