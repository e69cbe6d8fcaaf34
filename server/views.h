/* SPDX-License-Identifier: MIT */
/*
 * views.h - the control plane's handlers over the store: what an operator
 * looks at (keys, waiters, barriers) and the one thing an operator may
 * change, deleting the keys under a prefix.
 *
 *   GET|POST /handler/keys?prefix=P&limit=N     keys, sizes, short values
 *   GET|POST /handler/waiters                   awaited keys and who waits
 *   GET|POST /handler/barriers                  pending barriers, counters
 *   POST     /handler/delete?prefix=P&limit=N   delete the keys under P
 *
 * Each handler is a handler_fn (handler.h) whose argument is the struct
 * views: it sees handler.h's request and response, never the router
 * (control.c) that runs it.
 * They run on the control plane's thread with its store_thread: table
 * entries are borrowed between quiescent points through that thread's QSBR
 * handle, waiter lists are read under their stripe locks (waiters_foreach),
 * and keys are deleted through store_delete_key, as DELETE_KEY deletes
 * them. Output is JSON (json.h).
 */
#ifndef RS_SERVER_VIEWS_H
#define RS_SERVER_VIEWS_H

#include "handler.h"

struct store_thread;
struct views;

/* The views of @th's store (borrowed). Returns NULL on ENOMEM. */
struct views *views_create(struct store_thread *th);
void views_destroy(struct views *v);

int views_keys(void *v, const struct handler_request *req,
	       struct handler_response *resp);
int views_waiters(void *v, const struct handler_request *req,
		  struct handler_response *resp);
int views_barriers(void *v, const struct handler_request *req,
		   struct handler_response *resp);
int views_delete(void *v, const struct handler_request *req,
		 struct handler_response *resp);

#endif
