/* SPDX-License-Identifier: MIT */
/*
 * control.c - see control.h: the handler registry, the router, the built-in
 * handlers and the per-connection glue between http.c and the reactor.
 *
 * Everything here runs on the thread that owns the control plane. The views
 * read shared state the way the store does: table entries are borrowed
 * between quiescent points through that thread's QSBR handle, waiter lists
 * are read under their stripe locks (waiters_foreach), counters with relaxed
 * loads. Output is JSON that is pure ASCII: keys and values may be binary,
 * so every byte outside printable ASCII is written as \u00XX (a key's bytes
 * read as Latin-1).
 */
#include "control.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "blkcache.h"
#include "compiler.h"
#include "conn.h"
#include "hash.h"
#include "io.h"
#include "net.h"
#include "now.h"
#include "queues.h"
#include "qsbr.h"
#include "server.h"
#include "stats.h"
#include "store.h"
#include "table.h"
#include "waiters.h"

#define CONTROL_MAX_NAME 64
/* More reply bytes than this queued: answer, then close (a flood). */
#define CONTROL_MAX_OUT (4u << 20)
/* Values longer than this are listed by size only. */
#define CONTROL_MAX_SHOWN_VALUE 1024
#define CONTROL_KEYS_DEFAULT 1000
#define CONTROL_KEYS_MAX 100000

#define CT_TEXT "text/plain; charset=utf-8"
#define CT_JSON "application/json"
#define CT_PROM "text/plain; version=0.0.4; charset=utf-8"

struct handler {
	char name[CONTROL_MAX_NAME + 1];
	control_handler_fn fn;
	void *arg;
};

struct control {
	struct server *srv;          /* borrowed, may be NULL */
	struct store_thread *th;     /* borrowed */
	struct handler *handlers;    /* owned array */
	size_t nhandlers, cap;
	struct control_response resp; /* reused for every request */
	struct buf scratch;          /* owned: a second list while rendering */
	bool shutting_down;
};

struct control_conn {
	struct control *c; /* borrowed */
	struct http_parser hp;
};

/*
 * Output with a sticky error: rendering code appends freely and the first
 * -ENOMEM is reported once at the end.
 */
struct out {
	struct buf *b;
	int err;
};

static void put(struct out *o, const void *p, size_t n)
{
	if (!o->err && n)
		o->err = buf_append(o->b, p, n);
}

/* The unread bytes of @b, or NULL when there are none. */
static const uint8_t *bytes_of(const struct buf *b)
{
	return buf_used(b) ? buf_head(b) : NULL;
}

static void put_str(struct out *o, const char *s)
{
	put(o, s, strlen(s));
}

__attribute__((format(printf, 2, 3)))
static void putf(struct out *o, const char *fmt, ...)
{
	struct buf *b = o->b;
	size_t room = 256; /* a line of numbers and names */
	va_list ap;
	int n;

	/* Formatted in place at the reply's tail; a longer line (a metric's
	 * help text) is formatted once more into room for all of it. */
	while (!o->err) {
		if (buf_reserve(b, room)) {
			o->err = -ENOMEM;
			return;
		}
		va_start(ap, fmt);
		n = vsnprintf((char *)b->data + b->len, room, fmt, ap);
		va_end(ap);
		if (n < 0) {
			o->err = -EINVAL;
			return;
		}
		if ((size_t)n < room) {
			b->len += (size_t)n;
			return;
		}
		room = (size_t)n + 1;
	}
}

/* A JSON string of arbitrary bytes, quotes included, pure ASCII. */
static void put_json_str(struct out *o, const uint8_t *p, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	size_t run = 0;

	put(o, "\"", 1);
	for (size_t i = 0; i < n; i++) {
		uint8_t ch = p[i];
		char esc[6] = { '\\', 'u', '0', '0', hex[ch >> 4],
				hex[ch & 15] };

		if (ch >= 0x20 && ch < 0x7f && ch != '"' && ch != '\\')
			continue;
		put(o, p + run, i - run);
		run = i + 1;
		if (ch == '"' || ch == '\\') {
			esc[1] = (char)ch;
			put(o, esc, 2);
		} else if (ch == '\n') {
			put(o, "\\n", 2);
		} else if (ch == '\t') {
			put(o, "\\t", 2);
		} else {
			put(o, esc, sizeof(esc));
		}
	}
	put(o, p + run, n - run);
	put(o, "\"", 1);
}

