/* SPDX-License-Identifier: MIT */
/*
 * control.h - the control plane: a registry of named handlers behind a small
 * HTTP/1.1 server (docs/design.md "The control plane"). This is the top of
 * the control plane: it knows every handler, and a handler knows only the
 * interface of handler.h, never this file.
 *
 * Routes: GET /health ("ok", 503 while shutting down), GET /metrics
 * (Prometheus text, metrics.h), GET /handler/ (JSON list of names), GET or
 * POST /handler/<name> (run it). HEAD is accepted wherever GET is.
 * Built-in handlers: stats (the metrics as JSON), ping, compact (POST only),
 * and the views of views.h: keys, waiters, barriers, and delete (POST only).
 *
 * Sans-I/O like http.h: an HTTP client is a connection hosting the control
 * plane as a guest protocol (control_guest_ops): the reactor feeds each
 * received chunk to control_conn_input and sends what it appended. Everything
 * runs on the one reactor thread that owns the control plane (reactor 0),
 * with that reactor's store_thread, so handlers may read the table between
 * quiescent points. Handlers run on the event loop: they must not block.
 */
#ifndef RS_SERVER_CONTROL_H
#define RS_SERVER_CONTROL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "handler.h"
#include "http.h"

struct conn_guest_ops;
struct control;
struct control_conn;
struct server;
struct store_thread;

/*
 * Create the control plane of @srv (borrowed; NULL: report no reactor
 * counters) for the thread that owns @th (borrowed: the handle of the
 * reactor that serves HTTP). Registers the built-in handlers. Returns NULL
 * on ENOMEM.
 */
struct control *control_create(struct server *srv, struct store_thread *th);
void control_destroy(struct control *c);

/*
 * Add handler @name (1 to 64 printable characters, no '/'). @arg is passed
 * to @fn. Returns 0, -EINVAL, -EEXIST or -ENOMEM.
 */
int control_register(struct control *c, const char *name, handler_fn fn,
		     void *arg);
/* Is @name registered? */
bool control_lookup(const struct control *c, const char *name);
/* Registered names, in registration order: @i from 0 to count - 1. */
size_t control_count(const struct control *c);
const char *control_name(const struct control *c, size_t i);

/* While on, /health answers 503 and every response closes its connection. */
void control_shutting_down(struct control *c, bool on);

/*
 * Route one request and append the complete HTTP response to @out. @flags
 * are http_response's (HTTP_R_CLOSE, HTTP_R_HEAD). Returns 0 or -ENOMEM.
 */
int control_handle(struct control *c, const struct handler_request *req,
		   struct buf *out, unsigned flags);

/* One HTTP connection's state. Returns NULL on ENOMEM. */
struct control_conn *control_conn_create(struct control *c);
void control_conn_destroy(struct control_conn *cc);

/*
 * Feed @n received bytes of the connection. Every complete request among
 * them (pipelined ones in order) is answered by appending to @out. Returns
 * 0 to keep reading, 1 to send @out and then close (a refused request,
 * "Connection: close", HTTP/1.0, shutdown, or too much output queued), or
 * -ENOMEM to close at once.
 */
int control_conn_input(struct control_conn *cc, const uint8_t *p, size_t n,
		       struct buf *out);

/* The hooks a connection runs for a control_conn (its guest state). */
extern const struct conn_guest_ops control_guest_ops;

#endif
