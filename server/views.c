/* SPDX-License-Identifier: MIT */
/*
 * views.c - see views.h: the keys, waiters and barriers views.
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
#define CONTROL_MAX_SHOWN_VALUE 1024
#define CONTROL_KEYS_DEFAULT 1000
#define CONTROL_KEYS_MAX 100000

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

struct views {
	struct store_thread *th;  /* borrowed */
	struct buf scratch;       /* owned: a second list while rendering */
};

/* Does @e's key start with the @n bytes at @p? */
static bool has_prefix(const struct table_entry *e, const uint8_t *p,
		       size_t n)
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
int views_keys(void *arg, const struct control_request *req,
	       struct control_response *resp)
{
	struct views *v = arg;
	struct store_thread *th = v->th;
	struct keys_walk kw = { 0 };
	struct json_out o = { .b = &resp->body };
	uint64_t limit;
	int ret;

	if (param_u64(req, "limit", 1, CONTROL_KEYS_MAX, CONTROL_KEYS_DEFAULT,
		      &limit))
		return control_error(resp, 400, "limit must be a number from "
						"1 to 100000");
	kw.limit = limit;
	kw.prefix = (const uint8_t *)control_param(req, "prefix", &kw.plen);
	if (!kw.prefix)
		kw.prefix = (const uint8_t *)"";
	ret = table_foreach(th->st->table, th->qt, keys_visit, &kw);
	if (ret < 0) {
		free(kw.found.v);
		return ret;
	}
	if (kw.found.n)
		qsort(kw.found.v, kw.found.n, sizeof(*kw.found.v),
		      key_cmp);

	resp->content_type = CONTROL_CT_JSON;
	json_printf(&o, "{\"count\":%zu,\"returned\":%zu,\"truncated\":%s,"
		    "\"keys\":[", table_count(th->st->table), kw.found.n,
		    kw.truncated ? "true" : "false");
	for (size_t i = 0; i < kw.found.n; i++) {
		const struct table_entry *e = kw.found.v[i];
		uint8_t val[CONTROL_MAX_SHOWN_VALUE];

		json_text(&o, i ? ",\n{\"key\":" : "\n{\"key\":");
		json_str(&o, table_entry_key(e), e->klen);
		json_printf(&o, ",\"size\":%" PRIu64, e->vlen);
		if (e->vlen <= CONTROL_MAX_SHOWN_VALUE &&
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
	json_printf(o, ",\"reactor\":%" PRIu32 ",\"since\":%.3f,"
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
	json_printf(&ww->o, "],\"waiters\":%zu,\"oldest_waiting_s\":%.3f}",
		    n, oldest);
}

/* GET /handler/waiters: every awaited key, with how many wait and who. */
int views_waiters(void *arg, const struct control_request *req,
		  struct control_response *resp)
{
	struct views *v = arg;
	struct waiters_walk ww = { .o = { .b = &resp->body } };

	(void)req;
	clocks_now(&ww.now);
	resp->content_type = CONTROL_CT_JSON;
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
	struct json_out bar;  /* the BARRIER list */
	struct json_out cnt;  /* the counter list */
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
int views_barriers(void *arg, const struct control_request *req,
		   struct control_response *resp)
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
	resp->content_type = CONTROL_CT_JSON;
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
	buf_free(&v->scratch);
	free(v);
}