static void put_json_cstr(struct out *o, const char *s)
{
	put_json_str(o, (const uint8_t *)s, strlen(s));
}

/* {"error": why} */
static void put_json_error(struct out *o, const char *why)
{
	put_str(o, "{\"error\":");
	put_json_cstr(o, why);
	put_str(o, "}\n");
}

/* ------------------------------------------------------------------ */
/* Registry                                                            */

static struct handler *find(const struct control *c, const char *name)
{
	for (size_t i = 0; i < c->nhandlers; i++)
		if (!strcmp(c->handlers[i].name, name))
			return &c->handlers[i];
	return NULL;
}

int control_register(struct control *c, const char *name,
		     control_handler_fn fn, void *arg)
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
		struct handler *h = realloc(c->handlers, cap * sizeof(*h));

		if (!h)
			return -ENOMEM;
		c->handlers = h;
		c->cap = cap;
	}
	struct handler *h = &c->handlers[c->nhandlers++];
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

const char *control_param(const struct control_request *req, const char *name,
			  size_t *len)
{
	for (size_t i = 0; i < req->nparams; i++) {
		if (!strcmp(req->params[i].name, name)) {
			if (len)
				*len = req->params[i].value_len;
			return req->params[i].value;
		}
	}
	return NULL;
}

/* ------------------------------------------------------------------ */
/* Metrics                                                             */

/*
 * One writer for both formats. Prometheus: HELP and TYPE lines, then one
 * line per sample. JSON: "name": value, or "name": {"label": value, ...}
 * for a labelled family.
 */
struct metrics_out {
	struct out o;
	bool json;
	size_t families;
	size_t samples;     /* in the current family */
	const char *name;   /* of the current family */
	const char *label;  /* its label name, or NULL */
};

static void fam_begin(struct metrics_out *m, const char *name,
		      const char *type, const char *label, const char *help)
{
	m->name = name;
	m->label = label;
	m->samples = 0;
	if (!m->json) {
		putf(&m->o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name,
		     type);
	} else {
		putf(&m->o, "%s\"%s\":%s", m->families ? "," : "", name,
		     label ? "{" : "");
	}
	m->families++;
}

/* One sample; @lv is the label value (NULL for an unlabelled family). */
static void fam_sample(struct metrics_out *m, const char *lv, uint64_t v)
{
	if (!lv)
		lv = "";
	if (!m->json && m->label)
		putf(&m->o, "%s{%s=\"%s\"} %" PRIu64 "\n", m->name, m->label,
		     lv, v);
	else if (!m->json)
		putf(&m->o, "%s %" PRIu64 "\n", m->name, v);
	else if (m->label)
		putf(&m->o, "%s\"%s\":%" PRIu64, m->samples ? "," : "", lv, v);
	else
		putf(&m->o, "%" PRIu64, v);
	m->samples++;
}

static void fam_end(struct metrics_out *m)
{
	if (m->json && m->label)
		put_str(&m->o, "}");
}

static void metric(struct metrics_out *m, const char *name, const char *type,
		   const char *help, uint64_t v)
{
	fam_begin(m, name, type, NULL, help);
	fam_sample(m, NULL, v);
	fam_end(m);
}

