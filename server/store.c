/* SPDX-License-Identifier: MIT */
/*
 * store.c - the shared store (store_init) and the operations on keys and
 * queues (store_impl.h; exec.c dispatches to them, mget.c and waits.c hold
 * the rest). Semantics follow docs/protocol.md §5 (the libuv server's
 * behaviour plus its recommendations):
 *  - GET / MULTI_GET of a missing key reply an empty value;
 *  - CHECK / WAIT count a non-empty queue of the same name as present;
 *  - COMPARE_SET wakes waiters iff the key exists afterwards;
 *  - QUEUE_PUSH completes exactly one waiting client;
 *  - BARRIER is an ADD of 1 whose caller waits until the count reaches the
 *    world size.
 * Read-modify-write ops are CAS loops over table_cas, so they stay exact
 * when several reactors hit one key; they read the old value under its
 * sequence lock and hand table_cas the seq they read it at, since SET may
 * rewrite a value in place (table_set). The key hash is computed once per
 * key and passed down.
 */
#include "store.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blkcache.h"
#include "hash.h"
#include "outq.h"
#include "qsbr.h"
#include "queues.h"
#include "stats.h"
#include "store_impl.h"
#include "table.h"

int store_init(struct store *st, size_t initial_keys, unsigned threads)
{
	memset(st, 0, sizeof(*st));
	if (threads < 1 || threads > STORE_MAX_THREADS)
		return -EINVAL;
	st->threads = threads;
	st->qsbr = qsbr_create();
	if (!st->qsbr)
		goto fail;
	/* One store thread is the table's one writer (table_create). */
	st->table = table_create(st->qsbr, initial_keys, threads == 1);
	st->waiters = waiters_create();
	st->queues = queues_create();
	if (posix_memalign((void **)&st->gens, 64,
			   STORE_MAX_THREADS * sizeof(*st->gens)) != 0)
		st->gens = NULL;
	if (!st->table || !st->waiters || !st->queues || !st->gens)
		goto fail;
	for (unsigned i = 0; i < STORE_MAX_THREADS; i++)
		atomic_init(&st->gens[i].v, 0);
	atomic_init(&st->ngens, 0);
	return 0;
fail:
	store_destroy(st);
	return -ENOMEM;
}

void store_destroy(struct store *st)
{
	if (st->table)
		table_destroy(st->table);
	queues_destroy(st->queues);
	waiters_destroy(st->waiters);
	if (st->qsbr)
		qsbr_destroy(st->qsbr);
	free(st->gens);
	/* The entries freed above sit in this thread's block cache. */
	blk_drain();
	memset(st, 0, sizeof(*st));
}

int store_parse_i64(const uint8_t *p, size_t len, int64_t *out)
{
	size_t i = 0;
	bool neg = false;
	uint64_t v = 0, lim;

	while (i < len && (p[i] == ' ' || (p[i] >= '\t' && p[i] <= '\r')))
		i++;
	if (i < len && (p[i] == '+' || p[i] == '-'))
		neg = p[i++] == '-';
	if (i == len || p[i] < '0' || p[i] > '9')
		return -EINVAL;
	lim = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
	for (; i < len && p[i] >= '0' && p[i] <= '9'; i++) {
		unsigned d = p[i] - '0';
		if (v > (lim - d) / 10)
			return -EINVAL; /* std::stoll throws out_of_range */
		v = v * 10 + d;
	}
	*out = neg ? (int64_t)(0 - v) : (int64_t)v;
	return 0;
}

/*
 * The write log (wal.h). Every change below is made as: the key's stripe
 * lock, the record's place (log_begin: the change as the request that
 * makes it, walfile.h), the change itself, the record published or, if the
 * change failed, turned to padding (log_end), the lock released. Without a
 * log (th->ww.w NULL) each of these is one test.
 */
static uint8_t *put_str(uint8_t *p, const void *s, uint64_t n)
{
	memcpy(p, &n, 8);
	if (n)
		memcpy(p + 8, s, n);
	return p + 8 + n;
}

/* Reserve the record "@op @k [@v]" (@v NULL: a key alone). */
static int log_begin(struct store_thread *th, uint8_t op,
		     const struct proto_slice *k, const struct proto_slice *v,
		     struct wal_rec *rec)
{
	int ret;

