/* SPDX-License-Identifier: MIT */
/*
 * control.c - see control.h: the handler registry, the router, and the
 * per-connection glue between http.c and the reactor. The handlers are
 * elsewhere, the views of the store in views.c, but for three small ones
 * here: "ping", "stats" (metrics.c's JSON) and "compact" (wal.h). All of
 * them, these three too, see only handler.h's request and response.
 *
 * Everything here runs on the thread that owns the control plane.
 */
#include "control.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compiler.h"
#include "conn.h"
#include "json.h"
#include "metrics.h"
#include "store.h"
#include "views.h"
#include "wal.h"

#define CONTROL_MAX_NAME 64
/* More reply bytes than this queued: answer, then close (a flood). */
#define CONTROL_MAX_OUT (4u << 20)

#define CT_PROM "text/plain; version=0.0.4; charset=utf-8"

/* One registered handler. */
struct registration {
	char name[CONTROL_MAX_NAME + 1];
	handler_fn fn;
	void *arg;
};

struct control {
	struct server *srv;            /* borrowed, may be NULL */
	struct store_thread *th;       /* borrowed */
	struct views *views;           /* owned */
	struct registration *handlers; /* owned array */
	size_t nhandlers, cap;
	struct handler_response resp; /* reused for every request */
	bool shutting_down;
};

struct control_conn {
	struct control *c; /* borrowed */
	struct http_parser hp;
};

/* ------------------------------------------------------------------ */
/* Registry                                                            */

static struct registration *find(const struct control *c, const char *name)
{
	for (size_t i = 0; i < c->nhandlers; i++)
		if (!strcmp(c->handlers[i].name, name))
			return &c->handlers[i];
	return NULL;
}

int control_register(struct control *c, const char *name, handler_fn fn,
		     void *arg)
{
	size_t len = strlen(name);

	if (!len || len > CONTROL_MAX_NAME || !fn)
		return -EINVAL;
	for (const char *s = name; *s; s++)
		if (*s <= 0x20 || *s >= 0x7f || *s == '/')
			return -EINVAL;
	if (find(c, name))
		return -EEXIST;
	if (c->nhandlers == c->cap) {
		size_t cap = c->cap ? c->cap * 2 : 8;
		struct registration *h = realloc(c->handlers, cap * sizeof(*h));

		if (!h)
			return -ENOMEM;
		c->handlers = h;
		c->cap = cap;
	}
	struct registration *h = &c->handlers[c->nhandlers++];
	memcpy(h->name, name, len + 1);
	h->fn = fn;
	h->arg = arg;
	return 0;
}

bool control_lookup(const struct control *c, const char *name)
{
	return find(c, name) != NULL;
}

size_t control_count(const struct control *c)
{
	return c->nhandlers;
}

const char *control_name(const struct control *c, size_t i)
{
	return i < c->nhandlers ? c->handlers[i].name : NULL;
}

void control_shutting_down(struct control *c, bool on)
{
	c->shutting_down = on;
}

/* ------------------------------------------------------------------ */
/* Built-in handlers                                                   */

static int h_ping(void *arg, const struct handler_request *req,
		  struct handler_response *resp)
{
	(void)arg;
	(void)req;
	return buf_append(&resp->body, "pong", 4);
}

static int h_stats(void *arg, const struct handler_request *req,
		   struct handler_response *resp)
{
	struct control *c = arg;

	(void)req;
	resp->content_type = HANDLER_CT_JSON;
	return metrics_of_server(&resp->body, true, c->srv, c->th->st);
}

/* POST: start compacting the write log now (it runs in the background;
 * ringstore_log_compactions_total counts those that finished). */
static int h_compact(void *arg, const struct handler_request *req,
		     struct handler_response *resp)
{
	struct control *c = arg;
	struct wal *w = c->th->st->wal;
	int ret;

