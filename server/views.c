/* SPDX-License-Identifier: MIT */
/*
 * views.c - see views.h: the keys, waiters and barriers views and the
 * prefix delete.
 */
#include "views.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hash.h"
#include "json.h"
#include "net.h"
#include "now.h"
#include "store.h"
#include "table.h"
#include "waiters.h"

/* Values longer than this are listed by size only. */
#define KEYS_MAX_SHOWN_VALUE 1024
/* Keys listed by GET /handler/keys without a limit, and its largest limit. */
#define KEYS_LIMIT_DEFAULT 1000
#define KEYS_LIMIT_MAX 100000

/* Entries collected by a walk: borrowed or referenced, as its user says. */
struct entries {
	struct table_entry **v; /* owned array */
	size_t n, cap;
};

static int entries_push(struct entries *l, struct table_entry *e)
{
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 64;
		struct table_entry **v = realloc(l->v, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		l->v = v;
		l->cap = cap;
	}
	l->v[l->n++] = e;
	return 0;
}

/* A prefix delete in progress (see views_delete). */
struct deletion {
	struct buf prefix;      /* owned: the prefix being deleted */
	struct entries matched; /* references: the entries the walk matched;
				  * those from @next on are not reached yet */
	size_t next;
	bool pending;
};

struct views {
	struct store_thread *th; /* borrowed */
	struct buf scratch;      /* owned: a second list while rendering */
	struct deletion del;
};

/* Does @e's key start with the @n bytes at @p? */
static bool has_prefix(const struct table_entry *e, const uint8_t *p, size_t n)
{
	return e->klen >= n && !memcmp(table_entry_key(e), p, n);
}

struct keys_walk {
	const uint8_t *prefix;
	size_t plen;
	size_t limit;
	struct entries found; /* borrowed */
	bool truncated;
};