	rec->p = NULL;
	if (!th->ww.w)
		return 0;
	ret = wal_reserve(&th->ww, 1 + 8 + k->len + (v ? 8 + v->len : 0), rec);
	if (ret)
		return ret;
	rec->p[0] = op;
	if (v)
		put_str(put_str(rec->p + 1, k->p, k->len), v->p, v->len);
	else
		put_str(rec->p + 1, k->p, k->len);
	return 0;
}

/* The change ended with @ret (< 0: it failed). */
static void log_end(struct store_thread *th, struct wal_rec *rec, int ret)
{
	if (!rec->p)
		return;
	if (ret < 0)
		wal_cancel(&th->ww, rec);
	else
		wal_publish(&th->ww, rec);
	rec->p = NULL;
}

/*
 * @e's value, read consistently, and the seq it was read at (for
 * table_cas): copied into th->scratch if it may be rewritten in place,
 * else the entry's own bytes. NULL on ENOMEM.
 */
static const uint8_t *read_val(struct store_thread *th,
			       const struct table_entry *e, uint32_t *seq)
{
	if (e->vlen >= TABLE_INPLACE_MAX) {
		*seq = table_read_begin(e);
		return table_entry_val(e);
	}
	buf_reset(&th->scratch);
	if (buf_reserve(&th->scratch, e->vlen ? e->vlen : 1))
		return NULL;
	*seq = table_entry_read_val(e, th->scratch.data, e->vlen);
	return th->scratch.data;
}

static struct table_entry *get(struct store_thread *th, uint64_t h,
			       const struct proto_slice *k)
{
	return table_get(th->st->table, th->qt, h, k->p, k->len);
}

/*
 * Publish @e (a new entry for @k, made with hash @h) in place of @cur, the
 * entry read before (NULL: absent) with its value read at @seq. Returns 0,
 * -EAGAIN when @cur was replaced or rewritten meanwhile (re-read and
 * retry), or -errno; on failure @e is released. This is the tail of every
 * read-modify-write loop below.
 */
static int replace(struct store_thread *th, uint64_t h,
		   const struct proto_slice *k, struct table_entry *cur,
		   uint32_t seq, struct table_entry *e)
{
	int ret;

	if (!e)
		return -ENOMEM;
	store_gen_begin(th);
	ret = table_cas(th->st->table, th->qt, h, k->p, k->len, cur, seq, e);
	if (ret)
		table_entry_unref(e);
	return ret;
}

/*
 * Replace the value of @k by @v (SET, and each MULTI_SET pair): in place
 * when the old value has the same length (table_set). Returns 1 if it was
 * written in place, 0 if replaced, or -errno. The caller wakes the key's
 * waiters, after a seq_cst fence if it was written in place (wake_all
 * needs a seq_cst publication; table_set's in-place write is a release).
 */
static int do_set(struct store_thread *th, const struct proto_slice *k,
		  uint64_t h, const struct proto_slice *v)
{
	int ret;

	store_gen_begin(th);
	ret = table_set(th->st->table, th->qt, h, k->p, k->len, v->p, v->len);
	if (ret > 0)
		stat_add(&th->stats->writes_in_place, 1);
	return ret;
}

int store_op_set(struct store_thread *th, const struct proto_req *r)
{
	uint64_t h = hash_key(r->key.p, r->key.len);
	struct wal_rec rec;
	int ret;

	wal_lock(th->ww.w, h);
	ret = log_begin(th, OP_SET, &r->key, &r->val[0], &rec);
	if (!ret) {
		ret = do_set(th, &r->key, h, &r->val[0]);
		log_end(th, &rec, ret);
	}
	wal_unlock(th->ww.w, h);
	if (ret < 0)
		return ret;
	if (ret)
		atomic_thread_fence(memory_order_seq_cst);
	store_wake_all(th, h, &r->key);
	return 0;
}