	if (strcmp(req->method, "POST")) {
		resp->headers = "Allow: POST\r\n";
		return handler_error(resp, 405,
				     "compact changes the data "
				     "directory: use POST");
	}
	if (!w)
		return handler_error(resp, 409,
				     "no write log: the server runs "
				     "without --data-dir");
	ret = wal_compact_now(w);
	if (ret == -EBUSY)
		return handler_error(resp, 409, "a compaction is running");
	if (ret)
		return ret;
	resp->status = 202;
	resp->content_type = HANDLER_CT_JSON;
	return buf_append(&resp->body, "{\"started\":true}\n", 16);
}

/* ------------------------------------------------------------------ */
/* Router                                                              */

struct control *control_create(struct server *srv, struct store_thread *th)
{
	struct control *c = calloc(1, sizeof(*c));
	struct views *v = views_create(th);
	const struct {
		const char *name;
		handler_fn fn;
		void *arg;
	} builtin[] = {
		{ "barriers", views_barriers, v }, { "compact", h_compact, c },
		{ "delete", views_delete, v },     { "keys", views_keys, v },
		{ "ping", h_ping, NULL },          { "stats", h_stats, c },
		{ "waiters", views_waiters, v },
	};

	if (!c || !v) {
		free(c);
		views_destroy(v);
		return NULL;
	}
	c->srv = srv;
	c->th = th;
	c->views = v;
	for (size_t i = 0; i < ARRAY_SIZE(builtin); i++) {
		if (control_register(c, builtin[i].name, builtin[i].fn,
				     builtin[i].arg)) {
			control_destroy(c);
			return NULL;
		}
	}
	return c;
}

void control_destroy(struct control *c)
{
	if (!c)
		return;
	views_destroy(c->views);
	free(c->handlers);
	buf_free(&c->resp.body);
	free(c);
}

static int list_handlers(struct control *c, struct handler_response *resp)
{
	struct json_out o = { .b = &resp->body };

	resp->content_type = HANDLER_CT_JSON;
	json_text(&o, "[");
	for (size_t i = 0; i < c->nhandlers; i++) {
		if (i)
			json_text(&o, ",");
		json_cstr(&o, c->handlers[i].name);
	}
	json_text(&o, "]\n");
	return o.err;
}

static int index_page(struct handler_response *resp)
{
	static const char text[] = "ringstore control plane\n"
				   "GET /health\n"
				   "GET /metrics\n"
				   "GET /handler/\n"
				   "GET|POST /handler/<name>\n";

	return buf_append(&resp->body, text, sizeof(text) - 1);
}

/* Run a registered handler; a failure becomes a 500. */
static int run_handler(struct control *c, const struct handler_request *req,
		       const char *name)
{
	struct handler_response *resp = &c->resp;
	struct registration *h = find(c, name);
	char why[CONTROL_MAX_NAME + 96];
	int ret;

	if (!h) {
		snprintf(why, sizeof(why), "handler '%.64s' not found", name);
		return handler_error(resp, 404, why);
	}
	ret = h->fn(h->arg, req, resp);
	if (!ret)
		return 0;
	snprintf(why, sizeof(why), "handler '%s' failed: %s", name,
		 strerror(-ret));
	resp->headers = NULL;
	return handler_error(resp, 500, why);
}

/* Fill c->resp for @req. Returns 0 or -ENOMEM. */
static int route(struct control *c, const struct handler_request *req)
{
	static const char allow_get[] = "Allow: GET, HEAD\r\n";
	static const char allow_run[] = "Allow: GET, HEAD, POST\r\n";
	struct handler_response *resp = &c->resp;
	const char *path = req->path;
	bool get = !strcmp(req->method, "GET") || !strcmp(req->method, "HEAD");
	bool post = !strcmp(req->method, "POST");
	char why[96];

	if (!strncmp(path, "/handler/", 9) && path[9]) {
		if (get || post)
			return run_handler(c, req, path + 9);
		resp->headers = allow_run;
	} else if (get && !strcmp(path, "/health")) {
		if (!c->shutting_down)
			return buf_append(&resp->body, "ok", 2);
		resp->status = 503;
		return buf_append(&resp->body, "shutting down", 13);
	} else if (get && !strcmp(path, "/metrics")) {
		resp->content_type = CT_PROM;
		return metrics_of_server(&resp->body, false, c->srv, c->th->st);
	} else if (get &&
		   (!strcmp(path, "/handler/") || !strcmp(path, "/handler"))) {
		return list_handlers(c, resp);
	} else if (get && !strcmp(path, "/")) {
		return index_page(resp);
	} else if (strcmp(path, "/health") && strcmp(path, "/metrics") &&
		   strcmp(path, "/handler/") && strcmp(path, "/handler") &&
		   strcmp(path, "/")) {
		return handler_error(resp, 404, "not found");
	} else {
		resp->headers = allow_get;
	}
	snprintf(why, sizeof(why), "method %.32s not allowed", req->method);
	return handler_error(resp, 405, why);
}

