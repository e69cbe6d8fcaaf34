/* SPDX-License-Identifier: MIT */
/*
 * mget.c - MULTI_GET: lookups in batches whose cache misses overlap, short
 * values copied straight into the reply, and the per-thread reply cache of
 * store.h (NCCL's scalable init), with why serving it is linearizable.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "hash.h"
#include "stats.h"
#include "store_impl.h"

/* The most a MULTI_GET reserves ahead for the rest of its reply. */
#define MULTI_GET_PRESIZE_MAX ((size_t)16 << 20)

/*
 * The reply of a batch whose values are all short, written straight into
 * the queue's inline bytes: one reservation and one segment for the batch
 * instead of two appends per key. Returns 0, -ENOMEM, or 1 when a value is
 * long enough to go by reference (the caller then takes the general path).
 */
static int put_short_values(struct outq *out, struct table_entry *const *e,
			    size_t m, uint64_t batches)
{
	size_t need = 0, used = 0, room;
	uint8_t *p;

	for (size_t j = 0; j < m; j++) {
		if (e[j] && e[j]->vlen >= OUTQ_REF_MIN)
			return 1;
		need += sizeof(uint64_t) + (e[j] ? e[j]->vlen : 0);
	}
	/* The first batch reserves for the whole reply (as if every batch
	 * were like it, up to MULTI_GET_PRESIZE_MAX), so a uniform reply is
	 * one allocation; the room beyond this batch stays unqueued. */
	room = batches > MULTI_GET_PRESIZE_MAX / need ? MULTI_GET_PRESIZE_MAX
						      : need * (size_t)batches;
	if (!(p = outq_reserve(out, room > need ? room : need)))
		return -ENOMEM;
	for (size_t j = 0; j < m; j++) {
		uint64_t len = e[j] ? e[j]->vlen : 0;

		memcpy(p + used, &len, sizeof(len));
		used += sizeof(len);
		if (len)
			table_entry_read_val(e[j], p + used, len);
		used += len;
	}
	return outq_commit(out, used);
}

/* The value bytes lookup_batch prefetches behind each key. */
#define MGET_VALUE_GUESS 64

/*
 * Parse the next @m keys at *@cur and look them up into @e, their slot and
 * entry misses overlapped by prefetching.
 */
static void lookup_batch(struct store_thread *th, const uint8_t **cur, size_t m,
			 struct table_entry **e)
{
	const void *kp[LOOKUP_BATCH];
	size_t kl[LOOKUP_BATCH];
	uint64_t h[LOOKUP_BATCH];
	struct table *t = th->st->table;
	struct table_prefetch pf;

	table_prefetch_begin(t, &pf);
	for (size_t j = 0; j < m; j++) {
		struct proto_slice k;

		proto_next_str(cur, &k);
		kp[j] = k.p;
		kl[j] = k.len;
		h[j] = hash_key(k.p, k.len);
		table_prefetch_slot(&pf, h[j]);
	}
	/* The value's length is not known yet: guess a short one. */
	table_get_batch(t, th->qt, m, h, kp, kl, MGET_VALUE_GUESS, e);
}

/*
 * Every store_thread's write generation into @snap; false if one is odd (a
 * write in progress). seq_cst loads: see mget_cached().
 */
static bool gens_snapshot(const struct store *st, uint64_t *snap, unsigned *n)
{
	*n = atomic_load_explicit(&st->ngens, memory_order_seq_cst);
	if (*n > STORE_MAX_THREADS)
		*n = STORE_MAX_THREADS;
	for (unsigned i = 0; i < *n; i++) {
		snap[i] = atomic_load_explicit(&st->gens[i].v,
					       memory_order_seq_cst);
		if (snap[i] & 1)
			return false;
	}
	return true;
}

static bool gens_unchanged(const struct store *st, const uint64_t *snap,
			   unsigned n)
{
	if (atomic_load_explicit(&st->ngens, memory_order_seq_cst) != n)
		return false;
	for (unsigned i = 0; i < n; i++)
		if (atomic_load_explicit(&st->gens[i].v,
					 memory_order_seq_cst) != snap[i])
			return false;
	return true;
}

/*
 * The cached reply, if @r asks for exactly the cached list and nothing was
 * written since the reply was built. Why serving it is linearizable: the
 * build read every counter even (loads S1), looked the keys up, and read
 * them unchanged (loads S2). A write W brackets its CASes with the stores
 * O (odd) before and E (even) after, all seq_cst. If E precedes S1 in S,
 * S1 read E or later, so W's CASes happen before the lookups, which see
 * them. Otherwise O follows S1 (S1 read even), so O follows S2 too (S2 read
 * the same value), and no lookup saw W: a lookup that read W's CAS would
 * put O before S2 in happens-before, and S2 would read O. So the reply is
 * the table's state at S2. Serving checks every counter again (loads C):
 * unchanged means no write's O precedes C in S, so the state at C is the
 * state at S2, and C is the read's linearization point. A new store_thread
 * changes ngens, which also fails the check.
 */