/* Resident set size from /proc/self/statm; 0 if it cannot be read. */
static uint64_t rss_bytes(void)
{
	char text[128];
	unsigned long long pages_total, pages_rss;
	int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return 0;
	n = read(fd, text, sizeof(text) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	text[n] = '\0';
	if (sscanf(text, "%llu %llu", &pages_total, &pages_rss) != 2)
		return 0;
	return (uint64_t)pages_rss * (uint64_t)sysconf(_SC_PAGESIZE);
}

int control_metrics(struct buf *out, bool json, const char *backend,
		    const struct stats *const *rs, size_t n, struct store *st)
{
	struct metrics_out m = { .o = { .b = out }, .json = json };
	struct stats t = { 0 };
	char id[24];

	for (size_t i = 0; i < n; i++)
		if (rs[i])
			stats_sum(&t, rs[i]);
	if (json)
		put_str(&m.o, "{");
	if (backend && json) {
		put_str(&m.o, "\"backend\":");
		put_json_cstr(&m.o, backend);
		m.families++;
	} else if (backend) {
		putf(&m.o, "# HELP ringstore_info The server: its I/O backend.\n"
			   "# TYPE ringstore_info gauge\n"
			   "ringstore_info{backend=\"%s\"} 1\n", backend);
	}

	metric(&m, "ringstore_connections_active", "gauge",
	       "Store connections open now.", stat_get(&t.active));
	metric(&m, "ringstore_connections_accepted_total", "counter",
	       "Store connections accepted.", stat_get(&t.accepted));
	metric(&m, "ringstore_connections_rejected_total", "counter",
	       "Store connections closed at accept (limit, allow list).",
	       stat_get(&t.rejected));
	metric(&m, "ringstore_accept_errors_total", "counter",
	       "Failed accepts.", stat_get(&t.accept_errors));
	fam_begin(&m, "ringstore_connections_closed_total", "counter",
		  "reason", "Store connections closed, by reason.");
	for (unsigned i = 0; i < STATS_CLOSE__COUNT; i++)
		fam_sample(&m, stats_close_id(i), stat_get(&t.closed[i]));
	fam_end(&m);
	fam_begin(&m, "ringstore_requests_total", "counter", "op",
		  "Store requests executed, by opcode.");
	for (unsigned i = 0; i < OP__COUNT; i++)
		fam_sample(&m, proto_op_name(i), stat_get(&t.requests[i]));
	fam_end(&m);
	fam_begin(&m, "ringstore_protocol_errors_total", "counter", "kind",
		  "Store connections dropped for a protocol violation, by "
		  "kind.");
	for (unsigned i = PROTO_E_NONE + 1; i < PROTO_E__COUNT; i++)
		fam_sample(&m, proto_err_name(i), stat_get(&t.proto_errors[i]));
	fam_end(&m);
	metric(&m, "ringstore_received_bytes_total", "counter",
	       "Bytes received from store clients.", stat_get(&t.bytes_in));
	metric(&m, "ringstore_sent_bytes_total", "counter",
	       "Bytes sent to store clients.", stat_get(&t.bytes_out));

	metric(&m, "ringstore_keys", "gauge", "Keys in the store.",
	       table_count(st->table));
	metric(&m, "ringstore_stored_bytes", "gauge",
	       "Bytes of the stored keys and values.", table_bytes(st->table));
	metric(&m, "ringstore_waiters", "gauge",
	       "Pending waits, one per client and awaited key.",
	       waiters_count(st->waiters));
	metric(&m, "ringstore_queue_items", "gauge",
	       "Items in all queues.", queues_items(st->queues));
	metric(&m, "ringstore_queues_nonempty", "gauge",
	       "Queues holding at least one item.",
	       queues_nonempty(st->queues));
	metric(&m, "ringstore_reclaim_pending", "gauge",
	       "Retired objects not yet reclaimed (QSBR).",
	       qsbr_pending(st->qsbr));

	metric(&m, "ringstore_reactors", "gauge", "Reactor threads.", n);
	fam_begin(&m, "ringstore_reactor_loop_iterations_total", "counter",
		  "reactor", "Event loop iterations, by reactor.");
	for (size_t i = 0; i < n; i++) {
		snprintf(id, sizeof(id), "%zu", i);
		fam_sample(&m, id, rs[i] ? stat_get(&rs[i]->loops) : 0);
	}
	fam_end(&m);
	fam_begin(&m, "ringstore_reactor_completions_total", "counter",
		  "reactor",
		  "Completions (io_uring) or readiness events (epoll) handled, "
		  "by reactor (over iterations: the mean batch size).");
	for (size_t i = 0; i < n; i++) {
		snprintf(id, sizeof(id), "%zu", i);
		fam_sample(&m, id, rs[i] ? stat_get(&rs[i]->cqes) : 0);
	}
	fam_end(&m);
	fam_begin(&m, "ringstore_wakeups_total", "counter", "kind",
		  "Wait completions: on the waiter's reactor, or sent to and "
		  "received from another reactor.");
	fam_sample(&m, "local", stat_get(&t.wakes_local));
	fam_sample(&m, "remote_sent", stat_get(&t.wakes_remote_sent));
	fam_sample(&m, "remote_received", stat_get(&t.wakes_remote_recv));
	fam_end(&m);
	fam_begin(&m, "ringstore_mget_cache_total", "counter", "kind",
		  "Large MULTI_GETs answered from the reply cache (hit), and "
		  "replies built and cached (build).");
	fam_sample(&m, "hit", stat_get(&t.mget_cache_hits));
	fam_sample(&m, "build", stat_get(&t.mget_cache_builds));
	fam_end(&m);
	fam_begin(&m, "ringstore_recv_buffers_provided_target", "gauge", NULL,
		  "io_uring: receive buffers the reactors keep in their "
		  "buffer rings (adapts to the receives per batch).");
	fam_sample(&m, NULL, stat_get(&t.recv_bufs_target));
	fam_end(&m);
	fam_begin(&m, "ringstore_writes_in_place_total", "counter", NULL,
		  "SET and MULTI_SET values written over a live value of the "
		  "same length inside its entry, instead of replacing it.");
	fam_sample(&m, NULL, stat_get(&t.writes_in_place));
	fam_end(&m);
	fam_begin(&m, "ringstore_registered_files_total", "counter",
		  "event",
		  "io_uring: client sockets put in the ring's registered "
		  "files (their sends skip a file lookup), refused, and "
		  "released when the connection ended.");
	fam_sample(&m, "registered", stat_get(&t.files_registered));
	fam_sample(&m, "failed", stat_get(&t.files_failed));
	fam_sample(&m, "released", stat_get(&t.files_released));
	fam_end(&m);
	metric(&m, "ringstore_sends_spread_total", "counter",
	       "Sends made on another CPU past --spread-sends in one batch: "
	       "by the ring's kernel worker (io_uring) or the reactor's "
	       "helper thread (epoll).",
	       stat_get(&t.sends_spread));
	metric(&m, "ringstore_stale_completions_total", "counter",
	       "Completions for a connection slot that was reused.",
	       stat_get(&t.stale_cqes));
	metric(&m, "ringstore_receive_buffer_exhausted_total", "counter",
	       "Receives that found no provided buffer (ENOBUFS).",
	       stat_get(&t.enobufs));
	metric(&m, "ringstore_resident_memory_bytes", "gauge",
	       "Resident set size of the process.", rss_bytes());
	fam_begin(&m, "ringstore_entry_slab_bytes", "gauge", "state",
		  "Slabs for table entries up to 512 B, kept for reuse "
		  "(carved), and their free blocks in the shared pool "
		  "(pooled); 0 under AddressSanitizer.");
	fam_sample(&m, "carved", blk_slab_bytes());
	fam_sample(&m, "pooled", blk_pool_bytes());
	fam_end(&m);
	if (json)
		put_str(&m.o, "}\n");
	return m.o.err;
}

/* The counters of every reactor of the server, in the chosen format. */
static int server_metrics(struct control *c, struct buf *out, bool json)
{
	size_t n = c->srv ? c->srv->nreactors : 0;
	const struct stats **rs = NULL;
	int ret;

	if (n) {
		rs = calloc(n, sizeof(*rs));
		if (!rs)
			return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++)
		rs[i] = c->srv->stats ? c->srv->stats[i] : NULL;
	ret = control_metrics(out, json, c->srv ? c->srv->io->name : NULL, rs,
			      n, c->th->st);
	free(rs);
	return ret;
}

/* ------------------------------------------------------------------ */
/* Built-in handlers                                                   */

static int h_ping(void *arg, const struct control_request *req,
		  struct control_response *resp)
{
	(void)arg;
	(void)req;
	return buf_append(&resp->body, "pong", 4);
}

static int h_stats(void *arg, const struct control_request *req,
		   struct control_response *resp)
{
	(void)req;
	resp->content_type = CT_JSON;
	return server_metrics(arg, &resp->body, true);
}

/* 400 with a JSON error (a bad parameter). */
static int bad_request(struct control_response *resp, const char *why)
{
	struct out o = { .b = &resp->body };

	resp->status = 400;
	resp->content_type = CT_JSON;
	put_json_error(&o, why);
	return o.err;
}

struct keys_walk {
	const uint8_t *prefix;
	size_t plen;
	size_t limit;
	struct table_entry **v; /* owned array of borrowed entries */
	size_t n, cap;
	bool truncated;
};

static int keys_visit(struct table_entry *e, void *arg)
{
	struct keys_walk *kw = arg;

	if (e->klen < kw->plen || memcmp(table_entry_key(e), kw->prefix,
					 kw->plen))
		return 0;
	if (kw->n == kw->limit) {
		kw->truncated = true;
		return 1;
	}
	if (kw->n == kw->cap) {
		size_t cap = kw->cap ? kw->cap * 2 : 64;
		struct table_entry **v = realloc(kw->v, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		kw->v = v;
		kw->cap = cap;
	}
	kw->v[kw->n++] = e;
	return 0;
}

static int key_cmp(const void *a, const void *b)
{
	const struct table_entry *x = *(struct table_entry *const *)a;
	const struct table_entry *y = *(struct table_entry *const *)b;
	int r = memcmp(table_entry_key(x), table_entry_key(y),
		       x->klen < y->klen ? x->klen : y->klen);

	return r ? r : (x->klen > y->klen) - (x->klen < y->klen);
}

static bool printable(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if ((p[i] < 0x20 || p[i] >= 0x7f) && p[i] != '\t' &&
		    p[i] != '\n' && p[i] != '\r')
			return false;
	return true;
}

/* A decimal parameter in [lo, hi]; @def when absent. Returns 0 or -EINVAL. */
static int param_u64(const struct control_request *req, const char *name,
		     uint64_t lo, uint64_t hi, uint64_t def, uint64_t *v)
{
	const char *s = control_param(req, name, NULL);
	char *end;

	*v = def;
	if (!s)
		return 0;
	if (*s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	*v = strtoull(s, &end, 10);
	if (errno || *end || *v < lo || *v > hi)
		return -EINVAL;
	return 0;
}

/*
 * GET /handler/keys?prefix=P&limit=N: the keys starting with P (sorted,
 * at most N), each with its value size and, when short and printable, its
 * value.
 */
static int h_keys(void *arg, const struct control_request *req,
		  struct control_response *resp)
{
	struct control *c = arg;
	struct store_thread *th = c->th;
	struct keys_walk kw = { 0 };
	struct out o = { .b = &resp->body };
	uint64_t limit;
	int ret;

	if (param_u64(req, "limit", 1, CONTROL_KEYS_MAX, CONTROL_KEYS_DEFAULT,
		      &limit))
		return bad_request(resp, "limit must be a number from 1 to "
					 "100000");
	kw.limit = limit;
	kw.prefix = (const uint8_t *)control_param(req, "prefix", &kw.plen);
	if (!kw.prefix)
		kw.prefix = (const uint8_t *)"";
	ret = table_foreach(th->st->table, th->qt, keys_visit, &kw);
	if (ret < 0) {
		free(kw.v);
		return ret;
	}
	if (kw.n)
		qsort(kw.v, kw.n, sizeof(*kw.v), key_cmp);

	resp->content_type = CT_JSON;
	putf(&o, "{\"count\":%zu,\"returned\":%zu,\"truncated\":%s,\"keys\":[",
	     table_count(th->st->table), kw.n, kw.truncated ? "true" : "false");
	for (size_t i = 0; i < kw.n; i++) {
		const struct table_entry *e = kw.v[i];
		uint8_t val[CONTROL_MAX_SHOWN_VALUE];

		put_str(&o, i ? ",\n{\"key\":" : "\n{\"key\":");
		put_json_str(&o, table_entry_key(e), e->klen);
		putf(&o, ",\"size\":%" PRIu64, e->vlen);
		if (e->vlen <= CONTROL_MAX_SHOWN_VALUE &&
		    (table_entry_read_val(e, val, sizeof(val)),
		     printable(val, e->vlen))) {
			put_str(&o, ",\"value\":");
			put_json_str(&o, val, e->vlen);
		}
		put_str(&o, "}");
	}
	put_str(&o, "]}\n");
	free(kw.v);
	return o.err;
}

struct clocks {
	uint64_t mono_ns; /* now, CLOCK_MONOTONIC (the clock of since_ns) */
	double real_s;    /* now, Unix time */
};

static void clocks_now(struct clocks *k)
{
	k->mono_ns = now_mono_ns();
	k->real_s = (double)now_wall_ns() / 1e9;
}

/* Seconds @ws has waited (0 if its start is unknown). */
static double wait_age(const struct wait_state *ws, const struct clocks *k)
{
	if (!ws->since_ns || ws->since_ns >= k->mono_ns)
		return 0;
	return (double)(k->mono_ns - ws->since_ns) / 1e9;
}

/*
 * {"peer": addr, "reactor": r, "since": unix time, "waiting_s": seconds,
 *  "pending_keys": n[, "barrier_world_size": w]} for one waiting client.
 * Called under the stripe lock, which keeps @ws alive.
 */
static void put_waiter(struct out *o, const struct wait_state *ws,
		       const struct clocks *k)
{
	char peer[NET_ADDRSTRLEN];
	double age = wait_age(ws, k);

	net_format_addr((const struct sockaddr *)&ws->peer, peer, sizeof(peer));
	put_str(o, "{\"peer\":");
	put_json_cstr(o, peer);
	putf(o, ",\"reactor\":%" PRIu32 ",\"since\":%.3f,\"waiting_s\":%.3f"
	     ",\"pending_keys\":%" PRIu64,
	     ws->who.reactor, k->real_s - age, age,
	     (uint64_t)atomic_load_explicit(&ws->pending,
					    memory_order_relaxed));
	if (ws->barrier_ws > 0)
		putf(o, ",\"barrier_world_size\":%" PRId64, ws->barrier_ws);
	put_str(o, "}");
}

struct waiters_walk {
	struct out o;
	struct clocks now;
	size_t keys;
};

static void waiters_visit(void *arg, const uint8_t *key, size_t klen,
			  const struct wait_node *first)
{
	struct waiters_walk *ww = arg;
	size_t n = 0;
	double oldest = 0;

	put_str(&ww->o, ww->keys++ ? ",\n{\"key\":" : "\n{\"key\":");
	put_json_str(&ww->o, key, klen);
	put_str(&ww->o, ",\"peers\":[");
	for (const struct wait_node *nd = first; nd; nd = nd->next) {
		double age = wait_age(nd->ws, &ww->now);

		if (n++)
			put_str(&ww->o, ",");
		put_waiter(&ww->o, nd->ws, &ww->now);
		oldest = age > oldest ? age : oldest;
	}
	putf(&ww->o, "],\"waiters\":%zu,\"oldest_waiting_s\":%.3f}", n,
	     oldest);
}

/* GET /handler/waiters: every awaited key, with how many wait and who. */
static int h_waiters(void *arg, const struct control_request *req,
		     struct control_response *resp)
{
	struct control *c = arg;
	struct waiters_walk ww = { .o = { .b = &resp->body } };

	(void)req;
	clocks_now(&ww.now);
	resp->content_type = CT_JSON;
	put_str(&ww.o, "{\"keys\":[");
	waiters_foreach(c->th->st->waiters, waiters_visit, &ww);
	putf(&ww.o, "],\"waited_keys\":%zu,\"waits\":%" PRIu64 "}\n", ww.keys,
	     waiters_count(c->th->st->waiters));
	return ww.o.err;
}

/* The integer in key @key, as JSON (null when absent or not a number). */
static void put_counter(struct out *o, struct store_thread *th,
			const uint8_t *key, size_t klen)
{
	struct table_entry *e = table_get(th->st->table, th->qt,
					  hash_key(key, klen), key, klen);
	uint8_t val[64]; /* a counter's text; anything longer is shown null */
	int64_t v;

	if (e && e->vlen <= sizeof(val) &&
	    (table_entry_read_val(e, val, sizeof(val)),
	     !store_parse_i64(val, e->vlen, &v)))
		putf(o, "%" PRId64, v);
	else
		put_str(o, "null");
}

/*
 * A key some clients wait on that names a counter by convention: torch's
 * elastic barrier waits on "<p>/last_member" while counting "<p>/num_members",
 * and _store_based_barrier waits on "<k>:last_worker" while counting "<k>".
 * Returns the counter key's length (its bytes are in @buf), or 0.
 */
static size_t counter_of(const uint8_t *key, size_t klen, uint8_t *buf,
			 size_t cap)
{
	static const char lm[] = "/last_member", nm[] = "/num_members";
	static const char lw[] = ":last_worker";
	size_t lml = sizeof(lm) - 1, lwl = sizeof(lw) - 1;

	if (klen >= lml && !memcmp(key + klen - lml, lm, lml) &&
	    klen - lml + sizeof(nm) - 1 <= cap) {
		memcpy(buf, key, klen - lml);
		memcpy(buf + klen - lml, nm, sizeof(nm) - 1);
		return klen - lml + sizeof(nm) - 1;
	}
	if (klen > lwl && !memcmp(key + klen - lwl, lw, lwl) &&
	    klen - lwl <= cap) {
		memcpy(buf, key, klen - lwl);
		return klen - lwl;
	}
	return 0;
}

struct barriers_walk {
	struct store_thread *th;
	struct clocks now;
	struct out bar;  /* the BARRIER list */
	struct out cnt;  /* the counter list */
	size_t nbar, ncnt;
	uint8_t ckey[PROTO_DEFAULT_MAX_KEY + 16];
};

static void barriers_visit(void *arg, const uint8_t *key, size_t klen,
			   const struct wait_node *first)
{
	struct barriers_walk *bw = arg;
	int64_t world = 0;
	size_t n = 0, nb = 0, clen;
	struct out *o;

	for (const struct wait_node *nd = first; nd; nd = nd->next, n++) {
		if (nd->ws->barrier_ws > 0)
			nb++;
		if (nd->ws->barrier_ws > world)
			world = nd->ws->barrier_ws;
	}
	if (nb) {
		o = &bw->bar;
		put_str(o, bw->nbar++ ? ",\n{\"key\":" : "\n{\"key\":");
		put_json_str(o, key, klen);
		put_str(o, ",\"arrived\":");
		put_counter(o, bw->th, key, klen);
		putf(o, ",\"world_size\":%" PRId64 ",\"waiting\":%zu", world,
		     nb);
	} else {
		clen = counter_of(key, klen, bw->ckey, sizeof(bw->ckey));
		if (!clen)
			return;
		o = &bw->cnt;
		put_str(o, ",\n{\"key\":");
		put_json_str(o, bw->ckey, clen);
		put_str(o, ",\"value\":");
		put_counter(o, bw->th, bw->ckey, clen);
		put_str(o, ",\"awaited_key\":");
		put_json_str(o, key, klen);
		putf(o, ",\"waiting\":%zu", n);
		bw->ncnt++;
	}
	put_str(o, ",\"peers\":[");
	n = 0;
	for (const struct wait_node *nd = first; nd; nd = nd->next) {
		if (nb && nd->ws->barrier_ws <= 0)
			continue;
		if (n++)
			put_str(o, ",");
		put_waiter(o, nd->ws, &bw->now);
	}
	put_str(o, "]}");
}

/*
 * GET /handler/barriers: pending BARRIERs (key, arrived so far, world size,
 * who waits), and counters: "init/" (clients that connected with a world
 * size) and the counters of barriers built from ADD and WAIT.
 */
static int h_barriers(void *arg, const struct control_request *req,
		      struct control_response *resp)
{
	struct control *c = arg;
	struct barriers_walk *bw = calloc(1, sizeof(*bw));
	int ret;

	(void)req;
	if (!bw)
		return -ENOMEM;
	buf_reset(&c->scratch);
	bw->th = c->th;
	bw->bar.b = &resp->body;
	bw->cnt.b = &c->scratch;
	clocks_now(&bw->now);
	resp->content_type = CT_JSON;
	put_str(&bw->bar, "{\"barriers\":[");
	put_str(&bw->cnt, "\n{\"key\":\"init/\",\"value\":");
	put_counter(&bw->cnt, c->th, (const uint8_t *)"init/", 5);
	put_str(&bw->cnt, "}");
	waiters_foreach(c->th->st->waiters, barriers_visit, bw);
	put_str(&bw->bar, "],\"counters\":[");
	put(&bw->bar, bytes_of(&c->scratch), buf_used(&c->scratch));
	put_str(&bw->bar, "]}\n");
	ret = bw->bar.err ? bw->bar.err : bw->cnt.err;
	buf_shrink(&c->scratch, 1 << 20);
	free(bw);
	return ret;
}

/* ------------------------------------------------------------------ */
/* Router                                                              */

struct control *control_create(struct server *srv, struct store_thread *th)
{
	static const struct {
		const char *name;
		control_handler_fn fn;
	} builtin[] = {
		{ "barriers", h_barriers }, { "keys", h_keys },
		{ "ping", h_ping },         { "stats", h_stats },
		{ "waiters", h_waiters },
	};
	struct control *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->srv = srv;
	c->th = th;
	for (size_t i = 0; i < ARRAY_SIZE(builtin); i++) {
		if (control_register(c, builtin[i].name, builtin[i].fn, c)) {
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
	free(c->handlers);
	buf_free(&c->resp.body);
	buf_free(&c->scratch);
	free(c);
}

static int list_handlers(struct control *c, struct control_response *resp)
{
	struct out o = { .b = &resp->body };

	resp->content_type = CT_JSON;
	put_str(&o, "[");
	for (size_t i = 0; i < c->nhandlers; i++) {
		if (i)
			put_str(&o, ",");
		put_json_cstr(&o, c->handlers[i].name);
	}
	put_str(&o, "]\n");
	return o.err;
}

static int index_page(struct control_response *resp)
{
	static const char text[] =
		"ringstore control plane\n"
		"GET /health\n"
		"GET /metrics\n"
		"GET /handler/\n"
		"GET|POST /handler/<name>\n";

	return buf_append(&resp->body, text, sizeof(text) - 1);
}

/* A JSON error response of status @status. */
static int error_reply(struct control_response *resp, int status,
		       const char *why)
{
	struct out o = { .b = &resp->body };

	buf_reset(&resp->body);
	resp->status = status;
	resp->content_type = CT_JSON;
	put_json_error(&o, why);
	return o.err;
}

/* Run a registered handler; a failure becomes a 500. */
static int run_handler(struct control *c, const struct control_request *req,
		       const char *name)
{
	struct control_response *resp = &c->resp;
	struct handler *h = find(c, name);
	char why[CONTROL_MAX_NAME + 96];
	int ret;

	if (!h) {
		snprintf(why, sizeof(why), "handler '%.64s' not found", name);
		return error_reply(resp, 404, why);
	}
	ret = h->fn(h->arg, req, resp);
	if (!ret)
		return 0;
	snprintf(why, sizeof(why), "handler '%s' failed: %s", name,
		 strerror(-ret));
	return error_reply(resp, 500, why);
}

/*
 * Fill c->resp for @req. Returns the Allow header for a 405 (the response is
 * then already filled), or NULL. Sets *ret to 0 or -ENOMEM.
 */
static const char *route(struct control *c, const struct control_request *req,
			 int *ret)
{
	static const char allow_get[] = "Allow: GET, HEAD\r\n";
	static const char allow_run[] = "Allow: GET, HEAD, POST\r\n";
	struct control_response *resp = &c->resp;
	const char *path = req->path;
	bool get = !strcmp(req->method, "GET") || !strcmp(req->method, "HEAD");
	bool post = !strcmp(req->method, "POST");
	const char *allow = allow_get;
	char why[96];

	*ret = 0;
	if (!strncmp(path, "/handler/", 9) && path[9]) {
		if (get || post) {
			*ret = run_handler(c, req, path + 9);
			return NULL;
		}
		allow = allow_run;
	} else if (get && !strcmp(path, "/health")) {
		if (c->shutting_down) {
			resp->status = 503;
			*ret = buf_append(&resp->body, "shutting down", 13);
		} else {
			*ret = buf_append(&resp->body, "ok", 2);
		}
		return NULL;
	} else if (get && !strcmp(path, "/metrics")) {
		resp->content_type = CT_PROM;
		*ret = server_metrics(c, &resp->body, false);
		return NULL;
	} else if (get && (!strcmp(path, "/handler/") ||
			   !strcmp(path, "/handler"))) {
		*ret = list_handlers(c, resp);
		return NULL;
	} else if (get && !strcmp(path, "/")) {
		*ret = index_page(resp);
		return NULL;
	} else if (strcmp(path, "/health") && strcmp(path, "/metrics") &&
		   strcmp(path, "/handler/") && strcmp(path, "/handler") &&
		   strcmp(path, "/")) {
		*ret = error_reply(resp, 404, "not found");
		return NULL;
	}
	snprintf(why, sizeof(why), "method %.32s not allowed", req->method);
	*ret = error_reply(resp, 405, why);
	return allow;
}

int control_handle(struct control *c, const struct control_request *req,
		   struct buf *out, unsigned flags)
{
	struct control_response *resp = &c->resp;
	const char *allow;
	int ret;

	buf_reset(&resp->body);
	resp->status = 200;
	resp->content_type = CT_TEXT;
	allow = route(c, req, &ret);
	if (!ret)
		ret = http_response(out, resp->status, resp->content_type,
				    bytes_of(&resp->body),
				    buf_used(&resp->body), allow, flags);
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
	struct out o = { .b = &body };
	int ret;

	put_json_error(&o, hp->error ? hp->error : "bad request");
	ret = o.err ? o.err : http_response(out, hp->status, CT_JSON,
					    bytes_of(&body), buf_used(&body),
					    NULL, HTTP_R_CLOSE);
	buf_free(&body);
	return ret ? ret : 1;
}

int control_conn_input(struct control_conn *cc, const uint8_t *p, size_t n,
		       struct buf *out)
{
	static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
	struct http_parser *hp = &cc->hp;

	while (n) {
		struct control_request req;
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
		req = (struct control_request){
			.method = hp->method,
			.path = hp->path,
			.params = hp->params,
			.nparams = hp->nparams,
			.body = bytes_of(&hp->body),
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

static int guest_input(void *state, const uint8_t *p, size_t n,
		       struct buf *out)
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
