/* SPDX-License-Identifier: MIT */
/*
 * admit.h - admission: what happens to a freshly accepted socket before it
 * becomes a connection. Store clients are checked against the allow list
 * and the connection limit (refusals are counted and logged at most once a
 * second), handed out round robin when one reactor accepts for all, and
 * opened; control-plane clients are opened as guests of the control plane,
 * at most CONN_MAX_GUESTS at once. accept failures are counted and decide
 * the back-off. One struct admit per reactor, used by its thread only.
 */
#ifndef RS_SERVER_ADMIT_H
#define RS_SERVER_ADMIT_H

#include <stdbool.h>
#include <stdint.h>

#include "io.h"

struct conn_table;

struct admit {
	struct conn_table *t;   /* borrowed */
	uint32_t next_target;   /* round robin of the single acceptor */
	uint64_t reject_log_ms; /* last refusal line */
	uint64_t rejects_unlogged;
};

/* A socket @fd (owned) accepted from listener @l: hand out or serve it. */
void admit_accepted(struct admit *a, enum io_listener l, int fd);

/* Serve store-client socket @fd (owned) here, if the limits allow. */
void admit_store(struct admit *a, int fd);

/* accept on @l failed with @err: count, log; true: back off. */
bool admit_accept_failed(struct admit *a, enum io_listener l, int err);

#endif