/* ADD and BARRIER's count (store_impl.h). */
int store_add(struct store_thread *th, const struct proto_slice *k, uint64_t h,
	      int64_t delta, int64_t *res)
{
	struct table_entry *cur;
	struct wal_rec rec;
	char text[24];
	int64_t v;
	uint32_t seq = 0;
	int ret;

	wal_lock(th->ww.w, h);
	do {
		v = 0;
		cur = get(th, h, k);
		if (cur) {
			const uint8_t *val = read_val(th, cur, &seq);

			ret = !val                                  ? -ENOMEM
			      : store_parse_i64(val, cur->vlen, &v) ? -EINVAL
								    : 0;
			if (ret)
				break;
		}
		/* Two's-complement wrap, as upstream's signed overflow does. */
		v = (int64_t)((uint64_t)v + (uint64_t)delta);
		int n = snprintf(text, sizeof(text), "%" PRId64, v);
		/* Logged as the SET of the value it leaves. */
		ret = log_begin(th, OP_SET, k,
				&(struct proto_slice){ (uint8_t *)text,
						       (size_t)n },
				&rec);
		if (ret)
			break;
		ret = replace(th, h, k, cur, seq,
			      table_entry_new(h, k->p, k->len, text, (size_t)n,
					      NULL, 0));
		log_end(th, &rec, ret);
	} while (ret == -EAGAIN);
	wal_unlock(th->ww.w, h);
	if (!ret)
		*res = v;
	return ret;
}

int store_op_add(struct store_thread *th, const struct proto_req *r,
		 struct outq *out)
{
	uint64_t h = hash_key(r->key.p, r->key.len);
	int64_t v;
	int ret = store_add(th, &r->key, h, r->num, &v);

	if (ret)
		return ret;
	store_wake_all(th, h, &r->key);
	return store_put_i64(out, v);
}

int store_op_compare_set(struct store_thread *th, const struct proto_req *r,
			 struct outq *out)
{
	const struct proto_slice *k = &r->key, *exp = &r->val[0],
				 *des = &r->val[1];
	uint64_t h = hash_key(k->p, k->len);
	struct table_entry *cur;
	struct wal_rec rec;
	uint32_t seq = 0;
	int ret;

	wal_lock(th->ww.w, h);
	do {
		const uint8_t *val = NULL;

		cur = get(th, h, k);
		if (!cur && exp->len) { /* missing: reply expected, no change */
			ret = 1;
			break;
		}
		if (cur && !(val = read_val(th, cur, &seq))) {
			ret = -ENOMEM;
			break;
		}
		if (cur &&
		    (cur->vlen != exp->len || memcmp(val, exp->p, exp->len))) {
			/* No swap: the reply is the value as it is. Under
			 * the stripe lock (a log with several writers) it
			 * stays put; else as read. */
			wal_unlock(th->ww.w, h);
			return cur->vlen >= TABLE_INPLACE_MAX
				       ? store_put_value(out, cur)
				       : store_put_bytes(out, val, cur->vlen);
		}
		/* A swap is logged as the SET of the desired value. */
		ret = log_begin(th, OP_SET, k, des, &rec);
		if (ret)
			break;
		ret = replace(th, h, k, cur, seq,
			      table_entry_new(h, k->p, k->len, des->p, des->len,
					      NULL, 0));
		log_end(th, &rec, ret);
	} while (ret == -EAGAIN);
	wal_unlock(th->ww.w, h);
	if (ret == 1)
		return store_put_bytes(out, exp->p, exp->len);
	if (ret)
		return ret;
	store_wake_all(th, h, k);
	return store_put_bytes(out, des->p, des->len);
}

int store_op_get(struct store_thread *th, const struct proto_slice *k,
		 struct outq *out)
{
	struct table_entry *e = get(th, hash_key(k->p, k->len), k);

	return e ? store_put_value(out, e) : store_put_bytes(out, NULL, 0);
}

