/* SPDX-License-Identifier: MIT */
/*
 * handler.h - what a control-plane handler sees: the request it is given,
 * the response it fills, and the two helpers every handler uses (a query
 * parameter, a JSON error).
 *
 * This is the layer between the router and the handlers. The router
 * (control.c) knows every handler and runs it; a handler (views.c, and
 * control.c's own ping, stats and compact) knows only this file, never the
 * router, so a handler is written and tested against this page alone and
 * the router may change without touching one.
 *
 * The request is borrowed from the connection's HTTP parser (http.h) for
 * the length of the call. The response's body is a buf the router owns and
 * reuses for every request; the router writes the HTTP response from it
 * (http_response) once the handler returns. Handlers run on the control
 * plane's thread, on its event loop: they must not block.
 */
#ifndef RS_SERVER_HANDLER_H
#define RS_SERVER_HANDLER_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

struct http_param;

struct handler_request {
	const char *method;              /* "GET", "POST" or "HEAD" */
	const char *path;                /* decoded, e.g. "/handler/keys" */
	const struct http_param *params; /* decoded query parameters */
	size_t nparams;
	const uint8_t *body; /* Content-Length bytes */
	size_t body_len;
};

#define HANDLER_CT_TEXT "text/plain; charset=utf-8"
#define HANDLER_CT_JSON "application/json"

struct handler_response {
	int status;               /* 200 unless the handler says otherwise */
	const char *content_type; /* static string; HANDLER_CT_TEXT unless set */
	const char *headers;      /* static "Name: value\r\n" lines, or NULL */
	struct buf body;          /* owned by the router; append here */
};

/*
 * A handler fills @resp from @req. Returns 0, or -errno for a failure that
 * becomes a 500 (anything already in resp->body is dropped).
 */
typedef int (*handler_fn)(void *arg, const struct handler_request *req,
			  struct handler_response *resp);

/* Query parameter @name of @req (http_param), or NULL. */
const char *handler_param(const struct handler_request *req, const char *name,
			  size_t *len);

/*
 * Make @resp the JSON error {"error": why} with @status (its body so far is
 * dropped; resp->headers is kept, e.g. a 405's Allow). Returns 0 or
 * -ENOMEM.
 */
int handler_error(struct handler_response *resp, int status, const char *why);

#endif