int control_handle(struct control *c, const struct handler_request *req,
		   struct buf *out, unsigned flags)
{
	struct handler_response *resp = &c->resp;
	int ret;

	buf_reset(&resp->body);
	resp->status = 200;
	resp->content_type = HANDLER_CT_TEXT;
	resp->headers = NULL;
	ret = route(c, req);
	if (!ret)
		ret = http_response(out, resp->status, resp->content_type,
				    json_bytes_of(&resp->body),
				    buf_used(&resp->body), resp->headers,
				    flags);
	buf_reset(&resp->body);
	buf_shrink(&resp->body, 1 << 20);
	return ret;
}

/* ------------------------------------------------------------------ */
/* Connections                                                         */

struct control_conn *control_conn_create(struct control *c)
{
	struct control_conn *cc = calloc(1, sizeof(*cc));

	if (!cc)
		return NULL;
	cc->c = c;
	http_parser_init(&cc->hp);
	return cc;
}

void control_conn_destroy(struct control_conn *cc)
{
	if (!cc)
		return;
	http_parser_free(&cc->hp);
	free(cc);
}

/* The answer to a request the parser refused; the connection then closes. */
static int refuse(struct http_parser *hp, struct buf *out)
{
	struct buf body = { 0 };
	struct json_out o = { .b = &body };
	int ret;

	json_error(&o, hp->error ? hp->error : "bad request");
	ret = o.err ? o.err
		    : http_response(out, hp->status, HANDLER_CT_JSON,
				    json_bytes_of(&body), buf_used(&body), NULL,
				    HTTP_R_CLOSE);
	buf_free(&body);
	return ret ? ret : 1;
}

int control_conn_input(struct control_conn *cc, const uint8_t *p, size_t n,
		       struct buf *out)
{
	static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
	struct http_parser *hp = &cc->hp;

	while (n) {
		struct handler_request req;
		unsigned flags = 0;
		size_t used = 0;
		int ret = http_feed(hp, p, n, &used);

		p += used;
		n -= used;
		if (ret == -ENOMEM)
			return ret;
		if (ret < 0)
			return refuse(hp, out);
		if (ret == 0) {
			if (hp->expect_continue) {
				hp->expect_continue = false;
				return buf_append(out, cont, sizeof(cont) - 1);
			}
			return 0;
		}
		req = (struct handler_request){
			.method = hp->method,
			.path = hp->path,
			.params = hp->params,
			.nparams = hp->nparams,
			.body = json_bytes_of(&hp->body),
			.body_len = buf_used(&hp->body),
		};
		if (!hp->keep_alive || cc->c->shutting_down ||
		    buf_used(out) > CONTROL_MAX_OUT)
			flags |= HTTP_R_CLOSE;
		if (!strcmp(hp->method, "HEAD"))
			flags |= HTTP_R_HEAD;
		ret = control_handle(cc->c, &req, out, flags);
		if (ret)
			return ret;
		if (flags & HTTP_R_CLOSE)
			return 1;
	}
	return 0;
}

static int guest_input(void *state, const uint8_t *p, size_t n, struct buf *out)
{
	return control_conn_input(state, p, n, out);
}

static void guest_destroy(void *state)
{
	control_conn_destroy(state);
}

const struct conn_guest_ops control_guest_ops = {
	.input = guest_input,
	.destroy = guest_destroy,
};