static int keys_visit(struct table_entry *e, void *arg)
{
	struct keys_walk *kw = arg;

	if (!has_prefix(e, kw->prefix, kw->plen))
		return 0;
	if (kw->found.n == kw->limit) {
		kw->truncated = true;
		return 1;
	}
	return entries_push(&kw->found, e);
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
static int param_u64(const struct handler_request *req, const char *name,
		     uint64_t lo, uint64_t hi, uint64_t def, uint64_t *v)
{
	const char *s = handler_param(req, name, NULL);
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
int views_keys(void *arg, const struct handler_request *req,
	       struct handler_response *resp)
{
	struct views *v = arg;
	struct store_thread *th = v->th;
	struct keys_walk kw = { 0 };
	struct json_out o = { .b = &resp->body };
	uint64_t limit;
	int ret;

	if (param_u64(req, "limit", 1, KEYS_LIMIT_MAX, KEYS_LIMIT_DEFAULT,
		      &limit))
		return handler_error(resp, 400,
				     "limit must be a number from "
				     "1 to 100000");
	kw.limit = limit;
	kw.prefix = (const uint8_t *)handler_param(req, "prefix", &kw.plen);
	if (!kw.prefix)
		kw.prefix = (const uint8_t *)"";
	ret = table_foreach(th->st->table, th->qt, keys_visit, &kw);
	if (ret < 0) {
		free(kw.found.v);
		return ret;
	}
	if (kw.found.n)
		qsort(kw.found.v, kw.found.n, sizeof(*kw.found.v), key_cmp);

	resp->content_type = HANDLER_CT_JSON;
	json_printf(&o,
		    "{\"count\":%zu,\"returned\":%zu,\"truncated\":%s,"
		    "\"keys\":[",
		    table_count(th->st->table), kw.found.n,
		    kw.truncated ? "true" : "false");
	for (size_t i = 0; i < kw.found.n; i++) {
		const struct table_entry *e = kw.found.v[i];
		uint8_t val[KEYS_MAX_SHOWN_VALUE];

		json_text(&o, i ? ",\n{\"key\":" : "\n{\"key\":");
		json_str(&o, table_entry_key(e), e->klen);
		json_printf(&o, ",\"size\":%" PRIu64, e->vlen);
		if (e->vlen <= KEYS_MAX_SHOWN_VALUE &&
		    (table_entry_read_val(e, val, sizeof(val)),
		     printable(val, e->vlen))) {
			json_text(&o, ",\"value\":");
			json_str(&o, val, e->vlen);
		}
		json_text(&o, "}");
	}
	json_text(&o, "]}\n");
	free(kw.found.v);
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
static void put_waiter(struct json_out *o, const struct wait_state *ws,
		       const struct clocks *k)
{
	char peer[NET_ADDRSTRLEN];
	double age = wait_age(ws, k);

	net_format_addr((const struct sockaddr *)&ws->peer, peer, sizeof(peer));
	json_text(o, "{\"peer\":");
	json_cstr(o, peer);
	json_printf(o,
		    ",\"reactor\":%" PRIu32 ",\"since\":%.3f,"
		    "\"waiting_s\":%.3f,\"pending_keys\":%" PRIu64,
		    ws->who.reactor, k->real_s - age, age,
		    (uint64_t)atomic_load_explicit(&ws->pending,
						   memory_order_relaxed));
	if (ws->barrier_ws > 0)
		json_printf(o, ",\"barrier_world_size\":%" PRId64,
			    ws->barrier_ws);
	json_text(o, "}");
}

struct waiters_walk {
	struct json_out o;
	struct clocks now;
	size_t keys;
};

static void waiters_visit(void *arg, const uint8_t *key, size_t klen,
			  const struct wait_node *first)
{
	struct waiters_walk *ww = arg;
	size_t n = 0;
	double oldest = 0;

	json_text(&ww->o, ww->keys++ ? ",\n{\"key\":" : "\n{\"key\":");
	json_str(&ww->o, key, klen);
	json_text(&ww->o, ",\"peers\":[");
	for (const struct wait_node *nd = first; nd; nd = nd->next) {
		double age = wait_age(nd->ws, &ww->now);

		if (n++)
			json_text(&ww->o, ",");
		put_waiter(&ww->o, nd->ws, &ww->now);
		oldest = age > oldest ? age : oldest;
	}
	json_printf(&ww->o, "],\"waiters\":%zu,\"oldest_waiting_s\":%.3f}", n,
		    oldest);
}

/* GET /handler/waiters: every awaited key, with how many wait and who. */
int views_waiters(void *arg, const struct handler_request *req,
		  struct handler_response *resp)
{
	struct views *v = arg;
	struct waiters_walk ww = { .o = { .b = &resp->body } };

	(void)req;
	clocks_now(&ww.now);
	resp->content_type = HANDLER_CT_JSON;
	json_text(&ww.o, "{\"keys\":[");
	waiters_foreach(v->th->st->waiters, waiters_visit, &ww);
	json_printf(&ww.o, "],\"waited_keys\":%zu,\"waits\":%" PRIu64 "}\n",
		    ww.keys, waiters_count(v->th->st->waiters));
	return ww.o.err;
}

/* The integer in key @key, as JSON (null when absent or not a number). */
static void put_counter(struct json_out *o, struct store_thread *th,
			const uint8_t *key, size_t klen)
{
	struct table_entry *e = table_get(th->st->table, th->qt,
					  hash_key(key, klen), key, klen);
	uint8_t val[64]; /* a counter's text; anything longer is shown null */
	int64_t v;

	if (e && e->vlen <= sizeof(val) &&
	    (table_entry_read_val(e, val, sizeof(val)),
	     !store_parse_i64(val, e->vlen, &v)))
		json_printf(o, "%" PRId64, v);
	else
		json_text(o, "null");
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
	struct json_out bar; /* the BARRIER list */
	struct json_out cnt; /* the counter list */
	size_t nbar, ncnt;
	uint8_t ckey[PROTO_DEFAULT_MAX_KEY + 16];
};

static void barriers_visit(void *arg, const uint8_t *key, size_t klen,
			   const struct wait_node *first)
{
	struct barriers_walk *bw = arg;
	int64_t world = 0;
	size_t n = 0, nb = 0, clen;
	struct json_out *o;

	for (const struct wait_node *nd = first; nd; nd = nd->next, n++) {
		if (nd->ws->barrier_ws > 0)
			nb++;
		if (nd->ws->barrier_ws > world)
			world = nd->ws->barrier_ws;
	}
	if (nb) {
		o = &bw->bar;
		json_text(o, bw->nbar++ ? ",\n{\"key\":" : "\n{\"key\":");
		json_str(o, key, klen);
		json_text(o, ",\"arrived\":");
		put_counter(o, bw->th, key, klen);
		json_printf(o, ",\"world_size\":%" PRId64 ",\"waiting\":%zu",
			    world, nb);
	} else {
		clen = counter_of(key, klen, bw->ckey, sizeof(bw->ckey));
		if (!clen)
			return;
		o = &bw->cnt;
		json_text(o, ",\n{\"key\":");
		json_str(o, bw->ckey, clen);
		json_text(o, ",\"value\":");
		put_counter(o, bw->th, bw->ckey, clen);
		json_text(o, ",\"awaited_key\":");
		json_str(o, key, klen);
		json_printf(o, ",\"waiting\":%zu", n);
		bw->ncnt++;
	}
	json_text(o, ",\"peers\":[");
	n = 0;
	for (const struct wait_node *nd = first; nd; nd = nd->next) {
		if (nb && nd->ws->barrier_ws <= 0)
			continue;
		if (n++)
			json_text(o, ",");
		put_waiter(o, nd->ws, &bw->now);
	}
	json_text(o, "]}");
}

/*
 * GET /handler/barriers: pending BARRIERs (key, arrived so far, world size,
 * who waits), and counters: "init/" (clients that connected with a world
 * size) and the counters of barriers built from ADD and WAIT.
 */
int views_barriers(void *arg, const struct handler_request *req,
		   struct handler_response *resp)
{
	struct views *v = arg;
	struct barriers_walk *bw = calloc(1, sizeof(*bw));
	int ret;

	(void)req;
	if (!bw)
		return -ENOMEM;
	buf_reset(&v->scratch);
	bw->th = v->th;
	bw->bar.b = &resp->body;
	bw->cnt.b = &v->scratch;
	clocks_now(&bw->now);
	resp->content_type = HANDLER_CT_JSON;
	json_text(&bw->bar, "{\"barriers\":[");
	json_text(&bw->cnt, "\n{\"key\":\"init/\",\"value\":");
	put_counter(&bw->cnt, v->th, (const uint8_t *)"init/", 5);
	json_text(&bw->cnt, "}");
	waiters_foreach(v->th->st->waiters, barriers_visit, bw);
	json_text(&bw->bar, "],\"counters\":[");
	json_raw(&bw->bar, json_bytes_of(&v->scratch), buf_used(&v->scratch));
	json_text(&bw->bar, "]}\n");
	ret = bw->bar.err ? bw->bar.err : bw->cnt.err;
	buf_shrink(&v->scratch, 1 << 20);
	free(bw);
	return ret;
}

/*
 * Deleting by prefix. The handler runs on reactor 0's event loop, whose
 * clients wait while it runs, and a prefix may match a million keys (torch
 * never deletes its "nccl_storekey_" keys): deleting them all in one
 * request would stall reactor 0 for as long as that takes. So a deletion
 * is done in chunks:
 *  - its first request walks the table once, as the keys view does, and
 *    takes a reference to every entry under the prefix (so that its key
 *    can still be read once the request is over and the walk's borrowed
 *    pointers are not valid any more);
 *  - every request, the first included, deletes up to `limit` of those
 *    keys through store_delete_key (whatever entry the key has by then)
 *    and answers how many remain; the caller posts again until none do
 *    (ringstore-cli delete-prefix does).
 * The table is walked once per deletion, not once per chunk, so deleting n
 * keys costs one walk and n deletions however small the chunks are. The
 * walk itself is not cut short: a table has no cursor that survives its
 * growth between two requests. It costs what GET /handler/keys costs:
 * tens of milliseconds per million keys (20 to 80 ms for two million on
 * the 2-CPU VM of bench/RESULTS.md, idle to loaded), where a chunk of
 * DELETE_LIMIT_DEFAULT deletions takes about 4 ms.
 *
 * One deletion is pending at a time. A request for another prefix drops
 * it (the keys it had not reached stay) and starts its own. A key set under
 * the prefix after the walk is not deleted by that deletion: once it is
 * done, the next request walks again and finds it. The references keep the
 * matched entries' memory until their turn comes (or the deletion is
 * dropped).
 */
#define DELETE_LIMIT_DEFAULT 10000
#define DELETE_LIMIT_MAX 1000000
#define DELETE_SAMPLE 10 /* names of deleted keys per response */

static void deletion_end(struct deletion *d)
{
	for (size_t i = d->next; i < d->matched.n; i++)
		table_entry_unref(d->matched.v[i]);
	free(d->matched.v);
	buf_free(&d->prefix);
	*d = (struct deletion){ 0 };
}

struct deletion_walk {
	struct deletion *d;
	const uint8_t *prefix;
	size_t plen;
};

static int deletion_visit(struct table_entry *e, void *arg)
{
	struct deletion_walk *w = arg;
	int ret;

	if (!has_prefix(e, w->prefix, w->plen))
		return 0;
	ret = entries_push(&w->d->matched, e);
	if (!ret)
		table_entry_ref(e);
	return ret;
}

/* Start deleting the keys under @p (@n > 0 bytes): the one walk. Returns 0
 * or -ENOMEM. */
static int deletion_begin(struct views *v, const uint8_t *p, size_t n)
{
	struct deletion *d = &v->del;
	struct deletion_walk w = { .d = d, .prefix = p, .plen = n };
	int ret;

	deletion_end(d);
	ret = buf_append(&d->prefix, p, n);
	if (!ret)
		ret = table_foreach(v->th->st->table, v->th->qt, deletion_visit,
				    &w);
	if (ret) {
		deletion_end(d);
		return ret;
	}
	d->pending = true;
	return 0;
}

/* Is a deletion of the @n > 0 bytes @p pending? */
static bool deletion_of(const struct deletion *d, const uint8_t *p, size_t n)
{
	return d->pending && buf_used(&d->prefix) == n &&
	       !memcmp(buf_head(&d->prefix), p, n);
}

/*
 * POST /handler/delete?prefix=P&limit=N: delete the keys starting with P
 * (the bytes as stored: TCPStore clients put '/' before every key), at
 * most N of them (default DELETE_LIMIT_DEFAULT) in this request. Answers
 * {"prefix": P, "deleted": keys this request deleted, "absent": keys that
 * were gone when their turn came, "remaining": keys left for the next
 * requests, "sample": up to DELETE_SAMPLE names deleted}.
 */
int views_delete(void *arg, const struct handler_request *req,
		 struct handler_response *resp)
{
	struct views *v = arg;
	struct deletion *d = &v->del;
	struct json_out o = { .b = &resp->body };
	struct json_out sample = { .b = &v->scratch };
	uint64_t limit, deleted = 0, absent = 0;
	const uint8_t *p;
	size_t n;
	int ret = 0;

	if (strcmp(req->method, "POST")) {
		resp->headers = "Allow: POST\r\n";
		return handler_error(resp, 405,
				     "delete changes the store: "
				     "use POST");
	}
	p = (const uint8_t *)handler_param(req, "prefix", &n);
	if (!p || !n)
		return handler_error(resp, 400,
				     "a prefix is required (the "
				     "whole store is not deleted "
				     "this way)");
	if (param_u64(req, "limit", 1, DELETE_LIMIT_MAX, DELETE_LIMIT_DEFAULT,
		      &limit))
		return handler_error(resp, 400,
				     "limit must be a number from 1 "
				     "to 1000000");
	if (!deletion_of(d, p, n) && (ret = deletion_begin(v, p, n)))
		return ret;
	buf_reset(&v->scratch);
	while (d->next < d->matched.n && deleted + absent < limit) {
		struct table_entry *e = d->matched.v[d->next];

		ret = store_delete_key(v->th, table_entry_key(e), e->klen);
		if (ret < 0)
			break;
		if (ret && deleted < DELETE_SAMPLE) {
			json_text(&sample, deleted ? "," : "");
			json_str(&sample, table_entry_key(e), e->klen);
		}
		deleted += (uint64_t)ret;
		absent += (uint64_t)!ret;
		table_entry_unref(e);
		d->next++;
	}
	resp->content_type = HANDLER_CT_JSON;
	json_text(&o, "{\"prefix\":");
	json_str(&o, p, n);
	json_printf(&o,
		    ",\"deleted\":%" PRIu64 ",\"absent\":%" PRIu64
		    ",\"remaining\":%" PRIu64 ",\"sample\":[",
		    deleted, absent, (uint64_t)(d->matched.n - d->next));
	json_raw(&o, json_bytes_of(&v->scratch), buf_used(&v->scratch));
	json_text(&o, "]}\n");
	if (d->next == d->matched.n)
		deletion_end(d);
	return ret < 0 ? ret : o.err ? o.err : sample.err;
}

struct views *views_create(struct store_thread *th)
{
	struct views *v = calloc(1, sizeof(*v));

	if (v)
		v->th = th;
	return v;
}

void views_destroy(struct views *v)
{
	if (!v)
		return;
	deletion_end(&v->del);
	buf_free(&v->scratch);
	free(v);
}