static struct table_entry *mget_cached(struct store_thread *th,
				       const struct proto_req *r)
{
	struct mget_cache *c = th->mget;
	size_t len = (size_t)(r->end - r->list);

	if (!c || !c->reply || c->count != r->count || c->req_len != len ||
	    memcmp(c->req, r->list, len) != 0 ||
	    !gens_unchanged(th->st, c->snap, c->ngens))
		return NULL;
	stat_add(&th->stats->mget_cache_hits, 1);
	return c->reply;
}

/*
 * Build the reply to @r into one block (the value of a key-less entry),
 * queue it by reference, and cache it if no write overlapped the build.
 * Returns 0, -ENOMEM, or 1 when @r does not qualify (a value long enough
 * to go by reference, or a reply over STORE_MGET_CACHE_MAX): the caller
 * then answers the usual way. Nothing is queued unless 0 is returned.
 */
static int mget_build(struct store_thread *th, const struct proto_req *r,
		      struct outq *out)
{
	struct mget_cache *c = th->mget;
	size_t len = (size_t)(r->end - r->list), need = 0, used = 0;
	const uint8_t *cur = r->list;
	struct table_entry *blob;
	uint64_t snap[STORE_MAX_THREADS];
	unsigned n;
	bool cacheable;
	int ret;

	if (!c && !(c = th->mget = calloc(1, sizeof(*c))))
		return -ENOMEM;
	if (c->ents_cap < r->count) {
		struct table_entry **p =
			realloc(c->ents, r->count * sizeof(*p));
		if (!p)
			return -ENOMEM;
		c->ents = p;
		c->ents_cap = r->count;
	}
	cacheable = gens_snapshot(th->st, snap, &n);
	for (uint64_t i = 0; i < r->count; i += LOOKUP_BATCH) {
		size_t m = r->count - i < LOOKUP_BATCH ? r->count - i
						       : LOOKUP_BATCH;

		lookup_batch(th, &cur, m, c->ents + i);
		for (size_t j = 0; j < m; j++) {
			struct table_entry *e = c->ents[i + j];

			if (e && e->vlen >= OUTQ_REF_MIN)
				return 1;
			need += sizeof(uint64_t) + (e ? e->vlen : 0);
		}
		if (need > STORE_MGET_CACHE_MAX)
			return 1;
	}
	cacheable = cacheable && gens_unchanged(th->st, snap, n);
	blob = table_entry_new(0, NULL, 0, NULL, need, NULL, 0);
	if (!blob)
		return -ENOMEM;
	for (uint64_t i = 0; i < r->count; i++) {
		struct table_entry *e = c->ents[i];
		uint64_t vlen = e ? e->vlen : 0;

		memcpy(blob->data + used, &vlen, sizeof(vlen));
		used += sizeof(vlen);
		if (vlen)
			table_entry_read_val(e, blob->data + used, vlen);
		used += vlen;
	}
	ret = outq_put_entry(out, blob); /* blob->vlen == need */
	if (ret || !cacheable) {
		table_entry_unref(blob);
		return ret;
	}
	/* Keep it: our reference moves to the cache. */
	if (c->req_len < len || !c->req) {
		uint8_t *p = realloc(c->req, len);
		if (!p) {
			table_entry_unref(blob);
			return 0;
		}
		c->req = p;
	}
	memcpy(c->req, r->list, len);
	c->req_len = len;
	c->count = r->count;
	if (c->reply)
		table_entry_unref(c->reply);
	c->reply = blob;
	c->ngens = n;
	memcpy(c->snap, snap, n * sizeof(*snap));
	stat_add(&th->stats->mget_cache_builds, 1);
	return 0;
}

int store_op_multi_get(struct store_thread *th, const struct proto_req *r,
		       struct outq *out)
{
	struct table_entry *e[LOOKUP_BATCH];
	const uint8_t *cur = r->list;
	int ret = 0;

	if (r->count >= STORE_MGET_CACHE_MIN && !th->st->mget_cache_off) {
		struct table_entry *reply = mget_cached(th, r);

		if (reply)
			return outq_put_entry(out, reply);
		ret = mget_build(th, r, out);
		if (ret <= 0)
			return ret;
		ret = 0; /* not cacheable: the usual way */
	}
	for (uint64_t i = 0; i < r->count && !ret; i += LOOKUP_BATCH) {
		size_t m = r->count - i < LOOKUP_BATCH ? r->count - i
						       : LOOKUP_BATCH;

		lookup_batch(th, &cur, m, e);
		ret = put_short_values(out, e, m,
				       i ? 1 : (r->count + m - 1) / m);
		if (ret != 1)
			continue;
		ret = 0;
		for (size_t j = 0; j < m && !ret; j++)
			ret = e[j] ? store_put_value(out, e[j])
				   : store_put_bytes(out, NULL, 0);
	}
	return ret;
}

void store_mget_cache_free(struct mget_cache *c)
{
	if (!c)
		return;
	if (c->reply)
		table_entry_unref(c->reply);
	free(c->req);
	free(c->ents);
	free(c);
}