int store_delete_key(struct store_thread *th, const void *key, size_t klen)
{
	struct proto_slice k = { .p = key, .len = klen };
	uint64_t h = hash_key(key, klen);
	struct table_entry *cur;
	struct wal_rec rec;
	int ret = 0;

	wal_lock(th->ww.w, h);
	do {
		cur = get(th, h, &k);
		if (!cur)
			break;
		ret = log_begin(th, OP_DELETE_KEY, &k, NULL, &rec);
		if (ret)
			break;
		store_gen_begin(th);
		ret = table_cas(th->st->table, th->qt, h, key, klen, cur,
				table_read_begin(cur), NULL);
		log_end(th, &rec, ret);
	} while (ret == -EAGAIN);
	wal_unlock(th->ww.w, h);
	store_gen_end(th); /* our last table write, for callers outside exec */
	return cur ? (ret ? ret : 1) : 0;
}

int store_op_delete(struct store_thread *th, const struct proto_req *r,
		    struct outq *out)
{
	int ret = store_delete_key(th, r->key.p, r->key.len);

	return ret < 0 ? ret : store_put_i64(out, ret);
}

int store_op_append(struct store_thread *th, const struct proto_req *r)
{
	const struct proto_slice *k = &r->key, *v = &r->val[0];
	uint64_t h = hash_key(k->p, k->len);
	struct wal_rec rec;
	int ret;

	wal_lock(th->ww.w, h);
	do {
		struct table_entry *cur = get(th, h, k);
		const uint8_t *val = NULL;
		uint32_t seq = 0;

		if (cur && !(val = read_val(th, cur, &seq))) {
			ret = -ENOMEM;
			break;
		}
		/* Logged as the APPEND itself: replay appends in order. */
		ret = log_begin(th, OP_APPEND, k, v, &rec);
		if (ret)
			break;
		/* Old value and new bytes go into the entry in one copy. */
		ret = replace(th, h, k, cur, seq,
			      table_entry_new(h, k->p, k->len, val,
					      cur ? cur->vlen : 0, v->p,
					      v->len));
		log_end(th, &rec, ret);
	} while (ret == -EAGAIN);
	wal_unlock(th->ww.w, h);
	if (ret)
		return ret;
	store_wake_all(th, h, k);
	return 0;
}

/*
 * MULTI_SET, LOOKUP_BATCH pairs at a time: prefetch every slot, then write
 * them all (table_set_batch prefetches every entry first), then wake their
 * waiters, after one seq_cst fence for the batch's writes in place (instead
 * of one locked instruction per key).
 */
/*
 * The record of a MULTI_SET batch: its @m pairs, whose wire bytes are
 * [@from, @to) of the request, as one MULTI_SET request of their own.
 */
static int log_pairs(struct store_thread *th, uint64_t m, const uint8_t *from,
		     const uint8_t *to, struct wal_rec *rec)
{
	int ret;

	rec->p = NULL;
	if (!th->ww.w)
		return 0;
	ret = wal_reserve(&th->ww, 1 + 8 + (size_t)(to - from), rec);
	if (ret)
		return ret;
	rec->p[0] = OP_MULTI_SET;
	memcpy(rec->p + 1, &m, 8);
	memcpy(rec->p + 9, from, (size_t)(to - from));
	return 0;
}

int store_op_multi_set(struct store_thread *th, const struct proto_req *r)
{
	const void *kp[LOOKUP_BATCH], *vp[LOOKUP_BATCH];
	size_t kl[LOOKUP_BATCH], vl[LOOKUP_BATCH];
	uint64_t h[LOOKUP_BATCH];
	uint32_t held[LOOKUP_BATCH];
	const uint8_t *cur = r->list;
	struct table_prefetch pf;
	struct wal_rec rec;
	int ret = 0;

	for (uint64_t i = 0; i < r->count && !ret; i += LOOKUP_BATCH) {
		size_t m = r->count - i < LOOKUP_BATCH ? r->count - i
						       : LOOKUP_BATCH;
		const uint8_t *from = cur;
		size_t j, done, nheld;
		struct proto_slice k, v;

		table_prefetch_begin(th->st->table, &pf);
		for (j = 0; j < m; j++) {
			proto_next_str(&cur, &k);
			proto_next_str(&cur, &v);
			kp[j] = k.p;
			kl[j] = k.len;
			vp[j] = v.p;
			vl[j] = v.len;
			h[j] = hash_key(k.p, k.len);
			table_prefetch_slot(&pf, h[j]);
		}
		wal_lock_many(th->ww.w, h, m, held, &nheld);
		ret = log_pairs(th, m, from, cur, &rec);
		if (ret) {
			wal_unlock_many(th->ww.w, held, nheld);
			break;
		}
		store_gen_begin(th);
		ret = table_set_batch(th->st->table, th->qt, m, h, kp, kl, vp,
				      vl, &done);
		if (ret < 0 && rec.p) {
			/* Out of memory after @done pairs: log those. */
			wal_cancel(&th->ww, &rec);
			rec.p = NULL;
			if (done && log_pairs(th, done, from,
					      (const uint8_t *)vp[done - 1] +
						      vl[done - 1],
					      &rec) == 0)
				log_end(th, &rec, 0);
		}
		log_end(th, &rec, ret);
		wal_unlock_many(th->ww.w, held, nheld);
		/* Writes in place, or a failure after some may have been:
		 * the pairs written need the fence before their wake-ups. */
		if (ret) {
			stat_add(&th->stats->writes_in_place,
				 ret > 0 ? (uint64_t)ret : 0);
			atomic_thread_fence(memory_order_seq_cst);
		}
		ret = ret < 0 ? ret : 0;
		if (!waiters_any_sc(th->st->waiters))
			continue; /* no waiter for any of the batch's keys */
		for (j = 0; j < done; j++) { /* the pairs written */
			k.p = kp[j];
			k.len = kl[j];
			store_wake_all(th, h[j], &k);
		}
	}
	return ret;
}

int store_op_queue_push(struct store_thread *th, const struct proto_req *r)
{
	uint64_t h = hash_key(r->key.p, r->key.len);
	struct wal_rec rec;
	int ret;

	wal_lock(th->ww.w, h);
	ret = log_begin(th, OP_QUEUE_PUSH, &r->key, &r->val[0], &rec);
	if (!ret) {
		ret = queues_push(th->st->queues, h, r->key.p, r->key.len,
				  r->val[0].p, r->val[0].len);
		log_end(th, &rec, ret);
	}
	wal_unlock(th->ww.w, h);
	if (ret)
		return ret;
	waiters_wake(th->st->waiters, h, r->key.p, r->key.len, 1, th->deliver,
		     th->darg);
	return 0;
}

int store_op_queue_pop(struct store_thread *th, const struct proto_req *r,
		       struct outq *out)
{
	uint64_t h = hash_key(r->key.p, r->key.len);
	struct table_entry *e = NULL;
	struct wal_rec rec;
	int64_t len = 0;
	int ret;

	wal_lock(th->ww.w, h);
	ret = log_begin(th, OP_QUEUE_POP, &r->key, NULL, &rec);
	if (!ret)
		len = queues_pop(th->st->queues, h, r->key.p, r->key.len, &e);
	/* An empty queue changes nothing: no record. */
	log_end(th, &rec, e ? 0 : -ENOENT);
	wal_unlock(th->ww.w, h);
	if (ret)
		return ret;
	ret = store_put_i64(out, len);

	if (e) {
		if (!ret)
			ret = store_put_value(out, e);
		table_entry_unref(e);
	}
	return ret;
}

static int list_one(struct table_entry *e, void *arg)
{
	struct buf *b = arg;
	uint64_t len = e->klen;
	int ret = buf_append(b, &len, sizeof(len));

	return ret ? ret : buf_append(b, table_entry_key(e), len);
}

struct list_ctx {
	struct buf *b;
	int64_t n;
};

static int list_count(struct table_entry *e, void *arg)
{
	struct list_ctx *lc = arg;
	int ret = list_one(e, lc->b);

	if (!ret)
		lc->n++;
	return ret;
}

int store_op_list_keys(struct store_thread *th, struct outq *out)
{
	struct list_ctx lc = { .b = &th->scratch };
	int ret;

	buf_reset(&th->scratch);
	ret = table_foreach(th->st->table, th->qt, list_count, &lc);
	if (!ret)
		ret = store_put_i64(out, lc.n);
	if (!ret)
		ret = outq_put(out, buf_head(&th->scratch),
			       buf_used(&th->scratch));
	buf_shrink(&th->scratch, 1 << 20);
	return ret;
}
